//! End-to-end encryption against a real primary, replica, shipper and agent: a marker
//! written to the database is in no stored object and no spool file; a restore with the
//! right key is exact, with a wrong or missing key a clear error naming the key; after
//! `rotate-key` objects from before and after restore under the new key alone; a flipped
//! ciphertext byte, a forged snapshot, a segment in clear and a forged drill record written
//! straight into the bucket are rejected by `verify` and never loaded by a restore.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{run_snapshot, settings, shipper_cli, snapshot_section, wait_caught_up, STREAM};
use logferry_integration::logferry::{shipper_command, write_key, Agent, Shipper, TEST_KEY_ID};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::process::{Proc, RUN_WITHIN};
use logferry_integration::{wait_for, workload};
use mysql_async::prelude::Queryable;

/// Written to the database; must appear in no byte the store or the spool holds.
const MARKER: &str = "lf-marker-5b1e0c7a93d2";

/// Every file under `dir` whose bytes (or, for a zstd frame, whose decompressed bytes)
/// hold the marker. The zstd check keeps the search honest: a chunk stored in clear is
/// compressed, and its literals need not show the marker verbatim.
fn files_with_marker(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let holds = |b: &[u8]| b.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
            let decoded = zstd::stream::decode_all(&bytes[..]).unwrap_or_default();
            if holds(&bytes) || holds(&decoded) {
                found.push(path.display().to_string());
            }
        }
    }
    Ok(found)
}

/// `logferry-shipper <args>` reading with exactly the keys `keys` (`ID=FILE,...`; empty:
/// none): (exit code, output).
fn shipper_with_keys(keys: &str, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let log = tempfile::NamedTempFile::new()?;
    let mut cmd = shipper_command()?;
    cmd.env("LOGFERRY_SHIPPER_KEYS", keys).args(args);
    let mut p = Proc::spawn("logferry-shipper", cmd, log.path())?;
    let status = p.wait_within(RUN_WITHIN)?;
    Ok((status.code().unwrap_or(-1), p.log()))
}

fn restore_args<'a>(store: &'a str, target: &'a str) -> Vec<&'a str> {
    vec![
        "restore", "--store", store, "--stream", STREAM, "--to", "latest", "--target", target,
    ]
}

/// A restore of the test stream into a fresh server with `keys`; the target's checksums.
async fn restore_with(
    keys: &str,
    store: &str,
) -> anyhow::Result<(i32, String, Vec<(String, Option<u64>)>)> {
    let fresh = MariaDb::start(Options::without_binlog(9)).await?;
    let target = fresh.root_url();
    let (code, out) = shipper_with_keys(keys, &restore_args(store, &target))?;
    let sums = if code == 0 {
        workload::checksums(&mut fresh.conn().await?).await?
    } else {
        Vec::new()
    };
    Ok((code, out, sums))
}

