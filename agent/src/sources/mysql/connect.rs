//! Connecting as a replica: preflight checks with operator-facing errors, then the dump.

use std::time::Duration;

use logferry_common::BinlogPos;
use logferry_config::{MysqlSource as MysqlConfig, ResumeMode, StartFrom};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, GnoInterval, Opts, Row, Sid};
use tracing::{debug, info, warn};

use std::future::Future;

use logferry_common::format::mysql::{GtidSet, ServerGtids};
use logferry_common::wire::ChainMarks;
use logferry_common::TrxMark;

use super::{server_pos, Dump, MysqlSource};
use crate::error::{AgentError, Result};
use crate::resume::ResumePoint;

/// MySQL error code: access denied for user (bad password).
const ER_ACCESS_DENIED: u16 = 1045;
/// MySQL error code: missing privilege for the statement.
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
/// MySQL error code: the server cannot send the binlog asked for (purged, or a GTID it
/// does not hold).
const ER_MASTER_FATAL_READING_BINLOG: u16 = 1236;

/// How many stored segment ends a fork's point is looked for among (each costs a short
/// dump of one transaction).
const FORK_CANDIDATES: usize = 16;

/// Connects to the server in `cfg`, checks that its binlog can be tailed, and starts the
/// dump right after `resume` (or where `cfg.start` says for a new stream).
///
/// On the server the chain's last segment came from, it resumes by file and offset (or by
/// GTID where `cfg.resume` says). On another server (a promoted standby, the same address
/// now answered by another server) it never uses file and offset: it checks that the
/// server holds every stored transaction, asks it by GTID for the chain's last one again
/// and compares its fingerprint (see [`MysqlSource`]), and continues as a new leg. When the
/// server is a standby that replicated the stream's server but missed its last stored
/// transactions (a fork), the newest stored segment end it holds (from `marks`, asked for
/// only then) is where its history continues: the new leg records that fork point.
///
/// # Errors
/// [`AgentError::Unreachable`] (retryable), [`AgentError::AccessDenied`],
/// [`AgentError::ServerSetup`] with the fix, [`AgentError::Gap`] when `resume` is no longer
/// on the server, [`AgentError::NotSuccessor`] when another server does not hold what is
/// stored.
pub async fn connect(
    cfg: &MysqlConfig,
    resume: Option<&ResumePoint>,
    marks: impl Future<Output = Result<ChainMarks>>,
) -> Result<MysqlSource> {
    let mut open = Open::new(cfg).await?;
    let mariadb = open.server.mariadb;
    let r = match resume {
        Some(r) if !r.origin.is_empty() && r.origin != open.server.origin => r,
        _ => return same_server(cfg, open, resume).await,
    };
    let refused = match successor_plan(&mut open.conn, &open.server, r, None).await {
        Ok(plan) => match follow(cfg, open, plan).await {
            Ok(src) => return Ok(src),
            Err(e) => e,
        },
        Err(e) => e,
    };
    if !matches!(refused, AgentError::NotSuccessor { .. }) {
        return Err(refused);
    }
    let replicated = {
        let mut open = Open::new(cfg).await?;
        replicated(&mut open.conn, mariadb).await?
    };
    if replicated.is_empty() {
        return Err(refused);
    }
    let chain_end = r.end.as_mysql()?.clone();
    let marks = marks.await?;
    let candidates = marks
        .marks
        .iter()
        .filter_map(|m| {
            let end = BinlogPos::parse(&m.end).ok()?;
            let state = ServerGtids::parse(end.gtid.as_deref()?, mariadb).ok()?;
            let trx = TrxMark::try_from(&m.last_trx).ok()?;
            // The mark's transaction must be the last before its end (a segment without a
            // whole transaction carries an older one), and a fork point lies before the
            // chain's end.
            let after = ServerGtids::parse(&trx.before, mariadb)
                .ok()?
                .with_trx(&trx.id)
                .ok()?;
            let usable = after == state
                && end.cmp_place(&chain_end).is_lt()
                && state.missing_from(&replicated).is_empty();
            usable.then_some((end, trx))
        })
        .take(FORK_CANDIDATES);
    for (at, trx) in candidates {
        let mut open = Open::new(cfg).await?;
        let plan = successor_plan(&mut open.conn, &open.server, r, Some((at.clone(), trx))).await?;
        match follow(cfg, open, plan).await {
            Ok(src) => {
                warn!(fork_at = %at, stored_end = %r.end, stored_server = %r.origin, "a fork: this server replicated the stream's server up to {at} and went its own way; the stored transactions after it are on the old server's branch only (export --branch names them); the stream continues on this server");
                return Ok(src);
            }
            Err(AgentError::NotSuccessor { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(refused)
}

/// A checked connection to the configured server.
struct Open {
    conn: Conn,
    addr: String,
    server: ServerInfo,
    files: Vec<String>,
}

impl Open {
    /// Connects and runs the preflight checks.
    async fn new(cfg: &MysqlConfig) -> Result<Self> {
        let opts = Opts::from_url(cfg.url.expose()).map_err(|e| {
            AgentError::ServerSetup(format!("source.url is not a usable MySQL URL: {e}"))
        })?;
        let addr = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
        let timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let mut conn = super::tls::connect(&opts, &cfg.tls, timeout, "the source")
            .await
            .ok_or_else(|| AgentError::Unreachable {
                addr: addr.clone(),
                reason: format!("no answer within {} ms", cfg.connect_timeout_ms),
            })?
            .map_err(|e| connect_error(&addr, e))?;
        let server = preflight(&mut conn, &addr).await?;
        let files = binary_logs(&mut conn, &addr).await?;
        Ok(Open {
            conn,
            addr,
            server,
            files,
        })
    }
}

/// Where and how a dump starts.
struct DumpFrom {
    start: BinlogPos,
    by_gtid: bool,
    leg: u32,
    gtid: ServerGtids,
    gtid_known: bool,
    /// Whether `start` is where the first stored event begins (else the server names it).
    cursor_known: bool,
}

/// The dump on the server the chain's last segment came from (or for a new stream).
async fn same_server(
    cfg: &MysqlConfig,
    mut open: Open,
    resume: Option<&ResumePoint>,
) -> Result<MysqlSource> {
    let (server, files) = (&open.server, &open.files);
    let mut gtid = ServerGtids::empty(server.mariadb);
    let mut gtid_known = false;
    let mut leg = 0;
    let (start, by_gtid) = match resume {
        Some(r) => {
            let pos = r.connect_at().as_mysql()?;
            leg = pos.leg();
            let on_server = files.iter().any(|f| f == pos.file());
            let want_gtid = match cfg.resume {
                ResumeMode::Gtid => true,
                ResumeMode::File => false,
                ResumeMode::Auto => !on_server,
            };
            if let Some(g) = &pos.gtid {
                gtid = ServerGtids::parse(g, server.mariadb)
                    .map_err(|e| AgentError::ServerSetup(format!("resuming at {pos}: {e}")))?;
                gtid_known = true;
            }
            if want_gtid && pos.gtid.is_none() {
                return Err(AgentError::Gap(format!(
                    "cannot resume at {pos} by GTID (the server is {}; the position carries no GTID state{}); \
                     take a new snapshot and start the stream again",
                    server.version,
                    if server.mariadb { "" } else { ": gtid_mode was not ON when it was read" },
                )));
            }
            if want_gtid && !server.mariadb && server_gtids(&mut open.conn, false).await?.is_none()
            {
                return Err(AgentError::ServerSetup(format!(
                    "resuming at {pos} by GTID needs gtid_mode=ON on {}: turn it on, or resume by file (source.resume = \"file\") while the file is still on the server",
                    server.origin
                )));
            }
            if !want_gtid && !on_server {
                return Err(AgentError::Gap(format!(
                    "binlog file {} was purged from the server (it has {}..{}); \
                     events after {pos} are lost to the stream: take a new snapshot",
                    pos.file(),
                    files.first().map(String::as_str).unwrap_or("none"),
                    files.last().map(String::as_str).unwrap_or("none"),
                )));
            }
            (pos.clone(), want_gtid)
        }
        None => match cfg.start {
            StartFrom::Earliest => {
                let first = files.first().ok_or_else(|| {
                    AgentError::ServerSetup("the server lists no binary logs".into())
                })?;
                (
                    server_pos(first.clone(), BinlogPos::FIRST_EVENT_OFFSET)?,
                    false,
                )
            }
            StartFrom::Current => {
                let mariadb = server.mariadb;
                let (pos, state) = current_position(&mut open.conn, &open.addr, mariadb).await?;
                if let Some(s) = state {
                    gtid = ServerGtids::parse(&s, mariadb).map_err(|e| {
                        AgentError::Protocol(format!("the server's GTID state: {e}"))
                    })?;
                    gtid_known = true;
                }
                (pos, false)
            }
        },
    };
    let cursor_known = by_gtid || resume.is_some() || cfg.start == StartFrom::Current;
    let from = DumpFrom {
        start,
        by_gtid,
        leg,
        gtid,
        gtid_known,
        cursor_known,
    };
    dump(cfg, open, from, None).await
}

/// The dump on another server, checked before it is handed on: its first transaction must
/// be the one the plan names, with the same fingerprint.
async fn follow(cfg: &MysqlConfig, open: Open, plan: Successor) -> Result<MysqlSource> {
    let gtid = ServerGtids::parse(&plan.connect_state, open.server.mariadb)
        .map_err(|e| AgentError::Protocol(e.to_string()))?;
    let leg = plan.continues.leg() + 1;
    info!(addr = %open.addr, server = %open.server.origin, stored = %plan.stored_origin, continues = %plan.continues, forks_at = ?plan.forks_at.as_ref().map(ToString::to_string), check = ?plan.check.as_ref().map(|t| &t.id), "another server than the chain's last: continuing by GTID as leg {leg}");
    let from = DumpFrom {
        start: plan
            .continues
            .clone()
            .with_gtid(Some(plan.connect_state.clone())),
        by_gtid: true,
        leg,
        gtid,
        gtid_known: true,
        cursor_known: false,
    };
    let checked = plan.check.is_some();
    let mut src = dump(cfg, open, from, Some(plan)).await?;
    if checked {
        src.check_successor().await?;
    }
    Ok(src)
}

/// Starts the dump `from` on `open`'s connection.
async fn dump(
    cfg: &MysqlConfig,
    open: Open,
    from: DumpFrom,
    successor: Option<Successor>,
) -> Result<MysqlSource> {
    let Open {
        mut conn,
        addr,
        server,
        files,
    } = open;
    let DumpFrom {
        start,
        by_gtid,
        leg,
        gtid,
        gtid_known,
        cursor_known,
    } = from;
    let heartbeat_ns = cfg.heartbeat_ms.saturating_mul(1_000_000);
    let mut setup = vec![
        "SET @mariadb_slave_capability=4".to_owned(),
        format!("SET @master_heartbeat_period={heartbeat_ns}"),
    ];
    if by_gtid && server.mariadb {
        setup.push(format!(
            "SET @slave_connect_state='{}'",
            start.gtid.as_deref().unwrap_or_default()
        ));
        setup.push("SET @slave_gtid_strict_mode=0".into());
        setup.push("SET @slave_gtid_ignore_duplicates=0".into());
    }
    for q in &setup {
        conn.query_drop(q)
            .await
            .map_err(|e| connect_error(&addr, e))?;
    }
    let catch_up_to = binlog_end(&mut conn, &addr).await?.map(|p| p.on_leg(leg));
    info!(%addr, version = %server.version, server = %server.origin, at = %start, by_gtid, head = ?catch_up_to.as_ref().map(ToString::to_string), "starting binlog dump");
    let (file, pos) = if by_gtid {
        (Vec::new(), BinlogPos::FIRST_EVENT_OFFSET)
    } else {
        (start.file().as_bytes().to_vec(), start.offset)
    };
    let request = match (&gtid, by_gtid) {
        // MySQL auto-positioning: the server sends every transaction not in the set.
        (ServerGtids::Mysql(set), true) => BinlogStreamRequest::new(cfg.server_id)
            .with_gtid()
            .with_gtid_set(dump_sids(set)),
        _ => BinlogStreamRequest::new(cfg.server_id)
            .with_filename(&file)
            .with_pos(pos),
    };
    let stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| match &successor {
            Some(plan) => plan.refused(&addr, &server.origin, e),
            None => stream_error(&addr, e),
        })?;
    let cursor = (successor.is_none() && cursor_known).then_some(start);
    Ok(MysqlSource::new(Dump {
        stream,
        addr,
        origin: server.origin,
        mariadb: server.mariadb,
        leg,
        cursor,
        gtid,
        gtid_known,
        known_files: files,
        catch_up_to,
        successor,
    }))
}

/// A MySQL GTID set as `COM_BINLOG_DUMP_GTID` carries it: per server UUID its ranges, each
/// with an exclusive end.
fn dump_sids(set: &GtidSet) -> Vec<Sid<'static>> {
    set.wire_ranges()
        .map(|(uuid, ranges)| {
            ranges.into_iter().fold(Sid::new(uuid), |sid, (a, b)| {
                sid.with_interval(GnoInterval::new(a, b))
            })
        })
        .collect()
}

/// How a source continues the stream on another server.
pub(super) struct Successor {
    /// The chain's end on the previous leg: where the new leg's first segment starts.
    pub continues: BinlogPos,
    /// After a fork, where on the previous leg the server's history goes on.
    pub forks_at: Option<BinlogPos>,
    /// The GTID state the dump is asked to start after.
    pub connect_state: String,
    /// The transaction the server must send first, with the same fingerprint: the chain's
    /// last (the fork point's, after a fork); `None` when the chain has none to check.
    pub check: Option<TrxMark>,
    /// The server the chain's last segment came from.
    pub stored_origin: String,
}

impl Successor {
    /// The error of a dump that another server refused while it was being checked: the
    /// server does not hold the GTID it was asked to start after (its binlog went another
    /// way: another database, or a standby that missed transactions and wrote its own
    /// under the same sequence numbers).
    pub fn refused(&self, addr: &str, server: &str, e: mysql_async::Error) -> AgentError {
        match e {
            mysql_async::Error::Server(s) if s.code == ER_MASTER_FATAL_READING_BINLOG => {
                AgentError::NotSuccessor {
                    server: server.to_owned(),
                    stored: self.stored_origin.clone(),
                    reason: format!(
                        "asked to send what follows GTID state {:?}, it answered: {}",
                        self.connect_state, s.message
                    ),
                }
            }
            other => stream_error(addr, other),
        }
    }
}

/// Checks what can be checked before the dump and says where it starts: continuing at the
/// chain's end (the server must hold every stored transaction), or, with `fork`, at that
/// earlier segment end, checked by its last transaction.
async fn successor_plan(
    conn: &mut Conn,
    server: &ServerInfo,
    r: &ResumePoint,
    fork: Option<(BinlogPos, TrxMark)>,
) -> Result<Successor> {
    let not = |reason: String| AgentError::NotSuccessor {
        server: server.origin.clone(),
        stored: r.origin.clone(),
        reason,
    };
    let end = r.end.as_mysql()?;
    if let Some((at, trx)) = fork {
        return Ok(Successor {
            continues: end.clone(),
            forks_at: Some(at),
            connect_state: trx.before.clone(),
            check: Some(trx),
            stored_origin: r.origin.clone(),
        });
    }
    if let Some(t) = &r.open_trx {
        return Err(not(format!(
            "the chain ends inside a transaction (begun at {t}) that only the stream's server is known to hold whole"
        )));
    }
    let Some(stored_state) = end.gtid.clone() else {
        return Err(not(format!(
            "the chain's end {end} carries no GTID state, so no other server can be checked against it"
        )));
    };
    let Some(held) = server_gtids(conn, server.mariadb).await? else {
        return Err(AgentError::ServerSetup(format!(
            "the server {} does not have gtid_mode=ON: a stream continues on another server only by GTID; \
             turn on gtid_mode and enforce_gtid_consistency (in steps, as MySQL documents) on both servers",
            server.origin
        )));
    };
    let stored =
        ServerGtids::parse(&stored_state, server.mariadb).map_err(|e| not(e.to_string()))?;
    let has = ServerGtids::parse(&held, server.mariadb)
        .map_err(|e| AgentError::Protocol(format!("the server's GTID state: {e}")))?;
    let missing = stored.missing_from(&has);
    if !missing.is_empty() {
        return Err(not(format!(
            "it holds GTID state {} and lacks stored transactions: {}",
            has.render(),
            missing.join(", ")
        )));
    }
    let (connect_state, check) = match &r.last_trx {
        Some(t) => (t.before.clone(), Some(t.clone())),
        None => (stored_state, None),
    };
    Ok(Successor {
        continues: end.clone(),
        forks_at: None,
        connect_state,
        check,
        stored_origin: r.origin.clone(),
    })
}

/// What the server got from elsewhere, where a fork point is looked for: MariaDB's
/// `@@gtid_slave_pos` (empty on a server that never replicated); on MySQL everything it
/// executed (a server that never replicated the stream's server holds none of its
/// server's GTIDs, so no mark matches).
async fn replicated(conn: &mut Conn, mariadb: bool) -> Result<ServerGtids> {
    let text = if mariadb {
        let v: Option<Option<String>> = conn
            .query_first("SELECT @@gtid_slave_pos")
            .await
            .map_err(|e| AgentError::Protocol(format!("reading gtid_slave_pos failed: {e}")))?;
        v.flatten()
    } else {
        server_gtids(conn, false).await?
    };
    ServerGtids::parse(&text.unwrap_or_default(), mariadb)
        .map_err(|e| AgentError::Protocol(format!("the server's replicated GTIDs: {e}")))
}

/// `@@log_bin, @@binlog_format, VERSION()`.
type ServerVars = (Option<i64>, Option<String>, String);

/// `@@server_id, @@hostname, @@port`.
type ServerIdentity = (u32, Option<String>, u16);

struct ServerInfo {
    version: String,
    mariadb: bool,
    /// Which server this is, as segments record it: `server_id`, `server_uuid` (MySQL),
    /// host name and port.
    origin: String,
}

async fn preflight(conn: &mut Conn, addr: &str) -> Result<ServerInfo> {
    let row: Option<ServerVars> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, VERSION()")
        .await
        .map_err(|e| connect_error(addr, e))?;
    let (log_bin, format, version) =
        row.ok_or_else(|| AgentError::Protocol("server variables query returned nothing".into()))?;
    if log_bin != Some(1) {
        return Err(AgentError::ServerSetup(format!(
            "binary logging is off on {addr} (log_bin=0). Enable it: start the server with \
             --log-bin=mysql-bin --binlog-format=ROW --server-id=N (or set log_bin, \
             binlog_format=ROW and server_id in the [mysqld] section of my.cnf) and restart it"
        )));
    }
    let format = format.unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(AgentError::ServerSetup(format!(
            "binlog_format is {format} on {addr}; logferry needs ROW: \
             SET GLOBAL binlog_format='ROW' and put binlog_format=ROW in my.cnf"
        )));
    }
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    if mariadb {
        let compress: Option<Option<i64>> = conn
            .query_first("SELECT @@log_bin_compress")
            .await
            .map_err(|e| connect_error(addr, e))?;
        if compress.flatten() == Some(1) {
            return Err(AgentError::ServerSetup(format!(
                "log_bin_compress is ON on {addr}; compressed binlog events are not supported \
                 yet: SET GLOBAL log_bin_compress=OFF"
            )));
        }
    }
    let (server_id, host, port): ServerIdentity = conn
        .query_first("SELECT @@server_id, @@hostname, @@port")
        .await
        .map_err(|e| connect_error(addr, e))?
        .ok_or_else(|| AgentError::Protocol("the server identity query returned nothing".into()))?;
    let uuid = if mariadb {
        None
    } else {
        conn.query_first::<Option<String>, _>("SELECT @@server_uuid")
            .await
            .map_err(|e| connect_error(addr, e))?
            .flatten()
    };
    let host = host.unwrap_or_default();
    let origin = match uuid {
        Some(u) => format!("server_id={server_id} uuid={u} host={host}:{port}"),
        None => format!("server_id={server_id} host={host}:{port}"),
    };
    Ok(ServerInfo {
        version,
        mariadb,
        origin,
    })
}

async fn binary_logs(conn: &mut Conn, addr: &str) -> Result<Vec<String>> {
    let rows: Vec<Row> = conn.query("SHOW BINARY LOGS").await.map_err(|e| match e {
        mysql_async::Error::Server(ref s) if s.code == ER_SPECIFIC_ACCESS_DENIED => {
            AgentError::ServerSetup(format!(
                "the source user lacks a privilege on {addr} ({}); grant it with: \
                 GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'user'@'host' \
                 (MySQL: REPLICATION SLAVE, REPLICATION CLIENT)",
                s.message
            ))
        }
        other => connect_error(addr, other),
    })?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get::<String, _>(0))
        .collect())
}

