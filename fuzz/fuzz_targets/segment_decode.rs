//! Any bytes as an uploaded or stored segment: decoded, and its payload opened, without a
//! panic or an allocation the bytes do not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_common::{DecodeLimits, Segment};

fuzz_target!(|data: &[u8]| {
    let _ = Segment::peek_header(data);
    if let Ok(seg) = Segment::decode(data.to_vec(), &DecodeLimits::for_segments(1 << 20)) {
        let _ = seg.payload();
    }
});
