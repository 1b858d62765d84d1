//! REST request and response bodies. Request bodies reject unknown fields so that a typo
//! is a 400 instead of a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::describe::{entity_field_shape, same_text, Described, Field, HasShape, Shape};

/// Free-form tags on an entity.
pub type Tags = BTreeMap<String, serde_json::Value>;

/// A service as the management API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    pub name: String,
    pub role_attributes: Vec<String>,
    pub tags: Tags,
    pub created_at: String,
    pub updated_at: String,
}

/// Declares an entity's `POST` body (unknown fields refused, defaults filled in) and its
/// `PATCH` body (the same fields, all optional). Both serialize in camelCase, as stored,
/// and both list their fields for the API document ([`Described`]). A field whose
/// default is `"required_text"` must be given (validation refuses its empty default).
macro_rules! entity_bodies {
    (
        $(#[doc = $cdoc:literal])* $create:ident, $(#[doc = $pdoc:literal])* $patch:ident {
            $( $(#[doc = $fdoc:literal])* $field:ident : $ty:ty = $default:literal ),* $(,)?
        }
    ) => {
        $(#[doc = $cdoc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $create {
            pub name: String,
            $(
                $(#[doc = $fdoc])*
                #[serde(default = $default)]
                pub $field: $ty,
            )*
            #[serde(default)]
            pub tags: Tags,
        }

        $(#[doc = $pdoc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $patch {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub name: Option<String>,
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub tags: Option<Tags>,
        }

        impl Described for $create {
            const NAME: &'static str = stringify!($create);
            const DOC: &'static str = concat!($($cdoc, "\n"),*);
            const CLOSED: bool = true;
            const FIELDS: &'static [Field] = &[
                Field::new("name", Shape::Name).required().doc(NAME_DOC),
                $({
                    let f = Field::new(
                        stringify!($field),
                        entity_field_shape(stringify!($field), <$ty as HasShape>::SHAPE),
                    )
                    .doc(concat!($($fdoc),*));
                    if same_text($default, "required_text") { f.required() } else { f }
                },)*
                Field::new("tags", Shape::Map).doc(TAGS_DOC),
            ];
        }

        impl Described for $patch {
            const NAME: &'static str = stringify!($patch);
            const DOC: &'static str = concat!($($pdoc, "\n"),*);
            const CLOSED: bool = true;
            const FIELDS: &'static [Field] = &[
                Field::new("name", Shape::Name).doc(NAME_DOC),
                $(Field::new(
                    stringify!($field),
                    entity_field_shape(stringify!($field), <$ty as HasShape>::SHAPE),
                )
                .doc(concat!($($fdoc),*)),)*
                Field::new("tags", Shape::Map).doc(TAGS_DOC),
            ];
        }
    };
}

/// What `name` means on every entity.
const NAME_DOC: &str = "Unique in its collection, 1-255 characters.";
/// What `tags` means on every entity.
const TAGS_DOC: &str = "Free-form tags.";

/// Declares a string enum of the wire (serialized by variant name) whose shape lists
/// its variants.
macro_rules! wire_enum {
    ($(#[doc = $doc:literal])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $($variant),+
        }

        impl HasShape for $name {
            const SHAPE: Shape = Shape::OneOf(&[$(stringify!($variant)),+]);
        }
    };
}

fn no_strings() -> Vec<String> {
    Vec::new()
}
fn yes() -> bool {
    true
}
fn no() -> bool {
    false
}
fn smart_routing() -> String {
    "smartrouting".into()
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
fn all_of() -> Semantic {
    Semantic::AllOf
}
fn user() -> IdentityType {
    IdentityType::User
}
fn required_text() -> String {
    String::new()
}
fn dial() -> PolicyType {
    PolicyType::Dial
}
fn no_enrollment() -> Option<IdentityEnrollment> {
    None
}
fn default_auth_policy() -> String {
    DEFAULT_AUTH_POLICY.into()
}
fn all_primary() -> AuthPolicyPrimary {
    AuthPolicyPrimary::default()
}

/// The id of the built-in auth policy every identity has unless given another: every
/// primary method allowed (OpenZiti's `default`).
pub const DEFAULT_AUTH_POLICY: &str = "default";

/// Whether one primary authentication method is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodAllowed {
    pub allowed: bool,
}

impl Default for MethodAllowed {
    fn default() -> Self {
        MethodAllowed { allowed: true }
    }
}

/// The primary authentication methods of an auth policy (OpenZiti's `primary`): `cert`
/// (an enrolled certificate) and `updb` (username and password). Omitted: allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicyPrimary {
    #[serde(default)]
    pub cert: MethodAllowed,
    #[serde(default)]
    pub updb: MethodAllowed,
}

