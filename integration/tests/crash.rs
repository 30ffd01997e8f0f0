//! Crashes in the middle of a running workload lose nothing and duplicate nothing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_stored_exactly_and_verified, settings, wait_caught_up};
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::{store, workload};
use mysql_async::prelude::Queryable;

/// Segments stored for the test stream (a directory count: cheap enough to poll).
fn stored(shipper: &Shipper) -> usize {
    std::fs::read_dir(
        shipper
            .store_dir
            .join(format!("streams/{}/segments", common::STREAM)),
    )
    .map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".lfs"))
            .count()
    })
}

/// Waits until `n` more segments than `than` are stored; fails if the agent exits.
async fn stored_more(
    shipper: &Shipper,
    agent: &mut Agent,
    than: usize,
    n: usize,
) -> anyhow::Result<usize> {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = stored(shipper);
        if now >= than + n {
            return Ok(now);
        }
        anyhow::ensure!(
            agent.try_exit()?.is_none(),
            "the agent stopped:\n{}",
            agent.log_text()
        );
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "{n} more segments than {than} were not stored within 60 s:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the server's binlog has moved past where it stood.
async fn server_moves(db: &MariaDb) -> anyhow::Result<()> {
    let before = db.master_status().await?;
    logferry_integration::wait_for(
        "the server to write more",
        Duration::from_secs(60),
        || async { Ok((db.master_status().await? != before).then_some(())) },
    )
    .await
}

/// Waits until the agent, its uploads failing since the shipper went away, holds spooled
/// segments.
async fn spools(agent: &Agent) -> anyhow::Result<()> {
    let retries = "logferry_agent_ship_retries_total";
    let before = agent.metric(retries).await?;
    logferry_integration::wait_for(
        "the agent to spool while the shipper is down",
        Duration::from_secs(60),
        || async {
            let failing = agent.metric(retries).await? > before;
            Ok((failing && agent.spooled() > 0).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))
}

/// Starts a workload in the background; returns the stop flag and its task.
async fn background_workload(
    db: &MariaDb,
) -> anyhow::Result<(
    Arc<AtomicBool>,
    tokio::task::JoinHandle<anyhow::Result<u64>>,
)> {
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(workload::run_until(c, 0, stop.clone()));
    Ok((stop, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_workload_resumes_without_loss_or_duplicates() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    let (stop, task) = background_workload(&db).await?;

    let mut count = 0;
    for round in 0..4 {
        // Killed after a different number of new segments each round, with the server
        // writing on while the agent is down.
        count = stored_more(&shipper, &mut agent, count, 2 + round).await?;
        agent.kill9();
        if round == 1 {
            db.conn().await?.query_drop("FLUSH BINARY LOGS").await?;
        }
        server_moves(&db).await?;
        common::restart_connected(&mut agent).await?;
    }
    count = stored_more(&shipper, &mut agent, count, 2).await?;
    let status = agent.terminate()?;
    assert!(
        status.success(),
        "SIGTERM should stop the agent cleanly: {status}\n{}",
        agent.log_text()
    );
    common::restart_connected(&mut agent).await?;
    stored_more(&shipper, &mut agent, count, 1).await?;
    stop.store(true, Ordering::Relaxed);
    let transactions = task.await??;
    assert!(
        transactions > 100,
        "the workload ran only {transactions} transactions"
    );

    wait_caught_up(&db, &shipper, &agent).await?;
    let log = agent.log_text();
    let resumed = log.matches("starting binlog dump").count();
    assert!(
        resumed >= 6,
        "expected 6 starts of the agent, saw {resumed}\n{log}"
    );
    assert!(
        log.contains("resume=Some(\"mysql-bin.000002:"),
        "a restart resumed in the second binlog file\n{log}"
    );
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_killed_mid_workload_agent_spools_then_drains() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let mut shipper = Shipper::start(tmp.path()).await?;
    let mut agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    let (stop, task) = background_workload(&db).await?;

    let count = stored_more(&shipper, &mut agent, 0, 3).await?;
    shipper.kill9();
    spools(&agent).await?;
    shipper.restart().await?;
    stored_more(&shipper, &mut agent, count, 2).await?;
    shipper.kill9();
    spools(&agent).await?;
    shipper.restart().await?;
    stop.store(true, Ordering::Relaxed);
    task.await??;

    wait_caught_up(&db, &shipper, &agent).await?;
    // The chain's end is stored a moment before the agent acknowledges and deletes it.
    logferry_integration::wait_for(
        "the spool to drain once the shipper is back",
        Duration::from_secs(60),
        || async { Ok((agent.spooled() == 0).then_some(())) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))?;
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    let metrics = agent.metrics().await?;
    let retries = metrics
        .lines()
        .find(|l| l.starts_with("logferry_agent_ship_retries_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        retries > 0,
        "uploads were retried while the shipper was down\n{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_resumes_by_gtid_after_kills() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&db, &shipper);
    s.source_extra = "resume = \"gtid\"".into();
    let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
    let (stop, task) = background_workload(&db).await?;
    let mut count = 0;
    for round in 0..3 {
        count = stored_more(&shipper, &mut agent, count, 2 + round).await?;
        agent.kill9();
        server_moves(&db).await?;
        common::restart_connected(&mut agent).await?;
    }
    stored_more(&shipper, &mut agent, count, 1).await?;
    stop.store(true, Ordering::Relaxed);
    task.await??;
    wait_caught_up(&db, &shipper, &agent).await?;
    let log = agent.log_text();
    assert!(
        log.matches("by_gtid=true").count() >= 3,
        "restarts resumed by GTID\n{log}"
    );
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    Ok(())
}

/// A clean restart of the database ends its binlog file with a stop event instead of a
/// rotate; the stream continues in the next file, whether the agent was connected at the
/// shutdown or catches up across it later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restarts_continue_the_chain_in_the_next_binlog_file() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 100).await?;
    wait_caught_up(&db, &shipper, &agent).await?;
    drop(c);

    // Restarted under a connected agent, which reconnects by itself.
    db.restart().await?;
    workload::run(&mut db.conn().await?, 100, 200).await?;
    wait_caught_up(&db, &shipper, &agent).await?;

    // Restarted while the agent is down: it later reads across the stop event.
    agent.kill9();
    workload::run(&mut db.conn().await?, 200, 300).await?;
    db.restart().await?;
    workload::run(&mut db.conn().await?, 300, 400).await?;
    agent.restart()?;
    wait_caught_up(&db, &shipper, &agent).await?;

    let (file, _) = db.master_status().await?;
    assert_eq!(file, "mysql-bin.000003", "two restarts, three files");
    let events = assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    assert!(events > 400, "only {events} events stored");
    Ok(())
}

/// A crashed database leaves a binlog file that ends with no marker. The server moves on to
/// the next file only after sending that one to its end, and its fake rotate to the next
/// file is kept as the proof: the chain continues, with the agent connected at the crash or
/// catching up across it later, and a transaction cut by the crash is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_crashes_continue_the_chain_in_the_next_binlog_file() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    let (stop, task) = background_workload(&db).await?;
    stored_more(&shipper, &mut agent, 0, 3).await?;

    // Killed under a connected agent and a running workload.
    db.crash_and_restart().await?;
    stop.store(true, Ordering::Relaxed);
    let _ = task.await?;
    workload::run(&mut db.conn().await?, 100_000, 100_100).await?;
    wait_caught_up(&db, &shipper, &agent).await?;

    // Killed while the agent is down: it later reads across the end of the crashed file.
    agent.kill9();
    workload::run(&mut db.conn().await?, 100_100, 100_200).await?;
    db.crash_and_restart().await?;
    workload::run(&mut db.conn().await?, 100_200, 100_300).await?;
    agent.restart()?;
    wait_caught_up(&db, &shipper, &agent).await?;

    let (file, _) = db.master_status().await?;
    assert_eq!(file, "mysql-bin.000003", "two crashes, three files");
    let log = agent.log_text();
    assert!(!log.contains("gap in the change log"), "{log}");
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;

    // Replayed by the stock tools, the stored files give what the recovered server holds.
    let files = store::export_files(&store::segments(&shipper.store_dir, common::STREAM)?)?;
    assert_eq!(files.len(), 3, "one file image per server binlog file");
    let paths = store::decode_with_stock_tool(&files, &tmp.path().join("export"))?;
    let fresh = MariaDb::start(Options::without_binlog(2)).await?;
    store::replay(&paths, fresh.port)?;
    let want = workload::checksums(&mut db.conn().await?).await?;
    assert_eq!(workload::checksums(&mut fresh.conn().await?).await?, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_spool_directory_resumes_from_the_shippers_head() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    let (stop, task) = background_workload(&db).await?;
    let count = stored_more(&shipper, &mut agent, 0, 3).await?;
    agent.kill9();
    std::fs::remove_dir_all(&agent.spool_dir)?;
    agent.restart()?;
    stored_more(&shipper, &mut agent, count, 2).await?;
    stop.store(true, Ordering::Relaxed);
    task.await??;
    wait_caught_up(&db, &shipper, &agent).await?;
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlog_stops_the_agent_with_a_gap_error() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 50).await?;
    wait_caught_up(&db, &shipper, &agent).await?;
    agent.kill9();
    workload::run(&mut c, 50, 100).await?;
    c.query_drop("FLUSH BINARY LOGS").await?;
    workload::run(&mut c, 100, 150).await?;
    c.query_drop("FLUSH BINARY LOGS").await?;
    c.query_drop("PURGE BINARY LOGS TO 'mysql-bin.000003'")
        .await?;
    agent.restart()?;
    let mut status = None;
    for _ in 0..300 {
        status = agent.try_exit()?;
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the agent stops: {status:?}\n{log}"
    );
    assert!(
        log.contains("gap in the change log") && log.contains("snapshot"),
        "{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_stopped_with_sigterm_under_load_exits_cleanly_and_loses_nothing(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let mut shipper = Shipper::start(tmp.path()).await?;
    let agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    let (stop, task) = background_workload(&db).await?;
    logferry_integration::wait_for("segments to be stored", Duration::from_secs(60), || {
        let dir = shipper.store_dir.clone();
        async move {
            let n = store::segments(&dir, common::STREAM)?.len();
            Ok((n >= 3).then_some(()))
        }
    })
    .await?;
    let status = shipper.terminate()?;
    assert!(status.success(), "{status:?}\n{}", shipper.log_text());
    assert!(
        shipper.log_text().contains("shipper stopped"),
        "{}",
        shipper.log_text()
    );
    shipper.restart().await?;
    stop.store(true, Ordering::Relaxed);
    task.await??;
    wait_caught_up(&db, &shipper, &agent).await?;
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    Ok(())
}

/// Unmounts a tmpfs when dropped, also when the test fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "1m") at `dir` (needs root, as CI runs).
    fn mount(dir: &std::path::Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "cannot mount a tmpfs at {} (this test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_pauses_reading_and_loses_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let mut shipper = Shipper::start(tmp.path()).await?;
    let agent_dir = tmp.path().join("agent");
    let _disk = Tmpfs::mount(&agent_dir.join("spool"), "1m")?;
    let mut s = settings(&db, &shipper);
    s.segment_extra = "max_bytes = 65536".into();
    let mut agent = Agent::start(&agent_dir, &s)?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 50).await?;
    wait_caught_up(&db, &shipper, &agent).await?;

    shipper.kill9();
    let mut next = 50;
    while agent.metric("logferry_agent_spool_disk_full").await? < 1.0 {
        assert!(
            agent.try_exit()?.is_none(),
            "the agent stopped:\n{}",
            agent.log_text()
        );
        assert!(
            next < 50 + 100 * 200,
            "the 1 MiB spool disk never filled after {next} transactions:\n{}",
            agent.log_text()
        );
        workload::run(&mut c, next, next + 100).await?;
        next += 100;
    }
    assert!(agent.log_text().contains("the spool's disk is full"));
    workload::run(&mut c, next, next + 100).await?;
    assert!(agent.try_exit()?.is_none(), "{}", agent.log_text());
    // Stopped and started again while the disk is full: a clean stop, and the new process
    // takes its lock and goes on waiting for room.
    let status = agent.terminate()?;
    assert!(status.success(), "{status:?}\n{}", agent.log_text());
    agent.restart()?;
    workload::run(&mut c, next + 100, next + 150).await?;

    shipper.restart().await?;
    wait_caught_up(&db, &shipper, &agent).await?;
    assert_eq!(agent.metric("logferry_agent_spool_disk_full").await?, 0.0);
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    Ok(())
}
