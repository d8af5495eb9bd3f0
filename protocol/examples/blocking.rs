//! The core driven by a plain blocking host: `std::net`, one thread per
//! connection, sync `tungstenite`, no async runtime. It serves Socket.IO over
//! WebSocket only (clients must connect with `transports: ["websocket"]`):
//! `message` comes back as `message-back`, `message-with-ack` is
//! acknowledged with its own arguments.
//!
//! The run loop is the one every host follows: feed an input with
//! `handle_input`, then drain `poll_output` until it returns
//! `Output::Timeout(deadline)`; when the deadline passes, feed
//! `Input::Timeout`. Here one `Node` sits behind a `Mutex`; a timer thread
//! waits on a `Condvar` for the deadline; each connection thread reads with a
//! short timeout so that it can also write what the node queued for it.
//!
//! ```sh
//! cargo run -p chatwire-protocol --example blocking -- --port 3000
//! ```

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chatwire_protocol::eio::EngineConfig;
use chatwire_protocol::ids::SeededIds;
use chatwire_protocol::sio::{
    Application, ConnectRequest, Ctx, Event, SocketId, SocketIo, SocketIoConfig,
};
use chatwire_protocol::{ConnId, Frame, Input, Node, Output};
use serde_json::Value;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, Utf8Bytes, WebSocket};

/// How long a connection thread blocks in a read before it looks for frames
/// to write: the most an outgoing frame waits.
const POLL: Duration = Duration::from_millis(5);

/// The application: an echo on namespace `/`.
struct Echo;

impl Application for Echo {
    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/"
    }

    type Socket = ();

    fn authorize(&mut self, _ctx: &mut Ctx<'_>, _req: &ConnectRequest<'_>) -> Result<(), Value> {
        Ok(())
    }

    fn on_connect(&mut self, _ctx: &mut Ctx<'_>, _socket: SocketId, _: ()) {}

    fn on_event(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, event: Event) {
        match (event.name.as_str(), event.ack) {
            ("message", _) => {
                let mut data = vec![Value::from("message-back")];
                data.extend(event.args);
                ctx.emit(socket, &data, &event.attachments);
            }
            ("message-with-ack", Some(id)) => {
                ctx.ack(socket, id, &event.args, &event.attachments);
            }
            _ => {}
        }
    }
}

/// What a connection thread is told to do.
enum Out {
    Frame(Frame),
    Close(u16),
}

/// The node and where its outputs go.
struct Host {
    node: Node<SocketIo<Echo>>,
    conns: HashMap<ConnId, Sender<Out>>,
    deadline: Instant,
}

impl Host {
    /// Feeds one input, then drains the outputs.
    fn handle(&mut self, input: Input<'_>) {
        if let Err(e) = self.node.handle_input(Instant::now(), input) {
            eprintln!("blocking: the node refused an input: {e}");
        }
        self.drain();
    }

    /// Drains `poll_output` until the node names its next deadline.
    fn drain(&mut self) {
        loop {
            match self.node.poll_output() {
                Output::Timeout(deadline) => {
                    self.deadline = deadline;
                    return;
                }
                Output::WsFrame { conn, frame } => {
                    if let Some(tx) = self.conns.get(&conn) {
                        let _ = tx.send(Out::Frame(frame));
                    }
                }
                Output::Broadcast(b) => {
                    for conn in &b.conns {
                        if let Some(tx) = self.conns.get(conn) {
                            let _ = tx.send(Out::Frame(b.frame.clone()));
                        }
                    }
                }
                Output::WsClose { conn, code } => {
                    if let Some(tx) = self.conns.remove(&conn) {
                        let _ = tx.send(Out::Close(code));
                    }
                }
                // No HTTP (WebSocket only) and no store (the echo stores nothing).
                _ => {}
            }
        }
    }
}

/// The host, and the timer thread's wake-up for an earlier deadline.
type Shared = Arc<(Mutex<Host>, Condvar)>;

/// Runs `f` on the host, then wakes the timer thread: the deadline may have moved.
fn with_host(shared: &Shared, f: impl FnOnce(&mut Host)) {
    let (lock, wake) = &**shared;
    f(&mut lock
        .lock()
        .expect("no thread panics while it holds the node"));
    wake.notify_one();
}

/// Feeds `Input::Timeout` whenever the node's deadline passes.
fn timer(shared: &Shared) {
    let (lock, wake) = &**shared;
    let mut host = lock
        .lock()
        .expect("no thread panics while it holds the node");
    loop {
        let now = Instant::now();
        if now >= host.deadline {
            host.handle(Input::Timeout);
            continue;
        }
        let wait = host.deadline - now;
        host = wake
            .wait_timeout(host, wait)
            .expect("no thread panics while it holds the node")
            .0;
    }
}

