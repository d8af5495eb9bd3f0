//! The durable store: one SQLite file, one writer thread that group-commits,
//! one reader thread.
//!
//! Every write (append, create user, mark delivered, mark read) is queued to
//! the writer. The writer takes everything queued while its previous commit
//! ran, applies the jobs one after the other and commits them all in one
//! transaction: one fsync for many concurrent sends. Should a job fail, the
//! whole transaction is rolled back and the batch run again with each job in
//! its own savepoint, so that a failing job rolls back alone (savepoints cost
//! a sixth of the writer's work, so they are paid only when needed). Only
//! after the commit returns does it resolve the callers' futures, so an
//! acknowledged append is on disk. Reads go to a separate connection on
//! their own thread; WAL lets them run while the writer commits.
//!
//! A third thread, the checkpointer, copies the WAL's pages into the
//! database file once the WAL holds [`CHECKPOINT_PAGES`], so that no commit
//! waits for that copy (SQLite's own automatic checkpoint runs in the
//! committing connection, after the commit and before the next batch: the
//! writer, and every send behind it, would wait). Should the checkpointer
//! fall behind, the writer does the copy itself at [`WAL_MAX_PAGES`], which
//! bounds the WAL.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;
use protocol::model::{Message, ObjectId, Status, UserRecord};
use protocol::store::{
    Append, Bound, CreateUser, DEDUPE_WINDOW_MS, Edge, History, HistoryQuery, NewMessage,
    ReadReceipt, Side, Store, StoreError, StoreFuture,
};
use rusqlite::types::Value;
use rusqlite::{
    Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params, params_from_iter,
};

/// The most writes one transaction takes, so one commit's latency stays bounded.
const MAX_BATCH: usize = 1024;

/// The newest message stored with a retry key (author, tempId), from the
/// index `messages_retry_key`.
const RETRY_KEY_LOOKUP: &str = "SELECT id, timestamp FROM messages
     WHERE author_id = ?1 AND temp_id = ?2 ORDER BY timestamp DESC LIMIT 1";

/// WAL pages (of 4 KiB: about 12 MB) at which the writer asks the checkpointer
/// to copy the WAL into the database file. Three times SQLite's default for
/// its automatic checkpoint: a page written again before the copy is copied
/// once, and on the saturating benchmark this gave the most acks/s of
/// 1,000 and 3,000 (BENCHMARKS.md).
const CHECKPOINT_PAGES: i32 = 3000;

/// WAL pages at which the writer copies the WAL itself, after its commit,
/// as SQLite's automatic checkpoint would: only when the checkpointer has
/// not kept up.
const WAL_MAX_PAGES: i32 = 8 * CHECKPOINT_PAGES;

thread_local! {
    /// The WAL's length in pages after the writer's last commit, set by
    /// [`wal_length`] on the writer's thread.
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The writer connection's WAL hook (run by SQLite after each commit, on
/// the committing thread): keeps the WAL's length for [`writer_loop`].
/// Registering it turns off SQLite's automatic checkpoint, which used the
/// same hook.
fn wal_length(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id BLOB PRIMARY KEY,
    username TEXT NOT NULL,
    username_lower TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
-- status: 0 sent, 1 delivered, 2 read; updates only ever raise it.
CREATE TABLE IF NOT EXISTS messages (
    id BLOB PRIMARY KEY,
    chat_id TEXT NOT NULL,
    author TEXT NOT NULL,
    author_id BLOB NOT NULL,
    text TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    status INTEGER NOT NULL,
    type TEXT NOT NULL,
    temp_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_chat_order ON messages (chat_id, timestamp, id);
-- A retry key (author, tempId) names the newest message stored with it, for
-- 24 h after that message's `timestamp`: one index entry per message that
-- has a key, written with the message.
CREATE INDEX IF NOT EXISTS messages_retry_key ON messages (author_id, temp_id, timestamp)
    WHERE temp_id IS NOT NULL;
-- Earlier builds kept the keys in a table of their own as well; the index
-- above holds the same (on such a file it is built from the messages).
DROP TABLE IF EXISTS retry_keys;
CREATE TABLE IF NOT EXISTS read_receipts (
    message_id BLOB NOT NULL,
    reader_id BLOB NOT NULL,
    PRIMARY KEY (message_id, reader_id)
) WITHOUT ROWID;
-- One row that `ping` writes: readiness means the store takes writes.
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY,
    pings INTEGER NOT NULL
);
";

const MESSAGE_COLUMNS: &str = "id, chat_id, author, author_id, text, timestamp, status, type";

/// The store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory could not be created.
    #[error("cannot create the store directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the directory (a second chatwire on the same
    /// data would share its history but not its sockets).
    #[error(
        "another process is using the store directory {path} ({holder}); one chatwire per data directory: stop the other one, or give this one its own DATABASE_URL"
    )]
    InUse {
        /// The directory.
        path: PathBuf,
        /// Who holds it, as its lock file says.
        holder: String,
    },
    /// The directory's lock file could not be opened or locked.
    #[error("cannot lock the store directory {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// SQLite could not open the file or set up its schema.
    #[error("cannot open the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// SQLite would not switch the file to write-ahead logging.
    #[error("the database refused WAL mode (journal mode is {0})")]
    NoWal(String),
    /// A store thread could not be started.
    #[error("cannot start a store thread: {0}")]
    Thread(io::Error),
}

