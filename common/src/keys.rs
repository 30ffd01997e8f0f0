//! Object-store key grammar: the one place that knows how keys are spelled.
//!
//! ```text
//! streams/<stream>/segments/<start sort key>-<end sort key>.lfs
//! streams/<stream>/snapshots/<id>/chunk-<000001>.zst
//! streams/<stream>/snapshots/<id>/manifest.json
//! streams/<stream>/drills/<unix ms, 13 digits>.json
//! streams/<stream>/keys/<epoch>.json
//! ```
//! A sort key is the fixed-width rendering of [`Position::sort_key`](crate::Position::sort_key),
//! so a plain listing of a stream's prefix returns its segments in log order and the chain
//! can be checked from keys alone.

use crate::{Error, Result, StreamId};

/// File extension of a sealed segment, in the store and in the agent's spool.
pub const SEGMENT_EXT: &str = "lfs";

/// The prefix every stream's objects live under.
pub const STREAMS_PREFIX: &str = "streams";

/// File name of a snapshot's manifest inside its folder.
const MANIFEST_NAME: &str = "manifest.json";

/// Prefix of everything of one stream, or of every stream when `stream` is `None`.
pub fn stream_prefix(stream: Option<&StreamId>) -> String {
    match stream {
        Some(s) => format!("{STREAMS_PREFIX}/{s}"),
        None => STREAMS_PREFIX.to_owned(),
    }
}

/// Prefix under which all of a stream's segments live.
pub fn segments_prefix(stream: &StreamId) -> String {
    format!("{STREAMS_PREFIX}/{stream}/segments")
}

/// File name of a segment (shared by the object key and the spool file).
pub fn segment_file_name(start_key: &str, end_key: &str) -> String {
    format!("{start_key}-{end_key}.{SEGMENT_EXT}")
}

/// Full object key of a segment.
pub fn segment_key(stream: &StreamId, start_key: &str, end_key: &str) -> String {
    format!(
        "{}/{}",
        segments_prefix(stream),
        segment_file_name(start_key, end_key)
    )
}

/// Splits a segment file name back into its start and end sort keys.
///
/// # Errors
/// [`Error::Invalid`] when `name` is not `<start>-<end>.lfs`.
pub fn parse_segment_file_name(name: &str) -> Result<(String, String)> {
    let stem = name
        .strip_suffix(&format!(".{SEGMENT_EXT}"))
        .ok_or_else(|| Error::invalid("segment file name", format!("{name:?} lacks .lfs")))?;
    let (start, end) = stem
        .split_once('-')
        .ok_or_else(|| Error::invalid("segment file name", format!("{name:?}: no START-END")))?;
    if start.is_empty() || end.is_empty() {
        return Err(Error::invalid("segment file name", name.to_owned()));
    }
    Ok((start.to_owned(), end.to_owned()))
}

/// The start and end sort keys of a segment's object key; `None` for other objects.
pub fn parse_segment_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(STREAMS_PREFIX)?.strip_prefix('/')?;
    let (_, tail) = rest.split_once("/segments/")?;
    parse_segment_file_name(tail).ok()
}

/// Stream name of a key under `streams/`, if it is one.
pub fn stream_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(STREAMS_PREFIX)?
        .strip_prefix('/')?
        .split('/')
        .next()
}

/// Prefix of a stream's snapshots.
pub fn snapshots_prefix(stream: &StreamId) -> String {
    format!("{STREAMS_PREFIX}/{stream}/snapshots")
}

/// Prefix of one snapshot's objects (its chunks and manifest), ending in `/`.
pub fn snapshot_prefix(stream: &StreamId, id: &str) -> String {
    format!("{}/{id}/", snapshots_prefix(stream))
}

/// Key of chunk `index` of snapshot `id`.
pub fn chunk_key(stream: &StreamId, id: &str, index: u32) -> String {
    format!("{}chunk-{index:06}.zst", snapshot_prefix(stream, id))
}

/// Key of the manifest of snapshot `id`.
pub fn manifest_key(stream: &StreamId, id: &str) -> String {
    format!("{}{MANIFEST_NAME}", snapshot_prefix(stream, id))
}

/// Prefix of a stream's restore-drill results.
pub fn drills_prefix(stream: &StreamId) -> String {
    format!("{STREAMS_PREFIX}/{stream}/drills")
}

/// Key of the result of a drill of `stream` that started at `at_ms` (ms since the epoch);
/// fixed width, so a listing returns drills oldest first.
pub fn drill_key(stream: &StreamId, at_ms: i64) -> String {
    format!("{}/{at_ms:013}.json", drills_prefix(stream))
}

/// Prefix of a stream's fork records (written by the shipper when a leg begins after a fork).
pub fn forks_prefix(stream: &StreamId) -> String {
    format!("{STREAMS_PREFIX}/{stream}/forks")
}

