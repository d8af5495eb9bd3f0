//! Encode and decode of every packet type: Engine.IO text, binary and
//! polling payloads; Socket.IO CONNECT, EVENT, ACK and BINARY_EVENT.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use protocol::Frame;
use protocol::eio::packet::{decode_payload, decode_record, decode_text, encode_payload};
use protocol::sio::packet::{PacketType, decode, parse_data};
use serde_json::json;

/// A `chat:new-message` as the server broadcasts it (about 250 bytes).
fn message() -> serde_json::Value {
    json!({
        "id": "6744d1a0000000000000002a",
        "chatId": "general",
        "author": "alice",
        "authorId": "6744d1a0000000000000000b",
        "text": "hello, this is a chat message of ordinary length for a benchmark",
        "timestamp": 1_732_540_800_123_i64,
        "status": "sent",
        "type": "text"
    })
}

fn eio(c: &mut Criterion) {
    let mut g = c.benchmark_group("eio");
    let text = format!("4{}", json!(["chat:send", message()]));
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("decode_text", |b| {
        b.iter(|| decode_text(black_box(&text)).unwrap())
    });
    g.bench_function("encode_text", |b| {
        b.iter(|| protocol::eio::packet::text(b'4', black_box(&text[1..])))
    });
    let bin = Bytes::from(vec![7u8; 1024]);
    let b64 = format!(
        "b{}",
        String::from_utf8(encode_payload(&[Frame::Binary(bin.clone())])[1..].to_vec()).unwrap()
    );
    g.throughput(Throughput::Bytes(bin.len() as u64));
    g.bench_function("decode_binary_record_1k", |b| {
        b.iter(|| decode_record(black_box(&b64)).unwrap())
    });
    g.bench_function("encode_binary_payload_1k", |b| {
        let p = [Frame::Binary(bin.clone())];
        b.iter(|| encode_payload(black_box(&p)))
    });
    let packets: Vec<Frame> = (0..16)
        .map(|_| Frame::Text(Bytes::from(text.clone())))
        .collect();
    let payload = encode_payload(&packets);
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("encode_payload_16", |b| {
        b.iter(|| encode_payload(black_box(&packets)))
    });
    g.bench_function("decode_payload_16", |b| {
        b.iter(|| {
            for p in decode_payload(black_box(&payload)).unwrap() {
                black_box(p.unwrap());
            }
        })
    });
    g.finish();
}

fn sio(c: &mut Criterion) {
    let mut g = c.benchmark_group("sio");
    let msg = message();
    let event = ("chat:new-message", &msg);
    g.bench_function("encode_event", |b| {
        b.iter(|| {
            protocol::sio::packet::encode(PacketType::Event, "/", 0, None, Some(black_box(&event)))
        })
    });
    g.bench_function("encode_ack", |b| {
        let args = [json!({"tempId": "t1", "id": "6744d1a0000000000000002a", "timestamp": 1_732_540_800_123_i64})];
        b.iter(|| protocol::sio::packet::encode(PacketType::Ack, "/", 0, Some(17), Some(black_box(&args))))
    });
    g.bench_function("encode_binary_event_2", |b| {
        let data =
            json!(["upload", {"_placeholder": true, "num": 0}, {"_placeholder": true, "num": 1}]);
        b.iter(|| {
            protocol::sio::packet::encode(
                PacketType::BinaryEvent,
                "/",
                2,
                None,
                Some(black_box(&data)),
            )
        })
    });
    g.bench_function("encode_connect", |b| {
        let data = json!({"sid": "AAAAAAAAAAAAAAAAAAAA"});
        b.iter(|| {
            protocol::sio::packet::encode(PacketType::Connect, "/", 0, None, Some(black_box(&data)))
        })
    });
    let cases = [
        (
            "decode_connect",
            format!(
                "0{}",
                json!({"token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI2NzQ0ZDFhMDAwMDAwMDAwMDAwMDAwMGIifQ.sig"})
            ),
        ),
        (
            "decode_event",
            format!(
                "2{}",
                json!(["chat:send", {"text": msg["text"], "tempId": "t-123"}])
            ),
        ),
        (
            "decode_event_with_ack",
            format!(
                "217{}",
                json!(["chat:send", {"text": msg["text"], "tempId": "t-123"}])
            ),
        ),
        ("decode_ack", format!("317{}", json!([{"ok": true}]))),
        (
            "decode_binary_event_2",
            format!(
                "52-{}",
                json!(["upload", {"_placeholder": true, "num": 0}, {"_placeholder": true, "num": 1}])
            ),
        ),
    ];
    for (name, text) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let raw = decode(black_box(text)).unwrap();
                parse_data(&raw).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, eio, sio);
criterion_main!(benches);
