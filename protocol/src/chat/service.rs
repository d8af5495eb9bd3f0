//! Every transition of the chat service lives here: connect and its token,
//! `chat:send` through the durable append to `chat:ack`, broadcasts,
//! delivery and read receipts, typing, rooms, retries, the rate limit and
//! the per-socket bounds (an event budget, a most chats).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Value, json};

use super::events::{ClientEvent, ErrorCode, ServerEvent, TOKEN_EXPIRED, UNAUTHORIZED};
use super::typing::{Started, Typing};
use super::validate::{self, Refusal, SendRequest};
use super::{MessageIds, WallClock, place_of, placed};
use crate::auth::{JwtConfig, TokenError, bearer};
use crate::model::{DEFAULT_CHAT, Message, ObjectId, Status};
use crate::node::OpId;
use crate::rate::{RateLimit, TokenBucket};
use crate::sio::socket::Placed;
use crate::sio::{Application, ConnectRequest, Ctx, DisconnectReason, Event, SocketId};
use crate::stats::AuthFailure;
use crate::store::{Append, NewMessage, Place, StoreCommand, StoreReply, TakeToken};

/// The chat service's settings.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Checks the tokens sockets connect with.
    pub jwt: JwtConfig,
    /// The per-user `chat:send` limit.
    pub rate: RateLimit,
    /// The per-socket budget every client event spends from, `chat:send`
    /// and unknown names included, before any other work.
    pub events: RateLimit,
    /// The most chats one socket may be in (`general` counts); a
    /// `chat:join` past it is refused with `too_many_chats`.
    pub max_chats: usize,
    /// How long a `chat:typing` with `isTyping: true` stands without being
    /// repeated before the service tells the chat that the typist stopped
    /// (it also does when the typist's socket leaves the chat or goes).
    /// `None`: indicators stand until the client ends them.
    pub typing_timeout: Option<Duration>,
}

/// The typing timeout a server has unless configured otherwise.
pub const DEFAULT_TYPING_TIMEOUT: Duration = Duration::from_secs(10);

/// The most chats a socket may be in unless configured otherwise: more
/// than a chat client shows in its sidebar, few enough that what one
/// socket holds (its memberships, and the work of its disconnect) stays
/// small.
pub const DEFAULT_MAX_CHATS: usize = 100;

/// Whose a socket is: the user its token named when it connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// The user's id.
    pub id: ObjectId,
    /// The user's name.
    pub name: String,
}

/// A connected socket: whose it is, and what it may still do. Lives and
/// dies with the socket, so nothing needs sweeping.
#[derive(Debug)]
struct Peer {
    user: User,
    /// Its event budget ([`ChatConfig::events`]).
    events: TokenBucket,
    /// How many chats it is in (`general` from the start).
    chats: usize,
}

/// Someone waiting for the outcome of one append: the sender, and any retry
/// of the same tempId that arrived while the append was in flight.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    socket: SocketId,
    ack: Option<u64>,
}

#[derive(Debug)]
enum Awaiting {
    Send {
        send: Sending,
        /// The store's reply, held until every earlier send of the chat
        /// had its own (see `Chat::sends`).
        reply: Option<Box<StoreReply>>,
    },
    Read {
        socket: SocketId,
        ack: Option<u64>,
        user: ObjectId,
    },
    Fire,
    /// In a cluster: a `chat:send` waiting for its token of the user's
    /// bucket that the instances share.
    Token(Box<Parked>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AckPayload<'a> {
    temp_id: Option<&'a str>,
    id: ObjectId,
    timestamp: i64,
}

/// A `chat:send` waiting for its token of the cluster's bucket (and its
/// place in its chat's order).
#[derive(Debug)]
struct Parked {
    socket: SocketId,
    user: User,
    event: Event,
    checked: Result<SendRequest, Refusal>,
    ticket: String,
}

/// A send whose store write is under way: what it stores, and who waits.
#[derive(Debug)]
struct Sending {
    message: Message,
    temp_id: Option<String>,
    waiters: Vec<Waiter>,
    sender: SocketId,
    /// In a cluster: the ticket of its place in the chat's order, and
    /// where the bus put it (boxed: alone, sends carry none).
    place: Option<Box<(String, Place)>>,
}

/// How long a `chat:send` in a cluster waits for its token of the bucket
/// the instances share (one round trip to Redis) before it is refused with
/// `store_unavailable`: Redis away or slow, the send waits no longer.
pub const BUS_WAIT: Duration = Duration::from_secs(5);

/// An `error` event's payload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorPayload<'a> {
    message: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    temp_id: Option<&'a str>,
}

