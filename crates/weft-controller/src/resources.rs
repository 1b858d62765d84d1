//! `/edge/management/v1/<collection>[/{id}]` for every replicated entity kind: list (paged,
//! filtered, sorted), get, create, patch, put, delete, written once, and documented once
//! (their OpenAPI operations and schemas come from the kind and its bodies' field lists). A
//! kind is served by declaring its [`Resource`] (its [`EntityKind`] and its create and patch
//! bodies) and adding [`routes`] for it in [`all`].
//!
//! PATCH merges the given fields; PUT (OpenZiti's update) takes the same body but replaces
//! every changeable field: one it does not give is reset to its create-time default, and
//! the fields a create requires are required. Every write takes `Idempotency-Key` and the
//! changes take `If-Match` ([`crate::writes`]); records show their `version`, also as
//! `ETag`.
//!
//! Validation runs before proposing (a bad request never reaches the log) and again in
//! apply (so the log can never hold an invalid state, whatever a proposer does); both are
//! [`EntityKind::validate`] and [`EntityKind::validate_in`], so they cannot disagree.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use weft_api::describe::{Described, Field, Shape};
use weft_api::models;
use weft_api::ErrorCode;
use weft_model::entity::{self, EntityKind};
use weft_model::{Command, Outcome};

use crate::app::Shared;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::http::{
    created, mark_stale, ok, page, parse_json, parse_read_query, RawBody, ReadQuery,
};
use crate::openapi::schemas::{entity_model, object};
use crate::openapi::{Model, Op};
use crate::routes::Routes;
use crate::writes::{self, IdempotencyKey, IfMatch};

/// One entity kind served under the management API.
pub trait Resource: Send + Sync + 'static {
    /// The kind (its table names the collection).
    const KIND: EntityKind;
    /// The `POST` body: unknown fields refused, defaults filled in.
    type Create: DeserializeOwned + Serialize + Described + Send + 'static;
    /// The `PATCH` body: every field optional, unknown fields refused.
    type Patch: DeserializeOwned + Serialize + Described + Send + 'static;
    /// The fields of a record as the API shows it, besides `id`, `createdAt` and
    /// `updatedAt` (for the API document). By default the create body's.
    const SHOWN: &'static [Field] = <Self::Create as Described>::FIELDS;
    /// Whether `PATCH /<collection>/{id}` is served (and documented).
    const PATCHABLE: bool = true;
    /// Whether preparing a body is slow (hashes a password) and so runs on the blocking
    /// pool; otherwise it runs in place (a hop to the pool costs tens of microseconds on
    /// every create, a measurable share of a single client's write latency).
    const SLOW_PREPARE: bool = false;
    /// Whether its bodies carry a secret (a password): their `Idempotency-Key` fingerprint
    /// is then a slow hash, since a fast one kept in replicated state could be guessed.
    const SECRET_BODY: bool = false;

    /// The stored fields a create body stands for, and whether an enrollment is opened for
    /// the new record in the same raft entry. A pure function of the body (so the
    /// document's field lists can be checked against it); runs on the blocking pool (it may
    /// hash a password). By default the body's own fields, no enrollment.
    fn prepare_create(body: Self::Create) -> Result<Prepared, ApiError> {
        Ok(Prepared {
            fields: object_of(&body)?,
            enroll: None,
        })
    }

    /// Completes the prepared fields with what only this controller can make (an
    /// enrollment's token and signed JWT). By default nothing.
    fn finish(ctx: &CreateContext, fields: &mut Map<String, Value>) -> Result<(), ApiError> {
        let _ = (ctx, fields);
        Ok(())
    }

    /// The stored fields a patch body changes. By default the body's own fields.
    fn prepare_patch(body: Self::Patch) -> Result<Map<String, Value>, ApiError> {
        object_of(&body)
    }
}

