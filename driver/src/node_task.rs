//! The task that owns one [`Node`]: it feeds inputs in, drains outputs, runs
//! store commands, and queues frames on the WebSocket connections.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use protocol::bus::{Entry, Topic};
use protocol::ids::IntMap;
use protocol::store::{Place, Store, StoreReply};
use protocol::{ConnId, Frame, HttpResponse, Input, Method, Node, OpId, Output, RequestId, Upper};
use tungstenite::Utf8Bytes;

use crate::Runtime;
use crate::metrics::{Metrics, NodeSnapshot};
use crate::ws::{Deliver, Dropped, Flusher, Incoming, WsConn};
use protocol::eio::CloseReason;
use protocol::stats::{Notice, close_label, transport_label};
use protocol::ws as wsframe;

/// The places of the bus's outbox kept for the events and acks of the
/// `chat:send`s already accepted: with fewer left, the node refuses new
/// ones ([`protocol::Node::set_bus_backlog`]), so that a full outbox drops
/// no acknowledged message's event (typing, reads and delivery words may
/// still be dropped past it).
const ROOM_FOR_ACCEPTED: usize = 10_000;

/// A WebSocket connection as the node task holds it: the shared
/// connection, and the frames for it gathered in this drain of the core.
struct WsLink {
    ws: Arc<WsConn>,
    batch: Vec<Bytes>,
}

/// Up to this many connections with something to send are written by the
/// node task itself; more go to the flusher.
const WRITE_HERE: usize = 4;

/// Up to this many connections that got a frame of their own (an ack, a
/// reply: not a broadcast) in one turn are written by the node task at
/// once, before the flusher's sweep of the turn's broadcasts.
const URGENT_HERE: usize = 16;

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
        ws: Arc<WsConn>,
        /// Bytes to send before anything the node sends: the `101` kept
        /// back to go out with the first frame (`edge::Held`).
        head: Option<Bytes>,
    },
    WsText(ConnId, Utf8Bytes),
    WsBinary(ConnId, Bytes),
    WsClosed(ConnId),
    StoreReply(OpId, StoreReply),
    /// A message from the cluster's bus, at its position there.
    Cluster(Bytes, Option<Place>),
    /// A message the bus held from before this instance started, published
    /// that long ago ([`Input::ClusterPast`]).
    ClusterPast(Bytes, std::time::Duration, Option<Place>),
    /// Every message of the bus's past was fed.
    ClusterCaughtUp,
    /// The bus lost entries this node had not read ([`Input::ClusterGap`]).
    ClusterGap,
    /// A scrape asks for the node's counters.
    Stats(oneshot::Sender<NodeSnapshot>),
    /// Drain ([`Input::Shutdown`]); the sender is told once the node is
    /// drained and what it last gave out is handed on.
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable handle to a node task.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    pub(crate) tx: async_channel::Sender<Command>,
    ids: Arc<AtomicU64>,
    store_ops: Arc<AtomicUsize>,
    busy_poll: Arc<AtomicU64>,
}

impl NodeHandle {
    /// How long the node's task keeps polling for more work after each
    /// turn, instead of sleeping at once (0, the default: it sleeps at once).
    /// A thread that sleeps waits for the kernel to wake it when the next
    /// message comes, which on a virtual machine costs tens of
    /// microseconds per message; a task that polls sees the message
    /// without that, at the price of the CPU it polls with. Worth it on a
    /// core given to the server, where a reply's latency counts; not under
    /// a CPU quota, which the polling spends. Only the worker thread that
    /// runs the node's task polls.
    pub fn busy_poll(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.busy_poll.store(micros, Ordering::Relaxed);
    }

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

    /// The node's counters now; `None` if its task is gone.
    pub(crate) async fn snapshot(&self) -> Option<NodeSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx)).await;
        rx.await.ok()
    }
}

/// A WebSocket connection's reader's way to its node.
pub(crate) struct NodeReader {
    pub(crate) node: NodeHandle,
    pub(crate) conn: ConnId,
}

