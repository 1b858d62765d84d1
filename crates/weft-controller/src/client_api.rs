//! `/edge/client/v1` for any authenticated identity: who am I (`current-identity`), which
//! services may I use (`services`, each with its `permissions`), and which controllers are
//! there (`controllers`, so an SDK can fail over to another one).

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{json, Value};
use weft_api::ErrorCode;
use weft_model::entity::{self, EntityKind};
use weft_model::policy;

use crate::app::Shared;
use crate::auth::Session;
use crate::error::ApiError;
use crate::http::{mark_stale, ok, page};
use crate::resources::read_view;

/// The caller's identity record. The bootstrap administrator is not an identity entity; it
/// is shown as an admin `User` with no role attributes (and so no policies select it).
fn caller(view: &weft_store::StateView, sub: &str, admin: bool) -> Result<Value, ApiError> {
    if let Some(identity) = entity::get(view, EntityKind::Identity, sub)? {
        return Ok(EntityKind::Identity.public(identity));
    }
    if admin && weft_model::admin(view, sub)?.is_some() {
        return Ok(json!({
            "id": sub, "name": sub, "type": "User", "isAdmin": true,
            "roleAttributes": [], "tags": {},
            "authPolicyId": weft_api::models::DEFAULT_AUTH_POLICY,
        }));
    }
    // The identity was deleted after the session began.
    Err(ApiError::new(
        ErrorCode::InvalidAuth,
        "the session's identity no longer exists",
    ))
}

/// `GET /edge/client/v1/current-identity`.
pub async fn current_identity(
    State(state): State<Shared>,
    Session(claims, _): Session,
) -> Result<Response, ApiError> {
    let view = state.node.read_state()?;
    Ok(ok(caller(&view, &claims.sub, claims.adm)?))
}

/// `GET /edge/client/v1/services`: the services the caller may dial or bind, by name, each
/// with `permissions`.
pub async fn services(
    State(state): State<Shared>,
    Session(claims, _): Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, stale, view) = read_view(&state, raw.as_deref()).await?;
    let identity = caller(&view, &claims.sub, claims.adm)?;
    let (items, total) = policy::services_page(&view, &identity, q.paging.offset, q.paging.limit)?;
    Ok(mark_stale(page(items, q.paging, total), stale))
}

/// `GET /edge/client/v1/controllers`: every member's id and API URL.
pub async fn controllers(State(state): State<Shared>, _session: Session) -> Response {
    let items: Vec<Value> = state
        .node
        .members()
        .into_iter()
        .map(|m| json!({ "id": m.id.to_string(), "apiAddress": m.url, "isLeader": m.leader }))
        .collect();
    ok(items)
}