/// What [`Resource::prepare_create`] may use: the controller and the new record's id and
/// time (chosen before, so companions can refer to it).
pub struct CreateContext {
    pub state: Shared,
    pub id: String,
    pub now_ms: i64,
}

/// What a create body stands for: the record's fields, and the method (`ott`, `erott`) of
/// an enrollment to open for it, created atomically with it.
pub struct Prepared {
    pub fields: Map<String, Value>,
    pub enroll: Option<&'static str>,
}

macro_rules! resource {
    ($name:ident, $kind:ident, $create:ty, $patch:ty) => {
        #[doc = concat!("The `", stringify!($kind), "` entity kind.")]
        pub struct $name;
        impl Resource for $name {
            const KIND: EntityKind = EntityKind::$kind;
            type Create = $create;
            type Patch = $patch;
        }
    };
}

resource!(
    Services,
    Service,
    models::ServiceCreate,
    models::ServicePatch
);
/// `identities`: a create may open an `ott` enrollment with the identity
/// (`"enrollment": {"ott": true}`), in the same raft entry.
pub struct Identities;

impl Resource for Identities {
    const KIND: EntityKind = EntityKind::Identity;
    type Create = models::IdentityCreate;
    type Patch = models::IdentityPatch;

    fn prepare_create(mut body: Self::Create) -> Result<Prepared, ApiError> {
        let enrollment = body.enrollment.take();
        let mut fields = object_of(&body)?;
        fields.remove("enrollment");
        Ok(Prepared {
            fields,
            enroll: enrollment.is_some_and(|e| e.ott).then_some("ott"),
        })
    }

    fn prepare_patch(body: Self::Patch) -> Result<Map<String, Value>, ApiError> {
        if body.enrollment.is_some() {
            return Err(ApiError::field(
                "enrollment",
                "is set at create only; use /enrollments to enroll an existing identity",
            ));
        }
        let mut fields = object_of(&body)?;
        fields.remove("enrollment");
        Ok(fields)
    }
}

/// `edge-routers`: every new router comes with its `erott` enrollment (as in OpenZiti), and
/// is unverified until it enrolls.
pub struct EdgeRouters;

impl Resource for EdgeRouters {
    const KIND: EntityKind = EntityKind::EdgeRouter;
    type Create = models::EdgeRouterCreate;
    type Patch = models::EdgeRouterPatch;
    const SHOWN: &'static [Field] = &[
        Field::new("name", Shape::Text),
        Field::new("roleAttributes", Shape::Texts),
        Field::new("isTunnelerEnabled", Shape::Bool),
        Field::new("tags", Shape::Map),
        Field::new("isVerified", Shape::Bool).doc("Whether it has enrolled."),
        Field::new("fingerprint", Shape::Text)
            .nullable()
            .doc("SHA-256 of its enrolled certificate (null until it enrolls)."),
        Field::new("enrollmentJwt", Shape::Text)
            .nullable()
            .doc("Its open `erott` enrollment's token (null once enrolled)."),
        Field::new("enrollmentToken", Shape::Text).nullable(),
        Field::new("enrollmentExpiresAt", Shape::Text).nullable(),
    ];

    fn prepare_create(body: Self::Create) -> Result<Prepared, ApiError> {
        let mut fields = object_of(&body)?;
        fields.insert("isVerified".into(), Value::Bool(false));
        Ok(Prepared {
            fields,
            enroll: Some("erott"),
        })
    }
}
resource!(
    ConfigTypes,
    ConfigType,
    models::ConfigTypeCreate,
    models::ConfigTypePatch
);
resource!(Configs, Config, models::ConfigCreate, models::ConfigPatch);
resource!(
    ServicePolicies,
    ServicePolicy,
    models::ServicePolicyCreate,
    models::ServicePolicyPatch
);
resource!(
    EdgeRouterPolicies,
    EdgeRouterPolicy,
    models::EdgeRouterPolicyCreate,
    models::EdgeRouterPolicyPatch
);
/// `authenticators`: username and password (`updb`) of an identity. The password is hashed
/// here, before it is proposed, so it never reaches the log; the hash is never shown.
pub struct Authenticators;

