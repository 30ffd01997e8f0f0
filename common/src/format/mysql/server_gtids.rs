//! The GTID state of either server family, as the agent tracks it through a dump and a
//! position carries it: a MariaDB GTID state (the last GTID per domain) or a MySQL GTID
//! set. The failover's successor check and fork search ask the same questions of both.

use super::code;
use super::gtid::{Gtid, GtidState};
use super::gtid_set::{GtidSet, MysqlGtid};
use crate::{Error, Result};

/// What a server holds by GTID, in its family's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerGtids {
    /// MariaDB: `D-S-N,...`.
    Mariadb(GtidState),
    /// MySQL: `UUID:N-M,...`.
    Mysql(GtidSet),
}

impl ServerGtids {
    /// Nothing yet, for a server of the family `mariadb` says.
    pub fn empty(mariadb: bool) -> ServerGtids {
        if mariadb {
            ServerGtids::Mariadb(GtidState::default())
        } else {
            ServerGtids::Mysql(GtidSet::default())
        }
    }

    /// Reads `text` (a position's GTID state, a server's `gtid_binlog_pos` or
    /// `gtid_executed`) as the family `mariadb` says.
    ///
    /// # Errors
    /// [`Error::Invalid`] when it is not that family's form (a MariaDB state offered to a
    /// MySQL server, or the other way), naming both.
    pub fn parse(text: &str, mariadb: bool) -> Result<ServerGtids> {
        let mysql_form = text.contains(':');
        if !text.trim().is_empty() && mysql_form == mariadb {
            let (is, server) = if mysql_form {
                ("a MySQL GTID set", "MariaDB")
            } else {
                ("a MariaDB GTID state", "MySQL")
            };
            return Err(Error::invalid(
                "GTID state",
                format!("{text:?} is {is}, but the server is {server}: a stream does not move between the two"),
            ));
        }
        Ok(if mariadb {
            ServerGtids::Mariadb(GtidState::parse(text)?)
        } else {
            ServerGtids::Mysql(GtidSet::parse(text)?)
        })
    }

