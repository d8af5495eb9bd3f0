//! The cluster's bus on Redis (one server, or a Redis Cluster): streams
//! every instance appends its node's
//! [`Output::Publish`](protocol::Output::Publish) to, as many entries per
//! round trip as are waiting (one script call), and reads, from where it
//! stopped, into [`Input::Cluster`](protocol::Input). One stream per
//! [`Topic`]: `chatwire:bus` that every instance reads; an inbox per
//! instance (`{chatwire:bus}:node:<name>`), read by it alone; and one per
//! room (`{chatwire:bus}:room:<namespace>#<room>`), read by the instances
//! whose node subscribed to it ([`Output::Subscribe`](protocol::Output)),
//! those with members in the room. Every key has the tag `{chatwire:bus}`,
//! so that in a Redis Cluster they share one slot: one `XREAD` reads them
//! all, and one script appends a batch to several.
//!
//! Streams, not pub/sub: every reader gets a stream's entries in the one
//! order Redis gave them (so a chat's events reach every socket in the same
//! order, whatever instance it is on), and a reader that lost its
//! connection reads on from its last entry once it is back, missing
//! nothing the stream still holds (they keep their entries by time).
//! What a node publishes while Redis is away waits, in order, in a bounded
//! queue and goes out once it is back.
//!
//! Like the MongoDB store, the bus runs on a small tokio runtime of its
//! own, so the server's runtime (tokio or smol) does not matter.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use protocol::bus::{Entry, Topic};
use protocol::model::ObjectId;
use protocol::model::UserRecord;
use protocol::store::{
    Append, CreateUser, History, HistoryQuery, NewMessage, Place, ReadReceipt, Store, StoreError,
    StoreFuture, TakeToken, Taken,
};
use redis::AsyncCommands;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};

use crate::node_task::{Command, NodeHandle, Subscriptions};
use crate::quiet::Quiet;

/// The key of the stream every instance reads ([`Topic::All`]).
pub const STREAM: &str = "chatwire:bus";

/// A topic's stream's key: tagged `{chatwire:bus}`, so that every key of
/// the bus hashes to `chatwire:bus`'s slot.
pub fn key(topic: &Topic) -> String {
    match topic {
        Topic::All => STREAM.to_owned(),
        Topic::Node(name) => format!("{{{STREAM}}}:node:{name}"),
        Topic::Room { nsp, room } => format!("{{{STREAM}}}:room:{nsp}#{room}"),
    }
}

/// The rooms an instance reads, as its node's task subscribes and
/// unsubscribes, for the bus's rooms reader; and Redis's clock as read.
#[derive(Debug)]
pub struct Listen {
    rooms: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Redis's clock, as the newest entry read tells it (its id's
    /// milliseconds), and when that was read here.
    clock: std::sync::Mutex<Option<(u64, std::time::Instant)>>,
    changes: async_channel::Sender<Change>,
    heard: async_channel::Receiver<Change>,
}

impl Default for Listen {
    fn default() -> Self {
        let (changes, heard) = async_channel::unbounded();
        Listen {
            rooms: Default::default(),
            clock: Default::default(),
            changes,
            heard,
        }
    }
}

/// The node's side of the reader: what it subscribes to goes through here.
impl Subscriptions for Listen {
    fn subscribe(&self, topic: &Topic) {
        Listen::subscribe(self, topic);
    }

    fn unsubscribe(&self, topic: &Topic) {
        Listen::unsubscribe(self, topic);
    }

    fn count(&self) -> usize {
        self.len()
    }
}

/// A room's stream to read from just after an id on, or no longer.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Subscribe(String, String),
    Unsubscribe(String),
}

/// How far before the moment a room is subscribed to, by Redis's clock as
/// this instance reckons it, its stream is read: the reckoning is a lower
/// bound (what was read since was appended earlier), and this covers a
/// Redis clock stepped back by that much.
const SUBSCRIBE_MARGIN: Duration = Duration::from_millis(500);

impl Listen {
    /// Reads `topic`'s stream from about now on (a little before: see
    /// [`SUBSCRIBE_MARGIN`]); false if it was read already.
    pub fn subscribe(&self, topic: &Topic) -> bool {
        let key = key(topic);
        if !self
            .rooms
            .lock()
            .expect("never poisoned")
            .insert(key.clone())
        {
            return false;
        }
        let now_ms = self.redis_now().unwrap_or_else(|| {
            // Nothing read yet: this host's clock, which Redis's is close to.
            u64::try_from(crate::unix_ms()).unwrap_or(0)
        });
        let from = now_ms.saturating_sub(SUBSCRIBE_MARGIN.as_millis() as u64);
        let _ = self
            .changes
            .try_send(Change::Subscribe(key, format!("{from}-0")));
        true
    }

    /// Stops reading `topic`'s stream.
    pub fn unsubscribe(&self, topic: &Topic) {
        let key = key(topic);
        if self.rooms.lock().expect("never poisoned").remove(&key) {
            let _ = self.changes.try_send(Change::Unsubscribe(key));
        }
    }

