//! Authentication of API calls: the session token (from `zt-session` or
//! `Authorization: Bearer`) is verified against every controller's committed signing key
//! and the replicated revocation list, so a token from any node works on every node.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use weft_api::ErrorCode;

use crate::app::Shared;
use crate::error::ApiError;
use crate::tokens::{self, SessionClaims, TokenError};

/// The presented token, if any.
pub fn token_of(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(weft_api::SESSION_HEADER) {
        return v.to_str().ok().map(|s| s.trim().to_owned());
    }
    let auth = parts.headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_owned())
}

/// Signature checks already done on this node, keyed by the exact token string, so a
/// client's repeated calls cost one hash lookup instead of one Ed25519 verification each.
/// Expiry and revocation are still checked on every call. Bounded: cleared when full.
#[derive(Default)]
pub struct VerifiedTokens {
    map: std::sync::Mutex<std::collections::HashMap<String, SessionClaims>>,
}

/// Most tokens remembered at once.
const VERIFIED_CAPACITY: usize = 10_000;

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<SessionClaims> {
        let g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        g.get(token).cloned()
    }

    fn put(&self, token: &str, claims: &SessionClaims) {
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() >= VERIFIED_CAPACITY {
            g.clear();
        }
        g.insert(token.to_owned(), claims.clone());
    }
}

/// Verifies a session token on this node.
pub async fn verify(state: &Shared, token: &str) -> Result<SessionClaims, ApiError> {
    let invalid = |m: &str| ApiError::new(ErrorCode::InvalidAuth, m.to_owned());
    if let Some(claims) = state.verified.get(token) {
        if claims.exp <= weft_model::now_ms() {
            return Err(invalid("the session has expired"));
        }
        let view = state.node.read_state()?;
        if weft_model::is_revoked(&view, &claims.sid)? {
            return Err(invalid("the session was logged out or revoked"));
        }
        return Ok(claims);
    }
    let check = |state: &Shared| -> Result<Result<SessionClaims, TokenError>, ApiError> {
        let view = state.node.read_state()?;
        let now = weft_model::now_ms();
        Ok(tokens::verify_session(token, now, |kid| {
            weft_model::node_key(&view, kid).ok().flatten()
        }))
    };
    let claims = match check(state)? {
        // A key registered moments ago may not be applied here yet: catch up once. If this
        // node cannot catch up (not in quorum, no leader), say so (421/503): answering 401
        // would tell the client its valid token is bad.
        Err(TokenError::UnknownKey(_)) => {
            state.node.linearize().await?;
            check(state)?
        }
        other => other,
    };
    let claims = claims.map_err(|e| match e {
        TokenError::Expired => invalid("the session has expired"),
        _ => invalid("the session token is not valid"),
    })?;
    let view = state.node.read_state()?;
    if weft_model::is_revoked(&view, &claims.sid)? {
        return Err(invalid("the session was logged out or revoked"));
    }
    state.verified.put(token, &claims);
    Ok(claims)
}

/// Any authenticated session.
pub struct Session(pub SessionClaims, pub String);

impl FromRequestParts<Shared> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let Some(token) = token_of(parts).filter(|t| !t.is_empty()) else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "no session token was presented",
            ));
        };
        let claims = verify(state, &token).await?;
        Ok(Session(claims, token))
    }
}

/// A session of an admin.
pub struct Admin(pub SessionClaims);

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let Session(claims, _) = Session::from_request_parts(parts, state).await?;
        if !claims.adm {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this needs an admin session",
            ));
        }
        Ok(Admin(claims))
    }
}
