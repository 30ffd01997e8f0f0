//! A restore stopped by the operator (SIGINT, SIGTERM) midway: it stops at a transaction
//! boundary, puts the target's settings back, says where the target stands, and the next
//! run either continues (`--resume`) or starts over (`--force`) to the primary's exact
//! checksums.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{run_snapshot, settings, shipper_cli, snapshot_section, wait_caught_up};
use logferry_integration::delay_proxy::DelayProxy;
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::process::{Proc, RUN_WITHIN};
use logferry_integration::{wait_for, workload};
use mysql_async::prelude::Queryable;

/// `logferry-shipper restore --to latest` into the server on `port`, in the background.
fn restore_process(
    shipper: &Shipper,
    port: u16,
    extra: &[&str],
    log: &Path,
) -> anyhow::Result<Proc> {
    let mut cmd = logferry_integration::logferry::shipper_command()?;
    cmd.args([
        "restore",
        "--store",
        &shipper.store_url(),
        "--stream",
        common::STREAM,
        "--to",
        "latest",
        "--target",
        &format!("mysql://root@127.0.0.1:{port}"),
    ])
    .args(extra);
    Proc::spawn("restore", cmd, log)
}

/// Rows of `app.audit` on `db`, `None` while the table does not exist yet.
async fn audit_rows(db: &MariaDb) -> anyhow::Result<Option<u64>> {
    let mut c = db.conn().await?;
    Ok(c.query_first("SELECT COUNT(*) FROM app.audit")
        .await
        .ok()
        .flatten())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_puts_the_target_back_then_resumes_or_starts_over(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 50).await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    s.extra_toml = snapshot_section(&replica, None);
    // Small segments, many more than the pieces in flight and the pipes between the
    // collector and the server hold: a stop must reach a collector that is still busy.
    s.segment_extra = "max_bytes = 4096".into();
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;
    let at_snapshot = audit_rows(&replica).await?.unwrap_or(0);
    workload::run(&mut c, 50, 2050).await?;
    wait_caught_up(&primary, &shipper, &agent).await?;
    let want = workload::checksums(&mut c).await?;
    let all_audit = audit_rows(&primary).await?.unwrap_or(0);

    for (signal, then) in [("INT", "--resume"), ("TERM", "--force")] {
        let target = MariaDb::start(Options::without_binlog(30)).await?;
        // Every statement of the replay waits a round trip: slow enough to stop midway.
        let slow = DelayProxy::start(
            ([127, 0, 0, 1], target.port).into(),
            Duration::from_millis(1),
        )
        .await?;
        let log = tmp.path().join(format!("restore-{signal}.log"));
        let mut p = restore_process(&shipper, slow.port, &[], &log)?;
        wait_for("the replay to start", Duration::from_secs(120), || async {
            Ok(audit_rows(&target).await?.filter(|n| *n > at_snapshot))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", p.log()))?;
        let pid = p
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the restore has no pid"))?;
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        assert!(sent.success());
        let status = p.wait_within(RUN_WITHIN)?;
        let out = p.log();
        assert_eq!(status.code(), Some(130), "SIG{signal}: {out}");
        assert!(
            out.contains("INTERRUPTED restore")
                && out.contains("last applied:")
                && out.contains("--resume"),
            "{out}"
        );
        let mut t = target.conn().await?;
        let flush: Option<u8> = t
            .query_first("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit")
            .await?;
        assert_eq!(flush, Some(1), "the target's durability is put back: {out}");
        let stopped_at = audit_rows(&target).await?.unwrap_or(0);
        assert!(
            stopped_at < all_audit,
            "SIG{signal} stopped before the end: {out}"
        );

        let restore = |to: &str, flag: &str| {
            shipper_cli(&[
                "restore",
                "--store",
                &shipper.store_url(),
                "--stream",
                common::STREAM,
                "--to",
                to,
                "--target",
                &target.root_url(),
                flag,
            ])
        };
        if then == "--resume" {
            // A resume goes to the same target as the run it continues.
            let (code, out) = restore("2001-01-01T00:00:00Z", "--resume")?;
            assert_eq!(code, 2, "{out}");
            assert!(out.contains("went --to latest"), "{out}");
        } else {
            // A resumed run killed outright leaves nothing to resume from a second time:
            // the transactions it applied would otherwise be applied again.
            let log = tmp.path().join("resumed-then-killed.log");
            let mut p = restore_process(&shipper, slow.port, &["--resume"], &log)?;
            wait_for(
                "the resumed replay to move",
                Duration::from_secs(120),
                || async { Ok(audit_rows(&target).await?.filter(|n| *n > stopped_at)) },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", p.log()))?;
            p.kill9();
            // Its clients run in their own process group and finish what they were sent.
            let clients = format!("--port={}", slow.port);
            wait_for(
                "the killed restore's clients to exit",
                Duration::from_secs(60),
                || async {
                    let running = std::process::Command::new("pgrep")
                        .args(["-f", "--", &clients])
                        .status()?
                        .success();
                    Ok((!running).then_some(()))
                },
            )
            .await?;
            let (code, out) = restore("latest", "--resume")?;
            assert_eq!(code, 2, "{out}");
            assert!(out.contains("records no interrupted restore"), "{out}");
        }
        let (code, out) = restore("latest", then)?;
        assert_eq!(code, 0, "{then} after SIG{signal}: {out}");
        assert_eq!(workload::checksums(&mut t).await?, want, "{then}: {out}");
        let progress: Vec<String> = t.query("SHOW DATABASES LIKE 'logferry_restore'").await?;
        assert!(progress.is_empty(), "the progress record is gone: {out}");
    }

    // Nothing to resume on a target no restore was interrupted on.
    let fresh = MariaDb::start(Options::without_binlog(31)).await?;
    let (code, out) = shipper_cli(&[
        "restore",
        "--store",
        &shipper.store_url(),
        "--stream",
        common::STREAM,
        "--to",
        "latest",
        "--target",
        &fresh.root_url(),
        "--resume",
    ])?;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("records no interrupted restore"), "{out}");
    Ok(())
}
