//! Tokens: issuing and checking JWTs with an injected clock.
