//! What a far-away peer costs: a catch-up of a backlog through a link with added round-trip
//! time, with uploads one at a time and pipelined; and reads of ~1,000 segments (`ls`,
//! `verify`, `export`) from a local directory and from an S3-protocol server, directly and
//! through added latency, one read at a time and with reads in flight. The latency comes
//! from [`DelayProxy`]: every byte held back by half the round trip each way.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use logferry_integration::delay_proxy::DelayProxy;
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::s3::S3Server;
use logferry_integration::store;
use mysql_async::prelude::Queryable;
use object_store::{ObjectStoreExt, PutPayload};

use crate::*;

/// Binlog generated for the runs (text rows).
const DATA_MB: u64 = 24;
/// Segment size of the runs: ~1,000 segments of the data.
const SEGMENT_BYTES: u64 = 24 * 1024;
/// Round trips the catch-up is measured through, ms.
const CATCH_UP_RTT_MS: [u64; 3] = [0, 20, 50];
/// Uploads in flight compared.
const WINDOWS: [usize; 3] = [1, 4, 16];
/// Round trip added in front of the S3-protocol server, ms.
const STORE_RTT_MS: u64 = 10;
/// Reads in flight compared.
const READS: [u16; 2] = [1, 16];

/// A store the read commands run against: its name in the table, its URL, the
/// environment that reaches it.
type StoreUnderTest = (String, String, Vec<(String, String)>);

/// One catch-up: the backlog shipped from the agent's start until the shipper holds it.
pub(crate) struct CatchUp {
    pub(crate) rtt_ms: u64,
    pub(crate) window: usize,
    pub(crate) segments: usize,
    pub(crate) secs: f64,
}

/// The read commands against one store, seconds per 1,000 segments.
pub(crate) struct Reads {
    pub(crate) store: String,
    pub(crate) reads: u16,
    pub(crate) ls_s: f64,
    pub(crate) verify_s: f64,
    pub(crate) export_s: f64,
}

/// Everything the latency run measured.
pub(crate) struct LatencyResults {
    pub(crate) catch_up: Vec<CatchUp>,
    pub(crate) reads: Vec<Reads>,
    pub(crate) segments: usize,
}

pub(crate) async fn latency_run(work: &Path) -> anyhow::Result<LatencyResults> {
    let work = &work.join("latency");
    std::fs::create_dir_all(work)?;
    println!("== latency: {DATA_MB} MB of binlog in {SEGMENT_BYTES}-byte segments");
    let primary = MariaDb::start(Options::default()).await?;
    let mut c = primary.conn().await?;
    c.query_drop("CREATE DATABASE bench").await?;
    Dataset::Text.generate(&mut c, DATA_MB).await?;

    let mut catch_up = Vec::new();
    let mut kept_store = None;
    for rtt in CATCH_UP_RTT_MS {
        for window in WINDOWS {
            let dir = work.join(format!("catchup-{rtt}ms-{window}"));
            let shipper = Shipper::start(&dir).await?;
            let proxy = DelayProxy::start(
                format!("127.0.0.1:{}", shipper.port).parse()?,
                Duration::from_millis(rtt / 2),
            )
            .await?;
            let mut s = settings(&primary, &shipper, STREAM, 700, 1000);
            s.shipper_url = proxy.url("https");
            s.segment_extra = format!("max_bytes = {SEGMENT_BYTES}");
            // Right after `[shipper]`'s own lines, so still in that section.
            s.extra_toml = format!("uploads_in_flight = {window}\n");
            let started = Instant::now();
            let agent = Agent::start(&dir.join("agent"), &s)?;
            wait_shipped(&primary, &shipper, STREAM, Duration::from_secs(1800)).await?;
            let secs = started.elapsed().as_secs_f64();
            drop(agent);
            let segments = store::segments(&shipper.store_dir, STREAM)?.len();
            println!(
                "catch-up through {rtt} ms, {window} in flight: {segments} segments in {secs:.2} s"
            );
            catch_up.push(CatchUp {
                rtt_ms: rtt,
                window,
                segments,
                secs,
            });
            if rtt == 0 && window == 1 {
                kept_store = Some(shipper.store_dir.clone());
            }
        }
    }
    let local = kept_store.context("no store kept")?;
    let segs = store::segments(&local, STREAM)?;
    let segments = segs.len();
    let from = segs
        .first()
        .map(|(_, s)| s.header.meta.start.to_string())
        .context("no segments stored")?;

    let s3 = S3Server::start().await?;
    s3.create_bucket("bench").await?;
    copy_to_s3(&local, &s3, "bench").await?;
    let s3_proxy = DelayProxy::start(
        format!("127.0.0.1:{}", s3.port).parse()?,
        Duration::from_millis(STORE_RTT_MS / 2),
    )
    .await?;
    let mut far_env = s3.env();
    for (k, v) in &mut far_env {
        if k == "AWS_ENDPOINT" {
            *v = s3_proxy.url("http");
        }
    }
    let stores: [StoreUnderTest; 3] = [
        (
            "local directory".into(),
            local.display().to_string(),
            vec![],
        ),
        (
            "S3-protocol server (moto)".into(),
            "s3://bench".into(),
            s3.env(),
        ),
        (
            format!("S3-protocol server, +{STORE_RTT_MS} ms round trip"),
            "s3://bench".into(),
            far_env,
        ),
    ];
    let mut reads = Vec::new();
    for (name, url, env) in &stores {
        for n in READS {
            let per_1000 = |secs: f64| secs * 1000.0 / segments.max(1) as f64;
            let run = |args: &[&str]| -> anyhow::Result<f64> {
                let mut cmd = logferry_integration::logferry::shipper_command()?;
                cmd.args(args)
                    .args(["--store", url, "--stream", STREAM])
                    .args(["--reads-in-flight", &n.to_string()])
                    .envs(env.iter().cloned());
                run_timed(&format!("{args:?} on {name}"), &mut cmd)
            };
            let ls_s = per_1000(run(&["ls", "--segments"])?);
            let verify_s = per_1000(run(&["verify"])?);
            let out = work.join(format!("export-{}-{n}", reads.len()));
            let export_s = per_1000(run(&[
                "export",
                "--from",
                &from,
                "--dir",
                &out.display().to_string(),
            ])?);
            std::fs::remove_dir_all(&out)?;
            println!("{name}, {n} in flight, per 1,000 segments: ls {ls_s:.2} s, verify {verify_s:.2} s, export {export_s:.2} s");
            reads.push(Reads {
                store: name.clone(),
                reads: n,
                ls_s,
                verify_s,
                export_s,
            });
        }
    }
    Ok(LatencyResults {
        catch_up,
        reads,
        segments,
    })
}

