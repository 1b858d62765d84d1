//! `/fabric/v1/cluster/*`: membership operations (admin), join tokens, and the two calls
//! a joining node makes with its join token (certificate, then membership). The join
//! token comes as `Authorization: Bearer` ([`JoinAuth`]), so that a call without one is
//! refused (401) before its body is read, like any other call without its credential.

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use weft_api::describe::{Described, Field, Shape};
use weft_api::models::{
    AddMember, ClusterMember, JoinToken, LeaderInOffice, RemoveMember, StateHash,
    TransferLeadership,
};
use weft_api::ErrorCode;
use weft_cluster::NodeId;
use weft_model::Command;

use crate::app::Shared;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::http::{ok, JsonBody, OptionalJsonBody};
use crate::pki::{self, CaMaterial};
use crate::tls;
use crate::tokens::{self, JoinClaims};

/// How long a join token is valid.
pub const JOIN_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Parses a member id as the API shows it (a decimal string).
pub fn parse_node_id(field: &str, s: &str) -> Result<NodeId, ApiError> {
    s.trim()
        .parse::<NodeId>()
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| ApiError::field(field, format!("{s:?} is not a member id")))
}

/// `GET /fabric/v1/cluster/list-members`.
pub async fn list_members(State(state): State<Shared>, _admin: Admin) -> Response {
    let members: Vec<ClusterMember> = state
        .node
        .members()
        .into_iter()
        .map(|m| ClusterMember {
            id: m.id.to_string(),
            address: m.url,
            voter: m.voter,
            leader: m.leader,
            connected: m.connected,
            last_contact_ms: m.last_contact_ms,
            applied_index: m.applied,
        })
        .collect();
    ok(members)
}

/// `GET /fabric/v1/cluster/state-hash`: this node's applied index and a digest of its
/// replicated state (local, not linearizable): tests and operators compare it across
/// nodes to see that the replicas converged.
pub async fn state_hash(State(state): State<Shared>, _admin: Admin) -> Result<Response, ApiError> {
    let d = state.node.state_digest().await?;
    Ok(ok(StateHash {
        node_id: state.node.id().to_string(),
        applied_index: d.applied_index,
        state_hash: d.hash,
        rows: d.rows as u64,
    }))
}

/// `POST /fabric/v1/cluster/remove-member`.
pub async fn remove_member(
    State(state): State<Shared>,
    _admin: Admin,
    JsonBody(body): JsonBody<RemoveMember>,
) -> Result<Response, ApiError> {
    let id = parse_node_id("id", &body.id)?;
    state.node.remove_member(id).await?;
    Ok(ok(serde_json::json!({})))
}

/// `POST /fabric/v1/cluster/transfer-leadership`: returns once the new leader is in office.
pub async fn transfer_leadership(
    State(state): State<Shared>,
    _admin: Admin,
    OptionalJsonBody(body): OptionalJsonBody<TransferLeadership>,
) -> Result<Response, ApiError> {
    let to = match body.new_leader_id {
        Some(s) => Some(parse_node_id("newLeaderId", &s)?),
        None => None,
    };
    let id = state.node.transfer_leadership(to).await?;
    Ok(ok(LeaderInOffice {
        leader_id: id.to_string(),
    }))
}

/// `POST /fabric/v1/cluster/join-token`.
pub async fn join_token(State(state): State<Shared>, _admin: Admin) -> Result<Response, ApiError> {
    let exp = weft_model::now_ms() + JOIN_TOKEN_TTL.as_millis() as i64;
    let claims = JoinClaims {
        ca: pki::ca_fingerprint(&state.ca_pem).map_err(ApiError::internal)?,
        exp,
        kid: state.signer.node_id,
        nonce: weft_model::new_id(),
    };
    Ok(ok(JoinToken {
        token: state.signer.sign_join(&claims),
        expires_at: weft_model::rfc3339(exp),
    }))
}

/// The cluster CA certificate (public; a joining node pins it by the fingerprint in its token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaCert {
    pub ca_pem: String,
}

