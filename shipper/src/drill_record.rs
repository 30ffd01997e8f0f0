//! The stored result of every restore drill (`streams/<stream>/drills/<ms>.json`), passed,
//! failed or not proven, so that monitoring can alert on "no successful drill in N days"
//! from the bucket alone.

use bytes::Bytes;
use logferry_common::keys::{drill_key, drills_prefix};
use logferry_common::StreamId;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ShipperError};
use crate::storage::Store;

/// What a drill proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "reason")]
pub enum Verdict {
    /// Everything compared was equal.
    Passed,
    /// Something compared differed, or the drill could not finish (what, in the reason).
    Failed(String),
    /// Nothing was compared, for the reason given: the drill proved nothing.
    NotProven(String),
}

impl Verdict {
    /// Whether the drill may be counted as a successful restore test.
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Passed)
    }
}

/// One drill's result as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The stream drilled.
    pub stream: String,
    /// When the drill started, ms since the epoch.
    pub started_ms: i64,
    /// When it ended.
    pub finished_ms: i64,
    /// What it proved.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The snapshot loaded first (id at position), if any.
    pub snapshot: Option<String>,
    /// Position of the last replayed transaction, if any.
    pub position: Option<String>,
    /// What the restored copy was compared with (a newer snapshot, the live replica).
    pub compared_with: Option<String>,
    /// How many tables (or the kind's unit) were compared.
    pub compared: usize,
    /// How many of them differed.
    pub differences: usize,
}

/// Stores `record` under its stream's drills.
///
/// # Errors
/// [`ShipperError::Store`] when the store refuses the write.
pub async fn save(store: &Store, stream: &StreamId, record: &DrillRecord) -> Result<String> {
    let key = drill_key(stream, record.started_ms);
    let body = serde_json::to_vec_pretty(record)
        .map_err(|e| ShipperError::Internal(format!("encoding the drill result: {e}")))?;
    store.put_new(&key, Bytes::from(body)).await?;
    Ok(key)
}

/// Every stored drill result of `stream`, oldest first; a result that does not parse is
/// skipped with a warning.
///
/// # Errors
/// [`ShipperError::Store`] when the store cannot be listed or read.
pub async fn list(store: &Store, stream: &StreamId) -> Result<Vec<DrillRecord>> {
    let mut out = Vec::new();
    for obj in store.list(&drills_prefix(stream)).await? {
        let bytes = store.get(&obj.key).await?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(key = %obj.key, error = %e, "skipping a drill result that does not parse");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(started_ms: i64, verdict: Verdict) -> DrillRecord {
        DrillRecord {
            stream: "orders".into(),
            started_ms,
            finished_ms: started_ms + 5,
            verdict,
            snapshot: Some("1 at mysql-bin.000001:4".into()),
            position: None,
            compared_with: None,
            compared: 3,
            differences: 0,
        }
    }

    #[tokio::test]
    async fn results_are_stored_and_listed_oldest_first() {
        let store = Store::in_memory();
        let stream = StreamId::new("orders").unwrap();
        let later = record(20_000, Verdict::NotProven("one snapshot".into()));
        let earlier = record(3_000, Verdict::Passed);
        save(&store, &stream, &later).await.unwrap();
        let key = save(&store, &stream, &earlier).await.unwrap();
        assert_eq!(key, "streams/orders/drills/0000000003000.json");
        let listed = list(&store, &stream).await.unwrap();
        assert_eq!(listed, vec![earlier, later]);
        assert!(listed[0].verdict.passed() && !listed[1].verdict.passed());
    }

    #[test]
    fn the_verdict_reads_as_plain_json() {
        let json = serde_json::to_value(record(1, Verdict::NotProven("why".into()))).unwrap();
        assert_eq!(json["verdict"], "not_proven");
        assert_eq!(json["reason"], "why");
        let json = serde_json::to_value(record(1, Verdict::Passed)).unwrap();
        assert_eq!(json["verdict"], "passed");
    }
}
