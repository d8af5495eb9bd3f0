//! WebSocket connections, without a WebSocket library in the data path.
//!
//! The node task writes frames straight to the socket ([`WsConn::send`]):
//! every connection that received something in one drain of the core gets
//! one vectored write with all of its frames, and a broadcast's frame is
//! encoded once and shared by every recipient. Only what the socket does
//! not take at once is queued (bounded in bytes) for the connection's own
//! task, which waits for the socket to become writable. That task
//! ([`pump`]) also reads: it decodes client frames ([`crate::wsframe`]),
//! hands messages to the node, answers pings and closes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use protocol::ConnId;

use crate::node_task::{Command, NodeHandle};
use crate::wsframe::{self, Decoder, Message};
use crate::{Runtime, Socket};

/// How many bytes of frames a connection may have queued, not yet taken
/// by its socket, before it is dropped as too slow.
const QUEUE_BYTES: usize = 4 << 20;

/// Frames handed to one `writev`.
const IOVECS: usize = 64;

/// Bytes asked of one read.
const READ_CHUNK: usize = 4096;

/// How long a closed connection waits for the client's end of the close
/// handshake before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

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
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From the node task: sends `frames` (emptying the vector), writing
    /// what the socket takes now and queueing the rest. False if the
    /// connection is dead or has fallen too far behind; it is then closed.
    pub(crate) fn send(&self, frames: &mut Vec<Bytes>) -> bool {
        let mut out = self.out();
        if out.state != State::Open {
            frames.clear();
            return out.state != State::Dead;
        }
        // Frames already waiting mean the socket is full: the connection
        // task writes when it is not, so do not try it here.
        let blocked = !out.queue.is_empty();
        for f in frames.drain(..) {
            out.push(f);
        }
        if out.bytes > QUEUE_BYTES {
            out.kill();
            out.wake();
            return false;
        }
        if !blocked {
            out.write(&*self.socket);
            if !out.queue.is_empty() || out.state == State::Dead {
                out.wake();
            }
        }
        out.state != State::Dead
    }

    /// From the node task: the core closed this connection. What is queued
    /// is sent, then a close frame, then the socket is shut down.
    pub(crate) fn close(&self) {
        let mut out = self.out();
        if out.state == State::Open {
            out.state = State::Closing;
            out.push(wsframe::close(1000));
            if out.queue.len() == 1 {
                out.write(&*self.socket);
            }
        }
        out.wake();
    }

    /// From the node task: drops the connection without a word.
    pub(crate) fn abort(&self) {
        let mut out = self.out();
        out.kill();
        out.wake();
    }

    /// Queues a control frame of the connection's own (a pong, or a close
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

/// What the connection task hands the node, or the end of the connection.
enum Event {
    Text(tungstenite::Utf8Bytes),
    Binary(Bytes),
    /// Over; `true` if our close frame went out (the client may still be
    /// sending its own).
    End(bool),
}

/// Runs one WebSocket connection until either side ends it. `read` holds
/// bytes that arrived with the upgrade request.
pub(crate) async fn pump<R: Runtime>(
    rt: R,
    conn: ConnId,
    ws: Arc<WsConn>,
    mut read: BytesMut,
    node: NodeHandle,
    max_message: usize,
) {
    let mut decoder = Decoder::new(max_message);
    let mut reading = true;
    let closed = loop {
        let event = poll_fn(|cx| poll_event(cx, &ws, &mut read, &mut decoder, &mut reading)).await;
        match event {
            Event::Text(t) => node.send(Command::WsText(conn, t)).await,
            Event::Binary(b) => node.send(Command::WsBinary(conn, b)).await,
            Event::End(closed) => break closed,
        }
    };
    node.send(Command::WsClosed(conn)).await;
    if closed && reading {
        // Give the client a moment to answer the close frame before the
        // socket is dropped (which would reset a connection that still
        // has unread data, and could lose the close frame on the way).
        let drain = poll_fn(|cx| poll_until_eof(cx, &*ws.socket));
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
        match decoder.decode(read) {
            Ok(Some(Message::Text(t))) => return Poll::Ready(Event::Text(t)),
            Ok(Some(Message::Binary(b))) => return Poll::Ready(Event::Binary(b)),
            Ok(Some(Message::Ping(p))) => ws.control(wsframe::pong(&p), false),
            Ok(Some(Message::Close(code))) => {
                // Answer with the client's code (1000 when it gave none, or
                // one that may not be sent back), then end.
                let code = code.filter(|c| (1000..5000).contains(c) && *c != 1005 && *c != 1006);
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

fn poll_until_eof(cx: &mut Context<'_>, socket: &dyn Socket) -> Poll<()> {
    let mut scratch = BytesMut::new();
    loop {
        if std::task::ready!(socket.poll_readable(cx)).is_err() {
            return Poll::Ready(());
        }
        scratch.clear();
        scratch.reserve(READ_CHUNK);
        match socket.try_read(&mut scratch) {
            Ok(0) => return Poll::Ready(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Poll::Ready(()),
        }
    }
}
