//! `rotate-key`: every stream's key capsules wrapped under a new master key. Payloads are
//! never rewritten: a capsule holds the only copy of an epoch key, wrapped, so re-wrapping
//! the capsules moves every object to the new key. Each capsule is replaced whole, read
//! back and opened under the new key before the next; an interrupted rotation leaves each
//! capsule under the old key or the new one, and running it again finishes it.

use logferry_common::crypto::{KeyCapsule, MasterKey};
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
    /// Capsules that could not be re-wrapped, and why (each left as it was).
    pub failed: Vec<(String, String)>,
}

/// Re-wraps every capsule of `only` (or of every stream) that is not under the master key
/// `to`, with the store's keyring; `dry_run` opens each (proving the old key works) and
/// changes nothing.
///
/// # Errors
/// [`ShipperError::Key`] naming the key when the new master key is not configured;
/// [`ShipperError::Corrupt`] for a capsule that, written back, does not open;
/// [`ShipperError::Store`]. A capsule that cannot be re-wrapped is reported in
/// [`Rotated::failed`] and left as it was.
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
        match rotate_one(store, &obj.key, &new, dry_run).await? {
            Ok(false) => out.already += 1,
            Ok(true) => out.rewrapped.push(obj.key.clone()),
            Err(why) => {
                tracing::warn!(capsule = %obj.key, %why, "capsule left as it was");
                out.failed.push((obj.key.clone(), why));
            }
        }
    }
    Ok(out)
}

/// Re-wraps the capsule at `key` under `new`: `Ok(true)` re-wrapped (or would be),
/// `Ok(false)` already under it, `Err(why)` it cannot be (it does not parse, or its key is
/// not configured or does not open it): left as it was, and the rotation goes on.
///
/// # Errors
/// [`ShipperError::Store`]; [`ShipperError::Corrupt`] when the capsule written does not
/// read back and open (the rotation stops there).
async fn rotate_one(
    store: &Store,
    key: &str,
    new: &MasterKey,
    dry_run: bool,
) -> Result<std::result::Result<bool, String>> {
    let capsule = match KeyCapsule::from_json(&store.get(key).await?) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if capsule.master_key_id == new.id() {
        return Ok(capsule.open(new).map(|_| false).map_err(|e| e.to_string()));
    }
    let old = match store.keyring().master_key(&capsule.master_key_id).await {
        Ok(k) => k,
        Err(e) => return Ok(Err(e.to_string())),
    };
    // The capsule holds the only copy of its epoch key: the new one must open before it
    // replaces the old.
    let rewrapped = match capsule.rewrap(&old, new) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Err(e) = rewrapped.open(new) {
        return Ok(Err(e.to_string()));
    }
    if !dry_run {
        store.replace(key, rewrapped.to_json().into()).await?;
        let corrupt = |source| ShipperError::Corrupt {
            key: key.to_owned(),
            source,
        };
        let back = KeyCapsule::from_json(&store.get(key).await?).map_err(corrupt)?;
        back.open(new).map_err(corrupt)?;
        tracing::info!(capsule = %key, from = %old.id(), to = %new.id(), "capsule re-wrapped");
    }
    Ok(Ok(true))
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

    #[tokio::test]
    async fn a_capsule_no_key_holder_wrote_is_unauthentic_whatever_comes_first() {
        let (old, old_text) = MasterKey::generate("old").unwrap();
        let (_, new_text) = MasterKey::generate("new").unwrap();
        let (impostor, _) = MasterKey::generate("old").unwrap();
        let stream = StreamId::new("db1").unwrap();
        let store = Store::in_memory();
        let genuine = EpochKey::generate(&stream, "old", 1).unwrap();
        let forged = EpochKey::generate(&stream, "old", 2).unwrap();
        for (key, master) in [(&genuine, &old), (&forged, &impostor)] {
            let capsule = KeyCapsule::wrap(key, master, 1).unwrap();
            store
                .put_new(&capsule_key(&stream, key.epoch()), capsule.to_json().into())
                .await
                .unwrap();
        }
        // Asked for the forged one first: the key that opens the genuine one is the right
        // key, so the forged capsule is not a wrong-key error.
        let reader = store.clone().with_keyring(keyring(&[("old", &old_text)]));
        let err = reader
            .keyring()
            .epoch_key(&reader, &stream, &forged.key_ref())
            .await
            .unwrap_err();
        assert!(matches!(err, ShipperError::Corrupt { .. }), "{err}");
        reader
            .keyring()
            .epoch_key(&reader, &stream, &genuine.key_ref())
            .await
            .unwrap();
        // With only a wrong key configured, it is the key that is wrong.
        let (_, wrong_text) = MasterKey::generate("old").unwrap();
        let wrong = store.clone().with_keyring(keyring(&[("old", &wrong_text)]));
        let err = wrong
            .keyring()
            .epoch_key(&wrong, &stream, &genuine.key_ref())
            .await
            .unwrap_err();
        assert!(matches!(err, ShipperError::Key { .. }), "{err}");
        // A rotation re-wraps the genuine capsule and leaves the forged one, saying so.
        let both = store.with_keyring(keyring(&[("old", &old_text), ("new", &new_text)]));
        let done = rotate(&both, Some(&stream), "new", false).await.unwrap();
        assert_eq!(done.rewrapped.len(), 1);
        assert_eq!(done.failed.len(), 1, "{:?}", done.failed);
        assert!(done.failed[0].0.contains(forged.epoch()));
    }
}
