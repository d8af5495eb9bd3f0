//! The chat's promises across a cluster, in the simulation: several nodes
//! on one fake bus (a Redis stream's semantics) and one store, deliveries
//! interleaved across nodes by seed.

use std::time::Duration;

use serde_json::{Value, json};

use super::chaos::{SimRng, for_each_seed};
use super::cluster::ClusterSim;
use super::harness::{names, send, tab};
use crate::chat::DEFAULT_TYPING_TIMEOUT;
use crate::cluster::order::HANDED_WITHIN;

/// The ids of the messages broadcast on the bus, in its order.
fn bus_message_ids(c: &ClusterSim) -> Vec<String> {
    c.bus()
        .iter()
        .filter_map(|m| {
            let m: Value = serde_json::from_slice(crate::bus::open(m)?.json).ok()?;
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
        assert_eq!(order, history(&c, "general"));
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

/// The bucket the nodes share answers a retried take (the same ticket, as a
/// host sends again after a timeout) as it answered the first, and takes
/// nothing more.
#[test]
fn a_retried_take_of_the_shared_bucket_spends_one_token() {
    use crate::store::{StoreCommand, StoreReply, TakeToken};
    let mut store = crate::store::memory::MemoryModel::new();
    let take = |ticket: &str| {
        StoreCommand::TakeToken(TakeToken {
            user: super::harness::uid(1),
            limit: crate::rate::RateLimit {
                per_second: 0.001,
                burst: 2.0,
            },
            ticket: ticket.into(),
            at_ms: 0,
            place: None,
        })
    };
    for (ticket, took) in [
        ("a", true),
        ("a", true),
        ("b", true),
        ("c", false),
        ("c", false),
    ] {
        assert_eq!(
            store.apply(take(ticket)),
            StoreReply::Took(crate::store::Taken { took, place: None }),
            "{ticket}"
        );
    }
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
    // Cid sends while cut off: the send waits for its token of the bucket
    // the nodes share (Redis, away for it too), nothing is stored meanwhile.
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
    // Its own send went on once it was back (its token taken from the
    // bucket the nodes share, one round trip, before it read the rest of
    // the bus): stored, acked, delivered.
    let mut own: Vec<&str> = names(&to_cid);
    own.retain(|n| *n != "chat:new-message");
    assert_eq!(own, ["chat:ack", "chat:delivered"]);
    let to_bob = c.nodes[1].events(bob);
    assert_eq!(to_bob.last().unwrap().1["text"], "from the cut node");

    // Cut off longer than the bus keeps: what was trimmed is lost to it
    // (its clients catch up from the store), the rest comes, in history's
    // order: the messages whose places were trimmed wait until the bus's
    // clock has gone a little past them (the nodes say they are alive every
    // 5 s), for others whose places were lost with theirs.
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
    // (Each send put the message and word of its delivery on the bus: the
    // newest 7 hold the last three or four messages.)
    c.trim(7);
    let kept = bus_message_ids(&c);
    assert!(!kept.is_empty() && kept.len() < 5, "{kept:?}");
    c.heal(2);
    c.settle(&mut rng);
    for node in &mut c.nodes {
        node.advance(Duration::from_secs(5));
    }
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

/// The body of node `node`'s answer to request `req`, once the bus is quiet.
fn answer(c: &mut ClusterSim, rng: &mut SimRng, node: usize, req: u64) -> (u16, String) {
    c.settle(rng);
    let r = c.nodes[node]
        .responses
        .remove(&req)
        .unwrap_or_else(|| panic!("node {node} did not answer request {req}"));
    (r.status, String::from_utf8(r.body.to_vec()).unwrap())
}

#[test]
fn a_polling_session_is_served_whichever_node_each_request_reaches() {
    use crate::node::Method;
    let mut rng = SimRng::new(5);
    let mut c = ClusterSim::new(3);
    let bob = tab(&mut c.nodes[1], 2, "bob");
    // Ana's handshake reaches node 0: her session is held there.
    c.nodes[0].http(1, Method::Get, "EIO=4&transport=polling", b"");
    let (status, open) = answer(&mut c, &mut rng, 0, 1);
    assert_eq!(status, 200);
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("n0."), "{sid}");
    let q = format!("EIO=4&transport=polling&sid={sid}");
    // Her CONNECT reaches node 1, her poll node 2: both answered there as
    // if they had reached node 0.
    let token = c.nodes[0].token(super::harness::uid(1), "ana");
    let connect = format!("40{}", json!({"token": token}));
    c.nodes[1].http(2, Method::Post, &q, connect.as_bytes());
    assert_eq!(answer(&mut c, &mut rng, 1, 2), (200, "ok".into()));
    c.nodes[2].http(3, Method::Get, &q, b"");
    let (status, body) = answer(&mut c, &mut rng, 2, 3);
    assert_eq!(status, 200);
    assert!(body.starts_with("40{\"sid\":"), "{body}");
    // A long-poll parked through node 1 is answered when Bob speaks.
    c.nodes[1].http(4, Method::Get, &q, b"");
    c.settle(&mut rng);
    assert!(c.nodes[1].responses.is_empty());
    send(&mut c.nodes[1], bob, 1, json!({"text": "hello ana"}));
    let (_, body) = answer(&mut c, &mut rng, 1, 4);
    assert!(body.contains("hello ana"), "{body}");
    // Her send through node 2 reaches Bob; she sees the ack through node 0.
    let send_ = format!("42{}", json!(["chat:send", {"text": "hi bob"}]));
    c.nodes[2].http(5, Method::Post, &q, send_.as_bytes());
    assert_eq!(answer(&mut c, &mut rng, 2, 5).1, "ok");
    c.nodes[0].http(6, Method::Get, &q, b"");
    let (_, body) = answer(&mut c, &mut rng, 0, 6);
    assert!(body.contains("chat:ack"), "{body}");
    assert!(
        c.nodes[1]
            .events(bob)
            .iter()
            .any(|(n, m)| n == "chat:new-message" && m["text"] == "hi bob")
    );

    // A parked poll whose client went away is let go on the holding node:
    // the next poll is not taken for a second one at once.
    c.nodes[2].http(7, Method::Get, &q, b"");
    c.settle(&mut rng);
    c.nodes[2].input(crate::node::Input::HttpAborted(crate::node::RequestId(7)));
    c.settle(&mut rng);
    c.nodes[1].http(8, Method::Get, &q, b"");
    c.settle(&mut rng);
    assert!(
        c.nodes[2].responses.is_empty() && c.nodes[1].responses.is_empty(),
        "{:?} {:?}",
        c.nodes[2].responses,
        c.nodes[1].responses
    );
    send(&mut c.nodes[1], bob, 2, json!({"text": "still there?"}));
    let (_, body) = answer(&mut c, &mut rng, 1, 8);
    assert!(body.contains("still there?"), "{body}");

    // Her upgrade reaches node 1: the connection stays there, relayed to
    // node 0 over the bus, and the session is upgraded as if it had reached
    // node 0.
    let conn = 900;
    upgrade(&mut c, 1, conn, &q);
    c.nodes[1].send(conn, "2probe");
    c.settle(&mut rng);
    assert_eq!(c.nodes[1].take(conn), ["3probe"]);
    c.nodes[1].send(conn, "5");
    c.settle(&mut rng);
    assert!(!c.nodes[1].clients[&conn].closed);
    send(&mut c.nodes[1], bob, 3, json!({"text": "over the relay"}));
    c.settle(&mut rng);
    let got = c.nodes[1].take(conn);
    assert!(got.iter().any(|f| f.contains("over the relay")), "{got:?}");
    // Her events go the other way too.
    let send_ = format!("42{}", json!(["chat:send", {"text": "back over it"}]));
    c.nodes[1].send(conn, &send_);
    c.settle(&mut rng);
    assert!(
        c.nodes[1]
            .events(bob)
            .iter()
            .any(|(n, m)| n == "chat:new-message" && m["text"] == "back over it")
    );
    // Her connection drops: the session on node 0 closes.
    c.nodes[1].drop_client(conn);
    c.settle(&mut rng);
    assert_eq!(c.nodes[0].node.engine().session_count(), 0);
}

/// A polling session of user `n` held by node 0 (its handshake and
/// CONNECT reached node 0): its query string.
fn polling_session(c: &mut ClusterSim, rng: &mut SimRng, req: u64, n: u8, name: &str) -> String {
    use crate::node::Method;
    c.nodes[0].http(req, Method::Get, "EIO=4&transport=polling", b"");
    let (_, open) = answer(c, rng, 0, req);
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    let q = format!(
        "EIO=4&transport=polling&sid={}",
        open["sid"].as_str().unwrap()
    );
    let token = c.nodes[0].token(super::harness::uid(n), name);
    let connect = format!("40{}", json!({"token": token}));
    c.nodes[0].http(req + 1, Method::Post, &q, connect.as_bytes());
    assert_eq!(answer(c, rng, 0, req + 1), (200, "ok".into()));
    q
}

/// Opens a WebSocket upgrade of the polling session `q` on `node`.
fn upgrade(c: &mut ClusterSim, node: usize, conn: u64, q: &str) {
    c.nodes[node].clients.insert(conn, Default::default());
    c.nodes[node].input(crate::node::Input::WsOpen {
        conn: crate::node::ConnId(conn),
        query: &q.replace("transport=polling", "transport=websocket"),
        authorization: None,
    });
}

#[test]
fn a_draining_node_closes_what_it_relays_and_relays_nothing_new() {
    let mut rng = SimRng::new(8);
    let mut c = ClusterSim::new(2);
    let ana = polling_session(&mut c, &mut rng, 1, 1, "ana");
    upgrade(&mut c, 1, 900, &ana);
    c.nodes[1].send(900, "2probe");
    c.settle(&mut rng);
    assert_eq!(c.nodes[1].take(900), ["3probe"]);
    c.nodes[1].send(900, "5");
    c.settle(&mut rng);
    assert_eq!(c.nodes[0].node.engine().session_count(), 1);

    c.nodes[1].input(crate::node::Input::Shutdown);
    c.settle(&mut rng);
    // The relayed connection closed as going away, its holder told: the
    // client reconnects elsewhere.
    assert_eq!(c.nodes[1].clients[&900].close_code, Some(1001));
    assert_eq!(c.nodes[0].node.engine().session_count(), 0);
    assert!(c.nodes[1].node.is_drained());

    // An upgrade reaching the draining node is refused, not relayed: the
    // session stays on polling at its holder.
    let cy = polling_session(&mut c, &mut rng, 3, 3, "cy");
    let published = c.bus().len();
    upgrade(&mut c, 1, 901, &cy);
    c.settle(&mut rng);
    assert_eq!(c.nodes[1].clients[&901].close_code, Some(1001));
    assert_eq!(c.bus().len(), published, "nothing went on the bus");
    assert_eq!(c.nodes[0].node.engine().session_count(), 1);
    assert!(c.nodes[1].node.is_drained());
}

#[test]
fn a_request_for_a_node_that_is_gone_is_answered_as_an_unknown_session() {
    use crate::node::Method;
    let mut rng = SimRng::new(6);
    let mut c = ClusterSim::new(2);
    c.nodes[1].http(
        1,
        Method::Get,
        "EIO=4&transport=polling&sid=n7.nothere",
        b"",
    );
    c.settle(&mut rng);
    assert!(c.nodes[1].responses.is_empty());
    c.nodes[1].advance(crate::cluster::forward::FORWARD_WAIT);
    let (status, body) = answer(&mut c, &mut rng, 1, 1);
    assert_eq!(status, 400);
    assert!(body.contains("Session ID unknown"), "{body}");
}

/// Connects a tab of `user` to node `node` with `auth` (its token added);
/// returns the tab, its CONNECT reply and the events after it (all their
/// arguments).
fn connect_with(
    c: &mut ClusterSim,
    node: usize,
    user: u8,
    auth: Value,
) -> (u64, Value, Vec<Value>) {
    let mut auth = auth;
    auth["token"] = json!(c.nodes[node].token(super::harness::uid(user), &format!("u{user}")));
    let conn = c.nodes[node].connect(None);
    c.nodes[node].take(conn);
    c.nodes[node].send(conn, &format!("40{auth}"));
    let inbox = c.nodes[node].take(conn);
    let reply = serde_json::from_str(inbox[0].strip_prefix("40").expect("connected")).unwrap();
    let events = inbox[1..]
        .iter()
        .map(|f| serde_json::from_str(f.strip_prefix("42").unwrap()).unwrap())
        .collect();
    (conn, reply, events)
}

/// Every event a tab got since the last call, all arguments.
fn all_events(c: &mut ClusterSim, node: usize, conn: u64) -> Vec<Value> {
    c.nodes[node]
        .take(conn)
        .iter()
        .filter_map(|f| serde_json::from_str(f.strip_prefix("42")?).ok())
        .collect()
}

/// The texts of the `chat:new-message` events among `events`.
fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e[0] == "chat:new-message")
        .map(|e| e[1]["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The offset (last argument) of the first `chat:new-message` among `events`.
fn first_message_offset(events: &[Value]) -> String {
    let m = events.iter().find(|e| e[0] == "chat:new-message").unwrap();
    m[2].as_str().unwrap().to_owned()
}

/// `n` nodes with connection state recovery on, within `window`.
fn recovering(n: usize, window: Duration) -> ClusterSim {
    let sio = crate::sio::SocketIoConfig {
        recovery: Some(crate::sio::RecoveryConfig::new(window)),
        ..Default::default()
    };
    ClusterSim::with(n, sio)
}

/// Tab `tab` on node `node` joins chat `chat` (ack `ack`).
fn join(c: &mut ClusterSim, node: usize, tab: u64, ack: u64, chat: &str) {
    super::harness::event(
        &mut c.nodes[node],
        tab,
        ack,
        "chat:join",
        json!({"chatId": chat}),
    );
}

#[test]
fn a_socket_whose_node_died_comes_back_on_another_with_what_it_missed() {
    let mut rng = SimRng::new(7);
    let mut c = recovering(3, Duration::from_secs(120));
    let (ana, first, _) = connect_with(&mut c, 0, 1, json!({}));
    let (bob, _, _) = connect_with(&mut c, 1, 2, json!({}));
    c.settle(&mut rng);
    all_events(&mut c, 0, ana);
    join(&mut c, 0, ana, 1, "side");
    join(&mut c, 1, bob, 1, "side");
    send(
        &mut c.nodes[1],
        bob,
        2,
        json!({"text": "m1", "chatId": "side"}),
    );
    c.settle(&mut rng);
    let got = all_events(&mut c, 0, ana);
    // In a cluster an offset names the bus message: the same on every node.
    let offset = first_message_offset(&got);
    assert!(offset.starts_with("n1:"), "{offset}");

    // Node 0 dies: it says nothing more, ever.
    c.cut(0);
    send(
        &mut c.nodes[1],
        bob,
        3,
        json!({"text": "m2", "chatId": "side"}),
    );
    send(&mut c.nodes[1], bob, 4, json!({"text": "m3"}));
    c.settle(&mut rng);

    // Another user with her pid gets a new socket, and takes nothing.
    let (_, other, _) = connect_with(&mut c, 2, 3, json!({"pid": first["pid"], "offset": offset}));
    assert_ne!(other["sid"], first["sid"]);
    // She comes back on node 2: same sid and pid, her chats, what she
    // missed, once, in order.
    let (back, again, replayed) =
        connect_with(&mut c, 2, 1, json!({"pid": first["pid"], "offset": offset}));
    assert_eq!(again, first);
    assert_eq!(texts(&replayed), ["m2", "m3"]);
    c.settle(&mut rng);
    all_events(&mut c, 2, back);
    send(
        &mut c.nodes[1],
        bob,
        5,
        json!({"text": "m4", "chatId": "side"}),
    );
    c.settle(&mut rng);
    let now: Vec<Value> = all_events(&mut c, 2, back);
    assert_eq!(texts(&now), ["m4"]);
    // It can move again: node 1 takes the session over from node 2, which
    // lets its socket go (DISCONNECT, closed) once it hears of it.
    let last = now.last().unwrap()[2].as_str().unwrap().to_owned();
    let (_, moved, replayed) =
        connect_with(&mut c, 1, 1, json!({"pid": first["pid"], "offset": last}));
    assert_eq!(moved["sid"], first["sid"]);
    assert!(replayed.is_empty(), "{replayed:?}");
    c.settle(&mut rng);
    assert!(c.nodes[2].take(back).contains(&"41".to_owned()));
    assert!(c.nodes[2].clients[&back].closed);
}

#[test]
fn after_every_node_restarted_sockets_come_back_with_what_they_missed() {
    let mut rng = SimRng::new(11);
    let mut c = recovering(3, Duration::from_secs(120));
    let (ana, first, _) = connect_with(&mut c, 0, 1, json!({}));
    let (bob, _, _) = connect_with(&mut c, 1, 2, json!({}));
    c.settle(&mut rng);
    let (cleo, cleos, _) = connect_with(&mut c, 2, 3, json!({}));
    c.settle(&mut rng);
    for (node, tab) in [(0, ana), (1, bob), (2, cleo)] {
        join(&mut c, node, tab, 1, "side");
    }
    c.settle(&mut rng);
    send(
        &mut c.nodes[1],
        bob,
        2,
        json!({"text": "m1", "chatId": "side"}),
    );
    c.settle(&mut rng);
    let got = all_events(&mut c, 0, ana);
    let offset = first_message_offset(&got);

    // Ana's transport ends; Bob sends on; then every node dies and a new
    // process takes each one's place.
    c.nodes[0].drop_client(ana);
    c.settle(&mut rng);
    send(
        &mut c.nodes[1],
        bob,
        3,
        json!({"text": "m2", "chatId": "side"}),
    );
    send(&mut c.nodes[1], bob, 4, json!({"text": "m3"}));
    c.settle(&mut rng);
    for i in 0..3 {
        c.restart(i, Duration::from_secs(1));
    }

    // Node 2 has read all of the bus's past but its last message: Ana
    // connects afresh there, her session untouched.
    while c.past_left(2) > 1 {
        assert!(c.read(2));
    }
    let (early, fresh, _) =
        connect_with(&mut c, 2, 1, json!({"pid": first["pid"], "offset": offset}));
    assert_ne!(fresh["sid"], first["sid"]);
    c.nodes[2].drop_client(early);
    c.settle(&mut rng);

    // Caught up, it gives her back her session: same sid and pid, her
    // chats, what she missed, once, in order.
    let (back, again, replayed) =
        connect_with(&mut c, 2, 1, json!({"pid": first["pid"], "offset": offset}));
    assert_eq!(again, first);
    assert_eq!(texts(&replayed), ["m2", "m3"]);
    // Cleo's client names no offset (it saw no event): she gets every
    // event for her since she connected, on another node.
    let (_, cleo_again, cleo_missed) = connect_with(&mut c, 0, 3, json!({"pid": cleos["pid"]}));
    assert_eq!(cleo_again, cleos);
    assert_eq!(texts(&cleo_missed), ["m1", "m2", "m3"]);
    // The chats are hers again: a new message reaches her on node 2.
    c.settle(&mut rng);
    all_events(&mut c, 2, back);
    let (dan, _, _) = connect_with(&mut c, 1, 4, json!({}));
    join(&mut c, 1, dan, 1, "side");
    c.settle(&mut rng);
    send(
        &mut c.nodes[1],
        dan,
        2,
        json!({"text": "m4", "chatId": "side"}),
    );
    c.settle(&mut rng);
    assert_eq!(texts(&all_events(&mut c, 2, back)), ["m4"]);
}

/// A node that starts reads the bus's past, where a message may wait for
/// the place of a send whose node died. A socket that comes back there
/// once the node caught up gets what its log held then; the message that
/// was waiting, let go later, reaches it live (it is of the past for the
/// node, not for the socket).
#[test]
fn a_message_of_the_past_let_go_after_a_socket_came_back_reaches_it() {
    use crate::cluster::order::HOLD;
    let mut rng = SimRng::new(12);
    let mut c = recovering(3, Duration::from_secs(120));
    let (ana, first, _) = connect_with(&mut c, 0, 1, json!({}));
    let (bob, _, _) = connect_with(&mut c, 1, 2, json!({}));
    let (cid, _, _) = connect_with(&mut c, 2, 3, json!({}));
    c.settle(&mut rng);
    send(&mut c.nodes[1], bob, 1, json!({"text": "m1"}));
    c.settle(&mut rng);
    let offset = first_message_offset(&all_events(&mut c, 0, ana));
    c.nodes[0].drop_client(ana);
    c.settle(&mut rng);
    // Cid's send takes its place in the chat's order; its store write
    // never answers, and its node dies.
    c.slow(2);
    send(&mut c.nodes[2], cid, 1, json!({"text": "lost"}));
    c.settle(&mut rng);
    // Bob's next message waits for that place on every node.
    send(&mut c.nodes[1], bob, 2, json!({"text": "after"}));
    c.settle(&mut rng);
    c.restart(2, Duration::from_secs(1));
    c.settle(&mut rng);
    // Ana comes back on the new node 2, which read the past: "after" still
    // waits there, so nothing is replayed.
    let (back, again, replayed) =
        connect_with(&mut c, 2, 1, json!({"pid": first["pid"], "offset": offset}));
    assert_eq!(again, first);
    assert!(texts(&replayed).is_empty(), "{replayed:?}");
    // The dead node's place is passed over: "after" reaches her.
    let step = Duration::from_secs(5);
    let mut waited = Duration::ZERO;
    let mut got = Vec::new();
    while got.is_empty() && waited < 2 * HOLD {
        for node in &mut c.nodes {
            node.advance(step);
        }
        waited += step;
        c.settle(&mut rng);
        got = texts(&all_events(&mut c, 2, back));
    }
    assert_eq!(got, ["after"]);
    assert_eq!(c.nodes[2].node.stats().bus_held_places, 0);
}

#[test]
fn after_a_restart_a_session_gone_for_longer_than_the_window_does_not_come_back() {
    let window = Duration::from_secs(60);
    for (age, back) in [(window - Duration::from_secs(1), true), (window, false)] {
        let mut rng = SimRng::new(5);
        let mut c = recovering(2, window);
        let (ana, first, _) = connect_with(&mut c, 0, 1, json!({}));
        c.settle(&mut rng);
        c.nodes[0].drop_client(ana);
        c.settle(&mut rng);
        // Both nodes restart, the bus's past `age` old by then.
        c.restart(0, age);
        c.restart(1, age);
        c.settle(&mut rng);
        let (_, again, _) = connect_with(&mut c, 1, 1, json!({"pid": first["pid"]}));
        assert_eq!(again == first, back, "{age:?}: {again} {first}");
    }
}

#[test]
fn a_send_is_acked_through_the_bus_after_its_message() {
    let mut rng = SimRng::new(3);
    let mut c = ClusterSim::new(2);
    let (bob, bobs, _) = connect_with(&mut c, 1, 2, json!({}));
    let (ana, _, _) = connect_with(&mut c, 0, 1, json!({}));
    c.settle(&mut rng);
    all_events(&mut c, 0, ana);
    c.nodes[1].take(bob);
    send(&mut c.nodes[1], bob, 7, json!({"text": "m", "tempId": "t"}));
    c.settle(&mut rng);
    // The ack reached Bob, and Ana the message.
    assert!(
        c.nodes[1].take(bob).iter().any(|f| f.starts_with("437[")),
        "no ack"
    );
    assert_eq!(texts(&all_events(&mut c, 0, ana)), ["m"]);
    // On the bus, the ack comes after the message's broadcast: a node that
    // dies once the ack is out cannot take the message's event with it.
    let bus: Vec<Value> = c
        .bus()
        .iter()
        .map(|m| serde_json::from_slice(crate::bus::open(m).unwrap().json).unwrap())
        .collect();
    let at = |what: &dyn Fn(&Value) -> bool| bus.iter().position(what);
    let message = at(&|m| m["t"] == "b" && m["text"].as_str().unwrap().contains("new-message"));
    let ack = at(&|m| m["t"] == "b" && m["to"] == bobs["sid"] && m["volatile"] == true);
    assert!(message.is_some() && ack.is_some(), "{bus:?}");
    assert!(message < ack, "{bus:?}");
}

#[test]
fn a_draining_node_closes_its_sessions_once_its_acks_came_back_from_the_bus() {
    let mut rng = SimRng::new(9);
    let mut c = ClusterSim::new(2);
    let (bob, _, _) = connect_with(&mut c, 1, 2, json!({}));
    c.settle(&mut rng);
    c.nodes[1].take(bob);
    send(&mut c.nodes[1], bob, 7, json!({"text": "m", "tempId": "t"}));
    // Node 1 reads until its message is stored and its ack is on the bus,
    // not yet read back.
    let acked = |c: &ClusterSim| {
        c.bus().iter().any(|m| {
            serde_json::from_slice::<Value>(crate::bus::open(m).unwrap().json).unwrap()["volatile"]
                == true
        })
    };
    while !acked(&c) {
        assert!(c.read(1), "the ack never went out");
    }
    c.nodes[1].input(crate::node::Input::Shutdown);
    assert!(!c.nodes[1].node.is_drained());
    assert!(!c.nodes[1].clients[&bob].closed, "closed before its ack");
    c.settle(&mut rng);
    let frames = c.nodes[1].take(bob);
    assert!(frames.iter().any(|f| f.starts_with("437[")), "{frames:?}");
    assert!(c.nodes[1].clients[&bob].closed);
}

#[test]
fn a_session_older_than_the_window_comes_back_after_every_node_restarted() {
    let window = Duration::from_secs(60);
    let mut rng = SimRng::new(13);
    let mut c = recovering(2, window);
    let (ana, first, _) = connect_with(&mut c, 0, 1, json!({}));
    let (bob, _, _) = connect_with(&mut c, 1, 2, json!({}));
    c.settle(&mut rng);
    // Where the bus stood when they connected: a node that starts now
    // reads only what came after (the rest is older than it reads).
    let mark = c.bus().len();
    // Two windows pass, the clients answering every ping.
    for _ in 0..24 {
        for (node, tab) in [(0, ana), (1, bob)] {
            c.nodes[node].advance(Duration::from_secs(5));
            if c.nodes[node].take(tab).iter().any(|f| f == "2") {
                c.nodes[node].send(tab, "3");
            }
        }
        c.settle(&mut rng);
    }
    send(&mut c.nodes[1], bob, 1, json!({"text": "m1"}));
    c.settle(&mut rng);
    let got = all_events(&mut c, 0, ana);
    let offset = first_message_offset(&got);
    c.nodes[0].drop_client(ana);
    c.settle(&mut rng);
    send(&mut c.nodes[1], bob, 2, json!({"text": "m2"}));
    c.settle(&mut rng);
    let recent = c.bus().len() - mark;
    c.trim(recent);
    c.restart(0, Duration::from_secs(1));
    c.restart(1, Duration::from_secs(1));
    c.settle(&mut rng);
    // Her state went on the bus again while she was connected: the new
    // node knows her.
    let (_, again, missed) =
        connect_with(&mut c, 1, 1, json!({"pid": first["pid"], "offset": offset}));
    assert_eq!(again, first);
    assert_eq!(texts(&missed), ["m2"]);
}

/// The ids of a chat's messages in history's order.
fn history(c: &ClusterSim, chat: &str) -> Vec<String> {
    c.store
        .chat(chat)
        .iter()
        .map(|m| m.id.to_string())
        .collect()
}

/// Where the order is decided (the send's place, taken with its token),
/// not where the store answers first: every socket gets a chat's messages
/// in history's order, on every node, even when an earlier send's store
/// write answers after a later one's on another node, and whatever the
/// nodes' clocks say.
#[test]
fn a_chats_messages_reach_every_socket_in_history_order_whatever_the_store_and_clocks_do() {
    let mut rng = SimRng::new(5);
    let mut c = ClusterSim::new(2);
    let ana = tab(&mut c.nodes[0], 1, "ana");
    let dan = tab(&mut c.nodes[0], 4, "dan");
    let bob = tab(&mut c.nodes[1], 2, "bob");
    let cid = tab(&mut c.nodes[1], 3, "cid");
    // Node 0's clock is a second behind node 1's.
    c.nodes[1].advance(Duration::from_secs(1));
    c.slow(0);
    send(&mut c.nodes[0], ana, 1, json!({"text": "first"}));
    c.settle(&mut rng);
    send(&mut c.nodes[1], bob, 1, json!({"text": "second"}));
    c.settle(&mut rng);
    // The second is stored and published; it waits for the first's place.
    assert_eq!(c.store.chat("general").len(), 1);
    assert!(ids_of(&c.nodes[1].events(cid), "chat:new-message", "id").is_empty());
    c.answer_appends(0);
    c.settle(&mut rng);
    let order = history(&c, "general");
    let texts: Vec<String> = c
        .store
        .chat("general")
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    for (node, conn) in [(0, dan), (1, cid)] {
        let got = ids_of(&c.nodes[node].events(conn), "chat:new-message", "id");
        assert_eq!(got, order, "tab {conn} on node {node}");
    }
    assert_eq!(
        ids_of(&c.nodes[0].events(ana), "chat:new-message", "id"),
        order[1..]
    );
    assert_eq!(
        ids_of(&c.nodes[1].events(bob), "chat:new-message", "id"),
        order[..1]
    );
}

/// A place whose send never publishes (its node died between its take and
/// its store write) holds the chat's later messages until the bus has gone
/// on for [`SILENT_FOR`] without a word from that node (the others say they
/// are alive every 5 s), well before [`HOLD`].
#[test]
fn a_place_whose_node_died_is_passed_over_once_the_bus_has_not_heard_it_for_a_while() {
    use crate::cluster::order::{HOLD, SILENT_FOR};
    let mut rng = SimRng::new(6);
    let mut c = ClusterSim::new(2);
    let ana = tab(&mut c.nodes[0], 1, "ana");
    let bob = tab(&mut c.nodes[1], 2, "bob");
    let cid = tab(&mut c.nodes[1], 3, "cid");
    c.slow(0);
    send(&mut c.nodes[0], ana, 1, json!({"text": "lost"}));
    c.settle(&mut rng);
    c.restart(0, Duration::ZERO);
    c.settle(&mut rng);
    send(&mut c.nodes[1], bob, 1, json!({"text": "after"}));
    c.settle(&mut rng);
    let step = Duration::from_secs(5);
    let mut waited = Duration::ZERO;
    while c.nodes[1].events(cid).is_empty() {
        assert!(waited < HOLD, "never passed over");
        for node in &mut c.nodes {
            node.advance(step);
        }
        waited += step;
        c.settle(&mut rng);
        if waited < SILENT_FOR {
            assert!(
                c.nodes[1].events(cid).is_empty(),
                "passed over after {waited:?}"
            );
        }
    }
    assert!(waited <= SILENT_FOR + step, "{waited:?}");
    assert_eq!(c.nodes[1].node.stats().bus_held_places, 0);
    assert_eq!(c.store.chat("general").len(), 1);
}

/// While the host's queue for the bus is backed up, a send is refused
/// before anything is taken or stored (its event might find no room on the
/// way to the bus); once the queue drains, sends go through again.
#[test]
fn a_send_is_refused_while_the_bus_is_backed_up() {
    let mut rng = SimRng::new(8);
    let mut c = ClusterSim::new(2);
    let ana = tab(&mut c.nodes[0], 1, "ana");
    let bob = tab(&mut c.nodes[1], 2, "bob");
    c.settle(&mut rng);
    let on_bus = c.bus().len();
    c.nodes[0].node.set_bus_backlog(true);
    send(
        &mut c.nodes[0],
        ana,
        1,
        json!({"text": "no room", "tempId": "t"}),
    );
    c.settle(&mut rng);
    let to_ana = c.nodes[0].events(ana);
    assert_eq!(super::harness::error_codes(&to_ana), ["store_unavailable"]);
    assert_eq!(to_ana[0].1["tempId"], "t");
    assert_eq!((c.store.messages().count(), c.bus().len()), (0, on_bus));
    c.nodes[0].node.set_bus_backlog(false);
    send(
        &mut c.nodes[0],
        ana,
        2,
        json!({"text": "room", "tempId": "t"}),
    );
    c.settle(&mut rng);
    assert_eq!(
        ids_of(&c.nodes[1].events(bob), "chat:new-message", "id"),
        history(&c, "general")
    );
    assert_eq!(c.store.messages().count(), 1);
}

/// A node that lost entries of the bus it had not read (trimmed while it
/// was cut off; Redis back without them) knows it: a session recovering
/// there from before the gap is told it did not recover (a new sid; the
/// client catches up from history), rather than come back with holes.
#[test]
fn after_a_gap_in_the_bus_a_session_does_not_recover_with_holes() {
    let mut rng = SimRng::new(9);
    let mut c = recovering(3, Duration::from_secs(120));
    let (ana, first, _) = connect_with(&mut c, 0, 1, json!({}));
    let (bob, _, _) = connect_with(&mut c, 1, 2, json!({}));
    c.settle(&mut rng);
    all_events(&mut c, 0, ana);
    send(&mut c.nodes[1], bob, 1, json!({"text": "m1"}));
    c.settle(&mut rng);
    let offset = first_message_offset(&all_events(&mut c, 0, ana));
    // Node 0 dies; node 2 is cut off while m2 and m3 go by, and they are
    // trimmed before it reads them.
    c.cut(0);
    c.cut(2);
    send(&mut c.nodes[1], bob, 2, json!({"text": "m2"}));
    send(&mut c.nodes[1], bob, 3, json!({"text": "m3"}));
    c.settle(&mut rng);
    c.trim(0);
    c.heal(2);
    c.settle(&mut rng);
    assert_eq!(c.nodes[2].node.stats().bus_gaps, 1);
    let (_, again, replayed) =
        connect_with(&mut c, 2, 1, json!({"pid": first["pid"], "offset": offset}));
    assert_ne!(
        again["sid"], first["sid"],
        "recovered with m2 and m3 missing"
    );
    assert!(texts(&replayed).is_empty());
    // Where nothing was lost, the same offset recovers.
    let (_, on_1, replayed) =
        connect_with(&mut c, 1, 1, json!({"pid": first["pid"], "offset": offset}));
    assert_eq!(on_1["sid"], first["sid"]);
    assert_eq!(texts(&replayed), ["m2", "m3"]);
}

/// A host that publishes a batch again (its write timed out after Redis
/// took it) puts entries on the bus twice: each is read once. A polling
/// request forwarded to the session's node runs once (one message stored),
/// its answer comes once, and the room hears the message once.
#[test]
fn an_entry_published_twice_is_read_once() {
    use crate::node::Method;
    let mut rng = SimRng::new(10);
    let mut c = ClusterSim::new(2);
    let bob = tab(&mut c.nodes[1], 2, "bob");
    let q = polling_session(&mut c, &mut rng, 1, 1, "ana");
    c.settle(&mut rng);
    c.nodes[1].take(bob);
    // Her send reaches node 1, which forwards it to node 0 over the bus.
    let send_ = format!("42{}", json!(["chat:send", {"text": "once"}]));
    c.nodes[1].http(5, Method::Post, &q, send_.as_bytes());
    c.publish_again(1);
    c.settle(&mut rng);
    assert_eq!(c.store.messages().count(), 1);
    // Node 0's broadcast of it, published again too.
    c.publish_again(3);
    c.settle(&mut rng);
    assert_eq!(c.store.messages().count(), 1);
    let got = ids_of(&c.nodes[1].events(bob), "chat:new-message", "id");
    assert_eq!(got, history(&c, "general"));
    assert_eq!(c.nodes[1].responses.len(), 1);
    let duplicates: u64 = c.nodes.iter().map(|n| n.node.stats().bus_duplicates).sum();
    assert!(duplicates >= 2, "{duplicates}");
}

/// How many entries node `i` read from the bus so far.
fn read_by(c: &ClusterSim, i: usize) -> u64 {
    c.nodes[i].node.stats().bus_in.iter().sum()
}

/// With recovery off, a node reads a room's entries only while its
/// sockets are in it (its work grows with its members' chats, not with the
/// cluster), and the words for it alone (acks, delivery) in its inbox.
#[test]
fn a_node_reads_only_the_rooms_its_sockets_are_in_and_what_is_for_it() {
    let mut rng = SimRng::new(3);
    let mut c = ClusterSim::new(3);
    let ana = tab(&mut c.nodes[0], 1, "ana");
    let bob = tab(&mut c.nodes[1], 2, "bob");
    // Node 2's only socket is in `general` alone.
    let cy = tab(&mut c.nodes[2], 3, "cy");
    join(&mut c, 0, ana, 1, "side");
    join(&mut c, 1, bob, 1, "side");
    c.settle(&mut rng);
    for n in [(0, ana), (1, bob), (2, cy)] {
        c.nodes[n.0].take(n.1);
    }
    let idle = read_by(&c, 2);
    for k in 0..5 {
        let text = format!("s{k}");
        send(
            &mut c.nodes[0],
            ana,
            10 + k,
            json!({"text": text, "chatId": "side"}),
        );
        c.settle(&mut rng);
    }
    assert_eq!(read_by(&c, 2), idle, "node 2 has no member in side");
    assert_eq!(
        texts(&all_events(&mut c, 1, bob)),
        ["s0", "s1", "s2", "s3", "s4"]
    );
    let to_ana = all_events(&mut c, 0, ana);
    let count = |events: &[Value], name: &str| events.iter().filter(|e| e[0] == name).count();
    assert_eq!(count(&to_ana, "chat:ack"), 5);
    assert_eq!(
        count(&to_ana, "chat:delivered"),
        5,
        "told through its inbox"
    );
    assert!(texts(&all_events(&mut c, 2, cy)).is_empty());

    // Bob leaves: node 1 stops reading side; what is said there reaches it
    // no more. Ana's sends are still acked and stored.
    super::harness::event(
        &mut c.nodes[1],
        bob,
        2,
        "chat:leave",
        json!({"chatId": "side"}),
    );
    c.settle(&mut rng);
    c.nodes[1].take(bob);
    let (on_1, on_2) = (read_by(&c, 1), read_by(&c, 2));
    send(
        &mut c.nodes[0],
        ana,
        20,
        json!({"text": "after", "chatId": "side"}),
    );
    c.settle(&mut rng);
    assert_eq!((read_by(&c, 1), read_by(&c, 2)), (on_1, on_2));
    assert!(all_events(&mut c, 1, bob).is_empty());
    assert_eq!(count(&all_events(&mut c, 0, ana), "chat:ack"), 1);
    assert_eq!(history(&c, "side").len(), 6);

    // A message in general, where all three are, reaches all three nodes.
    send(&mut c.nodes[2], cy, 30, json!({"text": "g"}));
    c.settle(&mut rng);
    assert_eq!(texts(&all_events(&mut c, 0, ana)), ["g"]);
    assert_eq!(texts(&all_events(&mut c, 1, bob)), ["g"]);
    // And bob back in side reads it again, from then on.
    join(&mut c, 1, bob, 3, "side");
    c.settle(&mut rng);
    send(
        &mut c.nodes[0],
        ana,
        40,
        json!({"text": "back", "chatId": "side"}),
    );
    c.settle(&mut rng);
    assert_eq!(texts(&all_events(&mut c, 1, bob)), ["back"]);
}

/// A node that hands several of another node's messages on in one batch
/// of what it read tells that node so in one word of delivery, and every
/// message is marked delivered once.
#[test]
fn the_words_of_delivery_of_one_batch_go_in_one_entry() {
    let mut rng = SimRng::new(5);
    let mut c = ClusterSim::new(2);
    let ana = tab(&mut c.nodes[0], 1, "ana");
    let bob = tab(&mut c.nodes[1], 2, "bob");
    c.settle(&mut rng);
    c.nodes[0].take(ana);
    c.nodes[1].take(bob);
    let handed_words = |c: &ClusterSim| {
        c.bus()
            .iter()
            .filter(|m| crate::bus::open(m).is_some_and(|o| o.json.starts_with(br#"{"t":"h""#)))
            .count()
    };
    let before = handed_words(&c);
    // Node 0 reads its own entries as they come; node 1 nothing yet.
    for k in 0..5 {
        send(
            &mut c.nodes[0],
            ana,
            10 + k,
            json!({"text": format!("m{k}")}),
        );
        while c.read(0) {}
    }
    // Node 1 reads the five places and events in one batch.
    assert_eq!(c.read_batch(1, 100), 10);
    assert_eq!(
        texts(&all_events(&mut c, 1, bob)),
        ["m0", "m1", "m2", "m3", "m4"]
    );
    assert_eq!(handed_words(&c) - before, 1, "one word for the five");
    c.settle(&mut rng);
    let to_ana = all_events(&mut c, 0, ana);
    let delivered: Vec<&Value> = to_ana.iter().filter(|e| e[0] == "chat:delivered").collect();
    assert_eq!(delivered.len(), 5);
    for m in c.store.messages() {
        assert_eq!(m.status, crate::model::Status::Delivered);
    }
}
