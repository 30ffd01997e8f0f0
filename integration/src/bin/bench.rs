//! `logferry-bench`: logferry side by side with the stock tools on the same data, in one run,
//! and `BENCHMARKS.md` rewritten with the results. Build with `--release`; `scripts/bench`
//! does both.
//!
//! Per binlog size: ship throughput (agent → shipper → store, durably) against
//! `mariadb-binlog --read-from-remote-server --raw` copying the same binlog; stored bytes
//! against `gzip -6`; restore against `mariadb-binlog FILES | mariadb`; agent peak memory.
//! Then RPO under a fixed write rate with a 1 s and a 200 ms seal, agent memory while the
//! shipper is down, and shipper memory while several agents ship. Each timing is repeated
//! and the median reported; ratios are given because absolute times on shared machines drift.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use logferry_common::segment::Sealer;
use logferry_common::{
    BinlogPos, Compression, DecodeLimits, Position, Segment, SegmentMeta, SourceKind, StreamId,
};
use logferry_integration::logferry::{Agent, AgentSettings, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::process::{self, workspace_bin};
use logferry_integration::store;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

const STREAM: &str = "bench";

/// Everything from this line on in the results file is written by hand (the profile and its
/// reading) and kept when the tables above it are rewritten.
const KEEP_MARKER: &str = "<!-- written by hand below; kept by scripts/bench -->";

/// Command-line settings.
struct Args {
    sizes_mb: Vec<u64>,
    repeat: usize,
    rpo_seconds: u64,
    rpo_rate: u64,
    out: PathBuf,
    scope: Scope,
    big_trx_mb: u64,
}

/// Which comparisons to run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything, and rewrite the results file.
    All,
    /// Per size: ship, storage and restore; printed only.
    Sizes,
    /// Per size: ship only; printed only.
    Ship,
    /// Only the memory of one big transaction; printed only.
    BigTrx,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        sizes_mb: vec![200, 1000],
        repeat: 3,
        rpo_seconds: 180,
        rpo_rate: 2000,
        out: PathBuf::from("BENCHMARKS.md"),
        scope: Scope::All,
        big_trx_mb: 2048,
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
            "--help" | "-h" => {
                println!(
                    "logferry-bench [--sizes 200,1000] [--repeat 3] [--rpo-seconds 180] [--rpo-rate 2000] [--out BENCHMARKS.md] [--big-trx-mb 2048] [--ship-only | --sizes-only | --big-trx-only]\n\
                     Runs every comparison with the stock tools and rewrites the results file.\n\
                     Each size is run on two data sets: text rows (the worst case for compressors)\n\
                     and order rows (numbers, codes, dates, updates with full row images).\n\
                     --rpo-seconds also sets how long the shipper stays down in the memory run.\n\
                     --ship-only: only the ship-throughput comparison, printed, the file left alone\n\
                     (for iterating on the agent's hot path).\n\
                     --sizes-only: ship, storage and restore per size, printed, the file left alone.\n\
                     --big-trx-mb: size of the one transaction of incompressible rows whose shipping\n\
                     the memory table measures (agent, shipper, and the stock raw copy of it).\n\
                     --big-trx-only: only that run, printed, the file left alone."
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}; see --help"),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn settings(
    db: &MariaDb,
    shipper: &Shipper,
    stream: &str,
    server_id: u32,
    max_age_ms: u64,
) -> AgentSettings {
    AgentSettings {
        stream: stream.into(),
        source_url: db.repl_url(),
        server_id,
        shipper_url: shipper.url(),
        max_age_ms,
        source_extra: String::new(),
        segment_extra: String::new(),
        extra_toml: String::new(),
    }
}

/// Sum of the server's binlog file sizes.
async fn binlog_bytes(c: &mut Conn) -> anyhow::Result<u64> {
    let rows: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await?;
    Ok(rows.iter().filter_map(|r| r.get::<u64, _>(1)).sum())
}

/// Text-like rows (words from a small vocabulary), so compression ratios are realistic.
async fn generate(c: &mut Conn, target_mb: u64) -> anyhow::Result<u64> {
    const WORDS: [&str; 24] = [
        "order",
        "customer",
        "shipped",
        "pending",
        "invoice",
        "amount",
        "EUR",
        "USD",
        "warehouse",
        "berlin",
        "paris",
        "priority",
        "express",
        "standard",
        "refund",
        "coupon",
        "tax",
        "item",
        "sku",
        "quantity",
        "address",
        "street",
        "note",
        "gift",
    ];
    c.query_drop("CREATE DATABASE IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, k INT, v VARCHAR(2000), n DOUBLE) ENGINE=InnoDB").await?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i = 0u64;
    loop {
        let mut sql = String::from("INSERT INTO bench.t (k, v, n) VALUES ");
        for r in 0..200 {
            let mut v = String::new();
            for _ in 0..100 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
                v.push(' ');
            }
            let _ = write!(
                sql,
                "{}({}, '{} {}', {})",
                if r > 0 { "," } else { "" },
                x % 1000,
                i,
                v,
                (x % 100_000) as f64 / 7.0
            );
        }
        c.query_drop(&sql).await?;
        if i % 10 == 0 {
            c.query_drop(format!(
                "UPDATE bench.t SET n = n + 1 WHERE k = {} LIMIT 50",
                x % 1000
            ))
            .await?;
            c.query_drop(format!(
                "DELETE FROM bench.t WHERE k = {} LIMIT 20",
                (x >> 8) % 1000
            ))
            .await?;
            let bytes = binlog_bytes(c).await?;
            if bytes >= target_mb * 1024 * 1024 {
                return Ok(bytes);
            }
        }
        i += 1;
    }
}

