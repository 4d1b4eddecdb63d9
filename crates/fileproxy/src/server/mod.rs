//! Listeners: TCP accept loops, socket tuning, TLS, HTTP/1.1 + HTTP/2, graceful shutdown.

pub mod conn;
pub mod listener;
pub mod sendfile_io;
pub mod sockopt;
pub mod tls;

pub use crate::app::Surface;
pub use listener::{serve, shutdown_signal, BoundListener};
