//! Crafted hostile captures: the input shapes that once broke the analyzer's
//! memory and time bounds, built at any size. `tests/hostile.rs` uses small
//! versions, `benches/hostile.sh` (through the `hostile_captures` example) the
//! full-size ones, and the fuzz seed corpora include them.
//!
//! Every builder returns the bytes of a classic pcap file (Ethernet, IPv4, snap
//! length 65535). Timestamps advance 10 µs per packet from 2025-01-01.

use std::io;

use ecr_proto::frame::{FrameRepr, FrameType};
use ecr_proto::Timestamp;

use crate::analyzer::{Analyzer, Config};
use crate::keys::KeySet;
use crate::limits::Usage;
use crate::record::{FindingRecord, Record, SummaryRecord};
use crate::source::CaptureReader;

const ECR: [u8; 4] = [10, 0, 0, 1];
const POS: [u8; 4] = [10, 0, 0, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

/// Writes packets into a pcap file in memory.
pub struct PcapBuilder {
    out: Vec<u8>,
    ts: i64,
}

impl Default for PcapBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PcapBuilder {
    /// An empty pcap file (Ethernet, snap length 65535, microseconds).
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        for v in [0u32, 0, 65535, 1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        PcapBuilder {
            out,
            ts: 1_735_689_600_000_000_000,
        }
    }

    /// Bytes written so far (the offset of the next record header).
    pub fn offset(&self) -> usize {
        self.out.len()
    }

    /// Moves the clock on by `ns` nanoseconds.
    pub fn advance(&mut self, ns: i64) {
        self.ts += ns;
    }

    /// Adds an Ethernet frame carrying an IPv4 packet.
    pub fn ipv4(&mut self, ip: &[u8]) {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(ip);
        self.ts += 10_000;
        let len = f.len().min(65535) as u32;
        let secs = self.ts.div_euclid(1_000_000_000) as u32;
        let usecs = (self.ts.rem_euclid(1_000_000_000) / 1000) as u32;
        for v in [secs, usecs, len, len] {
            self.out.extend_from_slice(&v.to_le_bytes());
        }
        self.out
            .extend_from_slice(f.get(..len as usize).unwrap_or(&f));
    }

    /// The pcap bytes.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// An IPv4 header (checksum filled in) with identification `id` and flags and
/// fragment offset `ff`, followed by `payload`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], id: u16, ff: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()).min(65535) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&ff.to_be_bytes());
    h.extend_from_slice(&[64, 6, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| match c {
            [a, b] => (u32::from(*a) << 8) | u32::from(*b),
            _ => 0,
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let Some(c) = h.get_mut(10..12) {
        c.copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
    h.extend_from_slice(payload);
    h
}

/// A 20-byte TCP header followed by `payload`.
pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// One TCP connection from the cash register (10.0.0.1) to the terminal
/// (10.0.0.2), or between the addresses given to [`Flow::open_between`], with
/// both sequence numbers tracked.
pub struct Flow {
    ecr: [u8; 4],
    pos: [u8; 4],
    cport: u16,
    sport: u16,
    cseq: u32,
    sseq: u32,
}

impl Flow {
    /// Opens a connection from client port `cport` to `port` (SYN, SYN-ACK).
    pub fn open(b: &mut PcapBuilder, cport: u16, port: u16) -> Flow {
        Flow::open_between(b, ECR, POS, cport, port)
    }

    /// Opens a connection from `ecr`:`cport` to `pos`:`port` (SYN, SYN-ACK).
    pub fn open_between(
        b: &mut PcapBuilder,
        ecr: [u8; 4],
        pos: [u8; 4],
        cport: u16,
        port: u16,
    ) -> Flow {
        b.ipv4(&ipv4(
            ecr,
            pos,
            1,
            0x4000,
            &tcp(cport, port, 1000, SYN, b""),
        ));
        b.ipv4(&ipv4(
            pos,
            ecr,
            1,
            0x4000,
            &tcp(port, cport, 5000, SYN | ACK, b""),
        ));
        Flow {
            ecr,
            pos,
            cport,
            sport: port,
            cseq: 1001,
            sseq: 5001,
        }
    }

    /// The cash register sends `data` in segments of at most `seg` bytes.
    pub fn client(&mut self, b: &mut PcapBuilder, data: &[u8], seg: usize) {
        for c in data.chunks(seg.clamp(1, 65000)) {
            let t = tcp(self.cport, self.sport, self.cseq, PSH_ACK, c);
            b.ipv4(&ipv4(self.ecr, self.pos, 1, 0x4000, &t));
            self.cseq = self.cseq.wrapping_add(c.len() as u32);
        }
    }

    /// The terminal sends `data` in segments of at most `seg` bytes.
    pub fn server(&mut self, b: &mut PcapBuilder, data: &[u8], seg: usize) {
        for c in data.chunks(seg.clamp(1, 65000)) {
            let t = tcp(self.sport, self.cport, self.sseq, PSH_ACK, c);
            b.ipv4(&ipv4(self.pos, self.ecr, 1, 0x4000, &t));
            self.sseq = self.sseq.wrapping_add(c.len() as u32);
        }
    }

    /// A client segment `ahead` bytes past the next expected byte (leaving a hole).
    pub fn client_ahead(&mut self, b: &mut PcapBuilder, ahead: u32, data: &[u8]) {
        let t = tcp(
            self.cport,
            self.sport,
            self.cseq.wrapping_add(ahead),
            PSH_ACK,
            data,
        );
        b.ipv4(&ipv4(self.ecr, self.pos, 1, 0x4000, &t));
    }
}

/// Client port of connection `i` (1024..=65535, wrapping).
fn port_of(i: usize) -> u16 {
    1024 + (i % 64_000) as u16
}

/// `conns` connections on port 9002, each opening `refs` split messages with a
/// 12-byte fragment that announces 65535 bytes of data and carries 1 (issue 11,
/// item 1: this once reserved 64 KiB per fragment).
pub fn open_refs(conns: usize, refs: u8) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    for i in 0..conns {
        let mut f = Flow::open(&mut b, port_of(i), 9002);
        let mut data = Vec::new();
        for r in 1..=refs {
            let frame = FrameRepr {
                frame_type: FrameType::REQUEST,
                ref_num: r,
                data_len: u16::MAX,
                data: &[r],
            };
            data.extend(frame.to_bytes().unwrap_or_default());
        }
        f.client(&mut b, &data, 1460);
    }
    b.finish()
}

/// `conns` connections on port 9002 on which both sides send a request frame with
/// each of the 256 ref values and nobody answers: 512 requests per link waiting for
/// their ack. The frames are complete (no data), so only the link tracker holds
/// them; this once took some 12 KB per connection outside every budget (82 MB of
/// resident memory on 4,400 such connections).
pub fn waiting_refs(conns: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let mut data = Vec::new();
    for r in 0..=255u8 {
        let frame = FrameRepr {
            frame_type: FrameType::REQUEST,
            ref_num: r,
            data_len: 0,
            data: &[],
        };
        data.extend(frame.to_bytes().unwrap_or_default());
    }
    for i in 0..conns {
        let mut f = Flow::open(&mut b, port_of(i), 9002);
        f.client(&mut b, &data, 1460);
        f.server(&mut b, &data, 1460);
    }
    b.finish()
}

/// A pcapng file in the project's serial capture format (D9) with `links`
/// interfaces, each carrying one chunk of a frame: every interface is a serial link
/// of its own. Links were not bounded: 65,000 of them in a 5.5 MB file took 157 MB.
pub fn serial_links(links: u32) -> Vec<u8> {
    let mut w = match crate::source::PcapngWriter::new(Vec::new()) {
        Ok(w) => w,
        Err(_) => return Vec::new(),
    };
    for _ in 0..links {
        if w.add_interface(crate::serialcap::LINKTYPE_SERIAL, 0, None)
            .is_err()
        {
            break;
        }
    }
    for i in 0..links {
        let chunk = [crate::serialcap::DIR_ECR_TO_POS, 0x2f, 0x6e, 0x01, 0x01];
        let ts = Timestamp::from_millis(i64::from(i));
        if w.write_packet(i, ts, &chunk, chunk.len() as u32, None)
            .is_err()
        {
            break;
        }
    }
    w.into_inner()
}

/// What a TCP 9002 text stream carries in [`text_stream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextShape {
    /// Base64 symbols without a newline (the `decrypts` rule is tried with a key).
    Base64,
    /// A JSON array that never closes.
    OpenJson,
}

/// One TCP 9002 connection carrying `total` bytes of `shape` in segments of
/// `seg` bytes (issue 11, item 2: once quadratic in the number of segments).
pub fn text_stream(shape: TextShape, total: usize, seg: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9002);
    let data: Vec<u8> = match shape {
        TextShape::Base64 => b"QUJD".iter().copied().cycle().take(total).collect(),
        TextShape::OpenJson => std::iter::once(b'[')
            .chain(b"{\"a\":\"x\"},".iter().copied().cycle())
            .take(total)
            .collect(),
    };
    f.client(&mut b, &data, seg);
    b.finish()
}

/// An HTTP payment request with an `out_trade_no` of `id_len` characters.
pub fn payment_request(n: usize, id_len: usize) -> Vec<u8> {
    let id = format!("{n:08}{}", "x".repeat(id_len.saturating_sub(8)));
    http_post(&format!(
        "{{\"content\":{{\"func_type\":1001,\"amt\":\"10.10\",\"channel\":\"card_payment\",\"out_trade_no\":\"{id}\"}},\"digest\":\"00\"}}"
    ))
}

/// An HTTP request to the terminal's trade path carrying `body` as JSON.
pub fn http_post(body: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /api/pos/trade HTTP/1.1\r\nHost: 10.0.0.2:9001\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// An HTTP success response to payment `n` with a `syssn` of `id_len` characters.
pub fn payment_response(n: usize, id_len: usize) -> Vec<u8> {
    let id = format!("{n:08}{}", "s".repeat(id_len.saturating_sub(8)));
    let body = format!(
        "{{\"respcd\":\"6000\",\"respmsg\":\"ok\",\"resperr\":\"\",\"data\":{{\"syssn\":\"{id}\",\"txamt\":\"1010\"}}}}"
    );
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// One HTTP connection with `n` requests whose body is `size` bytes of one array of
/// empty objects, `{"content":{"x":[{},{},...]}}`: three bytes a value. Parsed whole,
/// 1 MiB of it made some 60 MB of tree and records while one message was decoded,
/// and `-j 2` held hundreds of such decodings in flight (340 MB).
pub fn tiny_values(n: usize, size: usize) -> Vec<u8> {
    let items = size.saturating_sub(32) / 3;
    let mut body = String::with_capacity(size);
    body.push_str("{\"content\":{\"x\":[");
    for i in 0..items {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{}");
    }
    body.push_str("]}}");
    let r = http_post(&body);
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9001);
    for _ in 0..n {
        f.client(&mut b, &r, 1460);
    }
    b.finish()
}

/// One HTTP connection with `n` pipelined payment requests that are never
/// answered (issue 11, item 3: the queue of unanswered requests had no cap).
pub fn pipelined_unanswered(n: usize, id_len: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9001);
    for i in 0..n {
        f.client(&mut b, &payment_request(i, id_len), 1460);
    }
    b.finish()
}

/// One HTTP connection with `n` successful payments whose ids are `id_len`
/// characters long (issue 11, item 3: remembered payments were capped by count
/// only).
pub fn payments(n: usize, id_len: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9001);
    for i in 0..n {
        f.client(&mut b, &payment_request(i, id_len), 1460);
        f.server(&mut b, &payment_response(i, id_len), 1460);
    }
    b.finish()
}

/// One HTTP connection with `n` payments, each with a channel and a response
/// code of its own (`value_len` characters): the summary counts values by name.
pub fn distinct_values(n: usize, value_len: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9001);
    for i in 0..n {
        let value = format!("{i:08}{}", "v".repeat(value_len.saturating_sub(8)));
        let req = String::from_utf8_lossy(&payment_request(i, 10))
            .replace("card_payment", &value)
            .replace(
                &format!("Content-Length: {}", payment_request_body_len(i)),
                &format!(
                    "Content-Length: {}",
                    payment_request_body_len(i) + value.len() - "card_payment".len()
                ),
            );
        f.client(&mut b, req.as_bytes(), 1460);
        let resp = String::from_utf8_lossy(&payment_response(i, 10))
            .replace("\"6000\"", &format!("\"{value}\""))
            .replace(
                &format!("Content-Length: {}", payment_response_body_len(i)),
                &format!(
                    "Content-Length: {}",
                    payment_response_body_len(i) + value.len() - 4
                ),
            );
        f.server(&mut b, resp.as_bytes(), 1460);
    }
    b.finish()
}

