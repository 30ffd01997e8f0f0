//! Alerts that wake someone: `serve` evaluates each stream's status against the rules of
//! `[alerts]` ([`rules`]), keeps every alert's phase and the undelivered notifications
//! in a book stored in the bucket ([`book`]), and delivers them to the receivers
//! ([`deliver`]) from a task of its own, with retries, so that a receiver away never holds
//! up ingest or evaluation.

pub mod book;
pub mod deliver;
pub mod rules;

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use logferry_config::alerts::{AlertsSection, Receiver, RuleName};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicI64;
use tokio::sync::{Mutex, Notify};
use tracing::{error, info, warn};

use self::book::{Alert, Book, Outgoing, State};
use crate::error::Result;
use crate::listing::rfc3339;
use crate::storage::Store;
use crate::watch::status::{Health, StreamStatus};

/// Where the book is kept in the store.
pub const BOOK_KEY: &str = "alerts/book.json";

/// Most notifications kept for one receiver that does not take them; older ones are
/// dropped (with an error in the log) so a receiver gone for weeks costs bounded space.
const OUTBOX_PER_RECEIVER: usize = 1000;

/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What alerting counts, for `/metrics`: delivery that fails is itself worth an alert.
#[derive(Debug, Clone, Default)]
pub struct AlertCounters {
    /// Failed deliveries (each retried, unless refused for good).
    pub failures: Counter,
    /// Notifications dropped: refused for good by their receiver, or beyond the outbox's
    /// bound.
    pub dropped: Counter,
    /// Notifications waiting for their receiver.
    pub undelivered: Gauge<i64, AtomicI64>,
}

/// Why a delivery failed.
enum Failure {
    /// Worth trying again (network, 5xx, 408, 429).
    Retry(String),
    /// The receiver refuses this notification for good (another 4xx).
    Refused(String),
}

/// The alerting of one shipper.
pub struct Alerts {
    cfg: AlertsSection,
    receivers: Vec<(String, Receiver)>,
    book: Mutex<Book>,
    /// Held from taking a copy of the book to storing it, so copies are stored in the
    /// order they were taken.
    persisting: Mutex<()>,
    store: Store,
    http: reqwest::Client,
    wake: Notify,
    counters: AlertCounters,
}

