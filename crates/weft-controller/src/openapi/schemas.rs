//! Schemas of the API document: the wire types' field lists ([`weft_api::describe`]) as
//! OpenAPI schemas, the success and error envelopes, the records of the entity kinds, and
//! the field lists of the answers that handlers build as JSON values (policy advice,
//! recorded sessions...), which have no Rust type to list them.

use utoipa::openapi::schema::RefBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use weft_api::describe::{Described, Field, Shape};
use weft_api::ErrorCode;

/// A schema as an operation uses it: a `$ref` to a named component (carrying the
/// components it names) or an inline schema.
#[derive(Clone)]
pub struct Model {
    pub(crate) schema: RefOr<Schema>,
    pub(crate) components: Vec<(String, Schema)>,
}

impl Model {
    /// The named schema of a described wire type.
    pub fn of<T: Described>() -> Model {
        Model::named(T::NAME, object(T::DOC, T::FIELDS, T::CLOSED))
    }

    /// A named schema: the operation refers to it, the document holds it once.
    pub fn named(name: impl Into<String>, schema: Schema) -> Model {
        let name = name.into();
        Model {
            schema: Ref::from_schema_name(name.clone()).into(),
            components: vec![(name, schema)],
        }
    }

    /// A schema written into the operation itself.
    pub fn inline(schema: impl Into<RefOr<Schema>>) -> Model {
        Model {
            schema: schema.into(),
            components: Vec::new(),
        }
    }

    /// An array of this.
    pub fn array(self) -> Model {
        Model {
            schema: ArrayBuilder::new().items(self.schema).into(),
            components: self.components,
        }
    }

    /// The answer with nothing to say: `{}`.
    pub fn empty() -> Model {
        Model::named(
            "Empty",
            object("Nothing to report: the operation succeeded.", &[], true),
        )
    }
}

/// What `Shape::Name` allows: no control character (Unicode `Cc`), and at least one
/// character that is not white space.
pub const NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";
/// What an item of `Shape::Attributes` allows: a name (see [`NAME_PATTERN`]) that does
/// not start with `#` or `@`: its first character is neither nor white space, or it is
/// white space and a character that is not comes later. (Exactly the server's rule:
/// records show stored attributes, which must fit the same schema.)
pub const ATTRIBUTE_PATTERN: &str = r"^(?:[^#@\s\u0000-\u001F\u007F-\u009F]|[^\S\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F])[^\u0000-\u001F\u007F-\u009F]*$";
/// What an item of `Shape::Roles` allows: `#` or `@`, then a name.
pub const ROLE_PATTERN: &str = r"^[#@][^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";
/// What `Shape::NodeId` allows: a node id in decimal (not 0, below 2^64).
pub const NODE_ID_PATTERN: &str = "^[1-9][0-9]{0,18}$";

/// Doc text as one paragraph (the declaring macros keep each line's leading space).
fn clean(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn typed(t: Type, nullable: bool) -> SchemaType {
    if nullable {
        [t, Type::Null].into_iter().collect()
    } else {
        SchemaType::new(t)
    }
}

/// The schema of one field.
fn field(f: &Field) -> RefOr<Schema> {
    let doc = (!f.doc.trim().is_empty()).then(|| clean(f.doc));
    let scalar = |t: Type| {
        ObjectBuilder::new()
            .schema_type(typed(t, f.nullable))
            .description(doc.clone())
    };
    match f.shape {
        Shape::Text => scalar(Type::String).into(),
        Shape::Name => scalar(Type::String)
            .min_length(Some(1))
            .max_length(Some(weft_model::validate::MAX_NAME_LEN))
            .pattern(Some(NAME_PATTERN))
            .into(),
        Shape::NodeId => scalar(Type::String).pattern(Some(NODE_ID_PATTERN)).into(),
        Shape::Password => scalar(Type::String).min_length(Some(8)).into(),
        Shape::Attributes => unique_texts(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(weft_model::validate::MAX_NAME_LEN))
                .pattern(Some(ATTRIBUTE_PATTERN)),
            doc,
        ),
        Shape::Roles => unique_texts(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(weft_model::validate::MAX_NAME_LEN + 1))
                .pattern(Some(ROLE_PATTERN)),
            doc,
        ),
        Shape::JsonSchema => ObjectBuilder::new()
            .schema_type(
                [Type::Object, Type::Boolean]
                    .into_iter()
                    .collect::<SchemaType>(),
            )
            .description(doc)
            .into(),
        Shape::Bool => scalar(Type::Boolean).into(),
        Shape::Integer => scalar(Type::Integer).into(),
        Shape::Texts => ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::String))
            .description(doc)
            .into(),
        Shape::Map => scalar(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into(),
        Shape::Json => ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(doc)
            .into(),
        Shape::OneOf(choices) => scalar(Type::String)
            .enum_values(Some(choices.iter().copied()))
            .into(),
        Shape::Named(name) => RefBuilder::new()
            .ref_location_from_schema_name(name)
            .description(doc)
            .into(),
        Shape::Items(name) => ArrayBuilder::new()
            .items(Ref::from_schema_name(name))
            .description(doc)
            .into(),
    }
}

