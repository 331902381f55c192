//! A synthetic capture in which every packet is ECR traffic, for benchmarks
//! (issue 15): `cargo run --release -p ecr-emu --example dense_capture`.
//!
//! 32 cash registers talk to 32 terminals at the same time (transactions of
//! different terminals interleave), over every transport the analyzer reads: HTTP
//! keep-alive and HTTP with `Connection: close` on 9001; on 9002 `0x2f6e` frames
//! with acks, bare JSON bodies (the `json-value` rule) and Base64 bodies ended by a
//! newline (the `newline` rule). The three request dialects take turns (a third
//! each); half the terminals have a 16-byte key (AES-128), half a 32-byte one
//! (AES-256). Requests are built, signed and encrypted by the protocol crate, and
//! answered by the emulated [`Terminal`], so the bytes are what `send` and
//! `emulate` put on the wire: requests of about 300 bytes, responses of about 700.
//!
//! Addresses are in 127.0.0.0/8 and every Ethernet address is a unicast one that
//! is not the loopback device's (00:00:00:00:00:00): replayed on `lo`
//! (`benches/live.sh`), the packets are seen by captures but dropped by the IP
//! layer (not for this host), so the kernel answers none of them.

use std::io::{self, Write};
use std::net::Ipv4Addr;

use ecr_capture::source::PcapWriter;
use ecr_proto::cipher::PosKey;
use ecr_proto::envelope::{build_request, RequestDialect};
use ecr_proto::frame::{split_message, FrameRepr, FrameType, MAX_FRAGMENT_DATA};
use ecr_proto::Timestamp;

use crate::faults::Faults;
use crate::request::Instruction;
use crate::terminal::{Terminal, TerminalConfig};

/// The HTTP port of the terminals.
pub const HTTP_PORT: u16 = 9001;
/// The TCP port of the terminals.
pub const TCP_PORT: u16 = 9002;
/// Transactions on one keep-alive HTTP or 9002 connection before it is closed.
const PER_CONNECTION: u32 = 8;
/// First capture timestamp (2023-11-14 22:13:20 UTC).
const START_NS: i64 = 1_700_000_000_000_000_000;
/// Time between two packets of the capture.
const STEP_NS: i64 = 20_000;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct DenseOptions {
    /// Stop once the file has at least this many bytes.
    pub size_bytes: u64,
    /// Terminals (and cash registers), at most 250.
    pub terminals: u8,
    /// 0 (the default): each cash register keeps one connection to its terminal
    /// and the registers take turns, one transaction at a time (HTTP keep-alive and
    /// 9002 connections carry 8 transactions each). N > 0: N connections of one
    /// transaction each are open at the same time, shared out over the terminals:
    /// the N handshakes, then the N requests, the N responses and the N closes,
    /// then the next N. For the cost of many concurrent connections (tables,
    /// hashing, per-connection state).
    pub concurrent: u32,
}

impl Default for DenseOptions {
    fn default() -> Self {
        DenseOptions {
            size_bytes: 16 << 20,
            terminals: 32,
            concurrent: 0,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DenseSummary {
    /// Bytes of the pcap file.
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
    /// Requests and responses (link acks not counted).
    pub messages: u64,
    /// Request/response pairs.
    pub transactions: u64,
    /// TCP connections.
    pub connections: u64,
}

/// The IPv4 address of terminal `i`.
pub fn terminal_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, i.saturating_add(1))
}

fn register_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 2, i.saturating_add(1))
}

/// The POS-KEY of terminal `i`: 16 bytes for even `i`, 32 for odd.
pub fn terminal_key_text(i: u8) -> String {
    if i % 2 == 0 {
        format!("densekey{i:08}")
    } else {
        format!("dense-terminal-key-32-bytes-{i:04}")
    }
}

/// The key file of the capture: one `ADDRESS=KEY` line per terminal.
pub fn key_file(opts: &DenseOptions) -> String {
    let mut s = String::from("# terminals of the dense benchmark capture (ecr-emu dense)\n");
    for i in 0..opts.terminals.min(250) {
        s.push_str(&format!("{}={}\n", terminal_addr(i), terminal_key_text(i)));
    }
    s
}

/// How a connection carries its transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    HttpKeepAlive,
    HttpClose,
    Frames,
    Text,
}

const TRANSPORTS: [Transport; 4] = [
    Transport::HttpKeepAlive,
    Transport::HttpClose,
    Transport::Frames,
    Transport::Text,
];

const DIALECTS: [RequestDialect; 3] = [
    RequestDialect::Plain,
    RequestDialect::ContentEncrypted,
    RequestDialect::EnvelopeEncrypted,
];

