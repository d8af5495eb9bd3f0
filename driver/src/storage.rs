//! Running the core's store commands, for the node task and the REST
//! routes alike: timed into the latency histogram, and failures logged, at
//! most one line every [`QUIET`] with how many were not, so that a store
//! that fails every write (a full disk, a lost database) is seen at once
//! without flooding the log.

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
    if let StoreReply::Failed(e) = &reply
        && let Some(unlogged) = FAILURES.allow(Instant::now())
    {
        tracing::warn!(
            "store operation {kind} failed: {} ({unlogged} more failures since the last such line)",
            e.0
        );
    }
    reply
}

static FAILURES: Quiet = Quiet::new(QUIET);
