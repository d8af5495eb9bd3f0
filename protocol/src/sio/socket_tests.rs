//! Unit tests of the Socket.IO layer, driven through a [`Node`] the way a
//! host drives it: raw Engine.IO in, outputs out, time set by the test and
//! ids from a counter.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    Application, ConnectRequest, Ctx, DisconnectReason, Event, SocketId, SocketIo, SocketIoConfig,
};
use crate::eio::{CloseReason, EngineConfig, Violation};
use crate::ids::CounterIds;
use crate::node::{Broadcast, ConnId, Frame, Input, Method, Node, Output, RequestId};

/// An application for the tests: namespaces `/` and `/admin`; a CONNECT
/// whose auth says `deny` is refused; `join` puts the socket in room `r`,
/// `shout` sends its arguments to everyone else there, `echo` acks its
/// arguments and attachments back, `ask` emits `question` asking for an
/// ack, `bye` disconnects the socket. It records what it heard.
#[derive(Default)]
struct App {
    auths: Vec<Option<Value>>,
    events: Vec<(String, Vec<Value>, usize)>,
    acks: Vec<(u64, Vec<Value>)>,
    disconnects: Vec<DisconnectReason>,
}

impl Application for App {
    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/" || nsp == "/admin"
    }

    type Socket = Option<Value>;

    fn authorize(
        &mut self,
        _: &mut Ctx<'_>,
        req: &ConnectRequest<'_>,
    ) -> Result<Self::Socket, Value> {
        match req.auth.and_then(|a| a.get("deny")) {
            Some(_) => {
                self.auths.push(req.auth.cloned());
                Err(json!({"message": "no"}))
            }
            None => Ok(req.auth.cloned()),
        }
    }

    fn on_connect(&mut self, _: &mut Ctx<'_>, _: SocketId, auth: Self::Socket) {
        self.auths.push(auth);
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, event: Event) {
        let nsp = ctx.namespace(socket).unwrap().to_owned();
        self.events.push((
            format!("{nsp} {}", event.name),
            event.args.clone(),
            event.attachments.len(),
        ));
        match event.name.as_str() {
            "join" => {
                ctx.join(socket, "r");
            }
            "shout" => {
                let mut data = vec![Value::from("shout")];
                data.extend(event.args);
                ctx.broadcast("/", "r", Some(socket), &data);
            }
            "echo" => {
                if let Some(id) = event.ack {
                    ctx.ack(socket, id, &event.args, &event.attachments);
                }
            }
            "ask" => {
                ctx.emit_with_ack(socket, &["question"], &[]);
            }
            "bye" => ctx.disconnect(socket),
            _ => {}
        }
    }

    fn on_ack(&mut self, _: &mut Ctx<'_>, _: SocketId, id: u64, args: Vec<Value>, _: Vec<Bytes>) {
        self.acks.push((id, args));
    }

    fn on_disconnect(&mut self, _: &mut Ctx<'_>, _: SocketId, reason: DisconnectReason) {
        self.disconnects.push(reason);
    }
}

