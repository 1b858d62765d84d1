//! Field validation shared by every entity kind. Each check names the failing field.

use crate::DomainError;

/// Longest name an entity may have.
pub const MAX_NAME_LEN: usize = 255;

fn invalid(field: &str, reason: impl Into<String>) -> DomainError {
    DomainError::InvalidField {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A name: 1 to 255 characters, no control characters, not only white space.
pub fn name(field: &str, value: &str) -> Result<(), DomainError> {
    let chars = value.chars().count();
    if chars == 0 || value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if chars > MAX_NAME_LEN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_NAME_LEN} characters (got {chars})"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Role attributes: each 1 to 255 characters, no `#`/`@` prefix (those are role syntax), no
/// duplicates.
pub fn role_attributes(field: &str, attrs: &[String]) -> Result<(), DomainError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, a) in attrs.iter().enumerate() {
        let f = format!("{field}[{i}]");
        name(&f, a)?;
        if a.starts_with('#') || a.starts_with('@') {
            return Err(invalid(&f, "must not start with '#' or '@'"));
        }
        if !seen.insert(a) {
            return Err(invalid(&f, format!("duplicate attribute {a:?}")));
        }
    }
    Ok(())
}

/// Entity ids referenced by a field: each non-empty, at most 255 characters, no duplicates.
pub fn ids(field: &str, ids: &[String]) -> Result<(), DomainError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let f = if ids.len() == 1 && !field.ends_with('s') {
            field.to_owned()
        } else {
            format!("{field}[{i}]")
        };
        if id.is_empty() {
            return Err(invalid(&f, "is required"));
        }
        name(&f, id)?;
        if !seen.insert(id) {
            return Err(invalid(&f, format!("duplicate id {id:?}")));
        }
    }
    Ok(())
}

/// Policy roles: each `#all`, `#attribute` or `@id`; no duplicates.
pub fn roles(field: &str, roles: &[String]) -> Result<(), DomainError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in roles.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let rest = r
            .strip_prefix('#')
            .or_else(|| r.strip_prefix('@'))
            .ok_or_else(|| invalid(&f, format!("{r:?} must be #all, #attribute or @id")))?;
        name(&f, rest).map_err(|_| invalid(&f, format!("{r:?}: nothing after the # or @")))?;
        if !seen.insert(r) {
            return Err(invalid(&f, format!("duplicate role {r:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_all_attribute_or_id() {
        let ok: Vec<String> = ["#all", "#web", "@Ab3"].map(String::from).to_vec();
        assert!(roles("serviceRoles", &ok).is_ok());
        for (bad, why) in [
            (vec!["web"], "no prefix"),
            (vec!["#"], "nothing after #"),
            (vec!["@"], "nothing after @"),
            (vec!["#web", "#web"], "duplicate"),
        ] {
            let bad: Vec<String> = bad.into_iter().map(String::from).collect();
            match roles("serviceRoles", &bad) {
                Err(DomainError::InvalidField { field, .. }) => {
                    assert!(field.starts_with("serviceRoles["), "{why}: {field}")
                }
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn referenced_ids_are_present_and_distinct() {
        assert!(ids("configs", &["a".into(), "b".into()]).is_ok());
        assert!(ids("configs", &["a".into(), "a".into()]).is_err());
        assert!(ids("configTypeId", &[String::new()]).is_err());
    }

    #[test]
    fn names_are_bounded() {
        assert!(name("name", "web").is_ok());
        assert!(name("name", "").is_err());
        assert!(name("name", "   ").is_err());
        assert!(name("name", &"x".repeat(255)).is_ok());
        assert!(name("name", &"x".repeat(256)).is_err());
        assert!(name("name", "a\nb").is_err());
    }

    #[test]
    fn attributes_reject_role_syntax_and_duplicates() {
        assert!(role_attributes("roleAttributes", &["a".into(), "b".into()]).is_ok());
        let e = role_attributes("roleAttributes", &["a".into(), "a".into()]).unwrap_err();
        assert!(
            matches!(e, DomainError::InvalidField { ref field, .. } if field == "roleAttributes[1]")
        );
        assert!(role_attributes("roleAttributes", &["#a".into()]).is_err());
    }
}
