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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    use protocol::model::ObjectId;
    use protocol::model::UserRecord;
    use protocol::store::{
        Append, CreateUser, History, HistoryQuery, NewMessage, ReadReceipt, StoreError, StoreFuture,
    };

    use super::*;

    /// A store whose every operation fails with `error`.
    struct Failing(StoreError);

    impl Failing {
        fn fail<T: Send + 'static>(&self) -> StoreFuture<T> {
            Box::pin(std::future::ready(Err(self.0.clone())))
        }
    }

    impl Store for Failing {
        fn ping(&self) -> StoreFuture<()> {
            self.fail()
        }
        fn create_user(&self, _: UserRecord) -> StoreFuture<CreateUser> {
            self.fail()
        }
        fn find_user(&self, _: String) -> StoreFuture<Option<UserRecord>> {
            self.fail()
        }
        fn append_message(&self, _: NewMessage) -> StoreFuture<Append> {
            self.fail()
        }
        fn history(&self, _: HistoryQuery) -> StoreFuture<History> {
            self.fail()
        }
        fn mark_delivered(&self, _: ObjectId) -> StoreFuture<()> {
            self.fail()
        }
        fn mark_read(&self, _: Vec<ObjectId>, _: ObjectId) -> StoreFuture<Vec<ReadReceipt>> {
            self.fail()
        }
    }

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs a failing ping `n` times; returns the log.
    fn log_of(error: StoreError, n: usize) -> String {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let store = Failing(error);
            for _ in 0..n {
                let mut run = Box::pin(run(&store, StoreCommand::Ping, None));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(matches!(
                    run.as_mut().poll(&mut cx),
                    Poll::Ready(StoreReply::Failed(_))
                ));
            }
        });
        String::from_utf8(log.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_permanent_failure_is_logged_at_error_every_time() {
        let log = log_of(StoreError::permanent("corrupt"), 3);
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("failed for good"))
            .collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains("ERROR") && l.contains("corrupt")),
            "{log}"
        );
    }
}
