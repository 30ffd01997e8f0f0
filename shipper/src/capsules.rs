//! Key capsules as `serve` handles them: stored once from the agent
//! (`PUT /v1/streams/<s>/keys/<epoch>`, never replaced through the API), and required
//! before any segment or snapshot that names them, so the store never holds an object its
//! key cannot be found for. `serve` reads no capsule's content: it holds no master key.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use logferry_common::crypto::{validate_epoch, KeyCapsule, KeyRef};
use logferry_common::keys::capsule_key;
use logferry_common::StreamId;

use crate::error::{Result, ShipperError};
use crate::snapshots::Accepted;
use crate::storage::{Store, Stored};

/// The key rules of uploads, and the capsules known to be stored.
#[derive(Debug, Default)]
pub struct UploadKeys {
    /// Accept segments and snapshots in clear (`encryption.insecure_plaintext`).
    accept_plaintext: bool,
    known: Mutex<HashSet<(StreamId, String)>>,
}

impl UploadKeys {
    /// The rules: objects in clear refused unless `accept_plaintext`.
    pub fn new(accept_plaintext: bool) -> Self {
        UploadKeys {
            accept_plaintext,
            known: Mutex::default(),
        }
    }

    /// Whether uploads in clear are accepted.
    pub fn accepts_plaintext(&self) -> bool {
        self.accept_plaintext
    }

    /// Stores the capsule of `epoch` of `stream` once. A capsule already stored there is
    /// kept and the upload answered as a duplicate: a capsule is never replaced through
    /// the API (a stolen ship token must not be able to destroy a key), and after a
    /// `rotate-key` the agent's copy differs from the stored one, wrapped anew.
    ///
    /// # Errors
    /// [`ShipperError::BadRequest`] for a capsule that does not parse or names another
    /// stream or epoch; [`ShipperError::Store`].
    pub async fn put_capsule(
        &self,
        store: &Store,
        stream: &StreamId,
        epoch: &str,
        body: Bytes,
    ) -> Result<Accepted> {
        validate_epoch(epoch).map_err(|e| ShipperError::BadRequest(e.to_string()))?;
        KeyCapsule::from_json_at(&body, stream, epoch)
            .map_err(|e| ShipperError::BadRequest(e.to_string()))?;
        let accepted = match store.put_new(&capsule_key(stream, epoch), body).await? {
            Stored::Created => Accepted::Created,
            Stored::AlreadyExists => Accepted::Duplicate,
        };
        self.remember(stream, epoch);
        Ok(accepted)
    }

    /// Whether an upload of `what` sealed under `key` (`None`: in clear) may be stored.
    ///
    /// # Errors
    /// [`ShipperError::Key`] naming the object when it is in clear and that is refused, or
    /// when the capsule it names is not stored.
    pub async fn admit(
        &self,
        store: &Store,
        stream: &StreamId,
        key: Option<&KeyRef>,
        what: &str,
    ) -> Result<()> {
        let refused = |key_id: String, detail: String| ShipperError::Key {
            object: what.to_owned(),
            source: logferry_common::Error::Key { key_id, detail },
        };
        let Some(key) = key else {
            if self.accept_plaintext {
                return Ok(());
            }
            return Err(refused(
                String::new(),
                "it is not encrypted, and this shipper stores only encrypted data: configure [encryption] in the agent (or set encryption.insecure_plaintext = true in both configs, for tests)".into(),
            ));
        };
        if self.is_known(stream, &key.epoch) {
            return Ok(());
        }
        if store
            .get_if_any(&capsule_key(stream, &key.epoch))
            .await?
            .is_none()
        {
            return Err(refused(
                key.to_string(),
                format!("it is sealed under key {key}, whose capsule is not stored: an agent sends the capsule first"),
            ));
        }
        self.remember(stream, &key.epoch);
        Ok(())
    }

    fn is_known(&self, stream: &StreamId, epoch: &str) -> bool {
        self.known
            .lock()
            .is_ok_and(|k| k.contains(&(stream.clone(), epoch.to_owned())))
    }

    fn remember(&self, stream: &StreamId, epoch: &str) {
        if let Ok(mut k) = self.known.lock() {
            k.insert((stream.clone(), epoch.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use logferry_common::crypto::{EpochKey, MasterKey};

    use super::*;

    #[tokio::test]
    async fn a_capsule_is_stored_once_and_required_before_what_it_seals() {
        let store = Store::in_memory();
        let keys = UploadKeys::new(false);
        let stream = StreamId::new("db1").unwrap();
        let (master, _) = MasterKey::generate("m").unwrap();
        let key = EpochKey::generate(&stream, "m", 1).unwrap();
        let r = key.key_ref();
        let err = keys
            .admit(&store, &stream, Some(&r), "seg")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("whose capsule is not stored"), "{err}");
        let err = keys.admit(&store, &stream, None, "seg").await.unwrap_err();
        assert!(err.to_string().contains("not encrypted"), "{err}");
        assert!(UploadKeys::new(true)
            .admit(&store, &stream, None, "seg")
            .await
            .is_ok());

        let body = Bytes::from(KeyCapsule::wrap(&key, &master, 1).unwrap().to_json());
        let other = StreamId::new("db2").unwrap();
        let err = keys
            .put_capsule(&store, &other, key.epoch(), body.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not epoch"), "{err}");
        let put = keys.put_capsule(&store, &stream, key.epoch(), body.clone());
        assert_eq!(put.await.unwrap(), Accepted::Created);
        // Another capsule under the same epoch (a rotated one, or a forged one) leaves the
        // stored one in place.
        let rewrapped = Bytes::from(KeyCapsule::wrap(&key, &master, 1).unwrap().to_json());
        let put = keys.put_capsule(&store, &stream, key.epoch(), rewrapped);
        assert_eq!(put.await.unwrap(), Accepted::Duplicate);
        let stored = store.get(&capsule_key(&stream, key.epoch())).await.unwrap();
        assert_eq!(stored, body);
        keys.admit(&store, &stream, Some(&r), "seg").await.unwrap();
        // A fresh shipper finds the capsule in the store.
        UploadKeys::new(false)
            .admit(&store, &stream, Some(&r), "seg")
            .await
            .unwrap();
    }
}
