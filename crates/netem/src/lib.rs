//! A userspace network emulator for the benchmarks: two network namespaces (clients,
//! servers), each with a TUN device routed to the other, and one relay process holding both
//! TUN descriptors that applies loss, a bit-rate with a bounded tail-drop queue, and a
//! one-way delay with jitter to each direction — on one shared bottleneck or on a separate
//! link per flow. See the crate README for usage and measured limits.

pub mod error;
pub mod netns;
pub mod packet;
pub mod relay;
pub mod sched;
pub mod setup;
pub mod tun;

pub use error::{Error, Result};
