//! JSON bodies exchanged between agent and shipper over HTTP.

use serde::{Deserialize, Serialize};

/// Path on which the shipper accepts segments (`POST`, body = encoded segment).
pub const SEGMENTS_PATH: &str = "/v1/segments";

/// Path prefix of the per-stream state (`GET /v1/streams/<stream>`).
pub const STREAMS_PATH: &str = "/v1/streams";

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
    /// Commit time of the last stored event, ms since the Unix epoch.
    pub last_event_ms: Option<i64>,
}

/// Error body of every non-2xx answer of the shipper.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Human-readable reason, naming the bad input.
    pub error: String,
}
