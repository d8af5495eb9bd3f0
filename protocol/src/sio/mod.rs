//! Socket.IO v5 over Engine.IO: packets, binary attachments, namespaces,
//! rooms, acknowledgements, and the interface applications plug into.

mod id;
pub mod packet;
mod recovery;
mod seen;
pub mod socket;

pub use crate::cluster::ClusterConfig;
pub use recovery::RecoveryConfig;
pub use socket::{
    Application, ConnectRequest, Ctx, DisconnectReason, Event, SocketId, SocketIo, SocketIoConfig,
};

#[cfg(test)]
mod socket_tests;
