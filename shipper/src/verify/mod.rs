//! `verify`: checks every stream's chain and snapshots from the object store alone (no
//! shipper needed): each segment decodes, its trailer matches, its payload opens with its
//! key (the AES-GCM tag over payload and header) or, in clear, matches its sha256, its key
//! matches its header, its events run unbroken from its start to its end, and each segment
//! starts where the previous one ended; [`snapshots`] checks every snapshot's manifest and
//! chunks and where it stands in the chain.

pub mod snapshots;

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;
use logferry_common::keys::stream_of_key;
use logferry_common::{DecodeLimits, Position, Segment, SegmentHeader, StreamId};

use crate::sources;

use crate::catalog::segment_ref;
use crate::error::{Result, ShipperError};
use crate::read_ahead::read_ahead;
use crate::restore::off_runtime;
use crate::storage::{Listed, Store};

/// What kind of problem an object has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The object fails a checksum or does not decode.
    Corrupt,
    /// The segment does not start where the previous one ended (events missing).
    Gap,
    /// The segment starts before the previous one ended (events twice).
    Overlap,
    /// The key does not match the header (stream or positions).
    Misnamed,
    /// The object cannot be read from the store.
    Unreadable,
    /// A snapshot's manifest names a chunk that is not stored.
    Incomplete,
    /// The object was not written by a holder of the stream's key: a manifest or drill
    /// record whose MAC fails, an object in clear in an encrypted store, a key reference
    /// with no capsule.
    Unauthentic,
    /// The segment comes from another server than the one before it without continuing
    /// the chain as a new leg: two databases written to one stream.
    Foreign,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Corrupt => "CORRUPT",
            ProblemKind::Gap => "GAP",
            ProblemKind::Overlap => "OVERLAP",
            ProblemKind::Misnamed => "MISNAMED",
            ProblemKind::Unreadable => "UNREADABLE",
            ProblemKind::Incomplete => "INCOMPLETE",
            ProblemKind::Unauthentic => "UNAUTHENTIC",
            ProblemKind::Foreign => "FOREIGN",
        })
    }
}

/// One problem with one object.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The object key.
    pub key: String,
    /// Its kind.
    pub kind: ProblemKind,
    /// Details for the operator.
    pub detail: String,
}

/// The verdict for one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Stream name.
    pub stream: String,
    /// Segments examined.
    pub segments: u64,
    /// Events in the valid segments.
    pub events: u64,
    /// Bytes examined.
    pub bytes: u64,
    /// Start of the first valid segment.
    pub start: Option<String>,
    /// End of the last valid segment.
    pub end: Option<String>,
    /// Snapshots checked (those with a manifest).
    pub snapshots: u64,
    /// Everything wrong: the chain's problems in key order, then the snapshots'.
    pub problems: Vec<Problem>,
    /// Snapshot objects no manifest names (not a problem of the backup: a snapshot that did
    /// not finish, or one still uploading).
    pub orphans: Vec<snapshots::Orphans>,
}