impl Described for CaCert {
    const NAME: &'static str = "CaCert";
    const DOC: &'static str = "The cluster CA certificate.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[Field::new("caPem", Shape::Text).required()];
}

/// `GET /fabric/v1/cluster/ca` (admins; a joining node checks the CA in the TLS handshake
/// against its join token instead).
pub async fn ca(State(state): State<Shared>, _admin: Admin) -> Response {
    ok(CaCert {
        ca_pem: state.ca_pem.clone(),
    })
}

/// A joining node's certificate request (its join token comes as `Authorization: Bearer`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinCertificateRequest {
    pub node_id: String,
    pub csr_pem: String,
}

impl Described for JoinCertificateRequest {
    const NAME: &'static str = "JoinCertificateRequest";
    const DOC: &'static str = "A joining controller's certificate request.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::new("nodeId", Shape::Text).required(),
        Field::new("csrPem", Shape::Text).required(),
    ];
}

/// The signed certificate for a joining node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinCertificate {
    pub cert_pem: String,
    pub ca_pem: String,
}

impl Described for JoinCertificate {
    const NAME: &'static str = "JoinCertificate";
    const DOC: &'static str = "The joining controller's certificate and the cluster CA.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("certPem", Shape::Text).required(),
        Field::new("caPem", Shape::Text).required(),
    ];
}

/// A joining node asks to be added (its join token comes as `Authorization: Bearer`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    pub node_id: String,
    pub address: String,
    pub public_key_hex: String,
}

impl Described for JoinRequest {
    const NAME: &'static str = "JoinRequest";
    const DOC: &'static str = "A joining controller asks to be added.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::new("nodeId", Shape::Text).required(),
        Field::new("address", Shape::Text)
            .required()
            .doc("Its https:// API URL."),
        Field::new("publicKeyHex", Shape::Text)
            .required()
            .doc("Its token-signing key (Ed25519, 64 hex characters)."),
    ];
}

/// A valid join token of this cluster, presented as `Authorization: Bearer` (401
/// `UNAUTHORIZED` without one, `INVALID_JOIN_TOKEN` for a bad one).
pub struct JoinAuth;

impl FromRequestParts<Shared> for JoinAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let Some(token) = crate::auth::token_of(parts).filter(|t| !t.is_empty()) else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "no join token was presented",
            ));
        };
        check_join_token(state, &token).await?;
        Ok(JoinAuth)
    }
}

async fn check_join_token(state: &Shared, token: &str) -> Result<(), ApiError> {
    let verify = |state: &Shared| -> Result<Result<JoinClaims, tokens::TokenError>, ApiError> {
        let view = state.node.read_state()?;
        Ok(tokens::verify_join(token, weft_model::now_ms(), |kid| {
            weft_model::node_key(&view, kid).ok().flatten()
        }))
    };
    let claims = match verify(state)? {
        Err(tokens::TokenError::UnknownKey(_)) => {
            state.node.linearize().await?;
            verify(state)?
        }
        other => other,
    }
    .map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJoinToken,
            format!("join token refused: {e}"),
        )
    })?;
    let ours = pki::ca_fingerprint(&state.ca_pem).map_err(ApiError::internal)?;
    if claims.ca != ours {
        return Err(ApiError::new(
            ErrorCode::InvalidJoinToken,
            "join token is for another cluster",
        ));
    }
    Ok(())
}

pub(crate) fn cluster_ca(state: &Shared) -> Result<CaMaterial, ApiError> {
    let view = state.node.read_state()?;
    let ca = weft_model::cluster_ca(&view)?.ok_or_else(|| {
        ApiError::from(weft_cluster::ClusterError::NotInQuorum {
            controllers: state.node.other_controllers(),
        })
    })?;
    Ok(CaMaterial {
        cert_pem: ca.cert_pem,
        key_pem: ca.key_pem,
    })
}

