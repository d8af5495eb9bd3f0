//! The stop signals count from the moment `stop_signal` is called, before the
//! future is first polled: a signal sent while the server starts (the store
//! opening) must not be lost, kill the process (the default action) or be
//! ignored (what PID 1 in a container does without a handler). Its own test
//! binary: it signals its own process.

use std::process::Command;
use std::time::Duration;

use driver::Server;

fn signal_self(sig: &str) {
    let pid = std::process::id().to_string();
    let status = Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}: {status}");
}

#[tokio::test]
async fn a_signal_before_the_first_poll_completes_the_stop() {
    for sig in ["-TERM", "-INT"] {
        let stop = chatwire::Tokio.stop_signal();
        signal_self(sig);
        // let the signal land before the future is polled at all
        std::thread::sleep(Duration::from_millis(100));
        tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .unwrap_or_else(|_| panic!("{sig}: stop_signal never completed"));
    }
}
