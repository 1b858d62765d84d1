//! Field lists of the wire types, from which the controller builds its OpenAPI document.
//!
//! This crate stays serde-only: it says *which* fields a body has and their JSON shape
//! ([`Described`]); the controller turns that into OpenAPI schemas. The create and patch
//! bodies of the entity kinds get their lists from the same macro that declares their
//! fields (`entity_bodies!` in [`crate::models`]), so they cannot drift. The lists written
//! by hand below are checked against their types by [`check_described`] (in this
//! module's tests, and in the controller's for its own types): every listed field
//! parses, and a value serializes to exactly the listed fields.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::models::{
    AddMember, ApiSession, AuthPolicyPrimary, AuthenticatorCreate, AuthenticatorPatch,
    ClusterMember, EnrollRequest, EnrollResult, EnrollmentCreate, EnrollmentPatch, Health,
    JoinToken, LeaderInOffice, MethodAllowed, PasswordLogin, RemoveMember, StateHash,
    TransferLeadership, Version,
};
use crate::Pagination;

/// The JSON shape of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A string.
    Text,
    /// An entity's name in a request: 1 to 255 characters, not only white space, no
    /// control characters (what the server checks, so the document says it too).
    Name,
    /// A controller's node id: a whole number written in decimal, as a string.
    NodeId,
    /// A password to set: at least 8 characters.
    Password,
    /// Role attributes: names (see [`Shape::Name`]) that do not start with `#` or `@`, no
    /// two alike.
    Attributes,
    /// Policy roles: `#all`, `#attribute` or `@id` (`#`/`@` and a name), no two alike.
    Roles,
    /// A JSON Schema: an object or a boolean.
    JsonSchema,
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Integer,
    /// An array of strings.
    Texts,
    /// An object with free-form keys and values (tags, maps).
    Map,
    /// Any JSON value.
    Json,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An object described by the named schema of the document.
    Named(&'static str),
    /// An array of objects described by the named schema of the document.
    Items(&'static str),
}

/// A Rust type with a known JSON shape (used by the declaring macros).
pub trait HasShape {
    /// Its shape.
    const SHAPE: Shape;
    /// Whether it may be `null`.
    const NULLABLE: bool = false;
}

impl HasShape for String {
    const SHAPE: Shape = Shape::Text;
}
impl HasShape for bool {
    const SHAPE: Shape = Shape::Bool;
}
impl HasShape for u32 {
    const SHAPE: Shape = Shape::Integer;
}
impl HasShape for u64 {
    const SHAPE: Shape = Shape::Integer;
}
impl HasShape for i64 {
    const SHAPE: Shape = Shape::Integer;
}
impl HasShape for Vec<String> {
    const SHAPE: Shape = Shape::Texts;
}
impl HasShape for Value {
    const SHAPE: Shape = Shape::Json;
}
impl<V> HasShape for BTreeMap<String, V> {
    const SHAPE: Shape = Shape::Map;
}
impl<T: HasShape> HasShape for Option<T> {
    const SHAPE: Shape = T::SHAPE;
    const NULLABLE: bool = true;
}

/// One field of a wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its name: the JSON name, or the Rust name (`snake_case`, `r#type`), which
    /// [`Field::json_name`] turns into the JSON one.
    pub name: &'static str,
    pub shape: Shape,
    /// A request must give it; a response always has it.
    pub required: bool,
    /// It may be `null`.
    pub nullable: bool,
    /// What it means (may be empty).
    pub doc: &'static str,
}

impl Field {
    /// An optional, non-null field without a description.
    pub const fn new(name: &'static str, shape: Shape) -> Field {
        Field {
            name,
            shape,
            required: false,
            nullable: false,
            doc: "",
        }
    }

    /// The same field, required.
    pub const fn required(mut self) -> Field {
        self.required = true;
        self
    }

    /// The same field, nullable.
    pub const fn nullable(mut self) -> Field {
        self.nullable = true;
        self
    }

