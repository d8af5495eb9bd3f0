//! What every chatwire runtime shares: the [`Runtime`] trait, the task that
//! drives a [`protocol::Node`], the hyper service, and the WebSocket pump.
//!
//! A runtime crate supplies only an executor, a timer, a listener, the stop
//! signals and the WebSocket adapter ([`Runtime`] and [`Server`]);
//! everything else lives here, written once: the accept loop ([`serve`]),
//! the chat server's `main` ([`app::main`]) and the conformance server's
//! ([`conformance::main`]).
#![forbid(unsafe_code)]

pub mod app;
pub mod conformance;
mod host;
mod node_task;
mod service;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

pub use host::{announce, listener, serve};
pub use node_task::{NodeHandle, spawn_node};
pub use service::{Routes, serve_connection, unix_ms};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The WebSocket stream a runtime hands the pump.
pub trait WsStream:
    futures_util::Stream<Item = Result<tungstenite::Message, tungstenite::Error>>
    + futures_util::Sink<tungstenite::Message, Error = tungstenite::Error>
    + Send
    + Unpin
    + 'static
{
}

impl<T> WsStream for T where
    T: futures_util::Stream<Item = Result<tungstenite::Message, tungstenite::Error>>
        + futures_util::Sink<tungstenite::Message, Error = tungstenite::Error>
        + Send
        + Unpin
        + 'static
{
}

/// What differs between runtimes: spawning, blocking work, timers, and
/// turning an upgraded HTTP connection into a WebSocket.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The runtime's WebSocket stream type.
    type Ws: WsStream;
    /// Runs a future in the background.
    fn spawn(&self, fut: BoxFuture<()>);
    /// Runs CPU-heavy work (bcrypt) off the event loop.
    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>);
    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()>;
    /// Wraps an upgraded connection as a server-side WebSocket.
    fn websocket(
        &self,
        io: hyper::upgrade::Upgraded,
        config: tungstenite::protocol::WebSocketConfig,
    ) -> BoxFuture<Self::Ws>;
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
    /// Accepts the next connection (with Nagle's algorithm off).
    fn accept<'a>(
        &self,
        listener: &'a Self::Listener,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Conn>> + Send + 'a>>;
    /// Completes when the operator asks the process to stop (SIGTERM, Ctrl-C).
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
