//! Scenarios run in the simulation: the chat service's promises under
//! every ordering of store replies the tests choose.

use std::time::Duration;

use serde_json::{Value, json};

use crate::node::{Input, InputError, Method, OpId};
use crate::store::StoreReply;
use crate::testing::{Sim, error_codes, event, names, send, tab, uid};

#[test]
fn ack_only_after_the_durable_append_then_broadcast_and_delivered() {
    let mut sim = Sim::new();
    let ana1 = tab(&mut sim, 1, "ana");
    let ana2 = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    send(
        &mut sim,
        ana1,
        7,
        json!({"text": "hi", "tempId": "t1", "author": "mallory"}),
    );
    assert_eq!(sim.in_flight.len(), 1);
    assert!(
        sim.take(ana1).is_empty(),
        "nothing before the store answers"
    );
    assert!(sim.take(bob).is_empty());
    assert!(sim.complete_oldest());
    let to_ana1 = sim.take(ana1);
    assert!(
        to_ana1[0].starts_with(r#"42["chat:ack",{"tempId":"t1","id":""#),
        "{to_ana1:?}"
    );
    assert!(
        to_ana1[1].starts_with(r#"437[{"tempId":"t1","id":""#),
        "{to_ana1:?}"
    );
    assert!(
        to_ana1[2].starts_with(r#"42["chat:delivered",{"messageId":""#),
        "{to_ana1:?}"
    );
    for other in [ana2, bob] {
        let ev = sim.events(other);
        assert_eq!(names(&ev), ["chat:new-message"]);
        let m = &ev[0].1;
        assert_eq!(
            (
                m["author"].as_str(),
                m["status"].as_str(),
                m["text"].as_str()
            ),
            (Some("ana"), Some("sent"), Some("hi"))
        );
        assert_eq!(m["authorId"], json!(uid(1).to_hex()));
    }
    // The delivered mark is a store command of its own.
    sim.settle();
    assert_eq!(
        sim.store.chat("general")[0].status,
        crate::model::Status::Delivered
    );
}

#[test]
fn a_failing_store_acks_nothing() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    send(&mut sim, ana, 1, json!({"text": "hi", "tempId": "t1"}));
    assert!(sim.fail_oldest());
    let ev = sim.take(ana);
    assert_eq!(
        ev[0],
        r#"42["error",{"message":"The message could not be stored; try again","code":"store_unavailable","tempId":"t1"}]"#
    );
    assert_eq!(
        ev[1],
        r#"431[{"error":{"message":"The message could not be stored; try again","code":"store_unavailable"}}]"#
    );
    assert!(sim.take(bob).is_empty());
    assert!(sim.store.chat("general").is_empty());
}

#[test]
fn store_replies_the_node_does_not_await_are_the_hosts_mistake() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    send(&mut sim, ana, 1, json!({"text": "hi", "tempId": "t1"}));
    let (op, _) = sim.in_flight[0].clone();
    let now = sim.now;
    // A reply of another kind than the append's: refused, nothing changes.
    let wrong = sim.node.handle_input(
        now,
        Input::StoreReply {
            op,
            reply: StoreReply::Delivered,
        },
    );
    assert_eq!(
        wrong,
        Err(InputError::WrongStoreReply {
            op,
            command: "append"
        })
    );
    sim.drain();
    assert!(sim.take(ana).is_empty());
    // A reply for an operation never issued: refused too.
    let unknown = OpId(op.0 + 1000);
    let stray = sim.node.handle_input(
        now,
        Input::StoreReply {
            op: unknown,
            reply: StoreReply::Pong,
        },
    );
    assert_eq!(stray, Err(InputError::UnknownStoreOp(unknown)));
    // The right reply still goes through, once.
    assert!(sim.complete_oldest());
    assert!(names(&sim.events(ana)).contains(&"chat:ack"));
    assert!(sim.duplicate_reply(0));
    assert!(sim.take(ana).is_empty());
}

#[test]
fn a_retry_racing_the_first_send_gets_the_same_ack_and_one_broadcast() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    send(&mut sim, ana, 1, json!({"text": "hi", "tempId": "same"}));
    send(&mut sim, ana, 2, json!({"text": "hi", "tempId": "same"}));
    assert_eq!(
        sim.in_flight.len(),
        1,
        "the retry waits for the first append"
    );
    sim.settle();
    let acks: Vec<Value> = sim
        .events(ana)
        .into_iter()
        .filter(|(n, _)| n == "chat:ack")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0], acks[1]);
    assert_eq!(names(&sim.events(bob)), ["chat:new-message"]);
    // A retry after the first completed is answered by the store's dedupe.
    send(&mut sim, ana, 3, json!({"text": "hi", "tempId": "same"}));
    sim.settle();
    let ev = sim.events(ana);
    assert_eq!(ev[0].1, acks[0]);
    assert!(sim.events(bob).is_empty());
    assert_eq!(sim.store.appends, 1);
}

#[test]
fn reordered_store_replies_keep_history_in_order() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    for i in 0..10 {
        send(&mut sim, ana, i, json!({"text": format!("m{i}")}));
    }
    while sim.complete_newest() {}
    let chat = sim.store.chat("general");
    let texts: Vec<&str> = chat.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[test]
fn sockets_receive_a_chat_live_in_history_order_whatever_order_the_store_answers() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    let cy = tab(&mut sim, 3, "cy");
    event(&mut sim, bob, 90, "chat:join", json!({"chatId": "side"}));
    event(&mut sim, ana, 91, "chat:join", json!({"chatId": "side"}));
    sim.settle();
    sim.take(ana);
    sim.take(bob);
    sim.take(cy);
    // Two senders, two chats, interleaved; the store answers newest first
    // and fails one send in the middle.
    for i in 0..6 {
        let chat = if i % 3 == 2 { "side" } else { "general" };
        send(
            &mut sim,
            ana,
            i,
            json!({"text": format!("a{i}"), "chatId": chat}),
        );
        send(&mut sim, cy, i, json!({"text": format!("c{i}")}));
    }
    assert!(sim.fail_at(2));
    while sim.complete_newest() {}
    sim.settle();
    let received = sim.events(bob);
    let live = |chat: &str| -> Vec<String> {
        received
            .iter()
            .filter(|(n, v)| n == "chat:new-message" && v["chatId"] == chat)
            .map(|(_, v)| v["id"].as_str().unwrap().to_owned())
            .collect()
    };
    for chat in ["general", "side"] {
        let history: Vec<String> = sim
            .store
            .chat(chat)
            .iter()
            .map(|m| m.id.to_string())
            .collect();
        assert!(history.len() >= 2, "{chat}: {history:?}");
        assert_eq!(live(chat), history, "{chat}");
    }
}

#[test]
fn the_rate_limit_refuses_beyond_the_burst_and_refills() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    for i in 0..45 {
        send(&mut sim, ana, i, json!({"text": "x"}));
    }
    assert_eq!(sim.in_flight.len(), 40);
    let limited = sim
        .events(ana)
        .into_iter()
        .filter(|(n, v)| n == "error" && v["code"] == "rate_limited")
        .count();
    assert_eq!(limited, 5);
    // Invalid sends take a token too: 50 ms brings back exactly one.
    sim.advance(Duration::from_millis(50));
    send(&mut sim, ana, 99, json!({"text": ""}));
    send(&mut sim, ana, 100, json!({"text": "ok"}));
    let ev = sim.events(ana);
    assert_eq!(ev[0].1["code"], "invalid");
    assert_eq!(ev[1].1["code"], "rate_limited");
    sim.advance(Duration::from_secs(1));
    sim.take(ana);
    for i in 0..25 {
        send(&mut sim, ana, i, json!({"text": "x"}));
    }
    assert_eq!(sim.in_flight.len(), 40 + 20);
}

