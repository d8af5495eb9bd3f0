//! The store as an effect: the commands the core emits, the replies it is fed,
//! and the trait a store implements so that a host can execute them.
//!
//! The trait returns plain `std` futures, so a store crate depends on this
//! crate alone and runs under any executor.

use std::future::Future;
use std::pin::Pin;

use crate::model::{Message, ObjectId, UserRecord};

/// A boxed future a store returns; `'static` so that hosts can spawn it.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

pub mod memory;

/// The store could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// Whether asking again may succeed.
    pub kind: StoreErrorKind,
    /// What the store said: for the host's logs, never for a client (it
    /// may name hosts or credentials).
    pub message: String,
}

/// Whose trouble a [`StoreError`] is, and whether it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store is away or overloaded (down, unreachable, a full disk, a
    /// timeout, a failover): the same command may succeed later. Clients
    /// are told `store_unavailable` (503 over HTTP).
    Transient,
    /// The store refused the command for good (corrupt data, a schema it
    /// does not know, a bug): asking again will not help. Clients are told
    /// the same, and the host logs it loudly: someone must look.
    Permanent,
}

impl StoreError {
    /// An error that may pass.
    pub fn transient(message: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Transient,
            message: message.into(),
        }
    }

    /// An error that will not pass by itself.
    pub fn permanent(message: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Permanent,
            message: message.into(),
        }
    }

    /// Whether it will not pass by itself.
    pub fn is_permanent(&self) -> bool {
        self.kind == StoreErrorKind::Permanent
    }
}

/// A new message to append durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The message as it will be stored (status `sent`).
    pub message: Message,
    /// The client's retry key; with the author's id it names the message
    /// for 24 hours, so a retry returns the first ack.
    pub temp_id: Option<String>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// Stored and durable.
    Stored,
    /// The same (author, tempId) was stored before: nothing new was stored.
    Duplicate {
        /// The first message's id.
        id: ObjectId,
        /// The first message's timestamp.
        timestamp: i64,
    },
}

/// What a user insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateUser {
    /// Inserted.
    Created,
    /// The name is taken (case-insensitively).
    Taken,
}

/// One side of a history window: a time, a message of the chat, or both,
/// in which case the tighter of the two bounds the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bound {
    /// A time in milliseconds: the bound is on the timestamp alone.
    pub time: Option<i64>,
    /// The id of a message in the chat: the bound is that message's (timestamp, id).
    pub id: Option<ObjectId>,
}

impl Bound {
    /// A bound at a time.
    pub fn time(ms: i64) -> Self {
        Bound {
            time: Some(ms),
            id: None,
        }
    }

    /// A bound at a message.
    pub fn id(id: ObjectId) -> Self {
        Bound {
            time: None,
            id: Some(id),
        }
    }

    /// Whether it bounds anything.
    pub fn is_set(&self) -> bool {
        self.time.is_some() || self.id.is_some()
    }

    /// This bound as a point of the chat's (timestamp, id) order, given the
    /// timestamp of the message its `id` names (`anchor`; the store looks it
    /// up): the window holds what lies strictly on `side`'s side of it.
    /// `None` when it bounds nothing.
    pub fn edge(&self, side: Side, anchor: Option<i64>) -> Option<Edge> {
        let time = self.time.map(|timestamp| Edge {
            timestamp,
            id: None,
        });
        let message = self.id.zip(anchor).map(|(id, timestamp)| Edge {
            timestamp,
            id: Some(id),
        });
        match (time, message) {
            (Some(a), Some(b)) => Some(match side {
                Side::Before => std::cmp::min_by_key(a, b, |e| e.key(side)),
                Side::After => std::cmp::max_by_key(a, b, |e| e.key(side)),
            }),
            (a, b) => a.or(b),
        }
    }
}

/// Which side of a window a bound is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `before`/`beforeId`: the window holds what is older.
    Before,
    /// `after`/`afterId`: the window holds what is newer.
    After,
}

/// A bound resolved to a point of a chat's (timestamp, id) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The timestamp, in milliseconds.
    pub timestamp: i64,
    /// The message at the edge; `None` for a time, which takes the whole
    /// millisecond out of the window.
    pub id: Option<ObjectId>,
}

impl Edge {
    /// The edge as a (timestamp, id) key: a time stands below every id of its
    /// millisecond on the before side and above every one on the after side,
    /// so that the window excludes the whole millisecond.
    pub fn key(&self, side: Side) -> (i64, ObjectId) {
        let id = self.id.unwrap_or(match side {
            Side::Before => ObjectId([0; 12]),
            Side::After => ObjectId([0xff; 12]),
        });
        (self.timestamp, id)
    }
}

