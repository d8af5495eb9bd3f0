//! The accept loop and the ready line, shared by every [`Server`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};

use crate::edge::Edge;
use crate::quiet::Quiet;
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

/// The longest wait after a failed `accept` (out of descriptors, most
/// likely); the wait doubles from 10 ms up to it while `accept` keeps failing.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

static ACCEPT_FAILURES: Quiet = Quiet::new(Duration::from_secs(10));
static OVER_CAP: Quiet = Quiet::new(Duration::from_secs(10));

/// Accepts connections until `shutdown` completes, serving each with
/// `routes`; past `routes`' connection cap a connection is answered 503 and
/// closed at once.
pub async fn serve<S: Server>(
    rt: &S,
    listener: S::Listener,
    routes: Routes<S>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown);
    let connections = routes.connections.clone();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = match select(rt.accept(&listener), shutdown.as_mut()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(((), _)) => return,
        };
        match accepted {
            Ok((io, peer)) => {
                backoff = Duration::ZERO;
                match connections.try_open() {
                    Some(slot) => {
                        let held = crate::edge::Held::default();
                        let io = Edge::new(io, slot, rt.clone(), held.clone());
                        let routes = routes.clone().for_conn(peer, held);
                        rt.spawn(Box::pin(serve_connection(io, routes)));
                    }
                    None => {
                        if let Some(n) = OVER_CAP.allow(Instant::now()) {
                            tracing::warn!(
                                "{} connections open, the most allowed (MAX_CONNECTIONS): new ones are answered 503 ({n} more since the last such line)",
                                connections.max()
                            );
                        }
                        rt.spawn(Box::pin(crate::edge::refuse(io)));
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to
                // close, longer each time, rather than spin on the error.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), ACCEPT_BACKOFF);
                if let Some(n) = ACCEPT_FAILURES.allow(Instant::now()) {
                    tracing::warn!(
                        "accept failed: {e}; retrying in up to {ACCEPT_BACKOFF:?} ({n} more failures since the last such line)"
                    );
                }
                rt.sleep_until(Instant::now() + backoff).await;
            }
        }
    }
}
