//! One Engine.IO packet, as a WebSocket text frame or a polling record:
//! decoding never panics, keeps the data it carries, and a binary record
//! re-encodes to the same bytes.
#![no_main]

use chatwire_protocol::eio::packet::{
    Data, Packet, decode_payload, decode_record, decode_text, encode_payload,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Packet::Ping(d) | Packet::Pong(d) | Packet::Message(Data::Text(d))) = decode_text(s) {
        assert_eq!(d, &s[1..], "a text packet keeps everything after its type");
    }
    if let Ok(Packet::Message(Data::Binary(b))) = decode_record(s) {
        let again = encode_payload(&[chatwire_protocol::Frame::Binary(b.clone())]);
        let back: Vec<_> = decode_payload(&again).expect("UTF-8").collect();
        assert_eq!(back, vec![Ok(Packet::Message(Data::Binary(b)))]);
    }
});
