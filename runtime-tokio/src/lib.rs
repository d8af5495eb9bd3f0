//! chatwire on tokio: the [`driver::Runtime`] and [`driver::Server`] for
//! tokio. Everything else (the accept loop, the binaries' wiring) is in
//! `driver`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use driver::{BoxFuture, Runtime, Server, Socket};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

/// The tokio runtime behind the driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Socket = TokioSocket;

    fn spawn(&self, fut: BoxFuture<()>) {
        tokio::spawn(fut);
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        tokio::task::spawn_blocking(work);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn socket(&self, io: Upgraded) -> Result<(TokioSocket, Bytes), Upgraded> {
        let parts = io.downcast::<driver::Edge<TokioIo<TcpStream>, Tokio>>()?;
        let (io, slot) = parts.io.into_parts();
        Ok((TokioSocket(io.into_inner(), slot), parts.read_buf))
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
    ) -> Pin<Box<dyn Future<Output = std::io::Result<(Self::Conn, SocketAddr)>> + Send + 'a>> {
        Box::pin(async move {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((TokioIo::new(stream), peer))
        })
    }

    fn stop_signal(&self) -> BoxFuture<()> {
        // The handlers are installed now, not at the first poll: a process
        // that is PID 1 (in a container) ignores a signal it has no handler
        // for, so one that arrives while the server starts must be kept.
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return Box::pin(std::future::pending());
            };
            Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            })
        }
        #[cfg(not(unix))]
        {
            let ctrl_c = tokio::signal::ctrl_c();
            Box::pin(async move {
                let _ = ctrl_c.await;
            })
        }
    }
}

/// A tokio TCP stream as the driver's WebSocket connections use it, holding
/// its place under the connection cap while it lives.
#[derive(Debug)]
pub struct TokioSocket(
    TcpStream,
    #[expect(dead_code, reason = "held for its Drop: the place under the cap")] driver::ConnSlot,
);

impl Socket for TokioSocket {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx)
    }

    fn try_read(&self, buf: &mut BytesMut) -> io::Result<usize> {
        read_now(&self.0, buf)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_write_ready(cx)
    }

    fn try_write(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(&self.0).shutdown(std::net::Shutdown::Write);
    }
}

/// Reads what `stream` has now into `buf`'s spare capacity. A read that
/// filled less than the room it had drained the socket: tokio is told so
/// (the closure's `WouldBlock` clears the readiness it read under, unless
/// an event came since), so the connection's task sleeps without one more
/// `recv` that would find nothing, as tokio's own `AsyncRead` for
/// `TcpStream` does. One syscall fewer per message read.
fn read_now(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let mut got = None;
    let r = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        got = Some(n);
        if n > 0 && n < room {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match got {
        Some(n) => Ok(n),
        None => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn readable_now(stream: &TcpStream) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        stream.poll_read_ready(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn a_short_read_leaves_the_socket_waiting_for_more() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::with_capacity(4096);

        client.write_all(b"hello").await.unwrap();
        server.readable().await.unwrap();
        assert_eq!(read_now(&server, &mut buf).unwrap(), 5);
        // Drained: no second read is needed to find that out.
        assert!(!readable_now(&server));

        // What comes next wakes it again, and a read that fills its room
        // leaves it readable (there may be more).
        client.write_all(&[7; 100]).await.unwrap();
        server.readable().await.unwrap();
        let mut small = BytesMut::with_capacity(10);
        let n = read_now(&server, &mut small).unwrap();
        assert_eq!(n, small.capacity());
        assert!(readable_now(&server));
        let mut rest = BytesMut::with_capacity(4096);
        assert_eq!(read_now(&server, &mut rest).unwrap(), 100 - n);
        assert!(!readable_now(&server));

        // Nothing there: WouldBlock.
        let e = read_now(&server, &mut rest).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        // The end of the stream reads as 0.
        drop(client);
        server.readable().await.unwrap();
        assert_eq!(read_now(&server, &mut rest).unwrap(), 0);
    }
}
