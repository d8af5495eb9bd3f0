//! Every transition of Socket.IO clients and sockets lives here: CONNECT and
//! its refusal, events, acks, binary reassembly, rooms, connect timeouts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexSet;
use serde::Serialize;
use serde_json::Value;

use super::packet::{self, PacketData, PacketType, Partial};
use crate::deadlines::Deadlines;
use crate::eio::{CloseReason, Data, Handshake, SessionKey, Violation};
use crate::ids::{IdGenerator, IntHasher, IntMap, new_sid};
use crate::node::{Broadcast, Command, Frame, OpId, Shared, Upper};
use crate::stats::{AuthFailure, ConnectRefusal, EventName, Notice, RefusalCode};
use crate::store::{StoreCommand, StoreReply};

/// Names one socket (one client in one namespace); never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u64);

/// Socket.IO settings.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// How long a client may stay without joining any namespace.
    pub connect_timeout: Duration,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            connect_timeout: Duration::from_secs(45),
        }
    }
}

/// Why a socket left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client sent DISCONNECT for the namespace.
    ClientNamespaceDisconnect,
    /// The server disconnected it.
    ServerDisconnect,
    /// Its Engine.IO session ended.
    Transport(CloseReason),
}

/// A client asking to join a namespace.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// The namespace.
    pub nsp: &'a str,
    /// The CONNECT packet's auth payload, if any.
    pub auth: Option<&'a Value>,
    /// The Engine.IO handshake (query string, `Authorization` header).
    pub handshake: &'a Handshake,
}

/// An event from a client.
#[derive(Debug)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// Its arguments; binary ones are placeholders into `attachments`.
    pub args: Vec<Value>,
    /// The binary attachments.
    pub attachments: Vec<Bytes>,
    /// The ack id, when the client asked for an answer.
    pub ack: Option<u64>,
}

/// The application: what runs on top of Socket.IO (the chat service, or the
/// protocol-conformance example).
pub trait Application {
    /// Whether a namespace exists.
    fn has_namespace(&self, nsp: &str) -> bool;
    /// What the application learns of a socket as it accepts its CONNECT
    /// (the user its token names, say): [`Application::authorize`] returns
    /// it and [`Application::on_connect`] receives it, with nothing to
    /// stash in between.
    type Socket;
    /// A client asks to join a namespace: `Ok(data)` accepts it, `data`
    /// going to [`Application::on_connect`] with the new socket;
    /// `Err(data)` refuses it with CONNECT_ERROR carrying `data`.
    fn authorize(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &ConnectRequest<'_>,
    ) -> Result<Self::Socket, Value>;
    /// The socket joined (its CONNECT was answered), with what
    /// [`Application::authorize`] returned for it.
    fn on_connect(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, data: Self::Socket);
    /// An event named `name` (with ack id `ack`) arrived, its arguments
    /// not parsed yet: false refuses it, and it is dropped unparsed (the
    /// application tells the client, through `ctx`, if it wants to). This
    /// is where a budget goes: what a refused event costs does not grow
    /// with its arguments. Every event passes here once, before
    /// [`Application::on_event`]; by default every one is let through.
    fn admit(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _socket: SocketId,
        _name: &str,
        _ack: Option<u64>,
    ) -> bool {
        true
    }
    /// An event arrived (and [`Application::admit`] let it through).
    fn on_event(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, event: Event);
    /// The client acknowledged an event this server emitted with an ack id.
    fn on_ack(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _socket: SocketId,
        _id: u64,
        _args: Vec<Value>,
        _attachments: Vec<Bytes>,
    ) {
    }
    /// The socket left.
    fn on_disconnect(&mut self, _ctx: &mut Ctx<'_>, _socket: SocketId, _reason: DisconnectReason) {}
    /// A store command this application issued finished.
    fn on_store_reply(&mut self, _ctx: &mut Ctx<'_>, _op: OpId, _reply: StoreReply) {}
    /// The application's next deadline.
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
    /// Runs what is due.
    fn handle_timeout(&mut self, _ctx: &mut Ctx<'_>) {}
    /// The server is shutting down: refuse whatever would start new work
    /// from now on (the sockets stay until nothing is under way).
    fn drain(&mut self, _ctx: &mut Ctx<'_>) {}
    /// Whether work is under way: a store operation awaited, whose answer
    /// is still to reach a socket.
    fn busy(&self) -> bool {
        false
    }
}

struct Client {
    /// What the Engine.IO handshake carried (a CONNECT reads it).
    handshake: Handshake,
    sockets: Vec<(String, SocketId)>,
    partial: Option<Partial>,
    connect_deadline: Option<Instant>,
}

struct Socket {
    session: SessionKey,
    nsp: String,
    sid: String,
    /// A set, not a list: a join, a leave and a membership test cost the
    /// same however many rooms the socket is in (room names are chosen by
    /// clients, so the std hasher, which is not predictable by them).
    rooms: HashSet<String>,
    next_ack: u64,
}

/// The Socket.IO state an application acts on through [`Ctx`].
#[derive(Default)]
pub struct State {
    clients: IntMap<SessionKey, Client>,
    sockets: IntMap<SocketId, Socket>,
    /// Namespace -> room -> members, looked up by `&str` without allocating.
    rooms: Rooms,
    timers: Deadlines<SessionKey>,
    next_socket: u64,
    next_op: u64,
    /// The session whose CONNECT the application is deciding on.
    authorizing: Option<SessionKey>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("sockets", &self.sockets.len())
            .field("rooms", &self.rooms.len())
            .finish()
    }
}

/// What an application may do while handling an input.
pub struct Ctx<'a> {
    sh: Shared<'a>,
    state: &'a mut State,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("now", &self.sh.now).finish()
    }
}

/// Asks the node to send a packet (and its attachments) on a session.
fn send_packet(sh: &mut Shared<'_>, key: SessionKey, text: Bytes, attachments: &[Bytes]) {
    sh.push(Command::Send {
        key,
        packet: Frame::Text(text),
    });
    for a in attachments {
        sh.push(Command::Send {
            key,
            packet: Frame::Binary(a.clone()),
        });
    }
}

impl Ctx<'_> {
    /// The time of the input being handled.
    pub fn now(&self) -> Instant {
        self.sh.now
    }

