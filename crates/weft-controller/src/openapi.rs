//! The OpenAPI 3.1 document of the controller's HTTP API (`GET /openapi.json`), generated
//! from the code.
//!
//! [`Op`] describes one operation: who may call it ([`Auth`]), its query parameters, body
//! and answer, and the error codes it can answer. The codes become one response per
//! status through [`ErrorCode::status`], the same table that picks the status of a real
//! answer, so the document cannot give a code another status than the API does. Codes
//! that follow from the operation's shape are added here, once: its credential's (401,
//! 403), a body's (400 `COULD_NOT_PARSE_BODY`, 413), a read's or a write's cluster states
//! (421, 429, 503), and 500 `UNHANDLED` everywhere.
//!
//! [`ApiDoc`] assembles operations with the shared schemas and the security schemes.
//! Operations reach it only through [`crate::routes::Routes`], together with their route,
//! so the document and the router cannot drift. [`schemas`] owns the schemas themselves.

pub mod schemas;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::Tag;
use utoipa::openapi::{
    ComponentsBuilder, Content, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, Required,
};
use weft_api::ErrorCode;

pub use schemas::Model;

/// The credential an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// None: `authenticate`, `version` and `health-checks` only.
    Public,
    /// A session token of any identity.
    Session,
    /// A session token of an admin (403 `FORBIDDEN` for any other session).
    Admin,
    /// A join token (`Authorization: Bearer`): the calls of a controller that joins.
    JoinToken,
    /// A cluster-issued client certificate: raft RPCs between controllers.
    ClusterCertificate,
}

/// Security scheme names of the document.
const SESSION_HEADER_SCHEME: &str = "zt-session";
const BEARER_SCHEME: &str = "bearer";
const JOIN_TOKEN_SCHEME: &str = "joinToken";
const CERTIFICATE_SCHEME: &str = "clusterCertificate";
/// The role an admin session has (a security requirement's scope).
const ADMIN_ROLE: &str = "admin";

/// The values `If-Match` takes: `*`, or one version, bare or quoted.
const IF_MATCH_PATTERN: &str = r#"^(\*|[0-9]{1,19}|"[0-9]{1,19}")$"#;
/// The values `sort` takes: a field, then optionally a direction (any case).
const SORT_PATTERN: &str =
    r"^\s*(name|createdAt|updatedAt)(\s+([aA][sS][cC]|[dD][eE][sS][cC]))?\s*$";

/// The codes a read of replicated state can answer: a bad `consistency` (or paging)
/// value, and the cluster states of a linearizable read.
const READ_CODES: [ErrorCode; 4] = [
    ErrorCode::InvalidField,
    ErrorCode::ControllerNotInQuorum,
    ErrorCode::ClusterNoLeader,
    ErrorCode::Timeout,
];

/// The codes every raft write can answer.
const WRITE_CODES: [ErrorCode; 4] = [
    ErrorCode::ControllerNotInQuorum,
    ErrorCode::ClusterNoLeader,
    ErrorCode::Timeout,
    ErrorCode::ServerTooManyRequests,
];

