//! Stream names and source kinds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The name of one change-log stream (one database's log), used in object keys and URLs.
///
/// Restricted to `[a-z0-9][a-z0-9._-]{0,63}` so that it is safe as a path segment in every
/// object store and in a URL without escaping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Longest accepted stream name.
    pub const MAX_LEN: usize = 64;

    /// Validates `name` as a stream id.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the rule that `name` breaks.
    pub fn new(name: &str) -> Result<Self> {
        let ok_first = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_rest = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if !ok_first || !ok_rest || name.len() > Self::MAX_LEN || name.contains("..") {
            return Err(Error::invalid(
                "stream id",
                format!(
                    "{name:?}: use 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
                ),
            ));
        }
        Ok(StreamId(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StreamId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        StreamId::new(&value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl FromStr for StreamId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        StreamId::new(s)
    }
}

/// Which kind of database a stream's events come from; decides how positions and payloads
/// are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// MySQL / MariaDB binlog (ROW format), positions are binlog file + offset (+ GTID state).
    Mysql,
    /// Redis replication stream, positions are history + offset (+ replication id).
    Redis,
}

impl SourceKind {
    /// The byte that stands for this kind in a segment header.
    pub fn code(self) -> u8 {
        match self {
            SourceKind::Mysql => 1,
            SourceKind::Redis => 2,
        }
    }

    /// The kind a segment-header byte stands for.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown code.
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(SourceKind::Mysql),
            2 => Ok(SourceKind::Redis),
            other => Err(Error::corrupt(format!("unknown source kind code {other}"))),
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Mysql => "mysql",
            SourceKind::Redis => "redis",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_path_safe() {
        assert!(StreamId::new("orders-db.primary_1").is_ok());
        for bad in [
            "",
            "Orders",
            "a/b",
            "../x",
            "a..b",
            "-x",
            &"x".repeat(65),
            "a b",
        ] {
            let err = StreamId::new(bad).unwrap_err().to_string();
            assert!(err.contains("stream id"), "{bad:?}: {err}");
        }
    }
}
