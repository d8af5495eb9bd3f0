//! `chatwire-smol`: the chat server on smol ([`driver::app::main`]), with the
//! same settings, defaults and behaviour as `chatwire`.

fn main() -> std::process::ExitCode {
    chatwire_smol::run(driver::app::main(chatwire_smol::Smol))
}
