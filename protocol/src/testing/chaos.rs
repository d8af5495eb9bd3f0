//! The chaos runner: seeded schedules of clients, sends, reads, typing,
//! disconnects and store replies in any order, with the chat's promises
//! checked after every step.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::harness::Sim;
use crate::chat::{DEFAULT_TYPING_TIMEOUT, RateLimit, TokenBucket};
use crate::model::{ObjectId, Status};
use crate::node::OpId;
use crate::store::StoreCommand;

/// A tiny deterministic generator (xorshift64*), so that a seeded schedule
/// replays from one `u64` and the core's own ids stay untouched by it.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from a seed; nearby seeds give unrelated streams.
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, forced odd: xorshift's state must not be 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        SimRng((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// The seeds a seeded scenario runs: `SIM_SEED=<n>` alone when it is set
/// (to replay a failure), else `SIM_SEEDS` seeds (default `count`) from 0.
pub fn seeds(count: u64) -> Vec<u64> {
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match var("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..var("SIM_SEEDS").unwrap_or(count)).collect(),
    }
}

/// Runs `scenario` once per seed of [`seeds`]; a failure prints its seed
/// and the command that replays it, then fails the test.
pub fn for_each_seed(name: &str, count: u64, scenario: impl Fn(u64)) {
    for seed in seeds(count) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(seed)));
        if let Err(e) = run {
            eprintln!(
                "{name} failed with seed {seed}; replay it with: \
                 SIM_SEED={seed} cargo test -p chatwire-protocol {name}"
            );
            std::panic::resume_unwind(e);
        }
    }
}

/// The chats a chaotic run uses (every socket starts in the first).
pub const CHATS: [&str; 3] = ["general", "side", "ops:x"];

/// How many users a chaotic run has; each may open several tabs.
pub const USERS: usize = 3;

/// The most tabs open at once in a chaotic run.
pub const MAX_TABS: usize = 8;

/// What a `chat:send` of a chaotic run carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// A valid message.
    Valid,
    /// Empty text (refused as invalid).
    Empty,
    /// A payload that is not an object.
    NotObject,
    /// A chat id with a forbidden character.
    BadChat,
    /// A tempId that is neither a string nor a number.
    BadTempId,
}

/// How a store reply is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The oldest in-flight command is answered.
    Oldest,
    /// The in-flight command at this index (modulo their number) is answered.
    Pick(usize),
    /// The in-flight command at this index fails without running.
    Fail(usize),
    /// A reply fed before (at this index, modulo their number) is fed again.
    Duplicate(usize),
}

/// One thing that happens in a chaotic run. Indices are taken modulo what
/// exists, so any value is a valid step (for proptest and fuzzers alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosStep {
    /// A user opens a tab (ignored beyond [`MAX_TABS`] open tabs).
    Connect {
        /// The user, modulo [`USERS`].
        user: usize,
    },
    /// An open tab sends `chat:send`.
    Send {
        /// The tab, modulo the open tabs.
        tab: usize,
        /// What it carries.
        kind: SendKind,
        /// The chat, modulo [`CHATS`].
        chat: usize,
        /// A retry key from a small pool, so that retries collide.
        temp: Option<u8>,
        /// Whether it asks for an ack.
        ack: bool,
    },
    /// An open tab sends `n` valid messages at once (to reach the rate limit).
    Burst {
        /// The tab.
        tab: usize,
        /// How many.
        n: u8,
    },
    /// An open tab sends `chat:typing`.
    Typing {
        /// The tab.
        tab: usize,
        /// The chat.
        chat: usize,
        /// `isTyping`.
        on: bool,
    },
    /// An open tab joins a chat.
    Join {
        /// The tab.
        tab: usize,
        /// The chat.
        chat: usize,
    },
    /// An open tab leaves a chat.
    Leave {
        /// The tab.
        tab: usize,
        /// The chat.
        chat: usize,
    },
    /// An open tab marks a message it has seen as read.
    Read {
        /// The tab.
        tab: usize,
        /// Which of the messages it has seen.
        pick: usize,
    },
    /// A store reply is released.
    Release(Release),
    /// The clock jumps to the next deadline.
    Jump,
    /// The clock moves a little.
    Wait {
        /// Milliseconds.
        ms: u16,
    },
    /// An open tab's connection drops.
    Drop {
        /// The tab.
        tab: usize,
    },
}

