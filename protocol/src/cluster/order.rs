//! Each room's one order across the cluster, and word of who got what,
//! without IO: the state a node keeps so that every socket of a chat, on
//! whatever node, sees that chat's events in one order (the places sends
//! hold in it, the broadcasts that wait for earlier places), and so that
//! the node that emitted something learns whether any node handed it to a
//! socket (what `chat:delivered` needs).
//!
//! A room emit is not delivered where it was made: it is published to the
//! room's topic, and every node with members in the room (the one that
//! made it too, if it has any) hands it to them as it comes back. With
//! recovery off a node reads a room only while it has members there
//! (`Command::Subscribe`); with recovery on every room's messages go to
//! every node, which logs them for any session to come back to. A topic
//! gives its readers its messages in one order; a send that takes a place
//! before its store write (a chat message) publishes the place at once and
//! its broadcast later, and the broadcasts of a room go in their places'
//! order (`Order::arrive`, `Order::release`).
//!
//! Whether anyone got an emit is learnt from the nodes that handed it to a
//! socket: each tells the emitting node once (in one word for a batch,
//! `Order::owed_words`), and the emitting node reports the first answer,
//! or that none came within [`HANDED_WITHIN`].
//!
//! It is part of the node's end of the bus (`Endpoint`); the
//! Socket.IO layer reaches it through what the node lends it
//! ([`crate::node::Shared`]) to number and address what it publishes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ALIVE_EVERY;
use crate::bus::{Entry, Word};
use crate::deadlines::Deadlines;
use crate::store::Place;

/// How long a node waits to hear that another node handed its emit to a
/// socket before it takes it that none did.
pub const HANDED_WITHIN: Duration = Duration::from_secs(10);

/// How long the bus may run (by its age: its clock, the positions of what
/// is read, each step counted up to 5 s) with no word from a node before
/// the places that node holds are passed over: it died between a send's
/// take and its publish. Every node says it is alive every 5 s, so a live
/// one is not taken for dead unless two of its words in a row are late,
/// and a Redis paused ages the bus by 5 s at most.
pub const SILENT_FOR: Duration = Duration::from_secs(10);

/// The longest a place is held by this node's own clock, whatever the bus
/// says (a node alive whose store never answers).
pub const HOLD: Duration = Duration::from_secs(30);

/// How far past its position the bus's clock must be before a broadcast
/// whose place was unknown here goes (the bus's clock: the newest position
/// read), or how long it waits by this node's clock if the bus is quiet
/// before that.
pub const SETTLE: Duration = Duration::from_secs(1);

/// How long (by the bus's age, from the first entry read after it) the
/// places held across a gap wait for what the instances still publish.
pub const AFTER_GAP: Duration = Duration::from_secs(5);

/// A place held across a gap whose deadline waits for the first entry
/// after it.
const AFTER_GAP_PENDING: u64 = u64::MAX;

/// The most emits one word of delivery names.
const OWED_PER_WORD: usize = 512;

/// How many tickets given up before their places came are remembered.
const ABANDONED_KEPT: usize = 4096;

/// A room: its namespace and name.
pub(crate) type RoomKey = (String, String);

/// A place in a room's order and what came for it.
#[derive(Debug)]
struct Slot {
    ticket: String,
    /// The node whose send holds it.
    from: String,
    /// Its position on the bus, if the host told it.
    at: Option<Place>,
    /// When this node stops holding it, whatever the bus says ([`HOLD`];
    /// [`SETTLE`] for a broadcast whose place was unknown here).
    until: Instant,
    came: Option<Came>,
    /// The bus's time after which it goes whatever: for a broadcast whose
    /// place was unknown here, [`SETTLE`] past its position; for a place
    /// held across a gap, [`AFTER_GAP`] past the first entry after it.
    settles: Option<u64>,
}

/// What came for a place: its broadcast (and how old it was when read,
/// for one of the bus's past), or word that none will.
#[derive(Debug)]
enum Came {
    Broadcast(Box<Word>, Option<Duration>),
    Abandoned,
}

