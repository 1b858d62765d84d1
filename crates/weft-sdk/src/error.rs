//! The SDK's one error type: what a caller can act on after all retries are done.
//!
//! Retryable situations (another controller, an election, a full queue, a network
//! failure) never surface as errors while the call's deadline allows another attempt;
//! the caller sees either an answer of the cluster it must handle ([`Error::Api`]),
//! the end of its patience ([`Error::Unavailable`]), or a mistake of its own set-up.

use serde_json::Value;

/// Why a call (or building a client) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The controller refused the request (a 4xx the caller must handle, or a 500 bug
    /// report); the fields are those of the response's `error` envelope.
    #[error("{status} {code}: {message}{}", request_id.as_deref().map(|r| format!(" (request {r})")).unwrap_or_default())]
    Api {
        /// The HTTP status.
        status: u16,
        /// `error.code`, e.g. `NOT_FOUND`.
        code: String,
        /// `error.message`, meant for people.
        message: String,
        /// `error.requestId` (also the `X-Request-Id` header): quote it in bug reports.
        request_id: Option<String>,
        /// `error.cause`, e.g. the invalid field's name.
        cause: Option<Value>,
        /// `error.data`: machine-readable details, such as a filter error's position.
        data: Option<Value>,
    },
    /// No controller gave an answer within the call's deadline (every retryable failure
    /// exhausted); `last` describes the last one.
    #[error("no controller answered after {attempts} attempt(s); last: {last}")]
    Unavailable {
        /// HTTP exchanges tried during the call.
        attempts: u32,
        /// The last retryable failure (controller URL and cause).
        last: String,
    },
    /// Bad configuration: no URL, unreadable CA or identity file, invalid URL.
    #[error("configuration: {0}")]
    Config(String),
    /// A controller answered something that is not the API's envelope.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl Error {
    /// `error.code` of an [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// `error.requestId` of an [`Error::Api`].
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds an [`Error::Api`] from a status and a parsed error envelope (`{"error":
    /// {...}}`); an envelope without `error` still gives a usable error.
    pub(crate) fn from_envelope(
        status: u16,
        body: &Value,
        header_request_id: Option<String>,
    ) -> Error {
        let e = &body["error"];
        let text = |k: &str| e[k].as_str().map(str::to_owned);
        let present = |k: &str| e.get(k).filter(|v| !v.is_null()).cloned();
        Error::Api {
            status,
            code: text("code").unwrap_or_else(|| format!("HTTP_{status}")),
            message: text("message").unwrap_or_else(|| format!("HTTP status {status}")),
            request_id: text("requestId").or(header_request_id),
            cause: present("cause"),
            data: present("data"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_fields_become_the_api_error() {
        let body = json!({"error": {"code": "NOT_FOUND", "message": "service x not found",
            "requestId": "r-1", "cause": "id"}, "meta": {}});
        let e = Error::from_envelope(404, &body, None);
        assert_eq!(e.code(), Some("NOT_FOUND"));
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.request_id(), Some("r-1"));
        assert!(e.to_string().contains("service x not found"));
        assert!(e.to_string().contains("r-1"));
        match e {
            Error::Api { cause, data, .. } => {
                assert_eq!(cause, Some(json!("id")));
                assert_eq!(data, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_body_without_envelope_still_names_the_status() {
        let e = Error::from_envelope(418, &Value::Null, Some("hdr".into()));
        assert_eq!(e.code(), Some("HTTP_418"));
        assert_eq!(e.request_id(), Some("hdr"));
        assert_eq!(Error::Config("x".into()).code(), None);
    }
}
