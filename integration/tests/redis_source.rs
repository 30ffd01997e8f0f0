//! The Redis source against a real redis-server: the first full sync becomes the
//! stream's snapshot, commands arrive as AOF-form segments, a `kill -9` of the agent
//! resumes with `+CONTINUE` (nothing lost, nothing twice), and bad logins are named.

mod common;

use std::time::Duration;

use common::shipper_cli;
use logferry_common::format::redis::walk;
use logferry_common::snapshot::{SnapshotContent, SnapshotManifest};
use logferry_integration::logferry::{Agent, Shipper, TEST_TOKEN};
use logferry_integration::redis::RedisServer;
use logferry_integration::{store, wait_for};

const STREAM: &str = "cache";

fn config(dir: &std::path::Path, redis_url: &str, shipper: &Shipper) -> String {
    format!(
        "[agent]\nstream = \"{STREAM}\"\nspool_dir = \"{}\"\n\n\
         [source]\ntype = \"redis\"\nurl = \"{redis_url}\"\nconnect_timeout_ms = 3000\n\n\
         [segment]\nmax_age_ms = 200\n\n\
         [shipper]\nurl = \"{}\"\nretry_max_ms = 1000\ntoken = \"{TEST_TOKEN}\"\n{}\n",
        dir.join("spool").display(),
        shipper.url(),
        shipper.agent_tls_lines()
    )
}

/// Every stored command after the preamble, with its db, in chain order; checks that each
/// segment starts where the one before it ended.
fn stored_commands(shipper: &Shipper) -> anyhow::Result<Vec<(u32, Vec<String>)>> {
    let segs = store::segments(&shipper.store_dir, STREAM)?;
    let mut out = Vec::new();
    let mut db = 0;
    for (i, (key, s)) in segs.iter().enumerate() {
        if i > 0 {
            let before = &segs[i - 1].1.header.meta.end;
            anyhow::ensure!(
                &s.header.meta.start == before,
                "{key} starts at {} but the chain ended at {before}",
                s.header.meta.start
            );
        }
        let payload = s.payload()?;
        walk(&payload, |c| {
            if let Some(d) = c.selected_db() {
                db = d;
            }
            if !c.preamble && !c.is("SELECT") {
                out.push((
                    db,
                    c.args
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect(),
                ));
            }
            Ok(true)
        })?;
    }
    Ok(out)
}

async fn wait_stored(shipper: &Shipper, key: &str) -> anyhow::Result<Vec<(u32, Vec<String>)>> {
    wait_for(
        &format!("{key} to be stored"),
        Duration::from_secs(60),
        || {
            let found = stored_commands(shipper);
            async move {
                let cmds = found?;
                Ok(cmds
                    .iter()
                    .any(|(_, a)| a.get(1).is_some_and(|k| k == key))
                    .then_some(cmds))
            }
        },
    )
    .await
}

fn snapshots(shipper: &Shipper) -> anyhow::Result<Vec<SnapshotManifest>> {
    let dir = shipper
        .store_dir
        .join(logferry_common::keys::snapshots_prefix(&STREAM.parse()?));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path().join("manifest.json");
        if let Ok(bytes) = std::fs::read(&path) {
            out.push(SnapshotManifest::from_json(&bytes)?);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_snapshot_then_commands_and_a_kill_resumes_with_continue() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let redis = RedisServer::start(&tmp.path().join("redis"), &[]).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    redis.script("SELECT 0\nSET before:a 1\nSELECT 2\nSET before:b 2\nHSET before:h f v\n")?;

    let dir = tmp.path().join("agent");
    let mut agent = Agent::start_config(&dir, &config(&dir, &redis.url(), &shipper), &[])?;
    let first = wait_for("the full sync's snapshot", Duration::from_secs(60), || {
        let s = snapshots(&shipper);
        async move { Ok(s?.into_iter().next()) }
    })
    .await
    .map_err(|e| e.context(agent.log_text()))?;
    let SnapshotContent::Redis(content) = &first.content else {
        anyhow::bail!("not a Redis snapshot: {first:?}");
    };
    let keys: Vec<(u32, u64)> = content.keys.iter().map(|d| (d.db, d.keys)).collect();
    assert_eq!(keys, vec![(0, 1), (2, 2)], "{content:?}");
    assert!(
        agent.log_text().contains("+FULLRESYNC"),
        "{}",
        agent.log_text()
    );

    redis.script(
        "SELECT 3\nSET live:1 x\nMULTI\nINCR live:counter\nINCR live:counter\nEXEC\nSET live:2 y\n",
    )?;
    let cmds = wait_stored(&shipper, "live:2").await?;
    let names: Vec<&str> = cmds.iter().map(|(_, a)| a[0].as_str()).collect();
    assert!(
        names
            .windows(4)
            .any(|w| w[0].eq_ignore_ascii_case("MULTI") && w[3].eq_ignore_ascii_case("EXEC")),
        "{names:?}"
    );
    assert!(cmds.iter().all(|(db, _)| *db == 3), "{cmds:?}");

    agent.kill9();
    redis.script("SELECT 1\nSET while-down:1 z\n")?;
    agent.restart()?;
    redis.script("SET after:1 w\n")?;
    let cmds = wait_stored(&shipper, "after:1").await?;
    let log = agent.log_text();
    assert!(log.contains("+CONTINUE"), "{log}");
    assert_eq!(
        log.matches("+FULLRESYNC").count(),
        1,
        "a restart must not resync: {log}"
    );
    for key in ["live:1", "live:2", "while-down:1", "after:1"] {
        let n = cmds
            .iter()
            .filter(|(_, a)| a.get(1).is_some_and(|k| k == key))
            .count();
        assert_eq!(n, 1, "{key} stored {n} times: {cmds:?}");
    }
    assert_eq!(snapshots(&shipper)?.len(), 1, "no second snapshot");

    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "{out}");
    // Restore is not built for Redis yet: it must refuse, never report a restore.
    let (code, out) = shipper_cli(&[
        "restore",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--to",
        "latest",
        "--target",
        &redis.url(),
    ])?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not in this build"), "{out}");
    Ok(())
}

/// Starts an agent on `redis_url`, which must stop it with an error; its log.
async fn refused_start(
    dir: &std::path::Path,
    redis_url: &str,
    shipper: &Shipper,
) -> anyhow::Result<String> {
    let mut agent = Agent::start_config(dir, &config(dir, redis_url, shipper), &[])?;
    let status = wait_for("the agent to stop", Duration::from_secs(30), || {
        let s = agent.try_exit();
        async move { s }
    })
    .await
    .map_err(|e| e.context(agent.log_text()))?;
    anyhow::ensure!(!status.success(), "the agent exited 0 on {redis_url}");
    Ok(agent.log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_a_server_that_is_not_redis_are_named() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let redis = RedisServer::start(&tmp.path().join("redis"), &["--requirepass", "s3cret"]).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let wrong = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let dir = tmp.path().join("agent");
    let log = refused_start(&dir, &wrong, &shipper).await?;
    assert!(log.contains("refused the login"), "{log}");
    assert!(
        !log.contains("s3cret") && !log.contains(":wrong@"),
        "a password in the log: {log}"
    );

    // An HTTP server answers, but not as Redis.
    let http = Shipper::start_plain_http(&tmp.path().join("http"), &[]).await?;
    let not_redis = http.url().replace("http://", "redis://");
    let dir = tmp.path().join("agent2");
    let log = refused_start(&dir, &not_redis, &shipper).await?;
    assert!(
        log.contains("not speak the Redis protocol") || log.contains("it is not Redis"),
        "{log}"
    );
    Ok(())
}
