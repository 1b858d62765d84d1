//! The on-disk store of a controller: a redb file holding
//!
//! * small **metadata** (vote, committed id, last purged id, a record of the current snapshot,
//!   node identity),
//! * a **log table** and **state tables**, where the raft log and the replicated state lived
//!   before the [`wal`] and the in-memory state; they are only read once, to move an old
//!   node's data over.
//!
//! In memory ([`state`]): the **replicated state** that `weft-model`'s
//! [`apply`](weft_model::apply) runs over, as one ordered `(table, key) -> bytes` space
//! ([`StateTxn`] / [`StateView`]), together with the **state-machine metadata** (applied log
//! id, membership) that is committed in the same transactions as the state it describes. It
//! is rebuilt at start from the current snapshot plus the WAL.
//!
//! Beside the redb file: the raft log's write-ahead log (`<db>.wal/`, [`wal`]: one sequential
//! write and one `fdatasync` per batch, where a redb commit copies ~20 scattered pages) and
//! the snapshot payloads (multi-MB state images, [`snapfile`] explains why and how), of which
//! only a small record of the current one is metadata.
//!
//! This crate knows nothing about openraft: log entries and metadata are bytes. `weft-cluster`
//! encodes the raft types and decides what is durable when.
#![forbid(unsafe_code)]

mod export;
pub mod snapfile;
pub mod state;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use weft_model::StorageFault;

pub use export::sm_meta_from_export;
pub use snapfile::{fnv1a64, SnapshotFile};
use state::Image;
pub use state::{StateTxn, StateView};
pub use wal::Wal;

/// Raft log: index -> serialized entry.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Raft and node metadata: name -> bytes.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Where the replicated state lived before it moved to memory: (table, key) -> bytes.
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("state");
/// Where the state-machine metadata (applied log id, membership) lived, beside [`STATE`].
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (IO, corruption detected by redb, database already open...).
    #[error("redb: {0}")]
    Redb(Box<redb::Error>),
    /// A closure run inside [`Store::write_state`] reported a storage fault; the transaction
    /// was rolled back.
    #[error(transparent)]
    Fault(#[from] StorageFault),
    /// Bytes on disk (or handed to [`Store::import_state`]) could not be decoded, or a
    /// snapshot file does not match its record.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A file operation outside redb (snapshot files) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn durability(durable: bool) -> Durability {
    if durable {
        Durability::Immediate
    } else {
        Durability::None
    }
}

/// How many log entries [`Store::purge_log_upto`] deletes per transaction (a few ms each).
pub const PURGE_CHUNK: u64 = 256;

/// A handle on the controller's redb file. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// The database file; snapshot files and the WAL are named after it.
    path: Arc<PathBuf>,
    /// The replicated state as of the last [`Store::write_state`] (see [`state`]).
    state: Arc<Mutex<Image>>,
    /// Serializes [`Store::write_state`] and [`Store::import_state`], so a write never
    /// replaces a concurrent one's result.
    writer: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A [`Store`] handle that does not keep the database open: for background work that should
/// stop, not delay a reopen, once everything else has let go of the store.
#[derive(Clone, Debug)]
pub struct WeakStore {
    db: std::sync::Weak<Database>,
    path: Arc<PathBuf>,
    state: std::sync::Weak<Mutex<Image>>,
    writer: std::sync::Weak<Mutex<()>>,
}

impl WeakStore {
    /// The store, if some [`Store`] handle still has it open.
    pub fn upgrade(&self) -> Option<Store> {
        Some(Store {
            db: self.db.upgrade()?,
            path: self.path.clone(),
            state: self.state.upgrade()?,
            writer: self.writer.upgrade()?,
        })
    }
}