/// `POST /fabric/v1/cluster/join/certificate`.
pub async fn join_certificate(
    State(state): State<Shared>,
    _token: JoinAuth,
    JsonBody(req): JsonBody<JoinCertificateRequest>,
) -> Result<Response, ApiError> {
    let id = parse_node_id("nodeId", &req.node_id)?;
    let ca = cluster_ca(&state)?;
    let cert_pem = pki::sign_csr(&ca, &req.csr_pem, id)
        .map_err(|e| ApiError::field("csrPem", e.to_string()))?;
    Ok(ok(JoinCertificate {
        cert_pem,
        ca_pem: state.ca_pem.clone(),
    }))
}

/// `POST /fabric/v1/cluster/join`: registers the node's signing key, adds it as a learner,
/// and promotes it to voter once it has caught up.
pub async fn join(
    State(state): State<Shared>,
    _token: JoinAuth,
    JsonBody(req): JsonBody<JoinRequest>,
) -> Result<Response, ApiError> {
    let id = parse_node_id("nodeId", &req.node_id)?;
    validate_url("address", &req.address)?;
    if req.public_key_hex.len() != 64 || !req.public_key_hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(ApiError::field("publicKeyHex", "must be 64 hex characters"));
    }
    admit(&state, id, &req.public_key_hex, req.address, true).await?;
    Ok(ok(serde_json::json!({ "nodeId": id.to_string() })))
}

/// Commits a new member's token-signing key (so its tokens verify everywhere from its
/// first login), then adds it as a learner and promotes it once caught up.
async fn admit(
    state: &Shared,
    id: NodeId,
    public_key_hex: &str,
    address: String,
    voter: bool,
) -> Result<(), ApiError> {
    state
        .node
        .write(Command::RegisterNodeKey {
            node_id: id,
            public_key_hex: public_key_hex.to_ascii_lowercase(),
        })
        .await?;
    state.node.add_member(id, address, voter).await?;
    Ok(())
}

fn validate_url(field: &str, url: &str) -> Result<(), ApiError> {
    if !url.starts_with("https://") || pki::host_of_url(url).is_none() {
        return Err(ApiError::field(
            field,
            format!("{url:?} is not an https:// URL"),
        ));
    }
    Ok(())
}

/// What a node waiting to be added (`--join-token` without `--join`) tells the member
/// that adds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingNode {
    pub node_id: String,
    pub csr_pem: String,
    pub public_key_hex: String,
}

/// `POST /fabric/v1/cluster/add-member`: adds a node that waits with a join token. This
/// member fetches the node's certificate request, signs it with the cluster CA, hands
/// the certificate over (the waiting node checks the CA against its token's
/// fingerprint), registers its signing key and adds it.
pub async fn add_member(
    State(state): State<Shared>,
    _admin: Admin,
    JsonBody(body): JsonBody<AddMember>,
) -> Result<Response, ApiError> {
    validate_url("address", &body.address)?;
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::field(
            "address",
            format!("no waiting controller answered there: {e}"),
        )
    };
    let client = tls::insecure_http_client(Duration::from_secs(5)).map_err(ApiError::internal)?;
    let base = body.address.trim_end_matches('/');
    let pending: weft_api::Envelope<PendingNode> = client
        .get(format!("{base}/fabric/v1/cluster/pending"))
        .send()
        .await
        .map_err(|e| unreachable(&e))?
        .json()
        .await
        .map_err(|e| unreachable(&e))?;
    let pending = pending.data;
    let id = parse_node_id("nodeId", &pending.node_id)?;
    let ca = cluster_ca(&state)?;
    let cert_pem = pki::sign_csr(&ca, &pending.csr_pem, id).map_err(|e| unreachable(&e))?;
    let accept = JoinCertificate {
        cert_pem,
        ca_pem: state.ca_pem.clone(),
    };
    let resp = client
        .post(format!("{base}/fabric/v1/cluster/pending/accept"))
        .json(&accept)
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    if !resp.status().is_success() {
        return Err(unreachable(&format!(
            "it refused the certificate: HTTP {}",
            resp.status()
        )));
    }
    admit(
        &state,
        id,
        &pending.public_key_hex,
        body.address.clone(),
        body.is_voter,
    )
    .await?;
    Ok(ok(serde_json::json!({ "id": id.to_string() })))
}
