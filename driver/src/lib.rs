//! Shared host code.
