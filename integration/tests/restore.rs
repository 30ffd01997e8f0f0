//! Snapshots from a paused replica and point-in-time restore, against a real primary and
//! replica.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    mark, rfc3339, run_snapshot, settings, shipper_cli, snapshot_id, snapshot_section,
    wait_caught_up,
};
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::process::{Proc, RUN_WITHIN};
use logferry_integration::{store, wait_for, workload};
use mysql_async::prelude::Queryable;

type Sums = Vec<(String, Option<u64>)>;

/// `logferry-shipper restore` of the test stream to `to` into `target`.
fn restore_cli(shipper: &Shipper, to: &str, target: &MariaDb) -> anyhow::Result<(i32, String)> {
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
    ])
}

/// `logferry-shipper verify --restore-drill` of the test stream into `scratch`.
fn drill_cli(shipper: &Shipper, scratch: &MariaDb) -> anyhow::Result<(i32, String)> {
    drill_with(shipper, scratch, None)
}

/// The drill into `scratch`, compared with the live `replica` when one is given.
fn drill_with(
    shipper: &Shipper,
    scratch: &MariaDb,
    replica: Option<&MariaDb>,
) -> anyhow::Result<(i32, String)> {
    let store = shipper.store_url();
    let scratch = scratch.root_url();
    let replica = replica.map(MariaDb::root_url);
    let mut args = vec![
        "verify",
        "--store",
        &store,
        "--stream",
        common::STREAM,
        "--restore-drill",
        "--target",
        &scratch,
    ];
    if let Some(r) = &replica {
        args.extend(["--replica", r.as_str()]);
    }
    shipper_cli(&args)
}

