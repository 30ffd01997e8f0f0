//! Full snapshots from a replica paused on the apply side only.
//!
//! `STOP SLAVE SQL_THREAD` freezes the replica's data at a transaction boundary while its IO
//! thread keeps receiving from the primary, so no primary write is missed. The primary
//! position the replica has applied (`Relay_Master_Log_File`:`Exec_Master_Log_Pos`, plus
//! `gtid_slave_pos`) links the snapshot to the primary's segment chain. The dump
//! (`mariadb-dump --single-transaction`) streams into zstd chunks, each uploaded with its
//! sha256; row counts and `CHECKSUM TABLE` of every table go into the manifest, which is
//! uploaded last. `START SLAVE SQL_THREAD` follows in every case; a marker file in the
//! spool directory names the process that paused the replica, so a snapshot killed outright
//! is resumed by the next start of the agent, and a running one is never disturbed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use logferry_common::format::mysql::sql::{is_system_schema, quote_table, PAUSE_LOCK};
use logferry_common::snapshot::{MysqlSnapshot, SnapshotContent, SnapshotManifest, TableInfo};
use logferry_common::{BinlogPos, Position};
use logferry_config::agent::SNAPSHOT_GRANTS;
use logferry_config::{
    AgentConfig, MysqlSnapshotSection as SnapshotSection, MysqlTls, SourceConfig,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::metrics::now_ms;
use crate::pipeline::ShutdownRx;
use crate::snapshot_upload::{interrupted, SnapshotUpload, DEFAULT_CHUNK_BYTES};
use crate::sources::mysql::accounts::accounts_sql;

/// How much of the dump tool's stderr is kept for the error message (its end, where the
/// reason is).
const STDERR_TAIL_BYTES: usize = 16 * 1024;

/// Server error codes of a missing privilege (database, login, table, column, statement).
const PRIVILEGE_ERRORS: [u16; 5] = [1044, 1045, 1142, 1143, 1227];

/// An error of the snapshot replica, named as such (`source.snapshot.replica_url`, not the
/// binlog source) and, for a missing privilege, with the grants the snapshot user needs.
fn replica_error(addr: &str, e: mysql_async::Error) -> AgentError {
    let hint = match &e {
        mysql_async::Error::Server(s) if PRIVILEGE_ERRORS.contains(&s.code) => {
            format!("; the snapshot user needs: {SNAPSHOT_GRANTS}")
        }
        _ => String::new(),
    };
    let said = e.to_string();
    let tls = if super::tls::is_tls_failure(&said) {
        " (TLS: the replica is reached with [source.tls]; check source.tls.ca is the CA that signed its certificate)"
    } else {
        ""
    };
    AgentError::Snapshot(format!(
        "the snapshot replica {addr} (source.snapshot.replica_url): {said}{hint}{tls}"
    ))
}

/// Marks a replica paused by a snapshot in progress.
pub fn pause_marker(spool_dir: &Path) -> PathBuf {
    spool_dir.join("snapshot-paused")
}

/// The `[source.snapshot]` section of a MySQL source, if it has one.
fn snapshot_section(cfg: &AgentConfig) -> Option<&SnapshotSection> {
    match &cfg.source {
        SourceConfig::Mysql(m) => m.snapshot.as_ref(),
        _ => None,
    }
}

/// The source's `[source.tls]`, which the snapshot replica's connections use too.
fn source_tls(cfg: &AgentConfig) -> Result<&MysqlTls> {
    match &cfg.source {
        SourceConfig::Mysql(m) => Ok(&m.tls),
        _ => Err(AgentError::Snapshot("the source is not MySQL".into())),
    }
}

async fn connect_replica(
    snap: &SnapshotSection,
    tls: &MysqlTls,
    timeout: Duration,
) -> Result<(Conn, Opts, String)> {
    let opts = Opts::from_url(snap.replica_url.expose()).map_err(|e| {
        AgentError::ServerSetup(format!(
            "source.snapshot.replica_url is not a usable MySQL URL: {e}"
        ))
    })?;
    let addr = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let conn = super::tls::connect(&opts, tls, timeout, "the snapshot replica")
        .await
        .ok_or_else(|| {
            AgentError::Snapshot(format!(
                "the snapshot replica {addr} (source.snapshot.replica_url) gave no answer within {} ms (source.connect_timeout_ms)",
                timeout.as_millis()
            ))
        })?
        .map_err(|e| replica_error(&addr, e))?;
    Ok((conn, opts, addr))
}

/// The process that paused the replica, if the marker names one that is still running
/// (another snapshot in progress, which must not be disturbed).
fn live_owner(marker: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(marker).ok()?.trim().parse().ok()?;
    let alive = pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists();
    alive.then_some(pid)
}

fn remove_marker(marker: &Path) -> Result<()> {
    match std::fs::remove_file(marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::spool(marker, e)),
        _ => Ok(()),
    }
}

