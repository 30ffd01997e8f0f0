//! Transactions larger than a segment, and a store or spool with a piece missing or damaged.
//!
//! What this file proves, against real `mariadbd`, shipper and agent processes:
//! - A single transaction of more than a gigabyte (incompressible rows, then compressible
//!   ones) is stored with the default `segment.max_bytes`: the segmenter seals inside the
//!   transaction (stored segments with `open_trx` set), every event arrives once, byte for
//!   byte, `verify` passes, the agent's peak RSS is printed (reported in BENCHMARKS.md, not
//!   asserted), a restore to `latest` gives the primary's tables, and a restore to a time
//!   before the transaction leaves out every row of it although segments holding its first
//!   rows are stored.
//! - kill -9 of the agent while the stored chain ends inside a big transaction, then of the
//!   shipper while the agent is still inside it, loses nothing and duplicates nothing.
//! - `restore` and `export` refuse a chain with a missing segment (right after the
//!   snapshot's position or in the middle) before touching the target, naming the missing
//!   range, and a target after the end of a chain whose last segment is missing is refused.
//! - A spooled segment damaged on disk is read again from the database, so the stored chain
//!   has no gap, and the damage is logged and counted.
//!
//! The big transactions are written as many `INSERT ... SELECT` statements of 20,000 rows
//! inside one BEGIN ... COMMIT: `mariadb-binlog` turns all the row events of one statement
//! into one `BINLOG '...'` statement, which `mariadb` can send only under the target's
//! `max_allowed_packet` (16 MiB by default), so one huge statement could be stored but not
//! replayed by `restore`.
//!
//! The tests of this file run one at a time (the first one writes gigabytes on a 2-core
//! machine; the others would compete with it for CPU and disk and hit their time limits).

mod common;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use common::{
    assert_stored_exactly_and_verified, mark, rfc3339, run_snapshot, settings, shipper_cli_within,
    snapshot_section, wait_caught_up, STREAM,
};
use logferry_common::format::mysql::{EventHeader, ExportFiles, BINLOG_MAGIC, EVENT_HEADER_LEN};
use logferry_common::{BinlogPos, DecodeLimits, Position, Segment, SegmentHeader};
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::store::{self, BinlogEvent};
use logferry_integration::workload;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// One test of this file at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The big tables (created in the database `bigdb`).
const BIG: &str = "bigdb.big";
const BIG2: &str = "bigdb.big2";
/// Rows per INSERT statement of a big transaction: ~210 MB of row events, which
/// `mariadb-binlog` replays as one `BINLOG '...'` statement of ~280 MB: far over the
/// default max_allowed_packet (16 MiB), so the restore must raise it on the target.
const ROWS_PER_STATEMENT: u64 = 1_000_000;
/// A row of the big tables takes 210.9 binlog bytes (measured on MariaDB 10.11); counting
/// 205 makes a transaction of "N MiB" at least N MiB.
const BYTES_PER_ROW_LOW: u64 = 205;
/// The counter the agent adds to for each damaged spool file.
const SPOOL_DAMAGED: &str = "logferry_agent_spool_damaged_total";
/// Flag of artificial events, which are in no binlog file.
const ARTIFICIAL: u16 = 0x20;
/// ANNOTATE_ROWS: MariaDB sends it only to clients that ask for it (the stock tool does).
const ANNOTATE_ROWS: u8 = 160;

