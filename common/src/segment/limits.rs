//! Size limits applied by every reader of segments.

use super::{MAX_HEADER_LEN, PREFIX_LEN, TRAILER_LEN};

/// Size limits applied while decoding, so a hostile or broken segment cannot make a reader
/// allocate without bound.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted encoded segment.
    pub max_segment_bytes: u64,
    /// Largest accepted plaintext payload after decompression.
    pub max_payload_bytes: u64,
}

/// The largest encoded segment accepted by default, by the shipper on upload
/// (`server.max_segment_bytes`), the agent reading its spool back, and every reader of the
/// store. The agent never seals a larger one: it asks the shipper for its limit.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            max_payload_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// The largest segment a shipper may be configured to accept (`server.max_segment_bytes`),
/// and so the largest any reader of the store accepts: room for one binlog event of 1 GiB
/// (MariaDB's and MySQL's largest `max_allowed_packet`) beside a full segment.
pub const MAX_STORED_SEGMENT_BYTES: u64 = 1280 * 1024 * 1024;

impl DecodeLimits {
    /// What readers of the store (verify, restore, export, the drill) accept: anything a
    /// shipper can have stored.
    pub fn stored() -> Self {
        DecodeLimits {
            max_segment_bytes: MAX_STORED_SEGMENT_BYTES,
            max_payload_bytes: MAX_STORED_SEGMENT_BYTES,
        }
    }

    /// Limits that accept segments up to `max_segment_bytes` and any payload that fits in
    /// one (the shipper's, from `server.max_segment_bytes`).
    pub fn for_segments(max_segment_bytes: u64) -> Self {
        let defaults = DecodeLimits::default();
        DecodeLimits {
            max_segment_bytes,
            max_payload_bytes: defaults.max_payload_bytes.max(max_segment_bytes),
        }
    }
}

/// The largest payload whose sealed segment fits in `max_segment_bytes` whatever the codec:
/// room for the header, the trailer and compression's worst-case growth on incompressible
/// data (zstd and LZ4 add well under 1/128).
pub fn max_payload_for(max_segment_bytes: u64) -> u64 {
    let overhead = max_segment_bytes / 128 + (MAX_HEADER_LEN + PREFIX_LEN + TRAILER_LEN) as u64;
    max_segment_bytes.saturating_sub(overhead)
}

/// The smallest segment limit whose [`max_payload_for`] holds `payload_bytes`: the inverse,
/// for telling an operator what to set.
pub fn segment_bytes_for(payload_bytes: u64) -> u64 {
    let fixed = (MAX_HEADER_LEN + PREFIX_LEN + TRAILER_LEN) as u64;
    // x - x/128 - fixed >= p  <=  x >= (p + fixed) * 128 / 127, plus rounding.
    (payload_bytes + fixed).saturating_mul(128) / 127 + 128
}
