//! The chat server's configuration and wiring, shared by every runtime's
//! binary: parse the settings, open the store, build the node, route, serve
//! until a stop signal, shut down cleanly.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::future::{Either, select};
use protocol::Node;
use protocol::auth::JwtConfig;
use protocol::chat::{Chat, ChatConfig, DEFAULT_MAX_CHATS, RateLimit, WallClock};
use protocol::eio::EngineConfig;
use protocol::http::throttle::ThrottleConfig;
use protocol::http::{Rest, RestConfig};
use protocol::ids::{IdGenerator, SeededIds};
use protocol::sio::{ClusterConfig, RecoveryConfig, SocketIo, SocketIoConfig};
use protocol::store::Store;

use crate::edge::Cidr;
use crate::node_task::Command;
use crate::{
    ApiDocs, BoxFuture, EdgeConfig, Metrics, NodeHandle, Routes, Runtime, Server, WebApp,
    random_seed, unix_ms,
};

/// The longest busy poll `BUSY_POLL_MICROS` may ask for (10 ms): a wake
/// from sleep costs tens of microseconds, so polling longer saves nothing
/// more and only spends the CPU.
pub const MAX_BUSY_POLL_MICROS: u64 = 10_000;

/// The server's settings: each an environment variable and a flag.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "chatwire",
    version,
    about = "A real-time chat server: Socket.IO v5, REST, durable storage"
)]
pub struct Config {
    /// `memory:`, `mongodb://...`, or a directory for the embedded store.
    #[arg(long, env = "DATABASE_URL", default_value = "./data")]
    pub database_url: String,
    /// The HMAC secret for tokens, at least 32 bytes; random (tokens die with the process) if unset.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// HS256, HS384 or HS512.
    #[arg(long, env = "JWT_ALGORITHM", default_value = "HS256")]
    pub jwt_algorithm: String,
    /// How long a token is valid.
    #[arg(long, env = "JWT_EXPIRATION_MINUTES", default_value_t = 43200)]
    pub jwt_expiration_minutes: u64,
    /// The address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Comma-separated allowed origins, `*` for any.
    #[arg(long, env = "CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,
    /// bcrypt's cost for new passwords.
    #[arg(long, env = "BCRYPT_COST", default_value_t = 12)]
    pub bcrypt_cost: u32,
    /// Engine.IO `pingInterval`, in milliseconds.
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// Engine.IO `pingTimeout`, in milliseconds.
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,
    /// Engine.IO `maxPayload`, in bytes.
    #[arg(long, env = "MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub max_payload: usize,
    /// `chat:send`s a user may make per second, on average.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 20.0)]
    pub rate_limit_per_second: f64,
    /// How many `chat:send`s a user may make in a burst.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 40.0)]
    pub rate_limit_burst: f64,
    /// Client events (of any name) one socket may send per second, on average.
    #[arg(long, env = "EVENT_RATE_LIMIT_PER_SECOND", default_value_t = RateLimit::EVENTS.per_second)]
    pub event_rate_limit_per_second: f64,
    /// How many client events one socket may send in a burst.
    #[arg(long, env = "EVENT_RATE_LIMIT_BURST", default_value_t = RateLimit::EVENTS.burst)]
    pub event_rate_limit_burst: f64,
    /// The most chats one socket may be in, `general` included.
    #[arg(long, env = "MAX_CHATS_PER_SOCKET", default_value_t = DEFAULT_MAX_CHATS)]
    pub max_chats_per_socket: usize,
    /// How long, in milliseconds, `isTyping: true` stands unrepeated before
    /// the chat is told the typist stopped; 0: until the client says so.
    #[arg(long, env = "TYPING_TIMEOUT_MS", default_value_t = 10_000)]
    pub typing_timeout_ms: u64,
    /// Connection state recovery, in milliseconds: how long a socket whose
    /// transport ended may come back as itself (same id, its chats, every
    /// event it missed). 0 (the default): off, as in socket.io, since every
    /// recoverable event then carries its offset as an extra last argument.
    #[arg(long, env = "RECOVERY_WINDOW_MS", default_value_t = 0)]
    pub recovery_window_ms: u64,
    /// `redis://...`: this instance is one of a cluster whose instances
    /// share this Redis (and a MongoDB store): room emits, read and typing
    /// events and the per-user rate limit cross instances through it. Any
    /// node of a Redis Cluster, or a comma-separated list of its nodes.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// How long, in microseconds, the node keeps polling for more work
    /// after each turn before it sleeps, up to 10,000; 0 (the default): it
    /// sleeps at once. Shorter replies on a core given to the server; CPU
    /// spent polling otherwise (see docs/CONFIGURATION.md).
    #[arg(long, env = "BUSY_POLL_MICROS", default_value_t = 0)]
    pub busy_poll_micros: u64,
    /// The most connections open at once (HTTP and WebSocket); past it a
    /// new one is answered 503 and closed. 0: the open-file limit less a
    /// tenth of it (at least 64).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// How long, in milliseconds, a request's headers may take to arrive,
    /// from the connection's start or the end of the previous response (so
    /// also how long a keep-alive connection may stay idle).
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,
    /// How long, in milliseconds, a request's body may take to arrive.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_body_timeout_ms: u64,
    /// The largest request line and headers, in bytes (431 past it).
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16_384)]
    pub max_header_bytes: usize,
    /// `/login` and `/register` attempts per client address per minute, on average.
    #[arg(long, env = "AUTH_RATE_PER_MINUTE", default_value_t = 20.0)]
    pub auth_rate_per_minute: f64,
    /// `/login` and `/register` attempts per client address in a burst.
    #[arg(long, env = "AUTH_BURST", default_value_t = 20.0)]
    pub auth_burst: f64,
    /// Failed logins per username per hour, on average, from addresses it
    /// never logged in from.
    #[arg(long, env = "LOGIN_FAILURES_PER_HOUR", default_value_t = 60.0)]
    pub login_failures_per_hour: f64,
    /// Failed logins per username in a burst.
    #[arg(long, env = "LOGIN_FAILURE_BURST", default_value_t = 10.0)]
    pub login_failure_burst: f64,
    /// Comma-separated addresses or networks (`10.0.0.0/8`) of proxies whose
    /// `X-Forwarded-For` names the client; from anyone else it is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// The most bcrypt checks under way or waiting at once (503 past it); 0:
    /// four per core.
    #[arg(long, env = "BCRYPT_MAX_PENDING", default_value_t = 0)]
    pub bcrypt_max_pending: usize,
    /// Instead of serving: ask the server at HOST:PORT (loopback when HOST
    /// is 0.0.0.0 or ::) for `GET /ready`; exit 0 on a 200, 1 otherwise.
    /// A container's health check, with no HTTP client in the image.
    #[arg(long)]
    pub healthcheck: bool,
    /// How long, in milliseconds, a shutdown (SIGTERM, Ctrl-C) may take to
    /// finish what is under way and close every connection cleanly before
    /// the process exits anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 8_000)]
    pub shutdown_timeout_ms: u64,
}