    /// How many rooms' streams are read.
    pub fn len(&self) -> usize {
        self.rooms.lock().expect("never poisoned").len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Redis's clock now, as reckoned from what was read (a lower bound).
    fn redis_now(&self) -> Option<u64> {
        let clock = *self.clock.lock().expect("never poisoned");
        clock.map(|(ms, at)| ms + at.elapsed().as_millis() as u64)
    }

    /// An entry at `ms` by Redis's clock was read now.
    fn saw(&self, ms: u64) {
        if self.redis_now().is_none_or(|now| ms > now) {
            *self.clock.lock().expect("never poisoned") = Some((ms, std::time::Instant::now()));
        }
    }
}

/// The least time the stream keeps its entries (`XADD ... MINID ~`, by
/// time, not by count): with recovery on, the past a starting instance
/// reads (a window and a half) if that is longer. A reader away for longer
/// misses the older entries, and knows it (a gap).
pub const MIN_KEEP: Duration = Duration::from_secs(60);

/// How long the stream keeps its entries: [`MIN_KEEP`], or `replay` (the
/// past a starting instance reads) if longer.
pub fn keep_for(replay: Option<Duration>) -> Duration {
    replay.map_or(MIN_KEEP, |r| r.max(MIN_KEEP))
}

/// The oldest entry id the stream keeps now (`<ms>`), for `MINID ~`:
/// trimming is by the instances' clocks, which Redis's is close to.
fn keep_since(keep: Duration) -> String {
    let now = u64::try_from(crate::unix_ms()).unwrap_or(0);
    now.saturating_sub(keep.as_millis() as u64).to_string()
}

/// The most messages waiting to be published while Redis is away; past it
/// the newest are dropped (and logged). The node refuses new `chat:send`s
/// while fewer than 10,000 places are left (see `node_task`).
pub const OUTBOX: usize = 100_000;

/// How long a reader's `XREAD` waits for new entries before asking again.
const BLOCK_MS: usize = 2_000;

/// An instance's bus: whether both of its connections are up, and a third
/// for the rate limit's takes (opened when first needed).
#[derive(Clone)]
pub struct Bus {
    /// How long the stream keeps its entries.
    keep: Duration,
    reading: Arc<AtomicBool>,
    writing: Arc<AtomicBool>,
    /// The rooms' reader is subscribed and caught up.
    rooms_up: Arc<AtomicBool>,
    servers: Servers,
    commands: Arc<tokio::sync::Mutex<Option<Conn>>>,
    handle: tokio::runtime::Handle,
    _runtime: Arc<RuntimeGuard>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("up", &self.is_up()).finish()
    }
}

#[derive(Debug)]
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL is no Redis URL.
    #[error("REDIS_URL is not a Redis URL: {0}")]
    Url(String),
    /// Its runtime would not start.
    #[error("the Redis bus's runtime did not start: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Whether `url` is a Redis URL, or a comma-separated list of them
/// (nothing is connected to): a start checks it before the store, which
/// may take seconds to answer.
pub fn check_url(url: &str) -> Result<(), BusError> {
    Servers::parse(url).map(drop)
}

/// `url` (or each URL of a comma-separated list) with any password
/// replaced, for logs.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|url| match url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The Redis that `REDIS_URL` names: one server, or a Redis Cluster, either
/// named by a comma-separated list of its nodes or found by asking the one
/// node named (`INFO cluster`). In a cluster, everything the bus does is on
/// one key, so it lands on one slot; the cluster client follows that slot
/// across failovers and resharding.
#[derive(Debug, Clone)]
struct Servers {
    urls: Vec<String>,
}

/// A connection to either (both multiplex: a clone shares it).
#[derive(Clone)]
enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Servers {
    fn parse(url: &str) -> Result<Servers, BusError> {
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(BusError::Url("no URL".into()));
        }
        for u in &urls {
            redis::Client::open(u.as_str()).map_err(|e| BusError::Url(e.to_string()))?;
        }
        Ok(Servers { urls })
    }

    async fn open(&self) -> redis::RedisResult<Conn> {
        if self.urls.len() > 1 {
            return self.cluster().await;
        }
        let client = redis::Client::open(self.urls[0].as_str())?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config())
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn)
            .await?;
        if info.contains("cluster_enabled:1") {
            return self.cluster().await;
        }
        Ok(Conn::Single(conn))
    }

    /// Where the bus's scripts run, and so where a subscriber hears their
    /// `PUBLISH`es without the cluster's own links (on which a Redis
    /// Cluster forwards a `PUBLISH` to its other nodes, best-effort: one
    /// lost there would be lost to the subscriber with nothing to tell
    /// it). The one server; in a Redis Cluster, the primary that holds
    /// the bus's slot now (asked through `conn`), named as the first URL
    /// names its server (same scheme, password and options).
    async fn publisher(&self, conn: &mut Conn) -> redis::RedisResult<String> {
        if matches!(conn, Conn::Single(_)) {
            return Ok(self.urls[0].clone());
        }
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(STREAM)
            .query_async(conn)
            .await?;
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        let owner = slots.iter().find_map(|range| {
            let redis::Value::Array(range) = range else {
                return None;
            };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(i) => Some(*i),
                _ => None,
            };
            let (first, last) = (int(range.first()?)?, int(range.get(1)?)?);
            if !(first..=last).contains(&i64::from(slot)) {
                return None;
            }
            let redis::Value::Array(primary) = range.get(2)? else {
                return None;
            };
            let host = match primary.first()? {
                redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                redis::Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            Some((host, int(primary.get(1)?)?))
        });
        let Some((host, port)) = owner else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no node holds the bus's slot",
            )));
        };
        Ok(with_address(&self.urls[0], &host, port))
    }

    /// A subscriber connection to `url`.
    async fn pubsub(url: &str) -> redis::RedisResult<redis::aio::PubSub> {
        let client = redis::Client::open(url)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
            Ok(opened) => opened,
            Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }

    async fn cluster(&self) -> redis::RedisResult<Conn> {
        let client = redis::cluster::ClusterClient::builder(self.urls.iter().map(String::as_str))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    }
}

static TROUBLE: Quiet = Quiet::new(Duration::from_secs(10));

impl Bus {
    /// The bus of the Redis `url` names, on a small runtime of its own;
    /// nothing is connected until [`Bus::run`] (or a first take).
    pub fn new(url: &str, keep: Duration) -> Result<Bus, BusError> {
        let servers = Servers::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chatwire-redis")
            .enable_all()
            .build()
            .map_err(BusError::Runtime)?;
        Ok(Bus {
            keep,
            reading: Arc::new(AtomicBool::new(false)),
            writing: Arc::new(AtomicBool::new(false)),
            rooms_up: Arc::new(AtomicBool::new(false)),
            servers,
            commands: Arc::default(),
            handle: runtime.handle().clone(),
            _runtime: Arc::new(RuntimeGuard(Some(runtime))),
        })
    }