/// The verdicts of the stored drill results of the test stream, oldest first.
fn stored_verdicts(shipper: &Shipper) -> anyhow::Result<Vec<String>> {
    let dir = shipper
        .store_dir
        .join(format!("streams/{}/drills", common::STREAM));
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f)?)?;
            Ok(v["verdict"].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

async fn restore_and_compare(
    shipper: &Shipper,
    to: &str,
    want: &Sums,
    expect_snapshot: &str,
) -> anyhow::Result<()> {
    let fresh = MariaDb::start(Options::without_binlog(9)).await?;
    let (code, out) = restore_cli(shipper, to, &fresh)?;
    assert_eq!(code, 0, "restore to {to}: {out}");
    assert!(
        out.contains(&format!("snapshot:       {expect_snapshot}")),
        "restore to {to} used the wrong snapshot: {out}"
    );
    assert!(
        out.contains("events applied:") && out.contains("elapsed:"),
        "{out}"
    );
    let mut c = fresh.conn().await?;
    let got = workload::checksums(&mut c).await?;
    assert_eq!(&got, want, "restore to {to}: {out}");
    assert!(
        out.contains("innodb_flush_log_at_trx_commit was 2 during the restore, back to 1"),
        "{out}"
    );
    let flush: Option<u8> = c
        .query_first("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit")
        .await?;
    assert_eq!(flush, Some(1), "the target's durability is put back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_marks_before_inside_and_after_a_snapshot() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 100).await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    s.extra_toml = snapshot_section(&replica, Some(8_000));
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;

    let s0 = run_snapshot(&agent, "snapshot0.log", RUN_WITHIN)?;
    assert!(
        replica.sql_thread_running().await?,
        "the replica runs again after the snapshot"
    );

    workload::run(&mut c, 100, 400).await?;
    let mark1 = mark().await;
    let sums1 = workload::checksums(&mut c).await?;

    // Writes after mark 1 that the replica applies before the next snapshot: its position
    // lies after mark 1, so a restore to mark 1 must start from the older snapshot.
    workload::run(&mut c, 400, 420).await?;
    // Enough rows that the next snapshot spans several chunks (chunk_bytes = 65536).
    c.query_drop("INSERT INTO app.audit (what) SELECT REPEAT('y', 190) FROM seq_1_to_1500")
        .await?;
    replica.wait_replicated(&primary).await?;

    // A throttled snapshot; the primary keeps writing while the replica is paused.
    let mut snap: Proc = agent.snapshot_process("snapshot1.log")?;
    wait_for("the replica to pause", Duration::from_secs(30), || async {
        Ok((!replica.sql_thread_running().await?).then_some(()))
    })
    .await?;
    workload::run(&mut c, 420, 600).await?;
    let mark2 = mark().await;
    let sums2 = workload::checksums(&mut c).await?;
    assert!(
        snap.try_exit()?.is_none(),
        "mark 2 falls inside the snapshot: {}",
        snap.log()
    );
    let status = snap.wait()?;
    let out = snap.log();
    assert!(status.success(), "{out}");
    let s1 = snapshot_id(&out)?;
    assert!(
        replica.sql_thread_running().await?,
        "the replica runs again after the snapshot"
    );

    workload::run(&mut c, 600, 800).await?;
    c.query_drop("FLUSH BINARY LOGS").await?;
    workload::run(&mut c, 800, 900).await?;
    let (pos_file, pos_off) = primary.master_status().await?;
    let gtid_at_pos: Option<String> = c.query_first("SELECT @@gtid_binlog_pos").await?;
    let gtid_at_pos = gtid_at_pos.unwrap_or_default();
    let sums_pos = workload::checksums(&mut c).await?;
    workload::run(&mut c, 900, 1000).await?;
    let mark3 = mark().await;
    let sums3 = workload::checksums(&mut c).await?;
    workload::run(&mut c, 1000, 1050).await?;
    wait_caught_up(&primary, &shipper, &agent).await?;

    // Everything below reads the object store alone.
    let mut shipper = shipper;
    shipper.kill9();
    restore_and_compare(&shipper, &rfc3339(mark1), &sums1, &s0).await?;
    restore_and_compare(&shipper, &rfc3339(mark2), &sums2, &s1).await?;
    restore_and_compare(&shipper, &rfc3339(mark3), &sums3, &s1).await?;
    restore_and_compare(&shipper, &format!("{pos_file}:{pos_off}"), &sums_pos, &s1).await?;
    restore_and_compare(&shipper, &gtid_at_pos, &sums_pos, &s1).await?;

    // Into a server that writes a binlog: its GTID state is the primary's at the target,
    // with no transaction of the restore's own (a binlogged snapshot load or FLUSH would
    // take GTIDs under the target's server id 12).
    let binlogged = MariaDb::start(Options {
        server_id: 12,
        ..Options::default()
    })
    .await?;
    let (code, out) = restore_cli(&shipper, &gtid_at_pos, &binlogged)?;
    assert_eq!(code, 0, "{out}");
    let mut t = binlogged.conn().await?;
    assert_eq!(workload::checksums(&mut t).await?, sums_pos);
    let pos: Option<String> = t.query_first("SELECT @@gtid_binlog_pos").await?;
    let state: Option<String> = t.query_first("SELECT @@gtid_binlog_state").await?;
    assert_eq!(pos.as_deref(), Some(gtid_at_pos.as_str()), "{out}");
    let state = state.unwrap_or_default();
    assert!(
        !state.contains("-12-"),
        "the restore wrote GTIDs of its own: {state}"
    );

    // Export to mark 3, then restore by hand with the stock clients.
    let dir = tmp.path().join("export");
    let (code, out) = shipper_cli(&[
        "export",
        "--store",
        &shipper.store_url(),
        "--stream",
        common::STREAM,
        "--to",
        &rfc3339(mark3),
        "--dir",
        &dir.display().to_string(),
    ])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("events written:") && !out.contains("applied"),
        "{out}"
    );
    let by_hand = restore_by_hand(&dir, &s1, &sums3).await?;

    // The restore drill: older snapshot + replayed events must equal the newer snapshot.
    let scratch = MariaDb::start(Options::without_binlog(11)).await?;
    let (code, out) = drill_cli(&shipper, &scratch)?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("OK restore drill: all 3 tables compared are equal"),
        "{out}"
    );
    assert!(
        out.contains(&format!("loaded:         snapshot {s0}")),
        "{out}"
    );
    assert_eq!(
        workload::checksums(&mut scratch.conn().await?).await?,
        workload::checksums(&mut c).await?
    );

    // One flipped byte in a chunk of the newest snapshot: verify and the drill say so.
    let snapshot_dir = shipper
        .store_dir
        .join(format!("streams/{}/snapshots/{s1}", common::STREAM));
    // The last chunk: the dump is then cut off mid-statement, after earlier chunks loaded.
    let chunk = std::fs::read_dir(&snapshot_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".zst"))
        .max()
        .ok_or_else(|| anyhow::anyhow!("snapshot {s1} has no chunk"))?;
    assert!(
        !chunk.ends_with("chunk-000001.zst"),
        "snapshot {s1} spans several chunks"
    );
    let good = std::fs::read(&chunk)?;
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    std::fs::write(&chunk, &flipped)?;
    let store_url = shipper.store_url();
    let (code, out) = shipper_cli(&["verify", "--store", &store_url])?;
    assert_eq!(code, 1, "a flipped chunk byte fails verify: {out}");
    assert!(out.contains("CORRUPT") && out.contains(".zst"), "{out}");
    let scratch_flip = MariaDb::start(Options::without_binlog(14)).await?;
    let (code, out) = drill_cli(&shipper, &scratch_flip)?;
    assert_eq!(code, 1, "the drill does not pass a corrupt snapshot: {out}");
    assert!(
        out.contains("not run on a stream that fails verify"),
        "{out}"
    );
    // A restore falls back to the older snapshot, replays longer, and says so.
    let latest = workload::checksums(&mut c).await?;
    let fallback = MariaDb::start(Options::without_binlog(15)).await?;
    let (code, out) = restore_cli(&shipper, "latest", &fallback)?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("snapshot:       {s0}"))
            && out.contains(&format!("snapshot {s1} is corrupt"))
            && out.contains(&format!("fell back to snapshot {s0}")),
        "{out}"
    );
    assert_eq!(
        workload::checksums(&mut fallback.conn().await?).await?,
        latest
    );
    std::fs::write(&chunk, &good)?;
    // Chunks no manifest names (a snapshot that did not finish) are reported, not failed.
    let unfinished = shipper.store_dir.join(format!(
        "streams/{}/snapshots/9999999999999/chunk-000001.zst",
        common::STREAM
    ));
    std::fs::create_dir_all(unfinished.parent().expect("a parent"))?;
    std::fs::write(&unfinished, b"half a snapshot")?;
    let (code, out) = shipper_cli(&["verify", "--store", &store_url])?;
    assert_eq!(code, 0, "an orphan is not a broken backup: {out}");
    assert!(out.contains("ORPHANED snapshot 9999999999999"), "{out}");
    // ls shows every snapshot, complete or not, beside the chain; --snapshots alone.
    let (code, out) = shipper_cli(&["ls", "--store", &store_url])?;
    assert_eq!(code, 0, "{out}");
    for id in [&s0, &s1] {
        assert!(
            out.contains(&format!("snapshot {id}\tcomplete\tat mysql-bin.")),
            "{out}"
        );
    }
    assert!(
        out.contains("snapshot 9999999999999\tINCOMPLETE")
            && out.contains("3 tables and the users from")
            && out.contains("segments="),
        "{out}"
    );
    let (code, out) = shipper_cli(&["ls", "--store", &store_url, "--snapshots"])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("snapshot {s1}\tcomplete")) && !out.contains("segments="),
        "{out}"
    );
    std::fs::remove_file(&unfinished)?;

    // A manifest that disagrees with the replayed data is reported.
    let manifest = shipper.store_dir.join(format!(
        "streams/{}/snapshots/{s1}/manifest.json",
        common::STREAM
    ));
    let genuine = std::fs::read(&manifest)?;
    let mut m: serde_json::Value = serde_json::from_slice(&genuine)?;
    let rows = m["tables"][1]["rows"].as_u64().unwrap_or(0);
    m["tables"][1]["rows"] = serde_json::json!(rows + 1);
    std::fs::write(&manifest, serde_json::to_vec(&m)?)?;
    // Edited without the key, it fails its MAC: verify names it, the drill does not run.
    let (code, out) = shipper_cli(&["verify", "--store", &store_url])?;
    assert_eq!(code, 1, "an edited manifest passes verify: {out}");
    assert!(
        out.contains("UNAUTHENTIC") && out.contains("fails its MAC"),
        "{out}"
    );
    // Signed by a key holder (a faulty agent), it fails the drill's comparison.
    let mut signed =
        logferry_common::snapshot::SnapshotManifest::from_json(&serde_json::to_vec(&m)?)?;
    let epoch = signed.key_ref()?.expect("an encrypted snapshot").epoch;
    let stream = logferry_common::StreamId::new(common::STREAM)?;
    signed.sign(&store::epoch_key(&shipper.store_dir, &stream, &epoch)?)?;
    std::fs::write(&manifest, serde_json::to_vec(&signed)?)?;
    let scratch2 = MariaDb::start(Options::without_binlog(12)).await?;
    let (code, out) = drill_cli(&shipper, &scratch2)?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DIFFERS app.") && out.contains("FAILED restore drill"),
        "{out}"
    );

    // Outside the range, and into a server that is not empty.
    let (code, out) = restore_cli(&shipper, "2001-01-01T00:00:00Z", &by_hand)?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("restorable range"), "{out}");
    let (code, out) = restore_cli(&shipper, "latest", &by_hand)?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--force"), "{out}");
    // --force drops what the earlier restore created and starts over.
    let (code, out) = shipper_cli(&[
        "restore",
        "--store",
        &store_url,
        "--stream",
        common::STREAM,
        "--to",
        "latest",
        "--target",
        &by_hand.root_url(),
        "--force",
    ])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dropped the target's databases [app]"),
        "{out}"
    );
    assert_eq!(
        workload::checksums(&mut by_hand.conn().await?).await?,
        latest
    );

    // A gap in the chain stops the restore before it touches the target, with the reason.
    let segs = store::segments(&shipper.store_dir, common::STREAM)?;
    let victim = &segs[segs.len() - 2].0;
    std::fs::remove_file(
        shipper
            .store_dir
            .join(format!("streams/{}/segments/{victim}", common::STREAM)),
    )?;
    let gapped = MariaDb::start(Options::without_binlog(13)).await?;
    let (code, out) = restore_cli(&shipper, "latest", &gapped)?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("has a gap before the target"), "{out}");
    assert!(
        gapped
            .conn()
            .await?
            .query::<String, _>("SHOW DATABASES LIKE 'app'")
            .await?
            .is_empty(),
        "{out}"
    );
    Ok(())
}

