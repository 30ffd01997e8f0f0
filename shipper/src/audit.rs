//! The audit log: one JSON line per request that was authenticated or refused (token id,
//! never the secret; action; stream; object; result; peer; time), appended and fsynced by a
//! writer thread of its own, rotated by size to `.1` … `.5`.
//!
//! A request never waits for the disk: its line goes into a bounded queue. A line that finds
//! the queue full is lost, counted (`logferry_shipper_audit_lost_total`) and logged; a write
//! or fsync that fails is counted (`logferry_shipper_audit_write_errors_total`), the file is
//! opened again and the same lines are written again a second later, so a failing disk
//! delays lines instead of dropping them until the queue fills.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Result, ShipperError};

/// Rotated files kept beside the live one.
const KEEP: u32 = 5;

/// Lines queued for the writer before new ones are lost.
const QUEUE: usize = 16 * 1024;

/// The longest `request` text kept: a path is bounded by the HTTP server, but a line of the
/// log need not carry megabytes of it.
const MAX_REQUEST_CHARS: usize = 512;

/// How long the writer waits before writing again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// One audited request.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When it was answered, RFC 3339 (ms).
    pub time: String,
    /// The peer's address, when known.
    pub peer: Option<String>,
    /// The token's id (`null` when there was no valid one).
    pub token: Option<String>,
    /// `METHOD /path`, cut at 512 characters.
    pub request: String,
    /// The stream it was about, when one.
    pub stream: Option<String>,
    /// The object stored or refused, when one.
    pub object: Option<String>,
    /// The HTTP status answered (499: the client went away before the answer).
    pub status: u16,
    /// Why it was refused, when it was.
    pub error: Option<String>,
}

/// Counts of what the audit log could not do, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct AuditCounters {
    /// Lines lost because the queue was full.
    pub lost: prometheus_client::metrics::counter::Counter,
    /// Writes or fsyncs of the log that failed (and were tried again).
    pub write_errors: prometheus_client::metrics::counter::Counter,
}

enum Msg {
    Line(String),
    /// Answered once every line queued before it is written and fsynced.
    Flush(mpsc::Sender<()>),
}

/// A handle to the audit log's writer; cheap to clone. Writes never wait for the disk on the
/// request's task.
#[derive(Clone)]
pub struct Audit {
    queue: mpsc::SyncSender<Msg>,
    counters: Arc<AuditCounters>,
    /// The next line's number: a line written twice (a write retried after a failed fsync)
    /// or one lost shows as a repeated or missing number.
    seq: Arc<AtomicU64>,
}

/// One line of the log: its number in this process's run, then the entry.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    #[serde(flatten)]
    entry: &'a Entry,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").finish_non_exhaustive()
    }
}

impl Audit {
    /// Opens (creating) the log at `path`, rotated when it passes `max_bytes`; what it cannot
    /// do is counted in `counters`.
    ///
    /// # Errors
    /// [`ShipperError::Internal`] naming the file when it cannot be opened.
    pub fn open(path: &Path, max_bytes: u64, counters: Arc<AuditCounters>) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| failed(path, &e))?;
        }
        let file = append(path)?;
        let (queue, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        let writer = Writer {
            path: path.to_owned(),
            file,
            max_bytes,
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| ShipperError::Internal(format!("starting the audit writer: {e}")))?;
        Ok(Audit {
            queue,
            counters,
            seq: Arc::default(),
        })
    }

    /// Records one request.
    pub fn record(&self, entry: &Entry) {
        let mut entry = entry.clone();
        if entry.request.len() > MAX_REQUEST_CHARS {
            let mut cut = MAX_REQUEST_CHARS;
            while !entry.request.is_char_boundary(cut) {
                cut -= 1;
            }
            entry.request.truncate(cut);
            entry.request.push('…');
        }
        let line = Line {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            entry: &entry,
        };
        let line = match serde_json::to_string(&line) {
            Ok(line) => line,
            Err(e) => {
                self.counters.lost.inc();
                tracing::error!(error = %e, "an audit entry could not be encoded");
                return;
            }
        };
        if let Err(e) = self.queue.try_send(Msg::Line(line)) {
            let lost = self.counters.lost.inc() + 1;
            // Said at the 1st, 2nd, 4th, 8th ... loss: a flood of losses is not a flood of logs.
            if !lost.is_power_of_two() {
                return;
            }
            let why = match e {
                mpsc::TrySendError::Full(_) => {
                    "the audit log's queue is full (its disk is slow or failing)"
                }
                mpsc::TrySendError::Disconnected(_) => "the audit log's writer has stopped",
            };
            tracing::error!(request = %entry.request, status = entry.status, lost, "{why}: this request is not audited (logferry_shipper_audit_lost_total)");
        }
    }

    /// Waits, for at most `patience`, until every line recorded so far is written and
    /// fsynced: for shutdown. Blocks its thread; whether it all reached the disk.
    pub fn flush(&self, patience: Duration) -> bool {
        let (done, wait) = mpsc::channel();
        let deadline = std::time::Instant::now() + patience;
        let mut msg = Msg::Flush(done);
        loop {
            match self.queue.try_send(msg) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Disconnected(_)) => return false,
                Err(mpsc::TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_ok()
    }
}

