//! A deterministic simulation of a chat server: one [`Node`] running the
//! chat service, fake WebSocket and polling clients, a fake store whose
//! replies the test releases (in order, reversed, or failed), and a virtual
//! clock that jumps to the next deadline. Everything a test does replays
//! exactly: there is no thread, no socket and no real time.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::JwtConfig;
use crate::chat::{Chat, ChatConfig, RateLimit, WallClock};
use crate::eio::EngineConfig;
use crate::ids::CounterIds;
use crate::model::{Message, ObjectId, Status};
use crate::node::{ConnId, Frame, HttpResponse, Input, Method, Node, OpId, Output, RequestId};
use crate::sio::{SocketIo, SocketIoConfig};
use crate::store::{
    Append, CreateUser, Cursor, History, ReadReceipt, StoreCommand, StoreError, StoreReply, Window,
};

/// The secret the simulation signs tokens with.
pub const SECRET: &[u8] = b"simulation-secret-simulation-secret!";

/// Wall-clock time at the start of every simulation.
pub const T0_MS: i64 = 1_732_540_800_000;

/// A store kept in memory with the same rules as the real ones, applied
/// synchronously when the simulation releases a command.
#[derive(Debug, Default)]
pub struct ModelStore {
    messages: BTreeMap<ObjectId, Message>,
    dedupe: HashMap<(ObjectId, String), (ObjectId, i64)>,
    users: HashMap<String, crate::model::UserRecord>,
    /// How many appends were stored (not deduplicated).
    pub appends: usize,
}

impl ModelStore {
    /// Runs one command.
    pub fn apply(&mut self, cmd: StoreCommand) -> StoreReply {
        match cmd {
            StoreCommand::Ping => StoreReply::Pong,
            StoreCommand::CreateUser(u) => match self.users.entry(u.username.to_lowercase()) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    StoreReply::CreateUser(CreateUser::Taken)
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(u);
                    StoreReply::CreateUser(CreateUser::Created)
                }
            },
            StoreCommand::FindUser(n) => {
                StoreReply::User(self.users.get(&n.to_lowercase()).cloned())
            }
            StoreCommand::AppendMessage(m) => {
                if let Some(t) = &m.temp_id
                    && let Some(&(id, timestamp)) =
                        self.dedupe.get(&(m.message.author_id, t.clone()))
                {
                    return StoreReply::Appended(Append::Duplicate { id, timestamp });
                }
                if let Some(t) = m.temp_id {
                    self.dedupe.insert(
                        (m.message.author_id, t),
                        (m.message.id, m.message.timestamp),
                    );
                }
                self.appends += 1;
                self.messages.insert(m.message.id, m.message);
                StoreReply::Appended(Append::Stored)
            }
            StoreCommand::History(q) => {
                let mut all: Vec<&Message> = self
                    .messages
                    .values()
                    .filter(|m| m.chat_id == q.chat_id)
                    .collect();
                all.sort_by_key(|m| (m.timestamp, m.id));
                let key = |c: Cursor| match c {
                    Cursor::Time(t) => Some((t, None)),
                    Cursor::Id(id) => self
                        .messages
                        .get(&id)
                        .filter(|m| m.chat_id == q.chat_id)
                        .map(|m| (m.timestamp, Some(m.id))),
                };
                let limit = q.limit as usize;
                let out: Vec<Message> = match q.window {
                    Window::Latest => all
                        .iter()
                        .rev()
                        .take(limit)
                        .rev()
                        .map(|m| (*m).clone())
                        .collect(),
                    Window::Before(c) => {
                        let Some((t, id)) = key(c) else {
                            return StoreReply::History(History::UnknownAnchor);
                        };
                        let before = |m: &&&Message| match id {
                            None => m.timestamp < t,
                            Some(id) => (m.timestamp, m.id) < (t, id),
                        };
                        let v: Vec<_> = all.iter().filter(before).collect();
                        v.iter()
                            .rev()
                            .take(limit)
                            .rev()
                            .map(|m| (**m).clone())
                            .collect()
                    }
                    Window::After(c) => {
                        let Some((t, id)) = key(c) else {
                            return StoreReply::History(History::UnknownAnchor);
                        };
                        let after = |m: &&&Message| match id {
                            None => m.timestamp > t,
                            Some(id) => (m.timestamp, m.id) > (t, id),
                        };
                        all.iter()
                            .filter(after)
                            .take(limit)
                            .map(|m| (*m).clone())
                            .collect()
                    }
                };
                StoreReply::History(History::Messages(out))
            }
            StoreCommand::MarkDelivered(id) => {
                if let Some(m) = self.messages.get_mut(&id)
                    && m.status == Status::Sent
                {
                    m.status = Status::Delivered;
                }
                StoreReply::Delivered
            }
            StoreCommand::MarkRead { ids, reader } => {
                let mut out = Vec::new();
                for id in ids {
                    if let Some(m) = self.messages.get_mut(&id)
                        && m.author_id != reader
                    {
                        m.status = Status::Read;
                        out.push(ReadReceipt {
                            id,
                            chat_id: m.chat_id.clone(),
                        });
                    }
                }
                StoreReply::Read(out)
            }
        }
    }

    /// Every stored message of a chat in (timestamp, id) order.
    pub fn chat(&self, chat: &str) -> Vec<Message> {
        let mut v: Vec<Message> = self
            .messages
            .values()
            .filter(|m| m.chat_id == chat)
            .cloned()
            .collect();
        v.sort_by_key(|m| (m.timestamp, m.id));
        v
    }
}

