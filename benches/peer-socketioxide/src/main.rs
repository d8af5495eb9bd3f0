//! A socketioxide server that speaks chatwire's chat events, for load runs
//! side by side with chatwire (`benches/side-by-side.sh`). Bench-only:
//! no REST, no store but memory, no limits.
//!
//! - CONNECT with auth `{"token": "<jwt>"}`: the HS256 token chatwire
//!   issues (`sub`, `username`, `exp`), checked with `JWT_SECRET`; without
//!   a valid one the CONNECT is refused. The socket joins its user's room
//!   and `general`.
//! - `chat:send` `{text, tempId?, type?, chatId?}`: the message is kept
//!   (the last 10,000 in all, in memory), `chat:new-message` goes to the
//!   chat's other sockets, `chat:ack` `{tempId, id, timestamp}` to the
//!   sender as an event and, if asked for, as the Socket.IO ack, then
//!   `chat:delivered` to the sender when someone else is in the chat:
//!   what chatwire puts on the wire for the same send.
//! - `chat:typing` `{chatId?, isTyping}`: to the chat's other sockets.
//! - `chat:read` `{messageIds}`: to the other sockets of each kept
//!   message's chat, as `{messageIds, userId}`.
//! - `chat:join` / `chat:leave` `{chatId}`.
//!
//! `PORT` (default 3000), `HOST` (default 127.0.0.1) and `JWT_SECRET`
//! (required) from the environment. Each socket may queue 4,096 packets:
//! with socketioxide's default of 128, `emit` fails (the packet is lost)
//! once a socket has that many waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

/// Messages kept, in all.
const KEEP: usize = 10_000;