impl Deliver for NodeReader {
    async fn deliver(&self, m: Incoming) {
        let conn = self.conn;
        self.node
            .send(match m {
                Incoming::Text(t) => Command::WsText(conn, t),
                Incoming::Binary(b) => Command::WsBinary(conn, b),
                Incoming::Closed => Command::WsClosed(conn),
            })
            .await;
    }
}

/// Starts the task that drives `node`, executing its store commands against
/// `store` (if any, timed into `metrics`' histograms), and returns a handle
/// to feed it.
pub fn spawn_node<R: Runtime, U: Upper + Send + 'static>(
    rt: &R,
    node: Node<U>,
    store: Option<Arc<dyn Store>>,
    metrics: Option<Arc<Metrics>>,
) -> NodeHandle {
    spawn(rt, node, store, metrics, None)
}

/// What a node of a cluster needs of the bus's reader: to read a topic's
/// entries from now on, or no longer. The Redis bus's reader hands what
/// it reads to the node's [`NodeHandle`]; this is the other way round.
pub trait Subscriptions: Send + Sync {
    /// Reads `topic` from about now on.
    fn subscribe(&self, topic: &Topic);
    /// Stops reading `topic`.
    fn unsubscribe(&self, topic: &Topic);
    /// How many topics are read.
    fn count(&self) -> usize;
}

/// [`spawn_node`] for a node of a cluster: what it publishes goes to
/// `outbox` (what the bus's writer drains), and the rooms it subscribes to
/// to `listen` (what the bus's reader reads).
pub fn spawn_cluster_node<R: Runtime, U: Upper + Send + 'static>(
    rt: &R,
    node: Node<U>,
    store: Option<Arc<dyn Store>>,
    metrics: Option<Arc<Metrics>>,
    outbox: async_channel::Sender<Entry>,
    listen: Arc<dyn Subscriptions>,
) -> NodeHandle {
    spawn(rt, node, store, metrics, Some((outbox, listen)))
}

