//! Any bytes as a stored snapshot manifest, and its chunks opened against the same bytes:
//! an error or a manifest, never a panic or an allocation the manifest merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_common::snapshot::{open_chunk, SnapshotManifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SnapshotManifest::from_json(data) {
        for info in &m.chunks {
            let _ = open_chunk(data, info);
        }
    }
});
