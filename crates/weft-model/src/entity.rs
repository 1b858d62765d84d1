//! The generic entity layer. An entity kind is declared by one [`EntityKind`] variant: its
//! table, its singular name and its validation. Create, update (merge of top-level
//! fields), delete, get and paged list, including the unique-name index, are written once
//! here for every kind. Every record carries a [`VERSION`], raised by every change, which
//! update and delete compare when the command names the version it expects (the API's
//! `If-Match`), inside apply, so two compare-and-sets racing on one version cannot both
//! win.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::filter::{Filter, Sort};
use crate::index;
use crate::schema::Schema;
use crate::{validate, DomainError, StateRead, StateWrite, StorageFault};

/// The kinds of replicated entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntityKind {
    Service,
    Identity,
    EdgeRouter,
    ConfigType,
    Config,
    ServicePolicy,
    EdgeRouterPolicy,
    ServiceEdgeRouterPolicy,
    Authenticator,
    Enrollment,
    AuthPolicy,
}

/// An authenticator as stored. `updb`: `name` is the username, `passwordHash` its argon2id
/// hash (never shown). `cert`: `name` and `certFingerprint` are the SHA-256 fingerprint of
/// the enrolled certificate (so the name index finds it at login), `certPem` the
/// certificate.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // parsed to check the shape
struct StoredAuthenticator {
    name: String,
    method: String,
    identity_id: String,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    cert_fingerprint: Option<String>,
    #[serde(default)]
    cert_pem: Option<String>,
    #[serde(default)]
    tags: serde_json::Map<String, Value>,
}

/// An enrollment as stored: a one-time token (`token`, signed into `jwt`) with which an
/// identity (`ott`) or an edge router (`erott`) gets a certificate. `name` is the id.
/// Kept after use, with `completedAt`, so a second use is told apart from a bad token.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // parsed to check the shape
struct StoredEnrollment {
    name: String,
    method: String,
    #[serde(default)]
    identity_id: Option<String>,
    #[serde(default)]
    edge_router_id: Option<String>,
    token: String,
    jwt: String,
    expires_at: String,
    expires_at_ms: i64,
    #[serde(default)]
    completed_at: Option<String>,
    #[serde(default)]
    cert_fingerprint: Option<String>,
    #[serde(default)]
    tags: serde_json::Map<String, Value>,
}

/// Fields of an edge router that only enrollment sets (never a create or patch body).
pub const ROUTER_ENROLLED_FIELDS: [&str; 2] = ["isVerified", "fingerprint"];

/// Every record's version: 1 at create, one more at every change of the record by any
/// command (so `If-Match` can compare and set). A record stored before versions existed
/// has none and counts as version 1.
pub const VERSION: &str = "version";

/// The fields of every record that only apply sets (never a create or patch body).
const SYSTEM_FIELDS: [&str; 4] = ["id", "createdAt", "updatedAt", VERSION];

/// The version of a stored record ([`VERSION`]; 1 when it has none).
pub fn version_of(record: &Value) -> u64 {
    record.get(VERSION).and_then(Value::as_u64).unwrap_or(1)
}

/// Fields kept in state but never shown by the API (nor matched by list filters, which
/// could otherwise probe them).
pub(crate) const SECRET_FIELDS: [&str; 1] = ["passwordHash"];

/// The kinds whose records hold role lists naming other entities (`@id`).
const POLICY_KINDS: [EntityKind; 3] = [
    EntityKind::ServicePolicy,
    EntityKind::EdgeRouterPolicy,
    EntityKind::ServiceEdgeRouterPolicy,
];

impl EntityKind {
    /// Every kind.
    pub const ALL: [EntityKind; 11] = [
        EntityKind::Service,
        EntityKind::Identity,
        EntityKind::EdgeRouter,
        EntityKind::ConfigType,
        EntityKind::Config,
        EntityKind::ServicePolicy,
        EntityKind::EdgeRouterPolicy,
        EntityKind::ServiceEdgeRouterPolicy,
        EntityKind::Authenticator,
        EntityKind::Enrollment,
        EntityKind::AuthPolicy,
    ];

