//! `loadgen`: drives a running chatwire server over raw Engine.IO v4 /
//! Socket.IO v5 on WebSocket and prints one JSON line of results.
//!
//! Every client is a distinct synthetic user with an HS256 token minted by
//! [`protocol::auth::JwtConfig::issue`], so the server's per-user rate limit
//! (20 msg/s, burst 40) applies to each sender separately. Scenarios:
//!
//! - `fanout`: N clients in `general`, S of them sending R msg/s each; the
//!   others count `chat:new-message` and measure send-to-receive latency on
//!   the generator's clock (the send time travels in the message text).
//! - `ackrtt`: one message in flight at a time, round-robin over U users (so
//!   no user exceeds the rate limit), each to a chat nobody has joined:
//!   acks/s and ack latency.
//! - `saturate`: W messages in flight over U users, to `general` (fanout to
//!   every client) or to private chats (`--private`): acks/s, deliveries/s.
//! - `conns`: N idle connections opened as fast as possible and held; the
//!   server's RSS before and after gives KB per connection.
//!
//! With `--sio-ack` every `chat:send` asks for a Socket.IO ack (`42<n>[...]`)
//! and only the ack's answer (`43<n>[...]`) counts as the message's ack, not
//! the `chat:ack` event: what a socket.io-client callback waits for, and how
//! the socketioxide peer of `benches/side-by-side.sh` is measured.
//!
//! One current-thread tokio runtime; each connection is a task that reads
//! up to 32 KiB per read (many frames per syscall) and answers pings. The
//! WebSocket client is its own ([`Ws`]): the generator must read 200,000
//! deliveries a second on one core and still have time to spare, or the
//! latencies it reports are its own queue's.

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use protocol::auth::JwtConfig;
use protocol::model::ObjectId;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

#[derive(Parser, Debug)]
#[command(about = "Load generator for chatwire (raw Engine.IO / Socket.IO over WebSocket)")]
struct Cli {
    /// The server's `host:port`; several, comma-separated, for the
    /// instances of a cluster: connection `i` goes to the `i`th modulo
    /// their number.
    #[arg(long, default_value = "127.0.0.1:3000", global = true)]
    addr: String,
    /// The server's JWT secret (HS256).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    jwt_secret: String,
    /// The server's pid: its CPU time and RSS are read from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// How many connection handshakes run at once; keep it under the
    /// server's listen backlog (128) or SYNs are dropped and retried after 1 s.
    #[arg(long, default_value_t = 100, global = true)]
    connect_concurrency: usize,
    /// Ask for a Socket.IO ack on every `chat:send` and count its answer
    /// as the ack (instead of the `chat:ack` event).
    #[arg(long, global = true)]
    sio_ack: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N clients, S senders at R msg/s each; everyone else counts deliveries.
    Fanout {
        /// Clients (senders included).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Sending clients, each a distinct user.
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Messages per second per sender (the server allows 20, burst 40).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds to wait for late deliveries after the last send.
        #[arg(long, default_value_t = 3.0)]
        drain: f64,
    },
    /// One message in flight at a time, round-robin over `users` users.
    Ackrtt {
        /// Users (one socket each) the messages rotate over.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// `window` messages in flight at once over `users` users.
    Saturate {
        /// Users (one socket each), all in `general`.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Messages in flight at once.
        #[arg(long, default_value_t = 50)]
        window: usize,
        /// Only the first this many users send (default: all of them); with
        /// `--window` equal to it, each sender has one message in flight and
        /// sends the next as soon as it is acked.
        #[arg(long)]
        senders: Option<usize>,
        /// Send to a private chat per user (no fanout) instead of `general`.
        #[arg(long)]
        private: bool,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds to wait for late deliveries after the last send.
        #[arg(long, default_value_t = 3.0)]
        drain: f64,
    },
    /// N idle connections, opened as fast as possible and held.
    Conns {
        /// Connections.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Seconds to hold them (answering pings) before reading RSS again.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
    },
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Stats {
    sent: u64,
    acks: u64,
    errors: u64,
    received: u64,
    /// Send-to-receive latencies of `chat:new-message`, microseconds.
    delivery_us: Vec<u32>,
    /// Send-to-`chat:ack` latencies, microseconds.
    ack_us: Vec<u32>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.sent += o.sent;
        self.acks += o.acks;
        self.errors += o.errors;
        self.received += o.received;
        self.delivery_us.extend(o.delivery_us);
        self.ack_us.extend(o.ack_us);
    }
}

fn percentiles(v: &mut [u32]) -> serde_json::Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64 / 1000.0;
    json!({"p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": at(1.0)})
}

