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

#[cfg(test)]
mod tests {
    use super::*;

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
