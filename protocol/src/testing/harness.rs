//! The simulation harness: one [`Node`] running the chat service, fake
//! WebSocket and polling clients, the model store whose replies the test
//! releases (in order, reversed, or failed), and a virtual clock that jumps
//! to the next deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::JwtConfig;
use crate::chat::{
    Chat, ChatConfig, DEFAULT_MAX_CHATS, DEFAULT_TYPING_TIMEOUT, RateLimit, WallClock,
};
use crate::eio::EngineConfig;
use crate::ids::{CounterIds, IdGenerator};
use crate::model::ObjectId;
use crate::node::{
    ConnId, Frame, HttpResponse, Input, InputError, Method, Node, OpId, Output, RequestId,
};
use crate::sio::{SocketIo, SocketIoConfig};
use crate::stats::Notice;
use crate::store::memory::MemoryModel;
use crate::store::{StoreCommand, StoreError, StoreReply};

/// The secret the simulation signs tokens with.
pub const SECRET: &[u8] = b"simulation-secret-simulation-secret!";

/// Wall-clock time at the start of every simulation.
pub const T0_MS: i64 = 1_732_540_800_000;

/// What a fake client received: whole Engine.IO packets, as text (binary
/// frames as `b` + base64, as over polling).
#[derive(Debug, Default)]
pub struct Client {
    /// Frames in arrival order.
    pub inbox: Vec<String>,
    /// Whether the server closed the connection.
    pub closed: bool,
    /// The close code the server closed it with.
    pub close_code: Option<u16>,
}

/// The chat node under test, its clients, its store, and the clock.
#[derive(Debug)]
pub struct Sim {
    /// The node.
    pub node: Node<SocketIo<Chat>>,
    /// Virtual time.
    pub now: Instant,
    /// Where the next deadline is.
    pub deadline: Instant,
    /// The store.
    pub store: MemoryModel,
    /// Store commands emitted and not yet answered, oldest first.
    pub in_flight: Vec<(OpId, StoreCommand)>,
    /// WebSocket clients.
    pub clients: BTreeMap<u64, Client>,
    /// Answers to HTTP requests.
    pub responses: BTreeMap<u64, HttpResponse>,
    /// Token settings.
    pub jwt: JwtConfig,
    /// Every store reply fed so far, oldest first, so that one can be fed again.
    pub replied: Vec<(OpId, StoreReply)>,
    /// The notices the node emitted (after [`Node::set_notices`]).
    pub notices: Vec<Notice>,
    /// What the node published on the cluster's bus and no bus took yet,
    /// oldest first.
    pub published: Vec<crate::bus::Entry>,
    /// The topics the node asked to read (true) or stop reading (false)
    /// and no bus heard yet, oldest first.
    pub subscriptions: Vec<(crate::bus::Topic, bool)>,
    start: Instant,
    next_conn: u64,
}

impl Sim {
    /// A node with the contract's defaults and a counter for randomness
    /// ([`CounterIds`]: distinct, predictable ids; [`Sim::with_ids`] takes
    /// any other generator).
    pub fn new() -> Self {
        Sim::with_ids(CounterIds::default())
    }

    /// A node with the contract's defaults drawing its ids from `ids`.
    pub fn with_ids(ids: impl IdGenerator) -> Self {
        Sim::with(ids, SocketIoConfig::default())
    }

    /// A node with these Socket.IO settings (recovery on, say) drawing its
    /// ids from `ids`.
    pub fn with(ids: impl IdGenerator, sio: SocketIoConfig) -> Self {
        let start = Instant::now();
        let jwt =
            JwtConfig::new(SECRET, "HS256", 60).expect("the simulation's secret is long enough");
        let chat = Chat::new(
            ChatConfig {
                jwt: jwt.clone(),
                rate: RateLimit::SEND,
                events: RateLimit::EVENTS,
                max_chats: DEFAULT_MAX_CHATS,
                typing_timeout: Some(DEFAULT_TYPING_TIMEOUT),
            },
            WallClock::new(start, T0_MS),
            start,
        );
        let sio = SocketIo::new(sio, chat);
        let node = Node::new(EngineConfig::default(), sio, ids, start);
        let mut sim = Sim {
            node,
            now: start,
            deadline: start,
            store: MemoryModel::new(),
            in_flight: Vec::new(),
            clients: BTreeMap::new(),
            responses: BTreeMap::new(),
            jwt,
            replied: Vec::new(),
            notices: Vec::new(),
            published: Vec::new(),
            subscriptions: Vec::new(),
            start,
            next_conn: 0,
        };
        sim.drain();
        sim
    }