/// Restarts the SQL thread of a replica left paused by a snapshot whose process died;
/// leaves a snapshot that is still running alone.
///
/// # Errors
/// When the replica cannot be reached or refuses; the marker stays for the next try.
pub async fn resume_if_left_paused(cfg: &AgentConfig) -> Result<()> {
    let marker = pause_marker(&cfg.agent.spool_dir);
    let Some(snap) = snapshot_section(cfg) else {
        return Ok(());
    };
    if !marker.exists() || live_owner(&marker).is_some() {
        return Ok(());
    }
    warn!(
        "a previous snapshot was interrupted while the replica was paused; resuming its SQL thread"
    );
    let (mut conn, _, addr) =
        connect_replica(snap, source_tls(cfg)?, cfg.source.connect_timeout()).await?;
    conn.query_drop("START SLAVE SQL_THREAD")
        .await
        .map_err(|e| replica_error(&addr, e))?;
    remove_marker(&marker)
}

/// Takes one snapshot and uploads it; the replica is resumed whatever happens.
///
/// # Errors
/// [`AgentError::Snapshot`] and the errors of connecting and uploading.
pub async fn take(
    cfg: &AgentConfig,
    client: &ShipperClient,
    shutdown: ShutdownRx,
) -> Result<SnapshotManifest> {
    let snap = snapshot_section(cfg).ok_or_else(|| {
        AgentError::Snapshot("no [source.snapshot] section in the config; add replica_url".into())
    })?;
    resume_if_left_paused(cfg).await?;
    let marker = pause_marker(&cfg.agent.spool_dir);
    if let Some(pid) = live_owner(&marker) {
        return Err(AgentError::Snapshot(format!(
            "another snapshot (process {pid}) is in progress"
        )));
    }
    let (mut conn, opts, addr) =
        connect_replica(snap, source_tls(cfg)?, cfg.source.connect_timeout()).await?;
    let status: Option<Row> = conn
        .query_first("SHOW SLAVE STATUS")
        .await
        .map_err(|e| replica_error(&addr, e))?;
    if status.is_none() {
        return Err(AgentError::Snapshot(format!(
            "{addr} is not a replica (SHOW SLAVE STATUS is empty); source.snapshot.replica_url must name a replica of the source"
        )));
    }
    // Held by this session until it ends: a restore drill pausing the same replica takes
    // it too, so neither restarts the SQL thread under the other.
    let locked: Option<i64> = conn
        .query_first(format!("SELECT GET_LOCK('{PAUSE_LOCK}', 0)"))
        .await
        .map_err(|e| replica_error(&addr, e))?;
    if locked != Some(1) {
        return Err(AgentError::Snapshot(format!(
            "the snapshot replica {addr} (source.snapshot.replica_url) is being paused by someone else (a restore drill holds the lock {PAUSE_LOCK}); the next scheduled snapshot tries again"
        )));
    }
    std::fs::create_dir_all(&cfg.agent.spool_dir)
        .map_err(|e| AgentError::spool(&cfg.agent.spool_dir, e))?;
    std::fs::write(&marker, std::process::id().to_string())
        .map_err(|e| AgentError::spool(&marker, e))?;
    conn.query_drop("STOP SLAVE SQL_THREAD")
        .await
        .map_err(|e| replica_error(&addr, e))?;
    info!(replica = %addr, "replica SQL thread stopped for the snapshot; its IO thread keeps receiving");
    let result = dump_paused(cfg, snap, client, &mut conn, &opts, &addr, shutdown).await;
    let resumed = conn.query_drop("START SLAVE SQL_THREAD").await;
    // The session ends with this function anyway; released at once all the same.
    let _ = conn
        .query_drop(format!("DO RELEASE_LOCK('{PAUSE_LOCK}')"))
        .await;
    match resumed {
        Ok(()) => {
            info!(replica = %addr, "replica SQL thread started again");
            remove_marker(&marker)?;
        }
        Err(e) => {
            warn!(replica = %addr, error = %e, "could not restart the replica's SQL thread; the next agent start retries")
        }
    }
    result
}