/// What the ack of a refused event carries.
#[derive(Serialize)]
struct AckError<'a> {
    error: ErrorPayload<'a>,
}

const OVER_BUDGET: &str = "Too many events; slow down";

/// How often forgotten rate-limit buckets are swept.
const SWEEP: Duration = Duration::from_secs(60);

/// The chat application.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    clock: WallClock,
    ids: Option<MessageIds>,
    peers: HashMap<SocketId, Peer>,
    /// Each connected user's sockets.
    sockets_of_user: HashMap<ObjectId, Vec<SocketId>>,
    buckets: HashMap<ObjectId, TokenBucket>,
    pending: HashMap<OpId, Awaiting>,
    /// Each chat's `chat:send` appends in the order their (timestamp, id)
    /// were given, which is the chat's history order: a reply is applied
    /// (broadcast, acks) only once every earlier one of its chat was, so
    /// that sockets receive a chat's messages live in history's order
    /// whatever order the store answers in.
    sends: HashMap<String, VecDeque<OpId>>,
    /// In a cluster: when each `chat:send` waiting for its token stops
    /// waiting (in that order: the wait is one length).
    token_waits: VecDeque<(Instant, OpId)>,
    /// Broadcast messages whose delivery is awaited (the ticket of
    /// [`Ctx::broadcast_tracked`]): their sender, and id.
    handing: HashMap<u64, (SocketId, ObjectId)>,
    in_flight: HashMap<(ObjectId, String), OpId>,
    /// The `error` payload and ack of an event over budget, rendered once:
    /// a flood is mostly these, so each costs a copy, not a serialization.
    over_budget: (Box<RawValue>, Box<RawValue>),
    next_sweep: Instant,
    typing: Option<Typing<SocketId>>,
    /// The server is shutting down: no new store write is started.
    draining: bool,
}

/// What a chat's room name starts with (the rest is its id).
const CHAT_ROOM: &str = "chat:";

fn room(chat: &str) -> String {
    format!("{CHAT_ROOM}{chat}")
}

fn user_room(id: ObjectId) -> String {
    format!("user:{id}")
}

fn typing_payload(user: &User, chat: &str, is_typing: bool) -> Value {
    json!({"userId": user.id, "author": user.name, "chatId": chat, "isTyping": is_typing})
}

/// `socket` stopped typing in `chat`. Clients show typing per user, not
/// per tab, so the chat hears that `user` stopped only if none of the
/// user's other sockets (`sockets`) still types there. If exactly one does,
/// it alone hears it: it heard this socket start, and no other tab of its
/// user types now.
fn stopped_typing(
    ctx: &mut Ctx<'_>,
    typing: &Typing<SocketId>,
    sockets: Option<&Vec<SocketId>>,
    socket: SocketId,
    user: &User,
    chat: &str,
) {
    let mut still = sockets
        .into_iter()
        .flatten()
        .copied()
        .filter(|&s| s != socket && typing.is_typing(s, chat));
    let payload = typing_payload(user, chat, false);
    let room = room(chat);
    match (still.next(), still.next()) {
        (None, _) => {
            ctx.broadcast(
                "/",
                &room,
                Some(socket),
                &(ServerEvent::Typing.name(), &payload),
            );
        }
        (Some(last), None) if ctx.in_room(last, &room) => {
            ctx.emit(last, &(ServerEvent::Typing.name(), &payload), &[]);
        }
        _ => {}
    }
}

fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("token="))
        .map(crate::http::percent_decode)
}

