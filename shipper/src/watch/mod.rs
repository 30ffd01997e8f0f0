//! Watching the streams from off-site: the agents' reports, what is stored, and the
//! status of each stream computed from both ([`status`]), for `GET /v1/status`, the
//! `status` command and `/metrics`.

pub mod history;
pub mod status;
pub mod stored;
pub mod table;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use logferry_common::wire::AgentReport;
use logferry_common::StreamId;
use tracing::{info, warn};

use self::history::History;
use self::status::{Heard, StreamStatus};
use self::stored::StoredFacts;
use crate::catalog::Catalog;
use crate::storage::Store;

/// The shipper's view of every stream.
#[derive(Debug)]
pub struct Watch {
    rpo_target_seconds: f64,
    heard: Mutex<HashMap<StreamId, Heard>>,
    stored: Mutex<HashMap<StreamId, StoredFacts>>,
    history: Mutex<History>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watch {
    /// A watch judging streams against `rpo_target_seconds`.
    pub fn new(rpo_target_seconds: f64) -> Self {
        Watch {
            rpo_target_seconds,
            heard: Mutex::default(),
            stored: Mutex::default(),
            history: Mutex::default(),
        }
    }

    /// Takes an agent's report on `stream`, received at `now_ms`.
    pub fn hear(&self, stream: &StreamId, report: AgentReport, now_ms: i64) {
        let mut heard = locked(&self.heard);
        if let Some(before) = heard.get(stream) {
            if before.report.agent != report.agent && before.fresh(now_ms) {
                warn!(%stream, agent = %report.agent, other = %before.report.agent, "two agents report on one stream; check that each database has its own agent.stream");
            }
        } else {
            info!(%stream, agent = %report.agent, "agent reporting");
        }
        heard.insert(
            stream.clone(),
            Heard {
                received_ms: now_ms,
                report,
            },
        );
    }

    /// Notes that a change committed at `commit_ms` is now stored for `stream`, so the
    /// exposure falls at once, not at the next refresh.
    pub fn stored_commit(&self, stream: &StreamId, commit_ms: i64) {
        let mut stored = locked(&self.stored);
        let facts = stored.entry(stream.clone()).or_default();
        facts.last_commit_ms = Some(facts.last_commit_ms.map_or(commit_ms, |c| c.max(commit_ms)));
    }

    /// Samples `statuses` into the history when a sample is due.
    pub fn record(&self, statuses: &[StreamStatus], now_ms: i64) {
        locked(&self.history).record(statuses, now_ms);
    }

    /// The history of the streams for which `visible` holds.
    pub fn history(
        &self,
        visible: impl Fn(&str) -> bool,
    ) -> std::collections::BTreeMap<String, history::Series> {
        locked(&self.history).series(visible)
    }

    /// Notes how many breaks the stored chain of `stream` has now.
    pub fn set_breaks(&self, stream: &StreamId, breaks: usize) {
        locked(&self.stored)
            .entry(stream.clone())
            .or_default()
            .chain_breaks = breaks;
    }

    /// Reads every known stream's stored facts again.
    pub async fn refresh(&self, store: &Store, catalog: &Catalog) {
        for stream in catalog.stream_names() {
            match stored::read(store, catalog, &stream).await {
                Ok(mut facts) => {
                    let mut stored = locked(&self.stored);
                    // An upload stored since the read began keeps its newer commit time.
                    if let Some(before) = stored.get(&stream) {
                        facts.last_commit_ms = facts.last_commit_ms.max(before.last_commit_ms);
                    }
                    stored.insert(stream, facts);
                }
                Err(e) => {
                    warn!(%stream, error = %e, "cannot read what is stored of the stream; its status keeps the last reading")
                }
            }
        }
    }

    /// The status of every stream known from the store or a report, at `now_ms`, sorted
    /// by name.
    pub fn statuses(&self, now_ms: i64) -> Vec<StreamStatus> {
        let stored = locked(&self.stored).clone();
        let heard = locked(&self.heard).clone();
        let mut names: Vec<&StreamId> = stored.keys().chain(heard.keys()).collect();
        names.sort();
        names.dedup();
        let none = StoredFacts::default();
        names
            .into_iter()
            .map(|s| {
                status::status(
                    s.as_str(),
                    now_ms,
                    self.rpo_target_seconds,
                    stored.get(s).unwrap_or(&none),
                    heard.get(s),
                )
            })
            .collect()
    }
}
