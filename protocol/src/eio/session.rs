//! Every transition of Engine.IO sessions lives here: the handshake, the
//! heartbeat, long-polling, WebSocket, the upgrade, and close.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::packet::{self, Data, OutPacket, Packet};
use super::{RequestError, Transport, parse_query};
use crate::deadlines::Deadlines;
use crate::ids::{IdGenerator, IntMap, new_sid};
use crate::node::{ConnId, Frame, HttpResponse, Method, Output, RequestId};
use crate::stats::{EioRefusal, Notice, Stats};
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
    /// The client broke the protocol.
    ProtocolError,
    /// The client fell too far behind.
    Backlog,
    /// The server closed it.
    ServerClose,
}

/// The layer above the engine: it receives opened sessions, messages and closes.
pub trait EngineHandler {
    /// A session opened.
    fn on_open(&mut self, engine: &mut Engine, key: SessionKey, now: Instant);
    /// A message arrived on a session.
    fn on_message(&mut self, engine: &mut Engine, key: SessionKey, data: Data<'_>, now: Instant);
    /// A session closed; it is already gone from the engine.
    fn on_close(&mut self, engine: &mut Engine, key: SessionKey, reason: CloseReason, now: Instant);
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
    buffer: Vec<OutPacket>,
    buffered: usize,
    /// Fell too far behind; closed at the next flush.
    doomed: bool,
    /// Closed as the server goes away, the layer above told: a polling
    /// session stays only to hand its buffered packets, the close packet
    /// last, to its next polls. Nothing more is sent on it or read from it.
    closing: bool,
    awaiting_pong: bool,
    deadline: Instant,
    handshake: Handshake,
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
            .map(|p| p.payload_len() + 1)
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
pub struct Engine {
    config: EngineConfig,
    pub(crate) ids: Box<dyn IdGenerator>,
    sessions: IntMap<SessionKey, Session>,
    by_sid: HashMap<Arc<str>, SessionKey>,
    conns: IntMap<ConnId, Role>,
    timers: Deadlines<SessionKey>,
    dirty: Vec<SessionKey>,
    next_key: u64,
    pub(crate) outputs: std::collections::VecDeque<Output>,
    pub(crate) stats: Stats,
    /// Whether the host asked for [`Notice`]s.
    pub(crate) notices: bool,
    /// The server is shutting down: no new session or upgrade.
    draining: bool,
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
    pub fn new(config: EngineConfig, ids: Box<dyn IdGenerator>) -> Self {
        Engine {
            config,
            ids,
            sessions: IntMap::default(),
            by_sid: HashMap::new(),
            conns: IntMap::default(),
            timers: Deadlines::new(),
            dirty: Vec::new(),
            next_key: 0,
            outputs: Default::default(),
            stats: Stats::default(),
            notices: false,
            draining: false,
        }
    }

    /// The node's counters (every layer counts here).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Tells the host what happened, if it asked to be told.
    pub(crate) fn notice(&mut self, n: Notice) {
        if self.notices {
            self.outputs.push_back(Output::Notice(n));
        }
    }

    /// Counts a refused request and tells the host.
    fn refused(&mut self, reason: EioRefusal) {
        self.stats.eio_refusals[reason as usize] += 1;
        self.notice(Notice::Refused { reason });
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

    /// What the client's handshake carried.
    pub fn handshake(&self, key: SessionKey) -> Option<&Handshake> {
        self.sessions.get(&key).map(|s| &s.handshake)
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
        self.outputs
            .push_back(Output::HttpResponse { req, response });
    }

    fn error(&mut self, req: RequestId, e: RequestError) {
        self.refused(e.into());
        self.respond(req, HttpResponse::json(400, Bytes::from(e.body())));
    }

    fn new_session(&mut self, carrier: Carrier, handshake: Handshake, now: Instant) -> SessionKey {
        self.next_key += 1;
        let mut tries = 0;
        let sid: Arc<str> = loop {
            let s = new_sid(&mut *self.ids);
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
        self.stats.opened(transport);
        self.notice(Notice::Opened {
            session: key,
            transport,
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
                handshake,
            },
        );
        self.timers.push(deadline, key);
        key
    }

    fn open_packet(&self, key: SessionKey, upgrades: bool) -> OutPacket {
        let s = &self.sessions[&key];
        let open = format!(
            r#"{{"sid":"{}","upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            s.sid,
            if upgrades { r#""websocket""# } else { "" },
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload
        );
        OutPacket::text(b'0', &open)
    }

    /// An HTTP request on the Engine.IO path (long-polling, or a handshake).
    #[allow(clippy::too_many_arguments)] // one argument per part of the request the protocol reads
    pub fn handle_http<H: EngineHandler>(
        &mut self,
        h: &mut H,
        req: RequestId,
        method: Method,
        query: &str,
        authorization: Option<&str>,
        body: &[u8],
        now: Instant,
    ) {
        let q = match parse_query(query) {
            Ok(q) => q,
            Err(e) => return self.error(req, e),
        };
        if q.transport != Transport::Polling {
            return self.error(req, RequestError::BadRequest);
        }
        let Some(sid) = q.sid else {
            if method != Method::Get {
                return self.error(req, RequestError::BadHandshakeMethod);
            }
            if self.draining {
                self.refused(EioRefusal::ShuttingDown);
                return self.respond(
                    req,
                    HttpResponse::json(503, Bytes::from_static(SHUTTING_DOWN)),
                );
            }
            let handshake = Handshake {
                query: query.to_owned(),
                authorization: authorization.map(str::to_owned),
            };
            let key = self.new_session(Carrier::Polling { parked: None }, handshake, now);
            let open = self.open_packet(key, true);
            self.respond(req, HttpResponse::text(packet::encode_payload(&[open])));
            h.on_open(self, key, now);
            return;
        };
        let Some(&key) = self.by_sid.get(sid) else {
            return self.error(req, RequestError::SessionIdUnknown);
        };
        let s = self
            .sessions
            .get_mut(&key)
            .expect("by_sid and sessions hold the same keys");
        let Carrier::Polling { parked } = &mut s.carrier else {
            return self.error(req, RequestError::BadRequest);
        };
        match method {
            Method::Get => {
                if let Some(first) = parked.take() {
                    self.error(req, RequestError::BadRequest);
                    self.respond(first, HttpResponse::text(Bytes::from_static(b"1")));
                    self.close(h, key, CloseReason::ProtocolError, now);
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
                    return self.close(h, key, CloseReason::ProtocolError, now);
                }
                let packets = match packet::decode_payload(body) {
                    Ok(p) => p,
                    Err(_) => {
                        self.error(req, RequestError::BadRequest);
                        return self.close(h, key, CloseReason::ProtocolError, now);
                    }
                };
                // Check the whole payload first: a bad record refuses it all.
                let packets: Result<Vec<_>, _> = packets.collect();
                let Ok(packets) = packets else {
                    self.error(req, RequestError::BadRequest);
                    return self.close(h, key, CloseReason::ProtocolError, now);
                };
                self.respond(req, HttpResponse::ok());
                for p in packets {
                    if !self.sessions.contains_key(&key) {
                        break;
                    }
                    self.handle_packet(h, key, p, now);
                }
            }
            Method::Other => self.error(req, RequestError::BadRequest),
        }
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
    pub fn handle_ws_open<H: EngineHandler>(
        &mut self,
        h: &mut H,
        conn: ConnId,
        query: &str,
        authorization: Option<&str>,
        now: Instant,
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
                let key = self.new_session(Carrier::WebSocket { conn }, handshake, now);
                self.conns.insert(conn, Role::Main(key));
                let open = self.open_packet(key, false);
                self.send(key, open);
                h.on_open(self, key, now);
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

    /// A WebSocket frame arrived.
    pub fn handle_ws_frame<H: EngineHandler>(
        &mut self,
        h: &mut H,
        conn: ConnId,
        frame: WsData<'_>,
        now: Instant,
    ) {
        let Some(&role) = self.conns.get(&conn) else {
            return;
        };
        let len = match &frame {
            WsData::Text(t) => t.len(),
            WsData::Binary(b) => b.len(),
        };
        let (key, decoded) = match (role, frame) {
            (Role::Main(key), _) if len > self.config.max_payload => {
                return self.close(h, key, CloseReason::ProtocolError, now);
            }
            (Role::Main(key), WsData::Text(t)) => (key, packet::decode_text(t)),
            (Role::Main(key), WsData::Binary(b)) => (key, Ok(Packet::Message(Data::Binary(b)))),
            (Role::Probe(key), WsData::Text(t)) => return self.handle_probe(key, conn, t),
            (Role::Probe(key), WsData::Binary(_)) => return self.drop_probe(key, conn),
        };
        match decoded {
            Ok(p) => self.handle_packet(h, key, p, now),
            Err(_) => self.close(h, key, CloseReason::ProtocolError, now),
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
                self.outputs.push_back(Output::WsFrame {
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
                self.stats.upgraded();
                self.conns.insert(conn, Role::Main(key));
                let buffered = std::mem::take(&mut s.buffer);
                s.buffered = 0;
                self.notice(Notice::Upgraded { session: key });
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
        self.outputs.push_back(Output::WsClose { conn, code });
    }

    /// A WebSocket connection closed (by the peer or the network), or the
    /// host dropped it for `reason` ([`CloseReason::Backlog`]: its client
    /// fell too far behind).
    pub fn handle_ws_closed<H: EngineHandler>(
        &mut self,
        h: &mut H,
        conn: ConnId,
        reason: CloseReason,
        now: Instant,
    ) {
        match self.conns.remove(&conn) {
            Some(Role::Main(key)) => self.close_inner(h, key, reason, now, false),
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

    fn handle_packet<H: EngineHandler>(
        &mut self,
        h: &mut H,
        key: SessionKey,
        p: Packet<'_>,
        now: Instant,
    ) {
        match p {
            Packet::Message(data) => h.on_message(self, key, data, now),
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
                let pong = OutPacket::text(b'3', data);
                self.send(key, pong);
            }
            Packet::Close => self.close(h, key, CloseReason::ClientClose, now),
            Packet::Noop => {}
            Packet::Upgrade => self.close(h, key, CloseReason::ProtocolError, now),
        }
    }

    /// Fires the heartbeats, upgrade timeouts and upgrade noops that are due.
    pub fn handle_timeout<H: EngineHandler>(&mut self, h: &mut H, now: Instant) {
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
                self.close(h, key, CloseReason::PingTimeout, now);
            } else {
                s.awaiting_pong = true;
                // From the scheduled time, not the (possibly late) firing time.
                s.deadline = t + timeout;
                self.timers.push(s.deadline, key);
                self.send(key, OutPacket::Text(Bytes::from_static(b"2")));
            }
        }
    }

    /// Queues a packet on a session: straight to its WebSocket, or into its
    /// polling buffer (released to the parked GET by [`Engine::flush`]).
    ///
    /// Returns false if the session is gone.
    pub fn send(&mut self, key: SessionKey, p: OutPacket) -> bool {
        match self.route(key, &p) {
            Route::Gone => false,
            Route::Buffered => true,
            Route::WebSocket(conn) => {
                let frame = match p {
                    OutPacket::Text(b) => Frame::Text(b),
                    OutPacket::Binary(b) => Frame::Binary(b),
                };
                self.outputs.push_back(Output::WsFrame { conn, frame });
                true
            }
        }
    }

    /// Queues one text packet on many sessions, encoded once: polling
    /// sessions buffer it as [`Engine::send`] would, and the WebSocket
    /// connections come back in order, for the caller to name in one
    /// [`Output::Broadcast`] (which it queues before anything else is
    /// sent). Returns how many sessions took it, and those connections.
    pub(crate) fn send_many(
        &mut self,
        keys: impl IntoIterator<Item = SessionKey>,
        text: &Bytes,
    ) -> (usize, Vec<ConnId>) {
        let p = OutPacket::Text(text.clone());
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
    fn route(&mut self, key: SessionKey, p: &OutPacket) -> Route {
        let Some(s) = self.sessions.get_mut(&key) else {
            return Route::Gone;
        };
        if s.doomed || s.closing {
            return Route::Gone;
        }
        match s.carrier {
            Carrier::WebSocket { conn } => Route::WebSocket(conn),
            Carrier::Polling { parked } => {
                s.buffered += p.payload_len() + 1;
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
    pub fn flush<H: EngineHandler>(&mut self, h: &mut H, now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            if s.doomed {
                self.close(h, key, CloseReason::Backlog, now);
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
    pub fn go_away<H: EngineHandler>(&mut self, h: &mut H, now: Instant) {
        self.draining = true;
        let mut keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            self.close(h, key, CloseReason::ServerClose, now);
        }
    }

    /// Closes a session from the server side.
    pub fn close<H: EngineHandler>(
        &mut self,
        h: &mut H,
        key: SessionKey,
        reason: CloseReason,
        now: Instant,
    ) {
        self.close_inner(h, key, reason, now, true);
    }

    fn close_inner<H: EngineHandler>(
        &mut self,
        h: &mut H,
        key: SessionKey,
        reason: CloseReason,
        now: Instant,
        notify: bool,
    ) {
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
            let close = OutPacket::Text(Bytes::from_static(b"1"));
            s.buffered += close.payload_len() + 1;
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
            self.stats.closed(Transport::Polling, reason);
            self.notice(Notice::Closed {
                session: key,
                transport: Transport::Polling,
                reason,
            });
            return h.on_close(self, key, reason, now);
        }
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        self.by_sid.remove(&s.sid);
        let transport = s.carrier.transport();
        self.stats.closed(transport, reason);
        self.notice(Notice::Closed {
            session: key,
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
        h.on_close(self, key, reason, now);
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

/// The data of a WebSocket frame as the engine reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsData<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame.
    Binary(Bytes),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CounterIds;

    /// Echoes every message back.
    struct Echo;

    impl EngineHandler for Echo {
        fn on_open(&mut self, _: &mut Engine, _: SessionKey, _: Instant) {}
        fn on_message(&mut self, e: &mut Engine, key: SessionKey, data: Data<'_>, _: Instant) {
            if let Data::Text(t) = data {
                e.send(key, OutPacket::text(b'4', t));
            }
        }
        fn on_close(&mut self, _: &mut Engine, _: SessionKey, _: CloseReason, _: Instant) {}
    }

    fn body(e: &mut Engine) -> (u16, String) {
        e.flush(&mut Echo, Instant::now());
        match e.outputs.pop_back() {
            Some(Output::HttpResponse { response, .. }) => (
                response.status,
                String::from_utf8(response.body.to_vec()).unwrap(),
            ),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn a_poll_carries_at_most_sixteen_packets() {
        let now = Instant::now();
        let mut e = Engine::new(EngineConfig::default(), Box::new(CounterIds::default()));
        e.handle_http(
            &mut Echo,
            RequestId(1),
            Method::Get,
            "EIO=4&transport=polling",
            None,
            b"",
            now,
        );
        let (_, open) = body(&mut e);
        let sid = serde_json::from_str::<serde_json::Value>(&open[1..]).unwrap()["sid"]
            .as_str()
            .unwrap()
            .to_owned();
        let q = format!("EIO=4&transport=polling&sid={sid}");
        let payload: Vec<String> = (0..20).map(|i| format!("4m{i}")).collect();
        e.handle_http(
            &mut Echo,
            RequestId(2),
            Method::Post,
            &q,
            None,
            payload.join("\x1e").as_bytes(),
            now,
        );
        assert_eq!(body(&mut e), (200, "ok".to_owned()));
        e.handle_http(&mut Echo, RequestId(3), Method::Get, &q, None, b"", now);
        assert_eq!(body(&mut e).1, payload[..16].join("\x1e"));
        e.handle_http(&mut Echo, RequestId(4), Method::Get, &q, None, b"", now);
        assert_eq!(body(&mut e).1, payload[16..].join("\x1e"));
        // Nothing left: the next GET is parked.
        e.handle_http(&mut Echo, RequestId(5), Method::Get, &q, None, b"", now);
        e.flush(&mut Echo, now);
        assert!(e.outputs.is_empty());
    }
}
