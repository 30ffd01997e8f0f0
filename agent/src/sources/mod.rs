//! Sources: one module per kind of database, all behind [`Source`].
//!
//! A source connects, resumes exactly after a given position, and yields events already
//! framed as records of its segment payload format, each with its start and end position,
//! commit time, and whether a restore may stop right after it.

pub mod mysql;

use logferry_common::Position;

use crate::error::Result;

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
}

/// What a source yields.
#[derive(Debug)]
pub enum SourceItem {
    /// An event of the log.
    Event(SourceEvent),
    /// The server is idle and everything up to its head has been read.
    Heartbeat,
}

/// A change log being tailed.
#[allow(async_fn_in_trait)]
pub trait Source {
    /// The next event or heartbeat.
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
}
