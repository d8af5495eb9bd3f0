//! A node's end of the cluster, without IO (in the manner of quinn-proto's
//! `Endpoint` in front of its connections): what the node publishes and
//! reads on the bus passes through its `Endpoint`, which seals and
//! numbers every entry going out, opens, decodes, deduplicates and counts
//! every entry coming in, and keeps the node-to-node state (polling
//! requests forwarded to the node holding their session, WebSockets
//! relayed there: [`forward`]).
//!
//! What each word of the bus means is [`crate::bus::Word`]; which nodes read
//! it, [`crate::bus::Topic`]. The Socket.IO layer's side (rooms' events,
//! places in a chat's order, sessions for recovery) is
//! [`crate::sio::cluster`], which gets its words typed from the node.

pub mod forward;

use std::time::Instant;

use crate::bus::{Entry, Newest, Word};
use crate::host::RequestId;
use crate::stats::{BusKind, Stats};
use forward::Forwarding;

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
}

impl Endpoint {
    /// The end of the node named `node` (unique in the cluster).
    pub(crate) fn new(node: String) -> Self {
        Endpoint {
            published: 0,
            newest: Newest::default(),
            forwarding: Forwarding::new(node),
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

    /// This end's next deadline.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.forwarding.poll_timeout()
    }

    /// What is due at `now`: the requests sent elsewhere that no answer
    /// came back for (the node that held their sessions is gone).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<RequestId> {
        self.forwarding.expire(now)
    }
}
