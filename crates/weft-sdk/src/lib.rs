//! The weft client library: talks to a controller cluster's REST API the way every
//! client should, so callers (the `weft` CLI, routers, applications) do not each learn
//! failover the hard way.
//!
//! A [`Client`] is built from one or more controller URLs, the cluster CA and
//! credentials (a password, an identity file from `weft enroll`, or a stored session).
//! After logging in it fetches `/edge/client/v1/controllers` and keeps the member list
//! current. Each call then follows these rules (details in [`client`]):
//!
//! * 421 `CONTROLLER_NOT_IN_QUORUM`: switch at once to another controller (the answer's
//!   `error.data.controllers`), no delay;
//! * 503 `CLUSTER_NO_LEADER`, 503 `TIMEOUT`, 429 `SERVER_TOO_MANY_REQUESTS`: exponential
//!   backoff with full jitter, never shorter than `Retry-After`, within the call's
//!   deadline (429 `RATE_LIMITED`, a login rate limit, is returned at once);
//! * connect refused, TLS failure, reset, timeout: mark that controller down for a
//!   while and try the next one;
//! * 401 on a token that was valid: log in again once, then retry; never loop;
//! * anything else: [`Error::Api`] with the code, message and request id.
//!
//! Tokens are refreshed before they expire. Every mutating request carries an
//! `Idempotency-Key` header, the same on every retry of one call, so a retry after a
//! timeout whose first attempt was applied is answered with that attempt's result
//! instead of being applied twice.
//!
//! ```no_run
//! use serde_json::json;
//! use weft_sdk::{Client, Error};
//!
//! # async fn demo() -> Result<(), Error> {
//! let client = Client::builder()
//!     .urls(["https://127.0.0.1:1280", "https://127.0.0.2:1280"])
//!     .ca_pem(std::fs::read_to_string("data/ca.pem").map_err(|e| Error::Config(e.to_string()))?)
//!     .password("admin", "secret")
//!     .connect()
//!     .await?;
//! let svc = client
//!     .create("/edge/management/v1/services", json!({ "name": "web" }))
//!     .await?;
//! let id = svc["id"].as_str().unwrap_or_default();
//! match client.show(&format!("/edge/management/v1/services/{id}")).await {
//!     Ok(s) => println!("{}", s["name"]),
//!     Err(e) if e.code() == Some("NOT_FOUND") => println!("gone"),
//!     Err(e) => return Err(e),
//! }
//! let page = client.list("/edge/management/v1/services", Some("name contains \"we\""), 10, 0).await?;
//! println!("{} of {}", page.items.len(), page.total);
//! client.logout().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// `Error::Api` carries the whole error envelope by value (the shared API contract), which
// makes `Error` larger than clippy's default for `Result`; errors are the cold path.
#![allow(clippy::result_large_err)]

pub mod client;
mod error;
mod identity;
mod pool;
mod request;
mod tls;

pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use identity::IdentityFile;
pub use request::{Method, Page, Request, Response, Session, Stats};
