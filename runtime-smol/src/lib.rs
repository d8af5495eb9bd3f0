//! chatwire on smol: the [`driver::Runtime`] and [`driver::Server`] for smol
//! (async-executor, async-io, blocking), and the adapter async-tungstenite
//! needs over hyper's upgraded connection. Everything else (the accept loop,
//! the binaries' wiring) is in `driver`, shared with the tokio runtime.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use async_signal::{Signal, Signals};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use driver::{BoxFuture, Runtime, Server};
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;
use smol::{Executor, Timer};
use smol_hyper::rt::FuturesIo;

/// The smol runtime behind the driver: tasks run on one executor thread per
/// core, blocking work on smol's thread pool, timers on async-io's reactor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

/// The process-wide executor, with its worker threads started on first use.
fn executor() -> &'static Executor<'static> {
    static EXECUTOR: Executor<'static> = Executor::new();
    static WORKERS: Once = Once::new();
    WORKERS.call_once(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..n {
            std::thread::Builder::new()
                .name(format!("chatwire-smol-{i}"))
                .spawn(|| smol::block_on(EXECUTOR.run(smol::future::pending::<()>())))
                .expect("the OS can start the executor's threads at startup");
        }
    });
    &EXECUTOR
}

impl Runtime for Smol {
    type Ws = WebSocketStream<UpgradedIo>;

    fn spawn(&self, fut: BoxFuture<()>) {
        executor().spawn(fut).detach();
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        smol::unblock(work).detach();
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(async move {
            Timer::at(deadline).await;
        })
    }

    fn websocket(
        &self,
        io: hyper::upgrade::Upgraded,
        config: WebSocketConfig,
    ) -> BoxFuture<Self::Ws> {
        Box::pin(WebSocketStream::from_raw_socket(
            UpgradedIo(io),
            Role::Server,
            Some(config),
        ))
    }
}

impl Server for Smol {
    type Listener = TcpListener;
    type Conn = FuturesIo<TcpStream>;

    fn bind(&self, addr: SocketAddr) -> BoxFuture<io::Result<TcpListener>> {
        Box::pin(async move { TcpListener::try_from(driver::listener(addr)?) })
    }

    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn accept<'a>(
        &self,
        listener: &'a TcpListener,
    ) -> Pin<Box<dyn Future<Output = io::Result<Self::Conn>> + Send + 'a>> {
        Box::pin(async move {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(FuturesIo::new(stream))
        })
    }

    fn stop_signal(&self) -> BoxFuture<()> {
        Box::pin(async {
            // Without the handlers the default actions stop the process abruptly.
            let Ok(mut signals) = Signals::new([Signal::Term, Signal::Int]) else {
                return std::future::pending().await;
            };
            let _ = signals.next().await;
        })
    }
}

/// hyper's upgraded connection as `futures-io` reads and writes it, which is
/// what async-tungstenite takes (smol-hyper adapts the other direction only).
#[derive(Debug)]
pub struct UpgradedIo(hyper::upgrade::Upgraded);

impl futures_io::AsyncRead for UpgradedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read = hyper::rt::ReadBuf::new(buf);
        ready!(hyper::rt::Read::poll_read(
            Pin::new(&mut self.get_mut().0),
            cx,
            read.unfilled()
        ))?;
        Poll::Ready(Ok(read.filled().len()))
    }
}

impl futures_io::AsyncWrite for UpgradedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(Pin::new(&mut self.get_mut().0), cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.get_mut().0), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.get_mut().0), cx)
    }
}
