//! A logical digest of every key of a Redis server: its type, its value (members sorted
//! where Redis does not order them) and its TTL class (expiring or not), so that two
//! servers loaded by different paths compare equal exactly when they hold the same data,
//! whatever their encodings. A stream's consumer groups count into its value; keys that
//! expire within [`EXPIRING_SOON_MS`] of the comparison are left out of it (they may be
//! gone from one of the two).

use std::collections::BTreeMap;

use logferry_common::format::redis::resp::Value;
use sha2::{Digest, Sha256};

use super::client::Client;
use crate::error::{Result, ShipperError};
use crate::restore::Difference;
use crate::time_arg::now_ms;

/// Keys that expire within this long of the comparison are left out of it.
pub const EXPIRING_SOON_MS: i64 = 60_000;

/// One key's digest: the hex sha256 of its type, value and TTL class, and when it expires
/// (ms since the epoch, as the server's clock read it), if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDigest {
    /// The hex sha256.
    pub sha256: String,
    /// When the key expires.
    pub expires_at_ms: Option<i64>,
}

/// Every key of a server: `(db, key)` to its digest.
pub type KeyDigests = BTreeMap<(u32, Vec<u8>), KeyDigest>;

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
async fn key_digest(client: &mut Client, key: &[u8]) -> Result<Option<KeyDigest>> {
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
    let (ttl, expires_at_ms) = match client.ok::<&[u8]>(&[b"PTTL", key]).await? {
        Value::Int(-2) => return Ok(None),
        Value::Int(ms) if ms >= 0 => ("expiring", Some(now_ms() + ms)),
        _ => ("persistent", None),
    };
    let mut h = Sha256::new();
    h.update(format!("{kind}:{ttl}:"));
    feed(&mut h, &value);
    Ok(Some(KeyDigest {
        sha256: hex::encode(h.finalize()),
        expires_at_ms,
    }))
}

/// Where `restored` differs from `expected` (from `expected_from`), key by key; keys of
/// either side that expire before `now_ms` plus [`EXPIRING_SOON_MS`] are left out of both
/// (one cut for both digests, which were taken at different times).
pub fn compare(
    expected: &KeyDigests,
    restored: &KeyDigests,
    expected_from: &str,
    now_ms: i64,
) -> Vec<Difference> {
    let cut = now_ms + EXPIRING_SOON_MS;
    let soon = |d: Option<&KeyDigest>| d.and_then(|d| d.expires_at_ms).is_some_and(|at| at < cut);
    let name = |(db, key): &(u32, Vec<u8>)| format!("db{db} {}", String::from_utf8_lossy(key));
    let short = |d: Option<&KeyDigest>| {
        d.map_or_else(
            || "missing".to_owned(),
            |d| format!("digest {}", d.sha256.get(..12).unwrap_or_default()),
        )
    };
    let mut out = Vec::new();
    for k in expected
        .keys()
        .chain(restored.keys().filter(|k| !expected.contains_key(*k)))
    {
        let (e, r) = (expected.get(k), restored.get(k));
        if soon(e) || soon(r) {
            continue;
        }
        if e.map(|d| &d.sha256) != r.map(|d| &d.sha256) {
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
        let d = |c: &str, exp: Option<i64>| KeyDigest {
            sha256: c.repeat(64),
            expires_at_ms: exp,
        };
        let expected: KeyDigests = [
            (k("a"), d("1", None)),
            (k("b"), d("2", None)),
            (k("soon"), d("5", Some(1_030_000))),
        ]
        .into();
        let restored: KeyDigests = [
            (k("a"), d("1", None)),
            (k("b"), d("3", None)),
            (k("c"), d("4", Some(9_000_000))),
        ]
        .into();
        let diff = compare(&expected, &restored, "snapshot x", 1_000_000);
        let names: Vec<&str> = diff.iter().map(|d| d.table.as_str()).collect();
        assert_eq!(
            names,
            ["db0 b", "db0 c"],
            "a key expiring within a minute is left out"
        );
        assert_eq!(diff[1].expected, "missing");
        assert!(compare(&expected, &expected, "x", 1_000_000).is_empty());
    }
}
