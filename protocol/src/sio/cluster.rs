//! What crosses instances in a cluster, without IO: the messages every
//! node publishes on one shared bus and takes back from it (the host
//! carries the bytes; on Redis, one stream every instance reads).
//!
//! A room emit is not delivered where it was made: it is published, and
//! every node (the one that made it too) hands it to its own members of
//! the room as it comes back from the bus. The bus gives every subscriber
//! its messages in one order, so every socket of a chat, on whatever node,
//! sees that chat's events in the same order.
//!
//! Whether anyone got an emit (what `chat:delivered` needs) is learnt from
//! the nodes that handed it to a socket: each tells the emitting node once,
//! and the emitting node reports the first answer, or that none came
//! within [`HANDED_WITHIN`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::deadlines::Deadlines;

/// Cluster settings: present when the node is one of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name on the bus, unique in the cluster (a random one
    /// per process).
    pub node: String,
}

/// How long a node waits to hear that another node handed its emit to a
/// socket before it takes it that none did.
pub const HANDED_WITHIN: Duration = Duration::from_secs(10);

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub(crate) enum BusMessage {
    /// A room emit, for every node's members of the room.
    #[serde(rename = "b")]
    Broadcast {
        from: String,
        seq: u64,
        nsp: String,
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
    },
    /// With recovery on: a socket's session as the node holding it has it
    /// (it connected, came back, joined or left a room).
    #[serde(rename = "s")]
    Session {
        node: String,
        pid: String,
        sid: String,
        nsp: String,
        rooms: Vec<String>,
        data: Value,
    },
    /// A socket lost its transport (`kept`: it may come back) or left.
    #[serde(rename = "g")]
    Gone { pid: String, kept: bool },
    /// Node `by` took the session of `pid` over (its client came back
    /// there): whoever still holds it lets it go.
    #[serde(rename = "o")]
    TakenOver { by: String, pid: String },
    /// Node `node` is alive.
    #[serde(rename = "l")]
    Alive { node: String },
    /// Node `by` handed `to`'s emit `seq` to at least one socket.
    #[serde(rename = "h")]
    Handed { to: String, seq: u64 },
}

impl BusMessage {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a bus message always serializes"))
    }

    /// Whether node `node` published it, or it is addressed to `node`.
    pub(crate) fn concerns(&self, node: &str) -> bool {
        match self {
            BusMessage::Broadcast { from, .. } => from == node,
            BusMessage::Handed { to, .. } => to == node,
            BusMessage::Session { node: n, .. } | BusMessage::Alive { node: n } => n == node,
            BusMessage::TakenOver { by, .. } => by == node,
            BusMessage::Gone { .. } => false,
        }
    }

    /// `None` for bytes that are no bus message (of another version, say):
    /// they are dropped.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A node's side of the bus.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) node: String,
    next_seq: u64,
    /// This node's tracked emits no node has reported handed yet.
    tracked: HashMap<u64, Instant>,
    /// The newest emit number read from each node: a host that publishes
    /// again what it could not tell was published (a timeout after Redis
    /// took it) puts it on the bus twice; the second is dropped. One entry
    /// per node that ever published (a few per restart of an instance).
    newest: HashMap<String, u64>,
    deadlines: Deadlines<u64>,
    /// Between the first message of the bus's past and word that all of it
    /// came: sessions of other nodes are not recovered meanwhile.
    pub(crate) catching_up: bool,
    /// The number of this node's last emit or ack to one socket, and of
    /// its newest emit read back from the bus: while the first is ahead, a
    /// draining node keeps its sessions open (they have something on its
    /// way). One lost on the way (trimmed, or dropped by a full outbox) is
    /// passed over once a later one comes back.
    pub(crate) last_to_socket: u64,
    pub(crate) read_back: u64,
}

impl Cluster {
    pub(crate) fn new(config: ClusterConfig) -> Self {
        Cluster {
            node: config.node,
            next_seq: 0,
            tracked: HashMap::new(),
            newest: HashMap::new(),
            deadlines: Deadlines::new(),
            catching_up: false,
            last_to_socket: 0,
            read_back: 0,
        }
    }

    /// The next emit's number; tracked (awaiting [`Cluster::handed`]) when
    /// `track`.
    pub(crate) fn next(&mut self, now: Instant, track: bool) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        if track {
            let until = now + HANDED_WITHIN;
            self.tracked.insert(seq, until);
            self.deadlines.push(until, seq);
        }
        seq
    }

    /// Whether emit `seq` of node `from` is read for the first time (each
    /// node numbers its emits in the order it publishes them).
    pub(crate) fn fresh(&mut self, from: &str, seq: u64) -> bool {
        match self.newest.get_mut(from) {
            Some(newest) if *newest >= seq => false,
            Some(newest) => {
                *newest = seq;
                true
            }
            None => {
                self.newest.insert(from.to_owned(), seq);
                true
            }
        }
    }

    /// Someone got emit `seq`: true the first time only.
    pub(crate) fn handed(&mut self, seq: u64) -> bool {
        self.tracked.remove(&seq).is_some()
    }

    /// The tracked emits no one reported in time (each once).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((t, seq)) = self.deadlines.pop_due(now) {
            if self.tracked.get(&seq) == Some(&t) {
                self.tracked.remove(&seq);
                out.push(seq);
            }
        }
        out
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let tracked = &self.tracked;
        self.deadlines.next(|t, seq| tracked.get(seq) == Some(&t))
    }

    /// How many emits await word of their delivery.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.tracked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_messages_round_trip_and_garbage_is_no_message() {
        let m = BusMessage::Broadcast {
            from: "n1".into(),
            seq: 7,
            nsp: "/".into(),
            room: "chat:general".into(),
            except: vec!["abc".into()],
            text: r#"42["chat:new-message",{"text":"hi"}]"#.into(),
            track: true,
            to: None,
            volatile: false,
            attachments: vec!["AQID".into()],
        };
        assert_eq!(BusMessage::decode(&m.encode()), Some(m));
        for garbage in [&b""[..], b"{}", b"[1]", br#"{"t":"b"}"#, b"\xff"] {
            assert_eq!(BusMessage::decode(garbage), None);
        }
    }

    #[test]
    fn a_tracked_emit_is_reported_once_handed_or_once_expired() {
        let now = Instant::now();
        let mut c = Cluster::new(ClusterConfig { node: "n".into() });
        let a = c.next(now, true);
        let b = c.next(now, true);
        let untracked = c.next(now, false);
        assert!(c.handed(a));
        assert!(!c.handed(a));
        assert!(!c.handed(untracked));
        assert_eq!(c.poll_timeout(), Some(now + HANDED_WITHIN));
        assert!(
            c.expire(now + HANDED_WITHIN - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(c.expire(now + HANDED_WITHIN), vec![b]);
        assert!(!c.handed(b));
        assert_eq!((c.tracked(), c.poll_timeout()), (0, None));
    }

    #[test]
    fn an_emit_read_twice_is_fresh_once() {
        let mut c = Cluster::new(ClusterConfig { node: "n".into() });
        assert!(c.fresh("a", 1));
        assert!(c.fresh("b", 1));
        assert!(!c.fresh("a", 1));
        assert!(c.fresh("a", 3));
        assert!(!c.fresh("a", 2));
    }
}
