//! `weft edge create <entity>` and `weft edge update`: their flags (named as in OpenZiti's
//! `ziti edge create ...`) and how they map to request bodies.
//!
//! The mapping is pure: flags become a [`Draft`], a JSON body in which references to
//! other entities still hold what the user typed (a name or an id), listed in
//! [`Draft::refs`]; the command then resolves those to ids over the API and sends the
//! body. Only flags the user gave become fields, so the controller's defaults apply to
//! the rest.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use crate::errors::usage;
use crate::kinds::Kind;

/// A reference from a body field to another kind's entities, by name or id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// The field is a name or id (or a list of them) of the collection's entities.
    Plain,
    /// The field is a role list; its `@name` entries name the collection's entities.
    Roles,
}

/// A field of a [`Draft`] to resolve before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The body field (top level).
    pub field: &'static str,
    /// The collection its values name.
    pub collection: &'static str,
    /// How the field names them.
    pub kind: RefKind,
}

/// A request body built from flags, before names are resolved to ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// The body.
    pub body: Map<String, Value>,
    /// Fields that name other entities.
    pub refs: Vec<Ref>,
}

impl Draft {
    fn set(&mut self, field: &str, v: impl Into<Value>) {
        self.body.insert(field.to_owned(), v.into());
    }

    fn set_opt<T: Into<Value>>(&mut self, field: &str, v: Option<T>) {
        if let Some(v) = v {
            self.set(field, v);
        }
    }

    fn refer(&mut self, field: &'static str, collection: &'static str, kind: RefKind) {
        if self.body.contains_key(field) {
            self.refs.push(Ref {
                field,
                collection,
                kind,
            });
        }
    }

    /// Adds the role lists among `fields` as [`RefKind::Roles`] references.
    fn refer_roles(&mut self) {
        for (field, coll) in [
            ("identityRoles", "identities"),
            ("serviceRoles", "services"),
            ("edgeRouterRoles", "edge-routers"),
        ] {
            self.refer(field, coll, RefKind::Roles);
        }
    }
}

/// Flags every `create` takes.
#[derive(Args, Debug, Clone, Default)]
pub struct CreateCommon {
    /// Tags as a JSON object, e.g. '{"env":"prod"}'.
    #[arg(long, value_name = "JSON")]
    pub tags_json: Option<String>,
    /// Create many: FILE holds a JSON array of request bodies, or one body per line
    /// (`-`: standard input). Each is sent with its own idempotency key, so running the
    /// same file again after a failure is safe.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
}

/// `--role-attributes a,b` and the like: a comma-separated list (an empty value clears it).
fn list(v: &Option<Vec<String>>) -> Option<Value> {
    v.as_ref().map(|items| {
        Value::Array(
            items
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        )
    })
}

/// A JSON flag's value, which must parse (and, for `object`, be an object).
fn json_flag(flag: &str, text: &str, object: bool) -> anyhow::Result<Value> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| usage(format!("--{flag}: not valid JSON: {e}")))?;
    if object && !v.is_object() {
        return Err(usage(format!("--{flag}: must be a JSON object")));
    }
    Ok(v)
}

fn start(name: &Option<String>, common: &CreateCommon) -> anyhow::Result<Draft> {
    let mut d = Draft::default();
    d.set_opt("name", name.clone());
    if let Some(t) = &common.tags_json {
        d.set("tags", json_flag("tags-json", t, true)?);
    }
    Ok(d)
}

/// `--semantic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum Semantic {
    /// Every role must match.
    AllOf,
    /// One role is enough.
    AnyOf,
}

impl Semantic {
    fn wire(self) -> &'static str {
        match self {
            Semantic::AllOf => "AllOf",
            Semantic::AnyOf => "AnyOf",
        }
    }
}

/// A service policy's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum PolicyType {
    /// May dial (use) the services.
    Dial,
    /// May bind (host) the services.
    Bind,
}

/// An identity's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum IdentityType {
    /// A person.
    User,
    /// A machine.
    Device,
    /// An application.
    Service,
    /// A router's identity.
    Router,
}

/// `ON` / `OFF` (OpenZiti's `--encryption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// The enrollment methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum EnrollMethod {
    /// One-time token for an identity.
    Ott,
    /// One-time token for an edge router.
    Erott,
}

