//! WebSocket connections, framed by the core's own codec ([`protocol::ws`]):
//! of tungstenite, only its checked UTF-8 type and the handshake's accept
//! key are used.
//!
//! The node task queues frames on the connections ([`WsConn::queue`],
//! bounded in bytes), a broadcast's frame encoded once and shared by every
//! recipient, and hands the connections to one [`Flusher`] task, which
//! gives each of them one vectored write with all of its frames. Only what
//! a socket does not take at once is left to the connection's own task,
//! which waits for the socket to become writable. That task ([`pump`]) also
//! reads: it decodes client frames ([`protocol::ws`]), hands messages to
//! the node, answers pings and closes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::{Runtime, Socket};
use protocol::ws::{self as wsframe, Decoder, Received};

/// How many bytes of frames a connection may have queued, not yet taken
/// by its socket, before it is dropped as too slow.
const QUEUE_BYTES: usize = 4 << 20;

/// Connections a sweep writes between two yields to the runtime (about
/// 0.3 ms of writes on loopback).
const SWEEP_CHUNK: usize = 64;

/// Frames handed to one `writev`.
const IOVECS: usize = 64;

/// How many bytes of a connection's messages may wait for the node before
/// the connection stops reading (then TCP's flow control holds the client
/// back). One message of any allowed size may always be in flight.
const READ_AHEAD: usize = 64 << 10;

/// Bytes asked of one read.
const READ_CHUNK: usize = 4096;

/// How long a closed connection waits for the client's end of the close
/// handshake (its close frame, or the end of the connection) before the
/// socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Why [`WsConn::queue`] refused frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// The connection was dropped already (a write failed, the peer left).
    Gone,
    /// Its queue went past [`QUEUE_BYTES`]: the client is too slow; it is
    /// dropped now.
    TooSlow,
}

/// One WebSocket connection, shared by the node task (which writes) and
/// the connection's task (which reads, and writes what had to wait).
pub(crate) struct WsConn {
    socket: Box<dyn Socket>,
    out: Mutex<Out>,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Out {
    /// Frames (or the rest of one) the socket has not taken yet.
    queue: VecDeque<Bytes>,
    bytes: usize,
    state: State,
    /// The connection task, to wake when the queue needs the socket's
    /// writability, or the connection is closing.
    waker: Option<Waker>,
    /// Bytes of this connection's messages handed to the node and not yet
    /// taken in by it: reading stops at [`READ_AHEAD`].
    inflight: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Open,
    /// A close frame is queued: nothing more is sent after it.
    Closing,
    /// Dropped (too slow, a write failed, or the peer left).
    Dead,
}

impl Out {
    /// Writes from the queue until it is empty or the socket is full.
    fn write(&mut self, socket: &dyn Socket) {
        while !self.queue.is_empty() && self.state != State::Dead {
            let written = {
                let mut iov = [IoSlice::new(&[]); IOVECS];
                let n = iov
                    .iter_mut()
                    .zip(&self.queue)
                    .map(|(slot, b)| *slot = IoSlice::new(b))
                    .count();
                socket.try_write(&iov[..n])
            };
            match written {
                Ok(0) => self.kill(),
                Ok(mut n) => {
                    self.bytes -= n;
                    while n > 0 {
                        let Some(front) = self.queue.front_mut() else {
                            break;
                        };
                        if n < front.len() {
                            front.advance(n);
                            break;
                        }
                        n -= front.len();
                        self.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.kill(),
            }
        }
        if self.queue.capacity() > IOVECS && self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
    }

    fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.queue.push_back(frame);
    }

    fn kill(&mut self) {
        self.state = State::Dead;
        self.queue = VecDeque::new();
        self.bytes = 0;
    }

    fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }
}

impl WsConn {
    pub(crate) fn new(socket: Box<dyn Socket>) -> Self {
        WsConn {
            socket,
            out: Mutex::new(Out::default()),
        }
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        lock(&self.out)
    }

