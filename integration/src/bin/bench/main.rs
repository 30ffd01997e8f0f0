//! `logferry-bench`: logferry side by side with the stock tools on the same data, in one run,
//! and `BENCHMARKS.md` rewritten with the results. Build with `--release`; `scripts/bench`
//! does both.
//!
//! Per binlog size: ship throughput (agent → shipper → store, durably) against
//! `mariadb-binlog --read-from-remote-server --raw` copying the same binlog; stored bytes
//! against `gzip -6`; restore against `mariadb-binlog FILES | mariadb`; agent peak memory.
//! Then latency ([`latency`]: catch-up and reads through an added round trip), RPO under a fixed write rate with a 1 s and a 200 ms seal, agent memory while the
//! shipper is down, and shipper memory while several agents ship; then [`redis`]: a
//! snapshot against `redis-cli --rdb`, and following writes beside a stock replica. Each timing is repeated
//! and the median reported; ratios are given because absolute times on shared machines drift.
//!
//! One module per job: [`args`](mod@args), [`data`] (generation), [`ship`] (ship, storage and
//! restore per size), [`seal`] (sealing cost), [`rpo`], [`memory`], [`report`]
//! (`BENCHMARKS.md`), [`stats`].

mod args;
mod data;
mod encryption;
mod latency;
mod memory;
mod redis;
mod report;
mod rpo;
mod seal;
mod ship;
mod stats;

pub(crate) use args::*;
pub(crate) use data::*;
pub(crate) use latency::*;
pub(crate) use memory::*;
pub(crate) use redis::*;
pub(crate) use rpo::*;
pub(crate) use seal::*;
pub(crate) use ship::*;
pub(crate) use stats::*;

/// The stream every benchmark agent ships.
pub(crate) const STREAM: &str = "bench";

/// Everything from this line on in the results file is written by hand (the profile and its
/// reading) and kept when the tables above it are rewritten.
pub(crate) const KEEP_MARKER: &str = "<!-- written by hand below; kept by scripts/bench -->";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let work = tempfile::Builder::new()
        .prefix("logferry-bench-")
        .tempdir()?;
    let command = format!(
        "scripts/bench --sizes {} --repeat {} --rpo-seconds {} --rpo-rate {}",
        a.sizes_mb
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        a.repeat,
        a.rpo_seconds,
        a.rpo_rate
    );
    if a.scope == Scope::Latency {
        let section = latency_markdown(
            "scripts/bench --latency-only",
            &latency_run(work.path()).await?,
        );
        let previous = std::fs::read_to_string(&a.out).unwrap_or_default();
        std::fs::write(&a.out, replace_latency_section(&previous, &section))?;
        println!("wrote the latency section of {}", a.out.display());
        return Ok(());
    }
    if a.scope == Scope::Redis {
        let section = redis_run(work.path(), a.redis_mb, a.rpo_seconds, a.rpo_rate).await?;
        let previous = std::fs::read_to_string(&a.out).unwrap_or_default();
        std::fs::write(
            &a.out,
            replace_section(&previous, REDIS_BEGIN, REDIS_END, &section),
        )?;
        println!("wrote the Redis section of {}", a.out.display());
        return Ok(());
    }
    if a.scope == Scope::Encryption {
        let size = a.sizes_mb.first().copied().unwrap_or(200);
        encryption::encryption_run(work.path(), size, a.repeat).await?;
        return Ok(());
    }
    if a.scope == Scope::BigTrx {
        big_trx_run(work.path(), a.big_trx_mb).await?;
        return Ok(());
    }
    let mut sizes = Vec::new();
    for dataset in [Dataset::Text, Dataset::Orders] {
        for s in &a.sizes_mb {
            sizes.push(size_run(work.path(), dataset, *s, a.repeat, a.scope).await?);
        }
    }
    if a.scope != Scope::All {
        return Ok(());
    }
    let mut rpo = Vec::new();
    for seal in [1000, 200] {
        rpo.push(rpo_run(work.path(), seal, a.rpo_seconds, a.rpo_rate).await?);
    }
    let down_seconds = a.rpo_seconds.clamp(30, 300);
    let (down_rss, spool_peak, drain_s) = shipper_down_run(work.path(), down_seconds).await?;
    let many_rss =
        many_agents_run(work.path(), 3, a.sizes_mb.first().copied().unwrap_or(200)).await?;
    let (big_agent, big_shipper, big_stock, big_mib) =
        big_trx_run(work.path(), a.big_trx_mb).await?;
    let latency = latency_markdown(&command, &latency_run(work.path()).await?);
    let redis = redis_run(work.path(), a.redis_mb, a.rpo_seconds, a.rpo_rate).await?;

    let results = report::Results {
        sizes,
        rpo,
        down_seconds,
        down_rss,
        spool_peak,
        drain_s,
        many_rss,
        big_agent,
        big_shipper,
        big_stock,
        big_mib,
    };
    let mut md = report::markdown(&a, &command, &results);
    let previous = std::fs::read_to_string(&a.out).unwrap_or_default();
    if let Some(at) = previous.find(KEEP_MARKER) {
        md.push('\n');
        let kept = replace_latency_section(&previous[at..], &latency);
        md.push_str(&replace_section(&kept, REDIS_BEGIN, REDIS_END, &redis));
    }
    std::fs::write(&a.out, md)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
