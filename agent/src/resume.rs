//! Where a stream's chain ends, and where its source must reconnect to continue it.
//!
//! A segment may end inside a transaction. A source cannot start mid-transaction (a GTID
//! resume names transactions, and the transaction tracker must see its start), so it
//! reconnects at the start of the open transaction and the segmenter drops the events up
//! to the stored end as they come again.

use logferry_common::{Position, SegmentMeta, TrxMark};

/// The end of what is stored or spooled, with the transaction open there, the server it
/// came from and the last whole transaction (what another server must hold to continue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// Right after the last stored event.
    pub end: Position,
    /// Where the transaction open at `end` began; `None` when `end` is a boundary.
    pub open_trx: Option<Position>,
    /// The server the chain's last events came from; empty when unknown (segments and
    /// checkpoints older than lineages), which counts as the same server.
    pub origin: String,
    /// The chain's last whole transaction, when it has one.
    pub last_trx: Option<TrxMark>,
}

impl ResumePoint {
    /// The resume point after a segment.
    pub fn after(meta: &SegmentMeta) -> Self {
        ResumePoint {
            end: meta.end.clone(),
            open_trx: meta.open_trx.clone(),
            origin: meta.lineage.origin.clone(),
            last_trx: meta.lineage.last_trx.clone(),
        }
    }

    /// A resume point at `end` with nothing else known (a new chain after a break).
    pub fn at(end: Position) -> Self {
        ResumePoint {
            end,
            open_trx: None,
            origin: String::new(),
            last_trx: None,
        }
    }

    /// Where the source connects: the start of the open transaction, else the end.
    pub fn connect_at(&self) -> &Position {
        self.open_trx.as_ref().unwrap_or(&self.end)
    }
}

impl std::fmt::Display for ResumePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.open_trx {
            Some(t) => write!(f, "{} (inside the transaction from {t})", self.end),
            None => write!(f, "{}", self.end),
        }
    }
}
