//! Configuration of `logferry-shipper`.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::error::invalid;
use crate::Result;

/// The whole shipper configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperConfig {
    /// The HTTP API.
    #[serde(default)]
    pub server: ServerSection,
    /// Where segments are stored.
    pub store: StoreConfig,
}

/// The HTTP API of the shipper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest accepted segment upload; larger bodies get 413.
    #[serde(default = "default_max_segment_bytes")]
    pub max_segment_bytes: u64,
    /// Also decompress every upload and check its plaintext sha256 before acknowledging it.
    /// Off by default: the trailer sha256 already proves the stored bytes are the bytes the
    /// agent sealed, the plaintext is checked by `verify` and by every restore, and an
    /// encrypted payload cannot be opened without its key. On, it costs about as much CPU
    /// per byte as the agent's compression (see BENCHMARKS.md).
    #[serde(default)]
    pub verify_payload: bool,
    /// Uploads (segments and snapshot chunks) received at once; more wait their turn. Each
    /// is held in memory whole, so the shipper's upload memory stays under this many times
    /// `max_segment_bytes`.
    #[serde(default = "default_max_concurrent_uploads")]
    pub max_concurrent_uploads: usize,
    /// How long one upload may take to arrive and be stored; a slower one (an agent host
    /// gone mid-upload) gets 408 and frees its place, which the agent retries.
    #[serde(default = "default_upload_timeout_ms")]
    pub upload_timeout_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9450))
}
fn default_upload_timeout_ms() -> u64 {
    300_000
}
fn default_max_concurrent_uploads() -> usize {
    8
}
fn default_max_segment_bytes() -> u64 {
    logferry_common::segment::DEFAULT_MAX_SEGMENT_BYTES
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            max_segment_bytes: default_max_segment_bytes(),
            verify_payload: false,
            max_concurrent_uploads: default_max_concurrent_uploads(),
            upload_timeout_ms: default_upload_timeout_ms(),
        }
    }
}

/// The object store holding segments: the source of truth for restore and verify.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///absolute/dir` or a plain absolute path for a local directory,
    /// `s3://bucket[/prefix]` for S3 (credentials from the standard `AWS_*` variables).
    pub url: String,
    /// S3-compatible endpoint (MinIO, Ceph...), e.g. `http://minio:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (`false` leaves `AWS_ALLOW_HTTP` from the environment in force).
    #[serde(default)]
    pub allow_http: bool,
}

impl ShipperConfig {
    /// Loads and validates a shipper config file (with environment overrides).
    ///
    /// # Errors
    /// Any [`crate::ConfigError`], naming the key.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: ShipperConfig = crate::load_file(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming the key and the fix.
    pub fn validate(&self) -> Result<()> {
        self.store.validate()?;
        if !(1_000..=3_600_000).contains(&self.server.upload_timeout_ms) {
            return Err(invalid(
                "server.upload_timeout_ms",
                "use 1000..=3600000 (default 300000)",
            ));
        }
        if !(1..=1024).contains(&self.server.max_concurrent_uploads) {
            return Err(invalid(
                "server.max_concurrent_uploads",
                "use 1..=1024 (default 8)",
            ));
        }
        let most = logferry_common::segment::MAX_STORED_SEGMENT_BYTES;
        if !(4096..=most).contains(&self.server.max_segment_bytes) {
            return Err(invalid(
                "server.max_segment_bytes",
                format!(
                    "use 4096..={most} (default {})",
                    default_max_segment_bytes()
                ),
            ));
        }
        Ok(())
    }
}

impl StoreConfig {
    /// A store at `url` with no S3 options.
    pub fn from_url(url: &str) -> Self {
        StoreConfig {
            url: url.to_owned(),
            endpoint: None,
            region: None,
            allow_http: false,
        }
    }

    /// The directory of a local store: `/dir`, `file:///dir`, or a path relative to the
    /// current directory (`./store`, `backups/store`), made absolute; `None` for any other
    /// URL (S3).
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        let u = self.url.as_str();
        if let Some(p) = u.strip_prefix("file://") {
            return Some(p.into());
        }
        if u.is_empty() || u.contains("://") {
            return None;
        }
        std::path::absolute(u).ok()
    }

    /// Checks the URL's form.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for `store.url`.
    pub fn validate(&self) -> Result<()> {
        let u = &self.url;
        if self.local_dir().is_some() {
            return Ok(());
        }
        let parsed = url::Url::parse(u).map_err(|e| {
            invalid(
                "store.url",
                format!("{u:?} is not a URL ({e}); use a directory (/dir, ./dir), file:///dir or s3://bucket/prefix"),
            )
        })?;
        match parsed.scheme() {
            "file" | "s3" => Ok(()),
            other => Err(invalid(
                "store.url",
                format!("scheme {other:?} is not supported; use file:///dir or s3://bucket/prefix"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_str;

    #[test]
    fn a_relative_store_path_is_a_directory_under_the_current_one() {
        let cfg = StoreConfig::from_url("./some/store");
        cfg.validate().unwrap();
        let dir = cfg.local_dir().unwrap();
        assert!(dir.is_absolute() && dir.ends_with("some/store"), "{dir:?}");
        assert!(StoreConfig::from_url("s3://b/p").local_dir().is_none());
        assert!(StoreConfig::from_url("ftp://x").validate().is_err());
        assert!(StoreConfig::from_url("").validate().is_err());
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        for (name, text) in [
            (
                "examples/shipper.toml",
                include_str!("../../examples/shipper.toml"),
            ),
            (
                "examples/compose/shipper.toml",
                include_str!("../../examples/compose/shipper.toml"),
            ),
        ] {
            let cfg: ShipperConfig =
                parse_str(text, name, vec![]).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!cfg.server.verify_payload, "{name}");
        }
    }

    #[test]
    fn minimal_and_bad_store() {
        let cfg: ShipperConfig =
            parse_str("[store]\nurl = \"/tmp/x\"\n", "s.toml", vec![]).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.server.listen.port(), 9450);
        let bad: ShipperConfig =
            parse_str("[store]\nurl = \"gs://b\"\n", "s.toml", vec![]).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("store.url"));
    }
}
