//! The Redis source against a real redis-server: the first full sync becomes the
//! stream's snapshot, commands arrive as AOF-form segments, a `kill -9` of the agent
//! resumes with `+CONTINUE` (nothing lost, nothing twice), and bad logins are named. A
//! mixed workload over several dbs restores to marks (by time and by offset), exports as an
//! AOF directory redis-server loads, and drills; each compared with the source's own
//! `DEBUG DIGEST` at the mark, and a hole in the chain makes restore and drill say no.

mod common;

use std::time::Duration;

use common::{mark, rfc3339, shipper_cli, shipper_cli_within};
use logferry_common::format::redis::resp::info_field;
use logferry_common::format::redis::walk;
use logferry_common::snapshot::{SnapshotContent, SnapshotManifest};
use logferry_integration::logferry::{Agent, Shipper, TEST_TOKEN};
use logferry_integration::redis::RedisServer;
use logferry_integration::{store, wait_for};

const STREAM: &str = "cache";

fn config(dir: &std::path::Path, redis_url: &str, shipper: &Shipper) -> String {
    config_with(
        dir,
        &format!("url = \"{redis_url}\"\nconnect_timeout_ms = 3000\n"),
        shipper,
    )
}

/// An agent config whose `[source]` (of type redis) holds `source_lines`.
fn config_with(dir: &std::path::Path, source_lines: &str, shipper: &Shipper) -> String {
    format!(
        "[agent]\nstream = \"{STREAM}\"\nspool_dir = \"{}\"\n\n\
         [source]\ntype = \"redis\"\n{source_lines}\n\
         [segment]\nmax_age_ms = 200\n\n\
         [shipper]\nurl = \"{}\"\nretry_max_ms = 1000\ntoken = \"{TEST_TOKEN}\"\n{}\n",
        dir.join("spool").display(),
        shipper.url(),
        shipper.agent_tls_lines()
    )
}

