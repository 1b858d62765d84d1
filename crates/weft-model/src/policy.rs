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
//! Evaluation scans the policies (a few thousand at most), then the entities they can
//! select. Pure functions of a state view: every controller answers the same.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::entity::{all, strings, EntityKind};
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

/// The policies of `kind` whose `field` roles select `record`.
fn policies_selecting(
    st: &dyn StateRead,
    kind: EntityKind,
    field: &str,
    record: &Value,
) -> Result<Vec<Value>, StorageFault> {
    Ok(all(st, kind)?
        .into_iter()
        .filter(|p| policy_selects(p, field, record))
        .collect())
}

/// The services `identity` may dial or bind, in name order, each with its permissions
/// (`"Bind"` and/or `"Dial"`, sorted).
pub fn services_for_identity(
    st: &dyn StateRead,
    identity: &Value,
) -> Result<Vec<(Value, Vec<String>)>, StorageFault> {
    let policies = policies_selecting(st, EntityKind::ServicePolicy, "identityRoles", identity)?;
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for service in all(st, EntityKind::Service)? {
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
    Ok(out)
}

/// [`services_for_identity`] as the API shows it: each service record (secrets removed)
/// with a `permissions` field.
pub fn services_with_permissions(
    st: &dyn StateRead,
    identity: &Value,
) -> Result<Vec<Value>, StorageFault> {
    Ok(services_for_identity(st, identity)?
        .into_iter()
        .map(|(service, perms)| {
            let mut s = EntityKind::Service.public(service);
            if let Some(obj) = s.as_object_mut() {
                obj.insert("permissions".into(), perms.into());
            }
            s
        })
        .collect())
}

/// The edge routers that the policies of `kind` (by `field`) let `record` use, by name.
fn routers_for(
    st: &dyn StateRead,
    kind: EntityKind,
    field: &str,
    record: &Value,
) -> Result<Vec<Value>, StorageFault> {
    let policies = policies_selecting(st, kind, field, record)?;
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<Value> = all(st, EntityKind::EdgeRouter)?
        .into_iter()
        .filter(|r| {
            policies
                .iter()
                .any(|p| policy_selects(p, "edgeRouterRoles", r))
        })
        .collect();
    out.sort_by(|a, b| str_of(a, "name").cmp(str_of(b, "name")));
    Ok(out)
}

/// The edge routers `identity` may use (edge router policies), by name.
pub fn edge_routers_for_identity(
    st: &dyn StateRead,
    identity: &Value,
) -> Result<Vec<Value>, StorageFault> {
    routers_for(st, EntityKind::EdgeRouterPolicy, "identityRoles", identity)
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
    let identity_routers = edge_routers_for_identity(st, identity)?;
    let service_routers = routers_for(
        st,
        EntityKind::ServiceEdgeRouterPolicy,
        "serviceRoles",
        service,
    )?;
    let common: Vec<Value> = identity_routers
        .iter()
        .filter(|r| {
            service_routers
                .iter()
                .any(|s| str_of(s, "id") == str_of(r, "id"))
        })
        .map(reference)
        .collect();
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
    Ok(json!({
        "identityId": str_of(identity, "id"),
        "identityName": str_of(identity, "name"),
        "serviceId": str_of(service, "id"),
        "serviceName": str_of(service, "name"),
        "isDialable": !dial.is_empty() && reachable,
        "isBindable": !bind.is_empty() && reachable,
        "dialPolicies": dial,
        "bindPolicies": bind,
        "identityEdgeRouters": identity_routers.iter().map(reference).collect::<Vec<_>>(),
        "serviceEdgeRouters": service_routers.iter().map(reference).collect::<Vec<_>>(),
        "commonEdgeRouters": common,
        "reasons": reasons,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity;
    use crate::state::MemState;
    use crate::StateWrite;

    fn put(st: &mut MemState, kind: EntityKind, record: Value) {
        let id = str_of(&record, "id").to_owned();
        st.put(kind.table(), &id, &serde_json::to_vec(&record).unwrap())
            .unwrap();
    }

    fn world() -> MemState {
        let mut st = MemState::default();
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
}
