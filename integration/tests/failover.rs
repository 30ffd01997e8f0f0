//! Failover: the stream follows its database to a promoted standby (by GTID, as a new leg
//! of the chain), and never takes another database for a successor. Real `mariadbd`
//! primaries and replicas.

mod common;

use std::time::Duration;

use common::{
    mark, rfc3339, run_snapshot, settings, shipper_cli, snapshot_section, wait_caught_up, STREAM,
};
use logferry_common::Position;
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::process::RUN_WITHIN;
use logferry_integration::{store, workload};
use mysql_async::prelude::Queryable;

type Sums = Vec<(String, Option<u64>)>;

/// A replica that logs what it applies and rotates its binlog every few KiB, so that its
/// files and offsets have nothing to do with its primary's.
fn standby(server_id: u32) -> Options {
    Options {
        server_id,
        extra: vec![
            "--log-slave-updates".into(),
            "--max-binlog-size=4096".into(),
        ],
        ..Options::default()
    }
}

/// Restores the test stream to `to` into a fresh server that writes a binlog (so that
/// the GTIDs it applies are its GTID state); its checksums and GTID state.
async fn restore(shipper: &Shipper, to: &str) -> anyhow::Result<(Sums, String)> {
    let fresh = MariaDb::start(Options {
        server_id: 9,
        ..Options::default()
    })
    .await?;
    let (code, out) = shipper_cli(&[
        "restore",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--to",
        to,
        "--target",
        &fresh.root_url(),
    ])?;
    anyhow::ensure!(code == 0, "restore to {to} failed: {out}");
    let mut c = fresh.conn().await?;
    let sums = workload::checksums(&mut c).await?;
    Ok((sums, fresh.gtid_binlog_pos().await?))
}

/// `verify` of the store: exit code and output.
fn verify(shipper: &Shipper) -> anyhow::Result<(i32, String)> {
    shipper_cli(&["verify", "--store", &shipper.store_url()])
}

/// A primary holding the workload's schema and its first `rows` transactions, its standby
/// (replicating it), a shipper, and an agent reading the primary from its first binlog.
async fn primary_standby_agent(
    tmp: &std::path::Path,
    rows: u64,
) -> anyhow::Result<(MariaDb, MariaDb, Shipper, Agent)> {
    let a = MariaDb::start(Options::default()).await?;
    workload::create_schema(&mut a.conn().await?).await?;
    workload::run(&mut a.conn().await?, 0, rows).await?;
    let b = MariaDb::start_replica_with(&a, standby(2)).await?;
    let shipper = Shipper::start(tmp).await?;
    let mut s = settings(&a, &shipper);
    s.source_extra = "start = \"earliest\"".into();
    let agent = Agent::start(&tmp.join("agent"), &s)?;
    Ok((a, b, shipper, agent))
}

/// `logferry-shipper promote` of the test stream into `standby`, with `extra` flags.
fn promote_cli(
    shipper: &Shipper,
    standby: &MariaDb,
    extra: &[&str],
) -> anyhow::Result<(i32, String)> {
    common::promote(shipper, STREAM, &standby.root_url(), extra)
}

/// The sequence number of a one-domain GTID state (`0-1-57` → 57).
fn seq(state: &str) -> anyhow::Result<u64> {
    Ok(state.rsplit('-').next().unwrap_or("0").parse()?)
}

/// Waits until the replica `b`'s IO thread has received up to GTID state `state`.
async fn wait_relay_received(b: &MariaDb, state: &str) -> anyhow::Result<()> {
    logferry_integration::wait_for(
        "the replica's relay log to receive the primary's writes",
        Duration::from_secs(60),
        || async {
            let row: Option<mysql_async::Row> =
                b.conn().await?.query_first("SHOW SLAVE STATUS").await?;
            let io: String = row.and_then(|r| r.get("Gtid_IO_Pos")).unwrap_or_default();
            Ok((io == state).then_some(()))
        },
    )
    .await
}