    /// The text positions carry (empty when nothing is held).
    pub fn render(&self) -> String {
        match self {
            ServerGtids::Mariadb(s) => s.render(),
            ServerGtids::Mysql(s) => s.render(),
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.render().is_empty()
    }

    /// Takes a GTID event that starts a transaction (MariaDB GTID_EVENT, MySQL
    /// GTID_LOG_EVENT of this family): the transaction is added, its id returned. `None`
    /// for any other event, and for an anonymous MySQL transaction.
    pub fn begin_trx(&mut self, event_type: u8, server_id: u32, body: &[u8]) -> Option<String> {
        match (self, event_type) {
            (ServerGtids::Mariadb(s), code::MARIADB_GTID) => {
                let g = Gtid::of_event(server_id, body)?;
                s.apply(g);
                Some(g.to_string())
            }
            (ServerGtids::Mysql(s), code::MYSQL_GTID) => {
                let g = MysqlGtid::of_event(body)?;
                s.add(g);
                Some(g.to_string())
            }
            _ => None,
        }
    }

    /// Takes the event that states what was logged before a binlog file (MariaDB
    /// GTID_LIST, MySQL PREVIOUS_GTIDS): the state becomes it; `false` for any other event
    /// (and for a body that does not read).
    pub fn file_state(&mut self, event_type: u8, body: &[u8]) -> bool {
        match (self, event_type) {
            (ServerGtids::Mariadb(s), code::MARIADB_GTID_LIST) => {
                s.apply_gtid_list(body);
                true
            }
            (ServerGtids::Mysql(s), code::MYSQL_PREVIOUS_GTIDS) => {
                match GtidSet::of_previous_gtids(body) {
                    Some(set) => {
                        *s = set;
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    /// The state after the transaction `id` (of this family).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `id` is not one.
    pub fn with_trx(&self, id: &str) -> Result<ServerGtids> {
        let mut out = self.clone();
        match &mut out {
            ServerGtids::Mariadb(s) => s.apply(Gtid::parse(id)?),
            ServerGtids::Mysql(s) => s.add(MysqlGtid::parse(id)?),
        }
        Ok(out)
    }

    /// What this state holds that `held` lacks, each part described for an operator
    /// (MariaDB by sequence number per domain, MySQL exactly); empty when `held` holds it
    /// all.
    pub fn missing_from(&self, held: &ServerGtids) -> Vec<String> {
        let count = |n: u64| format!("{n} transaction{}", if n == 1 { "" } else { "s" });
        match (self, held) {
            (ServerGtids::Mariadb(a), ServerGtids::Mariadb(b)) => a
                .beyond(b)
                .iter()
                .map(|(g, n)| format!("up to {g} ({})", count(*n)))
                .collect(),
            (ServerGtids::Mysql(a), ServerGtids::Mysql(b)) => a
                .missing_from(b)
                .iter()
                .map(|(r, n)| format!("{r} ({})", count(*n)))
                .collect(),
            _ => vec!["every transaction: the two are of different server families".into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn both_families_answer_the_successor_questions() {
        let stored = ServerGtids::parse("0-1-22", true).unwrap();
        let held = ServerGtids::parse("0-1-16", true).unwrap();
        assert_eq!(
            stored.missing_from(&held),
            ["up to 0-1-22 (6 transactions)"]
        );
        assert!(held.missing_from(&stored).is_empty());
        assert_eq!(held.with_trx("0-1-17").unwrap().render(), "0-1-17");

        let stored = ServerGtids::parse(&format!("{A}:1-22"), false).unwrap();
        let held = ServerGtids::parse(&format!("{A}:1-16:20"), false).unwrap();
        assert_eq!(
            stored.missing_from(&held),
            [
                format!("{A}:17-19 (3 transactions)"),
                format!("{A}:21-22 (2 transactions)")
            ]
        );
        assert_eq!(
            held.with_trx(&format!("{A}:17")).unwrap().render(),
            format!("{A}:1-17:20")
        );
        assert!(ServerGtids::empty(false).is_empty());
    }

    #[test]
    fn a_state_of_the_other_family_is_refused_by_name() {
        let e = ServerGtids::parse("0-1-22", false).unwrap_err();
        assert!(e.to_string().contains("the server is MySQL"), "{e}");
        let e = ServerGtids::parse(&format!("{A}:1-3"), true).unwrap_err();
        assert!(e.to_string().contains("the server is MariaDB"), "{e}");
        assert_eq!(
            ServerGtids::parse("", true).unwrap(),
            ServerGtids::empty(true)
        );
    }

    #[test]
    fn gtid_events_of_the_family_begin_transactions() {
        let mut maria = ServerGtids::empty(true);
        let mut body = 57u64.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(0);
        assert_eq!(
            maria.begin_trx(code::MARIADB_GTID, 1, &body).as_deref(),
            Some("0-1-57")
        );
        assert_eq!(maria.begin_trx(code::MYSQL_GTID, 1, &body), None);
        assert_eq!(maria.render(), "0-1-57");

        let mut mysql = ServerGtids::empty(false);
        let mut body = vec![1u8];
        body.extend_from_slice(&[
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        body.extend_from_slice(&5i64.to_le_bytes());
        assert_eq!(
            mysql.begin_trx(code::MYSQL_GTID, 9, &body),
            Some(format!("{A}:5"))
        );
        assert_eq!(mysql.render(), format!("{A}:5"));
        let mut prev = 1u64.to_le_bytes().to_vec();
        prev.extend_from_slice(&body[1..17]);
        prev.extend_from_slice(&1u64.to_le_bytes());
        prev.extend_from_slice(&1u64.to_le_bytes());
        prev.extend_from_slice(&5u64.to_le_bytes());
        assert!(mysql.file_state(code::MYSQL_PREVIOUS_GTIDS, &prev));
        assert_eq!(mysql.render(), format!("{A}:1-4"));
        assert!(!mysql.file_state(code::MARIADB_GTID_LIST, &prev));
    }
}
