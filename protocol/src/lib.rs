//! The sans-IO core of chatwire: Engine.IO v4, Socket.IO v5, the chat
//! service and the REST routes, as state machines.
//!
//! This crate does no IO, reads no clock and draws no random number of its
//! own. Bytes, time and store replies come in as inputs; bytes to send,
//! store commands and the next deadline come out as outputs. Given the same
//! inputs (and the same [`ids::IdGenerator`] seed) it produces the same
//! outputs, which is what makes it simulable (`testing`, feature `sim`),
//! fuzzable and embeddable in any host, async or blocking. Inside, the
//! [`Node`] routes between the Engine.IO layer ([`eio`]) and the layer
//! above it ([`sio`] and an application such as [`chat`]); neither calls
//! the other. What the host must do after each output is written on
//! [`Node`].
//!
//! Several nodes make one cluster when their hosts carry what each
//! publishes ([`Output::Publish`]) to the nodes that read its topic
//! ([`bus::Topic`]: every node, one node's inbox, or the nodes subscribed
//! to a room, [`Output::Subscribe`]), each topic in one order for all
//! (chatwire's host: Redis streams, and channels for the rooms), and feed
//! it back as [`Input::Cluster`]. Every entry is a [`bus::Word`] of one
//! versioned vocabulary, which the node's end of the bus ([`cluster`])
//! decodes once: it runs the words between two nodes there (polling
//! requests and relayed WebSockets reach the node holding their session),
//! keeps each room's one order across the nodes and who got what, with
//! its own timers, and hands the layer above typed what it is to apply
//! ([`cluster::Heard`], [`Upper::on_cluster`]): room events in their
//! order, and the words by which sessions recover on any node
//! ([`sio::RecoveryConfig`]). The per-user
//! rate limit is then the store's ([`store::Store::take_token`]). Wall time
//! comes from the host with the inputs ([`Node::set_wall_clock`]).
//!
//! A host's run loop, in six steps:
//!
//! ```no_run
//! use std::time::Instant;
//! use chatwire_protocol::{Input, Node, Output};
//! use chatwire_protocol::eio::EngineConfig;
//! use chatwire_protocol::ids::SeededIds;
//! use chatwire_protocol::sio::{SocketIo, SocketIoConfig};
//! # fn chat_app() -> chatwire_protocol::chat::Chat { unimplemented!() }
//! # fn next_event(_deadline: Instant) -> Option<(chatwire_protocol::ConnId, String)> { None }
//!
//! // 1. Build a node: Engine.IO, Socket.IO, and an application on top.
//! let sio = SocketIo::new(SocketIoConfig::default(), chat_app());
//! let mut node = Node::new(EngineConfig::default(), sio, SeededIds::new([7; 32]), Instant::now());
//! loop {
//!     // 2. Drain every output until the node says when it next needs time.
//!     let deadline = loop {
//!         match node.poll_output() {
//!             Output::Timeout(t) => break t,
//!             // 3. Write frames (a broadcast's to each of its connections),
//!             //    answer requests, run store commands.
//!             other => { let _ = other; }
//!         }
//!     };
//!     // 4. Wait for the next input or the deadline, whichever is first.
//!     match next_event(deadline) {
//!         // 5. Feed what arrived, with the time it arrived.
//!         Some((conn, text)) => node.handle_input(Instant::now(), Input::WsText { conn, text: &text }).unwrap(),
//!         // 6. Or tell the node that time passed.
//!         None => node.handle_input(Instant::now(), Input::Timeout).unwrap(),
//!     }
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[macro_use]
mod labels;

pub mod auth;
pub mod bus;
pub mod chat;
pub mod cluster;
pub mod deadlines;
pub mod eio;
pub mod host;
pub mod http;
pub mod ids;
pub mod model;
pub mod node;
pub mod rate;
pub mod sio;
pub mod stats;
pub mod store;
#[cfg(any(test, feature = "sim", feature = "store-suite"))]
pub mod testing;
pub mod ws;

pub use node::{
    Broadcast, ConnId, Frame, HttpResponse, Input, InputError, Method, Node, OpId, Output,
    RequestId, Upper,
};