    /// Connects (in the background: the bus says it is up once both
    /// connections are), publishes what comes on `outbox`, and feeds what
    /// the stream holds from now on to `node`; with `replay`, what it holds
    /// of that long ago first (as the past), and the bus is up once that is
    /// fed.
    pub fn run(
        &self,
        name: &str,
        outbox: async_channel::Receiver<Entry>,
        node: NodeHandle,
        listen: Arc<Listen>,
        replay: Option<Duration>,
        publish_latency: Histogram,
    ) {
        let (servers, reading, writing) = (
            self.servers.clone(),
            self.reading.clone(),
            self.writing.clone(),
        );
        let inbox = key(&Topic::Node(name.to_owned()));
        // Told when the rooms' reader lost its connection to the server that
        // holds the bus: the other reader then reconnects and checks for a
        // gap at once, instead of waiting out a read on a connection that
        // may be dead (or that a cluster client retries after a restart).
        let suspect = Arc::new(tokio::sync::Notify::new());
        self.handle.spawn(read(
            servers.clone(),
            node.clone(),
            reading,
            replay,
            inbox.clone(),
            (listen.clone(), suspect.clone()),
        ));
        self.handle.spawn(rooms(
            servers.clone(),
            node,
            self.rooms_up.clone(),
            listen,
            suspect,
        ));
        let keep = self.keep;
        self.handle.spawn(write(
            servers,
            outbox,
            writing,
            publish_latency,
            keep,
            inbox,
        ));
    }

    /// Whether the instance can both publish and read.
    pub fn is_up(&self) -> bool {
        self.reading.load(Ordering::Acquire)
            && self.writing.load(Ordering::Acquire)
            && self.rooms_up.load(Ordering::Acquire)
    }

    /// Takes a token of a user's bucket, kept in Redis and shared by every
    /// instance: one atomic script, one round trip (the core bounds the
    /// wait). A connection that failed is opened again on the next take.
    pub fn take_token(&self, take: TakeToken) -> StoreFuture<Taken> {
        let (servers, commands, keep) = (self.servers.clone(), self.commands.clone(), self.keep);
        let task = self.handle.spawn(async move {
            // Redis away: tried again (the same ticket takes once) until the
            // core stops waiting for it.
            let give_up = tokio::time::Instant::now() + protocol::chat::BUS_WAIT;
            let mut attempt = 0;
            loop {
                let took = take_once(&servers, &commands, &take, keep).await;
                match took {
                    Ok(took) => return Ok(took),
                    Err(e) if passing(&e) && tokio::time::Instant::now() < give_up => {
                        back_off(&mut attempt).await;
                    }
                    Err(e) => return Err(bus_failed(e)),
                }
            }
        });
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError::transient(format!("the rate limit's task failed: {e}")))?
        })
    }
}

/// One take, on the shared connection (opened if there is none; let go
/// if it failed, so that the next take opens another).
async fn take_once(
    servers: &Servers,
    commands: &tokio::sync::Mutex<Option<Conn>>,
    take: &TakeToken,
    keep: Duration,
) -> redis::RedisResult<Taken> {
    // The connection multiplexes: takes run at once on clones of it.
    let mut conn = {
        let mut slot = commands.lock().await;
        match &*slot {
            Some(c) => c.clone(),
            None => {
                let c = servers.open().await?;
                *slot = Some(c.clone());
                c
            }
        }
    };
    let (stream, entry) = match &take.place {
        Some(place) => (key(&place.topic), place.bytes.as_ref()),
        None => (STREAM.to_owned(), &b""[..]),
    };
    let took: redis::RedisResult<(i64, String)> = TAKE_TOKEN
        .key(bucket_key(take.user))
        .key(&stream)
        .arg(take.limit.per_second)
        .arg(take.limit.burst)
        .arg(&take.ticket)
        .arg(entry)
        .arg(keep_since(keep))
        .arg(ttl_ms(&stream, keep))
        .invoke_async(&mut conn)
        .await;
    if took.as_ref().is_err_and(passing) {
        *commands.lock().await = None;
    }
    let (took, place) = took?;
    Ok(Taken {
        took: took == 1,
        place: entry_id(&place).map(|(ms, n)| Place { ms, n }),
    })
}

/// Whether an error is Redis being away or slow (worth another try on
/// another connection), not a refusal.
fn passing(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
}

fn bus_failed(e: redis::RedisError) -> StoreError {
    StoreError::transient(format!("the cluster's rate limit (Redis): {e}"))
}

/// A user's bucket's key: one key per user, hash-tagged with the stream's
/// key (`{chatwire:bus}` hashes as `chatwire:bus` does), so that in a Redis
/// Cluster the take and the place it appends run on one slot, in one
/// script.
fn bucket_key(user: ObjectId) -> String {
    format!("{{{STREAM}}}:bucket:{user}")
}

/// A token bucket in a Redis hash (`tokens`, `at` in milliseconds by
/// Redis's clock, and the last take's `ticket`, answer and place): refilled
/// at `ARGV[1]` tokens a second up to `ARGV[2]`, one token taken if there
/// is one, and then the place entry `ARGV[4]` (if not empty) appended to
/// the stream `KEYS[2]` in the same step; answers whether it took and the
/// place's entry id (empty if none; the stream trimmed to ids from
/// `ARGV[5]` on; a room's stream, `ARGV[6]` not 0, is kept that many ms
/// and the place published to its channel too, as [`PUBLISH`] does). The
/// same ticket again answers as
/// before and takes and appends nothing. The key expires once a full
/// bucket would have refilled.
static TAKE_TOKEN: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local rate, burst, ticket, entry = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'ticket', 'took', 'place')
if b[3] == ticket then return {tonumber(b[4]), b[5] or ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local took, place = 0, ''
if tokens >= 1 then
  tokens = tokens - 1; took = 1
  if entry ~= '' then
    place = redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[5], '*', 'd', entry)
    if ARGV[6] ~= '0' then
      redis.call('PEXPIRE', KEYS[2], ARGV[6])
      redis.call('PUBLISH', KEYS[2], place .. ' ' .. entry)
    end
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', math.max(now, at), 'ticket', ticket, 'took', took, 'place', place)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
return {took, place}
",
    )
});