/// Receivers' URLs may carry tokens: only their labels are shown.
impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field(
                "receivers",
                &self
                    .receivers
                    .iter()
                    .map(|(_, r)| deliver::receiver_label(r))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Alerts {
    /// Alerting by `cfg`, its book kept in `store`, counting into `counters`; empty until
    /// [`Self::restore`].
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: AlertsSection, store: Store, counters: AlertCounters) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .map_err(|e| {
                crate::error::ShipperError::Internal(format!("the alerts' HTTP client: {e}"))
            })?;
        let receivers = cfg
            .receivers
            .iter()
            .map(|r| (deliver::receiver_id(r), r.clone()))
            .collect();
        Ok(Alerts {
            cfg,
            receivers,
            book: Mutex::default(),
            persisting: Mutex::default(),
            store,
            http,
            wake: Notify::new(),
            counters,
        })
    }

    /// Reads the book a previous run left in the store. Notifications for a receiver no
    /// longer configured (its URL changed) are dropped, and said so.
    ///
    /// # Errors
    /// When the store cannot be read; a book that does not parse is logged and replaced
    /// by an empty one (firing alerts are then sent again).
    pub async fn restore(&self) -> Result<()> {
        let Some(bytes) = self.store.get_if_any(BOOK_KEY).await? else {
            return Ok(());
        };
        match serde_json::from_slice::<Book>(&bytes) {
            Ok(mut book) => {
                let before = book.outbox.len();
                book.outbox
                    .retain(|o| self.receivers.iter().any(|(id, _)| *id == o.receiver));
                let orphaned = before - book.outbox.len();
                if orphaned > 0 {
                    warn!(orphaned, "notifications queued for a receiver no longer in [alerts] (its URL changed?) are dropped");
                    self.counters.dropped.inc_by(orphaned as u64);
                }
                info!(
                    firing = book.firing().count(),
                    undelivered = book.outbox.len(),
                    "alerts restored from the store"
                );
                self.counters.undelivered.set(book.outbox.len() as i64);
                *self.book.lock().await = book;
            }
            Err(e) => {
                error!(key = BOOK_KEY, error = %e, "the stored alert book does not read; alerts start again from nothing (firing ones will be sent again)");
            }
        }
        Ok(())
    }

    /// Evaluates every rule on every stream of `statuses` at `now_ms`, queues what is to
    /// be sent, and stores the book when its state changed (not for a new value alone).
    pub async fn evaluate(&self, statuses: &[StreamStatus], now_ms: i64) {
        let repeat_ms = (self.cfg.repeat_seconds as i64).saturating_mul(1000);
        let changed = {
            let mut book = self.book.lock().await;
            let before = book.clone();
            let mut sent = Vec::new();
            for s in statuses {
                for name in RuleName::ALL {
                    let rule = self.cfg.rule(&s.stream, name);
                    let reading = rule.and_then(|r| rules::read(name, &r, s, now_ms));
                    sent.extend(book.step(
                        &s.stream,
                        name,
                        rule.as_ref(),
                        reading,
                        now_ms,
                        repeat_ms,
                    ));
                }
            }
            // A stream gone from the status (its data deleted) resolves its alerts.
            let gone: Vec<(String, RuleName)> = book
                .alerts
                .values()
                .filter(|a| !statuses.iter().any(|s| s.stream == a.stream))
                .map(|a| (a.stream.clone(), a.rule))
                .collect();
            for (stream, rule) in gone {
                sent.extend(book.step(&stream, rule, None, None, now_ms, repeat_ms));
            }
            for n in sent {
                let summary = deliver::summary(&n);
                match n.state {
                    State::Firing => {
                        warn!(stream = %n.stream, rule = %n.rule, "alert firing: {summary}")
                    }
                    State::Resolved => {
                        info!(stream = %n.stream, rule = %n.rule, "alert resolved: {summary}")
                    }
                }
                for (id, _) in &self.receivers {
                    book.outbox.push(Outgoing {
                        receiver: id.clone(),
                        notification: n.clone(),
                    });
                }
            }
            let dropped = trim(&mut book.outbox);
            self.counters.dropped.inc_by(dropped as u64);
            self.counters.undelivered.set(book.outbox.len() as i64);
            !book.same_state(&before)
        };
        if changed {
            self.persist().await;
            self.wake.notify_one();
        }
    }

    /// The firing alerts: for the status, the page and `status`'s exit code.
    pub async fn firing(&self) -> Vec<Alert> {
        self.book.lock().await.firing().cloned().collect()
    }

    /// Marks each status red whose stream has a firing alert, naming the rule.
    pub async fn annotate(&self, statuses: &mut [StreamStatus]) {
        let firing = self.firing().await;
        for s in statuses {
            for a in firing.iter().filter(|a| a.stream == s.stream) {
                s.firing.push(a.rule.to_string());
                s.health = Health::Red;
                s.problems.push(format!(
                    "alert {} ({}) firing since {}",
                    rules::alertname(a.rule),
                    a.rule,
                    rfc3339(a.since_ms)
                ));
            }
        }
    }

    /// Stores a copy of the book, outside the book's lock (a slow store holds up no
    /// status request).
    async fn persist(&self) {
        let _order = self.persisting.lock().await;
        let body = {
            let book = self.book.lock().await;
            serde_json::to_vec_pretty(&*book)
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "the alert book cannot be encoded");
                return;
            }
        };
        if let Err(e) = self.store.replace(BOOK_KEY, Bytes::from(body)).await {
            // Kept in memory; the next change stores it again.
            warn!(key = BOOK_KEY, error = %e, "the alert book could not be stored; a restart now could repeat or lose a notification");
        }
    }

    /// Delivers the outbox until the process ends: each receiver's notifications in
    /// order, a failed one retried with backoff (1 s doubling to 5 min) before the next
    /// of that receiver is tried; one the receiver refuses for good (a 4xx other than 408
    /// and 429) is dropped with an error.
    pub async fn deliver_forever(&self) {
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(300))
            .with_jitter()
            .without_max_times();
        // Per receiver: failures in a row and when to try again.
        let mut failing: HashMap<String, (u32, tokio::time::Instant)> = HashMap::new();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            for (id, receiver) in &self.receivers {
                if failing
                    .get(id)
                    .is_some_and(|(_, at)| *at > tokio::time::Instant::now())
                {
                    continue;
                }
                let label = deliver::receiver_label(receiver);
                while let Some(next) = self.next_for(id).await {
                    let outcome = self.send(receiver, &next).await;
                    match outcome {
                        Ok(()) => {
                            if let Some((n, _)) = failing.remove(id) {
                                info!(receiver = %label, after = n, "alert receiver takes notifications again");
                            }
                        }
                        Err(Failure::Refused(why)) => {
                            self.counters.failures.inc();
                            self.counters.dropped.inc();
                            error!(receiver = %label, stream = %next.notification.stream, rule = %next.notification.rule, "an alert receiver refused a notification for good; it is dropped: {why}");
                        }
                        Err(Failure::Retry(why)) => {
                            self.counters.failures.inc();
                            let n = failing.get(id).map_or(0, |(n, _)| *n) + 1;
                            let wait = backoff
                                .build()
                                .nth(n as usize - 1)
                                .unwrap_or(Duration::from_secs(300));
                            warn!(receiver = %label, failures = n, retry_in = ?wait, "delivering an alert failed: {why}");
                            failing.insert(id.clone(), (n, tokio::time::Instant::now() + wait));
                            break;
                        }
                    }
                    {
                        let mut book = self.book.lock().await;
                        if let Some(i) = book.outbox.iter().position(|o| *o == next) {
                            book.outbox.remove(i);
                        }
                        self.counters.undelivered.set(book.outbox.len() as i64);
                    }
                    self.persist().await;
                }
            }
        }
    }

    async fn next_for(&self, id: &str) -> Option<Outgoing> {
        self.book
            .lock()
            .await
            .outbox
            .iter()
            .find(|o| o.receiver == id)
            .cloned()
    }

    async fn send(&self, receiver: &Receiver, out: &Outgoing) -> std::result::Result<(), Failure> {
        let hold_ms = (self.cfg.repeat_seconds as i64).saturating_mul(2000);
        let (url, body) = deliver::request(receiver, &out.notification, hold_ms);
        let label = deliver::receiver_label(receiver);
        let answer = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("{label}: {}", e.without_url())))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error()
            && status != reqwest::StatusCode::REQUEST_TIMEOUT
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            Err(Failure::Refused(format!("{label} answered {status}")))
        } else {
            Err(Failure::Retry(format!("{label} answered {status}")))
        }
    }
}

