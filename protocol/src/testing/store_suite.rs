//! The conformance suite every [`Store`] implementation runs.
//!
//! Each case is an `async fn` that takes a fresh, empty store and panics when
//! the store breaks one of the rules of [`crate::store`]. The suite awaits
//! only the store's own futures, so it runs under any executor (a test can
//! drive it with `futures_executor::block_on`):
//!
//! ```ignore
//! futures_executor::block_on(store_suite::run_all(|| MyStore::new()));
//! ```
//!
//! Rules the trait leaves open are fixed here so that every store agrees:
//! a retry key names its message while the retry's timestamp is less than
//! [`DEDUPE_WINDOW_MS`] after the first's (at exactly the window it is
//! stored anew), and `mark_read` returns its receipts in the order of the ids
//! it was given.

use crate::model::{Message, ObjectId, Status, UserRecord};
use crate::store::{
    Append, Bound, CreateUser, DEDUPE_WINDOW_MS, History, HistoryQuery, NewMessage, ReadReceipt,
    Side, Store, StoreError, Window,
};

/// Runs every case, each against a fresh store from `make`.
pub async fn run_all<S: Store>(make: impl Fn() -> S) {
    ping_answers(&make()).await;
    users_are_unique_without_regard_to_case(&make()).await;
    history_is_in_timestamp_id_order(&make()).await;
    latest_returns_the_newest_oldest_first(&make()).await;
    time_cursors_are_exclusive(&make()).await;
    id_cursors_are_exclusive(&make()).await;
    paging_visits_every_message_once_within_one_millisecond(&make()).await;
    id_cursor_outside_the_chat_is_an_unknown_anchor(&make()).await;
    both_sides_and_both_kinds_of_bound_combine(&make()).await;
    chats_are_separate(&make()).await;
    retry_key_returns_the_first_message(&make()).await;
    retry_key_is_per_author(&make()).await;
    retry_key_expires_after_the_window(&make()).await;
    mark_delivered_moves_sent_forward_only(&make()).await;
    mark_read_by_another_user_records_receipts(&make()).await;
    mark_read_by_the_author_changes_nothing(&make()).await;
    status_never_goes_back(&make()).await;
}

const PROCESS: [u8; 5] = [0x9b, 0x1e, 0x8a, 0x3f, 0x4c];
const BASE_SECONDS: u32 = 0x665f_1c2e;
const T0: i64 = 1_732_540_800_000;

/// The `n`th message id: ids grow with `n`, as one process hands them out.
fn mid(n: u32) -> ObjectId {
    ObjectId::from_parts(BASE_SECONDS + n / 1000, PROCESS, n)
}

/// The `n`th user id, apart from every message id.
fn uid(n: u32) -> ObjectId {
    ObjectId::from_parts(BASE_SECONDS, [0xaa; 5], n)
}

fn user(n: u32, name: &str) -> UserRecord {
    UserRecord {
        id: uid(n),
        username: name.to_owned(),
        password_hash: format!("$2b$12$hash-of-{name}"),
        created_at: T0 + i64::from(n),
    }
}

/// A new message `n` in `chat` by user `author`, at `timestamp`: the one
/// fixture every store's own tests build messages with too.
pub fn new_message(
    n: u32,
    chat: &str,
    author: u32,
    timestamp: i64,
    temp_id: Option<&str>,
) -> NewMessage {
    NewMessage {
        message: Message {
            id: mid(n),
            chat_id: chat.to_owned(),
            author: format!("user{author}"),
            author_id: uid(author),
            text: format!("message {n}"),
            timestamp,
            status: Status::Sent,
            kind: "text".to_owned(),
        },
        temp_id: temp_id.map(str::to_owned),
    }
}

fn ok<T>(r: Result<T, StoreError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("the store failed an operation it must answer: {e}"),
    }
}

/// Appends and checks that the message was stored (not a duplicate).
async fn stored(store: &dyn Store, m: NewMessage) -> Message {
    let message = m.message.clone();
    assert_eq!(
        ok(store.append_message(m).await),
        Append::Stored,
        "append of {:?}",
        message.id
    );
    message
}

/// Appends `n` in `chat` by user 1 at `timestamp`.
async fn put(store: &dyn Store, n: u32, chat: &str, timestamp: i64) -> Message {
    stored(store, new_message(n, chat, 1, timestamp, None)).await
}

