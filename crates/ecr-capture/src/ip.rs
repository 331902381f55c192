//! IPv4 and IPv6 parsing, and IP fragment reassembly.
//!
//! [`parse`] checks the header against the captured bytes and hands out the payload
//! borrowed from the packet. Packets cut by the snap length are not errors: the
//! payload is what was captured and [`IpPacket::truncated`] says so, because the TCP
//! layer can still use the part it got. Ethernet padding after the IP total length is
//! trimmed. IPv6 extension headers (hop-by-hop, routing, destination options, AH,
//! fragment) are skipped. The headers themselves are read with `etherparse`'s header
//! slices; the capture-specific policy above (and why etherparse's whole-packet
//! slicers and its `IpDefragPool` are not used) is in docs/architecture.md.
//!
//! [`Defragmenter`] joins fragments keyed by (src, dst, id, protocol) with bounds on
//! pending datagrams and bytes and a timeout measured on capture time. Overlapping
//! fragments: the first bytes seen for a position win (later copies are ignored), and
//! fragments that contradict the datagram's known end drop the datagram.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use ecr_proto::Timestamp;
use etherparse::{
    err, IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice,
};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

const IPV4_MIN_HEADER: usize = 20;

const IPV6_HEADER: usize = 40;

const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_NO_NEXT: u8 = 59;
const EXT_DEST_OPTS: u8 = 60;
/// Extension headers followed at most (more is an attack or damage).
const MAX_EXT_HEADERS: usize = 16;

/// Largest reassembled payload (the IP length fields are 16 bits).
const MAX_DATAGRAM: u32 = 65_535;

/// Fragment information of a packet that is part of a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
}

/// A parsed IP packet (or a reassembled datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// The upper-layer payload: borrowed from the packet, owned when reassembled.
    pub payload: Cow<'a, [u8]>,
    /// The header declared more bytes than were captured (snap length): `payload`
    /// holds only what was captured.
    pub truncated: bool,
    /// Set when this packet is a fragment (then `payload` is the fragment's data).
    pub fragment: Option<Fragment>,
}

/// Why a packet is not a usable IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    /// Fewer bytes than the fixed header.
    #[error("IP packet of {len} bytes is shorter than its header ({needed} bytes)")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// The version nibble is neither 4 nor 6 (or not the expected one).
    #[error("IP version {0} is not 4 or 6")]
    BadVersion(u8),
    /// IPv4 IHL below 5.
    #[error("IPv4 header length {0} bytes is below 20")]
    BadHeaderLen(usize),
    /// IPv4 total length smaller than the header.
    #[error("IPv4 total length {total} is smaller than the header length {header}")]
    BadTotalLen {
        /// Total length field.
        total: usize,
        /// Header length.
        header: usize,
    },
    /// The IPv6 extension header chain is too long or runs past the packet.
    #[error("IPv6 extension headers: {0}")]
    ExtensionHeaders(&'static str),
}

/// Parses an IPv4 or IPv6 packet, choosing by the version nibble.
pub fn parse(data: &[u8]) -> Result<IpPacket<'_>, IpError> {
    match data.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(data),
        Some(6) => parse_ipv6(data),
        Some(v) => Err(IpError::BadVersion(v)),
        None => Err(IpError::Truncated { needed: 1, len: 0 }),
    }
}