/// The origins recorded in the stored chain, in chain order, each once per run.
fn origins(shipper: &Shipper) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (_, s) in store::segments(&shipper.store_dir, STREAM)? {
        let o = s.header.meta.lineage.origin.clone();
        if out.last() != Some(&o) {
            out.push(o);
        }
    }
    Ok(out)
}

/// Waits until the stored chain ends at `db`'s binlog end on leg `leg`.
async fn wait_stored_up_to(
    db: &MariaDb,
    shipper: &Shipper,
    agent: &Agent,
    leg: u32,
) -> anyhow::Result<()> {
    logferry_integration::wait_for(
        "the chain to reach the promoted server's end",
        Duration::from_secs(120),
        || async {
            if agent.log_text().contains("agent stopped") {
                anyhow::bail!("the agent stopped:\n{}", agent.log_text());
            }
            let (file, pos) = db.master_status().await?;
            let segs = store::segments(&shipper.store_dir, STREAM)?;
            Ok(match store::chain_end(&segs) {
                Some(Position::Mysql(end)) => {
                    (end.leg() == leg && end.file() == file && end.offset == pos).then_some(())
                }
                _ => None,
            })
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nagent log:\n{}\nshipper log:\n{}",
            agent.log_text(),
            shipper.log_text()
        )
    })
}

