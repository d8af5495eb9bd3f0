//! chatwire on tokio: the [`driver::Runtime`] and [`driver::Server`] for
//! tokio. Everything else (the accept loop, the binaries' wiring) is in
//! `driver`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use driver::{BoxFuture, Runtime, Server};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The tokio runtime behind the driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

    fn spawn(&self, fut: BoxFuture<()>) {
        tokio::spawn(fut);
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        tokio::task::spawn_blocking(work);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn websocket(
        &self,
        io: hyper::upgrade::Upgraded,
        config: WebSocketConfig,
    ) -> BoxFuture<Self::Ws> {
        Box::pin(WebSocketStream::from_raw_socket(
            TokioIo::new(io),
            Role::Server,
            Some(config),
        ))
    }
}

impl Server for Tokio {
    type Listener = TcpListener;
    type Conn = TokioIo<TcpStream>;

    fn bind(&self, addr: SocketAddr) -> BoxFuture<std::io::Result<TcpListener>> {
        Box::pin(async move { TcpListener::from_std(driver::listener(addr)?) })
    }

    fn local_addr(&self, listener: &TcpListener) -> std::io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn accept<'a>(
        &self,
        listener: &'a TcpListener,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Conn>> + Send + 'a>> {
        Box::pin(async move {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }

    fn stop_signal(&self) -> BoxFuture<()> {
        Box::pin(async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return std::future::pending().await;
                };
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
        })
    }
}