fn payment_request_body_len(n: usize) -> usize {
    let r = payment_request(n, 10);
    r.len() - head_len(&r)
}

fn payment_response_body_len(n: usize) -> usize {
    let r = payment_response(n, 10);
    r.len() - head_len(&r)
}

fn head_len(r: &[u8]) -> usize {
    r.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(r.len(), |p| p + 4)
}

/// `conns` HTTP connections, each leaving a request unfinished (its headers
/// announce a body of 1000 bytes; 200 arrive).
pub fn unfinished_connections(conns: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    for i in 0..conns {
        let mut f = Flow::open(&mut b, port_of(i), 9001);
        let mut r = b"POST /api/pos/trade HTTP/1.1\r\nContent-Length: 1000\r\n\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'{', 200));
        f.client(&mut b, &r, 1460);
    }
    b.finish()
}

/// `conns` connections to port 9001, each a TLS handshake that never completes:
/// a ClientHello announcing 131,000 bytes, sent as 7 records of 16 KiB (about
/// 115 KB each that a TLS reader must hold to reassemble it).
pub fn tls_unfinished_handshakes(conns: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let mut body = vec![1u8, 0x01, 0xff, 0xb8, 3, 3]; // ClientHello, 131,000 bytes
    body.resize(16384 * 7, b'A');
    let stream = handshake_records(&body);
    for i in 0..conns {
        let mut f = Flow::open(&mut b, port_of(i), 9001);
        f.client(&mut b, &stream, 1460);
    }
    b.finish()
}

