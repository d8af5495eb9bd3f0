//! Every transition of Engine.IO sessions lives here: the handshake, the
//! heartbeat, long-polling, WebSocket, the upgrade, and close.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::packet::{self, Data, Packet};
use super::{EioRefusal, RequestError, Transport, Violation, parse_query};
use crate::deadlines::Deadlines;
use crate::host::{ConnId, Frame, HttpResponse, Method, RequestId};
use crate::ids::{IdGenerator, IntMap, new_sid};
use crate::ws::{GOING_AWAY, NORMAL_CLOSURE};

/// Engine.IO settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How often the server pings.
    pub ping_interval: Duration,
    /// How long the server waits for the pong.
    pub ping_timeout: Duration,
    /// The largest packet or polling payload a client may send, in bytes.
    pub max_payload: usize,
    /// The most bytes buffered for a polling client before it is disconnected.
    pub max_buffered: usize,
    /// How long a WebSocket probe may take to complete the upgrade (`5`)
    /// before it is closed and the session carries on polling.
    pub upgrade_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            max_buffered: 8_000_000,
            upgrade_timeout: UPGRADE_TIMEOUT,
        }
    }
}

/// Node's engine.io `upgradeTimeout`: a probe that has not finished the
/// upgrade by then is closed, and polling goes on.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// While an upgrade is under way, a waiting poll is answered with a noop
/// after this long (as Node's engine.io does every 100 ms), so that the
/// client can pause polling and finish the upgrade, without answering a
/// client that polls again at once in a busy loop.
const UPGRADE_NOOP: Duration = Duration::from_millis(100);

/// Names one session inside the engine; cheap to copy and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub(crate) u64);

impl SessionKey {
    /// The key's number: it names a session in a host's logs without
    /// revealing its `sid` (which a client could use to post as it).
    pub fn number(self) -> u64 {
        self.0
    }
}

/// What the client's handshake carried, kept for the layers above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The raw query string of the first request.
    pub query: String,
    /// Its `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent a close packet.
    ClientClose,
    /// The transport (connection) went away.
    TransportClose,
    /// No pong within the ping timeout.
    PingTimeout,
    /// The client broke the protocol, this way.
    ProtocolError(Violation),
    /// The client fell too far behind.
    Backlog,
    /// The server closed it.
    ServerClose,
}

/// What happened to the engine's sessions, queued for whoever drives it
/// ([`Engine::poll_event`]): the node tells the layer above of opened and
/// closed sessions, and counts and logs all of them.
///
/// Messages are not events: [`Engine::handle_packet`] hands each back to
/// its caller as it comes, borrowing the input it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session opened.
    Opened {
        /// The session.
        key: SessionKey,
        /// The transport of its handshake.
        transport: Transport,
        /// What its handshake carried.
        handshake: Handshake,
    },
    /// A session moved from polling to WebSocket.
    Upgraded {
        /// The session.
        key: SessionKey,
    },
    /// A session closed (or, as the server goes away, a polling session
    /// stopped taking anything new and hands out its last packets).
    Closed {
        /// The session.
        key: SessionKey,
        /// The transport it was on.
        transport: Transport,
        /// Why.
        reason: CloseReason,
    },
    /// A request or a WebSocket was refused.
    Refused(EioRefusal),
}

/// What the engine has the host write, queued for whoever drives it
/// ([`Engine::poll_transmit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Answer an HTTP request.
    Http {
        /// The request.
        req: RequestId,
        /// The answer.
        response: HttpResponse,
    },
    /// Write a WebSocket frame.
    Frame {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// Close a WebSocket connection (after what is queued on it).
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: u16,
    },
}

enum Carrier {
    Polling { parked: Option<RequestId> },
    WebSocket { conn: ConnId },
}

impl Carrier {
    fn transport(&self) -> Transport {
        match self {
            Carrier::Polling { .. } => Transport::Polling,
            Carrier::WebSocket { .. } => Transport::WebSocket,
        }
    }
}