const CHANNELS: [&str; 6] = [
    "wx",
    "alipay",
    "card_payment",
    "payme",
    "unionpay_card",
    "fps",
];

/// One side of a TCP connection.
#[derive(Debug, Clone, Copy)]
struct End {
    mac: [u8; 6],
    ip: Ipv4Addr,
    port: u16,
    seq: u32,
}

/// An open connection between a cash register and its terminal.
#[derive(Debug)]
struct Conn {
    transport: Transport,
    ecr: End,
    pos: End,
    done: u32,
    ecr_ref: u8,
    pos_ref: u8,
}

struct Station {
    terminal: Terminal,
    key: PosKey,
    conn: Option<Conn>,
    next_port: u16,
    transport: usize,
    dialect: usize,
    serial: u64,
}

struct Gen<W: Write> {
    w: PcapWriter<W>,
    ts: i64,
    ip_id: u16,
    sum: DenseSummary,
    buf: Vec<u8>,
}

const SYN: u8 = 0x02;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

impl<W: Write> Gen<W> {
    /// Writes one segment from `from` to `to` and advances `from`'s sequence number.
    fn segment(&mut self, from: &mut End, to: &End, flags: u8, payload: &[u8]) -> io::Result<()> {
        let ip_len = 20 + 20 + payload.len();
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(&to.mac);
        b.extend_from_slice(&from.mac);
        b.extend_from_slice(&0x0800u16.to_be_bytes());
        // IPv4 header, checksum filled in below.
        let ip_start = b.len();
        b.extend_from_slice(&[0x45, 0]);
        b.extend_from_slice(&u16::try_from(ip_len).unwrap_or(u16::MAX).to_be_bytes());
        b.extend_from_slice(&self.ip_id.to_be_bytes());
        b.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
        b.extend_from_slice(&from.ip.octets());
        b.extend_from_slice(&to.ip.octets());
        let mut sum: u32 = b[ip_start..]
            .chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(c.get(1).copied().unwrap_or(0)))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let csum = !(sum as u16);
        b[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
        // TCP header (checksum left 0, as with checksum offloading).
        b.extend_from_slice(&from.port.to_be_bytes());
        b.extend_from_slice(&to.port.to_be_bytes());
        b.extend_from_slice(&from.seq.to_be_bytes());
        let ack = if flags & ACK != 0 { to.seq } else { 0 };
        b.extend_from_slice(&ack.to_be_bytes());
        b.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        b.extend_from_slice(payload);
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ts += STEP_NS;
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.w.write_packet(Timestamp(self.ts), b, len)?;
        self.sum.packets += 1;
        self.sum.bytes += 16 + u64::from(len);
        let advance = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        from.seq = from.seq.wrapping_add(advance);
        Ok(())
    }

    /// Sends `data` in segments of at most 1448 bytes.
    fn data(&mut self, from: &mut End, to: &End, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(1448) {
            self.segment(from, to, PSH | ACK, chunk)?;
        }
        Ok(())
    }
}

fn next_ref(r: &mut u8) -> u8 {
    let now = *r;
    *r = if now >= 0x7f { 1 } else { now + 1 };
    now
}

fn build_err(e: ecr_proto::frame::BuildError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Station {
    fn new(i: u8) -> io::Result<Station> {
        let key = PosKey::new(&terminal_key_text(i))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let terminal = Terminal::new(TerminalConfig {
            key: key.clone(),
            delay: std::time::Duration::ZERO,
            faults: Faults::default(),
            merchant: "Dense Benchmark Bakery & Tea House (Central, Queen's Road)".into(),
        });
        Ok(Station {
            terminal,
            key,
            conn: None,
            next_port: 40_000u16.saturating_add(u16::from(i).saturating_mul(97)),
            transport: usize::from(i) % TRANSPORTS.len(),
            dialect: usize::from(i) % DIALECTS.len(),
            serial: 0,
        })
    }

    /// The next payment request content (about 300 bytes on the wire).
    fn instruction(&mut self, i: u8) -> Instruction {
        self.serial += 1;
        let n = self.serial;
        Instruction::Pay {
            amt: format!("{}.{:02}", 1 + n % 997, n % 100),
            channel: CHANNELS[(n as usize) % CHANNELS.len()].to_string(),
            out_trade_no: Some(format!(
                "DENSE-T{i:02}-ORDER-{n:012}-SHOP-CENTRAL-LANE-{:02}",
                n % 8
            )),
            payment_timeout: Some(60),
        }
    }
}

/// Writes the dense capture (classic pcap, Ethernet, microsecond timestamps) to `w`.
pub fn write_dense<W: Write>(w: W, opts: &DenseOptions) -> io::Result<DenseSummary> {
    let n = opts.terminals.clamp(1, 250);
    let mut stations = (0..n).map(Station::new).collect::<io::Result<Vec<_>>>()?;
    let mut g = Gen {
        w: PcapWriter::new(w, 1, 65_535, false, false)?,
        ts: START_NS,
        ip_id: 1,
        sum: DenseSummary {
            bytes: 24,
            ..DenseSummary::default()
        },
        buf: Vec::with_capacity(2048),
    };
    if opts.concurrent > 0 {
        concurrent(&mut g, &mut stations, opts)?;
        g.w.into_inner().flush()?;
        return Ok(g.sum);
    }
    let mut round = 0u64;
    'outer: loop {
        for (i, st) in (0u8..).zip(stations.iter_mut()) {
            if g.sum.bytes >= opts.size_bytes {
                break 'outer;
            }
            transaction(&mut g, st, i, round)?;
        }
        round += 1;
    }
    // Connections still open are closed, so every transaction is complete.
    for st in &mut stations {
        if let Some(mut c) = st.conn.take() {
            close(&mut g, &mut c)?;
        }
    }
    g.w.into_inner().flush()?;
    Ok(g.sum)
}

