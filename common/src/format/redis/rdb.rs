//! Reading an RDB file for what a snapshot's manifest records (format version, server
//! version, keys per db) and to prove it arrived whole (the CRC-64 Redis writes at its
//! end). Values are skipped, not decoded: loading an RDB is Redis's own job, and a restore
//! hands the file to Redis unchanged.

use std::collections::BTreeMap;
use std::io::Read;

use crate::{Error, Result};

/// What an RDB says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdbFacts {
    /// Format version (`REDIS0011` → 11).
    pub version: u32,
    /// The `redis-ver` aux field.
    pub redis_version: String,
    /// The `repl-stream-db` aux field: the db selected where the stream continues.
    pub repl_stream_db: Option<u32>,
    /// Keys per db, counted while skipping values.
    pub keys: BTreeMap<u32, u64>,
    /// Bytes read, the checksum included.
    pub bytes: u64,
}

const OP_FUNCTION2: u8 = 245;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;

/// The CRC Redis appends to an RDB (CRC-64/Jones, reflected, as `crc64.c`), sixteen bytes
/// per step: byte at a time it costs a snapshot a second of CPU per GiB.
static CRC: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

struct Reader<'c, R> {
    inner: R,
    digest: crc::Digest<'c, u64, crc::Table<16>>,
    bytes: u64,
}

fn corrupt(why: impl Into<String>) -> Error {
    Error::corrupt_in("RDB", why.into())
}

impl<R: Read> Reader<'_, R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner
            .read_exact(buf)
            .map_err(|e| corrupt(format!("cut off after {} bytes ({e})", self.bytes)))?;
        self.digest.update(buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let take = n.min(buf.len() as u64) as usize;
            self.fill(&mut buf[..take])?;
            n -= take as u64;
        }
        Ok(())
    }

    /// A length, or `Err(special)` for the encoded-string forms.
    fn length_or_special(&mut self) -> Result<std::result::Result<u64, u8>> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Ok(u64::from(first & 0x3f)),
            1 => Ok((u64::from(first & 0x3f) << 8) | u64::from(self.byte()?)),
            2 => match first {
                0x80 => {
                    let mut b = [0u8; 4];
                    self.fill(&mut b)?;
                    Ok(u64::from(u32::from_be_bytes(b)))
                }
                0x81 => {
                    let mut b = [0u8; 8];
                    self.fill(&mut b)?;
                    Ok(u64::from_be_bytes(b))
                }
                other => return Err(corrupt(format!("bad length byte {other:#04x}"))),
            },
            _ => Err(first & 0x3f),
        })
    }

    fn length(&mut self) -> Result<u64> {
        self.length_or_special()?
            .map_err(|s| corrupt(format!("an encoded string ({s}) where a length belongs")))
    }

    /// A string, kept when `keep` (aux fields), else skipped.
    fn string(&mut self, keep: bool) -> Result<Vec<u8>> {
        match self.length_or_special()? {
            Ok(n) if keep => {
                let n = usize::try_from(n).map_err(|_| corrupt("a string too long"))?;
                if n > 1 << 20 {
                    return Err(corrupt("an aux field longer than 1 MiB"));
                }
                let mut v = vec![0u8; n];
                self.fill(&mut v)?;
                Ok(v)
            }
            Ok(n) => self.skip(n).map(|()| Vec::new()),
            Err(0) => Ok(i64::from(self.byte()? as i8).to_string().into_bytes()),
            Err(1) => {
                let mut b = [0u8; 2];
                self.fill(&mut b)?;
                Ok(i16::from_le_bytes(b).to_string().into_bytes())
            }
            Err(2) => {
                let mut b = [0u8; 4];
                self.fill(&mut b)?;
                Ok(i32::from_le_bytes(b).to_string().into_bytes())
            }
            Err(3) => {
                let compressed = self.length()?;
                let _plain = self.length()?;
                self.skip(compressed)?;
                Ok(Vec::new())
            }
            Err(other) => Err(corrupt(format!("unknown string encoding {other}"))),
        }
    }

    fn strings(&mut self, per_item: u64) -> Result<()> {
        let n = self.length()?;
        for _ in 0..n.saturating_mul(per_item) {
            self.string(false)?;
        }
        Ok(())
    }

    fn stream_id(&mut self) -> Result<()> {
        self.length()?;
        self.length()?;
        Ok(())
    }

    fn stream(&mut self, kind: u8) -> Result<()> {
        self.strings(2)?;
        self.length()?;
        self.stream_id()?;
        if kind >= 19 {
            self.stream_id()?;
            self.stream_id()?;
            self.length()?;
        }
        for _ in 0..self.length()? {
            self.string(false)?;
            self.stream_id()?;
            if kind >= 19 {
                self.length()?;
            }
            for _ in 0..self.length()? {
                self.skip(16 + 8)?;
                self.length()?;
            }
            for _ in 0..self.length()? {
                self.string(false)?;
                self.skip(if kind >= 21 { 16 } else { 8 })?;
                for _ in 0..self.length()? {
                    self.skip(16)?;
                }
            }
        }
        Ok(())
    }

    /// A module value: its id, then its opcode stream.
    fn module(&mut self) -> Result<()> {
        self.length()?;
        self.module_aux_body()
    }

    fn value(&mut self, kind: u8) -> Result<()> {
        match kind {
            0 => self.string(false).map(drop),
            1 | 2 | 14 => self.strings(1),
            3 => {
                for _ in 0..self.length()? {
                    self.string(false)?;
                    let n = self.byte()?;
                    if n < 253 {
                        self.skip(u64::from(n))?;
                    }
                }
                Ok(())
            }
            4 => self.strings(2),
            5 => {
                for _ in 0..self.length()? {
                    self.string(false)?;
                    self.skip(8)?;
                }
                Ok(())
            }
            7 => self.module(),
            9..=13 | 16 | 17 | 20 => self.string(false).map(drop),
            18 => {
                for _ in 0..self.length()? {
                    self.length()?;
                    self.string(false)?;
                }
                Ok(())
            }
            15 | 19 | 21 => self.stream(kind),
            other => Err(corrupt(format!(
                "value type {other} is unknown to this logferry; the RDB comes from a newer Redis"
            ))),
        }
    }
}