/// Which slice of a chat's history to read: what lies strictly between its
/// bounds. With an after-bound the oldest `limit` of them (catching up);
/// otherwise the newest `limit` (paging back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The newer side's bound.
    pub before: Bound,
    /// The older side's bound.
    pub after: Bound,
}

impl Window {
    /// The newest messages of the chat.
    pub const LATEST: Window = Window {
        before: Bound {
            time: None,
            id: None,
        },
        after: Bound {
            time: None,
            id: None,
        },
    };

    /// What lies before `bound`.
    pub fn before(bound: Bound) -> Self {
        Window {
            before: bound,
            ..Window::LATEST
        }
    }

    /// What lies after `bound`.
    pub fn after(bound: Bound) -> Self {
        Window {
            after: bound,
            ..Window::LATEST
        }
    }

    /// Whether the page is the oldest `limit` of the window (it has an
    /// after-bound) rather than the newest.
    pub fn oldest_first(&self) -> bool {
        self.after.is_set()
    }
}

/// A history read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The chat to read.
    pub chat_id: String,
    /// Which slice.
    pub window: Window,
    /// How many at most (1..=100).
    pub limit: u32,
}

/// The answer to a history read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// The messages, oldest first.
    Messages(Vec<Message>),
    /// The `id` of the bound on this side names no message of that chat.
    UnknownAnchor(Side),
}

/// One read receipt that the store recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReceipt {
    /// The message read.
    pub id: ObjectId,
    /// Its chat.
    pub chat_id: String,
}

/// A durable store of users, messages, receipts and retry keys.
///
/// Every method is one atomic operation. An implementation must make
/// `append_message` durable (committed to disk, or to a majority) before its
/// future resolves: the core acknowledges a message only then.
pub trait Store: Send + Sync + 'static {
    /// Answers when the store is reachable.
    fn ping(&self) -> StoreFuture<()>;
    /// Inserts a user unless the name is taken, compared without regard to case.
    fn create_user(&self, user: UserRecord) -> StoreFuture<CreateUser>;
    /// Finds a user by name, without regard to case.
    fn find_user(&self, username: String) -> StoreFuture<Option<UserRecord>>;
    /// Appends a message durably, or returns the first one with the same
    /// (author, tempId) stored in the last 24 hours.
    fn append_message(&self, message: NewMessage) -> StoreFuture<Append>;
    /// Reads a slice of a chat's history.
    fn history(&self, query: HistoryQuery) -> StoreFuture<History>;
    /// Moves a message from `sent` to `delivered` (never back).
    fn mark_delivered(&self, id: ObjectId) -> StoreFuture<()>;
    /// Records that `reader` read these messages; moves each one not written
    /// by `reader` to `read`, and returns those with their chats.
    fn mark_read(&self, ids: Vec<ObjectId>, reader: ObjectId) -> StoreFuture<Vec<ReadReceipt>>;
    /// Takes a token of a user's bucket shared by every instance of a
    /// cluster (the per-user `chat:send` limit); true if there was one. The
    /// same `ticket` again (a retry) answers as the first take did and
    /// takes nothing. A store that instances do not share has no such
    /// bucket: it refuses, and the core never asks it (it keeps the
    /// buckets of one instance itself).
    fn take_token(&self, take: TakeToken) -> StoreFuture<Taken> {
        let _ = take;
        Box::pin(std::future::ready(Err(StoreError::permanent(
            "this store keeps no rate limit shared by instances",
        ))))
    }
}

/// A take of a token of a user's bucket shared by a cluster's instances
/// ([`Store::take_token`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TakeToken {
    /// Whose bucket.
    pub user: ObjectId,
    /// Its rate and size.
    pub limit: crate::rate::RateLimit,
    /// Names this take, so that a retry of it takes nothing more.
    pub ticket: String,
    /// The asking instance's wall clock, for a store with no clock of its
    /// own (Redis uses its own).
    pub at_ms: i64,
    /// A bus entry (sealed, with its topic: its chat's) that holds the
    /// send's place in its chat's order: put on the cluster's bus in the
    /// same atomic step as the take, and only if a token was taken (a
    /// retried take puts nothing more).
    pub place: Option<crate::bus::Entry>,
}

/// What a [`TakeToken`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Whether there was a token.
    pub took: bool,
    /// Where the take's [`TakeToken::place`] went on the bus, if it went.
    pub place: Option<Place>,
}

