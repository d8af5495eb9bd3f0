//! WebSocket framing (RFC 6455) for the server side, with no IO: a decoder
//! for what clients send (masked frames, fragmented messages, control
//! frames) and the encoder for what the server sends (unmasked frames,
//! which a host can build once per broadcast and share between every
//! recipient). The chatwire hosts (`driver`) frame WebSocket with it; the
//! HTTP upgrade itself is the host's.
//!
//! No extension is ever negotiated (the upgrade answers no
//! `Sec-WebSocket-Extensions`), so every RSV bit must be clear.

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
pub enum Message {
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
pub enum Violation {
    /// A malformed frame or sequence of frames (1002).
    Protocol,
    /// Text that is not UTF-8 (1007).
    BadUtf8,
    /// A message larger than the server's limit (1009).
    TooBig,
}

impl Violation {
    /// The close code to fail the connection with.
    pub fn close_code(self) -> u16 {
        match self {
            Violation::Protocol => 1002,
            Violation::BadUtf8 => 1007,
            Violation::TooBig => 1009,
        }
    }
}

/// Reassembles client messages from the bytes read so far.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// A fragmented message under way: whether it is text, and its data.
    partial: Option<(bool, BytesMut)>,
}

impl Decoder {
    /// A decoder that refuses messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Takes the next message out of `buf`; `Ok(None)` until enough bytes
    /// have arrived. A frame is refused for its size from its header, so
    /// `buf` never has to hold more than one message's worth of bytes.
    /// Pongs are consumed silently.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Violation> {
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
                TEXT | BINARY if self.partial.is_some() => return Err(Violation::Protocol),
                TEXT | BINARY if fin => return finish(opcode == TEXT, payload).map(Some),
                TEXT | BINARY => self.partial = Some((opcode == TEXT, payload)),
                CONTINUATION => {
                    let (text, mut data) = self.partial.take().ok_or(Violation::Protocol)?;
                    data.extend_from_slice(&payload);
                    if fin {
                        return finish(text, data).map(Some);
                    }
                    self.partial = Some((text, data));
                }
                PING => return Ok(Some(Message::Ping(payload.freeze()))),
                PONG => {}
                _ => return close_frame(&payload).map(Some),
            }
        }
    }

    /// Parses and checks the header at the front of `buf`: (fin, opcode,
    /// payload length, header length including the mask).
    fn header(&self, buf: &BytesMut) -> Result<Option<(bool, u8, usize, usize)>, Violation> {
        let [b0, b1, ..] = buf[..] else {
            return Ok(None);
        };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
            // RSV bits without an extension, or an unmasked client frame.
            return Err(Violation::Protocol);
        }
        let (len, header) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (
                    u64::from_be_bytes(b.try_into().map_err(|_| Violation::Protocol)?),
                    10,
                ),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let control = opcode & 0x08 != 0;
        match opcode {
            CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG => {}
            _ => return Err(Violation::Protocol),
        }
        if control && (!fin || len > 125) {
            return Err(Violation::Protocol);
        }
        let sofar = self.partial.as_ref().map_or(0, |(_, d)| d.len()) as u64;
        if sofar.saturating_add(len) > self.max_message as u64 {
            return Err(Violation::TooBig);
        }
        Ok(Some((fin, opcode, len as usize, header + 4)))
    }
}

fn finish(text: bool, data: BytesMut) -> Result<Message, Violation> {
    let data = data.freeze();
    if text {
        std::str::from_utf8(&data).map_err(|_| Violation::BadUtf8)?;
        Ok(Message::Text(data))
    } else {
        Ok(Message::Binary(data))
    }
}

fn close_frame(payload: &[u8]) -> Result<Message, Violation> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(Violation::Protocol),
        [a, b, reason @ ..] => {
            std::str::from_utf8(reason).map_err(|_| Violation::BadUtf8)?;
            Ok(Message::Close(Some(u16::from_be_bytes([*a, *b]))))
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

/// The server's close frame with `code`.
pub fn close(code: u16) -> Bytes {
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

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, Violation> {
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
                vec![Message::Text(Bytes::from(text.clone()))],
                "len {len}"
            );
            let bin: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let got = decode_all(&mut d, &client(true, BINARY, &bin, M)).unwrap();
            assert_eq!(got, vec![Message::Binary(Bytes::from(bin))]);
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
                Message::Ping(Bytes::from_static(b"hi")),
                Message::Text(Bytes::from_static(b"4{\"a\":1}")),
                Message::Binary(Bytes::from_static(&[0, 1, 2])),
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn close_frames() {
        let mut d = Decoder::new(100);
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, b"", M)).unwrap(),
            vec![Message::Close(None)]
        );
        let mut body = 1001u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"bye");
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, &body, M)).unwrap(),
            vec![Message::Close(Some(1001))]
        );
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, &[3], M)),
            Err(Violation::Protocol)
        );
        assert_eq!(
            decode_all(&mut d, &client(true, CLOSE, &[3, 232, 0xff], M)),
            Err(Violation::BadUtf8)
        );
    }

    #[test]
    fn violations() {
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            // Unmasked.
            (vec![0x81, 0x01, b'a'], Violation::Protocol),
            // RSV1 (no permessage-deflate was negotiated).
            (
                {
                    let mut f = client(true, TEXT, b"a", M);
                    f[0] |= 0x40;
                    f
                },
                Violation::Protocol,
            ),
            (client(true, 0x3, b"", M), Violation::Protocol),
            (client(true, 0xB, b"", M), Violation::Protocol),
            (client(true, CONTINUATION, b"a", M), Violation::Protocol),
            (client(false, PING, b"", M), Violation::Protocol),
            (client(true, PING, &[0; 126], M), Violation::Protocol),
            (
                [client(false, TEXT, b"a", M), client(true, TEXT, b"b", M)].concat(),
                Violation::Protocol,
            ),
            (client(true, TEXT, &[0xC3], M), Violation::BadUtf8),
            (client(true, TEXT, &[0; 101], M), Violation::TooBig),
            (
                [
                    client(false, BINARY, &[0; 60], M),
                    client(true, CONTINUATION, &[0; 41], M),
                ]
                .concat(),
                Violation::TooBig,
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
        assert_eq!(decode_all(&mut d, &wire), Err(Violation::TooBig));
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
                vec![Message::Binary(Bytes::from(payload))]
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
                        Message::Text(Bytes::from(data))
                    } else {
                        Message::Binary(Bytes::from(data))
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
                    let partial = d.partial.as_ref().map_or(0, |(_, p)| p.len());
                    prop_assert!(partial <= max);
                }
            }
        }
    }
}
