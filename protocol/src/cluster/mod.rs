//! A node's end of the cluster, without IO (in the manner of quinn-proto's
//! `Endpoint` in front of its connections): what the node publishes and
//! reads on the bus passes through its `Endpoint`, which seals and
//! numbers every entry going out, opens, decodes, deduplicates and counts
//! every entry coming in, and keeps the node-to-node state (polling
//! requests forwarded to the node holding their session, WebSockets
//! relayed there: [`forward`]).
//!
//! It also keeps each room's one order across the nodes and who got what
//! ([`order`]): the words of that order (places, broadcasts, words that a
//! send gives up, words of delivery) are taken here, and the layer above
//! hears only what it applies ([`Heard`]): a broadcast once its place lets
//! it go, an outcome of one of its tracked emits, and the words of the
//! sessions it keeps for recovery. The timers of all of this are this
//! end's (`Endpoint::poll_timeout`, `Endpoint::expire`).
//!
//! What each word of the bus means is [`crate::bus::Word`]; which nodes read
//! it, [`crate::bus::Topic`].

pub mod forward;
pub mod order;
pub mod sessions;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::bus::{Entry, Newest, Topic, Word};
use crate::host::RequestId;
use crate::stats::{BusKind, Stats};
use crate::store::Place;
use forward::Forwarding;
use order::{HOLD, Order, Released};
use sessions::Remotes;

/// Cluster settings: present when the node is one of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name on the bus, unique in the cluster (a random one
    /// per process).
    pub node: String,
}

/// How often a node of a cluster says it is alive on the bus: the others
/// pass over the places it holds once it is silent for long
/// ([`order::SILENT_FOR`]), and, with recovery on, take its sockets to
/// have lost their transport when it was last heard.
pub const ALIVE_EVERY: Duration = Duration::from_secs(5);

/// What the layer above hears from the bus, once this end has taken its
/// part (`Endpoint::take`).
// Short-lived (handed up at once), and mostly words: boxing them would
// cost an allocation each for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Heard {
    /// A word to apply: a broadcast (placed ones in their room's order),
    /// or a word of the sessions kept for recovery. `past`: it was
    /// published that long before this node joined (read while it caught
    /// up with the bus), so it is only remembered, never handed to a
    /// socket.
    Word {
        /// The word.
        word: Word,
        /// How old it was when read, if it is of the bus's past.
        past: Option<Duration>,
    },
    /// The outcome of this node's tracked emit `seq`: some node handed it
    /// to a socket, or none said so within
    /// [`HANDED_WITHIN`](order::HANDED_WITHIN).
    Handed {
        /// The emit's number.
        seq: u64,
        /// Whether it reached anyone.
        handed: bool,
    },
}

/// A node's end of the bus.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// How many entries this node published (each numbered).
    published: u64,
    /// The newest number read from each node, and which before it.
    newest: Newest,
    /// Polling requests sent to the nodes that hold their sessions, those
    /// run here for other nodes, and WebSockets relayed either way.
    pub(crate) forwarding: Forwarding,
    /// Each room's order across the nodes, and this node's emits awaiting
    /// word of their delivery.
    pub(crate) order: Order,
    /// With recovery off: the rooms this node reads (it has members there),
    /// by namespace (looked up by `&str`, without allocating, for each
    /// place read).
    rooms: HashMap<String, HashSet<String>>,
    /// With recovery on: the sessions other nodes hold or held.
    pub(crate) remotes: Option<Remotes>,
    /// When this node next says it is alive.
    next_alive: Instant,
}

/// How a node is one of a cluster, as the layer above says
/// ([`crate::node::Upper::cluster`]).
#[derive(Debug, Clone, Copy)]
pub struct Joined<'a> {
    /// This node's name on the bus, unique in the cluster.
    pub node: &'a str,
    /// With connection state recovery on: how long a session stays
    /// recoverable once its transport ended, and the most sessions of
    /// other nodes known at once. With it off (`None`), a room's words go
    /// only to the nodes with members in it.
    pub recovery: Option<(Duration, usize)>,
}

/// What came due at an instant ([`Endpoint::expire`]).
#[derive(Debug, Default)]
pub(crate) struct Due {
    /// Polling requests sent to other nodes that no answer came back for.
    pub(crate) requests: Vec<RequestId>,
    /// What the layer above hears: places passed over, tracked emits no
    /// node reported.
    pub(crate) heard: Vec<Heard>,
    /// What this end publishes: that this node is alive.
    pub(crate) publish: Vec<Entry>,
}

