//! The audit log: one JSON line per request that was authenticated or refused (token id,
//! never the secret; action; stream; object; result; peer; time), appended and fsynced by a
//! writer thread of its own, rotated by size to `.1` … `.5`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Serialize;

use crate::error::{Result, ShipperError};

/// Rotated files kept beside the live one.
const KEEP: u32 = 5;

/// One audited request.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When it was answered, RFC 3339 (ms).
    pub time: String,
    /// The peer's address, when known.
    pub peer: Option<String>,
    /// The token's id (`null` when there was no valid one).
    pub token: Option<String>,
    /// `METHOD /path`.
    pub request: String,
    /// The stream it was about, when one.
    pub stream: Option<String>,
    /// The object stored or refused, when one.
    pub object: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// Why it was refused, when it was.
    pub error: Option<String>,
}

/// A handle to the audit log's writer; cheap to clone. Writes never wait for the disk on the
/// request's task.
#[derive(Debug, Clone)]
pub struct Audit {
    lines: mpsc::Sender<String>,
}

impl Audit {
    /// Opens (creating) the log at `path`, rotated when it passes `max_bytes`.
    ///
    /// # Errors
    /// [`ShipperError::Internal`] naming the file when it cannot be opened.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| failed(path, &e))?;
        }
        let file = append(path)?;
        let (lines, rx) = mpsc::channel::<String>();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_loop(&path, file, max_bytes, &rx))
            .map_err(|e| ShipperError::Internal(format!("starting the audit writer: {e}")))?;
        Ok(Audit { lines })
    }

    /// Records one request.
    pub fn record(&self, entry: &Entry) {
        match serde_json::to_string(entry) {
            Ok(line) => {
                if self.lines.send(line).is_err() {
                    tracing::error!(
                        "the audit log writer has stopped; this request is not audited"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "an audit entry could not be encoded"),
        }
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

/// Writes every line that arrives, then fsyncs once per batch; rotates past `max_bytes`.
fn write_loop(path: &Path, mut file: File, max_bytes: u64, rx: &mpsc::Receiver<String>) {
    while let Ok(first) = rx.recv() {
        let mut batch = first;
        batch.push('\n');
        while let Ok(more) = rx.try_recv() {
            batch.push_str(&more);
            batch.push('\n');
        }
        let written = file
            .write_all(batch.as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e, "writing the audit log failed");
            continue;
        }
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size >= max_bytes {
            match rotate(path) {
                Ok(f) => file = f,
                Err(e) => tracing::error!(error = %e, "rotating the audit log failed"),
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

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[test]
    fn entries_are_appended_as_json_lines_and_rotated_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path, 4096).unwrap();
        for _ in 0..100 {
            audit.record(&entry(201));
        }
        let all = || {
            lines(&path)
                + (1..=KEEP)
                    .map(|n| lines(&path.with_extension(format!("jsonl.{n}"))))
                    .sum::<usize>()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while all() < 100 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(all(), 100, "every entry is written once");
        let rotated = path.with_extension("jsonl.1");
        assert!(rotated.exists(), "rotated past 4096 bytes");
        let first = std::fs::read_to_string(&rotated).unwrap();
        let parsed: serde_json::Value =
            serde_json::from_str(first.lines().next().unwrap()).unwrap();
        assert_eq!(parsed["token"], "orders");
        assert_eq!(parsed["status"], 201);
    }
}
