//! Any bytes as a stored snapshot manifest, and its chunks opened against the same bytes
//! (in clear and sealed), and as a key capsule: an error or a value, never a panic or an
//! allocation the manifest merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_common::crypto::{EpochKey, KeyCapsule};
use logferry_common::snapshot::{open_chunk, ChunkSealing, SnapshotManifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SnapshotManifest::from_json(data) {
        let key = EpochKey::generate(&m.stream, "fuzz", 0).expect("a key");
        let _ = m.check_mac(&key);
        let sealing = ChunkSealing {
            key: &key,
            snapshot: &m.id,
        };
        for info in &m.chunks {
            let _ = open_chunk(data, info, None);
            let _ = open_chunk(data, info, Some(&sealing));
        }
    }
    let _ = KeyCapsule::from_json(data);
});
