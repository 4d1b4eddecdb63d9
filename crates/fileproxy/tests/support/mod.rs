//! Shared helpers for integration tests: real processes and servers on loopback
//! (each test binary includes what it uses).

#![allow(dead_code)]

pub mod access;
pub mod origin;
pub mod proxy;
pub mod redis;
pub mod stores;
