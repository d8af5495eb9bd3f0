//! The façade over the layers: inputs in, outputs out, in the manner of
//! str0m's `Rtc`.

use std::time::{Duration, Instant};

use std::collections::VecDeque;

use bytes::Bytes;

use crate::bus::Word;
use crate::bus::{Entry, Topic};
use crate::cluster::Endpoint;
use crate::cluster::forward::{Forwarded, Forwarding};
use crate::cluster::order::Order;
use crate::cluster::sessions::Remotes;
use crate::cluster::{Heard, Joined};
use crate::eio::packet::{Data, Packet};
use crate::eio::{CloseReason, Engine, EngineConfig, Event, Handshake, SessionKey, Transmit};
use crate::ids::{IdGenerator, IntMap};
use crate::stats::{EventName, Notice, Stats};
use crate::store::{Place, StoreCommand, StoreReply};

pub use crate::host::{Broadcast, ConnId, Frame, HttpResponse, Method, OpId, RequestId, WallClock};

/// Something that happened, fed to [`Node::handle_input`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// A whole HTTP request on the Engine.IO path (not a WebSocket upgrade).
    Http {
        /// The host's name for it, used in the response.
        req: RequestId,
        /// Its method.
        method: Method,
        /// The raw query string, without `?`.
        query: &'a str,
        /// The `Authorization` header, if any.
        authorization: Option<&'a str>,
        /// The body, already limited by the host to a sane size.
        body: &'a [u8],
    },
    /// The client of a parked HTTP request went away.
    HttpAborted(RequestId),
    /// A WebSocket connection was accepted on the Engine.IO path.
    WsOpen {
        /// The host's name for it.
        conn: ConnId,
        /// The raw query string of the upgrade request.
        query: &'a str,
        /// The `Authorization` header, if any.
        authorization: Option<&'a str>,
    },
    /// A text frame arrived.
    WsText {
        /// The connection.
        conn: ConnId,
        /// The frame's text.
        text: &'a str,
    },
    /// A binary frame arrived.
    WsBinary {
        /// The connection.
        conn: ConnId,
        /// The frame's data.
        data: Bytes,
    },
    /// A WebSocket connection closed.
    WsClosed(ConnId),
    /// The host dropped a WebSocket connection whose client fell too far
    /// behind in reading (counted as a slow consumer, not a transport close).
    WsTooSlow(ConnId),
    /// A store command finished.
    StoreReply {
        /// The operation, as [`Output::Store`] named it.
        op: OpId,
        /// Its result.
        reply: StoreReply,
    },
    /// A message arrived from the cluster's bus (every message published
    /// on it, this node's own included, in the bus's order).
    Cluster {
        /// The entry, as published.
        message: Bytes,
        /// Its position on the bus (a Redis stream entry's id), if the host
        /// knows it: a send's place is matched by it.
        at: Option<Place>,
    },
    /// A message published on the bus before this node joined it, `age`
    /// ago (by the bus's clock), fed in the bus's order before any
    /// [`Input::Cluster`]. A node that starts with recovery on reads the
    /// bus's recent past (the recovery window) so that the sessions and
    /// events it learns survive the death of the nodes that held them, a
    /// restart of every node included. Remembered, never delivered: this
    /// node's sockets are newer than it.
    ClusterPast {
        /// The message, as published.
        message: Bytes,
        /// How long ago it was published.
        age: Duration,
        /// Its position on the bus, if the host knows it.
        at: Option<Place>,
    },
    /// Every [`Input::ClusterPast`] was fed. Between the first of them and
    /// this, a client that comes back to recover a session another node
    /// held connects afresh (what it missed may not all be known yet).
    ClusterCaughtUp,
    /// The bus lost entries this node had not read (trimmed before it read
    /// them, or Redis came back without them: restarted empty, or a
    /// replica that had not got them took over). What this node knows of
    /// the bus's past may have holes: no session recovers from before it
    /// (its client connects afresh and catches up from history).
    ClusterGap,
    /// Time passed; run what is due.
    Timeout,
    /// The host is shutting down: drain, then close every session.
    ///
    /// From now on the node refuses new work: a new session or upgrade
    /// (a handshake gets 503, a WebSocket is closed with
    /// [`GOING_AWAY`](crate::ws::GOING_AWAY)), and whatever the layer above
    /// refuses while draining (the chat: a `chat:send` or `chat:read` that
    /// would start a store write gets an `error` with code `shutting_down`).
    /// What is under way goes on: once the layer above awaits no store
    /// operation any more (every `chat:ack` or `error` queued to its
    /// socket), every session is closed, a WebSocket with close code 1001
    /// after what is queued on it, a polling session with the close packet
    /// after what is buffered for it. [`Node::is_drained`] then tells when
    /// the last of it was handed out. Feeding it again does nothing.
    Shutdown,
}

