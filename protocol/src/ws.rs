//! WebSocket framing (RFC 6455) for the server side, with no IO: a decoder
//! for what clients send (masked frames, fragmented messages, control
//! frames) and the encoder for what the server sends (unmasked frames,
//! which a host can build once per broadcast and share between every
//! recipient). The chatwire hosts (`driver`) frame WebSocket with it; the
//! HTTP upgrade itself is the host's.
//!
//! No extension is ever negotiated (the upgrade answers no
//! `Sec-WebSocket-Extensions`), so every RSV bit must be clear.
//! [`check_upgrade`] holds the rules of the opening handshake (RFC 6455
//! §4.2.1) that a host applies before it answers 101.

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};

/// The opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// The opcode of a binary frame.
pub const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A whole message, or a control frame, from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A text message; its bytes are UTF-8 (checked).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping, whose payload the pong must echo.
    Ping(Bytes),
    /// The client's close frame, with its status code if it sent one.
    Close(Option<u16>),
}

/// Why the connection must be failed; each has its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// A malformed frame or sequence of frames (1002).
    Protocol,
    /// Text that is not UTF-8 (1007).
    BadUtf8,
    /// A message larger than the server's limit (1009).
    TooBig,
    /// A message in more fragments than the decoder allows for its size
    /// limit (1008): empty continuations would otherwise cost work forever.
    TooFragmented,
}

impl Failure {
    /// The close code to fail the connection with.
    pub fn close_code(self) -> u16 {
        match self {
            Failure::Protocol => 1002,
            Failure::BadUtf8 => 1007,
            Failure::TooBig => 1009,
            Failure::TooFragmented => 1008,
        }
    }
}

/// The close code of a connection that ends normally (RFC 6455 §7.4.1).
pub const NORMAL_CLOSURE: u16 = 1000;

/// The close code of an endpoint that is going away: the server shutting
/// down (RFC 6455 §7.4.1).
pub const GOING_AWAY: u16 = 1001;

/// Whether `code` may appear in a close frame (RFC 6455 §7.4, and the IANA
/// registry's 1012-1014): 1005, 1006 and 1015 are for reporting only and
/// never go on the wire; 1004 and 1016-2999 are reserved; 3000-4999 belong
/// to libraries and applications.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Why an opening handshake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Not a GET (400).
    #[error("a WebSocket handshake is a GET")]
    NotGet,
    /// No `Connection: Upgrade` or no `Upgrade: websocket` (400).
    #[error("a WebSocket handshake needs Connection: Upgrade and Upgrade: websocket")]
    NotUpgrade,
    /// `Sec-WebSocket-Key` missing or not 16 bytes in base64 (400).
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    BadKey,
    /// `Sec-WebSocket-Version` missing or not 13 (426, with
    /// `Sec-WebSocket-Version: 13` in the answer, RFC 6455 §4.4).
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
}

impl HandshakeError {
    /// The HTTP status to refuse the handshake with.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::Version => 426,
            _ => 400,
        }
    }
}

/// The headers of an opening handshake that [`check_upgrade`] reads, as sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Handshake<'a> {
    /// The request's method.
    pub method: &'a str,
    /// Every `Connection` header's value.
    pub connection: &'a [&'a [u8]],
    /// The `Upgrade` header.
    pub upgrade: Option<&'a [u8]>,
    /// The `Sec-WebSocket-Version` header.
    pub version: Option<&'a [u8]>,
    /// The `Sec-WebSocket-Key` header.
    pub key: Option<&'a [u8]>,
}

/// Checks an opening handshake as RFC 6455 §4.2.1 asks of a server: a GET
/// with `Upgrade: websocket`, a `Connection` header naming `Upgrade`, a
/// `Sec-WebSocket-Key` that is 16 bytes in base64, and version 13.
pub fn check_upgrade(h: &Handshake<'_>) -> Result<(), HandshakeError> {
    if h.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    let token_list = |v: &&[u8]| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    };
    let upgrade = h.upgrade.is_some_and(|u| {
        u.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    });
    if !upgrade || !h.connection.iter().any(token_list) {
        return Err(HandshakeError::NotUpgrade);
    }
    let key = h.key.map(<[u8]>::trim_ascii).unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if !decoded.is_ok_and(|k| k.len() == 16) {
        return Err(HandshakeError::BadKey);
    }
    if h.version.map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::Version);
    }
    Ok(())
}