/// A position on the cluster's bus: the entry's time by the bus's clock
/// (milliseconds since the Unix epoch) and its number within that
/// millisecond. Positions grow in the bus's one order (a Redis stream
/// entry's id, `<ms>-<n>`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Place {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Its number within that millisecond.
    pub n: u64,
}

/// A command the core asks its host to run against the store.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StoreCommand {
    /// [`Store::ping`].
    Ping,
    /// [`Store::create_user`].
    CreateUser(UserRecord),
    /// [`Store::find_user`].
    FindUser(String),
    /// [`Store::append_message`].
    AppendMessage(NewMessage),
    /// [`Store::history`].
    History(HistoryQuery),
    /// [`Store::mark_delivered`].
    MarkDelivered(ObjectId),
    /// [`Store::mark_read`].
    MarkRead {
        /// The messages named.
        ids: Vec<ObjectId>,
        /// Who read them.
        reader: ObjectId,
    },
    /// [`Store::take_token`].
    TakeToken(TakeToken),
}

impl StoreCommand {
    /// Every value [`StoreCommand::kind`] returns.
    pub const KINDS: [&'static str; 8] = [
        "ping",
        "create_user",
        "find_user",
        "append",
        "history",
        "mark_delivered",
        "mark_read",
        "take_token",
    ];

    /// What kind of command this is, without its data: a host's metric
    /// label or log field (never an id, a name or a message).
    pub fn kind(&self) -> &'static str {
        let i = match self {
            StoreCommand::Ping => 0,
            StoreCommand::CreateUser(_) => 1,
            StoreCommand::FindUser(_) => 2,
            StoreCommand::AppendMessage(_) => 3,
            StoreCommand::History(_) => 4,
            StoreCommand::MarkDelivered(_) => 5,
            StoreCommand::MarkRead { .. } => 6,
            StoreCommand::TakeToken(_) => 7,
        };
        Self::KINDS[i]
    }
}

/// The result of a [`StoreCommand`], fed back to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreReply {
    /// The store failed; the command had no effect that was reported.
    Failed(StoreError),
    /// [`Store::ping`] answered.
    Pong,
    /// [`Store::create_user`] answered.
    CreateUser(CreateUser),
    /// [`Store::find_user`] answered.
    User(Option<UserRecord>),
    /// [`Store::append_message`] answered.
    Appended(Append),
    /// [`Store::history`] answered.
    History(History),
    /// [`Store::mark_delivered`] answered.
    Delivered,
    /// [`Store::mark_read`] answered.
    Read(Vec<ReadReceipt>),
    /// [`Store::take_token`] answered.
    Took(Taken),
}

impl StoreReply {
    /// Whether this is an answer to a command of `kind`
    /// ([`StoreCommand::kind`]): its own reply, or a failure.
    pub fn answers(&self, kind: &str) -> bool {
        // The index of its command in `StoreCommand::KINDS`.
        let own = match self {
            StoreReply::Failed(_) => return true,
            StoreReply::Pong => 0,
            StoreReply::CreateUser(_) => 1,
            StoreReply::User(_) => 2,
            StoreReply::Appended(_) => 3,
            StoreReply::History(_) => 4,
            StoreReply::Delivered => 5,
            StoreReply::Read(_) => 6,
            StoreReply::Took(_) => 7,
        };
        StoreCommand::KINDS[own] == kind
    }
}

/// Runs one command against a store: the only place that maps commands to
/// the trait, shared by every host.
pub async fn execute(store: &dyn Store, command: StoreCommand) -> StoreReply {
    let r = match command {
        StoreCommand::Ping => store.ping().await.map(|()| StoreReply::Pong),
        StoreCommand::CreateUser(u) => store.create_user(u).await.map(StoreReply::CreateUser),
        StoreCommand::FindUser(n) => store.find_user(n).await.map(StoreReply::User),
        StoreCommand::AppendMessage(m) => store.append_message(m).await.map(StoreReply::Appended),
        StoreCommand::History(q) => store.history(q).await.map(StoreReply::History),
        StoreCommand::MarkDelivered(id) => store
            .mark_delivered(id)
            .await
            .map(|()| StoreReply::Delivered),
        StoreCommand::MarkRead { ids, reader } => {
            store.mark_read(ids, reader).await.map(StoreReply::Read)
        }
        StoreCommand::TakeToken(take) => store.take_token(take).await.map(StoreReply::Took),
    };
    r.unwrap_or_else(StoreReply::Failed)
}

/// How long a retry key names its message.
pub const DEDUPE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
