//! The chat's data model: ids, messages and users, as the contract spells them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A BSON ObjectId: 4 bytes of seconds, 5 of per-process randomness, 3 of a counter.
///
/// Rendered as 24 lower-case hex characters. Ordered byte-wise, which is the
/// order MongoDB gives them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectId(pub [u8; 12]);

impl ObjectId {
    /// Builds an id from its three parts.
    pub fn from_parts(seconds: u32, process: [u8; 5], counter: u32) -> Self {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&seconds.to_be_bytes());
        b[4..9].copy_from_slice(&process);
        b[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
        ObjectId(b)
    }

    /// The seconds since the Unix epoch stored in the id.
    pub fn seconds(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The 24-character lower-case hex form.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(24);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }
}

/// A string that is not 24 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 24-character hex ObjectId")]
pub struct BadObjectId;

impl FromStr for ObjectId {
    type Err = BadObjectId;
    fn from_str(s: &str) -> Result<Self, BadObjectId> {
        let b = s.as_bytes();
        if b.len() != 24 {
            return Err(BadObjectId);
        }
        let mut out = [0u8; 12];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or(BadObjectId)?;
            let lo = (pair[1] as char).to_digit(16).ok_or(BadObjectId)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(ObjectId(out))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a message is in its life. It only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored; not yet handed to another socket.
    Sent,
    /// Handed to at least one socket other than the sender's.
    Delivered,
    /// Named by a `chat:read` from a user other than the author.
    Read,
}

impl Status {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "sent" => Some(Status::Sent),
            "delivered" => Some(Status::Delivered),
            "read" => Some(Status::Read),
            _ => None,
        }
    }
}

/// A chat message exactly as routes and events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = schemas::message_example))]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Unique, increasing within one process.
    pub id: ObjectId,
    /// The chat (room) it belongs to.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::chat_id))]
    pub chat_id: String,
    /// The sender's username, from the token.
    pub author: String,
    /// The sender's user id, from the token.
    pub author_id: ObjectId,
    /// The text, 1 to [`MAX_TEXT_CHARS`] characters.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::text))]
    pub text: String,
    /// Milliseconds since the Unix epoch, set by the server.
    pub timestamp: i64,
    /// Where it is in its life.
    pub status: Status,
    /// The client's type tag, `text` by default.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A user as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's id.
    pub id: ObjectId,
    /// The name as registered (case kept).
    pub username: String,
    /// The bcrypt hash of the password.
    pub password_hash: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PublicUser {
    /// The user's id.
    pub id: ObjectId,
    /// The name as registered.
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::username))]
    pub username: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl From<&UserRecord> for PublicUser {
    fn from(u: &UserRecord) -> Self {
        PublicUser {
            id: u.id,
            username: u.username.clone(),
            created_at: u.created_at,
        }
    }
}

/// The longest chat id.
pub const MAX_CHAT_ID_LEN: usize = 64;

/// The bytes a chat id is made of, besides ASCII letters and digits.
const CHAT_ID_PUNCTUATION: &[u8] = b"_.:-";

/// A chat id: 1 to [`MAX_CHAT_ID_LEN`] characters of `A-Z a-z 0-9 _ . : -`.
pub fn valid_chat_id(s: &str) -> bool {
    (1..=MAX_CHAT_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || CHAT_ID_PUNCTUATION.contains(&b))
}

/// [`valid_chat_id`] as a regular expression, for the API documents.
pub fn chat_id_pattern() -> String {
    let punctuation = String::from_utf8_lossy(CHAT_ID_PUNCTUATION);
    format!("^[A-Za-z0-9{punctuation}]{{1,{MAX_CHAT_ID_LEN}}}$")
}

/// The most characters (Unicode scalar values) a message's text holds.
pub const MAX_TEXT_CHARS: usize = 4000;

/// The shortest and longest usernames.
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=32;

/// A username: [`USERNAME_LEN`] characters of `A-Z a-z 0-9 _ . -`.
pub fn valid_username(s: &str) -> bool {
    USERNAME_LEN.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// [`valid_username`] as a regular expression, for the API documents.
pub fn username_pattern() -> String {
    format!(
        "^[A-Za-z0-9_.-]{{{},{}}}$",
        USERNAME_LEN.start(),
        USERNAME_LEN.end()
    )
}

/// Lower-case hex, as every id is rendered.
pub const OBJECT_ID_PATTERN: &str = "^[0-9a-f]{24}$";

/// What [`ObjectId`]'s `FromStr` accepts: hex of either case.
pub const OBJECT_ID_INPUT_PATTERN: &str = "^[0-9a-fA-F]{24}$";

/// The chat every socket is in, and the default wherever a chat id is optional.
pub const DEFAULT_CHAT: &str = "general";

/// The schemas of the model's fields, from the constants above (feature `openapi`).
#[cfg(feature = "openapi")]
pub(crate) mod schemas {
    use serde_json::{Value, json};
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    use super::*;

    /// A chat id.
    pub(crate) fn chat_id() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_CHAT_ID_LEN))
            .pattern(Some(chat_id_pattern()))
            .examples([DEFAULT_CHAT, "team.eng"])
    }

    /// A message's text.
    pub(crate) fn text() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_TEXT_CHARS))
            .description(Some("Not only white space."))
    }

    /// A username.
    pub(crate) fn username() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(*USERNAME_LEN.start()))
            .max_length(Some(*USERNAME_LEN.end()))
            .pattern(Some(username_pattern()))
            .examples(["ana"])
    }

    pub(crate) fn message_example() -> Value {
        json!({"id": "665f1c2e9b1e8a3f4c2d1a0b", "chatId": "general", "author": "ana",
               "authorId": "665f1c0a9b1e8a3f4c2d19ff", "text": "hi", "timestamp": 1732540800123i64,
               "status": "sent", "type": "text"})
    }

    impl utoipa::PartialSchema for ObjectId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(OBJECT_ID_PATTERN))
                .description(Some("A BSON ObjectId: 24 lower-case hex characters."))
                .examples(["665f1c2e9b1e8a3f4c2d1a0b"])
                .into()
        }
    }

    impl utoipa::ToSchema for ObjectId {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_hex_round_trip() {
        let id = ObjectId::from_parts(0x665f1c2e, [0x9b, 0x1e, 0x8a, 0x3f, 0x4c], 0x2d1a0b);
        assert_eq!(id.to_hex(), "665f1c2e9b1e8a3f4c2d1a0b");
        assert_eq!("665f1c2e9b1e8a3f4c2d1a0b".parse::<ObjectId>(), Ok(id));
        assert_eq!(id.seconds(), 0x665f1c2e);
        assert!("665f1c2e9b1e8a3f4c2d1a0".parse::<ObjectId>().is_err());
        assert!("665f1c2e9b1e8a3f4c2d1a0g".parse::<ObjectId>().is_err());
    }

    #[test]
    fn message_serializes_with_contract_names() {
        let m = Message {
            id: "665f1c2e9b1e8a3f4c2d1a0b".parse().unwrap(),
            chat_id: "general".into(),
            author: "ana".into(),
            author_id: "665f1c0a9b1e8a3f4c2d19ff".parse().unwrap(),
            text: "hi".into(),
            timestamp: 1732540800123,
            status: Status::Sent,
            kind: "text".into(),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "665f1c2e9b1e8a3f4c2d1a0b", "chatId": "general", "author": "ana",
             "authorId": "665f1c0a9b1e8a3f4c2d19ff", "text": "hi", "timestamp": 1732540800123i64,
             "status": "sent", "type": "text"})
        );
    }
}
