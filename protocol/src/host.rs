//! What passes between a host and a node and names nothing inside the
//! core: the host's names for its requests and connections, the core's
//! names for store operations, and the HTTP answers and WebSocket frames
//! the host writes. Every layer uses these; they use no layer.

use std::time::Instant;

use bytes::Bytes;

/// Names an HTTP request; chosen by the host, unique among its open requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Names a WebSocket connection; chosen by the host, unique among its open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Names a store operation; chosen by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// The HTTP methods the Engine.IO path distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// Any other.
    Other,
}

/// An HTTP response for the host to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// 200 with a polling payload.
    pub fn text(body: Bytes) -> Self {
        HttpResponse {
            status: 200,
            content_type: "text/plain; charset=UTF-8",
            body,
        }
    }

    /// A JSON body with a status.
    pub fn json(status: u16, body: Bytes) -> Self {
        HttpResponse {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// 200 `ok`, the answer to a POSTed payload.
    pub fn ok() -> Self {
        HttpResponse {
            status: 200,
            content_type: "text/html",
            body: Bytes::from_static(b"ok"),
        }
    }
}

/// A WebSocket frame for the host to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (always valid UTF-8).
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
}

/// A packet for every socket in a room of a namespace but some, as one
/// [`Output::Broadcast`](crate::Output::Broadcast).
///
/// Polling sessions in the room have it in their buffers already (their
/// next poll carries it); `conns` names the WebSocket connections, in the
/// order of the room's members, each to get `frame` after what was output
/// for it before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    /// The namespace.
    pub nsp: String,
    /// The room.
    pub room: String,
    /// The public ids (`socket.id`) of the sockets left out.
    pub except: Vec<String>,
    /// The Engine.IO packet, encoded once.
    pub frame: Frame,
    /// This node's WebSocket connections to write `frame` to.
    pub conns: Vec<ConnId>,
}

/// Wall-clock time carried forward on the host's monotonic time from one
/// reading of the host's clock (an instant and the Unix milliseconds then).
/// The core never reads a clock: a host hands it a fresh reading as often as
/// it likes ([`crate::Node::set_wall_clock`]), so that a step of the
/// system clock reaches the core with the next inputs.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    base: Instant,
    base_ms: i64,
}

impl WallClock {
    /// Anchors `base` to `base_ms` milliseconds since the Unix epoch.
    pub fn new(base: Instant, base_ms: i64) -> Self {
        WallClock { base, base_ms }
    }

    /// Milliseconds since the Unix epoch at `now`.
    pub fn unix_ms(&self, now: Instant) -> i64 {
        self.base_ms + now.saturating_duration_since(self.base).as_millis() as i64
    }
}