async fn current_position(
    conn: &mut Conn,
    addr: &str,
    mariadb: bool,
) -> Result<(BinlogPos, Option<String>)> {
    for _ in 0..10 {
        let before = server_gtids(conn, mariadb).await?;
        let pos = binlog_end(conn, addr).await?.ok_or_else(|| {
            AgentError::ServerSetup(
                "the server does not tell its binlog position (SHOW MASTER STATUS / SHOW BINARY \
                 LOG STATUS are empty or refused): is binary logging on? Or use start = \"earliest\""
                    .into(),
            )
        })?;
        let after = server_gtids(conn, mariadb).await?;
        if before == after {
            return Ok((pos, after));
        }
    }
    Err(AgentError::Protocol(
        "could not read a consistent current position (the server is too busy); use start = \"earliest\"".into(),
    ))
}

/// The end of the server's binlog now, without GTID state: `SHOW MASTER STATUS` (MariaDB,
/// MySQL up to 8.3) or `SHOW BINARY LOG STATUS` (MySQL 8.2 and later). `None` when the
/// server answers neither (the caller then does without).
async fn binlog_end(conn: &mut Conn, addr: &str) -> Result<Option<BinlogPos>> {
    for statement in ["SHOW MASTER STATUS", "SHOW BINARY LOG STATUS"] {
        match conn.query_first::<Row, _>(statement).await {
            Ok(row) => {
                let Some((file, pos)) = row.and_then(|r| Some((r.get(0)?, r.get(1)?))) else {
                    return Ok(None);
                };
                return server_pos(file, pos).map(Some);
            }
            Err(mysql_async::Error::Server(e)) => {
                debug!(statement, error = %e.message, "the server does not give its binlog end this way");
            }
            Err(e) => return Err(connect_error(addr, e)),
        }
    }
    Ok(None)
}

