//! The agent's Prometheus metrics: one counter or gauge per stage of the pipeline, every
//! one labelled with the agent's stream, encoded by `prometheus-client` in the OpenMetrics
//! text format (counters end in `_total`).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use logferry_common::exposition;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

/// A gauge of whole numbers that never go below zero.
pub type UGauge = Gauge<u64, AtomicU64>;

/// A gauge of seconds and other fractions.
pub type FGauge = Gauge<f64, AtomicU64>;

/// Counters and gauges updated by the pipeline stages, rendered at `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Events read from the source.
    pub events_read: Counter,
    /// Bytes of events read from the source.
    pub bytes_read: Counter,
    /// Heartbeats received from an idle source.
    pub heartbeats: Counter,
    /// 1 while the source has read everything up to the head the server is known to have.
    pub source_at_head: UGauge,
    /// Snapshots the source received inline and the agent stored.
    pub inline_snapshots: Counter,
    /// Breaks in the chain the source could not avoid (a Redis full resync after the
    /// server lost the offset the stream stood at); each starts from a new snapshot.
    pub source_breaks: Counter,
    /// Reconnects of the source after a retryable error.
    pub source_reconnects: Counter,
    /// Segments sealed and spooled.
    pub segments_sealed: Counter,
    /// Segments acknowledged by the shipper.
    pub segments_shipped: Counter,
    /// Bytes of segments acknowledged by the shipper.
    pub bytes_shipped: Counter,
    /// Failed upload attempts (retried).
    pub ship_retries: Counter,
    /// Bytes waiting in the spool.
    pub spool_bytes: UGauge,
    /// Segments waiting in the spool.
    pub spool_segments: UGauge,
    /// Spooled segments found damaged on disk (each range was read again from the source).
    pub spool_damaged: Counter,
    /// 1 while the spool's disk is full and reading from the source is paused.
    pub spool_disk_full: UGauge,
    /// Commit time (ms since epoch) of the last event the shipper acknowledged.
    pub last_acked_event_ms: AtomicI64,
    /// Wall time (ms since epoch) at which the oldest event not yet acknowledged was read;
    /// 0 when everything read is acknowledged.
    pub oldest_unacked_read_ms: AtomicI64,
    /// Where the source stands, for the reports to the shipper.
    pub marks: std::sync::Mutex<crate::report::SourceMarks>,
    /// How far the paused snapshot replica is behind its primary.
    pub snapshot_replica_lag_seconds: FGauge,
    /// [`Self::last_acked_event_ms`] in seconds, set when rendered.
    last_acked_event_seconds: FGauge,
    /// Age of [`Self::oldest_unacked_read_ms`], set when rendered.
    rpo_exposure_seconds: FGauge,
}

impl Metrics {
    /// The metrics of the agent of `stream`, each labelled with it.
    pub fn new(stream: &str) -> Self {
        let mut registry = Registry::with_labels(
            [(Cow::Borrowed("stream"), Cow::Owned(stream.to_owned()))].into_iter(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let events_read = counter("logferry_agent_events_read", "Events read from the source");
        let bytes_read = counter(
            "logferry_agent_bytes_read",
            "Bytes of events read from the source",
        );
        let heartbeats = counter(
            "logferry_agent_heartbeats",
            "Heartbeats from an idle source",
        );
        let inline_snapshots = counter(
            "logferry_agent_inline_snapshots",
            "Snapshots received inside the change stream (e.g. a Redis full resync) and stored",
        );
        let source_breaks = counter(
            "logferry_agent_source_breaks",
            "Breaks in the chain the source could not avoid (a full resync after the server lost the stream's offset); each continues from a new snapshot",
        );
        let source_reconnects = counter(
            "logferry_agent_source_reconnects",
            "Source reconnects after errors",
        );
        let segments_sealed = counter(
            "logferry_agent_segments_sealed",
            "Segments sealed and spooled",
        );
        let segments_shipped = counter(
            "logferry_agent_segments_shipped",
            "Segments acknowledged by the shipper",
        );
        let bytes_shipped = counter(
            "logferry_agent_bytes_shipped",
            "Segment bytes acknowledged by the shipper",
        );
        let ship_retries = counter("logferry_agent_ship_retries", "Failed upload attempts");
        let spool_damaged = counter(
            "logferry_agent_spool_damaged",
            "Spooled segments found damaged on disk; each range was read again from the source",
        );
        let mut gauge = |name: &str, help: &str| {
            let g = UGauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let source_at_head = gauge(
            "logferry_agent_source_at_head",
            "1 while the source has read up to the newest position the server is known to have; 0 while catching up",
        );
        let spool_bytes = gauge("logferry_agent_spool_bytes", "Bytes waiting in the spool");
        let spool_segments = gauge(
            "logferry_agent_spool_segments",
            "Segments waiting in the spool",
        );
        let spool_disk_full = gauge(
            "logferry_agent_spool_disk_full",
            "1 while the spool's disk is full: reading from the source waits for shipping to free space",
        );
        let last_acked_event_seconds = FGauge::default();
        registry.register(
            "logferry_agent_last_acked_event_timestamp_seconds",
            "Commit time of the last acknowledged event",
            last_acked_event_seconds.clone(),
        );
        let snapshot_replica_lag_seconds = FGauge::default();
        registry.register(
            "logferry_agent_snapshot_replica_lag_seconds",
            "How far the snapshot replica is behind its primary (Seconds_Behind_Master; while its SQL thread is stopped outside a snapshot, the time since)",
            snapshot_replica_lag_seconds.clone(),
        );
        let rpo_exposure_seconds = FGauge::default();
        registry.register(
            "logferry_agent_rpo_exposure_seconds",
            "Age of the oldest event read but not yet durably stored (0 when none)",
            rpo_exposure_seconds.clone(),
        );
        Metrics {
            registry,
            events_read,
            bytes_read,
            heartbeats,
            source_at_head,
            inline_snapshots,
            source_breaks,
            source_reconnects,
            segments_sealed,
            segments_shipped,
            bytes_shipped,
            ship_retries,
            spool_bytes,
            spool_segments,
            spool_damaged,
            spool_disk_full,
            last_acked_event_ms: AtomicI64::new(0),
            oldest_unacked_read_ms: AtomicI64::new(0),
            marks: Default::default(),
            snapshot_replica_lag_seconds,
            last_acked_event_seconds,
            rpo_exposure_seconds,
        }
    }

    /// How long ago, at `now_ms`, the oldest event not yet durably stored was read; 0 when
    /// everything read is stored.
    pub fn exposure_seconds(&self, now_ms: i64) -> f64 {
        match self.oldest_unacked_read_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            oldest => (now_ms - oldest).max(0) as f64 / 1000.0,
        }
    }

    /// Renders the OpenMetrics text format, the time-derived gauges taken at `now_ms`.
    pub fn render(&self, now_ms: i64) -> String {
        self.rpo_exposure_seconds.set(self.exposure_seconds(now_ms));
        self.last_acked_event_seconds
            .set(self.last_acked_event_ms.load(Ordering::Relaxed) as f64 / 1000.0);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            warn!(error = %e, "encoding the metrics failed");
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
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) {
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let metrics = metrics.clone();
            async move {
                let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
                let (kind, body) = exposition::negotiate(accept, metrics.render(now_ms()));
                ([(CONTENT_TYPE, kind)], body).into_response()
            }
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
