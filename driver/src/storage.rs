//! Running the core's store commands, for the node task and the REST
//! routes alike: timed into the latency histogram, and failures logged, at
//! most one line every [`QUIET`] with how many were not, so that a store
//! that fails every write (a full disk, a lost database) is seen at once
//! without flooding the log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use protocol::store::{Store, StoreCommand, StoreReply};

/// The shortest time between two lines about failing store operations.
const QUIET: Duration = Duration::from_secs(10);

/// Runs `command` on `store`; its latency goes into `histogram`, if any.
pub(crate) async fn run(
    store: &dyn Store,
    command: StoreCommand,
    histogram: Option<Histogram>,
) -> StoreReply {
    let kind = command.kind();
    let start = Instant::now();
    let reply = protocol::store::execute(store, command).await;
    if let Some(h) = histogram {
        h.observe(start.elapsed().as_secs_f64());
    }
    if let StoreReply::Failed(e) = &reply {
        FAILURES.record(kind, &e.0, Instant::now());
    }
    reply
}

/// When the last line was written, and the failures since that were not.
struct FailureLog {
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

static FAILURES: FailureLog = FailureLog {
    last: Mutex::new(None),
    unlogged: AtomicU64::new(0),
};

impl FailureLog {
    /// Logs this failure unless a line went out less than [`QUIET`] ago.
    fn record(&self, kind: &str, error: &str, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < QUIET) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *last = Some(now);
        let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            "store operation {kind} failed: {error} ({unlogged} more failures since the last such line)"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_at_most_once_per_quiet_period() {
        let log = FailureLog {
            last: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        };
        let t = Instant::now();
        assert!(log.record("append", "disk full", t));
        assert!(!log.record("append", "disk full", t + Duration::from_secs(1)));
        assert!(!log.record("ping", "disk full", t + QUIET - Duration::from_millis(1)));
        assert_eq!(log.unlogged.load(Ordering::Relaxed), 2);
        assert!(log.record("append", "disk full", t + QUIET));
        assert_eq!(log.unlogged.load(Ordering::Relaxed), 0);
    }
}