impl Resource for Authenticators {
    const KIND: EntityKind = EntityKind::Authenticator;
    type Create = models::AuthenticatorCreate;
    type Patch = models::AuthenticatorPatch;
    const SLOW_PREPARE: bool = true;
    const SECRET_BODY: bool = true;
    const SHOWN: &'static [Field] = &[
        Field::new("name", Shape::Text).doc("The username."),
        Field::new("method", Shape::OneOf(&["updb", "cert"])).doc(
            "`cert` authenticators (made by enrollment) also have `certFingerprint` and `certPem`.",
        ),
        Field::new("identityId", Shape::Text),
        Field::new("tags", Shape::Map),
    ];

    fn prepare_create(body: Self::Create) -> Result<Prepared, ApiError> {
        if body.method != "updb" {
            return Err(ApiError::field(
                "method",
                format!(
                    "{:?} cannot be created here; use updb (cert authenticators come from enrollment)",
                    body.method
                ),
            ));
        }
        let mut m = Map::new();
        m.insert("name".into(), Value::String(body.username));
        m.insert("method".into(), Value::String(body.method));
        m.insert("identityId".into(), Value::String(body.identity_id));
        m.insert("passwordHash".into(), Value::String(hash(&body.password)?));
        m.insert(
            "tags".into(),
            serde_json::to_value(body.tags).unwrap_or_default(),
        );
        Ok(Prepared {
            fields: m,
            enroll: None,
        })
    }

    fn prepare_patch(body: Self::Patch) -> Result<Map<String, Value>, ApiError> {
        let mut m = Map::new();
        if let Some(u) = body.username {
            m.insert("name".into(), Value::String(u));
        }
        if let Some(p) = body.password {
            m.insert("passwordHash".into(), Value::String(hash(&p)?));
        }
        if let Some(t) = body.tags {
            m.insert("tags".into(), serde_json::to_value(t).unwrap_or_default());
        }
        Ok(m)
    }
}

/// Shortest password accepted.
const MIN_PASSWORD: usize = 8;

fn hash(password: &str) -> Result<String, ApiError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::field(
            "password",
            format!("must be at least {MIN_PASSWORD} characters"),
        ));
    }
    crate::tokens::hash_password(password).map_err(ApiError::internal)
}

resource!(
    AuthPolicies,
    AuthPolicy,
    models::AuthPolicyCreate,
    models::AuthPolicyPatch
);
resource!(
    ServiceEdgeRouterPolicies,
    ServiceEdgeRouterPolicy,
    models::ServiceEdgeRouterPolicyCreate,
    models::ServiceEdgeRouterPolicyPatch
);