struct Session {
    sid: Arc<str>,
    carrier: Carrier,
    /// A WebSocket being probed for an upgrade, and whether `2probe` arrived on it.
    probe: Option<(ConnId, bool)>,
    /// When the probe under way is given up ([`EngineConfig::upgrade_timeout`]).
    upgrade_deadline: Option<Instant>,
    /// When a poll parked during the upgrade is answered with a noop.
    noop_at: Option<Instant>,
    buffer: Vec<Frame>,
    buffered: usize,
    /// Fell too far behind; closed at the next flush.
    doomed: bool,
    /// Closed as the server goes away, the layer above told: a polling
    /// session stays only to hand its buffered packets, the close packet
    /// last, to its next polls. Nothing more is sent on it or read from it.
    closing: bool,
    awaiting_pong: bool,
    deadline: Instant,
}

/// The most packets one long-poll response carries: python-engineio's
/// client refuses a payload of more than 16, and the rest simply waits for
/// the next poll.
pub const MAX_PACKETS_PER_POLL: usize = 16;

impl Session {
    /// Whether `t` is one of this session's deadlines (a timer entry that
    /// is not is stale).
    fn is_due_at(&self, t: Instant) -> bool {
        self.deadline == t || self.upgrade_deadline == Some(t) || self.noop_at == Some(t)
    }

    /// Takes up to [`MAX_PACKETS_PER_POLL`] buffered packets as one payload.
    fn take_payload(&mut self) -> Bytes {
        let n = self.buffer.len().min(MAX_PACKETS_PER_POLL);
        let payload = packet::encode_payload(&self.buffer[..n]);
        self.buffered -= self.buffer[..n]
            .iter()
            .map(|p| packet::payload_len(p) + 1)
            .sum::<usize>();
        self.buffer.drain(..n);
        payload
    }
}

/// Where [`Engine::route`] put a packet.
enum Route {
    Gone,
    Buffered,
    WebSocket(ConnId),
}

#[derive(Clone, Copy)]
enum Role {
    Main(SessionKey),
    Probe(SessionKey),
}