    /// The same field, with a description.
    pub const fn doc(mut self, doc: &'static str) -> Field {
        self.doc = doc;
        self
    }

    /// The name as it appears in JSON (camelCase, as every body is serialized).
    pub fn json_name(&self) -> String {
        let raw = self.name.strip_prefix("r#").unwrap_or(self.name);
        let mut out = String::with_capacity(raw.len());
        let mut upper = false;
        for c in raw.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// A wire type whose fields are listed, for the API document.
pub trait Described {
    /// Its schema name in the document.
    const NAME: &'static str;
    /// What it is.
    const DOC: &'static str;
    /// Its fields.
    const FIELDS: &'static [Field];
    /// Unknown fields are refused (request bodies: `deny_unknown_fields`).
    const CLOSED: bool;
}

/// Whether `a == b` (usable in constants).
pub const fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The shape of field `name` of an entity body whose Rust type has shape `shape`: what
/// the server checks beyond the type, for the fields that every kind names alike
/// (`role_attributes`, `*_roles`, `*_id` and `terminator_strategy`, which follow the
/// rules of names, a config type's `schema`, a config's `data`).
pub const fn entity_field_shape(name: &str, shape: Shape) -> Shape {
    if same_text(name, "role_attributes") {
        Shape::Attributes
    } else if ends_with(name, "_roles") {
        Shape::Roles
    } else if ends_with(name, "_id") || same_text(name, "terminator_strategy") {
        Shape::Name
    } else if same_text(name, "schema") {
        Shape::JsonSchema
    } else if same_text(name, "data") {
        Shape::Map
    } else {
        shape
    }
}

/// Whether `text` is longer than `suffix` and ends with it (usable in constants).
const fn ends_with(text: &str, suffix: &str) -> bool {
    let (t, s) = (text.as_bytes(), suffix.as_bytes());
    if t.len() <= s.len() {
        return false;
    }
    let mut i = 0;
    while i < s.len() {
        if t[t.len() - s.len() + i] != s[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A JSON value of this shape (the first choice of a `OneOf`, an empty object for
/// `Named`).
pub fn sample(shape: Shape) -> Value {
    match shape {
        Shape::Text | Shape::Name => Value::String("x".into()),
        Shape::NodeId => Value::String("1".into()),
        Shape::Password => Value::String("password".into()),
        Shape::Attributes => Value::Array(vec![Value::String("x".into())]),
        Shape::Roles => Value::Array(vec![Value::String("#x".into())]),
        Shape::JsonSchema => Value::Object(Map::new()),
        Shape::Bool => Value::Bool(true),
        Shape::Integer => Value::from(1),
        Shape::Texts => Value::Array(vec![Value::String("x".into())]),
        Shape::Map | Shape::Json | Shape::Named(_) => Value::Object(Map::new()),
        Shape::Items(_) => Value::Array(Vec::new()),
        Shape::OneOf(choices) => Value::String(choices.first().copied().unwrap_or("").into()),
    }
}

/// Checks `T`'s field list against `T` itself: an object with every listed field (of
/// its shape) parses as a `T` and serializes back to exactly the listed fields; one with
/// only the required fields parses too; and a closed type refuses an unknown field.
pub fn check_described<T: Described + Serialize + DeserializeOwned>() -> Result<(), String> {
    let name = T::NAME;
    let full: Map<String, Value> = T::FIELDS
        .iter()
        .map(|f| (f.json_name(), sample(f.shape)))
        .collect();
    let parsed: T = serde_json::from_value(Value::Object(full.clone()))
        .map_err(|e| format!("{name}: every listed field does not parse: {e}"))?;
    let back = match serde_json::to_value(&parsed) {
        Ok(Value::Object(m)) => m,
        other => {
            return Err(format!(
                "{name}: does not serialize to an object: {other:?}"
            ))
        }
    };
    let listed: std::collections::BTreeSet<&String> = full.keys().collect();
    let shown: std::collections::BTreeSet<&String> = back.keys().collect();
    if listed != shown {
        return Err(format!(
            "{name}: listed fields {listed:?} but it serializes {shown:?}"
        ));
    }
    let minimal: Map<String, Value> = T::FIELDS
        .iter()
        .filter(|f| f.required)
        .map(|f| (f.json_name(), sample(f.shape)))
        .collect();
    if let Err(e) = serde_json::from_value::<T>(Value::Object(minimal)) {
        return Err(format!(
            "{name}: a field it needs is not listed as required: {e}"
        ));
    }
    if T::CLOSED {
        let mut extra = full;
        extra.insert("notAField".into(), Value::Bool(true));
        if serde_json::from_value::<T>(Value::Object(extra)).is_ok() {
            return Err(format!(
                "{name}: listed as closed but accepts unknown fields"
            ));
        }
    }
    Ok(())
}

const TAGS: Field = Field::new("tags", Shape::Map).doc("Free-form tags.");

impl Described for AuthenticatorCreate {
    const NAME: &'static str = "AuthenticatorCreate";
    const DOC: &'static str = "A username and password (`updb`) for an identity. The password \
        is hashed (argon2id) before it is replicated and is never shown.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::new("method", Shape::OneOf(&["updb"])).required(),
        Field::new("identityId", Shape::Name).required(),
        Field::new("username", Shape::Name).required(),
        Field::new("password", Shape::Password)
            .required()
            .doc("At least 8 characters."),
        TAGS,
    ];
}

impl Described for AuthenticatorPatch {
    const NAME: &'static str = "AuthenticatorPatch";
    const DOC: &'static str = "A new username or password (an admin's password reset).";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::new("username", Shape::Name),
        Field::new("password", Shape::Password).doc("At least 8 characters."),
        TAGS,
    ];
}

impl Described for EnrollmentCreate {
    const NAME: &'static str = "EnrollmentCreate";
    const DOC: &'static str = "A one-time token with which an identity (`ott`) or an edge \
        router (`erott`) gets its certificate. One open enrollment per target and method.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::new("method", Shape::OneOf(&["ott", "erott"])).required(),
        Field::new("identityId", Shape::Text)
            .nullable()
            .doc("The identity to enroll (`ott` only)."),
        Field::new("edgeRouterId", Shape::Text)
            .nullable()
            .doc("The edge router to enroll (`erott` only)."),
        Field::new("expiresAt", Shape::Text)
            .nullable()
            .doc("RFC 3339; default 24 hours from now, at most a year."),
        TAGS,
    ];
}

impl Described for EnrollmentPatch {
    const NAME: &'static str = "EnrollmentPatch";
    const DOC: &'static str = "Only tags: the token and its expiry are signed into the JWT.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[TAGS];
}

impl Described for EnrollRequest {
    const NAME: &'static str = "EnrollRequest";
    const DOC: &'static str = "The CSR, as JSON (the body may also be the bare PEM).";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[Field::new("csr", Shape::Text).required().doc(
        "A PEM certificate signing request; only its public key (and, for a router, \
              its DNS/IP names) is used.",
    )];
}

