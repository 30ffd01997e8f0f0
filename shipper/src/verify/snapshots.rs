//! The snapshot half of `verify`: every manifest parses, passes its MAC and names chunks
//! 1..=n, each stored at its size and passing its checksums (stored bytes, the AES-GCM
//! tag, plain bytes); each snapshot
//! has a stored chain that does not start after it, so a restore from it can replay;
//! chunks that no manifest names (a snapshot that did not finish, or one still uploading)
//! are orphans, reported apart and removable ([`remove_orphans`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use indicatif::ProgressBar;
use logferry_common::crypto::EpochKey;
use logferry_common::keys::{
    chunk_key, is_manifest_name, manifest_key, parse_snapshot_key, snapshot_prefix,
};
use logferry_common::snapshot::{open_chunk, ChunkInfo, ChunkSealing, SnapshotManifest};
use logferry_common::{Position, StreamId};

use super::{problem, unauthentic, Problem, ProblemKind};
use crate::error::{Result, ShipperError};
use crate::read_ahead::read_ahead;
use crate::restore::off_runtime;
use crate::storage::{Listed, Store};

/// Stored objects of one snapshot id that no manifest names.
#[derive(Debug, Clone)]
pub struct Orphans {
    /// The snapshot id.
    pub id: String,
    /// Their keys.
    pub keys: Vec<String>,
    /// Their bytes in all.
    pub bytes: u64,
    /// When the newest of them was written, ms since the Unix epoch.
    pub newest_ms: i64,
}

/// What the snapshots of one stream came to.
#[derive(Debug, Default)]
pub struct Checked {
    /// Snapshots with a manifest, each checked.
    pub snapshots: u64,
    /// Problems found (in the snapshots that have a manifest).
    pub problems: Vec<Problem>,
    /// A key that is not configured or not the right one: the check stopped there.
    pub fatal: Option<ShipperError>,
    /// Objects no manifest names, per snapshot id.
    pub orphans: Vec<Orphans>,
}

/// Checks the snapshot objects `objects` of `stream` against their manifests and against
/// the stored chain's first position `chain_start`.
pub async fn check(
    store: &Store,
    stream: &StreamId,
    objects: Vec<Listed>,
    chain_start: Option<&Position>,
    bar: &ProgressBar,
) -> Checked {
    let mut by_id: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for obj in objects {
        if let Some((id, _)) = parse_snapshot_key(stream, &obj.key) {
            by_id.entry(id.to_owned()).or_default().push(obj);
        }
    }
    let mut out = Checked::default();
    for (id, objects) in by_id {
        let manifest = objects.iter().find(|o| {
            parse_snapshot_key(stream, &o.key).is_some_and(|(_, name)| is_manifest_name(name))
        });
        let Some(manifest) = manifest else {
            bar.inc(objects.iter().map(|o| o.size).sum());
            out.orphans.push(orphans(id, objects.iter()));
            continue;
        };
        bar.inc(manifest.size);
        out.snapshots += 1;
        let m = match read_manifest(store, &manifest.key).await {
            Ok(m) => m,
            Err(p) => {
                out.problems.push(p);
                continue;
            }
        };
        let epoch = match store.keyring().manifest_key(store, &manifest.key, &m).await {
            Ok(k) => k,
            Err(ShipperError::Corrupt {
                key: object,
                source,
            }) => {
                out.problems.push(problem(
                    &manifest.key,
                    ProblemKind::Unauthentic,
                    unauthentic(&manifest.key, &object, &source),
                ));
                continue;
            }
            Err(e) => {
                out.fatal = Some(e);
                return out;
            }
        };
        let named: HashSet<String> = m
            .chunks
            .iter()
            .map(|c| chunk_key(stream, &id, c.index))
            .collect();
        let unnamed: Vec<&Listed> = objects
            .iter()
            .filter(|o| o.key != manifest.key && !named.contains(&o.key))
            .collect();
        if !unnamed.is_empty() {
            bar.inc(unnamed.iter().map(|o| o.size).sum());
            out.orphans.push(orphans(id.clone(), unnamed.into_iter()));
        }
        check_numbering(&m, &manifest.key, &mut out.problems);
        check_position(&m, &manifest.key, chain_start, &mut out.problems);
        check_chunks(store, &m, epoch, &objects, bar, &mut out.problems).await;
    }
    out
}

fn orphans<'a>(id: String, objects: impl Iterator<Item = &'a Listed>) -> Orphans {
    let mut o = Orphans {
        id,
        keys: Vec::new(),
        bytes: 0,
        newest_ms: 0,
    };
    for obj in objects {
        o.keys.push(obj.key.clone());
        o.bytes += obj.size;
        o.newest_ms = o.newest_ms.max(obj.modified_ms);
    }
    o
}

