//! [`LoginLimiter`]: at most `K` failed logins per source address within a sliding
//! window, so that guessing passwords from one address is slow, whatever the account.
//!
//! Once an address has `K` failures younger than the window, every `authenticate` call
//! from it is refused with 429 `RATE_LIMITED` and `Retry-After` (the seconds until its
//! oldest failure leaves the window), before any credential is checked, so the right
//! password does not help either, and the refused calls cost no password hashing. Calls
//! refused this way are not failures: they do not make the wait longer. A successful
//! login forgets nothing, so one good account does not reset an attack on others.
//! Other addresses are not affected.
//!
//! Concurrent attempts: once an address has a failure, its attempts still in progress
//! count as failures too, so that a burst cannot take more than `K` guesses (an address
//! with no failure is never held back, however many logins it runs at once). The burst
//! that makes the first failure can still overshoot: by at most the number of its
//! requests in flight at once.
//!
//! The table lives in memory on each node (a client that moves to another controller
//! starts afresh there) and holds at most [`TABLE_CAPACITY`] addresses: a new address
//! beyond that first drops the addresses whose failures have all expired, then the one
//! whose last failure is the oldest. Addresses are keyed as `limits::source_key` says.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::limits::source_key;

/// Most addresses remembered at once (each holds at most `K` instants).
pub const TABLE_CAPACITY: usize = 10_000;

/// The failed-login record of one address.
#[derive(Debug, Default)]
struct Entry {
    /// When its failures younger than the window happened, oldest first (at most `K`).
    failures: VecDeque<Instant>,
    /// Its `authenticate` calls past the check and not yet decided.
    in_flight: u32,
}

impl Entry {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
    }

    /// The newest failure (for eviction), if any.
    fn last(&self) -> Option<Instant> {
        self.failures.back().copied()
    }
}

/// Failed logins per source address (see the module doc).
#[derive(Debug)]
pub struct LoginLimiter {
    /// Failures that close an address; 0: never.
    max_failures: u32,
    /// How long a failure counts.
    window: Duration,
    /// Most addresses in `table`.
    capacity: usize,
    /// The record of each address with recent failures or attempts in flight.
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// A login attempt let through by [`LoginLimiter::begin`]: report its failure with
/// [`Attempt::failed`]; dropping it otherwise counts it as not failed.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// The limiter that let it through.
    limiter: &'a LoginLimiter,
    /// `None` when the limiter is off.
    key: Option<IpAddr>,
}

impl LoginLimiter {
    /// A limiter closing an address after `max_failures` failures within `window`
    /// (`max_failures == 0`: a limiter that never refuses).
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter::with_capacity(max_failures, window, TABLE_CAPACITY)
    }

    /// [`LoginLimiter::new`] remembering at most `capacity` addresses.
    pub fn with_capacity(max_failures: u32, window: Duration, capacity: usize) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            capacity: capacity.max(1),
            table: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a login attempt from `ip` go ahead, or says how long that address must wait.
    pub fn begin(&self, ip: IpAddr, now: Instant) -> Result<Attempt<'_>, Duration> {
        if self.max_failures == 0 {
            return Ok(Attempt {
                limiter: self,
                key: None,
            });
        }
        let key = source_key(ip);
        let mut table = self.lock();
        if !table.contains_key(&key) && table.len() >= self.capacity {
            self.evict(&mut table, now);
        }
        let entry = table.entry(key).or_default();
        entry.prune(now, self.window);
        let failures = entry.failures.len() as u32;
        if failures >= self.max_failures {
            let oldest = entry.failures.front().copied().unwrap_or(now);
            let wait = (oldest + self.window).saturating_duration_since(now);
            return Err(wait.max(Duration::from_secs(1)));
        }
        if failures > 0 && failures + entry.in_flight >= self.max_failures {
            // The attempts in flight will be decided in a moment.
            return Err(Duration::from_secs(1));
        }
        entry.in_flight += 1;
        Ok(Attempt {
            limiter: self,
            key: Some(key),
        })
    }

    /// Makes room for one more address (see the module doc).
    fn evict(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant) {
        table.retain(|_, e| {
            e.prune(now, self.window);
            e.in_flight > 0 || !e.failures.is_empty()
        });
        if table.len() < self.capacity {
            return;
        }
        let oldest = table
            .iter()
            .min_by_key(|(_, e)| (e.in_flight > 0, e.last()))
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            table.remove(&k);
        }
    }

    /// Addresses remembered now (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn finish(&self, key: IpAddr, failed_at: Option<Instant>) {
        let mut table = self.lock();
        let Some(entry) = table.get_mut(&key) else {
            return;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if let Some(at) = failed_at {
            entry.failures.push_back(at);
            while entry.failures.len() > self.max_failures as usize {
                entry.failures.pop_front();
            }
        }
        if entry.in_flight == 0 && entry.failures.is_empty() {
            table.remove(&key);
        }
    }
}

