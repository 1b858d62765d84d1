//! Wire types shared by every weft component: the REST models, the success and error
//! envelopes, and the table that maps each error code to its HTTP status.
//!
//! This crate does no IO and has no async code, so it can be used by the controller, the
//! SDK and tests alike. HTTP status codes live here as plain `u16`s so that the mapping
//! from a code to a status is written down exactly once ([`ErrorCode::status`]). The
//! field lists of [`describe`] let the controller document every body without this
//! crate knowing about OpenAPI.
#![forbid(unsafe_code)]

pub mod describe;
pub mod envelope;
pub mod error;
pub mod models;

pub use describe::Described;
pub use envelope::{Envelope, ErrorBody, ErrorEnvelope, Meta, Pagination};
pub use error::ErrorCode;

/// Header that carries the request id of every response (equal to `error.requestId`).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header set on reads served by a node that is not in quorum (the data may be stale).
pub const STALE_HEADER: &str = "x-weft-stale";
/// Header that carries a session token (OpenZiti name); `Authorization: Bearer` works too.
pub const SESSION_HEADER: &str = "zt-session";
/// Request header naming a mutating request, so that a retry of it (on any controller,
/// within [`IDEMPOTENCY_TTL_SECS`]) answers the first result instead of acting twice.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header set (`true`) on the answer to a request whose `Idempotency-Key` had
/// been used before: the stored first answer, not a new action.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest `Idempotency-Key` accepted (visible ASCII characters).
pub const IDEMPOTENCY_KEY_MAX: usize = 200;
/// How long a controller remembers an `Idempotency-Key` and its result, at least.
pub const IDEMPOTENCY_TTL_SECS: u64 = 15 * 60;
/// Request header of a compare-and-set: the entity `version` the change expects
/// (`3` or `"3"`; `*`: any existing version).
pub const IF_MATCH_HEADER: &str = "if-match";
/// Response header carrying an entity's version as an entity tag (`"3"`).
pub const ETAG_HEADER: &str = "etag";
/// The API version this crate describes.
pub const API_VERSION: &str = "v1";
