//! Sources: one module per kind of database, all behind [`Source`].
//!
//! A source connects, resumes exactly after a given position, and yields events already
//! framed as records of its segment payload format, each with its start and end position,
//! commit time, and whether a restore may stop right after it. A new kind adds a module
//! here, a variant to [`AnySource`] and to `logferry_config::SourceConfig`, and the arms of
//! the `match`es in this file; the pipeline does not change.

pub mod mysql;
pub mod redis;

use logferry_common::snapshot::{SnapshotContent, SnapshotManifest};
use logferry_common::{Position, SourceKind, StreamId, TrxMark};
use logferry_config::{AgentConfig, RedisMode, SourceConfig};

use crate::client::ShipperClient;
use crate::error::Result;
use crate::pipeline::ShutdownRx;
use crate::resume::ResumePoint;

/// One event of the change log, ready for the segmenter.
#[derive(Debug, Clone)]
pub struct SourceEvent {
    /// The event as a record of the source's payload format.
    pub record: Vec<u8>,
    /// Where the event starts.
    pub start: Position,
    /// Right after the event; where a resume continues.
    pub end: Position,
    /// Source commit time, ms since the Unix epoch.
    pub time_ms: i64,
    /// `true` when a transaction ends with this event, so a segment may end here.
    pub boundary: bool,
    /// `true` on the boundary that reaches the head the server had when the source
    /// connected: a catch-up ends here, and the segment is sealed at once instead of
    /// waiting out the seal age (its data is already old).
    pub caught_up: bool,
    /// On a boundary that ends a whole transaction the source can name and check again
    /// on another server (a MariaDB GTID): that transaction.
    pub trx: Option<TrxMark>,
}

/// A part of a snapshot that arrives inside the change stream (a Redis full resync sends
/// an RDB before the commands that follow it). Parts come in order: one `Begin`, any
/// number of `Data`, one `End`; events after `End` continue from the snapshot's position,
/// and the chain breaks there when it held anything before.
#[derive(Debug)]
pub enum SnapshotPart {
    /// A snapshot starts.
    Begin,
    /// The next bytes of the snapshot's data (shared, so a checking reader beside the
    /// upload needs no copy).
    Data(bytes::Bytes),
    /// The data is complete and checked.
    End {
        /// Where in the log the snapshot stands: the chain continues from here.
        position: Position,
        /// The per-source part of the manifest.
        content: SnapshotContent,
    },
}

/// What a source yields.
#[derive(Debug)]
pub enum SourceItem {
    /// An event of the log.
    Event(SourceEvent),
    /// The server is idle and everything up to its head has been read.
    Heartbeat,
    /// Part of a snapshot the server sent inline; the pipeline stores it as a snapshot of
    /// the stream.
    Snapshot(SnapshotPart),
}

/// A change log being tailed.
#[allow(async_fn_in_trait)]
pub trait Source {
    /// The next event, heartbeat or inline snapshot part.
    ///
    /// # Errors
    /// Retryable errors (see [`crate::AgentError::is_retryable`]) mean: reconnect and resume
    /// after the last boundary.
    ///
    /// # Cancel safety
    /// Not cancel safe: run it in its own task.
    async fn next(&mut self) -> Result<SourceItem>;

    /// Records that every segment of this source starts with (e.g. the binlog format
    /// description), so a segment is readable on its own.
    fn preamble(&self) -> &[u8];

    /// The newest position the server is known to have (at least what has been read), for
    /// lag; `None` until the source knows it.
    fn head(&self) -> Option<Position>;

    /// Told, between items, the end of the newest segment the shipper has durably stored,
    /// so that a source holding something until then can release it (Kafka commits its
    /// consumer offsets here). A binlog needs nothing released: MySQL's is a no-op.
    ///
    /// # Errors
    /// Retryable errors reconnect the source, as in [`Source::next`].
    async fn durable(&mut self, end: &Position) -> Result<()>;

    /// The server this connection reads, as segments record it; empty when the source
    /// does not tell servers apart.
    fn origin(&self) -> &str;

    /// When this connection continues the stream on another server than the chain's last:
    /// where the new leg joins the chain.
    fn new_leg(&self) -> Option<&NewLeg>;

    /// After a full resync on a promoted server that holds the stream's history only up to
    /// a place before the chain's end (a fork): that place. The first segment after the
    /// new snapshot records it; the stored commands after it are the old server's only.
    fn fork_point(&self) -> Option<&Position> {
        None
    }
}

/// How a connection to another server continues the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLeg {
    /// The chain's end on the previous leg: where the new leg's first segment starts.
    pub continues: Position,
    /// When the server lacks the previous leg's last transactions (a fork): the boundary
    /// on the previous leg where its history continues.
    pub forks_at: Option<Position>,
}

