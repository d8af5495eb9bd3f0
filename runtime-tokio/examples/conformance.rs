//! The server the official Engine.IO and Socket.IO protocol suites (and our
//! end-to-end tests) run against, on tokio ([`driver::conformance::main`]).

#[tokio::main]
async fn main() -> std::io::Result<()> {
    driver::conformance::main(chatwire::Tokio).await
}