/// Replaces `at` of a stored file and makes its trailer (the sha256 of every byte before
/// it) match again, as someone with write access to the bucket can.
fn flip_and_reseal(path: &Path, at: usize) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let mut bytes = std::fs::read(path)?;
    bytes[at] ^= 0x20;
    let body = bytes.len() - 32;
    let trailer: [u8; 32] = Sha256::digest(&bytes[..body]).into();
    bytes[body..].copy_from_slice(&trailer);
    std::fs::write(path, bytes)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_end_to_end_with_the_right_key_only() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    workload::create_schema(&mut c).await?;
    c.query_drop(format!(
        "INSERT INTO app.audit (what) SELECT CONCAT('{MARKER}', seq) FROM seq_1_to_200"
    ))
    .await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    // Payloads stored uncompressed: without encryption the marker would stand in them
    // verbatim, so its absence proves the encryption, not the compression.
    s.segment_extra = "codec = \"none\"".into();
    s.extra_toml = snapshot_section(&replica, None);
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    replica.wait_replicated(&primary).await?;
    run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;
    c.query_drop(format!(
        "INSERT INTO app.audit (what) SELECT CONCAT('{MARKER}', seq) FROM seq_1_to_500"
    ))
    .await?;
    workload::run(&mut c, 0, 100).await?;
    wait_caught_up(&primary, &shipper, &agent).await?;
    let want = workload::checksums(&mut c).await?;

    let store = shipper.store_url();
    let test_key = format!(
        "{TEST_KEY_ID}={}",
        logferry_integration::logferry::test_key()?.display()
    );
    assert_eq!(
        files_with_marker(&shipper.store_dir)?,
        Vec::<String>::new(),
        "the marker is in stored objects"
    );
    let (code, out, got) = restore_with(&test_key, &store).await?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(got, want, "the restore with the right key is exact: {out}");

    // The same id with other key bytes, and no key at all: refused, naming the key.
    let wrong = tmp.path().join("wrong.key");
    write_key(&wrong, TEST_KEY_ID)?;
    let wrong_key = format!("{TEST_KEY_ID}={}", wrong.display());
    let (code, out, _) = restore_with(&wrong_key, &store).await?;
    assert_ne!(code, 0, "a restore with a wrong key succeeded: {out}");
    assert!(
        out.contains("master key \"test\"") && out.contains("does not open"),
        "{out}"
    );
    let (code, out) = shipper_with_keys(&wrong_key, &["verify", "--store", &store])?;
    assert_ne!(code, 0, "verify with a wrong key said OK: {out}");
    assert!(out.contains("master key \"test\""), "{out}");
    let scratch = MariaDb::start(Options::without_binlog(10)).await?;
    let scratch_url = scratch.root_url();
    let (code, out) = shipper_with_keys(
        &wrong_key,
        &[
            "verify",
            "--store",
            &store,
            "--stream",
            STREAM,
            "--restore-drill",
            "--target",
            &scratch_url,
        ],
    )?;
    assert_ne!(code, 0, "the drill with a wrong key passed: {out}");
    assert!(out.contains("master key \"test\""), "{out}");
    let (code, out, _) = restore_with("", &store).await?;
    assert_ne!(code, 0, "a restore without a key succeeded: {out}");
    assert!(out.contains("master key \"test\" is needed"), "{out}");
    let (code, out) = shipper_with_keys(
        "",
        &[
            "export",
            "--store",
            &store,
            "--stream",
            STREAM,
            "--dir",
            &tmp.path().join("export").display().to_string(),
        ],
    )?;
    assert_ne!(code, 0, "an export without a key succeeded: {out}");
    assert!(out.contains("master key \"test\""), "{out}");

    // With the shipper away, the marker's rows wait in the spool: sealed there too.
    let mut shipper = shipper;
    shipper.kill9();
    c.query_drop(format!(
        "INSERT INTO app.audit (what) SELECT CONCAT('{MARKER}', seq) FROM seq_1_to_300"
    ))
    .await?;
    let segments_dir = agent.spool_dir.join("segments");
    wait_for("segments in the spool", Duration::from_secs(60), || async {
        let n = std::fs::read_dir(&segments_dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".lfs"))
            .count();
        Ok((n > 0).then_some(()))
    })
    .await?;
    assert_eq!(
        files_with_marker(&agent.spool_dir)?,
        Vec::<String>::new(),
        "the marker is in the spool"
    );

    // Rotation while a backlog under the old key waits in the spool: the capsules move
    // to the new key, the agent restarts under it, and its old capsule (wrapped under the
    // old key) sent again is taken as stored, not refused.
    let next = tmp.path().join("next.key");
    write_key(&next, "next")?;
    let both = format!("{test_key},next={}", next.display());
    let (code, out) = shipper_with_keys(&both, &["rotate-key", "--store", &store, "--to", "next"])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("re-wrapped 2 capsule(s) under master key \"next\""),
        "{out}"
    );
    let mut agent = agent;
    agent.kill9();
    agent.edit_config(
        &format!("key_id = \"{TEST_KEY_ID}\""),
        &format!(
            "key_id = \"next\"\n[encryption.keys.next]\nfile = \"{}\"",
            next.display()
        ),
    )?;
    agent.restart()?;
    workload::run(&mut c, 100, 200).await?;
    shipper.restart().await?;
    wait_caught_up(&primary, &shipper, &agent).await?;
    let want = workload::checksums(&mut c).await?;
    let next_only = format!("next={}", next.display());
    let (code, out, got) = restore_with(&next_only, &store).await?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        got, want,
        "objects from before and after the rotation restore: {out}"
    );
    let (code, out, _) = restore_with(&test_key, &store).await?;
    assert_ne!(code, 0, "the old key alone still opens the store: {out}");
    let (code, out) = shipper_with_keys(&next_only, &["verify", "--store", &store])?;
    assert_eq!(code, 0, "{out}");

    // A flipped ciphertext byte with the trailer made to match: the tag catches it.
    shipper.kill9();
    let segs = logferry_integration::store::segments(&shipper.store_dir, STREAM)?;
    let (name, seg) = segs.last().expect("segments stored");
    let path = shipper
        .store_dir
        .join(logferry_common::keys::segments_prefix(
            &seg.header.meta.stream,
        ))
        .join(name);
    let len = std::fs::metadata(&path)?.len() as usize;
    flip_and_reseal(&path, len - 32 - 20)?;
    let (code, out) = shipper_with_keys(&next_only, &["verify", "--store", &store])?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(name.as_str()) && out.contains("fails its authentication"),
        "{out}"
    );
    let (code, out, _) = restore_with(&next_only, &store).await?;
    assert_ne!(code, 0, "a restore over a flipped byte succeeded: {out}");
    assert!(out.contains(name.as_str()), "{out}");
    Ok(())
}

