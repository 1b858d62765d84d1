//! The headers of a mutating request and proposing its write: exactly-once across
//! retries (`Idempotency-Key`) and compare-and-set (`If-Match`).
//!
//! - [`IfMatch`] reads `If-Match: <version>` (bare `3` or entity-tag style `"3"`; `*`:
//!   any existing version). The version travels inside the command
//!   (`expected_version`) and apply compares it, so two racing compare-and-sets cannot
//!   both win; a mismatch is 412 `PRECONDITION_FAILED` with `error.data.version`.
//! - [`IdempotencyKey`] reads `Idempotency-Key` (1-200 visible ASCII characters). With
//!   the caller's subject as its scope and a fingerprint of the request (method, path,
//!   canonical JSON body), [`propose`] wraps the command in
//!   [`Command::Idempotent`], whose apply stores the result under the key in the same
//!   transaction as the write, or answers the stored result to a retry (see
//!   [`weft_model::idempotency`]). A retry whose key this node has already applied is
//!   answered from local state without proposing ([`replay_from_local`]); apply's check
//!   is the authoritative one. A replayed answer has the first answer's status and body,
//!   plus `Idempotent-Replayed: true`.
//!
//! Bad header values are 400 `INVALID_FIELD` whose cause names the header.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use weft_api::{IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX, IF_MATCH_HEADER};
use weft_cluster::ClusterError;
use weft_model::{idempotency, Command, DomainError, Outcome};

use crate::app::Shared;
use crate::error::ApiError;

/// The header names as they appear in causes and the API document.
pub const IF_MATCH: &str = "If-Match";
/// See [`IF_MATCH`].
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// See [`IF_MATCH`].
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
/// See [`IF_MATCH`].
pub const ETAG: &str = "ETag";

/// The one value of header `name`, if present; several are refused (which one would
/// count?), and so is a value that is not visible ASCII.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &str,
    shown: &str,
) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::field(shown, "give it once"));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| ApiError::field(shown, "must be visible ASCII"))
}

/// `If-Match` of a request: the version a change expects (`None`: no precondition, or
/// `*`, which any existing entity meets; a missing one stays 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfMatch(pub Option<u64>);

/// Parses an `If-Match` value: `3`, `"3"` or `*`.
pub fn parse_if_match(value: &str) -> Result<Option<u64>, ApiError> {
    let v = value.trim();
    if v == "*" {
        return Ok(None);
    }
    let bare = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::field(
            IF_MATCH,
            format!("{v:?} is not an entity version: give one version (3 or \"3\") or *"),
        ));
    }
    bare.parse::<u64>()
        .map(Some)
        .map_err(|_| ApiError::field(IF_MATCH, format!("{v:?} is too large for a version")))
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match single(&parts.headers, IF_MATCH_HEADER, IF_MATCH)? {
            Some(v) => parse_if_match(v).map(IfMatch),
            None => Ok(IfMatch(None)),
        }
    }
}

/// Checks an `Idempotency-Key` value: 1 to 200 visible ASCII characters.
pub fn check_key(value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > IDEMPOTENCY_KEY_MAX {
        return Err(ApiError::field(
            IDEMPOTENCY_KEY,
            format!("must be 1 to {IDEMPOTENCY_KEY_MAX} characters"),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::field(
            IDEMPOTENCY_KEY,
            "must be visible ASCII characters (no spaces)",
        ));
    }
    Ok(())
}

/// `Idempotency-Key` of a request, with the method and path its fingerprint covers.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The header's value, checked; `None` without the header.
    key: Option<String>,
    /// The request's method (part of the fingerprint).
    method: String,
    /// The request's path (part of the fingerprint).
    path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let key = single(&parts.headers, IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY)?;
        if let Some(k) = key {
            check_key(k)?;
        }
        Ok(IdempotencyKey {
            key: key.map(str::to_owned),
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
        })
    }
}

/// A request's key in its caller's scope, with the request's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idem {
    /// Whose key it is: the session's subject (an identity's id or the admin's name).
    pub scope: String,
    /// The header's value.
    pub key: String,
    /// What the request was (see [`IdempotencyKey::resolve`]).
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// The scoped, fingerprinted key (`None` without the header). `body` is the request
    /// body as sent (valid JSON, or empty); the fingerprint covers its canonical form, so
    /// key order and spacing do not matter, and the version `If-Match` expects (part of
    /// what the request asks). `secret`: the body holds a credential (a password), which a
    /// fast hash kept in replicated state would expose to guessing, so the fingerprint is
    /// an argon2id hash instead (salted by the key; run off the async workers).
    pub async fn resolve(
        self,
        scope: &str,
        if_match: Option<u64>,
        body: &[u8],
        secret: bool,
    ) -> Result<Option<Idem>, ApiError> {
        let Some(key) = self.key else {
            return Ok(None);
        };
        let message = fingerprint_input(&self.method, &self.path, if_match, body);
        let fingerprint = if secret {
            let salt = Sha256::digest(idempotency::record_key(scope, &key).as_bytes());
            tokio::task::spawn_blocking(move || slow_hash(&message, &salt[..16]))
                .await
                .map_err(ApiError::internal)??
        } else {
            hex(&Sha256::digest(&message))
        };
        Ok(Some(Idem {
            scope: scope.to_owned(),
            key,
            fingerprint,
        }))
    }
}

