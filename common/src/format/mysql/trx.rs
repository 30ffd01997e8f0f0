//! Transaction boundaries in a binlog event stream, shared by the agent (a segment's header
//! says whether it ends between transactions, and a source resumes only there) and restore
//! (a restore stops only between transactions).
//!
//! Only event headers and the few bodies that mark boundaries are decoded; row events stay
//! opaque bytes (decoding rows is ~25x slower than streaming them).

use super::event::{code, query_text};

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