    /// The table the records live in (also the REST collection name).
    pub fn table(self) -> &'static str {
        match self {
            EntityKind::Service => "services",
            EntityKind::Identity => "identities",
            EntityKind::EdgeRouter => "edge-routers",
            EntityKind::ConfigType => "config-types",
            EntityKind::Config => "configs",
            EntityKind::ServicePolicy => "service-policies",
            EntityKind::EdgeRouterPolicy => "edge-router-policies",
            EntityKind::ServiceEdgeRouterPolicy => "service-edge-router-policies",
            EntityKind::Authenticator => "authenticators",
            EntityKind::Enrollment => "enrollments",
            EntityKind::AuthPolicy => "auth-policies",
        }
    }

    /// Singular, for messages.
    pub fn singular(self) -> &'static str {
        match self {
            EntityKind::Service => "service",
            EntityKind::Identity => "identity",
            EntityKind::EdgeRouter => "edge router",
            EntityKind::ConfigType => "config type",
            EntityKind::Config => "config",
            EntityKind::ServicePolicy => "service policy",
            EntityKind::EdgeRouterPolicy => "edge router policy",
            EntityKind::ServiceEdgeRouterPolicy => "service edge router policy",
            EntityKind::Authenticator => "authenticator",
            EntityKind::Enrollment => "enrollment",
            EntityKind::AuthPolicy => "auth policy",
        }
    }

    /// The record as the API shows it: without secret fields, with the defaults of fields
    /// added since it was stored.
    pub fn public(self, mut record: Value) -> Value {
        if let Some(obj) = record.as_object_mut() {
            for f in SECRET_FIELDS {
                obj.remove(f);
            }
            obj.entry(VERSION).or_insert_with(|| Value::from(1u64));
            if self == EntityKind::Identity {
                // Records from before auth policies have the default one.
                obj.entry("authPolicyId")
                    .or_insert_with(|| weft_api::models::DEFAULT_AUTH_POLICY.into());
            }
        }
        record
    }

    /// The table of the unique-name index: name -> id.
    pub(crate) fn name_index(self) -> String {
        format!("{}.by-name", self.table())
    }

    /// The role-list fields of this kind's records, each with the kind its `@id`s name.
    pub fn role_fields(self) -> &'static [(&'static str, EntityKind)] {
        match self {
            EntityKind::ServicePolicy => &[
                ("identityRoles", EntityKind::Identity),
                ("serviceRoles", EntityKind::Service),
            ],
            EntityKind::EdgeRouterPolicy => &[
                ("identityRoles", EntityKind::Identity),
                ("edgeRouterRoles", EntityKind::EdgeRouter),
            ],
            EntityKind::ServiceEdgeRouterPolicy => &[
                ("serviceRoles", EntityKind::Service),
                ("edgeRouterRoles", EntityKind::EdgeRouter),
            ],
            _ => &[],
        }
    }

    /// Checks a whole record of this kind on its own (after create, or after merging a
    /// patch): the shape and types of every field (as the create body, so unknown fields
    /// are refused) and each field's rules.
    pub fn validate(self, record: &Value) -> Result<(), DomainError> {
        use weft_api::models as m;
        let mut body = record.as_object().cloned().unwrap_or_default();
        for k in SYSTEM_FIELDS {
            body.remove(k);
        }
        if self == EntityKind::EdgeRouter {
            if let Some(v) = body.get("isVerified") {
                if !v.is_boolean() {
                    return Err(DomainError::InvalidField {
                        field: "isVerified".into(),
                        reason: "must be a boolean".into(),
                    });
                }
            }
            for k in ROUTER_ENROLLED_FIELDS {
                body.remove(k);
            }
        }
        let body = Value::Object(body);
        fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, DomainError> {
            serde_json::from_value(v).map_err(|e| DomainError::InvalidField {
                field: "body".into(),
                reason: e.to_string(),
            })
        }
        let name = str_field(record, "name");
        validate::name("name", name)?;
        match self {
            EntityKind::Service => {
                let b: m::ServiceCreate = parse(body)?;
                validate::role_attributes("roleAttributes", &b.role_attributes)?;
                validate::ids("configs", &b.configs)?;
                validate::name("terminatorStrategy", &b.terminator_strategy)
            }
            EntityKind::Identity => {
                let b: m::IdentityCreate = parse(body)?;
                validate::ids("authPolicyId", std::slice::from_ref(&b.auth_policy_id))?;
                validate::role_attributes("roleAttributes", &b.role_attributes)
            }
            EntityKind::AuthPolicy => {
                let _: m::AuthPolicyCreate = parse(body)?;
                if str_field(record, "id") == m::DEFAULT_AUTH_POLICY {
                    return Err(DomainError::InvalidField {
                        field: "id".into(),
                        reason: "\"default\" is the built-in auth policy".into(),
                    });
                }
                Ok(())
            }
            EntityKind::EdgeRouter => {
                let b: m::EdgeRouterCreate = parse(body)?;
                validate::role_attributes("roleAttributes", &b.role_attributes)
            }
            EntityKind::ConfigType => {
                let b: m::ConfigTypeCreate = parse(body)?;
                Schema::compile(&b.schema)
                    .map(drop)
                    .map_err(|e| DomainError::InvalidField {
                        field: format!("schema{}", e.path),
                        reason: e.message,
                    })
            }
            EntityKind::Config => {
                let b: m::ConfigCreate = parse(body)?;
                validate::ids("configTypeId", std::slice::from_ref(&b.config_type_id))?;
                if !b.data.is_object() {
                    return Err(DomainError::InvalidField {
                        field: "data".into(),
                        reason: "must be a JSON object".into(),
                    });
                }
                Ok(())
            }
            EntityKind::ServicePolicy => {
                let b: m::ServicePolicyCreate = parse(body)?;
                validate::roles("identityRoles", &b.identity_roles)?;
                validate::roles("serviceRoles", &b.service_roles)
            }
            EntityKind::EdgeRouterPolicy => {
                let b: m::EdgeRouterPolicyCreate = parse(body)?;
                validate::roles("identityRoles", &b.identity_roles)?;
                validate::roles("edgeRouterRoles", &b.edge_router_roles)
            }
            EntityKind::ServiceEdgeRouterPolicy => {
                let b: m::ServiceEdgeRouterPolicyCreate = parse(body)?;
                validate::roles("serviceRoles", &b.service_roles)?;
                validate::roles("edgeRouterRoles", &b.edge_router_roles)
            }
            EntityKind::Authenticator => {
                let b: StoredAuthenticator = parse(body)?;
                validate::ids("identityId", std::slice::from_ref(&b.identity_id))?;
                let invalid = |field: &str, reason: &str| DomainError::InvalidField {
                    field: field.into(),
                    reason: reason.into(),
                };
                match b.method.as_str() {
                    "updb" => {
                        if !b.password_hash.is_some_and(|h| h.starts_with("$argon2")) {
                            return Err(invalid("password", "must be hashed by the controller"));
                        }
                        if b.cert_fingerprint.is_some() || b.cert_pem.is_some() {
                            return Err(invalid("method", "updb takes no certificate"));
                        }
                        Ok(())
                    }
                    "cert" => {
                        let fp = b.cert_fingerprint.unwrap_or_default();
                        if !is_fingerprint(&fp) || b.name != fp {
                            return Err(invalid(
                                "certFingerprint",
                                "must be the certificate's SHA-256 (64 lowercase hex digits)",
                            ));
                        }
                        if b.password_hash.is_some() || b.cert_pem.is_none() {
                            return Err(invalid(
                                "method",
                                "cert authenticators are made by enrollment",
                            ));
                        }
                        Ok(())
                    }
                    other => Err(invalid(
                        "method",
                        &format!(
                            "{other:?} is not supported; use updb (cert comes from enrollment)"
                        ),
                    )),
                }
            }
            EntityKind::Enrollment => {
                let b: StoredEnrollment = parse(body)?;
                let invalid = |field: &str, reason: &str| DomainError::InvalidField {
                    field: field.into(),
                    reason: reason.into(),
                };
                match (b.method.as_str(), &b.identity_id, &b.edge_router_id) {
                    ("ott", Some(id), None) => {
                        validate::ids("identityId", std::slice::from_ref(id))
                    }
                    ("erott", None, Some(id)) => {
                        validate::ids("edgeRouterId", std::slice::from_ref(id))
                    }
                    ("ott", _, _) => Err(invalid(
                        "identityId",
                        "ott enrolls an identity: give identityId only",
                    )),
                    ("erott", _, _) => Err(invalid(
                        "edgeRouterId",
                        "erott enrolls an edge router: give edgeRouterId only",
                    )),
                    (other, _, _) => Err(invalid(
                        "method",
                        &format!("{other:?} is not supported; use ott or erott"),
                    )),
                }?;
                if b.token.len() < 16 || b.jwt.is_empty() {
                    return Err(invalid("token", "must be issued by the controller"));
                }
                let target = b.identity_id.or(b.edge_router_id).unwrap_or_default();
                let open = crate::enrollment::open_name(&b.method, &target);
                if b.name != open && b.name != crate::enrollment::used_name(&b.token) {
                    return Err(invalid("name", &format!("must be {open:?}")));
                }
                Ok(())
            }
        }
    }

    /// Checks what a record says about *other* records, against `st`: every `@id` in a role
    /// list names an existing entity of the right kind; a service's configs exist and are of
    /// different types; a config's type exists and its data satisfies the type's schema; a
    /// config type's new schema still accepts every config of that type.
    pub fn validate_in(self, st: &dyn StateRead, record: &Value) -> Result<(), DomainError> {
        let invalid = |field: String, reason: String| DomainError::InvalidField { field, reason };
        for (field, target) in self.role_fields() {
            for (i, role) in strings(record, field).iter().enumerate() {
                if let Some(id) = role.strip_prefix('@') {
                    if get(st, *target, id)?.is_none() {
                        return Err(invalid(
                            format!("{field}[{i}]"),
                            format!("no {} has id {id:?}", target.singular()),
                        ));
                    }
                }
            }
        }
        match self {
            EntityKind::Service => {
                let mut types = std::collections::BTreeMap::new();
                for (i, id) in strings(record, "configs").iter().enumerate() {
                    let Some(config) = get(st, EntityKind::Config, id)? else {
                        return Err(invalid(
                            format!("configs[{i}]"),
                            format!("no config has id {id:?}"),
                        ));
                    };
                    let ty = str_field(&config, "configTypeId").to_owned();
                    if let Some(other) = types.insert(ty.clone(), id.clone()) {
                        return Err(invalid(
                            format!("configs[{i}]"),
                            format!("configs {other} and {id} have the same config type {ty}; a service takes one config per type"),
                        ));
                    }
                }
                Ok(())
            }
            EntityKind::Config => {
                let ty_id = str_field(record, "configTypeId");
                let Some(ty) = get(st, EntityKind::ConfigType, ty_id)? else {
                    return Err(invalid(
                        "configTypeId".into(),
                        format!("no config type has id {ty_id:?}"),
                    ));
                };
                check_config(&ty, record, "data")
            }
            EntityKind::ConfigType => {
                let id = str_field(record, "id");
                for config in all(st, EntityKind::Config)? {
                    if str_field(&config, "configTypeId") == id {
                        check_config(record, &config, "schema").map_err(|e| match e {
                            DomainError::InvalidField { reason, .. } => invalid(
                                "schema".into(),
                                format!(
                                    "config {} would no longer be valid: {reason}",
                                    str_field(&config, "id")
                                ),
                            ),
                            e => e,
                        })?;
                    }
                }
                Ok(())
            }
            EntityKind::Identity => {
                let policy = str_field(record, "authPolicyId");
                if !policy.is_empty()
                    && policy != weft_api::models::DEFAULT_AUTH_POLICY
                    && get(st, EntityKind::AuthPolicy, policy)?.is_none()
                {
                    return Err(invalid(
                        "authPolicyId".into(),
                        format!(
                            "no auth policy has id {policy:?} (\"default\" allows every method)"
                        ),
                    ));
                }
                Ok(())
            }
            EntityKind::Enrollment => {
                let (kind, field) = match str_field(record, "method") {
                    "erott" => (EntityKind::EdgeRouter, "edgeRouterId"),
                    _ => (EntityKind::Identity, "identityId"),
                };
                let id = str_field(record, field);
                if get(st, kind, id)?.is_none() {
                    return Err(invalid(
                        field.into(),
                        format!("no {} has id {id:?}", kind.singular()),
                    ));
                }
                Ok(())
            }
            EntityKind::Authenticator => {
                let identity = str_field(record, "identityId");
                if get(st, EntityKind::Identity, identity)?.is_none() {
                    return Err(invalid(
                        "identityId".into(),
                        format!("no identity has id {identity:?}"),
                    ));
                }
                let name = str_field(record, "name");
                if crate::admin(st, name)?.is_some() {
                    return Err(invalid(
                        "username".into(),
                        format!("{name:?} is the bootstrap administrator's user name"),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// What still refers to the record `id` of this kind (a policy naming it by `@id`, a
    /// config of this type, a service using this config), if anything: it cannot be
    /// deleted then.
    pub fn referenced_by(
        self,
        st: &dyn StateRead,
        id: &str,
    ) -> Result<Option<String>, StorageFault> {
        let at_id = format!("@{id}");
        if POLICY_KINDS
            .iter()
            .any(|k| k.role_fields().iter().any(|(_, t)| *t == self))
        {
            // Policies naming `@id` are read off the role index, not found by a scan.
            index::require(st)?;
        }
        for kind in POLICY_KINDS {
            for (field, target) in kind.role_fields() {
                if *target != self {
                    continue;
                }
                if let Some(policy) = index::first_policy_with_role(st, kind, field, &at_id)? {
                    return Ok(Some(format!("{} {policy} ({field})", kind.singular())));
                }
            }
        }
        let (user, field) = match self {
            EntityKind::AuthPolicy => (EntityKind::Identity, "authPolicyId"),
            EntityKind::ConfigType => (EntityKind::Config, "configTypeId"),
            EntityKind::Config => (EntityKind::Service, "configs"),
            _ => return Ok(None),
        };
        for r in all(st, user)? {
            let hit = match r.get(field) {
                Some(Value::String(s)) => s == id,
                Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(id)),
                _ => false,
            };
            if hit {
                return Ok(Some(format!(
                    "{} {} ({field})",
                    user.singular(),
                    str_field(&r, "id")
                )));
            }
        }
        Ok(None)
    }
}

/// A config's `data` against its type's schema; errors name `field` plus the pointer.
fn check_config(config_type: &Value, config: &Value, field: &str) -> Result<(), DomainError> {
    let schema = config_type
        .get("schema")
        .cloned()
        .unwrap_or(Value::Bool(true));
    let invalid = |path: String, reason: String| DomainError::InvalidField {
        field: format!("{field}{path}"),
        reason,
    };
    let schema = Schema::compile(&schema).map_err(|e| invalid(e.path, e.message))?;
    let data = config.get("data").cloned().unwrap_or(Value::Null);
    schema.validate(&data).map_err(|e| {
        if field == "data" {
            invalid(e.path, e.message)
        } else {
            invalid(String::new(), format!("data{}: {}", e.path, e.message))
        }
    })
}

/// Whether `identity`'s auth policy allows primary method `method` (`updb` or `cert`). An
/// identity without `authPolicyId` (older records), or with `default`, may use any.
pub fn auth_method_allowed(
    st: &dyn StateRead,
    identity: &Value,
    method: &str,
) -> Result<bool, StorageFault> {
    let policy = str_field(identity, "authPolicyId");
    if policy.is_empty() || policy == weft_api::models::DEFAULT_AUTH_POLICY {
        return Ok(true);
    }
    // A policy cannot be deleted while an identity names it; if it is gone anyway, refuse.
    Ok(get(st, EntityKind::AuthPolicy, policy)?
        .is_some_and(|p| p["primary"][method]["allowed"].as_bool().unwrap_or(true)))
}

/// A SHA-256 fingerprint as stored: 64 lowercase hex digits.
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The strings of an array field (missing or other types: none).
pub(crate) fn strings(record: &Value, field: &str) -> Vec<String> {
    record
        .get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub total: u64,
}

fn decode(bytes: &[u8]) -> Result<Value, StorageFault> {
    serde_json::from_slice(bytes).map_err(|e| StorageFault(format!("corrupt record: {e}")))
}

fn encode(v: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn str_field<'a>(record: &'a Value, field: &str) -> &'a str {
    record.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Every record of `kind`, in id order.
pub fn all(st: &dyn StateRead, kind: EntityKind) -> Result<Vec<Value>, StorageFault> {
    st.scan(kind.table())?
        .iter()
        .map(|(_, bytes)| decode(bytes))
        .collect()
}

/// The record with this id.
pub fn get(st: &dyn StateRead, kind: EntityKind, id: &str) -> Result<Option<Value>, StorageFault> {
    st.get(kind.table(), id)?.map(|b| decode(&b)).transpose()
}

/// The id of the record with this name.
pub fn id_by_name(
    st: &dyn StateRead,
    kind: EntityKind,
    name: &str,
) -> Result<Option<String>, StorageFault> {
    Ok(st
        .get(&kind.name_index(), name)?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// What a list asks for: one page, optionally filtered and sorted (the `limit`, `offset`,
/// `filter` and `sort` query parameters).
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub offset: u64,
    pub limit: u32,
    /// Only records that match; `None`: all.
    pub filter: Option<Filter>,
    /// The order of the whole result before paging.
    pub sort: Sort,
}

impl ListQuery {
    /// The first `limit` records by name, unfiltered.
    pub fn page(offset: u64, limit: u32) -> Self {
        ListQuery {
            offset,
            limit,
            filter: None,
            sort: Sort::default(),
        }
    }
}

/// A page of the records `q` selects; `total` counts every match, not just this page.
pub fn list(st: &dyn StateRead, kind: EntityKind, q: &ListQuery) -> Result<ListPage, StorageFault> {
    if q.filter.is_none() && q.sort == Sort::default() {
        return list_by_name(st, kind, q.offset, q.limit);
    }
    let mut matched = Vec::new();
    for record in all(st, kind)? {
        let record = crate::enrollment::present(st, kind, kind.public(record))?;
        if q.filter.as_ref().is_none_or(|f| f.matches(&record)) {
            matched.push(record);
        }
    }
    let total = matched.len() as u64;
    matched.sort_by(|a, b| q.sort.compare(a, b));
    let items = matched
        .into_iter()
        .skip(usize::try_from(q.offset).unwrap_or(usize::MAX))
        .take(q.limit as usize)
        .collect();
    Ok(ListPage { items, total })
}

/// The unfiltered list in name order, straight off the name index: only the page's records
/// are read.
fn list_by_name(
    st: &dyn StateRead,
    kind: EntityKind,
    offset: u64,
    limit: u32,
) -> Result<ListPage, StorageFault> {
    let index = st.scan(&kind.name_index())?;
    let total = index.len() as u64;
    let mut items = Vec::new();
    for (_, id) in index
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
    {
        let id = String::from_utf8_lossy(&id).into_owned();
        if let Some(rec) = get(st, kind, &id)? {
            items.push(crate::enrollment::present(st, kind, kind.public(rec))?);
        }
    }
    Ok(ListPage { items, total })
}

/// Splits a check against state into its storage fault (the outer error) and its verdict.
fn in_state(r: Result<(), DomainError>) -> Result<Result<(), DomainError>, StorageFault> {
    match r {
        Err(DomainError::Storage(f)) => Err(StorageFault(f)),
        other => Ok(other),
    }
}

/// Creates `record` as proposed, at version 1 (the stored record is the outcome).
pub(crate) fn create(
    st: &mut dyn StateWrite,
    kind: EntityKind,
    record: &Value,
) -> Result<Result<Value, DomainError>, StorageFault> {
    if let Err(e) = kind.validate(record) {
        return Ok(Err(e));
    }
    if let Err(e) = in_state(kind.validate_in(st, record))? {
        return Ok(Err(e));
    }
    let id = str_field(record, "id");
    let name = str_field(record, "name");
    if id.is_empty() {
        return Ok(Err(DomainError::InvalidField {
            field: "id".into(),
            reason: "must not be empty".into(),
        }));
    }
    let mut stored = record.clone();
    if let Some(obj) = stored.as_object_mut() {
        obj.insert(VERSION.into(), Value::from(1u64));
    }
    if let Some(existing) = get(st, kind, id)? {
        // The same proposal applied twice (a retried forward): answer as the first time.
        if existing == stored || &existing == record {
            return Ok(Ok(existing));
        }
    }
    if id_by_name(st, kind, name)?.is_some() {
        return Ok(Err(DomainError::NameTaken {
            kind: kind.singular().into(),
            name: name.into(),
        }));
    }
    if st.get(kind.table(), id)?.is_some() {
        return Ok(Err(DomainError::InvalidField {
            field: "id".into(),
            reason: format!("id {id} is already in use"),
        }));
    }
    st.put(kind.table(), id, &encode(&stored))?;
    st.put(&kind.name_index(), name, id.as_bytes())?;
    index::on_change(st, kind, id, None, Some(&stored))?;
    Ok(Ok(stored))
}

/// Refuses a compare-and-set whose `expected` version is not `record`'s current one.
fn check_version(
    kind: EntityKind,
    id: &str,
    record: &Value,
    expected: Option<u64>,
) -> Result<(), DomainError> {
    let current = version_of(record);
    match expected {
        Some(expected) if expected != current => Err(DomainError::VersionMismatch {
            kind: kind.singular().into(),
            id: id.into(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}

/// Merges `patch` into record `id` (its version goes up by one), if its version is
/// `expected` (any, when `None`).
pub(crate) fn update(
    st: &mut dyn StateWrite,
    kind: EntityKind,
    id: &str,
    patch: &Map<String, Value>,
    updated_at: &str,
    expected: Option<u64>,
) -> Result<Result<Value, DomainError>, StorageFault> {
    let Some(old) = get(st, kind, id)? else {
        return Ok(Err(DomainError::NotFound {
            kind: kind.singular().into(),
            id: id.into(),
        }));
    };
    if let Err(e) = check_version(kind, id, &old, expected) {
        return Ok(Err(e));
    }
    let mut record = old.clone();
    let old_name = str_field(&record, "name").to_owned();
    if let Some(obj) = record.as_object_mut() {
        for (k, v) in patch {
            if SYSTEM_FIELDS.contains(&k.as_str()) {
                continue;
            }
            obj.insert(k.clone(), v.clone());
        }
        obj.insert("updatedAt".into(), Value::String(updated_at.into()));
        obj.insert(VERSION.into(), Value::from(version_of(&old) + 1));
    }
    if let Err(e) = kind.validate(&record) {
        return Ok(Err(e));
    }
    if let Err(e) = in_state(kind.validate_in(st, &record))? {
        return Ok(Err(e));
    }
    let new_name = str_field(&record, "name").to_owned();
    if new_name != old_name {
        if id_by_name(st, kind, &new_name)?.is_some() {
            return Ok(Err(DomainError::NameTaken {
                kind: kind.singular().into(),
                name: new_name,
            }));
        }
        st.delete(&kind.name_index(), &old_name)?;
        st.put(&kind.name_index(), &new_name, id.as_bytes())?;
    }
    st.put(kind.table(), id, &encode(&record))?;
    index::on_change(st, kind, id, Some(&old), Some(&record))?;
    Ok(Ok(record))
}

/// Deletes record `id` (and what it owns), if its version is `expected` (any, when
/// `None`).
pub(crate) fn delete(
    st: &mut dyn StateWrite,
    kind: EntityKind,
    id: &str,
    expected: Option<u64>,
) -> Result<Result<Value, DomainError>, StorageFault> {
    let Some(record) = get(st, kind, id)? else {
        return Ok(Err(DomainError::NotFound {
            kind: kind.singular().into(),
            id: id.into(),
        }));
    };
    if let Err(e) = check_version(kind, id, &record, expected) {
        return Ok(Err(e));
    }
    if let Some(by) = kind.referenced_by(st, id)? {
        return Ok(Err(DomainError::Referenced {
            kind: kind.singular().into(),
            id: id.into(),
            by,
        }));
    }
    // An identity's authenticators and enrollments go with it, a router's enrollments
    // with it (as in OpenZiti).
    let owned: &[(EntityKind, &str)] = match kind {
        EntityKind::Identity => &[
            (EntityKind::Authenticator, "identityId"),
            (EntityKind::Enrollment, "identityId"),
        ],
        EntityKind::EdgeRouter => &[(EntityKind::Enrollment, "edgeRouterId")],
        _ => &[],
    };
    for (child, field) in owned {
        for a in all(st, *child)? {
            if str_field(&a, field) == id {
                let aid = str_field(&a, "id");
                st.delete(&child.name_index(), str_field(&a, "name"))?;
                st.delete(child.table(), aid)?;
                index::on_change(st, *child, aid, Some(&a), None)?;
            }
        }
    }
    st.delete(&kind.name_index(), str_field(&record, "name"))?;
    st.delete(kind.table(), id)?;
    index::on_change(st, kind, id, Some(&record), None)?;
    Ok(Ok(record))
}
