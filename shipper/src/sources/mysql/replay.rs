//! Streams the rebuilt binlog to where a restore sends it while later segments are still
//! being read and verified: into a server through the stock `mariadb-binlog - | mariadb`
//! (one pipeline per original binlog file), or into binlog files in a directory.
//!
//! [`collect::collect`] produces pieces on the calling task; the consumer runs in a task of
//! its own, so decompressing and hashing segment N+1 overlaps with the server applying
//! segment N. At most `PIECES_IN_FLIGHT` pieces (about a segment each) wait in between:
//! the memory of a restore does not grow with its size.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use indicatif::ProgressBar;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

use super::collect::{self, Collected};
use super::plan::Plan;
use super::target::Target;
use super::target_server::{TargetServer, Tool};
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::storage::Store;

/// A piece of a rebuilt binlog file: (original file name, bytes). The first piece of each
/// file starts with the binlog magic and a format description.
pub type Piece = (String, Vec<u8>);

/// Pieces waiting between the collecting and the consuming side.
const PIECES_IN_FLIGHT: usize = 2;

/// Verifies the plan's segments and replays the kept transactions into `server` as they
/// are verified. Load the snapshot first ([`super::snapshot::load_snapshot`]).
///
/// # Errors
/// The first failure of either side; a failure half-way says how far the server got.
pub async fn into_server(
    store: &Store,
    plan: &Plan,
    target: &Target,
    server: &TargetServer,
    bar: &ProgressBar,
    interrupt: &Interrupt,
) -> Result<Collected> {
    let server = server.clone();
    stream(
        store,
        plan,
        target,
        bar,
        "applied to the server",
        interrupt,
        move |rx| replay(server, rx),
    )
    .await
}

/// Verifies the plan's segments and writes the kept transactions as binlog files (with
/// their original names, fsynced) into `dir`.
///
/// # Errors
/// The first failure of either side.
pub async fn into_dir(
    store: &Store,
    plan: &Plan,
    target: &Target,
    dir: &Path,
    bar: &ProgressBar,
) -> Result<Collected> {
    let dir = dir.to_owned();
    stream(
        store,
        plan,
        target,
        bar,
        "written",
        &Interrupt::never(),
        move |rx| write_files(dir, rx),
    )
    .await
}

async fn stream<C, F>(
    store: &Store,
    plan: &Plan,
    target: &Target,
    bar: &ProgressBar,
    done: &str,
    interrupt: &Interrupt,
    consume: C,
) -> Result<Collected>
where
    C: FnOnce(mpsc::Receiver<Piece>) -> F,
    F: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
    let consumer = tokio::spawn(consume(rx));
    let mut collected = Collected::default();
    let produced = collect::collect(store, plan, target, bar, &mut collected, &tx, interrupt).await;
    drop(tx);
    let consumed = consumer
        .await
        .map_err(|e| ShipperError::Restore(format!("the replay task failed: {e}")))?;
    // A consumer failure is the cause when both failed: the collecting side then only saw
    // the channel close.
    consumed?;
    produced.map_err(|e| {
        let so_far = collected
            .last_position
            .as_ref()
            .map_or_else(|| "nothing".to_owned(), |p| format!("everything up to {p}"));
        ShipperError::Restore(format!("{e} ({so_far} was {done} before it)"))
    })?;
    Ok(collected)
}

/// One `mariadb-binlog - | mariadb` pipeline, fed one binlog file.
struct Pipeline {
    file: String,
    decoder: Tool,
    client: Tool,
    stdin: ChildStdin,
}

impl Pipeline {
    fn start(server: &TargetServer, file: &str) -> Result<Self> {
        let mut decoder = tokio::process::Command::new("mariadb-binlog")
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ShipperError::Restore(format!("cannot run mariadb-binlog: {e}")))?;
        let sql: Stdio = decoder
            .stdout
            .take()
            .ok_or_else(|| ShipperError::Restore("mariadb-binlog has no stdout".into()))?
            .try_into()
            .map_err(|e| ShipperError::Restore(format!("piping mariadb-binlog: {e}")))?;
        let client = server
            .client()
            .stdin(sql)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ShipperError::Restore(format!("cannot run the mariadb client: {e}")))?;
        let stdin = decoder
            .stdin
            .take()
            .ok_or_else(|| ShipperError::Restore("mariadb-binlog has no stdin".into()))?;
        Ok(Pipeline {
            file: file.to_owned(),
            decoder: Tool::watch(decoder),
            client: Tool::watch(client),
            stdin,
        })
    }

    /// Feeds bytes; when the pipe breaks, the tools' own error is the one reported.
    async fn write(self, bytes: &[u8]) -> Result<Self> {
        let mut p = self;
        match p.stdin.write_all(bytes).await {
            Ok(()) => Ok(p),
            Err(e) => {
                let file = p.file.clone();
                p.finish().await?;
                Err(ShipperError::Restore(format!("replaying {file}: {e}")))
            }
        }
    }

    /// Closes the input and waits for both tools.
    async fn finish(self) -> Result<()> {
        drop(self.stdin);
        let decoded = self
            .decoder
            .finish(&format!("mariadb-binlog on {}", self.file))
            .await;
        self.client
            .finish(&format!("replaying {} with mariadb", self.file))
            .await?;
        decoded
    }
}

/// Feeds pieces into `server`, one pipeline per binlog file, in order.
async fn replay(server: TargetServer, mut pieces: mpsc::Receiver<Piece>) -> Result<()> {
    let mut current: Option<Pipeline> = None;
    while let Some((file, bytes)) = pieces.recv().await {
        let pipeline = match current.take() {
            Some(p) if p.file == file => p,
            other => {
                if let Some(previous) = other {
                    previous.finish().await?;
                }
                Pipeline::start(&server, &file)?
            }
        };
        current = Some(pipeline.write(&bytes).await?);
    }
    match current {
        Some(p) => p.finish().await,
        None => Ok(()),
    }
}

/// Appends pieces to files named after them in `dir`, fsyncing each file when it is done.
async fn write_files(dir: PathBuf, mut pieces: mpsc::Receiver<Piece>) -> Result<()> {
    let io = crate::restore::write_error(&dir);
    tokio::fs::create_dir_all(&dir).await.map_err(&io)?;
    let mut current: Option<(String, tokio::fs::File)> = None;
    while let Some((file, bytes)) = pieces.recv().await {
        if current.as_ref().is_none_or(|(name, _)| *name != file) {
            if let Some((_, f)) = current.take() {
                close(f).await.map_err(&io)?;
            }
            if !is_plain_file_name(&file) {
                return Err(ShipperError::Restore(format!(
                    "the stream names a binlog file {file:?}, which is not a plain file name; refusing to write it"
                )));
            }
            let f = tokio::fs::File::create(dir.join(&file))
                .await
                .map_err(&io)?;
            current = Some((file, f));
        }
        if let Some((_, f)) = current.as_mut() {
            f.write_all(&bytes).await.map_err(&io)?;
        }
    }
    if let Some((_, f)) = current {
        close(f).await.map_err(&io)?;
    }
    Ok(())
}

async fn close(mut f: tokio::fs::File) -> std::io::Result<()> {
    f.flush().await?;
    f.sync_all().await
}

/// A binlog file name that stays inside the export directory.
fn is_plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_written() {
        assert!(is_plain_file_name("mysql-bin.000001"));
        assert!(!is_plain_file_name("../mysql-bin.000001"));
        assert!(!is_plain_file_name("/etc/passwd"));
        assert!(!is_plain_file_name("a/b"));
        assert!(!is_plain_file_name(".."));
        assert!(!is_plain_file_name(""));
    }
}