impl Endpoint {
    /// The end of a node of a cluster, started at `now`: with recovery
    /// off, a room's words go only to the nodes with members in it
    /// ([`Word::topic`]).
    pub(crate) fn new(joined: Joined<'_>, now: Instant) -> Self {
        let node = joined.node.to_owned();
        Endpoint {
            published: 0,
            newest: Newest::default(),
            forwarding: Forwarding::new(node.clone()),
            order: Order::new(node, joined.recovery.is_none()),
            rooms: HashMap::new(),
            remotes: joined.recovery.map(|(w, max)| Remotes::new(w, max)),
            next_alive: now,
        }
    }

    /// An entry going out (the layers make bare JSON): sealed with this
    /// node's version, name and next number (see [`crate::bus`]), and
    /// counted.
    pub(crate) fn seal(&mut self, entry: &mut Entry, stats: &mut Stats) {
        self.published += 1;
        entry.bytes = crate::bus::number(&entry.bytes, &self.forwarding.node, self.published);
        let kind = entry.kind as usize;
        stats.bus_out[kind] += 1;
        stats.bus_out_bytes[kind] += entry.bytes.len() as u64;
    }

    /// An entry read from the bus, counted by kind: its word if it is one
    /// of this node's version (else it is counted as undecodable) and read
    /// for the first time (else it is counted as a duplicate). The one
    /// place an entry is decoded: the layers get it typed.
    pub(crate) fn read(&mut self, entry: &[u8], stats: &mut Stats) -> Option<Word> {
        let opened = crate::bus::open(entry);
        let word = opened.and_then(|o| Word::decode(o.json));
        let kind = word.as_ref().map_or(BusKind::Other, Word::kind) as usize;
        stats.bus_in[kind] += 1;
        stats.bus_in_bytes[kind] += entry.len() as u64;
        let (Some(opened), Some(word)) = (opened, word) else {
            stats.bus_undecodable += 1;
            return None;
        };
        if let Some((node, n)) = opened.from
            && !self.newest.fresh(node, n)
        {
            stats.bus_duplicates += 1;
            return None;
        }
        Some(word)
    }

    /// A word read from the bus that is not between two nodes
    /// ([`Word::is_forward`]), at `at` on the bus if known, `past` before
    /// this node joined if it is of the bus's past: what the layer above
    /// hears of it and of what it let go, in order.
    ///
    /// The bus's clock moves on and the word's node was alive then. A
    /// place holds its room's order; a broadcast waits for its place (and
    /// the earlier ones) to let it go; a send's word that it publishes
    /// nothing lets its place go; a word of delivery for this node reports
    /// its emits handed. Places of nodes silent for too long are passed
    /// over.
    pub(crate) fn take(
        &mut self,
        word: Word,
        past: Option<Duration>,
        position: Option<Place>,
        now: Instant,
        stats: &mut Stats,
    ) -> Vec<Heard> {
        let order = &mut self.order;
        if past.is_some() {
            order.catching_up = true;
        }
        order.heard_from(word.node(), position);
        // What this node published, or what is for it, is of its own time
        // even if it came before the end of the past its host read.
        let past = past.filter(|_| !word.concerns(&order.node));
        // When it was published, on this node's clock.
        let at = past.map_or(now, |age| now.checked_sub(age).unwrap_or(now));
        let mut heard = Vec::new();
        match word {
            // With recovery off, a room this node has no member of is one
            // its host read a little longer than asked (or before it
            // asked): its places are not held here, so that they hold
            // nothing should a member come back.
            Word::Place { nsp, room, .. } | Word::Abandon { nsp, room, .. }
                if order.spread
                    && !self
                        .rooms
                        .get(nsp.as_str())
                        .is_some_and(|r| r.contains(room.as_str())) => {}
            Word::Place {
                from,
                nsp,
                room,
                ticket,
            } => {
                let until = at + HOLD;
                if until > now {
                    order.hold((nsp, room), ticket, from, until, position);
                }
            }
            Word::Abandon { nsp, room, ticket } => {
                order.abandon(&nsp, &room, &ticket);
                let released = order.release(&nsp, &room, now);
                self.released(released, &mut heard);
            }
            Word::Broadcast {
                placed: Some(ref ticket),
                ref nsp,
                ref room,
                ..
            } => {
                let (ticket, nsp, room) = (ticket.clone(), nsp.clone(), room.clone());
                match order.arrive(&ticket, word, past, now) {
                    // In its place: it goes with what it let go.
                    None => {
                        let released = order.release(&nsp, &room, now);
                        self.released(released, &mut heard);
                    }
                    Some((word, past)) => heard.push(Heard::Word { word, past }),
                }
            }
            Word::Handed { .. } if past.is_some() => {}
            Word::Handed { to, seq, more } => {
                if to == order.node {
                    for seq in std::iter::once(seq).chain(more) {
                        if order.handed(seq) {
                            heard.push(Heard::Handed { seq, handed: true });
                        }
                    }
                }
            }
            // The sessions of other nodes (with recovery on).
            Word::Session { ref node, .. } if *node == order.node => {}
            word @ Word::Session { .. } => {
                if let (Some(remotes), Some(node)) = (&mut self.remotes, word.node()) {
                    // It was alive then.
                    remotes.heard(at, node);
                    // Its state is kept by the layer above, which knows
                    // where a replay for it would start.
                    heard.push(Heard::Word { word, past });
                }
            }
            Word::Gone { pid, kept } => {
                if let Some(remotes) = &mut self.remotes {
                    remotes.gone(at, &pid, kept);
                }
            }
            Word::TakenOver { ref by, .. } if *by == order.node => {}
            Word::TakenOver { by, pid } => {
                if let Some(remotes) = &mut self.remotes {
                    remotes.remove(&pid);
                    // Its client is back on `by`: this node lets its own
                    // hold of it go.
                    heard.push(Heard::Word {
                        word: Word::TakenOver { by, pid },
                        past,
                    });
                }
            }
            Word::Alive { node } => {
                if let Some(remotes) = &mut self.remotes {
                    remotes.heard(at, &node);
                }
            }
            word => heard.push(Heard::Word { word, past }),
        }
        // The bus's clock moved: places of nodes silent for too long go.
        if self.order.held() > 0 {
            let released = self.order.release_due(now);
            self.released(released, &mut heard);
        }
        self.count(stats);
        heard
    }

