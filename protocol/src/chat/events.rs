//! The names the chat service speaks: its events both ways, its refusal
//! codes and its connect errors, in one place, so that the service and its
//! AsyncAPI document (`asyncapi`) take them from the same list.

use serde::{Serialize, Serializer};

/// An enum of wire names with every member listed in `ALL`, so that a new
/// member is in every list the moment it exists.
macro_rules! names {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every member, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// As it goes on the wire.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }

            /// The member named `s`, if any.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|e| e.name() == s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
    };
}

names! {
    /// The events a client sends; every one may carry an ack callback.
    ClientEvent {
        /// A message to store and broadcast.
        Send = "chat:send",
        /// The sender is (or stopped) typing in a chat.
        Typing = "chat:typing",
        /// The reader has read these messages.
        Read = "chat:read",
        /// Enter a chat's room.
        Join = "chat:join",
        /// Leave a chat's room.
        Leave = "chat:leave",
    }
}

names! {
    /// The events the server sends.
    ServerEvent {
        /// A message, to every socket in its chat but the sender's.
        NewMessage = "chat:new-message",
        /// The sender's message is durable.
        Ack = "chat:ack",
        /// Someone is (or stopped) typing.
        Typing = "chat:typing",
        /// The sender's message was handed to another socket.
        Delivered = "chat:delivered",
        /// Someone read these messages.
        Read = "chat:read",
        /// The socket's event was refused.
        Error = "error",
    }
}

names! {
    /// Why an event was refused: `code` of `error` and of a refused ack.
    ErrorCode {
        /// The payload breaks a rule.
        Invalid = "invalid",
        /// The user sent too many messages, or the socket too many events.
        RateLimited = "rate_limited",
        /// A `chat:join` past the socket's most chats.
        TooManyChats = "too_many_chats",
        /// The store did not take the write.
        StoreUnavailable = "store_unavailable",
        /// The server is shutting down and starts no new write.
        ShuttingDown = "shutting_down",
    }
}

/// CONNECT_ERROR `message` without a valid token.
pub const UNAUTHORIZED: &str = "Unauthorized";

/// CONNECT_ERROR `message` for a token past its `exp`.
pub const TOKEN_EXPIRED: &str = "Token expired";