/// All Engine.IO sessions of one node.
///
/// It calls nobody: what happened waits in its event queue
/// ([`Engine::poll_event`]), what to write in its transmit queue
/// ([`Engine::poll_transmit`]), and a message read from a client goes back
/// to the caller of [`Engine::handle_packet`].
pub struct Engine {
    config: EngineConfig,
    sessions: IntMap<SessionKey, Session>,
    by_sid: HashMap<Arc<str>, SessionKey>,
    conns: IntMap<ConnId, Role>,
    timers: Deadlines<SessionKey>,
    dirty: Vec<SessionKey>,
    next_key: u64,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    /// The server is shutting down: no new session or upgrade.
    draining: bool,
    /// What every new session id starts with (in a cluster, the node's
    /// name and [`crate::cluster::forward::SEPARATOR`]).
    sid_prefix: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl Engine {
    /// An engine with no sessions.
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            config,
            sessions: IntMap::default(),
            by_sid: HashMap::new(),
            conns: IntMap::default(),
            timers: Deadlines::new(),
            dirty: Vec::new(),
            next_key: 0,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            draining: false,
            sid_prefix: String::new(),
        }
    }

    /// Every new session id starts with `prefix`.
    pub fn set_sid_prefix(&mut self, prefix: String) {
        self.sid_prefix = prefix;
    }

    /// The next thing that happened, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next thing to write, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn refused(&mut self, reason: EioRefusal) {
        self.events.push_back(Event::Refused(reason));
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// How many sessions are open (closing polling sessions that still
    /// have packets to hand out included).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The public session id of a session.
    pub fn sid(&self, key: SessionKey) -> Option<&str> {
        self.sessions.get(&key).map(|s| &*s.sid)
    }

    /// The transport a session uses now.
    pub fn transport(&self, key: SessionKey) -> Option<Transport> {
        self.sessions.get(&key).map(|s| s.carrier.transport())
    }

    /// The earliest heartbeat deadline.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let sessions = &self.sessions;
        self.timers
            .next(|t, key| sessions.get(key).is_some_and(|s| s.is_due_at(t)))
    }

    fn respond(&mut self, req: RequestId, response: HttpResponse) {
        self.transmits.push_back(Transmit::Http { req, response });
    }

    fn error(&mut self, req: RequestId, e: RequestError) {
        self.refused(e.into());
        self.respond(req, HttpResponse::json(400, Bytes::from(e.body())));
    }

    fn new_session(
        &mut self,
        carrier: Carrier,
        handshake: Handshake,
        now: Instant,
        ids: &mut dyn IdGenerator,
    ) -> SessionKey {
        self.next_key += 1;
        let mut tries = 0;
        let sid: Arc<str> = loop {
            let s = format!("{}{}", self.sid_prefix, new_sid(ids));
            if !self.by_sid.contains_key(s.as_str()) {
                break s.into();
            }
            tries += 1;
            if tries == 8 {
                // A generator this poor (a test's, or a broken one) must not
                // hang the node: the key is never reused, so this is unique.
                break format!("{s}{}", self.next_key).into();
            }
        };
        let key = SessionKey(self.next_key);
        let deadline = now + self.config.ping_interval;
        let transport = carrier.transport();
        self.events.push_back(Event::Opened {
            key,
            transport,
            handshake,
        });
        self.by_sid.insert(sid.clone(), key);
        self.sessions.insert(
            key,
            Session {
                sid,
                carrier,
                probe: None,
                upgrade_deadline: None,
                noop_at: None,
                buffer: Vec::new(),
                buffered: 0,
                doomed: false,
                closing: false,
                awaiting_pong: false,
                deadline,
            },
        );
        self.timers.push(deadline, key);
        key
    }

    fn open_packet(&self, key: SessionKey, upgrades: bool) -> Frame {
        let s = &self.sessions[&key];
        let open = format!(
            r#"{{"sid":"{}","upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            s.sid,
            if upgrades { r#""websocket""# } else { "" },
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload
        );
        packet::text(b'0', &open)
    }

    /// An HTTP request on the Engine.IO path (long-polling, or a handshake).
    ///
    /// A POST's packets come back, to be fed one by one to
    /// [`Engine::handle_packet`] (the payload was checked whole: a bad
    /// record refused it all).
    #[allow(clippy::too_many_arguments)] // one argument per part of the request the protocol reads
    pub fn handle_http<'a>(
        &mut self,
        req: RequestId,
        method: Method,
        query: &str,
        authorization: Option<&str>,
        body: &'a [u8],
        now: Instant,
        ids: &mut dyn IdGenerator,
    ) -> Option<(SessionKey, Vec<Packet<'a>>)> {
        let q = match parse_query(query) {
            Ok(q) => q,
            Err(e) => {
                self.error(req, e);
                return None;
            }
        };
        if q.transport != Transport::Polling {
            self.error(req, RequestError::BadRequest);
            return None;
        }
        let Some(sid) = q.sid else {
            if method != Method::Get {
                self.error(req, RequestError::BadHandshakeMethod);
                return None;
            }
            if self.draining {
                self.refused(EioRefusal::ShuttingDown);
                let refusal = HttpResponse::json(503, Bytes::from_static(SHUTTING_DOWN));
                self.respond(req, refusal);
                return None;
            }
            let handshake = Handshake {
                query: query.to_owned(),
                authorization: authorization.map(str::to_owned),
            };
            let carrier = Carrier::Polling { parked: None };
            let key = self.new_session(carrier, handshake, now, ids);
            let open = self.open_packet(key, true);
            self.respond(req, HttpResponse::text(packet::encode_payload(&[open])));
            return None;
        };
        let Some(&key) = self.by_sid.get(sid) else {
            self.error(req, RequestError::SessionIdUnknown);
            return None;
        };
        let s = self
            .sessions
            .get_mut(&key)
            .expect("by_sid and sessions hold the same keys");
        let Carrier::Polling { parked } = &mut s.carrier else {
            self.error(req, RequestError::BadRequest);
            return None;
        };
        match method {
            Method::Get => {
                if let Some(first) = parked.take() {
                    self.error(req, RequestError::BadRequest);
                    self.respond(first, HttpResponse::text(Bytes::from_static(b"1")));
                    self.close(
                        key,
                        CloseReason::ProtocolError(Violation::DuplicatePoll),
                        now,
                    );
                } else if !s.buffer.is_empty() {
                    self.answer_poll(key, req);
                } else {
                    *parked = Some(req);
                    if s.probe.is_some_and(|(_, probed)| probed) && s.noop_at.is_none() {
                        let at = now + UPGRADE_NOOP;
                        s.noop_at = Some(at);
                        self.timers.push(at, key);
                    }
                }
            }
            Method::Post if s.closing => {
                // Closed already: what the client says now is not read.
                self.respond(req, HttpResponse::ok());
            }
            Method::Post => {
                if body.len() > self.config.max_payload {
                    self.refused(EioRefusal::PayloadTooLarge);
                    self.respond(
                        req,
                        HttpResponse::json(
                            413,
                            Bytes::from_static(br#"{"code":3,"message":"Payload too large"}"#),
                        ),
                    );
                    self.close(key, CloseReason::ProtocolError(Violation::TooLarge), now);
                    return None;
                }
                // Check the whole payload first: a bad record refuses it all.
                let packets = packet::decode_payload(body)
                    .ok()
                    .and_then(|p| p.collect::<Result<Vec<_>, _>>().ok());
                let Some(packets) = packets else {
                    self.error(req, RequestError::BadRequest);
                    self.close(key, CloseReason::ProtocolError(Violation::BadPayload), now);
                    return None;
                };
                self.respond(req, HttpResponse::ok());
                return Some((key, packets));
            }
            Method::Other => self.error(req, RequestError::BadRequest),
        }
        None
    }

    /// A long-polling request whose client went away before it was answered.
    pub fn handle_http_aborted(&mut self, req: RequestId) {
        for s in self.sessions.values_mut() {
            if let Carrier::Polling { parked } = &mut s.carrier
                && *parked == Some(req)
            {
                *parked = None;
                return;
            }
        }
    }

    /// A WebSocket connection was accepted on the Engine.IO path.
    pub fn handle_ws_open(
        &mut self,
        conn: ConnId,
        query: &str,
        authorization: Option<&str>,
        now: Instant,
        ids: &mut dyn IdGenerator,
    ) {
        let q = match parse_query(query) {
            Ok(q) if q.transport == Transport::WebSocket => q,
            Ok(_) => {
                self.refused(EioRefusal::BadRequest);
                return self.ws_close(conn, NORMAL_CLOSURE);
            }
            Err(e) => {
                self.refused(e.into());
                return self.ws_close(conn, NORMAL_CLOSURE);
            }
        };
        if self.draining {
            // Neither a new session nor an upgrade of one about to close.
            self.refused(EioRefusal::ShuttingDown);
            return self.ws_close(conn, GOING_AWAY);
        }
        match q.sid {
            None => {
                let handshake = Handshake {
                    query: query.to_owned(),
                    authorization: authorization.map(str::to_owned),
                };
                let key = self.new_session(Carrier::WebSocket { conn }, handshake, now, ids);
                self.conns.insert(conn, Role::Main(key));
                let open = self.open_packet(key, false);
                self.send(key, open);
            }
            Some(sid) => {
                let key = self.by_sid.get(sid).copied();
                let s = key.and_then(|k| self.sessions.get_mut(&k));
                match s {
                    Some(s)
                        if matches!(s.carrier, Carrier::Polling { .. }) && s.probe.is_none() =>
                    {
                        let key = key.expect("session found by key");
                        let until = now + self.config.upgrade_timeout;
                        s.probe = Some((conn, false));
                        s.upgrade_deadline = Some(until);
                        self.timers.push(until, key);
                        self.conns.insert(conn, Role::Probe(key));
                    }
                    Some(_) => {
                        self.refused(EioRefusal::BadRequest);
                        self.ws_close(conn, NORMAL_CLOSURE);
                    }
                    None => {
                        self.refused(EioRefusal::SessionIdUnknown);
                        self.ws_close(conn, NORMAL_CLOSURE);
                    }
                }
            }
        }
    }

    /// A WebSocket frame arrived; a packet read from it comes back, to be
    /// fed to [`Engine::handle_packet`].
    pub fn handle_ws_frame<'a>(
        &mut self,
        conn: ConnId,
        frame: Data<'a>,
        now: Instant,
    ) -> Option<(SessionKey, Packet<'a>)> {
        let &role = self.conns.get(&conn)?;
        let len = match &frame {
            Data::Text(t) => t.len(),
            Data::Binary(b) => b.len(),
        };
        let (key, decoded) = match (role, frame) {
            (Role::Main(key), _) if len > self.config.max_payload => {
                self.close(key, CloseReason::ProtocolError(Violation::TooLarge), now);
                return None;
            }
            (Role::Main(key), Data::Text(t)) => (key, packet::decode_text(t)),
            (Role::Main(key), Data::Binary(b)) => (key, Ok(Packet::Message(Data::Binary(b)))),
            (Role::Probe(key), Data::Text(t)) => {
                self.handle_probe(key, conn, t);
                return None;
            }
            (Role::Probe(key), Data::Binary(_)) => {
                self.drop_probe(key, conn);
                return None;
            }
        };
        match decoded {
            Ok(p) => Some((key, p)),
            Err(_) => {
                self.close(key, CloseReason::ProtocolError(Violation::BadPacket), now);
                None
            }
        }
    }

    fn handle_probe(&mut self, key: SessionKey, conn: ConnId, text: &str) {
        let s = self
            .sessions
            .get_mut(&key)
            .expect("a probe's session outlives its probe");
        match (text, s.probe) {
            ("2probe", Some((c, false))) if c == conn => {
                s.probe = Some((conn, true));
                self.transmits.push_back(Transmit::Frame {
                    conn,
                    frame: Frame::Text(Bytes::from_static(b"3probe")),
                });
                if let Carrier::Polling { parked: Some(req) } = s.carrier {
                    s.carrier = Carrier::Polling { parked: None };
                    self.respond(req, HttpResponse::text(Bytes::from_static(b"6")));
                }
            }
            ("5", Some((c, true))) if c == conn => {
                let parked = match s.carrier {
                    Carrier::Polling { parked } => parked,
                    Carrier::WebSocket { .. } => None,
                };
                s.carrier = Carrier::WebSocket { conn };
                s.probe = None;
                s.upgrade_deadline = None;
                s.noop_at = None;
                self.conns.insert(conn, Role::Main(key));
                let buffered = std::mem::take(&mut s.buffer);
                s.buffered = 0;
                self.events.push_back(Event::Upgraded { key });
                for p in buffered {
                    self.send(key, p);
                }
                if let Some(req) = parked {
                    self.respond(req, HttpResponse::text(Bytes::from_static(b"6")));
                }
            }
            _ => self.drop_probe(key, conn),
        }
    }

    fn drop_probe(&mut self, key: SessionKey, conn: ConnId) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.probe = None;
            s.upgrade_deadline = None;
            s.noop_at = None;
        }
        self.conns.remove(&conn);
        self.ws_close(conn, NORMAL_CLOSURE);
    }

    fn ws_close(&mut self, conn: ConnId, code: u16) {
        self.transmits.push_back(Transmit::Close { conn, code });
    }

    /// A WebSocket connection closed (by the peer or the network), or the
    /// host dropped it for `reason` ([`CloseReason::Backlog`]: its client
    /// fell too far behind).
    pub fn handle_ws_closed(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        match self.conns.remove(&conn) {
            Some(Role::Main(key)) => self.close_inner(key, reason, now, false),
            Some(Role::Probe(key)) => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.probe = None;
                    s.upgrade_deadline = None;
                    s.noop_at = None;
                }
            }
            None => {}
        }
    }

    /// Runs a packet a client sent on a session: a message comes back for
    /// the layer above; the rest (pings, pongs, close) the engine handles.
    /// Nothing happens if the session is gone (closed by an earlier packet
    /// of the same payload, or by the layer above meanwhile).
    pub fn handle_packet<'a>(
        &mut self,
        key: SessionKey,
        p: Packet<'a>,
        now: Instant,
    ) -> Option<Data<'a>> {
        if self.sessions.get(&key)?.closing {
            return None;
        }
        match p {
            Packet::Message(data) => return Some(data),
            Packet::Pong(_) => {
                let interval = self.config.ping_interval;
                if let Some(s) = self.sessions.get_mut(&key)
                    && s.awaiting_pong
                {
                    s.awaiting_pong = false;
                    s.deadline = now + interval;
                    self.timers.push(s.deadline, key);
                }
            }
            Packet::Ping(data) => {
                let pong = packet::text(b'3', data);
                self.send(key, pong);
            }
            Packet::Close => self.close(key, CloseReason::ClientClose, now),
            Packet::Noop => {}
            Packet::Upgrade => {
                self.close(
                    key,
                    CloseReason::ProtocolError(Violation::StrayUpgrade),
                    now,
                );
            }
        }
        None
    }

    /// Fires the heartbeats, upgrade timeouts and upgrade noops that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((t, key)) = self.timers.pop_due(now) {
            let timeout = self.config.ping_timeout;
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            if s.noop_at == Some(t) {
                s.noop_at = None;
                if let Carrier::Polling { parked } = &mut s.carrier
                    && let Some(req) = parked.take()
                {
                    self.respond(req, HttpResponse::text(Bytes::from_static(b"6")));
                }
                continue;
            }
            if s.upgrade_deadline == Some(t) {
                // The probe never finished: close it; polling goes on.
                if let Some((conn, _)) = s.probe {
                    self.drop_probe(key, conn);
                }
                continue;
            }
            if s.deadline != t {
                continue;
            }
            if s.awaiting_pong {
                self.close(key, CloseReason::PingTimeout, now);
            } else {
                s.awaiting_pong = true;
                // From the scheduled time, not the (possibly late) firing time.
                s.deadline = t + timeout;
                self.timers.push(s.deadline, key);
                self.send(key, Frame::Text(Bytes::from_static(b"2")));
            }
        }
    }

    /// Queues a packet on a session: straight to its WebSocket, or into its
    /// polling buffer (released to the parked GET by [`Engine::flush`]).
    ///
    /// Returns false if the session is gone.
    pub fn send(&mut self, key: SessionKey, p: Frame) -> bool {
        match self.route(key, &p) {
            Route::Gone => false,
            Route::Buffered => true,
            Route::WebSocket(conn) => {
                self.transmits.push_back(Transmit::Frame { conn, frame: p });
                true
            }
        }
    }

    /// Queues one text packet on many sessions, encoded once: polling
    /// sessions buffer it as [`Engine::send`] would, and the WebSocket
    /// connections come back in order, for the caller to name in one
    /// [`Output::Broadcast`](crate::Output::Broadcast) (which it queues
    /// before anything else is sent). Returns how many sessions took it, and those connections.
    pub(crate) fn send_many(
        &mut self,
        keys: impl IntoIterator<Item = SessionKey>,
        text: &Bytes,
    ) -> (usize, Vec<ConnId>) {
        let p = Frame::Text(text.clone());
        let mut conns = Vec::new();
        let mut n = 0;
        for key in keys {
            match self.route(key, &p) {
                Route::Gone => continue,
                Route::Buffered => {}
                Route::WebSocket(conn) => conns.push(conn),
            }
            n += 1;
        }
        (n, conns)
    }

    /// Where a packet for a session goes: buffered here for its next poll
    /// (done by this call), onto its WebSocket (the caller's to output), or
    /// nowhere (the session is gone or going).
    fn route(&mut self, key: SessionKey, p: &Frame) -> Route {
        let Some(s) = self.sessions.get_mut(&key) else {
            return Route::Gone;
        };
        if s.doomed || s.closing {
            return Route::Gone;
        }
        match s.carrier {
            Carrier::WebSocket { conn } => Route::WebSocket(conn),
            Carrier::Polling { parked } => {
                s.buffered += packet::payload_len(p) + 1;
                s.buffer.push(p.clone());
                if s.buffered > self.config.max_buffered {
                    s.doomed = true;
                    s.buffer.clear();
                    self.dirty.push(key);
                    return Route::Gone;
                }
                if parked.is_some() && s.buffer.len() == 1 {
                    self.dirty.push(key);
                }
                Route::Buffered
            }
        }
    }

    /// Answers the parked GETs of sessions that have packets waiting, and
    /// closes sessions that fell too far behind.
    pub fn flush(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            if s.doomed {
                self.close(key, CloseReason::Backlog, now);
                continue;
            }
            if let Carrier::Polling { parked } = &mut s.carrier
                && !s.buffer.is_empty()
                && let Some(req) = parked.take()
            {
                self.answer_poll(key, req);
            }
        }
    }

    /// Answers a poll with up to [`MAX_PACKETS_PER_POLL`] buffered packets.
    /// A closing session whose close packet went out with them is gone.
    fn answer_poll(&mut self, key: SessionKey, req: RequestId) {
        let s = self
            .sessions
            .get_mut(&key)
            .expect("a poll is answered on a session that exists");
        let payload = s.take_payload();
        let done = s.closing && s.buffer.is_empty();
        self.respond(req, HttpResponse::text(payload));
        if done {
            self.forget(key);
        }
    }

    /// The server is shutting down: from now on a handshake is answered
    /// with 503 and a WebSocket (new, or an upgrade's probe) is closed with
    /// close code 1001 at once. Open sessions go on until
    /// [`Engine::go_away`].
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Whether [`Engine::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Closes every session because the server goes away (draining from
    /// now on, if it was not): a WebSocket with close code 1001 after what
    /// is queued on it; a polling session hands what it has buffered, then
    /// the close packet, to its next polls, and reads nothing more (one
    /// that does not poll within the ping timeout is dropped). The layer
    /// above hears every close at once.
    pub fn go_away(&mut self, now: Instant) {
        self.draining = true;
        let mut keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            self.close(key, CloseReason::ServerClose, now);
        }
    }

    /// Closes a session from the server side.
    pub fn close(&mut self, key: SessionKey, reason: CloseReason, now: Instant) {
        self.close_inner(key, reason, now, true);
    }

    fn close_inner(&mut self, key: SessionKey, reason: CloseReason, now: Instant, notify: bool) {
        let going_away = self.draining && reason == CloseReason::ServerClose;
        let code = if going_away {
            GOING_AWAY
        } else {
            NORMAL_CLOSURE
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.closing {
            // Closed already, and the layer above told: its last packets
            // were not all taken (a double poll, or no poll in time).
            return self.forget(key);
        }
        if going_away && matches!(s.carrier, Carrier::Polling { .. }) && !s.doomed {
            // The buffered packets (acks among them) go out first, then the
            // close packet, to the next polls; the session stays until then.
            s.closing = true;
            let close = Frame::Text(Bytes::from_static(b"1"));
            s.buffered += packet::payload_len(&close) + 1;
            s.buffer.push(close);
            s.awaiting_pong = true;
            s.deadline = now + self.config.ping_timeout;
            s.upgrade_deadline = None;
            s.noop_at = None;
            let probe = s.probe.take();
            self.timers.push(s.deadline, key);
            self.dirty.push(key);
            if let Some((conn, _)) = probe {
                self.conns.remove(&conn);
                self.ws_close(conn, code);
            }
            self.events.push_back(Event::Closed {
                key,
                transport: Transport::Polling,
                reason,
            });
            return;
        }
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        self.by_sid.remove(&s.sid);
        let transport = s.carrier.transport();
        self.events.push_back(Event::Closed {
            key,
            transport,
            reason,
        });
        if let Some((conn, _)) = s.probe {
            self.conns.remove(&conn);
            self.ws_close(conn, code);
        }
        match s.carrier {
            Carrier::Polling { parked: Some(req) } => {
                let body: &'static [u8] = if reason == CloseReason::ClientClose {
                    b"6"
                } else {
                    b"1"
                };
                self.respond(req, HttpResponse::text(Bytes::from_static(body)));
            }
            Carrier::Polling { parked: None } => {}
            Carrier::WebSocket { conn } => {
                self.conns.remove(&conn);
                if notify {
                    self.ws_close(conn, code);
                }
            }
        }
    }

    /// Drops a closing session (the layer above heard its close already);
    /// a poll still parked on it gets the close packet.
    fn forget(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        self.by_sid.remove(&s.sid);
        if let Carrier::Polling { parked: Some(req) } = s.carrier {
            self.respond(req, HttpResponse::text(Bytes::from_static(b"1")));
        }
    }
}

/// The body of the 503 that refuses a handshake while the server shuts
/// down (code 4, Engine.IO's "Forbidden": the server takes no new session).
const SHUTTING_DOWN: &[u8] = br#"{"code":4,"message":"Server shutting down"}"#;
