//! Redis: the agent beside the stock tools on the same server. A snapshot of a large
//! dataset (the agent's full sync, stored through the shipper) against `redis-cli --rdb`;
//! following `redis-benchmark -P 16` at full speed beside a stock replica; and the delay
//! from a write to its durable storage under a fixed write rate at a 1 s and a 200 ms seal.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use logferry_common::format::redis::ReplPos;
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::redis::RedisServer;
use logferry_integration::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

/// Where the results go in the results file.
pub(crate) const REDIS_BEGIN: &str = "<!-- redis: written by scripts/bench --redis-only -->";
/// The end of that section.
pub(crate) const REDIS_END: &str = "<!-- /redis -->";

fn agent_config(dir: &Path, redis: &RedisServer, shipper: &Shipper, seal_ms: u64) -> String {
    format!(
        "[agent]\nstream = \"{STREAM}\"\nspool_dir = \"{}\"\n\n[source]\ntype = \"redis\"\nurl = \"{}\"\n\n\
         [segment]\nmax_age_ms = {seal_ms}\n\n[shipper]\nurl = \"{}\"\ntoken = \"{}\"\n{}\n",
        dir.join("spool").display(),
        redis.url(),
        shipper.url(),
        logferry_integration::logferry::TEST_TOKEN,
        shipper.agent_tls_lines()
    )
}

/// `master_repl_offset` (or, on a replica, `slave_repl_offset`) of `redis`.
fn offset(redis: &RedisServer, field: &str) -> anyhow::Result<u64> {
    let info = redis.cli(&["INFO", "replication"])?;
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in {info}"))
}

/// The offset the shipper has stored of the stream.
async fn stored(shipper: &Shipper) -> u64 {
    let head = shipper.head(STREAM).await.ok();
    head.and_then(|h| h.end)
        .and_then(|e| ReplPos::parse(&e).ok())
        .map_or(0, |p| p.offset)
}

/// For each `(time, offset)` the source reached, how long until `reached` held it; the
/// delays in seconds, sorted.
fn delays(source: &[(Instant, u64)], reached: &[(Instant, u64)]) -> Vec<f64> {
    // Both run forward in time and offset, so one pass with a second index suffices.
    let mut j = 0;
    let mut out = Vec::with_capacity(source.len());
    for (t, off) in source {
        while j < reached.len() && (reached[j].0 < *t || reached[j].1 < *off) {
            j += 1;
        }
        if let Some((t2, _)) = reached.get(j) {
            out.push(t2.duration_since(*t).as_secs_f64());
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// How many times each side of the snapshot comparison runs; the medians are reported, so
/// one slow moment of a shared machine does not decide the ratio.
const SNAPSHOT_TRIALS: usize = 3;

/// The snapshot of a `dataset_mb` dataset, [`SNAPSHOT_TRIALS`] times, alternating
/// `redis-cli --rdb` with the agent's first full sync until its manifest is stored;
/// (median stock s, median logferry s, agent peak RSS MiB, RDB MiB).
async fn snapshot_run(work: &Path, dataset_mb: u64) -> anyhow::Result<(f64, f64, f64, f64)> {
    println!("== Redis snapshot of ~{dataset_mb} MiB, {SNAPSHOT_TRIALS} trials each");
    let dir = work.join("redis-snapshot");
    let redis = RedisServer::start(
        &dir.join("redis"),
        &["--enable-debug-command", "local", "--rdbcompression", "no"],
    )
    .await?;
    let keys = (dataset_mb * 1024).to_string();
    redis.cli(&["DEBUG", "POPULATE", &keys, "key", "1000"])?;
    let (mut stock, mut ours, mut rss, mut rdb_mib) = (Vec::new(), Vec::new(), 0f64, 0f64);
    for trial in 0..SNAPSHOT_TRIALS {
        let rdb = dir.join(format!("stock-{trial}.rdb"));
        let started = Instant::now();
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "--rdb"])
            .arg(&rdb)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --rdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stock.push(started.elapsed().as_secs_f64());
        rdb_mib = mib(std::fs::metadata(&rdb)?.len());
        std::fs::remove_file(&rdb)?;
        let (seconds, peak) = agent_snapshot(&dir.join(format!("trial-{trial}")), &redis).await?;
        ours.push(seconds);
        rss = rss.max(peak);
    }
    Ok((median(stock), median(ours), rss, rdb_mib))
}

/// One agent's first full sync of `redis` into a fresh shipper under `dir`, until the
/// snapshot's manifest is stored; (seconds, agent peak RSS MiB). The store is removed after.
async fn agent_snapshot(dir: &Path, redis: &RedisServer) -> anyhow::Result<(f64, f64)> {
    let shipper = Shipper::start(dir).await?;
    let started = Instant::now();
    let agent = Agent::start_config(
        &dir.join("agent"),
        &agent_config(&dir.join("agent"), redis, &shipper, 1000),
        &[],
    )?;
    let snapshots = shipper
        .store_dir
        .join(logferry_common::keys::snapshots_prefix(&STREAM.parse()?));
    // Polled every 10 ms (not wait_for's 100 ms): the stock side is timed to its exit.
    let stored = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.path().join("manifest.json").exists())
            })
            .unwrap_or(false)
    };
    while !stored(&snapshots) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "no snapshot stored within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rss = agent.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    drop(agent);
    drop(shipper);
    std::fs::remove_dir_all(dir)?;
    Ok((seconds, rss))
}

