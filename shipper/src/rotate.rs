//! `rotate-key`: every stream's key capsules wrapped under a new master key. Payloads are
//! never rewritten: a capsule holds the only copy of an epoch key, wrapped, so re-wrapping
//! the capsules moves every object to the new key. Each capsule is replaced whole, read
//! back and opened under the new key before the next; an interrupted rotation leaves each
//! capsule under the old key or the new one, and running it again finishes it.

use logferry_common::crypto::KeyCapsule;
use logferry_common::keys::{capsule_epoch, capsules_prefix, stream_prefix};
use logferry_common::StreamId;

use crate::error::{Result, ShipperError};
use crate::storage::Store;

/// What a rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// Capsules re-wrapped under the new key (or that would be, on a dry run).
    pub rewrapped: Vec<String>,
    /// Capsules already under the new key.
    pub already: usize,
}

/// Re-wraps every capsule of `only` (or of every stream) that is not under the master key
/// `to`, with the store's keyring; `dry_run` opens each (proving the old key works) and
/// changes nothing.
///
/// # Errors
/// [`ShipperError::Key`] naming the key when the old or the new master key is not
/// configured or not the right one; [`ShipperError::Corrupt`] for a capsule that does not
/// parse or, written back, does not open; [`ShipperError::Store`].
pub async fn rotate(
    store: &Store,
    only: Option<&StreamId>,
    to: &str,
    dry_run: bool,
) -> Result<Rotated> {
    let new = store.keyring().master_key(to).await?;
    let mut out = Rotated::default();
    let listing = match only {
        Some(s) => store.list(&capsules_prefix(s)).await?,
        None => store.list(&stream_prefix(None)).await?,
    };
    for obj in listing {
        if capsule_epoch(&obj.key).is_none() {
            continue;
        }
        let corrupt = |source| ShipperError::Corrupt {
            key: obj.key.clone(),
            source,
        };
        let capsule = KeyCapsule::from_json(&store.get(&obj.key).await?).map_err(corrupt)?;
        if capsule.master_key_id == to {
            capsule.open(&new).map_err(|source| ShipperError::Key {
                object: obj.key.clone(),
                source,
            })?;
            out.already += 1;
            continue;
        }
        let old = store.keyring().master_key(&capsule.master_key_id).await?;
        let rewrapped = capsule
            .rewrap(&old, &new)
            .map_err(|source| ShipperError::Key {
                object: obj.key.clone(),
                source,
            })?;
        // The capsule holds the only copy of its epoch key: the new one must open before
        // it replaces the old.
        rewrapped.open(&new).map_err(corrupt)?;
        if !dry_run {
            store.replace(&obj.key, rewrapped.to_json().into()).await?;
            let back = KeyCapsule::from_json(&store.get(&obj.key).await?).map_err(corrupt)?;
            back.open(&new).map_err(corrupt)?;
            tracing::info!(capsule = %obj.key, from = %old.id(), to, "capsule re-wrapped");
        }
        out.rewrapped.push(obj.key.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use logferry_common::crypto::{EpochKey, KeyCapsule, KeyProvider, KeyRef, MasterKey};
    use logferry_common::keys::capsule_key;
    use logferry_common::StreamId;

    use super::*;
    use crate::keyring::Keyring;

    /// Master keys held in memory, by id (their text form).
    #[derive(Debug)]
    struct Keys(BTreeMap<String, String>);

    impl KeyProvider for Keys {
        fn master_key(&self, id: &str) -> logferry_common::Result<MasterKey> {
            let text = self.0.get(id).ok_or_else(|| logferry_common::Error::Key {
                key_id: id.into(),
                detail: format!("master key {id:?} is not configured"),
            })?;
            MasterKey::from_text(id, text, "memory")
        }

        fn ids(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
        }
    }

    fn keyring(keys: &[(&str, &str)]) -> Keyring {
        let map = keys
            .iter()
            .map(|(id, text)| (id.to_string(), text.to_string()))
            .collect();
        Keyring::new(Some(Box::new(Keys(map))), false)
    }

    #[tokio::test]
    async fn capsules_move_to_the_new_key_and_a_dry_run_changes_nothing() {
        let (old, old_text) = MasterKey::generate("old").unwrap();
        let (_, new_text) = MasterKey::generate("new").unwrap();
        let stream = StreamId::new("db1").unwrap();
        let store = Store::in_memory();
        let mut refs = Vec::new();
        for ms in [1, 2] {
            let key = EpochKey::generate(&stream, "old", ms).unwrap();
            let capsule = KeyCapsule::wrap(&key, &old, ms).unwrap();
            store
                .put_new(&capsule_key(&stream, key.epoch()), capsule.to_json().into())
                .await
                .unwrap();
            refs.push((key.key_ref(), key.mac("m", b"x").unwrap()));
        }
        let both = store
            .clone()
            .with_keyring(keyring(&[("old", &old_text), ("new", &new_text)]));
        let dry = rotate(&both, Some(&stream), "new", true).await.unwrap();
        assert_eq!((dry.rewrapped.len(), dry.already), (2, 0));
        let done = rotate(&both, None, "new", false).await.unwrap();
        assert_eq!((done.rewrapped.len(), done.already), (2, 0));
        let again = rotate(&both, None, "new", false).await.unwrap();
        assert_eq!((again.rewrapped.len(), again.already), (0, 2));

        let new_only = store.clone().with_keyring(keyring(&[("new", &new_text)]));
        for (r, mac) in &refs {
            let key = new_only
                .keyring()
                .epoch_key(&new_only, &stream, r)
                .await
                .unwrap();
            assert!(
                key.mac_matches("m", b"x", mac).unwrap(),
                "the epoch key is the same"
            );
        }
        let old_only = store.with_keyring(keyring(&[("old", &old_text)]));
        let err = old_only
            .keyring()
            .epoch_key(&old_only, &stream, &refs[0].0)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("master key \"new\" is not configured"),
            "{err}"
        );
        let missing = KeyRef::parse("old/0000000000009-0011223344556677").unwrap();
        let err = new_only
            .keyring()
            .epoch_key(&new_only, &stream, &missing)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not in the store"), "{err}");
    }
}