/// The primary dies (kill -9), its replica is promoted, and the agent is pointed at the
/// replica by a config change. The replica's binlog has rotated many times and holds local
/// rotations, so the primary's last file + offset means nothing there: the agent continues
/// by GTID as a new leg, with no gap and no duplicate; `verify` passes; restores to marks
/// before, across and after the failover give the state there, and the latest one the
/// promoted server's GTID state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_follows_a_promoted_replica_by_gtid_after_a_config_change() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let mut a = MariaDb::start(Options::default()).await?;
    workload::create_schema(&mut a.conn().await?).await?;
    workload::run(&mut a.conn().await?, 0, 50).await?;
    let b = MariaDb::start_replica_with(&a, standby(2)).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&a, &shipper);
    s.extra_toml = snapshot_section(&b, None);
    let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
    run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;

    workload::run(&mut a.conn().await?, 50, 120).await?;
    let before = mark().await;
    let sums_before = workload::checksums(&mut a.conn().await?).await?;
    workload::run(&mut a.conn().await?, 120, 200).await?;
    wait_caught_up(&a, &shipper, &agent).await?;
    b.wait_replicated(&a).await?;
    b.conn().await?.query_drop("FLUSH BINARY LOGS").await?;
    let a_end = match store::chain_end(&store::segments(&shipper.store_dir, STREAM)?) {
        Some(Position::Mysql(p)) => p,
        other => anyhow::bail!("no MySQL chain end: {other:?}"),
    };

    a.kill9();
    b.promote().await?;
    let across = mark().await;
    let sums_across = workload::checksums(&mut b.conn().await?).await?;
    workload::run(&mut b.conn().await?, 200, 260).await?;
    let after = mark().await;
    let sums_after = workload::checksums(&mut b.conn().await?).await?;
    workload::run(&mut b.conn().await?, 260, 300).await?;

    // File + offset would be wrong on B: at the primary's last place, B's binlog holds
    // no event, or one that is not where the stream goes on.
    let (b_file, _) = b.master_status().await?;
    assert_ne!(b_file, a_end.file(), "B rotated past the primary's file");
    let at_a_place: Vec<mysql_async::Row> = match b
        .conn()
        .await?
        .query(format!(
            "SHOW BINLOG EVENTS IN '{}' FROM {} LIMIT 1",
            a_end.file(),
            a_end.offset
        ))
        .await
    {
        Ok(rows) => rows,
        // The server refuses the place (no such file, or no event there).
        Err(mysql_async::Error::Server(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let first_after_failover: Option<String> = b
        .conn()
        .await?
        .query_first("SELECT CONCAT('BEGIN GTID ', @@gtid_domain_id, '-2-')")
        .await?;
    let wrong_place = at_a_place.first().map(|r| {
        let info: String = r.get("Info").unwrap_or_default();
        info
    });
    assert!(
        wrong_place
            .as_deref()
            .is_none_or(|i| !i.starts_with(first_after_failover.as_deref().unwrap_or("?"))),
        "B's event at the primary's last place would be the right one: {wrong_place:?}"
    );

    agent.terminate()?;
    agent.edit_config(&a.repl_url(), &b.repl_url())?;
    agent.restart()?;
    wait_stored_up_to(&b, &shipper, &agent, a_end.leg() + 1).await?;

    let (code, out) = verify(&shipper)?;
    assert_eq!(code, 0, "verify after the failover: {out}");
    let seen = origins(&shipper)?;
    assert_eq!(
        seen.len(),
        2,
        "one run of the primary, then one of B: {seen:?}"
    );
    assert!(
        seen[0].contains("server_id=1") && seen[1].contains("server_id=2"),
        "{seen:?}"
    );
    let log = agent.log_text();
    assert!(
        log.contains("the server holds the chain's last transaction with the same content"),
        "{log}"
    );

    assert_eq!(restore(&shipper, &rfc3339(before)).await?.0, sums_before);
    assert_eq!(restore(&shipper, &rfc3339(across)).await?.0, sums_across);
    assert_eq!(restore(&shipper, &rfc3339(after)).await?.0, sums_after);
    let (latest, gtid) = restore(&shipper, "latest").await?;
    assert_eq!(latest, workload::checksums(&mut b.conn().await?).await?);
    assert_eq!(
        gtid,
        b.gtid_binlog_pos().await?,
        "the restored GTID state is B's"
    );
    Ok(())
}

/// The replica takes over the dead primary's address (as a VIP or DNS move does): the
/// agent's config does not change, it reconnects to the same address, finds another
/// server there, and continues by GTID as a new leg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_follows_a_replica_that_takes_over_the_primary_address() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut a = MariaDb::start(Options::default()).await?;
    workload::create_schema(&mut a.conn().await?).await?;
    workload::run(&mut a.conn().await?, 0, 80).await?;
    let mut b = MariaDb::start_replica_with(&a, standby(2)).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&a, &shipper);
    s.source_extra = "start = \"earliest\"".into();
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    wait_caught_up(&a, &shipper, &agent).await?;
    b.wait_replicated(&a).await?;

    let port = a.port;
    a.kill9();
    b.move_to_port(port).await?;
    b.promote().await?;
    workload::run(&mut b.conn().await?, 80, 150).await?;
    wait_stored_up_to(&b, &shipper, &agent, 1).await?;

    let (code, out) = verify(&shipper)?;
    assert_eq!(code, 0, "{out}");
    let (code, out) = shipper_cli(&[
        "export",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--from",
        "mysql-bin.000001:4",
        "--to",
        "latest",
        "--dir",
        &tmp.path().join("export").display().to_string(),
    ])?;
    assert_eq!(code, 0, "{out}");
    let files: Vec<String> = std::fs::read_dir(tmp.path().join("export"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.starts_with("leg1-mysql-bin.")),
        "B's files are exported under their leg: {files:?}"
    );
    Ok(())
}

