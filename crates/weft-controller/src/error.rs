//! [`ApiError`]: every failure a handler can return, and the one place where it becomes
//! an HTTP status, an `error.code` and the JSON envelope.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use weft_api::{ErrorBody, ErrorCode, ErrorEnvelope, Meta};
use weft_cluster::ClusterError;
use weft_model::DomainError;

/// A failed request. The code decides the status ([`ErrorCode::status`]).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What went wrong, for clients to act on; decides the status.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// Which input was wrong (a field's name and why), when there is one.
    pub cause: Option<String>,
    /// Machine-readable details (`error.data`).
    pub data: Option<serde_json::Value>,
    /// Seconds for `Retry-After` when longer than the code's least value
    /// ([`ErrorCode::retry_after_secs`]), e.g. until a login rate limit ends.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            cause: None,
            data: None,
            retry_after: None,
        }
    }

    /// Asks the client to wait `secs` seconds (`Retry-After`); only for codes that carry
    /// `Retry-After`, and never less than the code's least value.
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds the cause (for field errors: the field's name and why).
    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// Adds machine-readable details (`error.data`).
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// A field error naming the field.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        ApiError::new(
            ErrorCode::InvalidField,
            format!("invalid value for {field}"),
        )
        .with_cause(format!("{field}: {}", reason.into()))
    }

    /// A bug or a local fault: logged, answered as 500 UNHANDLED.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "unhandled error");
        ApiError::new(ErrorCode::Unhandled, "internal error").with_cause(e.to_string())
    }

    /// Renders the envelope with the request id.
    pub fn into_response_with_id(self, request_id: &str) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code,
                message: self.message,
                cause: self.cause,
                request_id: request_id.to_owned(),
                data: self.data,
            },
            meta: Meta::default(),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(least) = self.code.retry_after_secs() {
            let secs = self.retry_after.unwrap_or(least).max(least);
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"weft\", zt-session"),
            );
        }
        resp
    }
}

/// Handlers return `ApiError`; the request-id middleware fills in the id (it replaces
/// the placeholder below with the real one, see `http::request_id`).
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self
            .clone()
            .into_response_with_id(crate::http::PENDING_REQUEST_ID);
        resp.extensions_mut().insert(self);
        resp
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let msg = e.to_string();
        match e {
            DomainError::NotFound { .. } => ApiError::new(ErrorCode::NotFound, msg),
            DomainError::NameTaken { .. } => {
                ApiError::new(ErrorCode::EntityAlreadyExists, msg).with_cause("name")
            }
            DomainError::InvalidField { field, reason } => ApiError::field(&field, reason),
            DomainError::Referenced { .. } => {
                ApiError::new(ErrorCode::CanNotDeleteReferencedEntity, msg)
            }
            DomainError::InvalidEnrollment(_) => {
                ApiError::new(ErrorCode::InvalidEnrollmentToken, msg)
            }
            DomainError::EnrollmentExpired(_) => ApiError::new(ErrorCode::EnrollmentExpired, msg),
            DomainError::AlreadyEnrolled(_) => {
                ApiError::new(ErrorCode::InvalidEnrollmentAlreadyEnrolled, msg)
            }
            DomainError::VersionMismatch { current, .. } => {
                ApiError::new(ErrorCode::PreconditionFailed, msg)
                    .with_cause(crate::writes::IF_MATCH)
                    .with_data(serde_json::json!({ "version": current }))
            }
            DomainError::IdempotencyKeyReused { .. } => {
                ApiError::new(ErrorCode::IdempotencyKeyReused, msg)
                    .with_cause(crate::writes::IDEMPOTENCY_KEY)
            }
            DomainError::Storage(f) => ApiError::internal(f),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let msg = e.to_string();
        match e {
            ClusterError::NoLeader => ApiError::new(ErrorCode::ClusterNoLeader, msg),
            ClusterError::NotInQuorum { controllers } => {
                let mut err = ApiError::new(ErrorCode::ControllerNotInQuorum, msg);
                err.data = Some(serde_json::json!({ "controllers": controllers }));
                err
            }
            ClusterError::Timeout(_) => ApiError::new(ErrorCode::Timeout, msg),
            ClusterError::TooManyRequests => ApiError::new(ErrorCode::ServerTooManyRequests, msg),
            ClusterError::Domain(d) => d.into(),
            ClusterError::InvalidMembership(_) => {
                ApiError::new(ErrorCode::InvalidMembershipChange, msg)
            }
            ClusterError::Internal(m) => ApiError::internal(m),
        }
    }
}

