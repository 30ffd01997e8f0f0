//! The replica's accounts and grants, as SQL appended to a snapshot after the data, so that
//! a restore creates every user before the replay: a `GRANT` replayed after the snapshot
//! then finds its user.
//!
//! Written from `SHOW CREATE USER` and `SHOW GRANTS` (what `mariadb-dump --system=users`
//! does, but that tool stops at the first account the server has not loaded, such as a
//! host-name account under `skip-name-resolve`; such an account is left out with a
//! warning). Accounts are created `IF NOT EXISTS` and the grants carry no password, so an
//! account the target already has (the one the restore logs in with) keeps its password;
//! the server's own accounts ([`SERVER_ACCOUNTS`](logferry_common::format::mysql::sql::SERVER_ACCOUNTS))
//! are left out, as the target has its own.

use logferry_common::format::mysql::sql::{quote_account, quote_ident, server_accounts_sql_list};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tracing::warn;

use crate::error::Result;

/// One account or role of the replica.
struct Account {
    user: String,
    host: String,
    is_role: bool,
}

impl Account {
    /// How account statements name it.
    fn name(&self) -> String {
        if self.is_role {
            quote_ident(&self.user)
        } else {
            quote_account(&self.user, &self.host)
        }
    }
}

/// "Can't find any matching row in the user table": an account the server has not loaded.
const ER_NO_SUCH_ACCOUNT: u16 = 1133;

/// The replica's accounts as SQL for the snapshot.
#[derive(Debug)]
pub struct Accounts {
    /// Statements that recreate the accounts, roles and grants.
    pub sql: String,
    /// How many accounts and roles they create.
    pub count: usize,
    /// Accounts the server had not loaded, left out (`'user'@'host'`).
    pub left_out: Vec<String>,
}

/// The SQL that recreates the replica's accounts, roles and grants. `error` classifies a
/// failure of the replica itself.
///
/// # Errors
/// When the account list or an account's grants cannot be read.
pub async fn accounts_sql(
    conn: &mut Conn,
    error: impl Fn(mysql_async::Error) -> crate::error::AgentError,
) -> Result<Accounts> {
    let others = format!("User NOT IN {}", server_accounts_sql_list());
    let listed: Vec<(String, String, bool)> = match conn
        .query(format!(
            "SELECT User, Host, is_role = 'Y' FROM mysql.user WHERE {others} ORDER BY User, Host"
        ))
        .await
    {
        Ok(rows) => rows,
        // MySQL has no is_role column; its roles are locked accounts, created as such.
        Err(_) => conn
            .query(format!(
                "SELECT User, Host, FALSE FROM mysql.user WHERE {others} ORDER BY User, Host"
            ))
            .await
            .map_err(&error)?,
    };
    let mut creates = Vec::new();
    let mut grants = Vec::new();
    let mut left_out = Vec::new();
    for (user, host, is_role) in listed {
        let a = Account {
            user,
            host,
            is_role,
        };
        let create = if a.is_role {
            Ok(format!("CREATE ROLE IF NOT EXISTS {}", a.name()))
        } else {
            conn.query_first::<String, _>(format!("SHOW CREATE USER {}", a.name()))
                .await
                .map(|c| c.map(|c| if_not_exists(&c)).unwrap_or_default())
        };
        let shown = match create {
            Ok(c) => conn
                .query::<String, _>(format!("SHOW GRANTS FOR {}", a.name()))
                .await
                .map(|g| (c, g)),
            Err(e) => Err(e),
        };
        match shown {
            Ok((create, shown)) => {
                creates.push(create);
                grants.extend(shown.iter().map(|g| without_password(g)));
            }
            // Only an account the server has not loaded (a host name under
            // skip-name-resolve) is left out; any other failure fails the snapshot.
            Err(mysql_async::Error::Server(s)) if s.code == ER_NO_SUCH_ACCOUNT => {
                warn!(account = %a.name(), error = %s.message, "account left out of the snapshot: the server has not loaded it (a host name under skip-name-resolve?)");
                left_out.push(a.name());
            }
            Err(e) => return Err(error(e)),
        }
    }
    let mut sql = String::from("\n-- logferry: accounts and grants of the replica\n");
    for statement in creates.iter().chain(&grants).filter(|s| !s.is_empty()) {
        sql.push_str(statement);
        sql.push_str(";\n");
    }
    Ok(Accounts {
        sql,
        count: creates.len(),
        left_out,
    })
}

/// `CREATE USER …` as `CREATE USER IF NOT EXISTS …`.
fn if_not_exists(create: &str) -> String {
    match create.strip_prefix("CREATE USER ") {
        Some(rest) if !rest.starts_with("IF NOT EXISTS") => {
            format!("CREATE USER IF NOT EXISTS {rest}")
        }
        _ => create.to_owned(),
    }
}

/// A `SHOW GRANTS` line without its `IDENTIFIED …` clause (MariaDB repeats the password
/// there): the password comes from `CREATE USER` alone, which leaves an existing account's
/// untouched.
fn without_password(grant: &str) -> String {
    let Some(at) = grant.find(" IDENTIFIED ") else {
        return grant.to_owned();
    };
    let rest = &grant[at..];
    let end = [" REQUIRE ", " WITH "]
        .iter()
        .filter_map(|k| rest.find(k))
        .min()
        .unwrap_or(rest.len());
    format!("{}{}", &grant[..at], &rest[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_lose_their_password_and_keep_the_rest() {
        assert_eq!(
            without_password("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*D8'"),
            "GRANT USAGE ON *.* TO `app`@`%`"
        );
        assert_eq!(
            without_password("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` IDENTIFIED VIA unix_socket OR mysql_native_password USING 'invalid' WITH GRANT OPTION"),
            "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"
        );
        let plain = "GRANT SELECT, INSERT ON `app`.* TO `app`@`%`";
        assert_eq!(without_password(plain), plain);
    }

    #[test]
    fn accounts_are_created_only_when_missing() {
        assert_eq!(
            if_not_exists("CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*D8'"),
            "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*D8'"
        );
        let already = "CREATE USER IF NOT EXISTS `a`@`%`";
        assert_eq!(if_not_exists(already), already);
    }
}