/// A setting that cannot be used; the server refuses to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// JWT settings are unusable.
    #[error("{0}")]
    Jwt(#[from] protocol::auth::AuthConfigError),
    /// The store could not be opened.
    #[error("DATABASE_URL {url:?}: {reason}")]
    Store {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The rate limit cannot let any message through.
    #[error(
        "RATE_LIMIT_PER_SECOND must be above 0 and RATE_LIMIT_BURST at least 1, not {rate} and {burst}"
    )]
    RateLimit {
        /// The rate given.
        rate: f64,
        /// The burst given.
        burst: f64,
    },
    /// The event budget cannot let any event through.
    #[error(
        "EVENT_RATE_LIMIT_PER_SECOND must be above 0 and EVENT_RATE_LIMIT_BURST at least 1, not {rate} and {burst}"
    )]
    EventRateLimit {
        /// The rate given.
        rate: f64,
        /// The burst given.
        burst: f64,
    },
    /// A socket could not even be in `general`.
    #[error("MAX_CHATS_PER_SOCKET must be at least 1, not {0}")]
    MaxChats(usize),
    /// A busy poll longer than any wait it could save.
    #[error("BUSY_POLL_MICROS must be at most {MAX_BUSY_POLL_MICROS} (10 ms), not {0}")]
    BusyPoll(u64),
    /// bcrypt's cost is out of its range.
    #[error("BCRYPT_COST must be from 4 to 31, not {0}")]
    BcryptCost(u32),
    /// A login throttle that lets nothing through.
    #[error("{0} must be above 0, and its burst at least 1")]
    Throttle(&'static str),
    /// `TRUSTED_PROXIES` names something that is not an address or network.
    #[error("TRUSTED_PROXIES: {0}")]
    TrustedProxies(String),
    /// A cluster on a store only one process can use.
    #[error(
        "REDIS_URL is set (a cluster), but DATABASE_URL {0:?} is not a store the instances can share: \
         use mongodb:// (the embedded store and memory: belong to one process)"
    )]
    ClusterStore(String),
    /// The Redis bus could not start.
    #[error("{0}")]
    Bus(#[from] crate::bus::BusError),
}