/// The `n` slowest of `v` (acks in the order they came, one connection
/// after the other) as `[position, ms]`: with one sender the position is the
/// message's number, so a stall at every doubling of some collection shows
/// as positions in a row of powers of two.
fn slowest(v: &[u32], n: usize) -> serde_json::Value {
    let mut at: Vec<(usize, u32)> = v.iter().copied().enumerate().collect();
    at.sort_unstable_by_key(|&(_, us)| std::cmp::Reverse(us));
    at.truncate(n);
    json!(
        at.iter()
            .map(|&(i, us)| json!([i, us as f64 / 1000.0]))
            .collect::<Vec<_>>()
    )
}

/// CPU seconds (utime + stime) and VmRSS / VmHWM (KB) of a process.
fn proc_usage(pid: &str) -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks: f64 = f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // Linux's USER_HZ is 100 on every architecture we run on.
    Some((ticks / 100.0, kb("VmRSS:"), kb("VmHWM:")))
}

/// Before/after readings of the server and of this generator.
struct Usage {
    server: Option<String>,
    before: Option<(f64, u64, u64)>,
    me: Option<(f64, u64, u64)>,
    at: Instant,
    /// How busy each side was while the run sent (the drain after it is
    /// mostly idle): seconds, generator's CPU share, server's CPU share.
    sending: Option<(f64, Option<f64>, Option<f64>)>,
}

impl Usage {
    fn start(server: Option<u32>) -> Self {
        let server = server.map(|p| p.to_string());
        Usage {
            before: server.as_deref().and_then(proc_usage),
            server,
            me: proc_usage("self"),
            at: Instant::now(),
            sending: None,
        }
    }

    /// Notes that the run stopped sending; returns the seconds it sent for.
    fn sent(&mut self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64();
        let share = |a: Option<(f64, u64, u64)>, b: Option<(f64, u64, u64)>| {
            a.zip(b).map(|(a, b)| (b.0 - a.0) / wall)
        };
        let me = share(self.me, proc_usage("self"));
        let server = share(self.before, self.server.as_deref().and_then(proc_usage));
        self.sending = Some((wall, me, server));
        wall
    }

    fn report(&self) -> serde_json::Value {
        let wall = self.at.elapsed().as_secs_f64();
        let me = proc_usage("self");
        let gen_cpu = match (self.me, me) {
            (Some(a), Some(b)) => json!(b.0 - a.0),
            _ => json!(null),
        };
        let server = match (self.before, self.server.as_deref().and_then(proc_usage)) {
            (Some(a), Some(b)) => json!({
                "cpu_s": b.0 - a.0,
                "cpu_util": (b.0 - a.0) / wall,
                "rss_kb_before": a.1,
                "rss_kb_after": b.1,
                "hwm_kb": b.2,
            }),
            _ => json!(null),
        };
        let sending = self.sending.map(|(s, me, server)| {
            json!({"wall_s": s, "generator_cpu_util": me, "server_cpu_util": server})
        });
        json!({"wall_s": wall, "generator_cpu_s": gen_cpu, "server": server, "sending": sending})
    }
}

/// Mints tokens for synthetic users, distinct for every run.
struct Users {
    jwt: JwtConfig,
    run: [u8; 5],
}

impl Users {
    fn new(secret: &str) -> Self {
        let jwt = JwtConfig::new(secret.as_bytes(), "HS256", 60).expect("a usable JWT secret");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let b = nanos.to_le_bytes();
        Users {
            jwt,
            run: [b[0], b[1], b[2], b[3], b[4]],
        }
    }

    fn token(&self, i: usize) -> String {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let id = ObjectId::from_parts((now_ms / 1000) as u32, self.run, i as u32);
        self.jwt.issue(id, &format!("lg{i}"), now_ms)
    }
}

/// A WebSocket client of just what `loadgen` needs, so that reading a
/// delivery costs little more than the kernel's read: one `read` fills a
/// buffer with as many frames as have arrived (no zero-filling, no copy per
/// frame), frames are taken out of it in place, and text is matched as
/// bytes. What it leaves out, since neither server under test sends it:
/// fragmented messages and extensions (either is an error).
struct Ws {
    tcp: TcpStream,
    read: BytesMut,
    /// How much room each read gets.
    room: usize,
}

