//! Pure functions over raw binlog events that only the source needs: rotate targets and
//! the MariaDB GTID state. Transaction boundaries live in [`logferry_common::trx`], shared
//! with restore.

use std::collections::BTreeMap;

use crate::error::AgentError;

pub use logferry_common::trx::{code, TrxTracker, LOG_EVENT_ARTIFICIAL_F};

/// The `(position, file name)` of a ROTATE event body (checksum already removed).
pub fn rotate_target(body: &[u8]) -> Result<(u64, String), AgentError> {
    logferry_common::binlog::rotate_target(body).map_err(|e| AgentError::Protocol(e.to_string()))
}

/// The `(position, file name)` of the fake ROTATE the dump thread sends, whose body may or
/// may not end with 4 checksum bytes: the dump checksums it as the replica asked, whatever
/// the server's own `binlog_checksum` (NONE included), and before the format description
/// nothing says which. The reading whose name is a binlog file the server has (`known`) or
/// the one after it wins; else the one whose name is a binlog file name at all (a
/// numeric extension), the plain reading first.
pub fn fake_rotate_target(body: &[u8], known: &[String]) -> Result<(u64, String), AgentError> {
    let plain = rotate_target(body);
    let stripped = (body.len() > 12).then(|| rotate_target(&body[..body.len() - 4]));
    let readings: Vec<(u64, String)> = [
        Some(plain.as_ref().ok().cloned()),
        stripped.as_ref().map(|r| r.as_ref().ok().cloned()),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .collect();
    let expected = |name: &str| {
        known.iter().any(|k| k == name)
            || known
                .last()
                .and_then(|l| logferry_common::binlog::next_file_name(l))
                .is_some_and(|next| next == name)
    };
    let binlog_name = |name: &str| logferry_common::position::file_seq(name).is_some();
    readings
        .iter()
        .find(|(_, name)| expected(name))
        .or_else(|| readings.iter().find(|(_, name)| binlog_name(name)))
        .cloned()
        .map_or(plain, Ok)
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
    /// [`AgentError::Protocol`] quoting the text.
    pub fn parse(text: &str) -> Result<Self, AgentError> {
        let mut st = GtidState::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || AgentError::Protocol(format!("GTID {part:?} is not D-S-N"));
            let mut it = part.split('-');
            let d = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let s = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let n = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            if it.next().is_some() {
                return Err(bad());
            }
            st.domains.insert(d, (s, n));
        }
        Ok(st)
    }

    /// Records a GTID event (`server_id` from the event header, body = GTID event body).
    pub fn apply_gtid_event(&mut self, server_id: u32, body: &[u8]) {
        if body.len() >= 12 {
            let seq = u64::from_le_bytes(body[0..8].try_into().unwrap_or([0; 8]));
            let domain = u32::from_le_bytes(body[8..12].try_into().unwrap_or([0; 4]));
            self.domains.insert(domain, (server_id, seq));
        }
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

    /// `D-S-N,...` text, empty when no domain has been seen.
    pub fn render(&self) -> String {
        self.domains
            .iter()
            .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mariadb_gtid(flags: u8) -> Vec<u8> {
        let mut b = 7u64.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(flags);
        b
    }

    #[test]
    fn a_fake_rotate_is_read_with_or_without_checksum_bytes() {
        let known = vec!["mysql-bin.000100".to_owned(), "mysql-bin.000101".to_owned()];
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"mysql-bin.000101");
        assert_eq!(
            fake_rotate_target(&body, &known).unwrap().1,
            "mysql-bin.000101"
        );
        // Checksum bytes that are printable, even digits, still leave the known name.
        for crc in [*b"(dni", *b"1234", [0xa1, 0x00, 0xff, 0x13]] {
            let mut with = body.clone();
            with.extend_from_slice(&crc);
            assert_eq!(
                fake_rotate_target(&with, &known).unwrap().1,
                "mysql-bin.000101"
            );
        }
        // The next file, which the server has not listed yet, counts as known too.
        let mut next = 4u64.to_le_bytes().to_vec();
        next.extend_from_slice(b"mysql-bin.000102(dni");
        assert_eq!(
            fake_rotate_target(&next, &known).unwrap().1,
            "mysql-bin.000102"
        );
        // Nothing known: a binlog file name (numeric extension) is preferred.
        assert_eq!(
            fake_rotate_target(&next, &[]).unwrap().1,
            "mysql-bin.000102"
        );
    }

    #[test]
    fn gtid_state_round_trips() {
        let mut st = GtidState::parse("0-1-10,2-5-3").unwrap();
        st.apply_gtid_event(1, &mariadb_gtid(0));
        assert_eq!(st.render(), "0-1-7,2-5-3");
        assert!(GtidState::parse("0-1").is_err());
        let mut list = 1u32.to_le_bytes().to_vec();
        list.extend_from_slice(&0u32.to_le_bytes());
        list.extend_from_slice(&9u32.to_le_bytes());
        list.extend_from_slice(&42u64.to_le_bytes());
        st.apply_gtid_list(&list);
        assert_eq!(st.render(), "0-9-42");
    }
}
