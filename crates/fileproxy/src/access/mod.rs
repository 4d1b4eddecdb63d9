//! The access policy of SPEC §2 steps 1–6, §2.1, §3 and §4 as plain logic over a
//! [`crate::store::Store`]: no HTTP types in here.

pub mod classify;
pub mod client_ip;
pub mod cors;
pub mod keypath;
pub mod network;
pub mod token;
pub mod ua;
