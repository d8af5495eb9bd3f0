//! MongoStore against a real MongoDB-wire server named by `MONGODB_TEST_URL`
//! (`scripts/test.sh` starts SecantusDB and sets it). Every test uses a
//! database of its own, so they run in parallel. Without the variable the
//! tests fail: they are never skipped silently.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chatwire_store_mongo::{ConnectError, ConnectOptions, HISTORY_INDEX, MongoStore};
use futures_executor::block_on;
use mongodb::bson::{Bson, DateTime, Document, doc, oid};
use mongodb::options::Acknowledgment;
use protocol::model::{Message, ObjectId, UserRecord};
use protocol::store::{Append, Bound, History, HistoryQuery, NewMessage, Store, Window};
use protocol::testing::store_suite;

/// `MONGODB_TEST_URL` with its database replaced by a fresh one for `tag`.
fn fresh_url(tag: &str) -> String {
    let base = std::env::var("MONGODB_TEST_URL")
        .expect("MONGODB_TEST_URL must name a MongoDB-wire server (scripts/test.sh starts one)");
    with_database(&base, &fresh_name(tag))
}

fn fresh_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("cw_{tag}_{}_{n}", std::process::id())
}

/// Puts `db` in the path of a `mongodb://host[:port][/db][?options]` URL.
fn with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let hosts_end = head[scheme_end..]
        .find('/')
        .map_or(head.len(), |i| scheme_end + i);
    format!("{}/{db}{query}", &head[..hosts_end])
}

fn connect(url: &str) -> MongoStore {
    match MongoStore::connect(url) {
        Ok(s) => s,
        Err(e) => panic!("connect to {url}: {e}"),
    }
}

fn query(chat: &str, window: Window, limit: u32) -> HistoryQuery {
    HistoryQuery {
        chat_id: chat.to_owned(),
        window,
        limit,
    }
}

fn page(store: &dyn Store, q: HistoryQuery) -> Vec<Message> {
    match block_on(store.history(q)) {
        Ok(History::Messages(m)) => m,
        other => panic!("history failed: {other:?}"),
    }
}

/// Pages back from the newest with `Before(Id(first of the previous page))`.
fn page_back(store: &dyn Store, chat: &str, limit: u32) -> Vec<Message> {
    let mut all = Vec::new();
    let mut window = Window::LATEST;
    loop {
        let p = page(store, query(chat, window, limit));
        let Some(first) = p.first() else { break };
        window = Window::before(Bound::id(first.id));
        all.splice(0..0, p);
    }
    all
}

/// Message `n` by one author, from the shared store suite's fixture.
fn new_message(n: u32, chat: &str, timestamp: i64, temp_id: Option<&str>) -> NewMessage {
    protocol::testing::store_suite::new_message(n, chat, 1, timestamp, temp_id)
}

/// A tokio runtime and client for writing documents straight through the driver.
fn raw_db(url: &str) -> (tokio::runtime::Runtime, mongodb::Database) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime");
    let db = rt.block_on(async {
        let options = mongodb::options::ClientOptions::parse(url)
            .await
            .expect("the test URL parses");
        let name = options
            .default_database
            .clone()
            .expect("a database in the URL");
        mongodb::Client::with_options(options)
            .expect("a client")
            .database(&name)
    });
    (rt, db)
}

#[test]
fn mongo_store_conforms() {
    block_on(store_suite::run_all(|| connect(&fresh_url("suite"))));
}

#[test]
fn connect_uses_the_database_in_the_url_or_chatdb() {
    let url = fresh_url("name");
    let store = connect(&url);
    assert!(
        store.database().starts_with("cw_name_"),
        "{}",
        store.database()
    );
    let base = std::env::var("MONGODB_TEST_URL").expect("MONGODB_TEST_URL");
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let hosts_end = base[scheme_end..]
        .find(['/', '?'])
        .map_or(base.len(), |i| scheme_end + i);
    let store = connect(&base[..hosts_end]);
    assert_eq!(store.database(), "chatdb");
}

