//! `BENCHMARKS.md`: the tables, from one run's results.

use std::fmt::Write as _;
use std::process::Command;

use crate::*;

/// Everything one full run measured, for the report.
pub(crate) struct Results {
    pub(crate) sizes: Vec<SizeResult>,
    pub(crate) rpo: Vec<RpoResult>,
    pub(crate) down_seconds: u64,
    pub(crate) down_rss: f64,
    pub(crate) spool_peak: f64,
    pub(crate) drain_s: f64,
    pub(crate) many_rss: f64,
    pub(crate) big_agent: f64,
    pub(crate) big_shipper: f64,
    pub(crate) big_stock: f64,
    pub(crate) big_mib: f64,
}

/// The results file's generated part.
pub(crate) fn markdown(a: &Args, command: &str, r: &Results) -> String {
    let Results {
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
    } = r;
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
    for s in sizes {
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
    for s in sizes {
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
    for s in sizes {
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
    for s in sizes {
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
    for r in rpo {
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
    md
}

/// The machine the figures come from (CPU, cores, memory, kernel, server version).
pub(crate) fn machine() -> String {
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
