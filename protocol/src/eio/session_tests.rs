//! Unit tests of the Engine.IO session state machine, one behaviour each:
//! a client's requests and frames in, the engine's outputs out, time moved
//! by the test and ids from a counter.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::packet::{self, Data, Packet};
use super::session::{CloseReason, Engine, EngineConfig, Event, SessionKey, Transmit};
use super::{Transport, Violation};
use crate::host::{ConnId, Frame, Method, RequestId};
use crate::ids::CounterIds;
use crate::ws::NORMAL_CLOSURE;

/// An engine driven as a node drives it, with an echo above it (`4x`
/// comes back as `4x`), and the test's clock.
struct Pair {
    engine: Engine,
    ids: CounterIds,
    now: Instant,
    next_req: u64,
    /// What the engine had written, not yet taken by a test.
    out: Vec<Transmit>,
    opened: Vec<SessionKey>,
    messages: Vec<String>,
    closed: Vec<(SessionKey, CloseReason)>,
}

const Q: &str = "EIO=4&transport=polling";

impl Pair {
    fn new() -> Self {
        Pair::with(EngineConfig::default())
    }

    fn with(config: EngineConfig) -> Self {
        Pair {
            engine: Engine::new(config),
            ids: CounterIds::default(),
            now: Instant::now(),
            next_req: 0,
            out: Vec::new(),
            opened: Vec::new(),
            messages: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Feeds a client's packets to the engine, echoing its messages.
    fn packets<'a>(&mut self, key: SessionKey, packets: impl IntoIterator<Item = Packet<'a>>) {
        for p in packets {
            if let Some(Data::Text(t)) = self.engine.handle_packet(key, p, self.now) {
                self.messages.push(t.to_owned());
                self.engine.send(key, packet::text(b'4', t));
            }
        }
        self.settle();
    }

    /// Flushes the engine and takes its events and transmits.
    fn settle(&mut self) {
        self.engine.flush(self.now);
        while let Some(e) = self.engine.poll_event() {
            match e {
                Event::Opened { key, .. } => self.opened.push(key),
                Event::Closed { key, reason, .. } => self.closed.push((key, reason)),
                _ => {}
            }
        }
        while let Some(t) = self.engine.poll_transmit() {
            self.out.push(t);
        }
    }

    /// Moves the clock and runs what fell due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.engine.handle_timeout(self.now);
        self.settle();
    }

    /// Sends a request; returns its name (the answer may come later).
    fn request(&mut self, method: Method, query: &str, body: &[u8]) -> RequestId {
        self.next_req += 1;
        let req = RequestId(self.next_req);
        let posted =
            self.engine
                .handle_http(req, method, query, None, body, self.now, &mut self.ids);
        match posted {
            Some((key, packets)) => self.packets(key, packets),
            None => self.settle(),
        }
        req
    }

    /// The answer to `req`, if it was given (taken).
    fn answer(&mut self, req: RequestId) -> Option<(u16, String)> {
        let i = self
            .out
            .iter()
            .position(|o| matches!(o, Transmit::Http { req: r, .. } if *r == req))?;
        let Transmit::Http { response, .. } = self.out.remove(i) else {
            unreachable!()
        };
        Some((
            response.status,
            String::from_utf8(response.body.to_vec()).unwrap(),
        ))
    }

    /// A request answered at once.
    fn http(&mut self, method: Method, query: &str, body: &[u8]) -> (u16, String) {
        let req = self.request(method, query, body);
        self.answer(req).expect("answered at once")
    }

    /// A new polling session; returns its query string with `sid`.
    fn polling(&mut self) -> String {
        let (status, open) = self.http(Method::Get, Q, b"");
        assert_eq!(status, 200);
        format!("{Q}&sid={}", sid_of(&open))
    }

    fn ws_open(&mut self, conn: u64, query: &str) {
        let conn = ConnId(conn);
        let now = self.now;
        self.engine
            .handle_ws_open(conn, query, None, now, &mut self.ids);
        self.settle();
    }