impl Chat {
    /// The chat service; `clock` maps the node's instants to wall time.
    pub fn new(config: ChatConfig, clock: WallClock, now: Instant) -> Self {
        Chat {
            clock,
            ids: None,
            peers: HashMap::new(),
            sockets_of_user: HashMap::new(),
            buckets: HashMap::new(),
            pending: HashMap::new(),
            sends: HashMap::new(),
            handing: HashMap::new(),
            token_waits: VecDeque::new(),
            in_flight: HashMap::new(),
            over_budget: {
                let error = ErrorPayload {
                    message: OVER_BUDGET,
                    code: ErrorCode::RateLimited.name(),
                    temp_id: None,
                };
                let raw = |r: serde_json::Result<Box<RawValue>>| {
                    r.expect("a struct of strings always serializes")
                };
                (
                    raw(to_raw_value(&error)),
                    raw(to_raw_value(&AckError { error })),
                )
            },
            next_sweep: now + SWEEP,
            typing: config.typing_timeout.map(Typing::new),
            draining: false,
            config,
        }
    }

    /// Wall time now: the host's clock as the node last read it, else the
    /// anchor this service was built with. Message timestamps never go back
    /// whatever it does ([`MessageIds`]).
    fn wall_ms(&self, ctx: &Ctx<'_>) -> i64 {
        ctx.unix_ms()
            .unwrap_or_else(|| self.clock.unix_ms(ctx.now()))
    }

    /// How many typing indicators stand (those the service will end).
    pub fn typing_indicators(&self) -> usize {
        self.typing.as_ref().map_or(0, Typing::standing)
    }

    /// How many store operations are awaited.
    pub fn pending_operations(&self) -> usize {
        self.pending.len()
    }

    /// Refuses `event`: `error` to the socket, the error through its ack,
    /// and the refusal counted. Typed payloads, not `json!` maps: a flood
    /// is mostly refusals, so this is the budget's hot path.
    fn refuse(
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        event: &str,
        ack: Option<u64>,
        r: &Refusal,
        temp_id: Option<&str>,
    ) {
        ctx.refused(socket, event, r.code.name());
        let error = ErrorPayload {
            message: &r.message,
            code: r.code.name(),
            temp_id,
        };
        ctx.emit_volatile(socket, &(ServerEvent::Error.name(), &error), &[]);
        if let Some(id) = ack {
            let error = ErrorPayload {
                temp_id: None,
                ..error
            };
            ctx.ack(socket, id, &[AckError { error }], &[]);
        }
    }

    /// A `chat:send` whose token the cluster's store did not give in time
    /// (or at all): nothing was stored; the client sends it again. The
    /// place its take may have put on the bus (Redis may have run it) is
    /// given up.
    fn refuse_untaken(ctx: &mut Ctx<'_>, p: &Parked) {
        if let Ok(req) = &p.checked {
            ctx.abandon_place("/", &room(&req.chat_id), &p.ticket);
        }
        let r = Refusal {
            message: "The cluster did not answer in time; try again".into(),
            code: ErrorCode::StoreUnavailable,
        };
        Self::refuse_send(ctx, p.socket, &p.event, &r);
    }

    /// Refuses a `chat:send` before its store write, its `tempId` (if it
    /// has one that reads) echoed in the `error`.
    fn refuse_send(ctx: &mut Ctx<'_>, socket: SocketId, event: &Event, r: &Refusal) {
        let temp_id = validate::temp_id(&event.args);
        let name = ClientEvent::Send.name();
        Self::refuse(ctx, socket, name, event.ack, r, temp_id.as_deref());
    }

    /// In a cluster: the place a send took in `chat`'s order will have no
    /// message (the send stopped before its store write).
    fn give_up_place(ctx: &mut Ctx<'_>, chat: &str, place: Option<&(String, Place)>) {
        if let Some((ticket, _)) = place {
            ctx.abandon_place("/", &room(chat), ticket);
        }
    }

    /// The refusal of an event that would start a store write while the
    /// server shuts down: nothing was stored; the client sends it again
    /// once reconnected (a `chat:send` with the same `tempId` is never
    /// stored twice).
    fn shutting_down() -> Refusal {
        Refusal {
            message: "The server is shutting down; send it again after reconnecting".into(),
            code: ErrorCode::ShuttingDown,
        }
    }

