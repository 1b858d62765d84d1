//! API sessions: authenticate, show, refresh, logout; and for admins, `api-sessions`: list,
//! show and delete (revoke) any session.
//!
//! Logging in needs no raft write: the token is signed by this node's key, which every
//! node already knows from replicated state. Logging out is a raft write (a revocation),
//! acknowledged only once committed, so after it no node that applied it accepts the token.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::response::Response;
use weft_api::models::{ApiSession, PasswordLogin};
use weft_api::ErrorCode;
use weft_model::entity::{self, EntityKind};
use weft_model::Command;

use crate::app::Shared;
use crate::auth::{Admin, Session};
use crate::error::ApiError;
use crate::http::{mark_stale, ok, parse_json, query_param, RawBody};
use crate::resources::{paged, read_view};
use crate::tls::ClientCert;
use crate::tokens::{self, SessionClaims};
use axum::Extension;

fn issue(state: &Shared, sid: String, sub: String, adm: bool) -> ApiSession {
    let now = weft_model::now_ms();
    let exp = now + state.session_ttl.as_millis() as i64;
    record(state, &sid, &sub, adm, now, exp);
    let claims = SessionClaims {
        sid: sid.clone(),
        sub: sub.clone(),
        adm,
        iat: now,
        exp,
        kid: state.signer.node_id,
    };
    ApiSession {
        id: sid,
        token: state.signer.sign_session(&claims),
        expires_at: weft_model::rfc3339(exp),
        identity: sub,
        is_admin: adm,
    }
}

/// Records the session for `api-sessions`, in the background: the login is answered
/// without waiting for raft. If the write fails (no quorum, say), the session still works
/// but is not listed; the failure is logged. A refresh keeps the original `createdAt`.
fn record(state: &Shared, sid: &str, sub: &str, adm: bool, now: i64, exp: i64) {
    let created = state
        .node
        .read_state()
        .ok()
        .and_then(|v| weft_model::api_session(&v, sid).ok().flatten())
        .and_then(|r| r["createdAt"].as_str().map(str::to_owned))
        .unwrap_or_else(|| weft_model::rfc3339(now));
    let session = serde_json::json!({
        "id": sid,
        "identityId": sub,
        "isAdmin": adm,
        "createdAt": created,
        "lastRefreshedAt": weft_model::rfc3339(now),
        "expiresAt": weft_model::rfc3339(exp),
        "expiresAtMs": exp,
        "issuedBy": state.node.id().to_string(),
    });
    let node = state.node.clone();
    let sid = sid.to_owned();
    tokio::spawn(async move {
        if let Err(e) = node.write(Command::RecordSession { session, now }).await {
            tracing::warn!(session = %sid, error = %e, "could not record the api session");
        }
    });
}

/// `POST .../authenticate?method=password` (body `{username, password}`) or
/// `?method=cert` (no body; the TLS client certificate of an enrolled identity).
///
/// Refused with 429 `RATE_LIMITED` while the caller's address has too many recent
/// failed logins (see [`crate::login_limit`]); every 401 `INVALID_AUTH` answered here
/// is such a failure.
pub async fn authenticate(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    cert: Option<Extension<ClientCert>>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // Without a connection address (a router driven in-process) there is no one to limit.
    let attempt = match remote {
        Some(Extension(ConnectInfo(addr))) => match state.logins.begin(addr.ip(), Instant::now()) {
            Ok(attempt) => Some(attempt),
            Err(wait) => return Err(rate_limited(wait)),
        },
        None => None,
    };
    let result = login(&state, query.as_deref(), cert, &body).await;
    if let (Some(attempt), Err(e)) = (attempt, &result) {
        if e.code == ErrorCode::InvalidAuth {
            attempt.failed(Instant::now());
        }
    }
    result
}

/// 429 `RATE_LIMITED`, to be retried after `wait` (whole seconds, rounded up).
fn rate_limited(wait: Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = u32::try_from(secs).unwrap_or(u32::MAX);
    ApiError::new(
        ErrorCode::RateLimited,
        format!("too many failed logins from this address; try again in {secs} s"),
    )
    .with_retry_after(secs)
}

/// The login itself, by `method`.
async fn login(
    state: &Shared,
    query: Option<&str>,
    cert: Option<Extension<ClientCert>>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let method = query_param(query, "method")?.unwrap_or_default();
    match method.as_str() {
        "password" => password_login(state.clone(), parse_json(body, false)?).await,
        "cert" => {
            let fingerprint = cert.and_then(|Extension(ClientCert(fp))| fp);
            cert_login(state, fingerprint.as_deref())
        }
        other => Err(ApiError::field(
            "method",
            format!("{other:?} is not supported; use method=password or method=cert"),
        )),
    }
}

async fn password_login(state: Shared, login: PasswordLogin) -> Result<Response, ApiError> {
    let view = state.node.read_state()?;
    // The bootstrap administrator, or an identity's updb authenticator: who the session is
    // for (subject), whether it is an admin, and the hash to check.
    let found = match weft_model::admin(&view, &login.username)? {
        Some(a) => Some((login.username.clone(), true, a.password_hash)),
        None => identity_login(&view, &login.username)?,
    };
    let hash = found.as_ref().map(|(_, _, h)| h.clone());
    let password = login.password.clone();
    // argon2 is deliberately slow: keep it off the async workers.
    let good = tokio::task::spawn_blocking(move || match hash {
        Some(h) => tokens::verify_password(&password, &h),
        None => false,
    })
    .await
    .map_err(ApiError::internal)?;
    if !good {
        return Err(ApiError::new(
            ErrorCode::InvalidAuth,
            "invalid username or password",
        ));
    }
    let (subject, is_admin, _) =
        found.ok_or_else(|| ApiError::internal("checked a missing user"))?;
    Ok(ok(issue(&state, weft_model::new_id(), subject, is_admin)))
}

