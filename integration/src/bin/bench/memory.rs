//! Peak memory: agent with the shipper down, one big transaction, several agents at once.

use std::path::Path;
use std::time::{Duration, Instant};

use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::store;
use mysql_async::prelude::Queryable;

use crate::*;

/// Agent memory while the shipper is down and the spool grows, and the drain afterwards.
pub(crate) async fn shipper_down_run(work: &Path, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    println!("== agent memory with the shipper down for {seconds} s under load");
    let db = MariaDb::start(Options::default()).await?;
    let dir = work.join("down");
    let mut shipper = Shipper::start(&dir).await?;
    let agent = Agent::start(
        &dir.join("agent"),
        &settings(&db, &shipper, STREAM, 960, 1000),
    )?;
    let mut c = db.conn().await?;
    c.query_drop("CREATE DATABASE bench").await?;
    wait_shipped(&db, &shipper, STREAM, Duration::from_secs(60)).await?;
    shipper.kill9();
    let started = Instant::now();
    let mut spool_peak = 0u64;
    let mut mb = 32;
    while started.elapsed() < Duration::from_secs(seconds) {
        generate(&mut c, mb).await?;
        mb += 32;
        spool_peak = spool_peak.max(dir_bytes(&agent.spool_dir));
    }
    let rss = agent.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    shipper.restart().await?;
    let drain = Instant::now();
    wait_shipped(&db, &shipper, STREAM, Duration::from_secs(1800)).await?;
    Ok((rss, mib(spool_peak), drain.elapsed().as_secs_f64()))
}

/// Peak memory while one transaction of `mb` MiB of incompressible rows is shipped: the
/// agent and the shipper (caught up before it, tailing while it commits), and the stock
/// `mariadb-binlog --raw` copy of the same binlog. Returns (agent, shipper, stock) MiB and
/// the transaction's binlog MiB.
pub(crate) async fn big_trx_run(work: &Path, mb: u64) -> anyhow::Result<(f64, f64, f64, f64)> {
    println!("== memory while one {mb} MiB transaction is shipped");
    let db = MariaDb::start(Options {
        extra: vec![
            "--max-binlog-cache-size=64G".into(),
            "--innodb-buffer-pool-size=512M".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--binlog-annotate-row-events=OFF".into(),
        ],
        ..Options::default()
    })
    .await?;
    let dir = work.join("big-trx");
    let shipper = Shipper::start(&dir).await?;
    let agent = Agent::start(
        &dir.join("agent"),
        &settings(&db, &shipper, STREAM, 990, 1000),
    )?;
    let mut c = db.conn().await?;
    c.query_drop(
        "CREATE DATABASE bench; CREATE TABLE bench.big (id BIGINT PRIMARY KEY, b VARBINARY(255)) ENGINE=InnoDB",
    )
    .await?;
    wait_shipped(&db, &shipper, STREAM, Duration::from_secs(60)).await?;
    let before = binlog_bytes(&mut c).await?;
    // A row takes about 211 binlog bytes; statements of a million rows (~210 MB of rows,
    // which a restore replays as one BINLOG statement) in one transaction.
    let rows = (mb << 20) / 205 + 1;
    c.query_drop("BEGIN").await?;
    let mut from = 1;
    while from <= rows {
        let to = (from + 999_999).min(rows);
        c.query_drop(format!(
            "INSERT INTO bench.big SELECT seq, RANDOM_BYTES(200) FROM seq_{from}_to_{to}"
        ))
        .await?;
        from = to + 1;
    }
    c.query_drop("COMMIT").await?;
    let trx_mib = mib(binlog_bytes(&mut c).await? - before);
    wait_shipped(&db, &shipper, STREAM, Duration::from_secs(1800)).await?;
    let agent_rss = agent.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let shipper_rss = shipper.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let out = dir.join("stock");
    std::fs::create_dir_all(&out)?;
    let (_, stock_kib) = run_watching_memory(
        store::stock_copy(db.port, "mysql-bin.000001", &out),
        &dir.join("stock.out"),
    )
    .await?;
    let stock_rss = stock_kib as f64 / 1024.0;
    println!("   transaction {trx_mib:.0} MiB: agent {agent_rss:.1} MiB, shipper {shipper_rss:.1} MiB, stock raw copy {stock_rss:.1} MiB");
    Ok((agent_rss, shipper_rss, stock_rss, trx_mib))
}

/// Shipper memory while several agents ship the same binlog as separate streams.
pub(crate) async fn many_agents_run(work: &Path, agents: u32, size_mb: u64) -> anyhow::Result<f64> {
    println!("== shipper memory with {agents} agents");
    let db = MariaDb::start(Options::default()).await?;
    let mut c = db.conn().await?;
    generate(&mut c, size_mb).await?;
    let dir = work.join("many");
    let shipper = Shipper::start(&dir).await?;
    let mut running = Vec::new();
    for i in 0..agents {
        let stream = format!("bench-{i}");
        running.push(Agent::start(
            &dir.join(&stream),
            &settings(&db, &shipper, &stream, 970 + i, 1000),
        )?);
    }
    for i in 0..agents {
        wait_shipped(
            &db,
            &shipper,
            &format!("bench-{i}"),
            Duration::from_secs(1800),
        )
        .await?;
    }
    Ok(shipper.peak_rss_kib().unwrap_or(0) as f64 / 1024.0)
}
