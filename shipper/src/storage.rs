//! The object store behind the shipper: the single source of truth for restore and verify.
//!
//! Segments go in with [`PutMode::Create`], so an object is never overwritten: a second put
//! of the same key answers [`Stored::AlreadyExists`] and the caller compares checksums.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use logferry_config::StoreConfig;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use crate::error::{Result, ShipperError};
use crate::keyring::Keyring;
use crate::read_ahead::ReadAhead;

/// Outcome of a create-only put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The object was written (and, for a local directory, fsynced).
    Created,
    /// An object already exists under that key; nothing was written.
    AlreadyExists,
}

/// A listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, ms since the Unix epoch.
    pub modified_ms: i64,
}

/// The configured object store.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
    endpoint: Option<String>,
    read_ahead: ReadAhead,
    /// The keys reads open objects with. The store carries them because every reading
    /// command reaches its objects through it; nothing is written with them.
    keyring: Keyring,
}

impl Store {
    /// Opens the store named by `cfg.url` (a local directory is created if missing).
    ///
    /// # Errors
    /// [`ShipperError::StoreConfig`] naming the URL and the problem.
    pub fn open(cfg: &StoreConfig) -> Result<Self> {
        Self::open_with(cfg, AmazonS3Builder::from_env())
    }

    /// Opens an S3 store with these credentials instead of the `AWS_*` variables, for
    /// tests that run the store suite in-process against an S3-protocol server.
    ///
    /// # Errors
    /// As [`Self::open`].
    #[cfg(any(test, feature = "test-support"))]
    pub fn open_with_keys(cfg: &StoreConfig, key_id: &str, secret: &str) -> Result<Self> {
        let s3 = AmazonS3Builder::new()
            .with_access_key_id(key_id)
            .with_secret_access_key(secret);
        Self::open_with(cfg, s3)
    }

    fn open_with(cfg: &StoreConfig, s3: AmazonS3Builder) -> Result<Self> {
        let url = cfg.url.as_str();
        let dir = cfg.local_dir().map(|d| d.display().to_string());
        let inner: Arc<dyn ObjectStore> = match dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    ShipperError::StoreConfig(format!("cannot create store directory {dir}: {e}"))
                })?;
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| ShipperError::StoreConfig(format!("store directory {dir}: {e}")))?
                    .with_fsync(true);
                Arc::new(fs)
            }
            None if url.starts_with("s3://") => {
                let mut b = s3.with_url(url);
                if let Some(e) = &cfg.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &cfg.region {
                    b = b.with_region(r);
                }
                if cfg.allow_http {
                    b = b.with_allow_http(true);
                }
                let s3 = b
                    .build()
                    .map_err(|e| ShipperError::StoreConfig(format!("S3 store {url}: {e}")))?;
                Arc::new(s3)
            }
            None => {
                return Err(ShipperError::StoreConfig(format!(
                    "store.url {url:?}: use a directory (/dir, ./dir), file:///dir or s3://bucket/prefix"
                )))
            }
        };
        Ok(Store {
            inner,
            url: url.to_owned(),
            endpoint: cfg.endpoint.clone(),
            read_ahead: ReadAhead::DEFAULT,
            keyring: Keyring::none(),
        })
    }

    /// A store held in memory, for the tests of what sits on the store (and the store
    /// conformance suite): it behaves as the others do, create-only puts included.
    #[cfg(any(test, feature = "test-support"))]
    pub fn in_memory() -> Self {
        Store {
            inner: Arc::new(object_store::memory::InMemory::new()),
            url: "memory://".to_owned(),
            endpoint: None,
            read_ahead: ReadAhead::DEFAULT,
            keyring: Keyring::new(None, true),
        }
    }

    /// This store, opening what it reads with `keyring`.
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = keyring;
        self
    }

    /// The keys reads open objects with.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// A failure of this store, said once with the store's name and the fix.
    fn failed(&self, e: &object_store::Error) -> ShipperError {
        ShipperError::Store(crate::store_error::describe(
            &self.url,
            self.endpoint.as_deref(),
            e,
        ))
    }

    /// This store with at most `reads` requests in flight when a command reads many
    /// objects (1 reads one object at a time).
    pub fn with_reads_in_flight(mut self, reads: usize) -> Self {
        self.read_ahead.reads = reads.max(1);
        self
    }

    /// How far commands that read many objects may read ahead in this store.
    pub fn read_ahead(&self) -> ReadAhead {
        self.read_ahead
    }

    /// The URL this store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes `bytes` under `key` unless an object already exists there.
    ///
    /// # Errors
    /// [`ShipperError::Store`] when the store fails.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<Stored> {
        let path = Path::from(key);
        match self
            .inner
            .put_opts(&path, PutPayload::from_bytes(bytes), PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(Stored::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Stored::AlreadyExists),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`ShipperError::Store`] (including not found).
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let got = self
            .inner
            .get(&Path::from(key))
            .await
            .map_err(|e| self.failed(&e))?;
        got.bytes().await.map_err(|e| self.failed(&e))
    }

    /// Reads a whole object, `None` when there is none.
    ///
    /// # Errors
    /// [`ShipperError::Store`] for anything but not found.
    pub async fn get_if_any(&self, key: &str) -> Result<Option<Bytes>> {
        match self.inner.get(&Path::from(key)).await {
            Ok(got) => got.bytes().await.map(Some).map_err(|e| self.failed(&e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// Replaces the object under `key` whole (a local directory writes a temporary file
    /// and renames it): only `rotate-key` does, for key capsules.
    ///
    /// # Errors
    /// [`ShipperError::Store`] when the store fails.
    pub async fn replace(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.inner
            .put_opts(
                &Path::from(key),
                PutPayload::from_bytes(bytes),
                PutMode::Overwrite.into(),
            )
            .await
            .map(drop)
            .map_err(|e| self.failed(&e))
    }

    /// Reads the first `len` bytes of an object (or fewer if it is shorter).
    ///
    /// # Errors
    /// [`ShipperError::Store`].
    pub async fn get_prefix(&self, key: &str, size: u64, len: u64) -> Result<Bytes> {
        let end = size.min(len);
        self.inner
            .get_range(&Path::from(key), 0..end)
            .await
            .map_err(|e| self.failed(&e))
    }

    /// Deletes an object (a missing one is not an error).
    ///
    /// # Errors
    /// [`ShipperError::Store`].
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// Lists every object under `prefix`, sorted by key.
    ///
    /// # Errors
    /// [`ShipperError::Store`].
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let prefix = Path::from(prefix);
        let mut out: Vec<Listed> = self
            .inner
            .list(Some(&prefix))
            .map_ok(|m| Listed {
                key: m.location.to_string(),
                size: m.size,
                modified_ms: m.last_modified.timestamp_millis(),
            })
            .try_collect()
            .await
            .map_err(|e| self.failed(&e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Checks that the store answers: the first page of one listing (one request, however
    /// many objects the store holds), so `/healthz` stays cheap.
    ///
    /// # Errors
    /// [`ShipperError::Store`] with the store's message.
    pub async fn healthcheck(&self) -> Result<()> {
        let prefix = Path::from("streams");
        let mut listing = self.inner.list(Some(&prefix));
        listing.try_next().await.map_err(|e| self.failed(&e))?;
        Ok(())
    }
}
