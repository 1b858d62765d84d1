//! openraft's storage traits: the durable raft log ([`LogStore`]: a write-ahead log beside
//! the redb file plus an in-memory copy, see [`crate::log_writer`]) and the state machine
//! ([`StateMachine`]: the replicated state in memory, see [`weft_store::state`]); snapshot
//! payloads are files next to the redb file, which keeps the vote and other metadata.
//!
//! Durability plan:
//! * `append` is flushed (WAL `fdatasync`) before openraft hears so; `truncate_after`,
//!   `save_vote`, `purge`, snapshots and snapshot installs are durable when they return;
//! * `apply` is in memory and `save_committed` is written without fsync. Losing them in a
//!   crash is harmless: a node starts from its current snapshot (state, applied id and
//!   membership) and openraft re-applies the WAL above it. openraft purges only entries at or
//!   below the current snapshot, and `purge` records the purge point durably before WAL
//!   segments go, so the WAL always holds every entry above the snapshot.
//!
//! redb work and big applies run on tokio's blocking pool and WAL writes on the log writer
//! thread, so an fsync never stalls a runtime worker.
//!
//! # Snapshots
//!
//! A snapshot is big (the whole state) and must never stall the write path. So (see
//! [`weft_store::snapfile`]):
//!
//! * the payload is exported from ONE [`weft_store::StateView`] (an O(1) copy of the
//!   persistent in-memory maps): a consistent image while applies carry on;
//! * it is written to `<db>.snapshot-<generation>` (temporary file, fsynced in chunks, renamed,
//!   directory fsynced), outside redb;
//! * only then is a small record (`raft.snapshot`: snapshot meta + file generation, length
//!   and FNV-1a checksum) committed in redb, durably;
//! * the previous generation's file is deleted afterwards.
//!
//! Crash (kill -9, power loss) at each step of a build or install, `g` being the generation
//! the committed record points to:
//!
//! 1. while exporting: nothing on disk changed;
//! 2. while writing `<db>.snapshot-<g+1>.tmp`: the temporary file is an orphan; the record
//!    still points to `g`, whose file is intact. Orphans are deleted when the state machine
//!    is next opened (or after the next snapshot);
//! 3. after the rename, before the record commit: `<db>.snapshot-<g+1>` is a complete orphan,
//!    same as 2 (a later snapshot reuses the name, replacing it by rename);
//! 4. the record commit is one atomic redb transaction: afterwards `g+1` is current, and
//!    only then may openraft purge the log below it;
//! 5. while deleting the old file `g`: a leftover file, deleted at the next open.
//!
//! An install replaces the in-memory state with the image and the applied id/membership,
//! then runs steps 2-5 with the received bytes. A crash before step 4 restarts the node on
//! its previous snapshot and log, as if the install never happened (openraft had not been
//! told it was done).
//!
//! Reading the current snapshot checks the file against the record. A missing, torn or
//! damaged file is never handed out and never panics. While the node runs, the in-memory
//! state is authoritative: the file is logged as unusable and a fresh snapshot is built from
//! the state at once (returning "no snapshot" instead would make openraft fail with a fatal
//! storage error as soon as a follower needs one). At start, the state is rebuilt from the
//! whole log if nothing was purged yet; otherwise the node refuses to start and says how to
//! re-add it, rather than come up with state it cannot have.
//!
//! A data dir of the version that kept the log and the state in redb is moved over at
//! start: the log into the WAL ([`LogStore::new`]), the state into memory and a snapshot
//! ([`StateMachine::new`]). Records of the oldest format (`raft.snapshot.meta` /
//! `raft.snapshot.data`: payload inside redb) are ignored and deleted by the next snapshot.

use std::fmt::Debug;
use std::io;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{Stream, TryStreamExt};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, LogIdOptionExt, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weft_model::{Outcome, StorageFault};
use weft_store::wal::Records;
use weft_store::{SnapshotFile, StateTxn, Store, StoreError, Wal};

use crate::types::{ApplyResult, SnapshotData, TypeConfig};

type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;
type Entry = EntryOf<TypeConfig>;
type StoredMembership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;

/// Raft metadata keys (in the store's meta table).
const META_VOTE: &str = "raft.vote";
use crate::log_writer::{LogWriter, META_COMMITTED};
const META_LAST_PURGED: &str = "raft.last-purged";
/// The current snapshot: a [`SnapshotRecord`].
const META_SNAPSHOT: &str = "raft.snapshot";
/// The old format (snapshot payload inside redb); deleted by the next snapshot.
const LEGACY_SNAPSHOT_KEYS: [&str; 2] = ["raft.snapshot.meta", "raft.snapshot.data"];

/// State-machine metadata keys (committed together with the state).
const SM_APPLIED: &str = "applied";
const SM_MEMBERSHIP: &str = "membership";

/// Largest batch applied on the runtime thread; bigger ones go to the blocking pool.
const INLINE_APPLY_BATCH: usize = 64;

/// Most entries applied in one state transaction; bounds the memory a long catch-up holds.
const MAX_APPLY_BATCH: usize = 1024;

fn io_err(e: StoreError) -> io::Error {
    match e {
        StoreError::Corrupt(_) => io::Error::new(io::ErrorKind::InvalidData, e),
        StoreError::Io(e) => e,
        e => io::Error::other(e),
    }
}

/// Runs a store operation on the blocking pool.
async fn blocking<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
        .map_err(io_err)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn decode_opt<T: DeserializeOwned>(
    what: &str,
    bytes: Option<Vec<u8>>,
) -> Result<Option<T>, StoreError> {
    bytes.map(|b| decode(what, &b)).transpose()
}

fn get_meta<T: DeserializeOwned>(store: &Store, key: &str) -> Result<Option<T>, StoreError> {
    decode_opt(key, store.get_meta(key)?)
}

/// `RangeBounds<u64>` as the store's `[start, end)`.
fn to_half_open(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

// ---------------------------------------------------------------------------------------------
// Log
// ---------------------------------------------------------------------------------------------

/// The raft log and vote. Entries (serde_json encoded) live in the write-ahead log beside the
/// redb file (`<db>.wal/`) and, above the purge point, in memory (see [`crate::log_writer`]);
/// the vote, the purge point and the committed log id are redb metadata.
///
/// It is also its own [`RaftLogReader`]: clones share the in-memory log, so replication
/// tasks read while the raft core appends.
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Store,
    /// Owns every durable log write and the in-memory log, which holds only entries above
    /// the purge point (so reads need no lower bound of their own).
    writer: LogWriter,
}

/// Where the write-ahead log of the store at `db` lives.
pub fn wal_dir(db: &std::path::Path) -> std::path::PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".wal");
    db.with_file_name(name)
}

