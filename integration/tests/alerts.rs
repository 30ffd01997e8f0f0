//! Alerts that wake someone, against real servers: a MariaDB primary under a workload, the
//! agent and shipper, a webhook receiver (an HTTP server in the test) and a real
//! Alertmanager. Each alert is sent once when it fires, once when it resolves, never
//! twice across a shipper restart, and a receiver that fails gets it later.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use common::settings;
use logferry_integration::alert_receivers::{Alertmanager, Webhook};
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::{wait_for, workload};
use tokio::task::JoinHandle;

const AGENT_ENV: &[(&str, &str)] = &[("LOGFERRY__AGENT__REPORT_INTERVAL_MS", "200")];
const SHIPPER_ENV: &[(&str, &str)] = &[
    ("LOGFERRY__WATCH__REFRESH_MS", "300"),
    ("LOGFERRY__WATCH__STARTUP_GRACE_MS", "1000"),
];

/// The payload of Alertmanager's webhook receiver (its `template.Data`), as receivers
/// written for it read it; unknown fields are ignored as they would be.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read by serde: the parse is the check
struct AlertmanagerWebhook {
    version: String,
    group_key: String,
    truncated_alerts: u64,
    status: String,
    receiver: String,
    group_labels: BTreeMap<String, String>,
    common_labels: BTreeMap<String, String>,
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: String,
    alerts: Vec<WebhookAlert>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct WebhookAlert {
    status: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

/// `[alerts]` sending to `hook` and `am`, with `rules` (TOML of `[alerts.rules.*]`).
fn alerts_toml(hook: &Webhook, am: &Alertmanager, rules: &str) -> String {
    format!(
        "[alerts]\nevaluate_ms = 200\nrepeat_seconds = 3600\n\n{rules}\n\
         [[alerts.receivers]]\ntype = \"webhook\"\nurl = \"{}\"\n\n\
         [[alerts.receivers]]\ntype = \"alertmanager\"\nurl = \"{}\"\n",
        hook.url, am.url
    )
}

/// Writes a transaction every 20 ms until aborted.
async fn steady_writes(db: &MariaDb) -> anyhow::Result<JoinHandle<()>> {
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    Ok(tokio::spawn(async move {
        let mut i = 0u64;
        while workload::run(&mut c, i, i + 1).await.is_ok() {
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }))
}

/// Waits until `hook` got `n` bodies about `rule` in `state`; the logs on failure.
async fn wait_sent(
    hook: &Webhook,
    rule: &str,
    state: &str,
    n: usize,
    shipper: &Shipper,
) -> anyhow::Result<()> {
    // Two minutes: a scheduled drill waits for the next minute's start.
    wait_for(
        &format!("{n} {state} webhook(s) for {rule}"),
        Duration::from_secs(120),
        || {
            let got = hook.about(rule, state).len();
            async move { Ok((got >= n).then_some(())) }
        },
    )
    .await
    .with_context(|| {
        format!(
            "bodies: {:?}\nshipper log:\n{}",
            hook.bodies(),
            shipper.log_text()
        )
    })
}

/// Waits until every notification queued in the shipper's stored alert book was taken
/// by its receiver: nothing more is on its way.
async fn wait_delivered(shipper: &Shipper) -> anyhow::Result<()> {
    let book = shipper.store_dir.join("alerts/book.json");
    wait_for(
        "every notification delivered",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&book).unwrap_or_default();
            async move {
                let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                Ok(parsed["outbox"]
                    .as_array()
                    .is_some_and(|o| o.is_empty())
                    .then_some(()))
            }
        },
    )
    .await
    .with_context(|| shipper.log_text())
}

/// The stream's entry of the shipper's `/v1/status`.
async fn stream_status(shipper: &Shipper) -> anyhow::Result<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_str(&shipper.get("/v1/status").await?)?;
    body["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == common::STREAM))
        .cloned()
        .context("the stream is not in /v1/status")
}

/// Asserts that `hook` got exactly one notification about `rule` in each of `states`.
fn assert_sent_once(hook: &Webhook, rule: &str, states: &[&str]) {
    for state in states {
        assert_eq!(
            hook.about(rule, state).len(),
            1,
            "{rule} {state}: {:?}",
            hook.bodies()
        );
    }
}

/// Checks every body parses as Alertmanager's webhook payload and names its alert.
fn check_bodies(hook: &Webhook) -> anyhow::Result<()> {
    for body in hook.bodies() {
        let parsed: AlertmanagerWebhook =
            serde_json::from_value(body.clone()).with_context(|| format!("{body}"))?;
        assert_eq!(parsed.version, "4");
        assert_eq!(parsed.status, body["state"]);
        let alert = &parsed.alerts[0];
        assert_eq!(alert.labels["stream"], common::STREAM);
        assert_eq!(alert.labels["rule"], body["rule"]);
        humantime::parse_rfc3339(&alert.starts_at).with_context(|| alert.starts_at.clone())?;
        assert!(
            body["value"].is_number() && body["threshold"].is_number(),
            "{body}"
        );
        assert!(body["since"].is_string(), "{body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipper_outage_fires_once_and_resolves_once_even_through_a_failing_receiver(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let hook = Webhook::start().await?;
    let am = Alertmanager::start(&tmp.path().join("am")).await?;
    let rules = "[alerts.rules.rpo_exposure]\nthreshold = 3\nfor_seconds = 2\n\
                 [alerts.rules.agent_silent]\nthreshold = 600\n";
    let mut shipper = Shipper::start_with_config(
        &tmp.path().join("shipper"),
        SHIPPER_ENV,
        &alerts_toml(&hook, &am, rules),
    )
    .await?;
    let agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        &settings(&db, &shipper),
        AGENT_ENV,
    )?;

    // An idle primary, then a steady workload: no alert, report after report.
    agent.metric("logferry_agent_source_at_head").await?;
    wait_for("the agent at the head", Duration::from_secs(60), || async {
        Ok((agent.metric("logferry_agent_source_at_head").await? == 1.0).then_some(()))
    })
    .await?;
    let writer = steady_writes(&db).await?;
    for _ in 0..25 {
        assert!(hook.bodies().is_empty(), "{:?}", hook.bodies());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The shipper is away longer than threshold and `for` together, and the webhook
    // fails when it is back: the firing reaches it once it answers, exactly once.
    shipper.kill9();
    wait_for(
        "the agent's exposure past 6 s",
        Duration::from_secs(60),
        || async {
            Ok((agent.metric("logferry_agent_rpo_exposure_seconds").await? > 6.0).then_some(()))
        },
    )
    .await?;
    hook.set_failing(true);
    shipper.restart().await?;
    wait_for(
        "the firing in the shipper's log",
        Duration::from_secs(60),
        || {
            let log = shipper.log_text();
            async move { Ok(log.contains("delivering an alert failed").then_some(())) }
        },
    )
    .await?;
    hook.set_failing(false);
    wait_sent(&hook, "rpo_exposure", "firing", 1, &shipper).await?;
    wait_sent(&hook, "rpo_exposure", "resolved", 1, &shipper).await?;

    writer.abort();
    wait_delivered(&shipper).await?;
    assert_sent_once(&hook, "rpo_exposure", &["firing", "resolved"]);
    check_bodies(&hook)?;
    assert!(
        !shipper.log_text().contains("answered 4"),
        "the Alertmanager refused a push:\n{}",
        shipper.log_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_fires_agent_silent_once_across_a_shipper_restart_and_resolves_when_back(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let hook = Webhook::start().await?;
    let am = Alertmanager::start(&tmp.path().join("am")).await?;
    let rules = "[alerts.rules.agent_silent]\nthreshold = 2\n\
                 [alerts.rules.rpo_exposure]\nthreshold = 600\n";
    let mut shipper = Shipper::start_with_config(
        &tmp.path().join("shipper"),
        SHIPPER_ENV,
        &alerts_toml(&hook, &am, rules),
    )
    .await?;
    let mut agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        &settings(&db, &shipper),
        AGENT_ENV,
    )?;
    let writer = steady_writes(&db).await?;
    wait_for("the agent heard", Duration::from_secs(60), || {
        let log = shipper.log_text();
        async move { Ok(log.contains("agent reporting").then_some(())) }
    })
    .await?;

    agent.kill9();
    wait_sent(&hook, "agent_silent", "firing", 1, &shipper).await?;
    let active = |alerts: Vec<serde_json::Value>| {
        alerts.into_iter().any(|a| {
            a["labels"]["alertname"] == "LogferryAgentSilent"
                && a["labels"]["stream"] == common::STREAM
                && a["status"]["state"] == "active"
        })
    };
    wait_for(
        "the alert active in the Alertmanager",
        Duration::from_secs(30),
        || async { Ok(active(am.alerts().await?).then_some(())) },
    )
    .await
    .with_context(|| shipper.log_text())?;
    // A restart of the shipper while it fires: no second firing.
    shipper.kill9();
    shipper.restart().await?;
    wait_for("the book restored", Duration::from_secs(30), || {
        let log = shipper.log_text();
        async move { Ok(log.contains("alerts restored from the store").then_some(())) }
    })
    .await?;
    // Past the start's grace the silence is judged again, from what the run before
    // heard: the alert still fires, and is not sent a second time.
    wait_for(
        "the silence judged again after the restart",
        Duration::from_secs(30),
        || async {
            let s = stream_status(&shipper).await?;
            let judged = s["agent_silent_seconds"].as_f64().is_some_and(|v| v > 2.0)
                && s["firing"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|r| r == "agent_silent"));
            Ok(judged.then_some(()))
        },
    )
    .await
    .with_context(|| shipper.log_text())?;
    // A second of evaluations (every 200 ms) past that, then nothing may be on its way.
    let judged_at = stream_status(&shipper).await?["agent_silent_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    wait_for(
        "a second more of evaluations",
        Duration::from_secs(30),
        || async {
            let s = stream_status(&shipper).await?;
            let later = s["agent_silent_seconds"].as_f64().unwrap_or(0.0) > judged_at + 1.0;
            Ok(later.then_some(()))
        },
    )
    .await?;
    wait_delivered(&shipper).await?;
    assert_sent_once(&hook, "agent_silent", &["firing"]);
    agent.restart()?;
    wait_sent(&hook, "agent_silent", "resolved", 1, &shipper).await?;
    wait_for(
        "the alert ended in the Alertmanager",
        Duration::from_secs(30),
        || async { Ok((!active(am.alerts().await?)).then_some(())) },
    )
    .await?;
    writer.abort();
    wait_delivered(&shipper).await?;
    assert_sent_once(&hook, "agent_silent", &["firing", "resolved"]);
    check_bodies(&hook)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_snapshot_replica_fires_replica_lag_and_resolves_when_it_applies_again(
) -> anyhow::Result<()> {
    use mysql_async::prelude::Queryable;
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let replica = MariaDb::start_replica(&db, 2).await?;
    let hook = Webhook::start().await?;
    let am = Alertmanager::start(&tmp.path().join("am")).await?;
    let rules = "[alerts.rules.snapshot_replica_lag]\nthreshold = 2\nfor_seconds = 0\n\
                 [alerts.rules.rpo_exposure]\nthreshold = 600\n";
    let shipper = Shipper::start_with_config(
        &tmp.path().join("shipper"),
        SHIPPER_ENV,
        &alerts_toml(&hook, &am, rules),
    )
    .await?;
    let mut s = settings(&db, &shipper);
    s.extra_toml = common::snapshot_section(&replica, None);
    let agent = Agent::start_with_env(&tmp.path().join("agent"), &s, AGENT_ENV)?;
    let writer = steady_writes(&db).await?;
    wait_for(
        "the replica's lag reported",
        Duration::from_secs(60),
        || async {
            Ok((agent.metrics().await?)
                .contains("logferry_agent_snapshot_replica_lag_seconds{")
                .then_some(()))
        },
    )
    .await?;
    assert!(hook.bodies().is_empty(), "{:?}", hook.bodies());

    replica
        .conn()
        .await?
        .query_drop("STOP SLAVE SQL_THREAD")
        .await?;
    wait_sent(&hook, "snapshot_replica_lag", "firing", 1, &shipper).await?;
    replica
        .conn()
        .await?
        .query_drop("START SLAVE SQL_THREAD")
        .await?;
    wait_sent(&hook, "snapshot_replica_lag", "resolved", 1, &shipper).await?;
    writer.abort();
    wait_delivered(&shipper).await?;
    assert_sent_once(&hook, "snapshot_replica_lag", &["firing"]);
    check_bodies(&hook)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_drills_on_schedule_and_the_drill_rule_fires_until_one_passes() -> anyhow::Result<()>
{
    use logferry_integration::process::RUN_WITHIN;
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 100).await?;
    let replica = MariaDb::start_replica(&db, 2).await?;
    let scratch = MariaDb::start(Options::without_binlog(20)).await?;
    let hook = Webhook::start().await?;
    let am = Alertmanager::start(&tmp.path().join("am")).await?;
    // Every minute; the drill rule fires on a drill that did not pass.
    let extra = format!(
        "{}\n[drill]\nschedule = \"* * * * *\"\nmysql_target = \"{}\"\nmysql_replica = \"{}\"\n{}",
        alerts_toml(&hook, &am, "[alerts.rules.rpo_exposure]\nthreshold = 600\n"),
        scratch.root_url(),
        replica.root_url(),
        logferry_integration::logferry::encryption_toml()?
    );
    let shipper =
        Shipper::start_with_config(&tmp.path().join("shipper"), SHIPPER_ENV, &extra).await?;
    let mut s = settings(&db, &shipper);
    s.extra_toml = common::snapshot_section(&replica, None);
    let agent = Agent::start_with_env(&tmp.path().join("agent"), &s, AGENT_ENV)?;
    common::wait_caught_up(&db, &shipper, &agent).await?;

    // No snapshot yet: the first scheduled drill proves nothing, and says so by alert.
    wait_sent(&hook, "drill", "firing", 1, &shipper).await?;
    assert!(
        shipper
            .log_text()
            .contains("scheduled restore drill did not pass"),
        "{}",
        shipper.log_text()
    );
    // With a snapshot, the next drill passes against the live replica: resolved, and
    // the time of the last successful drill is a metric.
    common::run_snapshot(&agent, "snapshot.log", RUN_WITHIN)?;
    wait_sent(&hook, "drill", "resolved", 1, &shipper).await?;
    let metrics = shipper.get("/metrics").await?;
    assert!(
        metrics.contains("logferry_shipper_last_drill_success_timestamp_seconds{stream=\"db1\"}"),
        "{metrics}"
    );
    let verdicts = std::fs::read_dir(shipper.store_dir.join("streams/db1/drills"))?.count();
    assert!(verdicts >= 2, "{verdicts} drill results stored");
    assert_sent_once(&hook, "drill", &["firing"]);
    check_bodies(&hook)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_primary_for_two_minutes_raises_nothing_and_is_never_exposed() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let hook = Webhook::start().await?;
    let am = Alertmanager::start(&tmp.path().join("am")).await?;
    // Strict rules: five seconds of exposure or silence would page.
    let rules = "[alerts.rules.rpo_exposure]\nthreshold = 5\nfor_seconds = 0\n\
                 [alerts.rules.agent_silent]\nthreshold = 5\n";
    let shipper = Shipper::start_with_config(
        &tmp.path().join("shipper"),
        SHIPPER_ENV,
        &alerts_toml(&hook, &am, rules),
    )
    .await?;
    let agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        &settings(&db, &shipper),
        AGENT_ENV,
    )?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    wait_for(
        "the stream idle and stored",
        Duration::from_secs(60),
        || async {
            let s = stream_status(&shipper).await?;
            Ok((s["rpo_exposure_seconds"] == 0.0 && s["health"] == "green").then_some(()))
        },
    )
    .await
    .with_context(|| agent.log_text())?;
    // Two minutes of reports every 200 ms and evaluations every 200 ms, read each second.
    let until = std::time::Instant::now() + Duration::from_secs(120);
    let mut reads = 0;
    while std::time::Instant::now() < until {
        let s = stream_status(&shipper).await?;
        assert_eq!(s["rpo_exposure_seconds"], 0.0, "{s}");
        assert_eq!(s["health"], "green", "{s}");
        assert!(hook.bodies().is_empty(), "{:?}", hook.bodies());
        reads += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(reads >= 100, "only {reads} readings in two minutes");
    // Nothing was ever queued: the book was never written.
    assert!(!shipper.store_dir.join("alerts/book.json").exists());
    Ok(())
}
