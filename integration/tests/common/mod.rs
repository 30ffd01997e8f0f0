//! Helpers shared by the end-to-end tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::Path;
use std::time::Duration;

use logferry_common::{BinlogPos, Position, Segment, SegmentMeta, SourceKind, StreamId};
use logferry_integration::logferry::{Agent, AgentSettings, Shipper};
use logferry_integration::mariadb::MariaDb;
use logferry_integration::store;

/// Stream name used by the tests.
pub const STREAM: &str = "db1";

/// Agent settings for `db` shipping to `shipper`.
pub fn settings(db: &MariaDb, shipper: &Shipper) -> AgentSettings {
    AgentSettings {
        stream: STREAM.into(),
        source_url: db.repl_url(),
        server_id: 1001,
        shipper_url: shipper.url(),
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
        if let Some(Position::Binlog(end)) = store::chain_end(&segs) {
            if end.file == file && end.offset == pos {
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

/// Runs `logferry-shipper <args>` and returns (exit code, stdout + stderr).
pub fn shipper_cli(args: &[&str]) -> anyhow::Result<(i32, String)> {
    let bin = logferry_integration::process::workspace_bin("logferry-shipper")?;
    let out = std::process::Command::new(bin).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

/// A small valid segment of stream `garbage-test` with one QUERY event starting at `start`.
pub fn segment(start: u64, body: &[u8]) -> Segment {
    let size = 19 + body.len() as u32;
    let mut ev = Vec::new();
    ev.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    ev.push(2);
    ev.extend_from_slice(&1u32.to_le_bytes());
    ev.extend_from_slice(&size.to_le_bytes());
    ev.extend_from_slice(&(start as u32 + size).to_le_bytes());
    ev.extend_from_slice(&0u16.to_le_bytes());
    ev.extend_from_slice(body);
    let mut p = logferry_common::binlog::PayloadBuilder::default();
    p.push_event(&ev);
    let meta = SegmentMeta {
        stream: StreamId::new("garbage-test").unwrap_or_else(|e| panic!("{e}")),
        source: SourceKind::Mysql,
        start: Position::Binlog(BinlogPos::new("mysql-bin.000001", start)),
        end: Position::Binlog(BinlogPos::new("mysql-bin.000001", start + u64::from(size))),
        open_trx: None,
        first_event_ms: 1,
        last_event_ms: 2,
        event_count: 1,
    };
    Segment::seal(meta, &p.take(), logferry_common::Compression::default())
        .unwrap_or_else(|e| panic!("{e}"))
}
