//! The ship comparison per binlog size: logferry against the stock copy, with storage and restore.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use logferry_integration::logferry::{Agent, AgentSettings, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::process;
use logferry_integration::store;
use mysql_async::prelude::Queryable;

use crate::*;

pub(crate) fn settings(
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
        shipper_extra: shipper.agent_tls_lines(),
        max_age_ms,
        source_extra: String::new(),
        segment_extra: String::new(),
        extra_toml: String::new(),
    }
}

/// Waits until the shipper holds the chain up to the server's current position.
pub(crate) async fn wait_shipped(
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

pub(crate) fn run_timed(what: &str, cmd: &mut Command) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs `cmd` to the end with its stdout in `out_file` (stderr beside it), sampling the
/// peak RSS (VmHWM) of the process while it runs. Returns its stdout and the peak in KiB.
pub(crate) async fn run_watching_memory(
    mut cmd: Command,
    out_file: &Path,
) -> anyhow::Result<(String, u64)> {
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

/// Results of one binlog size.
pub(crate) struct SizeResult {
    pub(crate) dataset: Dataset,
    pub(crate) floor: Floor,
    pub(crate) binlog_mb: f64,
    pub(crate) ship_s: f64,
    pub(crate) ship_lz4_s: f64,
    pub(crate) agent_cpu_lz4_s: f64,
    pub(crate) agent_rss_lz4_mib: f64,
    pub(crate) stored_lz4_mb: f64,
    pub(crate) stock_copy_s: f64,
    pub(crate) stock_same_work_s: f64,
    pub(crate) agent_cpu_s: f64,
    pub(crate) shipper_cpu_s: f64,
    pub(crate) server_cpu_s: f64,
    pub(crate) stock_server_cpu_s: f64,
    pub(crate) agent_rss_mib: f64,
    pub(crate) stored_mb: f64,
    pub(crate) gzip_mb: f64,
    pub(crate) gzip_s: f64,
    pub(crate) levels: Vec<LevelResult>,
    pub(crate) restore_s: f64,
    pub(crate) restore_keep_s: f64,
    pub(crate) restore_rss_mib: f64,
    pub(crate) stock_replay_s: f64,
    pub(crate) events: String,
}

/// One timed ship of the whole binlog by a fresh agent and shipper under `dir`.
pub(crate) struct ShipRun {
    pub(crate) secs: f64,
    pub(crate) agent_rss_mib: f64,
    pub(crate) agent_cpu_s: f64,
    pub(crate) shipper_cpu_s: f64,
    pub(crate) server_cpu_s: f64,
    pub(crate) store_bytes: u64,
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
/// `segment_extra` (storing payloads in clear when `in_clear`, else encrypting them),
/// timed until the shipper holds the server's position.
pub(crate) async fn ship_once(
    primary: &MariaDb,
    dir: &Path,
    server_id: u32,
    segment_extra: &str,
    in_clear: bool,
) -> anyhow::Result<ShipRun> {
    let env: &[(&str, &str)] = if in_clear {
        &[("LOGFERRY__ENCRYPTION__INSECURE_PLAINTEXT", "true")]
    } else {
        &[]
    };
    let shipper = Shipper::start_with_env(dir, env).await?;
    let server_before = primary.cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let mut s = settings(primary, &shipper, STREAM, server_id, 1000);
    s.segment_extra = segment_extra.to_owned();
    if in_clear {
        s.extra_toml = "[encryption]\ninsecure_plaintext = true\n".into();
    }
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

/// The primary every size run ships from, with an empty `bench` database.
pub(crate) async fn bench_primary() -> anyhow::Result<MariaDb> {
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
    primary
        .conn()
        .await?
        .query_drop("CREATE DATABASE bench")
        .await?;
    Ok(primary)
}

pub(crate) async fn size_run(
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
    let primary = bench_primary().await?;
    let mut c = primary.conn().await?;
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
        let run = ship_once(&primary, &dir, 900 + r as u32, "", false).await?;
        println!("   ship run {r}: {run}");
        ship.push(run);
        if r + 1 < repeat {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let dir = work.join(format!("size{size_mb}-lz4-run{r}"));
        let run = ship_once(&primary, &dir, 950 + r as u32, "codec = \"lz4\"", false).await?;
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

    let shipper_command = logferry_integration::logferry::shipper_command;
    let store = final_dir.join("store");
    let mut restore = Vec::new();
    let mut restore_keep = Vec::new();
    let mut restore_rss = Vec::new();
    let mut replay = Vec::new();
    let mut events = String::new();
    for r in 0..repeat {
        let target = MariaDb::start(Options::without_binlog(30 + r as u32)).await?;
        let started = Instant::now();
        let mut cmd = shipper_command()?;
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
            shipper_command()?
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
