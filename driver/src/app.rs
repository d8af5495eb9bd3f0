//! The chat server's configuration and wiring, shared by every runtime's
//! binary: parse the settings, open the store, build the node, route, serve
//! until a stop signal, shut down cleanly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use protocol::Node;
use protocol::auth::JwtConfig;
use protocol::chat::{Chat, ChatConfig, DEFAULT_MAX_CHATS, RateLimit, WallClock};
use protocol::eio::EngineConfig;
use protocol::http::{Rest, RestConfig};
use protocol::ids::{IdGenerator, SeededIds};
use protocol::sio::{SocketIo, SocketIoConfig};
use protocol::store::Store;

use crate::node_task::Command;
use crate::{Metrics, NodeHandle, Routes, Runtime, Server, random_seed, unix_ms};

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
    /// bcrypt's cost is out of its range.
    #[error("BCRYPT_COST must be from 4 to 31, not {0}")]
    BcryptCost(u32),
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

/// A running chat server's parts.
#[derive(Debug)]
pub struct Served<R> {
    /// What each request goes to.
    pub routes: Routes<R>,
    node: NodeHandle,
}

impl<R: Runtime> Served<R> {
    /// Checks the settings, opens the store, and starts the node.
    pub fn build(rt: &R, config: &Config, now: Instant) -> Result<Self, ConfigError> {
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
        let store = open_store(&config.database_url)?;
        let engine = EngineConfig {
            ping_interval: Duration::from_millis(config.ping_interval_ms),
            ping_timeout: Duration::from_millis(config.ping_timeout_ms),
            max_payload: config.max_payload,
            ..EngineConfig::default()
        };
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
            WallClock::new(now, unix_ms()),
            now,
        );
        let sio = SocketIo::new(SocketIoConfig::default(), chat);
        let metrics = Arc::new(Metrics::new());
        let node = crate::spawn_node(
            rt,
            Node::new(engine, sio, SeededIds::new(random_seed()), now),
            Some(store.clone()),
            Some(metrics.clone()),
        );
        let rest = Rest::new(RestConfig {
            jwt,
            bcrypt_cost: config.bcrypt_cost,
            service: "chatwire".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        });
        let cors = config
            .cors_origins
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let routes = Routes::new(rt.clone(), config.max_payload, cors)
            .engine("/socket.io/", node.clone())
            .rest(rest, store, Box::new(seeds))
            .metrics(metrics);
        Ok(Served { routes, node })
    }

    /// Closes every session cleanly and waits (up to 5 s) for running store writes.
    pub async fn shutdown(&self, rt: &R) {
        tracing::info!("shutting down");
        self.node.send(Command::Shutdown).await;
        // Let the close frames go out and every running store write land
        // (bounded: a store that hangs must not hold the process forever).
        let give_up = Instant::now() + Duration::from_secs(5);
        rt.sleep_until(Instant::now() + Duration::from_millis(100))
            .await;
        while self.node.store_operations() > 0 && Instant::now() < give_up {
            rt.sleep_until(Instant::now() + Duration::from_millis(20))
                .await;
        }
    }
}

/// The whole `chatwire` binary on the runtime `rt`: logs to stderr (filter
/// from `RUST_LOG`), reads [`Config`] from the flags and environment, serves
/// until SIGTERM or Ctrl-C, then closes every session. Bad settings, or an
/// address that cannot be bound, print a message and exit with status 2.
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
    let served = match Served::build(&rt, &config, Instant::now()) {
        Ok(s) => s,
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
    crate::serve(&rt, listener, served.routes.clone(), rt.stop_signal()).await;
    served.shutdown(&rt).await;
    ExitCode::SUCCESS
}
