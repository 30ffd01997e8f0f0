//! A segment's header: what it holds, and the bytes that say so.

use super::Codec;
use crate::crypto::{KeyRef, ENVELOPE_LEN};
use crate::{Error, Position, Result, SourceKind, StreamId};

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
    /// Which server the events came from and how the chain follows the database across
    /// servers (format version 3; empty in older segments).
    pub lineage: Lineage,
}

/// Which server a segment's events came from, and how the stream follows its database
/// from one server to another (a promoted standby) without mixing in another database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// The server the events were read from, as the source names it (MySQL:
    /// `server_id`, `server_uuid`, host and port); empty when unknown (older segments).
    pub origin: String,
    /// Set on the first segment of a new leg (the stream continued on another server):
    /// where that server's first event starts. The segment's `start` is then the place on
    /// the previous leg where the new server continues, so the chain stays one chain by
    /// its keys.
    pub leg_start: Option<Position>,
    /// Set on a new leg's first segment when the new server does not hold everything the
    /// previous leg stored (a fork: a standby that missed the last transactions was
    /// promoted): the transaction boundary on the previous leg where the new server's
    /// history continues. The previous leg's events after it, up to `start`, are on the
    /// old server's branch only (orphaned): restores skip them, `export --branch` writes
    /// them out.
    pub forks_at: Option<Position>,
    /// The last whole transaction of the chain up to this segment's end: what a server
    /// must hold, under the same id and with the same content, to continue the stream.
    pub last_trx: Option<TrxMark>,
}

/// A transaction named and fingerprinted the way the source can check it again on any
/// server: the successor check of a failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrxMark {
    /// The transaction's id in the source (a MariaDB GTID such as `0-1-57`).
    pub id: String,
    /// The source's state right before the transaction (a GTID state), from where a
    /// server is asked to send it again.
    pub before: String,
    /// sha256 of the transaction's content in the source's normalised form: what every
    /// server that replicated it keeps the same (the source's `fingerprint` rules).
    pub digest: [u8; 32],
}

impl SegmentMeta {
    /// Where the segment's first event starts: `start`, except on the first segment of a
    /// new leg, whose `start` is the place on the previous leg it continues.
    pub fn events_start(&self) -> &Position {
        self.lineage.leg_start.as_ref().unwrap_or(&self.start)
    }

    /// Why this segment may not follow `prev` in one stream, `None` when it may: the one
    /// rule of which server's segments make one chain, which the shipper applies on upload
    /// and `verify` on what is stored. A segment from another server than `prev`'s must
    /// start the next leg (a failover); one from the same server must not start a leg;
    /// segments without an origin (older ones) follow anything.
    pub fn may_follow(&self, prev: &SegmentMeta) -> Option<String> {
        let (was, is) = (&prev.lineage.origin, &self.lineage.origin);
        if was.is_empty() || is.is_empty() {
            return None;
        }
        match &self.lineage.leg_start {
            None if was == is => None,
            None => Some(format!(
                "it comes from server {is} where the segment before came from server {was}, and does not continue the chain as a new leg: two databases under one stream name (a config copied to a second host?); give each database its own agent.stream"
            )),
            Some(_) if was == is => Some(format!(
                "it starts a new leg on the server the segment before came from ({is})"
            )),
            Some(l) if l.leg() != prev.end.leg() + 1 => Some(format!(
                "it starts leg {} after a segment on leg {}",
                l.leg(),
                prev.end.leg()
            )),
            Some(_) => None,
        }
    }

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
    /// The key the payload is sealed under ([`KeyRef`], `MASTER/EPOCH`); empty for a
    /// payload stored in clear.
    pub key_id: String,
    /// The payload's envelope (data key salt and nonce); empty for a payload in clear.
    pub nonce: Vec<u8>,
    /// Length of the plaintext payload.
    pub payload_len: u64,
    /// sha256 of the plaintext payload; all zeros when the payload is encrypted (a hash
    /// of the plaintext in clear would confirm a guess of it; the AES-GCM tag checks the
    /// payload instead).
    pub payload_sha256: [u8; 32],
    /// Length of the stored (compressed) payload.
    pub stored_len: u64,
}