impl Auth {
    /// The name of the `x-weft-auth` extension value.
    pub fn as_str(self) -> &'static str {
        match self {
            Auth::Public => "public",
            Auth::Session => "session",
            Auth::Admin => "admin",
            Auth::JoinToken => "join-token",
            Auth::ClusterCertificate => "cluster-certificate",
        }
    }

    /// What checking the credential can answer. A session or join token signed by a
    /// key this node has not applied yet makes it catch up first, which can answer the
    /// cluster states of a linearizable read.
    fn codes(self) -> Vec<ErrorCode> {
        let catch_up = [
            ErrorCode::ControllerNotInQuorum,
            ErrorCode::ClusterNoLeader,
            ErrorCode::Timeout,
        ];
        let mut codes = match self {
            Auth::Public => vec![],
            Auth::Session => vec![ErrorCode::Unauthorized, ErrorCode::InvalidAuth],
            Auth::Admin => vec![
                ErrorCode::Unauthorized,
                ErrorCode::InvalidAuth,
                ErrorCode::Forbidden,
            ],
            Auth::JoinToken => vec![ErrorCode::Unauthorized, ErrorCode::InvalidJoinToken],
            Auth::ClusterCertificate => return vec![ErrorCode::Unauthorized],
        };
        if self != Auth::Public {
            codes.extend(catch_up);
        }
        codes
    }

    /// The operation's security requirements (any one of them suffices).
    fn security(self) -> Vec<SecurityRequirement> {
        let session = |roles: &[&str]| {
            vec![
                SecurityRequirement::new(SESSION_HEADER_SCHEME, roles.to_vec()),
                SecurityRequirement::new(BEARER_SCHEME, roles.to_vec()),
            ]
        };
        let none: [&str; 0] = [];
        match self {
            Auth::Public => vec![],
            Auth::Session => session(&[]),
            Auth::Admin => session(&[ADMIN_ROLE]),
            Auth::JoinToken => vec![SecurityRequirement::new(JOIN_TOKEN_SCHEME, none)],
            Auth::ClusterCertificate => vec![SecurityRequirement::new(CERTIFICATE_SCHEME, none)],
        }
    }
}

/// What an operation answers on success.
#[derive(Clone)]
enum Success {
    /// `{data, meta}` with this status; `list`: `data` is a page of items.
    Json {
        status: u16,
        data: Model,
        list: bool,
    },
    /// A body of its own content type.
    Raw {
        content_type: &'static str,
        description: &'static str,
        schema: Model,
    },
    /// 101 Switching Protocols: the connection leaves HTTP.
    Upgrade { description: &'static str },
}

/// The description of one operation (see the module doc).
#[derive(Clone)]
pub struct Op {
    auth: Auth,
    id: String,
    summary: String,
    description: Option<String>,
    tag: Option<String>,
    query: Vec<Parameter>,
    /// Request headers it reads (`If-Match`, `Idempotency-Key`).
    headers: Vec<Parameter>,
    /// Headers of its success answer besides `X-Request-Id` (name, description, type).
    response_headers: Vec<(&'static str, &'static str, Type)>,
    path_docs: Vec<(String, String)>,
    body: Option<(Model, bool)>,
    success: Option<Success>,
    errors: Vec<ErrorCode>,
    read: bool,
}

impl Op {
    fn new(auth: Auth, id: impl Into<String>, summary: impl Into<String>) -> Op {
        Op {
            auth,
            id: id.into(),
            summary: summary.into(),
            description: None,
            tag: None,
            query: Vec::new(),
            headers: Vec::new(),
            response_headers: Vec::new(),
            path_docs: Vec::new(),
            body: None,
            success: None,
            errors: Vec::new(),
            read: false,
        }
    }

    /// An operation anyone may call (keep this list short: see [`Auth::Public`]).
    pub fn public(id: impl Into<String>, summary: impl Into<String>) -> Op {
        Op::new(Auth::Public, id, summary)
    }

    /// An operation for any session.
    pub fn session(id: impl Into<String>, summary: impl Into<String>) -> Op {
        Op::new(Auth::Session, id, summary)
    }

    /// An operation for admin sessions.
    pub fn admin(id: impl Into<String>, summary: impl Into<String>) -> Op {
        Op::new(Auth::Admin, id, summary)
    }

    /// An operation authenticated by a join token.
    pub fn join_token(id: impl Into<String>, summary: impl Into<String>) -> Op {
        Op::new(Auth::JoinToken, id, summary)
    }

    /// An operation authenticated by a cluster client certificate.
    pub fn cluster_certificate(id: impl Into<String>, summary: impl Into<String>) -> Op {
        Op::new(Auth::ClusterCertificate, id, summary)
    }

    /// Groups it under `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Op {
        self.tag = Some(tag.into());
        self
    }

    /// A longer description (Markdown); each call adds a paragraph.
    pub fn describe(mut self, text: impl Into<String>) -> Op {
        let text = text.into();
        self.description = Some(match self.description.take() {
            Some(before) => format!("{before}\n\n{text}"),
            None => text,
        });
        self
    }

