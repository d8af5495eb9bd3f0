//! Unit tests of the Socket.IO layer, driven through a [`Node`] the way a
//! host drives it: raw Engine.IO in, outputs out, time set by the test and
//! ids from a counter.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::{Application, ConnectRequest, Ctx, Event, SocketId, SocketIo, SocketIoConfig};
use crate::eio::EngineConfig;
use crate::ids::CounterIds;
use crate::node::{Broadcast, ConnId, Frame, Input, Method, Node, Output, RequestId};

/// An application with one room, `r`: `join` puts the socket in it, and
/// `shout` sends its arguments to everyone else in it.
#[derive(Default)]
struct Rooms;

impl Application for Rooms {
    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/"
    }

    fn authorize(&mut self, _: &mut Ctx<'_>, _: &ConnectRequest<'_>) -> Result<(), Value> {
        Ok(())
    }

    fn on_connect(&mut self, _: &mut Ctx<'_>, _: SocketId) {}

    fn on_event(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, event: Event) {
        match event.name.as_str() {
            "join" => {
                ctx.join(socket, "r");
            }
            "shout" => {
                let mut data = vec![Value::from("shout")];
                data.extend(event.args);
                ctx.broadcast("/", "r", Some(socket), &data);
            }
            _ => {}
        }
    }
}

/// A node and everything it output, by kind.
struct Harness {
    node: Node<SocketIo<Rooms>>,
    now: Instant,
    next_req: u64,
    outputs: Vec<Output>,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let sio = SocketIo::new(SocketIoConfig::default(), Rooms);
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
