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
use logferry_config::alerts::{AlertsSection, Receiver, RULE_NAMES};
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

/// The alerting of one shipper.
#[derive(Debug)]
pub struct Alerts {
    cfg: AlertsSection,
    receivers: Vec<(String, Receiver)>,
    book: Mutex<Book>,
    store: Store,
    http: reqwest::Client,
    wake: Notify,
}

impl Alerts {
    /// Alerting by `cfg`, its book kept in `store`; empty until [`Self::restore`].
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: AlertsSection, store: Store) -> Result<Self> {
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
            store,
            http,
            wake: Notify::new(),
        })
    }

    /// Reads the book a previous run left in the store.
    ///
    /// # Errors
    /// When the store cannot be read; a book that does not parse is set aside with an
    /// error in the log (alerts then start again from nothing).
    pub async fn restore(&self) -> Result<()> {
        let Some(bytes) = self.store.get_if_any(BOOK_KEY).await? else {
            return Ok(());
        };
        match serde_json::from_slice::<Book>(&bytes) {
            Ok(book) => {
                info!(
                    firing = book.firing().count(),
                    undelivered = book.outbox.len(),
                    "alerts restored from the store"
                );
                *self.book.lock().await = book;
            }
            Err(e) => {
                error!(key = BOOK_KEY, error = %e, "the stored alert book does not read; alerts start again from nothing (firing ones will be sent again)");
            }
        }
        Ok(())
    }

    /// Evaluates every rule on every stream of `statuses` at `now_ms`, queues what is to
    /// be sent, and stores the book when it changed.
    pub async fn evaluate(&self, statuses: &[StreamStatus], now_ms: i64) {
        let repeat_ms = (self.cfg.repeat_seconds as i64).saturating_mul(1000);
        let mut book = self.book.lock().await;
        let before = book.clone();
        let mut sent = Vec::new();
        for s in statuses {
            for name in RULE_NAMES {
                let rule = self.cfg.rule(&s.stream, name);
                let reading = rule.and_then(|r| rules::read(name, &r, s, now_ms));
                sent.extend(book.step(&s.stream, name, rule.as_ref(), reading, now_ms, repeat_ms));
            }
        }
        // A stream gone from the status (its data deleted) resolves its alerts.
        let gone: Vec<(String, String)> = book
            .alerts
            .values()
            .filter(|a| !statuses.iter().any(|s| s.stream == a.stream))
            .map(|a| (a.stream.clone(), a.rule.clone()))
            .collect();
        for (stream, rule) in gone {
            sent.extend(book.step(&stream, &rule, None, None, now_ms, repeat_ms));
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
        trim(&mut book.outbox);
        if *book != before {
            self.persist(&book).await;
            self.wake.notify_one();
        }
    }

    /// The firing alerts.
    pub async fn firing(&self) -> Vec<Alert> {
        self.book.lock().await.firing().cloned().collect()
    }

    /// Marks each status red whose stream has a firing alert, naming the rule.
    pub async fn annotate(&self, statuses: &mut [StreamStatus]) {
        let firing = self.firing().await;
        for s in statuses {
            for a in firing.iter().filter(|a| a.stream == s.stream) {
                s.firing.push(a.rule.clone());
                s.health = Health::Red;
                s.problems.push(format!(
                    "alert {} ({}) firing since {}",
                    rules::alertname(&a.rule),
                    a.rule,
                    rfc3339(a.since_ms)
                ));
            }
        }
    }

    async fn persist(&self, book: &Book) {
        let body = match serde_json::to_vec_pretty(book) {
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
    /// of that receiver is tried.
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
                while let Some(next) = self.next_for(id).await {
                    match self.send(receiver, &next).await {
                        Ok(()) => {
                            if let Some((n, _)) = failing.remove(id) {
                                info!(receiver = %receiver.url().redacted(), after = n, "alert receiver takes notifications again");
                            }
                            let mut book = self.book.lock().await;
                            if let Some(i) = book.outbox.iter().position(|o| *o == next) {
                                book.outbox.remove(i);
                            }
                            self.persist(&book).await;
                        }
                        Err(why) => {
                            let n = failing.get(id).map_or(0, |(n, _)| *n) + 1;
                            let wait = backoff
                                .build()
                                .nth(n as usize - 1)
                                .unwrap_or(Duration::from_secs(300));
                            warn!(receiver = %receiver.url().redacted(), failures = n, retry_in = ?wait, "delivering an alert failed: {why}");
                            failing.insert(id.clone(), (n, tokio::time::Instant::now() + wait));
                            break;
                        }
                    }
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

    async fn send(&self, receiver: &Receiver, out: &Outgoing) -> std::result::Result<(), String> {
        let hold_ms = (self.cfg.repeat_seconds as i64).saturating_mul(2000);
        let (url, body) = deliver::request(receiver, &out.notification, hold_ms);
        let answer = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{}: {}", receiver.url().redacted(), e.without_url()))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{} answered {status}", receiver.url().redacted()))
        }
    }
}

/// Drops the oldest notifications of a receiver beyond [`OUTBOX_PER_RECEIVER`].
fn trim(outbox: &mut Vec<Outgoing>) {
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
        outbox.retain(|o| {
            if drop > 0 && o.receiver == id {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }
}
