//! What a node counts about itself, and what it can tell its host as it
//! happens: plain owned counters ([`Stats`], read through
//! [`Node::stats`](crate::Node::stats)) and, when the host asks for them,
//! [`Notice`]s for its logs.
//!
//! Every label is drawn from a fixed set ([`EventName`], [`RefusalCode`],
//! ...): a client can neither add series nor see its ids, names or tokens
//! in a label or a notice. Counting is a field increment; a broadcast adds
//! its recipients once, not once per recipient.

pub use crate::eio::EioRefusal;
use crate::eio::{CloseReason, SessionKey, Transport};

labels! {
    /// The event names counted under their own label; any other name
    /// counts as [`EventName::Other`], so clients cannot add series.
    EventName {
        /// `chat:send`.
        Send = "chat:send",
        /// `chat:typing`.
        Typing = "chat:typing",
        /// `chat:read`.
        Read = "chat:read",
        /// `chat:join`.
        Join = "chat:join",
        /// `chat:leave`.
        Leave = "chat:leave",
        /// `chat:new-message`.
        NewMessage = "chat:new-message",
        /// `chat:ack`.
        Ack = "chat:ack",
        /// `chat:delivered`.
        Delivered = "chat:delivered",
        /// `error`.
        Error = "error",
        /// Any other name.
        Other = "other",
    }
}

impl EventName {
    /// The label of an event name.
    pub fn of(name: &str) -> EventName {
        EventName::ALL
            .iter()
            .copied()
            .find(|e| *e != EventName::Other && e.as_str() == name)
            .unwrap_or(EventName::Other)
    }
}

labels! {
    /// Why an application refused an event (its `error`'s `code`).
    RefusalCode {
        /// The payload broke a rule.
        Invalid = "invalid",
        /// The sender's rate limit (or its socket's event budget) ran out.
        RateLimited = "rate_limited",
        /// A `chat:join` past the socket's most chats.
        TooManyChats = "too_many_chats",
        /// The store failed.
        StoreUnavailable = "store_unavailable",
        /// The server is shutting down and starts no new work.
        ShuttingDown = "shutting_down",
        /// Any other code.
        Other = "other",
    }
}

impl RefusalCode {
    /// The label of a refusal's code.
    pub fn of(code: &str) -> RefusalCode {
        RefusalCode::ALL
            .iter()
            .copied()
            .find(|c| *c != RefusalCode::Other && c.as_str() == code)
            .unwrap_or(RefusalCode::Other)
    }
}

labels! {
    /// Why a Socket.IO CONNECT was answered with CONNECT_ERROR.
    ConnectRefusal {
        /// No such namespace.
        InvalidNamespace = "invalid_namespace",
        /// The application refused it (the chat: no valid token).
        Unauthorized = "unauthorized",
    }
}

labels! {
    /// Why credentials were refused: never the token or password itself.
    AuthFailure {
        /// No token was offered.
        MissingToken = "missing_token",
        /// The token is malformed, forged, or of a refused algorithm.
        InvalidToken = "invalid_token",
        /// The token has expired.
        ExpiredToken = "expired_token",
        /// Unknown user or wrong password (a login).
        BadCredentials = "bad_credentials",
    }
}

impl From<crate::auth::TokenError> for AuthFailure {
    fn from(e: crate::auth::TokenError) -> Self {
        match e {
            crate::auth::TokenError::Expired => AuthFailure::ExpiredToken,
            _ => AuthFailure::InvalidToken,
        }
    }
}

labels! {
    /// What an entry of the cluster's bus is ([`crate::bus::Word::kind`]).
    BusKind {
        /// A room emit, or an emit to one socket.
        Broadcast = "broadcast",
        /// A send's place in its room's order.
        Place = "place",
        /// A place given up.
        Abandon = "abandon",
        /// Word that a node's emit reached a socket.
        Handed = "handed",
        /// A socket's session, for recovery elsewhere.
        Session = "session",
        /// A socket lost its transport, or left.
        Gone = "gone",
        /// A session taken over by another node.
        TakenOver = "taken_over",
        /// A node is alive.
        Alive = "alive",
        /// A polling request, its answer, or a relayed WebSocket's frame,
        /// between two nodes.
        Forward = "forward",
        /// Anything else (another version's, or garbage).
        Other = "other",
    }
}

/// The label of a transport.
pub fn transport_label(t: Transport) -> &'static str {
    match t {
        Transport::Polling => "polling",
        Transport::WebSocket => "websocket",
    }
}

/// Every transport, in the order of [`Stats`]' arrays.
pub const TRANSPORTS: [Transport; 2] = [Transport::Polling, Transport::WebSocket];

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Polling => 0,
        Transport::WebSocket => 1,
    }
}

