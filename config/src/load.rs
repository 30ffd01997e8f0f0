//! Reading TOML with environment overrides.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{ConfigError, Result};

/// Environment variables starting with this prefix override keys of the file:
/// `LOGFERRY__SOURCE__URL=mysql://...` sets `source.url`. Values are read as TOML when they
/// parse as a TOML value (numbers, booleans, quoted strings), else as plain strings.
pub const ENV_PREFIX: &str = "LOGFERRY__";

/// Loads `path`, applies environment overrides from the process environment and deserializes.
///
/// # Errors
/// [`ConfigError::Read`], or [`ConfigError::Parse`] naming the key and line.
pub fn load_file<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, &path.display().to_string(), std::env::vars())
}

/// Parses `text` (from `origin`, used in messages), applies the overrides among `env` and
/// deserializes.
///
/// # Errors
/// [`ConfigError::Parse`] naming the key and line.
pub fn parse_str<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: syntax_error(text, &e),
    })?;
    let mut overridden = Vec::new();
    for (name, value) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Parse {
                origin: "environment".into(),
                message: format!("{name}: empty key segment; use {ENV_PREFIX}SECTION__KEY"),
            });
        }
        set_path(&mut table, &keys, parse_env_value(&value), &name)?;
        overridden.push(name);
    }
    let origin = if overridden.is_empty() {
        origin.to_owned()
    } else {
        format!("{origin} (with overrides {})", overridden.join(", "))
    };
    T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
        origin,
        message: e.to_string(),
    })
}

/// A TOML syntax error as its message and place, without the quoted source line that the
/// parser's own text carries (it may hold a password).
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value, var: &str) -> Result<()> {
    let (last, parents) = keys.split_last().ok_or_else(|| ConfigError::Parse {
        origin: "environment".into(),
        message: format!("{var}: no key after the prefix"),
    })?;
    let mut cur = table;
    for k in parents {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| ConfigError::Parse {
            origin: "environment".into(),
            message: format!("{var}: `{k}` is not a table in the config file"),
        })?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_names_the_place_but_not_the_line() {
        let text = "[source]\nurl = \"mysql://repl:pa\\ss-s3cret@db\"\n";
        let err = parse_str::<toml::Table>(text, "a.toml", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any text as a config file, and any environment override: an error naming where,
        /// or a config, never a panic.
        #[test]
        fn random_config_text_never_panics(text in "\\PC{0,400}", key in "[A-Z_]{1,20}", value in "\\PC{0,40}") {
            let env = vec![(format!("LOGFERRY__{key}"), value)];
            let _ = parse_str::<crate::AgentConfig>(&text, "a.toml", env.clone());
            let _ = parse_str::<crate::ShipperConfig>(&text, "s.toml", env);
        }

        /// A valid agent config with bytes changed: parsed and validated without a panic.
        #[test]
        fn mutated_configs_never_panic_validation(flips in proptest::collection::vec((0usize..10_000, 32u8..127), 1..6)) {
            let good = "[agent]\nstream = \"db1\"\nspool_dir = \"/tmp/s\"\n[source]\ntype = \"mysql\"\nurl = \"mysql://u:p@127.0.0.1:3306\"\nserver_id = 7\ntls = { mode = \"verify_identity\", ca = \"/ca.pem\" }\n[segment]\nmax_bytes = 4194304\n[shipper]\nurl = \"https://127.0.0.1:9450\"\n[encryption]\nkey_id = \"k\"\nkeys.k.file = \"/etc/k.key\"\n";
            proptest::prop_assert!(parse_str::<crate::AgentConfig>(good, "a.toml", Vec::new()).is_ok_and(|c| c.validate().is_ok()));
            let mut text = good.as_bytes().to_vec();
            for (at, v) in flips {
                let i = at % text.len();
                text[i] = v;
            }
            let text = String::from_utf8_lossy(&text);
            if let Ok(cfg) = parse_str::<crate::AgentConfig>(&text, "a.toml", Vec::new()) {
                let _ = cfg.validate();
            }
        }
    }
}
