//! Object-store key grammar.
//!
//! `streams/<stream>/segments/<start sort key>-<end sort key>.lfs`, where a sort key is the
//! fixed-width rendering of [`Position::sort_key`](crate::Position::sort_key), so a plain listing of a stream's prefix
//! returns its segments in log order and the chain can be checked from keys alone.

use crate::{Error, Result, StreamId};

/// File extension of a sealed segment, in the store and in the agent's spool.
pub const SEGMENT_EXT: &str = "lfs";

/// Prefix under which all of a stream's segments live.
pub fn segments_prefix(stream: &StreamId) -> String {
    format!("streams/{stream}/segments")
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

/// Stream name of a key under `streams/`, if it is one.
pub fn stream_of_key(key: &str) -> Option<&str> {
    key.strip_prefix("streams/")?.split('/').next()
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
        let name = key.rsplit('/').next().unwrap();
        let (a, b) = parse_segment_file_name(name).unwrap();
        assert_eq!(a, "0000000001_0000000000000004");
        assert_eq!(b, "0000000001_0000000000000900");
        assert!(parse_segment_file_name("x.txt").is_err());
    }
}
