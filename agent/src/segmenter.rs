//! The segmenter: gathers events into a segment and cuts it at a size or age limit. A
//! segment is cut at `segment.max_bytes` whatever the transaction, so no transaction has to
//! fit in memory; its header then names where the open transaction began (`open_trx`).
//! Age cuts wait for a transaction boundary, which is where a restore may stop. Compressing
//! and hashing the cut payload ([`SealJob::seal`]) is left to the caller, so that it can run
//! on another thread while the next segment fills.

use std::time::Duration;

// The runtime's clock, so that the seal-age rules run under tests with a paused clock.
use tokio::time::Instant;

use logferry_common::segment::Sealer;
use logferry_common::{Lineage, Position, Segment, SegmentMeta, SourceKind, StreamId, TrxMark};

use crate::error::{AgentError, Result};
use crate::resume::ResumePoint;
use crate::sources::{NewLeg, SourceEvent};

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
/// Invariants: a segment holds at most `max_bytes` plus one event; a segment that ends
/// inside a transaction says where it began; after a reconnect or a restart, events that
/// are already in a sealed segment are recognised by position and dropped, so each event is
/// stored once.
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
    /// End and commit time of the last event pushed into the open segment.
    last: Option<(Position, i64)>,
    /// End of the last transaction boundary seen, in any segment: where a source resumes.
    last_boundary: Option<Position>,
    /// Where the transaction in progress began, if one is (it may have begun in a sealed
    /// segment).
    open_trx: Option<Position>,
    /// The stored end so far: end and open transaction of the last sealed segment.
    sealed: Option<ResumePoint>,
    /// Events that end at or before this place are already sealed: the source re-sends them
    /// after resuming at the start of the transaction they belong to.
    skip_to: Option<Position>,
    /// The server the events come from.
    origin: String,
    /// The chain's last whole transaction so far.
    last_trx: Option<TrxMark>,
    /// The stream continues on another server: the next segment opened starts this leg.
    pending_leg: Option<NewLeg>,
    /// The open segment starts a leg after a fork: where the previous leg's history goes on.
    forks_at: Option<Position>,
    /// The open segment is a new leg's first: where its first event starts.
    leg_start: Option<Position>,
}

impl Segmenter {
    /// A segmenter for `stream` that seals at `max_bytes` or `max_age`, whichever first,
    /// continuing after `resume` (what is already stored or spooled) when given.
    pub fn new(
        stream: StreamId,
        kind: SourceKind,
        max_bytes: u64,
        max_age: Duration,
        resume: Option<&ResumePoint>,
    ) -> Self {
        let mut seg = Segmenter {
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
            last: None,
            last_boundary: None,
            open_trx: None,
            sealed: None,
            skip_to: None,
            origin: String::new(),
            last_trx: None,
            pending_leg: None,
            forks_at: None,
            leg_start: None,
        };
        if let Some(r) = resume {
            seg.origin.clone_from(&r.origin);
            seg.last_trx.clone_from(&r.last_trx);
            seg.last_boundary = Some(r.connect_at().clone());
            seg.open_trx = r.open_trx.clone();
            seg.skip_to = r.open_trx.is_some().then(|| r.end.clone());
            seg.sealed = Some(r.clone());
        }
        seg
    }

    /// Whether `ev` is already in a sealed segment (re-sent after a resume): [`Self::push`]
    /// drops it.
    ///
    /// # Errors
    /// [`AgentError::Segment`] for an event of another kind of log than the stream's.
    pub fn is_stored(&self, ev: &SourceEvent) -> Result<bool> {
        match &self.skip_to {
            Some(skip) => Ok(ev.end.cmp_place(skip)?.is_le()),
            None => Ok(false),
        }
    }

