//! The agent's Prometheus metrics: one counter or gauge per stage of the pipeline.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tracing::{info, warn};

/// Counters and gauges updated by the pipeline stages, rendered at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events read from the source.
    pub events_read: AtomicU64,
    /// Bytes of events read from the source.
    pub bytes_read: AtomicU64,
    /// Heartbeats received from an idle source.
    pub heartbeats: AtomicU64,
    /// 1 while the source has read everything up to the head the server is known to have.
    pub source_at_head: AtomicU64,
    /// Snapshots the source received inline and the agent stored.
    pub inline_snapshots: AtomicU64,
    /// Breaks in the chain the source could not avoid (a Redis full resync after the
    /// server lost the offset the stream stood at); each starts from a new snapshot.
    pub source_breaks: AtomicU64,
    /// Reconnects of the source after a retryable error.
    pub source_reconnects: AtomicU64,
    /// Segments sealed and spooled.
    pub segments_sealed: AtomicU64,
    /// Segments acknowledged by the shipper.
    pub segments_shipped: AtomicU64,
    /// Bytes of segments acknowledged by the shipper.
    pub bytes_shipped: AtomicU64,
    /// Failed upload attempts (retried).
    pub ship_retries: AtomicU64,
    /// Bytes waiting in the spool.
    pub spool_bytes: AtomicU64,
    /// Segments waiting in the spool.
    pub spool_segments: AtomicU64,
    /// Spooled segments found damaged on disk (each range was read again from the source).
    pub spool_damaged: AtomicU64,
    /// 1 while the spool's disk is full and reading from the source is paused.
    pub spool_disk_full: AtomicU64,
    /// Commit time (ms since epoch) of the last event the shipper acknowledged.
    pub last_acked_event_ms: AtomicI64,
    /// Wall time (ms since epoch) at which the oldest event not yet acknowledged was read;
    /// 0 when everything read is acknowledged.
    pub oldest_unacked_read_ms: AtomicI64,
}

impl Metrics {
    /// Renders the Prometheus text exposition format.
    pub fn render(&self, stream: &str, now_ms: i64) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let oldest = self.oldest_unacked_read_ms.load(Ordering::Relaxed);
        let exposure = if oldest == 0 {
            0.0
        } else {
            (now_ms - oldest).max(0) as f64 / 1000.0
        };
        let rows: [(&str, &str, &str, String); 17] = [
            (
                "logferry_agent_source_at_head",
                "gauge",
                "1 while the source has read up to the newest position the server is known to have; 0 while catching up.",
                g(&self.source_at_head).to_string(),
            ),
            (
                "logferry_agent_source_breaks_total",
                "counter",
                "Breaks in the chain the source could not avoid (a full resync after the server lost the stream's offset); each continues from a new snapshot.",
                g(&self.source_breaks).to_string(),
            ),
            (
                "logferry_agent_inline_snapshots_total",
                "counter",
                "Snapshots received inside the change stream (e.g. a Redis full resync) and stored.",
                g(&self.inline_snapshots).to_string(),
            ),
            (
                "logferry_agent_spool_disk_full",
                "gauge",
                "1 while the spool's disk is full: reading from the source waits for shipping to free space.",
                g(&self.spool_disk_full).to_string(),
            ),
            (
                "logferry_agent_spool_damaged_total",
                "counter",
                "Spooled segments found damaged on disk; each range was read again from the source.",
                g(&self.spool_damaged).to_string(),
            ),
            (
                "logferry_agent_events_read_total",
                "counter",
                "Events read from the source.",
                g(&self.events_read).to_string(),
            ),
            (
                "logferry_agent_bytes_read_total",
                "counter",
                "Bytes of events read from the source.",
                g(&self.bytes_read).to_string(),
            ),
            (
                "logferry_agent_heartbeats_total",
                "counter",
                "Heartbeats from an idle source.",
                g(&self.heartbeats).to_string(),
            ),
            (
                "logferry_agent_source_reconnects_total",
                "counter",
                "Source reconnects after errors.",
                g(&self.source_reconnects).to_string(),
            ),
            (
                "logferry_agent_segments_sealed_total",
                "counter",
                "Segments sealed and spooled.",
                g(&self.segments_sealed).to_string(),
            ),
            (
                "logferry_agent_segments_shipped_total",
                "counter",
                "Segments acknowledged by the shipper.",
                g(&self.segments_shipped).to_string(),
            ),
            (
                "logferry_agent_bytes_shipped_total",
                "counter",
                "Segment bytes acknowledged by the shipper.",
                g(&self.bytes_shipped).to_string(),
            ),
            (
                "logferry_agent_ship_retries_total",
                "counter",
                "Failed upload attempts.",
                g(&self.ship_retries).to_string(),
            ),
            (
                "logferry_agent_spool_bytes",
                "gauge",
                "Bytes waiting in the spool.",
                g(&self.spool_bytes).to_string(),
            ),
            (
                "logferry_agent_spool_segments",
                "gauge",
                "Segments waiting in the spool.",
                g(&self.spool_segments).to_string(),
            ),
            (
                "logferry_agent_last_acked_event_timestamp_seconds",
                "gauge",
                "Commit time of the last acknowledged event.",
                (self.last_acked_event_ms.load(Ordering::Relaxed) as f64 / 1000.0).to_string(),
            ),
            (
                "logferry_agent_rpo_exposure_seconds",
                "gauge",
                "Age of the oldest event read but not yet durably stored (0 when none).",
                exposure.to_string(),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{stream=\"{stream}\"}} {value}"
            );
        }
        out
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Serves `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, stream: String, metrics: Arc<Metrics>) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            let stream = stream.clone();
            async move { metrics.render(&stream, now_ms()) }
        }),
    );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            // The bound address: port 0 asks the system for a free one.
            let addr = listener.local_addr().unwrap_or(addr);
            info!(%addr, "serving /metrics");
            if let Err(e) = axum::serve(listener, app).await {
                warn!(%addr, error = %e, "metrics server stopped");
            }
        }
        Err(e) => warn!(%addr, error = %e, "cannot listen for /metrics (agent.metrics_listen)"),
    }
}
