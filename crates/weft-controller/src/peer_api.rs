//! `/fabric/v1/peer/{rpc}`: raft RPCs, probes and leader requests between controllers.
//! Only callers presenting a cluster-issued client certificate get in.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use weft_api::ErrorCode;
use weft_cluster::PeerServeError;

use crate::app::Shared;
use crate::error::ApiError;
use crate::tls::PeerNode;

/// Largest peer message (raft batches and snapshots can be big).
pub const MAX_PEER_BODY: usize = 512 * 1024 * 1024;

/// `POST /fabric/v1/peer/{rpc}`.
pub async fn rpc(
    State(state): State<Shared>,
    peer: Option<Extension<PeerNode>>,
    Path(rpc): Path<String>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    if !matches!(peer, Some(Extension(PeerNode(Some(_))))) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "peer endpoints need a cluster client certificate",
        ));
    }
    let body: Bytes = axum::body::to_bytes(body, MAX_PEER_BODY)
        .await
        .map_err(|_| ApiError::new(ErrorCode::RequestEntityTooLarge, "peer message too large"))?;
    match state.node.handle_peer(&rpc, &body).await {
        Ok(bytes) => Ok(([("content-type", "application/json")], bytes).into_response()),
        Err(PeerServeError::UnknownRpc(r)) => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("unknown peer rpc {r}"),
        )),
        Err(PeerServeError::BadRequest(m)) => {
            Err(ApiError::new(ErrorCode::CouldNotParseBody, "bad peer message").with_cause(m))
        }
    }
}