async fn dump_paused(
    cfg: &AgentConfig,
    snap: &SnapshotSection,
    client: &ShipperClient,
    conn: &mut Conn,
    opts: &Opts,
    addr: &str,
    mut shutdown: ShutdownRx,
) -> Result<SnapshotManifest> {
    let position = applied_position(conn, addr).await?;
    let taken_at_ms = now_ms();
    let stream = &cfg.agent.stream;
    let schemas = user_schemas(conn, addr).await?;
    let tables = table_stats(conn, addr, &schemas).await?;

    let dump_tool = tool_version(&snap.dump_command).await;
    let chunk_bytes = usize::try_from(snap.chunk_bytes).unwrap_or(DEFAULT_CHUNK_BYTES);
    let mut upload =
        SnapshotUpload::new(client, stream, taken_at_ms, chunk_bytes, shutdown.clone());
    info!(id = %upload.id(), position = %position, schemas = schemas.len(), tables = tables.len(), "dumping");
    let mut feed = Feed {
        started: tokio::time::Instant::now(),
        dumped: 0,
    };
    if !schemas.is_empty() {
        // Oracle's mysqldump says "mysqldump  Ver 8.0.36 for Linux", MariaDB's names itself;
        // a tool that said nothing (its name stands in) gets MariaDB's flags.
        let oracle = dump_tool.contains(" Ver ") && !dump_tool.contains("MariaDB");
        let mut args = source_tls(cfg)?.client_args(oracle);
        args.extend(
            [
                "--single-transaction",
                "--routines",
                "--events",
                "--triggers",
                "--hex-blob",
                "--skip-dump-date",
                "--databases",
            ]
            .map(String::from),
        );
        args.extend(schemas.iter().cloned());
        dump(snap, opts, &args, &mut upload, &mut feed, &mut shutdown).await?;
    }
    // Accounts and grants after the data: a table-level grant needs its table.
    let mut accounts_left_out = Vec::new();
    if snap.include_users {
        let accounts = accounts_sql(conn, |e| replica_error(addr, e)).await?;
        upload.push(accounts.sql.as_bytes()).await?;
        info!(
            accounts = accounts.count,
            left_out = accounts.left_out.len(),
            "accounts and grants added to the snapshot"
        );
        accounts_left_out = accounts.left_out;
    }
    let content = SnapshotContent::Mysql(MysqlSnapshot {
        replica: addr.to_owned(),
        dump_tool,
        tables,
        users: snap.include_users,
        accounts_left_out,
    });
    upload.finish(&Position::Mysql(position), content).await
}

/// How much the dumps of one snapshot have produced, for the throttle.
struct Feed {
    started: tokio::time::Instant,
    dumped: u64,
}