/// Parses an IPv4 packet (header checks, options skipped, total length bounds). The
/// header is read with `etherparse`'s [`Ipv4HeaderSlice`]; what a capture needs on top
/// (snap-length truncation, padding, offload) is decided here.
///
/// A total length of 0 is taken as "the captured length": captures taken on a host
/// with TCP segmentation offload show outgoing super-segments that way.
pub fn parse_ipv4(data: &[u8]) -> Result<IpPacket<'_>, IpError> {
    let short = IpError::Truncated {
        needed: IPV4_MIN_HEADER,
        len: data.len(),
    };
    // The version first, also for a packet too short for a header: "not IPv4" says
    // more about such bytes than "too short".
    let first = *data.first().ok_or(short)?;
    if first >> 4 != 4 {
        return Err(IpError::BadVersion(first >> 4));
    }
    let header = Ipv4HeaderSlice::from_slice(data).map_err(|e| match e {
        err::ipv4::HeaderSliceError::Len(l) => IpError::Truncated {
            needed: l.required_len,
            len: l.len,
        },
        err::ipv4::HeaderSliceError::Content(err::ipv4::HeaderError::UnexpectedVersion {
            version_number,
        }) => IpError::BadVersion(version_number),
        err::ipv4::HeaderSliceError::Content(
            err::ipv4::HeaderError::HeaderLengthSmallerThanHeader { ihl },
        ) => IpError::BadHeaderLen(usize::from(ihl) * 4),
    })?;
    let ihl = header.slice().len();
    let total = usize::from(header.total_len());
    let total = if total == 0 { data.len() } else { total };
    if total < ihl {
        return Err(IpError::BadTotalLen { total, header: ihl });
    }
    let end = total.min(data.len());
    let offset = u32::from(header.fragments_offset().value()) * 8;
    let more = header.more_fragments();
    let fragment = (more || offset != 0).then(|| Fragment {
        id: u32::from(header.identification()),
        offset,
        more,
    });
    Ok(IpPacket {
        src: IpAddr::V4(header.source_addr()),
        dst: IpAddr::V4(header.destination_addr()),
        protocol: header.protocol().0,
        ttl: header.ttl(),
        payload: Cow::Borrowed(data.get(ihl..end).unwrap_or_default()),
        truncated: total > data.len(),
        fragment,
    })
}

/// True when the IPv4 header checksum is right. Not enforced by [`parse`]: hosts
/// with checksum offload capture their own packets with wrong checksums.
pub fn ipv4_header_checksum_ok(data: &[u8]) -> bool {
    Ipv4HeaderSlice::from_slice(data)
        .is_ok_and(|h| h.to_header().calc_header_checksum() == h.header_checksum())
}

/// Result of walking an IPv6 extension-header chain.
struct ExtWalk {
    protocol: u8,
    offset: usize,
    fragment: Option<Fragment>,
}

const EXT_RUNS_PAST: IpError = IpError::ExtensionHeaders("header runs past the packet");

/// Walks extension headers starting with header type `next` at `data[0]`, each read
/// with `etherparse`'s header slices. Stops at the upper-layer header or at a
/// (non-atomic) fragment header, and after [`MAX_EXT_HEADERS`] headers. (etherparse's
/// own chain parser, `Ipv6ExtensionsSlice`, enforces the RFC 8200 order; captures are
/// read as they are, in any order, with a bound on the count instead.)
fn walk_ipv6_ext(mut next: u8, data: &[u8]) -> Result<ExtWalk, IpError> {
    let mut off = 0usize;
    for _ in 0..MAX_EXT_HEADERS {
        let rest = data.get(off..).unwrap_or_default();
        match next {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                let h = Ipv6RawExtHeaderSlice::from_slice(rest).map_err(|_| EXT_RUNS_PAST)?;
                off += h.slice().len();
                next = h.next_header().0;
            }
            EXT_AH => {
                let h = IpAuthHeaderSlice::from_slice(rest).map_err(|e| match e {
                    err::ip_auth::HeaderSliceError::Len(_) => EXT_RUNS_PAST,
                    err::ip_auth::HeaderSliceError::Content(_) => {
                        IpError::ExtensionHeaders("authentication header of zero length")
                    }
                })?;
                off += h.slice().len();
                next = h.next_header().0;
            }
            EXT_FRAGMENT => {
                let h = Ipv6FragmentHeaderSlice::from_slice(rest).map_err(|_| {
                    IpError::ExtensionHeaders("fragment header runs past the packet")
                })?;
                off += h.slice().len();
                next = h.next_header().0;
                if h.is_fragmenting_payload() {
                    return Ok(ExtWalk {
                        protocol: next,
                        offset: off,
                        fragment: Some(Fragment {
                            id: h.identification(),
                            offset: u32::from(h.fragment_offset().value()) * 8,
                            more: h.more_fragments(),
                        }),
                    });
                }
                // An atomic fragment (offset 0, no more): just go on.
            }
            _ => {
                return Ok(ExtWalk {
                    protocol: next,
                    offset: off,
                    fragment: None,
                })
            }
        }
    }
    Err(IpError::ExtensionHeaders("too many extension headers"))
}

