//! A logical digest of every key of a Redis server: its type, its value (members sorted
//! where Redis does not order them) and its TTL class (expiring or not), so that two
//! servers loaded by different paths compare equal exactly when they hold the same data,
//! whatever their encodings. A stream's consumer groups count into its value; keys that
//! expire within [`EXPIRING_SOON_MS`] are left out (they may be gone from one of the two).

use std::collections::BTreeMap;

use logferry_common::format::redis::resp::Value;
use sha2::{Digest, Sha256};

use super::client::Client;
use crate::error::{Result, ShipperError};
use crate::restore::Difference;

/// Keys expiring sooner than this are left out of a digest.
pub const EXPIRING_SOON_MS: i64 = 60_000;

/// Every key of a server: `(db, key)` to the hex sha256 of its type, value and TTL class.
pub type KeyDigests = BTreeMap<(u32, Vec<u8>), String>;

/// Feeds a reply into `h` with lengths, so that different replies never hash alike.
fn feed(h: &mut Sha256, v: &Value) {
    match v {
        Value::Array(Some(items)) => {
            h.update(format!("*{}:", items.len()));
            for i in items {
                feed(h, i);
            }
        }
        Value::Int(i) => h.update(format!("i{i}:")),
        other => {
            let b = other.bytes().unwrap_or_default();
            h.update(format!("${}:", b.len()));
            h.update(b);
        }
    }
}

/// The members of a flat reply as pairs (`HGETALL`) or singles (`SMEMBERS`), sorted.
fn sorted(v: Value, pairs: bool) -> Value {
    let Value::Array(Some(items)) = v else {
        return v;
    };
    let mut groups: Vec<Vec<Value>> = if pairs {
        items.chunks(2).map(<[Value]>::to_vec).collect()
    } else {
        items.into_iter().map(|i| vec![i]).collect()
    };
    groups.sort_by(|a, b| a[0].bytes().cmp(&b[0].bytes()));
    Value::Array(Some(groups.into_iter().flatten().collect()))
}

/// The digest of every key in every db of the server.
///
/// # Errors
/// As [`Client::ok`].
pub async fn digest(client: &mut Client) -> Result<KeyDigests> {
    let mut out = KeyDigests::new();
    for (db, _) in client.keyspace().await? {
        client.ok(&["SELECT".to_owned(), db.to_string()]).await?;
        let mut cursor = b"0".to_vec();
        loop {
            let reply = client
                .ok::<&[u8]>(&[b"SCAN", &cursor, b"COUNT", b"1000"])
                .await?;
            let Value::Array(Some(mut parts)) = reply else {
                return Err(ShipperError::Restore(format!(
                    "the target {} answered SCAN with something else than a cursor and keys",
                    client.addr()
                )));
            };
            let keys = parts.pop();
            cursor = parts
                .pop()
                .and_then(|c| c.bytes().map(<[u8]>::to_vec))
                .unwrap_or_default();
            if let Some(Value::Array(Some(keys))) = keys {
                for key in keys {
                    let Some(key) = key.bytes().map(<[u8]>::to_vec) else {
                        continue;
                    };
                    if let Some(d) = key_digest(client, &key).await? {
                        out.insert((db, key), d);
                    }
                }
            }
            if cursor == b"0" || cursor.is_empty() {
                break;
            }
        }
    }
    Ok(out)
}

/// One key's digest; `None` when it vanished (expired) while the keys were read.
async fn key_digest(client: &mut Client, key: &[u8]) -> Result<Option<String>> {
    let kind = client.ok::<&[u8]>(&[b"TYPE", key]).await?.text();
    let value = match kind.as_str() {
        "none" => return Ok(None),
        "string" => client.ok::<&[u8]>(&[b"GET", key]).await?,
        "list" => client.ok::<&[u8]>(&[b"LRANGE", key, b"0", b"-1"]).await?,
        "set" => sorted(client.ok::<&[u8]>(&[b"SMEMBERS", key]).await?, false),
        "zset" => {
            client
                .ok::<&[u8]>(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])
                .await?
        }
        "hash" => sorted(client.ok::<&[u8]>(&[b"HGETALL", key]).await?, true),
        "stream" => {
            let entries = client.ok::<&[u8]>(&[b"XRANGE", key, b"-", b"+"]).await?;
            let groups = client.ok::<&[u8]>(&[b"XINFO", b"GROUPS", key]).await?;
            Value::Array(Some(vec![entries, groups]))
        }
        _ => client.ok::<&[u8]>(&[b"DUMP", key]).await?,
    };
    let ttl = match client.ok::<&[u8]>(&[b"PTTL", key]).await? {
        Value::Int(-2) => return Ok(None),
        Value::Int(-1) => "persistent",
        // A key that may expire between the two digests would differ by the clock alone.
        Value::Int(ms) if ms < EXPIRING_SOON_MS => return Ok(None),
        _ => "expiring",
    };
    let mut h = Sha256::new();
    h.update(format!("{kind}:{ttl}:"));
    feed(&mut h, &value);
    Ok(Some(hex::encode(h.finalize())))
}

/// Where `restored` differs from `expected` (from `expected_from`), key by key.
pub fn compare(
    expected: &KeyDigests,
    restored: &KeyDigests,
    expected_from: &str,
) -> Vec<Difference> {
    let name = |(db, key): &(u32, Vec<u8>)| format!("db{db} {}", String::from_utf8_lossy(key));
    let short = |d: Option<&String>| {
        d.map_or_else(|| "missing".to_owned(), |d| format!("digest {}", &d[..12]))
    };
    let mut out = Vec::new();
    for k in expected
        .keys()
        .chain(restored.keys().filter(|k| !expected.contains_key(*k)))
    {
        let (e, r) = (expected.get(k), restored.get(k));
        if e != r {
            out.push(Difference {
                table: name(k),
                expected_from: expected_from.to_owned(),
                expected: short(e),
                found: short(r),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn hash_and_set_members_compare_in_any_order() {
        let a = Value::Array(Some(vec![bulk("f1"), bulk("1"), bulk("f2"), bulk("2")]));
        let b = Value::Array(Some(vec![bulk("f2"), bulk("2"), bulk("f1"), bulk("1")]));
        let (mut ha, mut hb) = (Sha256::new(), Sha256::new());
        feed(&mut ha, &sorted(a, true));
        feed(&mut hb, &sorted(b, true));
        assert_eq!(ha.finalize(), hb.finalize());
        // Length prefixes: ["ab", "c"] is not ["a", "bc"].
        let (mut ha, mut hb) = (Sha256::new(), Sha256::new());
        feed(&mut ha, &Value::Array(Some(vec![bulk("ab"), bulk("c")])));
        feed(&mut hb, &Value::Array(Some(vec![bulk("a"), bulk("bc")])));
        assert_ne!(ha.finalize(), hb.finalize());
    }

    #[test]
    fn a_missing_an_extra_and_a_changed_key_are_each_a_difference() {
        let k = |s: &str| (0u32, s.as_bytes().to_vec());
        let expected: KeyDigests = [(k("a"), "1".repeat(64)), (k("b"), "2".repeat(64))].into();
        let restored: KeyDigests = [
            (k("a"), "1".repeat(64)),
            (k("b"), "3".repeat(64)),
            (k("c"), "4".repeat(64)),
        ]
        .into();
        let d = compare(&expected, &restored, "snapshot x");
        let names: Vec<&str> = d.iter().map(|d| d.table.as_str()).collect();
        assert_eq!(names, ["db0 b", "db0 c"]);
        assert_eq!(d[1].expected, "missing");
        assert!(compare(&expected, &expected, "x").is_empty());
    }
}
