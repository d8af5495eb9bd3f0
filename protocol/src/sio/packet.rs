//! Socket.IO v5 packets: `<type>[<attachments>-][<nsp>,][<ack id>][<json>]`,
//! and the reassembly of binary packets from their attachments.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::Value;

/// The packet types of Socket.IO v5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: join a namespace.
    Connect = 0,
    /// `1`: leave a namespace.
    Disconnect = 1,
    /// `2`: an event.
    Event = 2,
    /// `3`: an acknowledgement.
    Ack = 3,
    /// `4`: a refused CONNECT.
    ConnectError = 4,
    /// `5`: an event with binary attachments.
    BinaryEvent = 5,
    /// `6`: an acknowledgement with binary attachments.
    BinaryAck = 6,
}

/// A decoded packet header with its JSON still raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket<'a> {
    /// The type.
    pub kind: PacketType,
    /// The namespace, `/` when absent.
    pub nsp: &'a str,
    /// The number of binary attachments that follow (binary types only).
    pub attachments: usize,
    /// The ack id, if any.
    pub id: Option<u64>,
    /// The JSON data, if any.
    pub data: Option<&'a str>,
}

/// Text that is not a Socket.IO packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The type digit is missing or unknown.
    #[error("unknown packet type")]
    UnknownType,
    /// The attachment count is malformed or too large.
    #[error("invalid attachment count")]
    Attachments,
    /// The namespace is malformed.
    #[error("invalid namespace")]
    Namespace,
    /// The ack id does not fit.
    #[error("invalid ack id")]
    AckId,
    /// The data is not the JSON this packet type carries.
    #[error("invalid payload")]
    Payload,
}

/// The most attachments one packet may announce.
pub const MAX_ATTACHMENTS: usize = 64;

/// Decodes a packet's header; the JSON is checked by [`parse_data`].
pub fn decode(s: &str) -> Result<RawPacket<'_>, DecodeError> {
    let b = s.as_bytes();
    let kind = match b.first() {
        Some(b'0') => PacketType::Connect,
        Some(b'1') => PacketType::Disconnect,
        Some(b'2') => PacketType::Event,
        Some(b'3') => PacketType::Ack,
        Some(b'4') => PacketType::ConnectError,
        Some(b'5') => PacketType::BinaryEvent,
        Some(b'6') => PacketType::BinaryAck,
        _ => return Err(DecodeError::UnknownType),
    };
    let mut i = 1;
    let mut attachments = 0;
    if matches!(kind, PacketType::BinaryEvent | PacketType::BinaryAck) {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 3 || b.get(i) != Some(&b'-') {
            return Err(DecodeError::Attachments);
        }
        attachments = s[start..i].parse().map_err(|_| DecodeError::Attachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(DecodeError::Attachments);
        }
        i += 1;
    }
    let mut nsp = "/";
    if b.get(i) == Some(&b'/') {
        let end = s[i..].find(',').map_or(b.len(), |j| i + j);
        nsp = &s[i..end];
        i = (end + 1).min(b.len());
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let id = if i > start {
        Some(s[start..i].parse().map_err(|_| DecodeError::AckId)?)
    } else {
        None
    };
    let data = if i < b.len() { Some(&s[i..]) } else { None };
    Ok(RawPacket {
        kind,
        nsp,
        attachments,
        id,
        data,
    })
}

/// The data of a packet, checked against its type.
#[derive(Debug, Clone, PartialEq)]
pub enum PacketData {
    /// CONNECT's auth payload (an object), if any.
    Connect(Option<Value>),
    /// DISCONNECT.
    Disconnect,
    /// An event: its name and arguments.
    Event(String, Vec<Value>),
    /// An ack's arguments.
    Ack(Vec<Value>),
}

/// Parses and checks a packet's JSON for its type. CONNECT_ERROR is
/// server-to-client only, so it is an error here.
pub fn parse_data(p: &RawPacket<'_>) -> Result<PacketData, DecodeError> {
    let json = |d: Option<&str>| -> Result<Value, DecodeError> {
        serde_json::from_str(d.ok_or(DecodeError::Payload)?).map_err(|_| DecodeError::Payload)
    };
    match p.kind {
        PacketType::Connect => match p.data {
            None => Ok(PacketData::Connect(None)),
            Some(_) => match json(p.data)? {
                v @ Value::Object(_) => Ok(PacketData::Connect(Some(v))),
                _ => Err(DecodeError::Payload),
            },
        },
        PacketType::Disconnect => Ok(PacketData::Disconnect),
        PacketType::Event | PacketType::BinaryEvent => match json(p.data)? {
            Value::Array(mut a) if matches!(a.first(), Some(Value::String(_))) => {
                let Value::String(name) = a.remove(0) else {
                    unreachable!("checked by the guard")
                };
                Ok(PacketData::Event(name, a))
            }
            _ => Err(DecodeError::Payload),
        },
        PacketType::Ack | PacketType::BinaryAck => {
            if p.id.is_none() {
                return Err(DecodeError::AckId);
            }
            match json(p.data)? {
                Value::Array(a) => Ok(PacketData::Ack(a)),
                _ => Err(DecodeError::Payload),
            }
        }
        PacketType::ConnectError => Err(DecodeError::UnknownType),
    }
}

