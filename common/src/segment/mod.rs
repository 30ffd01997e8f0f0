//! The sealed segment: the unit the agent spools, ships and the store keeps.
//!
//! # Layout (all integers little-endian)
//! ```text
//! magic        8  b"LFSEG\0\0\x01"
//! version      2  format version, currently 3 (1 and 2 are read too)
//! header_len   4  length of the header block
//! header       header_len bytes:
//!     stream id          str16
//!     source kind        u8
//!     start position     str16   (where the first event starts)
//!     end position       str16   (right after the last event)
//!     open transaction   str16   (version 2 only: empty when the segment ends at a
//!                                 transaction boundary, else where the transaction still
//!                                 open at its end began)
//!     first event time   i64     (ms since the Unix epoch, source commit time)
//!     last event time    i64
//!     event count        u64
//!     codec              u8      (0 = none, 1 = zstd, 2 = lz4 frames)
//!     key id             str16   (empty = in clear; else MASTER/EPOCH, see crypto)
//!     nonce              bytes8  (u8 length + bytes: the envelope, 28 bytes, or none)
//!     payload length     u64     (plaintext, uncompressed)
//!     payload sha256     32      (of the plaintext; zeros when encrypted)
//!     stored length      u64     (bytes of the stored payload that follows the header)
//!     origin             str16   (version 3: the server the events came from; may be empty)
//!     leg start          str16   (version 3: empty, or on a new leg's first segment where
//!                                 the new server's first event starts)
//!     fork point         str16   (version 3: empty, or where on the previous leg a new
//!                                 leg's history continues when that is before `start`)
//!     last transaction   u8 flag (version 3: 0 none; 1 then id str16, preceding state
//!                                 str16, digest 32)
//! payload      stored length bytes (compressed with the codec, then, when a key id is set,
//!              AES-256-GCM encrypted with its 16-byte tag appended; the associated data
//!              is every byte before the payload, so the header is authenticated too)
//! trailer      32  sha256 of every byte above
//! ```
//! The trailer covers ciphertext: the shipper checks a segment whole without any key.
//! `str16` is a u16 length followed by UTF-8. Decoding checks the total length exactly, the
//! trailer before anything else is trusted, every length against [`DecodeLimits`], and the
//! payload's sha256 after decompression. Bad bytes give [`Error::Corrupt`], never a panic.
//!
//! Version 1 segments (written before segments could end inside a transaction) have no
//! open-transaction field and always end at a boundary; they read as version 2 segments
//! with `open_trx = None`. Version 1 and 2 segments have no lineage (no origin, no legs).

//!
//! - `codec`: how a payload is stored ([`Codec`], [`Compression`]) and the [`Sealer`].
//! - `header`: the header's fields ([`SegmentMeta`], [`SegmentHeader`]) and their bytes.
//! - `limits`: the size limits every reader applies ([`DecodeLimits`]).

mod codec;
mod header;
mod limits;

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use self::codec::{Codec, Compression, Sealer, DEFAULT_ZSTD_LEVEL, SPLIT_AT};
use self::header::{decode_header, encode_header};
pub use self::header::{Lineage, SegmentHeader, SegmentMeta, TrxMark};
pub use self::limits::{
    max_payload_for, segment_bytes_for, DecodeLimits, DEFAULT_MAX_SEGMENT_BYTES,
    MAX_STORED_SEGMENT_BYTES,
};
use crate::crypto::seal::Envelope;
use crate::crypto::{EpochKey, TAG_LEN};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"LFSEG\0\0\x01";
/// The format version written. Version 2 added the open-transaction field, version 3 the
/// lineage (origin server, leg start, last transaction).
const VERSION: u16 = 3;
/// The oldest format version read.
const OLDEST_VERSION: u16 = 1;
const TRAILER_LEN: usize = 32;
const PREFIX_LEN: usize = 8 + 2 + 4;
const MAX_HEADER_LEN: usize = 64 * 1024;

