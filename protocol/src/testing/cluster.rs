//! A whole cluster in one thread: several chat nodes ([`Sim`]s), one
//! shared store (the in-memory model, which also keeps the per-user
//! buckets the nodes share, as Redis does), and a fake bus with the semantics
//! chatwire's hosts get from a Redis stream: one log every node reads in
//! the same order, each at its own pace, from where it stopped (each node
//! only what its topics hold: [`Topic::All`], its own inbox, and the rooms
//! it subscribed to, from the point it had read to when it did). The test
//! picks who reads next (so deliveries interleave across nodes in any
//! order), cuts a node off the bus and heals it (what it publishes waits,
//! what it missed is read after), trims the log (what a cut-off node had
//! not read is lost to it), or restarts a node (a new process that reads
//! the bus's past first).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;

use super::chaos::SimRng;
use super::harness::Sim;
use crate::bus::{Entry, Topic};
use crate::ids::SeededIds;
use crate::node::Input;
use crate::sio::{ClusterConfig, SocketIoConfig};
use crate::store::memory::MemoryModel;
use crate::store::{Place, StoreCommand};

/// The fake bus and the nodes on it.
#[derive(Debug)]
pub struct ClusterSim {
    /// The nodes, `n0`, `n1`, ...
    pub nodes: Vec<Sim>,
    /// The store they share.
    pub store: MemoryModel,
    /// Every message on the bus, in its one order; `trimmed` before the
    /// first kept.
    log: Vec<Bytes>,
    /// Each entry's topic, as `log`.
    topics: Vec<Topic>,
    trimmed: usize,
    /// Each node's name on the bus (its inbox's topic).
    names: Vec<String>,
    /// The rooms' topics each node reads, each from the index it had read
    /// to when it subscribed.
    subs: Vec<HashMap<Topic, usize>>,
    /// The position Redis gave each entry (by index into the whole
    /// history): what the host tells a node with it.
    positions: BTreeMap<usize, Place>,
    /// Where each node reads next (an index into the whole history).
    cursors: Vec<usize>,
    /// Nodes cut off the bus, with what they published meanwhile.
    cut: BTreeMap<usize, Vec<Entry>>,
    /// Restarted nodes still reading the bus's past: where it ends, and
    /// how old it is.
    past: BTreeMap<usize, (usize, Duration)>,
    /// The Socket.IO settings every node starts with.
    sio: SocketIoConfig,
    restarts: usize,
    /// Nodes whose message appends wait for [`ClusterSim::answer_appends`].
    slow: BTreeSet<usize>,
}

impl ClusterSim {
    /// `n` nodes with the contract's defaults, each with its own seeded ids
    /// (so that sids and message ids differ across nodes, as with random
    /// ones), on one bus and one store.
    pub fn new(n: usize) -> Self {
        ClusterSim::with(n, SocketIoConfig::default())
    }

    /// [`ClusterSim::new`] with these Socket.IO settings (recovery on, say;
    /// the cluster's are set here).
    pub fn with(n: usize, sio: SocketIoConfig) -> Self {
        let nodes = (0..n)
            .map(|i| node(&format!("n{i}"), [i as u8 + 1; 32], &sio))
            .collect();
        ClusterSim {
            nodes,
            store: MemoryModel::new(),
            log: Vec::new(),
            topics: Vec::new(),
            trimmed: 0,
            names: (0..n).map(|i| format!("n{i}")).collect(),
            subs: vec![HashMap::new(); n],
            positions: BTreeMap::new(),
            cursors: vec![0; n],
            cut: BTreeMap::new(),
            past: BTreeMap::new(),
            sio,
            restarts: 0,
            slow: BTreeSet::new(),
        }
    }

    /// Node `i` dies and a new process takes its place: a new name on the
    /// bus, no sockets, and, as chatwire's host does with recovery on, the
    /// bus's past read first (all that it still holds, as
    /// [`Input::ClusterPast`], then [`Input::ClusterCaughtUp`]), at the
    /// pace [`ClusterSim::read`] is called. Every message of the past is
    /// `age` old.
    pub fn restart(&mut self, i: usize, age: Duration) {
        self.collect();
        self.restarts += 1;
        let name = format!("n{i}r{}", self.restarts);
        let seed = [(i + 16 * self.restarts) as u8 + 1; 32];
        self.nodes[i] = node(&name, seed, &self.sio);
        self.names[i] = name;
        self.subs[i].clear();
        self.cut.remove(&i);
        self.slow.remove(&i);
        self.cursors[i] = self.trimmed;
        self.past.insert(i, (self.trimmed + self.log.len(), age));
    }

