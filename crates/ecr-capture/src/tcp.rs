//! TCP segments, per-connection stream reassembly, a fast port pre-filter and TLS
//! detection.
//!
//! # Reassembly policy
//! - One connection per 4-tuple; both directions map to it. Client and server are
//!   decided by the SYN when it is seen, otherwise by the caller's
//!   `is_server_port` hook, otherwise the lower port is taken as the server.
//! - Each direction is an in-order byte stream. A capture that starts mid-connection
//!   starts the stream at the first sequence number seen (earlier data arriving later
//!   is ignored as old). Sequence numbers wrap (u32 wrapping arithmetic); streams are
//!   numbered by a 64-bit offset from their start.
//! - In-order data is handed out as a slice of the packet (no copy). Only data that
//!   arrives ahead of a hole is copied into a per-direction buffer.
//! - Overlaps and retransmissions: **the first bytes seen for a stream position win**;
//!   later copies are dropped (and counted), whether the earlier copy was already
//!   delivered or is still buffered.
//! - Holes: when a direction's buffered out-of-order data exceeds its bound, when the
//!   total over all connections exceeds its bound, or when the connection ends (FIN,
//!   RST, idle timeout, eviction, end of capture), the hole is reported as a
//!   [`TcpEvent::Gap`] and the stream continues after it, so the layer above can
//!   resynchronise.
//! - Connections are created by a SYN or by a segment carrying data; bare ACKs, FINs
//!   and RSTs of unknown connections are ignored, and stragglers of a connection that
//!   has just closed do not resurrect it.
//! - Memory: bounded per direction, in total, and in the number of connections (the
//!   least recently active connection is evicted, approximately, with a CLOCK queue);
//!   connections idle for longer than the idle timeout (capture time) are closed.
//!
//! Checksums are not verified: captures taken on a sending host with checksum
//! offload carry wrong checksums on every outgoing segment.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ecr_proto::Timestamp;

use crate::ip::PROTO_TCP;
use crate::linklayer::{self, Network};

/// TCP flag bits (the low byte of the flags field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN bit.
    pub const FIN: u8 = 0x01;
    /// SYN bit.
    pub const SYN: u8 = 0x02;
    /// RST bit.
    pub const RST: u8 = 0x04;
    /// PSH bit.
    pub const PSH: u8 = 0x08;
    /// ACK bit.
    pub const ACK: u8 = 0x10;
    /// URG bit.
    pub const URG: u8 = 0x20;

    /// FIN set.
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    /// SYN set.
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    /// RST set.
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    /// ACK set.
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    /// PSH set.
    pub fn psh(self) -> bool {
        self.0 & Self::PSH != 0
    }
}

/// A parsed TCP segment (a checked view: the payload borrows the packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Receive window (unscaled).
    pub window: u16,
    /// Header length in bytes (data offset * 4).
    pub header_len: usize,
    /// The segment's data.
    pub payload: &'a [u8],
}

/// A TCP header that does not fit the captured bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    /// Shorter than the header.
    #[error("TCP segment of {len} bytes is shorter than its header ({needed} bytes)")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// Data offset below 5 words.
    #[error("TCP data offset {0} bytes is below 20")]
    BadDataOffset(usize),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses a TCP header (data offset bounded by the captured bytes) with
/// `etherparse`'s [`etherparse::TcpHeaderSlice`].
pub fn parse_tcp(data: &[u8]) -> Result<TcpSegment<'_>, TcpError> {
    use etherparse::err::tcp::{HeaderError, HeaderSliceError};
    let h = etherparse::TcpHeaderSlice::from_slice(data).map_err(|e| match e {
        HeaderSliceError::Len(l) => TcpError::Truncated {
            needed: l.required_len,
            len: l.len,
        },
        HeaderSliceError::Content(HeaderError::DataOffsetTooSmall { data_offset }) => {
            TcpError::BadDataOffset(usize::from(data_offset) * 4)
        }
    })?;
    let header_len = h.slice().len();
    let flag = |set: bool, bit: u8| if set { bit } else { 0 };
    let flags = flag(h.fin(), TcpFlags::FIN)
        | flag(h.syn(), TcpFlags::SYN)
        | flag(h.rst(), TcpFlags::RST)
        | flag(h.psh(), TcpFlags::PSH)
        | flag(h.ack(), TcpFlags::ACK)
        | flag(h.urg(), TcpFlags::URG)
        | flag(h.ece(), 0x40)
        | flag(h.cwr(), 0x80);
    Ok(TcpSegment {
        src_port: h.source_port(),
        dst_port: h.destination_port(),
        seq: h.sequence_number(),
        ack: h.acknowledgment_number(),
        flags: TcpFlags(flags),
        window: h.window_size(),
        header_len,
        payload: data.get(header_len..).unwrap_or_default(),
    })
}

/// Result of [`peek_tcp_ports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPeek {
    /// A TCP segment between these ports.
    Tcp {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// Certainly not TCP (or not IP at all).
    NotTcp,
    /// Cannot tell cheaply (IP fragment, IPv6 extension headers, unusual link type):
    /// run the full parse.
    NeedsFullParse,
}

/// Extracts the TCP ports of a raw packet with as little work as possible, so the
/// analyzer can skip traffic it does not care about at close to memory speed. Never
/// wrong when it answers `Tcp` or `NotTcp`.
pub fn peek_tcp_ports(linktype: u32, data: &[u8]) -> PortPeek {
    let ip = match linklayer::fast_ip_offset(linktype, data) {
        Some(off) => data.get(off..).unwrap_or_default(),
        None => match linklayer::network_layer(linktype, data) {
            Ok(Network::Ipv4(d)) | Ok(Network::Ipv6(d)) => d,
            Ok(Network::OtherLinkType { .. }) => return PortPeek::NeedsFullParse,
            Ok(Network::NotIp { .. }) | Err(_) => return PortPeek::NotTcp,
        },
    };
    let Some(&first) = ip.first() else {
        return PortPeek::NotTcp;
    };
    let tcp_off = match first >> 4 {
        4 => {
            let (Some(&proto), Some(ff)) = (ip.get(9), be16(ip, 6)) else {
                return PortPeek::NotTcp;
            };
            if proto != PROTO_TCP {
                return PortPeek::NotTcp;
            }
            if ff & 0x3fff != 0 {
                return PortPeek::NeedsFullParse;
            }
            usize::from(first & 0x0f) * 4
        }
        6 => match ip.get(6) {
            Some(&PROTO_TCP) => 40,
            // UDP, ICMPv6 and no-next-header are certainly not TCP.
            Some(17 | 58 | 59) => return PortPeek::NotTcp,
            Some(_) => return PortPeek::NeedsFullParse,
            None => return PortPeek::NotTcp,
        },
        _ => return PortPeek::NotTcp,
    };
    match (be16(ip, tcp_off), be16(ip, tcp_off + 2)) {
        (Some(src), Some(dst)) => PortPeek::Tcp { src, dst },
        _ => PortPeek::NotTcp,
    }
}

/// True when `bytes` start like a TLS record: handshake (0x16), major version 3,
/// minor 0..=4 (SSL 3.0 to TLS 1.3). Used to report HTTPS on a port expected to carry
/// plain HTTP instead of guessing at it.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x16, 0x03, minor, ..] if *minor <= 0x04)
}

// ---------------------------------------------------------------------------
// Reassembly
// ---------------------------------------------------------------------------

