//! Token buckets on injected time: one home for both limits of the chat
//! service, the per-user `chat:send` limit and the per-socket event budget.

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
    /// burst is twice [`DEFAULT_MAX_CHATS`](super::DEFAULT_MAX_CHATS), so
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

/// One bucket (a user's sends, a socket's events).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            tokens: limit.burst,
            at: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * limit.per_second).min(limit.burst);
        self.at = now;
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (and can be forgotten).
    pub fn is_full(&mut self, limit: RateLimit, now: Instant) -> bool {
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
}
