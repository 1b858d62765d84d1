//! Errors of the domain: what a user did wrong ([`DomainError`]) versus a fault of the
//! storage below ([`StorageFault`]), which is never the user's doing.

use serde::{Deserialize, Serialize};

/// A command was refused by the state machine. These are replicated as the command's
/// result, so every node gives the same answer for the same log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DomainError {
    #[error("{kind} {id} not found")]
    NotFound { kind: String, id: String },
    #[error("a {kind} named {name:?} already exists")]
    NameTaken { kind: String, name: String },
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// Something still refers to the entity (a policy names it by `@id`, say).
    #[error("{kind} {id} is referenced by {by}")]
    Referenced {
        kind: String,
        id: String,
        by: String,
    },
    /// An enrollment token names no open enrollment (unknown, deleted, or of another
    /// method).
    #[error("invalid enrollment token: {0}")]
    InvalidEnrollment(String),
    /// The enrollment's window has passed.
    #[error("the enrollment expired at {0}")]
    EnrollmentExpired(String),
    /// The enrollment was already used.
    #[error("the enrollment was already used at {0}")]
    AlreadyEnrolled(String),
    /// A compare-and-set (`If-Match`) expected another version than the entity has: it
    /// changed since the caller read it. Nothing was changed.
    #[error("{kind} {id} is at version {current}, not the expected version {expected}")]
    VersionMismatch {
        kind: String,
        id: String,
        expected: u64,
        current: u64,
    },
    /// An idempotency key was used before, within its lifetime, for another request
    /// (another method, path or body). Nothing was changed.
    #[error("the Idempotency-Key {key:?} was already used for another request (method, path or body); use a new key for a new request")]
    IdempotencyKeyReused { key: String },
    /// Reading state failed while checking a command (never returned by apply as a
    /// verdict: it is turned back into a [`StorageFault`]).
    #[error("storage fault: {0}")]
    Storage(String),
}

impl From<StorageFault> for DomainError {
    fn from(f: StorageFault) -> Self {
        DomainError::Storage(f.0)
    }
}

/// The storage under the state machine failed (disk error, corrupt record).
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage fault: {0}")]
pub struct StorageFault(pub String);
