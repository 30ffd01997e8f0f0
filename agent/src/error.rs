//! The error type of `logferry-agent`.

use std::path::PathBuf;

/// Everything that stops or delays the agent, named by what happens next: `is_retryable`
/// errors are retried with backoff, the others stop the agent with the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] logferry_config::ConfigError),
    /// The database could not be reached (refused, timed out, DNS); retried.
    #[error("cannot connect to the database at {addr}: {reason}")]
    Unreachable {
        /// host:port from the source URL.
        addr: String,
        /// What the network said.
        reason: String,
    },
    /// The database refused the credentials.
    #[error("the database at {addr} refused the login: {reason}; check the user and password in source.url")]
    AccessDenied {
        /// host:port from the source URL.
        addr: String,
        /// The server's message.
        reason: String,
    },
    /// The server is not configured in a way that can be tailed (binlog off, not ROW, ...).
    #[error("the database cannot be tailed: {0}")]
    ServerSetup(String),
    /// The replication stream broke or the server returned an error mid-stream; retried.
    #[error("the change stream from {addr} failed: {reason}")]
    Stream {
        /// host:port.
        addr: String,
        /// The error.
        reason: String,
    },
    /// The server sent something that violates the protocol or our position bookkeeping.
    #[error("unexpected data from the server: {0}")]
    Protocol(String),
    /// The stream cannot continue without losing events (binlog purged, position skipped).
    #[error("gap in the change log: {0}")]
    Gap(String),
    /// A spool or checkpoint file could not be written or read.
    #[error("spool {path}: {source}")]
    Spool {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A spooled segment failed validation (disk damage); it is moved aside with every newer
    /// one, not shipped, and the range is read again from the source.
    #[error("spooled segment {path} is corrupt: {reason}")]
    SpoolCorrupt {
        /// The file.
        path: PathBuf,
        /// The validation error.
        reason: String,
    },
    /// Another process holds the spool directory: two agents must never share one.
    #[error("the spool directory {dir} is in use by another agent (process {holder}): two agents on one spool would ship each other's segments; give each agent its own agent.spool_dir and stream, or stop the other one")]
    SpoolInUse {
        /// The spool directory.
        dir: PathBuf,
        /// The PID the lock file names.
        holder: String,
    },
    /// The shipper could not be reached or answered 5xx; retried.
    #[error("shipper unavailable: {0}")]
    ShipperUnavailable(String),
    /// The shipper refused an upload (409 conflict or 4xx); needs an operator.
    #[error("shipper refused {what}: {reason}")]
    ShipperRefused {
        /// Spool file name of the segment, or the snapshot URL.
        what: String,
        /// Status and message of the shipper.
        reason: String,
    },
    /// The server the source reached does not hold the stream's last stored transaction
    /// (or holds other content under its GTID): another database, never to be taken for a
    /// successor. Needs an operator.
    #[error("the server {server} is not a successor of the stream's server {stored}: {reason}. A stream belongs to one database: check source.url and agent.stream (a config copied from another host?). If this server is the promoted standby, it holds none of the newest stored transaction boundaries the agent looked for: `logferry-shipper promote` applies what it lacks from the store, after which it continues the stream")]
    NotSuccessor {
        /// The server reached (its identity).
        server: String,
        /// The server the chain's last segment came from.
        stored: String,
        /// What it lacks or holds differently.
        reason: String,
    },
    /// A snapshot failed (dump tool, replica state); the replica is resumed regardless.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// A stage of the pipeline stopped unexpectedly (a panicked sealing thread, a stage gone
    /// before the others); the agent exits and resumes from its spool on restart.
    #[error("agent pipeline stage failed: {0}")]
    Stage(String),
    /// One event is larger than the largest segment the shipper accepts; nothing is lost
    /// (the server still holds it) but the stream cannot go on until the limit is raised.
    #[error("the event at {at} is {bytes} bytes, more than a segment may hold ({limit} bytes under the shipper's server.max_segment_bytes = {max_segment_bytes}); raise server.max_segment_bytes on the shipper to at least {needed} (it can be at most 1342177280; a larger event cannot be shipped) and restart the agent: it resumes at this event")]
    EventTooLarge {
        /// Where the event starts.
        at: String,
        /// Its size in the payload.
        bytes: u64,
        /// The payload limit that follows from the shipper's segment limit.
        limit: u64,
        /// The shipper's segment limit.
        max_segment_bytes: u64,
        /// A segment limit that would hold it.
        needed: u64,
    },
    /// The agent's segment size does not fit the shipper's limit.
    #[error("segment.max_bytes = {max_bytes} does not fit the shipper's server.max_segment_bytes = {shipper}: a segment holds up to segment.max_bytes plus one event; lower segment.max_bytes to at most {fits} or raise server.max_segment_bytes")]
    LimitMismatch {
        /// The agent's `segment.max_bytes`.
        max_bytes: u64,
        /// The shipper's `server.max_segment_bytes`.
        shipper: u64,
        /// The largest `segment.max_bytes` that fits.
        fits: u64,
    },
    /// A segment could not be sealed.
    #[error(transparent)]
    Segment(#[from] logferry_common::Error),
}

impl AgentError {
    /// Whether waiting and trying again can fix this.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AgentError::Unreachable { .. }
                | AgentError::Stream { .. }
                | AgentError::ShipperUnavailable(_)
        )
    }

    /// Whether this is a spool write that failed for want of space (a full disk or an
    /// exhausted quota), which shipping frees.
    pub fn is_spool_full(&self) -> bool {
        matches!(self, AgentError::Spool { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull
                || matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
    }

    pub(crate) fn spool(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AgentError::Spool {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`AgentError`].
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
