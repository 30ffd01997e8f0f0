//! The segmenter: gathers events into a segment and cuts it at a size or age limit, only
//! ever between transactions. Compressing and hashing the cut payload ([`SealJob::seal`]) is
//! left to the caller, so that it can run on another thread while the next segment fills.

use std::time::{Duration, Instant};

use logferry_common::segment::Sealer;
use logferry_common::{Position, Segment, SegmentMeta, SourceKind, StreamId};

use crate::error::Result;
use crate::sources::SourceEvent;

/// Binlog commit times are whole seconds: an event stamped T committed up to 999 ms later,
/// so data counts as older than the seal age only past this much more.
const COMMIT_TIME_RESOLUTION_MS: i64 = 1000;

/// The open segment's content up to its last transaction boundary.
#[derive(Debug, Clone)]
struct Boundary {
    payload_len: usize,
    end: Position,
    last_event_ms: i64,
    event_count: u64,
}

/// A cut segment: its metadata and plaintext payload, not yet compressed or hashed.
#[derive(Debug)]
pub struct SealJob {
    /// Positions, times and count of the segment.
    pub meta: SegmentMeta,
    /// The payload records; the buffer goes back to [`Segmenter::recycle`] after sealing.
    pub payload: Vec<u8>,
    /// When the first event of the segment was received, ms since the Unix epoch.
    pub read_ms: i64,
}

impl SealJob {
    /// Compresses and hashes the payload into an encoded segment with `sealer`.
    ///
    /// # Errors
    /// When compression fails.
    pub fn seal(&self, sealer: &mut Sealer) -> Result<Segment> {
        Ok(sealer.seal(self.meta.clone(), &self.payload)?)
    }
}

/// Gathers events and decides when to cut.
///
/// Invariant: a sealed segment ends at a transaction boundary, so a restore that applies
/// whole segments never applies half a transaction.
#[derive(Debug)]
pub struct Segmenter {
    stream: StreamId,
    kind: SourceKind,
    max_bytes: usize,
    max_age: Duration,
    payload: Vec<u8>,
    /// A payload buffer back from sealing, reused for the next segment.
    spare: Option<Vec<u8>>,
    start: Option<Position>,
    first_event_ms: i64,
    opened_at: Option<Instant>,
    count: u64,
    boundary: Option<Boundary>,
}

impl Segmenter {
    /// A segmenter for `stream` that seals at `max_bytes` or `max_age`, whichever first.
    pub fn new(stream: StreamId, kind: SourceKind, max_bytes: u64, max_age: Duration) -> Self {
        Segmenter {
            stream,
            kind,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            max_age,
            payload: Vec::new(),
            spare: None,
            start: None,
            first_event_ms: 0,
            opened_at: None,
            count: 0,
            boundary: None,
        }
    }

    /// Adds an event; `preamble` is asked for when the event opens a new segment.
    pub fn push(&mut self, ev: SourceEvent, preamble: impl FnOnce() -> Vec<u8>) {
        if self.start.is_none() {
            // Buffers keep their capacity from segment to segment: no regrowth and no
            // fresh pages for the kernel to zero on every segment.
            if let Some(spare) = self.spare.take() {
                if spare.capacity() > self.payload.capacity() {
                    self.payload = spare;
                }
            }
            self.payload.clear();
            self.payload.extend_from_slice(&preamble());
            self.start = Some(ev.start.clone());
            self.first_event_ms = ev.time_ms;
            self.opened_at = Some(Instant::now());
        }
        self.payload.extend_from_slice(&ev.record);
        self.count += 1;
        if ev.boundary {
            self.boundary = Some(Boundary {
                payload_len: self.payload.len(),
                end: ev.end,
                last_event_ms: ev.time_ms,
                event_count: self.count,
            });
        }
    }

    fn at_boundary(&self) -> bool {
        self.boundary
            .as_ref()
            .is_some_and(|b| b.payload_len == self.payload.len())
    }

    /// When the open segment must be sealed by age; `None` while it is empty or a
    /// transaction is in progress (it is then sealed when that transaction ends).
    pub fn deadline(&self) -> Option<Instant> {
        if !self.at_boundary() {
            return None;
        }
        self.opened_at.map(|t| t + self.max_age)
    }

    /// Whether the open segment should be sealed now: it ends at a boundary and is big or
    /// old enough.
    pub fn should_seal(&self, now: Instant) -> bool {
        self.at_boundary()
            && (self.payload.len() >= self.max_bytes
                || self.opened_at.is_some_and(|t| now >= t + self.max_age))
    }

    /// Whether the open segment should be sealed because its data is already older than the
    /// seal age (by source commit time) and the source has nothing more queued: a catch-up
    /// reached the head, and waiting out the age would only delay data whose RPO budget is
    /// spent. Under live load the data is fresh and the age rule of [`Self::should_seal`]
    /// applies.
    pub fn is_stale(&self, now_ms: i64) -> bool {
        self.at_boundary()
            && self.opened_at.is_some()
            && now_ms - self.first_event_ms
                >= self.max_age.as_millis() as i64 + COMMIT_TIME_RESOLUTION_MS
    }