/// A validated, encoded segment: its header and its bytes. The bytes are shared, not
/// owned: a segment decoded from an upload or a store read keeps the received buffer
/// instead of a copy, and handing it on to the network or the store clones a reference.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The decoded header.
    pub header: SegmentHeader,
    bytes: Bytes,
    payload_offset: usize,
}

impl Segment {
    /// Seals `payload` into an encoded segment (compressed with `compression`, hashed).
    ///
    /// # Errors
    /// [`Error::Compress`] if compression fails; [`Error::Invalid`] if a position does not
    /// fit.
    pub fn seal(meta: SegmentMeta, payload: &[u8], compression: Compression) -> Result<Self> {
        Sealer::new(compression)?.seal(meta, payload)
    }

    fn assemble(
        meta: SegmentMeta,
        codec: Codec,
        payload_len: usize,
        payload_sha256: impl FnOnce() -> [u8; 32],
        stored_parts: &[&[u8]],
        key: Option<&Arc<EpochKey>>,
    ) -> Result<Self> {
        let compressed_len: usize = stored_parts.iter().map(|p| p.len()).sum();
        let (key_id, envelope, payload_sha256, stored_len) = match key {
            None => (String::new(), None, payload_sha256(), compressed_len),
            Some(k) => (
                k.key_ref().to_string(),
                Some(Envelope::fresh()?),
                [0u8; 32],
                compressed_len + TAG_LEN,
            ),
        };
        let header = SegmentHeader {
            meta,
            codec,
            key_id,
            nonce: envelope.map(|e| e.as_bytes().to_vec()).unwrap_or_default(),
            payload_len: payload_len as u64,
            payload_sha256,
            stored_len: stored_len as u64,
        };
        let mut head = Vec::with_capacity(256);
        encode_header(&header, &mut head)?;
        let mut bytes = Vec::with_capacity(PREFIX_LEN + head.len() + stored_len + TRAILER_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&head);
        let payload_offset = bytes.len();
        for part in stored_parts {
            bytes.extend_from_slice(part);
        }
        if let (Some(k), Some(envelope)) = (key, envelope) {
            let (aad, payload) = bytes.split_at_mut(payload_offset);
            let tag = k.seal_in_place(&envelope, aad, payload)?;
            bytes.extend_from_slice(&tag);
        }
        let trailer: [u8; 32] = Sha256::digest(&bytes).into();
        bytes.extend_from_slice(&trailer);
        Ok(Segment {
            header,
            bytes: Bytes::from(bytes),
            payload_offset,
        })
    }

    /// Validates encoded bytes: exact length, trailer checksum, header fields and limits.
    /// The payload itself is checked by [`Segment::payload`]. The bytes are kept as they
    /// are (a `Vec` moves in, a received `Bytes` is shared), never copied.
    ///
    /// # Errors
    /// [`Error::Corrupt`] describing the first problem found.
    pub fn decode(bytes: impl Into<Bytes>, limits: &DecodeLimits) -> Result<Self> {
        let bytes: Bytes = bytes.into();
        if bytes.len() as u64 > limits.max_segment_bytes {
            return Err(Error::corrupt(format!(
                "segment is {} bytes, larger than the limit of {}",
                bytes.len(),
                limits.max_segment_bytes
            )));
        }
        let (header, payload_offset) = decode_prefix_and_header(&bytes)?;
        let expected = payload_offset as u64 + header.stored_len + TRAILER_LEN as u64;
        if bytes.len() as u64 != expected {
            let how = if (bytes.len() as u64) < expected {
                "truncated"
            } else {
                "has trailing bytes"
            };
            return Err(Error::corrupt(format!(
                "segment {how}: header says {expected} bytes, got {}",
                bytes.len()
            )));
        }
        let body_len = bytes.len() - TRAILER_LEN;
        let actual: [u8; 32] = Sha256::digest(&bytes[..body_len]).into();
        if actual[..] != bytes[body_len..] {
            return Err(Error::corrupt(format!(
                "trailer sha256 mismatch: stored {}, computed {}",
                hex::encode(&bytes[body_len..]),
                hex::encode(actual)
            )));
        }
        if header.key_ref().is_some() && header.stored_len < TAG_LEN as u64 {
            return Err(Error::corrupt("an encrypted payload shorter than its tag"));
        }
        if header.payload_len > limits.max_payload_bytes {
            return Err(Error::corrupt(format!(
                "payload of {} bytes exceeds the limit of {}",
                header.payload_len, limits.max_payload_bytes
            )));
        }
        Ok(Segment {
            header,
            bytes,
            payload_offset,
        })
    }