/// An array of distinct strings, each as `item` says.
fn unique_texts(item: ObjectBuilder, doc: Option<String>) -> RefOr<Schema> {
    let mut array = ArrayBuilder::new().items(item).description(doc).build();
    array.unique_items = true;
    array.into()
}

/// An object schema with these fields; `closed`: no other field is accepted.
pub fn object(doc: &str, fields: &[Field], closed: bool) -> Schema {
    let mut b = ObjectBuilder::new().schema_type(Type::Object);
    if !doc.trim().is_empty() {
        b = b.description(Some(clean(doc)));
    }
    for f in fields {
        let name = f.json_name();
        b = b.property(name.clone(), field(f));
        if f.required {
            b = b.required(name);
        }
    }
    if closed {
        b = b.additional_properties(Some(AdditionalProperties::FreeForm(false)));
    }
    b.build().into()
}

/// The fields every entity record has besides its kind's own.
pub const RECORD_FIELDS: [Field; 4] = [
    Field::new("id", Shape::Text),
    Field::new("createdAt", Shape::Text).doc("RFC 3339."),
    Field::new("updatedAt", Shape::Text).doc("RFC 3339."),
    VERSION_FIELD,
];

/// `version` of every entity record.
pub const VERSION_FIELD: Field = Field::new("version", Shape::Integer).doc(
    "1 at create, one more at every change of the record (also `ETag`). `If-Match: <version>` \
     on PATCH, PUT or DELETE makes the change happen only at that version (compare-and-set).",
);

/// The record of an entity kind as the API shows it: `id`, `createdAt`, `updatedAt`,
/// `version`, its `fields` and any `extra` ones, all of them always present.
pub fn entity_model(name: &str, doc: &str, fields: &[Field], extra: &[Field]) -> Model {
    let all: Vec<Field> = RECORD_FIELDS
        .iter()
        .chain(fields)
        .chain(extra)
        .map(|f| f.required())
        .collect();
    Model::named(name, object(doc, &all, false))
}

/// `{"data": <data>, "meta": {...}}`; a list's `meta` has `pagination`.
pub(crate) fn envelope(data: RefOr<Schema>, list: bool) -> Schema {
    let (data, meta) = if list {
        (ArrayBuilder::new().items(data).into(), "ListMeta")
    } else {
        (data, "Meta")
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("data", data)
        .property("meta", Ref::from_schema_name(meta))
        .required("data")
        .required("meta")
        .into()
}

/// The error envelope whose `error.code` is one of `codes`.
pub(crate) fn error_envelope(codes: &[ErrorCode]) -> Schema {
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes.iter().map(|c| c.as_str())));
    let error = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("code", code);
    AllOfBuilder::new()
        .item(Ref::from_schema_name("ErrorEnvelope"))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("error", error),
        )
        .into()
}

