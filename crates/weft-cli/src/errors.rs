//! How the CLI fails: every error ends as one `error: ...` line on stderr and an exit code
//! (2: the command line was wrong, which includes a missing profile; 1: the controller
//! refused, or could not be reached; 0: success).
//!
//! A refusal prints the API's code, message and request id
//! (`error: NOT_FOUND: no such service (request id 7f3a...)`), so it can be found in the
//! controllers' logs.

use crate::profile::ProfileError;

/// Errors the CLI makes itself, or that carry an SDK error to print it the CLI's way.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong in a way clap cannot see (unknown entity type, a flag that
    /// does not apply, malformed JSON in a flag). Exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The SDK failed: the controller refused, or none answered.
    #[error("{}", describe(.0))]
    Api(weft_sdk::Error),
    /// The profile's session was refused (expired or revoked). Exit code 1.
    #[error("session expired: run weft login{}", request_suffix(.0.as_deref()))]
    SessionExpired(Option<String>),
    /// Some items of a bulk create failed (each was reported as it failed).
    #[error("{failed} of {total} items failed")]
    Bulk {
        /// How many failed.
        failed: usize,
        /// How many there were.
        total: usize,
    },
}

/// `CliError::Usage` as an `anyhow::Error`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    CliError::Usage(msg.into()).into()
}

/// An SDK error as an `anyhow::Error` that prints the CLI's way.
pub fn sdk(e: weft_sdk::Error) -> anyhow::Error {
    CliError::Api(e).into()
}

fn request_suffix(rid: Option<&str>) -> String {
    rid.map(|r| format!(" (request id {r})"))
        .unwrap_or_default()
}

/// `CODE: message (request id R)` for a refusal; a sentence for the other failures.
pub fn describe(e: &weft_sdk::Error) -> String {
    match e {
        weft_sdk::Error::Api {
            code,
            message,
            request_id,
            ..
        } => format!("{code}: {message}{}", request_suffix(request_id.as_deref())),
        weft_sdk::Error::Unavailable { attempts, last } => format!(
            "UNAVAILABLE: no controller answered ({attempts} attempt{}; last: {last})",
            if *attempts == 1 { "" } else { "s" }
        ),
        weft_sdk::Error::Config(m) => format!("configuration: {m}"),
        weft_sdk::Error::Protocol(m) => format!("protocol: {m}"),
    }
}

/// Turns a refused session (401) anywhere in `e` into [`CliError::SessionExpired`]: for
/// commands that run on a stored profile, where a 401 means the token is no longer good.
pub fn session_expired(e: anyhow::Error) -> anyhow::Error {
    let rid = e.chain().find_map(|c| match c.downcast_ref::<CliError>() {
        Some(CliError::Api(s)) if s.status() == Some(401) => {
            Some(s.request_id().map(str::to_owned))
        }
        _ => None,
    });
    match rid {
        Some(rid) => CliError::SessionExpired(rid).into(),
        None => e,
    }
}

/// The exit code for `e` (see the module doc).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(ce) = c.downcast_ref::<CliError>() {
            return match ce {
                CliError::Usage(_) | CliError::Api(weft_sdk::Error::Config(_)) => 2,
                _ => 1,
            };
        }
        if let Some(pe) = c.downcast_ref::<ProfileError>() {
            return match pe {
                ProfileError::NotFound { .. }
                | ProfileError::BadName(_)
                | ProfileError::NoConfigDir => 2,
                _ => 1,
            };
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> weft_sdk::Error {
        weft_sdk::Error::Api {
            status,
            code: code.into(),
            message: "nope".into(),
            request_id: Some("r1".into()),
            cause: None,
            data: None,
        }
    }

    #[test]
    fn refusals_print_code_message_and_request_id() {
        let e = sdk(api(404, "NOT_FOUND"));
        assert_eq!(format!("{e:#}"), "NOT_FOUND: nope (request id r1)");
        assert_eq!(exit_code(&e), 1);
    }

    #[test]
    fn usage_and_missing_profiles_exit_2() {
        assert_eq!(exit_code(&usage("bad")), 2);
        let e: anyhow::Error = ProfileError::NotFound {
            name: "x".into(),
            path: "p".into(),
        }
        .into();
        assert_eq!(exit_code(&e), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }

    #[test]
    fn a_401_on_a_profile_is_an_expired_session() {
        let e = session_expired(sdk(api(401, "INVALID_AUTH")).context("listing"));
        assert_eq!(
            format!("{e:#}"),
            "session expired: run weft login (request id r1)"
        );
        assert_eq!(exit_code(&e), 1);
        let other = session_expired(sdk(api(403, "FORBIDDEN")));
        assert!(format!("{other:#}").starts_with("FORBIDDEN"));
    }
}
