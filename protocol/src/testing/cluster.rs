//! A whole cluster in one thread: several chat nodes ([`Sim`]s), one
//! shared store (the in-memory model), and a fake bus with the semantics
//! chatwire's hosts get from a Redis stream: one log every node reads in
//! the same order, each at its own pace, from where it stopped. The test
//! picks who reads next (so deliveries interleave across nodes in any
//! order), cuts a node off the bus and heals it (what it publishes waits,
//! what it missed is read after), or trims the log (what a cut-off node
//! had not read is lost to it).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::chaos::SimRng;
use super::harness::Sim;
use crate::ids::SeededIds;
use crate::node::Input;
use crate::sio::{ClusterConfig, SocketIoConfig};
use crate::store::memory::MemoryModel;

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
    trimmed: usize,
    /// Where each node reads next (an index into the whole history).
    cursors: Vec<usize>,
    /// Nodes cut off the bus, with what they published meanwhile.
    cut: BTreeMap<usize, Vec<Bytes>>,
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
            .map(|i| {
                let sio = SocketIoConfig {
                    cluster: Some(ClusterConfig {
                        node: format!("n{i}"),
                    }),
                    ..sio.clone()
                };
                let mut sim = Sim::with(SeededIds::new([i as u8 + 1; 32]), sio);
                sim.node.join_cluster(&format!("n{i}"));
                sim
            })
            .collect();
        ClusterSim {
            nodes,
            store: MemoryModel::new(),
            log: Vec::new(),
            trimmed: 0,
            cursors: vec![0; n],
            cut: BTreeMap::new(),
        }
    }

    /// Moves what the nodes published onto the bus (a cut-off node's
    /// waits), and runs every store command against the shared store, until
    /// nothing of either is left.
    fn collect(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                let published = std::mem::take(&mut self.nodes[i].published);
                moved |= !published.is_empty();
                match self.cut.get_mut(&i) {
                    Some(waiting) => waiting.extend(published),
                    None => self.log.extend(published),
                }
                let sim = &mut self.nodes[i];
                while !sim.in_flight.is_empty() {
                    let (op, command) = sim.in_flight.remove(0);
                    let reply = self.store.apply(command);
                    sim.reply(op, reply);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Whether node `i` has something on the bus to read.
    fn can_read(&self, i: usize) -> bool {
        !self.cut.contains_key(&i) && self.cursors[i] < self.trimmed + self.log.len()
    }

    /// Node `i` reads its next message; false when it has none.
    pub fn read(&mut self, i: usize) -> bool {
        self.collect();
        if !self.can_read(i) {
            return false;
        }
        let at = self.cursors[i].max(self.trimmed);
        let message = self.log[at - self.trimmed].clone();
        self.cursors[i] = at + 1;
        self.nodes[i].input(Input::Cluster(message));
        self.collect();
        true
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
            self.log.extend(waiting);
        }
        self.collect();
    }

    /// What is on the bus (what was trimmed aside), oldest first.
    pub fn bus(&self) -> &[Bytes] {
        &self.log
    }

    /// The bus keeps only its newest `keep` messages.
    pub fn trim(&mut self, keep: usize) {
        self.collect();
        let drop = self.log.len().saturating_sub(keep);
        self.log.drain(..drop);
        self.trimmed += drop;
    }
}
