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
use crate::store::Place;

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

/// How long a room's placed broadcasts wait behind an earlier place whose
/// broadcast has not come (its node died between its take and its
/// publish, say): past it, that place is passed over, and its broadcast,
/// should it come, reaches the room when it comes.
pub const HOLD: Duration = Duration::from_secs(5);

/// A room: its namespace and name.
type RoomKey = (String, String);

/// A place in a room's order and what came for it.
#[derive(Debug)]
struct Slot {
    ticket: String,
    /// Its position on the bus, if the host told it.
    at: Option<Place>,
    until: Instant,
    came: Option<Came>,
}

/// What came for a place: its broadcast (and how old it was when read,
/// for one of the bus's past), or word that none will.
#[derive(Debug)]
enum Came {
    Broadcast(Box<BusMessage>, Option<Duration>),
    Abandoned,
}

/// Placed broadcasts that may reach their rooms now, in order, each with
/// how old it was when read (for one of the bus's past).
pub(crate) type Released = Vec<(BusMessage, Option<Duration>)>;

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
        /// The ticket of its [`BusMessage::Place`]: it reaches the room in
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
    /// (or its [`BusMessage::Abandon`]) up to [`HOLD`].
    #[serde(rename = "p")]
    Place {
        from: String,
        nsp: String,
        room: String,
        ticket: String,
    },
    /// The send holding the place `ticket` publishes nothing (its store
    /// write failed, or it stopped waiting for its take).
    #[serde(rename = "x")]
    Abandon {
        nsp: String,
        room: String,
        ticket: String,
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
        crate::bus::seal(&serde_json::to_vec(self).expect("a bus message always serializes"))
    }

    /// Whether node `node` published it, or it is addressed to `node`.
    pub(crate) fn concerns(&self, node: &str) -> bool {
        match self {
            BusMessage::Broadcast { from, .. } => from == node,
            BusMessage::Handed { to, .. } => to == node,
            BusMessage::Session { node: n, .. }
            | BusMessage::Alive { node: n }
            | BusMessage::Place { from: n, .. } => n == node,
            BusMessage::TakenOver { by, .. } => by == node,
            BusMessage::Gone { .. } | BusMessage::Abandon { .. } => false,
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
    /// Each room's places whose broadcasts may not reach it yet, in the
    /// bus's order.
    held: HashMap<RoomKey, std::collections::VecDeque<Slot>>,
}

impl Cluster {
    pub(crate) fn new(config: ClusterConfig) -> Self {
        Cluster {
            node: config.node,
            next_seq: 0,
            tracked: HashMap::new(),
            deadlines: Deadlines::new(),
            catching_up: false,
            last_to_socket: 0,
            read_back: 0,
            held: HashMap::new(),
        }
    }

    /// A place in `room`'s order, read from the bus: its broadcast and the
    /// room's later ones wait for it until `until`.
    pub(crate) fn hold(
        &mut self,
        nsp: String,
        room: String,
        ticket: String,
        until: Instant,
        at: Option<Place>,
    ) {
        let slots = self.held.entry((nsp, room)).or_default();
        if slots.iter().all(|s| s.ticket != ticket) {
            slots.push_back(Slot {
                ticket,
                at,
                until,
                came: None,
            });
        }
    }

    /// A placed broadcast read from the bus: kept in its place if that
    /// place is held (`None`), else given back to reach its room now (its
    /// place was passed over, or read before this node joined).
    pub(crate) fn arrive(
        &mut self,
        ticket: &str,
        message: BusMessage,
        past: Option<Duration>,
    ) -> Option<(BusMessage, Option<Duration>)> {
        let BusMessage::Broadcast {
            nsp, room, belongs, ..
        } = &message
        else {
            return Some((message, past));
        };
        let belongs = *belongs;
        let Some(slots) = self.held.get_mut(&(nsp.clone(), room.clone())) else {
            return Some((message, past));
        };
        // A retry's broadcast of what its first send stored: in that send's
        // place, if still held, and its own place is given up.
        if let Some(at) = belongs
            && let Some(first) = slots
                .iter()
                .position(|s| s.at == Some(at) && s.came.is_none() && s.ticket != ticket)
        {
            if let Some(own) = slots.iter_mut().find(|s| s.ticket == ticket) {
                own.came.get_or_insert(Came::Abandoned);
            }
            slots[first].came = Some(Came::Broadcast(Box::new(message), past));
            return None;
        }
        let slot = slots
            .iter_mut()
            .find(|s| s.ticket == ticket && s.came.is_none());
        match slot {
            Some(slot) => {
                slot.came = Some(Came::Broadcast(Box::new(message), past));
                None
            }
            None => Some((message, past)),
        }
    }

    /// The send of place `ticket` publishes nothing.
    pub(crate) fn abandon(&mut self, nsp: &str, room: &str, ticket: &str) {
        let key = (nsp.to_owned(), room.to_owned());
        if let Some(slot) = self
            .held
            .get_mut(&key)
            .and_then(|slots| slots.iter_mut().find(|s| s.ticket == ticket))
        {
            slot.came.get_or_insert(Came::Abandoned);
        }
    }

    /// The broadcasts of `room` that may go now: those at the front of its
    /// order whose place was filled, passing over places abandoned or held
    /// past their time.
    pub(crate) fn release(&mut self, nsp: &str, room: &str, now: Instant) -> Released {
        let key = (nsp.to_owned(), room.to_owned());
        let mut out = Vec::new();
        let Some(slots) = self.held.get_mut(&key) else {
            return out;
        };
        while let Some(front) = slots.front() {
            if front.came.is_none() && front.until > now {
                break;
            }
            if let Some(Came::Broadcast(m, past)) = slots.pop_front().and_then(|s| s.came) {
                out.push((*m, past));
            }
        }
        if slots.is_empty() {
            self.held.remove(&key);
        }
        out
    }

    /// What every room may release now that places ran out of time.
    pub(crate) fn release_due(&mut self, now: Instant) -> Released {
        let due: Vec<RoomKey> = self
            .held
            .iter()
            .filter(|(_, slots)| slots.front().is_some_and(|s| s.until <= now))
            .map(|(k, _)| k.clone())
            .collect();
        due.iter()
            .flat_map(|(nsp, room)| self.release(nsp, room, now))
            .collect()
    }

    /// How many places are held, in every room.
    pub(crate) fn held(&self) -> usize {
        self.held
            .values()
            .map(std::collections::VecDeque::len)
            .sum()
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
        let handed = self.deadlines.next(|t, seq| tracked.get(seq) == Some(&t));
        let held = self
            .held
            .values()
            .filter_map(|slots| slots.front().map(|s| s.until))
            .min();
        handed.into_iter().chain(held).min()
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
            placed: Some("t1".into()),
            key: Some("m1".into()),
            belongs: Some(Place { ms: 5, n: 1 }),
        };
        let entry = m.encode();
        assert_eq!(
            BusMessage::decode(crate::bus::open(&entry).unwrap().json),
            Some(m)
        );
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

    fn placed(ticket: &str, text: &str) -> BusMessage {
        BusMessage::Broadcast {
            from: "n".into(),
            seq: 1,
            nsp: "/".into(),
            room: "r".into(),
            except: Vec::new(),
            text: text.into(),
            track: false,
            to: None,
            volatile: false,
            attachments: Vec::new(),
            placed: Some(ticket.into()),
            key: None,
            belongs: None,
        }
    }

    fn texts(released: Released) -> Vec<String> {
        released
            .into_iter()
            .map(|(m, _)| match m {
                BusMessage::Broadcast { text, .. } => text,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn placed_broadcasts_go_in_their_places_order_passing_over_abandoned_and_late_ones() {
        let now = Instant::now();
        let mut c = Cluster::new(ClusterConfig { node: "n".into() });
        for t in ["a", "b", "c", "d"] {
            c.hold("/".into(), "r".into(), t.into(), now + HOLD, None);
        }
        assert!(c.arrive("c", placed("c", "C"), None).is_none());
        assert!(texts(c.release("/", "r", now)).is_empty(), "a is awaited");
        c.abandon("/", "r", "a");
        assert!(c.arrive("b", placed("b", "B"), None).is_none());
        assert_eq!(texts(c.release("/", "r", now)), ["B", "C"]);
        // Unknown (passed over, or before this node joined): at once.
        assert!(c.arrive("z", placed("z", "Z"), None).is_some());
        assert_eq!(c.poll_timeout(), Some(now + HOLD));
        assert!(texts(c.release_due(now + HOLD - Duration::from_millis(1))).is_empty());
        assert!(texts(c.release_due(now + HOLD)).is_empty(), "d never came");
        assert_eq!((c.held(), c.poll_timeout()), (0, None));
        assert!(
            c.arrive("d", placed("d", "D"), None).is_some(),
            "late: at once"
        );
    }
}
