//! Throttles of the credential routes, where every attempt costs a bcrypt
//! check: per client address (`/login` and `/register`), and per username
//! for failed logins, so that guessing one user's password from many
//! addresses is slow too.
//!
//! A per-username limit would let anyone lock a user out by failing on
//! purpose. So it does not apply to an address the user has logged in from
//! successfully before (the last [`KNOWN_PER_USER`] of them are kept): the
//! user's own devices keep working while guesses from anywhere else wait.
//!
//! Memory is bounded: at most [`ThrottleConfig::max_tracked`] addresses and
//! as many usernames; past that, buckets that have refilled are forgotten
//! first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::rate::{RateLimit, TokenBucket, UnixMs};

/// How many addresses a user has logged in from are remembered.
pub const KNOWN_PER_USER: usize = 8;

/// The throttles' settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// Attempts at `/login` and `/register` per client address.
    pub per_address: RateLimit,
    /// Failed logins per username (from addresses it never logged in from).
    pub failures_per_user: RateLimit,
    /// The most addresses, and the most usernames, tracked at once.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    /// 20 attempts, then one each 3 s, per address (an office behind one
    /// NAT logging in at nine still gets through); 10 failures, then one a
    /// minute, per username.
    fn default() -> Self {
        ThrottleConfig {
            per_address: RateLimit {
                per_second: 1.0 / 3.0,
                burst: 20.0,
            },
            failures_per_user: RateLimit {
                per_second: 1.0 / 60.0,
                burst: 10.0,
            },
            max_tracked: 100_000,
        }
    }
}

/// The buckets of the credential routes.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    by_address: Buckets<IpAddr>,
    by_user: Buckets<String>,
    /// Per username (lower-cased), the addresses it last logged in from.
    known: HashMap<String, Vec<IpAddr>>,
}

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, (TokenBucket<UnixMs>, UnixMs)>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new() -> Self {
        Buckets {
            map: HashMap::new(),
        }
    }

    /// The bucket of `key`, made full if new, room made if needed.
    fn get(
        &mut self,
        key: &K,
        limit: RateLimit,
        max: usize,
        now: UnixMs,
    ) -> &mut TokenBucket<UnixMs> {
        if !self.map.contains_key(key) && self.map.len() >= max {
            self.map.retain(|_, (b, _)| !b.is_full(limit, now));
            if self.map.len() >= max
                && let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, (_, seen))| *seen)
                    .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let entry = self
            .map
            .entry(key.clone())
            .or_insert_with(|| (TokenBucket::new(limit, now), now));
        entry.1 = now;
        &mut entry.0
    }
}

impl Throttle {
    /// Throttles with these settings.
    pub fn new(config: ThrottleConfig) -> Self {
        Throttle {
            config,
            by_address: Buckets::new(),
            by_user: Buckets::new(),
            known: HashMap::new(),
        }
    }

    /// An attempt at a credential route from `addr` (unknown: not
    /// throttled by address) for `username` (a login's; `None` for a
    /// registration). `Err(seconds)` to wait when it must be refused.
    pub fn attempt(
        &mut self,
        addr: Option<IpAddr>,
        username: Option<&str>,
        now: UnixMs,
    ) -> Result<(), u64> {
        let max = self.config.max_tracked;
        if let Some(addr) = addr {
            let limit = self.config.per_address;
            let bucket = self.by_address.get(&addr, limit, max, now);
            if !bucket.take(limit, now) {
                return Err(bucket.wait_secs(limit, now).max(1));
            }
        }
        if let Some(name) = username {
            let name = name.to_lowercase();
            let from_known = addr.is_some_and(|a| {
                self.known
                    .get(&name)
                    .is_some_and(|addrs| addrs.contains(&a))
            });
            let limit = self.config.failures_per_user;
            if !from_known && let Some((bucket, _)) = self.by_user.map.get_mut(&name) {
                let wait = bucket.wait_secs(limit, now);
                if wait > 0 {
                    return Err(wait);
                }
            }
        }
        Ok(())
    }