async fn history(store: &dyn Store, chat: &str, window: Window, limit: u32) -> History {
    ok(store
        .history(HistoryQuery {
            chat_id: chat.to_owned(),
            window,
            limit,
        })
        .await)
}

/// Reads a slice that must exist.
async fn read(store: &dyn Store, chat: &str, window: Window, limit: u32) -> Vec<Message> {
    match history(store, chat, window, limit).await {
        History::Messages(m) => m,
        History::UnknownAnchor(_) => panic!("{window:?} in {chat:?} answered UnknownAnchor"),
    }
}

fn ids(messages: &[Message]) -> Vec<ObjectId> {
    messages.iter().map(|m| m.id).collect()
}

async fn status_of(store: &dyn Store, chat: &str, id: ObjectId) -> Status {
    let all = read(store, chat, Window::LATEST, 100).await;
    match all.iter().find(|m| m.id == id) {
        Some(m) => m.status,
        None => panic!("{id:?} missing from the history of {chat:?}"),
    }
}

/// `ping` answers on a working store.
pub async fn ping_answers(store: &dyn Store) {
    ok(store.ping().await);
}

/// Names are unique without regard to case; `find_user` ignores case too and
/// returns the record as it was created.
pub async fn users_are_unique_without_regard_to_case(store: &dyn Store) {
    let ana = user(1, "Ana");
    assert_eq!(
        ok(store.create_user(ana.clone()).await),
        CreateUser::Created
    );
    assert_eq!(
        ok(store.create_user(user(2, "ana")).await),
        CreateUser::Taken
    );
    assert_eq!(
        ok(store.create_user(user(3, "ANA")).await),
        CreateUser::Taken
    );
    assert_eq!(
        ok(store.create_user(user(4, "ana_b")).await),
        CreateUser::Created
    );

    assert_eq!(
        ok(store.find_user("aNA".to_owned()).await),
        Some(ana.clone())
    );
    assert_eq!(ok(store.find_user("Ana".to_owned()).await), Some(ana));
    assert_eq!(
        ok(store.find_user("ANA_B".to_owned()).await),
        Some(user(4, "ana_b"))
    );
    assert_eq!(ok(store.find_user("an".to_owned()).await), None);
    assert_eq!(ok(store.find_user("bob".to_owned()).await), None);
}

/// History is in (timestamp, id) order whatever the order of the appends,
/// and carries each message as it was stored.
pub async fn history_is_in_timestamp_id_order(store: &dyn Store) {
    let m5 = put(store, 5, "general", T0 + 2000).await;
    let m1 = put(store, 1, "general", T0 + 3000).await;
    let m4 = put(store, 4, "general", T0 + 2000).await;
    let m2 = put(store, 2, "general", T0 + 1000).await;
    let m3 = put(store, 3, "general", T0 + 2000).await;

    let all = read(store, "general", Window::LATEST, 100).await;
    assert_eq!(all, vec![m2, m3, m4, m5, m1]);
}

/// `Latest` returns the newest `limit` messages, oldest first.
pub async fn latest_returns_the_newest_oldest_first(store: &dyn Store) {
    let mut all = Vec::new();
    for n in 0..10 {
        all.push(put(store, n, "general", T0 + i64::from(n) * 10).await);
    }
    assert_eq!(
        ids(&read(store, "general", Window::LATEST, 3).await),
        ids(&all[7..])
    );
    assert_eq!(
        ids(&read(store, "general", Window::LATEST, 1).await),
        ids(&all[9..])
    );
    assert_eq!(
        ids(&read(store, "general", Window::LATEST, 100).await),
        ids(&all)
    );
    assert!(read(store, "empty", Window::LATEST, 100).await.is_empty());
}

