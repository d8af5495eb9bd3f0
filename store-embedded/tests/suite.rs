//! Runs the conformance suite against both stores, and checks what only the
//! embedded store promises: durability across a reopen and group commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chatwire_store_embedded::{EmbeddedStore, MemoryStore};
use futures_executor::block_on;
use protocol::model::{Message, ObjectId, Status, UserRecord};
use protocol::store::{
    Append, Bound, CreateUser, History, HistoryQuery, NewMessage, ReadReceipt, Store, StoreFuture,
    Window,
};
use protocol::testing::store_suite;

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("chatwire-store-test-{}-{n}", std::process::id()));
        // A leftover from an earlier run with the same pid would not be empty.
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An embedded store that owns its temp dir. Fields drop in order, so the
/// store's threads stop before the dir is removed.
struct TempStore {
    store: EmbeddedStore,
    _dir: TempDir,
}

impl TempStore {
    fn new() -> Self {
        let dir = TempDir::new();
        let store = EmbeddedStore::open(&dir.0).expect("a fresh temp dir can hold a store");
        TempStore { store, _dir: dir }
    }
}

impl Store for TempStore {
    fn ping(&self) -> StoreFuture<()> {
        self.store.ping()
    }
    fn create_user(&self, user: UserRecord) -> StoreFuture<CreateUser> {
        self.store.create_user(user)
    }
    fn find_user(&self, username: String) -> StoreFuture<Option<UserRecord>> {
        self.store.find_user(username)
    }
    fn append_message(&self, message: NewMessage) -> StoreFuture<Append> {
        self.store.append_message(message)
    }
    fn history(&self, query: HistoryQuery) -> StoreFuture<History> {
        self.store.history(query)
    }
    fn mark_delivered(&self, id: ObjectId) -> StoreFuture<()> {
        self.store.mark_delivered(id)
    }
    fn mark_read(&self, ids: Vec<ObjectId>, reader: ObjectId) -> StoreFuture<Vec<ReadReceipt>> {
        self.store.mark_read(ids, reader)
    }
}

/// Message `n` by one author in `general`, with the retry key `t<n>`.
fn message(n: u32, timestamp: i64) -> NewMessage {
    store_suite::new_message(n, "general", 1, timestamp, Some(&format!("t{n}")))
}

fn latest(store: &dyn Store) -> Vec<Message> {
    let q = HistoryQuery {
        chat_id: "general".to_owned(),
        window: Window::LATEST,
        limit: 100,
    };
    match block_on(store.history(q)) {
        Ok(History::Messages(m)) => m,
        other => panic!("history failed: {other:?}"),
    }
}

#[test]
fn memory_store_conforms() {
    block_on(store_suite::run_all(MemoryStore::new));
}

#[test]
fn embedded_store_conforms() {
    block_on(store_suite::run_all(TempStore::new));
}

#[test]
fn embedded_store_keeps_messages_across_a_reopen() {
    let dir = TempDir::new();
    let first = message(1, 1_732_540_800_000);
    {
        let store = EmbeddedStore::open(&dir.0).expect("a fresh temp dir can hold a store");
        assert_eq!(
            block_on(store.append_message(first.clone())),
            Ok(Append::Stored)
        );
        block_on(store.mark_delivered(first.message.id)).expect("mark_delivered");
    }
    let store = EmbeddedStore::open(&dir.0).expect("the same dir reopens");
    assert!(store.path().ends_with(EmbeddedStore::FILE_NAME));
    let mut want = first.message.clone();
    want.status = Status::Delivered;
    assert_eq!(latest(&store), vec![want]);
    // The retry key survived too.
    let retry = NewMessage {
        message: message(2, 1_732_540_800_001).message,
        temp_id: first.temp_id,
    };
    assert_eq!(
        block_on(store.append_message(retry)),
        Ok(Append::Duplicate {
            id: first.message.id,
            timestamp: first.message.timestamp
        })
    );
}

#[test]
fn embedded_store_group_commits_concurrent_appends() {
    const THREADS: u32 = 4;
    const PER_THREAD: u32 = 50;
    let holder = Arc::new(TempStore::new());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let holder = Arc::clone(&holder);
            std::thread::spawn(move || {
                // Queue every append first, then wait: they overlap in the writer.
                let futures: Vec<_> = (0..PER_THREAD)
                    .map(|i| {
                        let n = t * PER_THREAD + i;
                        holder
                            .store
                            .append_message(message(n, 1_732_540_800_000 + i64::from(n)))
                    })
                    .collect();
                futures.into_iter().map(block_on).collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        let results = t.join().expect("an appending thread panicked");
        assert!(
            results.iter().all(|r| *r == Ok(Append::Stored)),
            "{results:?}"
        );
    }

    let total = THREADS * PER_THREAD;
    let mut stored = Vec::new();
    let mut window = Window::LATEST;
    // Two pages and an empty one; more means the store repeats messages.
    for _ in 0..4 {
        let q = HistoryQuery {
            chat_id: "general".to_owned(),
            window,
            limit: 100,
        };
        let page = match block_on(holder.store.history(q)) {
            Ok(History::Messages(m)) => m,
            other => panic!("history failed: {other:?}"),
        };
        let Some(first) = page.first() else { break };
        window = Window::before(Bound::id(first.id));
        stored.splice(0..0, page.into_iter().map(|m| m.id));
    }
    let want: Vec<ObjectId> = (0..total).map(|n| message(n, 0).message.id).collect();
    assert_eq!(stored, want);

    let commits = holder.store.commits();
    assert!(
        commits >= 1 && commits < u64::from(total),
        "{commits} commits for {total} appends"
    );
}

#[test]
fn embedded_store_fails_one_bad_write_alone() {
    let store = TempStore::new();
    let first = message(1, 1_732_540_800_000);
    assert_eq!(
        block_on(store.append_message(first.clone())),
        Ok(Append::Stored)
    );

    // Queued together, so they mostly share one transaction; the middle reuses
    // an id, which SQLite refuses.
    let mut clash = message(2, 1_732_540_800_001);
    clash.message.id = first.message.id;
    let futures = [
        message(3, 1_732_540_800_002),
        clash,
        message(4, 1_732_540_800_003),
    ]
    .map(|m| store.append_message(m));
    let [before, bad, after] = futures.map(block_on);
    assert_eq!(before, Ok(Append::Stored));
    assert!(bad.is_err(), "{bad:?}");
    assert_eq!(after, Ok(Append::Stored));

    let texts: Vec<String> = latest(&store).into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["message 1", "message 3", "message 4"]);
}
