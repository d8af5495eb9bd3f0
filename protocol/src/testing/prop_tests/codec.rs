//! Every codec round-trips, and no decoder panics on any input.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::eio::packet::{
    Data, DecodeError, Packet, decode_payload, decode_record, decode_text, encode_payload,
    payload_len,
};
use crate::host::Frame;
use crate::sio::packet::{self, PacketData, PacketType, placeholders_valid};

/// A packet a client may send: its type character and its data (which
/// holds no record separator: that would split a payload).
fn eio_text() -> impl Strategy<Value = (char, String)> {
    (
        prop_oneof![
            Just('1'),
            Just('2'),
            Just('3'),
            Just('4'),
            Just('5'),
            Just('6')
        ],
        "[^\u{1e}]{0,40}",
    )
}

/// What a client packet decodes to, built without the decoder.
fn expected(kind: char, data: &str) -> Packet<'_> {
    match kind {
        '1' => Packet::Close,
        '2' => Packet::Ping(data),
        '3' => Packet::Pong(data),
        '4' => Packet::Message(Data::Text(data)),
        '5' => Packet::Upgrade,
        _ => Packet::Noop,
    }
}

#[derive(Debug, Clone)]
enum Gen {
    Text(char, String),
    Binary(Vec<u8>),
}

impl Gen {
    fn out(&self) -> Frame {
        match self {
            Gen::Text(k, d) => Frame::Text(Bytes::from(format!("{k}{d}"))),
            Gen::Binary(b) => Frame::Binary(Bytes::from(b.clone())),
        }
    }

    fn expected(&self) -> Packet<'_> {
        match self {
            Gen::Text(k, d) => expected(*k, d),
            Gen::Binary(b) => Packet::Message(Data::Binary(Bytes::from(b.clone()))),
        }
    }
}

fn eio_out() -> impl Strategy<Value = Gen> {
    prop_oneof![
        eio_text().prop_map(|(k, d)| Gen::Text(k, d)),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Gen::Binary),
    ]
}

/// JSON without floats (serde_json may round the last bit of a float).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn placeholder(num: usize) -> Value {
    json!({"_placeholder": true, "num": num})
}

/// A namespace: `/` or `/` + characters without a comma.
fn nsp() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), "/[^,]{1,12}"]
}

