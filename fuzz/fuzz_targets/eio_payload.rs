//! A polling payload (what a POST carries): decoding never panics, and a
//! payload whose records all decode re-encodes to one that decodes the same.
#![no_main]

use chatwire_protocol::eio::packet::{Data, OutPacket, Packet, decode_payload, encode_payload};
use libfuzzer_sys::fuzz_target;

fn out(p: &Packet<'_>) -> OutPacket {
    match p {
        Packet::Close => OutPacket::text(b'1', ""),
        Packet::Ping(d) => OutPacket::text(b'2', d),
        Packet::Pong(d) => OutPacket::text(b'3', d),
        Packet::Message(Data::Text(d)) => OutPacket::text(b'4', d),
        Packet::Message(Data::Binary(b)) => OutPacket::Binary(b.clone()),
        Packet::Upgrade => OutPacket::text(b'5', ""),
        Packet::Noop => OutPacket::text(b'6', ""),
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
    let outs: Vec<OutPacket> = packets.iter().map(out).collect();
    let body = encode_payload(&outs);
    assert_eq!(
        body.len() + 1,
        outs.iter().map(|p| p.payload_len() + 1).sum::<usize>()
    );
    let back: Vec<_> = decode_payload(&body)
        .expect("an encoded payload is UTF-8")
        .collect::<Result<Vec<_>, _>>()
        .expect("an encoded payload decodes");
    assert_eq!(back, packets);
});
