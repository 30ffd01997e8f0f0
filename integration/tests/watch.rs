//! The stream seen from off-site: the agent reports to the shipper, which computes the
//! RPO exposure, lag and health of each stream for `GET /v1/status`, the `status` command
//! and `/metrics` (checked by promtool, with the shipped Prometheus rules).

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use common::{settings, shipper_cli};
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::{browser, wait_for, workload};
use logferry_shipper::watch::status::{DrillSummary, Health, StreamStatus};

/// Reports every 200 ms; the shipper re-reads the store every 300 ms and calls a stream
/// exposed for more than 30 s red.
const AGENT_ENV: &[(&str, &str)] = &[("LOGFERRY__AGENT__REPORT_INTERVAL_MS", "200")];
const SHIPPER_ENV: &[(&str, &str)] = &[
    ("LOGFERRY__WATCH__REFRESH_MS", "300"),
    ("LOGFERRY__WATCH__RPO_TARGET_SECONDS", "30"),
];

async fn status(shipper: &Shipper) -> anyhow::Result<StreamStatus> {
    #[derive(serde::Deserialize)]
    struct Body {
        streams: Vec<StreamStatus>,
    }
    let body: Body = serde_json::from_str(&shipper.get("/v1/status").await?)?;
    body.streams
        .into_iter()
        .find(|s| s.stream == common::STREAM)
        .context("the stream is not in /v1/status")
}

/// Waits until the stream's status satisfies `ok`; the last status and both logs on
/// failure.
async fn wait_status(
    shipper: &Shipper,
    agent: &Agent,
    what: &str,
    ok: impl Fn(&StreamStatus) -> bool,
) -> anyhow::Result<StreamStatus> {
    let found = wait_for(what, Duration::from_secs(60), || async {
        let s = status(shipper).await?;
        Ok(ok(&s).then_some(s))
    })
    .await;
    found.with_context(|| {
        format!(
            "agent log:\n{}\nshipper log:\n{}",
            agent.log_text(),
            shipper.log_text()
        )
    })
}

