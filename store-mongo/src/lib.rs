//! chatwire's MongoDB store, on the official `mongodb` driver.
//!
//! [`MongoStore`] implements [`protocol::store::Store`] under any executor:
//! it owns a small tokio runtime of its own, runs every operation there, and
//! hands back a future that only waits on a `futures-channel` oneshot, so the
//! caller needs no tokio context.
//!
//! What it keeps, and how:
//!
//! - `users`: `{_id, username, username_lower, hashed_password, createdAt}`,
//!   unique on `username_lower` (names are unique without regard to case).
//! - `messages`: the Python service's shape, `{_id: ObjectId, chatId, author,
//!   authorId, text, timestamp: date, status, type}`, plus `tempId` when the
//!   client sent one and `readBy` once someone read it. Documents that service
//!   wrote stay readable: a missing `chatId` is `general`, a string `authorId`
//!   is parsed, a missing `status` is `sent`.
//! - History is served by the index `chat_history` on
//!   `(chatId, timestamp desc, _id desc)`, which every history query hints.
//! - Retries: a partial unique index `retry_key` on `(authorId, tempId)`
//!   (where `tempId` exists) makes the message insert itself the dedupe
//!   check, in one single-document write: no second collection can be left
//!   half-written. A key older than [`DEDUPE_WINDOW_MS`] is released (its
//!   `tempId` unset) when the same key comes again.
//! - Durability: writes use `w: majority, j: true` unless the URL sets `w` or
//!   `journal` itself.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    Acknowledgment, ClientOptions, FindOptions, Hint, IndexOptions, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use protocol::model::{DEFAULT_CHAT, Message, ObjectId, Status, UserRecord};
use protocol::store::{
    Append, CreateUser, DEDUPE_WINDOW_MS, History, HistoryQuery, NewMessage, ReadReceipt, Side,
    Store, StoreError, StoreFuture,
};

/// The database used when the URL names none.
pub const DEFAULT_DATABASE: &str = "chatdb";
/// The server selection timeout used when the URL sets no `serverSelectionTimeoutMS`.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The name of the index every history query uses.
pub const HISTORY_INDEX: &str = "chat_history";
/// The name of the partial unique index on `(authorId, tempId)`.
pub const RETRY_KEY_INDEX: &str = "retry_key";

/// MongoDB's code for a duplicate key.
const DUPLICATE_KEY: i32 = 11000;

/// Why [`MongoStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a MongoDB connection string the driver accepts.
    #[error("bad MongoDB URL: {0}")]
    BadUrl(String),
    /// The store's own runtime could not be started.
    #[error("cannot start the MongoDB store's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// No server answered within the time allowed.
    #[error("MongoDB unreachable after {attempts} attempts in {:.1} s: {last}", waited.as_secs_f64())]
    Unreachable {
        /// How many times it tried.
        attempts: u32,
        /// How long it tried.
        waited: Duration,
        /// The last attempt's error.
        last: String,
    },
    /// The server answered but refused to set up the collections or indexes.
    #[error("cannot set up the MongoDB collections: {0}")]
    Setup(String),
}

/// How [`MongoStore::connect_with`] connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How long to keep trying to reach a server before giving up.
    pub give_up_after: Duration,
    /// The first pause between attempts; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest pause between attempts.
    pub max_backoff: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            give_up_after: Duration::from_secs(20),
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
}

/// The collections the store works on; cheap to clone into a task.
#[derive(Debug, Clone)]
struct Collections {
    db: Database,
    users: Collection<Document>,
    messages: Collection<Document>,
}

/// Shuts the store's runtime down without blocking, so that a store can be
/// dropped anywhere (inside another runtime included).
#[derive(Debug)]
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A [`Store`] on MongoDB; see the crate docs for what it keeps and how.
#[derive(Debug)]
pub struct MongoStore {
    colls: Collections,
    database: String,
    handle: tokio::runtime::Handle,
    // Last: the client above is dropped while the runtime still runs.
    _runtime: RuntimeGuard,
}