/// A time bound excludes every message at that millisecond; `Before` takes
/// the newest and `After` the oldest of what is left.
pub async fn time_cursors_are_exclusive(store: &dyn Store) {
    let a = put(store, 1, "general", T0 + 1000).await;
    let b = put(store, 2, "general", T0 + 2000).await;
    let c = put(store, 3, "general", T0 + 2000).await;
    let d = put(store, 4, "general", T0 + 3000).await;
    let e = put(store, 5, "general", T0 + 4000).await;

    let before = |t: i64| Window::before(Bound::time(t));
    let after = |t: i64| Window::after(Bound::time(t));
    assert_eq!(
        ids(&read(store, "general", before(T0 + 3000), 100).await),
        vec![a.id, b.id, c.id]
    );
    assert_eq!(
        ids(&read(store, "general", before(T0 + 3000), 2).await),
        vec![b.id, c.id]
    );
    assert_eq!(
        ids(&read(store, "general", before(T0 + 3001), 1).await),
        vec![d.id]
    );
    assert!(
        read(store, "general", before(T0 + 1000), 100)
            .await
            .is_empty()
    );

    assert_eq!(
        ids(&read(store, "general", after(T0 + 2000), 100).await),
        vec![d.id, e.id]
    );
    assert_eq!(
        ids(&read(store, "general", after(T0 + 2000), 1).await),
        vec![d.id]
    );
    assert_eq!(
        ids(&read(store, "general", after(T0 + 1999), 2).await),
        vec![b.id, c.id]
    );
    assert_eq!(ids(&read(store, "general", after(T0), 1).await), vec![a.id]);
    assert!(
        read(store, "general", after(T0 + 4000), 100)
            .await
            .is_empty()
    );
    let all = vec![a.id, b.id, c.id, d.id, e.id];
    assert_eq!(read(store, "general", after(T0 + 3999), 100).await, vec![e]);
    // Bounds far outside any date a message can have select everything,
    // whatever dates the store's server can represent.
    for t in [i64::MAX, 253_402_300_800_000] {
        assert_eq!(
            ids(&read(store, "general", before(t), 100).await),
            all,
            "{t}"
        );
    }
    for t in [i64::MIN, -62_135_596_800_001] {
        assert_eq!(
            ids(&read(store, "general", after(t), 100).await),
            all,
            "{t}"
        );
    }
}

/// An id bound excludes that message and orders by (timestamp, id), so
/// messages in the same millisecond split by id.
pub async fn id_cursors_are_exclusive(store: &dyn Store) {
    let a = put(store, 1, "general", T0 + 1000).await;
    let b = put(store, 2, "general", T0 + 2000).await;
    let c = put(store, 3, "general", T0 + 2000).await;
    let d = put(store, 4, "general", T0 + 2000).await;
    let e = put(store, 5, "general", T0 + 3000).await;

    let before = |m: &Message| Window::before(Bound::id(m.id));
    let after = |m: &Message| Window::after(Bound::id(m.id));
    assert_eq!(
        ids(&read(store, "general", before(&c), 100).await),
        vec![a.id, b.id]
    );
    assert_eq!(
        ids(&read(store, "general", before(&c), 1).await),
        vec![b.id]
    );
    assert_eq!(
        ids(&read(store, "general", before(&e), 2).await),
        vec![c.id, d.id]
    );
    assert!(read(store, "general", before(&a), 100).await.is_empty());

    assert_eq!(
        ids(&read(store, "general", after(&c), 100).await),
        vec![d.id, e.id]
    );
    assert_eq!(
        ids(&read(store, "general", after(&a), 2).await),
        vec![b.id, c.id]
    );
    assert_eq!(ids(&read(store, "general", after(&d), 1).await), vec![e.id]);
    assert!(read(store, "general", after(&e), 100).await.is_empty());
}

/// Paging back with the first id of the previous page, and forward with the
/// last id, visits every message exactly once, even when 250 messages share
/// one millisecond.
pub async fn paging_visits_every_message_once_within_one_millisecond(store: &dyn Store) {
    let mut all = Vec::new();
    all.push(put(store, 1, "general", T0 - 1).await);
    for n in 2..252 {
        all.push(put(store, n, "general", T0).await);
    }
    all.push(put(store, 252, "general", T0 + 1).await);
    let want = ids(&all);

    let mut back: Vec<ObjectId> = Vec::new();
    let mut window = Window::LATEST;
    for _ in 0..10 {
        let page = read(store, "general", window, 7 * 13).await;
        let Some(first) = page.first() else { break };
        window = Window::before(Bound::id(first.id));
        back.splice(0..0, ids(&page));
    }
    assert_eq!(back, want, "paging back");

    let mut forward: Vec<ObjectId> = Vec::new();
    let mut window = Window::after(Bound::time(T0 - 2));
    for _ in 0..10 {
        let page = read(store, "general", window, 100).await;
        let Some(last) = page.last() else { break };
        window = Window::after(Bound::id(last.id));
        forward.extend(ids(&page));
    }
    assert_eq!(forward, want, "paging forward");
}

