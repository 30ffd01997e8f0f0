//! GTIDs: one MariaDB GTID `domain-server-sequence`, the GTID state (the last GTID per
//! domain), and the check that a text is a GTID state of either server family. The one
//! place where GTID text and GTID event bodies are read.

use std::collections::BTreeMap;
use std::fmt;

use crate::{Error, Result};

/// A MariaDB GTID `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    /// Replication domain.
    pub domain: u32,
    /// Originating server id.
    pub server: u32,
    /// Sequence number.
    pub seq: u64,
}

impl Gtid {
    /// Parses `D-S-N`.
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the text.
    pub fn parse(text: &str) -> Result<Gtid> {
        let bad = || Error::invalid("GTID", format!("{text:?}: expected D-S-N, e.g. 0-1-57"));
        let mut it = text.split('-');
        let mut part = || it.next().ok_or_else(bad);
        let g = Gtid {
            domain: part()?.parse().map_err(|_| bad())?,
            server: part()?.parse().map_err(|_| bad())?,
            seq: part()?.parse().map_err(|_| bad())?,
        };
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(g)
    }

    /// The GTID a MariaDB GTID event carries (`server_id` from its header, `body` without
    /// header and checksum); `None` for a body too short to be one.
    pub fn of_event(server_id: u32, body: &[u8]) -> Option<Gtid> {
        let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
        let domain = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
        Some(Gtid {
            domain,
            server: server_id,
            seq,
        })
    }

    /// The sequence number a GTID state (`D-S-N,...` text) holds for this GTID's domain.
    pub fn seq_in(&self, state: &str) -> Option<u64> {
        GtidState::parse(state)
            .ok()?
            .domains
            .get(&self.domain)
            .map(|(_, n)| *n)
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// MariaDB GTID state: the last GTID per replication domain.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GtidState {
    domains: BTreeMap<u32, (u32, u64)>,
}

impl GtidState {
    /// Parses `D-S-N[,D-S-N]` (empty text = empty state).
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the part that is not `D-S-N`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut st = GtidState::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g = Gtid::parse(part)?;
            st.domains.insert(g.domain, (g.server, g.seq));
        }
        Ok(st)
    }

    /// Replaces the state with a GTID_LIST event's list (the state at a file's start).
    pub fn apply_gtid_list(&mut self, body: &[u8]) {
        let Some(count) = body.get(0..4) else { return };
        let count = (u32::from_le_bytes(count.try_into().unwrap_or([0; 4])) & 0x0fff_ffff) as usize;
        let mut list = BTreeMap::new();
        for i in 0..count {
            let at = 4 + i * 16;
            let Some(e) = body.get(at..at + 16) else {
                return;
            };
            let d = u32::from_le_bytes(e[0..4].try_into().unwrap_or([0; 4]));
            let s = u32::from_le_bytes(e[4..8].try_into().unwrap_or([0; 4]));
            let n = u64::from_le_bytes(e[8..16].try_into().unwrap_or([0; 8]));
            list.insert(d, (s, n));
        }
        self.domains = list;
    }

    /// Records `g` as its domain's last GTID.
    pub fn apply(&mut self, g: Gtid) {
        self.domains.insert(g.domain, (g.server, g.seq));
    }

    /// The last GTID of every domain, by domain.
    pub fn domains(&self) -> impl Iterator<Item = Gtid> + '_ {
        self.domains.iter().map(|(d, (s, n))| Gtid {
            domain: *d,
            server: *s,
            seq: *n,
        })
    }

    /// The last GTID of `domain`, if the state has the domain.
    pub fn get(&self, domain: u32) -> Option<Gtid> {
        self.domains.get(&domain).map(|(s, n)| Gtid {
            domain,
            server: *s,
            seq: *n,
        })
    }

    /// Whether the state is at `g`'s sequence number or beyond in `g`'s domain. By sequence
    /// number only: a server that went its own way writes other GTIDs (its own server id)
    /// under the same numbers, which this does not tell apart.
    pub fn covers(&self, g: &Gtid) -> bool {
        self.domains
            .get(&g.domain)
            .is_some_and(|(_, n)| *n >= g.seq)
    }

    /// Per domain where `other` is behind `self` by sequence number (see [`Self::covers`]):
    /// the newest GTID of `self`, and how many sequence numbers `other` lacks.
    pub fn beyond(&self, other: &GtidState) -> Vec<(Gtid, u64)> {
        self.domains
            .iter()
            .filter_map(|(d, (s, n))| {
                let have = other.domains.get(d).map_or(0, |(_, m)| *m);
                (have < *n).then(|| {
                    (
                        Gtid {
                            domain: *d,
                            server: *s,
                            seq: *n,
                        },
                        n - have,
                    )
                })
            })
            .collect()
    }

    /// Both states together: per domain, the one further on.
    pub fn merged(&self, other: &GtidState) -> GtidState {
        let mut out = self.clone();
        for (d, (s, n)) in &other.domains {
            if out.domains.get(d).is_none_or(|(_, m)| m < n) {
                out.domains.insert(*d, (*s, *n));
            }
        }
        out
    }

    /// `D-S-N,...` text, empty when no domain has been seen.
    pub fn render(&self) -> String {
        self.domains
            .iter()
            .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Checks that `gtid` looks like a MariaDB GTID list or a MySQL GTID set.
///
/// # Errors
/// [`Error::Invalid`] quoting it.
pub fn validate_gtid(gtid: &str) -> Result<()> {
    let ok = !gtid.is_empty()
        && gtid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'-' | b',' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "GTID",
            format!("{gtid:?}: expected D-S-N[,D-S-N...] (MariaDB) or UUID:N-M (MySQL)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_lists_per_domain_what_the_other_state_lacks() {
        let stored = GtidState::parse("0-1-22,1-3-5").unwrap();
        let ahead = GtidState::parse("0-1-40,1-3-5").unwrap();
        let behind = GtidState::parse("0-1-16").unwrap();
        assert!(stored.beyond(&ahead).is_empty());
        let lacks: Vec<String> = stored
            .beyond(&behind)
            .iter()
            .map(|(g, n)| format!("{g}:{n}"))
            .collect();
        assert_eq!(lacks, ["0-1-22:6", "1-3-5:5"]);
        assert!(ahead.covers(&Gtid::parse("0-2-40").unwrap()));
        assert!(!behind.covers(&Gtid::parse("0-1-17").unwrap()));
    }

    #[test]
    fn gtid_state_round_trips() {
        let mut st = GtidState::parse("0-1-10,2-5-3").unwrap();
        assert_eq!(st.render(), "0-1-10,2-5-3");
        let mut body = 11u64.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        st.apply(Gtid::of_event(7, &body).unwrap());
        assert_eq!(st.render(), "0-7-11,2-5-3");
        assert!(GtidState::parse("0-1").is_err());
        assert!(GtidState::parse("0-1-2-3").is_err());
        let mut list = 1u32.to_le_bytes().to_vec();
        list.extend_from_slice(&0u32.to_le_bytes());
        list.extend_from_slice(&9u32.to_le_bytes());
        list.extend_from_slice(&42u64.to_le_bytes());
        st.apply_gtid_list(&list);
        assert_eq!(st.render(), "0-9-42");
    }

    #[test]
    fn a_gtid_finds_its_domain_in_a_state() {
        let g = Gtid::parse("2-5-9").unwrap();
        assert_eq!(g.seq_in("0-1-10,2-5-3"), Some(3));
        assert_eq!(g.seq_in("0-1-10"), None);
        assert_eq!(g.to_string(), "2-5-9");
        assert!(Gtid::parse("a-b-c").is_err());
    }
}
