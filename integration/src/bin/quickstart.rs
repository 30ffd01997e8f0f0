//! `logferry-quickstart`: the main job on an embedded default. Starts a private MariaDB with
//! binlog on, a shipper on a local-directory store and an agent, runs a small workload while
//! printing the live RPO, then shows what was shipped and verifies it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use logferry_integration::logferry::{Agent, AgentSettings, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::workload;
use mysql_async::prelude::Queryable;

const STREAM: &str = "quickstart";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let work = tempfile::Builder::new()
        .prefix("logferry-quickstart-")
        .tempdir()?;
    println!(
        "logferry quickstart (work directory {})",
        work.path().display()
    );
    println!("- starting a private MariaDB with binlog on ...");
    let db = MariaDb::start(Options::default()).await?;
    println!("  MariaDB on 127.0.0.1:{}", db.port);
    let shipper = Shipper::start(work.path()).await?;
    println!(
        "- shipper on {} storing into {}",
        shipper.url(),
        shipper.store_dir.display()
    );
    let agent = Agent::start(
        &work.path().join("agent"),
        &AgentSettings {
            stream: STREAM.into(),
            source_url: db.repl_url(),
            server_id: 4242,
            shipper_url: shipper.url(),
            shipper_extra: shipper.agent_tls_lines(),
            max_age_ms: 1000,
            source_extra: String::new(),
            segment_extra: String::new(),
            extra_toml: String::new(),
        },
    )?;
    println!(
        "- agent tailing the binlog as replica 4242, sealing every 1 s, metrics on :{}",
        agent.metrics_port().await?
    );

    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(workload::run_until(db.conn().await?, 0, stop.clone()));
    println!("- running a write workload for {seconds} s (inserts, updates, deletes on 3 tables):");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "  t={:>2}s  events read {:>7}  segments shipped {:>4}  spool {:>3}  RPO exposure {:.2} s",
            started.elapsed().as_secs(),
            agent.metric("logferry_agent_events_read_total").await.unwrap_or(0.0),
            agent.metric("logferry_agent_segments_shipped_total").await.unwrap_or(0.0),
            agent.metric("logferry_agent_spool_segments").await.unwrap_or(0.0),
            agent.metric("logferry_agent_rpo_exposure_seconds").await.unwrap_or(0.0),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let transactions = task.await??;
    c.query_drop("FLUSH BINARY LOGS").await?;
    println!(
        "- workload done: {transactions} transactions; waiting for the agent to ship the rest ..."
    );
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (file, pos) = db.master_status().await?;
        let head = shipper.head(STREAM).await?;
        if head
            .end
            .as_deref()
            .is_some_and(|e| e.starts_with(&format!("{file}:{pos}")))
        {
            println!(
                "  stored chain ends at {}, the server's binlog position",
                head.end.unwrap_or_default()
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "the agent did not catch up (stored chain ends at {:?}):\n{}\n{}",
            head.end,
            agent.metrics().await.unwrap_or_default(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exposure = agent.metric("logferry_agent_rpo_exposure_seconds").await?;
    println!("  RPO exposure now {exposure:.2} s (nothing read is unshipped)");

    let shipper_command = logferry_integration::logferry::shipper_command;
    for args in [vec!["ls", "--store"], vec!["verify", "--store"]] {
        println!(
            "\n$ logferry-shipper {} {}",
            args.join(" "),
            shipper.store_url()
        );
        let out = shipper_command()?
            .args(&args)
            .arg(shipper.store_url())
            .output()
            .context("running logferry-shipper")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("\nquickstart OK: every committed transaction is stored off-site; all servers are stopped now.");
    Ok(())
}
