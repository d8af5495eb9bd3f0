//! The cluster's bus: where each entry goes ([`Topic`]), what it says
//! ([`Word`], the one vocabulary of every kind of entry), and the envelope
//! of every entry: one version byte; then, for what a node publishes
//! itself, its name and the entry's number (`<node>/<n> `); then the
//! word's JSON, whose `t` tag comes first.
//!
//! A node reads only entries of its own version: another's (an instance of
//! another release on the same Redis) is counted and passed over, never
//! misread. A node numbers what it publishes in the order it publishes it,
//! so an entry its host put on the bus twice (a write retried after a
//! timeout, when Redis had taken it the first time) is read once: every
//! kind of entry is idempotent. Entries no node numbers (a send's place,
//! which Redis appends with the token's take) are made idempotent where
//! they are appended.

mod word;

pub use word::{WireFrame, Word};

use std::collections::HashMap;

use bytes::Bytes;

/// The version of the bus's vocabulary this build speaks.
pub const VERSION: u8 = b'1';

/// An entry for the bus, numbered by no node: the version, then `json`.
pub(crate) fn seal(json: &[u8]) -> Bytes {
    let mut entry = Vec::with_capacity(json.len() + 1);
    entry.push(VERSION);
    entry.extend_from_slice(json);
    Bytes::from(entry)
}

/// An entry for the bus, numbered `n` by node `node` (whose name holds no
/// space or `/`): the version, the number, then `json`.
pub(crate) fn number(json: &[u8], node: &str, n: u64) -> Bytes {
    let head = format!("{node}/{n} ");
    let mut entry = Vec::with_capacity(1 + head.len() + json.len());
    entry.push(VERSION);
    entry.extend_from_slice(head.as_bytes());
    entry.extend_from_slice(json);
    Bytes::from(entry)
}

/// An entry of this version, opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'e> {
    /// The node that numbered it, and its number.
    pub from: Option<(&'e str, u64)>,
    /// Its JSON.
    pub json: &'e [u8],
}

/// An entry's parts, if it is of this version.
pub fn open(entry: &[u8]) -> Option<Opened<'_>> {
    let rest = entry.strip_prefix(&[VERSION])?;
    if rest.first() == Some(&b'{') {
        return Some(Opened {
            from: None,
            json: rest,
        });
    }
    let space = rest.iter().position(|&b| b == b' ')?;
    let head = std::str::from_utf8(&rest[..space]).ok()?;
    let (node, n) = head.split_once('/')?;
    Some(Opened {
        from: Some((node, n.parse().ok()?)),
        json: &rest[space + 1..],
    })
}

/// Where an entry goes on the bus, and so which nodes read it: a node
/// reads [`Topic::All`], its own [`Topic::Node`] (its inbox), and the
/// rooms it subscribed to ([`crate::Output::Subscribe`]), so that its work
/// grows with the chats its sockets are in, not with the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every node: that a node is alive and, with recovery on, everything
    /// a session may be replayed from (every node keeps every session).
    All,
    /// The node so named alone: words of delivery, forwarded polling
    /// requests and their answers, relayed frames, acks.
    Node(String),
    /// The nodes with members in a room of a namespace: its events and
    /// the places of its messages.
    Room {
        /// The namespace.
        nsp: String,
        /// The room.
        room: String,
    },
}

/// An entry for the bus and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Which nodes read it.
    pub topic: Topic,
    /// What it is ([`Word::kind`]), for the counters.
    pub kind: crate::stats::BusKind,
    /// The entry (sealed: see this module).
    pub bytes: Bytes,
}

/// How far behind the newest number read from a node an entry may be and
/// still be read for the first time: a node's entries to several topics
/// are read in their order on each, not always in the node's own across
/// them.
const WINDOW: u64 = 4096;

/// What was read from each node that numbers its entries: its newest
/// number and which of the [`WINDOW`] before it were read, so that one read
/// again (its host published it twice) is not fresh, whatever topics its
/// entries were read from in between. One entry per node that ever
/// published (a few per restart of an instance), [`WINDOW`] bits each.
#[derive(Debug, Default)]
pub(crate) struct Newest(HashMap<String, Seen>);

#[derive(Debug)]
struct Seen {
    newest: u64,
    /// Bit `i` of word `i / 64`: whether `newest - i` was read.
    bits: Box<[u64; (WINDOW / 64) as usize]>,
}

impl Seen {
    fn new(n: u64) -> Self {
        let mut bits = Box::new([0u64; (WINDOW / 64) as usize]);
        bits[0] = 1;
        Seen { newest: n, bits }
    }

    fn bit(back: u64) -> (usize, u64) {
        ((back / 64) as usize, 1u64 << (back % 64))
    }

    /// Moves the window `by` numbers on.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.bits.fill(0);
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let len = self.bits.len();
        for i in (0..len).rev() {
            let from = i.checked_sub(words);
            let hi = from.map_or(0, |f| self.bits[f]);
            let lo = from
                .and_then(|f| f.checked_sub(1))
                .map_or(0, |f| self.bits[f]);
            self.bits[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }
}

impl Newest {
    /// Whether entry `n` of `node` is read for the first time (one more
    /// than [`WINDOW`] behind the newest is taken as read).
    pub(crate) fn fresh(&mut self, node: &str, n: u64) -> bool {
        let Some(seen) = self.0.get_mut(node) else {
            self.0.insert(node.to_owned(), Seen::new(n));
            return true;
        };
        if n > seen.newest {
            seen.shift(n - seen.newest);
            seen.newest = n;
            seen.bits[0] |= 1;
            return true;
        }
        let back = seen.newest - n;
        if back >= WINDOW {
            return false;
        }
        let (word, mask) = Seen::bit(back);
        let first = seen.bits[word] & mask == 0;
        seen.bits[word] |= mask;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_opens_only_in_its_own_version() {
        let json = br#"{"t":"l","node":"n"}"#;
        let e = seal(json);
        assert_eq!(open(&e), Some(Opened { from: None, json }));
        let numbered = number(json, "n1", 42);
        assert_eq!(&numbered[..], br#"1n1/42 {"t":"l","node":"n"}"#);
        assert_eq!(
            open(&numbered),
            Some(Opened {
                from: Some(("n1", 42)),
                json
            })
        );
        for other in [
            &b""[..],
            b"2{}",
            br#"{"t":"l"}"#,
            b"1n1 {}",
            b"1n1/x {}",
            b"1n1/1",
        ] {
            assert_eq!(open(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn an_entry_read_twice_is_fresh_once() {
        let mut newest = Newest::default();
        assert!(newest.fresh("a", 1));
        assert!(newest.fresh("b", 1));
        assert!(!newest.fresh("a", 1));
        assert!(newest.fresh("a", 3));
        assert!(newest.fresh("a", 2), "read from another topic, later");
        assert!(!newest.fresh("a", 2));
        assert!(!newest.fresh("a", 3));
        for n in 4..200 {
            assert!(newest.fresh("a", n));
        }
        for n in (100..200).rev() {
            assert!(!newest.fresh("a", n), "{n}");
        }
        assert!(newest.fresh("a", 10_000));
        assert!(newest.fresh("a", 10_000 - 70), "within the window");
        assert!(!newest.fresh("a", 10_000 - 70));
        assert!(!newest.fresh("a", 10_000 - WINDOW), "past the window");
        assert!(newest.fresh("a", 10_000 + 65));
        assert!(!newest.fresh("a", 10_000 - 70), "kept across a shift");
        assert!(!newest.fresh("a", 10_000));
        assert!(newest.fresh("a", 10_000 - 5));
    }
}