/// Something for the host to do, drained from [`Node::poll_output`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Answer an HTTP request (a long-poll, a POST, a handshake, an error).
    HttpResponse {
        /// The request.
        req: RequestId,
        /// The answer.
        response: HttpResponse,
    },
    /// Write a WebSocket frame.
    WsFrame {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// Write one frame to many WebSocket connections: a room emit, encoded
    /// once. The connections are this node's; the room, the namespace and
    /// the sockets left out say what it was, for a host that forwards
    /// broadcasts to other nodes.
    Broadcast(Broadcast),
    /// Close a WebSocket connection (after writing what is queued).
    WsClose {
        /// The connection.
        conn: ConnId,
        /// The close frame's code: [`NORMAL_CLOSURE`](crate::ws::NORMAL_CLOSURE),
        /// or [`GOING_AWAY`](crate::ws::GOING_AWAY) when the server shuts down.
        code: u16,
    },
    /// Run a store command and feed its reply back as [`Input::StoreReply`].
    Store {
        /// The operation's name.
        op: OpId,
        /// The command.
        command: StoreCommand,
    },
    /// Publish an entry on the cluster's bus, for the nodes that read its
    /// topic (this one too, if it does) to take back as
    /// [`Input::Cluster`]. Only in a cluster.
    Publish(Entry),
    /// Read a topic of the bus from now on, as well as [`Topic::All`] and
    /// this node's own [`Topic::Node`] (always read): a room got its first
    /// member on this node. Only in a cluster, and only with recovery off
    /// (with it on, everything a session may be replayed from goes to
    /// [`Topic::All`]).
    Subscribe(Topic),
    /// Stop reading a topic: the room's last member here left.
    Unsubscribe(Topic),
    /// Something happened that the host may log; only after
    /// [`Node::set_notices`].
    Notice(Notice),
    /// Nothing more until this instant (or the next input).
    Timeout(Instant),
}

