//! Sealing one object under an epoch key, and the MACs of what stays in clear.
//!
//! Each object gets a fresh data key, HKDF-SHA256 of the epoch key with a random salt, and
//! a random nonce; salt and nonce (the envelope) travel with the object. AES-256-GCM's tag
//! covers the ciphertext and the associated data the caller names (a segment's header, a
//! chunk's stream, snapshot and index), so neither can change unnoticed.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::{hkdf, hmac};

use super::keys::{EpochKey, KEY_LEN};
use crate::{Error, Result};

/// Bytes of the AES-GCM tag appended to every sealed object.
pub const TAG_LEN: usize = 16;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
/// Bytes of an envelope: the data key's salt, then the nonce.
pub const ENVELOPE_LEN: usize = SALT_LEN + NONCE_LEN;

/// What one sealed object carries to be opened again: the salt its data key is derived
/// with and its nonce. Fresh for every object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope([u8; ENVELOPE_LEN]);

impl Envelope {
    /// A random envelope for a new object.
    ///
    /// # Errors
    /// [`Error::Key`] if the system has no randomness.
    pub fn fresh() -> Result<Self> {
        let mut b = [0u8; ENVELOPE_LEN];
        super::random(&mut b)?;
        Ok(Envelope(b))
    }

    /// The envelope stored in `bytes` (a header's nonce slot, a chunk's first bytes).
    ///
    /// # Errors
    /// [`Error::Corrupt`] (of `what`) when `bytes` is not an envelope's length.
    pub fn from_bytes(bytes: &[u8], what: &'static str) -> Result<Self> {
        let b: [u8; ENVELOPE_LEN] = bytes.try_into().map_err(|_| {
            Error::corrupt_in(
                what,
                format!("its envelope is {} bytes, not {ENVELOPE_LEN}", bytes.len()),
            )
        })?;
        Ok(Envelope(b))
    }

    /// The stored form.
    pub fn as_bytes(&self) -> &[u8; ENVELOPE_LEN] {
        &self.0
    }

    fn nonce(&self) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&self.0[SALT_LEN..]);
        Nonce::assume_unique_for_key(n)
    }
}

impl EpochKey {
    fn data_key(&self, envelope: &Envelope) -> Result<LessSafeKey> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &envelope.0[..SALT_LEN]).extract(self.bytes());
        let info: [&[u8]; 1] = [b"logferry data key v1"];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| self.failed("deriving a data key"))?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// Encrypts `in_out` in place under the data key of `envelope`, authenticating `aad`
    /// too; returns the tag, which the caller stores after the ciphertext.
    ///
    /// # Errors
    /// [`Error::Key`] if the cipher refuses (an object beyond AES-GCM's 64 GiB).
    pub fn seal_in_place(
        &self,
        envelope: &Envelope,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .data_key(envelope)?
            .seal_in_place_separate_tag(envelope.nonce(), Aad::from(aad), in_out)
            .map_err(|_| self.failed("encrypting"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `in_out` (ciphertext followed by its tag) in place; returns the plaintext
    /// part.
    ///
    /// # Errors
    /// [`Error::Corrupt`] (of `what`) when the tag does not match: the ciphertext or the
    /// associated data was altered, or another key sealed it.
    pub fn open_in_place<'a>(
        &self,
        envelope: &Envelope,
        aad: &[u8],
        in_out: &'a mut [u8],
        what: &'static str,
    ) -> Result<&'a mut [u8]> {
        self.data_key(envelope)?
            .open_in_place(envelope.nonce(), Aad::from(aad), in_out)
            .map_err(|_| {
                Error::corrupt_in(
                    what,
                    format!(
                        "fails its authentication under key {}: altered, or not sealed by a holder of the key",
                        self.key_ref()
                    ),
                )
            })
    }

    fn mac_key(&self, purpose: &str) -> Result<hmac::Key> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"logferry mac v1").extract(self.bytes());
        let info = [purpose.as_bytes()];
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .map_err(|_| self.failed("deriving a MAC key"))?;
        Ok(hmac::Key::from(okm))
    }

    /// The HMAC-SHA256 of `data` under this epoch's key for `purpose` (one key per
    /// purpose, so a MAC of one kind of record never passes for another), in hex.
    ///
    /// # Errors
    /// [`Error::Key`] if the key cannot be derived.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> Result<String> {
        Ok(hex::encode(hmac::sign(&self.mac_key(purpose)?, data)))
    }

    /// Whether `mac` (hex) is the MAC of `data` for `purpose`, compared in constant time.
    ///
    /// # Errors
    /// [`Error::Key`] if the key cannot be derived.
    pub fn mac_matches(&self, purpose: &str, data: &[u8], mac: &str) -> Result<bool> {
        let Ok(tag) = hex::decode(mac) else {
            return Ok(false);
        };
        Ok(hmac::verify(&self.mac_key(purpose)?, data, &tag).is_ok())
    }

    fn failed(&self, doing: &str) -> Error {
        Error::Key {
            key_id: self.key_ref().to_string(),
            detail: format!("{doing} under key {} failed", self.key_ref()),
        }
    }
}