    /// The id generator.
    pub fn ids(&mut self) -> &mut dyn IdGenerator {
        &mut *self.sh.ids
    }

    /// The socket's public id (what the client sees as `socket.id`).
    pub fn sid(&self, socket: SocketId) -> Option<&str> {
        self.state.sockets.get(&socket).map(|s| s.sid.as_str())
    }

    /// The socket's namespace.
    pub fn namespace(&self, socket: SocketId) -> Option<&str> {
        self.state.sockets.get(&socket).map(|s| s.nsp.as_str())
    }

    fn emit_packet<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        kind: PacketType,
        id: Option<u64>,
        data: &T,
        attachments: &[Bytes],
    ) -> bool {
        let Some(s) = self.state.sockets.get(&socket) else {
            return false;
        };
        let kind = match (kind, attachments.is_empty()) {
            (PacketType::Event, false) => PacketType::BinaryEvent,
            (PacketType::Ack, false) => PacketType::BinaryAck,
            (k, _) => k,
        };
        let text = packet::encode(kind, &s.nsp, attachments.len(), id, Some(data));
        let name = matches!(kind, PacketType::Event | PacketType::BinaryEvent)
            .then(|| EventName::of(packet::event_name(&text).unwrap_or("")));
        send_packet(&mut self.sh, s.session, text, attachments);
        if let Some(name) = name {
            self.sh.stats.events_out[name as usize] += 1;
        }
        true
    }

    /// Emits an event; `data` serializes to the array `[name, ...args]`.
    pub fn emit<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        data: &T,
        attachments: &[Bytes],
    ) -> bool {
        self.emit_packet(socket, PacketType::Event, None, data, attachments)
    }

    /// Emits an event and asks the client to acknowledge it; returns the ack
    /// id that [`Application::on_ack`] will name.
    pub fn emit_with_ack<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        data: &T,
        attachments: &[Bytes],
    ) -> Option<u64> {
        let s = self.state.sockets.get_mut(&socket)?;
        let id = s.next_ack;
        s.next_ack += 1;
        self.emit_packet(socket, PacketType::Event, Some(id), data, attachments)
            .then_some(id)
    }

    /// Answers a client's ack request; `args` serializes to an array.
    pub fn ack<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        id: u64,
        args: &T,
        attachments: &[Bytes],
    ) -> bool {
        self.emit_packet(socket, PacketType::Ack, Some(id), args, attachments)
    }

    /// Puts a socket in a room of its namespace; false if it was in it
    /// already (or is gone). O(1): nothing is scanned or rebuilt.
    pub fn join(&mut self, socket: SocketId, room: &str) -> bool {
        let Some(s) = self.state.sockets.get_mut(&socket) else {
            return false;
        };
        if s.rooms.contains(room) {
            return false;
        }
        s.rooms.insert(room.to_owned());
        self.state
            .rooms
            .entry(s.nsp.clone())
            .or_default()
            .entry(room.to_owned())
            .or_default()
            .insert(socket);
        true
    }

    /// Takes a socket out of a room; false if it was not in it. O(1).
    pub fn leave(&mut self, socket: SocketId, room: &str) -> bool {
        let Some(s) = self.state.sockets.get_mut(&socket) else {
            return false;
        };
        if !s.rooms.remove(room) {
            return false;
        }
        leave_room(&mut self.state.rooms, &s.nsp, room, socket);
        true
    }

    /// Whether a socket is in a room.
    pub fn in_room(&self, socket: SocketId, room: &str) -> bool {
        self.state
            .sockets
            .get(&socket)
            .is_some_and(|s| s.rooms.contains(room))
    }

    /// Emits an event to every socket in a room of a namespace but `except`,
    /// encoding it once: one [`Output::Broadcast`](crate::Output::Broadcast)
    /// for the WebSocket ones. Returns how many sockets it is for.
    pub fn broadcast<T: Serialize + ?Sized>(
        &mut self,
        nsp: &str,
        room: &str,
        except: Option<SocketId>,
        data: &T,
    ) -> usize {
        let Some(members) = self.state.rooms.get(nsp).and_then(|r| r.get(room)) else {
            return 0;
        };
        let text = packet::encode(PacketType::Event, nsp, 0, None, Some(data));
        let name = EventName::of(packet::event_name(&text).unwrap_or(""));
        let sockets = &self.state.sockets;
        let keys: Vec<SessionKey> = members
            .iter()
            .filter(|id| Some(**id) != except)
            .filter_map(|id| sockets.get(id).map(|s| s.session))
            .collect();
        let n = keys.len();
        if n == 0 {
            return 0;
        }
        let except = except
            .and_then(|id| sockets.get(&id))
            .map(|s| s.sid.clone());
        self.sh.push(Command::Broadcast {
            keys,
            name,
            broadcast: Broadcast {
                nsp: nsp.to_owned(),
                room: room.to_owned(),
                except: except.into_iter().collect(),
                frame: Frame::Text(text),
                conns: Vec::new(),
            },
        });
        n
    }

    /// Counts an event the application refused with `code` (its `error`'s
    /// code), and tells the host if it asked for notices.
    pub fn refused(&mut self, socket: SocketId, event: &str, code: &str) {
        let (name, code) = (EventName::of(event), RefusalCode::of(code));
        self.sh.stats.refusals[name as usize][code as usize] += 1;
        if let Some(s) = self.state.sockets.get(&socket) {
            let session = s.session;
            self.sh.notice(Notice::EventRefused {
                session,
                name,
                code,
            });
        }
    }

    /// Counts credentials refused during [`Application::authorize`] (which
    /// then refuses the CONNECT), and why.
    pub fn auth_failed(&mut self, why: AuthFailure) {
        self.sh.stats.auth_failures[why as usize] += 1;
        if let Some(session) = self.state.authorizing {
            self.sh.notice(Notice::AuthFailed { session, why });
        }
    }

    /// Disconnects a socket from its namespace (the Engine.IO session stays).
    pub fn disconnect(&mut self, socket: SocketId) {
        if let Some(s) = self.state.sockets.get(&socket) {
            let text = packet::encode::<Value>(PacketType::Disconnect, &s.nsp, 0, None, None);
            send_packet(&mut self.sh, s.session, text, &[]);
        }
        remove_socket(self.state, socket);
    }

    /// Asks the host to run a store command; its reply comes to
    /// [`Application::on_store_reply`] under the returned id.
    pub fn store(&mut self, command: StoreCommand) -> OpId {
        self.state.next_op += 1;
        let op = OpId(self.state.next_op);
        self.sh.push(Command::Store { op, command });
        op
    }
}

