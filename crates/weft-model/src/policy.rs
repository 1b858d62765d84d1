//! Policy evaluation: which services an identity may dial or bind, which edge routers it may
//! use, and why (policy advice). OpenZiti's semantics:
//!
//! * a role is `#all` (every entity), `#attribute` (entities with that role attribute) or
//!   `@id` (that entity);
//! * a policy's roles select an entity when *any* role matches (`AnyOf`) or when *every*
//!   role matches (`AllOf`, the default); an empty role list selects nothing;
//! * an identity may dial (bind) a service when one `Dial` (`Bind`) service policy selects
//!   both; it may use an edge router when an edge router policy selects both; a service
//!   may be reached through an edge router when a service edge router policy selects both.
//!
//! Evaluation reads the policy index ([`crate::index`]) rather than every record: the
//! candidate policies of an identity are the ones naming `#all`, `@<its id>` or one of its
//! `#attributes` (each then checked in full, as `AllOf` needs every role), and the
//! services or edge routers a policy selects are computed from the attribute index by set
//! union (`AnyOf`) or intersection (`AllOf`), exactly, with their names (which order the
//! results) from the same rows. Records are read only when shown: the candidate policies,
//! the services of the requested page (written from their stored JSON), the edge routers
//! listed. So the cost of a request follows the size of its answer, not of the network.
//! Pure functions of a state view: every controller answers the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::entity::{self, strings, EntityKind, SECRET_FIELDS};
use crate::index::{self, Named};
use crate::{StateRead, StorageFault};

/// What a role list is matched against: an entity's id and role attributes.
struct Subject<'a> {
    id: &'a str,
    attributes: Vec<&'a str>,
}

