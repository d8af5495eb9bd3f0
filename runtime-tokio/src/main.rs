//! `chatwire`: the chat server on tokio ([`driver::app::main`]).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // On a worker thread, not the main thread's `block_on`: the accept loop
    // and the connections it spawns run on the same thread, with no thread
    // to wake for each connection accepted.
    tokio::spawn(driver::app::main(chatwire::Tokio))
        .await
        .unwrap_or(std::process::ExitCode::FAILURE)
}
