//! A polling payload (what a POST carries): decoding never panics, and a
//! payload whose records all decode re-encodes to one that decodes the same.
#![no_main]

use chatwire_protocol::Frame;
use chatwire_protocol::eio::packet::{
    Data, Packet, decode_payload, encode_payload, payload_len, text,
};
use libfuzzer_sys::fuzz_target;

fn out(p: &Packet<'_>) -> Frame {
    match p {
        Packet::Close => text(b'1', ""),
        Packet::Ping(d) => text(b'2', d),
        Packet::Pong(d) => text(b'3', d),
        Packet::Message(Data::Text(d)) => text(b'4', d),
        Packet::Message(Data::Binary(b)) => Frame::Binary(b.clone()),
        Packet::Upgrade => text(b'5', ""),
        Packet::Noop => text(b'6', ""),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(records) = decode_payload(data) else {
        assert!(std::str::from_utf8(data).is_err());
        return;
    };
    let Ok(packets) = records.collect::<Result<Vec<_>, _>>() else {
        return;
    };
    let outs: Vec<Frame> = packets.iter().map(out).collect();
    let body = encode_payload(&outs);
    assert_eq!(
        body.len() + 1,
        outs.iter().map(|p| payload_len(p) + 1).sum::<usize>()
    );
    let back: Vec<_> = decode_payload(&body)
        .expect("an encoded payload is UTF-8")
        .collect::<Result<Vec<_>, _>>()
        .expect("an encoded payload decodes");
    assert_eq!(back, packets);
});