/// Identifies a connection for the lifetime of a [`TcpReassembler`].
pub type ConnId = u64;

/// Which way data flows within a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamDir {
    /// From the client (the side that sent the SYN, or the non-server port).
    ClientToServer,
    /// From the server.
    ServerToClient,
}

impl StreamDir {
    /// The other direction of the connection.
    fn other(self) -> Self {
        match self {
            StreamDir::ClientToServer => StreamDir::ServerToClient,
            StreamDir::ServerToClient => StreamDir::ClientToServer,
        }
    }
}

/// One value for each direction of a connection, indexed by [`StreamDir`]: no
/// integer index that could be out of range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerDir<T> {
    /// From the client.
    pub client: T,
    /// From the server.
    pub server: T,
}

impl<T> PerDir<T> {
    /// Both values, the client's first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        [&self.client, &self.server].into_iter()
    }

    /// Both values, mutably, the client's first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        [&mut self.client, &mut self.server].into_iter()
    }
}

impl<T> std::ops::Index<StreamDir> for PerDir<T> {
    type Output = T;
    fn index(&self, d: StreamDir) -> &T {
        match d {
            StreamDir::ClientToServer => &self.client,
            StreamDir::ServerToClient => &self.server,
        }
    }
}

impl<T> std::ops::IndexMut<StreamDir> for PerDir<T> {
    fn index_mut(&mut self, d: StreamDir) -> &mut T {
        match d {
            StreamDir::ClientToServer => &mut self.client,
            StreamDir::ServerToClient => &mut self.server,
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Both directions sent FIN.
    Fin,
    /// A RST was seen.
    Rst,
    /// No segment for longer than the idle timeout (capture time).
    IdleTimeout,
    /// Evicted to respect the connection limit.
    Evicted,
    /// A new SYN reused the 4-tuple.
    Reused,
    /// [`TcpReassembler::flush_all`] at the end of the capture.
    EndOfCapture,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Fin => "fin",
            CloseReason::Rst => "rst",
            CloseReason::IdleTimeout => "idle-timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Reused => "reused",
            CloseReason::EndOfCapture => "end-of-capture",
        })
    }
}

/// What the reassembler reports, in stream order per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEvent<'b> {
    /// A new connection.
    Opened {
        /// Connection id.
        conn: ConnId,
        /// Client address.
        client: SocketAddr,
        /// Server address.
        server: SocketAddr,
        /// Capture time.
        ts: Timestamp,
        /// True when the connection was seen from its SYN (roles are certain).
        syn_seen: bool,
    },
    /// In-order bytes of one direction.
    Data {
        /// Connection id.
        conn: ConnId,
        /// Direction.
        dir: StreamDir,
        /// Capture time of the segment that carried the bytes.
        ts: Timestamp,
        /// Packet number of that segment.
        packet_index: u64,
        /// Offset of `bytes` in the direction's stream (gaps count).
        offset: u64,
        /// The bytes (borrowed from the packet or the reassembly buffer).
        bytes: &'b [u8],
    },
    /// Bytes missing from the capture; the stream continues after them.
    Gap {
        /// Connection id.
        conn: ConnId,
        /// Direction.
        dir: StreamDir,
        /// Capture time at which the hole was given up on.
        ts: Timestamp,
        /// Stream offset where the hole starts.
        offset: u64,
        /// Size of the hole.
        missing_bytes: u64,
    },
    /// A direction sent FIN and every byte before it has been delivered (or reported
    /// missing): its stream is complete.
    Fin {
        /// Connection id.
        conn: ConnId,
        /// Direction.
        dir: StreamDir,
        /// Capture time.
        ts: Timestamp,
    },
    /// The connection is gone; no more events for `conn`.
    Closed {
        /// Connection id.
        conn: ConnId,
        /// Capture time.
        ts: Timestamp,
        /// Why.
        reason: CloseReason,
    },
}

/// Bounds and timeouts of the reassembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Connections tracked at once.
    pub max_connections: usize,
    /// Out-of-order bytes buffered per direction before the hole is skipped.
    pub max_ooo_bytes_per_dir: usize,
    /// Out-of-order bytes buffered over all connections (with
    /// [`OOO_SEG_OVERHEAD`] counted per segment).
    pub max_ooo_bytes_total: usize,
    /// A connection without segments for this long (capture time) is closed. ECR
    /// HTTP requests block until the payment ends, so this is generous.
    pub idle_timeout_ns: i64,
    /// After both FINs, how long to wait for missing bytes before closing anyway.
    pub closing_timeout_ns: i64,
    /// How long segments of a closed connection are ignored rather than starting a
    /// new mid-stream connection.
    pub linger_ns: i64,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_connections: 16_384,
            max_ooo_bytes_per_dir: 1 << 20,
            max_ooo_bytes_total: 32 << 20,
            idle_timeout_ns: 600 * 1_000_000_000,
            closing_timeout_ns: 5 * 1_000_000_000,
            linger_ns: 30 * 1_000_000_000,
        }
    }
}

/// Counters kept by the reassembler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments processed.
    pub segments: u64,
    /// Connections opened.
    pub connections: u64,
    /// Bytes delivered in `Data` events.
    pub bytes_delivered: u64,
    /// Bytes dropped because they had already been seen (retransmissions, overlaps).
    pub duplicate_bytes: u64,
    /// Segments that arrived ahead of a hole.
    pub out_of_order_segments: u64,
    /// Holes reported.
    pub gaps: u64,
    /// Bytes in reported holes.
    pub gap_bytes: u64,
    /// Connections closed by eviction.
    pub evicted: u64,
    /// Holes given up before the end because out-of-order data reached
    /// [`TcpConfig::max_ooo_bytes_per_dir`] or [`TcpConfig::max_ooo_bytes_total`].
    pub ooo_limit_skips: u64,
    /// Connections closed by the idle timeout.
    pub timed_out: u64,
    /// Segments ignored (bare ACK/FIN/RST of unknown or just-closed connections).
    pub ignored_segments: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
}

impl ConnKey {
    fn new(a: (IpAddr, u16), b: (IpAddr, u16)) -> Self {
        if a <= b {
            ConnKey { lo: a, hi: b }
        } else {
            ConnKey { lo: b, hi: a }
        }
    }
}

#[derive(Debug)]
struct OooSeg {
    ts: Timestamp,
    packet_index: u64,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Half {
    /// `base_seq` is valid (the stream has a start).
    init: bool,
    /// Sequence number of stream offset 0.
    base_seq: u32,
    /// ISN from the SYN, when seen.
    isn: Option<u32>,
    /// Next stream offset to deliver.
    pos: u64,
    /// Out-of-order data by stream offset; non-overlapping.
    ooo: BTreeMap<u64, OooSeg>,
    ooo_bytes: usize,
    /// Stream offset of the FIN.
    fin_at: Option<u64>,
    fin_done: bool,
}

impl Half {
    /// Stream offset of sequence number `seq` (may be negative: before the start).
    fn offset_of(&self, seq: u32) -> i64 {
        let next = self.base_seq.wrapping_add(self.pos as u32);
        self.pos as i64 + i64::from(seq.wrapping_sub(next) as i32)
    }
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    client: SocketAddr,
    halves: PerDir<Half>,
    last_ts: Timestamp,
    closing_since: Option<Timestamp>,
}

/// Shared context of one `process` call (avoids long argument lists).
struct Ctx<'c> {
    cfg: &'c TcpConfig,
    stats: &'c mut TcpStats,
    total_ooo: &'c mut usize,
    conn: ConnId,
    ts: Timestamp,
}