    /// Placed broadcasts let go, each heard as it would have been read;
    /// but one of the bus's past let go once this node has caught up goes
    /// to the sockets too: a socket may have come back here since, from a
    /// log that did not have it yet (it waited for its place).
    fn released(&self, released: Released, heard: &mut Vec<Heard>) {
        let catching_up = self.order.catching_up;
        heard.extend(released.into_iter().map(|(word, past)| Heard::Word {
            word,
            past: past.filter(|_| catching_up),
        }));
    }

    /// Every entry of the bus's past was read.
    pub(crate) fn caught_up(&mut self) {
        self.order.catching_up = false;
    }

    /// The bus lost entries this node had not read: what the held places
    /// await may have been lost with them ([`Order::lost`]).
    pub(crate) fn lost(&mut self) {
        self.order.lost();
    }

    /// The layer above asks to read `topic` (`on`) or to stop: whether the
    /// host is to be told. Only a room's topic, and only with recovery off
    /// (with it on, every word goes to every node); a room no longer read
    /// forgets the places held there (this node would not hear of them
    /// again; if it comes back to the room, it reads on from then).
    pub(crate) fn reading(&mut self, topic: &Topic, on: bool) -> bool {
        let Topic::Room { nsp, room } = topic else {
            return true;
        };
        if !self.order.spread {
            return false;
        }
        if on {
            let of_nsp = self.rooms.entry(nsp.clone()).or_default();
            of_nsp.insert(room.clone());
        } else {
            if let Some(of_nsp) = self.rooms.get_mut(nsp) {
                of_nsp.remove(room);
                if of_nsp.is_empty() {
                    self.rooms.remove(nsp);
                }
            }
            self.order.forget_room(nsp, room);
        }
        true
    }

    /// The words of delivery owed for what this node handed on since the
    /// last call ([`Order::owed_words`]).
    pub(crate) fn owed_words(&mut self) -> Vec<Entry> {
        self.order.owed_words()
    }

    /// This end's next deadline.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.forwarding.poll_timeout(),
            self.order.poll_timeout(),
            Some(self.next_alive),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What is due at `now`: the requests sent elsewhere that no answer
    /// came back for (the node that held their sessions is gone), what
    /// the layer above hears of places and tracked emits that ran out of
    /// time, and, every [`ALIVE_EVERY`], word that this node is alive
    /// (and the sessions of nodes silent for too long end).
    pub(crate) fn expire(&mut self, now: Instant, stats: &mut Stats) -> Due {
        let mut due = Due {
            requests: self.forwarding.expire(now),
            ..Due::default()
        };
        due.heard.extend(
            self.order
                .expire(now)
                .into_iter()
                .map(|seq| Heard::Handed { seq, handed: false }),
        );
        let released = self.order.release_due(now);
        self.released(released, &mut due.heard);
        if self.next_alive <= now {
            self.next_alive = now + ALIVE_EVERY;
            let node = self.order.node.clone();
            due.publish.push(self.order.entry(&Word::Alive { node }));
            if let Some(remotes) = &mut self.remotes {
                remotes.sweep(now);
            }
        }
        self.count(stats);
        due
    }