#[derive(Clone)]
struct User {
    id: Arc<str>,
    name: Arc<str>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    username: String,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Message {
    id: String,
    chat_id: String,
    author: Arc<str>,
    author_id: Arc<str>,
    text: String,
    timestamp: i64,
    status: &'static str,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Send {
    text: String,
    temp_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    chat_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Typing {
    chat_id: Option<String>,
    #[serde(default)]
    is_typing: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Read {
    message_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Room {
    chat_id: String,
}

/// The last [`KEEP`] messages, and how many sockets each chat has.
#[derive(Default)]
struct State {
    kept: VecDeque<(String, String)>,
    chat_of: HashMap<String, String>,
    members: HashMap<String, usize>,
}

impl State {
    fn keep(&mut self, m: &Message) {
        if self.kept.len() == KEEP
            && let Some((id, _)) = self.kept.pop_front()
        {
            self.chat_of.remove(&id);
        }
        self.kept.push_back((m.id.clone(), m.chat_id.clone()));
        self.chat_of.insert(m.id.clone(), m.chat_id.clone());
    }

    fn join(&mut self, chat: &str) {
        *self.members.entry(chat.to_owned()).or_default() += 1;
    }

    fn leave(&mut self, chat: &str) {
        if let Some(n) = self.members.get_mut(chat) {
            *n -= 1;
            if *n == 0 {
                self.members.remove(chat);
            }
        }
    }
}

struct Server {
    jwt: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    state: Mutex<State>,
    seq: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Server {
    /// An id like chatwire's: 24 hex digits, the later the greater.
    fn next_id(&self, now: i64) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{:016x}", (now / 1000) as u32, n)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unauthorized")
    }
}

/// Registers the namespace `/`: a token check, then [`connected`].
fn on_connect(io: &SocketIo, server: Arc<Server>) {
    let auth = {
        let server = server.clone();
        move |s: SocketRef, TryData(auth): TryData<Value>| {
            let server = server.clone();
            async move {
                let token = auth
                    .ok()
                    .and_then(|a| a.get("token")?.as_str().map(str::to_owned))
                    .ok_or(Unauthorized)?;
                let claims =
                    jsonwebtoken::decode::<Claims>(&token, &server.jwt, &server.validation)
                        .map_err(|_| Unauthorized)?
                        .claims;
                s.extensions.insert(User {
                    id: claims.sub.into(),
                    name: claims.username.into(),
                });
                Ok::<(), Unauthorized>(())
            }
        }
    };
    let handler = move |s: SocketRef| {
        let server = server.clone();
        async move { connected(server, s) }
    };
    io.ns("/", handler.with(auth));
}

fn connected(server: Arc<Server>, s: SocketRef) {
    let Some(user) = s.extensions.get::<User>() else {
        return;
    };
    s.join([user.id.to_string(), "general".to_owned()]);
    {
        let mut st = server.state();
        st.join("general");
    }
    let chats: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec!["general".to_owned()]));

    let (srv, u) = (server.clone(), user.clone());
    s.on(
        "chat:send",
        async move |s: SocketRef, Data::<Send>(send), ack: AckSender| {
            let now = now_ms();
            let m = Message {
                id: srv.next_id(now),
                chat_id: send.chat_id.unwrap_or_else(|| "general".to_owned()),
                author: u.name.clone(),
                author_id: u.id.clone(),
                text: send.text,
                timestamp: now,
                status: "sent",
                kind: send.kind.unwrap_or_else(|| "text".to_owned()),
            };
            let others = {
                let mut st = srv.state();
                st.keep(&m);
                st.members.get(&m.chat_id).copied().unwrap_or(0) > 1
            };
            let _ = s.to(m.chat_id.clone()).emit("chat:new-message", &m).await;
            let payload = json!({"tempId": send.temp_id, "id": m.id, "timestamp": m.timestamp});
            let _ = s.emit("chat:ack", &payload);
            let _ = ack.send(&payload);
            if others {
                let _ = s.emit("chat:delivered", &json!({"messageId": m.id}));
            }
        },
    );

    let u = user.clone();
    s.on(
        "chat:typing",
        async move |s: SocketRef, Data::<Typing>(t), ack: AckSender| {
            let chat = t.chat_id.unwrap_or_else(|| "general".to_owned());
            let payload = json!({"userId": &*u.id, "author": &*u.name, "chatId": chat, "isTyping": t.is_typing});
            let _ = s.to(chat).emit("chat:typing", &payload).await;
            let _ = ack.send(&payload);
        },
    );

    let (srv, u) = (server.clone(), user);
    s.on(
        "chat:read",
        async move |s: SocketRef, Data::<Read>(r), ack: AckSender| {
            let mut by_chat: HashMap<String, Vec<String>> = HashMap::new();
            {
                let st = srv.state();
                for id in r.message_ids {
                    if let Some(chat) = st.chat_of.get(&id) {
                        by_chat.entry(chat.clone()).or_default().push(id);
                    }
                }
            }
            let mut all = Vec::new();
            for (chat, ids) in by_chat {
                let payload = json!({"messageIds": ids, "userId": &*u.id});
                let _ = s.to(chat).emit("chat:read", &payload).await;
                all.extend(ids);
            }
            let _ = ack.send(&all);
        },
    );

    let (srv, mine) = (server.clone(), chats.clone());
    s.on(
        "chat:join",
        async move |s: SocketRef, Data::<Room>(r), ack: AckSender| {
            let mut mine = mine.lock().unwrap_or_else(|p| p.into_inner());
            if !mine.contains(&r.chat_id) {
                srv.state().join(&r.chat_id);
                s.join(r.chat_id.clone());
                mine.push(r.chat_id.clone());
            }
            let _ = ack.send(&json!({"chatId": r.chat_id}));
        },
    );

    let (srv, mine) = (server.clone(), chats.clone());
    s.on(
        "chat:leave",
        async move |s: SocketRef, Data::<Room>(r), ack: AckSender| {
            let mut mine = mine.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = mine.iter().position(|c| *c == r.chat_id) {
                mine.swap_remove(i);
                srv.state().leave(&r.chat_id);
                s.leave(r.chat_id.clone());
            }
            let _ = ack.send(&json!({"chatId": r.chat_id}));
        },
    );

    s.on_disconnect(async move || {
        let mine = chats.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = server.state();
        for c in mine.iter() {
            st.leave(c);
        }
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("JWT_SECRET").map_err(|_| "set JWT_SECRET")?;
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let server = Arc::new(Server {
        jwt: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        validation,
        state: Mutex::default(),
        seq: AtomicU64::new(0),
    });

    let (svc, io) = SocketIo::builder()
        .max_buffer_size(4096)
        .max_payload(1_000_000)
        .build_svc();
    on_connect(&io, server);

    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    println!("listening on http://{host}:{port}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}