    /// Decodes only the header from the first bytes of a segment (e.g. a ranged read).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the prefix is malformed or too short to hold the header.
    pub fn peek_header(prefix: &[u8]) -> Result<SegmentHeader> {
        decode_prefix_and_header(prefix).map(|(h, _)| h)
    }

    /// Decompresses and checks a payload stored in clear against the header's length and
    /// sha256.
    ///
    /// # Errors
    /// [`Error::Key`] if the payload is encrypted (open it with [`Segment::open`]);
    /// [`Error::Corrupt`] if decompression fails or length/checksum differ.
    pub fn payload(&self) -> Result<Vec<u8>> {
        if let Some(r) = self.header.key_ref() {
            return Err(Error::Key {
                key_id: r.to_string(),
                detail: format!("the payload is encrypted under key {r}; it needs that key"),
            });
        }
        let plain = self.decompress(self.stored())?;
        let sum: [u8; 32] = Sha256::digest(&plain).into();
        if sum != self.header.payload_sha256 {
            return Err(Error::corrupt("payload sha256 does not match the header"));
        }
        Ok(plain)
    }

    /// Decrypts (checking the tag over payload and header) and decompresses an encrypted
    /// payload with its epoch key.
    ///
    /// # Errors
    /// [`Error::Key`] if the payload is in clear or `key` is another stream's or epoch's;
    /// [`Error::Corrupt`] if the tag does not match (altered, or not sealed by a key
    /// holder) or decompression fails.
    pub fn open(&self, key: &EpochKey) -> Result<Vec<u8>> {
        let Some(r) = self.header.key_ref() else {
            return Err(Error::Key {
                key_id: key.key_ref().to_string(),
                detail: "the payload is stored in clear, not encrypted".into(),
            });
        };
        if r.epoch != key.epoch() || key.stream() != &self.header.meta.stream {
            return Err(Error::Key {
                key_id: r.to_string(),
                detail: format!(
                    "the payload is sealed under key {r} of stream {}, not {} of stream {}",
                    self.header.meta.stream,
                    key.key_ref(),
                    key.stream()
                ),
            });
        }
        let envelope = Envelope::from_bytes(&self.header.nonce, "segment")?;
        let mut sealed = self.stored().to_vec();
        let compressed = key.open_in_place(
            &envelope,
            &self.bytes[..self.payload_offset],
            &mut sealed,
            "segment",
        )?;
        self.decompress(compressed)
    }

    fn stored(&self) -> &[u8] {
        &self.bytes[self.payload_offset..self.bytes.len() - TRAILER_LEN]
    }

    fn decompress(&self, stored: &[u8]) -> Result<Vec<u8>> {
        let plain = match self.header.codec {
            Codec::None => stored.to_vec(),
            Codec::Zstd => zstd::bulk::decompress(stored, self.header.payload_len as usize)
                .map_err(|e| Error::corrupt(format!("zstd payload does not decompress: {e}")))?,
            Codec::Lz4 => crate::lz4_frame::decode(stored, self.header.payload_len)?,
        };
        if plain.len() as u64 != self.header.payload_len {
            return Err(Error::corrupt(format!(
                "payload is {} bytes, header says {}",
                plain.len(),
                self.header.payload_len
            )));
        }
        Ok(plain)
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the segment, returning its encoded bytes (shared, not copied).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The trailer: sha256 of the encoded segment, which identifies it.
    pub fn sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.bytes[self.bytes.len() - TRAILER_LEN..]);
        out
    }
}

