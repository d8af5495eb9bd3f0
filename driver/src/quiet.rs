//! Log lines for things that can happen thousands of times a second (a
//! store that fails every write, `accept` out of descriptors): the first is
//! written, then at most one per period, saying how many were not.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One kind of repeated event's log budget.
#[derive(Debug)]
pub(crate) struct Quiet {
    every: Duration,
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl Quiet {
    /// At most one line per `every`.
    pub(crate) const fn new(every: Duration) -> Self {
        Quiet {
            every,
            last: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written for an event at `now`: `Some(n)` with
    /// the `n` events since the last line that were not logged.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_of_the_others() {
        let quiet = Quiet::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(quiet.allow(t), Some(0));
        assert_eq!(quiet.allow(t + Duration::from_secs(1)), None);
        assert_eq!(quiet.allow(t + Duration::from_millis(9_999)), None);
        assert_eq!(quiet.allow(t + Duration::from_secs(10)), Some(2));
        assert_eq!(quiet.allow(t + Duration::from_secs(11)), None);
    }
}
