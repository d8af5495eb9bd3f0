//! The keys of the room emits a node handed on lately (a message's id), so
//! that one published again (a retried send that could not tell its first
//! publish happened) reaches no socket twice.
//!
//! The set is a B-tree, not a hash set: a hash set that grows to
//! [`SEEN_KEYS`] rehashes everything it holds each time it doubles, and a
//! send that landed on one of those stalled for as long (10 ms at 57,344
//! keys, BENCHMARKS.md 2026-12-07). A B-tree grows a node at a time.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// How many keys a node remembers: the newest this many keyed emits.
pub const SEEN_KEYS: usize = 65_536;

/// The newest [`SEEN_KEYS`] keys, forgotten oldest first (each key one
/// allocation, shared by the set and the order).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    keys: BTreeSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl Seen {
    /// Remembers `key`; false if it was remembered already.
    pub(crate) fn first(&mut self, key: &str) -> bool {
        if self.keys.contains(key) {
            return false;
        }
        if self.order.len() == SEEN_KEYS
            && let Some(old) = self.order.pop_front()
        {
            self.keys.remove(&old);
        }
        let key: Arc<str> = Arc::from(key);
        self.keys.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_first_once_until_it_is_forgotten() {
        let mut seen = Seen::default();
        assert!(seen.first("a"));
        assert!(!seen.first("a"));
        for i in 0..SEEN_KEYS {
            assert!(seen.first(&i.to_string()));
        }
        assert_eq!(seen.keys.len(), SEEN_KEYS);
        assert!(seen.first("a"), "the oldest key was forgotten");
        assert!(!seen.first(&(SEEN_KEYS - 1).to_string()));
    }
}
