//! The generic entity layer. An entity kind is declared by one [`EntityKind`] variant: its
//! table, its singular name and its validation. Create, update (merge of top-level
//! fields), delete, get and paged list, including the unique-name index, are written once
//! here for every kind.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::filter::{Filter, Sort};
use crate::{validate, DomainError, StateRead, StateWrite, StorageFault};

/// The kinds of replicated entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntityKind {
    Service,
}

impl EntityKind {
    /// The table the records live in (also the REST collection name).
    pub fn table(self) -> &'static str {
        match self {
            EntityKind::Service => "services",
        }
    }

    /// Singular, for messages.
    pub fn singular(self) -> &'static str {
        match self {
            EntityKind::Service => "service",
        }
    }

    fn name_index(self) -> String {
        format!("{}.by-name", self.table())
    }

    /// Checks a whole record of this kind (after create or after merging a patch).
    pub fn validate(self, record: &Value) -> Result<(), DomainError> {
        match self {
            EntityKind::Service => {
                let svc: weft_api::models::Service = serde_json::from_value(record.clone())
                    .map_err(|e| DomainError::InvalidField {
                        field: "body".into(),
                        reason: e.to_string(),
                    })?;
                validate::name("name", &svc.name)?;
                validate::role_attributes("roleAttributes", &svc.role_attributes)
            }
        }
    }
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
    for (_, bytes) in st.scan(kind.table())? {
        let record = decode(&bytes)?;
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
            items.push(rec);
        }
    }
    Ok(ListPage { items, total })
}

pub(crate) fn create(
    st: &mut dyn StateWrite,
    kind: EntityKind,
    record: &Value,
) -> Result<Result<Value, DomainError>, StorageFault> {
    if let Err(e) = kind.validate(record) {
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
    if let Some(existing) = get(st, kind, id)? {
        // The same proposal applied twice (a retried forward): answer as the first time.
        if &existing == record {
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
    st.put(kind.table(), id, &encode(record))?;
    st.put(&kind.name_index(), name, id.as_bytes())?;
    Ok(Ok(record.clone()))
}

pub(crate) fn update(
    st: &mut dyn StateWrite,
    kind: EntityKind,
    id: &str,
    patch: &Map<String, Value>,
    updated_at: &str,
) -> Result<Result<Value, DomainError>, StorageFault> {
    let Some(mut record) = get(st, kind, id)? else {
        return Ok(Err(DomainError::NotFound {
            kind: kind.singular().into(),
            id: id.into(),
        }));
    };
    let old_name = str_field(&record, "name").to_owned();
    if let Some(obj) = record.as_object_mut() {
        for (k, v) in patch {
            if matches!(k.as_str(), "id" | "createdAt" | "updatedAt") {
                continue;
            }
            obj.insert(k.clone(), v.clone());
        }
        obj.insert("updatedAt".into(), Value::String(updated_at.into()));
    }
    if let Err(e) = kind.validate(&record) {
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
    Ok(Ok(record))
}

pub(crate) fn delete(
    st: &mut dyn StateWrite,
    kind: EntityKind,
    id: &str,
) -> Result<Result<Value, DomainError>, StorageFault> {
    let Some(record) = get(st, kind, id)? else {
        return Ok(Err(DomainError::NotFound {
            kind: kind.singular().into(),
            id: id.into(),
        }));
    };
    st.delete(&kind.name_index(), str_field(&record, "name"))?;
    st.delete(kind.table(), id)?;
    Ok(Ok(record))
}