/// A node and everything it output, by kind.
struct Harness {
    node: Node<SocketIo<App>>,
    now: Instant,
    next_req: u64,
    outputs: Vec<Output>,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let sio = SocketIo::new(SocketIoConfig::default(), App::default());
        Harness {
            node: Node::new(EngineConfig::default(), sio, CounterIds::default(), now),
            now,
            next_req: 0,
            outputs: Vec::new(),
        }
    }

    fn input(&mut self, input: Input<'_>) {
        self.now += Duration::from_millis(1);
        self.node.handle_input(self.now, input).unwrap();
        loop {
            match self.node.poll_output() {
                Output::Timeout(_) => return,
                o => self.outputs.push(o),
            }
        }
    }

    /// A WebSocket client connected to `/`; returns its sid.
    fn ws_client(&mut self, conn: u64) -> String {
        let conn = ConnId(conn);
        self.input(Input::WsOpen {
            conn,
            query: "EIO=4&transport=websocket",
            authorization: None,
        });
        self.input(Input::WsText { conn, text: "40" });
        let connected = self.take_texts(conn);
        let reply = connected.iter().find(|t| t.starts_with("40")).unwrap();
        sid_of(&reply[2..])
    }

    /// A polling client connected to `/`; returns its Engine.IO sid.
    fn polling_client(&mut self) -> String {
        let open = self.http(Method::Get, "EIO=4&transport=polling", b"");
        let eio: Value = serde_json::from_str(&open[1..]).unwrap();
        let eio = eio["sid"].as_str().unwrap().to_owned();
        assert_eq!(self.post(&eio, "40"), "ok");
        let connected = self.poll(&eio);
        assert!(connected.starts_with("40{"), "{connected}");
        eio
    }

    fn http(&mut self, method: Method, query: &str, body: &[u8]) -> String {
        self.next_req += 1;
        let req = RequestId(self.next_req);
        self.input(Input::Http {
            req,
            method,
            query,
            authorization: None,
            body,
        });
        let i = self
            .outputs
            .iter()
            .position(|o| matches!(o, Output::HttpResponse { req: r, .. } if *r == req))
            .expect("the request was answered at once");
        let Output::HttpResponse { response, .. } = self.outputs.remove(i) else {
            unreachable!()
        };
        String::from_utf8(response.body.to_vec()).unwrap()
    }

    fn post(&mut self, eio: &str, body: &str) -> String {
        let query = format!("EIO=4&transport=polling&sid={eio}");
        self.http(Method::Post, &query, body.as_bytes())
    }

    fn poll(&mut self, eio: &str) -> String {
        let query = format!("EIO=4&transport=polling&sid={eio}");
        self.http(Method::Get, &query, b"")
    }

    /// The text frames output for one connection so far (taken).
    fn take_texts(&mut self, conn: ConnId) -> Vec<String> {
        let mut texts = Vec::new();
        self.outputs.retain(|o| match o {
            Output::WsFrame {
                conn: c,
                frame: Frame::Text(t),
            } if *c == conn => {
                texts.push(String::from_utf8(t.to_vec()).unwrap());
                false
            }
            _ => true,
        });
        texts
    }

    fn text(&mut self, conn: u64, text: &str) {
        self.input(Input::WsText {
            conn: ConnId(conn),
            text,
        });
    }

    /// What a WebSocket client got since the last call.
    fn got(&mut self, conn: u64) -> Vec<String> {
        self.take_texts(ConnId(conn))
    }

    /// An Engine.IO session over WebSocket with no namespace joined.
    fn ws_session(&mut self, conn: u64) {
        self.input(Input::WsOpen {
            conn: ConnId(conn),
            query: "EIO=4&transport=websocket",
            authorization: None,
        });
        let open = self.got(conn);
        assert!(open[0].starts_with("0{"), "{open:?}");
    }

    fn closed(&mut self, conn: u64) -> bool {
        self.outputs
            .iter()
            .any(|o| matches!(o, Output::WsClose { conn: c, .. } if c.0 == conn))
    }

    fn app(&self) -> &App {
        self.node.upper().app()
    }

    fn take_broadcasts(&mut self) -> Vec<Broadcast> {
        let mut out = Vec::new();
        self.outputs.retain(|o| match o {
            Output::Broadcast(b) => {
                out.push(b.clone());
                false
            }
            _ => true,
        });
        out
    }
}

fn sid_of(json: &str) -> String {
    let v: Value = serde_json::from_str(json).unwrap();
    v["sid"].as_str().unwrap().to_owned()
}