/// Parses an IPv6 packet (fixed header read with `etherparse`'s [`Ipv6HeaderSlice`]),
/// skipping extension headers.
///
/// A payload length of 0 (jumbogram or segmentation offload) means "the rest of the
/// captured bytes".
pub fn parse_ipv6(data: &[u8]) -> Result<IpPacket<'_>, IpError> {
    let short = IpError::Truncated {
        needed: IPV6_HEADER,
        len: data.len(),
    };
    let first = *data.first().ok_or(short)?;
    if first >> 4 != 6 {
        return Err(IpError::BadVersion(first >> 4));
    }
    let header = Ipv6HeaderSlice::from_slice(data).map_err(|e| match e {
        err::ipv6::HeaderSliceError::Len(_) => short,
        err::ipv6::HeaderSliceError::Content(err::ipv6::HeaderError::UnexpectedVersion {
            version_number,
        }) => IpError::BadVersion(version_number),
    })?;
    let plen = usize::from(header.payload_length());
    let avail = data.len().saturating_sub(IPV6_HEADER);
    let (plen, truncated) = if plen == 0 {
        (avail, false)
    } else {
        (plen, plen > avail)
    };
    let body = data
        .get(IPV6_HEADER..IPV6_HEADER + plen.min(avail))
        .unwrap_or_default();
    let walk = walk_ipv6_ext(header.next_header().0, body)?;
    let payload = if walk.protocol == EXT_NO_NEXT && walk.fragment.is_none() {
        &[][..]
    } else {
        body.get(walk.offset..).unwrap_or_default()
    };
    Ok(IpPacket {
        src: IpAddr::V6(header.source_addr()),
        dst: IpAddr::V6(header.destination_addr()),
        protocol: walk.protocol,
        ttl: header.hop_limit(),
        payload: Cow::Borrowed(payload),
        truncated,
        fragment: walk.fragment,
    })
}

/// Bounds for [`Defragmenter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragConfig {
    /// Datagrams being reassembled at once; the oldest is dropped beyond this.
    pub max_pending: usize,
    /// Bytes buffered over all pending datagrams.
    pub max_bytes: usize,
    /// A datagram not complete this long after its first fragment (capture time) is
    /// dropped.
    pub timeout_ns: i64,
}

impl Default for DefragConfig {
    fn default() -> Self {
        DefragConfig {
            max_pending: 256,
            max_bytes: 4 << 20,
            timeout_ns: 30_000_000_000,
        }
    }
}

/// Counters kept by the [`Defragmenter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Fragments received.
    pub fragments: u64,
    /// Datagrams completed.
    pub reassembled: u64,
    /// Datagrams dropped after the timeout.
    pub timed_out: u64,
    /// Datagrams dropped to respect the bounds.
    pub evicted: u64,
    /// Of those, datagrams dropped for [`DefragConfig::max_bytes`] (the rest were
    /// dropped for [`DefragConfig::max_pending`]).
    pub evicted_for_bytes: u64,
    /// Datagrams dropped because fragments contradicted each other or exceeded
    /// the maximum size.
    pub inconsistent: u64,
    /// Fragment bytes ignored because they overlapped bytes already received.
    pub overlap_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    protocol: u8,
}

#[derive(Debug)]
struct Pending {
    buf: Vec<u8>,
    /// Received byte ranges, sorted, disjoint, not adjacent.
    have: Vec<(u32, u32)>,
    total: Option<u32>,
    first_ts: Timestamp,
    ttl: u8,
}

/// IP fragment reassembly for IPv4 and IPv6 with bounded memory.
#[derive(Debug, Default)]
pub struct Defragmenter {
    config: DefragConfig,
    pending: HashMap<FragKey, Pending>,
    bytes: usize,
    last_sweep: Option<Timestamp>,
    stats: DefragStats,
}

