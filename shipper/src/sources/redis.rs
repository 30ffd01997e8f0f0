//! Redis streams on the read side. What is built: the payload check that `verify` runs on
//! every stored segment. Restore, export and the drill of a Redis stream are not built yet
//! (issue 21): they refuse with an error that says so, never with a result that looks
//! like a restore.

use logferry_common::format::redis::check_payload;
use logferry_common::{Position, StreamId};

use super::SourceRestore;
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::restore::{Bars, DrillReport, ExportOptions, Report, Request, RestoreOptions};
use crate::storage::Store;

/// The Redis implementation of [`SourceRestore`].
#[derive(Debug, Clone, Copy)]
pub struct Redis;

/// The refusal of what this build cannot do for a Redis stream yet.
fn not_built(what: &str, stream: &StreamId) -> ShipperError {
    ShipperError::Restore(format!(
        "{what} of Redis stream {stream} is not in this build of logferry yet: its segments and snapshots are stored and `verify` checks them; \
         until then a snapshot's chunks (an RDB) and the segments (AOF form) can be read from the store by hand"
    ))
}

impl SourceRestore for Redis {
    async fn restore(
        &self,
        _store: &Store,
        req: &Request<'_>,
        _opts: &RestoreOptions<'_>,
        _bars: &Bars,
    ) -> Result<Report> {
        Err(not_built("restore", req.stream))
    }

    async fn export(
        &self,
        _store: &Store,
        req: &Request<'_>,
        _opts: &ExportOptions<'_>,
        _bars: &Bars,
    ) -> Result<Report> {
        Err(not_built("export", req.stream))
    }

    async fn drill(
        &self,
        _store: &Store,
        stream: &StreamId,
        _target: &str,
        _replica: Option<&str>,
        _bars: &Bars,
        _interrupt: &Interrupt,
    ) -> Result<DrillReport> {
        Err(not_built("the restore drill", stream))
    }

    fn check_payload(&self, payload: &[u8], start: &Position, end: &Position) -> Result<u64> {
        Ok(check_payload(payload, start.as_redis()?, end.as_redis()?)?)
    }
}