/// Key of the record of the fork that began leg `leg` of `stream`, recorded at `at_ms`; the
/// time leads, so a listing returns forks oldest first and says when without a read.
pub fn fork_key(stream: &StreamId, at_ms: i64, leg: u32) -> String {
    format!("{}/{at_ms:013}-leg{leg}.json", forks_prefix(stream))
}

/// When a fork record's key says it was recorded (ms since the epoch).
pub fn fork_time(key: &str) -> Option<i64> {
    key.rsplit('/').next()?.split('-').next()?.parse().ok()
}

/// Prefix of a stream's promotion reports (`logferry-shipper promote`).
pub fn promotions_prefix(stream: &StreamId) -> String {
    format!("{STREAMS_PREFIX}/{stream}/promotions")
}

/// Key of the report of a promotion of `stream` that started at `at_ms`; fixed width, so a
/// listing returns promotions oldest first.
pub fn promotion_key(stream: &StreamId, at_ms: i64) -> String {
    format!("{}/{at_ms:013}.json", promotions_prefix(stream))
}

/// Prefix of a stream's key capsules ([`crate::crypto::KeyCapsule`]).
pub fn capsules_prefix(stream: &StreamId) -> String {
    format!("{STREAMS_PREFIX}/{stream}/keys")
}

/// Key of the capsule of `epoch` (a valid epoch id: its grammar keeps the key in place).
pub fn capsule_key(stream: &StreamId, epoch: &str) -> String {
    format!("{}/{epoch}.json", capsules_prefix(stream))
}

/// The epoch of a capsule's key (`streams/<stream>/keys/<epoch>.json`); `None` for other
/// keys.
pub fn capsule_epoch(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(STREAMS_PREFIX)?.strip_prefix('/')?;
    let (_, tail) = rest.split_once("/keys/")?;
    let epoch = tail.strip_suffix(".json")?;
    crate::crypto::validate_epoch(epoch).ok().map(|()| epoch)
}

/// The snapshot id and the object's name (`chunk-000001.zst`, `manifest.json`) of a key
/// under `stream`'s snapshots; `None` for other keys.
pub fn parse_snapshot_key<'a>(stream: &StreamId, key: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = key
        .strip_prefix(&snapshots_prefix(stream))?
        .strip_prefix('/')?;
    rest.split_once('/')
        .filter(|(id, name)| !id.is_empty() && !name.contains('/'))
}

/// Whether `name` (see [`parse_snapshot_key`]) is a manifest's.
pub fn is_manifest_name(name: &str) -> bool {
    name == MANIFEST_NAME
}

/// Whether `key` is a snapshot manifest's key.
pub fn is_manifest_key(key: &str) -> bool {
    key.strip_suffix(MANIFEST_NAME)
        .is_some_and(|k| k.ends_with('/') && k.contains("/snapshots/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let s = StreamId::new("db1").unwrap();
        let key = segment_key(
            &s,
            "0000000001_0000000000000004",
            "0000000001_0000000000000900",
        );
        assert_eq!(stream_of_key(&key), Some("db1"));
        let (a, b) = parse_segment_key(&key).unwrap();
        assert_eq!(a, "0000000001_0000000000000004");
        assert_eq!(b, "0000000001_0000000000000900");
        assert!(parse_segment_file_name("x.txt").is_err());
        assert!(parse_segment_key("streams/db1/other/x.json").is_none());
        assert!(key.starts_with(&stream_prefix(Some(&s))));
    }

    #[test]
    fn capsule_keys_are_recognised() {
        let s = StreamId::new("db").unwrap();
        let epoch = "1700000000000-0011223344556677";
        assert_eq!(capsule_epoch(&capsule_key(&s, epoch)), Some(epoch));
        assert_eq!(capsule_epoch("streams/db/keys/x.json"), None);
        assert_eq!(capsule_epoch("streams/db/segments/a-b.lfs"), None);
    }

    #[test]
    fn snapshot_keys_sort_and_are_recognised() {
        let s = StreamId::new("db").unwrap();
        assert!(manifest_key(&s, "0000000000999") < manifest_key(&s, "0000000001000"));
        assert!(chunk_key(&s, "0000000000001", 2).ends_with("chunk-000002.zst"));
        assert!(is_manifest_key(&manifest_key(&s, "0000000000001")));
        assert!(!is_manifest_key(&chunk_key(&s, "0000000000001", 1)));
        let chunk = chunk_key(&s, "0000000000001", 3);
        assert_eq!(
            parse_snapshot_key(&s, &chunk),
            Some(("0000000000001", "chunk-000003.zst"))
        );
        let manifest = manifest_key(&s, "7");
        let (_, name) = parse_snapshot_key(&s, &manifest).unwrap();
        assert!(is_manifest_name(name));
        assert_eq!(parse_snapshot_key(&s, "streams/db/segments/a-b.lfs"), None);
    }
}
