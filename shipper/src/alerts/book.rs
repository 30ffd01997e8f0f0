//! The alert book: every alert pending or firing, and the notifications not yet delivered
//! to each receiver. It is the whole state of alerting, kept in the store after every
//! change, so a restarted shipper neither sends a second "firing" nor forgets a
//! "resolved".

use std::collections::BTreeMap;

use logferry_config::alerts::{Rule, RuleName};
use serde::{Deserialize, Serialize};

use super::rules::Reading;

/// Whether an alert waits out its `for` or fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The condition holds, not yet for `for_seconds`.
    Pending,
    /// Sent as firing.
    Firing,
}

/// One alert of one rule on one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The stream.
    pub stream: String,
    /// The rule.
    pub rule: RuleName,
    /// Pending or firing.
    pub phase: Phase,
    /// When the condition began to hold, ms since the epoch.
    pub since_ms: i64,
    /// The latest value read.
    pub value: f64,
    /// The threshold it is above.
    pub threshold: f64,
    /// When it was last sent as firing.
    pub sent_ms: Option<i64>,
}

/// Firing or resolved, as receivers are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The condition holds.
    Firing,
    /// It held and no longer does.
    Resolved,
}

/// One message about one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The stream.
    pub stream: String,
    /// The rule.
    pub rule: RuleName,
    /// Firing or resolved.
    pub state: State,
    /// The value read (at resolution: the last one above the threshold).
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// When the condition began to hold, ms since the epoch.
    pub since_ms: i64,
    /// When this message was made, ms since the epoch.
    pub at_ms: i64,
}

/// A notification waiting for one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The receiver's id ([`super::deliver::receiver_id`]).
    pub receiver: String,
    /// What to send.
    pub notification: Notification,
}

/// The whole state of alerting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// Pending and firing alerts by `stream/rule`.
    pub alerts: BTreeMap<String, Alert>,
    /// Notifications not yet delivered, oldest first.
    pub outbox: Vec<Outgoing>,
}

impl Book {
    /// Moves the alert of `rule_name` on `stream` on by `reading` at `now_ms`; the
    /// notification to send, if any. A firing alert is sent again once `repeat_ms` passed
    /// since it was last. With no reading (nothing to judge: no report since a restart)
    /// an alert stays as it is; with no rule (disabled, or the stream gone) it resolves.
    pub fn step(
        &mut self,
        stream: &str,
        rule_name: RuleName,
        rule: Option<&Rule>,
        reading: Option<Reading>,
        now_ms: i64,
        repeat_ms: i64,
    ) -> Option<Notification> {
        let key = format!("{stream}/{rule_name}");
        if rule.is_some() && reading.is_none() {
            return None;
        }
        let holding = rule.zip(reading.filter(|r| r.holds));
        let Some((rule, reading)) = holding else {
            let gone = self.alerts.remove(&key)?;
            return (gone.phase == Phase::Firing).then_some(Notification {
                stream: gone.stream,
                rule: gone.rule,
                state: State::Resolved,
                value: gone.value,
                threshold: gone.threshold,
                since_ms: gone.since_ms,
                at_ms: now_ms,
            });
        };
        let alert = self.alerts.entry(key).or_insert_with(|| Alert {
            stream: stream.to_owned(),
            rule: rule_name,
            phase: Phase::Pending,
            since_ms: reading.since_ms.unwrap_or(now_ms).min(now_ms),
            value: reading.value,
            threshold: rule.threshold,
            sent_ms: None,
        });
        alert.value = reading.value;
        alert.threshold = rule.threshold;
        let held_ms = now_ms - alert.since_ms;
        let due = match (alert.phase, alert.sent_ms) {
            (Phase::Pending, _) => held_ms >= (rule.for_seconds as i64).saturating_mul(1000),
            (Phase::Firing, Some(sent)) => now_ms - sent >= repeat_ms,
            (Phase::Firing, None) => true,
        };
        if !due {
            return None;
        }
        alert.phase = Phase::Firing;
        alert.sent_ms = Some(now_ms);
        Some(Notification {
            stream: alert.stream.clone(),
            rule: alert.rule,
            state: State::Firing,
            value: alert.value,
            threshold: alert.threshold,
            since_ms: alert.since_ms,
            at_ms: now_ms,
        })
    }

