//! The in-memory store (`DATABASE_URL=memory:`): everything lives in one
//! set of ordered maps ([`MemoryModel`], which applies a command at once,
//! as the simulation does) behind a mutex ([`MemoryStore`]), and dies with
//! the process. It passes the store suite like the durable stores.
//!
//! [`MemoryStore::new`] keeps the last [`MEMORY_KEEP`] messages in all
//! (10,000, whatever their chats): a message past that bound is dropped
//! with its retry key and read receipts, so its id is then an unknown
//! anchor for history and a retry of it is stored anew. Every map is a
//! B-tree and the order of appends a ring allocated once, so no append
//! pays for a resize of what came before (a hash map's rehash, a vector's
//! copy): a send's latency does not step as the store grows.
//! [`MemoryModel::new`] (the simulation's) keeps everything.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::{Mutex, MutexGuard};

use crate::model::{Message, ObjectId, Status, UserRecord};
use crate::rate::{TokenBucket, UnixMs};
use crate::store::{
    Append, Bound, CreateUser, DEDUPE_WINDOW_MS, History, HistoryQuery, NewMessage, Place,
    ReadReceipt, Side, Store, StoreCommand, StoreError, StoreFuture, StoreReply, TakeToken, Taken,
};

/// A message's place in its chat: (timestamp, id).
type Key = (i64, ObjectId);

/// How many messages [`MemoryStore::new`] keeps, in all chats together.
pub const MEMORY_KEEP: usize = 10_000;

/// Where a stored message is, and what hangs on it.
#[derive(Debug)]
struct Entry {
    chat: String,
    key: Key,
    /// Its retry key's tempId, if it had one.
    temp_id: Option<String>,
    /// Who read it (recorded, as the durable stores do).
    readers: Vec<ObjectId>,
}

/// A [`Store`] kept in memory; every future it returns is already ready.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryModel>,
}

/// The in-memory store's data and rules, applied synchronously.
#[derive(Debug, Default)]
pub struct MemoryModel {
    /// Users by lower-cased name.
    users: BTreeMap<String, UserRecord>,
    /// Each chat's messages in (timestamp, id) order.
    chats: BTreeMap<String, BTreeMap<Key, Message>>,
    /// Where each message is: its chat and key, its retry key, its readers.
    by_id: BTreeMap<ObjectId, Entry>,
    /// (author id, tempId) -> the message the key names.
    retry_keys: BTreeMap<(ObjectId, String), (ObjectId, i64)>,
    /// With a bound: the stored messages' ids, oldest append first.
    order: VecDeque<ObjectId>,
    /// The most messages kept (`None`: all of them).
    keep: Option<usize>,
    /// How many appends were stored (not deduplicated).
    pub appends: usize,
    /// The per-user buckets a cluster's instances share
    /// ([`StoreCommand::TakeToken`], which the simulation's shared store
    /// answers as Redis does for chatwire's hosts), with each one's last
    /// take: its ticket and what it answered.
    shared_buckets: BTreeMap<ObjectId, (TokenBucket<UnixMs>, String, Taken)>,
    /// The newest place given, and the place entries not yet on the bus.
    last_place: Option<Place>,
    placed: Vec<(crate::bus::Entry, Place)>,
}

impl MemoryStore {
    /// An empty store that keeps the last [`MEMORY_KEEP`] messages.
    pub fn new() -> Self {
        Self::keeping(MEMORY_KEEP)
    }

    /// An empty store that keeps the last `keep` messages (at least one).
    pub fn keeping(keep: usize) -> Self {
        MemoryStore {
            inner: Mutex::new(MemoryModel::keeping(keep)),
        }
    }

    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut MemoryModel) -> T) -> StoreFuture<T> {
        let r = self.lock().map(|mut inner| f(&mut inner));
        Box::pin(std::future::ready(r))
    }

    fn lock(&self) -> Result<MutexGuard<'_, MemoryModel>, StoreError> {
        // A panic while the lock was held may have left the maps half
        // updated: report the store as failed rather than serve them.
        self.inner
            .lock()
            .map_err(|_| StoreError::permanent("memory store poisoned by a panic"))
    }
}

impl MemoryModel {
    /// An empty store that keeps every message.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps the last `keep` messages (at least one),
    /// in all chats together.
    pub fn keeping(keep: usize) -> Self {
        MemoryModel {
            keep: Some(keep.max(1)),
            ..Self::default()
        }
    }