    /// Describes the path parameter `{name}` (each one is documented anyway).
    pub fn path_param(mut self, name: &str, doc: &str) -> Op {
        self.path_docs.push((name.into(), doc.into()));
        self
    }

    /// A query parameter of type string; `choices`, if any, are its only values.
    pub fn query(mut self, name: &str, required: bool, doc: &str, choices: &[&str]) -> Op {
        let mut schema = ObjectBuilder::new().schema_type(Type::String);
        if !choices.is_empty() {
            schema = schema.enum_values(Some(choices.iter().copied()));
        }
        self.query
            .push(query_param(name, required, doc, schema.into()));
        self
    }

    /// A required JSON body (400 `COULD_NOT_PARSE_BODY` when it is not one, 413 when too
    /// large).
    pub fn body(mut self, model: Model) -> Op {
        self.body = Some((model, true));
        self.errors(&[
            ErrorCode::CouldNotParseBody,
            ErrorCode::RequestEntityTooLarge,
        ])
    }

    /// A JSON body that may be left out.
    pub fn optional_body(self, model: Model) -> Op {
        let mut op = self.body(model);
        if let Some((_, required)) = op.body.as_mut() {
            *required = false;
        }
        op
    }

    /// Answers 200 `{data: <model>}`.
    pub fn ok(mut self, data: Model) -> Op {
        self.success = Some(Success::Json {
            status: 200,
            data,
            list: false,
        });
        self
    }

    /// Answers 201 `{data: <model>}`.
    pub fn created(mut self, data: Model) -> Op {
        self.success = Some(Success::Json {
            status: 201,
            data,
            list: false,
        });
        self
    }

    /// Answers 200 `{data: [<item>...], meta: {pagination}}`.
    pub fn list(mut self, item: Model) -> Op {
        self.success = Some(Success::Json {
            status: 200,
            data: item,
            list: true,
        });
        self
    }

    /// Answers 200 `{data: {}}`.
    pub fn done(self) -> Op {
        self.ok(Model::empty())
    }

    /// Answers 200 with a body of its own content type.
    pub fn raw(
        mut self,
        content_type: &'static str,
        description: &'static str,
        schema: Model,
    ) -> Op {
        self.success = Some(Success::Raw {
            content_type,
            description,
            schema,
        });
        self
    }

    /// Answers 101 Switching Protocols: the connection continues in another protocol.
    pub fn switching_protocols(mut self, description: &'static str) -> Op {
        self.success = Some(Success::Upgrade { description });
        self
    }

    /// A read of replicated state: `consistency`, `X-Weft-Stale`, and its codes.
    pub fn read(mut self) -> Op {
        if !self.read {
            self.read = true;
            self.query.push(query_param(
                "consistency",
                false,
                "`local` (default: this node's state, `X-Weft-Stale: true` when it is not \
                 in quorum) or `linearizable`.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["local", "linearizable"]))
                    .into(),
            ));
        }
        self.errors(&READ_CODES)
    }

