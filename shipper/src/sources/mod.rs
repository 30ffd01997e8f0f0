//! Restore, export, the drill and the payload check, one module per source kind behind
//! [`SourceRestore`]. The commands find a stream's kind in the store ([`stream_kind`]) and
//! dispatch here; a new kind adds a module, an implementation of the trait, and an arm in
//! each `match` below.

pub mod mysql;
pub mod redis;

use logferry_common::keys::{segments_prefix, snapshots_prefix};
use logferry_common::{Position, SourceKind, StreamId};

use crate::catalog::{read_header, segment_ref};
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::restore::{Bars, DrillReport, ExportOptions, Report, Request, RestoreOptions};
use crate::snapshots;
use crate::storage::Store;

/// What a source kind implements for the shipper's read side.
#[allow(async_fn_in_trait)]
pub trait SourceRestore {
    /// Restores `req.stream` to `req.to` into the server `opts.target`.
    ///
    /// # Errors
    /// [`ShipperError::Gap`] when the chain breaks before the target;
    /// [`ShipperError::Restore`] for what cannot be done as asked.
    async fn restore(
        &self,
        store: &Store,
        req: &Request<'_>,
        opts: &RestoreOptions<'_>,
        bars: &Bars,
    ) -> Result<Report>;

    /// Writes what a restore would apply into `opts.dir`, in the kind's stock format.
    ///
    /// # Errors
    /// As [`SourceRestore::restore`].
    async fn export(
        &self,
        store: &Store,
        req: &Request<'_>,
        opts: &ExportOptions<'_>,
        bars: &Bars,
    ) -> Result<Report>;

    /// Restores into the scratch server `target` and compares it with what the manifests
    /// recorded, and with the live `replica` (URL) when one is given; says "not proven"
    /// when there is nothing to compare with.
    ///
    /// # Errors
    /// When a step fails; differences are reported, not errors.
    async fn drill(
        &self,
        store: &Store,
        stream: &StreamId,
        target: &str,
        replica: Option<&str>,
        bars: &Bars,
        interrupt: &Interrupt,
    ) -> Result<DrillReport>;

    /// Checks that a segment's payload runs unbroken from `start` to `end`; returns its
    /// event count.
    ///
    /// # Errors
    /// [`ShipperError::Format`] naming the first event that breaks the run.
    fn check_payload(&self, payload: &[u8], start: &Position, end: &Position) -> Result<u64>;
}

/// The kind of a stored stream: from its first segment's header, else from its newest
/// snapshot's manifest.
///
/// # Errors
/// [`ShipperError::Restore`] when the store holds nothing of `stream`.
pub async fn stream_kind(store: &Store, stream: &StreamId) -> Result<SourceKind> {
    let listed = store.list(&segments_prefix(stream)).await?;
    if let Some(seg) = listed.iter().find_map(|o| segment_ref(&o.key, o.size)) {
        return Ok(read_header(store, &seg).await?.meta.source);
    }
    if let Some(m) = snapshots::list(store, stream).await?.last() {
        return Ok(m.content.kind());
    }
    Err(ShipperError::Restore(format!(
        "the store {} holds nothing of stream {stream} (no segments under {}, no snapshots under {}); check --stream and the store",
        store.url(),
        segments_prefix(stream),
        snapshots_prefix(stream)
    )))
}

/// Restores a stream, the way its kind restores.
///
/// # Errors
/// As [`SourceRestore::restore`], and [`stream_kind`]'s.
pub async fn restore(
    store: &Store,
    req: &Request<'_>,
    opts: &RestoreOptions<'_>,
    bars: &Bars,
) -> Result<Report> {
    match stream_kind(store, req.stream).await? {
        SourceKind::Mysql => mysql::Mysql.restore(store, req, opts, bars).await,
        SourceKind::Redis => redis::Redis.restore(store, req, opts, bars).await,
    }
}

/// Exports a stream, the way its kind exports.
///
/// # Errors
/// As [`SourceRestore::export`], and [`stream_kind`]'s.
pub async fn export(
    store: &Store,
    req: &Request<'_>,
    opts: &ExportOptions<'_>,
    bars: &Bars,
) -> Result<Report> {
    match stream_kind(store, req.stream).await? {
        SourceKind::Mysql => mysql::Mysql.export(store, req, opts, bars).await,
        SourceKind::Redis => redis::Redis.export(store, req, opts, bars).await,
    }
}

/// Drills a stream, the way its kind drills.
///
/// # Errors
/// As [`SourceRestore::drill`], and [`stream_kind`]'s.
pub async fn drill(
    store: &Store,
    stream: &StreamId,
    target: &str,
    replica: Option<&str>,
    bars: &Bars,
    interrupt: &Interrupt,
) -> Result<DrillReport> {
    match stream_kind(store, stream).await? {
        SourceKind::Mysql => {
            mysql::Mysql
                .drill(store, stream, target, replica, bars, interrupt)
                .await
        }
        SourceKind::Redis => {
            redis::Redis
                .drill(store, stream, target, replica, bars, interrupt)
                .await
        }
    }
}

/// Writes the transactions only the old branch of the fork that began leg `leg` holds
/// (MySQL/MariaDB).
///
/// # Errors
/// As [`mysql::branch::export`]; for a Redis stream, an error naming the `export --from
/// … --to …` that writes its old branch's commands.
pub async fn export_branch(
    store: &Store,
    stream: &StreamId,
    leg: u32,
    dir: &std::path::Path,
) -> Result<mysql::branch::Branch> {
    match stream_kind(store, stream).await? {
        SourceKind::Mysql => mysql::branch::export(store, stream, leg, dir).await,
        SourceKind::Redis => Err(redis::plan::old_branch(store, stream, leg).await?),
    }
}

/// Promotes a standby to be the stream's primary.
///
/// # Errors
/// As [`mysql::promote::run`] and [`redis::promote::run`], and [`stream_kind`]'s.
pub async fn promote(
    store: &Store,
    req: &crate::promotion::PromoteRequest<'_>,
    bars: &Bars,
) -> Result<crate::promotion::PromotionReport> {
    match stream_kind(store, req.stream).await? {
        SourceKind::Mysql => mysql::promote::run(store, req, bars).await,
        SourceKind::Redis => redis::promote::run(store, req, bars).await,
    }
}

/// Checks a payload of a segment of `kind`.
///
/// # Errors
/// As [`SourceRestore::check_payload`].
pub fn check_payload(
    kind: SourceKind,
    payload: &[u8],
    start: &Position,
    end: &Position,
) -> Result<u64> {
    match kind {
        SourceKind::Mysql => mysql::Mysql.check_payload(payload, start, end),
        SourceKind::Redis => redis::Redis.check_payload(payload, start, end),
    }
}