/// An id cursor naming a message of another chat, or no message, is an
/// unknown anchor, in either direction.
pub async fn id_cursor_outside_the_chat_is_an_unknown_anchor(store: &dyn Store) {
    put(store, 1, "general", T0).await;
    let other = put(store, 2, "other", T0 + 1).await;
    for (window, side) in [
        (Window::before(Bound::id(other.id)), Side::Before),
        (Window::after(Bound::id(other.id)), Side::After),
        (Window::before(Bound::id(mid(99))), Side::Before),
        (Window::after(Bound::id(mid(99))), Side::After),
        // The side whose id is unknown is named, whatever the other holds.
        (
            Window {
                before: Bound::id(mid(99)),
                after: Bound::id(mid(1)),
            },
            Side::Before,
        ),
        (
            Window {
                before: Bound::id(mid(1)),
                after: Bound::id(other.id),
            },
            Side::After,
        ),
    ] {
        assert_eq!(
            history(store, "general", window, 100).await,
            History::UnknownAnchor(side),
            "{window:?}"
        );
    }
    assert_eq!(
        history(store, "other", Window::after(Bound::id(mid(1))), 100).await,
        History::UnknownAnchor(Side::After)
    );
    assert_eq!(
        history(store, "nowhere", Window::before(Bound::id(mid(1))), 100).await,
        History::UnknownAnchor(Side::Before)
    );
}

/// Bounds on both sides select what lies strictly between them, the oldest
/// `limit` first; a time and an id on one side select what the tighter of
/// them does; bounds that cross select nothing.
pub async fn both_sides_and_both_kinds_of_bound_combine(store: &dyn Store) {
    let a = put(store, 1, "general", T0 + 1000).await;
    let b = put(store, 2, "general", T0 + 2000).await;
    let c = put(store, 3, "general", T0 + 2000).await;
    let d = put(store, 4, "general", T0 + 3000).await;
    let e = put(store, 5, "general", T0 + 4000).await;
    let both = |time: i64, m: &Message| Bound {
        time: Some(time),
        id: Some(m.id),
    };
    let range = |after: Bound, before: Bound| Window { before, after };
    let cases = [
        // A range: ids, times, and one of each.
        (
            range(Bound::id(a.id), Bound::id(e.id)),
            100,
            vec![b.id, c.id, d.id],
        ),
        (range(Bound::id(a.id), Bound::id(e.id)), 2, vec![b.id, c.id]),
        (range(Bound::id(b.id), Bound::id(d.id)), 100, vec![c.id]),
        (
            range(Bound::time(T0 + 1000), Bound::time(T0 + 3000)),
            100,
            vec![b.id, c.id],
        ),
        (
            range(Bound::time(T0 + 1999), Bound::id(c.id)),
            100,
            vec![b.id],
        ),
        (
            range(Bound::id(b.id), Bound::time(T0 + 4000)),
            100,
            vec![c.id, d.id],
        ),
        // Empty and crossed ranges.
        (range(Bound::id(b.id), Bound::id(c.id)), 100, vec![]),
        (range(Bound::id(d.id), Bound::id(b.id)), 100, vec![]),
        (range(Bound::id(c.id), Bound::id(c.id)), 100, vec![]),
        (range(Bound::time(T0 + 5000), Bound::time(T0)), 100, vec![]),
        // A time and an id on one side: the tighter wins, either way round.
        (
            Window::before(both(T0 + 3000, &e)),
            100,
            vec![a.id, b.id, c.id],
        ),
        (Window::before(both(T0 + 9000, &c)), 100, vec![a.id, b.id]),
        (Window::before(both(T0 + 2000, &c)), 100, vec![a.id]),
        (Window::after(both(T0 + 2000, &a)), 100, vec![d.id, e.id]),
        (Window::after(both(T0, &c)), 100, vec![d.id, e.id]),
        (Window::after(both(T0 + 1999, &b)), 1, vec![c.id]),
        // All four at once.
        (
            range(both(T0 + 1000, &a), both(T0 + 4000, &d)),
            100,
            vec![b.id, c.id],
        ),
    ];
    for (window, limit, want) in cases {
        assert_eq!(
            ids(&read(store, "general", window, limit).await),
            want,
            "{window:?} limit {limit}"
        );
    }
}

