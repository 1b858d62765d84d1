//! The replicated state, in memory: `weft-model`'s [`StateRead`]/[`StateWrite`] over
//! persistent ordered maps ([`imbl::OrdMap`]).
//!
//! Why in memory: every raft entry is applied on every node, on the leader before the client
//! is answered. As redb write transactions, applies cost 0.1-2 ms each, contended with other
//! writers for redb's one writer lock, and redb frees pages only at durable commits, whose
//! cost then grew with the work since the last one (100-250 ms stalls at 1 s intervals under
//! load). In memory an apply costs microseconds. Durability comes from elsewhere: the raft
//! log's WAL holds every entry above the last snapshot, and a snapshot (a file, see
//! [`crate::snapfile`]) is written before the log below it is purged, so a restarted node
//! rebuilds this state from its snapshot plus the WAL.
//!
//! Why persistent maps: a [`StateView`] is an O(1) clone of the maps, a consistent
//! point-in-time copy that later commits do not change, with no lock held while a REST
//! handler reads it or a snapshot is exported from it. Keys and values are `Arc`s, so the
//! nodes a write copies hold cheap clones.

use std::sync::Arc;

use imbl::OrdMap;
use weft_model::{StateRead, StateWrite, StorageFault};

use crate::{export, StoreError};

/// `(table, key)`: ordered by table first, so one table is one contiguous range.
type Key = (Arc<str>, Arc<str>);

/// A [`Key`] made of borrowed strings, to look rows up without allocating a key (reads
/// outnumber writes, and a policy query reads hundreds of rows).
struct Probe<'a>(&'a str, &'a str);

impl equivalent::Equivalent<Key> for Probe<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == &*key.0 && self.1 == &*key.1
    }
}

impl equivalent::Comparable<Key> for Probe<'_> {
    fn compare(&self, key: &Key) -> std::cmp::Ordering {
        self.0.cmp(&key.0).then_with(|| self.1.cmp(&key.1))
    }
}

/// The whole replicated state: the state rows and the state-machine metadata (applied log
/// id, membership) that describes them. Cloning is O(1).
#[derive(Clone, Default)]
pub(crate) struct Image {
    state: OrdMap<Key, Arc<[u8]>>,
    sm_meta: OrdMap<Arc<str>, Arc<[u8]>>,
}

fn key(table: &str, key: &str) -> Key {
    (Arc::from(table), Arc::from(key))
}

impl Image {
    /// Rebuilds an image from an export.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Image, StoreError> {
        let decoded = export::decode(bytes)?;
        let mut image = Image::default();
        for (table, k, value) in decoded.state {
            image.state.insert(key(&table, &k), Arc::from(value));
        }
        for (k, value) in decoded.sm_meta {
            image.sm_meta.insert(Arc::from(k), Arc::from(value));
        }
        Ok(image)
    }

    pub(crate) fn rows(&self) -> usize {
        self.state.len()
    }

    pub(crate) fn sm_meta(&self, k: &str) -> Option<Vec<u8>> {
        self.sm_meta.get(k).map(|v| v.to_vec())
    }

    fn get(&self, table: &str, k: &str) -> Option<Vec<u8>> {
        self.state.get(&Probe(table, k)).map(|v| v.to_vec())
    }

    /// The rows of one logical table: the keys `[(table, ""), (table + "\0", ""))`, because
    /// `table + "\0"` is the smallest string greater than `table`.
    fn table(&self, table: &str) -> impl Iterator<Item = (&Key, &Arc<[u8]>)> {
        let upper = format!("{table}\0");
        self.state.range(Probe(table, "")..Probe(&upper, ""))
    }

    /// All rows of one logical table, in key order.
    fn scan(&self, table: &str) -> Vec<(String, Vec<u8>)> {
        self.table(table)
            .map(|((_, k), v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    /// The keys of one logical table, without copying values.
    fn keys(&self, table: &str) -> Vec<String> {
        self.table(table).map(|((_, k), _)| k.to_string()).collect()
    }

    /// The first `limit` keys of one logical table (a bounded range walk).
    fn first_keys(&self, table: &str, limit: usize) -> Vec<String> {
        self.table(table)
            .take(limit)
            .map(|((_, k), _)| k.to_string())
            .collect()
    }

    fn contains(&self, table: &str, k: &str) -> bool {
        self.state.contains_key(&Probe(table, k))
    }

    /// SHA-256 over every state row in key order: table, key and value, each preceded
    /// by its length (8 bytes, big-endian), so no two different row sets hash alike by
    /// concatenation. The state-machine metadata is left out: it describes the rows
    /// (applied log id, membership), and callers show the applied index beside it.
    pub(crate) fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        for ((table, k), v) in self.state.iter() {
            field(table.as_bytes());
            field(k.as_bytes());
            field(v);
        }
        h.finalize().into()
    }

    /// Serializes the image in the export format (a raft snapshot's payload).
    pub(crate) fn export(&self) -> Vec<u8> {
        let mut enc = export::Encoder::new();
        enc.count(self.state.len() as u64);
        for ((table, k), v) in self.state.iter() {
            enc.bytes(table.as_bytes());
            enc.bytes(k.as_bytes());
            enc.bytes(v);
        }
        enc.count(self.sm_meta.len() as u64);
        for (k, v) in self.sm_meta.iter() {
            enc.bytes(k.as_bytes());
            enc.bytes(v);
        }
        enc.finish()
    }
}

/// The replicated state inside one [`Store::write_state`] call: what [`weft_model::apply`]
/// mutates, plus the state-machine metadata that must commit with it. It works on a copy;
/// the store adopts the copy only if the whole call succeeds.
///
/// [`Store::write_state`]: crate::Store::write_state
pub struct StateTxn<'a> {
    image: &'a mut Image,
}