    /// A paged read: `limit` and `offset`.
    pub fn paged(self) -> Op {
        let mut op = self.read();
        op.query.push(query_param(
            "limit",
            false,
            "Page size, 1-500 (default 10).",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(crate::http::MAX_LIMIT))
                .into(),
        ));
        op.query.push(query_param(
            "offset",
            false,
            "How many matches to skip (default 0).",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .into(),
        ));
        op
    }

    /// A `filter` (OpenZiti's filter language, a subset; see the README).
    pub fn filtered(mut self) -> Op {
        self.query.push(query_param(
            "filter",
            false,
            "E.g. `name = \"web\" and tags.env = \"prod\"`.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .pattern(Some(r"\S"))
                .into(),
        ));
        self.errors(&[ErrorCode::InvalidFilter])
    }

    /// A `sort` (`name`, `createdAt` or `updatedAt`, then `asc` or `desc`).
    pub fn sorted(mut self) -> Op {
        self.query.push(query_param(
            "sort",
            false,
            "E.g. `createdAt desc` (default `name asc`).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(SORT_PATTERN))
                .into(),
        ));
        self.errors(&[ErrorCode::InvalidFilter])
    }

    /// A write that takes `Idempotency-Key` (exactly once across retries): 400 for a bad
    /// key, 422 for a key used with another request, `Idempotent-Replayed` on a replay.
    pub fn idempotent(mut self) -> Op {
        self.headers.push(header_param(
            crate::writes::IDEMPOTENCY_KEY,
            &format!(
                "1-{max} visible ASCII characters naming this request, so that retrying it \
                 (on any controller, within {mins} minutes) answers the first result instead \
                 of acting twice. Scoped to the caller. The same key with another method, \
                 path or body is 422 `IDEMPOTENCY_KEY_REUSED`. A replayed answer (success or \
                 error) has the first one's status and body, and `Idempotent-Replayed: true`.",
                max = weft_api::IDEMPOTENCY_KEY_MAX,
                mins = weft_api::IDEMPOTENCY_TTL_SECS / 60,
            ),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(weft_api::IDEMPOTENCY_KEY_MAX))
                .pattern(Some("^[!-~]+$"))
                .into(),
        ));
        self.response_headers.push((
            crate::writes::IDEMPOTENT_REPLAYED,
            "`true` when this is the stored answer to an earlier request with the same \
             `Idempotency-Key` (nothing was done this time).",
            Type::String,
        ));
        self.errors(&[ErrorCode::InvalidField, ErrorCode::IdempotencyKeyReused])
    }

    /// A change that takes `If-Match` (compare-and-set on the entity's `version`): 400 for
    /// a bad value, 412 on a mismatch.
    pub fn if_match(mut self) -> Op {
        self.headers.push(header_param(
            crate::writes::IF_MATCH,
            "The `version` the entity must have for the change to happen (`3` or `\"3\"`, as \
             `ETag` shows it; `*`: any). Checked atomically with the change; a mismatch is \
             412 `PRECONDITION_FAILED` with the current version in `error.data.version`, and \
             changes nothing.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(IF_MATCH_PATTERN))
                .into(),
        ));
        self.errors(&[ErrorCode::InvalidField, ErrorCode::PreconditionFailed])
    }

    /// Its success answer shows one entity, whose version is also `ETag`.
    pub fn etag(mut self) -> Op {
        self.response_headers.push((
            crate::writes::ETAG,
            "The entity's `version` as an entity tag (`\"3\"`), for `If-Match`.",
            Type::String,
        ));
        self
    }

    /// A raft write: its cluster states (421, 503, 429).
    pub fn write(self) -> Op {
        self.errors(&WRITE_CODES)
    }

    /// More codes it can answer.
    pub fn errors(mut self, codes: &[ErrorCode]) -> Op {
        for c in codes {
            if !self.errors.contains(c) {
                self.errors.push(*c);
            }
        }
        self
    }

    /// Every code it can answer, in the order of [`ErrorCode::ALL`].
    fn all_codes(&self) -> Vec<ErrorCode> {
        let mut mine = self.errors.clone();
        mine.extend(self.auth.codes());
        mine.push(ErrorCode::Unhandled);
        ErrorCode::ALL
            .iter()
            .copied()
            .filter(|c| mine.contains(c))
            .collect()
    }
}

fn header_param(name: &str, doc: &str, schema: Schema) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(doc))
        .schema(Some(schema))
        .build()
}

fn query_param(name: &str, required: bool, doc: &str, schema: Schema) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(doc))
        .schema(Some(schema))
        .build()
}

/// The `{name}` parameters of a route path, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn header(doc: &str, t: Type) -> Header {
    let mut h = Header::new(ObjectBuilder::new().schema_type(t));
    h.description = Some(doc.into());
    h
}

fn request_id_header() -> Header {
    header(
        "The request's id (equal to `error.requestId`).",
        Type::String,
    )
}

/// The name of the shared response for these codes of one status, e.g.
/// `401-INVALID_AUTH-UNAUTHORIZED`.
fn error_response_name(status: u16, codes: &[ErrorCode]) -> String {
    let mut name = status.to_string();
    for c in codes {
        name.push('-');
        name.push_str(c.as_str());
    }
    name
}

