//! The sealed segment: the unit the agent spools, ships and the store keeps.
//!
//! # Layout (all integers little-endian)
//! ```text
//! magic        8  b"LFSEG\0\0\x01"
//! version      2  format version, currently 2 (1 is read too)
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
//!     key id             str16   (empty = not encrypted; slot for envelope encryption)
//!     nonce              bytes8  (u8 length + bytes)
//!     payload length     u64     (plaintext, uncompressed)
//!     payload sha256     32
//!     stored length      u64     (bytes of the stored payload that follows the header)
//! payload      stored length bytes (compressed with the codec)
//! trailer      32  sha256 of every byte above
//! ```
//! `str16` is a u16 length followed by UTF-8. Decoding checks the total length exactly, the
//! trailer before anything else is trusted, every length against [`DecodeLimits`], and the
//! payload's sha256 after decompression. Bad bytes give [`Error::Corrupt`], never a panic.
//!
//! Version 1 segments (written before segments could end inside a transaction) have no
//! open-transaction field and always end at a boundary; they read as version 2 segments
//! with `open_trx = None`.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::{Error, Position, Result, SourceKind, StreamId};

const MAGIC: &[u8; 8] = b"LFSEG\0\0\x01";
/// The format version written. Version 2 added the open-transaction field.
const VERSION: u16 = 2;
/// The oldest format version read.
const OLDEST_VERSION: u16 = 1;
const TRAILER_LEN: usize = 32;
const PREFIX_LEN: usize = 8 + 2 + 4;
const MAX_HEADER_LEN: usize = 64 * 1024;
/// The zstd level the agent uses unless `segment.zstd_level` says otherwise. Compression is
/// the agent's largest cost; level 1 seals faster than zstd's usual 3, for 4% more bytes on
/// the benchmark's text rows and 5% fewer on its order rows (BENCHMARKS.md).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// How the payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    None,
    /// Compressed with zstd (one or more frames).
    Zstd,
    /// Compressed with LZ4 (one or more frames of the standard frame format).
    Lz4,
}

impl Codec {
    fn code(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
            Codec::Lz4 => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self> {
        match code {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Zstd),
            2 => Ok(Codec::Lz4),
            other => Err(Error::corrupt(format!("unknown codec code {other}"))),
        }
    }
}

/// How the agent compresses payloads (`segment.codec` and `segment.zstd_level`): the
/// trade between the agent's CPU and the bytes stored. Every reader reads every codec, so
/// a stream may change it at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Payloads stored uncompressed (data that does not compress, or CPU to spare none).
    None,
    /// zstd at the given level: the smallest store.
    Zstd(i32),
    /// LZ4: about twice zstd's speed at level 1, about twice its stored bytes on binlogs.
    Lz4,
}

impl Compression {
    /// The codec written into the header of segments sealed this way.
    pub fn codec(self) -> Codec {
        match self {
            Compression::None => Codec::None,
            Compression::Zstd(_) => Codec::Zstd,
            Compression::Lz4 => Codec::Lz4,
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(DEFAULT_ZSTD_LEVEL)
    }
}

/// Size limits applied while decoding, so a hostile or broken segment cannot make a reader
/// allocate without bound.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted encoded segment.
    pub max_segment_bytes: u64,
    /// Largest accepted plaintext payload after decompression.
    pub max_payload_bytes: u64,
}

/// The largest encoded segment accepted by default, by the shipper on upload
/// (`server.max_segment_bytes`), the agent reading its spool back, and every reader of the
/// store. The agent never seals a larger one: it asks the shipper for its limit.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            max_payload_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// The largest segment a shipper may be configured to accept (`server.max_segment_bytes`),
/// and so the largest any reader of the store accepts: room for one binlog event of 1 GiB
/// (MariaDB's and MySQL's largest `max_allowed_packet`) beside a full segment.
pub const MAX_STORED_SEGMENT_BYTES: u64 = 1280 * 1024 * 1024;

impl DecodeLimits {
    /// What readers of the store (verify, restore, export, the drill) accept: anything a
    /// shipper can have stored.
    pub fn stored() -> Self {
        DecodeLimits {
            max_segment_bytes: MAX_STORED_SEGMENT_BYTES,
            max_payload_bytes: MAX_STORED_SEGMENT_BYTES,
        }
    }

