//! `[encryption]`: the master keys, by id, and which one wraps new epoch keys. The same
//! section in the agent's config (which needs only the current key) and the shipper's
//! (whose restores, verify, drill and `rotate-key` need every key still wrapping data).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use logferry_common::crypto::{validate_master_id, FileKeyProvider, KeyLocation};
use serde::Deserialize;

use crate::error::invalid;
use crate::Result;

/// The `[encryption]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSection {
    /// Id of the master key new capsules are wrapped under (the agent's epochs,
    /// `rotate-key`'s target).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Every master key by id: `[encryption.keys.<id>]` with `file` or `env`.
    #[serde(default)]
    pub keys: BTreeMap<String, KeySource>,
    /// Store payloads in clear (agent), or accept and read objects in clear as well
    /// (shipper): only for tests or a store from before encryption; warned at start.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

/// Where one master key is: exactly one of `file` and `env`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// A file holding the key (`logferry-shipper gen-key FILE` writes one), mode 0600, on
    /// no data volume.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An environment variable holding the key's text.
    #[serde(default)]
    pub env: Option<String>,
}

impl EncryptionSection {
    /// The key provider over the configured keys.
    pub fn provider(&self) -> FileKeyProvider {
        FileKeyProvider::new(
            self.keys
                .iter()
                .filter_map(|(id, s)| Some((id.clone(), s.location()?)))
                .collect(),
        )
    }

    /// Checks ids, sources and that `key_id` names a configured key; `required` (the
    /// agent) also wants `key_id` set unless `insecure_plaintext`. Key files must lie
    /// outside every directory of `data_dirs` (a key beside the data it protects is
    /// copied, backed up and stolen with it).
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming the key.
    pub fn validate(&self, required: bool, data_dirs: &[&Path]) -> Result<()> {
        // A reader may hold keys and read objects in clear (a store from before
        // encryption); a writer must be told one or the other.
        if required && self.insecure_plaintext && (self.key_id.is_some() || !self.keys.is_empty()) {
            return Err(invalid(
                "encryption.insecure_plaintext",
                "is set beside keys; remove it to encrypt, or remove the keys",
            ));
        }
        for (id, source) in &self.keys {
            let name = format!("encryption.keys.{id}");
            validate_master_id(id).map_err(|e| invalid(&name, e.to_string()))?;
            match (&source.file, &source.env) {
                (Some(file), None) => {
                    let at = resolved(file);
                    if let Some(dir) = data_dirs.iter().find(|d| at.starts_with(resolved(d))) {
                        return Err(invalid(
                            &format!("{name}.file"),
                            format!(
                                "{} lies inside {}, with the data it protects; keep the key elsewhere",
                                file.display(),
                                dir.display()
                            ),
                        ));
                    }
                }
                (None, Some(var)) if !var.is_empty() => {}
                _ => {
                    return Err(invalid(
                        &name,
                        "set exactly one of file = \"/path/to/key\" and env = \"VARIABLE\"",
                    ))
                }
            }
        }
        match &self.key_id {
            Some(id) if !self.keys.contains_key(id) => Err(invalid(
                "encryption.key_id",
                format!("{id:?} is not among [encryption.keys]; add [encryption.keys.{id:?}]"),
            )),
            None if required && !self.insecure_plaintext => Err(invalid(
                "encryption.key_id",
                "is not set: every payload is encrypted; make a key with `logferry-shipper gen-key FILE`, then set key_id and [encryption.keys.<id>] file = FILE (or insecure_plaintext = true, for tests only)",
            )),
            _ => Ok(()),
        }
    }
}

/// `path` made absolute, its `..` taken lexically and its longest existing ancestor's
/// links resolved, so that `/tmp/../data/spool/k` and `/data/x/../spool/k` are seen
/// inside `/data/spool`.
fn resolved(path: &Path) -> PathBuf {
    let mut abs = PathBuf::new();
    for part in std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .components()
    {
        match part {
            std::path::Component::ParentDir => {
                abs.pop();
            }
            std::path::Component::CurDir => {}
            other => abs.push(other),
        }
    }
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    out
}

impl KeySource {
    fn location(&self) -> Option<KeyLocation> {
        match (&self.file, &self.env) {
            (Some(f), _) => Some(KeyLocation::File(f.clone())),
            (None, Some(v)) => Some(KeyLocation::Env(v.clone())),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> EncryptionSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            ("", "encryption.key_id"),
            ("key_id = \"a\"", "encryption.key_id"),
            ("key_id = \"a\"\n[keys.a]\n", "encryption.keys.a"),
            ("[keys.a]\nfile = \"/k\"\nenv = \"K\"", "encryption.keys.a"),
            ("[keys.\"a/b\"]\nenv = \"K\"", "encryption.keys.a/b"),
            (
                "key_id = \"a\"\n[keys.a]\nfile = \"/data/spool/k\"",
                "encryption.keys.a.file",
            ),
            (
                "key_id = \"a\"\n[keys.a]\nfile = \"/tmp/../data/spool/k\"",
                "encryption.keys.a.file",
            ),
            (
                "key_id = \"a\"\n[keys.a]\nfile = \"/data/nope/../spool/k\"",
                "encryption.keys.a.file",
            ),
            (
                "insecure_plaintext = true\n[keys.a]\nenv = \"K\"",
                "encryption.insecure_plaintext",
            ),
        ];
        for (text, key) in cases {
            let err = section(text)
                .validate(true, &[Path::new("/data/spool")])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
        section("key_id = \"a\"\n[keys.a]\nfile = \"/etc/k\"\n[keys.b]\nenv = \"K\"")
            .validate(true, &[Path::new("/data/spool")])
            .unwrap();
        section("insecure_plaintext = true")
            .validate(true, &[])
            .unwrap();
        section("").validate(false, &[]).unwrap();
    }
}