#[test]
fn every_event_spends_from_its_sockets_budget_and_refills() {
    use crate::chat::RateLimit;
    use crate::stats::{EventName, RefusalCode};
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let ana2 = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    let burst = RateLimit::EVENTS.burst as u64;
    // The whole burst goes through, whatever the events are.
    for i in 0..burst {
        let chat = format!("c{}", i % 10);
        let (name, payload) = match i % 4 {
            0 => (
                "chat:typing",
                json!({"chatId": "c0", "isTyping": i % 8 == 0}),
            ),
            1 => ("chat:join", json!({ "chatId": chat })),
            2 => ("chat:leave", json!({ "chatId": chat })),
            _ => ("no:such-event", json!({})),
        };
        event(&mut sim, ana, i, name, payload);
    }
    assert!(error_codes(&sim.events(ana)).is_empty());
    // Then every event is refused at once, unknown names too: `error`, and
    // the error through the ack; nothing is stored, broadcast or joined.
    let id = "665f1c2e9b1e8a3f4c2d1a0b";
    let over = [
        (
            "chat:typing",
            json!({"chatId": "general", "isTyping": true}),
        ),
        ("chat:join", json!({"chatId": "late"})),
        ("chat:leave", json!({"chatId": "general"})),
        ("chat:read", json!({ "messageIds": [id] })),
        ("chat:send", json!({"text": "hi", "tempId": "t9"})),
        ("no:such-event", json!({})),
    ];
    for (i, (name, payload)) in over.iter().enumerate() {
        event(&mut sim, ana, 1000 + i as u64, name, payload.clone());
    }
    let inbox = sim.take(ana);
    assert_eq!(inbox.len(), 2 * over.len(), "{inbox:?}");
    for (i, pair) in inbox.chunks(2).enumerate() {
        assert_eq!(
            pair[0],
            r#"42["error",{"message":"Too many events; slow down","code":"rate_limited"}]"#
        );
        assert_eq!(
            pair[1],
            format!(
                r#"43{}[{{"error":{{"message":"Too many events; slow down","code":"rate_limited"}}}}]"#,
                1000 + i
            )
        );
    }
    assert!(sim.in_flight.is_empty(), "{:?}", sim.in_flight);
    assert!(sim.events(bob).is_empty(), "bob hears nothing of it");
    // A refused event's arguments are never parsed: broken JSON after its
    // name costs nothing more (let through, it would close the session).
    // A name that cannot be read without parsing is parsed, then refused.
    sim.send(ana, r#"42["chat:join",{"chatId": [[[["#);
    sim.send(ana, r#"42["chat\u003ajoin",{"chatId":"escaped"}]"#);
    assert!(!sim.clients[&ana].closed);
    assert_eq!(
        error_codes(&sim.events(ana)),
        ["rate_limited", "rate_limited"]
    );
    let stats = sim.node.stats();
    assert_eq!(stats.refusals(EventName::Join, RefusalCode::RateLimited), 3);
    for name in [
        EventName::Typing,
        EventName::Leave,
        EventName::Read,
        EventName::Send,
        EventName::Other,
    ] {
        assert_eq!(
            stats.refusals(name, RefusalCode::RateLimited),
            1,
            "{name:?}"
        );
    }
    // ana is still in general: bob's message reaches her.
    send(&mut sim, bob, 1, json!({"text": "still there?"}));
    sim.settle();
    assert_eq!(names(&sim.events(ana)), ["chat:new-message"]);
    sim.take(ana2);
    // The budget is the socket's: ana's other tab is untouched.
    event(&mut sim, ana2, 1, "chat:join", json!({"chatId": "late"}));
    assert_eq!(sim.take(ana2), [r#"431[{"chatId":"late"}]"#]);
    // 50 a second: 20 ms bring back one event, and only one.
    sim.advance(Duration::from_millis(20));
    event(&mut sim, ana, 1, "chat:join", json!({"chatId": "late"}));
    event(&mut sim, ana, 2, "chat:join", json!({"chatId": "later"}));
    let inbox = sim.take(ana);
    assert_eq!(inbox[0], r#"431[{"chatId":"late"}]"#, "{inbox:?}");
    assert!(inbox[1].contains("rate_limited"), "{inbox:?}");
    assert!(
        !sim.clients[&ana].closed,
        "a refused socket stays connected"
    );
    sim.advance(Duration::from_secs(10));
    sim.take(ana);
    event(&mut sim, ana, 3, "chat:join", json!({"chatId": "later"}));
    assert_eq!(sim.take(ana), [r#"433[{"chatId":"later"}]"#]);
}

#[test]
fn a_socket_is_in_at_most_max_chats() {
    use crate::chat::DEFAULT_MAX_CHATS;
    use crate::stats::{EventName, RefusalCode};
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    // `general` counts: 99 more chats fill it up.
    for i in 1..DEFAULT_MAX_CHATS {
        event(
            &mut sim,
            ana,
            1,
            "chat:join",
            json!({"chatId": format!("c{i}")}),
        );
    }
    assert!(error_codes(&sim.events(ana)).is_empty());
    event(
        &mut sim,
        ana,
        7,
        "chat:join",
        json!({"chatId": "one-too-many"}),
    );
    let inbox = sim.take(ana);
    assert_eq!(
        inbox,
        [
            r#"42["error",{"message":"A socket may be in at most 100 chats; leave one first","code":"too_many_chats"}]"#,
            r#"437[{"error":{"message":"A socket may be in at most 100 chats; leave one first","code":"too_many_chats"}}]"#,
        ]
    );
    assert_eq!(
        sim.node
            .stats()
            .refusals(EventName::Join, RefusalCode::TooManyChats),
        1
    );
    // The refused join changed nothing: ana hears nothing of that chat.
    event(
        &mut sim,
        bob,
        1,
        "chat:join",
        json!({"chatId": "one-too-many"}),
    );
    send(
        &mut sim,
        bob,
        2,
        json!({"text": "hi", "chatId": "one-too-many"}),
    );
    sim.settle();
    assert!(sim.events(ana).is_empty());
    // Joining a chat it is in is no change, so it is answered at the limit.
    event(&mut sim, ana, 8, "chat:join", json!({"chatId": "c5"}));
    assert_eq!(sim.take(ana), [r#"438[{"chatId":"c5"}]"#]);
    // Leaving one (general too) makes room for one; leaving a chat it is
    // not in makes none.
    event(&mut sim, ana, 9, "chat:leave", json!({"chatId": "nowhere"}));
    event(&mut sim, ana, 9, "chat:leave", json!({"chatId": "general"}));
    event(
        &mut sim,
        ana,
        9,
        "chat:join",
        json!({"chatId": "one-too-many"}),
    );
    event(&mut sim, ana, 9, "chat:join", json!({"chatId": "general"}));
    let codes = error_codes(&sim.events(ana));
    assert_eq!(codes, ["too_many_chats"]);
    send(
        &mut sim,
        bob,
        3,
        json!({"text": "now?", "chatId": "one-too-many"}),
    );
    sim.settle();
    assert_eq!(names(&sim.events(ana)), ["chat:new-message"]);
    // Each socket has its own count.
    let ana2 = tab(&mut sim, 1, "ana");
    event(&mut sim, ana2, 1, "chat:join", json!({"chatId": "c1"}));
    assert_eq!(sim.take(ana2), [r#"431[{"chatId":"c1"}]"#]);
}

/// The issue's polling case: one POST carrying thousands of joins (and an
/// event of every other kind) is handled in one input, the budget letting
/// its first events through and the chat limit holding the joins, and
/// the session goes on.
#[test]
fn one_polling_post_of_thousands_of_events_is_held_by_both_limits() {
    use crate::chat::{DEFAULT_MAX_CHATS, RateLimit};
    use crate::stats::{EventName, RefusalCode};
    let mut sim = Sim::new();
    let q = polling_chat_client(&mut sim);
    let n = 5000;
    let mut body = Vec::new();
    for i in 0..n {
        if i > 0 {
            body.push(0x1e);
        }
        let packet = match i % 3 {
            0 | 1 => format!(r#"42["chat:join",{{"chatId":"c{i}"}}]"#),
            _ => r#"42["chat:typing",{"isTyping":true}]"#.to_owned(),
        };
        body.extend_from_slice(packet.as_bytes());
    }
    sim.http(3, Method::Post, &q, &body);
    assert_eq!(&sim.responses[&3].body[..], b"ok");
    let s = sim.node.stats();
    let budget = RateLimit::EVENTS.burst as u64;
    let refused = |e| s.refusals(e, RefusalCode::RateLimited);
    assert_eq!(
        refused(EventName::Join) + refused(EventName::Typing),
        n - budget
    );
    // Of the joins in the budget, those past 99 more chats were refused.
    let joins_admitted = (0..budget).filter(|i| i % 3 != 2).count() as u64;
    let too_many = joins_admitted - (DEFAULT_MAX_CHATS as u64 - 1);
    assert_eq!(
        s.refusals(EventName::Join, RefusalCode::TooManyChats),
        too_many
    );
    // The session is open: the CONNECT reply and an `error` per refusal
    // drain, at most 16 packets a poll, and then a poll waits.
    let expected = 1 + (n - budget) + too_many;
    let (mut req, mut packets) = (10, 0);
    while packets < expected {
        sim.http(req, Method::Get, &q, b"");
        let body = &sim.responses[&req].body;
        let got = body.split(|&b| b == 0x1e).count() as u64;
        assert!(got <= 16);
        packets += got;
        req += 1;
    }
    assert_eq!(packets, expected);
    sim.http(req, Method::Get, &q, b"");
    assert!(!sim.responses.contains_key(&req), "nothing more");
}

#[test]
fn a_step_of_the_hosts_wall_clock_reaches_timestamps_and_token_checks_at_once() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let token = sim.token(uid(2), "bob");
    let ack_timestamp = |sim: &mut Sim| -> i64 {
        let ev = sim.events(ana);
        let (_, ack) = ev.iter().find(|(n, _)| n == "chat:ack").expect("an ack");
        ack["timestamp"].as_i64().unwrap()
    };
    // The host's clock jumps two hours ahead while its monotonic time
    // barely moves (a suspended VM, a corrected clock).
    let jumped = sim.unix_ms() + 2 * 3_600_000;
    sim.node.set_wall_clock(sim.now, jumped);
    sim.advance(Duration::from_millis(5));
    send(&mut sim, ana, 1, json!({"text": "after the jump"}));
    sim.settle();
    assert_eq!(ack_timestamp(&mut sim), jumped + 5);
    // A token issued before the jump, valid an hour: expired by the clock.
    let c = sim.connect(Some(&token));
    assert_eq!(sim.take(c)[1], r#"44{"message":"Token expired"}"#);
    // The clock steps back an hour: a message's timestamp does not.
    sim.node.set_wall_clock(sim.now, jumped - 3_600_000);
    send(&mut sim, ana, 2, json!({"text": "after the step back"}));
    sim.settle();
    assert_eq!(ack_timestamp(&mut sim), jumped + 5);
}

#[test]
fn connect_needs_a_valid_token() {
    let mut sim = Sim::new();
    let c = sim.connect(None);
    assert_eq!(sim.take(c)[1], r#"44{"message":"Unauthorized"}"#);
    let c = sim.connect(Some("not-a-token"));
    assert_eq!(sim.take(c)[1], r#"44{"message":"Unauthorized"}"#);
    let token = sim.token(uid(1), "ana");
    sim.advance(Duration::from_secs(3601));
    let c = sim.connect(Some(&token));
    assert_eq!(sim.take(c)[1], r#"44{"message":"Token expired"}"#);
}

#[test]
fn typing_read_join_and_leave() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    sim.send(
        ana,
        r#"425["chat:typing",{"isTyping":true,"userId":"x","author":"mallory"}]"#,
    );
    let typing =
        json!({"userId": uid(1).to_hex(), "author": "ana", "chatId": "general", "isTyping": true});
    assert_eq!(
        sim.events(bob),
        vec![("chat:typing".to_owned(), typing.clone())]
    );
    assert_eq!(sim.take(ana), vec![format!("435[{typing}]")]);

    sim.send(bob, r#"421["chat:join",{"chatId":"side"}]"#);
    assert_eq!(sim.take(bob), vec![r#"431[{"chatId":"side"}]"#.to_owned()]);
    send(&mut sim, ana, 2, json!({"text": "psst", "chatId": "side"}));
    sim.settle();
    let ev = sim.events(bob);
    assert_eq!(names(&ev), ["chat:new-message"]);
    let id = ev[0].1["id"].as_str().unwrap().to_owned();
    sim.take(ana);
    sim.send(
        bob,
        &format!(r#"423["chat:read",{{"messageIds":["{id}"]}}]"#),
    );
    sim.settle();
    let read = json!({"messageIds": [id], "userId": uid(2).to_hex()});
    assert_eq!(sim.take(bob), vec![format!("433[{read}]")]);
    // ana is not in "side": she gets no receipt for it.
    assert!(sim.events(ana).is_empty());
    assert_eq!(sim.store.chat("side")[0].status, crate::model::Status::Read);

    sim.send(bob, r#"424["chat:leave",{"chatId":"side"}]"#);
    sim.take(bob);
    sim.send(ana, r#"426["chat:join",{"chatId":"side"}]"#);
    sim.take(ana);
    send(&mut sim, ana, 7, json!({"text": "gone?", "chatId": "side"}));
    sim.settle();
    assert!(sim.events(bob).is_empty());
}

#[test]
fn a_client_vanishing_with_a_store_operation_in_flight() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    send(&mut sim, ana, 1, json!({"text": "bye"}));
    sim.drop_client(ana);
    sim.settle();
    // Durable, so still delivered to the others.
    assert_eq!(names(&sim.events(bob)), ["chat:new-message"]);
    assert_eq!(sim.store.chat("general").len(), 1);
}

#[test]
fn heartbeat_timeout_closes_a_silent_client() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    sim.advance(Duration::from_millis(25_000));
    assert_eq!(sim.take(ana), vec!["2".to_owned()]);
    sim.advance(Duration::from_millis(19_999));
    assert!(!sim.clients[&ana].closed);
    sim.advance(Duration::from_millis(1));
    assert!(sim.clients[&ana].closed);
}

/// A polling handshake as request `req`; the OPEN packet's JSON.
/// A polling client of user 1 ("ana") that sent its CONNECT (requests 1
/// and 2); returns its query string with `sid`.
fn polling_chat_client(sim: &mut Sim) -> String {
    let sid = polling_open(sim, 1)["sid"].as_str().unwrap().to_owned();
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let token = sim.token(uid(1), "ana");
    sim.http(
        2,
        Method::Post,
        &q,
        format!(r#"40{{"token":"{token}"}}"#).as_bytes(),
    );
    q
}

fn polling_open(sim: &mut Sim, req: u64) -> Value {
    sim.http(req, Method::Get, "EIO=4&transport=polling", b"");
    let open = String::from_utf8(sim.responses[&req].body.to_vec()).unwrap();
    serde_json::from_str(&open[1..]).unwrap()
}

/// Opens `n` polling sessions; the distinct sids they got.
fn open_sessions(sim: &mut Sim, n: u64) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|req| polling_open(sim, req)["sid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn polling_handshake_and_upgrade() {
    let mut sim = Sim::new();
    let v = polling_open(&mut sim, 1);
    let sid = v["sid"].as_str().unwrap().to_owned();
    assert_eq!(v["upgrades"], json!(["websocket"]));
    let q = format!("EIO=4&transport=polling&sid={sid}");
    sim.http(2, Method::Get, &q, b"");
    assert!(!sim.responses.contains_key(&2), "the GET is parked");
    sim.input(crate::node::Input::WsOpen {
        conn: crate::node::ConnId(50),
        query: &q.replace("transport=polling", "transport=websocket"),
        authorization: None,
    });
    sim.send(50, "2probe");
    assert_eq!(sim.take(50), vec!["3probe".to_owned()]);
    assert_eq!(&sim.responses[&2].body[..], b"6");
    sim.send(50, "5");
    sim.http(3, Method::Get, &q, b"");
    assert_eq!(sim.responses[&3].status, 400);
    sim.send(50, "40");
    assert_eq!(
        sim.take(50),
        vec![r#"44{"message":"Unauthorized"}"#.to_owned()]
    );
}

/// A probe that never sends `5`: a poll during the upgrade is answered with
/// a noop after 100 ms, not at once (no busy loop for a client that polls
/// again straight away); pings still reach the poller; after the upgrade
/// timeout the probe is closed and polling goes on, with pings, as before.
#[test]
fn an_upgrade_that_never_completes_times_out_and_polling_goes_on() {
    let ms = Duration::from_millis;
    let mut sim = Sim::new();
    let start = sim.now;
    let q = polling_chat_client(&mut sim);
    // Polls as a client does: a new GET as soon as the last is answered;
    // what the answered ones carried, until `until` (from the start).
    let mut req = 100;
    sim.http(req, Method::Get, &q, b"");
    let mut poll_until = |sim: &mut Sim, until: Duration| {
        let mut bodies = Vec::new();
        while sim.now < start + until {
            sim.advance(ms(5));
            if let Some(r) = sim.responses.remove(&req) {
                bodies.push(String::from_utf8(r.body.to_vec()).unwrap());
                req += 1;
                sim.http(req, Method::Get, &q, b"");
            }
        }
        bodies
    };
    let connected = poll_until(&mut sim, ms(20_000));
    assert!(
        connected.len() == 1 && connected[0].starts_with("40"),
        "{connected:?}"
    );
    sim.input(crate::node::Input::WsOpen {
        conn: crate::node::ConnId(50),
        query: &q.replace("transport=polling", "transport=websocket"),
        authorization: None,
    });
    sim.send(50, "2probe");
    assert_eq!(sim.take(50), vec!["3probe".to_owned()]);
    // The waiting poll is let go at once, so that the client can pause.
    let first = poll_until(&mut sim, ms(20_005));
    assert_eq!(first, ["6"]);
    // From then on at most one noop each 100 ms, and the ping due at 25 s
    // reaches the poller.
    let during = poll_until(&mut sim, ms(29_990));
    let noops = during.iter().filter(|b| *b == "6").count();
    assert!((40..=100).contains(&noops), "{noops} noops in 10 s");
    assert!(
        during.iter().any(|b| b == "2"),
        "no ping during the upgrade"
    );
    sim.http(3, Method::Post, &q, b"3");
    assert!(!sim.clients[&50].closed);
    // At 30 s the probe has had its 10 s: closed; polling carries on,
    // quietly (a poll waits), with the heartbeat.
    let after = poll_until(&mut sim, ms(54_000));
    assert!(
        sim.clients[&50].closed,
        "the probe is closed after the upgrade timeout"
    );
    assert_eq!(
        after,
        Vec::<String>::new(),
        "a poll waits again, for the next ping"
    );
    let later = poll_until(&mut sim, ms(60_000));
    assert_eq!(later, ["2"], "the heartbeat goes on: the session lives");
}

#[test]
fn binary_attachments_reassemble_and_bad_ones_close() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    // An attachment with no packet announcing it breaks the protocol.
    sim.send_binary(ana, &[1, 2, 3]);
    assert!(sim.clients[&ana].closed);
    let bob = tab(&mut sim, 2, "bob");
    sim.send(bob, r#"451-["chat:typing",{"_placeholder":true,"num":0}]"#);
    assert!(!sim.clients[&bob].closed);
    sim.send_binary(bob, &[9]);
    // Reassembled into an event whose payload is not an object: refused, connection open.
    let ev = sim.events(bob);
    assert_eq!(ev[0].1["code"], "invalid");
    assert!(!sim.clients[&bob].closed);
}

// Seeded scenarios: each runs many seeds; a failure prints the seed, and
// `SIM_SEED=<n> cargo test -p chatwire-protocol sim_` replays it exactly.

use crate::testing::{Chaos, ChaosStep, Release, SendKind, SimRng, Weights, for_each_seed};

#[test]
fn sim_seeded_chaos_keeps_every_promise() {
    for_each_seed("sim_seeded_chaos_keeps_every_promise", 48, |seed| {
        let c = Chaos::run_seed(seed, 300, &Weights::default());
        assert!(c.stats.acks > 0, "seed {seed} acked nothing: {:?}", c.stats);
    });
}

#[test]
fn sim_retry_racing_the_first_send_under_random_store_orderings() {
    for_each_seed("sim_retry_racing_the_first_send", 64, |seed| {
        let mut rng = SimRng::new(seed);
        let mut c = Chaos::new();
        // Two tabs of user 0 (who retry) and one of user 1 (who watches).
        for user in [0, 0, 1] {
            c.step(ChaosStep::Connect { user });
        }
        for _ in 0..40 {
            let step = match rng.below(6) {
                0..=2 => ChaosStep::Send {
                    tab: rng.below(2),
                    kind: SendKind::Valid,
                    chat: 0,
                    temp: Some(rng.below(2) as u8),
                    ack: true,
                },
                3 => ChaosStep::Release(Release::Pick(rng.below(8))),
                4 => ChaosStep::Release(Release::Fail(rng.below(8))),
                _ => ChaosStep::Release(Release::Duplicate(rng.below(8))),
            };
            c.step(step);
        }
        c.finish();
        // However the replies were ordered, each tempId was stored at most once.
        assert!(c.sim.store.appends <= 2, "{} appends", c.sim.store.appends);
    });
}

#[test]
fn sim_rate_limit_across_time() {
    let weights = Weights {
        connect: 1,
        send: 10,
        burst: 4,
        wait: 6,
        release: 10,
        typing: 0,
        rooms: 0,
        read: 0,
        jump: 0,
        drop: 0,
    };
    // The bucket model inside `Chaos` checks every refusal against the clock.
    for_each_seed("sim_rate_limit_across_time", 24, |seed| {
        let mut rng = SimRng::new(seed);
        let mut c = Chaos::new();
        c.step(ChaosStep::Connect { user: 0 });
        c.step(ChaosStep::Connect { user: 0 });
        for _ in 0..120 {
            c.step(ChaosStep::random(&mut rng, &weights));
        }
        c.finish();
    });
    // One fixed run that surely empties the bucket two tabs share.
    let mut c = Chaos::new();
    c.step(ChaosStep::Connect { user: 0 });
    c.step(ChaosStep::Connect { user: 0 });
    c.step(ChaosStep::Burst { tab: 0, n: 30 });
    c.step(ChaosStep::Burst { tab: 1, n: 15 });
    assert_eq!(c.stats.rate_limited, 5);
    c.step(ChaosStep::Wait { ms: 100 });
    c.step(ChaosStep::Burst { tab: 1, n: 3 });
    assert_eq!(c.stats.rate_limited, 5 + 1, "100 ms bring back two tokens");
    c.finish();
    // One tab past its event budget (200) too: its sends beyond it take
    // nothing from the user's bucket, and its other events are refused.
    let mut c = Chaos::new();
    c.step(ChaosStep::Connect { user: 0 });
    c.step(ChaosStep::Burst { tab: 0, n: 250 });
    assert_eq!(c.stats.rate_limited, 250 - 40);
    assert_eq!(c.stats.over_budget, 50);
    for step in [
        ChaosStep::Typing {
            tab: 0,
            chat: 1,
            on: true,
        },
        ChaosStep::Join { tab: 0, chat: 1 },
        ChaosStep::Read { tab: 0, pick: 0 },
    ] {
        c.step(step);
    }
    assert_eq!(c.stats.over_budget, 50 + 2, "{:?}", c.stats);
    // 100 ms: five events and two sends; the third send is the user's limit.
    c.step(ChaosStep::Wait { ms: 100 });
    c.step(ChaosStep::Burst { tab: 0, n: 3 });
    assert_eq!(c.stats.rate_limited, 250 - 40 + 1);
    c.step(ChaosStep::Join { tab: 0, chat: 1 });
    c.step(ChaosStep::Typing {
        tab: 0,
        chat: 1,
        on: true,
    });
    assert_eq!(c.stats.over_budget, 50 + 2);
    c.finish();
}

#[test]
fn sim_clients_vanish_with_store_operations_in_flight() {
    for_each_seed(
        "sim_clients_vanish_with_store_operations_in_flight",
        48,
        |seed| {
            let mut rng = SimRng::new(seed);
            let mut c = Chaos::new();
            for user in 0..3 {
                c.step(ChaosStep::Connect { user });
            }
            for _ in 0..60 {
                let step = match rng.below(8) {
                    0..=2 => ChaosStep::Send {
                        tab: rng.below(8),
                        kind: SendKind::Valid,
                        chat: 0,
                        temp: Some(rng.below(3) as u8),
                        ack: true,
                    },
                    3 => ChaosStep::Read {
                        tab: rng.below(8),
                        pick: rng.below(8),
                    },
                    4 => ChaosStep::Drop { tab: rng.below(8) },
                    5 => ChaosStep::Connect { user: rng.below(3) },
                    _ => ChaosStep::Release(Release::Pick(rng.below(8))),
                };
                c.step(step);
            }
            // `finish` releases what the vanished clients left in flight: the
            // messages are stored and reach the tabs still open, and nothing
            // reaches a closed one.
            c.finish();
        },
    );
}

/// Moves the clock by `by` in steps short of a heartbeat, every client in
/// `conns` answering its pings; returns the events each received, in order.
fn wait_answering(sim: &mut Sim, conns: &[u64], by: Duration) -> Vec<Vec<(String, Value)>> {
    let mut events = vec![Vec::new(); conns.len()];
    let mut left = by;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(5));
        sim.advance(step);
        left -= step;
        for (i, &c) in conns.iter().enumerate() {
            for f in sim.take(c) {
                if f == "2" {
                    sim.send(c, "3");
                } else if let Some(json) = f.strip_prefix("42") {
                    let v: Value = serde_json::from_str(json).unwrap();
                    events[i].push((v[0].as_str().unwrap().to_owned(), v[1].clone()));
                }
            }
        }
    }
    events
}

/// A `chat:typing` with `isTyping: true` stands for the typing timeout
/// after its last repetition; then, or as soon as the typist leaves the
/// chat or goes, the chat hears `isTyping: false`. An explicit false ends
/// it with no second false later.
#[test]
fn typing_ends_after_the_timeout_or_when_the_typist_leaves_or_goes() {
    let ms = Duration::from_millis;
    let t = crate::chat::DEFAULT_TYPING_TIMEOUT;
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    let typing = |on: bool| json!({"userId": uid(1).to_hex(), "author": "ana", "chatId": "general", "isTyping": on});
    let started = vec![("chat:typing".to_owned(), typing(true))];
    let stopped = vec![("chat:typing".to_owned(), typing(false))];
    let standing = |sim: &Sim| sim.node.upper().app().typing_indicators();

    sim.send(ana, r#"42["chat:typing",{"isTyping":true}]"#);
    assert_eq!(sim.events(bob), started);
    // Repeated before the timeout: the deadline moves.
    let ev = wait_answering(&mut sim, &[ana, bob], t / 2);
    assert!(ev.iter().all(Vec::is_empty), "{ev:?}");
    sim.send(ana, r#"42["chat:typing",{"isTyping":true}]"#);
    assert_eq!(sim.events(bob), started);
    let ev = wait_answering(&mut sim, &[ana, bob], t - ms(1));
    assert!(ev.iter().all(Vec::is_empty), "ended early: {ev:?}");
    assert_eq!(standing(&sim), 1);
    let ev = wait_answering(&mut sim, &[ana, bob], ms(1));
    assert_eq!(ev, [vec![], stopped.clone()], "the typist hears nothing");
    assert_eq!(standing(&sim), 0);

    // An explicit false ends it once.
    sim.send(ana, r#"42["chat:typing",{"isTyping":true}]"#);
    sim.send(ana, r#"42["chat:typing",{"isTyping":false}]"#);
    assert_eq!(sim.events(bob), [started.clone(), stopped.clone()].concat());
    let ev = wait_answering(&mut sim, &[ana, bob], 2 * t);
    assert!(ev.iter().all(Vec::is_empty), "{ev:?}");

    // Leaving the chat ends it at once.
    sim.send(ana, r#"42["chat:typing",{"isTyping":true}]"#);
    sim.send(ana, r#"42["chat:leave",{"chatId":"general"}]"#);
    assert_eq!(sim.events(bob), [started.clone(), stopped.clone()].concat());
    assert_eq!(standing(&sim), 0);

    // So does going away, on a second tab of ana's, while the first stays.
    sim.send(ana, r#"42["chat:join",{"chatId":"general"}]"#);
    let ana2 = tab(&mut sim, 1, "ana");
    sim.send(ana2, r#"42["chat:typing",{"isTyping":true}]"#);
    assert_eq!(sim.events(bob), started);
    assert_eq!(sim.events(ana), started, "ana's other tab hears her typing");
    sim.drop_client(ana2);
    assert_eq!(sim.events(bob), stopped);
    assert_eq!(sim.events(ana), stopped);
    assert_eq!(standing(&sim), 0);
    let ev = wait_answering(&mut sim, &[ana, bob], 2 * t);
    assert!(ev.iter().all(Vec::is_empty), "{ev:?}");
}

/// Clients show typing per user: with two of ana's tabs typing in a chat,
/// the chat hears that she stopped only once neither types there, whether
/// a tab says false, times out, goes away or leaves.
#[test]
fn typing_stops_only_when_none_of_the_users_tabs_types() {
    let t = crate::chat::DEFAULT_TYPING_TIMEOUT;
    let mut sim = Sim::new();
    let ana1 = tab(&mut sim, 1, "ana");
    let ana2 = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    let typing = |on: bool| json!({"userId": uid(1).to_hex(), "author": "ana", "chatId": "general", "isTyping": on});
    let started = vec![("chat:typing".to_owned(), typing(true))];
    let stopped = vec![("chat:typing".to_owned(), typing(false))];
    let on = r#"42["chat:typing",{"isTyping":true}]"#;
    let off = r#"42["chat:typing",{"isTyping":false}]"#;

    // A tab says false while the other types: nothing; then the other: false.
    sim.send(ana1, on);
    sim.send(ana2, on);
    assert_eq!(sim.events(bob), [started.clone(), started.clone()].concat());
    sim.send(ana1, off);
    assert_eq!(sim.events(bob), []);
    sim.send(ana2, off);
    assert_eq!(sim.events(bob), stopped);
    // ana2 heard ana1 start, so it hears that ana stopped too.
    assert_eq!(
        sim.events(ana2),
        [started.clone(), stopped.clone()].concat()
    );
    sim.take(ana1);

    // One tab times out while the other's indicator stands: nothing; then false.
    sim.send(ana1, on);
    assert_eq!(sim.events(bob), started);
    sim.take(ana2);
    let ev = wait_answering(&mut sim, &[ana1, ana2, bob], t / 2);
    assert!(ev.iter().all(Vec::is_empty), "{ev:?}");
    sim.send(ana2, on);
    sim.take(ana1);
    assert_eq!(sim.events(bob), started);
    let ev = wait_answering(&mut sim, &[ana1, ana2, bob], t / 2);
    assert_eq!(ev[2], vec![], "ana2 still types");
    let ev = wait_answering(&mut sim, &[ana1, ana2, bob], t / 2);
    assert_eq!(ev[2], stopped, "neither types");

    // One tab goes away, then the other leaves the chat.
    sim.send(ana1, on);
    sim.send(ana2, on);
    assert_eq!(sim.events(bob), [started.clone(), started.clone()].concat());
    sim.drop_client(ana1);
    assert_eq!(sim.events(bob), []);
    sim.send(ana2, r#"42["chat:leave",{"chatId":"general"}]"#);
    assert_eq!(sim.events(bob), stopped);
    assert_eq!(sim.node.upper().app().typing_indicators(), 0);
}

/// One socket types in at most `MAX_TYPING_CHATS` chats; one more ends the
/// one that would have ended first, and the typing state stays bounded.
#[test]
fn typing_in_too_many_chats_ends_the_oldest() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    let max = crate::chat::MAX_TYPING_CHATS;
    for i in 0..max {
        sim.send(bob, &format!(r#"42["chat:join",{{"chatId":"c{i}"}}]"#));
        sim.send(
            ana,
            &format!(r#"42["chat:typing",{{"chatId":"c{i}","isTyping":true}}]"#),
        );
        sim.advance(Duration::from_millis(10));
    }
    sim.send(bob, r#"42["chat:join",{"chatId":"more"}]"#);
    sim.take(bob);
    sim.send(
        ana,
        r#"42["chat:typing",{"chatId":"more","isTyping":true}]"#,
    );
    let ev = sim.events(bob);
    let said: Vec<(&str, bool)> = ev
        .iter()
        .map(|(_, v)| {
            (
                v["chatId"].as_str().unwrap(),
                v["isTyping"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(said, [("more", true), ("c0", false)]);
    assert_eq!(sim.node.upper().app().typing_indicators(), max);
}

/// Typing reaches only the chat's members, and under random joins, leaves,
/// drops and clock jumps no tab is left believing someone types who does
/// not (the check lives in `Chaos`).
#[test]
fn sim_typing_reaches_members_only_and_always_ends() {
    let stops = std::cell::Cell::new(0);
    for_each_seed("sim_typing_reaches_members_only", 32, |seed| {
        let weights = Weights {
            typing: 20,
            rooms: 20,
            send: 2,
            burst: 0,
            wait: 10,
            ..Weights::default()
        };
        let c = Chaos::run_seed(seed, 300, &weights);
        stops.set(stops.get() + c.stats.typing_stops);
    });
    assert!(stops.get() > 0, "no run heard anyone stop typing");
}

/// Found by the `node_session` fuzz target: 17 polling handshakes hung the
/// simulation, because `CounterIds` then repeated its session ids after 16
/// and the engine drew until one was free. Seeded ids open as many as asked;
/// so do the counter's now (`sim_sessions_never_hang_on_a_poor_generator`).
#[test]
fn sim_many_sessions_with_seeded_ids() {
    let mut sim = Sim::with_ids(crate::ids::SeededIds::new([3; 32]));
    assert_eq!(open_sessions(&mut sim, 40).len(), 40);
    assert_eq!(sim.node.engine().session_count(), 40);
}

/// A generator that always gives the same bytes cannot hang the engine: it
/// gives up redrawing and still opens sessions with distinct ids.
#[test]
fn sim_sessions_never_hang_on_a_poor_generator() {
    struct Stuck;
    impl crate::ids::IdGenerator for Stuck {
        fn fill(&mut self, buf: &mut [u8]) {
            buf.fill(7);
        }
    }
    for mut sim in [Sim::with_ids(Stuck), Sim::new()] {
        assert_eq!(open_sessions(&mut sim, 80).len(), 80);
    }
}

mod stats {
    use super::*;
    use crate::ConnId;
    use crate::eio::{CloseReason, Transport};
    use crate::node::Input;
    use crate::stats::{AuthFailure, ConnectRefusal, EioRefusal, EventName, Notice, RefusalCode};

    #[test]
    fn counters_move_with_the_traffic() {
        let mut sim = Sim::new();
        let ana = tab(&mut sim, 1, "ana");
        let bob = tab(&mut sim, 2, "bob");
        let carol = tab(&mut sim, 3, "carol");
        let s = sim.node.stats().clone();
        assert_eq!(s.handshakes(Transport::WebSocket), 3);
        assert_eq!(s.open(Transport::WebSocket), 3);
        assert_eq!(s.connects, 3);

        send(&mut sim, ana, 1, json!({"text": "hi"}));
        sim.settle();
        send(&mut sim, ana, 2, json!({"text": ""}));
        sim.send(bob, r#"42["chat:typing",{"isTyping":true}]"#);
        sim.send(bob, r#"42["507f1f77bcf86cd799439011",1]"#);
        let s = sim.node.stats().clone();
        assert_eq!(s.events_in(EventName::Send), 2);
        assert_eq!(s.events_in(EventName::Typing), 1);
        assert_eq!(
            s.events_in(EventName::Other),
            1,
            "an unknown name is `other`"
        );
        assert_eq!(s.events_out(EventName::Ack), 1);
        // ana's message went to bob and carol; bob's typing to ana and carol.
        assert_eq!(s.events_out(EventName::NewMessage), 2);
        assert_eq!(s.events_out(EventName::Typing), 2);
        assert_eq!(s.events_out(EventName::Delivered), 1);
        assert_eq!(s.events_out(EventName::Error), 1);
        assert_eq!(s.deliveries, 4, "two broadcasts to two sockets each");
        assert_eq!(s.refusals(EventName::Send, RefusalCode::Invalid), 1);
        assert_eq!(s.refusals(EventName::Send, RefusalCode::RateLimited), 0);

        sim.drop_client(carol);
        sim.input(Input::WsTooSlow(ConnId(bob)));
        let s = sim.node.stats().clone();
        assert_eq!(s.disconnects(CloseReason::TransportClose), 1);
        assert_eq!(s.disconnects(CloseReason::Backlog), 1);
        assert_eq!(s.open(Transport::WebSocket), 1);
        sim.input(Input::Shutdown);
        let s = sim.node.stats().clone();
        assert_eq!(s.disconnects(CloseReason::ServerClose), 1);
        assert_eq!(s.open(Transport::WebSocket), 0);
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let mut sim = Sim::new();
        let c = sim.connect(None);
        sim.take(c);
        let c = sim.connect(Some("not-a-token"));
        sim.take(c);
        let token = sim.token(uid(1), "ana");
        sim.advance(Duration::from_secs(3601));
        let c = sim.connect(Some(&token));
        sim.take(c);
        sim.send(c, "40/nowhere,");
        sim.http(1, Method::Get, "EIO=3&transport=polling", b"");
        sim.http(2, Method::Post, "EIO=4&transport=polling", b"");
        sim.http(3, Method::Get, "EIO=4&transport=polling&sid=nope", b"");
        let s = sim.node.stats();
        assert_eq!(s.connect_errors(ConnectRefusal::Unauthorized), 3);
        assert_eq!(s.connect_errors(ConnectRefusal::InvalidNamespace), 1);
        assert_eq!(s.auth_failures(AuthFailure::MissingToken), 1);
        assert_eq!(s.auth_failures(AuthFailure::InvalidToken), 1);
        assert_eq!(s.auth_failures(AuthFailure::ExpiredToken), 1);
        assert_eq!(s.connects, 0);
        assert_eq!(s.eio_refusals(EioRefusal::UnsupportedProtocolVersion), 1);
        assert_eq!(s.eio_refusals(EioRefusal::BadHandshakeMethod), 1);
        assert_eq!(s.eio_refusals(EioRefusal::SessionIdUnknown), 1);
        assert_eq!(s.handshakes(Transport::Polling), 0);
    }

    #[test]
    fn a_polling_session_upgrades_and_is_counted_on_its_new_transport() {
        let mut sim = Sim::new();
        sim.http(1, Method::Get, "EIO=4&transport=polling", b"");
        let open = String::from_utf8(sim.responses[&1].body.to_vec()).unwrap();
        let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(sim.node.stats().open(Transport::Polling), 1);
        sim.input(Input::WsOpen {
            conn: ConnId(50),
            query: &format!("EIO=4&transport=websocket&sid={sid}"),
            authorization: None,
        });
        sim.send(50, "2probe");
        sim.send(50, "5");
        let s = sim.node.stats();
        assert_eq!(s.upgrades, 1);
        assert_eq!(s.open(Transport::Polling), 0);
        assert_eq!(s.open(Transport::WebSocket), 1);
        assert_eq!(s.handshakes(Transport::Polling), 1);
        assert_eq!(s.handshakes(Transport::WebSocket), 0);
    }

    #[test]
    fn notices_only_when_asked_and_never_with_a_token() {
        let mut sim = Sim::new();
        tab(&mut sim, 1, "ana");
        assert!(sim.notices.is_empty(), "off by default");
        sim.node.set_notices(true);
        let token = sim.token(uid(2), "bob");
        let bob = tab(&mut sim, 2, "bob");
        send(&mut sim, bob, 1, json!({"text": ""}));
        sim.connect(Some("not-a-token"));
        sim.drop_client(bob);
        let kinds: Vec<&str> = sim
            .notices
            .iter()
            .map(|n| match n {
                Notice::Opened { .. } => "opened",
                Notice::Connected { .. } => "connected",
                Notice::Event { name, .. } => name.as_str(),
                Notice::EventRefused { code, .. } => code.as_str(),
                Notice::AuthFailed { why, .. } => why.as_str(),
                Notice::ConnectRefused { reason, .. } => reason.as_str(),
                Notice::Closed { reason, .. } => crate::stats::close_label(*reason),
                _ => "else",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "opened",
                "connected",
                "chat:send",
                "invalid",
                "opened",
                "invalid_token",
                "unauthorized",
                "transport_close"
            ]
        );
        let all = format!("{:?}", sim.notices);
        assert!(!all.contains(&token) && !all.contains("not-a-token") && !all.contains("bob"));
    }
}

/// Draining on shutdown: what is under way finishes and is answered, new
/// work is refused, then every session closes cleanly.
mod shutdown {
    use std::collections::HashMap;

    use super::*;
    use crate::node::{ConnId, Input};
    use crate::stats::{EioRefusal, EventName, RefusalCode};
    use crate::testing::{SimRng, for_each_seed};
    use crate::ws::GOING_AWAY;

    const REFUSED: &str = "The server is shutting down; send it again after reconnecting";

    /// A polling client driven by hand.
    struct Poller {
        q: String,
        /// Its GET waiting for an answer.
        parked: Option<u64>,
        /// Every packet its polls received, in order.
        packets: Vec<String>,
        /// A poll was refused: the session is gone.
        gone: bool,
    }

    fn records(body: &[u8]) -> Vec<String> {
        std::str::from_utf8(body)
            .unwrap()
            .split('\u{1e}')
            .map(str::to_owned)
            .collect()
    }

    /// Opens a polling session (request numbers from `*req` on) and joins
    /// namespace `/` as `user`.
    fn poller(sim: &mut Sim, req: &mut u64, user: u8, name: &str) -> Poller {
        *req += 1;
        let open = polling_open(sim, *req);
        let mut p = Poller {
            q: format!(
                "EIO=4&transport=polling&sid={}",
                open["sid"].as_str().unwrap()
            ),
            parked: None,
            packets: Vec::new(),
            gone: false,
        };
        let token = sim.token(uid(user), name);
        assert_eq!(
            p.post(sim, req, &format!("40{}", json!({"token": token}))),
            200
        );
        p.poll(sim, req);
        assert!(p.packets[0].starts_with("40{\"sid\":"), "{:?}", p.packets);
        p.packets.clear();
        p
    }

    impl Poller {
        /// POSTs a payload; the answer's status.
        fn post(&mut self, sim: &mut Sim, req: &mut u64, payload: &str) -> u16 {
            *req += 1;
            sim.http(*req, Method::Post, &self.q, payload.as_bytes());
            sim.responses.remove(req).unwrap().status
        }

        /// Sends a GET, unless one waits already or the session is gone.
        fn poll(&mut self, sim: &mut Sim, req: &mut u64) {
            if self.parked.is_none() && !self.gone {
                *req += 1;
                sim.http(*req, Method::Get, &self.q, b"");
                self.parked = Some(*req);
            }
            self.collect(sim);
        }

        /// Takes the answer to its GET, if it came.
        fn collect(&mut self, sim: &mut Sim) {
            let Some(resp) = self.parked.and_then(|r| sim.responses.remove(&r)) else {
                return;
            };
            self.parked = None;
            if resp.status != 200 {
                self.gone = true;
                return;
            }
            assert!(!self.closed(), "a poll after the close packet answered");
            self.packets.extend(records(&resp.body));
        }

        /// Whether its last packet was the close packet.
        fn closed(&self) -> bool {
            self.packets.last().is_some_and(|p| p == "1")
        }
    }

    #[test]
    fn a_send_under_way_is_answered_new_work_refused_then_websockets_close_with_1001() {
        let mut sim = Sim::new();
        let ana = tab(&mut sim, 1, "ana");
        let bob = tab(&mut sim, 2, "bob");
        send(
            &mut sim,
            ana,
            1,
            json!({"text": "under way", "tempId": "t1"}),
        );
        sim.input(Input::Shutdown);
        assert!(sim.node.is_draining() && !sim.node.is_drained());
        assert!(
            !sim.clients[&ana].closed,
            "open while its send is under way"
        );

        // New work is refused, the tempId named, and nothing starts.
        send(&mut sim, ana, 2, json!({"text": "new", "tempId": "t2"}));
        let error = json!({"message": REFUSED, "code": "shutting_down"});
        let mut with_temp = error.clone();
        with_temp["tempId"] = json!("t2");
        assert_eq!(
            sim.take(ana),
            [
                format!("42{}", json!(["error", with_temp])),
                format!("432{}", json!([{"error": error}])),
            ]
        );
        let read = json!(["chat:read", {"messageIds": [uid(9).to_hex()]}]);
        sim.send(bob, &format!("423{read}"));
        assert_eq!(
            sim.take(bob)[1],
            format!("433{}", json!([{"error": error}]))
        );
        // A retry of the send under way starts nothing and waits for its outcome.
        send(
            &mut sim,
            ana,
            4,
            json!({"text": "under way", "tempId": "t1"}),
        );
        assert_eq!(sim.in_flight.len(), 1);
        // No new session: a WebSocket goes away at once, a handshake gets 503.
        sim.input(Input::WsOpen {
            conn: ConnId(99),
            query: "EIO=4&transport=websocket",
            authorization: None,
        });
        assert_eq!(sim.clients[&99].close_code, Some(GOING_AWAY));
        assert!(sim.clients[&99].inbox.is_empty());
        sim.http(500, Method::Get, "EIO=4&transport=polling", b"");
        assert_eq!(sim.responses[&500].status, 503);
        assert_eq!(
            &sim.responses[&500].body[..],
            br#"{"code":4,"message":"Server shutting down"}"#
        );

        // The append lands: the sender and its retry are acked, the chat
        // hears it; the delivered mark it caused is under way in its turn.
        assert!(sim.complete_oldest());
        let to_ana = sim.take(ana);
        assert!(
            to_ana[0].starts_with(r#"42["chat:ack",{"tempId":"t1""#),
            "{to_ana:?}"
        );
        assert!(to_ana[1].starts_with(r#"431[{"tempId":"t1""#), "{to_ana:?}");
        assert!(to_ana[3].starts_with(r#"434[{"tempId":"t1""#), "{to_ana:?}");
        assert_eq!(names(&sim.events(bob)), ["chat:new-message"]);
        assert!(!sim.clients[&ana].closed && !sim.node.is_drained());
        sim.settle();
        for c in [ana, bob] {
            assert_eq!(sim.clients[&c].close_code, Some(GOING_AWAY));
            assert!(sim.take(c).is_empty());
        }
        assert!(sim.node.is_drained());
        assert_eq!(sim.store.appends, 1);
        // Again: nothing changes.
        sim.input(Input::Shutdown);
        assert!(sim.node.is_drained());

        let s = sim.node.stats();
        assert_eq!(s.refusals(EventName::Send, RefusalCode::ShuttingDown), 1);
        assert_eq!(s.refusals(EventName::Read, RefusalCode::ShuttingDown), 1);
        assert_eq!(s.eio_refusals(EioRefusal::ShuttingDown), 2);
        assert_eq!(s.disconnects(crate::eio::CloseReason::ServerClose), 2);
    }

    #[test]
    fn with_nothing_under_way_every_session_closes_at_once() {
        let mut sim = Sim::new();
        let ana = tab(&mut sim, 1, "ana");
        let mut req = 0;
        let mut bob = poller(&mut sim, &mut req, 2, "bob");
        bob.poll(&mut sim, &mut req);
        sim.input(Input::Shutdown);
        assert_eq!(sim.clients[&ana].close_code, Some(GOING_AWAY));
        bob.collect(&mut sim);
        assert_eq!(bob.packets, ["1"], "the waiting poll gets the close packet");
        assert!(sim.node.is_drained());
        bob.poll(&mut sim, &mut req);
        assert!(bob.gone);
    }

    #[test]
    fn a_polling_session_gets_what_is_buffered_then_the_close_packet() {
        let mut sim = Sim::new();
        let mut req = 0;
        let mut ana = poller(&mut sim, &mut req, 1, "ana");
        let mut carol = poller(&mut sim, &mut req, 3, "carol");
        let bob = tab(&mut sim, 2, "bob");
        let join = format!("42{}", json!(["chat:join", {"chatId": "side"}]));
        assert_eq!(carol.post(&mut sim, &mut req, &join), 200);
        // Twenty messages wait in carol's buffer: she does not poll.
        for i in 0..20 {
            send(
                &mut sim,
                bob,
                10 + i,
                json!({"text": format!("b{i}"), "chatId": "side"}),
            );
        }
        sim.settle();
        sim.take(bob);
        // ana's send is under way, her poll waits.
        let mine = json!(["chat:send", {"text": "mine", "tempId": "a1", "chatId": "solo"}]);
        assert_eq!(ana.post(&mut sim, &mut req, &format!("421{mine}")), 200);
        ana.poll(&mut sim, &mut req);
        assert!(ana.packets.is_empty());

        sim.input(Input::Shutdown);
        let late = json!(["chat:send", {"text": "late", "tempId": "c1"}]);
        assert_eq!(carol.post(&mut sim, &mut req, &format!("42{late}")), 200);
        assert!(!bob_closed(&sim, bob));
        assert!(sim.complete_oldest());
        // ana's ack, then the close packet, in the answer to the waiting poll.
        ana.collect(&mut sim);
        assert_eq!(ana.packets.len(), 3, "{:?}", ana.packets);
        assert!(ana.packets[0].starts_with(r#"42["chat:ack",{"tempId":"a1""#));
        assert!(ana.packets[1].starts_with(r#"431[{"tempId":"a1""#));
        assert!(ana.closed());
        assert!(bob_closed(&sim, bob));
        // carol: the twenty, the refusal of her late send, the close packet,
        // at most sixteen a poll; what she posts now is not read.
        carol.poll(&mut sim, &mut req);
        assert_eq!(carol.packets.len(), 16);
        let again = json!(["chat:send", {"text": "after close", "tempId": "c2"}]);
        assert_eq!(carol.post(&mut sim, &mut req, &format!("42{again}")), 200);
        assert!(sim.in_flight.is_empty());
        assert!(!sim.node.is_drained(), "carol's last packets wait for her");
        carol.poll(&mut sim, &mut req);
        assert_eq!(carol.packets.len(), 22);
        assert!(carol.packets[20].starts_with(r#"42["error""#) && carol.packets[20].contains("c1"));
        assert!(carol.closed());
        assert!(sim.node.is_drained());
        for p in [&mut ana, &mut carol] {
            p.poll(&mut sim, &mut req);
            assert!(p.gone, "the session is gone once its close packet went out");
        }
        let texts: Vec<String> = sim.store.messages().map(|m| m.text.clone()).collect();
        assert_eq!(texts.len(), 21);
        assert!(texts.contains(&"mine".to_owned()) && !texts.contains(&"late".to_owned()));
    }

    fn bob_closed(sim: &Sim, conn: u64) -> bool {
        sim.clients[&conn].close_code == Some(GOING_AWAY)
    }

    #[test]
    fn a_polling_client_that_never_polls_again_is_dropped_after_the_ping_timeout() {
        let mut sim = Sim::new();
        let mut req = 0;
        let _ana = poller(&mut sim, &mut req, 1, "ana");
        sim.input(Input::Shutdown);
        assert!(!sim.node.is_drained());
        sim.advance(Duration::from_millis(20_000));
        assert!(sim.node.is_drained());
    }

    #[test]
    fn sim_shutdown_answers_every_send_under_way_under_random_orderings() {
        // How often each outcome came up over the seeds: acked though under
        // way when the shutdown came, refused as shutting down, unanswered
        // (sent after the close).
        let seen = std::cell::RefCell::new([0usize; 3]);
        for_each_seed("sim_shutdown_answers_every_send", 64, |seed| {
            let mut rng = SimRng::new(seed);
            let mut sim = Sim::new();
            let mut req = 0u64;
            // Tabs 0..3 on WebSocket, 3..6 polling; each its own user.
            let ws: Vec<u64> = (0..3u8)
                .map(|i| tab(&mut sim, i + 1, &format!("w{i}")))
                .collect();
            let mut polls: Vec<Poller> = (0..3u8)
                .map(|i| poller(&mut sim, &mut req, i + 11, &format!("p{i}")))
                .collect();
            // (tab, ack id, text, sent after the shutdown, its WebSocket closed then)
            let mut sent: Vec<(usize, u64, String, bool, bool)> = Vec::new();
            let shutdown_at = 5 + rng.below(40);
            let mut draining = false;
            let mut under_way: Vec<String> = Vec::new();
            let release = |sim: &mut Sim, rng: &mut SimRng| {
                let i = rng.below(sim.in_flight.len());
                if rng.below(5) == 0 {
                    sim.fail_at(i)
                } else {
                    sim.complete_at(i)
                }
            };
            for step in 0..90 {
                if step == shutdown_at {
                    for (_, c) in &sim.in_flight {
                        if let crate::store::StoreCommand::AppendMessage(m) = c {
                            under_way.push(m.message.text.clone());
                        }
                    }
                    sim.input(Input::Shutdown);
                    draining = true;
                }
                match rng.below(7) {
                    0..=2 => {
                        let t = rng.below(6);
                        let ack = sent.len() as u64 + 1;
                        let text = format!("m{ack}");
                        let chat = ["general", "solo"][rng.below(2)];
                        let frame = format!(
                            "42{ack}{}",
                            json!(["chat:send", {"text": text, "tempId": text, "chatId": chat}])
                        );
                        let ws_closed = t < 3 && sim.clients[&ws[t]].closed;
                        if t < 3 {
                            sim.send(ws[t], &frame);
                        } else {
                            polls[t - 3].post(&mut sim, &mut req, &frame);
                        }
                        sent.push((t, ack, text, draining, ws_closed));
                    }
                    3 | 4 => {
                        release(&mut sim, &mut rng);
                    }
                    5 => {
                        let p = &mut polls[rng.below(3)];
                        p.poll(&mut sim, &mut req);
                    }
                    _ => sim.advance(Duration::from_millis(rng.below(300) as u64)),
                }
                for p in &mut polls {
                    p.collect(&mut sim);
                }
            }
            // The store answers the rest; the clients poll until they are told.
            while release(&mut sim, &mut rng) {}
            for _ in 0..8 {
                for p in &mut polls {
                    p.poll(&mut sim, &mut req);
                }
            }
            assert!(sim.node.is_drained(), "seed {seed}");
            for &c in &ws {
                assert_eq!(sim.clients[&c].close_code, Some(GOING_AWAY));
            }
            let mut frames: Vec<Vec<String>> = ws.iter().map(|&c| sim.take(c)).collect();
            for p in &polls {
                assert!(p.closed() && p.gone, "{:?}", p.packets);
                frames.push(p.packets.clone());
            }
            // Every answer by (tab, ack id): Ok(id) or Err(code).
            let mut answers: HashMap<(usize, u64), Vec<Result<String, String>>> = HashMap::new();
            for (t, fs) in frames.iter().enumerate() {
                for f in fs {
                    let Some(rest) = f.strip_prefix("43") else {
                        continue;
                    };
                    let at = rest.find('[').unwrap();
                    let v: Value = serde_json::from_str(&rest[at..]).unwrap();
                    let a = match v[0]["error"]["code"].as_str() {
                        Some(code) => Err(code.to_owned()),
                        None => Ok(v[0]["id"].as_str().unwrap().to_owned()),
                    };
                    answers
                        .entry((t, rest[..at].parse().unwrap()))
                        .or_default()
                        .push(a);
                }
            }
            let stored: HashMap<String, Vec<String>> =
                sim.store.messages().fold(HashMap::new(), |mut m, msg| {
                    m.entry(msg.text.clone()).or_default().push(msg.id.to_hex());
                    m
                });
            for (t, ack, text, after, ws_closed) in &sent {
                let got = answers.get(&(*t, *ack)).map_or(&[][..], Vec::as_slice);
                let here = stored.get(text).map_or(&[][..], Vec::as_slice);
                let mut seen = seen.borrow_mut();
                match got {
                    [Ok(id)] => {
                        assert_eq!(here, std::slice::from_ref(id), "seed {seed}: {text}");
                        seen[0] += usize::from(under_way.contains(text));
                    }
                    [Err(code)] => {
                        seen[1] += usize::from(code == "shutting_down");
                        assert!(here.is_empty(), "seed {seed}: {text} refused but stored");
                        assert!(
                            code == "store_unavailable" || (code == "shutting_down" && *after),
                            "seed {seed}: {text}: {code}"
                        );
                    }
                    // Unanswered: sent to a session already closed, and not stored.
                    [] => {
                        assert!(*after && here.is_empty(), "seed {seed}: {text} unanswered");
                        assert!(*t >= 3 || *ws_closed, "seed {seed}: {text} unanswered");
                        seen[2] += 1;
                    }
                    more => panic!("seed {seed}: {text} answered {more:?}"),
                }
            }
        });
        if crate::testing::seeds(64).len() == 64 {
            let seen = seen.into_inner();
            assert!(
                seen.iter().all(|&n| n > 0),
                "some outcome never came up: {seen:?}"
            );
        }
    }
}

/// A user's tab connecting with `auth` (its token added); returns the tab,
/// its CONNECT reply (`sid`, `pid`) and the events that came after it.
fn recovering_tab(sim: &mut Sim, user: u8, name: &str, auth: Value) -> (u64, Value, Vec<Value>) {
    let mut auth = auth;
    auth["token"] = json!(sim.token(uid(user), name));
    let c = sim.connect(None);
    sim.take(c);
    sim.send(c, &format!("40{auth}"));
    let inbox = sim.take(c);
    let reply = inbox[0].strip_prefix("40").expect("connected");
    let events = inbox[1..]
        .iter()
        .map(|f| serde_json::from_str(f.strip_prefix("42").expect("an event")).unwrap())
        .collect();
    (c, serde_json::from_str(reply).unwrap(), events)
}

#[test]
fn recovery_replays_the_ack_of_a_send_whose_transport_ended_before_the_store_answered() {
    let sio = crate::sio::SocketIoConfig {
        recovery: Some(crate::sio::RecoveryConfig::new(Duration::from_secs(120))),
        ..Default::default()
    };
    let mut sim = Sim::with(crate::ids::CounterIds::default(), sio);
    let (ana, first, _) = recovering_tab(&mut sim, 1, "ana", json!({}));
    let (bob, _, _) = recovering_tab(&mut sim, 2, "bob", json!({}));
    send(&mut sim, ana, 1, json!({"text": "hi", "tempId": "t1"}));
    // Ana's transport ends while the append is in flight.
    sim.drop_client(ana);
    assert!(sim.complete_oldest());
    let to_bob = sim.events(bob);
    assert_eq!(names(&to_bob), ["chat:new-message"]);
    let id = to_bob[0].1["id"].clone();

    // Back within the window: the ack and the delivery, not her own message.
    let (back, again, replayed) = recovering_tab(&mut sim, 1, "ana", json!({"pid": first["pid"]}));
    assert_eq!(again, first);
    assert_eq!(replayed.len(), 2, "{replayed:?}");
    assert_eq!(replayed[0][0], "chat:ack");
    assert_eq!(replayed[0][1]["tempId"], "t1");
    assert_eq!(replayed[0][1]["id"], id);
    assert_eq!(replayed[1][0], "chat:delivered");
    assert_eq!(replayed[1][1]["messageId"], id);
    // Offsets as last arguments, increasing.
    let offsets: Vec<u64> = replayed
        .iter()
        .map(|e| e[2].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(offsets[0] < offsets[1]);

    // And she is in `general` again.
    sim.settle();
    send(&mut sim, bob, 2, json!({"text": "welcome back"}));
    assert!(sim.complete_oldest());
    let to_ana = sim.events(back);
    assert_eq!(names(&to_ana), ["chat:new-message"]);
}

/// A send whose store write went through but whose answer was lost is
/// refused; its retry (same `tempId`) is acked with the stored message and
/// publishes it, for nothing told the chat before: an ack always means the
/// chat got the message.
#[test]
fn a_retry_after_a_lost_store_answer_publishes_the_message() {
    use crate::store::StoreError;
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    send(&mut sim, ana, 1, json!({"text": "hi", "tempId": "x1"}));
    let (op, append) = sim.in_flight.remove(0);
    sim.store.apply(append);
    sim.reply(op, StoreReply::Failed(StoreError::transient("timed out")));
    sim.settle();
    assert_eq!(error_codes(&sim.events(ana)), ["store_unavailable"]);
    assert!(sim.events(bob).is_empty());
    send(&mut sim, ana, 2, json!({"text": "hi", "tempId": "x1"}));
    sim.settle();
    let stored = sim.store.chat("general");
    assert_eq!(stored.len(), 1);
    let to_bob = sim.events(bob);
    assert_eq!(names(&to_bob), ["chat:new-message"]);
    assert_eq!(to_bob[0].1["id"], stored[0].id.to_string());
    // Sent again, though it went out: Bob does not get it twice.
    send(&mut sim, ana, 3, json!({"text": "hi", "tempId": "x1"}));
    sim.settle();
    assert!(sim.events(bob).is_empty());
    assert_eq!(
        names(&sim.events(ana)),
        ["chat:ack", "chat:delivered", "chat:ack"]
    );
}