/// `error` of the error envelope.
const ERROR_BODY: &[Field] = &[
    Field::new("code", Shape::Named("ErrorCode")).required(),
    Field::new("message", Shape::Text).required(),
    Field::new("cause", Shape::Text).doc("What exactly was wrong (for field errors: the field)."),
    Field::new("requestId", Shape::Text)
        .required()
        .doc("Equal to the `X-Request-Id` header."),
    Field::new("data", Shape::Json).doc(
        "Machine-readable details: `controllers` (the other members' API URLs) for \
         CONTROLLER_NOT_IN_QUORUM, `parameter` and `position` for INVALID_FILTER, `version` \
         (the entity's current version) for PRECONDITION_FAILED.",
    ),
];

/// An `{id, name}` reference to an entity.
pub const ENTITY_REF: &[Field] = &[
    Field::new("id", Shape::Text).required(),
    Field::new("name", Shape::Text).required(),
];

/// The schemas every document holds (operations refer to them by name).
pub(crate) fn shared() -> Vec<(String, Schema)> {
    let codes = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("An error code; each maps to exactly one HTTP status."))
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())));
    let meta = [Field::new("pagination", Shape::Named("Pagination"))];
    let list_meta = [meta[0].required()];
    vec![
        ("ErrorCode".into(), codes.into()),
        ("ErrorBody".into(), object("", ERROR_BODY, false)),
        (
            "ErrorEnvelope".into(),
            object(
                "A failed request.",
                &[
                    Field::new("error", Shape::Named("ErrorBody")).required(),
                    Field::new("meta", Shape::Named("Meta")).required(),
                ],
                false,
            ),
        ),
        ("Meta".into(), object("Response metadata.", &meta, false)),
        (
            "ListMeta".into(),
            object("Metadata of a list.", &list_meta, false),
        ),
        {
            let m = Model::of::<weft_api::Pagination>();
            m.components[0].clone()
        },
        {
            let m = Model::of::<weft_api::models::AuthPolicyPrimary>();
            m.components[0].clone()
        },
        {
            let m = Model::of::<weft_api::models::MethodAllowed>();
            m.components[0].clone()
        },
        (
            "EntityRef".into(),
            object("A reference to an entity.", ENTITY_REF, false),
        ),
    ]
}

/// A recorded API session (`api-sessions`).
pub const API_SESSION_RECORD: &[Field] = &[
    Field::new("id", Shape::Text).required(),
    Field::new("identityId", Shape::Text).required(),
    Field::new("isAdmin", Shape::Bool).required(),
    Field::new("createdAt", Shape::Text).required(),
    Field::new("lastRefreshedAt", Shape::Text).required(),
    Field::new("expiresAt", Shape::Text).required(),
    Field::new("expiresAtMs", Shape::Integer)
        .required()
        .doc("`expiresAt` in milliseconds since the Unix epoch."),
    Field::new("issuedBy", Shape::Text)
        .required()
        .doc("The id of the controller that issued it."),
];

/// Why an identity can or cannot use a service (`policy-advice`).
pub const POLICY_ADVICE: &[Field] = &[
    Field::new("identityId", Shape::Text).required(),
    Field::new("identityName", Shape::Text).required(),
    Field::new("serviceId", Shape::Text).required(),
    Field::new("serviceName", Shape::Text).required(),
    Field::new("isDialable", Shape::Bool).required(),
    Field::new("isBindable", Shape::Bool).required(),
    Field::new("dialPolicies", Shape::Items("EntityRef")).required(),
    Field::new("bindPolicies", Shape::Items("EntityRef")).required(),
    Field::new("identityEdgeRouters", Shape::Items("EntityRef")).required(),
    Field::new("serviceEdgeRouters", Shape::Items("EntityRef")).required(),
    Field::new("commonEdgeRouters", Shape::Items("EntityRef")).required(),
    Field::new("reasons", Shape::Texts)
        .required()
        .doc("What is missing, in words."),
];

/// A controller as the client API lists it (for failover).
pub const CONTROLLER_REF: &[Field] = &[
    Field::new("id", Shape::Text).required(),
    Field::new("apiAddress", Shape::Text).required(),
    Field::new("isLeader", Shape::Bool).required(),
];

/// What a service policy grants, on a service listed for an identity.
pub const PERMISSIONS: Field = Field::new("permissions", Shape::Texts)
    .doc("`Bind`, `Dial` or both: what the service policies grant.");