/// How long a stream other than [`STREAM`] lives after its last append
/// (`0` for [`STREAM`], which lives on): longer than it keeps its
/// entries, so that one expires once all of its would be trimmed.
fn ttl_ms(stream: &str, keep: Duration) -> String {
    if stream == STREAM {
        return "0".to_owned();
    }
    (keep + Duration::from_secs(60)).as_millis().to_string()
}

/// Appends a batch to the bus's streams, in order, in one step: `KEYS[1]`
/// is [`STREAM`], `ARGV[1]` the oldest id the streams keep (`MINID ~`),
/// `ARGV[2]` how long every other stream named lives on (ms), `ARGV[3]` a
/// `1` for each key that is a room's (its entries are also published to
/// the channel of the same name, as `<id> <entry>`, for the instances
/// subscribed to it), `0` for the others; then pairs of a key's index and
/// an entry.
static PUBLISH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local since, ttl, rooms = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 2 do
  local n = tonumber(ARGV[i])
  local k = KEYS[n]
  local id = redis.call('XADD', k, 'MINID', '~', since, '*', 'd', ARGV[i + 1])
  if string.sub(rooms, n, n) == '1' then
    redis.call('PUBLISH', k, id .. ' ' .. ARGV[i + 1])
  end
end
for k = 2, #KEYS do redis.call('PEXPIRE', KEYS[k], ttl) end
return #ARGV
",
    )
});

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an answer may take: a blocking read's wait, and then some.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(BLOCK_MS as u64 + 3_000);

fn config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// Waits before the next attempt: 100 ms, doubling to 2 s.
async fn back_off(attempt: &mut u32) {
    let ms = (100u64 << (*attempt).min(5)).min(2_000);
    *attempt += 1;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn connect(servers: &Servers, what: &str) -> Conn {
    let mut attempt = 0;
    loop {
        match servers.open().await {
            Ok(c) => {
                if attempt > 0 {
                    tracing::info!("Redis bus: {what} connection back");
                }
                return c;
            }
            Err(e) => {
                if let Some(unlogged) = TROUBLE.allow(std::time::Instant::now()) {
                    tracing::warn!(
                        "Redis bus: cannot connect ({what}): {e}; retrying \
                         ({unlogged} more failures not logged)"
                    );
                }
                back_off(&mut attempt).await;
            }
        }
    }
}

/// A stream entry's id, `<milliseconds>-<sequence>`, as numbers (so that
/// ids compare in the stream's order).
fn entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Where the first read starts: the stream's newest entry, or with
/// `replay` the first entry of that long ago (by Redis's clock), the
/// entries up to the newest one then being the past.
struct Start {
    from: String,
    /// The newest entry when this instance started; `None`: no past.
    past_until: Option<(u64, u64)>,
    /// Redis's clock then, in milliseconds, and this host's (with `replay`).
    clock: (u64, tokio::time::Instant),
}

async fn start(conn: &mut Conn, replay: Option<Duration>) -> redis::RedisResult<Start> {
    let mut clock = (0, tokio::time::Instant::now());
    if replay.is_some() {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
        clock = (secs * 1000 + micros / 1000, tokio::time::Instant::now());
    }
    let newest: StreamRangeReply = conn.xrevrange_count(STREAM, "+", "-", 1).await?;
    let newest = newest.ids.first().map(|e| e.id.clone());
    let since = replay.map(|window| clock.0.saturating_sub(window.as_millis() as u64));
    Ok(match (since, newest) {
        // The newest entry is within the window: there is a past to read.
        (Some(since), Some(newest)) if entry_id(&newest).is_some_and(|(ms, _)| ms >= since) => {
            Start {
                from: format!("{since}-0"),
                past_until: entry_id(&newest),
                clock,
            }
        }
        (_, newest) => Start {
            from: newest.unwrap_or_else(|| "0-0".to_owned()),
            past_until: None,
            clock,
        },
    })
}

/// Reads [`STREAM`] and this instance's inbox from where this instance
/// started (the end of [`STREAM`] then, or with `replay` that long before;
/// its inbox from its start), on and on, across reconnections: one `XREAD`
/// of both, their entries handed to the node in the order of their ids.
/// The rooms' streams are read by [`rooms`].
async fn read(
    servers: Servers,
    node: NodeHandle,
    up: Arc<AtomicBool>,
    replay: Option<Duration>,
    inbox: String,
    (listen, suspect): (Arc<Listen>, Arc<tokio::sync::Notify>),
) {
    // Each stream read, and the id of what was read of it last.
    let mut reading: std::collections::BTreeMap<String, String> = Default::default();
    let mut past_until = None;
    let mut clock = (0, tokio::time::Instant::now());
    let mut attempt = 0;
    loop {
        let mut conn = connect(&servers, "reading").await;
        if reading.is_empty() {
            match start(&mut conn, replay).await {
                Ok(s) => {
                    reading.insert(STREAM.to_owned(), s.from);
                    // A new name each start: its inbox holds nothing older.
                    reading.insert(inbox.clone(), "0-0".to_owned());
                    past_until = s.past_until;
                    clock = s.clock;
                }
                Err(e) => {
                    tracing::warn!("Redis bus: cannot read the stream's end: {e}");
                    back_off(&mut attempt).await;
                    continue;
                }
            }
        } else {
            let every: Vec<String> = reading.keys().cloned().collect();
            if let Err(e) = check_gaps(&mut conn, &node, &mut reading, &every).await {
                tracing::warn!("Redis bus: cannot reach the stream (reading): {e}");
                back_off(&mut attempt).await;
                continue;
            }
        }
        // A word that the server went away, given before this connection
        // (and its gap check), is of no more use.
        let _ = futures_util::FutureExt::now_or_never(suspect.notified());
        if past_until.is_none() {
            up.store(true, Ordering::Release);
        }
        let opts = StreamReadOptions::default()
            .block(BLOCK_MS)
            .count(READ_COUNT);
        loop {
            let (keys, ids): (Vec<&String>, Vec<&String>) = reading.iter().unzip();
            let got: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                got = conn.xread_options(&keys, &ids, &opts) => got,
                () = suspect.notified() => {
                    up.store(false, Ordering::Release);
                    tracing::warn!("Redis bus: the server holding the bus went away; reconnecting");
                    break;
                }
            };
            let reply = match got {
                Ok(reply) => reply,
                Err(e) => {
                    up.store(false, Ordering::Release);
                    tracing::warn!("Redis bus: reading failed: {e}; reconnecting");
                    break;
                }
            };
            let (entries, full) = merged(reply);
            let mut read = 0;
            for (stream, entry) in entries {
                read += 1;
                let id = entry_id(&entry.id);
                if let Some((ms, _)) = id {
                    listen.saw(ms);
                }
                if let Some(until) = past_until
                    && id.is_none_or(|id| id > until)
                {
                    past_until = None;
                    node.send(Command::ClusterCaughtUp).await;
                    up.store(true, Ordering::Release);
                }
                if let Some(redis::Value::BulkString(data)) = entry.map.get("d") {
                    let data = Bytes::copy_from_slice(data);
                    let at = id.map(|(ms, n)| Place { ms, n });
                    let command = match (past_until, id) {
                        (Some(_), Some((ms, _))) => {
                            // Its age by Redis's clock when this instance
                            // started, plus the time since.
                            let then = clock.0.saturating_sub(ms);
                            let age = Duration::from_millis(then) + clock.1.elapsed();
                            Command::ClusterPast(data, age, at)
                        }
                        _ => Command::Cluster(data, at),
                    };
                    node.send(command).await;
                }
                reading.insert(stream, entry.id);
            }
            // Caught up once the newest entry of the start was read, or
            // nothing follows (the rest of the past was trimmed away).
            let read_past = reading.get(STREAM).and_then(|id| entry_id(id)) >= past_until;
            if past_until.is_some() && (read_past || read == 0) {
                past_until = None;
                node.send(Command::ClusterCaughtUp).await;
                up.store(true, Ordering::Release);
            }
            // A full read: this reader is behind on those streams, and
            // their trimming may have passed it.
            if !full.is_empty()
                && let Err(e) = check_gaps(&mut conn, &node, &mut reading, &full).await
            {
                up.store(false, Ordering::Release);
                tracing::warn!("Redis bus: reading failed: {e}; reconnecting");
                break;
            }
        }
    }
}

