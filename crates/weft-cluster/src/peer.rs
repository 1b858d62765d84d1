//! The peer channel: HTTPS calls from one controller to another (raft RPCs, quorum
//! probes, requests for the leader), and openraft's network on top of it. The HTTP client
//! is built by the controller with this node's cluster certificate (peers require it);
//! this module only knows URLs, JSON and faults. Appends, votes and leadership transfers
//! travel on long-lived streams ([`crate::peer_stream`]); snapshots, probes and requests
//! for the leader are ordinary requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::peer_stream::StreamClient;
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
        self.admit(target, kind).await?;
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

impl PeerClient {
    /// Applies the fault set to one call to `target`: waits out an injected delay, or
    /// fails the call as if the peer were unreachable.
    async fn admit(&self, target: NodeId, kind: RpcKind) -> Result<(), PeerError> {
        match self.faults.check(self.self_id, target, kind) {
            Verdict::Drop => {
                // Behave like a black hole only briefly, so callers keep their pace.
                tokio::time::sleep(Duration::from_millis(5)).await;
                Err(PeerError::Unreachable("dropped by fault injection".into()))
            }
            Verdict::Pass(Some(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Verdict::Pass(None) => Ok(()),
        }
    }
}

pub(crate) fn classify(url: &str, e: reqwest::Error) -> PeerError {
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
            stream: tokio::sync::Mutex::new(None),
        }
    }
}

/// openraft's connection to one peer.
pub struct Connection {
    client: PeerClient,
    target: NodeId,
    url: String,
    /// The open stream to the peer, if any; dropped after any failure on it and opened
    /// again by the next call. (The mutex is never contended, calls take `&mut self`; it
    /// makes the connection `Sync`, as openraft requires, around a stream that is not.)
    stream: tokio::sync::Mutex<Option<StreamClient>>,
}

fn rpc_error(e: PeerError) -> RPCError<TypeConfig> {
    match e {
        PeerError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl Connection {
    /// A raft RPC as an ordinary request (snapshots).
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
            .map_err(rpc_error)?;
        reply.map_err(|msg| RPCError::Network(NetworkError::from_string(msg)))
    }

    /// A raft RPC on the stream to the peer.
    async fn rpc_on_stream<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let reply: WireResult<Resp> = self
            .stream_call(kind, req, option.hard_ttl())
            .await
            .map_err(rpc_error)?;
        reply.map_err(|msg| RPCError::Network(NetworkError::from_string(msg)))
    }

    async fn stream_call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: RpcKind,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        self.client.admit(self.target, kind).await?;
        let body = serde_json::to_vec(req).map_err(|e| PeerError::BadReply(e.to_string()))?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + timeout);
        // A stream kept from earlier calls may have died since (the peer restarted): then
        // the call is made once more on a new stream. Raft RPCs are safe to repeat.
        let mut retried = false;
        let slot = self.stream.get_mut();
        loop {
            let reused = slot.is_some();
            let stream = match slot {
                Some(s) => s,
                None => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    slot.insert(StreamClient::open(&self.client.http, &self.url, left).await?)
                }
            };
            let result = tokio::time::timeout_at(deadline, stream.call(kind, &body)).await;
            let bytes = match result {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    *slot = None;
                    if reused && !retried && !matches!(e, PeerError::BadReply(_)) {
                        retried = true;
                        continue;
                    }
                    return Err(e);
                }
                Err(_) => {
                    *slot = None;
                    return Err(PeerError::Timeout(format!(
                        "{}: no reply on the peer stream in {timeout:?}",
                        self.url
                    )));
                }
            };
            metrics::histogram!("weft_peer_rpc_seconds", "rpc" => kind.path())
                .record(started.elapsed().as_secs_f64());
            return serde_json::from_slice(&bytes)
                .map_err(|e| PeerError::BadReply(format!("{}: {e}", self.url)));
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc_on_stream(RpcKind::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc_on_stream(RpcKind::Vote, &(false, rpc), &option)
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc_on_stream(RpcKind::Vote, &(true, rpc), &option)
            .await
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
        self.rpc_on_stream(RpcKind::TransferLeader, &req, &option)
            .await
    }
}