    /// Time the oldest event in the open segment was received, if any.
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    /// Gives back a payload buffer after its segment was sealed: its capacity serves the
    /// next segment (no regrowth, no fresh pages for the kernel to zero).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self
            .spare
            .as_ref()
            .is_none_or(|s| s.capacity() < buf.capacity())
        {
            self.spare = Some(buf);
        }
    }

    /// Cuts everything up to the last boundary. Events after it (a transaction in
    /// progress) are dropped: callers cut either at a boundary ([`Self::should_seal`]) or
    /// when the source stops, and the source resumes at the cut end. Returns `None` when
    /// no transaction is complete.
    pub fn seal(&mut self) -> Option<SealJob> {
        let (Some(b), Some(start)) = (self.boundary.take(), self.start.take()) else {
            self.truncate_to_boundary();
            return None;
        };
        self.payload.truncate(b.payload_len);
        let meta = SegmentMeta {
            stream: self.stream.clone(),
            source: self.kind,
            start,
            end: b.end,
            first_event_ms: self.first_event_ms,
            last_event_ms: b.last_event_ms,
            event_count: b.event_count,
        };
        let read_ms = self.opened_at.map_or_else(crate::metrics::now_ms, |t| {
            crate::metrics::now_ms() - t.elapsed().as_millis() as i64
        });
        let payload = std::mem::take(&mut self.payload);
        self.opened_at = None;
        self.count = 0;
        Some(SealJob {
            meta,
            payload,
            read_ms,
        })
    }

    /// Drops events after the last boundary (a transaction cut by a reconnect) and returns
    /// the position the source must resume from, if the open segment has a boundary.
    pub fn truncate_to_boundary(&mut self) -> Option<Position> {
        match &self.boundary {
            Some(b) => {
                self.payload.truncate(b.payload_len);
                self.count = b.event_count;
                Some(b.end.clone())
            }
            None => {
                self.payload.clear();
                self.start = None;
                self.opened_at = None;
                self.count = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_common::BinlogPos;

    fn ev(at: u64, boundary: bool) -> SourceEvent {
        SourceEvent {
            record: vec![0u8; 100],
            start: Position::Binlog(BinlogPos::new("b.000001", at)),
            end: Position::Binlog(BinlogPos::new("b.000001", at + 100)),
            time_ms: at as i64,
            boundary,
            caught_up: false,
        }
    }

    fn segmenter(max_bytes: u64) -> Segmenter {
        let s = StreamId::new("s").unwrap();
        Segmenter::new(s, SourceKind::Mysql, max_bytes, Duration::from_secs(3600))
    }

    #[test]
    fn seals_by_size_only_at_a_boundary() {
        let mut s = segmenter(250);
        s.push(ev(4, false), Vec::new);
        s.push(ev(104, false), Vec::new);
        s.push(ev(204, false), Vec::new);
        assert!(!s.should_seal(Instant::now()), "mid-transaction");
        assert!(s.deadline().is_none());
        s.push(ev(304, true), Vec::new);
        assert!(s.should_seal(Instant::now()));
        let job = s.seal().unwrap();
        assert_eq!(job.meta.event_count, 4);
        assert_eq!(job.meta.end.to_string(), "b.000001:404");
        assert_eq!(job.payload.len(), 400);
        let seg = job
            .seal(&mut Sealer::new(logferry_common::Compression::Zstd(3)).unwrap())
            .unwrap();
        assert_eq!(seg.payload().unwrap(), job.payload);
    }

    #[test]
    fn seals_by_age() {
        let mut s = segmenter(1 << 20);
        s.push(ev(4, true), Vec::new);
        let deadline = s.deadline().unwrap();
        assert!(!s.should_seal(Instant::now()));
        assert!(s.should_seal(deadline));
    }

    #[test]
    fn old_data_is_stale_only_at_a_boundary() {
        let mut s = segmenter(1 << 20);
        s.push(ev(4, false), Vec::new);
        assert!(!s.is_stale(10_000_000), "mid-transaction");
        s.push(ev(104, true), Vec::new);
        assert!(s.is_stale(10_000_000), "committed long ago");
        assert!(!s.is_stale(104 + 100), "fresh data waits for the seal age");
        let mut fast = Segmenter::new(
            StreamId::new("s").unwrap(),
            SourceKind::Mysql,
            1 << 20,
            Duration::from_millis(200),
        );
        fast.push(ev(4_000, true), Vec::new);
        assert!(
            !fast.is_stale(4_000 + 900),
            "a whole-second commit time is not evidence of old data"
        );
        assert!(fast.is_stale(4_000 + 1_300));
    }

    #[test]
    fn truncation_keeps_whole_transactions() {
        let mut s = segmenter(1 << 20);
        s.push(ev(4, true), || vec![1, 2, 3]);
        s.push(ev(104, false), Vec::new);
        assert_eq!(
            s.truncate_to_boundary().unwrap().to_string(),
            "b.000001:104"
        );
        let job = s.seal().unwrap();
        assert_eq!(job.meta.event_count, 1);
        assert_eq!(job.payload.len(), 103);
        assert!(s.seal().is_none());
    }

    #[test]
    fn a_recycled_buffer_serves_the_next_segment() {
        let mut s = segmenter(1 << 20);
        s.push(ev(4, true), Vec::new);
        let first = s.seal().unwrap();
        let cap = first.payload.capacity();
        let ptr = first.payload.as_ptr();
        s.recycle(first.payload);
        s.push(ev(104, true), Vec::new);
        let second = s.seal().unwrap();
        assert_eq!(second.payload.len(), 100, "old content cleared");
        assert_eq!(second.payload.as_ptr(), ptr);
        assert!(second.payload.capacity() >= cap);
    }
}
