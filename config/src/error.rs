//! The error type of `logferry-config`.

use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key is unknown or of the wrong type.
    #[error("config {origin}: {message}")]
    Parse {
        /// File name, or "environment" for an override.
        origin: String,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `source.server_id`.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Result with [`ConfigError`].
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}