    fn reply<T: Serialize + ?Sized>(
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        ack: Option<u64>,
        payload: &T,
    ) {
        if let Some(id) = ack {
            ctx.ack(socket, id, &[payload], &[]);
        }
    }

    fn on_typing(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, user: &User, event: Event) {
        let (chat, is_typing) = match validate::typing(&event.args) {
            Ok(t) => t,
            Err(r) => {
                return Self::refuse(ctx, socket, ClientEvent::Typing.name(), event.ack, &r, None);
            }
        };
        let payload = typing_payload(user, &chat, is_typing);
        match &mut self.typing {
            Some(typing) if !is_typing => {
                typing.stop(socket, &chat);
                let others = self.sockets_of_user.get(&user.id);
                stopped_typing(ctx, typing, others, socket, user, &chat);
            }
            Some(typing) => {
                ctx.broadcast(
                    "/",
                    &room(&chat),
                    Some(socket),
                    &(ServerEvent::Typing.name(), &payload),
                );
                if let Started::Evicted(old) = typing.start(socket, &chat, ctx.now()) {
                    let others = self.sockets_of_user.get(&user.id);
                    stopped_typing(ctx, typing, others, socket, user, &old);
                }
            }
            // Nothing tracked: the chat hears each socket as it speaks.
            None => {
                ctx.broadcast(
                    "/",
                    &room(&chat),
                    Some(socket),
                    &(ServerEvent::Typing.name(), &payload),
                );
            }
        }
        Self::reply(ctx, socket, event.ack, &payload);
    }

    /// Takes a token of `user`'s bucket (this node's copy of it).
    fn take_token(&mut self, now: Instant, user: ObjectId) -> bool {
        let limit = self.config.rate;
        self.buckets
            .entry(user)
            .or_insert_with(|| TokenBucket::new(limit, now))
            .take(limit, now)
    }

    fn on_send(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, user: User, event: Event) {
        // The token is taken before any other work, accepted or not. In a
        // cluster the bucket is the instances' own, kept by the store they
        // share (Redis): the send waits for that one round trip, and that
        // take decides.
        // The same step puts the send's place in its chat's order on the
        // bus, so that every node hands the chat its messages in the order
        // of their places, which is history's order.
        if ctx.in_cluster() {
            if ctx.bus_backlogged() {
                // Nothing accepted whose event might find no room on the
                // way to the bus: the client sends it again.
                let r = Refusal {
                    message: "The cluster's bus is backed up; try again".into(),
                    code: ErrorCode::StoreUnavailable,
                };
                return Self::refuse_send(ctx, socket, &event, &r);
            }
            let mut raw = [0u8; 12];
            ctx.ids().fill(&mut raw);
            let ticket = ObjectId(raw).to_string();
            let checked = validate::send(&event.args);
            let place = checked
                .as_ref()
                .ok()
                .and_then(|r| ctx.place_entry("/", &room(&r.chat_id), &ticket));
            let take = TakeToken {
                user: user.id,
                limit: self.config.rate,
                ticket: ticket.clone(),
                at_ms: self.wall_ms(ctx),
                place,
            };
            let op = ctx.store(StoreCommand::TakeToken(take));
            let parked = Parked {
                socket,
                user,
                event,
                checked,
                ticket,
            };
            self.pending.insert(op, Awaiting::Token(Box::new(parked)));
            self.token_waits.push_back((ctx.now() + BUS_WAIT, op));
            return;
        }
        let checked = match self.take_token(ctx.now(), user.id) {
            true => validate::send(&event.args),
            false => Err(Self::over_rate()),
        };
        self.after_take(ctx, socket, user, event, checked, None);
    }

    fn over_rate() -> Refusal {
        Refusal {
            message: "Too many messages; slow down".into(),
            code: ErrorCode::RateLimited,
        }
    }