/// A restore runs across a clean restart and a crash of the primary: the stored chain goes
/// on through both file changes, and `restore --to latest` gives what the recovered
/// primary holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_runs_across_a_restart_and_a_crash_of_the_primary() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 100).await?;
    drop(c);
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    s.extra_toml = snapshot_section(&replica, None);
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    let snap = run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;

    workload::run(&mut primary.conn().await?, 100, 200).await?;
    primary.restart().await?;
    workload::run(&mut primary.conn().await?, 200, 300).await?;
    primary.crash_and_restart().await?;
    workload::run(&mut primary.conn().await?, 300, 400).await?;
    wait_caught_up(&primary, &shipper, &agent).await?;
    assert_eq!(primary.master_status().await?.0, "mysql-bin.000003");

    let want = workload::checksums(&mut primary.conn().await?).await?;
    restore_and_compare(&shipper, "latest", &want, &snap).await
}

/// Runs an export's `RESTORE.txt` as written, against the server on `port`.
fn run_restore_txt(dir: &Path, port: u16) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new("bash")
        .arg(dir.join("RESTORE.txt"))
        .env("MYSQL_HOST", "127.0.0.1")
        .env("MYSQL_TCP_PORT", port.to_string())
        .env("MYSQL_USER", "root")
        .env("MYSQL_PWD", "")
        .stdin(std::process::Stdio::null())
        .output()?)
}

