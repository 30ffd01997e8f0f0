//! A write workload across several tables: inserts, updates, deletes, in transactions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// Tables the workload writes.
pub const TABLES: [&str; 3] = ["app.accounts", "app.orders", "app.audit"];

/// Creates the workload's tables.
///
/// # Errors
/// When a statement fails.
pub async fn create_schema(c: &mut Conn) -> anyhow::Result<()> {
    c.query_drop(
        "CREATE DATABASE app; \
         CREATE TABLE app.accounts (id INT PRIMARY KEY, owner VARCHAR(64), balance BIGINT) ENGINE=InnoDB; \
         CREATE TABLE app.orders (id INT AUTO_INCREMENT PRIMARY KEY, account INT, amount BIGINT, note TEXT) ENGINE=InnoDB; \
         CREATE TABLE app.audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(200)) ENGINE=InnoDB",
    )
    .await?;
    Ok(())
}

/// Runs transaction number `i`: a mix that inserts, updates and deletes across the tables.
///
/// # Errors
/// When a statement fails.
pub async fn transaction(c: &mut Conn, i: u64) -> anyhow::Result<()> {
    let acct = (i % 50) as i64;
    let sql = match i % 5 {
        0 => format!(
            "INSERT INTO app.accounts VALUES ({acct}, 'owner-{acct}', {i}) ON DUPLICATE KEY UPDATE balance = balance + 1; \
             INSERT INTO app.orders (account, amount, note) VALUES ({acct}, {i}, REPEAT('x', {}))",
            i % 300
        ),
        1 => format!("UPDATE app.accounts SET balance = balance - {i} WHERE id = {acct}"),
        2 => format!(
            "INSERT INTO app.orders (account, amount, note) VALUES ({acct}, {i}, 'a'), ({acct}, {}, 'b'), ({acct}, {}, 'c')",
            i + 1,
            i + 2
        ),
        3 => format!("DELETE FROM app.orders WHERE account = {acct} AND amount % 3 = 0 LIMIT 2"),
        _ => format!("INSERT INTO app.audit (what) VALUES ('tx {i}'); UPDATE app.orders SET note = 'upd {i}' WHERE account = {acct} LIMIT 1"),
    };
    c.query_drop(format!("BEGIN; {sql}; COMMIT")).await?;
    Ok(())
}

/// Runs transactions `from..to`.
///
/// # Errors
/// When a statement fails.
pub async fn run(c: &mut Conn, from: u64, to: u64) -> anyhow::Result<()> {
    for i in from..to {
        transaction(c, i).await?;
    }
    Ok(())
}

/// Runs transactions from `from` until `stop` is set; returns how many ran.
///
/// # Errors
/// When a statement fails.
pub async fn run_until(mut c: Conn, from: u64, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    let mut i = from;
    while !stop.load(Ordering::Relaxed) {
        transaction(&mut c, i).await?;
        i += 1;
    }
    c.disconnect().await?;
    Ok(i - from)
}

/// `CHECKSUM TABLE` of every workload table, for comparing two servers.
///
/// # Errors
/// When a query fails.
pub async fn checksums(c: &mut Conn) -> anyhow::Result<Vec<(String, Option<u64>)>> {
    let mut out = Vec::new();
    for t in TABLES {
        let row: Option<(String, Option<u64>)> =
            c.query_first(format!("CHECKSUM TABLE {t}")).await?;
        if let Some(r) = row {
            out.push(r);
        }
    }
    Ok(out)
}