/// `promtool check metrics` on a `/metrics` text: it must find nothing to complain of.
fn promtool_metrics(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("promtool (scripts/install-deps installs it)")?;
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\non:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposure_is_zero_idle_near_the_seal_age_busy_and_grows_while_the_agent_is_dead(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start_with_env(&tmp.path().join("shipper"), SHIPPER_ENV).await?;
    let mut agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        &settings(&db, &shipper),
        AGENT_ENV,
    )?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;

    // Idle and everything stored: exposure 0 and green, report after report.
    wait_status(&shipper, &agent, "an idle, green stream", |s| {
        s.health == Health::Green && s.rpo_exposure_seconds == Some(0.0)
    })
    .await?;
    for _ in 0..25 {
        let s = status(&shipper).await?;
        assert_eq!(s.rpo_exposure_seconds, Some(0.0), "{s:?}");
        assert_eq!(s.health, Health::Green, "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A steady workload: exposure stays near the seal age (200 ms, on binlog times of
    // whole seconds), far below the target.
    let writer = {
        let mut w = db.conn().await?;
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                if workload::run(&mut w, i, i + 1).await.is_err() {
                    return;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let busy = wait_status(&shipper, &agent, "stored changes of the workload", |s| {
        s.last_stored_commit_ms.is_some()
    })
    .await?;
    let mut worst = 0f64;
    for _ in 0..25 {
        let s = status(&shipper).await?;
        let e = s.rpo_exposure_seconds.context("an exposure")?;
        worst = worst.max(e);
        assert_eq!(s.health, Health::Green, "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        worst < 10.0,
        "exposure reached {worst} s under a 200 ms seal: {busy:?}"
    );

    // The agent dies under the workload: the exposure the shipper reports keeps growing,
    // the stream turns red for the silence, `status` exits 1.
    agent.kill9();
    let first = status(&shipper).await?.rpo_exposure_seconds.unwrap_or(0.0);
    let silent = wait_status(&shipper, &agent, "a silent agent's red stream", |s| {
        s.health == Health::Red
            && s.problems.iter().any(|p| p.contains("silent"))
            && s.rpo_exposure_seconds.is_some_and(|e| e > first + 2.0)
    })
    .await?;
    let later = wait_status(&shipper, &agent, "the exposure growing on", |s| {
        s.rpo_exposure_seconds > silent.rpo_exposure_seconds
    })
    .await?;
    assert!(later.agent_silent_seconds > silent.agent_silent_seconds);
    let url = shipper.url();
    let ca = shipper.ca_file();
    let token = logferry_integration::logferry::TEST_TOKEN;
    let args = ["status", "--url", &url, "--token", token, "--ca-file"];
    let ca_text = ca.to_string_lossy();
    let mut with_ca: Vec<&str> = args.to_vec();
    with_ca.push(&ca_text);
    let (code, out) = shipper_cli(&with_ca)?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("RED") && out.contains("silent for"), "{out}");

    // Back: green again, exposure near the seal age, `status` exits 0 and its JSON reads.
    agent.restart()?;
    wait_status(&shipper, &agent, "the stream green again", |s| {
        s.health == Health::Green && s.rpo_exposure_seconds.is_some_and(|e| e < 10.0)
    })
    .await?;
    writer.abort();
    let mut json = with_ca.clone();
    json.push("--json");
    let (code, out) = shipper_cli(&json)?;
    assert_eq!(code, 0, "{out}");
    let start = out.find('{').context("JSON in the output")?;
    let parsed: serde_json::Value = serde_json::from_str(out[start..].trim())?;
    assert_eq!(parsed["streams"][0]["stream"], common::STREAM, "{out}");

    // The metrics of both sides pass promtool, and carry the stream's series.
    let metrics = shipper.get("/metrics").await?;
    promtool_metrics(&metrics)?;
    for series in [
        "logferry_shipper_rpo_exposure_seconds{stream=\"db1\"}",
        "logferry_shipper_agent_silence_seconds{stream=\"db1\"}",
        "logferry_shipper_commit_to_durable_seconds_bucket{le=\"1.0\",stream=\"db1\"}",
        "logferry_shipper_segments_stored_total ",
    ] {
        assert!(metrics.contains(series), "{series} missing in:\n{metrics}");
    }
    promtool_metrics(&agent.metrics().await?)?;

    // The status page, in a real browser at desktop and phone width: the stream's card
    // with its colour and chart, no console errors; a wrong token shows the form.
    let page = format!("{}/#token={token}", shipper.url());
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
        let r = browser::render(&page, width, height)?;
        assert!(
            r.console.is_empty(),
            "console at {name} width: {:?}",
            r.console
        );
        assert!(
            r.dom.contains("data-stream=\"db1\""),
            "no card for db1:\n{}",
            r.dom
        );
        assert!(r.dom.contains("card green"), "{}", r.dom);
        assert!(
            r.dom.contains("data-series=\"exposure\""),
            "no chart:\n{}",
            r.dom
        );
        let file = shots.join(format!("status-page-{name}.png"));
        browser::screenshot(&page, width, height, &file)?;
        eprintln!("status page screenshot: {}", file.display());
    }
    // The console check sees what a page logs (its positive control).
    let noisy = browser::render(
        "data:text/html,<script>console.error('seen')</script>",
        400,
        300,
    )?;
    assert!(
        noisy.console.iter().any(|l| l.contains("seen")),
        "{:?}",
        noisy.console
    );
    let refused = browser::render(&format!("{}/#token=lft_wrong", shipper.url()), 1280, 900)?;
    assert!(
        refused.dom.contains("the token was refused"),
        "{}",
        refused.dom
    );
    Ok(())
}

#[test]
fn the_shipped_prometheus_rules_pass_promtool_and_name_served_metrics() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = root.join("deploy/prometheus/logferry-rules.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .context("promtool (scripts/install-deps installs it)")?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every metric the rules and the dashboard name is one the shipper or agent serves.
    let every_field = StreamStatus {
        stream: "s".into(),
        kind: Some("mysql".into()),
        health: Health::Green,
        problems: Vec::new(),
        rpo_exposure_seconds: Some(1.0),
        source_lag_seconds: Some(1.0),
        source_lag_bytes: Some(1),
        spool_bytes: Some(1),
        oldest_unstored_age_seconds: Some(1.0),
        agent: Some("a".into()),
        agent_silent_seconds: Some(1.0),
        snapshot_replica_lag_seconds: Some(1.0),
        last_stored_commit_ms: Some(1),
        chain_breaks: 0,
        snapshots: 1,
        last_snapshot_ms: Some(1),
        restorable_from_ms: Some(1),
        restorable_to_ms: Some(1),
        last_drill: Some(DrillSummary {
            finished_ms: 1,
            passed: true,
            last_passed_ms: Some(1),
        }),
        forks: 1,
        last_fork_ms: Some(1),
        firing: vec!["rpo_exposure".into()],
    };
    let shipper = logferry_shipper::metrics::Metrics::new();
    shipper.stored_segment("s", 0, 1);
    let served = [
        shipper.render(&[every_field]),
        logferry_agent::metrics::Metrics::new("s").render(0),
    ]
    .concat();
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/logferry-dashboard.json"))?;
    serde_json::from_str::<serde_json::Value>(&dashboard).context("the dashboard's JSON")?;
    let text = std::fs::read_to_string(&rules)? + &dashboard;
    let mut named: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            w.starts_with("logferry_")
                && !w.starts_with("logferry_shipper_commit_to_durable_seconds_bucket")
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 8, "{named:?}");
    for name in named {
        assert!(
            served.contains(&format!("# TYPE {name} "))
                || served.contains(&format!("\n{name}{{"))
                || served.contains(&format!("\n{name} ")),
            "{name} is named in deploy/ but not served"
        );
    }
    Ok(())
}
