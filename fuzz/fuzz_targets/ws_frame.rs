//! WebSocket frames from a client, cut into arbitrary reads: the decoder
//! never panics, never holds more than one frame of at most its limit, and
//! every message it yields checks out (text is UTF-8, nothing over the
//! limit). Each whole message is then sent again as a client would (masked,
//! in one frame) and must decode to itself.
#![no_main]

use bytes::BytesMut;
use chatwire_protocol::ws::{self, Decoder, Received};
use libfuzzer_sys::fuzz_target;

/// A client frame with a zero mask (valid, and leaves the payload as is).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut server = ws::encode(opcode, payload).to_vec();
    server[1] |= 0x80;
    let header = match payload.len() {
        n if n < 126 => 2,
        n if n <= 0xFFFF => 4,
        _ => 10,
    };
    server.splice(header..header, [0u8; 4]);
    server
}

fuzz_target!(|input: &[u8]| {
    let [limit, step, data @ ..] = input else {
        return;
    };
    let max = usize::from(*limit) * 16;
    let step = usize::from(*step).max(1);
    let mut d = Decoder::new(max);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    'feed: for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(v) => {
                    assert!(matches!(v.close_code(), 1002 | 1007 | 1008 | 1009));
                    break 'feed;
                }
            }
        }
        assert!(buf.len() <= 14 + max + step, "{} bytes held", buf.len());
    }
    for m in messages {
        let (opcode, payload) = match m {
            Received::Text(t) => {
                assert!(std::str::from_utf8(&t).is_ok());
                (ws::TEXT, t)
            }
            Received::Binary(b) => (ws::BINARY, b),
            Received::Ping(p) => {
                assert!(p.len() <= 125);
                continue;
            }
            Received::Close(code) => {
                assert!(code.is_none_or(ws::valid_close_code));
                continue;
            }
        };
        assert!(payload.len() <= max);
        let mut again = BytesMut::from(&client_frame(opcode, &payload)[..]);
        let back = Decoder::new(max)
            .decode(&mut again)
            .expect("a frame we built decodes");
        let want = if opcode == ws::TEXT {
            Received::Text(payload)
        } else {
            Received::Binary(payload)
        };
        assert_eq!(back, Some(want));
        assert!(again.is_empty());
    }
});
