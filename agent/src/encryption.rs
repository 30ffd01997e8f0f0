//! The agent's side of end-to-end encryption. At every start the agent makes a new epoch
//! key for its stream, wraps it under the configured master key into a capsule, and keeps
//! the capsule in the spool (fsynced before anything is sealed under the key); the
//! shipper is sent the capsule before the first object sealed under it, so the store
//! never holds an object whose key it lacks. The agent never decrypts anything.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use logferry_common::crypto::{EpochKey, KeyCapsule, KeyProvider, MasterKey};
use logferry_common::StreamId;
use logferry_config::AgentConfig;
use tracing::{info, warn};

use crate::error::{AgentError, Result};
use crate::spool::Spool;

/// This process's epoch key, its capsule, and which capsules the shipper has stored.
#[derive(Debug)]
pub struct Encryption {
    key: Arc<EpochKey>,
    capsule: Vec<u8>,
    /// Where capsules of earlier epochs are kept until their segments are shipped; `None`
    /// for a one-off snapshot, which ships its capsule at once.
    spool: Option<Arc<Spool>>,
    shipped: Mutex<HashSet<String>>,
}

/// The newest capsule in `spool` that `master` opens, with its bytes.
fn newest_in(spool: &Spool, master: &MasterKey) -> Option<(EpochKey, Vec<u8>)> {
    let bytes = spool.newest_capsule()?;
    let key = KeyCapsule::from_json(&bytes).ok()?.open(master).ok()?;
    Some((key, bytes))
}

impl Encryption {
    /// Starts a new epoch under the configured master key (`None` when
    /// `encryption.insecure_plaintext` is set, warned). The capsule is saved in `spool`
    /// first, when given. Reading the key file runs off the runtime's threads.
    ///
    /// # Errors
    /// [`AgentError::Segment`] naming the master key when it is missing or unreadable;
    /// [`AgentError::Spool`] when the capsule cannot be saved.
    pub async fn start(cfg: &AgentConfig, spool: Option<Arc<Spool>>) -> Result<Option<Arc<Self>>> {
        let section = &cfg.encryption;
        if section.insecure_plaintext {
            warn!("encryption.insecure_plaintext is set: payloads and snapshot chunks are stored in clear, readable by the shipper and anyone with the bucket");
            return Ok(None);
        }
        let Some(id) = section.key_id.clone() else {
            return Err(AgentError::Config(logferry_config::ConfigError::Invalid {
                key: "encryption.key_id".into(),
                problem: "is not set".into(),
            }));
        };
        let provider = section.provider();
        let stream = cfg.agent.stream.clone();
        let enc = tokio::task::spawn_blocking(move || -> Result<Encryption> {
            Encryption::new(&stream, &provider.master_key(&id)?, spool)
        })
        .await
        .map_err(|e| AgentError::Stage(format!("reading the master key failed: {e}")))??;
        info!(key = %enc.key.key_ref(), "payloads are encrypted under a new epoch key");
        Ok(Some(Arc::new(enc)))
    }

    /// A new epoch of `stream` under `master`, its capsule saved in `spool` first when
    /// given (blocking file I/O).
    ///
    /// # Errors
    /// [`AgentError::Segment`] if the system has no randomness; [`AgentError::Spool`].
    pub fn new(stream: &StreamId, master: &MasterKey, spool: Option<Arc<Spool>>) -> Result<Self> {
        let now = crate::metrics::now_ms();
        let mut key = EpochKey::generate(stream, master.id(), now)?;
        let mut capsule = KeyCapsule::wrap(&key, master, now)?.to_json();
        if let Some(spool) = &spool {
            match spool.save_capsule(key.epoch(), &capsule) {
                Ok(()) => {
                    if let Err(e) = spool.prune_capsules(key.epoch()) {
                        warn!(error = %e, "could not remove the key capsules of earlier epochs from the spool");
                    }
                }
                Err(e) if e.is_spool_full() => {
                    // A full spool disk must not stop the agent (shipping frees it): the
                    // newest epoch already in the spool serves again, if this key opens it.
                    let Some((reused, bytes)) = newest_in(spool, master) else {
                        return Err(e);
                    };
                    warn!(error = %e, epoch = %reused.epoch(), "cannot save a new key capsule; continuing the spool's newest epoch");
                    (key, capsule) = (reused, bytes);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Encryption {
            key: Arc::new(key),
            capsule,
            spool,
            shipped: Mutex::new(HashSet::new()),
        })
    }

    /// The key new objects are sealed under.
    pub fn key(&self) -> &Arc<EpochKey> {
        &self.key
    }

    /// Whether the shipper is known to hold the capsule of `epoch`.
    pub fn is_shipped(&self, epoch: &str) -> bool {
        self.shipped.lock().is_ok_and(|s| s.contains(epoch))
    }

    /// Notes that the shipper holds the capsule of `epoch`.
    pub fn mark_shipped(&self, epoch: &str) {
        if let Ok(mut s) = self.shipped.lock() {
            s.insert(epoch.to_owned());
        }
    }

    /// The capsule of `epoch`: this process's, or one an earlier process left in the
    /// spool for the segments it did not ship.
    ///
    /// # Errors
    /// [`AgentError::Spool`] when it is not in the spool.
    pub async fn capsule(&self, epoch: &str) -> Result<Vec<u8>> {
        if epoch == self.key.epoch() {
            return Ok(self.capsule.clone());
        }
        match &self.spool {
            Some(spool) => spool.capsule(epoch).await,
            None => Err(AgentError::Stage(format!(
                "no capsule of epoch {epoch} is at hand"
            ))),
        }
    }
}
