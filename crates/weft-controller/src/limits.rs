//! Limits on what one client can make a controller hold or do, so that a hostile or
//! broken client cannot take the controller away from everyone else. Each is a flag of
//! `weft controller run` (see [`Limits`]); the defaults suit a production node.
//!
//! * Request bodies: at most [`Limits::max_body_bytes`] for every API route that reads
//!   one (413 `REQUEST_ENTITY_TOO_LARGE`, see `http::RawBody`); the peer routes, which
//!   carry raft batches and snapshots, have their own larger cap
//!   (`peer_api::MAX_PEER_BODY`) and only for callers with a controller's certificate.
//! * Request heads: at most [`Limits::max_header_bytes`] (request line and headers) and
//!   [`MAX_HEADERS`] headers. hyper enforces both while parsing, before the request
//!   reaches the API: it answers `431 Request Header Fields Too Large` with an empty body
//!   (no error envelope, no request id) and closes that connection. Other connections
//!   are not affected.
//! * Connections: [`ConnectionBudget`], per listener. Clients (every connection that
//!   does not present a controller's certificate) share [`Limits::max_connections`];
//!   the other controllers of the cluster have their own budget,
//!   [`Limits::max_peer_connections`], so clients cannot starve raft. A client
//!   certificate is known only after the TLS handshake, so a connection is counted as
//!   *pending* until then, against the sum of both budgets; each source address may
//!   hold at most [`Limits::max_connections_per_ip`] client and pending connections. A
//!   connection over a budget is closed: at once when the sum or its address's budget is
//!   used up, right after its handshake when its class's budget is.
//! * Failed logins: at most [`Limits::login_failures`] per source address within
//!   [`Limits::login_failure_window`] (see `login_limit::LoginLimiter`); then 429
//!   `RATE_LIMITED` with `Retry-After`.
//!
//! A source address is an IPv4 address, or an IPv6 /64 network (one host usually has a
//! whole /64); an IPv4-mapped IPv6 address is its IPv4 address. Only the TCP peer's
//! address is used, never a header such as `X-Forwarded-For`, which a client can forge.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most headers one request may have (hyper's default, stated here to document it).
pub const MAX_HEADERS: usize = 100;
/// The smallest head limit accepted: below it ordinary requests would be refused.
pub const MIN_HEADER_BYTES: usize = 1024;

/// The limits of one controller (see the module doc). `Default` is what
/// `weft controller run` uses without flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body of an API route, in bytes (413 beyond it).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers), in bytes (431 beyond it).
    pub max_header_bytes: usize,
    /// Most client connections open at once on one listener.
    pub max_connections: usize,
    /// Most connections from other controllers (presenting a cluster certificate) open at
    /// once on one listener; also the room for handshakes while the clients' budget is
    /// used up.
    pub max_peer_connections: usize,
    /// Most client and pending connections from one source address; 0: no such limit.
    pub max_connections_per_ip: usize,
    /// Failed logins from one source address within `login_failure_window` after which
    /// `authenticate` answers 429 `RATE_LIMITED`; 0: no such limit.
    pub login_failures: u32,
    /// The sliding window of `login_failures`.
    pub login_failure_window: Duration,
}

/// Default of [`Limits::max_body_bytes`] (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default of [`Limits::max_header_bytes`] (64 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default of [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of [`Limits::max_peer_connections`].
pub const DEFAULT_MAX_PEER_CONNECTIONS: usize = 256;
/// Default of [`Limits::max_connections_per_ip`].
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// Default of [`Limits::login_failures`].
pub const DEFAULT_LOGIN_FAILURES: u32 = 10;
/// Default of [`Limits::login_failure_window`], in seconds.
pub const DEFAULT_LOGIN_FAILURE_WINDOW_SECS: u64 = 60;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_peer_connections: DEFAULT_MAX_PEER_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            login_failures: DEFAULT_LOGIN_FAILURES,
            login_failure_window: Duration::from_secs(DEFAULT_LOGIN_FAILURE_WINDOW_SECS),
        }
    }
}

/// What is wrong with a [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A limit that would refuse every request or connection.
    #[error("{name} must be at least {min}")]
    TooSmall {
        /// The flag's name.
        name: &'static str,
        /// Its least value.
        min: u64,
    },
}

