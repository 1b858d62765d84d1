//! The pure domain of the controller: entities, the replicated commands that change them,
//! validation, and the state machine's [`apply`] over a storage trait.
//!
//! Nothing here does IO. `weft-store` implements [`StateRead`]/[`StateWrite`] on redb, and
//! `weft-cluster` feeds committed raft entries into [`apply`]. Because apply is a pure
//! function of (state, command), every node that applies the same log reaches the same
//! state; anything non-deterministic (ids, timestamps) is chosen by the proposer and
//! carried inside the [`Command`].
#![forbid(unsafe_code)]

pub mod command;
pub mod enrollment;
pub mod entity;
pub mod error;
pub mod filter;
pub mod idempotency;
pub mod index;
pub mod policy;
pub mod schema;
pub mod state;
pub mod validate;

pub use command::{
    admin, api_session, api_sessions, apply, cluster_ca, is_revoked, node_key, Admin, ClusterCa,
    Command, Outcome,
};
pub use entity::{EntityKind, ListPage};
pub use error::{DomainError, StorageFault};
pub use state::{StateRead, StateWrite};

/// Milliseconds since the Unix epoch, chosen by the proposer of a command.
pub type UnixMs = i64;

/// Formats a proposer timestamp as RFC 3339 (what the REST API shows).
pub fn rfc3339(ms: UnixMs) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The current wall-clock time in milliseconds (proposers only; apply never reads clocks).
pub fn now_ms() -> UnixMs {
    chrono::Utc::now().timestamp_millis()
}

/// A new random entity id: 12 characters of base62, like OpenZiti's short ids.
pub fn new_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..12)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}
