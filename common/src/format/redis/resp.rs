//! RESP2, the Redis protocol: finding where a value ends in a buffer, parsing replies,
//! and writing commands. The replication stream and an AOF file are both RESP arrays of
//! bulk strings, so one reader serves the agent's link, the payload walk and the shipper's
//! client.

use crate::{Error, Result};

/// Longest bulk string accepted (Redis's own `proto-max-bulk-len` default).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Most elements accepted in one array (a command's arguments, a reply's entries).
pub const MAX_ELEMENTS: usize = 1 << 24;

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3\r\nabc` (`None` for the null bulk `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` (`None` for the null array `*-1`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(Some(b)) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The text of a bulk or simple string (lossy), for messages and `INFO`.
    pub fn text(&self) -> String {
        match self {
            Value::Error(e) => e.clone(),
            Value::Int(i) => i.to_string(),
            other => other
                .bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }
    }
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let at = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..at], from + at + 2))
}

fn number(text: &[u8], what: &str) -> Result<i64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            Error::corrupt_in(
                "RESP",
                format!("{what} {:?} is not a number", String::from_utf8_lossy(text)),
            )
        })
}

fn length(text: &[u8], what: &str, max: usize) -> Result<Option<usize>> {
    match number(text, what)? {
        -1 => Ok(None),
        n if n < 0 || n as u64 > max as u64 => Err(Error::corrupt_in(
            "RESP",
            format!("{what} {n} is out of range (at most {max})"),
        )),
        n => Ok(Some(n as usize)),
    }
}

/// Where the RESP value starting at `from` ends, or `None` when `buf` does not hold all of
/// it yet. Allocates nothing, so a large command is measured before it is copied.
///
/// # Errors
/// [`Error::Corrupt`] for bytes that are not RESP.
pub fn value_end(buf: &[u8], from: usize) -> Result<Option<usize>> {
    end_at(buf, from, 0)
}

/// Arrays nest at most this deep (a reply to `XRANGE` nests three).
const MAX_DEPTH: usize = 16;

fn too_deep() -> Error {
    Error::corrupt_in("RESP", format!("arrays nest deeper than {MAX_DEPTH}"))
}

fn end_at(buf: &[u8], from: usize, depth: usize) -> Result<Option<usize>> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let Some(&kind) = buf.get(from) else {
        return Ok(None);
    };
    let Some((head, mut at)) = line(buf, from + 1) else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(at)),
        b'$' => match length(head, "bulk length", MAX_BULK)? {
            None => Ok(Some(at)),
            Some(n) => {
                let end = at + n + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(Error::corrupt_in(
                        "RESP",
                        "a bulk string does not end in CRLF",
                    ));
                }
                Ok(Some(end))
            }
        },
        b'*' => {
            let Some(n) = length(head, "array length", MAX_ELEMENTS)? else {
                return Ok(Some(at));
            };
            for _ in 0..n {
                match end_at(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => Err(Error::corrupt_in(
            "RESP",
            format!("unexpected byte {other:#04x} where a value starts"),
        )),
    }
}

/// Parses the value at the start of `buf`: the value and the bytes it took, or `None` when
/// it is incomplete.
///
/// # Errors
/// [`Error::Corrupt`] for bytes that are not RESP.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>> {
    let Some(end) = value_end(buf, 0)? else {
        return Ok(None);
    };
    let (value, used) = parse_at(buf, 0, 0)?;
    debug_assert_eq!(used, end);
    Ok(Some((value, used)))
}

fn parse_at(buf: &[u8], from: usize, depth: usize) -> Result<(Value, usize)> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let truncated = || Error::corrupt_in("RESP", "a value is cut off");
    let kind = *buf.get(from).ok_or_else(truncated)?;
    let (head, at) = line(buf, from + 1).ok_or_else(truncated)?;
    let text = || String::from_utf8_lossy(head).into_owned();
    match kind {
        b'+' => Ok((Value::Simple(text()), at)),
        b'-' => Ok((Value::Error(text()), at)),
        b':' => Ok((Value::Int(number(head, "integer")?), at)),
        b'$' => match length(head, "bulk length", MAX_BULK)? {
            None => Ok((Value::Bulk(None), at)),
            Some(n) => {
                let body = buf.get(at..at + n).ok_or_else(truncated)?;
                Ok((Value::Bulk(Some(body.to_vec())), at + n + 2))
            }
        },
        b'*' => match length(head, "array length", MAX_ELEMENTS)? {
            None => Ok((Value::Array(None), at)),
            Some(n) => {
                let mut items = Vec::with_capacity(n.min(1024));
                let mut at = at;
                for _ in 0..n {
                    let (v, next) = parse_at(buf, at, depth + 1)?;
                    items.push(v);
                    at = next;
                }
                Ok((Value::Array(Some(items)), at))
            }
        },
        other => Err(Error::corrupt_in(
            "RESP",
            format!("unexpected byte {other:#04x} where a value starts"),
        )),
    }
}

/// The arguments of a command (an array of bulk strings), as slices of `cmd`.
///
/// # Errors
/// [`Error::Corrupt`] when `cmd` is not one complete array of bulk strings.
pub fn command_args(cmd: &[u8]) -> Result<Vec<&[u8]>> {
    let bad = |why: &str| Error::corrupt_in("RESP command", why.to_owned());
    if cmd.first() != Some(&b'*') {
        return Err(bad("a command is not an array"));
    }
    let (head, mut at) = line(cmd, 1).ok_or_else(|| bad("cut off"))?;
    let n = length(head, "array length", MAX_ELEMENTS)?.ok_or_else(|| bad("a null array"))?;
    let mut args = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        if cmd.get(at) != Some(&b'$') {
            return Err(bad("an argument is not a bulk string"));
        }
        let (head, body) = line(cmd, at + 1).ok_or_else(|| bad("cut off"))?;
        let len = length(head, "bulk length", MAX_BULK)?.ok_or_else(|| bad("a null argument"))?;
        let arg = cmd.get(body..body + len).ok_or_else(|| bad("cut off"))?;
        if cmd.get(body + len..body + len + 2) != Some(b"\r\n".as_slice()) {
            return Err(bad("an argument does not end in CRLF"));
        }
        args.push(arg);
        at = body + len + 2;
    }
    if at != cmd.len() {
        return Err(bad("bytes follow the command"));
    }
    Ok(args)
}

/// Writes a command as Redis reads it: an array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The value of `name` in an `INFO` reply's text (`name:value` lines), trimmed.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|v| v.strip_prefix(':'))
            .map(str::trim)
    })
}

/// `SELECT db`, as every segment of a Redis stream starts.
pub fn select(db: u32) -> Vec<u8> {
    encode(&[b"SELECT".as_slice(), db.to_string().as_bytes()])
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_fields_are_found_by_their_whole_name() {
        let info = "# Replication\r\nrole:slave\r\nmaster_replid:abc\r\nmaster_replid2:def\r\n";
        assert_eq!(super::info_field(info, "role"), Some("slave"));
        assert_eq!(super::info_field(info, "master_replid"), Some("abc"));
        assert_eq!(super::info_field(info, "master_replid2"), Some("def"));
        assert_eq!(super::info_field(info, "master"), None);
    }

    use super::*;

    #[test]
    fn values_are_measured_before_they_are_complete() {
        let cmd = encode(&["SET", "k", "v"]);
        for cut in 0..cmd.len() {
            assert_eq!(value_end(&cmd[..cut], 0).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(value_end(&cmd, 0).unwrap(), Some(cmd.len()));
        assert_eq!(
            command_args(&cmd).unwrap(),
            vec![b"SET".as_slice(), b"k", b"v"]
        );
        let (v, used) = parse(b"*2\r\n+OK\r\n$-1\r\nrest").unwrap().unwrap();
        assert_eq!(used, 14);
        assert_eq!(
            v,
            Value::Array(Some(vec![Value::Simple("OK".into()), Value::Bulk(None)]))
        );
    }

    #[test]
    fn bad_bytes_are_errors_not_waits() {
        assert!(value_end(b"hello\r\n", 0).is_err());
        assert!(value_end(b"$3\r\nabcXY", 0).is_err());
        assert!(value_end(b"*-5\r\n", 0).is_err());
        assert!(value_end("*1\r\n".repeat(100).as_bytes(), 0).is_err());
        assert!(command_args(b"*1\r\n:1\r\n").is_err());
        assert!(command_args(&[encode(&["PING"]), b"x".to_vec()].concat()).is_err());
    }
}