/// The Python service's documents: no `chatId`, `authorId` as a hex string,
/// `timestamp` a BSON date, users without `username_lower`. They read and
/// page like the store's own, mixed with messages the store writes.
#[test]
fn documents_the_python_service_wrote_stay_readable() {
    let url = fresh_url("legacy");
    let (rt, db) = raw_db(&url);
    let author = oid::ObjectId::new();
    let t0 = 1_732_540_800_000_i64;
    let mut legacy: Vec<Document> = Vec::new();
    for n in 0..120_i64 {
        legacy.push(doc! {
            "_id": oid::ObjectId::new(),
            "author": "ana",
            "authorId": author.to_hex(),
            "text": format!("legacy {n}"),
            // Many in one millisecond: ties split by _id.
            "timestamp": DateTime::from_millis(t0 + n / 10),
            "status": "sent",
            "type": "text",
        });
    }
    let user_id = oid::ObjectId::new();
    rt.block_on(async {
        db.collection::<Document>("messages")
            .insert_many(legacy.clone())
            .await
            .expect("legacy messages inserted");
        db.collection::<Document>("users")
            .insert_one(doc! {
                "_id": user_id, "username": "OldAna", "hashed_password": "$2b$12$legacy",
                "createdAt": DateTime::from_millis(t0),
            })
            .await
            .expect("legacy user inserted");
    });

    let store = connect(&url);
    let newer = new_message(1, "general", t0 + 100, Some("t1"));
    assert_eq!(
        block_on(store.append_message(newer.clone())),
        Ok(Append::Stored)
    );
    let elsewhere = new_message(2, "other", t0 + 5, None);
    assert_eq!(
        block_on(store.append_message(elsewhere)),
        Ok(Append::Stored)
    );

    let got = page_back(&store, "general", 17);
    assert_eq!(got.len(), legacy.len() + 1);
    let mut want: Vec<(i64, ObjectId)> = legacy
        .iter()
        .map(|d| {
            let id = d.get_object_id("_id").expect("an _id");
            let ts = d.get_datetime("timestamp").expect("a date");
            (ts.timestamp_millis(), ObjectId(id.bytes()))
        })
        .collect();
    want.push((newer.message.timestamp, newer.message.id));
    want.sort();
    let got_keys: Vec<(i64, ObjectId)> = got.iter().map(|m| (m.timestamp, m.id)).collect();
    assert_eq!(got_keys, want);
    let first = &got[0];
    assert_eq!(first.chat_id, "general");
    assert_eq!(first.author_id, ObjectId(author.bytes()));
    assert_eq!(first.text, "legacy 0");

    // After-cursors from a legacy message reach the store's own.
    let tail = page(
        &store,
        query(
            "general",
            Window::after(Bound::id(got[got.len() - 2].id)),
            10,
        ),
    );
    assert_eq!(tail, vec![newer.message]);

    // A receipt from another user moves a legacy message to read; the
    // author (named by a string id) reading it does not.
    let reader = ObjectId::from_parts(1, [1; 5], 1);
    let receipts = block_on(store.mark_read(vec![first.id], reader)).expect("mark_read");
    assert_eq!(receipts.len(), 1);
    let own = block_on(store.mark_read(vec![got[1].id], ObjectId(author.bytes())));
    assert_eq!(own, Ok(vec![]));

    // The legacy user got its username_lower and is found without regard to case.
    let found = block_on(store.find_user("oldana".to_owned())).expect("find_user");
    assert_eq!(
        found,
        Some(UserRecord {
            id: ObjectId(user_id.bytes()),
            username: "OldAna".to_owned(),
            password_hash: "$2b$12$legacy".to_owned(),
            created_at: t0,
        })
    );
}

/// Every `stage` in a plan, depth first.
fn stages(plan: &Bson, out: &mut Vec<Document>) {
    match plan {
        Bson::Document(d) => {
            if d.contains_key("stage") {
                out.push(d.clone());
            }
            for v in d.values() {
                stages(v, out);
            }
        }
        Bson::Array(a) => a.iter().for_each(|v| stages(v, out)),
        _ => {}
    }
}