/// What a follow run measured.
pub(crate) struct Follow {
    /// Writes per second the load reached.
    rate: f64,
    /// Delays until durably stored (agent) or applied (stock replica), sorted, seconds.
    agent: Vec<f64>,
    replica: Vec<f64>,
    /// Agent peak RSS, MiB.
    rss: f64,
}

/// Writes at `rate` per second for `seconds` (or, with no rate, `redis-benchmark -P 16`
/// at full speed), beside a stock replica; samples every offset every 5 ms.
async fn follow_run(
    work: &Path,
    seal_ms: u64,
    rate: Option<u64>,
    seconds: u64,
) -> anyhow::Result<Follow> {
    println!(
        "== Redis follow, seal {seal_ms} ms, rate {}",
        rate.map_or("redis-benchmark -P 16".into(), |r| format!("{r}/s"))
    );
    let dir = work.join(format!("redis-follow-{seal_ms}-{}", rate.unwrap_or(0)));
    // The server's PINGs to its replicas advance its offset but are no data the agent
    // stores: with pings rare, every offset sampled is one a write reached.
    let redis =
        RedisServer::start(&dir.join("redis"), &["--repl-ping-replica-period", "3600"]).await?;
    let port = redis.port.to_string();
    let replica =
        RedisServer::start(&dir.join("replica"), &["--replicaof", "127.0.0.1", &port]).await?;
    let shipper = Shipper::start(&dir).await?;
    let agent = Agent::start_config(
        &dir.join("agent"),
        &agent_config(&dir.join("agent"), &redis, &shipper, seal_ms),
        &[],
    )?;
    // A write before the agent's full sync is in its snapshot, not a segment: write until
    // one is stored.
    wait_for(
        "the agent to store a write",
        Duration::from_secs(60),
        || {
            let written = redis.cli(&["SET", "warm", "1"]);
            let s = stored(&shipper);
            async move {
                written?;
                Ok((s.await > 0).then_some(()))
            }
        },
    )
    .await?;
    let started = Instant::now();
    let writer = {
        let port = port.clone();
        tokio::spawn(async move {
            match rate {
                None => {
                    let n = (seconds * 150_000).to_string();
                    let out = Command::new("redis-benchmark")
                        .args([
                            "-p", &port, "-t", "set", "-P", "16", "-d", "100", "-r", "100000",
                            "-q", "-n", &n,
                        ])
                        .output()?;
                    anyhow::ensure!(out.status.success(), "redis-benchmark failed");
                    Ok(seconds * 150_000)
                }
                Some(r) => {
                    let conn = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await?;
                    let (mut replies, mut conn) = conn.into_split();
                    tokio::spawn(async move {
                        let mut sink = [0u8; 4096];
                        while replies.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                    });
                    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / r as f64));
                    let mut n = 0u64;
                    let end = Instant::now() + Duration::from_secs(seconds);
                    while Instant::now() < end {
                        tick.tick().await;
                        let cmd = logferry_common::format::redis::resp::encode(&[
                            "SET",
                            &format!("k{}", n % 10_000),
                            "v",
                        ]);
                        conn.write_all(&cmd).await?;
                        n += 1;
                    }
                    Ok(n)
                }
            }
        })
    };
    let (mut src, mut ours, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut idle_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let (s, a, r) = (
            offset(&redis, "master_repl_offset")?,
            stored(&shipper).await,
            offset(&replica, "slave_repl_offset")?,
        );
        src.push((now, s));
        ours.push((now, a));
        theirs.push((now, r));
        if writer.is_finished() && a >= s && r >= s {
            if idle_since.get_or_insert(now).elapsed() > Duration::from_secs(2) {
                break;
            }
        } else {
            idle_since = None;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(seconds * 10 + 120),
            "the agent did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let writes = writer.await??;
    let load_s = src
        .iter()
        .zip(src.iter().skip(1))
        .filter(|(a, b)| b.1 > a.1)
        .map(|(a, b)| b.0.duration_since(a.0).as_secs_f64())
        .sum::<f64>()
        .max(1e-3);
    Ok(Follow {
        rate: writes as f64 / load_s,
        agent: delays(&src, &ours),
        replica: delays(&src, &theirs),
        rss: agent.peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
    })
}

/// Runs every Redis comparison; the results file's section.
pub(crate) async fn redis_run(
    work: &Path,
    dataset_mb: u64,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<String> {
    let (stock, ours, snap_rss, rdb_mib) = snapshot_run(work, dataset_mb).await?;
    let full = follow_run(work, 1000, None, 20).await?;
    let mut fixed = Vec::new();
    for seal in [1000, 200] {
        fixed.push((seal, follow_run(work, seal, Some(rate), seconds).await?));
    }
    let p = |v: &[f64], q: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            percentile(v, q)
        }
    };
    let mut md = String::new();
    let _ = writeln!(md, "{REDIS_BEGIN}\n## Redis\n");
    let _ = writeln!(md, "Produced by `scripts/bench --redis-only --redis-mb {dataset_mb} --rpo-seconds {seconds} --rpo-rate {rate}` (redis-server {}).\n", redis_version());
    let _ = writeln!(md, "**Snapshot** of a dataset made with `DEBUG POPULATE` (1000-byte values; `rdbcompression no`, since these values compress twentyfold and the RDB is what both sides move): `redis-cli --rdb` writing the RDB to a local file, against the agent's first full sync streamed to the shipper as a snapshot (chunked, sealed, uploaded, manifest stored); each the median of {SNAPSHOT_TRIALS} alternating runs.\n");
    let _ = writeln!(md, "| RDB | redis-cli --rdb | logferry snapshot | ratio | agent peak RSS |\n|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| {rdb_mib:.0} MiB | {stock:.2} s | {ours:.2} s | {:.2}× | {snap_rss:.1} MiB |\n",
        ours / stock
    );
    let _ = writeln!(md, "**Following** writes beside a stock replica of the same server: for every 5 ms sample of the server's `master_repl_offset`, the time until the shipper had stored that offset (logferry, durable off-site) and until the replica had applied it (stock, in memory).\n");
    let _ = writeln!(md, "| load | writes/s | logferry p50 / p99 / max | stock replica p50 / p99 / max | agent peak RSS |\n|---|---|---|---|---|");
    let mut row = |what: String, f: &Follow| {
        let _ =
            writeln!(
            md,
            "| {what} | {:.0} | {:.3} / {:.3} / {:.3} s | {:.3} / {:.3} / {:.3} s | {:.1} MiB |",
            f.rate,
            p(&f.agent, 0.5), p(&f.agent, 0.99), f.agent.last().copied().unwrap_or(f64::NAN),
            p(&f.replica, 0.5), p(&f.replica, 0.99), f.replica.last().copied().unwrap_or(f64::NAN),
            f.rss
        );
    };
    row("`redis-benchmark -t set -P 16`, seal 1 s".into(), &full);
    for (seal, f) in &fixed {
        row(
            format!("{rate} writes/s for {seconds} s, seal {seal} ms (RPO)"),
            f,
        );
    }
    let _ = writeln!(md, "\n{REDIS_END}");
    Ok(md)
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_default()
}