/// Two servers built by the same script, a second agent given the first one's stream
/// name by mistake: it is refused at once (the second server lacks the stream's last
/// transactions, then holds other content under their GTIDs), and the stream keeps one
/// database only; the first agent goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_database_on_one_stream_name_is_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let x = MariaDb::start(Options::default()).await?;
    let y = MariaDb::start(Options::default()).await?;
    for db in [&x, &y] {
        workload::create_schema(&mut db.conn().await?).await?;
        workload::run(&mut db.conn().await?, 0, 20).await?;
    }
    let shipper = Shipper::start(tmp.path()).await?;
    let mut sx = settings(&x, &shipper);
    sx.source_extra = "start = \"earliest\"".into();
    let agent_x = Agent::start(&tmp.path().join("x"), &sx)?;
    workload::run(&mut x.conn().await?, 20, 30).await?;
    wait_caught_up(&x, &shipper, &agent_x).await?;

    let mut sy = settings(&y, &shipper);
    sy.source_extra = "start = \"earliest\"".into();
    let mut agent_y = Agent::start(&tmp.path().join("y"), &sy)?;
    let status = agent_y.wait_exit(Duration::from_secs(60)).await?;
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}: {}",
        agent_y.log_text()
    );
    let log = agent_y.log_text();
    assert!(
        log.contains("is not a successor") && log.contains("lacks stored transactions"),
        "{log}"
    );

    workload::run(&mut y.conn().await?, 500, 540).await?;
    agent_y.restart()?;
    let status = agent_y.wait_exit(Duration::from_secs(60)).await?;
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}: {}",
        agent_y.log_text()
    );
    let log = agent_y.log_text();
    assert!(
        log.contains("is not a successor") && log.contains("with other content"),
        "{log}"
    );

    workload::run(&mut x.conn().await?, 30, 40).await?;
    wait_caught_up(&x, &shipper, &agent_x).await?;
    let (code, out) = verify(&shipper)?;
    assert_eq!(code, 0, "{out}");
    let seen = origins(&shipper)?;
    assert_eq!(seen.len(), 1, "one database only: {seen:?}");
    assert!(seen[0].contains(&format!(":{}", x.port)), "{seen:?}");
    Ok(())
}

/// The standby is behind (its SQL thread stopped while the primary went on), the primary
/// dies, and `promote` makes the standby the primary: every transaction the store holds is
/// on it once, under its original GTID; the report's numbers are the ones the test knows;
/// `--dry-run` changed nothing before; a second promote is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_applies_what_the_standby_lacks_and_reports_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut a, b, shipper, agent) = primary_standby_agent(tmp.path(), 40).await?;
    b.conn().await?.query_drop("STOP SLAVE SQL_THREAD").await?;
    let b_before = b.gtid_binlog_pos().await?;
    workload::run(&mut a.conn().await?, 40, 80).await?;
    let received = a.gtid_binlog_pos().await?;
    wait_relay_received(&b, &received).await?;
    b.conn().await?.query_drop("STOP SLAVE IO_THREAD").await?;
    workload::run(&mut a.conn().await?, 80, 120).await?;
    wait_caught_up(&a, &shipper, &agent).await?;
    let a_final = a.gtid_binlog_pos().await?;
    let want = workload::checksums(&mut a.conn().await?).await?;
    // Both replication threads stopped: MariaDB discards the relay log when replication
    // starts again, so everything the standby lacks comes from the store.
    let in_relay = 0;
    let from_store = seq(&a_final)? - seq(&b_before)?;
    assert!(
        seq(&received)? > seq(&b_before)? && from_store > 20,
        "{b_before} {received} {a_final}"
    );
    let heard = shipper.store_dir.join("watch/heard.json");
    logferry_integration::wait_for(
        "the shipper to keep the agent's report",
        Duration::from_secs(60),
        || async {
            let text = std::fs::read_to_string(&heard).unwrap_or_default();
            Ok(text.contains("read_commit_ms").then_some(()))
        },
    )
    .await?;

    let lacking = in_relay + from_store;
    let promote = |extra: &[&str]| promote_cli(&shipper, &b, extra);
    let (code, out) = promote(&["--dry-run", "--old-primary", &a.root_url()])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("DRY RUN")
            && out.contains(&format!("applied:          {lacking} transactions")),
        "{out}"
    );
    assert_eq!(
        b.gtid_binlog_pos().await?,
        b_before,
        "a dry run changes nothing"
    );
    assert!(
        !b.sql_thread_running().await?,
        "still a replica, still stopped"
    );
    let writable: Option<u8> = a.conn().await?.query_first("SELECT @@read_only").await?;
    assert_eq!(writable, Some(0), "a dry run does not fence");
    assert!(!shipper
        .store_dir
        .join(format!("streams/{STREAM}/promotions"))
        .exists());

    a.kill9();
    let (code, out) = promote(&["--old-primary", &a.root_url()])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PROMOTED"), "{out}");
    assert!(
        out.contains("not fenced"),
        "the dead primary did not answer: {out}"
    );
    assert!(
        out.contains(&format!("relay log:        {in_relay} transactions"))
            && out.contains(&format!("applied:          {from_store} transactions"))
            && out.contains("both replication threads were stopped"),
        "relay {in_relay}, store {from_store}: {out}"
    );
    assert!(
        out.contains(&format!("standby before:   {b_before}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("standby after:    {a_final}")),
        "{out}"
    );
    assert_eq!(
        b.gtid_binlog_pos().await?,
        a_final,
        "original GTIDs, each once"
    );
    assert_eq!(workload::checksums(&mut b.conn().await?).await?, want);
    let mut c = b.conn().await?;
    let read_only: Option<u8> = c.query_first("SELECT @@read_only").await?;
    assert_eq!(read_only, Some(0), "the standby is writable");
    let slave: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await?;
    assert!(slave.is_none(), "its replication is gone");
    c.query_drop("INSERT INTO app.audit (what) VALUES ('after the promotion')")
        .await?;

    let reports: Vec<_> = std::fs::read_dir(
        shipper
            .store_dir
            .join(format!("streams/{STREAM}/promotions")),
    )?
    .filter_map(Result::ok)
    .collect();
    assert_eq!(reports.len(), 1);
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(reports[0].path())?)?;
    assert_eq!(stored["outcome"], "promoted");
    assert_eq!(stored["applied_transactions"], lacking);
    if stored["last_seen_commit_ms"].is_i64() {
        assert_eq!(
            stored["data_loss_ms"], 0,
            "everything the agent read was stored: {stored}"
        );
    }

    let (code, out) = promote(&[])?;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("already promoted"), "{out}");
    Ok(())
}

