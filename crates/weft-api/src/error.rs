//! The error codes of the REST API and the single table that maps them to HTTP status.

use serde::{Deserialize, Serialize};

/// Every error code the REST API can answer with. The string form (`as_str`) is what
/// appears in `error.code`; [`ErrorCode::status`] is the only place a status is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// An election is running (or nobody won yet) while this node can reach a quorum.
    ClusterNoLeader,
    /// This node cannot reach a quorum of voters: go to another controller.
    ControllerNotInQuorum,
    /// Forwarding to the leader or applying through raft took too long.
    Timeout,
    /// The leader's write queue is full.
    ServerTooManyRequests,
    /// The token is unknown, malformed, expired or revoked.
    InvalidAuth,
    /// No credential was presented (session token; or join token, cluster client
    /// certificate where those are the credential).
    Unauthorized,
    /// The token is valid but the identity may not do this.
    Forbidden,
    /// The body is not JSON of the expected shape.
    CouldNotParseBody,
    /// A field has an invalid value (`cause` names the field).
    InvalidField,
    /// A list's `filter` or `sort` does not parse (`cause` and `error.data.position` say
    /// where).
    InvalidFilter,
    /// The entity (or route) does not exist.
    NotFound,
    /// The name is already taken.
    EntityAlreadyExists,
    /// The entity cannot be deleted: something still refers to it (a policy by `@id`...).
    CanNotDeleteReferencedEntity,
    /// The body is larger than the server accepts.
    RequestEntityTooLarge,
    /// The HTTP method is not supported on this route.
    MethodNotAllowed,
    /// A join token is malformed, expired or not signed by this cluster.
    InvalidJoinToken,
    /// The requested membership change is not possible in the current membership.
    InvalidMembershipChange,
    /// An enrollment token is unknown, forged, or of another enrollment method.
    InvalidEnrollmentToken,
    /// The enrollment's window has passed; an admin must issue a new one.
    EnrollmentExpired,
    /// The enrollment token was already used: the identity or router is enrolled.
    InvalidEnrollmentAlreadyEnrolled,
    /// The certificate signing request is missing, not PEM, or not acceptable.
    CouldNotProcessCsr,
    /// `If-Match` named another version than the entity's current one: someone changed it
    /// since the caller read it (`error.data.version` is the current version).
    PreconditionFailed,
    /// An `Idempotency-Key` was used before with another request (method, path or body).
    IdempotencyKeyReused,
    /// Too many failed logins came from the caller's address lately: `authenticate` is
    /// refused from there, even with the right credential, until `Retry-After` seconds
    /// have passed. (Not [`ErrorCode::ServerTooManyRequests`], which is about the
    /// cluster's write queue, not about this caller.)
    RateLimited,
    /// A bug: never the answer to a state of the cluster or to bad input.
    Unhandled,
}

