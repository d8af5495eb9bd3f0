//! The per-user rate limit: a token bucket on injected time.

use std::time::Instant;

/// How fast tokens come back and how many can be saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens per second.
    pub per_second: f64,
    /// The bucket's size.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 20.0,
            burst: 40.0,
        }
    }
}

/// One user's bucket.
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