fn spawn<R: Runtime, U: Upper + Send + 'static>(
    rt: &R,
    mut node: Node<U>,
    store: Option<Arc<dyn Store>>,
    metrics: Option<Arc<Metrics>>,
    bus: Option<(async_channel::Sender<Entry>, Arc<dyn Subscriptions>)>,
) -> NodeHandle {
    let (outbox, listen) = bus.unzip();
    // The core tells what happens only to a host that logs it.
    node.set_notices(tracing::enabled!(tracing::Level::DEBUG));
    let (tx, rx) = async_channel::bounded(4096);
    let handle = NodeHandle {
        tx,
        ids: Arc::new(AtomicU64::new(1)),
        store_ops: Arc::new(AtomicUsize::new(0)),
        busy_poll: Arc::new(AtomicU64::new(0)),
    };
    let task = NodeTask {
        rt: rt.clone(),
        node,
        store,
        rx,
        feedback: handle.tx.clone(),
        store_ops: handle.store_ops.clone(),
        busy_poll: handle.busy_poll.clone(),
        http: IntMap::default(),
        conns: IntMap::default(),
        dirty: Vec::new(),
        urgent: Vec::new(),
        to_flush: Vec::new(),
        flusher: Flusher::spawn(rt),
        metrics,
        slow_consumers: 0,
        drained: None,
        outbox,
        listen,
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
    /// [`NodeHandle::busy_poll`], in microseconds.
    busy_poll: Arc<AtomicU64>,
    http: IntMap<RequestId, oneshot::Sender<HttpResponse>>,
    conns: IntMap<ConnId, WsLink>,
    /// Connections with frames in their batch.
    dirty: Vec<ConnId>,
    /// Connections given a frame of their own this turn (see [`URGENT_HERE`]).
    urgent: Vec<ConnId>,
    /// Connections whose queue this drain made non-empty.
    to_flush: Vec<Arc<WsConn>>,
    flusher: Flusher,
    metrics: Option<Arc<Metrics>>,
    /// Connections dropped as too slow.
    slow_consumers: u64,
    /// Who waits for the node to be drained, once it shuts down.
    drained: Option<oneshot::Sender<()>>,
    /// In a cluster: the bus's writer.
    outbox: Option<async_channel::Sender<Entry>>,
    /// In a cluster: the rooms' streams the bus's reader reads.
    listen: Option<Arc<dyn Subscriptions>>,
}

impl<R: Runtime, U: Upper + Send + 'static> NodeTask<R, U> {
    async fn run(mut self) {
        let mut deadline = self.drain();
        let mut sleep = self.rt.sleep_until(deadline);
        loop {
            let next = {
                let mut recv = pin!(self.rx.recv());
                let busy = self.busy_poll.load(Ordering::Relaxed);
                let mut poll_until =
                    (busy > 0).then(|| Instant::now() + Duration::from_micros(busy));
                let mut yielded: Option<crate::BoxFuture<()>> = None;
                poll_fn(|cx| {
                    if let Poll::Ready(r) = recv.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    // Busy poll: yield to the runtime (which looks for IO)
                    // and come back, until the time is up; then sleep.
                    while let Some(until) = poll_until {
                        let y = match &mut yielded {
                            Some(y) => y,
                            None if Instant::now() < until => yielded.insert(self.rt.yield_now()),
                            None => {
                                poll_until = None;
                                break;
                            }
                        };
                        if y.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        yielded = None;
                    }
                    Poll::Pending
                })
                .await
            };
            // The wall clock with every batch: a step of the system clock
            // reaches message timestamps and token checks at once.
            self.node.set_wall_clock(Instant::now(), crate::unix_ms());
            if let Some(outbox) = &self.outbox {
                let room = outbox.capacity().map_or(usize::MAX, |c| c - outbox.len());
                self.node.set_bus_backlog(room <= ROOM_FOR_ACCEPTED);
            }
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
            if self.drained.is_some() && self.node.is_drained() {
                // Every answer and close is handed to its connection.
                let _ = self.drained.take().map(|tx| tx.send(()));
            }
            if next_deadline != deadline || now >= deadline {
                deadline = next_deadline;
                sleep = self.rt.sleep_until(deadline);
            }
        }
    }

    fn feed(&mut self, now: Instant, input: Input<'_>) {
        // What the core emits for this input (its notices, the store
        // commands it starts) is logged inside this span, at debug.
        let _span = tracing::debug_span!("input", kind = input_kind(&input)).entered();
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
                ws,
                head,
            } => {
                self.conns.insert(
                    conn,
                    WsLink {
                        ws,
                        batch: Vec::new(),
                    },
                );
                if let Some(head) = head {
                    // First in the batch, so written at the end of this
                    // turn whatever the node answers: with the open packet
                    // it sends.
                    self.queue(conn, head);
                }
                self.feed(
                    now,
                    Input::WsOpen {
                        conn,
                        query: &query,
                        authorization: authorization.as_deref(),
                    },
                );
            }
            Command::WsText(conn, text) => {
                self.feed(now, Input::WsText { conn, text: &text });
                self.consumed(conn, text.len());
            }
            Command::WsBinary(conn, data) => {
                let n = data.len();
                self.feed(now, Input::WsBinary { conn, data });
                self.consumed(conn, n);
            }
            Command::WsClosed(conn) => {
                self.conns.remove(&conn);
                self.feed(now, Input::WsClosed(conn));
            }
            Command::StoreReply(op, reply) => self.feed(now, Input::StoreReply { op, reply }),
            Command::Cluster(message, at) => {
                let before = self.node.stats().bus_undecodable;
                self.feed(now, Input::Cluster { message, at });
                self.undecodable_since(before);
            }
            Command::ClusterPast(message, age, at) => {
                let before = self.node.stats().bus_undecodable;
                self.feed(now, Input::ClusterPast { message, age, at });
                self.undecodable_since(before);
            }
            Command::ClusterCaughtUp => self.feed(now, Input::ClusterCaughtUp),
            Command::ClusterGap => self.feed(now, Input::ClusterGap),
            Command::Stats(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Shutdown(drained) => {
                self.drained = Some(drained);
                self.feed(now, Input::Shutdown);
            }
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
                    if self.conns.contains_key(&conn) {
                        self.queue(conn, encode(frame));
                        if self.urgent.len() < URGENT_HERE && self.urgent.last() != Some(&conn) {
                            self.urgent.push(conn);
                        }
                    }
                }
                Output::Broadcast(b) => {
                    // One WebSocket frame, the same bytes for every recipient.
                    let f = encode(b.frame);
                    for conn in b.conns {
                        self.queue(conn, f.clone());
                    }
                }
                Output::WsClose { conn, code } => {
                    if let Some(mut link) = self.conns.remove(&conn) {
                        let queued = link.ws.queue(&mut link.batch) == Ok(true);
                        if link.ws.close(code) || queued {
                            self.to_flush.push(link.ws);
                        }
                    }
                }
                Output::Store { op, command } => {
                    let Some(store) = self.store.clone() else {
                        tracing::error!("store command without a store: {command:?}");
                        continue;
                    };
                    let histogram = self.metrics.as_ref().map(|m| m.histogram(&command).clone());
                    let mut run =
                        Box::pin(
                            async move { crate::storage::run(&*store, command, histogram).await },
                        );
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
                Output::Notice(n) => log_notice(n),
                Output::Publish(entry) => self.publish(entry),
                Output::Subscribe(topic) => {
                    if let Some(listen) = &self.listen {
                        listen.subscribe(&topic);
                    }
                }
                Output::Unsubscribe(topic) => {
                    if let Some(listen) = &self.listen {
                        listen.unsubscribe(&topic);
                    }
                }
                other => tracing::warn!("unhandled output {other:?}"),
            }
        }
    }

    /// Hands a message to the bus's writer (in order; while Redis is away
    /// it waits there, as many as the outbox holds).
    fn publish(&mut self, message: Entry) {
        let Some(outbox) = &self.outbox else {
            tracing::error!("a message to publish without a bus");
            return;
        };
        if outbox.try_send(message).is_err() {
            static FULL: crate::quiet::Quiet =
                crate::quiet::Quiet::new(std::time::Duration::from_secs(10));
            if let Some(unlogged) = FULL.allow(Instant::now()) {
                tracing::warn!(
                    "the Redis bus's outbox is full (Redis away too long): a message \
                     for the other instances was dropped ({unlogged} more not logged)"
                );
            }
        }
    }

    /// Logs (at most every 10 s) that entries of the bus could not be read
    /// since the count was `before`: another release's instances on the
    /// same Redis, or something else writing to the stream.
    fn undecodable_since(&self, before: u64) {
        static UNREAD: crate::quiet::Quiet =
            crate::quiet::Quiet::new(std::time::Duration::from_secs(10));
        let now = self.node.stats().bus_undecodable;
        if now > before
            && let Some(unlogged) = UNREAD.allow(Instant::now())
        {
            tracing::warn!(
                "an entry of the Redis bus could not be read (another version's, or not \
                 chatwire's; bus version {}): passed over ({unlogged} more not logged; \
                 chatwire_bus_undecodable_total counts them)",
                protocol::bus::VERSION as char
            );
        }
    }

    /// Tells a connection's reader that its message was taken in.
    fn consumed(&self, conn: ConnId, bytes: usize) {
        if let Some(link) = self.conns.get(&conn) {
            link.ws.consumed(bytes);
        }
    }

    /// Adds an encoded frame to a connection's batch (if it is still open).
    fn queue(&mut self, conn: ConnId, frame: Bytes) {
        if let Some(link) = self.conns.get_mut(&conn) {
            if link.batch.is_empty() {
                self.dirty.push(conn);
            }
            link.batch.push(frame);
        }
    }

    /// Queues every connection's batch and hands the connections to the
    /// flusher; true if one had to be dropped.
    fn flush_batches(&mut self) -> bool {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut dropped = Vec::new();
        for conn in dirty.drain(..) {
            let Some(link) = self.conns.get_mut(&conn) else {
                continue;
            };
            match link.ws.queue(&mut link.batch) {
                Ok(true) => self.to_flush.push(link.ws.clone()),
                Ok(false) => {}
                Err(why) => dropped.push((conn, why)),
            }
            if link.batch.capacity() > 64 {
                link.batch = Vec::new();
            }
        }
        self.dirty = dirty;
        // A sender's ack (or any frame meant for one connection) goes out
        // now, not after a sweep of the turn's broadcasts to the room: its
        // queue holds all it has, in order, so this writes what it had
        // before too, and the flusher finds it written.
        for conn in self.urgent.drain(..) {
            if let Some(link) = self.conns.get(&conn) {
                link.ws.flush();
            }
        }
        if self.to_flush.len() <= WRITE_HERE {
            // A few connections (an ack, a reply): write them now rather
            // than one task hop later.
            for ws in self.to_flush.drain(..) {
                ws.flush();
            }
        } else {
            self.flusher.hand(&mut self.to_flush);
        }
        for &(conn, why) in &dropped {
            // Too far behind (or gone): drop it rather than buffer without bound.
            if let Some(link) = self.conns.remove(&conn) {
                link.ws.abort();
            }
            let input = match why {
                Dropped::TooSlow => {
                    tracing::debug!(
                        conn = conn.0,
                        "connection fell behind (slow consumer); dropping it"
                    );
                    self.slow_consumers += 1;
                    Input::WsTooSlow(conn)
                }
                Dropped::Gone => Input::WsClosed(conn),
            };
            self.feed(Instant::now(), input);
        }
        !dropped.is_empty()
    }

    /// The counters for a scrape: the core's, and the write queues summed
    /// over the connections (a pass over them per scrape, nothing per frame).
    fn snapshot(&self) -> NodeSnapshot {
        let (mut queued_bytes, mut queued_frames) = (0, 0);
        for link in self.conns.values() {
            let (bytes, frames) = link.ws.queued();
            queued_bytes += bytes as u64;
            queued_frames += frames as u64;
        }
        NodeSnapshot {
            core: self.node.stats().clone(),
            queued_bytes,
            queued_frames,
            slow_consumers: self.slow_consumers,
            outbox: self.outbox.as_ref().map_or(0, |o| o.len() as u64),
            subscriptions: self.listen.as_ref().map_or(0, |l| l.count() as u64),
        }
    }
}