/// A connected source of any kind: what [`connect`] returns and the pipeline drives.
pub enum AnySource {
    /// A MySQL/MariaDB binlog.
    Mysql(mysql::MysqlSource),
    /// A Redis replication link.
    Redis(redis::RedisSource),
    /// A Redis append-only directory.
    RedisAof(redis::aof::AofSource),
}

impl Source for AnySource {
    async fn next(&mut self) -> Result<SourceItem> {
        match self {
            AnySource::Mysql(s) => s.next().await,
            AnySource::Redis(s) => s.next().await,
            AnySource::RedisAof(s) => s.next().await,
        }
    }

    fn preamble(&self) -> &[u8] {
        match self {
            AnySource::Mysql(s) => s.preamble(),
            AnySource::Redis(s) => s.preamble(),
            AnySource::RedisAof(s) => s.preamble(),
        }
    }

    fn head(&self) -> Option<Position> {
        match self {
            AnySource::Mysql(s) => s.head(),
            AnySource::Redis(s) => s.head(),
            AnySource::RedisAof(s) => s.head(),
        }
    }

    async fn durable(&mut self, end: &Position) -> Result<()> {
        match self {
            AnySource::Mysql(s) => s.durable(end).await,
            AnySource::Redis(s) => s.durable(end).await,
            AnySource::RedisAof(s) => s.durable(end).await,
        }
    }

    fn origin(&self) -> &str {
        match self {
            AnySource::Mysql(s) => s.origin(),
            AnySource::Redis(s) => s.origin(),
            AnySource::RedisAof(s) => s.origin(),
        }
    }

    fn new_leg(&self) -> Option<&NewLeg> {
        match self {
            AnySource::Mysql(s) => s.new_leg(),
            AnySource::Redis(s) => s.new_leg(),
            AnySource::RedisAof(s) => s.new_leg(),
        }
    }

    fn fork_point(&self) -> Option<&Position> {
        match self {
            AnySource::Redis(s) => s.fork_point(),
            _ => None,
        }
    }
}

/// The kind of log a source config tails.
pub fn kind(cfg: &SourceConfig) -> SourceKind {
    match cfg {
        SourceConfig::Mysql(_) => SourceKind::Mysql,
        SourceConfig::Redis(_) => SourceKind::Redis,
    }
}

/// Connects the source in `cfg` and starts reading right after `resume` (or where the
/// config says for a new stream). `client` tells, only when a failover needs them, the
/// stored segment ends a forked standby may continue from.
///
/// # Errors
/// The source's connect errors; [`crate::AgentError::Segment`] when `resume` is a
/// position of another kind.
pub async fn connect(
    cfg: &SourceConfig,
    resume: Option<&ResumePoint>,
    client: &ShipperClient,
    stream: &StreamId,
) -> Result<AnySource> {
    match cfg {
        SourceConfig::Mysql(m) => mysql::connect(m, resume, client.marks(stream))
            .await
            .map(AnySource::Mysql),
        SourceConfig::Redis(r) => {
            let at = resume.map(|r| r.connect_at().as_redis()).transpose()?;
            let end = resume.map(|r| r.end.as_redis()).transpose()?;
            match r.mode {
                RedisMode::Replication => redis::connect(r, at, end).await.map(AnySource::Redis),
                RedisMode::Aof => redis::aof::connect(r, at).await.map(AnySource::RedisAof),
            }
        }
    }
}

/// Takes a snapshot now, the way the source's kind takes one (MySQL: a dump of a paused
/// replica; Redis: a full sync over a second link).
///
/// # Errors
/// [`crate::AgentError::Snapshot`] when the source has no snapshot configured, and the
/// errors of taking and uploading it.
pub async fn take_snapshot(
    cfg: &AgentConfig,
    client: &ShipperClient,
    shutdown: ShutdownRx,
) -> Result<SnapshotManifest> {
    match &cfg.source {
        SourceConfig::Mysql(_) => mysql::snapshot::take(cfg, client, shutdown).await,
        SourceConfig::Redis(_) => redis::snapshot::take(cfg, client, shutdown).await,
    }
}

/// Puts back what an interrupted snapshot left behind (MySQL: a replica left paused).
///
/// # Errors
/// When the source cannot be reached to put it back.
pub async fn recover_interrupted_snapshot(cfg: &AgentConfig) -> Result<()> {
    match &cfg.source {
        SourceConfig::Mysql(_) => mysql::snapshot::resume_if_left_paused(cfg).await,
        SourceConfig::Redis(_) => Ok(()),
    }
}
