//! The RPO exposure of the agent: when the oldest change read but not yet stored off-site
//! was read. It follows positions, not a count of segments: a segment is exposed from its
//! cut until the shipper acknowledges a segment that ends at or after it, so acks of
//! segments an earlier process spooled, or a spool set aside after damage, cannot leave it
//! stuck or hide exposure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use logferry_common::Position;

use crate::metrics::Metrics;

/// Read times of what is read and not yet acknowledged.
#[derive(Debug, Default)]
pub struct Exposure {
    /// Cut segments by the sort key of their end: when their first event was read.
    cut: Mutex<BTreeMap<String, i64>>,
    /// When the first event of the open segment was read; 0 while it is empty.
    open_ms: AtomicI64,
}

impl Exposure {
    /// The open segment received its first event at `read_ms`.
    pub fn opened(&self, read_ms: i64) {
        self.open_ms.store(read_ms, Ordering::Relaxed);
    }

    /// The open segment was cut: it ends at `end`, its first event read at `read_ms`.
    pub fn cut(&self, end: &Position, read_ms: i64) {
        self.spooled(end.sort_key(), read_ms);
        self.open_ms.store(0, Ordering::Relaxed);
    }

    /// A segment an earlier process spooled, ending at the position whose sort key is
    /// `end_key` (its file name says), read at about `read_ms` (when it was written).
    pub fn spooled(&self, end_key: String, read_ms: i64) {
        if let Ok(mut cut) = self.cut.lock() {
            let oldest = cut.entry(end_key).or_insert(read_ms);
            *oldest = (*oldest).min(read_ms);
        }
    }

    /// The shipper holds everything up to `end`.
    pub fn acknowledged(&self, end: &Position) {
        if let Ok(mut cut) = self.cut.lock() {
            let later = cut.split_off(&format!("{}\u{0}", end.sort_key()));
            *cut = later;
        }
    }

    /// When the oldest change not yet acknowledged was read; `None` when all is stored.
    pub fn oldest(&self) -> Option<i64> {
        self.cut.lock().ok().and_then(|cut| self.oldest_in(&cut))
    }

    /// [`Self::oldest`] with the map of cut segments already locked.
    fn oldest_in(&self, cut: &BTreeMap<String, i64>) -> Option<i64> {
        let open = self.open_ms.load(Ordering::Relaxed);
        cut.values().next().copied().or((open != 0).then_some(open))
    }

    /// Publishes [`Self::oldest`] to the gauge (0 when all is stored), under the same lock
    /// as every change, so that a publication never overwrites a newer one.
    pub fn publish(&self, m: &Metrics) {
        let Ok(cut) = self.cut.lock() else {
            return;
        };
        m.oldest_unacked_read_ms
            .store(self.oldest_in(&cut).unwrap_or(0), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_common::BinlogPos;

    fn at(o: u64) -> Position {
        Position::Mysql(BinlogPos::new("b.000001", o).unwrap())
    }

    #[test]
    fn an_ack_clears_what_it_covers_and_nothing_after() {
        let e = Exposure::default();
        assert_eq!(e.oldest(), None);
        e.opened(10);
        assert_eq!(e.oldest(), Some(10));
        e.cut(&at(100), 10);
        e.opened(20);
        e.cut(&at(200), 20);
        assert_eq!(e.oldest(), Some(10));
        // After a restart, the first acks are of segments an earlier process spooled: they
        // end before anything this process cut.
        e.acknowledged(&at(50));
        assert_eq!(e.oldest(), Some(10));
        e.acknowledged(&at(100));
        assert_eq!(e.oldest(), Some(20));
        e.acknowledged(&at(200));
        assert_eq!(e.oldest(), None);
    }

    #[test]
    fn segments_spooled_before_a_restart_are_exposed_until_acknowledged() {
        let e = Exposure::default();
        e.spooled(at(100).sort_key(), 5);
        e.cut(&at(200), 20);
        assert_eq!(e.oldest(), Some(5));
        let m = Metrics::new("test");
        e.publish(&m);
        assert_eq!(m.oldest_unacked_read_ms.load(Ordering::Relaxed), 5);
        e.acknowledged(&at(100));
        e.publish(&m);
        assert_eq!(m.oldest_unacked_read_ms.load(Ordering::Relaxed), 20);
    }

    #[test]
    fn an_ack_past_a_set_aside_segment_clears_it_too() {
        let e = Exposure::default();
        e.cut(&at(100), 10);
        e.cut(&at(200), 20);
        // The segment ending at 100 was damaged and read again; the new cut ends at 150 and
        // the ack of a later end covers every earlier one.
        e.cut(&at(150), 30);
        e.acknowledged(&at(200));
        assert_eq!(e.oldest(), None);
    }
}
