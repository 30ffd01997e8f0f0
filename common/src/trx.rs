//! Transaction boundaries in a binlog event stream, shared by the agent (a segment's header
//! says whether it ends between transactions, and a source resumes only there) and restore
//! (a restore stops only between transactions).
//!
//! Only event headers and the few bodies that mark boundaries are decoded; row events stay
//! opaque bytes (decoding rows is ~25x slower than streaming them).

use crate::binlog::EVENT_HEADER_LEN;

/// Raw event type codes used here (MySQL and MariaDB share the low ones).
pub mod code {
    /// QUERY_EVENT: a statement, or BEGIN / COMMIT of a transaction.
    pub const QUERY: u8 = 2;
    /// STOP_EVENT: the server shut down cleanly; it continues in the next binlog file.
    pub const STOP: u8 = 3;
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

/// Tracks where transactions start and end: where a restore may stop and a source may
/// resume.
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
                        || (word.eq_ignore_ascii_case("ROLLBACK") && !is_rollback_to_savepoint(&q))
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
            code::FORMAT_DESCRIPTION if server_started(body) => {
                // The server (re)started: a transaction cut by a crash at the end of the
                // previous file never committed (mariadb-binlog adds a ROLLBACK here too).
                self.reset();
                true
            }
            _ => !self.in_trx && !self.standalone_pending,
        }
    }

    /// Forgets a transaction in progress (after a reconnect from a boundary).
    pub fn reset(&mut self) {
        *self = TrxTracker::default();
    }
}

/// Whether a format-description event body was written at server start (its `created`
/// timestamp, after the binlog version and the 50-byte server version, is set) rather than
/// at a rotation.
fn server_started(body: &[u8]) -> bool {
    body.get(52..56).is_some_and(|created| created != [0; 4])
}

fn first_word(q: &str) -> &str {
    q.trim_start()
        .split(|c: char| c.is_whitespace() || c == ';')
        .next()
        .unwrap_or("")
}

/// `ROLLBACK [WORK] TO [SAVEPOINT] name`: undoes part of a transaction, which goes on
/// (MariaDB logs it when the transaction touched a non-transactional table).
fn is_rollback_to_savepoint(q: &str) -> bool {
    let mut w = q.split_whitespace().skip(1);
    let next = w.next();
    let next = if next.is_some_and(|n| n.eq_ignore_ascii_case("WORK")) {
        w.next()
    } else {
        next
    };
    next.is_some_and(|n| n.eq_ignore_ascii_case("TO"))
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

/// The body of a raw event: without its header and, when `crc32`, its 4-byte checksum.
pub fn event_body(event: &[u8], crc32: bool) -> &[u8] {
    let end = event.len().saturating_sub(if crc32 { 4 } else { 0 });
    event.get(EVENT_HEADER_LEN..end).unwrap_or_default()
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

    /// A format-description body: binlog version, server version, `created`, the rest.
    fn fde_body(created: u32) -> Vec<u8> {
        let mut b = 4u16.to_le_bytes().to_vec();
        b.extend_from_slice(&[b'x'; 50]);
        b.extend_from_slice(&created.to_le_bytes());
        b.extend_from_slice(&[19, 0, 0]);
        b
    }

    #[test]
    fn a_server_start_ends_a_transaction_cut_by_a_crash() {
        let mut t = TrxTracker::default();
        assert!(!t.after(code::MARIADB_GTID, &mariadb_gtid(0)));
        assert!(!t.after(23, b"rows"));
        // A rotation's format event (created = 0) inside a transaction changes nothing.
        assert!(!t.after(code::FORMAT_DESCRIPTION, &fde_body(0)));
        assert!(!t.after(23, b"rows"));
        // The crash cut it: the restarted server's first file begins with created set.
        assert!(t.after(code::FORMAT_DESCRIPTION, &fde_body(1_700_000_000)));
        assert!(!t.after(code::MARIADB_GTID, &mariadb_gtid(0)));
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
    fn a_rollback_to_a_savepoint_does_not_end_the_transaction() {
        let mut t = TrxTracker::default();
        assert!(!t.after(code::QUERY, &query_body("BEGIN")));
        assert!(!t.after(code::QUERY, &query_body("SAVEPOINT a")));
        assert!(!t.after(code::QUERY, &query_body("ROLLBACK TO a")));
        assert!(!t.after(code::QUERY, &query_body("rollback work to savepoint a")));
        assert!(!t.after(23, b"rows"));
        assert!(t.after(code::QUERY, &query_body("ROLLBACK")));
    }

    #[test]
    fn query_text_skips_status_vars_and_schema() {
        assert_eq!(query_text(&query_body("COMMIT")).as_deref(), Some("COMMIT"));
        assert_eq!(query_text(b"short"), None);
    }
}
