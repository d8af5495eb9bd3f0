//! The task that owns one [`Node`]: it feeds inputs in, drains outputs, runs
//! store commands, and moves frames to the connections' bounded queues.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_channel::oneshot;
use protocol::ids::IntMap;
use protocol::store::{Store, StoreReply};
use protocol::{ConnId, Frame, HttpResponse, Input, Method, Node, OpId, Output, RequestId, Upper};
use tungstenite::{Message, Utf8Bytes};

use crate::Runtime;

/// What a connection's writer receives.
#[derive(Debug)]
pub(crate) enum WsOut {
    /// Messages to write together, in one flush.
    Frames(Vec<Message>),
    /// Write what is queued, then close.
    Close,
}

/// How many bytes of frames a connection may have queued, not yet written,
/// before it is dropped as too slow. The queue itself grows lazily, so an
/// idle connection holds next to nothing.
const WS_QUEUE_BYTES: usize = 4 << 20;

/// The node task's end of a connection's outgoing queue.
#[derive(Debug, Clone)]
pub(crate) struct OutQueue {
    tx: async_channel::Sender<WsOut>,
    queued: Arc<AtomicUsize>,
}

/// The writer's end: it gives the bytes back once they are written.
#[derive(Debug)]
pub(crate) struct OutReceiver {
    pub(crate) rx: async_channel::Receiver<WsOut>,
    queued: Arc<AtomicUsize>,
}

impl OutReceiver {
    pub(crate) fn written(&self, frames: &[Message]) {
        self.queued
            .fetch_sub(batch_bytes(frames), Ordering::Relaxed);
    }
}

pub(crate) fn batch_bytes(frames: &[Message]) -> usize {
    frames.iter().map(Message::len).sum()
}

impl OutQueue {
    /// Queues a batch, unless that would pass the connection's byte bound.
    fn push(&self, out: WsOut) -> bool {
        if let WsOut::Frames(frames) = &out {
            let n = batch_bytes(frames);
            if self.queued.load(Ordering::Relaxed) + n > WS_QUEUE_BYTES {
                return false;
            }
            self.queued.fetch_add(n, Ordering::Relaxed);
        }
        self.tx.try_send(out).is_ok()
    }
}

/// The most inputs taken in one turn before outputs are drained.
const BATCH: usize = 256;

pub(crate) enum Command {
    Http {
        req: RequestId,
        method: Method,
        query: String,
        authorization: Option<String>,
        body: Bytes,
        reply: oneshot::Sender<HttpResponse>,
    },
    HttpAborted(RequestId),
    WsOpen {
        conn: ConnId,
        query: String,
        authorization: Option<String>,
        out: OutQueue,
    },
    WsText(ConnId, tungstenite::Utf8Bytes),
    WsBinary(ConnId, Bytes),
    WsClosed(ConnId),
    StoreReply(OpId, StoreReply),
    Shutdown,
}

/// A cheap, cloneable handle to a node task.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    pub(crate) tx: async_channel::Sender<Command>,
    ids: Arc<AtomicU64>,
    store_ops: Arc<AtomicUsize>,
}

impl NodeHandle {
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// How many store commands are running.
    pub fn store_operations(&self) -> usize {
        self.store_ops.load(Ordering::Acquire)
    }

    pub(crate) async fn send(&self, c: Command) {
        // The node task only ends when every handle is gone.
        let _ = self.tx.send(c).await;
    }
}

/// Starts the task that drives `node`, executing its store commands against
/// `store` (if any), and returns a handle to feed it.
pub fn spawn_node<R: Runtime, U: Upper + Send + 'static>(
    rt: &R,
    node: Node<U>,
    store: Option<Arc<dyn Store>>,
) -> NodeHandle {
    let (tx, rx) = async_channel::bounded(4096);
    let handle = NodeHandle {
        tx,
        ids: Arc::new(AtomicU64::new(1)),
        store_ops: Arc::new(AtomicUsize::new(0)),
    };
    let task = NodeTask {
        rt: rt.clone(),
        node,
        store,
        rx,
        feedback: handle.tx.clone(),
        store_ops: handle.store_ops.clone(),
        http: IntMap::default(),
        conns: IntMap::default(),
        batches: IntMap::default(),
        last_text: None,
    };
    rt.spawn(Box::pin(task.run()));
    handle
}

struct NodeTask<R, U> {
    rt: R,
    node: Node<U>,
    store: Option<Arc<dyn Store>>,
    rx: async_channel::Receiver<Command>,
    feedback: async_channel::Sender<Command>,
    store_ops: Arc<AtomicUsize>,
    http: IntMap<RequestId, oneshot::Sender<HttpResponse>>,
    conns: IntMap<ConnId, OutQueue>,
    batches: IntMap<ConnId, Vec<Message>>,
    /// The last text frame made into a message: a broadcast hands every
    /// recipient the same bytes, so it is checked for UTF-8 once, not per recipient.
    last_text: Option<(Bytes, Utf8Bytes)>,
}