impl Described for EnrollResult {
    const NAME: &'static str = "EnrollResult";
    const DOC: &'static str = "The certificate the cluster CA signed, and the CA.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("cert", Shape::Text).required().doc("PEM."),
        Field::new("ca", Shape::Text)
            .required()
            .doc("The cluster CA (PEM)."),
        Field::new("identityId", Shape::Text).doc("`ott`: the enrolled identity."),
        Field::new("edgeRouterId", Shape::Text).doc("`erott`: the enrolled edge router."),
        Field::new("fingerprint", Shape::Text)
            .required()
            .doc("SHA-256 of the certificate's DER, lowercase hex."),
    ];
}

impl Described for PasswordLogin {
    const NAME: &'static str = "PasswordLogin";
    const DOC: &'static str = "Credentials of `authenticate?method=password`.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::new("username", Shape::Text).required(),
        Field::new("password", Shape::Text).required(),
    ];
}

impl Described for ApiSession {
    const NAME: &'static str = "ApiSession";
    const DOC: &'static str = "An API session: its token goes in `zt-session` or \
        `Authorization: Bearer` and is accepted by every controller.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("id", Shape::Text).required(),
        Field::new("token", Shape::Text).required(),
        Field::new("expiresAt", Shape::Text)
            .required()
            .doc("RFC 3339."),
        Field::new("identity", Shape::Text)
            .required()
            .doc("The identity's id (the bootstrap administrator's user name for it)."),
        Field::new("isAdmin", Shape::Bool).required(),
    ];
}