impl LogStore {
    /// Opens the log of the node's store: the WAL beside the redb file, whose unpurged
    /// entries are loaded into memory, and starts the log writer thread. A log from before
    /// the WAL (in redb's log table) is moved into the WAL first.
    pub fn new(store: Store) -> io::Result<Self> {
        let (wal, records) = Wal::open(&wal_dir(store.path())).map_err(io_err)?;
        let last_purged: Option<LogId> = get_meta(&store, META_LAST_PURGED).map_err(io_err)?;
        let floor = last_purged.next_index();
        let (wal, records) = migrate_redb_log(&store, wal, records, floor).map_err(io_err)?;
        let mut entries = std::collections::BTreeMap::new();
        for (index, bytes) in records {
            if index >= floor {
                let entry =
                    decode::<Entry>(&format!("log entry {index}"), &bytes).map_err(io_err)?;
                entries.insert(index, entry);
            }
        }
        Ok(LogStore {
            writer: LogWriter::start(store.clone(), wal, entries)?,
            store,
        })
    }
}

/// Moves the entries of redb's log table (where the log lived before the WAL) into the WAL,
/// durably, then empties the table. Returns the WAL and its records. A crash in between
/// leaves the entries in both places; the next start moves them again (the WAL replaces
/// what it has from the first moved index on).
fn migrate_redb_log(
    store: &Store,
    mut wal: Wal,
    records: Records,
    floor: u64,
) -> Result<(Wal, Records), StoreError> {
    let old = store.read_log(floor, u64::MAX)?;
    if old.is_empty() {
        if store.last_log()?.is_some() {
            store.truncate_log_from(0)?;
        }
        return Ok((wal, records));
    }
    tracing::info!(
        entries = old.len(),
        "moving the raft log from redb into the WAL"
    );
    wal.append(old.iter().map(|(i, b)| (*i, b.as_slice())))?;
    store.truncate_log_from(0)?;
    let dir = wal_dir(store.path());
    drop(wal);
    Wal::open(&dir)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = to_half_open(&range);
        Ok(self.writer.entries(start, end))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let store = self.store.clone();
        blocking(move || get_meta(&store, META_VOTE)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let store = self.store.clone();
        let last_purged_log_id: Option<LogId> =
            blocking(move || get_meta(&store, META_LAST_PURGED)).await?;
        // The in-memory log holds only entries above the purge point.
        let last_log_id = self.writer.last_log_id().or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote).map_err(io_err)?;
        // Through the writer, so it is durable only after every log write queued before it.
        self.writer
            .run(move |_, store| store.put_meta(META_VOTE, &bytes, true))
            .await
            .map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Saved by the writer soon after: openraft allows it to lag.
        self.writer
            .save_committed(encode(&committed).map_err(io_err)?);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(bytes) = self.writer.unwritten_committed() {
            return decode::<Option<LogId>>(META_COMMITTED, &bytes).map_err(io_err);
        }
        let store = self.store.clone();
        blocking(move || Ok(get_meta::<Option<LogId>>(&store, META_COMMITTED)?.flatten())).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows = entries
            .into_iter()
            .map(|e| {
                let bytes = encode(&e)?;
                Ok((e, bytes))
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(io_err)?;
        // Readable at once; flushed (and `callback` called) by the log writer, grouped with
        // whatever else is queued by then.
        self.writer.append(rows, callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.next_index();
        self.writer.truncate_from(from).await.map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes = encode(&Some(log_id)).map_err(io_err)?;
        // Record the purge point durably before any WAL segment goes. openraft purges only
        // entries at or below its current snapshot, whose file and record are durable, so a
        // restart rebuilds the state from that snapshot and the WAL above it.
        self.writer
            .run(move |_, store| store.put_meta(META_LAST_PURGED, &bytes, true))
            .await
            .map_err(io_err)?;
        self.writer.purge_upto(log_id.index).await.map_err(io_err)
    }
}

// ---------------------------------------------------------------------------------------------
// State machine
// ---------------------------------------------------------------------------------------------

/// What the state machine has applied: kept in memory for `applied_state`, and on disk (as sm
/// meta) in the same transactions as the data.
#[derive(Clone, Debug, Default)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// What a replica holds, in a form two replicas can compare: replicas that applied the
/// same log prefix report the same applied index and the same hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDigest {
    /// The index of the last entry applied to the state hashed (none before the first).
    pub applied_index: Option<u64>,
    /// SHA-256 of the state rows, lowercase hex (`weft_store::StateView::digest`).
    pub hash: String,
    /// How many rows were hashed.
    pub rows: usize,
}

/// The replicated state machine: committed entries go through [`weft_model::apply`] inside
/// one redb transaction per batch, which also records the applied log id and membership.
/// Clones share the store and the in-memory applied state.
#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    applied: Arc<Mutex<Applied>>,
    /// Serializes snapshot builds, installs and reads, so an older build never replaces a
    /// newer snapshot as the current one, and a reader never sees the file it was about to
    /// open deleted by a newer snapshot.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// Called at named points of a snapshot build, so tests can pause it there.
    #[cfg(test)]
    hook: Option<Arc<dyn Fn(&'static str) + Send + Sync>>,
}

/// What `raft.snapshot` holds: the current snapshot's metadata and the file with its payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta,
    file: SnapshotFile,
}

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("applied", &self.applied_now())
            .finish_non_exhaustive()
    }
}

fn read_applied(
    get: impl Fn(&str) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<Applied, StoreError> {
    Ok(Applied {
        last_applied: decode_opt::<Option<LogId>>(SM_APPLIED, get(SM_APPLIED)?)?.flatten(),
        membership: decode_opt(SM_MEMBERSHIP, get(SM_MEMBERSHIP)?)?.unwrap_or_default(),
    })
}

fn fault_of(e: StoreError) -> StorageFault {
    match e {
        StoreError::Fault(f) => f,
        e => StorageFault(e.to_string()),
    }
}

/// Applies a batch inside one state transaction: skips what was already applied (replay after
/// a crash lost a non-durable commit, or a snapshot overtook the log), applies the rest and
/// records the new applied id/membership. Returns one result per entry, and the new state.
fn apply_in_txn(
    txn: &mut StateTxn<'_>,
    entries: &[Entry],
) -> Result<(Vec<ApplyResult>, Applied), StorageFault> {
    let mut st = read_applied(|k| Ok(txn.get_sm_meta(k)?)).map_err(fault_of)?;
    let mut membership_changed = false;
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        if st
            .last_applied
            .as_ref()
            .is_some_and(|a| entry.log_id.index <= a.index)
        {
            tracing::debug!(log_id = %entry.log_id, "skip already applied entry");
            results.push(Ok(Outcome::Done));
            continue;
        }
        // In a running node entries arrive without holes; a hole means an entry was never
        // handed to the state machine and this replica diverges. openraft's own storage
        // suite applies with holes on purpose, so this is reported, not refused.
        if let Some(a) = &st.last_applied {
            if entry.log_id.index != a.index + 1 {
                tracing::error!(entry = %entry.log_id, applied = %a, "apply gap: an entry was skipped");
                metrics::counter!("weft_apply_gaps_total").increment(1);
            }
        }
        let result = match &entry.payload {
            EntryPayload::Blank => Ok(Outcome::Done),
            EntryPayload::Normal(cmd) => weft_model::apply(txn, cmd)?,
            EntryPayload::Membership(m) => {
                st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                membership_changed = true;
                Ok(Outcome::Done)
            }
        };
        st.last_applied = Some(entry.log_id);
        results.push(result);
    }
    txn.put_sm_meta(SM_APPLIED, &encode(&st.last_applied).map_err(fault_of)?)?;
    if membership_changed {
        txn.put_sm_meta(SM_MEMBERSHIP, &encode(&st.membership).map_err(fault_of)?)?;
    }
    Ok((results, st))
}