/// Copies every object of the local store `dir` into `bucket`.
async fn copy_to_s3(dir: &Path, s3: &S3Server, bucket: &str) -> anyhow::Result<()> {
    let [(_, key_id), (_, secret), (_, region)] = logferry_integration::s3::S3_ENV;
    let target = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region(region)
        .with_access_key_id(key_id)
        .with_secret_access_key(secret)
        .build()?;
    let mut files = vec![dir.to_path_buf()];
    while let Some(d) = files.pop() {
        for e in std::fs::read_dir(&d)? {
            let path = e?.path();
            if path.is_dir() {
                files.push(path);
                continue;
            }
            let key = path.strip_prefix(dir)?.to_string_lossy().into_owned();
            let body = std::fs::read(&path)?;
            target
                .put(&object_store::path::Path::from(key), PutPayload::from(body))
                .await?;
        }
    }
    Ok(())
}

/// The section of `BENCHMARKS.md` this run writes.
pub(crate) fn latency_markdown(command: &str, r: &LatencyResults) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{LATENCY_BEGIN}\n## Latency: a far-away shipper or store\n"
    );
    let _ = writeln!(md, "Produced by `{command}` (release build; the script rewrites this section). The round trip is added by a proxy that holds every byte back by half of it in each direction (no bandwidth limit), in front of the shipper or of the S3-protocol server.\n");
    let _ = writeln!(md, "### Catch-up: a {DATA_MB} MB backlog in {} KiB segments, from the agent's start until the shipper holds all of it\n", SEGMENT_BYTES / 1024);
    let _ = writeln!(md, "| round trip | segments | 1 upload at a time | 4 in flight (default) | 16 in flight |\n|---|---|---|---|---|");
    for rtt in CATCH_UP_RTT_MS {
        let runs: Vec<&CatchUp> = r.catch_up.iter().filter(|c| c.rtt_ms == rtt).collect();
        let secs = |w: usize| {
            runs.iter()
                .find(|c| c.window == w)
                .map_or("-".to_owned(), |c| format!("{:.2} s", c.secs))
        };
        let _ = writeln!(
            md,
            "| {rtt} ms | {} | {} | {} | {} |",
            runs.first().map_or(0, |c| c.segments),
            secs(1),
            secs(4),
            secs(16)
        );
    }
    let _ = writeln!(md, "\n### Reads: seconds per 1,000 segments ({} stored), one read at a time and 16 in flight (`--reads-in-flight`, default 16)\n", r.segments);
    let _ = writeln!(md, "`export --from` reads every segment's header (the plan) and then its payload (checked, and written as binlog files), as a restore does before it applies them: two requests per segment. moto, the S3-protocol server here, answers one request at a time, so against it reads in flight buy nothing; the rows through the added round trip show what they buy against a store that answers requests in parallel, as S3 does.\n");
    let _ = writeln!(
        md,
        "| store | reads in flight | ls --segments | verify | export |\n|---|---|---|---|---|"
    );
    for x in &r.reads {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} s | {:.2} s | {:.2} s |",
            x.store, x.reads, x.ls_s, x.verify_s, x.export_s
        );
    }
    let _ = writeln!(md, "{LATENCY_END}");
    md
}

/// Where the latency section starts and ends in `BENCHMARKS.md` (it lives in the part kept
/// by a full run, and `--latency-only` replaces it in place).
pub(crate) const LATENCY_BEGIN: &str = "<!-- latency: written by scripts/bench --latency-only -->";
pub(crate) const LATENCY_END: &str = "<!-- /latency -->";

/// `text` with its latency section replaced by `section` (appended when it has none).
pub(crate) fn replace_latency_section(text: &str, section: &str) -> String {
    replace_section(text, LATENCY_BEGIN, LATENCY_END, section)
}

/// `text` with the part from `begin` to `end` replaced by `section` (appended when it has
/// none).
pub(crate) fn replace_section(text: &str, begin: &str, end: &str, section: &str) -> String {
    match (text.find(begin), text.find(end)) {
        (Some(a), Some(b)) if b > a => {
            let end = b + end.len();
            let rest = text[end..].strip_prefix('\n').unwrap_or(&text[end..]);
            format!("{}{section}{rest}", &text[..a])
        }
        _ => format!("{}\n{section}", text.trim_end()),
    }
}
