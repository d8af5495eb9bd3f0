//! The in-memory store (`DATABASE_URL=memory:`): everything lives in one
//! set of ordered maps ([`MemoryModel`], which applies a command at once,
//! as the simulation does) behind a mutex ([`MemoryStore`]), and dies with
//! the process. It passes the store suite like the durable stores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::{Mutex, MutexGuard};

use crate::model::{Message, ObjectId, Status, UserRecord};
use crate::rate::{TokenBucket, UnixMs};
use crate::store::{
    Append, Bound, CreateUser, DEDUPE_WINDOW_MS, History, HistoryQuery, NewMessage, ReadReceipt,
    Side, Store, StoreCommand, StoreError, StoreFuture, StoreReply, TakeToken,
};

/// A message's place in its chat: (timestamp, id).
type Key = (i64, ObjectId);

/// A [`Store`] kept in memory; every future it returns is already ready.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryModel>,
}

/// The in-memory store's data and rules, applied synchronously.
#[derive(Debug, Default)]
pub struct MemoryModel {
    /// Users by lower-cased name.
    users: HashMap<String, UserRecord>,
    /// Each chat's messages in (timestamp, id) order.
    chats: HashMap<String, BTreeMap<Key, Message>>,
    /// Where each message is: its chat and key.
    by_id: HashMap<ObjectId, (String, Key)>,
    /// (author id, tempId) -> the message the key names.
    retry_keys: HashMap<(ObjectId, String), (ObjectId, i64)>,
    /// (message id, reader id) of every read recorded.
    receipts: BTreeSet<(ObjectId, ObjectId)>,
    /// How many appends were stored (not deduplicated).
    pub appends: usize,
    /// The per-user buckets a cluster's instances share
    /// ([`StoreCommand::TakeToken`], which the simulation's shared store
    /// answers as Redis does for chatwire's hosts), with each one's last
    /// take: its ticket and what it answered.
    shared_buckets: BTreeMap<ObjectId, (TokenBucket<UnixMs>, String, bool)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
    /// it did and takes nothing.
    fn take_token(&mut self, take: TakeToken) -> bool {
        let now = UnixMs(take.at_ms);
        let (bucket, ticket, took) = self
            .shared_buckets
            .entry(take.user)
            .or_insert_with(|| (TokenBucket::new(take.limit, now), String::new(), false));
        if *ticket != take.ticket {
            *took = bucket.take(take.limit, now);
            *ticket = take.ticket;
        }
        *took
    }

    /// A stored message.
    pub fn message(&self, id: ObjectId) -> Option<&Message> {
        let (chat, key) = self.by_id.get(&id)?;
        self.chats.get(chat)?.get(key)
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
        let (chat, key) = self.by_id.get(id)?;
        self.chats.get_mut(chat)?.get_mut(key)
    }

    fn append(&mut self, new: NewMessage) -> Append {
        let m = new.message;
        if let Some(temp_id) = new.temp_id {
            let slot = (m.author_id, temp_id);
            if let Some(&(id, timestamp)) = self.retry_keys.get(&slot)
                && m.timestamp - timestamp < DEDUPE_WINDOW_MS
            {
                return Append::Duplicate { id, timestamp };
            }
            self.retry_keys.insert(slot, (m.id, m.timestamp));
        }
        let key = (m.timestamp, m.id);
        self.appends += 1;
        self.by_id.insert(m.id, (m.chat_id.clone(), key));
        self.chats
            .entry(m.chat_id.clone())
            .or_default()
            .insert(key, m);
        Append::Stored
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
                    Some((chat_id, (timestamp, _))) if *chat_id == q.chat_id => Some(*timestamp),
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
            self.receipts.insert((id, reader));
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