impl SegmentHeader {
    /// The key the payload is sealed under; `None` for a payload in clear.
    pub fn key_ref(&self) -> Option<KeyRef> {
        // The decoder accepted the header only with a valid reference.
        KeyRef::parse(&self.key_id).ok()
    }
}

pub(super) fn encode_header(h: &SegmentHeader, out: &mut Vec<u8>) -> Result<()> {
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
    let l = &m.lineage;
    put_str16(out, &l.origin)?;
    let leg_start = l.leg_start.as_ref().map(ToString::to_string);
    put_str16(out, leg_start.as_deref().unwrap_or(""))?;
    let forks_at = l.forks_at.as_ref().map(ToString::to_string);
    put_str16(out, forks_at.as_deref().unwrap_or(""))?;
    match &l.last_trx {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_str16(out, &t.id)?;
            put_str16(out, &t.before)?;
            out.extend_from_slice(&t.digest);
        }
    }
    Ok(())
}

/// The lineage fields of a version 3 header.
fn decode_lineage(r: &mut Reader<'_>, source: SourceKind) -> Result<Lineage> {
    let origin = r.str16("origin")?.to_owned();
    let leg_start = match r.str16("leg start")? {
        "" => None,
        text => Some(
            Position::parse(source, text)
                .map_err(|e| Error::corrupt(format!("header leg start: {e}")))?,
        ),
    };
    let forks_at = match r.str16("fork point")? {
        "" => None,
        text => Some(
            Position::parse(source, text)
                .map_err(|e| Error::corrupt(format!("header fork point: {e}")))?,
        ),
    };
    let last_trx = match r.u8("last transaction flag")? {
        0 => None,
        1 => {
            let id = r.str16("last transaction id")?.to_owned();
            let before = r.str16("last transaction's preceding state")?.to_owned();
            let mut digest = [0u8; 32];
            digest.copy_from_slice(r.take(32, "last transaction digest")?);
            Some(TrxMark { id, before, digest })
        }
        n => return Err(Error::corrupt(format!("last transaction flag {n}"))),
    };
    Ok(Lineage {
        origin,
        leg_start,
        forks_at,
        last_trx,
    })
}

pub(super) fn decode_header(block: &[u8], version: u16) -> Result<SegmentHeader> {
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
    let lineage = if version >= 3 {
        decode_lineage(&mut r, source)?
    } else {
        Lineage::default()
    };
    if !r.buf.is_empty() {
        return Err(Error::corrupt(format!(
            "{} unexpected bytes after the header fields",
            r.buf.len()
        )));
    }
    if end.cmp_place(&start)?.is_lt() {
        return Err(Error::corrupt(format!(
            "end position {end} is before start position {start}"
        )));
    }
    if let Some(leg_start) = &lineage.leg_start {
        if leg_start.cmp_place(&start)?.is_le() || leg_start.cmp_place(&end)?.is_gt() {
            return Err(Error::corrupt(format!(
                "the leg start {leg_start} is not between the start {start} and the end {end}"
            )));
        }
    }
    if let Some(at) = &lineage.forks_at {
        // A fork starts a new leg (MySQL) or a new history after a full resync (Redis).
        let starts_run = lineage.leg_start.is_some()
            || matches!(start, Position::Redis(_)) && start.leg() > at.leg();
        if !starts_run || at.cmp_place(&start)?.is_ge() {
            return Err(Error::corrupt(format!(
                "a fork point {at} on a segment that does not start a new leg before it (start {start})"
            )));
        }
    }
    if open_trx
        .as_ref()
        .map(|t| t.cmp_place(&end))
        .transpose()?
        .is_some_and(std::cmp::Ordering::is_gt)
    {
        return Err(Error::corrupt(format!(
            "the open transaction starts after the end position {end}"
        )));
    }
    match (key_id.is_empty(), nonce.len()) {
        (true, 0) => {}
        (true, _) => return Err(Error::corrupt("a nonce without a key id")),
        (false, ENVELOPE_LEN) => {
            KeyRef::parse(&key_id).map_err(|e| Error::corrupt(format!("header: {e}")))?;
        }
        (false, n) => {
            return Err(Error::corrupt(format!(
                "an envelope of {n} bytes, not {ENVELOPE_LEN}"
            )))
        }
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
            lineage,
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