/// The layer above Engine.IO, driven by the node: Socket.IO with an
/// application, or anything else that speaks over Engine.IO sessions.
///
/// It never holds the engine: it hears what the engine did through the
/// node, and what it wants done (a packet sent, a session closed, a store
/// command run) it queues in the [`Shared`] the node lends it for the call.
pub trait Upper {
    /// A session opened.
    fn on_open(&mut self, sh: &mut Shared<'_>, key: SessionKey, handshake: Handshake);
    /// A message arrived on a session.
    fn on_message(&mut self, sh: &mut Shared<'_>, key: SessionKey, data: Data<'_>);
    /// A session closed; it is gone from the engine already.
    fn on_close(&mut self, sh: &mut Shared<'_>, key: SessionKey, reason: CloseReason);
    /// A store command this layer issued finished.
    fn on_store_reply(&mut self, sh: &mut Shared<'_>, op: OpId, reply: StoreReply);
    /// What this node's end of the cluster's bus let through of what it
    /// read ([`Input::Cluster`], [`Input::ClusterPast`]) or of what ran out
    /// of time: a word to apply, in its room's order, or the outcome of a
    /// tracked emit.
    fn on_cluster(&mut self, _sh: &mut Shared<'_>, _heard: Heard) {}
    /// The bus lost entries this node had not read ([`Input::ClusterGap`]).
    fn on_cluster_gap(&mut self, _sh: &mut Shared<'_>) {}
    /// This layer's next deadline.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Runs what is due in this layer.
    fn handle_timeout(&mut self, sh: &mut Shared<'_>);
    /// The server is shutting down: refuse whatever would start new work
    /// from now on, and finish what is under way.
    fn drain(&mut self, _sh: &mut Shared<'_>) {}
    /// Everything the host fed was handled and its outputs drained: what
    /// was gathered over those inputs goes out now (the node asks before it
    /// answers [`Output::Timeout`]).
    fn flush(&mut self, _sh: &mut Shared<'_>) {}
    /// How this node is one of a cluster, if it is (given once, to the
    /// layer above: [`crate::sio::SocketIoConfig::cluster`]): its name,
    /// and with connection state recovery on, how long other nodes'
    /// sessions are kept for (with it off a room's words go only to the
    /// nodes with members in it; with it on every node reads every word,
    /// to keep every session).
    fn cluster(&self) -> Option<Joined<'_>> {
        None
    }
    /// Whether work is under way (a store operation awaited): a draining
    /// node closes its sessions once there is none.
    fn busy(&self) -> bool {
        false
    }
}

/// What the layer above asks of the node, in the order it asked.
#[derive(Debug)]
pub enum Command {
    /// Send a packet on a session.
    Send {
        /// The session.
        key: SessionKey,
        /// The packet.
        packet: Frame,
    },
    /// Send one text packet to many sessions, encoded once: what a room
    /// emit becomes (see [`Broadcast`]).
    Broadcast {
        /// The sessions, in the room's order.
        keys: Vec<SessionKey>,
        /// The event's name's label (counted once per recipient).
        name: EventName,
        /// The namespace, room, sockets left out and packet; `conns` is
        /// filled in by the node.
        broadcast: Broadcast,
    },
    /// Close a session.
    Close {
        /// The session.
        key: SessionKey,
        /// Why.
        reason: CloseReason,
    },
    /// Run a store command.
    Store {
        /// The operation's name.
        op: OpId,
        /// The command.
        command: StoreCommand,
    },
    /// Publish an entry (its JSON) on the cluster's bus; the node seals it.
    Publish(Entry),
    /// Read a topic of the bus ([`Output::Subscribe`]).
    Subscribe(Topic),
    /// Stop reading it ([`Output::Unsubscribe`]).
    Unsubscribe(Topic),
}

/// What the node lends the layer above for one call: the time, the ids,
/// the counters, and the queue of what the layer asks of the node.
pub struct Shared<'a> {
    /// The time of the input being handled.
    pub now: Instant,
    /// The host's wall clock at `now`, if the host reads it for the node
    /// ([`Node::set_wall_clock`]).
    pub unix_ms: Option<i64>,
    /// In a cluster: what this node publishes is backed up in its host
    /// ([`Node::set_bus_backlog`]).
    pub bus_backlogged: bool,
    /// Every random id comes from here.
    pub ids: &'a mut dyn IdGenerator,
    /// The node's counters.
    pub stats: &'a mut Stats,
    /// The most bytes a client's message may carry (the engine's
    /// `max_payload`).
    pub max_payload: usize,
    /// In a cluster: the rooms' orders and tracked emits of this node's
    /// end of the bus, to number and address what the layer publishes.
    pub(crate) order: Option<&'a mut Order>,
    /// In a cluster with recovery on: the sessions other nodes hold or
    /// held, to recover one here.
    pub(crate) remotes: Option<&'a mut Remotes>,
    commands: &'a mut VecDeque<Command>,
    notices: Option<&'a mut VecDeque<Output>>,
}

impl std::fmt::Debug for Shared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("now", &self.now).finish()
    }
}

impl Shared<'_> {
    /// The same loan, for a shorter while (to hand on to a callee).
    pub fn reborrow(&mut self) -> Shared<'_> {
        Shared {
            now: self.now,
            unix_ms: self.unix_ms,
            bus_backlogged: self.bus_backlogged,
            ids: &mut *self.ids,
            stats: &mut *self.stats,
            max_payload: self.max_payload,
            order: self.order.as_deref_mut(),
            remotes: self.remotes.as_deref_mut(),
            commands: &mut *self.commands,
            notices: self.notices.as_deref_mut(),
        }
    }

    /// Asks the node for something.
    pub fn push(&mut self, command: Command) {
        self.commands.push_back(command);
    }

    /// Tells the host what happened, if it asked to be told.
    pub fn notice(&mut self, n: Notice) {
        if let Some(out) = self.notices.as_mut() {
            out.push_back(Output::Notice(n));
        }
    }
    /// In a cluster: this node's name on the bus.
    pub(crate) fn node_name(&self) -> Option<&str> {
        self.order.as_ref().map(|o| o.node.as_str())
    }

    /// In a cluster: publishes `word` on the bus, to the nodes that read
    /// its topic ([`Word::topic`]); nothing for a node of no cluster.
    pub(crate) fn publish(&mut self, word: &Word) {
        if let Some(order) = &self.order {
            self.commands.push_back(Command::Publish(order.entry(word)));
        }
    }
}

/// An input the host should not have fed: the node refused it and changed
/// nothing (a mistake of the host's, never of a peer's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// `now` went backwards.
    #[error("time went backwards")]
    TimeWentBackwards,
    /// A store reply names an operation the node does not await (never
    /// issued, or answered already).
    #[error("a store reply for operation {0:?}, which is not awaited")]
    UnknownStoreOp(OpId),
    /// A store reply of another kind than its command's (an `Appended`
    /// for a `MarkRead`, say).
    #[error("a store reply of the wrong kind for operation {op:?} (a {command} command)")]
    WrongStoreReply {
        /// The operation.
        op: OpId,
        /// Its command's kind ([`StoreCommand::kind`]).
        command: &'static str,
    },
}

/// How far ahead [`Output::Timeout`] points when nothing is scheduled.
const IDLE: Duration = Duration::from_secs(3600);

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Taking new work.
    Serving,
    /// [`Input::Shutdown`] came: new work is refused, and the node waits for
    /// what is under way.
    Draining,
    /// Every session was closed (polling ones may still hand out their last
    /// packets).
    Closed,
}

