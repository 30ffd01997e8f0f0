//! RPO under a fixed write rate: commit to durably stored.

use std::path::Path;
use std::time::{Duration, Instant};

use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::*;

/// Commit → durably stored delays under a fixed write rate.
pub(crate) struct RpoResult {
    pub(crate) seal_ms: u64,
    pub(crate) achieved_rate: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) samples: usize,
}

pub(crate) async fn rpo_run(
    work: &Path,
    seal_ms: u64,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<RpoResult> {
    println!("== RPO under {rate} tx/s for {seconds} s, seal {seal_ms} ms");
    let db = MariaDb::start(Options::default()).await?;
    let dir = work.join(format!("rpo{seal_ms}"));
    let shipper = Shipper::start(&dir).await?;
    let _agent = Agent::start(
        &dir.join("agent"),
        &settings(&db, &shipper, STREAM, 950, seal_ms),
    )?;
    let mut c = db.conn().await?;
    c.query_drop("CREATE DATABASE r; CREATE TABLE r.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100))").await?;
    wait_shipped(&db, &shipper, STREAM, Duration::from_secs(60)).await?;
    let start_seq = gtid_seq(&mut c).await?;

    let url = format!("{}/v1/streams/{STREAM}", shipper.url());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poll_stop = stop.clone();
    let http = shipper.client()?;
    let poller = tokio::spawn(async move {
        let mut seen: Vec<(Instant, u64)> = Vec::new();
        while !poll_stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(seq) = head_seq(&http, &url).await {
                seen.push((Instant::now(), seq));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    });

    let mut commits: Vec<(Instant, u64)> = Vec::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        c.query_drop(format!("INSERT INTO r.t (v) VALUES ('row {n}')"))
            .await?;
        n += 1;
        commits.push((Instant::now(), start_seq + n));
    }
    let achieved_rate = n as f64 / started.elapsed().as_secs_f64();
    wait_shipped(&db, &shipper, STREAM, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = poller.await?;
    let mut delays: Vec<f64> = Vec::new();
    let mut j = 0;
    for (at, seq) in &commits {
        while j < seen.len() && (seen[j].1 < *seq || seen[j].0 < *at) {
            j += 1;
        }
        if let Some((stored, _)) = seen.get(j) {
            delays.push(stored.duration_since(*at).as_secs_f64());
        }
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "   {} samples, p50 {:.3} s, p99 {:.3} s",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99)
    );
    Ok(RpoResult {
        seal_ms,
        achieved_rate,
        p50: percentile(&delays, 0.5),
        p99: percentile(&delays, 0.99),
        max: delays.last().copied().unwrap_or(0.0),
        samples: delays.len(),
    })
}

/// The sequence number of the server's current GTID (domain 0).
pub(crate) async fn gtid_seq(c: &mut Conn) -> anyhow::Result<u64> {
    let pos: Option<String> = c.query_first("SELECT @@gtid_binlog_pos").await?;
    Ok(pos
        .unwrap_or_default()
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The GTID sequence number of the stream head's end position, if the shipper answers.
pub(crate) async fn head_seq(http: &reqwest::Client, url: &str) -> Option<u64> {
    let body = http
        .get(url)
        .header("authorization", logferry_integration::logferry::bearer())
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let head: logferry_common::wire::StreamHead = serde_json::from_slice(&body).ok()?;
    head.end?.rsplit('-').next()?.parse().ok()
}