impl StateMachine {
    /// Opens the state machine over the node's store: loads the current snapshot into the
    /// (in-memory) state, with its applied log id and membership (openraft then re-applies
    /// the log above it), and deletes snapshot files a crash left behind. A node of the
    /// version that kept the state in redb starts from that state instead when it is newer,
    /// and writes it as a snapshot before dropping the old tables.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        let sm = StateMachine {
            store,
            applied: Arc::new(Mutex::new(Applied::default())),
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
            #[cfg(test)]
            hook: None,
        };
        let current = sm.snapshot_record()?;
        let mut from_snapshot = None;
        if let Some(record) = &current {
            match sm.store.read_snapshot_file(&record.file) {
                Ok(data) => from_snapshot = Some((record.meta.clone(), data)),
                Err(StoreError::Corrupt(why)) => {
                    // The log below the snapshot may be purged: without the file, the state
                    // cannot be rebuilt here.
                    let purged: Option<LogId> = get_meta(&sm.store, META_LAST_PURGED)?;
                    if purged.is_some() {
                        return Err(StoreError::Corrupt(format!(
                            "snapshot {} is unusable ({why}) and the log before it is purged: \
                             this node cannot rebuild its state. Remove it from the cluster \
                             (weft cluster remove) and join it again with an empty data dir",
                            record.meta
                        )));
                    }
                    tracing::warn!(snapshot = %record.meta, %why,
                        "snapshot file unusable; rebuilding the state from the whole log");
                }
                Err(e) => return Err(e),
            }
        }
        let legacy = sm.store.legacy_state()?;
        let legacy_applied = match &legacy {
            Some(image) => decode_opt::<Option<LogId>>(
                SM_APPLIED,
                weft_store::sm_meta_from_export(image, SM_APPLIED)?,
            )?
            .flatten(),
            None => None,
        };
        let snapshot_applied = from_snapshot.as_ref().and_then(|(m, _)| m.last_log_id);
        match (legacy, from_snapshot) {
            (Some(image), _) if legacy_applied >= snapshot_applied => {
                tracing::info!(applied = ?legacy_applied, "moving the state out of redb");
                sm.store.import_state(&image)?;
                sm.set_applied(read_applied(|k| sm.store.get_sm_meta(k))?);
                sm.build_snapshot_now(true)?;
                sm.store.drop_legacy_state()?;
            }
            (legacy, Some((meta, data))) => {
                sm.store.import_state(&data)?;
                // The record's metadata is what this snapshot is, whatever the image says.
                let st = Applied {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                };
                sm.put_applied(&st)?;
                sm.set_applied(st);
                if legacy.is_some() {
                    sm.store.drop_legacy_state()?;
                }
            }
            (_, None) => {}
        }
        let current = sm.snapshot_record()?;
        sm.remove_stale_snapshot_files(current.map(|r| r.file.generation));
        Ok(sm)
    }

    /// Records `st` as the applied log id and membership of the current state.
    fn put_applied(&self, st: &Applied) -> Result<(), StoreError> {
        let applied = encode(&st.last_applied)?;
        let membership = encode(&st.membership)?;
        self.store.write_state(|txn| {
            txn.put_sm_meta(SM_APPLIED, &applied)?;
            txn.put_sm_meta(SM_MEMBERSHIP, &membership)
        })
    }

    /// The digest of the replicated state with the applied index it corresponds to, both
    /// from one consistent view (see [`StateDigest`]). Hashes every row: call it on the
    /// blocking pool.
    pub fn digest(&self) -> Result<StateDigest, StoreError> {
        let view = self.store.read_state()?;
        let st = read_applied(|k| Ok(view.sm_meta(k)?))?;
        Ok(StateDigest {
            applied_index: st.last_applied.map(|l| l.index),
            hash: view.digest_hex(),
            rows: view.rows(),
        })
    }

    /// The underlying store, so the rest of the crate can read replicated state
    /// (`store().read_state()`) without going through raft.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn applied_now(&self) -> Applied {
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_applied(&self, st: Applied) {
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner) = st;
    }

    #[cfg(test)]
    fn hook(&self, point: &'static str) {
        if let Some(h) = &self.hook {
            h(point);
        }
    }

    #[cfg(not(test))]
    fn hook(&self, _point: &'static str) {}

    /// The committed record of the current snapshot, if any.
    fn snapshot_record(&self) -> Result<Option<SnapshotRecord>, StoreError> {
        get_meta(&self.store, META_SNAPSHOT)
    }

    /// Best effort: a file left behind only wastes disk space until the next attempt.
    fn remove_stale_snapshot_files(&self, keep: Option<u64>) {
        match self.store.remove_snapshot_files_except(keep) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "removed stale snapshot files"),
            Err(e) => tracing::warn!(error = %e, "could not remove stale snapshot files"),
        }
    }

    /// Makes `data` the current snapshot: writes it to a new file (durable before anything
    /// points to it), then commits the small record durably, then deletes older files. The
    /// only redb write transaction is the record's. Call with `snapshot_lock` held.
    fn persist_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        current: Option<&SnapshotRecord>,
    ) -> Result<(), StoreError> {
        let generation = current.map_or(1, |c| c.file.generation + 1);
        let file = self.store.write_snapshot_file(generation, data)?;
        self.hook("file written");
        let record = encode(&SnapshotRecord {
            meta: meta.clone(),
            file,
        })?;
        self.store
            .update_meta(&[(META_SNAPSHOT, &record)], &LEGACY_SNAPSHOT_KEYS, true)?;
        self.remove_stale_snapshot_files(Some(generation));
        Ok(())
    }

    /// Builds a snapshot of the current state and, unless a newer one is already current (or
    /// `replace`), makes it current. Call with `snapshot_lock` held, on the blocking pool.
    fn build_snapshot_now(&self, replace: bool) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
        // One read transaction for the metadata and the data, so they describe exactly the
        // same state even if entries are applied meanwhile. It never blocks writers.
        let view = self.store.read_state()?;
        let st = read_applied(|k| Ok(view.sm_meta(k)?))?;
        self.hook("exporting");
        let data = view.export()?;
        drop(view);
        let meta = SnapshotMeta {
            last_log_id: st.last_applied,
            last_membership: st.membership,
        };
        let current = self.snapshot_record()?;
        if replace
            || current
                .as_ref()
                .is_none_or(|c| c.meta.last_log_id <= meta.last_log_id)
        {
            self.persist_snapshot(&meta, &data, current.as_ref())?;
        }
        Ok((meta, data))
    }

    /// The current snapshot, its file checked against its record. Call with `snapshot_lock`
    /// held, on the blocking pool.
    fn current_snapshot_now(&self) -> Result<Option<Snapshot>, StoreError> {
        let Some(record) = self.snapshot_record()? else {
            return Ok(None);
        };
        match self.store.read_snapshot_file(&record.file) {
            Ok(data) => Ok(Some(Snapshot {
                meta: record.meta,
                snapshot: Cursor::new(data),
            })),
            Err(StoreError::Corrupt(why)) => {
                tracing::warn!(
                    snapshot = %record.meta,
                    %why,
                    "snapshot file unusable, ignoring it and building a new snapshot from the state"
                );
                let (meta, data) = self.build_snapshot_now(true)?;
                tracing::info!(%meta, bytes = data.len(), "rebuilt snapshot");
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Cursor::new(data),
                }))
            }
            Err(e) => Err(e),
        }
    }

    /// Applies entries in one state transaction and returns their results (in order). In
    /// memory: a small batch runs right here (microseconds per entry); a big one (catch-up)
    /// on the blocking pool.
    async fn apply_batch(&self, entries: Vec<Entry>) -> io::Result<Vec<ApplyResult>> {
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let n = entries.len();
        let (results, st) = if n <= INLINE_APPLY_BATCH {
            store
                .write_state(|txn| apply_in_txn(txn, &entries))
                .map_err(io_err)?
        } else {
            blocking(move || store.write_state(|txn| apply_in_txn(txn, &entries))).await?
        };
        metrics::histogram!("weft_sm_apply_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("weft_sm_apply_entries").record(n as f64);
        self.set_applied(st);
        Ok(results)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let _guard = self.snapshot_lock.lock().await;
        let sm = self.clone();
        let started = std::time::Instant::now();
        let (meta, data) = blocking(move || sm.build_snapshot_now(false)).await?;
        tracing::info!(
            %meta,
            bytes = data.len(),
            ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.applied_now();
        Ok((st.last_applied, st.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        loop {
            let next = entries.try_next().await?;
            let done = next.is_none();
            if let Some((entry, responder)) = next {
                batch.push(entry);
                responders.push(responder);
            }
            if !batch.is_empty() && (done || batch.len() >= MAX_APPLY_BATCH) {
                let results = self.apply_batch(std::mem::take(&mut batch)).await?;
                for (responder, result) in responders.drain(..).zip(results) {
                    if let Some(r) = responder {
                        r.send(result);
                    }
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let _guard = self.snapshot_lock.lock().await;
        let sm = self.clone();
        let store = self.store.clone();
        let meta = meta.clone();
        let data = snapshot.into_inner();
        let bytes = data.len();
        let st = blocking(move || {
            store.import_state(&data)?;
            // The image carries its own applied id and membership; make sure they are exactly
            // what the leader says the snapshot is.
            let st = Applied {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            sm.put_applied(&st)?;
            let current = sm.snapshot_record()?;
            sm.persist_snapshot(&meta, &data, current.as_ref())?;
            Ok(st)
        })
        .await?;
        tracing::info!(last_log_id = ?st.last_applied, bytes, "installed snapshot");
        self.set_applied(st);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let _guard = self.snapshot_lock.lock().await;
        let sm = self.clone();
        blocking(move || sm.current_snapshot_now()).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorage;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::{Membership, StorageError};
    use serde_json::json;
    use weft_model::{entity, Command, DomainError, EntityKind};

    use super::*;

    /// Builds a fresh store in its own temp dir; the `TempDir` guard keeps it alive.
    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let (dir, store) = open_tmp();
            let sm = StateMachine::new(store.clone()).map_err(|e| {
                StorageError::from_io_error(
                    openraft::ErrorSubject::Store,
                    openraft::ErrorVerb::Read,
                    io_err(e),
                )
            })?;
            Ok((dir, LogStore::new(store).expect("log writer"), sm))
        }
    }

    fn open_tmp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("weft.redb")).expect("open store");
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() {
        Suite::test_all(Builder)
            .await
            .expect("openraft storage suite");
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
            index,
        )
    }

    fn normal(term: u64, index: u64, cmd: Command) -> Entry {
        Entry::new_normal(log_id(term, index), cmd)
    }

    fn create(id: &str, name: &str) -> Command {
        Command::Create {
            kind: EntityKind::Service,
            record: json!({"id": id, "name": name, "roleAttributes": [], "tags": {},
                           "createdAt": "t0", "updatedAt": "t0"}),
        }
    }

    fn membership(ids: &[u64]) -> Membership<u64, openraft::BasicNode> {
        Membership::new_with_defaults(vec![ids.iter().copied().collect::<BTreeSet<_>>()], [])
    }

    async fn apply_all(sm: &mut StateMachine, entries: Vec<Entry>) {
        let stream = futures_util::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        sm.apply(stream).await.expect("apply");
    }

    async fn append(log: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(tx))
            .await
            .expect("append");
        rx.await.expect("callback called").expect("flushed");
    }

    fn service_name(store: &Store, id: &str) -> Option<String> {
        let view = store.read_state().expect("read_state");
        entity::get(&view, EntityKind::Service, id)
            .expect("get")
            .map(|v| v["name"].as_str().unwrap_or_default().to_owned())
    }

    /// A log written before the WAL existed (in redb's log table) is moved into the WAL when
    /// the node starts, and nothing of it is lost or duplicated.
    #[tokio::test]
    async fn redb_log_moves_into_the_wal_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.redb");
        {
            let store = Store::open(&path).unwrap();
            let rows: Vec<(u64, Vec<u8>)> = (1..=5)
                .map(|i| (i, encode(&Entry::new_blank(log_id(1, i))).unwrap()))
                .collect();
            store.append_log(&rows).unwrap();
        }
        for round in 0..2 {
            let store = Store::open(&path).unwrap();
            let mut log = LogStore::new(store.clone()).expect("log writer");
            assert_eq!(store.last_log().unwrap(), None, "round {round}");
            let got = log.try_get_log_entries(..).await.unwrap();
            let want: Vec<u64> = if round == 0 {
                (1..=5).collect()
            } else {
                (1..=6).collect()
            };
            assert_eq!(
                got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
                want,
                "round {round}"
            );
            if round == 0 {
                append(&mut log, vec![Entry::new_blank(log_id(2, 6))]).await;
            }
            assert_eq!(
                log.get_log_state().await.unwrap().last_log_id,
                Some(log_id(2, 6)),
                "round {round}"
            );
        }
    }

    /// Entries are readable as soon as `append` returns (replication reads them while the
    /// fsync runs), and a purge followed by a restart neither resurrects purged entries nor
    /// loses later ones.
    #[tokio::test]
    async fn appended_entries_read_back_before_flush_and_purge_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut log = LogStore::new(store).expect("log writer");
            let (tx, rx) = TypeConfig::oneshot();
            log.append(
                (1..=20).map(|i| Entry::new_blank(log_id(1, i))),
                IOFlushed::signal(tx),
            )
            .await
            .unwrap();
            assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 20);
            rx.await.unwrap().unwrap();
            log.purge(log_id(1, 12)).await.unwrap();
        }
        let store = Store::open(&path).unwrap();
        let mut log = LogStore::new(store).expect("log writer");
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(1, 12)));
        assert_eq!(st.last_log_id, Some(log_id(1, 20)));
        let got = log.try_get_log_entries(..).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (13..=20).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn log_append_read_truncate_purge_vote() {
        let (_dir, store) = open_tmp();
        let mut log = LogStore::new(store).expect("log writer");
        assert_eq!(log.get_log_state().await.unwrap(), LogState::default());
        assert_eq!(log.read_vote().await.unwrap(), None);

        append(
            &mut log,
            (1..=10).map(|i| Entry::new_blank(log_id(1, i))).collect(),
        )
        .await;
        let got = log.try_get_log_entries(3..=5).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 10);
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 10))
        );

        log.truncate_after(Some(log_id(1, 7))).await.unwrap();
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 7))
        );

        log.purge(log_id(1, 4)).await.unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(st.last_log_id, Some(log_id(1, 7)));
        let got = log.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [5, 6, 7]
        );

        log.purge(log_id(1, 7)).await.unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(
            st.last_log_id,
            Some(log_id(1, 7)),
            "empty log: last is the purge point"
        );

        let vote = Vote::new(3, 2);
        log.save_vote(&vote).await.unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        log.save_committed(Some(log_id(1, 6))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 6)));
    }

    #[tokio::test]
    async fn replicas_that_applied_the_same_entries_have_the_same_digest() {
        let batch = || {
            vec![
                Entry::new_membership(log_id(1, 1), membership(&[1])),
                normal(1, 2, create("a", "web")),
                normal(1, 3, create("b", "db")),
            ]
        };
        let (_d1, s1) = open_tmp();
        let (_d2, s2) = open_tmp();
        let one = StateMachine::new(s1).unwrap();
        let two = StateMachine::new(s2).unwrap();
        assert_eq!(one.digest().unwrap().applied_index, None);
        one.apply_batch(batch()).await.unwrap();
        // The other replica applies the same entries in two batches.
        let mut entries = batch();
        let rest = entries.split_off(2);
        two.apply_batch(entries).await.unwrap();
        let halfway = two.digest().unwrap();
        assert_eq!(halfway.applied_index, Some(2));
        two.apply_batch(rest).await.unwrap();
        let (a, b) = (one.digest().unwrap(), two.digest().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.applied_index, Some(3));
        assert_ne!(a.hash, halfway.hash);
        // One more entry on one replica only: the digests differ.
        one.apply_batch(vec![normal(1, 4, create("c", "api"))])
            .await
            .unwrap();
        let a = one.digest().unwrap();
        assert_eq!(a.applied_index, Some(4));
        assert_ne!(a.hash, b.hash);
    }

    #[tokio::test]
    async fn apply_commands_and_read_back() {
        let (_dir, store) = open_tmp();
        let mut sm = StateMachine::new(store).unwrap();
        let results = sm
            .apply_batch(vec![
                Entry::new_membership(log_id(1, 1), membership(&[1])),
                normal(1, 2, create("a", "web")),
                normal(1, 3, create("b", "db")),
                normal(1, 4, create("c", "web")),
            ])
            .await
            .unwrap();
        assert_eq!(results.len(), 4);
        assert!(matches!(results[1], Ok(Outcome::Entity(_))));
        assert!(
            matches!(results[3], Err(DomainError::NameTaken { .. })),
            "a refused command is a result, not a fault: {:?}",
            results[3]
        );
        assert_eq!(service_name(sm.store(), "a").as_deref(), Some("web"));
        assert_eq!(service_name(sm.store(), "b").as_deref(), Some("db"));
        assert_eq!(service_name(sm.store(), "c"), None);

        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 4)));
        assert_eq!(mem.log_id(), &Some(log_id(1, 1)));
        let view = sm.store().read_state().unwrap();
        let on_disk: Option<LogId> =
            serde_json::from_slice(&view.sm_meta(SM_APPLIED).unwrap().unwrap()).unwrap();
        assert_eq!(
            on_disk,
            Some(log_id(1, 4)),
            "applied id committed with the data"
        );
    }

    #[tokio::test]
    async fn replayed_entries_are_applied_once() {
        let (_dir, store) = open_tmp();
        let mut sm = StateMachine::new(store).unwrap();
        let entries = vec![
            normal(1, 1, create("a", "web")),
            normal(1, 2, create("b", "db")),
        ];
        apply_all(&mut sm, entries.clone()).await;

        // A rename, then a replay of the first two entries plus one new one: if `create a` ran
        // again it would be refused (id in use) and, more importantly, nothing may change.
        let mut patch = serde_json::Map::new();
        patch.insert("name".into(), json!("web2"));
        let rename = Command::Update {
            kind: EntityKind::Service,
            id: "a".into(),
            patch,
            at: 0,
            expected_version: None,
        };
        apply_all(&mut sm, vec![normal(1, 3, rename)]).await;
        let mut replay = entries;
        replay.push(normal(1, 4, create("c", "web")));
        let results = sm.apply_batch(replay).await.unwrap();
        assert!(matches!(results[0], Ok(Outcome::Done)), "skipped");
        assert!(
            matches!(results[2], Ok(Outcome::Entity(_))),
            "new entry applied: {:?}",
            results[2]
        );
        assert_eq!(service_name(sm.store(), "a").as_deref(), Some("web2"));
        assert_eq!(service_name(sm.store(), "c").as_deref(), Some("web"));
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 4)));
    }

    #[tokio::test]
    async fn snapshot_build_and_install_into_fresh_store() {
        let (_d1, s1) = open_tmp();
        let mut leader = StateMachine::new(s1).unwrap();
        apply_all(
            &mut leader,
            vec![
                Entry::new_membership(log_id(1, 1), membership(&[1, 2])),
                normal(1, 2, create("a", "web")),
                normal(2, 3, create("b", "db")),
            ],
        )
        .await;
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(2, 3)));
        assert_eq!(snap.meta.last_membership.log_id(), &Some(log_id(1, 1)));
        let current = leader
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("persisted");
        assert_eq!(current.meta, snap.meta);

        let (_d2, s2) = open_tmp();
        let mut follower = StateMachine::new(s2).unwrap();
        apply_all(&mut follower, vec![normal(1, 1, create("z", "stale"))]).await;
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();

        assert_eq!(
            follower.store().export_state().unwrap(),
            leader.store().export_state().unwrap(),
            "same state, same sm meta"
        );
        assert_eq!(service_name(follower.store(), "z"), None);
        assert_eq!(service_name(follower.store(), "b").as_deref(), Some("db"));
        assert_eq!(
            follower.applied_state().await.unwrap(),
            leader.applied_state().await.unwrap()
        );
        let cur = follower
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("installed snapshot is current");
        assert_eq!(cur.meta, snap.meta);

        // Applying continues after the snapshot.
        apply_all(&mut follower, vec![normal(2, 4, create("c", "cache"))]).await;
        assert_eq!(
            service_name(follower.store(), "c").as_deref(),
            Some("cache")
        );
    }

    #[tokio::test]
    async fn reopen_keeps_vote_log_applied_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.redb");
        let vote = Vote::new(2, 1);
        {
            let store = Store::open(&path).unwrap();
            let mut log = LogStore::new(store.clone()).expect("log writer");
            let mut sm = StateMachine::new(store).unwrap();
            let entries = vec![
                Entry::new_membership(log_id(1, 1), membership(&[1])),
                normal(1, 2, create("a", "web")),
                normal(2, 3, create("b", "db")),
            ];
            append(&mut log, entries.clone()).await;
            apply_all(&mut sm, entries[..2].to_vec()).await;
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            apply_all(&mut sm, entries[2..].to_vec()).await;
            log.save_vote(&vote).await.unwrap();
        }
        let store = Store::open(&path).unwrap();
        let mut log = LogStore::new(store.clone()).expect("log writer");
        let mut sm = StateMachine::new(store).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(2, 3))
        );
        let logged = log.try_get_log_entries(..).await.unwrap();
        assert_eq!(logged.len(), 3);
        // The state restarts from the snapshot (index 2); openraft re-applies the log above.
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 2)));
        assert_eq!(mem.log_id(), &Some(log_id(1, 1)));
        assert_eq!(service_name(sm.store(), "a").as_deref(), Some("web"));
        assert_eq!(service_name(sm.store(), "b"), None);
        apply_all(&mut sm, logged[2..].to_vec()).await;
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2, 3)));
        assert_eq!(service_name(sm.store(), "b").as_deref(), Some("db"));
        let snap = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("snapshot survives restart");
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2)));
    }

    /// Parks every snapshot build of `sm` (and its clones) at each hook point until the test
    /// says go: returns where the build is, and the go signal.
    fn park_builds(
        sm: &mut StateMachine,
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<&'static str>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (at_tx, at_rx) = tokio::sync::mpsc::unbounded_channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        sm.hook = Some(Arc::new(move |point| {
            at_tx.send(point).expect("test listens");
            go_rx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv()
                .expect("test says go");
        }));
        (at_rx, go_tx)
    }

    /// A snapshot build holds no redb write transaction while it exports or writes its file,
    /// so raft log appends (each a durable write transaction) and applies go on meanwhile;
    /// and the snapshot is the state as of its read transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_build_does_not_block_log_appends() {
        let (_dir, store) = open_tmp();
        let mut log = LogStore::new(store.clone()).expect("log writer");
        let mut sm = StateMachine::new(store.clone()).unwrap();
        let n = 200;
        apply_all(
            &mut sm,
            (1..=n)
                .map(|i| normal(1, i, create(&format!("s{i}"), &format!("svc-{i}"))))
                .collect(),
        )
        .await;

        let (mut at, go) = park_builds(&mut sm);
        let mut builder = sm.get_snapshot_builder().await;
        let build = tokio::spawn(async move { builder.build_snapshot().await });

        // Only a hang guard: the appends must complete while the build is parked, so if one
        // waited for the build it would never complete.
        let guard = Duration::from_secs(30);
        let mut next = 1;
        for (point, late) in [("exporting", "late1"), ("file written", "late2")] {
            assert_eq!(at.recv().await, Some(point));
            for _ in 0..3 {
                let entry = Entry::new_blank(log_id(1, next));
                tokio::time::timeout(guard, append(&mut log, vec![entry]))
                    .await
                    .unwrap_or_else(|_| panic!("log append blocked by the build ({point})"));
                next += 1;
            }
            let index = sm.applied_state().await.unwrap().0.unwrap().index + 1;
            let entry = normal(1, index, create(late, late));
            tokio::time::timeout(guard, apply_all(&mut sm, vec![entry]))
                .await
                .unwrap_or_else(|_| panic!("apply blocked by the build ({point})"));
            assert!(
                !build.is_finished(),
                "appends and applies completed while the build was still at {point}"
            );
            go.send(()).unwrap();
        }
        let snap = build.await.unwrap().unwrap();
        sm.hook = None;

        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 6))
        );
        assert_eq!(
            snap.meta.last_log_id,
            Some(log_id(1, n)),
            "the snapshot is the state its read transaction saw, not what was applied meanwhile"
        );
        let (_d2, s2) = open_tmp();
        let mut follower = StateMachine::new(s2).unwrap();
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(
            service_name(follower.store(), &format!("s{n}")).as_deref(),
            Some(format!("svc-{n}").as_str())
        );
        assert_eq!(service_name(follower.store(), "late1"), None);
        assert_eq!(service_name(follower.store(), "late2"), None);

        // The payload is a file; redb holds only a small record.
        let cur = sm.get_current_snapshot().await.unwrap().expect("current");
        assert_eq!(cur.meta.last_log_id, Some(log_id(1, n)));
        let record = store.get_meta(META_SNAPSHOT).unwrap().unwrap();
        assert!(record.len() < 1024, "record is {} bytes", record.len());
        assert!(cur.snapshot.get_ref().len() > 10 * record.len());
        for key in LEGACY_SNAPSHOT_KEYS {
            assert_eq!(store.get_meta(key).unwrap(), None);
        }
    }

    /// A missing, truncated or damaged snapshot file is never handed out: it is ignored (with
    /// a warning) and a fresh snapshot of the current state takes its place.
    #[tokio::test]
    async fn corrupt_snapshot_file_is_treated_as_absent() {
        let (_dir, store) = open_tmp();
        let mut sm = StateMachine::new(store.clone()).unwrap();
        apply_all(
            &mut sm,
            vec![Entry::new_membership(log_id(1, 1), membership(&[1]))],
        )
        .await;
        let mut index = 1;
        let mut apply_one = |sm: &mut StateMachine| {
            index += 1;
            let name = format!("svc-{index}");
            let entry = normal(1, index, create(&format!("s{index}"), &name));
            let mut sm = sm.clone();
            async move { apply_all(&mut sm, vec![entry]).await }
        };
        apply_one(&mut sm).await;
        apply_one(&mut sm).await;
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        type Damage = fn(&std::path::Path);
        let damages: [(&str, Damage); 3] = [
            ("flipped byte", |p| {
                let mut b = std::fs::read(p).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x01;
                std::fs::write(p, b).unwrap();
            }),
            ("truncated", |p| {
                let b = std::fs::read(p).unwrap();
                std::fs::write(p, &b[..b.len() / 2]).unwrap();
            }),
            ("deleted", |p| std::fs::remove_file(p).unwrap()),
        ];
        for (what, damage) in damages {
            // The state moves on past the snapshot, so a rebuilt one is recognisable.
            apply_one(&mut sm).await;
            let applied = sm.applied_state().await.unwrap().0;
            let record = sm.snapshot_record().unwrap().expect("record");
            assert!(record.meta.last_log_id < applied);
            let path = store.snapshot_file_path(record.file.generation);
            damage(&path);

            // Also through a second state machine handle on the same (running) store.
            let mut reopened = StateMachine::new(store.clone()).unwrap();
            let snap = reopened
                .get_current_snapshot()
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: a fresh snapshot replaces the bad one"));
            assert_eq!(
                snap.meta.last_log_id, applied,
                "{what}: not the damaged snapshot ({}) but one of the state",
                record.meta
            );
            assert!(!path.exists(), "{what}: the damaged file is gone");
            let again = sm.get_current_snapshot().await.unwrap().expect("current");
            assert_eq!(again.meta, snap.meta, "{what}");
            assert_eq!(again.snapshot.get_ref(), snap.snapshot.get_ref());

            let (_d2, s2) = open_tmp();
            let mut follower = StateMachine::new(s2).unwrap();
            follower
                .install_snapshot(&snap.meta, snap.snapshot)
                .await
                .unwrap();
            assert_eq!(
                follower.store().export_state().unwrap(),
                store.export_state().unwrap(),
                "{what}: the replacement is a complete image"
            );
        }
    }

    /// At start, a damaged snapshot file is survivable only while the log is complete: the
    /// state is rebuilt from the whole log. Once the log below it is purged, the node refuses
    /// to start (with what to do) instead of coming up with state it cannot have.
    #[tokio::test]
    async fn damaged_snapshot_at_start_rebuilds_from_the_log_or_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.redb");
        let entries = vec![
            Entry::new_membership(log_id(1, 1), membership(&[1])),
            normal(1, 2, create("a", "web")),
        ];
        let generation = {
            let store = Store::open(&path).unwrap();
            let mut log = LogStore::new(store.clone()).expect("log writer");
            let mut sm = StateMachine::new(store).unwrap();
            append(&mut log, entries.clone()).await;
            apply_all(&mut sm, entries.clone()).await;
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            sm.snapshot_record()
                .unwrap()
                .expect("record")
                .file
                .generation
        };
        {
            let store = Store::open(&path).unwrap();
            std::fs::write(store.snapshot_file_path(generation), b"garbage").unwrap();
            let log = LogStore::new(store.clone()).expect("log writer");
            let mut sm = StateMachine::new(store).expect("log complete: starts");
            assert_eq!(
                sm.applied_state().await.unwrap().0,
                None,
                "state from scratch"
            );
            apply_all(&mut sm, entries.clone()).await;
            assert_eq!(service_name(sm.store(), "a").as_deref(), Some("web"));
            drop(log);
        }
        {
            let store = Store::open(&path).unwrap();
            let mut log = LogStore::new(store.clone()).expect("log writer");
            log.purge(log_id(1, 1)).await.unwrap();
            drop(log);
            std::fs::write(store.snapshot_file_path(generation), b"garbage").unwrap();
            let err = StateMachine::new(store).expect_err("log purged: refuses");
            let msg = err.to_string();
            assert!(
                msg.contains("join it again"),
                "the error says what to do: {msg}"
            );
        }
    }

    /// A data dir of the version that kept the state in redb starts from that state, which
    /// becomes a snapshot; the old tables are dropped.
    #[tokio::test]
    async fn state_kept_in_redb_by_an_older_version_is_moved_into_a_snapshot() {
        let (_dir, store) = open_tmp();
        {
            let mut sm = StateMachine::new(store.clone()).unwrap();
            apply_all(
                &mut sm,
                vec![
                    Entry::new_membership(log_id(1, 1), membership(&[1])),
                    normal(1, 2, create("a", "web")),
                ],
            )
            .await;
        }
        // What the older version had on disk: the same rows, in redb's state tables.
        let image = store.export_state().unwrap();
        store.write_legacy_state(&image).unwrap();
        let (_empty_dir, empty) = open_tmp();
        store.import_state(&empty.export_state().unwrap()).unwrap();

        let mut sm = StateMachine::new(store.clone()).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 2)));
        assert_eq!(service_name(sm.store(), "a").as_deref(), Some("web"));
        assert!(
            store.legacy_state().unwrap().is_none(),
            "old tables dropped"
        );
        let snap = sm.get_current_snapshot().await.unwrap().expect("snapshot");
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2)));
    }

    /// Files a crash left between writing a snapshot file and committing its record are not
    /// used, and are deleted when the state machine is opened again; a payload stored in redb
    /// by the old format is dropped by the next snapshot.
    #[tokio::test]
    async fn crash_leftover_snapshot_files_are_ignored_and_removed() {
        let (dir, store) = open_tmp();
        store
            .put_meta(LEGACY_SNAPSHOT_KEYS[1], &[7; 4096], true)
            .unwrap();
        let mut sm = StateMachine::new(store.clone()).unwrap();
        apply_all(&mut sm, vec![normal(1, 1, create("a", "web"))]).await;
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        for key in LEGACY_SNAPSHOT_KEYS {
            assert_eq!(store.get_meta(key).unwrap(), None, "{key}");
        }
        let gen = sm.snapshot_record().unwrap().unwrap().file.generation;
        // A newer file durable but never recorded, and a torn temporary file.
        store.write_snapshot_file(gen + 1, b"not recorded").unwrap();
        let tmp = dir
            .path()
            .join(format!("weft.redb.snapshot-{}.tmp", gen + 2));
        std::fs::write(&tmp, b"torn").unwrap();

        let mut reopened = StateMachine::new(store.clone()).unwrap();
        assert!(!store.snapshot_file_path(gen + 1).exists());
        assert!(!tmp.exists());
        let cur = reopened
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("the recorded snapshot");
        assert_eq!(cur.meta, built.meta);
        assert_eq!(cur.snapshot.into_inner(), built.snapshot.into_inner());

        // The next snapshot takes a new generation and removes the previous file.
        reopened
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let next = reopened.snapshot_record().unwrap().unwrap().file.generation;
        assert_eq!(next, gen + 1);
        assert!(!store.snapshot_file_path(gen).exists());
        assert!(store.snapshot_file_path(next).exists());
    }
}