/// Logs what the core told (at debug: it only tells when debug is on).
/// Notices carry labels and internal session numbers, never a token or id.
fn log_notice(n: Notice) {
    match n {
        Notice::Opened { session, transport } => tracing::debug!(
            session = session.number(),
            transport = %transport_label(transport),
            "connection opened"
        ),
        Notice::Upgraded { session } => {
            tracing::debug!(
                session = session.number(),
                "connection upgraded to websocket"
            )
        }
        Notice::Closed {
            session,
            transport,
            reason,
        } => tracing::debug!(
            session = session.number(),
            transport = %transport_label(transport),
            reason = %close_label(reason),
            violation = %match reason {
                CloseReason::ProtocolError(v) => v.as_str(),
                _ => "none",
            },
            "connection closed"
        ),
        Notice::Refused { reason } => {
            tracing::debug!(reason = %reason.as_str(), "engine.io request refused")
        }
        Notice::Connected { session } => {
            tracing::debug!(session = session.number(), "socket.io CONNECT accepted")
        }
        Notice::ConnectRefused { session, reason } => tracing::debug!(
            session = session.number(),
            reason = %reason.as_str(),
            "socket.io CONNECT_ERROR"
        ),
        Notice::AuthFailed { session, why } => tracing::debug!(
            session = session.number(),
            via = %"socket",
            reason = %why.as_str(),
            "auth failure"
        ),
        Notice::Event { session, name } => {
            tracing::debug!(session = session.number(), event = %name.as_str(), "socket.io event")
        }
        Notice::EventRefused {
            session,
            name,
            code,
        } => tracing::debug!(
            session = session.number(),
            event = %name.as_str(),
            code = %code.as_str(),
            "event refused"
        ),
        other => tracing::debug!("{other:?}"),
    }
}