/// Runs the dump tool with `args` against the replica and pushes its output into `upload`,
/// throttled to `max_bytes_per_sec` over the whole snapshot; the tool is killed on
/// shutdown.
async fn dump(
    snap: &SnapshotSection,
    opts: &Opts,
    args: &[String],
    upload: &mut SnapshotUpload,
    feed: &mut Feed,
    shutdown: &mut ShutdownRx,
) -> Result<()> {
    let mut cmd = tokio::process::Command::new(&snap.dump_command);
    cmd.arg(format!("--host={}", opts.ip_or_hostname()))
        .arg(format!("--port={}", opts.tcp_port()))
        .arg(format!("--user={}", opts.user().unwrap_or("root")))
        .args(args)
        .env("MYSQL_PWD", opts.pass().unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        AgentError::Snapshot(format!(
            "cannot run {} (source.snapshot.dump_command): {e}",
            snap.dump_command
        ))
    })?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| AgentError::Snapshot("dump has no stdout".into()))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| AgentError::Snapshot("dump has no stderr".into()))?;
    let errors = tokio::spawn(stderr_tail(stderr));
    let mut piece = vec![0u8; logferry_common::snapshot::DUMP_READ_BYTES];
    loop {
        let n = tokio::select! {
            r = stdout.read(&mut piece) => r.map_err(|e| AgentError::Snapshot(format!("reading the dump: {e}")))?,
            _ = shutdown.changed() => {
                let _ = child.kill().await;
                return Err(interrupted());
            }
        };
        if n == 0 {
            break;
        }
        feed.dumped += n as u64;
        if let Some(rate) = snap.max_bytes_per_sec {
            let due = feed.started + Duration::from_secs_f64(feed.dumped as f64 / rate as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = shutdown.changed() => {
                    let _ = child.kill().await;
                    return Err(interrupted());
                }
            }
        }
        upload.push(&piece[..n]).await?;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| AgentError::Snapshot(format!("waiting for the dump: {e}")))?;
    if !status.success() {
        let text = errors.await.unwrap_or_default();
        let denied = [
            "Access denied",
            "command denied",
            "Got error: 1044",
            "Got error: 1142",
        ]
        .iter()
        .any(|m| text.contains(m));
        let hint = if denied {
            format!("; the snapshot user (source.snapshot.replica_url) needs: {SNAPSHOT_GRANTS}")
        } else {
            String::new()
        };
        return Err(AgentError::Snapshot(format!(
            "{} exited with {status}: {}{hint}",
            snap.dump_command,
            text.trim()
        )));
    }
    Ok(())
}

async fn applied_position(conn: &mut Conn, addr: &str) -> Result<BinlogPos> {
    let row: Option<Row> = conn
        .query_first("SHOW SLAVE STATUS")
        .await
        .map_err(|e| replica_error(addr, e))?;
    let row = row.ok_or_else(|| AgentError::Snapshot("SHOW SLAVE STATUS became empty".into()))?;
    let file: Option<String> = row.get_opt("Relay_Master_Log_File").and_then(Result::ok);
    let pos: Option<u64> = row.get_opt("Exec_Master_Log_Pos").and_then(Result::ok);
    let (Some(file), Some(offset)) = (file.filter(|f| !f.is_empty()), pos) else {
        return Err(AgentError::Snapshot(
            "the replica reports no applied primary position yet".into(),
        ));
    };
    let gtid: Option<Option<String>> = conn
        .query_first("SELECT @@gtid_slave_pos")
        .await
        .map_err(|e| replica_error(addr, e))?;
    let at = BinlogPos::new(file, offset)
        .map_err(|e| AgentError::Snapshot(format!("the replica's Relay_Master_Log_File: {e}")))?;
    Ok(at.with_gtid(gtid.flatten().filter(|g| !g.is_empty())))
}

async fn user_schemas(conn: &mut Conn, addr: &str) -> Result<Vec<String>> {
    let all: Vec<String> = conn
        .query("SHOW DATABASES")
        .await
        .map_err(|e| replica_error(addr, e))?;
    Ok(all.into_iter().filter(|s| !is_system_schema(s)).collect())
}

async fn table_stats(conn: &mut Conn, addr: &str, schemas: &[String]) -> Result<Vec<TableInfo>> {
    let mut out = Vec::new();
    for schema in schemas {
        let names: Vec<String> = conn
            .exec(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE' ORDER BY table_name",
                (schema,),
            )
            .await
            .map_err(|e| replica_error(addr, e))?;
        for table in names {
            let q = quote_table(schema, &table);
            let rows: Option<u64> = conn
                .query_first(format!("SELECT COUNT(*) FROM {q}"))
                .await
                .map_err(|e| replica_error(addr, e))?;
            let sum: Option<(String, Option<u64>)> = conn
                .query_first(format!("CHECKSUM TABLE {q}"))
                .await
                .map_err(|e| replica_error(addr, e))?;
            out.push(TableInfo {
                name: format!("{schema}.{table}"),
                rows: rows.unwrap_or(0),
                checksum: sum.and_then(|(_, c)| c),
            });
        }
    }
    Ok(out)
}