/// The entries of one `XREAD` of several streams, each with its stream's
/// key, in the order of their ids (Redis's clock: the order they were
/// appended in, across streams, but for entries of one millisecond), and
/// the streams that gave a full batch. A full stream may hold more before
/// what the others gave: their entries after its last are left for the
/// next read, so that none is handed on out of order.
fn merged(
    reply: Option<StreamReadReply>,
) -> (Vec<(String, redis::streams::StreamId)>, Vec<String>) {
    let mut full = Vec::new();
    let mut until: Option<(u64, u64)> = None;
    let mut entries = Vec::new();
    for stream in reply.into_iter().flat_map(|r| r.keys) {
        if stream.ids.len() >= READ_COUNT {
            full.push(stream.key.clone());
            if let Some(last) = stream.ids.last().and_then(|e| entry_id(&e.id)) {
                until = Some(until.map_or(last, |u| u.min(last)));
            }
        }
        for entry in stream.ids {
            entries.push((entry_id(&entry.id), stream.key.clone(), entry));
        }
    }
    entries.sort_by_key(|(id, _, _)| *id);
    let entries = entries
        .into_iter()
        .filter(|(id, _, _)| until.is_none_or(|u| id.is_none_or(|id| id <= u)))
        .map(|(_, key, entry)| (key, entry))
        .collect();
    (entries, full)
}

/// `url` (`scheme://[user:password@]host:port[/db][?options]`) with
/// another host and port.
fn with_address(url: &str, host: &str, port: i64) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    let tail = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("{scheme}://{auth}{host}:{port}{tail}")
}

