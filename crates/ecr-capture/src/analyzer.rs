//! The analyzer: packets in, records out.
//!
//! Per packet: a cheap port check skips traffic that is not ECR (most of a shop
//! capture) before anything is parsed; ECR packets go through the link layer, IP
//! (with defragmentation) and TCP reassembly. Each connection's byte streams are then
//! read as HTTP (port 9001), as D6 text or D1 frames (port 9002), or by probing (other
//! ports, when asked). Message bodies are decoded by [`crate::message`], requests are
//! paired with responses into transactions, and every problem becomes a finding.
//!
//! Records go to a [`Sink`] as soon as they are known, so a live tap can print them
//! while the capture runs; the summary comes last from [`Analyzer::finish`].

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;

use ecr_proto::catalogue::{is_card_channel, FuncType};
use ecr_proto::envelope;
use ecr_proto::frame::FrameType;
use ecr_proto::link::Side;
use ecr_proto::value::CompactString;
use ecr_proto::Timestamp;

use crate::findings::{Code, Severity};
use crate::framelink::{FrameLink, LinkOutput};
use crate::http::{HttpConfig, HttpError, HttpEvent, HttpKind, HttpMessage, HttpParser};
use crate::ip::{self, DefragConfig, Defragmenter};
use crate::keylog::{KeyLog, KeyLogWarning};
use crate::keys::KeySet;
use crate::limits::{self, Limits, Usage};
use crate::linklayer::{self, Network};
use crate::message::{decode_body, Context, Decoded, Facts};
use crate::payments::Payments;
use crate::pipeline::{Feeder, PipelineStats};
use crate::record::{
    latency_of, Direction, FindingRecord, FrameInfo, HttpInfo, MessageRecord, Record, Role, Sink,
    SummaryRecord, TransactionRecord, Transport, UnusedKey,
};
use crate::serialcap;
use crate::source::{CaptureReader, Packet};
use crate::tcp::{
    self, CloseReason, ConnId, PerDir, PortPeek, StreamDir, TcpConfig, TcpEvent, TcpReassembler,
};
use crate::tcptext::{Rule, TextFramer};
use crate::tls::{SessionCache, TlsConn, TlsKeys, TlsOut};
use crate::usb::{self, DeviceId, UsbOutput, UsbSerial};

/// What to look at.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ports carrying HTTP (9001).
    pub http_ports: Vec<u16>,
    /// Ports carrying raw TCP (9002).
    pub tcp_ports: Vec<u16>,
    /// Probe connections on other ports for ECR traffic.
    pub probe: bool,
    /// Report requests still waiting at the end (off for input that has no real
    /// end, such as bytes given on the command line).
    pub report_unanswered_at_end: bool,
    /// In USB captures, analyse only this device (BUS:DEV) instead of every device
    /// that carries ECR frames.
    pub usb_device: Option<DeviceId>,
    /// Bounds of every table, from one memory budget (see [`crate::limits`]).
    pub limits: Limits,
    /// TLS secrets for HTTPS connections (key log files; pcapng Decryption Secrets
    /// Blocks add to them while the capture is read).
    pub tls_keylog: KeyLog,
    /// A live capture: a TLS connection whose secrets are not (yet) in the key log
    /// keeps its encrypted records (bounded) until [`Analyzer::add_tls_keylog`]
    /// brings them, since browsers write their key log while the handshake runs.
    pub tls_wait_for_secrets: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_ports: vec![9001],
            tcp_ports: vec![9002],
            probe: false,
            report_unanswered_at_end: true,
            usb_device: None,
            limits: Limits::default(),
            tls_keylog: KeyLog::new(),
            tls_wait_for_secrets: false,
        }
    }
}

/// Damaged records in a row after which the rest of a file is given up.
pub const MAX_DAMAGED_IN_A_ROW: u32 = 1000;

/// Which bound dropped something, for `limit-evicted` findings (one per limit and
/// connection, or one per limit for shared tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
enum Limit {
    Connections = 1,
    StreamBytes = 2,
    Pending = 4,
    Ooo = 8,
    FragmentEntries = 16,
    FragmentBytes = 32,
    Payments = 64,
    Latency = 128,
    OpenRefs = 256,
    SummaryValues = 512,
    SerialLinks = 1024,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnKind {
    Http,
    Tcp,
    Probe,
    Serial,
}

/// Serial links live in the connection table under ids from here up.
const SERIAL_ID_BASE: ConnId = 1 << 62;

#[derive(Debug)]
enum DirState {
    Undecided,
    Http(Box<HttpParser>),
    Text(TextFramer),
    Frames,
    Ignored,
}

#[derive(Debug)]
struct PendingRequest {
    index: u64,
    /// A CORS preflight: its answer is the next HTTP response, and no
    /// transaction.
    preflight: bool,
    /// The `Origin` of a browser's request (printable ASCII, bounded).
    origin: Option<String>,
    ref_num: Option<u8>,
    first_ts: Timestamp,
    last_ts: Timestamp,
    packet: Option<u64>,
    facts: Facts,
}

#[derive(Debug)]
struct Conn {
    /// The cash register's address (or "ECR" on a serial link).
    client: CompactString,
    /// The terminal's address (or "POS").
    server_label: CompactString,
    /// The terminal's socket address, for choosing its keys.
    server: Option<SocketAddr>,
    kind: ConnKind,
    dirs: PerDir<DirState>,
    /// Boxed: 600 bytes that only 9002 connections need, outside the table of
    /// connections (which holds twice as many slots as connections).
    frames: Option<Box<FrameLink>>,
    pending: VecDeque<PendingRequest>,
    /// TLS state, once the connection's first bytes were a TLS record.
    tls: Option<Box<TlsConn>>,
    last_ts: Timestamp,
    /// Per direction: a TCP gap cut the text stream, so the next message that does
    /// not decode is the tail of a message whose start was lost.
    cut: PerDir<bool>,
    /// A gap in the cash register's direction may have swallowed a request: the
    /// next response with no request waiting answers it.
    lost_request: bool,
    /// Bytes this connection holds, as last counted into `State::stream_bytes`.
    held: usize,
    /// Bytes counted for `pending` (fields kept plus bookkeeping).
    pending_bytes: usize,
    /// Limits already reported for this connection (bits of [`Limit`]).
    limits_reported: u16,
    /// Deferred steps of this connection not yet run (see [`Deferred`]).
    deferred: u32,
    /// What its deferred bodies may add to `pending_bytes` at most.
    deferred_bound: usize,
    /// At least `held` will be when its deferred steps have run (`held` itself
    /// when none wait): see [`Deferred::ub_total`].
    ub_held: usize,
}

impl Conn {
    fn new(
        client: impl Into<CompactString>,
        server_label: impl Into<CompactString>,
        server: Option<SocketAddr>,
        kind: ConnKind,
        ts: Timestamp,
    ) -> Self {
        Conn {
            client: client.into(),
            server_label: server_label.into(),
            server,
            kind,
            dirs: PerDir {
                client: DirState::Undecided,
                server: DirState::Undecided,
            },
            frames: None,
            pending: VecDeque::new(),
            tls: None,
            last_ts: ts,
            cut: PerDir::default(),
            lost_request: false,
            held: 0,
            pending_bytes: 0,
            limits_reported: 0,
            deferred: 0,
            deferred_bound: 0,
            ub_held: 0,
        }
    }

    /// Bytes held now: unfinished messages of both directions, open refs and
    /// unanswered requests.
    fn count_held(&self) -> usize {
        self.framing_held() + self.pending_bytes
    }

    /// What [`Conn::count_held`] counts but the unanswered requests: what the
    /// framing of its streams holds.
    fn framing_held(&self) -> usize {
        let dirs: usize = self
            .dirs
            .iter()
            .map(|d| match d {
                DirState::Http(p) => p.held(),
                DirState::Text(t) => t.buffered(),
                _ => 0,
            })
            .sum();
        dirs + self.frames.as_deref().map_or(0, FrameLink::held)
            + self.tls.as_deref().map_or(0, TlsConn::held)
    }

    fn text_work(&self) -> u64 {
        self.dirs
            .iter()
            .map(|d| match d {
                DirState::Text(t) => t.work(),
                _ => 0,
            })
            .sum()
    }

    fn count_reserved(&self) -> usize {
        let dirs: usize = self
            .dirs
            .iter()
            .map(|d| match d {
                DirState::Http(p) => p.reserved(),
                DirState::Text(t) => t.reserved(),
                _ => 0,
            })
            .sum();
        // A TLS connection's fixed state (keys, secrets) is reserved memory too,
        // though the stream budget does not count it (README, Memory limits).
        let tls = self.tls.as_deref().map_or(0, |t| t.held() + t.fixed());
        dirs + self.frames.as_deref().map_or(0, FrameLink::reserved)
            + tls
            + self.pending_bytes
            + (self.pending.capacity() - self.pending.len()) * std::mem::size_of::<PendingRequest>()
    }
    fn transport(&self) -> Transport {
        match self.kind {
            ConnKind::Http if self.tls.is_some() => Transport::Https,
            ConnKind::Http => Transport::Http,
            ConnKind::Serial => Transport::Serial,
            _ => Transport::Tcp,
        }
    }
    /// Where a body that `dir` sent, first seen at `ts`, came up: what its
    /// decoding depends on besides its bytes and keys.
    fn context(&self, dir: StreamDir, ts: Timestamp, packet: Option<u64>) -> Context {
        let (src, dst) = self.addrs(dir);
        Context {
            transport: self.transport(),
            src,
            dst,
            direction: direction_of(dir),
            ts,
            packet,
        }
    }

    fn addrs(&self, dir: StreamDir) -> (CompactString, CompactString) {
        match dir {
            StreamDir::ClientToServer => (self.client.clone(), self.server_label.clone()),
            StreamDir::ServerToClient => (self.server_label.clone(), self.client.clone()),
        }
    }
}

/// `a` as its `Display` writes it (`192.0.2.1:9001`, `[2001:db8::1]:9001`): an
/// IPv4 address without the formatting machinery, which costs more than the rest
/// of a short connection's bookkeeping.
fn addr_text(a: SocketAddr) -> CompactString {
    let SocketAddr::V4(v4) = a else {
        return CompactString::from(a.to_string());
    };
    // At most `255.255.255.255:65535`, 21 bytes: the text is kept inline.
    let mut t = [0u8; 24];
    let mut n = 0;
    let mut put = |piece: &[u8]| {
        if let Some(d) = t.get_mut(n..n + piece.len()) {
            d.copy_from_slice(piece);
        }
        n += piece.len();
    };
    let mut b = itoa::Buffer::new();
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            put(b".");
        }
        put(b.format(octet).as_bytes());
    }
    put(b":");
    put(b.format(v4.port()).as_bytes());
    CompactString::from_utf8_lossy(t.get(..n).unwrap_or_default())
}

fn side_of(d: StreamDir) -> Side {
    match d {
        StreamDir::ClientToServer => Side::Ecr,
        StreamDir::ServerToClient => Side::Pos,
    }
}

fn dir_of(s: Side) -> StreamDir {
    match s {
        Side::Ecr => StreamDir::ClientToServer,
        Side::Pos => StreamDir::ServerToClient,
    }
}

fn direction_of(d: StreamDir) -> Direction {
    match d {
        StreamDir::ClientToServer => Direction::EcrToPos,
        StreamDir::ServerToClient => Direction::PosToEcr,
    }
}

fn pending_cost(f: &Facts) -> usize {
    let strings = [
        &f.channel,
        &f.amt,
        &f.out_trade_no,
        &f.order_id,
        &f.refund_amount,
        &f.respcd,
        &f.syssn,
        &f.txamt,
        &f.sysdtm,
    ];
    limits::PENDING_COST
        + strings
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.len()))
            .sum::<usize>()
}

#[derive(Clone, Debug)]
struct Payment {
    amount_cents: Option<i64>,
    /// A short name ("wxpay", "card_payment"): inline, no allocation.
    channel: CompactString,
    day: i64,
}

