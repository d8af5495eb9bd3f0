//! A binary Socket.IO packet through a whole node: a header (`5N-...` or
//! anything) as a WebSocket text frame, then attachments as binary frames,
//! on a socket joined to the chat. Nothing panics, text frames stay UTF-8
//! (the simulation checks that), and a well-formed header followed by
//! exactly its attachments never costs the client its connection.
#![no_main]

use arbitrary::Arbitrary;
use chatwire_protocol::sio::packet::{self, PacketData};
use chatwire_protocol::testing::{Sim, user_id};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Case {
    header: String,
    attachments: Vec<Vec<u8>>,
    /// Frames after the attachments: more text, or stray binary.
    tail: Vec<(bool, Vec<u8>)>,
    settle: bool,
}

fn well_formed(header: &str, attachments: usize) -> bool {
    let Ok(raw) = packet::decode(header) else {
        return false;
    };
    if raw.attachments == 0 || raw.attachments != attachments {
        return false;
    }
    match packet::parse_data(&raw) {
        Ok(PacketData::Event(_, a) | PacketData::Ack(a)) => a
            .iter()
            .all(|v| packet::placeholders_valid(v, raw.attachments)),
        _ => false,
    }
}

fuzz_target!(|case: Case| {
    let mut sim = Sim::new();
    let token = sim.token(user_id(0), "ana");
    let conn = sim.connect(Some(&token));
    let watcher = sim.connect(Some(&sim.token(user_id(1), "bob")));
    sim.send(conn, &format!("4{}", case.header));
    for a in &case.attachments {
        sim.send_binary(conn, a);
    }
    if well_formed(&case.header, case.attachments.len()) {
        assert!(
            !sim.clients[&conn].closed,
            "a well-formed binary packet closed the connection"
        );
    }
    for (text, data) in &case.tail {
        match (text, std::str::from_utf8(data)) {
            (true, Ok(s)) => sim.send(conn, s),
            _ => sim.send_binary(conn, data),
        }
    }
    if case.settle {
        sim.settle();
    }
    assert!(
        !sim.clients[&watcher].closed,
        "one client's bytes closed another"
    );
});
