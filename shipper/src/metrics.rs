//! The shipper's Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::audit::AuditCounters;

/// Counters of the ingest path and per-stream freshness.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Upload requests received.
    pub uploads: AtomicU64,
    /// Segments newly stored.
    pub stored: AtomicU64,
    /// Bytes newly stored.
    pub stored_bytes: AtomicU64,
    /// Identical re-sends answered idempotently.
    pub duplicates: AtomicU64,
    /// Uploads refused with 409.
    pub conflicts: AtomicU64,
    /// Uploads refused as invalid (400/413).
    pub rejected: AtomicU64,
    /// Store failures (503).
    pub store_errors: AtomicU64,
    /// Per stream: commit time (ms) of the newest stored event.
    pub last_event_ms: Mutex<BTreeMap<String, i64>>,
    /// Per stream: places where the stored chain is broken.
    pub chain_breaks: Mutex<BTreeMap<String, usize>>,
    /// What the audit log could not do; shared with its writer.
    pub audit: Arc<AuditCounters>,
}

impl Metrics {
    /// Notes the newest stored event time of `stream`.
    pub fn saw_event(&self, stream: &str, ms: i64) {
        if let Ok(mut m) = self.last_event_ms.lock() {
            let e = m.entry(stream.to_owned()).or_insert(ms);
            *e = (*e).max(ms);
        }
    }

    /// Notes how many breaks the stored chain of `stream` has now.
    pub fn set_breaks(&self, stream: &str, breaks: usize) {
        if let Ok(mut m) = self.chain_breaks.lock() {
            m.insert(stream.to_owned(), breaks);
        }
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 9] = [
            (
                "logferry_shipper_uploads_total",
                "Upload requests received.",
                &self.uploads,
            ),
            (
                "logferry_shipper_segments_stored_total",
                "Segments newly stored.",
                &self.stored,
            ),
            (
                "logferry_shipper_bytes_stored_total",
                "Bytes newly stored.",
                &self.stored_bytes,
            ),
            (
                "logferry_shipper_duplicates_total",
                "Identical re-sends acknowledged.",
                &self.duplicates,
            ),
            (
                "logferry_shipper_conflicts_total",
                "Uploads refused with 409.",
                &self.conflicts,
            ),
            (
                "logferry_shipper_rejected_total",
                "Invalid uploads refused.",
                &self.rejected,
            ),
            (
                "logferry_shipper_store_errors_total",
                "Object store failures.",
                &self.store_errors,
            ),
            (
                "logferry_shipper_audit_lost_total",
                "Audit log lines lost (its queue was full or its writer gone).",
                &self.audit.lost,
            ),
            (
                "logferry_shipper_audit_write_errors_total",
                "Failed writes or fsyncs of the audit log (each tried again).",
                &self.audit.write_errors,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let name = "logferry_shipper_last_event_timestamp_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Commit time of the newest stored event per stream.\n# TYPE {name} gauge"
        );
        if let Ok(m) = self.last_event_ms.lock() {
            for (stream, ms) in m.iter() {
                let _ = writeln!(out, "{name}{{stream=\"{stream}\"}} {}", *ms as f64 / 1000.0);
            }
        }
        let name = "logferry_shipper_chain_breaks";
        let _ = writeln!(
            out,
            "# HELP {name} Places where a stream's stored chain is broken now (uploads in flight close theirs within moments; one that stays is a gap).\n# TYPE {name} gauge"
        );
        if let Ok(m) = self.chain_breaks.lock() {
            for (stream, n) in m.iter() {
                let _ = writeln!(out, "{name}{{stream=\"{stream}\"}} {n}");
            }
        }
        out
    }
}