    /// The counters of the rooms' orders.
    fn count(&self, stats: &mut Stats) {
        stats.bus_held_places = self.order.held() as u64;
        stats.bus_places_passed = self.order.passed;
        stats.bus_unplaced = self.order.unplaced;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use order::HANDED_WITHIN;

    fn place(ticket: &str, room: &str) -> Word {
        Word::Place {
            from: "x".into(),
            nsp: "/".into(),
            room: room.into(),
            ticket: ticket.into(),
        }
    }

    fn broadcast(ticket: &str, room: &str, text: &str) -> Word {
        order::tests::placed_in(room, ticket, text, None)
    }

    fn texts(heard: Vec<Heard>) -> Vec<String> {
        heard
            .into_iter()
            .map(|h| match h {
                Heard::Word {
                    word: Word::Broadcast { text, .. },
                    past: None,
                } => text,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn joined(recovery: Option<(Duration, usize)>) -> Joined<'static> {
        Joined {
            node: "me",
            recovery,
        }
    }

    fn at(ms: u64) -> Option<Place> {
        Some(Place { ms, n: 0 })
    }

    #[test]
    fn the_layer_above_hears_placed_broadcasts_in_their_places_order() {
        let now = Instant::now();
        let stats = &mut Stats::default();
        let mut end = Endpoint::new(joined(None), Instant::now());
        let room = Topic::Room {
            nsp: "/".into(),
            room: "r".into(),
        };
        assert!(end.reading(&room, true));
        assert!(
            end.take(place("a", "r"), None, at(1), now, stats)
                .is_empty()
        );
        assert!(
            end.take(place("b", "r"), None, at(2), now, stats)
                .is_empty()
        );
        assert_eq!(stats.bus_held_places, 2);
        // The second send's broadcast waits for the first's.
        let b = end.take(broadcast("b", "r", "B"), None, at(3), now, stats);
        assert!(b.is_empty());
        let a = end.take(broadcast("a", "r", "A"), None, at(4), now, stats);
        assert_eq!(texts(a), ["A", "B"]);
        assert_eq!(stats.bus_held_places, 0);
        // A room this node does not read holds nothing: its broadcast goes.
        assert!(
            end.take(place("c", "s"), None, at(5), now, stats)
                .is_empty()
        );
        let c = end.take(broadcast("c", "s", "C"), None, at(6), now, stats);
        assert_eq!(texts(c), ["C"]);
        // Left, the room's places are forgotten.
        end.take(place("d", "r"), None, at(7), now, stats);
        assert!(end.reading(&room, false));
        assert_eq!(end.order.held(), 0);
    }

    #[test]
    fn a_tracked_emit_is_heard_of_once_handed_or_once_nobody_said_so() {
        let now = Instant::now();
        let stats = &mut Stats::default();
        let mut end = Endpoint::new(joined(None), now);
        // It says at once that it is alive, and again every ALIVE_EVERY.
        assert_eq!(end.poll_timeout(), Some(now));
        let due = end.expire(now, stats);
        assert_eq!(due.publish.len(), 1);
        assert!(due.heard.is_empty() && due.requests.is_empty());
        let a = end.order.next(now, true);
        let b = end.order.next(now, true);
        let handed = |seq| Word::Handed {
            to: "me".into(),
            seq,
            more: Vec::new(),
        };
        let heard = end.take(handed(a), None, None, now, stats);
        assert_eq!(
            heard,
            [Heard::Handed {
                seq: a,
                handed: true
            }]
        );
        // Told again, or told of the past, it is not heard again.
        assert!(end.take(handed(a), None, None, now, stats).is_empty());
        assert_eq!(end.poll_timeout(), Some(now + ALIVE_EVERY));
        end.expire(now + ALIVE_EVERY, stats);
        assert_eq!(end.poll_timeout(), Some(now + HANDED_WITHIN));
        let due = end.expire(now + HANDED_WITHIN, stats);
        assert!(due.requests.is_empty());
        assert_eq!(
            due.heard,
            [Heard::Handed {
                seq: b,
                handed: false
            }]
        );
        assert_eq!(end.poll_timeout(), Some(now + HANDED_WITHIN + ALIVE_EVERY));
    }

    #[test]
    fn with_recovery_on_every_word_goes_to_every_node_and_no_room_is_subscribed() {
        let stats = &mut Stats::default();
        let mut end = Endpoint::new(joined(Some((Duration::from_secs(60), 10))), Instant::now());
        let room = Topic::Room {
            nsp: "/".into(),
            room: "r".into(),
        };
        assert!(!end.reading(&room, true));
        assert!(end.reading(&Topic::Node("me".into()), true));
        // Read while catching up with the bus's past: only remembered.
        let now = Instant::now();
        let past = Some(Duration::from_secs(2));
        let heard = end.take(Word::Alive { node: "x".into() }, past, at(1), now, stats);
        assert!(heard.is_empty(), "liveness is the end's own");
        // Placed, in a room it holds places of whatever its members.
        assert!(
            end.take(place("a", "r"), None, at(2), now, stats)
                .is_empty()
        );
        assert_eq!(end.order.held(), 1);
    }
}
