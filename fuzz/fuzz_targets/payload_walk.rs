//! Any bytes as a MySQL segment payload: walked and turned into binlog files without a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_common::format::mysql::payload::{records, walk};
use logferry_common::BinlogPos;

fuzz_target!(|data: &[u8]| {
    let Ok(start) = BinlogPos::new("mysql-bin.000001", 4) else {
        return;
    };
    let _ = walk(&start, data, |_| Ok(true));
    let _ = records(data).count();
});
