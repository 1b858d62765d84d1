//! openraft's storage traits on [`weft_store::Store`]: the durable raft log ([`LogStore`]) and
//! the persistent state machine ([`StateMachine`]) share one redb file; snapshot payloads are
//! files next to it.
//!
//! Durability plan:
//! * `append`, `truncate_after`, `save_vote`, snapshots and snapshot installs fsync before
//!   returning;
//! * `save_committed`, `purge` and `apply` commit without fsync. They are made durable by the
//!   next fsync of anything (redb commits are totally ordered), and losing them in a crash is
//!   harmless: the applied log id commits in the same transaction as the data it describes, so
//!   the node restarts at an older, consistent applied id and openraft re-applies from the
//!   (durable) log.
//!
//! Every disk operation runs on tokio's blocking pool, so an fsync never stalls a runtime
//! worker.
//!
//! # Snapshots
//!
//! redb has ONE writer, and every log append is a durable write transaction. So a snapshot
//! must never hold the writer for long: a multi-MB blob written and fsynced inside redb made
//! appends wait behind it, past the 50 ms append RPC timeout, and stalled replication on
//! every snapshot. Instead (see [`weft_store::snapfile`]):
//!
//! * the payload is exported from ONE read transaction ([`weft_store::StateView::export`]):
//!   redb's MVCC gives a consistent image while appends and applies carry on;
//! * it is written to `<db>.snapshot-<generation>` (temporary file, fsynced in chunks, renamed,
//!   directory fsynced), outside redb;
//! * only then is a small record (`raft.snapshot`: snapshot meta + file generation, length
//!   and FNV-1a checksum) committed in redb, durably. That is the only write transaction of a
//!   build: a few hundred bytes, like a log append;
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
//! 4. the record commit is one atomic redb transaction: afterwards `g+1` is current. Being
//!    durable, it also makes durable every earlier (non-durable) apply, in particular the one
//!    the export saw, so a snapshot never describes state the node could lose;
//! 5. while deleting the old file `g`: a leftover file, deleted at the next open.
//!
//! An install first replaces the state with the image (one durable redb transaction; the
//! state itself has to be written) and the applied id/membership, then runs steps 2-5 with
//! the received bytes. A crash between the two leaves the new state with the previous
//! snapshot as current, i.e. a snapshot older than the applied id, which is the normal case.
//!
//! Reading the current snapshot checks the file against the record. A missing, torn or
//! damaged file is never handed out and never panics: it is logged and treated as absent, and
//! because the state in redb is authoritative a fresh snapshot is built from it at once and
//! becomes current (returning "no snapshot" instead would make openraft fail with a fatal
//! storage error as soon as a follower needs one).
//!
//! Records of the old format (`raft.snapshot.meta` / `raft.snapshot.data`: payload inside
//! redb) are ignored and deleted by the next snapshot; a node restarting without a readable
//! snapshot but with a purged log gets one rebuilt by openraft at startup.

use std::fmt::Debug;
use std::io;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{Stream, TryStreamExt};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, LogIdOptionExt, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weft_model::{Outcome, StorageFault};
use weft_store::{SnapshotFile, StateTxn, Store, StoreError, PURGE_CHUNK};

use crate::types::{ApplyResult, SnapshotData, TypeConfig};

type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;
type Entry = EntryOf<TypeConfig>;
type StoredMembership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;

/// Raft metadata keys (in the store's meta table).
const META_VOTE: &str = "raft.vote";
const META_COMMITTED: &str = "raft.committed";
const META_LAST_PURGED: &str = "raft.last-purged";
/// The current snapshot: a [`SnapshotRecord`].
const META_SNAPSHOT: &str = "raft.snapshot";
/// The old format (snapshot payload inside redb); deleted by the next snapshot.
const LEGACY_SNAPSHOT_KEYS: [&str; 2] = ["raft.snapshot.meta", "raft.snapshot.data"];

/// State-machine metadata keys (committed together with the state).
const SM_APPLIED: &str = "applied";
const SM_MEMBERSHIP: &str = "membership";

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

/// The raft log and vote, on the store's log and meta tables. Entries are serde_json encoded.
///
/// It is also its own [`RaftLogReader`]: clones share the database, and redb gives every read
/// a consistent snapshot, so replication tasks can read while the raft core appends.
///
/// Purges (after every snapshot, thousands of entries) record the purge point at once and
/// delete the entries in the background, in small transactions: openraft awaits `purge` in
/// its core loop, and deleting ~10,000 entries in one redb transaction took ~200 ms, during
/// which the node neither appended nor answered its leader. Entries below the purge point
/// that are still on disk are never read (the `floor`), and the deletion goes from the
/// oldest entry up, so the log never has a hole, whenever it stops (crash, shutdown: the next
/// purge deletes what is left).
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Store,
    /// Index of the first entry that is not purged; reads start here at the earliest.
    floor: Arc<AtomicU64>,
    /// Runs background purges one at a time.
    purging: Arc<tokio::sync::Mutex<()>>,
}