type Sums = Vec<(String, Option<u64>)>;
type Headers = Vec<(String, SegmentHeader)>;

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_transaction_is_stored_whole_with_bounded_memory() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mb = env_mb("LOGFERRY_BIG_TRX_MB", 1100);
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(big_options(true, 1)).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 100).await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    // segment.max_bytes stays unset: the real default applies.
    s.extra_toml = snapshot_section(&replica, None);
    let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
    let snap = run_snapshot(&agent, "snapshot.log", Duration::from_secs(180))?;
    // The replica is not needed any more; stopping it spares it applying gigabytes.
    drop(replica);

    workload::run(&mut c, 100, 300).await?;
    create_big_tables(&mut c, &[BIG, BIG2]).await?;
    workload::run(&mut c, 300, 320).await?;
    let mark_ms = mark().await;
    let sums_at_mark = checksums_with(&mut c, &[BIG, BIG2]).await?;
    ensure!(
        sums_at_mark
            .iter()
            .filter(|(t, _)| t.starts_with("bigdb."))
            .all(|(_, sum)| *sum == Some(0)),
        "the big tables are empty at the mark: {sums_at_mark:?}"
    );

    let started = Instant::now();
    let before = primary.master_status().await?;
    let rows = one_big_transaction(&mut c, BIG, "RANDOM_BYTES(200)", mb).await?;
    let trx1 = binlog_bytes_since(&primary, &before).await?;
    let before = primary.master_status().await?;
    one_big_transaction(&mut c, BIG2, "REPEAT('abcdefgh', 25)", mb).await?;
    let trx2 = binlog_bytes_since(&primary, &before).await?;
    println!(
        "two transactions of {rows} rows: {} MiB incompressible, {} MiB compressible, committed in {:.1} s",
        trx1 >> 20,
        trx2 >> 20,
        started.elapsed().as_secs_f64()
    );
    for (what, bytes) in [("incompressible", trx1), ("compressible", trx2)] {
        ensure!(
            bytes >= mb << 20,
            "the {what} transaction is {bytes} binlog bytes, less than {mb} MiB"
        );
    }
    workload::run(&mut c, 320, 370).await?;

    let mut index = StoreIndex::default();
    let limit = Duration::from_secs(120 + 2 * mb / 5);
    let segs = wait_stored_to_end(&primary, &mut agent, &shipper, &mut index, limit).await?;
    println!(
        "stored through the end {:.1} s after the first big transaction began",
        started.elapsed().as_secs_f64()
    );
    let peak = agent.peak_rss_kib().context("the agent is not running")?;
    println!(
        "agent peak RSS during the {mb} MB transactions: {} MiB",
        peak / 1024
    );
    // Not the budget (BENCHMARKS.md measures it on release builds): a bound far below the
    // transaction's size, which holding it whole in memory would break.
    ensure!(
        peak / 1024 < 256,
        "the agent's peak RSS {} MiB suggests it held the transaction in memory",
        peak / 1024
    );
    if let Some(kib) = shipper.peak_rss_kib() {
        println!("shipper peak RSS: {} MiB", kib / 1024);
    }

    let open = segs
        .iter()
        .filter(|(_, h)| h.meta.open_trx.is_some())
        .count();
    let largest = segs.iter().map(|(_, h)| h.payload_len).max().unwrap_or(0);
    let stored: u64 = segs.iter().map(|(_, h)| h.stored_len).sum();
    println!(
        "{} segments ({open} end inside a transaction), largest payload {} KiB, {} MiB stored",
        segs.len(),
        largest >> 10,
        stored >> 20
    );
    ensure!(
        open >= 1,
        "no stored segment ends inside a transaction: the big ones were not split"
    );
    ensure!(
        largest * 4 < trx1,
        "a segment holds {largest} payload bytes, not much less than the {trx1}-byte transaction"
    );

    // Everything below reads the object store alone.
    agent.kill9();
    let mut shipper = shipper;
    shipper.kill9();
    let events = assert_same_events_streaming(&primary, &shipper.store_dir, tmp.path())?;
    println!("{events} events stored exactly once, byte for byte");
    let (code, out) = shipper_cli_within(
        &["verify", "--store", &shipper.store_url()],
        Duration::from_secs(120 + mb),
    )?;
    ensure!(code == 0, "verify: {out}");

    let want = checksums_with(&mut c, &[BIG, BIG2]).await?;
    let restore_limit = Duration::from_secs(300 + mb);
    let fresh = MariaDb::start(big_options(false, 9)).await?;
    let started = Instant::now();
    let (code, out) = restore_cli(&shipper.store_dir, "latest", &fresh, restore_limit)?;
    ensure!(code == 0, "restore to latest: {out}");
    ensure!(
        out.contains(&snap),
        "the restore used snapshot {snap}: {out}"
    );
    println!(
        "restore to latest took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let got = checksums_with(&mut fresh.conn().await?, &[BIG, BIG2]).await?;
    ensure!(
        got == want,
        "restore to latest: {got:?}, the primary has {want:?}\n{out}"
    );
    drop(fresh);

    let fresh = MariaDb::start(big_options(false, 10)).await?;
    let to = rfc3339(mark_ms);
    let started = Instant::now();
    let (code, out) = restore_cli(&shipper.store_dir, &to, &fresh, restore_limit)?;
    ensure!(code == 0, "restore to the mark {to}: {out}");
    println!(
        "restore to the mark before the big transactions took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let got = checksums_with(&mut fresh.conn().await?, &[BIG, BIG2]).await?;
    ensure!(
        got == sums_at_mark,
        "restore to the mark {to}: {got:?}, the primary had {sums_at_mark:?}\n{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_agent_and_shipper_inside_a_big_transaction_loses_and_duplicates_nothing(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mb = env_mb("LOGFERRY_KILL_TRX_MB", 300);
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(big_options(true, 1)).await?;
    let mut shipper = Shipper::start(tmp.path()).await?;
    let mut agent = Agent::start(&tmp.path().join("agent"), &settings(&primary, &shipper))?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 100).await?;
    wait_caught_up(&primary, &shipper, &agent).await?;

    // The big transaction is committed while the agent is down: it catches up through it.
    agent.kill9();
    create_big_tables(&mut c, &[BIG]).await?;
    let before = primary.master_status().await?;
    one_big_transaction(&mut c, BIG, "RANDOM_BYTES(200)", mb).await?;
    let trx = binlog_bytes_since(&primary, &before).await?;
    println!("one transaction of {} MiB", trx >> 20);
    workload::run(&mut c, 100, 150).await?;
    let (end_file, end_pos) = primary.master_status().await?;
    let at_end = |segs: &[(String, SegmentHeader)]| ends_at(segs, &end_file, end_pos);

    let mut index = StoreIndex::default();
    let stored_before = index.refresh(&shipper.store_dir)?.len();
    let limit = Duration::from_secs(120 + mb / 5);
    agent.restart()?;
    let segs = wait_store(
        "a stored chain that ends inside the big transaction",
        &mut agent,
        &shipper,
        &mut index,
        limit,
        Duration::from_millis(20),
        |_, segs| segs.len() > stored_before && last_is_open(segs),
    )
    .await?;
    agent.kill9();
    println!("agent killed: {}", describe_end(&segs));

    let inside = "inside the transaction from";
    let resumed_inside = agent.log_text().matches(inside).count();
    agent.restart()?;
    logferry_integration::wait_for(
        "the restarted agent to resume inside the transaction",
        Duration::from_secs(60),
        || async { Ok((agent.log_text().matches(inside).count() > resumed_inside).then_some(())) },
    )
    .await
    .with_context(|| tail(&agent.log_text(), 30))?;
    // Counted once the new process runs: uploads the killed one had in flight may still
    // have landed after the kill.
    let stored_at_kill = index.refresh(&shipper.store_dir)?.len().max(segs.len());
    let segs = wait_store(
        "segments stored after the agent's restart",
        &mut agent,
        &shipper,
        &mut index,
        limit,
        Duration::from_millis(20),
        |_, segs| segs.len() > stored_at_kill && last_is_open(segs),
    )
    .await?;
    shipper.kill9();
    println!("shipper killed: {}", describe_end(&segs));
    // The agent goes on sealing into its spool while the shipper is down, unless the
    // transaction was already stored whole.
    let segs = wait_store(
        "the agent to spool while the shipper is down",
        &mut agent,
        &shipper,
        &mut index,
        limit,
        Duration::from_millis(50),
        |agent, segs| agent.spooled() > 0 || at_end(segs),
    )
    .await?;
    println!(
        "{} segment(s) spooled while the shipper was down ({})",
        agent.spooled(),
        describe_end(&segs)
    );
    shipper.restart().await?;
    let segs = wait_stored_to_end(&primary, &mut agent, &shipper, &mut index, limit).await?;

    let open = segs
        .iter()
        .filter(|(_, h)| h.meta.open_trx.is_some())
        .count();
    ensure!(
        open >= 1,
        "no stored segment ends inside the big transaction"
    );
    let events = assert_same_events_streaming(&primary, &shipper.store_dir, tmp.path())?;
    println!(
        "{events} events in {} segments ({open} inside the transaction), each once",
        segs.len()
    );
    let (code, out) = shipper_cli_within(
        &["verify", "--store", &shipper.store_url()],
        Duration::from_secs(120 + mb),
    )?;
    ensure!(code == 0, "verify: {out}");

    // No snapshot here: the stream holds the whole binlog from the server's first file, so
    // an export from the chain's first position, replayed into an empty server by the stock
    // tools, rebuilds every table.
    let from = segs
        .first()
        .map(|(_, h)| h.meta.start.to_string())
        .context("nothing stored")?;
    let dir = tmp.path().join("export");
    let (code, out) = export_cli(
        &shipper.store_dir,
        Some(from.as_str()),
        "latest",
        &dir,
        Duration::from_secs(120 + mb),
    )?;
    ensure!(code == 0, "export --from {from}: {out}");
    let fresh = MariaDb::start(big_options(false, 9)).await?;
    for file in binlog_files_in(&dir)? {
        store::replay(std::slice::from_ref(&file), fresh.port)?;
    }
    let want = checksums_with(&mut c, &[BIG]).await?;
    let got = checksums_with(&mut fresh.conn().await?, &[BIG]).await?;
    ensure!(
        got == want,
        "the export replayed gives {got:?}, the primary has {want:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_export_refuse_a_chain_with_a_missing_segment() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 100).await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let mut shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    s.segment_extra = "max_bytes = 65536".into();
    s.extra_toml = snapshot_section(&replica, None);
    let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
    // Segments before the snapshot's position, so that one lies before the first after it.
    wait_caught_up(&primary, &shipper, &agent).await?;
    let snap = run_snapshot(&agent, "snapshot.log", Duration::from_secs(180))?;
    let snap_pos = snapshot_position(&shipper.store_dir, &snap)?;

    let mut next = 100;
    loop {
        workload::run(&mut c, next, next + 300).await?;
        next += 300;
        wait_caught_up(&primary, &shipper, &agent).await?;
        let after = headers(&shipper.store_dir)?
            .iter()
            .filter(|(_, h)| bp(&h.meta.end).cmp_place(&snap_pos).is_gt())
            .count();
        if after >= 8 {
            break;
        }
        ensure!(
            next < 100 + 300 * 12,
            "only {after} segments after the snapshot's position {snap_pos} after {next} transactions"
        );
    }
    let want = workload::checksums(&mut c).await?;
    agent.kill9();
    shipper.kill9();

    let segs = headers(&shipper.store_dir)?;
    let first_after = segs
        .iter()
        .position(|(_, h)| bp(&h.meta.end).cmp_place(&snap_pos).is_gt())
        .context("no segment after the snapshot's position")?;
    ensure!(
        first_after >= 1,
        "the chain should hold a segment before the snapshot's position {snap_pos}"
    );
    let after = segs.len() - first_after;
    ensure!(after >= 6, "only {after} segments after the snapshot");
    let middle = first_after + after / 2;
    let last = segs.len() - 1;
    let start_of = |i: usize| bp(&segs[i].1.meta.start).clone();
    let end_of = |i: usize| bp(&segs[i].1.meta.end).clone();

    let target = MariaDb::start(Options::without_binlog(9)).await?;
    let limit = Duration::from_secs(120);

    // (a) The segment that holds or follows the snapshot's position is missing.
    let store_a = store_without(
        &shipper.store_dir,
        &tmp.path().join("store-a"),
        &segs[first_after].0,
    )?;
    assert_refused_at_gap(
        "(a) the segment after the snapshot's position",
        &store_a,
        &target,
        &tmp.path().join("export-a"),
        &[snap_pos.clone(), end_of(first_after - 1)],
        &start_of(first_after + 1),
        limit,
    )
    .await?;

    // (b) A segment in the middle is missing.
    let store_b = store_without(
        &shipper.store_dir,
        &tmp.path().join("store-b"),
        &segs[middle].0,
    )?;
    assert_refused_at_gap(
        "(b) a segment in the middle",
        &store_b,
        &target,
        &tmp.path().join("export-b"),
        &[end_of(middle - 1)],
        &start_of(middle + 1),
        limit,
    )
    .await?;

    // (c) The last segment is missing: its end is after the end of the stored chain.
    let store_c = store_without(
        &shipper.store_dir,
        &tmp.path().join("store-c"),
        &segs[last].0,
    )?;
    let removed_end = place(&end_of(last));
    let (code, out) = restore_cli(&store_c, &removed_end, &target, limit)?;
    ensure!(
        code == 1,
        "(c) restore --to {removed_end} past the end of the chain exits 1, not {code}: {out}"
    );
    ensure!(
        out.contains("after the end of the stored chain")
            || out.contains("after the last stored event"),
        "(c) the refusal says the target is after the end of the stored chain: {out}"
    );
    let dbs = user_databases(&target).await?;
    ensure!(dbs.is_empty(), "(c) the refused restore created {dbs:?}");
    let (code, out) = export_cli(
        &store_c,
        None,
        &removed_end,
        &tmp.path().join("export-c"),
        limit,
    )?;
    ensure!(
        code == 1 && out.contains(&place(&end_of(last - 1))),
        "(c) export --to {removed_end} past the end of the chain exits 1 naming where the chain ends, not {code}: {out}"
    );

    // The control: the same restore of the intact store succeeds into the same server, as
    // a user whose password holds every character a URL reserves.
    target
        .conn()
        .await?
        .query_drop(
            "CREATE USER 'op'@'%' IDENTIFIED BY 'p@ss:w/o%r#d'; \
             GRANT ALL ON *.* TO 'op'@'%' WITH GRANT OPTION",
        )
        .await?;
    let op_url = format!(
        "mysql://op:p%40ss%3Aw%2Fo%25r%23d@127.0.0.1:{}",
        target.port
    );
    let (code, out) = export_cli(
        &shipper.store_dir,
        None,
        "latest",
        &tmp.path().join("export-intact"),
        limit,
    )?;
    ensure!(code == 0, "export of the intact store: {out}");
    let (code, out) = restore_cli_url(&shipper.store_dir, "latest", &op_url, limit)?;
    ensure!(code == 0, "restore of the intact store: {out}");
    ensure!(
        !out.contains("p@ss") && !out.contains("p%40ss"),
        "the password shows in the output: {out}"
    );
    let got = workload::checksums(&mut target.conn().await?).await?;
    ensure!(
        got == want,
        "restore of the intact store: {got:?}, the primary has {want:?}\n{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_shippers_limit_stops_the_agent_with_the_fix_and_loses_nothing(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let limit = ("LOGFERRY__SERVER__MAX_SEGMENT_BYTES", "1048576");
    let mut shipper = Shipper::start_with_env(tmp.path(), &[limit]).await?;
    let mut s = settings(&db, &shipper);
    s.segment_extra = "max_bytes = 65536".into();
    let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 50).await?;
    wait_caught_up(&db, &shipper, &agent).await?;

    // One row image of 2 MiB: a single binlog event over the 1 MiB segment limit.
    c.query_drop(
        "CREATE TABLE app.blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB; \
         INSERT INTO app.blobs VALUES (1, REPEAT(MD5(RAND()), 65536))",
    )
    .await?;
    workload::run(&mut c, 50, 80).await?;
    let status = agent.wait_exit(Duration::from_secs(60)).await?;
    ensure!(
        status.is_some_and(|s| !s.success()),
        "the agent did not stop on the oversized event ({status:?}):\n{}",
        tail(&agent.log_text(), 30)
    );
    let log = agent.log_text();
    ensure!(
        log.contains("raise server.max_segment_bytes on the shipper to at least"),
        "the agent's error does not say what to raise:\n{}",
        tail(&log, 30)
    );
    let quarantine = agent.spool_dir.join("quarantine");
    ensure!(
        std::fs::read_dir(&quarantine)?.next().is_none(),
        "something was quarantined"
    );

    // The operator raises the limit: everything, the big event included, is then shipped.
    shipper.kill9();
    shipper.env = vec![(limit.0.into(), "4194304".into())];
    shipper.restart().await?;
    // The first run's log says "agent stopped"; the waits below read the new one.
    let agent_dir = tmp.path().join("agent");
    std::fs::rename(
        agent_dir.join("agent.log"),
        agent_dir.join("agent-stopped.log"),
    )?;
    agent.restart()?;
    wait_caught_up(&db, &shipper, &agent).await?;
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_file_is_read_again_from_the_database() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let mut shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&db, &shipper);
    s.segment_extra = "max_bytes = 65536".into();
    let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 50).await?;
    wait_caught_up(&db, &shipper, &agent).await?;

    shipper.kill9();
    let mut next = 50;
    while agent.spooled() < 4 {
        ensure!(
            next < 50 + 200 * 30,
            "the spool holds {} segments after {next} transactions\n{}",
            agent.spooled(),
            tail(&agent.log_text(), 200)
        );
        workload::run(&mut c, next, next + 200).await?;
        next += 200;
    }
    // No in-memory copy survives: the restarted agent has only the files.
    agent.kill9();
    let spool = agent.spool_dir.join("segments");
    let files = lfs_names(&spool)?;
    ensure!(files.len() >= 4, "spooled: {files:?}");
    let victim = files[1].clone();
    let path = spool.join(&victim);
    let mut bytes = std::fs::read(&path)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes)?;

    shipper.restart().await?;
    // Cut at another size after the restart: had any segment after the damaged one been
    // sent (uploads run several at once), the range read again would overlap it and the
    // shipper would refuse it as a conflict.
    agent.edit_config("max_bytes = 65536", "max_bytes = 40000")?;
    agent.restart()?;
    workload::run(&mut c, next, next + 20).await?;
    wait_caught_up(&db, &shipper, &agent).await?;
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    let log = agent.log_text();
    ensure!(
        log.contains(&victim),
        "the agent's log names the damaged spool file {victim}:\n{}",
        tail(&log, 200)
    );
    let damaged = agent.metric(SPOOL_DAMAGED).await?;
    ensure!(
        damaged >= 1.0,
        "{SPOOL_DAMAGED} is {damaged}:\n{}",
        agent.metrics().await?
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Servers, writes and checksums
// ---------------------------------------------------------------------------------------

/// A positive whole number from the environment, else `default`.
fn env_mb(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

/// A server for big transactions: a binlog cache that never limits a transaction (the
/// default is already near 2^64; said here so that it is not forgotten) and a buffer pool
/// larger than the harness' 64 MiB (the later option wins), so that a gigabyte of rows is
/// written at disk speed. A transaction larger than max_binlog_size (1 GiB by default) goes
/// into one file; the server rotates after it.
fn big_options(log_bin: bool, server_id: u32) -> Options {
    Options {
        log_bin,
        server_id,
        extra: vec![
            "--max-binlog-cache-size=64G".into(),
            "--innodb-buffer-pool-size=512M".into(),
        ],
    }
}

async fn create_big_tables(c: &mut Conn, tables: &[&str]) -> anyhow::Result<()> {
    c.query_drop("CREATE DATABASE IF NOT EXISTS bigdb").await?;
    for t in tables {
        c.query_drop(format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, b VARBINARY(255)) ENGINE=InnoDB"
        ))
        .await?;
    }
    Ok(())
}

