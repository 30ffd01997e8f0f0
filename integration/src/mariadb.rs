//! A private `mariadbd` in a temporary directory on a free port.

use std::path::PathBuf;
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
    /// More `mariadbd` options (e.g. `--max-binlog-size=268435456`).
    pub extra: Vec<String>,
}

impl Options {
    /// A server with binary logging off (a restore target).
    pub fn without_binlog(server_id: u32) -> Self {
        Options {
            log_bin: false,
            server_id,
            extra: Vec::new(),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_bin: true,
            server_id: 1,
            extra: Vec::new(),
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
    opts: Options,
    /// The running server; `None` only while [`MariaDb::restart`] runs.
    proc: Option<Proc>,
    /// Holds the datadir, socket and logs; deleted when dropped.
    dir: tempfile::TempDir,
}

impl MariaDb {
    /// Initialises a data directory and starts `mariadbd` on it.
    ///
    /// # Errors
    /// When the server binaries are missing or the server does not come up within 90 s
    /// (the error includes the server's error log).
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&opts).await {
                Ok(db) => return Ok(db),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("mariadbd did not start")))
    }

    /// One attempt on one free port. The port was free when chosen but another test may
    /// take it before this server binds it, so readiness also checks that the server that
    /// answers is this one (its datadir).
    async fn start_once(opts: &Options) -> anyhow::Result<Self> {
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
        let mut db = MariaDb {
            port: free_port()?,
            datadir,
            opts: opts.clone(),
            proc: None,
            dir,
        };
        db.launch().await?;
        let mut c = db.conn().await?;
        c.query_drop(format!(
            "SET sql_log_bin = 0; \
             CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}'; \
             GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{REPL_USER}'@'%'"
        ))
        .await?;
        Ok(db)
    }

    /// Runs `mariadbd` on this datadir and port and waits until it answers as this server.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path().to_owned();
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.datadir.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("err.log").display()))
            // Its own directory for temporary tables, not the /tmp every test server shares.
            .arg(format!("--tmpdir={}", d.display()))
            .arg(format!("--server-id={}", self.opts.server_id))
            .args([
                "--user=root",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
            ]);
        if self.opts.log_bin {
            cmd.args([
                "--log-bin=mysql-bin",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-checksum=CRC32",
            ]);
        }
        cmd.args(&self.opts.extra);
        self.proc = Some(Proc::spawn("mariadbd", cmd, &d.join("stdout.log"))?);
        let err_log = d.join("err.log");
        let url = self.root_url();
        let ready: anyhow::Result<String> = wait_for(
            "mariadbd to accept connections",
            Duration::from_secs(90),
            || {
                let url = url.clone();
                async move {
                    let mut c = Conn::new(Opts::from_url(&url)?).await?;
                    let served: Option<String> = c.query_first("SELECT @@datadir").await?;
                    c.disconnect().await?;
                    Ok(Some(served.unwrap_or_default()))
                }
            },
        )
        .await;
        let served = match ready {
            Ok(dir) => dir,
            Err(e) => {
                let exited = match self.proc.as_mut() {
                    Some(p) => p.try_exit()?,
                    None => None,
                };
                bail!(
                    "{e:#} (exited: {exited:?}); error log:\n{}",
                    std::fs::read_to_string(&err_log).unwrap_or_default()
                );
            }
        };
        let ours = self.datadir.display().to_string();
        if served.trim_end_matches('/') != ours.trim_end_matches('/') {
            bail!(
                "port {} is served by another server ({served}), not ours ({ours})",
                self.port
            );
        }
        Ok(())
    }

    /// Shuts the server down cleanly (SIGTERM: it ends its binlog with a stop event) and
    /// starts it again on the same datadir and port, as an operator's restart does.
    ///
    /// # Errors
    /// When the server does not stop cleanly or does not come back within 90 s.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let mut proc = self.proc.take().context("the server is not running")?;
        let status = proc.terminate()?;
        if !status.success() {
            bail!("mariadbd did not shut down cleanly: {status}");
        }
        self.launch().await
    }

    /// Kills the server (SIGKILL: its binlog file ends with neither a rotate nor a stop
    /// event) and starts it again on the same datadir and port, as after a crash.
    ///
    /// # Errors
    /// When the server does not come back within 90 s.
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        let mut proc = self.proc.take().context("the server is not running")?;
        proc.kill9();
        self.launch().await
    }

    /// Kills the server (SIGKILL) and leaves it down, as a primary lost in a failover.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Shuts the server down cleanly and starts it again on `port` (another server's
    /// address taken over, as a VIP or DNS move does).
    ///
    /// # Errors
    /// As [`Self::restart`].
    pub async fn move_to_port(&mut self, port: u16) -> anyhow::Result<()> {
        let mut proc = self.proc.take().context("the server is not running")?;
        let status = proc.terminate()?;
        if !status.success() {
            bail!("mariadbd did not shut down cleanly: {status}");
        }
        self.port = port;
        self.launch().await
    }

    /// Makes a replica the primary, as an operator promotes a standby: replication
    /// stopped and forgotten, writes allowed.
    ///
    /// # Errors
    /// When a statement fails.
    pub async fn promote(&self) -> anyhow::Result<()> {
        self.conn()
            .await?
            .query_drop("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
            .await?;
        Ok(())
    }

    /// The server's GTID state (`@@gtid_binlog_pos`).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn gtid_binlog_pos(&self) -> anyhow::Result<String> {
        let v: Option<String> = self
            .conn()
            .await?
            .query_first("SELECT @@gtid_binlog_pos")
            .await?;
        Ok(v.unwrap_or_default())
    }

    /// Starts a replica of `primary` (GTID-based, from the primary's first binlog) and waits
    /// until it has applied everything the primary has so far.
    ///
    /// # Errors
    /// When the server does not start or replication does not catch up within 60 s.
    pub async fn start_replica(primary: &MariaDb, server_id: u32) -> anyhow::Result<Self> {
        Self::start_replica_with(
            primary,
            Options {
                server_id,
                ..Options::default()
            },
        )
        .await
    }

    /// Like [`Self::start_replica`], the replica started with `opts`.
    ///
    /// # Errors
    /// As [`Self::start_replica`].
    pub async fn start_replica_with(primary: &MariaDb, opts: Options) -> anyhow::Result<Self> {
        let replica = MariaDb::start(opts).await?;
        let mut c = replica.conn().await?;
        c.query_drop(format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
             MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos; START SLAVE",
            primary.port
        ))
        .await?;
        replica.wait_replicated(primary).await?;
        Ok(replica)
    }

    /// Waits until this replica has applied everything `primary` has written so far.
    ///
    /// # Errors
    /// When it does not catch up within 60 s.
    pub async fn wait_replicated(&self, primary: &MariaDb) -> anyhow::Result<()> {
        let mut p = primary.conn().await?;
        let want: Option<String> = p.query_first("SELECT @@gtid_binlog_pos").await?;
        let want = want.unwrap_or_default();
        wait_for("the replica to catch up", Duration::from_secs(60), || {
            let want = want.clone();
            async move {
                let have: Option<String> = self
                    .conn()
                    .await?
                    .query_first("SELECT @@gtid_slave_pos")
                    .await?;
                Ok((have.unwrap_or_default() == want).then_some(()))
            }
        })
        .await
    }

    /// Whether the replica's SQL (apply) thread is running.
    ///
    /// # Errors
    /// When the status cannot be read.
    pub async fn sql_thread_running(&self) -> anyhow::Result<bool> {
        let row: Option<mysql_async::Row> =
            self.conn().await?.query_first("SHOW SLAVE STATUS").await?;
        let row = row.context("not a replica")?;
        let running: String = row
            .get_opt("Slave_SQL_Running")
            .and_then(Result::ok)
            .unwrap_or_default();
        Ok(running == "Yes")
    }

    /// CPU time the server process has used so far, seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.proc.as_ref().and_then(Proc::cpu_seconds)
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
}