/// Everything but the TCP reassembler, so that its events can borrow this mutably.
struct State<'s> {
    cfg: Config,
    keys: KeySet,
    /// The bodies, HTTP events and link outputs of one packet, kept between
    /// packets so that their vectors are not allocated for each packet.
    scratch: Scratch,
    sink: &'s mut dyn Sink,
    /// foldhash: fast, seeded per process (see tcp.rs).
    conns: foldhash::HashMap<ConnId, Conn>,
    messages: u64,
    transactions: u64,
    findings: BTreeMap<Code, u64>,
    func_types: BTreeMap<String, u64>,
    channels: BTreeMap<String, u64>,
    respcd: BTreeMap<String, u64>,
    latencies: Vec<f64>,
    /// By id, forgotten oldest first.
    payments: Payments<Payment>,
    payment_bytes: usize,
    /// Bytes held by all connections (sum of their `held`).
    stream_bytes: usize,
    peak_stream_bytes: usize,
    peak_connections: usize,
    evictions: u64,
    /// Work of the text framers of connections already closed.
    text_work_closed: u64,
    /// Limits of shared tables already reported (bits of [`Limit`]).
    limits_reported: u16,
    /// Serial links seen (at most [`limits::MAX_SERIAL_LINKS`]).
    serial_links: usize,
    /// Connections that had a TCP hole during the current packet (a few), to
    /// report holes skipped for the out-of-order limit.
    gapped: Vec<ConnId>,
    /// Drops by shared-table limits after their first report, told at the end.
    later_drops: BTreeMap<u16, u64>,
    max_severity: Option<Severity>,
    last_ts: Timestamp,
    /// Flows (src, dst) with packets cut by the snap length: their holes are
    /// explained by the truncated-packet findings and not reported again as gaps.
    truncated_flows: HashSet<(CompactString, CompactString)>,
    /// Sees every message's body as it was received (see [`Analyzer::on_message`]).
    body_hook: Option<BodyHook<'s>>,
    /// TLS secrets from key log files and pcapng Decryption Secrets Blocks.
    tls_keylog: KeyLog,
    /// TLS 1.2 sessions of this capture, for resumed connections.
    tls_sessions: SessionCache,
    /// The link tracker's latest match of an answer frame with its request
    /// (connection, ref, milliseconds), for the answer's message record.
    last_answer: Option<(ConnId, u8, f64)>,
    /// Terminals with encrypted messages that no key given applied to (keys were
    /// given, but bound to other addresses); at most [`MAX_TERMINALS_WITHOUT_KEY`].
    terminals_without_key: BTreeSet<String>,
    /// A helper thread's end and the steps deferred for it, if there is one (see
    /// [`crate::pipeline`]).
    helper: Option<Box<Deferred>>,
}

/// Deferred steps: decoding on a second core with the capture read once (see
/// [`crate::pipeline`]).
///
/// With a decoding thread, a body is handed over and the step that follows its
/// decoding (numbering the message, its findings and record, pairing, payments:
/// [`State::body_now`]) waits here, in order, while this thread reads, reassembles
/// and frames the packets after it. Output stays that of one thread because
/// nothing that reads what a deferred step writes runs before the queue is
/// empty ([`State::settle`]):
/// - every finding (its order in the output, the limit bookkeeping), a TCP gap
///   (it marks a lost request), a connection's close (it reads and drops the
///   waiting requests), a serial link's bytes and the end of the analysis settle
///   first, and run with nothing deferred;
/// - what the framing half used to read from the body step is taken when the
///   body is deferred (a text stream's cut mark, a link's latest answer) and given
///   to the step;
/// - the stream budget (`State::account`) counts the waiting requests, which only
///   deferred steps change: a connection's recount is deferred as well, with the
///   bytes its framing holds at that moment, when the budget cannot be passed
///   whatever the deferred bodies add (`ub_total`); otherwise the queue is run
///   first and the recount, with any eviction, runs as on one thread;
/// - the "no message yet" test of other ports counts deferred bodies as messages.
struct Deferred {
    pipe: Feeder,
    steps: VecDeque<Step>,
    /// Body bytes the deferred steps hold.
    bytes: usize,
    /// Deferred steps that will count a message.
    messages: u64,
    /// An upper bound of `State::stream_bytes` at any point of the deferred steps:
    /// the sum of the connections' `ub_held`.
    ub_total: usize,
    /// A deferred step runs now (what it calls must not settle).
    running: bool,
    /// Steps are not deferred (while a serial link reads).
    sync: bool,
    /// Connections whose close is deferred ([`Step::Close`]).
    closing: usize,
    /// The most steps that waited at once.
    peak_steps: usize,
}

/// What follows a body's decoding ([`State::body_now`]).
struct BodyStep {
    conn: ConnId,
    dir: StreamDir,
    packet: Option<u64>,
    /// The text stream's cut mark, taken when the body came.
    was_cut: bool,
    /// For a bare frame: the link's latest answer, taken when it came.
    answer: Option<Option<(ConnId, u8, f64)>>,
    /// The job handed to the helper thread, or the body kept here.
    job: Result<u64, Box<Body>>,
    len: usize,
    /// What it may add to its connection's waiting requests.
    bound: usize,
    /// Whether it counts a message.
    counts: bool,
}

impl Deferred {
    /// A connection with no deferred step left: its bound is what it holds.
    fn resync(&mut self, c: &mut Conn) {
        if c.deferred == 0 {
            self.ub_total = self
                .ub_total
                .saturating_sub(c.ub_held)
                .saturating_add(c.held);
            c.ub_held = c.held;
        }
    }
}

/// Most steps deferred, and most body bytes they hold: beyond either, the oldest
/// runs, waiting for its decoding if need be.
pub const MAX_DEFERRED_STEPS: usize = 256;
const MAX_DEFERRED_BYTES: usize = 512 << 10;
/// Bodies longer than this are decoded by the analyzer's thread when their step
/// runs (ECR messages are a few hundred bytes).
const MAX_HANDED_BODY: usize = 64 << 10;

enum Step {
    Body(BodyStep),
    /// The rest of a connection's close ([`State::close_requests`]).
    Close {
        conn: ConnId,
        ts: Timestamp,
        reason: CloseReason,
    },
    Account {
        conn: ConnId,
        /// What the connection's framing held when the recount was due.
        framing: usize,
        ts: Timestamp,
        packet: Option<u64>,
    },
}

/// Distinct values counted in each of the summary's tables (func_types, channels,
/// respcd), and the longest value counted as itself: the values come from the
/// capture, so the tables are bounded like every other.
const MAX_SUMMARY_VALUES: usize = 256;
const MAX_SUMMARY_VALUE_LEN: usize = 64;
/// What the values beyond those bounds are counted as.
const OTHER_VALUE: &str = "(other)";

/// Counts `value` in a summary table; `false` when it was counted as
/// [`OTHER_VALUE`] (the table was full or the value too long).
fn count_value(table: &mut BTreeMap<String, u64>, value: &str) -> bool {
    if let Some(n) = table.get_mut(value) {
        *n += 1;
        return true;
    }
    if value.len() <= MAX_SUMMARY_VALUE_LEN && table.len() < MAX_SUMMARY_VALUES {
        table.insert(value.to_owned(), 1);
        return true;
    }
    *table.entry(OTHER_VALUE.to_owned()).or_default() += 1;
    false
}

/// Most terminals without a key listed in the summary.
const MAX_TERMINALS_WITHOUT_KEY: usize = 100;

/// A callback given each message record with the body it was decoded from.
type BodyHook<'s> = Box<dyn FnMut(&MessageRecord, &[u8]) + 's>;

/// The configured ports, one bit each (8 KiB): tested for every packet, where a
/// hash set's SipHash cost 2-3% of the time of a capture of many short connections.
#[derive(Clone)]
struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    fn new(ports: impl IntoIterator<Item = u16>) -> Self {
        let mut bits = Box::new([0u64; 1024]);
        for p in ports {
            if let Some(w) = bits.get_mut(usize::from(p >> 6)) {
                *w |= 1 << (p & 63);
            }
        }
        PortSet(bits)
    }

    fn contains(&self, port: u16) -> bool {
        self.0
            .get(usize::from(port >> 6))
            .is_some_and(|w| w & (1 << (port & 63)) != 0)
    }
}

#[cfg(test)]
mod port_set_tests {
    #[test]
    fn holds_exactly_its_ports() {
        let given = [0u16, 63, 64, 9001, 9002, 65535];
        let set = super::PortSet::new(given);
        for p in 0..=u16::MAX {
            assert_eq!(set.contains(p), given.contains(&p), "port {p}");
        }
    }
}

/// See the module documentation.
pub struct Analyzer<'s> {
    tcp: TcpReassembler,
    defrag: Defragmenter,
    ports: PortSet,
    st: State<'s>,
    packets: u64,
    /// USB captures: URBs to per-device serial streams.
    usb: UsbSerial,
    /// ECR traffic seen on ports that are not analysed.
    other: OtherPorts,
}

/// Most flows whose first data is looked at for ECR traffic on other ports.
const MAX_OTHER_FLOWS: usize = 1 << 16;
/// Most other ports reported.
const MAX_OTHER_PORTS: usize = 16;

/// While no ECR message has been decoded on the configured ports, the first data
/// segment of each TCP flow on other ports is compared with cheap signatures (a
/// frame start `2f 6e 01`, `POST /api/pos/`, `{"content"`), so that a capture of a
/// terminal on a non-standard port says which option to use instead of "0 messages".
/// Work is bounded: one look per flow, at most [`MAX_OTHER_FLOWS`] flows.
#[derive(Default)]
struct OtherPorts {
    /// Flows (source port, destination port) already looked at.
    seen: HashSet<(u16, u16)>,
    /// By the terminal's port: the first sighting.
    found: BTreeMap<u16, Sighting>,
    /// Given up (a message was decoded, or the flow table is full).
    done: bool,
}

struct Sighting {
    /// "--tcp-port" or "--http-port".
    option: &'static str,
    what: &'static str,
    ts: Timestamp,
    packet: u64,
    src: String,
    dst: String,
}

/// What the first data of a flow on another port looks like, if ECR: the option
/// that names the port, what was seen, and whether the sender is the client (its
/// destination is the terminal's port).
fn ecr_signature(payload: &[u8]) -> Option<(&'static str, &'static str, Option<bool>)> {
    if payload.starts_with(&[0x2f, 0x6e, 0x01]) {
        Some(("--tcp-port", "0x2f6e frames", None))
    } else if payload.starts_with(b"POST /api/pos/") {
        Some(("--http-port", "HTTP requests to /api/pos/", Some(true)))
    } else if payload.starts_with(b"{\"content\"") {
        Some(("--tcp-port", "ECR requests ({\"content\":...})", Some(true)))
    } else {
        None
    }
}

impl<'s> Analyzer<'s> {
    /// An analyzer that sends its records to `sink`.
    pub fn new(mut cfg: Config, keys: KeySet, sink: &'s mut dyn Sink) -> Self {
        let tls_keylog = std::mem::take(&mut cfg.tls_keylog);
        let ports = PortSet::new(cfg.http_ports.iter().chain(&cfg.tcp_ports).copied());
        let server_ports = ports.clone();
        let cfg_usb_device = cfg.usb_device;
        let l = cfg.limits;
        let tcp_cfg = TcpConfig {
            max_connections: l.connections,
            max_ooo_bytes_per_dir: l.ooo_bytes_per_dir,
            max_ooo_bytes_total: l.ooo_bytes,
            ..TcpConfig::default()
        };
        let defrag_cfg = DefragConfig {
            max_pending: l.fragments,
            max_bytes: l.fragment_bytes,
            ..DefragConfig::default()
        };
        Analyzer {
            tcp: TcpReassembler::new(tcp_cfg, move |p| server_ports.contains(p)),
            defrag: Defragmenter::new(defrag_cfg),
            ports,
            st: State {
                cfg,
                keys,
                sink,
                conns: Default::default(),
                messages: 0,
                transactions: 0,
                findings: BTreeMap::new(),
                func_types: BTreeMap::new(),
                channels: BTreeMap::new(),
                respcd: BTreeMap::new(),
                latencies: Vec::new(),
                payments: Default::default(),
                payment_bytes: 0,
                scratch: Scratch::default(),
                stream_bytes: 0,
                peak_stream_bytes: 0,
                peak_connections: 0,
                evictions: 0,
                text_work_closed: 0,
                limits_reported: 0,
                serial_links: 0,
                later_drops: BTreeMap::new(),
                gapped: Vec::new(),
                max_severity: None,
                last_ts: Timestamp::default(),
                truncated_flows: HashSet::new(),
                last_answer: None,
                terminals_without_key: BTreeSet::new(),
                body_hook: None,
                tls_keylog,
                tls_sessions: SessionCache::default(),
                helper: None,
            },
            packets: 0,
            usb: UsbSerial::new(cfg_usb_device),
            other: OtherPorts::default(),
        }
    }