/// ONE transaction that fills `table` with at least `mb` MiB of binlog: rows `1..=n` with
/// `value_sql` as their 200-byte value, in statements of [`ROWS_PER_STATEMENT`] rows from
/// MariaDB's sequence engine. Returns the number of rows.
async fn one_big_transaction(
    c: &mut Conn,
    table: &str,
    value_sql: &str,
    mb: u64,
) -> anyhow::Result<u64> {
    let rows = (mb << 20) / BYTES_PER_ROW_LOW + 1;
    c.query_drop("BEGIN").await?;
    let mut from = 1;
    while from <= rows {
        let to = (from + ROWS_PER_STATEMENT - 1).min(rows);
        c.query_drop(format!(
            "INSERT INTO {table} SELECT seq, {value_sql} FROM bigdb.seq_{from}_to_{to}"
        ))
        .await?;
        from = to + 1;
    }
    c.query_drop("COMMIT").await?;
    Ok(rows)
}

/// Binlog bytes written since `before` (a `master_status`), when they all went into
/// `before`'s file (the server rotates only after a transaction).
async fn binlog_bytes_since(db: &MariaDb, before: &(String, u64)) -> anyhow::Result<u64> {
    let (file, pos) = db.master_status().await?;
    if file == before.0 {
        return Ok(pos.saturating_sub(before.1));
    }
    let len = std::fs::metadata(db.datadir.join(&before.0))?.len();
    Ok(len.saturating_sub(before.1))
}

