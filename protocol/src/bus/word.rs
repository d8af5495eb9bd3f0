//! The cluster's one vocabulary: every kind of entry a node publishes on
//! the bus, as JSON whose `t` tag comes first. The node decodes an entry
//! once ([`Word::decode`]) and hands it on typed: the words between two
//! nodes about one Engine.IO session (a forwarded polling request and its
//! answer, a relayed WebSocket's frames: [`Word::is_forward`]) to its
//! forwarding, the rest to the layer above ([`crate::Upper::on_cluster`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Entry, Topic};
use crate::stats::BusKind;
use crate::store::Place;

/// One entry of the bus, decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
#[non_exhaustive]
pub enum Word {
    // ---- between two nodes, about a session one of them holds
    /// A polling request for `to`'s session, from `from`'s request `req`.
    #[serde(rename = "fq")]
    Request {
        /// The node holding the session.
        to: String,
        /// The node the request reached.
        from: String,
        /// `from`'s number for it.
        req: u64,
        /// A GET (else a POST).
        get: bool,
        /// Its query string.
        query: String,
        /// Its `Authorization` header.
        authorization: Option<String>,
        /// Its body.
        body: String,
    },
    /// The answer to `to`'s request `req`.
    #[serde(rename = "fr")]
    Response {
        /// The node the request reached.
        to: String,
        /// Its number for it.
        req: u64,
        /// The answer's status.
        status: u16,
        /// Its content type.
        content_type: String,
        /// Its body.
        body: String,
    },
    /// `from`'s client of request `req` went away.
    #[serde(rename = "fa")]
    Aborted {
        /// The node holding the session.
        to: String,
        /// The node the request reached.
        from: String,
        /// `from`'s number for it.
        req: u64,
    },
    /// A WebSocket for `to`'s session reached `from` (its connection `conn`).
    #[serde(rename = "fo")]
    WsOpen {
        /// The node holding the session.
        to: String,
        /// The node the connection reached.
        from: String,
        /// `from`'s number for it.
        conn: u64,
        /// The upgrade request's query string.
        query: String,
        /// Its `Authorization` header.
        authorization: Option<String>,
    },
    /// A frame from the client of `from`'s connection `conn`, for `to`.
    #[serde(rename = "fi")]
    WsIn {
        /// The node holding the session.
        to: String,
        /// The node holding the connection.
        from: String,
        /// `from`'s number for it.
        conn: u64,
        /// The frame.
        frame: WireFrame,
    },
    /// The client of `from`'s connection `conn` went away.
    #[serde(rename = "fe")]
    WsGone {
        /// The node holding the session.
        to: String,
        /// The node holding the connection.
        from: String,
        /// `from`'s number for it.
        conn: u64,
    },
    /// A frame the holder writes to `to`'s connection `conn`.
    #[serde(rename = "ft")]
    WsOut {
        /// The node holding the connection.
        to: String,
        /// Its number for it.
        conn: u64,
        /// The frame.
        frame: WireFrame,
    },
    /// The holder closes `to`'s connection `conn` with `code`.
    #[serde(rename = "fc")]
    WsClose {
        /// The node holding the connection.
        to: String,
        /// Its number for it.
        conn: u64,
        /// The close frame's code.
        code: u16,
    },

