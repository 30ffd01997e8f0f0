//! Master keys, epoch keys, the reference a header names, and where master keys come from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result, StreamId};

/// Bytes of every key (AES-256).
pub const KEY_LEN: usize = 32;

/// A master key: it wraps epoch keys and never touches data. Its bytes never appear in
/// `Debug` output or logs.
pub struct MasterKey {
    id: String,
    bytes: [u8; KEY_LEN],
}

impl MasterKey {
    /// A master key from its id and bytes.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the id is outside [`validate_master_id`]'s grammar.
    pub fn new(id: &str, bytes: [u8; KEY_LEN]) -> Result<Self> {
        validate_master_id(id)?;
        Ok(MasterKey {
            id: id.to_owned(),
            bytes,
        })
    }

    /// A master key read from its text form: 64 hex digits, alone on a line; lines starting
    /// with `#` and blank lines are ignored (what `logferry-shipper gen-key` writes).
    ///
    /// # Errors
    /// [`Error::Key`] naming the key and `origin` when the text holds no such line.
    pub fn from_text(id: &str, text: &str, origin: &str) -> Result<Self> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let bad = || {
            Error::Key {
            key_id: id.to_owned(),
            detail: format!(
                "master key {id:?}: {origin} does not hold a key: expected 64 hex digits on one line (logferry-shipper gen-key writes one)"
            ),
        }
        };
        let line = lines.next().ok_or_else(bad)?;
        if lines.next().is_some() || line.len() != 2 * KEY_LEN {
            return Err(bad());
        }
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(line, &mut bytes).map_err(|_| bad())?;
        MasterKey::new(id, bytes)
    }

    /// A new random key with the text form [`MasterKey::from_text`] reads.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad id; [`Error::Key`] if the system has no randomness.
    pub fn generate(id: &str) -> Result<(Self, String)> {
        let mut bytes = [0u8; KEY_LEN];
        super::random(&mut bytes)?;
        let key = MasterKey::new(id, bytes)?;
        let text = format!(
            "# logferry master key {id:?}. Keep it apart from the data and the bucket: whoever\n# holds it and the bucket can read every backup; whoever loses it loses them.\n{}\n",
            hex::encode(bytes)
        );
        Ok((key, text))
    }

    /// The key's id, as configuration and headers name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl Drop for EpochKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The key of one epoch of one stream: every object the agent seals between two starts is
/// sealed under a key derived from it. Its bytes never appear in `Debug` output.
pub struct EpochKey {
    stream: StreamId,
    epoch: String,
    master_id: String,
    bytes: [u8; KEY_LEN],
}

impl EpochKey {
    /// A new random epoch key of `stream`, to be wrapped under the master key `master_id`;
    /// its epoch id starts with `now_ms`, so epochs sort by when they began.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad master id; [`Error::Key`] if the system has no
    /// randomness.
    pub fn generate(stream: &StreamId, master_id: &str, now_ms: i64) -> Result<Self> {
        validate_master_id(master_id)?;
        let mut tag = [0u8; 8];
        super::random(&mut tag)?;
        let mut bytes = [0u8; KEY_LEN];
        super::random(&mut bytes)?;
        Ok(EpochKey {
            stream: stream.clone(),
            epoch: format!("{:013}-{}", now_ms.max(0), hex::encode(tag)),
            master_id: master_id.to_owned(),
            bytes,
        })
    }

    pub(crate) fn from_parts(
        stream: StreamId,
        epoch: String,
        master_id: String,
        bytes: [u8; KEY_LEN],
    ) -> Self {
        EpochKey {
            stream,
            epoch,
            master_id,
            bytes,
        }
    }

    /// The stream the key belongs to.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The epoch's id (`<13-digit ms>-<16 hex digits>`).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The reference that headers and manifests of objects sealed under it carry.
    pub fn key_ref(&self) -> KeyRef {
        KeyRef {
            master: self.master_id.clone(),
            epoch: self.epoch.clone(),
        }
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKey")
            .field("stream", &self.stream)
            .field("epoch", &self.epoch)
            .field("master_id", &self.master_id)
            .finish_non_exhaustive()
    }
}

/// What an encrypted object's header names: the master key that wrapped its epoch key when
/// it was sealed, and the epoch (`<master>/<epoch>`). The epoch finds the capsule; the
/// master id says which key an operator must configure (the capsule says which one wraps
/// it now, after a `rotate-key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    /// Id of the master key.
    pub master: String,
    /// Id of the epoch.
    pub epoch: String,
}

impl KeyRef {
    /// Parses `<master>/<epoch>`.
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the text.
    pub fn parse(text: &str) -> Result<Self> {
        let (master, epoch) = text.split_once('/').ok_or_else(|| {
            Error::invalid("key reference", format!("{text:?}: expected MASTER/EPOCH"))
        })?;
        validate_master_id(master)?;
        validate_epoch(epoch)?;
        Ok(KeyRef {
            master: master.to_owned(),
            epoch: epoch.to_owned(),
        })
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.master, self.epoch)
    }
}

/// Checks a master key id: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
///
/// # Errors
/// [`Error::Invalid`] quoting it.
pub fn validate_master_id(id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "master key id",
            format!("{id:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with .)"),
        ))
    }
}