/// `"service edge router"` or `"edge-routers"` as `ServiceEdgeRouter`, `EdgeRouters`.
pub fn pascal(words: &str) -> String {
    words
        .split([' ', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The record of `R` as the API shows it, for the document.
pub fn record_model<R: Resource>() -> Model {
    let singular = R::KIND.singular();
    entity_model(
        &pascal(singular),
        &format!("A {singular} as the API shows it."),
        R::SHOWN,
        &[],
    )
}

/// Which fields of the patch body of `R` a create requires (and so a PUT does too).
fn required_at_create<R: Resource>(json_name: &str) -> bool {
    <R::Create as Described>::FIELDS
        .iter()
        .any(|f| f.required && f.json_name() == json_name)
}

/// The `PUT` body of `R`: the patch body's fields, required where a create requires them.
fn put_model<R: Resource>() -> Model {
    let fields: Vec<Field> = <R::Patch as Described>::FIELDS
        .iter()
        .map(|f| {
            if required_at_create::<R>(&f.json_name()) {
                f.required()
            } else {
                *f
            }
        })
        .collect();
    Model::named(
        format!("{}Put", pascal(R::KIND.singular())),
        object(
            &format!(
                "`PUT /edge/management/v1/{}/{{id}}`: every changeable field; one left out is \
                 reset to its create-time default.",
                R::KIND.table()
            ),
            &fields,
            true,
        ),
    )
}

/// Adds the collection and item routes of `R` under `base` (the management API path),
/// with their documentation.
pub fn routes<R: Resource>(routes: Routes, base: &str) -> Routes {
    use ErrorCode::*;
    let table = R::KIND.table();
    let singular = R::KIND.singular();
    let (one, many) = (pascal(singular), pascal(table));
    let a = if singular.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    let collection = format!("{base}/{table}");
    let item = format!("{collection}/{{id}}");
    let id_doc = format!("The {singular}'s id.");
    let record = record_model::<R>();
    let routes = routes
        .get(
            &collection,
            list::<R>,
            Op::admin(format!("list{many}"), format!("List {table}"))
                .tag(table)
                .paged()
                .filtered()
                .sorted()
                .list(record.clone()),
        )
        .post(
            &collection,
            create::<R>,
            Op::admin(format!("create{one}"), format!("Create {a} {singular}"))
                .tag(table)
                .body(Model::of::<R::Create>())
                .created(record.clone())
                .etag()
                .write()
                .idempotent()
                .errors(&[InvalidField, EntityAlreadyExists]),
        )
        .get(
            &item,
            get_one::<R>,
            Op::admin(format!("get{one}"), format!("Show {a} {singular}"))
                .tag(table)
                .path_param("id", &id_doc)
                .read()
                .ok(record.clone())
                .etag()
                .errors(&[NotFound]),
        );
    let routes = if R::PATCHABLE {
        routes
            .patch(
                &item,
                update::<R>,
                Op::admin(format!("patch{one}"), format!("Change {a} {singular}"))
                    .tag(table)
                    .describe("Merges the given top-level fields into the record.")
                    .path_param("id", &id_doc)
                    .body(Model::of::<R::Patch>())
                    .ok(record.clone())
                    .etag()
                    .write()
                    .idempotent()
                    .if_match()
                    .errors(&[InvalidField, EntityAlreadyExists, NotFound]),
            )
            .put(
                &item,
                replace::<R>,
                Op::admin(format!("update{one}"), format!("Replace {a} {singular}"))
                    .tag(table)
                    .describe(
                        "Sets every changeable field: the given ones, and every other one to its \
                         create-time default (PATCH changes only the given fields). The fields a \
                         create requires are required.",
                    )
                    .path_param("id", &id_doc)
                    .body(put_model::<R>())
                    .ok(record)
                    .etag()
                    .write()
                    .idempotent()
                    .if_match()
                    .errors(&[InvalidField, EntityAlreadyExists, NotFound]),
            )
    } else {
        routes
    };
    routes.delete(
        &item,
        delete::<R>,
        Op::admin(format!("delete{one}"), format!("Delete {a} {singular}"))
            .tag(table)
            .path_param("id", &id_doc)
            .done()
            .write()
            .idempotent()
            .if_match()
            .errors(&[NotFound, CanNotDeleteReferencedEntity]),
    )
}

/// Every kind the management API serves, in the order the routes are added.
pub fn all(routes: Routes, base: &str) -> Routes {
    let routes = self::routes::<Services>(routes, base);
    let routes = self::routes::<Identities>(routes, base);
    let routes = self::routes::<EdgeRouters>(routes, base);
    let routes = self::routes::<ConfigTypes>(routes, base);
    let routes = self::routes::<Configs>(routes, base);
    let routes = self::routes::<ServicePolicies>(routes, base);
    let routes = self::routes::<EdgeRouterPolicies>(routes, base);
    let routes = self::routes::<ServiceEdgeRouterPolicies>(routes, base);
    let routes = self::routes::<crate::enroll::Enrollments>(routes, base);
    let routes = self::routes::<AuthPolicies>(routes, base);
    self::routes::<Authenticators>(routes, base)
}

/// Runs a read: linearizable when asked, marked stale when this node is not in quorum.
pub(crate) async fn prepare_read(state: &Shared, linearizable: bool) -> Result<bool, ApiError> {
    if linearizable {
        state.node.linearize().await?;
        return Ok(false);
    }
    if !state.node.caught_up() {
        // Just started: catch up first if we can, so a restart does not hide acknowledged
        // writes; if we cannot, answer from local state marked stale.
        let _ = state.node.linearize().await;
    }
    Ok(!state.node.in_quorum() || !state.node.caught_up())
}

/// The prelude of every read: its query, whether the answer is stale, and the state view.
pub(crate) async fn read_view(
    state: &Shared,
    raw: Option<&str>,
) -> Result<(ReadQuery, bool, weft_store::StateView), ApiError> {
    let q = parse_read_query(raw)?;
    let stale = prepare_read(state, q.linearizable).await?;
    Ok((q, stale, state.node.read_state()?))
}

/// One page (the query's `limit`/`offset`) of `items`, already filtered and ordered.
pub(crate) fn paged(items: Vec<Value>, q: &ReadQuery, stale: bool) -> Response {
    let total = items.len() as u64;
    let items: Vec<Value> = items
        .into_iter()
        .skip(usize::try_from(q.paging.offset).unwrap_or(usize::MAX))
        .take(q.paging.limit as usize)
        .collect();
    mark_stale(page(items, q.paging, total), stale)
}

/// The entity an apply produced, as the API shows it (no secret fields).
fn entity_of(kind: EntityKind, outcome: Outcome) -> Result<Value, ApiError> {
    match outcome {
        Outcome::Entity(v) => Ok(kind.public(v)),
        Outcome::Done | Outcome::Replayed(_) => Err(ApiError::internal("apply returned no entity")),
    }
}

/// Runs `f` on the blocking pool (password hashing is deliberately slow).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

fn object_of<T: Serialize>(body: &T) -> Result<Map<String, Value>, ApiError> {
    match serde_json::to_value(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::internal("body did not serialize to an object")),
    }
}

/// `GET /<collection>`.
async fn list<R: Resource>(
    State(state): State<Shared>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, stale, view) = read_view(&state, raw.as_deref()).await?;
    let p = entity::list(&view, R::KIND, &q.list_query())?;
    Ok(mark_stale(page(p.items, q.paging, p.total), stale))
}

/// `GET /<collection>/{id}`.
async fn get_one<R: Resource>(
    State(state): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (_, stale, view) = read_view(&state, raw.as_deref()).await?;
    match entity::get(&view, R::KIND, &id)? {
        Some(rec) => {
            let shown = weft_model::enrollment::present(&view, R::KIND, R::KIND.public(rec))?;
            let resp = writes::with_etag(ok(&shown), &shown);
            Ok(mark_stale(resp, stale))
        }
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("{} {id} not found", R::KIND.singular()),
        )),
    }
}

