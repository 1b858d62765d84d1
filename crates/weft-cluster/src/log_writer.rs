//! The raft log: an in-memory copy of every unpurged entry, made durable by a write-ahead
//! log ([`weft_store::Wal`]) that one writer thread owns.
//!
//! Why this shape:
//! * openraft's core awaits [`RaftLogStorage::append`] and only then lets replication read
//!   the new entries. When `append` waited for its own fsync, a write paid for the leader's
//!   fsync *then* the round trip to a follower (and its fsync), and the core could accept no
//!   new write meanwhile, so every write had an fsync of its own. Now `append` puts the
//!   entries in memory (readable at once, so replication starts while the leader's fsync
//!   runs) and queues them; the writer takes everything queued, writes it with one fsync,
//!   and only then tells openraft the entries are flushed (the `IOFlushed` callbacks, in
//!   submission order). Acknowledged writes stay durable: openraft counts an entry toward
//!   the commit quorum only once it is flushed.
//! * The log is not in redb any more: a redb commit copies-on-write ~20 scattered pages and
//!   took ~0.7-1.5 ms, and it held redb's single writer lock against the state machine.
//!   An append to the WAL is one sequential write and one `fdatasync`.
//! * Reads (replication, apply) come from memory, like etcd's raft log: the log between two
//!   purges is bounded by the snapshot policy.
//!
//! Every other log mutation (vote, truncate, purge) goes through the same queue and is
//! awaited, so it takes effect in order with the appends before it: openraft treats a vote
//! as flushed together with every earlier log write.
//!
//! [`RaftLogStorage::append`]: openraft::storage::RaftLogStorage::append

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use openraft::alias::{EntryOf, LogIdOf};
use openraft::storage::IOFlushed;
use weft_store::{Store, StoreError, Wal};

use crate::types::TypeConfig;

type Entry = EntryOf<TypeConfig>;

/// Most queued appends written with one fsync (bounds one write's size).
const MAX_GROUP: usize = 1024;

/// How often, at most, the committed log id is written to the store (not durably): openraft
/// allows it to lag; it only lets a restarted node apply what it knows is committed sooner.
const COMMITTED_EVERY: Duration = Duration::from_millis(200);

/// The meta key the committed log id is saved under.
pub(crate) const META_COMMITTED: &str = "raft.committed";

/// Encoded entries of one append, as (log index, bytes).
type Rows = Vec<(u64, Vec<u8>)>;

/// Appends taken from the queue and not yet written, with their callbacks.
type Group = Vec<(Rows, IOFlushed<TypeConfig>)>;

/// A job run on the writer thread, in order with the appends around it.
type Job = Box<dyn FnOnce(&mut Wal, &Store) -> Result<(), StoreError> + Send>;

enum Op {
    /// Entries to write durably, then report through `callback`.
    Append {
        rows: Rows,
        callback: IOFlushed<TypeConfig>,
    },
    /// Any other mutation; its result goes back through `done`.
    Run {
        job: Job,
        done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
}

/// What the writer thread and the [`LogWriter`] handles share.
#[derive(Default)]
struct Shared {
    /// Every entry above the purge point, flushed or not: what readers see.
    log: Mutex<BTreeMap<u64, Entry>>,
    /// The latest committed log id (encoded) openraft asked to save, not yet written.
    committed: Mutex<Option<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stopped() -> StoreError {
    StoreError::Io(io::Error::other("the raft log writer has stopped"))
}

/// Handle on the log and its writer thread; clones share them. Dropping the last handle
/// lets the thread finish what is queued and waits for it, so once a node's log is gone its
/// WAL is quiet and its store released (a restart in the same process never races the old
/// writer).
#[derive(Clone)]
pub struct LogWriter {
    thread: Arc<Thread>,
    shared: Arc<Shared>,
}

/// The writer thread's queue and handle.
struct Thread {
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Op>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Thread {
    fn send(&self, op: Op) -> Result<(), StoreError> {
        match &self.tx {
            Some(tx) => tx.send(op).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("the raft log writer thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter").finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Starts the writer thread on `wal`, with `entries` (the decoded, unpurged log) as the
    /// in-memory log.
    pub fn start(store: Store, wal: Wal, entries: BTreeMap<u64, Entry>) -> io::Result<LogWriter> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            log: Mutex::new(entries),
            committed: Mutex::new(None),
        });
        let for_thread = shared.clone();
        let handle = std::thread::Builder::new()
            .name("weft-log-writer".into())
            .spawn(move || run(store, wal, rx, for_thread))?;
        Ok(LogWriter {
            thread: Arc::new(Thread {
                tx: Some(tx),
                handle: Some(handle),
            }),
            shared,
        })
    }