/// The history queries are served by the `chat_history` index (the server's
/// `explain` shows an `IXSCAN` on it), for a plain chat and for `general`
/// (which also matches documents without a `chatId`).
#[test]
fn history_queries_scan_the_history_index() {
    let store = connect(&fresh_url("explain"));
    for n in 0..50 {
        let chat = if n % 2 == 0 { "general" } else { "other" };
        let m = new_message(n, chat, 1_732_540_800_000 + i64::from(n / 3), None);
        assert_eq!(block_on(store.append_message(m)), Ok(Append::Stored));
    }
    let anchor = new_message(20, "general", 0, None).message.id;
    for (chat, window) in [
        ("general", Window::LATEST),
        ("general", Window::before(Bound::id(anchor))),
        ("general", Window::after(Bound::id(anchor))),
        ("other", Window::before(Bound::time(1_732_540_800_010))),
        ("other", Window::after(Bound::time(1_732_540_800_001))),
        (
            "general",
            Window {
                before: Bound::id(anchor),
                after: Bound::time(1_732_540_800_001),
            },
        ),
    ] {
        let explained = block_on(store.explain_history(query(chat, window, 10)))
            .expect("the server answers explain")
            .expect("the anchor exists");
        let winning = explained
            .get_document("queryPlanner")
            .and_then(|p| p.get_document("winningPlan"))
            .unwrap_or_else(|e| panic!("no queryPlanner.winningPlan ({e}) in {explained}"));
        let mut found = Vec::new();
        stages(&Bson::Document(winning.clone()), &mut found);
        let scans: Vec<&Document> = found
            .iter()
            .filter(|s| s.get_str("stage") == Ok("IXSCAN"))
            .collect();
        assert!(
            !scans.is_empty(),
            "{chat} {window:?}: no IXSCAN in {winning}"
        );
        for scan in &scans {
            assert_eq!(scan.get_str("indexName"), Ok(HISTORY_INDEX), "{scan}");
        }
        let names: Vec<&str> = found
            .iter()
            .filter_map(|s| s.get_str("stage").ok())
            .collect();
        println!("{chat} {window:?}: {names:?}");
    }
}

/// The returned futures need no runtime: they resolve under tokio too, and a
/// store dropped inside an async context does not panic.
#[test]
fn works_under_another_runtime_and_drops_inside_it() {
    let url = fresh_url("tokio");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime");
    rt.block_on(async move {
        let store = connect(&url);
        store.ping().await.expect("ping under tokio");
        let m = new_message(1, "general", 5, Some("k"));
        assert_eq!(store.append_message(m.clone()).await, Ok(Append::Stored));
        let retry = new_message(2, "general", 6, Some("k"));
        assert_eq!(
            store.append_message(retry).await,
            Ok(Append::Duplicate {
                id: m.message.id,
                timestamp: 5
            })
        );
        drop(store);
    });
}

/// Racing appends with one retry key store exactly one message, and every
/// other answer names that one.
#[test]
fn racing_retries_store_one_message() {
    let store = std::sync::Arc::new(connect(&fresh_url("race")));
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                let m = new_message(n, "general", 1_000 + i64::from(n), Some("same"));
                (m.message.id, block_on(store.append_message(m)))
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("an appending thread panicked"))
        .collect();
    let stored: Vec<ObjectId> = results
        .iter()
        .filter(|(_, r)| *r == Ok(Append::Stored))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(stored.len(), 1, "{results:?}");
    for (id, r) in &results {
        if *id != stored[0] {
            assert!(
                matches!(r, Ok(Append::Duplicate { id: first, .. }) if *first == stored[0]),
                "{results:?}"
            );
        }
    }
    let all = page(&*store, query("general", Window::LATEST, 100));
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), stored);
}