impl<'a> Subject<'a> {
    fn of(record: &'a Value) -> Self {
        Subject {
            id: record.get("id").and_then(Value::as_str).unwrap_or(""),
            attributes: record
                .get("roleAttributes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
        }
    }

    fn matches_role(&self, role: &str) -> bool {
        if role == "#all" {
            return true;
        }
        if let Some(attr) = role.strip_prefix('#') {
            return self.attributes.contains(&attr);
        }
        role.strip_prefix('@') == Some(self.id)
    }
}

/// Whether `roles` (combined by `semantic`, `"AnyOf"` or `"AllOf"`) select `record`.
pub fn selects(roles: &[String], semantic: &str, record: &Value) -> bool {
    if roles.is_empty() {
        return false;
    }
    let s = Subject::of(record);
    if semantic == "AnyOf" {
        roles.iter().any(|r| s.matches_role(r))
    } else {
        roles.iter().all(|r| s.matches_role(r))
    }
}

fn semantic(policy: &Value) -> &str {
    policy
        .get("semantic")
        .and_then(Value::as_str)
        .unwrap_or("AllOf")
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Whether `policy`'s `field` roles select `record`.
fn policy_selects(policy: &Value, field: &str, record: &Value) -> bool {
    selects(&strings(policy, field), semantic(policy), record)
}

/// `{id, name}` of a record, for listing what matched.
fn reference(v: &Value) -> Value {
    json!({ "id": str_of(v, "id"), "name": str_of(v, "name") })
}

/// The policies of `kind` whose `field` roles select `record`, in id order: the index's
/// candidates, each checked in full.
fn policies_selecting(
    st: &dyn StateRead,
    kind: EntityKind,
    field: &str,
    record: &Value,
) -> Result<Vec<Value>, StorageFault> {
    index::require(st)?;
    let mut out = Vec::new();
    for id in index::candidate_policies(st, kind, field, record)? {
        let policy = entity::get(st, kind, &id)?.ok_or_else(|| {
            StorageFault(format!(
                "the policy index names {} {id}, which does not exist",
                kind.singular()
            ))
        })?;
        if policy_selects(&policy, field, record) {
            out.push(policy);
        }
    }
    Ok(out)
}

/// The `target` records that `policy`'s `field` roles select: id -> name.
fn selected_by(
    st: &dyn StateRead,
    policy: &Value,
    field: &str,
    target: EntityKind,
) -> Result<Named, StorageFault> {
    index::selected(st, target, &strings(policy, field), semantic(policy))
}

/// The record `id` of `kind`, which an index row says exists.
fn indexed(st: &dyn StateRead, kind: EntityKind, id: &str) -> Result<Value, StorageFault> {
    entity::get(st, kind, id)?.ok_or_else(|| {
        StorageFault(format!(
            "the policy index names {} {id}, which does not exist",
            kind.singular()
        ))
    })
}

/// A service policy's `type` as a bit of a [`Grants`] mask.
fn permission_bit(policy: &Value) -> Result<u8, StorageFault> {
    match str_of(policy, "type") {
        "Bind" => Ok(BIND),
        "Dial" => Ok(DIAL),
        other => Err(StorageFault(format!(
            "service policy {} has type {other:?} (validation allows Dial and Bind only)",
            str_of(policy, "id")
        ))),
    }
}

/// The `Bind` permission bit.
const BIND: u8 = 1;
/// The `Dial` permission bit.
const DIAL: u8 = 2;

/// The permissions of a mask as the API shows them: sorted names.
fn permissions(mask: u8) -> Vec<String> {
    [(BIND, "Bind"), (DIAL, "Dial")]
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

/// Service id -> (name, permission bits [`BIND`], [`DIAL`]). A hash map: the result is put
/// in name order afterwards, and a grant is one insert, which a query does for hundreds of
/// services.
type Grants = HashMap<String, (String, u8)>;

/// The services `identity` may dial or bind, each with its name and permissions, from the
/// indexes: no service is decoded.
fn service_grants(st: &dyn StateRead, identity: &Value) -> Result<Grants, StorageFault> {
    let mut grants = Grants::new();
    for p in policies_selecting(st, EntityKind::ServicePolicy, "identityRoles", identity)? {
        let bit = permission_bit(&p)?;
        for (id, name) in selected_by(st, &p, "serviceRoles", EntityKind::Service)? {
            grants.entry(id).or_insert((name, 0)).1 |= bit;
        }
    }
    Ok(grants)
}

/// `(name, id, value)` of some records, by name (then id: names are unique, and the id
/// keeps the order total, and equal to a stable sort by name of the id-ordered list,
/// whatever the data).
fn by_name<T>(named: impl IntoIterator<Item = (String, (String, T))>) -> Vec<(String, String, T)> {
    let mut out: Vec<(String, String, T)> = named
        .into_iter()
        .map(|(id, (name, v))| (name, id, v))
        .collect();
    out.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// The services `identity` may dial or bind, in name order, each with its permissions
/// (`"Bind"` and/or `"Dial"`, sorted).
pub fn services_for_identity(
    st: &dyn StateRead,
    identity: &Value,
) -> Result<Vec<(Value, Vec<String>)>, StorageFault> {
    let mut out = Vec::new();
    for (_, id, mask) in by_name(service_grants(st, identity)?) {
        out.push((indexed(st, EntityKind::Service, &id)?, permissions(mask)));
    }
    Ok(out)
}

/// A service as the API shows it: secrets removed, with a `permissions` field.
fn with_permissions(service: Value, perms: Vec<String>) -> Value {
    let mut s = EntityKind::Service.public(service);
    if let Some(obj) = s.as_object_mut() {
        obj.insert("permissions".into(), perms.into());
    }
    s
}

/// [`services_for_identity`] as the API shows it: each service record (secrets removed)
/// with a `permissions` field.
pub fn services_with_permissions(
    st: &dyn StateRead,
    identity: &Value,
) -> Result<Vec<Value>, StorageFault> {
    Ok(services_for_identity(st, identity)?
        .into_iter()
        .map(|(service, perms)| with_permissions(service, perms))
        .collect())
}

/// One page (`offset`, at most `limit` items) of [`services_with_permissions`], and how
/// many services there are in all. Only the page's services are read, each written from
/// its stored JSON with `permissions` appended (see `listed_service`); the names that
/// order the result come with the index rows.
pub fn services_page(
    st: &dyn StateRead,
    identity: &Value,
    offset: u64,
    limit: u32,
) -> Result<(Vec<Box<RawValue>>, u64), StorageFault> {
    let named = by_name(service_grants(st, identity)?);
    let total = named.len() as u64;
    let mut items = Vec::new();
    for (_, id, mask) in named
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
    {
        items.push(listed_service(st, &id, permissions(mask))?);
    }
    Ok((items, total))
}

/// Service `id` as [`services_with_permissions`] shows it, as JSON text: the stored record
/// (compact JSON written by apply) with `"permissions":[...]` appended before its closing
/// brace, so a page of 500 services costs no decoding and re-encoding. A record in which
/// the name of a secret field or `permissions` appears anywhere (even inside tags) takes
/// the decoded path instead, which removes or replaces those fields properly.
fn listed_service(
    st: &dyn StateRead,
    id: &str,
    perms: Vec<String>,
) -> Result<Box<RawValue>, StorageFault> {
    let corrupt = |e: serde_json::Error| StorageFault(format!("corrupt service {id}: {e}"));
    let bytes = st.get(EntityKind::Service.table(), id)?.ok_or_else(|| {
        StorageFault(format!(
            "the policy index names service {id}, which does not exist"
        ))
    })?;
    let perms_json = serde_json::to_string(&perms).map_err(corrupt)?;
    let text = std::str::from_utf8(&bytes).ok();
    let spliced = text.and_then(|t| {
        let special = SECRET_FIELDS
            .iter()
            .chain(&["permissions"])
            .any(|f| t.contains(f));
        let body = t.trim_end().strip_suffix('}')?.trim_end();
        if special || !t.trim_start().starts_with('{') || !ends_with_version(body) {
            return None;
        }
        let sep = if body.ends_with('{') { "" } else { "," };
        Some(format!("{body}{sep}\"permissions\":{perms_json}}}"))
    });
    match spliced {
        Some(text) => RawValue::from_string(text).map_err(corrupt),
        None => {
            let record: Value = serde_json::from_slice(&bytes).map_err(corrupt)?;
            RawValue::from_string(
                serde_json::to_string(&with_permissions(record, perms)).map_err(corrupt)?,
            )
            .map_err(corrupt)
        }
    }
}

/// Whether a stored record's JSON text (without its closing brace) ends with its top-level
/// `"version":N`: apply writes `version` last (keys in order, and no service field sorts
/// after it), so a record with a version shows it as written. A record stored before
/// versions existed has none, and takes the decoded path, which shows version 1. (Inside
/// a string a quote is escaped, and a nested object ends with `}`, so neither can end the
/// text this way.)
fn ends_with_version(body: &str) -> bool {
    let digits = body.trim_end_matches(|c: char| c.is_ascii_digit());
    digits.len() < body.len() && digits.ends_with(",\"version\":")
}

/// The edge routers that the policies of `kind` (by `field`) let `record` use, by name:
/// `(name, id)`.
fn routers_for(
    st: &dyn StateRead,
    kind: EntityKind,
    field: &str,
    record: &Value,
) -> Result<Vec<(String, String)>, StorageFault> {
    let mut routers = Named::new();
    for p in policies_selecting(st, kind, field, record)? {
        routers.extend(selected_by(
            st,
            &p,
            "edgeRouterRoles",
            EntityKind::EdgeRouter,
        )?);
    }
    Ok(
        by_name(routers.into_iter().map(|(id, name)| (id, (name, ()))))
            .into_iter()
            .map(|(name, id, ())| (name, id))
            .collect(),
    )
}

/// The edge routers `identity` may use (edge router policies), by name.
pub fn edge_routers_for_identity(
    st: &dyn StateRead,
    identity: &Value,
) -> Result<Vec<Value>, StorageFault> {
    routers_for(st, EntityKind::EdgeRouterPolicy, "identityRoles", identity)?
        .into_iter()
        .map(|(_, id)| indexed(st, EntityKind::EdgeRouter, &id))
        .collect()
}

/// Why `identity` can or cannot use `service`: the dial and bind policies that link them,
/// the edge routers each side may use and the ones they share, whether it is dialable and
/// bindable, and in words what is missing.
pub fn advice(
    st: &dyn StateRead,
    identity: &Value,
    service: &Value,
) -> Result<Value, StorageFault> {
    let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in policies_selecting(st, EntityKind::ServicePolicy, "identityRoles", identity)? {
        if policy_selects(&p, "serviceRoles", service) {
            by_type
                .entry(str_of(&p, "type").to_owned())
                .or_default()
                .push(reference(&p));
        }
    }
    let dial = by_type.remove("Dial").unwrap_or_default();
    let bind = by_type.remove("Bind").unwrap_or_default();
    // Routers are shown as references, whose names come with the index rows.
    let identity_routers =
        routers_for(st, EntityKind::EdgeRouterPolicy, "identityRoles", identity)?;
    let service_routers = routers_for(
        st,
        EntityKind::ServiceEdgeRouterPolicy,
        "serviceRoles",
        service,
    )?;
    let service_router_ids: BTreeSet<&str> =
        service_routers.iter().map(|(_, id)| id.as_str()).collect();
    let router_ref = |(name, id): &(String, String)| json!({ "id": id, "name": name });
    let common: Vec<Value> = identity_routers
        .iter()
        .filter(|(_, id)| service_router_ids.contains(id.as_str()))
        .map(router_ref)
        .collect();
    Ok(advice_answer(
        (identity, service),
        (dial, bind),
        identity_routers.iter().map(router_ref).collect(),
        service_routers.iter().map(router_ref).collect(),
        common,
    ))
}

/// The advice as the API shows it, from what links `identity` and `service`: the dial and
/// bind policies, each side's edge routers and the ones they share (all as `{id, name}`),
/// with what follows from them (dialable, bindable, the reasons in words).
fn advice_answer(
    (identity, service): (&Value, &Value),
    (dial, bind): (Vec<Value>, Vec<Value>),
    identity_routers: Vec<Value>,
    service_routers: Vec<Value>,
    common: Vec<Value>,
) -> Value {
    let mut reasons = Vec::new();
    if dial.is_empty() && bind.is_empty() {
        reasons.push("no service policy grants this identity dial or bind on this service");
    }
    if identity_routers.is_empty() {
        reasons.push("no edge router policy gives this identity an edge router");
    }
    if service_routers.is_empty() {
        reasons.push("no service edge router policy gives this service an edge router");
    }
    if !identity_routers.is_empty() && !service_routers.is_empty() && common.is_empty() {
        reasons.push("the identity's and the service's edge routers have none in common");
    }
    let reachable = !common.is_empty();
    json!({
        "identityId": str_of(identity, "id"),
        "identityName": str_of(identity, "name"),
        "serviceId": str_of(service, "id"),
        "serviceName": str_of(service, "name"),
        "isDialable": !dial.is_empty() && reachable,
        "isBindable": !bind.is_empty() && reachable,
        "dialPolicies": dial,
        "bindPolicies": bind,
        "identityEdgeRouters": identity_routers,
        "serviceEdgeRouters": service_routers,
        "commonEdgeRouters": common,
        "reasons": reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity;
    use crate::state::MemState;
    use crate::StateWrite;

    /// Stores `record` as apply would (with its name and index rows), without validating it.
    fn put(st: &mut MemState, kind: EntityKind, record: Value) {
        let id = str_of(&record, "id").to_owned();
        st.put(kind.table(), &id, &serde_json::to_vec(&record).unwrap())
            .unwrap();
        st.put(&kind.name_index(), str_of(&record, "name"), id.as_bytes())
            .unwrap();
        index::on_change(st, kind, &id, None, Some(&record)).unwrap();
    }

    fn world() -> MemState {
        let mut st = MemState::default();
        index::ensure(&mut st).unwrap();
        put(
            &mut st,
            EntityKind::Identity,
            json!({"id": "alice", "name": "alice", "roleAttributes": ["dev", "eu"]}),
        );
        put(
            &mut st,
            EntityKind::Identity,
            json!({"id": "bob", "name": "bob", "roleAttributes": ["dev"]}),
        );
        put(
            &mut st,
            EntityKind::Service,
            json!({"id": "web", "name": "web", "roleAttributes": ["web"]}),
        );
        put(
            &mut st,
            EntityKind::Service,
            json!({"id": "db", "name": "db", "roleAttributes": ["db"]}),
        );
        put(
            &mut st,
            EntityKind::EdgeRouter,
            json!({"id": "er1", "name": "er1", "roleAttributes": ["eu"]}),
        );
        put(
            &mut st,
            EntityKind::EdgeRouter,
            json!({"id": "er2", "name": "er2", "roleAttributes": ["us"]}),
        );
        put(
            &mut st,
            EntityKind::ServicePolicy,
            json!({"id": "p1", "name": "devs-dial-web", "type": "Dial", "semantic": "AllOf", "identityRoles": ["#dev"], "serviceRoles": ["#web"]}),
        );
        put(
            &mut st,
            EntityKind::ServicePolicy,
            json!({"id": "p2", "name": "eu-devs-bind-all", "type": "Bind", "semantic": "AllOf", "identityRoles": ["#dev", "#eu"], "serviceRoles": ["#all"]}),
        );
        put(
            &mut st,
            EntityKind::EdgeRouterPolicy,
            json!({"id": "e1", "name": "all-eu", "semantic": "AnyOf", "identityRoles": ["#all"], "edgeRouterRoles": ["#eu"]}),
        );
        put(
            &mut st,
            EntityKind::ServiceEdgeRouterPolicy,
            json!({"id": "s1", "name": "web-anywhere", "semantic": "AnyOf", "serviceRoles": ["@web"], "edgeRouterRoles": ["#all"]}),
        );
        st
    }

    fn identity(st: &MemState, id: &str) -> Value {
        entity::get(st, EntityKind::Identity, id).unwrap().unwrap()
    }

    #[test]
    fn roles_select_by_all_attribute_and_id_with_both_semantics() {
        let r = json!({"id": "x", "roleAttributes": ["a", "b"]});
        let roles = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(selects(&roles(&["#all"]), "AllOf", &r));
        assert!(selects(&roles(&["#a", "#b"]), "AllOf", &r));
        assert!(!selects(&roles(&["#a", "#c"]), "AllOf", &r));
        assert!(selects(&roles(&["#a", "#c"]), "AnyOf", &r));
        assert!(selects(&roles(&["@x"]), "AllOf", &r));
        assert!(!selects(&roles(&["@y", "#c"]), "AnyOf", &r));
        assert!(!selects(&[], "AnyOf", &r), "no roles select nothing");
    }

    #[test]
    fn services_with_permissions_follow_the_policies() {
        let st = world();
        let names = |v: Vec<(Value, Vec<String>)>| {
            v.into_iter()
                .map(|(s, p)| (str_of(&s, "name").to_owned(), p))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(services_for_identity(&st, &identity(&st, "alice")).unwrap()),
            vec![
                ("db".to_owned(), vec!["Bind".to_owned()]),
                ("web".to_owned(), vec!["Bind".to_owned(), "Dial".to_owned()]),
            ]
        );
        assert_eq!(
            names(services_for_identity(&st, &identity(&st, "bob")).unwrap()),
            vec![("web".to_owned(), vec!["Dial".to_owned()])]
        );
        let routers = edge_routers_for_identity(&st, &identity(&st, "bob")).unwrap();
        assert_eq!(routers.len(), 1);
        assert_eq!(str_of(&routers[0], "id"), "er1");
    }

    #[test]
    fn advice_explains_what_is_missing() {
        let st = world();
        let web = entity::get(&st, EntityKind::Service, "web")
            .unwrap()
            .unwrap();
        let db = entity::get(&st, EntityKind::Service, "db")
            .unwrap()
            .unwrap();
        let a = advice(&st, &identity(&st, "bob"), &web).unwrap();
        assert_eq!(a["isDialable"], true);
        assert_eq!(a["isBindable"], false);
        assert_eq!(a["commonEdgeRouters"][0]["id"], "er1");
        assert_eq!(a["reasons"].as_array().unwrap().len(), 0);
        let a = advice(&st, &identity(&st, "bob"), &db).unwrap();
        assert_eq!(a["isDialable"], false);
        let reasons = a["reasons"].to_string();
        assert!(reasons.contains("no service policy"), "{reasons}");
        assert!(
            reasons.contains("no service edge router policy"),
            "{reasons}"
        );
    }

    #[test]
    fn a_page_of_services_is_the_listed_records_whatever_their_tags() {
        let mut st = world();
        // `permissions` inside tags: the decoded path; no such word: the spliced one.
        put(
            &mut st,
            EntityKind::Service,
            json!({"id": "odd", "name": "odd", "roleAttributes": ["web"],
                   "tags": {"permissions": "mine", "passwordHash": 1}}),
        );
        let bob = identity(&st, "bob");
        let listed = services_with_permissions(&st, &bob).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0]["tags"]["permissions"], "mine");
        let (page, total) = services_page(&st, &bob, 0, 10).unwrap();
        let page: Vec<Value> = page
            .iter()
            .map(|r| serde_json::from_str(r.get()).unwrap())
            .collect();
        assert_eq!((page, total), (listed, 2));
    }

    #[test]
    fn a_page_of_services_shows_each_version() {
        let mut st = world();
        // Written by apply now (a version, last), and before versions (none), with a tag
        // named `version` that must not pass for one.
        put(
            &mut st,
            EntityKind::Service,
            json!({"id": "new", "name": "new", "roleAttributes": ["web"], "version": 7}),
        );
        put(
            &mut st,
            EntityKind::Service,
            json!({"id": "old", "name": "old", "roleAttributes": ["web"],
                   "tags": {"version": 3}}),
        );
        let bob = identity(&st, "bob");
        let listed = services_with_permissions(&st, &bob).unwrap();
        let (page, _) = services_page(&st, &bob, 0, 10).unwrap();
        let page: Vec<Value> = page
            .iter()
            .map(|r| serde_json::from_str(r.get()).unwrap())
            .collect();
        assert_eq!(page, listed);
        let version = |name: &str| {
            page.iter()
                .find(|s| s["name"] == name)
                .map(|s| s["version"].clone())
        };
        assert_eq!(version("new"), Some(json!(7)));
        assert_eq!(version("old"), Some(json!(1)));
        assert_eq!(version("web"), Some(json!(1)));
        assert!(ends_with_version(r#"{"id":"a","version":12"#));
        assert!(!ends_with_version(r#"{"tags":{"version":12}"#));
        assert!(!ends_with_version(r#"{"name":"x,\"version\":1"#));
        assert!(!ends_with_version(r#"{"version":"#));
    }

    #[test]
    fn a_state_without_the_index_is_refused_not_answered_empty() {
        let mut st = world();
        st.map.retain(|(t, _), _| !t.starts_with("ix/"));
        let alice = identity(&st, "alice");
        assert!(services_for_identity(&st, &alice).is_err());
        assert!(index::ensure(&mut st).unwrap(), "built");
        assert_eq!(services_for_identity(&st, &alice).unwrap().len(), 2);
        assert!(!index::ensure(&mut st).unwrap(), "built once");
    }
}

/// The evaluation as it was before the index: every policy and every service or edge
/// router decoded and checked. The oracle the indexed evaluation is compared with.
#[cfg(test)]
mod scan {
    use super::*;
    use crate::entity::all;

    fn policies_selecting(
        st: &dyn StateRead,
        kind: EntityKind,
        field: &str,
        record: &Value,
    ) -> Vec<Value> {
        all(st, kind)
            .unwrap()
            .into_iter()
            .filter(|p| policy_selects(p, field, record))
            .collect()
    }

    pub fn services_for_identity(
        st: &dyn StateRead,
        identity: &Value,
    ) -> Vec<(Value, Vec<String>)> {
        let policies = policies_selecting(st, EntityKind::ServicePolicy, "identityRoles", identity);
        let mut out = Vec::new();
        for service in all(st, EntityKind::Service).unwrap() {
            let mut perms: Vec<String> = policies
                .iter()
                .filter(|p| policy_selects(p, "serviceRoles", &service))
                .map(|p| str_of(p, "type").to_owned())
                .collect();
            perms.sort();
            perms.dedup();
            if !perms.is_empty() {
                out.push((service, perms));
            }
        }
        out.sort_by(|a, b| str_of(&a.0, "name").cmp(str_of(&b.0, "name")));
        out
    }

    fn routers_for(
        st: &dyn StateRead,
        kind: EntityKind,
        field: &str,
        record: &Value,
    ) -> Vec<Value> {
        let policies = policies_selecting(st, kind, field, record);
        let mut out: Vec<Value> = all(st, EntityKind::EdgeRouter)
            .unwrap()
            .into_iter()
            .filter(|r| {
                policies
                    .iter()
                    .any(|p| policy_selects(p, "edgeRouterRoles", r))
            })
            .collect();
        out.sort_by(|a, b| str_of(a, "name").cmp(str_of(b, "name")));
        out
    }

    pub fn edge_routers_for_identity(st: &dyn StateRead, identity: &Value) -> Vec<Value> {
        routers_for(st, EntityKind::EdgeRouterPolicy, "identityRoles", identity)
    }

    pub fn advice(st: &dyn StateRead, identity: &Value, service: &Value) -> Value {
        let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for p in policies_selecting(st, EntityKind::ServicePolicy, "identityRoles", identity) {
            if policy_selects(&p, "serviceRoles", service) {
                by_type
                    .entry(str_of(&p, "type").to_owned())
                    .or_default()
                    .push(reference(&p));
            }
        }
        let dial = by_type.remove("Dial").unwrap_or_default();
        let bind = by_type.remove("Bind").unwrap_or_default();
        let identity_routers = edge_routers_for_identity(st, identity);
        let service_routers = routers_for(
            st,
            EntityKind::ServiceEdgeRouterPolicy,
            "serviceRoles",
            service,
        );
        let common: Vec<Value> = identity_routers
            .iter()
            .filter(|r| {
                service_routers
                    .iter()
                    .any(|s| str_of(s, "id") == str_of(r, "id"))
            })
            .map(reference)
            .collect();
        super::advice_answer(
            (identity, service),
            (dial, bind),
            identity_routers.iter().map(reference).collect(),
            service_routers.iter().map(reference).collect(),
            common,
        )
    }
}

/// The indexed evaluation against [`scan`] over random entities, policies, patches and
/// deletes applied as commands, and the index rows `apply` maintains against a rebuild.
#[cfg(test)]
mod consistency {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::entity::all;
    use crate::state::MemState;
    use crate::{apply, Command};

    /// splitmix64: a fixed sequence per seed, whatever the platform or crate versions.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    /// Few attributes, so that roles overlap; `all` is an attribute too, which `#all` must
    /// not be mistaken for.
    const ATTRS: [&str; 7] = ["a", "b", "c", "d", "e", "f", "all"];

    const TARGETS: [EntityKind; 3] = [
        EntityKind::Identity,
        EntityKind::Service,
        EntityKind::EdgeRouter,
    ];
    const POLICIES: [EntityKind; 3] = [
        EntityKind::ServicePolicy,
        EntityKind::EdgeRouterPolicy,
        EntityKind::ServiceEdgeRouterPolicy,
    ];

    fn ids(st: &MemState, kind: EntityKind) -> Vec<String> {
        st.keys(kind.table()).unwrap()
    }

    fn attributes(rng: &mut Rng) -> Value {
        let mut out: Vec<&str> = Vec::new();
        for _ in 0..rng.below(4) {
            let a = ATTRS[rng.below(ATTRS.len())];
            if !out.contains(&a) {
                out.push(a);
            }
        }
        json!(out)
    }

    fn roles(rng: &mut Rng, st: &MemState, target: EntityKind) -> Value {
        let mut out: Vec<String> = Vec::new();
        for _ in 0..rng.below(4) {
            let existing = ids(st, target);
            let role = match rng.below(12) {
                0 => "#all".to_owned(),
                1..=3 if !existing.is_empty() => {
                    format!("@{}", existing[rng.below(existing.len())])
                }
                _ => format!("#{}", ATTRS[rng.below(ATTRS.len())]),
            };
            if !out.contains(&role) {
                out.push(role);
            }
        }
        json!(out)
    }

    fn semantic(rng: &mut Rng) -> &'static str {
        if rng.chance(50) {
            "AnyOf"
        } else {
            "AllOf"
        }
    }

    /// The role fields (and their values) of a new `kind` policy.
    fn policy_fields(rng: &mut Rng, st: &MemState, kind: EntityKind) -> Map<String, Value> {
        let mut m = Map::new();
        for (field, target) in kind.role_fields() {
            m.insert((*field).into(), roles(rng, st, *target));
        }
        m.insert("semantic".into(), json!(semantic(rng)));
        if kind == EntityKind::ServicePolicy {
            m.insert(
                "type".into(),
                json!(if rng.chance(50) { "Dial" } else { "Bind" }),
            );
        }
        m
    }

    fn step(rng: &mut Rng, st: &mut MemState, n: usize) {
        let kind = if rng.chance(55) {
            TARGETS[rng.below(3)]
        } else {
            POLICIES[rng.below(3)]
        };
        let existing = ids(st, kind);
        let cmd = match rng.below(10) {
            0..=4 => {
                let id = format!("{}{n}", &kind.table()[..1]);
                let mut record = if TARGETS.contains(&kind) {
                    let mut m = Map::new();
                    m.insert("roleAttributes".into(), attributes(rng));
                    m
                } else {
                    policy_fields(rng, st, kind)
                };
                record.insert("id".into(), json!(id));
                // Names in another order than ids, so name order is really tested.
                record.insert("name".into(), json!(format!("n{}-{id}", rng.below(100))));
                Command::Create {
                    kind,
                    record: Value::Object(record),
                }
            }
            5..=7 if !existing.is_empty() => {
                let id = existing[rng.below(existing.len())].clone();
                let mut patch = if TARGETS.contains(&kind) {
                    let mut m = Map::new();
                    m.insert("roleAttributes".into(), attributes(rng));
                    m
                } else {
                    let mut m = policy_fields(rng, st, kind);
                    // Sometimes a patch touches one field only.
                    if rng.chance(30) {
                        m.retain(|k, _| k == "semantic");
                    }
                    m
                };
                if rng.chance(20) {
                    patch.insert("name".into(), json!(format!("r{n}")));
                }
                Command::Update {
                    kind,
                    id,
                    patch,
                    at: n as i64,
                    expected_version: None,
                }
            }
            _ if !existing.is_empty() => Command::Delete {
                kind,
                id: existing[rng.below(existing.len())].clone(),
                expected_version: None,
            },
            _ => return,
        };
        // Refusals (an `@id` still referenced, a name taken) are part of the game.
        let _ = apply(st, &cmd).expect("no storage fault");
    }

    fn check(st: &MemState) {
        let services = all(st, EntityKind::Service).unwrap();
        let mut identities = all(st, EntityKind::Identity).unwrap();
        // The bootstrap admin as the client API shows it: no attributes, not an entity.
        identities.push(json!({"id": "admin", "name": "admin", "roleAttributes": []}));
        for identity in &identities {
            let expected = scan::services_for_identity(st, identity);
            assert_eq!(services_for_identity(st, identity).unwrap(), expected);
            let listed: Vec<Value> = expected
                .into_iter()
                .map(|(s, p)| with_permissions(s, p))
                .collect();
            assert_eq!(services_with_permissions(st, identity).unwrap(), listed);
            for (offset, limit) in [(0, 500), (0, 2), (1, 3), (7, 10)] {
                let want: Vec<Value> = listed.iter().skip(offset).take(limit).cloned().collect();
                let (page, total) =
                    services_page(st, identity, offset as u64, limit as u32).unwrap();
                let page: Vec<Value> = page
                    .iter()
                    .map(|r| serde_json::from_str(r.get()).unwrap())
                    .collect();
                assert_eq!((page, total), (want, listed.len() as u64));
            }
            assert_eq!(
                edge_routers_for_identity(st, identity).unwrap(),
                scan::edge_routers_for_identity(st, identity)
            );
            // Advice for every third service: enough pairs, a bounded run time.
            for service in services.iter().step_by(3) {
                assert_eq!(
                    advice(st, identity, service).unwrap(),
                    scan::advice(st, identity, service)
                );
            }
        }
    }

    /// The index rows of `st`, with their values.
    fn index_rows(st: &MemState) -> Vec<((String, String), Vec<u8>)> {
        st.map
            .iter()
            .filter(|((t, _), _)| t.starts_with("ix/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn indexed_evaluation_equals_the_scan_over_random_changes() {
        for seed in 0..8 {
            let mut rng = Rng(seed);
            let mut st = MemState::default();
            for n in 0..300 {
                step(&mut rng, &mut st, n);
                if n % 50 == 49 {
                    check(&st);
                }
            }
            check(&st);
            // What apply maintained is what a build from scratch gives.
            let mut rebuilt = st.clone();
            rebuilt.map.retain(|(t, _), _| !t.starts_with("ix/"));
            assert!(index::ensure(&mut rebuilt).unwrap());
            assert_eq!(index_rows(&st), index_rows(&rebuilt), "seed {seed}");
            assert!(
                index_rows(&st).len() > 50,
                "seed {seed}: the test exercised the index"
            );
        }
    }

    #[test]
    fn the_first_command_on_a_state_without_the_index_builds_it() {
        let mut rng = Rng(99);
        let mut st = MemState::default();
        for n in 0..200 {
            step(&mut rng, &mut st, n);
        }
        // The state as a version without the index left it.
        let mut old = st.clone();
        old.map.retain(|(t, _), _| !t.starts_with("ix/"));
        assert!(!index::is_built(&old).unwrap());
        let cmd = Command::Create {
            kind: EntityKind::Service,
            record: json!({"id": "late", "name": "late", "roleAttributes": ["a"]}),
        };
        apply(&mut old, &cmd).unwrap().unwrap();
        apply(&mut st, &cmd).unwrap().unwrap();
        assert_eq!(old.map, st.map, "same rows as a state indexed all along");
        check(&old);
    }
}
