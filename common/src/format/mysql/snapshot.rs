//! What a MySQL/MariaDB snapshot's manifest holds beyond the generic chunk list: the
//! replica it was dumped from, the dump tool, and every user table's row count and
//! checksum at the snapshot's position (what the drill compares).

use serde::{Deserialize, Serialize};

/// Row count and checksum of one table at the snapshot's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// `schema.table`.
    pub name: String,
    /// `SELECT COUNT(*)`.
    pub rows: u64,
    /// `CHECKSUM TABLE` (absent when the engine cannot give one).
    pub checksum: Option<u64>,
}

/// The MySQL part of a snapshot manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MysqlSnapshot {
    /// Replica it was taken from (host:port).
    pub replica: String,
    /// The dump tool and its version.
    pub dump_tool: String,
    /// Tables with row counts and checksums.
    pub tables: Vec<TableInfo>,
    /// Whether the dump ends with the replica's accounts, roles and grants, loaded after
    /// the data and before the replay. Manifests written before accounts were dumped have
    /// none.
    #[serde(default)]
    pub users: bool,
    /// Accounts the replica's server had not loaded (a host name under
    /// `skip-name-resolve`), left out of the snapshot (`'user'@'host'`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts_left_out: Vec<String>,
}