impl Limits {
    /// Checks that no limit refuses everything.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let checks: [(&'static str, u64, u64); 5] = [
            ("--max-body-bytes", self.max_body_bytes as u64, 1),
            (
                "--max-header-bytes",
                self.max_header_bytes as u64,
                MIN_HEADER_BYTES as u64,
            ),
            ("--max-connections", self.max_connections as u64, 1),
            (
                "--max-peer-connections",
                self.max_peer_connections as u64,
                1,
            ),
            (
                "--login-failure-window-secs",
                self.login_failure_window.as_secs(),
                1,
            ),
        ];
        for (name, value, min) in checks {
            if value < min {
                return Err(LimitsError::TooSmall { name, min });
            }
        }
        Ok(())
    }
}

/// The key a source address is counted under (see the module doc).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was closed by its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot (clients, peers and pending handshakes) is taken.
    Full,
    /// Its source address holds `max_connections_per_ip` connections already.
    PerIp,
    /// It is a client, and the clients' budget is used up.
    Clients,
    /// It presented a controller's certificate, and the peers' budget is used up.
    Peers,
}

impl Refusal {
    /// The `reason` label of `weft_http_connections_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::PerIp => "per_ip",
            Refusal::Clients => "clients",
            Refusal::Peers => "peers",
        }
    }
}

/// The open connections of one listener, by class (see the module doc).
#[derive(Debug)]
pub struct ConnectionBudget {
    /// [`Limits::max_connections`].
    max_clients: usize,
    /// [`Limits::max_peer_connections`].
    max_peers: usize,
    /// [`Limits::max_connections_per_ip`] (0: none).
    max_per_ip: usize,
    /// The connections open now; every change is one short critical section.
    counts: Mutex<Counts>,
}

/// The numbers behind [`ConnectionBudget`]'s lock.
#[derive(Debug, Default)]
struct Counts {
    /// Connections whose TLS handshake has not finished.
    pending: usize,
    /// Settled client connections.
    clients: usize,
    /// Settled controller connections.
    peers: usize,
    /// Pending and client connections by source key; entries at zero are removed, so
    /// the map holds at most as many entries as there are such connections.
    per_ip: HashMap<IpAddr, usize>,
}

/// The class a [`Admission`] is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Its TLS handshake has not finished: who it is is not known yet.
    Pending,
    /// It presented no controller's certificate.
    Client,
    /// It presented a controller's certificate.
    Peer,
    /// Refused when settling: counted nowhere any more.
    Gone,
}

impl ConnectionBudget {
    /// A budget with the connection limits of `limits`.
    pub fn new(limits: &Limits) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            max_clients: limits.max_connections,
            max_peers: limits.max_peer_connections,
            max_per_ip: limits.max_connections_per_ip,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a just-accepted connection from `ip` as pending, or refuses it (close it
    /// at once). The returned admission gives its slot back when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let key = source_key(ip);
        let mut c = self.lock();
        if c.pending + c.clients + c.peers >= self.max_clients + self.max_peers {
            return Err(Refusal::Full);
        }
        let here = c.per_ip.get(&key).copied().unwrap_or(0);
        if self.max_per_ip > 0 && here >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        c.pending += 1;
        c.per_ip.insert(key, here + 1);
        Ok(Admission {
            budget: self.clone(),
            key,
            class: Class::Pending,
        })
    }

    /// (pending, clients, peers), for tests and logs.
    pub fn counts(&self) -> (usize, usize, usize) {
        let c = self.lock();
        (c.pending, c.clients, c.peers)
    }
}

impl Counts {
    fn release_ip(&mut self, key: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&key);
            }
        }
    }
}

/// One connection's place in a [`ConnectionBudget`]; dropping it frees the place.
#[derive(Debug)]
pub struct Admission {
    /// The budget it is counted in.
    budget: Arc<ConnectionBudget>,
    /// Its source address's key ([`source_key`]).
    key: IpAddr,
    /// Where it is counted now.
    class: Class,
}

