//! `chatwire`: the chat server on tokio.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use chatwire::Tokio;
use clap::Parser;
use driver::app::{Config, Served};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    let served = match Served::build(&Tokio, &config, Instant::now()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chatwire: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match chatwire::bind(SocketAddr::new(config.host, config.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "chatwire: cannot listen on {}:{}: {e}",
                config.host, config.port
            );
            return ExitCode::from(2);
        }
    };
    served.announce(listener.local_addr().ok());
    chatwire::serve(listener, served.routes.clone(), shutdown_signal()).await;
    served.shutdown(&Tokio).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