/// Every stored command after the preamble, with its db, in chain order; checks that each
/// segment starts where the one before it ended, or starts a new history (a full resync).
fn stored_commands(shipper: &Shipper) -> anyhow::Result<Vec<(u32, Vec<String>)>> {
    let segs = store::segments(&shipper.store_dir, STREAM)?;
    let mut out = Vec::new();
    let mut db = 0;
    for (i, (key, s)) in segs.iter().enumerate() {
        if i > 0 {
            let before = &segs[i - 1].1.header.meta.end;
            let new_history = s.header.meta.start.as_redis()?.history > before.as_redis()?.history;
            anyhow::ensure!(
                &s.header.meta.start == before || new_history,
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

    // An ACL user that may read but not replicate: refused, and the error names the rule.
    redis.cli(&[
        "ACL",
        "SETUSER",
        "reader",
        "on",
        ">readerpw",
        "~*",
        "+@read",
        "+ping",
    ])?;
    let reader = format!("redis://reader:readerpw@127.0.0.1:{}", redis.port);
    let dir = tmp.path().join("agent3");
    let log = refused_start(&dir, &reader, &shipper).await?;
    assert!(log.contains("+psync +replconf"), "{log}");
    assert!(!log.contains("readerpw"), "a password in the log: {log}");
    Ok(())
}

/// Redis's own digest of the whole keyspace (every db, type, value and expire time).
fn digest(redis: &RedisServer) -> anyhow::Result<String> {
    Ok(redis.cli(&["DEBUG", "DIGEST"])?.trim().to_owned())
}

/// The source's replication offset (`master_repl_offset`).
fn repl_offset(redis: &RedisServer) -> anyhow::Result<u64> {
    Ok(replication_field(redis, "master_repl_offset")?.parse()?)
}

/// Waits until `redis`'s replication offset reaches `at`.
async fn wait_offset(redis: &RedisServer, at: u64, what: &str) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(30), || {
        let now = repl_offset(redis);
        async move { Ok((now? >= at).then_some(())) }
    })
    .await
}

/// A Redis server whose `DEBUG DIGEST` the test may ask.
async fn debug_server(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<RedisServer> {
    let mut args = vec!["--enable-debug-command", "local"];
    args.extend_from_slice(extra);
    RedisServer::start(dir, &args).await
}

/// Runs `logferry-shipper restore` of the stream into `target`; (exit code, output).
fn restore(
    shipper: &Shipper,
    to: &str,
    target: &RedisServer,
    force: bool,
) -> anyhow::Result<(i32, String)> {
    let (url, store) = (target.url(), shipper.store_url());
    let mut args = vec![
        "restore", "--store", &store, "--stream", STREAM, "--to", to, "--target", &url,
    ];
    if force {
        args.push("--force");
    }
    shipper_cli_within(&args, Duration::from_secs(120))
}

const PHASE_A: &str = "SELECT 0\nSETRANGE big 1048575 x\nHSET h f1 v1 f2 v2\nRPUSH l a b c\nSADD st x y z\n\
ZADD z 1 a 2 b\nXADD s * f v\nSET exp v EX 100000\nSELECT 1\nSET a 1\nMULTI\nINCR a\nSET b 2\nEXEC\n\
EVAL \"redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])\" 2 lua cnt v\nSET mark:a 1\n";
const PHASE_B: &str =
    "SELECT 2\nSET c 3\nRENAME c c2\nSELECT 0\nMOVE l 3\nSETRANGE big 0 y\nHDEL h f1\n\
SWAPDB 1 2\nSELECT 1\nFLUSHDB\nSELECT 4\nSET d 4\nSET mark:b 1\n";
const PHASE_C: &str = "SELECT 5\nSET e 5\nZINCRBY z 5 a\nSELECT 0\nSET mark:c 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_to_marks_exports_and_drills_a_mixed_workload() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // A PING to replicas every second: heartbeats between the commands, which the stored
    // #SKIP: lines must count for offsets to be exact.
    let source = debug_server(
        &tmp.path().join("source"),
        &["--repl-ping-replica-period", "1"],
    )
    .await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let dir = tmp.path().join("agent");
    let agent = Agent::start_config(&dir, &config(&dir, &source.url(), &shipper), &[])?;
    wait_snapshots(&shipper, &agent, 1).await?;

    // Each phase's writes are stored before the mark, whose second then ends before the
    // next phase starts: a restore to the mark holds exactly the phase's state.
    source.script(PHASE_A)?;
    wait_stored(&shipper, "mark:a").await?;
    let (digest_a, offset_a, t_a) = (digest(&source)?, repl_offset(&source)?, mark().await);
    source.script(PHASE_B)?;
    wait_stored(&shipper, "mark:b").await?;
    let (digest_b, t_b) = (digest(&source)?, mark().await);
    // A second snapshot (a full sync over a second link) for the drill to compare with.
    let mut snap = agent.snapshot_process("snapshot.log")?;
    let status = snap.wait_within(Duration::from_secs(60))?;
    anyhow::ensure!(status.success(), "snapshot failed: {}", snap.log());
    source.script(PHASE_C)?;
    wait_stored(&shipper, "mark:c").await?;
    let digest_c = digest(&source)?;
    assert_ne!(digest_a, digest_b);

    let target = debug_server(&tmp.path().join("target"), &[]).await?;
    // A target of another kind is named, before anything is touched.
    let (code, out) = shipper_cli(&[
        "restore",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--to",
        "latest",
        "--target",
        "mysql://root@127.0.0.1:3306",
    ])?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("redis://"), "{out}");
    let (code, out) = restore(&shipper, &rfc3339(t_a), &target, false)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        digest(&target)?,
        digest_a,
        "restore to the first mark: {out}"
    );
    assert_eq!(
        target.cli(&["ROLE"])?.lines().next(),
        Some("master"),
        "the target stands alone"
    );
    // A target that holds data is refused without --force, and left as it was.
    let (code, out) = restore(&shipper, &rfc3339(t_b), &target, false)?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--force"), "{out}");
    assert_eq!(digest(&target)?, digest_a);
    let (code, out) = restore(&shipper, &rfc3339(t_b), &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        digest(&target)?,
        digest_b,
        "restore to the second mark: {out}"
    );
    let (code, out) = restore(&shipper, &format!("1:{offset_a}"), &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        digest(&target)?,
        digest_a,
        "restore to the first mark's offset: {out}"
    );
    // Exactly at the end of the first mark's command, and one byte before it.
    let end = command_end(&shipper, "mark:a")?;
    assert!(
        end <= offset_a,
        "the mark's command ends at {end}, after the server's offset {offset_a}"
    );
    let (code, out) = restore(&shipper, &format!("1:{end}"), &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&target)?, digest_a, "restore to 1:{end}: {out}");
    let (code, out) = restore(&shipper, &format!("1:{}", end - 1), &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        target
            .script("SELECT 1\nEXISTS mark:a\nEXISTS lua\n")?
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["OK", "0", "1"],
        "restore to 1:{}: everything before the mark's command, not it: {out}",
        end - 1
    );
    let (code, out) = restore(&shipper, "latest", &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&target)?, digest_c, "restore to latest: {out}");

    // The export loads into a stock redis-server as its AOF.
    let export = tmp.path().join("export");
    let (code, out) = shipper_cli(&[
        "export",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--dir",
        export.to_str().unwrap_or_default(),
    ])?;
    assert_eq!(code, 0, "{out}");
    let loaded = debug_server(
        &export,
        &["--appendonly", "yes", "--appenddirname", "appendonlydir"],
    )
    .await?;
    assert_eq!(digest(&loaded)?, digest_c, "the exported AOF directory");
    // From the chain's start (no base: the first snapshot is of an empty server) the
    // export holds every command, and its #TS: lines let the stock tool cut it at a
    // second: at the first mark, it loads as the state there.
    let segs = store::segments(&shipper.store_dir, STREAM)?;
    let start = segs
        .first()
        .map(|(_, s)| s.header.meta.start.to_string())
        .ok_or_else(|| anyhow::anyhow!("no segments"))?;
    let from_start = tmp.path().join("export-from");
    let (code, out) = shipper_cli(&[
        "export",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--from",
        &start,
        "--dir",
        from_start.to_str().unwrap_or_default(),
    ])?;
    assert_eq!(code, 0, "{out}");
    let cut = std::process::Command::new("redis-check-aof")
        .args(["--truncate-to-timestamp", &(t_a / 1000).to_string()])
        .arg(from_start.join("appendonlydir/appendonly.aof.manifest"))
        .output()?;
    anyhow::ensure!(
        cut.status.success(),
        "redis-check-aof: {}{}",
        String::from_utf8_lossy(&cut.stdout),
        String::from_utf8_lossy(&cut.stderr)
    );
    let loaded = debug_server(
        &from_start,
        &["--appendonly", "yes", "--appenddirname", "appendonlydir"],
    )
    .await?;
    assert_eq!(
        digest(&loaded)?,
        digest_a,
        "the export from the start cut at the first mark"
    );

    let scratch = debug_server(&tmp.path().join("scratch"), &[]).await?;
    let drill = |scratch: &RedisServer| {
        shipper_cli_within(
            &[
                "verify",
                "--store",
                &shipper.store_url(),
                "--stream",
                STREAM,
                "--restore-drill",
                "--target",
                &scratch.url(),
            ],
            Duration::from_secs(120),
        )
    };
    let (code, out) = drill(&scratch)?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK restore drill"), "{out}");
    // A scratch server that holds data is not overwritten.
    scratch.cli(&["SET", "precious", "1"])?;
    let (code, out) = drill(&scratch)?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("already holds data"), "{out}");
    assert_eq!(scratch.cli(&["GET", "precious"])?.trim(), "1");
    scratch.cli(&["FLUSHALL"])?;

    // A segment between the two snapshots goes missing: the restore across it and the
    // drill must say no.
    let segs = store::segments(&shipper.store_dir, STREAM)?;
    let hole = segs
        .iter()
        .find(|(_, s)| s.header.meta.last_event_ms <= t_a)
        .map(|(k, _)| k.clone())
        .ok_or_else(|| anyhow::anyhow!("no segment before the first mark"))?;
    let prefix = logferry_common::keys::segments_prefix(&STREAM.parse()?);
    std::fs::remove_file(shipper.store_dir.join(prefix).join(&hole))?;
    let (code, out) = restore(&shipper, &rfc3339(t_a), &target, true)?;
    assert_ne!(code, 0, "a restore across a hole: {out}");
    assert!(out.contains("nothing is stored from"), "{out}");
    let (code, out) = drill(&scratch)?;
    assert_ne!(code, 0, "a drill over a hole: {out}");
    assert!(
        out.contains("NOT PROVEN") || out.contains("FAILED"),
        "{out}"
    );
    Ok(())
}

