//! Data generation: the text rows and the order rows written into the source server.

use std::fmt::Write as _;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// Sum of the server's binlog file sizes.
pub(crate) async fn binlog_bytes(c: &mut Conn) -> anyhow::Result<u64> {
    let rows: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await?;
    Ok(rows.iter().filter_map(|r| r.get::<u64, _>(1)).sum())
}

/// Text-like rows (words from a small vocabulary), so compression ratios are realistic.
pub(crate) async fn generate(c: &mut Conn, target_mb: u64) -> anyhow::Result<u64> {
    const WORDS: [&str; 24] = [
        "order",
        "customer",
        "shipped",
        "pending",
        "invoice",
        "amount",
        "EUR",
        "USD",
        "warehouse",
        "berlin",
        "paris",
        "priority",
        "express",
        "standard",
        "refund",
        "coupon",
        "tax",
        "item",
        "sku",
        "quantity",
        "address",
        "street",
        "note",
        "gift",
    ];
    c.query_drop("CREATE DATABASE IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, k INT, v VARCHAR(2000), n DOUBLE) ENGINE=InnoDB").await?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i = 0u64;
    loop {
        let mut sql = String::from("INSERT INTO bench.t (k, v, n) VALUES ");
        for r in 0..200 {
            let mut v = String::new();
            for _ in 0..100 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
                v.push(' ');
            }
            let _ = write!(
                sql,
                "{}({}, '{} {}', {})",
                if r > 0 { "," } else { "" },
                x % 1000,
                i,
                v,
                (x % 100_000) as f64 / 7.0
            );
        }
        c.query_drop(&sql).await?;
        if i % 10 == 0 {
            c.query_drop(format!(
                "UPDATE bench.t SET n = n + 1 WHERE k = {} LIMIT 50",
                x % 1000
            ))
            .await?;
            c.query_drop(format!(
                "DELETE FROM bench.t WHERE k = {} LIMIT 20",
                (x >> 8) % 1000
            ))
            .await?;
            let bytes = binlog_bytes(c).await?;
            if bytes >= target_mb * 1024 * 1024 {
                return Ok(bytes);
            }
        }
        i += 1;
    }
}

/// The rows a benchmark's binlog is made of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dataset {
    /// 200-row inserts of random words from a 24-word vocabulary: every match a compressor
    /// finds is a word or two long, the costliest kind of input for zstd and LZ4.
    Text,
    /// An online shop's orders: numbers, short codes, dates and e-mail addresses, and updates
    /// whose full before and after row images differ in two columns.
    Orders,
}

impl Dataset {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dataset::Text => "text rows",
            Dataset::Orders => "order rows",
        }
    }

    /// Writes rows until the server's binlog holds at least `target_mb` MiB.
    pub(crate) async fn generate(self, c: &mut Conn, target_mb: u64) -> anyhow::Result<u64> {
        match self {
            Dataset::Text => generate(c, target_mb).await,
            Dataset::Orders => generate_orders(c, target_mb).await,
        }
    }
}

/// Order rows in transactions of 20,000 inserts (MariaDB's sequence engine makes the rows
/// server-side, so generating a GiB takes about a minute), each followed by an update of
/// every seventh recent order.
pub(crate) async fn generate_orders(c: &mut Conn, target_mb: u64) -> anyhow::Result<u64> {
    const BATCH: u64 = 20_000;
    c.query_drop(
        "CREATE DATABASE IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS bench.orders (\
         id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT NOT NULL, status VARCHAR(16) NOT NULL, \
         amount DECIMAL(12,2) NOT NULL, currency CHAR(3) NOT NULL, created DATETIME(3) NOT NULL, \
         email VARCHAR(80) NOT NULL, sku VARCHAR(24) NOT NULL, qty INT NOT NULL, note VARCHAR(255)) \
         ENGINE=InnoDB",
    )
    .await?;
    let mut i = 0u64;
    loop {
        c.query_drop(format!(
            "INSERT INTO bench.orders (customer, status, amount, currency, created, email, sku, qty, note) \
             SELECT (seq * 7919 + {i}) % 100000, ELT(1 + seq % 5, 'new', 'paid', 'shipped', 'delivered', 'refunded'), \
             ROUND(((seq * 2654435761 + {i}) % 1000000) / 100, 2), ELT(1 + seq % 3, 'EUR', 'USD', 'GBP'), \
             TIMESTAMP('2026-11-01') + INTERVAL ({i} * {BATCH} + seq) * 37 SECOND, \
             CONCAT('user', (seq * 7919) % 100000, '@example.', ELT(1 + seq % 4, 'com', 'org', 'net', 'de')), \
             CONCAT('SKU-', LPAD((seq * 31 + {i}) % 5000, 5, '0')), 1 + seq % 9, \
             IF(seq % 4 = 0, CONCAT('gift wrap, deliver to door ', seq % 17), NULL) \
             FROM bench.seq_1_to_{BATCH}"
        ))
        .await?;
        c.query_drop(format!(
            "UPDATE bench.orders SET status = 'shipped', qty = qty + 1 \
             WHERE id BETWEEN {} AND {} AND id % 7 = {}",
            (i * BATCH).saturating_sub(BATCH / 2),
            (i + 1) * BATCH,
            i % 7
        ))
        .await?;
        let bytes = binlog_bytes(c).await?;
        if bytes >= target_mb * 1024 * 1024 {
            return Ok(bytes);
        }
        i += 1;
    }
}
