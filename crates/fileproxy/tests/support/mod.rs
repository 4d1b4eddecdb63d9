//! Shared helpers for integration tests: real processes and servers on loopback.

pub mod origin;
pub mod proxy;