impl crate::describe::HasShape for AuthPolicyPrimary {
    const SHAPE: crate::describe::Shape = crate::describe::Shape::Named("AuthPolicyPrimary");
}

/// `enrollment` of an identity create body: what enrollment to open with the identity
/// (OpenZiti's shape; only `ott` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityEnrollment {
    /// Open a one-time-token enrollment (expiring after the default 24 hours).
    #[serde(default)]
    pub ott: bool,
}

impl crate::describe::HasShape for IdentityEnrollment {
    const SHAPE: crate::describe::Shape = crate::describe::Shape::Json;
}

entity_bodies! {
    /// `POST /edge/management/v1/services`.
    ServiceCreate,
    /// `PATCH /edge/management/v1/services/{id}`: every field optional.
    ServicePatch {
        role_attributes: Vec<String> = "no_strings",
        /// Ids of the configs attached to the service (at most one per config type).
        configs: Vec<String> = "no_strings",
        /// Whether clients must encrypt end to end (OpenZiti's default: true).
        encryption_required: bool = "yes",
        /// How a router picks among the service's terminators.
        terminator_strategy: String = "smart_routing",
    }
}

wire_enum! {
    /// What kind of party an identity is.
    IdentityType { User, Device, Service, Router }
}

entity_bodies! {
    /// `POST /edge/management/v1/identities`.
    IdentityCreate,
    /// `PATCH /edge/management/v1/identities/{id}`.
    IdentityPatch {
        /// `User`, `Device`, `Service` or `Router`.
        r#type: IdentityType = "user",
        /// Admins may use the management API.
        is_admin: bool = "no",
        role_attributes: Vec<String> = "no_strings",
        /// The auth policy saying how it may log in (`default`: any method).
        auth_policy_id: String = "default_auth_policy",
        /// Create only: `{"ott": true}` opens a one-time-token enrollment with the identity
        /// (see `enrollments`); never stored on the identity.
        enrollment: Option<IdentityEnrollment> = "no_enrollment",
    }
}

entity_bodies! {
    /// `POST /edge/management/v1/auth-policies`.
    AuthPolicyCreate,
    /// `PATCH /edge/management/v1/auth-policies/{id}`.
    AuthPolicyPatch {
        /// `{"cert": {"allowed": bool}, "updb": {"allowed": bool}}`; omitted: allowed.
        primary: AuthPolicyPrimary = "all_primary",
    }
}

entity_bodies! {
    /// `POST /edge/management/v1/edge-routers`.
    EdgeRouterCreate,
    /// `PATCH /edge/management/v1/edge-routers/{id}`.
    EdgeRouterPatch {
        role_attributes: Vec<String> = "no_strings",
        /// Whether the router also intercepts traffic as a tunneler.
        is_tunneler_enabled: bool = "no",
    }
}

entity_bodies! {
    /// `POST /edge/management/v1/config-types`.
    ConfigTypeCreate,
    /// `PATCH /edge/management/v1/config-types/{id}`.
    ConfigTypePatch {
        /// The JSON Schema every config of this type must satisfy (`{}`: anything).
        schema: serde_json::Value = "empty_object",
    }
}

entity_bodies! {
    /// `POST /edge/management/v1/configs`.
    ConfigCreate,
    /// `PATCH /edge/management/v1/configs/{id}`.
    ConfigPatch {
        /// The config type's id (required).
        config_type_id: String = "required_text",
        /// The config itself: a JSON object valid under the type's schema.
        data: serde_json::Value = "empty_object",
    }
}

wire_enum! {
    /// How a policy combines its role attributes: match all of them, or any.
    Semantic { AllOf, AnyOf }
}

wire_enum! {
    /// What a service policy grants: dialing the service, or binding (hosting) it.
    PolicyType { Dial, Bind }
}

entity_bodies! {
    /// `POST /edge/management/v1/service-policies`.
    ServicePolicyCreate,
    /// `PATCH /edge/management/v1/service-policies/{id}`.
    ServicePolicyPatch {
        /// `Dial` or `Bind`.
        r#type: PolicyType = "dial",
        semantic: Semantic = "all_of",
        /// Roles (`#attribute`, `@id`, `#all`) selecting identities.
        identity_roles: Vec<String> = "no_strings",
        /// Roles selecting services.
        service_roles: Vec<String> = "no_strings",
    }
}

entity_bodies! {
    /// `POST /edge/management/v1/edge-router-policies`.
    EdgeRouterPolicyCreate,
    /// `PATCH /edge/management/v1/edge-router-policies/{id}`.
    EdgeRouterPolicyPatch {
        semantic: Semantic = "all_of",
        identity_roles: Vec<String> = "no_strings",
        edge_router_roles: Vec<String> = "no_strings",
    }
}