    /// Runs one command at once.
    pub fn apply(&mut self, command: StoreCommand) -> StoreReply {
        match command {
            StoreCommand::Ping => StoreReply::Pong,
            StoreCommand::CreateUser(u) => StoreReply::CreateUser(self.create_user(u)),
            StoreCommand::FindUser(n) => {
                StoreReply::User(self.users.get(&n.to_lowercase()).cloned())
            }
            StoreCommand::AppendMessage(m) => StoreReply::Appended(self.append(m)),
            StoreCommand::History(q) => StoreReply::History(self.history(q)),
            StoreCommand::MarkDelivered(id) => {
                self.mark_delivered(id);
                StoreReply::Delivered
            }
            StoreCommand::MarkRead { ids, reader } => StoreReply::Read(self.mark_read(ids, reader)),
            StoreCommand::TakeToken(take) => StoreReply::Took(self.take_token(take)),
        }
    }

    /// A take of a shared bucket's token; the same ticket again answers as
    /// it did and takes nothing. A taken one's place entry goes to
    /// [`MemoryModel::take_placed`], at the next position of a bus whose
    /// clock is the takers' (never going back).
    fn take_token(&mut self, take: TakeToken) -> Taken {
        let now = UnixMs(take.at_ms);
        let refused = Taken {
            took: false,
            place: None,
        };
        let (bucket, ticket, taken) = self
            .shared_buckets
            .entry(take.user)
            .or_insert_with(|| (TokenBucket::new(take.limit, now), String::new(), refused));
        if *ticket == take.ticket {
            return *taken;
        }
        *ticket = take.ticket;
        *taken = refused;
        if !bucket.take(take.limit, now) {
            return refused;
        }
        taken.took = true;
        let Some(entry) = take.place else {
            return *taken;
        };
        let place = self.position(take.at_ms);
        self.placed.push((entry, place));
        let answer = Taken {
            took: true,
            place: Some(place),
        };
        if let Some((_, _, taken)) = self.shared_buckets.get_mut(&take.user) {
            *taken = answer;
        }
        answer
    }

    /// The next position on a simulated bus whose clock is its writers'
    /// (`ms`), never going back: what Redis gives a stream entry.
    pub fn position(&mut self, ms: i64) -> Place {
        let ms = u64::try_from(ms).unwrap_or(0);
        let place = match self.last_place {
            Some(last) if last.ms >= ms => Place {
                ms: last.ms,
                n: last.n + 1,
            },
            _ => Place { ms, n: 0 },
        };
        self.last_place = Some(place);
        place
    }

    /// The place entries of the takes since the last call, in their order,
    /// with their places (what a simulated bus appends, as Redis does in
    /// the take's step).
    pub fn take_placed(&mut self) -> Vec<(crate::bus::Entry, Place)> {
        std::mem::take(&mut self.placed)
    }

    /// A stored message.
    pub fn message(&self, id: ObjectId) -> Option<&Message> {
        let e = self.by_id.get(&id)?;
        self.chats.get(&e.chat)?.get(&e.key)
    }