/// Certificate login: the handshake already verified the chain against the cluster CA;
/// the certificate's fingerprint names a `cert` authenticator (made by enrollment), whose
/// identity the session is for. Deleting the authenticator (or the identity) ends this.
fn cert_login(state: &Shared, fingerprint: Option<&str>) -> Result<Response, ApiError> {
    let Some(fp) = fingerprint else {
        return Err(ApiError::new(
            ErrorCode::InvalidAuth,
            "method=cert needs a TLS client certificate from enrollment",
        ));
    };
    let view = state.node.read_state()?;
    let auth = EntityKind::Authenticator;
    let record = match entity::id_by_name(&view, auth, fp)? {
        Some(id) => entity::get(&view, auth, &id)?,
        None => None,
    }
    .filter(|a| a["method"] == "cert" && a["certFingerprint"] == fp);
    let identity = record
        .as_ref()
        .and_then(|a| a["identityId"].as_str())
        .map(|id| entity::get(&view, EntityKind::Identity, id))
        .transpose()?
        .flatten();
    let Some(identity) = identity else {
        return Err(ApiError::new(
            ErrorCode::InvalidAuth,
            "this certificate belongs to no enrolled identity",
        ));
    };
    if !entity::auth_method_allowed(&view, &identity, "cert")? {
        return Err(ApiError::new(
            ErrorCode::InvalidAuth,
            "the identity's auth policy does not allow certificate login",
        ));
    }
    let id = identity["id"].as_str().unwrap_or_default().to_owned();
    let is_admin = identity["isAdmin"].as_bool().unwrap_or(false);
    Ok(ok(issue(state, weft_model::new_id(), id, is_admin)))
}

/// The identity behind a `updb` username: (identity id, isAdmin, password hash).
fn identity_login(
    view: &weft_store::StateView,
    username: &str,
) -> Result<Option<(String, bool, String)>, ApiError> {
    let auth = EntityKind::Authenticator;
    let Some(aid) = entity::id_by_name(view, auth, username)? else {
        return Ok(None);
    };
    let Some(a) = entity::get(view, auth, &aid)? else {
        return Ok(None);
    };
    if a["method"] != "updb" {
        return Ok(None);
    }
    let identity_id = a["identityId"].as_str().unwrap_or_default();
    let Some(identity) = entity::get(view, EntityKind::Identity, identity_id)? else {
        return Ok(None);
    };
    if !entity::auth_method_allowed(view, &identity, "updb")? {
        // As a wrong password: no hint which accounts exist or how they log in.
        return Ok(None);
    }
    Ok(Some((
        identity_id.to_owned(),
        identity["isAdmin"].as_bool().unwrap_or(false),
        a["passwordHash"].as_str().unwrap_or_default().to_owned(),
    )))
}

/// `GET /edge/client/v1/current-api-session`.
pub async fn current(Session(claims, token): Session) -> Response {
    ok(ApiSession {
        id: claims.sid,
        token,
        expires_at: weft_model::rfc3339(claims.exp),
        identity: claims.sub,
        is_admin: claims.adm,
    })
}

/// `POST /edge/client/v1/current-api-session/refresh`: a new token for the same
/// session, with a new expiry.
pub async fn refresh(State(state): State<Shared>, Session(claims, _): Session) -> Response {
    ok(issue(&state, claims.sid, claims.sub, claims.adm))
}

/// `DELETE /edge/client/v1/current-api-session`: revokes the session everywhere.
pub async fn logout(
    State(state): State<Shared>,
    Session(claims, _): Session,
) -> Result<Response, ApiError> {
    let now = weft_model::now_ms();
    // Any refreshed token of this session expires by now + ttl at the latest.
    let expires_at = now + state.session_ttl.as_millis() as i64 + 60_000;
    state
        .node
        .write(Command::RevokeSession {
            session_id: claims.sid.clone(),
            expires_at,
            now,
        })
        .await?;
    Ok(ok(serde_json::json!({})))
}

/// `GET /edge/management/v1/api-sessions`: the recorded sessions that have not expired,
/// oldest first (`filter` and paging apply).
pub async fn list(
    State(state): State<Shared>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, stale, view) = read_view(&state, raw.as_deref()).await?;
    let all = weft_model::api_sessions(&view, weft_model::now_ms())?
        .into_iter()
        .filter(|s| q.filter.as_ref().is_none_or(|f| f.matches(s)))
        .collect();
    Ok(paged(all, &q, stale))
}

fn session_or_404(view: &weft_store::StateView, id: &str) -> Result<serde_json::Value, ApiError> {
    weft_model::api_session(view, id)?
        .filter(|s| s["expiresAtMs"].as_i64().unwrap_or(0) >= weft_model::now_ms())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("api session {id} not found")))
}

/// `GET /edge/management/v1/api-sessions/{id}`.
pub async fn get_one(
    State(state): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (_, stale, view) = read_view(&state, raw.as_deref()).await?;
    Ok(mark_stale(ok(session_or_404(&view, &id)?), stale))
}

/// `DELETE /edge/management/v1/api-sessions/{id}`: revokes it everywhere, as its logout
/// would.
pub async fn delete(
    State(state): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = state.node.read_state()?;
    let s = session_or_404(&view, &id)?;
    let now = weft_model::now_ms();
    let expires_at = s["expiresAtMs"].as_i64().unwrap_or(now) + 60_000;
    state
        .node
        .write(Command::RevokeSession {
            session_id: id,
            expires_at,
            now,
        })
        .await?;
    Ok(ok(serde_json::json!({})))
}