/// Opens the store `DATABASE_URL` names, and says (once, at info) which
/// store it is and where it keeps its data, without credentials.
pub fn open_store(url: &str) -> Result<Arc<dyn Store>, ConfigError> {
    let fail = |reason: String| ConfigError::Store {
        url: url.to_owned(),
        reason,
    };
    if url == "memory:" {
        tracing::info!("in-memory store (memory:): nothing outlives the process");
        return Ok(Arc::new(store_embedded::MemoryStore::new()));
    }
    if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        let redacted = store_mongo::redact_url(url);
        let store = store_mongo::MongoStore::connect(url)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| ConfigError::Store {
                url: redacted.clone(),
                reason: e.to_string(),
            })?;
        // The options after `?` are not where the data is, and could carry secrets.
        let at = redacted.split('?').next().unwrap_or_default();
        tracing::info!("MongoDB store at {at}");
        return Ok(store);
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(fail(format!(
            "unknown scheme {scheme:?}; use memory:, mongodb://, or a directory"
        )));
    }
    let dir = PathBuf::from(url.strip_prefix("embedded:").unwrap_or(url));
    let store = store_embedded::EmbeddedStore::open(&dir).map_err(|e| fail(e.to_string()))?;
    tracing::info!(
        "embedded store at {}",
        dir.join(store_embedded::EmbeddedStore::FILE_NAME).display()
    );
    Ok(Arc::new(store))
}

/// Opens the store on a thread of its own, so that `stop` is heard while a
/// MongoDB server is being waited for; `None` when `stop` came first (the
/// thread is left to end with the process).
async fn open_store_or_stop(
    url: &str,
    stop: &mut BoxFuture<()>,
) -> Option<Result<Arc<dyn Store>, ConfigError>> {
    let (tx, opened) = futures_channel::oneshot::channel();
    let owned = url.to_owned();
    let spawned = std::thread::Builder::new()
        .name("chatwire-open-store".into())
        .spawn(move || {
            // The receiver is gone only when a stop came first.
            let _ = tx.send(open_store(&owned));
        });
    if spawned.is_err() {
        // No thread to spare: open it here, deaf to `stop` meanwhile.
        return Some(open_store(url));
    }
    match select(opened, stop).await {
        Either::Left((store, _)) => {
            Some(store.expect("the opening thread sends its result: open_store does not panic"))
        }
        Either::Right(_) => None,
    }
}

/// A running chat server's parts.
#[derive(Debug)]
pub struct Served<R> {
    /// What each request goes to.
    pub routes: Routes<R>,
    node: NodeHandle,
}