/// A write queued to the writer thread.
type WriteJob = Box<dyn Job>;

/// One write: run (perhaps twice: see [`writer_loop`]) inside a batch's
/// transaction, then told how its transaction ended.
trait Job: Send {
    /// Applies the write to `conn`, keeping its value; `Err` if it failed
    /// (the error is kept too).
    fn run(&mut self, conn: &Connection) -> Result<(), ()>;
    /// Resolves the caller: with `failed` if the transaction did not
    /// commit, else with what the last [`Job::run`] kept.
    fn finish(self: Box<Self>, failed: Option<&StoreError>);
}

/// A [`Job`] from a closure and the channel its caller waits on.
struct Write<T, F> {
    op: F,
    result: Option<Result<T, StoreError>>,
    tx: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: Fn(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> Result<(), ()> {
        let r = (self.op)(conn).map_err(sql_error);
        let failed = r.is_err();
        self.result = Some(r);
        if failed { Err(()) } else { Ok(()) }
    }

    fn finish(self: Box<Self>, failed: Option<&StoreError>) {
        let result = match (failed, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(r)) => r,
            // Committed without having run: cannot happen; fail safe.
            (None, None) => Err(stopped()),
        };
        // The caller may have stopped waiting; nothing to do then.
        let _ = self.tx.send(result);
    }
}
/// A read, run on the reader's connection.
type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// The durable [`Store`]: one SQLite file in WAL mode with `synchronous=FULL`,
/// written by one group-committing thread.
///
/// Dropping it lets the threads finish every queued job, then waits for them.
pub struct EmbeddedStore {
    path: PathBuf,
    writer: Option<mpsc::Sender<WriteJob>>,
    reader: Option<mpsc::Sender<ReadJob>>,
    threads: Vec<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    checkpoints: Arc<AtomicU64>,
    /// The directory's lock, held while the store is open (the threads
    /// are joined before it is released).
    _lock: std::fs::File,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("commits", &self.commits())
            .field("checkpoints", &self.checkpoints())
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// The database file's name inside the store's directory.
    pub const FILE_NAME: &'static str = "chatwire.sqlite3";

    /// The lock file's name inside the store's directory: one process at a
    /// time holds it (an advisory lock, released by the kernel when the
    /// process ends, however it ends).
    pub const LOCK_NAME: &'static str = "chatwire.lock";

    /// Opens (creating them if needed) the directory `dir` and the database
    /// [`Self::FILE_NAME`] in it, and starts the writer and reader threads.
    /// Refuses ([`OpenError::InUse`]) a directory another process holds.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(Self::FILE_NAME);

