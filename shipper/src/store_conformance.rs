//! One suite of what the shipper needs from an object store, run against every backend
//! (local directory and in memory in this crate's tests, the S3-protocol server in the
//! integration tests), the way the `object_store` crate tests its backends with one suite.
//!
//! Compiled for tests and with the `test-support` feature only.

use bytes::Bytes;

use crate::storage::{Store, Stored};

/// Runs every check against `store` under `root` (a prefix no other test writes);
/// the first failure, said in words.
///
/// # Errors
/// What the store did that the shipper does not expect of it.
pub async fn check(store: &Store, root: &str) -> Result<(), String> {
    create_only(store, root).await?;
    reads(store, root).await?;
    listing(store, root).await?;
    racing_creates(store, root).await?;
    deletes(store, root).await?;
    store
        .healthcheck()
        .await
        .map_err(|e| format!("healthcheck: {e}"))
}

fn fail(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// A second create of a key is refused and leaves the first content in place.
async fn create_only(store: &Store, root: &str) -> Result<(), String> {
    let key = format!("{root}/streams/s/segments/0001_04-0001_90.lfs");
    let first = store
        .put_new(&key, Bytes::from_static(b"first"))
        .await
        .map_err(|e| fail("first put", e))?;
    if first != Stored::Created {
        return Err(format!("first put of {key} answered {first:?}"));
    }
    let second = store
        .put_new(&key, Bytes::from_static(b"second"))
        .await
        .map_err(|e| fail("second put", e))?;
    if second != Stored::AlreadyExists {
        return Err(format!("second put of {key} answered {second:?}"));
    }
    let now = store.get(&key).await.map_err(|e| fail("get", e))?;
    if now.as_ref() != b"first" {
        return Err(format!("the second put overwrote {key}: {now:?}"));
    }
    Ok(())
}

/// Whole reads, prefix reads (also past the end), and a missing key.
async fn reads(store: &Store, root: &str) -> Result<(), String> {
    let key = format!("{root}/streams/s/snapshots/20261202T000000Z/chunk-000001.zst");
    let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    store
        .put_new(&key, Bytes::from(body.clone()))
        .await
        .map_err(|e| fail("put", e))?;
    let whole = store.get(&key).await.map_err(|e| fail("get", e))?;
    if whole.as_ref() != body.as_slice() {
        return Err(format!("get of {key} returned other bytes"));
    }
    let head = store
        .get_prefix(&key, body.len() as u64, 100)
        .await
        .map_err(|e| fail("get_prefix", e))?;
    if head.as_ref() != &body[..100] {
        return Err("get_prefix of 100 bytes returned other bytes".into());
    }
    let all = store
        .get_prefix(&key, body.len() as u64, 1 << 20)
        .await
        .map_err(|e| fail("get_prefix past the end", e))?;
    if all.len() != body.len() {
        return Err(format!(
            "get_prefix past the end returned {} of {} bytes",
            all.len(),
            body.len()
        ));
    }
    if store.get(&format!("{root}/no/such/key")).await.is_ok() {
        return Err("get of a missing key succeeded".into());
    }
    Ok(())
}

/// Listings hold exactly what is under the prefix, sorted, with sizes.
async fn listing(store: &Store, root: &str) -> Result<(), String> {
    let dir = format!("{root}/list");
    for (name, len) in [("b", 2usize), ("a", 1), ("c/d", 3)] {
        store
            .put_new(&format!("{dir}/{name}"), Bytes::from(vec![0u8; len]))
            .await
            .map_err(|e| fail("put", e))?;
    }
    store
        .put_new(&format!("{root}/listed-not"), Bytes::from_static(b"x"))
        .await
        .map_err(|e| fail("put", e))?;
    let got: Vec<(String, u64)> = store
        .list(&dir)
        .await
        .map_err(|e| fail("list", e))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let want = vec![
        (format!("{dir}/a"), 1),
        (format!("{dir}/b"), 2),
        (format!("{dir}/c/d"), 3),
    ];
    if got != want {
        return Err(format!("list of {dir} gave {got:?}, not {want:?}"));
    }
    let empty = store
        .list(&format!("{root}/nothing-here"))
        .await
        .map_err(|e| fail("list of an empty prefix", e))?;
    if !empty.is_empty() {
        return Err(format!("an empty prefix listed {empty:?}"));
    }
    Ok(())
}

/// Of creates of one key racing each other, exactly one stores.
async fn racing_creates(store: &Store, root: &str) -> Result<(), String> {
    let key = format!("{root}/streams/s/segments/0002_00-0002_10.lfs");
    // Spawned all before any is awaited, so that they run at once.
    let racers: Vec<_> = (0..4u8)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.put_new(&key, Bytes::from(vec![i; 64])).await })
        })
        .collect();
    let mut created = 0;
    for racer in racers {
        match racer.await.map_err(|e| fail("a racing put died", e))? {
            Ok(Stored::Created) => created += 1,
            Ok(Stored::AlreadyExists) => {}
            Err(e) => return Err(fail("a racing put", e)),
        }
    }
    if created != 1 {
        return Err(format!("{created} of 4 racing creates of {key} stored"));
    }
    Ok(())
}

/// A deleted object is gone; deleting a missing one is no error.
async fn deletes(store: &Store, root: &str) -> Result<(), String> {
    let key = format!("{root}/delete/me");
    store
        .put_new(&key, Bytes::from_static(b"x"))
        .await
        .map_err(|e| fail("put", e))?;
    store.delete(&key).await.map_err(|e| fail("delete", e))?;
    if store.get(&key).await.is_ok() {
        return Err(format!("{key} is still there after its delete"));
    }
    store
        .delete(&key)
        .await
        .map_err(|e| fail("a second delete", e))?;
    let after = store
        .put_new(&key, Bytes::from_static(b"y"))
        .await
        .map_err(|e| fail("put after delete", e))?;
    if after != Stored::Created {
        return Err(format!(
            "a put after the delete of {key} answered {after:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory() {
        check(&Store::in_memory(), "conformance").await.unwrap();
    }

    #[tokio::test]
    async fn local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = logferry_config::StoreConfig {
            url: dir.path().display().to_string(),
            endpoint: None,
            region: None,
            allow_http: false,
        };
        check(&Store::open(&cfg).unwrap(), "conformance")
            .await
            .unwrap();
    }
}