impl Defragmenter {
    /// A defragmenter with the given bounds.
    pub fn new(config: DefragConfig) -> Self {
        Defragmenter {
            config,
            ..Default::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> DefragStats {
        self.stats
    }

    /// Bytes buffered for datagrams waiting for fragments.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Datagrams currently waiting for fragments.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Passes unfragmented packets through; buffers fragments and returns the whole
    /// datagram (owned payload, `fragment: None`) when its last missing piece arrives.
    pub fn process<'a>(&mut self, ts: Timestamp, pkt: IpPacket<'a>) -> Option<IpPacket<'a>> {
        let Some(frag) = pkt.fragment else {
            return Some(pkt);
        };
        self.stats.fragments += 1;
        self.sweep(ts);
        let key = FragKey {
            src: pkt.src,
            dst: pkt.dst,
            id: frag.id,
            protocol: pkt.protocol,
        };
        let data: &[u8] = &pkt.payload;
        let Some(end) = u32::try_from(data.len())
            .ok()
            .and_then(|l| frag.offset.checked_add(l))
            .filter(|&e| e <= MAX_DATAGRAM)
        else {
            self.drop_key(&key);
            self.stats.inconsistent += 1;
            return None;
        };
        if !self.pending.contains_key(&key) {
            while self.pending.len() >= self.config.max_pending.max(1) {
                self.evict_oldest();
            }
            let p = Pending {
                buf: Vec::new(),
                have: Vec::new(),
                total: None,
                first_ts: ts,
                ttl: pkt.ttl,
            };
            self.pending.insert(key.clone(), p);
        }
        // Make room for the growth of this datagram's buffer.
        let grow = (end as usize).saturating_sub(self.pending.get(&key).map_or(0, |p| p.buf.len()));
        while self.bytes + grow > self.config.max_bytes && self.pending.len() > 1 {
            self.stats.evicted_for_bytes += 1;
            self.evict_oldest_except(&key);
        }
        if self.bytes + grow > self.config.max_bytes {
            self.drop_key(&key);
            self.stats.evicted += 1;
            self.stats.evicted_for_bytes += 1;
            return None;
        }
        let p = self.pending.get_mut(&key)?;
        let consistent = match (p.total, frag.more) {
            (Some(t), _) if end > t => false,
            (Some(t), false) => t == end,
            (None, false) => !matches!(p.have.last(), Some(&(_, e)) if e > end),
            (_, true) => true,
        };
        if !consistent {
            self.drop_key(&key);
            self.stats.inconsistent += 1;
            return None;
        }
        if !frag.more {
            p.total = Some(end);
        }
        if p.buf.len() < end as usize {
            self.bytes += end as usize - p.buf.len();
            p.buf.resize(end as usize, 0);
        }
        self.stats.overlap_bytes += insert_range(&mut p.have, &mut p.buf, frag.offset, data);
        let complete = p
            .total
            .is_some_and(|t| p.have.as_slice() == [(0, t)] || (t == 0 && p.have.is_empty()));
        if !complete {
            return None;
        }
        let p = self.pending.remove(&key)?;
        self.bytes = self.bytes.saturating_sub(p.buf.len());
        self.stats.reassembled += 1;
        let mut buf = p.buf;
        let mut protocol = pkt.protocol;
        if pkt.src.is_ipv6() {
            // The reassembled fragmentable part may start with more extension headers.
            match walk_ipv6_ext(protocol, &buf) {
                Ok(w) if w.fragment.is_none() => {
                    protocol = w.protocol;
                    buf.drain(..w.offset.min(buf.len()));
                }
                _ => {
                    self.stats.inconsistent += 1;
                    return None;
                }
            }
        }
        Some(IpPacket {
            src: pkt.src,
            dst: pkt.dst,
            protocol,
            ttl: p.ttl,
            payload: Cow::Owned(buf),
            truncated: false,
            fragment: None,
        })
    }