    /// From the node task: queues `frames` (emptying the vector). `Ok(true)`
    /// if the queue was empty, so the connection must be handed to the
    /// [`Flusher`]; `Err` if the connection is dead or has fallen too far
    /// behind (it is then dropped).
    pub(crate) fn queue(&self, frames: &mut Vec<Bytes>) -> Result<bool, Dropped> {
        let mut out = self.out();
        if out.state != State::Open {
            frames.clear();
            return if out.state == State::Dead {
                Err(Dropped::Gone)
            } else {
                Ok(false)
            };
        }
        let was_empty = out.queue.is_empty();
        for f in frames.drain(..) {
            out.push(f);
        }
        if out.bytes > QUEUE_BYTES {
            out.kill();
            out.wake();
            return Err(Dropped::TooSlow);
        }
        Ok(was_empty && !out.queue.is_empty())
    }

    /// From the node task, for a scrape: the bytes and frames queued and not
    /// yet taken by the socket.
    pub(crate) fn queued(&self) -> (usize, usize) {
        let out = self.out();
        (out.bytes, out.queue.len())
    }

    /// From the node task: the core closed this connection. What is queued
    /// is sent, then a close frame with `code` (1001 when the server shuts
    /// down), then the socket is shut down. True if the connection must be
    /// handed to the [`Flusher`].
    pub(crate) fn close(&self, code: u16) -> bool {
        let mut out = self.out();
        if out.state != State::Open {
            return false;
        }
        out.state = State::Closing;
        let was_empty = out.queue.is_empty();
        out.push(wsframe::close(code));
        was_empty
    }

    /// From the [`Flusher`] (or the node task, for a few connections):
    /// writes what the socket takes; what it does not
    /// is left to the connection's task, woken to wait for writability.
    pub(crate) fn flush(&self) {
        let mut out = self.out();
        out.write(&*self.socket);
        if !out.queue.is_empty() || out.state != State::Open {
            out.wake();
        }
    }

    /// From the node task: it has taken in `bytes` of this connection's
    /// messages; reading may go on.
    pub(crate) fn consumed(&self, bytes: usize) {
        let mut out = self.out();
        let before = out.inflight;
        out.inflight = before.saturating_sub(bytes);
        if before >= READ_AHEAD && out.inflight < READ_AHEAD {
            out.wake();
        }
    }

    /// Counts a message handed to the node.
    fn handed(&self, bytes: usize) {
        self.out().inflight += bytes;
    }

    fn may_read(&self) -> bool {
        self.out().inflight < READ_AHEAD
    }

    /// From the node task: drops the connection without a word.
    pub(crate) fn abort(&self) {
        let mut out = self.out();
        out.kill();
        out.wake();
    }

    /// Queues a frame of the connection's own (a pong, an echo, or a close
    /// with `closing`).
    fn control(&self, frame: Bytes, closing: bool) {
        let mut out = self.out();
        if out.state != State::Open {
            return;
        }
        if closing {
            out.state = State::Closing;
        }
        out.push(frame);
        if out.queue.len() == 1 {
            out.write(&*self.socket);
        }
    }

    /// The writing half of the connection task: registers its waker,
    /// writes what is queued once the socket can take it, and shuts the
    /// socket down after a close frame. Ready when the connection is over
    /// (`true` if it ended with our close frame sent).
    fn poll_write(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut out = self.out();
        if !out.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            out.waker = Some(cx.waker().clone());
        }
        while !out.queue.is_empty() && out.state != State::Dead {
            match self.socket.poll_writable(cx) {
                Poll::Ready(Ok(())) => out.write(&*self.socket),
                Poll::Ready(Err(_)) => out.kill(),
                Poll::Pending => return Poll::Pending,
            }
        }
        match out.state {
            State::Open => Poll::Pending,
            State::Closing => {
                self.socket.shutdown_write();
                out.kill();
                Poll::Ready(true)
            }
            State::Dead => Poll::Ready(false),
        }
    }
}

