//! Benchmarks of chatwire: criterion benches of the core (`benches/`) and
//! `loadgen`, a load generator that drives a running server over raw
//! Engine.IO / Socket.IO on WebSocket (`src/bin/loadgen.rs`).
#![forbid(unsafe_code)]