impl Described for ClusterMember {
    const NAME: &'static str = "ClusterMember";
    const DOC: &'static str = "One member of the controller cluster, as this node sees it.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("id", Shape::Text).required(),
        Field::new("address", Shape::Text)
            .required()
            .doc("Its API URL."),
        Field::new("voter", Shape::Bool).required(),
        Field::new("leader", Shape::Bool).required(),
        Field::new("connected", Shape::Bool).required(),
        Field::new("lastContactMs", Shape::Integer)
            .required()
            .nullable(),
        Field::new("appliedIndex", Shape::Integer)
            .required()
            .nullable(),
    ];
}

impl Described for AddMember {
    const NAME: &'static str = "AddMember";
    const DOC: &'static str = "A controller waiting with a join token, to be added.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::new("address", Shape::Text)
            .required()
            .doc("The waiting controller's https:// URL."),
        Field::new("isVoter", Shape::Bool).doc("Default true."),
    ];
}

impl Described for AuthPolicyPrimary {
    const NAME: &'static str = "AuthPolicyPrimary";
    const DOC: &'static str = "The primary login methods an auth policy allows; an omitted \
        method is allowed.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::new("cert", Shape::Named("MethodAllowed"))
            .doc("Login with a certificate from enrollment."),
        Field::new("updb", Shape::Named("MethodAllowed")).doc("Login with a password."),
    ];
}

impl Described for MethodAllowed {
    const NAME: &'static str = "MethodAllowed";
    const DOC: &'static str = "Whether one login method is allowed.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[Field::new("allowed", Shape::Bool).required()];
}

impl Described for RemoveMember {
    const NAME: &'static str = "RemoveMember";
    const DOC: &'static str = "The member to remove.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[Field::new("id", Shape::NodeId).required()];
}

impl Described for StateHash {
    const NAME: &'static str = "StateHash";
    const DOC: &'static str = "A digest of this controller's replicated state.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("nodeId", Shape::Text).required(),
        Field::new("appliedIndex", Shape::Integer)
            .required()
            .nullable()
            .doc("The last log entry applied to the state hashed."),
        Field::new("stateHash", Shape::Text)
            .required()
            .doc("SHA-256 (hex) of the state rows; equal on replicas at the same appliedIndex."),
        Field::new("rows", Shape::Integer).required(),
    ];
}

impl Described for TransferLeadership {
    const NAME: &'static str = "TransferLeadership";
    const DOC: &'static str = "The voter to hand leadership to; none: the best other voter.";
    const CLOSED: bool = true;
    const FIELDS: &'static [Field] = &[Field::new("newLeaderId", Shape::NodeId).nullable()];
}

impl Described for LeaderInOffice {
    const NAME: &'static str = "LeaderInOffice";
    const DOC: &'static str = "The leader now in office.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[Field::new("leaderId", Shape::Text).required()];
}

impl Described for JoinToken {
    const NAME: &'static str = "JoinToken";
    const DOC: &'static str = "A join token: lets one controller join the cluster.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("token", Shape::Text).required(),
        Field::new("expiresAt", Shape::Text).required(),
    ];
}

