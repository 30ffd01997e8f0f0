//! The server a restore writes into, driven with the stock `mariadb` client.

use std::collections::BTreeMap;
use std::str::FromStr;

use logferry_common::format::mysql::sql::{
    quote_account, quote_ident, quote_string, server_accounts_sql_list, system_schemas_sql_list,
};
use logferry_common::BinlogPos;
use logferry_config::MysqlTls;

use crate::error::{Result, ShipperError};

/// A MySQL/MariaDB server to restore into, from a `mysql://USER:PASSWORD@HOST:PORT` URL
/// (user and password percent-encoded, as in any URL), with TLS as the URL's `ssl-mode`,
/// `ssl-ca`, `ssl-cert` and `ssl-key` say (MySQL's names and meanings; default `preferred`).
#[derive(Clone)]
pub struct TargetServer {
    host: String,
    port: u16,
    user: String,
    password: String,
    /// TLS to it, from the URL's `ssl-mode`, `ssl-ca`, `ssl-cert` and `ssl-key`.
    tls: MysqlTls,
}

impl std::fmt::Display for TargetServer {
    /// `host:port`, for messages (never the password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::fmt::Debug for TargetServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A percent-encoded URL part, decoded.
fn decoded(part: &str) -> Option<String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

impl FromStr for TargetServer {
    type Err = ShipperError;

    /// A `--target` URL.
    fn from_str(s: &str) -> Result<Self> {
        TargetServer::parse_flag(s, "--target")
    }
}

impl TargetServer {
    /// A server URL given as `flag`, which errors name.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] naming `flag`, the redacted URL and the form it should
    /// take.
    pub fn parse_flag(s: &str, flag: &str) -> Result<Self> {
        let shown = logferry_config::SecretUrl::new(s).redacted();
        let bad = |why: &str| {
            ShipperError::Restore(format!(
                "{flag} {shown:?}: {why}; use mysql://USER:PASSWORD@HOST:3306 (reserved characters in the user or password percent-encoded: @ as %40, : as %3A, / as %2F, % as %25, # as %23)"
            ))
        };
        let u = url::Url::parse(s).map_err(|_| bad("not a URL"))?;
        if u.scheme() != "mysql" {
            return Err(bad("scheme is not mysql"));
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let user = if u.username().is_empty() {
            "root".to_owned()
        } else {
            decoded(u.username()).ok_or_else(|| bad("the user name is not UTF-8"))?
        };
        let password =
            decoded(u.password().unwrap_or("")).ok_or_else(|| bad("the password is not UTF-8"))?;
        let mut tls = MysqlTls::default();
        for (name, value) in u.query_pairs() {
            let path = || Some(std::path::PathBuf::from(value.as_ref()));
            match name.as_ref() {
                "ssl-mode" => {
                    tls.mode = value.parse().map_err(|e: String| bad(&format!("ssl-mode {e}")))?;
                }
                "ssl-ca" => tls.ca = path(),
                "ssl-cert" => tls.cert = path(),
                "ssl-key" => tls.key = path(),
                other => {
                    return Err(bad(&format!(
                        "unknown parameter {other:?} (the URL takes ssl-mode, ssl-ca, ssl-cert, ssl-key)"
                    )))
                }
            }
        }
        tls.validate(|part| format!("ssl-{part}"))
            .map_err(|e| bad(&e.to_string()))?;
        Ok(TargetServer {
            host: host.to_owned(),
            port: u.port().unwrap_or(3306),
            user,
            password,
            tls,
        })
    }
}

/// Where an interrupted restore left its target, as recorded there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The stream restored.
    pub stream: String,
    /// The end of the last whole transaction applied.
    pub at: BinlogPos,
    /// The restore's `--to`, which a resume must repeat.
    pub target: String,
}

/// The schema where an interrupted restore records how far it got (dropped when the
/// restore completes, and by `--force`).
pub const PROGRESS_SCHEMA: &str = "logferry_restore";

/// The largest statement a replay sends: `mariadb-binlog` turns all row events of one
/// statement into one `BINLOG` statement (base64, 4/3 of the events), so one bulk `INSERT …
/// SELECT`, `UPDATE` or `DELETE` of hundreds of MB needs this much on the client and the
/// server. 1 GiB is the most either allows; a statement whose row events pass about 750 MB
/// cannot be replayed through the stock clients.
pub const REPLAY_MAX_PACKET: u64 = 1 << 30;

/// The settings a replay changed on its target, to put back when it ends.
#[derive(Debug, Default)]
pub struct Relaxed {
    /// The previous `innodb_flush_log_at_trx_commit`, when it was set to 2.
    pub flush: Option<String>,
    /// The previous `max_allowed_packet`, when it was raised.
    pub packet: Option<u64>,
    /// Settings that could not be changed, and why (the replay goes on without).
    pub notes: Vec<String>,
}

impl TargetServer {
    /// Prepares the target for a replay: the packet limit raised (always: bulk statements
    /// need it) and, unless `keep_durability`, the redo log fsynced once a second. A setting
    /// that cannot be changed is noted, not fatal.
    pub async fn relax_for_replay(&self, keep_durability: bool) -> Relaxed {
        let mut r = Relaxed::default();
        if !keep_durability {
            match self.relax_durability().await {
                Ok(previous) => r.flush = previous,
                Err(e) => r.notes.push(format!(
                    "restoring with the target's own durability settings ({e})"
                )),
            }
        }
        match self.allow_large_statements().await {
            Ok(previous) => r.packet = previous,
            Err(e) => r.notes.push(format!(
                "max_allowed_packet could not be raised to {REPLAY_MAX_PACKET} ({e}); a statement larger than the target's limit will fail"
            )),
        }
        r
    }