    /// A TCP packet on ports that are not analysed: see [`OtherPorts`].
    fn look_at_other_port(&mut self, pkt: &Packet<'_>, src: u16, dst: u16) {
        let o = &mut self.other;
        if o.done || self.st.cfg.probe {
            return;
        }
        if self.st.messages_so_far() > 0 || o.seen.len() >= MAX_OTHER_FLOWS {
            o.done = true;
            return;
        }
        if o.seen.contains(&(src, dst)) {
            return;
        }
        let Ok(Network::Ipv4(net) | Network::Ipv6(net)) =
            linklayer::network_layer(pkt.linktype, pkt.data)
        else {
            return;
        };
        let Ok(ipp) = ip::parse(net) else {
            return;
        };
        if ipp.protocol != 6 {
            return;
        }
        let Ok(seg) = tcp::parse_tcp(&ipp.payload) else {
            return;
        };
        if seg.payload.is_empty() {
            return;
        }
        o.seen.insert((src, dst));
        let Some((option, what, from_client)) = ecr_signature(seg.payload) else {
            return;
        };
        // Frames flow both ways; the terminal's port is taken to be the lower one
        // (the other end uses an ephemeral port).
        let port = match from_client {
            Some(_) => dst,
            None => src.min(dst),
        };
        if o.found.len() < MAX_OTHER_PORTS || o.found.contains_key(&port) {
            o.found.entry(port).or_insert_with(|| Sighting {
                option,
                what,
                ts: pkt.ts,
                packet: pkt.index,
                src: SocketAddr::new(ipp.src, src).to_string(),
                dst: SocketAddr::new(ipp.dst, dst).to_string(),
            });
        }
    }

    fn relevant(&self, a: u16, b: u16) -> bool {
        self.st.cfg.probe || self.ports.contains(a) || self.ports.contains(b)
    }

    /// Takes one packet of the capture.
    pub fn packet(&mut self, pkt: &Packet<'_>) {
        self.packets += 1;
        self.st.last_ts = self.st.last_ts.max(pkt.ts);
        // The project's own serial capture format (D9): line bytes with a direction.
        if pkt.linktype == serialcap::LINKTYPE_SERIAL {
            match serialcap::parse_packet(pkt.data) {
                Some((side, bytes)) => {
                    self.packets -= 1; // counted again by serial_chunk
                    let label = format!("serial{}", pkt.interface);
                    let labels = (format!("{label}:ECR"), format!("{label}:POS"));
                    self.serial_chunk(
                        u64::from(pkt.interface),
                        (&labels.0, &labels.1),
                        side,
                        bytes,
                        pkt.ts,
                        Some(pkt.index),
                    );
                }
                None => self.st.damaged_packet(
                    pkt,
                    Some(Transport::Serial),
                    "serial capture packet without a valid direction byte (0x00 or 0x01)".into(),
                ),
            }
            return;
        }
        // USB captures (usbmon, USBPcap): bulk data of USB-serial adapters.
        if usb::is_usb_linktype(pkt.linktype) {
            self.usb_packet(pkt);
            return;
        }
        // Fast path: most packets of a shop capture are not ECR traffic.
        match tcp::peek_tcp_ports(pkt.linktype, pkt.data) {
            PortPeek::NotTcp => return,
            PortPeek::Tcp { src, dst } if !self.relevant(src, dst) => {
                self.look_at_other_port(pkt, src, dst);
                return;
            }
            _ => {}
        }
        let net = match linklayer::network_layer(pkt.linktype, pkt.data) {
            Ok(Network::Ipv4(d)) | Ok(Network::Ipv6(d)) => d,
            Ok(_) => return,
            Err(e) => {
                self.st.damaged_packet(pkt, None, e.to_string());
                return;
            }
        };
        let ipp = match ip::parse(net) {
            Ok(p) => p,
            Err(e) => {
                self.st.damaged_packet(pkt, None, format!("IP: {e}"));
                return;
            }
        };
        if ipp.protocol != 6 {
            return;
        }
        let before = self.defrag.stats();
        let whole = self.defrag.process(pkt.ts, ipp);
        let after = self.defrag.stats();
        if after.evicted > before.evicted {
            let by_bytes = after.evicted_for_bytes > before.evicted_for_bytes;
            let (limit, detail) = if by_bytes {
                (
                    Limit::FragmentBytes,
                    format!(
                        "IP fragments reached {} bytes: the oldest incomplete datagram was dropped",
                        self.st.cfg.limits.fragment_bytes
                    ),
                )
            } else {
                (Limit::FragmentEntries, format!("{} IP datagrams were waiting for fragments: the oldest incomplete one was dropped", self.st.cfg.limits.fragments))
            };
            self.st
                .limit_finding(None, limit, pkt.ts, Some(pkt.index), || detail);
        }
        let Some(ipp) = whole else {
            return;
        };
        let seg = match tcp::parse_tcp(&ipp.payload) {
            Ok(s) => s,
            Err(e) => {
                if self.ports_maybe(&ipp.payload) {
                    self.st.damaged_packet(pkt, None, format!("TCP: {e}"));
                }
                return;
            }
        };
        if !self.relevant(seg.src_port, seg.dst_port) {
            self.look_at_other_port(pkt, seg.src_port, seg.dst_port);
            return;
        }
        if pkt.is_truncated() || ipp.truncated {
            let src = CompactString::from(SocketAddr::new(ipp.src, seg.src_port).to_string());
            let dst = CompactString::from(SocketAddr::new(ipp.dst, seg.dst_port).to_string());
            if self.st.truncated_flows.len() < 10_000 {
                self.st.truncated_flows.insert((src.clone(), dst.clone()));
            }
            self.st.finding(
                Code::TruncatedPacket,
                pkt.ts,
                Some(Transport::Tcp),
                Some(src),
                Some(dst),
                Some(pkt.index),
                None,
                format!(
                    "captured {} of {} bytes (snap length); the stream has a hole here",
                    pkt.data.len(),
                    pkt.orig_len
                ),
            );
        }
        let st = &mut self.st;
        let skips = self.tcp.stats().ooo_limit_skips;
        st.gapped.clear();
        self.tcp
            .process(pkt.ts, pkt.index, ipp.src, ipp.dst, &seg, &mut |ev| {
                st.tcp_event(ev)
            });
        if self.tcp.stats().ooo_limit_skips > skips {
            let (per_dir, total) = (st.cfg.limits.ooo_bytes_per_dir, st.cfg.limits.ooo_bytes);
            for conn in std::mem::take(&mut st.gapped) {
                st.limit_finding(Some(conn), Limit::Ooo, pkt.ts, Some(pkt.index), || {
                    format!("out-of-order data reached its bound ({per_dir} bytes per direction, {total} over all connections): the analyzer stopped waiting for the missing bytes, so the tcp-gap reported here may be filled by a later retransmission it no longer uses")
                });
            }
        }
    }

    /// Hands message bodies to a [`crate::pipeline::Helper`] on another thread
    /// while this one reads on (and, if the channel was made so, the records too):
    /// the records are the same as without it, but come later, so not for a live
    /// capture. Call before the first packet.
    pub fn decode_with(&mut self, feeder: Feeder) {
        self.st.helper = Some(Box::new(Deferred {
            pipe: feeder,
            steps: VecDeque::new(),
            bytes: 0,
            messages: 0,
            ub_total: self.st.stream_bytes,
            running: false,
            sync: false,
            closing: 0,
            peak_steps: 0,
        }));
        for c in self.st.conns.values_mut() {
            c.ub_held = c.held;
        }
    }

    /// With a decoding thread: how the decodings were divided so far.
    pub fn pipeline_stats(&self) -> Option<PipelineStats> {
        self.st.helper.as_ref().map(|d| PipelineStats {
            peak_steps: d.peak_steps,
            ..d.pipe.stats()
        })
    }

    /// Gives `hook` every message record together with the body it was decoded from
    /// (the reassembled data of a frame message, an HTTP body, a TCP 9002 message),
    /// before the record goes to the sink: for `export`, which rewrites messages.
    pub fn on_message(&mut self, hook: impl FnMut(&MessageRecord, &[u8]) + 's) {
        self.st.body_hook = Some(Box::new(hook));
    }

    /// One URB of a USB capture (see [`crate::usb`]).
    fn usb_packet(&mut self, pkt: &Packet<'_>) {
        let urb = match usb::parse_urb(pkt.linktype, pkt.data) {
            Ok(u) => u,
            Err(e) => {
                self.st
                    .damaged_packet(pkt, Some(Transport::Serial), format!("USB: {e}"));
                return;
            }
        };
        let part = usb::serial_part(&urb);
        if let (usb::SerialPart::Data { device, .. }, true) = (part, urb.truncated) {
            if !matches!(self.st.cfg.usb_device, Some(d) if d != device) {
                self.st.finding(
                    Code::TruncatedPacket,
                    pkt.ts,
                    Some(Transport::Serial),
                    Some(usb::link_label(device).into()),
                    None,
                    Some(pkt.index),
                    None,
                    format!(
                        "USB transfer captured with {} of its data bytes (snap length); the serial stream has a hole here",
                        urb.data.len()
                    ),
                );
            }
        }
        let mut outs = vec![];
        let (ring, _) = self.st.keys.for_terminal(None);
        let mut classify = |d: &[u8]| classify_body(d, ring);
        self.usb
            .urb(&urb, pkt.ts, pkt.index, &mut classify, &mut |o| {
                outs.extend(own_usb(o))
            });
        self.usb_bytes(outs);
    }

    /// Feeds USB line bytes to the serial links, one per device ("usb1:5").
    fn usb_bytes(&mut self, outs: Vec<(DeviceId, Side, Vec<u8>, Timestamp, u64)>) {
        for (device, from, bytes, ts, packet) in outs {
            let label = usb::link_label(device);
            let labels = (format!("{label}:ECR"), format!("{label}:POS"));
            self.serial_chunk(
                usb::link_id(device),
                (&labels.0, &labels.1),
                from,
                &bytes,
                ts,
                Some(packet),
            );
            // The packet was counted when it was read.
            self.packets = self.packets.saturating_sub(1);
        }
    }

    fn ports_maybe(&self, tcp_bytes: &[u8]) -> bool {
        match tcp_bytes {
            [s0, s1, d0, d1, ..] => self.relevant(
                u16::from_be_bytes([*s0, *s1]),
                u16::from_be_bytes([*d0, *d1]),
            ),
            _ => false,
        }
    }

    /// Bytes seen on serial link `link` (0 for a lone link), sent by `from`, at `ts`.
    /// `ecr` and `pos` label the two ends in output ("ECR", "/dev/ttyUSB0", "1:5").
    #[allow(clippy::too_many_arguments)]
    pub fn serial_chunk(
        &mut self,
        link: u64,
        labels: (&str, &str),
        from: Side,
        bytes: &[u8],
        ts: Timestamp,
        packet: Option<u64>,
    ) {
        self.frames_chunk(link, labels, Transport::Serial, from, bytes, ts, packet);
    }

    /// Like [`Analyzer::serial_chunk`], for a frame stream that travelled over
    /// `transport` (e.g. `0x2f6e` frames on a TCP connection the caller reads itself,
    /// as `ecr-sniff send` does); records then name that transport.
    #[allow(clippy::too_many_arguments)]
    pub fn frames_chunk(
        &mut self,
        link: u64,
        labels: (&str, &str),
        transport: Transport,
        from: Side,
        bytes: &[u8],
        ts: Timestamp,
        packet: Option<u64>,
    ) {
        // A chunk read by the caller (`decode`'s input, a serial tap's read) is a
        // packet too; an empty chunk is only a clock tick.
        self.packets += u64::from(packet.is_some() || !bytes.is_empty());
        self.st.last_ts = self.st.last_ts.max(ts);
        // Serial links defer nothing (see `Deferred`): what waits runs first.
        self.st.settle();
        let was = self.st.set_sync(true);
        let id = SERIAL_ID_BASE.saturating_add(link);
        if !self.st.conns.contains_key(&id) {
            // Links are not evicted like TCP connections: a capture may name a new
            // one in each pcapng interface (65,536 of them), each about 2 KB here.
            if self.st.serial_links >= limits::MAX_SERIAL_LINKS {
                let label = labels.0.trim_end_matches(":ECR").to_string();
                self.st
                    .limit_finding(None, Limit::SerialLinks, ts, packet, || {
                        format!(
                            "more than {} serial links in the capture: the bytes of {} and of any further link are not decoded",
                            limits::MAX_SERIAL_LINKS, label
                        )
                    });
                self.st.set_sync(was);
                return;
            }
            self.st.serial_links += 1;
        }
        let c = self.st.conns.entry(id).or_insert_with(|| {
            let kind = match transport {
                Transport::Serial => ConnKind::Serial,
                Transport::Tcp | Transport::Http | Transport::Https => ConnKind::Tcp,
            };
            let mut c = Conn::new(labels.0, labels.1, None, kind, ts);
            c.dirs = PerDir {
                client: DirState::Frames,
                server: DirState::Frames,
            };
            c.frames = Some(Box::new(FrameLink::new()));
            c
        });
        c.last_ts = ts;
        let mut outs = vec![];
        if let Some(fl) = c.frames.as_mut() {
            fl.feed(from, bytes, ts, &mut |o| outs.extend(own_output(o)));
            fl.advance(ts, &mut |o| outs.extend(own_output(o)));
        }
        for o in outs {
            self.st.link_output(id, o, packet);
        }
        self.st.account(id, ts, packet);
        self.st.set_sync(was);
    }

