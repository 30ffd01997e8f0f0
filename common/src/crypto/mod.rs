//! End-to-end encryption: the agent seals, a key holder opens, and nothing between (the
//! network, the shipper, the bucket) ever holds a key.
//!
//! # Keys
//! ```text
//! master key (32 bytes, a file or an environment variable, named by its id)
//!   └─ wraps ─ epoch key of a stream (random, 32 bytes), stored as a capsule:
//!              streams/<stream>/keys/<epoch>.json   (AES-256-GCM, AAD: stream, epoch, master id)
//!                ├─ HKDF(salt: the object's random salt) ─ data key of one segment or chunk
//!                └─ HKDF(salt: "logferry mac v1", info: purpose) ─ HMAC key of manifests
//!                   and drill records
//! ```
//! An agent makes a new epoch key each time it starts (on a full spool disk it continues
//! the newest one instead); every object gets its own data key, and an epoch key never
//! leaves the process that made it except wrapped. `rotate-key`
//! re-wraps capsules under a new master key; payloads are never rewritten.
//!
//! - [`keys`]: master and epoch keys, the key reference a header names, the key provider.
//! - [`capsule`]: an epoch key wrapped under a master key, as stored.
//! - [`seal`]: sealing and opening one object, and MACs for what stays in clear.

pub mod capsule;
pub mod keys;
pub mod seal;

pub use capsule::KeyCapsule;
pub use keys::{
    validate_epoch, validate_master_id, EpochKey, FileKeyProvider, KeyLocation, KeyProvider,
    KeyRef, MasterKey,
};
pub use seal::{canonical_json, ENVELOPE_LEN, TAG_LEN};

/// Fills `out` with random bytes from the operating system.
///
/// # Errors
/// [`crate::Error::Key`] when the system has no randomness to give (it does not happen on
/// a working Linux).
pub(crate) fn random(out: &mut [u8]) -> crate::Result<()> {
    aws_lc_rs::rand::fill(out).map_err(|_| crate::Error::Key {
        key_id: String::new(),
        detail: "the system's random number generator failed".into(),
    })
}