/// Per-connection TCP stream reassembler. See the module documentation for the
/// policy. Events are passed to a callback so that in-order data can be lent
/// straight from the packet.
pub struct TcpReassembler {
    cfg: TcpConfig,
    is_server_port: Box<dyn Fn(u16) -> bool + Send>,
    /// foldhash: a fast hasher, seeded per process (addresses and ports come from
    /// the capture, so not an unseeded one).
    conns: foldhash::HashMap<ConnKey, Conn>,
    /// CLOCK queue for eviction: (key, id, last_ts when queued).
    clock: VecDeque<(ConnKey, ConnId, Timestamp)>,
    /// Recently closed connections: key -> close time.
    closed: foldhash::HashMap<ConnKey, Timestamp>,
    next_id: ConnId,
    total_ooo: usize,
    last_sweep: Option<Timestamp>,
    stats: TcpStats,
}

impl fmt::Debug for TcpReassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpReassembler")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TcpReassembler {
    /// A reassembler. `is_server_port` says which ports are servers (e.g. 9001 and
    /// 9002), used to tell client from server when the SYN was not captured.
    pub fn new(cfg: TcpConfig, is_server_port: impl Fn(u16) -> bool + Send + 'static) -> Self {
        TcpReassembler {
            cfg,
            is_server_port: Box::new(is_server_port),
            conns: Default::default(),
            clock: VecDeque::new(),
            closed: Default::default(),
            next_id: 1,
            total_ooo: 0,
            last_sweep: None,
            stats: TcpStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TcpStats {
        self.stats
    }

    /// Connections currently tracked.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Out-of-order bytes currently buffered over all connections, with
    /// [`OOO_SEG_OVERHEAD`] per segment.
    pub fn buffered_bytes(&self) -> usize {
        self.total_ooo
    }

    /// Processes one TCP segment carried from `src` to `dst`, calling `on_event` for
    /// everything that results (possibly for other connections too, when timeouts
    /// expire).
    pub fn process<F>(
        &mut self,
        ts: Timestamp,
        packet_index: u64,
        src: IpAddr,
        dst: IpAddr,
        seg: &TcpSegment<'_>,
        on_event: &mut F,
    ) where
        F: FnMut(TcpEvent<'_>),
    {
        self.stats.segments += 1;
        self.sweep(ts, on_event);
        let src_ep = (src, seg.src_port);
        let dst_ep = (dst, seg.dst_port);
        let key = ConnKey::new(src_ep, dst_ep);
        let flags = seg.flags;
        let fresh_syn = flags.syn() && !flags.ack();

        // A new SYN on a connection that already carried data starts a new one.
        if fresh_syn {
            let reused = self.conns.get(&key).is_some_and(|c| {
                let h = &c.halves.client;
                c.client != SocketAddr::from(src_ep)
                    || h.isn.is_some_and(|isn| isn != seg.seq)
                    || (h.isn.is_none() && h.init)
            });
            if reused {
                self.close(key, ts, CloseReason::Reused, on_event);
                self.closed.remove(&key);
            }
        }

        if !self.conns.contains_key(&key) {
            if let Some(&closed_at) = self.closed.get(&key) {
                if !fresh_syn && ts - closed_at <= self.cfg.linger_ns {
                    self.stats.ignored_segments += 1;
                    return;
                }
                self.closed.remove(&key);
            }
            if flags.rst() || (!flags.syn() && seg.payload.is_empty()) {
                self.stats.ignored_segments += 1;
                return;
            }
            self.open(key, src_ep, dst_ep, seg, ts, on_event);
        }

        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.last_ts = ts;
        let dir = if conn.client == SocketAddr::from(src_ep) {
            StreamDir::ClientToServer
        } else {
            StreamDir::ServerToClient
        };
        let conn_id = conn.id;
        let mut ctx = Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            total_ooo: &mut self.total_ooo,
            conn: conn_id,
            ts,
        };
        let half = &mut conn.halves[dir];

        let mut data_seq = seg.seq;
        if flags.syn() {
            data_seq = seg.seq.wrapping_add(1);
            if half.isn.is_none() && half.pos == 0 && half.ooo.is_empty() {
                half.isn = Some(seg.seq);
                half.base_seq = data_seq;
                half.init = true;
            }
        }
        if !half.init {
            half.init = true;
            half.base_seq = data_seq;
        }
        let off = half.offset_of(data_seq);
        // The peer acknowledges the other direction's bytes up to `seg.ack` and sends
        // data of its own (an answer): bytes below the ack that the capture does not
        // hold were delivered but not captured, so the hole is reported now instead
        // of when the connection ends. This keeps requests and responses in their
        // real order around a lost segment. A bare ACK is not enough: a capture
        // point may see it before data that was merely reordered on the way.
        if flags.ack() && !seg.payload.is_empty() {
            let other_dir = dir.other();
            acked(
                &mut conn.halves[other_dir],
                &mut ctx,
                other_dir,
                seg.ack,
                on_event,
            );
        }
        let half = &mut conn.halves[dir];
        if !seg.payload.is_empty() {
            on_data(
                half,
                &mut ctx,
                dir,
                packet_index,
                off,
                seg.payload,
                on_event,
            );
        }
        if flags.fin() && half.fin_at.is_none() {
            let end = off.saturating_add(seg.payload.len() as i64).max(0) as u64;
            half.fin_at = Some(end.max(half.pos));
        }
        check_fin(half, &mut ctx, dir, on_event);

        if flags.rst() {
            self.close(key, ts, CloseReason::Rst, on_event);
            return;
        }
        let both_fin = conn.halves.iter().all(|h| h.fin_at.is_some());
        if both_fin {
            if conn.halves.iter().all(|h| h.fin_done) {
                self.close(key, ts, CloseReason::Fin, on_event);
            } else if conn.closing_since.is_none() {
                conn.closing_since = Some(ts);
            }
        }
    }

    /// Closes every connection (reporting remaining holes) at the end of a capture.
    pub fn flush_all<F>(&mut self, on_event: &mut F)
    where
        F: FnMut(TcpEvent<'_>),
    {
        let mut keys: Vec<(ConnId, ConnKey, Timestamp)> = self
            .conns
            .iter()
            .map(|(k, c)| (c.id, *k, c.last_ts))
            .collect();
        keys.sort_unstable_by_key(|&(id, _, _)| id);
        for (_, key, ts) in keys {
            self.close(key, ts, CloseReason::EndOfCapture, on_event);
        }
        self.clock.clear();
        self.closed.clear();
    }

    fn open<F>(
        &mut self,
        key: ConnKey,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        seg: &TcpSegment<'_>,
        ts: Timestamp,
        on_event: &mut F,
    ) where
        F: FnMut(TcpEvent<'_>),
    {
        while self.conns.len() >= self.cfg.max_connections.max(1) {
            if !self.evict_one(ts, on_event) {
                break;
            }
        }
        let flags = seg.flags;
        let src_is_client = if flags.syn() {
            !flags.ack()
        } else {
            match ((self.is_server_port)(src.1), (self.is_server_port)(dst.1)) {
                (false, true) => true,
                (true, false) => false,
                _ => src.1 >= dst.1,
            }
        };
        let (client, server) = if src_is_client {
            (src, dst)
        } else {
            (dst, src)
        };
        let id = self.next_id;
        self.next_id += 1;
        self.stats.connections += 1;
        self.conns.insert(
            key,
            Conn {
                id,
                client: SocketAddr::from(client),
                halves: PerDir::default(),
                last_ts: ts,
                closing_since: None,
            },
        );
        self.clock.push_back((key, id, ts));
        if self.clock.len() > self.cfg.max_connections.saturating_mul(2).max(16) {
            let conns = &self.conns;
            self.clock
                .retain(|(k, id, _)| conns.get(k).is_some_and(|c| c.id == *id));
        }
        on_event(TcpEvent::Opened {
            conn: id,
            client: SocketAddr::from(client),
            server: SocketAddr::from(server),
            ts,
            syn_seen: flags.syn(),
        });
    }

    /// Evicts the (approximately) least recently active connection.
    fn evict_one<F>(&mut self, ts: Timestamp, on_event: &mut F) -> bool
    where
        F: FnMut(TcpEvent<'_>),
    {
        // Each live connection is re-queued at most once per call, so this ends.
        let mut budget = self.clock.len().saturating_mul(2) + 1;
        while let Some((key, id, queued_ts)) = self.clock.pop_front() {
            budget -= 1;
            let Some(conn) = self.conns.get(&key).filter(|c| c.id == id) else {
                continue;
            };
            if conn.last_ts > queued_ts && budget > 0 {
                let last = conn.last_ts;
                self.clock.push_back((key, id, last));
                continue;
            }
            self.stats.evicted += 1;
            self.close(key, ts, CloseReason::Evicted, on_event);
            return true;
        }
        // The queue lost track (should not happen): evict anything.
        if let Some(key) = self.conns.keys().next().copied() {
            self.stats.evicted += 1;
            self.close(key, ts, CloseReason::Evicted, on_event);
            return true;
        }
        false
    }

    /// Expires idle and closing connections and old tombstones, at most once per
    /// second of capture time.
    fn sweep<F>(&mut self, now: Timestamp, on_event: &mut F)
    where
        F: FnMut(TcpEvent<'_>),
    {
        if self
            .last_sweep
            .is_some_and(|t| now - t < 1_000_000_000 && now >= t)
        {
            return;
        }
        self.last_sweep = Some(now);
        let cfg = self.cfg;
        let mut expired: Vec<(ConnId, ConnKey, CloseReason)> = self
            .conns
            .iter()
            .filter_map(|(k, c)| {
                if now - c.last_ts > cfg.idle_timeout_ns {
                    Some((c.id, *k, CloseReason::IdleTimeout))
                } else if c
                    .closing_since
                    .is_some_and(|t| now - t > cfg.closing_timeout_ns)
                {
                    Some((c.id, *k, CloseReason::Fin))
                } else {
                    None
                }
            })
            .collect();
        expired.sort_unstable_by_key(|&(id, _, _)| id);
        for (_, key, reason) in expired {
            if reason == CloseReason::IdleTimeout {
                self.stats.timed_out += 1;
            }
            self.close(key, now, reason, on_event);
        }
        self.closed.retain(|_, t| now - *t <= cfg.linger_ns);
    }

    /// Reports remaining holes, emits `Closed` and forgets the connection.
    fn close<F>(&mut self, key: ConnKey, ts: Timestamp, reason: CloseReason, on_event: &mut F)
    where
        F: FnMut(TcpEvent<'_>),
    {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        let mut ctx = Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            total_ooo: &mut self.total_ooo,
            conn: conn.id,
            ts,
        };
        for dir in [StreamDir::ClientToServer, StreamDir::ServerToClient] {
            let half = &mut conn.halves[dir];
            flush_half(half, &mut ctx, dir, on_event);
            if let Some(fin) = half.fin_at {
                if fin > half.pos {
                    gap_to(half, &mut ctx, dir, fin, on_event);
                }
            }
            check_fin(half, &mut ctx, dir, on_event);
        }
        on_event(TcpEvent::Closed {
            conn: conn.id,
            ts,
            reason,
        });
        if self.closed.len() < self.cfg.max_connections.max(1) {
            self.closed.insert(key, ts);
        }
    }
}

/// Emits a `Fin` event once the direction's stream has reached its FIN.
fn check_fin<F>(half: &mut Half, ctx: &mut Ctx<'_>, dir: StreamDir, on_event: &mut F)
where
    F: FnMut(TcpEvent<'_>),
{
    if !half.fin_done && half.fin_at.is_some_and(|f| half.pos >= f) {
        half.fin_done = true;
        on_event(TcpEvent::Fin {
            conn: ctx.conn,
            dir,
            ts: ctx.ts,
        });
    }
}

fn emit_data<F>(
    ctx: &mut Ctx<'_>,
    dir: StreamDir,
    ts: Timestamp,
    packet_index: u64,
    offset: u64,
    bytes: &[u8],
    on_event: &mut F,
) where
    F: FnMut(TcpEvent<'_>),
{
    if bytes.is_empty() {
        return;
    }
    ctx.stats.bytes_delivered += bytes.len() as u64;
    on_event(TcpEvent::Data {
        conn: ctx.conn,
        dir,
        ts,
        packet_index,
        offset,
        bytes,
    });
}

/// Bytes of bookkeeping counted per buffered out-of-order segment on top of its
/// data (tree node, vector, allocator), so that a flood of one-byte segments is
/// bounded by [`TcpConfig::max_ooo_bytes_total`] too.
pub const OOO_SEG_OVERHEAD: usize = 96;

fn seg_cost(len: usize) -> usize {
    len.saturating_add(OOO_SEG_OVERHEAD)
}

/// Delivers buffered segments that start at or before `half.pos`.
fn drain<F>(half: &mut Half, ctx: &mut Ctx<'_>, dir: StreamDir, on_event: &mut F)
where
    F: FnMut(TcpEvent<'_>),
{
    while let Some(entry) = half.ooo.first_entry() {
        let start = *entry.key();
        if start > half.pos {
            break;
        }
        let seg = entry.remove();
        half.ooo_bytes = half.ooo_bytes.saturating_sub(seg.data.len());
        *ctx.total_ooo = ctx.total_ooo.saturating_sub(seg_cost(seg.data.len()));
        let end = start + seg.data.len() as u64;
        if end > half.pos {
            let skip = half.pos.saturating_sub(start) as usize;
            let bytes = seg.data.get(skip..).unwrap_or_default();
            emit_data(
                ctx,
                dir,
                seg.ts,
                seg.packet_index,
                half.pos,
                bytes,
                on_event,
            );
            half.pos = end;
        }
    }
}

/// Most bytes an ACK may run ahead of the delivered stream and still be believed
/// (beyond that it is taken for garbage or a sequence-number mix-up).
const MAX_ACK_AHEAD: u64 = 1 << 24;

/// The peer acknowledged this half up to sequence number `ack`: report holes below
/// it at once and deliver the buffered data after them.
fn acked<F>(half: &mut Half, ctx: &mut Ctx<'_>, dir: StreamDir, ack: u32, on_event: &mut F)
where
    F: FnMut(TcpEvent<'_>),
{
    if !half.init {
        return;
    }
    let mut upto = half.offset_of(ack);
    // The FIN takes a sequence number of its own, and the SYN one before offset 0.
    if let Some(fin) = half.fin_at {
        upto = upto.min(fin as i64);
    }
    let Ok(upto) = u64::try_from(upto) else {
        return;
    };
    if upto <= half.pos || upto - half.pos > MAX_ACK_AHEAD {
        return;
    }
    while half.pos < upto {
        match half.ooo.keys().next().copied() {
            Some(first) if first <= half.pos => drain(half, ctx, dir, on_event),
            Some(first) if first < upto => {
                gap_to(half, ctx, dir, first, on_event);
                drain(half, ctx, dir, on_event);
            }
            _ => {
                gap_to(half, ctx, dir, upto, on_event);
                // Buffered data after the acknowledged point stays buffered.
                drain(half, ctx, dir, on_event);
            }
        }
    }
}

/// Reports the hole from `half.pos` to `to` and moves past it.
fn gap_to<F>(half: &mut Half, ctx: &mut Ctx<'_>, dir: StreamDir, to: u64, on_event: &mut F)
where
    F: FnMut(TcpEvent<'_>),
{
    if to <= half.pos {
        return;
    }
    let missing = to - half.pos;
    ctx.stats.gaps += 1;
    ctx.stats.gap_bytes += missing;
    on_event(TcpEvent::Gap {
        conn: ctx.conn,
        dir,
        ts: ctx.ts,
        offset: half.pos,
        missing_bytes: missing,
    });
    half.pos = to;
}

/// Skips the first hole (reporting it) and delivers what follows it.
fn skip_first_hole<F>(half: &mut Half, ctx: &mut Ctx<'_>, dir: StreamDir, on_event: &mut F)
where
    F: FnMut(TcpEvent<'_>),
{
    if let Some(&first) = half.ooo.keys().next() {
        gap_to(half, ctx, dir, first, on_event);
        drain(half, ctx, dir, on_event);
    }
}

/// Delivers everything buffered, reporting every hole.
fn flush_half<F>(half: &mut Half, ctx: &mut Ctx<'_>, dir: StreamDir, on_event: &mut F)
where
    F: FnMut(TcpEvent<'_>),
{
    while !half.ooo.is_empty() {
        skip_first_hole(half, ctx, dir, on_event);
    }
}

/// Handles the payload of one segment at stream offset `off`.
fn on_data<F>(
    half: &mut Half,
    ctx: &mut Ctx<'_>,
    dir: StreamDir,
    packet_index: u64,
    off: i64,
    payload: &[u8],
    on_event: &mut F,
) where
    F: FnMut(TcpEvent<'_>),
{
    let len = payload.len() as i64;
    let end = off.saturating_add(len);
    let pos = half.pos as i64;
    if end <= pos {
        ctx.stats.duplicate_bytes += payload.len() as u64;
        return;
    }
    if off > pos {
        ctx.stats.out_of_order_segments += 1;
        let (off, end) = (off as u64, end as u64);
        if *ctx.total_ooo + seg_cost(payload.len()) > ctx.cfg.max_ooo_bytes_total {
            // Over the global budget: give up on this direction's holes now.
            ctx.stats.ooo_limit_skips += 1;
            flush_half(half, ctx, dir, on_event);
            if off > half.pos {
                gap_to(half, ctx, dir, off, on_event);
            }
            deliver_in_order(half, ctx, dir, packet_index, off, end, payload, on_event);
            return;
        }
        buffer(half, ctx, packet_index, off, payload);
        while half.ooo_bytes > ctx.cfg.max_ooo_bytes_per_dir {
            ctx.stats.ooo_limit_skips += 1;
            skip_first_hole(half, ctx, dir, on_event);
        }
        return;
    }
    // Already delivered bytes (possibly from before the stream start) are dropped.
    let skip = (pos - off) as u64;
    ctx.stats.duplicate_bytes += skip;
    let payload = payload
        .get(usize::try_from(skip).unwrap_or(usize::MAX)..)
        .unwrap_or_default();
    deliver_in_order(
        half,
        ctx,
        dir,
        packet_index,
        pos as u64,
        end as u64,
        payload,
        on_event,
    );
}

/// Delivers `payload` (covering `[off, end)`, with `off <= half.pos < end`),
/// interleaving buffered data that was seen first.
#[allow(clippy::too_many_arguments)]
fn deliver_in_order<F>(
    half: &mut Half,
    ctx: &mut Ctx<'_>,
    dir: StreamDir,
    packet_index: u64,
    off: u64,
    end: u64,
    payload: &[u8],
    on_event: &mut F,
) where
    F: FnMut(TcpEvent<'_>),
{
    let start = half.pos;
    let mut emitted = 0u64;
    loop {
        drain(half, ctx, dir, on_event);
        if half.pos >= end {
            break;
        }
        let limit = match half.ooo.keys().next() {
            Some(&b) if b < end => b,
            _ => end,
        };
        let from = half.pos.saturating_sub(off) as usize;
        let to = limit.saturating_sub(off) as usize;
        let bytes = payload.get(from..to).unwrap_or_default();
        emit_data(ctx, dir, ctx.ts, packet_index, half.pos, bytes, on_event);
        emitted += bytes.len() as u64;
        half.pos = limit;
    }
    // Where buffered data was seen first, this segment's copy was dropped.
    ctx.stats.duplicate_bytes += end.saturating_sub(start).saturating_sub(emitted);
    drain(half, ctx, dir, on_event);
}

/// Buffers the parts of `[off, off+len)` not already buffered (first seen wins).
fn buffer(half: &mut Half, ctx: &mut Ctx<'_>, packet_index: u64, off: u64, payload: &[u8]) {
    let end = off + payload.len() as u64;
    let mut cursor = off;
    let mut pieces: Vec<(u64, u64)> = Vec::new();
    // The segment that may start before `off` and reach into it.
    let before = half
        .ooo
        .range(..off)
        .next_back()
        .map(|(&s, seg)| s + seg.data.len() as u64);
    if let Some(e) = before {
        cursor = cursor.max(e.min(end));
    }
    for (&s, seg) in half.ooo.range(off..end) {
        if s > cursor {
            pieces.push((cursor, s));
        }
        cursor = cursor.max(s + seg.data.len() as u64);
        if cursor >= end {
            break;
        }
    }
    if cursor < end {
        pieces.push((cursor, end));
    }
    let new_bytes: u64 = pieces.iter().map(|(s, e)| e - s).sum();
    ctx.stats.duplicate_bytes += payload.len() as u64 - new_bytes;
    for (s, e) in pieces {
        let data = payload
            .get((s - off) as usize..(e - off) as usize)
            .unwrap_or_default()
            .to_vec();
        half.ooo_bytes += data.len();
        *ctx.total_ooo += seg_cost(data.len());
        half.ooo.insert(
            s,
            OooSeg {
                ts: ctx.ts,
                packet_index,
                data,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn per_dir_is_indexed_by_direction() {
        let mut p = PerDir {
            client: 1,
            server: 2,
        };
        assert_eq!(
            (p[StreamDir::ClientToServer], p[StreamDir::ServerToClient]),
            (1, 2)
        );
        p[StreamDir::ServerToClient] += 10;
        for v in p.iter_mut() {
            *v *= 2;
        }
        assert_eq!(p.iter().copied().collect::<Vec<_>>(), [2, 24]);
        assert_eq!(
            PerDir::<bool>::default(),
            PerDir {
                client: false,
                server: false
            }
        );
    }

    const C: [u8; 4] = [10, 0, 0, 1];
    const S: [u8; 4] = [10, 0, 0, 2];

    fn seg(src_port: u16, dst_port: u16, seq: u32, flags: u8, payload: &[u8]) -> TcpSegment<'_> {
        TcpSegment {
            src_port,
            dst_port,
            seq,
            ack: 0,
            flags: TcpFlags(flags),
            window: 0,
            header_len: 20,
            payload,
        }
    }

    #[derive(Default)]
    struct Out {
        streams: HashMap<(ConnId, StreamDir), Vec<u8>>,
        next_off: HashMap<(ConnId, StreamDir), u64>,
        events: Vec<String>,
        gaps: u64,
    }

    impl Out {
        fn on(&mut self, e: TcpEvent<'_>) {
            match e {
                TcpEvent::Data {
                    conn,
                    dir,
                    offset,
                    bytes,
                    ..
                } => {
                    let next = self.next_off.entry((conn, dir)).or_default();
                    assert_eq!(offset, *next, "offsets are contiguous");
                    *next += bytes.len() as u64;
                    self.streams
                        .entry((conn, dir))
                        .or_default()
                        .extend_from_slice(bytes);
                }
                TcpEvent::Gap {
                    missing_bytes,
                    conn,
                    dir,
                    offset,
                    ..
                } => {
                    let next = self.next_off.entry((conn, dir)).or_default();
                    assert_eq!(offset, *next, "gap offsets are contiguous");
                    *next += missing_bytes;
                    self.gaps += missing_bytes;
                    self.events
                        .push(format!("gap {conn} {dir:?} {missing_bytes}"));
                }
                TcpEvent::Opened {
                    conn,
                    client,
                    server,
                    syn_seen,
                    ..
                } => self
                    .events
                    .push(format!("open {conn} {client} {server} {syn_seen}")),
                TcpEvent::Fin { conn, dir, .. } => self.events.push(format!("fin {conn} {dir:?}")),
                TcpEvent::Closed { conn, reason, .. } => {
                    self.events.push(format!("closed {conn} {reason}"))
                }
            }
        }
        fn stream(&self, conn: ConnId, dir: StreamDir) -> &[u8] {
            self.streams.get(&(conn, dir)).map_or(&[], |v| v)
        }
    }

    fn reasm() -> TcpReassembler {
        TcpReassembler::new(TcpConfig::default(), |p| p == 9001 || p == 9002)
    }

    fn feed(r: &mut TcpReassembler, out: &mut Out, from_client: bool, s: &TcpSegment<'_>) {
        let (src, dst) = if from_client { (C, S) } else { (S, C) };
        r.process(
            Timestamp(0),
            1,
            IpAddr::from(src),
            IpAddr::from(dst),
            s,
            &mut |e| out.on(e),
        );
    }

    #[test]
    fn parse_header_bounds() {
        let mut h = vec![
            0x23, 0x29, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 2, 0x60, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ];
        h.extend_from_slice(&[2, 4, 5, 0xb4]);
        h.extend_from_slice(b"data");
        let s = parse_tcp(&h).unwrap();
        assert_eq!(
            (s.src_port, s.dst_port, s.seq, s.ack, s.header_len),
            (9001, 8080, 1, 2, 24)
        );
        assert!(s.flags.ack() && s.flags.psh() && !s.flags.syn());
        assert_eq!(s.payload, b"data");
        h[12] = 0x40;
        assert_eq!(parse_tcp(&h), Err(TcpError::BadDataOffset(16)));
        h[12] = 0xf0;
        assert_eq!(
            parse_tcp(&h),
            Err(TcpError::Truncated {
                needed: 60,
                len: 28
            })
        );
        assert!(parse_tcp(&h[..19]).is_err());
    }

    #[test]
    fn tls_detection() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x03]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x05]));
        assert!(!looks_like_tls(b"POST / HTTP/1.1"));
        assert!(!looks_like_tls(&[0x16, 0x03]));
    }

    #[test]
    fn port_peek() {
        let ip = crate::testutil::ipv4_tcp(C, S, 40000, 9001, 1, 0x18, b"x");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        assert_eq!(
            peek_tcp_ports(1, &eth),
            PortPeek::Tcp {
                src: 40000,
                dst: 9001
            }
        );
        assert_eq!(
            peek_tcp_ports(101, &ip),
            PortPeek::Tcp {
                src: 40000,
                dst: 9001
            }
        );
        let mut vlan = vec![0u8; 12];
        vlan.extend_from_slice(&[0x81, 0x00, 0, 1, 0x08, 0x00]);
        vlan.extend_from_slice(&ip);
        assert_eq!(
            peek_tcp_ports(1, &vlan),
            PortPeek::Tcp {
                src: 40000,
                dst: 9001
            }
        );
        let mut udp = ip.clone();
        udp[9] = 17;
        assert_eq!(peek_tcp_ports(101, &udp), PortPeek::NotTcp);
        let mut frag = ip.clone();
        frag[6] = 0x20;
        assert_eq!(peek_tcp_ports(101, &frag), PortPeek::NeedsFullParse);
        assert_eq!(peek_tcp_ports(189, b"usb"), PortPeek::NeedsFullParse);
        assert_eq!(peek_tcp_ports(1, &[0; 5]), PortPeek::NotTcp);
        assert_eq!(peek_tcp_ports(101, &[0x45, 0, 0]), PortPeek::NotTcp);
    }

    #[test]
    fn handshake_data_both_ways_fin() {
        let mut r = reasm();
        let mut o = Out::default();
        let isn_c = 1000u32;
        let isn_s = 5000u32;
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn_c, TcpFlags::SYN, b""),
        );
        feed(
            &mut r,
            &mut o,
            false,
            &seg(9001, 40000, isn_s, TcpFlags::SYN | TcpFlags::ACK, b""),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn_c + 1, TcpFlags::ACK, b"hello "),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn_c + 7, TcpFlags::ACK, b"world"),
        );
        feed(
            &mut r,
            &mut o,
            false,
            &seg(9001, 40000, isn_s + 1, TcpFlags::ACK, b"hi"),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn_c + 12, TcpFlags::ACK | TcpFlags::FIN, b""),
        );
        feed(
            &mut r,
            &mut o,
            false,
            &seg(9001, 40000, isn_s + 3, TcpFlags::ACK | TcpFlags::FIN, b"!"),
        );
        // straggling ACK after close: ignored, no new connection
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn_c + 13, TcpFlags::ACK, b""),
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"hello world");
        assert_eq!(o.stream(1, StreamDir::ServerToClient), b"hi!");
        assert_eq!(
            o.events,
            vec![
                "open 1 10.0.0.1:40000 10.0.0.2:9001 true",
                "fin 1 ClientToServer",
                "fin 1 ServerToClient",
                "closed 1 fin"
            ]
        );
        assert_eq!(r.connections(), 0);
    }

    #[test]
    fn mid_connection_start_uses_server_port_hook() {
        let mut r = reasm();
        let mut o = Out::default();
        // first packet seen is the server's response
        feed(
            &mut r,
            &mut o,
            false,
            &seg(9001, 40000, 77, TcpFlags::ACK, b"HTTP/1.1 200 OK\r\n"),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 5, TcpFlags::ACK, b"POST /"),
        );
        assert_eq!(o.events[0], "open 1 10.0.0.1:40000 10.0.0.2:9001 false");
        assert_eq!(
            o.stream(1, StreamDir::ServerToClient),
            b"HTTP/1.1 200 OK\r\n"
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"POST /");
        // no hook match: lower port is the server
        let mut r = TcpReassembler::new(TcpConfig::default(), |_| false);
        let mut o = Out::default();
        feed(
            &mut r,
            &mut o,
            true,
            &seg(50000, 80, 1, TcpFlags::ACK, b"x"),
        );
        assert_eq!(o.events[0], "open 1 10.0.0.1:50000 10.0.0.2:80 false");
        // bare ACK of unknown connection does not open one
        feed(&mut r, &mut o, true, &seg(50001, 80, 1, TcpFlags::ACK, b""));
        assert_eq!(r.connections(), 1);
    }

    #[test]
    fn segment_reaching_back_before_the_stream_start() {
        // Found by fuzzing: mid-stream start, then a segment that starts before the
        // first seen byte and extends past what was delivered.
        let mut r = reasm();
        let mut o = Out::default();
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 100, TcpFlags::ACK, b"cd"),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 98, TcpFlags::ACK, b"abcdef"),
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"cdef");
    }

    #[test]
    fn hole_acknowledged_by_an_answer_is_reported_at_once() {
        let mut r = reasm();
        let mut out = Out::default();
        // Mid-connection start: client bytes 0..4, then 4..8 is lost from the capture.
        feed(
            &mut r,
            &mut out,
            true,
            &seg(40000, 9001, 1000, 0x18, b"req1"),
        );
        // A bare ACK past the hole is not enough (the data may just be reordered).
        let mut ack = seg(9001, 40000, 5000, 0x10, b"");
        ack.ack = 1008;
        feed(&mut r, &mut out, false, &ack);
        assert_eq!(out.gaps, 0);
        // An answer that acknowledges the lost bytes: the hole is reported now.
        let mut answer = seg(9001, 40000, 5000, 0x18, b"resp2");
        answer.ack = 1008;
        feed(&mut r, &mut out, false, &answer);
        assert_eq!(out.gaps, 4);
        // What follows the hole is delivered in order at once.
        feed(
            &mut r,
            &mut out,
            true,
            &seg(40000, 9001, 1008, 0x18, b"req3"),
        );
        assert_eq!(out.stream(1, StreamDir::ClientToServer), b"req1req3");
    }

    #[test]
    fn wraparound() {
        let mut r = reasm();
        let mut o = Out::default();
        let isn = u32::MAX - 3;
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn, TcpFlags::SYN, b""),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn.wrapping_add(1), TcpFlags::ACK, b"abcdef"),
        );
        // out of order across the wrap
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn.wrapping_add(13), TcpFlags::ACK, b"mno"),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, isn.wrapping_add(7), TcpFlags::ACK, b"ghijkl"),
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"abcdefghijklmno");
    }

    #[test]
    fn overlap_first_seen_wins() {
        let mut r = reasm();
        let mut o = Out::default();
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 0, TcpFlags::SYN, b""),
        );
        // buffered first: "XYZ" at offset 4..7
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 5, TcpFlags::ACK, b"XYZ"),
        );
        // then an in-order segment that covers 0..10 with other bytes at 4..7
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 1, TcpFlags::ACK, b"0123456789"),
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"0123XYZ789");
        // retransmission with different bytes is dropped
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 1, TcpFlags::ACK, b"abcdefghijkl"),
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"0123XYZ789kl");
        assert!(r.stats().duplicate_bytes >= 10);
    }

    #[test]
    fn gap_reported_on_fin_and_overflow() {
        let mut r = reasm();
        let mut o = Out::default();
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 0, TcpFlags::SYN, b""),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 1, TcpFlags::ACK, b"aaaa"),
        );
        // 4 bytes lost, then data and FIN
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 9, TcpFlags::ACK | TcpFlags::FIN, b"cccc"),
        );
        feed(
            &mut r,
            &mut o,
            false,
            &seg(9001, 40000, 0, TcpFlags::SYN | TcpFlags::ACK, b""),
        );
        feed(
            &mut r,
            &mut o,
            false,
            &seg(9001, 40000, 1, TcpFlags::ACK | TcpFlags::FIN, b""),
        );
        // both FINs but a hole: waits for the closing timeout
        assert_eq!(r.connections(), 1);
        r.flush_all(&mut |e| o.on(e));
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"aaaacccc");
        assert!(
            o.events.contains(&"gap 1 ClientToServer 4".to_string()),
            "{:?}",
            o.events
        );
        assert_eq!(o.events.last().unwrap(), "closed 1 end-of-capture");

        // per-direction overflow
        let cfg = TcpConfig {
            max_ooo_bytes_per_dir: 100,
            ..TcpConfig::default()
        };
        let mut r = TcpReassembler::new(cfg, |p| p == 9001);
        let mut o = Out::default();
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 0, TcpFlags::SYN, b""),
        );
        let block = [b'z'; 60];
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 11, TcpFlags::ACK, &block),
        );
        assert!(o.stream(1, StreamDir::ClientToServer).is_empty());
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 71, TcpFlags::ACK, &block),
        );
        assert_eq!(o.events[1], "gap 1 ClientToServer 10");
        assert_eq!(o.stream(1, StreamDir::ClientToServer).len(), 120);
        assert_eq!(r.buffered_bytes(), 0);
        // late arrival of the missing bytes is ignored
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 1, TcpFlags::ACK, b"0123456789"),
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer).len(), 120);
    }

    #[test]
    fn rst_closes_and_reports_holes() {
        let mut r = reasm();
        let mut o = Out::default();
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 0, TcpFlags::SYN, b""),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 5, TcpFlags::ACK, b"late"),
        );
        feed(
            &mut r,
            &mut o,
            false,
            &seg(9001, 40000, 0, TcpFlags::RST, b""),
        );
        assert_eq!(
            o.events[1..],
            [
                "gap 1 ClientToServer 4".to_string(),
                "closed 1 rst".to_string()
            ]
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"late");
    }

    #[test]
    fn limits_and_idle_timeout() {
        let cfg = TcpConfig {
            max_connections: 3,
            idle_timeout_ns: 10_000_000_000,
            ..TcpConfig::default()
        };
        let mut r = TcpReassembler::new(cfg, |p| p == 9001);
        let mut o = Out::default();
        for port in 0..5u16 {
            let s = seg(40000 + port, 9001, 1, TcpFlags::ACK, b"x");
            r.process(
                Timestamp(i64::from(port)),
                1,
                IpAddr::from(C),
                IpAddr::from(S),
                &s,
                &mut |e| o.on(e),
            );
        }
        assert_eq!(r.connections(), 3);
        assert_eq!(r.stats().evicted, 2);
        assert!(o.events.contains(&"closed 1 evicted".to_string()));
        // keep connection 3 active, then open another: 4 is evicted (3 was used recently)
        let s = seg(40002, 9001, 2, TcpFlags::ACK, b"y");
        r.process(
            Timestamp(10),
            2,
            IpAddr::from(C),
            IpAddr::from(S),
            &s,
            &mut |e| o.on(e),
        );
        let s = seg(41000, 9001, 1, TcpFlags::ACK, b"z");
        r.process(
            Timestamp(11),
            3,
            IpAddr::from(C),
            IpAddr::from(S),
            &s,
            &mut |e| o.on(e),
        );
        assert!(
            o.events.contains(&"closed 4 evicted".to_string()),
            "{:?}",
            o.events
        );
        assert!(!o.events.contains(&"closed 3 evicted".to_string()));
        // idle timeout on capture time
        let s = seg(42000, 9001, 1, TcpFlags::ACK, b"w");
        r.process(
            Timestamp(60_000_000_000),
            4,
            IpAddr::from(C),
            IpAddr::from(S),
            &s,
            &mut |e| o.on(e),
        );
        assert_eq!(r.connections(), 1);
        assert_eq!(r.stats().timed_out, 3);
    }

    #[test]
    fn syn_reuse_starts_new_connection() {
        let mut r = reasm();
        let mut o = Out::default();
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 100, TcpFlags::SYN, b""),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 101, TcpFlags::ACK, b"one"),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 100, TcpFlags::SYN, b""),
        ); // retransmitted SYN
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 9000, TcpFlags::SYN, b""),
        );
        feed(
            &mut r,
            &mut o,
            true,
            &seg(40000, 9001, 9001, TcpFlags::ACK, b"two"),
        );
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"one");
        assert_eq!(o.stream(2, StreamDir::ClientToServer), b"two");
        assert!(o.events.contains(&"closed 1 reused".to_string()));
    }

    /// File -> link layer -> IP (with fragments) -> TCP, through a pcapng file.
    #[test]
    fn pipeline_from_capture_file() {
        use crate::ip::{self, Defragmenter};
        use crate::source::{CaptureReader, PcapngWriter};
        use crate::testutil::{ethernet, ipv4, ipv4_tcp, tcp};
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        let eth = w.interface_for(1).unwrap();
        let raw = w.interface_for(101).unwrap();
        let mut t = 0i64;
        let mut put = |w: &mut PcapngWriter<Vec<u8>>, iface: u32, frame: &[u8]| {
            t += 1_000_000;
            w.write_packet(iface, Timestamp(t), frame, frame.len() as u32, None)
                .unwrap();
        };
        put(
            &mut w,
            eth,
            &ethernet(0x0800, &ipv4_tcp(C, S, 40000, 9001, 0, TcpFlags::SYN, b"")),
        );
        put(&mut w, eth, &ethernet(0x0806, b"arp"));
        // a segment sent as two IPv4 fragments, the second first, on the raw interface
        let seg2 = tcp(40000, 9001, 6, TcpFlags::ACK, b"world!!!");
        let f1 = ipv4(C, S, 6, 42, 0x2000, &seg2[..16]);
        let f2 = ipv4(C, S, 6, 42, 2, &seg2[16..]);
        put(&mut w, raw, &f2);
        put(
            &mut w,
            eth,
            &ethernet(
                0x0800,
                &ipv4_tcp(C, S, 40000, 9001, 1, TcpFlags::ACK, b"hello"),
            ),
        );
        put(&mut w, raw, &f1);
        let bytes = w.into_inner();

        let mut reader = CaptureReader::from_reader(std::io::Cursor::new(bytes)).unwrap();
        let mut defrag = Defragmenter::default();
        let mut r = reasm();
        let mut o = Out::default();
        while let Some(pkt) = reader.next_packet() {
            let pkt = pkt.unwrap();
            let l3 = match linklayer::network_layer(pkt.linktype, pkt.data).unwrap() {
                Network::Ipv4(d) | Network::Ipv6(d) => d,
                _ => continue,
            };
            let Some(ipp) = defrag.process(pkt.ts, ip::parse(l3).unwrap()) else {
                continue;
            };
            if ipp.protocol != PROTO_TCP {
                continue;
            }
            let segm = parse_tcp(&ipp.payload).unwrap();
            r.process(pkt.ts, pkt.index, ipp.src, ipp.dst, &segm, &mut |e| o.on(e));
        }
        r.flush_all(&mut |e| o.on(e));
        assert_eq!(o.stream(1, StreamDir::ClientToServer), b"helloworld!!!");
        assert_eq!(o.gaps, 0);
    }

    proptest! {
        #[test]
        fn shuffled_duplicated_overlapping_segments_give_back_the_stream(
            stream in proptest::collection::vec(any::<u8>(), 1..3000),
            cuts in proptest::collection::vec(1usize..200, 1..60),
            extra in proptest::collection::vec((0usize..3000, 1usize..300), 0..20),
            order_seed in any::<u64>(),
            isn in any::<u32>(),
            with_syn in any::<bool>(),
        ) {
            // segments covering the stream, plus overlapping/duplicate ones
            let mut segs: Vec<(usize, usize)> = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < stream.len() {
                let len = cuts[i % cuts.len()].min(stream.len() - at);
                segs.push((at, at + len));
                at += len;
                i += 1;
            }
            for (s, l) in extra {
                let s = s % stream.len();
                segs.push((s, (s + l).min(stream.len())));
            }
            // the first segment goes first when there is no SYN (mid-stream start)
            let first = segs.remove(0);
            let mut rng = order_seed;
            for k in (1..segs.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                segs.swap(k, (rng >> 33) as usize % (k + 1));
            }
            segs.insert(0, first);
            let mut r = reasm();
            let mut o = Out::default();
            if with_syn {
                feed(&mut r, &mut o, true, &seg(40000, 9001, isn.wrapping_sub(1), TcpFlags::SYN, b""));
            }
            for (s, e) in &segs {
                let sq = isn.wrapping_add(*s as u32);
                feed(&mut r, &mut o, true, &seg(40000, 9001, sq, TcpFlags::ACK, &stream[*s..*e]));
            }
            r.flush_all(&mut |e| o.on(e));
            prop_assert_eq!(o.stream(1, StreamDir::ClientToServer), &stream[..]);
            prop_assert_eq!(o.gaps, 0);
            prop_assert_eq!(r.buffered_bytes(), 0);
        }

        #[test]
        fn lost_segments_become_gaps_and_the_rest_is_delivered(
            stream in proptest::collection::vec(any::<u8>(), 1..2000),
            size in 1usize..100,
            lost in proptest::collection::vec(any::<bool>(), 1..100),
            isn in any::<u32>(),
        ) {
            let chunks: Vec<(usize, &[u8])> = stream.chunks(size).enumerate().map(|(i, c)| (i * size, c)).collect();
            let mut r = reasm();
            let mut o = Out::default();
            feed(&mut r, &mut o, true, &seg(40000, 9001, isn, TcpFlags::SYN, b""));
            let mut want = Vec::new();
            let mut last_kept = 0;
            for (k, (at, c)) in chunks.iter().enumerate() {
                // never lose the last segment, so the end of the stream is known
                if lost[k % lost.len()] && k + 1 < chunks.len() {
                    continue;
                }
                want.extend_from_slice(c);
                last_kept = at + c.len();
                let sq = isn.wrapping_add(1).wrapping_add(*at as u32);
                feed(&mut r, &mut o, true, &seg(40000, 9001, sq, TcpFlags::ACK, c));
            }
            r.flush_all(&mut |e| o.on(e));
            prop_assert_eq!(o.stream(1, StreamDir::ClientToServer), &want[..]);
            prop_assert_eq!(o.gaps + want.len() as u64, last_kept as u64);
            prop_assert_eq!(r.buffered_bytes(), 0);
        }
    }
}