/// The error response of `status` whose `error.code` is one of `codes`.
fn error_response(status: u16, codes: &[ErrorCode]) -> Response {
    let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut r = ResponseBuilder::new()
        .description(format!("{reason}: {}.", names.join(", ")))
        .header("X-Request-Id", request_id_header())
        .content(
            "application/json",
            Content::new(Some(schemas::error_envelope(codes))),
        );
    if status == 401 {
        r = r.header(
            "WWW-Authenticate",
            header("How to authenticate.", Type::String),
        );
    }
    if codes.iter().any(|c| c.retry_after_secs().is_some()) {
        r = r.header("Retry-After", header("Seconds to wait.", Type::Integer));
    }
    r.build()
}

/// A misuse of the document builder: a programming error found when the route table is
/// built (at start-up and by the tests), like axum's own panic on overlapping routes.
fn misuse(what: String) -> ! {
    panic!("API document: {what}")
}

/// The document being assembled (see the module doc).
#[derive(Default)]
pub struct ApiDoc {
    paths: Paths,
    schemas: BTreeMap<String, Schema>,
    responses: BTreeMap<String, Response>,
    operations: BTreeSet<(String, String)>,
    ids: BTreeSet<String>,
}

impl ApiDoc {
    /// Adds the operation `method path`.
    ///
    /// # Panics
    /// On a misuse: the same method and path or operation id twice, no success answer, or
    /// two different schemas under one name.
    pub fn add(&mut self, method: HttpMethod, method_name: &str, path: &str, op: Op) {
        if !self
            .operations
            .insert((method_name.to_owned(), path.to_owned()))
        {
            misuse(format!("{method_name} {path} is documented twice"));
        }
        if !self.ids.insert(op.id.clone()) {
            misuse(format!("operation id {} is used twice", op.id));
        }
        let codes = op.all_codes();
        let Some(success) = op.success else {
            misuse(format!("{method_name} {path} documents no success answer"));
        };
        let mut b = OperationBuilder::new()
            .operation_id(Some(op.id))
            .summary(Some(op.summary))
            .description(op.description)
            .securities(Some(op.auth.security()))
            .extensions(Some(Extensions::from_iter([(
                "x-weft-auth",
                op.auth.as_str(),
            )])));
        if let Some(tag) = op.tag {
            b = b.tag(tag);
        }
        for name in path_params(path) {
            let doc = op
                .path_docs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| "Identifier.".into());
            b = b.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(doc))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        for p in op.query.into_iter().chain(op.headers) {
            b = b.parameter(p);
        }
        let mut components = Vec::new();
        if let Some((model, required)) = op.body {
            components.extend(model.components);
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(if required {
                        Required::True
                    } else {
                        Required::False
                    }))
                    .content("application/json", Content::new(Some(model.schema)))
                    .build(),
            ));
        }
        let (status, response) = match success {
            Success::Json { status, data, list } => {
                components.extend(data.components);
                let mut r = ResponseBuilder::new()
                    .description(if status == 201 {
                        "Created."
                    } else {
                        "Success."
                    })
                    .header("X-Request-Id", request_id_header())
                    .content(
                        "application/json",
                        Content::new(Some(schemas::envelope(data.schema, list))),
                    );
                for (name, doc, t) in &op.response_headers {
                    r = r.header(*name, header(doc, t.clone()));
                }
                if op.read {
                    r = r.header(
                        weft_api::STALE_HEADER,
                        header(
                            "`true` when this node is not in quorum: the data may be stale.",
                            Type::String,
                        ),
                    );
                }
                (status, r)
            }
            Success::Raw {
                content_type,
                description,
                schema,
            } => {
                components.extend(schema.components);
                let r = ResponseBuilder::new()
                    .description(description)
                    .header("X-Request-Id", request_id_header())
                    .content(content_type, Content::new(Some(schema.schema)));
                (200, r)
            }
            Success::Upgrade { description } => (
                101,
                ResponseBuilder::new()
                    .description(description)
                    .header("Upgrade", header("The protocol switched to.", Type::String)),
            ),
        };
        b = b.response(status.to_string(), response);
        let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
        for code in codes {
            by_status.entry(code.status()).or_default().push(code);
        }
        for (status, codes) in by_status {
            let name = error_response_name(status, &codes);
            self.responses
                .entry(name.clone())
                .or_insert_with(|| error_response(status, &codes));
            b = b.response(status.to_string(), Ref::from_response_name(name));
        }
        for (name, schema) in components {
            self.schema(name, schema);
        }
        self.paths.add_path_operation(path, vec![method], b.build());
    }

    fn schema(&mut self, name: String, schema: Schema) {
        match self.schemas.get(&name) {
            Some(known) if *known != schema => {
                misuse(format!("two different schemas are named {name}"))
            }
            Some(_) => {}
            None => {
                self.schemas.insert(name, schema);
            }
        }
    }

    /// The finished document.
    pub fn build(mut self) -> OpenApi {
        for (name, schema) in schemas::shared() {
            self.schema(name, schema);
        }
        let mut components = ComponentsBuilder::new()
            .security_scheme(
                SESSION_HEADER_SCHEME,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    weft_api::SESSION_HEADER,
                    "A session token from `authenticate` (OpenZiti's header).",
                ))),
            )
            .security_scheme(
                BEARER_SCHEME,
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("weft session token")
                        .description(Some("A session token from `authenticate`."))
                        .build(),
                ),
            )
            .security_scheme(
                JOIN_TOKEN_SCHEME,
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("weft join token")
                        .description(Some(
                            "A join token from `POST /fabric/v1/cluster/join-token`, sent by a \
                             controller that joins.",
                        ))
                        .build(),
                ),
            )
            .security_scheme(
                CERTIFICATE_SCHEME,
                SecurityScheme::MutualTls {
                    description: Some(
                        "A client certificate issued by the cluster CA to a controller.".into(),
                    ),
                    extensions: None,
                },
            );
        for (name, schema) in self.schemas {
            components = components.schema(name, schema);
        }
        for (name, response) in self.responses {
            components = components.response(name, response);
        }
        let info = InfoBuilder::new()
            .title("weft controller API")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(
                "Management (`/edge/management/v1`, admins), client (`/edge/client/v1`, any \
                 identity) and cluster (`/fabric/v1`) APIs of a weft controller. Every \
                 operation needs a credential but `authenticate`, `version` and \
                 `health-checks`; `x-weft-auth` names the one each operation takes. Success \
                 is `{data, meta}`, failure `{error: {code, message, cause?, data?, \
                 requestId}, meta}`; each error code has exactly one status.\n\nLimits \
                 (flags of `weft controller run`): a request body beyond `--max-body-bytes` \
                 is 413 `REQUEST_ENTITY_TOO_LARGE`; a request head beyond \
                 `--max-header-bytes` or with more than 100 headers is answered `431 Request \
                 Header Fields Too Large` with an empty body (before the request reaches the \
                 API: no envelope, no request id) and its connection closed; a connection \
                 beyond `--max-connections` (or `--max-connections-per-ip`) is closed \
                 without an answer; too many failed logins from one address make \
                 `authenticate` 429 `RATE_LIMITED`.",
            ))
            .build();
        let tags: BTreeSet<String> = self
            .paths
            .paths
            .values()
            .flat_map(|item| {
                [&item.get, &item.post, &item.patch, &item.delete, &item.put]
                    .into_iter()
                    .flatten()
                    .flat_map(|o| o.tags.clone().unwrap_or_default())
            })
            .collect();
        OpenApiBuilder::new()
            .info(info)
            .paths(self.paths)
            .components(Some(components.build()))
            .security(Some(Auth::Session.security()))
            .tags(Some(tags.into_iter().map(Tag::new)))
            .build()
    }
}

