//! Configuration of the logferry agent and shipper.
//!
//! # Layout
//! - [`load`]: reads a TOML file, applies `LOGFERRY__SECTION__KEY` environment overrides and
//!   deserializes into a typed struct (unknown keys are rejected by name).
//! - [`agent`]: [`AgentConfig`] and its validation.
//! - [`alerts`]: the shipper's alert rules and receivers.
//! - [`cron`]: five-field cron schedules for snapshots.
//! - [`encryption`]: the master keys of agent and shipper.
//! - [`redis`]: the Redis source's settings.
//! - [`shipper`]: [`ShipperConfig`] and its validation.
//! - [`secret`]: URLs with credentials, redacted in every `Debug` output.
//!
//! Every validation error names the offending key and says how to fix it.

pub mod agent;
pub mod alerts;
pub mod cron;
pub mod encryption;
pub mod error;
pub mod load;
pub mod redis;
pub mod secret;
pub mod shipper;

pub use agent::{
    AgentConfig, CodecChoice, MysqlSnapshotSection, MysqlSource, MysqlTls, ResumeMode,
    SourceConfig, StartFrom, TlsMode,
};
pub use encryption::EncryptionSection;
pub use error::{ConfigError, Result};
pub use load::{load_file, parse_str, ENV_PREFIX};
pub use redis::{RedisMode, RedisSnapshotSection, RedisSource};
pub use secret::{SecretString, SecretUrl};
pub use shipper::{ShipperConfig, StoreConfig};

#[cfg(test)]
mod examples {
    use std::path::Path;

    #[test]
    fn example_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        crate::AgentConfig::load(&root.join("agent.toml")).unwrap_or_else(|e| panic!("{e}"));
        crate::ShipperConfig::load(&root.join("shipper.toml")).unwrap_or_else(|e| panic!("{e}"));
    }
}
