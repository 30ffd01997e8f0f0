//! The agent crashed inside each window the durability rules name (through its crash
//! points, the `failpoints` feature that `scripts/test` builds it with) loses nothing and
//! duplicates nothing once restarted.
//!
//! These are process crashes (`abort`): what was written before the crash point is still
//! in the page cache, so the windows "after the write, before the fsync" show that the
//! half-done file is set aside and its range read again, not what a power cut would leave
//! (which is what the fsync is for, and which cannot be staged here).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_stored_exactly_and_verified, settings, wait_caught_up};
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::workload;

/// Runs a workload, lets the agent crash at `point` on its `hits`-th pass, restarts it
/// without the crash point, and checks the stored chain against the server.
async fn crash_at(point: &str, hits: u32) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let plan = format!("{point}={}*off->return", hits - 1);
    let mut agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        &settings(&db, &shipper),
        &[("FAILPOINTS", plan.as_str())],
    )?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(workload::run_until(db.conn().await?, 0, stop.clone()));

    let status = agent.wait_exit(Duration::from_secs(120)).await?;
    let log = agent.log_text();
    let Some(status) = status else {
        anyhow::bail!(
            "the agent did not reach crash point {point} in 120 s; it must be built with \
             --features logferry-agent/failpoints (scripts/test does):\n{log}"
        );
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(6),
        "the agent should have aborted at {point}, not exited with {status}:\n{log}"
    );
    assert!(
        log.contains("built with crash points"),
        "the agent was built without crash points:\n{log}"
    );

    agent.set_env(&[]);
    agent.restart()?;
    stop.store(true, Ordering::Relaxed);
    let transactions = task.await??;
    assert!(transactions > 0, "the workload ran");
    wait_caught_up(&db, &shipper, &agent).await?;
    assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_spool_write_before_its_fsync() -> anyhow::Result<()> {
    crash_at("spool-segment-before-fsync", 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_an_upload_before_its_checkpoint() -> anyhow::Result<()> {
    crash_at("ship-after-upload-before-checkpoint", 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_the_checkpoint_and_the_spool_delete() -> anyhow::Result<()> {
    crash_at("spool-after-checkpoint-before-delete", 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_checkpoint_write_before_its_fsync() -> anyhow::Result<()> {
    crash_at("spool-checkpoint-before-fsync", 5).await
}
