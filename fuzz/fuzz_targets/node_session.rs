//! Whole sessions: a chat node fed an arbitrary sequence of host inputs
//! (polling handshakes, GETs and POSTs, WebSocket opens, frames and closes,
//! store replies in any order, failed or repeated, time passing, and, as
//! one node of a cluster, any bytes from the bus besides its own messages
//! handed back or held).
//!
//! Checked after every input: nothing panics; text frames are UTF-8 (the
//! simulation checks as it drains) and start with an Engine.IO packet type;
//! HTTP statuses are real and polling bodies are UTF-8 payloads; sessions,
//! sockets, kept sessions (connection state recovery is on), store
//! operations and typing indicators stay bounded by the inputs that made
//! them.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use chatwire_protocol::ids::SeededIds;
use chatwire_protocol::sio::{ClusterConfig, RecoveryConfig, SocketIoConfig};
use chatwire_protocol::testing::{Sim, user_id};
use chatwire_protocol::{ConnId, Input, Method, RequestId};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    /// A polling handshake.
    Handshake,
    /// A long-poll GET on a known session.
    Poll { sid: u8 },
    /// A POST of a payload on a known session.
    Post { sid: u8, body: Vec<u8> },
    /// A POST whose payload is a Socket.IO CONNECT with a real token.
    PostConnect { sid: u8, user: u8 },
    /// Any request at all.
    Http {
        method: u8,
        query: String,
        body: Vec<u8>,
    },
    /// The client of an earlier request went away.
    Abort { req: u8 },
    /// A WebSocket opens, fresh or as an upgrade of a known session.
    WsOpen { conn: u8, sid: Option<u8> },
    /// A WebSocket opens with any query.
    WsOpenRaw { conn: u8, query: String },
    /// A CONNECT with a real token.
    WsConnect { conn: u8, user: u8 },
    /// A CONNECT with a real token asking to recover a session (a pid some
    /// CONNECT reply gave), from an offset or none.
    WsRecover {
        conn: u8,
        user: u8,
        pid: u8,
        offset: Option<u16>,
    },
    /// A chat event, well formed.
    WsChat {
        conn: u8,
        event: u8,
        ack: Option<u8>,
        text: String,
    },
    /// Any text frame.
    WsText { conn: u8, text: String },
    /// Any binary frame.
    WsBinary { conn: u8, data: Vec<u8> },
    /// A WebSocket closes.
    WsClose { conn: u8 },
    /// A store command finishes: answered, failed, or a reply repeated.
    Store { pick: u8, how: u8 },
    /// Time passes.
    Wait { ms: u32 },
    /// The clock jumps to the next deadline.
    Jump,
    /// The host shuts down.
    Shutdown,
    /// Any bytes arrive from the cluster's bus.
    Bus { bytes: Vec<u8> },
    /// The bus holds back what the node published (until the next op
    /// that is not this one).
    BusHold,
    /// Any bytes from the bus's past (published before the node started).
    BusPast { bytes: Vec<u8>, age_ms: u32 },
    /// The host read all of the bus's past.
    CaughtUp,
}

/// A whole session: the node alone, or one node of a cluster whose bus
/// hands everything it publishes back to it (a cluster of one), so that
/// room emits, token takes and forwarded requests take the bus's path.
#[derive(Debug, Arbitrary)]
struct Session {
    cluster: bool,
    ops: Vec<Op>,
}

const MAX_OPS: usize = 64;