/// Serves one connection: the WebSocket handshake, then the pump.
// The handshake callback's error type is tungstenite's `ErrorResponse`, not ours to shrink.
#[allow(clippy::result_large_err)]
fn connection(stream: TcpStream, conn: ConnId, shared: &Shared) -> tungstenite::Result<()> {
    let mut query = String::new();
    let mut ws = tungstenite::accept_hdr(stream, |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or("").to_owned();
        Ok(resp)
    })
    .map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => {
            unreachable!("a blocking stream never interrupts the handshake")
        }
    })?;
    ws.get_ref().set_nodelay(true)?;
    ws.get_ref().set_read_timeout(Some(POLL))?;
    let (tx, rx) = channel();
    with_host(shared, |h| {
        h.conns.insert(conn, tx);
        h.handle(Input::WsOpen {
            conn,
            query: &query,
            authorization: None,
        });
    });
    let result = pump(&mut ws, conn, shared, &rx);
    with_host(shared, |h| {
        h.conns.remove(&conn);
        h.handle(Input::WsClosed(conn));
    });
    result
}

/// Writes what the node queued, then reads what the peer sent, until either side closes.
fn pump(
    ws: &mut WebSocket<TcpStream>,
    conn: ConnId,
    shared: &Shared,
    out: &Receiver<Out>,
) -> tungstenite::Result<()> {
    loop {
        let mut wrote = false;
        for o in out.try_iter() {
            let msg = match o {
                Out::Frame(Frame::Text(b)) => Message::Text(
                    Utf8Bytes::try_from(b).expect("the core writes only UTF-8 text frames"),
                ),
                Out::Frame(Frame::Binary(b)) => Message::Binary(b),
                Out::Close(code) => {
                    ws.close(Some(tungstenite::protocol::CloseFrame {
                        code: code.into(),
                        reason: Default::default(),
                    }))?;
                    return ws.flush();
                }
            };
            ws.write(msg)?;
            wrote = true;
        }
        if wrote {
            ws.flush()?;
        }
        match ws.read() {
            Ok(Message::Text(text)) => with_host(shared, |h| {
                h.handle(Input::WsText { conn, text: &text });
            }),
            Ok(Message::Binary(data)) => with_host(shared, |h| {
                h.handle(Input::WsBinary { conn, data });
            }),
            Ok(Message::Close(_)) => return Ok(()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
}

/// `--host`, `--port`, `--ping-interval` and `--ping-timeout` (milliseconds).
fn parse_args() -> Result<(SocketAddr, EngineConfig), String> {
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 3000));
    let mut config = EngineConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        let ms = || {
            value
                .parse()
                .map(Duration::from_millis)
                .map_err(|e| bad(&e))
        };
        match flag.as_str() {
            "--host" => addr.set_ip(value.parse::<IpAddr>().map_err(|e| bad(&e))?),
            "--port" => addr.set_port(value.parse().map_err(|e| bad(&e))?),
            "--ping-interval" => config.ping_interval = ms()?,
            "--ping-timeout" => config.ping_timeout = ms()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((addr, config))
}

/// A seed for the session ids from the OS: std's `RandomState` keys come from it.
fn seed() -> [u8; 32] {
    use std::hash::BuildHasher;
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        let key = std::collections::hash_map::RandomState::new().hash_one(i);
        chunk.copy_from_slice(&key.to_le_bytes());
    }
    seed
}

fn main() -> std::io::Result<()> {
    let (addr, config) = parse_args().map_err(std::io::Error::other)?;
    let listener = TcpListener::bind(addr)?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;

    let now = Instant::now();
    let sio = SocketIo::new(SocketIoConfig::default(), Echo);
    let mut host = Host {
        node: Node::new(config, sio, SeededIds::new(seed()), now),
        conns: HashMap::new(),
        deadline: now,
    };
    host.drain();
    let shared: Shared = Arc::new((Mutex::new(host), Condvar::new()));
    let timer_host = shared.clone();
    std::thread::spawn(move || timer(&timer_host));

    for (n, stream) in (1..).zip(listener.incoming()) {
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        std::thread::spawn(move || {
            if let Err(e) = connection(stream, ConnId(n), &shared) {
                eprintln!("blocking: connection {n}: {e}");
            }
        });
    }
    Ok(())
}