type Members = IndexSet<SocketId, std::hash::BuildHasherDefault<IntHasher>>;
type Rooms = HashMap<String, HashMap<String, Members>>;

fn leave_room(rooms: &mut Rooms, nsp: &str, room: &str, socket: SocketId) {
    let Some(of_nsp) = rooms.get_mut(nsp) else {
        return;
    };
    if let Some(set) = of_nsp.get_mut(room) {
        set.swap_remove(&socket);
        if set.is_empty() {
            of_nsp.remove(room);
        }
    }
    if of_nsp.is_empty() {
        rooms.remove(nsp);
    }
}

/// Counts a CONNECT_ERROR and tells the host.
fn connect_refused(sh: &mut Shared<'_>, session: SessionKey, reason: ConnectRefusal) {
    sh.stats.connect_errors[reason as usize] += 1;
    sh.notice(Notice::ConnectRefused { session, reason });
}

/// Removes a socket from every table; returns it if it existed.
fn remove_socket(state: &mut State, socket: SocketId) -> Option<Socket> {
    let s = state.sockets.remove(&socket)?;
    for room in &s.rooms {
        leave_room(&mut state.rooms, &s.nsp, room, socket);
    }
    if let Some(c) = state.clients.get_mut(&s.session) {
        c.sockets.retain(|(_, id)| *id != socket);
    }
    Some(s)
}

