//! The accept loop and the ready line, shared by every [`Server`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
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

/// Accepts connections until `shutdown` completes, serving each with `routes`.
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