/// Encodes a packet as an Engine.IO message (`4` + the Socket.IO packet),
/// ready to be shared by every recipient.
pub fn encode<T: Serialize + ?Sized>(
    kind: PacketType,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    data: Option<&T>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(64).writer();
    let mut head = String::with_capacity(24);
    head.push('4');
    head.push((b'0' + kind as u8) as char);
    if attachments > 0 {
        head.push_str(&attachments.to_string());
        head.push('-');
    }
    if nsp != "/" {
        head.push_str(nsp);
        head.push(',');
    }
    if let Some(id) = id {
        head.push_str(&id.to_string());
    }
    out.get_mut().put_slice(head.as_bytes());
    if let Some(d) = data {
        serde_json::to_writer(&mut out, d).expect(
            "serializing to memory only fails for maps with non-string keys, which we never build",
        );
    }
    out.into_inner().freeze()
}

/// The event name of a packet [`encode`] built (`4` + an EVENT or
/// BINARY_EVENT), read from its bytes without parsing the JSON: counting
/// events by name costs a few bytes' scan, not a decode. `None` if it is not
/// an event, or its name has an escape.
pub fn event_name(encoded: &[u8]) -> Option<&str> {
    let b = encoded.strip_prefix(b"4")?;
    let (kind, mut rest) = b.split_first()?;
    let digits = |r: &[u8]| r.iter().take_while(|c| c.is_ascii_digit()).count();
    match kind {
        b'2' => {}
        b'5' => rest = rest[digits(rest)..].strip_prefix(b"-")?,
        _ => return None,
    }
    if rest.first() == Some(&b'/') {
        let comma = rest.iter().position(|c| *c == b',')?;
        rest = &rest[comma + 1..];
    }
    rest = rest[digits(rest)..].strip_prefix(b"[\"")?;
    let end = rest.iter().position(|c| *c == b'"' || *c == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

/// The name of an EVENT's data (`["name", ...`), read without parsing the
/// arguments: a scan to the name's closing quote. `None` when the name is
/// not a plain string right at the start (an escape, white space, not an
/// array), for [`parse_data`] to settle.
pub fn peek_event_name(data: &str) -> Option<&str> {
    let rest = data.strip_prefix("[\"")?;
    let end = rest.find(['"', '\\'])?;
    (rest.as_bytes()[end] == b'"').then(|| &rest[..end])
}

/// A binary packet waiting for its attachments.
#[derive(Debug)]
pub struct Partial {
    /// The packet type (BINARY_EVENT or BINARY_ACK).
    pub kind: PacketType,
    /// Its namespace.
    pub nsp: String,
    /// Its ack id.
    pub id: Option<u64>,
    /// Its data, placeholders in place.
    pub data: PacketData,
    /// How many attachments it announced.
    pub expected: usize,
    /// Those received so far.
    pub attachments: Vec<Bytes>,
    /// Their total size.
    pub bytes: usize,
}

impl Partial {
    /// Adds one attachment; true once all have arrived.
    pub fn push(&mut self, b: Bytes) -> bool {
        self.bytes += b.len();
        self.attachments.push(b);
        self.attachments.len() == self.expected
    }
}

/// Whether every placeholder `{"_placeholder":true,"num":n}` in a value
/// names an attachment that exists (`n` below `attachments`).
pub fn placeholders_valid(v: &Value, attachments: usize) -> bool {
    match v {
        Value::Object(m) if m.get("_placeholder") == Some(&Value::Bool(true)) => m
            .get("num")
            .and_then(Value::as_u64)
            .is_some_and(|n| (n as usize) < attachments),
        Value::Object(m) => m.values().all(|v| placeholders_valid(v, attachments)),
        Value::Array(a) => a.iter().all(|v| placeholders_valid(v, attachments)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_names_are_peeked_without_parsing_the_arguments() {
        assert_eq!(
            peek_event_name(r#"["chat:join",{"chatId": [[["#),
            Some("chat:join")
        );
        assert_eq!(peek_event_name(r#"["x"]"#), Some("x"));
        assert_eq!(peek_event_name(r#"[""]"#), Some(""));
        // Left to the parser: escapes, white space, anything but a string first.
        for data in [
            r#"["a\u0062"]"#,
            r#"[ "x"]"#,
            r#"[1,"x"]"#,
            r#"{"x":1}"#,
            r#"["open"#,
            "",
        ] {
            assert_eq!(peek_event_name(data), None, "{data}");
        }
        assert_eq!(peek_event_name("[\"é\u{1F600}\"]"), Some("é\u{1F600}"));
    }

    #[test]
    fn event_names_read_from_encoded_packets() {
        let name = |kind, nsp, att, id, data: &Value| {
            let b = encode(kind, nsp, att, id, Some(data));
            event_name(&b).map(str::to_owned)
        };
        let ev = json!(["chat:ack", {"id": 1}]);
        assert_eq!(
            name(PacketType::Event, "/", 0, None, &ev).as_deref(),
            Some("chat:ack")
        );
        assert_eq!(
            name(PacketType::Event, "/admin", 0, Some(12), &ev).as_deref(),
            Some("chat:ack")
        );
        assert_eq!(
            name(PacketType::BinaryEvent, "/", 2, None, &ev).as_deref(),
            Some("chat:ack"),
            "binary"
        );
        assert_eq!(name(PacketType::Ack, "/", 0, Some(3), &json!(["x"])), None);
        assert_eq!(
            name(PacketType::Event, "/", 0, None, &json!(["a\"b", 1])),
            None
        );
        assert_eq!(name(PacketType::Event, "/", 0, None, &json!([1, 2])), None);
    }

    #[test]
    fn decodes_headers() {
        let p = decode("0").unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (PacketType::Connect, "/", None, None)
        );
        let p = decode("0/custom,").unwrap();
        assert_eq!((p.nsp, p.data), ("/custom", None));
        let p = decode("0/random").unwrap();
        assert_eq!((p.nsp, p.data), ("/random", None));
        let p = decode(r#"0/custom,{"token":"abc"}"#).unwrap();
        assert_eq!((p.nsp, p.data), ("/custom", Some(r#"{"token":"abc"}"#)));
        let p = decode(r#"2456["message-with-ack",1]"#).unwrap();
        assert_eq!(
            (p.kind, p.id, p.data),
            (
                PacketType::Event,
                Some(456),
                Some(r#"["message-with-ack",1]"#)
            )
        );
        let p = decode(r#"52-789["m",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (PacketType::BinaryEvent, 2, Some(789))
        );
        assert_eq!(decode("abc"), Err(DecodeError::UnknownType));
        assert_eq!(decode(""), Err(DecodeError::UnknownType));
        assert_eq!(decode("5x-[]"), Err(DecodeError::Attachments));
        assert_eq!(decode("5999-[]"), Err(DecodeError::Attachments));
        assert_eq!(
            decode("299999999999999999999999[]"),
            Err(DecodeError::AckId)
        );
    }

    #[test]
    fn checks_data_against_type() {
        let d = |s| parse_data(&decode(s).unwrap());
        assert_eq!(
            d(r#"2["a",1]"#),
            Ok(PacketData::Event("a".into(), vec![json!(1)]))
        );
        assert_eq!(d("2{}"), Err(DecodeError::Payload));
        assert_eq!(d("2[]"), Err(DecodeError::Payload));
        assert_eq!(d("2[1]"), Err(DecodeError::Payload));
        assert_eq!(d(r#"2abc["a"]"#), Err(DecodeError::Payload));
        assert_eq!(d("2"), Err(DecodeError::Payload));
        assert_eq!(
            d(r#"0{"token":"1"}"#),
            Ok(PacketData::Connect(Some(json!({"token":"1"}))))
        );
        assert_eq!(d("0[]"), Err(DecodeError::Payload));
        assert_eq!(d("3[1]"), Err(DecodeError::AckId));
        assert_eq!(d("37[1]"), Ok(PacketData::Ack(vec![json!(1)])));
        assert_eq!(d(r#"4{"message":"x"}"#), Err(DecodeError::UnknownType));
        assert_eq!(d("1"), Ok(PacketData::Disconnect));
    }

    #[test]
    fn encodes_like_the_reference() {
        let e = encode(PacketType::Event, "/", 0, None, Some(&json!(["auth", {}])));
        assert_eq!(&e[..], br#"42["auth",{}]"#);
        let e = encode(
            PacketType::Event,
            "/custom",
            0,
            Some(12),
            Some(&json!(["a"])),
        );
        assert_eq!(&e[..], br#"42/custom,12["a"]"#);
        let e = encode(
            PacketType::BinaryAck,
            "/",
            2,
            Some(789),
            Some(&json!([{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}])),
        );
        assert_eq!(
            &e[..],
            br#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        );
        let e = encode(
            PacketType::ConnectError,
            "/random",
            0,
            None,
            Some(&json!({"message":"Invalid namespace"})),
        );
        assert_eq!(&e[..], br#"44/random,{"message":"Invalid namespace"}"#);
        let e = encode::<Value>(PacketType::Disconnect, "/custom", 0, None, None);
        assert_eq!(&e[..], b"41/custom,");
    }

    #[test]
    fn placeholders() {
        let v = json!([{"_placeholder":true,"num":0}, {"a":[{"_placeholder":true,"num":1}]}]);
        assert!(placeholders_valid(&v, 2));
        assert!(!placeholders_valid(&v, 1));
    }
}
