//! Enrollment: `enrollments` under the management API, and the public endpoints an
//! identity or edge router uses to trade its one-time token for a certificate.
//!
//! The flow (OpenZiti's `ott`/`erott`):
//! 1. An admin creates an enrollment (`POST /enrollments`, or an identity with
//!    `"enrollment": {"ott": true}`, or any edge router). This controller draws a random
//!    token and signs a JWT naming the target, every controller's URL and the cluster CA's
//!    fingerprint (`caFp`); both are stored in the replicated enrollment record.
//! 2. The enrolling client reads the JWT without trusting it and connects to a controller
//!    it names, accepting the TLS server only if the chain it sends holds a CA whose
//!    fingerprint is `caFp` (controllers send the CA after their own certificate). It makes
//!    a key pair and sends a CSR with the JWT to `POST /edge/client/v1/enroll?method=ott`
//!    (`erott` for routers); the answer carries the CA it will trust from then on.
//! 3. The controller verifies the JWT's signature (any member's key), finds the open
//!    enrollment, signs the CSR with the cluster CA (the CA decides the subject) and
//!    proposes [`Command::Enroll`]; apply consumes the token (a second use is 410) and
//!    creates the identity's `cert` authenticator, or marks the router verified.
//! 4. The identity logs in with `POST /edge/client/v1/authenticate?method=cert` over mTLS.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{Map, Value};
use weft_api::{models, ErrorCode};
use weft_model::enrollment::{self, Enroll};
use weft_model::entity::EntityKind;
use weft_model::Command;

use crate::app::Shared;
use crate::error::ApiError;
use crate::http::{ok, parse_json, query_param, RawBody};
use crate::pki;
use crate::resources::{CreateContext, Prepared, Resource};
use crate::tokens::{self, EnrollmentClaims, TokenError};
use weft_api::describe::{Field, Shape};

/// How long an enrollment stays open unless the admin says otherwise (OpenZiti: 24 h).
pub const DEFAULT_TTL_MS: i64 = 24 * 3600 * 1000;

/// Longest an enrollment may stay open (a token is a credential: keep its life bounded).
pub const MAX_TTL_MS: i64 = 365 * 24 * 3600 * 1000;

/// A new enrollment record (with id and times) of `method` for `target`, expiring at
/// `expires_at_ms` (default: 24 hours from now). Its JWT is signed by this node.
pub fn new_enrollment(
    ctx: &CreateContext,
    method: &str,
    target: &str,
    expires_at_ms: Option<i64>,
) -> Result<(EntityKind, Value), ApiError> {
    let id = weft_model::new_id();
    let mut fields = enrollment_fields(ctx, method, target, expires_at_ms)?;
    let now = weft_model::rfc3339(ctx.now_ms);
    fields.insert("id".into(), Value::String(id));
    fields.insert("createdAt".into(), Value::String(now.clone()));
    fields.insert("updatedAt".into(), Value::String(now));
    Ok((EntityKind::Enrollment, Value::Object(fields)))
}

/// The stored fields of an enrollment (everything but id and times).
fn enrollment_fields(
    ctx: &CreateContext,
    method: &str,
    target: &str,
    expires_at_ms: Option<i64>,
) -> Result<Map<String, Value>, ApiError> {
    let state = &ctx.state;
    let exp = expires_at_ms.unwrap_or(ctx.now_ms + DEFAULT_TTL_MS);
    if exp <= ctx.now_ms || exp > ctx.now_ms + MAX_TTL_MS {
        return Err(ApiError::field(
            "expiresAt",
            "must be in the future and at most a year away",
        ));
    }
    let token = random_token();
    let mut ctrls: Vec<String> = state.node.members().into_iter().map(|m| m.url).collect();
    ctrls.sort();
    ctrls.dedup();
    let ca_fp = pki::ca_fingerprint(&state.ca_pem).map_err(ApiError::internal)?;
    let jwt = state.signer.sign_enrollment(&EnrollmentClaims {
        iss: state.node.url().to_owned(),
        sub: target.to_owned(),
        jti: token.clone(),
        em: method.to_owned(),
        exp: exp.div_euclid(1000),
        iat: ctx.now_ms.div_euclid(1000),
        ctrls,
        ca_fp,
    });
    let (field, _) = enrollment::target_of(method);
    let mut m = Map::new();
    m.insert(
        "name".into(),
        Value::String(enrollment::open_name(method, target)),
    );
    m.insert("method".into(), Value::String(method.to_owned()));
    m.insert(field.into(), Value::String(target.to_owned()));
    m.insert("token".into(), Value::String(token));
    m.insert("jwt".into(), Value::String(jwt));
    m.insert("expiresAt".into(), Value::String(weft_model::rfc3339(exp)));
    m.insert("expiresAtMs".into(), Value::from(exp));
    m.insert("tags".into(), Value::Object(Map::new()));
    Ok(m)
}