impl MongoStore {
    /// Connects with [`ConnectOptions::default`]: see [`MongoStore::connect_with`].
    pub fn connect(url: &str) -> Result<MongoStore, ConnectError> {
        Self::connect_with(url, &ConnectOptions::default())
    }

    /// Parses `url`, starts the store's runtime, pings the server until it
    /// answers (with backoff, logging each failed attempt, for at most
    /// `options.give_up_after`), then creates the indexes.
    ///
    /// Blocks the calling thread until then; callable from inside any
    /// executor, tokio's included.
    pub fn connect_with(url: &str, options: &ConnectOptions) -> Result<MongoStore, ConnectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chatwire-mongo")
            .enable_all()
            .build()
            .map_err(ConnectError::Runtime)?;
        let handle = runtime.handle().clone();
        let guard = RuntimeGuard(Some(runtime));
        let (tx, rx) = mpsc::channel();
        let url = url.to_owned();
        let options = options.clone();
        handle.spawn(async move {
            let _ = tx.send(connect_inner(&url, &options).await);
        });
        let (colls, database) = rx.recv().map_err(|_| {
            ConnectError::Runtime(std::io::Error::other("the connecting task stopped"))
        })??;
        Ok(MongoStore {
            colls,
            database,
            handle,
            _runtime: guard,
        })
    }

    /// The name of the database in use.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The write concern every write uses: `w: majority, j: true` unless the
    /// URL set `w` or `journal`.
    pub fn write_concern(&self) -> Option<WriteConcern> {
        self.colls.messages.write_concern().cloned()
    }

    /// Runs `explain` (verbosity `queryPlanner`) on the exact `find` that
    /// [`Store::history`] would run for `query`, and returns the server's
    /// answer; a bound's id that names no message of the chat answers `None`.
    pub fn explain_history(&self, query: HistoryQuery) -> StoreFuture<Option<Document>> {
        self.run(move |c| async move {
            let Ok(plan) = plan_history(&c, &query).await? else {
                return Ok(None);
            };
            let command = doc! {
                "explain": {
                    "find": c.messages.name(),
                    "filter": plan.filter,
                    "sort": plan.sort,
                    "hint": HISTORY_INDEX,
                    "limit": i64::from(query.limit),
                },
                "verbosity": "queryPlanner",
            };
            c.db.run_command(command).await.map(Some).map_err(failed)
        })
    }

    /// Runs `work` on the store's runtime; the returned future needs no
    /// runtime of any kind.
    fn run<T, F>(&self, work: impl FnOnce(Collections) -> F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let fut = work(self.colls.clone());
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(StoreError::transient("the MongoDB store has shut down")))
        })
    }
}

/// `url` with its password (if any) replaced by `***`, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..start], &url[start + at..])
        }
        None => url.to_owned(),
    }
}

/// Everything `connect_with` does on the store's runtime.
async fn connect_inner(
    url: &str,
    options: &ConnectOptions,
) -> Result<(Collections, String), ConnectError> {
    let mut client_options = ClientOptions::parse(url)
        .await
        .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
    let database = client_options
        .default_database
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
    client_options
        .server_selection_timeout
        .get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
    client_options
        .connect_timeout
        .get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
    client_options
        .app_name
        .get_or_insert_with(|| "chatwire".to_owned());
    client_options.write_concern = Some(durable(client_options.write_concern.take()));
    let client =
        Client::with_options(client_options).map_err(|e| ConnectError::BadUrl(e.to_string()))?;
    let db = client.database(&database);

    let started = Instant::now();
    let mut backoff = options.first_backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match db.run_command(doc! {"ping": 1}).await {
            Ok(_) => break,
            Err(e) => {
                let waited = started.elapsed();
                let reason = brief(&e);
                if waited + backoff >= options.give_up_after {
                    return Err(ConnectError::Unreachable {
                        attempts,
                        waited,
                        last: reason,
                    });
                }
                tracing::warn!(
                    "MongoDB not reachable yet (attempt {attempts}, next in {backoff:?}): {reason}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.max_backoff);
            }
        }
    }
    tracing::info!(%database, attempts, "connected to MongoDB");

    let colls = Collections {
        users: db.collection("users"),
        messages: db.collection("messages"),
        db,
    };
    setup(&colls)
        .await
        .map_err(|e| ConnectError::Setup(e.to_string()))?;
    Ok((colls, database))
}

