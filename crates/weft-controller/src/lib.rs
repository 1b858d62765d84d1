//! The controller: the HTTPS server with the management, client and cluster APIs,
//! authentication and sessions, the cluster PKI, and the start-up paths of a node
//! (bootstrap, join, wait to be added, restart).
//!
//! Handlers never pick a status: they return [`error::ApiError`], whose code decides it
//! (`weft_api::ErrorCode::status`). Replicated state is reached only through
//! `weft_cluster::Node`.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod client_api;
pub mod cluster_api;
pub mod enroll;
pub mod error;
pub mod http;
pub mod limits;
pub mod login_limit;
pub mod openapi;
pub mod peer_api;
pub mod pki;
pub mod policy_api;
pub mod resources;
pub mod routes;
pub mod server;
pub mod session;
pub mod status;
pub mod tls;
pub mod tokens;
pub mod writes;

pub use limits::Limits;
pub use server::{Controller, ControllerOptions, StartError};
pub use weft_cluster::{Faults, RpcKind, Timing};