    /// Drops datagrams whose first fragment is older than the timeout at `now`.
    pub fn expire(&mut self, now: Timestamp) {
        let timeout = self.config.timeout_ns;
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|_, p| {
            let keep = now - p.first_ts <= timeout;
            if !keep {
                freed += p.buf.len();
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.stats.timed_out += (before - self.pending.len()) as u64;
    }

    fn sweep(&mut self, now: Timestamp) {
        // Sweeping at most once per capture second keeps the cost per fragment low.
        if !matches!(self.last_sweep, Some(t) if now - t < 1_000_000_000 && now >= t) {
            self.last_sweep = Some(now);
            self.expire(now);
        }
    }

    fn drop_key(&mut self, key: &FragKey) {
        if let Some(p) = self.pending.remove(key) {
            self.bytes = self.bytes.saturating_sub(p.buf.len());
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.first_ts)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.drop_key(&k);
            self.stats.evicted += 1;
        } else {
            self.bytes = 0;
        }
    }

    fn evict_oldest_except(&mut self, keep: &FragKey) {
        let oldest = self
            .pending
            .iter()
            .filter(|(k, _)| *k != keep)
            .min_by_key(|(_, p)| p.first_ts)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.drop_key(&k);
            self.stats.evicted += 1;
        }
    }
}