/// How often the rooms' reader asks Redis whether its subscriber
/// connection still answers (it hears nothing of idle rooms) and, in a
/// Redis Cluster, whether its node still holds the bus's slot.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Reads the rooms' streams the node subscribed to: live, on a subscriber
/// connection (each room's channel, which [`PUBLISH`] and the take's script
/// publish every entry of its stream to, with its id); and from the stream
/// itself (`XRANGE`) for what the channel may have missed: since the
/// subscription's start when it subscribes, since the last entry handed
/// on after a reconnection. Each room's entries are handed to the node
/// once, in the stream's order. Redis's pushes cost no command: reading a
/// room costs one `SUBSCRIBE` and one `XRANGE` when joined, whatever its
/// traffic, and a room this instance has no member in costs it nothing.
///
/// In a Redis Cluster, the subscriber connection is to the primary that
/// holds the bus's slot, where the scripts that publish run
/// ([`Servers::publisher`]).
async fn rooms(
    servers: Servers,
    node: NodeHandle,
    up: Arc<AtomicBool>,
    listen: Arc<Listen>,
    suspect: Arc<tokio::sync::Notify>,
) {
    // Each room read: the id of its last entry handed on.
    let mut rooms: std::collections::HashMap<String, String> = Default::default();
    // Rooms no longer read, and their last entry handed on: one left and
    // joined again within moments is not read twice.
    let mut left: std::collections::HashMap<String, String> = Default::default();
    let mut attempt = 0;
    loop {
        let mut conn = connect(&servers, "reading rooms").await;
        let opened = match servers.publisher(&mut conn).await {
            Ok(url) => Servers::pubsub(&url).await.map(|p| (url, p)),
            Err(e) => Err(e),
        };
        let (publisher, pubsub) = match opened {
            Ok(p) => p,
            Err(e) => {
                if let Some(unlogged) = TROUBLE.allow(std::time::Instant::now()) {
                    tracing::warn!(
                        "Redis bus: cannot connect (rooms): {e}; retrying ({unlogged} more \
                         failures not logged)"
                    );
                }
                back_off(&mut attempt).await;
                continue;
            }
        };
        let (mut sink, mut pushed) = pubsub.split();
        // Every room again, then what its channel said meanwhile (all its
        // stream holds if the stream went back behind what was read: Redis
        // came back without it, or a replica took over).
        let every: Vec<String> = rooms.keys().cloned().collect();
        let mut ok = every.is_empty() || sink.subscribe(&every).await.is_ok();
        for key in &every {
            ok = ok
                && rewind_if_lost(&mut conn, key, &mut rooms).await.is_ok()
                && catch_up(&mut conn, &node, &listen, key, &mut rooms)
                    .await
                    .is_ok();
        }
        if !ok {
            tracing::warn!("Redis bus: subscribing to the rooms failed; reconnecting");
            back_off(&mut attempt).await;
            continue;
        }
        attempt = 0;
        up.store(true, Ordering::Release);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                change = listen.heard.recv() => {
                    let Ok(change) = change else { return };
                    let done = match change {
                        Change::Subscribe(key, from) => {
                            let from = left
                                .remove(&key)
                                .filter(|last| entry_id(last) > entry_id(&from))
                                .unwrap_or(from);
                            tracing::debug!("Redis bus: reading room {key} from {from}");
                            rooms.insert(key.clone(), from);
                            sink.subscribe(&key).await.is_ok()
                                && catch_up(&mut conn, &node, &listen, &key, &mut rooms)
                                    .await
                                    .is_ok()
                        }
                        Change::Unsubscribe(key) => {
                            tracing::debug!("Redis bus: no longer reading room {key}");
                            if let Some(last) = rooms.remove(&key) {
                                left.insert(key.clone(), last);
                            }
                            forget_left(&listen, &mut left);
                            sink.unsubscribe(&key).await.is_ok()
                        }
                    };
                    if !done {
                        break;
                    }
                }
                message = futures_util::StreamExt::next(&mut pushed) => {
                    let Some(message) = message else { break };
                    let key = message.get_channel_name();
                    let Some(last) = rooms.get_mut(key) else { continue };
                    let payload = message.get_payload_bytes();
                    let Some(space) = payload.iter().position(|&b| b == b' ') else { continue };
                    let Some(id) = std::str::from_utf8(&payload[..space]).ok() else { continue };
                    if entry_id(id) <= entry_id(last) {
                        continue;
                    }
                    *last = id.to_owned();
                    let data = Bytes::copy_from_slice(&payload[space + 1..]);
                    hand_on(&node, &listen, id, data).await;
                }
                _ = ping.tick() => {
                    let answered =
                        tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        break;
                    }
                    // The slot moved (a failover, resharding): subscribed
                    // again where the scripts run now, and caught up.
                    if servers.publisher(&mut conn).await.is_ok_and(|url| url != publisher) {
                        break;
                    }
                }
            }
        }
        up.store(false, Ordering::Release);
        suspect.notify_one();
        tracing::warn!("Redis bus: the rooms' subscriber connection was lost; reconnecting");
        back_off(&mut attempt).await;
    }
}

/// Forgets the rooms left before the margin no subscription starts before
/// any more.
fn forget_left(listen: &Listen, left: &mut std::collections::HashMap<String, String>) {
    if let Some(now) = listen.redis_now() {
        let oldest = now.saturating_sub(2 * SUBSCRIBE_MARGIN.as_millis() as u64);
        left.retain(|_, last| entry_id(last).is_some_and(|(ms, _)| ms >= oldest));
    }
}

/// Hands a room's entry read (live or caught up) to the node.
async fn hand_on(node: &NodeHandle, listen: &Listen, id: &str, data: Bytes) {
    tracing::trace!(
        "Redis bus: room entry {id}: {}",
        String::from_utf8_lossy(&data[..data.len().min(160)])
    );
    let at = entry_id(id).map(|(ms, n)| {
        listen.saw(ms);
        Place { ms, n }
    });
    node.send(Command::Cluster(data, at)).await;
}

/// Reads room `key`'s stream on from its newest entry (from its start, if
/// it is gone) if it went back behind the last entry handed on: what it
/// gets from then on was appended after.
async fn rewind_if_lost(
    conn: &mut Conn,
    key: &str,
    rooms: &mut std::collections::HashMap<String, String>,
) -> redis::RedisResult<()> {
    let Some(last) = rooms.get(key) else {
        return Ok(());
    };
    if let Some(from) = lost_since(conn, key, last).await?
        && entry_id(&from) < entry_id(last)
    {
        rooms.insert(key.to_owned(), from);
    }
    Ok(())
}

/// Hands on what room `key`'s stream holds after the last entry handed on
/// (what its channel said while this reader was not subscribed).
async fn catch_up(
    conn: &mut Conn,
    node: &NodeHandle,
    listen: &Listen,
    key: &str,
    rooms: &mut std::collections::HashMap<String, String>,
) -> redis::RedisResult<()> {
    loop {
        let Some(last) = rooms.get(key).cloned() else {
            return Ok(());
        };
        let got: StreamRangeReply = conn
            .xrange_count(key, format!("({last}"), "+", READ_COUNT)
            .await?;
        let n = got.ids.len();
        tracing::debug!("Redis bus: room {key}: {n} entries after {last}");
        for entry in got.ids {
            if let Some(redis::Value::BulkString(data)) = entry.map.get("d") {
                hand_on(node, listen, &entry.id, Bytes::copy_from_slice(data)).await;
            }
            rooms.insert(key.to_owned(), entry.id);
        }
        if n < READ_COUNT {
            return Ok(());
        }
    }
}

/// The most entries one `XREAD` returns.
const READ_COUNT: usize = 512;

