//! The AsyncAPI document against the chat service, run in the simulation:
//! every documented client event is handled (its ack comes back, shaped as
//! documented), the server events the service emits while every client
//! event, refusal and failure is exercised are exactly the documented ones
//! (payloads valid against their schemas), the refusal codes it emits are the
//! documented ones, and the payload rules match `validate.rs` at their bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::asyncapi::document;
use super::events::{ClientEvent, ErrorCode, ServerEvent};
use super::validate;
use crate::model::{MAX_CHAT_ID_LEN, MAX_TEXT_CHARS, ObjectId};
use crate::testing::Sim;

fn doc() -> Value {
    document("chatwire", "0.1.0")
}

/// A schema of the document, with the components beside it so that its
/// `$ref`s resolve (AsyncAPI's schema format is JSON Schema draft 7's superset).
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    jsonschema::draft7::new(&root).unwrap()
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').unwrap();
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("{r}")))
        }
        None => v,
    }
}

/// One documented operation: its event (or packet) name, the payload schema,
/// and the reply's payload schema if it has one.
#[derive(Debug, Clone)]
struct Op {
    packet: String,
    name: String,
    payload: Value,
    reply: Option<Value>,
}

fn operations(doc: &Value, action: &str) -> Vec<Op> {
    let mut out = Vec::new();
    for op in doc["operations"].as_object().unwrap().values() {
        if op["action"] != action {
            continue;
        }
        let messages = op["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1);
        let message = resolve(doc, &messages[0]);
        let reply = op.get("reply").map(|r| {
            let m = resolve(doc, &r["messages"][0]);
            m["payload"].clone()
        });
        out.push(Op {
            packet: message["x-socketio-packet"].as_str().unwrap().to_owned(),
            name: message["name"].as_str().unwrap().to_owned(),
            payload: message["payload"].clone(),
            reply,
        });
    }
    out
}

fn events(doc: &Value, action: &str) -> BTreeMap<String, Op> {
    operations(doc, action)
        .into_iter()
        .filter(|o| o.packet == "EVENT")
        .map(|o| (o.name.clone(), o))
        .collect()
}

fn uid(n: u8) -> ObjectId {
    ObjectId([n; 12])
}

/// Connects a user's tab and clears its inbox.
fn tab(sim: &mut Sim, user: u8, name: &str) -> u64 {
    let token = sim.token(uid(user), name);
    let c = sim.connect(Some(&token));
    sim.take(c);
    c
}

fn emit(sim: &mut Sim, conn: u64, ack: u64, name: &str, payload: &Value) {
    sim.send(conn, &format!("42{ack}{}", json!([name, payload])));
}

/// What a client received: events (name, payload) and acks (id, payload).
#[derive(Debug, Default)]
struct Received {
    events: Vec<(String, Value)>,
    acks: BTreeMap<u64, Value>,
}

fn receive(sim: &mut Sim, conn: u64, into: &mut Received) {
    for frame in sim.take(conn) {
        if let Some(json) = frame.strip_prefix("42") {
            let v: Value = serde_json::from_str(json).unwrap();
            into.events
                .push((v[0].as_str().unwrap().to_owned(), v[1].clone()));
            assert_eq!(v.as_array().unwrap().len(), 2, "{frame}");
        } else if let Some(rest) = frame.strip_prefix("43") {
            let at = rest.find('[').unwrap();
            let id: u64 = rest[..at].parse().unwrap();
            let v: Value = serde_json::from_str(&rest[at..]).unwrap();
            assert_eq!(v.as_array().unwrap().len(), 1, "{frame}");
            assert!(into.acks.insert(id, v[0].clone()).is_none());
        }
    }
}

#[test]
fn the_documented_names_are_the_services_lists() {
    let doc = doc();
    let client: BTreeSet<String> = events(&doc, "receive").into_keys().collect();
    let server: BTreeSet<String> = events(&doc, "send").into_keys().collect();
    let names = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        client,
        names(
            &ClientEvent::ALL
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
        )
    );
    assert_eq!(
        server,
        names(
            &ServerEvent::ALL
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
        )
    );
    assert_eq!(
        doc["components"]["schemas"]["ErrorCode"]["enum"],
        json!(ErrorCode::ALL)
    );
    // Every reference resolves.
    fn refs(doc: &Value, v: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    assert!(doc.pointer(r.strip_prefix('#').unwrap()).is_some(), "{r}");
                }
                m.values().for_each(|x| refs(doc, x));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(doc, x)),
            _ => {}
        }
    }
    refs(&doc, &doc);
}