async fn read_manifest(store: &Store, key: &str) -> Result<SnapshotManifest, Problem> {
    let bytes = store
        .get(key)
        .await
        .map_err(|e| problem(key, ProblemKind::Unreadable, e.to_string()))?;
    let m = SnapshotManifest::from_json(&bytes)
        .map_err(|e| problem(key, ProblemKind::Corrupt, e.to_string()))?;
    if manifest_key(&m.stream, &m.id) != key {
        return Err(problem(
            key,
            ProblemKind::Misnamed,
            format!(
                "the manifest is snapshot {} of stream {}, stored elsewhere",
                m.id, m.stream
            ),
        ));
    }
    Ok(m)
}

/// A manifest names chunks 1..=n, at least one: anything else lost or invented a chunk.
fn check_numbering(m: &SnapshotManifest, key: &str, problems: &mut Vec<Problem>) {
    let numbered = m
        .chunks
        .iter()
        .enumerate()
        .all(|(i, c)| u64::from(c.index) == i as u64 + 1);
    if m.chunks.is_empty() || !numbered {
        problems.push(problem(
            key,
            ProblemKind::Incomplete,
            format!(
                "snapshot {} names chunks {:?}, not 1..={}",
                m.id,
                m.chunks.iter().map(|c| c.index).collect::<Vec<_>>(),
                m.chunks.len().max(1)
            ),
        ));
    }
}

/// A snapshot with no stored chain, or one that stands before the chain starts, cannot
/// be restored from.
fn check_position(
    m: &SnapshotManifest,
    key: &str,
    chain_start: Option<&Position>,
    problems: &mut Vec<Problem>,
) {
    let pos = match m.position() {
        Ok(p) => p,
        Err(e) => {
            problems.push(problem(key, ProblemKind::Corrupt, e.to_string()));
            return;
        }
    };
    let Some(start) = chain_start else {
        problems.push(problem(
            key,
            ProblemKind::Gap,
            format!(
                "snapshot {} at {pos} has no stored chain to continue from: a restore refuses a stream without segments",
                m.id
            ),
        ));
        return;
    };
    match pos.cmp_place(start) {
        Ok(std::cmp::Ordering::Less) => problems.push(problem(
            key,
            ProblemKind::Gap,
            format!(
                "snapshot {} stands at {pos}, before the stored chain starts at {start}: a restore from it cannot replay what lies between",
                m.id
            ),
        )),
        Ok(_) => {}
        Err(e) => problems.push(problem(key, ProblemKind::Corrupt, e.to_string())),
    }
}

