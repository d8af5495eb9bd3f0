//! `chatwire`: the chat server on tokio ([`driver::app::main`]).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    driver::app::main(chatwire::Tokio).await
}