#[test]
fn the_service_handles_and_emits_exactly_what_is_documented() {
    let doc = doc();
    let client = events(&doc, "receive");
    let server = events(&doc, "send");
    let mut sim = Sim::new();

    // CONNECT: without a token, and with an expired one.
    let connect = operations(&doc, "receive")
        .into_iter()
        .find(|o| o.packet == "CONNECT")
        .unwrap();
    let refused = validator(&doc, connect.reply.as_ref().unwrap());
    let expired = sim.jwt.issue(uid(9), "eve", sim.unix_ms() - 2 * 3_600_000);
    for (token, message) in [
        (None, "Unauthorized"),
        (Some(expired.as_str()), "Token expired"),
    ] {
        let c = sim.connect(token);
        let frame = sim
            .take(c)
            .into_iter()
            .find(|f| f.starts_with("44"))
            .unwrap();
        let v: Value = serde_json::from_str(&frame[2..]).unwrap();
        assert_eq!(v, json!({ "message": message }));
        assert!(refused.is_valid(&v), "{v}");
    }
    let auth = validator(&doc, &connect.payload);
    assert!(auth.is_valid(&json!({"token": sim.token(uid(1), "ana")})));

    let ana = tab(&mut sim, 1, "ana");
    let ana2 = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    let mut got: BTreeMap<u64, Received> = BTreeMap::new();
    let mut next_ack = 100;
    let drain = |sim: &mut Sim, got: &mut BTreeMap<u64, Received>| {
        sim.settle();
        for c in [ana, ana2, bob] {
            receive(sim, c, got.entry(c).or_default());
        }
    };

    // Every documented client event, with each of its documented examples
    // and with a payload its schema refuses: each gets its ack.
    let mut asked: Vec<(String, u64, bool)> = Vec::new();
    for (name, op) in &client {
        let payload = resolve(&doc, &op.payload);
        let schema = validator(&doc, &op.payload);
        let examples = payload["examples"].as_array().unwrap();
        assert!(!examples.is_empty(), "{name}");
        for example in examples {
            assert!(schema.is_valid(example), "{name}: {example}");
            next_ack += 1;
            // In a room of its own first, so that join/leave/typing act on it.
            emit(&mut sim, ana, next_ack, name, example);
            asked.push((name.clone(), next_ack, true));
        }
        let bad = json!("not an object");
        assert!(!schema.is_valid(&bad));
        next_ack += 1;
        emit(&mut sim, ana, next_ack, name, &bad);
        asked.push((name.clone(), next_ack, false));
        drain(&mut sim, &mut got);
    }
    // An event of no documented name is not handled: no ack.
    emit(&mut sim, ana, 99, "chat:unknown", &json!({"text": "hi"}));
    drain(&mut sim, &mut got);
    assert!(!got[&ana].acks.contains_key(&99));
    for (name, id, valid) in &asked {
        let op = &client[name];
        let ack = got[&ana]
            .acks
            .get(id)
            .unwrap_or_else(|| panic!("{name} was not handled: no ack {id}"));
        let reply = op.reply.as_ref().expect("a documented ack");
        assert!(validator(&doc, reply).is_valid(ack), "{name} ack {ack}");
        assert_eq!(ack.get("error").is_none(), *valid, "{name}: {ack}");
    }

    // What the other paths emit: a message bob reads, a typing indicator
    // that times out, a store that fails, and a flood past the rate limit.
    emit(
        &mut sim,
        bob,
        1,
        "chat:send",
        &json!({"text": "for ana", "tempId": "b1"}),
    );
    drain(&mut sim, &mut got);
    let id = got[&bob].acks[&1]["id"].clone();
    emit(&mut sim, ana, 2, "chat:read", &json!({"messageIds": [id]}));
    emit(&mut sim, bob, 3, "chat:typing", &json!({"isTyping": true}));
    drain(&mut sim, &mut got);
    sim.advance(Duration::from_secs(11));
    emit(
        &mut sim,
        bob,
        4,
        "chat:send",
        &json!({"text": "lost", "tempId": "b2"}),
    );
    assert!(sim.fail_oldest());
    for i in 0..45 {
        emit(
            &mut sim,
            bob,
            1000 + i,
            "chat:send",
            &json!({"text": "flood"}),
        );
    }
    drain(&mut sim, &mut got);
    // A socket joining more chats than it may.
    for i in 0..crate::chat::DEFAULT_MAX_CHATS {
        emit(
            &mut sim,
            ana2,
            6000 + i as u64,
            "chat:join",
            &json!({ "chatId": format!("many.{i}") }),
        );
    }
    drain(&mut sim, &mut got);
    // And a shutdown: with a write still under way the sessions stay open,
    // and a new send is refused.
    emit(
        &mut sim,
        ana2,
        5000,
        "chat:send",
        &json!({"text": "under way", "tempId": "a3"}),
    );
    sim.input(crate::node::Input::Shutdown);
    emit(
        &mut sim,
        ana,
        5001,
        "chat:send",
        &json!({"text": "too late", "tempId": "a4"}),
    );
    drain(&mut sim, &mut got);

    let mut emitted: BTreeSet<String> = BTreeSet::new();
    let mut codes: BTreeSet<String> = BTreeSet::new();
    for received in got.values() {
        for (name, payload) in &received.events {
            let op = server
                .get(name)
                .unwrap_or_else(|| panic!("the service emitted {name}, which is not documented"));
            assert!(
                validator(&doc, &op.payload).is_valid(payload),
                "{name}: {payload}"
            );
            if name == ServerEvent::Error.name() {
                codes.insert(payload["code"].as_str().unwrap().to_owned());
            }
            emitted.insert(name.clone());
        }
    }
    assert_eq!(emitted, server.keys().cloned().collect());
    let documented: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, documented);
}

