//! The REST routes as pure code: request -> effect -> response.