fuzz_target!(|session: Session| {
    let Session { cluster, ops } = session;
    // Seeded ids, as a production host has them; connection state
    // recovery on, so that offsets, the log and kept sessions are fuzzed too.
    let sio = SocketIoConfig {
        recovery: Some(RecoveryConfig::new(Duration::from_secs(60))),
        cluster: cluster.then(|| ClusterConfig { node: "n0".into() }),
        ..SocketIoConfig::default()
    };
    let mut sim = Sim::with(SeededIds::new([7; 32]), sio);
    let mut sids: Vec<String> = Vec::new();
    let mut pids: Vec<String> = Vec::new();
    let mut next_req = 0u64;
    let mut open = std::collections::BTreeSet::new();
    let mut opened = 0usize;
    let mut inputs = 0usize;
    for op in ops.into_iter().take(MAX_OPS) {
        inputs += 1;
        let hold = matches!(op, Op::BusHold);
        let sid = |i: u8| sids.get(i as usize % sids.len().max(1)).cloned();
        // Connection numbers far above those `Sim::connect` would pick.
        let ws = |c: u8| 1000 + u64::from(c % 8);
        let mut http = |sim: &mut Sim, method: Method, query: &str, body: &[u8]| {
            next_req += 1;
            sim.http(next_req, method, query, body);
        };
        match op {
            Op::Handshake => http(&mut sim, Method::Get, "EIO=4&transport=polling", b""),
            Op::Poll { sid: i } => {
                if let Some(s) = sid(i) {
                    http(
                        &mut sim,
                        Method::Get,
                        &format!("EIO=4&transport=polling&sid={s}"),
                        b"",
                    );
                }
            }
            Op::Post { sid: i, body } => {
                if let Some(s) = sid(i) {
                    http(
                        &mut sim,
                        Method::Post,
                        &format!("EIO=4&transport=polling&sid={s}"),
                        &body,
                    );
                }
            }
            Op::PostConnect { sid: i, user } => {
                if let Some(s) = sid(i) {
                    let token = sim.token(user_id(usize::from(user % 3)), "fuzz");
                    let body = format!("40{{\"token\":\"{token}\"}}");
                    http(
                        &mut sim,
                        Method::Post,
                        &format!("EIO=4&transport=polling&sid={s}"),
                        body.as_bytes(),
                    );
                }
            }
            Op::Http {
                method,
                query,
                body,
            } => {
                let method = [Method::Get, Method::Post, Method::Other][method as usize % 3];
                http(&mut sim, method, &query, &body);
            }
            Op::Abort { req } => {
                if next_req > 0 {
                    sim.input(Input::HttpAborted(RequestId(1 + u64::from(req) % next_req)));
                }
            }
            Op::WsOpen { conn, sid: i } => {
                let conn = ws(conn);
                // A host never reuses the name of an open connection.
                if open.insert(conn) {
                    opened += 1;
                    let query = match i.and_then(sid) {
                        Some(s) => format!("EIO=4&transport=websocket&sid={s}"),
                        None => "EIO=4&transport=websocket".to_owned(),
                    };
                    sim.input(Input::WsOpen {
                        conn: ConnId(conn),
                        query: &query,
                        authorization: None,
                    });
                }
            }
            Op::WsOpenRaw { conn, query } => {
                let conn = ws(conn);
                if open.insert(conn) {
                    opened += 1;
                    sim.input(Input::WsOpen {
                        conn: ConnId(conn),
                        query: &query,
                        authorization: None,
                    });
                }
            }
            Op::WsConnect { conn, user } => {
                let token = sim.token(user_id(usize::from(user % 3)), "fuzz");
                sim.send(ws(conn), &format!("40{{\"token\":\"{token}\"}}"));
            }
            Op::WsRecover {
                conn,
                user,
                pid,
                offset,
            } => {
                let token = sim.token(user_id(usize::from(user % 3)), "fuzz");
                let pid = pids.get(pid as usize % pids.len().max(1)).cloned();
                let auth = serde_json::json!({
                    "token": token, "pid": pid, "offset": offset.map(|o| o.to_string()),
                });
                sim.send(ws(conn), &format!("40{auth}"));
            }
            Op::WsChat {
                conn,
                event,
                ack,
                text,
            } => {
                let name = [
                    "chat:send",
                    "chat:typing",
                    "chat:join",
                    "chat:leave",
                    "chat:read",
                ][event as usize % 5];
                let payload = serde_json::json!({
                    "text": text, "tempId": text, "chatId": text, "isTyping": true, "messageIds": [text],
                });
                let ack = ack.map(|a| a.to_string()).unwrap_or_default();
                sim.send(
                    ws(conn),
                    &format!("42{ack}{}", serde_json::json!([name, payload])),
                );
            }
            Op::WsText { conn, text } => sim.send(ws(conn), &text),
            Op::WsBinary { conn, data } => sim.send_binary(ws(conn), &data),
            Op::WsClose { conn } => {
                let conn = ws(conn);
                if open.remove(&conn) {
                    sim.drop_client(conn);
                }
            }
            Op::Store { pick, how } => {
                let n = sim.in_flight.len().max(1);
                match how % 4 {
                    0 => sim.complete_oldest(),
                    1 => sim.complete_at(pick as usize % n),
                    2 => sim.fail_at(pick as usize % n),
                    _ => sim.duplicate_reply(pick as usize % sim.replied.len().max(1)),
                };
            }
            Op::Wait { ms } => sim.advance(Duration::from_millis(u64::from(ms % 120_000))),
            Op::Jump => sim.jump_to_deadline(),
            Op::Shutdown => sim.input(Input::Shutdown),
            Op::Bus { bytes } => sim.input(Input::Cluster {
                message: this_version(bytes),
                at: None,
            }),
            Op::BusHold => {}
            Op::BusPast { bytes, age_ms } => sim.input(Input::ClusterPast {
                message: this_version(bytes),
                age: Duration::from_millis(u64::from(age_ms)),
                at: None,
            }),
            Op::CaughtUp => sim.input(Input::ClusterCaughtUp),
        }
        if !hold {
            // The bus hands back what was published, as Redis would; what
            // that makes the node publish goes round too, and must settle.
            for _ in 0..64 {
                let published = std::mem::take(&mut sim.published);
                if published.is_empty() {
                    break;
                }
                for m in published {
                    sim.input(Input::Cluster {
                        message: m.bytes,
                        at: None,
                    });
                }
            }
            assert!(sim.published.is_empty(), "the node keeps publishing");
        }
        // The host closes what the core closed, and says so.
        let closed: Vec<u64> = open
            .iter()
            .copied()
            .filter(|c| sim.clients.get(c).is_some_and(|cl| cl.closed))
            .collect();
        for c in closed {
            open.remove(&c);
            sim.drop_client(c);
            sim.clients.remove(&c);
        }
        for (conn, client) in &mut sim.clients {
            for frame in client.inbox.drain(..) {
                let first = frame.as_bytes().first().copied();
                assert!(
                    matches!(first, Some(b'0'..=b'6' | b'b')),
                    "frame {frame:?} to {conn} is no Engine.IO packet"
                );
                if let Some(id) = frame.strip_prefix("0{") {
                    let v: serde_json::Value =
                        serde_json::from_str(&format!("{{{id}")).expect("the open packet is JSON");
                    sids.push(v["sid"].as_str().expect("a sid").to_owned());
                }
                if let Some(reply) = frame.strip_prefix("40{") {
                    let v: serde_json::Value = serde_json::from_str(&format!("{{{reply}"))
                        .expect("a CONNECT reply is JSON");
                    pids.push(v["pid"].as_str().expect("recovery is on: a pid").to_owned());
                }
            }
        }
        for (_, r) in std::mem::take(&mut sim.responses) {
            assert!((100..=599).contains(&r.status), "status {}", r.status);
            let body = std::str::from_utf8(&r.body).expect("every body the engine writes is UTF-8");
            if r.status == 200 && r.content_type.starts_with("text/plain") {
                for record in body.split('\u{1e}') {
                    let first = record.as_bytes().first().copied();
                    assert!(
                        matches!(first, Some(b'0'..=b'6' | b'b')),
                        "record {record:?}"
                    );
                    if let Some(id) = record.strip_prefix("0{") {
                        let v: serde_json::Value = serde_json::from_str(&format!("{{{id}"))
                            .expect("the open packet is JSON");
                        sids.push(v["sid"].as_str().expect("a sid").to_owned());
                    }
                }
            }
        }
        sids.truncate(64);
        pids.truncate(64);
        // Memory stays bounded by what the inputs asked for.
        let engine = sim.node.engine();
        assert!(
            engine.session_count() <= inputs,
            "{} sessions",
            engine.session_count()
        );
        assert!(sim.node.upper().socket_count() <= inputs);
        assert!(sim.node.upper().kept_sessions() <= inputs);
        assert!(
            sim.in_flight.len() <= 2 * inputs,
            "{} store ops",
            sim.in_flight.len()
        );
        assert!(sim.node.upper().app().pending_operations() <= 2 * inputs);
        // Typing indicators: at most a few chats per open socket.
        let typing = sim.node.upper().app().typing_indicators();
        assert!(
            typing <= chatwire_protocol::chat::MAX_TYPING_CHATS * sim.node.upper().socket_count(),
            "{typing} typing indicators"
        );
        let _ = opened;
    }
});

/// Fuzzed bytes as an entry of this build's bus version (most are taken
/// further than the version check), unless they start with a version byte
/// of their own.
fn this_version(bytes: Vec<u8>) -> bytes::Bytes {
    if bytes.first().is_some_and(u8::is_ascii_digit) {
        return bytes::Bytes::from(bytes);
    }
    let mut entry = vec![chatwire_protocol::bus::VERSION];
    entry.extend(bytes);
    bytes::Bytes::from(entry)
}