/// Whether the service takes a payload, by its own checks.
fn accepted(event: ClientEvent, payload: &Value) -> bool {
    let args = std::slice::from_ref(payload);
    match event {
        ClientEvent::Send => validate::send(args).is_ok(),
        ClientEvent::Typing => validate::typing(args).is_ok(),
        ClientEvent::Read => validate::read(args).is_ok(),
        ClientEvent::Join | ClientEvent::Leave => validate::room(args).is_ok(),
    }
}

#[test]
fn the_payload_schemas_have_the_services_bounds() {
    let doc = doc();
    let client = events(&doc, "receive");
    let id = "665f1c2e9b1e8a3f4c2d1a0b";
    let chats = [
        json!(null),
        json!(""),
        json!("general"),
        json!("a:b_c-d.e"),
        json!("a b"),
        json!("é"),
        json!("c".repeat(MAX_CHAT_ID_LEN)),
        json!("c".repeat(MAX_CHAT_ID_LEN + 1)),
        json!(5),
    ];
    let mut cases: Vec<(ClientEvent, Value)> = Vec::new();
    for text in [
        json!(""),
        json!(" \n\t"),
        json!("hi"),
        json!("é".repeat(MAX_TEXT_CHARS)),
        json!("x".repeat(MAX_TEXT_CHARS + 1)),
        json!(5),
        json!(null),
    ] {
        cases.push((ClientEvent::Send, json!({ "text": text })));
    }
    for temp in [
        json!(null),
        json!(""),
        json!("t".repeat(64)),
        json!("t".repeat(65)),
        json!(7),
        json!({}),
        json!(true),
    ] {
        cases.push((ClientEvent::Send, json!({"text": "hi", "tempId": temp})));
    }
    for kind in [
        json!(null),
        json!(""),
        json!("image"),
        json!("t".repeat(32)),
        json!("t".repeat(33)),
        json!(1),
    ] {
        cases.push((ClientEvent::Send, json!({"text": "hi", "type": kind})));
    }
    for chat in &chats {
        cases.push((ClientEvent::Send, json!({"text": "hi", "chatId": chat})));
        cases.push((
            ClientEvent::Typing,
            json!({"isTyping": true, "chatId": chat}),
        ));
        cases.push((ClientEvent::Join, json!({ "chatId": chat })));
        cases.push((ClientEvent::Leave, json!({ "chatId": chat })));
    }
    for typing in [
        json!(true),
        json!(false),
        json!("yes"),
        json!(null),
        json!(1),
    ] {
        cases.push((ClientEvent::Typing, json!({ "isTyping": typing })));
    }
    cases.push((ClientEvent::Typing, json!({})));
    cases.push((ClientEvent::Join, json!({})));
    for ids in [
        json!([]),
        json!([id]),
        json!([id.to_uppercase()]),
        json!([id, id]),
        json!(vec![id; validate::MAX_READ_IDS]),
        json!(vec![id; validate::MAX_READ_IDS + 1]),
        json!(["nope"]),
        json!([5]),
        json!(id),
    ] {
        cases.push((ClientEvent::Read, json!({ "messageIds": ids })));
    }
    cases.push((ClientEvent::Read, json!({})));
    for &event in ClientEvent::ALL {
        cases.push((event, json!([])));
        cases.push((event, json!("x")));
    }
    for (event, payload) in cases {
        let op = &client[event.name()];
        let documented = validator(&doc, &op.payload).is_valid(&payload);
        assert_eq!(
            documented,
            accepted(event, &payload),
            "{} {payload}: the document says {}",
            event.name(),
            if documented { "valid" } else { "invalid" }
        );
    }
}
