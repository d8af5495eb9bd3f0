//! The server the official Engine.IO and Socket.IO protocol suites (and our
//! end-to-end tests) run against: Socket.IO at `/socket.io/` with namespaces
//! `/` and `/custom`, a raw Engine.IO echo at `/engine.io/`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chatwire::Tokio;
use clap::Parser;
use driver::conformance::{Conformance, EngineEcho};
use driver::{Routes, spawn_node};
use protocol::Node;
use protocol::eio::EngineConfig;
use protocol::ids::SeededIds;
use protocol::sio::{SocketIo, SocketIoConfig};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    #[arg(long, default_value_t = 3000)]
    port: u16,
    #[arg(long, default_value_t = 300)]
    ping_interval: u64,
    #[arg(long, default_value_t = 200)]
    ping_timeout: u64,
    #[arg(long, default_value_t = 1_000_000)]
    max_payload: usize,
    #[arg(long, default_value_t = 1000)]
    connect_timeout: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = EngineConfig {
        ping_interval: Duration::from_millis(args.ping_interval),
        ping_timeout: Duration::from_millis(args.ping_timeout),
        max_payload: args.max_payload,
        ..EngineConfig::default()
    };
    let sio = SocketIo::new(
        SocketIoConfig {
            connect_timeout: Duration::from_millis(args.connect_timeout),
        },
        Conformance::default(),
    );
    let now = Instant::now();
    let socketio = spawn_node(
        &Tokio,
        Node::new(
            config.clone(),
            sio,
            SeededIds::new(driver::random_seed()),
            now,
        ),
        None,
    );
    let echo = spawn_node(
        &Tokio,
        Node::new(
            config,
            EngineEcho,
            SeededIds::new(driver::random_seed()),
            now,
        ),
        None,
    );
    let routes = Routes::new(Tokio, args.max_payload, vec!["*".into()])
        .engine("/socket.io/", socketio)
        .engine("/engine.io/", echo);
    let listener = chatwire::bind(SocketAddr::new(args.host, args.port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    chatwire::serve(listener, routes, std::future::pending()).await;
    Ok(())
}
