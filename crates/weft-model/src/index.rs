//! Secondary indexes for policy evaluation, kept in the replicated state itself, so that
//! answering "which services may this identity use" reads only the policies and entities
//! that can match, instead of decoding every policy and every service per request.
//!
//! Rows (the key is an entity's or a policy's id, so reading one index table whole, a
//! contiguous range of the state, is the lookup):
//!
//! * `ix/<table>/attr/<attribute>`: the services and edge routers (`<table>` is their
//!   entity table) that carry role attribute `<attribute>` (identities have none: see
//!   `ATTRIBUTE_KINDS`). The value is the entity's name, denormalized: results are
//!   shown in name order, and reading the names here saves a lookup and a decode per
//!   entity of a result, which at hundreds of services per identity was most of a query;
//! * `ix/<table>/<field>/<role>`: the policies of table `<table>` whose role list `<field>`
//!   (`identityRoles`, `serviceRoles` or `edgeRouterRoles`) holds `<role>` verbatim
//!   (`#all`, `#attribute` or `@id`); the value is empty;
//! * table `ix/meta`, key `version`: present once the indexes of the state are complete.
//!
//! No other table starts with `ix/`, and a scan reads exactly one table, so these rows
//! never show up in entity listings; only snapshots carry them, which is what they are for.
//!
//! The rows are maintained by [`crate::apply`] (every entity create, update and delete goes
//! through `on_change`), so every node derives the same rows from the same log. A state
//! written by a version without indexes has no `ix/meta` row: [`ensure`] builds every row
//! from the entities alone, at the start of the first apply and whenever the store loads a
//! state image. Both give the same rows, so nodes and snapshots agree whichever ran it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::entity::{strings, EntityKind};
use crate::{StateRead, StateWrite, StorageFault};

/// The layout of the index rows. A state whose `ix/meta` row holds another value (or none)
/// is rebuilt by [`ensure`]. A future layout that changes what an existing table means must
/// also delete the old rows there, since [`ensure`] only adds the current layout's rows.
pub const VERSION: &str = "1";

/// The table of the completeness marker.
const META: &str = "ix/meta";
/// The marker's key in [`META`].
const META_KEY: &str = "version";

/// The kinds whose role attributes are indexed: the ones evaluation needs as sets (the
/// services of a service policy, the edge routers of a router policy). Identities are not:
/// evaluation starts from one identity and finds its policies through the policy rows, and
/// at 100,000 identities their attribute rows would be most of the index.
const ATTRIBUTE_KINDS: [EntityKind; 2] = [EntityKind::Service, EntityKind::EdgeRouter];

/// The index table of the `kind` records carrying role attribute `attr`.
fn attr_table(kind: EntityKind, attr: &str) -> String {
    format!("ix/{}/attr/{attr}", kind.table())
}

/// The index table of the `kind` policies whose `field` holds `role`.
pub(crate) fn role_table(kind: EntityKind, field: &str, role: &str) -> String {
    format!("ix/{}/{field}/{role}", kind.table())
}

/// The index rows of `record` (of `kind`): table -> value (its key is the record's id);
/// none for kinds without indexes.
fn rows_of(kind: EntityKind, record: Option<&Value>) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Some(record) = record else {
        return out;
    };
    if ATTRIBUTE_KINDS.contains(&kind) {
        let name = record.get("name").and_then(Value::as_str).unwrap_or("");
        for attr in strings(record, "roleAttributes") {
            out.insert(attr_table(kind, &attr), name.as_bytes().to_vec());
        }
    }
    for (field, _) in kind.role_fields() {
        for role in strings(record, field) {
            out.insert(role_table(kind, field, &role), Vec::new());
        }
    }
    out
}

/// Updates the index rows of record `id` of `kind`, which was `old` (`None`: created) and
/// is now `new` (`None`: deleted). Only rows that change are written.
pub(crate) fn on_change(
    st: &mut dyn StateWrite,
    kind: EntityKind,
    id: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), StorageFault> {
    let before = rows_of(kind, old);
    let after = rows_of(kind, new);
    for table in before.keys() {
        if !after.contains_key(table) {
            st.delete(table, id)?;
        }
    }
    for (table, value) in &after {
        if before.get(table) != Some(value) {
            st.put(table, id, value)?;
        }
    }
    Ok(())
}

/// Whether the indexes of this state are complete (see [`ensure`]).
pub fn is_built(st: &dyn StateRead) -> Result<bool, StorageFault> {
    Ok(st.get(META, META_KEY)?.as_deref() == Some(VERSION.as_bytes()))
}

/// A fault unless the indexes are complete: evaluating policies over a state without them
/// would silently find nothing.
pub(crate) fn require(st: &dyn StateRead) -> Result<(), StorageFault> {
    if is_built(st)? {
        Ok(())
    } else {
        Err(StorageFault(
            "the policy index of this state has not been built".into(),
        ))
    }
}

/// Builds every index row from the entities if the state has no complete indexes (it was
/// written by a version without them); returns whether it did. A pure function of the
/// state, so every node that runs it on the same state writes the same rows.
pub fn ensure(st: &mut dyn StateWrite) -> Result<bool, StorageFault> {
    if is_built(st)? {
        return Ok(false);
    }
    for kind in EntityKind::ALL {
        if !ATTRIBUTE_KINDS.contains(&kind) && kind.role_fields().is_empty() {
            continue;
        }
        for (id, bytes) in st.scan(kind.table())? {
            let record: Value = serde_json::from_slice(&bytes)
                .map_err(|e| StorageFault(format!("corrupt {} {id}: {e}", kind.singular())))?;
            for (table, value) in rows_of(kind, Some(&record)) {
                st.put(&table, &id, &value)?;
            }
        }
    }
    st.put(META, META_KEY, VERSION.as_bytes())?;
    Ok(true)
}