impl Described for Health {
    const NAME: &'static str = "Health";
    const DOC: &'static str = "This controller's raft state.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("nodeId", Shape::Text).required(),
        Field::new("role", Shape::Text)
            .required()
            .doc("leader, follower, candidate, learner or shutdown."),
        Field::new("leaderId", Shape::Text).required().nullable(),
        Field::new("term", Shape::Integer).required(),
        Field::new("appliedIndex", Shape::Integer)
            .required()
            .nullable(),
        Field::new("inQuorum", Shape::Bool).required(),
    ];
}

impl Described for Version {
    const NAME: &'static str = "Version";
    const DOC: &'static str = "The controller's version and the base path of each API.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("version", Shape::Text).required(),
        Field::new("buildDate", Shape::Text),
        Field::new("apiVersions", Shape::Map)
            .required()
            .doc("API name -> version -> base path."),
    ];
}

impl Described for Pagination {
    const NAME: &'static str = "Pagination";
    const DOC: &'static str = "Where this page is in the whole list.";
    const CLOSED: bool = false;
    const FIELDS: &'static [Field] = &[
        Field::new("limit", Shape::Integer).required(),
        Field::new("offset", Shape::Integer).required(),
        Field::new("totalCount", Shape::Integer)
            .required()
            .doc("Every match, not just this page."),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::*;

    /// `AuthPolicyPrimary` lists exactly its fields (by hand: the sample of a named
    /// schema, `{}`, is no `MethodAllowed`).
    #[test]
    fn auth_policy_primary_lists_its_fields() {
        let full = serde_json::json!({"cert": {"allowed": true}, "updb": {"allowed": false}});
        let parsed: AuthPolicyPrimary = serde_json::from_value(full.clone()).unwrap();
        assert_eq!(serde_json::to_value(parsed).unwrap(), full);
        let listed: Vec<String> = AuthPolicyPrimary::FIELDS
            .iter()
            .map(|f| f.json_name())
            .collect();
        assert_eq!(listed, ["cert", "updb"]);
        assert!(AuthPolicyPrimary::FIELDS
            .iter()
            .all(|f| f.shape == Shape::Named("MethodAllowed") && !f.required));
        assert!(serde_json::from_value::<AuthPolicyPrimary>(serde_json::json!({})).is_ok());
        assert!(serde_json::from_value::<AuthPolicyPrimary>(serde_json::json!({"x": {}})).is_err());
    }

    /// The entity bodies' fields carry the server's rules (names, attributes, roles,
    /// ids, schemas), so the document states them: found by schemathesis, whose values
    /// the server refused where the document said only "a string".
    #[test]
    fn entity_body_fields_carry_the_servers_rules() {
        fn shape_of<T: Described>(json: &str) -> Shape {
            T::FIELDS
                .iter()
                .find(|f| f.json_name() == json)
                .map(|f| f.shape)
                .unwrap_or_else(|| panic!("{} has no field {json}", T::NAME))
        }
        assert_eq!(shape_of::<ServiceCreate>("name"), Shape::Name);
        assert_eq!(shape_of::<ServicePatch>("name"), Shape::Name);
        assert_eq!(
            shape_of::<ServiceCreate>("roleAttributes"),
            Shape::Attributes
        );
        assert_eq!(shape_of::<ServiceCreate>("terminatorStrategy"), Shape::Name);
        assert_eq!(shape_of::<ServiceCreate>("configs"), Shape::Texts);
        assert_eq!(
            shape_of::<ServicePolicyCreate>("identityRoles"),
            Shape::Roles
        );
        assert_eq!(shape_of::<ServicePolicyPatch>("serviceRoles"), Shape::Roles);
        assert_eq!(
            shape_of::<EdgeRouterPolicyCreate>("edgeRouterRoles"),
            Shape::Roles
        );
        assert_eq!(shape_of::<IdentityCreate>("authPolicyId"), Shape::Name);
        assert_eq!(shape_of::<ConfigCreate>("configTypeId"), Shape::Name);
        assert_eq!(shape_of::<ConfigCreate>("data"), Shape::Map);
        assert_eq!(shape_of::<ConfigTypeCreate>("schema"), Shape::JsonSchema);
        assert_eq!(shape_of::<AuthenticatorCreate>("password"), Shape::Password);
        assert_eq!(shape_of::<RemoveMember>("id"), Shape::NodeId);
        // Fields the refinement must leave alone.
        assert_eq!(shape_of::<IdentityCreate>("isAdmin"), Shape::Bool);
        assert_eq!(shape_of::<ServiceCreate>("tags"), Shape::Map);
    }