    /// Moves what the nodes published onto the bus (a cut-off node's
    /// waits), and runs every store command against the shared store, until
    /// nothing of either is left.
    fn collect(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                for (topic, on) in std::mem::take(&mut self.nodes[i].subscriptions) {
                    match on {
                        true => {
                            let from = self.cursors[i].max(self.trimmed);
                            self.subs[i].entry(topic).or_insert(from);
                        }
                        false => {
                            self.subs[i].remove(&topic);
                        }
                    }
                }
                let published = std::mem::take(&mut self.nodes[i].published);
                moved |= !published.is_empty();
                match self.cut.get_mut(&i) {
                    Some(waiting) => waiting.extend(published),
                    None => {
                        let ms = self.nodes[i].unix_ms();
                        self.append(published, ms);
                    }
                }
                // A cut-off node cannot reach Redis at all: the bucket the
                // nodes share is there too, so its takes wait with its
                // messages (the rest of the store, MongoDB, it reaches).
                let cut = self.cut.contains_key(&i);
                let slow = self.slow.contains(&i);
                let sim = &mut self.nodes[i];
                let mut k = 0;
                while k < sim.in_flight.len() {
                    let waits = match sim.in_flight[k].1 {
                        StoreCommand::TakeToken(_) => cut,
                        StoreCommand::AppendMessage(_) => slow,
                        _ => false,
                    };
                    if waits {
                        k += 1;
                        continue;
                    }
                    let (op, command) = sim.in_flight.remove(k);
                    let reply = self.store.apply(command);
                    // A take's place goes on the bus in the take's step.
                    for (entry, place) in self.store.take_placed() {
                        self.positions.insert(self.trimmed + self.log.len(), place);
                        self.log.push(entry.bytes);
                        self.topics.push(entry.topic);
                    }
                    sim.reply(op, reply);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Node `i`'s message appends wait (its store is slow) until
    /// [`ClusterSim::answer_appends`].
    pub fn slow(&mut self, i: usize) {
        self.collect();
        self.slow.insert(i);
    }

    /// Node `i`'s waiting appends are answered, in order, and later ones
    /// at once again.
    pub fn answer_appends(&mut self, i: usize) {
        self.slow.remove(&i);
        self.collect();
    }

    /// Appends entries published at `ms` (by their node's clock), each at
    /// the bus's next position.
    fn append(&mut self, entries: Vec<Entry>, ms: i64) {
        for entry in entries {
            let at = self.store.position(ms);
            self.positions.insert(self.trimmed + self.log.len(), at);
            self.log.push(entry.bytes);
            self.topics.push(entry.topic);
        }
    }

    /// Whether node `i` reads the entry at `at` (an index into the whole
    /// history).
    fn reads(&self, i: usize, at: usize) -> bool {
        match &self.topics[at - self.trimmed] {
            Topic::All => true,
            Topic::Node(name) => *name == self.names[i],
            room @ Topic::Room { .. } => self.subs[i].get(room).is_some_and(|&from| at >= from),
        }
    }

    /// The index of the next entry node `i` reads, from `from` on.
    fn next_for(&self, i: usize, from: usize) -> Option<usize> {
        (from.max(self.trimmed)..self.trimmed + self.log.len()).find(|&at| self.reads(i, at))
    }

    /// Whether node `i` has something on the bus to read.
    fn can_read(&self, i: usize) -> bool {
        !self.cut.contains_key(&i)
            && (self.cursors[i] < self.trimmed || self.next_for(i, self.cursors[i]).is_some())
    }

    /// Node `i` reads its next message; false when it has none.
    pub fn read(&mut self, i: usize) -> bool {
        self.collect();
        if !self.can_read(i) {
            return false;
        }
        if self.cursors[i] < self.trimmed && !self.past.contains_key(&i) {
            // (Anything of its topics or not: the host cannot tell.)
            // What it had not read was trimmed: its host tells it so.
            self.cursors[i] = self.trimmed;
            self.nodes[i].input(Input::ClusterGap);
            self.collect();
            if !self.can_read(i) {
                return true;
            }
        }
        let Some(at) = self.next_for(i, self.cursors[i]) else {
            self.cursors[i] = self.trimmed + self.log.len();
            return true;
        };
        let message = self.log[at - self.trimmed].clone();
        let position = self.positions.get(&at).copied();
        self.cursors[i] = at + 1;
        match self.past.get(&i).copied() {
            Some((end, age)) if at < end => {
                self.nodes[i].input(Input::ClusterPast {
                    message,
                    age,
                    at: position,
                });
                if self.next_for(i, at + 1).is_none_or(|next| next >= end) {
                    self.past.remove(&i);
                    self.nodes[i].input(Input::ClusterCaughtUp);
                }
            }
            Some(_) => {
                // The rest of its past was trimmed away.
                self.past.remove(&i);
                self.nodes[i].input(Input::ClusterCaughtUp);
                self.nodes[i].input(Input::Cluster {
                    message,
                    at: position,
                });
            }
            None => self.nodes[i].input(Input::Cluster {
                message,
                at: position,
            }),
        }
        self.collect();
        true
    }

    /// Node `i` reads its next `k` entries (fewer if it has fewer) as one
    /// batch of inputs, as a host feeds what one read of the bus returned
    /// before it drains the node's outputs; returns how many it read. For
    /// a node neither cut off nor reading its past.
    pub fn read_batch(&mut self, i: usize, k: usize) -> usize {
        self.collect();
        let mut n = 0;
        while n < k && !self.cut.contains_key(&i) && !self.past.contains_key(&i) {
            let Some(at) = self.next_for(i, self.cursors[i]) else {
                break;
            };
            let message = self.log[at - self.trimmed].clone();
            let position = self.positions.get(&at).copied();
            self.cursors[i] = at + 1;
            let sim = &mut self.nodes[i];
            let input = Input::Cluster {
                message,
                at: position,
            };
            sim.node
                .handle_input(sim.now, input)
                .expect("the simulation's clock never goes back");
            n += 1;
        }
        self.nodes[i].drain();
        self.collect();
        n
    }

    /// Every node reads until the bus is quiet; who reads next is drawn
    /// from `rng`.
    pub fn settle(&mut self, rng: &mut SimRng) {
        loop {
            self.collect();
            let ready: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.can_read(i))
                .collect();
            if ready.is_empty() {
                return;
            }
            let i = ready[rng.below(ready.len())];
            self.read(i);
        }
    }

    /// Cuts node `i` off the bus: it reads nothing, and what it publishes
    /// waits for [`ClusterSim::heal`].
    pub fn cut(&mut self, i: usize) {
        self.collect();
        self.cut.entry(i).or_default();
    }

    /// Node `i` is back on the bus: what it published meanwhile goes on,
    /// and it reads on from where it stopped.
    pub fn heal(&mut self, i: usize) {
        if let Some(waiting) = self.cut.remove(&i) {
            let ms = self.nodes[i].unix_ms();
            self.append(waiting, ms);
        }
        self.collect();
    }

    /// How many messages of the bus's past restarted node `i` has yet to
    /// read.
    pub fn past_left(&self, i: usize) -> usize {
        self.past.get(&i).map_or(0, |&(end, _)| {
            end.saturating_sub(self.cursors[i].max(self.trimmed))
        })
    }

    /// What is on the bus (what was trimmed aside), oldest first.
    pub fn bus(&self) -> &[Bytes] {
        &self.log
    }

    /// The last `k` entries on the bus are appended again, as a host does
    /// that publishes again a batch whose write timed out after Redis took
    /// it.
    pub fn publish_again(&mut self, k: usize) {
        self.collect();
        let from = self.log.len().saturating_sub(k);
        let again: Vec<Entry> = self.log[from..]
            .iter()
            .zip(&self.topics[from..])
            .map(|(bytes, topic)| Entry {
                topic: topic.clone(),
                kind: crate::bus::open(bytes)
                    .and_then(|o| crate::bus::Word::decode(o.json))
                    .map_or(crate::stats::BusKind::Other, |w| w.kind()),
                bytes: bytes.clone(),
            })
            .collect();
        let ms = self.nodes[0].unix_ms();
        self.append(again, ms);
    }

    /// The bus keeps only its newest `keep` messages.
    pub fn trim(&mut self, keep: usize) {
        self.collect();
        let drop = self.log.len().saturating_sub(keep);
        self.log.drain(..drop);
        self.topics.drain(..drop);
        self.trimmed += drop;
    }
}

/// A chat node named `name` on the bus, its ids seeded with `seed`.
fn node(name: &str, seed: [u8; 32], sio: &SocketIoConfig) -> Sim {
    let sio = SocketIoConfig {
        cluster: Some(ClusterConfig {
            node: name.to_owned(),
        }),
        ..sio.clone()
    };
    Sim::with(SeededIds::new(seed), sio)
}
