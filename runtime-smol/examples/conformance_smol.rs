//! The server the official Engine.IO and Socket.IO protocol suites (and our
//! end-to-end tests) run against, on smol ([`driver::conformance::main`]).

fn main() -> std::io::Result<()> {
    smol::block_on(driver::conformance::main(chatwire_smol::Smol))
}
