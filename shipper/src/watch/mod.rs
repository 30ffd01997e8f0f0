//! Watching the streams from off-site: the agents' reports, what is stored, and the
//! status of each stream computed from both ([`status`]), for `GET /v1/status`, the
//! `status` command and `/metrics`.

pub mod history;
pub mod status;
pub mod stored;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use logferry_common::wire::AgentReport;
use logferry_common::StreamId;
use tracing::{info, warn};

use self::history::History;
use self::status::{Before, Heard, Start, StreamStatus};
use self::stored::StoredFacts;
use crate::catalog::Catalog;
use crate::storage::Store;

/// Where what the shipper last heard of each agent is kept in the store, for the run
/// after a restart.
pub const HEARD_KEY: &str = "watch/heard.json";

/// How often that is written, at most.
const HEARD_EVERY_MS: i64 = 30_000;

/// The shipper's view of every stream.
#[derive(Debug)]
pub struct Watch {
    rpo_target_seconds: f64,
    start: Start,
    heard: Mutex<HashMap<StreamId, Heard>>,
    /// What the run before this one last heard (from [`HEARD_KEY`]).
    before: Mutex<HashMap<StreamId, Before>>,
    /// When [`HEARD_KEY`] was last written, and what it held.
    kept: Mutex<(i64, BTreeMap<String, Before>)>,
    stored: Mutex<HashMap<StreamId, StoredFacts>>,
    history: Mutex<History>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watch {
    /// A watch judging streams against `rpo_target_seconds`, started at `started_ms`; a
    /// stream is not judged until its agent reported or `grace_ms` passed.
    pub fn new(rpo_target_seconds: f64, started_ms: i64, grace_ms: u64) -> Self {
        Watch {
            rpo_target_seconds,
            start: Start {
                started_ms,
                grace_until_ms: started_ms.saturating_add(i64::try_from(grace_ms).unwrap_or(0)),
            },
            heard: Mutex::default(),
            before: Mutex::default(),
            kept: Mutex::default(),
            stored: Mutex::default(),
            history: Mutex::default(),
        }
    }

    /// Reads what the run before this one last heard of each agent.
    ///
    /// # Errors
    /// When the store cannot be read; a record that does not parse is logged and ignored.
    pub async fn restore(&self, store: &Store) -> crate::error::Result<()> {
        let Some(bytes) = store.get_if_any(HEARD_KEY).await? else {
            return Ok(());
        };
        match serde_json::from_slice::<BTreeMap<String, Before>>(&bytes) {
            Ok(map) => {
                let mut before = locked(&self.before);
                for (name, b) in map {
                    if let Ok(stream) = StreamId::new(&name) {
                        before.insert(stream, b);
                    }
                }
            }
            Err(e) => {
                warn!(key = HEARD_KEY, error = %e, "what the last run heard of the agents does not read; streams not heard since the start count from the start")
            }
        }
        Ok(())
    }

    /// What to write to [`HEARD_KEY`] now, when it changed and is due.
    pub fn heard_to_keep(&self, now_ms: i64) -> Option<Vec<u8>> {
        if now_ms - locked(&self.kept).0 < HEARD_EVERY_MS {
            return None;
        }
        let mut map: BTreeMap<String, Before> = locked(&self.before)
            .iter()
            .map(|(s, b)| (s.to_string(), *b))
            .collect();
        for (s, h) in locked(&self.heard).iter() {
            map.insert(
                s.to_string(),
                Before {
                    heard_ms: Some(h.received_ms),
                    all_stored_ms: h.all_stored_ms,
                    read_commit_ms: h.report.read_commit_ms,
                },
            );
        }
        let mut kept = locked(&self.kept);
        if kept.1 == map {
            return None;
        }
        let bytes = serde_json::to_vec(&map).ok()?;
        *kept = (now_ms, map);
        Some(bytes)
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
        let all_stored_ms = if Heard::all_stored(&report) {
            Some(now_ms)
        } else {
            heard.get(stream).and_then(|h| h.all_stored_ms).or_else(|| {
                locked(&self.before)
                    .get(stream)
                    .and_then(|b| b.all_stored_ms)
            })
        };
        heard.insert(
            stream.clone(),
            Heard {
                received_ms: now_ms,
                all_stored_ms,
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
        let before = locked(&self.before).clone();
        // A stream whose agent reported before the shipper's restart stays judged even when
        // nothing of it is stored yet: a dead agent must not vanish from the status.
        let mut names: Vec<&StreamId> = stored
            .keys()
            .chain(heard.keys())
            .chain(before.keys())
            .collect();
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
                    before.get(s).copied().unwrap_or_default(),
                    self.start,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_heard_before_a_restart_stays_judged_with_nothing_stored() {
        let store = Store::in_memory();
        let kept = r#"{"db1":{"heard_ms":1000000,"all_stored_ms":null}}"#;
        store
            .replace(HEARD_KEY, bytes::Bytes::from_static(kept.as_bytes()))
            .await
            .unwrap();
        let watch = Watch::new(60.0, 1_010_000, 0);
        watch.restore(&store).await.unwrap();
        let statuses = watch.statuses(1_020_000);
        assert_eq!(statuses.len(), 1, "{statuses:?}");
        assert_eq!(statuses[0].stream, "db1");
        assert_eq!(statuses[0].health, status::Health::Red);
        assert!(statuses[0].agent_silent_seconds.is_some_and(|s| s >= 20.0));
    }
}
