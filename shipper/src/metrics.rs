//! The shipper's Prometheus metrics, encoded by `prometheus-client` in the OpenMetrics
//! text format: counters of the ingest path, and per stream (label `stream`) what
//! [`crate::watch`] computes, set from the statuses each time `/metrics` is read.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::alerts::AlertCounters;
use crate::audit::AuditCounters;
use crate::watch::status::{Health, StreamStatus};

/// The label every per-stream series carries.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// The stream's name.
    pub stream: String,
}

type PerStream = Family<StreamLabel, Gauge<f64, AtomicU64>>;
type Latencies = Family<StreamLabel, Histogram, fn() -> Histogram>;

/// Upper bounds (s) of the commit-to-durable histogram's buckets: from a fast seal to an
/// hour of an outage.
const LATENCY_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Counters of the ingest path and the per-stream gauges.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// One render at a time: each clears and sets the per-stream gauges before encoding.
    rendering: std::sync::Mutex<()>,
    /// Upload requests received.
    pub uploads: Counter,
    /// Segments newly stored.
    pub stored: Counter,
    /// Bytes newly stored.
    pub stored_bytes: Counter,
    /// Identical re-sends answered idempotently.
    pub duplicates: Counter,
    /// Uploads refused with 409.
    pub conflicts: Counter,
    /// Uploads refused as invalid (400/413).
    pub rejected: Counter,
    /// Store failures (503).
    pub store_errors: Counter,
    /// What the audit log could not do; shared with its writer.
    pub audit: Arc<AuditCounters>,
    /// What alerting could not deliver; shared with [`crate::alerts::Alerts`].
    pub alerts: AlertCounters,
    /// Per stream: from the commit of a segment's first change until it was stored.
    commit_to_durable: Latencies,
    exposure: PerStream,
    lag_seconds: PerStream,
    lag_bytes: PerStream,
    spool_bytes: PerStream,
    silent: PerStream,
    last_commit: PerStream,
    breaks: PerStream,
    last_snapshot: PerStream,
    replica_lag: PerStream,
    last_drill_passed: PerStream,
    last_drill_verdict: PerStream,
    last_fork: PerStream,
    health: PerStream,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let uploads = counter("logferry_shipper_uploads", "Upload requests received");
        let stored = counter("logferry_shipper_segments_stored", "Segments newly stored");
        let stored_bytes = counter("logferry_shipper_bytes_stored", "Bytes newly stored");
        let duplicates = counter(
            "logferry_shipper_duplicates",
            "Identical re-sends acknowledged",
        );
        let conflicts = counter("logferry_shipper_conflicts", "Uploads refused with 409");
        let rejected = counter("logferry_shipper_rejected", "Invalid uploads refused");
        let store_errors = counter("logferry_shipper_store_errors", "Object store failures");
        let audit = Arc::new(AuditCounters {
            lost: counter(
                "logferry_shipper_audit_lost",
                "Audit log lines lost (its queue was full or its writer gone)",
            ),
            write_errors: counter(
                "logferry_shipper_audit_write_errors",
                "Failed writes or fsyncs of the audit log (each tried again)",
            ),
        });
        let alerts = AlertCounters::default();
        registry.register(
            "logferry_shipper_alert_delivery_failures",
            "Failed deliveries of alert notifications (retried unless refused for good)",
            alerts.failures.clone(),
        );
        registry.register(
            "logferry_shipper_alert_notifications_dropped",
            "Alert notifications dropped: refused for good by their receiver, or beyond the outbox's bound",
            alerts.dropped.clone(),
        );
        registry.register(
            "logferry_shipper_alert_notifications_undelivered",
            "Alert notifications waiting for their receiver",
            alerts.undelivered.clone(),
        );
        let commit_to_durable = Latencies::new_with_constructor(latency_histogram);
        registry.register(
            "logferry_shipper_commit_to_durable_seconds",
            "Per stored segment, from the source's commit of its first change until the shipper stored it: histogram_quantile over it is the stream's RPO",
            commit_to_durable.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = PerStream::default();
            registry.register(name, help, g.clone());
            g
        };
        let exposure = gauge(
            "logferry_shipper_rpo_exposure_seconds",
            "What a loss of the source's host now would cost: now minus the commit time up to which everything is stored (0 while the agent reports the source idle and all of it stored; grows while the agent is silent)",
        );
        let lag_seconds = gauge(
            "logferry_shipper_source_lag_seconds",
            "How far the agent's reading is behind the source, from its last report",
        );
        let lag_bytes = gauge(
            "logferry_shipper_source_lag_bytes",
            "How far the agent's reading is behind the source in bytes of its log, when the agent can tell",
        );
        let spool_bytes = gauge(
            "logferry_shipper_agent_spool_bytes",
            "Bytes waiting in the agent's spool, from its last report",
        );
        let silent = gauge(
            "logferry_shipper_agent_silence_seconds",
            "Seconds since the stream's agent last reported",
        );
        let last_commit = gauge(
            "logferry_shipper_last_event_timestamp_seconds",
            "Commit time of the newest stored change",
        );
        let breaks = gauge(
            "logferry_shipper_chain_breaks",
            "Places where a stream's stored chain is broken now (uploads in flight close theirs within moments; one that stays is a gap)",
        );
        let last_snapshot = gauge(
            "logferry_shipper_last_snapshot_timestamp_seconds",
            "When the newest stored snapshot was taken",
        );
        let replica_lag = gauge(
            "logferry_shipper_snapshot_replica_lag_seconds",
            "How far the paused snapshot replica is behind its primary, from the agent's last report",
        );
        let last_drill_passed = gauge(
            "logferry_shipper_last_drill_success_timestamp_seconds",
            "When the newest restore drill that passed finished (absent until one passed)",
        );
        let last_drill_verdict = gauge(
            "logferry_shipper_last_drill_passed",
            "1 when the newest restore drill passed, 0 when it failed or proved nothing (absent before the first drill)",
        );
        let last_fork = gauge(
            "logferry_shipper_last_fork_timestamp_seconds",
            "When the stream last forked (a standby that missed stored transactions continued it; absent before any fork)",
        );
        let health = gauge(
            "logferry_shipper_stream_health",
            "The stream's health as the status page shows it: 0 green, 1 amber, 2 red",
        );
        Metrics {
            registry,
            rendering: std::sync::Mutex::new(()),
            uploads,
            stored,
            stored_bytes,
            duplicates,
            conflicts,
            rejected,
            store_errors,
            audit,
            alerts,
            commit_to_durable,
            exposure,
            lag_seconds,
            lag_bytes,
            spool_bytes,
            silent,
            last_commit,
            breaks,
            last_snapshot,
            replica_lag,
            last_drill_passed,
            last_drill_verdict,
            last_fork,
            health,
        }
    }

    /// Notes that a segment of `stream` whose first change committed at `first_commit_ms`
    /// was stored at `now_ms`.
    pub fn stored_segment(&self, stream: &str, first_commit_ms: i64, now_ms: i64) {
        self.commit_to_durable
            .get_or_create(&StreamLabel {
                stream: stream.to_owned(),
            })
            .observe((now_ms - first_commit_ms).max(0) as f64 / 1000.0);
    }

    /// Renders the OpenMetrics text format, the per-stream gauges set from `statuses`.
    pub fn render(&self, statuses: &[StreamStatus]) -> String {
        let _one = self
            .rendering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let families = [
            &self.exposure,
            &self.lag_seconds,
            &self.lag_bytes,
            &self.spool_bytes,
            &self.silent,
            &self.last_commit,
            &self.breaks,
            &self.last_snapshot,
            &self.replica_lag,
            &self.last_drill_passed,
            &self.last_drill_verdict,
            &self.last_fork,
            &self.health,
        ];
        for f in families {
            f.clear();
        }
        let secs = |ms: i64| ms as f64 / 1000.0;
        for s in statuses {
            let label = StreamLabel {
                stream: s.stream.clone(),
            };
            let set = |f: &PerStream, v: Option<f64>| {
                if let Some(v) = v {
                    f.get_or_create(&label).set(v);
                }
            };
            set(&self.exposure, s.rpo_exposure_seconds);
            set(&self.lag_seconds, s.source_lag_seconds);
            set(&self.lag_bytes, s.source_lag_bytes.map(|b| b as f64));
            set(&self.spool_bytes, s.spool_bytes.map(|b| b as f64));
            set(&self.silent, s.agent_silent_seconds);
            set(&self.last_commit, s.last_stored_commit_ms.map(secs));
            set(&self.breaks, Some(s.chain_breaks as f64));
            set(&self.last_snapshot, s.last_snapshot_ms.map(secs));
            set(&self.last_fork, s.last_fork_ms.map(secs));
            set(&self.replica_lag, s.snapshot_replica_lag_seconds);
            set(
                &self.last_drill_passed,
                s.last_drill
                    .as_ref()
                    .and_then(|d| d.last_passed_ms)
                    .map(secs),
            );
            set(
                &self.last_drill_verdict,
                s.last_drill
                    .as_ref()
                    .map(|d| if d.passed { 1.0 } else { 0.0 }),
            );
            set(
                &self.health,
                Some(match s.health {
                    Health::Green => 0.0,
                    Health::Amber => 1.0,
                    Health::Red => 2.0,
                }),
            );
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }
}
