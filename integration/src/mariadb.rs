//! A private `mariadbd` in a temporary directory on a free port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use crate::process::Proc;
use crate::{free_port, wait_for};

/// User the agent connects as (REPLICATION SLAVE + BINLOG MONITOR only).
pub const REPL_USER: &str = "logferry";
/// Its password.
pub const REPL_PASSWORD: &str = "logferry-pw";

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Binary logging on (ROW format, CRC32 checksums).
    pub log_bin: bool,
    /// The server's own id.
    pub server_id: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_bin: true,
            server_id: 1,
        }
    }
}

/// A running private server; stopped and deleted when dropped.
#[derive(Debug)]
pub struct MariaDb {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Data directory (holds the binlog files).
    pub datadir: PathBuf,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl MariaDb {
    /// Initialises a data directory and starts `mariadbd` on it.
    ///
    /// # Errors
    /// When the server binaries are missing or the server does not come up within 90 s
    /// (the error includes the server's error log).
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("logferry-mariadb-")
            .tempdir()?;
        let datadir = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--user=root",
                "--skip-test-db",
            ])
            .output()
            .context("cannot run mariadb-install-db (apt-get install mariadb-server)")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port()?;
        let d = dir.path().to_owned();
        let d = d.as_path();
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("err.log").display()))
            .arg(format!("--server-id={}", opts.server_id))
            .args([
                "--user=root",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
            ]);
        if opts.log_bin {
            cmd.args([
                "--log-bin=mysql-bin",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-checksum=CRC32",
            ]);
        }
        let proc = Proc::spawn("mariadbd", cmd, &d.join("stdout.log"))?;
        let mut db = MariaDb {
            port,
            datadir,
            proc,
            _dir: dir,
        };
        let err_log = d.join("err.log");
        let url = db.root_url();
        let ready = wait_for(
            "mariadbd to accept connections",
            Duration::from_secs(90),
            || {
                let url = url.clone();
                async move {
                    match Conn::new(Opts::from_url(&url)?).await {
                        Ok(c) => {
                            c.disconnect().await?;
                            Ok(Some(()))
                        }
                        Err(e) => Err(e.into()),
                    }
                }
            },
        )
        .await;
        if let Err(e) = ready {
            let exited = db.proc.try_exit()?;
            bail!(
                "{e:#} (exited: {exited:?}); error log:\n{}",
                std::fs::read_to_string(&err_log).unwrap_or_default()
            );
        }
        let mut c = db.conn().await?;
        c.query_drop(format!(
            "SET sql_log_bin = 0; \
             CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}'; \
             GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{REPL_USER}'@'%'"
        ))
        .await?;
        Ok(db)
    }

    /// URL of the root user (empty password).
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }

    /// URL of the replication user, as the agent uses it.
    pub fn repl_url(&self) -> String {
        format!(
            "mysql://{REPL_USER}:{REPL_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// A root connection.
    ///
    /// # Errors
    /// When the server does not answer.
    pub async fn conn(&self) -> anyhow::Result<Conn> {
        Ok(Conn::new(Opts::from_url(&self.root_url())?).await?)
    }

    /// The server's current binlog file and position (`SHOW MASTER STATUS`).
    ///
    /// # Errors
    /// When the query fails or binlog is off.
    pub async fn master_status(&self) -> anyhow::Result<(String, u64)> {
        let mut c = self.conn().await?;
        let row: Option<mysql_async::Row> = c.query_first("SHOW MASTER STATUS").await?;
        let row = row.context("SHOW MASTER STATUS is empty (binlog off?)")?;
        let file: String = row.get(0).context("no file")?;
        let pos: u64 = row.get(1).context("no position")?;
        c.disconnect().await?;
        Ok((file, pos))
    }

    /// Directory holding the server's own binlog files.
    pub fn binlog_dir(&self) -> &Path {
        &self.datadir
    }

    /// The server's error log.
    pub fn error_log(&self) -> String {
        self.proc.log()
    }
}