#[test]
fn a_room_emit_is_one_broadcast_output() {
    let mut h = Harness::new();
    let a = h.ws_client(1);
    h.ws_client(2);
    h.ws_client(3);
    let polling = h.polling_client();
    // Client 3 stays out of the room.
    for conn in [1, 2] {
        h.input(Input::WsText {
            conn: ConnId(conn),
            text: r#"42["join"]"#,
        });
    }
    assert_eq!(h.post(&polling, r#"42["join"]"#), "ok");
    h.outputs.clear();

    h.input(Input::WsText {
        conn: ConnId(1),
        text: r#"42["shout","hi"]"#,
    });
    // The WebSocket recipients are named in one output, with the packet
    // encoded once; nothing goes out frame by frame.
    let broadcasts = h.take_broadcasts();
    assert_eq!(
        broadcasts,
        vec![Broadcast {
            nsp: "/".into(),
            room: "r".into(),
            except: vec![a],
            frame: Frame::Text(Bytes::from_static(br#"42["shout","hi"]"#)),
            conns: vec![ConnId(2)],
        }]
    );
    assert!(
        !h.outputs
            .iter()
            .any(|o| matches!(o, Output::WsFrame { .. })),
        "{:?}",
        h.outputs
    );
    // The polling member has it buffered for its next poll.
    assert_eq!(h.poll(&polling), r#"42["shout","hi"]"#);
    assert_eq!(h.node.stats().deliveries, 2);
}

#[test]
fn a_broadcast_keeps_its_place_among_a_connections_frames() {
    let mut h = Harness::new();
    h.ws_client(1);
    h.ws_client(2);
    for conn in [1, 2] {
        h.input(Input::WsText {
            conn: ConnId(conn),
            text: r#"42["join"]"#,
        });
    }
    h.outputs.clear();
    // A ping to client 2 (a frame of its own), then a shout from client 1:
    // the host writes them in output order, so client 2 sees the ping first.
    h.now += EngineConfig::default().ping_interval;
    h.input(Input::Timeout);
    h.input(Input::WsText {
        conn: ConnId(1),
        text: r#"42["shout",1]"#,
    });
    let order: Vec<&str> = h
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::WsFrame {
                conn: ConnId(2), ..
            } => Some("frame"),
            Output::Broadcast(b) if b.conns.contains(&ConnId(2)) => Some("broadcast"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["frame", "broadcast"]);
}

#[test]
fn a_room_of_polling_sockets_only_outputs_no_broadcast() {
    let mut h = Harness::new();
    let a = h.polling_client();
    let b = h.polling_client();
    assert_eq!(h.post(&a, r#"42["join"]"#), "ok");
    assert_eq!(h.post(&b, r#"42["join"]"#), "ok");
    assert_eq!(h.post(&a, r#"42["shout",true]"#), "ok");
    assert!(h.take_broadcasts().is_empty());
    assert_eq!(h.poll(&b), r#"42["shout",true]"#);
}

#[test]
fn connect_with_auth_and_its_refusal() {
    let mut h = Harness::new();
    h.ws_session(1);
    h.text(1, r#"40{"deny":true}"#);
    assert_eq!(h.got(1), [r#"44{"message":"no"}"#]);
    // Refused, but the session stays: the client may try again.
    h.text(1, r#"40{"token":"t"}"#);
    let got = h.got(1);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with(r#"40{"sid":""#), "{got:?}");
    assert_eq!(
        h.app().auths,
        [Some(json!({"deny": true})), Some(json!({"token": "t"}))]
    );
    assert_eq!(h.node.upper().socket_count(), 1);
    // A second CONNECT to the same namespace changes nothing.
    h.text(1, "40");
    assert!(h.got(1).is_empty());
    assert_eq!(h.app().auths.len(), 2);
}

#[test]
fn a_client_that_joins_no_namespace_in_time_is_closed() {
    let mut h = Harness::new();
    h.ws_session(1);
    // It answers pings: what closes it is the connect timeout alone.
    h.now += Duration::from_secs(30);
    h.input(Input::Timeout);
    assert_eq!(h.got(1), ["2"]);
    h.text(1, "3");
    h.now += Duration::from_secs(14);
    h.input(Input::Timeout);
    assert!(!h.closed(1));
    h.now += Duration::from_secs(1);
    h.input(Input::Timeout);
    assert!(h.closed(1));

    // One that joined in time stays past the connect timeout (answering
    // the ping that comes meanwhile).
    h.ws_client(2);
    h.now += Duration::from_secs(30);
    h.input(Input::Timeout);
    assert_eq!(h.got(2), ["2"]);
    h.text(2, "3");
    h.now += Duration::from_secs(16);
    h.input(Input::Timeout);
    assert!(!h.closed(2));
}

#[test]
fn namespaces_are_apart() {
    let mut h = Harness::new();
    h.ws_client(1);
    h.text(1, "40/nope,");
    assert_eq!(h.got(1), [r#"44/nope,{"message":"Invalid namespace"}"#]);
    h.text(1, "40/admin,");
    let got = h.got(1);
    assert!(got[0].starts_with(r#"40/admin,{"sid":""#), "{got:?}");
    h.text(1, r#"42/admin,["hello"]"#);
    h.text(1, r#"42["hello"]"#);
    // An event for a namespace the client did not join is dropped.
    h.text(1, r#"42/nope,["hello"]"#);
    let names: Vec<&str> = h.app().events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["/admin hello", "/ hello"]);
    // Leaving one namespace leaves the other.
    h.text(1, "41/admin,");
    h.text(1, r#"42/admin,["again"]"#);
    h.text(1, r#"42["again"]"#);
    assert_eq!(h.app().events.last().unwrap().0, "/ again");
    assert_eq!(h.app().events.len(), 3);
    assert_eq!(
        h.app().disconnects,
        [DisconnectReason::ClientNamespaceDisconnect]
    );
}

#[test]
fn acks_both_ways() {
    let mut h = Harness::new();
    h.ws_client(1);
    // The client asks for an answer.
    h.text(1, r#"427["echo","x",1]"#);
    assert_eq!(h.got(1), [r#"437["x",1]"#]);
    // The server asks for one.
    h.text(1, r#"42["ask"]"#);
    h.text(1, r#"42["ask"]"#);
    assert_eq!(h.got(1), [r#"420["question"]"#, r#"421["question"]"#]);
    h.text(1, r#"431["second"]"#);
    h.text(1, r#"430["first"]"#);
    // An ack for an id never asked is dropped.
    h.text(1, r#"439["never"]"#);
    assert_eq!(
        h.app().acks,
        [(1, vec![json!("second")]), (0, vec![json!("first")])]
    );
}

#[test]
fn binary_events_are_reassembled() {
    let mut h = Harness::new();
    h.ws_client(1);
    h.text(
        1,
        r#"452-1["echo",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    );
    assert!(h.app().events.is_empty(), "waits for its attachments");
    for data in [&b"\x01\x02"[..], b"\x03"] {
        h.input(Input::WsBinary {
            conn: ConnId(1),
            data: Bytes::from_static(data),
        });
    }
    assert_eq!(h.app().events[0].2, 2);
    // The ack carries them back, as a binary ack.
    let got = h.got(1);
    assert_eq!(
        got,
        [r#"462-1[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#]
    );
    let binaries = h
        .outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::WsFrame {
                    conn: ConnId(1),
                    frame: Frame::Binary(_)
                }
            )
        })
        .count();
    assert_eq!(binaries, 2);
    assert!(!h.closed(1));
}

#[test]
fn binary_packets_that_lie_about_their_attachments_close_the_session() {
    for (i, (text, binaries, violation)) in [
        // A placeholder beyond the count.
        (
            r#"451-["echo",{"_placeholder":true,"num":1}]"#,
            0,
            Violation::BadPlaceholder,
        ),
        // A text packet while an attachment is awaited.
        (
            r#"451-["echo",{"_placeholder":true,"num":0}]"#,
            0,
            Violation::AttachmentOutOfTurn,
        ),
        // A binary frame that nothing awaits.
        (r#"42["echo"]"#, 1, Violation::AttachmentOutOfTurn),
        // Attachments past maxPayload in all.
        (
            r#"452-["echo",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            2,
            Violation::AttachmentsTooLarge,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut h = Harness::new();
        h.ws_client(1);
        h.text(1, text);
        if i == 1 {
            h.text(1, r#"42["more"]"#);
        }
        for _ in 0..binaries {
            let data = if i == 3 {
                Bytes::from(vec![0u8; 600_000])
            } else {
                Bytes::from_static(b"x")
            };
            h.input(Input::WsBinary {
                conn: ConnId(1),
                data,
            });
        }
        assert!(h.closed(1), "{text}");
        assert_eq!(
            h.app().disconnects,
            [DisconnectReason::Transport(CloseReason::ProtocolError(
                violation
            ))],
            "{text}"
        );
    }
}

#[test]
fn disconnects_from_either_side() {
    let mut h = Harness::new();
    h.ws_client(1);
    h.text(1, "41");
    assert_eq!(h.node.upper().socket_count(), 0);
    assert_eq!(
        h.app().disconnects,
        [DisconnectReason::ClientNamespaceDisconnect]
    );
    // The Engine.IO session stays: the client may connect again.
    h.text(1, "40");
    assert_eq!(h.node.upper().socket_count(), 1);
    h.got(1);
    h.text(1, r#"42["bye"]"#);
    assert_eq!(h.got(1), ["41"]);
    assert_eq!(h.node.upper().socket_count(), 0);
    // The transport going away disconnects every socket of the session.
    h.text(1, "40");
    h.text(1, "40/admin,");
    h.input(Input::WsClosed(ConnId(1)));
    assert_eq!(h.node.upper().socket_count(), 0);
    assert_eq!(
        &h.app().disconnects[1..],
        [
            DisconnectReason::Transport(CloseReason::TransportClose),
            DisconnectReason::Transport(CloseReason::TransportClose)
        ]
    );
}
