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
/// The API version this crate describes.
pub const API_VERSION: &str = "v1";
