//! The stored result of every restore drill (`streams/<stream>/drills/<ms>.json`), passed,
//! failed or not proven, so that monitoring can alert on "no successful drill in N days"
//! from the bucket alone. Each carries a MAC under the stream's key: a record someone
//! wrote into the bucket does not count.

use bytes::Bytes;
use logferry_common::crypto::{canonical_json, KeyRef};
use logferry_common::keys::{drill_key, drills_prefix};
use logferry_common::StreamId;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ShipperError};
use crate::restore::DrillReport;
use crate::storage::Store;
use crate::time_arg::now_ms;

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

impl DrillRecord {
    /// The record of a drill of `stream` begun at `started_ms` that could not finish.
    pub fn failed(stream: &StreamId, started_ms: i64, why: String) -> Self {
        DrillRecord {
            stream: stream.to_string(),
            started_ms,
            finished_ms: now_ms(),
            verdict: Verdict::Failed(why),
            snapshot: None,
            position: None,
            compared_with: None,
            compared: 0,
            differences: 0,
        }
    }

    /// The record of a finished drill of `stream` begun at `started_ms`.
    pub fn of_report(stream: &StreamId, started_ms: i64, report: &DrillReport) -> Self {
        DrillRecord {
            stream: stream.to_string(),
            started_ms,
            finished_ms: now_ms(),
            verdict: report.verdict(),
            snapshot: (!report.base.is_empty()).then(|| report.base.clone()),
            position: report.last_position.clone(),
            compared_with: (!report.checked_against.is_empty())
                .then(|| report.checked_against.join("; ")),
            compared: report.compared,
            differences: report.differences.len(),
        }
    }
}

/// A record as stored: the record, the key its MAC is under and the MAC (over the stored
/// record's canonical form), so that only a holder of the stream's key can write a record
/// that monitoring counts as a drill.
#[derive(Serialize, Deserialize)]
struct Signed {
    #[serde(flatten)]
    record: DrillRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

/// Purpose of a drill record's MAC.
const DRILL_MAC: &str = "drill record";

/// Stores `record` under its stream's drills, with a MAC under the stream's newest epoch
/// key (in a store written in clear without keys, unsigned).
///
/// # Errors
/// [`ShipperError::Store`] when the store refuses the write; [`ShipperError::Key`] when
/// no key of the stream can be opened to sign it.
pub async fn save(store: &Store, stream: &StreamId, record: &DrillRecord) -> Result<String> {
    let key = drill_key(stream, record.started_ms);
    let epoch = match store.keyring().newest_key(store, stream).await {
        Ok(k) => Some(k),
        Err(_) if store.keyring().accepts_plaintext() => None,
        Err(e) => return Err(e),
    };
    let mut signed = Signed {
        record: record.clone(),
        key: epoch.as_ref().map(|k| k.key_ref().to_string()),
        mac: None,
    };
    if let Some(k) = &epoch {
        let form = canonical_json(
            serde_json::to_value(&signed)
                .map_err(|e| ShipperError::Internal(format!("encoding the drill result: {e}")))?,
        );
        signed.mac = Some(k.mac(DRILL_MAC, &form)?);
    }
    let body = serde_json::to_vec_pretty(&signed)
        .map_err(|e| ShipperError::Internal(format!("encoding the drill result: {e}")))?;
    store.put_new(&key, Bytes::from(body)).await?;
    Ok(key)
}

/// One stored record of `stream` checked: the record, or why it is not trusted (it does
/// not parse, is not where its stream and start time put it, fails or lacks its MAC, or
/// cannot be checked with the keys at hand).
async fn read_one(
    store: &Store,
    stream: &StreamId,
    key: &str,
) -> Result<std::result::Result<DrillRecord, String>> {
    let bytes = store.get(key).await?;
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes).and_then(|v| {
        let form = canonical_json(v.clone());
        serde_json::from_value::<Signed>(v).map(|s| (s, form))
    });
    let (signed, form) = match parsed {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("does not parse: {e}"))),
    };
    // A record copied from another stream, or to a later name (to hide a newer failed
    // drill), keeps its MAC: only one in its own place counts.
    if signed.record.stream != stream.as_str() || drill_key(stream, signed.record.started_ms) != key
    {
        return Ok(Err(format!(
            "it is the record of a drill of stream {} started at {}, stored elsewhere",
            signed.record.stream, signed.record.started_ms
        )));
    }
    let Some(r) = signed.key.as_deref() else {
        return Ok(if store.keyring().accepts_plaintext() {
            Ok(signed.record)
        } else {
            Err("carries no MAC: not written by a holder of the stream's key".into())
        });
    };
    let r = match KeyRef::parse(r) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let epoch = match store.keyring().epoch_key(store, stream, &r).await {
        Ok(k) => k,
        Err(ShipperError::Corrupt {
            key: object,
            source,
        }) => return Ok(Err(crate::verify::unauthentic(key, &object, &source))),
        Err(ShipperError::Key { source, .. }) => {
            return Ok(Err(format!("cannot be checked: {source}")))
        }
        Err(e) => return Err(e),
    };
    let mac = signed.mac.as_deref().unwrap_or_default();
    if epoch.mac_matches(DRILL_MAC, &form, mac)? {
        Ok(Ok(signed.record))
    } else {
        Ok(Err(format!(
            "fails its MAC under key {r}: altered, or not written by a holder of the key"
        )))
    }
}

/// Every stored drill result of `stream` that a key holder wrote, oldest first; one that
/// cannot be trusted (or checked, without the key) is skipped with a warning ([`check`]
/// reports it).
///
/// # Errors
/// [`ShipperError::Store`] when the store cannot be listed or read.
pub async fn list(store: &Store, stream: &StreamId) -> Result<Vec<DrillRecord>> {
    let mut out = Vec::new();
    for obj in store.list(&drills_prefix(stream)).await? {
        match read_one(store, stream, &obj.key).await? {
            Ok(r) => out.push(r),
            Err(why) => {
                tracing::warn!(key = %obj.key, problem = %why, "skipping a drill result that cannot be trusted");
            }
        }
    }
    out.sort_by_key(|r| r.started_ms);
    Ok(out)
}

/// The newest trustworthy drill result of `stream`, and the newest that passed (the same
/// one when it did): what the status, `/metrics` and the drill alert go by.
///
/// # Errors
/// As [`list`].
pub async fn latest(
    store: &Store,
    stream: &StreamId,
) -> Result<(Option<DrillRecord>, Option<DrillRecord>)> {
    let mut keys: Vec<String> = store
        .list(&drills_prefix(stream))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    // Keys carry the drill's start time, zero-padded: the last sorts newest.
    keys.sort();
    let mut newest = None;
    for key in keys.iter().rev() {
        if let Ok(record) = read_one(store, stream, key).await? {
            if record.verdict.passed() {
                return Ok((newest.or_else(|| Some(record.clone())), Some(record)));
            }
            newest.get_or_insert(record);
        }
    }
    Ok((newest, None))
}

/// The stored drill results of `stream` that cannot be trusted, by key, and why.
///
/// # Errors
/// As [`list`].
pub async fn check(store: &Store, stream: &StreamId) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for obj in store.list(&drills_prefix(stream)).await? {
        if let Err(why) = read_one(store, stream, &obj.key).await? {
            out.push((obj.key, why));
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