/// Reassembles client messages from the bytes read so far.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    max_fragments: usize,
    /// A fragmented message under way: whether it is text, its data, and
    /// how many fragments it came in so far.
    partial: Option<(bool, BytesMut, usize)>,
}

impl Decoder {
    /// A decoder that refuses messages over `max_message` bytes, and
    /// messages in more than one fragment per 64 bytes of that limit (at
    /// least 64 fragments): a client that fragments finely for a reason
    /// (Autobahn's 4 MiB in 64-byte pieces) gets through; a stream of empty
    /// continuations does not.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            max_fragments: (max_message / 64).max(64),
            partial: None,
        }
    }

    /// Takes the next message out of `buf`; `Ok(None)` until enough bytes
    /// have arrived. A frame is refused for its size from its header, so
    /// `buf` never has to hold more than one message's worth of bytes.
    /// Pongs are consumed silently.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Received>, Failure> {
        loop {
            let Some((fin, opcode, len, header)) = self.header(buf)? else {
                return Ok(None);
            };
            if buf.len() < header + len {
                return Ok(None);
            }
            let mask = [
                buf[header - 4],
                buf[header - 3],
                buf[header - 2],
                buf[header - 1],
            ];
            let mut payload = buf.split_to(header + len);
            payload.advance(header);
            unmask(&mut payload, mask);
            match opcode {
                TEXT | BINARY if self.partial.is_some() => return Err(Failure::Protocol),
                TEXT | BINARY if fin => return finish(opcode == TEXT, payload).map(Some),
                TEXT | BINARY => self.partial = Some((opcode == TEXT, payload, 1)),
                CONTINUATION => {
                    let (text, mut data, n) = self.partial.take().ok_or(Failure::Protocol)?;
                    data.extend_from_slice(&payload);
                    if fin {
                        return finish(text, data).map(Some);
                    }
                    if n + 1 >= self.max_fragments {
                        return Err(Failure::TooFragmented);
                    }
                    self.partial = Some((text, data, n + 1));
                }
                PING => return Ok(Some(Received::Ping(payload.freeze()))),
                PONG => {}
                _ => return close_frame(&payload).map(Some),
            }
        }
    }

    /// Parses and checks the header at the front of `buf`: (fin, opcode,
    /// payload length, header length including the mask).
    fn header(&self, buf: &BytesMut) -> Result<Option<(bool, u8, usize, usize)>, Failure> {
        let [b0, b1, ..] = buf[..] else {
            return Ok(None);
        };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
            // RSV bits without an extension, or an unmasked client frame.
            return Err(Failure::Protocol);
        }
        let (len, header) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (
                    u64::from_be_bytes(b.try_into().map_err(|_| Failure::Protocol)?),
                    10,
                ),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let control = opcode & 0x08 != 0;
        match opcode {
            CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG => {}
            _ => return Err(Failure::Protocol),
        }
        if control && (!fin || len > 125) {
            return Err(Failure::Protocol);
        }
        let sofar = self.partial.as_ref().map_or(0, |(_, d, _)| d.len()) as u64;
        if sofar.saturating_add(len) > self.max_message as u64 {
            return Err(Failure::TooBig);
        }
        Ok(Some((fin, opcode, len as usize, header + 4)))
    }
}

fn finish(text: bool, data: BytesMut) -> Result<Received, Failure> {
    let data = data.freeze();
    if text {
        std::str::from_utf8(&data).map_err(|_| Failure::BadUtf8)?;
        Ok(Received::Text(data))
    } else {
        Ok(Received::Binary(data))
    }
}

