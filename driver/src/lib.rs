//! What every chatwire runtime shares: the [`Runtime`] trait, the task that
//! drives a [`protocol::Node`], the hyper service, and the WebSocket
//! connections (framed with `protocol::ws`, written by the node's flusher).
//!
//! A runtime crate supplies only an executor, a timer, a listener, the stop
//! signals and its sockets ([`Runtime`], [`Socket`] and [`Server`]);
//! everything else lives here, written once: the accept loop ([`serve`]),
//! the chat server's `main` ([`app::main`]) and the conformance server's
//! ([`conformance::main`]).
#![forbid(unsafe_code)]

pub mod app;
pub mod bus;
pub mod conformance;
mod docs;
mod edge;
mod host;
mod metrics;
mod node_task;
mod quiet;
mod service;
mod storage;
mod web;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub use docs::ApiDocs;
pub use edge::{ConnSlot, Edge, EdgeConfig, default_max_connections};
pub use host::{announce, listener, serve};
pub use metrics::Metrics;
pub use node_task::{NodeHandle, Subscriptions, spawn_cluster_node, spawn_node};
pub use service::{Routes, serve_connection, unix_ms};
pub use web::WebApp;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A connected TCP socket, used without blocking from any thread: the node
/// task writes to it directly, the connection's task reads from it and
/// waits for it to become writable. Each runtime wraps its own socket type.
pub trait Socket: Send + Sync + 'static {
    /// Ready when the socket may have bytes to read (or an error, or EOF).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    /// Appends what can be read now to `buf`'s spare capacity (the caller
    /// reserves it); `Ok(0)` is EOF, `WouldBlock` that nothing is there.
    fn try_read(&self, buf: &mut bytes::BytesMut) -> std::io::Result<usize>;
    /// Ready when the socket may take more bytes.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    /// Writes what the socket takes now, `WouldBlock` if nothing.
    fn try_write(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize>;
    /// Shuts down the sending half (after a close frame).
    fn shutdown_write(&self);
}

/// What differs between runtimes: spawning, blocking work, timers, and
/// taking back the socket of an upgraded HTTP connection.
pub trait Runtime: Clone + Send + Sync + Unpin + 'static {
    /// The runtime's socket, as the WebSocket connections use it.
    type Socket: Socket;
    /// Runs a future in the background.
    fn spawn(&self, fut: BoxFuture<()>);
    /// Runs CPU-heavy work (bcrypt) off the event loop.
    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>);
    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()>;
    /// Completes once the runtime has run the other tasks that are ready
    /// and looked for new IO events, without sleeping: the node task's busy
    /// poll ([`NodeHandle::busy_poll`]), and the pause between two parts of
    /// a sweep of writes, so that what arrived meanwhile joins it. The
    /// default is tokio's `yield_now`: on tokio it wakes the task only after
    /// the worker has polled its IO driver; elsewhere it wakes the task at
    /// once and returns `Pending` once, which is all a runtime that looks
    /// for IO between two polls of a task needs.
    fn yield_now(&self) -> BoxFuture<()> {
        Box::pin(tokio::task::yield_now())
    }
    /// Takes back the socket of a connection that hyper upgraded (as
    /// [`hyper::upgrade::Upgraded::downcast`] does: hyper served it as an
    /// [`Edge`] around the runtime's connection), with the bytes hyper had
    /// read past the request; the connection back if it is not one of this
    /// runtime's sockets. The socket keeps the connection's [`ConnSlot`].
    fn socket(
        &self,
        io: hyper::upgrade::Upgraded,
    ) -> Result<(Self::Socket, bytes::Bytes), hyper::upgrade::Upgraded>;
}

/// What a runtime adds to [`Runtime`] to run a whole server process: a TCP
/// listener and the operator's stop signals.
pub trait Server: Runtime {
    /// The runtime's bound TCP listener.
    type Listener: Send + Sync + 'static;
    /// An accepted connection, as hyper reads and writes it.
    type Conn: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;
    /// Binds `addr` (port 0 picks a free one).
    fn bind(&self, addr: SocketAddr) -> BoxFuture<std::io::Result<Self::Listener>>;
    /// The address `listener` is bound to.
    fn local_addr(&self, listener: &Self::Listener) -> std::io::Result<SocketAddr>;
    /// Accepts the next connection (with Nagle's algorithm off), with its
    /// peer's address.
    #[allow(clippy::type_complexity)] // one future of one pair; an alias would only hide it
    fn accept<'a>(
        &self,
        listener: &'a Self::Listener,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<(Self::Conn, SocketAddr)>> + Send + 'a>>;
    /// Completes when the operator asks the process to stop (SIGTERM, Ctrl-C).
    /// The handlers are installed by this call, so a signal that comes
    /// before the future is polled (while the server starts) completes it.
    fn stop_signal(&self) -> BoxFuture<()>;
}

/// A 32-byte seed from the operating system's randomness, for
/// [`protocol::ids::SeededIds`]: std's `RandomState` keys come from the OS.
pub fn random_seed() -> [u8; 32] {
    use std::hash::BuildHasher;
    let mut s = [0u8; 32];
    for (i, chunk) in s.chunks_mut(8).enumerate() {
        let h = std::collections::hash_map::RandomState::new().hash_one((i, Instant::now()));
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    s
}
