//! The controller's HTTP application: shared state and the route table.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use weft_api::ErrorCode;
use weft_cluster::Node;

use crate::error::ApiError;
use crate::tokens::NodeSigner;
use crate::{
    client_api, cluster_api, enroll, http, peer_api, policy_api, resources, session, status,
};

/// What every handler can reach.
pub struct AppState {
    /// This controller's raft member: all replicated reads and writes go through it.
    pub node: Node,
    /// This controller's token-signing key (its public half is in replicated state).
    pub signer: Arc<NodeSigner>,
    /// Lifetime of a session token.
    pub session_ttl: Duration,
    /// The cluster CA certificate (PEM), served to joining nodes.
    pub ca_pem: String,
    /// Tokens whose signature this node has already checked.
    pub verified: crate::auth::VerifiedTokens,
}

/// Shared handle type.
pub type Shared = Arc<AppState>;

/// The process-wide Prometheus recorder (one per process, shared by in-process nodes).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder may already be installed (tests); then ours only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The whole route table.
pub fn router(state: Shared) -> Router {
    let mgmt = "/edge/management/v1";
    let client = "/edge/client/v1";
    let cluster = "/fabric/v1/cluster";
    let router = resources::all(Router::new(), mgmt);
    router
        .route(
            &format!("{mgmt}/identities/{{id}}/services"),
            get(policy_api::services),
        )
        .route(
            &format!("{mgmt}/identities/{{id}}/edge-routers"),
            get(policy_api::edge_routers),
        )
        .route(
            &format!("{mgmt}/identities/{{id}}/policy-advice/{{service_id}}"),
            get(policy_api::advice),
        )
        .route(
            &format!("{client}/current-identity"),
            get(client_api::current_identity),
        )
        .route(&format!("{client}/services"), get(client_api::services))
        .route(
            &format!("{client}/controllers"),
            get(client_api::controllers),
        )
        .route(&format!("{mgmt}/api-sessions"), get(session::list))
        .route(
            &format!("{mgmt}/api-sessions/{{id}}"),
            get(session::get_one).delete(session::delete),
        )
        .route(&format!("{client}/enroll"), post(enroll::enroll))
        .route("/.well-known/est/cacerts", get(enroll::ca_certs))
        .route("/version", get(status::version))
        .route("/health-checks", get(status::health))
        .route("/metrics", get(status::metrics))
        .route(
            &format!("{client}/authenticate"),
            post(session::authenticate),
        )
        .route(&format!("{mgmt}/authenticate"), post(session::authenticate))
        .route(
            &format!("{client}/current-api-session"),
            get(session::current).delete(session::logout),
        )
        .route(
            &format!("{client}/current-api-session/refresh"),
            post(session::refresh),
        )
        .route(
            &format!("{cluster}/list-members"),
            get(cluster_api::list_members),
        )
        .route(
            &format!("{cluster}/add-member"),
            post(cluster_api::add_member),
        )
        .route(
            &format!("{cluster}/remove-member"),
            post(cluster_api::remove_member),
        )
        .route(
            &format!("{cluster}/transfer-leadership"),
            post(cluster_api::transfer_leadership),
        )
        .route(
            &format!("{cluster}/join-token"),
            post(cluster_api::join_token),
        )
        .route(&format!("{cluster}/ca"), get(cluster_api::ca))
        .route(
            &format!("{cluster}/join/certificate"),
            post(cluster_api::join_certificate),
        )
        .route(&format!("{cluster}/join"), post(cluster_api::join))
        .route("/fabric/v1/peer/{rpc}", post(peer_api::rpc))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn(http::request_id))
        .with_state(state)
}