impl From<weft_store::StoreError> for ApiError {
    fn from(e: weft_store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<weft_model::StorageFault> for ApiError {
    fn from(e: weft_model::StorageFault) -> Self {
        ApiError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each cluster state maps to its row of the status table, never to a 500.
    #[test]
    fn cluster_states_map_to_the_status_table() {
        let cases = [
            (ClusterError::NoLeader, 503, "CLUSTER_NO_LEADER"),
            (
                ClusterError::NotInQuorum {
                    controllers: vec!["https://b".into()],
                },
                421,
                "CONTROLLER_NOT_IN_QUORUM",
            ),
            (ClusterError::Timeout("x".into()), 503, "TIMEOUT"),
            (
                ClusterError::TooManyRequests,
                429,
                "SERVER_TOO_MANY_REQUESTS",
            ),
            (
                ClusterError::Domain(DomainError::NameTaken {
                    kind: "service".into(),
                    name: "a".into(),
                }),
                409,
                "ENTITY_ALREADY_EXISTS",
            ),
            (
                ClusterError::Domain(DomainError::NotFound {
                    kind: "service".into(),
                    id: "a".into(),
                }),
                404,
                "NOT_FOUND",
            ),
            (
                ClusterError::Domain(DomainError::InvalidField {
                    field: "name".into(),
                    reason: "r".into(),
                }),
                400,
                "INVALID_FIELD",
            ),
            (
                ClusterError::Domain(DomainError::VersionMismatch {
                    kind: "service".into(),
                    id: "a".into(),
                    expected: 1,
                    current: 2,
                }),
                412,
                "PRECONDITION_FAILED",
            ),
            (
                ClusterError::Domain(DomainError::IdempotencyKeyReused { key: "k".into() }),
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ),
        ];
        for (err, status, code) in cases {
            let api: ApiError = err.into();
            assert_eq!(api.code.status(), status);
            assert_eq!(api.code.as_str(), code);
        }
    }

    #[test]
    fn not_in_quorum_lists_the_other_controllers_and_retryables_carry_retry_after() {
        let api: ApiError = ClusterError::NotInQuorum {
            controllers: vec!["https://b".into()],
        }
        .into();
        let resp = api.into_response_with_id("r1");
        assert_eq!(resp.status(), 421);
        let api: ApiError = ClusterError::NoLeader.into();
        let resp = api.into_response_with_id("r2");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
    }

    #[test]
    fn a_failed_compare_and_set_tells_the_current_version() {
        let api: ApiError = DomainError::VersionMismatch {
            kind: "service".into(),
            id: "a".into(),
            expected: 1,
            current: 5,
        }
        .into();
        assert_eq!(api.code, ErrorCode::PreconditionFailed);
        assert_eq!(api.data, Some(serde_json::json!({"version": 5})));
        assert!(api.message.contains("version 5"), "{}", api.message);
    }

    #[test]
    fn rate_limited_carries_the_wait_it_names_and_never_less_than_a_second() {
        let resp = ApiError::new(ErrorCode::RateLimited, "slow down")
            .with_retry_after(42)
            .into_response_with_id("r");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "42");
        let resp = ApiError::new(ErrorCode::RateLimited, "slow down")
            .with_retry_after(0)
            .into_response_with_id("r");
        assert_eq!(resp.headers()["retry-after"], "1");
        // A code without Retry-After gets none, whatever the error asks.
        let resp = ApiError::new(ErrorCode::InvalidAuth, "no")
            .with_retry_after(5)
            .into_response_with_id("r");
        assert!(!resp.headers().contains_key("retry-after"));
    }

    #[test]
    fn unauthorized_carries_www_authenticate() {
        let resp = ApiError::new(ErrorCode::Unauthorized, "no token").into_response_with_id("r");
        assert!(resp.headers().contains_key("www-authenticate"));
    }
}