/// The last [`STDERR_TAIL_BYTES`] of a child's stderr, read to its end (so the child never
/// blocks on a full pipe) in a fixed buffer.
async fn stderr_tail(mut stderr: tokio::process::ChildStderr) -> String {
    let mut tail: Vec<u8> = Vec::with_capacity(STDERR_TAIL_BYTES);
    let mut piece = [0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut piece).await {
        tail.extend_from_slice(&piece[..n]);
        if tail.len() > STDERR_TAIL_BYTES {
            tail.drain(..tail.len() - STDERR_TAIL_BYTES);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

async fn tool_version(cmd: &str) -> String {
    match tokio::process::Command::new(cmd)
        .arg("--version")
        .output()
        .await
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or(cmd)
            .trim()
            .to_owned(),
        Err(_) => cmd.to_owned(),
    }
}

/// How far the snapshot replica is behind its primary, for the reports: its
/// `Seconds_Behind_Master`, and while its SQL thread is stopped by someone other than a
/// snapshot (when the server says NULL) the time since it was first seen stopped, added to
/// the last lag it reported. Nothing while a snapshot holds it paused: that lag is planned.
pub struct ReplicaLag {
    cfg: AgentConfig,
    conn: Option<Conn>,
    stopped_since: Option<std::time::Instant>,
    last_lag: f64,
}

impl ReplicaLag {
    /// The probe of the agent's snapshot replica; `None` when the source has none.
    pub fn for_config(cfg: &AgentConfig) -> Option<Self> {
        snapshot_section(cfg)?;
        Some(ReplicaLag {
            cfg: cfg.clone(),
            conn: None,
            stopped_since: None,
            last_lag: 0.0,
        })
    }

    /// The replica's lag now, in seconds; `None` while a snapshot pauses it or when it
    /// cannot be asked (the error is logged at debug: the reports go on).
    pub async fn seconds(&mut self) -> Option<f64> {
        let marker = pause_marker(&self.cfg.agent.spool_dir);
        let owner = tokio::fs::read_to_string(&marker)
            .await
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let ours = match owner {
            Some(pid) => tokio::fs::try_exists(format!("/proc/{pid}"))
                .await
                .unwrap_or(false),
            None => false,
        };
        if ours {
            self.stopped_since = None;
            return None;
        }
        match self.ask().await {
            Ok(Some(lag)) => {
                self.stopped_since = None;
                self.last_lag = lag;
                Some(lag)
            }
            Ok(None) => {
                let since = *self
                    .stopped_since
                    .get_or_insert_with(std::time::Instant::now);
                Some(self.last_lag + since.elapsed().as_secs_f64())
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the snapshot replica's lag");
                self.conn = None;
                None
            }
        }
    }

    /// `Seconds_Behind_Master`: `Some` while the replica applies, `None` when stopped.
    async fn ask(&mut self) -> Result<Option<f64>> {
        let snap = snapshot_section(&self.cfg)
            .ok_or_else(|| AgentError::Snapshot("no [source.snapshot] section".into()))?;
        if self.conn.is_none() {
            let (conn, _, _) = connect_replica(
                snap,
                source_tls(&self.cfg)?,
                self.cfg.source.connect_timeout(),
            )
            .await?;
            self.conn = Some(conn);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| AgentError::Snapshot("no replica connection".into()))?;
        let row: Option<Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .map_err(|e| AgentError::Snapshot(e.to_string()))?;
        let row = row.ok_or_else(|| AgentError::Snapshot("SHOW SLAVE STATUS is empty".into()))?;
        let lag: Option<Option<u64>> = row.get_opt("Seconds_Behind_Master").and_then(Result::ok);
        Ok(lag.flatten().map(|s| s as f64))
    }
}