/// The stream offset right after the stored command that writes `key`, counted from the
/// segment's start through every command and `#SKIP:` line.
fn command_end(shipper: &Shipper, key: &str) -> anyhow::Result<u64> {
    use logferry_common::format::redis::payload::advance;
    for (_, s) in store::segments(&shipper.store_dir, STREAM)? {
        let mut offset = s.header.meta.start.as_redis()?.offset;
        let mut found = None;
        walk(&s.payload()?, |c| {
            offset = advance(offset, &c)?;
            if !c.preamble && c.args.get(1).is_some_and(|k| *k == key.as_bytes()) {
                found = Some(offset);
            }
            Ok(found.is_none())
        })?;
        if let Some(end) = found {
            return Ok(end);
        }
    }
    anyhow::bail!("no stored command writes {key}")
}

/// `n` writes of 16 KiB values into `db`, as a `redis-cli` script.
fn bulk_writes(prefix: &str, n: usize) -> String {
    let value = "v".repeat(16 * 1024);
    (0..n)
        .map(|i| format!("SET {prefix}:{i} {value}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shipper_drains_the_spool_and_a_lost_backlog_is_a_recorded_break(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // The smallest backlog Redis keeps (16 KiB): a few writes while the agent is down
    // push its offset out of it.
    let source = debug_server(&tmp.path().join("source"), &["--repl-backlog-size", "16kb"]).await?;
    let mut shipper = Shipper::start(tmp.path()).await?;
    let dir = tmp.path().join("agent");
    let mut agent = Agent::start_config(&dir, &config(&dir, &source.url(), &shipper), &[])?;
    wait_snapshots(&shipper, &agent, 1).await?;
    source.script(PHASE_A)?;
    wait_stored(&shipper, "mark:a").await?;
    let (digest_a, t_a) = (digest(&source)?, mark().await);

    // The shipper dies: the agent spools, and drains its spool once the shipper is back.
    shipper.kill9();
    source.script(PHASE_B)?;
    wait_for("the agent to spool", Duration::from_secs(60), || {
        let n = agent.spooled();
        async move { Ok((n > 0).then_some(())) }
    })
    .await
    .map_err(|e| e.context(agent.log_text()))?;
    shipper.restart().await?;
    wait_stored(&shipper, "mark:b").await?;
    let (digest_b, t_b) = (digest(&source)?, mark().await);

    // The agent is down while more than the backlog is written: its PSYNC finds the
    // offset gone, the server answers +FULLRESYNC, and the chain breaks there.
    agent.kill9();
    source.script(&bulk_writes("while-down", 4))?;
    let t_gap = mark().await;
    agent.restart()?;
    wait_for(
        "the full resync's snapshot",
        Duration::from_secs(60),
        || {
            let s = snapshots(&shipper);
            async move { Ok((s?.len() == 2).then_some(())) }
        },
    )
    .await
    .map_err(|e| e.context(agent.log_text()))?;
    let log = agent.log_text();
    assert!(log.contains("the chain breaks here"), "{log}");
    source.script(PHASE_C)?;
    wait_stored(&shipper, "mark:c").await?;
    let digest_c = digest(&source)?;

    let target = debug_server(&tmp.path().join("target"), &[]).await?;
    let (code, out) = restore(&shipper, "latest", &target, false)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        digest(&target)?,
        digest_c,
        "latest, from the resync's snapshot: {out}"
    );
    let (code, out) = restore(&shipper, &rfc3339(t_a), &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&target)?, digest_a, "before the shipper died: {out}");
    // The last second before the break is refused (nothing proves what the lost backlog
    // held in it), and the refusal names the position where the stored commands end,
    // which restores the state there: phase B, shipped through the drained spool.
    let (code, out) = restore(&shipper, &rfc3339(t_b), &target, true)?;
    assert_ne!(code, 0, "{out}");
    let before_break = out
        .split("(--to ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| anyhow::anyhow!("no --to suggested: {out}"))?
        .to_owned();
    let (code, out) = restore(&shipper, &before_break, &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&target)?, digest_b, "at the break: {out}");
    // The writes while the agent was down are in no stored command: a restore to then
    // is refused, naming the break.
    let (code, out) = restore(&shipper, &rfc3339(t_gap), &target, true)?;
    assert_ne!(code, 0, "a restore into the break: {out}");
    assert!(out.contains("full resync"), "{out}");
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_ne!(code, 0, "verify over a break: {out}");
    assert!(out.contains("gap") || out.contains("GAP"), "{out}");
    Ok(())
}

