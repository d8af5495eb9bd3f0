//! The server the official protocol suites and the end-to-end tests run
//! against, on any runtime: a Socket.IO echo on `/socket.io/` (namespaces `/`
//! and `/custom`), a raw Engine.IO echo on `/engine.io/`, and a plain
//! WebSocket echo on `/` (for Autobahn's framing cases).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use protocol::Frame;
use protocol::eio::EngineConfig;
use protocol::eio::packet;
use protocol::eio::{CloseReason, Data, Handshake, SessionKey};
use protocol::ids::SeededIds;
use protocol::node::{Command, Shared};
use protocol::sio::{Application, ConnectRequest, Ctx, Event, SocketId, SocketIo, SocketIoConfig};
use protocol::store::StoreReply;
use protocol::{Node, OpId, Upper};
use serde_json::{Value, json};

use crate::{Routes, Runtime, Server, random_seed, spawn_node};

/// The conformance server's flags; the defaults are what the official
/// protocol suites expect.
#[derive(Parser, Debug, Clone)]
#[command(about = "The server the Engine.IO and Socket.IO protocol suites run against")]
pub struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Engine.IO `pingInterval`, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub ping_interval: u64,
    /// Engine.IO `pingTimeout`, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub ping_timeout: u64,
    /// Engine.IO `maxPayload`, in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_payload: usize,
    /// How long a session may wait before its Socket.IO CONNECT, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub connect_timeout: u64,
}

/// Starts the two nodes ([`Conformance`] and [`EngineEcho`]) on `rt` and
/// routes `/socket.io/` and `/engine.io/` to them.
pub fn routes<R: Runtime>(rt: R, args: &Args) -> Routes<R> {
    let config = EngineConfig {
        ping_interval: Duration::from_millis(args.ping_interval),
        ping_timeout: Duration::from_millis(args.ping_timeout),
        max_payload: args.max_payload,
        ..EngineConfig::default()
    };
    let sio = SocketIo::new(
        SocketIoConfig {
            connect_timeout: Duration::from_millis(args.connect_timeout),
            ..SocketIoConfig::default()
        },
        Conformance,
    );
    let now = Instant::now();
    let ids = || SeededIds::new(random_seed());
    let socketio = spawn_node(&rt, Node::new(config.clone(), sio, ids(), now), None, None);
    let echo = spawn_node(&rt, Node::new(config, EngineEcho, ids(), now), None, None);
    Routes::new(rt, args.max_payload, vec!["*".into()])
        .engine("/socket.io/", socketio)
        .engine("/engine.io/", echo)
        .ws_echo("/")
}

/// The whole `conformance` example on the runtime `rt`: parses [`Args`],
/// prints the ready line, and serves until the process is killed.
pub async fn main<S: Server>(rt: S) -> std::io::Result<()> {
    let args = Args::parse();
    let routes = routes(rt.clone(), &args);
    let listener = rt.bind(SocketAddr::new(args.host, args.port)).await?;
    crate::announce(rt.local_addr(&listener)?);
    crate::serve(&rt, listener, routes, std::future::pending()).await;
    Ok(())
}

/// The Socket.IO application the protocol suites expect: namespaces `/` and
/// `/custom`; `auth` emitted on connect; `message` echoed as `message-back`;
/// `message-with-ack` acknowledged with its own arguments; `call-me`
/// answered with `call-back` asking for an ack, whose values come back as
/// `call-result`.
#[derive(Debug, Default)]
pub struct Conformance;

fn with_name(name: &str, args: Vec<Value>) -> Vec<Value> {
    let mut v = Vec::with_capacity(args.len() + 1);
    v.push(Value::String(name.to_owned()));
    v.extend(args);
    v
}

impl Application for Conformance {
    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/" || nsp == "/custom"
    }

    /// The CONNECT's auth payload, echoed once the socket exists.
    type Socket = Value;

    fn authorize(&mut self, _ctx: &mut Ctx<'_>, req: &ConnectRequest<'_>) -> Result<Value, Value> {
        Ok(req.auth.cloned().unwrap_or_else(|| json!({})))
    }

    fn on_connect(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, auth: Value) {
        ctx.emit(socket, &json!(["auth", auth]), &[]);
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, event: Event) {
        match (event.name.as_str(), event.ack) {
            ("message", _) => {
                ctx.emit(
                    socket,
                    &with_name("message-back", event.args),
                    &event.attachments,
                );
            }
            ("message-with-ack", Some(id)) => {
                ctx.ack(socket, id, &event.args, &event.attachments);
            }
            ("call-me", _) => {
                ctx.emit_with_ack(
                    socket,
                    &with_name("call-back", event.args),
                    &event.attachments,
                );
            }
            _ => {}
        }
    }

    fn on_ack(
        &mut self,
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        _id: u64,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
    ) {
        ctx.emit(socket, &with_name("call-result", args), &attachments);
    }
}

/// A raw Engine.IO echo: every message goes back to its sender as it came.
#[derive(Debug, Default)]
pub struct EngineEcho;

impl Upper for EngineEcho {
    fn on_open(&mut self, _sh: &mut Shared<'_>, _key: SessionKey, _handshake: Handshake) {}

    fn on_message(&mut self, sh: &mut Shared<'_>, key: SessionKey, data: Data<'_>) {
        let packet = match data {
            Data::Text(t) => packet::text(b'4', t),
            Data::Binary(b) => Frame::Binary(b),
        };
        sh.push(Command::Send { key, packet });
    }

    fn on_close(&mut self, _sh: &mut Shared<'_>, _key: SessionKey, _reason: CloseReason) {}

    fn on_store_reply(&mut self, _sh: &mut Shared<'_>, _op: OpId, _reply: StoreReply) {}

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    fn handle_timeout(&mut self, _sh: &mut Shared<'_>) {}
}
