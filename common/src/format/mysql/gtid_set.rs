//! MySQL GTIDs: one GTID `UUID:N`, the GTID set a server has executed
//! (`UUID:1-5:7-9,UUID2:1-3`, as `@@gtid_executed` shows it), and the two binlog events
//! that carry them (GTID_LOG_EVENT before each transaction, PREVIOUS_GTIDS_LOG_EVENT at the
//! start of each file). A MySQL server says where a replica stands by the whole set, not by
//! a last GTID per domain as MariaDB does: auto-positioning (`COM_BINLOG_DUMP_GTID`) sends
//! every transaction not in the set it is given. Tagged GTIDs (MySQL 8.4, `UUID:tag:N`)
//! are refused by name.

use std::collections::BTreeMap;
use std::fmt;

use crate::{Error, Result};

/// A server UUID, the source id of MySQL GTIDs.
pub type Sid = [u8; 16];

/// The largest transaction number MySQL hands out (`GNO_END` − 1): intervals on the wire
/// end one past it in a signed 64-bit number.
pub const MAX_GNO: u64 = i64::MAX as u64 - 1;

/// A MySQL GTID: the originating server's UUID and the transaction's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MysqlGtid {
    /// The originating server's `server_uuid`.
    pub sid: Sid,
    /// The transaction number (from 1).
    pub gno: u64,
}

impl MysqlGtid {
    /// Parses `UUID:N`.
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the text.
    pub fn parse(text: &str) -> Result<MysqlGtid> {
        let bad = || {
            Error::invalid(
                "MySQL GTID",
                format!("{text:?}: expected UUID:N, e.g. 3e11fa47-71ca-11e1-9e33-c80aa9429562:23"),
            )
        };
        let (uuid, n) = text.trim().split_once(':').ok_or_else(bad)?;
        if n.contains(':') {
            return Err(Error::invalid(
                "MySQL GTID",
                format!("{text:?}: tagged GTIDs (MySQL 8.4) are not supported"),
            ));
        }
        let gno: u64 = n.parse().map_err(|_| bad())?;
        if gno == 0 || gno > MAX_GNO {
            return Err(bad());
        }
        Ok(MysqlGtid {
            sid: parse_uuid(uuid).ok_or_else(bad)?,
            gno,
        })
    }

    /// The GTID a GTID_LOG_EVENT carries (`body` without header and checksum: a flags
    /// byte, the UUID, the number); `None` for a body too short to be one or an anonymous
    /// transaction's (number 0).
    pub fn of_event(body: &[u8]) -> Option<MysqlGtid> {
        let sid: Sid = body.get(1..17)?.try_into().ok()?;
        let gno = i64::from_le_bytes(body.get(17..25)?.try_into().ok()?);
        let gno = u64::try_from(gno).ok().filter(|g| *g > 0)?;
        Some(MysqlGtid { sid, gno })
    }
}

impl fmt::Display for MysqlGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", render_uuid(&self.sid), self.gno)
    }
}

/// A MySQL GTID set: per server UUID, the transaction numbers held, as sorted, disjoint,
/// non-adjacent inclusive ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GtidSet {
    sids: BTreeMap<Sid, Vec<(u64, u64)>>,
}