/// Writes the connections that the node task queued frames for, after the
/// node's turn: a task of its own, so that the writes (a system call per
/// connection, and on loopback the receiver's TCP work as well) wait behind
/// whatever else is ready to run.
///
/// It never waits on a clock. Woken by the node, it first yields to the
/// runtime ([`Runtime::yield_now`]: whatever is ready runs, and the runtime
/// looks for new IO, before the sweep goes on), then writes each connection
/// everything queued for it, yielding again after every [`SWEEP_CHUNK`]
/// connections. So what arrives while a sweep runs is taken in by the node
/// within a fraction of a millisecond: its frames join the queues of the
/// connections this sweep has not reached yet (one write carries both),
/// and the connections already written are handed over again for the next
/// sweep. Writes gather messages only while the core is behind, and as
/// many as the backlog holds; on an idle server nothing else is ready and
/// the writes start at once.
#[derive(Debug, Clone)]
pub(crate) struct Flusher {
    pending: Arc<Mutex<Vec<Arc<WsConn>>>>,
    wake: async_channel::Sender<()>,
}

impl Flusher {
    /// Starts the flusher's task on `rt`.
    pub(crate) fn spawn<R: Runtime>(rt: &R) -> Flusher {
        let (wake, woken) = async_channel::bounded(1);
        let pending: Arc<Mutex<Vec<Arc<WsConn>>>> = Arc::default();
        let list = pending.clone();
        let runtime = rt.clone();
        rt.spawn(Box::pin(async move {
            let mut conns = Vec::new();
            while woken.recv().await.is_ok() {
                // Behind whatever is ready or arrived: its frames join this
                // sweep (BENCHMARKS.md, 2026-12-06: the runs against the
                // earlier wait of half a sweep on a timer).
                runtime.yield_now().await;
                std::mem::swap(&mut conns, &mut *lock(&list));
                for (i, ws) in conns.drain(..).enumerate() {
                    ws.flush();
                    if i % SWEEP_CHUNK == SWEEP_CHUNK - 1 {
                        runtime.yield_now().await;
                    }
                }
            }
        }));
        Flusher { pending, wake }
    }