/// The authenticator methods one can create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum AuthMethod {
    /// Username and password.
    Updb,
}

/// `weft edge create <entity>`.
#[derive(Subcommand, Debug)]
pub enum CreateCmd {
    /// Create a service: `create service web --role-attributes eng --configs intercept`.
    Service(CreateService),
    /// Create an identity with a one-time-token enrollment (its JWT goes to
    /// --jwt-output-file).
    Identity(CreateIdentity),
    /// Create an edge router with its enrollment (JWT to --jwt-output-file).
    EdgeRouter(CreateEdgeRouter),
    /// Create a service policy: `create service-policy p Dial --identity-roles '#eng'
    /// --service-roles '@web'`.
    ServicePolicy(CreateServicePolicy),
    /// Create an edge router policy.
    EdgeRouterPolicy(CreateEdgeRouterPolicy),
    /// Create a service edge router policy.
    ServiceEdgeRouterPolicy(CreateServiceEdgeRouterPolicy),
    /// Create a config type: `create config-type t --schema schema.json`.
    ConfigType(CreateConfigType),
    /// Create a config: `create config c TYPE '{"k":"v"}'`.
    Config(CreateConfig),
    /// Create a password (updb) authenticator: `create authenticator updb IDENTITY USERNAME`.
    Authenticator(CreateAuthenticator),
    /// Create an enrollment: `create enrollment ott IDENTITY --jwt-output-file f.jwt`.
    Enrollment(CreateEnrollment),
    /// Create an auth policy: `create auth-policy p --primary-updb-allowed false`.
    AuthPolicy(CreateAuthPolicy),
}