/// Socket.IO with an application on top; the [`Upper`] layer of a node.
pub struct SocketIo<A> {
    config: SocketIoConfig,
    app: A,
    state: State,
}

impl<A: std::fmt::Debug> std::fmt::Debug for SocketIo<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("app", &self.app)
            .field("state", &self.state)
            .finish()
    }
}

impl<A: Application> SocketIo<A> {
    /// Socket.IO serving `app`.
    pub fn new(config: SocketIoConfig, app: A) -> Self {
        SocketIo {
            config,
            app,
            state: State::default(),
        }
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// How many sockets are connected.
    pub fn socket_count(&self) -> usize {
        self.state.sockets.len()
    }

    fn ctx<'a>(sh: &'a mut Shared<'_>, state: &'a mut State) -> Ctx<'a> {
        Ctx {
            sh: sh.reborrow(),
            state,
        }
    }

    fn handle_text(
        &mut self,
        sh: &mut Shared<'_>,
        key: SessionKey,
        text: &str,
    ) -> Result<(), Violation> {
        let client = self
            .state
            .clients
            .get(&key)
            .expect("a session's client lives until on_close");
        if client.partial.is_some() {
            // A text packet while attachments are awaited breaks the protocol.
            return Err(Violation::AttachmentOutOfTurn);
        }
        let raw = packet::decode(text).map_err(|_| Violation::BadSocketIoPacket)?;
        // An event's name is read before its arguments, so that the
        // application can refuse it without parsing them.
        let peeked = match raw.kind {
            PacketType::Event => raw.data.and_then(packet::peek_event_name),
            _ => None,
        };
        let admitted = match peeked.zip(self.socket_of(key, raw.nsp)) {
            Some((name, socket)) => {
                if !self.admit(sh, key, socket, name, raw.id) {
                    return Ok(());
                }
                Some(socket)
            }
            None => None,
        };
        let data = packet::parse_data(&raw).map_err(|_| Violation::BadSocketIoPacket)?;
        if raw.attachments > 0 {
            let ok = match &data {
                PacketData::Event(_, a) | PacketData::Ack(a) => a
                    .iter()
                    .all(|v| packet::placeholders_valid(v, raw.attachments)),
                _ => false,
            };
            if !ok {
                return Err(Violation::BadPlaceholder);
            }
            let client = self.state.clients.get_mut(&key).expect("checked above");
            client.partial = Some(Partial {
                kind: raw.kind,
                nsp: raw.nsp.to_owned(),
                id: raw.id,
                data,
                expected: raw.attachments,
                attachments: Vec::with_capacity(raw.attachments),
                bytes: 0,
            });
            return Ok(());
        }
        self.dispatch(sh, key, raw.nsp, raw.id, data, Vec::new(), admitted);
        Ok(())
    }

    /// The socket of a session in a namespace.
    fn socket_of(&self, key: SessionKey, nsp: &str) -> Option<SocketId> {
        let client = self.state.clients.get(&key)?;
        client
            .sockets
            .iter()
            .find(|(n, _)| n == nsp)
            .map(|(_, s)| *s)
    }

    /// Counts an event and asks the application whether to handle it.
    fn admit(
        &mut self,
        sh: &mut Shared<'_>,
        key: SessionKey,
        socket: SocketId,
        name: &str,
        ack: Option<u64>,
    ) -> bool {
        let label = EventName::of(name);
        sh.stats.events_in[label as usize] += 1;
        sh.notice(Notice::Event {
            session: key,
            name: label,
        });
        let mut ctx = Self::ctx(sh, &mut self.state);
        self.app.admit(&mut ctx, socket, name, ack)
    }

    /// `admitted`: the socket of an event [`Self::admit`] already let through.
    #[allow(clippy::too_many_arguments)] // the parts of one decoded packet
    fn dispatch(
        &mut self,
        sh: &mut Shared<'_>,
        key: SessionKey,
        nsp: &str,
        id: Option<u64>,
        data: PacketData,
        attachments: Vec<Bytes>,
        admitted: Option<SocketId>,
    ) {
        let socket = admitted.or_else(|| self.socket_of(key, nsp));
        match data {
            PacketData::Connect(auth) => {
                if socket.is_some() {
                    return;
                }
                if !self.app.has_namespace(nsp) {
                    connect_refused(sh, key, ConnectRefusal::InvalidNamespace);
                    let text = packet::encode(
                        PacketType::ConnectError,
                        nsp,
                        0,
                        None,
                        Some(&serde_json::json!({"message": "Invalid namespace"})),
                    );
                    send_packet(sh, key, text, &[]);
                    return;
                }
                let handshake = self
                    .state
                    .clients
                    .get(&key)
                    .map(|c| c.handshake.clone())
                    .unwrap_or_default();
                let req = ConnectRequest {
                    nsp,
                    auth: auth.as_ref(),
                    handshake: &handshake,
                };
                self.state.authorizing = Some(key);
                let mut ctx = Self::ctx(sh, &mut self.state);
                let authorized = self.app.authorize(&mut ctx, &req);
                self.state.authorizing = None;
                let accepted = match authorized {
                    Ok(accepted) => accepted,
                    Err(data) => {
                        connect_refused(sh, key, ConnectRefusal::Unauthorized);
                        let text =
                            packet::encode(PacketType::ConnectError, nsp, 0, None, Some(&data));
                        send_packet(sh, key, text, &[]);
                        return;
                    }
                };
                self.state.next_socket += 1;
                let socket = SocketId(self.state.next_socket);
                let sid = new_sid(&mut *sh.ids);
                let text = packet::encode(
                    PacketType::Connect,
                    nsp,
                    0,
                    None,
                    Some(&serde_json::json!({"sid": sid})),
                );
                send_packet(sh, key, text, &[]);
                sh.stats.connects += 1;
                sh.notice(Notice::Connected { session: key });
                let client = self
                    .state
                    .clients
                    .get_mut(&key)
                    .expect("a session's client lives until on_close");
                client.sockets.push((nsp.to_owned(), socket));
                client.connect_deadline = None;
                self.state.sockets.insert(
                    socket,
                    Socket {
                        session: key,
                        nsp: nsp.to_owned(),
                        sid,
                        rooms: HashSet::new(),
                        next_ack: 0,
                    },
                );
                self.app
                    .on_connect(&mut Self::ctx(sh, &mut self.state), socket, accepted);
            }
            PacketData::Disconnect => {
                if let Some(socket) = socket {
                    remove_socket(&mut self.state, socket);
                    let mut ctx = Self::ctx(sh, &mut self.state);
                    self.app.on_disconnect(
                        &mut ctx,
                        socket,
                        DisconnectReason::ClientNamespaceDisconnect,
                    );
                }
            }
            PacketData::Event(name, args) => {
                if let Some(socket) = socket {
                    if admitted.is_none() && !self.admit(sh, key, socket, &name, id) {
                        return;
                    }
                    let mut ctx = Self::ctx(sh, &mut self.state);
                    self.app.on_event(
                        &mut ctx,
                        socket,
                        Event {
                            name,
                            args,
                            attachments,
                            ack: id,
                        },
                    );
                }
            }
            PacketData::Ack(args) => {
                if let (Some(socket), Some(id)) = (socket, id) {
                    let asked = self
                        .state
                        .sockets
                        .get(&socket)
                        .is_some_and(|s| id < s.next_ack);
                    if asked {
                        let mut ctx = Self::ctx(sh, &mut self.state);
                        self.app.on_ack(&mut ctx, socket, id, args, attachments);
                    }
                }
            }
        }
    }

    fn handle_binary(
        &mut self,
        sh: &mut Shared<'_>,
        key: SessionKey,
        data: Bytes,
    ) -> Result<(), Violation> {
        let max = sh.max_payload;
        let client = self
            .state
            .clients
            .get_mut(&key)
            .expect("a session's client lives until on_close");
        let Some(partial) = client.partial.as_mut() else {
            return Err(Violation::AttachmentOutOfTurn);
        };
        if partial.bytes + data.len() > max {
            return Err(Violation::AttachmentsTooLarge);
        }
        if partial.push(data) {
            let p = client.partial.take().expect("checked above");
            self.dispatch(sh, key, &p.nsp, p.id, p.data, p.attachments, None);
        }
        Ok(())
    }
}