    /// Hands over connections with frames to write.
    pub(crate) fn hand(&self, conns: &mut Vec<Arc<WsConn>>) {
        if conns.is_empty() {
            return;
        }
        lock(&self.pending).append(conns);
        // A full channel means a wake-up is already pending.
        let _ = self.wake.try_send(());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the connection task hands the node, or the end of the connection.
enum Event {
    Text(tungstenite::Utf8Bytes),
    Binary(Bytes),
    /// Over; `true` if our close frame went out (the client may still be
    /// sending its own).
    End(bool),
}

/// What a connection's reader hands on (to the node), in order.
pub(crate) enum Incoming {
    /// A whole text message.
    Text(tungstenite::Utf8Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// The connection is over: nothing follows.
    Closed,
}

/// Where a connection's reader hands what it reads (the node task).
pub(crate) trait Deliver: Send {
    /// Hands one thing on, waiting while the receiver is full.
    fn deliver(&self, m: Incoming) -> impl Future<Output = ()> + Send;
}

/// Runs one WebSocket connection until either side ends it, handing what
/// it reads to `to`. `read` holds bytes that arrived with the upgrade
/// request.
pub(crate) async fn pump<R: Runtime>(
    rt: R,
    ws: Arc<WsConn>,
    mut read: BytesMut,
    max_message: usize,
    to: impl Deliver,
) {
    let mut decoder = Decoder::new(max_message);
    let mut reading = true;
    let closed = loop {
        let event = poll_fn(|cx| poll_event(cx, &ws, &mut read, &mut decoder, &mut reading)).await;
        match event {
            Event::Text(t) => {
                ws.handed(t.len());
                to.deliver(Incoming::Text(t)).await;
            }
            Event::Binary(b) => {
                ws.handed(b.len());
                to.deliver(Incoming::Binary(b)).await;
            }
            Event::End(closed) => break closed,
        }
    };
    to.deliver(Incoming::Closed).await;
    linger(&rt, &ws, closed && reading, &mut read, &mut decoder).await;
}

/// Echoes every message back, framed by the same code as the chat's
/// connections: the endpoint the WebSocket conformance cases (Autobahn's,
/// run by kosoku) drive in the conformance server. Nothing bounds what it
/// queues for a client that does not read: it is for tests only.
pub(crate) async fn echo<R: Runtime>(
    rt: R,
    ws: Arc<WsConn>,
    mut read: BytesMut,
    max_message: usize,
) {
    let mut decoder = Decoder::new(max_message);
    let mut reading = true;
    let closed = loop {
        match poll_fn(|cx| poll_event(cx, &ws, &mut read, &mut decoder, &mut reading)).await {
            Event::Text(t) => ws.control(wsframe::encode(wsframe::TEXT, t.as_bytes()), false),
            Event::Binary(b) => ws.control(wsframe::encode(wsframe::BINARY, &b), false),
            Event::End(closed) => break closed,
        }
    };
    linger(&rt, &ws, closed && reading, &mut read, &mut decoder).await;
}

/// After our close frame went out while the client may still be sending:
/// gives it a moment to answer the close before the socket is dropped
/// (which would reset a connection that still has unread data, and could
/// lose the close frame on the way). Its close frame ends the handshake:
/// then the server closes the connection first (RFC 6455 §7.1.1), without
/// waiting for the client to (a client that answers the close but keeps
/// its socket open would otherwise hold a shutdown for the whole linger).
async fn linger<R: Runtime>(
    rt: &R,
    ws: &WsConn,
    wait: bool,
    read: &mut BytesMut,
    decoder: &mut Decoder,
) {
    if wait {
        let drain = poll_fn(|cx| poll_until_close(cx, ws, read, decoder));
        let linger = rt.sleep_until(Instant::now() + CLOSE_LINGER);
        futures_util::future::select(Box::pin(drain), linger).await;
    }
}

fn poll_event(
    cx: &mut Context<'_>,
    ws: &WsConn,
    read: &mut BytesMut,
    decoder: &mut Decoder,
    reading: &mut bool,
) -> Poll<Event> {
    if let Poll::Ready(closed) = ws.poll_write(cx) {
        return Poll::Ready(Event::End(closed));
    }
    while *reading {
        if !ws.may_read() {
            // The node has enough of ours to chew on: `consumed` wakes us.
            return Poll::Pending;
        }
        match decoder.decode(read) {
            Ok(Some(Received::Text(t))) => match tungstenite::Utf8Bytes::try_from(t) {
                Ok(t) => return Poll::Ready(Event::Text(t)),
                // The decoder checked it already; this cannot fail.
                Err(_) => {
                    ws.control(wsframe::close(1007), true);
                    *reading = false;
                }
            },
            Ok(Some(Received::Binary(b))) => return Poll::Ready(Event::Binary(b)),
            Ok(Some(Received::Ping(p))) => ws.control(wsframe::pong(&p), false),
            Ok(Some(Received::Close(code))) => {
                // Answer with the client's code (the decoder let through
                // only codes that may be sent), 1000 when it gave none.
                ws.control(wsframe::close(code.unwrap_or(1000)), true);
                *reading = false;
            }
            Err(v) => {
                ws.control(wsframe::close(v.close_code()), true);
                *reading = false;
            }
            Ok(None) => match poll_read(cx, ws, read) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    ws.abort();
                    *reading = false;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    if read.is_empty() {
                        // Nothing half-read: hold no buffer while idle.
                        *read = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            },
        }
    }
    // A control frame was queued or the connection was dropped: the
    // writing half takes it from here.
    ws.poll_write(cx).map(Event::End)
}

fn poll_read(cx: &mut Context<'_>, ws: &WsConn, read: &mut BytesMut) -> Poll<io::Result<usize>> {
    loop {
        if let Err(e) = std::task::ready!(ws.socket.poll_readable(cx)) {
            return Poll::Ready(Err(e));
        }
        read.reserve(READ_CHUNK);
        match ws.socket.try_read(read) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return Poll::Ready(r),
        }
    }
}

/// Reads (and drops) what the client sends until its close frame, a
/// frame that breaks the protocol, or the end of the connection.
fn poll_until_close(
    cx: &mut Context<'_>,
    ws: &WsConn,
    read: &mut BytesMut,
    decoder: &mut Decoder,
) -> Poll<()> {
    loop {
        match decoder.decode(read) {
            Ok(Some(Received::Close(_))) | Err(_) => return Poll::Ready(()),
            // Sent before the client saw our close: nobody takes it now.
            Ok(Some(_)) => continue,
            Ok(None) => {}
        }
        match std::task::ready!(poll_read(cx, ws, read)) {
            Ok(0) | Err(_) => return Poll::Ready(()),
            Ok(_) => {}
        }
    }
}
