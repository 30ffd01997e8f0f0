//! The MySQL/MariaDB format: binlog positions, events, the segment payload built from them,
//! transaction boundaries, GTIDs, exported binlog files, and the snapshot manifest's MySQL
//! part. Everything in `logferry-common` that knows what a binlog is lives here.
//!
//! - [`position`]: [`BinlogPos`], file + offset (+ GTID state).
//! - [`event`]: type codes, the v4 header, checksums, rotate and query bodies.
//! - [`payload`]: the segment payload's records, the walk over them and the chain check.
//! - [`trx`]: where transactions end (a restore stops and a source resumes only there).
//! - [`gtid`]: MariaDB GTIDs and GTID states; [`gtid_set`]: MySQL GTIDs and GTID sets;
//!   [`server_gtids`]: either, as a dump tracks it.
//! - [`fingerprint`]: what every server holding a transaction keeps the same of it.
//! - [`export`]: binlog files that the stock tools read, rebuilt from payloads.
//! - [`sql`]: the system-schema list and identifier quoting.
//! - [`snapshot`]: the MySQL part of a snapshot manifest.

pub mod event;
pub mod export;
pub mod fingerprint;
pub mod gtid;
pub mod gtid_set;
pub mod payload;
pub mod position;
pub mod server_gtids;
pub mod snapshot;
pub mod sql;
pub mod trx;

#[cfg(test)]
mod tests;

pub use event::{
    after_stop, code, event_body, fde_has_crc32, is_file_switch, next_file_name, query_text,
    rotate_target, EventHeader, BINLOG_MAGIC, EVENT_HEADER_LEN, LOG_EVENT_ARTIFICIAL_F,
};
pub use export::{export_name, file_events, BinlogFileWriter, ExportFiles};
pub use fingerprint::TrxFingerprint;
pub use gtid::{Gtid, GtidState};
pub use gtid_set::{GtidSet, MysqlGtid};
pub use payload::{
    check_chain, record_header, records, walk, PayloadBuilder, Record, Walked, TAG_EVENT,
    TAG_FORMAT,
};
pub use position::BinlogPos;
pub use server_gtids::ServerGtids;
pub use trx::TrxTracker;