        let write_conn = connect(&path)?;
        let mode: String =
            write_conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NoWal(mode));
        }
        write_conn.pragma_update(None, "synchronous", "FULL")?;
        write_conn.execute_batch(SCHEMA)?;
        write_conn.wal_hook(Some(wal_length));
        let read_conn = connect(&path)?;
        read_conn.pragma_update(None, "query_only", true)?;
        let checkpoint_conn = connect(&path)?;
        checkpoint_conn.pragma_update(None, "synchronous", "FULL")?;

        let commits = Arc::new(AtomicU64::new(0));
        let checkpoints = Arc::new(AtomicU64::new(0));
        let (write_tx, write_rx) = mpsc::channel::<WriteJob>();
        let (read_tx, read_rx) = mpsc::channel::<ReadJob>();
        // One nudge waiting is enough: the checkpoint it starts copies
        // every page committed before it.
        let (checkpoint_tx, checkpoint_rx) = mpsc::sync_channel::<()>(1);
        let counter = Arc::clone(&commits);
        let writer = std::thread::Builder::new()
            .name("chatwire-store-writer".to_owned())
            .spawn(move || writer_loop(write_conn, &write_rx, &checkpoint_tx, &counter))
            .map_err(OpenError::Thread)?;
        let reader = std::thread::Builder::new()
            .name("chatwire-store-reader".to_owned())
            .spawn(move || reader_loop(read_conn, &read_rx))
            .map_err(OpenError::Thread)?;
        let counter = Arc::clone(&checkpoints);
        let checkpointer = std::thread::Builder::new()
            .name("chatwire-store-checkpointer".to_owned())
            .spawn(move || checkpointer_loop(&checkpoint_conn, &checkpoint_rx, &counter))
            .map_err(OpenError::Thread)?;
        Ok(EmbeddedStore {
            path,
            writer: Some(write_tx),
            reader: Some(read_tx),
            threads: vec![writer, reader, checkpointer],
            commits,
            checkpoints,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions have been committed since [`Self::open`];
    /// fewer than the writes when group commit batched them.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// How many checkpoints (copies of the WAL's pages into the database
    /// file) the checkpointer thread has made since [`Self::open`].
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Queues a write for the next batch. `op` may run twice (the second
    /// time after the first was rolled back), so it must depend only on
    /// what it captured and on the database.
    fn write<T: Send + 'static>(
        &self,
        op: impl Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<T> {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(Write {
            op,
            result: None,
            tx,
        });
        submit(self.writer.as_ref(), job, rx)
    }

    /// Queues a read on the reader's connection.
    fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<T> {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have stopped waiting; nothing to do then.
            let _ = tx.send(op(conn).map_err(sql_error));
        });
        submit(self.reader.as_ref(), job, rx)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.writer = None;
        self.reader = None;
        for t in self.threads.drain(..) {
            // A thread that panicked has already failed its callers' futures
            // (their senders dropped); there is nothing left to report.
            let _ = t.join();
        }
    }
}

/// Takes the directory's lock ([`EmbeddedStore::LOCK_NAME`]) and writes
/// this process's id in it, for the message another process gets.
fn lock_dir(dir: &Path) -> Result<std::fs::File, OpenError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(EmbeddedStore::LOCK_NAME);
    let lock_error = |source| OpenError::Lock {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "its lock file is held".to_owned(),
                h => h.to_owned(),
            };
            return Err(OpenError::InUse {
                path: dir.to_owned(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_error(e)),
    }
    file.set_len(0).map_err(lock_error)?;
    file.rewind().map_err(lock_error)?;
    write!(file, "pid {}", std::process::id()).map_err(lock_error)?;
    Ok(file)
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// SQLite's error, transient when the file or the machine is in the way
/// (busy, locked, a full disk, an I/O error, out of memory), permanent
/// otherwise (corruption, a constraint, a schema this code does not know).
fn sql_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let message = format!("sqlite: {e}");
    match e.sqlite_error_code() {
        Some(
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::OutOfMemory
            | C::ReadOnly
            | C::OperationInterrupted
            | C::SystemIoFailure
            | C::DiskFull
            | C::CannotOpen
            | C::FileLockingProtocolFailed,
        ) => StoreError::transient(message),
        _ => StoreError::permanent(message),
    }
}

fn stopped() -> StoreError {
    StoreError::permanent("the store's threads have stopped")
}

fn submit<J: Send + 'static, T: Send + 'static>(
    queue: Option<&mpsc::Sender<J>>,
    job: J,
    rx: oneshot::Receiver<Result<T, StoreError>>,
) -> StoreFuture<T> {
    if queue.is_none_or(|q| q.send(job).is_err()) {
        return Box::pin(std::future::ready(Err(stopped())));
    }
    Box::pin(async move { rx.await.unwrap_or_else(|_| Err(stopped())) })
}

