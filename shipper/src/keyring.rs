//! What restores, exports, `verify` and the drill open stored objects with: the master
//! keys of `[encryption]`, the epoch keys unwrapped from each stream's capsules (each
//! fetched and opened once), and whether objects stored in clear are accepted. `serve`
//! holds none of it: it checks uploads without keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use logferry_common::crypto::{EpochKey, KeyCapsule, KeyProvider, KeyRef};
use logferry_common::keys::capsule_key;
use logferry_common::snapshot::SnapshotManifest;
use logferry_common::{SegmentHeader, StreamId};
use logferry_config::EncryptionSection;

use crate::error::{Result, ShipperError};
use crate::storage::Store;

/// The keys a reading command holds.
#[derive(Debug, Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: Option<Box<dyn KeyProvider>>,
    plaintext: bool,
    epochs: Mutex<HashMap<(StreamId, String), Arc<EpochKey>>>,
}

impl Keyring {
    /// Keys from `provider`; `accept_plaintext` also reads objects stored in clear.
    pub fn new(provider: Option<Box<dyn KeyProvider>>, accept_plaintext: bool) -> Self {
        Keyring {
            inner: Arc::new(Inner {
                provider,
                plaintext: accept_plaintext,
                epochs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The keys of an `[encryption]` section.
    pub fn from_config(section: &EncryptionSection) -> Self {
        let provider = (!section.keys.is_empty())
            .then(|| Box::new(section.provider()) as Box<dyn KeyProvider>);
        Keyring::new(provider, section.insecure_plaintext)
    }

    /// No key, and nothing in clear accepted: what a store opened without a config holds.
    pub fn none() -> Self {
        Keyring::new(None, false)
    }

    /// Whether objects stored in clear are accepted.
    pub fn accepts_plaintext(&self) -> bool {
        self.inner.plaintext
    }

    /// The master key named `id`.
    ///
    /// # Errors
    /// [`ShipperError::Key`] naming the key when none is configured or it is unreadable.
    pub async fn master_key(&self, id: &str) -> Result<logferry_common::crypto::MasterKey> {
        let inner = self.inner.clone();
        let id = id.to_owned();
        crate::restore::off_runtime("reading a master key", move || {
            let Some(provider) = &inner.provider else {
                return Err(ShipperError::Key {
                    object: "[encryption]".into(),
                    source: logferry_common::Error::Key {
                        key_id: id.clone(),
                        detail: format!(
                            "master key {id:?} is needed and no key is configured: give --config with an [encryption] section naming it, or --key {id}=FILE"
                        ),
                    },
                });
            };
            provider.master_key(&id).map_err(|source| ShipperError::Key {
                object: "[encryption]".into(),
                source,
            })
        })
        .await
    }

    /// The epoch key `r` names, unwrapped from its capsule in the store.
    ///
    /// # Errors
    /// [`ShipperError::Key`] naming the capsule and the master key when the key that wraps
    /// it is not configured or is the wrong one; [`ShipperError::Corrupt`] when the capsule
    /// is missing, does not parse, belongs elsewhere, or was not written by a key holder.
    pub async fn epoch_key(
        &self,
        store: &Store,
        stream: &StreamId,
        r: &KeyRef,
    ) -> Result<Arc<EpochKey>> {
        self.epoch_key_of(store, stream, &r.epoch, &r.to_string())
            .await
    }

    /// The key of `epoch` of `stream` (`named` is how the object asking names it).
    ///
    /// # Errors
    /// [`ShipperError::Key`] naming the capsule and the master key when the key that wraps
    /// it is not configured, or does not open it while no other capsule of the stream
    /// opened either (the configured key is the wrong one); [`ShipperError::Corrupt`] when
    /// the capsule is missing, does not parse, belongs elsewhere, or does not open under a
    /// key that opens the stream's other capsules (a capsule no key holder wrote).
    async fn epoch_key_of(
        &self,
        store: &Store,
        stream: &StreamId,
        epoch: &str,
        named: &str,
    ) -> Result<Arc<EpochKey>> {
        let slot = (stream.clone(), epoch.to_owned());
        if let Some(k) = self.cached(&slot) {
            return Ok(k);
        }
        let object = capsule_key(stream, epoch);
        let Some(bytes) = store.get_if_any(&object).await? else {
            // No agent ships an object before its capsule: one naming a missing capsule
            // was not written by it.
            return Err(ShipperError::Corrupt {
                key: object,
                source: logferry_common::Error::Key {
                    key_id: named.to_owned(),
                    detail: format!(
                        "the capsule of key {named} is not in the store: nothing sealed under it can be opened"
                    ),
                },
            });
        };
        let corrupt = |source| ShipperError::Corrupt {
            key: object.clone(),
            source,
        };
        let capsule = KeyCapsule::from_json_at(&bytes, stream, epoch).map_err(corrupt)?;
        let master = self
            .master_key(&capsule.master_key_id)
            .await
            .map_err(|e| match e {
                ShipperError::Key { source, .. } => ShipperError::Key {
                    object: object.clone(),
                    source,
                },
                other => other,
            })?;
        let key = match capsule.open(&master) {
            Ok(k) => Arc::new(k),
            Err(source) if self.another_opens(store, stream, epoch).await? => {
                return Err(corrupt(source))
            }
            Err(source) => {
                return Err(ShipperError::Key {
                    object: object.clone(),
                    source,
                })
            }
        };
        if let Ok(mut epochs) = self.inner.epochs.lock() {
            epochs.insert(slot, key.clone());
        }
        Ok(key)
    }

    /// Whether a capsule of `stream` other than `epoch`'s opens with the configured keys:
    /// then the configured keys are right, and a capsule they do not open was not written
    /// by a key holder. Asked only when a capsule does not open, whatever the order in
    /// which a command meets the capsules.
    async fn another_opens(&self, store: &Store, stream: &StreamId, epoch: &str) -> Result<bool> {
        if self.cached_any(stream) {
            return Ok(true);
        }
        for obj in store
            .list(&logferry_common::keys::capsules_prefix(stream))
            .await?
        {
            let Some(other) = logferry_common::keys::capsule_epoch(&obj.key) else {
                continue;
            };
            if other == epoch {
                continue;
            }
            let Some(bytes) = store.get_if_any(&obj.key).await? else {
                continue;
            };
            let Ok(c) = KeyCapsule::from_json_at(&bytes, stream, other) else {
                continue;
            };
            let Ok(master) = self.master_key(&c.master_key_id).await else {
                continue;
            };
            if let Ok(k) = c.open(&master) {
                if let Ok(mut epochs) = self.inner.epochs.lock() {
                    epochs.insert((stream.clone(), other.to_owned()), Arc::new(k));
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a capsule of `stream` has opened already.
    fn cached_any(&self, stream: &StreamId) -> bool {
        self.inner
            .epochs
            .lock()
            .is_ok_and(|e| e.keys().any(|(s, _)| s == stream))
    }

    fn cached(&self, slot: &(StreamId, String)) -> Option<Arc<EpochKey>> {
        self.inner.epochs.lock().ok()?.get(slot).cloned()
    }

    /// The key a stored segment's header names; `None` for one in clear, when accepted.
    ///
    /// # Errors
    /// [`ShipperError::Key`] naming `object` when it is in clear and that is not accepted,
    /// as [`Self::epoch_key`] otherwise.
    pub async fn segment_key(
        &self,
        store: &Store,
        object: &str,
        header: &SegmentHeader,
    ) -> Result<Option<Arc<EpochKey>>> {
        match header.key_ref() {
            Some(r) => self
                .epoch_key(store, &header.meta.stream, &r)
                .await
                .map(Some),
            None => self.in_clear(object).map(|()| None),
        }
    }

    /// The key a snapshot's manifest names, after checking the manifest's MAC with it;
    /// `None` for a snapshot in clear, when accepted.
    ///
    /// # Errors
    /// [`ShipperError::Corrupt`] naming `object` when the MAC fails (not written by a key
    /// holder, or altered); as [`Self::segment_key`] otherwise.
    pub async fn manifest_key(
        &self,
        store: &Store,
        object: &str,
        m: &SnapshotManifest,
    ) -> Result<Option<Arc<EpochKey>>> {
        let corrupt = |source| ShipperError::Corrupt {
            key: object.to_owned(),
            source,
        };
        match m.key_ref().map_err(corrupt)? {
            Some(r) => {
                let key = self.epoch_key(store, &m.stream, &r).await?;
                // Serializing and hashing a manifest (up to 16 MiB) is CPU work.
                let (checked, with, at) = (m.clone(), key.clone(), object.to_owned());
                crate::restore::off_runtime(object, move || {
                    checked
                        .check_mac(&with)
                        .map_err(|source| ShipperError::Corrupt { key: at, source })
                })
                .await?;
                Ok(Some(key))
            }
            None => self.in_clear(object).map(|()| None),
        }
    }

    /// The newest epoch key of `stream` that the configured keys open: what a drill's
    /// record is signed with.
    ///
    /// # Errors
    /// [`ShipperError::Key`] when the stream has no capsule the keys open.
    pub async fn newest_key(&self, store: &Store, stream: &StreamId) -> Result<Arc<EpochKey>> {
        let prefix = logferry_common::keys::capsules_prefix(stream);
        let mut last_error = None;
        for obj in store.list(&prefix).await?.iter().rev() {
            let Some(epoch) = logferry_common::keys::capsule_epoch(&obj.key) else {
                continue;
            };
            match self
                .epoch_key_of(store, stream, epoch, &format!("of epoch {epoch}"))
                .await
            {
                Ok(k) => return Ok(k),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ShipperError::Key {
            object: prefix,
            source: logferry_common::Error::Key {
                key_id: String::new(),
                detail: format!("stream {stream} has no key capsule"),
            },
        }))
    }

    fn in_clear(&self, object: &str) -> Result<()> {
        if self.inner.plaintext {
            return Ok(());
        }
        Err(ShipperError::Corrupt {
            key: object.to_owned(),
            source: logferry_common::Error::Key {
                key_id: String::new(),
                detail: "it is stored in clear, and every object of this store must be sealed under a key (an agent never writes one in clear): it was not written by the agent; remove it, or set encryption.insecure_plaintext = true for a store written in clear".into(),
            },
        })
    }
}
