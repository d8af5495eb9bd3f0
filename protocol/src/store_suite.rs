//! The conformance suite every `Store` implementation runs.