/// One shard of a server: every session, socket and chat it holds.
///
/// # How a host drives it
///
/// - Feed inputs with [`Node::handle_input`], in the order they happened,
///   each with the time it happened (never going back). A host may feed
///   several inputs before it drains outputs: the outputs queue up, in
///   order, and nothing is lost.
/// - Drain [`Node::poll_output`] until it returns [`Output::Timeout`]:
///   write frames and answers in the order given (a connection's frames
///   and broadcasts interleave as they came), start every store command
///   and feed its reply back as [`Input::StoreReply`], whenever it is done.
/// - Feed [`Input::Timeout`] when the deadline of the last
///   [`Output::Timeout`] has passed (sooner does no harm), then drain
///   again: any input may move the deadline.
///
/// Inside, the node owns the output queue, the id generator and the
/// deadline; the Engine.IO layer ([`Engine`]) and the layer above
/// ([`Upper`]) each keep their own queue and timers, and the node routes
/// between them: the engine's events to the layer above, the layer above's
/// commands to the engine. Neither calls the other.
pub struct Node<U> {
    engine: Engine,
    upper: U,
    ids: Box<dyn IdGenerator>,
    stats: Stats,
    notices: bool,
    outputs: VecDeque<Output>,
    commands: VecDeque<Command>,
    /// The store operations handed out and not answered yet, with their
    /// commands' kinds.
    awaited: IntMap<OpId, &'static str>,
    now: Instant,
    /// The host's last reading of its wall clock ([`Node::set_wall_clock`]).
    wall: Option<WallClock>,
    /// [`Node::set_bus_backlog`].
    bus_backlogged: bool,
    phase: Phase,
    /// In a cluster: this node's end of the bus (what it publishes and
    /// reads, polling requests and WebSockets forwarded either way).
    bus: Option<Endpoint>,
}

impl<U: std::fmt::Debug> std::fmt::Debug for Node<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("engine", &self.engine)
            .field("upper", &self.upper)
            .field("outputs", &self.outputs.len())
            .field("phase", &self.phase)
            .finish()
    }
}

impl<U: Upper> Node<U> {
    /// A node with no sessions. `ids` supplies every random id; `now` is the
    /// host's monotonic time.
    ///
    /// If the layer above is one node of a cluster ([`Upper::cluster`]),
    /// so is this one: its session ids start with its name, and a polling
    /// request (or a WebSocket, relayed frame by frame) for another node's
    /// session goes to that node over the bus ([`Output::Publish`]), the
    /// answers coming back as [`Input::Cluster`].
    pub fn new(config: EngineConfig, upper: U, ids: impl IdGenerator, now: Instant) -> Self {
        let mut engine = Engine::new(config);
        let bus = upper.cluster().map(|joined| {
            let node = joined.node;
            engine.set_sid_prefix(format!("{node}{}", crate::cluster::forward::SEPARATOR));
            Endpoint::new(joined, now)
        });
        Node {
            engine,
            upper,
            ids: Box::new(ids),
            stats: Stats::default(),
            notices: false,
            outputs: VecDeque::new(),
            commands: VecDeque::new(),
            awaited: IntMap::default(),
            now,
            wall: None,
            bus_backlogged: false,
            phase: Phase::Serving,
            bus,
        }
    }