fn open<W: Write>(g: &mut Gen<W>, st: &mut Station, i: u8, round: u64) -> io::Result<Conn> {
    let transport = TRANSPORTS[st.transport % TRANSPORTS.len()];
    st.transport += 1;
    st.next_port = if st.next_port >= 60_000 {
        32_768
    } else {
        st.next_port + 1
    };
    let port = match transport {
        Transport::HttpKeepAlive | Transport::HttpClose => HTTP_PORT,
        Transport::Frames | Transport::Text => TCP_PORT,
    };
    let seed = (round as u32).wrapping_mul(2_654_435_761) ^ u32::from(i) << 24;
    let mut ecr = End {
        mac: [2, 0, 0, 0, 2, i],
        ip: register_addr(i),
        port: st.next_port,
        seq: seed,
    };
    let mut pos = End {
        mac: [2, 0, 0, 0, 1, i],
        ip: terminal_addr(i),
        port,
        seq: !seed,
    };
    g.segment(&mut ecr, &pos, SYN, &[])?;
    g.segment(&mut pos, &ecr, SYN | ACK, &[])?;
    g.segment(&mut ecr, &pos, ACK, &[])?;
    g.sum.connections += 1;
    Ok(Conn {
        transport,
        ecr,
        pos,
        done: 0,
        ecr_ref: 1,
        pos_ref: 1,
    })
}

fn close<W: Write>(g: &mut Gen<W>, c: &mut Conn) -> io::Result<()> {
    g.segment(&mut c.ecr, &c.pos, FIN | ACK, &[])?;
    g.segment(&mut c.pos, &c.ecr, FIN | ACK, &[])?;
    g.segment(&mut c.ecr, &c.pos, ACK, &[])
}

/// The N-at-a-time connections of [`DenseOptions::concurrent`]: connection `j` of
/// a batch belongs to terminal `j % terminals`.
fn concurrent<W: Write>(
    g: &mut Gen<W>,
    stations: &mut [Station],
    opts: &DenseOptions,
) -> io::Result<()> {
    let batch = usize::try_from(opts.concurrent).unwrap_or(usize::MAX);
    let mut serial = 0u64;
    let mut open_now: Vec<(usize, Conn, Request)> = Vec::with_capacity(batch.min(1 << 16));
    while g.sum.bytes < opts.size_bytes {
        for j in 0..batch {
            let s = j % stations.len();
            let i = u8::try_from(s).unwrap_or(u8::MAX);
            let st = &mut stations[s];
            // A seed of its own for every connection (its initial sequence numbers).
            let c = open(g, st, i, serial)?;
            serial += 1;
            open_now.push((s, c, Request::default()));
        }
        for (s, c, req) in &mut open_now {
            let i = u8::try_from(*s).unwrap_or(u8::MAX);
            *req = request(g, &mut stations[*s], c, i)?;
        }
        for (s, c, req) in &mut open_now {
            response(g, &mut stations[*s], c, req)?;
        }
        for (_, c, _) in &mut open_now {
            close(g, c)?;
        }
        open_now.clear();
    }
    Ok(())
}

/// A request on the wire, waiting for the terminal's answer.
#[derive(Default)]
struct Request {
    body: Vec<u8>,
}