impl Attempt<'_> {
    /// The attempt failed (wrong credential) at `now`: it counts against its address.
    pub fn failed(mut self, now: Instant) {
        if let Some(key) = self.key.take() {
            self.limiter.finish(key, Some(now));
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.finish(key, None);
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

    const WINDOW: Duration = Duration::from_secs(60);

    fn fail(l: &LoginLimiter, ip: IpAddr, at: Instant) {
        l.begin(ip, at).expect("let through").failed(at);
    }

    #[test]
    fn k_failures_close_the_address_until_the_oldest_leaves_the_window() {
        let l = LoginLimiter::new(3, WINDOW);
        let t0 = Instant::now();
        for k in 0..3 {
            fail(&l, ip(1), t0 + Duration::from_secs(k * 10));
        }
        let at = t0 + Duration::from_secs(25);
        assert_eq!(l.begin(ip(1), at).unwrap_err(), Duration::from_secs(35));
        // Refused calls do not extend the wait.
        assert_eq!(
            l.begin(ip(1), t0 + Duration::from_secs(59)).unwrap_err(),
            Duration::from_secs(1)
        );
        // The first failure has left the window: one more try, which fails again.
        let later = t0 + Duration::from_secs(60);
        fail(&l, ip(1), later);
        assert_eq!(l.begin(ip(1), later).unwrap_err(), Duration::from_secs(10));
    }

    #[test]
    fn other_addresses_and_successes_are_not_held_back() {
        let l = LoginLimiter::new(2, WINDOW);
        let t = Instant::now();
        fail(&l, ip(1), t);
        // A success in between forgets nothing.
        drop(l.begin(ip(1), t).unwrap());
        fail(&l, ip(1), t);
        assert!(l.begin(ip(1), t).is_err());
        assert!(l.begin(ip(2), t).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_once_the_address_has_failed() {
        let l = LoginLimiter::new(3, WINDOW);
        let t = Instant::now();
        // No failure yet: any number at once.
        let burst: Vec<_> = (0..10).map(|_| l.begin(ip(1), t).unwrap()).collect();
        drop(burst);
        fail(&l, ip(1), t);
        let a = l.begin(ip(1), t).unwrap();
        let b = l.begin(ip(1), t).unwrap();
        // 1 failure + 2 in flight: the next waits for them.
        assert_eq!(l.begin(ip(1), t).unwrap_err(), Duration::from_secs(1));
        drop(a);
        l.begin(ip(1), t).unwrap().failed(t);
        b.failed(t);
        assert!(l.begin(ip(1), t).unwrap_err() > Duration::from_secs(50));
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let l = LoginLimiter::with_capacity(1, WINDOW, 3);
        let t = Instant::now();
        for k in 1..=3u8 {
            fail(&l, ip(k), t + Duration::from_secs(u64::from(k)));
        }
        assert_eq!(l.len(), 3);
        // A fourth address pushes out the one whose failure is the oldest: ip(1).
        fail(&l, ip(4), t + Duration::from_secs(5));
        assert_eq!(l.len(), 3);
        assert!(l.begin(ip(1), t + Duration::from_secs(6)).is_ok());
        assert!(l.begin(ip(3), t + Duration::from_secs(6)).is_err());
        // Expired entries go first.
        let much_later = t + WINDOW + Duration::from_secs(10);
        fail(&l, ip(9), much_later);
        assert!(l.len() <= 3);
        // Addresses that only succeed leave nothing behind.
        let l = LoginLimiter::new(1, WINDOW);
        drop(l.begin(ip(1), t).unwrap());
        assert!(l.is_empty());
    }

    #[test]
    fn zero_failures_means_no_limit() {
        let l = LoginLimiter::new(0, WINDOW);
        let t = Instant::now();
        for _ in 0..100 {
            fail(&l, ip(1), t);
        }
        assert!(l.begin(ip(1), t).is_ok());
        assert!(l.is_empty());
    }
}
