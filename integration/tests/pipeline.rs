//! The MySQL/MariaDB pipeline end to end against a real mariadbd, shipper and agent.

mod common;

use common::{
    assert_same_events_as_server, assert_stored_exactly_and_verified, settings, shipper_cli,
    wait_caught_up, STREAM,
};
use logferry_common::format::mysql as binlog;
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::{store, workload};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_with_rotations_arrives_as_the_servers_exact_binlog() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;

    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 300).await?;
    c.query_drop("FLUSH BINARY LOGS").await?;
    workload::run(&mut c, 300, 600).await?;
    c.query_drop("FLUSH BINARY LOGS").await?;
    workload::run(&mut c, 600, 700).await?;
    wait_caught_up(&db, &shipper, &agent).await?;

    let events = assert_same_events_as_server(&db, &shipper.store_dir, tmp.path())?;
    assert!(events > 1500, "only {events} events");

    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("OK stream {STREAM}")), "{out}");
    let (code, out) = shipper_cli(&["ls", "--store", &shipper.store_url(), "--segments"])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("mysql-bin.000003"), "{out}");

    // The stored segments, converted back to binlog files, are read by mariadb-binlog and
    // replay into a fresh server to the same table contents.
    let segs = store::segments(&shipper.store_dir, STREAM)?;
    let files = store::export_files(&segs)?;
    assert_eq!(files.len(), 3, "one file image per server binlog file");
    let paths = store::decode_with_stock_tool(&files, &tmp.path().join("export"))?;
    let fresh = MariaDb::start(Options::without_binlog(2)).await?;
    store::replay(&paths, fresh.port)?;
    let want = workload::checksums(&mut c).await?;
    let got = workload::checksums(&mut fresh.conn().await?).await?;
    assert_eq!(got, want);
    assert!(
        want.iter().all(|(_, sum)| sum.is_some_and(|s| s != 0)),
        "{want:?}"
    );

    // Every segment says truly whether it ends between transactions (the project's own
    // boundary tracker, run over the whole chain), and with transactions this small and
    // the default segment size, every one does.
    let mut trx = logferry_common::format::mysql::TrxTracker::default();
    for (name, seg) in &segs {
        let payload = seg.payload()?;
        let mut at_boundary = true;
        let mut crc = true;
        for rec in binlog::records(&payload) {
            match rec? {
                binlog::Record::Format(fde) => crc = binlog::fde_has_crc32(fde),
                binlog::Record::Event(ev) => {
                    let ty = binlog::EventHeader::parse(ev)?.event_type;
                    at_boundary =
                        trx.after(ty, logferry_common::format::mysql::event_body(ev, crc));
                }
            }
        }
        assert_eq!(
            seg.header.meta.ends_at_boundary(),
            at_boundary,
            "{name}: the header's open transaction {:?} disagrees with the events",
            seg.header.meta.open_trx
        );
        assert!(at_boundary, "{name} ends inside a transaction");
    }

    // An idle server is not lag: heartbeats arrive and the RPO exposure is zero.
    logferry_integration::wait_for(
        "a heartbeat from the idle server",
        std::time::Duration::from_secs(30),
        || async {
            Ok((agent.metric("logferry_agent_heartbeats_total").await? >= 1.0).then_some(()))
        },
    )
    .await?;
    assert_eq!(
        agent.metric("logferry_agent_rpo_exposure_seconds").await?,
        0.0
    );
    let shipped = agent
        .metric("logferry_agent_segments_shipped_total")
        .await?;
    assert!(shipped >= 1.0, "{}", agent.metrics().await?);
    Ok(())
}