/// Runs `job` in a savepoint of `txn`: if it fails, it is rolled back alone.
fn in_savepoint(txn: &mut Transaction<'_>, job: &mut dyn Job) -> rusqlite::Result<()> {
    let sp = txn.savepoint()?;
    if job.run(&sp).is_ok() {
        sp.commit()?;
    }
    // A failed job's savepoint is dropped, which rolls back what it wrote.
    Ok(())
}

/// Runs one batch in one transaction and commits it: first every job
/// straight on the transaction; if one fails, the transaction is rolled
/// back and the batch run again with a savepoint around each job.
fn run_batch(conn: &mut Connection, batch: &mut [WriteJob]) -> Result<(), StoreError> {
    let txn = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    if batch.iter_mut().all(|job| job.run(&txn).is_ok()) {
        return txn.commit().map_err(sql_error);
    }
    txn.rollback().map_err(sql_error)?;
    let mut txn = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    for job in batch.iter_mut() {
        in_savepoint(&mut txn, job.as_mut()).map_err(sql_error)?;
    }
    txn.commit().map_err(sql_error)
}

fn writer_loop(
    mut conn: Connection,
    jobs: &mpsc::Receiver<WriteJob>,
    checkpointer: &mpsc::SyncSender<()>,
    commits: &AtomicU64,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&mut conn, &mut batch);
        if outcome.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        for job in batch {
            job.finish(outcome.as_ref().err());
        }
        let wal = WAL_PAGES.take();
        if wal >= WAL_MAX_PAGES {
            // The checkpointer has not kept up: copy the WAL here, as
            // SQLite's automatic checkpoint would, so that it stays bounded
            // (with no other writer, this copies all of it, and with no
            // reader on an older snapshot the next commit starts the WAL
            // over). Should it fail (the checkpointer is copying), the next
            // commit tries again.
            let _ = checkpoint(&conn);
        } else if wal >= CHECKPOINT_PAGES {
            // Full: a nudge is already waiting, which will do.
            let _ = checkpointer.try_send(());
        }
    }
}

/// Copies what it can of the WAL into the database file without waiting
/// for the writer or the readers (SQLite's `PASSIVE` checkpoint).
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

fn checkpointer_loop(conn: &Connection, nudges: &mpsc::Receiver<()>, checkpoints: &AtomicU64) {
    while let Ok(()) = nudges.recv() {
        // A checkpoint that fails (a busy file, a full disk) leaves the WAL
        // as it was; the writer nudges again after its next commit.
        if checkpoint(conn).is_ok() {
            checkpoints.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn reader_loop(mut conn: Connection, jobs: &mpsc::Receiver<ReadJob>) {
    while let Ok(job) = jobs.recv() {
        job(&mut conn);
    }
}

fn status_code(s: Status) -> i64 {
    match s {
        Status::Sent => 0,
        Status::Delivered => 1,
        Status::Read => 2,
    }
}

fn status_from_code(code: i64) -> rusqlite::Result<Status> {
    match code {
        0 => Ok(Status::Sent),
        1 => Ok(Status::Delivered),
        2 => Ok(Status::Read),
        other => Err(rusqlite::Error::IntegralValueOutOfRange(6, other)),
    }
}

fn object_id(row: &Row<'_>, idx: usize) -> rusqlite::Result<ObjectId> {
    row.get::<_, [u8; 12]>(idx).map(ObjectId)
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: object_id(row, 0)?,
        chat_id: row.get(1)?,
        author: row.get(2)?,
        author_id: object_id(row, 3)?,
        text: row.get(4)?,
        timestamp: row.get(5)?,
        status: status_from_code(row.get(6)?)?,
        kind: row.get(7)?,
    })
}

fn append(conn: &Connection, new: &NewMessage) -> rusqlite::Result<Append> {
    let m = &new.message;
    if let Some(temp_id) = &new.temp_id {
        let newest = conn
            .prepare_cached(RETRY_KEY_LOOKUP)?
            .query_row(params![&m.author_id.0[..], temp_id], |r| {
                Ok((object_id(r, 0)?, r.get::<_, i64>(1)?))
            })
            .optional()?;
        if let Some((id, timestamp)) = newest
            && m.timestamp.saturating_sub(timestamp) < DEDUPE_WINDOW_MS
        {
            return Ok(Append::Duplicate { id, timestamp });
        }
    }
    conn.prepare_cached(
        "INSERT INTO messages (id, chat_id, author, author_id, text, timestamp, status, type, temp_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        &m.id.0[..],
        m.chat_id,
        m.author,
        &m.author_id.0[..],
        m.text,
        m.timestamp,
        status_code(m.status),
        m.kind,
        new.temp_id,
    ])?;
    Ok(Append::Stored)
}

