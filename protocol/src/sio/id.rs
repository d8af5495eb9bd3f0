//! The name of a socket, apart from the layer that hands them out, so that
//! what keeps sockets' sessions (recovery) and what runs them (the socket
//! layer) both use it without depending on each other.

/// Names one socket (one client in one namespace); never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u64);

impl SocketId {
    /// The socket numbered `n` (the socket layer numbers them in order).
    pub(crate) const fn new(n: u64) -> Self {
        SocketId(n)
    }
}
