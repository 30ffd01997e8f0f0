//! SQL rules shared by the snapshot (agent), the target server and the drill (shipper):
//! which schemas are the server's own, and how an identifier or a string is quoted.

/// Schemas that belong to the server, never to a user: snapshots skip them and a restore
/// never drops or compares them.
pub const SYSTEM_SCHEMAS: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// The replica's named lock (`GET_LOCK`) held by whoever pauses its SQL thread: the
/// agent's snapshot and the shipper's drill, so that neither restarts the thread under the
/// other.
pub const PAUSE_LOCK: &str = "logferry_replica_pause";

/// Accounts every server installs for itself (`root`, the system's own users, the role
/// everyone holds): a snapshot leaves them out and a restore never drops them, since the
/// target has its own and re-granting them (`GRANT PROXY ... TO root`) needs privileges no
/// restoring account should need.
pub const SERVER_ACCOUNTS: [&str; 4] = ["root", "mariadb.sys", "mysql", "PUBLIC"];

/// [`SERVER_ACCOUNTS`] and the empty (anonymous) user as an SQL list, for `NOT IN`.
pub fn server_accounts_sql_list() -> String {
    let quoted: Vec<String> = SERVER_ACCOUNTS
        .iter()
        .chain(&[""])
        .map(|s| quote_string(s))
        .collect();
    format!("({})", quoted.join(","))
}

/// Whether `schema` is one of [`SYSTEM_SCHEMAS`].
pub fn is_system_schema(schema: &str) -> bool {
    SYSTEM_SCHEMAS.contains(&schema)
}

/// `SYSTEM_SCHEMAS` as an SQL list, `('mysql','information_schema',...)`, for `NOT IN`.
pub fn system_schemas_sql_list() -> String {
    let quoted: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| format!("'{s}'")).collect();
    format!("({})", quoted.join(","))
}

/// An identifier in backquotes, with backquotes inside doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal in single quotes, with backslashes and quotes inside escaped.
pub fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `'user'@'host'`, as account statements (`SHOW GRANTS FOR`) name an account.
pub fn quote_account(user: &str, host: &str) -> String {
    format!("{}@{}", quote_string(user), quote_string(host))
}

/// `schema`.`table`, each quoted.
pub fn quote_table(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_system_schemas_known() {
        assert_eq!(quote_table("a`b", "t"), "`a``b`.`t`");
        // Exact, as the server compares on Linux: a user database `MySQL` is dumped.
        assert!(
            is_system_schema("mysql") && !is_system_schema("MySQL") && !is_system_schema("shop")
        );
        assert!(system_schemas_sql_list().starts_with("('mysql',"));
        assert_eq!(quote_string(r"o'k\"), r"'o\'k\\'");
        assert_eq!(quote_account("app", "%"), "'app'@'%'");
    }
}
