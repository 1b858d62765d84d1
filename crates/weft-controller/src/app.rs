//! The controller's HTTP application: shared state and the route table, where every route
//! is added together with its OpenAPI documentation ([`crate::routes`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use weft_api::describe::{Field, Shape};
use weft_api::models::{
    AddMember, ApiSession, ClusterMember, EnrollRequest, EnrollResult, Health, JoinToken,
    LeaderInOffice, PasswordLogin, RemoveMember, StateHash, TransferLeadership, Version,
};
use weft_api::ErrorCode;
use weft_cluster::Node;

use crate::error::ApiError;
use crate::limits::Limits;
use crate::login_limit::LoginLimiter;
use crate::openapi::schemas::{self, entity_model};
use crate::openapi::{Model, Op};
use crate::resources::Resource;
use crate::routes::Routes;
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
    /// The limits this node enforces (bodies here; connections and heads in `tls`).
    pub limits: Limits,
    /// Failed logins per source address (429 `RATE_LIMITED` beyond the limit).
    pub logins: LoginLimiter,
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

/// The route table: every route with its documentation (see [`Routes`]). A new route is
/// one more call here (or in [`resources::all`] for a new entity kind).
pub fn routes() -> Routes {
    use ErrorCode::*;
    let mgmt = "/edge/management/v1";
    let client = "/edge/client/v1";
    let cluster = "/fabric/v1/cluster";
    let identity_id = "The identity's id.";
    let with_permissions = entity_model(
        "ServiceWithPermissions",
        "A service with what the caller (or the identity) may do with it.",
        resources::Services::SHOWN,
        &[schemas::PERMISSIONS],
    );
    let authenticate = |id: &str| {
        Op::public(id, "Log in")
            .tag("authentication")
            .describe(
                "Returns a session token, accepted by every controller as `zt-session: TOKEN` \
                 or `Authorization: Bearer TOKEN`.",
            )
            .describe(
                "`method=password`: the body names the user. `method=cert`: no body; the TLS \
                 client certificate an identity got by enrolling is the credential.",
            )
            .query(
                "method",
                true,
                "How to authenticate.",
                &["password", "cert"],
            )
            .describe(
                "Too many failed logins (401 `INVALID_AUTH`) from one address within a \
                 window make every `authenticate` call from there 429 `RATE_LIMITED`, with \
                 `Retry-After` seconds until the oldest of them leaves the window; the right \
                 credential does not help meanwhile, other addresses are not affected.",
            )
            .optional_body(Model::of::<PasswordLogin>())
            .ok(Model::of::<ApiSession>())
            .errors(&[InvalidField, InvalidAuth, RateLimited])
    };
    resources::all(Routes::new(), mgmt)
        .get(
            &format!("{mgmt}/identities/{{id}}/services"),
            policy_api::services,
            Op::admin("listIdentityServices", "Services an identity may use")
                .tag("identities")
                .describe("Each with `permissions` (`Bind`, `Dial`), by name.")
                .path_param("id", identity_id)
                .paged()
                .list(with_permissions.clone())
                .errors(&[NotFound]),
        )
        .get(
            &format!("{mgmt}/identities/{{id}}/edge-routers"),
            policy_api::edge_routers,
            Op::admin(
                "listIdentityEdgeRouters",
                "Edge routers an identity may use",
            )
            .tag("identities")
            .path_param("id", identity_id)
            .paged()
            .list(resources::record_model::<resources::EdgeRouters>())
            .errors(&[NotFound]),
        )
        .get(
            &format!("{mgmt}/identities/{{id}}/policy-advice/{{service_id}}"),
            policy_api::advice,
            Op::admin(
                "getPolicyAdvice",
                "Why an identity can or cannot use a service",
            )
            .tag("identities")
            .path_param("id", identity_id)
            .path_param("service_id", "The service's id.")
            .read()
            .ok(Model::named(
                "PolicyAdvice",
                schemas::object("", schemas::POLICY_ADVICE, false),
            ))
            .errors(&[NotFound]),
        )
        .get(
            &format!("{mgmt}/api-sessions"),
            session::list,
            Op::admin("listApiSessions", "List sessions that have not expired")
                .tag("api-sessions")
                .describe("Oldest first. A session is listed a moment after its login.")
                .paged()
                .filtered()
                .list(api_session_record()),
        )
        .get(
            &format!("{mgmt}/api-sessions/{{id}}"),
            session::get_one,
            Op::admin("getApiSession", "Show a session")
                .tag("api-sessions")
                .path_param("id", "The session's id.")
                .read()
                .ok(api_session_record())
                .errors(&[NotFound]),
        )
        .delete(
            &format!("{mgmt}/api-sessions/{{id}}"),
            session::delete,
            Op::admin("deleteApiSession", "Revoke a session everywhere")
                .tag("api-sessions")
                .path_param("id", "The session's id.")
                .done()
                .write()
                .errors(&[NotFound]),
        )
        .post(
            &format!("{mgmt}/authenticate"),
            session::authenticate,
            authenticate("authenticateManagement"),
        )
        .post(
            &format!("{client}/authenticate"),
            session::authenticate,
            authenticate("authenticate"),
        )
        .post(
            &format!("{client}/enroll"),
            enroll::enroll,
            Op::public("enroll", "Trade an enrollment token for a certificate")
                .tag("enrollment")
                .describe(
                    "The body is the CSR (bare PEM, or `{\"csr\": PEM}`). The cluster CA signs \
                     it for the token's identity (`ott`) or edge router (`erott`) and the token \
                     is spent: a second use is 410.",
                )
                .query("method", true, "The token's method.", &["ott", "erott"])
                .query("token", true, "The enrollment JWT.", &[])
                .body(Model::of::<EnrollRequest>())
                .ok(Model::of::<EnrollResult>())
                .write()
                .errors(&[
                    InvalidField,
                    InvalidEnrollmentToken,
                    EnrollmentExpired,
                    InvalidEnrollmentAlreadyEnrolled,
                    CouldNotProcessCsr,
                ]),
        )
        .get(
            &format!("{client}/current-identity"),
            client_api::current_identity,
            Op::session("getCurrentIdentity", "The caller's identity")
                .tag("current-identity")
                .ok(current_identity()),
        )
        .get(
            &format!("{client}/services"),
            client_api::services,
            Op::session("listCurrentIdentityServices", "Services the caller may use")
                .tag("current-identity")
                .describe("Each with `permissions` (`Bind`, `Dial`), by name.")
                .paged()
                .list(with_permissions),
        )
        .get(
            &format!("{client}/controllers"),
            client_api::controllers,
            Op::session("listControllers", "Every controller (for client failover)")
                .tag("current-identity")
                .ok(Model::named(
                    "ControllerRef",
                    schemas::object(
                        "A controller's API address.",
                        schemas::CONTROLLER_REF,
                        false,
                    ),
                )
                .array()),
        )
        .get(
            &format!("{client}/current-api-session"),
            session::current,
            Op::session("getCurrentApiSession", "The caller's session")
                .tag("authentication")
                .ok(Model::of::<ApiSession>()),
        )
        .delete(
            &format!("{client}/current-api-session"),
            session::logout,
            Op::session("logout", "Log out: revoke the caller's session everywhere")
                .tag("authentication")
                .done()
                .write(),
        )
        .post(
            &format!("{client}/current-api-session/refresh"),
            session::refresh,
            Op::session(
                "refreshApiSession",
                "A new token for the session, with a new expiry",
            )
            .tag("authentication")
            .ok(Model::of::<ApiSession>()),
        )
        .get(
            "/version",
            status::version,
            Op::public("getVersion", "Version and API base paths")
                .tag("status")
                .ok(Model::of::<Version>()),
        )
        .get(
            "/health-checks",
            status::health,
            Op::public("getHealth", "This controller's raft state")
                .tag("status")
                .ok(Model::of::<Health>()),
        )
        .get(
            "/metrics",
            status::metrics,
            Op::admin("getMetrics", "Prometheus metrics")
                .tag("status")
                .raw(
                    "text/plain",
                    "Prometheus text format (version 0.0.4).",
                    Model::inline(ObjectBuilder::new().schema_type(Type::String)),
                ),
        )
        .get(
            &format!("{cluster}/list-members"),
            cluster_api::list_members,
            Op::admin("listClusterMembers", "The cluster's members")
                .tag("cluster")
                .ok(Model::of::<ClusterMember>().array()),
        )
        .get(
            &format!("{cluster}/state-hash"),
            cluster_api::state_hash,
            Op::admin(
                "getStateHash",
                "A digest of this controller's replicated state",
            )
            .tag("cluster")
            .describe(
                "This node's applied index and the SHA-256 of its state rows, read \
                     locally: replicas that applied the same entries show the same hash.",
            )
            .ok(Model::of::<StateHash>()),
        )
        .post(
            &format!("{cluster}/add-member"),
            cluster_api::add_member,
            Op::admin(
                "addClusterMember",
                "Add a controller waiting with a join token",
            )
            .tag("cluster")
            .body(Model::of::<AddMember>())
            .ok(Model::named(
                "MemberId",
                schemas::object("", &[Field::new("id", Shape::Text).required()], false),
            ))
            .write()
            .errors(&[InvalidField, InvalidMembershipChange]),
        )
        .post(
            &format!("{cluster}/remove-member"),
            cluster_api::remove_member,
            Op::admin("removeClusterMember", "Remove a member")
                .tag("cluster")
                .body(Model::of::<RemoveMember>())
                .done()
                .write()
                .errors(&[InvalidField, InvalidMembershipChange]),
        )
        .post(
            &format!("{cluster}/transfer-leadership"),
            cluster_api::transfer_leadership,
            Op::admin("transferLeadership", "Hand leadership to another voter")
                .tag("cluster")
                .describe("Returns once the new leader is in office.")
                .optional_body(Model::of::<TransferLeadership>())
                .ok(Model::of::<LeaderInOffice>())
                .write()
                .errors(&[InvalidField, InvalidMembershipChange]),
        )
        .post(
            &format!("{cluster}/join-token"),
            cluster_api::join_token,
            Op::admin("createJoinToken", "A join token (valid 24 hours)")
                .tag("cluster")
                .ok(Model::of::<JoinToken>()),
        )
        .get(
            &format!("{cluster}/ca"),
            cluster_api::ca,
            Op::admin("getClusterCa", "The cluster CA certificate")
                .tag("cluster")
                .describe(
                    "What clients trust. A joining controller does not need this: it checks \
                     the CA in the TLS handshake against its join token's fingerprint.",
                )
                .ok(Model::of::<cluster_api::CaCert>()),
        )
        .post(
            &format!("{cluster}/join/certificate"),
            cluster_api::join_certificate,
            Op::join_token("joinCertificate", "A joining controller's certificate")
                .tag("cluster")
                .describe("Signs the joining controller's certificate request with the cluster CA.")
                .body(Model::of::<cluster_api::JoinCertificateRequest>())
                .ok(Model::of::<cluster_api::JoinCertificate>())
                .errors(&[InvalidField, ControllerNotInQuorum]),
        )
        .post(
            &format!("{cluster}/join"),
            cluster_api::join,
            Op::join_token("joinCluster", "Add the joining controller to the cluster")
                .tag("cluster")
                .describe(
                    "Registers its token-signing key, adds it as a learner and promotes it to \
                     voter once it has caught up.",
                )
                .body(Model::of::<cluster_api::JoinRequest>())
                .ok(Model::named(
                    "JoinedNode",
                    schemas::object("", &[Field::new("nodeId", Shape::Text).required()], false),
                ))
                .write()
                .errors(&[InvalidField, InvalidMembershipChange]),
        )
        .post(
            "/fabric/v1/peer/{rpc}",
            peer_api::rpc,
            Op::cluster_certificate("peerRpc", "A raft RPC between controllers")
                .tag("cluster")
                .path_param(
                    "rpc",
                    "append, vote, snapshot, transfer-leader, probe or a leader request.",
                )
                .body(Model::inline(
                    ObjectBuilder::new().schema_type(SchemaType::AnyValue),
                ))
                .raw(
                    "application/json",
                    "The RPC's answer.",
                    Model::inline(ObjectBuilder::new().schema_type(SchemaType::AnyValue)),
                )
                .errors(&[NotFound]),
        )
        .get(
            weft_cluster::peer_stream::STREAM_PATH,
            peer_api::stream,
            Op::cluster_certificate(
                "peerStream",
                "A long-lived stream of raft RPCs between controllers",
            )
            .tag("cluster")
            .describe(
                "With `Connection: upgrade` and `Upgrade: weft-peer/1`, the connection \
                 switches to length-prefixed frames, each an RPC as `/fabric/v1/peer/{rpc}` \
                 takes it, answered in order. Appends, votes and leadership transfers use \
                 it.",
            )
            .switching_protocols("The connection now carries peer frames.")
            .errors(&[InvalidField]),
        )
}