/// Each chat has its own history, whatever the window.
pub async fn chats_are_separate(store: &dyn Store) {
    let g1 = put(store, 1, "general", T0).await;
    let o1 = put(store, 2, "other", T0 + 1).await;
    let g2 = put(store, 3, "general", T0 + 2).await;
    let o2 = put(store, 4, "other", T0 + 3).await;

    assert_eq!(
        read(store, "general", Window::LATEST, 100).await,
        vec![g1.clone(), g2.clone()]
    );
    assert_eq!(
        read(store, "other", Window::LATEST, 100).await,
        vec![o1.clone(), o2.clone()]
    );
    assert_eq!(
        ids(&read(store, "general", Window::LATEST, 1).await),
        vec![g2.id]
    );
    assert_eq!(
        ids(&read(store, "general", Window::after(Bound::time(T0)), 100).await),
        vec![g2.id]
    );
    assert_eq!(
        ids(&read(store, "other", Window::before(Bound::time(T0 + 3)), 100).await),
        vec![o1.id]
    );
    assert_eq!(
        ids(&read(store, "other", Window::before(Bound::id(o2.id)), 1).await),
        vec![mid(2)]
    );
    assert_eq!(
        ids(&read(store, "general", Window::after(Bound::id(g1.id)), 100).await),
        vec![mid(3)]
    );
}

/// The same (author, tempId) within the window returns the first message's id
/// and timestamp and stores nothing new.
pub async fn retry_key_returns_the_first_message(store: &dyn Store) {
    let first = stored(store, new_message(1, "general", 1, T0, Some("t-1"))).await;
    let first_ack = Append::Duplicate {
        id: first.id,
        timestamp: first.timestamp,
    };

    let retry = new_message(2, "general", 1, T0 + 500, Some("t-1"));
    assert_eq!(ok(store.append_message(retry).await), first_ack);
    let late_retry = new_message(3, "other", 1, T0 + DEDUPE_WINDOW_MS - 1, Some("t-1"));
    assert_eq!(ok(store.append_message(late_retry).await), first_ack);

    assert_eq!(
        read(store, "general", Window::LATEST, 100).await,
        vec![first]
    );
    assert!(read(store, "other", Window::LATEST, 100).await.is_empty());
    for n in [2, 3] {
        assert_eq!(
            history(store, "general", Window::before(Bound::id(mid(n))), 100).await,
            History::UnknownAnchor(Side::Before),
            "the duplicate {n} was stored"
        );
    }
}

/// A retry key belongs to its author: another author's message with the same
/// tempId is stored, and so is every message without one.
pub async fn retry_key_is_per_author(store: &dyn Store) {
    let a = stored(store, new_message(1, "general", 1, T0, Some("same"))).await;
    let b = stored(store, new_message(2, "general", 2, T0 + 1, Some("same"))).await;
    let c = stored(store, new_message(3, "general", 1, T0 + 2, None)).await;
    let d = stored(store, new_message(4, "general", 1, T0 + 3, None)).await;
    let e = stored(store, new_message(5, "general", 1, T0 + 4, Some("other"))).await;
    assert_eq!(
        read(store, "general", Window::LATEST, 100).await,
        vec![a, b, c, d, e]
    );
}

/// Once the window has passed, the same key stores a new message, and from
/// then on names that one.
pub async fn retry_key_expires_after_the_window(store: &dyn Store) {
    let first = stored(store, new_message(1, "general", 1, T0, Some("k"))).await;
    let second = stored(
        store,
        new_message(2, "general", 1, T0 + DEDUPE_WINDOW_MS, Some("k")),
    )
    .await;
    let retry = new_message(3, "general", 1, T0 + DEDUPE_WINDOW_MS + 5, Some("k"));
    assert_eq!(
        ok(store.append_message(retry).await),
        Append::Duplicate {
            id: second.id,
            timestamp: second.timestamp
        }
    );
    assert_eq!(
        read(store, "general", Window::LATEST, 100).await,
        vec![first, second]
    );
}