/// `CHECKSUM TABLE` of the workload's tables and of `extra`.
async fn checksums_with(c: &mut Conn, extra: &[&str]) -> anyhow::Result<Sums> {
    let mut out = workload::checksums(c).await?;
    for t in extra {
        let row: Option<(String, Option<u64>)> =
            c.query_first(format!("CHECKSUM TABLE {t}")).await?;
        out.extend(row);
    }
    Ok(out)
}

/// The databases of `db` other than the system ones.
async fn user_databases(db: &MariaDb) -> anyhow::Result<Vec<String>> {
    let mut c = db.conn().await?;
    let names: Vec<String> = c
        .query(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN \
             ('mysql','information_schema','performance_schema','sys') ORDER BY schema_name",
        )
        .await?;
    c.disconnect().await?;
    Ok(names)
}

// ---------------------------------------------------------------------------------------
// Snapshots and the shipper's commands
// ---------------------------------------------------------------------------------------

/// The primary position a stored snapshot joins the chain at (its manifest's `position`).
fn snapshot_position(store_dir: &Path, id: &str) -> anyhow::Result<BinlogPos> {
    let path = store_dir.join(format!("streams/{STREAM}/snapshots/{id}/manifest.json"));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| path.display().to_string())?)?;
    let text = m["position"]
        .as_str()
        .with_context(|| format!("no position in {}: {m}", path.display()))?;
    Ok(BinlogPos::parse(text)?)
}

