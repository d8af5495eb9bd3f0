//! Typing indicators that end on their own: who is typing where, and until
//! when. A `chat:typing` with `isTyping: true` stands for the configured
//! timeout after its last repetition; then, or when its socket leaves the
//! chat or disconnects, the service tells the chat it stopped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::deadlines::Deadlines;

/// How many chats one socket can be typing in at once; a new one beyond
/// this ends the one that would have expired first.
pub const MAX_TYPING_CHATS: usize = 8;

/// The typing indicators of every socket (named by `S`), with their deadlines.
#[derive(Debug)]
pub struct Typing<S> {
    timeout: Duration,
    /// Per socket, the chats it is typing in and when each ends.
    by_socket: HashMap<S, Vec<(String, Instant)>>,
    live: usize,
    /// Deadlines, soonest first. An entry refreshed or ended since it was
    /// pushed is stale and skipped when it comes up; they are rebuilt from
    /// `by_socket` when stale entries outnumber live ones, so they never
    /// hold more than twice the indicators (plus a constant).
    deadlines: Deadlines<(S, String)>,
}

/// What [`Typing::start`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// The socket was not typing in this chat before.
    New,
    /// It was; the deadline moved.
    Refreshed,
    /// It was not, and it was at [`MAX_TYPING_CHATS`]: the named chat's
    /// indicator ended to make room.
    Evicted(String),
}

impl<S: Copy + Ord + std::hash::Hash> Typing<S> {
    /// Indicators that stand for `timeout` after their last repetition.
    pub fn new(timeout: Duration) -> Self {
        Typing {
            timeout,
            by_socket: HashMap::new(),
            live: 0,
            deadlines: Deadlines::new(),
        }
    }

    /// `socket` is typing in `chat` as of `now`.
    pub fn start(&mut self, socket: S, chat: &str, now: Instant) -> Started {
        let until = now + self.timeout;
        let chats = self.by_socket.entry(socket).or_default();
        let started = if let Some(entry) = chats.iter_mut().find(|(c, _)| c == chat) {
            entry.1 = until;
            Started::Refreshed
        } else if chats.len() >= MAX_TYPING_CHATS {
            let first = (0..chats.len())
                .min_by_key(|&i| chats[i].1)
                .expect("the list is full, so not empty");
            let (evicted, _) = std::mem::replace(&mut chats[first], (chat.to_owned(), until));
            Started::Evicted(evicted)
        } else {
            chats.push((chat.to_owned(), until));
            self.live += 1;
            Started::New
        };
        self.deadlines.push(until, (socket, chat.to_owned()));
        self.compact();
        started
    }

    /// `socket` stopped typing in `chat`; true if it was.
    pub fn stop(&mut self, socket: S, chat: &str) -> bool {
        let Some(chats) = self.by_socket.get_mut(&socket) else {
            return false;
        };
        let Some(i) = chats.iter().position(|(c, _)| c == chat) else {
            return false;
        };
        chats.swap_remove(i);
        if chats.is_empty() {
            self.by_socket.remove(&socket);
        }
        self.live -= 1;
        true
    }

    /// Whether `socket` is typing in `chat`.
    pub fn is_typing(&self, socket: S, chat: &str) -> bool {
        self.by_socket
            .get(&socket)
            .is_some_and(|chats| chats.iter().any(|(c, _)| c == chat))
    }

    /// `socket` is gone; the chats it was typing in.
    pub fn remove_socket(&mut self, socket: S) -> Vec<String> {
        let chats: Vec<String> = self
            .by_socket
            .remove(&socket)
            .unwrap_or_default()
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        self.live -= chats.len();
        chats
    }

    /// When the next indicator may end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek()
    }

    /// Ends every indicator due at `now`, returning (socket, chat) of each.
    pub fn expire(&mut self, now: Instant) -> Vec<(S, String)> {
        let mut ended = Vec::new();
        while let Some((due, (socket, chat))) = self.deadlines.pop_due(now) {
            let current = self
                .by_socket
                .get(&socket)
                .and_then(|chats| chats.iter().find(|(c, _)| *c == chat))
                .map(|(_, until)| *until);
            if current == Some(due) {
                self.stop(socket, &chat);
                ended.push((socket, chat));
            }
        }
        ended
    }

    /// How many indicators stand.
    pub fn standing(&self) -> usize {
        self.live
    }

    fn compact(&mut self) {
        if self.deadlines.len() <= 2 * self.live + 64 {
            return;
        }
        let live = self
            .by_socket
            .iter()
            .flat_map(|(s, chats)| chats.iter().map(|(c, t)| (*t, (*s, c.clone()))));
        self.deadlines.rebuild(live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(n: u64) -> u64 {
        n
    }

    #[test]
    fn an_indicator_ends_one_timeout_after_its_last_repetition() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut typing = Typing::new(10 * s);
        assert_eq!(typing.start(sock(1), "general", t0), Started::New);
        assert_eq!(typing.poll_timeout(), Some(t0 + 10 * s));
        assert_eq!(
            typing.start(sock(1), "general", t0 + 4 * s),
            Started::Refreshed
        );
        // The first deadline comes up stale and ends nothing.
        assert!(typing.expire(t0 + 10 * s).is_empty());
        assert_eq!(typing.standing(), 1);
        assert!(
            typing
                .expire(t0 + 14 * s - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            typing.expire(t0 + 14 * s),
            [(sock(1), "general".to_owned())]
        );
        assert_eq!(typing.standing(), 0);
        assert_eq!(typing.poll_timeout(), None);
    }

    #[test]
    fn stop_and_remove_socket_end_indicators_without_a_deadline() {
        let t0 = Instant::now();
        let mut typing = Typing::new(Duration::from_secs(5));
        typing.start(sock(1), "a", t0);
        typing.start(sock(1), "b", t0);
        typing.start(sock(2), "a", t0);
        assert!(typing.stop(sock(1), "a"));
        assert!(!typing.stop(sock(1), "a"));
        assert_eq!(typing.remove_socket(sock(1)), ["b"]);
        assert!(typing.remove_socket(sock(1)).is_empty());
        assert_eq!(typing.standing(), 1);
        // Stopped ones never come back through their stale deadlines.
        assert_eq!(
            typing.expire(t0 + Duration::from_secs(5)),
            [(sock(2), "a".to_owned())]
        );
    }

    #[test]
    fn a_socket_types_in_at_most_max_chats_and_the_oldest_makes_room() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut typing = Typing::new(Duration::from_secs(5));
        for i in 0..MAX_TYPING_CHATS {
            assert_eq!(
                typing.start(sock(1), &format!("c{i}"), t0 + i as u32 * ms),
                Started::New
            );
        }
        typing.start(sock(1), "c0", t0 + 100 * ms);
        assert_eq!(
            typing.start(sock(1), "new", t0 + 101 * ms),
            Started::Evicted("c1".into())
        );
        assert_eq!(typing.standing(), MAX_TYPING_CHATS);
    }

    #[test]
    fn repetitions_do_not_grow_the_deadlines_without_bound() {
        let t0 = Instant::now();
        let mut typing = Typing::new(Duration::from_secs(5));
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            typing.start(sock(u64::from(i % 3)), &format!("c{}", i % 20), now);
            if i % 7 == 0 {
                typing.stop(sock(u64::from(i % 3)), &format!("c{}", i % 20));
            }
            assert!(typing.deadlines.len() <= 2 * typing.standing() + 65);
        }
    }
}
