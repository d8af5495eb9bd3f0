//! The rules of the chat events' payloads, as the contract states them.

use serde_json::{Map, Value};

use super::events::ErrorCode;
use crate::model::{DEFAULT_CHAT, MAX_TEXT_CHARS, ObjectId, valid_chat_id};

/// The most ids one `chat:read` may name.
pub const MAX_READ_IDS: usize = 500;

/// The longest `tempId` (characters) a `chat:send` may carry.
pub const MAX_TEMP_ID_CHARS: usize = 64;

/// The longest `type` (characters) a `chat:send` may carry.
pub const MAX_TYPE_CHARS: usize = 32;

/// Why an event was refused: sent to the socket as `error` (and through its ack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// For a person.
    pub message: String,
    /// The rule broken.
    pub code: ErrorCode,
}

impl Refusal {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            code: ErrorCode::Invalid,
        }
    }
}

/// A checked `chat:send`.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    /// The text.
    pub text: String,
    /// The client's retry key, as it sent it (echoed in `chat:ack`).
    pub temp_id: Option<String>,
    /// The type tag.
    pub kind: String,
    /// The chat.
    pub chat_id: String,
}

fn object(args: &[Value]) -> Result<&Map<String, Value>, Refusal> {
    match args.first() {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(Refusal::invalid("payload must be an object")),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Refusal> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Refusal::invalid(format!("{key} must be a string"))),
    }
}

/// The `chatId` of a payload, `general` when absent.
pub(crate) fn chat_id(m: &Map<String, Value>) -> Result<String, Refusal> {
    match opt_str(m, "chatId")? {
        None => Ok(DEFAULT_CHAT.to_owned()),
        Some(c) if valid_chat_id(c) => Ok(c.to_owned()),
        Some(_) => Err(Refusal::invalid(
            "chatId must be 1 to 64 characters of A-Z a-z 0-9 _ . : -",
        )),
    }
}

/// The `tempId` of a `chat:send` payload, if it is a valid one
/// ([`read_temp_id`]), even when the rest of the payload is not.
pub(crate) fn temp_id(args: &[Value]) -> Option<String> {
    read_temp_id(args.first()?.get("tempId")?)
}

/// The tempId rule: a string of at most [`MAX_TEMP_ID_CHARS`] characters,
/// or a number (which some clients send), read as its decimal string.
fn read_temp_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.chars().count() <= MAX_TEMP_ID_CHARS => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Checks a `chat:send`.
pub fn send(args: &[Value]) -> Result<SendRequest, Refusal> {
    let m = object(args)?;
    let text = match m.get("text") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(Refusal::invalid("text must be a string")),
        None => return Err(Refusal::invalid("text is required")),
    };
    let len = text.chars().count();
    if len == 0 || len > MAX_TEXT_CHARS {
        return Err(Refusal::invalid("text must be 1 to 4000 characters"));
    }
    if text.chars().all(char::is_whitespace) {
        return Err(Refusal::invalid("text must not be only white space"));
    }
    let temp_id =
        match m.get("tempId") {
            None | Some(Value::Null) => None,
            Some(v) => Some(read_temp_id(v).ok_or_else(|| {
                Refusal::invalid("tempId must be a string of at most 64 characters")
            })?),
        };
    let kind = match opt_str(m, "type")? {
        None => "text".to_owned(),
        Some(t) if t.chars().count() <= MAX_TYPE_CHARS && !t.is_empty() => t.to_owned(),
        Some(_) => return Err(Refusal::invalid("type must be 1 to 32 characters")),
    };
    Ok(SendRequest {
        text: text.clone(),
        temp_id,
        kind,
        chat_id: chat_id(m)?,
    })
}

/// Checks a `chat:typing`: (chat, isTyping).
pub fn typing(args: &[Value]) -> Result<(String, bool), Refusal> {
    let m = object(args)?;
    let is_typing = match m.get("isTyping") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(Refusal::invalid("isTyping must be true or false")),
    };
    Ok((chat_id(m)?, is_typing))
}

/// Checks a `chat:read`: 1 to 500 message ids, duplicates dropped.
pub fn read(args: &[Value]) -> Result<Vec<ObjectId>, Refusal> {
    let m = object(args)?;
    let Some(Value::Array(ids)) = m.get("messageIds") else {
        return Err(Refusal::invalid(
            "messageIds must be an array of message ids",
        ));
    };
    if ids.is_empty() || ids.len() > MAX_READ_IDS {
        return Err(Refusal::invalid("messageIds must hold 1 to 500 ids"));
    }
    let mut out = Vec::with_capacity(ids.len());
    for v in ids {
        let id = v
            .as_str()
            .and_then(|s| s.parse::<ObjectId>().ok())
            .ok_or_else(|| Refusal::invalid("messageIds must be 24-character hex ids"))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Checks a `chat:join` or `chat:leave`.
pub fn room(args: &[Value]) -> Result<String, Refusal> {
    chat_id(object(args)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn send_rules() {
        let ok =
            send(&[json!({"text": "hi", "tempId": "t1", "author": "mallory", "status": "read"})])
                .unwrap();
        assert_eq!(
            ok,
            SendRequest {
                text: "hi".into(),
                temp_id: Some("t1".into()),
                kind: "text".into(),
                chat_id: "general".into()
            }
        );
        assert!(send(&[json!({"text": "é".repeat(4000)})]).is_ok());
        for bad in [
            json!({}),
            json!({"text": ""}),
            json!({"text": "   \n\t"}),
            json!({"text": "x".repeat(4001)}),
            json!({"text": 5}),
            json!({"text": "hi", "tempId": "t".repeat(65)}),
            json!({"text": "hi", "tempId": {}}),
            json!({"text": "hi", "type": "t".repeat(33)}),
            json!({"text": "hi", "chatId": ""}),
            json!({"text": "hi", "chatId": "a b"}),
            json!({"text": "hi", "chatId": "c".repeat(65)}),
            json!("hi"),
        ] {
            assert_eq!(
                send(std::slice::from_ref(&bad)).map_err(|r| r.code),
                Err(ErrorCode::Invalid),
                "{bad}"
            );
        }
        assert!(send(&[]).is_err());
    }

    #[test]
    fn read_rules() {
        let id = "665f1c2e9b1e8a3f4c2d1a0b";
        assert_eq!(read(&[json!({"messageIds": [id, id]})]).unwrap().len(), 1);
        assert!(read(&[json!({"messageIds": []})]).is_err());
        assert!(read(&[json!({"messageIds": ["nope"]})]).is_err());
        assert!(read(&[json!({"messageIds": vec![id; 501]})]).is_err());
    }

    #[test]
    fn typing_rules() {
        assert_eq!(
            typing(&[json!({"isTyping": true, "chatId": "c1"})]),
            Ok(("c1".into(), true))
        );
        assert!(typing(&[json!({"isTyping": "yes"})]).is_err());
    }
}