/// `create service`.
#[derive(Args, Debug)]
pub struct CreateService {
    /// The service's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// Role attributes, comma-separated.
    #[arg(long, short = 'a', value_delimiter = ',', value_name = "ATTRS")]
    pub role_attributes: Option<Vec<String>>,
    /// Configs (names or ids), comma-separated.
    #[arg(long, short = 'c', value_delimiter = ',', value_name = "CONFIGS")]
    pub configs: Option<Vec<String>>,
    /// End-to-end encryption required (default ON).
    #[arg(long, short = 'e', value_enum, ignore_case = true)]
    pub encryption: Option<OnOff>,
    /// How routers pick a terminator (default smartrouting).
    #[arg(long)]
    pub terminator_strategy: Option<String>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create identity`.
#[derive(Args, Debug)]
pub struct CreateIdentity {
    /// The identity's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// Role attributes, comma-separated.
    #[arg(long, short = 'a', value_delimiter = ',', value_name = "ATTRS")]
    pub role_attributes: Option<Vec<String>>,
    /// Make it an admin (may use the management API).
    #[arg(long, short = 'A')]
    pub admin: bool,
    /// Its type (default User).
    #[arg(long = "type", value_enum, ignore_case = true)]
    pub identity_type: Option<IdentityType>,
    /// Its auth policy (name or id; default `default`).
    #[arg(long, short = 'P', value_name = "POLICY")]
    pub auth_policy: Option<String>,
    /// Where to write the enrollment JWT (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub jwt_output_file: Option<PathBuf>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create edge-router`.
#[derive(Args, Debug)]
pub struct CreateEdgeRouter {
    /// The router's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// Role attributes, comma-separated.
    #[arg(long, short = 'a', value_delimiter = ',', value_name = "ATTRS")]
    pub role_attributes: Option<Vec<String>>,
    /// The router also intercepts traffic (tunneler).
    #[arg(long, short = 't')]
    pub tunneler_enabled: bool,
    /// Where to write the enrollment JWT (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub jwt_output_file: Option<PathBuf>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create service-policy`.
#[derive(Args, Debug)]
pub struct CreateServicePolicy {
    /// The policy's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// Dial or Bind.
    #[arg(
        value_enum,
        ignore_case = true,
        required_unless_present = "from_file",
        conflicts_with = "from_file"
    )]
    pub policy_type: Option<PolicyType>,
    /// Identity roles (`#attribute`, `@name-or-id`, `#all`), comma-separated.
    #[arg(long, short = 'i', value_delimiter = ',', value_name = "ROLES")]
    pub identity_roles: Option<Vec<String>>,
    /// Service roles, comma-separated.
    #[arg(long, short = 's', value_delimiter = ',', value_name = "ROLES")]
    pub service_roles: Option<Vec<String>>,
    /// AllOf (default) or AnyOf.
    #[arg(long, value_enum, ignore_case = true)]
    pub semantic: Option<Semantic>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create edge-router-policy`.
#[derive(Args, Debug)]
pub struct CreateEdgeRouterPolicy {
    /// The policy's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// Edge router roles, comma-separated.
    #[arg(long, short = 'e', value_delimiter = ',', value_name = "ROLES")]
    pub edge_router_roles: Option<Vec<String>>,
    /// Identity roles, comma-separated.
    #[arg(long, short = 'i', value_delimiter = ',', value_name = "ROLES")]
    pub identity_roles: Option<Vec<String>>,
    /// AllOf (default) or AnyOf.
    #[arg(long, value_enum, ignore_case = true)]
    pub semantic: Option<Semantic>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create service-edge-router-policy`.
#[derive(Args, Debug)]
pub struct CreateServiceEdgeRouterPolicy {
    /// The policy's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// Edge router roles, comma-separated.
    #[arg(long, short = 'e', value_delimiter = ',', value_name = "ROLES")]
    pub edge_router_roles: Option<Vec<String>>,
    /// Service roles, comma-separated.
    #[arg(long, short = 's', value_delimiter = ',', value_name = "ROLES")]
    pub service_roles: Option<Vec<String>>,
    /// AllOf (default) or AnyOf.
    #[arg(long, value_enum, ignore_case = true)]
    pub semantic: Option<Semantic>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create config-type`.
#[derive(Args, Debug)]
pub struct CreateConfigType {
    /// The type's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// A file holding the JSON Schema of its configs (default: any object).
    #[arg(long, short = 's', value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create config`.
#[derive(Args, Debug)]
pub struct CreateConfig {
    /// The config's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// Its config type (name or id).
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub config_type: Option<String>,
    /// The config itself, a JSON object valid under the type's schema.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub data_json: Option<String>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create authenticator`.
#[derive(Args, Debug)]
pub struct CreateAuthenticator {
    /// The method (updb: username and password).
    #[arg(
        value_enum,
        required_unless_present = "from_file",
        conflicts_with = "from_file"
    )]
    pub method: Option<AuthMethod>,
    /// The identity it logs in as (name or id).
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub identity: Option<String>,
    /// The username.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub username: Option<String>,
    /// The password (at least 8 characters; prompted for when omitted on a terminal).
    #[arg(long, short = 'p', env = "WEFT_NEW_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create enrollment`.
#[derive(Args, Debug)]
pub struct CreateEnrollment {
    /// ott (an identity) or erott (an edge router).
    #[arg(
        value_enum,
        required_unless_present = "from_file",
        conflicts_with = "from_file"
    )]
    pub method: Option<EnrollMethod>,
    /// The identity or edge router to enroll (name or id).
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub target: Option<String>,
    /// When the token expires (RFC 3339; default in 24 hours).
    #[arg(long, conflicts_with = "duration")]
    pub expires_at: Option<String>,
    /// How many minutes the token is valid (instead of --expires-at).
    #[arg(long, short = 'd', value_name = "MINUTES")]
    pub duration: Option<u32>,
    /// Where to write the JWT (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub jwt_output_file: Option<PathBuf>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `create auth-policy`.
#[derive(Args, Debug)]
pub struct CreateAuthPolicy {
    /// The policy's name.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub name: Option<String>,
    /// Whether identities may log in with their enrolled certificate (default true).
    #[arg(long, value_name = "BOOL")]
    pub primary_cert_allowed: Option<bool>,
    /// Whether identities may log in with a username and password (default true).
    #[arg(long, value_name = "BOOL")]
    pub primary_updb_allowed: Option<bool>,
    /// `--tags-json`, `--from-file`.
    #[command(flatten)]
    pub common: CreateCommon,
}

impl CreateCmd {
    /// The collection this command creates in.
    pub fn collection(&self) -> &'static str {
        match self {
            CreateCmd::Service(_) => "services",
            CreateCmd::Identity(_) => "identities",
            CreateCmd::EdgeRouter(_) => "edge-routers",
            CreateCmd::ServicePolicy(_) => "service-policies",
            CreateCmd::EdgeRouterPolicy(_) => "edge-router-policies",
            CreateCmd::ServiceEdgeRouterPolicy(_) => "service-edge-router-policies",
            CreateCmd::ConfigType(_) => "config-types",
            CreateCmd::Config(_) => "configs",
            CreateCmd::Authenticator(_) => "authenticators",
            CreateCmd::Enrollment(_) => "enrollments",
            CreateCmd::AuthPolicy(_) => "auth-policies",
        }
    }