/// Whether the streams `keys` lost entries after what this reader read
/// of them last; if so, each moves to where to read it on, and for
/// [`STREAM`] (which every instance writes to every few seconds: it is
/// what tells a Redis that lost data) the node is told.
async fn check_gaps(
    conn: &mut Conn,
    node: &NodeHandle,
    reading: &mut std::collections::BTreeMap<String, String>,
    keys: &[String],
) -> redis::RedisResult<()> {
    for key in keys {
        let Some(last) = reading.get(key) else {
            continue;
        };
        if let Some(from) = lost_since(conn, key, last).await? {
            if key == STREAM {
                gap(node, &from).await;
            }
            reading.insert(key.clone(), from);
        }
    }
    Ok(())
}

/// Tells the node that the bus lost entries it had not read; it reads on
/// from `from`.
async fn gap(node: &NodeHandle, from: &str) {
    static LOST: Quiet = Quiet::new(Duration::from_secs(10));
    if let Some(unlogged) = LOST.allow(std::time::Instant::now()) {
        tracing::warn!(
            "Redis bus: entries this instance had not read are gone (trimmed, or Redis came \
             back without them); reading on from {from}; sessions cannot recover from before \
             now ({unlogged} more not logged)"
        );
    }
    node.send(Command::ClusterGap).await;
}

/// Whether the stream lost entries after `last`, the newest one this
/// reader read ("0-0": none yet), and if so where to read on from: the
/// stream is gone (Redis came back empty), went back (a replica that had
/// not got them took over), or was trimmed past it.
async fn lost_since(
    conn: &mut Conn,
    stream: &str,
    last: &str,
) -> redis::RedisResult<Option<String>> {
    let last = entry_id(last).unwrap_or((0, 0));
    let info: redis::RedisResult<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .query_async(conn)
            .await;
    let info = match info {
        Ok(info) => info,
        // No stream: nothing was lost if nothing was read.
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            return Ok((last > (0, 0)).then(|| "0-0".to_owned()));
        }
        Err(e) => return Err(e),
    };
    let id_of = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(entry_id),
        redis::Value::SimpleString(s) => entry_id(s),
        redis::Value::Array(a) => a.first().and_then(|v| match v {
            redis::Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(entry_id),
            _ => None,
        }),
        _ => None,
    };
    let newest = info
        .get("last-generated-id")
        .and_then(id_of)
        .unwrap_or((0, 0));
    if newest < last {
        return Ok(Some(format!("{}-{}", newest.0, newest.1)));
    }
    let first = info.get("first-entry").and_then(id_of);
    Ok(first
        .is_some_and(|first| first > last && last > (0, 0))
        .then(|| format!("{}-{}", last.0, last.1)))
}

/// Whether the server that holds the stream answers: a connection to a
/// Redis Cluster opens while the node holding the stream's slot is down,
/// so the bus is up only once a command on the stream's key went through.
async fn reaches_the_stream(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.xlen::<_, u64>(STREAM).await.map(drop)
}

/// The most entries one round trip appends.
const PIPELINE: usize = 256;

/// Appends what the node publishes, in order, as many entries as are
/// waiting in one round trip (one [`PUBLISH`] script call, whatever streams
/// they go to); keeps a batch that failed and sends it first once
/// reconnected.
async fn write(
    servers: Servers,
    outbox: async_channel::Receiver<Entry>,
    up: Arc<AtomicBool>,
    latency: Histogram,
    keep: Duration,
    inbox: String,
) {
    let mut batch: Vec<Entry> = Vec::new();
    let mut attempt = 0;
    let ttl = ttl_ms(&inbox, keep);
    loop {
        let mut conn = connect(&servers, "writing").await;
        if let Err(e) = reaches_the_stream(&mut conn).await {
            tracing::warn!("Redis bus: cannot reach the stream (writing): {e}");
            back_off(&mut attempt).await;
            continue;
        }
        up.store(true, Ordering::Release);
        loop {
            if batch.is_empty() {
                match outbox.recv().await {
                    Ok(m) => batch.push(m),
                    // The node is gone: so is the server.
                    Err(_) => return,
                }
            }
            while batch.len() < PIPELINE
                && let Ok(m) = outbox.try_recv()
            {
                batch.push(m);
            }
            let mut call = PUBLISH.prepare_invoke();
            let mut keys: Vec<String> = vec![STREAM.to_owned()];
            let mut rooms = String::from("0");
            let mut args: Vec<(usize, &[u8])> = Vec::with_capacity(batch.len());
            for entry in &batch {
                let stream = key(&entry.topic);
                let i = match keys.iter().position(|k| *k == stream) {
                    Some(i) => i,
                    None => {
                        let room = matches!(entry.topic, Topic::Room { .. });
                        rooms.push(if room { '1' } else { '0' });
                        keys.push(stream);
                        keys.len() - 1
                    }
                };
                args.push((i + 1, entry.bytes.as_ref()));
            }
            for k in &keys {
                call.key(k);
            }
            call.arg(keep_since(keep)).arg(&ttl).arg(&rooms);
            for (i, bytes) in args {
                call.arg(i).arg(bytes);
            }
            let began = std::time::Instant::now();
            if let Err(e) = call.invoke_async::<()>(&mut conn).await {
                up.store(false, Ordering::Release);
                tracing::warn!("Redis bus: publishing failed: {e}; reconnecting");
                break;
            }
            latency.observe(began.elapsed().as_secs_f64());
            batch.clear();
        }
    }
}

/// A store whose `ping` (what `GET /ready` asks) also fails while the bus
/// is down, and whose per-user buckets are the cluster's (in Redis);
/// everything else goes to the store it wraps.
pub struct WithBus {
    store: Arc<dyn Store>,
    bus: Bus,
}

impl std::fmt::Debug for WithBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithBus")
            .field("up", &self.bus.is_up())
            .finish()
    }
}

impl WithBus {
    /// `store`, ready only while `bus` is up too.
    pub fn new(store: Arc<dyn Store>, bus: Bus) -> Self {
        WithBus { store, bus }
    }
}

impl Store for WithBus {
    fn ping(&self) -> StoreFuture<()> {
        if !self.bus.is_up() {
            let e = StoreError::transient("the cluster's bus (Redis) is unreachable");
            return Box::pin(std::future::ready(Err(e)));
        }
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
    fn take_token(&self, take: TakeToken) -> StoreFuture<Taken> {
        self.bus.take_token(take)
    }
}

#[cfg(test)]
mod tests {
    use super::{Servers, redact};