    // ---- the Socket.IO layer's
    /// A room emit, for every node's members of the room.
    #[serde(rename = "b")]
    Broadcast {
        /// The node that made it.
        from: String,
        /// Its number there.
        seq: u64,
        /// The namespace.
        nsp: String,
        /// The room.
        room: String,
        /// The sids of the sockets left out.
        except: Vec<String>,
        /// The encoded packet.
        text: String,
        /// Whether `from` wants to hear that someone got it.
        #[serde(default)]
        track: bool,
        /// For the one socket with this sid instead of a room (with
        /// recovery on, every recoverable emit travels so that every node
        /// logs it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// For `to`: not logged, never replayed (an ack).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        volatile: bool,
        /// The packet's binary attachments, base64 (standard, padded).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
        /// The ticket of its [`Word::Place`]: it reaches the room in
        /// that place's order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        placed: Option<String>,
        /// Names what it carries (a message's id): a node that handed one
        /// with this key to the room lately drops it (a retry of a send
        /// publishes its message again when it cannot tell it went out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Where on the bus an earlier place of the same message is (a
        /// retry's broadcast of what its first send stored): it fills that
        /// place, if held, instead of its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        belongs: Option<Place>,
    },
    /// A send's place in its room's order, put on the bus in the same step
    /// as its token's take ([`crate::store::TakeToken::place`]): the
    /// room's later placed broadcasts wait for the one with this ticket
    /// (or its [`Word::Abandon`]) for a while (the layer's hold).
    #[serde(rename = "p")]
    Place {
        /// The node whose send holds it.
        from: String,
        /// The namespace.
        nsp: String,
        /// The room.
        room: String,
        /// The send's ticket.
        ticket: String,
    },
    /// The send holding the place `ticket` publishes nothing (its store
    /// write failed, or it stopped waiting for its take).
    #[serde(rename = "x")]
    Abandon {
        /// The namespace.
        nsp: String,
        /// The room.
        room: String,
        /// The send's ticket.
        ticket: String,
    },
    /// With recovery on: a socket's session as the node holding it has it
    /// (it connected, came back, joined or left a room).
    #[serde(rename = "s")]
    Session {
        /// The node holding it.
        node: String,
        /// Its private id (what a client recovers with).
        pid: String,
        /// Its socket id.
        sid: String,
        /// Its namespace.
        nsp: String,
        /// Its rooms.
        rooms: Vec<String>,
        /// The application's data of the socket.
        data: Value,
    },
    /// A socket lost its transport (`kept`: it may come back) or left.
    #[serde(rename = "g")]
    Gone {
        /// Its private id.
        pid: String,
        /// Whether it may come back.
        kept: bool,
    },
    /// Node `by` took the session of `pid` over (its client came back
    /// there): whoever still holds it lets it go.
    #[serde(rename = "o")]
    TakenOver {
        /// The node that took it.
        by: String,
        /// Its private id.
        pid: String,
    },
    /// Node `node` is alive.
    #[serde(rename = "l")]
    Alive {
        /// Its name.
        node: String,
    },
    /// A node handed `to`'s emit `seq` (and those in `more`) to at least
    /// one socket: one word for all it handed on in one batch of its
    /// inputs.
    #[serde(rename = "h")]
    Handed {
        /// The node that made the emits.
        to: String,
        /// One of them.
        seq: u64,
        /// The others.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<u64>,
    },
}

/// A WebSocket frame on the bus: text as it is, binary in base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireFrame {
    /// A text frame.
    #[serde(rename = "t")]
    Text(String),
    /// A binary frame, in base64 (standard, padded).
    #[serde(rename = "b")]
    Binary(String),
}