/// What a holder of the bucket's credentials (or a stolen ship token) can write without
/// the key: a newer snapshot of its own, a segment in clear at the chain's end, a drill
/// record. `verify` names each as not written by a key holder; a restore never loads the
/// forged snapshot (it falls back to the real one) and refuses the segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_written_into_the_bucket_without_the_key_are_rejected() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    c.query_drop("CREATE DATABASE shop").await?;
    c.query_drop("CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .await?;
    c.query_drop("INSERT INTO shop.t VALUES (1),(2),(3)")
        .await?;
    let replica = MariaDb::start_replica(&primary, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&primary, &shipper);
    s.extra_toml = snapshot_section(&replica, None);
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    replica.wait_replicated(&primary).await?;
    let real = run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;
    wait_caught_up(&primary, &shipper, &agent).await?;
    let store = shipper.store_url();
    let (code, out) = shipper_cli(&["verify", "--store", &store])?;
    assert_eq!(code, 0, "{out}");

    // A snapshot with a newer id: its own SQL as the chunk, a manifest copied from the
    // real one with the id and chunk changed (the MAC cannot be made without the key).
    let stream = logferry_common::StreamId::new(STREAM)?;
    let real_manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
        shipper
            .store_dir
            .join(logferry_common::keys::manifest_key(&stream, &real)),
    )?)?;
    let forged_id = format!("{:013}", real.parse::<i64>()? + 1000);
    let sql = b"DROP DATABASE IF EXISTS shop; CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (666);\n";
    let (stored, info) = logferry_common::snapshot::seal_chunk(1, sql, None)?;
    let chunk = shipper
        .store_dir
        .join(logferry_common::keys::chunk_key(&stream, &forged_id, 1));
    std::fs::create_dir_all(chunk.parent().expect("a folder"))?;
    std::fs::write(&chunk, stored)?;
    let mut forged = real_manifest.clone();
    forged["id"] = forged_id.clone().into();
    forged["chunks"] = serde_json::to_value(vec![info])?;
    let forged_key = logferry_common::keys::manifest_key(&stream, &forged_id);
    std::fs::write(
        shipper.store_dir.join(&forged_key),
        serde_json::to_vec(&forged)?,
    )?;

    let (code, out) = shipper_cli(&["verify", "--store", &store])?;
    assert_eq!(code, 1, "verify passed a forged snapshot: {out}");
    assert!(
        out.contains("UNAUTHENTIC") && out.contains(&forged_key),
        "{out}"
    );
    let fresh = MariaDb::start(Options::without_binlog(9)).await?;
    let target = fresh.root_url();
    let (code, out) = shipper_cli(&restore_args(&store, &target))?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("snapshot:       {real}")), "{out}");
    assert!(
        out.contains("fails its MAC"),
        "the report names the forged snapshot: {out}"
    );
    let ids: Vec<i64> = fresh
        .conn()
        .await?
        .query("SELECT id FROM shop.t ORDER BY id")
        .await?;
    assert_eq!(ids, vec![1, 2, 3], "the restore loaded the forged snapshot");
    // The same forged snapshot claiming to be in clear: refused as well.
    let mut in_clear = forged.clone();
    if let Some(o) = in_clear.as_object_mut() {
        o.remove("key");
        o.remove("mac");
    }
    std::fs::write(
        shipper.store_dir.join(&forged_key),
        serde_json::to_vec(&in_clear)?,
    )?;
    let (code, out) = shipper_cli(&["verify", "--store", &store])?;
    assert_eq!(code, 1, "verify passed a snapshot in clear: {out}");
    assert!(
        out.contains("UNAUTHENTIC") && out.contains("stored in clear"),
        "{out}"
    );
    std::fs::remove_dir_all(chunk.parent().expect("a folder"))?;

    // A segment in clear that continues the chain.
    let segs = logferry_integration::store::segments(&shipper.store_dir, STREAM)?;
    let end = logferry_integration::store::chain_end(&segs)
        .expect("a chain")
        .as_mysql()?
        .clone();
    let plain = common::segment_at(
        STREAM,
        end.file(),
        end.offset,
        b"INSERT INTO shop.t VALUES (666)",
    );
    let m = &plain.header.meta;
    let plain_key =
        logferry_common::keys::segment_key(&stream, &m.start.sort_key(), &m.end.sort_key());
    std::fs::write(shipper.store_dir.join(&plain_key), plain.bytes())?;
    let (code, out) = shipper_cli(&["verify", "--store", &store])?;
    assert_eq!(code, 1, "verify passed a segment in clear: {out}");
    assert!(
        out.contains("UNAUTHENTIC") && out.contains(&plain_key),
        "{out}"
    );
    let fresh = MariaDb::start(Options::without_binlog(9)).await?;
    let target = fresh.root_url();
    let (code, out) = shipper_cli(&restore_args(&store, &target))?;
    assert_ne!(code, 0, "a restore applied a segment in clear: {out}");
    assert!(out.contains(&plain_key), "{out}");
    std::fs::remove_file(shipper.store_dir.join(&plain_key))?;

    // A drill record saying "passed", written without the key.
    let drill_key = logferry_common::keys::drill_key(&stream, 1_900_000_000_000);
    std::fs::create_dir_all(
        shipper
            .store_dir
            .join(&drill_key)
            .parent()
            .expect("a folder"),
    )?;
    std::fs::write(
        shipper.store_dir.join(&drill_key),
        format!(
            r#"{{"stream":"{STREAM}","started_ms":1900000000000,"finished_ms":1900000000001,"verdict":"passed","snapshot":null,"position":null,"compared_with":null,"compared":9,"differences":0}}"#
        ),
    )?;
    let (code, out) = shipper_cli(&["verify", "--store", &store])?;
    assert_eq!(code, 1, "verify passed a forged drill record: {out}");
    assert!(
        out.contains("UNAUTHENTIC") && out.contains(&drill_key),
        "{out}"
    );
    Ok(())
}
