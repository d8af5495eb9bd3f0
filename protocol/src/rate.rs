//! Token buckets on injected time: one home for the chat service's two
//! limits (the per-user `chat:send` limit and the per-socket event budget)
//! and for the REST routes' throttles (`http::throttle`), which count in
//! wall-clock milliseconds.

use std::time::Instant;

/// How fast tokens come back and how many can be saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens per second.
    pub per_second: f64,
    /// The bucket's size.
    pub burst: f64,
}

impl RateLimit {
    /// The contract's `chat:send` limit per user: 20 a second, bursts of 40.
    pub const SEND: RateLimit = RateLimit {
        per_second: 20.0,
        burst: 40.0,
    };

    /// The default budget of every client event per socket: 50 a second,
    /// bursts of 200. No honest client comes near it: typing on every
    /// keystroke is about 10 a second, reads are batched (500 ids an
    /// event), sends are held to 20 a second by their own limit; and the
    /// burst is twice the most chats a socket may be in (100 by default), so
    /// a client reconnecting can rejoin every chat it may be in at once and
    /// still read, type and send right after. A flood, though, gets 50
    /// events a second through, each O(1) or O(log n), and the rest is
    /// refused at O(1) apiece.
    pub const EVENTS: RateLimit = RateLimit {
        per_second: 50.0,
        burst: 200.0,
    };
}

impl Default for RateLimit {
    /// [`RateLimit::SEND`].
    fn default() -> Self {
        RateLimit::SEND
    }
}

/// A point in time a bucket measures from.
pub trait Moment: Copy {
    /// Seconds from `earlier` to `self`; 0 if `earlier` is later.
    fn secs_since(self, earlier: Self) -> f64;
}

impl Moment for Instant {
    fn secs_since(self, earlier: Self) -> f64 {
        self.saturating_duration_since(earlier).as_secs_f64()
    }
}

/// Milliseconds since the Unix epoch, as the REST routes get their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixMs(pub i64);

impl Moment for UnixMs {
    fn secs_since(self, earlier: Self) -> f64 {
        self.0.saturating_sub(earlier.0).max(0) as f64 / 1000.0
    }
}

/// One bucket (a user's, an address's).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket<T = Instant> {
    tokens: f64,
    at: T,
}

impl<T: Moment> TokenBucket<T> {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: T) -> Self {
        TokenBucket {
            tokens: limit.burst,
            at: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: T) {
        // Only forward: a clock that steps back must not be counted twice.
        let dt = now.secs_since(self.at);
        if dt > 0.0 {
            self.tokens = (self.tokens + dt * limit.per_second).min(limit.burst);
            self.at = now;
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self, limit: RateLimit, now: T) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there, without taking it.
    pub fn has_token(&mut self, limit: RateLimit, now: T) -> bool {
        self.refill(limit, now);
        self.tokens >= 1.0
    }

    /// Seconds until the next token (0 if one is there), rounded up.
    pub fn wait_secs(&mut self, limit: RateLimit, now: T) -> u64 {
        self.refill(limit, now);
        if self.tokens >= 1.0 || limit.per_second <= 0.0 {
            return 0;
        }
        ((1.0 - self.tokens) / limit.per_second).ceil() as u64
    }

    /// Whether the bucket has refilled completely (and can be forgotten).
    pub fn is_full(&mut self, limit: RateLimit, now: T) -> bool {
        self.refill(limit, now);
        self.tokens >= limit.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_steady_rate() {
        let l = RateLimit::default();
        let t0 = Instant::now();
        let mut b = TokenBucket::new(l, t0);
        assert_eq!((0..50).filter(|_| b.take(l, t0)).count(), 40);
        // 20 per second: 10 after half a second.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..50).filter(|_| b.take(l, t1)).count(), 10);
        assert!(!b.is_full(l, t1));
        assert!(b.is_full(l, t1 + Duration::from_secs(2)));
    }

    #[test]
    fn wall_clock_buckets_and_the_wait_for_a_token() {
        let l = RateLimit {
            per_second: 0.5,
            burst: 2.0,
        };
        let mut b = TokenBucket::new(l, UnixMs(1_000));
        assert!(b.take(l, UnixMs(1_000)) && b.take(l, UnixMs(1_000)));
        assert!(!b.has_token(l, UnixMs(1_000)));
        assert_eq!(b.wait_secs(l, UnixMs(1_000)), 2);
        assert_eq!(b.wait_secs(l, UnixMs(2_500)), 1);
        // A clock that steps back refills nothing, and breaks nothing.
        assert!(!b.take(l, UnixMs(0)));
        assert!(b.take(l, UnixMs(3_000)));
    }
}