/// How often each kind of [`ChaosStep`] is drawn by [`ChaosStep::random`].
#[derive(Debug, Clone, Copy)]
pub struct Weights {
    /// [`ChaosStep::Connect`].
    pub connect: u32,
    /// [`ChaosStep::Send`].
    pub send: u32,
    /// [`ChaosStep::Burst`].
    pub burst: u32,
    /// [`ChaosStep::Typing`].
    pub typing: u32,
    /// [`ChaosStep::Join`] and [`ChaosStep::Leave`].
    pub rooms: u32,
    /// [`ChaosStep::Read`].
    pub read: u32,
    /// [`ChaosStep::Release`].
    pub release: u32,
    /// [`ChaosStep::Jump`].
    pub jump: u32,
    /// [`ChaosStep::Wait`].
    pub wait: u32,
    /// [`ChaosStep::Drop`].
    pub drop: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            connect: 4,
            send: 20,
            burst: 1,
            typing: 3,
            rooms: 4,
            read: 3,
            release: 20,
            jump: 2,
            wait: 3,
            drop: 2,
        }
    }
}

impl ChaosStep {
    /// Draws a step.
    pub fn random(rng: &mut SimRng, w: &Weights) -> ChaosStep {
        let table = [
            w.connect, w.send, w.burst, w.typing, w.rooms, w.read, w.release, w.jump, w.wait,
            w.drop,
        ];
        let total: u32 = table.iter().sum();
        let mut x = rng.below(total.max(1) as usize) as u32;
        let kind = table
            .iter()
            .position(|&t| {
                if x < t {
                    true
                } else {
                    x -= t;
                    false
                }
            })
            .unwrap_or(0);
        let tab = rng.below(MAX_TABS);
        let chat = rng.below(CHATS.len());
        match kind {
            0 => ChaosStep::Connect {
                user: rng.below(USERS),
            },
            1 => ChaosStep::Send {
                tab,
                kind: match rng.below(10) {
                    0 => SendKind::Empty,
                    1 => SendKind::NotObject,
                    2 => SendKind::BadChat,
                    3 => SendKind::BadTempId,
                    _ => SendKind::Valid,
                },
                chat,
                temp: (rng.below(3) > 0).then(|| rng.below(4) as u8),
                ack: rng.below(4) > 0,
            },
            2 => ChaosStep::Burst {
                tab,
                n: 10 + rng.below(40) as u8,
            },
            3 => ChaosStep::Typing {
                tab,
                chat,
                on: rng.below(2) == 0,
            },
            4 if rng.below(2) == 0 => ChaosStep::Join { tab, chat },
            4 => ChaosStep::Leave { tab, chat },
            5 => ChaosStep::Read {
                tab,
                pick: rng.below(64),
            },
            6 => ChaosStep::Release(match rng.below(10) {
                0..=3 => Release::Oldest,
                4..=6 => Release::Pick(rng.below(64)),
                7 | 8 => Release::Fail(rng.below(64)),
                _ => Release::Duplicate(rng.below(64)),
            }),
            7 => ChaosStep::Jump,
            8 => ChaosStep::Wait {
                ms: rng.below(1500) as u16,
            },
            _ => ChaosStep::Drop { tab },
        }
    }
}

#[derive(Debug)]
struct Tab {
    conn: u64,
    user: usize,
    alive: bool,
    chats: std::collections::BTreeSet<&'static str>,
    next_ack: u64,
    outstanding: std::collections::BTreeSet<u64>,
    /// Message ids this tab learned (acked or broadcast to it), for reads.
    seen: Vec<ObjectId>,
    /// Message ids broadcast to it, each at most once.
    broadcast: std::collections::HashSet<ObjectId>,
    /// (userId, chat) this tab was last told is typing, from the
    /// `chat:typing` events it received in chats it is still in.
    believes_typing: std::collections::BTreeSet<(String, String)>,
    /// The model of its socket's event budget. The bucket's arithmetic has
    /// its own test; what this checks is that every event, of any name,
    /// spends from its own socket's bucket, and only those it lets through
    /// do anything else.
    events: TokenBucket,
}