fn close_frame(payload: &[u8]) -> Result<Received, Failure> {
    match payload {
        [] => Ok(Received::Close(None)),
        [_] => Err(Failure::Protocol),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(Failure::Protocol);
            }
            std::str::from_utf8(reason).map_err(|_| Failure::BadUtf8)?;
            Ok(Received::Close(Some(code)))
        }
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// One unmasked, final frame: the header and a copy of `payload`.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.extend_from_slice(&[0x80 | opcode]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[n as u8]),
        n if n <= usize::from(u16::MAX) => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out.freeze()
}

/// The server's close frame with `code`; a code that may not go on the
/// wire ([`valid_close_code`]) is sent as 1000.
pub fn close(code: u16) -> Bytes {
    let code = if valid_close_code(code) { code } else { 1000 };
    encode(CLOSE, &code.to_be_bytes())
}

/// The answer to a ping.
pub fn pong(payload: &[u8]) -> Bytes {
    encode(PONG, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`, `fin` and `opcode` as given.
    fn client(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Received>, Failure> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn text_binary_and_lengths_of_every_header_size() {
        for len in [0, 1, 5, 125, 126, 127, 1000, 65535, 65536, 70000] {
            let text = "é".repeat(len / 2) + &"a".repeat(len % 2);
            let mut d = Decoder::new(1 << 20);
            let got = decode_all(&mut d, &client(true, TEXT, text.as_bytes(), M)).unwrap();
            assert_eq!(
                got,
                vec![Received::Text(Bytes::from(text.clone()))],
                "len {len}"
            );
            let bin: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let got = decode_all(&mut d, &client(true, BINARY, &bin, M)).unwrap();
            assert_eq!(got, vec![Received::Binary(Bytes::from(bin))]);
        }
    }

    #[test]
    fn bytes_arriving_one_at_a_time() {
        let mut wire = client(false, TEXT, b"4{\"a\":", M);
        wire.extend(client(true, PING, b"hi", [1, 2, 3, 4]));
        wire.extend(client(true, CONTINUATION, b"1}", [9, 9, 9, 9]));
        wire.extend(client(true, PONG, b"", M));
        wire.extend(client(true, BINARY, &[0, 1, 2], M));
        let mut d = Decoder::new(100);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(m) = d.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(
            got,
            vec![
                Received::Ping(Bytes::from_static(b"hi")),
                Received::Text(Bytes::from_static(b"4{\"a\":1}")),
                Received::Binary(Bytes::from_static(&[0, 1, 2])),
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn close_frames() {
        let mut d = Decoder::new(100);
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, b"", M)).unwrap(),
            vec![Received::Close(None)]
        );
        let mut body = 1001u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"bye");
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, &body, M)).unwrap(),
            vec![Received::Close(Some(1001))]
        );
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, &[3], M)),
            Err(Failure::Protocol)
        );
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, &[3, 232, 0xff], M)),
            Err(Failure::BadUtf8)
        );
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 3999, 4000, 4999,
        ] {
            let mut d = Decoder::new(100);
            assert_eq!(
                decode_all(&mut d, &client(true, CLOSE, &code.to_be_bytes(), M)).unwrap(),
                vec![Received::Close(Some(code))],
                "{code}"
            );
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let mut d = Decoder::new(100);
            assert_eq!(
                decode_all(&mut d, &client(true, CLOSE, &code.to_be_bytes(), M)),
                Err(Failure::Protocol),
                "{code}"
            );
            // And never sent: what may not go on the wire goes as 1000.
            assert_eq!(close(code)[2..], 1000u16.to_be_bytes(), "{code}");
        }
        assert_eq!(close(1001)[2..], 1001u16.to_be_bytes());
    }

    #[test]
    fn fragments_per_message_are_bounded() {
        // 6400 bytes allow 100 fragments: the 100th continuation that does
        // not end the message is one too many.
        let mut d = Decoder::new(6400);
        let mut bytes = client(false, TEXT, b"a", M);
        for _ in 0..98 {
            bytes.extend(client(false, CONTINUATION, b"", M));
        }
        bytes.extend(client(true, CONTINUATION, b"b", M));
        assert_eq!(
            decode_all(&mut d, &bytes).unwrap(),
            vec![Received::Text(Bytes::from_static(b"ab"))]
        );
        let mut bytes = client(false, BINARY, b"", M);
        for _ in 0..100 {
            bytes.extend(client(false, CONTINUATION, b"", M));
        }
        assert_eq!(decode_all(&mut d, &bytes), Err(Failure::TooFragmented));
        assert_eq!(Failure::TooFragmented.close_code(), 1008);
        // Small limits still allow 64.
        assert_eq!(Decoder::new(10).max_fragments, 64);
    }

    #[test]
    fn opening_handshakes() {
        let conn: &[&[u8]] = &[b"keep-alive, Upgrade"];
        let good = Handshake {
            method: "GET",
            connection: conn,
            upgrade: Some(b"websocket"),
            version: Some(b"13"),
            key: Some(b"dGhlIHNhbXBsZSBub25jZQ=="),
        };
        assert_eq!(check_upgrade(&good), Ok(()));
        let upper: &[&[u8]] = &[b"close", b"UPGRADE"];
        assert_eq!(
            check_upgrade(&Handshake {
                connection: upper,
                upgrade: Some(b"WebSocket"),
                ..good
            }),
            Ok(())
        );
        let cases: [(Handshake<'_>, HandshakeError); 8] = [
            (
                Handshake {
                    method: "POST",
                    ..good
                },
                HandshakeError::NotGet,
            ),
            (
                Handshake {
                    connection: &[],
                    ..good
                },
                HandshakeError::NotUpgrade,
            ),
            (
                Handshake {
                    connection: &[b"keep-alive"],
                    ..good
                },
                HandshakeError::NotUpgrade,
            ),
            (
                Handshake {
                    upgrade: Some(b"h2c"),
                    ..good
                },
                HandshakeError::NotUpgrade,
            ),
            (Handshake { key: None, ..good }, HandshakeError::BadKey),
            (
                Handshake {
                    key: Some(b"c2hvcnQ="),
                    ..good
                },
                HandshakeError::BadKey,
            ),
            (
                Handshake {
                    version: Some(b"8"),
                    ..good
                },
                HandshakeError::Version,
            ),
            (
                Handshake {
                    version: None,
                    ..good
                },
                HandshakeError::Version,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(check_upgrade(&h), Err(want), "{h:?}");
        }
        assert_eq!(HandshakeError::Version.status(), 426);
        assert_eq!(HandshakeError::BadKey.status(), 400);
    }

    #[test]
    fn violations() {
        let cases: Vec<(Vec<u8>, Failure)> = vec![
            // Unmasked.
            (vec![0x81, 0x01, b'a'], Failure::Protocol),
            // RSV1 (no permessage-deflate was negotiated).
            (
                {
                    let mut f = client(true, TEXT, b"a", M);
                    f[0] |= 0x40;
                    f
                },
                Failure::Protocol,
            ),
            (client(true, 0x3, b"", M), Failure::Protocol),
            (client(true, 0xB, b"", M), Failure::Protocol),
            (client(true, CONTINUATION, b"a", M), Failure::Protocol),
            (client(false, PING, b"", M), Failure::Protocol),
            (client(true, PING, &[0; 126], M), Failure::Protocol),
            (
                [client(false, TEXT, b"a", M), client(true, TEXT, b"b", M)].concat(),
                Failure::Protocol,
            ),
            (client(true, TEXT, &[0xC3], M), Failure::BadUtf8),
            (client(true, TEXT, &[0; 101], M), Failure::TooBig),
            (
                [
                    client(false, BINARY, &[0; 60], M),
                    client(true, CONTINUATION, &[0; 41], M),
                ]
                .concat(),
                Failure::TooBig,
            ),
        ];
        for (wire, want) in cases {
            let mut d = Decoder::new(100);
            assert_eq!(decode_all(&mut d, &wire), Err(want), "{wire:?}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        let mut d = Decoder::new(1000);
        // A header claiming 2^62 bytes, with none of them sent.
        let mut wire = vec![0x82, 0x80 | 127];
        wire.extend_from_slice(&(1u64 << 62).to_be_bytes());
        assert_eq!(decode_all(&mut d, &wire), Err(Failure::TooBig));
        // A header alone, under the limit, waits for its payload.
        let mut buf = BytesMut::from(&client(true, TEXT, &[b'a'; 500], M)[..20]);
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn encoded_frames_decode_once_masked() {
        for len in [0, 10, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let f = encode(BINARY, &payload);
            let header = match len {
                n if n < 126 => 2,
                n if n <= 0xFFFF => 4,
                _ => 10,
            };
            assert_eq!(f.len(), header + len);
            assert_eq!(f[0], 0x82);
            assert_eq!(&f[header..], &payload[..]);
            // The same frame with the mask bit and a mask added, as a client
            // would send it, decodes to the payload.
            let masked = client(true, BINARY, &payload, M);
            assert_eq!(&masked[..1], &f[..1]);
            let mut d = Decoder::new(1 << 20);
            assert_eq!(
                decode_all(&mut d, &masked).unwrap(),
                vec![Received::Binary(Bytes::from(payload))]
            );
        }
        assert_eq!(&close(1000)[..], &[0x88, 2, 0x03, 0xE8]);
        assert_eq!(&pong(b"x")[..], &[0x8A, 1, b'x']);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A client message as frames: (fin, opcode, payload) with a mask.
        fn message() -> impl Strategy<Value = (bool, Vec<Vec<u8>>, [u8; 4])> {
            (
                any::<bool>(),
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..4),
                any::<[u8; 4]>(),
            )
        }

        proptest! {
            /// Any sequence of well-formed messages, fragmented and cut into
            /// arbitrary reads, decodes to exactly those messages.
            #[test]
            fn messages_survive_any_fragmentation_and_chunking(
                msgs in prop::collection::vec(message(), 1..8),
                cuts in prop::collection::vec(1usize..64, 1..200),
            ) {
                let mut wire = Vec::new();
                let mut want = Vec::new();
                for (text, parts, mask) in &msgs {
                    let data: Vec<u8> = parts.concat();
                    let (data, op) = if *text {
                        (String::from_utf8_lossy(&data).into_owned().into_bytes(), TEXT)
                    } else {
                        (data, BINARY)
                    };
                    // Re-split the (possibly re-encoded) data into as many fragments.
                    let n = parts.len();
                    let step = data.len().div_ceil(n).max(1);
                    let chunks: Vec<&[u8]> = if data.is_empty() { vec![&data[..]] } else { data.chunks(step).collect() };
                    for (i, c) in chunks.iter().enumerate() {
                        let opcode = if i == 0 { op } else { CONTINUATION };
                        wire.extend(client(i + 1 == chunks.len(), opcode, c, *mask));
                    }
                    want.push(if *text {
                        Received::Text(Bytes::from(data))
                    } else {
                        Received::Binary(Bytes::from(data))
                    });
                }
                let mut d = Decoder::new(1 << 16);
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                let mut at = 0;
                for cut in cuts.iter().cycle() {
                    if at >= wire.len() {
                        break;
                    }
                    let end = (at + cut).min(wire.len());
                    buf.extend_from_slice(&wire[at..end]);
                    at = end;
                    while let Some(m) = d.decode(&mut buf).unwrap() {
                        got.push(m);
                    }
                }
                prop_assert_eq!(got, want);
                prop_assert!(buf.is_empty());
            }

            /// Arbitrary bytes never panic, and the decoder never waits on
            /// more than one frame of at most the limit: whatever it has not
            /// consumed is a single frame's header and payload.
            #[test]
            fn arbitrary_bytes_never_panic_and_stay_bounded(
                bytes in prop::collection::vec(any::<u8>(), 0..2000),
                max in 0usize..512,
            ) {
                let mut d = Decoder::new(max);
                let mut buf = BytesMut::new();
                for chunk in bytes.chunks(37) {
                    buf.extend_from_slice(chunk);
                    loop {
                        match d.decode(&mut buf) {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(_) => return Ok(()),
                        }
                    }
                    // Waiting for more: at most a header (14) and the limit.
                    prop_assert!(buf.len() <= 14 + max + 37, "{} buffered", buf.len());
                    let partial = d.partial.as_ref().map_or(0, |(_, p, _)| p.len());
                    prop_assert!(partial <= max);
                }
            }
        }
    }
}
