//! openraft's storage traits on [`weft_store::Store`]: the durable raft log ([`LogStore`]) and
//! the persistent state machine ([`StateMachine`]) share one redb file.
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
use serde::Serialize;
use weft_model::{Outcome, StorageFault};
use weft_store::{sm_meta_from_export, StateTxn, Store, StoreError};

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
const META_SNAPSHOT_META: &str = "raft.snapshot.meta";
const META_SNAPSHOT_DATA: &str = "raft.snapshot.data";

/// State-machine metadata keys (committed together with the state).
const SM_APPLIED: &str = "applied";
const SM_MEMBERSHIP: &str = "membership";

/// Most entries applied in one state transaction; bounds the memory a long catch-up holds.
const MAX_APPLY_BATCH: usize = 1024;

fn io_err(e: StoreError) -> io::Error {
    match e {
        StoreError::Corrupt(_) => io::Error::new(io::ErrorKind::InvalidData, e),
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
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Store,
}

impl LogStore {
    /// Wraps the node's store; the log lives in the same redb file as the state.
    pub fn new(store: Store) -> Self {
        LogStore { store }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = to_half_open(&range);
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
        blocking(move || {
            let last_purged_log_id: Option<LogId> = get_meta(&store, META_LAST_PURGED)?;
            let last = store
                .last_log()?
                .map(|(index, bytes)| decode::<Entry>(&format!("log entry {index}"), &bytes))
                .transpose()?;
            let last_log_id = match last {
                Some(entry) => Some(entry.log_id),
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
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
        blocking(move || {
            // Record the purge point first: if only the first commit survives a crash the log
            // merely keeps some extra entries, never a hole.
            store.put_meta(META_LAST_PURGED, &bytes, false)?;
            store.purge_log_upto(log_id.index)
        })
        .await
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
    /// Serializes snapshot builds and installs, so an older build never replaces a newer
    /// snapshot as the current one.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
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
    /// membership that the last committed state transaction recorded.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        let applied = read_applied(|k| store.get_sm_meta(k))?;
        Ok(StateMachine {
            store,
            applied: Arc::new(Mutex::new(applied)),
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
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
        let store = self.store.clone();
        let (meta, data) = blocking(move || {
            let data = store.export_state()?;
            // Metadata from the export itself, not from memory: it must describe exactly the
            // state in `data`, even if entries were applied meanwhile.
            let st = read_applied(|k| sm_meta_from_export(&data, k))?;
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership,
            };
            let current: Option<SnapshotMeta> = get_meta(&store, META_SNAPSHOT_META)?;
            if current.is_none_or(|c| c.last_log_id <= meta.last_log_id) {
                let meta_bytes = encode(&meta)?;
                store.put_meta_many(
                    &[
                        (META_SNAPSHOT_META, &meta_bytes),
                        (META_SNAPSHOT_DATA, &data),
                    ],
                    true,
                )?;
            }
            Ok((meta, data))
        })
        .await?;
        tracing::info!(%meta, bytes = data.len(), "built snapshot");
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
            let meta_bytes = encode(&meta)?;
            store.put_meta_many(
                &[
                    (META_SNAPSHOT_META, &meta_bytes),
                    (META_SNAPSHOT_DATA, &data),
                ],
                true,
            )?;
            Ok(st)
        })
        .await?;
        tracing::info!(last_log_id = ?st.last_applied, bytes, "installed snapshot");
        self.set_applied(st);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let store = self.store.clone();
        blocking(move || {
            let Some(meta) = get_meta::<SnapshotMeta>(&store, META_SNAPSHOT_META)? else {
                return Ok(None);
            };
            let data = store
                .get_meta(META_SNAPSHOT_DATA)?
                .ok_or_else(|| StoreError::Corrupt("snapshot meta without data".into()))?;
            Ok(Some(Snapshot {
                meta,
                snapshot: Cursor::new(data),
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

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
}