    /// A login for `username` from `addr` failed: it spends one of the
    /// username's failures.
    pub fn failed(&mut self, username: &str, now: UnixMs) {
        let limit = self.config.failures_per_user;
        let max = self.config.max_tracked;
        let bucket = self.by_user.get(&username.to_lowercase(), limit, max, now);
        let _ = bucket.take(limit, now);
    }

    /// A login for `username` from `addr` succeeded: that address is the
    /// user's from now on.
    pub fn succeeded(&mut self, username: &str, addr: Option<IpAddr>) {
        let Some(addr) = addr else { return };
        let name = username.to_lowercase();
        if !self.known.contains_key(&name) && self.known.len() >= self.config.max_tracked {
            // Forget some user's devices rather than grow: they will be
            // throttled like strangers until they log in once more.
            if let Some(k) = self.known.keys().next().cloned() {
                self.known.remove(&k);
            }
        }
        let addrs = self.known.entry(name).or_default();
        addrs.retain(|a| *a != addr);
        if addrs.len() == KNOWN_PER_USER {
            addrs.remove(0);
        }
        addrs.push(addr);
    }

    /// How many addresses, usernames and users' known addresses are held.
    pub fn tracked(&self) -> (usize, usize, usize) {
        (
            self.by_address.map.len(),
            self.by_user.map.len(),
            self.known.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            per_address: RateLimit {
                per_second: 1.0,
                burst: 3.0,
            },
            failures_per_user: RateLimit {
                per_second: 0.1,
                burst: 2.0,
            },
            max_tracked: 4,
        }
    }

    #[test]
    fn an_address_gets_its_burst_then_waits() {
        let mut t = Throttle::new(config());
        let now = UnixMs(0);
        for _ in 0..3 {
            assert_eq!(t.attempt(ip(1), None, now), Ok(()));
        }
        assert_eq!(t.attempt(ip(1), None, now), Err(1));
        assert_eq!(
            t.attempt(ip(2), None, now),
            Ok(()),
            "another address is apart"
        );
        assert_eq!(t.attempt(ip(1), None, UnixMs(1_000)), Ok(()));
        assert_eq!(
            t.attempt(None, None, now),
            Ok(()),
            "no address, no address limit"
        );
    }

    #[test]
    fn failures_for_a_user_from_many_addresses_wait_but_not_the_users_own() {
        let mut t = Throttle::new(config());
        let now = UnixMs(0);
        assert_eq!(t.attempt(ip(9), Some("Ana"), now), Ok(()));
        t.succeeded("ana", ip(9));
        for n in 1..=2 {
            assert_eq!(t.attempt(ip(n), Some("ana"), now), Ok(()));
            t.failed("ana", now);
        }
        // Two failures spent the username's budget: a third address waits
        // 10 s (one failure each 10 s)...
        assert_eq!(t.attempt(ip(3), Some("ANA"), now), Err(10));
        // ...but ana's own address does not.
        assert_eq!(t.attempt(ip(9), Some("ana"), now), Ok(()));
        assert_eq!(t.attempt(ip(3), Some("ana"), UnixMs(10_000)), Ok(()));
        // Other users are not affected.
        assert_eq!(t.attempt(ip(4), Some("bob"), now), Ok(()));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut t = Throttle::new(config());
        for n in 0..=200u8 {
            let now = UnixMs(i64::from(n));
            let _ = t.attempt(ip(n), Some(&format!("user{n}")), now);
            t.failed(&format!("user{n}"), now);
            t.succeeded(&format!("user{n}"), ip(n));
        }
        let (addrs, users, known) = t.tracked();
        assert!(addrs <= 4 && users <= 4 && known <= 4, "{:?}", t.tracked());
        // A user's known addresses are bounded too.
        for n in 0..50u8 {
            t.succeeded("ana", ip(n));
        }
        assert_eq!(t.known["ana"].len(), KNOWN_PER_USER);
    }
}