/// `POST /<collection>`.
async fn create<R: Resource>(
    State(state): State<Shared>,
    Admin(claims): Admin,
    key: IdempotencyKey,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let body: R::Create = parse_json(&bytes, false)?;
    let idem = key
        .resolve(&claims.sub, None, &bytes, R::SECRET_BODY)
        .await?;
    if let Some(answer) = writes::replay_from_local(&state, idem.as_ref())? {
        return answer.respond(|o| created_answer::<R>(&state, o));
    }
    let now_ms = weft_model::now_ms();
    let ctx = CreateContext {
        state: state.clone(),
        id: weft_model::new_id(),
        now_ms,
    };
    let mut prepared = if R::SLOW_PREPARE {
        blocking(move || R::prepare_create(body)).await?
    } else {
        R::prepare_create(body)?
    };
    R::finish(&ctx, &mut prepared.fields)?;
    let with = match prepared.enroll {
        Some(method) => vec![crate::enroll::new_enrollment(&ctx, method, &ctx.id, None)?],
        None => Vec::new(),
    };
    let mut record = prepared.fields;
    let now = weft_model::rfc3339(now_ms);
    record.insert("id".into(), Value::String(ctx.id));
    record.insert("createdAt".into(), Value::String(now.clone()));
    record.insert("updatedAt".into(), Value::String(now));
    let record = Value::Object(record);
    R::KIND.validate(&record)?;
    if idem.is_none() {
        // References (to config types, to ids named in roles...) against local state: a
        // quick answer for the common mistake; apply checks again against the committed
        // state. With a key, apply alone answers, so that the answer stored for a retry is
        // the committed state's, not that of a node lagging behind.
        R::KIND.validate_in(&state.node.read_state()?, &record)?;
    }
    let cmd = if with.is_empty() {
        Command::Create {
            kind: R::KIND,
            record,
        }
    } else {
        let mut records = vec![(R::KIND, record)];
        records.extend(with);
        Command::CreateAll { records }
    };
    writes::propose(&state, idem.as_ref(), cmd)
        .await?
        .respond(|o| created_answer::<R>(&state, o))
}

