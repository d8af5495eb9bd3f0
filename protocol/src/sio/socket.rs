//! Every transition of Socket.IO clients and sockets lives here: CONNECT and
//! its refusal, events, acks, binary reassembly, rooms, connect timeouts.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexSet;
use serde::Serialize;
use serde_json::Value;

use super::packet::{self, PacketData, PacketType, Partial};
use super::recovery::{Live, Log, RecoveryConfig, Sessions, Target, republish_every};
use super::seen::Seen;
use crate::bus::Word;
use crate::bus::{Entry, Topic};
use crate::cluster::sessions::Remote;
use crate::cluster::{ALIVE_EVERY, ClusterConfig, Heard, Joined};
use crate::deadlines::Deadlines;
use crate::eio::{CloseReason, Data, Handshake, SessionKey, Violation};
use crate::ids::{IdGenerator, IntHasher, IntMap, new_sid};
use crate::node::{Broadcast, Command, Frame, OpId, Shared, Upper};
use crate::stats::{AuthFailure, ConnectRefusal, EventName, Notice, RefusalCode};
use crate::store::{Place, StoreCommand, StoreReply};

pub use super::id::SocketId;

/// Socket.IO settings.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// How long a client may stay without joining any namespace.
    pub connect_timeout: Duration,
    /// Connection state recovery; off when `None`, as in socket.io (with
    /// it on, every recoverable event carries its offset as an extra last
    /// argument, which a handler with a fixed number of parameters may not
    /// expect).
    pub recovery: Option<RecoveryConfig>,
    /// One node of several: room emits and what the application tells
    /// the others go through the cluster's bus ([`crate::Output::Publish`],
    /// [`crate::Input::Cluster`]).
    pub cluster: Option<ClusterConfig>,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            connect_timeout: Duration::from_secs(45),
            recovery: None,
            cluster: None,
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
    /// Its client came back through connection state recovery on another
    /// connection while this one was still open (its transport had died
    /// unnoticed): this one is closed, the socket lives on there.
    Recovered,
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
    /// stash in between. With recovery on, a socket's is kept with its
    /// session, and a client coming back as that socket must bring a
    /// CONNECT that authorizes to an equal one (the same user, say).
    type Socket: Clone + PartialEq + Serialize + Send + 'static;
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
    /// A socket came back through connection state recovery: same sid,
    /// its rooms already restored ([`Ctx::rooms`]) and the events it missed
    /// already queued. By default, [`Application::on_connect`].
    fn on_recover(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, data: Self::Socket) {
        self.on_connect(ctx, socket, data);
    }
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
    /// Whether an emit made with [`Ctx::broadcast_tracked`] (the ticket it
    /// returned) reached at least one socket, on any node; told once per
    /// ticket, after the call that made it (in a cluster, once a node says
    /// it handed it on, or [`HANDED_WITHIN`](crate::cluster::order::HANDED_WITHIN)
    /// later with `false`).
    fn on_handed(&mut self, _ctx: &mut Ctx<'_>, _ticket: u64, _handed: bool) {}
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
    /// With recovery on: the events sent with an offset.
    log: Option<Log>,
    /// With recovery on: live sockets' pids and kept sessions, with what
    /// the application knew of each (its `Socket`, erased here so that
    /// [`Ctx`] needs no type parameter).
    sessions: Option<Sessions<Box<dyn Any + Send>>>,
    /// Tracked emits' outcomes, for [`Application::on_handed`].
    handed: Vec<(u64, bool)>,
    /// Each socket by its sid.
    by_sid: HashMap<String, SocketId>,
    /// In a cluster with recovery on: when this node next looks for
    /// sessions whose state is to go on the bus again.
    next_republish: Option<Instant>,
    next_ticket: u64,
    /// The keys of the keyed room emits handed on lately.
    seen: Seen,
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

    /// The host's wall clock at [`Ctx::now`] (milliseconds since the Unix
    /// epoch), if the host reads it for the node
    /// ([`crate::Node::set_wall_clock`]).
    pub fn unix_ms(&self) -> Option<i64> {
        self.sh.unix_ms
    }

    /// In a cluster: whether what this node publishes is backed up in its
    /// host ([`crate::Node::set_bus_backlog`]).
    pub fn bus_backlogged(&self) -> bool {
        self.sh.bus_backlogged
    }

    /// Whether this node is one of a cluster.
    pub fn in_cluster(&self) -> bool {
        self.sh.order.is_some()
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

    /// `recoverable`: an event (with no ack id) that, with recovery on,
    /// carries an offset and is logged for the socket.
    #[allow(clippy::too_many_arguments)] // one packet's parts, and how to keep it
    fn emit_packet<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        kind: PacketType,
        id: Option<u64>,
        data: &T,
        attachments: &[Bytes],
        recoverable: bool,
    ) -> bool {
        let Some(s) = self.state.sockets.get(&socket) else {
            self.log_for_gone(socket, kind, id, data, attachments, recoverable);
            return false;
        };
        let kind = match (kind, attachments.is_empty()) {
            (PacketType::Event, false) => PacketType::BinaryEvent,
            (PacketType::Ack, false) => PacketType::BinaryAck,
            (k, _) => k,
        };
        let mut text = packet::encode(kind, &s.nsp, attachments.len(), id, Some(data));
        let name = matches!(kind, PacketType::Event | PacketType::BinaryEvent)
            .then(|| EventName::of(packet::event_name(&text).unwrap_or("")));
        let recoverable = recoverable && name.is_some() && id.is_none();
        if recoverable && self.state.log.is_some() && self.sh.order.is_some() {
            // Through the bus, so that every node logs it (the socket may
            // come back to another): it reaches the socket from there.
            let (sid, nsp) = (s.sid.clone(), s.nsp.clone());
            publish_to_socket(&mut self.sh, &nsp, sid, text, attachments, false);
            return true;
        }
        if let Some(log) = &mut self.state.log
            && recoverable
        {
            let target = Target::Socket(s.sid.clone());
            text = log.push(self.sh.now, &s.nsp, target, &text, attachments);
        }
        send_packet(&mut self.sh, s.session, text, attachments);
        if let Some(name) = name {
            self.sh.stats.events_out[name as usize] += 1;
        }
        true
    }

    /// An event for a socket whose transport ended and whose session is
    /// kept: logged, for it to come back to.
    fn log_for_gone<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        kind: PacketType,
        id: Option<u64>,
        data: &T,
        attachments: &[Bytes],
        recoverable: bool,
    ) {
        let (Some(log), Some(sessions)) = (&mut self.state.log, &self.state.sessions) else {
            return;
        };
        let Some((nsp, sid)) = sessions.gone(socket) else {
            return;
        };
        if !(recoverable && kind == PacketType::Event && id.is_none()) {
            return;
        }
        let kind = match attachments.is_empty() {
            true => PacketType::Event,
            false => PacketType::BinaryEvent,
        };
        let text = packet::encode(kind, nsp, attachments.len(), None, Some(data));
        match self.sh.order.is_some() {
            // Every node logs it: the socket may come back to any.
            true => {
                let (nsp, sid) = (nsp.to_owned(), sid.to_owned());
                publish_to_socket(&mut self.sh, &nsp, sid, text, attachments, false);
            }
            false => {
                log.push(
                    self.sh.now,
                    nsp,
                    Target::Socket(sid.to_owned()),
                    &text,
                    attachments,
                );
            }
        }
    }

    /// Emits an event; `data` serializes to the array `[name, ...args]`.
    /// With recovery on, it carries an offset and is replayed to the socket
    /// if it comes back having missed it.
    pub fn emit<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        data: &T,
        attachments: &[Bytes],
    ) -> bool {
        self.emit_packet(socket, PacketType::Event, None, data, attachments, true)
    }

    /// Emits an event that is never replayed (nor carries an offset) with
    /// recovery on: socket.io's `volatile`, for what answers the client's
    /// own event (an `error`, say), as an ack does.
    pub fn emit_volatile<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        data: &T,
        attachments: &[Bytes],
    ) -> bool {
        self.emit_packet(socket, PacketType::Event, None, data, attachments, false)
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
        self.emit_packet(
            socket,
            PacketType::Event,
            Some(id),
            data,
            attachments,
            false,
        )
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
        self.emit_packet(socket, PacketType::Ack, Some(id), args, attachments, false)
    }

    /// [`Ctx::ack`], but in a cluster through the bus, after everything this
    /// node published before it: the client hears the ack only once those
    /// are on the bus, where a node that dies after the ack cannot lose
    /// them (a `chat:send`'s ack after its message's broadcast). It reaches
    /// the socket wherever the bus finds it. Alone, the same as
    /// [`Ctx::ack`].
    pub fn ack_after_published<T: Serialize + ?Sized>(
        &mut self,
        socket: SocketId,
        id: u64,
        args: &T,
    ) -> bool {
        let (Some(s), true) = (self.state.sockets.get(&socket), self.sh.order.is_some()) else {
            return self.ack(socket, id, args, &[]);
        };
        let text = packet::encode(PacketType::Ack, &s.nsp, 0, Some(id), Some(args));
        let (sid, nsp) = (s.sid.clone(), s.nsp.clone());
        publish_to_socket(&mut self.sh, &nsp, sid, text, &[], true);
        true
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
        enter_room(&mut self.sh, &mut self.state.rooms, &s.nsp, room, socket);
        publish_session(&mut self.sh, self.state, socket);
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
        leave_room(&mut self.sh, &mut self.state.rooms, &s.nsp, room, socket);
        publish_session(&mut self.sh, self.state, socket);
        true
    }

    /// The rooms a socket is in, in no order.
    pub fn rooms(&self, socket: SocketId) -> impl Iterator<Item = &str> {
        self.state
            .sockets
            .get(&socket)
            .into_iter()
            .flat_map(|s| s.rooms.iter().map(String::as_str))
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
    /// for the WebSocket ones. In a cluster it goes through the bus and
    /// reaches the room's members on every node, this one's included, as
    /// it comes back.
    pub fn broadcast<T: Serialize + ?Sized>(
        &mut self,
        nsp: &str,
        room: &str,
        except: Option<SocketId>,
        data: &T,
    ) {
        self.emit_to_room(nsp, room, except, data, false, Keyed::default());
    }

    /// [`Ctx::broadcast`], and [`Application::on_handed`] later says, under
    /// the ticket returned, whether any socket got it.
    pub fn broadcast_tracked<T: Serialize + ?Sized>(
        &mut self,
        nsp: &str,
        room: &str,
        except: Option<SocketId>,
        data: &T,
    ) -> u64 {
        self.emit_to_room(nsp, room, except, data, true, Keyed::default())
    }

    /// [`Ctx::broadcast_tracked`] of what `key` names (a message's id): a
    /// node that handed an emit with this key to the room lately hands
    /// this one to no one, so it may be published again when it cannot be
    /// told that it went out. In a cluster, with `place`, it reaches the
    /// room in that place's order on every node.
    pub fn broadcast_keyed<T: Serialize + ?Sized>(
        &mut self,
        nsp: &str,
        room: &str,
        except: Option<SocketId>,
        data: &T,
        key: &str,
        place: Option<Placed<'_>>,
    ) -> u64 {
        let keyed = Keyed {
            key: Some(key.to_owned()),
            placed: place.map(|p| p.ticket.to_owned()),
            belongs: place.and_then(|p| p.belongs),
        };
        self.emit_to_room(nsp, room, except, data, true, keyed)
    }

    /// In a cluster: a bus entry that, once on the bus, holds a place in
    /// `room`'s order under `ticket` (a [`crate::store::TakeToken::place`]),
    /// for the [`Ctx::broadcast_keyed`] with that place (or
    /// [`Ctx::abandon_place`]). `None` alone.
    pub fn place_entry(&self, nsp: &str, room: &str, ticket: &str) -> Option<Entry> {
        let order = self.sh.order.as_ref()?;
        let place = Word::Place {
            from: order.node.clone(),
            nsp: nsp.to_owned(),
            room: room.to_owned(),
            ticket: ticket.to_owned(),
        };
        // Appended by Redis with the take, not published by this node: an
        // entry of no node's numbering.
        let mut entry = order.entry(&place);
        entry.bytes = crate::bus::seal(&entry.bytes);
        Some(entry)
    }

    /// The place `ticket` that the bus took will have no broadcast: the
    /// room's later ones need not wait for it.
    pub fn abandon_place(&mut self, nsp: &str, room: &str, ticket: &str) {
        let word = Word::Abandon {
            nsp: nsp.to_owned(),
            room: room.to_owned(),
            ticket: ticket.to_owned(),
        };
        self.sh.publish(&word);
    }

    fn emit_to_room<T: Serialize + ?Sized>(
        &mut self,
        nsp: &str,
        room: &str,
        except: Option<SocketId>,
        data: &T,
        track: bool,
        keyed: Keyed,
    ) -> u64 {
        let text = packet::encode(PacketType::Event, nsp, 0, None, Some(data));
        let except: Vec<String> = except
            .and_then(|id| match self.state.sockets.get(&id) {
                Some(s) => Some(s.sid.clone()),
                // Gone, but it may come back: it is still left out.
                None => Some(self.state.sessions.as_ref()?.gone(id)?.1.to_owned()),
            })
            .into_iter()
            .collect();
        if let Some(order) = self.sh.order.as_deref_mut() {
            let seq = order.next(self.sh.now, track);
            let message = Word::Broadcast {
                from: order.node.clone(),
                seq,
                nsp: nsp.to_owned(),
                room: room.to_owned(),
                except,
                text: String::from_utf8(text.to_vec()).expect("packets are JSON text"),
                track,
                to: None,
                volatile: false,
                attachments: Vec::new(),
                placed: keyed.placed,
                key: keyed.key,
                belongs: keyed.belongs,
            };
            self.sh.publish(&message);
            return seq;
        }
        self.state.next_ticket += 1;
        let ticket = self.state.next_ticket;
        let n = match keyed.key {
            Some(key) if !self.state.seen.first(&key) => 0,
            _ => deliver(&mut self.sh, self.state, nsp, room, except, text, None),
        };
        if track {
            self.state.handed.push((ticket, n > 0));
        }
        ticket
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
        remove_socket(&mut self.sh, self.state, socket, None);
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

/// What names a room emit, and its place in its room's order.
#[derive(Debug, Default)]
struct Keyed {
    key: Option<String>,
    placed: Option<String>,
    belongs: Option<Place>,
}

/// A broadcast's place in its room's order ([`Ctx::broadcast_keyed`]).
#[derive(Debug, Clone, Copy)]
pub struct Placed<'a> {
    /// The ticket of the [`Ctx::place_entry`] the bus took for it.
    pub ticket: &'a str,
    /// Where on the bus an earlier place of the same message is (its first
    /// send's, whose store write it is, when this is a retry of it): the
    /// broadcast fills that place if the room still holds it.
    pub belongs: Option<Place>,
}

/// Hands a room emit to this node's members of the room but the sockets
/// with sids in `except` (logged first, with its offset, when recovery is
/// on: a kept session in the room may come back for it); returns how many
/// it was for.
fn deliver(
    sh: &mut Shared<'_>,
    state: &mut State,
    nsp: &str,
    room: &str,
    except: Vec<String>,
    mut text: Bytes,
    global: Option<(String, u64)>,
) -> usize {
    let name = EventName::of(packet::event_name(&text).unwrap_or(""));
    if let Some(log) = &mut state.log {
        let target = Target::Room {
            room: room.to_owned(),
            except: except.clone(),
        };
        text = log.push_global(sh.now, nsp, target, &text, &[], global);
    }
    let Some(members) = state.rooms.get(nsp).and_then(|r| r.get(room)) else {
        return 0;
    };
    let sockets = &state.sockets;
    let keys: Vec<SessionKey> = members
        .iter()
        .filter_map(|id| sockets.get(id))
        .filter(|s| !except.contains(&s.sid))
        .map(|s| s.session)
        .collect();
    let n = keys.len();
    if n == 0 {
        return 0;
    }
    sh.push(Command::Broadcast {
        keys,
        name,
        broadcast: Broadcast {
            nsp: nsp.to_owned(),
            room: room.to_owned(),
            except,
            frame: Frame::Text(text),
            conns: Vec::new(),
        },
    });
    n
}

/// Publishes a recoverable emit to one socket on the bus (every node logs
/// it; the one holding the socket hands it on).
fn publish_to_socket(
    sh: &mut Shared<'_>,
    nsp: &str,
    sid: String,
    text: Bytes,
    attachments: &[Bytes],
    volatile: bool,
) {
    use base64::Engine as _;
    let Some(order) = sh.order.as_deref_mut() else {
        return;
    };
    let seq = order.next(sh.now, false);
    order.last_to_socket = seq;
    let message = Word::Broadcast {
        from: order.node.clone(),
        seq,
        nsp: nsp.to_owned(),
        room: String::new(),
        except: Vec::new(),
        text: String::from_utf8(text.to_vec()).expect("packets are JSON text"),
        track: false,
        to: Some(sid),
        volatile,
        placed: None,
        key: None,
        belongs: None,
        attachments: attachments
            .iter()
            .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
            .collect(),
    };
    sh.publish(&message);
}

/// A bus message's attachments, from base64; `None` if one is not base64
/// (the message is not ours to deliver).
fn decode_attachments(encoded: &[String]) -> Option<Vec<Bytes>> {
    use base64::Engine as _;
    encoded
        .iter()
        .map(|a| {
            base64::engine::general_purpose::STANDARD
                .decode(a)
                .ok()
                .map(Bytes::from)
        })
        .collect()
}

/// In a cluster with recovery on: tells the other nodes a socket's session
/// as it is now, so that its client can come back to any of them, even if
/// this node dies.
fn publish_session(sh: &mut Shared<'_>, state: &mut State, socket: SocketId) {
    let (Some(node), Some(sessions)) = (sh.node_name(), &mut state.sessions) else {
        return;
    };
    let (Some(s), Some(live)) = (state.sockets.get(&socket), sessions.live.get_mut(&socket)) else {
        return;
    };
    let message = Word::Session {
        node: node.to_owned(),
        pid: live.pid.clone(),
        sid: s.sid.clone(),
        nsp: s.nsp.clone(),
        rooms: s.rooms.iter().cloned().collect(),
        data: live.json.clone().unwrap_or(Value::Null),
    };
    live.published = Some(sh.now);
    sh.publish(&message);
}

/// What a recovered socket gets back: its sid, pid and rooms, and the
/// events it missed.
struct Restored {
    sid: String,
    pid: String,
    rooms: HashSet<String>,
    missed: Vec<(Bytes, Vec<Bytes>)>,
}

type Members = IndexSet<SocketId, std::hash::BuildHasherDefault<IntHasher>>;
type Rooms = HashMap<String, HashMap<String, Members>>;

/// Puts a socket in a room; in a cluster, the room's first member here
/// asks the node to read its topic (with recovery off the node's end of
/// the bus has its host read it: [`crate::cluster::Endpoint::reading`]).
fn enter_room(sh: &mut Shared<'_>, rooms: &mut Rooms, nsp: &str, room: &str, socket: SocketId) {
    let of_nsp = match rooms.get_mut(nsp) {
        Some(r) => r,
        None => rooms.entry(nsp.to_owned()).or_default(),
    };
    match of_nsp.get_mut(room) {
        Some(members) => {
            members.insert(socket);
        }
        None => {
            of_nsp.entry(room.to_owned()).or_default().insert(socket);
            if sh.order.is_some() {
                sh.push(Command::Subscribe(room_topic(nsp, room)));
            }
        }
    }
}

/// A room's topic on the bus.
fn room_topic(nsp: &str, room: &str) -> Topic {
    Topic::Room {
        nsp: nsp.to_owned(),
        room: room.to_owned(),
    }
}

/// Takes a socket out of a room; in a cluster, the room's last member
/// here leaving, the node may stop reading its topic.
fn leave_room(sh: &mut Shared<'_>, rooms: &mut Rooms, nsp: &str, room: &str, socket: SocketId) {
    let Some(of_nsp) = rooms.get_mut(nsp) else {
        return;
    };
    if let Some(set) = of_nsp.get_mut(room) {
        set.swap_remove(&socket);
        if set.is_empty() {
            of_nsp.remove(room);
            if sh.order.is_some() {
                sh.push(Command::Unsubscribe(room_topic(nsp, room)));
            }
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

/// Removes a socket from every table. `kept`: its transport ended at that
/// time, and (with recovery on) its session is kept for it to come back to;
/// otherwise it left for good.
fn remove_socket(sh: &mut Shared<'_>, state: &mut State, socket: SocketId, kept: Option<Instant>) {
    let Some(s) = state.sockets.remove(&socket) else {
        return;
    };
    if state.by_sid.get(&s.sid) == Some(&socket) {
        state.by_sid.remove(&s.sid);
    }
    if let Some(live) = state.sessions.as_ref().and_then(|x| x.live.get(&socket)) {
        let gone = Word::Gone {
            pid: live.pid.clone(),
            kept: kept.is_some(),
        };
        sh.publish(&gone);
    }
    for room in &s.rooms {
        leave_room(sh, &mut state.rooms, &s.nsp, room, socket);
    }
    if let Some(c) = state.clients.get_mut(&s.session) {
        c.sockets.retain(|(_, id)| *id != socket);
    }
    if let Some(sessions) = &mut state.sessions {
        match kept {
            Some(now) => sessions.keep(now, socket, s.sid, s.nsp, s.rooms),
            None => {
                sessions.forget(socket);
            }
        }
    }
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
        let state = State {
            log: config.recovery.map(Log::new),
            sessions: config.recovery.map(Sessions::new),
            ..State::default()
        };
        SocketIo { config, app, state }
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// How many sockets are connected.
    pub fn socket_count(&self) -> usize {
        self.state.sockets.len()
    }

    /// How many sessions of sockets whose transport ended are kept for
    /// connection state recovery.
    pub fn kept_sessions(&self) -> usize {
        self.state.sessions.as_ref().map_or(0, Sessions::kept)
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
                self.connect(sh, key, nsp, auth.as_ref(), accepted);
            }
            PacketData::Disconnect => {
                if let Some(socket) = socket {
                    remove_socket(sh, &mut self.state, socket, None);
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

    /// Opens an accepted socket: as it was, if its CONNECT names a session
    /// to recover that it may have back; else as new.
    fn connect(
        &mut self,
        sh: &mut Shared<'_>,
        key: SessionKey,
        nsp: &str,
        auth: Option<&Value>,
        accepted: A::Socket,
    ) {
        let restored = self.restore(sh, nsp, auth, &accepted);
        self.state.next_socket += 1;
        let socket = SocketId::new(self.state.next_socket);
        let (sid, pid, rooms, missed) = match restored {
            Some(r) => (r.sid, Some(r.pid), r.rooms, Some(r.missed)),
            None => {
                let sid = new_sid(&mut *sh.ids);
                let pid = self.state.sessions.is_some().then(|| new_sid(&mut *sh.ids));
                (sid, pid, HashSet::new(), None)
            }
        };
        let reply = match &pid {
            Some(pid) => serde_json::json!({"sid": sid, "pid": pid}),
            None => serde_json::json!({"sid": sid}),
        };
        let text = packet::encode(PacketType::Connect, nsp, 0, None, Some(&reply));
        send_packet(sh, key, text, &[]);
        sh.stats.connects += 1;
        sh.notice(Notice::Connected { session: key });
        for (text, attachments) in missed.iter().flatten() {
            let name = EventName::of(packet::event_name(text).unwrap_or(""));
            sh.stats.events_out[name as usize] += 1;
            send_packet(sh, key, text.clone(), attachments);
        }
        let client = self
            .state
            .clients
            .get_mut(&key)
            .expect("a session's client lives until on_close");
        client.sockets.push((nsp.to_owned(), socket));
        client.connect_deadline = None;
        for room in &rooms {
            enter_room(sh, &mut self.state.rooms, nsp, room, socket);
        }
        self.state.by_sid.insert(sid.clone(), socket);
        self.state.sockets.insert(
            socket,
            Socket {
                session: key,
                nsp: nsp.to_owned(),
                sid,
                rooms,
                next_ack: 0,
            },
        );
        if let (Some(sessions), Some(log), Some(pid)) =
            (&mut self.state.sessions, &self.state.log, pid)
        {
            let json = sh
                .order
                .is_some()
                .then(|| serde_json::to_value(&accepted).unwrap_or(Value::Null));
            let live = Live {
                pid,
                data: Box::new(accepted.clone()) as Box<dyn Any + Send>,
                // Everything logged so far reached it, or was replayed.
                from: log.next(),
                json,
                published: None,
            };
            sessions.connected(socket, live);
        }
        let mut ctx = Self::ctx(sh, &mut self.state);
        match missed {
            Some(_) => self.app.on_recover(&mut ctx, socket, accepted),
            None => self.app.on_connect(&mut ctx, socket, accepted),
        }
        // Its rooms as the application left them.
        publish_session(sh, &mut self.state, socket);
    }

    /// The session a CONNECT's auth asks back (`pid`, and the `offset` of
    /// the last event the client got), with the events it missed; `None`
    /// when recovery is off, or the session is unknown, out of its window,
    /// of another namespace or application identity, or its offset is not
    /// one the log holds all that followed of. A session still held by a
    /// live socket here (whose transport died unnoticed) is taken from it;
    /// in a cluster, one another node holds or held is taken over from it
    /// (which lets it go).
    fn restore(
        &mut self,
        sh: &mut Shared<'_>,
        nsp: &str,
        auth: Option<&Value>,
        accepted: &A::Socket,
    ) -> Option<Restored> {
        let sessions = self.state.sessions.as_ref()?;
        let pid = auth?.get("pid")?.as_str()?;
        let same = |data: &Box<dyn Any + Send>| data.downcast_ref::<A::Socket>() == Some(accepted);
        if let Some(&old) = sessions.live_pids.get(pid) {
            let live = sessions.live.get(&old)?;
            let in_nsp = self.state.sockets.get(&old).is_some_and(|s| s.nsp == nsp);
            if !(same(&live.data) && in_nsp) {
                return None;
            }
            self.take_over(sh, old);
        }
        let sessions = self.state.sessions.as_ref()?;
        let log = self.state.log.as_ref()?;
        let offset = match auth?.get("offset") {
            None | Some(Value::Null) => None,
            Some(Value::String(o)) => Some(o.as_str()),
            Some(_) => return None,
        };
        let Some(kept) = sessions.get(sh.now, pid) else {
            return self.restore_remote(sh, nsp, pid, offset, accepted);
        };
        if kept.nsp != nsp || !same(&kept.data) {
            return None;
        }
        let from = match offset {
            None => kept.from,
            Some(o) => log.after(o)?,
        };
        let missed = log.since(from, nsp, &kept.sid, &kept.rooms)?;
        let kept = self.state.sessions.as_mut()?.take(sh.now, pid)?;
        Some(Restored {
            sid: kept.sid,
            pid: pid.to_owned(),
            rooms: kept.rooms,
            missed,
        })
    }

    /// [`Self::restore`] of a session another node of the cluster holds or
    /// held (it may have died): from this node's log, which holds the same
    /// events as every node's.
    fn restore_remote(
        &mut self,
        sh: &mut Shared<'_>,
        nsp: &str,
        pid: &str,
        offset: Option<&str>,
        accepted: &A::Socket,
    ) -> Option<Restored> {
        let order = sh.order.as_ref()?;
        if order.catching_up {
            return None;
        }
        let me = order.node.clone();
        let log = self.state.log.as_ref()?;
        let r = sh.remotes.as_ref()?.get(sh.now, pid)?;
        if r.nsp != nsp || r.node == me {
            return None;
        }
        if serde_json::to_value(accepted).ok()? != r.data {
            return None;
        }
        let from = match offset {
            Some(o) => log.after(o)?,
            None => r.from,
        };
        let missed = log.since(from, nsp, &r.sid, &r.rooms)?;
        let restored = Restored {
            sid: r.sid.clone(),
            pid: pid.to_owned(),
            rooms: r.rooms.clone(),
            missed,
        };
        let word = Word::TakenOver {
            by: me,
            pid: pid.to_owned(),
        };
        sh.publish(&word);
        sh.remotes.as_deref_mut()?.remove(pid);
        Some(restored)
    }

    /// Ends a live socket whose client came back on another connection:
    /// its session is kept (to be recovered at once) unless another node
    /// took it over, its own connection told DISCONNECT, and closed if
    /// nothing else is on it.
    fn take_over(&mut self, sh: &mut Shared<'_>, old: SocketId) {
        self.let_go(sh, old, Some(sh.now));
    }

    fn let_go(&mut self, sh: &mut Shared<'_>, old: SocketId, kept: Option<Instant>) {
        let Some(s) = self.state.sockets.get(&old) else {
            return;
        };
        let session = s.session;
        let text = packet::encode::<Value>(PacketType::Disconnect, &s.nsp, 0, None, None);
        send_packet(sh, session, text, &[]);
        remove_socket(sh, &mut self.state, old, kept);
        let mut ctx = Self::ctx(sh, &mut self.state);
        self.app
            .on_disconnect(&mut ctx, old, DisconnectReason::Recovered);
        if self
            .state
            .clients
            .get(&session)
            .is_some_and(|c| c.sockets.is_empty())
        {
            sh.push(Command::Close {
                key: session,
                reason: CloseReason::ServerClose,
            });
        }
    }

    /// In a cluster with recovery on, every [`ALIVE_EVERY`]: the state of
    /// sessions that has not been on the bus for a while goes on it again
    /// (a node that starts reads only the bus's recent past).
    fn republish(&mut self, sh: &mut Shared<'_>) {
        if sh.order.is_none() || self.state.next_republish.is_some_and(|t| sh.now < t) {
            return;
        }
        self.state.next_republish = Some(sh.now + ALIVE_EVERY);
        let Some(sessions) = &mut self.state.sessions else {
            return;
        };
        let every = republish_every(sessions.config.window);
        let due: Vec<SocketId> = sessions
            .live
            .iter()
            .filter(|(_, l)| l.published.is_some_and(|t| t + every <= sh.now))
            .map(|(&id, _)| id)
            .collect();
        for socket in due {
            publish_session(sh, &mut self.state, socket);
        }
    }

    /// Tells the application the outcome of its tracked emits.
    fn flush_handed(&mut self, sh: &mut Shared<'_>) {
        while !self.state.handed.is_empty() {
            for (ticket, handed) in std::mem::take(&mut self.state.handed) {
                let mut ctx = Self::ctx(sh, &mut self.state);
                self.app.on_handed(&mut ctx, ticket, handed);
            }
        }
    }

    /// A word from the bus, once the node's end of it let it through
    /// ([`crate::cluster::Endpoint::take`]): a room emit for this node's
    /// members (or an emit to one of its sockets), or (with recovery on)
    /// where other nodes' sessions stand.
    ///
    /// One published `past` ago, before this node joined, only tells what
    /// to remember: its emits are logged (for sessions to recover), never
    /// handed to a socket.
    fn on_word(&mut self, sh: &mut Shared<'_>, word: Word, past: Option<Duration>) {
        match word {
            word @ Word::Broadcast { .. } => self.broadcast_from_bus(sh, word, past),
            // Another node's session (the node's end keeps only those).
            Word::Session {
                node,
                pid,
                sid,
                nsp,
                rooms,
                data,
            } => {
                let remote = Remote {
                    sid,
                    nsp,
                    rooms: rooms.into_iter().collect(),
                    data,
                    node,
                    until: None,
                    from: self.state.log.as_ref().map_or(0, Log::next),
                };
                if let Some(remotes) = sh.remotes.as_deref_mut() {
                    remotes.state(pid, remote);
                }
            }
            // Another node took a session over: its client is back there,
            // and this node lets it go for good.
            Word::TakenOver { pid, .. } => {
                let Some(sessions) = &mut self.state.sessions else {
                    return;
                };
                if let Some(&old) = sessions.live_pids.get(&pid) {
                    self.let_go(sh, old, None);
                } else {
                    // Kept here (its transport ended): it is not coming back here.
                    sessions.take(sh.now, &pid);
                }
            }
            // The rooms' orders, words of delivery, the ends of other
            // nodes' sessions and their liveness are the node's end of the
            // bus's, and so are words between two nodes about one session.
            _ => {}
        }
    }

    /// A room emit (or an emit to one socket) read from the bus, fresh and
    /// in its place: logged, handed to this node's sockets, and its
    /// delivery told to its node when it asked. One of the bus's `past`
    /// (read before this node joined) is only logged.
    fn broadcast_from_bus(&mut self, sh: &mut Shared<'_>, message: Word, past: Option<Duration>) {
        let Word::Broadcast {
            from,
            seq,
            nsp,
            room,
            except,
            text,
            track,
            to,
            volatile,
            attachments,
            placed: _,
            key,
            belongs: _,
        } = message
        else {
            return;
        };
        let at = past.map_or(sh.now, |age| sh.now.checked_sub(age).unwrap_or(sh.now));
        let Some(attachments) = decode_attachments(&attachments) else {
            sh.stats.bus_undecodable += 1;
            return;
        };
        if let Some(key) = &key
            && !self.state.seen.first(key)
        {
            return;
        }
        let Some(order) = sh.order.as_deref_mut() else {
            return;
        };
        if from == order.node {
            order.read_back = order.read_back.max(seq);
        }
        let global = Some((from.clone(), seq));
        if past.is_some() {
            if let Some(log) = &mut self.state.log
                && !volatile
            {
                let target = match to {
                    Some(sid) => Target::Socket(sid),
                    None => Target::Room { room, except },
                };
                log.push_global(at, &nsp, target, text.as_bytes(), &attachments, global);
            }
            return;
        }
        if let Some(sid) = to {
            let global = global.filter(|_| !volatile);
            self.hand_to_socket(sh, &nsp, sid, Bytes::from(text), &attachments, global);
            return;
        }
        let n = deliver(
            sh,
            &mut self.state,
            &nsp,
            &room,
            except,
            Bytes::from(text),
            global,
        );
        if !track || n == 0 {
            return;
        }
        let Some(order) = sh.order.as_deref_mut() else {
            return;
        };
        if from == order.node {
            if order.handed(seq) {
                self.state.handed.push((seq, true));
            }
        } else {
            // Told with the others of this batch, when the host has drained
            // what it fed.
            order.owe_handed(from, seq);
        }
    }

    /// An emit (or an ack) to one socket, from the bus: logged when it is
    /// recoverable (`global`, its place on the bus: for the socket to come
    /// back to, here or elsewhere), and handed to the socket if it is here.
    fn hand_to_socket(
        &mut self,
        sh: &mut Shared<'_>,
        nsp: &str,
        sid: String,
        text: Bytes,
        attachments: &[Bytes],
        global: Option<(String, u64)>,
    ) {
        let text = match (&mut self.state.log, global) {
            (Some(log), Some(global)) => {
                let target = Target::Socket(sid.clone());
                log.push_global(sh.now, nsp, target, &text, attachments, Some(global))
            }
            // Volatile (an ack), or recovery is off.
            _ => text,
        };
        let Some(s) = self
            .state
            .by_sid
            .get(&sid)
            .and_then(|id| self.state.sockets.get(id))
        else {
            return;
        };
        if s.nsp != nsp {
            return;
        }
        if let Some(name) = packet::event_name(&text) {
            sh.stats.events_out[EventName::of(name) as usize] += 1;
        }
        let session = s.session;
        send_packet(sh, session, text, attachments);
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
        self.flush_handed(sh);
    }

    fn on_close(&mut self, sh: &mut Shared<'_>, key: SessionKey, reason: CloseReason) {
        let Some(client) = self.state.clients.remove(&key) else {
            return;
        };
        // A socket whose client broke the protocol is not kept: it would
        // come back to break it again.
        let kept = (!matches!(reason, CloseReason::ProtocolError(_))).then_some(sh.now);
        for (_, socket) in client.sockets {
            remove_socket(sh, &mut self.state, socket, kept);
            let mut ctx = Self::ctx(sh, &mut self.state);
            self.app
                .on_disconnect(&mut ctx, socket, DisconnectReason::Transport(reason));
        }
        self.flush_handed(sh);
    }

    fn on_store_reply(&mut self, sh: &mut Shared<'_>, op: OpId, reply: StoreReply) {
        let mut ctx = Self::ctx(sh, &mut self.state);
        self.app.on_store_reply(&mut ctx, op, reply);
        self.flush_handed(sh);
    }

    fn on_cluster(&mut self, sh: &mut Shared<'_>, heard: Heard) {
        match heard {
            Heard::Word { word, past } => self.on_word(sh, word, past),
            Heard::Handed { seq, handed } => self.state.handed.push((seq, handed)),
        }
        self.flush_handed(sh);
    }

    /// What the log holds may have holes: no session recovers from before
    /// now (its client is told `recovered: false` and catches up from
    /// history), rather than come back with events missing.
    fn on_cluster_gap(&mut self, _sh: &mut Shared<'_>) {
        if let Some(log) = &mut self.state.log {
            log.lose_all();
        }
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let clients = &self.state.clients;
        let mine = self.state.timers.next(|t, key| {
            clients
                .get(key)
                .is_some_and(|c| c.connect_deadline == Some(t))
        });
        let log = self.state.log.as_ref().and_then(Log::poll_timeout);
        let kept = self
            .state
            .sessions
            .as_ref()
            .and_then(Sessions::poll_timeout);
        [
            mine,
            log,
            kept,
            self.state.next_republish,
            self.app.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
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
        if let Some(log) = &mut self.state.log {
            log.expire(sh.now);
        }
        if let Some(sessions) = &mut self.state.sessions {
            sessions.expire(sh.now);
        }
        self.republish(sh);
        let mut ctx = Self::ctx(sh, &mut self.state);
        self.app.handle_timeout(&mut ctx);
        self.flush_handed(sh);
    }

    fn drain(&mut self, sh: &mut Shared<'_>) {
        let mut ctx = Self::ctx(sh, &mut self.state);
        self.app.drain(&mut ctx);
        self.flush_handed(sh);
    }

    fn cluster(&self) -> Option<Joined<'_>> {
        let recovery = self.config.recovery.map(|r| (r.window, r.max_sessions));
        let node = self.config.cluster.as_ref()?.node.as_str();
        Some(Joined { node, recovery })
    }

    fn busy(&self) -> bool {
        self.app.busy()
    }
}
