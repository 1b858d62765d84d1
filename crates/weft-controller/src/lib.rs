//! placeholder
pub mod pki;
pub mod tls;
pub mod tokens;