/// Placed broadcasts that may reach their rooms now, in order, each with
/// how old it was when read (for one of the bus's past).
pub(crate) type Released = Vec<(Word, Option<Duration>)>;

/// A node's rooms' orders, the numbers of its emits and word of their
/// delivery.
#[derive(Debug)]
pub(crate) struct Order {
    /// This node's name on the bus.
    pub(crate) node: String,
    /// Recovery is off: a room's words go to the nodes with members in it
    /// alone ([`Word::topic`]), and this node subscribes to the rooms
    /// its sockets are in.
    pub(crate) spread: bool,
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
    /// The bus's clock: the newest position read (milliseconds).
    bus_ms: u64,
    /// The bus's age: how far its clock went (milliseconds), counting no
    /// step between two entries as more than the 5 s within which every
    /// live node speaks, so that a Redis paused (its clock runs on, nothing
    /// is read) does not age the places held across the pause.
    aged: u64,
    /// A gap was found and no entry has been read since.
    gap_pending: bool,
    /// Tickets given up before their places were read (the newest
    /// [`ABANDONED_KEPT`]).
    abandoned: std::collections::VecDeque<String>,
    abandoned_set: std::collections::HashSet<String>,
    /// Places passed over (their node silent, or held too long), and
    /// placed broadcasts whose place was unknown here, since the start.
    pub(crate) passed: u64,
    pub(crate) unplaced: u64,
    /// When (by the bus's clock) each node was last heard from.
    heard: HashMap<String, u64>,
    /// The emits of other nodes handed on since the last
    /// [`Order::owed_words`], by node.
    owed: HashMap<String, Vec<u64>>,
}

impl Order {
    pub(crate) fn new(node: String, spread: bool) -> Self {
        Order {
            node,
            spread,
            next_seq: 0,
            tracked: HashMap::new(),
            deadlines: Deadlines::new(),
            catching_up: false,
            last_to_socket: 0,
            read_back: 0,
            held: HashMap::new(),
            bus_ms: 0,
            aged: 0,
            gap_pending: false,
            abandoned: std::collections::VecDeque::new(),
            abandoned_set: std::collections::HashSet::new(),
            passed: 0,
            unplaced: 0,
            heard: HashMap::new(),
            owed: HashMap::new(),
        }
    }

    /// Node `to`'s emit `seq` was handed on here: it is told with the
    /// others of this batch ([`Order::owed_words`]).
    pub(crate) fn owe_handed(&mut self, to: String, seq: u64) {
        self.owed.entry(to).or_default().push(seq);
    }

    /// The words of delivery owed: one per node (for up to [`OWED_PER_WORD`]
    /// emits), to its inbox.
    pub(crate) fn owed_words(&mut self) -> Vec<Entry> {
        let owed = std::mem::take(&mut self.owed);
        let mut words = Vec::with_capacity(owed.len());
        for (to, seqs) in owed {
            for chunk in seqs.chunks(OWED_PER_WORD) {
                let word = Word::Handed {
                    to: to.clone(),
                    seq: chunk[0],
                    more: chunk[1..].to_vec(),
                };
                words.push(self.entry(&word));
            }
        }
        words
    }

    /// `message` as an entry for the bus, to the topic it goes to.
    pub(crate) fn entry(&self, message: &Word) -> Entry {
        message.entry(self.spread)
    }

    /// This node's members left `room`, and it no longer reads its
    /// topic: the places it held there are forgotten (it would not hear
    /// of them again; if it comes back to the room, it reads on from then).
    pub(crate) fn forget_room(&mut self, nsp: &str, room: &str) {
        self.held.remove(&(nsp.to_owned(), room.to_owned()));
    }