/// Every session close reason, in the order of [`Stats::disconnects`]
/// (one [`CloseReason::ProtocolError`] stands for every violation).
pub const CLOSE_REASONS: [CloseReason; 6] = [
    CloseReason::ClientClose,
    CloseReason::TransportClose,
    CloseReason::PingTimeout,
    CloseReason::ProtocolError(crate::eio::Violation::BadPacket),
    CloseReason::Backlog,
    CloseReason::ServerClose,
];

/// The label of a close reason.
pub fn close_label(r: CloseReason) -> &'static str {
    match r {
        CloseReason::ClientClose => "client_close",
        CloseReason::TransportClose => "transport_close",
        CloseReason::PingTimeout => "ping_timeout",
        CloseReason::ProtocolError(_) => "protocol_error",
        CloseReason::Backlog => "slow_consumer",
        CloseReason::ServerClose => "server_close",
    }
}

fn close_index(r: CloseReason) -> usize {
    // Every violation counts as one reason.
    CLOSE_REASONS
        .iter()
        .position(|c| std::mem::discriminant(c) == std::mem::discriminant(&r))
        .expect("CLOSE_REASONS lists every reason")
}

/// A node's counters since it started. Arrays are indexed in the order of
/// the label type's `ALL` (or [`TRANSPORTS`], [`CLOSE_REASONS`]); use the
/// getters to read one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Engine.IO sessions opened, by the transport of their handshake.
    pub handshakes: [u64; 2],
    /// Engine.IO sessions open now, by the transport they use now.
    pub open: [u64; 2],
    /// Sessions upgraded from polling to WebSocket.
    pub upgrades: u64,
    /// Engine.IO requests refused, by [`EioRefusal`].
    pub eio_refusals: [u64; EioRefusal::N],
    /// Sessions closed, by reason ([`CLOSE_REASONS`]).
    pub disconnects: [u64; CLOSE_REASONS.len()],
    /// Socket.IO CONNECTs accepted.
    pub connects: u64,
    /// Socket.IO CONNECTs refused, by [`ConnectRefusal`].
    pub connect_errors: [u64; ConnectRefusal::N],
    /// Credentials refused on a CONNECT, by [`AuthFailure`].
    pub auth_failures: [u64; AuthFailure::N],
    /// Client events received, by [`EventName`].
    pub events_in: [u64; EventName::N],
    /// Server events handed to sockets, by [`EventName`] (a broadcast
    /// counts once per recipient).
    pub events_out: [u64; EventName::N],
    /// Packets a broadcast handed to recipient sockets.
    pub deliveries: u64,
    /// Events refused, by [`EventName`] then [`RefusalCode`].
    pub refusals: [[u64; RefusalCode::N]; EventName::N],
    /// In a cluster: entries read from the bus, by [`BusKind`].
    pub bus_in: [u64; BusKind::N],
    /// Their bytes, by [`BusKind`].
    pub bus_in_bytes: [u64; BusKind::N],
    /// Entries published on the bus, by [`BusKind`].
    pub bus_out: [u64; BusKind::N],
    /// Their bytes, by [`BusKind`].
    pub bus_out_bytes: [u64; BusKind::N],
    /// Entries read that could not be read: another version's, or not an
    /// entry at all (each also counted in `bus_in`).
    pub bus_undecodable: u64,
    /// Entries read a second time (their host published them twice) and
    /// passed over (each also counted in `bus_in`).
    pub bus_duplicates: u64,
    /// Places in rooms' orders held now, waiting for their broadcasts.
    pub bus_held_places: u64,
    /// Places passed over before their broadcast came (their node silent
    /// on the bus, or held too long).
    pub bus_places_passed: u64,
    /// Placed broadcasts whose place this node did not hold (passed over,
    /// lost with the stream, or from before it joined).
    pub bus_unplaced: u64,
    /// Times the host found that the bus lost entries this node had not
    /// read ([`crate::Input::ClusterGap`]).
    pub bus_gaps: u64,
}

impl Stats {
    /// Sessions opened with this transport.
    pub fn handshakes(&self, t: Transport) -> u64 {
        self.handshakes[transport_index(t)]
    }

    /// Sessions open on this transport now.
    pub fn open(&self, t: Transport) -> u64 {
        self.open[transport_index(t)]
    }

    /// Sessions closed for this reason.
    pub fn disconnects(&self, r: CloseReason) -> u64 {
        self.disconnects[close_index(r)]
    }

    /// Engine.IO requests refused for this reason.
    pub fn eio_refusals(&self, r: EioRefusal) -> u64 {
        self.eio_refusals[r as usize]
    }

