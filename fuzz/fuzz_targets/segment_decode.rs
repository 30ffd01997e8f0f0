//! Any bytes as an uploaded or stored segment: decoded, and its payload opened, without a
//! panic or an allocation the bytes do not justify. Each input is tried as it is and with a
//! correct sha256 trailer appended, so that the fuzzer reaches past the trailer check into
//! the payload's codecs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_common::{DecodeLimits, Segment};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::for_segments(1 << 20);
    let _ = Segment::peek_header(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&Sha256::digest(data));
    for bytes in [data.to_vec(), sealed] {
        if let Ok(seg) = Segment::decode(bytes, &limits) {
            let _ = seg.payload();
        }
    }
});
