//! Sending notifications: the body of Alertmanager's webhook receiver for a generic webhook
//! (with the alert's own fields on top, so either kind of receiver reads it), and the
//! alert list of Alertmanager's `POST /api/v2/alerts`.

use logferry_config::alerts::{Receiver, RuleName};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::book::{Notification, State};
use super::rules::{alertname, unit};
use crate::listing::rfc3339;

/// Alertmanager's "not ended" time.
const NO_END: &str = "0001-01-01T00:00:00Z";

/// A receiver's id in the book's outbox: a hash of its kind and URL (the URL may hold a
/// token and is never written out).
pub fn receiver_id(r: &Receiver) -> String {
    let kind = match r {
        Receiver::Webhook { .. } => "webhook",
        Receiver::Alertmanager { .. } => "alertmanager",
    };
    let digest = Sha256::digest(format!("{kind} {}", r.url().expose()));
    hex::encode(&digest[..8])
}

/// How logs and errors name a receiver: its kind, host and id, never its whole URL (a
/// webhook's path or query often carries its token).
pub fn receiver_label(r: &Receiver) -> String {
    let kind = match r {
        Receiver::Webhook { .. } => "webhook",
        Receiver::Alertmanager { .. } => "alertmanager",
    };
    let host = url::Url::parse(r.url().expose())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("{kind} {host} (id {})", receiver_id(r))
}

fn severity(rule: RuleName) -> &'static str {
    match rule {
        RuleName::RpoExposure | RuleName::AgentSilent | RuleName::ChainGap | RuleName::Fork => {
            "critical"
        }
        RuleName::SnapshotAge | RuleName::SnapshotReplicaLag | RuleName::Drill => "warning",
    }
}

/// The one-line summary of a notification.
pub fn summary(n: &Notification) -> String {
    let what = match n.rule {
        RuleName::RpoExposure => "RPO exposure",
        RuleName::AgentSilent => "agent silent for",
        RuleName::SnapshotAge => "newest snapshot age",
        RuleName::ChainGap => "stored chain breaks",
        RuleName::SnapshotReplicaLag => "snapshot replica lag",
        RuleName::Drill => "days since the last restore drill that passed",
        RuleName::Fork => "hours since the stream forked",
    };
    let u = unit(n.rule);
    if n.rule == RuleName::Drill && n.state == State::Firing && n.value <= n.threshold {
        return format!("{}: the last restore drill did not pass", n.stream);
    }
    if n.rule == RuleName::Fork {
        return match n.state {
            State::Firing => format!(
                "{}: the stream forked {:.1} h ago: the old server's last transactions are not on the promoted one (`ls`, `export --branch`)",
                n.stream, n.value
            ),
            State::Resolved => format!("{}: the fork is more than {} h old", n.stream, n.threshold),
        };
    }
    match n.state {
        State::Firing => format!(
            "{}: {what} {:.1} {u} is above {} {u}",
            n.stream, n.value, n.threshold
        ),
        State::Resolved => format!("{}: {what} is back within {} {u}", n.stream, n.threshold),
    }
}

fn labels(n: &Notification) -> Value {
    json!({
        "alertname": alertname(n.rule),
        "stream": n.stream,
        "rule": n.rule,
        "severity": severity(n.rule),
        "source": "logferry",
    })
}

fn annotations(n: &Notification) -> Value {
    json!({
        "summary": summary(n),
        "value": format!("{}", n.value),
        "threshold": format!("{}", n.threshold),
        "since": rfc3339(n.since_ms),
    })
}

fn state_text(s: State) -> &'static str {
    match s {
        State::Firing => "firing",
        State::Resolved => "resolved",
    }
}

/// The webhook body of `n`: Alertmanager's webhook payload (version 4) of one alert, with
/// `stream`, `rule`, `value`, `threshold`, `since` and `state` on top.
pub fn webhook_body(n: &Notification) -> Value {
    let fingerprint = hex::encode(&Sha256::digest(format!("{}/{}", n.stream, n.rule))[..8]);
    let ends = match n.state {
        State::Firing => NO_END.to_owned(),
        State::Resolved => rfc3339(n.at_ms),
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{stream=\"{}\",rule=\"{}\"}}", n.stream, n.rule),
        "truncatedAlerts": 0,
        "status": state_text(n.state),
        "receiver": "logferry",
        "groupLabels": {"stream": n.stream, "rule": n.rule},
        "commonLabels": labels(n),
        "commonAnnotations": annotations(n),
        "externalURL": "",
        "alerts": [{
            "status": state_text(n.state),
            "labels": labels(n),
            "annotations": annotations(n),
            "startsAt": rfc3339(n.since_ms),
            "endsAt": ends,
            "generatorURL": "",
            "fingerprint": fingerprint,
        }],
        "stream": n.stream,
        "rule": n.rule,
        "value": n.value,
        "threshold": n.threshold,
        "since": rfc3339(n.since_ms),
        "state": state_text(n.state),
    })
}

/// The `POST /api/v2/alerts` body of `n`. A firing alert ends at `at + hold_ms` unless
/// sent again (each repeat extends it), so an Alertmanager resolves it by itself if this
/// shipper is gone for good; a resolved one ends now.
pub fn alertmanager_body(n: &Notification, hold_ms: i64) -> Value {
    let ends = match n.state {
        State::Firing => n.at_ms.saturating_add(hold_ms),
        State::Resolved => n.at_ms,
    };
    json!([{
        "labels": labels(n),
        "annotations": annotations(n),
        "startsAt": rfc3339(n.since_ms),
        "endsAt": rfc3339(ends),
    }])
}

/// Where and what to POST for `n` to `r`.
pub fn request(r: &Receiver, n: &Notification, hold_ms: i64) -> (String, Value) {
    match r {
        Receiver::Webhook { url } => (url.expose().to_owned(), webhook_body(n)),
        Receiver::Alertmanager { url } => (
            format!("{}/api/v2/alerts", url.expose().trim_end_matches('/')),
            alertmanager_body(n, hold_ms),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firing() -> Notification {
        Notification {
            stream: "db1".into(),
            rule: RuleName::RpoExposure,
            state: State::Firing,
            value: 75.5,
            threshold: 60.0,
            since_ms: 1_700_000_000_000,
            at_ms: 1_700_000_060_000,
        }
    }

    #[test]
    fn the_webhook_body_is_alertmanagers_with_the_alert_on_top() {
        let b = webhook_body(&firing());
        assert_eq!(b["version"], "4");
        assert_eq!(b["status"], "firing");
        assert_eq!(
            b["alerts"][0]["labels"]["alertname"],
            "LogferryRpoExposureHigh"
        );
        assert_eq!(b["alerts"][0]["endsAt"], NO_END);
        assert_eq!(b["stream"], "db1");
        assert_eq!(b["value"], 75.5);
        assert!(b["commonAnnotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("RPO exposure 75.5 s is above 60 s"));
    }

    #[test]
    fn an_alertmanager_alert_holds_until_its_next_repeat_or_ends_when_resolved() {
        let b = alertmanager_body(&firing(), 1000);
        assert_eq!(b[0]["endsAt"], rfc3339(1_700_000_061_000));
        let mut resolved = firing();
        resolved.state = State::Resolved;
        assert_eq!(
            alertmanager_body(&resolved, 1000)[0]["endsAt"],
            rfc3339(resolved.at_ms)
        );
    }
}