    /// Whether `self` and `other` differ only in values read: the book is stored when its
    /// state changes, not at every evaluation of a firing alert.
    pub fn same_state(&self, other: &Book) -> bool {
        self.outbox == other.outbox
            && self.alerts.len() == other.alerts.len()
            && self
                .alerts
                .iter()
                .zip(&other.alerts)
                .all(|((ka, a), (kb, b))| {
                    ka == kb
                        && a.phase == b.phase
                        && a.since_ms == b.since_ms
                        && a.sent_ms == b.sent_ms
                        && a.threshold == b.threshold
                })
    }

    /// The firing alerts.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().filter(|a| a.phase == Phase::Firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        threshold: 60.0,
        for_seconds: 10,
        disabled: false,
    };

    fn holds(value: f64) -> Option<Reading> {
        Some(Reading {
            value,
            holds: value > 60.0,
            since_ms: None,
        })
    }

    #[test]
    fn fires_after_for_once_repeats_and_resolves_once() {
        let mut b = Book::default();
        let mut step = |v: f64, now: i64| {
            b.step(
                "db1",
                RuleName::RpoExposure,
                Some(&RULE),
                holds(v),
                now,
                60_000,
            )
        };
        assert_eq!(step(70.0, 0), None, "pending");
        assert_eq!(step(70.0, 9_999), None, "still within for");
        let fired = step(71.0, 10_000).unwrap();
        assert_eq!(
            (fired.state, fired.since_ms, fired.value),
            (State::Firing, 0, 71.0)
        );
        assert_eq!(step(72.0, 20_000), None, "sent once");
        assert_eq!(step(73.0, 70_000).unwrap().state, State::Firing, "repeat");
        let resolved = step(0.0, 71_000).unwrap();
        assert_eq!((resolved.state, resolved.value), (State::Resolved, 73.0));
        assert_eq!(step(0.0, 72_000), None, "resolved once");
    }

    #[test]
    fn an_alert_with_nothing_to_judge_stays_and_one_without_its_rule_resolves() {
        let mut b = Book::default();
        let fire = Some(Reading {
            value: 90.0,
            holds: true,
            since_ms: Some(-30_000),
        });
        assert!(b
            .step("s", RuleName::RpoExposure, Some(&RULE), fire, 0, 60_000)
            .is_some());
        assert_eq!(
            b.step("s", RuleName::RpoExposure, Some(&RULE), None, 1_000, 60_000),
            None
        );
        assert_eq!(b.firing().count(), 1);
        assert_eq!(
            b.step("s", RuleName::RpoExposure, None, None, 2_000, 60_000)
                .unwrap()
                .state,
            State::Resolved
        );
    }

    #[test]
    fn a_condition_shorter_than_for_sends_nothing() {
        let mut b = Book::default();
        assert_eq!(
            b.step(
                "s",
                RuleName::RpoExposure,
                Some(&RULE),
                holds(70.0),
                0,
                60_000
            ),
            None
        );
        assert_eq!(
            b.step(
                "s",
                RuleName::RpoExposure,
                Some(&RULE),
                holds(10.0),
                5_000,
                60_000
            ),
            None
        );
        assert!(b.alerts.is_empty());
    }

    #[test]
    fn a_book_read_back_after_a_restart_does_not_fire_again() {
        let mut b = Book::default();
        b.step(
            "s",
            RuleName::RpoExposure,
            Some(&RULE),
            Some(Reading {
                value: 90.0,
                holds: true,
                since_ms: Some(-30_000),
            }),
            0,
            60_000,
        )
        .unwrap();
        let mut again: Book = serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap();
        assert_eq!(
            again.step(
                "s",
                RuleName::RpoExposure,
                Some(&RULE),
                holds(95.0),
                5_000,
                60_000
            ),
            None
        );
        assert_eq!(
            again
                .step(
                    "s",
                    RuleName::RpoExposure,
                    Some(&RULE),
                    holds(0.0),
                    6_000,
                    60_000
                )
                .unwrap()
                .state,
            State::Resolved
        );
    }
}
