//! How a segment's payload is stored, and the sealer that compresses and hashes it.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Segment, SegmentMeta};
use crate::crypto::EpochKey;
use crate::{Error, Result};

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
    pub(super) fn code(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
            Codec::Lz4 => 2,
        }
    }

    pub(super) fn from_code(code: u8) -> Result<Self> {
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
    /// The epoch key payloads are encrypted under; `None` stores them in clear.
    key: Option<Arc<EpochKey>>,
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
            .field("key", &self.key.as_ref().map(|k| k.key_ref().to_string()))
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
            key: None,
            halves: Half::new(compression)?
                .zip(Half::new(compression)?)
                .map(|(a, b)| [a, b]),
        })
    }

    /// The same sealer, encrypting every payload under `key` after compressing it.
    pub fn encrypting(mut self, key: Option<Arc<EpochKey>>) -> Self {
        self.key = key;
        self
    }

    /// Seals `payload` into an encoded segment (compressed, encrypted when a key is set,
    /// hashed).
    ///
    /// # Errors
    /// [`Error::Compress`] if compression fails; [`Error::Invalid`] if a position does not
    /// fit.
    pub fn seal(&mut self, meta: SegmentMeta, payload: &[u8]) -> Result<Segment> {
        let codec = self.codec;
        let key = self.key.as_ref();
        // Hashing the plaintext is needed only for a payload stored in clear.
        let digest = || -> [u8; 32] { Sha256::digest(payload).into() };
        let Some([first, second]) = &mut self.halves else {
            // Stored as it is: assembled straight from the payload, with no copy in between.
            return Segment::assemble(meta, codec, payload.len(), digest, &[payload], key);
        };
        if payload.len() < SPLIT_AT {
            first.compress(payload)?;
            return Segment::assemble(meta, codec, payload.len(), digest, &[&first.out], key);
        }
        let (head, tail) = payload.split_at(payload.len() / 2);
        let hash = key.is_none();
        let (head_done, tail_done, sum) = std::thread::scope(|s| {
            let hashing = s.spawn(move || hash.then(digest));
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
            || sum.unwrap_or([0u8; 32]),
            &[&first.out, &second.out],
            key,
        )
    }
}

/// The result of a scoped thread; a panic there continues on this thread.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