fn transaction<W: Write>(g: &mut Gen<W>, st: &mut Station, i: u8, round: u64) -> io::Result<()> {
    let mut c = match st.conn.take() {
        Some(c) => c,
        None => open(g, st, i, round)?,
    };
    let req = request(g, st, &mut c, i)?;
    response(g, st, &mut c, &req)?;
    c.done += 1;
    if c.transport == Transport::HttpClose || c.done >= PER_CONNECTION {
        close(g, &mut c)?;
    } else {
        st.conn = Some(c);
    }
    Ok(())
}

/// Writes the next request of `st` on `c` (and, on 9002 frames, the terminal's ack).
fn request<W: Write>(g: &mut Gen<W>, st: &mut Station, c: &mut Conn, i: u8) -> io::Result<Request> {
    let dialect = DIALECTS[st.dialect % DIALECTS.len()];
    st.dialect += 1;
    let content = st.instruction(i).content();
    let body = build_request(dialect, &content, &st.key);
    match c.transport {
        Transport::HttpKeepAlive | Transport::HttpClose => {
            let close = c.transport == Transport::HttpClose;
            let mut wire = format!(
                "POST /api/pos/trade HTTP/1.1\r\nHost: {}:{HTTP_PORT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                c.pos.ip,
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            )
            .into_bytes();
            wire.extend_from_slice(&body);
            g.data(&mut c.ecr, &c.pos, &wire)?;
        }
        Transport::Frames => {
            let r = next_ref(&mut c.ecr_ref);
            let wire = split_message(FrameType::REQUEST, r, &body, MAX_FRAGMENT_DATA)
                .map_err(build_err)?;
            g.data(&mut c.ecr, &c.pos, &wire)?;
            let ack = FrameRepr::ack(r).to_bytes().map_err(build_err)?;
            g.data(&mut c.pos, &c.ecr, &ack)?;
        }
        Transport::Text => {
            // D6: a JSON body is sent bare (json-value); Base64 ends with a newline.
            let mut wire = body.clone();
            if dialect == RequestDialect::EnvelopeEncrypted {
                wire.push(b'\n');
            }
            g.data(&mut c.ecr, &c.pos, &wire)?;
        }
    }
    Ok(Request { body })
}

