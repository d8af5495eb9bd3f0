//! Property tests: codec round-trips, decoders that never panic, and the
//! chat service against its promises over random operation sequences.
//! `PROPTEST_CASES=<n>` raises the number of cases.

mod chat;
mod codec;
