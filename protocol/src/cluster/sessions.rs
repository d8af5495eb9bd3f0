//! The sessions other nodes of the cluster hold or held, without IO: with
//! connection state recovery on, every node learns from the bus each
//! session's state as its node publishes it (`Word::Session`: it connected,
//! joined or left a room, or came back) and when it ended (`Word::Gone`),
//! so that its client may come back to any node, even once the one that
//! held it died. A node that falls silent on the bus for `SILENT` (15 s) is
//! taken to have died when it was last heard (`Remotes::sweep`); its
//! sessions stay recoverable for the window from then.
//!
//! Part of the node's end of the bus (`Endpoint`), which takes
//! the words of ends and liveness itself; the Socket.IO layer records a
//! session's state (it knows where its replay would start) and recovers
//! one through what the node lends it ([`crate::node::Shared`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long a node may stay silent on the bus (it says it is alive every
/// [`ALIVE_EVERY`](super::ALIVE_EVERY)) before its sockets are taken to
/// have lost their transport when it was last heard.
pub(crate) const SILENT: Duration = Duration::from_secs(15);

/// A socket's session as the node holding it published it on the bus.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Remote {
    pub(crate) sid: String,
    pub(crate) nsp: String,
    pub(crate) rooms: HashSet<String>,
    pub(crate) data: serde_json::Value,
    pub(crate) node: String,
    /// Until when it may come back, once its transport ended (or its node
    /// fell silent); `None` while it is connected there.
    pub(crate) until: Option<Instant>,
    /// Where its replay starts when the client names no offset: this
    /// node's next log offset when it first heard of the session (every
    /// event for it came on the bus after that).
    pub(crate) from: u64,
}

/// The sessions other nodes hold or held, by pid, and when each node was
/// last heard.
#[derive(Debug)]
pub(crate) struct Remotes {
    /// How long a session stays recoverable once its transport ended.
    window: Duration,
    /// The most sessions known at once.
    max: usize,
    table: HashMap<String, Remote>,
    /// The sessions that lost their transport, by when each runs out (an
    /// entry whose session came back or changed since is stale here): the
    /// ones a full table lets go first, found without a scan.
    ending: BTreeSet<(Instant, String)>,
    heard: HashMap<String, Instant>,
}

impl Remotes {
    /// Sessions recoverable for `window` once their transport ended, at
    /// most `max` known at once.
    pub(crate) fn new(window: Duration, max: usize) -> Self {
        Remotes {
            window,
            max,
            table: HashMap::new(),
            ending: BTreeSet::new(),
            heard: HashMap::new(),
        }
    }

    /// Another node published a session's state (it connected, joined or
    /// left a room, or came back). A full table lets go of the session
    /// that runs out first among those that lost their transport; with
    /// every known session connected, the new one is not tracked (the
    /// connected ones stay recoverable).
    pub(crate) fn state(&mut self, pid: String, remote: Remote) {
        if self.table.len() >= self.max && !self.table.contains_key(&pid) && !self.evict() {
            return;
        }
        let from = match self.table.get(&pid) {
            Some(known) if known.sid == remote.sid => known.from,
            _ => remote.from,
        };
        if let Some(until) = remote.until {
            self.ending.insert((until, pid.clone()));
        }
        self.table.insert(pid, Remote { from, ..remote });
    }

    /// Lets go of the session that runs out first; false if every one is
    /// connected.
    fn evict(&mut self) -> bool {
        while let Some((until, pid)) = self.ending.pop_first() {
            if self.table.get(&pid).is_some_and(|r| r.until == Some(until)) {
                self.table.remove(&pid);
                return true;
            }
        }
        false
    }

    /// Another node's socket lost its transport (`kept`) at `at`, or left
    /// for good.
    pub(crate) fn gone(&mut self, at: Instant, pid: &str, kept: bool) {
        match self.table.get_mut(pid) {
            Some(r) if kept => {
                let until = at + self.window;
                r.until = Some(until);
                self.ending.insert((until, pid.to_owned()));
            }
            Some(_) => {
                self.table.remove(pid);
            }
            None => {}
        }
    }