/// An identity record, whose timestamps the bootstrap administrator (an admin `User`, not
/// an identity entity) does not have.
fn current_identity() -> Model {
    let mut fields = vec![Field::new("id", Shape::Text).required()];
    // Not `enrollment`: a pending enrollment token is for the admin to hand out.
    fields.extend(
        resources::Identities::SHOWN
            .iter()
            .filter(|f| f.name != "enrollment")
            .map(|f| f.required()),
    );
    fields.push(Field::new("createdAt", Shape::Text));
    fields.push(Field::new("updatedAt", Shape::Text));
    fields.push(schemas::VERSION_FIELD);
    Model::named(
        "CurrentIdentity",
        schemas::object(
            "The caller's identity (for the bootstrap administrator: an admin `User` without \
             timestamps or version).",
            &fields,
            false,
        ),
    )
}

fn api_session_record() -> Model {
    Model::named(
        "ApiSessionRecord",
        schemas::object(
            "A session as recorded after its login.",
            schemas::API_SESSION_RECORD,
            false,
        ),
    )
}

/// The controller's router: [`routes`] (and `GET /openapi.json`), the answers to unknown
/// routes and methods, the request-id middleware, the body limit of every request
/// ([`http::BodyLimit`]), and reading what a handler left of a body
/// ([`http::finish_body`]).
pub fn router(state: Shared) -> Router {
    let body_limit = http::BodyLimit(state.limits.max_body_bytes);
    routes()
        .finish()
        .router
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn(http::request_id))
        .layer(axum::middleware::from_fn(http::finish_body))
        .layer(axum::Extension(body_limit))
        .with_state(state)
}