/// Drops the oldest notifications of a receiver beyond [`OUTBOX_PER_RECEIVER`]; how
/// many.
fn trim(outbox: &mut Vec<Outgoing>) -> usize {
    let mut dropped = 0;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for o in outbox.iter() {
        *counts.entry(o.receiver.clone()).or_default() += 1;
    }
    for (id, n) in counts {
        let mut drop = n.saturating_sub(OUTBOX_PER_RECEIVER);
        if drop == 0 {
            continue;
        }
        error!(
            dropped = drop,
            "an alert receiver has not taken notifications for long; the oldest are dropped"
        );
        dropped += drop;
        outbox.retain(|o| {
            if drop > 0 && o.receiver == id {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::book::{Notification, State};
    use super::*;

    fn out(receiver: &str, at_ms: i64) -> Outgoing {
        Outgoing {
            receiver: receiver.into(),
            notification: Notification {
                stream: "s".into(),
                rule: RuleName::RpoExposure,
                state: State::Firing,
                value: 1.0,
                threshold: 0.0,
                since_ms: 0,
                at_ms,
            },
        }
    }

    #[test]
    fn trimming_drops_a_receivers_oldest_beyond_the_bound_and_keeps_the_others() {
        let mut outbox: Vec<Outgoing> = (0..OUTBOX_PER_RECEIVER as i64 + 3)
            .map(|i| out("a", i))
            .collect();
        outbox.push(out("b", 0));
        assert_eq!(trim(&mut outbox), 3);
        assert_eq!(outbox.len(), OUTBOX_PER_RECEIVER + 1);
        assert_eq!(outbox[0].notification.at_ms, 3, "the oldest went first");
        assert!(outbox.iter().any(|o| o.receiver == "b"));
    }
}