    /// Makes `entries` readable at once and queues them for one durable write;
    /// `callback` hears when they are on disk (or that writing failed).
    pub fn append(
        &self,
        entries: Vec<(Entry, Vec<u8>)>,
        callback: IOFlushed<TypeConfig>,
    ) -> io::Result<()> {
        let Some(first) = entries.first().map(|(e, _)| e.log_id.index) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let mut rows = Vec::with_capacity(entries.len());
        {
            let mut log = lock(&self.shared.log);
            // An append over existing indexes replaces them and everything after (the WAL
            // does the same).
            log.split_off(&first);
            for (entry, bytes) in entries {
                let index = entry.log_id.index;
                log.insert(index, entry);
                rows.push((index, bytes));
            }
        }
        self.thread
            .send(Op::Append { rows, callback })
            .map_err(io::Error::other)
    }

    /// Runs `job` on the writer thread after every append queued before it, and waits.
    pub async fn run(
        &self,
        job: impl FnOnce(&mut Wal, &Store) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.thread.send(Op::Run {
            job: Box::new(job),
            done,
        })?;
        rx.await.map_err(|_| stopped())?
    }

    /// Deletes every entry `>= from`; durable on return.
    pub async fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        lock(&self.shared.log).split_off(&from);
        self.run(move |wal, _| wal.truncate_from(from)).await
    }

    /// Forgets every entry `<= upto` and deletes the WAL segments that hold only such
    /// entries. The caller has durably recorded the purge point first.
    pub async fn purge_upto(&self, upto: u64) -> Result<(), StoreError> {
        let purged = {
            let mut log = lock(&self.shared.log);
            let keep = log.split_off(&upto.saturating_add(1));
            std::mem::replace(&mut *log, keep)
        };
        // Freeing ~100,000 entries takes tens of ms: not under the lock (appends and
        // replication wait on it), not here (openraft's core awaits this) and not on the
        // writer thread (appends wait on it).
        tokio::task::spawn_blocking(move || drop(purged));
        self.run(move |wal, _| wal.purge_upto(upto)).await
    }

    /// Remembers the committed log id (encoded) for the writer to save soon.
    pub fn save_committed(&self, bytes: Vec<u8>) {
        *lock(&self.shared.committed) = Some(bytes);
    }

    /// The committed log id last given to [`LogWriter::save_committed`], if not yet written.
    pub fn unwritten_committed(&self) -> Option<Vec<u8>> {
        lock(&self.shared.committed).clone()
    }

    /// The entries with `start <= index < end`.
    pub fn entries(&self, start: u64, end: u64) -> Vec<Entry> {
        if start >= end {
            return Vec::new();
        }
        lock(&self.shared.log)
            .range(start..end)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The last entry's log id.
    pub fn last_log_id(&self) -> Option<LogIdOf<TypeConfig>> {
        lock(&self.shared.log)
            .values()
            .next_back()
            .map(|e| e.log_id)
    }
}

/// The writer thread: takes every queued op, writes runs of appends with one fsync, runs
/// other jobs in between, in order.
fn run(store: Store, mut wal: Wal, rx: mpsc::Receiver<Op>, shared: Arc<Shared>) {
    let mut group: Group = Vec::new();
    let mut committed_at = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Append { rows, callback } => group.push((rows, callback)),
                Op::Run { job, done } => {
                    flush(&mut wal, &mut group);
                    let _ = done.send(job(&mut wal, &store));
                }
            }
            if group.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut wal, &mut group);
        if committed_at.elapsed() >= COMMITTED_EVERY {
            committed_at = Instant::now();
            save_committed(&store, &shared);
        }
    }
    save_committed(&store, &shared);
}

/// Writes the committed log id openraft last gave us (not durably: it may lag).
fn save_committed(store: &Store, shared: &Shared) {
    let Some(bytes) = lock(&shared.committed).take() else {
        return;
    };
    if let Err(e) = store.put_meta(META_COMMITTED, &bytes, false) {
        tracing::warn!(error = %e, "could not save the committed log id");
    }
}

/// Writes the grouped appends with one fsync and reports to openraft in order.
fn flush(wal: &mut Wal, group: &mut Group) {
    if group.is_empty() {
        return;
    }
    let started = Instant::now();
    // One WAL append (one fsync) per run of increasing indexes: normally the whole group; an
    // append that went back over earlier indexes starts a new run (the WAL replaces them).
    let rows: Vec<(u64, &[u8])> = group
        .iter()
        .flat_map(|(rows, _)| rows.iter().map(|(i, b)| (*i, b.as_slice())))
        .collect();
    let mut result = Ok(());
    let mut start = 0;
    for end in 1..=rows.len() {
        if end == rows.len() || rows[end].0 <= rows[end - 1].0 {
            result = wal.append(rows[start..end].iter().copied());
            if result.is_err() {
                break;
            }
            start = end;
        }
    }
    metrics::histogram!("weft_log_flush_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("weft_log_flush_entries")
        .record(group.iter().map(|(r, _)| r.len()).sum::<usize>() as f64);
    match result {
        Ok(()) => {
            for (_, callback) in group.drain(..) {
                callback.io_completed(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "raft log write failed");
            let msg = e.to_string();
            for (_, callback) in group.drain(..) {
                callback.io_completed(Err(io::Error::other(msg.clone())));
            }
        }
    }
}
