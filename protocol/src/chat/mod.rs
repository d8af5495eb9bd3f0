//! The chat service: an [`Application`](crate::sio::Application) that turns
//! `chat:*` events into store commands, and store replies into acks and
//! broadcasts.

#[cfg(feature = "openapi")]
pub mod asyncapi;
#[cfg(all(test, feature = "openapi"))]
mod asyncapi_tests;
pub mod events;
mod message_ids;
mod service;
#[cfg(test)]
mod service_tests;
mod typing;
mod validate;

pub use crate::rate::{Moment, RateLimit, TokenBucket, UnixMs};
pub use events::{ClientEvent, ErrorCode, ServerEvent};
pub use message_ids::MessageIds;
pub use service::{BUS_WAIT, Chat, ChatConfig, DEFAULT_MAX_CHATS, DEFAULT_TYPING_TIMEOUT};
pub use typing::MAX_TYPING_CHATS;
pub use validate::{MAX_READ_IDS, MAX_TEMP_ID_CHARS, MAX_TYPE_CHARS, Refusal, SendRequest};

use std::time::Instant;

/// Wall-clock time derived from the host's monotonic time: the host gives one
/// (instant, Unix ms) pair at start and every later instant maps from it, so
/// the core never reads a clock and message timestamps never go back.
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