impl<R: Runtime> Served<R> {
    /// Checks the settings, opens the store, and starts the node; `None`
    /// when `stop` came first (a MongoDB server that does not answer is
    /// tried for 20 s, and a stop meanwhile ends the start at once).
    pub async fn build(
        rt: &R,
        config: &Config,
        now: Instant,
        stop: &mut BoxFuture<()>,
    ) -> Result<Option<Self>, ConfigError> {
        if !(4..=31).contains(&config.bcrypt_cost) {
            return Err(ConfigError::BcryptCost(config.bcrypt_cost));
        }
        let usable = |rate: f64, burst: f64| {
            rate.is_finite() && rate > 0.0 && burst.is_finite() && burst >= 1.0
        };
        let (rate, burst) = (config.rate_limit_per_second, config.rate_limit_burst);
        if !usable(rate, burst) {
            return Err(ConfigError::RateLimit { rate, burst });
        }
        if !usable(config.auth_rate_per_minute, config.auth_burst) {
            return Err(ConfigError::Throttle("AUTH_RATE_PER_MINUTE"));
        }
        if !usable(config.login_failures_per_hour, config.login_failure_burst) {
            return Err(ConfigError::Throttle("LOGIN_FAILURES_PER_HOUR"));
        }
        let trusted_proxies = config
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse::<Cidr>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::TrustedProxies)?;
        let events = RateLimit {
            per_second: config.event_rate_limit_per_second,
            burst: config.event_rate_limit_burst,
        };
        if !usable(events.per_second, events.burst) {
            return Err(ConfigError::EventRateLimit {
                rate: events.per_second,
                burst: events.burst,
            });
        }
        if config.max_chats_per_socket == 0 {
            return Err(ConfigError::MaxChats(config.max_chats_per_socket));
        }
        if config.busy_poll_micros > MAX_BUSY_POLL_MICROS {
            return Err(ConfigError::BusyPoll(config.busy_poll_micros));
        }
        if events.burst < config.max_chats_per_socket as f64 {
            tracing::warn!(
                "EVENT_RATE_LIMIT_BURST ({}) is below MAX_CHATS_PER_SOCKET ({}): a client reconnecting cannot rejoin all its chats at once",
                events.burst,
                config.max_chats_per_socket
            );
        }
        let mut seeds = SeededIds::new(random_seed());
        let secret = match &config.jwt_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "JWT_SECRET is not set: using a random secret; every token dies with this process"
                );
                let mut s = vec![0u8; 48];
                seeds.fill(&mut s);
                s
            }
        };
        let jwt = JwtConfig::new(
            &secret,
            &config.jwt_algorithm,
            config.jwt_expiration_minutes,
        )?;
        let shared = ["mongodb://", "mongodb+srv://"]
            .iter()
            .any(|p| config.database_url.starts_with(p));
        if config.redis_url.is_some() && !shared {
            return Err(ConfigError::ClusterStore(config.database_url.clone()));
        }
        if let Some(url) = &config.redis_url {
            // Before the store, which may take seconds to answer.
            crate::bus::check_url(url)?;
        }
        let Some(store) = open_store_or_stop(&config.database_url, stop).await else {
            return Ok(None);
        };
        let store = store?;
        let engine = EngineConfig {
            ping_interval: Duration::from_millis(config.ping_interval_ms),
            ping_timeout: Duration::from_millis(config.ping_timeout_ms),
            max_payload: config.max_payload,
            ..EngineConfig::default()
        };
        // The chat service's anchor until the node task's first reading of
        // the clock (it reads it with every batch of inputs).
        let clock = WallClock::new(now, unix_ms());
        let chat = Chat::new(
            ChatConfig {
                jwt: jwt.clone(),
                rate: RateLimit {
                    per_second: config.rate_limit_per_second,
                    burst: config.rate_limit_burst,
                },
                events,
                max_chats: config.max_chats_per_socket,
                typing_timeout: (config.typing_timeout_ms > 0)
                    .then(|| Duration::from_millis(config.typing_timeout_ms)),
            },
            clock,
            now,
        );
        // In a cluster, this instance's name on the bus: random, never reused.
        let cluster = config.redis_url.as_ref().map(|_| {
            let mut raw = [0u8; 8];
            seeds.fill(&mut raw);
            ClusterConfig {
                node: raw.iter().map(|b| format!("{b:02x}")).collect(),
            }
        });
        let sio = SocketIo::new(
            SocketIoConfig {
                recovery: (config.recovery_window_ms > 0)
                    .then(|| RecoveryConfig::new(Duration::from_millis(config.recovery_window_ms))),
                cluster: cluster.clone(),
                ..SocketIoConfig::default()
            },
            chat,
        );
        let metrics = Arc::new(Metrics::new());
        // In a cluster (given to the Socket.IO layer above), session ids name
        // this instance, and polling requests for another's sessions go
        // there over the bus.
        let node = Node::new(engine, sio, SeededIds::new(random_seed()), now);
        let (node, store) = match (&config.redis_url, cluster) {
            (Some(url), Some(cluster)) => {
                // The store the node and the REST routes use: `GET /ready`
                // says 503 while Redis is away too, and the per-user
                // buckets are the cluster's, in Redis.
                // With recovery on, the bus's recent past is read first: the
                // sessions and events of the window outlive their instances.
                let replay = (config.recovery_window_ms > 0).then(|| {
                    RecoveryConfig::new(Duration::from_millis(config.recovery_window_ms))
                        .past_to_read()
                });
                let bus = crate::bus::Bus::new(url, crate::bus::keep_for(replay))?;
                let store: Arc<dyn Store> = Arc::new(crate::bus::WithBus::new(store, bus.clone()));
                let (outbox, published) = async_channel::bounded(crate::bus::OUTBOX);
                let listen = Arc::new(crate::bus::Listen::default());
                let node = crate::spawn_cluster_node(
                    rt,
                    node,
                    Some(store.clone()),
                    Some(metrics.clone()),
                    outbox,
                    listen.clone(),
                );
                bus.run(
                    &cluster.node,
                    published,
                    node.clone(),
                    listen,
                    replay,
                    metrics.bus_publish(),
                );
                tracing::info!(
                    "cluster: instance {} on Redis at {}",
                    cluster.node,
                    crate::bus::redact(url)
                );
                (node, store)
            }
            _ => {
                let node = crate::spawn_node(rt, node, Some(store.clone()), Some(metrics.clone()));
                (node, store)
            }
        };
        node.busy_poll(Duration::from_micros(config.busy_poll_micros));
        let (service, version) = ("chatwire", env!("CARGO_PKG_VERSION"));
        let rest = Rest::new(RestConfig {
            jwt,
            bcrypt_cost: config.bcrypt_cost,
            service: service.into(),
            version: version.into(),
            throttle: ThrottleConfig {
                per_address: RateLimit {
                    per_second: config.auth_rate_per_minute / 60.0,
                    burst: config.auth_burst,
                },
                failures_per_user: RateLimit {
                    per_second: config.login_failures_per_hour / 3600.0,
                    burst: config.login_failure_burst,
                },
                ..ThrottleConfig::default()
            },
        });
        let cors = config
            .cors_origins
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let routes = Routes::new(rt.clone(), config.max_payload, cors)
            .engine("/socket.io/", node.clone())
            .docs(ApiDocs::new(service, version))
            .web(WebApp)
            .rest(rest, store, Box::new(seeds))
            .metrics(metrics)
            .trusted_proxies(trusted_proxies)
            .bcrypt_max_pending(match config.bcrypt_max_pending {
                0 => crate::service::default_bcrypt_max(),
                n => n,
            })
            .edge(EdgeConfig {
                max_connections: match config.max_connections {
                    0 => crate::default_max_connections(),
                    n => n,
                },
                header_timeout: Duration::from_millis(config.http_header_timeout_ms.max(1)),
                body_timeout: Duration::from_millis(config.http_body_timeout_ms.max(1)),
                max_header_bytes: config.max_header_bytes,
            });
        Ok(Some(Served { routes, node }))
    }

    /// Drains, within `timeout`: the node refuses new work, finishes the
    /// store writes under way and answers them, then closes every session
    /// (`Input::Shutdown`); then every HTTP connection ends after the
    /// request it serves, and the WebSockets finish their close handshakes.
    /// Call it once the listener is closed. True if all of it ended in time.
    pub async fn shutdown(&self, rt: &R, timeout: Duration) -> bool {
        let give_up = Instant::now() + timeout;
        tracing::info!(
            "shutting down: finishing what is under way (up to {} ms)",
            timeout.as_millis()
        );
        let (tx, drained) = futures_channel::oneshot::channel();
        self.node.send(Command::Shutdown(tx)).await;
        let drained = matches!(
            select(drained, rt.sleep_until(give_up)).await,
            Either::Left((Ok(()), _))
        );
        let connections = &self.routes.connections;
        connections.finish();
        while connections.live() > 0 && Instant::now() < give_up {
            rt.sleep_until(Instant::now() + Duration::from_millis(10))
                .await;
        }
        let left = connections.live();
        if drained && left == 0 {
            tracing::info!("every session closed cleanly; exiting");
            return true;
        }
        tracing::warn!(
            "shutdown timeout passed: exiting with {} store operations and {left} connections left{}",
            self.node.store_operations(),
            if drained {
                ""
            } else {
                " (sessions still open)"
            }
        );
        false
    }
}