#[cfg(test)]
mod tests {
    //! The document's patterns against the server's own checks: a value the document
    //! allows is never refused (found by schemathesis, whose generated values the server
    //! refused where the document gave no constraint), and the usual mistakes are outside
    //! the document too.

    use super::schemas::{ATTRIBUTE_PATTERN, NAME_PATTERN, NODE_ID_PATTERN, ROLE_PATTERN};
    use super::*;

    fn regex(pattern: &str) -> regex_lite::Regex {
        regex_lite::Regex::new(pattern).expect("a valid pattern")
    }

    /// Checks `pattern` (and `max_chars`) against `server` on `allowed` and `refused`.
    /// Every allowed value must be one the server accepts and every refused one one it
    /// refuses: the entity records show stored values, which must fit the same schema,
    /// so a pattern stricter than the server would make its own answers wrong.
    fn check(
        what: &str,
        pattern: &str,
        max_chars: usize,
        server: impl Fn(&str) -> bool,
        allowed: &[&str],
        refused: &[&str],
    ) {
        let re = regex(pattern);
        let documented = |v: &str| re.is_match(v) && v.chars().count() <= max_chars;
        for v in allowed.iter().chain(refused) {
            if documented(v) {
                assert!(
                    server(v),
                    "{what}: the document allows {v:?}, the server refuses it"
                );
            }
        }
        for v in allowed {
            assert!(server(v), "{what}: the server refuses {v:?}");
        }
        for v in allowed {
            assert!(documented(v), "{what}: the document refuses {v:?}");
        }
        for v in refused {
            assert!(!documented(v), "{what}: the document allows {v:?}");
        }
    }

