//! chatwire's own stores: [`EmbeddedStore`], the default durable store in one
//! local directory, and [`MemoryStore`], for `DATABASE_URL=memory:`.
//!
//! Why SQLite: it is small, bundled (no server to run), one of the best kept
//! and tested pieces of software there is, and in WAL mode with
//! `synchronous=FULL` a commit is on disk when it returns, which is what the
//! core needs before it acknowledges a message. Everything lives in one file.
//! The cost of that durability is one fsync per commit; a single writer
//! thread that commits every write queued behind the previous commit in one
//! transaction (group commit) shares that fsync among many concurrent sends.
//!
//! Both stores run the conformance suite in `protocol::testing::store_suite`, and their
//! futures need no particular runtime: the embedded store's threads resolve
//! `futures-channel` oneshots, the memory store's futures are ready at once.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod embedded;

pub use embedded::{EmbeddedStore, OpenError};
pub use protocol::store::memory::MemoryStore;