    /// The flags every create has.
    pub fn common(&self) -> &CreateCommon {
        match self {
            CreateCmd::Service(a) => &a.common,
            CreateCmd::Identity(a) => &a.common,
            CreateCmd::EdgeRouter(a) => &a.common,
            CreateCmd::ServicePolicy(a) => &a.common,
            CreateCmd::EdgeRouterPolicy(a) => &a.common,
            CreateCmd::ServiceEdgeRouterPolicy(a) => &a.common,
            CreateCmd::ConfigType(a) => &a.common,
            CreateCmd::Config(a) => &a.common,
            CreateCmd::Authenticator(a) => &a.common,
            CreateCmd::Enrollment(a) => &a.common,
            CreateCmd::AuthPolicy(a) => &a.common,
        }
    }

    /// Where the enrollment JWT of the new entity goes, if asked.
    pub fn jwt_output_file(&self) -> Option<&PathBuf> {
        match self {
            CreateCmd::Identity(a) => a.jwt_output_file.as_ref(),
            CreateCmd::EdgeRouter(a) => a.jwt_output_file.as_ref(),
            CreateCmd::Enrollment(a) => a.jwt_output_file.as_ref(),
            _ => None,
        }
    }

    /// The request body the flags describe. `password` is the authenticator's password
    /// when it was prompted for; `schema` the config type's schema file's text.
    pub fn draft(&self, password: Option<&str>, schema: Option<&str>) -> anyhow::Result<Draft> {
        let d = match self {
            CreateCmd::Service(a) => {
                let mut d = start(&a.name, &a.common)?;
                d.set_opt("roleAttributes", list(&a.role_attributes));
                d.set_opt("configs", list(&a.configs));
                d.set_opt("encryptionRequired", a.encryption.map(|e| e == OnOff::On));
                d.set_opt("terminatorStrategy", a.terminator_strategy.clone());
                d.refer("configs", "configs", RefKind::Plain);
                d
            }
            CreateCmd::Identity(a) => {
                let mut d = start(&a.name, &a.common)?;
                d.set_opt(
                    "type",
                    a.identity_type
                        .and_then(|t| t.to_possible_value())
                        .map(|v| v.get_name().to_owned()),
                );
                if a.admin {
                    d.set("isAdmin", true);
                }
                d.set_opt("roleAttributes", list(&a.role_attributes));
                d.set_opt("authPolicyId", a.auth_policy.clone());
                d.set("enrollment", json!({"ott": true}));
                d.refer("authPolicyId", "auth-policies", RefKind::Plain);
                d
            }
            CreateCmd::EdgeRouter(a) => {
                let mut d = start(&a.name, &a.common)?;
                d.set_opt("roleAttributes", list(&a.role_attributes));
                if a.tunneler_enabled {
                    d.set("isTunnelerEnabled", true);
                }
                d
            }
            CreateCmd::ServicePolicy(a) => {
                let mut d = start(&a.name, &a.common)?;
                d.set_opt(
                    "type",
                    a.policy_type.map(|t| match t {
                        PolicyType::Dial => "Dial",
                        PolicyType::Bind => "Bind",
                    }),
                );
                d.set_opt("semantic", a.semantic.map(Semantic::wire));
                d.set_opt("identityRoles", list(&a.identity_roles));
                d.set_opt("serviceRoles", list(&a.service_roles));
                d.refer_roles();
                d
            }
            CreateCmd::EdgeRouterPolicy(a) => {
                let mut d = start(&a.name, &a.common)?;
                d.set_opt("semantic", a.semantic.map(Semantic::wire));
                d.set_opt("identityRoles", list(&a.identity_roles));
                d.set_opt("edgeRouterRoles", list(&a.edge_router_roles));
                d.refer_roles();
                d
            }
            CreateCmd::ServiceEdgeRouterPolicy(a) => {
                let mut d = start(&a.name, &a.common)?;
                d.set_opt("semantic", a.semantic.map(Semantic::wire));
                d.set_opt("serviceRoles", list(&a.service_roles));
                d.set_opt("edgeRouterRoles", list(&a.edge_router_roles));
                d.refer_roles();
                d
            }
            CreateCmd::ConfigType(a) => {
                let mut d = start(&a.name, &a.common)?;
                if let Some(text) = schema {
                    d.set("schema", json_flag("schema", text, true)?);
                }
                d
            }
            CreateCmd::Config(a) => {
                let mut d = start(&a.name, &a.common)?;
                d.set_opt("configTypeId", a.config_type.clone());
                if let Some(text) = &a.data_json {
                    d.set("data", json_flag("data", text, true)?);
                }
                d.refer("configTypeId", "config-types", RefKind::Plain);
                d
            }
            CreateCmd::Authenticator(a) => {
                let mut d = start(&None, &a.common)?;
                d.set("method", "updb");
                d.set_opt("identityId", a.identity.clone());
                d.set_opt("username", a.username.clone());
                d.set_opt(
                    "password",
                    password.or(a.password.as_deref()).map(str::to_owned),
                );
                d.refer("identityId", "identities", RefKind::Plain);
                d
            }
            CreateCmd::Enrollment(a) => {
                let mut d = start(&None, &a.common)?;
                let (method, field, coll) = match a.method {
                    Some(EnrollMethod::Erott) => ("erott", "edgeRouterId", "edge-routers"),
                    _ => ("ott", "identityId", "identities"),
                };
                d.set("method", method);
                d.set_opt(field, a.target.clone());
                let expires = match (&a.expires_at, a.duration) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some(min)) => Some(
                        (chrono::Utc::now() + chrono::Duration::minutes(i64::from(min)))
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ),
                    (None, None) => None,
                };
                d.set_opt("expiresAt", expires);
                d.refer(field, coll, RefKind::Plain);
                d
            }
            CreateCmd::AuthPolicy(a) => {
                let mut d = start(&a.name, &a.common)?;
                let mut primary = Map::new();
                if let Some(b) = a.primary_cert_allowed {
                    primary.insert("cert".into(), json!({ "allowed": b }));
                }
                if let Some(b) = a.primary_updb_allowed {
                    primary.insert("updb".into(), json!({ "allowed": b }));
                }
                if !primary.is_empty() {
                    d.set("primary", Value::Object(primary));
                }
                d
            }
        };
        Ok(d)
    }
}

