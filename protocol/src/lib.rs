//! The sans-IO core of chatwire.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod chat;
pub mod eio;
pub mod http;
pub mod ids;
pub mod model;
pub mod node;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod sim_tests;
pub mod sio;
pub mod store;
#[cfg(feature = "store-suite")]
pub mod store_suite;

pub use node::{
    ConnId, Frame, HttpResponse, Input, InputError, Method, Node, OpId, Output, RequestId, Upper,
};