    /// The session of `pid` is another node's now, or this one's: it is
    /// no longer recovered from this table.
    pub(crate) fn remove(&mut self, pid: &str) {
        self.table.remove(pid);
    }

    /// Node `node` was alive at `at`.
    pub(crate) fn heard(&mut self, at: Instant, node: &str) {
        match self.heard.get_mut(node) {
            Some(last) => *last = (*last).max(at),
            None => {
                self.heard.insert(node.to_owned(), at);
            }
        }
    }

    /// Sessions of nodes silent for [`SILENT`] lost their transport when
    /// their node was last heard; sessions past their window go.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let window = self.window;
        for (pid, r) in &mut self.table {
            if r.until.is_none()
                && let Some(&last) = self.heard.get(&r.node)
                && last + SILENT <= now
            {
                r.until = Some(last + window);
                self.ending.insert((last + window, pid.clone()));
            }
        }
        self.table.retain(|_, r| r.until.is_none_or(|u| now < u));
        // What ran out is gone from the table; stale entries with it.
        while self.ending.first().is_some_and(|(until, _)| *until <= now) {
            self.ending.pop_first();
        }
    }

    /// The session of `pid` another node holds or held, if it may still
    /// come back.
    pub(crate) fn get(&self, now: Instant, pid: &str) -> Option<&Remote> {
        self.table
            .get(pid)
            .filter(|r| r.until.is_none_or(|u| now < u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected session of node `n1`.
    fn remote(sid: &str) -> Remote {
        Remote {
            sid: sid.into(),
            nsp: "/".into(),
            rooms: HashSet::new(),
            data: serde_json::Value::Null,
            node: "n1".into(),
            until: None,
            from: 0,
        }
    }

    /// A full table of other nodes' sessions lets go of the one that runs
    /// out first among those that lost their transport, never a connected
    /// one; with every one connected, the newcomer is not tracked.
    #[test]
    fn a_full_remote_table_lets_go_of_what_runs_out_first_never_of_the_connected() {
        let now = Instant::now();
        let mut s = Remotes::new(Duration::from_secs(10), 3);
        for p in ["live", "late", "early"] {
            s.state(p.into(), remote(p));
        }
        s.gone(now + Duration::from_secs(2), "late", true);
        s.gone(now, "early", true);
        s.state("new1".into(), remote("new1"));
        assert!(s.get(now, "early").is_none(), "the first to run out went");
        for p in ["live", "late", "new1"] {
            assert!(s.get(now, p).is_some(), "{p}");
        }
        s.state("new2".into(), remote("new2"));
        assert!(s.get(now, "late").is_none());
        // Every one connected: the newcomer waits outside.
        s.state("new3".into(), remote("new3"));
        assert!(s.get(now, "new3").is_none());
        for p in ["live", "new1", "new2"] {
            assert!(s.get(now, p).is_some(), "{p}");
        }
        // A session that came back is not let go by its old deadline.
        s.gone(now, "new1", true);
        s.state("new1".into(), remote("new1"));
        s.state("new4".into(), remote("new4"));
        assert!(s.get(now, "new1").is_some());
        assert!(s.get(now, "new4").is_none());
    }

    /// A node silent for `SILENT` (15 s) is taken to have died when it was last
    /// heard: its connected sessions stay recoverable for the window from
    /// then, and go after it.
    #[test]
    fn the_sessions_of_a_silent_node_end_when_it_was_last_heard() {
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let mut s = Remotes::new(window, 10);
        s.heard(now, "n1");
        s.state("p".into(), remote("s"));
        s.sweep(now + SILENT - Duration::from_millis(1));
        assert_eq!(s.get(now, "p").and_then(|r| r.until), None);
        s.sweep(now + SILENT);
        assert_eq!(s.get(now, "p").and_then(|r| r.until), Some(now + window));
        s.sweep(now + window);
        assert!(s.get(now, "p").is_none());
    }
}