/// `w: majority, j: true`, each kept as the URL set it where it did.
fn durable(from_url: Option<WriteConcern>) -> WriteConcern {
    let mut wc = from_url.unwrap_or_default();
    wc.w.get_or_insert(Acknowledgment::Majority);
    wc.journal.get_or_insert(true);
    wc
}

/// Backfills `username_lower` on users written without it (by the Python
/// service), then creates the indexes (a no-op when they exist).
async fn setup(c: &Collections) -> mongodb::error::Result<()> {
    let mut legacy = c
        .users
        .find(doc! {"username_lower": {"$exists": false}, "username": {"$type": "string"}})
        .await?;
    while let Some(user) = legacy.try_next().await? {
        if let (Some(id), Ok(name)) = (user.get("_id"), user.get_str("username")) {
            c.users
                .update_one(
                    doc! {"_id": id.clone()},
                    doc! {"$set": {"username_lower": name.to_lowercase()}},
                )
                .await?;
        }
    }
    c.users
        .create_index(
            IndexModel::builder()
                .keys(doc! {"username_lower": 1})
                .options(
                    IndexOptions::builder()
                        .name("username_lower".to_owned())
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await?;
    c.messages
        .create_index(
            IndexModel::builder()
                .keys(doc! {"chatId": 1, "timestamp": -1, "_id": -1})
                .options(
                    IndexOptions::builder()
                        .name(HISTORY_INDEX.to_owned())
                        .build(),
                )
                .build(),
        )
        .await?;
    c.messages
        .create_index(
            IndexModel::builder()
                .keys(doc! {"authorId": 1, "tempId": 1})
                .options(
                    IndexOptions::builder()
                        .name(RETRY_KEY_INDEX.to_owned())
                        .unique(true)
                        .partial_filter_expression(doc! {"tempId": {"$exists": true}})
                        .build(),
                )
                .build(),
        )
        .await?;
    Ok(())
}

/// Turns a driver error into the core's error, logging it: transient when
/// the server is out of reach or changing hands (network, server selection,
/// a failover, a shutdown, a time limit), permanent otherwise.
fn failed(e: mongodb::error::Error) -> StoreError {
    let reason = brief(&e);
    tracing::warn!(error = %reason, "MongoDB operation failed");
    if is_transient(&e) {
        StoreError::transient(reason)
    } else {
        StoreError::permanent(reason)
    }
}

/// A driver error in one line, for a person: the driver's own text dumps
/// the whole topology for a server selection timeout, and its labels and
/// sources for every error.
fn brief(e: &mongodb::error::Error) -> String {
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { message, .. } => servers_unanswered(message),
        kind => kind.to_string(),
    }
}

/// A server selection timeout's message as each server's address and last
/// error (`no MongoDB server answered: 127.0.0.1:27017: I/O error: ...`).
fn servers_unanswered(message: &str) -> String {
    let servers: Vec<String> = message
        .split("{ Address: ")
        .skip(1)
        .map(|server| {
            let address = server.split(',').next().unwrap_or_default().trim();
            match server.split_once("Error: Kind: ") {
                Some((_, error)) => {
                    let error = error.split(", labels:").next().unwrap_or(error).trim();
                    format!("{address}: {error}")
                }
                None => address.to_owned(),
            }
        })
        .collect();
    if servers.is_empty() {
        format!("no MongoDB server answered ({message})")
    } else {
        format!("no MongoDB server answered: {}", servers.join("; "))
    }
}

/// Server error codes that pass: NotWritablePrimary, NotPrimaryNoSecondaryOk,
/// NotPrimaryOrSecondary, PrimarySteppedDown, ShutdownInProgress,
/// InterruptedAtShutdown, InterruptedDueToReplStateChange,
/// ExceededTimeLimit, NetworkTimeout, HostUnreachable, HostNotFound,
/// SocketException, WriteConcernFailed.
const TRANSIENT_CODES: [i32; 13] = [
    10107, 13435, 13436, 189, 91, 11600, 11602, 262, 89, 6, 7, 9001, 64,
];

fn is_transient(e: &mongodb::error::Error) -> bool {
    if e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
        || e.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
    {
        return true;
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => TRANSIENT_CODES.contains(&w.code),
        _ => false,
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn oid(id: ObjectId) -> bson::oid::ObjectId {
    bson::oid::ObjectId::from_bytes(id.0)
}

fn from_oid(id: bson::oid::ObjectId) -> ObjectId {
    ObjectId(id.bytes())
}

/// An id as the Python service may have written it: an ObjectId or its hex.
fn any_id(v: Option<&Bson>) -> Option<ObjectId> {
    match v? {
        Bson::ObjectId(o) => Some(from_oid(*o)),
        Bson::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Milliseconds from a date, or from a number the way an older writer may have kept it.
fn millis(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::DateTime(d) => Some(d.timestamp_millis()),
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        // Truncation is meant: a float here is whole milliseconds.
        #[allow(clippy::cast_possible_truncation)]
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

fn string_or(d: &Document, key: &str, default: &str) -> String {
    d.get_str(key).unwrap_or(default).to_owned()
}

/// A stored message, tolerant of the Python service's documents; `None` for
/// a document without an ObjectId `_id`.
fn message_from(d: &Document) -> Option<Message> {
    let id = match d.get("_id") {
        Some(Bson::ObjectId(o)) => from_oid(*o),
        _ => return None,
    };
    Some(Message {
        id,
        chat_id: string_or(d, "chatId", DEFAULT_CHAT),
        author: string_or(d, "author", ""),
        author_id: any_id(d.get("authorId")).unwrap_or_default(),
        text: string_or(d, "text", ""),
        timestamp: millis(d.get("timestamp")).unwrap_or(0),
        status: d
            .get_str("status")
            .ok()
            .and_then(Status::parse)
            .unwrap_or(Status::Sent),
        kind: string_or(d, "type", "text"),
    })
}

fn message_doc(m: &NewMessage) -> Document {
    let msg = &m.message;
    let mut d = doc! {
        "_id": oid(msg.id),
        "chatId": &msg.chat_id,
        "author": &msg.author,
        "authorId": oid(msg.author_id),
        "text": &msg.text,
        "timestamp": DateTime::from_millis(msg.timestamp),
        "status": msg.status.as_str(),
        "type": &msg.kind,
    };
    if let Some(t) = &m.temp_id {
        d.insert("tempId", t);
    }
    d
}

fn user_from(d: &Document) -> Option<UserRecord> {
    let id = match d.get("_id") {
        Some(Bson::ObjectId(o)) => from_oid(*o),
        _ => return None,
    };
    let hash = ["hashed_password", "password_hash", "password"]
        .iter()
        .find_map(|k| d.get_str(k).ok())
        .unwrap_or("")
        .to_owned();
    Some(UserRecord {
        id,
        username: d.get_str("username").ok()?.to_owned(),
        password_hash: hash,
        created_at: millis(d.get("createdAt").or_else(|| d.get("created_at")))
            .unwrap_or_else(|| i64::from(id.seconds()) * 1000),
    })
}

/// The messages of a chat; the Python service's documents without a
/// `chatId` belong to `general` (`null` matches a missing field, on the index).
fn chat_filter(chat: &str) -> Document {
    if chat == DEFAULT_CHAT {
        doc! {"chatId": {"$in": [DEFAULT_CHAT, Bson::Null]}}
    } else {
        doc! {"chatId": chat}
    }
}

/// A history `find`: filter, sort, and whether the page comes newest first.
struct Plan {
    filter: Document,
    sort: Document,
    newest_first: bool,
}

/// Resolves an id cursor to its message's timestamp (as stored) and id;
/// `None` when the chat has no such message.
async fn anchor(c: &Collections, chat: &str, id: ObjectId) -> Result<Option<Bson>, StoreError> {
    let mut filter = chat_filter(chat);
    filter.insert("_id", oid(id));
    let found = c
        .messages
        .find_one(filter)
        .projection(doc! {"timestamp": 1})
        .await
        .map_err(failed)?;
    Ok(found.map(|d| d.get("timestamp").cloned().unwrap_or(Bson::Null)))
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z, in ms since the epoch.
const FIRST_DATE_MS: i64 = -62_135_596_800_000;
const LAST_DATE_MS: i64 = 253_402_300_799_999;

/// The `find` for a history query, or the side whose id names no message of
/// the chat. The filter bounds the index range on `timestamp` and splits
/// ties by `_id`, and the sort follows the index, so the server reads only
/// the page. A time and an id on one side are both applied: together they
/// select what the tighter of them does.
async fn plan_history(c: &Collections, q: &HistoryQuery) -> Result<Result<Plan, Side>, StoreError> {
    let mut bounds: Vec<Bson> = Vec::new();
    for (bound, side) in [
        (q.window.before, Side::Before),
        (q.window.after, Side::After),
    ] {
        let (op, strict) = match side {
            Side::Before => ("$lte", "$lt"),
            Side::After => ("$gte", "$gt"),
        };
        if let Some(t) = bound.time {
            // Past the years 1 to 9999 a bound selects what the nearest
            // end of them does (the server stamps every message within
            // them); some servers refuse such dates, so they are not sent.
            let t = t.clamp(FIRST_DATE_MS, LAST_DATE_MS);
            bounds.push(Bson::Document(
                doc! {"timestamp": {strict: DateTime::from_millis(t)}},
            ));
        }
        if let Some(id) = bound.id {
            let Some(ts) = anchor(c, &q.chat_id, id).await? else {
                return Ok(Err(side));
            };
            bounds.push(Bson::Document(doc! {"timestamp": {op: ts.clone()}}));
            bounds.push(Bson::Document(doc! {"$or": [
                {"timestamp": {strict: ts}},
                {"_id": {strict: oid(id)}},
            ]}));
        }
    }
    let mut filter = chat_filter(&q.chat_id);
    if !bounds.is_empty() {
        filter.insert("$and", bounds);
    }
    let newest_first = !q.window.oldest_first();
    let dir = if newest_first { -1 } else { 1 };
    Ok(Ok(Plan {
        filter,
        sort: doc! {"timestamp": dir, "_id": dir},
        newest_first,
    }))
}

async fn history(c: Collections, q: HistoryQuery) -> Result<History, StoreError> {
    let plan = match plan_history(&c, &q).await? {
        Ok(plan) => plan,
        Err(side) => return Ok(History::UnknownAnchor(side)),
    };
    let options = FindOptions::builder()
        .sort(plan.sort)
        .limit(i64::from(q.limit))
        .hint(Hint::Name(HISTORY_INDEX.to_owned()))
        .build();
    let docs: Vec<Document> = c
        .messages
        .find(plan.filter)
        .with_options(options)
        .await
        .map_err(failed)?
        .try_collect()
        .await
        .map_err(failed)?;
    let mut page: Vec<Message> = docs.iter().filter_map(message_from).collect();
    if plan.newest_first {
        page.reverse();
    }
    Ok(History::Messages(page))
}

/// How often an append may find its retry key changed under it before it
/// gives up; each round needs another writer to win a race.
const APPEND_ROUNDS: u32 = 5;

async fn append(c: Collections, m: NewMessage) -> Result<Append, StoreError> {
    let doc = message_doc(&m);
    for _ in 0..APPEND_ROUNDS {
        match c.messages.insert_one(doc.clone()).await {
            Ok(_) => return Ok(Append::Stored),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(failed(e)),
        }
        let Some(temp_id) = &m.temp_id else {
            // Without a retry key only `_id` can clash: ids are unique, so
            // this is our own earlier attempt that got through.
            return Ok(Append::Stored);
        };
        let author = oid(m.message.author_id);
        let first = c
            .messages
            .find_one(doc! {"authorId": author, "tempId": temp_id})
            .projection(doc! {"timestamp": 1})
            .await
            .map_err(failed)?;
        let Some(first) = first else {
            // The key was released between the insert and the read: try again.
            continue;
        };
        let (Some(Bson::ObjectId(first_id)), Some(first_ts)) =
            (first.get("_id"), millis(first.get("timestamp")))
        else {
            return Err(StoreError::permanent(
                "a stored retry key has no id or timestamp",
            ));
        };
        if first_id.bytes() == m.message.id.0 {
            // Our own earlier attempt (a driver retry) got through.
            return Ok(Append::Stored);
        }
        if m.message.timestamp - first_ts < DEDUPE_WINDOW_MS {
            return Ok(Append::Duplicate {
                id: from_oid(*first_id),
                timestamp: first_ts,
            });
        }
        // The window has passed: release the old key (only if it is still
        // that message's) and insert again.
        c.messages
            .update_one(
                doc! {"_id": *first_id, "tempId": temp_id},
                doc! {"$unset": {"tempId": ""}},
            )
            .await
            .map_err(failed)?;
    }
    Err(StoreError::transient(
        "the retry key kept changing under concurrent appends",
    ))
}

async fn mark_read(
    c: Collections,
    ids: Vec<ObjectId>,
    reader: ObjectId,
) -> Result<Vec<ReadReceipt>, StoreError> {
    let wanted: Vec<Bson> = ids.iter().map(|id| Bson::ObjectId(oid(*id))).collect();
    let not_author = doc! {"$nin": [oid(reader), reader.to_hex()]};
    c.messages
        .update_many(
            doc! {"_id": {"$in": wanted.clone()}, "authorId": not_author.clone()},
            doc! {"$set": {"status": "read"}, "$addToSet": {"readBy": oid(reader)}},
        )
        .await
        .map_err(failed)?;
    let found: Vec<Document> = c
        .messages
        .find(doc! {"_id": {"$in": wanted}, "authorId": not_author})
        .projection(doc! {"chatId": 1})
        .await
        .map_err(failed)?
        .try_collect()
        .await
        .map_err(failed)?;
    let chat_of = |id: &ObjectId| {
        found.iter().find_map(|d| match d.get("_id") {
            Some(Bson::ObjectId(o)) if o.bytes() == id.0 => {
                Some(string_or(d, "chatId", DEFAULT_CHAT))
            }
            _ => None,
        })
    };
    let mut out: Vec<ReadReceipt> = Vec::new();
    for id in &ids {
        if out.iter().any(|r| r.id == *id) {
            continue;
        }
        if let Some(chat_id) = chat_of(id) {
            out.push(ReadReceipt { id: *id, chat_id });
        }
    }
    Ok(out)
}

impl Store for MongoStore {
    fn ping(&self) -> StoreFuture<()> {
        self.run(|c| async move {
            c.db.run_command(doc! {"ping": 1})
                .await
                .map(drop)
                .map_err(failed)
        })
    }

    fn create_user(&self, user: UserRecord) -> StoreFuture<CreateUser> {
        self.run(move |c| async move {
            let d = doc! {
                "_id": oid(user.id),
                "username": &user.username,
                "username_lower": user.username.to_lowercase(),
                "hashed_password": &user.password_hash,
                "createdAt": DateTime::from_millis(user.created_at),
            };
            match c.users.insert_one(d).await {
                Ok(_) => Ok(CreateUser::Created),
                Err(e) if is_duplicate_key(&e) => Ok(CreateUser::Taken),
                Err(e) => Err(failed(e)),
            }
        })
    }

    fn find_user(&self, username: String) -> StoreFuture<Option<UserRecord>> {
        self.run(move |c| async move {
            let found = c
                .users
                .find_one(doc! {"username_lower": username.to_lowercase()})
                .await
                .map_err(failed)?;
            Ok(found.as_ref().and_then(user_from))
        })
    }

    fn append_message(&self, message: NewMessage) -> StoreFuture<Append> {
        self.run(move |c| append(c, message))
    }

    fn history(&self, query: HistoryQuery) -> StoreFuture<History> {
        self.run(move |c| history(c, query))
    }

    fn mark_delivered(&self, id: ObjectId) -> StoreFuture<()> {
        self.run(move |c| async move {
            c.messages
                .update_one(
                    doc! {"_id": oid(id), "status": {"$in": ["sent", Bson::Null]}},
                    doc! {"$set": {"status": "delivered"}},
                )
                .await
                .map(drop)
                .map_err(failed)
        })
    }

    fn mark_read(&self, ids: Vec<ObjectId>, reader: ObjectId) -> StoreFuture<Vec<ReadReceipt>> {
        self.run(move |c| mark_read(c, ids, reader))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_selection_timeout_reads_as_its_servers_errors() {
        // As the driver words it, for two servers.
        let message = "No available servers. Topology: { Type: Unknown, Servers: [ { Address: \
            127.0.0.1:1, Type: Unknown, Error: Kind: I/O error: Connection refused (os error \
            111), labels: {\"RetryableError\"}, source: None, server response: None }, { \
            Address: db2:27017, Type: Unknown, Error: Kind: I/O error: failed to lookup \
            address information: Name or service not known, labels: {}, source: None, server \
            response: None } ] }, labels: {}";
        assert_eq!(
            super::servers_unanswered(message),
            "no MongoDB server answered: 127.0.0.1:1: I/O error: Connection refused (os error \
             111); db2:27017: I/O error: failed to lookup address information: Name or service \
             not known"
        );
        assert_eq!(
            super::servers_unanswered("something else"),
            "no MongoDB server answered (something else)"
        );
    }

    use super::*;

    #[test]
    fn driver_errors_that_pass_and_those_that_do_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let reset = mongodb::error::Error::from(io);
        assert!(!failed(reset).is_permanent());
        let custom = mongodb::error::Error::custom("a bug");
        assert!(failed(custom).is_permanent());
    }

    #[test]
    fn durable_by_default_and_the_url_wins() {
        let wc = durable(None);
        assert_eq!(wc.w, Some(Acknowledgment::Majority));
        assert_eq!(wc.journal, Some(true));
        let from_url = WriteConcern::builder()
            .w(Acknowledgment::Nodes(1))
            .journal(false)
            .build();
        assert_eq!(durable(Some(from_url.clone())), from_url);
        let only_w = WriteConcern::builder().w(Acknowledgment::Nodes(2)).build();
        let wc = durable(Some(only_w));
        assert_eq!(
            (wc.w, wc.journal),
            (Some(Acknowledgment::Nodes(2)), Some(true))
        );
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("mongodb://admin:hunter2@db:27017/chat?w=1"),
            "mongodb://admin:***@db:27017/chat?w=1"
        );
        assert_eq!(
            redact_url("mongodb+srv://u:p@cluster.example"),
            "mongodb+srv://u:***@cluster.example"
        );
        assert_eq!(redact_url("mongodb://db/chat"), "mongodb://db/chat");
    }

    #[test]
    fn python_documents_read_as_messages() {
        let id = bson::oid::ObjectId::new();
        let author = bson::oid::ObjectId::new();
        let d = doc! {
            "_id": id, "author": "ana", "authorId": author.to_hex(), "text": "hi",
            "timestamp": DateTime::from_millis(1_732_540_800_123), "status": "delivered",
            "type": "text",
        };
        let m = message_from(&d).expect("an ObjectId _id reads");
        assert_eq!(m.chat_id, DEFAULT_CHAT);
        assert_eq!(m.author_id, from_oid(author));
        assert_eq!(m.timestamp, 1_732_540_800_123);
        assert_eq!(m.status, Status::Delivered);
        assert!(message_from(&doc! {"_id": "not an oid"}).is_none());
    }
}