    /// The rest of a `chat:send` once its token was taken (`checked`: its
    /// request, or why it is refused), with its place in its chat's order
    /// when the cluster's bus gave one (its ticket, and where it is).
    fn after_take(
        &mut self,
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        user: User,
        event: Event,
        checked: Result<SendRequest, Refusal>,
        place: Option<(String, Place)>,
    ) {
        let req = match checked {
            Ok(r) => r,
            Err(r) => return Self::refuse_send(ctx, socket, &event, &r),
        };
        let waiter = Waiter {
            socket,
            ack: event.ack,
        };
        if let Some(t) = &req.temp_id
            && let Some(op) = self.in_flight.get(&(user.id, t.clone()))
            && let Some(Awaiting::Send { send, .. }) = self.pending.get_mut(op)
        {
            // A retry racing the first send: it gets the first one's outcome.
            send.waiters.push(waiter);
            Self::give_up_place(ctx, &req.chat_id, place.as_ref());
            return;
        }
        if self.draining {
            Self::give_up_place(ctx, &req.chat_id, place.as_ref());
            let r = Self::shutting_down();
            return Self::refuse(
                ctx,
                socket,
                ClientEvent::Send.name(),
                event.ack,
                &r,
                req.temp_id.as_deref(),
            );
        }
        let (id, timestamp) = match &place {
            Some((_, place)) => placed(*place, ctx.ids()),
            None => {
                let wall_ms = self.wall_ms(ctx);
                let ids = self.ids.get_or_insert_with(|| MessageIds::new(ctx.ids()));
                ids.next(wall_ms)
            }
        };
        let message = Message {
            id,
            chat_id: req.chat_id,
            author: user.name,
            author_id: user.id,
            text: req.text,
            timestamp,
            status: Status::Sent,
            kind: req.kind,
        };
        let op = ctx.store(StoreCommand::AppendMessage(NewMessage {
            message: message.clone(),
            temp_id: req.temp_id.clone(),
        }));
        if let Some(t) = &req.temp_id {
            self.in_flight.insert((user.id, t.clone()), op);
        }
        self.sends
            .entry(message.chat_id.clone())
            .or_default()
            .push_back(op);
        self.pending.insert(
            op,
            Awaiting::Send {
                send: Sending {
                    message,
                    temp_id: req.temp_id,
                    waiters: vec![waiter],
                    sender: socket,
                    place: place.map(Box::new),
                },
                reply: None,
            },
        );
    }

    /// Applies the replies at the front of `chat`'s sends, in order, up to
    /// the first one still awaited.
    fn release_sends(&mut self, ctx: &mut Ctx<'_>, chat: &str) {
        while let Some(&op) = self.sends.get(chat).and_then(VecDeque::front) {
            let Some(Awaiting::Send { reply: Some(_), .. }) = self.pending.get(&op) else {
                break;
            };
            if let Some(queue) = self.sends.get_mut(chat) {
                queue.pop_front();
            }
            if let Some(Awaiting::Send {
                send,
                reply: Some(reply),
            }) = self.pending.remove(&op)
            {
                self.on_appended(ctx, send, *reply);
            }
        }
        if self.sends.get(chat).is_some_and(VecDeque::is_empty) {
            self.sends.remove(chat);
        }
    }

    fn on_appended(&mut self, ctx: &mut Ctx<'_>, send: Sending, reply: StoreReply) {
        let Sending {
            mut message,
            temp_id,
            waiters,
            sender,
            place,
        } = send;
        let place = place.as_deref();
        if let Some(t) = &temp_id {
            self.in_flight.remove(&(message.author_id, t.clone()));
        }
        let room = room(&message.chat_id);
        // In a cluster it goes in its place in the chat's order.
        let mut belongs = place.map(|(_, at)| *at);
        match reply {
            StoreReply::Appended(Append::Stored) => {}
            // A retry of a message stored before: it goes out again as it
            // was stored, for nothing tells whether its first publish did
            // (its node may have died between the store and the bus); a
            // node that handed it on already hands it to no one.
            // In a cluster it goes in the place of the send that stored it,
            // if the chat still holds that place (its node died before
            // publishing).
            StoreReply::Appended(Append::Duplicate { id, timestamp }) => {
                message.id = id;
                message.timestamp = timestamp;
                belongs = place.is_some().then(|| place_of(id, timestamp));
            }
            // A failure, or (a host bug) a reply of another kind: nothing is acked.
            _ => {
                Self::give_up_place(ctx, &message.chat_id, place);
                let r = Refusal {
                    message: "The message could not be stored; try again".into(),
                    code: ErrorCode::StoreUnavailable,
                };
                for w in waiters {
                    Self::refuse(
                        ctx,
                        w.socket,
                        ClientEvent::Send.name(),
                        w.ack,
                        &r,
                        temp_id.as_deref(),
                    );
                }
                return;
            }
        };
        let ticket = ctx.broadcast_keyed(
            "/",
            &room,
            Some(sender),
            &(ServerEvent::NewMessage.name(), &message),
            &message.id.to_string(),
            place.map(|(ticket, _)| Placed { ticket, belongs }),
        );
        self.handing.insert(ticket, (sender, message.id));
        // After the broadcast: in a cluster the acks follow it on the bus,
        // so an acked message's event is there even if this node dies now.
        let ack = AckPayload {
            temp_id: temp_id.as_deref(),
            id: message.id,
            timestamp: message.timestamp,
        };
        for w in &waiters {
            ctx.emit(w.socket, &(ServerEvent::Ack.name(), &ack), &[]);
            if let Some(id) = w.ack {
                ctx.ack_after_published(w.socket, id, &[&ack]);
            }
        }
    }

