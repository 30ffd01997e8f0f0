//! What `logferry-shipper promote` did: the report it prints and stores beside the stream
//! (`streams/<s>/promotions/<ms>.json`), and the rule that a stream is promoted once per
//! stored end.

use logferry_common::keys::{promotion_key, promotions_prefix};
use logferry_common::StreamId;
use serde::{Deserialize, Serialize};

use crate::audit::{Audit, Entry};
use crate::error::{Result, ShipperError};
use crate::storage::Store;
use crate::watch::status::Before;
use crate::watch::HEARD_KEY;

/// What a promotion asks for.
#[derive(Debug)]
pub struct PromoteRequest<'a> {
    /// The stream whose database moves to the standby.
    pub stream: &'a StreamId,
    /// The standby's URL (`mysql://USER:PASSWORD@HOST:PORT`).
    pub standby: &'a str,
    /// The old primary's URL, to fence it when it still answers.
    pub old_primary: Option<&'a str>,
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// The audit log each step is also recorded in (`--audit-log`).
    pub audit: Option<Audit>,
    /// A stop the operator asks for (Ctrl-C): a step that feeds a standby ends cleanly.
    pub interrupt: crate::interrupt::Interrupt,
}

/// One step of a promotion, as the report and the audit log keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What the step does.
    pub step: String,
    /// When it began, ms since the epoch.
    pub started_ms: i64,
    /// `ok`, or why it failed.
    pub result: String,
}

/// The steps of one promotion as they happen: each is logged when it begins, and kept with
/// how it ended for the report and the audit log (an entry per step, `status` 200 or 500),
/// so what a promotion did to the servers can be traced afterwards.
pub struct Steps {
    request: String,
    stream: String,
    audit: Option<Audit>,
    done: Vec<Step>,
    current: Option<Step>,
}

impl Steps {
    /// The steps of `req` (none begun yet).
    pub fn new(req: &PromoteRequest<'_>) -> Steps {
        let standby = req.standby.rsplit('@').next().unwrap_or_default();
        Steps {
            request: format!("promote --standby {standby}"),
            stream: req.stream.to_string(),
            audit: req.audit.clone(),
            done: Vec::new(),
            current: None,
        }
    }

    /// Ends the step under way as done and begins `step`.
    pub fn begin(&mut self, step: &str) {
        self.end("ok");
        tracing::info!(stream = %self.stream, "promote: {step}");
        self.current = Some(Step {
            step: step.to_owned(),
            started_ms: crate::time_arg::now_ms(),
            result: String::new(),
        });
    }

    /// The step under way (empty before the first).
    pub fn current(&self) -> &str {
        self.current.as_ref().map_or("", |s| s.step.as_str())
    }

    /// Ends the step under way, as failed with `error` when given, and waits (on a
    /// blocking thread, at most 5 s) until the audit log holds every step; every step, in
    /// order.
    pub async fn finish(mut self, error: Option<&str>) -> Vec<Step> {
        self.end(error.unwrap_or("ok"));
        if let Some(audit) = self.audit.take() {
            let written =
                tokio::task::spawn_blocking(move || audit.flush(std::time::Duration::from_secs(5)))
                    .await;
            if !matches!(written, Ok(true)) {
                tracing::warn!("the promotion's audit entries may not all be written");
            }
        }
        self.done
    }

    fn end(&mut self, result: &str) {
        let Some(mut step) = self.current.take() else {
            return;
        };
        step.result = result.to_owned();
        if let Some(audit) = &self.audit {
            let ok = result == "ok";
            audit.record(&Entry {
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                peer: None,
                token: None,
                request: format!("{}: {}", self.request, step.step),
                stream: Some(self.stream.clone()),
                object: None,
                status: if ok { 200 } else { 500 },
                error: (!ok).then(|| result.to_owned()),
            });
        }
        self.done.push(step);
    }
}

/// How a promotion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The standby is writable and holds everything stored.
    Promoted,
    /// Nothing was changed (`--dry-run`).
    DryRun,
    /// A step failed; the standby was left read-only.
    Failed,
}