/// Follows `RESTORE.txt` into a fresh server, and checks that it stops with an error when
/// one of its binlog files cannot be read (`mariadb-binlog` fails while the client at the
/// end of its pipe succeeds on empty input).
/// Returns the restored server.
async fn restore_by_hand(dir: &Path, snapshot: &str, want: &Sums) -> anyhow::Result<MariaDb> {
    let howto = std::fs::read_to_string(dir.join("RESTORE.txt"))?;
    assert!(
        howto.contains(&format!("snapshot-{snapshot}.sql")),
        "{howto}"
    );
    let by_hand = MariaDb::start(Options::without_binlog(10)).await?;
    let out = run_restore_txt(dir, by_hand.port)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("restored to"),
        "{text}"
    );
    assert_eq!(
        &workload::checksums(&mut by_hand.conn().await?).await?,
        want
    );

    let last = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mysql-bin."))
        })
        .max()
        .ok_or_else(|| anyhow::anyhow!("the export holds no binlog file"))?;
    let aside = last.with_extension("aside");
    std::fs::rename(&last, &aside)?;
    let broken = MariaDb::start(Options::without_binlog(13)).await?;
    let out = run_restore_txt(dir, broken.port);
    std::fs::rename(&aside, &last)?;
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !text.contains("restored to"),
        "a missing binlog file must stop RESTORE.txt: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(by_hand)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_with_one_snapshot_is_proven_only_against_the_live_replica() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 200).await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    s.extra_toml = snapshot_section(&replica, None);
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    wait_caught_up(&primary, &shipper, &agent).await?;

    // No snapshot yet: nothing to restore from, so nothing is proven.
    let scratch = MariaDb::start(Options::without_binlog(20)).await?;
    let (code, out) = drill_with(&shipper, &scratch, Some(&replica))?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("NOT PROVEN restore drill") && out.contains("has no snapshot"),
        "{out}"
    );

    let snap = run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;
    workload::run(&mut c, 200, 400).await?;
    wait_caught_up(&primary, &shipper, &agent).await?;

    // One snapshot and no replica: loading it proves nothing about the replay.
    let (code, out) = drill_cli(&shipper, &scratch)?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("NOT PROVEN restore drill") && out.contains("one snapshot only"),
        "{out}"
    );

    // Against the live replica while the primary keeps writing: the replica is paused
    // ahead of the stored chain's end, the chain catches up, and every table is equal.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = tokio::spawn(workload::run_until(
        primary.conn().await?,
        400,
        stop.clone(),
    ));
    let (code, out) =
        tokio::task::block_in_place(|| drill_with(&shipper, &scratch, Some(&replica)))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writes.await??;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("loaded:         snapshot {snap}"))
            && out.contains("compared with:  the replica")
            && out.contains("OK restore drill: all 3 tables"),
        "{out}"
    );
    assert!(
        replica.sql_thread_running().await?,
        "the replica runs again"
    );

    // A row changed on the replica alone: the restored copy differs, the drill fails.
    replica.wait_replicated(&primary).await?;
    replica
        .conn()
        .await?
        .query_drop(
            "SET sql_log_bin = 0; UPDATE app.accounts SET balance = balance + 1 WHERE id = 5",
        )
        .await?;
    let scratch2 = MariaDb::start(Options::without_binlog(21)).await?;
    let (code, out) = drill_with(&shipper, &scratch2, Some(&replica))?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DIFFERS app.accounts: the replica") && out.contains("FAILED restore drill"),
        "{out}"
    );
    assert!(
        replica.sql_thread_running().await?,
        "the replica runs again"
    );
    assert_eq!(
        stored_verdicts(&shipper)?,
        ["not_proven", "not_proven", "passed", "failed"],
        "every drill's result is in the bucket"
    );
    Ok(())
}