/// What the run knows of an append it saw the core issue.
#[derive(Debug, Clone)]
struct Issued {
    conn: u64,
    author: ObjectId,
    temp: Option<String>,
    chat: String,
    seq: usize,
}

/// A run of several users against one [`Sim`], step by step, that checks
/// the chat service's promises after every step and panics on the first
/// broken one:
///
/// - `chat:ack` comes only once the message is in the store, and every ack of
///   one (user, tempId) names the same message;
/// - no two appends of one (user, tempId) are in flight at once, and the
///   store never holds two messages of one (user, tempId);
/// - a socket never receives its own `chat:new-message`, never one message
///   twice, and never an event of a chat it is not in;
/// - `chat:delivered` goes to the sender only; statuses only move forward;
/// - the rate limit refuses exactly when a token bucket model says so, and
///   so does each socket's event budget, for every event;
/// - a reply fed twice changes nothing; a closed socket receives nothing;
/// - no tab believes someone is typing (from the last `chat:typing` it got
///   of them in a chat it is in) unless one of their sockets said
///   `isTyping: true` there less than the typing timeout ago, and has not
///   since said false, left the chat or gone;
/// - at the end ([`Chaos::finish`]), every ack asked by an open socket was
///   answered exactly once, and each chat's history in (timestamp, id) order
///   is the order in which the messages were sent.
#[derive(Debug)]
pub struct Chaos {
    /// The simulation.
    pub sim: Sim,
    tabs: Vec<Tab>,
    issued: HashMap<ObjectId, Issued>,
    seen_ops: std::collections::HashSet<OpId>,
    acked: HashMap<(ObjectId, String), ObjectId>,
    statuses: HashMap<ObjectId, Status>,
    buckets: HashMap<ObjectId, (f64, Instant)>,
    rate_limited: usize,
    texts: usize,
    /// The connection whose frame the current step fed, if any.
    actor: Option<u64>,
    /// The typing indicators the service must hold: (connection, chat) to
    /// the instant each ends.
    typists: BTreeMap<(u64, &'static str), Instant>,
    /// How many steps ran, and how many `chat:send`s were refused by the rate limit.
    pub stats: ChaosStats,
}

/// Counters of a chaotic run, to see that it reached the states it meant to.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChaosStats {
    /// Steps applied.
    pub steps: usize,
    /// `chat:send`s refused by the rate limit (or the event budget).
    pub rate_limited: usize,
    /// Events of any name refused by their socket's event budget.
    pub over_budget: usize,
    /// `chat:ack`s received.
    pub acks: usize,
    /// `chat:new-message`s received.
    pub broadcasts: usize,
    /// Replies fed twice.
    pub duplicates: usize,
    /// Store replies failed.
    pub failures: usize,
    /// `chat:typing` events with `isTyping: false` received.
    pub typing_stops: usize,
}

/// The id of simulated user `n`.
pub fn user_id(n: usize) -> ObjectId {
    ObjectId([n as u8 + 1; 12])
}

impl Chaos {
    /// A fresh node with no tabs.
    pub fn new() -> Self {
        Chaos {
            sim: Sim::new(),
            tabs: Vec::new(),
            issued: HashMap::new(),
            seen_ops: Default::default(),
            acked: HashMap::new(),
            statuses: HashMap::new(),
            buckets: HashMap::new(),
            rate_limited: 0,
            texts: 0,
            actor: None,
            typists: BTreeMap::new(),
            stats: ChaosStats::default(),
        }
    }

    /// Runs `steps` steps drawn from `seed`, then [`Chaos::finish`].
    pub fn run_seed(seed: u64, steps: usize, weights: &Weights) -> Chaos {
        let mut rng = SimRng::new(seed);
        let mut chaos = Chaos::new();
        for _ in 0..steps {
            let step = ChaosStep::random(&mut rng, weights);
            chaos.step(step);
        }
        chaos.finish();
        chaos
    }

