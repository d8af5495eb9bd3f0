//! Test support, apart from the product code: a deterministic simulation of
//! a chat server (the harness that drives a [`Node`](crate::Node) with fake
//! clients, a virtual clock and the in-memory store's model
//! ([`MemoryModel`](crate::store::memory::MemoryModel), the one in-memory
//! store, which passes the store suite), and the chaos runner that plays
//! seeded schedules against it), feature `sim`; the
//! conformance suite every [`Store`](crate::store::Store) runs, feature
//! `store-suite`; and the crate's own scenario and property tests.
//!
//! Everything here replays exactly: there is no thread, no socket and no
//! real time.

#[cfg(any(test, feature = "sim"))]
pub mod chaos;
#[cfg(any(test, feature = "sim"))]
pub mod cluster;
#[cfg(test)]
mod cluster_scenarios;
#[cfg(any(test, feature = "sim"))]
pub mod harness;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod scenarios;
#[cfg(feature = "store-suite")]
pub mod store_suite;

#[cfg(any(test, feature = "sim"))]
pub use chaos::{
    CHATS, Chaos, ChaosStats, ChaosStep, MAX_TABS, Release, SendKind, SimRng, USERS, Weights,
    for_each_seed, seeds, user_id,
};
#[cfg(any(test, feature = "sim"))]
pub use cluster::ClusterSim;
#[cfg(any(test, feature = "sim"))]
pub use harness::{Client, SECRET, Sim, T0_MS, error_codes, event, names, send, tab, uid};