    #[test]
    fn json_names_are_camel_case() {
        assert_eq!(
            Field::new("role_attributes", Shape::Texts).json_name(),
            "roleAttributes"
        );
        assert_eq!(Field::new("r#type", Shape::Text).json_name(), "type");
        assert_eq!(
            Field::new("expiresAt", Shape::Text).json_name(),
            "expiresAt"
        );
    }

    #[test]
    fn every_field_list_matches_its_type() {
        let checks = [
            check_described::<ServiceCreate>(),
            check_described::<ServicePatch>(),
            check_described::<IdentityCreate>(),
            check_described::<IdentityPatch>(),
            check_described::<EdgeRouterCreate>(),
            check_described::<EdgeRouterPatch>(),
            check_described::<ConfigTypeCreate>(),
            check_described::<ConfigTypePatch>(),
            check_described::<ConfigCreate>(),
            check_described::<ConfigPatch>(),
            check_described::<ServicePolicyCreate>(),
            check_described::<ServicePolicyPatch>(),
            check_described::<EdgeRouterPolicyCreate>(),
            check_described::<EdgeRouterPolicyPatch>(),
            check_described::<ServiceEdgeRouterPolicyCreate>(),
            check_described::<ServiceEdgeRouterPolicyPatch>(),
            check_described::<AuthPolicyCreate>(),
            check_described::<AuthPolicyPatch>(),
            check_described::<AuthenticatorCreate>(),
            check_described::<AuthenticatorPatch>(),
            check_described::<PasswordLogin>(),
            check_described::<EnrollmentCreate>(),
            check_described::<EnrollmentPatch>(),
            check_described::<EnrollRequest>(),
            check_described::<ApiSession>(),
            check_described::<ClusterMember>(),
            check_described::<StateHash>(),
            check_described::<AddMember>(),
            check_described::<RemoveMember>(),
            check_described::<MethodAllowed>(),
            check_described::<TransferLeadership>(),
            check_described::<LeaderInOffice>(),
            check_described::<JoinToken>(),
            check_described::<Health>(),
            check_described::<Version>(),
            check_described::<Pagination>(),
        ];
        let failures: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn a_field_missing_from_a_list_is_caught() {
        #[derive(Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Two {
            a: String,
            b_c: bool,
        }
        impl Described for Two {
            const NAME: &'static str = "Two";
            const DOC: &'static str = "";
            const CLOSED: bool = false;
            const FIELDS: &'static [Field] = &[Field::new("a", Shape::Text).required()];
        }
        assert!(check_described::<Two>().is_err());
    }

    #[test]
    fn enum_shapes_list_their_variants() {
        assert_eq!(
            <IdentityType as HasShape>::SHAPE,
            Shape::OneOf(&["User", "Device", "Service", "Router"])
        );
        for v in ["User", "Device", "Service", "Router"] {
            serde_json::from_value::<IdentityType>(Value::String(v.into())).unwrap();
        }
        assert_eq!(
            <PolicyType as HasShape>::SHAPE,
            Shape::OneOf(&["Dial", "Bind"])
        );
        assert_eq!(
            <Semantic as HasShape>::SHAPE,
            Shape::OneOf(&["AllOf", "AnyOf"])
        );
    }
}