/// The ids of the `kind` policies whose `field` roles may select `subject`: those naming
/// `#all`, `@<its id>` or `#<one of its attributes>`, in id order. A superset: an `AllOf`
/// policy must still be checked against every one of its roles.
pub(crate) fn candidate_policies(
    st: &dyn StateRead,
    kind: EntityKind,
    field: &str,
    subject: &Value,
) -> Result<BTreeSet<String>, StorageFault> {
    let id = subject.get("id").and_then(Value::as_str).unwrap_or("");
    let mut roles = vec!["#all".to_owned(), format!("@{id}")];
    roles.extend(
        strings(subject, "roleAttributes")
            .into_iter()
            .map(|a| format!("#{a}")),
    );
    let mut out = BTreeSet::new();
    for role in roles {
        out.extend(st.keys(&role_table(kind, field, &role))?);
    }
    Ok(out)
}

/// The ids and names of some records: what a role selects, in id order.
pub(crate) type Named = BTreeMap<String, String>;

/// A name as an index row or the name index holds it.
fn name_text(bytes: Vec<u8>, what: &str) -> Result<String, StorageFault> {
    String::from_utf8(bytes).map_err(|_| StorageFault(format!("{what}: a name is not UTF-8")))
}

/// Just the name of a stored record.
#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: String,
}

/// The `kind` records `role` matches, with their names.
fn role_members(st: &dyn StateRead, kind: EntityKind, role: &str) -> Result<Named, StorageFault> {
    let mut out = Named::new();
    if role == "#all" {
        // The name index has every record, by name: (name, id).
        let table = kind.name_index();
        for (name, id) in st.scan(&table)? {
            out.insert(name_text(id, &table)?, name);
        }
    } else if let Some(attr) = role.strip_prefix('#') {
        let table = attr_table(kind, attr);
        for (id, name) in st.scan(&table)? {
            let name = name_text(name, &table)?;
            out.insert(id, name);
        }
    } else if let Some(id) = role.strip_prefix('@') {
        if let Some(bytes) = st.get(kind.table(), id)? {
            let n: NameOnly = serde_json::from_slice(&bytes)
                .map_err(|e| StorageFault(format!("corrupt {} {id}: {e}", kind.singular())))?;
            out.insert(id.to_owned(), n.name);
        }
    }
    Ok(out)
}

/// Whether `role` matches the existing `kind` record `id`.
fn role_matches(
    st: &dyn StateRead,
    kind: EntityKind,
    id: &str,
    role: &str,
) -> Result<bool, StorageFault> {
    if role == "#all" {
        return Ok(true);
    }
    if let Some(attr) = role.strip_prefix('#') {
        return st.contains(&attr_table(kind, attr), id);
    }
    Ok(role.strip_prefix('@') == Some(id))
}

/// Exactly the `kind` records that `roles`, combined by `semantic` (`"AnyOf"`; anything
/// else is `AllOf`), select, with their names: what filtering every record with
/// [`crate::policy::selects`] gives, read from the indexes without decoding a record
/// (but one per `@id` role, for its name).
pub(crate) fn selected(
    st: &dyn StateRead,
    kind: EntityKind,
    roles: &[String],
    semantic: &str,
) -> Result<Named, StorageFault> {
    if !ATTRIBUTE_KINDS.contains(&kind) {
        return Err(StorageFault(format!(
            "no attribute index for {}",
            kind.table()
        )));
    }
    if roles.is_empty() {
        return Ok(Named::new());
    }
    if semantic == "AnyOf" {
        if roles.iter().any(|r| r == "#all") {
            return role_members(st, kind, "#all");
        }
        let mut out = Named::new();
        for role in roles {
            out.extend(role_members(st, kind, role)?);
        }
        return Ok(out);
    }
    // AllOf: `#all` matches every record, so only the other roles narrow the set.
    let narrowing: Vec<&String> = roles.iter().filter(|r| *r != "#all").collect();
    if narrowing.is_empty() {
        return role_members(st, kind, "#all");
    }
    // Start from an `@id` role if there is one (at most one member), else from the smallest
    // attribute's members; keep those every other role matches.
    let mut start: Option<(usize, Named)> = None;
    if let Some(i) = narrowing.iter().position(|r| r.starts_with('@')) {
        start = Some((i, role_members(st, kind, narrowing[i])?));
    } else {
        for (i, role) in narrowing.iter().enumerate() {
            let members = role_members(st, kind, role)?;
            if start.as_ref().is_none_or(|(_, s)| members.len() < s.len()) {
                start = Some((i, members));
            }
        }
    }
    let Some((first, members)) = start else {
        return Ok(Named::new());
    };
    let mut out = Named::new();
    'member: for (id, name) in members {
        for (i, role) in narrowing.iter().enumerate() {
            if i != first && !role_matches(st, kind, &id, role)? {
                continue 'member;
            }
        }
        out.insert(id, name);
    }
    Ok(out)
}

/// The id of the first (by id) `kind` policy whose `field` names `role`, if any.
pub(crate) fn first_policy_with_role(
    st: &dyn StateRead,
    kind: EntityKind,
    field: &str,
    role: &str,
) -> Result<Option<String>, StorageFault> {
    Ok(st.keys(&role_table(kind, field, role))?.into_iter().next())
}