impl Admission {
    /// Moves a pending connection into its class once the handshake has shown whether it
    /// is another controller (`peer`). A refusal (close the connection) frees its place.
    /// Controllers leave their address's count: they are bounded by their own budget.
    pub fn settle(&mut self, peer: bool) -> Result<(), Refusal> {
        if self.class != Class::Pending {
            return Ok(());
        }
        let budget = self.budget.clone();
        let mut c = budget.lock();
        c.pending = c.pending.saturating_sub(1);
        let outcome = if peer {
            c.release_ip(self.key);
            if c.peers < budget.max_peers {
                c.peers += 1;
                Ok(Class::Peer)
            } else {
                Err(Refusal::Peers)
            }
        } else if c.clients < budget.max_clients {
            c.clients += 1;
            Ok(Class::Client)
        } else {
            c.release_ip(self.key);
            Err(Refusal::Clients)
        };
        match outcome {
            Ok(class) => {
                self.class = class;
                Ok(())
            }
            Err(r) => {
                self.class = Class::Gone;
                Err(r)
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut c = self.budget.lock();
        match self.class {
            Class::Pending => {
                c.pending = c.pending.saturating_sub(1);
                c.release_ip(self.key);
            }
            Class::Client => {
                c.clients = c.clients.saturating_sub(1);
                c.release_ip(self.key);
            }
            Class::Peer => c.peers = c.peers.saturating_sub(1),
            Class::Gone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn budget(clients: usize, peers: usize, per_ip: usize) -> Arc<ConnectionBudget> {
        ConnectionBudget::new(&Limits {
            max_connections: clients,
            max_peer_connections: peers,
            max_connections_per_ip: per_ip,
            ..Limits::default()
        })
    }

    #[test]
    fn clients_beyond_the_budget_are_refused_and_a_freed_place_is_reused() {
        let b = budget(2, 1, 0);
        let mut a1 = b.admit(ip(1)).unwrap();
        let mut a2 = b.admit(ip(2)).unwrap();
        a1.settle(false).unwrap();
        a2.settle(false).unwrap();
        // The third client may handshake (room of the peers' budget), then is refused.
        let mut a3 = b.admit(ip(3)).unwrap();
        assert_eq!(a3.settle(false), Err(Refusal::Clients));
        drop(a3);
        assert_eq!(b.counts(), (0, 2, 0));
        drop(a1);
        let mut a4 = b.admit(ip(4)).unwrap();
        a4.settle(false).unwrap();
        assert_eq!(b.counts(), (0, 2, 0));
    }

    #[test]
    fn controllers_get_in_while_the_clients_budget_is_used_up() {
        let b = budget(1, 2, 0);
        let mut c = b.admit(ip(1)).unwrap();
        c.settle(false).unwrap();
        let mut p1 = b.admit(ip(2)).unwrap();
        p1.settle(true).unwrap();
        let mut p2 = b.admit(ip(3)).unwrap();
        p2.settle(true).unwrap();
        assert_eq!(b.counts(), (0, 1, 2));
        // Everything is taken now: refused before the handshake.
        assert_eq!(b.admit(ip(4)).unwrap_err(), Refusal::Full);
        drop(p1);
        let mut p3 = b.admit(ip(4)).unwrap();
        p3.settle(true).unwrap();
        let mut p4 = {
            drop(c);
            b.admit(ip(5)).unwrap()
        };
        assert_eq!(p4.settle(true), Err(Refusal::Peers));
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_controllers_are_exempt() {
        let b = budget(10, 10, 2);
        let mut a1 = b.admit(ip(1)).unwrap();
        let a2 = b.admit(ip(1)).unwrap();
        assert_eq!(b.admit(ip(1)).unwrap_err(), Refusal::PerIp);
        // Another address is not affected.
        let _other = b.admit(ip(2)).unwrap();
        // A pending connection that turns out to be a controller frees its address's place.
        a1.settle(true).unwrap();
        let a3 = b.admit(ip(1)).unwrap();
        assert_eq!(b.admit(ip(1)).unwrap_err(), Refusal::PerIp);
        drop(a2);
        drop(a3);
        let _a4 = b.admit(ip(1)).unwrap();
        let _a5 = b.admit(ip(1)).unwrap();
    }

    #[test]
    fn every_place_is_given_back_whatever_the_connection_became() {
        let b = budget(1, 1, 1);
        for peer in [false, true] {
            let mut a = b.admit(ip(1)).unwrap();
            a.settle(peer).unwrap();
            drop(a);
            let mut refused = b.admit(ip(1)).unwrap();
            let _held = {
                let mut h = b.admit(ip(2)).unwrap();
                h.settle(peer).unwrap();
                h
            };
            assert!(refused.settle(peer).is_err());
            drop(refused);
        }
        assert_eq!(b.counts(), (0, 0, 0));
        assert!(b.lock().per_ip.is_empty());
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_network_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), ip(1));
    }

    #[test]
    fn limits_that_refuse_everything_are_rejected() {
        assert!(Limits::default().validate().is_ok());
        for bad in [
            Limits {
                max_body_bytes: 0,
                ..Limits::default()
            },
            Limits {
                max_header_bytes: 100,
                ..Limits::default()
            },
            Limits {
                max_connections: 0,
                ..Limits::default()
            },
            Limits {
                max_peer_connections: 0,
                ..Limits::default()
            },
            Limits {
                login_failure_window: Duration::ZERO,
                ..Limits::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