/// The answer to a create: 201 with the new entity, its version as `ETag`.
fn created_answer<R: Resource>(state: &Shared, outcome: Outcome) -> Result<Response, ApiError> {
    let entity = present(state, R::KIND, entity_of(R::KIND, outcome)?)?;
    Ok(writes::with_etag(created(&entity), &entity))
}

/// The answer to a change: 200 with the entity as it is after it, its version as `ETag`.
fn changed_answer<R: Resource>(state: &Shared, outcome: Outcome) -> Result<Response, ApiError> {
    let entity = present(state, R::KIND, entity_of(R::KIND, outcome)?)?;
    Ok(writes::with_etag(ok(&entity), &entity))
}

/// `record` as the API shows it, with its open enrollment (identities, edge routers).
fn present(state: &Shared, kind: EntityKind, record: Value) -> Result<Value, ApiError> {
    Ok(weft_model::enrollment::present(
        &state.node.read_state()?,
        kind,
        record,
    )?)
}

/// Proposes a change of record `id` to `fields` (at version `expected`, if given) and
/// answers it.
async fn change<R: Resource>(
    state: &Shared,
    id: String,
    fields: Map<String, Value>,
    expected: Option<u64>,
    idem: Option<&writes::Idem>,
) -> Result<Response, ApiError> {
    let cmd = Command::Update {
        kind: R::KIND,
        id,
        patch: fields,
        at: weft_model::now_ms(),
        expected_version: expected,
    };
    writes::propose(state, idem, cmd)
        .await?
        .respond(|o| changed_answer::<R>(state, o))
}

/// `PATCH /<collection>/{id}`.
async fn update<R: Resource>(
    State(state): State<Shared>,
    Admin(claims): Admin,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    key: IdempotencyKey,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    patch_or_replace::<R>(&state, &claims, id, expected, key, &bytes, false).await
}

/// `PUT /<collection>/{id}`: [`full_patch`] of the body.
async fn replace<R: Resource>(
    State(state): State<Shared>,
    Admin(claims): Admin,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    key: IdempotencyKey,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    patch_or_replace::<R>(&state, &claims, id, expected, key, &bytes, true).await
}

