//! Deadlines, soonest first: the one timer structure of every layer (the
//! Engine.IO heartbeats and upgrades, the Socket.IO connect timeouts, the
//! typing indicators).
//!
//! A deadline that moved or no longer applies is not looked for and
//! removed: its old entry stays behind and is stale. The owner, who knows
//! what stands, says which entries are live ([`Deadlines::next`]) or checks
//! each due entry it takes ([`Deadlines::pop_due`]) against its own state.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines keyed by what they belong to (`K`), soonest first.
#[derive(Debug, Clone)]
pub struct Deadlines<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord> Deadlines<K> {
    /// No deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a deadline for `key` at `at`.
    pub fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The soonest entry's time, stale or not (a stale one only wakes the
    /// owner early).
    pub fn peek(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The soonest deadline that `live` says still stands; the stale
    /// entries before it are dropped on the way.
    pub fn next(&mut self, mut live: impl FnMut(Instant, &K) -> bool) -> Option<Instant> {
        while let Some(Reverse((t, key))) = self.heap.peek() {
            if live(*t, key) {
                return Some(*t);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the soonest entry if it is due at `now`, stale or not: the
    /// owner checks it against what stands.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.peek()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    /// How many entries are held, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Replaces every entry with `live` ones (for an owner whose stale
    /// entries have come to outnumber them).
    pub fn rebuild(&mut self, live: impl IntoIterator<Item = (Instant, K)>) {
        self.heap = live.into_iter().map(Reverse).collect();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn soonest_first_with_stale_entries_skipped() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = Deadlines::new();
        d.push(at(30), 'c');
        d.push(at(10), 'a');
        d.push(at(20), 'b');
        assert_eq!(d.peek(), Some(at(10)));
        // 'a' moved on: its entry is stale.
        assert_eq!(d.next(|_, k| *k != 'a'), Some(at(20)));
        assert_eq!(d.len(), 2);
        assert_eq!(d.pop_due(at(19)), None);
        assert_eq!(d.pop_due(at(25)), Some((at(20), 'b')));
        assert_eq!(d.pop_due(at(25)), None);
        d.rebuild([(at(5), 'z')]);
        assert_eq!(d.pop_due(at(100)), Some((at(5), 'z')));
        assert!(d.is_empty());
        assert_eq!(d.next(|_, _| true), None);
    }
}
