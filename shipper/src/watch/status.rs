//! One stream's status, computed from the agent's last report and what is stored: the
//! numbers `status`, `GET /v1/status`, `/metrics` and the page all show, in one place.

use logferry_common::wire::AgentReport;
use serde::{Deserialize, Serialize};

use super::stored::StoredFacts;
use crate::listing::rfc3339;

/// The longest report interval the shipper believes: an agent claiming ten minutes
/// between reports must not keep a dead host's stream at exposure 0 for half an hour.
const MAX_TRUSTED_INTERVAL_MS: u64 = 60_000;

/// An agent's report with the shipper's time of receipt (the agent's clock may be off).
#[derive(Debug, Clone)]
pub struct Heard {
    /// When the shipper received it, ms since the epoch.
    pub received_ms: i64,
    /// When the shipper last received a report of this stream that said everything was
    /// read and stored (this one or an earlier one): the exposure of the first write
    /// after an idle hour counts from there, not from the hour-old last commit.
    pub all_stored_ms: Option<i64>,
    /// What the agent said.
    pub report: AgentReport,
}

impl Heard {
    /// Whether the report still speaks for the agent at `now_ms`: newer than three of
    /// its intervals (at most a minute) and a second.
    pub fn fresh(&self, now_ms: i64) -> bool {
        let interval = self.report.interval_ms.min(MAX_TRUSTED_INTERVAL_MS);
        now_ms - self.received_ms <= (interval * 3) as i64 + 1000
    }

    /// Whether, when the agent sent it, everything the source had was read and stored.
    pub fn all_stored(report: &AgentReport) -> bool {
        report.at_head && report.oldest_unstored_read_ms.is_none()
    }
}

/// What the shipper knew of a stream's agent before its last start (kept in the store),
/// and whether it is still waiting for the first reports since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Before {
    /// When the agent was last heard, ms since the epoch.
    pub heard_ms: Option<i64>,
    /// When it last said everything was stored.
    pub all_stored_ms: Option<i64>,
    /// The commit time of the last change it said it read (what `promote` compares the
    /// last stored commit with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_commit_ms: Option<i64>,
}

/// The shipper's own start, for streams not heard since.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// When the shipper started, ms since the epoch.
    pub started_ms: i64,
    /// Until when a stream not yet heard is not judged (its agent has not had the time to
    /// report), ms since the epoch.
    pub grace_until_ms: i64,
}

/// Green, amber or red, as the page colours a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Within the RPO target, agent heard, chain whole.
    Green,
    /// Exposed more than half the target, or the agent's spool disk is full.
    Amber,
    /// Exposed beyond the target, the agent silent, or the chain broken.
    Red,
}

/// The last restore drill of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillSummary {
    /// When it finished, ms since the epoch.
    pub finished_ms: i64,
    /// Whether it proved the backup restorable.
    pub passed: bool,
    /// When the newest drill that passed finished, if one did.
    pub last_passed_ms: Option<i64>,
}

/// Everything known of one stream at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// The stream.
    pub stream: String,
    /// Its source kind (`mysql`, `redis`), once a segment is stored.
    pub kind: Option<String>,
    /// The stream's colour.
    pub health: Health,
    /// Why it is not green, one line each.
    pub problems: Vec<String>,
    /// How much of the source's recent history would be lost if its host died now (s):
    /// now minus the commit time up to which everything is stored; 0 while the agent
    /// reports the source idle and all of it stored. `None` with nothing stored or heard.
    pub rpo_exposure_seconds: Option<f64>,
    /// How far the agent's reading is behind the source (s), from a fresh report.
    pub source_lag_seconds: Option<f64>,
    /// The same in bytes of the source's log, when the agent could tell.
    pub source_lag_bytes: Option<u64>,
    /// Bytes waiting in the agent's spool, from a fresh report.
    pub spool_bytes: Option<u64>,
    /// Age of the oldest change read and not yet stored, from a fresh report (s).
    pub oldest_unstored_age_seconds: Option<f64>,
    /// Which agent reported last.
    pub agent: Option<String>,
    /// Seconds since the agent was last heard from.
    pub agent_silent_seconds: Option<f64>,
    /// Lag of the paused snapshot replica (s), when the agent reported one.
    pub snapshot_replica_lag_seconds: Option<f64>,
    /// Commit time of the newest stored change, ms since the epoch.
    pub last_stored_commit_ms: Option<i64>,
    /// Places where the stored chain is broken.
    pub chain_breaks: usize,
    /// Snapshots stored.
    pub snapshots: usize,
    /// When the newest snapshot was taken, ms since the epoch.
    pub last_snapshot_ms: Option<i64>,
    /// Restorable from (the oldest snapshot, ms since the epoch) ...
    pub restorable_from_ms: Option<i64>,
    /// ... to (the newest stored commit), when both exist and the chain is whole.
    pub restorable_to_ms: Option<i64>,
    /// The last restore drill.
    pub last_drill: Option<DrillSummary>,
    /// Forks recorded (a standby that missed stored transactions continued the stream).
    pub forks: usize,
    /// When the newest fork was recorded, ms since the epoch.
    pub last_fork_ms: Option<i64>,
    /// The rules whose alerts fire on this stream.
    #[serde(default)]
    pub firing: Vec<String>,
}

