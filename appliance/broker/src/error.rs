//! The one error type of the broker crate.

use std::path::PathBuf;
use std::time::Duration;

/// Why provisioning or running mosquitto failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A user name, topic or path that cannot be written into a mosquitto file as is.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was checked ("user name", "request topic", ...).
        what: &'static str,
        /// The offending value.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Two accounts with the same user name, two gate accounts for the same gate, or two
    /// NVR accounts for the same prefix.
    #[error("duplicate {what}: {value}")]
    Duplicate {
        /// "user name" or "gate id".
        what: &'static str,
        /// The duplicated value.
        value: String,
    },
    /// An NVR's topic prefix that would share topics with the gate link or another NVR.
    #[error(
        "NVR topic prefix {prefix:?} overlaps {other}; give each NVR its own prefix \
         (Frigate's mqtt.topic_prefix), such as \"frigate-<name>\""
    )]
    Overlap {
        /// The refused prefix.
        prefix: String,
        /// What it overlaps.
        other: String,
    },
    /// Reading or writing a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The operating system's random number generator failed.
    #[error("random number generator: {0}")]
    Random(rand_core::Error),
    /// The mosquitto binary is not installed.
    #[error(
        "mosquitto binary {binary:?} not found (searched PATH, /usr/sbin and /sbin); \
         install the Debian package `mosquitto` (`make deps` does)"
    )]
    MosquittoMissing {
        /// The name or path that was looked for.
        binary: PathBuf,
    },
    /// Starting the process failed.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// mosquitto exited while starting, or before a reload was acknowledged.
    #[error("mosquitto exited ({status}); its stderr:\n{stderr}")]
    Exited {
        /// The exit status.
        status: String,
        /// The last lines mosquitto wrote to stderr.
        stderr: String,
    },
    /// mosquitto did not get ready (or acknowledge a reload) in time.
    #[error("mosquitto did not {action} within {after:?}; its stderr:\n{stderr}")]
    Timeout {
        /// "accept connections on port N", "acknowledge SIGHUP", ...
        action: String,
        /// How long we waited.
        after: Duration,
        /// The last lines mosquitto wrote to stderr.
        stderr: String,
    },
    /// Sending a signal to mosquitto failed.
    #[error("sending {signal} to mosquitto (pid {pid}): {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The process id.
        pid: u32,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl From<rand_core::Error> for BrokerError {
    fn from(e: rand_core::Error) -> Self {
        BrokerError::Random(e)
    }
}

impl BrokerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BrokerError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, reason: &'static str) -> Self {
        BrokerError::Invalid {
            what,
            value: value.to_owned(),
            reason,
        }
    }
}