#[cfg(test)]
mod measure {
    //! Timings behind the snapshot and purge design, over a bench-sized state (20,000
    //! services with a 256-byte payload, ~9 MB exported): a snapshot build and a log purge,
    //! each with log appends going on. Run by hand:
    //! `cargo test --release -p weft-cluster --lib measure -- --ignored --nocapture`.
    use std::time::{Duration, Instant};

    use openraft::entry::RaftEntry;
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderIdExt;
    use serde_json::json;
    use weft_model::{Command, EntityKind};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
            index,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "timing, run by hand with --release --ignored --nocapture"]
    async fn measure_snapshot_build() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weft.redb")).unwrap();
        let mut sm = StateMachine::new(store.clone()).unwrap();
        let mut log = LogStore::new(store.clone()).expect("log writer");
        let payload = "x".repeat(256);
        let n = 20_000u64;
        let entries: Vec<Entry> = (1..=n)
            .map(|i| {
                let cmd = Command::Create {
                    kind: EntityKind::Service,
                    record: json!({"id": format!("id{i}"), "name": format!("svc-{i}"),
                        "roleAttributes": [], "tags": {"payload": payload},
                        "createdAt": "t0", "updatedAt": "t0"}),
                };
                Entry::new_normal(log_id(1, i), cmd)
            })
            .collect();
        let t = Instant::now();
        for chunk in entries.chunks(MAX_APPLY_BATCH) {
            sm.apply_batch(chunk.to_vec()).await.unwrap();
        }
        eprintln!("apply {n}: {:?}", t.elapsed());

        for round in 0..3 {
            let t = Instant::now();
            let data = store.export_state().unwrap();
            eprintln!(
                "round {round}: export_state {:?} ({} bytes)",
                t.elapsed(),
                data.len()
            );

            // Appends while a build runs.
            let mut builder = sm.get_snapshot_builder().await;
            let build = tokio::spawn(async move {
                let t = Instant::now();
                builder.build_snapshot().await.unwrap();
                t.elapsed()
            });
            let mut lat = Vec::new();
            let mut index = n + 1 + round * 100_000;
            let t = Instant::now();
            while !build.is_finished() {
                let a = Instant::now();
                let (tx, rx) = TypeConfig::oneshot();
                let e = Entry::new_blank(log_id(1, index));
                log.append(vec![e], IOFlushed::signal(tx)).await.unwrap();
                rx.await.unwrap().unwrap();
                lat.push(a.elapsed());
                index += 1;
            }
            let build_took = build.await.unwrap();
            lat.sort();
            let max = lat.last().copied().unwrap_or_default();
            eprintln!(
                "round {round}: build_snapshot {build_took:?}; {} appends during it ({:?}), \
                 append median {:?} max {max:?}",
                lat.len(),
                t.elapsed(),
                lat.get(lat.len() / 2).copied().unwrap_or(Duration::ZERO),
            );
            // Baseline: appends with no build.
            let mut lat = Vec::new();
            for _ in 0..50 {
                let a = Instant::now();
                let (tx, rx) = TypeConfig::oneshot();
                log.append(
                    vec![Entry::new_blank(log_id(1, index))],
                    IOFlushed::signal(tx),
                )
                .await
                .unwrap();
                rx.await.unwrap().unwrap();
                lat.push(a.elapsed());
                index += 1;
            }
            lat.sort();
            eprintln!(
                "round {round}: idle append median {:?} max {:?}",
                lat[25], lat[49]
            );
        }

        // Purge of a compacted prefix, as openraft does after a snapshot (bench defaults:
        // every 10,000 entries, 1,000 kept), over entries like the bench's: the old way (one
        // transaction, awaited) and the new one (purge point recorded, deletion in the
        // background in chunks), with appends going on.
        let mut index = 1_000_000;
        for chunked in [false, true] {
            let first = index;
            for chunk in entries[..10_000].chunks(500) {
                let shifted: Vec<Entry> = chunk
                    .iter()
                    .map(|e| {
                        let mut e = e.clone();
                        e.log_id = log_id(1, index);
                        index += 1;
                        e
                    })
                    .collect();
                let (tx, rx) = TypeConfig::oneshot();
                log.append(shifted, IOFlushed::signal(tx)).await.unwrap();
                rx.await.unwrap().unwrap();
            }
            let upto = first + 9_000 - 1;
            let t = Instant::now();
            let one_txn = if chunked {
                log.purge(log_id(1, upto)).await.unwrap();
                None
            } else {
                let s = store.clone();
                Some(tokio::task::spawn_blocking(move || {
                    s.purge_log_some(upto, u64::MAX).unwrap()
                }))
            };
            let purge_call = t.elapsed();
            let mut lat = Vec::new();
            loop {
                let done = match &one_txn {
                    Some(h) => h.is_finished(),
                    None => store.read_log(0, upto + 1).unwrap().is_empty(),
                };
                if done {
                    break;
                }
                let a = Instant::now();
                let (tx, rx) = TypeConfig::oneshot();
                let e = Entry::new_blank(log_id(1, index));
                log.append(vec![e], IOFlushed::signal(tx)).await.unwrap();
                rx.await.unwrap().unwrap();
                lat.push(a.elapsed());
                index += 1;
            }
            let deleted = t.elapsed();
            let purge_call = if chunked { purge_call } else { deleted };
            lat.sort();
            eprintln!(
                "purge of 9000 entries ({}): purge() returns after {purge_call:?}, \
                 entries gone after {deleted:?}; {} appends meanwhile, max {:?}",
                if chunked {
                    "new: background, chunked"
                } else {
                    "old: one transaction, awaited"
                },
                lat.len(),
                lat.last().copied().unwrap_or_default(),
            );
        }
    }
}
