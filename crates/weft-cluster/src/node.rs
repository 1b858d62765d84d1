//! [`Node`]: one controller's membership in the raft cluster, and the only API the
//! controller uses to change or read replicated state.
//!
//! Every write, linearizable read and membership change goes through
//! [`Node::leader_call`], which decides the row of the status table:
//! 1. this node cannot reach a quorum (by its own probes) -> [`ClusterError::NotInQuorum`] at once;
//! 2. this node is the leader -> run it here;
//! 3. another node is the leader -> forward over the peer channel, then (for writes)
//!    wait until this node has applied the entry, so the client reads its own write;
//! 4. no leader -> wait up to `election_wait` for one, then [`ClusterError::NoLeader`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{BasicNode, ChangeMembers, ReadPolicy, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use weft_model::{Command, Outcome};
use weft_store::{StateView, Store};

use crate::error::ClusterError;
use crate::faults::RpcKind;
use crate::peer::{Network, PeerClient, PeerError, WireResult};
use crate::storage::{LogStore, StateDigest, StateMachine};
use crate::types::{ApplyResult, NodeId, Raft, TypeConfig};

/// Timing and sizing of one node. Defaults suit a LAN or loopback cluster.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// Randomized election timeout range.
    pub election_min: Duration,
    pub election_max: Duration,
    /// How often each node probes every other member for the quorum view.
    pub probe_interval: Duration,
    /// A member not heard from for this long counts as unreachable.
    pub contact_timeout: Duration,
    /// How long a write waits for an election to finish before answering no-leader.
    pub election_wait: Duration,
    /// Limit for a write to be committed and applied (forwarding included).
    pub write_timeout: Duration,
    /// Take a snapshot after at least this many log entries; older entries are then purged.
    /// With a bigger state, after as many entries as the state has rows (see
    /// [`snapshot_threshold`]), up to `snapshot_logs_max`.
    pub snapshot_logs: u64,
    /// Most log entries between two snapshots, however big the state (bounds the log held
    /// in memory).
    pub snapshot_logs_max: u64,
    /// Entries kept in the log behind the last snapshot (a node further behind gets the snapshot).
    pub logs_to_keep: u64,
    /// Writes admitted at once on the leader before answering too-many-requests.
    pub max_inflight_writes: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(200),
            election_max: Duration::from_millis(400),
            probe_interval: Duration::from_millis(100),
            contact_timeout: Duration::from_millis(600),
            election_wait: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            snapshot_logs: 10_000,
            snapshot_logs_max: 100_000,
            logs_to_keep: 1_000,
            max_inflight_writes: 4_096,
        }
    }
}

/// Requests only the leader can carry out; followers forward them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderRequest {
    Write(Command),
    ReadIndex,
    AddMember {
        id: NodeId,
        url: String,
        voter: bool,
    },
    RemoveMember {
        id: NodeId,
    },
    TransferLeader {
        to: Option<NodeId>,
    },
}

/// The leader's answer to a [`LeaderRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply {
    Written { index: u64, result: ApplyResult },
    ReadIndex { index: u64 },
    Done,
    Leader { id: NodeId },
}

/// Why a leader did not carry out a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not (or no longer) the leader; ask again.
    NotLeader,
    Cluster(ClusterError),
}

/// A quorum-view probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub from: NodeId,
}

/// The answer to a probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReply {
    pub id: NodeId,
    /// Whether the prober is a member in the answerer's view (a removed node is not, and
    /// so does not count the answer toward its quorum).
    pub member: bool,
    pub applied: Option<u64>,
}

/// What a node says about itself (`/health-checks`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: &'static str,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub applied: Option<u64>,
    pub in_quorum: bool,
}

/// One member as this node sees it (`list-members`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub id: NodeId,
    pub url: String,
    pub voter: bool,
    pub leader: bool,
    pub connected: bool,
    pub last_contact_ms: Option<u64>,
    pub applied: Option<u64>,
}

/// Static identity and tuning of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The API URL other members and clients use to reach this node.
    pub advertise_url: String,
    pub timing: Timing,
}

#[derive(Debug, Clone, Copy)]
struct Contact {
    at: Instant,
    applied: Option<u64>,
}