    /// Wall-clock milliseconds now.
    pub fn unix_ms(&self) -> i64 {
        T0_MS + (self.now - self.start).as_millis() as i64
    }

    /// A token for a user.
    pub fn token(&self, user: ObjectId, name: &str) -> String {
        self.jwt.issue(user, name, self.unix_ms())
    }

    /// Feeds an input at the current time and drains the outputs.
    pub fn input(&mut self, input: Input<'_>) {
        self.node
            .handle_input(self.now, input)
            .expect("the simulation's clock never goes back");
        self.drain();
    }

    /// Drains the node's outputs into clients, responses and the store queue.
    pub fn drain(&mut self) {
        loop {
            match self.node.poll_output() {
                Output::Timeout(t) => {
                    self.deadline = t;
                    return;
                }
                Output::WsFrame { conn, frame } => self.deliver(conn, &frame),
                Output::Broadcast(b) => {
                    for conn in b.conns {
                        self.deliver(conn, &b.frame);
                    }
                }
                Output::WsClose { conn, code } => {
                    let c = self.clients.entry(conn.0).or_default();
                    c.closed = true;
                    c.close_code = Some(code);
                }
                Output::HttpResponse { req, response } => {
                    self.responses.insert(req.0, response);
                }
                Output::Store { op, command } => self.in_flight.push((op, command)),
                Output::Notice(n) => self.notices.push(n),
                Output::Publish(message) => self.published.push(message),
                Output::Subscribe(topic) => self.subscriptions.push((topic, true)),
                Output::Unsubscribe(topic) => self.subscriptions.push((topic, false)),
            }
        }
    }

    /// Puts a frame in a WebSocket client's inbox.
    fn deliver(&mut self, conn: ConnId, frame: &Frame) {
        let c = self.clients.entry(conn.0).or_default();
        c.inbox.push(match frame {
            Frame::Text(b) => String::from_utf8(b.to_vec()).expect("text frames are UTF-8"),
            Frame::Binary(b) => format!("b{}", b.len()),
        });
    }

