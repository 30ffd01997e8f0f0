//! A private MySQL 8 `mysqld` in a temporary directory on a free port, GTIDs on. Debian
//! ships MariaDB under the name `mysqld`, and no MySQL server is installable here: the
//! tests that need one run when [`MySql8::binary`] finds one (`LOGFERRY_MYSQLD`, or a
//! `mysqld` on the path that says it is MySQL 8 or later) and say that they were skipped
//! otherwise.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use crate::process::Proc;
use crate::{free_port, wait_for};

/// The agent's user (no password: MySQL 8's default authentication then needs no TLS).
pub const REPL_USER: &str = "logferry";

/// A running private MySQL 8 server; stopped and deleted when dropped.
#[derive(Debug)]
pub struct MySql8 {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
}

impl MySql8 {
    /// The MySQL 8 `mysqld` to run, when this machine has one.
    pub fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("LOGFERRY_MYSQLD") {
            return Some(PathBuf::from(path));
        }
        let out = Command::new("mysqld").arg("--version").output().ok()?;
        let version = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let major = version
            .split("ver ")
            .nth(1)?
            .split('.')
            .next()?
            .trim()
            .parse::<u32>()
            .ok()?;
        (!version.contains("mariadb") && major >= 8).then(|| PathBuf::from("mysqld"))
    }

    /// Initialises a data directory and starts `mysqld` on it with GTIDs on, binary
    /// logging in ROW format and `server_id`; creates the agent's user.
    ///
    /// # Errors
    /// When there is no MySQL 8 server or it does not come up within 120 s (the error
    /// holds its error log).
    pub async fn start(server_id: u32) -> anyhow::Result<Self> {
        let bin = Self::binary().context("no MySQL 8 mysqld on this machine")?;
        let dir = tempfile::Builder::new()
            .prefix("logferry-mysql8-")
            .tempdir()?;
        let data = dir.path().join("data");
        let out = Command::new(&bin)
            .arg("--no-defaults")
            .arg("--initialize-insecure")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--secure-file-priv={}", dir.path().display()))
            .arg("--user=root")
            .output()
            .context("running mysqld --initialize-insecure")?;
        if !out.status.success() {
            bail!(
                "mysqld --initialize-insecure failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let d = dir.path();
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("err.log").display()))
            .arg(format!("--tmpdir={}", d.display()))
            .arg(format!("--server-id={server_id}"))
            .arg(format!("--secure-file-priv={}", d.display()))
            .args([
                "--user=root",
                "--skip-name-resolve",
                "--mysqlx=OFF",
                "--gtid-mode=ON",
                "--enforce-gtid-consistency=ON",
                "--log-bin=mysql-bin",
                "--binlog-format=ROW",
                "--innodb-buffer-pool-size=64M",
            ]);
        let proc = Proc::spawn("mysqld", cmd, &d.join("stdout.log"))?;
        let db = MySql8 {
            port,
            proc: Some(proc),
            dir,
        };
        let socket_url = format!(
            "mysql://root@localhost/mysql?socket={}",
            db.dir.path().join("sock").display()
        );
        let up = wait_for("mysqld to accept connections", Duration::from_secs(120), || {
            let url = socket_url.clone();
            async move {
                let mut c = Conn::new(Opts::from_url(&url)?).await?;
                // Not logged: a replica built from it holds no transaction of its own.
                c.query_drop(format!(
                    "SET SESSION sql_log_bin = 0; \
                     CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; \
                     GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; \
                     CREATE USER IF NOT EXISTS '{REPL_USER}'@'127.0.0.1'; \
                     GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{REPL_USER}'@'127.0.0.1'"
                ))
                .await?;
                c.disconnect().await?;
                Ok(Some(()))
            }
        })
        .await;
        if let Err(e) = up {
            bail!(
                "{e:#}; error log:\n{}",
                std::fs::read_to_string(db.dir.path().join("err.log")).unwrap_or_default()
            );
        }
        Ok(db)
    }

    /// Starts a replica of `primary` (GTID auto-positioning) and waits until it holds what
    /// the primary executed.
    ///
    /// # Errors
    /// As [`Self::start`]; when it does not catch up within 60 s.
    pub async fn start_replica(primary: &MySql8, server_id: u32) -> anyhow::Result<Self> {
        let replica = MySql8::start(server_id).await?;
        replica
            .conn()
            .await?
            .query_drop(format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT={}, SOURCE_USER='root', \
                 SOURCE_PASSWORD='', SOURCE_AUTO_POSITION=1; START REPLICA",
                primary.port
            ))
            .await?;
        replica.wait_replicated(primary).await?;
        Ok(replica)
    }

    /// Waits until this server holds everything `primary` has executed.
    ///
    /// # Errors
    /// When it does not within 60 s.
    pub async fn wait_replicated(&self, primary: &MySql8) -> anyhow::Result<()> {
        let want = primary.gtid_executed().await?;
        wait_for("the replica to catch up", Duration::from_secs(60), || {
            let want = want.clone();
            async move {
                let mut c = self.conn().await?;
                let held: Option<i64> = c
                    .exec_first("SELECT GTID_SUBSET(?, @@GLOBAL.gtid_executed)", (want,))
                    .await?;
                Ok((held == Some(1)).then_some(()))
            }
        })
        .await
    }

    /// `@@GLOBAL.gtid_executed`.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn gtid_executed(&self) -> anyhow::Result<String> {
        let v: Option<String> = self
            .conn()
            .await?
            .query_first("SELECT @@GLOBAL.gtid_executed")
            .await?;
        Ok(v.unwrap_or_default().replace('\n', ""))
    }

    /// Makes a replica the primary: replication stopped and forgotten, writes allowed.
    ///
    /// # Errors
    /// When a statement fails.
    pub async fn promote(&self) -> anyhow::Result<()> {
        self.conn()
            .await?
            .query_drop("STOP REPLICA; RESET REPLICA ALL; SET GLOBAL super_read_only = OFF; SET GLOBAL read_only = OFF")
            .await?;
        Ok(())
    }

    /// Kills the server (`kill -9`).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// URL of the agent's user.
    pub fn repl_url(&self) -> String {
        format!("mysql://{REPL_USER}@127.0.0.1:{}", self.port)
    }

    /// A root connection over TCP.
    ///
    /// # Errors
    /// When the server does not answer.
    pub async fn conn(&self) -> anyhow::Result<Conn> {
        let url = format!("mysql://root@127.0.0.1:{}/mysql", self.port);
        Ok(Conn::new(Opts::from_url(&url)?).await?)
    }
}