    /// Whether a message's broadcast reached another socket: if it did,
    /// `chat:delivered` to its sender and the status marked.
    fn on_handed_message(&mut self, ctx: &mut Ctx<'_>, ticket: u64, handed: bool) {
        let Some((sender, id)) = self.handing.remove(&ticket) else {
            return;
        };
        if !handed {
            return;
        }
        ctx.emit(
            sender,
            &(ServerEvent::Delivered.name(), json!({"messageId": id})),
            &[],
        );
        let op = ctx.store(StoreCommand::MarkDelivered(id));
        self.pending.insert(op, Awaiting::Fire);
    }

    fn on_read(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, user: &User, event: Event) {
        match validate::read(&event.args) {
            Ok(_) if self.draining => Self::refuse(
                ctx,
                socket,
                ClientEvent::Read.name(),
                event.ack,
                &Self::shutting_down(),
                None,
            ),
            Ok(ids) => {
                let op = ctx.store(StoreCommand::MarkRead {
                    ids,
                    reader: user.id,
                });
                self.pending.insert(
                    op,
                    Awaiting::Read {
                        socket,
                        ack: event.ack,
                        user: user.id,
                    },
                );
            }
            Err(r) => Self::refuse(ctx, socket, ClientEvent::Read.name(), event.ack, &r, None),
        }
    }

    fn on_read_recorded(
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        ack: Option<u64>,
        user: ObjectId,
        reply: StoreReply,
    ) {
        let receipts = match reply {
            StoreReply::Read(r) => r,
            _ => {
                let r = Refusal {
                    message: "The read receipts could not be stored; try again".into(),
                    code: ErrorCode::StoreUnavailable,
                };
                return Self::refuse(ctx, socket, ClientEvent::Read.name(), ack, &r, None);
            }
        };
        let mut by_chat: Vec<(String, Vec<ObjectId>)> = Vec::new();
        for r in &receipts {
            match by_chat.iter_mut().find(|(c, _)| *c == r.chat_id) {
                Some((_, ids)) => ids.push(r.id),
                None => by_chat.push((r.chat_id.clone(), vec![r.id])),
            }
        }
        for (chat, ids) in &by_chat {
            ctx.broadcast(
                "/",
                &room(chat),
                Some(socket),
                &(
                    ServerEvent::Read.name(),
                    json!({"messageIds": ids, "userId": user}),
                ),
            );
        }
        let all: Vec<ObjectId> = receipts.iter().map(|r| r.id).collect();
        Self::reply(
            ctx,
            socket,
            ack,
            &json!({"messageIds": all, "userId": user}),
        );
    }
}