    #[test]
    fn documented_patterns_allow_only_what_the_server_accepts() {
        check(
            "If-Match",
            IF_MATCH_PATTERN,
            usize::MAX,
            |v| crate::writes::parse_if_match(v).is_ok(),
            &["*", "3", "\"3\"", "0", "1234567890123456789"],
            &[
                "",
                "\"\"",
                "W/\"3\"",
                "3, 4",
                "abc",
                "-1",
                "99999999999999999999",
            ],
        );
        check(
            "sort",
            SORT_PATTERN,
            usize::MAX,
            |v| weft_model::filter::Sort::parse(v).is_ok(),
            &["name", "createdAt desc", "updatedAt ASC", " name  asc "],
            &["", "  ", "size", "name up", "name asc desc", "Name"],
        );
        check(
            "filter",
            r"\S",
            usize::MAX,
            |v| weft_model::filter::Filter::parse(v).is_ok(),
            &["name = \"web\""],
            &["", "   "],
        );
        let long = "x".repeat(255);
        let too_long = "x".repeat(256);
        check(
            "name",
            NAME_PATTERN,
            weft_model::validate::MAX_NAME_LEN,
            |v| weft_model::validate::name("name", v).is_ok(),
            &["web", " a ", "caf\u{e9}", "a b", &long],
            &[
                "", "   ", "a\u{7}b", "a\nb", "a\u{85}b", "\u{7f}", &too_long,
            ],
        );
        let one = |v: &str| vec![v.to_owned()];
        check(
            "role attribute",
            ATTRIBUTE_PATTERN,
            weft_model::validate::MAX_NAME_LEN,
            |v| weft_model::validate::role_attributes("a", &one(v)).is_ok(),
            &["web", "a b", "caf\u{e9}", "x#y", " a", "  #a", " @", &long],
            &["", " ", "   ", "#web", "@id", "a\u{7}", " \u{7}", &too_long],
        );
        let long_role = format!("#{long}");
        let too_long_role = format!("#{too_long}");
        check(
            "role",
            ROLE_PATTERN,
            weft_model::validate::MAX_NAME_LEN + 1,
            |v| weft_model::validate::roles("r", &one(v)).is_ok(),
            &["#all", "#web", "@Ab3", "# a", &long_role],
            &["", "web", "#", "@", "# ", "#a\u{7}", &too_long_role],
        );
        check(
            "node id",
            NODE_ID_PATTERN,
            usize::MAX,
            |v| crate::cluster_api::parse_node_id("id", v).is_ok(),
            &["1", "7186026146827377", "1234567890123456789"],
            &["", "0", "-1", "abc", "1.5", "12345678901234567890"],
        );
    }
}