impl<R: Runtime, U: Upper + Send + 'static> NodeTask<R, U> {
    async fn run(mut self) {
        let mut deadline = self.drain();
        let mut sleep = self.rt.sleep_until(deadline);
        loop {
            let next = {
                let mut recv = pin!(self.rx.recv());
                poll_fn(|cx| {
                    if let Poll::Ready(r) = recv.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await
            };
            match next {
                Some(Ok(c)) => {
                    self.input(c);
                    for _ in 1..BATCH {
                        match self.rx.try_recv() {
                            Ok(c) => self.input(c),
                            Err(_) => break,
                        }
                    }
                }
                Some(Err(_)) => return,
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                self.feed(now, Input::Timeout);
            }
            let next_deadline = self.drain();
            if next_deadline != deadline || now >= deadline {
                deadline = next_deadline;
                sleep = self.rt.sleep_until(deadline);
            }
        }
    }

    fn feed(&mut self, now: Instant, input: Input<'_>) {
        if let Err(e) = self.node.handle_input(now, input) {
            tracing::error!("node refused an input: {e}");
        }
    }

    fn input(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Http {
                req,
                method,
                query,
                authorization,
                body,
                reply,
            } => {
                self.http.insert(req, reply);
                self.feed(
                    now,
                    Input::Http {
                        req,
                        method,
                        query: &query,
                        authorization: authorization.as_deref(),
                        body: &body,
                    },
                );
            }
            Command::HttpAborted(req) => {
                if self.http.remove(&req).is_some() {
                    self.feed(now, Input::HttpAborted(req));
                }
            }
            Command::WsOpen {
                conn,
                query,
                authorization,
                out,
            } => {
                self.conns.insert(conn, out);
                self.feed(
                    now,
                    Input::WsOpen {
                        conn,
                        query: &query,
                        authorization: authorization.as_deref(),
                    },
                );
            }
            Command::WsText(conn, text) => self.feed(now, Input::WsText { conn, text: &text }),
            Command::WsBinary(conn, data) => self.feed(now, Input::WsBinary { conn, data }),
            Command::WsClosed(conn) => {
                self.conns.remove(&conn);
                self.batches.remove(&conn);
                self.feed(now, Input::WsClosed(conn));
            }
            Command::StoreReply(op, reply) => self.feed(now, Input::StoreReply { op, reply }),
            Command::Shutdown => self.feed(now, Input::Shutdown),
        }
    }

    /// Drains the node's outputs; returns its next deadline.
    fn drain(&mut self) -> Instant {
        loop {
            match self.node.poll_output() {
                Output::Timeout(t) => {
                    if self.flush_batches() {
                        // A connection was dropped as too slow: drain what that caused.
                        continue;
                    }
                    return t;
                }
                Output::HttpResponse { req, response } => {
                    if let Some(tx) = self.http.remove(&req) {
                        let _ = tx.send(response);
                    }
                }
                Output::WsFrame { conn, frame } => {
                    if self.conns.contains_key(&conn)
                        && let Some(m) = self.message(frame)
                    {
                        self.batches.entry(conn).or_default().push(m);
                    }
                }
                Output::WsClose { conn } => {
                    if let Some(frames) = self.batches.remove(&conn) {
                        let _ = self.send_ws(conn, WsOut::Frames(frames));
                    }
                    if let Some(q) = self.conns.remove(&conn) {
                        let _ = q.push(WsOut::Close);
                        q.tx.close();
                    }
                }
                Output::Store { op, command } => {
                    let Some(store) = self.store.clone() else {
                        tracing::error!("store command without a store: {command:?}");
                        continue;
                    };
                    let mut run =
                        Box::pin(async move { protocol::store::execute(&*store, command).await });
                    // A store that answers at once (the in-memory one) is fed
                    // back here, without a task and two channel hops.
                    let mut cx = Context::from_waker(Waker::noop());
                    if let Poll::Ready(reply) = run.as_mut().poll(&mut cx) {
                        self.feed(Instant::now(), Input::StoreReply { op, reply });
                        continue;
                    }
                    let tx = self.feedback.clone();
                    let ops = self.store_ops.clone();
                    ops.fetch_add(1, Ordering::AcqRel);
                    self.rt.spawn(Box::pin(async move {
                        let reply = run.await;
                        ops.fetch_sub(1, Ordering::AcqRel);
                        let _ = tx.send(Command::StoreReply(op, reply)).await;
                    }));
                }
                other => tracing::warn!("unhandled output {other:?}"),
            }
        }
    }

    fn message(&mut self, frame: Frame) -> Option<Message> {
        match frame {
            Frame::Binary(b) => Some(Message::Binary(b)),
            Frame::Text(b) => {
                if let Some((last, text)) = &self.last_text
                    && last.as_ptr() == b.as_ptr()
                    && last.len() == b.len()
                {
                    return Some(Message::Text(text.clone()));
                }
                match Utf8Bytes::try_from(b.clone()) {
                    Ok(text) => {
                        self.last_text = Some((b, text.clone()));
                        Some(Message::Text(text))
                    }
                    // The core only produces UTF-8 text; a failure is a bug, logged and skipped.
                    Err(e) => {
                        tracing::error!("core produced a non-UTF-8 text frame: {e}");
                        None
                    }
                }
            }
        }
    }

    /// Hands every connection its batch; true if one had to be dropped.
    fn flush_batches(&mut self) -> bool {
        let batches = std::mem::take(&mut self.batches);
        let mut dropped = false;
        for (conn, frames) in batches {
            dropped |= !self.send_ws(conn, WsOut::Frames(frames));
        }
        dropped
    }

    fn send_ws(&mut self, conn: ConnId, out: WsOut) -> bool {
        let Some(q) = self.conns.get(&conn) else {
            return true;
        };
        if !q.push(out) {
            // Too far behind (or gone): drop it rather than buffer without bound.
            tracing::debug!("connection {conn:?} fell behind; closing it");
            q.tx.close();
            self.conns.remove(&conn);
            self.feed(Instant::now(), Input::WsClosed(conn));
            return false;
        }
        true
    }
}

/// A connection's outgoing queue: unbounded in slots, bounded in bytes.
pub(crate) fn ws_queue() -> (OutQueue, OutReceiver) {
    let (tx, rx) = async_channel::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        OutQueue {
            tx,
            queued: queued.clone(),
        },
        OutReceiver { rx, queued },
    )
}
