//! Test harnesses for weft (not published): an in-process cluster whose peer traffic
//! goes through a shared fault set ([`inproc`]), a cluster of real `weft` processes that
//! can be killed, frozen, restarted and partitioned ([`process`], partitions through a
//! fault-injecting TCP proxy, [`netproxy`]), a linearizability checker for recorded
//! histories ([`linearizability`]), a small API client ([`client`]), and single
//! connections that speak HTTP/1.1 by hand ([`raw`]).
#![forbid(unsafe_code)]

pub mod client;
pub mod inproc;
pub mod linearizability;
pub mod netproxy;
pub mod process;
pub mod raw;