impl GtidSet {
    /// Parses `UUID:1-5:7[,UUID:...]` as `@@gtid_executed` shows it (blanks and newlines
    /// after the commas allowed; empty text = empty set).
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the part that is not one, naming tagged GTIDs.
    pub fn parse(text: &str) -> Result<GtidSet> {
        let mut set = GtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |why: &str| Error::invalid("MySQL GTID set", format!("{part:?}: {why}"));
            let mut fields = part.split(':');
            let uuid = fields.next().unwrap_or_default();
            let sid = parse_uuid(uuid).ok_or_else(|| bad("expected UUID:N-M[:N-M...]"))?;
            let mut any = false;
            for range in fields {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                    if range.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                        return Err(bad("tagged GTIDs (MySQL 8.4) are not supported"));
                    }
                    return Err(bad("expected UUID:N-M[:N-M...]"));
                };
                if a == 0 || b < a || b > MAX_GNO {
                    return Err(bad(
                        "a range must run from 1 upwards, within MySQL's numbers",
                    ));
                }
                set.add_range(sid, a, b);
                any = true;
            }
            if !any {
                return Err(bad("a UUID without transaction numbers"));
            }
        }
        Ok(set)
    }

    /// The set a PREVIOUS_GTIDS_LOG_EVENT carries (`body` without header and checksum):
    /// the server's `gtid_executed` when it opened the file; `None` for a body that is not
    /// one (or a tagged one, MySQL 8.4).
    pub fn of_previous_gtids(body: &[u8]) -> Option<GtidSet> {
        let mut set = GtidSet::default();
        let mut r = body;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = (r.get(..n)?, r.get(n..)?);
            r = rest;
            Some(head)
        };
        let n_sids = u64::from_le_bytes(take(8)?.try_into().ok()?);
        for _ in 0..n_sids {
            let sid: Sid = take(16)?.try_into().ok()?;
            let n_ranges = u64::from_le_bytes(take(8)?.try_into().ok()?);
            for _ in 0..n_ranges {
                let start = u64::from_le_bytes(take(8)?.try_into().ok()?);
                let end = u64::from_le_bytes(take(8)?.try_into().ok()?);
                // On the wire the end is exclusive.
                if start == 0 || end <= start || end - 1 > MAX_GNO {
                    return None;
                }
                set.add_range(sid, start, end - 1);
            }
        }
        Some(set)
    }

    /// Adds one GTID.
    pub fn add(&mut self, g: MysqlGtid) {
        self.add_range(g.sid, g.gno, g.gno);
    }

    /// Whether the set holds `g`.
    pub fn contains(&self, g: &MysqlGtid) -> bool {
        self.sids
            .get(&g.sid)
            .is_some_and(|rs| rs.iter().any(|&(a, b)| a <= g.gno && g.gno <= b))
    }

    /// What this set holds that `other` lacks, per UUID as `UUID:N-M` ranges with their
    /// count: empty when `other` holds everything in it.
    pub fn missing_from(&self, other: &GtidSet) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (sid, ranges) in &self.sids {
            let held = other.sids.get(sid).map(Vec::as_slice).unwrap_or_default();
            for &(a, b) in ranges {
                let mut from = a;
                for &(ha, hb) in held {
                    if hb < from || ha > b {
                        continue;
                    }
                    if ha > from {
                        out.push((render_range(sid, from, ha - 1), ha - from));
                    }
                    from = hb.saturating_add(1);
                    if from > b {
                        break;
                    }
                }
                if from <= b {
                    out.push((render_range(sid, from, b), b - from + 1));
                }
            }
        }
        out
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.sids.is_empty()
    }

    /// Per UUID, its ranges with exclusive ends, as `COM_BINLOG_DUMP_GTID` sends them.
    pub fn wire_ranges(&self) -> impl Iterator<Item = (Sid, Vec<(u64, u64)>)> + '_ {
        self.sids
            .iter()
            .map(|(sid, rs)| (*sid, rs.iter().map(|&(a, b)| (a, b + 1)).collect()))
    }

    /// The set as MySQL writes it (UUIDs in order, lower case, `,` between them).
    pub fn render(&self) -> String {
        self.sids
            .iter()
            .map(|(sid, ranges)| {
                let parts: Vec<String> = ranges.iter().map(|&(a, b)| range_text(a, b)).collect();
                format!("{}:{}", render_uuid(sid), parts.join(":"))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn add_range(&mut self, sid: Sid, a: u64, b: u64) {
        let ranges = self.sids.entry(sid).or_default();
        ranges.push((a, b));
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(a, b) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *ranges = merged;
    }
}

fn render_range(sid: &Sid, a: u64, b: u64) -> String {
    format!("{}:{}", render_uuid(sid), range_text(a, b))
}

/// `N` or `N-M`.
fn range_text(a: u64, b: u64) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// `8-4-4-4-12` hex digits.
fn parse_uuid(text: &str) -> Option<Sid> {
    let groups: Vec<&str> = text.trim().split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut sid = [0u8; 16];
    for (i, byte) in sid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(sid)
}

fn render_uuid(sid: &Sid) -> String {
    let h: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4fb5c2a0-0b6c-11ef-8d25-0242ac120002";

    #[test]
    fn a_set_reads_and_writes_as_mysql_shows_it() {
        let text = format!("{B}:1-3,\n{A}:1-5:7-9:11");
        let set = GtidSet::parse(&text).unwrap();
        assert_eq!(set.render(), format!("{A}:1-5:7-9:11,{B}:1-3"));
        assert_eq!(GtidSet::parse(&set.render()).unwrap(), set);
        assert_eq!(GtidSet::parse("").unwrap(), GtidSet::default());
        for bad in [
            A.to_string(),
            format!("{A}:0-3"),
            format!("{A}:5-3"),
            "3e11fa47-71ca:1".to_owned(),
            format!("{A}:x"),
        ] {
            assert!(GtidSet::parse(&bad).is_err(), "{bad}");
        }
        let tagged = GtidSet::parse(&format!("{A}:orders:1-3")).unwrap_err();
        assert!(tagged.to_string().contains("tagged"), "{tagged}");
        let tagged = MysqlGtid::parse(&format!("{A}:orders:3")).unwrap_err();
        assert!(tagged.to_string().contains("tagged"), "{tagged}");
        assert!(GtidSet::parse(&format!("{A}:1-{}", u64::MAX)).is_err());
    }

    #[test]
    fn adding_merges_adjacent_numbers_and_missing_lists_the_holes() {
        let mut set = GtidSet::parse(&format!("{A}:1-5")).unwrap();
        set.add(MysqlGtid::parse(&format!("{A}:6")).unwrap());
        set.add(MysqlGtid::parse(&format!("{A}:9")).unwrap());
        set.add(MysqlGtid::parse(&format!("{B}:1")).unwrap());
        assert_eq!(set.render(), format!("{A}:1-6:9,{B}:1"));
        assert!(set.contains(&MysqlGtid::parse(&format!("{A}:4")).unwrap()));
        assert!(!set.contains(&MysqlGtid::parse(&format!("{A}:7")).unwrap()));

        let held = GtidSet::parse(&format!("{A}:1-3:5")).unwrap();
        let missing: Vec<String> = set
            .missing_from(&held)
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        assert_eq!(
            missing,
            [
                format!("{A}:4=1"),
                format!("{A}:6=1"),
                format!("{A}:9=1"),
                format!("{B}:1=1")
            ]
        );
        let ahead = GtidSet::parse(&format!("{A}:1-20,{B}:1-2")).unwrap();
        assert!(set.missing_from(&ahead).is_empty());
    }

    /// A GTID_LOG_EVENT and a PREVIOUS_GTIDS_LOG_EVENT body as MySQL 8.0 writes them
    /// (`binlog_event.h`: flags, SID, GNO, logical timestamps, commit times, ...; the
    /// previous GTIDs as n_sids, then per SID its UUID, n_intervals and [start, end)).
    #[test]
    fn events_carry_their_gtid_and_the_previous_set() {
        let sid = parse_uuid(A).unwrap();
        let mut gtid_event = vec![0x01];
        gtid_event.extend_from_slice(&sid);
        gtid_event.extend_from_slice(&23i64.to_le_bytes());
        gtid_event.push(2); // logical timestamp type code
        gtid_event.extend_from_slice(&7i64.to_le_bytes()); // last_committed
        gtid_event.extend_from_slice(&8i64.to_le_bytes()); // sequence_number
        gtid_event.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x00]); // commit time
        let g = MysqlGtid::of_event(&gtid_event).unwrap();
        assert_eq!(g.to_string(), format!("{A}:23"));
        // An anonymous transaction (gtid_mode OFF) carries number 0: no GTID.
        let mut anonymous = gtid_event.clone();
        anonymous[17..25].copy_from_slice(&0i64.to_le_bytes());
        assert_eq!(MysqlGtid::of_event(&anonymous), None);
        assert_eq!(MysqlGtid::of_event(&gtid_event[..20]), None);

        let mut prev = Vec::new();
        prev.extend_from_slice(&1u64.to_le_bytes());
        prev.extend_from_slice(&sid);
        prev.extend_from_slice(&2u64.to_le_bytes());
        for (a, b) in [(1u64, 6u64), (7, 10)] {
            prev.extend_from_slice(&a.to_le_bytes());
            prev.extend_from_slice(&b.to_le_bytes());
        }
        let set = GtidSet::of_previous_gtids(&prev).unwrap();
        assert_eq!(set.render(), format!("{A}:1-5:7-9"));
        assert_eq!(
            set.wire_ranges().collect::<Vec<_>>(),
            [(sid, vec![(1, 6), (7, 10)])]
        );
        assert_eq!(GtidSet::of_previous_gtids(&prev[..30]), None);
        assert_eq!(
            GtidSet::of_previous_gtids(&0u64.to_le_bytes()),
            Some(GtidSet::default())
        );
    }
}
