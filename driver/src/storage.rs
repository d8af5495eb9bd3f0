//! Running the core's store commands, for the node task and the REST
//! routes alike: timed into the latency histogram, and failures logged.
//! A transient failure gets at most one line every [`QUIET`] with how many
//! were not logged, so that a store that fails every write (a full disk, a
//! lost database) is seen at once without flooding the log; a permanent one
//! is logged at error, every time.

use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use protocol::store::{Store, StoreCommand, StoreReply};

use crate::quiet::Quiet;

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
        if e.is_permanent() {
            // Not passing by itself: every one is worth a look.
            tracing::error!("store operation {kind} failed for good: {e}");
        } else if let Some(unlogged) = FAILURES.allow(Instant::now()) {
            tracing::warn!(
                "store operation {kind} failed: {e} ({unlogged} more failures since the last such line)"
            );
        }
    }
    reply
}

static FAILURES: Quiet = Quiet::new(QUIET);