/// PATCH (`full` false) or PUT (`full` true, see [`full_patch`]) of one entity.
async fn patch_or_replace<R: Resource>(
    state: &Shared,
    claims: &crate::tokens::SessionClaims,
    id: String,
    expected: Option<u64>,
    key: IdempotencyKey,
    bytes: &[u8],
    full: bool,
) -> Result<Response, ApiError> {
    let body: R::Patch = parse_json(bytes, false)?;
    let idem = key
        .resolve(&claims.sub, expected, bytes, R::SECRET_BODY)
        .await?;
    if let Some(answer) = writes::replay_from_local(state, idem.as_ref())? {
        return answer.respond(|o| changed_answer::<R>(state, o));
    }
    let body = if full { full_patch::<R>(body)? } else { body };
    let fields = if R::SLOW_PREPARE {
        blocking(move || R::prepare_patch(body)).await?
    } else {
        R::prepare_patch(body)?
    };
    change::<R>(state, id, fields, expected, idem.as_ref()).await
}

/// A PUT body made whole: every patchable field it leaves out set to its create-time
/// default; one that a create requires (`name`...) must be given.
fn full_patch<R: Resource>(body: R::Patch) -> Result<R::Patch, ApiError> {
    let mut given = object_of(&body)?;
    let defaults = create_defaults::<R>()?;
    for f in <R::Patch as Described>::FIELDS {
        let name = f.json_name();
        if given.contains_key(&name) {
            continue;
        }
        if required_at_create::<R>(&name) {
            return Err(ApiError::field(
                &name,
                "is required by PUT, which sets every field (PATCH changes only the given ones)",
            ));
        }
        given.insert(
            name.clone(),
            defaults.get(&name).cloned().unwrap_or(Value::Null),
        );
    }
    serde_json::from_value(Value::Object(given)).map_err(|e| {
        ApiError::internal(format!(
            "a {} PUT body with defaults: {e}",
            R::KIND.singular()
        ))
    })
}

/// Every field of a create body of `R` with its default (the required ones with
/// placeholders, which [`full_patch`] never uses).
fn create_defaults<R: Resource>() -> Result<Map<String, Value>, ApiError> {
    let required: Map<String, Value> = <R::Create as Described>::FIELDS
        .iter()
        .filter(|f| f.required)
        .map(|f| (f.json_name(), weft_api::describe::sample(f.shape)))
        .collect();
    let body: R::Create = serde_json::from_value(Value::Object(required)).map_err(|e| {
        ApiError::internal(format!("the {} create defaults: {e}", R::KIND.singular()))
    })?;
    object_of(&body)
}

