//! The agent's reports to the shipper: every `agent.report_interval_ms`, idle or not, where
//! the source's head is, what was read, what waits in the spool and what is exposed. The
//! shipper computes each stream's exposure from them and from what it stores, so it can
//! be read, and alerted on, off-site when this host is gone.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use logferry_common::wire::AgentReport;
use logferry_common::{Position, StreamId};
use tracing::{debug, info, warn};

use crate::client::ShipperClient;
use crate::metrics::{now_ms, Metrics};
use crate::pipeline::ShutdownRx;
use crate::sources::mysql::snapshot::ReplicaLag;

/// Where the source stands, as the source task last saw it.
#[derive(Debug, Default, Clone)]
pub struct SourceMarks {
    /// The newest position the server is known to have.
    pub head: Option<Position>,
    /// Right after the last transaction read.
    pub read: Option<Position>,
    /// Commit time of the last event read, ms since the epoch.
    pub read_commit_ms: Option<i64>,
}

/// How many failed reports in a row pass before the agent says so (the ship loop already
/// warns while the shipper is away).
const QUIET_FAILURES: u32 = 3;

/// The report of the agent's state at `now_ms`, with the snapshot replica's lag when
/// known.
pub fn report(
    metrics: &Metrics,
    marks: &SourceMarks,
    interval: Duration,
    now_ms: i64,
    replica_lag: Option<f64>,
) -> AgentReport {
    let at_head = metrics.source_at_head.get() == 1;
    let lag_seconds = match (at_head, marks.read_commit_ms) {
        (false, Some(read)) => (now_ms - read).max(0) as f64 / 1000.0,
        _ => 0.0,
    };
    let lag_bytes = match (&marks.read, &marks.head) {
        (Some(read), Some(head)) => read.bytes_until(head),
        _ => None,
    };
    let oldest = metrics.oldest_unacked_read_ms.load(Ordering::Relaxed);
    AgentReport {
        agent: AGENT_NAME.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        sent_ms: now_ms,
        at_head,
        head: marks.head.as_ref().map(ToString::to_string),
        read: marks.read.as_ref().map(ToString::to_string),
        read_commit_ms: marks.read_commit_ms,
        lag_seconds,
        lag_bytes,
        spool_bytes: metrics.spool_bytes.get(),
        spool_segments: metrics.spool_segments.get(),
        oldest_unstored_read_ms: (oldest != 0).then_some(oldest),
        spool_disk_full: metrics.spool_disk_full.get() == 1,
        snapshot_replica_lag_seconds: replica_lag,
    }
}

/// This agent as reports name it: host name and process id, read once.
static AGENT_NAME: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}/{}", std::process::id())
});

/// Reports every `interval` until shutdown; a failed report is not retried (the next one
/// says more), so a shipper away never holds anything up.
pub async fn run(
    client: ShipperClient,
    stream: StreamId,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut replica: Option<ReplicaLag>,
    mut shutdown: ShutdownRx,
) {
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let current = metrics.marks.lock().map(|m| m.clone()).unwrap_or_default();
        let lag = match replica.as_mut() {
            // Bounded: a replica that hangs must not stop the reports.
            Some(r) => tokio::time::timeout(interval.max(Duration::from_secs(2)), r.seconds())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        if let Some(l) = lag {
            metrics.snapshot_replica_lag_seconds.set(l);
        }
        let body = report(&metrics, &current, interval, now_ms(), lag);
        match client.put_report(&stream, &body).await {
            Ok(()) => {
                if failures >= QUIET_FAILURES {
                    info!(after = failures, "the shipper takes reports again");
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if failures == QUIET_FAILURES {
                    warn!(error = %e, "reports to the shipper fail: it cannot see this stream's exposure until they pass");
                } else {
                    debug!(error = %e, "report not delivered");
                }
            }
        }
    }
}
