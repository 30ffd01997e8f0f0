//! The sealing cost per codec and level, and the format's floor on this machine.

use std::path::PathBuf;
use std::time::Instant;

use logferry_common::segment::Sealer;
use logferry_common::{
    BinlogPos, Compression, DecodeLimits, Position, Segment, SegmentMeta, SourceKind, StreamId,
};

use crate::*;

/// Sealing the same binlog with one codec and level.
pub(crate) struct LevelResult {
    pub(crate) compression: Compression,
    pub(crate) mib_per_s: f64,
    pub(crate) ratio: f64,
}

/// Codecs and zstd levels compared by [`seal_levels`].
pub(crate) const LEVELS: [Compression; 5] = [
    Compression::Zstd(-1),
    Compression::Zstd(1),
    Compression::Zstd(3),
    Compression::Zstd(9),
    Compression::Lz4,
];

/// How `segment.codec` / `segment.zstd_level` name a compression.
pub(crate) fn compression_name(c: Compression) -> String {
    match c {
        Compression::Zstd(level) => format!("zstd {level}"),
        Compression::Lz4 => "lz4".into(),
        Compression::None => "none".into(),
    }
}

/// The binlog files' bytes, one after the other.
pub(crate) fn read_files(files: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    for f in files {
        data.extend_from_slice(&std::fs::read(f)?);
    }
    Ok(data)
}

/// Metadata for segments sealed outside an agent (only their cost and size matter).
pub(crate) fn bench_meta() -> anyhow::Result<SegmentMeta> {
    Ok(SegmentMeta {
        stream: StreamId::new(STREAM)?,
        source: SourceKind::Mysql,
        start: Position::Mysql(BinlogPos::new("mysql-bin.000001", 4).unwrap()),
        end: Position::Mysql(BinlogPos::new("mysql-bin.000001", 8).unwrap()),
        open_trx: None,
        first_event_ms: 0,
        last_event_ms: 0,
        event_count: 1,
        lineage: logferry_common::segment::Lineage::default(),
    })
}

/// Seals the binlog `data` in 8 MiB segments with each of [`LEVELS`] with the agent's own
/// sealer (two compressing threads, sha256 on a third), timing it and summing the sizes.
pub(crate) fn seal_levels(data: &[u8]) -> anyhow::Result<Vec<LevelResult>> {
    let meta = bench_meta()?;
    let mut out = Vec::new();
    for compression in LEVELS {
        let mut sealer = Sealer::new(compression)?;
        let started = Instant::now();
        let mut stored = 0u64;
        for chunk in data.chunks(8 << 20) {
            stored += sealer.seal(meta.clone(), chunk)?.bytes().len() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        out.push(LevelResult {
            compression,
            mib_per_s: mib(data.len() as u64) / secs.max(1e-9),
            ratio: stored as f64 / data.len().max(1) as f64,
        });
    }
    Ok(out)
}

/// The work the segment format asks of every byte, timed on one core of this machine: the
/// agent sealing (compression, sha256 of the plaintext, sha256 trailer) and the shipper's
/// upload check (the trailer sha256 again), with the agent's own code. No schedule of a ship
/// can take less than this work (plus the server's) spread over every core.
#[derive(Clone, Copy, Default)]
pub(crate) struct Floor {
    /// Seconds to seal the whole binlog on one thread, zstd (the default codec).
    pub(crate) seal_zstd_s: f64,
    /// Seconds for the upload check of those segments.
    pub(crate) check_zstd_s: f64,
    /// The same with `codec = "lz4"`.
    pub(crate) seal_lz4_s: f64,
    /// The upload check of the lz4 segments.
    pub(crate) check_lz4_s: f64,
}

impl Floor {
    /// The least wall time for `seal_s` + `check_s` + the server's `server_cpu_s` on
    /// `cores` cores at once: no network, no disk, no waiting.
    pub(crate) fn least_s(seal_s: f64, check_s: f64, server_cpu_s: f64, cores: usize) -> f64 {
        (seal_s + check_s + server_cpu_s) / cores as f64
    }
}

/// Times [`Floor`]'s work on the binlog `data`: payloads just under
/// [`logferry_common::segment::SPLIT_AT`], which the sealer seals on the calling thread.
pub(crate) fn floor(data: &[u8]) -> anyhow::Result<Floor> {
    let meta = bench_meta()?;
    let one_thread = logferry_common::segment::SPLIT_AT - 4096;
    let timed = |compression: Compression| -> anyhow::Result<(f64, f64)> {
        let mut sealer = Sealer::new(compression)?;
        let (mut seal_s, mut check_s) = (0.0, 0.0);
        for chunk in data.chunks(one_thread) {
            let started = Instant::now();
            let segment = sealer.seal(meta.clone(), chunk)?;
            seal_s += started.elapsed().as_secs_f64();
            let started = Instant::now();
            Segment::decode(segment.into_bytes(), &DecodeLimits::default())?;
            check_s += started.elapsed().as_secs_f64();
        }
        Ok((seal_s, check_s))
    };
    let (seal_zstd_s, check_zstd_s) = timed(Compression::default())?;
    let (seal_lz4_s, check_lz4_s) = timed(Compression::Lz4)?;
    Ok(Floor {
        seal_zstd_s,
        check_zstd_s,
        seal_lz4_s,
        check_lz4_s,
    })
}