    /// CONNECTs refused for this reason.
    pub fn connect_errors(&self, r: ConnectRefusal) -> u64 {
        self.connect_errors[r as usize]
    }

    /// CONNECT credentials refused for this reason.
    pub fn auth_failures(&self, r: AuthFailure) -> u64 {
        self.auth_failures[r as usize]
    }

    /// Client events received with this name.
    pub fn events_in(&self, e: EventName) -> u64 {
        self.events_in[e as usize]
    }

    /// Server events with this name handed to sockets.
    pub fn events_out(&self, e: EventName) -> u64 {
        self.events_out[e as usize]
    }

    /// Events with this name refused with this code.
    pub fn refusals(&self, e: EventName, c: RefusalCode) -> u64 {
        self.refusals[e as usize][c as usize]
    }

    pub(crate) fn opened(&mut self, t: Transport) {
        self.handshakes[transport_index(t)] += 1;
        self.open[transport_index(t)] += 1;
    }

    pub(crate) fn upgraded(&mut self) {
        self.upgrades += 1;
        self.open[transport_index(Transport::Polling)] -= 1;
        self.open[transport_index(Transport::WebSocket)] += 1;
    }

    pub(crate) fn closed(&mut self, t: Transport, r: CloseReason) {
        self.open[transport_index(t)] -= 1;
        self.disconnects[close_index(r)] += 1;
    }
}

/// Something that happened in the node, for the host's logs; emitted as
/// [`Output::Notice`](crate::Output::Notice) only after
/// [`Node::set_notices`](crate::Node::set_notices), so a host that logs
/// nothing pays nothing. It carries no id a client chose, no token, no name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// An Engine.IO session opened.
    Opened {
        /// The session.
        session: SessionKey,
        /// Its transport.
        transport: Transport,
    },
    /// A session moved from polling to WebSocket.
    Upgraded {
        /// The session.
        session: SessionKey,
    },
    /// An Engine.IO session closed.
    Closed {
        /// The session.
        session: SessionKey,
        /// The transport it used last.
        transport: Transport,
        /// Why.
        reason: CloseReason,
    },
    /// An Engine.IO request was refused.
    Refused {
        /// Why.
        reason: EioRefusal,
    },
    /// A Socket.IO CONNECT was accepted.
    Connected {
        /// The session.
        session: SessionKey,
    },
    /// A Socket.IO CONNECT was answered with CONNECT_ERROR.
    ConnectRefused {
        /// The session.
        session: SessionKey,
        /// Why.
        reason: ConnectRefusal,
    },
    /// Credentials offered on a CONNECT were refused.
    AuthFailed {
        /// The session.
        session: SessionKey,
        /// Why.
        why: AuthFailure,
    },
    /// A client event arrived.
    Event {
        /// The session.
        session: SessionKey,
        /// Its name's label.
        name: EventName,
    },
    /// The application refused a client event.
    EventRefused {
        /// The session.
        session: SessionKey,
        /// The event's name's label.
        name: EventName,
        /// The refusal's code.
        code: RefusalCode,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_codes_collapse_to_other() {
        assert_eq!(EventName::of("chat:send"), EventName::Send);
        assert_eq!(EventName::of("error"), EventName::Error);
        assert_eq!(EventName::of("other"), EventName::Other);
        assert_eq!(EventName::of("chat:send "), EventName::Other);
        assert_eq!(EventName::of("507f1f77bcf86cd799439011"), EventName::Other);
        assert_eq!(RefusalCode::of("rate_limited"), RefusalCode::RateLimited);
        assert_eq!(RefusalCode::of("nope"), RefusalCode::Other);
    }

    #[test]
    fn labels_are_distinct_and_arrays_follow_all() {
        for (i, e) in EventName::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
        for (i, r) in CLOSE_REASONS.iter().enumerate() {
            assert_eq!(close_index(*r), i);
        }
        let mut seen: Vec<&str> = CLOSE_REASONS.iter().map(|r| close_label(*r)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), CLOSE_REASONS.len());
    }

    #[test]
    fn open_gauges_follow_upgrades_and_closes() {
        let mut s = Stats::default();
        s.opened(Transport::Polling);
        s.opened(Transport::WebSocket);
        s.upgraded();
        assert_eq!(s.open(Transport::Polling), 0);
        assert_eq!(s.open(Transport::WebSocket), 2);
        s.closed(Transport::WebSocket, CloseReason::PingTimeout);
        assert_eq!(s.open(Transport::WebSocket), 1);
        assert_eq!(s.handshakes(Transport::Polling), 1);
        assert_eq!(s.disconnects(CloseReason::PingTimeout), 1);
        assert_eq!(s.upgrades, 1);
    }
}