/// `weft edge update <entity> NAME_OR_ID [flags]`: only the flags given are sent (PATCH
/// merges top-level fields).
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The kind (service, identity, edge-router, service-policy, ...).
    pub entity: String,
    /// The entity to change, by name or id.
    pub name_or_id: String,
    /// A new name.
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// New role attributes, comma-separated ('' clears them).
    #[arg(long, short = 'a', value_delimiter = ',', value_name = "ATTRS")]
    pub role_attributes: Option<Vec<String>>,
    /// New identity roles (policies).
    #[arg(long, short = 'i', value_delimiter = ',', value_name = "ROLES")]
    pub identity_roles: Option<Vec<String>>,
    /// New service roles (policies).
    #[arg(long, short = 's', value_delimiter = ',', value_name = "ROLES")]
    pub service_roles: Option<Vec<String>>,
    /// New edge router roles (policies).
    #[arg(long, short = 'e', value_delimiter = ',', value_name = "ROLES")]
    pub edge_router_roles: Option<Vec<String>>,
    /// New semantic (policies).
    #[arg(long, value_enum, ignore_case = true)]
    pub semantic: Option<Semantic>,
    /// New configs (services; names or ids), comma-separated.
    #[arg(long, short = 'c', value_delimiter = ',', value_name = "CONFIGS")]
    pub configs: Option<Vec<String>>,
    /// New tags (a JSON object; replaces all tags).
    #[arg(long, value_name = "JSON")]
    pub tags_json: Option<String>,
    /// Any other fields, as a JSON object merged into the request body.
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    /// Only change it if its version is still VERSION (optimistic concurrency).
    #[arg(long, value_name = "VERSION")]
    pub if_match: Option<u64>,
}

