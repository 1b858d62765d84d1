//! `/fabric/v1/peer/{rpc}`: raft RPCs, probes and leader requests between controllers;
//! `/fabric/v1/peer-stream`: the same RPCs on a long-lived upgraded connection
//! (see `weft_cluster::peer_stream`). Only callers presenting a cluster-issued client
//! certificate get in.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper_util::rt::TokioIo;
use weft_api::ErrorCode;
use weft_cluster::peer_stream::PROTOCOL;
use weft_cluster::PeerServeError;

use crate::app::Shared;
use crate::error::ApiError;
use crate::tls::{ConnectionSlot, PeerNode};

/// Largest peer message (raft batches and snapshots can be big).
pub const MAX_PEER_BODY: usize = 512 * 1024 * 1024;

/// `POST /fabric/v1/peer/{rpc}`.
pub async fn rpc(
    State(state): State<Shared>,
    peer: Option<Extension<PeerNode>>,
    Path(rpc): Path<String>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    require_peer(peer)?;
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

fn require_peer(peer: Option<Extension<PeerNode>>) -> Result<(), ApiError> {
    if matches!(peer, Some(Extension(PeerNode(Some(_))))) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "peer endpoints need a cluster client certificate",
        ))
    }
}

/// `GET /fabric/v1/peer-stream` with `Upgrade: weft-peer/1`: answers 101 and serves the
/// connection's frames on a task of its own until the peer closes it or the node stops.
pub async fn stream(
    State(state): State<Shared>,
    peer: Option<Extension<PeerNode>>,
    slot: Option<Extension<ConnectionSlot>>,
    mut req: axum::extract::Request,
) -> Result<Response, ApiError> {
    require_peer(peer)?;
    let wanted = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !wanted {
        return Err(
            ApiError::new(ErrorCode::InvalidField, "this endpoint only upgrades")
                .with_cause(format!("header Upgrade must be {PROTOCOL}")),
        );
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let node = state.node.clone();
    tokio::spawn(async move {
        // The connection stays counted in its listener's budget while the stream runs.
        let _slot = slot;
        match upgrade.await {
            Ok(io) => node.serve_peer_stream(TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, "peer stream upgrade failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, PROTOCOL)],
    )
        .into_response())
}
