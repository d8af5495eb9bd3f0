//! The sans-IO core of chatwire.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod ids;
pub mod model;
pub mod store;
#[cfg(feature = "store-suite")]
pub mod store_suite;
pub mod auth;
pub mod http;