/// Consecutive probes of the leader refused at the connection level before a follower
/// starts an election without waiting for its election timeout.
const DEAD_LEADER_PROBES: u32 = 2;

struct Inner {
    id: NodeId,
    url: String,
    raft: Raft,
    sm: StateMachine,
    peers: PeerClient,
    contacts: Mutex<HashMap<NodeId, Contact>>,
    /// Per member: how many probes in a row were refused at the connection level (the
    /// process is gone; a frozen or slow one still accepts connections).
    refused: Mutex<HashMap<NodeId, u32>>,
    timing: Timing,
    permits: Semaphore,
    /// Set once this node has applied everything the leader had committed at some point
    /// after start-up. Until then its local reads may miss acknowledged writes (apply is
    /// not fsynced; a restarted node re-applies from the log), so they are marked stale.
    caught_up: std::sync::atomic::AtomicBool,
    stop: tokio::sync::watch::Sender<bool>,
}

/// A running raft member. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn internal(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Internal(e.to_string())
}

impl Node {
    /// Opens the raft member over `store` and starts its background tasks (quorum
    /// probes, metrics). A node with an empty store waits to be initialised or added.
    pub async fn start(
        cfg: NodeConfig,
        store: Store,
        peers: PeerClient,
    ) -> Result<Node, ClusterError> {
        let t = &cfg.timing;
        let ms = |d: Duration| d.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: "weft".into(),
            heartbeat_interval: ms(t.heartbeat),
            election_timeout_min: ms(t.election_min),
            election_timeout_max: ms(t.election_max),
            install_snapshot_timeout: 30_000,
            // Triggered by `snapshot_loop`, with a threshold that grows with the state.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: t.logs_to_keep,
            enable_pre_vote: Some(true),
            // `broadcast_submitted_on_append` stays at openraft's default (off): since log
            // appends return before their fsync, it made no difference beyond noise (A/B on
            // a 3-node cluster: 1 client 1010/871 writes/s on vs 1068/984 off; 64 clients
            // 9722/8998 on vs 8795/7779 off).
            ..Default::default()
        }
        .validate()
        .map_err(internal)?;
        let log = LogStore::new(store.clone()).map_err(internal)?;
        let sm = StateMachine::new(store).map_err(internal)?;
        let network = Network {
            client: peers.clone(),
        };
        let raft = Raft::new(cfg.id, Arc::new(raft_config), network, log, sm.clone())
            .await
            .map_err(internal)?;
        let (stop, _) = tokio::sync::watch::channel(false);
        let node = Node {
            inner: Arc::new(Inner {
                id: cfg.id,
                url: cfg.advertise_url,
                raft,
                sm,
                peers,
                contacts: Mutex::new(HashMap::new()),
                refused: Mutex::new(HashMap::new()),
                permits: Semaphore::new(cfg.timing.max_inflight_writes),
                timing: cfg.timing,
                caught_up: std::sync::atomic::AtomicBool::new(false),
                stop,
            }),
        };
        tokio::spawn(node.clone().probe_loop());
        tokio::spawn(node.clone().catch_up_loop());
        tokio::spawn(node.clone().metrics_loop());
        tokio::spawn(node.clone().snapshot_loop());
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's advertised API URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The peer client (tests reach the fault set through it).
    pub fn peers(&self) -> &PeerClient {
        &self.inner.peers
    }

    /// Whether this node has a membership (bootstrapped, or added by a leader).
    pub async fn is_initialized(&self) -> Result<bool, ClusterError> {
        self.inner.raft.is_initialized().await.map_err(internal)
    }

    /// Creates a new one-node cluster with this node as its only voter.
    pub async fn initialize(&self) -> Result<(), ClusterError> {
        let mut members = BTreeMap::new();
        members.insert(
            self.inner.id,
            BasicNode {
                addr: self.inner.url.clone(),
            },
        );
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(internal)?;
        // Wait until this node leads its own cluster, so the bootstrap writes can follow.
        self.wait_for(Duration::from_secs(10), |m| {
            m.current_leader == Some(m.id) && m.state == ServerState::Leader
        })
        .await
    }

