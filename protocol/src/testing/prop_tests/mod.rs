//! Property tests: codec round-trips, decoders that never panic, and the
//! chat service against its promises over random operation sequences.
//! `PROPTEST_CASES=<n>` raises the number of cases.

mod chat;
mod codec;

/// `default` cases, or `PROPTEST_CASES` when set: `with_cases` alone would
/// override the environment variable that proptest's default reads.
fn config(default: u32) -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::prelude::ProptestConfig::with_cases(cases)
}
