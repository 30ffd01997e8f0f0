//! `[source]` with `type = "redis"`: a Redis server tailed as a replica, or its
//! append-only directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{invalid, Result};
use crate::secret::{SecretString, SecretUrl};

/// Where a Redis server is and how to log in: what a `redis://` URL says, parsed once for
/// the agent's source and the shipper's restore target.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port (6379 when the URL names none).
    pub port: u16,
    /// ACL user; `None` for the default user (`requirepass`).
    pub user: Option<String>,
    /// Password, if the URL has one.
    pub password: Option<SecretString>,
}

impl RedisEndpoint {
    /// Parses `redis://[USER[:PASSWORD]@]HOST[:PORT]`; errors name `key`.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for another scheme, no host, or a path (a db).
    pub fn parse(url: &str, key: &str) -> Result<Self> {
        let hint = "use redis://USER:PASSWORD@HOST:6379";
        let url =
            url::Url::parse(url).map_err(|e| invalid(key, format!("not a URL ({e}); {hint}")))?;
        if url.scheme() != "redis" {
            return Err(invalid(key, format!("scheme {:?}: {hint}", url.scheme())));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid(key, format!("has no host; {hint}")))?;
        if url.path().len() > 1 {
            return Err(invalid(
                key,
                "names a db: Redis replication carries every db; drop the /DB from the URL",
            ));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| invalid(key, "the user or password is not UTF-8 once decoded"))
        };
        let user = match url.username() {
            "" => None,
            u => Some(decode(u)?),
        };
        let password = url
            .password()
            .map(decode)
            .transpose()?
            .map(SecretString::new);
        Ok(RedisEndpoint {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port().unwrap_or(6379),
            user,
            password,
        })
    }

    /// `host:port`, for connecting and for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A Redis primary or replica, tailed over the replication link (`REPLCONF` + `PSYNC`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSource {
    /// How the agent reads the server's changes: over a replication link (the default) or
    /// from its append-only files.
    #[serde(default)]
    pub mode: RedisMode,
    /// `redis://USER:PASSWORD@HOST:6379` (an ACL user with `+psync +replconf +ping +info`; see
    /// [`REPLICATION_ACL`]); `redis://:PASSWORD@HOST` for `requirepass`. Required in
    /// replication mode.
    #[serde(default)]
    pub url: Option<SecretUrl>,
    /// AOF mode: the server's append-only directory (`dir`/`appenddirname`, by default
    /// `appendonlydir`), shared with the agent read-only.
    #[serde(default)]
    pub aof_dir: Option<PathBuf>,
    /// The port this agent announces (`REPLCONF listening-port`), shown in the server's
    /// `INFO replication` beside `ip=`. Nothing listens on it.
    #[serde(default)]
    pub announce_port: u16,
    /// Connect timeout (of a scheduled snapshot's link too).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How often the agent tells the server the offset it has read (`REPLCONF ACK`),
    /// which keeps the link alive; in AOF mode, how often an idle agent says so.
    #[serde(default = "default_ack_ms")]
    pub ack_ms: u64,
    /// Scheduled snapshots, each a fresh full sync over a second link (omit to take only
    /// the one a new stream starts with and those a forced full resync brings). Not in
    /// AOF mode, whose snapshots are the base files of the server's rewrites.
    #[serde(default)]
    pub snapshot: Option<RedisSnapshotSection>,
}

/// Where a Redis source reads from (`source.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// A replication link (`PSYNC`): the full sync's RDB, then the command stream.
    #[default]
    Replication,
    /// The multi-part AOF directory of Redis 7 (manifest, base and incremental files), for
    /// a sidecar that shares the data volume and may not open a replication link.
    Aof,
}

/// `[source.snapshot]` of a Redis source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSnapshotSection {
    /// When `logferry-agent run` takes one: cron `minute hour day month weekday`, UTC.
    #[serde(default = "default_schedule")]
    pub schedule: String,
}

/// The ACL rule a replication user needs, named in the README and in the error of a user
/// who lacks it.
pub const REPLICATION_ACL: &str = "ACL SETUSER logferry on >PASSWORD +psync +replconf +ping +info";

fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_ack_ms() -> u64 {
    1000
}
fn default_schedule() -> String {
    "0 2 * * 0".into()
}

impl RedisSnapshotSection {
    /// The parsed schedule.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for `source.snapshot.schedule`.
    pub fn schedule(&self) -> Result<crate::cron::Schedule> {
        self.schedule
            .parse()
            .map_err(|e: String| invalid("source.snapshot.schedule", e))
    }
}

impl RedisSource {
    /// How long connecting may take.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// How often the read offset is acknowledged.
    pub fn ack_every(&self) -> Duration {
        Duration::from_millis(self.ack_ms)
    }

    /// The server and login of `source.url`.
    ///
    /// # Errors
    /// As [`RedisEndpoint::parse`].
    pub fn endpoint(&self) -> Result<RedisEndpoint> {
        let url = self.url.as_ref().ok_or_else(|| {
            invalid(
                "source.url",
                "is required in replication mode (the default): redis://USER:PASSWORD@HOST:6379; \
                 or set source.mode = \"aof\" and source.aof_dir",
            )
        })?;
        RedisEndpoint::parse(url.expose(), "source.url")
    }

    /// The append-only directory of AOF mode.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming `source.aof_dir` when it is not set.
    pub fn aof_dir(&self) -> Result<&Path> {
        self.aof_dir.as_deref().ok_or_else(|| {
            invalid(
                "source.aof_dir",
                "is required with source.mode = \"aof\": the server's append-only directory (DIR/appendonlydir)",
            )
        })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self.mode {
            RedisMode::Replication => {
                self.endpoint()?;
                if self.aof_dir.is_some() {
                    return Err(invalid(
                        "source.aof_dir",
                        "is read only with source.mode = \"aof\"; remove it, or set the mode",
                    ));
                }
            }
            RedisMode::Aof => {
                self.aof_dir()?;
                if self.url.is_some() {
                    return Err(invalid(
                        "source.url",
                        "is not used with source.mode = \"aof\" (the agent reads source.aof_dir); remove it",
                    ));
                }
                if self.snapshot.is_some() {
                    return Err(invalid(
                        "source.snapshot",
                        "has no use in AOF mode: the base file of each rewrite the server makes is stored as a snapshot; \
                         remove the section (schedule BGREWRITEAOF for regular snapshots)",
                    ));
                }
            }
        }
        if self.connect_timeout_ms == 0 {
            return Err(invalid("source.connect_timeout_ms", "use at least 1"));
        }
        if self.ack_ms == 0 || self.ack_ms > 10_000 {
            return Err(invalid("source.ack_ms", "use 1..=10000 (default 1000)"));
        }
        if let Some(s) = &self.snapshot {
            s.schedule()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_endpoints_and_bad_ones_name_the_key() {
        let e = RedisEndpoint::parse("redis://logferry:p%40ss@cache-1:6380", "source.url").unwrap();
        assert_eq!(e.addr(), "cache-1:6380");
        assert_eq!(e.user.as_deref(), Some("logferry"));
        assert_eq!(e.password.as_ref().map(SecretString::expose), Some("p@ss"));
        let e = RedisEndpoint::parse("redis://:secret@[::1]", "x").unwrap();
        assert_eq!((e.addr().as_str(), e.user.is_none()), ("[::1]:6379", true));
        for bad in ["mysql://h", "redis://h/3", "nonsense"] {
            let err = RedisEndpoint::parse(bad, "source.url")
                .unwrap_err()
                .to_string();
            assert!(err.contains("source.url"), "{bad}: {err}");
        }
    }
}