/// Waits until `n` snapshots of the stream are stored.
async fn wait_snapshots(shipper: &Shipper, agent: &Agent, n: usize) -> anyhow::Result<()> {
    wait_for(&format!("{n} snapshots"), Duration::from_secs(60), || {
        let s = snapshots(shipper);
        async move { Ok((s?.len() >= n).then_some(())) }
    })
    .await
    .map_err(|e| e.context(agent.log_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aof_mode_follows_a_rewrite_and_restores_to_marks() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let source_dir = tmp.path().join("source");
    let source = debug_server(
        &source_dir,
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-timestamp-enabled",
            "yes",
        ],
    )
    .await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let dir = tmp.path().join("agent");
    let lines = format!(
        "mode = \"aof\"\naof_dir = \"{}\"\n",
        source_dir.join("appendonlydir").display()
    );
    let mut agent = Agent::start_config(&dir, &config_with(&dir, &lines, &shipper), &[])?;
    wait_snapshots(&shipper, &agent, 1).await?;
    source.script(PHASE_A)?;
    wait_stored(&shipper, "mark:a").await?;
    let (digest_a, t_a) = (digest(&source)?, mark().await);
    // A rewrite with writes around it: a new incremental file, then a new base, stored as
    // a second snapshot.
    source.script(&format!(
        "{}BGREWRITEAOF\n{}",
        bulk_writes("before-rewrite", 8),
        bulk_writes("during-rewrite", 8)
    ))?;
    wait_snapshots(&shipper, &agent, 2).await?;
    source.script(PHASE_B)?;
    wait_stored(&shipper, "mark:b").await?;
    let (digest_b, t_b) = (digest(&source)?, mark().await);
    source.script(PHASE_C)?;
    wait_stored(&shipper, "mark:c").await?;
    let digest_c = digest(&source)?;
    let log = agent.log_text();
    assert!(log.contains("continuing there"), "{log}");

    let target = debug_server(&tmp.path().join("target"), &[]).await?;
    for (to, expected, what) in [
        (rfc3339(t_a), &digest_a, "first mark"),
        (rfc3339(t_b), &digest_b, "second mark, after the rewrite"),
        ("latest".to_owned(), &digest_c, "latest"),
    ] {
        let (code, out) = restore(&shipper, &to, &target, true)?;
        assert_eq!(code, 0, "{what}: {out}");
        assert_eq!(&digest(&target)?, expected, "{what}: {out}");
    }
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "{out}");
    let scratch = debug_server(&tmp.path().join("scratch"), &[]).await?;
    let (code, out) = shipper_cli_within(
        &[
            "verify",
            "--store",
            &shipper.store_url(),
            "--stream",
            STREAM,
            "--restore-drill",
            "--target",
            &scratch.url(),
        ],
        Duration::from_secs(120),
    )?;
    assert_eq!(code, 0, "{out}");

    // Two rewrites while the agent is down: the file its chain ends in is gone, so the
    // chain breaks to a new history from the current base, and latest restores exactly.
    agent.kill9();
    for i in 0..2 {
        source.script(&format!("SET down:{i} x\nBGREWRITEAOF\n"))?;
        wait_for("the rewrite to finish", Duration::from_secs(60), || {
            let info = source.cli(&["INFO", "persistence"]);
            async move { Ok(info?.contains("aof_rewrite_in_progress:0").then_some(())) }
        })
        .await?;
    }
    agent.restart()?;
    wait_snapshots(&shipper, &agent, 3).await?;
    source.script("SET after-break 1\n")?;
    wait_stored(&shipper, "after-break").await?;
    let log = agent.log_text();
    assert!(log.contains("the chain breaks here"), "{log}");
    let digest_d = digest(&source)?;
    let (code, out) = restore(&shipper, "latest", &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&target)?, digest_d, "latest after the break: {out}");

    // Without the rewrite's base, the first base replays across the switch of files.
    let snaps = snapshots(&shipper)?;
    let mut ids: Vec<&str> = snaps.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    let base_dir = shipper
        .store_dir
        .join(logferry_common::keys::snapshots_prefix(&STREAM.parse()?))
        .join(ids[1]);
    std::fs::remove_dir_all(base_dir)?;
    let (code, out) = restore(&shipper, &rfc3339(t_b), &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(ids[0]), "from the first base: {out}");
    assert_eq!(
        digest(&target)?,
        digest_b,
        "across the switch of files: {out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_aof_file_stops_the_agent_with_the_fix_after_shipping_what_precedes(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let source_dir = tmp.path().join("source");
    let aof = source_dir.join("appendonlydir");
    {
        let source = RedisServer::start(
            &source_dir,
            &["--appendonly", "yes", "--appendfsync", "always"],
        )
        .await?;
        source.script("SET whole:1 a\nSET whole:2 b\nSET cut:3 cccccccccccccccc\n")?;
    }
    let incr = std::fs::read_dir(&aof)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .ok_or_else(|| anyhow::anyhow!("no incremental file in {}", aof.display()))?;
    let len = std::fs::metadata(&incr)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&incr)?
        .set_len(len - 7)?;

    let shipper = Shipper::start(tmp.path()).await?;
    let dir = tmp.path().join("agent");
    let lines = format!("mode = \"aof\"\naof_dir = \"{}\"\n", aof.display());
    let mut agent = Agent::start_config(&dir, &config_with(&dir, &lines, &shipper), &[])?;
    let cmds = wait_stored(&shipper, "whole:2").await?;
    assert!(
        !cmds
            .iter()
            .any(|(_, a)| a.get(1).is_some_and(|k| k == "cut:3")),
        "{cmds:?}"
    );
    let status = wait_for("the agent to stop", Duration::from_secs(60), || {
        let s = agent.try_exit();
        async move { s }
    })
    .await
    .map_err(|e| e.context(agent.log_text()))?;
    assert!(!status.success());
    let log = agent.log_text();
    assert!(log.contains("redis-check-aof --fix"), "{log}");
    Ok(())
}