    /// An entry of node `node` was read, at `at` on the bus if known: the
    /// bus's clock moves on, and `node` is alive then.
    pub(crate) fn heard_from(&mut self, node: Option<&str>, at: Option<Place>) {
        if let Some(at) = at {
            if self.bus_ms > 0 && at.ms > self.bus_ms {
                let step = ALIVE_EVERY.as_millis() as u64;
                self.aged += (at.ms - self.bus_ms).min(step);
            }
            self.bus_ms = self.bus_ms.max(at.ms);
            if self.gap_pending {
                // The first entry after a gap: what was held across it
                // waits AFTER_GAP of the bus's age from here.
                self.gap_pending = false;
                let by = self.aged.saturating_add(AFTER_GAP.as_millis() as u64);
                for slot in self.held.values_mut().flatten() {
                    if slot.came.is_none() && slot.settles == Some(AFTER_GAP_PENDING) {
                        slot.settles = Some(by);
                    }
                }
            }
        }
        if let Some(node) = node {
            match self.heard.get_mut(node) {
                Some(t) => *t = self.aged,
                None => {
                    self.heard.insert(node.to_owned(), self.aged);
                }
            }
        }
    }

    /// Whether the front place of a room lets go: what came for it may go
    /// (settled, if its place was unknown), or it is passed over.
    fn may_go(&self, slot: &Slot, now: Instant) -> bool {
        match (&slot.came, slot.settles) {
            (None, _) => self.passed_over(slot, now),
            (Some(_), Some(t)) => self.bus_ms > t || slot.until <= now,
            (Some(_), None) => true,
        }
    }

    /// Whether a place no longer holds its room: its node has been silent
    /// for [`SILENT_FOR`] of the bus's age, it was held across a gap for
    /// [`AFTER_GAP`] of it, or this node held it for [`HOLD`].
    fn passed_over(&self, slot: &Slot, now: Instant) -> bool {
        if slot.came.is_some() {
            return false;
        }
        let silent = SILENT_FOR.as_millis() as u64;
        let last = self.heard.get(&slot.from).copied().unwrap_or(0);
        slot.until <= now
            || self.aged > last.saturating_add(silent)
            || slot.settles.is_some_and(|t| self.aged > t)
    }

    /// A place in `room`'s order, read from the bus: its broadcast and the
    /// room's later ones wait for it until `until`.
    pub(crate) fn hold(
        &mut self,
        room: RoomKey,
        ticket: String,
        from: String,
        until: Instant,
        at: Option<Place>,
    ) {
        if self.abandoned_set.remove(&ticket) {
            return;
        }
        let slots = self.held.entry(room).or_default();
        if slots.iter().all(|s| s.ticket != ticket) {
            slots.push_back(Slot {
                ticket,
                from,
                at,
                until,
                came: None,
                settles: None,
            });
        }
    }