fn history(conn: &mut Connection, q: &HistoryQuery) -> rusqlite::Result<History> {
    // One read transaction, so the anchor and the page see the same snapshot.
    let txn = conn.transaction()?;
    // Each side's edge, its message looked up in this chat.
    let edge = |bound: Bound, side: Side| -> rusqlite::Result<Result<Option<Edge>, Side>> {
        let anchor = match bound.id {
            None => None,
            Some(id) => match txn
                .prepare_cached("SELECT timestamp FROM messages WHERE id = ?1 AND chat_id = ?2")?
                .query_row(params![&id.0[..], q.chat_id], |r| r.get::<_, i64>(0))
                .optional()?
            {
                Some(t) => Some(t),
                None => return Ok(Err(side)),
            },
        };
        Ok(Ok(bound.edge(side, anchor)))
    };
    let (after, before) = match (
        edge(q.window.after, Side::After)?,
        edge(q.window.before, Side::Before)?,
    ) {
        (Ok(after), Ok(before)) => (after, before),
        (Err(side), _) | (_, Err(side)) => return Ok(History::UnknownAnchor(side)),
    };
    let newest_first = !q.window.oldest_first();
    let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = ?1");
    let mut args: Vec<Value> = vec![q.chat_id.clone().into(), i64::from(q.limit).into()];
    for (edge, side, op) in [(after, Side::After, '>'), (before, Side::Before, '<')] {
        if let Some(edge) = edge {
            let (t, id) = edge.key(side);
            sql.push_str(&format!(
                " AND (timestamp, id) {op} (?{}, ?{})",
                args.len() + 1,
                args.len() + 2
            ));
            args.push(t.into());
            args.push(id.0.to_vec().into());
        }
    }
    let dir = if newest_first { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY timestamp {dir}, id {dir} LIMIT ?2"));
    let mut page = {
        let mut stmt = txn.prepare_cached(&sql)?;
        stmt.query_map(params_from_iter(args), message_from_row)?
            .collect::<rusqlite::Result<Vec<Message>>>()?
    };
    txn.commit()?;
    if newest_first {
        page.reverse();
    }
    Ok(History::Messages(page))
}

fn mark_read(
    conn: &Connection,
    ids: &[ObjectId],
    reader: ObjectId,
) -> rusqlite::Result<Vec<ReadReceipt>> {
    let mut find = conn.prepare_cached("SELECT chat_id, author_id FROM messages WHERE id = ?1")?;
    let mut record = conn.prepare_cached(
        "INSERT OR IGNORE INTO read_receipts (message_id, reader_id) VALUES (?1, ?2)",
    )?;
    let mut raise =
        conn.prepare_cached("UPDATE messages SET status = 2 WHERE id = ?1 AND status < 2")?;
    let mut out: Vec<ReadReceipt> = Vec::new();
    for id in ids {
        let found = find
            .query_row(params![&id.0[..]], |r| {
                Ok((r.get::<_, String>(0)?, object_id(r, 1)?))
            })
            .optional()?;
        let Some((chat_id, author_id)) = found else {
            continue;
        };
        if author_id == reader || out.iter().any(|r| r.id == *id) {
            continue;
        }
        record.execute(params![&id.0[..], &reader.0[..]])?;
        raise.execute(params![&id.0[..]])?;
        out.push(ReadReceipt { id: *id, chat_id });
    }
    Ok(out)
}

impl Store for EmbeddedStore {
    /// A committed write, not a read: a store that can still read but no
    /// longer write (a full disk) is not ready, and is again as soon as a
    /// write goes through.
    fn ping(&self) -> StoreFuture<()> {
        self.write(|conn| {
            conn.prepare_cached(
                "INSERT INTO health (id, pings) VALUES (1, 1)
                 ON CONFLICT (id) DO UPDATE SET pings = pings + 1",
            )?
            .execute([])
            .map(|_| ())
        })
    }

    fn create_user(&self, user: UserRecord) -> StoreFuture<CreateUser> {
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO users (id, username, username_lower, password_hash, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (username_lower) DO NOTHING",
                )?
                .execute(params![
                    &user.id.0[..],
                    user.username,
                    user.username.to_lowercase(),
                    user.password_hash,
                    user.created_at,
                ])?;
            Ok(if inserted == 0 {
                CreateUser::Taken
            } else {
                CreateUser::Created
            })
        })
    }

    fn find_user(&self, username: String) -> StoreFuture<Option<UserRecord>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, username, password_hash, created_at FROM users WHERE username_lower = ?1",
            )?
            .query_row(params![username.to_lowercase()], |r| {
                Ok(UserRecord {
                    id: object_id(r, 0)?,
                    username: r.get(1)?,
                    password_hash: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })
            .optional()
        })
    }

    fn append_message(&self, message: NewMessage) -> StoreFuture<Append> {
        self.write(move |conn| append(conn, &message))
    }

    fn history(&self, query: HistoryQuery) -> StoreFuture<History> {
        self.read(move |conn| history(conn, &query))
    }

    fn mark_delivered(&self, id: ObjectId) -> StoreFuture<()> {
        self.write(move |conn| {
            conn.prepare_cached("UPDATE messages SET status = 1 WHERE id = ?1 AND status < 1")?
                .execute(params![&id.0[..]])
                .map(drop)
        })
    }

    fn mark_read(&self, ids: Vec<ObjectId>, reader: ObjectId) -> StoreFuture<Vec<ReadReceipt>> {
        self.write(move |conn| mark_read(conn, &ids, reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    /// A store directory of this test's own (`name` and the process id),
    /// emptied first.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chatwire-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn one_store_per_directory_until_it_is_dropped() {
        let dir = scratch_dir("lock");
        let first = EmbeddedStore::open(&dir).unwrap();
        let second = EmbeddedStore::open(&dir).unwrap_err();
        let message = second.to_string();
        assert!(matches!(second, OpenError::InUse { .. }), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        drop(EmbeddedStore::open(&dir).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_write_rolls_back_alone_and_the_rest_of_its_batch_commits() {
        use futures_executor::block_on;
        use std::sync::atomic::AtomicBool;
        let dir = scratch_dir("batch");
        let store = EmbeddedStore::open(&dir).unwrap();
        let insert = |id: i64| {
            move |conn: &Connection| {
                conn.execute("INSERT INTO health (id, pings) VALUES (?1, 1)", [id])
                    .map(drop)
            }
        };
        // Holds the writer until the three writes below are queued, so
        // that they run in one batch.
        let go = Arc::new(AtomicBool::new(false));
        let held = Arc::clone(&go);
        let hold = store.write(move |_| {
            while !held.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        });
        let first = store.write(insert(7));
        let bad = store.write(move |conn| {
            insert(8)(conn)?;
            conn.execute("INSERT INTO nowhere VALUES (1)", []).map(drop)
        });
        let last = store.write(insert(9));
        go.store(true, Ordering::Relaxed);
        block_on(hold).unwrap();
        block_on(first).unwrap();
        let e = block_on(bad).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
        block_on(last).unwrap();
        let ids = block_on(store.read(|conn| {
            conn.prepare("SELECT id FROM health ORDER BY id")?
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        }))
        .unwrap();
        assert_eq!(ids, [7, 9]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A retry key is looked up in its index, not by a scan of the messages.
    #[test]
    fn a_retry_key_is_found_through_its_index() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {RETRY_KEY_LOOKUP}"))
            .unwrap()
            .query_map(params![&[0u8; 12][..], "t"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH messages USING COVERING INDEX messages_retry_key (author_id=? AND temp_id=?)"]
        );
    }

    /// A file written by a build that kept retry keys in a table of their
    /// own: the table goes, and its keys still name their messages.
    #[test]
    fn a_file_with_the_old_retry_key_table_keeps_its_keys() {
        use futures_executor::block_on;
        use protocol::testing::store_suite::new_message;
        let dir = scratch_dir("retry");
        std::fs::create_dir_all(&dir).unwrap();
        let first = new_message(1, "general", 7, 1_000, Some("t-1"));
        {
            let old = Connection::open(dir.join(EmbeddedStore::FILE_NAME)).unwrap();
            old.execute_batch(
                "CREATE TABLE messages (id BLOB PRIMARY KEY, chat_id TEXT NOT NULL,
                     author TEXT NOT NULL, author_id BLOB NOT NULL, text TEXT NOT NULL,
                     timestamp INTEGER NOT NULL, status INTEGER NOT NULL, type TEXT NOT NULL,
                     temp_id TEXT) WITHOUT ROWID;
                 CREATE TABLE retry_keys (author_id BLOB NOT NULL, temp_id TEXT NOT NULL,
                     message_id BLOB NOT NULL, timestamp INTEGER NOT NULL,
                     PRIMARY KEY (author_id, temp_id)) WITHOUT ROWID;
                 CREATE INDEX retry_keys_age ON retry_keys (timestamp);",
            )
            .unwrap();
            append(&old, &first).unwrap();
            let m = &first.message;
            old.execute(
                "INSERT INTO retry_keys VALUES (?1, 't-1', ?2, ?3)",
                params![&m.author_id.0[..], &m.id.0[..], m.timestamp],
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(&dir).unwrap();
        let retry = new_message(2, "general", 7, 2_000, Some("t-1"));
        assert_eq!(
            block_on(store.append_message(retry)).unwrap(),
            Append::Duplicate {
                id: first.message.id,
                timestamp: 1_000
            }
        );
        let tables = block_on(store.read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'retry_keys%'",
                [],
                |r| r.get::<_, i64>(0),
            )
        }))
        .unwrap();
        assert_eq!(tables, 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Once the WAL holds [`CHECKPOINT_PAGES`], the checkpointer copies it
    /// into the database file (SQLite's own automatic checkpoint is off),
    /// long before the writer would at [`WAL_MAX_PAGES`].
    #[test]
    fn the_checkpointer_copies_the_wal_into_the_database() {
        use futures_executor::block_on;
        use protocol::testing::store_suite::new_message;
        let dir = scratch_dir("checkpoint");
        let store = EmbeddedStore::open(&dir).unwrap();
        let db_pages = || std::fs::metadata(store.path()).unwrap().len() / 4096;
        let before = db_pages();
        // A page of text each, queued at once so that they commit in a few
        // batches: the WAL passes CHECKPOINT_PAGES.
        let n = u32::try_from(CHECKPOINT_PAGES).unwrap() + 200;
        let appends: Vec<_> = (1..=n)
            .map(|i| {
                let mut m = new_message(i, "general", 1, i64::from(i), None);
                m.message.text = "x".repeat(4096);
                store.append_message(m)
            })
            .collect();
        for a in appends {
            assert_eq!(block_on(a).unwrap(), Append::Stored);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.checkpoints() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(store.checkpoints() >= 1, "no checkpoint");
        // The first checkpoint copied at least the WAL that asked for it:
        // CHECKPOINT_PAGES frames, nearly all of them new pages (each
        // message a row and its text's overflow page). Without a
        // checkpoint the file would not have grown at all.
        let min = before + u64::try_from(CHECKPOINT_PAGES / 3).unwrap();
        assert!(
            db_pages() >= min,
            "the database file has {} pages, from {before}",
            db_pages()
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sqlite_errors_that_pass_and_those_that_do_not() {
        for code in [
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_CANTOPEN,
        ] {
            assert!(!sql_error(failure(code)).is_permanent(), "{code}");
        }
        for code in [
            rusqlite::ffi::SQLITE_CORRUPT,
            rusqlite::ffi::SQLITE_CONSTRAINT,
            rusqlite::ffi::SQLITE_NOTADB,
        ] {
            assert!(sql_error(failure(code)).is_permanent(), "{code}");
        }
        assert!(sql_error(rusqlite::Error::QueryReturnedNoRows).is_permanent());
        assert!(stopped().is_permanent());
    }
}