fn decode_prefix_and_header(bytes: &[u8]) -> Result<(SegmentHeader, usize)> {
    if bytes.len() < PREFIX_LEN {
        return Err(Error::corrupt(format!(
            "only {} bytes, too short for a segment",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(Error::corrupt("bad magic: not a logferry segment"));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(Error::corrupt(format!(
            "format version {version} is not supported (this build reads {OLDEST_VERSION} to {VERSION})"
        )));
    }
    let header_len = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(Error::corrupt(format!(
            "header length {header_len} exceeds {MAX_HEADER_LEN}"
        )));
    }
    let end = PREFIX_LEN + header_len;
    let block = bytes
        .get(PREFIX_LEN..end)
        .ok_or_else(|| Error::corrupt("truncated inside the header"))?;
    let header = decode_header(block, version)?;
    Ok((header, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BinlogPos, Position, SourceKind, StreamId};

    fn sample() -> Segment {
        let meta = SegmentMeta {
            stream: StreamId::new("db1").unwrap(),
            source: SourceKind::Mysql,
            start: Position::Mysql(BinlogPos::new("mysql-bin.000001", 4).unwrap()),
            end: Position::Mysql(BinlogPos::parse("mysql-bin.000001:900@0-1-3").unwrap()),
            open_trx: None,
            first_event_ms: 1_700_000_000_000,
            last_event_ms: 1_700_000_001_000,
            event_count: 7,
            lineage: crate::segment::Lineage::default(),
        };
        let payload: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        Segment::seal(meta, &payload, Compression::default()).unwrap()
    }

    #[test]
    fn an_encrypted_segment_opens_with_its_key_only_and_hides_its_payload() {
        let stream = StreamId::new("db1").unwrap();
        let key = Arc::new(EpochKey::generate(&stream, "main", 1).unwrap());
        let payload = b"INSERT marker-7f3a INTO t".repeat(100_000);
        for compression in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
            let mut sealer = Sealer::new(compression)
                .unwrap()
                .encrypting(Some(key.clone()));
            for payload in [&payload[..25], &payload[..]] {
                let seg = sealer.seal(sample().header.meta, payload).unwrap();
                assert!(!seg.bytes().windows(11).any(|w| w == b"marker-7f3a"));
                let back = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap();
                assert_eq!(back.header.key_ref(), Some(key.key_ref()));
                assert_eq!(back.header.payload_sha256, [0u8; 32]);
                assert_eq!(back.open(&key).unwrap(), payload, "{compression:?}");
                let err = back.payload().unwrap_err().to_string();
                assert!(err.contains("encrypted under key main/"), "{err}");
            }
        }
        let seg = Sealer::new(Compression::default())
            .unwrap()
            .encrypting(Some(key.clone()))
            .seal(sample().header.meta, &payload)
            .unwrap();
        let other = EpochKey::generate(&stream, "main", 1).unwrap();
        let err = seg.open(&other).unwrap_err().to_string();
        assert!(err.contains("not main/"), "another epoch's key: {err}");
        // The same epoch with other key bytes (a forged capsule): the tag refuses it.
        let impostor = EpochKey::from_parts(
            stream.clone(),
            key.epoch().to_owned(),
            "main".into(),
            [7u8; 32],
        );
        let err = seg.open(&impostor).unwrap_err().to_string();
        assert!(err.contains("fails its authentication"), "{err}");
        // A flipped ciphertext byte, with the trailer made to match again (as someone
        // writing into the bucket would): the tag still catches it.
        let mut bytes = seg.bytes().to_vec();
        let at = seg.payload_offset + 10;
        bytes[at] ^= 0x40;
        let body = bytes.len() - TRAILER_LEN;
        let trailer: [u8; 32] = Sha256::digest(&bytes[..body]).into();
        bytes[body..].copy_from_slice(&trailer);
        let forged = Segment::decode(bytes, &DecodeLimits::default()).unwrap();
        let err = forged.open(&key).unwrap_err().to_string();
        assert!(err.contains("fails its authentication"), "{err}");
    }

    #[test]
    fn a_long_payload_sealed_in_two_frames_reads_back_whole() {
        let payload: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 977).to_le_bytes())
            .collect();
        assert!(payload.len() >= SPLIT_AT);
        let mut sealer = Sealer::new(Compression::default()).unwrap();
        for _ in 0..2 {
            let seg = sealer.seal(sample().header.meta, &payload).unwrap();
            let back = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap();
            assert_eq!(back.payload().unwrap(), payload);
            assert_eq!(
                zstd::stream::decode_all(&seg.bytes()[seg.payload_offset..seg.bytes().len() - 32])
                    .unwrap(),
                payload,
                "a stock zstd stream decoder reads the two frames as one"
            );
        }
    }

    #[test]
    fn every_codec_round_trips_short_and_long_payloads() {
        let long: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 977).to_le_bytes())
            .collect();
        for compression in [Compression::None, Compression::Zstd(-3), Compression::Lz4] {
            let mut sealer = Sealer::new(compression).unwrap();
            for payload in [&long[..100], &long[..]] {
                let seg = sealer.seal(sample().header.meta, payload).unwrap();
                assert_eq!(seg.header.codec, compression.codec());
                let stored = seg.header.stored_len as usize;
                match compression {
                    Compression::None => assert_eq!(stored, payload.len()),
                    _ if payload.len() > 100 => assert!(stored < payload.len() / 4),
                    _ => {}
                }
                let back = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap();
                assert_eq!(back.header, seg.header);
                assert_eq!(back.payload().unwrap(), payload, "{compression:?}");
            }
        }
    }

    #[test]
    fn an_lz4_payload_that_disagrees_with_its_header_is_corrupt() {
        let payload = vec![7u8; 50_000];
        let seg = Segment::seal(sample().header.meta, &payload, Compression::Lz4).unwrap();
        let mut header = seg.header.clone();
        header.payload_len -= 1;
        let stored = &seg.bytes()[seg.payload_offset..seg.bytes().len() - TRAILER_LEN];
        let mut head = Vec::new();
        encode_header(&header, &mut head).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&head);
        bytes.extend_from_slice(stored);
        let trailer: [u8; 32] = Sha256::digest(&bytes).into();
        bytes.extend_from_slice(&trailer);
        let forged = Segment::decode(bytes, &DecodeLimits::default()).unwrap();
        let err = forged.payload().unwrap_err();
        assert!(err.to_string().contains("lz4 payload is"), "{err}");
    }

    #[test]
    fn an_open_transaction_round_trips_and_must_not_start_after_the_end() {
        let mut meta = sample().header.meta;
        meta.open_trx = Some(Position::Mysql(
            BinlogPos::parse("mysql-bin.000001:400@0-1-2").unwrap(),
        ));
        let seg = Segment::seal(meta.clone(), b"x", Compression::None).unwrap();
        let back = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap();
        assert_eq!(back.header.meta, meta);
        assert!(!back.header.meta.ends_at_boundary());
        meta.open_trx = Some(Position::Mysql(
            BinlogPos::new("mysql-bin.000001", 901).unwrap(),
        ));
        let seg = Segment::seal(meta, b"x", Compression::None).unwrap();
        let err = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("open transaction"), "{err}");
    }

    #[test]
    fn a_lineage_round_trips_and_its_leg_start_must_lie_inside_the_segment() {
        let mut meta = sample().header.meta;
        let end = BinlogPos::parse("leg1/mysql-bin.000002:900@0-1-3").unwrap();
        meta.start = Position::Mysql(BinlogPos::parse("mysql-bin.000001:900@0-1-4").unwrap());
        meta.end = Position::Mysql(end.clone());
        meta.lineage = Lineage {
            origin: "mariadb server_id=2 host=db2:3306".into(),
            leg_start: Some(Position::Mysql(end.at(400))),
            forks_at: Some(Position::Mysql(
                BinlogPos::parse("mysql-bin.000001:700@0-1-2").unwrap(),
            )),
            last_trx: Some(TrxMark {
                id: "0-1-3".into(),
                before: "0-1-2".into(),
                digest: [9; 32],
            }),
        };
        let seg = Segment::seal(meta.clone(), b"x", Compression::None).unwrap();
        let back = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap();
        assert_eq!(back.header.meta, meta);
        meta.lineage.leg_start = Some(Position::Mysql(end.at(901)));
        let seg = Segment::seal(meta, b"x", Compression::None).unwrap();
        let err = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("leg start"), "{err}");
    }

    #[test]
    fn one_rule_says_which_server_may_follow_which() {
        let on = |origin: &str| {
            let mut m = sample().header.meta;
            m.lineage.origin = origin.into();
            m
        };
        let a = on("server_id=1 host=a:3306");
        assert_eq!(on("server_id=1 host=a:3306").may_follow(&a), None);
        assert_eq!(
            on("").may_follow(&a),
            None,
            "older segments follow anything"
        );
        let b = on("server_id=2 host=b:3306");
        assert!(b.may_follow(&a).unwrap().contains("two databases"));
        let leg =
            |n: u32| Position::Mysql(BinlogPos::new("mysql-bin.000001", 9).unwrap().on_leg(n));
        let mut b_leg = b.clone();
        b_leg.lineage.leg_start = Some(leg(1));
        assert_eq!(b_leg.may_follow(&a), None, "a failover");
        b_leg.lineage.leg_start = Some(leg(2));
        assert!(b_leg
            .may_follow(&a)
            .unwrap()
            .contains("leg 2 after a segment on leg 0"));
        let mut a_leg = a.clone();
        a_leg.lineage.leg_start = Some(leg(1));
        assert!(a_leg
            .may_follow(&a)
            .unwrap()
            .contains("new leg on the server"));
    }

    /// A version 1 segment as builds before the open-transaction field wrote it.
    fn version_1(seg: &Segment) -> Vec<u8> {
        let mut head = Vec::new();
        encode_header(&seg.header, &mut head).unwrap();
        // The empty open-transaction str16 (two zero bytes) follows the end position.
        let m = &seg.header.meta;
        let at = 2
            + m.stream.as_str().len()
            + 1
            + 2
            + m.start.to_string().len()
            + 2
            + m.end.to_string().len();
        assert_eq!(&head[at..at + 2], &[0, 0]);
        head.drain(at..at + 2);
        // An empty lineage (empty origin, leg start and fork point, no last transaction)
        // ends it.
        assert_eq!(seg.header.meta.lineage, Lineage::default());
        head.truncate(head.len() - 7);
        let stored = &seg.bytes()[seg.payload_offset..seg.bytes().len() - TRAILER_LEN];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&head);
        bytes.extend_from_slice(stored);
        let trailer: [u8; 32] = Sha256::digest(&bytes).into();
        bytes.extend_from_slice(&trailer);
        bytes
    }

    #[test]
    fn a_version_1_segment_reads_as_ending_at_a_boundary() {
        let seg = sample();
        let old = Segment::decode(version_1(&seg), &DecodeLimits::default()).unwrap();
        assert_eq!(old.header, seg.header);
        assert!(old.header.meta.ends_at_boundary());
        assert_eq!(old.payload().unwrap(), seg.payload().unwrap());
    }

    #[test]
    fn the_payload_limit_leaves_room_for_the_worst_case_of_every_codec() {
        let limit = 4 * 1024 * 1024;
        let mut payload = vec![0u8; max_payload_for(limit) as usize];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut payload {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for compression in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
            let seg = Segment::seal(sample().header.meta, &payload, compression).unwrap();
            assert!(
                seg.bytes().len() as u64 <= limit,
                "{compression:?}: {}",
                seg.bytes().len()
            );
        }
    }

    #[test]
    fn the_inverse_of_the_payload_limit_holds_the_payload() {
        for p in [1u64, 8 << 20, 300 << 20, 1 << 30] {
            let limit = segment_bytes_for(p);
            assert!(max_payload_for(limit) >= p, "{p}");
            assert!(
                max_payload_for(limit - 4096) < p + 4096,
                "{p}: not far above"
            );
        }
        // The largest stored segment holds its whole payload under the stored limits.
        let l = DecodeLimits::for_segments(MAX_STORED_SEGMENT_BYTES);
        assert!(l.max_payload_bytes >= max_payload_for(MAX_STORED_SEGMENT_BYTES));
        assert!(DecodeLimits::stored().max_payload_bytes >= l.max_payload_bytes);
    }

    #[test]
    fn round_trip() {
        let seg = sample();
        let back = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap();
        assert_eq!(back.header, seg.header);
        assert_eq!(back.payload().unwrap().len(), 20_000);
        assert_eq!(
            Segment::peek_header(&seg.bytes()[..200]).unwrap(),
            seg.header
        );
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = sample().bytes().to_vec();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(
                Segment::decode(b, &DecodeLimits::default()).is_err(),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        let bytes = sample().bytes().to_vec();
        for n in 0..bytes.len() {
            let err = Segment::decode(bytes[..n].to_vec(), &DecodeLimits::default());
            assert!(err.is_err(), "truncation to {n} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = Segment::decode(longer, &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn oversized_segment_is_rejected_before_parsing() {
        let bytes = sample().into_bytes();
        let limits = DecodeLimits {
            max_segment_bytes: 100,
            ..DecodeLimits::default()
        };
        let err = Segment::decode(bytes, &limits).unwrap_err();
        assert!(err.to_string().contains("larger than the limit"), "{err}");
    }

    #[test]
    fn oversized_payload_claim_is_rejected() {
        let bytes = sample().into_bytes();
        let limits = DecodeLimits {
            max_payload_bytes: 1000,
            ..DecodeLimits::default()
        };
        let err = Segment::decode(bytes, &limits).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    #[test]
    fn garbage_is_rejected_without_panic() {
        for g in [
            &b""[..],
            b"hello",
            &[0xffu8; 64],
            b"LFSEG\0\0\x01\x01\0\xff\xff\xff\xff",
        ] {
            assert!(Segment::decode(g.to_vec(), &DecodeLimits::default()).is_err());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes: an error or a segment, never a panic or an allocation the bytes do
        /// not justify.
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            if let Ok(seg) = Segment::decode(bytes.clone(), &DecodeLimits::default()) {
                let _ = seg.payload();
            }
            let _ = Segment::peek_header(&bytes);
        }

        /// An encrypted segment with one byte changed and its trailer made to match again
        /// (what write access to the bucket allows): it never opens to a payload, whether
        /// the byte is in the header (associated data), the envelope or the ciphertext.
        #[test]
        fn a_resealed_encrypted_segment_never_opens(at in 0usize..100_000, xor in 1u8..=255) {
            let stream = StreamId::new("db1").unwrap();
            let key = Arc::new(EpochKey::generate(&stream, "main", 1).unwrap());
            let seg = Sealer::new(Compression::default()).unwrap().encrypting(Some(key.clone()))
                .seal(sample().header.meta, b"INSERT INTO t VALUES (1)").unwrap();
            let mut bytes = seg.bytes().to_vec();
            let body = bytes.len() - TRAILER_LEN;
            let i = 8 + at % (body - 8);
            bytes[i] ^= xor;
            let trailer: [u8; 32] = Sha256::digest(&bytes[..body]).into();
            bytes[body..].copy_from_slice(&trailer);
            if let Ok(forged) = Segment::decode(bytes, &DecodeLimits::default()) {
                proptest::prop_assert!(forged.open(&key).is_err(), "byte {} changed, and it opened", i);
            }
        }

        /// A valid segment with one byte changed, or cut short, or grown: refused, since the
        /// trailer covers every byte.
        #[test]
        fn a_mutated_segment_is_refused(at in 0usize..100_000, xor in 1u8..=255, cut in 0usize..100_000, extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64)) {
            let good = sample().bytes().to_vec();
            let mut flipped = good.clone();
            let i = at % flipped.len();
            flipped[i] ^= xor;
            proptest::prop_assert!(Segment::decode(flipped, &DecodeLimits::default()).is_err(), "flipped byte {}", i);
            let short = good[..cut % good.len()].to_vec();
            proptest::prop_assert!(Segment::decode(short, &DecodeLimits::default()).is_err());
            let mut long = good.clone();
            long.extend_from_slice(&extra);
            proptest::prop_assert!(Segment::decode(long, &DecodeLimits::default()).is_err());
        }
    }
}