    /// Feeds every packet of a capture file. Damaged records become `damaged-packet`
    /// findings naming `name` and the analysis goes on; after
    /// [`MAX_DAMAGED_IN_A_ROW`] of them in a row the rest of the file is taken for
    /// garbage. `keep_going` is asked after each packet (for a progress display or to
    /// cancel). Returns the bytes read (uncompressed).
    pub fn read_capture(
        &mut self,
        reader: &mut CaptureReader,
        name: &str,
        mut keep_going: impl FnMut(&CaptureReader) -> bool,
    ) -> u64 {
        let mut damaged_in_a_row = 0u32;
        while let Some(next) = reader.next_packet() {
            match next {
                Ok(pkt) => {
                    damaged_in_a_row = 0;
                    self.packet(&pkt);
                }
                Err(e) => {
                    damaged_in_a_row += 1;
                    self.damaged(None, e.packet(), format!("{name}: {e}"));
                    if damaged_in_a_row > MAX_DAMAGED_IN_A_ROW {
                        break;
                    }
                }
            }
            for secrets in reader.take_tls_secrets() {
                for w in self.st.tls_keylog.add_text(&secrets) {
                    let line = w.line.map(|l| format!(" line {l}:")).unwrap_or_default();
                    self.damaged(
                        None,
                        None,
                        format!(
                            "{name}: TLS key log in a decryption secrets block:{line} {}",
                            w.detail
                        ),
                    );
                }
            }
            if !keep_going(reader) {
                break;
            }
        }
        reader.bytes_read()
    }

    /// Uses the TLS secrets of `keylog` (see [`crate::keylog`]) to decrypt HTTPS
    /// connections; secrets from pcapng Decryption Secrets Blocks are added to them
    /// as [`Analyzer::read_capture`] meets them.
    pub fn set_tls_keylog(&mut self, keylog: KeyLog) {
        self.st.tls_keylog = keylog;
    }

    /// Adds key log text (NSS format) to the TLS secrets; returns the lines that
    /// could not be used.
    pub fn add_tls_keylog(&mut self, text: &[u8]) -> Vec<KeyLogWarning> {
        let warnings = self.st.tls_keylog.add_text(text);
        // Connections waiting for these secrets (live) go on now.
        let st = &mut self.st;
        let ids: Vec<ConnId> = st
            .conns
            .iter()
            .filter(|(_, c)| c.tls.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let mut outs = vec![];
            if let Some(t) = st.conns.get_mut(&id).and_then(|c| c.tls.as_mut()) {
                let mut keys = TlsKeys {
                    keylog: &st.tls_keylog,
                    sessions: &mut st.tls_sessions,
                    wait: st.cfg.tls_wait_for_secrets,
                };
                t.poll(&mut keys, &mut outs);
            }
            let ts = st.last_ts;
            st.tls_outputs(id, ts, None, outs);
        }
        warnings
    }

    /// Number of TLS sessions whose secrets are known (see [`KeyLog::len`]).
    pub fn tls_sessions_known(&self) -> usize {
        self.st.tls_keylog.len()
    }

    /// Reports a problem with the capture file itself (a damaged record).
    pub fn damaged(&mut self, ts: Option<Timestamp>, packet: Option<u64>, detail: String) {
        let ts = ts.unwrap_or(self.st.last_ts);
        self.st.finding(
            Code::DamagedPacket,
            ts,
            None,
            None,
            None,
            packet,
            None,
            detail,
        );
    }

    /// Live: capture time at which a TLS connection last waited for its secrets
    /// (see [`crate::tls::SessionCache::last_wait`]).
    pub fn tls_last_wait(&self) -> Option<Timestamp> {
        self.st.tls_sessions.last_wait()
    }

    /// The most severe finding so far.
    pub fn max_severity(&self) -> Option<Severity> {
        self.st.max_severity
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.st.cfg.limits
    }

    /// What the bounded tables hold now and held at most (see [`Usage`]). Walks
    /// the connection table: for tests and reports, not for every packet.
    pub fn usage(&self) -> Usage {
        let st = &self.st;
        let mut open_refs = 0;
        let mut pending = 0;
        let mut reserved = 0;
        let mut text_work = st.text_work_closed;
        for c in st.conns.values() {
            text_work += c.text_work();
            open_refs += c.frames.as_deref().map_or(0, FrameLink::open_refs);
            pending += c.pending.len();
            reserved += c.count_reserved();
        }
        let connections = self.tcp.connections();
        let conn_bytes = connections * limits::CONN_COST;
        let latency_bytes = st.latencies.capacity() * std::mem::size_of::<f64>();
        let ooo = self.tcp.buffered_bytes();
        let frag = self.defrag.bytes();
        Usage {
            held: st.stream_bytes
                + ooo
                + frag
                + st.payment_bytes
                + st.latencies.len() * std::mem::size_of::<f64>()
                + conn_bytes,
            reserved: reserved + ooo + frag + st.payment_bytes + latency_bytes + conn_bytes,
            stream_bytes: st.stream_bytes,
            peak_stream_bytes: st.peak_stream_bytes,
            connections,
            peak_connections: st.peak_connections.max(connections),
            open_refs,
            ooo_bytes: ooo,
            fragments: self.defrag.pending(),
            pending,
            payments: st.payments.len(),
            payment_bytes: st.payment_bytes,
            latency_samples: st.latencies.len(),
            evictions: st.evictions,
            text_work,
        }
    }

    /// Ends the analysis: flushes every connection, then returns the summary (also
    /// sent to the sink).
    pub fn finish(mut self, bytes: u64, files: Vec<String>) -> (SummaryRecord, Option<Severity>) {
        // Deferred steps run; nothing is deferred from here on (the helper thread
        // may still write the records, until the end).
        self.st.settle();
        self.st.set_sync(true);
        // USB devices still being recognised release their bytes first.
        let mut outs = vec![];
        let (ring, _) = self.st.keys.for_terminal(None);
        let mut classify = |d: &[u8]| classify_body(d, ring);
        self.usb
            .finish(&mut classify, &mut |o| outs.extend(own_usb(o)));
        self.usb_bytes(outs);
        let usb_devices: Vec<_> = self.usb.reports().map(|(id, r)| r.info(id)).collect();
        let st = &mut self.st;
        // A wrong baud rate or framing is a classic cause of garbage on the line.
        for d in &usb_devices {
            if let Some(line) = d.line.as_ref().filter(|l| !l.spec) {
                st.finding(
                    Code::LineSettings,
                    line.ts,
                    Some(Transport::Serial),
                    Some(d.link.clone().into()),
                    None,
                    Some(line.packet),
                    None,
                    format!(
                        "the host set the adapter of USB device {} to {} (SET_LINE_CODING at packet {}); the terminal expects 9600 8N1",
                        d.device, line.settings, line.packet
                    ),
                );
            }
        }
        self.tcp.flush_all(&mut |ev| st.tcp_event(ev));
        // Nothing on the configured ports, but ECR traffic on others: say where.
        if st.messages == 0 {
            for (port, s) in std::mem::take(&mut self.other.found) {
                st.finding(
                    Code::EcrOnOtherPort,
                    s.ts,
                    Some(Transport::Tcp),
                    Some(s.src.clone().into()),
                    Some(s.dst.clone().into()),
                    Some(s.packet),
                    None,
                    format!(
                        "{} on TCP port {port}, which is not analysed; run again with {} {port}",
                        s.what, s.option
                    ),
                );
            }
        }
        // Connections the reassembler never opened (none expected) are ended too.
        let ids: Vec<ConnId> = st.conns.keys().copied().collect();
        for id in ids {
            st.close_conn(id, st.last_ts, CloseReason::EndOfCapture);
        }
        // Drops by shared-table limits after the first one, which was reported.
        let drops: Vec<(u16, u64)> = std::mem::take(&mut st.later_drops).into_iter().collect();
        for (bit, n) in drops {
            let limit = Limit::ALL.into_iter().find(|l| *l as u16 == bit);
            let name = limit.map_or("?", Limit::name);
            let budget = match limit {
                Some(l) if !l.of_budget() => String::new(),
                _ => format!(" (--memory-limit {} MiB)", st.cfg.limits.budget >> 20),
            };
            st.finding(
                Code::LimitEvicted,
                st.last_ts,
                None,
                None,
                None,
                None,
                None,
                format!("{n} more drop(s) by the {name} limit after the one reported{budget}"),
            );
        }
        let summary = SummaryRecord {
            packets: self.packets,
            bytes,
            messages: st.messages,
            transactions: st.transactions,
            findings: st.findings.clone(),
            func_types: st.func_types.clone(),
            channels: st.channels.clone(),
            respcd: st.respcd.clone(),
            latency_ms: latency_of(&mut st.latencies),
            files,
            usb_devices,
            unused_keys: st
                .keys
                .unused_bound()
                .into_iter()
                .map(|(key, bound_to)| UnusedKey { key, bound_to })
                .collect(),
            terminals_without_key: st.terminals_without_key.iter().cloned().collect(),
            drops: None,
        };
        st.emit(Record::Summary(summary.clone()));
        // The helper thread, if any, writes the last records and ends.
        st.helper = None;
        (summary, st.max_severity)
    }
}

impl Limit {
    const ALL: [Limit; 11] = [
        Limit::Connections,
        Limit::StreamBytes,
        Limit::Pending,
        Limit::Ooo,
        Limit::FragmentEntries,
        Limit::FragmentBytes,
        Limit::Payments,
        Limit::Latency,
        Limit::OpenRefs,
        Limit::SummaryValues,
        Limit::SerialLinks,
    ];

    /// Whether the bound comes from the memory budget (`--memory-limit` moves
    /// it), rather than from the spec or a fixed number.
    fn of_budget(self) -> bool {
        !matches!(
            self,
            Limit::OpenRefs | Limit::SummaryValues | Limit::SerialLinks
        )
    }

    fn name(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::StreamBytes => "stream bytes",
            Limit::Pending => "unanswered requests per connection",
            Limit::Ooo => "out-of-order bytes",
            Limit::FragmentEntries => "IP datagrams in reassembly",
            Limit::FragmentBytes => "IP fragment bytes",
            Limit::Payments => "remembered payments",
            Limit::Latency => "latency samples",
            Limit::OpenRefs => "open refs",
            Limit::SummaryValues => "summary values",
            Limit::SerialLinks => "serial links",
        }
    }
}