    fn ws_text(&mut self, conn: u64, text: &str) {
        let read = self
            .engine
            .handle_ws_frame(ConnId(conn), Data::Text(text), self.now);
        match read {
            Some((key, p)) => self.packets(key, [p]),
            None => self.settle(),
        }
    }

    fn ws_closed(&mut self, conn: u64) {
        let now = self.now;
        self.engine
            .handle_ws_closed(ConnId(conn), CloseReason::TransportClose, now);
        self.settle();
    }

    fn close(&mut self, key: SessionKey) {
        self.engine.close(key, CloseReason::ServerClose, self.now);
        self.settle();
    }

    /// A new WebSocket session on `conn`; returns its open packet.
    fn websocket(&mut self, conn: u64) -> String {
        self.ws_open(conn, "EIO=4&transport=websocket");
        let frames = self.frames(conn);
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames[0].clone()
    }

    /// The text frames written to `conn` so far (taken).
    fn frames(&mut self, conn: u64) -> Vec<String> {
        let mut texts = Vec::new();
        self.out.retain(|o| match o {
            Transmit::Frame {
                conn: c,
                frame: Frame::Text(t),
            } if c.0 == conn => {
                texts.push(String::from_utf8(t.to_vec()).unwrap());
                false
            }
            _ => true,
        });
        texts
    }

    /// The close codes written to `conn` so far (taken).
    fn ws_closes(&mut self, conn: u64) -> Vec<u16> {
        let mut codes = Vec::new();
        self.out.retain(|o| match o {
            Transmit::Close { conn: c, code } if c.0 == conn => {
                codes.push(*code);
                false
            }
            _ => true,
        });
        codes
    }

    /// Opens a WebSocket on `conn` to upgrade the polling session of
    /// query `q`, and probes it: `2probe` answered with `3probe` alone.
    fn probe(&mut self, conn: u64, q: &str) {
        self.ws_open(conn, &upgrade_query(q));
        self.ws_text(conn, "2probe");
        assert_eq!(self.frames(conn), ["3probe"]);
    }

    fn reasons(&self) -> Vec<CloseReason> {
        self.closed.iter().map(|(_, r)| *r).collect()
    }
}

/// The upgrade request's query for the polling session of query `q`.
fn upgrade_query(q: &str) -> String {
    let sid = q.rsplit('=').next().unwrap();
    format!("EIO=4&transport=websocket&sid={sid}")
}

fn sid_of(open: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    v["sid"].as_str().unwrap().to_owned()
}