/// What the server holds by GTID, as text: MariaDB's `@@gtid_binlog_pos`; MySQL's
/// `@@GLOBAL.gtid_executed`, `None` when `gtid_mode` is not `ON` (its transactions are
/// anonymous).
async fn server_gtids(conn: &mut Conn, mariadb: bool) -> Result<Option<String>> {
    let query = if mariadb {
        "SELECT @@gtid_binlog_pos"
    } else {
        "SELECT IF(@@GLOBAL.gtid_mode = 'ON', @@GLOBAL.gtid_executed, NULL)"
    };
    let v: Option<Option<String>> = conn.query_first(query).await.map_err(|e| {
        AgentError::Protocol(format!("reading the server's GTID state failed: {e}"))
    })?;
    Ok(v.flatten())
}

/// Classifies an error of connecting or of a setup query.
pub(crate) fn connect_error(addr: &str, e: mysql_async::Error) -> AgentError {
    match e {
        mysql_async::Error::Server(s) if s.code == ER_ACCESS_DENIED => AgentError::AccessDenied {
            addr: addr.to_owned(),
            reason: format!(
                "{} (an account created REQUIRE SSL also refuses a login without TLS: see source.tls.mode)",
                s.message
            ),
        },
        mysql_async::Error::Io(io) => {
            let mut reason = io.to_string();
            if super::tls::is_tls_failure(&reason) {
                reason.push_str(
                    " (TLS: check source.tls.ca is the CA that signed the server's certificate and source.url's host is a name it holds)",
                );
            }
            AgentError::Unreachable {
                addr: addr.to_owned(),
                reason,
            }
        }
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            AgentError::ServerSetup(format!(
                "the server at {addr} offers no TLS, which source.tls.mode requires: give it a certificate (ssl_cert, ssl_key), or set mode = \"preferred\""
            ))
        }
        other => AgentError::Stream {
            addr: addr.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Classifies an error of a running binlog stream.
pub(super) fn stream_error(addr: &str, e: mysql_async::Error) -> AgentError {
    match e {
        mysql_async::Error::Server(s) if s.code == ER_MASTER_FATAL_READING_BINLOG => AgentError::Gap(format!(
            "the server cannot continue the binlog stream: {} (binlog purged?); take a new snapshot",
            s.message
        )),
        other => AgentError::Stream {
            addr: addr.to_owned(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use mysql_common::misc::raw::Either;
    use mysql_common::packets::binlog_request::BinlogRequest;
    use mysql_common::proto::MySerialize;

    use super::*;

    /// The request bytes (built as `mysql_async` builds a GTID dump) as MySQL's protocol
    /// documents `COM_BINLOG_DUMP_GTID`: command 0x1e, flags (BINLOG_THROUGH_GTID = 4),
    /// server id, file name length and name (empty), position (4), then the data's size
    /// and the data: the number of UUIDs, and per UUID its 16 bytes, its number of
    /// intervals and each interval as [start, end).
    #[test]
    fn a_gtid_set_goes_on_the_wire_as_mysql_documents_it() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let set = GtidSet::parse(&format!("{uuid}:1-5:7-9")).unwrap();
        let request = BinlogRequest::new(77)
            .with_use_gtid(true)
            .with_sids(dump_sids(&set));
        let Either::Right(cmd) = request.as_cmd() else {
            panic!("not a GTID dump");
        };
        let mut got = Vec::new();
        cmd.serialize(&mut got);
        let mut data = 1u64.to_le_bytes().to_vec();
        data.extend_from_slice(&[
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        data.extend_from_slice(&2u64.to_le_bytes());
        for n in [1u64, 6, 7, 10] {
            data.extend_from_slice(&n.to_le_bytes());
        }
        let mut want = vec![0x1e];
        want.extend_from_slice(&4u16.to_le_bytes());
        want.extend_from_slice(&77u32.to_le_bytes());
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&4u64.to_le_bytes());
        want.extend_from_slice(&(data.len() as u32).to_le_bytes());
        want.extend_from_slice(&data);
        assert_eq!(got, want);
    }
}