/// Every account outside the server's own install with its grants, as `SHOW GRANTS` says
/// them (password hashes included).
async fn accounts(db: &MariaDb) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut c = db.conn().await?;
    let names: Vec<String> = c
        .query(
            "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.global_priv \
             WHERE User NOT IN ('root', 'mariadb.sys', 'mysql', '') ORDER BY User, Host",
        )
        .await?;
    let mut out = Vec::new();
    for name in names {
        let grants: Vec<String> = c.query(format!("SHOW GRANTS FOR {name}")).await?;
        out.push((name, grants));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_grants_are_in_the_snapshot_and_replay_after_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 50).await?;
    // The snapshot user holds exactly the grants the README and the errors name.
    let grants = logferry_config::agent::SNAPSHOT_GRANTS;
    c.query_drop(format!(
        "CREATE USER 'logferry_snapshot'@'%' IDENTIFIED BY 'snap'; {grants}; \
         CREATE USER 'weak'@'%' IDENTIFIED BY 'weak'; GRANT SELECT ON *.* TO 'weak'@'%'; \
         CREATE USER 'app'@'%' IDENTIFIED BY 'one'"
    ))
    .await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    replica.wait_replicated(&primary).await?;
    let shipper = Shipper::start(tmp.path()).await?;

    // A snapshot user short of a grant: the error says so, names the replica's key and
    // every grant needed.
    let mut s = settings(&primary, &shipper);
    s.extra_toml = format!(
        "[source.snapshot]\nreplica_url = \"mysql://weak:weak@127.0.0.1:{}\"\nschedule = \"0 0 1 1 *\"\nchunk_bytes = 65536\n",
        replica.port
    );
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    let mut p = agent.snapshot_process("weak.log")?;
    let status = p.wait_within(RUN_WITHIN)?;
    let out = p.log();
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("snapshot replica")
            && out.contains("source.snapshot.replica_url")
            && out.contains(grants),
        "{out}"
    );
    agent.edit_config("weak:weak@", "logferry_snapshot:snap@")?;
    let snap = run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;

    // After the snapshot: granted, altered, dropped, with writes between.
    let steps = [
        "GRANT SELECT, INSERT ON app.* TO 'app'@'%'",
        "ALTER USER 'app'@'%' IDENTIFIED BY 'two'; GRANT UPDATE ON app.accounts TO 'app'@'%'",
        "DROP USER 'app'@'%'",
    ];
    let mut marks = Vec::new();
    for (i, step) in (0u64..).zip(steps) {
        c.query_drop(step).await?;
        workload::run(&mut c, 50 + i * 20, 70 + i * 20).await?;
        let at = mark().await;
        marks.push((
            at,
            accounts(&primary).await?,
            workload::checksums(&mut c).await?,
        ));
    }
    // Writes after the last mark, so that the stored chain runs past it.
    workload::run(&mut c, 200, 210).await?;
    wait_caught_up(&primary, &shipper, &agent).await?;

    for (at, want_accounts, want_sums) in &marks {
        let target = MariaDb::start(Options::without_binlog(40)).await?;
        let (code, out) = restore_cli(&shipper, &rfc3339(*at), &target)?;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("snapshot:       {snap}")), "{out}");
        assert_eq!(&accounts(&target).await?, want_accounts, "{out}");
        assert_eq!(
            &workload::checksums(&mut target.conn().await?).await?,
            want_sums
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_resumes_when_a_snapshot_is_stopped_or_killed() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 600).await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    s.extra_toml = snapshot_section(&replica, Some(8_000));
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    let paused = || async { Ok((!replica.sql_thread_running().await?).then_some(())) };

    // SIGTERM midway: the snapshot stops, the replica runs again at once.
    let mut snap = agent.snapshot_process("stopped.log")?;
    wait_for("the replica to pause", Duration::from_secs(30), paused)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", snap.log()))?;
    workload::run(&mut c, 600, 650).await?;
    let status = snap.terminate()?;
    assert!(
        !status.success(),
        "an interrupted snapshot fails: {}",
        snap.log()
    );
    assert!(replica.sql_thread_running().await?, "{}", snap.log());

    // SIGKILL midway: the replica stays paused until the agent next starts, which resumes it.
    let mut snap = agent.snapshot_process("killed.log")?;
    wait_for("the replica to pause", Duration::from_secs(30), paused)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", snap.log()))?;
    snap.kill9();
    workload::run(&mut c, 650, 700).await?;
    assert!(!replica.sql_thread_running().await?);
    let mut again = agent.snapshot_process("again.log")?;
    let status = again.wait()?;
    assert!(status.success(), "{}", again.log());
    assert!(
        again.log().contains("resuming its SQL thread"),
        "{}",
        again.log()
    );
    assert!(replica.sql_thread_running().await?);
    replica.wait_replicated(&primary).await?;
    assert_eq!(
        workload::checksums(&mut replica.conn().await?).await?,
        workload::checksums(&mut c).await?,
        "the primary never stopped and the replica missed nothing"
    );

    // A dump that fails: the snapshot fails, the replica runs again.
    let mut broken = settings(&primary, &shipper);
    broken.extra_toml = format!(
        "{}dump_command = \"false\"\n",
        snapshot_section(&replica, None)
    );
    let mut failing = Agent::start(&tmp.path().join("broken"), &broken)?;
    failing.kill9();
    let mut snap = failing.snapshot_process("failing.log")?;
    let status = snap.wait()?;
    assert!(!status.success(), "{}", snap.log());
    assert!(snap.log().contains("false exited"), "{}", snap.log());
    assert!(
        replica.sql_thread_running().await?,
        "the replica runs after a failed dump: {}",
        snap.log()
    );

    // The shipper away for 30 s in the middle of a snapshot: its uploads are retried until
    // it is back, and the snapshot completes.
    let mut shipper = shipper;
    shipper.kill9();
    let mut snap = agent.snapshot_process("outage.log")?;
    let failing_since = wait_for(
        "the snapshot's uploads to fail",
        Duration::from_secs(60),
        || async {
            Ok(snap
                .log()
                .contains("retrying until the shipper answers")
                .then(std::time::Instant::now))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", snap.log()))?;
    wait_for(
        "30 s of shipper outage",
        Duration::from_secs(60),
        || async { Ok((failing_since.elapsed() >= Duration::from_secs(30)).then_some(())) },
    )
    .await?;
    assert!(
        snap.try_exit()?.is_none(),
        "the snapshot gave up: {}",
        snap.log()
    );
    shipper.restart().await?;
    let status = snap.wait_within(RUN_WITHIN)?;
    let out = snap.log();
    assert!(
        status.success() && out.contains("uploaded after retries"),
        "{out}"
    );
    assert!(replica.sql_thread_running().await?, "{out}");
    Ok(())
}