impl StreamStatus {
    /// The restorable range as text, for the table and the page.
    pub fn restorable_text(&self) -> String {
        match (self.restorable_from_ms, self.restorable_to_ms) {
            (Some(from), Some(to)) => format!("{} .. {}", rfc3339(from), rfc3339(to)),
            _ => "-".into(),
        }
    }
}

/// The RPO exposure at `now_ms`: see [`StreamStatus::rpo_exposure_seconds`]. A silent
/// agent's stream counts on from the last moment everything was known stored (a report
/// that said so, this run's or, kept in the store, the run's before; or the newest stored
/// commit), never freezes. A stream not heard since the shipper started is not judged
/// during the start's grace (`None`).
pub fn exposure_seconds(
    now_ms: i64,
    last_stored_ms: Option<i64>,
    heard: Option<&Heard>,
    before: Before,
    start: Start,
) -> Option<f64> {
    let reported_safe = match heard {
        Some(h) if h.fresh(now_ms) && Heard::all_stored(&h.report) => return Some(0.0),
        Some(h) => h.all_stored_ms,
        None if now_ms < start.grace_until_ms => return None,
        None => before.all_stored_ms,
    };
    let safe = last_stored_ms.max(reported_safe)?;
    Some((now_ms - safe).max(0) as f64 / 1000.0)
}

/// Seconds since the stream's agent was last heard: from this run's last report, else the
/// run's before, else the shipper's start; `None` during the start's grace.
fn silence_seconds(
    now_ms: i64,
    heard: Option<&Heard>,
    before: Before,
    start: Start,
) -> Option<f64> {
    let since = match heard {
        Some(h) => h.received_ms,
        None if now_ms < start.grace_until_ms => return None,
        None => before.heard_ms.unwrap_or(start.started_ms),
    };
    Some((now_ms - since).max(0) as f64 / 1000.0)
}

