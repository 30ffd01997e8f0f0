//! Helpers shared by the end-to-end tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use logferry_common::{BinlogPos, Position, Segment, SegmentMeta, SourceKind, StreamId};
use logferry_integration::logferry::{Agent, AgentSettings, Shipper};
use logferry_integration::mariadb::MariaDb;
use logferry_integration::process::Proc;
use logferry_integration::store;
use logferry_integration::wait_for;

/// Stream name used by the tests.
pub const STREAM: &str = "db1";

/// Agent settings for `db` shipping to `shipper`.
pub fn settings(db: &MariaDb, shipper: &Shipper) -> AgentSettings {
    settings_for(db.repl_url(), shipper)
}

/// Agent settings for the MySQL-protocol server at `source_url` shipping to `shipper`.
pub fn settings_for(source_url: String, shipper: &Shipper) -> AgentSettings {
    AgentSettings {
        stream: STREAM.into(),
        source_url,
        server_id: 1001,
        shipper_url: shipper.url(),
        shipper_extra: shipper.agent_tls_lines(),
        max_age_ms: 200,
        source_extra: String::new(),
        segment_extra: String::new(),
        extra_toml: String::new(),
    }
}

/// Waits until the stored chain ends exactly at the server's current binlog position;
/// fails at once if the agent stops.
pub async fn wait_caught_up(db: &MariaDb, shipper: &Shipper, agent: &Agent) -> anyhow::Result<()> {
    let fail = |why: String| {
        anyhow::anyhow!(
            "{why}\nagent log:\n{}\nshipper log:\n{}",
            agent.log_text(),
            shipper.log_text()
        )
    };
    let until = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if agent.log_text().contains("agent stopped") {
            return Err(fail("the agent stopped".into()));
        }
        let (file, pos) = db.master_status().await?;
        let segs = store::segments(&shipper.store_dir, STREAM)?;
        if let Some(Position::Mysql(end)) = store::chain_end(&segs) {
            if end.file() == file && end.offset == pos {
                return Ok(());
            }
        }
        if std::time::Instant::now() > until {
            return Err(fail(format!(
                "the stored chain did not reach {file}:{pos} within 120 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that the stored chain holds exactly the server's binlog events (as the stock
/// tool reads them from the server), each once, byte for byte.
pub fn assert_same_events_as_server(
    db: &MariaDb,
    store_dir: &Path,
    work: &Path,
) -> anyhow::Result<usize> {
    let segs = store::segments(store_dir, STREAM)?;
    let ours = store::events_of_files(&store::export_files(&segs)?)?;
    let theirs = store::events_of_files(&store::remote_binlog_files(
        db.port,
        "mysql-bin.000001",
        &work.join("remote"),
    )?)?;
    let show = |e: &store::BinlogEvent| format!("{}:{} type {}", e.file, e.log_pos, e.event_type);
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert_eq!(show(a), show(b), "event {i} differs");
        assert!(
            a.bytes == b.bytes,
            "event {i} ({}) differs in its bytes",
            show(a)
        );
    }
    assert_eq!(
        ours.len(),
        theirs.len(),
        "stored {} events, the server has {}",
        ours.len(),
        theirs.len()
    );
    Ok(ours.len())
}

/// Asserts [`assert_same_events_as_server`] and that `logferry-shipper verify` passes on the
/// whole store; returns the number of events.
pub fn assert_stored_exactly_and_verified(
    db: &MariaDb,
    shipper: &Shipper,
    work: &Path,
) -> anyhow::Result<usize> {
    let events = assert_same_events_as_server(db, &shipper.store_dir, work)?;
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "{out}");
    Ok(events)
}

/// Runs `logferry-shipper <args>` and returns (exit code, its output).
pub fn shipper_cli(args: &[&str]) -> anyhow::Result<(i32, String)> {
    shipper_cli_within(args, logferry_integration::process::RUN_WITHIN)
}

/// `logferry-shipper promote` of `stream` into the standby at `standby_url`, with `extra`
/// flags: (exit code, output).
pub fn promote(
    shipper: &Shipper,
    stream: &str,
    standby_url: &str,
    extra: &[&str],
) -> anyhow::Result<(i32, String)> {
    let store = shipper.store_url();
    let mut args = vec![
        "promote",
        "--store",
        &store,
        "--stream",
        stream,
        "--standby",
        standby_url,
    ];
    args.extend_from_slice(extra);
    shipper_cli(&args)
}

/// Runs `logferry-shipper <args>` for at most `limit` (killed then, failing with its
/// output); returns (exit code, its output).
pub fn shipper_cli_within(args: &[&str], limit: Duration) -> anyhow::Result<(i32, String)> {
    let log = tempfile::NamedTempFile::new()?;
    let mut cmd = logferry_integration::logferry::shipper_command()?;
    cmd.args(args);
    let mut p = Proc::spawn("logferry-shipper", cmd, log.path())?;
    let status = p.wait_within(limit)?;
    Ok((status.code().unwrap_or(-1), p.log()))
}

/// Waits for the next whole second so that binlog timestamps (seconds) separate the writes
/// before and after; returns the mark (the last ms of the second the writes happened in).
pub async fn mark() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let second = now / 1000;
    let wake = (second + 1) * 1000 + 50;
    tokio::time::sleep(Duration::from_millis((wake - now) as u64)).await;
    second * 1000 + 999
}

/// `ms` since the epoch as an RFC 3339 time, as `restore --to` takes it.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The `[source.snapshot]` section of an agent config for `replica`, throttled to `rate` bytes
/// per second when given.
pub fn snapshot_section(replica: &MariaDb, rate: Option<u64>) -> String {
    let rate = rate
        .map(|r| format!("max_bytes_per_sec = {r}\n"))
        .unwrap_or_default();
    format!(
        "[source.snapshot]\nreplica_url = \"mysql://root@127.0.0.1:{}\"\nschedule = \"0 0 1 1 *\"\nchunk_bytes = 65536\n{rate}",
        replica.port
    )
}

/// Runs `logferry-agent snapshot` to its end (at most `limit`); returns the snapshot id.
pub fn run_snapshot(agent: &Agent, log: &str, limit: Duration) -> anyhow::Result<String> {
    let mut p = agent.snapshot_process(log)?;
    let status = p.wait_within(limit)?;
    let out = p.log();
    anyhow::ensure!(status.success(), "snapshot failed: {out}");
    snapshot_id(&out)
}

/// The id in the `snapshot <id> ...` line `logferry-agent snapshot` prints.
pub fn snapshot_id(out: &str) -> anyhow::Result<String> {
    out.lines()
        .find(|l| l.starts_with("snapshot "))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
        .with_context(|| format!("no snapshot line in:\n{out}"))
}

/// A small valid segment of stream `garbage-test` with one QUERY event starting at `start`.
pub fn segment(start: u64, body: &[u8]) -> Segment {
    segment_at("garbage-test", "mysql-bin.000001", start, body)
}

/// A small valid segment in clear of `stream` with one QUERY event starting at `start` of
/// binlog `file`: what anyone can write without a key.
pub fn segment_at(stream: &str, file: &str, start: u64, body: &[u8]) -> Segment {
    let size = 19 + body.len() as u32;
    let mut ev = Vec::new();
    ev.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    ev.push(2);
    ev.extend_from_slice(&1u32.to_le_bytes());
    ev.extend_from_slice(&size.to_le_bytes());
    ev.extend_from_slice(&(start as u32 + size).to_le_bytes());
    ev.extend_from_slice(&0u16.to_le_bytes());
    ev.extend_from_slice(body);
    let mut p = logferry_common::format::mysql::PayloadBuilder::default();
    p.push_event(&ev);
    let meta = SegmentMeta {
        stream: StreamId::new(stream).unwrap_or_else(|e| panic!("{e}")),
        source: SourceKind::Mysql,
        start: Position::Mysql(BinlogPos::new(file, start).unwrap()),
        end: Position::Mysql(BinlogPos::new(file, start + u64::from(size)).unwrap()),
        open_trx: None,
        first_event_ms: 1,
        last_event_ms: 2,
        event_count: 1,
        lineage: logferry_common::segment::Lineage::default(),
    };
    Segment::seal(meta, &p.take(), logferry_common::Compression::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Restarts `agent` and waits until the new process has started its binlog dump (uploads
/// the old process had in flight may still land at the shipper after a kill, so a stored
/// count alone does not show that the new one runs).
pub async fn restart_connected(agent: &mut Agent) -> anyhow::Result<()> {
    const STARTED: &str = "starting binlog dump";
    let before = agent.log_text().matches(STARTED).count();
    agent.restart()?;
    let started = wait_for(
        "the restarted agent to connect",
        Duration::from_secs(60),
        || async { Ok((agent.log_text().matches(STARTED).count() > before).then_some(())) },
    )
    .await;
    started.map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))
}
