//! JSON bodies exchanged between agent and shipper over HTTP.

use serde::{Deserialize, Serialize};

/// Path on which the shipper accepts segments (`POST`, body = encoded segment).
pub const SEGMENTS_PATH: &str = "/v1/segments";

/// Path prefix of the per-stream state (`GET /v1/streams/<stream>`).
pub const STREAMS_PATH: &str = "/v1/streams";

/// Path of the shipper's limits (`GET`, answer [`Limits`]): the agent seals within them.
pub const LIMITS_PATH: &str = "/v1/limits";

/// The limits the shipper applies to uploads, so that the agent never seals what the
/// shipper would refuse.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded segment accepted (`server.max_segment_bytes`).
    pub max_segment_bytes: u64,
}

/// The shipper's answer to a segment upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentAck {
    /// Object key under which the segment is durably stored.
    pub key: String,
    /// `true` when the identical segment was already stored (idempotent re-send).
    pub duplicate: bool,
}

/// What the shipper holds of one stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamHead {
    /// Stream name.
    pub stream: String,
    /// Number of stored segments.
    pub segments: u64,
    /// Start position of the first stored segment, as text.
    pub start: Option<String>,
    /// End position of the last stored segment: where the agent resumes.
    pub end: Option<String>,
    /// Where the transaction open at `end` began, when the last segment ends inside one:
    /// the agent reconnects there and skips what is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_trx: Option<String>,
    /// Commit time of the last stored event, ms since the Unix epoch.
    pub last_event_ms: Option<i64>,
    /// The server the last stored segment came from (empty for segments older than
    /// lineages): a reconnect to another server continues by GTID, as a new leg.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// The chain's last whole transaction: what a server must hold to continue it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trx: Option<WireTrxMark>,
}

/// The last stored segments' ends that a failover can continue from, newest first
/// (`GET /v1/streams/<s>/marks`): where a standby that missed the chain's last
/// transactions may join it (a fork).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ChainMarks {
    /// Segment ends at a transaction boundary, with the chain's last whole transaction
    /// there.
    pub marks: Vec<ChainMark>,
}

/// One segment end of [`ChainMarks`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainMark {
    /// The end position, as text (with its GTID state).
    pub end: String,
    /// The last whole transaction up to it.
    pub last_trx: WireTrxMark,
}

/// A [`crate::TrxMark`] in JSON, its digest in hex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireTrxMark {
    /// The transaction's id (a GTID).
    pub id: String,
    /// The source's state right before it.
    pub before: String,
    /// Its fingerprint, hex.
    pub digest: String,
}

impl From<&crate::TrxMark> for WireTrxMark {
    fn from(t: &crate::TrxMark) -> Self {
        WireTrxMark {
            id: t.id.clone(),
            before: t.before.clone(),
            digest: hex::encode(t.digest),
        }
    }
}

impl TryFrom<&WireTrxMark> for crate::TrxMark {
    type Error = crate::Error;

    fn try_from(w: &WireTrxMark) -> crate::Result<Self> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&w.digest, &mut digest).map_err(|_| {
            crate::Error::invalid("last transaction digest", "expected 64 hex digits")
        })?;
        Ok(crate::TrxMark {
            id: w.id.clone(),
            before: w.before.clone(),
            digest,
        })
    }
}

/// Error body of every non-2xx answer of the shipper.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Human-readable reason, naming the bad input.
    pub error: String,
}

/// The last part of the path an agent reports its state on
/// (`PUT /v1/streams/<stream>/report`, body [`AgentReport`]).
pub const REPORT_PATH: &str = "report";

/// What an agent tells the shipper of its stream every few seconds, idle or not: only
/// the agent sees the source, and the shipper must know the stream's exposure when the
/// agent's host is gone (it then counts on from the last report).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentReport {
    /// Which agent: its host name and process id, so two agents reporting on one stream
    /// show as such.
    pub agent: String,
    /// The agent's version.
    pub version: String,
    /// How often the agent reports: a report older than a few of these is stale.
    pub interval_ms: u64,
    /// The agent's clock when it sent this.
    pub sent_ms: i64,
    /// `true` while the agent has read everything up to the source's known head.
    pub at_head: bool,
    /// The newest position the source is known to have, as text.
    pub head: Option<String>,
    /// Right after the last transaction read, as text.
    pub read: Option<String>,
    /// Commit time of the last event read, ms since the Unix epoch.
    pub read_commit_ms: Option<i64>,
    /// How far what was read is behind the source's head, in seconds (0 at the head).
    pub lag_seconds: f64,
    /// How far, in bytes of the source's log, when both positions are in one log.
    pub lag_bytes: Option<u64>,
    /// Bytes of sealed segments waiting in the spool.
    pub spool_bytes: u64,
    /// Sealed segments waiting in the spool.
    pub spool_segments: u64,
    /// When the oldest change read but not yet stored off-site was read (ms since the
    /// epoch); `None` when everything read is stored.
    pub oldest_unstored_read_ms: Option<i64>,
    /// `true` while the spool's disk is full and reading waits.
    pub spool_disk_full: bool,
    /// How far the paused snapshot replica is behind its primary, in seconds, when the
    /// source has one and it answered.
    pub snapshot_replica_lag_seconds: Option<f64>,
}