    /// Every stored message, chat by chat.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.chats.values().flat_map(|c| c.values())
    }

    /// Every stored message of a chat, in (timestamp, id) order.
    pub fn chat(&self, chat: &str) -> Vec<Message> {
        self.chats
            .get(chat)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    fn create_user(&mut self, user: UserRecord) -> CreateUser {
        let lower = user.username.to_lowercase();
        if self.users.contains_key(&lower) {
            return CreateUser::Taken;
        }
        self.users.insert(lower, user);
        CreateUser::Created
    }

    fn mark_delivered(&mut self, id: ObjectId) {
        if let Some(m) = self.message_mut(&id) {
            m.status = m.status.max(Status::Delivered);
        }
    }

    fn message_mut(&mut self, id: &ObjectId) -> Option<&mut Message> {
        let e = self.by_id.get(id)?;
        self.chats.get_mut(&e.chat)?.get_mut(&e.key)
    }

    fn append(&mut self, new: NewMessage) -> Append {
        let m = new.message;
        if let Some(temp_id) = &new.temp_id {
            let slot = (m.author_id, temp_id.clone());
            if let Some(&(id, timestamp)) = self.retry_keys.get(&slot)
                && m.timestamp - timestamp < DEDUPE_WINDOW_MS
            {
                return Append::Duplicate { id, timestamp };
            }
        }
        // The same id again (never from chatwire's ids): the new message
        // replaces the old one, in its place among the appends.
        let again = self.by_id.remove(&m.id);
        if let Some(old) = &again {
            self.unlink(m.id, old);
        }
        if let Some(temp_id) = &new.temp_id {
            self.retry_keys
                .insert((m.author_id, temp_id.clone()), (m.id, m.timestamp));
        }
        let key = (m.timestamp, m.id);
        self.appends += 1;
        let entry = Entry {
            chat: m.chat_id.clone(),
            key,
            temp_id: new.temp_id,
            readers: Vec::new(),
        };
        self.by_id.insert(m.id, entry);
        if let Some(chat) = self.chats.get_mut(&m.chat_id) {
            chat.insert(key, m);
        } else {
            self.chats
                .insert(m.chat_id.clone(), BTreeMap::from([(key, m)]));
        }
        if let Some(keep) = self.keep {
            if self.order.capacity() == 0 {
                // Once, so that the ring never grows (and copies) later.
                self.order = VecDeque::with_capacity(keep + 1);
            }
            if again.is_none() {
                self.order.push_back(key.1);
            }
            while self.by_id.len() > keep {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.drop_message(oldest);
            }
        }
        Append::Stored
    }

    /// Forgets a message with its retry key and receipts (past the bound).
    fn drop_message(&mut self, id: ObjectId) {
        if let Some(e) = self.by_id.remove(&id) {
            self.unlink(id, &e);
        }
    }

    /// Removes what `e` (the entry of message `id`, out of `by_id`) points
    /// at: the message in its chat, and its retry key if that still names it.
    fn unlink(&mut self, id: ObjectId, e: &Entry) {
        let Some(chat) = self.chats.get_mut(&e.chat) else {
            return;
        };
        let Some(m) = chat.remove(&e.key) else {
            return;
        };
        if chat.is_empty() {
            self.chats.remove(&e.chat);
        }
        if let Some(t) = &e.temp_id {
            let slot = (m.author_id, t.clone());
            if self
                .retry_keys
                .get(&slot)
                .is_some_and(|&(named, _)| named == id)
            {
                self.retry_keys.remove(&slot);
            }
        }
    }

    fn history(&self, q: HistoryQuery) -> History {
        let empty = BTreeMap::new();
        let chat = self.chats.get(&q.chat_id).unwrap_or(&empty);
        let limit = q.limit as usize;
        // Each side's edge as a key of the chat's map; an id from another
        // chat (or none) is an unknown anchor.
        let edge = |bound: Bound, side: Side| -> Result<std::ops::Bound<Key>, Side> {
            let anchor = match bound.id {
                None => None,
                Some(id) => match self.by_id.get(&id) {
                    Some(e) if e.chat == q.chat_id => Some(e.key.0),
                    _ => return Err(side),
                },
            };
            Ok(match bound.edge(side, anchor) {
                Some(e) => Excluded(e.key(side)),
                None => Unbounded,
            })
        };
        let range = match (
            edge(q.window.after, Side::After),
            edge(q.window.before, Side::Before),
        ) {
            (Ok(lo), Ok(hi)) => (lo, hi),
            (Err(side), _) | (_, Err(side)) => return History::UnknownAnchor(side),
        };
        // An empty or inverted range holds nothing (BTreeMap::range panics on one).
        if let (Excluded(lo), Excluded(hi)) = range
            && lo >= hi
        {
            return History::Messages(Vec::new());
        }
        let found = chat.range(range).map(|(_, m)| m.clone());
        let page = if q.window.oldest_first() {
            found.take(limit).collect()
        } else {
            let mut page: Vec<Message> = found.rev().take(limit).collect();
            page.reverse();
            page
        };
        History::Messages(page)
    }

    fn mark_read(&mut self, ids: Vec<ObjectId>, reader: ObjectId) -> Vec<ReadReceipt> {
        let mut out: Vec<ReadReceipt> = Vec::new();
        for id in ids {
            let Some(m) = self.message_mut(&id) else {
                continue;
            };
            if m.author_id == reader || out.iter().any(|r| r.id == id) {
                continue;
            }
            m.status = Status::Read;
            out.push(ReadReceipt {
                id,
                chat_id: m.chat_id.clone(),
            });
            if let Some(e) = self.by_id.get_mut(&id)
                && !e.readers.contains(&reader)
            {
                e.readers.push(reader);
            }
        }
        out
    }
}

impl Store for MemoryStore {
    fn ping(&self) -> StoreFuture<()> {
        self.with(|_| ())
    }

    fn create_user(&self, user: UserRecord) -> StoreFuture<CreateUser> {
        self.with(|inner| inner.create_user(user))
    }

