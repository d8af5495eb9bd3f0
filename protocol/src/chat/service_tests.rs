//! The chat service, event by event and refusal by refusal, driven through
//! the simulation (time set by the test, ids from a counter). The longer
//! scenarios (orderings of store replies, typing, limits over time,
//! draining) are in `testing/scenarios.rs`.

use serde_json::{Value, json};

use crate::testing::{Sim, event, names, tab, uid};

const CHAT_ID: &str = "chatId must be 1 to 64 characters of A-Z a-z 0-9 _ . : -";

/// Every event refuses a payload that breaks a rule: an `error` with code
/// `invalid` and the rule, the same in the ack, nothing sent to anyone
/// else and nothing asked of the store.
#[test]
fn each_event_refuses_each_kind_of_bad_payload() {
    let cases: &[(&str, Value, &str)] = &[
        ("chat:send", json!("hi"), "payload must be an object"),
        ("chat:send", json!({}), "text is required"),
        ("chat:send", json!({"text": 5}), "text must be a string"),
        (
            "chat:send",
            json!({"text": ""}),
            "text must be 1 to 4000 characters",
        ),
        (
            "chat:send",
            json!({"text": "x".repeat(4001)}),
            "text must be 1 to 4000 characters",
        ),
        (
            "chat:send",
            json!({"text": " \n"}),
            "text must not be only white space",
        ),
        (
            "chat:send",
            json!({"text": "x", "tempId": "t".repeat(65)}),
            "tempId must be a string of at most 64 characters",
        ),
        (
            "chat:send",
            json!({"text": "x", "type": ""}),
            "type must be 1 to 32 characters",
        ),
        ("chat:send", json!({"text": "x", "chatId": "a b"}), CHAT_ID),
        (
            "chat:typing",
            json!({"isTyping": "yes"}),
            "isTyping must be true or false",
        ),
        (
            "chat:typing",
            json!({"isTyping": true, "chatId": ""}),
            CHAT_ID,
        ),
        (
            "chat:read",
            json!({}),
            "messageIds must be an array of message ids",
        ),
        (
            "chat:read",
            json!({"messageIds": []}),
            "messageIds must hold 1 to 500 ids",
        ),
        (
            "chat:read",
            json!({"messageIds": ["zz"]}),
            "messageIds must be 24-character hex ids",
        ),
        ("chat:join", json!({"chatId": "x".repeat(65)}), CHAT_ID),
        ("chat:join", json!([]), "payload must be an object"),
        ("chat:leave", json!({"chatId": "a/b"}), CHAT_ID),
    ];
    for (name, payload, rule) in cases {
        let mut sim = Sim::new();
        let ana = tab(&mut sim, 1, "ana");
        let bob = tab(&mut sim, 2, "bob");
        event(&mut sim, ana, 3, name, payload.clone());
        let inbox = sim.take(ana);
        let error = json!({"message": rule, "code": "invalid"});
        assert_eq!(inbox.len(), 2, "{name} {payload}: {inbox:?}");
        let sent: Value = serde_json::from_str(&inbox[0][2..]).unwrap();
        assert_eq!(sent[0], "error", "{name} {payload}");
        assert_eq!(sent[1]["message"], error["message"], "{name} {payload}");
        assert_eq!(sent[1]["code"], "invalid", "{name} {payload}");
        assert_eq!(
            inbox[1],
            format!("433{}", json!([{ "error": error }])),
            "{name} {payload}"
        );
        assert!(sim.take(bob).is_empty(), "{name} {payload}");
        assert!(sim.in_flight.is_empty(), "{name} {payload}");
    }
}

/// Each event that needs no store answers at once: typing goes to the
/// chat's other members, a join and a leave are acknowledged.
#[test]
fn typing_join_and_leave_need_no_store() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    event(&mut sim, ana, 1, "chat:join", json!({"chatId": "side"}));
    assert_eq!(sim.take(ana), [r#"431[{"chatId":"side"}]"#]);
    event(&mut sim, bob, 1, "chat:join", json!({"chatId": "side"}));
    sim.take(bob);
    event(
        &mut sim,
        ana,
        2,
        "chat:typing",
        json!({"isTyping": true, "chatId": "side"}),
    );
    let typing =
        json!({"userId": uid(1).to_hex(), "author": "ana", "chatId": "side", "isTyping": true});
    assert_eq!(sim.events(bob), [("chat:typing".to_owned(), typing)]);
    event(&mut sim, ana, 3, "chat:leave", json!({"chatId": "side"}));
    assert_eq!(names(&sim.events(ana)), Vec::<&str>::new());
    assert!(sim.in_flight.is_empty());
}

/// A read whose store write fails is refused with `store_unavailable`, and
/// nobody hears a receipt.
#[test]
fn a_read_the_store_fails_is_refused() {
    let mut sim = Sim::new();
    let ana = tab(&mut sim, 1, "ana");
    let bob = tab(&mut sim, 2, "bob");
    let id = uid(9).to_hex();
    event(&mut sim, bob, 4, "chat:read", json!({"messageIds": [id]}));
    assert!(sim.fail_oldest());
    let inbox = sim.take(bob);
    assert!(
        inbox.last().unwrap().starts_with("434[{\"error\":"),
        "{inbox:?}"
    );
    assert!(
        inbox.last().unwrap().contains("store_unavailable"),
        "{inbox:?}"
    );
    assert!(sim.take(ana).is_empty());
}