impl WireFrame {
    pub(crate) fn of(frame: &crate::host::Frame) -> Self {
        use base64::Engine as _;
        match frame {
            crate::host::Frame::Text(b) => WireFrame::Text(String::from_utf8_lossy(b).into_owned()),
            crate::host::Frame::Binary(b) => {
                WireFrame::Binary(base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
    }

    /// The frame, `None` for base64 that is not.
    pub(crate) fn frame(self) -> Option<crate::host::Frame> {
        use base64::Engine as _;
        Some(match self {
            WireFrame::Text(t) => crate::host::Frame::Text(Bytes::from(t)),
            WireFrame::Binary(b) => crate::host::Frame::Binary(Bytes::from(
                base64::engine::general_purpose::STANDARD.decode(b).ok()?,
            )),
        })
    }
}

impl Word {
    /// Its JSON; the node seals it into an entry ([`crate::bus`]) as it
    /// publishes it.
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a word of the bus always serializes"))
    }

    /// The word an entry's JSON is, if it is one of this vocabulary.
    pub fn decode(json: &[u8]) -> Option<Self> {
        serde_json::from_slice(json).ok()
    }

    /// It as an entry for the bus, to the topic it goes to
    /// ([`Word::topic`]).
    pub(crate) fn entry(&self, spread: bool) -> Entry {
        Entry {
            topic: self.topic(spread),
            kind: self.kind(),
            bytes: self.encode(),
        }
    }

    /// What it is, for the counters.
    pub fn kind(&self) -> BusKind {
        match self {
            Word::Broadcast { .. } => BusKind::Broadcast,
            Word::Place { .. } => BusKind::Place,
            Word::Abandon { .. } => BusKind::Abandon,
            Word::Handed { .. } => BusKind::Handed,
            Word::Session { .. } => BusKind::Session,
            Word::Gone { .. } => BusKind::Gone,
            Word::TakenOver { .. } => BusKind::TakenOver,
            Word::Alive { .. } => BusKind::Alive,
            _ => BusKind::Forward,
        }
    }

    /// Whether it is between two nodes about one Engine.IO session (the
    /// node runs it, not the layer above), and the node it is for.
    pub(crate) fn forward_to(&self) -> Option<&str> {
        match self {
            Word::Request { to, .. }
            | Word::Response { to, .. }
            | Word::Aborted { to, .. }
            | Word::WsOpen { to, .. }
            | Word::WsIn { to, .. }
            | Word::WsGone { to, .. }
            | Word::WsOut { to, .. }
            | Word::WsClose { to, .. } => Some(to),
            _ => None,
        }
    }

    /// Whether it is between two nodes about one Engine.IO session.
    pub fn is_forward(&self) -> bool {
        self.forward_to().is_some()
    }

    /// Whether node `node` published it, or it is addressed to `node`.
    pub(crate) fn concerns(&self, node: &str) -> bool {
        match self {
            Word::Broadcast { from, .. } => from == node,
            Word::Handed { to, .. } => to == node,
            Word::Session { node: n, .. }
            | Word::Alive { node: n }
            | Word::Place { from: n, .. } => n == node,
            Word::TakenOver { by, .. } => by == node,
            Word::Gone { .. } | Word::Abandon { .. } => false,
            forward => forward.forward_to() == Some(node),
        }
    }

    /// The node of the layer above that published it (or whose word it
    /// is), if it names one.
    pub(crate) fn node(&self) -> Option<&str> {
        match self {
            Word::Broadcast { from, .. } | Word::Place { from, .. } => Some(from),
            Word::Session { node, .. } | Word::Alive { node } => Some(node),
            Word::TakenOver { by, .. } => Some(by),
            _ => None,
        }
    }

    /// Which nodes read it: a word between two nodes, and a word of
    /// delivery, go to the node it is for; with `spread` (recovery off), a
    /// room's words go to the nodes with members in it and an emit to one
    /// socket to the node holding it (the one publishing it); with
    /// recovery on, both go to every node, which logs them for any session
    /// to be replayed from. Sessions' words and that a node is alive go to
    /// every node.
    pub fn topic(&self, spread: bool) -> Topic {
        if let Some(to) = self.forward_to() {
            return Topic::Node(to.to_owned());
        }
        match self {
            Word::Broadcast {
                to: Some(_), from, ..
            } if spread => Topic::Node(from.clone()),
            Word::Broadcast {
                to: None,
                nsp,
                room,
                ..
            }
            | Word::Place { nsp, room, .. }
            | Word::Abandon { nsp, room, .. }
                if spread =>
            {
                Topic::Room {
                    nsp: nsp.clone(),
                    room: room.clone(),
                }
            }
            Word::Handed { to, .. } => Topic::Node(to.clone()),
            _ => Topic::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_garbage_is_no_word() {
        let words = [
            Word::Aborted {
                to: "a".into(),
                from: "b".into(),
                req: 3,
            },
            Word::WsIn {
                to: "a".into(),
                from: "b".into(),
                conn: 1,
                frame: WireFrame::Binary("AAE=".into()),
            },
            Word::Alive { node: "n".into() },
            Word::Handed {
                to: "a".into(),
                seq: 1,
                more: vec![2, 3],
            },
            Word::Place {
                from: "a".into(),
                nsp: "/".into(),
                room: "r".into(),
                ticket: "t".into(),
            },
        ];
        for w in words {
            assert_eq!(Word::decode(&w.encode()), Some(w.clone()));
            assert_eq!(w.entry(true).kind, w.kind());
        }
        for garbage in [&b""[..], b"{}", br#"{"t":"zz"}"#, br#"{"t":"l"}"#, b"[1]"] {
            assert_eq!(Word::decode(garbage), None);
        }
    }

    #[test]
    fn a_word_between_two_nodes_goes_to_the_one_it_is_for() {
        let w = Word::Aborted {
            to: "a".into(),
            from: "b".into(),
            req: 3,
        };
        assert!(w.is_forward());
        assert_eq!(w.kind(), BusKind::Forward);
        assert_eq!(w.topic(false), Topic::Node("a".into()));
        assert_eq!(w.topic(true), Topic::Node("a".into()));
        assert!(w.concerns("a"));
        assert!(!w.concerns("b"));
        let alive = Word::Alive { node: "a".into() };
        assert!(!alive.is_forward());
        assert_eq!(alive.topic(true), Topic::All);
        let placed = Word::Place {
            from: "a".into(),
            nsp: "/".into(),
            room: "r".into(),
            ticket: "t".into(),
        };
        assert_eq!(placed.topic(false), Topic::All);
        assert_eq!(
            placed.topic(true),
            Topic::Room {
                nsp: "/".into(),
                room: "r".into()
            }
        );
    }
}
