//! The byte format of a state export (a raft snapshot's payload).
//!
//! ```text
//! MAGIC
//! u64 n_state   then n_state  x (bytes table, bytes key, bytes value)
//! u64 n_sm_meta then n_sm_meta x (bytes key, bytes value)
//! ```
//! where `bytes` is a little-endian `u64` length followed by that many bytes. Binary rather
//! than JSON because values are arbitrary bytes and a snapshot can be large. The decoder
//! bounds-checks everything and refuses trailing bytes, so a truncated or foreign image is
//! an error, never a partial import.

use crate::StoreError;

const MAGIC: &[u8; 8] = b"WEFTST01";

pub(crate) struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        Encoder {
            buf: MAGIC.to_vec(),
        }
    }

    pub(crate) fn count(&mut self, n: u64) {
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.count(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A decoded export.
pub(crate) struct Image {
    pub(crate) state: Vec<(String, String, Vec<u8>)>,
    pub(crate) sm_meta: Vec<(String, Vec<u8>)>,
}

struct Decoder<'a> {
    rest: &'a [u8],
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("state export: {what}"))
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], StoreError> {
        let n = usize::try_from(n).map_err(|_| corrupt("length overflows"))?;
        if n > self.rest.len() {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn count(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let arr: [u8; 8] = b.try_into().map_err(|_| corrupt("truncated"))?;
        Ok(u64::from_le_bytes(arr))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.count()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| corrupt("key is not UTF-8"))
    }
}

/// Decodes a whole export.
pub(crate) fn decode(bytes: &[u8]) -> Result<Image, StoreError> {
    let mut d = Decoder { rest: bytes };
    if d.take(MAGIC.len() as u64)? != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let n = d.count()?;
    // Never trust a count for preallocation: each row takes at least 24 bytes.
    let mut state = Vec::with_capacity(capacity(n, d.rest.len(), 24));
    for _ in 0..n {
        let table = d.string()?;
        let key = d.string()?;
        let value = d.bytes()?.to_vec();
        state.push((table, key, value));
    }
    let n = d.count()?;
    let mut sm_meta = Vec::with_capacity(capacity(n, d.rest.len(), 16));
    for _ in 0..n {
        let key = d.string()?;
        let value = d.bytes()?.to_vec();
        sm_meta.push((key, value));
    }
    if !d.rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Image { state, sm_meta })
}

fn capacity(n: u64, remaining: usize, min_row: usize) -> usize {
    usize::try_from(n)
        .unwrap_or(usize::MAX)
        .min(remaining / min_row)
}

/// Reads one state-machine metadata value (e.g. the applied log id) out of an export made by
/// [`Store::export_state`](crate::Store::export_state). A snapshot builder uses it so the
/// snapshot's metadata comes from the same consistent view as its data, even if more entries
/// were applied while it was exporting.
pub fn sm_meta_from_export(bytes: &[u8], key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let mut d = Decoder { rest: bytes };
    if d.take(MAGIC.len() as u64)? != MAGIC {
        return Err(corrupt("bad magic"));
    }
    // Skip the state rows without copying them.
    for _ in 0..d.count()? {
        d.bytes()?;
        d.bytes()?;
        d.bytes()?;
    }
    let mut found = None;
    for _ in 0..d.count()? {
        let k = d.bytes()?;
        let v = d.bytes()?;
        if k == key.as_bytes() {
            found = Some(v.to_vec());
        }
    }
    if !d.rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(found)
}