impl Chat {
    fn on_join(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, event: Event) {
        let chat = match validate::room(&event.args) {
            Ok(c) => c,
            Err(r) => {
                return Self::refuse(ctx, socket, ClientEvent::Join.name(), event.ack, &r, None);
            }
        };
        let room = room(&chat);
        let Some(peer) = self.peers.get_mut(&socket) else {
            return;
        };
        // Joining a chat it is in changes nothing, at the limit too.
        if !ctx.in_room(socket, &room) {
            if peer.chats >= self.config.max_chats {
                let r = Refusal {
                    message: format!(
                        "A socket may be in at most {} chats; leave one first",
                        self.config.max_chats
                    ),
                    code: ErrorCode::TooManyChats,
                };
                return Self::refuse(ctx, socket, ClientEvent::Join.name(), event.ack, &r, None);
            }
            ctx.join(socket, &room);
            peer.chats += 1;
        }
        Self::reply(ctx, socket, event.ack, &json!({"chatId": chat}));
    }

    fn on_leave(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, user: &User, event: Event) {
        let chat = match validate::room(&event.args) {
            Ok(c) => c,
            Err(r) => {
                return Self::refuse(ctx, socket, ClientEvent::Leave.name(), event.ack, &r, None);
            }
        };
        if ctx.leave(socket, &room(&chat))
            && let Some(peer) = self.peers.get_mut(&socket)
        {
            peer.chats -= 1;
        }
        if let Some(typing) = &mut self.typing
            && typing.stop(socket, &chat)
        {
            let others = self.sockets_of_user.get(&user.id);
            stopped_typing(ctx, typing, others, socket, user, &chat);
        }
        Self::reply(ctx, socket, event.ack, &json!({"chatId": chat}));
    }
}

impl Chat {
    /// Registers a socket of `user`, in its rooms already.
    fn add_peer(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, user: User) {
        let chats = ctx
            .rooms(socket)
            .filter(|r| r.starts_with(CHAT_ROOM))
            .count();
        self.sockets_of_user
            .entry(user.id)
            .or_default()
            .push(socket);
        let events = TokenBucket::new(self.config.events, ctx.now());
        self.peers.insert(
            socket,
            Peer {
                user,
                events,
                chats,
            },
        );
    }
}

