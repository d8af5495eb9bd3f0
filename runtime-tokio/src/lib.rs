//! chatwire on tokio: the [`driver::Runtime`] for tokio, and the accept loop.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Instant;

use driver::{BoxFuture, Routes, Runtime};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
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

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until `shutdown` completes, serving each with `routes`.
pub async fn serve(
    listener: TcpListener,
    routes: Routes<Tokio>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(driver::serve_connection(TokioIo::new(stream), routes.clone()));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}