/// The status of `stream` at `now_ms`, judged against `rpo_target_seconds`.
pub fn status(
    stream: &str,
    now_ms: i64,
    rpo_target_seconds: f64,
    stored: &StoredFacts,
    heard: Option<&Heard>,
    before: Before,
    start: Start,
) -> StreamStatus {
    let fresh = heard.filter(|h| h.fresh(now_ms)).map(|h| &h.report);
    let exposure = exposure_seconds(now_ms, stored.last_commit_ms, heard, before, start);
    let silence = silence_seconds(now_ms, heard, before, start);
    let mut problems = Vec::new();
    let mut health = Health::Green;
    let mut worse = |to: Health, why: String, problems: &mut Vec<String>| {
        health = health.max(to);
        problems.push(why);
    };
    match heard {
        None if silence.is_none() => worse(
            Health::Amber,
            "waiting for the agent's first report since the shipper started".into(),
            &mut problems,
        ),
        None => worse(
            Health::Red,
            format!(
                "no agent has reported on this stream for {:.0} s",
                silence.unwrap_or(0.0)
            ),
            &mut problems,
        ),
        Some(h) if !h.fresh(now_ms) => worse(
            Health::Red,
            format!(
                "the agent {} has been silent for {:.0} s",
                h.report.agent,
                (now_ms - h.received_ms) as f64 / 1000.0
            ),
            &mut problems,
        ),
        Some(_) => {}
    }
    if let Some(e) = exposure {
        if e > rpo_target_seconds {
            worse(Health::Red, format!("RPO exposure {e:.1} s is above the target {rpo_target_seconds} s (watch.rpo_target_seconds)"), &mut problems);
        } else if e > rpo_target_seconds / 2.0 {
            worse(
                Health::Amber,
                format!("RPO exposure {e:.1} s is above half the target {rpo_target_seconds} s"),
                &mut problems,
            );
        }
    }
    if stored.chain_breaks > 0 {
        worse(
            Health::Red,
            format!(
                "the stored chain is broken in {} place(s); `verify` shows where",
                stored.chain_breaks
            ),
            &mut problems,
        );
    }
    if fresh.is_some_and(|r| r.spool_disk_full) {
        worse(
            Health::Amber,
            "the agent's spool disk is full: reading the source waits".into(),
            &mut problems,
        );
    }
    if let Some(d) = stored.last_drill.as_ref().filter(|d| !d.passed) {
        worse(
            Health::Red,
            format!(
                "the last restore drill ({}) did not pass",
                rfc3339(d.finished_ms)
            ),
            &mut problems,
        );
    }
    if let Some(at) = stored.fork_times.last() {
        problems.push(format!(
            "the stream forked at {} (a standby that missed stored transactions was promoted): `ls` shows where, `export --branch` writes what only the old server had",
            rfc3339(*at)
        ));
    }
    let whole = stored.chain_breaks == 0;
    StreamStatus {
        stream: stream.to_owned(),
        kind: stored.kind.clone(),
        health,
        problems,
        rpo_exposure_seconds: exposure,
        source_lag_seconds: fresh.map(|r| r.lag_seconds),
        source_lag_bytes: fresh.and_then(|r| r.lag_bytes),
        spool_bytes: fresh.map(|r| r.spool_bytes),
        oldest_unstored_age_seconds: fresh
            .and_then(|r| r.oldest_unstored_read_ms)
            .map(|ms| (now_ms - ms).max(0) as f64 / 1000.0),
        agent: heard.map(|h| h.report.agent.clone()),
        agent_silent_seconds: silence,
        snapshot_replica_lag_seconds: fresh.and_then(|r| r.snapshot_replica_lag_seconds),
        last_stored_commit_ms: stored.last_commit_ms,
        chain_breaks: stored.chain_breaks,
        snapshots: stored.snapshot_times.len(),
        last_snapshot_ms: stored.snapshot_times.last().copied(),
        restorable_from_ms: stored
            .snapshot_times
            .first()
            .copied()
            .filter(|_| whole && stored.last_commit_ms.is_some()),
        restorable_to_ms: stored
            .last_commit_ms
            .filter(|_| whole && !stored.snapshot_times.is_empty()),
        last_drill: stored.last_drill.clone(),
        forks: stored.fork_times.len(),
        last_fork_ms: stored.fork_times.last().copied(),
        firing: Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A shipper started long ago, its grace over.
    pub(crate) const LONG_UP: Start = Start {
        started_ms: 0,
        grace_until_ms: 0,
    };

    pub(crate) fn heard(received_ms: i64, at_head: bool, oldest: Option<i64>) -> Heard {
        let report = AgentReport {
            agent: "db1/7".into(),
            version: "0".into(),
            interval_ms: 1000,
            sent_ms: received_ms,
            at_head,
            head: None,
            read: None,
            read_commit_ms: None,
            lag_seconds: 0.0,
            lag_bytes: None,
            spool_bytes: 0,
            spool_segments: 0,
            oldest_unstored_read_ms: oldest,
            spool_disk_full: false,
            snapshot_replica_lag_seconds: None,
        };
        Heard {
            received_ms,
            all_stored_ms: Heard::all_stored(&report).then_some(received_ms),
            report,
        }
    }

    fn exposure(now: i64, stored: Option<i64>, h: Option<&Heard>) -> Option<f64> {
        exposure_seconds(now, stored, h, Before::default(), LONG_UP)
    }

    #[test]
    fn an_idle_source_all_stored_is_not_exposed_while_its_agent_reports() {
        let h = heard(100_000, true, None);
        assert_eq!(exposure(101_000, Some(10_000), Some(&h)), Some(0.0));
    }

    #[test]
    fn a_busy_source_is_exposed_since_the_newest_stored_commit() {
        let h = heard(100_000, false, Some(99_500));
        assert_eq!(exposure(100_000, Some(99_000), Some(&h)), Some(1.0));
    }

    #[test]
    fn the_first_write_after_an_idle_hour_counts_from_the_last_all_stored_report() {
        // Idle for an hour, all stored; then a write not yet stored.
        let mut h = heard(3_600_000, false, Some(3_600_000));
        h.all_stored_ms = Some(3_599_000);
        assert_eq!(exposure(3_600_500, Some(0), Some(&h)), Some(1.5));
    }

    #[test]
    fn a_silent_agent_counts_on_from_its_last_report_and_never_freezes() {
        let h = heard(100_000, true, None);
        let at = |now| exposure(now, Some(10_000), Some(&h)).unwrap();
        // Fresh for three intervals and a second, then counts from the report.
        assert_eq!(at(104_000), 0.0);
        assert_eq!(at(104_001), 4.001);
        assert!(at(200_000) > at(150_000));
        // A silent agent that last said it was behind counts from the stored data.
        let behind = heard(100_000, false, Some(99_000));
        assert_eq!(exposure(110_000, Some(90_000), Some(&behind)), Some(20.0));
    }

    #[test]
    fn an_agent_cannot_stretch_its_freshness_beyond_a_minute_between_reports() {
        let mut h = heard(100_000, true, None);
        h.report.interval_ms = 600_000;
        assert!(h.fresh(281_000));
        assert!(!h.fresh(281_001));
    }

    #[test]
    fn after_a_restart_a_stream_is_not_judged_in_the_grace_then_counts_from_before() {
        let start = Start {
            started_ms: 1_000_000,
            grace_until_ms: 1_030_000,
        };
        let before = Before {
            heard_ms: Some(900_000),
            all_stored_ms: Some(900_000),
            read_commit_ms: None,
        };
        assert_eq!(
            exposure_seconds(1_010_000, Some(0), None, before, start),
            None
        );
        assert_eq!(silence_seconds(1_010_000, None, before, start), None);
        assert_eq!(
            exposure_seconds(1_040_000, Some(0), None, before, start),
            Some(140.0)
        );
        assert_eq!(silence_seconds(1_040_000, None, before, start), Some(140.0));
        // Never heard at all: silent since the shipper's start.
        assert_eq!(
            silence_seconds(1_040_000, None, Before::default(), start),
            Some(40.0)
        );
    }

    #[test]
    fn nothing_stored_or_heard_is_unknown_not_zero() {
        assert_eq!(exposure(1000, None, None), None);
    }

    #[test]
    fn health_says_why_it_is_not_green() {
        let stored = StoredFacts {
            last_commit_ms: Some(10_000),
            snapshot_times: vec![5_000],
            ..Default::default()
        };
        let judge = |now, s: &StoredFacts, h: Option<&Heard>| {
            status("s", now, 60.0, s, h, Before::default(), LONG_UP)
        };
        let ok = judge(101_000, &stored, Some(&heard(100_000, true, None)));
        assert_eq!(ok.health, Health::Green, "{:?}", ok.problems);
        assert_eq!(ok.restorable_from_ms, Some(5_000));
        let silent = judge(200_000, &stored, Some(&heard(100_000, true, None)));
        assert_eq!(silent.health, Health::Red);
        let has = |s: &StreamStatus, text: &str| s.problems.iter().any(|p| p.contains(text));
        assert!(has(&silent, "silent for 100 s"), "{:?}", silent.problems);
        assert!(has(&silent, "above the target"), "{:?}", silent.problems);
        let broken = StoredFacts {
            chain_breaks: 1,
            ..stored.clone()
        };
        let b = judge(101_000, &broken, Some(&heard(100_000, true, None)));
        assert_eq!(b.health, Health::Red);
        assert_eq!(b.restorable_from_ms, None);
        let never = judge(101_000, &stored, None);
        assert_eq!(never.health, Health::Red);
        assert!(has(&never, "no agent has reported"), "{:?}", never.problems);
    }
}