    /// Puts back what [`Self::relax_for_replay`] changed, flushing the redo log.
    ///
    /// # Errors
    /// The first setting that could not be put back, named with its value.
    pub async fn put_back(&self, r: &Relaxed) -> Result<()> {
        if let Some(previous) = r.packet {
            self.restore_packet_limit(previous).await.map_err(|e| {
                ShipperError::Restore(format!(
                    "could not put max_allowed_packet back to {previous} on the target ({e}); set it by hand"
                ))
            })?;
        }
        if let Some(previous) = &r.flush {
            self.restore_durability(previous).await.map_err(|e| {
                ShipperError::Restore(format!(
                    "could not put innodb_flush_log_at_trx_commit back to {previous} on the target ({e}); set it by hand"
                ))
            })?;
        }
        Ok(())
    }

    /// The `mariadb` client command for this server (password through the environment,
    /// never on the command line), in a process group of its own.
    pub(crate) fn client(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("mariadb");
        cmd.arg(format!("--host={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={}", self.user))
            .arg(format!("--max-allowed-packet={REPLAY_MAX_PACKET}"))
            // A server that does not answer is an error in seconds, not a hang.
            .arg("--connect-timeout=10")
            .args(self.tls.client_args(false))
            .env("MYSQL_PWD", &self.password)
            // Its own process group: Ctrl-C in the terminal reaches only logferry, which
            // stops the replay at a transaction boundary, not the client mid-statement.
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// Whether the target writes a binlog (`@@log_bin`).
    ///
    /// # Errors
    /// When the server cannot be queried.
    pub async fn writes_binlog(&self) -> Result<bool> {
        let rows = self.query("SELECT @@GLOBAL.log_bin").await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .is_some_and(|v| v == "1"))
    }

    /// Runs one SQL text with the `mariadb` client and returns its tab-separated rows.
    ///
    /// # Errors
    /// When the client fails.
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        Ok(self
            .output(&["-N", "-B", "-e", sql])
            .await?
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect())
    }

