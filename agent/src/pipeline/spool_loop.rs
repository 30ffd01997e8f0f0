//! The spool stage: writes sealed segments durably, in order, pausing on a full disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_common::Segment;
use tokio::sync::{mpsc, Notify};
use tracing::{error, info, warn};

use super::ShutdownRx;
use crate::error::{AgentError, Result};
use crate::metrics::Metrics;
use crate::spool::Spool;

/// Writes sealed segments to the spool in order, each with fsync on a blocking thread, and
/// wakes the ship loop after each.
///
/// A full disk stops nothing: the write is tried again after each acknowledgement (which
/// deletes a spooled file) or every second, and meanwhile the stages before it wait, so
/// the source stops reading, as when the spool passes `agent.spool_max_bytes`.
pub(super) async fn spool_loop(
    mut writes: mpsc::Receiver<Segment>,
    spool: &Arc<Spool>,
    metrics: &Metrics,
    sealed: &Notify,
    freed: &Notify,
    mut stop: ShutdownRx,
) -> Result<()> {
    while let Some(segment) = writes.recv().await {
        let mut full_since: Option<Instant> = None;
        let mut warned_at = Instant::now();
        loop {
            let (spool_for_write, seg) = (spool.clone(), segment.clone());
            let written = tokio::task::spawn_blocking(move || spool_for_write.write(seg))
                .await
                .map_err(|e| AgentError::Stage(format!("the spool writer failed: {e}")))?;
            match written {
                Ok(_) => break,
                Err(e) if e.is_spool_full() => {
                    if full_since.is_none() || warned_at.elapsed() >= Duration::from_secs(60) {
                        let paused = full_since.map(|t| t.elapsed());
                        if spool.bytes() == 0 {
                            error!(error = %e, ?paused, "the spool's disk is full and nothing of ours is on it to ship: free space on it (or move agent.spool_dir); reading from the database is paused");
                        } else {
                            warn!(error = %e, spool_bytes = spool.bytes(), ?paused, "the spool's disk is full: reading from the database pauses until shipping frees space");
                        }
                        metrics.spool_disk_full.set(1);
                        full_since.get_or_insert_with(Instant::now);
                        warned_at = Instant::now();
                    }
                    let stopping = tokio::select! {
                        _ = freed.notified() => false,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                        _ = stop.changed() => true,
                    };
                    if stopping {
                        // This segment and any after it are not spooled (the next start reads
                        // them again); the stages before drain into the dropped channel.
                        metrics.spool_disk_full.set(0);
                        while writes.recv().await.is_some() {}
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(since) = full_since {
            info!(paused_for = ?since.elapsed(), "the spool's disk has room again; reading from the database resumes");
            metrics.spool_disk_full.set(0);
        }
        metrics.segments_sealed.inc();
        metrics.spool_bytes.set(spool.bytes());
        sealed.notify_one();
    }
    Ok(())
}

/// Runs `job` on the spool off the runtime's threads (file reads, fsyncs and hashing).
pub(super) async fn on_spool<T: Send + 'static>(
    spool: &Arc<Spool>,
    job: impl FnOnce(&Spool) -> Result<T> + Send + 'static,
) -> Result<T> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || job(&spool))
        .await
        .map_err(|e| AgentError::Stage(format!("the spool task failed: {e}")))?
}