proptest! {
    // Codecs are fast: many cases fit in the test budget.
    #![proptest_config(super::config(2048))]

    #[test]
    fn eio_payload_round_trips(packets in proptest::collection::vec(eio_out(), 1..20)) {
        let out: Vec<Frame> = packets.iter().map(Gen::out).collect();
        let want: Vec<Packet<'_>> = packets.iter().map(Gen::expected).collect();
        let body = encode_payload(&out);
        prop_assert_eq!(body.len() + 1, out.iter().map(|p| payload_len(p) + 1).sum::<usize>());
        let back: Vec<Packet<'_>> = decode_payload(&body)
            .expect("an encoded payload is UTF-8")
            .collect::<Result<_, _>>()
            .expect("every record decodes");
        prop_assert_eq!(back, want);
    }

    #[test]
    fn eio_text_round_trips((kind, data) in eio_text()) {
        let text = format!("{kind}{data}");
        prop_assert_eq!(decode_text(&text), Ok(expected(kind, &data)));
        prop_assert_eq!(decode_record(&text), Ok(expected(kind, &data)));
    }

    #[test]
    fn eio_decoders_never_panic(s in ".{0,64}", bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        match decode_text(&s) {
            // Data-carrying packets keep everything after the type character.
            Ok(Packet::Ping(d) | Packet::Pong(d) | Packet::Message(Data::Text(d))) => {
                prop_assert_eq!(&s[1..], d);
            }
            Ok(_) | Err(DecodeError::UnknownType) => {}
            Err(e) => prop_assert!(s.is_empty() && e == DecodeError::Empty),
        }
        let _ = decode_record(&s);
        if let Ok(records) = decode_payload(&bytes) {
            for r in records {
                let _ = r;
            }
        } else {
            prop_assert!(std::str::from_utf8(&bytes).is_err());
        }
    }

    #[test]
    fn sio_packets_round_trip(
        kind in 0u8..7,
        nsp in nsp(),
        id in proptest::option::of(any::<u64>()),
        args in proptest::collection::vec(json_value(), 0..4),
        name in ".{0,10}",
        attachments in 1usize..=packet::MAX_ATTACHMENTS,
        auth in proptest::option::of(proptest::collection::btree_map("[a-z]{1,5}", json_value(), 0..3)),
    ) {
        let kind = [
            PacketType::Connect,
            PacketType::Disconnect,
            PacketType::Event,
            PacketType::Ack,
            PacketType::ConnectError,
            PacketType::BinaryEvent,
            PacketType::BinaryAck,
        ][kind as usize];
        let binary = matches!(kind, PacketType::BinaryEvent | PacketType::BinaryAck);
        let attachments = if binary { attachments } else { 0 };
        // Binary packets carry one placeholder per attachment after the arguments.
        let mut args = args;
        args.extend((0..attachments).map(placeholder));
        let (data, want): (Option<Value>, Result<PacketData, packet::DecodeError>) = match kind {
            PacketType::Connect => {
                let auth = auth.map(|m| Value::Object(m.into_iter().collect()));
                (auth.clone(), Ok(PacketData::Connect(auth)))
            }
            PacketType::Disconnect => (None, Ok(PacketData::Disconnect)),
            PacketType::Event | PacketType::BinaryEvent => {
                let mut all = vec![Value::String(name.clone())];
                all.extend(args.iter().cloned());
                (Some(Value::Array(all)), Ok(PacketData::Event(name, args.clone())))
            }
            PacketType::Ack | PacketType::BinaryAck => (
                Some(Value::Array(args.clone())),
                if id.is_some() { Ok(PacketData::Ack(args.clone())) } else { Err(packet::DecodeError::AckId) },
            ),
            PacketType::ConnectError => (
                Some(json!({"message": "x"})),
                Err(packet::DecodeError::UnknownType),
            ),
        };
        let bytes = packet::encode(kind, &nsp, attachments, id, data.as_ref());
        let text = std::str::from_utf8(&bytes).expect("encoded packets are UTF-8");
        let text = text.strip_prefix('4').expect("an Engine.IO message");
        let raw = packet::decode(text).expect("what we encode decodes");
        prop_assert_eq!(raw.kind, kind);
        prop_assert_eq!(raw.nsp, nsp.as_str());
        prop_assert_eq!(raw.attachments, attachments);
        prop_assert_eq!(raw.id, id);
        prop_assert_eq!(raw.data.map(|d| serde_json::from_str::<Value>(d).unwrap()), data);
        prop_assert_eq!(packet::parse_data(&raw), want);
        // Every placeholder points at an attachment; one past them does not.
        if attachments > 0
            && let Ok(PacketData::Event(_, a) | PacketData::Ack(a)) = packet::parse_data(&raw)
        {
            prop_assert!(a.iter().all(|v| placeholders_valid(v, attachments)));
            prop_assert!(!placeholders_valid(&placeholder(attachments), attachments));
        }
    }

    #[test]
    fn sio_decoders_never_panic(s in ".{0,64}", tail in "[0-9/,\\-\\[\\]{}\"a-z]{0,24}", kind in "[0-6]") {
        // Arbitrary text, and text that looks like a header, which reaches deeper.
        for text in [s.clone(), format!("{kind}{tail}")] {
            if let Ok(raw) = packet::decode(&text) {
                prop_assert!(raw.attachments <= packet::MAX_ATTACHMENTS);
                prop_assert!(raw.nsp.starts_with('/'));
                if let Ok(PacketData::Event(_, args) | PacketData::Ack(args)) = packet::parse_data(&raw) {
                    for a in &args {
                        let _ = placeholders_valid(a, raw.attachments);
                    }
                }
            }
        }
    }
}