/// Checks an epoch id: 13 digits, `-`, 16 lowercase hex digits.
///
/// # Errors
/// [`Error::Invalid`] quoting it.
pub fn validate_epoch(epoch: &str) -> Result<()> {
    let ok = epoch.len() == 30
        && epoch.as_bytes()[13] == b'-'
        && epoch[..13].bytes().all(|b| b.is_ascii_digit())
        && epoch[14..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "epoch id",
            format!("{epoch:?}: expected 13 digits, '-' and 16 hex digits"),
        ))
    }
}

/// Where master keys come from. The file provider is built; a KMS would be another
/// implementation, asked for the same ids.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// The master key named `id`.
    ///
    /// # Errors
    /// [`Error::Key`] naming `id` when it is not configured or cannot be read.
    fn master_key(&self, id: &str) -> Result<MasterKey>;

    /// The ids of the keys it can give, for messages.
    fn ids(&self) -> Vec<String>;
}

/// Where one master key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// A file holding the key's text form, outside every data directory.
    File(PathBuf),
    /// An environment variable holding the key's text form.
    Env(String),
}

/// Master keys from files and environment variables, read when asked for (a rotated file
/// is read afresh by the next command).
#[derive(Debug, Clone, Default)]
pub struct FileKeyProvider {
    keys: BTreeMap<String, KeyLocation>,
}

impl FileKeyProvider {
    /// A provider of the keys in `keys`, by id.
    pub fn new(keys: BTreeMap<String, KeyLocation>) -> Self {
        FileKeyProvider { keys }
    }
}

impl KeyProvider for FileKeyProvider {
    fn master_key(&self, id: &str) -> Result<MasterKey> {
        let unusable = |detail: String| Error::Key {
            key_id: id.to_owned(),
            detail,
        };
        let Some(location) = self.keys.get(id) else {
            let have = if self.keys.is_empty() {
                "none is configured".to_owned()
            } else {
                format!("configured: {}", self.ids().join(", "))
            };
            return Err(unusable(format!(
                "master key {id:?} is not configured ({have}); add it as [encryption.keys.{id:?}] with file = \"...\" or env = \"...\""
            )));
        };
        match location {
            KeyLocation::File(path) => {
                check_mode(id, path)?;
                let text = std::fs::read_to_string(path)
                    .map(Zeroizing::new)
                    .map_err(|e| {
                        unusable(format!(
                            "master key {id:?}: cannot read {}: {e}",
                            path.display()
                        ))
                    })?;
                MasterKey::from_text(id, &text, &path.display().to_string())
            }
            KeyLocation::Env(var) => {
                let text = std::env::var(var).map(Zeroizing::new).map_err(|_| {
                    unusable(format!(
                        "master key {id:?}: the environment variable {var} is not set"
                    ))
                })?;
                MasterKey::from_text(id, &text, &format!("the environment variable {var}"))
            }
        }
    }

    fn ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }
}

/// Refuses a key file that others than its owner and group may read or anyone but its
/// owner may write: a key readable by every account on the host is no key.
#[cfg(unix)]
fn check_mode(id: &str, path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o027 != 0 {
        return Err(Error::Key {
            key_id: id.to_owned(),
            detail: format!(
                "master key {id:?}: {} has mode {mode:o}, readable or writable by other accounts; chmod 600 it (or 640 for a group)",
                path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_id: &str, _path: &std::path::Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_and_never_shows_its_bytes() {
        let (key, text) = MasterKey::generate("main-2026").unwrap();
        let back = MasterKey::from_text("main-2026", &text, "test").unwrap();
        assert_eq!(back.bytes(), key.bytes());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode(key.bytes())), "{shown}");
        for bad in [
            "",
            "abc",
            &"0".repeat(63),
            &format!("{}\n{}", "0".repeat(64), "1".repeat(64)),
        ] {
            let err = MasterKey::from_text("k", bad, "the file x")
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"k\"") && err.contains("the file x"), "{err}");
        }
    }

    #[test]
    fn a_missing_or_open_key_file_is_refused_naming_the_key() {
        let dir = tempfile_dir();
        let path = dir.join("k.key");
        let (_, text) = MasterKey::generate("k").unwrap();
        std::fs::write(&path, text).unwrap();
        let provider = FileKeyProvider::new(BTreeMap::from([(
            "k".to_owned(),
            KeyLocation::File(path.clone()),
        )]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = provider.master_key("k").unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        provider.master_key("k").unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = provider.master_key("k").unwrap_err().to_string();
        assert!(
            err.contains("\"k\": cannot read") && err.contains("k.key"),
            "{err}"
        );
        let err = provider.master_key("other").unwrap_err().to_string();
        assert!(
            err.contains("\"other\" is not configured (configured: k)"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn references_and_ids_keep_to_their_grammar() {
        let stream = StreamId::new("db1").unwrap();
        let key = EpochKey::generate(&stream, "main", 1_700_000_000_000).unwrap();
        let r = key.key_ref();
        assert_eq!(KeyRef::parse(&r.to_string()).unwrap(), r);
        assert!(r.to_string().starts_with("main/1700000000000-"));
        for bad in [
            "main",
            "/x",
            "main/1",
            "../x/1700000000000-0011223344556677",
            "a/b/c",
        ] {
            assert!(KeyRef::parse(bad).is_err(), "{bad}");
        }
        assert!(validate_master_id(".hidden").is_err());
        assert!(validate_master_id(&"a".repeat(65)).is_err());
    }

    fn tempfile_dir() -> PathBuf {
        let mut tag = [0u8; 8];
        crate::crypto::random(&mut tag).unwrap();
        let dir = std::env::temp_dir().join(format!("logferry-keys-{}", hex::encode(tag)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
