//! `[alerts]` of the shipper: the rules each stream is judged by (defaults for all, and
//! per stream), how long a condition must hold and how often a firing alert repeats, and
//! the receivers alerts are sent to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::secret::SecretUrl;

/// The rules the shipper knows, named in the config, the alerts and the status as their
/// snake_case form (`rpo_exposure`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    /// RPO exposure above the threshold (s).
    RpoExposure,
    /// The agent silent for longer than the threshold (s).
    AgentSilent,
    /// The newest snapshot older than the threshold (days).
    SnapshotAge,
    /// More breaks in the stored chain than the threshold.
    ChainGap,
    /// The snapshot replica behind by more than the threshold (s).
    SnapshotReplicaLag,
    /// The newest drill did not pass, or none passed for the threshold (days).
    Drill,
    /// The stream forked less than the threshold (hours) ago.
    Fork,
}

impl RuleName {
    /// Every rule, in the order they are evaluated.
    pub const ALL: [RuleName; 7] = [
        RuleName::RpoExposure,
        RuleName::AgentSilent,
        RuleName::SnapshotAge,
        RuleName::ChainGap,
        RuleName::SnapshotReplicaLag,
        RuleName::Drill,
        RuleName::Fork,
    ];

    /// The name as the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleName::RpoExposure => "rpo_exposure",
            RuleName::AgentSilent => "agent_silent",
            RuleName::SnapshotAge => "snapshot_age",
            RuleName::ChainGap => "chain_gap",
            RuleName::SnapshotReplicaLag => "snapshot_replica_lag",
            RuleName::Drill => "drill",
            RuleName::Fork => "fork",
        }
    }
}

impl std::fmt::Display for RuleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule in effect: alert when the stream's value is above `threshold` for
/// `for_seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// The value above which the condition holds, in the rule's unit (seconds; days for
    /// `snapshot_age` and `drill`; places for `chain_gap`).
    pub threshold: f64,
    /// How long the condition must hold before the alert fires (s).
    pub for_seconds: u64,
    /// Turns the rule off.
    pub disabled: bool,
}

/// A rule as a config section writes it: each key left out keeps the value of the level
/// below (a stream's rule over `[alerts.rules]`, that over the built-in rule), so
/// `[alerts.streams.billing.rpo_exposure] threshold = 10` keeps the default `for`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetting {
    /// See [`Rule::threshold`].
    pub threshold: Option<f64>,
    /// See [`Rule::for_seconds`].
    pub for_seconds: Option<u64>,
    /// See [`Rule::disabled`].
    pub disabled: Option<bool>,
}

impl RuleSetting {
    /// `self` over `below`.
    fn over(&self, below: Rule) -> Rule {
        Rule {
            threshold: self.threshold.unwrap_or(below.threshold),
            for_seconds: self.for_seconds.unwrap_or(below.for_seconds),
            disabled: self.disabled.unwrap_or(below.disabled),
        }
    }
}

/// A set of rule settings, each optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// RPO exposure above `threshold` seconds.
    pub rpo_exposure: Option<RuleSetting>,
    /// The agent silent for more than `threshold` seconds.
    pub agent_silent: Option<RuleSetting>,
    /// The newest snapshot older than `threshold` days (a stream with none is not judged).
    pub snapshot_age: Option<RuleSetting>,
    /// More than `threshold` breaks in the stored chain.
    pub chain_gap: Option<RuleSetting>,
    /// The paused snapshot replica more than `threshold` seconds behind.
    pub snapshot_replica_lag: Option<RuleSetting>,
    /// The newest restore drill did not pass, or none passed for `threshold` days.
    pub drill: Option<RuleSetting>,
    /// The stream forked less than `threshold` hours ago.
    pub fork: Option<RuleSetting>,
}

impl RuleSet {
    /// The setting of rule `name`.
    pub fn get(&self, name: RuleName) -> Option<RuleSetting> {
        match name {
            RuleName::RpoExposure => self.rpo_exposure,
            RuleName::AgentSilent => self.agent_silent,
            RuleName::SnapshotAge => self.snapshot_age,
            RuleName::ChainGap => self.chain_gap,
            RuleName::SnapshotReplicaLag => self.snapshot_replica_lag,
            RuleName::Drill => self.drill,
            RuleName::Fork => self.fork,
        }
    }
}

/// The built-in rule `name`.
fn builtin(name: RuleName) -> Rule {
    let (threshold, for_seconds) = match name {
        RuleName::RpoExposure => (60.0, 60),
        RuleName::AgentSilent => (60.0, 0),
        RuleName::SnapshotAge => (8.0, 0),
        // Uploads in flight close their gaps within moments; one that stays is a gap.
        RuleName::ChainGap => (0.0, 300),
        RuleName::SnapshotReplicaLag => (600.0, 300),
        RuleName::Drill => (8.0, 0),
        // A fork lost the old server's last transactions: fires for a day.
        RuleName::Fork => (24.0, 0),
    };
    Rule {
        threshold,
        for_seconds,
        disabled: false,
    }
}

