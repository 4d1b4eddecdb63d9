//! Typed errors of the emulator's system-facing parts.

use std::io;

/// An error from setting up, running or tearing down the emulated link.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An external command (`ip`, `sysctl`) failed or could not be started.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },
    /// A name or value given on the command line is not acceptable.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// Why, and what would be accepted.
        detail: String,
    },
}

impl Error {
    /// Wraps the current `errno` as a [`Error::Sys`] describing `what`.
    pub fn last_os(what: impl Into<String>) -> Self {
        Error::Sys {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