/// A fork: the standby stopped receiving (its IO thread stopped) while the agent went on
/// shipping the primary's transactions; the primary dies, the standby is promoted and
/// writes its own transactions under the same sequence numbers. Pointed at it, the agent
/// finds the newest stored segment end the standby holds, checks that transaction's
/// content there, and continues as a new leg that records the fork point: `ls` shows the
/// fork, `export --branch 1` lists and writes exactly the transactions only the old
/// primary had, `verify` passes, and the latest restore follows the standby's branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_fork_the_chain_follows_the_promoted_standby_and_keeps_the_orphans(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut a = MariaDb::start(Options::default()).await?;
    workload::create_schema(&mut a.conn().await?).await?;
    workload::run(&mut a.conn().await?, 0, 40).await?;
    let b = MariaDb::start_replica_with(&a, standby(2)).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&a, &shipper);
    s.extra_toml = snapshot_section(&b, None);
    // Segments of several seconds: the standby's last transaction is inside one, so the
    // fork point (a segment end) lies before it and the standby sends the ones after it
    // again.
    s.max_age_ms = 3000;
    let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
    run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;
    workload::run(&mut a.conn().await?, 40, 60).await?;
    b.wait_replicated(&a).await?;
    b.conn().await?.query_drop("STOP SLAVE IO_THREAD").await?;
    let fork_state = b.gtid_binlog_pos().await?;
    let sums_at_fork = workload::checksums(&mut b.conn().await?).await?;
    workload::run(&mut a.conn().await?, 60, 75).await?;
    let inside = mark().await;
    workload::run(&mut a.conn().await?, 75, 90).await?;
    wait_caught_up(&a, &shipper, &agent).await?;
    let a_final = a.gtid_binlog_pos().await?;
    let orphans: Vec<String> = (seq(&fork_state)? + 1..=seq(&a_final)?)
        .map(|n| format!("0-1-{n}"))
        .collect();
    assert!(orphans.len() > 5, "{fork_state} .. {a_final}");
    a.kill9();
    b.promote().await?;
    workload::run(&mut b.conn().await?, 100, 160).await?;

    agent.terminate()?;
    agent.edit_config(&a.repl_url(), &b.repl_url())?;
    agent.restart()?;
    wait_stored_up_to(&b, &shipper, &agent, 1).await?;
    assert!(agent.log_text().contains("a fork"), "{}", agent.log_text());

    let (code, out) = verify(&shipper)?;
    assert_eq!(code, 0, "{out}");
    let (code, out) = shipper_cli(&["ls", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("after a FORK"), "{out}");
    let dir = tmp.path().join("branch");
    let (code, out) = shipper_cli(&[
        "export",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--branch",
        "1",
        "--dir",
        &dir.display().to_string(),
    ])?;
    assert_eq!(code, 0, "{out}");
    let only_old: Vec<String> = out
        .lines()
        .filter(|l| l.ends_with("only on the old branch"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(only_old, orphans, "{out}");
    for line in out
        .lines()
        .filter(|l| l.ends_with("also on the new branch (not written)"))
    {
        let g = line.split_whitespace().next().unwrap_or_default();
        assert!(
            seq(g)? <= seq(&fork_state)?,
            "{g} is re-sent by the standby, which stopped at {fork_state}: {out}"
        );
    }
    let old_end = out
        .lines()
        .find_map(|l| l.split("the old branch went on to ").nth(1))
        .unwrap_or_default()
        .to_owned();
    let fresh = MariaDb::start(Options::without_binlog(9)).await?;
    let (code, refused) = shipper_cli(&[
        "restore",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--to",
        &old_end,
        "--target",
        &fresh.root_url(),
    ])?;
    assert_ne!(code, 0, "a place on the old branch: {refused}");
    assert!(refused.contains("old branch of a fork"), "{refused}");
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert!(!files.is_empty(), "{out}");
    let text = std::process::Command::new("mariadb-binlog")
        .args(&files)
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    for g in &orphans {
        assert!(text.contains(&format!("GTID {g}")), "{g} is in the files");
    }
    assert_eq!(
        text.matches("GTID 0-").count(),
        orphans.len(),
        "nothing else is in the files"
    );

    let (latest, gtid) = restore(&shipper, "latest").await?;
    assert_eq!(latest, workload::checksums(&mut b.conn().await?).await?);
    assert_eq!(gtid, b.gtid_binlog_pos().await?);
    assert_eq!(
        restore(&shipper, &rfc3339(inside)).await?.0,
        sums_at_fork,
        "a time inside the old branch's window follows the standby's branch"
    );

    logferry_integration::wait_for(
        "the status to show the fork and its alert",
        Duration::from_secs(60),
        || async {
            let status: serde_json::Value =
                serde_json::from_str(&shipper.get("/v1/status").await?)?;
            let s = &status["streams"][0];
            let firing = s["firing"].as_array().cloned().unwrap_or_default();
            Ok((s["forks"] == 1 && firing.iter().any(|f| f == "fork")).then_some(()))
        },
    )
    .await?;
    let metrics = shipper.get("/metrics").await?;
    assert!(
        metrics.contains("logferry_shipper_last_fork_timestamp_seconds{stream=\"db1\"}"),
        "{metrics}"
    );
    Ok(())
}

/// The agent beside a replica (`log_slave_updates`): when that replica is promoted,
/// nothing changes for the agent; the chain goes on on the same leg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_beside_a_replica_goes_on_when_the_replica_is_promoted() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut a = MariaDb::start(Options::default()).await?;
    workload::create_schema(&mut a.conn().await?).await?;
    workload::run(&mut a.conn().await?, 0, 40).await?;
    let b = MariaDb::start_replica_with(&a, standby(2)).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let mut s = settings(&b, &shipper);
    s.source_extra = "start = \"earliest\"".into();
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    workload::run(&mut a.conn().await?, 40, 80).await?;
    b.wait_replicated(&a).await?;
    wait_caught_up(&b, &shipper, &agent).await?;
    a.kill9();
    b.promote().await?;
    workload::run(&mut b.conn().await?, 80, 120).await?;
    wait_stored_up_to(&b, &shipper, &agent, 0).await?;
    common::assert_stored_exactly_and_verified(&b, &shipper, tmp.path())?;
    assert_eq!(origins(&shipper)?.len(), 1, "one server throughout");
    Ok(())
}

/// The standby's SQL thread stopped while its IO thread went on receiving: its relay log
/// holds what it lacks. `promote` applies the relay log first (nothing from the store is
/// then needed) and leaves the standby writable with the primary's GTID state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_applies_the_standby_relay_log_first() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut a, b, shipper, agent) = primary_standby_agent(tmp.path(), 0).await?;
    b.conn().await?.query_drop("STOP SLAVE SQL_THREAD").await?;
    workload::run(&mut a.conn().await?, 0, 60).await?;
    let a_final = a.gtid_binlog_pos().await?;
    wait_relay_received(&b, &a_final).await?;
    wait_caught_up(&a, &shipper, &agent).await?;
    let b_before = b.gtid_binlog_pos().await?;
    a.kill9();
    let (code, out) = promote_cli(&shipper, &b, &[])?;
    assert_eq!(code, 0, "{out}");
    let lacking = seq(&a_final)? - seq(&b_before)?;
    assert!(lacking > 20, "{b_before} {a_final}");
    assert!(
        out.contains(&format!("relay log:        {lacking} transactions"))
            && out.contains("applied:          0 transactions"),
        "{out}"
    );
    assert_eq!(b.gtid_binlog_pos().await?, a_final);
    let read_only: Option<u8> = b.conn().await?.query_first("SELECT @@read_only").await?;
    assert_eq!(read_only, Some(0));
    Ok(())
}