/// A frame from the server.
enum Frame {
    Text(BytesMut),
    Ping(BytesMut),
    Close,
    /// Binary, pong: nothing here uses them.
    Other,
}

impl Ws {
    /// Opens the TCP connection and upgrades it to an Engine.IO WebSocket;
    /// what came after the 101 is kept for [`Ws::frame`].
    async fn connect(addr: &str, room: usize) -> Result<Ws, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let mut ws = Ws {
            tcp,
            read: BytesMut::with_capacity(room),
            room,
        };
        // Any key will do: the answer's accept key is not checked here.
        let request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: bG9hZGdlbi1sb2FkZ2VuIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        ws.tcp
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send the upgrade: {e}"))?;
        loop {
            if let Some(end) = find(&ws.read, b"\r\n\r\n") {
                let head = ws.read.split_to(end + 4);
                if !head.starts_with(b"HTTP/1.1 101") {
                    let line = head[..].split(|&b| b == b'\r').next().unwrap_or_default();
                    return Err(format!(
                        "upgrade refused: {}",
                        String::from_utf8_lossy(line)
                    ));
                }
                return Ok(ws);
            }
            if ws.read.len() > 16 * 1024 {
                return Err("an upgrade answer over 16 KiB".into());
            }
            match ws.fill().await {
                Ok(true) => {}
                Ok(false) => return Err("closed during the upgrade".into()),
                Err(e) => return Err(format!("read the upgrade: {e}")),
            }
        }
    }

    /// Reads what has arrived (cancel-safe); `false` once the server closed.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.read.capacity() - self.read.len() < self.room / 4 {
            self.read.reserve(self.room);
        }
        Ok(self.tcp.read_buf(&mut self.read).await? > 0)
    }

    /// Takes the next whole frame out of what was read, if there is one.
    fn frame(&mut self) -> Result<Option<Frame>, String> {
        take_frame(&mut self.read)
    }

    /// The next text frame, reading as needed, answering WebSocket pings.
    async fn next_text(&mut self) -> Result<BytesMut, String> {
        loop {
            match self.frame()? {
                Some(Frame::Text(t)) => return Ok(t),
                Some(Frame::Ping(p)) => self.send(0xA, &p).await.map_err(|e| e.to_string())?,
                Some(Frame::Close) => return Err("the server closed".into()),
                Some(Frame::Other) => {}
                None => match self.fill().await {
                    Ok(true) => {}
                    Ok(false) => return Err("the server closed".into()),
                    Err(e) => return Err(e.to_string()),
                },
            }
        }
    }

    /// Sends one final frame ([`client_frame`]).
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.tcp.write_all(&client_frame(opcode, payload)).await
    }

    async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(0x1, text.as_bytes()).await
    }

    /// A close frame (1000), then the write side shut.
    async fn close(mut self) {
        let _ = self.send(0x8, &1000u16.to_be_bytes()).await;
        let _ = self.tcp.shutdown().await;
    }
}