entity_bodies! {
    /// `POST /edge/management/v1/service-edge-router-policies`.
    ServiceEdgeRouterPolicyCreate,
    /// `PATCH /edge/management/v1/service-edge-router-policies/{id}`.
    ServiceEdgeRouterPolicyPatch {
        semantic: Semantic = "all_of",
        service_roles: Vec<String> = "no_strings",
        edge_router_roles: Vec<String> = "no_strings",
    }
}

/// `POST /edge/management/v1/authenticators`: a username and password (`updb`) for an
/// identity. The password is hashed (argon2id) before it is replicated and never shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthenticatorCreate {
    /// Only `updb` for now.
    pub method: String,
    pub identity_id: String,
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub tags: Tags,
}

/// `PATCH /edge/management/v1/authenticators/{id}`: a new username or password (an admin's
/// password reset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthenticatorPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `POST /edge/management/v1/enrollments`: a one-time token with which an identity (`ott`)
/// or an edge router (`erott`) gets its certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollmentCreate {
    /// `ott` (an identity) or `erott` (an edge router).
    pub method: String,
    /// The identity to enroll (`ott`).
    #[serde(default)]
    pub identity_id: Option<String>,
    /// The edge router to enroll (`erott`).
    #[serde(default)]
    pub edge_router_id: Option<String>,
    /// RFC 3339 expiry; default 24 hours from now.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub tags: Tags,
}

/// `PATCH /edge/management/v1/enrollments/{id}`: only tags (the token and its expiry are
/// signed into the JWT; make a new enrollment instead).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollmentPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `POST /edge/client/v1/enroll` as JSON (the body may also be the bare CSR PEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The certificate signing request, PEM.
    pub csr: String,
}

/// The answer of `POST /edge/client/v1/enroll`: the signed certificate and the CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollResult {
    /// The client certificate (PEM), signed by the cluster CA.
    pub cert: String,
    /// The cluster CA certificate (PEM), which the client trusts from now on.
    pub ca: String,
    /// The enrolled identity's id (`ott`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// The enrolled edge router's id (`erott`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_router_id: Option<String>,
    /// SHA-256 fingerprint (lowercase hex) of the certificate's DER.
    pub fingerprint: String,
}

/// Answer of a create: the new entity's id (OpenZiti style), plus the entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created<T> {
    pub id: String,
    #[serde(flatten)]
    pub entity: T,
}

/// `POST /edge/client/v1/authenticate?method=password`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordLogin {
    pub username: String,
    pub password: String,
}

/// An API session (the answer of authenticate, refresh and `current-api-session`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSession {
    pub id: String,
    pub token: String,
    pub expires_at: String,
    pub identity: String,
    pub is_admin: bool,
}

/// One member of the controller cluster (`GET /fabric/v1/cluster/list-members`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub id: String,
    pub address: String,
    pub voter: bool,
    pub leader: bool,
    pub connected: bool,
    pub last_contact_ms: Option<u64>,
    pub applied_index: Option<u64>,
}

/// `GET /fabric/v1/cluster/state-hash`: a digest of this node's replicated state, so
/// replicas can be compared (they converged when every node shows the same
/// `appliedIndex` and `stateHash`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateHash {
    /// The node that answered.
    pub node_id: String,
    /// The index of the last log entry applied to the state hashed.
    pub applied_index: Option<u64>,
    /// SHA-256 of the state rows (table, key, value, in key order), lowercase hex.
    pub state_hash: String,
    /// How many rows were hashed.
    pub rows: u64,
}

/// `POST /fabric/v1/cluster/add-member`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMember {
    pub address: String,
    #[serde(default = "default_true")]
    pub is_voter: bool,
}

fn default_true() -> bool {
    true
}

/// `POST /fabric/v1/cluster/remove-member`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveMember {
    pub id: String,
}

/// `POST /fabric/v1/cluster/transfer-leadership`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferLeadership {
    #[serde(default)]
    pub new_leader_id: Option<String>,
}

/// Answer of transfer-leadership: the leader now in office.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderInOffice {
    pub leader_id: String,
}

/// `POST /fabric/v1/cluster/join-token` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    pub token: String,
    pub expires_at: String,
}

/// `GET /health-checks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub node_id: String,
    pub role: String,
    pub leader_id: Option<String>,
    pub term: u64,
    pub applied_index: Option<u64>,
    pub in_quorum: bool,
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub build_date: Option<String>,
    pub api_versions: BTreeMap<String, BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_rejects_unknown_fields() {
        let err = serde_json::from_str::<ServiceCreate>(r#"{"name":"a","bogus":1}"#).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn patch_accepts_partial_bodies() {
        let p: ServicePatch = serde_json::from_str(r#"{"tags":{"k":"v"}}"#).unwrap();
        assert_eq!(p.name, None);
        assert_eq!(p.tags.unwrap()["k"], "v");
    }
}
