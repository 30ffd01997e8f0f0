//! Restore drills on a schedule, inside `serve`: at each time `[drill] schedule` names,
//! every stream (or those `[drill] streams` lists) is restored into the scratch server of
//! its kind and checked as `verify --restore-drill` does, one stream at a time; each
//! result is stored in the bucket, where the status, `/metrics` and the `drill` alert
//! rule read it. Nobody has to remember the monthly restore test.

use std::sync::Arc;
use std::time::Duration;

use logferry_common::{SourceKind, StreamId};
use logferry_config::cron::Schedule;
use logferry_config::shipper::DrillSection;
use tracing::{error, info, warn};

use crate::drill_record::{self, DrillRecord};
use crate::ingest::Ingest;
use crate::interrupt::Interrupt;
use crate::restore::Bars;
use crate::sources;
use crate::storage::Store;
use crate::time_arg::now_ms;

/// The scratch server for a stream of `kind`, if `[drill]` names one.
fn target(cfg: &DrillSection, kind: SourceKind) -> Option<&str> {
    match kind {
        SourceKind::Mysql => cfg.mysql_target.as_ref(),
        SourceKind::Redis => cfg.redis_target.as_ref(),
    }
    .map(|u| u.expose())
}

/// Drills `stream` once, reading `store`, and stores the result; the record.
pub async fn drill_once(
    store: &Store,
    cfg: &DrillSection,
    stream: &StreamId,
) -> Option<DrillRecord> {
    let kind = match sources::stream_kind(store, stream).await {
        Ok(k) => k,
        Err(e) => {
            warn!(%stream, error = %e, "scheduled drill skipped: the stream's kind cannot be read");
            return None;
        }
    };
    let Some(target) = target(cfg, kind) else {
        info!(%stream, %kind, "scheduled drill skipped: [drill] names no scratch server of this kind");
        return None;
    };
    let replica = match kind {
        SourceKind::Mysql => cfg.mysql_replica.as_ref().map(|u| u.expose()),
        SourceKind::Redis => None,
    };
    let started_ms = now_ms();
    info!(%stream, "scheduled restore drill starting");
    let record = match sources::drill(
        store,
        stream,
        target,
        replica,
        &Bars::hidden(),
        &Interrupt::never(),
    )
    .await
    {
        Ok(report) => DrillRecord::of_report(stream, started_ms, &report),
        Err(e) => DrillRecord::failed(stream, started_ms, e.to_string()),
    };
    match &record.verdict {
        drill_record::Verdict::Passed => {
            info!(%stream, compared = record.compared, "scheduled restore drill passed")
        }
        other => warn!(%stream, verdict = ?other, "scheduled restore drill did not pass"),
    }
    if let Err(e) = drill_record::save(store, stream, &record).await {
        error!(%stream, error = %e, "the scheduled drill's result could not be stored; monitoring will not see it");
    }
    Some(record)
}

/// Starts the drills on a thread of their own, with a runtime of its own: a drill's
/// future is not `Send` (the per-source restore traits' `async fn`s), and a drill's CPU
/// work stays off the threads that take uploads.
///
/// # Errors
/// When the thread cannot be started.
/// `store` is a handle of the drills' own: its connections are driven by their runtime.
pub fn start(
    ingest: Arc<Ingest>,
    store: Store,
    cfg: DrillSection,
    schedule: Schedule,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("drills".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(ingest, store, cfg, schedule)),
                Err(e) => error!(error = %e, "scheduled drills cannot start their runtime"),
            }
        })
        .map(|_| ())
}

/// Runs the drills at every time `schedule` names until the process ends.
async fn run(ingest: Arc<Ingest>, store: Store, cfg: DrillSection, schedule: Schedule) {
    loop {
        let now_s = now_ms() / 1000;
        let Some(next) = schedule.next_after(now_s) else {
            error!("[drill] schedule names no future time; scheduled drills stop");
            return;
        };
        tokio::time::sleep(Duration::from_secs(
            u64::try_from(next - now_s).unwrap_or(0),
        ))
        .await;
        for stream in ingest.catalog.stream_names() {
            if !cfg.streams.is_empty() && !cfg.streams.iter().any(|s| s == stream.as_str()) {
                continue;
            }
            drill_once(&store, &cfg, &stream).await;
        }
        ingest.watch.refresh(&store, &ingest.catalog).await;
    }
}
