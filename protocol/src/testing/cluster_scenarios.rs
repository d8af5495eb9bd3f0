//! The chat's promises across a cluster, in the simulation: several nodes
//! on one fake bus (a Redis stream's semantics) and one store, deliveries
//! interleaved across nodes by seed.

use serde_json::{Value, json};

use super::chaos::{SimRng, for_each_seed};
use super::cluster::ClusterSim;
use super::harness::{names, send, tab};
use crate::chat::DEFAULT_TYPING_TIMEOUT;
use crate::sio::cluster::HANDED_WITHIN;

/// The ids of the messages broadcast on the bus, in its order.
fn bus_message_ids(c: &ClusterSim) -> Vec<String> {
    c.bus()
        .iter()
        .filter_map(|m| {
            let m: Value = serde_json::from_slice(m).ok()?;
            let text = m["text"].as_str()?;
            let event: Value = serde_json::from_str(text.strip_prefix("42")?).ok()?;
            (event[0] == "chat:new-message").then(|| event[1]["id"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The ids a tab got in `event`s (their `field`), in order.
fn ids_of(events: &[(String, Value)], event: &str, field: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(n, _)| n == event)
        .map(|(_, v)| v[field].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_socket_on_every_node_gets_a_chats_messages_once_in_one_order() {
    for_each_seed("cluster_one_order", 24, |seed| {
        let mut rng = SimRng::new(seed);
        let mut c = ClusterSim::new(3);
        // Users 1 to 3 on nodes 0 to 2, and a second tab of user 1 on node 2.
        let placing = [(0, 1), (1, 2), (2, 3), (2, 1)];
        let tabs: Vec<(usize, u64)> = placing
            .iter()
            .map(|&(node, user)| (node, tab(&mut c.nodes[node], user, &format!("u{user}"))))
            .collect();
        let mut ack = 0;
        for round in 0..6 {
            for &(node, conn) in &tabs {
                ack += 1;
                send(
                    &mut c.nodes[node],
                    conn,
                    ack,
                    json!({"text": format!("{round}")}),
                );
                // Some of the bus is read now, the rest later.
                for _ in 0..rng.below(4) {
                    let i = rng.below(3);
                    c.read(i);
                }
            }
        }
        c.settle(&mut rng);
        let order = bus_message_ids(&c);
        assert_eq!(order.len(), 24);
        for &(node, conn) in &tabs {
            let events = c.nodes[node].events(conn);
            let own = ids_of(&events, "chat:ack", "id");
            let got = ids_of(&events, "chat:new-message", "id");
            let expected: Vec<String> = order
                .iter()
                .filter(|id| !own.contains(id))
                .cloned()
                .collect();
            assert_eq!(got, expected, "tab {conn} on node {node}");
            // Each of its messages reached a socket on some node.
            let delivered = ids_of(&events, "chat:delivered", "messageId");
            assert_eq!(delivered.len(), own.len());
        }
    });
}

#[test]
fn delivered_typing_and_reads_cross_nodes_and_an_unheard_message_is_not_delivered() {
    let mut rng = SimRng::new(1);
    let mut c = ClusterSim::new(2);
    let ana = tab(&mut c.nodes[0], 1, "ana");
    let bob = tab(&mut c.nodes[1], 2, "bob");
    send(
        &mut c.nodes[0],
        ana,
        1,
        json!({"text": "hi", "tempId": "t"}),
    );
    c.settle(&mut rng);
    let to_ana = c.nodes[0].events(ana);
    assert_eq!(names(&to_ana), ["chat:ack", "chat:delivered"]);
    let to_bob = c.nodes[1].events(bob);
    assert_eq!(names(&to_bob), ["chat:new-message"]);
    let id = to_bob[0].1["id"].clone();
    // The store marked it delivered (the sender's node did, once).
    assert_eq!(
        c.store
            .message(id.as_str().unwrap().parse().unwrap())
            .unwrap()
            .status,
        crate::model::Status::Delivered
    );

    // Bob reads it and types, from the other node.
    super::harness::event(
        &mut c.nodes[1],
        bob,
        2,
        "chat:read",
        json!({"messageIds": [id]}),
    );
    c.settle(&mut rng);
    super::harness::event(
        &mut c.nodes[1],
        bob,
        3,
        "chat:typing",
        json!({"isTyping": true}),
    );
    c.settle(&mut rng);
    let to_ana = c.nodes[0].events(ana);
    assert_eq!(names(&to_ana), ["chat:read", "chat:typing"]);
    assert_eq!(to_ana[0].1["messageIds"], json!([id]));
    assert_eq!(to_ana[1].1["isTyping"], json!(true));
    // The typing indicator ends on bob's node, and the end crosses too.
    c.nodes[1].advance(DEFAULT_TYPING_TIMEOUT);
    c.settle(&mut rng);
    let to_ana = c.nodes[0].events(ana);
    assert_eq!(names(&to_ana), ["chat:typing"]);
    assert_eq!(to_ana[0].1["isTyping"], json!(false));

    // A message to a chat no other socket is in: no one says they got it.
    super::harness::event(
        &mut c.nodes[0],
        ana,
        4,
        "chat:join",
        json!({"chatId": "solo"}),
    );
    send(
        &mut c.nodes[0],
        ana,
        5,
        json!({"text": "alone", "chatId": "solo"}),
    );
    c.settle(&mut rng);
    c.nodes[0].advance(HANDED_WITHIN);
    c.settle(&mut rng);
    let to_ana = c.nodes[0].events(ana);
    assert_eq!(names(&to_ana), ["chat:ack"]);
    assert!(c.nodes[1].events(bob).is_empty());
}

#[test]
fn the_rate_limit_holds_across_nodes() {
    let mut rng = SimRng::new(2);
    let mut c = ClusterSim::new(3);
    // One user with a tab on each node, sending in turn: 40 is the burst.
    let tabs: Vec<u64> = (0..3).map(|n| tab(&mut c.nodes[n], 1, "ana")).collect();
    for k in 0..120u64 {
        let node = (k % 3) as usize;
        send(&mut c.nodes[node], tabs[node], k + 1, json!({"text": "x"}));
        c.settle(&mut rng);
    }
    let (mut acked, mut limited) = (0, 0);
    for (node, &conn) in tabs.iter().enumerate() {
        let events = c.nodes[node].events(conn);
        acked += events.iter().filter(|(n, _)| n == "chat:ack").count();
        limited += super::harness::error_codes(&events)
            .iter()
            .filter(|c| *c == "rate_limited")
            .count();
    }
    assert_eq!((acked, limited), (40, 80));
}

#[test]
fn a_node_cut_off_the_bus_catches_up_when_it_is_back_and_loses_only_what_was_trimmed() {
    let mut rng = SimRng::new(3);
    let mut c = ClusterSim::new(3);
    let ana = tab(&mut c.nodes[0], 1, "ana");
    let bob = tab(&mut c.nodes[1], 2, "bob");
    let cid = tab(&mut c.nodes[2], 3, "cid");
    c.cut(2);
    for k in 0..3u64 {
        send(
            &mut c.nodes[0],
            ana,
            k + 1,
            json!({"text": format!("m{k}")}),
        );
    }
    // Cid sends while cut off: the send waits for its token's turn on the
    // bus (the rate limit is the cluster's), nothing is stored meanwhile.
    send(
        &mut c.nodes[2],
        cid,
        1,
        json!({"text": "from the cut node"}),
    );
    c.settle(&mut rng);
    assert!(c.nodes[2].events(cid).is_empty());
    assert_eq!(c.store.messages().count(), 3);
    assert_eq!(c.nodes[1].events(bob).len(), 3);
    c.heal(2);
    c.settle(&mut rng);
    let to_cid = c.nodes[2].events(cid);
    assert_eq!(
        to_cid
            .iter()
            .filter(|(n, _)| n == "chat:new-message")
            .map(|(_, v)| v["text"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    // Its own send went on once it was back: stored, acked, delivered.
    assert_eq!(
        names(&to_cid),
        [
            "chat:new-message",
            "chat:new-message",
            "chat:new-message",
            "chat:ack",
            "chat:delivered"
        ]
    );
    let to_bob = c.nodes[1].events(bob);
    assert_eq!(to_bob.last().unwrap().1["text"], "from the cut node");

    // Cut off longer than the bus keeps: what was trimmed is lost to it
    // (its clients catch up from the store), the rest comes.
    c.cut(2);
    for k in 0..5u64 {
        send(
            &mut c.nodes[0],
            ana,
            10 + k,
            json!({"text": format!("n{k}")}),
        );
    }
    c.settle(&mut rng);
    // (Each send put a token spend, the message and word of its delivery
    // on the bus: the newest 7 hold the last two or three messages.)
    c.trim(7);
    let kept = bus_message_ids(&c);
    assert!(!kept.is_empty() && kept.len() < 5, "{kept:?}");
    c.heal(2);
    c.settle(&mut rng);
    let got = ids_of(&c.nodes[2].events(cid), "chat:new-message", "id");
    assert_eq!(got, kept);
}

#[test]
fn a_send_on_a_node_cut_off_for_too_long_is_refused_and_never_stored() {
    let mut rng = SimRng::new(4);
    let mut c = ClusterSim::new(2);
    let ana = tab(&mut c.nodes[0], 1, "ana");
    let bob = tab(&mut c.nodes[1], 2, "bob");
    c.cut(0);
    send(
        &mut c.nodes[0],
        ana,
        1,
        json!({"text": "lost?", "tempId": "t"}),
    );
    c.settle(&mut rng);
    c.nodes[0].advance(crate::chat::BUS_WAIT);
    let to_ana = c.nodes[0].events(ana);
    assert_eq!(super::harness::error_codes(&to_ana), ["store_unavailable"]);
    assert_eq!(to_ana[0].1["tempId"], "t");
    // Back on the bus: its token is spent everywhere, but nothing is stored
    // or sent (the client was told to send it again).
    c.heal(0);
    c.settle(&mut rng);
    assert!(c.nodes[0].events(ana).is_empty());
    assert!(c.nodes[1].events(bob).is_empty());
    assert_eq!(c.store.messages().count(), 0);
}