impl LogStore {
    /// Wraps the node's store; the log lives in the same redb file as the state.
    pub fn new(store: Store) -> Self {
        LogStore {
            store,
            floor: Arc::new(AtomicU64::new(0)),
            purging: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn raise_floor(&self, purged: Option<&LogId>) {
        if let Some(p) = purged {
            self.floor
                .fetch_max(p.index.saturating_add(1), Ordering::AcqRel);
        }
    }

    /// Deletes the entries `<= upto` in the background, [`PURGE_CHUNK`] per transaction, so
    /// log appends get the writer in between. Holds the store only while deleting a chunk: a
    /// stopped node's store closes instead of waiting for the purge.
    fn spawn_purge(&self, upto: u64) {
        let weak = self.store.downgrade();
        let purging = self.purging.clone();
        tokio::spawn(async move {
            let _one_at_a_time = purging.lock().await;
            loop {
                let Some(store) = weak.upgrade() else {
                    return;
                };
                let more =
                    tokio::task::spawn_blocking(move || store.purge_log_some(upto, PURGE_CHUNK))
                        .await;
                match more {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => return,
                    Ok(Err(e)) => {
                        tracing::warn!(upto, error = %e, "log purge stopped; the next one resumes it");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(upto, error = %e, "log purge task failed");
                        return;
                    }
                }
            }
        });
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = to_half_open(&range);
        let start = start.max(self.floor.load(Ordering::Acquire));
        let store = self.store.clone();
        blocking(move || {
            store
                .read_log(start, end)?
                .into_iter()
                .map(|(index, bytes)| decode::<Entry>(&format!("log entry {index}"), &bytes))
                .collect()
        })
        .await
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
        let state = blocking(move || {
            let last_purged_log_id: Option<LogId> = get_meta(&store, META_LAST_PURGED)?;
            let last = store
                .last_log()?
                .map(|(index, bytes)| decode::<Entry>(&format!("log entry {index}"), &bytes))
                .transpose()?;
            // An entry at or below the purge point is one a purge has not deleted yet (or
            // a crash interrupted): the log is logically empty up to the purge point.
            let last_log_id = match (last, &last_purged_log_id) {
                (Some(entry), Some(p)) if entry.log_id.index <= p.index => last_purged_log_id,
                (Some(entry), _) => Some(entry.log_id),
                (None, _) => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await?;
        self.raise_floor(state.last_purged_log_id.as_ref());
        Ok(state)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let store = self.store.clone();
        let bytes = encode(vote).map_err(io_err)?;
        blocking(move || store.put_meta(META_VOTE, &bytes, true)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let store = self.store.clone();
        let bytes = encode(&committed).map_err(io_err)?;
        blocking(move || store.put_meta(META_COMMITTED, &bytes, false)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
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
            .map(|e| Ok((e.log_id.index, encode(&e)?)))
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(io_err)?;
        if !rows.is_empty() {
            let store = self.store.clone();
            // One transaction, one fsync, before the entries are reported flushed.
            blocking(move || store.append_log(&rows)).await?;
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.next_index();
        let store = self.store.clone();
        blocking(move || store.truncate_log_from(from)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let store = self.store.clone();
        let bytes = encode(&Some(log_id)).map_err(io_err)?;
        let upto = log_id.index;
        // Record the purge point first (one small commit): if only it survives a crash, the
        // log merely keeps some extra entries below it, never a hole. openraft allows the
        // deletion itself to happen later.
        blocking(move || store.put_meta(META_LAST_PURGED, &bytes, false)).await?;
        self.raise_floor(Some(&log_id));
        self.spawn_purge(upto);
        Ok(())
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
    /// Opens the state machine over the node's store, loading the applied log id and
    /// membership that the last committed state transaction recorded, and deleting snapshot
    /// files a crash left behind.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        let applied = read_applied(|k| store.get_sm_meta(k))?;
        let sm = StateMachine {
            store,
            applied: Arc::new(Mutex::new(applied)),
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
            #[cfg(test)]
            hook: None,
        };
        let current = sm.snapshot_record()?;
        sm.remove_stale_snapshot_files(current.map(|r| r.file.generation));
        Ok(sm)
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

    /// Applies entries in one state transaction and returns their results (in order).
    async fn apply_batch(&self, entries: Vec<Entry>) -> io::Result<Vec<ApplyResult>> {
        let store = self.store.clone();
        let (results, st) =
            blocking(move || store.write_state(false, |txn| apply_in_txn(txn, &entries))).await?;
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
            let applied = encode(&st.last_applied)?;
            let membership = encode(&st.membership)?;
            store.write_state(false, |txn| {
                txn.put_sm_meta(SM_APPLIED, &applied)?;
                txn.put_sm_meta(SM_MEMBERSHIP, &membership)
            })?;
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
            Ok((dir, LogStore::new(store), sm))
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

    #[tokio::test]
    async fn log_append_read_truncate_purge_vote() {
        let (_dir, store) = open_tmp();
        let mut log = LogStore::new(store);
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
            let mut log = LogStore::new(store.clone());
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
            // Durable: the vote's fsync also persists the non-durable apply before it.
            log.save_vote(&vote).await.unwrap();
        }
        let store = Store::open(&path).unwrap();
        let mut log = LogStore::new(store.clone());
        let mut sm = StateMachine::new(store).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(2, 3))
        );
        assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 3);
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(2, 3)));
        assert_eq!(mem.log_id(), &Some(log_id(1, 1)));
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
        let mut log = LogStore::new(store.clone());
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

            // Also through a state machine opened afresh, as after a restart.
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
        let mut log = LogStore::new(store.clone());
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