impl Store {
    /// A handle that does not keep the database open.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore {
            db: Arc::downgrade(&self.db),
            path: self.path.clone(),
            state: Arc::downgrade(&self.state),
            writer: Arc::downgrade(&self.writer),
        }
    }

    /// Opens the store at `path`, creating the file and its tables if absent.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(LOG)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        tracing::debug!(path = %path.display(), "store opened");
        Ok(Store {
            db: Arc::new(db),
            path: Arc::new(path.to_path_buf()),
            state: Arc::new(Mutex::new(Image::default())),
            writer: Arc::new(Mutex::new(())),
        })
    }

    // ----- raft log -----

    /// Appends (or overwrites) log entries in one write transaction and fsyncs before
    /// returning, so one raft batch costs one fsync.
    pub fn append_log(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.append_log_with_meta(entries.iter().map(|(i, b)| (*i, b.as_slice())), &[])
    }

    /// [`Store::append_log`] plus some metadata values, in the same transaction and fsync:
    /// the raft log writer batches every queued append (and the latest committed index) into
    /// one commit.
    pub fn append_log_with_meta<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
        meta: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut t = txn.open_table(LOG)?;
            for (index, bytes) in entries {
                t.insert(index, bytes)?;
            }
        }
        if !meta.is_empty() {
            let mut t = txn.open_table(META)?;
            for (k, v) in meta {
                t.insert(*k, *v)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The entries with `start <= index < end_exclusive`, in index order.
    pub fn read_log(
        &self,
        start: u64,
        end_exclusive: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if start >= end_exclusive {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for row in t.range(start..end_exclusive)? {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The entry with the highest index, if the log is not empty.
    pub fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LOG)?;
        let last = t.last()?.map(|(k, v)| (k.value(), v.value().to_vec()));
        Ok(last)
    }

    /// Deletes every entry with index `>= index` (conflicting suffix), durably.
    pub fn truncate_log_from(&self, index: u64) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut t = txn.open_table(LOG)?;
            t.retain_in(index.., |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes every entry with index `<= index` (compacted prefix), in transactions of at most
    /// [`PURGE_CHUNK`] entries (see [`Store::purge_log_some`]). Not fsynced: losing a purge in
    /// a crash only leaves extra entries, and the next durable commit persists it.
    pub fn purge_log_upto(&self, index: u64) -> Result<(), StoreError> {
        while self.purge_log_some(index, PURGE_CHUNK)? {}
        Ok(())
    }

    /// Deletes the oldest entries with index `<= index`, at most `max_entries` of them, in one
    /// non-durable transaction. Returns `false` once no such entry is left (`true` means: call
    /// again, there may be more).
    ///
    /// Deleting costs tens of microseconds per entry, so a purge of thousands of entries in
    /// one transaction would hold redb's only writer, and with it every log append, for
    /// hundreds of milliseconds; in small transactions appends get in between. Deleting from
    /// the oldest entry up never leaves a hole in the log, whenever it stops.
    pub fn purge_log_some(&self, index: u64, max_entries: u64) -> Result<bool, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None);
        let more = {
            let mut t = txn.open_table(LOG)?;
            let first = t.first()?.map(|(k, _)| k.value());
            match first {
                Some(first) if first <= index => {
                    let end = first.saturating_add(max_entries.max(1) - 1).min(index);
                    t.retain_in(first..=end, |_, _| false)?;
                    Some(end < index)
                }
                _ => None,
            }
        };
        match more {
            Some(more) => {
                txn.commit()?;
                Ok(more)
            }
            None => {
                txn.abort()?;
                Ok(false)
            }
        }
    }

    // ----- metadata -----

    /// A metadata value (vote, committed, last purged, snapshot, node identity...).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        let value = t.get(key)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    /// Sets a metadata value; `durable` fsyncs before returning.
    pub fn put_meta(&self, key: &str, value: &[u8], durable: bool) -> Result<(), StoreError> {
        self.put_meta_many(&[(key, value)], durable)
    }

    /// Sets several metadata values in one transaction, so they are seen (and survive a crash)
    /// together or not at all.
    pub fn put_meta_many(
        &self,
        entries: &[(&str, &[u8])],
        durable: bool,
    ) -> Result<(), StoreError> {
        self.update_meta(entries, &[], durable)
    }

    /// Sets the `puts` and deletes the `deletes` metadata keys in one transaction (absent keys
    /// are fine to delete); `durable` fsyncs before returning.
    pub fn update_meta(
        &self,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability(durable));
        {
            let mut t = txn.open_table(META)?;
            for (k, v) in puts {
                t.insert(*k, *v)?;
            }
            for k in deletes {
                t.remove(*k)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    // ----- replicated state -----

    /// Runs `f` over the replicated state and commits what it wrote, all or nothing. Used by
    /// the state machine to apply a batch of entries AND record the applied log id (via
    /// [`StateTxn::put_sm_meta`]) atomically. In memory: nothing is written to disk (see
    /// [`state`] for where durability comes from).
    pub fn write_state<T>(
        &self,
        f: impl FnOnce(&mut StateTxn<'_>) -> Result<T, StorageFault>,
    ) -> Result<T, StoreError> {
        let _one_writer = lock(&self.writer);
        let mut image = lock(&self.state).clone();
        let out = f(&mut StateTxn::new(&mut image))?;
        *lock(&self.state) = image;
        Ok(out)
    }

    /// A consistent read-only view of the replicated state, as of the last commit.
    pub fn read_state(&self) -> Result<StateView, StoreError> {
        Ok(StateView::new(lock(&self.state).clone()))
    }

    /// How many rows the replicated state has (what a snapshot has to write).
    pub fn state_rows(&self) -> usize {
        lock(&self.state).rows()
    }

    /// A state-machine metadata value (applied log id, membership), as last committed by
    /// [`Store::write_state`] or [`Store::import_state`].
    pub fn get_sm_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.state).sm_meta(key))
    }

    /// Serializes the whole replicated state (state rows + sm meta) as one consistent
    /// point-in-time copy (a raft snapshot's payload); see also [`StateView::export`].
    pub fn export_state(&self) -> Result<Vec<u8>, StoreError> {
        self.read_state()?.export()
    }

    /// Replaces the whole replicated state (state rows + sm meta) with an
    /// [`export_state`](Store::export_state) image, atomically. The bytes are fully decoded
    /// first, so a corrupt image changes nothing. An image written by a version without the
    /// policy index gets its index rows here ([`weft_model::index::ensure`]: a function of
    /// the image alone, so every node loading it agrees), before anyone reads it.
    pub fn import_state(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut image = Image::decode(bytes)?;
        weft_model::index::ensure(&mut StateTxn::new(&mut image))?;
        let _one_writer = lock(&self.writer);
        *lock(&self.state) = image;
        Ok(())
    }

    /// The replicated state a node of an older version kept in redb, as an export image, if
    /// there is any. It is consistent as of its own applied log id (the data and that id
    /// were committed together).
    pub fn legacy_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let (state, sm_meta) = match (txn.open_table(STATE), txn.open_table(SM_META)) {
            (Ok(s), Ok(m)) => (s, m),
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        use redb::ReadableTableMetadata;
        if state.len()? == 0 && sm_meta.len()? == 0 {
            return Ok(None);
        }
        let mut enc = export::Encoder::new();
        enc.count(state.len()?);
        for row in state.iter()? {
            let (k, v) = row?;
            let (table, key) = k.value();
            enc.bytes(table.as_bytes());
            enc.bytes(key.as_bytes());
            enc.bytes(v.value());
        }
        enc.count(sm_meta.len()?);
        for row in sm_meta.iter()? {
            let (k, v) = row?;
            enc.bytes(k.value().as_bytes());
            enc.bytes(v.value());
        }
        Ok(Some(enc.finish()))
    }

    /// Writes `image` (an export) into the state tables the way the older version kept it:
    /// only for tests of the move out of them.
    #[doc(hidden)]
    pub fn write_legacy_state(&self, image: &[u8]) -> Result<(), StoreError> {
        let decoded = export::decode(image)?;
        let txn = self.db.begin_write()?;
        {
            let mut state = txn.open_table(STATE)?;
            for (table, key, value) in &decoded.state {
                state.insert((table.as_str(), key.as_str()), value.as_slice())?;
            }
            let mut sm_meta = txn.open_table(SM_META)?;
            for (key, value) in &decoded.sm_meta {
                sm_meta.insert(key.as_str(), value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes the older version's state tables (once their content is safe in a snapshot).
    pub fn drop_legacy_state(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        txn.delete_table(STATE)?;
        txn.delete_table(SM_META)?;
        txn.commit()?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use weft_model::{StateRead, StateWrite};

    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("weft.redb")).expect("open");
        (dir, store)
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, format!("e{i}").into_bytes())).collect()
    }

    #[test]
    fn log_append_read_truncate_purge() {
        let (_dir, s) = open();
        assert_eq!(s.last_log().unwrap(), None);
        assert!(s.read_log(0, 100).unwrap().is_empty());

        s.append_log(&entries(1..=10)).unwrap();
        assert_eq!(s.read_log(3, 6).unwrap(), entries(3..=5));
        assert_eq!(s.read_log(0, u64::MAX).unwrap(), entries(1..=10));
        assert!(
            s.read_log(6, 3).unwrap().is_empty(),
            "inverted range is empty"
        );
        assert_eq!(s.last_log().unwrap(), Some((10, b"e10".to_vec())));

        s.truncate_log_from(8).unwrap();
        assert_eq!(s.read_log(0, u64::MAX).unwrap(), entries(1..=7));

        s.purge_log_upto(3).unwrap();
        assert_eq!(s.read_log(0, u64::MAX).unwrap(), entries(4..=7));

        // Overwrite after truncation.
        s.append_log(&[(8, b"x".to_vec())]).unwrap();
        assert_eq!(s.last_log().unwrap(), Some((8, b"x".to_vec())));

        s.purge_log_upto(100).unwrap();
        assert_eq!(s.last_log().unwrap(), None);
    }

    #[test]
    fn state_digest_depends_on_the_rows_only() {
        let (_d1, a) = open();
        let (_d2, b) = open();
        let empty = a.read_state().unwrap().digest_hex();
        assert_eq!(empty.len(), 64);
        // The same rows written in another order, with other metadata: the same digest.
        a.write_state(|t| {
            t.put("services", "s1", b"one")?;
            t.put("services", "s2", b"two")?;
            t.put("identities", "i1", b"x")?;
            t.put_sm_meta("applied", b"7")
        })
        .unwrap();
        b.write_state(|t| {
            t.put("identities", "i1", b"x")?;
            t.put("services", "s2", b"two")?;
            t.put("services", "s9", b"gone")?;
            t.delete("services", "s9")?;
            t.put("services", "s1", b"one")?;
            t.put_sm_meta("applied", b"9")
        })
        .unwrap();
        let (va, vb) = (a.read_state().unwrap(), b.read_state().unwrap());
        assert_eq!(va.digest_hex(), vb.digest_hex());
        assert_ne!(va.digest_hex(), empty);
        assert_eq!(va.rows(), 3);
        // One value differs: another digest; so does a row moved across the
        // table/key boundary ("ab" + "c" vs "a" + "bc").
        b.write_state(|t| t.put("services", "s2", b"tw0")).unwrap();
        assert_ne!(b.read_state().unwrap().digest_hex(), va.digest_hex());
        let (_d3, c) = open();
        let (_d4, d) = open();
        c.write_state(|t| t.put("ab", "c", b"v")).unwrap();
        d.write_state(|t| t.put("a", "bc", b"v")).unwrap();
        assert_ne!(
            c.read_state().unwrap().digest(),
            d.read_state().unwrap().digest()
        );
        // A view keeps the digest of its moment.
        let before = a.read_state().unwrap();
        a.write_state(|t| t.put("services", "s3", b"three"))
            .unwrap();
        assert_eq!(before.digest_hex(), va.digest_hex());
        assert_ne!(a.read_state().unwrap().digest_hex(), va.digest_hex());
    }

    #[test]
    fn purge_in_chunks_from_the_oldest_entry() {
        let (_dir, s) = open();
        s.append_log(&entries(1..=10)).unwrap();
        assert!(s.purge_log_some(7, 3).unwrap(), "1..=3 gone, 4..=7 left");
        assert_eq!(s.read_log(0, u64::MAX).unwrap(), entries(4..=10));
        assert!(s.purge_log_some(7, 3).unwrap());
        assert!(!s.purge_log_some(7, 3).unwrap(), "7 was the last one");
        assert_eq!(s.read_log(0, u64::MAX).unwrap(), entries(8..=10));
        assert!(!s.purge_log_some(7, 3).unwrap(), "nothing to do");
        assert!(s.purge_log_some(100, 0).unwrap(), "0 counts as 1");
        assert_eq!(s.read_log(0, u64::MAX).unwrap(), entries(9..=10));
        assert!(s.purge_log_some(100, 5).unwrap(), "9..=10 gone, maybe more");
        assert!(!s.purge_log_some(100, 5).unwrap(), "empty log");
        assert!(s.read_log(0, u64::MAX).unwrap().is_empty());

        s.append_log(&entries(1..=1000)).unwrap();
        s.purge_log_upto(900).unwrap();
        assert_eq!(s.read_log(0, u64::MAX).unwrap(), entries(901..=1000));

        let weak = s.downgrade();
        assert!(weak.upgrade().is_some());
        drop(s);
        assert!(
            weak.upgrade().is_none(),
            "a weak handle does not keep it open"
        );
    }

    #[test]
    fn meta_round_trip() {
        let (_dir, s) = open();
        assert_eq!(s.get_meta("vote").unwrap(), None);
        s.put_meta("vote", b"v1", true).unwrap();
        s.put_meta("committed", b"c1", false).unwrap();
        assert_eq!(s.get_meta("vote").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(s.get_meta("committed").unwrap(), Some(b"c1".to_vec()));
        s.put_meta_many(&[("a", b"1"), ("vote", b"v2")], true)
            .unwrap();
        assert_eq!(s.get_meta("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get_meta("vote").unwrap(), Some(b"v2".to_vec()));
    }

    #[test]
    fn write_state_then_read_state() {
        let (_dir, s) = open();
        s.write_state(|t| {
            t.put("b", "2", b"b2")?;
            t.put("a", "1", b"a1")?;
            t.put("b", "1", b"b1")?;
            t.put("bb", "0", b"bb0")?;
            t.put("", "x", b"empty-table")?;
            t.put_sm_meta("applied", b"7")?;
            // Reads inside the transaction see its own writes.
            assert_eq!(t.get("a", "1")?, Some(b"a1".to_vec()));
            assert_eq!(t.get_sm_meta("applied")?, Some(b"7".to_vec()));
            Ok(())
        })
        .unwrap();

        let v = s.read_state().unwrap();
        assert_eq!(v.get("a", "1").unwrap(), Some(b"a1".to_vec()));
        assert_eq!(v.get("a", "2").unwrap(), None);
        assert_eq!(
            v.scan("b").unwrap(),
            vec![
                ("1".to_owned(), b"b1".to_vec()),
                ("2".to_owned(), b"b2".to_vec())
            ],
            "scan is one table only, in key order"
        );
        assert_eq!(
            v.scan("").unwrap(),
            vec![("x".to_owned(), b"empty-table".to_vec())]
        );
        assert!(v.scan("c").unwrap().is_empty());
        assert_eq!(v.sm_meta("applied").unwrap(), Some(b"7".to_vec()));
        assert_eq!(s.get_sm_meta("applied").unwrap(), Some(b"7".to_vec()));

        // Delete, and a failing closure rolls back everything it wrote.
        s.write_state(|t| t.delete("b", "1")).unwrap();
        let err = s
            .write_state(|t| {
                t.put("a", "9", b"nope")?;
                t.put_sm_meta("applied", b"8")?;
                Err::<(), _>(StorageFault("boom".into()))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Fault(_)));
        let v = s.read_state().unwrap();
        assert_eq!(v.scan("b").unwrap(), vec![("2".to_owned(), b"b2".to_vec())]);
        assert_eq!(v.get("a", "9").unwrap(), None);
        assert_eq!(s.get_sm_meta("applied").unwrap(), Some(b"7".to_vec()));
    }

    #[test]
    fn a_view_is_a_snapshot_in_time() {
        let (_dir, s) = open();
        s.write_state(|t| t.put("t", "k", b"1")).unwrap();
        let before = s.read_state().unwrap();
        s.write_state(|t| t.put("t", "k", b"2")).unwrap();
        assert_eq!(before.get("t", "k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            s.read_state().unwrap().get("t", "k").unwrap(),
            Some(b"2".to_vec())
        );
    }

    #[test]
    fn export_import_round_trip() {
        let (_d1, a) = open();
        a.write_state(|t| {
            t.put("services", "id1", b"{\"name\":\"web\"}")?;
            t.put("services.by-name", "web", b"id1")?;
            t.put("weird\u{0}table", "k\u{0}", &[0, 255, 1])?;
            weft_model::index::ensure(t)?;
            t.put_sm_meta("applied", b"{\"index\":3}")
        })
        .unwrap();
        let image = a.export_state().unwrap();
        assert_eq!(
            sm_meta_from_export(&image, "applied").unwrap(),
            Some(b"{\"index\":3}".to_vec())
        );
        assert_eq!(sm_meta_from_export(&image, "membership").unwrap(), None);

        let (_d2, b) = open();
        b.write_state(|t| {
            t.put("stale", "x", b"old")?;
            t.put_sm_meta("stale-meta", b"old")
        })
        .unwrap();
        b.import_state(&image).unwrap();
        let v = b.read_state().unwrap();
        assert!(
            v.scan("stale").unwrap().is_empty(),
            "import replaces, not merges"
        );
        assert_eq!(b.get_sm_meta("stale-meta").unwrap(), None);
        assert_eq!(
            v.get("services", "id1").unwrap(),
            Some(b"{\"name\":\"web\"}".to_vec())
        );
        assert_eq!(
            v.get("weird\u{0}table", "k\u{0}").unwrap(),
            Some(vec![0, 255, 1])
        );
        assert_eq!(
            b.get_sm_meta("applied").unwrap(),
            Some(b"{\"index\":3}".to_vec())
        );
        assert_eq!(
            b.export_state().unwrap(),
            image,
            "export of an import is identical"
        );

        // Corrupt images are refused and change nothing.
        for bad in [&image[..image.len() - 1], b"garbage".as_slice(), &[]] {
            assert!(matches!(b.import_state(bad), Err(StoreError::Corrupt(_))));
        }
        let mut trailing = image.clone();
        trailing.push(0);
        assert!(matches!(
            b.import_state(&trailing),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(b.export_state().unwrap(), image);
    }

    /// `first_keys` walks only the head of a table (the store's override agrees with the
    /// trait's default), and the idempotency records applied into the state travel with a
    /// snapshot: a node that installs it replays a retried request instead of acting twice.
    #[test]
    fn first_keys_and_idempotency_records_in_a_snapshot() {
        use serde_json::json;
        use weft_model::{Command, EntityKind, Outcome};
        let (_d1, a) = open();
        a.write_state(|t| {
            for k in ["c", "a", "b"] {
                t.put("t", k, b"")?;
            }
            t.put("t2", "0", b"")
        })
        .unwrap();
        let v = a.read_state().unwrap();
        assert_eq!(v.first_keys("t", 2).unwrap(), vec!["a", "b"]);
        assert_eq!(v.first_keys("t", 9).unwrap(), vec!["a", "b", "c"]);
        assert!(v.first_keys("none", 3).unwrap().is_empty());

        let create = |id: &str| Command::Idempotent {
            scope: "admin".into(),
            key: "k1".into(),
            fingerprint: "f".into(),
            at: 1_000,
            inner: Box::new(Command::Create {
                kind: EntityKind::Service,
                record: json!({"id": id, "name": "web", "createdAt": "t", "updatedAt": "t"}),
            }),
        };
        let first = a
            .write_state(|t| weft_model::apply(t, &create("s1")))
            .unwrap()
            .unwrap();
        let (_d2, b) = open();
        b.import_state(&a.export_state().unwrap()).unwrap();
        let again = b
            .write_state(|t| weft_model::apply(t, &create("s2")))
            .unwrap()
            .unwrap();
        assert_eq!(again, Outcome::Replayed(Box::new(Ok(first))));
        let v = b.read_state().unwrap();
        assert!(v.get("services", "s2").unwrap().is_none());
        assert!(weft_model::idempotency::lookup(&v, "admin", "k1", 1_000)
            .unwrap()
            .is_some());
    }

    /// An image from a version without the policy index (a snapshot file, a snapshot sent
    /// by such a node) gets its index rows when it is loaded, before anything reads it; an
    /// image that has them is loaded as it is.
    #[test]
    fn an_image_without_the_policy_index_gets_it_on_import() {
        let (_d1, old) = open();
        old.write_state(|t| {
            t.put(
                "services",
                "s1",
                br#"{"id":"s1","name":"web","roleAttributes":["web"]}"#,
            )?;
            t.put("services.by-name", "web", b"s1")
        })
        .unwrap();
        let image = old.export_state().unwrap();
        let (_d2, new) = open();
        new.import_state(&image).unwrap();
        let v = new.read_state().unwrap();
        assert!(weft_model::index::is_built(&v).unwrap());
        assert_eq!(v.keys("ix/services/attr/web").unwrap(), vec!["s1"]);
        let indexed = new.export_state().unwrap();
        assert_ne!(indexed, image);
        let (_d3, again) = open();
        again.import_state(&indexed).unwrap();
        assert_eq!(again.export_state().unwrap(), indexed, "nothing to add");
    }

    #[test]
    fn reopen_keeps_durable_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.redb");
        {
            let s = Store::open(&path).unwrap();
            let clone = s.clone();
            s.append_log(&entries(1..=5)).unwrap();
            s.purge_log_upto(1).unwrap();
            s.put_meta("vote", b"v", true).unwrap();
            clone.write_state(|t| t.put("t", "k", b"v")).unwrap();
            assert!(
                Store::open(&path).is_err(),
                "a second open of the same file in one process is refused"
            );
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.read_log(0, 100).unwrap(), entries(2..=5));
        assert_eq!(s.get_meta("vote").unwrap(), Some(b"v".to_vec()));
        assert_eq!(
            s.read_state().unwrap().get("t", "k").unwrap(),
            None,
            "the state is in memory: rebuilt from a snapshot and the log, not kept here"
        );
    }

    #[test]
    fn non_durable_meta_is_made_durable_by_a_later_durable_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.redb");
        {
            let s = Store::open(&path).unwrap();
            s.put_meta("committed", b"c", false).unwrap();
            s.put_meta("vote", b"v", true).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.get_meta("committed").unwrap(), Some(b"c".to_vec()));
    }

    /// A data dir of the version that kept the state in redb: its state comes back as an
    /// export image (so the node can start from it), and is gone once dropped.
    #[test]
    fn legacy_state_tables_are_read_once_then_dropped() {
        let (_dir, s) = open();
        assert!(s.legacy_state().unwrap().is_none(), "a new store has none");
        let mut enc = export::Encoder::new();
        enc.count(1);
        for b in [
            b"services".as_slice(),
            b"id1",
            br#"{"id":"id1","name":"web"}"#,
        ] {
            enc.bytes(b);
        }
        enc.count(1);
        enc.bytes(b"applied");
        enc.bytes(b"9");
        s.write_legacy_state(&enc.finish()).unwrap();
        let image = s.legacy_state().unwrap().expect("legacy state");
        assert_eq!(
            sm_meta_from_export(&image, "applied").unwrap(),
            Some(b"9".to_vec())
        );
        s.import_state(&image).unwrap();
        assert_eq!(
            s.read_state().unwrap().get("services", "id1").unwrap(),
            Some(br#"{"id":"id1","name":"web"}"#.to_vec())
        );
        s.drop_legacy_state().unwrap();
        assert!(s.legacy_state().unwrap().is_none());
    }
}