/// The bytes a MAC of a JSON record covers: the stored record without its `mac` member,
/// compact, with every object's members in key order. Taken
/// from what is stored rather than from this build's struct, so that members a newer build
/// adds are covered too, and an older build still checks them.
pub fn canonical_json(mut stored: serde_json::Value) -> Vec<u8> {
    if let Some(o) = stored.as_object_mut() {
        o.remove("mac");
    }
    let mut out = Vec::new();
    write_canonical(&stored, &mut out);
    out
}

/// Writes `v` as compact JSON with every object's members sorted by key, whatever order
/// the JSON map keeps them in (serde_json's `preserve_order` feature keeps insertion order).
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).unwrap_or_default()),
    }
}

/// AES-256-GCM under a raw key with a random nonce: `nonce || ciphertext || tag`. Used to
/// wrap epoch keys under master keys.
pub(super) fn wrap(key: &[u8; KEY_LEN], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    super::random(&mut nonce)?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| wrap_failed())?);
    let mut out = nonce.to_vec();
    let mut body = plain.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| wrap_failed())?;
    out.extend_from_slice(&body);
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens what [`wrap`] made; `None` when the tag does not match (another key, or altered).
pub(super) fn unwrap(key: &[u8; KEY_LEN], aad: &[u8], wrapped: &[u8]) -> Option<Vec<u8>> {
    if wrapped.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = wrapped.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let mut body = rest.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
    Some(plain.to_vec())
}

fn wrap_failed() -> Error {
    Error::Key {
        key_id: String::new(),
        detail: "wrapping a key failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamId;

    fn key() -> EpochKey {
        EpochKey::generate(&StreamId::new("db1").unwrap(), "main", 1).unwrap()
    }

    #[test]
    fn an_object_opens_with_its_key_and_aad_only() {
        let k = key();
        let env = Envelope::fresh().unwrap();
        let plain = b"INSERT INTO t VALUES ('marker-xyzzy')".to_vec();
        let mut buf = plain.clone();
        let tag = k.seal_in_place(&env, b"header", &mut buf).unwrap();
        assert_ne!(buf, plain);
        buf.extend_from_slice(&tag);
        let opened = k
            .open_in_place(&env, b"header", &mut buf.clone(), "segment")
            .unwrap()
            .to_vec();
        assert_eq!(opened, plain);
        let err = k
            .open_in_place(&env, b"other header", &mut buf.clone(), "segment")
            .unwrap_err();
        assert!(
            err.to_string().contains("fails its authentication"),
            "{err}"
        );
        let mut flipped = buf.clone();
        flipped[3] ^= 1;
        assert!(k
            .open_in_place(&env, b"header", &mut flipped, "segment")
            .is_err());
        let other = key();
        assert!(other
            .open_in_place(&env, b"header", &mut buf, "segment")
            .is_err());
    }

    #[test]
    fn the_canonical_form_orders_members_and_leaves_out_the_mac() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":3},"mac":"00","new":true}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"new":true,"a":{"x":3,"y":2},"b":1}"#).unwrap();
        assert_eq!(canonical_json(a.clone()), canonical_json(b));
        assert_eq!(
            String::from_utf8(canonical_json(a)).unwrap(),
            r#"{"a":{"x":3,"y":2},"b":1,"new":true}"#
        );
    }

    #[test]
    fn macs_are_per_key_and_per_purpose() {
        let k = key();
        let mac = k.mac("manifest", b"body").unwrap();
        assert!(k.mac_matches("manifest", b"body", &mac).unwrap());
        assert!(!k.mac_matches("drill", b"body", &mac).unwrap());
        assert!(!k.mac_matches("manifest", b"bodY", &mac).unwrap());
        assert!(!key().mac_matches("manifest", b"body", &mac).unwrap());
        assert!(!k.mac_matches("manifest", b"body", "zz").unwrap());
    }
}