/// Reads a whole RDB from `input`, checking its checksum (unless the server writes none,
/// `rdbchecksum no`).
///
/// # Errors
/// [`Error::Corrupt`] naming what is wrong: not an RDB, cut off, an unknown type, a
/// checksum that does not match.
pub fn scan(input: impl Read) -> Result<RdbFacts> {
    let mut r = Reader {
        inner: input,
        digest: CRC.digest(),
        bytes: 0,
    };
    let mut magic = [0u8; 9];
    r.fill(&mut magic)?;
    if &magic[..5] != b"REDIS" {
        return Err(corrupt("it does not start with REDIS: not an RDB file"));
    }
    let version = std::str::from_utf8(&magic[5..])
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt("its version is not a number"))?;
    let mut facts = RdbFacts {
        version,
        ..RdbFacts::default()
    };
    let mut db = 0u32;
    loop {
        let op = r.byte()?;
        match op {
            OP_EOF => break,
            OP_AUX => {
                let key = r.string(true)?;
                let value = r.string(true)?;
                match key.as_slice() {
                    b"redis-ver" => facts.redis_version = String::from_utf8_lossy(&value).into(),
                    b"repl-stream-db" => {
                        facts.repl_stream_db = std::str::from_utf8(&value)
                            .ok()
                            .and_then(|v| v.parse().ok());
                    }
                    _ => {}
                }
            }
            OP_SELECTDB => {
                db = u32::try_from(r.length()?).map_err(|_| corrupt("a db number out of range"))?;
            }
            OP_RESIZEDB => {
                r.length()?;
                r.length()?;
            }
            OP_EXPIRETIME_MS => r.skip(8)?,
            OP_EXPIRETIME => r.skip(4)?,
            OP_FREQ => r.skip(1)?,
            OP_IDLE => {
                r.length()?;
            }
            OP_FUNCTION2 => {
                r.string(false)?;
            }
            OP_MODULE_AUX => {
                r.length()?;
                r.length()?;
                r.module_aux_body()?;
            }
            kind => {
                r.string(false)?;
                r.value(kind)?;
                *facts.keys.entry(db).or_insert(0) += 1;
            }
        }
    }
    let computed = r.digest.clone().finalize();
    let mut sum = [0u8; 8];
    r.inner
        .read_exact(&mut sum)
        .map_err(|e| corrupt(format!("its checksum is cut off ({e})")))?;
    r.bytes += 8;
    let stored = u64::from_le_bytes(sum);
    if stored != 0 && stored != computed {
        return Err(corrupt(format!(
            "its checksum {stored:016x} does not match its content ({computed:016x})"
        )));
    }
    facts.bytes = r.bytes;
    Ok(facts)
}

impl<R: Read> Reader<'_, R> {
    /// A module's aux data after its id and `when`: the same opcode stream as a module value.
    fn module_aux_body(&mut self) -> Result<()> {
        loop {
            match self.length()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.length()?;
                }
                3 => self.skip(4)?,
                4 => self.skip(8)?,
                5 => {
                    self.string(false)?;
                }
                other => return Err(corrupt(format!("unknown module opcode {other}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdb(body: &[u8]) -> Vec<u8> {
        let mut v = b"REDIS0011".to_vec();
        v.extend_from_slice(body);
        v.push(OP_EOF);
        let sum = CRC.checksum(&v);
        v.extend_from_slice(&sum.to_le_bytes());
        v
    }

    #[test]
    fn facts_and_checksum_of_a_small_rdb() {
        let body = [
            &[OP_AUX, 9][..],
            b"redis-ver",
            &[6],
            b"7.0.15",
            &[OP_SELECTDB, 2, OP_RESIZEDB, 2, 0],
            &[0, 1, b'k', 1, b'v'],
            &[2, 1, b's', 2, 1, b'a', 1, b'b'],
        ]
        .concat();
        let f = scan(rdb(&body).as_slice()).unwrap();
        assert_eq!(f.version, 11);
        assert_eq!(f.redis_version, "7.0.15");
        assert_eq!(f.keys.get(&2), Some(&2));
        let mut bad = rdb(&body);
        let at = bad.len() - 12;
        bad[at] ^= 1;
        assert!(scan(bad.as_slice()).is_err());
        let whole = rdb(&body);
        let e = scan(&whole[..whole.len() - 4]).unwrap_err().to_string();
        assert!(e.contains("cut off"), "{e}");
        assert!(scan(b"HELLO0011".as_slice()).is_err());
    }
}