/// Takes the next whole server frame out of `read`, if it holds one (and
/// makes room for the rest of one that has begun).
fn take_frame(read: &mut BytesMut) -> Result<Option<Frame>, String> {
    let [b0, b1, ..] = read[..] else {
        return Ok(None);
    };
    if b0 & 0x80 == 0 || b0 & 0x70 != 0 || b1 & 0x80 != 0 {
        return Err(format!(
            "a fragmented, extended or masked frame ({b0:#04x} {b1:#04x})"
        ));
    }
    let (len, header) = match b1 {
        126 => match read.get(2..4) {
            Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match read.get(2..10) {
            Some(b) => {
                let n = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                (usize::try_from(n).map_err(|_| "a frame too large")?, 10)
            }
            None => return Ok(None),
        },
        n => (usize::from(n), 2),
    };
    if read.len() < header + len {
        read.reserve(header + len - read.len());
        return Ok(None);
    }
    let mut payload = read.split_to(header + len);
    payload.advance(header);
    Ok(Some(match b0 & 0x0F {
        0x1 => Frame::Text(payload),
        0x8 => Frame::Close,
        0x9 => Frame::Ping(payload),
        _ => Frame::Other,
    }))
}

/// One final client frame, masked with a zero key (a client must mask;
/// any key is allowed, and zero leaves the payload as it is).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(payload);
    f
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Opens a WebSocket, reads Engine.IO OPEN, joins `/` with a token and waits
/// for the CONNECT answer.
async fn open(addr: &str, token: &str, small: bool) -> Result<Ws, String> {
    // Idle connections (`conns`) read little: keep their buffers small.
    let room = if small { 4096 } else { 32 * 1024 };
    let mut ws = Ws::connect(addr, room).await?;
    let t = ws.next_text().await?;
    if !t.starts_with(b"0") {
        return Err(format!(
            "expected OPEN, got {:?}",
            String::from_utf8_lossy(&t)
        ));
    }
    ws.send_text(&format!("40{{\"token\":\"{token}\"}}"))
        .await
        .map_err(|e| format!("send CONNECT: {e}"))?;
    loop {
        let t = ws.next_text().await?;
        if t.starts_with(b"40") {
            return Ok(ws);
        }
        if &t[..] != b"2" {
            return Err(format!(
                "expected CONNECT, got {:?}",
                String::from_utf8_lossy(&t)
            ));
        }
        ws.send_text("3")
            .await
            .map_err(|e| format!("send pong: {e}"))?;
    }
}

/// Opens `n` connections, `concurrency` handshakes at a time, in order.
async fn open_many(
    addr: &str,
    users: &Users,
    n: usize,
    concurrency: usize,
    small: bool,
) -> Result<Vec<Ws>, String> {
    let addrs: Vec<&str> = addr.split(',').map(str::trim).collect();
    let tokens: Vec<(String, &str)> = (0..n)
        .map(|i| (users.token(i), addrs[i % addrs.len()]))
        .collect();
    let results: Vec<Result<Ws, String>> = futures_util::stream::iter(tokens)
        .map(|(t, addr)| async move { open(addr, &t, small).await })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// What a connection task does besides reading.
struct Role {
    /// Send one message every this often, the first after the second
    /// duration (fanout senders, staggered so the offered load is smooth).
    every: Option<(Duration, Duration)>,
    /// Send one message per command (ackrtt, saturate).
    commands: Option<mpsc::UnboundedReceiver<()>>,
    /// Told the index of this connection at each `chat:ack`.
    acked: Option<(usize, mpsc::UnboundedSender<usize>)>,
    /// The chat its messages go to.
    chat: String,
    /// Ask for Socket.IO acks and count those (`--sio-ack`).
    sio_ack: bool,
    /// Send the next message as soon as the last one is acked (or
    /// refused), until the run stops sending.
    own_pace: bool,
}

/// The number after `key` in `text`, e.g. the send time in `"text":"123"`.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let i = find(text, key)? + key.len();
    let digits = text[i..].split(|c| !c.is_ascii_digit()).next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn micros_since(base: Instant, sent_ns: u64) -> u32 {
    let now = base.elapsed().as_nanos() as u64;
    (now.saturating_sub(sent_ns) / 1000).min(u32::MAX as u64) as u32
}

/// Runs one connection until `stop` turns true; returns what it saw.
async fn client(
    mut ws: Ws,
    base: Instant,
    mut role: Role,
    mut stop: watch::Receiver<Phase>,
) -> Stats {
    let mut st = Stats::default();
    let mut ticker = role.every.map(|(d, phase)| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + phase, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut sending = true;
    let mut ack_id = 0u64;
    'conn: loop {
        // How many messages to send now.
        let sends = tokio::select! {
            biased;
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() == Phase::Stop { break }
                sending = false;
                0
            }
            r = ws.fill() => {
                if !matches!(r, Ok(true)) { break }
                let mut answered = 0;
                loop {
                    let t = match ws.frame() {
                        Ok(Some(Frame::Text(t))) => t,
                        Ok(Some(Frame::Ping(p))) => {
                            if ws.send(0xA, &p).await.is_err() { break 'conn }
                            continue;
                        }
                        Ok(Some(Frame::Other)) => continue,
                        Ok(None) => break,
                        Ok(Some(Frame::Close)) | Err(_) => break 'conn,
                    };
                    let s = &t[..];
                    let mut acked = false;
                    if s == b"2" {
                        if ws.send_text("3").await.is_err() { break 'conn }
                    } else if let Some(rest) = s.strip_prefix(b"42[\"chat:new-message\"") {
                        st.received += 1;
                        if let Some(ns) = number_after(rest, b"\"text\":\"") {
                            st.delivery_us.push(micros_since(base, ns));
                        }
                    } else if let Some(rest) = s.strip_prefix(b"43").filter(|_| role.sio_ack) {
                        // A refused event's ack is `{"error": {...}}`.
                        if find(rest, b"\"error\":").is_some() {
                            st.errors += 1;
                        } else {
                            st.acks += 1;
                            if let Some(ns) = number_after(rest, b"\"tempId\":\"") {
                                st.ack_us.push(micros_since(base, ns));
                            }
                        }
                        acked = true;
                    } else if let Some(rest) = s.strip_prefix(b"42[\"chat:ack\"").filter(|_| !role.sio_ack) {
                        st.acks += 1;
                        if let Some(ns) = number_after(rest, b"\"tempId\":\"") {
                            st.ack_us.push(micros_since(base, ns));
                        }
                        acked = true;
                    } else if s.starts_with(b"42[\"error\"") && !role.sio_ack {
                        st.errors += 1;
                        acked = true;
                    }
                    if acked {
                        answered += 1;
                        if let Some((i, tx)) = &role.acked {
                            let _ = tx.send(*i);
                        }
                    }
                }
                if role.own_pace && sending { answered } else { 0 }
            }
            _ = async { ticker.as_mut().unwrap().tick().await }, if ticker.is_some() && sending => 1,
            c = async { role.commands.as_mut().unwrap().recv().await }, if role.commands.is_some() => {
                if c.is_none() { role.commands = None; 0 } else { 1 }
            }
        };
        for _ in 0..sends {
            let ns = base.elapsed().as_nanos() as u64;
            let id = if role.sio_ack {
                ack_id += 1;
                ack_id.to_string()
            } else {
                String::new()
            };
            let m = format!(
                "42{id}[\"chat:send\",{{\"text\":\"{ns}\",\"tempId\":\"{ns}\",\"chatId\":\"{}\"}}]",
                role.chat
            );
            if ws.send_text(&m).await.is_err() {
                break 'conn;
            }
            st.sent += 1;
        }
    }
    ws.close().await;
    st
}

/// Where a run is, told to every connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Send and receive.
    Run,
    /// Stop sending; keep receiving (the drain period).
    Drain,
    /// Close.
    Stop,
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Stats>>) -> Stats {
    let mut all = Stats::default();
    for t in tasks {
        all.merge(t.await.expect("a client task panicked"));
    }
    all
}

async fn run(cli: Cli) -> Result<serde_json::Value, String> {
    let users = Users::new(&cli.jwt_secret);
    let base = Instant::now();
    let (stop_tx, stop) = watch::channel(Phase::Run);
    match cli.scenario {
        Scenario::Fanout {
            clients,
            senders,
            rate,
            duration,
            drain,
        } => {
            let conns =
                open_many(&cli.addr, &users, clients, cli.connect_concurrency, false).await?;
            let mut usage = Usage::start(cli.server_pid);
            let every = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = Vec::new();
            for (i, ws) in conns.into_iter().enumerate() {
                let role = Role {
                    every: (i < senders).then(|| (every, every.mul_f64(i as f64 / senders as f64))),
                    commands: None,
                    acked: None,
                    chat: "general".into(),
                    sio_ack: cli.sio_ack,
                    own_pace: false,
                };
                tasks.push(tokio::spawn(client(ws, base, role, stop.clone())));
            }
            tokio::time::sleep(Duration::from_secs_f64(duration)).await;
            let _ = stop_tx.send(Phase::Drain);
            let send_end = usage.sent();
            tokio::time::sleep(Duration::from_secs_f64(drain)).await;
            let _ = stop_tx.send(Phase::Stop);
            let report = usage.report();
            let mut st = gather(tasks).await;
            let expected = st.acks * (clients as u64 - 1);
            Ok(json!({
                "scenario": "fanout",
                "clients": clients, "senders": senders, "rate_per_sender": rate,
                "sio_ack": cli.sio_ack,
                "duration_s": duration, "drain_s": drain,
                "offered_deliveries_per_s": senders as f64 * rate * (clients as f64 - 1.0),
                "sent": st.sent, "acked": st.acks, "refused": st.errors,
                "expected_deliveries": expected, "received": st.received,
                "lost": expected as i64 - st.received as i64,
                "deliveries_per_s": st.received as f64 / send_end,
                "latency": percentiles(&mut st.delivery_us),
                "ack_latency": percentiles(&mut st.ack_us),
                "usage": report,
            }))
        }
        Scenario::Ackrtt { users: n, duration } => {
            let conns = open_many(&cli.addr, &users, n, cli.connect_concurrency, false).await?;
            closed_loop(
                conns,
                base,
                Flow {
                    window: 1,
                    senders: n,
                    private: true,
                    sio_ack: cli.sio_ack,
                },
                duration,
                0.5,
                stop_tx,
                stop,
                cli.server_pid,
                "ackrtt",
            )
            .await
        }
        Scenario::Saturate {
            users: n,
            window,
            senders,
            private,
            duration,
            drain,
        } => {
            let conns = open_many(&cli.addr, &users, n, cli.connect_concurrency, false).await?;
            closed_loop(
                conns,
                base,
                Flow {
                    window,
                    senders: senders.unwrap_or(n).clamp(1, n),
                    private,
                    sio_ack: cli.sio_ack,
                },
                duration,
                drain,
                stop_tx,
                stop,
                cli.server_pid,
                "saturate",
            )
            .await
        }
        Scenario::Conns { clients, hold } => {
            let before = cli.server_pid.and_then(|p| proc_usage(&p.to_string()));
            let me = proc_usage("self");
            let t0 = Instant::now();
            let conns =
                open_many(&cli.addr, &users, clients, cli.connect_concurrency, true).await?;
            let connect_s = t0.elapsed().as_secs_f64();
            let connect_cpu = match (me, proc_usage("self")) {
                (Some(a), Some(b)) => json!(b.0 - a.0),
                _ => json!(null),
            };
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|ws| {
                    let role = Role {
                        every: None,
                        commands: None,
                        acked: None,
                        chat: String::new(),
                        sio_ack: false,
                        own_pace: false,
                    };
                    tokio::spawn(client(ws, base, role, stop.clone()))
                })
                .collect();
            tokio::time::sleep(Duration::from_secs_f64(hold)).await;
            let after = cli.server_pid.and_then(|p| proc_usage(&p.to_string()));
            let _ = stop_tx.send(Phase::Stop);
            gather(tasks).await;
            let server = match (before, after) {
                (Some(a), Some(b)) => json!({
                    "rss_kb_before": a.1, "rss_kb_after": b.1, "hwm_kb": b.2,
                    "kb_per_conn": (b.1 as f64 - a.1 as f64) / clients as f64,
                    "cpu_s": b.0 - a.0,
                }),
                _ => json!(null),
            };
            Ok(json!({
                "scenario": "conns", "clients": clients,
                "connect_s": connect_s, "connects_per_s": clients as f64 / connect_s,
                "generator_connect_cpu_s": connect_cpu,
                "hold_s": hold, "server": server,
            }))
        }
    }
}

/// The shape of a closed-loop run.
struct Flow {
    /// Messages in flight at once.
    window: usize,
    /// The first this many connections send, round-robin.
    senders: usize,
    /// Each sender to a chat of its own (no fanout) instead of `general`.
    private: bool,
    /// `--sio-ack`.
    sio_ack: bool,
}

/// `window` messages in flight over the first `senders` connections,
/// round-robin, each sent right after an earlier one is acked (or refused).
/// When every sender has one in flight (`window >= senders`), each sends
/// its next message itself on its ack, without a turn through this loop.
#[allow(clippy::too_many_arguments)]
async fn closed_loop(
    conns: Vec<Ws>,
    base: Instant,
    flow: Flow,
    duration: f64,
    drain: f64,
    stop_tx: watch::Sender<Phase>,
    stop: watch::Receiver<Phase>,
    server_pid: Option<u32>,
    name: &str,
) -> Result<serde_json::Value, String> {
    let Flow {
        window,
        senders,
        private,
        sio_ack,
    } = flow;
    let n = conns.len();
    let own_pace = window >= senders;
    let mut usage = Usage::start(server_pid);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let mut cmds = Vec::new();
    let mut tasks = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        cmds.push(tx);
        let role = Role {
            every: None,
            commands: Some(rx),
            acked: (!own_pace).then(|| (i, ack_tx.clone())),
            chat: if private {
                format!("bench-{i}")
            } else {
                "general".into()
            },
            sio_ack,
            own_pace,
        };
        tasks.push(tokio::spawn(client(ws, base, role, stop.clone())));
    }
    let mut busy = vec![false; senders];
    let mut next = 0usize;
    let mut pick = |busy: &mut Vec<bool>| -> Option<usize> {
        for _ in 0..senders {
            let i = next;
            next = (next + 1) % senders;
            if !busy[i] {
                busy[i] = true;
                return Some(i);
            }
        }
        None
    };
    for _ in 0..window.min(senders) {
        if let Some(i) = pick(&mut busy) {
            let _ = cmds[i].send(());
        }
    }
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(duration);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            Some(i) = ack_rx.recv(), if !own_pace => {
                busy[i] = false;
                if let Some(j) = pick(&mut busy) { let _ = cmds[j].send(()); }
            }
        }
    }
    let _ = stop_tx.send(Phase::Drain);
    let send_end = usage.sent();
    tokio::time::sleep(Duration::from_secs_f64(drain)).await;
    let _ = stop_tx.send(Phase::Stop);
    let report = usage.report();
    let mut st = gather(tasks).await;
    let expected = if private { 0 } else { st.acks * (n as u64 - 1) };
    Ok(json!({
        "scenario": name, "users": n, "senders": senders, "window": window,
        "private": private, "sio_ack": sio_ack, "own_pace": own_pace,
        "duration_s": duration,
        "sent": st.sent, "acked": st.acks, "refused": st.errors,
        "acks_per_s": st.acks as f64 / send_end,
        "slowest_acks": slowest(&st.ack_us, 8),
        "ack_latency": percentiles(&mut st.ack_us),
        "expected_deliveries": expected, "received": st.received,
        "lost": expected as i64 - st.received as i64,
        "deliveries_per_s": st.received as f64 / send_end,
        "latency": percentiles(&mut st.delivery_us),
        "usage": report,
    }))
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ws::{self as wsframe, Decoder, Received};

    /// Payload sizes on each side of the header's three length forms.
    const SIZES: [usize; 8] = [0, 5, 125, 126, 300, 65_535, 65_536, 70_000];

    fn text(n: usize) -> Vec<u8> {
        (0..n).map(|i| b'a' + (i % 26) as u8).collect()
    }

    #[test]
    fn the_servers_frames_come_out_whole_however_the_bytes_arrive() {
        let mut wire = Vec::new();
        for n in SIZES {
            wire.extend_from_slice(&wsframe::encode(wsframe::TEXT, &text(n)));
        }
        wire.extend_from_slice(&wsframe::pong(b"p"));
        wire.extend_from_slice(&wsframe::close(1000));
        for chunk in [1, 7, 4096, wire.len()] {
            let mut read = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                read.extend_from_slice(piece);
                while let Some(f) = take_frame(&mut read).unwrap() {
                    got.push(f);
                }
            }
            assert!(read.is_empty(), "chunks of {chunk}: bytes left over");
            assert_eq!(got.len(), SIZES.len() + 2, "chunks of {chunk}");
            for (f, n) in got.iter().zip(SIZES) {
                assert!(
                    matches!(f, Frame::Text(t) if t[..] == text(n)[..]),
                    "{n} bytes"
                );
            }
            assert!(matches!(got[SIZES.len()], Frame::Other), "the pong");
            assert!(matches!(got[SIZES.len() + 1], Frame::Close));
        }
    }

    #[test]
    fn a_masked_or_fragmented_frame_from_the_server_is_an_error() {
        let mut masked = BytesMut::from(&client_frame(wsframe::TEXT, b"hi")[..]);
        assert!(take_frame(&mut masked).is_err());
        let mut first_part = BytesMut::from(&[0x01, 0x02, b'h', b'i'][..]);
        assert!(take_frame(&mut first_part).is_err());
    }

    #[test]
    fn the_server_reads_what_the_client_sends() {
        let mut decoder = Decoder::new(1 << 20);
        for n in SIZES {
            let mut read = BytesMut::from(&client_frame(wsframe::TEXT, &text(n))[..]);
            match decoder.decode(&mut read) {
                Ok(Some(Received::Text(t))) => assert_eq!(t[..], text(n)[..], "{n} bytes"),
                other => panic!("{n} bytes: {other:?}"),
            }
            assert!(read.is_empty());
        }
    }
}
