//! What the policies grant an identity (management API, admins only):
//! `/identities/{id}/services` (each with its `permissions`), `/identities/{id}/edge-routers`
//! and `/identities/{id}/policy-advice/{serviceId}` (why it can or cannot use a service).
//! Evaluated by [`weft_model::policy`] on this node's state view.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::Value;
use weft_api::ErrorCode;
use weft_model::entity::{self, EntityKind};
use weft_model::policy;

use crate::app::Shared;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::http::{mark_stale, ok, page};
use crate::resources::{paged, read_view};

/// The record of `kind` with `id`, or 404.
fn found(view: &weft_store::StateView, kind: EntityKind, id: &str) -> Result<Value, ApiError> {
    entity::get(view, kind, id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("{} {id} not found", kind.singular()),
        )
    })
}

/// `GET /identities/{id}/services`: services the identity may dial or bind, by name, each
/// with `permissions` (`Bind`, `Dial`).
pub async fn services(
    State(state): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, stale, view) = read_view(&state, raw.as_deref()).await?;
    let identity = found(&view, EntityKind::Identity, &id)?;
    let (items, total) = policy::services_page(&view, &identity, q.paging.offset, q.paging.limit)?;
    Ok(mark_stale(page(items, q.paging, total), stale))
}

/// `GET /identities/{id}/edge-routers`: edge routers the identity may use, by name.
pub async fn edge_routers(
    State(state): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, stale, view) = read_view(&state, raw.as_deref()).await?;
    let identity = found(&view, EntityKind::Identity, &id)?;
    let kind = EntityKind::EdgeRouter;
    let routers = policy::edge_routers_for_identity(&view, &identity)?
        .into_iter()
        .map(|r| weft_model::enrollment::present(&view, kind, kind.public(r)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paged(routers, &q, stale))
}

/// `GET /identities/{id}/policy-advice/{serviceId}`.
pub async fn advice(
    State(state): State<Shared>,
    _admin: Admin,
    Path((id, service_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (_, stale, view) = read_view(&state, raw.as_deref()).await?;
    let identity = found(&view, EntityKind::Identity, &id)?;
    let service = found(&view, EntityKind::Service, &service_id)?;
    Ok(mark_stale(
        ok(policy::advice(&view, &identity, &service)?),
        stale,
    ))
}