/// A fixed name for the kind of an input, for its span.
fn input_kind(input: &Input<'_>) -> &'static str {
    match input {
        Input::Http { .. } => "http",
        Input::HttpAborted(_) => "http_aborted",
        Input::WsOpen { .. } => "ws_open",
        Input::WsText { .. } => "ws_text",
        Input::WsBinary { .. } => "ws_binary",
        Input::WsClosed(_) => "ws_closed",
        Input::WsTooSlow(_) => "ws_too_slow",
        Input::StoreReply { .. } => "store_reply",
        Input::Timeout => "timeout",
        Input::Shutdown => "shutdown",
        Input::Cluster { .. } => "cluster",
        Input::ClusterPast { .. } => "cluster_past",
        Input::ClusterCaughtUp => "cluster_caught_up",
        Input::ClusterGap => "cluster_gap",
        _ => "other",
    }
}

/// The WebSocket frame (header and payload) of a frame the node output.
fn encode(frame: Frame) -> Bytes {
    match frame {
        Frame::Text(b) => wsframe::encode(wsframe::TEXT, &b),
        Frame::Binary(b) => wsframe::encode(wsframe::BINARY, &b),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::eio::EngineConfig;
    use protocol::ids::SeededIds;

    use super::*;
    use crate::conformance::EngineEcho;

    /// No socket: the tests below speak to the node over its channel only.
    enum NoSocket {}

    impl crate::Socket for NoSocket {
        fn poll_readable(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            match *self {}
        }
        fn try_read(&self, _: &mut bytes::BytesMut) -> std::io::Result<usize> {
            match *self {}
        }
        fn poll_writable(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            match *self {}
        }
        fn try_write(&self, _: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            match *self {}
        }
        fn shutdown_write(&self) {
            match *self {}
        }
    }

    /// tokio, counting the node task's yields.
    #[derive(Clone)]
    struct Counting(Arc<AtomicUsize>);

    impl Runtime for Counting {
        type Socket = NoSocket;
        fn spawn(&self, fut: crate::BoxFuture<()>) {
            tokio::spawn(fut);
        }
        fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
            tokio::task::spawn_blocking(work);
        }
        fn sleep_until(&self, deadline: Instant) -> crate::BoxFuture<()> {
            Box::pin(tokio::time::sleep_until(deadline.into()))
        }
        fn yield_now(&self) -> crate::BoxFuture<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Box::pin(tokio::task::yield_now())
        }
        fn socket(
            &self,
            io: hyper::upgrade::Upgraded,
        ) -> Result<(NoSocket, Bytes), hyper::upgrade::Upgraded> {
            Err(io)
        }
    }

    fn node(busy: Duration) -> (NodeHandle, Arc<AtomicUsize>) {
        let yields = Arc::new(AtomicUsize::new(0));
        let node = Node::new(
            EngineConfig::default(),
            EngineEcho,
            SeededIds::new([7; 32]),
            Instant::now(),
        );
        let handle = spawn_node(&Counting(yields.clone()), node, None, None);
        handle.busy_poll(busy);
        (handle, yields)
    }

    /// An Engine.IO handshake over polling: the node answers 200 with the
    /// open packet.
    async fn handshake(node: &NodeHandle) {
        let (reply, answer) = oneshot::channel();
        node.send(Command::Http {
            req: RequestId(node.next_id()),
            method: Method::Get,
            query: "EIO=4&transport=polling".into(),
            authorization: None,
            body: Bytes::new(),
            reply,
        })
        .await;
        let response = answer.await.expect("the node answers");
        assert_eq!(response.status, 200);
        assert!(
            response.body.starts_with(b"0{\"sid\""),
            "{:?}",
            response.body
        );
    }

    #[tokio::test]
    async fn a_busy_poll_polls_for_its_time_after_a_turn_answers_what_comes_meanwhile_then_sleeps()
    {
        let (node, yields) = node(Duration::from_millis(30));
        handshake(&node).await;
        // Within the 30 ms that follow, the node keeps yielding, and answers
        // what comes.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let polling = yields.load(Ordering::Relaxed);
        assert!(polling >= 10, "{polling} yields in 10 ms of busy poll");
        handshake(&node).await;
        // Its time is up 30 ms after its last turn: it sleeps, and yields no more.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let done = yields.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(yields.load(Ordering::Relaxed), done, "still polling");
    }

    #[tokio::test]
    async fn without_a_busy_poll_the_node_never_yields() {
        let (node, yields) = node(Duration::ZERO);
        handshake(&node).await;
        handshake(&node).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(yields.load(Ordering::Relaxed), 0);
    }
}