impl State<'_> {
    /// A `limit-evicted` finding, once per limit and connection (`conn`), or once
    /// per limit for shared tables (`conn` None; later drops are counted and told
    /// at the end).
    fn limit_finding(
        &mut self,
        conn: Option<ConnId>,
        limit: Limit,
        ts: Timestamp,
        packet: Option<u64>,
        detail: impl FnOnce() -> String,
    ) {
        self.settle();
        self.evictions += 1;
        let bit = limit as u16;
        let (transport, src, dst) = match conn.and_then(|id| self.conns.get_mut(&id)) {
            Some(c) => {
                if c.limits_reported & bit != 0 {
                    return;
                }
                c.limits_reported |= bit;
                let (src, dst) = c.addrs(StreamDir::ClientToServer);
                (Some(c.transport()), Some(src), Some(dst))
            }
            None if conn.is_some() => return,
            None => {
                if self.limits_reported & bit != 0 {
                    *self.later_drops.entry(bit).or_default() += 1;
                    return;
                }
                self.limits_reported |= bit;
                (None, None, None)
            }
        };
        let detail = match limit {
            // The spec's bound (refs 1..127), the summary's and the serial links': not
            // the memory budget.
            l if !l.of_budget() => detail(),
            _ => format!(
                "{} (limit: {}, --memory-limit {} MiB)",
                detail(),
                limit.name(),
                self.cfg.limits.budget >> 20
            ),
        };
        self.finding(
            Code::LimitEvicted,
            ts,
            transport,
            src,
            dst,
            packet,
            None,
            detail,
        );
    }

    /// Recounts what connection `conn` holds into the stream-byte total and, when
    /// the total is over [`Limits::stream_bytes`], drops this connection's
    /// unfinished messages and then its oldest unanswered requests.
    fn account(&mut self, conn: ConnId, ts: Timestamp, packet: Option<u64>) {
        if self.deferring() {
            let limit = self.cfg.limits.stream_bytes;
            let (Some(c), Some(d)) = (self.conns.get_mut(&conn), &mut self.helper) else {
                return;
            };
            if !d.steps.is_empty() {
                let framing = c.framing_held();
                let at_most = framing
                    .saturating_add(c.pending_bytes)
                    .saturating_add(c.deferred_bound);
                let ub = c.ub_held.max(at_most);
                let total = d.ub_total.saturating_sub(c.ub_held).saturating_add(ub);
                if total <= limit {
                    d.ub_total = total;
                    c.ub_held = ub;
                    c.deferred += 1;
                    d.steps.push_back(Step::Account {
                        conn,
                        framing,
                        ts,
                        packet,
                    });
                    d.peak_steps = d.peak_steps.max(d.steps.len());
                    // Packets that bring no body still run what is due, so that
                    // the queue stays within its bound.
                    self.run_deferred(false);
                    return;
                }
                // The budget could be passed: count exactly, as one thread does.
                self.settle();
            }
        }
        self.account_now(conn, None, ts, packet);
        self.resync(conn);
    }

    /// [`State::account`] now; `framing` is what the connection's framing held
    /// when a deferred recount was due (`None`: now).
    fn account_now(
        &mut self,
        conn: ConnId,
        framing: Option<usize>,
        ts: Timestamp,
        packet: Option<u64>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let now = match framing {
            Some(f) => f.saturating_add(c.pending_bytes),
            None => c.count_held(),
        };
        self.stream_bytes = self.stream_bytes.saturating_sub(c.held).saturating_add(now);
        c.held = now;
        self.peak_stream_bytes = self.peak_stream_bytes.max(self.stream_bytes);
        let limit = self.cfg.limits.stream_bytes;
        if self.stream_bytes <= limit {
            return;
        }
        // A deferred recount never gets here (it was deferred only when the budget
        // could not be passed): the framing state is no longer that of its time.
        debug_assert!(framing.is_none(), "deferred recount over the budget");
        let (mut messages, mut bytes, mut requests) = (0usize, 0usize, 0usize);
        for d in c.dirs.iter_mut() {
            match d {
                DirState::Http(p) if p.held() > 0 => {
                    messages += 1;
                    bytes += p.abandon();
                }
                DirState::Text(t) if t.buffered() > 0 => {
                    messages += 1;
                    bytes += t.buffered();
                    t.reset();
                }
                _ => {}
            }
        }
        let mut refs = 0;
        if let Some(fl) = c.frames.as_mut() {
            let (n, b, r) = fl.abandon();
            messages += n;
            bytes += b;
            refs = r;
        }
        let mut tls_stopped = 0;
        if let Some(t) = c.tls.as_mut() {
            let (n, b) = t.abandon();
            tls_stopped = n;
            bytes += b;
        }
        let total_before = self.stream_bytes;
        let mut now = c.count_held();
        while self.stream_bytes.saturating_sub(c.held).saturating_add(now) > limit {
            let Some(p) = c.pending.pop_front() else {
                break;
            };
            c.pending_bytes = c.pending_bytes.saturating_sub(pending_cost(&p.facts));
            requests += 1;
            now = c.count_held();
        }
        self.stream_bytes = self.stream_bytes.saturating_sub(c.held).saturating_add(now);
        c.held = now;
        if messages + requests + tls_stopped + refs > 0 {
            self.limit_finding(Some(conn), Limit::StreamBytes, ts, packet, || {
                let tls = if tls_stopped > 0 {
                    format!(", and the unfinished TLS records of this connection: its TLS decryption stops in {tls_stopped} direction(s)")
                } else {
                    String::new()
                };
                let refs = if refs > 0 {
                    format!(", and forgot the {refs} frame(s) of this link waiting for their ack or answer (no timeout or unexpected-ack finding follows for them)")
                } else {
                    String::new()
                };
                format!(
                    "{total_before} bytes held by unfinished messages and unanswered requests over all connections, more than {limit}: dropped {messages} unfinished message(s) ({bytes} bytes) and {requests} unanswered request(s) of this connection{tls}{refs}; decoding resumes with the next message"
                )
            });
        }
    }

    /// A packet that could not be decoded: a finding, and the analysis goes on.
    fn damaged_packet(&mut self, pkt: &Packet<'_>, transport: Option<Transport>, detail: String) {
        self.finding(
            Code::DamagedPacket,
            pkt.ts,
            transport,
            None,
            None,
            Some(pkt.index),
            None,
            detail,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &mut self,
        code: Code,
        ts: Timestamp,
        transport: Option<Transport>,
        src: Option<CompactString>,
        dst: Option<CompactString>,
        packet: Option<u64>,
        message: Option<u64>,
        detail: String,
    ) {
        self.settle();
        if code == Code::UnansweredAtEnd && !self.cfg.report_unanswered_at_end {
            return;
        }
        *self.findings.entry(code).or_default() += 1;
        let sev = code.severity();
        self.max_severity = Some(self.max_severity.map_or(sev, |m| m.max(sev)));
        self.emit(Record::Finding(FindingRecord {
            ts: ts.as_secs_f64(),
            code,
            severity: sev,
            transport,
            src,
            dst,
            detail,
            rule: code.rule(),
            packet,
            message,
        }));
    }

    fn tcp_event(&mut self, ev: TcpEvent<'_>) {
        match ev {
            TcpEvent::Opened {
                conn,
                client,
                server,
                ts,
                ..
            } => {
                let kind = if self.cfg.http_ports.contains(&server.port()) {
                    ConnKind::Http
                } else if self.cfg.tcp_ports.contains(&server.port()) {
                    ConnKind::Tcp
                } else {
                    ConnKind::Probe
                };
                self.conns.insert(
                    conn,
                    Conn::new(addr_text(client), addr_text(server), Some(server), kind, ts),
                );
                // Connections whose close is deferred are gone already.
                let closing = match &self.helper {
                    Some(d) => d.closing,
                    _ => 0,
                };
                let open = self.conns.len().saturating_sub(closing);
                self.peak_connections = self.peak_connections.max(open);
            }
            TcpEvent::Data {
                conn,
                dir,
                ts,
                packet_index,
                bytes,
                ..
            } => {
                self.data(conn, dir, ts, packet_index, bytes);
                self.account(conn, ts, Some(packet_index));
            }
            TcpEvent::Gap {
                conn,
                dir,
                ts,
                offset,
                missing_bytes,
            } => {
                // It marks a request lost, which the body step reads.
                self.settle();
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let (src, dst) = c.addrs(dir);
                let transport = c.transport();
                let ignored = matches!(c.dirs[dir], DirState::Ignored);
                let mut evs = vec![];
                if let Some(t) = c.tls.as_mut() {
                    // Record boundaries are lost: this direction stays unread.
                    t.gap(dir);
                } else {
                    match &mut c.dirs[dir] {
                        DirState::Http(p) => p.gap(ts, missing_bytes, &mut evs),
                        DirState::Text(t) => {
                            t.reset();
                            c.cut[dir] = true;
                        }
                        _ => {}
                    }
                }
                if dir == StreamDir::ClientToServer && !ignored {
                    c.lost_request = true;
                }
                let mut outs = vec![];
                if let Some(fl) = c.frames.as_mut() {
                    fl.gap(side_of(dir), missing_bytes, &mut |o| {
                        outs.extend(own_output(o))
                    });
                }
                let explained = self.truncated_flows.contains(&(src.clone(), dst.clone()));
                if !ignored && !explained {
                    // An HTTP message cut by the hole is the gap's doing, not the
                    // sender's: said here rather than as a bad-envelope of its own.
                    let before = evs.len();
                    evs.retain(|e| {
                        !matches!(
                            e,
                            HttpEvent::Error {
                                error: HttpError::Interrupted { .. },
                                ..
                            }
                        )
                    });
                    let cut = if evs.len() < before {
                        "; it cut an HTTP message, which is lost with it"
                    } else {
                        ""
                    };
                    self.finding(
                        Code::TcpGap,
                        ts,
                        Some(transport),
                        Some(src),
                        Some(dst),
                        None,
                        None,
                        format!("{missing_bytes} byte(s) missing at stream offset {offset}; decoding resumes after the hole{cut}"),
                    );
                }
                for o in outs {
                    self.link_output(conn, o, None);
                }
                let mut bodies = vec![];
                http_bodies(&mut evs, &mut bodies);
                for b in bodies {
                    self.body(conn, dir, b, None);
                }
                if self.gapped.len() < 64 && !self.gapped.contains(&conn) {
                    self.gapped.push(conn);
                }
                self.account(conn, ts, None);
            }
            TcpEvent::Fin { conn, dir, ts } => {
                self.end_direction(conn, dir, ts);
                self.account(conn, ts, None);
            }
            TcpEvent::Closed { conn, ts, reason } => self.close_conn(conn, ts, reason),
        }
    }

    /// A direction ended (FIN, or the connection closed): whatever it still holds
    /// is a message now (an HTTP body delimited by the close, D6 half-close text).
    fn end_direction(&mut self, conn: ConnId, dir: StreamDir, ts: Timestamp) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut bodies = vec![];
        match &mut c.dirs[dir] {
            DirState::Http(p) => {
                let mut evs = vec![];
                p.finish(ts, &mut evs);
                http_bodies(&mut evs, &mut bodies);
            }
            DirState::Text(t) => {
                t.close(|m| bodies.push(Body::Text(m.body.to_vec(), m.rule, m.first_ts, m.last_ts)))
            }
            _ => {}
        }
        for b in bodies {
            self.body(conn, dir, b, None);
        }
    }

    fn close_conn(&mut self, conn: ConnId, ts: Timestamp, reason: CloseReason) {
        if self.deferring() {
            // What the connection's framing still holds becomes bodies now (their
            // steps deferred); reading its waiting requests and dropping it is a
            // step of its own, after theirs.
            self.close_framing(conn, ts);
            if let (Some(c), Some(d)) = (self.conns.get_mut(&conn), &mut self.helper) {
                c.deferred += 1;
                d.closing += 1;
                d.steps.push_back(Step::Close { conn, ts, reason });
                d.peak_steps = d.peak_steps.max(d.steps.len());
            }
            self.run_deferred(false);
            return;
        }
        self.close_framing(conn, ts);
        self.close_requests(conn, ts, reason);
    }

    /// Ends a connection's framing: what it still holds becomes messages.
    fn close_framing(&mut self, conn: ConnId, ts: Timestamp) {
        // A TLS connection that never got as far as encryption is still described.
        let mut tls_outs = vec![];
        if let Some(t) = self.conns.get_mut(&conn).and_then(|c| c.tls.as_mut()) {
            let mut keys = TlsKeys {
                keylog: &self.tls_keylog,
                sessions: &mut self.tls_sessions,
                wait: self.cfg.tls_wait_for_secrets,
            };
            t.finish(&mut keys, &mut tls_outs);
        }
        self.tls_outputs(conn, ts, None, tls_outs);
        // Whatever a direction or the frame link still holds ends with the connection.
        self.end_direction(conn, StreamDir::ClientToServer, ts);
        self.end_direction(conn, StreamDir::ServerToClient, ts);
        let mut outs = vec![];
        if let Some(fl) = self.conns.get_mut(&conn).and_then(|c| c.frames.as_mut()) {
            fl.finish(ts, &mut |o| outs.extend(own_output(o)));
        }
        for o in outs {
            self.link_output(conn, o, None);
        }
    }

    /// Ends a connection: its waiting requests got no response, and it is dropped.
    fn close_requests(&mut self, conn: ConnId, ts: Timestamp, reason: CloseReason) {
        if reason == CloseReason::Evicted {
            let limit = self.cfg.limits.connections;
            let (held, pending) = self
                .conns
                .get(&conn)
                .map_or((0, 0), |c| (c.held, c.pending.len()));
            let detail = move || {
                format!("{limit} connections were tracked: this one, the least recently active, was dropped ({held} bytes of unfinished messages, {pending} request(s) waiting for a response)")
            };
            if held > 0 || pending > 0 {
                self.limit_finding(Some(conn), Limit::Connections, ts, None, detail);
            } else {
                // Nothing lost but the connection's state: counted, told once.
                self.limit_finding(None, Limit::Connections, ts, None, detail);
            }
        }
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        self.stream_bytes = self.stream_bytes.saturating_sub(c.held);
        if let Some(d) = &mut self.helper {
            d.ub_total = d.ub_total.saturating_sub(c.ub_held);
        }
        self.text_work_closed += c.text_work();
        let transport = c.transport();
        let (src, dst) = c.addrs(StreamDir::ClientToServer);
        for p in c.pending.drain(..) {
            let name = match p.facts.func_type {
                _ if p.preflight => "CORS preflight".to_string(),
                Some(ft) => describe_ft(ft),
                None => "request".into(),
            };
            if reason == CloseReason::EndOfCapture {
                self.finding(
                    Code::UnansweredAtEnd,
                    p.last_ts,
                    Some(transport),
                    Some(src.clone()),
                    Some(dst.clone()),
                    p.packet,
                    Some(p.index),
                    format!("{name} (message {}) was still waiting for its response when the capture ended ({:.0} ms after it was sent)", p.index, ts.millis_since(p.last_ts)),
                );
            } else {
                self.finding(
                    Code::NoResponse,
                    ts,
                    Some(transport),
                    Some(src.clone()),
                    Some(dst.clone()),
                    p.packet,
                    Some(p.index),
                    format!("{name} (message {}) got no response: the connection ended ({reason}) {:.0} ms after it was sent", p.index, ts.millis_since(p.last_ts)),
                );
            }
        }
    }

    fn data(&mut self, conn: ConnId, dir: StreamDir, ts: Timestamp, packet: u64, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_ts = ts;
        if c.tls.is_none()
            && matches!(
                c.dirs,
                PerDir {
                    client: DirState::Undecided,
                    server: DirState::Undecided
                }
            )
            && (tcp::looks_like_tls(bytes) || crate::tls::looks_like_record(bytes))
        {
            c.tls = Some(Box::default());
        }
        if c.tls.is_some() {
            self.tls_data(conn, dir, ts, packet, bytes);
            return;
        }
        self.plain_data(conn, dir, ts, Some(packet), bytes);
    }

    /// Bytes of a TLS connection: records in, decrypted application data on to
    /// [`State::plain_data`] as if it had come over plain TCP.
    fn tls_data(&mut self, conn: ConnId, dir: StreamDir, ts: Timestamp, packet: u64, bytes: &[u8]) {
        let mut outs = vec![];
        if let Some(t) = self.conns.get_mut(&conn).and_then(|c| c.tls.as_mut()) {
            let mut keys = TlsKeys {
                keylog: &self.tls_keylog,
                sessions: &mut self.tls_sessions,
                wait: self.cfg.tls_wait_for_secrets,
            };
            t.feed(dir, bytes, ts, &mut keys, &mut outs);
        }
        self.tls_outputs(conn, ts, Some(packet), outs);
    }

    fn tls_outputs(&mut self, conn: ConnId, ts: Timestamp, packet: Option<u64>, outs: Vec<TlsOut>) {
        for o in outs {
            match o {
                TlsOut::Plain { dir, data, ts } => {
                    self.plain_data(conn, dir, ts, packet, &data);
                }
                TlsOut::Finding { code, dir, detail } => {
                    let Some(c) = self.conns.get(&conn) else {
                        return;
                    };
                    let (src, dst) = c.addrs(dir);
                    let transport = c.transport();
                    self.finding(
                        code,
                        ts,
                        Some(transport),
                        Some(src),
                        Some(dst),
                        packet,
                        None,
                        detail,
                    );
                }
            }
        }
    }

    fn plain_data(
        &mut self,
        conn: ConnId,
        dir: StreamDir,
        ts: Timestamp,
        packet: Option<u64>,
        bytes: &[u8],
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.dirs[dir], DirState::Undecided) {
            let kind = match c.kind {
                ConnKind::Probe => match probe_kind(bytes) {
                    Some(k) => {
                        c.kind = k;
                        k
                    }
                    None => {
                        c.dirs[dir] = DirState::Ignored;
                        return;
                    }
                },
                k => k,
            };
            c.dirs[dir] = match kind {
                ConnKind::Http => DirState::Http(Box::new(HttpParser::new(HttpConfig {
                    max_body_bytes: self.cfg.limits.http_body,
                    ..HttpConfig::default()
                }))),
                _ if ecr_proto::frame::begins_frames(bytes) || junk_before_frame(bytes) => {
                    c.frames.get_or_insert_with(|| Box::new(FrameLink::new()));
                    DirState::Frames
                }
                _ => DirState::Text(TextFramer::new()),
            };
        }
        // Taken, so that `self.body` can borrow `self`; given back below.
        let Scratch {
            mut bodies,
            mut outs,
            mut evs,
        } = std::mem::take(&mut self.scratch);
        let pos = c.server;
        match &mut c.dirs[dir] {
            DirState::Http(p) => {
                p.feed(ts, bytes, &mut evs);
                http_bodies(&mut evs, &mut bodies);
            }
            DirState::Text(t) => {
                let (ring, _) = self.keys.for_terminal(pos);
                t.feed(bytes, ts, ring, |m| {
                    bodies.push(Body::Text(m.body.to_vec(), m.rule, m.first_ts, m.last_ts))
                });
            }
            DirState::Frames => {
                if let Some(fl) = c.frames.as_mut() {
                    fl.feed(side_of(dir), bytes, ts, &mut |o| outs.extend(own_output(o)));
                }
            }
            DirState::Undecided | DirState::Ignored => {}
        }
        if let Some(fl) = c.frames.as_mut() {
            fl.advance(ts, &mut |o| outs.extend(own_output(o)));
        }
        for b in bodies.drain(..) {
            self.body(conn, dir, b, packet);
        }
        for o in outs.drain(..) {
            self.link_output(conn, o, packet);
        }
        self.scratch.give_back(bodies, outs, evs);
    }

    fn link_output(&mut self, conn: ConnId, o: OwnedLinkOutput, packet: Option<u64>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match o {
            OwnedLinkOutput::Finding {
                code: Code::LimitEvicted,
                ts,
                detail,
                ..
            } => {
                // One per connection; later ones are counted.
                self.limit_finding(Some(conn), Limit::OpenRefs, ts, packet, || {
                    format!("{detail}; later drops on this connection are not reported one by one")
                });
            }
            OwnedLinkOutput::Finding {
                code,
                from,
                ts,
                detail,
            } => {
                let (src, dst) = c.addrs(dir_of(from));
                let transport = c.transport();
                self.finding(
                    code,
                    ts,
                    Some(transport),
                    Some(src),
                    Some(dst),
                    packet,
                    None,
                    detail,
                );
            }
            OwnedLinkOutput::Message(m) => {
                let dir = dir_of(m.from);
                self.body(conn, dir, Body::Frame(m), packet);
            }
            // The answer frame itself follows; it carries the latency.
            OwnedLinkOutput::Answered {
                ref_num,
                latency_ms,
            } => self.last_answer = Some((conn, ref_num, latency_ms)),
        }
    }

    /// The terminal answers while the cash register's text stream still holds the
    /// tail of a message cut by a gap: the tail is complete (the terminal would not
    /// answer otherwise) and goes first, so that messages stay in time order.
    fn flush_cut_tail(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.cut.client {
            return;
        }
        let mut bodies = vec![];
        if let DirState::Text(t) = &mut c.dirs.client {
            if t.buffered() > 0 {
                t.close(|m| {
                    bodies.push(Body::Text(m.body.to_vec(), m.rule, m.first_ts, m.last_ts))
                });
            }
        }
        for b in bodies {
            self.body(conn, StreamDir::ClientToServer, b, None);
        }
    }

    fn body(&mut self, conn: ConnId, dir: StreamDir, body: Body, packet: Option<u64>) {
        if dir == StreamDir::ServerToClient {
            self.flush_cut_tail(conn);
        }
        if !self.deferring() {
            self.body_now(conn, dir, &body, packet, None, None, None);
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let was_cut = matches!(body, Body::Text(..)) && std::mem::take(&mut c.cut[dir]);
        let answer = match &body {
            Body::Frame(m) if m.data.is_empty() => Some(self.last_answer.take()),
            _ => None,
        };
        let len = body.bytes().len();
        let bound = limits::PENDING_COST.saturating_add(len.saturating_add(32).saturating_mul(9));
        c.deferred += 1;
        c.deferred_bound = c.deferred_bound.saturating_add(bound);
        let counts = !matches!(body, Body::HttpError(..));
        let job = (counts && len > 0 && len <= MAX_HANDED_BODY)
            .then(|| (c.context(dir, body.first_ts(), packet), c.server));
        let Some(d) = &mut self.helper else {
            return;
        };
        let job = match job {
            Some((ctx, server)) => Ok(d.pipe.submit(Box::new(body), ctx, server)),
            None => Err(Box::new(body)),
        };
        d.bytes = d.bytes.saturating_add(len);
        d.messages += u64::from(counts);
        d.steps.push_back(Step::Body(BodyStep {
            conn,
            dir,
            packet,
            was_cut,
            answer,
            job,
            len,
            bound,
            counts,
        }));
        d.peak_steps = d.peak_steps.max(d.steps.len());
        self.run_deferred(false);
    }

    /// A record out: to the sink, or to the helper thread that writes them.
    fn emit(&mut self, record: Record) {
        match &mut self.helper {
            Some(d) if d.pipe.writes() => d.pipe.emit(record),
            _ => self.sink.record(record),
        }
    }

    /// The messages counted so far, deferred ones included.
    fn messages_so_far(&self) -> u64 {
        match &self.helper {
            Some(d) => self.messages + d.messages,
            _ => self.messages,
        }
    }

    /// Whether a step may be deferred now (see [`Deferred`]).
    fn deferring(&self) -> bool {
        matches!(&self.helper, Some(d) if !d.running && !d.sync)
    }

    /// Runs every deferred step (see [`Deferred`]), unless called from one.
    fn settle(&mut self) {
        if matches!(&self.helper, Some(d) if !d.running && !d.steps.is_empty()) {
            self.run_deferred(true);
        }
    }

    /// Defers no step (`on`) or defers again; returns the previous setting.
    fn set_sync(&mut self, on: bool) -> bool {
        match &mut self.helper {
            Some(d) => std::mem::replace(&mut d.sync, on),
            _ => false,
        }
    }

    /// Runs the deferred steps whose decodings are back, oldest first, and (`all`,
    /// or while over the bounds of what may wait) the others, waiting for their
    /// decodings or decoding them here.
    fn run_deferred(&mut self, all: bool) {
        loop {
            let Some(d) = &mut self.helper else {
                return;
            };
            let Some(front) = d.steps.front() else {
                return;
            };
            let must = all || d.steps.len() > MAX_DEFERRED_STEPS || d.bytes > MAX_DEFERRED_BYTES;
            if let Step::Body(BodyStep { job: Ok(seq), .. }) = front {
                if !must && !d.pipe.is_ready(*seq) {
                    return;
                }
            }
            let Some(step) = d.steps.pop_front() else {
                return;
            };
            d.running = true;
            let conn = match step {
                Step::Body(b) => {
                    d.bytes = d.bytes.saturating_sub(b.len);
                    d.messages = d.messages.saturating_sub(u64::from(b.counts));
                    let (body, decoded) = match b.job {
                        Ok(seq) => match d.pipe.take(seq) {
                            Some((body, decoded)) => (Some(body), decoded),
                            None => (None, None),
                        },
                        Err(body) => (Some(body), None),
                    };
                    if let Some(body) = body {
                        let (was_cut, answer) = (Some(b.was_cut), b.answer);
                        self.body_now(b.conn, b.dir, &body, b.packet, was_cut, answer, decoded);
                    }
                    (b.conn, b.bound)
                }
                Step::Account {
                    conn,
                    framing,
                    ts,
                    packet,
                } => {
                    self.account_now(conn, Some(framing), ts, packet);
                    (conn, 0)
                }
                Step::Close { conn, ts, reason } => {
                    d.closing = d.closing.saturating_sub(1);
                    self.close_requests(conn, ts, reason);
                    (conn, 0)
                }
            };
            let (conn, bound) = conn;
            if let (Some(c), Some(d)) = (self.conns.get_mut(&conn), &mut self.helper) {
                c.deferred = c.deferred.saturating_sub(1);
                c.deferred_bound = c.deferred_bound.saturating_sub(bound);
                d.resync(c);
            }
            if let Some(d) = &mut self.helper {
                d.running = false;
            }
        }
    }

    /// See [`Deferred::resync`] (nothing to do without a helper thread).
    fn resync(&mut self, conn: ConnId) {
        if let Some(d) = &mut self.helper {
            if let Some(c) = self.conns.get_mut(&conn) {
                d.resync(c);
            }
        }
    }

    /// What follows a body's decoding (all of it without a decoding thread).
    /// `was_cut`, `answer` and `decoded` were taken or made when the body came, if
    /// its step was deferred (see [`Deferred`]).
    #[allow(clippy::too_many_arguments)]
    fn body_now(
        &mut self,
        conn: ConnId,
        dir: StreamDir,
        body: &Body,
        packet: Option<u64>,
        was_cut: Option<bool>,
        answer: Option<Option<(ConnId, u8, f64)>>,
        decoded_here: Option<Decoded>,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if let Body::HttpError(ts, detail) = body {
            let (src, dst) = c.addrs(dir);
            let transport = c.transport();
            self.finding(
                Code::BadEnvelope,
                *ts,
                Some(transport),
                Some(src),
                Some(dst),
                packet,
                None,
                detail.clone(),
            );
            return;
        }
        let server = c.server;
        let (bytes, first_ts, last_ts) = (body.bytes(), body.first_ts(), body.last_ts());
        // As the body's job was given it, when it was deferred.
        let ctx = c.context(dir, first_ts, packet);
        let (src, dst, transport) = (ctx.src.clone(), ctx.dst.clone(), ctx.transport);
        // A browser's CORS preflight, or the answer to the one waiting first.
        let (preflight, asked_at) = match &body {
            Body::Http(m) => match &m.kind {
                HttpKind::Request { method, .. } => (
                    dir == StreamDir::ClientToServer
                        && method.eq_ignore_ascii_case("OPTIONS")
                        && m.header("access-control-request-method").is_some(),
                    None,
                ),
                HttpKind::Response { .. } => match c.pending.front() {
                    Some(p) if p.preflight && dir == StreamDir::ServerToClient => {
                        (true, Some(p.last_ts))
                    }
                    _ => (false, None),
                },
            },
            _ => (false, None),
        };
        let (origin, cors) = match &body {
            Body::Http(m) => cors_check(m, dir, c.pending.front(), preflight),
            _ => (None, None),
        };
        let server_label = c.server_label.clone();
        let have_keys = !self.keys.is_empty();
        let (ring, numbers) = self.keys.for_terminal(server);
        let no_key_here = ring.is_empty() && have_keys;
        let mut extra: Vec<(Code, String)> = vec![];
        let mut decoded: Decoded;
        match &body {
            Body::Frame(m) if m.data.is_empty() => {
                // A bare ack or error frame.
                decoded = crate::message::bare_frame(&ctx, m.frame_type.is_error());
                let answer = match answer {
                    Some(a) => a,
                    None => self.last_answer.take(),
                };
                if let Some((c, r, latency)) = answer {
                    if c == conn && r == m.ref_num {
                        decoded.record.answer_ms = Some(latency);
                    }
                }
            }
            _ => {
                decoded = match decoded_here {
                    Some(d) => d,
                    None => decode_body(bytes, ring, numbers, &ctx),
                };
            }
        }
        match &body {
            Body::Http(m) => {
                let info = match &m.kind {
                    HttpKind::Request { method, path } => {
                        if !method.eq_ignore_ascii_case("POST") && !preflight {
                            extra.push((Code::HttpMethod, format!("{method} {path}: the ECR API takes POST only (a terminal answers 4004)")));
                        }
                        if let Some(ft) = decoded.facts.func_type {
                            let expected = ft.http_path();
                            let p = path.split('?').next().unwrap_or(path);
                            if let Some(exp) = expected {
                                if exp != p {
                                    extra.push((
                                        Code::HttpPathMismatch,
                                        format!(
                                            "{} ({}) sent to {p}; its path is {exp}",
                                            ft.name().unwrap_or("?"),
                                            ft.0
                                        ),
                                    ));
                                }
                            }
                        }
                        HttpInfo {
                            method: Some(method.clone()),
                            path: Some(path.clone()),
                            status: None,
                            reason: None,
                        }
                    }
                    HttpKind::Response { status, reason } => HttpInfo {
                        method: None,
                        path: None,
                        status: Some(*status),
                        reason: Some(reason.clone()),
                    },
                };
                // A GET without a body is still a request worth showing.
                if m.body.is_empty() {
                    decoded.findings.retain(|(c, _)| *c != Code::BadEnvelope);
                    decoded.record.raw = None;
                }
                decoded.record.http = Some(info);
            }
            Body::Text(_, rule, _, _) => {
                decoded.record.framing = Some(rule.as_str());
                if *rule == Rule::Overlong {
                    extra.push((
                        Code::BadEnvelope,
                        format!(
                            "no message boundary within {} bytes",
                            crate::tcptext::MAX_MESSAGE
                        ),
                    ));
                }
            }
            Body::HttpError(..) => {}
            Body::Frame(m) => {
                decoded.record.ref_num = Some(m.ref_num);
                if transport == Transport::Tcp {
                    decoded.record.framing = Some(Rule::Frames.as_str());
                }
                decoded.record.frame = Some(FrameInfo {
                    frame_type: m.frame_type.0,
                    version: m.version,
                    total_len: m.total_len,
                    data_len: m.data_len,
                    fragments: m.fragments,
                    offset: m.offset,
                    // The serial tree shows each fragment; TCP 9002 records keep
                    // their shape.
                    parts: if transport == Transport::Serial {
                        m.parts.clone()
                    } else {
                        vec![]
                    },
                });
            }
        }
        if preflight {
            // Shown as what it is, without the findings of an empty ECR message.
            decoded.findings.clear();
            extra.clear();
            decoded.record.role = Role::Preflight;
            decoded.record.digest = "absent";
            decoded.record.raw = None;
            decoded.record.answer_ms = asked_at.map(|t| first_ts.millis_since(t));
        }
        if let Some(problem) = cors {
            extra.push((Code::CorsBlocked, problem));
        }
        // The first text message after a gap: if it does not decode, it is the rest
        // of a message whose start was lost, not a message of its own.
        let mut tail = false;
        if let (Body::Text(..), Some(c)) = (&body, self.conns.get_mut(&conn)) {
            let cut = match was_cut {
                Some(w) => w,
                None => std::mem::take(&mut c.cut[dir]),
            };
            if cut
                && decoded.record.content.is_none()
                && decoded.record.response.is_none()
                && decoded
                    .findings
                    .iter()
                    .any(|(code, _)| matches!(code, Code::BadEnvelope | Code::DecryptFailed))
            {
                tail = true;
                decoded.record.gap = Some("tail");
                decoded
                    .findings
                    .retain(|(code, _)| !matches!(code, Code::BadEnvelope | Code::DecryptFailed));
                extra.retain(|(code, _)| *code != Code::BadEnvelope);
            }
        }
        // A response with no request waiting, after a gap in the cash register's
        // stream: it answers the request the capture lost.
        if let Some(c) = self.conns.get_mut(&conn) {
            if dir == StreamDir::ServerToClient
                && decoded.record.role == Role::Response
                && c.pending.is_empty()
                && std::mem::take(&mut c.lost_request)
            {
                decoded.record.gap = Some("answers-lost-request");
            }
        }
        self.messages += 1;
        let index = self.messages;
        decoded.record.index = index;
        let record = &decoded.record;
        let mut counted = true;
        if record.role == Role::Request && record.content.is_some() {
            counted &= match record.func_type {
                Some(f) => count_value(&mut self.func_types, itoa::Buffer::new().format(f)),
                None => count_value(&mut self.func_types, "unknown"),
            };
            if decoded.facts.func_type == Some(FuncType::PAYMENT) {
                if let Some(ch) = &decoded.facts.channel {
                    counted &= count_value(&mut self.channels, ch);
                }
            }
        }
        if let Some(rc) = &record.respcd {
            counted &= count_value(&mut self.respcd, rc);
        }
        if !counted {
            let (ts, packet) = (ctx.ts, ctx.packet);
            self.limit_finding(None, Limit::SummaryValues, ts, packet, || {
                format!("the summary counts at most {MAX_SUMMARY_VALUES} distinct values of at most {MAX_SUMMARY_VALUE_LEN} bytes each for func_types, channels and respcd: others are counted as \"{OTHER_VALUE}\"")
            });
        }
        // Cross-message check: a same-day partial refund of a card payment.
        if decoded.facts.func_type == Some(FuncType::REFUND) {
            if let Some(p) = decoded
                .facts
                .order_id
                .as_ref()
                .and_then(|o| self.payments.get(o.as_str()))
            {
                let refund = decoded
                    .facts
                    .refund_amount
                    .as_deref()
                    .and_then(dollars_to_cents);
                if let (Some(r), Some(total)) = (refund, p.amount_cents) {
                    if r < total && day_of(first_ts) == p.day && is_card_channel(&p.channel) {
                        extra.push((Code::PartialCardRefund, format!(
                            "refund of {} of a {} payment of {} made the same day: card payments can only be refunded in full on the day",
                            decoded.facts.refund_amount.as_deref().unwrap_or("?"),
                            p.channel,
                            cents_text(total)
                        )));
                    }
                }
            }
        }
        let role = record.role;
        let ref_num = record.ref_num;
        let is_response = decoded.facts.is_response;
        let facts = std::mem::take(&mut decoded.facts);
        let mut findings: Vec<(Code, String)> = decoded.findings.drain(..).chain(extra).collect();
        if no_key_here {
            // Keys were given, but all are bound to other terminals: say so rather
            // than "no POS-KEY was given".
            for (code, detail) in findings.iter_mut().filter(|(c, _)| *c == Code::NoKey) {
                *detail = detail.replace(
                    "no POS-KEY was given",
                    &format!(
                        "no POS-KEY given is for terminal {server_label} (the key file binds keys to {} only)",
                        self.keys.bound_addresses()
                    ),
                );
                let _ = code;
                if self.terminals_without_key.len() < MAX_TERMINALS_WITHOUT_KEY {
                    self.terminals_without_key.insert(server_label.to_string());
                }
            }
        }
        if let Some(hook) = self.body_hook.as_mut() {
            hook(&decoded.record, bytes);
        }
        self.emit(Record::Message(decoded.record));
        for (code, detail) in findings {
            self.finding(
                code,
                first_ts,
                Some(transport),
                Some(src.clone()),
                Some(dst.clone()),
                packet,
                Some(index),
                detail,
            );
        }
        // Pairing: business requests from the cash register wait for the next
        // response on the connection (HTTP pipelining and D2's later result alike).
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match (dir, role, is_response) {
            (StreamDir::ClientToServer, Role::Request | Role::Preflight, false) if !tail => {
                let mut dropped = None;
                if c.pending.len() >= limits::MAX_PENDING_PER_CONN {
                    if let Some(old) = c.pending.pop_front() {
                        c.pending_bytes = c.pending_bytes.saturating_sub(pending_cost(&old.facts));
                        dropped = Some(old.index);
                    }
                }
                c.pending_bytes = c.pending_bytes.saturating_add(pending_cost(&facts));
                // Room for one (a VecDeque's first push makes room for four, 1.2 KB
                // per connection, when most connections wait for one answer).
                if c.pending.capacity() == 0 {
                    c.pending.reserve_exact(1);
                }
                c.pending.push_back(PendingRequest {
                    index,
                    preflight: role == Role::Preflight,
                    origin,
                    ref_num,
                    first_ts,
                    last_ts,
                    packet,
                    facts,
                });
                if let Some(old) = dropped {
                    self.limit_finding(Some(conn), Limit::Pending, first_ts, packet, || {
                        format!(
                            "more than {} requests were waiting for a response on this connection: the oldest (message {old}) and any later overflow are no longer paired or checked for a missing response",
                            limits::MAX_PENDING_PER_CONN
                        )
                    });
                }
            }
            // An error frame refuses the request at the link level: no business
            // response will come for it.
            (StreamDir::ServerToClient, Role::ErrorFrame, _) => {
                c.pending
                    .retain(|p| p.ref_num.is_none() || p.ref_num != ref_num);
                c.pending_bytes = c.pending.iter().map(|p| pending_cost(&p.facts)).sum();
            }
            (StreamDir::ServerToClient, Role::Preflight, _) => {
                if let Some(req) = c.pending.pop_front() {
                    c.pending_bytes = c.pending_bytes.saturating_sub(pending_cost(&req.facts));
                }
            }
            (StreamDir::ServerToClient, Role::Response, _) => {
                if let Some(req) = c.pending.pop_front() {
                    c.pending_bytes = c.pending_bytes.saturating_sub(pending_cost(&req.facts));
                    self.transaction(transport, &src, &dst, req, index, first_ts, facts);
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn transaction(
        &mut self,
        transport: Transport,
        pos: &str,
        ecr: &str,
        req: PendingRequest,
        resp_index: u64,
        resp_ts: Timestamp,
        mut resp: Facts,
    ) {
        self.transactions += 1;
        let latency_ms = resp_ts.millis_since(req.last_ts);
        let max_samples = self.cfg.limits.latency_samples;
        if self.latencies.len() < max_samples {
            self.latencies.push(latency_ms);
        } else {
            self.limit_finding(None, Limit::Latency, resp_ts, None, || {
                format!("{max_samples} latency samples kept: the summary's latency percentiles leave out later transactions")
            });
        }
        let rf = &req.facts;
        // Remember successful card payments for the refund check, which only a
        // card payment can fail (`is_card_channel` in `body`): on busy
        // traffic the table then holds the card payments of a longer time, and a
        // payment by wallet or QR costs nothing here.
        if rf.func_type == Some(FuncType::PAYMENT)
            && rf.channel.as_deref().is_some_and(is_card_channel)
            && crate::message::is_success(resp.respcd.as_deref())
        {
            let pay = Payment {
                amount_cents: resp
                    .txamt
                    .as_deref()
                    .and_then(|t| t.trim().parse().ok())
                    .or_else(|| rf.amt.as_deref().and_then(dollars_to_cents)),
                channel: rf.channel.clone().unwrap_or_default(),
                day: day_of(req.first_ts),
            };
            // The response's order number is usually the request's: remembering it
            // twice would only look the same entry up again (in a table of tens of
            // thousands, a cache miss each).
            let resp_order = resp
                .out_trade_no
                .as_ref()
                .filter(|o| rf.out_trade_no.as_ref() != Some(*o));
            for id in [resp.syssn.as_ref(), rf.out_trade_no.as_ref(), resp_order]
                .into_iter()
                .flatten()
            {
                self.remember_payment(id, &pay, resp_ts);
            }
        }
        // The request and the response's facts are ours: what the record keeps of
        // them is moved, not copied.
        let mut rf = req.facts;
        let record = TransactionRecord {
            ts: req.first_ts.as_secs_f64(),
            transport,
            func_type: rf.func_type.map(|f| f.0),
            latency_ms,
            respcd: resp.respcd.take(),
            out_trade_no: rf.out_trade_no.take().or(resp.out_trade_no.take()),
            src: CompactString::from(ecr),
            dst: CompactString::from(pos),
            func_name: rf.func_type.and_then(FuncType::name),
            channel: rf.channel.take(),
            amt: rf.amt.take(),
            syssn: resp.syssn.take(),
            request: Some(req.index),
            response: Some(resp_index),
        };
        self.emit(Record::Transaction(record));
    }
}

impl State<'_> {
    /// Remembers a payment under `id`; the oldest are forgotten beyond the
    /// payment limits (entries and bytes).
    fn remember_payment(&mut self, id: &str, pay: &Payment, ts: Timestamp) {
        let cost = |id: &str, p: &Payment| 2 * id.len() + p.channel.len() + limits::PAYMENT_COST;
        match self.payments.insert(id, pay.clone()) {
            Some(old) => {
                self.payment_bytes = self
                    .payment_bytes
                    .saturating_sub(cost(id, &old))
                    .saturating_add(cost(id, pay));
            }
            None => self.payment_bytes = self.payment_bytes.saturating_add(cost(id, pay)),
        }
        let (max, max_bytes) = (self.cfg.limits.payments, self.cfg.limits.payment_bytes);
        while self.payments.len() > max || self.payment_bytes > max_bytes {
            let Some((oldest, p)) = self.payments.pop_oldest() else {
                break;
            };
            self.payment_bytes = self.payment_bytes.saturating_sub(cost(&oldest, &p));
            let n = self.payments.len();
            let b = self.payment_bytes;
            self.limit_finding(None, Limit::Payments, ts, None, || {
                format!("card payments remembered for the partial-refund check reached {max} entries or {max_bytes} bytes (now {n}, {b} bytes): the oldest are forgotten, so refunds of them are not checked")
            });
        }
        if self.payments.is_empty() {
            self.payment_bytes = 0;
        }
    }
}

fn describe_ft(f: FuncType) -> String {
    match f.name() {
        Some(n) => format!("{n} ({})", f.0),
        None => format!("func_type {}", f.0),
    }
}

/// "10.10" dollars to 1010 cents.
fn dollars_to_cents(s: &str) -> Option<i64> {
    let v: f64 = s.trim().parse().ok()?;
    if !v.is_finite() || v.abs() > 1e12 {
        return None;
    }
    Some((v * 100.0).round() as i64)
}

fn cents_text(c: i64) -> String {
    format!("{}.{:02}", c / 100, (c % 100).abs())
}

fn day_of(ts: Timestamp) -> i64 {
    ts.as_nanos().div_euclid(86_400 * 1_000_000_000)
}

/// Whether a TCP 9002 direction that does not start with a frame is still a frame
/// stream: its first byte cannot begin a text message (JSON, a JSON string or Base64,
/// after white space) and a frame start `2f 6e 01` follows. Line noise or a stray
/// byte before the first frame is then reported as `garbage-bytes` by the frame
/// decoder, instead of the whole direction being read as broken text.
fn junk_before_frame(bytes: &[u8]) -> bool {
    let Some(&first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return false;
    };
    let text_start =
        matches!(first, b'{' | b'[' | b'"' | b'+' | b'/' | b'=') || first.is_ascii_alphanumeric();
    !text_start && memchr::memmem::find(bytes, &[0x2f, 0x6e, 0x01]).is_some()
}

fn probe_kind(bytes: &[u8]) -> Option<ConnKind> {
    if bytes.starts_with(&[0x2f, 0x6e, 0x01]) {
        return Some(ConnKind::Tcp);
    }
    if bytes.starts_with(b"POST /api/pos/") || bytes.starts_with(b"GET /api/pos/") {
        return Some(ConnKind::Http);
    }
    envelope::probe(bytes).map(|_| ConnKind::Tcp)
}

/// A message body from one of the transports.
pub(crate) enum Body {
    Http(HttpMessage),
    HttpError(Timestamp, String),
    Text(Vec<u8>, Rule, Timestamp, Timestamp),
    Frame(OwnedLinkMessage),
}

impl Body {
    /// When its first byte was seen.
    fn first_ts(&self) -> Timestamp {
        match self {
            Body::Http(m) => m.ts_first_byte,
            Body::Text(_, _, f, _) => *f,
            Body::Frame(m) => m.first_ts,
            Body::HttpError(ts, _) => *ts,
        }
    }

    /// When its last byte was seen.
    fn last_ts(&self) -> Timestamp {
        match self {
            Body::Http(m) => m.ts_last_byte,
            Body::Text(_, _, _, l) => *l,
            Body::Frame(m) => m.last_ts,
            Body::HttpError(ts, _) => *ts,
        }
    }

    /// The message's bytes (none for an HTTP error).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Body::Http(m) => &m.body,
            Body::Text(b, ..) => b,
            Body::Frame(m) => &m.data,
            Body::HttpError(..) => &[],
        }
    }
}

/// Vectors reused from packet to packet (empty between uses).
#[derive(Default)]
struct Scratch {
    bodies: Vec<Body>,
    outs: Vec<OwnedLinkOutput>,
    evs: Vec<HttpEvent>,
}

impl Scratch {
    /// Vectors kept for the next packet: at most this many entries of room each
    /// (a packet of many tiny messages does not leave a large vector behind).
    const KEEP: usize = 16;

    fn give_back(&mut self, bodies: Vec<Body>, outs: Vec<OwnedLinkOutput>, evs: Vec<HttpEvent>) {
        fn keep<T>(v: Vec<T>) -> Vec<T> {
            if v.capacity() > Scratch::KEEP {
                Vec::new()
            } else {
                v
            }
        }
        debug_assert!(bodies.is_empty() && outs.is_empty() && evs.is_empty());
        self.bodies = keep(bodies);
        self.outs = keep(outs);
        self.evs = keep(evs);
    }
}

/// Moves the messages and errors of `evs` (emptied) to `bodies`.
fn http_bodies(evs: &mut Vec<HttpEvent>, bodies: &mut Vec<Body>) {
    bodies.extend(evs.drain(..).filter_map(|e| match e {
        HttpEvent::Message(m) => Some(Body::Http(m)),
        HttpEvent::Error { ts, error, offset } => Some(Body::HttpError(
            ts,
            format!("HTTP at stream offset {offset}: {error}"),
        )),
        // Bytes skipped to resynchronise follow an error or a gap, both reported.
        HttpEvent::Skipped { .. } => None,
    }));
}

pub(crate) struct OwnedLinkMessage {
    from: Side,
    frame_type: FrameType,
    ref_num: u8,
    data: Vec<u8>,
    version: u8,
    total_len: u16,
    data_len: u16,
    fragments: u16,
    offset: u64,
    first_ts: Timestamp,
    last_ts: Timestamp,
    parts: Vec<crate::record::FragmentInfo>,
}

enum OwnedLinkOutput {
    Message(OwnedLinkMessage),
    Answered {
        ref_num: u8,
        latency_ms: f64,
    },
    Finding {
        code: Code,
        from: Side,
        ts: Timestamp,
        detail: String,
    },
}

fn own_output(o: LinkOutput<'_>) -> Option<OwnedLinkOutput> {
    match o {
        LinkOutput::Message(m) => Some(OwnedLinkOutput::Message(OwnedLinkMessage {
            from: m.from,
            frame_type: m.frame_type,
            ref_num: m.ref_num,
            data: m.data.into_owned(),
            version: m.header.version,
            total_len: m.header.total_len,
            data_len: m.header.data_len,
            fragments: m.fragments,
            offset: m.offset,
            first_ts: m.first_ts,
            last_ts: m.last_ts,
            parts: m.parts,
        })),
        LinkOutput::Finding(f) => Some(OwnedLinkOutput::Finding {
            code: f.code,
            from: f.from,
            ts: f.ts,
            detail: f.detail,
        }),
        LinkOutput::Answered {
            ref_num,
            latency_ms,
            ..
        } => Some(OwnedLinkOutput::Answered {
            ref_num,
            latency_ms,
        }),
    }
}

fn own_usb(o: UsbOutput<'_>) -> Option<(DeviceId, Side, Vec<u8>, Timestamp, u64)> {
    match o {
        UsbOutput::Bytes {
            device,
            from,
            bytes,
            ts,
            packet,
        } => Some((device, from, bytes.to_vec(), ts, packet)),
        UsbOutput::Oriented { .. } => None,
    }
}

/// Who sent a complete request-frame message, by its content: a request (func_type,
/// `content`) comes from the cash register, a result (respcd) from the terminal.
fn classify_body(data: &[u8], ring: &ecr_proto::cipher::KeyRing) -> Option<Side> {
    match envelope::parse(data, ring) {
        Ok(envelope::Message::Request(_)) => Some(Side::Ecr),
        Ok(envelope::Message::Response(_)) => Some(Side::Pos),
        Err(_) => match envelope::probe(data) {
            Some(envelope::Kind::Request) => Some(Side::Ecr),
            Some(envelope::Kind::Response) => Some(Side::Pos),
            _ => None,
        },
    }
}

/// Printable ASCII of a header value, at most 120 characters.
fn header_text(v: &str) -> String {
    v.chars()
        .filter(|c| (' '..='~').contains(c))
        .take(120)
        .collect()
}

/// CORS as a browser enforces it: the `Origin` of a request (to remember it), and
/// for the answer to a browser's request, what makes the browser hide it.
fn cors_check(
    m: &HttpMessage,
    dir: StreamDir,
    waiting: Option<&PendingRequest>,
    preflight: bool,
) -> (Option<String>, Option<String>) {
    let status = match &m.kind {
        HttpKind::Request { .. } => return (m.header("origin").map(header_text), None),
        HttpKind::Response { status, .. } => *status,
    };
    let Some(origin) = waiting
        .filter(|_| dir == StreamDir::ServerToClient)
        .and_then(|p| p.origin.as_deref())
    else {
        return (None, None);
    };
    let acao = m.header("access-control-allow-origin").map(header_text);
    let problem = match (preflight, acao) {
        (true, _) if !(200..300).contains(&status) => Some(format!(
            "the CORS preflight from {origin} was answered {status}: the browser will not send the POST"
        )),
        (true, None) => Some(format!(
            "the answer to the CORS preflight from {origin} has no Access-Control-Allow-Origin: the browser will not send the POST"
        )),
        (false, None) => Some(format!(
            "the answer to a browser's request (Origin {origin}) has no Access-Control-Allow-Origin: the browser hides it from the POS page, so the request looks failed even if it succeeded"
        )),
        (_, Some(a)) if a != "*" && a != origin => Some(format!(
            "Access-Control-Allow-Origin {a} is not the page's origin {origin}: the browser hides the answer"
        )),
        _ => None,
    };
    (None, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    proptest! {
        #[test]
        fn an_address_is_written_as_display_writes_it(ip: u32, port: u16, v6: u128, scope: u32) {
            let a = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port));
            prop_assert_eq!(addr_text(a).to_string(), a.to_string());
            let b = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(v6), port, 0, scope));
            prop_assert_eq!(addr_text(b).to_string(), b.to_string());
        }
    }

    #[test]
    fn edge_addresses_are_written_as_display_writes_them() {
        for (ip, port) in [
            ([0, 0, 0, 0], 0),
            ([255, 255, 255, 255], 65535),
            ([127, 0, 1, 10], 9001),
        ] {
            let a = SocketAddr::from((ip, port));
            assert_eq!(addr_text(a).as_str(), a.to_string());
        }
    }
}
