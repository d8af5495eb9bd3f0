//! The façade over the layers: inputs in, outputs out, in the manner of
//! str0m's `Rtc`.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::eio::session::WsData;
use crate::eio::{CloseReason, Engine, EngineConfig, EngineHandler};
use crate::ids::IdGenerator;
use crate::stats::{Notice, Stats};
use crate::store::{StoreCommand, StoreReply};

/// Names an HTTP request; chosen by the host, unique among its open requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Names a WebSocket connection; chosen by the host, unique among its open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Names a store operation; chosen by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// The HTTP methods the Engine.IO path distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// Any other.
    Other,
}

/// An HTTP response for the host to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// 200 with a polling payload.
    pub fn text(body: Bytes) -> Self {
        HttpResponse {
            status: 200,
            content_type: "text/plain; charset=UTF-8",
            body,
        }
    }

    /// A JSON body with a status.
    pub fn json(status: u16, body: Bytes) -> Self {
        HttpResponse {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// 200 `ok`, the answer to a POSTed payload.
    pub fn ok() -> Self {
        HttpResponse {
            status: 200,
            content_type: "text/html",
            body: Bytes::from_static(b"ok"),
        }
    }
}

/// A WebSocket frame for the host to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (always valid UTF-8).
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
}

/// A packet for every socket in a room of a namespace but some, as one
/// [`Output::Broadcast`].
///
/// Polling sessions in the room have it in their buffers already (their
/// next poll carries it); `conns` names the WebSocket connections, in the
/// order of the room's members, each to get `frame` after what was output
/// for it before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    /// The namespace.
    pub nsp: String,
    /// The room.
    pub room: String,
    /// The public ids (`socket.id`) of the sockets left out.
    pub except: Vec<String>,
    /// The Engine.IO packet, encoded once.
    pub frame: Frame,
    /// This node's WebSocket connections to write `frame` to.
    pub conns: Vec<ConnId>,
}

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
    /// Something happened that the host may log; only after
    /// [`Node::set_notices`].
    Notice(Notice),
    /// Nothing more until this instant (or the next input).
    Timeout(Instant),
}

/// The layer above Engine.IO, driven by the node: Socket.IO with an
/// application, or anything else that speaks over Engine.IO sessions.
pub trait Upper: EngineHandler {
    /// A store command this layer issued finished.
    fn handle_store_reply(
        &mut self,
        engine: &mut Engine,
        op: OpId,
        reply: StoreReply,
        now: Instant,
    );
    /// This layer's next deadline.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Runs what is due in this layer.
    fn handle_timeout(&mut self, engine: &mut Engine, now: Instant);
    /// The server is shutting down: refuse whatever would start new work
    /// from now on, and finish what is under way.
    fn drain(&mut self, _engine: &mut Engine, _now: Instant) {}
    /// Whether work is under way (a store operation awaited): a draining
    /// node closes its sessions once there is none.
    fn busy(&self) -> bool {
        false
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
#[derive(Debug)]
pub struct Node<U> {
    engine: Engine,
    upper: U,
    now: Instant,
    phase: Phase,
}

impl<U: Upper> Node<U> {
    /// A node with no sessions. `ids` supplies every random id; `now` is the
    /// host's monotonic time.
    pub fn new(config: EngineConfig, upper: U, ids: impl IdGenerator, now: Instant) -> Self {
        Node {
            engine: Engine::new(config, Box::new(ids)),
            upper,
            now,
            phase: Phase::Serving,
        }
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
        self.engine.stats()
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
        self.phase == Phase::Closed && self.engine.session_count() == 0 && !self.upper.busy()
    }

    /// Whether to emit [`Output::Notice`]s (off by default): a host turns
    /// them on when it logs them, and pays nothing otherwise.
    pub fn set_notices(&mut self, on: bool) {
        self.engine.notices = on;
    }

    /// Feeds one input, at time `now` (monotonic, never going back).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), InputError> {
        if now < self.now {
            return Err(InputError::TimeWentBackwards);
        }
        self.now = now;
        let (e, u) = (&mut self.engine, &mut self.upper);
        // Whatever fell due before this input happens first: a request that
        // arrives after a session's deadline finds it closed.
        if !matches!(input, Input::Timeout) && e.poll_timeout().is_some_and(|t| t <= now) {
            e.handle_timeout(u, now);
        }
        match input {
            Input::Http {
                req,
                method,
                query,
                authorization,
                body,
            } => e.handle_http(u, req, method, query, authorization, body, now),
            Input::HttpAborted(req) => e.handle_http_aborted(req),
            Input::WsOpen {
                conn,
                query,
                authorization,
            } => e.handle_ws_open(u, conn, query, authorization, now),
            Input::WsText { conn, text } => e.handle_ws_frame(u, conn, WsData::Text(text), now),
            Input::WsBinary { conn, data } => e.handle_ws_frame(u, conn, WsData::Binary(data), now),
            Input::WsClosed(conn) => e.handle_ws_closed(u, conn, CloseReason::TransportClose, now),
            Input::WsTooSlow(conn) => e.handle_ws_closed(u, conn, CloseReason::Backlog, now),
            Input::StoreReply { op, reply } => u.handle_store_reply(e, op, reply, now),
            Input::Timeout => {
                e.handle_timeout(u, now);
                u.handle_timeout(e, now);
            }
            Input::Shutdown => {
                if self.phase == Phase::Serving {
                    self.phase = Phase::Draining;
                    e.drain();
                    u.drain(e, now);
                }
            }
        }
        // Draining, and nothing is under way any more: every answer is
        // queued, so the sessions close after it.
        if self.phase == Phase::Draining && !self.upper.busy() {
            self.phase = Phase::Closed;
            self.engine.go_away(&mut self.upper, now);
        }
        Ok(())
    }

    /// The next thing to do. Drain it until it returns [`Output::Timeout`].
    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.engine.outputs.pop_front() {
            return o;
        }
        self.engine.flush(&mut self.upper, self.now);
        if let Some(o) = self.engine.outputs.pop_front() {
            return o;
        }
        let t = [self.engine.poll_timeout(), self.upper.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        Output::Timeout(t.unwrap_or(self.now + IDLE))
    }
}