/// Where alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Receiver {
    /// A generic webhook: one POST per notification, in the body of Alertmanager's webhook
    /// receiver (so receivers written for it accept it) with the alert's fields on top.
    Webhook {
        /// The URL to POST to (kept out of logs: it may carry a token).
        url: SecretUrl,
    },
    /// An Alertmanager: alerts are pushed to `<url>/api/v2/alerts`, which groups,
    /// silences and routes them as it does Prometheus's.
    Alertmanager {
        /// The Alertmanager's base URL.
        url: SecretUrl,
    },
}

impl Receiver {
    /// The receiver's URL.
    pub fn url(&self) -> &SecretUrl {
        match self {
            Receiver::Webhook { url } | Receiver::Alertmanager { url } => url,
        }
    }
}

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// How often a firing alert is sent again while it holds (s).
    #[serde(default = "default_repeat_seconds")]
    pub repeat_seconds: u64,
    /// How often the rules are evaluated (ms).
    #[serde(default = "default_evaluate_ms")]
    pub evaluate_ms: u64,
    /// The rules for every stream.
    #[serde(default)]
    pub rules: RuleSet,
    /// Rules for one stream, by its name, over `rules`.
    #[serde(default)]
    pub streams: BTreeMap<String, RuleSet>,
    /// Where alerts are sent; none keeps them in the status only.
    #[serde(default)]
    pub receivers: Vec<Receiver>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            repeat_seconds: default_repeat_seconds(),
            evaluate_ms: default_evaluate_ms(),
            rules: RuleSet::default(),
            streams: BTreeMap::new(),
            receivers: Vec::new(),
        }
    }
}

fn default_repeat_seconds() -> u64 {
    4 * 3600
}

fn default_evaluate_ms() -> u64 {
    1000
}

impl AlertsSection {
    /// The rule `name` for `stream`: its own, else `[alerts.rules]`, else built in;
    /// `None` when disabled.
    pub fn rule(&self, stream: &str, name: RuleName) -> Option<Rule> {
        let mut rule = builtin(name);
        if let Some(s) = self.rules.get(name) {
            rule = s.over(rule);
        }
        if let Some(s) = self.streams.get(stream).and_then(|s| s.get(name)) {
            rule = s.over(rule);
        }
        (!rule.disabled).then_some(rule)
    }

    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.repeat_seconds < 60 {
            return Err(invalid(
                "alerts.repeat_seconds",
                "must be at least 60 (the default repeats every 4 hours)",
            ));
        }
        if !(100..=60_000).contains(&self.evaluate_ms) {
            return Err(invalid(
                "alerts.evaluate_ms",
                "must be between 100 and 60000 (the default evaluates every second)",
            ));
        }
        let sets = std::iter::once(("alerts.rules".to_owned(), &self.rules)).chain(
            self.streams
                .iter()
                .map(|(s, r)| (format!("alerts.streams.{s}"), r)),
        );
        for (key, set) in sets {
            for name in RuleName::ALL {
                if let Some(threshold) = set.get(name).and_then(|r| r.threshold) {
                    if !(threshold.is_finite() && threshold >= 0.0) {
                        return Err(invalid(
                            &format!("{key}.{name}.threshold"),
                            "must be a number of 0 or more",
                        ));
                    }
                }
            }
        }
        for (i, r) in self.receivers.iter().enumerate() {
            let url = r.url().expose();
            let ok = url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(invalid(
                    &format!("alerts.receivers[{i}].url"),
                    format!("{} is not an http(s) URL", r.url().redacted()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_rule_overrides_the_default_which_overrides_the_builtin() {
        let a: AlertsSection = toml::from_str(
            "[rules.rpo_exposure]\nthreshold = 30\nfor_seconds = 5\n\
             [streams.db1.rpo_exposure]\nthreshold = 10\n\
             [streams.db2.agent_silent]\ndisabled = true\n\
             [[receivers]]\ntype = \"webhook\"\nurl = \"http://hooks.example/x\"\n",
        )
        .unwrap();
        a.validate().unwrap();
        assert_eq!(
            a.rule("db1", RuleName::RpoExposure).unwrap().threshold,
            10.0
        );
        // A stream's rule keeps what it does not say from the default.
        assert_eq!(a.rule("db1", RuleName::RpoExposure).unwrap().for_seconds, 5);
        assert_eq!(
            a.rule("db3", RuleName::RpoExposure).unwrap().threshold,
            30.0
        );
        assert_eq!(
            a.rule("db3", RuleName::AgentSilent).unwrap().threshold,
            60.0
        );
        assert!(a.rule("db2", RuleName::AgentSilent).is_none());
    }

    #[test]
    fn a_bad_receiver_url_is_named() {
        let a: AlertsSection =
            toml::from_str("[[receivers]]\ntype = \"alertmanager\"\nurl = \"ftp://x\"\n").unwrap();
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains("alerts.receivers[0].url"), "{e}");
    }
}
