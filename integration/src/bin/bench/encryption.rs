//! The cost of end-to-end encryption: the same binlog shipped by agents that encrypt (the
//! default) and by agents that store payloads in clear (`encryption.insecure_plaintext`),
//! taking turns; and the sealer alone, with and without encryption, on one core's worth
//! of segments.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use logferry_common::crypto::EpochKey;
use logferry_common::segment::Sealer;
use logferry_common::{Compression, StreamId};

use crate::*;

/// MiB/s of the agent's sealer (zstd 1) over `data` in 8 MiB segments, with `key` or in
/// clear; the best of three passes.
fn seal_rate(data: &[u8], key: Option<Arc<EpochKey>>) -> anyhow::Result<f64> {
    let meta = bench_meta()?;
    let mut best = 0f64;
    for _ in 0..3 {
        let mut sealer = Sealer::new(Compression::default())?.encrypting(key.clone());
        let started = Instant::now();
        for chunk in data.chunks(8 << 20) {
            sealer.seal(meta.clone(), chunk)?;
        }
        best = best.max(mib(data.len() as u64) / started.elapsed().as_secs_f64().max(1e-9));
    }
    Ok(best)
}

/// Runs the comparison on `size_mb` of text rows, `repeat` rounds, and prints a Markdown
/// section for BENCHMARKS.md.
pub(crate) async fn encryption_run(work: &Path, size_mb: u64, repeat: usize) -> anyhow::Result<()> {
    println!("== encryption: {size_mb} MB of binlog, text rows");
    let primary = bench_primary().await?;
    let mut c = primary.conn().await?;
    let bytes = Dataset::Text.generate(&mut c, size_mb).await?;
    let (mut sealed, mut clear) = (Vec::new(), Vec::new());
    for r in 0..repeat {
        for encrypt in [true, false] {
            let dir = work.join(format!("enc-{encrypt}-{r}"));
            let server_id = 700 + r as u32 * 2 + u32::from(encrypt);
            let run = ship_once(&primary, &dir, server_id, "", !encrypt).await?;
            println!(
                "   run {r}, {}: {run}",
                if encrypt { "encrypted" } else { "in clear" }
            );
            if encrypt { &mut sealed } else { &mut clear }.push(run);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let copy = work.join("enc-binlog");
    std::fs::create_dir_all(&copy)?;
    run_timed(
        "mariadb-binlog --read-from-remote-server",
        &mut logferry_integration::store::stock_copy(primary.port, "mysql-bin.000001", &copy),
    )?;
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&copy)?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let data = read_files(&files)?;
    let key = Arc::new(EpochKey::generate(&StreamId::new(STREAM)?, "bench", 0)?);
    let plain_rate = seal_rate(&data, None)?;
    let sealed_rate = seal_rate(&data, Some(key))?;
    let cpu = |runs: &[ShipRun]| median(runs.iter().map(|r| r.agent_cpu_s).collect());
    let secs = |runs: &[ShipRun]| median(runs.iter().map(|r| r.secs).collect());
    let (cpu_sealed, cpu_clear) = (cpu(&sealed), cpu(&clear));
    println!(
        "\n### Encryption\n\n`scripts/bench --encryption-only --sizes {size_mb} --repeat {repeat}`: {:.0} MiB of binlog (text rows) shipped by an agent that encrypts every payload (AES-256-GCM, the default) and by one that stores them in clear (`encryption.insecure_plaintext`), taking turns; medians of {repeat} runs. The sealer alone: zstd 1 in 8 MiB segments on this machine's cores, best of 3 passes.\n\n\
| | encrypted | in clear | more with encryption (negative: less) |\n|---|---:|---:|---:|\n\
| agent CPU s | {cpu_sealed:.2} | {cpu_clear:.2} | {:+.1}% |\n\
| ship time s | {:.2} | {:.2} | {:+.1}% |\n\
| sealer MiB/s | {sealed_rate:.0} | {plain_rate:.0} | {:+.1}% |\n",
        mib(bytes),
        100.0 * (cpu_sealed / cpu_clear.max(1e-9) - 1.0),
        secs(&sealed),
        secs(&clear),
        100.0 * (secs(&sealed) / secs(&clear).max(1e-9) - 1.0),
        100.0 * (plain_rate / sealed_rate.max(1e-9) - 1.0),
    );
    Ok(())
}