#[test]
fn polling_handshake_offers_the_upgrade_and_the_settings() {
    let mut p = Pair::new();
    let (status, open) = p.http(Method::Get, Q, b"");
    assert_eq!(status, 200);
    assert!(open.starts_with("0{"), "{open}");
    let v: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(v["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(v["pingInterval"], 25_000);
    assert_eq!(v["pingTimeout"], 20_000);
    assert_eq!(v["maxPayload"], 1_000_000);
    assert_eq!(p.opened.len(), 1);
    assert_eq!(p.engine.transport(p.opened[0]), Some(Transport::Polling));
}

#[test]
fn websocket_handshake_offers_no_upgrade() {
    let mut p = Pair::new();
    let open = p.websocket(1);
    let v: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(v["upgrades"], serde_json::json!([]));
    assert_eq!(p.opened.len(), 1);
}

#[test]
fn handshake_refusals() {
    let mut p = Pair::new();
    assert_eq!(
        p.http(Method::Post, Q, b""),
        (400, r#"{"code":2,"message":"Bad handshake method"}"#.into())
    );
    assert_eq!(p.http(Method::Get, "EIO=3&transport=polling", b"").0, 400);
    assert_eq!(
        p.http(Method::Get, &format!("{Q}&sid=nope"), b""),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#.into())
    );
    assert!(p.opened.is_empty());
}

#[test]
fn heartbeat_pings_and_a_pong_keeps_the_session() {
    let mut p = Pair::new();
    p.websocket(1);
    p.advance(Duration::from_millis(24_999));
    assert!(p.frames(1).is_empty());
    p.advance(Duration::from_millis(1));
    assert_eq!(p.frames(1), ["2"]);
    p.advance(Duration::from_millis(19_000));
    p.ws_text(1, "3");
    // A whole interval from the pong, the next ping; no close meanwhile.
    p.advance(Duration::from_millis(24_999));
    assert!(p.frames(1).is_empty());
    assert!(p.closed.is_empty());
    p.advance(Duration::from_millis(1));
    assert_eq!(p.frames(1), ["2"]);
}

#[test]
fn no_pong_within_the_timeout_closes_the_session() {
    let mut p = Pair::new();
    p.websocket(1);
    p.advance(Duration::from_millis(25_000));
    assert_eq!(p.frames(1), ["2"]);
    p.advance(Duration::from_millis(19_999));
    assert!(p.closed.is_empty());
    p.advance(Duration::from_millis(1));
    assert_eq!(p.reasons(), [CloseReason::PingTimeout]);
    assert_eq!(p.ws_closes(1), [NORMAL_CLOSURE]);
    assert_eq!(p.engine.session_count(), 0);
}

#[test]
fn a_client_ping_is_answered_with_a_pong() {
    let mut p = Pair::new();
    p.websocket(1);
    p.ws_text(1, "2probe");
    assert_eq!(p.frames(1), ["3probe"]);
}

#[test]
fn a_parked_poll_is_answered_when_a_packet_comes() {
    let mut p = Pair::new();
    let q = p.polling();
    let parked = p.request(Method::Get, &q, b"");
    assert_eq!(p.answer(parked), None);
    assert_eq!(p.http(Method::Post, &q, b"4hello"), (200, "ok".into()));
    // The echo went to the parked poll.
    assert_eq!(p.answer(parked), Some((200, "4hello".into())));
    assert_eq!(p.messages, ["hello"]);
}

#[test]
fn a_poll_that_finds_packets_is_answered_at_once_with_all_of_them() {
    let mut p = Pair::new();
    let q = p.polling();
    assert_eq!(p.http(Method::Post, &q, b"4a\x1e4b"), (200, "ok".into()));
    assert_eq!(p.http(Method::Get, &q, b""), (200, "4a\x1e4b".into()));
}

#[test]
fn a_second_poll_while_one_is_parked_closes_the_session() {
    let mut p = Pair::new();
    let q = p.polling();
    let first = p.request(Method::Get, &q, b"");
    let second = p.request(Method::Get, &q, b"");
    assert_eq!(p.answer(second).unwrap().0, 400);
    assert_eq!(p.answer(first), Some((200, "1".into())));
    assert_eq!(
        p.reasons(),
        [CloseReason::ProtocolError(Violation::DuplicatePoll)]
    );
    assert_eq!(p.http(Method::Get, &q, b"").0, 400);
}

#[test]
fn a_polling_session_pings_through_its_polls() {
    let mut p = Pair::new();
    let q = p.polling();
    let parked = p.request(Method::Get, &q, b"");
    p.advance(Duration::from_millis(25_000));
    assert_eq!(p.answer(parked), Some((200, "2".into())));
    assert_eq!(p.http(Method::Post, &q, b"3"), (200, "ok".into()));
    p.advance(Duration::from_millis(20_000));
    assert!(p.closed.is_empty());
}

#[test]
fn upgrade_with_probe_noop_and_upgrade() {
    let mut p = Pair::new();
    let q = p.polling();
    assert_eq!(p.http(Method::Post, &q, b"4before"), (200, "ok".into()));
    let parked = p.request(Method::Get, &q, b"");
    assert_eq!(p.answer(parked), Some((200, "4before".into())));
    let parked = p.request(Method::Get, &q, b"");

    // A probe gets no open packet: only its pong.
    p.probe(9, &q);
    // The parked poll is let go with a noop, so the client can pause polling.
    assert_eq!(p.answer(parked), Some((200, "6".into())));
    // A packet sent before the upgrade completes waits in the poll buffer...
    assert_eq!(p.http(Method::Post, &q, b"4during"), (200, "ok".into()));
    p.ws_text(9, "5");
    let key = p.opened[0];
    assert_eq!(p.engine.transport(key), Some(Transport::WebSocket));
    // ...and goes over the WebSocket once it is the session's.
    assert_eq!(p.frames(9), ["4during"]);
    p.ws_text(9, "4after");
    assert_eq!(p.frames(9), ["4after"]);
    // Polling is over for this session.
    assert_eq!(p.http(Method::Get, &q, b"").0, 400);
    assert!(p.closed.is_empty());
}

#[test]
fn a_poll_parked_during_the_upgrade_gets_a_noop_after_a_while() {
    let mut p = Pair::new();
    let q = p.polling();
    p.probe(9, &q);
    let parked = p.request(Method::Get, &q, b"");
    // Not at once (a client that polls again would spin)...
    assert_eq!(p.answer(parked), None);
    // ...but after 100 ms.
    p.advance(Duration::from_millis(100));
    assert_eq!(p.answer(parked), Some((200, "6".into())));
}

#[test]
fn an_upgrade_that_never_completes_is_dropped_and_polling_goes_on() {
    let mut p = Pair::new();
    let q = p.polling();
    p.probe(9, &q);
    p.advance(Duration::from_millis(9_999));
    assert!(p.ws_closes(9).is_empty());
    p.advance(Duration::from_millis(1));
    assert_eq!(p.ws_closes(9), [NORMAL_CLOSURE]);
    let key = p.opened[0];
    assert_eq!(p.engine.transport(key), Some(Transport::Polling));
    assert_eq!(p.http(Method::Post, &q, b"4still"), (200, "ok".into()));
    assert_eq!(p.http(Method::Get, &q, b""), (200, "4still".into()));
    assert!(p.closed.is_empty());
}

#[test]
fn a_probe_that_says_anything_else_is_dropped() {
    let mut p = Pair::new();
    let q = p.polling();
    p.ws_open(9, &upgrade_query(&q));
    p.ws_text(9, "5");
    assert_eq!(p.ws_closes(9), [NORMAL_CLOSURE]);
    let key = p.opened[0];
    assert_eq!(p.engine.transport(key), Some(Transport::Polling));
}

#[test]
fn the_client_closes_over_websocket_and_over_polling() {
    let mut p = Pair::new();
    p.websocket(1);
    p.ws_text(1, "1");
    assert_eq!(p.reasons(), [CloseReason::ClientClose]);
    assert_eq!(p.ws_closes(1), [NORMAL_CLOSURE]);

    let q = p.polling();
    let parked = p.request(Method::Get, &q, b"");
    assert_eq!(p.http(Method::Post, &q, b"1"), (200, "ok".into()));
    assert_eq!(p.answer(parked), Some((200, "6".into())));
    assert_eq!(
        p.reasons(),
        [CloseReason::ClientClose, CloseReason::ClientClose]
    );
    assert_eq!(p.engine.session_count(), 0);
}

#[test]
fn the_transport_going_away_closes_the_session() {
    let mut p = Pair::new();
    p.websocket(1);
    p.ws_closed(1);
    assert_eq!(p.reasons(), [CloseReason::TransportClose]);
    // The connection is gone already: no close frame to write.
    assert!(p.ws_closes(1).is_empty());
}

#[test]
fn the_server_closes_a_session() {
    let mut p = Pair::new();
    p.websocket(1);
    let key = p.opened[0];
    p.close(key);
    assert_eq!(p.reasons(), [CloseReason::ServerClose]);
    assert_eq!(p.ws_closes(1), [NORMAL_CLOSURE]);
    assert!(!p.engine.send(key, Frame::Text(Bytes::from_static(b"4x"))));

    let q = p.polling();
    let parked = p.request(Method::Get, &q, b"");
    let key = p.opened[1];
    p.close(key);
    assert_eq!(p.answer(parked), Some((200, "1".into())));
}

#[test]
fn more_than_max_payload_closes_the_session() {
    let config = EngineConfig {
        max_payload: 10,
        ..EngineConfig::default()
    };
    let mut p = Pair::with(config.clone());
    p.websocket(1);
    p.ws_text(1, "4123456789");
    assert_eq!(p.frames(1), ["4123456789"]);
    p.ws_text(1, "41234567890");
    assert_eq!(
        p.reasons(),
        [CloseReason::ProtocolError(Violation::TooLarge)]
    );
    assert_eq!(p.ws_closes(1), [NORMAL_CLOSURE]);

    let mut p = Pair::with(config);
    let q = p.polling();
    assert_eq!(p.http(Method::Post, &q, b"4123456789").0, 200);
    assert_eq!(
        p.http(Method::Post, &q, b"41234567890"),
        (413, r#"{"code":3,"message":"Payload too large"}"#.into())
    );
    assert_eq!(
        p.reasons(),
        [CloseReason::ProtocolError(Violation::TooLarge)]
    );
}

#[test]
fn a_malformed_packet_closes_only_its_session() {
    let mut p = Pair::new();
    p.websocket(1);
    p.websocket(2);
    p.ws_text(1, "x");
    assert_eq!(
        p.reasons(),
        [CloseReason::ProtocolError(Violation::BadPacket)]
    );
    p.ws_text(2, "4ok");
    assert_eq!(p.frames(2), ["4ok"]);

    let q = p.polling();
    assert_eq!(p.http(Method::Post, &q, b"4ok\x1ez").0, 400);
    // A bad record refuses the whole payload: the good one was not read.
    assert_eq!(p.messages, ["ok"]);
    assert_eq!(p.engine.session_count(), 1);
}

#[test]
fn a_polling_client_that_buffers_too_much_is_dropped() {
    let mut p = Pair::with(EngineConfig {
        max_buffered: 100,
        ..EngineConfig::default()
    });
    let q = p.polling();
    let body = vec!["4".to_owned() + &"x".repeat(40); 3].join("\x1e");
    assert_eq!(p.http(Method::Post, &q, body.as_bytes()).0, 200);
    assert_eq!(p.reasons(), [CloseReason::Backlog]);
}

#[test]
fn a_poll_carries_at_most_sixteen_packets() {
    let mut p = Pair::new();
    let q = p.polling();
    let payload: Vec<String> = (0..20).map(|i| format!("4m{i}")).collect();
    let body = payload.join("\x1e");
    assert_eq!(
        p.http(Method::Post, &q, body.as_bytes()),
        (200, "ok".into())
    );
    assert_eq!(p.http(Method::Get, &q, b"").1, payload[..16].join("\x1e"));
    assert_eq!(p.http(Method::Get, &q, b"").1, payload[16..].join("\x1e"));
    // Nothing left: the next GET is parked.
    let parked = p.request(Method::Get, &q, b"");
    assert_eq!(p.answer(parked), None);
}

#[test]
fn a_packet_after_the_close_in_one_payload_is_not_read() {
    let mut p = Pair::new();
    let q = p.polling();
    assert_eq!(
        p.http(Method::Post, &q, b"4a\x1e1\x1e4b"),
        (200, "ok".into())
    );
    assert_eq!(p.messages, ["a"]);
    assert_eq!(p.reasons(), [CloseReason::ClientClose]);
}