    fn open_tab(&self, i: usize) -> Option<usize> {
        let open: Vec<usize> = (0..self.tabs.len())
            .filter(|&t| self.tabs[t].alive)
            .collect();
        (!open.is_empty()).then(|| open[i % open.len()])
    }

    /// Applies one step and checks every promise.
    pub fn step(&mut self, step: ChaosStep) {
        self.stats.steps += 1;
        match step {
            ChaosStep::Connect { user } => {
                if self.tabs.iter().filter(|t| t.alive).count() < MAX_TABS {
                    self.connect(user % USERS);
                }
            }
            ChaosStep::Send {
                tab,
                kind,
                chat,
                temp,
                ack,
            } => {
                if let Some(t) = self.open_tab(tab) {
                    self.send_chat(t, kind, CHATS[chat % CHATS.len()], temp, ack);
                }
            }
            ChaosStep::Burst { tab, n } => {
                if let Some(t) = self.open_tab(tab) {
                    for _ in 0..n {
                        self.send_chat(t, SendKind::Valid, CHATS[0], None, false);
                    }
                }
            }
            ChaosStep::Typing { tab, chat, on } => {
                if let Some(t) = self.open_tab(tab) {
                    let chat = CHATS[chat % CHATS.len()];
                    let key = (self.tabs[t].conn, chat);
                    let admitted = self.admit(t);
                    if admitted && on {
                        self.typists
                            .insert(key, self.sim.now + DEFAULT_TYPING_TIMEOUT);
                    } else if admitted {
                        self.typists.remove(&key);
                    }
                    let payload = serde_json::json!({"chatId": chat, "isTyping": on});
                    self.emit_checked(t, "chat:typing", &payload, admitted);
                }
            }
            ChaosStep::Join { tab, chat } | ChaosStep::Leave { tab, chat } => {
                if let Some(t) = self.open_tab(tab) {
                    let chat = CHATS[chat % CHATS.len()];
                    let join = matches!(step, ChaosStep::Join { .. });
                    let admitted = self.admit(t);
                    // Rooms change synchronously, before anything else can be broadcast.
                    if admitted && join {
                        self.tabs[t].chats.insert(chat);
                    } else if admitted {
                        self.tabs[t].chats.remove(chat);
                        // It hears no more of the chat; and whoever heard it typing there hears it stop.
                        self.tabs[t].believes_typing.retain(|(_, c)| c != chat);
                        self.typists.remove(&(self.tabs[t].conn, chat));
                    }
                    let name = if join { "chat:join" } else { "chat:leave" };
                    let payload = serde_json::json!({ "chatId": chat });
                    self.emit_checked(t, name, &payload, admitted);
                }
            }
            ChaosStep::Read { tab, pick } => {
                if let Some(t) = self.open_tab(tab)
                    && !self.tabs[t].seen.is_empty()
                {
                    let seen = &self.tabs[t].seen;
                    let id = seen[pick % seen.len()];
                    let payload = serde_json::json!({ "messageIds": [id] });
                    let admitted = self.admit(t);
                    self.emit_checked(t, "chat:read", &payload, admitted);
                }
            }
            ChaosStep::Release(r) => self.release(r),
            ChaosStep::Jump => {
                self.sim.jump_to_deadline();
                self.observe();
            }
            ChaosStep::Wait { ms } => {
                self.sim.advance(Duration::from_millis(u64::from(ms)));
                self.observe();
            }
            ChaosStep::Drop { tab } => {
                if let Some(t) = self.open_tab(tab) {
                    self.tabs[t].alive = false;
                    let conn = self.tabs[t].conn;
                    self.typists.retain(|&(c, _), _| c != conn);
                    self.sim.drop_client(conn);
                    self.observe();
                }
            }
        }
    }

    fn connect(&mut self, user: usize) {
        let token = self.sim.token(user_id(user), &format!("user{user}"));
        let conn = self.sim.connect(Some(&token));
        let inbox = self.sim.take(conn);
        assert!(
            inbox.len() == 2 && inbox[0].starts_with("0{") && inbox[1].starts_with("40{"),
            "a valid token connects: {inbox:?}"
        );
        self.tabs.push(Tab {
            conn,
            user,
            alive: true,
            chats: [CHATS[0]].into_iter().collect(),
            next_ack: 0,
            outstanding: Default::default(),
            seen: Vec::new(),
            broadcast: Default::default(),
            believes_typing: Default::default(),
            events: TokenBucket::new(RateLimit::EVENTS, self.sim.now),
        });
        self.observe();
    }

