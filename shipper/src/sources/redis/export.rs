//! `export` of a Redis stream: a Redis 7 multi-part AOF directory that `redis-server
//! --appendonly yes` loads as it is: the snapshot's RDB as the base file, the commands up to
//! the target as the incremental file (AOF form, `#TS:` lines, so `redis-check-aof
//! --truncate-to-timestamp` works on it), and the manifest naming both.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use logferry_common::format::redis::ts_line;
use logferry_common::snapshot::SnapshotManifest;
use tokio::fs::File;
use tokio::io::{AsyncWriteExt, BufWriter};

use super::replay::Sink;
use crate::error::{Result, ShipperError};
use crate::restore::{snapshot_chunks, write_error};
use crate::storage::Store;

/// The directory Redis reads a multi-part AOF from (`appenddirname`).
pub const AOF_DIR: &str = "appendonlydir";
/// The AOF's base name (`appendfilename`).
const AOF_NAME: &str = "appendonly.aof";

/// The files of one export, created (never replaced) under `dir/appendonlydir`.
pub struct AofExport {
    dir: PathBuf,
    incr: BufWriter<File>,
    last_ts: Option<i64>,
    base: bool,
}

fn base_name() -> String {
    format!("{AOF_NAME}.1.base.rdb")
}

fn incr_name() -> String {
    format!("{AOF_NAME}.1.incr.aof")
}

/// Creates `path`, refusing to replace a file.
async fn create(path: &Path) -> Result<File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| {
            ShipperError::Restore(format!(
                "cannot create {}: {e}; export into an empty directory",
                path.display()
            ))
        })
}

impl AofExport {
    /// Creates the directory and the incremental file.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when a file exists already or cannot be written.
    pub async fn create(dir: &Path) -> Result<AofExport> {
        let aof = dir.join(AOF_DIR);
        tokio::fs::create_dir_all(&aof)
            .await
            .map_err(write_error(dir))?;
        let incr = create(&aof.join(incr_name())).await?;
        Ok(AofExport {
            dir: dir.to_owned(),
            incr: BufWriter::with_capacity(1 << 20, incr),
            last_ts: None,
            base: false,
        })
    }

    /// Writes the snapshot's chunks (each verified) as the base RDB.
    ///
    /// # Errors
    /// [`ShipperError::Corrupt`] for a chunk that fails its checks; write errors.
    pub async fn base(
        &mut self,
        store: &Store,
        m: &SnapshotManifest,
        bar: &ProgressBar,
    ) -> Result<()> {
        let path = self.dir.join(AOF_DIR).join(base_name());
        let mut file = create(&path).await?;
        snapshot_chunks(store, m, bar, &mut file, "writing the base RDB").await?;
        file.sync_all().await.map_err(write_error(&self.dir))?;
        self.base = true;
        Ok(())
    }

    /// Flushes the incremental file and writes the manifest and `RESTORE.txt`; the files
    /// written, relative to the export directory.
    ///
    /// # Errors
    /// Write errors.
    pub async fn finish(mut self) -> Result<Vec<String>> {
        let err = write_error(&self.dir);
        self.incr.flush().await.map_err(&err)?;
        self.incr.get_mut().sync_all().await.map_err(&err)?;
        let mut manifest = String::new();
        let mut written = Vec::new();
        if self.base {
            manifest.push_str(&format!("file {} seq 1 type b\n", base_name()));
            written.push(format!("{AOF_DIR}/{}", base_name()));
        }
        manifest.push_str(&format!("file {} seq 1 type i\n", incr_name()));
        written.push(format!("{AOF_DIR}/{}", incr_name()));
        let path = self.dir.join(AOF_DIR).join(format!("{AOF_NAME}.manifest"));
        let mut file = create(&path).await?;
        file.write_all(manifest.as_bytes()).await.map_err(&err)?;
        file.sync_all().await.map_err(&err)?;
        written.push(format!("{AOF_DIR}/{AOF_NAME}.manifest"));
        let howto = format!(
            "Load this export into an empty Redis 7 server:\n\n\
             \tredis-server --dir {dir} --appendonly yes --appenddirname {AOF_DIR} --appendfilename {AOF_NAME}\n\n\
             The base file is the snapshot's RDB; the incremental file holds the commands after it, in AOF\n\
             form with #TS: lines (receive times, to the second), so\n\
             \tredis-check-aof --truncate-to-timestamp UNIX_SECONDS {AOF_DIR}/{AOF_NAME}.manifest\n\
             cuts it at an earlier second. Copy the directory into the server's dir to restore it there.\n",
            dir = self.dir.display()
        );
        let mut file = create(&self.dir.join("RESTORE.txt")).await?;
        file.write_all(howto.as_bytes()).await.map_err(&err)?;
        file.sync_all().await.map_err(&err)?;
        written.push("RESTORE.txt".into());
        Ok(written)
    }
}

impl Sink for AofExport {
    async fn transaction(&mut self, commands: &[u8], ts: i64) -> Result<()> {
        let err = write_error(&self.dir);
        if self.last_ts != Some(ts) {
            self.incr.write_all(&ts_line(ts)).await.map_err(&err)?;
            self.last_ts = Some(ts);
        }
        self.incr.write_all(commands).await.map_err(&err)
    }

    async fn idle(&mut self) -> Result<()> {
        Ok(())
    }
}