    /// Limits that accept segments up to `max_segment_bytes` and any payload that fits in
    /// one (the shipper's, from `server.max_segment_bytes`).
    pub fn for_segments(max_segment_bytes: u64) -> Self {
        let defaults = DecodeLimits::default();
        DecodeLimits {
            max_segment_bytes,
            max_payload_bytes: defaults.max_payload_bytes.max(max_segment_bytes),
        }
    }
}

/// The largest payload whose sealed segment fits in `max_segment_bytes` whatever the codec:
/// room for the header, the trailer and compression's worst-case growth on incompressible
/// data (zstd and LZ4 add well under 1/128).
pub fn max_payload_for(max_segment_bytes: u64) -> u64 {
    let overhead = max_segment_bytes / 128 + (MAX_HEADER_LEN + PREFIX_LEN + TRAILER_LEN) as u64;
    max_segment_bytes.saturating_sub(overhead)
}

/// The smallest segment limit whose [`max_payload_for`] holds `payload_bytes`: the inverse,
/// for telling an operator what to set.
pub fn segment_bytes_for(payload_bytes: u64) -> u64 {
    let fixed = (MAX_HEADER_LEN + PREFIX_LEN + TRAILER_LEN) as u64;
    // x - x/128 - fixed >= p  <=  x >= (p + fixed) * 128 / 127, plus rounding.
    (payload_bytes + fixed).saturating_mul(128) / 127 + 128
}

/// What the agent knows about a segment's content before it is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Stream the events belong to.
    pub stream: StreamId,
    /// Kind of source, which decides how positions and payload are read.
    pub source: SourceKind,
    /// Position where the first event starts.
    pub start: Position,
    /// Position right after the last event; the next segment starts here.
    pub end: Position,
    /// `None` when the segment ends at a transaction boundary (a restore may stop at its
    /// end); else where the transaction still open at its end began: the rest of that
    /// transaction is in the following segments, and a source resuming after this segment
    /// reads again from there to see the transaction whole.
    pub open_trx: Option<Position>,
    /// Source commit time of the first event, ms since the Unix epoch.
    pub first_event_ms: i64,
    /// Source commit time of the last event, ms since the Unix epoch.
    pub last_event_ms: i64,
    /// Number of source events in the payload.
    pub event_count: u64,
}

impl SegmentMeta {
    /// Whether the segment ends at a transaction boundary.
    pub fn ends_at_boundary(&self) -> bool {
        self.open_trx.is_none()
    }
}

/// The full header of a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Content description.
    pub meta: SegmentMeta,
    /// How the payload is stored.
    pub codec: Codec,
    /// Id of the key that encrypts the payload; empty while encryption is not configured.
    pub key_id: String,
    /// Nonce of the payload encryption; empty while not encrypted.
    pub nonce: Vec<u8>,
    /// Length of the plaintext payload.
    pub payload_len: u64,
    /// sha256 of the plaintext payload.
    pub payload_sha256: [u8; 32],
    /// Length of the stored (compressed) payload.
    pub stored_len: u64,
}

/// Payloads at least this long are compressed as two frames on two threads; shorter ones as
/// one frame on the calling thread (which the benchmark uses to time sealing on one core).
/// zstd and LZ4 decoders read concatenated frames as one stream, so readers see no
/// difference.
pub const SPLIT_AT: usize = 1 << 20;

/// Seals segment after segment. A long payload is compressed in two halves on two threads
/// while a third hashes it: compression is the agent's largest cost, and on a catch-up the
/// source and the server leave a core partly idle. Each half keeps its compressor and
/// output buffer from segment to segment, so a long run of segments does not allocate (and
/// have the kernel fault in) fresh ones each time.
pub struct Sealer {
    codec: Codec,
    /// The two compressors; `None` when payloads are stored as they are.
    halves: Option<[Half; 2]>,
}

/// One compressor and its reused output buffer.
struct Half {
    encoder: Encoder,
    out: Vec<u8>,
}

/// A compressor of one [`Compression`] other than none.
enum Encoder {
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Lz4(crate::lz4_frame::Lz4Writer),
}

impl Half {
    /// A half for `compression`; `None` for [`Compression::None`], which needs no buffer.
    fn new(compression: Compression) -> Result<Option<Self>> {
        let encoder = match compression {
            Compression::None => return Ok(None),
            Compression::Zstd(level) => Encoder::Zstd(Box::new(
                zstd::bulk::Compressor::new(level).map_err(Error::Compress)?,
            )),
            Compression::Lz4 => Encoder::Lz4(crate::lz4_frame::Lz4Writer::default()),
        };
        Ok(Some(Half {
            encoder,
            out: Vec::new(),
        }))
    }

