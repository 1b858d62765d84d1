//! The peer channel: HTTPS calls from one controller to another (raft RPCs, quorum
//! probes, requests for the leader), and openraft's network on top of it. The HTTP client
//! is built by the controller with this node's cluster certificate (peers require it);
//! this module only knows URLs, JSON and faults.

use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::faults::{Faults, RpcKind, Verdict};
use crate::types::{NodeId, SnapshotData, TypeConfig};

/// Why a peer call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// Not delivered: connection refused, TLS failure, or dropped by fault injection.
    /// The request certainly did not run on the peer.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// Sent, but no answer in time: the request may or may not have run.
    #[error("peer did not answer in time: {0}")]
    Timeout(String),
    /// The peer answered with something that is not a valid reply.
    #[error("bad reply from peer: {0}")]
    BadReply(String),
}

/// Client side of the peer channel.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    self_id: NodeId,
    faults: Arc<Faults>,
}

impl PeerClient {
    /// `http` must present this node's cluster certificate and trust the cluster CA.
    pub fn new(http: reqwest::Client, self_id: NodeId, faults: Arc<Faults>) -> Self {
        PeerClient {
            http,
            self_id,
            faults,
        }
    }

    /// The fault set this client obeys.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// POSTs `req` as JSON to `base_url/fabric/v1/peer/<kind>` and decodes the JSON reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        base_url: &str,
        kind: RpcKind,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        match self.faults.check(self.self_id, target, kind) {
            Verdict::Drop => {
                // Behave like a black hole only briefly, so callers keep their pace.
                tokio::time::sleep(Duration::from_millis(5)).await;
                return Err(PeerError::Unreachable("dropped by fault injection".into()));
            }
            Verdict::Pass(Some(d)) => tokio::time::sleep(d).await,
            Verdict::Pass(None) => {}
        }
        let url = format!(
            "{}/fabric/v1/peer/{}",
            base_url.trim_end_matches('/'),
            kind.path()
        );
        let body = serde_json::to_vec(req).map_err(|e| PeerError::BadReply(e.to_string()))?;
        let started = std::time::Instant::now();
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(&url, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| classify(&url, e))?;
        metrics::histogram!("weft_peer_rpc_seconds", "rpc" => kind.path())
            .record(started.elapsed().as_secs_f64());
        if !status.is_success() {
            return Err(PeerError::BadReply(format!(
                "{url}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| PeerError::BadReply(format!("{url}: {e}")))
    }
}

fn classify(url: &str, e: reqwest::Error) -> PeerError {
    if e.is_connect() {
        PeerError::Unreachable(format!("{url}: {e}"))
    } else if e.is_timeout() {
        PeerError::Timeout(format!("{url}: {e}"))
    } else if e.is_request() && e.to_string().contains("connect") {
        PeerError::Unreachable(format!("{url}: {e}"))
    } else {
        PeerError::Timeout(format!("{url}: {e}"))
    }
}

/// A raft RPC reply on the wire: openraft's result, with the error flattened to text.
pub type WireResult<T> = Result<T, String>;

/// openraft's network factory over [`PeerClient`].
#[derive(Clone)]
pub struct Network {
    pub(crate) client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            url: node.addr.clone(),
        }
    }
}

/// openraft's connection to one peer.
pub struct Connection {
    client: PeerClient,
    target: NodeId,
    url: String,
}

impl Connection {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let reply: WireResult<Resp> = self
            .client
            .call(self.target, &self.url, kind, req, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|msg| RPCError::Network(NetworkError::from_string(msg)))
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(RpcKind::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(RpcKind::Vote, &(false, rpc), &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(RpcKind::Vote, &(true, rpc), &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot.into_inner());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.rpc(RpcKind::Snapshot, &req, &option) => Ok(res?),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(RpcKind::TransferLeader, &req, &option).await
    }
}