    /// Takes a token from tab `t`'s budget model, as the service does on
    /// every event's arrival; whether there was one.
    fn admit(&mut self, t: usize) -> bool {
        let now = self.sim.now;
        let admitted = self.tabs[t].events.take(RateLimit::EVENTS, now);
        if !admitted {
            self.stats.over_budget += 1;
        }
        admitted
    }

    /// Emits an event with an ack that the budget model let through or
    /// not, and checks that the service refused it exactly when it did not.
    fn emit_checked(&mut self, t: usize, name: &str, payload: &serde_json::Value, admitted: bool) {
        let before = self.rate_limited;
        self.emit(t, name, payload, true);
        let limited = self.rate_limited > before;
        assert_eq!(
            limited, !admitted,
            "{name} from {}: rate limited {limited}, budget model admits {admitted}",
            self.tabs[t].conn
        );
    }

    fn emit(&mut self, t: usize, name: &str, payload: &serde_json::Value, ack: bool) {
        let tab = &mut self.tabs[t];
        let id = if ack {
            tab.next_ack += 1;
            tab.outstanding.insert(tab.next_ack);
            tab.next_ack.to_string()
        } else {
            String::new()
        };
        let frame = format!("42{id}{}", serde_json::json!([name, payload]));
        let conn = tab.conn;
        self.actor = Some(conn);
        self.sim.send(conn, &frame);
        self.observe();
        self.actor = None;
    }