    /// Stops raft and the background tasks.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let _ = self.inner.raft.shutdown().await;
        // Applied state is committed without fsync; one durable commit makes all of it
        // durable, so a clean restart does not have to re-apply anything.
        let store = self.inner.sm.store().clone();
        let _ =
            tokio::task::spawn_blocking(move || store.put_meta("clean-shutdown", b"1", true)).await;
    }

    fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    async fn wait_for(
        &self,
        limit: Duration,
        pred: impl Fn(&openraft::RaftMetrics<TypeConfig>) -> bool,
    ) -> Result<(), ClusterError> {
        let mut rx = self.inner.raft.metrics();
        let wait = async {
            loop {
                if pred(&rx.borrow_and_update()) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(ClusterError::Internal("raft stopped".into()));
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout(format!(
                "waited {} ms for the cluster",
                limit.as_millis()
            ))),
        }
    }

    /// Waits until this node has applied `index` (read-your-writes after forwarding).
    pub async fn wait_applied(&self, index: u64, limit: Duration) -> Result<(), ClusterError> {
        self.wait_for(limit, |m| {
            m.last_applied.as_ref().map(|l| l.index) >= Some(index)
        })
        .await
    }

    /// The local replicated state (may be stale on a follower; see [`Node::linearize`]).
    pub fn read_state(&self) -> Result<StateView, ClusterError> {
        Ok(self.inner.sm.store().read_state()?)
    }

    /// The digest of this node's replicated state and the applied index it is at (local,
    /// like [`Node::read_state`]): equal on every node once they applied the same entries.
    pub async fn state_digest(&self) -> Result<StateDigest, ClusterError> {
        let sm = self.inner.sm.clone();
        tokio::task::spawn_blocking(move || sm.digest())
            .await
            .map_err(internal)?
            .map_err(ClusterError::from)
    }

    /// Makes the next local read linearizable: learns the leader's commit index through
    /// a quorum round and waits until this node has applied it.
    pub async fn linearize(&self) -> Result<(), ClusterError> {
        match self.leader_call(LeaderRequest::ReadIndex).await? {
            LeaderReply::ReadIndex { index } => {
                self.wait_applied(index, self.inner.timing.write_timeout)
                    .await?;
                self.inner
                    .caught_up
                    .store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            other => Err(internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// Whether this node has caught up with the cluster since it started (see
    /// [`Node::linearize`]); until then local reads should be marked stale.
    pub fn caught_up(&self) -> bool {
        self.inner
            .caught_up
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// After start-up, catches up once with the leader's commit index.
    async fn catch_up_loop(self) {
        let mut stop = self.inner.stop.subscribe();
        while !self.caught_up() {
            if self.in_quorum() {
                let _ = self.linearize().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.inner.timing.probe_interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Proposes a command; returns its log index and what applying it produced.
    pub async fn write(&self, cmd: Command) -> Result<(u64, Outcome), ClusterError> {
        let started = Instant::now();
        let reply = self.leader_call(LeaderRequest::Write(cmd)).await;
        metrics::histogram!("weft_write_seconds").record(started.elapsed().as_secs_f64());
        match reply? {
            LeaderReply::Written { index, result } => Ok((index, result?)),
            other => Err(internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// Adds a member as a learner, waits until it caught up, then (if `voter`) promotes it.
    pub async fn add_member(
        &self,
        id: NodeId,
        url: String,
        voter: bool,
    ) -> Result<(), ClusterError> {
        self.leader_call(LeaderRequest::AddMember { id, url, voter })
            .await
            .map(drop)
    }

    /// Removes a member from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ClusterError> {
        self.leader_call(LeaderRequest::RemoveMember { id })
            .await
            .map(drop)
    }

    /// Hands leadership to `to` (or the best other voter); returns once a new leader is in office.
    pub async fn transfer_leadership(&self, to: Option<NodeId>) -> Result<NodeId, ClusterError> {
        match self
            .leader_call(LeaderRequest::TransferLeader { to })
            .await?
        {
            LeaderReply::Leader { id } => {
                // Let this node see the new leader too before answering.
                let _ = self
                    .wait_for(self.inner.timing.election_wait, |m| {
                        m.current_leader == Some(id)
                    })
                    .await;
                Ok(id)
            }
            other => Err(internal(format!("unexpected reply {other:?}"))),
        }
    }

    fn voters(&self, m: &openraft::RaftMetrics<TypeConfig>) -> BTreeSet<NodeId> {
        m.membership_config.membership().voter_ids().collect()
    }

    fn node_url(&self, id: NodeId) -> Option<String> {
        self.metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// API URLs of the other members this node knows.
    pub fn other_controllers(&self) -> Vec<String> {
        self.metrics()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.inner.id)
            .map(|(_, n)| n.addr.clone())
            .collect()
    }

    fn contact(&self, id: NodeId) -> Option<Contact> {
        let g = self
            .inner
            .contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        g.get(&id).copied()
    }

    fn fresh(&self, c: Option<Contact>) -> bool {
        c.is_some_and(|c| c.at.elapsed() < self.inner.timing.contact_timeout)
    }

    /// Whether this node, by its own recent contact, reaches a majority of the voters.
    pub fn in_quorum(&self) -> bool {
        let m = self.metrics();
        let voters = self.voters(&m);
        if !voters.contains(&self.inner.id) {
            return false;
        }
        let reachable = voters
            .iter()
            .filter(|v| **v == self.inner.id || self.fresh(self.contact(**v)))
            .count();
        reachable * 2 > voters.len()
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        let m = self.metrics();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            _ => "learner",
        };
        NodeStatus {
            id: self.inner.id,
            role,
            leader: m.current_leader,
            term: m.current_term,
            applied: m.last_applied.map(|l| l.index),
            in_quorum: self.in_quorum(),
        }
    }

    /// Every member as this node sees it.
    pub fn members(&self) -> Vec<MemberView> {
        let m = self.metrics();
        let voters = self.voters(&m);
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| {
                let me = *id == self.inner.id;
                let c = self.contact(*id);
                MemberView {
                    id: *id,
                    url: n.addr.clone(),
                    voter: voters.contains(id),
                    leader: m.current_leader == Some(*id),
                    connected: me || self.fresh(c),
                    last_contact_ms: if me {
                        Some(0)
                    } else {
                        c.map(|c| c.at.elapsed().as_millis() as u64)
                    },
                    applied: if me {
                        m.last_applied.map(|l| l.index)
                    } else {
                        c.and_then(|c| c.applied)
                    },
                }
            })
            .collect()
    }

    /// Runs `req` on the leader, wherever it is (see the module doc for the rules).
    pub async fn leader_call(&self, req: LeaderRequest) -> Result<LeaderReply, ClusterError> {
        let t = &self.inner.timing;
        let deadline = Instant::now() + t.election_wait;
        loop {
            if !self.in_quorum() {
                return Err(ClusterError::NotInQuorum {
                    controllers: self.other_controllers(),
                });
            }
            let leader = self.metrics().current_leader;
            match leader {
                Some(l) if l == self.inner.id => match self.execute_as_leader(&req).await {
                    Err(ForwardError::NotLeader) => {}
                    Err(ForwardError::Cluster(e)) => return Err(e),
                    Ok(reply) => return Ok(reply),
                },
                Some(l) => {
                    if let Some(url) = self.node_url(l) {
                        let limit = match req {
                            LeaderRequest::AddMember { .. } => t.write_timeout * 6,
                            _ => t.write_timeout,
                        };
                        let r: Result<Result<LeaderReply, ForwardError>, PeerError> = self
                            .inner
                            .peers
                            .call(l, &url, RpcKind::Leader, &req, limit)
                            .await;
                        match r {
                            Ok(Ok(reply)) => {
                                if let LeaderReply::Written { index, .. } = &reply {
                                    self.wait_applied(*index, t.write_timeout).await?;
                                }
                                return Ok(reply);
                            }
                            Ok(Err(ForwardError::NotLeader)) => {}
                            Ok(Err(ForwardError::Cluster(e))) => return Err(e),
                            // Never delivered: safe to try again (maybe another leader).
                            Err(PeerError::Unreachable(_)) => {}
                            // Delivered or not, we cannot know: do not run it twice.
                            Err(e @ (PeerError::Timeout(_) | PeerError::BadReply(_))) => {
                                return Err(ClusterError::Timeout(format!(
                                    "the leader did not answer (connection lost or too slow); \
                                     the operation may or may not have been applied: {e}"
                                )))
                            }
                        }
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NoLeader);
            }
            let mut rx = self.inner.raft.metrics();
            let _ = tokio::time::timeout(Duration::from_millis(25), rx.changed()).await;
        }
    }

    async fn execute_as_leader(&self, req: &LeaderRequest) -> Result<LeaderReply, ForwardError> {
        let raft = &self.inner.raft;
        let t = &self.inner.timing;
        let cluster = |e: ClusterError| ForwardError::Cluster(e);
        let timed = |what: &str| {
            cluster(ClusterError::Timeout(format!(
                "{what} did not complete in time"
            )))
        };
        match req {
            LeaderRequest::Write(cmd) => {
                let _permit = self
                    .inner
                    .permits
                    .try_acquire()
                    .map_err(|_| cluster(ClusterError::TooManyRequests))?;
                let started = Instant::now();
                let r = tokio::time::timeout(t.write_timeout, raft.client_write(cmd.clone()))
                    .await
                    .map_err(|_| timed("the write"))?;
                metrics::histogram!("weft_raft_apply_seconds")
                    .record(started.elapsed().as_secs_f64());
                let resp = r.map_err(write_error)?;
                Ok(LeaderReply::Written {
                    index: resp.log_id.index,
                    result: resp.data,
                })
            }
            LeaderRequest::ReadIndex => {
                let r = tokio::time::timeout(
                    t.write_timeout,
                    raft.ensure_linearizable(ReadPolicy::ReadIndex),
                )
                .await
                .map_err(|_| timed("the read barrier"))?;
                match r {
                    Ok(read) => Ok(LeaderReply::ReadIndex {
                        index: read.index(),
                    }),
                    Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => {
                        Err(ForwardError::NotLeader)
                    }
                    Err(e) => Err(cluster(ClusterError::Timeout(e.to_string()))),
                }
            }
            LeaderRequest::AddMember { id, url, voter } => {
                let node = BasicNode { addr: url.clone() };
                let r =
                    tokio::time::timeout(t.write_timeout * 6, raft.add_learner(*id, node, true))
                        .await
                        .map_err(|_| timed("catching up the new member"))?;
                r.map_err(write_error)?;
                if *voter {
                    let ids: BTreeSet<NodeId> = [*id].into();
                    let r = tokio::time::timeout(
                        t.write_timeout,
                        raft.change_membership(ChangeMembers::AddVoterIds(ids), false),
                    )
                    .await
                    .map_err(|_| timed("the promotion"))?;
                    r.map_err(write_error)?;
                }
                Ok(LeaderReply::Done)
            }
            LeaderRequest::RemoveMember { id } => {
                let m = self.metrics();
                let membership = m.membership_config.membership();
                if membership.get_node(id).is_none() {
                    return Err(cluster(ClusterError::InvalidMembership(format!(
                        "{id} is not a member"
                    ))));
                }
                let voters = self.voters(&m);
                let ids: BTreeSet<NodeId> = [*id].into();
                let change = if voters.contains(id) {
                    if voters.len() == 1 {
                        return Err(cluster(ClusterError::InvalidMembership(
                            "cannot remove the last voter".into(),
                        )));
                    }
                    ChangeMembers::RemoveVoters(ids)
                } else {
                    ChangeMembers::RemoveNodes(ids)
                };
                let r =
                    tokio::time::timeout(t.write_timeout, raft.change_membership(change, false))
                        .await
                        .map_err(|_| timed("the removal"))?;
                r.map_err(write_error)?;
                Ok(LeaderReply::Done)
            }
            LeaderRequest::TransferLeader { to } => {
                let m = self.metrics();
                let voters = self.voters(&m);
                let target = match to {
                    Some(id) if *id == self.inner.id => return Ok(LeaderReply::Leader { id: *id }),
                    Some(id) if voters.contains(id) => *id,
                    Some(id) => {
                        return Err(cluster(ClusterError::InvalidMembership(format!(
                            "{id} is not a voter"
                        ))))
                    }
                    None => voters
                        .iter()
                        .filter(|v| **v != self.inner.id)
                        .max_by_key(|v| {
                            let c = self.contact(**v);
                            (self.fresh(c), c.and_then(|c| c.applied))
                        })
                        .copied()
                        .ok_or_else(|| {
                            cluster(ClusterError::InvalidMembership(
                                "there is no other voter to transfer to".into(),
                            ))
                        })?,
                };
                raft.trigger()
                    .transfer_leader(target)
                    .await
                    .map_err(|e| cluster(internal(e)))?;
                self.wait_for(t.election_wait + t.election_max * 4, |m| {
                    m.current_leader == Some(target)
                })
                .await
                .map_err(cluster)?;
                Ok(LeaderReply::Leader { id: target })
            }
        }
    }

    /// Serves a peer stream ([`crate::peer_stream`]) accepted by the API server: one
    /// request at a time, until the peer closes it, a frame is malformed, or this node
    /// stops.
    pub async fn serve_peer_stream<IO>(&self, mut io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use crate::peer_stream::{read_frame, write_frame, REPLY_BAD_REQUEST, REPLY_OK};
        let mut stop = self.inner.stop.subscribe();
        loop {
            let frame = tokio::select! {
                frame = read_frame(&mut io) => frame,
                _ = stop.wait_for(|stopped| *stopped) => return,
            };
            let (tag, payload) = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "peer stream ended");
                    return;
                }
            };
            let reply = match RpcKind::from_tag(tag) {
                Some(kind) => self.handle_peer(kind.path(), &payload).await,
                None => Err(PeerServeError::UnknownRpc(format!("tag {tag}"))),
            };
            let written = match reply {
                Ok(body) => write_frame(&mut io, REPLY_OK, &body).await,
                Err(e) => write_frame(&mut io, REPLY_BAD_REQUEST, e.to_string().as_bytes()).await,
            };
            if let Err(e) = written {
                tracing::debug!(error = %e, "peer stream reply not sent");
                return;
            }
        }
    }

    /// Serves one peer RPC (`/fabric/v1/peer/<rpc>`): JSON in, JSON out.
    pub async fn handle_peer(&self, rpc: &str, body: &[u8]) -> Result<Vec<u8>, PeerServeError> {
        fn de<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, PeerServeError> {
            serde_json::from_slice(b).map_err(|e| PeerServeError::BadRequest(e.to_string()))
        }
        fn en<T: Serialize>(v: &T) -> Result<Vec<u8>, PeerServeError> {
            serde_json::to_vec(v).map_err(|e| PeerServeError::BadRequest(e.to_string()))
        }
        let raft = &self.inner.raft;
        match rpc {
            "append" => {
                let started = Instant::now();
                let r: WireResult<_> = raft
                    .append_entries(de(body)?)
                    .await
                    .map_err(|e| e.to_string());
                metrics::histogram!("weft_peer_append_serve_seconds")
                    .record(started.elapsed().as_secs_f64());
                en(&r)
            }
            "vote" => {
                let (pre, mut req): (bool, openraft::raft::VoteRequest<TypeConfig>) = de(body)?;
                // Our leader's process is gone (its port refuses connections): its lease
                // protects nobody, so let a real election proceed now instead of after the
                // lease. Election safety rests on votes, not leases, and reads use ReadIndex.
                if !pre && self.leader_is_dead() {
                    req.leadership_transfer = true;
                }
                let r: WireResult<_> = if pre {
                    raft.pre_vote(req).await.map_err(|e| e.to_string())
                } else {
                    raft.vote(req).await.map_err(|e| e.to_string())
                };
                en(&r)
            }
            "snapshot" => {
                let (vote, meta, data): (
                    openraft::type_config::alias::VoteOf<TypeConfig>,
                    openraft::type_config::alias::SnapshotMetaOf<TypeConfig>,
                    Vec<u8>,
                ) = de(body)?;
                let snapshot =
                    openraft::type_config::alias::SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
                        meta,
                        snapshot: Cursor::new(data),
                    };
                let r: WireResult<_> = raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(|e| e.to_string());
                en(&r)
            }
            "transfer-leader" => {
                let r: WireResult<_> = raft
                    .handle_transfer_leader(de(body)?)
                    .await
                    .map_err(|e| e.to_string());
                en(&r)
            }
            "probe" => {
                let req: ProbeRequest = de(body)?;
                let m = self.metrics();
                en(&ProbeReply {
                    id: self.inner.id,
                    member: m
                        .membership_config
                        .membership()
                        .get_node(&req.from)
                        .is_some(),
                    applied: m.last_applied.map(|l| l.index),
                })
            }
            "leader" => {
                let req: LeaderRequest = de(body)?;
                let r = if self.metrics().current_leader == Some(self.inner.id) {
                    self.execute_as_leader(&req).await
                } else {
                    Err(ForwardError::NotLeader)
                };
                en(&r)
            }
            other => Err(PeerServeError::UnknownRpc(other.to_owned())),
        }
    }

    async fn probe_loop(self) {
        let mut stop = self.inner.stop.subscribe();
        let mut tick = tokio::time::interval(self.inner.timing.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let m = self.metrics();
            for (id, n) in m.membership_config.membership().nodes() {
                if *id == self.inner.id {
                    continue;
                }
                let (node, id, url) = (self.clone(), *id, n.addr.clone());
                tokio::spawn(async move {
                    let limit = node.inner.timing.contact_timeout / 2;
                    let req = ProbeRequest {
                        from: node.inner.id,
                    };
                    let r: Result<ProbeReply, _> = node
                        .inner
                        .peers
                        .call(id, &url, RpcKind::Probe, &req, limit)
                        .await;
                    let refused = matches!(r, Err(PeerError::Unreachable(_)));
                    if let Ok(reply) = r {
                        if reply.member && reply.id == id {
                            let mut g = node
                                .inner
                                .contacts
                                .lock()
                                .unwrap_or_else(|p| p.into_inner());
                            g.insert(
                                id,
                                Contact {
                                    at: Instant::now(),
                                    applied: reply.applied,
                                },
                            );
                        }
                    }
                    node.note_probe(id, refused).await;
                });
            }
        }
    }

    /// Whether the current leader's last probes were refused at the connection level.
    fn leader_is_dead(&self) -> bool {
        let Some(leader) = self.metrics().current_leader else {
            return false;
        };
        if leader == self.inner.id {
            return false;
        }
        // One refused connection is enough to stop honouring the lease when asked to vote;
        // starting an election ourselves waits for DEAD_LEADER_PROBES.
        let g = self.inner.refused.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&leader).copied().unwrap_or(0) >= 1
    }

    /// Records a probe outcome; a follower whose leader is dead starts an election at once.
    async fn note_probe(&self, id: NodeId, refused: bool) {
        let count = {
            let mut g = self.inner.refused.lock().unwrap_or_else(|p| p.into_inner());
            let c = g.entry(id).or_insert(0);
            *c = if refused { c.saturating_add(1) } else { 0 };
            *c
        };
        if count != DEAD_LEADER_PROBES {
            return;
        }
        // Stagger the candidates by rank among the surviving voters so that they do not all
        // stand at once and split the vote.
        let rank = {
            let m = self.metrics();
            self.voters(&m)
                .into_iter()
                .filter(|v| *v != id)
                .position(|v| v == self.inner.id)
        };
        let Some(rank) = rank else { return };
        let node = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(node.inner.timing.probe_interval * rank as u32).await;
            let m = node.metrics();
            let still_dead = {
                let g = node.inner.refused.lock().unwrap_or_else(|p| p.into_inner());
                g.get(&id).copied().unwrap_or(0) >= DEAD_LEADER_PROBES
            };
            if still_dead
                && m.current_leader == Some(id)
                && m.state == ServerState::Follower
                && node.in_quorum()
            {
                tracing::info!(
                    leader = id,
                    "leader refuses connections: starting an election"
                );
                metrics::counter!("weft_raft_dead_leader_elections_total").increment(1);
                let _ = node.inner.raft.trigger().elect(false).await;
            }
        });
    }

    /// Triggers a snapshot once the log since the last one reaches [`snapshot_threshold`].
    async fn snapshot_loop(self) {
        let mut stop = self.inner.stop.subscribe();
        let t = &self.inner.timing;
        // The snapshot index when a build was last triggered, and when: no second trigger
        // while that build runs (unless it seems lost).
        let mut pending: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SNAPSHOT_CHECK) => {}
                _ = stop.changed() => return,
            }
            let m = self.metrics();
            let applied = m.last_applied.map_or(0, |l| l.index);
            let snapshot = m.snapshot.map_or(0, |l| l.index);
            if let Some((base, at)) = pending {
                if snapshot == base && at.elapsed() < SNAPSHOT_BUILD_LIMIT {
                    continue;
                }
                pending = None;
            }
            let rows = self.inner.sm.store().state_rows() as u64;
            if applied.saturating_sub(snapshot) >= snapshot_threshold(t, rows)
                && self.inner.raft.trigger().snapshot().await.is_ok()
            {
                pending = Some((snapshot, Instant::now()));
            }
        }
    }

    async fn metrics_loop(self) {
        let mut rx = self.inner.raft.metrics();
        let mut stop = self.inner.stop.subscribe();
        let mut last_leader = None;
        loop {
            {
                let m = rx.borrow_and_update();
                metrics::gauge!("weft_raft_term").set(m.current_term as f64);
                metrics::gauge!("weft_raft_commit_index")
                    .set(m.cluster_committed.map(|l| l.index).unwrap_or(0) as f64);
                metrics::gauge!("weft_raft_applied_index")
                    .set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
                metrics::gauge!("weft_raft_is_leader").set(if m.state == ServerState::Leader {
                    1.0
                } else {
                    0.0
                });
                if m.current_leader != last_leader {
                    if m.current_leader.is_some() {
                        metrics::counter!("weft_raft_leader_changes_total").increment(1);
                    }
                    last_leader = m.current_leader;
                }
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }
}

/// How often `snapshot_loop` looks at the log.
const SNAPSHOT_CHECK: Duration = Duration::from_millis(100);

/// After this long without the triggered snapshot showing up, trigger again.
const SNAPSHOT_BUILD_LIMIT: Duration = Duration::from_secs(60);

/// How many log entries since the last snapshot trigger the next one, for a state of
/// `rows` rows: as many as the state has rows, within `[snapshot_logs, snapshot_logs_max]`.
/// A snapshot writes the whole state, so with a big state a fixed interval would spend most
/// of the disk on snapshots (at 10,000 entries and 200,000 rows: 20 bytes of snapshot per
/// byte of log, and stalls on every one); scaling the interval with the state keeps the
/// snapshot cost at about that of the log, with the log in memory bounded by
/// `snapshot_logs_max`.
pub fn snapshot_threshold(t: &Timing, rows: u64) -> u64 {
    rows.clamp(t.snapshot_logs, t.snapshot_logs_max.max(t.snapshot_logs))
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ForwardError::NotLeader,
        // Appended on a leader that was deposed before commit: it may or may not survive
        // in the new leader's log, so this is an indeterminate outcome, not a bug.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => {
            ForwardError::Cluster(ClusterError::Timeout(
                "the entry was discarded by a leader change; it may or may not have been \
                 committed"
                    .into(),
            ))
        }
        // Another membership change is still being committed: a passing state, retry later.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            openraft::errors::ChangeMembershipError::InProgress(e),
        )) => ForwardError::Cluster(ClusterError::Timeout(format!(
            "another membership change is in progress: {e}"
        ))),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ForwardError::Cluster(ClusterError::InvalidMembership(e.to_string()))
        }
        other => ForwardError::Cluster(ClusterError::Internal(other.to_string())),
    }
}

/// Why a peer RPC could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PeerServeError {
    #[error("unknown peer rpc {0:?}")]
    UnknownRpc(String),
    #[error("bad peer request: {0}")]
    BadRequest(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_threshold_grows_with_the_state_within_bounds() {
        let t = Timing::default();
        assert_eq!(snapshot_threshold(&t, 0), t.snapshot_logs);
        assert_eq!(snapshot_threshold(&t, 25_000), 25_000);
        assert_eq!(snapshot_threshold(&t, 5_000_000), t.snapshot_logs_max);
        let fixed = Timing {
            snapshot_logs: 20,
            snapshot_logs_max: 20,
            ..Timing::default()
        };
        assert_eq!(snapshot_threshold(&fixed, 1_000), 20);
        let inverted = Timing {
            snapshot_logs: 500,
            snapshot_logs_max: 10,
            ..Timing::default()
        };
        assert_eq!(
            snapshot_threshold(&inverted, 0),
            500,
            "min wins over a smaller max"
        );
    }
}