    /// A placed broadcast read from the bus: kept in its place if that
    /// place is held (`None`); the place it belongs in is the one at its
    /// `belongs` position (a retry's broadcast of what its first send
    /// stored goes there, and its own place is given up), else the one
    /// with its ticket. One whose place is unknown here (passed over, lost
    /// with the stream, read before this node joined) takes a place of its
    /// own at its position among those held, and goes once the bus's clock
    /// is [`SETTLE`] past it, or [`SETTLE`] after it came by this node's
    /// clock, whichever is first (others whose places were lost with it
    /// come by then, in any order, and go in theirs: they were read in the
    /// same stretch of the bus). The room's later broadcasts wait behind
    /// it, so it is not left to the bus's clock alone: on a quiet bus that
    /// moves only with the nodes' words that they are alive, every 5 s,
    /// in step when the nodes started together (a room that a member just
    /// joined, its reading started a little before its first send's place,
    /// held every later message up to 5 s). One with no position goes at
    /// once (`Some`).
    pub(crate) fn arrive(
        &mut self,
        ticket: &str,
        message: Word,
        past: Option<Duration>,
        now: Instant,
    ) -> Option<(Word, Option<Duration>)> {
        let Word::Broadcast {
            nsp,
            room,
            belongs,
            from,
            ..
        } = &message
        else {
            return Some((message, past));
        };
        let (belongs, from) = (*belongs, from.clone());
        let key = (nsp.clone(), room.clone());
        let slots = self.held.entry(key.clone()).or_default();
        let at_position = belongs.and_then(|at| {
            slots
                .iter()
                .position(|s| s.at == Some(at) && s.came.is_none())
        });
        let own = slots
            .iter()
            .position(|s| s.ticket == ticket && s.came.is_none());
        if let Some(i) = at_position.or(own) {
            if Some(i) != own
                && let Some(own) = own
            {
                slots[own].came = Some(Came::Abandoned);
            }
            slots[i].came = Some(Came::Broadcast(Box::new(message), past));
            slots[i].settles = None;
            return None;
        }
        let Some(at) = belongs else {
            if slots.is_empty() {
                self.held.remove(&key);
            }
            self.unplaced += 1;
            return Some((message, past));
        };
        self.unplaced += 1;
        let slots = self.held.get_mut(&key).expect("entered above");
        let i = slots
            .iter()
            .position(|s| s.at.is_some_and(|p| p > at))
            .unwrap_or(slots.len());
        slots.insert(
            i,
            Slot {
                ticket: ticket.to_owned(),
                from,
                at: Some(at),
                until: now + SETTLE,
                came: Some(Came::Broadcast(Box::new(message), past)),
                settles: Some(at.ms.saturating_add(SETTLE.as_millis() as u64)),
            },
        );
        None
    }

    /// The send of place `ticket` publishes nothing. Its place may come
    /// after this word (a send given up on while Redis was slow, whose
    /// take Redis ran later): it is remembered, and not held, then.
    pub(crate) fn abandon(&mut self, nsp: &str, room: &str, ticket: &str) {
        let key = (nsp.to_owned(), room.to_owned());
        match self
            .held
            .get_mut(&key)
            .and_then(|slots| slots.iter_mut().find(|s| s.ticket == ticket))
        {
            Some(slot) => {
                slot.came.get_or_insert(Came::Abandoned);
            }
            None => {
                if self.abandoned.len() == ABANDONED_KEPT
                    && let Some(old) = self.abandoned.pop_front()
                {
                    self.abandoned_set.remove(&old);
                }
                if self.abandoned_set.insert(ticket.to_owned()) {
                    self.abandoned.push_back(ticket.to_owned());
                }
            }
        }
    }

    /// The broadcasts of `room` that may go now: those at the front of its
    /// order whose place was filled, passing over places abandoned or held
    /// past their time.
    pub(crate) fn release(&mut self, nsp: &str, room: &str, now: Instant) -> Released {
        let key = (nsp.to_owned(), room.to_owned());
        let mut out = Vec::new();
        let Some(mut slots) = self.held.remove(&key) else {
            return out;
        };
        while let Some(front) = slots.front() {
            if !self.may_go(front, now) {
                break;
            }
            match slots.pop_front().and_then(|s| s.came) {
                Some(Came::Broadcast(m, past)) => out.push((*m, past)),
                Some(Came::Abandoned) => {}
                None => self.passed += 1,
            }
        }
        if !slots.is_empty() {
            self.held.insert(key, slots);
        }
        out
    }

    /// What every room may release now that places ran out of time.
    pub(crate) fn release_due(&mut self, now: Instant) -> Released {
        let due: Vec<RoomKey> = self
            .held
            .iter()
            .filter(|(_, slots)| slots.front().is_some_and(|s| self.may_go(s, now)))
            .map(|(k, _)| k.clone())
            .collect();
        due.iter()
            .flat_map(|(nsp, room)| self.release(nsp, room, now))
            .collect()
    }