/// What a fake client received: whole Engine.IO packets, as text (binary
/// frames as `b` + base64, as over polling).
#[derive(Debug, Default)]
pub struct Client {
    /// Frames in arrival order.
    pub inbox: Vec<String>,
    /// Whether the server closed the connection.
    pub closed: bool,
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
    pub store: ModelStore,
    /// Store commands emitted and not yet answered, oldest first.
    pub in_flight: Vec<(OpId, StoreCommand)>,
    /// WebSocket clients.
    pub clients: BTreeMap<u64, Client>,
    /// Answers to HTTP requests.
    pub responses: BTreeMap<u64, HttpResponse>,
    /// Token settings.
    pub jwt: JwtConfig,
    start: Instant,
    next_conn: u64,
}

impl Sim {
    /// A node with the contract's defaults and a counter for randomness.
    pub fn new() -> Self {
        let start = Instant::now();
        let jwt =
            JwtConfig::new(SECRET, "HS256", 60).expect("the simulation's secret is long enough");
        let chat = Chat::new(
            ChatConfig {
                jwt: jwt.clone(),
                rate: RateLimit::default(),
            },
            WallClock::new(start, T0_MS),
            start,
        );
        let sio = SocketIo::new(SocketIoConfig::default(), chat);
        let node = Node::new(EngineConfig::default(), sio, CounterIds::default(), start);
        let mut sim = Sim {
            node,
            now: start,
            deadline: start,
            store: ModelStore::default(),
            in_flight: Vec::new(),
            clients: BTreeMap::new(),
            responses: BTreeMap::new(),
            jwt,
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
                Output::WsFrame { conn, frame } => {
                    let c = self.clients.entry(conn.0).or_default();
                    c.inbox.push(match frame {
                        Frame::Text(b) => {
                            String::from_utf8(b.to_vec()).expect("text frames are UTF-8")
                        }
                        Frame::Binary(b) => format!("b{}", b.len()),
                    });
                }
                Output::WsClose { conn } => self.clients.entry(conn.0).or_default().closed = true,
                Output::HttpResponse { req, response } => {
                    self.responses.insert(req.0, response);
                }
                Output::Store { op, command } => self.in_flight.push((op, command)),
            }
        }
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
        if self.in_flight.is_empty() {
            return false;
        }
        let (op, cmd) = self.in_flight.remove(0);
        let reply = self.store.apply(cmd);
        self.input(Input::StoreReply { op, reply });
        true
    }

    /// Answers the newest in-flight store command.
    pub fn complete_newest(&mut self) -> bool {
        let Some((op, cmd)) = self.in_flight.pop() else {
            return false;
        };
        let reply = self.store.apply(cmd);
        self.input(Input::StoreReply { op, reply });
        true
    }

    /// Fails the oldest in-flight store command without running it.
    pub fn fail_oldest(&mut self) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        let (op, _) = self.in_flight.remove(0);
        self.input(Input::StoreReply {
            op,
            reply: StoreReply::Failed(StoreError("simulated failure".into())),
        });
        true
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
