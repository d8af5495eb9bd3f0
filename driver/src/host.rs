//! The accept loop, the ready line, and the count of open connections
//! that a shutdown waits for, shared by every [`Server`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};

use crate::{Routes, Server, serve_connection};

/// How many connections may wait to be accepted. The default of std (128)
/// overflows under connection bursts, and each overflow costs the client a
/// one-second SYN retry.
const BACKLOG: i32 = 4096;

/// A non-blocking listening socket with a deep accept queue, for a runtime
/// to wrap (`SO_REUSEADDR` set, as std does).
pub fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Tells the operator (and test harnesses, on stdout) where the server listens.
pub fn announce(addr: SocketAddr) {
    use std::io::Write;
    tracing::info!("chatwire listening on http://{addr}");
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
}

/// The server's open connections (HTTP ones, and WebSockets once
/// upgraded), counted so that a shutdown can wait for them to end, and told
/// when to finish: an HTTP connection then ends after the request it serves.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    live: Arc<AtomicUsize>,
    finish: async_channel::Sender<()>,
    finishing: async_channel::Receiver<()>,
}

/// One open connection, counted until it drops.
#[derive(Debug)]
pub(crate) struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    pub(crate) fn new() -> Self {
        // Nothing is ever sent: closing the channel is the signal.
        let (finish, finishing) = async_channel::bounded(1);
        Connections {
            live: Arc::default(),
            finish,
            finishing,
        }
    }

    /// Counts a connection while the guard lives.
    pub(crate) fn enter(&self) -> Live {
        self.live.fetch_add(1, Ordering::AcqRel);
        Live(self.live.clone())
    }

    /// How many connections are open.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Tells every HTTP connection, open or still to come, to finish.
    pub(crate) fn finish(&self) {
        self.finish.close();
    }

    /// Completes once [`Connections::finish`] was called.
    pub(crate) fn finishing(&self) -> impl Future<Output = ()> + Send + 'static {
        let finishing = self.finishing.clone();
        async move {
            let _ = finishing.recv().await;
        }
    }
}

/// Accepts connections until `shutdown` completes, serving each with
/// `routes`; then the listener is closed (new connections are refused) and
/// the connections already open go on.
pub async fn serve<S: Server>(
    rt: &S,
    listener: S::Listener,
    routes: Routes<S>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = match select(rt.accept(&listener), shutdown.as_mut()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(((), _)) => return,
        };
        match accepted {
            Ok(io) => rt.spawn(Box::pin(serve_connection(io, routes.clone()))),
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!("accept failed: {e}");
                rt.sleep_until(Instant::now() + Duration::from_millis(50))
                    .await;
            }
        }
    }
}