    /// Adds an event; `preamble` is asked for when the event opens a new segment. Returns
    /// `false` when the event was already sealed (re-sent after a resume) and was dropped.
    ///
    /// # Errors
    /// [`AgentError::Gap`] when a re-sent event straddles the end already sealed: the
    /// source does not hold the log that was stored.
    pub fn push(&mut self, ev: SourceEvent, preamble: impl FnOnce() -> Vec<u8>) -> Result<bool> {
        if self.is_stored(&ev)? {
            return Ok(false);
        }
        if let Some(skip) = &self.skip_to {
            if ev.start.cmp_place(skip)?.is_lt() {
                return Err(AgentError::Gap(format!(
                    "the stored chain ends at {skip}, but the server's event there runs from {} to {}: \
                     the server's binlog is not the one stored; take a new snapshot and start the stream again",
                    ev.start, ev.end
                )));
            }
            self.skip_to = None;
        }
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
            match self.pending_leg.take() {
                Some(leg) => {
                    self.start = Some(leg.continues);
                    self.forks_at = leg.forks_at;
                    self.leg_start = Some(ev.start.clone());
                }
                None => self.start = Some(ev.start.clone()),
            }
            self.first_event_ms = ev.time_ms;
            self.opened_at = Some(Instant::now());
        }
        self.payload.extend_from_slice(&ev.record);
        self.count += 1;
        if ev.boundary {
            if ev.trx.is_some() {
                self.last_trx = ev.trx;
            }
            self.open_trx = None;
            self.last_boundary = Some(ev.end.clone());
            self.boundary = Some(Boundary {
                payload_len: self.payload.len(),
                end: ev.end.clone(),
                last_event_ms: ev.time_ms,
                event_count: self.count,
            });
        } else if self.open_trx.is_none() {
            self.open_trx = Some(self.last_boundary.clone().unwrap_or(ev.start));
        }
        self.last = Some((ev.end, ev.time_ms));
        Ok(true)
    }

    /// Bytes in the open segment's payload.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    fn at_boundary(&self) -> bool {
        self.boundary
            .as_ref()
            .is_some_and(|b| b.payload_len == self.payload.len())
    }

    /// When the open segment must be sealed by age; `None` while it is empty or a
    /// transaction is in progress (it is then sealed when that transaction ends, or when it
    /// reaches `max_bytes`).
    pub fn deadline(&self) -> Option<Instant> {
        if !self.at_boundary() {
            return None;
        }
        self.opened_at.map(|t| t + self.max_age)
    }

    /// Whether the open segment should be sealed now: it reached `max_bytes` (wherever it
    /// ends), or it ends at a boundary and is old enough.
    pub fn should_seal(&self, now: Instant) -> bool {
        self.payload.len() >= self.max_bytes
            || (self.at_boundary() && self.opened_at.is_some_and(|t| now >= t + self.max_age))
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

    /// Cuts every event of the open segment; when the last one is inside a transaction the
    /// segment's `open_trx` says where that transaction began. `None` when it is empty.
    pub fn seal(&mut self) -> Option<SealJob> {
        let (Some(start), Some((end, last_event_ms))) = (self.start.take(), self.last.take())
        else {
            return None;
        };
        self.boundary = None;
        let meta = SegmentMeta {
            stream: self.stream.clone(),
            source: self.kind,
            start,
            end,
            open_trx: self.open_trx.clone(),
            first_event_ms: self.first_event_ms,
            last_event_ms,
            event_count: self.count,
            lineage: Lineage {
                origin: self.origin.clone(),
                leg_start: self.leg_start.take(),
                forks_at: self.forks_at.take(),
                last_trx: self.last_trx.clone(),
            },
        };
        self.sealed = Some(ResumePoint::after(&meta));
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

    /// The log broke and continues at `at` (a snapshot stands there); the open segment
    /// was sealed. Nothing carries over: no open transaction, nothing to skip. After a
    /// fork, the first segment from `at` records `forks_at`.
    pub fn broke_at(&mut self, at: &Position, forks_at: Option<Position>) {
        // A second break before any segment of the new history keeps the first's fork.
        self.forks_at = forks_at.or(self.forks_at.take());
        self.open_trx = None;
        self.skip_to = None;
        self.boundary = None;
        self.last_boundary = Some(at.clone());
        self.sealed = Some(ResumePoint {
            origin: self.origin.clone(),
            ..ResumePoint::at(at.clone())
        });
    }

    /// The source connected to the server `origin`; when that server continues the stream
    /// as a new leg, `leg` says where (the caller sealed the open segment first: a segment
    /// holds one server's events).
    ///
    /// # Errors
    /// [`AgentError::Stage`] when a new leg is asked for while a segment is open.
    pub fn connected(&mut self, origin: &str, leg: Option<&NewLeg>) -> Result<()> {
        origin.clone_into(&mut self.origin);
        let Some(leg) = leg else {
            return Ok(());
        };
        let at = &leg.continues;
        if self.start.is_some() {
            return Err(AgentError::Stage(format!(
                "a new leg continues at {at} while a segment is open"
            )));
        }
        self.open_trx = None;
        self.skip_to = None;
        self.boundary = None;
        self.last_boundary = Some(at.clone());
        self.pending_leg = Some(leg.clone());
        Ok(())
    }

    /// The source reconnected at `at`, after the last transaction boundary it sent.
    /// Events of the open segment after its last boundary are dropped (the source sends
    /// them again); when the open segment has no boundary, all of it is dropped, and events
    /// up to the end already sealed are recognised and skipped as they come again.
    ///
    /// # Errors
    /// [`AgentError::Stage`] when `at` is not the last boundary this segmenter saw: the two
    /// would disagree on what is stored.
    pub fn restart(&mut self, at: Option<&Position>) -> Result<()> {
        match self.boundary.clone() {
            Some(b) => {
                self.payload.truncate(b.payload_len);
                self.count = b.event_count;
                self.last = Some((b.end.clone(), b.last_event_ms));
                self.last_boundary = Some(b.end);
                self.open_trx = None;
            }
            None => {
                self.payload.clear();
                self.start = None;
                // A new leg's fork is found again by the reconnect; a fork after a break
                // (Redis) is not (the server continues the new history): it stays for the
                // first segment after the break.
                let leg_started = self.leg_start.take().is_some();
                let leg_pending = self.pending_leg.take().is_some();
                if leg_started || leg_pending {
                    self.forks_at = None;
                }
                self.opened_at = None;
                self.count = 0;
                self.last = None;
                self.open_trx = self.sealed.as_ref().and_then(|s| s.open_trx.clone());
                self.skip_to = self.sealed.as_ref().map(|s| s.end.clone());
            }
        }
        match (at, &self.last_boundary) {
            (Some(at), Some(expected)) if at != expected => Err(AgentError::Stage(
                format!("the source reconnected at {at}, but the last transaction boundary it sent is {expected}"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_common::BinlogPos;

    fn pos(at: u64) -> Position {
        Position::Mysql(BinlogPos::new("b.000001", at).unwrap())
    }

    fn ev(at: u64, boundary: bool) -> SourceEvent {
        SourceEvent {
            record: vec![0u8; 100],
            start: pos(at),
            end: pos(at + 100),
            time_ms: at as i64,
            boundary,
            caught_up: false,
            trx: None,
        }
    }

    fn segmenter(max_bytes: u64) -> Segmenter {
        let s = StreamId::new("s").unwrap();
        Segmenter::new(
            s,
            SourceKind::Mysql,
            max_bytes,
            Duration::from_secs(3600),
            None,
        )
    }

    #[test]
    fn a_new_leg_starts_where_the_previous_leg_ends_and_records_its_server() {
        let mut s = segmenter(1 << 20);
        s.connected("server_id=1", None).unwrap();
        let mut first = ev(4, true);
        first.trx = Some(TrxMark {
            id: "0-1-1".into(),
            before: String::new(),
            digest: [1; 32],
        });
        s.push(first, Vec::new).unwrap();
        let job = s.seal().unwrap();
        assert_eq!(job.meta.lineage.origin, "server_id=1");
        assert_eq!(job.meta.lineage.leg_start, None);
        s.push(ev(104, false), Vec::new).unwrap();
        let leg = NewLeg {
            continues: pos(104),
            forks_at: None,
        };
        assert!(
            s.connected("server_id=2", Some(&leg)).is_err(),
            "a segment is open"
        );
        s.restart(Some(&pos(104))).unwrap();
        s.connected("server_id=2", Some(&leg)).unwrap();
        let on_b = |at| {
            let Position::Mysql(p) = pos(at) else {
                unreachable!()
            };
            Position::Mysql(p.on_leg(1))
        };
        let mut b = ev(0, true);
        (b.start, b.end) = (on_b(900), on_b(1000));
        s.push(b, Vec::new).unwrap();
        let job = s.seal().unwrap();
        assert_eq!(job.meta.start, pos(104), "the chain's end on leg 0");
        assert_eq!(job.meta.lineage.leg_start, Some(on_b(900)));
        assert_eq!(job.meta.end, on_b(1000));
        assert_eq!(job.meta.lineage.origin, "server_id=2");
        assert_eq!(
            job.meta.lineage.last_trx.map(|t| t.id).as_deref(),
            Some("0-1-1"),
            "the last whole transaction carries over until the next one"
        );
    }

    #[test]
    fn a_fork_after_a_break_outlives_a_reconnect_before_the_first_segment() {
        let redis = |history: u32, offset: u64| {
            Position::Redis(logferry_common::format::redis::ReplPos::new(
                history,
                offset,
                &"a".repeat(40),
                0,
            ))
        };
        let mut s = Segmenter::new(
            StreamId::new("s").unwrap(),
            SourceKind::Redis,
            1 << 20,
            Duration::from_secs(3600),
            None,
        );
        s.broke_at(&redis(2, 100), Some(redis(1, 40)));
        s.restart(Some(&redis(2, 100))).unwrap();
        let mut e = ev(0, true);
        (e.start, e.end) = (redis(2, 100), redis(2, 150));
        s.push(e, Vec::new).unwrap();
        let job = s.seal().unwrap();
        assert_eq!(job.meta.lineage.forks_at, Some(redis(1, 40)));
        let mut e = ev(0, true);
        (e.start, e.end) = (redis(2, 150), redis(2, 200));
        s.push(e, Vec::new).unwrap();
        assert_eq!(
            s.seal().unwrap().meta.lineage.forks_at,
            None,
            "only the first"
        );
    }

    #[test]
    fn seals_by_size_inside_a_transaction_and_names_where_it_began() {
        let mut s = segmenter(250);
        assert!(s.push(ev(4, true), Vec::new).unwrap());
        s.push(ev(104, false), Vec::new).unwrap();
        assert!(!s.should_seal(Instant::now()));
        s.push(ev(204, false), Vec::new).unwrap();
        assert!(
            s.should_seal(Instant::now()),
            "max_bytes reached mid-transaction"
        );
        assert!(s.deadline().is_none(), "no age cut mid-transaction");
        let job = s.seal().unwrap();
        assert_eq!(job.meta.event_count, 3);
        assert_eq!(job.meta.end.to_string(), "b.000001:304");
        assert_eq!(job.meta.open_trx, Some(pos(104)));
        assert_eq!(job.payload.len(), 300);
        let seg = job
            .seal(&mut Sealer::new(logferry_common::Compression::Zstd(3)).unwrap())
            .unwrap();
        assert_eq!(seg.payload().unwrap(), job.payload);
        // The next segment continues the same transaction, then ends at its commit.
        s.push(ev(304, false), Vec::new).unwrap();
        s.push(ev(404, true), Vec::new).unwrap();
        let job = s.seal().unwrap();
        assert_eq!(job.meta.start, pos(304));
        assert!(job.meta.ends_at_boundary());
    }

    #[test]
    fn seals_by_age_only_at_a_boundary() {
        let mut s = segmenter(1 << 20);
        s.push(ev(4, true), Vec::new).unwrap();
        let deadline = s.deadline().unwrap();
        assert!(!s.should_seal(Instant::now()));
        assert!(s.should_seal(deadline));
        s.push(ev(104, false), Vec::new).unwrap();
        assert!(!s.should_seal(deadline + Duration::from_secs(1)));
    }

    #[test]
    fn old_data_is_stale_only_at_a_boundary() {
        let mut s = segmenter(1 << 20);
        s.push(ev(4, false), Vec::new).unwrap();
        assert!(!s.is_stale(10_000_000), "mid-transaction");
        s.push(ev(104, true), Vec::new).unwrap();
        assert!(s.is_stale(10_000_000), "committed long ago");
        assert!(!s.is_stale(104 + 100), "fresh data waits for the seal age");
        let mut fast = Segmenter::new(
            StreamId::new("s").unwrap(),
            SourceKind::Mysql,
            1 << 20,
            Duration::from_millis(200),
            None,
        );
        fast.push(ev(4_000, true), Vec::new).unwrap();
        assert!(
            !fast.is_stale(4_000 + 900),
            "a whole-second commit time is not evidence of old data"
        );
        assert!(fast.is_stale(4_000 + 1_300));
    }

    #[test]
    fn a_reconnect_drops_events_after_the_last_boundary() {
        let mut s = segmenter(1 << 20);
        s.push(ev(4, true), || vec![1, 2, 3]).unwrap();
        s.push(ev(104, false), Vec::new).unwrap();
        s.restart(Some(&pos(104))).unwrap();
        // The source resumes at 104 and sends the transaction again.
        s.push(ev(104, false), Vec::new).unwrap();
        s.push(ev(204, true), Vec::new).unwrap();
        let job = s.seal().unwrap();
        assert_eq!(job.meta.event_count, 3);
        assert_eq!(job.payload.len(), 303);
        assert!(job.meta.ends_at_boundary());
        assert!(s.seal().is_none());
    }

    #[test]
    fn a_reconnect_inside_a_sealed_transaction_skips_what_is_sealed() {
        let mut s = segmenter(200);
        s.push(ev(4, true), Vec::new).unwrap();
        s.push(ev(104, false), Vec::new).unwrap();
        let first = s.seal().unwrap();
        assert_eq!(first.meta.open_trx, Some(pos(104)));
        s.push(ev(204, false), Vec::new).unwrap();
        assert!(s.restart(Some(&pos(204))).is_err(), "not the last boundary");
        s.restart(Some(&pos(104))).unwrap();
        // The source resumes at the transaction's start, 104: 104 is sealed, 204 was
        // dropped with the open segment and is kept when it comes again.
        assert!(!s.push(ev(104, false), Vec::new).unwrap());
        assert!(s.push(ev(204, false), Vec::new).unwrap());
        s.push(ev(304, true), Vec::new).unwrap();
        let job = s.seal().unwrap();
        assert_eq!(job.meta.start, pos(204));
        assert_eq!(job.meta.event_count, 2);
        assert!(job.meta.ends_at_boundary());
    }

    #[test]
    fn a_restart_inside_a_transaction_continues_the_stored_one() {
        let resume = ResumePoint {
            open_trx: Some(pos(104)),
            ..ResumePoint::at(pos(304))
        };
        assert_eq!(resume.connect_at(), &pos(104));
        let s = StreamId::new("s").unwrap();
        let mut seg = Segmenter::new(
            s,
            SourceKind::Mysql,
            1 << 20,
            Duration::from_secs(1),
            Some(&resume),
        );
        assert!(!seg.push(ev(104, false), Vec::new).unwrap());
        assert!(!seg.push(ev(204, false), Vec::new).unwrap());
        assert!(seg.push(ev(304, false), Vec::new).unwrap());
        let job = seg.seal().unwrap();
        assert_eq!(job.meta.start, pos(304));
        assert_eq!(
            job.meta.open_trx,
            Some(pos(104)),
            "still the stored transaction"
        );
        // An event that straddles the stored end is another server's log.
        let mut seg = Segmenter::new(
            StreamId::new("s").unwrap(),
            SourceKind::Mysql,
            1 << 20,
            Duration::from_secs(1),
            Some(&resume),
        );
        let mut odd = ev(254, false);
        odd.end = pos(354);
        assert!(matches!(seg.push(odd, Vec::new), Err(AgentError::Gap(_))));
    }

    #[test]
    fn a_recycled_buffer_serves_the_next_segment() {
        let mut s = segmenter(1 << 20);
        s.push(ev(4, true), Vec::new).unwrap();
        let first = s.seal().unwrap();
        let cap = first.payload.capacity();
        let ptr = first.payload.as_ptr();
        s.recycle(first.payload);
        s.push(ev(104, true), Vec::new).unwrap();
        let second = s.seal().unwrap();
        assert_eq!(second.payload.len(), 100, "old content cleared");
        assert_eq!(second.payload.as_ptr(), ptr);
        assert!(second.payload.capacity() >= cap);
    }
}
