//! Pure functions over raw binlog events: transaction boundaries, positions and GTIDs.
//!
//! Only the event headers and the few bodies that mark transaction boundaries are decoded;
//! row events are shipped as opaque bytes (decoding rows is ~25x slower than streaming).

use std::collections::BTreeMap;

use crate::error::AgentError;

/// Raw event type codes used here (MySQL and MariaDB share the low ones).
pub mod code {
    /// QUERY_EVENT: a statement, or BEGIN / COMMIT of a transaction.
    pub const QUERY: u8 = 2;
    /// ROTATE_EVENT: the server continues in another binlog file.
    pub const ROTATE: u8 = 4;
    /// FORMAT_DESCRIPTION_EVENT.
    pub const FORMAT_DESCRIPTION: u8 = 15;
    /// TABLE_MAP_EVENT: precedes each statement's row events.
    pub const TABLE_MAP: u8 = 19;
    /// XID_EVENT: commit of a transactional (InnoDB) transaction.
    pub const XID: u8 = 16;
    /// HEARTBEAT_LOG_EVENT: sent by the server when idle; not part of the log.
    pub const HEARTBEAT: u8 = 27;
    /// MySQL GTID_LOG_EVENT.
    pub const MYSQL_GTID: u8 = 33;
    /// MySQL ANONYMOUS_GTID_LOG_EVENT.
    pub const MYSQL_ANONYMOUS_GTID: u8 = 34;
    /// MySQL TRANSACTION_PAYLOAD_EVENT (binlog transaction compression).
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    /// MariaDB GTID_EVENT: starts a transaction (replaces BEGIN).
    pub const MARIADB_GTID: u8 = 162;
    /// MariaDB GTID_LIST_EVENT: the GTID state at the start of a binlog file.
    pub const MARIADB_GTID_LIST: u8 = 163;
    /// First and last MariaDB compressed event codes (`log_bin_compress`).
    pub const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
}

/// Flag of artificial events (fake rotate, synthetic events of a dump); never stored.
pub const LOG_EVENT_ARTIFICIAL_F: u16 = 0x20;
/// MariaDB GTID event flag: the transaction is one standalone statement (DDL), no COMMIT.
const FL_STANDALONE: u8 = 1;

/// Tracks where transactions start and end, so that segments are cut only between them.
#[derive(Debug, Default, Clone)]
pub struct TrxTracker {
    in_trx: bool,
    standalone_pending: bool,
}

impl TrxTracker {
    /// Feeds the next stored event; returns `true` when a restore may stop right after it.
    pub fn after(&mut self, event_type: u8, body: &[u8]) -> bool {
        match event_type {
            code::MARIADB_GTID => {
                let flags = body.get(12).copied().unwrap_or(0);
                if flags & FL_STANDALONE != 0 {
                    self.standalone_pending = true;
                } else {
                    self.in_trx = true;
                }
                false
            }
            code::MYSQL_GTID | code::MYSQL_ANONYMOUS_GTID => {
                self.standalone_pending = true;
                false
            }
            code::XID => {
                self.in_trx = false;
                self.standalone_pending = false;
                true
            }
            code::QUERY => {
                let q = query_text(body).unwrap_or_default();
                let word = first_word(&q);
                if word.eq_ignore_ascii_case("BEGIN") || is_xa_start(&q) {
                    self.in_trx = true;
                    self.standalone_pending = false;
                    false
                } else if self.in_trx {
                    let ends = word.eq_ignore_ascii_case("COMMIT")
                        || word.eq_ignore_ascii_case("ROLLBACK")
                        || is_xa_end(&q);
                    if ends {
                        self.in_trx = false;
                    }
                    ends
                } else {
                    self.standalone_pending = false;
                    true
                }
            }
            _ => !self.in_trx && !self.standalone_pending,
        }
    }

    /// Forgets a transaction in progress (after a reconnect from a boundary).
    pub fn reset(&mut self) {
        *self = TrxTracker::default();
    }
}

fn first_word(q: &str) -> &str {
    q.trim_start()
        .split(|c: char| c.is_whitespace() || c == ';')
        .next()
        .unwrap_or("")
}

fn is_xa_start(q: &str) -> bool {
    let mut w = q.split_whitespace();
    w.next().is_some_and(|a| a.eq_ignore_ascii_case("XA"))
        && w.next()
            .is_some_and(|b| b.eq_ignore_ascii_case("START") || b.eq_ignore_ascii_case("BEGIN"))
}

fn is_xa_end(q: &str) -> bool {
    let mut w = q.split_whitespace();
    w.next().is_some_and(|a| a.eq_ignore_ascii_case("XA"))
        && w.next().is_some_and(|b| {
            b.eq_ignore_ascii_case("PREPARE")
                || b.eq_ignore_ascii_case("COMMIT")
                || b.eq_ignore_ascii_case("ROLLBACK")
        })
}

/// The statement text of a QUERY event body (checksum already removed).
///
/// Body: thread id (4), exec time (4), schema length (1), error code (2), status-vars
/// length (2), status vars, schema, NUL, query.
pub fn query_text(body: &[u8]) -> Option<String> {
    let schema_len = *body.get(8)? as usize;
    let vars_len = u16::from_le_bytes([*body.get(11)?, *body.get(12)?]) as usize;
    let start = 13 + vars_len + schema_len + 1;
    body.get(start..)
        .map(|q| String::from_utf8_lossy(q).into_owned())
}

/// The `(position, file name)` of a ROTATE event body; `strip_checksum` for the fake
/// rotate that arrives before the format description (its name carries 4 checksum bytes).
pub fn rotate_target(body: &[u8], strip_checksum: bool) -> Result<(u64, String), AgentError> {
    let body = if strip_checksum && body.len() > 12 {
        &body[..body.len() - 4]
    } else {
        body
    };
    logferry_common::binlog::rotate_target(body).map_err(|e| AgentError::Protocol(e.to_string()))
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

    fn query_body(q: &str) -> Vec<u8> {
        let mut b = vec![0u8; 13];
        b[8] = 4; // schema "test"
        b.extend_from_slice(b"test\0");
        b.extend_from_slice(q.as_bytes());
        b
    }

    fn mariadb_gtid(flags: u8) -> Vec<u8> {
        let mut b = 7u64.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(flags);
        b
    }

    #[test]
    fn mariadb_row_transaction_ends_at_xid() {
        let mut t = TrxTracker::default();
        assert!(!t.after(code::MARIADB_GTID, &mariadb_gtid(0)));
        assert!(!t.after(19, b"table map"));
        assert!(!t.after(23, b"rows"));
        assert!(t.after(code::XID, b""));
    }

    #[test]
    fn mariadb_ddl_ends_at_its_query() {
        let mut t = TrxTracker::default();
        assert!(!t.after(code::MARIADB_GTID, &mariadb_gtid(FL_STANDALONE)));
        assert!(t.after(code::QUERY, &query_body("CREATE TABLE t (a int)")));
    }

    #[test]
    fn begin_commit_queries_bracket_a_transaction() {
        let mut t = TrxTracker::default();
        assert!(!t.after(code::QUERY, &query_body("BEGIN")));
        assert!(!t.after(23, b"rows"));
        assert!(t.after(code::QUERY, &query_body("COMMIT")));
        assert!(t.after(code::FORMAT_DESCRIPTION, b""));
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

    #[test]
    fn query_text_skips_status_vars_and_schema() {
        assert_eq!(query_text(&query_body("COMMIT")).as_deref(), Some("COMMIT"));
        assert_eq!(query_text(b"short"), None);
    }
}