impl<A: Application> Upper for SocketIo<A> {
    fn on_open(&mut self, sh: &mut Shared<'_>, key: SessionKey, handshake: Handshake) {
        let deadline = sh.now + self.config.connect_timeout;
        self.state.clients.insert(
            key,
            Client {
                handshake,
                sockets: Vec::new(),
                partial: None,
                connect_deadline: Some(deadline),
            },
        );
        self.state.timers.push(deadline, key);
    }

    fn on_message(&mut self, sh: &mut Shared<'_>, key: SessionKey, data: Data<'_>) {
        let r = match data {
            Data::Text(t) => self.handle_text(sh, key, t),
            Data::Binary(b) => self.handle_binary(sh, key, b),
        };
        if let Err(violation) = r {
            sh.push(Command::Close {
                key,
                reason: CloseReason::ProtocolError(violation),
            });
        }
    }

    fn on_close(&mut self, sh: &mut Shared<'_>, key: SessionKey, reason: CloseReason) {
        let Some(client) = self.state.clients.remove(&key) else {
            return;
        };
        for (_, socket) in client.sockets {
            remove_socket(&mut self.state, socket);
            let mut ctx = Self::ctx(sh, &mut self.state);
            self.app
                .on_disconnect(&mut ctx, socket, DisconnectReason::Transport(reason));
        }
    }

    fn on_store_reply(&mut self, sh: &mut Shared<'_>, op: OpId, reply: StoreReply) {
        let mut ctx = Self::ctx(sh, &mut self.state);
        self.app.on_store_reply(&mut ctx, op, reply);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let clients = &self.state.clients;
        let mine = self.state.timers.next(|t, key| {
            clients
                .get(key)
                .is_some_and(|c| c.connect_deadline == Some(t))
        });
        [mine, self.app.poll_timeout()].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, sh: &mut Shared<'_>) {
        while let Some((t, key)) = self.state.timers.pop_due(sh.now) {
            let due = self
                .state
                .clients
                .get(&key)
                .is_some_and(|c| c.connect_deadline == Some(t) && c.sockets.is_empty());
            if due {
                sh.push(Command::Close {
                    key,
                    reason: CloseReason::ServerClose,
                });
            }
        }
        let mut ctx = Self::ctx(sh, &mut self.state);
        self.app.handle_timeout(&mut ctx);
    }

    fn drain(&mut self, sh: &mut Shared<'_>) {
        let mut ctx = Self::ctx(sh, &mut self.state);
        self.app.drain(&mut ctx);
    }

    fn busy(&self) -> bool {
        self.app.busy()
    }
}