/// What a fingerprint covers: method, path, the expected version and the body in
/// canonical JSON (an empty or non-JSON body as it is).
fn fingerprint_input(method: &str, path: &str, if_match: Option<u64>, body: &[u8]) -> Vec<u8> {
    let expected = if_match.map_or_else(|| "*".to_owned(), |v| v.to_string());
    let mut out = format!("{method}\n{path}\n{expected}\n").into_bytes();
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let mut text = String::new();
            canonical(&v, &mut text);
            out.extend(text.as_bytes());
        }
        Err(_) => out.extend(body),
    }
    out
}

/// `v` as JSON with object keys in order and no spaces, whatever order and spacing the
/// client sent.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// argon2id of `message` with `salt` (the fingerprint of a body holding a secret).
fn slow_hash(message: &[u8], salt: &[u8]) -> Result<String, ApiError> {
    let mut out = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(message, salt, &mut out)
        .map_err(ApiError::internal)?;
    Ok(hex(&out))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a write answered: the command's result, and whether it is the stored result of
/// an earlier request with the same key (nothing was done this time).
#[derive(Debug)]
pub struct Answer {
    /// The command's result (this time, or stored the first time).
    pub result: Result<Outcome, DomainError>,
    /// Whether it is the stored result of an earlier request (`Idempotent-Replayed`).
    pub replayed: bool,
}

impl Answer {
    /// The HTTP answer: `ok` renders a success; a refusal is its error envelope. A replay
    /// carries `Idempotent-Replayed: true` either way.
    pub fn respond(
        self,
        ok: impl FnOnce(Outcome) -> Result<Response, ApiError>,
    ) -> Result<Response, ApiError> {
        let resp = match self.result {
            Ok(outcome) => ok(outcome),
            Err(e) => Err(ApiError::from(e)),
        };
        if !self.replayed {
            return resp;
        }
        let mut resp = resp.unwrap_or_else(IntoResponse::into_response);
        resp.headers_mut().insert(
            weft_api::IDEMPOTENT_REPLAYED_HEADER,
            HeaderValue::from_static("true"),
        );
        Ok(resp)
    }
}

/// The answer to a retry whose key this node has applied already (same fingerprint: the
/// stored result; another one: 422), without proposing anything.
pub fn replay_from_local(state: &Shared, idem: Option<&Idem>) -> Result<Option<Answer>, ApiError> {
    let Some(idem) = idem else {
        return Ok(None);
    };
    let view = state.node.read_state()?;
    match idempotency::lookup(&view, &idem.scope, &idem.key, weft_model::now_ms())? {
        Some(record) if record.fingerprint == idem.fingerprint => Ok(Some(Answer {
            result: record.outcome,
            replayed: true,
        })),
        Some(_) => Err(DomainError::IdempotencyKeyReused {
            key: idem.key.clone(),
        }
        .into()),
        None => Ok(None),
    }
}

/// Proposes `cmd`, under `idem`'s key if given, and returns what apply answered. Cluster
/// states (no quorum, no leader, timeouts) are errors; the command's own verdict is in the
/// [`Answer`].
pub async fn propose(
    state: &Shared,
    idem: Option<&Idem>,
    cmd: Command,
) -> Result<Answer, ApiError> {
    let cmd = match idem {
        Some(idem) => Command::Idempotent {
            scope: idem.scope.clone(),
            key: idem.key.clone(),
            fingerprint: idem.fingerprint.clone(),
            at: weft_model::now_ms(),
            inner: Box::new(cmd),
        },
        None => cmd,
    };
    match state.node.write(cmd).await {
        Ok((_, Outcome::Replayed(stored))) => Ok(Answer {
            result: *stored,
            replayed: true,
        }),
        Ok((_, outcome)) => Ok(Answer {
            result: Ok(outcome),
            replayed: false,
        }),
        Err(ClusterError::Domain(e)) => Ok(Answer {
            result: Err(e),
            replayed: false,
        }),
        Err(e) => Err(e.into()),
    }
}

/// `ETag: "<version>"` on an answer showing `entity`.
pub fn with_etag(mut resp: Response, entity: &Value) -> Response {
    let version = weft_model::entity::version_of(entity);
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(weft_api::ETAG_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::ErrorCode;

    #[test]
    fn if_match_takes_a_version_bare_or_quoted_or_any() {
        assert_eq!(parse_if_match("3").unwrap(), Some(3));
        assert_eq!(parse_if_match("\"17\"").unwrap(), Some(17));
        assert_eq!(parse_if_match(" 4 ").unwrap(), Some(4));
        assert_eq!(parse_if_match("*").unwrap(), None);
        for bad in [
            "",
            "\"\"",
            "-1",
            "1.5",
            "abc",
            "W/\"3\"",
            "\"3",
            "1, 2",
            "99999999999999999999999",
        ] {
            let e = parse_if_match(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{bad}");
            assert!(e.cause.unwrap().starts_with("If-Match:"), "{bad}");
        }
    }

    #[test]
    fn keys_are_1_to_200_visible_ascii_characters() {
        check_key("a").unwrap();
        check_key(&"k".repeat(200)).unwrap();
        check_key("0f8e-4c1b:retry/1~!").unwrap();
        for bad in [
            String::new(),
            "k".repeat(201),
            "a b".into(),
            "é".into(),
            "a\tb".into(),
        ] {
            let e = check_key(&bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{bad:?}");
            assert!(e.cause.unwrap().starts_with("Idempotency-Key:"));
        }
    }

    fn key(k: &str, method: &str, path: &str) -> IdempotencyKey {
        IdempotencyKey {
            key: Some(k.into()),
            method: method.into(),
            path: path.into(),
        }
    }

    #[tokio::test]
    async fn the_fingerprint_covers_method_path_and_the_body_in_canonical_form() {
        let fp = |k: IdempotencyKey, body: &'static [u8], secret: bool| async move {
            k.resolve("admin", None, body, secret)
                .await
                .unwrap()
                .unwrap()
                .fingerprint
        };
        let p = "/edge/management/v1/services";
        let a = fp(
            key("k", "POST", p),
            br#"{"name":"a","tags":{"x":1,"y":2}}"#,
            false,
        )
        .await;
        let same = fp(
            key("k", "POST", p),
            b" { \"tags\": {\"y\": 2, \"x\": 1}, \"name\": \"a\" } ",
            false,
        )
        .await;
        assert_eq!(a, same, "key order and spacing do not matter");
        assert_ne!(a, fp(key("k", "POST", p), br#"{"name":"b"}"#, false).await);
        assert_ne!(
            a,
            fp(
                key("k", "PATCH", p),
                br#"{"name":"a","tags":{"x":1,"y":2}}"#,
                false
            )
            .await
        );
        assert_ne!(
            a,
            fp(
                key("k", "POST", "/edge/management/v1/identities"),
                br#"{"name":"a","tags":{"x":1,"y":2}}"#,
                false
            )
            .await
        );
        // A body with a secret: a slow hash, the same for the same request.
        let body: &[u8] = br#"{"username":"u","password":"correct horse"}"#;
        let s1 = fp(key("k", "POST", p), body, true).await;
        assert_eq!(s1, fp(key("k", "POST", p), body, true).await);
        assert_ne!(s1, fp(key("k", "POST", p), body, false).await);
        // No header, no key.
        let none = IdempotencyKey {
            key: None,
            method: "POST".into(),
            path: p.into(),
        };
        assert!(none
            .resolve("admin", None, b"{}", false)
            .await
            .unwrap()
            .is_none());
        // Another expected version is another request.
        let at = |v| key("k", "PATCH", p).resolve("admin", v, b"{}", false);
        let (v1, v2) = (at(Some(1)).await.unwrap(), at(Some(2)).await.unwrap());
        assert_ne!(v1.unwrap().fingerprint, v2.unwrap().fingerprint);
    }

    #[test]
    fn a_replay_carries_the_header_for_successes_and_refusals() {
        let ok = Answer {
            result: Ok(Outcome::Done),
            replayed: true,
        };
        let resp = ok
            .respond(|_| Ok(crate::http::ok(serde_json::json!({}))))
            .unwrap();
        assert_eq!(resp.headers()["idempotent-replayed"], "true");
        let refused = Answer {
            result: Err(DomainError::NotFound {
                kind: "service".into(),
                id: "x".into(),
            }),
            replayed: true,
        };
        let resp = refused.respond(|_| unreachable!()).unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["idempotent-replayed"], "true");
        let fresh = Answer {
            result: Err(DomainError::NotFound {
                kind: "service".into(),
                id: "x".into(),
            }),
            replayed: false,
        };
        assert_eq!(
            fresh.respond(|_| unreachable!()).unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
