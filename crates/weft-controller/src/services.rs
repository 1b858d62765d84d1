//! `/edge/management/v1/services`: the first replicated entity. Validation runs before
//! proposing (a bad request never reaches the log) and again in apply (so the log can
//! never hold an invalid state, whatever a proposer does).

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::{Map, Value};
use weft_api::models::{ServiceCreate, ServicePatch};
use weft_api::ErrorCode;
use weft_model::entity::{self, EntityKind};
use weft_model::{validate, Command, Outcome};

use crate::app::Shared;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::http::{created, mark_stale, ok, page, parse_read_query, JsonBody};

const KIND: EntityKind = EntityKind::Service;

/// Runs a read: linearizable when asked, marked stale when this node is not in quorum.
pub(crate) async fn prepare_read(state: &Shared, linearizable: bool) -> Result<bool, ApiError> {
    if linearizable {
        state.node.linearize().await?;
        return Ok(false);
    }
    if !state.node.caught_up() {
        // Just started: catch up first if we can, so a restart does not hide acknowledged
        // writes; if we cannot, answer from local state marked stale.
        let _ = state.node.linearize().await;
    }
    Ok(!state.node.in_quorum() || !state.node.caught_up())
}

fn entity_of(outcome: Outcome) -> Result<Value, ApiError> {
    match outcome {
        Outcome::Entity(v) => Ok(v),
        Outcome::Done => Err(ApiError::internal("apply returned no entity")),
    }
}

/// `GET /services`.
pub async fn list(
    State(state): State<Shared>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_read_query(raw.as_deref())?;
    let stale = prepare_read(&state, q.linearizable).await?;
    let view = state.node.read_state()?;
    let p = entity::list(&view, KIND, &q.list_query())?;
    Ok(mark_stale(page(p.items, q.paging, p.total), stale))
}

/// `GET /services/{id}`.
pub async fn get(
    State(state): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_read_query(raw.as_deref())?;
    let stale = prepare_read(&state, q.linearizable).await?;
    let view = state.node.read_state()?;
    match entity::get(&view, KIND, &id)? {
        Some(rec) => Ok(mark_stale(ok(rec), stale)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("service {id} not found"),
        )),
    }
}

/// `POST /services`.
pub async fn create(
    State(state): State<Shared>,
    _admin: Admin,
    JsonBody(body): JsonBody<ServiceCreate>,
) -> Result<Response, ApiError> {
    validate::name("name", &body.name)?;
    validate::role_attributes("roleAttributes", &body.role_attributes)?;
    let now = weft_model::rfc3339(weft_model::now_ms());
    let record = serde_json::json!({
        "id": weft_model::new_id(),
        "name": body.name,
        "roleAttributes": body.role_attributes,
        "tags": body.tags,
        "createdAt": now,
        "updatedAt": now,
    });
    let (_, outcome) = state
        .node
        .write(Command::Create { kind: KIND, record })
        .await?;
    Ok(created(entity_of(outcome)?))
}

/// `PATCH /services/{id}`.
pub async fn update(
    State(state): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ServicePatch>,
) -> Result<Response, ApiError> {
    if let Some(name) = &body.name {
        validate::name("name", name)?;
    }
    if let Some(attrs) = &body.role_attributes {
        validate::role_attributes("roleAttributes", attrs)?;
    }
    let patch: Map<String, Value> = match serde_json::to_value(&body) {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::internal("patch did not serialize to an object")),
    };
    let cmd = Command::Update {
        kind: KIND,
        id,
        patch,
        at: weft_model::now_ms(),
    };
    let (_, outcome) = state.node.write(cmd).await?;
    Ok(ok(entity_of(outcome)?))
}

/// `DELETE /services/{id}`.
pub async fn delete(
    State(state): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.node.write(Command::Delete { kind: KIND, id }).await?;
    Ok(ok(serde_json::json!({})))
}
