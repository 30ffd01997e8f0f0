//! An epoch key wrapped under a master key, as the store keeps it
//! (`streams/<stream>/keys/<epoch>.json`). The wrap's associated data is the stream, the
//! epoch and the master key's id, so a capsule copied to another stream or epoch, or
//! relabelled with another key's id, does not open.

use serde::{Deserialize, Serialize};

use super::keys::{validate_epoch, validate_master_id, EpochKey, MasterKey, KEY_LEN};
use super::seal::{unwrap, wrap};
use crate::{Error, Result, StreamId};

const FORMAT: u32 = 1;

/// A stored, wrapped epoch key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCapsule {
    /// Format version (1).
    pub format: u32,
    /// Stream the epoch belongs to.
    pub stream: StreamId,
    /// Epoch id.
    pub epoch: String,
    /// Id of the master key that wraps it now.
    pub master_key_id: String,
    /// When the epoch began, ms since the epoch.
    pub created_ms: i64,
    /// `nonce || wrapped key || tag`, hex.
    pub wrapped: String,
}

impl KeyCapsule {
    /// Wraps `key` under `master`.
    ///
    /// # Errors
    /// [`Error::Key`] if the system has no randomness.
    pub fn wrap(key: &EpochKey, master: &MasterKey, created_ms: i64) -> Result<Self> {
        let aad = aad(key.stream(), key.epoch(), master.id());
        Ok(KeyCapsule {
            format: FORMAT,
            stream: key.stream().clone(),
            epoch: key.epoch().to_owned(),
            master_key_id: master.id().to_owned(),
            created_ms,
            wrapped: hex::encode(wrap(master.bytes(), &aad, key.bytes())?),
        })
    }

    /// Unwraps the epoch key with `master`, which must be the key the capsule names.
    ///
    /// # Errors
    /// [`Error::Key`] naming the master key when it is another key, or when the capsule
    /// does not open under it (the configured key is not the one it was wrapped with, or
    /// the capsule was altered).
    pub fn open(&self, master: &MasterKey) -> Result<EpochKey> {
        if master.id() != self.master_key_id {
            return Err(self.unopened(format!(
                "it is wrapped under master key {:?}, not {:?}",
                self.master_key_id,
                master.id()
            )));
        }
        let wrapped = hex::decode(&self.wrapped)
            .map_err(|_| self.unopened("its wrapped key is not hex".into()))?;
        let plain = unwrap(
            master.bytes(),
            &aad(&self.stream, &self.epoch, &self.master_key_id),
            &wrapped,
        )
        .ok_or_else(|| {
            self.unopened(format!(
                "master key {:?} as configured does not open it: the configured key is not the one it was wrapped with, or the capsule was altered",
                self.master_key_id
            ))
        })?;
        let bytes: [u8; KEY_LEN] = plain
            .try_into()
            .map_err(|_| self.unopened("it holds no 32-byte key".into()))?;
        Ok(EpochKey::from_parts(
            self.stream.clone(),
            self.epoch.clone(),
            self.master_key_id.clone(),
            bytes,
        ))
    }

    /// The same epoch key wrapped under `new` instead of `old` (what `rotate-key` stores).
    ///
    /// # Errors
    /// As [`KeyCapsule::open`] with `old`.
    pub fn rewrap(&self, old: &MasterKey, new: &MasterKey) -> Result<Self> {
        let key = self.open(old)?;
        KeyCapsule::wrap(&key, new, self.created_ms)
    }

    /// Reads a stored capsule and checks its ids.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming what does not parse.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let bad = |e: String| Error::corrupt_in("key capsule", e);
        let c: KeyCapsule = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if c.format != FORMAT {
            return Err(bad(format!(
                "format {} is not supported (this build reads {FORMAT})",
                c.format
            )));
        }
        validate_epoch(&c.epoch).map_err(|e| bad(e.to_string()))?;
        validate_master_id(&c.master_key_id).map_err(|e| bad(e.to_string()))?;
        Ok(c)
    }

    /// Reads the capsule stored as `epoch` of `stream`, and checks that it is that one (a
    /// capsule copied to another place would not open anyway; this says so plainly).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it does not parse or names another stream or epoch.
    pub fn from_json_at(bytes: &[u8], stream: &StreamId, epoch: &str) -> Result<Self> {
        let c = KeyCapsule::from_json(bytes)?;
        if &c.stream != stream || c.epoch != epoch {
            return Err(Error::corrupt_in(
                "key capsule",
                format!(
                    "it holds epoch {} of stream {}, not epoch {epoch} of {stream}",
                    c.epoch, c.stream
                ),
            ));
        }
        Ok(c)
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    fn unopened(&self, why: String) -> Error {
        Error::Key {
            key_id: self.master_key_id.clone(),
            detail: format!(
                "the key of epoch {} of stream {} cannot be opened: {why}",
                self.epoch, self.stream
            ),
        }
    }
}

fn aad(stream: &StreamId, epoch: &str, master_id: &str) -> Vec<u8> {
    format!("logferry capsule v1\0{stream}\0{epoch}\0{master_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes as a capsule: an error or a capsule, never a panic; a capsule with a
        /// byte of its JSON changed either fails to parse or fails to open.
        #[test]
        fn random_and_mutated_capsules_never_panic_nor_open(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), at in 0usize..1000, xor in 1u8..=255) {
            let _ = KeyCapsule::from_json(&bytes);
            let (master, _) = MasterKey::generate("m").unwrap();
            let key = EpochKey::generate(&StreamId::new("db1").unwrap(), "m", 5).unwrap();
            let original = KeyCapsule::wrap(&key, &master, 5).unwrap();
            let mut json = original.to_json();
            let i = at % json.len();
            json[i] ^= xor;
            if let Ok(c) = KeyCapsule::from_json(&json) {
                // Only what the wrap covers counts: a change of whitespace, of the
                // informational creation time, or of a hex digit's case leaves a capsule
                // that opens to the same key.
                let informational = KeyCapsule {
                    created_ms: original.created_ms,
                    wrapped: c.wrapped.to_ascii_lowercase(),
                    ..c.clone()
                };
                if informational != original {
                    proptest::prop_assert!(c.open(&master).is_err(), "byte {} changed, and it opened", i);
                }
            }
        }
    }

    #[test]
    fn a_capsule_opens_under_its_key_and_after_a_rewrap_under_the_new_one_only() {
        let stream = StreamId::new("db1").unwrap();
        let (old, _) = MasterKey::generate("old").unwrap();
        let (new, _) = MasterKey::generate("new").unwrap();
        let key = EpochKey::generate(&stream, "old", 5).unwrap();
        let c = KeyCapsule::from_json(&KeyCapsule::wrap(&key, &old, 5).unwrap().to_json()).unwrap();
        let mac = key.mac("m", b"x").unwrap();
        assert!(c.open(&old).unwrap().mac_matches("m", b"x", &mac).unwrap());
        let err = c.open(&new).unwrap_err().to_string();
        assert!(err.contains("wrapped under master key \"old\""), "{err}");
        let (impostor, _) = MasterKey::generate("old").unwrap();
        let err = c.open(&impostor).unwrap_err().to_string();
        assert!(err.contains("does not open it"), "{err}");
        let r = c.rewrap(&old, &new).unwrap();
        assert_eq!(r.master_key_id, "new");
        assert!(r.open(&new).unwrap().mac_matches("m", b"x", &mac).unwrap());
        assert!(r.open(&old).is_err());
        let mut moved = c.clone();
        moved.stream = StreamId::new("db2").unwrap();
        assert!(
            moved.open(&old).is_err(),
            "a capsule copied to another stream opens"
        );
    }
}
