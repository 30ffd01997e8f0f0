//! A transaction's fingerprint: the part of its events that every server holding it keeps
//! the same, so that a failover can check that a server holds the stream's last stored
//! transaction and not merely a transaction under the same GTID.
//!
//! A replica that logs what it applies (`log_slave_updates`) rewrites each event's place
//! (`log_pos`), checksum, flags, table ids, thread id, execution time and XID, and writes its
//! own group-commit id into the GTID event. What it keeps is hashed: per event its type,
//! original timestamp and originating server id; for a GTID event the GTID; for a statement
//! its schema and text; for a table map its schema and table; for row events the rows. The
//! statement text the server sends only on request (ANNOTATE_ROWS) is left out.

use sha2::{Digest, Sha256};

use super::event::{code, event_body, EventHeader};

/// MySQL row events (v1 and v2 write/update/delete).
const ROWS_EVENTS: [u8; 6] = [23, 24, 25, 30, 31, 32];
/// Bytes before a table map's or a row event's content: the table id (6) and flags (2).
const TABLE_ID_AND_FLAGS: usize = 8;

/// Accumulates the fingerprint of one transaction, event by event.
#[derive(Debug, Clone, Default)]
pub struct TrxFingerprint {
    hash: Sha256,
}

impl TrxFingerprint {
    /// Adds an event (whole, header to checksum; `crc32` when it ends in one).
    pub fn add(&mut self, event: &[u8], crc32: bool) {
        let Ok(h) = EventHeader::parse(event) else {
            return;
        };
        if h.event_type == code::MARIADB_ANNOTATE_ROWS {
            return;
        }
        let body = event_body(event, crc32);
        let kept: &[u8] = match h.event_type {
            code::MARIADB_GTID => body.get(..12).unwrap_or(body),
            code::MYSQL_GTID => body.get(1..25).unwrap_or(body),
            code::XID => &[],
            code::QUERY => statement(body),
            code::TABLE_MAP => table_name(body),
            t if ROWS_EVENTS.contains(&t) => body.get(TABLE_ID_AND_FLAGS..).unwrap_or_default(),
            _ => body,
        };
        self.hash.update([h.event_type]);
        self.hash.update(h.timestamp.to_le_bytes());
        self.hash.update(h.server_id.to_le_bytes());
        self.hash.update((kept.len() as u64).to_le_bytes());
        self.hash.update(kept);
    }

    /// The fingerprint of everything added.
    pub fn finish(self) -> [u8; 32] {
        self.hash.finalize().into()
    }
}

/// A query event's schema and statement text (after the per-server thread id, execution
/// time, error code and status variables).
fn statement(body: &[u8]) -> &[u8] {
    let Some(vars) = body.get(11..13) else {
        return body;
    };
    let vars_len = u16::from_le_bytes([vars[0], vars[1]]) as usize;
    body.get(13 + vars_len..).unwrap_or(body)
}

/// A table map's schema and table names (its optional metadata depends on the writing
/// server's `binlog_row_metadata`).
fn table_name(body: &[u8]) -> &[u8] {
    let rest = body.get(TABLE_ID_AND_FLAGS..).unwrap_or_default();
    let Some(&schema_len) = rest.first() else {
        return rest;
    };
    let table_len_at = 1 + schema_len as usize + 1;
    let Some(&table_len) = rest.get(table_len_at) else {
        return rest;
    };
    rest.get(..table_len_at + 1 + table_len as usize)
        .unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u8, ts: u32, server: u32, log_pos: u32, flags: u16, body: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&ts.to_le_bytes());
        e.push(ty);
        e.extend_from_slice(&server.to_le_bytes());
        e.extend_from_slice(&((19 + body.len() + 4) as u32).to_le_bytes());
        e.extend_from_slice(&log_pos.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(body);
        e.extend_from_slice(&log_pos.to_le_bytes()); // stands for a checksum
        e
    }

    fn query(thread: u32, exec: u32, text: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&thread.to_le_bytes());
        b.extend_from_slice(&exec.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&[7, 7]);
        b.extend_from_slice(b"d\0");
        b.extend_from_slice(text.as_bytes());
        b
    }

    fn rows(table_id: u8, image: &[u8]) -> Vec<u8> {
        let mut b = vec![table_id, 0, 0, 0, 0, 0, 1, 0];
        b.extend_from_slice(image);
        b
    }

    fn fingerprint(events: &[Vec<u8>]) -> [u8; 32] {
        let mut f = TrxFingerprint::default();
        for e in events {
            f.add(e, true);
        }
        f.finish()
    }

    #[test]
    fn what_a_replica_rewrites_does_not_change_it_and_what_it_keeps_does() {
        let gtid = |commit_id: u8| {
            let mut b = 57u64.to_le_bytes().to_vec();
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&[2, commit_id]);
            b
        };
        let on_primary = [
            event(code::MARIADB_GTID, 100, 1, 500, 8, &gtid(1)),
            event(code::QUERY, 100, 1, 600, 8, &query(11, 0, "BEGIN")),
            event(30, 100, 1, 700, 0, &rows(70, b"row-a")),
            event(code::XID, 100, 1, 731, 0, &9u64.to_le_bytes()),
        ];
        let on_replica = [
            event(code::MARIADB_GTID, 100, 1, 9500, 0, &gtid(4)),
            event(code::QUERY, 100, 1, 9600, 0, &query(3, 2, "BEGIN")),
            event(30, 100, 1, 9700, 0, &rows(12, b"row-a")),
            event(code::XID, 100, 1, 9731, 0, &4u64.to_le_bytes()),
        ];
        assert_eq!(fingerprint(&on_primary), fingerprint(&on_replica));
        let mut other_rows = on_replica.clone();
        other_rows[2] = event(30, 100, 1, 9700, 0, &rows(12, b"row-b"));
        let mut other_origin = on_replica.clone();
        other_origin[2] = event(30, 100, 2, 9700, 0, &rows(12, b"row-a"));
        let mut other_time = on_replica.clone();
        other_time[1] = event(code::QUERY, 101, 1, 9600, 0, &query(3, 2, "BEGIN"));
        for other in [other_rows, other_origin, other_time] {
            assert_ne!(fingerprint(&on_primary), fingerprint(&other));
        }
    }
}