/// `promote` into a server that went its own way (it was written to under the sequence
/// numbers the store holds for the primary) is refused before anything is applied; the
/// report names the step and the standby stays read-only and unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_standby_that_went_its_own_way() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut a, b, shipper, agent) = primary_standby_agent(tmp.path(), 20).await?;
    b.promote().await?;
    workload::run(&mut a.conn().await?, 20, 40).await?;
    workload::run(&mut b.conn().await?, 500, 520).await?;
    wait_caught_up(&a, &shipper, &agent).await?;
    a.kill9();
    let b_before = b.gtid_binlog_pos().await?;
    let sums = workload::checksums(&mut b.conn().await?).await?;
    let (code, out) = promote_cli(&shipper, &b, &[])?;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("went its own way") && out.contains("find what the standby lacks"),
        "{out}"
    );
    assert!(out.contains("is left read-only"), "{out}");
    assert_eq!(b.gtid_binlog_pos().await?, b_before, "nothing applied");
    assert_eq!(workload::checksums(&mut b.conn().await?).await?, sums);
    let read_only: Option<u8> = b.conn().await?.query_first("SELECT @@read_only").await?;
    assert_eq!(read_only, Some(1));
    Ok(())
}

/// A planned switch: the old primary still answers. `promote --old-primary` fences it
/// (read-only, its client connections killed) before the standby is made writable, and
/// the standby ends holding everything the old primary wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_fences_an_old_primary_that_still_answers() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (a, b, shipper, agent) = primary_standby_agent(tmp.path(), 40).await?;
    wait_caught_up(&a, &shipper, &agent).await?;
    let mut client = a.conn().await?;
    client.query_drop("SELECT 1").await?;
    let (code, out) = promote_cli(&shipper, &b, &["--old-primary", &a.root_url()])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("fenced (read_only") && !out.contains("not fenced"),
        "{out}"
    );
    let read_only: Option<u8> = a.conn().await?.query_first("SELECT @@read_only").await?;
    assert_eq!(read_only, Some(1), "the old primary is fenced");
    assert!(
        client.query_drop("SELECT 1").await.is_err(),
        "the old primary's client connections were killed"
    );
    assert_eq!(b.gtid_binlog_pos().await?, a.gtid_binlog_pos().await?);
    let writable: Option<u8> = b.conn().await?.query_first("SELECT @@read_only").await?;
    assert_eq!(writable, Some(0));
    Ok(())
}