/// The API document (what `GET /openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().finish().document
}

#[cfg(test)]
mod tests {
    //! The route table against its document: the same operations both ways, only the
    //! allow-list public, every answer and credential documented, every `$ref` resolved.

    use std::collections::BTreeSet;

    use serde_json::Value;
    use weft_api::describe::check_described;
    use weft_model::EntityKind;

    use super::*;

    /// The only operations that answer without a credential (`enroll` takes an
    /// enrollment token in its query; `authenticate` is how a credential is obtained).
    const PUBLIC: [(&str, &str); 5] = [
        ("POST", "/edge/client/v1/authenticate"),
        ("POST", "/edge/management/v1/authenticate"),
        ("POST", "/edge/client/v1/enroll"),
        ("GET", "/version"),
        ("GET", "/health-checks"),
    ];

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn document() -> Value {
        serde_json::to_value(openapi()).expect("the document serializes")
    }

    /// Every operation: (METHOD, path, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in METHODS {
                if let Some(op) = item.get(m) {
                    out.push((m.to_uppercase(), path.clone(), op.clone()));
                }
            }
        }
        out
    }

    /// The error codes an operation documents for `status` (through its shared response).
    fn codes(doc: &Value, op: &Value, status: u16) -> Vec<String> {
        let Some(r) = op["responses"].get(status.to_string()) else {
            return Vec::new();
        };
        let name = r["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/responses/"))
            .unwrap_or_else(|| panic!("error responses are shared: {r}"));
        let schema = &doc["components"]["responses"][name]["content"]["application/json"]["schema"];
        schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("codes")
            .iter()
            .map(|c| c.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn the_document_has_exactly_the_routes_of_the_router() {
        let finished = routes().finish();
        let added: Vec<(String, String)> = finished
            .added
            .iter()
            .map(|(m, p)| (m.to_string(), p.clone()))
            .collect();
        let added_set: BTreeSet<_> = added.iter().cloned().collect();
        assert_eq!(added.len(), added_set.len(), "a route was added twice");
        let doc = serde_json::to_value(&finished.document).unwrap();
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
        let undocumented: Vec<_> = added_set.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&added_set).collect();
        assert!(
            undocumented.is_empty(),
            "routes not in the document: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "operations without a route: {unrouted:?}"
        );
        assert!(added_set.contains(&("GET".into(), "/openapi.json".into())));
    }

    #[test]
    fn only_the_allow_list_is_public_and_the_admin_apis_need_an_admin() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut public = BTreeSet::new();
        for (method, path, op) in operations(&doc) {
            let auth = op["x-weft-auth"].as_str().unwrap_or_default();
            let security = op["security"].as_array().expect("explicit security");
            let here = format!("{method} {path}");
            if auth == "public" {
                public.insert((method.clone(), path.clone()));
                assert!(security.is_empty(), "{here}: public but has security");
            } else {
                assert!(!security.is_empty(), "{here}: no security");
            }
            let schemes: BTreeSet<String> = security
                .iter()
                .flat_map(|r| r.as_object().unwrap().keys().cloned())
                .collect();
            let roles: BTreeSet<String> = security
                .iter()
                .flat_map(|r| r.as_object().unwrap().values())
                .flat_map(|v| v.as_array().unwrap().clone())
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            let expected = if PUBLIC.contains(&(method.as_str(), path.as_str())) {
                "public"
            } else if path == "/fabric/v1/cluster/join"
                || path.starts_with("/fabric/v1/cluster/join/")
            {
                "join-token"
            } else if path.starts_with("/fabric/v1/peer/") || path == STREAM_PATH {
                "cluster-certificate"
            } else if path.starts_with("/edge/management/v1/")
                || path.starts_with("/fabric/v1/cluster/")
                || path == "/metrics"
            {
                "admin"
            } else {
                "session"
            };
            assert_eq!(auth, expected, "{here}");
            match auth {
                "admin" => {
                    assert_eq!(schemes, ["bearer".into(), "zt-session".into()].into());
                    assert_eq!(roles, ["admin".into()].into(), "{here}");
                }
                "session" => {
                    assert_eq!(schemes, ["bearer".into(), "zt-session".into()].into());
                    assert!(roles.is_empty(), "{here}");
                }
                "join-token" => assert_eq!(schemes, ["joinToken".into()].into()),
                "cluster-certificate" => {
                    assert_eq!(schemes, ["clusterCertificate".into()].into())
                }
                _ => {}
            }
        }
        for (m, p) in PUBLIC {
            assert!(
                public.contains(&(m.into(), p.into())),
                "{m} {p} is not public"
            );
        }
    }

    use weft_cluster::peer_stream::STREAM_PATH;

    #[test]
    fn every_operation_documents_its_answers() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for (method, path, op) in operations(&doc) {
            let here = format!("{method} {path}");
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "{here}: operationId {id} twice");
            let responses = op["responses"].as_object().unwrap();
            // Success is a 2xx, or the peer stream's switch of protocols.
            assert!(
                responses
                    .keys()
                    .any(|s| s.starts_with('2') || (path == STREAM_PATH && s == "101")),
                "{here}: no success answer"
            );
            assert!(
                codes(&doc, &op, 500).contains(&"UNHANDLED".into()),
                "{here}"
            );
            let auth = op["x-weft-auth"].as_str().unwrap();
            if auth != "public" {
                assert!(
                    codes(&doc, &op, 401).contains(&"UNAUTHORIZED".into()),
                    "{here}: no 401 UNAUTHORIZED"
                );
            }
            assert_eq!(
                codes(&doc, &op, 403).contains(&"FORBIDDEN".into()),
                auth == "admin",
                "{here}: 403 FORBIDDEN exactly for admin operations"
            );
            if op.get("requestBody").is_some() {
                assert!(codes(&doc, &op, 400).contains(&"COULD_NOT_PARSE_BODY".into()));
                assert!(codes(&doc, &op, 413).contains(&"REQUEST_ENTITY_TOO_LARGE".into()));
            }
            // Each documented code under the status the API answers it with.
            for (status, _) in responses {
                let status: u16 = status.parse().unwrap();
                if status < 400 {
                    continue;
                }
                for code in codes(&doc, &op, status) {
                    let c = ErrorCode::ALL
                        .iter()
                        .find(|c| c.as_str() == code)
                        .expect("a known code");
                    assert_eq!(c.status(), status, "{here}: {code}");
                }
            }
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = crate::openapi::path_params(&path).into_iter().collect();
            assert_eq!(declared, in_path, "{here}: path parameters");
        }
    }

    /// Every entity write documents `Idempotency-Key` (and 422), every change `If-Match`
    /// (and 412), and the answers showing one entity its `ETag`.
    #[test]
    fn entity_writes_document_their_headers() {
        let doc = document();
        let header_params = |op: &Value| -> BTreeSet<String> {
            op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "header")
                .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        let mut seen = 0;
        for (method, path, op) in operations(&doc) {
            let Some(rest) = path.strip_prefix("/edge/management/v1/") else {
                continue;
            };
            let kind = rest.split('/').next().unwrap_or_default();
            let is_entity = EntityKind::ALL.iter().any(|k| k.table() == kind)
                && (rest == kind || rest == format!("{kind}/{{id}}"));
            if !is_entity || method == "GET" {
                continue;
            }
            seen += 1;
            let here = format!("{method} {path}");
            let headers = header_params(&op);
            assert!(headers.contains("Idempotency-Key"), "{here}");
            assert!(
                codes(&doc, &op, 422).contains(&"IDEMPOTENCY_KEY_REUSED".into()),
                "{here}"
            );
            let changes = method != "POST";
            assert_eq!(headers.contains("If-Match"), changes, "{here}");
            assert_eq!(
                codes(&doc, &op, 412).contains(&"PRECONDITION_FAILED".into()),
                changes,
                "{here}"
            );
            let success = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(s, _)| s.starts_with('2'));
            let success_headers = &success.expect("success").1["headers"];
            assert!(
                success_headers.get("Idempotent-Replayed").is_some(),
                "{here}"
            );
            assert_eq!(
                success_headers.get("ETag").is_some(),
                method != "DELETE",
                "{here}"
            );
        }
        // Every kind: create and delete, and patch and put for the patchable ones.
        assert!(seen >= EntityKind::ALL.len() * 4, "{seen}");
    }

    /// Both logins document their rate limit: 429 `RATE_LIMITED` with `Retry-After`. No
    /// other operation answers it.
    #[test]
    fn only_authenticate_documents_the_login_rate_limit() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            let limited = codes(&doc, &op, 429).contains(&"RATE_LIMITED".into());
            assert_eq!(
                limited,
                path.ends_with("/authenticate"),
                "{method} {path}: 429 RATE_LIMITED"
            );
            if limited {
                let name = op["responses"]["429"]["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/responses/"))
                    .unwrap_or_default();
                assert!(
                    doc["components"]["responses"][name]["headers"]
                        .get("Retry-After")
                        .is_some(),
                    "{method} {path}: 429 without Retry-After"
                );
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn walk<'a>(v: &'a Value, refs: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        refs.push(r);
                    }
                    m.values().for_each(|v| walk(v, refs));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let doc = document();
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn the_controllers_wire_types_match_their_field_lists() {
        use cluster_api::{CaCert, JoinCertificate, JoinCertificateRequest, JoinRequest};
        let checks = [
            check_described::<CaCert>(),
            check_described::<JoinCertificate>(),
            check_described::<JoinCertificateRequest>(),
            check_described::<JoinRequest>(),
        ];
        let failures: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