/// `conns` connections to port 9001, each a complete ClientHello that asks to
/// resume a session with a 4 KiB ticket and names a 200-character server (each
/// character a control one, which is kept escaped): facts a TLS reader keeps for
/// the rest of the connection, about 6 KB each.
pub fn tls_hellos_with_large_facts(conns: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let hello = client_hello(&[0x01; 200], &[0x5a; 4096]);
    for i in 0..conns {
        let mut f = Flow::open(&mut b, port_of(i), 9001);
        f.client(&mut b, &hello, 1460);
    }
    b.finish()
}

/// A TLS record holding a ClientHello with a 32-byte session id, the server
/// name `sni` and a SessionTicket extension holding `ticket`.
fn client_hello(sni: &[u8], ticket: &[u8]) -> Vec<u8> {
    fn u16_len(v: &mut Vec<u8>, len: usize) {
        v.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    }
    let mut ext = Vec::new();
    // server_name (0): list length, host_name type, name length, name.
    ext.extend_from_slice(&[0, 0]);
    u16_len(&mut ext, sni.len() + 5);
    u16_len(&mut ext, sni.len() + 3);
    ext.push(0);
    u16_len(&mut ext, sni.len());
    ext.extend_from_slice(sni);
    // session_ticket (35).
    ext.extend_from_slice(&[0, 35]);
    u16_len(&mut ext, ticket.len());
    ext.extend_from_slice(ticket);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(32);
    body.extend_from_slice(&[0x22; 32]); // session id
    body.extend_from_slice(&[0, 2, 0xc0, 0x2f]); // one suite
    body.extend_from_slice(&[1, 0]); // no compression
    u16_len(&mut body, ext.len());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    handshake_records(&hs)
}

