//! Failover on MySQL 8: the stream follows a promoted replica by GTID auto-positioning
//! (`COM_BINLOG_DUMP_GTID` with the stored GTID set), and another MySQL server that lacks
//! the stored transactions is refused. No MySQL server can be installed on the machines
//! this suite was written on (Debian's `mysqld` is MariaDB): these tests run when
//! `LOGFERRY_MYSQLD` names a MySQL 8 `mysqld`, or one is on the path, and print that they
//! were skipped otherwise. Everything up to the wire is tested without a server (GTID
//! sets, their events and the dump request: `logferry-common`, `logferry-agent`).

mod common;

use std::time::Duration;

use common::{settings_for, shipper_cli, STREAM};
use logferry_common::format::mysql::GtidSet;
use logferry_common::Position;
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mysql8::MySql8;
use logferry_integration::{store, wait_for};
use mysql_async::prelude::Queryable;

/// Whether to skip: no MySQL 8 here (`LOGFERRY_REQUIRE_MYSQL8=1` makes that a failure,
/// for a CI that has one).
fn skipped() -> bool {
    if MySql8::binary().is_some() {
        return false;
    }
    assert!(
        std::env::var_os("LOGFERRY_REQUIRE_MYSQL8").is_none(),
        "LOGFERRY_REQUIRE_MYSQL8 is set but no MySQL 8 mysqld was found (LOGFERRY_MYSQLD)"
    );
    eprintln!(
        "SKIPPED: no MySQL 8 server here (Debian's mysqld is MariaDB); set LOGFERRY_MYSQLD to a MySQL 8 mysqld to run the MySQL failover tests"
    );
    true
}

async fn write(db: &MySql8, from: u32, to: u32) -> anyhow::Result<()> {
    let mut c = db.conn().await?;
    c.query_drop("CREATE DATABASE IF NOT EXISTS app; CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY, v VARCHAR(64))")
        .await?;
    for i in from..to {
        c.exec_drop("INSERT INTO app.t VALUES (?, ?)", (i, format!("row {i}")))
            .await?;
    }
    Ok(())
}

/// Waits until the stored chain's end carries a GTID set holding `db`'s executed set.
async fn wait_stored(db: &MySql8, shipper: &Shipper, agent: &Agent) -> anyhow::Result<()> {
    let want = GtidSet::parse(&db.gtid_executed().await?)?;
    wait_for(
        "the chain to hold the server's GTIDs",
        Duration::from_secs(120),
        || {
            let want = want.clone();
            async move {
                if agent.log_text().contains("agent stopped") {
                    anyhow::bail!("the agent stopped:\n{}", agent.log_text());
                }
                let segs = store::segments(&shipper.store_dir, STREAM)?;
                let Some(Position::Mysql(end)) = store::chain_end(&segs) else {
                    return Ok(None);
                };
                let held = GtidSet::parse(end.gtid.as_deref().unwrap_or_default())?;
                Ok(want.missing_from(&held).is_empty().then_some(()))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_follows_a_promoted_mysql_replica_by_gtid_auto_positioning() -> anyhow::Result<()>
{
    if skipped() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let mut a = MySql8::start(1).await?;
    write(&a, 0, 50).await?;
    let b = MySql8::start_replica(&a, 2).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let s = settings_for(a.repl_url(), &shipper);
    let mut agent = Agent::start(&tmp.path().join("agent"), &s)?;
    write(&a, 50, 120).await?;
    wait_stored(&a, &shipper, &agent).await?;
    b.wait_replicated(&a).await?;
    b.conn().await?.query_drop("FLUSH BINARY LOGS").await?;

    agent.kill9();
    a.kill9();
    b.promote().await?;
    write(&b, 120, 160).await?;
    agent.edit_config(&a.repl_url(), &b.repl_url())?;
    agent.restart()?;
    wait_stored(&b, &shipper, &agent).await?;
    let log = agent.log_text();
    assert!(
        log.contains("continuing by GTID as leg 1")
            && log.contains("holds the chain's last transaction with the same content"),
        "{log}"
    );
    let segs = store::segments(&shipper.store_dir, STREAM)?;
    assert!(
        segs.iter()
            .any(|(_, s)| s.header.meta.lineage.leg_start.is_some()),
        "a new leg"
    );
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "one chain across the failover: {out}");

    // Another MySQL server that lacks the stored transactions is not a successor.
    let other = MySql8::start(3).await?;
    write(&other, 0, 10).await?;
    let mut second = settings_for(other.repl_url(), &shipper);
    second.server_id = 1002;
    let refused = Agent::start(&tmp.path().join("other"), &second)?;
    wait_for(
        "the second agent to be refused",
        Duration::from_secs(60),
        || {
            let log = refused.log_text();
            async move { Ok(log.contains("lacks stored transactions").then_some(())) }
        },
    )
    .await?;
    Ok(())
}