/// `mark_delivered` moves `sent` to `delivered` and never moves `read` back;
/// an unknown id is ignored.
pub async fn mark_delivered_moves_sent_forward_only(store: &dyn Store) {
    let m1 = put(store, 1, "general", T0).await;
    let m2 = put(store, 2, "general", T0 + 1).await;
    let m3 = put(store, 3, "general", T0 + 2).await;

    ok(store.mark_delivered(m1.id).await);
    ok(store.mark_delivered(m1.id).await);
    ok(store.mark_delivered(mid(99)).await);
    assert_eq!(status_of(store, "general", m1.id).await, Status::Delivered);
    assert_eq!(status_of(store, "general", m3.id).await, Status::Sent);

    ok(store.mark_read(vec![m2.id], uid(2)).await);
    ok(store.mark_delivered(m2.id).await);
    assert_eq!(status_of(store, "general", m2.id).await, Status::Read);

    let page = read(store, "general", Window::after(Bound::time(T0 - 1)), 100).await;
    let statuses: Vec<Status> = page.iter().map(|m| m.status).collect();
    assert_eq!(statuses, [Status::Delivered, Status::Read, Status::Sent]);
}

/// A user other than the author moves messages to `read` and gets one
/// receipt per message, with its chat, in the order named; unknown ids are
/// ignored.
pub async fn mark_read_by_another_user_records_receipts(store: &dyn Store) {
    let m1 = put(store, 1, "general", T0).await;
    let m2 = put(store, 2, "general", T0 + 1).await;
    let m3 = put(store, 3, "other", T0 + 2).await;
    let m4 = put(store, 4, "general", T0 + 3).await;
    ok(store.mark_delivered(m4.id).await);

    let receipts = ok(store
        .mark_read(vec![m3.id, mid(99), m1.id, m4.id], uid(2))
        .await);
    let receipt = |m: &Message| ReadReceipt {
        id: m.id,
        chat_id: m.chat_id.clone(),
    };
    assert_eq!(receipts, vec![receipt(&m3), receipt(&m1), receipt(&m4)]);

    assert_eq!(status_of(store, "general", m1.id).await, Status::Read);
    assert_eq!(status_of(store, "general", m2.id).await, Status::Sent);
    assert_eq!(status_of(store, "other", m3.id).await, Status::Read);
    assert_eq!(status_of(store, "general", m4.id).await, Status::Read);

    assert_eq!(ok(store.mark_read(vec![mid(98)], uid(2)).await), vec![]);
}

/// The author reading their own messages changes nothing and gets no
/// receipt for them.
pub async fn mark_read_by_the_author_changes_nothing(store: &dyn Store) {
    let own = put(store, 1, "general", T0).await;
    let delivered = put(store, 2, "general", T0 + 1).await;
    ok(store.mark_delivered(delivered.id).await);
    let theirs = stored(store, new_message(3, "general", 2, T0 + 2, None)).await;

    let receipts = ok(store
        .mark_read(vec![own.id, delivered.id, theirs.id], uid(1))
        .await);
    assert_eq!(
        receipts,
        vec![ReadReceipt {
            id: theirs.id,
            chat_id: "general".to_owned()
        }]
    );
    assert_eq!(status_of(store, "general", own.id).await, Status::Sent);
    assert_eq!(
        status_of(store, "general", delivered.id).await,
        Status::Delivered
    );
    assert_eq!(status_of(store, "general", theirs.id).await, Status::Read);
}

/// Once `read`, a message stays `read` whatever comes after.
pub async fn status_never_goes_back(store: &dyn Store) {
    let m = put(store, 1, "general", T0).await;
    ok(store.mark_read(vec![m.id], uid(2)).await);
    ok(store.mark_delivered(m.id).await);
    ok(store.mark_read(vec![m.id], uid(1)).await);
    ok(store.mark_delivered(m.id).await);
    assert_eq!(status_of(store, "general", m.id).await, Status::Read);
    let retry = new_message(2, "general", 1, T0 + 1, None);
    ok(store.append_message(retry).await);
    assert_eq!(status_of(store, "general", m.id).await, Status::Read);
    assert_eq!(status_of(store, "general", mid(2)).await, Status::Sent);
}