fn failed(path: &Path, e: &std::io::Error) -> ShipperError {
    ShipperError::Internal(format!("audit log {}: {e}", path.display()))
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| failed(path, &e))
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    counters: Arc<AuditCounters>,
}

impl Writer {
    /// Writes every line that arrives, then fsyncs once per batch; rotates past `max_bytes`.
    /// Ends when every [`Audit`] handle is gone and the queue is drained.
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut batch = String::new();
            let mut flushes = Vec::new();
            let mut take = |m: Msg, batch: &mut String| match m {
                Msg::Line(l) => {
                    batch.push_str(&l);
                    batch.push('\n');
                }
                Msg::Flush(done) => flushes.push(done),
            };
            take(first, &mut batch);
            while let Ok(more) = rx.try_recv() {
                take(more, &mut batch);
            }
            self.write_durably(batch.as_bytes());
            // Rotated before a flush is answered: whoever asked may read the files at once.
            self.rotate_if_due();
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// Writes `bytes` and fsyncs, trying again (with the file opened afresh) until it works:
    /// a line is delayed by a failing disk, never dropped here. After a failed fsync the
    /// whole batch is written again, since the kernel may have dropped the pages it could not
    /// write; a line may then appear twice, under the same `seq`.
    fn write_durably(&mut self, bytes: &[u8]) {
        let mut written = 0;
        loop {
            let attempt = (|| {
                while written < bytes.len() {
                    match self.file.write(&bytes[written..]) {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => written += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                self.file.sync_data().inspect_err(|_| written = 0)
            })();
            match attempt {
                Ok(()) => return,
                Err(e) => {
                    let failures = self.counters.write_errors.inc();
                    if failures % 60 == 0 {
                        tracing::error!(file = %self.path.display(), error = %e, "writing the audit log failed; trying again every second (logferry_shipper_audit_write_errors_total)");
                    }
                    std::thread::sleep(RETRY);
                    if let Ok(f) = append(&self.path) {
                        self.file = f;
                    }
                }
            }
        }
    }

    /// Rotates once the live file has passed `max_bytes`. When rotation fails the writer goes
    /// on with the file at `path` (opened again, since a rename may have moved the open one).
    fn rotate_if_due(&mut self) {
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size < self.max_bytes {
            return;
        }
        match rotate(&self.path) {
            Ok(f) => self.file = f,
            Err(e) => {
                tracing::error!(error = %e, "rotating the audit log failed");
                if let Ok(f) = append(&self.path) {
                    self.file = f;
                }
            }
        }
    }
}

/// `log.4` → `log.5`, … `log` → `log.1`, and a new `log`.
fn rotate(path: &Path) -> Result<File> {
    let numbered = |n: u32| -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        p.into()
    };
    for n in (1..KEEP).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1)).map_err(|e| failed(&from, &e))?;
        }
    }
    std::fs::rename(path, numbered(1)).map_err(|e| failed(path, &e))?;
    append(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16) -> Entry {
        Entry {
            time: "2026-12-02T00:00:00.000Z".into(),
            peer: Some("127.0.0.1:5".into()),
            token: Some("orders".into()),
            request: "POST /v1/segments".into(),
            stream: Some("orders".into()),
            object: None,
            status,
            error: None,
        }
    }

    #[test]
    fn entries_are_appended_as_json_lines_and_rotated_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path, 4096, Arc::default()).unwrap();
        for _ in 0..100 {
            audit.record(&entry(201));
        }
        assert!(audit.flush(Duration::from_secs(30)), "flushed");
        let files = std::iter::once(path.clone())
            .chain((1..=KEEP).map(|n| path.with_extension(format!("jsonl.{n}"))));
        let mut seqs = Vec::new();
        for file in files {
            for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
                let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(parsed["token"], "orders");
                assert_eq!(parsed["status"], 201);
                seqs.push(parsed["seq"].as_u64().unwrap());
            }
        }
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (0..100).collect::<Vec<u64>>(),
            "every entry written once"
        );
        assert!(
            path.with_extension("jsonl.1").exists(),
            "rotated past 4096 bytes"
        );
    }

    #[test]
    fn a_long_request_is_cut_and_a_full_queue_is_counted_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let counters = Arc::new(AuditCounters::default());
        let audit = Audit::open(&path, 1 << 30, counters.clone()).unwrap();
        let mut long = entry(404);
        long.request = format!("GET /{}", "é".repeat(5000));
        audit.record(&long);
        assert!(audit.flush(Duration::from_secs(30)));
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let request = parsed["request"].as_str().unwrap();
        assert!(
            request.len() <= MAX_REQUEST_CHARS + '…'.len_utf8(),
            "{}",
            request.len()
        );
        assert!(request.ends_with('…'));
        // A queue nobody drains: a handle whose receiver is held, never read.
        let (queue, _rx) = mpsc::sync_channel(1);
        let stuck = Audit {
            queue,
            counters: counters.clone(),
            seq: Arc::default(),
        };
        stuck.record(&entry(200));
        stuck.record(&entry(200));
        stuck.record(&entry(200));
        assert_eq!(counters.lost.get(), 2, "two lines found the queue full");
    }
}
