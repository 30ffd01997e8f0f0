//! What `logferry-shipper promote` did: the report it prints and stores beside the stream
//! (`streams/<s>/promotions/<ms>.json`), and the rule that a stream is promoted once per
//! stored end.

use logferry_common::keys::{promotion_key, promotions_prefix};
use logferry_common::StreamId;
use serde::{Deserialize, Serialize};

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
    /// The stored chain's end: its GTID state.
    pub stored_gtid: String,
    /// The standby's GTID state before.
    pub gtid_before: String,
    /// The standby's GTID state after (the same as before on a dry run).
    pub gtid_after: String,
    /// Transactions the standby's relay log held and it applied before the store's.
    #[serde(default)]
    pub relay_transactions: u64,
    /// Why the relay log could not be applied, when it held more and could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_note: Option<String>,
    /// Transactions applied from the store (on a dry run: to apply).
    pub applied_transactions: u64,
    /// Their events.
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
            "promote {}: {}\n  standby:          {}\n  old primary:      {}\n  stored GTID:      {}\n  GTID before:      {}\n  GTID after:       {}\n  relay log:        {} transactions the standby had received, applied first\n  applied:          {} transactions, {} events from the store\n  last stored:      {}\n  data-loss window: {loss}\n  elapsed:          {:.1} s\n",
            self.stream,
            match self.outcome {
                Outcome::Promoted => "PROMOTED",
                Outcome::DryRun => "DRY RUN (nothing changed)",
                Outcome::Failed => "FAILED (the standby is left read-only)",
            },
            self.standby,
            self.fence,
            self.stored_gtid,
            self.gtid_before,
            self.gtid_after,
            self.relay_transactions,
            self.applied_transactions,
            self.applied_events,
            crate::listing::rfc3339(self.last_stored_commit_ms),
            self.elapsed_ms as f64 / 1000.0,
        );
        if let Some(note) = &self.relay_note {
            out.push_str(&format!("  relay log note:   {note}\n"));
        }
        if let (Some(step), Some(e)) = (&self.failed_at, &self.error) {
            out.push_str(&format!("  stopped at:       {step}: {e}\n"));
        }
        out
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

/// Refuses a promotion when one already promoted a standby at the stored end `stored_gtid`
/// (nothing was stored since: the stream's database already moved).
///
/// # Errors
/// [`ShipperError::Restore`] naming the earlier promotion.
pub async fn refuse_repeat(store: &Store, stream: &StreamId, stored_gtid: &str) -> Result<()> {
    for obj in store.list(&promotions_prefix(stream)).await? {
        let Some(bytes) = store.get_if_any(&obj.key).await? else {
            continue;
        };
        let Ok(earlier) = serde_json::from_slice::<PromotionReport>(&bytes) else {
            tracing::warn!(key = %obj.key, "skipping a promotion report that does not parse");
            continue;
        };
        if earlier.outcome == Outcome::Promoted && earlier.stored_gtid == stored_gtid {
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
