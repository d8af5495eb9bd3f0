//! Engine.IO v4 packets and the polling payload (packets joined by `\x1e`,
//! binary ones as `b` + base64).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{BufMut, Bytes, BytesMut};

use crate::host::Frame;

/// The record separator between packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// A packet from a client, borrowing the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `1`: the client closes the session.
    Close,
    /// `2` with optional data (`2probe` during an upgrade).
    Ping(&'a str),
    /// `3` with optional data (`3probe`).
    Pong(&'a str),
    /// `4` text, or a binary frame / `b` packet.
    Message(Data<'a>),
    /// `5`: the client completes an upgrade.
    Upgrade,
    /// `6`: nothing.
    Noop,
}

/// The data of a message packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(Bytes),
}

/// Bytes that are not an Engine.IO packet or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// An empty packet.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type a client may send.
    #[error("unknown packet type")]
    UnknownType,
    /// A `b` packet whose base64 is invalid.
    #[error("invalid base64 in binary packet")]
    Base64,
    /// A polling payload that is not UTF-8.
    #[error("payload is not UTF-8")]
    Utf8,
}

/// Decodes one text packet (a WebSocket text frame or a payload record).
pub fn decode_text(s: &str) -> Result<Packet<'_>, DecodeError> {
    let mut chars = s.char_indices();
    let (_, t) = chars.next().ok_or(DecodeError::Empty)?;
    let rest = &s[t.len_utf8()..];
    match t {
        '1' => Ok(Packet::Close),
        '2' => Ok(Packet::Ping(rest)),
        '3' => Ok(Packet::Pong(rest)),
        '4' => Ok(Packet::Message(Data::Text(rest))),
        '5' => Ok(Packet::Upgrade),
        '6' => Ok(Packet::Noop),
        _ => Err(DecodeError::UnknownType),
    }
}

/// Decodes one record of a polling payload, where binary is `b` + base64.
pub fn decode_record(s: &str) -> Result<Packet<'_>, DecodeError> {
    match s.strip_prefix('b') {
        Some(b64) => B64
            .decode(b64)
            .map(|v| Packet::Message(Data::Binary(Bytes::from(v))))
            .map_err(|_| DecodeError::Base64),
        None => decode_text(s),
    }
}

/// Splits a polling payload into its records, lazily.
pub fn decode_payload(
    body: &[u8],
) -> Result<impl Iterator<Item = Result<Packet<'_>, DecodeError>>, DecodeError> {
    let s = std::str::from_utf8(body).map_err(|_| DecodeError::Utf8)?;
    Ok(s.split(SEPARATOR as char).map(decode_record))
}

/// A text packet from its type character and data, ready to go out (a
/// packet that goes out is a [`Frame`]: text with its type character, or a
/// binary message's raw data, encoded once and shared by every session it
/// is sent to).
pub fn text(kind: u8, data: &str) -> Frame {
    let mut b = BytesMut::with_capacity(1 + data.len());
    b.put_u8(kind);
    b.put_slice(data.as_bytes());
    Frame::Text(b.freeze())
}

/// The bytes a packet adds to a polling payload (a binary one goes as `b`
/// and base64).
pub fn payload_len(p: &Frame) -> usize {
    match p {
        Frame::Text(b) => b.len(),
        Frame::Binary(b) => 1 + b.len().div_ceil(3) * 4,
    }
}

/// Joins packets into one polling payload.
pub fn encode_payload(packets: &[Frame]) -> Bytes {
    let len: usize = packets.iter().map(|p| payload_len(p) + 1).sum();
    let mut out = BytesMut::with_capacity(len);
    for (i, p) in packets.iter().enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        match p {
            Frame::Text(b) => out.put_slice(b),
            Frame::Binary(b) => {
                out.put_u8(b'b');
                out.put_slice(B64.encode(b).as_bytes());
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_client_packet_type() {
        assert_eq!(decode_text("1"), Ok(Packet::Close));
        assert_eq!(decode_text("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(decode_text("3"), Ok(Packet::Pong("")));
        assert_eq!(
            decode_text("4hello"),
            Ok(Packet::Message(Data::Text("hello")))
        );
        assert_eq!(decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6"), Ok(Packet::Noop));
        assert_eq!(decode_text(""), Err(DecodeError::Empty));
        assert_eq!(decode_text("abc"), Err(DecodeError::UnknownType));
        assert_eq!(decode_text("0{}"), Err(DecodeError::UnknownType));
        assert_eq!(decode_text("é"), Err(DecodeError::UnknownType));
    }

    #[test]
    fn payload_round_trip_with_binary() {
        let out = encode_payload(&[
            text(b'4', "hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        ]);
        assert_eq!(&out[..], b"4hello\x1ebAQIDBA==");
        let back: Vec<_> = decode_payload(&out)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            back,
            vec![
                Packet::Message(Data::Text("hello")),
                Packet::Message(Data::Binary(Bytes::from_static(&[1, 2, 3, 4])))
            ]
        );
    }

    #[test]
    fn payload_errors() {
        assert!(decode_payload(&[0xff]).is_err());
        let r: Result<Vec<_>, _> = decode_payload(b"4a\x1ebnot-base64!").unwrap().collect();
        assert_eq!(r, Err(DecodeError::Base64));
        let r: Result<Vec<_>, _> = decode_payload(b"4a\x1e").unwrap().collect();
        assert_eq!(r, Err(DecodeError::Empty));
    }

    #[test]
    fn payload_len_matches_encoding() {
        for n in 0..10 {
            let p = Frame::Binary(Bytes::from(vec![7u8; n]));
            assert_eq!(
                encode_payload(std::slice::from_ref(&p)).len(),
                payload_len(&p)
            );
        }
    }
}
