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
pub use message_ids::{MessageIds, place_of, placed};
pub use service::{BUS_WAIT, Chat, ChatConfig, DEFAULT_MAX_CHATS, DEFAULT_TYPING_TIMEOUT};
pub use typing::MAX_TYPING_CHATS;
pub use validate::{MAX_READ_IDS, MAX_TEMP_ID_CHARS, MAX_TYPE_CHARS, Refusal, SendRequest};

pub use crate::host::WallClock;