/// Writes are acknowledged by a journaled majority unless the URL says
/// otherwise, and then the URL's write concern is used as it is.
#[test]
fn writes_are_majority_journaled_unless_the_url_says_otherwise() {
    let url = fresh_url("wc");
    let store = connect(&url);
    let wc = store.write_concern().expect("a write concern is set");
    assert_eq!(wc.w, Some(Acknowledgment::Majority));
    assert_eq!(wc.journal, Some(true));

    let sep = if url.contains('?') { '&' } else { '?' };
    let store = connect(&format!("{url}{sep}w=1&journal=false"));
    let wc = store.write_concern().expect("a write concern is set");
    assert_eq!(
        (wc.w, wc.journal),
        (Some(Acknowledgment::Nodes(1)), Some(false))
    );
    let m = new_message(1, "general", 5, None);
    assert_eq!(block_on(store.append_message(m)), Ok(Append::Stored));
}

#[test]
fn an_unreachable_server_is_a_clear_error_after_bounded_retries() {
    let port = free_port();
    let started = Instant::now();
    let options = ConnectOptions {
        give_up_after: Duration::from_secs(2),
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
    };
    let url = format!("mongodb://127.0.0.1:{port}/x?serverSelectionTimeoutMS=300");
    match MongoStore::connect_with(&url, &options) {
        Err(ConnectError::Unreachable { attempts, .. }) => assert!(attempts >= 2, "{attempts}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        MongoStore::connect("postgres://nope"),
        Err(ConnectError::BadUrl(_))
    ));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `secantusd-py`: `SECANTUSD_BIN`, else the venv `scripts/test.sh` makes.
fn secantusd() -> PathBuf {
    let bin = std::env::var_os("SECANTUSD_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/.venv-mongo/bin/secantusd-py"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} missing: set SECANTUSD_BIN or run scripts/test.sh",
        bin.display()
    );
    bin
}

/// A SecantusDB server of this test's own, killed on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16, storage: &std::path::Path) -> Server {
        let child = Command::new(secantusd())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--storage-path",
            ])
            .arg(storage)
            .args(["--log-level", "WARNING"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("secantusd-py starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "secantusd-py did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Server { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stop the server mid-run: operations fail with a `StoreError` (no panic,
/// no hang past the selection timeout); start it again on the same port: the
/// driver recovers by itself and the data written before is there.
#[test]
fn operations_fail_while_the_server_is_down_and_recover_when_it_returns() {
    let port = free_port();
    let storage =
        std::env::temp_dir().join(format!("chatwire-secantus-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&storage);
    let url = format!("mongodb://127.0.0.1:{port}/recovery?serverSelectionTimeoutMS=1000");

    let server = Server::start(port, &storage);
    let store = connect(&url);
    let before = new_message(1, "general", 10, Some("a"));
    assert_eq!(
        block_on(store.append_message(before.clone())),
        Ok(Append::Stored)
    );
    server.stop();

    let started = Instant::now();
    assert!(
        block_on(store.ping()).is_err(),
        "ping answered with the server down"
    );
    let during = block_on(store.append_message(new_message(2, "general", 11, Some("b"))));
    assert!(
        during.is_err(),
        "append answered with the server down: {during:?}"
    );
    assert!(block_on(store.history(query("general", Window::LATEST, 10))).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    let restarted = Server::start(port, &storage);
    let deadline = Instant::now() + Duration::from_secs(30);
    while block_on(store.ping()).is_err() {
        assert!(Instant::now() < deadline, "the store did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = new_message(3, "general", 12, Some("c"));
    assert_eq!(
        block_on(store.append_message(after.clone())),
        Ok(Append::Stored)
    );
    let ids: Vec<ObjectId> = page(&store, query("general", Window::LATEST, 10))
        .iter()
        .map(|m| m.id)
        .collect();
    assert!(
        ids.contains(&before.message.id) && ids.contains(&after.message.id),
        "{ids:?}"
    );
    drop(store);
    drop(restarted);
    let _ = std::fs::remove_dir_all(&storage);
}