/// The rows a benchmark's binlog is made of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dataset {
    /// 200-row inserts of random words from a 24-word vocabulary: every match a compressor
    /// finds is a word or two long, the costliest kind of input for zstd and LZ4.
    Text,
    /// An online shop's orders: numbers, short codes, dates and e-mail addresses, and updates
    /// whose full before and after row images differ in two columns.
    Orders,
}

impl Dataset {
    fn name(self) -> &'static str {
        match self {
            Dataset::Text => "text rows",
            Dataset::Orders => "order rows",
        }
    }

    /// Writes rows until the server's binlog holds at least `target_mb` MiB.
    async fn generate(self, c: &mut Conn, target_mb: u64) -> anyhow::Result<u64> {
        match self {
            Dataset::Text => generate(c, target_mb).await,
            Dataset::Orders => generate_orders(c, target_mb).await,
        }
    }
}

/// Order rows in transactions of 20,000 inserts (MariaDB's sequence engine makes the rows
/// server-side, so generating a GiB takes about a minute), each followed by an update of
/// every seventh recent order.
async fn generate_orders(c: &mut Conn, target_mb: u64) -> anyhow::Result<u64> {
    const BATCH: u64 = 20_000;
    c.query_drop(
        "CREATE DATABASE IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS bench.orders (\
         id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT NOT NULL, status VARCHAR(16) NOT NULL, \
         amount DECIMAL(12,2) NOT NULL, currency CHAR(3) NOT NULL, created DATETIME(3) NOT NULL, \
         email VARCHAR(80) NOT NULL, sku VARCHAR(24) NOT NULL, qty INT NOT NULL, note VARCHAR(255)) \
         ENGINE=InnoDB",
    )
    .await?;
    let mut i = 0u64;
    loop {
        c.query_drop(format!(
            "INSERT INTO bench.orders (customer, status, amount, currency, created, email, sku, qty, note) \
             SELECT (seq * 7919 + {i}) % 100000, ELT(1 + seq % 5, 'new', 'paid', 'shipped', 'delivered', 'refunded'), \
             ROUND(((seq * 2654435761 + {i}) % 1000000) / 100, 2), ELT(1 + seq % 3, 'EUR', 'USD', 'GBP'), \
             TIMESTAMP('2026-11-01') + INTERVAL ({i} * {BATCH} + seq) * 37 SECOND, \
             CONCAT('user', (seq * 7919) % 100000, '@example.', ELT(1 + seq % 4, 'com', 'org', 'net', 'de')), \
             CONCAT('SKU-', LPAD((seq * 31 + {i}) % 5000, 5, '0')), 1 + seq % 9, \
             IF(seq % 4 = 0, CONCAT('gift wrap, deliver to door ', seq % 17), NULL) \
             FROM bench.seq_1_to_{BATCH}"
        ))
        .await?;
        c.query_drop(format!(
            "UPDATE bench.orders SET status = 'shipped', qty = qty + 1 \
             WHERE id BETWEEN {} AND {} AND id % 7 = {}",
            (i * BATCH).saturating_sub(BATCH / 2),
            (i + 1) * BATCH,
            i % 7
        ))
        .await?;
        let bytes = binlog_bytes(c).await?;
        if bytes >= target_mb * 1024 * 1024 {
            return Ok(bytes);
        }
        i += 1;
    }
}

