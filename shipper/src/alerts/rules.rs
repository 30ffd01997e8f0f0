//! What each rule reads of a stream's status: its value, whether its condition holds, and
//! when it began to hold when the value itself tells (an age grows by one second a second,
//! so an exposure of 90 s above a threshold of 60 s has held for 30 s; a shipper started
//! after an outage fires at once instead of waiting out `for` again).

use logferry_config::alerts::{Rule, RuleName};

use crate::watch::status::StreamStatus;

const DAY_MS: f64 = 86_400_000.0;
const HOUR_MS: f64 = 3_600_000.0;

/// A rule's reading of one stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The value, in the rule's unit.
    pub value: f64,
    /// Whether the rule's condition holds.
    pub holds: bool,
    /// When the condition began to hold, when the value tells (ms since the epoch).
    pub since_ms: Option<i64>,
}

/// An age-like value (`value` in units of `unit_ms`, growing with time) above `threshold`.
fn age(value: f64, threshold: f64, unit_ms: f64, now_ms: i64) -> Reading {
    let holds = value > threshold;
    Reading {
        value,
        holds,
        since_ms: holds.then(|| now_ms - ((value - threshold) * unit_ms) as i64),
    }
}

/// The reading of rule `name` (set as `rule`) of stream `s` at `now_ms`; `None` when the
/// stream gives the rule nothing to judge (no report yet, no snapshot, no drill).
pub fn read(name: RuleName, rule: &Rule, s: &StreamStatus, now_ms: i64) -> Option<Reading> {
    let level = |value: f64| Reading {
        value,
        holds: value > rule.threshold,
        since_ms: None,
    };
    match name {
        RuleName::RpoExposure => s
            .rpo_exposure_seconds
            .map(|v| age(v, rule.threshold, 1000.0, now_ms)),
        RuleName::AgentSilent => s
            .agent_silent_seconds
            .map(|v| age(v, rule.threshold, 1000.0, now_ms)),
        RuleName::SnapshotAge => s.last_snapshot_ms.map(|ms| {
            age(
                (now_ms - ms) as f64 / DAY_MS,
                rule.threshold,
                DAY_MS,
                now_ms,
            )
        }),
        RuleName::ChainGap => Some(level(s.chain_breaks as f64)),
        RuleName::SnapshotReplicaLag => s.snapshot_replica_lag_seconds.map(level),
        // The newest drill failed, or the newest that passed is too old.
        RuleName::Drill => s.last_drill.as_ref().map(|d| {
            let since_passed = d
                .last_passed_ms
                .map_or(f64::MAX, |ms| (now_ms - ms) as f64 / DAY_MS);
            if d.passed {
                age(since_passed, rule.threshold, DAY_MS, now_ms)
            } else {
                Reading {
                    value: since_passed.min((now_ms - d.finished_ms) as f64 / DAY_MS),
                    holds: true,
                    since_ms: Some(d.finished_ms),
                }
            }
        }),
        // Holds while the newest fork is younger than the threshold.
        RuleName::Fork => s.last_fork_ms.map(|ms| {
            let hours = (now_ms - ms).max(0) as f64 / HOUR_MS;
            Reading {
                value: hours,
                holds: hours < rule.threshold,
                since_ms: Some(ms),
            }
        }),
    }
}

/// The alert's name as Prometheus rules would call it (the shipped rules file uses the
/// same names), for receivers that route on `alertname`.
pub fn alertname(rule: RuleName) -> &'static str {
    match rule {
        RuleName::RpoExposure => "LogferryRpoExposureHigh",
        RuleName::AgentSilent => "LogferryAgentSilent",
        RuleName::SnapshotAge => "LogferrySnapshotOld",
        RuleName::ChainGap => "LogferryChainBroken",
        RuleName::SnapshotReplicaLag => "LogferrySnapshotReplicaLag",
        RuleName::Drill => "LogferryRestoreDrill",
        RuleName::Fork => "LogferryStreamForked",
    }
}

/// The unit of rule `rule`'s values, for messages.
pub fn unit(rule: RuleName) -> &'static str {
    match rule {
        RuleName::SnapshotAge | RuleName::Drill => "days",
        RuleName::ChainGap => "breaks",
        RuleName::Fork => "h",
        RuleName::RpoExposure | RuleName::AgentSilent | RuleName::SnapshotReplicaLag => "s",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::status::status;
    use crate::watch::status::tests::LONG_UP;
    use crate::watch::stored::StoredFacts;

    #[test]
    fn an_age_above_its_threshold_began_when_it_crossed_it() {
        let mut s = status(
            "s",
            0,
            60.0,
            &StoredFacts::default(),
            None,
            Default::default(),
            LONG_UP,
        );
        s.rpo_exposure_seconds = Some(90.0);
        let rule = Rule {
            threshold: 60.0,
            for_seconds: 10,
            disabled: false,
        };
        let r = read(RuleName::RpoExposure, &rule, &s, 1_000_000).unwrap();
        assert!(r.holds);
        assert_eq!(r.since_ms, Some(970_000));
        s.rpo_exposure_seconds = Some(0.0);
        assert!(
            !read(RuleName::RpoExposure, &rule, &s, 1_000_000)
                .unwrap()
                .holds
        );
        assert_eq!(read(RuleName::SnapshotAge, &rule, &s, 1_000_000), None);
    }
}
