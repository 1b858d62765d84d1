//! The controller pool: which controllers exist, which one requests go to, and which
//! are marked down until when; plus the backoff schedule for waits.
//!
//! The order is stable (seed URLs first, then members learned later, in the order
//! learned), so every client of one cluster tends to use the same controller and a
//! failover moves to a predictable next one. Requests go to the *current* controller;
//! when it fails, it is marked down for a while and the current one moves on (rotates):
//! the client does not return to the first one when its mark expires.

use std::time::{Duration, Instant};

use rand::Rng;

/// One known controller.
#[derive(Debug, Clone)]
struct Member {
    /// Its API URL, without a trailing `/`.
    url: String,
    /// Skipped until then (after a connection failure or a 421).
    down_until: Option<Instant>,
}

/// The known controllers and the current one (see the module doc).
#[derive(Debug)]
pub(crate) struct Pool {
    members: Vec<Member>,
    /// Index into `members` of the controller requests go to.
    current: usize,
}

/// A URL as the pool keeps it: trimmed, without trailing slashes.
pub(crate) fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

impl Pool {
    /// A pool of `urls` (duplicates dropped), the first one current.
    pub(crate) fn new(urls: &[String]) -> Pool {
        let mut pool = Pool {
            members: Vec::new(),
            current: 0,
        };
        pool.add(urls.iter().map(String::as_str));
        pool
    }

    /// Appends the URLs not yet known, keeping the order of the others.
    pub(crate) fn add<'a>(&mut self, urls: impl IntoIterator<Item = &'a str>) {
        for url in urls {
            let url = normalize(url);
            if !url.is_empty() && !self.members.iter().any(|m| m.url == url) {
                self.members.push(Member {
                    url,
                    down_until: None,
                });
            }
        }
    }

    /// Every known URL, in order.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url.clone()).collect()
    }

    fn is_up(m: &Member, now: Instant) -> bool {
        m.down_until.is_none_or(|t| t <= now)
    }

    /// The controller to use now: the current one or, if it is marked down, the next one
    /// that is not (which becomes current). `None` when every one is marked down.
    pub(crate) fn pick(&mut self, now: Instant) -> Option<String> {
        let n = self.members.len();
        (0..n)
            .map(|k| (self.current + k) % n)
            .find(|&i| Pool::is_up(&self.members[i], now))
            .map(|i| {
                self.current = i;
                self.members[i].url.clone()
            })
    }

    /// When every controller is marked down: the one whose mark ends first (becomes
    /// current), to try after waiting.
    pub(crate) fn pick_soonest(&mut self) -> Option<String> {
        let i = (0..self.members.len()).min_by_key(|&i| self.members[i].down_until)?;
        self.current = i;
        Some(self.members[i].url.clone())
    }

    /// Prefers `url` (known or new) if it is not marked down: it becomes current.
    /// Returns whether it did.
    pub(crate) fn prefer(&mut self, url: &str, now: Instant) -> bool {
        let url = normalize(url);
        self.add([url.as_str()]);
        match self.members.iter().position(|m| m.url == url) {
            Some(i) if Pool::is_up(&self.members[i], now) => {
                self.current = i;
                true
            }
            _ => false,
        }
    }

    /// Marks `url` down until `until`; if it is current, the next one becomes current.
    pub(crate) fn mark_down(&mut self, url: &str, until: Instant) {
        if let Some(i) = self.members.iter().position(|m| m.url == url) {
            self.members[i].down_until = Some(until);
            if i == self.current && !self.members.is_empty() {
                self.current = (i + 1) % self.members.len();
            }
        }
    }

    /// Clears `url`'s mark: it answered.
    pub(crate) fn mark_up(&mut self, url: &str) {
        if let Some(m) = self.members.iter_mut().find(|m| m.url == url) {
            m.down_until = None;
        }
    }

    /// Whether `url` is marked down at `now`.
    #[cfg(test)]
    pub(crate) fn is_down(&self, url: &str, now: Instant) -> bool {
        self.members
            .iter()
            .any(|m| m.url == url && !Pool::is_up(m, now))
    }
}

/// The wait before retry number `n` (0-based) of one call: full jitter over an
/// exponential ceiling, `uniform(0, min(cap, base * 2^n))`, but never less than the
/// server's `Retry-After`.
pub(crate) fn backoff(
    n: u32,
    base: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let ceiling = base.saturating_mul(1u32 << n.min(20)).min(cap);
    let jitter = if ceiling.is_zero() {
        Duration::ZERO
    } else {
        rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
    };
    jitter.max(retry_after.unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Vec<String> {
        vec!["https://a/".into(), "https://b".into(), "https://c".into()]
    }

    #[test]
    fn picks_rotate_past_controllers_marked_down_and_order_is_stable() {
        let now = Instant::now();
        let mut p = Pool::new(&urls());
        assert_eq!(p.pick(now).as_deref(), Some("https://a"));
        p.mark_down("https://a", now + Duration::from_secs(2));
        assert_eq!(p.pick(now).as_deref(), Some("https://b"));
        // The mark expires, but the client stays with the current one.
        assert_eq!(
            p.pick(now + Duration::from_secs(3)).as_deref(),
            Some("https://b")
        );
        p.add(["https://b/", "https://d"]);
        assert_eq!(
            p.urls(),
            vec!["https://a", "https://b", "https://c", "https://d"]
        );
        assert!(!p.is_down("https://a", now + Duration::from_secs(3)));
        assert!(p.is_down("https://a", now));
    }

    #[test]
    fn all_down_gives_none_then_the_soonest_mark() {
        let now = Instant::now();
        let mut p = Pool::new(&urls());
        p.mark_down("https://a", now + Duration::from_secs(3));
        p.mark_down("https://b", now + Duration::from_secs(1));
        p.mark_down("https://c", now + Duration::from_secs(2));
        assert_eq!(p.pick(now), None);
        assert_eq!(p.pick_soonest().as_deref(), Some("https://b"));
        p.mark_up("https://c");
        assert_eq!(p.pick(now).as_deref(), Some("https://c"));
    }

    #[test]
    fn prefer_switches_unless_marked_down() {
        let now = Instant::now();
        let mut p = Pool::new(&urls());
        assert!(p.prefer("https://c/", now));
        assert_eq!(p.pick(now).as_deref(), Some("https://c"));
        p.mark_down("https://b", now + Duration::from_secs(1));
        assert!(!p.prefer("https://b", now));
        assert!(p.prefer("https://e", now));
        assert_eq!(p.urls().len(), 4);
    }

    #[test]
    fn backoff_is_jittered_under_the_ceiling_and_honours_retry_after() {
        let base = Duration::from_millis(50);
        let cap = Duration::from_secs(2);
        for n in 0..12 {
            let ceiling = (base * 2u32.pow(n)).min(cap);
            for _ in 0..50 {
                assert!(backoff(n, base, cap, None) <= ceiling);
            }
            let ra = Duration::from_secs(1);
            assert!(backoff(n, base, cap, Some(ra)) >= ra);
        }
        // Full jitter: not always the ceiling.
        let waits: Vec<_> = (0..50).map(|_| backoff(5, base, cap, None)).collect();
        assert!(waits.iter().any(|w| *w < cap));
    }
}