/// The whole `chatwire` binary on the runtime `rt`: logs to stderr (filter
/// from `RUST_LOG`), reads [`Config`] from the flags and environment, serves
/// until SIGTERM or Ctrl-C, then stops accepting and drains
/// ([`Served::shutdown`], up to `SHUTDOWN_TIMEOUT_MS`) and exits with
/// status 0. Bad settings, or an address that cannot be bound, print a
/// message and exit with status 2.
pub async fn main<S: Server>(rt: S) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file or collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::parse();
    if config.healthcheck {
        let addr = probe_addr(config.host, config.port);
        return match check_ready(addr, HEALTHCHECK_TIMEOUT) {
            Ok(()) => {
                println!("ready: http://{addr}/ready answered 200");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("chatwire --healthcheck: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Before the store opens (a MongoDB connect may take seconds): a stop
    // asked for meanwhile ends the start at once.
    let mut stop = rt.stop_signal();
    let served = match Served::build(&rt, &config, Instant::now(), &mut stop).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("chatwire: stopped before the store was open");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chatwire: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::new(config.host, config.port);
    let listener = match rt.bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chatwire: cannot listen on {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Ok(a) = rt.local_addr(&listener) {
        crate::announce(a);
    }
    crate::serve(&rt, listener, served.routes.clone(), stop).await;
    served
        .shutdown(&rt, Duration::from_millis(config.shutdown_timeout_ms))
        .await;
    ExitCode::SUCCESS
}

/// How long `--healthcheck` waits for the whole answer.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The address a check on this machine reaches a server bound to
/// `host:port` at: loopback for an unspecified `host`, else `host`.
pub fn probe_addr(host: IpAddr, port: u16) -> SocketAddr {
    let ip = match host {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, port)
}

/// `GET /ready` at `addr` over a plain TCP connection, all within `timeout`:
/// `Ok` if the status line says 200, else what went wrong.
pub fn check_ready(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer from {addr} within {timeout:?}"))
    };
    let mut conn =
        TcpStream::connect_timeout(&addr, left()?).map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_write_timeout(Some(left()?))
        .and_then(|()| {
            write!(
                conn,
                "GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
        })
        .map_err(|e| format!("send to {addr}: {e}"))?;
    // The status line is all we read: "HTTP/1.1 200 OK\r\n".
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 256 {
        conn.set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("").trim_end();
    let mut words = line.split(' ');
    match (words.next(), words.next()) {
        (Some(v), Some("200")) if v.starts_with("HTTP/1.") => Ok(()),
        _ if line.is_empty() => Err(format!("{addr} closed the connection without an answer")),
        _ => Err(format!("{addr}/ready answered {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A one-connection server that reads the request, then writes `answer`
    /// (or, with `None`, holds the connection open without answering);
    /// returns its address and the request it read.
    fn one_shot(answer: Option<&'static str>) -> (SocketAddr, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            match answer {
                Some(a) => conn.write_all(a.as_bytes()).unwrap(),
                None => thread::sleep(Duration::from_secs(2)),
            }
            String::from_utf8(req).unwrap()
        });
        (addr, server)
    }

    #[test]
    fn a_200_is_ready_and_the_request_is_get_ready() {
        let (addr, server) = one_shot(Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"));
        assert_eq!(check_ready(addr, Duration::from_secs(5)), Ok(()));
        let req = server.join().unwrap();
        assert!(req.starts_with("GET /ready HTTP/1.1\r\n"), "{req:?}");
        assert!(req.contains(&format!("Host: {addr}\r\n")), "{req:?}");
    }

    #[test]
    fn other_answers_are_not_ready() {
        for answer in [
            "HTTP/1.1 503 Service Unavailable\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SSH-2.0-OpenSSH 200\r\n",
            "",
        ] {
            let (addr, server) = one_shot(Some(answer));
            let err = check_ready(addr, Duration::from_secs(5)).unwrap_err();
            server.join().unwrap();
            assert!(err.contains(&addr.to_string()), "{answer:?}: {err}");
        }
    }

    #[test]
    fn silence_times_out() {
        let (addr, server) = one_shot(None);
        let started = Instant::now();
        let err = check_ready(addr, Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(1500), "{err}");
        assert!(err.contains("300ms") || err.contains("read from"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn nothing_listening_is_not_ready() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // the listener is dropped: the port refuses
        let err = check_ready(addr, Duration::from_secs(2)).unwrap_err();
        assert!(err.starts_with("connect "), "{err}");
    }

    #[test]
    fn probes_loopback_for_an_unspecified_host() {
        let p = |h: &str| probe_addr(h.parse().unwrap(), 3000).to_string();
        assert_eq!(p("0.0.0.0"), "127.0.0.1:3000");
        assert_eq!(p("::"), "[::1]:3000");
        assert_eq!(p("10.1.2.3"), "10.1.2.3:3000");
        assert_eq!(p("127.0.0.1"), "127.0.0.1:3000");
    }

    #[test]
    fn healthcheck_is_a_flag_only() {
        let c = Config::try_parse_from(["chatwire", "--healthcheck", "--port", "4000"]).unwrap();
        assert!(c.healthcheck && c.port == 4000);
        assert!(!Config::try_parse_from(["chatwire"]).unwrap().healthcheck);
    }
}