/// Every chunk the manifest names is stored at its size and opens to its plain bytes.
async fn check_chunks(
    store: &Store,
    m: &SnapshotManifest,
    epoch: Option<Arc<EpochKey>>,
    objects: &[Listed],
    bar: &ProgressBar,
    problems: &mut Vec<Problem>,
) {
    let by_key: HashMap<&str, &Listed> = objects.iter().map(|o| (o.key.as_str(), o)).collect();
    let mut present = Vec::new();
    for c in &m.chunks {
        let key = chunk_key(&m.stream, &m.id, c.index);
        match by_key.get(key.as_str()) {
            None => problems.push(problem(
                &key,
                ProblemKind::Incomplete,
                format!(
                    "snapshot {} names chunk {}, which is not stored",
                    m.id, c.index
                ),
            )),
            Some(o) if o.size != c.stored_bytes => problems.push(problem(
                &key,
                ProblemKind::Corrupt,
                format!(
                    "chunk {} holds {} bytes, its manifest says {}",
                    c.index, o.size, c.stored_bytes
                ),
            )),
            Some(_) => present.push((key, c.clone())),
        }
    }
    let mut opened = Box::pin(read_ahead(
        present,
        store.read_ahead(),
        |(_, c): &(String, ChunkInfo)| c.stored_bytes.saturating_add(c.plain_bytes),
        |(key, c)| {
            let epoch = epoch.clone();
            let id = m.id.clone();
            async move {
                let size = c.stored_bytes;
                let checked = match store.get(&key).await {
                    Ok(stored) => off_runtime(&key, move || {
                        let sealing = epoch
                            .as_deref()
                            .map(|key| ChunkSealing { key, snapshot: &id });
                        Ok(open_chunk(&stored, &c, sealing.as_ref())
                            .map(drop)
                            .map_err(|e| e.to_string()))
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .map_err(|detail| (ProblemKind::Corrupt, detail)),
                    Err(e) => Err((ProblemKind::Unreadable, e.to_string())),
                };
                (key, size, checked)
            }
        },
    ));
    while let Some(item) = opened.next().await {
        let (key, size, checked) = item.into_inner();
        bar.inc(size);
        if let Err((kind, detail)) = checked {
            problems.push(problem(&key, kind, detail));
        }
    }
}

/// What [`remove_orphans`] did with one orphaned snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Its chunks were deleted.
    Removed,
    /// Kept: something under its id was written less than the minimum age ago, or a
    /// manifest appeared since the listing (a snapshot still uploading, or one that just
    /// finished).
    Kept,
}

/// Deletes the orphaned chunks `o` of `stream` if, listed again now, the snapshot still
/// has no manifest and nothing under it was written in the last `min_age_ms`; only chunk
/// objects are deleted.
///
/// # Errors
/// When the store fails (what was deleted before stays deleted).
pub async fn remove_orphans(
    store: &Store,
    stream: &StreamId,
    o: &Orphans,
    now_ms: i64,
    min_age_ms: i64,
) -> Result<Removal> {
    let now = store.list(&snapshot_prefix(stream, &o.id)).await?;
    let finished = now.iter().any(|obj| {
        parse_snapshot_key(stream, &obj.key).is_some_and(|(_, name)| is_manifest_name(name))
    });
    let young = now.iter().any(|obj| now_ms - obj.modified_ms < min_age_ms);
    if finished || young {
        return Ok(Removal::Kept);
    }
    for key in &o.keys {
        let is_chunk = parse_snapshot_key(stream, key)
            .is_some_and(|(_, name)| name.starts_with("chunk-") && name.ends_with(".zst"));
        if is_chunk {
            store.delete(key).await?;
        }
    }
    Ok(Removal::Removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use logferry_common::keys::{manifest_key, snapshots_prefix};
    use logferry_common::snapshot::{seal_chunk, MysqlSnapshot, SnapshotContent};
    use logferry_common::BinlogPos;

    fn stream() -> StreamId {
        StreamId::new("orders").unwrap()
    }

    /// Stores a two-chunk snapshot `id` at `offset` of the first binlog; its manifest.
    async fn snapshot(store: &Store, id: &str, offset: u64) -> SnapshotManifest {
        let mut chunks = Vec::new();
        for (i, text) in [
            &b"CREATE TABLE t (a INT);"[..],
            b"INSERT INTO t VALUES (1);",
        ]
        .into_iter()
        .enumerate()
        {
            let (stored, info) = seal_chunk(i as u32 + 1, text, None).unwrap();
            let key = chunk_key(&stream(), id, info.index);
            store.put_new(&key, Bytes::from(stored)).await.unwrap();
            chunks.push(info);
        }
        let m = SnapshotManifest {
            stream: stream(),
            id: id.into(),
            position: format!("mysql-bin.000001:{offset}"),
            taken_at_ms: 1,
            chunks,
            content: SnapshotContent::Mysql(MysqlSnapshot {
                replica: "r:3306".into(),
                dump_tool: "mariadb-dump".into(),
                tables: Vec::new(),
                users: false,
                accounts_left_out: Vec::new(),
            }),
            key: None,
            mac: None,
            stored_form: Default::default(),
        };
        let body = serde_json::to_vec(&m).unwrap();
        store
            .put_new(&manifest_key(&stream(), id), Bytes::from(body))
            .await
            .unwrap();
        m
    }

    async fn checked(store: &Store, chain_start: u64) -> Checked {
        let objects = store.list(&snapshots_prefix(&stream())).await.unwrap();
        let start = Position::Mysql(BinlogPos::new("mysql-bin.000001", chain_start).unwrap());
        check(
            store,
            &stream(),
            objects,
            Some(&start),
            &ProgressBar::hidden(),
        )
        .await
    }

    fn kinds(c: &Checked) -> Vec<ProblemKind> {
        c.problems.iter().map(|p| p.kind).collect()
    }

    #[tokio::test]
    async fn a_whole_snapshot_in_the_chain_passes() {
        let store = Store::in_memory();
        snapshot(&store, "0000000000001", 400).await;
        let c = checked(&store, 4).await;
        assert_eq!((c.snapshots, kinds(&c)), (1, vec![]));
        assert!(c.orphans.is_empty());
    }

    #[tokio::test]
    async fn a_flipped_byte_a_missing_chunk_and_a_bad_size_are_each_named() {
        let store = Store::in_memory();
        let m = snapshot(&store, "0000000000001", 400).await;
        let key = chunk_key(&stream(), &m.id, 1);
        let mut bytes = store.get(&key).await.unwrap().to_vec();
        bytes[5] ^= 0x01;
        store.delete(&key).await.unwrap();
        store.put_new(&key, Bytes::from(bytes)).await.unwrap();
        let c = checked(&store, 4).await;
        assert_eq!(kinds(&c), vec![ProblemKind::Corrupt], "{:?}", c.problems);
        assert_eq!(c.problems[0].key, key);

        store.delete(&key).await.unwrap();
        let c = checked(&store, 4).await;
        assert_eq!(kinds(&c), vec![ProblemKind::Incomplete], "{:?}", c.problems);

        store
            .put_new(&key, Bytes::from_static(b"short"))
            .await
            .unwrap();
        let c = checked(&store, 4).await;
        assert_eq!(kinds(&c), vec![ProblemKind::Corrupt], "{:?}", c.problems);
        assert!(
            c.problems[0].detail.contains("manifest says"),
            "{:?}",
            c.problems
        );
    }

    #[tokio::test]
    async fn a_snapshot_before_the_chain_is_a_gap() {
        let store = Store::in_memory();
        snapshot(&store, "0000000000001", 400).await;
        let c = checked(&store, 900).await;
        assert_eq!(kinds(&c), vec![ProblemKind::Gap], "{:?}", c.problems);
    }

    #[tokio::test]
    async fn chunks_no_manifest_names_are_orphans_not_problems() {
        let store = Store::in_memory();
        snapshot(&store, "0000000000001", 400).await;
        let (stored, _) = seal_chunk(1, b"half", None).unwrap();
        let unfinished = chunk_key(&stream(), "0000000000002", 1);
        store
            .put_new(&unfinished, Bytes::from(stored))
            .await
            .unwrap();
        let extra = chunk_key(&stream(), "0000000000001", 9);
        store
            .put_new(&extra, Bytes::from_static(b"x"))
            .await
            .unwrap();
        let c = checked(&store, 4).await;
        assert_eq!((c.snapshots, kinds(&c)), (1, vec![]));
        let orphaned: Vec<(&str, &[String])> = c
            .orphans
            .iter()
            .map(|o| (o.id.as_str(), o.keys.as_slice()))
            .collect();
        assert_eq!(
            orphaned,
            vec![
                ("0000000000001", &[extra][..]),
                ("0000000000002", &[unfinished][..])
            ]
        );
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    #[tokio::test]
    async fn orphans_go_only_when_old_and_still_without_a_manifest() {
        let store = Store::in_memory();
        let hour = 3_600_000;
        let put_half = |id: &'static str| {
            let store = store.clone();
            async move {
                let (stored, _) = seal_chunk(1, b"half", None).unwrap();
                let key = chunk_key(&stream(), id, 1);
                store.put_new(&key, Bytes::from(stored)).await.unwrap();
                key
            }
        };
        let young = put_half("0000000000002").await;
        let orphan = checked(&store, 4).await.orphans.remove(0);
        let kept = remove_orphans(&store, &stream(), &orphan, now(), hour).await;
        assert_eq!(kept.unwrap(), Removal::Kept, "written just now");
        assert!(store.get(&young).await.is_ok());

        // Finished since the listing: its manifest is there now.
        snapshot(&store, "0000000000002", 400).await;
        let later = now() + 2 * hour;
        let kept = remove_orphans(&store, &stream(), &orphan, later, hour).await;
        assert_eq!(kept.unwrap(), Removal::Kept, "a manifest appeared");
        assert!(store.get(&young).await.is_ok());

        let old = put_half("0000000000003").await;
        let c = checked(&store, 4).await;
        let orphan = c.orphans.iter().find(|o| o.id == "0000000000003").unwrap();
        let gone = remove_orphans(&store, &stream(), orphan, later, hour).await;
        assert_eq!(gone.unwrap(), Removal::Removed);
        assert!(store.get(&old).await.is_err());
    }

    #[tokio::test]
    async fn a_manifest_naming_no_chunk_is_incomplete() {
        let store = Store::in_memory();
        let mut m = snapshot(&store, "0000000000001", 400).await;
        m.id = "0000000000005".into();
        m.chunks.clear();
        let key = manifest_key(&stream(), &m.id);
        store
            .put_new(&key, Bytes::from(serde_json::to_vec(&m).unwrap()))
            .await
            .unwrap();
        let c = checked(&store, 4).await;
        assert!(
            c.problems
                .iter()
                .any(|p| p.key == key && p.kind == ProblemKind::Incomplete),
            "{:?}",
            c.problems
        );
    }

    #[tokio::test]
    async fn a_snapshot_without_a_chain_cannot_be_restored_from() {
        let store = Store::in_memory();
        snapshot(&store, "0000000000001", 400).await;
        let objects = store.list(&snapshots_prefix(&stream())).await.unwrap();
        let c = check(&store, &stream(), objects, None, &ProgressBar::hidden()).await;
        assert_eq!(kinds(&c), vec![ProblemKind::Gap], "{:?}", c.problems);
    }

    #[tokio::test]
    async fn a_manifest_that_does_not_parse_is_corrupt() {
        let store = Store::in_memory();
        let key = manifest_key(&stream(), "0000000000001");
        store
            .put_new(&key, Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        let c = checked(&store, 4).await;
        assert_eq!((c.snapshots, kinds(&c)), (1, vec![ProblemKind::Corrupt]));
    }
}