    /// The bus lost entries this node had not read: the places it holds
    /// may wait for broadcasts that went with them, so each waits no more
    /// than [`AFTER_GAP`] of the bus's time from the first entry read after
    /// the gap (long enough for what the instances still had to publish
    /// once Redis is back), and then it is passed over; what came stays in
    /// its place. By the bus's clock, so that every node lets go at the
    /// same point of the stream.
    pub(crate) fn lost(&mut self) {
        for slot in self.held.values_mut().flatten() {
            if slot.came.is_none() {
                slot.settles = Some(AFTER_GAP_PENDING);
            }
        }
        self.gap_pending = true;
    }

    /// Whether an emit or ack to one socket this node published has not
    /// come back from the bus yet ([`Order::last_to_socket`]).
    pub(crate) fn on_its_way(&self) -> bool {
        self.last_to_socket > self.read_back
    }

    /// How many places are held, in every room.
    pub(crate) fn held(&self) -> usize {
        self.held
            .values()
            .map(std::collections::VecDeque::len)
            .sum()
    }

    /// The next emit's number; tracked (awaiting [`Order::handed`]) when
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
pub(super) mod tests {
    use super::*;

    #[test]
    fn bus_messages_round_trip_and_garbage_is_no_message() {
        let m = Word::Broadcast {
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
        assert_eq!(Word::decode(&m.encode()), Some(m));
        for garbage in [&b""[..], b"{}", b"[1]", br#"{"t":"b"}"#, b"\xff"] {
            assert_eq!(Word::decode(garbage), None);
        }
    }

    #[test]
    fn a_tracked_emit_is_reported_once_handed_or_once_expired() {
        let now = Instant::now();
        let mut c = Order::new("n".into(), true);
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

    fn placed(ticket: &str, text: &str, belongs: Option<u64>) -> Word {
        placed_in("r", ticket, text, belongs)
    }

    /// A placed broadcast of node `n` to `room` of `/`, its place at
    /// `belongs` (ms) if given.
    pub(in crate::cluster) fn placed_in(
        room: &str,
        ticket: &str,
        text: &str,
        belongs: Option<u64>,
    ) -> Word {
        Word::Broadcast {
            from: "n".into(),
            seq: 1,
            nsp: "/".into(),
            room: room.into(),
            except: Vec::new(),
            text: text.into(),
            track: false,
            to: None,
            volatile: false,
            attachments: Vec::new(),
            placed: Some(ticket.into()),
            key: None,
            belongs: belongs.map(|ms| Place { ms, n: 0 }),
        }
    }

    fn texts(released: Released) -> Vec<String> {
        released
            .into_iter()
            .map(|(m, _)| match m {
                Word::Broadcast { text, .. } => text,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn room() -> RoomKey {
        ("/".into(), "r".into())
    }

    /// `ticket`'s send from `node`, its place `at`, held in [`room`] until
    /// `now + HOLD`.
    fn hold(c: &mut Order, ticket: &str, node: &str, now: Instant, at: Option<Place>) {
        c.hold(room(), ticket.into(), node.into(), now + HOLD, at);
    }

    /// Places at 1000, 2000, 3000 and 4000 ms on the bus, held by `node`.
    fn four(c: &mut Order, node: &str, now: Instant) {
        for (t, ms) in [("a", 1000), ("b", 2000), ("c", 3000), ("d", 4000)] {
            let at = Some(Place { ms, n: 0 });
            c.heard_from(Some(node), at);
            hold(c, t, node, now, at);
        }
    }

    #[test]
    fn placed_broadcasts_go_in_their_places_order_passing_over_abandoned_ones() {
        let now = Instant::now();
        let mut c = Order::new("n".into(), true);
        four(&mut c, "x", now);
        assert!(
            c.arrive("c", placed("c", "C", Some(3000)), None, now)
                .is_none()
        );
        assert!(texts(c.release("/", "r", now)).is_empty(), "a is awaited");
        c.abandon("/", "r", "a");
        assert!(
            c.arrive("b", placed("b", "B", Some(2000)), None, now)
                .is_none()
        );
        assert_eq!(texts(c.release("/", "r", now)), ["B", "C"]);
        // A retry's broadcast fills the first send's place (d's), and its
        // own place (e, later) is given up.
        let e = Some(Place { ms: 5000, n: 0 });
        hold(&mut c, "e", "y", now, e);
        assert!(
            c.arrive("e", placed("e", "D again", Some(4000)), None, now)
                .is_none()
        );
        assert_eq!(texts(c.release("/", "r", now)), ["D again"]);
        assert_eq!(c.held(), 0);
        // Unknown to the room, and long ago by the bus's clock: it goes at
        // once; one without a position too.
        assert!(
            c.arrive("z", placed("z", "Z", Some(1)), None, now)
                .is_none()
        );
        assert_eq!(texts(c.release("/", "r", now)), ["Z"]);
        assert!(c.arrive("y", placed("y", "Y", None), None, now).is_some());
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn a_broadcast_whose_place_is_unknown_waits_behind_earlier_places() {
        let now = Instant::now();
        let mut c = Order::new("n".into(), true);
        four(&mut c, "x", now);
        // Its place was lost (Redis came back without it): it belongs at
        // 2500, after a and b, before c and d.
        assert!(
            c.arrive("lost", placed("lost", "L", Some(2500)), None, now)
                .is_none()
        );
        for t in ["a", "b", "c", "d"] {
            assert!(
                c.arrive(t, placed(t, &t.to_uppercase(), None), None, now)
                    .is_none()
            );
        }
        assert_eq!(texts(c.release("/", "r", now)), ["A", "B", "L", "C", "D"]);
    }

    #[test]
    fn after_a_gap_a_place_waits_a_little_for_what_the_instances_still_publish() {
        let now = Instant::now();
        let mut c = Order::new("n".into(), true);
        four(&mut c, "x", now);
        assert!(
            c.arrive("b", placed("b", "B", Some(2000)), None, now)
                .is_none()
        );
        c.lost();
        // The first entry after the gap, at 4500: places wait until 9500.
        c.heard_from(Some("x"), Some(Place { ms: 4500, n: 0 }));
        // a's broadcast, published once Redis is back, still goes first.
        assert!(
            c.arrive("a", placed("a", "A", Some(1000)), None, now)
                .is_none()
        );
        assert_eq!(texts(c.release("/", "r", now)), ["A", "B"]);
        // c's never comes: passed over once the bus is AFTER_GAP past the
        // first entry after the gap, and d's goes after it.
        assert!(
            c.arrive("d", placed("d", "D", Some(4000)), None, now)
                .is_none()
        );
        c.heard_from(Some("x"), Some(Place { ms: 9500, n: 0 }));
        assert!(texts(c.release_due(now)).is_empty());
        c.heard_from(Some("x"), Some(Place { ms: 9501, n: 0 }));
        assert_eq!(texts(c.release_due(now)), ["D"]);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn a_place_given_up_before_it_is_read_is_not_held() {
        let now = Instant::now();
        let mut c = Order::new("n".into(), true);
        c.abandon("/", "r", "late");
        hold(&mut c, "late", "x", now, None);
        assert_eq!((c.held(), c.poll_timeout()), (0, None));
        // Remembered once: the same ticket again is held.
        hold(&mut c, "late", "x", now, None);
        assert_eq!(c.held(), 1);
    }

    #[test]
    fn broadcasts_whose_places_were_lost_go_in_their_positions_order_once_settled() {
        let now = Instant::now();
        let mut c = Order::new("n".into(), true);
        c.heard_from(Some("x"), Some(Place { ms: 10_000, n: 0 }));
        // Their places went with the stream; they come in another order.
        for (t, ms) in [("q", 9_700), ("p", 9_600), ("r", 9_800)] {
            assert!(
                c.arrive(t, placed(t, &t.to_uppercase(), Some(ms)), None, now)
                    .is_none()
            );
        }
        assert!(
            texts(c.release("/", "r", now)).is_empty(),
            "not settled yet"
        );
        c.heard_from(Some("x"), Some(Place { ms: 10_750, n: 0 }));
        assert_eq!(texts(c.release_due(now)), ["P", "Q"]);
        // A bus that stands still: by this node's clock, after SETTLE.
        assert_eq!(c.poll_timeout(), Some(now + SETTLE));
        let early = now + SETTLE - Duration::from_millis(1);
        assert!(texts(c.release_due(early)).is_empty());
        assert_eq!(texts(c.release_due(now + SETTLE)), ["R"]);
    }

    /// A member joins a room on this node while its messages flow: the
    /// node reads the room from a little before, so the first broadcast it
    /// reads may be one whose place came before that. The room's later
    /// messages, placed and filled, wait behind it; on a quiet bus (no
    /// word read for seconds) they go SETTLE after it came, not when the
    /// nodes next say they are alive.
    #[test]
    fn a_broadcast_placed_before_the_room_was_read_holds_the_room_for_settle_at_most() {
        let now = Instant::now();
        let mut c = Order::new("n".into(), true);
        // Read from 1_000 on: a broadcast whose place was at 900.
        c.heard_from(Some("x"), Some(Place { ms: 1_010, n: 0 }));
        assert!(
            c.arrive("a", placed("a", "A", Some(900)), None, now)
                .is_none()
        );
        // The next send: its place and broadcast, read at once.
        c.heard_from(Some("x"), Some(Place { ms: 1_020, n: 0 }));
        hold(&mut c, "b", "x", now, Some(Place { ms: 1_020, n: 0 }));
        assert!(c.arrive("b", placed("b", "B", None), None, now).is_none());
        assert!(texts(c.release("/", "r", now)).is_empty(), "behind A");
        // Nothing more on the bus: a second later by this node's clock.
        assert_eq!(c.poll_timeout(), Some(now + SETTLE));
        assert_eq!(texts(c.release_due(now + SETTLE)), ["A", "B"]);
    }

    #[test]
    fn a_place_is_passed_over_once_its_node_is_silent_on_the_bus_or_held_too_long() {
        let now = Instant::now();
        let mut c = Order::new("n".into(), true);
        four(&mut c, "x", now);
        c.abandon("/", "r", "a");
        c.abandon("/", "r", "b");
        c.abandon("/", "r", "c");
        // The bus stands still (Redis paused): nothing ages.
        assert!(texts(c.release_due(now + HOLD - Duration::from_millis(1))).is_empty());
        assert_eq!(c.held(), 1, "a, b and c gave up, d is awaited");
        // Another node speaks until x has been silent for SILENT_FOR of the
        // bus's age: x's place d goes (and what waited behind it with it).
        let silent = SILENT_FOR.as_millis() as u64;
        hold(&mut c, "e", "y", now, Some(Place { ms: 4001, n: 0 }));
        assert!(c.arrive("e", placed("e", "E", None), None, now).is_none());
        // A Redis paused for 8 s: the bus ages 5 s, no more.
        let y = |ms| Some(Place { ms, n: 0 });
        c.heard_from(Some("y"), y(12_000));
        assert!(texts(c.release_due(now)).is_empty(), "x was heard 5 s ago");
        for ms in (13_000..=12_000 + silent - 5_000).step_by(1_000) {
            c.heard_from(Some("y"), y(ms));
        }
        assert!(texts(c.release_due(now)).is_empty(), "x was heard 10 s ago");
        c.heard_from(Some("y"), y(12_001 + silent - 5_000));
        assert_eq!(texts(c.release_due(now)), ["E"]);
        // By this node's clock: HOLD at most, whatever the bus says.
        hold(&mut c, "f", "y", now, None);
        assert_eq!(c.poll_timeout(), Some(now + HOLD));
        assert!(texts(c.release_due(now + HOLD - Duration::from_millis(1))).is_empty());
        assert!(texts(c.release_due(now + HOLD)).is_empty());
        assert_eq!((c.held(), c.poll_timeout()), (0, None));
    }
}
