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
/// ack, `tell` emits `told` to the socket, `gift` emits `gift` with one
/// binary attachment, `oops` a volatile `error`, `bye` disconnects the
/// socket. It records what it heard.
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
            // What a socket is known by leaves out what asks to recover it.
            None => Ok(req.auth.cloned().map(|mut a| {
                if let Some(a) = a.as_object_mut() {
                    a.remove("pid");
                    a.remove("offset");
                }
                a
            })),
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
            "tell" => {
                ctx.emit(socket, &["told"], &[]);
            }
            "gift" => {
                let bytes = Bytes::from_static(&[1, 2, 3]);
                ctx.emit(
                    socket,
                    &json!(["gift", {"_placeholder": true, "num": 0}]),
                    &[bytes],
                );
            }
            "oops" => {
                ctx.emit_volatile(socket, &["error"], &[]);
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
        Self::with(SocketIoConfig::default())
    }

    fn with(config: SocketIoConfig) -> Self {
        let now = Instant::now();
        let sio = SocketIo::new(config, App::default());
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

    /// Every text a WebSocket connection was sent since the last call, its
    /// own frames and the broadcasts naming it, in output order (taken).
    fn received(&mut self, conn: u64) -> Vec<String> {
        let conn = ConnId(conn);
        let mut texts = Vec::new();
        self.outputs.retain(|o| match o {
            Output::WsFrame {
                conn: c,
                frame: Frame::Text(t),
            } if *c == conn => {
                texts.push(String::from_utf8(t.to_vec()).unwrap());
                false
            }
            Output::Broadcast(b) if b.conns.contains(&conn) => {
                if let Frame::Text(t) = &b.frame {
                    texts.push(String::from_utf8(t.to_vec()).unwrap());
                }
                true
            }
            _ => true,
        });
        texts
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

fn recovering(window: Duration) -> Harness {
    Harness::with(SocketIoConfig {
        recovery: Some(super::RecoveryConfig::new(window)),
        ..SocketIoConfig::default()
    })
}

/// Connects a WebSocket client with `auth`; returns its CONNECT reply.
fn connect_as(h: &mut Harness, conn: u64, auth: &Value) -> Value {
    h.ws_session(conn);
    h.text(conn, &format!("40{auth}"));
    let got = h.received(conn);
    let reply = got.iter().find(|t| t.starts_with("40")).expect("connected");
    serde_json::from_str(&reply[2..]).unwrap()
}

#[test]
fn without_recovery_nothing_carries_a_pid_or_an_offset() {
    let mut h = Harness::new();
    let reply = connect_as(&mut h, 1, &json!({"u": 1}));
    assert!(reply.get("pid").is_none(), "{reply}");
    h.text(1, r#"42["tell"]"#);
    assert_eq!(h.received(1), [r#"42["told"]"#]);
}

#[test]
fn a_socket_whose_transport_ended_comes_back_with_its_sid_rooms_and_what_it_missed() {
    let mut h = recovering(Duration::from_secs(60));
    let first = connect_as(&mut h, 1, &json!({"u": 1}));
    let (sid, pid) = (first["sid"].clone(), first["pid"].clone());
    assert!(pid.is_string(), "{first}");
    connect_as(&mut h, 2, &json!({"u": 2}));
    h.text(1, r#"42["join"]"#);
    h.text(2, r#"42["join"]"#);
    h.text(2, r#"42["shout","a"]"#);
    // A recoverable event carries its offset as its last argument.
    assert_eq!(h.received(1), [r#"42["shout","a","1"]"#]);
    h.input(Input::WsClosed(ConnId(1)));
    assert_eq!(h.node.upper().socket_count(), 1);

    // Missed while away: two shouts to its room, one to another socket.
    h.text(2, r#"42["shout","b"]"#);
    h.text(2, r#"42["tell"]"#);
    h.text(2, r#"42["shout","c"]"#);
    h.received(2);

    let auth = json!({"u": 1, "pid": pid, "offset": "1"});
    h.ws_session(3);
    h.text(3, &format!("40{auth}"));
    let got = h.received(3);
    assert_eq!(
        got,
        [
            format!(r#"40{{"sid":{sid},"pid":{pid}}}"#),
            r#"42["shout","b","2"]"#.to_owned(),
            r#"42["shout","c","4"]"#.to_owned(),
        ]
    );
    // Back in its room: the next shout reaches it, once.
    h.text(2, r#"42["shout","d"]"#);
    assert_eq!(h.received(3), [r#"42["shout","d","5"]"#]);
    // The application heard it come back as the same identity.
    assert_eq!(h.app().auths.last().unwrap(), &Some(json!({"u": 1})));

    // Dropped again: what it got is not replayed a second time.
    h.input(Input::WsClosed(ConnId(3)));
    let auth = json!({"u": 1, "pid": pid, "offset": "5"});
    let again = connect_as(&mut h, 4, &auth);
    assert_eq!(again["sid"], sid);
    assert!(h.received(4).is_empty());
}

#[test]
fn a_client_with_no_offset_gets_everything_since_it_connected() {
    let mut h = recovering(Duration::from_secs(60));
    connect_as(&mut h, 2, &json!({"u": 2}));
    h.text(2, r#"42["join"]"#);
    h.text(2, r#"42["shout","before"]"#);
    // Connected after "before", then lost before hearing anything.
    let first = connect_as(&mut h, 1, &json!({"u": 1}));
    h.text(1, r#"42["join"]"#);
    h.input(Input::WsClosed(ConnId(1)));
    h.text(2, r#"42["shout","after"]"#);
    h.ws_session(3);
    h.text(3, &format!("40{}", json!({"u": 1, "pid": first["pid"]})));
    let got = h.received(3);
    assert_eq!(
        got,
        [format!("40{first}"), r#"42["shout","after","2"]"#.into()]
    );
}

#[test]
fn a_session_is_not_recovered_past_its_window_nor_by_another_identity_nor_from_an_unknown_offset() {
    let mut h = recovering(Duration::from_secs(10));
    let first = connect_as(&mut h, 1, &json!({"u": 1}));
    let (sid, pid) = (first["sid"].clone(), first["pid"].clone());
    h.input(Input::WsClosed(ConnId(1)));
    // Another identity with the pid: connected as new.
    let other = connect_as(&mut h, 2, &json!({"u": 2, "pid": pid, "offset": "0"}));
    assert_ne!(other["sid"], sid);
    assert_ne!(other["pid"], pid);
    // An offset from the future, or not a number: connected as new.
    for offset in [json!("99"), json!("x"), json!(7)] {
        let r = connect_as(&mut h, 3, &json!({"u": 1, "pid": pid, "offset": offset}));
        assert_ne!(r["sid"], sid, "{offset}");
        h.input(Input::WsClosed(ConnId(3)));
    }
    // None of that used the session up: the right identity gets it back.
    let back = connect_as(&mut h, 4, &json!({"u": 1, "pid": pid}));
    assert_eq!(back["sid"], sid);
    assert_eq!(back["pid"], pid);
    // Past the window it is gone.
    h.input(Input::WsClosed(ConnId(4)));
    h.now += Duration::from_secs(11);
    h.input(Input::Timeout);
    let late = connect_as(&mut h, 5, &json!({"u": 1, "pid": pid}));
    assert_ne!(late["sid"], sid);
}

#[test]
fn a_client_back_before_its_dead_transport_was_noticed_takes_its_socket_over() {
    let mut h = recovering(Duration::from_secs(60));
    let first = connect_as(&mut h, 1, &json!({"u": 1}));
    connect_as(&mut h, 2, &json!({"u": 2}));
    h.text(1, r#"42["join"]"#);
    h.text(2, r#"42["join"]"#);
    h.text(2, r#"42["shout","lost"]"#);
    // Conn 1 is dead but the server has not noticed; the client is back.
    let auth = json!({"u": 1, "pid": first["pid"]});
    h.ws_session(3);
    h.text(3, &format!("40{auth}"));
    let got = h.received(3);
    assert_eq!(got[0], format!("40{first}"));
    assert_eq!(got[1..], [r#"42["shout","lost","1"]"#]);
    // The old connection was told and closed; one socket remains for it.
    assert!(h.received(1).contains(&"41".to_owned()));
    assert!(h.closed(1));
    assert_eq!(h.node.upper().socket_count(), 2);
    assert_eq!(h.app().disconnects, [DisconnectReason::Recovered]);
}

#[test]
fn acked_and_volatile_emits_carry_no_offset_and_are_not_replayed() {
    let mut h = recovering(Duration::from_secs(60));
    let first = connect_as(&mut h, 1, &json!({"u": 1}));
    h.text(1, r#"42["ask"]"#);
    h.text(1, r#"42["oops"]"#);
    h.text(1, r#"42["tell"]"#);
    assert_eq!(
        h.received(1),
        [r#"420["question"]"#, r#"42["error"]"#, r#"42["told","1"]"#]
    );
    h.input(Input::WsClosed(ConnId(1)));
    h.ws_session(2);
    h.text(
        2,
        &format!("40{}", json!({"u": 1, "pid": first["pid"], "offset": "0"})),
    );
    assert_eq!(
        h.received(2),
        [format!("40{first}"), r#"42["told","1"]"#.into()]
    );
}

#[test]
fn a_client_that_broke_the_protocol_is_not_kept() {
    let mut h = recovering(Duration::from_secs(60));
    let first = connect_as(&mut h, 1, &json!({"u": 1}));
    h.text(1, "4garbage");
    assert!(h.closed(1));
    let again = connect_as(&mut h, 2, &json!({"u": 1, "pid": first["pid"]}));
    assert_ne!(again["sid"], first["sid"]);
}

/// With recovery on in a cluster, an emit with attachments goes through
/// the bus like any other (every node logs it, its offset names its bus
/// message): a client back on another node gets it, attachment and all.
#[test]
fn a_binary_emit_in_a_cluster_reaches_its_socket_through_the_bus_and_is_replayed_elsewhere() {
    let node = |name: &str| {
        Harness::with(SocketIoConfig {
            recovery: Some(super::RecoveryConfig::new(Duration::from_secs(60))),
            cluster: Some(super::ClusterConfig { node: name.into() }),
            ..SocketIoConfig::default()
        })
    };
    let (mut n1, mut n2) = (node("n1"), node("n2"));
    // Everything either publishes reaches both, in one order.
    let exchange = |n1: &mut Harness, n2: &mut Harness| {
        for _ in 0..4 {
            let mut bus = Vec::new();
            for h in [&mut *n1, &mut *n2] {
                h.outputs.retain(|o| match o {
                    Output::Publish(m) => {
                        bus.push(m.clone());
                        false
                    }
                    _ => true,
                });
            }
            for m in &bus {
                n1.input(Input::Cluster {
                    message: m.bytes.clone(),
                    at: None,
                });
                n2.input(Input::Cluster {
                    message: m.bytes.clone(),
                    at: None,
                });
            }
        }
    };
    let first = connect_as(&mut n1, 1, &json!({"u": 1}));
    exchange(&mut n1, &mut n2);
    n1.received(1);
    n1.text(1, r#"42["gift"]"#);
    assert!(n1.received(1).is_empty(), "not sent before the bus had it");
    exchange(&mut n1, &mut n2);
    let got = n1.received(1);
    assert_eq!(got.len(), 1, "{got:?}");
    let offset = got[0].rsplit('"').nth(1).unwrap().to_owned();
    assert!(offset.starts_with("n1:"), "{got:?}");
    assert_eq!(
        got[0],
        format!(r#"451-["gift",{{"_placeholder":true,"num":0}},"{offset}"]"#)
    );
    assert!(n1.outputs.iter().any(|o| matches!(
        o,
        Output::WsFrame { conn: ConnId(1), frame: Frame::Binary(b) } if b[..] == [1, 2, 3]
    )));

    // Its transport ends with the gift unseen; it comes back on node 2.
    n1.input(Input::WsClosed(ConnId(1)));
    exchange(&mut n1, &mut n2);
    n2.outputs.clear();
    let auth = json!({"u": 1, "pid": first["pid"]});
    n2.ws_session(7);
    n2.text(7, &format!("40{auth}"));
    exchange(&mut n1, &mut n2);
    let got = n2.received(7);
    assert_eq!(
        got,
        [
            format!(r#"40{{"sid":{},"pid":{}}}"#, first["sid"], first["pid"]),
            format!(r#"451-["gift",{{"_placeholder":true,"num":0}},"{offset}"]"#)
        ]
    );
    assert!(n2.outputs.iter().any(|o| matches!(
        o,
        Output::WsFrame { conn: ConnId(7), frame: Frame::Binary(b) } if b[..] == [1, 2, 3]
    )));
}