impl<'a> StateTxn<'a> {
    pub(crate) fn new(image: &'a mut Image) -> Self {
        StateTxn { image }
    }

    /// Records state-machine metadata (applied log id, membership) in this transaction, so it
    /// commits atomically with the state it describes.
    pub fn put_sm_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StorageFault> {
        self.image.sm_meta.insert(Arc::from(key), Arc::from(value));
        Ok(())
    }

    /// Reads state-machine metadata as seen by this transaction (e.g. the applied log id, to
    /// skip entries that were already applied).
    pub fn get_sm_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self.image.sm_meta(key))
    }
}

impl StateRead for StateTxn<'_> {
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self.image.get(table, key))
    }

    fn scan(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StorageFault> {
        Ok(self.image.scan(table))
    }

    fn keys(&self, table: &str) -> Result<Vec<String>, StorageFault> {
        Ok(self.image.keys(table))
    }

    fn first_keys(&self, table: &str, limit: usize) -> Result<Vec<String>, StorageFault> {
        Ok(self.image.first_keys(table, limit))
    }

    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageFault> {
        Ok(self.image.contains(table, key))
    }
}

impl StateWrite for StateTxn<'_> {
    fn put(&mut self, table: &str, k: &str, value: &[u8]) -> Result<(), StorageFault> {
        self.image.state.insert(key(table, k), Arc::from(value));
        Ok(())
    }

    fn delete(&mut self, table: &str, k: &str) -> Result<(), StorageFault> {
        self.image.state.remove(&Probe(table, k));
        Ok(())
    }
}

/// A consistent, read-only view of the replicated state as of one commit. Readers (REST
/// handlers, the controller, snapshot builds) use it with `weft-model`'s query functions;
/// later commits do not change what it shows, and holding it blocks nobody.
#[derive(Clone)]
pub struct StateView {
    image: Image,
}

impl StateView {
    pub(crate) fn new(image: Image) -> Self {
        StateView { image }
    }

    /// State-machine metadata as of this view, e.g. the applied log id the data corresponds to.
    pub fn sm_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self.image.sm_meta(key))
    }

    /// A digest of the state rows this view shows (see [`StateView::digest_hex`]).
    pub fn digest(&self) -> [u8; 32] {
        self.image.digest()
    }

    /// [`StateView::digest`] as lowercase hex. Two replicas that applied the same log
    /// prefix have the same rows, so the same digest: it is how a test (or an operator)
    /// checks that the nodes of a cluster converged, beside the applied index.
    pub fn digest_hex(&self) -> String {
        self.digest().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// How many state rows this view shows.
    pub fn rows(&self) -> usize {
        self.image.rows()
    }

    /// Serializes everything this view shows (state rows and sm meta) in the export format of
    /// [`Store::export_state`](crate::Store::export_state): a raft snapshot's payload,
    /// consistent as of this view's commit however long it takes, while applies go on.
    pub fn export(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self.image.export())
    }
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("rows", &self.image.state.len())
            .finish_non_exhaustive()
    }
}

impl StateRead for StateView {
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self.image.get(table, key))
    }

    fn scan(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StorageFault> {
        Ok(self.image.scan(table))
    }

    fn keys(&self, table: &str) -> Result<Vec<String>, StorageFault> {
        Ok(self.image.keys(table))
    }

    fn first_keys(&self, table: &str, limit: usize) -> Result<Vec<String>, StorageFault> {
        Ok(self.image.first_keys(table, limit))
    }

    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageFault> {
        Ok(self.image.contains(table, key))
    }
}
