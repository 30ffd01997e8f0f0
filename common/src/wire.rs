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
}

/// Error body of every non-2xx answer of the shipper.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Human-readable reason, naming the bad input.
    pub error: String,
}