    /// The host's wall clock read at `now` (milliseconds since the Unix
    /// epoch): the layers take wall time (message timestamps, token
    /// expiry) from the last reading, carried forward on the inputs'
    /// instants. A host that reads its clock with each batch of inputs
    /// makes a step of the system clock reach the core at once; one that
    /// never does leaves the layers to the anchor they were built with.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: i64) {
        self.wall = Some(WallClock::new(now, unix_ms));
    }

    /// In a cluster: whether what this node publishes is backed up in the
    /// host (its queue for the bus nearly full, Redis away or slow). While
    /// it is, the chat refuses new `chat:send`s (`store_unavailable`), so
    /// that an accepted one's event and ack find room; the host says so
    /// with each batch of inputs.
    pub fn set_bus_backlog(&mut self, backlogged: bool) {
        self.bus_backlogged = backlogged;
    }

    /// The layer above Engine.IO.
    pub fn upper(&self) -> &U {
        &self.upper
    }

    /// The Engine.IO sessions.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What the node has counted since it started, for the host to export.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether [`Input::Shutdown`] came.
    pub fn is_draining(&self) -> bool {
        self.phase != Phase::Serving
    }

    /// Whether a shutdown is over in the core: no store operation awaited
    /// and every session closed, its last packets handed to the host. Once
    /// the host has written what [`Node::poll_output`] gave it, nothing
    /// is left to do.
    pub fn is_drained(&self) -> bool {
        self.phase == Phase::Closed
            && self.engine.session_count() == 0
            && !self.busy()
            && self.bus.as_ref().is_none_or(|b| !b.forwarding.relaying())
    }

    /// Whether to emit [`Output::Notice`]s (off by default): a host turns
    /// them on when it logs them, and pays nothing otherwise.
    pub fn set_notices(&mut self, on: bool) {
        self.notices = on;
    }

    /// Feeds one input, at time `now` (monotonic, never going back).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), InputError> {
        if now < self.now {
            return Err(InputError::TimeWentBackwards);
        }
        if let Input::StoreReply { op, reply } = &input {
            match self.awaited.get(op) {
                None => return Err(InputError::UnknownStoreOp(*op)),
                Some(&command) if !reply.answers(command) => {
                    return Err(InputError::WrongStoreReply { op: *op, command });
                }
                Some(_) => {
                    self.awaited.remove(op);
                }
            }
        }
        self.now = now;
        // Whatever fell due before this input happens first: a request that
        // arrives after a session's deadline finds it closed.
        if !matches!(input, Input::Timeout) && self.engine.poll_timeout().is_some_and(|t| t <= now)
        {
            self.engine.handle_timeout(now);
            self.route();
        }
        let input_reason_backlog = matches!(input, Input::WsTooSlow(_));
        match input {
            Input::Http {
                req,
                method,
                query,
                authorization,
                body,
            } => {
                let elsewhere = self.forwarding().and_then(|f| {
                    let to = f.elsewhere(query)?.to_owned();
                    let body = std::str::from_utf8(body).ok()?;
                    Some(f.send(now, &to, req, method, query, authorization, body))
                });
                match elsewhere {
                    Some(message) => self.outputs.push_back(Output::Publish(message)),
                    None => self.http(req, method, query, authorization, body),
                }
            }
            Input::HttpAborted(req) => match self.forwarding().and_then(|f| f.aborted(req)) {
                Some(message) => self.outputs.push_back(Output::Publish(message)),
                None => self.engine.handle_http_aborted(req),
            },
            Input::WsOpen {
                conn,
                query,
                authorization,
            } => {
                // A WebSocket for another node's session: relayed there,
                // unless this node is going away (as the engine refuses an
                // upgrade then, the client goes on polling).
                let serving = self.phase == Phase::Serving;
                let relayed = self.forwarding().and_then(|f| {
                    let to = f.elsewhere(query)?.to_owned();
                    Some(serving.then(|| f.relay(conn, &to, query, authorization)))
                });
                match relayed {
                    Some(Some(message)) => self.outputs.push_back(Output::Publish(message)),
                    Some(None) => self.outputs.push_back(Output::WsClose {
                        conn,
                        code: crate::ws::GOING_AWAY,
                    }),
                    None => {
                        let ids = &mut *self.ids;
                        self.engine
                            .handle_ws_open(conn, query, authorization, now, ids);
                    }
                }
            }
            Input::WsText { conn, text } => {
                if !self.relay_in(conn, &Frame::Text(Bytes::copy_from_slice(text.as_bytes()))) {
                    self.frame(conn, Data::Text(text));
                }
            }
            Input::WsBinary { conn, data } => {
                if !self.relay_in(conn, &Frame::Binary(data.clone())) {
                    self.frame(conn, Data::Binary(data));
                }
            }
            Input::WsClosed(conn) | Input::WsTooSlow(conn) => {
                let reason = match input_reason_backlog {
                    true => CloseReason::Backlog,
                    false => CloseReason::TransportClose,
                };
                match self.forwarding().and_then(|f| f.relay_gone(conn)) {
                    Some(message) => self.outputs.push_back(Output::Publish(message)),
                    None => self.engine.handle_ws_closed(conn, reason, now),
                }
            }
            Input::StoreReply { op, reply } => {
                self.with_upper(|u, sh| u.on_store_reply(sh, op, reply));
            }
            Input::Cluster { message: entry, at } => self.bus_entry(&entry, None, at),
            Input::ClusterPast {
                message: entry,
                age,
                at,
            } => self.bus_entry(&entry, Some(age), at),
            Input::ClusterCaughtUp => {
                if let Some(b) = &mut self.bus {
                    b.caught_up();
                }
            }
            Input::ClusterGap => {
                self.stats.bus_gaps += 1;
                if let Some(b) = &mut self.bus {
                    b.lost();
                }
                self.with_upper(|u, sh| u.on_cluster_gap(sh));
            }
            Input::Timeout => {
                if let Some(b) = &mut self.bus {
                    let due = b.expire(now, &mut self.stats);
                    self.outputs
                        .extend(due.publish.into_iter().map(Output::Publish));
                    // The node that held these sessions is gone.
                    for req in due.requests {
                        let e = crate::eio::RequestError::SessionIdUnknown;
                        self.outputs.push_back(Output::HttpResponse {
                            req,
                            response: HttpResponse::json(400, Bytes::from(e.body())),
                        });
                    }
                    self.hear(due.heard);
                }
                self.engine.handle_timeout(now);
                self.route();
                self.with_upper(|u, sh| u.handle_timeout(sh));
            }
            Input::Shutdown => {
                if self.phase == Phase::Serving {
                    self.phase = Phase::Draining;
                    self.engine.drain();
                    self.with_upper(|u, sh| u.drain(sh));
                }
            }
        }
        self.route();
        // Draining, and nothing is under way any more: every answer is
        // queued, so the sessions close after it.
        if self.phase == Phase::Draining && !self.busy() {
            self.phase = Phase::Closed;
            self.engine.go_away(now);
            // The connections relayed from here to other nodes' sessions
            // close too (their clients reconnect elsewhere); the holders
            // are told, as when a client goes.
            for (conn, gone) in self
                .bus
                .as_mut()
                .map(|b| b.forwarding.relays_gone())
                .unwrap_or_default()
            {
                self.outputs.push_back(Output::WsClose {
                    conn,
                    code: crate::ws::GOING_AWAY,
                });
                self.outputs.push_back(Output::Publish(gone));
            }
            self.route();
        }
        Ok(())
    }

    /// Whether work is under way: a store operation the layer above
    /// awaits, or (in a cluster) an emit to one socket this node published
    /// that has not come back from the bus yet (a draining node keeps its
    /// sessions open while they have something on its way).
    fn busy(&self) -> bool {
        self.upper.busy() || self.bus.as_ref().is_some_and(|b| b.order.on_its_way())
    }

    /// In a cluster: the forwarding state of this node's end of the bus.
    fn forwarding(&mut self) -> Option<&mut Forwarding> {
        self.bus.as_mut().map(|b| &mut b.forwarding)
    }

    /// A polling request the engine runs here (the host's, or one another
    /// node forwarded).
    fn http(
        &mut self,
        req: RequestId,
        method: Method,
        query: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) {
        let ids = &mut *self.ids;
        let posted =
            self.engine
                .handle_http(req, method, query, authorization, body, self.now, ids);
        self.route();
        if let Some((key, packets)) = posted {
            for p in packets {
                self.packet(key, p);
            }
        }
    }

    /// A frame from the client of a connection this node relays to the
    /// holder of its session: carried there (true), else false.
    fn relay_in(&mut self, conn: ConnId, frame: &Frame) -> bool {
        match self
            .bus
            .as_ref()
            .and_then(|b| b.forwarding.relayed_in(conn, frame))
        {
            Some(message) => {
                self.outputs.push_back(Output::Publish(message));
                true
            }
            None => false,
        }
    }

    /// A word between two nodes, read from the bus: what this node's end
    /// makes of it ([`crate::cluster::forward::Forwarding::take`]), done
    /// here.
    fn forwarded(&mut self, word: Word) {
        let Some(run) = self.forwarding().and_then(|f| f.take(word)) else {
            return;
        };
        match run {
            Forwarded::Http {
                req,
                method,
                query,
                authorization,
                body,
            } => self.http(
                req,
                method,
                &query,
                authorization.as_deref(),
                body.as_bytes(),
            ),
            Forwarded::Answer { req, response } => {
                self.outputs
                    .push_back(Output::HttpResponse { req, response });
            }
            Forwarded::Aborted(req) => self.engine.handle_http_aborted(req),
            Forwarded::WsOpen {
                conn,
                query,
                authorization,
            } => {
                let ids = &mut *self.ids;
                self.engine
                    .handle_ws_open(conn, &query, authorization.as_deref(), self.now, ids);
                self.route();
            }
            // Text frames reached the relaying node as UTF-8.
            Forwarded::Frame {
                conn,
                frame: Frame::Text(t),
            } => {
                if let Ok(text) = std::str::from_utf8(&t) {
                    self.frame(conn, Data::Text(text));
                }
            }
            Forwarded::Frame {
                conn,
                frame: Frame::Binary(b),
            } => self.frame(conn, Data::Binary(b)),
            Forwarded::WsClosed(conn) => {
                self.engine
                    .handle_ws_closed(conn, CloseReason::TransportClose, self.now);
                self.route();
            }
            Forwarded::WsFrame { conn, frame } => {
                self.outputs.push_back(Output::WsFrame { conn, frame });
            }
            Forwarded::WsClose { conn, code } => {
                self.outputs.push_back(Output::WsClose { conn, code });
            }
        }
    }

    /// The next thing to do. Drain it until it returns [`Output::Timeout`].
    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.next_output() {
            return o;
        }
        self.engine.flush(self.now);
        self.route();
        if let Some(o) = self.next_output() {
            return o;
        }
        // The host drained everything its last inputs made: what the layer
        // above gathered over them goes now.
        self.with_upper(|u, sh| u.flush(sh));
        // Word of what this node handed on of other nodes' emits, one per
        // node for the batch.
        if let Some(b) = &mut self.bus {
            let owed = b.owed_words();
            self.outputs.extend(owed.into_iter().map(Output::Publish));
        }
        if let Some(o) = self.next_output() {
            return o;
        }
        let bus = self.bus.as_mut().and_then(Endpoint::poll_timeout);
        let t = [self.engine.poll_timeout(), self.upper.poll_timeout(), bus]
            .into_iter()
            .flatten()
            .min();
        Output::Timeout(t.unwrap_or(self.now + IDLE))
    }

    /// The next output; an entry for the bus sealed by this node's end of
    /// it ([`Endpoint::seal`]).
    fn next_output(&mut self) -> Option<Output> {
        let mut o = self.outputs.pop_front()?;
        if let Output::Publish(entry) = &mut o {
            match &mut self.bus {
                Some(b) => b.seal(entry, &mut self.stats),
                // Only a node of a cluster publishes.
                None => entry.bytes = crate::bus::seal(&entry.bytes),
            }
        }
        Some(o)
    }

    /// An entry read from the bus (`past`: that long before this node
    /// joined), decoded by this node's end of it ([`Endpoint::read`]): a
    /// word between two nodes is run here; any other is taken by the end
    /// ([`Endpoint::take`]), and what it lets through goes up.
    fn bus_entry(&mut self, entry: &[u8], past: Option<Duration>, at: Option<Place>) {
        let Some(bus) = self.bus.as_mut() else {
            return;
        };
        let Some(word) = bus.read(entry, &mut self.stats) else {
            return;
        };
        if word.is_forward() {
            // Addressed: only what is for this node is taken, and that is
            // of its own time (even if read with the bus's past).
            self.forwarded(word);
        } else {
            let heard = bus.take(word, past, at, self.now, &mut self.stats);
            self.hear(heard);
        }
    }

    /// What this node's end of the bus let through, to the layer above in
    /// order.
    fn hear(&mut self, heard: Vec<Heard>) {
        if heard.is_empty() {
            return;
        }
        self.with_upper(|u, sh| {
            for h in heard {
                u.on_cluster(sh, h);
            }
        });
    }

    /// A WebSocket frame: the engine reads it; a message in it goes up.
    fn frame(&mut self, conn: ConnId, data: Data<'_>) {
        let read = self.engine.handle_ws_frame(conn, data, self.now);
        self.route();
        if let Some((key, p)) = read {
            self.packet(key, p);
        }
    }

    /// One packet a client sent on a session: the engine runs it, and a
    /// message goes to the layer above (unless the session closed
    /// meanwhile: the engine then hands nothing back).
    fn packet(&mut self, key: SessionKey, p: Packet<'_>) {
        if let Some(data) = self.engine.handle_packet(key, p, self.now) {
            self.with_upper(|u, sh| u.on_message(sh, key, data));
        }
        self.route();
    }

    /// Calls the layer above with what the node lends it, then carries
    /// out what it asked.
    fn with_upper(&mut self, f: impl FnOnce(&mut U, &mut Shared<'_>)) {
        let (order, remotes) = match &mut self.bus {
            Some(b) => (Some(&mut b.order), b.remotes.as_mut()),
            None => (None, None),
        };
        let mut sh = Shared {
            now: self.now,
            unix_ms: self.wall.map(|w| w.unix_ms(self.now)),
            bus_backlogged: self.bus_backlogged,
            ids: &mut *self.ids,
            stats: &mut self.stats,
            max_payload: self.engine.config().max_payload,
            order,
            remotes,
            commands: &mut self.commands,
            notices: self.notices.then_some(&mut self.outputs),
        };
        f(&mut self.upper, &mut sh);
        self.route();
    }

    /// Routes until nothing moves: the engine's transmits out to the host
    /// and its events up (counted, logged), the layer above's commands down
    /// to the engine. Order is kept: each queue is emptied as soon as
    /// something may have been put in it.
    fn route(&mut self) {
        loop {
            self.transmits();
            if let Some(c) = self.commands.pop_front() {
                self.command(c);
                continue;
            }
            let Some(e) = self.engine.poll_event() else {
                return;
            };
            self.event(e);
        }
    }

    /// Moves what the engine has to write to the output queue.
    fn transmits(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            self.outputs.push_back(match t {
                Transmit::Http { req, response } => {
                    match self
                        .bus
                        .as_mut()
                        .and_then(|b| b.forwarding.answered(req, &response))
                    {
                        // It ran here for another node: the answer goes back.
                        Some(message) => Output::Publish(message),
                        None => Output::HttpResponse { req, response },
                    }
                }
                Transmit::Frame { conn, frame } => {
                    match self
                        .bus
                        .as_ref()
                        .and_then(|b| b.forwarding.hosted_out(conn, &frame))
                    {
                        // Relayed here: it goes back to the node that has the client.
                        Some(message) => Output::Publish(message),
                        None => Output::WsFrame { conn, frame },
                    }
                }
                Transmit::Close { conn, code } => {
                    match self
                        .bus
                        .as_mut()
                        .and_then(|b| b.forwarding.hosted_close(conn, code))
                    {
                        Some(message) => Output::Publish(message),
                        None => Output::WsClose { conn, code },
                    }
                }
            });
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Send { key, packet } => {
                self.engine.send(key, packet);
            }
            Command::Broadcast {
                keys,
                name,
                mut broadcast,
            } => {
                let Frame::Text(text) = &broadcast.frame else {
                    unreachable!("a broadcast is a text packet");
                };
                let (n, conns) = self.engine.send_many(keys, text);
                // Counted once per broadcast, not per recipient.
                self.stats.deliveries += n as u64;
                self.stats.events_out[name as usize] += n as u64;
                // `route` moved what the engine wrote before this command
                // to the outputs already, so the broadcast keeps its place.
                let mut conns = conns;
                if let Some(f) = self.bus.as_ref().map(|b| &b.forwarding) {
                    // Connections relayed here get it through the bus.
                    conns.retain(|&c| match f.hosted_out(c, &broadcast.frame) {
                        Some(message) => {
                            self.outputs.push_back(Output::Publish(message));
                            false
                        }
                        None => true,
                    });
                }
                if !conns.is_empty() {
                    broadcast.conns = conns;
                    self.outputs.push_back(Output::Broadcast(broadcast));
                }
            }
            Command::Close { key, reason } => self.engine.close(key, reason, self.now),
            Command::Store { op, command } => {
                self.awaited.insert(op, command.kind());
                self.outputs.push_back(Output::Store { op, command });
            }
            Command::Publish(message) => self.outputs.push_back(Output::Publish(message)),
            Command::Subscribe(topic) => {
                if self.bus.as_mut().is_some_and(|b| b.reading(&topic, true)) {
                    self.outputs.push_back(Output::Subscribe(topic));
                }
            }
            Command::Unsubscribe(topic) => {
                if self.bus.as_mut().is_some_and(|b| b.reading(&topic, false)) {
                    self.outputs.push_back(Output::Unsubscribe(topic));
                }
            }
        }
    }

    fn event(&mut self, e: Event) {
        let notice = match e {
            Event::Opened {
                key,
                transport,
                handshake,
            } => {
                self.stats.opened(transport);
                self.notify(Notice::Opened {
                    session: key,
                    transport,
                });
                return self.with_upper(|u, sh| u.on_open(sh, key, handshake));
            }
            Event::Closed {
                key,
                transport,
                reason,
            } => {
                self.stats.closed(transport, reason);
                self.notify(Notice::Closed {
                    session: key,
                    transport,
                    reason,
                });
                return self.with_upper(|u, sh| u.on_close(sh, key, reason));
            }
            Event::Upgraded { key } => {
                self.stats.upgraded();
                Notice::Upgraded { session: key }
            }
            Event::Refused(reason) => {
                self.stats.eio_refusals[reason as usize] += 1;
                Notice::Refused { reason }
            }
        };
        self.notify(notice);
    }

    fn notify(&mut self, n: Notice) {
        if self.notices {
            self.outputs.push_back(Output::Notice(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::BusKind;

    /// A layer above that is one node of a cluster and keeps what the bus
    /// hands it.
    #[derive(Debug, Default)]
    struct Words(Vec<Word>);

    impl Upper for Words {
        fn on_open(&mut self, _: &mut Shared<'_>, _: SessionKey, _: Handshake) {}
        fn on_message(&mut self, _: &mut Shared<'_>, _: SessionKey, _: Data<'_>) {}
        fn on_close(&mut self, _: &mut Shared<'_>, _: SessionKey, _: CloseReason) {}
        fn on_store_reply(&mut self, _: &mut Shared<'_>, _: OpId, _: StoreReply) {}
        fn on_cluster(&mut self, _: &mut Shared<'_>, heard: Heard) {
            if let Heard::Word { word, .. } = heard {
                self.0.push(word);
            }
        }
        fn poll_timeout(&mut self) -> Option<Instant> {
            None
        }
        fn handle_timeout(&mut self, _: &mut Shared<'_>) {}
        fn cluster(&self) -> Option<Joined<'_>> {
            Some(Joined {
                node: "me",
                recovery: None,
            })
        }
    }

    #[test]
    fn an_entry_is_decoded_once_and_handed_on_typed_or_counted_as_unreadable() {
        let now = Instant::now();
        let mut node = Node::new(
            EngineConfig::default(),
            Words::default(),
            crate::ids::CounterIds::default(),
            now,
        );
        // A room emit of another node, with no place to wait for: the
        // layer above's, at once.
        let emit = Word::Broadcast {
            from: "other".into(),
            seq: 1,
            nsp: "/".into(),
            room: "r".into(),
            except: Vec::new(),
            text: r#"42["e"]"#.into(),
            track: false,
            to: None,
            volatile: false,
            attachments: Vec::new(),
            placed: None,
            key: None,
            belongs: None,
        };
        // A word between two nodes, for this one: the node's own (an
        // answer to a request it never sent is dropped), never the layer
        // above's.
        let answer = Word::Response {
            to: "me".into(),
            req: 1,
            status: 200,
            content_type: "text/plain".into(),
            body: "ok".into(),
        };
        let entries = [
            crate::bus::number(&emit.encode(), "other", 1),
            crate::bus::number(&emit.encode(), "other", 1),
            crate::bus::seal(&answer.encode()),
            crate::bus::seal(br#"{"t":"zz"}"#),
            Bytes::from_static(br#"2{"t":"l","node":"x"}"#),
        ];
        for message in entries {
            node.handle_input(now, Input::Cluster { message, at: None })
                .unwrap();
        }
        assert_eq!(node.upper().0, vec![emit], "once, typed");
        let s = node.stats();
        assert_eq!(s.bus_in[BusKind::Broadcast as usize], 2);
        assert_eq!(s.bus_in[BusKind::Forward as usize], 1);
        assert_eq!(s.bus_in[BusKind::Other as usize], 2);
        assert_eq!((s.bus_undecodable, s.bus_duplicates), (2, 1));
    }
}