    fn find_user(&self, username: String) -> StoreFuture<Option<UserRecord>> {
        self.with(move |inner| inner.users.get(&username.to_lowercase()).cloned())
    }

    fn append_message(&self, message: NewMessage) -> StoreFuture<Append> {
        self.with(|inner| inner.append(message))
    }

    fn history(&self, query: HistoryQuery) -> StoreFuture<History> {
        self.with(|inner| inner.history(query))
    }

    fn mark_delivered(&self, id: ObjectId) -> StoreFuture<()> {
        self.with(|inner| inner.mark_delivered(id))
    }

    fn mark_read(&self, ids: Vec<ObjectId>, reader: ObjectId) -> StoreFuture<Vec<ReadReceipt>> {
        self.with(|inner| inner.mark_read(ids, reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Window;

    fn msg(n: u32, chat: &str) -> NewMessage {
        NewMessage {
            message: Message {
                id: ObjectId::from_parts(1, [0; 5], n),
                chat_id: chat.into(),
                author: "ana".into(),
                author_id: ObjectId::from_parts(0, [1; 5], 0),
                text: format!("m{n}"),
                timestamp: 1_000 + i64::from(n),
                status: Status::Sent,
                kind: "text".into(),
            },
            temp_id: Some(format!("t{n}")),
        }
    }

    fn texts(m: &MemoryModel, chat: &str, window: Window) -> Result<Vec<String>, Side> {
        match m.history(HistoryQuery {
            chat_id: chat.into(),
            window,
            limit: 100,
        }) {
            History::Messages(page) => Ok(page.into_iter().map(|m| m.text).collect()),
            History::UnknownAnchor(side) => Err(side),
        }
    }

    #[test]
    fn keeps_the_last_messages_of_all_chats_together() {
        let mut m = MemoryModel::keeping(3);
        for n in 0..5 {
            let chat = if n % 2 == 0 { "a" } else { "b" };
            assert_eq!(m.append(msg(n, chat)), Append::Stored);
        }
        // 0 (a) and 1 (b) went; 2 and 4 in a, 3 in b.
        assert_eq!(m.messages().count(), 3);
        assert_eq!(
            texts(&m, "a", Window::LATEST),
            Ok(vec!["m2".into(), "m4".into()])
        );
        assert_eq!(texts(&m, "b", Window::LATEST), Ok(vec!["m3".into()]));
        // A dropped message is an unknown anchor, and its retry key went
        // with it: the same tempId is stored anew.
        let gone = ObjectId::from_parts(1, [0; 5], 0);
        assert!(m.message(gone).is_none());
        assert_eq!(
            texts(&m, "a", Window::after(Bound::id(gone))),
            Err(Side::After)
        );
        let mut again = msg(9, "a");
        again.message.text = "retry".into();
        again.temp_id = Some("t0".into());
        assert_eq!(m.append(again), Append::Stored);
        // A kept message's retry key still answers the first ack.
        let kept = msg(4, "a");
        let mut retry = msg(10, "a");
        retry.temp_id = kept.temp_id.clone();
        assert_eq!(
            m.append(retry),
            Append::Duplicate {
                id: kept.message.id,
                timestamp: kept.message.timestamp
            }
        );
        // Chat b loses its last message: it is gone, not an empty map.
        assert_eq!(m.chats.len(), 2);
        m.append(msg(11, "a"));
        assert_eq!(m.chats.len(), 1);
        assert_eq!(m.by_id.len(), 3);
        assert_eq!(m.order.len(), 3);
    }

    #[test]
    fn reads_are_recorded_once_and_dropped_with_their_message() {
        let mut m = MemoryModel::keeping(1);
        m.append(msg(0, "a"));
        let id = ObjectId::from_parts(1, [0; 5], 0);
        let reader = ObjectId::from_parts(0, [2; 5], 0);
        assert_eq!(m.mark_read(vec![id, id], reader).len(), 1);
        assert_eq!(m.mark_read(vec![id], reader).len(), 1);
        assert_eq!(m.by_id[&id].readers, vec![reader]);
        m.append(msg(1, "a"));
        assert!(!m.by_id.contains_key(&id));
        assert!(m.mark_read(vec![id], reader).is_empty());
    }

    #[test]
    fn the_model_of_the_simulation_keeps_everything() {
        let mut m = MemoryModel::new();
        for n in 0..20_000 {
            m.append(msg(n, "a"));
        }
        assert_eq!(m.messages().count(), 20_000);
        assert_eq!(m.order.capacity(), 0);
    }
}