/// A stream whose codec changes between agent runs (lz4, then none, then zstd) is one
/// chain: every segment reads back with its own codec, and together they are the server's
/// exact events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_changes_between_runs_leave_one_exact_chain() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    let mut codecs = Vec::new();
    for (round, codec) in ["lz4", "none", "zstd"].into_iter().enumerate() {
        let mut s = settings(&db, &shipper);
        s.segment_extra = format!("codec = \"{codec}\"");
        let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
        let from = round as u64 * 200;
        workload::run(&mut c, from, from + 200).await?;
        wait_caught_up(&db, &shipper, &agent).await?;
        let status = agent.terminate()?;
        anyhow::ensure!(status.success(), "agent with codec {codec} exited {status}");
        let segs = store::segments(&shipper.store_dir, STREAM)?;
        codecs.push(segs.last().map(|(_, seg)| seg.header.codec));
    }
    use logferry_common::Codec;
    assert_eq!(
        codecs,
        [Some(Codec::Lz4), Some(Codec::None), Some(Codec::Zstd)]
    );
    let events = assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    assert!(events > 1000, "only {events} events");
    Ok(())
}

/// Binlog written before the agent started is stored as soon as it has been read, not
/// after the seal age: with a ten-minute seal age the chain still reaches the server's
/// position within the two minutes `wait_caught_up` allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_is_stored_without_waiting_out_the_seal_age() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 200).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&db, &shipper);
    s.max_age_ms = 600_000;
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    wait_caught_up(&db, &shipper, &agent).await?;
    assert_same_events_as_server(&db, &shipper.store_dir, tmp.path())?;
    Ok(())
}

/// `start = "current"` on a new stream ships from the server's position when the agent
/// connects (read with the same statement that marks the end of a catch-up), not from the
/// oldest binlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_can_start_at_the_current_position() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 100).await?;
    let (file, pos) = db.master_status().await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&db, &shipper);
    s.source_extra = "start = \"current\"".into();
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    logferry_integration::wait_for(
        "the agent to start its binlog dump",
        std::time::Duration::from_secs(30),
        || {
            let log = agent.log_text();
            async move { Ok(log.contains("starting binlog dump").then_some(())) }
        },
    )
    .await?;
    workload::run(&mut c, 100, 200).await?;
    wait_caught_up(&db, &shipper, &agent).await?;
    let segs = store::segments(&shipper.store_dir, STREAM)?;
    let first = segs[0].1.header.meta.start.as_mysql()?;
    assert_eq!(
        (first.file(), first.offset),
        (file.as_str(), pos),
        "the chain starts where the server stood when the agent connected"
    );
    Ok(())
}

/// Ships a workload with a rotation from a server started with `extra` options, and checks
/// the chain holds the server's events exactly and replays to the same tables; `check`
/// names a server variable and the value it must have (the option took effect).
async fn ships_exactly_and_replays(extra: &str, check: (&str, &str)) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options {
        extra: vec![extra.into()],
        ..Options::default()
    })
    .await?;
    let mut c = db.conn().await?;
    let value: Option<String> = c.query_first(format!("SELECT @@{}", check.0)).await?;
    assert_eq!(value.as_deref(), Some(check.1), "{extra}");
    let shipper = Shipper::start(tmp.path()).await?;
    let agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 200).await?;
    c.query_drop("FLUSH BINARY LOGS").await?;
    workload::run(&mut c, 200, 300).await?;
    wait_caught_up(&db, &shipper, &agent).await?;
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;

    let segs = store::segments(&shipper.store_dir, STREAM)?;
    let paths =
        store::decode_with_stock_tool(&store::export_files(&segs)?, &tmp.path().join("export"))?;
    let fresh = MariaDb::start(Options::without_binlog(2)).await?;
    store::replay(&paths, fresh.port)?;
    let want = workload::checksums(&mut c).await?;
    let got = workload::checksums(&mut fresh.conn().await?).await?;
    assert_eq!(got, want, "{extra}");
    Ok(())
}

/// Servers configured for some CDC tools write no event checksums; the source, the walk,
/// verify, export and replay must not take CRC32 for granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_binlog_checksums_is_shipped_exactly_and_replays() -> anyhow::Result<()> {
    ships_exactly_and_replays("--binlog-checksum=NONE", ("binlog_checksum", "NONE")).await
}

/// Minimal row images (only the changed columns and the key) restore exactly too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_row_images_are_shipped_exactly_and_replay() -> anyhow::Result<()> {
    ships_exactly_and_replays(
        "--binlog-row-image=MINIMAL",
        ("binlog_row_image", "MINIMAL"),
    )
    .await
}