/// `logferry-shipper restore` of the test stream from the store directory `store`.
fn restore_cli(
    store: &Path,
    to: &str,
    target: &MariaDb,
    limit: Duration,
) -> anyhow::Result<(i32, String)> {
    restore_cli_url(store, to, &target.root_url(), limit)
}

/// `logferry-shipper restore` into the server at `url`.
fn restore_cli_url(
    store: &Path,
    to: &str,
    url: &str,
    limit: Duration,
) -> anyhow::Result<(i32, String)> {
    let store = store.display().to_string();
    shipper_cli_within(
        &[
            "restore",
            "--store",
            store.as_str(),
            "--stream",
            STREAM,
            "--to",
            to,
            "--target",
            url,
        ],
        limit,
    )
}

/// `logferry-shipper export` of the test stream (from the snapshot, or `--from`) into `dir`.
fn export_cli(
    store: &Path,
    from: Option<&str>,
    to: &str,
    dir: &Path,
    limit: Duration,
) -> anyhow::Result<(i32, String)> {
    let store = store.display().to_string();
    let dir = dir.display().to_string();
    let mut args: Vec<&str> = vec!["export", "--store", store.as_str(), "--stream", STREAM];
    if let Some(f) = from {
        args.extend(["--from", f]);
    }
    args.extend(["--to", to, "--dir", dir.as_str()]);
    shipper_cli_within(&args, limit)
}