/// Issue 23's Redis part: a replica promoted after its primary is gone continues the old
/// replication id as its `master_replid2`, so the agent pointed at it resumes with
/// `+CONTINUE` (no full sync), the chain goes on, and latest restores as the new primary.
/// A primary (started with `a_extra`), its replica, a shipper and an agent on the primary
/// whose first snapshot is stored; `script` (ending with `SET marker:a`) written on the
/// primary, stored, and replicated.
struct Pair {
    /// The primary: taken (dropped) to kill it.
    a: Option<RedisServer>,
    b: RedisServer,
    shipper: Shipper,
    agent: Agent,
    a_url: String,
}

async fn primary_and_replica(
    tmp: &std::path::Path,
    a_extra: &[&str],
    script: &str,
) -> anyhow::Result<Pair> {
    let a = debug_server(&tmp.join("a"), a_extra).await?;
    let a_port = a.port.to_string();
    let b = debug_server(&tmp.join("b"), &["--replicaof", "127.0.0.1", &a_port]).await?;
    let shipper = Shipper::start(tmp).await?;
    let dir = tmp.join("agent");
    let a_url = a.url();
    let agent = Agent::start_config(&dir, &config(&dir, &a_url, &shipper), &[])?;
    wait_snapshots(&shipper, &agent, 1).await?;
    a.script(script)?;
    wait_stored(&shipper, "marker:a")
        .await
        .map_err(|e| e.context(agent.log_text()))?;
    // The replica has everything the primary has.
    wait_offset(&b, repl_offset(&a)?, "the replica caught up").await?;
    Ok(Pair {
        a: Some(a),
        b,
        shipper,
        agent,
        a_url,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_agent_continues_on_the_promoted_replica() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let Pair {
        mut a,
        b,
        shipper,
        mut agent,
        a_url,
    } = primary_and_replica(
        tmp.path(),
        &[],
        "SELECT 0\nSET one 1\nSELECT 4\nHSET h f v\nSELECT 0\nSET marker:a 1\n",
    )
    .await?;

    // The primary dies with the agent; the replica is promoted; the agent's config now
    // names it, as a VIP or DNS move would.
    agent.kill9();
    drop(a.take());
    b.cli(&["REPLICAOF", "NO", "ONE"])?;
    agent.edit_config(&a_url, &b.url())?;
    agent.restart()?;
    b.script("SELECT 0\nSET two 2\nSELECT 4\nHDEL h f\nSELECT 0\nSET marker:b 1\n")?;
    wait_stored(&shipper, "marker:b").await?;
    let log = agent.log_text();
    assert!(
        log.contains("+CONTINUE") && log.contains("a failover"),
        "the agent must continue on the promoted replica: {log}"
    );
    one_chain_onto(tmp.path(), &shipper, &agent, &b).await
}

/// After the agent moved to `b`: no second full sync or snapshot, `verify` sees one chain,
/// and latest restores to `b`'s digest.
async fn one_chain_onto(
    tmp: &std::path::Path,
    shipper: &Shipper,
    agent: &Agent,
    b: &RedisServer,
) -> anyhow::Result<()> {
    let log = agent.log_text();
    assert_eq!(
        log.matches("+FULLRESYNC").count(),
        1,
        "no second full sync: {log}"
    );
    assert_eq!(snapshots(shipper)?.len(), 1, "no second snapshot");
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "one chain across the failover: {out}");
    let target = debug_server(&tmp.join("target"), &[]).await?;
    let (code, out) = restore(shipper, "latest", &target, false)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&target)?, digest(b)?, "{out}");
    Ok(())
}

