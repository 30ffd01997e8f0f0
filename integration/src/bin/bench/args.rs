//! Command-line settings of the benchmark.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// Command-line settings.
pub(crate) struct Args {
    pub(crate) sizes_mb: Vec<u64>,
    pub(crate) repeat: usize,
    pub(crate) rpo_seconds: u64,
    pub(crate) rpo_rate: u64,
    pub(crate) out: PathBuf,
    pub(crate) scope: Scope,
    pub(crate) big_trx_mb: u64,
    pub(crate) redis_mb: u64,
}

/// Which comparisons to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything, and rewrite the results file.
    All,
    /// Per size: ship, storage and restore; printed only.
    Sizes,
    /// Per size: ship only; printed only.
    Ship,
    /// Only the memory of one big transaction; printed only.
    BigTrx,
    /// Only the latency runs; their section of the results file is rewritten.
    Latency,
    /// Only the cost of encryption, on the first size; printed only.
    Encryption,
    /// Only the Redis runs; their section of the results file is rewritten.
    Redis,
}

pub(crate) fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        sizes_mb: vec![200, 1000],
        repeat: 3,
        rpo_seconds: 180,
        rpo_rate: 2000,
        out: PathBuf::from("BENCHMARKS.md"),
        scope: Scope::All,
        big_trx_mb: 2048,
        redis_mb: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => {
                a.sizes_mb = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--repeat" => a.repeat = value()?.parse()?,
            "--rpo-seconds" => a.rpo_seconds = value()?.parse()?,
            "--rpo-rate" => a.rpo_rate = value()?.parse()?,
            "--out" => a.out = PathBuf::from(value()?),
            "--ship-only" => a.scope = Scope::Ship,
            "--sizes-only" => a.scope = Scope::Sizes,
            "--big-trx-mb" => a.big_trx_mb = value()?.parse()?,
            "--big-trx-only" => a.scope = Scope::BigTrx,
            "--latency-only" => a.scope = Scope::Latency,
            "--encryption-only" => a.scope = Scope::Encryption,
            "--redis-only" => a.scope = Scope::Redis,
            "--redis-mb" => a.redis_mb = value()?.parse()?,
            "--help" | "-h" => {
                println!(
                    "logferry-bench [--sizes 200,1000] [--repeat 3] [--rpo-seconds 180] [--rpo-rate 2000] [--out BENCHMARKS.md] [--big-trx-mb 2048] [--redis-mb 1024] [--ship-only | --sizes-only | --big-trx-only | --latency-only | --encryption-only | --redis-only]\n\
                     Runs every comparison with the stock tools and rewrites the results file.\n\
                     Each size is run on two data sets: text rows (the worst case for compressors)\n\
                     and order rows (numbers, codes, dates, updates with full row images).\n\
                     --rpo-seconds also sets how long the shipper stays down in the memory run.\n\
                     --ship-only: only the ship-throughput comparison, printed, the file left alone\n\
                     (for iterating on the agent's hot path).\n\
                     --sizes-only: ship, storage and restore per size, printed, the file left alone.\n\
                     --big-trx-mb: size of the one transaction of incompressible rows whose shipping\n\
                     the memory table measures (agent, shipper, and the stock raw copy of it).\n\
                     --big-trx-only: only that run, printed, the file left alone.\n\
                     --latency-only: only the catch-up and read runs through an added round trip;\n\
                     their section of the results file is rewritten, the rest left alone.\n\
                     --encryption-only: agent CPU and sealer speed with and without encryption on\n\
                     the first size's text rows, printed as a section for the results file.\n\
                     --redis-only: the Redis runs (a --redis-mb dataset's snapshot against redis-cli --rdb,\n\
                     redis-benchmark -P 16 beside a stock replica, --rpo-rate writes/s for --rpo-seconds\n\
                     at a 1 s and a 200 ms seal); their section of the results file is rewritten."
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}; see --help"),
        }
    }
    Ok(a)
}