/// Writes the terminal's answer to `req` on `c` and the cash register's ack of it.
fn response<W: Write>(
    g: &mut Gen<W>,
    st: &mut Station,
    c: &mut Conn,
    req: &Request,
) -> io::Result<()> {
    let body = &req.body;
    match c.transport {
        Transport::HttpKeepAlive | Transport::HttpClose => {
            let close = c.transport == Transport::HttpClose;
            let reply = st.terminal.handle(Some("POST"), body);
            let mut answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                reply.body.len(),
                if close { "Connection: close\r\n" } else { "" }
            )
            .into_bytes();
            answer.extend_from_slice(&reply.body);
            g.data(&mut c.pos, &c.ecr, &answer)?;
            g.segment(&mut c.ecr, &c.pos, ACK, &[])?;
        }
        Transport::Frames => {
            let reply = st.terminal.handle(None, body);
            let r = next_ref(&mut c.pos_ref);
            let wire = split_message(FrameType::REQUEST, r, &reply.body, MAX_FRAGMENT_DATA)
                .map_err(build_err)?;
            g.data(&mut c.pos, &c.ecr, &wire)?;
            let ack = FrameRepr::ack(r).to_bytes().map_err(build_err)?;
            g.data(&mut c.ecr, &c.pos, &ack)?;
        }
        Transport::Text => {
            let reply = st.terminal.handle(None, body);
            let mut answer = reply.body;
            answer.push(b'\n');
            g.data(&mut c.pos, &c.ecr, &answer)?;
            g.segment(&mut c.ecr, &c.pos, ACK, &[])?;
        }
    }
    g.sum.messages += 2;
    g.sum.transactions += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_capture::analyzer::{Analyzer, Config};
    use ecr_capture::keys::KeySet;
    use ecr_capture::record::{Record, Role};
    use ecr_capture::source::CaptureReader;

    /// Analyses `capture` with the keys of `opts`: every transaction decoded,
    /// decrypted and verified, no finding.
    fn analyse_clean(capture: Vec<u8>, opts: &DenseOptions, s: &DenseSummary) {
        let mut keys = KeySet::new();
        assert_eq!(
            keys.add_file_text(&key_file(opts)).unwrap(),
            usize::from(opts.terminals)
        );
        let mut requests_ok = 0u64;
        let mut sink = |r: Record| {
            if let Record::Message(m) = r {
                if m.role == Role::Request && m.digest == "ok" {
                    requests_ok += 1;
                }
            }
        };
        let mut a = Analyzer::new(Config::default(), keys, &mut sink);
        let mut r = CaptureReader::from_reader(std::io::Cursor::new(capture)).unwrap();
        while let Some(p) = r.next_packet() {
            a.packet(&p.unwrap());
        }
        let (summary, worst) = a.finish(s.bytes, vec![]);
        assert_eq!(worst, None, "{summary:?}");
        assert!(summary.findings.is_empty(), "{:?}", summary.findings);
        assert_eq!(summary.packets, s.packets);
        assert_eq!(summary.transactions, s.transactions);
        // Requests and responses, plus the link acks of the 9002 frames.
        assert!(summary.messages > s.messages, "{summary:?}");
        assert_eq!(requests_ok, s.transactions);
    }

    /// The most TCP connections open at one time in `capture` (from a SYN without
    /// ACK to the first FIN), and how many were opened.
    fn open_connections(capture: &[u8]) -> (usize, usize) {
        let mut r = CaptureReader::from_reader(std::io::Cursor::new(capture.to_vec())).unwrap();
        let mut open = std::collections::HashSet::new();
        let (mut most, mut opened) = (0, 0);
        while let Some(p) = r.next_packet() {
            let d = p.unwrap().data;
            // Ethernet (14), IPv4 without options (20), then TCP.
            let (src, dst) = (&d[26..30], &d[30..34]);
            let (sport, dport) = (&d[34..36], &d[36..38]);
            let flags = d[14 + 20 + 13];
            let key = |a: &[u8], ap: &[u8], b: &[u8], bp: &[u8]| {
                let (x, y) = ((a.to_vec(), ap.to_vec()), (b.to_vec(), bp.to_vec()));
                if x < y {
                    (x, y)
                } else {
                    (y, x)
                }
            };
            if flags & (SYN | ACK) == SYN {
                assert!(
                    open.insert(key(src, sport, dst, dport)),
                    "connection reused"
                );
                opened += 1;
                most = most.max(open.len());
            } else if flags & FIN != 0 {
                open.remove(&key(src, sport, dst, dport));
            }
        }
        assert!(open.is_empty(), "{} connections left open", open.len());
        (most, opened)
    }

    #[test]
    fn sizes_and_counts() {
        let opts = DenseOptions {
            size_bytes: 256 << 10,
            terminals: 32,
            ..Default::default()
        };
        let mut out = Vec::new();
        let s = write_dense(&mut out, &opts).unwrap();
        assert_eq!(s.bytes, out.len() as u64);
        assert!(s.bytes >= opts.size_bytes);
        assert_eq!(s.messages, 2 * s.transactions);
        assert!(s.transactions > 100, "{s:?}");
        assert!(key_file(&opts).lines().filter(|l| l.contains('=')).count() == 32);
        // One connection per cash register at a time.
        let (most, opened) = open_connections(&out);
        assert_eq!(most, 32);
        assert_eq!(opened as u64, s.connections);
        assert!(s.connections < s.transactions, "{s:?}");
        // The analyzer decodes, decrypts and verifies every transaction, and finds
        // nothing wrong.
        analyse_clean(out, &opts, &s);
    }

    #[test]
    fn concurrent_one_transaction_connections() {
        let opts = DenseOptions {
            size_bytes: 300 << 10,
            terminals: 8,
            concurrent: 100,
        };
        let mut out = Vec::new();
        let s = write_dense(&mut out, &opts).unwrap();
        assert_eq!(s.bytes, out.len() as u64);
        assert!(s.bytes >= opts.size_bytes);
        // Whole batches of 100 connections of one transaction each.
        assert_eq!(s.connections, s.transactions);
        assert_eq!(s.connections % 100, 0, "{s:?}");
        assert!(s.connections >= 200, "{s:?}");
        let (most, opened) = open_connections(&out);
        assert_eq!(most, 100);
        assert_eq!(opened as u64, s.connections);
        analyse_clean(out, &opts, &s);
    }

    #[test]
    fn four_thousand_concurrent_connections_fit_the_default_budget() {
        // One batch of 4096 connections open at once (issue 15): the default
        // `--memory-limit` follows them all, so nothing is evicted and every
        // transaction pairs (before, 2,184 connections fit and almost none did).
        let opts = DenseOptions {
            // Past the file header: one batch.
            size_bytes: 25,
            terminals: 32,
            concurrent: 4096,
        };
        let mut out = Vec::new();
        let s = write_dense(&mut out, &opts).unwrap();
        assert_eq!(s.connections, 4096);
        assert_eq!(open_connections(&out), (4096, 4096));
        analyse_clean(out, &opts, &s);
    }
}