/// The report of one promotion, printed and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionReport {
    /// The stream.
    pub stream: String,
    /// The standby (`host:port`).
    pub standby: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The step it stopped at, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was done to the old primary.
    pub fence: String,
    /// The stored chain's end: its GTID state (MySQL), its replication id and offset
    /// (Redis).
    #[serde(alias = "stored_gtid")]
    pub stored_end: String,
    /// What the standby held before: its GTID state, or replication id and offset.
    #[serde(alias = "gtid_before")]
    pub standby_before: String,
    /// What it held after (the same as before on a dry run).
    #[serde(alias = "gtid_after")]
    pub standby_after: String,
    /// Transactions the standby's relay log held and it applied before the store's
    /// (MySQL; `None` for Redis, which has no relay log).
    #[serde(default)]
    pub relay_transactions: Option<u64>,
    /// Why the relay log could not be applied, when it held more and could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_note: Option<String>,
    /// Transactions applied from the store (on a dry run: to apply).
    pub applied_transactions: u64,
    /// Their events (Redis: commands).
    pub applied_events: u64,
    /// Commit time of the last stored transaction, ms since the epoch.
    pub last_stored_commit_ms: i64,
    /// Commit time of the last change the agent reported reading on the old primary, as
    /// the shipper last kept it; `None` when no report was kept.
    pub last_seen_commit_ms: Option<i64>,
    /// The data-loss window: how much later the last seen commit is than the last stored
    /// one (0 when everything seen is stored); `None` without a report.
    pub data_loss_ms: Option<i64>,
    /// When the promotion started, ms since the epoch.
    pub started_ms: i64,
    /// How long it took.
    pub elapsed_ms: u64,
    /// The steps taken, in order, with how each ended.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// What the operator should know of the promoted server and the stream after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl PromotionReport {
    /// The report as the command prints it.
    pub fn render(&self) -> String {
        let loss = match (self.data_loss_ms, self.last_seen_commit_ms) {
            (Some(ms), Some(_)) => format!(
                "{:.3} s (last commit the agent saw on the old primary vs. the last stored)",
                ms as f64 / 1000.0
            ),
            _ => "unknown (no agent report kept by the shipper)".into(),
        };
        let mut out = format!(
            "promote {}: {}\n  standby:          {}\n  old primary:      {}\n  stored end:       {}\n  standby before:   {}\n  standby after:    {}\n{}  applied:          {} transactions, {} events from the store\n  last stored:      {}\n  data-loss window: {loss}\n  elapsed:          {:.1} s\n",
            self.stream,
            match self.outcome {
                Outcome::Promoted => "PROMOTED",
                Outcome::DryRun => "DRY RUN (nothing changed)",
                Outcome::Failed => "FAILED (the standby is left read-only)",
            },
            self.standby,
            self.fence,
            self.stored_end,
            self.standby_before,
            self.standby_after,
            self.relay_transactions.map_or_else(String::new, |n| format!(
                "  relay log:        {n} transactions the standby had received, applied first\n"
            )),
            self.applied_transactions,
            self.applied_events,
            crate::listing::rfc3339(self.last_stored_commit_ms),
            self.elapsed_ms as f64 / 1000.0,
        );
        if let Some(note) = &self.relay_note {
            out.push_str(&format!("  relay log note:   {note}\n"));
        }
        for note in &self.notes {
            out.push_str(&format!("  note:             {note}\n"));
        }
        for s in &self.steps {
            out.push_str(&format!(
                "  step:             {} {}: {}\n",
                crate::listing::rfc3339(s.started_ms),
                s.step,
                s.result
            ));
        }
        if let (Some(step), Some(e)) = (&self.failed_at, &self.error) {
            out.push_str(&format!("  stopped at:       {step}: {e}\n"));
        }
        out
    }
}

/// Ends a promotion the way every kind ends one. Done: the report is stored and returned.
/// Failed (`done` is the error): the report is stored as failed at the step under way,
/// and the error names that step and, through `left` (asked only then), the state the
/// standby is left in.
///
/// # Errors
/// The failure, with the report; when a successful promotion's report cannot be stored.
pub async fn conclude(
    store: &Store,
    stream: &StreamId,
    mut report: PromotionReport,
    steps: Steps,
    done: Result<()>,
    left: impl AsyncFnOnce() -> String,
) -> Result<PromotionReport> {
    match done {
        Ok(()) => {
            report.steps = steps.finish(None).await;
            report.outcome = Outcome::Promoted;
            let key = save(store, stream, &report).await?;
            tracing::info!(%key, "promote: report stored");
            Ok(report)
        }
        Err(e) => {
            let step = steps.current().to_owned();
            report.steps = steps.finish(Some(&e.to_string())).await;
            report.outcome = Outcome::Failed;
            report.failed_at = Some(step.clone());
            report.error = Some(e.to_string());
            let left = left().await;
            tracing::warn!(step, error = %e, "promote failed; the standby {left}");
            if let Err(save) = save(store, stream, &report).await {
                tracing::warn!(error = %save, "the report of the failed promotion could not be stored");
            }
            Err(ShipperError::Restore(format!(
                "promote stopped at \"{step}\": {e}; the standby {left}\n{}",
                report.render()
            )))
        }
    }
}

/// Stores `report` beside its stream; returns its key.
///
/// # Errors
/// When the store refuses the write.
pub async fn save(store: &Store, stream: &StreamId, report: &PromotionReport) -> Result<String> {
    let key = promotion_key(stream, report.started_ms);
    let body = serde_json::to_vec_pretty(report)
        .map_err(|e| ShipperError::Internal(format!("promotion report: {e}")))?;
    store.put_new(&key, body.into()).await?;
    Ok(key)
}

/// Refuses a promotion when one already promoted a standby at the stored end `stored_end`
/// (nothing was stored since: the stream's database already moved).
///
/// # Errors
/// [`ShipperError::Restore`] naming the earlier promotion.
pub async fn refuse_repeat(store: &Store, stream: &StreamId, stored_end: &str) -> Result<()> {
    for obj in store.list(&promotions_prefix(stream)).await? {
        let Some(bytes) = store.get_if_any(&obj.key).await? else {
            continue;
        };
        let Ok(earlier) = serde_json::from_slice::<PromotionReport>(&bytes) else {
            tracing::warn!(key = %obj.key, "skipping a promotion report that does not parse");
            continue;
        };
        if earlier.outcome == Outcome::Promoted && earlier.stored_end == stored_end {
            return Err(ShipperError::Restore(format!(
                "stream {stream} was already promoted to {} at {} ({}), and nothing was stored since: \
                 its database already moved there. Point the agent at the promoted server; a new \
                 promote makes sense once the stream has gone on",
                earlier.standby,
                crate::listing::rfc3339(earlier.started_ms),
                obj.key
            )));
        }
    }
    Ok(())
}

/// The commit time of the last change the stream's agent reported reading, as the serving
/// shipper last kept it in the store.
///
/// # Errors
/// When the store cannot be read.
pub async fn last_seen_commit(store: &Store, stream: &StreamId) -> Result<Option<i64>> {
    let Some(bytes) = store.get_if_any(HEARD_KEY).await? else {
        return Ok(None);
    };
    let heard: std::collections::BTreeMap<String, Before> =
        serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(heard.get(stream.as_str()).and_then(|b| b.read_commit_ms))
}
