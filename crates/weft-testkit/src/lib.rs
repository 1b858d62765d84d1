//! Test harnesses for weft (not published): an in-process cluster whose peer traffic
//! goes through a shared fault set ([`inproc`]), a cluster of real `weft` processes that
//! can be killed, frozen and restarted ([`process`]), a small API client ([`client`]), and
//! single connections that speak HTTP/1.1 by hand ([`raw`]).
#![forbid(unsafe_code)]

pub mod client;
pub mod inproc;
pub mod process;
pub mod raw;