    /// Moves the clock forward and runs what fell due.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while self.deadline <= until {
            self.now = self.now.max(self.deadline);
            self.input(Input::Timeout);
        }
        self.now = until;
        self.input(Input::Timeout);
    }

    /// Opens a WebSocket client and joins namespace `/` with `auth`;
    /// returns its connection number.
    pub fn connect(&mut self, auth: Option<&str>) -> u64 {
        self.next_conn += 1;
        let conn = self.next_conn;
        self.clients.insert(conn, Client::default());
        self.input(Input::WsOpen {
            conn: ConnId(conn),
            query: "EIO=4&transport=websocket",
            authorization: None,
        });
        let connect = match auth {
            Some(t) => format!("40{{\"token\":\"{t}\"}}"),
            None => "40".to_owned(),
        };
        self.send(conn, &connect);
        conn
    }

    /// A client sends a text frame.
    pub fn send(&mut self, conn: u64, text: &str) {
        self.input(Input::WsText {
            conn: ConnId(conn),
            text,
        });
    }

    /// A client sends a binary frame.
    pub fn send_binary(&mut self, conn: u64, data: &[u8]) {
        self.input(Input::WsBinary {
            conn: ConnId(conn),
            data: Bytes::copy_from_slice(data),
        });
    }

    /// A client's connection drops.
    pub fn drop_client(&mut self, conn: u64) {
        self.input(Input::WsClosed(ConnId(conn)));
    }

    /// A polling request; its answer lands in `responses` under `req`.
    pub fn http(&mut self, req: u64, method: Method, query: &str, body: &[u8]) {
        self.input(Input::Http {
            req: RequestId(req),
            method,
            query,
            authorization: None,
            body,
        });
    }

    /// Answers the oldest in-flight store command from the model store.
    pub fn complete_oldest(&mut self) -> bool {
        self.complete_at(0)
    }

    /// Answers the newest in-flight store command.
    pub fn complete_newest(&mut self) -> bool {
        match self.in_flight.len() {
            0 => false,
            n => self.complete_at(n - 1),
        }
    }

    /// Fails the oldest in-flight store command without running it.
    pub fn fail_oldest(&mut self) -> bool {
        self.fail_at(0)
    }

    /// Answers the `i`th in-flight store command (oldest first) from the
    /// model store; false when there is no such command.
    pub fn complete_at(&mut self, i: usize) -> bool {
        if i >= self.in_flight.len() {
            return false;
        }
        let (op, cmd) = self.in_flight.remove(i);
        let reply = self.store.apply(cmd);
        self.reply(op, reply);
        true
    }

    /// Fails the `i`th in-flight store command without running it.
    pub fn fail_at(&mut self, i: usize) -> bool {
        if i >= self.in_flight.len() {
            return false;
        }
        let (op, _) = self.in_flight.remove(i);
        self.reply(
            op,
            StoreReply::Failed(StoreError::transient("simulated failure")),
        );
        true
    }

    /// Feeds the `i`th reply of [`Sim::replied`] again, as a host that
    /// retried a store call might: the node refuses it
    /// ([`InputError::UnknownStoreOp`]) and nothing changes.
    pub fn duplicate_reply(&mut self, i: usize) -> bool {
        let Some((op, reply)) = self.replied.get(i).cloned() else {
            return false;
        };
        let r = self
            .node
            .handle_input(self.now, Input::StoreReply { op, reply });
        assert_eq!(r, Err(InputError::UnknownStoreOp(op)));
        self.drain();
        true
    }

    pub(crate) fn reply(&mut self, op: OpId, reply: StoreReply) {
        self.replied.push((op, reply.clone()));
        self.input(Input::StoreReply { op, reply });
    }

    /// Jumps the clock to the next deadline and runs what fell due.
    pub fn jump_to_deadline(&mut self) {
        self.now = self.now.max(self.deadline);
        self.input(Input::Timeout);
    }

    /// Answers every in-flight store command, oldest first, including those
    /// the answers cause.
    pub fn settle(&mut self) {
        while self.complete_oldest() {}
    }

    /// Takes a client's inbox.
    pub fn take(&mut self, conn: u64) -> Vec<String> {
        std::mem::take(&mut self.clients.entry(conn).or_default().inbox)
    }

    /// The Socket.IO events (name, first argument) a client received, in order.
    pub fn events(&mut self, conn: u64) -> Vec<(String, serde_json::Value)> {
        self.take(conn)
            .into_iter()
            .filter_map(|f| {
                let json = f.strip_prefix("42")?;
                let v: serde_json::Value = serde_json::from_str(json).ok()?;
                Some((v[0].as_str()?.to_owned(), v[1].clone()))
            })
            .collect()
    }
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

/// A user id the scenarios use: twelve bytes of `n`.
pub fn uid(n: u8) -> ObjectId {
    ObjectId([n; 12])
}

/// Connects a user's tab over WebSocket and clears its inbox (open,
/// CONNECT reply); returns its connection number.
pub fn tab(sim: &mut Sim, user: u8, name: &str) -> u64 {
    let token = sim.token(uid(user), name);
    let c = sim.connect(Some(&token));
    let inbox = sim.take(c);
    assert!(inbox[0].starts_with("0{"), "{inbox:?}");
    assert!(inbox[1].starts_with("40{\"sid\":"), "{inbox:?}");
    c
}

/// A client event `name` with `payload`, asking for ack `ack`.
pub fn event(sim: &mut Sim, conn: u64, ack: u64, name: &str, payload: serde_json::Value) {
    sim.send(
        conn,
        &format!("42{ack}{}", serde_json::json!([name, payload])),
    );
}

/// A `chat:send` with `payload`, asking for ack `ack`.
pub fn send(sim: &mut Sim, conn: u64, ack: u64, payload: serde_json::Value) {
    event(sim, conn, ack, "chat:send", payload);
}

/// The names of `events`.
pub fn names(events: &[(String, serde_json::Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// The `error` codes among `events`.
pub fn error_codes(events: &[(String, serde_json::Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(n, _)| n == "error")
        .map(|(_, v)| v["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}