/// 32 random bytes, base64url: the one-time token.
fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `enrollments`: list, show, create (`ott` for an identity, `erott` for an edge router),
/// delete (which withdraws the token), patch (tags only).
pub struct Enrollments;

impl Resource for Enrollments {
    const KIND: EntityKind = EntityKind::Enrollment;
    type Create = models::EnrollmentCreate;
    type Patch = models::EnrollmentPatch;
    const SHOWN: &'static [Field] = &[
        Field::new("name", Shape::Text)
            .doc("`<method>:<target id>` while open, `used:<token>` after use."),
        Field::new("method", Shape::OneOf(&["ott", "erott"])),
        Field::new("identityId", Shape::Text)
            .nullable()
            .doc("The identity (`ott`)."),
        Field::new("edgeRouterId", Shape::Text)
            .nullable()
            .doc("The edge router (`erott`)."),
        Field::new("token", Shape::Text).doc("The one-time token (the JWT's `jti`)."),
        Field::new("jwt", Shape::Text).doc("The enrollment token to hand to the enrolling party."),
        Field::new("expiresAt", Shape::Text).doc("RFC 3339."),
        Field::new("expiresAtMs", Shape::Integer),
        Field::new("completedAt", Shape::Text)
            .nullable()
            .doc("When it was used (RFC 3339); null while open."),
        Field::new("certFingerprint", Shape::Text)
            .nullable()
            .doc("SHA-256 of the certificate it was used for."),
        Field::new("tags", Shape::Map),
    ];

    fn prepare_create(body: Self::Create) -> Result<Prepared, ApiError> {
        let (method, field, target) =
            match (body.method.as_str(), body.identity_id, body.edge_router_id) {
                ("ott", Some(id), None) => ("ott", "identityId", id),
                ("erott", None, Some(id)) => ("erott", "edgeRouterId", id),
                ("ott", _, _) => {
                    return Err(ApiError::field(
                        "identityId",
                        "ott enrolls an identity: give identityId (and no edgeRouterId)",
                    ))
                }
                ("erott", _, _) => {
                    return Err(ApiError::field(
                        "edgeRouterId",
                        "erott enrolls an edge router: give edgeRouterId (and no identityId)",
                    ))
                }
                (other, _, _) => {
                    return Err(ApiError::field(
                        "method",
                        format!("{other:?} is not supported; use ott or erott"),
                    ))
                }
            };
        let mut fields = Map::new();
        fields.insert("method".into(), Value::String(method.into()));
        fields.insert(field.into(), Value::String(target));
        if let Some(s) = body.expires_at.as_deref() {
            let ms = chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| ApiError::field("expiresAt", format!("not RFC 3339: {e}")))?;
            fields.insert("expiresAtMs".into(), Value::from(ms));
        }
        fields.insert(
            "tags".into(),
            serde_json::to_value(body.tags).unwrap_or_default(),
        );
        Ok(Prepared {
            fields,
            enroll: None,
        })
    }

    /// Draws the token and signs the JWT (this controller's key, every member's URL).
    fn finish(ctx: &CreateContext, fields: &mut Map<String, Value>) -> Result<(), ApiError> {
        let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
        let method = text("method").unwrap_or_default();
        let (field, _) = enrollment::target_of(&method);
        let target = text(field).unwrap_or_default();
        let expires = fields.get("expiresAtMs").and_then(Value::as_i64);
        let mut made = enrollment_fields(ctx, &method, &target, expires)?;
        if let Some(tags) = fields.remove("tags") {
            made.insert("tags".into(), tags);
        }
        *fields = made;
        Ok(())
    }
}

