//! `/version` and `/health-checks` (unauthenticated) and `/metrics` (admins): answered
//! locally.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use weft_api::models::{Health, Version};

use crate::app::{prometheus, Shared};
use crate::auth::Admin;
use crate::http::ok;

/// `GET /version`.
pub async fn version() -> Response {
    let mut v1 = BTreeMap::new();
    v1.insert("v1".to_owned(), "/edge/management/v1".to_owned());
    let mut apis = BTreeMap::new();
    apis.insert("edge-management".to_owned(), v1);
    let mut c = BTreeMap::new();
    c.insert("v1".to_owned(), "/edge/client/v1".to_owned());
    apis.insert("edge-client".to_owned(), c);
    let mut f = BTreeMap::new();
    f.insert("v1".to_owned(), "/fabric/v1".to_owned());
    apis.insert("fabric".to_owned(), f);
    ok(Version {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        build_date: None,
        api_versions: apis,
    })
}

/// `GET /health-checks`.
pub async fn health(State(state): State<Shared>) -> Response {
    let s = state.node.status();
    ok(Health {
        node_id: s.id.to_string(),
        role: s.role.to_owned(),
        leader_id: s.leader.map(|l| l.to_string()),
        term: s.term,
        applied_index: s.applied,
        in_quorum: s.in_quorum,
    })
}

/// `GET /metrics` (Prometheus text format; a scraper logs in as an admin).
pub async fn metrics(_admin: Admin) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        prometheus().render(),
    )
        .into_response()
}