impl ErrorCode {
    /// Every code, for table tests and documentation.
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::ClusterNoLeader,
        ErrorCode::ControllerNotInQuorum,
        ErrorCode::Timeout,
        ErrorCode::ServerTooManyRequests,
        ErrorCode::InvalidAuth,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::CouldNotParseBody,
        ErrorCode::InvalidField,
        ErrorCode::InvalidFilter,
        ErrorCode::NotFound,
        ErrorCode::EntityAlreadyExists,
        ErrorCode::CanNotDeleteReferencedEntity,
        ErrorCode::RequestEntityTooLarge,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InvalidJoinToken,
        ErrorCode::InvalidMembershipChange,
        ErrorCode::InvalidEnrollmentToken,
        ErrorCode::EnrollmentExpired,
        ErrorCode::InvalidEnrollmentAlreadyEnrolled,
        ErrorCode::CouldNotProcessCsr,
        ErrorCode::PreconditionFailed,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::RateLimited,
        ErrorCode::Unhandled,
    ];

    /// The HTTP status for this code. This is the one place a status is chosen.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::ClusterNoLeader => 503,
            ErrorCode::ControllerNotInQuorum => 421,
            ErrorCode::Timeout => 503,
            ErrorCode::ServerTooManyRequests => 429,
            ErrorCode::InvalidAuth => 401,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::CouldNotParseBody => 400,
            ErrorCode::InvalidField => 400,
            ErrorCode::InvalidFilter => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::EntityAlreadyExists => 409,
            ErrorCode::CanNotDeleteReferencedEntity => 409,
            ErrorCode::RequestEntityTooLarge => 413,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::InvalidJoinToken => 401,
            ErrorCode::InvalidMembershipChange => 400,
            ErrorCode::InvalidEnrollmentToken => 400,
            ErrorCode::EnrollmentExpired => 400,
            ErrorCode::InvalidEnrollmentAlreadyEnrolled => 410,
            ErrorCode::CouldNotProcessCsr => 400,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unhandled => 500,
        }
    }

    /// Whether the response carries `Retry-After` (the client should retry later), and
    /// its least value. An answer may name a longer wait: [`ErrorCode::RateLimited`]
    /// names the time left until the caller's failed logins leave the window.
    pub fn retry_after_secs(self) -> Option<u32> {
        match self {
            ErrorCode::ClusterNoLeader
            | ErrorCode::Timeout
            | ErrorCode::ServerTooManyRequests
            | ErrorCode::RateLimited => Some(1),
            _ => None,
        }
    }

    /// The wire string (`error.code`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ClusterNoLeader => "CLUSTER_NO_LEADER",
            ErrorCode::ControllerNotInQuorum => "CONTROLLER_NOT_IN_QUORUM",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::ServerTooManyRequests => "SERVER_TOO_MANY_REQUESTS",
            ErrorCode::InvalidAuth => "INVALID_AUTH",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::CouldNotParseBody => "COULD_NOT_PARSE_BODY",
            ErrorCode::InvalidField => "INVALID_FIELD",
            ErrorCode::InvalidFilter => "INVALID_FILTER",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::EntityAlreadyExists => "ENTITY_ALREADY_EXISTS",
            ErrorCode::CanNotDeleteReferencedEntity => "CAN_NOT_DELETE_REFERENCED_ENTITY",
            ErrorCode::RequestEntityTooLarge => "REQUEST_ENTITY_TOO_LARGE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::InvalidJoinToken => "INVALID_JOIN_TOKEN",
            ErrorCode::InvalidMembershipChange => "INVALID_MEMBERSHIP_CHANGE",
            ErrorCode::InvalidEnrollmentToken => "INVALID_ENROLLMENT_TOKEN",
            ErrorCode::EnrollmentExpired => "ENROLLMENT_EXPIRED",
            ErrorCode::InvalidEnrollmentAlreadyEnrolled => "INVALID_ENROLLMENT_ALREADY_ENROLLED",
            ErrorCode::CouldNotProcessCsr => "COULD_NOT_PROCESS_CSR",
            ErrorCode::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unhandled => "UNHANDLED",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status table of DESIGN.md section 5, row by row.
    #[test]
    fn status_table_matches_design() {
        let table = [
            (ErrorCode::ClusterNoLeader, 503, "CLUSTER_NO_LEADER"),
            (
                ErrorCode::ControllerNotInQuorum,
                421,
                "CONTROLLER_NOT_IN_QUORUM",
            ),
            (ErrorCode::Timeout, 503, "TIMEOUT"),
            (
                ErrorCode::ServerTooManyRequests,
                429,
                "SERVER_TOO_MANY_REQUESTS",
            ),
            (ErrorCode::InvalidAuth, 401, "INVALID_AUTH"),
            (ErrorCode::Unauthorized, 401, "UNAUTHORIZED"),
            (ErrorCode::Forbidden, 403, "FORBIDDEN"),
            (ErrorCode::CouldNotParseBody, 400, "COULD_NOT_PARSE_BODY"),
            (ErrorCode::InvalidField, 400, "INVALID_FIELD"),
            (ErrorCode::InvalidFilter, 400, "INVALID_FILTER"),
            (ErrorCode::NotFound, 404, "NOT_FOUND"),
            (ErrorCode::EntityAlreadyExists, 409, "ENTITY_ALREADY_EXISTS"),
            (
                ErrorCode::CanNotDeleteReferencedEntity,
                409,
                "CAN_NOT_DELETE_REFERENCED_ENTITY",
            ),
            (
                ErrorCode::RequestEntityTooLarge,
                413,
                "REQUEST_ENTITY_TOO_LARGE",
            ),
            (
                ErrorCode::InvalidEnrollmentToken,
                400,
                "INVALID_ENROLLMENT_TOKEN",
            ),
            (ErrorCode::EnrollmentExpired, 400, "ENROLLMENT_EXPIRED"),
            (
                ErrorCode::InvalidEnrollmentAlreadyEnrolled,
                410,
                "INVALID_ENROLLMENT_ALREADY_ENROLLED",
            ),
            (ErrorCode::CouldNotProcessCsr, 400, "COULD_NOT_PROCESS_CSR"),
            (ErrorCode::PreconditionFailed, 412, "PRECONDITION_FAILED"),
            (
                ErrorCode::IdempotencyKeyReused,
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (ErrorCode::RateLimited, 429, "RATE_LIMITED"),
            (ErrorCode::Unhandled, 500, "UNHANDLED"),
        ];
        for (code, status, s) in table {
            assert_eq!(code.status(), status, "{code}");
            assert_eq!(code.as_str(), s);
        }
    }

    #[test]
    fn only_unhandled_is_a_500_and_retryables_carry_retry_after() {
        for code in ErrorCode::ALL {
            assert_eq!(code.status() == 500, code == ErrorCode::Unhandled, "{code}");
            let retry = code.retry_after_secs().is_some();
            let expect = matches!(code.status(), 503 | 429);
            assert_eq!(retry, expect, "{code}");
        }
    }

    #[test]
    fn serde_form_equals_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }
}