    fn send_chat(&mut self, t: usize, kind: SendKind, chat: &str, temp: Option<u8>, ack: bool) {
        let user = user_id(self.tabs[t].user);
        self.texts += 1;
        let mut payload = serde_json::json!({"text": format!("m{}", self.texts), "chatId": chat});
        if let Some(n) = temp {
            payload["tempId"] = serde_json::json!(format!("t{n}"));
        }
        match kind {
            SendKind::Valid => {}
            SendKind::Empty => payload["text"] = serde_json::json!(""),
            SendKind::NotObject => payload = serde_json::json!("hello"),
            SendKind::BadChat => payload["chatId"] = serde_json::json!("no spaces"),
            SendKind::BadTempId => payload["tempId"] = serde_json::json!([1]),
        }
        // The socket's budget comes first; a send it refuses takes nothing
        // from the user's bucket.
        if !self.admit(t) {
            let before = self.rate_limited;
            self.emit(t, "chat:send", &payload, ack);
            assert!(
                self.rate_limited > before,
                "a send over budget went through"
            );
            self.stats.rate_limited += 1;
            return;
        }
        // The model bucket, refilled exactly as the service refills its own.
        let limit = RateLimit::SEND;
        let now = self.sim.now;
        let (tokens, at) = self.buckets.entry(user).or_insert((limit.burst, now));
        let dt = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + dt * limit.per_second).min(limit.burst);
        *at = now;
        let before = self.rate_limited;
        self.emit(t, "chat:send", &payload, ack);
        let refused = self.rate_limited > before;
        let tokens = &mut self.buckets.get_mut(&user).expect("inserted above").0;
        const EPS: f64 = 1e-6;
        assert!(
            !(refused && *tokens >= 1.0 + EPS),
            "rate limited with {tokens} tokens"
        );
        assert!(
            refused || *tokens >= 1.0 - EPS,
            "not rate limited with {tokens} tokens"
        );
        if refused {
            self.stats.rate_limited += 1;
        } else {
            *tokens = (*tokens - 1.0).max(0.0);
        }
    }

    fn release(&mut self, r: Release) {
        let n = self.sim.in_flight.len();
        match r {
            Release::Oldest => {
                self.sim.complete_oldest();
            }
            Release::Pick(i) if n > 0 => {
                self.sim.complete_at(i % n);
            }
            Release::Fail(i) if n > 0 => {
                self.stats.failures += 1;
                self.sim.fail_at(i % n);
            }
            Release::Duplicate(i) if !self.sim.replied.is_empty() => {
                self.stats.duplicates += 1;
                let before = self.sim.in_flight.len();
                self.sim.duplicate_reply(i % self.sim.replied.len());
                assert_eq!(
                    self.sim.in_flight.len(),
                    before,
                    "a duplicated reply issued a command"
                );
                for (conn, c) in &self.sim.clients {
                    assert!(
                        c.inbox.is_empty(),
                        "a duplicated reply sent {:?} to {conn}",
                        c.inbox
                    );
                }
            }
            _ => {}
        }
        self.observe();
    }

    /// Reads every inbox and checks every promise against what arrived.
    fn observe(&mut self) {
        self.record_issued();
        for t in 0..self.tabs.len() {
            let conn = self.tabs[t].conn;
            let inbox = self.sim.take(conn);
            if !self.tabs[t].alive {
                assert!(inbox.is_empty(), "closed tab {conn} received {inbox:?}");
                continue;
            }
            let mut pings = 0;
            for frame in inbox {
                if frame == "2" {
                    pings += 1;
                } else {
                    self.check_frame(t, &frame);
                }
            }
            if self.sim.clients.get(&conn).is_some_and(|c| c.closed) {
                self.tabs[t].alive = false;
                self.typists.retain(|&(c, _), _| c != conn);
            } else {
                // The fake clients answer every ping, so only drops end them.
                for _ in 0..pings {
                    self.sim.send(conn, "3");
                }
            }
        }
        self.check_typing();
        for m in self.sim.store.messages() {
            if let Some(&old) = self.statuses.get(&m.id) {
                assert!(
                    m.status >= old,
                    "status of {} went back from {old:?} to {:?}",
                    m.id,
                    m.status
                );
            }
            self.statuses.insert(m.id, m.status);
        }
    }

    /// Ends the indicators the service must have ended by now, then checks
    /// that every tab's belief of who is typing is held up by one.
    fn check_typing(&mut self) {
        let now = self.sim.now;
        self.typists.retain(|_, until| *until > now);
        for tab in self.tabs.iter().filter(|t| t.alive) {
            for (user, chat) in &tab.believes_typing {
                let held = self.typists.keys().any(|&(conn, c)| {
                    c == chat
                        && self
                            .tabs
                            .iter()
                            .any(|t| t.conn == conn && user_id(t.user).to_hex() == *user)
                });
                assert!(
                    held,
                    "{} still believes {user} is typing in {chat}",
                    tab.conn
                );
            }
        }
    }

    /// Notes the appends the last step issued, and checks no two appends of
    /// one (user, tempId) are in flight at once.
    fn record_issued(&mut self) {
        let mut keys = std::collections::HashSet::new();
        for (op, cmd) in &self.sim.in_flight {
            let StoreCommand::AppendMessage(m) = cmd else {
                continue;
            };
            if let Some(t) = &m.temp_id {
                assert!(
                    keys.insert((m.message.author_id, t.clone())),
                    "two appends of tempId {t} in flight at once"
                );
            }
            if self.seen_ops.insert(*op) {
                let conn = self.actor.expect("only a chat:send issues an append");
                let seq = self.issued.len();
                self.issued.insert(
                    m.message.id,
                    Issued {
                        conn,
                        author: m.message.author_id,
                        temp: m.temp_id.clone(),
                        chat: m.message.chat_id.clone(),
                        seq,
                    },
                );
            }
        }
    }

    fn check_frame(&mut self, t: usize, frame: &str) {
        let conn = self.tabs[t].conn;
        if let Some(rest) = frame.strip_prefix("43") {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let id: u64 = rest[..digits].parse().expect("an ack names its id");
            assert!(
                self.tabs[t].outstanding.remove(&id),
                "ack {id} to {conn} was not asked or came twice"
            );
            return;
        }
        let Some(json) = frame.strip_prefix("42") else {
            return;
        };
        let v: serde_json::Value = serde_json::from_str(json).expect("events are JSON");
        let name = v[0].as_str().expect("an event has a name");
        let arg = &v[1];
        let id_of = |v: &serde_json::Value| -> ObjectId {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .expect("a message id")
        };
        match name {
            "chat:ack" => {
                self.stats.acks += 1;
                let id = id_of(&arg["id"]);
                let m = self
                    .sim
                    .store
                    .message(id)
                    .unwrap_or_else(|| panic!("ack of {id} before it was stored"));
                assert_eq!(arg["timestamp"].as_i64(), Some(m.timestamp));
                let n = self
                    .sim
                    .store
                    .chat(&m.chat_id)
                    .iter()
                    .filter(|x| x.id == id)
                    .count();
                assert_eq!(n, 1, "acked message {id} is in its chat {n} times");
                if let Some(temp) = arg["tempId"].as_str() {
                    let user = user_id(self.tabs[t].user);
                    let first = *self.acked.entry((user, temp.to_owned())).or_insert(id);
                    assert_eq!(
                        first, id,
                        "two acks of tempId {temp} name different messages"
                    );
                }
                self.tabs[t].seen.push(id);
            }
            "chat:new-message" => {
                self.stats.broadcasts += 1;
                let id = id_of(&arg["id"]);
                let chat = arg["chatId"].as_str().expect("a message names its chat");
                assert!(
                    self.tabs[t].chats.contains(chat),
                    "{conn} got a message of {chat}, which it is not in"
                );
                assert!(
                    self.sim.store.message(id).is_some(),
                    "broadcast of {id} before it was stored"
                );
                assert_eq!(arg["status"], "sent");
                let issued = &self.issued[&id];
                assert_ne!(issued.conn, conn, "{conn} received its own message {id}");
                assert!(
                    self.tabs[t].broadcast.insert(id),
                    "{conn} received {id} twice"
                );
                self.tabs[t].seen.push(id);
            }
            "chat:delivered" => {
                let id = id_of(&arg["messageId"]);
                assert_eq!(
                    self.issued[&id].conn, conn,
                    "delivered of {id} to a non-sender"
                );
            }
            "chat:typing" => {
                let chat = arg["chatId"].as_str().expect("typing names its chat");
                assert!(
                    self.tabs[t].chats.contains(chat),
                    "{conn} got typing of {chat}"
                );
                let user = arg["userId"].as_str().expect("typing names its user");
                let key = (user.to_owned(), chat.to_owned());
                if arg["isTyping"] == true {
                    self.tabs[t].believes_typing.insert(key);
                } else {
                    self.stats.typing_stops += 1;
                    self.tabs[t].believes_typing.remove(&key);
                }
            }
            "chat:read" => {
                for id in arg["messageIds"].as_array().expect("ids") {
                    let chat = &self.issued[&id_of(id)].chat;
                    assert!(
                        self.tabs[t].chats.contains(chat.as_str()),
                        "{conn} got a receipt of {chat}"
                    );
                }
            }
            "error" => {
                if arg["code"] == "rate_limited" {
                    self.rate_limited += 1;
                }
            }
            other => panic!("unexpected event {other}"),
        }
    }

    /// Releases every store command still in flight, then checks that every
    /// ack was answered and every chat's history is in sending order.
    pub fn finish(&mut self) {
        while self.sim.complete_oldest() {
            self.observe();
        }
        for tab in self.tabs.iter().filter(|t| t.alive) {
            assert!(
                tab.outstanding.is_empty(),
                "acks {:?} of {} never answered",
                tab.outstanding,
                tab.conn
            );
        }
        let mut keys = std::collections::HashSet::new();
        for chat in CHATS {
            let history = self.sim.store.chat(chat);
            let order: Vec<usize> = history.iter().map(|m| self.issued[&m.id].seq).collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "history of {chat} is not in sending order: {order:?}"
            );
            for m in &history {
                let i = &self.issued[&m.id];
                assert_eq!(i.author, m.author_id);
                if let Some(t) = &i.temp {
                    assert!(
                        keys.insert((i.author, t.clone())),
                        "tempId {t} stored twice"
                    );
                }
            }
        }
    }
}

impl Default for Chaos {
    fn default() -> Self {
        Chaos::new()
    }
}