/// The `mysql-bin.*` files in `dir`, in order.
fn binlog_files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mysql-bin."))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Checks that `restore --to latest` and `export --to latest` of `store` exit 1 naming the
/// missing range (one of `lower` .. `upper`) and a gap, and that `target` is left empty.
async fn assert_refused_at_gap(
    case: &str,
    store: &Path,
    target: &MariaDb,
    export_dir: &Path,
    lower: &[BinlogPos],
    upper: &BinlogPos,
    limit: Duration,
) -> anyhow::Result<()> {
    let check = |what: &str, code: i32, out: &str| -> anyhow::Result<()> {
        ensure!(code == 1, "{case}: {what} exits 1, not {code}: {out}");
        ensure!(
            out.to_lowercase().contains("gap"),
            "{case}: {what} says there is a gap: {out}"
        );
        ensure!(
            lower.iter().any(|p| mentions(out, p)) && mentions(out, upper),
            "{case}: {what} names the missing range {} .. {}: {out}",
            lower.iter().map(place).collect::<Vec<_>>().join(" or "),
            place(upper)
        );
        Ok(())
    };
    let (code, out) = restore_cli(store, "latest", target, limit)?;
    check("restore", code, &out)?;
    let dbs = user_databases(target).await?;
    ensure!(
        dbs.is_empty(),
        "{case}: the refused restore touched the target, which now holds {dbs:?}: {out}"
    );
    let (code, out) = export_cli(store, None, "latest", export_dir, limit)?;
    check("export", code, &out)
}

// ---------------------------------------------------------------------------------------
// Reading the store cheaply
// ---------------------------------------------------------------------------------------

fn segments_dir(store_dir: &Path) -> PathBuf {
    store_dir.join("streams").join(STREAM).join("segments")
}

/// Names of the `*.lfs` files in `dir`, sorted (a missing directory is empty).
fn lfs_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".lfs"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    Ok(names)
}

/// The header of the segment file at `path`, from its first bytes only.
fn peek_header(path: &Path) -> anyhow::Result<SegmentHeader> {
    let mut prefix = Vec::new();
    File::open(path)?.take(70 * 1024).read_to_end(&mut prefix)?;
    Segment::peek_header(&prefix).with_context(|| path.display().to_string())
}

/// Headers of the stored segments, each file's header read once from its first bytes (no
/// trailer check, no payload): cheap enough to poll while gigabytes are stored.
/// `store::segments` reads and hashes every byte of every segment on each call.
#[derive(Default)]
struct StoreIndex {
    seen: HashMap<String, SegmentHeader>,
}

impl StoreIndex {
    /// Every stored segment, in key (= chain) order, with its header.
    fn refresh(&mut self, store_dir: &Path) -> anyhow::Result<Headers> {
        let dir = segments_dir(store_dir);
        let mut out = Vec::new();
        for name in lfs_names(&dir)? {
            let header = match self.seen.get(&name) {
                Some(h) => h.clone(),
                None => {
                    let h = peek_header(&dir.join(&name))?;
                    self.seen.insert(name.clone(), h.clone());
                    h
                }
            };
            out.push((name, header));
        }
        Ok(out)
    }
}