    /// Runs one statement and returns its first row by column name: for `SHOW` statements,
    /// whose columns differ between versions.
    ///
    /// # Errors
    /// When the client fails.
    pub async fn first_row_named(&self, sql: &str) -> Result<Option<BTreeMap<String, String>>> {
        Ok(self.rows_named(sql).await?.into_iter().next())
    }

    /// Runs one statement and returns every row by column name.
    ///
    /// # Errors
    /// When the client fails.
    pub async fn rows_named(&self, sql: &str) -> Result<Vec<BTreeMap<String, String>>> {
        let text = self.output(&["-B", "-e", sql]).await?;
        let mut lines = text.lines();
        let Some(names) = lines.next() else {
            return Ok(Vec::new());
        };
        let names: Vec<&str> = names.split('\t').collect();
        Ok(lines
            .map(|values| {
                names
                    .iter()
                    .map(|n| (*n).to_owned())
                    .zip(values.split('\t').map(str::to_owned))
                    .collect()
            })
            .collect())
    }

    /// The `mariadb` client's output for `args`.
    async fn output(&self, args: &[&str]) -> Result<String> {
        let out =
            self.client().args(args).output().await.map_err(|e| {
                ShipperError::Restore(format!("cannot run the mariadb client: {e}"))
            })?;
        if !out.status.success() {
            return Err(ShipperError::Restore(format!(
                "query on {}:{} failed: {}",
                self.host,
                self.port,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets `innodb_flush_log_at_trx_commit` to 2 for the duration of a restore: the redo
    /// log is then written at every commit but fsynced once a second instead of at every
    /// commit, which a replay of many transactions otherwise waits on. A crash of the
    /// server meanwhile can lose the last second of an unfinished restore, which is redone
    /// anyway. Returns the previous value when it was changed, `None` when it already was
    /// 2 or 0.
    ///
    /// # Errors
    /// When the variable cannot be read or set (e.g. the user lacks the privilege).
    pub async fn relax_durability(&self) -> Result<Option<String>> {
        let rows = self
            .query("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit")
            .await?;
        let previous = rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .ok_or_else(|| {
                ShipperError::Restore("innodb_flush_log_at_trx_commit is not readable".into())
            })?;
        if previous == "2" || previous == "0" {
            return Ok(None);
        }
        self.query("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
            .await?;
        Ok(Some(previous))
    }

    /// Puts `innodb_flush_log_at_trx_commit` back to `previous` and flushes the redo log,
    /// so everything restored is on disk when this returns. The flush is kept out of the
    /// target's binlog: a binlogged `FLUSH` takes a GTID of the target's own, which would
    /// put the restored server's GTID position one past the primary's.
    ///
    /// # Errors
    /// When the statements fail.
    pub async fn restore_durability(&self, previous: &str) -> Result<()> {
        let value: u8 = previous.parse().map_err(|_| {
            ShipperError::Restore(format!(
                "unexpected innodb_flush_log_at_trx_commit value {previous:?}"
            ))
        })?;
        self.query(&format!(
            "SET GLOBAL innodb_flush_log_at_trx_commit = {value}; FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS"
        ))
        .await?;
        Ok(())
    }

    /// Raises the server's `max_allowed_packet` to [`REPLAY_MAX_PACKET`] for the sessions
    /// a restore opens after this, so that bulk statements replay. Returns the previous
    /// value when it was changed.
    ///
    /// # Errors
    /// When the variable cannot be read or set (e.g. the user lacks the privilege).
    pub async fn allow_large_statements(&self) -> Result<Option<u64>> {
        let previous = self
            .query("SELECT @@GLOBAL.max_allowed_packet")
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ShipperError::Restore("max_allowed_packet is not readable".into()))?;
        if previous >= REPLAY_MAX_PACKET {
            return Ok(None);
        }
        self.query(&format!(
            "SET GLOBAL max_allowed_packet = {REPLAY_MAX_PACKET}"
        ))
        .await?;
        Ok(Some(previous))
    }

    /// Puts `max_allowed_packet` back to `previous`.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn restore_packet_limit(&self, previous: u64) -> Result<()> {
        self.query(&format!("SET GLOBAL max_allowed_packet = {previous}"))
            .await?;
        Ok(())
    }

    /// Records on the target where an interrupted restore left it (in [`PROGRESS_SCHEMA`],
    /// out of the binlog), for `--resume`.
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn save_progress(&self, p: &Progress) -> Result<()> {
        let sql = format!(
            "{}CREATE DATABASE IF NOT EXISTS {PROGRESS_SCHEMA}; \
             CREATE TABLE IF NOT EXISTS {PROGRESS_SCHEMA}.progress (stream VARCHAR(255) PRIMARY KEY, position TEXT NOT NULL, target TEXT NOT NULL) ENGINE=InnoDB; \
             DELETE FROM {PROGRESS_SCHEMA}.progress; \
             INSERT INTO {PROGRESS_SCHEMA}.progress VALUES ({}, {}, {})",
            self.unlogged().await?,
            quote_string(&p.stream),
            quote_string(&p.at.to_string()),
            quote_string(&p.target)
        );
        self.query(&sql).await.map(drop)
    }

    /// What an interrupted restore recorded, if the target holds a record.
    ///
    /// # Errors
    /// When the server cannot be queried, or the record does not parse.
    pub async fn progress(&self) -> Result<Option<Progress>> {
        let exists = self
            .query(&format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{PROGRESS_SCHEMA}' AND table_name = 'progress'"
            ))
            .await?;
        if exists
            .first()
            .and_then(|r| r.first())
            .is_none_or(|n| n == "0")
        {
            return Ok(None);
        }
        let rows = self
            .query(&format!(
                "SELECT stream, position, target FROM {PROGRESS_SCHEMA}.progress"
            ))
            .await?;
        let Some([stream, position, target]) = rows
            .into_iter()
            .next()
            .and_then(|r| <[String; 3]>::try_from(r).ok())
        else {
            return Ok(None);
        };
        Ok(Some(Progress {
            stream,
            at: BinlogPos::parse(&position)?,
            target,
        }))
    }

    /// Removes the record of an interrupted restore once the restore is complete.
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn clear_progress(&self) -> Result<()> {
        let sql = format!(
            "{}DROP DATABASE IF EXISTS {PROGRESS_SCHEMA}",
            self.unlogged().await?
        );
        self.query(&sql).await.map(drop)
    }

    /// `SET SESSION sql_log_bin = 0; ` when the target writes a binlog (what the restore
    /// does of its own stays out of the target's GTID state), else nothing.
    async fn unlogged(&self) -> Result<&'static str> {
        Ok(if self.writes_binlog().await? {
            "SET SESSION sql_log_bin = 0; "
        } else {
            ""
        })
    }

    /// Drops every database outside the system schemas (what an earlier or a failed
    /// restore created), out of the binlog so that the target's GTID state stays the
    /// primary's; returns their names.
    ///
    /// # Errors
    /// When the server cannot be queried or refuses a drop.
    pub async fn drop_user_databases(&self) -> Result<Vec<String>> {
        let names = self.user_databases().await?;
        if names.is_empty() {
            return Ok(names);
        }
        let mut sql = self.unlogged().await?.to_owned();
        for name in &names {
            sql.push_str(&format!(" DROP DATABASE {};", quote_ident(name)));
        }
        self.query(&sql).await?;
        Ok(names)
    }

    /// Drops every account but the server's own (`SERVER_ACCOUNTS`) and the one this
    /// restore logs in as, out of the binlog: what an earlier restore's snapshot
    /// and replay created, which a replayed `CREATE USER` would otherwise collide with;
    /// returns them as `'user'@'host'`.
    ///
    /// # Errors
    /// When the server cannot be queried or refuses a drop.
    pub async fn drop_user_accounts(&self) -> Result<Vec<String>> {
        let rows = self
            .query(&format!(
                "SELECT User, Host FROM mysql.global_priv \
                 WHERE User NOT IN {} AND CONCAT(User, '@', Host) <> CURRENT_USER()",
                server_accounts_sql_list()
            ))
            .await?;
        let accounts: Vec<String> = rows
            .iter()
            .filter_map(|r| match r.as_slice() {
                [user, host] => Some(quote_account(user, host)),
                _ => None,
            })
            .collect();
        if accounts.is_empty() {
            return Ok(accounts);
        }
        let mut sql = self.unlogged().await?.to_owned();
        for a in &accounts {
            sql.push_str(&format!(" DROP USER IF EXISTS {a};"));
        }
        self.query(&sql).await?;
        Ok(accounts)
    }

    /// Databases on the server other than the system ones.
    ///
    /// # Errors
    /// When the server cannot be queried.
    pub async fn user_databases(&self) -> Result<Vec<String>> {
        let rows = self
            .query(&format!(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN {}",
                system_schemas_sql_list()
            ))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect())
    }
}

/// The last bytes of a tool's stderr kept for its error message.
const STDERR_KEEP: usize = 64 * 1024;

/// A running client tool whose stderr is read as it comes, so that a chatty tool cannot
/// fill the pipe and stall the restore; its last [`STDERR_KEEP`] bytes go into the error.
pub(crate) struct Tool {
    child: tokio::process::Child,
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
}

impl Tool {
    /// Starts reading `child`'s stderr (when piped) in a task of its own.
    pub(crate) fn watch(mut child: tokio::process::Child) -> Self {
        let stderr = child.stderr.take().map(|mut pipe| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut tail = Vec::new();
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_KEEP {
                        tail.drain(..tail.len() - STDERR_KEEP);
                    }
                }
                let from = tail.len().saturating_sub(STDERR_KEEP);
                tail.split_off(from)
            })
        });
        Tool { child, stderr }
    }

    /// Waits for the tool and turns a failure into an error carrying its stderr.
    ///
    /// # Errors
    /// When the tool cannot be waited for or exits unsuccessfully.
    pub(crate) async fn finish(mut self, what: &str) -> Result<()> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| ShipperError::Restore(format!("{what}: {e}")))?;
        let stderr = match self.stderr.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        if !status.success() {
            return Err(ShipperError::Restore(format!(
                "{what} failed ({status}): {}",
                String::from_utf8_lossy(&stderr).trim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert!("mysql://root:pw@db:3307".parse::<TargetServer>().is_ok());
        assert!("db:3307".parse::<TargetServer>().is_err());
        assert!("postgres://db".parse::<TargetServer>().is_err());
    }

    #[test]
    fn tls_comes_from_the_urls_ssl_parameters_and_reaches_the_client() {
        let t: TargetServer = "mysql://root:pw@db:3307?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ca.pem"
            .parse()
            .unwrap();
        let args: Vec<String> = t
            .client()
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in ["--ssl", "--ssl-verify-server-cert", "--ssl-ca=/etc/ca.pem"] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        for (url, says) in [
            ("mysql://root@db?ssl-mode=verify_ca", "verify_identity"),
            ("mysql://root@db?ssl-mode=required&ssl-ca=/ca.pem", "ssl-ca"),
            ("mysql://root@db?sslmode=required", "unknown parameter"),
            ("mysql://root@db?ssl-mode=verify-full", "ssl-mode"),
        ] {
            let err = url.parse::<TargetServer>().unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("--target"),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn a_percent_encoded_password_is_decoded_and_never_shown() {
        let t: TargetServer = "mysql://o%40p:p%40ss%3Aw%2Fo%25r%23d@db:3307"
            .parse()
            .unwrap();
        assert_eq!(t.password, "p@ss:w/o%r#d");
        assert_eq!(t.user, "o@p");
        assert!(!format!("{t:?}").contains("ss"), "{t:?}");
        let err = "mysql://u:s3cret@"
            .parse::<TargetServer>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