/// Copies the parts of `data` (at `offset`) not yet covered by `have` into `buf`,
/// merges the range into `have`, and returns the number of overlapping bytes ignored.
fn insert_range(have: &mut Vec<(u32, u32)>, buf: &mut [u8], offset: u32, data: &[u8]) -> u64 {
    let end = offset + data.len() as u32;
    if offset == end {
        return 0;
    }
    let mut overlap = 0u64;
    let mut cursor = offset;
    let copy = |buf: &mut [u8], from: u32, to: u32| {
        let src = data
            .get((from - offset) as usize..(to - offset) as usize)
            .unwrap_or_default();
        if let Some(dst) = buf.get_mut(from as usize..to as usize) {
            dst.copy_from_slice(src);
        }
    };
    for &(s, e) in have.iter() {
        if e <= cursor {
            continue;
        }
        if s >= end {
            break;
        }
        if s > cursor {
            copy(buf, cursor, s);
        }
        let ov_end = e.min(end);
        overlap += u64::from(ov_end - s.max(cursor));
        cursor = ov_end;
        if cursor >= end {
            break;
        }
    }
    if cursor < end {
        copy(buf, cursor, end);
    }
    // Merge [offset, end) into the sorted list (joining adjacent ranges).
    let mut merged = Vec::with_capacity(have.len() + 1);
    let (mut ns, mut ne) = (offset, end);
    let mut placed = false;
    for &(s, e) in have.iter() {
        if e < ns {
            merged.push((s, e));
        } else if s > ne {
            if !placed {
                merged.push((ns, ne));
                placed = true;
            }
            merged.push((s, e));
        } else {
            ns = ns.min(s);
            ne = ne.max(e);
        }
    }
    if !placed {
        merged.push((ns, ne));
    }
    *have = merged;
    overlap
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4 "more fragments" flag in the flags/offset field.
    const IPV4_MF: u16 = 0x2000;

    use crate::testutil::ipv4;

    fn ipv6(next: u8, ext: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&((ext.len() + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        h.extend_from_slice(ext);
        h.extend_from_slice(payload);
        h
    }

    fn frag6(next: u8, offset: u32, more: bool, id: u32) -> Vec<u8> {
        let v = ((offset / 8) << 3) as u16 | u16::from(more);
        let mut f = vec![next, 0];
        f.extend_from_slice(&v.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f
    }

    #[test]
    fn ipv4_basic_padding_truncation() {
        let mut p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, 1, 0x4000, b"payload");
        assert!(ipv4_header_checksum_ok(&p));
        p.extend_from_slice(&[0; 6]); // Ethernet padding
        let ip = parse(&p).unwrap();
        assert_eq!(ip.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(ip.dst, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(ip.protocol, 6);
        assert_eq!(&ip.payload[..], b"payload");
        assert!(!ip.truncated && ip.fragment.is_none());
        let cut = &p[..24];
        let ip = parse(cut).unwrap();
        assert!(ip.truncated);
        assert_eq!(&ip.payload[..], b"payl");
    }

    #[test]
    fn ipv4_options_and_errors() {
        let mut p = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 17, 0, 0, b"xy");
        // add 4 bytes of options: IHL 6
        p[0] = 0x46;
        p.splice(20..20, [1, 1, 1, 0]);
        p[2..4].copy_from_slice(&26u16.to_be_bytes());
        assert_eq!(&parse(&p).unwrap().payload[..], b"xy");
        assert_eq!(parse(&[]), Err(IpError::Truncated { needed: 1, len: 0 }));
        assert_eq!(
            parse(&[0x45; 10]),
            Err(IpError::Truncated {
                needed: 20,
                len: 10
            })
        );
        let mut bad = p.clone();
        bad[0] = 0x44;
        assert_eq!(parse(&bad), Err(IpError::BadHeaderLen(16)));
        let mut bad = p.clone();
        bad[0] = 0x4f;
        assert!(matches!(
            parse(&bad),
            Err(IpError::Truncated { needed: 60, .. })
        ));
        let mut bad = p.clone();
        bad[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(
            parse(&bad),
            Err(IpError::BadTotalLen {
                total: 10,
                header: 24
            })
        );
        assert_eq!(parse(&[0x55; 40]), Err(IpError::BadVersion(5)));
        // TSO: total length 0
        let mut tso = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 6, 0, 0, b"big");
        tso[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(&parse(&tso).unwrap().payload[..], b"big");
    }

    #[test]
    fn ipv6_extension_headers() {
        // hop-by-hop (8 bytes) then destination options (16 bytes) then TCP
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[6, 1]);
        ext.extend_from_slice(&[0; 14]);
        let p = ipv6(0, &ext, b"tcp!");
        let ip = parse(&p).unwrap();
        assert_eq!(ip.protocol, 6);
        assert_eq!(&ip.payload[..], b"tcp!");
        assert_eq!(ip.src, "fe80::1".parse::<IpAddr>().unwrap());
        // routing header running past the end
        let p = ipv6(43, &[6, 9, 0, 0], b"");
        assert!(matches!(parse(&p), Err(IpError::ExtensionHeaders(_))));
        // atomic fragment is not a fragment
        let p = ipv6(44, &frag6(6, 0, false, 9), b"abc");
        let ip = parse(&p).unwrap();
        assert!(ip.fragment.is_none());
        assert_eq!(&ip.payload[..], b"abc");
        // no next header
        let p = ipv6(59, &[], b"junk");
        assert!(parse(&p).unwrap().payload.is_empty());
        // an endless chain of hop-by-hop headers
        let mut chain = Vec::new();
        for _ in 0..40 {
            chain.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert!(matches!(
            parse(&ipv6(0, &chain, b"")),
            Err(IpError::ExtensionHeaders(_))
        ));
    }

    fn v4_fragments(payload: &[u8], size: usize, id: u16) -> Vec<Vec<u8>> {
        payload
            .chunks(size)
            .enumerate()
            .map(|(i, c)| {
                let off = (i * size / 8) as u16;
                let more = (i + 1) * size < payload.len();
                ipv4(
                    [10, 0, 0, 1],
                    [10, 0, 0, 2],
                    6,
                    id,
                    off | if more { IPV4_MF } else { 0 },
                    c,
                )
            })
            .collect()
    }

    #[test]
    fn ipv4_fragments_in_and_out_of_order() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let frags = v4_fragments(&payload, 1480, 77);
        assert_eq!(frags.len(), 3);
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            let mut d = Defragmenter::default();
            let mut out = None;
            for (n, &i) in order.iter().enumerate() {
                let ip = parse(&frags[i]).unwrap();
                assert!(ip.fragment.is_some());
                let r = d.process(Timestamp(n as i64), ip);
                if n < 2 {
                    assert!(r.is_none());
                } else {
                    out = r;
                }
            }
            let out = out.expect("complete");
            assert!(matches!(out.payload, Cow::Owned(_)));
            assert_eq!(&out.payload[..], &payload[..]);
            assert_eq!(out.protocol, 6);
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn ipv4_overlap_duplicates_first_wins() {
        let payload = [1u8; 32];
        let mut d = Defragmenter::default();
        let a = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 17, 5, IPV4_MF, &payload[..16]);
        // overlapping fragment at offset 8 with different bytes
        let b = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 17, 5, 1 | IPV4_MF, &[9u8; 16]);
        let c = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 17, 5, 3, &payload[24..]);
        assert!(d.process(Timestamp(0), parse(&a).unwrap()).is_none());
        assert!(d.process(Timestamp(0), parse(&a).unwrap()).is_none());
        assert!(d.process(Timestamp(0), parse(&b).unwrap()).is_none());
        let out = d.process(Timestamp(0), parse(&c).unwrap()).unwrap();
        let mut want = vec![1u8; 16];
        want.extend_from_slice(&[9u8; 8]);
        want.extend_from_slice(&[1u8; 8]);
        assert_eq!(&out.payload[..], &want[..]);
        assert_eq!(d.stats().overlap_bytes, 16 + 8);
    }

    #[test]
    fn ipv4_fragment_bounds_and_timeout() {
        let mut d = Defragmenter::new(DefragConfig {
            max_pending: 2,
            max_bytes: 4096,
            timeout_ns: 1_000,
        });
        // offset beyond 65535
        let big = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 6, 1, 0x1fff, &[0; 16]);
        assert!(d.process(Timestamp(0), parse(&big).unwrap()).is_none());
        assert_eq!(d.stats().inconsistent, 1);
        // more pending than allowed: oldest evicted
        for id in 0..5u16 {
            let f = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 6, id, IPV4_MF, &[0; 8]);
            d.process(Timestamp(i64::from(id)), parse(&f).unwrap());
        }
        assert_eq!(d.pending(), 2);
        assert_eq!(d.stats().evicted, 3);
        // byte budget: a fragment far out would need 8 KiB
        let f = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 6, 99, 1000 | IPV4_MF, &[0; 8]);
        assert!(d.process(Timestamp(10), parse(&f).unwrap()).is_none());
        assert!(d.bytes <= 4096);
        // timeout
        let f = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 6, 100, IPV4_MF, &[0; 8]);
        assert!(d.process(Timestamp(20), parse(&f).unwrap()).is_none());
        assert_eq!(d.pending(), 1);
        d.expire(Timestamp(10_000_000));
        assert_eq!(d.pending(), 0);
        assert!(d.stats().timed_out >= 1);
        // a last fragment that contradicts the known end
        let mut d = Defragmenter::default();
        let a = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 6, 1, 2, &[0; 8]); // last, ends at 24
        let b = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 6, 1, 4 | IPV4_MF, &[0; 8]); // beyond the end
        d.process(Timestamp(0), parse(&a).unwrap());
        assert!(d.process(Timestamp(0), parse(&b).unwrap()).is_none());
        assert_eq!(d.stats().inconsistent, 1);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn ipv6_fragments_with_dest_options_inside() {
        // fragmentable part: destination options (8 bytes) + 2000 bytes of TCP payload
        let mut whole = vec![6, 0, 1, 4, 0, 0, 0, 0];
        whole.extend((0..2000u32).map(|i| i as u8));
        let pieces: Vec<(u32, &[u8])> = whole
            .chunks(800)
            .enumerate()
            .map(|(i, c)| ((i * 800) as u32, c))
            .collect();
        let n = pieces.len();
        let pkts: Vec<Vec<u8>> = pieces
            .iter()
            .enumerate()
            .map(|(i, (off, c))| ipv6(44, &frag6(60, *off, i + 1 < n, 0xdead), c))
            .collect();
        for order in [vec![0, 1, 2], vec![2, 1, 0], vec![1, 0, 2]] {
            let mut d = Defragmenter::default();
            let mut out = None;
            for &i in &order {
                let ip = parse(&pkts[i]).unwrap();
                assert_eq!(ip.fragment.map(|f| f.id), Some(0xdead));
                out = d.process(Timestamp(0), ip);
            }
            let out = out.expect("complete");
            assert_eq!(out.protocol, 6);
            assert_eq!(&out.payload[..], &whole[8..]);
        }
    }
}