    #[test]
    fn the_stream_keeps_a_minute_or_the_past_a_starting_instance_reads() {
        use super::{MIN_KEEP, keep_for, keep_since};
        use std::time::Duration;
        assert_eq!(keep_for(None), MIN_KEEP);
        assert_eq!(keep_for(Some(Duration::from_secs(5))), MIN_KEEP);
        assert_eq!(
            keep_for(Some(Duration::from_secs(180))),
            Duration::from_secs(180)
        );
        let since: u64 = keep_since(Duration::from_secs(60)).parse().unwrap();
        let now = crate::unix_ms() as u64;
        assert!(
            (now - 61_000..=now - 60_000).contains(&since),
            "{since} {now}"
        );
    }

    #[test]
    fn every_key_of_the_bus_is_on_the_streams_slot() {
        use super::{STREAM, key};
        use protocol::bus::Topic;
        let keys = [
            key(&Topic::All),
            key(&Topic::Node("n1".into())),
            key(&Topic::Room {
                nsp: "/".into(),
                room: "chat:general".into(),
            }),
        ];
        assert_eq!(keys[0], STREAM);
        assert_eq!(keys[1], "{chatwire:bus}:node:n1");
        assert_eq!(keys[2], "{chatwire:bus}:room:/#chat:general");
        // Redis hashes a key with `{tag}` as it hashes `tag`.
        for k in &keys[1..] {
            assert!(k.starts_with(&format!("{{{STREAM}}}:")), "{k}");
        }
    }

    fn reply(streams: &[(&str, &[&str])]) -> redis::streams::StreamReadReply {
        use redis::streams::{StreamId, StreamKey};
        redis::streams::StreamReadReply {
            keys: streams
                .iter()
                .map(|(key, ids)| StreamKey {
                    key: (*key).to_owned(),
                    ids: ids
                        .iter()
                        .map(|id| StreamId {
                            id: (*id).to_owned(),
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn one_read_of_several_streams_is_handed_on_in_the_order_of_its_ids() {
        use super::{READ_COUNT, merged};
        let got = |entries: Vec<(String, redis::streams::StreamId)>| -> Vec<String> {
            entries
                .into_iter()
                .map(|(k, e)| format!("{k} {}", e.id))
                .collect()
        };
        let (entries, full) = merged(Some(reply(&[
            ("a", &["5-0", "9-0"]),
            ("b", &["4-1", "5-1", "10-0"]),
        ])));
        assert!(full.is_empty());
        assert_eq!(got(entries), ["b 4-1", "a 5-0", "b 5-1", "a 9-0", "b 10-0"]);
        // A full batch of `b` may have more before `a`'s later entries:
        // those wait for the next read.
        let ids: Vec<String> = (0..READ_COUNT).map(|i| format!("{}-0", 100 + i)).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (entries, full) = merged(Some(reply(&[("a", &["150-1", "700-0"]), ("b", &ids)])));
        assert_eq!(full, ["b"]);
        let entries = got(entries);
        assert_eq!(entries.len(), READ_COUNT + 1);
        assert_eq!(entries[51], "a 150-1");
        assert!(!entries.contains(&"a 700-0".to_owned()));
        assert!(merged(None).0.is_empty());
    }

    #[test]
    fn a_room_is_read_from_about_when_it_was_joined() {
        use super::{Change, Listen, entry_id};
        use protocol::bus::Topic;
        let listen = Listen::default();
        let now = crate::unix_ms() as u64;
        listen.saw(now);
        let room = Topic::Room {
            nsp: "/".into(),
            room: "r".into(),
        };
        let key = super::key(&room);
        assert!(listen.subscribe(&room));
        assert!(!listen.subscribe(&room), "read already");
        assert_eq!(listen.len(), 1);
        // From half a second before now, by Redis's clock as read.
        let Ok(Change::Subscribe(k, from)) = listen.heard.try_recv() else {
            panic!("no subscription");
        };
        assert_eq!(k, key);
        let (from, _) = entry_id(&from).unwrap();
        assert!((now - 500..=now - 400).contains(&from), "{from} {now}");
        assert!(listen.heard.try_recv().is_err(), "once");
        listen.unsubscribe(&room);
        listen.unsubscribe(&room);
        assert_eq!(listen.heard.try_recv(), Ok(Change::Unsubscribe(key)));
        assert!(listen.heard.try_recv().is_err(), "once");
        assert!(listen.is_empty());
        // An entry read later moves the reckoning on; an older one does not.
        listen.saw(now + 60_000);
        listen.saw(now);
        assert!(listen.redis_now().unwrap() >= now + 60_000);
    }

    #[test]
    fn the_publisher_is_named_as_the_first_url_names_its_server() {
        use super::with_address;
        assert_eq!(
            with_address("redis://127.0.0.1:7000", "10.0.0.2", 7001),
            "redis://10.0.0.2:7001"
        );
        assert_eq!(
            with_address("rediss://u:p@w@h1:1/2?protocol=resp3", "h2", 6379),
            "rediss://u:p@w@h2:6379/2?protocol=resp3"
        );
        assert_eq!(with_address("redis://h1:1", "::1", 7), "redis://[::1]:7");
    }

    #[test]
    fn passwords_are_not_logged() {
        assert_eq!(redact("redis://:hunter2@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://:a@h1:1,redis://h2:2"),
            "redis://***@h1:1,redis://h2:2"
        );
    }

    #[test]
    fn redis_url_is_one_url_or_a_list_of_them() {
        assert_eq!(Servers::parse("redis://h:1").unwrap().urls, ["redis://h:1"]);
        assert_eq!(
            Servers::parse("redis://h:1, redis://h:2,").unwrap().urls,
            ["redis://h:1", "redis://h:2"]
        );
        for bad in ["", ",", "bogus://x", "redis://h:1,http://h:2"] {
            assert!(Servers::parse(bad).is_err(), "{bad:?}");
        }
    }
}