/// Verifies every stream (or only `only`), advancing `bar` by bytes read.
///
/// # Errors
/// When the store cannot be listed; unreadable objects are reported as problems.
pub async fn verify(
    store: &Store,
    only: Option<&StreamId>,
    bar: &ProgressBar,
) -> Result<Vec<StreamReport>> {
    let prefix = logferry_common::keys::stream_prefix(only);
    let mut by_stream: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    let listed = store.list(&prefix).await?;
    bar.set_length(listed.iter().map(|o| o.size).sum());
    for obj in listed {
        let stream = stream_of_key(&obj.key).unwrap_or("?").to_owned();
        by_stream.entry(stream).or_default().push(obj);
    }
    let mut reports = Vec::new();
    for (stream, objects) in by_stream {
        let mut r = StreamReport {
            stream: stream.clone(),
            ..StreamReport::default()
        };
        let mut prev_end: Option<(String, Position)> = None;
        let mut prev_meta: Option<logferry_common::SegmentMeta> = None;
        let mut first_start: Option<Position> = None;
        let (segment_objects, others): (Vec<Listed>, Vec<Listed>) = objects
            .into_iter()
            .partition(|o| segment_ref(&o.key, o.size).is_some());
        let segments = segment_objects
            .iter()
            .filter_map(|o| segment_ref(&o.key, o.size));
        let mut checked = Box::pin(read_ahead(
            segments,
            store.read_ahead(),
            |seg| seg.size,
            |seg| async move {
                let checked = match store.get(&seg.key).await {
                    Ok(bytes) => check_stored(store, &seg.key, bytes).await,
                    Err(e) => Ok(Err((ProblemKind::Unreadable, e.to_string()))),
                };
                (seg, checked)
            },
        ));
        while let Some(item) = checked.next().await {
            let (seg_ref, checked) = item.into_inner();
            // A key that is not configured or not the right one stops the check: nothing
            // encrypted could be checked, and the message names the key.
            let checked = checked?;
            let key = seg_ref.key.clone();
            bar.inc(seg_ref.size);
            r.segments += 1;
            r.bytes += seg_ref.size;
            let header = match checked {
                Ok(h) => h,
                Err((kind, detail)) => {
                    r.problems.push(problem(&key, kind, detail));
                    continue;
                }
            };
            let m = &header.meta;
            if let Err(detail) = crate::catalog::check_placed(&key, &header) {
                r.problems
                    .push(problem(&key, ProblemKind::Misnamed, detail));
                continue;
            }
            if let Some((prev_key, prev)) = &prev_end {
                match m.start.cmp_place(prev) {
                    Ok(std::cmp::Ordering::Equal) => {}
                    Err(e) => r
                        .problems
                        .push(problem(&key, ProblemKind::Corrupt, e.to_string())),
                    Ok(std::cmp::Ordering::Greater) => r.problems.push(problem(
                        &key,
                        ProblemKind::Gap,
                        format!(
                            "starts at {} but the previous segment {prev_key} ends at {prev}",
                            m.start
                        ),
                    )),
                    Ok(std::cmp::Ordering::Less) => r.problems.push(problem(
                        &key,
                        ProblemKind::Overlap,
                        format!(
                            "starts at {} before the previous segment {prev_key} ends at {prev}",
                            m.start
                        ),
                    )),
                }
            }
            if let Some(detail) = prev_meta.as_ref().and_then(|p| m.may_follow(p)) {
                r.problems.push(problem(&key, ProblemKind::Foreign, detail));
            }
            prev_meta = Some(m.clone());
            if r.start.is_none() {
                r.start = Some(m.start.to_string());
                first_start = Some(m.start.clone());
            }
            r.end = Some(m.end.to_string());
            r.events += m.event_count;
            prev_end = Some((key, m.end.clone()));
        }
        if let Ok(id) = StreamId::new(&stream) {
            let checked = snapshots::check(store, &id, others, first_start.as_ref(), bar).await;
            if let Some(e) = checked.fatal {
                return Err(e);
            }
            for (key, why) in crate::drill_record::check(store, &id).await? {
                r.problems
                    .push(problem(&key, ProblemKind::Unauthentic, why));
            }
            r.snapshots = checked.snapshots;
            r.problems.extend(checked.problems);
            r.orphans = checked.orphans;
        }
        reports.push(r);
    }
    Ok(reports)
}

pub(crate) fn problem(key: &str, kind: ProblemKind, detail: String) -> Problem {
    Problem {
        key: key.to_owned(),
        kind,
        detail,
    }
}

/// What checking one object found: its header, or the problem.
type Checked<T> = std::result::Result<T, (ProblemKind, String)>;

/// Fully validates one encoded segment: trailer, key, payload (decrypted with its epoch
/// key, or in clear where that is accepted) and the payload's inner structure.
///
/// # Errors
/// [`ShipperError::Key`] when a master key is missing or wrong (the check cannot go on).
async fn check_stored(store: &Store, key: &str, bytes: Bytes) -> Result<Checked<SegmentHeader>> {
    let corrupt = |e: logferry_common::Error| (ProblemKind::Corrupt, e.to_string());
    let seg = match off_runtime(key, move || {
        Ok(Segment::decode(bytes, &DecodeLimits::stored()))
    })
    .await?
    {
        Ok(seg) => seg,
        Err(e) => return Ok(Err(corrupt(e))),
    };
    let epoch = match store.keyring().segment_key(store, key, &seg.header).await {
        Ok(k) => k,
        Err(ShipperError::Corrupt {
            key: object,
            source,
        }) => {
            return Ok(Err((
                ProblemKind::Unauthentic,
                unauthentic(key, &object, &source),
            )))
        }
        Err(e) => return Err(e),
    };
    off_runtime(key, move || {
        let payload = match &epoch {
            Some(k) => seg.open(k),
            None => seg.payload(),
        };
        let checked = payload.map_err(|e| e.to_string()).and_then(|payload| {
            let m = &seg.header.meta;
            let n = sources::check_payload(m.source, &payload, m.events_start(), &m.end)
                .map_err(|e| e.to_string())?;
            if n == m.event_count {
                Ok(())
            } else {
                Err(format!(
                    "payload holds {n} events, header says {}",
                    m.event_count
                ))
            }
        });
        Ok(checked
            .map(|()| seg.header)
            .map_err(|detail| (ProblemKind::Corrupt, detail)))
    })
    .await
}

/// The detail of an object found unauthentic because of `object` (itself, or the capsule
/// it names).
pub(crate) fn unauthentic(key: &str, object: &str, source: &logferry_common::Error) -> String {
    if key == object {
        source.to_string()
    } else {
        format!("{object}: {source}")
    }
}