    fn compress(&mut self, input: &[u8]) -> Result<()> {
        self.out.clear();
        match &mut self.encoder {
            Encoder::Zstd(compressor) => {
                self.out
                    .reserve(zstd::zstd_safe::compress_bound(input.len()));
                compressor
                    .compress_to_buffer(input, &mut self.out)
                    .map(|_| ())
                    .map_err(Error::Compress)
            }
            Encoder::Lz4(writer) => writer.write_frame(input, &mut self.out),
        }
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("codec", &self.codec)
            .field(
                "buffer_capacity",
                &self.halves.as_ref().map(|[h, _]| h.out.capacity()),
            )
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer compressing with `compression`.
    ///
    /// # Errors
    /// [`Error::Compress`] if zstd rejects the level.
    pub fn new(compression: Compression) -> Result<Self> {
        Ok(Sealer {
            codec: compression.codec(),
            halves: Half::new(compression)?
                .zip(Half::new(compression)?)
                .map(|(a, b)| [a, b]),
        })
    }

    /// Seals `payload` into an encoded segment (compressed, hashed).
    ///
    /// # Errors
    /// [`Error::Compress`] if compression fails; [`Error::Invalid`] if a position does not
    /// fit.
    pub fn seal(&mut self, meta: SegmentMeta, payload: &[u8]) -> Result<Segment> {
        let codec = self.codec;
        let Some([first, second]) = &mut self.halves else {
            // Stored as it is: assembled straight from the payload, with no copy in between.
            let digest: [u8; 32] = Sha256::digest(payload).into();
            return Segment::assemble(meta, codec, payload.len(), digest, &[payload]);
        };
        if payload.len() < SPLIT_AT {
            first.compress(payload)?;
            let digest: [u8; 32] = Sha256::digest(payload).into();
            return Segment::assemble(meta, codec, payload.len(), digest, &[&first.out]);
        }
        let (head, tail) = payload.split_at(payload.len() / 2);
        let (head_done, tail_done, digest) = std::thread::scope(|s| {
            let hashing = s.spawn(|| -> [u8; 32] { Sha256::digest(payload).into() });
            let tail_done = s.spawn(|| second.compress(tail));
            let head_done = first.compress(head);
            (head_done, joined(tail_done), joined(hashing))
        });
        head_done?;
        tail_done?;
        Segment::assemble(
            meta,
            codec,
            payload.len(),
            digest,
            &[&first.out, &second.out],
        )
    }
}

/// The result of a scoped thread; a panic there continues on this thread.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

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
        payload_sha256: [u8; 32],
        stored_parts: &[&[u8]],
    ) -> Result<Self> {
        let stored_len: usize = stored_parts.iter().map(|p| p.len()).sum();
        let header = SegmentHeader {
            meta,
            codec,
            key_id: String::new(),
            nonce: Vec::new(),
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

    /// Decompresses and checks the payload against the header's length and sha256.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if decompression fails or length/checksum differ.
    pub fn payload(&self) -> Result<Vec<u8>> {
        let stored = &self.bytes[self.payload_offset..self.bytes.len() - TRAILER_LEN];
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
        let sum: [u8; 32] = Sha256::digest(&plain).into();
        if sum != self.header.payload_sha256 {
            return Err(Error::corrupt("payload sha256 does not match the header"));
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

fn encode_header(h: &SegmentHeader, out: &mut Vec<u8>) -> Result<()> {
    let m = &h.meta;
    put_str16(out, m.stream.as_str())?;
    out.push(m.source.code());
    put_str16(out, &m.start.to_string())?;
    put_str16(out, &m.end.to_string())?;
    let open_trx = m.open_trx.as_ref().map(ToString::to_string);
    put_str16(out, open_trx.as_deref().unwrap_or(""))?;
    out.extend_from_slice(&m.first_event_ms.to_le_bytes());
    out.extend_from_slice(&m.last_event_ms.to_le_bytes());
    out.extend_from_slice(&m.event_count.to_le_bytes());
    out.push(h.codec.code());
    put_str16(out, &h.key_id)?;
    let nonce_len = u8::try_from(h.nonce.len())
        .map_err(|_| Error::invalid("nonce", "longer than 255 bytes"))?;
    out.push(nonce_len);
    out.extend_from_slice(&h.nonce);
    out.extend_from_slice(&h.payload_len.to_le_bytes());
    out.extend_from_slice(&h.payload_sha256);
    out.extend_from_slice(&h.stored_len.to_le_bytes());
    Ok(())
}

fn decode_header(block: &[u8], version: u16) -> Result<SegmentHeader> {
    let mut r = Reader { buf: block };
    let stream =
        StreamId::new(r.str16("stream id")?).map_err(|e| Error::corrupt(format!("header: {e}")))?;
    let source = SourceKind::from_code(r.u8("source kind")?)?;
    let start = Position::parse(source, r.str16("start position")?)
        .map_err(|e| Error::corrupt(format!("header start: {e}")))?;
    let end = Position::parse(source, r.str16("end position")?)
        .map_err(|e| Error::corrupt(format!("header end: {e}")))?;
    let open_trx = match version {
        1 => None,
        _ => match r.str16("open transaction")? {
            "" => None,
            text => Some(
                Position::parse(source, text)
                    .map_err(|e| Error::corrupt(format!("header open transaction: {e}")))?,
            ),
        },
    };
    let first_event_ms = r.i64("first event time")?;
    let last_event_ms = r.i64("last event time")?;
    let event_count = r.u64("event count")?;
    let codec = Codec::from_code(r.u8("codec")?)?;
    let key_id = r.str16("key id")?.to_owned();
    let nonce_len = r.u8("nonce length")? as usize;
    let nonce = r.take(nonce_len, "nonce")?.to_vec();
    let payload_len = r.u64("payload length")?;
    let mut payload_sha256 = [0u8; 32];
    payload_sha256.copy_from_slice(r.take(32, "payload sha256")?);
    let stored_len = r.u64("stored length")?;
    if !r.buf.is_empty() {
        return Err(Error::corrupt(format!(
            "{} unexpected bytes after the header fields",
            r.buf.len()
        )));
    }
    if end.cmp_place(&start) == std::cmp::Ordering::Less {
        return Err(Error::corrupt(format!(
            "end position {end} is before start position {start}"
        )));
    }
    if open_trx
        .as_ref()
        .is_some_and(|t| t.cmp_place(&end) == std::cmp::Ordering::Greater)
    {
        return Err(Error::corrupt(format!(
            "the open transaction starts after the end position {end}"
        )));
    }
    if !key_id.is_empty() {
        return Err(Error::corrupt(format!(
            "payload is encrypted with key {key_id:?}, which this build cannot decrypt"
        )));
    }
    Ok(SegmentHeader {
        meta: SegmentMeta {
            stream,
            source,
            start,
            end,
            open_trx,
            first_event_ms,
            last_event_ms,
            event_count,
        },
        codec,
        key_id,
        nonce,
        payload_len,
        payload_sha256,
        stored_len,
    })
}

fn put_str16(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len =
        u16::try_from(s.len()).map_err(|_| Error::invalid("header field", "longer than 64 KiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Bounds-checked cursor over header bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt(format!("header truncated in {what}")));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    fn i64(&mut self, what: &str) -> Result<i64> {
        self.u64(what).map(|v| v as i64)
    }

    fn str16(&mut self, what: &str) -> Result<&'a str> {
        let len = self.take(2, what)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        std::str::from_utf8(self.take(len, what)?)
            .map_err(|_| Error::corrupt(format!("header {what} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BinlogPos;

    fn sample() -> Segment {
        let meta = SegmentMeta {
            stream: StreamId::new("db1").unwrap(),
            source: SourceKind::Mysql,
            start: Position::Binlog(BinlogPos::new("mysql-bin.000001", 4)),
            end: Position::Binlog(BinlogPos::parse("mysql-bin.000001:900@0-1-3").unwrap()),
            open_trx: None,
            first_event_ms: 1_700_000_000_000,
            last_event_ms: 1_700_000_001_000,
            event_count: 7,
        };
        let payload: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        Segment::seal(meta, &payload, Compression::default()).unwrap()
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
        meta.open_trx = Some(Position::Binlog(
            BinlogPos::parse("mysql-bin.000001:400@0-1-2").unwrap(),
        ));
        let seg = Segment::seal(meta.clone(), b"x", Compression::None).unwrap();
        let back = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap();
        assert_eq!(back.header.meta, meta);
        assert!(!back.header.meta.ends_at_boundary());
        meta.open_trx = Some(Position::Binlog(BinlogPos::new("mysql-bin.000001", 901)));
        let seg = Segment::seal(meta, b"x", Compression::None).unwrap();
        let err = Segment::decode(seg.bytes().to_vec(), &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("open transaction"), "{err}");
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
}