/// Waits until the shipper holds the chain up to the server's current position.
async fn wait_shipped(
    db: &MariaDb,
    shipper: &Shipper,
    stream: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    loop {
        let (file, pos) = db.master_status().await?;
        let end = shipper
            .head(stream)
            .await
            .ok()
            .and_then(|h| h.end)
            .unwrap_or_default();
        if end.starts_with(&format!("{file}:{pos}")) {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("stream {stream} did not reach {file}:{pos} (at {end})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_timed(what: &str, cmd: &mut Command) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs `cmd` to the end with its stdout in `out_file` (stderr beside it), sampling the
/// peak RSS (VmHWM) of the process while it runs. Returns its stdout and the peak in KiB.
async fn run_watching_memory(mut cmd: Command, out_file: &Path) -> anyhow::Result<(String, u64)> {
    let err_file = out_file.with_extension("err");
    let mut child = cmd
        .stdout(std::fs::File::create(out_file)?)
        .stderr(std::fs::File::create(&err_file)?)
        .spawn()?;
    let pid = child.id();
    let mut peak = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(process::peak_rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(out_file)?;
    if !status.success() {
        let err = std::fs::read_to_string(&err_file).unwrap_or_default();
        bail!("{status}: {err}{text}");
    }
    Ok((text, peak))
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

/// Sealing the same binlog with one codec and level.
struct LevelResult {
    compression: Compression,
    mib_per_s: f64,
    ratio: f64,
}

/// Codecs and zstd levels compared by [`seal_levels`].
const LEVELS: [Compression; 5] = [
    Compression::Zstd(-1),
    Compression::Zstd(1),
    Compression::Zstd(3),
    Compression::Zstd(9),
    Compression::Lz4,
];

/// How `segment.codec` / `segment.zstd_level` name a compression.
fn compression_name(c: Compression) -> String {
    match c {
        Compression::Zstd(level) => format!("zstd {level}"),
        Compression::Lz4 => "lz4".into(),
        Compression::None => "none".into(),
    }
}

/// The binlog files' bytes, one after the other.
fn read_files(files: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    for f in files {
        data.extend_from_slice(&std::fs::read(f)?);
    }
    Ok(data)
}

/// Metadata for segments sealed outside an agent (only their cost and size matter).
fn bench_meta() -> anyhow::Result<SegmentMeta> {
    Ok(SegmentMeta {
        stream: StreamId::new(STREAM)?,
        source: SourceKind::Mysql,
        start: Position::Mysql(BinlogPos::new("mysql-bin.000001", 4).unwrap()),
        end: Position::Mysql(BinlogPos::new("mysql-bin.000001", 8).unwrap()),
        open_trx: None,
        first_event_ms: 0,
        last_event_ms: 0,
        event_count: 1,
    })
}

/// Seals the binlog `data` in 8 MiB segments with each of [`LEVELS`] with the agent's own
/// sealer (two compressing threads, sha256 on a third), timing it and summing the sizes.
fn seal_levels(data: &[u8]) -> anyhow::Result<Vec<LevelResult>> {
    let meta = bench_meta()?;
    let mut out = Vec::new();
    for compression in LEVELS {
        let mut sealer = Sealer::new(compression)?;
        let started = Instant::now();
        let mut stored = 0u64;
        for chunk in data.chunks(8 << 20) {
            stored += sealer.seal(meta.clone(), chunk)?.bytes().len() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        out.push(LevelResult {
            compression,
            mib_per_s: mib(data.len() as u64) / secs.max(1e-9),
            ratio: stored as f64 / data.len().max(1) as f64,
        });
    }
    Ok(out)
}

/// The work the segment format asks of every byte, timed on one core of this machine: the
/// agent sealing (compression, sha256 of the plaintext, sha256 trailer) and the shipper's
/// upload check (the trailer sha256 again), with the agent's own code. No schedule of a ship
/// can take less than this work (plus the server's) spread over every core.
#[derive(Clone, Copy, Default)]
struct Floor {
    /// Seconds to seal the whole binlog on one thread, zstd (the default codec).
    seal_zstd_s: f64,
    /// Seconds for the upload check of those segments.
    check_zstd_s: f64,
    /// The same with `codec = "lz4"`.
    seal_lz4_s: f64,
    /// The upload check of the lz4 segments.
    check_lz4_s: f64,
}

impl Floor {
    /// The least wall time for `seal_s` + `check_s` + the server's `server_cpu_s` on
    /// `cores` cores at once: no network, no disk, no waiting.
    fn least_s(seal_s: f64, check_s: f64, server_cpu_s: f64, cores: usize) -> f64 {
        (seal_s + check_s + server_cpu_s) / cores as f64
    }
}

/// Times [`Floor`]'s work on the binlog `data`: payloads just under
/// [`logferry_common::segment::SPLIT_AT`], which the sealer seals on the calling thread.
fn floor(data: &[u8]) -> anyhow::Result<Floor> {
    let meta = bench_meta()?;
    let one_thread = logferry_common::segment::SPLIT_AT - 4096;
    let timed = |compression: Compression| -> anyhow::Result<(f64, f64)> {
        let mut sealer = Sealer::new(compression)?;
        let (mut seal_s, mut check_s) = (0.0, 0.0);
        for chunk in data.chunks(one_thread) {
            let started = Instant::now();
            let segment = sealer.seal(meta.clone(), chunk)?;
            seal_s += started.elapsed().as_secs_f64();
            let started = Instant::now();
            Segment::decode(segment.into_bytes(), &DecodeLimits::default())?;
            check_s += started.elapsed().as_secs_f64();
        }
        Ok((seal_s, check_s))
    };
    let (seal_zstd_s, check_zstd_s) = timed(Compression::default())?;
    let (seal_lz4_s, check_lz4_s) = timed(Compression::Lz4)?;
    Ok(Floor {
        seal_zstd_s,
        check_zstd_s,
        seal_lz4_s,
        check_lz4_s,
    })
}

/// Results of one binlog size.
struct SizeResult {
    dataset: Dataset,
    floor: Floor,
    binlog_mb: f64,
    ship_s: f64,
    ship_lz4_s: f64,
    agent_cpu_lz4_s: f64,
    agent_rss_lz4_mib: f64,
    stored_lz4_mb: f64,
    stock_copy_s: f64,
    stock_same_work_s: f64,
    agent_cpu_s: f64,
    shipper_cpu_s: f64,
    server_cpu_s: f64,
    stock_server_cpu_s: f64,
    agent_rss_mib: f64,
    stored_mb: f64,
    gzip_mb: f64,
    gzip_s: f64,
    levels: Vec<LevelResult>,
    restore_s: f64,
    restore_keep_s: f64,
    restore_rss_mib: f64,
    stock_replay_s: f64,
    events: String,
}

/// One timed ship of the whole binlog by a fresh agent and shipper under `dir`.
struct ShipRun {
    secs: f64,
    agent_rss_mib: f64,
    agent_cpu_s: f64,
    shipper_cpu_s: f64,
    server_cpu_s: f64,
    store_bytes: u64,
}

impl std::fmt::Display for ShipRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s, agent peak {:.1} MiB, CPU s: agent {:.2}, shipper {:.2}, server {:.2}, stored {:.1} MiB",
            self.secs,
            self.agent_rss_mib,
            self.agent_cpu_s,
            self.shipper_cpu_s,
            self.server_cpu_s,
            mib(self.store_bytes)
        )
    }
}

/// Ships everything `primary` has with an agent whose `[segment]` section gets
/// `segment_extra`, timed until the shipper holds the server's position.
async fn ship_once(
    primary: &MariaDb,
    dir: &Path,
    server_id: u32,
    segment_extra: &str,
) -> anyhow::Result<ShipRun> {
    let shipper = Shipper::start(dir).await?;
    let server_before = primary.cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let mut s = settings(primary, &shipper, STREAM, server_id, 1000);
    s.segment_extra = segment_extra.to_owned();
    let agent = Agent::start(&dir.join(format!("agent{server_id}")), &s)?;
    wait_shipped(primary, &shipper, STREAM, Duration::from_secs(1800)).await?;
    Ok(ShipRun {
        secs: started.elapsed().as_secs_f64(),
        agent_rss_mib: agent.peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
        agent_cpu_s: agent.cpu_seconds().unwrap_or(0.0),
        shipper_cpu_s: shipper.cpu_seconds().unwrap_or(0.0),
        server_cpu_s: primary.cpu_seconds().unwrap_or(0.0) - server_before,
        store_bytes: dir_bytes(&dir.join("store/streams").join(STREAM).join("segments")),
    })
}

async fn size_run(
    work: &Path,
    dataset: Dataset,
    size_mb: u64,
    repeat: usize,
    scope: Scope,
) -> anyhow::Result<SizeResult> {
    let ship_only = scope == Scope::Ship;
    // Restore is measured on the text rows only: it is bound by the target server applying
    // rows, whatever they hold.
    let with_restore = !ship_only && dataset == Dataset::Text;
    println!("== {size_mb} MB of binlog, {}", dataset.name());
    let work = &work.join(format!("{size_mb}-{}", dataset.name().replace(' ', "-")));
    std::fs::create_dir_all(work)?;
    let primary = MariaDb::start(Options {
        extra: vec![
            "--max-binlog-size=268435456".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            // The agent does not receive ANNOTATE_ROWS events (README): without them the
            // stock tools copy, compress and replay exactly the events logferry ships.
            "--binlog-annotate-row-events=OFF".into(),
        ],
        ..Options::default()
    })
    .await?;
    let mut c = primary.conn().await?;
    c.query_drop("CREATE DATABASE bench").await?;
    let final_dir = work.join(format!("size{size_mb}-final"));
    if with_restore {
        let replica = MariaDb::start_replica(&primary, 2).await?;
        let shipper = Shipper::start(&final_dir).await?;
        let mut snap_settings = settings(&primary, &shipper, STREAM, 901, 1000);
        snap_settings.extra_toml = format!(
            "[source.snapshot]\nreplica_url = \"mysql://root@127.0.0.1:{}\"\n",
            replica.port
        );
        let mut snapper = Agent::start(&final_dir.join("snapper"), &snap_settings)?;
        snapper.kill9();
        let status = snapper.snapshot_process("snapshot.log")?.wait()?;
        anyhow::ensure!(status.success(), "snapshot failed");
    }

    let started = Instant::now();
    let bytes = dataset.generate(&mut c, size_mb).await?;
    println!(
        "   generated {:.0} MiB of binlog in {:.1} s",
        mib(bytes),
        started.elapsed().as_secs_f64()
    );

    // logferry with the default codec, with lz4, the stock copy and the stock tools doing
    // the same work take turns in each round, so that a slow spell of this shared machine
    // does not fall on one side only.
    let (mut ship, mut ship_lz4) = (Vec::new(), Vec::new());
    let mut stock = Vec::new();
    let mut stock_server_cpu = Vec::new();
    let mut same_work = Vec::new();
    for r in 0..repeat {
        let dir = if r + 1 == repeat {
            final_dir.clone()
        } else {
            work.join(format!("size{size_mb}-run{r}"))
        };
        let run = ship_once(&primary, &dir, 900 + r as u32, "").await?;
        println!("   ship run {r}: {run}");
        ship.push(run);
        if r + 1 < repeat {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let dir = work.join(format!("size{size_mb}-lz4-run{r}"));
        let run = ship_once(&primary, &dir, 950 + r as u32, "codec = \"lz4\"").await?;
        println!("   ship run {r}, codec lz4: {run}");
        ship_lz4.push(run);
        let _ = std::fs::remove_dir_all(&dir);

        let out = work.join(format!("size{size_mb}-stock{r}"));
        std::fs::create_dir_all(&out)?;
        let server_before = primary.cpu_seconds().unwrap_or(0.0);
        let t = run_timed(
            "mariadb-binlog --read-from-remote-server",
            &mut store::stock_copy(primary.port, "mysql-bin.000001", &out),
        )?;
        let server = primary.cpu_seconds().unwrap_or(0.0) - server_before;
        println!("   stock copy run {r}: {t:.2} s, CPU s: server {server:.2}");
        stock.push(t);
        stock_server_cpu.push(server);
        if r + 1 < repeat {
            let _ = std::fs::remove_dir_all(&out);
        }
        let out = work.join(format!("size{size_mb}-stock-zstd{r}"));
        std::fs::create_dir_all(&out)?;
        let copy = store::stock_copy(primary.port, "mysql-bin.000001", &out);
        let script = format!(
            "set -e; {} {}; cd {}; zstd -1 -q --rm mysql-bin.*; sha256sum *.zst > SHA256SUMS; sync -f .",
            copy.get_program().to_string_lossy(),
            copy.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            out.display()
        );
        let t = run_timed(
            "stock copy + zstd + sha256sum + sync",
            Command::new("bash").arg("-c").arg(script),
        )?;
        println!("   stock copy + zstd -1 + sha256sum + sync run {r}: {t:.2} s");
        same_work.push(t);
        let _ = std::fs::remove_dir_all(&out);
    }
    let store_bytes = ship.last().map_or(0, |r| r.store_bytes);
    let stored_lz4 = ship_lz4.last().map_or(0, |r| r.store_bytes);
    let of = |runs: &[ShipRun], f: fn(&ShipRun) -> f64| median(runs.iter().map(f).collect());
    // Memory is judged by its worst run, not its median.
    let peak = |runs: &[ShipRun]| runs.iter().map(|r| r.agent_rss_mib).fold(0.0, f64::max);
    let (agent_cpu, shipper_cpu, server_cpu, rss) = (
        of(&ship, |r| r.agent_cpu_s),
        of(&ship, |r| r.shipper_cpu_s),
        of(&ship, |r| r.server_cpu_s),
        peak(&ship),
    );
    let agent_cpu_lz4 = of(&ship_lz4, |r| r.agent_cpu_s);
    let agent_rss_lz4 = peak(&ship_lz4);
    let ship_lz4: Vec<f64> = ship_lz4.iter().map(|r| r.secs).collect();
    let ship: Vec<f64> = ship.iter().map(|r| r.secs).collect();
    let ship_s = median(ship);
    let ship_lz4_s = median(ship_lz4);
    let stock_copy_s = median(stock);
    let stock_same_work_s = median(same_work);
    println!(
        "   ship median {ship_s:.2} s (lz4 {ship_lz4_s:.2} s), stock median {stock_copy_s:.2} s, ratio {:.2} (lz4 {:.2})",
        ship_s / stock_copy_s.max(1e-9),
        ship_lz4_s / stock_copy_s.max(1e-9)
    );
    let stock_dir = work.join(format!("size{size_mb}-stock{}", repeat - 1));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&stock_dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let data = read_files(&files)?;
    let floor = floor(&data)?;
    println!(
        "   one core seals it in {:.2} s with zstd ({:.2} s with lz4), the upload check takes {:.2} s ({:.2} s)",
        floor.seal_zstd_s, floor.seal_lz4_s, floor.check_zstd_s, floor.check_lz4_s
    );
    let mut result = SizeResult {
        dataset,
        floor,
        binlog_mb: mib(bytes),
        ship_s,
        ship_lz4_s,
        agent_cpu_lz4_s: agent_cpu_lz4,
        agent_rss_lz4_mib: agent_rss_lz4,
        stored_lz4_mb: mib(stored_lz4),
        stock_copy_s,
        stock_same_work_s,
        agent_cpu_s: agent_cpu,
        shipper_cpu_s: shipper_cpu,
        server_cpu_s: server_cpu,
        stock_server_cpu_s: median(stock_server_cpu),
        agent_rss_mib: rss,
        stored_mb: mib(store_bytes),
        gzip_mb: 0.0,
        gzip_s: 0.0,
        levels: Vec::new(),
        restore_s: 0.0,
        restore_keep_s: 0.0,
        restore_rss_mib: 0.0,
        stock_replay_s: 0.0,
        events: String::new(),
    };
    if ship_only {
        return Ok(result);
    }
    let started = Instant::now();
    let mut gzip_bytes = 0;
    for f in &files {
        let out = Command::new("gzip").args(["-6", "-c"]).arg(f).output()?;
        gzip_bytes += out.stdout.len() as u64;
    }
    let gzip_s = started.elapsed().as_secs_f64();
    result.levels = seal_levels(&data)?;
    // Up to a GiB; not held through the restores that follow.
    drop(data);
    result.gzip_mb = mib(gzip_bytes);
    result.gzip_s = gzip_s;
    for l in &result.levels {
        println!(
            "   seal with {}: {:.0} MiB/s, stored {:.3} of the binlog",
            compression_name(l.compression),
            l.mib_per_s,
            l.ratio
        );
    }
    if !with_restore {
        return Ok(result);
    }

    let shipper_bin = workspace_bin("logferry-shipper")?;
    let store = final_dir.join("store");
    let mut restore = Vec::new();
    let mut restore_keep = Vec::new();
    let mut restore_rss = Vec::new();
    let mut replay = Vec::new();
    let mut events = String::new();
    for r in 0..repeat {
        let target = MariaDb::start(Options::without_binlog(30 + r as u32)).await?;
        let started = Instant::now();
        let mut cmd = Command::new(&shipper_bin);
        cmd.args(["restore", "--stream", STREAM, "--to", "latest", "--store"])
            .arg(&store)
            .arg("--target")
            .arg(target.root_url());
        let (text, peak_kib) = run_watching_memory(cmd, &work.join("restore.out")).await?;
        restore.push(started.elapsed().as_secs_f64());
        restore_rss.push(peak_kib as f64 / 1024.0);
        events = text
            .lines()
            .find(|l| l.contains("events applied"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        drop(target);
        let target = MariaDb::start(Options::without_binlog(50 + r as u32)).await?;
        let t = run_timed(
            "logferry-shipper restore --keep-durability",
            Command::new(&shipper_bin)
                .args([
                    "restore",
                    "--keep-durability",
                    "--stream",
                    STREAM,
                    "--to",
                    "latest",
                ])
                .arg("--store")
                .arg(&store)
                .arg("--target")
                .arg(target.root_url()),
        )?;
        restore_keep.push(t);
        drop(target);
        let target = MariaDb::start(Options::without_binlog(40 + r as u32)).await?;
        let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let t = run_timed(
            "mariadb-binlog | mariadb",
            Command::new("bash").arg("-c").arg(format!(
                "set -o pipefail; mariadb-binlog {} | mariadb --host=127.0.0.1 --port={} --user=root",
                list.join(" "),
                target.port
            )),
        )?;
        replay.push(t);
        println!(
            "   restore run {r}: logferry {:.2} s (peak RSS {:.1} MiB), with --keep-durability {:.2} s, stock replay {t:.2} s",
            restore[r], restore_rss[r], restore_keep[r]
        );
    }
    result.restore_s = median(restore);
    result.restore_keep_s = median(restore_keep);
    result.restore_rss_mib = median(restore_rss);
    result.stock_replay_s = median(replay);
    result.events = events;
    Ok(result)
}

/// Commit → durably stored delays under a fixed write rate.
struct RpoResult {
    seal_ms: u64,
    achieved_rate: f64,
    p50: f64,
    p99: f64,
    max: f64,
    samples: usize,
}

async fn rpo_run(work: &Path, seal_ms: u64, seconds: u64, rate: u64) -> anyhow::Result<RpoResult> {
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
    let poller = tokio::spawn(async move {
        let http = reqwest::Client::new();
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
async fn gtid_seq(c: &mut Conn) -> anyhow::Result<u64> {
    let pos: Option<String> = c.query_first("SELECT @@gtid_binlog_pos").await?;
    Ok(pos
        .unwrap_or_default()
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The GTID sequence number of the stream head's end position, if the shipper answers.
async fn head_seq(http: &reqwest::Client, url: &str) -> Option<u64> {
    let body = http.get(url).send().await.ok()?.bytes().await.ok()?;
    let head: logferry_common::wire::StreamHead = serde_json::from_slice(&body).ok()?;
    head.end?.rsplit('-').next()?.parse().ok()
}

/// Agent memory while the shipper is down and the spool grows, and the drain afterwards.
async fn shipper_down_run(work: &Path, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
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
async fn big_trx_run(work: &Path, mb: u64) -> anyhow::Result<(f64, f64, f64, f64)> {
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
async fn many_agents_run(work: &Path, agents: u32, size_mb: u64) -> anyhow::Result<f64> {
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

fn machine() -> String {
    let sh = |cmd: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(cmd)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    format!(
        "- date: {}\n- cores: {}; memory: {}\n- {}\n- {}\n- logferry commit {}\n",
        sh("date -u +%Y-%m-%dT%H:%MZ"),
        sh("nproc"),
        sh("free -h | awk '/Mem:/ {print $2}'"),
        sh("mariadbd --version"),
        sh("rustc --version"),
        sh("git rev-parse --short HEAD"),
    )
}

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

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks\n\nProduced by `{command}` (release build; the script rewrites this file).\n"
    );
    let _ = writeln!(md, "## Machine\n\n{}", machine());
    let _ = writeln!(
        md,
        "## Ship throughput: read the whole binlog and store it durably\n"
    );
    let _ = writeln!(md, "The server runs with `binlog_annotate_row_events=OFF`, so that both sides move the same events (the agent does not receive ANNOTATE_ROWS events, which hold the SQL text of each statement and were half of this workload's binlog). logferry = agent reads from the server (CRC32 of every event checked), seals 1 s / 8 MiB segments (zstd level 1 by default, or `segment.codec = \"lz4\"`; sha256 of the plaintext and of the segment), spools with fsync, uploads; shipper checks the trailer sha256 and stores with fsync; timed until the shipper holds the server's position. Stock = `mariadb-binlog --read-from-remote-server --raw --to-last-log` writing the same binlog to local files (no compression, no checksum, no fsync). Stock with the same work = that copy, then `zstd -1` of the files, `sha256sum` of the result and `sync` (what a script making compressed, checksummed, durable copies with the stock tools does). Each round runs the four in turn; median of {} rounds. Two data sets: *text rows* (200-row inserts of 100 random words from a 24-word vocabulary, so every match a compressor finds is a word or two long: the costliest input for zstd and LZ4) and *order rows* (an online shop's orders: numbers, short codes, dates, e-mail addresses, and updates with full before and after row images).\n", a.repeat);
    let _ = writeln!(md, "| data | binlog | logferry (zstd 1) | stock copy | ratio | logferry, codec lz4 | ratio | stock copy + zstd -1 + sha256sum + sync | ratio (zstd 1) | agent peak RSS (worst run): zstd, lz4 | CPU s: agent + shipper + server | CPU s: agent with lz4 | CPU s: stock server |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &sizes {
        let _ = writeln!(
            md,
            "| {} | {:.0} MiB | {:.2} s | {:.2} s | {:.2}× | {:.2} s | {:.2}× | {:.2} s | {:.2}× | {:.1}, {:.1} MiB | {:.2} + {:.2} + {:.2} | {:.2} | {:.2} |",
            s.dataset.name(),
            s.binlog_mb,
            s.ship_s,
            s.stock_copy_s,
            s.ship_s / s.stock_copy_s.max(1e-9),
            s.ship_lz4_s,
            s.ship_lz4_s / s.stock_copy_s.max(1e-9),
            s.stock_same_work_s,
            s.ship_s / s.stock_same_work_s.max(1e-9),
            s.agent_rss_mib,
            s.agent_rss_lz4_mib,
            s.agent_cpu_s,
            s.shipper_cpu_s,
            s.server_cpu_s,
            s.agent_cpu_lz4_s,
            s.stock_server_cpu_s
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(md, "\n### What {cores} cores allow\n\nThe work the segment format asks of every byte, timed with the agent's own code on one core of this machine in the same run: the agent's sealing (compression, sha256 of the plaintext, sha256 trailer over the stored bytes) and the shipper's upload check (that trailer again). With the server's own CPU time for sending the binlog (measured during the logferry runs above), spread perfectly over {cores} cores and with no network, disk or waiting at all, it gives the least time any schedule of a ship could take here. A ratio above 1.20 means the ship target cannot be met on this machine, however the pipeline is arranged.\n");
    let _ = writeln!(md, "| data | binlog | codec | seal + upload check on one core | server CPU | least time on {cores} cores | least / stock copy | logferry | logferry / least |\n|---|---|---|---|---|---|---|---|---|");
    for s in &sizes {
        let f = &s.floor;
        for (codec, seal, check, ship) in [
            ("zstd 1", f.seal_zstd_s, f.check_zstd_s, s.ship_s),
            ("lz4", f.seal_lz4_s, f.check_lz4_s, s.ship_lz4_s),
        ] {
            let least = Floor::least_s(seal, check, s.server_cpu_s, cores);
            let _ = writeln!(
                md,
                "| {} | {:.0} MiB | {codec} | {seal:.2} + {check:.2} s | {:.2} s | {least:.2} s | {:.2}× | {ship:.2} s | {:.2}× |",
                s.dataset.name(),
                s.binlog_mb,
                s.server_cpu_s,
                least / s.stock_copy_s.max(1e-9),
                ship / least.max(1e-9)
            );
        }
    }
    let _ = writeln!(md, "\n## Storage: stored bytes per byte of binlog\n\n| data | binlog | logferry store (zstd 1) | ratio | with codec lz4 | ratio | `gzip -6` of the files | ratio | gzip time |\n|---|---|---|---|---|---|---|---|---|");
    for s in &sizes {
        let _ = writeln!(
            md,
            "| {} | {:.0} MiB | {:.1} MiB | {:.3} | {:.1} MiB | {:.3} | {:.1} MiB | {:.3} | {:.1} s |",
            s.dataset.name(),
            s.binlog_mb,
            s.stored_mb,
            s.stored_mb / s.binlog_mb,
            s.stored_lz4_mb,
            s.stored_lz4_mb / s.binlog_mb,
            s.gzip_mb,
            s.gzip_mb / s.binlog_mb,
            s.gzip_s
        );
    }
    let _ = writeln!(md, "\n### Sealing cost per codec and zstd level\n\nThe same binlog files sealed in 8 MiB segments with the agent's sealer (two frames on two threads, the plaintext sha256 on a third), in the benchmark process on an otherwise idle machine. zstd level 1 is the default (`segment.codec`, `segment.zstd_level`).\n");
    let _ = writeln!(
        md,
        "| data | binlog | codec | sealing speed | stored / binlog |\n|---|---|---|---|---|"
    );
    for s in &sizes {
        for l in &s.levels {
            let _ = writeln!(
                md,
                "| {} | {:.0} MiB | {} | {:.0} MiB/s | {:.3} |",
                s.dataset.name(),
                s.binlog_mb,
                compression_name(l.compression),
                l.mib_per_s,
                l.ratio
            );
        }
    }
    let _ = writeln!(md, "\n## Restore: apply the same events into a fresh server\n\nOn the text rows. logferry = `logferry-shipper restore --to latest` (verifies every chunk and segment, loads the small snapshot taken before the data, replays through `mariadb-binlog - | mariadb` while the next segments are read; by default with the target's `innodb_flush_log_at_trx_commit` at 2 during the restore and put back after). The same with `--keep-durability` (the target's setting, 1, left alone). Stock = `mariadb-binlog FILES | mariadb` on the server's own files. Targets: fresh servers, no binlog, 64 MiB buffer pool. Median of {} runs.\n", a.repeat);
    let _ = writeln!(md, "| binlog | logferry restore | ratio | `--keep-durability` | ratio | stock replay | restore peak RSS | what was applied |\n|---|---|---|---|---|---|---|---|");
    for s in sizes.iter().filter(|s| s.dataset == Dataset::Text) {
        let _ = writeln!(
            md,
            "| {:.0} MiB | {:.2} s | {:.2}× | {:.2} s | {:.2}× | {:.2} s | {:.1} MiB | {} |",
            s.binlog_mb,
            s.restore_s,
            s.restore_s / s.stock_replay_s.max(1e-9),
            s.restore_keep_s,
            s.restore_keep_s / s.stock_replay_s.max(1e-9),
            s.stock_replay_s,
            s.restore_rss_mib,
            s.events
        );
    }
    let _ = writeln!(md, "\n## RPO under load: commit → durably stored\n\nOne writer commits single-row transactions at a fixed rate for {} s; the delay of each transaction is from its commit returning to the first time the shipper's stream head (polled every 5 ms) reaches it.\n", a.rpo_seconds);
    let _ = writeln!(md, "| seal age | target rate | achieved rate | transactions | p50 | p99 | max |\n|---|---|---|---|---|---|---|");
    for r in &rpo {
        let _ = writeln!(
            md,
            "| {} ms | {} tx/s | {:.0} tx/s | {} | {:.3} s | {:.3} s | {:.3} s |",
            r.seal_ms, a.rpo_rate, r.achieved_rate, r.samples, r.p50, r.p99, r.max
        );
    }
    let _ = writeln!(md, "\n## Memory\n\n| case | peak RSS |\n|---|---|");
    let _ = writeln!(md, "| agent, shipper down {down_seconds} s under bulk load (spool grew to {spool_peak:.0} MiB on disk; drained in {drain_s:.1} s after the shipper returned) | {down_rss:.1} MiB |");
    let _ = writeln!(
        md,
        "| shipper receiving from 3 agents at once | {many_rss:.1} MiB |"
    );
    let _ = writeln!(md, "| agent tailing one transaction of {big_mib:.0} MiB of incompressible rows (segments cut inside it) | {big_agent:.1} MiB |");
    let _ = writeln!(
        md,
        "| shipper receiving that transaction | {big_shipper:.1} MiB |"
    );
    let _ = writeln!(
        md,
        "| stock `mariadb-binlog --read-from-remote-server --raw` copying the same binlog | {big_stock:.1} MiB |"
    );
    let previous = std::fs::read_to_string(&a.out).unwrap_or_default();
    if let Some(at) = previous.find(KEEP_MARKER) {
        md.push('\n');
        md.push_str(&previous[at..]);
    }
    std::fs::write(&a.out, md)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