/// `INFO replication`'s `field` on `redis`.
fn replication_field(redis: &RedisServer, field: &str) -> anyhow::Result<String> {
    let info = redis.cli(&["INFO", "replication"])?;
    info_field(&info, field)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {field} in {info}"))
}

/// Stored commands (the stream's `SELECT`s included) that end after `offset`, and the
/// heartbeat bytes skipped between them: what a replica at `offset` lacks of the store.
fn stored_after(shipper: &Shipper, offset: u64) -> anyhow::Result<(u64, u64)> {
    let (mut n, mut skipped) = (0, 0);
    for (_, s) in store::segments(&shipper.store_dir, STREAM)? {
        let mut at = s.header.meta.start.as_redis()?.offset;
        walk(&s.payload()?, |c| {
            at += c.stream_bytes();
            if !c.preamble && at > offset {
                n += 1;
                skipped += c.skipped;
            }
            Ok(true)
        })?;
    }
    Ok((n, skipped))
}

fn promote(
    shipper: &Shipper,
    standby: &RedisServer,
    extra: &[&str],
) -> anyhow::Result<(i32, String)> {
    common::promote(shipper, STREAM, &standby.url(), extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_feeds_a_replica_what_it_lacks_and_the_agent_continues_on_it() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    // Pings every second, so heartbeats lie between the commands the standby lacks.
    let Pair {
        mut a,
        b,
        shipper,
        mut agent,
        a_url,
    } = primary_and_replica(
        tmp.path(),
        &["--repl-ping-replica-period", "1"],
        "SELECT 0\nSET one 1\nSELECT 4\nHSET h f v\nSELECT 0\nSET marker:a 1\n",
    )
    .await?;
    let primary = a.as_ref().ok_or_else(|| anyhow::anyhow!("A"))?;
    let replid = replication_field(primary, "master_replid")?;

    // The standby loses its link (as a replica whose network broke); the primary goes on,
    // the agent ships it, then the primary dies.
    let nowhere = logferry_integration::free_port()?.to_string();
    b.cli(&["REPLICAOF", "127.0.0.1", &nowhere])?;
    let b_offset = repl_offset(&b)?;
    let pinged = |from: u64| wait_offset(primary, from + 28, "the primary's pings");
    pinged(repl_offset(primary)?).await?;
    primary.script("SELECT 0\nSET two 2\nSELECT 3\nSADD s x y z\n")?;
    pinged(repl_offset(primary)?).await?;
    primary
        .script("MULTI\nINCR n\nINCR n\nEXEC\nSELECT 4\nHDEL h f\nSELECT 0\nSET marker:c 1\n")?;
    wait_stored(&shipper, "marker:c").await?;
    let a_digest = digest(primary)?;
    agent.kill9();
    drop(a.take());
    let (lacks, heartbeats) = stored_after(&shipper, b_offset)?;
    assert!(lacks >= 8, "the standby lacks the later writes: {lacks}");
    assert!(
        heartbeats >= 28,
        "heartbeats lie in what is fed: {heartbeats} bytes"
    );

    // Another database as standby: refused, unchanged.
    let other = debug_server(
        &tmp.path().join("other"),
        &["--replicaof", "127.0.0.1", &nowhere],
    )
    .await?;
    let (code, out) = promote(&shipper, &other, &[])?;
    assert_ne!(code, 0, "another history must be refused: {out}");
    assert!(out.contains("replicates another history"), "{out}");
    assert_eq!(replication_field(&other, "role")?, "slave", "{out}");

    // The dry run says what it would apply and changes nothing.
    let (code, out) = promote(&shipper, &b, &["--dry-run"])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("DRY RUN") && out.contains(&format!("{lacks} events from the store")),
        "{out}"
    );
    assert_eq!(replication_field(&b, "role")?, "slave");
    assert_eq!(
        repl_offset(&b)?,
        b_offset,
        "the dry run changed the standby"
    );

    let audit = tmp.path().join("audit.log");
    let audit_arg = audit.display().to_string();
    let (code, out) = promote(&shipper, &b, &["--audit-log", &audit_arg])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PROMOTED") && out.contains(&format!("{lacks} events from the store")),
        "{out}"
    );
    assert_eq!(
        digest(&b)?,
        a_digest,
        "the standby holds everything the store held: {out}"
    );
    let stored_end = store::chain_end(&store::segments(&shipper.store_dir, STREAM)?)
        .ok_or_else(|| anyhow::anyhow!("nothing stored"))?;
    assert_eq!(
        repl_offset(&b)?,
        stored_end.as_redis()?.offset,
        "fed byte for byte, the standby stands exactly at the stored end"
    );
    assert_eq!(replication_field(&b, "role")?, "master");
    assert_eq!(
        replication_field(&b, "master_replid2")?,
        replid,
        "it continues the stream's history"
    );
    let trail = std::fs::read_to_string(&audit)?;
    assert!(
        trail.contains("apply what it lacks from the store")
            && trail.contains("make the standby a primary")
            && trail.contains("\"status\":200")
            && !trail.contains("\"status\":500"),
        "{trail}"
    );
    let (code, out) = promote(&shipper, &b, &[])?;
    assert_ne!(code, 0, "a second promote must be refused: {out}");
    assert!(out.contains("already promoted"), "{out}");

    // The agent pointed at the promoted standby goes on without a full sync.
    agent.edit_config(&a_url, &b.url())?;
    agent.restart()?;
    b.script("SELECT 0\nSET three 3\nSELECT 0\nSET marker:b 1\n")?;
    wait_stored(&shipper, "marker:b")
        .await
        .map_err(|e| e.context(agent.log_text()))?;
    one_chain_onto(tmp.path(), &shipper, &agent, &b).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_while_behind_forks_the_stream_and_restores_follow_it(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let Pair {
        mut a,
        b,
        shipper,
        mut agent,
        a_url,
    } = primary_and_replica(
        tmp.path(),
        &[],
        "SELECT 0\nSET one 1\nSELECT 2\nSET marker:a 1\n",
    )
    .await?;
    let primary = a.as_ref().ok_or_else(|| anyhow::anyhow!("A"))?;

    // The replica's link breaks; the primary writes on and the agent ships it: commands
    // only the old primary will have had. Then it dies, and the replica is promoted.
    let nowhere = logferry_integration::free_port()?.to_string();
    b.cli(&["REPLICAOF", "127.0.0.1", &nowhere])?;
    let forked_at = repl_offset(&b)?;
    let at_fork = digest(&b)?;
    primary.script("SELECT 0\nSET orphan:1 x\nSELECT 2\nDEL marker:a\nSET marker:c 1\n")?;
    wait_stored(&shipper, "marker:c").await?;
    let after_orphans = mark().await;
    agent.kill9();
    drop(a.take());
    b.cli(&["REPLICAOF", "NO", "ONE"])?;
    b.script("SELECT 0\nSET two 2\n")?;
    agent.edit_config(&a_url, &b.url())?;
    agent.restart()?;
    wait_snapshots(&shipper, &agent, 2).await?;
    b.script("SELECT 0\nSET marker:b 1\n")?;
    wait_stored(&shipper, "marker:b")
        .await
        .map_err(|e| e.context(agent.log_text()))?;
    let log = agent.log_text();
    assert!(
        log.contains("a FORK"),
        "the agent must call it a fork: {log}"
    );

    // Recorded, listed, and in the status.
    let forks = std::fs::read_dir(
        shipper
            .store_dir
            .join(logferry_common::keys::forks_prefix(&STREAM.parse()?)),
    )?
    .count();
    assert_eq!(forks, 1, "one fork record");
    let (code, out) = shipper_cli(&["ls", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("held the stream only up to 1:{forked_at}")),
        "ls names the fork point: {out}"
    );
    wait_for(
        "the status to count the fork",
        Duration::from_secs(60),
        || async {
            let status = shipper.get("/v1/status").await?;
            Ok(status.contains("\"forks\":1").then_some(()))
        },
    )
    .await?;

    // A time after the orphans and before the promoted server's snapshot restores the
    // state the promoted server started from, not the old primary's branch.
    let target = debug_server(&tmp.path().join("target"), &[]).await?;
    let (code, out) = restore(&shipper, &rfc3339(after_orphans), &target, false)?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("FORKED"), "{out}");
    assert_eq!(digest(&target)?, at_fork, "the state at the fork: {out}");
    // A place on the old branch after the fork is refused.
    let old_end = store::segments(&shipper.store_dir, STREAM)?
        .iter()
        .filter_map(|(_, s)| s.header.meta.end.as_redis().ok().cloned())
        .filter(|p| p.history == 1)
        .max_by_key(|p| p.offset)
        .ok_or_else(|| anyhow::anyhow!("no history 1"))?;
    let (code, out) = restore(&shipper, &format!("1:{}", old_end.offset), &target, true)?;
    assert_ne!(code, 0, "a place on the old branch: {out}");
    assert!(out.contains("old primary's branch"), "{out}");
    // The latest follows the promoted server.
    let (code, out) = restore(&shipper, "latest", &target, true)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&target)?, digest(&b)?, "{out}");
    // export --branch names the export of the old branch's commands.
    let (code, out) = shipper_cli(&[
        "export",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--branch",
        "2",
        "--dir",
        &tmp.path().join("branch").display().to_string(),
    ])?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("--from 1:{forked_at}")), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_pauses_a_live_old_primary_and_its_replica_takes_over() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let a = debug_server(&tmp.path().join("a"), &[]).await?;
    let a_port = a.port.to_string();
    let b = debug_server(
        &tmp.path().join("b"),
        &["--replicaof", "127.0.0.1", &a_port],
    )
    .await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let dir = tmp.path().join("agent");
    let mut agent = Agent::start_config(&dir, &config(&dir, &a.url(), &shipper), &[])?;
    wait_snapshots(&shipper, &agent, 1).await?;
    a.script("SELECT 0\nSET one 1\nSELECT 6\nSET marker:a 1\n")?;
    wait_stored(&shipper, "marker:a").await?;
    let replid = replication_field(&a, "master_replid")?;

    let a_url = a.url();
    let (code, out) = promote(&shipper, &b, &["--old-primary", &a_url])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("writes paused"), "{out}");
    let stats = a.cli(&["INFO", "commandstats"])?;
    assert!(stats.contains("cmdstat_client|pause:calls=1"), "{stats}");
    assert_eq!(
        digest(&b)?,
        digest(&a)?,
        "the standby holds all the old primary wrote"
    );
    assert_eq!(replication_field(&b, "role")?, "master");
    assert_eq!(replication_field(&b, "master_replid2")?, replid);

    agent.kill9();
    agent.edit_config(&a_url, &b.url())?;
    agent.restart()?;
    b.script("SELECT 6\nSET marker:b 1\n")?;
    wait_stored(&shipper, "marker:b")
        .await
        .map_err(|e| e.context(agent.log_text()))?;
    one_chain_onto(tmp.path(), &shipper, &agent, &b).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_says_when_the_standby_holds_more_than_its_backlog_keeps() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let Pair {
        mut a,
        b,
        shipper,
        mut agent,
        a_url,
    } = primary_and_replica(tmp.path(), &[], "SELECT 0\nSET marker:a 1\n").await?;
    b.cli(&["CONFIG", "SET", "repl-backlog-size", "16384"])?;
    // The agent is down while the primary writes 64 KiB more, which the replica receives.
    agent.kill9();
    let primary = a.as_ref().ok_or_else(|| anyhow::anyhow!("A"))?;
    let value = "x".repeat(1024);
    let script: String = (0..64).map(|i| format!("SET late:{i} {value}\n")).collect();
    primary.script(&format!("SELECT 0\n{script}"))?;
    wait_offset(&b, repl_offset(primary)?, "the replica caught up").await?;
    drop(a.take());

    let (code, out) = promote(&shipper, &b, &[])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("beyond what its replication backlog keeps"),
        "the report says the agent will take a full sync: {out}"
    );
    agent.edit_config(&a_url, &b.url())?;
    agent.restart()?;
    wait_snapshots(&shipper, &agent, 2).await?;
    b.script("SELECT 0\nSET marker:b 1\n")?;
    wait_stored(&shipper, "marker:b").await?;
    let target = debug_server(&tmp.path().join("target"), &[]).await?;
    let (code, out) = restore(&shipper, "latest", &target, false)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&target)?, digest(&b)?, "nothing lost: {out}");
    Ok(())
}