/// Handshake bytes as TLS handshake records of at most 16 KiB each.
fn handshake_records(hs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hs.len() + hs.len() / 16384 * 5 + 5);
    for rec in hs.chunks(16384) {
        out.extend_from_slice(&[0x16, 3, 3]);
        out.extend_from_slice(&u16::try_from(rec.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(rec);
    }
    out
}

/// `n` first fragments (1480 bytes each, more to come) of distinct IP datagrams
/// to port 9001 that never complete.
pub fn fragment_flood(n: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let payload = tcp(40000, 9001, 1, PSH_ACK, &[b'x'; 1460]);
    for i in 0..n {
        // MF set, offset 0.
        b.ipv4(&ipv4(ECR, POS, (i % 65536) as u16, 0x2000, &payload));
    }
    b.finish()
}

/// One HTTP connection whose first byte never arrives, followed by `n`
/// one-byte segments, each ahead of the hole (out-of-order buffering).
pub fn out_of_order_flood(n: usize) -> Vec<u8> {
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9001);
    for i in 0..n {
        f.client_ahead(&mut b, 1 + 2 * i as u32, b"x");
    }
    b.finish()
}

/// Result of [`analyze`].
#[derive(Debug)]
pub struct Outcome {
    /// Every finding.
    pub findings: Vec<FindingRecord>,
    /// Message records.
    pub messages: usize,
    /// Transaction records.
    pub transactions: usize,
    /// Table usage after the last packet, before the end of the analysis
    /// flushed the tables.
    pub usage: Usage,
    /// The summary.
    pub summary: SummaryRecord,
}

impl Outcome {
    /// Findings with this code.
    pub fn with_code(&self, code: crate::findings::Code) -> Vec<&FindingRecord> {
        self.findings.iter().filter(|f| f.code == code).collect()
    }
}

/// Analyses a capture in memory (`name` appears in damaged-record findings).
pub fn analyze(bytes: Vec<u8>, name: &str, cfg: Config, keys: KeySet) -> io::Result<Outcome> {
    let mut findings = vec![];
    let mut messages = 0;
    let mut transactions = 0;
    let mut sink = |r: Record| match r {
        Record::Finding(f) => findings.push(f),
        Record::Message(_) => messages += 1,
        Record::Transaction(_) => transactions += 1,
        Record::Summary(_) => {}
    };
    let mut reader = CaptureReader::from_reader(io::Cursor::new(bytes))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut a = Analyzer::new(cfg, keys, &mut sink);
    let n = a.read_capture(&mut reader, name, |_| true);
    let usage = a.usage();
    let (summary, _) = a.finish(n, vec![name.to_string()]);
    Ok(Outcome {
        findings,
        messages,
        transactions,
        usage,
        summary,
    })
}