impl UpdateArgs {
    /// The PATCH body for `kind`; a flag that `kind` has no field for is a usage error.
    pub fn draft(&self, kind: &Kind) -> anyhow::Result<Draft> {
        let Some(allowed) = kind.patch_fields else {
            return Err(usage(format!("{} cannot be updated", kind.collection)));
        };
        let mut d = Draft::default();
        let flags: [(&str, &str, Option<Value>); 7] = [
            ("name", "name", self.name.clone().map(Value::String)),
            (
                "role-attributes",
                "roleAttributes",
                list(&self.role_attributes),
            ),
            (
                "identity-roles",
                "identityRoles",
                list(&self.identity_roles),
            ),
            ("service-roles", "serviceRoles", list(&self.service_roles)),
            (
                "edge-router-roles",
                "edgeRouterRoles",
                list(&self.edge_router_roles),
            ),
            (
                "semantic",
                "semantic",
                self.semantic.map(|s| Value::String(s.wire().into())),
            ),
            ("configs", "configs", list(&self.configs)),
        ];
        for (flag, field, value) in flags {
            let Some(value) = value else { continue };
            if !allowed.contains(&field) {
                return Err(usage(format!(
                    "--{flag} does not apply to {} (their fields: {})",
                    kind.collection,
                    allowed.join(", ")
                )));
            }
            d.set(field, value);
        }
        if let Some(t) = &self.tags_json {
            d.set("tags", json_flag("tags-json", t, true)?);
        }
        if let Some(text) = &self.data {
            if let Value::Object(m) = json_flag("data", text, true)? {
                d.body.extend(m);
            }
        }
        if d.body.is_empty() {
            return Err(usage("nothing to change: give at least one flag"));
        }
        d.refer("configs", "configs", RefKind::Plain);
        d.refer_roles();
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Parses `weft edge create ...` arguments into a [`CreateCmd`].
    #[derive(Parser, Debug)]
    struct Create {
        #[command(subcommand)]
        cmd: CreateCmd,
    }

    #[derive(Parser, Debug)]
    struct Update {
        #[command(flatten)]
        args: UpdateArgs,
    }

    fn create(args: &[&str]) -> CreateCmd {
        let argv = std::iter::once("create").chain(args.iter().copied());
        match Create::try_parse_from(argv) {
            Ok(c) => c.cmd,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn draft(args: &[&str]) -> Draft {
        create(args)
            .draft(None, None)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn update(args: &[&str]) -> anyhow::Result<Draft> {
        let argv = std::iter::once("update").chain(args.iter().copied());
        let u = Update::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let kind = crate::kinds::find(&u.args.entity).unwrap_or_else(|| panic!("kind"));
        u.args.draft(kind)
    }

    #[test]
    fn service_flags_map_to_fields_and_config_names_are_references() {
        let d = draft(&[
            "service",
            "web",
            "--role-attributes",
            "eng,ops",
            "--configs",
            "intercept",
            "--encryption",
            "off",
            "--tags-json",
            r#"{"env":"prod"}"#,
        ]);
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "web", "roleAttributes": ["eng", "ops"], "configs": ["intercept"],
                   "encryptionRequired": false, "tags": {"env": "prod"}})
        );
        assert_eq!(
            d.refs,
            vec![Ref {
                field: "configs",
                collection: "configs",
                kind: RefKind::Plain
            }]
        );
    }

    #[test]
    fn only_given_flags_become_fields() {
        let d = draft(&["service", "web"]);
        assert_eq!(Value::Object(d.body), json!({"name": "web"}));
        assert!(d.refs.is_empty());
    }

    #[test]
    fn identity_opens_an_ott_enrollment() {
        let d = draft(&[
            "identity",
            "alice",
            "--role-attributes",
            "eng",
            "--type",
            "device",
            "--admin",
            "--auth-policy",
            "strict",
        ]);
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "alice", "roleAttributes": ["eng"], "type": "Device", "isAdmin": true,
                   "authPolicyId": "strict", "enrollment": {"ott": true}})
        );
        assert_eq!(d.refs[0].collection, "auth-policies");
    }

    #[test]
    fn service_policy_takes_its_type_and_resolves_at_names_in_roles() {
        let d = draft(&[
            "service-policy",
            "p",
            "Bind",
            "--identity-roles",
            "#eng,@alice",
            "--service-roles",
            "@web",
            "--semantic",
            "AnyOf",
        ]);
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "p", "type": "Bind", "semantic": "AnyOf",
                   "identityRoles": ["#eng", "@alice"], "serviceRoles": ["@web"]})
        );
        let fields: Vec<_> = d.refs.iter().map(|r| (r.field, r.kind)).collect();
        assert_eq!(
            fields,
            vec![
                ("identityRoles", RefKind::Roles),
                ("serviceRoles", RefKind::Roles)
            ]
        );
    }

    #[test]
    fn router_policies_and_auth_policies() {
        let d = draft(&[
            "edge-router-policy",
            "erp",
            "--edge-router-roles",
            "#all",
            "-i",
            "#eng",
        ]);
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "erp", "edgeRouterRoles": ["#all"], "identityRoles": ["#eng"]})
        );
        let d = draft(&[
            "service-edge-router-policy",
            "serp",
            "-e",
            "#all",
            "-s",
            "#all",
        ]);
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "serp", "edgeRouterRoles": ["#all"], "serviceRoles": ["#all"]})
        );
        let d = draft(&["auth-policy", "ap", "--primary-updb-allowed", "false"]);
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "ap", "primary": {"updb": {"allowed": false}}})
        );
    }

    #[test]
    fn config_and_config_type() {
        let d = draft(&["config", "c", "intercept.v1", r#"{"port": 80}"#]);
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "c", "configTypeId": "intercept.v1", "data": {"port": 80}})
        );
        assert_eq!(d.refs[0].collection, "config-types");
        let d = create(&["config-type", "t", "--schema", "s.json"])
            .draft(None, Some(r#"{"type": "object"}"#))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "t", "schema": {"type": "object"}})
        );
    }

    #[test]
    fn authenticator_and_enrollment() {
        let d = create(&["authenticator", "updb", "alice", "alice-login"])
            .draft(Some("prompted-pw"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Value::Object(d.body),
            json!({"method": "updb", "identityId": "alice", "username": "alice-login",
                   "password": "prompted-pw"})
        );
        let d = draft(&[
            "enrollment",
            "erott",
            "r1",
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ]);
        assert_eq!(
            Value::Object(d.body),
            json!({"method": "erott", "edgeRouterId": "r1", "expiresAt": "2030-01-01T00:00:00Z"})
        );
        assert_eq!(d.refs[0].collection, "edge-routers");
        let d = draft(&["enrollment", "ott", "alice", "--duration", "30"]);
        let at = d.body["expiresAt"].as_str().unwrap_or_default();
        let t = chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(t > chrono::Utc::now() + chrono::Duration::minutes(29));
    }

    #[test]
    fn bad_json_in_flags_is_a_usage_error() {
        for args in [
            &["service", "web", "--tags-json", "[1]"][..],
            &["service", "web", "--tags-json", "{"][..],
            &["config", "c", "t", "not json"][..],
        ] {
            let e = create(args).draft(None, None).err();
            let e = e.unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(crate::errors::exit_code(&e), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn from_file_replaces_the_positionals() {
        let c = create(&["service-policy", "--from-file", "p.json"]);
        assert_eq!(c.collection(), "service-policies");
        assert!(c.common().from_file.is_some());
        let both = Create::try_parse_from(["create", "service", "web", "--from-file", "f"]);
        assert!(both.is_err());
        let neither = Create::try_parse_from(["create", "service"]);
        assert!(neither.is_err());
    }

    #[test]
    fn update_maps_flags_the_kind_has() {
        let d = update(&[
            "service",
            "web",
            "--name",
            "web2",
            "-a",
            "",
            "--data",
            r#"{"encryptionRequired": false}"#,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Value::Object(d.body),
            json!({"name": "web2", "roleAttributes": [], "encryptionRequired": false})
        );
        let d = update(&["service-policy", "p", "--service-roles", "@web"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.refs[0].field, "serviceRoles");
    }

    #[test]
    fn update_refuses_flags_the_kind_lacks_and_empty_updates() {
        for args in [
            &["config", "c", "--role-attributes", "x"][..],
            &["api-sessions", "s", "--name", "x"][..],
            &["service", "web"][..],
        ] {
            let e = update(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(crate::errors::exit_code(&e), 2, "{args:?}: {e}");
        }
    }
}