/// `POST /edge/client/v1/enroll?method=ott|erott&token=JWT`, body the CSR (bare PEM, or
/// JSON `{"csr": PEM}`): answers the signed certificate and the CA.
pub async fn enroll(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let method = query_param(query.as_deref(), "method")?.unwrap_or_default();
    if method != "ott" && method != "erott" {
        return Err(ApiError::field(
            "method",
            format!("{method:?} is not supported; use method=ott or method=erott"),
        ));
    }
    let Some(jwt) = query_param(query.as_deref(), "token")?.filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::InvalidEnrollmentToken,
            "no enrollment token: pass the JWT as ?token=",
        ));
    };
    let csr = csr_of(&body)?;
    let claims = verify_jwt(&state, &jwt).await?;
    if claims.em != method {
        return Err(ApiError::new(
            ErrorCode::InvalidEnrollmentToken,
            format!("the token is for method={}, not method={method}", claims.em),
        ));
    }
    let now = weft_model::now_ms();
    let view = state.node.read_state()?;
    let Some(record) = enrollment::find(&view, &method, &claims.sub, &claims.jti)? else {
        return Err(ApiError::new(
            ErrorCode::InvalidEnrollmentToken,
            "no enrollment has this token (it was deleted, or replaced by a newer one)",
        ));
    };
    enrollment::check(&record, &method, now)?;
    let ca = crate::cluster_api::cluster_ca(&state)?;
    let (prefix, server) = if method == "ott" {
        (pki::IDENTITY_CN_PREFIX, false)
    } else {
        (pki::ROUTER_CN_PREFIX, true)
    };
    let cn = format!("{prefix}{}", claims.sub);
    let (cert, fingerprint) = pki::sign_enrollment_csr(&ca, &csr, &cn, server).map_err(|e| {
        ApiError::new(
            ErrorCode::CouldNotProcessCsr,
            "the CSR could not be processed",
        )
        .with_cause(e.to_string())
    })?;
    let cmd = Command::Enroll(Enroll {
        enrollment_id: record["id"].as_str().unwrap_or_default().to_owned(),
        token: claims.jti,
        fingerprint: fingerprint.clone(),
        cert_pem: cert.clone(),
        authenticator_id: weft_model::new_id(),
        at: now,
    });
    state.node.write(cmd).await?;
    let (identity_id, edge_router_id) = if method == "ott" {
        (Some(claims.sub), None)
    } else {
        (None, Some(claims.sub))
    };
    Ok(ok(models::EnrollResult {
        cert,
        ca: state.ca_pem.clone(),
        identity_id,
        edge_router_id,
        fingerprint,
    }))
}

/// The CSR PEM of an enroll body: bare PEM, or JSON `{"csr": PEM}`.
fn csr_of(body: &[u8]) -> Result<String, ApiError> {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    let csr = if text.starts_with('{') {
        parse_json::<models::EnrollRequest>(body, false)?.csr
    } else {
        text.to_owned()
    };
    if !csr.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        return Err(ApiError::new(
            ErrorCode::CouldNotProcessCsr,
            "the body must be a PEM certificate signing request (or {\"csr\": PEM})",
        ));
    }
    Ok(csr)
}

/// Checks the JWT's signature against every member's committed key (catching up once if
/// the signer joined moments ago).
async fn verify_jwt(state: &Shared, jwt: &str) -> Result<EnrollmentClaims, ApiError> {
    let check = |state: &Shared| -> Result<Result<EnrollmentClaims, TokenError>, ApiError> {
        let view = state.node.read_state()?;
        Ok(tokens::verify_enrollment(jwt, |kid| {
            weft_model::node_key(&view, kid).ok().flatten()
        }))
    };
    let claims = match check(state)? {
        Err(TokenError::UnknownKey(_)) => {
            state.node.linearize().await?;
            check(state)?
        }
        other => other,
    };
    claims.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidEnrollmentToken,
            "the enrollment token is not a JWT signed by this cluster",
        )
        .with_cause(e.to_string())
    })
}