/// `DELETE /<collection>/{id}`.
async fn delete<R: Resource>(
    State(state): State<Shared>,
    Admin(claims): Admin,
    Path(id): Path<String>,
    IfMatch(expected): IfMatch,
    key: IdempotencyKey,
) -> Result<Response, ApiError> {
    let idem = key.resolve(&claims.sub, expected, b"", false).await?;
    let answered = |_: Outcome| Ok(ok(serde_json::json!({})));
    if let Some(answer) = writes::replay_from_local(&state, idem.as_ref())? {
        return answer.respond(answered);
    }
    let cmd = Command::Delete {
        kind: R::KIND,
        id,
        expected_version: expected,
    };
    writes::propose(&state, idem.as_ref(), cmd)
        .await?
        .respond(answered)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The record a create body of `R` stores, as the API shows it, has exactly the fields
    /// the document lists for `R` (its own and every record's: `id`, `createdAt`,
    /// `updatedAt` and `version`).
    fn check<R: Resource>(body: Value) {
        let create: R::Create = serde_json::from_value(body).expect("a valid body");
        let mut fields = R::prepare_create(create).expect("prepared").fields;
        for k in ["id", "createdAt", "updatedAt"] {
            fields.insert(k.into(), Value::String("x".into()));
        }
        let record = Value::Object(fields);
        let empty = weft_model::state::MemState::default();
        let shown: BTreeSet<String> =
            weft_model::enrollment::present(&empty, R::KIND, R::KIND.public(record))
                .expect("presented")
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
        let listed: BTreeSet<String> = crate::openapi::schemas::RECORD_FIELDS
            .iter()
            .chain(R::SHOWN)
            .map(|f| f.json_name())
            .collect();
        assert_eq!(shown, listed, "{}", R::KIND.table());
    }

    /// A PUT body of every kind is made whole from the create defaults: what it leaves out
    /// is reset, what a create requires must be given.
    #[test]
    fn put_resets_what_it_leaves_out_and_requires_what_a_create_requires() {
        let full = full_patch::<Services>(models::ServicePatch {
            name: Some("web".into()),
            ..Default::default()
        })
        .expect("whole");
        assert_eq!(full.role_attributes, Some(vec![]));
        assert_eq!(full.encryption_required, Some(true));
        assert_eq!(full.terminator_strategy.as_deref(), Some("smartrouting"));
        assert_eq!(full.tags, Some(Default::default()));
        let e = full_patch::<Services>(models::ServicePatch::default()).unwrap_err();
        assert_eq!(
            e.cause.as_deref().map(|c| c.starts_with("name:")),
            Some(true)
        );
        let e = full_patch::<Configs>(models::ConfigPatch {
            name: Some("c".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.cause.unwrap().starts_with("configTypeId:"));
        // Identities: `enrollment` (create only) stays unset; edge routers keep what only
        // enrollment sets (the patch body does not have it).
        let id = full_patch::<Identities>(models::IdentityPatch {
            name: Some("i".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(id.enrollment, None);
        assert_eq!(id.auth_policy_id.as_deref(), Some("default"));
        let fields = Identities::prepare_patch(id).unwrap();
        assert!(!fields.contains_key("enrollment"));
        let er = EdgeRouters::prepare_patch(
            full_patch::<EdgeRouters>(models::EdgeRouterPatch {
                name: Some("r".into()),
                ..Default::default()
            })
            .unwrap(),
        )
        .unwrap();
        assert!(!er.contains_key("isVerified"));
        assert_eq!(er["isTunnelerEnabled"], false);
        // Authenticators: username and password are required, tags reset.
        assert!(full_patch::<Authenticators>(models::AuthenticatorPatch::default()).is_err());
        let a = full_patch::<Authenticators>(models::AuthenticatorPatch {
            username: Some("u".into()),
            password: Some("long enough".into()),
            tags: None,
        })
        .unwrap();
        assert_eq!(a.tags, Some(Default::default()));
        let e =
            full_patch::<crate::enroll::Enrollments>(models::EnrollmentPatch::default()).unwrap();
        assert_eq!(e.tags, Some(Default::default()));
    }

    /// A create body of `R` with its required fields only.
    fn required<R: Resource>() -> Value {
        let fields = <R::Create as Described>::FIELDS;
        Value::Object(
            fields
                .iter()
                .filter(|f| f.required)
                .map(|f| (f.json_name(), weft_api::describe::sample(f.shape)))
                .collect(),
        )
    }

    #[test]
    fn records_show_exactly_the_documented_fields() {
        check::<Services>(required::<Services>());
        check::<Identities>(required::<Identities>());
        check::<EdgeRouters>(required::<EdgeRouters>());
        check::<ConfigTypes>(required::<ConfigTypes>());
        check::<Configs>(required::<Configs>());
        check::<ServicePolicies>(required::<ServicePolicies>());
        check::<EdgeRouterPolicies>(required::<EdgeRouterPolicies>());
        check::<ServiceEdgeRouterPolicies>(required::<ServiceEdgeRouterPolicies>());
        check::<AuthPolicies>(required::<AuthPolicies>());
        check::<Authenticators>(serde_json::json!({
            "method": "updb", "identityId": "i", "username": "u", "password": "long enough"
        }));
    }

    #[test]
    fn names_in_pascal_case() {
        assert_eq!(
            pascal("service edge router policy"),
            "ServiceEdgeRouterPolicy"
        );
        assert_eq!(pascal("edge-routers"), "EdgeRouters");
    }
}