fn headers(store_dir: &Path) -> anyhow::Result<Headers> {
    StoreIndex::default().refresh(store_dir)
}

fn bp(p: &Position) -> &BinlogPos {
    p.as_mysql().expect("a MySQL position")
}

/// `file:offset` of a position (no GTID), as a restore target and in messages.
fn place(p: &BinlogPos) -> String {
    format!("{}:{}", p.file(), p.offset)
}

/// Whether `text` names `p`'s place (not merely a longer offset that starts the same).
fn mentions(text: &str, p: &BinlogPos) -> bool {
    let place = place(p);
    text.match_indices(&place)
        .any(|(i, _)| !text[i + place.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

fn ends_at(segs: &[(String, SegmentHeader)], file: &str, offset: u64) -> bool {
    segs.last().is_some_and(|(_, h)| {
        let end = bp(&h.meta.end);
        end.file() == file && end.offset == offset
    })
}

fn last_is_open(segs: &[(String, SegmentHeader)]) -> bool {
    segs.last().is_some_and(|(_, h)| h.meta.open_trx.is_some())
}

fn describe_end(segs: &[(String, SegmentHeader)]) -> String {
    match segs.last() {
        None => "nothing stored".into(),
        Some((_, h)) => match &h.meta.open_trx {
            Some(open) => format!(
                "{} segments stored, the last ending at {} inside the transaction that began at {open}",
                segs.len(),
                h.meta.end
            ),
            None => format!(
                "{} segments stored, the last ending at {} between transactions",
                segs.len(),
                h.meta.end
            ),
        },
    }
}

/// A copy of the store directory `from` at `to` without the segment file `name`.
fn store_without(from: &Path, to: &Path, name: &str) -> anyhow::Result<PathBuf> {
    copy_dir(from, to)?;
    std::fs::remove_file(segments_dir(to).join(name))?;
    Ok(to.to_owned())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Waiting on the store, with the agent watched
// ---------------------------------------------------------------------------------------

/// Fails with the logs when the agent has exited or logged that it stopped.
fn still_running(agent: &mut Agent, shipper: &Shipper) -> anyhow::Result<()> {
    let exited = agent.try_exit()?;
    let log = agent.log_text();
    if exited.is_some() || log.contains("agent stopped") {
        bail!(
            "the agent stopped ({exited:?})\nagent log:\n{}\nshipper log:\n{}",
            tail(&log, 300),
            tail(&shipper.log_text(), 100)
        );
    }
    Ok(())
}

/// Polls the store every `poll` until `done` holds, for at most `limit`; fails at once when
/// the agent stops, and with both logs on a timeout.
async fn wait_store<F>(
    what: &str,
    agent: &mut Agent,
    shipper: &Shipper,
    index: &mut StoreIndex,
    limit: Duration,
    poll: Duration,
    mut done: F,
) -> anyhow::Result<Headers>
where
    F: FnMut(&Agent, &[(String, SegmentHeader)]) -> bool,
{
    let until = Instant::now() + limit;
    loop {
        still_running(agent, shipper)?;
        let segs = index.refresh(&shipper.store_dir)?;
        if done(&*agent, segs.as_slice()) {
            return Ok(segs);
        }
        if Instant::now() > until {
            bail!(
                "timed out after {limit:?} waiting for {what} ({})\nagent log:\n{}\nshipper log:\n{}",
                describe_end(&segs),
                tail(&agent.log_text(), 300),
                tail(&shipper.log_text(), 100)
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// Waits until the stored chain ends at the server's current position (nothing is written
/// meanwhile), for at most `limit`.
async fn wait_stored_to_end(
    db: &MariaDb,
    agent: &mut Agent,
    shipper: &Shipper,
    index: &mut StoreIndex,
    limit: Duration,
) -> anyhow::Result<Headers> {
    let (file, pos) = db.master_status().await?;
    wait_store(
        &format!("the stored chain to reach {file}:{pos}"),
        agent,
        shipper,
        index,
        limit,
        Duration::from_millis(250),
        |_, segs| ends_at(segs, &file, pos),
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Comparing with the server's binlog without holding it in memory
// ---------------------------------------------------------------------------------------

fn keep(h: &EventHeader) -> bool {
    h.flags & ARTIFICIAL == 0 && h.log_pos != 0 && h.event_type != ANNOTATE_ROWS
}

/// Reads into `buf` until it is full or the reader ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The events of the binlog files in a directory, one at a time, file after file.
struct FileEvents {
    files: VecDeque<PathBuf>,
    current: Option<(String, BufReader<File>)>,
}

impl FileEvents {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(FileEvents {
            files: binlog_files_in(dir)?.into(),
            current: None,
        })
    }

    fn next(&mut self) -> anyhow::Result<Option<BinlogEvent>> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.pop_front() else {
                    return Ok(None);
                };
                let mut r = BufReader::with_capacity(1 << 20, File::open(&path)?);
                let mut magic = [0u8; 4];
                r.read_exact(&mut magic)?;
                ensure!(
                    magic == *BINLOG_MAGIC,
                    "{} is not a binlog file",
                    path.display()
                );
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.current = Some((name, r));
            }
            let Some((name, r)) = self.current.as_mut() else {
                continue;
            };
            let name = name.clone();
            let mut head = [0u8; EVENT_HEADER_LEN];
            let got = read_full(r, &mut head)?;
            if got == 0 {
                self.current = None;
                continue;
            }
            ensure!(
                got == EVENT_HEADER_LEN,
                "{name} ends inside an event header"
            );
            let size = u32::from_le_bytes([head[9], head[10], head[11], head[12]]) as usize;
            ensure!(
                size >= EVENT_HEADER_LEN,
                "{name}: an event declares {size} bytes"
            );
            let mut ev = Vec::with_capacity(size);
            ev.extend_from_slice(&head);
            ev.resize(size, 0);
            r.read_exact(&mut ev[EVENT_HEADER_LEN..])
                .with_context(|| format!("{name} ends inside an event"))?;
            let h = EventHeader::parse(&ev)?;
            if keep(&h) {
                return Ok(Some(BinlogEvent {
                    file: name,
                    log_pos: h.log_pos,
                    event_type: h.event_type,
                    bytes: ev,
                }));
            }
        }
    }
}

/// The events of the stored chain as `export` rebuilds them, one segment in memory at a
/// time.
struct StoreEvents {
    store_dir: PathBuf,
    dir: PathBuf,
    names: VecDeque<String>,
    export: ExportFiles,
    last_file: Option<String>,
    queue: VecDeque<BinlogEvent>,
}

impl StoreEvents {
    fn open(store_dir: &Path) -> anyhow::Result<Self> {
        let dir = segments_dir(store_dir);
        Ok(StoreEvents {
            store_dir: store_dir.to_owned(),
            names: lfs_names(&dir)?.into(),
            dir,
            export: ExportFiles::default(),
            last_file: None,
            queue: VecDeque::new(),
        })
    }

    fn next(&mut self) -> anyhow::Result<Option<BinlogEvent>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            let Some(name) = self.names.pop_front() else {
                return Ok(None);
            };
            let bytes = std::fs::read(self.dir.join(&name))?;
            let seg =
                Segment::decode(bytes, &DecodeLimits::default()).with_context(|| name.clone())?;
            let seg = logferry_integration::store::with_key(&self.store_dir, seg);
            let payload = seg.payload().with_context(|| name.clone())?;
            let start = bp(seg.header.meta.events_start());
            self.export
                .push_segment(start, &payload)
                .with_context(|| name.clone())?;
            for (file, piece) in self.export.drain() {
                let mut rest: &[u8] = &piece;
                if self.last_file.as_deref() != Some(file.as_str()) {
                    rest = rest
                        .strip_prefix(&BINLOG_MAGIC[..])
                        .with_context(|| format!("the export of {file} has no binlog magic"))?;
                    self.last_file = Some(file.clone());
                }
                while !rest.is_empty() {
                    let h = EventHeader::parse(rest)?;
                    let (ev, after) = rest.split_at(h.event_size as usize);
                    rest = after;
                    if keep(&h) {
                        self.queue.push_back(BinlogEvent {
                            file: file.clone(),
                            log_pos: h.log_pos,
                            event_type: h.event_type,
                            bytes: ev.to_vec(),
                        });
                    }
                }
            }
        }
    }
}

/// Like `common::assert_same_events_as_server` (every event of the server's binlog, as the
/// stock tool copies it, stored exactly once and byte for byte) but streamed: the stock
/// copy goes to disk under `work` and both sides are read an event at a time, so gigabytes
/// compare in a few MiB of memory. Returns the number of events.
fn assert_same_events_streaming(
    db: &MariaDb,
    store_dir: &Path,
    work: &Path,
) -> anyhow::Result<u64> {
    let remote = work.join("remote-binlog");
    std::fs::create_dir_all(&remote)?;
    let out = store::stock_copy(db.port, "mysql-bin.000001", &remote)
        .output()
        .context("cannot run mariadb-binlog")?;
    ensure!(
        out.status.success(),
        "mariadb-binlog failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut theirs = FileEvents::open(&remote)?;
    let mut ours = StoreEvents::open(store_dir)?;
    let show = |e: &BinlogEvent| format!("{}:{} type {}", e.file, e.log_pos, e.event_type);
    let mut n = 0u64;
    loop {
        match (ours.next()?, theirs.next()?) {
            (None, None) => break,
            (Some(a), None) => {
                let mut more = 1u64;
                while ours.next()?.is_some() {
                    more += 1;
                }
                bail!(
                    "the store holds {more} event(s) more than the server's {n}, from {} on",
                    show(&a)
                );
            }
            (None, Some(b)) => {
                let mut more = 1u64;
                while theirs.next()?.is_some() {
                    more += 1;
                }
                bail!(
                    "the store lacks {more} of the server's events, from {} on (after {n} equal ones)",
                    show(&b)
                );
            }
            (Some(a), Some(b)) => {
                ensure!(
                    show(&a) == show(&b),
                    "event {n} differs: stored {}, the server has {}",
                    show(&a),
                    show(&b)
                );
                ensure!(
                    a.bytes == b.bytes,
                    "event {n} ({}) differs in its bytes",
                    show(&a)
                );
                n += 1;
            }
        }
    }
    // The copy is as large as the server's binlog; the disk is needed for the restores.
    std::fs::remove_dir_all(&remote)?;
    Ok(n)
}