impl Application for Chat {
    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/"
    }

    /// The user the socket's token names.
    type Socket = User;

    fn authorize(&mut self, ctx: &mut Ctx<'_>, req: &ConnectRequest<'_>) -> Result<User, Value> {
        let from_auth = req
            .auth
            .and_then(|a| a.get("token"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let token = from_auth
            .or_else(|| {
                req.handshake
                    .authorization
                    .as_deref()
                    .and_then(bearer)
                    .map(str::to_owned)
            })
            .or_else(|| query_token(&req.handshake.query));
        let Some(token) = token else {
            ctx.auth_failed(AuthFailure::MissingToken);
            return Err(json!({ "message": UNAUTHORIZED }));
        };
        match self.config.jwt.verify(&token, self.wall_ms(ctx)) {
            Ok(c) => Ok(User {
                id: c.user_id,
                name: c.username,
            }),
            Err(e) => {
                ctx.auth_failed(e.into());
                match e {
                    TokenError::Expired => Err(json!({ "message": TOKEN_EXPIRED })),
                    _ => Err(json!({ "message": UNAUTHORIZED })),
                }
            }
        }
    }

    fn on_connect(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, user: User) {
        ctx.join(socket, &user_room(user.id));
        ctx.join(socket, &room(DEFAULT_CHAT));
        self.add_peer(ctx, socket, user);
    }

    /// Back in the chats it was in (`general` only if it had not left it).
    fn on_recover(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, user: User) {
        self.add_peer(ctx, socket, user);
    }

    /// Every event spends a token of its socket's budget on arrival,
    /// before its arguments are parsed: a refused one costs a map lookup,
    /// a token check and an `error` rendered once, whatever it names or
    /// carries and however many chats the socket is in.
    fn admit(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, name: &str, ack: Option<u64>) -> bool {
        let Some(peer) = self.peers.get_mut(&socket) else {
            return true;
        };
        if peer.events.take(self.config.events, ctx.now()) {
            return true;
        }
        ctx.refused(socket, name, ErrorCode::RateLimited.name());
        let (error, ack_error) = &self.over_budget;
        ctx.emit_volatile(socket, &(ServerEvent::Error.name(), error), &[]);
        if let Some(id) = ack {
            ctx.ack(socket, id, &[ack_error], &[]);
        }
        false
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, event: Event) {
        let Some(peer) = self.peers.get(&socket) else {
            return;
        };
        let user = peer.user.clone();
        // Events of other names are ignored, as socket.io does with no listener.
        let Some(name) = ClientEvent::parse(&event.name) else {
            return;
        };
        match name {
            ClientEvent::Send => self.on_send(ctx, socket, user, event),
            ClientEvent::Typing => self.on_typing(ctx, socket, &user, event),
            ClientEvent::Read => self.on_read(ctx, socket, &user, event),
            ClientEvent::Join => self.on_join(ctx, socket, event),
            ClientEvent::Leave => self.on_leave(ctx, socket, &user, event),
        }
    }

    fn on_disconnect(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, _reason: DisconnectReason) {
        let Some(Peer { user, .. }) = self.peers.remove(&socket) else {
            return;
        };
        if let Some(typing) = &mut self.typing {
            let others = self.sockets_of_user.get(&user.id);
            for chat in typing.remove_socket(socket) {
                stopped_typing(ctx, typing, others, socket, &user, &chat);
            }
        }
        if let Some(sockets) = self.sockets_of_user.get_mut(&user.id) {
            sockets.retain(|&s| s != socket);
            if sockets.is_empty() {
                self.sockets_of_user.remove(&user.id);
                let limit = self.config.rate;
                if self
                    .buckets
                    .get_mut(&user.id)
                    .is_some_and(|b| b.is_full(limit, ctx.now()))
                {
                    self.buckets.remove(&user.id);
                }
            }
        }
    }

    fn on_store_reply(&mut self, ctx: &mut Ctx<'_>, op: OpId, reply: StoreReply) {
        if let Some(Awaiting::Send { send, reply: held }) = self.pending.get_mut(&op) {
            *held = Some(Box::new(reply));
            let chat = send.message.chat_id.clone();
            return self.release_sends(ctx, &chat);
        }
        match self.pending.remove(&op) {
            Some(Awaiting::Send { .. }) => unreachable!("sends are handled above"),
            Some(Awaiting::Read { socket, ack, user }) => {
                Self::on_read_recorded(ctx, socket, ack, user, reply)
            }
            Some(Awaiting::Token(p)) => match reply {
                StoreReply::Took(taken) => {
                    let Parked {
                        socket,
                        user,
                        event,
                        checked,
                        ticket,
                    } = *p;
                    let checked = if taken.took {
                        checked
                    } else {
                        Err(Self::over_rate())
                    };
                    let place = taken.place.map(|place| (ticket, place));
                    self.after_take(ctx, socket, user, event, checked, place);
                }
                _ => Self::refuse_untaken(ctx, &p),
            },
            // A take given up on (its place, if it has one, was given up
            // then), or what no one waits for.
            Some(Awaiting::Fire) | None => {}
        }
    }

    fn on_handed(&mut self, ctx: &mut Ctx<'_>, ticket: u64, handed: bool) {
        self.on_handed_message(ctx, ticket, handed);
    }

    fn drain(&mut self, _ctx: &mut Ctx<'_>) {
        self.draining = true;
    }

    fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let typing = self.typing.as_ref().and_then(Typing::poll_timeout);
        let token = self.token_waits.front().map(|(t, _)| *t);
        [typing, token, Some(self.next_sweep)]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now();
        while let Some(&(until, op)) = self.token_waits.front() {
            if until > now {
                break;
            }
            self.token_waits.pop_front();
            if let Some(Awaiting::Token(p)) = self.pending.remove(&op) {
                // Its answer, if it ever comes, finds nothing waiting.
                Self::refuse_untaken(ctx, &p);
            }
        }
        if let Some(typing) = &mut self.typing {
            for (socket, chat) in typing.expire(now) {
                if let Some(Peer { user, .. }) = self.peers.get(&socket) {
                    let others = self.sockets_of_user.get(&user.id);
                    stopped_typing(ctx, typing, others, socket, user, &chat);
                }
            }
        }
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP;
        let limit = self.config.rate;
        let online = &self.sockets_of_user;
        self.buckets
            .retain(|user, b| online.contains_key(user) || !b.is_full(limit, now));
    }
}
