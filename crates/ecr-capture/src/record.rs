//! The records the analyzer produces: messages, transactions, findings and the
//! summary. Their JSON form is the `--format jsonl` interface documented in README
//! (fields may be added, never renamed).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use ecr_proto::compact::CompactJson;
use ecr_proto::value::{is_json_number, CompactString, Object, Value};
use ecr_proto::Timestamp;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::findings::{Code, Severity};

/// How a message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP on port 9001.
    Http,
    /// Raw TCP on port 9002 (text or frames).
    Tcp,
    /// The USB-serial link (frames).
    Serial,
    /// HTTP over TLS on port 9001, decrypted with a key log.
    Https,
}

impl Transport {
    /// Lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Tcp => "tcp",
            Transport::Serial => "serial",
            Transport::Https => "https",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Direction {
    /// From the cash register to the terminal.
    #[serde(rename = "ecr-to-pos")]
    EcrToPos,
    /// From the terminal to the cash register.
    #[serde(rename = "pos-to-ecr")]
    PosToEcr,
}

impl Direction {
    /// The name used in output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::EcrToPos => "ecr-to-pos",
            Direction::PosToEcr => "pos-to-ecr",
        }
    }

    /// The arrow used in text output.
    pub const fn arrow(self) -> &'static str {
        match self {
            Direction::EcrToPos => "ECR -> POS",
            Direction::PosToEcr => "POS -> ECR",
        }
    }
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A business request (func_type), or any message that is not a response.
    Request,
    /// A business response (respcd).
    Response,
    /// A link-level ack frame (0x20).
    Ack,
    /// A link-level error frame (0x30..0x35).
    ErrorFrame,
    /// A browser's CORS preflight (`OPTIONS` with `Access-Control-Request-Method`)
    /// or the terminal's answer to it (which carries `answer_ms`): how a POS that
    /// runs in a browser asks before each POST. Not an ECR message.
    Preflight,
}

/// A content or response object, serialised with its number tokens as they were
/// on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct RawObject {
    /// The members, in wire order.
    pub object: Object,
    /// A response's `data` when it came as a string of compact JSON: every member
    /// named `data` of `object` stands for this object, which is written as it
    /// came (no tree is built; see [`ecr_proto::compact`]).
    pub data: Option<CompactJson>,
}

impl RawObject {
    /// An object with nothing kept as text.
    pub fn new(object: Object) -> Self {
        RawObject { object, data: None }
    }

    /// The object with `data` parsed in place: what a reader of the members sees.
    /// A copy only when `data` was kept as text.
    pub fn with_data(&self) -> Cow<'_, Object> {
        match &self.data {
            None => Cow::Borrowed(&self.object),
            Some(c) => {
                let mut o = self.object.clone();
                o.replace_all("data", c.to_value());
                Cow::Owned(o)
            }
        }
    }
}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_object(&self.with_data(), s)
    }
}

/// Serialises an object straight from the parsed value, exactly as
/// [`Value::to_json_string`] writes it (members in wire order, duplicates kept,
/// number tokens as on the wire, a token that is not a JSON number as a string),
/// without rendering it to a string and parsing that again.
fn serialize_object<S: Serializer>(o: &Object, s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(o.len()))?;
    for (k, v) in o.iter() {
        m.serialize_entry(k, &WireValue(v))?;
    }
    m.end()
}

/// A [`Value`] serialised as [`Value::to_json_string`] writes it.
struct WireValue<'a>(&'a Value);

impl Serialize for WireValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) if is_json_number(n.as_bytes()) => {
                // A borrowed RawValue keeps the token as it was on the wire
                // (`10.10` stays `10.10`); validating a short token is cheap.
                match serde_json::from_str::<&serde_json::value::RawValue>(n) {
                    Ok(raw) => raw.serialize(s),
                    Err(_) => s.serialize_str(n),
                }
            }
            Value::Number(n) => s.serialize_str(n),
            Value::String(t) => s.serialize_str(t),
            Value::Array(items) => s.collect_seq(items.iter().map(WireValue)),
            Value::Object(o) => serialize_object(o, s),
        }
    }
}

/// The frame layer of a message that came in frames.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameInfo {
    /// Frame type byte.
    #[serde(rename = "type")]
    pub frame_type: u8,
    /// Version byte.
    pub version: u8,
    /// Total length of the (first) frame.
    pub total_len: u16,
    /// Declared data length of the message.
    pub data_len: u16,
    /// Frames that carried it.
    pub fragments: u16,
    /// Stream offset of the first frame.
    pub offset: u64,
    /// The frames of a split message, one per fragment in order (empty when one
    /// frame carried the whole message).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<FragmentInfo>,
}

/// One frame of a split message, as its header said: the frame layer of "fragment k
/// of n" in the text tree.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FragmentInfo {
    /// Total length field of this frame.
    pub total_len: u16,
    /// Data length field (the whole message's, D1).
    pub data_len: u16,
    /// Data bytes this frame carried.
    pub carried: usize,
    /// Stream offset of the frame.
    pub offset: u64,
    /// Capture time of its first byte, seconds since the epoch.
    pub ts: f64,
    /// Milliseconds from the previous fragment's last byte to this one's first
    /// (the 500 ms rule of spec 10.7); none for the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_ms: Option<f64>,
}

/// The HTTP layer of a message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpInfo {
    /// Request method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<CompactString>,
    /// Request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<CompactString>,
    /// Response status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Response reason phrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CompactString>,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MessageRecord {
    /// The message's number in the output (1-based); findings refer to it.
    pub index: u64,
    /// Capture time of its first byte, seconds since the epoch.
    /// In jsonl also as `time`, ISO 8601 in UTC.
    #[serde(flatten, serialize_with = "ser_ts_and_time")]
    pub ts: f64,
    /// Transport.
    pub transport: Transport,
    /// Sender address.
    pub src: CompactString,
    /// Receiver address.
    pub dst: CompactString,
    /// Which way.
    pub direction: Direction,
    /// What it is.
    pub role: Role,
    /// The envelope dialect (D4/D5 name).
    pub dialect: Option<&'static str>,
    /// The request's func_type.
    pub func_type: Option<u16>,
    /// The frame ref, for frames.
    #[serde(rename = "ref")]
    pub ref_num: Option<u8>,
    /// The decrypted request content.
    pub content: Option<RawObject>,
    /// The response, with `data` parsed.
    pub response: Option<RawObject>,
    /// Digest verdict: ok, mismatch, absent, unverified.
    pub digest: &'static str,
    /// Packet number (1-based) of the message's first byte in the capture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<u64>,
    /// The func_type's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub func_name: Option<&'static str>,
    /// The response code, for responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub respcd: Option<CompactString>,
    /// Frame layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<FrameInfo>,
    /// HTTP layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpInfo>,
    /// For an ack or error frame: milliseconds from the last byte of the request it
    /// answers to its own first byte (spec 10.6: at most 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_ms: Option<f64>,
    /// The TCP 9002 framing rule that delimited the message (D6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framing: Option<&'static str>,
    /// Which key decrypted it: its position among the keys given (1-based) and how its
    /// text was read (D3). The key itself is never printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyUse>,
    /// The digest as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_value: Option<CompactString>,
    /// Why the digest failed, when a known signing mistake explains it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_detail: Option<String>,
    /// Size of the message body in bytes.
    pub bytes: usize,
    /// The body, when it could not be decoded (lossy UTF-8, at most 200 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// How a TCP gap (bytes missing from the capture) bears on the message:
    /// `tail` = the rest of a message whose start was lost (not a request of its
    /// own, and not reported as bad-envelope); `answers-lost-request` = a response
    /// to a request the capture lost in a gap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<&'static str>,
}

impl MessageRecord {
    /// A request record with only where and when it was seen and its size: what
    /// a decoder starts from and fills in (index 0 until the analyzer numbers it).
    pub fn blank(
        ts: f64,
        transport: Transport,
        (src, dst): (CompactString, CompactString),
        direction: Direction,
        packet: Option<u64>,
        bytes: usize,
    ) -> Self {
        MessageRecord {
            index: 0,
            ts,
            transport,
            src,
            dst,
            direction,
            role: Role::Request,
            dialect: None,
            func_type: None,
            ref_num: None,
            content: None,
            response: None,
            digest: "absent",
            packet,
            func_name: None,
            respcd: None,
            frame: None,
            http: None,
            framing: None,
            answer_ms: None,
            key: None,
            digest_value: None,
            digest_detail: None,
            bytes,
            raw: None,
            gap: None,
        }
    }
}

/// Which key decrypted a message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyUse {
    /// 1-based position among the keys given.
    pub index: usize,
    /// How the key text was read: text-128, text-192, text-256, hex-128.
    pub interpretation: &'static str,
}

/// A request paired with its response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransactionRecord {
    /// Time of the request's first byte.
    /// In jsonl also as `time`, ISO 8601 in UTC.
    #[serde(flatten, serialize_with = "ser_ts_and_time")]
    pub ts: f64,
    /// Transport.
    pub transport: Transport,
    /// The request's func_type.
    pub func_type: Option<u16>,
    /// From the request's last byte to the response's first byte.
    pub latency_ms: f64,
    /// The response code.
    pub respcd: Option<CompactString>,
    /// The merchant reference of the request (or response data).
    pub out_trade_no: Option<CompactString>,
    /// The cash register.
    pub src: CompactString,
    /// The terminal.
    pub dst: CompactString,
    /// The func_type's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub func_name: Option<&'static str>,
    /// Channel of a payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<CompactString>,
    /// Amount of a payment as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amt: Option<CompactString>,
    /// syssn of the response data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syssn: Option<CompactString>,
    /// The request's message number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// The response's message number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<u64>,
}

/// A problem.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FindingRecord {
    /// When it happened (capture time).
    /// In jsonl also as `time`, ISO 8601 in UTC.
    #[serde(flatten, serialize_with = "ser_ts_and_time")]
    pub ts: f64,
    /// The stable code.
    pub code: Code,
    /// Its severity.
    pub severity: Severity,
    /// Transport, when the finding concerns traffic.
    pub transport: Option<Transport>,
    /// Sender address.
    pub src: Option<CompactString>,
    /// Receiver address.
    pub dst: Option<CompactString>,
    /// What exactly was wrong.
    pub detail: String,
    /// The spec rule broken.
    pub rule: &'static str,
    /// Packet number (1-based) where it was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<u64>,
    /// The number of the message it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<u64>,
}

/// Latency figures over all transactions, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

/// The last record.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SummaryRecord {
    /// Packets read.
    pub packets: u64,
    /// Bytes read from the capture (uncompressed).
    pub bytes: u64,
    /// Messages decoded.
    pub messages: u64,
    /// Transactions paired.
    pub transactions: u64,
    /// Findings by code.
    #[serde(serialize_with = "ser_code_map")]
    pub findings: BTreeMap<Code, u64>,
    /// Request messages by func_type ("1001", or "unknown").
    pub func_types: BTreeMap<String, u64>,
    /// Payment requests by channel.
    pub channels: BTreeMap<String, u64>,
    /// Responses by respcd.
    pub respcd: BTreeMap<String, u64>,
    /// Transaction latency.
    pub latency_ms: Option<Latency>,
    /// Files analysed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// USB devices of a USB capture that carried ECR frames or were sent line
    /// settings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub usb_devices: Vec<UsbDeviceInfo>,
    /// Keys bound to an address (`ADDRESS=KEY` in a key file) that matched no
    /// terminal of the capture: usually a mistyped address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unused_keys: Vec<UnusedKey>,
    /// Terminals whose encrypted messages no key given applied to (the keys given
    /// are all bound to other addresses).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terminals_without_key: Vec<String>,
    /// What a live tap lost (absent in offline analysis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<Drops>,
}

/// Packets and records a live tap lost, by where they were lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// Packets the kernel dropped because its buffer was full (libpcap `ps_drop`).
    pub kernel: u64,
    /// Packets the interface or its driver dropped (libpcap `ps_ifdrop`).
    pub interface: u64,
    /// Packets captured but dropped because the analyzer's queue was full.
    pub queue: u64,
    /// Output records dropped because stdout was not read fast enough.
    pub output: u64,
}

impl Drops {
    /// Packets lost before analysis (kernel, interface and queue).
    pub fn packets(&self) -> u64 {
        self.kernel
            .saturating_add(self.interface)
            .saturating_add(self.queue)
    }
}

/// A bound key that matched no traffic (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnusedKey {
    /// The key's 1-based number, as in `key.index` of message records.
    pub key: usize,
    /// The address it is bound to.
    pub bound_to: String,
}

/// A USB-serial adapter seen in a USB capture.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UsbDeviceInfo {
    /// BUS:DEV, as tshark's usb.bus_id and usb.device_address.
    pub device: String,
    /// The serial link's label in messages ("usb1:5").
    pub link: String,
    /// Which USB end is the cash register: "host" or "device"; none when the device
    /// carried no ECR frames.
    pub ecr: Option<&'static str>,
    /// Why that end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oriented_by: Option<String>,
    /// The last line settings sent by SET_LINE_CODING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<LineInfo>,
    /// Line bytes from the host to the device.
    pub bytes_from_host: u64,
    /// Line bytes from the device to the host.
    pub bytes_from_device: u64,
}

/// Serial line settings (CDC / PL2303 SET_LINE_CODING).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineInfo {
    /// Short form, e.g. "9600 8N1".
    pub settings: String,
    /// Bits per second.
    pub baud: u32,
    /// Data bits.
    pub data_bits: u8,
    /// none, odd, even, mark, space.
    pub parity: &'static str,
    /// "1", "1.5" or "2".
    pub stop_bits: &'static str,
    /// Whether they are spec 10.9's 9600 8N1.
    pub spec: bool,
    /// Packet of the (last) request that set them.
    pub packet: u64,
    /// That packet's capture time (for the `line-settings` finding; the summary
    /// names the packet).
    #[serde(skip)]
    pub ts: Timestamp,
    /// How many SET_LINE_CODING requests were seen.
    pub requests: u32,
}

fn ser_code_map<S: Serializer>(m: &BTreeMap<Code, u64>, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        map.serialize_entry(k.as_str(), v)?;
    }
    map.end()
}

/// Writes `ts` (epoch seconds) and `time` (ISO 8601 UTC, `2026-11-25T22:06:58.516736Z`)
/// for a record's capture time.
fn ser_ts_and_time<S: Serializer>(ts: &f64, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Time", 2)?;
    st.serialize_field("ts", ts)?;
    st.serialize_field("time", &crate::output::iso_utc(*ts))?;
    st.end()
}

/// Any record.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// A message.
    Message(Box<MessageRecord>),
    /// A transaction.
    Transaction(TransactionRecord),
    /// A finding.
    Finding(FindingRecord),
    /// The summary.
    Summary(SummaryRecord),
}

/// Where records go as they are produced.
pub trait Sink {
    /// Takes one record.
    fn record(&mut self, record: Record);
}

impl<F: FnMut(Record)> Sink for F {
    fn record(&mut self, record: Record) {
        self(record)
    }
}

/// Percentiles of latencies (sorted in place).
pub fn latency_of(samples: &mut [f64]) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples.get(i).copied().unwrap_or(0.0)
    };
    Some(Latency {
        min: at(0.0),
        median: at(0.5),
        p95: at(0.95),
        max: at(1.0),
    })
}

/// Writes the JSON of the frequent records (messages and transactions) straight
/// into `buf`, byte for byte what `serde_json::to_writer` writes for them, without
/// serde's per-byte escaping; `false` (and nothing written) for other records,
/// which the caller serialises with serde. Strings with something to escape go
/// through serde_json, as do floats, so the rare cases stay serde_json's own.
pub(crate) fn write_json_fast(record: &Record, buf: &mut Vec<u8>, times: &mut TimeCache) -> bool {
    let mut j = Json(buf);
    match record {
        Record::Message(m) => j.message(m, times),
        Record::Transaction(t) => j.transaction(t, times),
        Record::Finding(_) | Record::Summary(_) => return false,
    }
    true
}

/// How [`put_escaped`] writes each byte: 0 = as it is, `u` = `\u00XX`, otherwise
/// the letter after the backslash. serde_json's table: the short forms `\b`, `\t`,
/// `\n`, `\f`, `\r`, `\"`, `\\`, the other control characters as `\u00XX` (lowercase
/// hex), and nothing else escaped (not DEL, not `/`, not non-ASCII).
// Indexing in a constant's initialiser: out of bounds fails the build, never a run.
#[allow(clippy::indexing_slicing)]
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = b'u';
        c += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether one of the 8 bytes of `w` needs escaping (a control character, a quote
/// or a backslash), exactly (`ecr_proto::swar`).
#[inline(always)]
fn word_needs_escape(w: u64) -> bool {
    ecr_proto::swar::json_special_mask(w) != 0
}

/// Whether a block of 16 bytes holds a byte that needs escaping, without branches
/// inside the block (the compiler makes it a few vector instructions).
#[inline(always)]
fn block_needs_escape(chunk: &[u8; 16]) -> bool {
    let mut m = 0u8;
    for &c in chunk {
        m |= u8::from(c < 0x20 || c == b'"' || c == b'\\');
    }
    m != 0
}

/// Whether `s` (16 bytes or more) holds a byte that needs escaping: 16 bytes at a
/// time, the tail as the last 16 bytes (overlapping the block before it).
fn long_needs_escape(s: &[u8]) -> bool {
    let mut chunks = s.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.try_into().is_ok_and(block_needs_escape) {
            return true;
        }
    }
    if chunks.remainder().is_empty() {
        return false;
    }
    s.len()
        .checked_sub(16)
        .and_then(|from| s.get(from..))
        .and_then(|tail| <&[u8; 16]>::try_from(tail).ok())
        .is_some_and(block_needs_escape)
}

/// Eight bytes of `s` from `at` as a little-endian word (zero if out of range,
/// which the callers' length checks rule out).
#[inline(always)]
fn word8(s: &[u8], at: usize) -> [u8; 8] {
    s.get(at..at.wrapping_add(8))
        .and_then(|w| w.try_into().ok())
        .unwrap_or([0; 8])
}

/// Four bytes of `s` from `at` (zero if out of range, see [`word8`]).
#[inline(always)]
fn word4(s: &[u8], at: usize) -> [u8; 4] {
    s.get(at..at.wrapping_add(4))
        .and_then(|w| w.try_into().ok())
        .unwrap_or([0; 4])
}

/// The longest string [`put_short`] takes.
const SHORT: usize = 32;
/// What [`put_short`] appends before cutting it: an opening quote, the text, the
/// closing quote and a colon.
const WINDOW: usize = SHORT + 3;

/// Appends a window of quotes and stores `a` at the start and `b` at the end of
/// the `n` bytes of text in it (which begin at `open`); `a` and `b` overlap when
/// `n` is less than their lengths together.
#[inline(always)]
fn fill_window(out: &mut Vec<u8>, open: usize, n: usize, a: &[u8], b: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[b'"'; WINDOW]);
    let win = out.get_mut(start..).unwrap_or_default();
    if let Some(d) = win.get_mut(open..open + a.len()) {
        d.copy_from_slice(a);
    }
    if let Some(d) = win.get_mut((open + n).saturating_sub(b.len())..open + n) {
        d.copy_from_slice(b);
    }
}

/// Appends `s` (at most [`SHORT`] bytes) when it needs no escaping, in quotes when
/// `QUOTE`, followed by a colon when `COLON` (a member name); `false`, and nothing
/// appended, when a byte needs escaping or `s` is longer. One pass and no call to
/// memcpy: the bytes are read as two overlapping pieces (16, 8 or 4 bytes, or
/// three single bytes), checked as pieces, and stored into a window appended filled
/// with quotes, which is then cut to length (the quote after the text is already
/// there).
#[inline(always)]
fn put_short<const QUOTE: bool, const COLON: bool>(out: &mut Vec<u8>, s: &[u8]) -> bool {
    let n = s.len();
    if n > SHORT {
        return false;
    }
    let open = usize::from(QUOTE);
    let start = out.len();
    if n >= 16 {
        let (Some(a), Some(b)) = (
            s.get(..16).and_then(|w| <&[u8; 16]>::try_from(w).ok()),
            s.get(n - 16..).and_then(|w| <&[u8; 16]>::try_from(w).ok()),
        ) else {
            return false;
        };
        if block_needs_escape(a) || block_needs_escape(b) {
            return false;
        }
        fill_window(out, open, n, a, b);
    } else if n >= 8 {
        let (a, b) = (word8(s, 0), word8(s, n - 8));
        if word_needs_escape(u64::from_le_bytes(a)) || word_needs_escape(u64::from_le_bytes(b)) {
            return false;
        }
        fill_window(out, open, n, &a, &b);
    } else if n >= 4 {
        let (a, b) = (word4(s, 0), word4(s, n - 4));
        // Each word twice in a 64-bit word: the same bytes, checked exactly.
        let wide = |w: [u8; 4]| u64::from(u32::from_le_bytes(w)) * 0x1_0000_0001;
        if word_needs_escape(wide(a)) || word_needs_escape(wide(b)) {
            return false;
        }
        fill_window(out, open, n, &a, &b);
    } else if let (Some(&a), Some(&b), Some(&c)) = (s.first(), s.get(n / 2), s.last()) {
        if escape_of(a) | escape_of(b) | escape_of(c) != 0 {
            return false;
        }
        out.extend_from_slice(&[b'"'; WINDOW]);
        let win = out.get_mut(start..).unwrap_or_default();
        for (at, byte) in [(0, a), (n / 2, b), (n - 1, c)] {
            if let Some(d) = win.get_mut(open + at) {
                *d = byte;
            }
        }
    } else {
        out.extend_from_slice(&[b'"'; WINDOW]);
    }
    let mut len = n + 2 * open;
    if COLON {
        if let Some(d) = out.get_mut(start + len) {
            *d = b':';
        }
        len += 1;
    }
    out.truncate(start + len);
    true
}

/// A byte's entry in [`ESCAPE`] (every byte has one: the table has 256 entries).
#[inline]
fn escape_of(b: u8) -> u8 {
    ESCAPE.get(usize::from(b)).copied().unwrap_or(b'u')
}

/// The lowercase hex digit of the low four bits of `n`.
#[inline]
fn hex_digit(n: u8) -> u8 {
    b"0123456789abcdef"
        .get(usize::from(n & 15))
        .copied()
        .unwrap_or(b'0')
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: runs of bytes
/// that need no escaping are copied whole, each byte that does is written as its
/// escape.
fn put_escaped(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut run = 0;
    for (i, &c) in s.iter().enumerate() {
        let e = escape_of(c);
        if e == 0 {
            continue;
        }
        out.extend_from_slice(s.get(run..i).unwrap_or_default());
        if e == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                hex_digit(c >> 4),
                hex_digit(c & 15),
            ]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        run = i + 1;
    }
    out.extend_from_slice(s.get(run..).unwrap_or_default());
    out.push(b'"');
}

/// Appends `s` as a JSON string (byte for byte what serde_json writes).
#[inline]
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= SHORT {
        if !put_short::<true, false>(out, s) {
            put_escaped(out, s);
        }
    } else if long_needs_escape(s) {
        put_escaped(out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    }
}

/// Capture times whose text [`TimeCache`] keeps.
const TIME_SLOTS: usize = 4;
/// Room for `"ts":` and the longest float, `,"time":` and the quoted ISO time.
const TIME_TEXT: usize = 72;

/// The `"ts":…,"time":…` texts of the last few capture times written: a
/// transaction's time is its request's, written a few records before, and the
/// float and date formatting are the dearest part of a short record.
pub(crate) struct TimeCache {
    /// Time bits, text length (0: empty slot), text.
    slots: [(u64, u8, [u8; TIME_TEXT]); TIME_SLOTS],
    /// The slot to fill next (round robin).
    next: usize,
}

impl Default for TimeCache {
    fn default() -> Self {
        TimeCache {
            slots: [(0, 0, [0; TIME_TEXT]); TIME_SLOTS],
            next: 0,
        }
    }
}

/// A JSON writer into a byte buffer. Member names are written as literals
/// (`,"name":`): they are ours and need no escaping.
struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    #[inline(always)]
    fn lit(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn str(&mut self, s: &str) {
        put_str(self.0, s.as_bytes());
    }

    /// A member name and its colon (`"name":`).
    fn key(&mut self, k: &str) {
        let k = k.as_bytes();
        if !put_short::<true, true>(self.0, k) {
            put_str(self.0, k);
            self.0.push(b':');
        }
    }

    /// Text that is valid JSON as it is (a number token).
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.lit("null"),
        }
    }

    fn uint(&mut self, n: impl itoa::Integer) {
        let mut b = itoa::Buffer::new();
        // At most 20 digits: the short path, a copy of known length.
        self.raw(b.format(n));
    }

    fn opt_uint(&mut self, n: Option<impl itoa::Integer>) {
        match n {
            Some(n) => self.uint(n),
            None => self.lit("null"),
        }
    }

    fn float(&mut self, f: f64) {
        // serde_json's form (its own formatter, zmij: the shortest text that
        // reads back as the same number), `null` when not finite.
        if f.is_finite() {
            let mut b = zmij::Buffer::new();
            self.raw(b.format_finite(f));
        } else {
            self.lit("null");
        }
    }

    /// `"ts":…,"time":…` as `ser_ts_and_time` writes them (flattened), from
    /// `times` when written a few records before.
    fn ts_and_time(&mut self, ts: f64, times: &mut TimeCache) {
        let bits = ts.to_bits();
        if let Some((_, len, text)) = times.slots.iter().find(|s| s.0 == bits && s.1 > 0) {
            self.0
                .extend_from_slice(text.get(..usize::from(*len)).unwrap_or_default());
            return;
        }
        let start = self.0.len();
        self.lit("\"ts\":");
        self.float(ts);
        self.lit(",\"time\":");
        if !crate::output::write_iso_utc(self.0, ts, true) {
            self.lit("null");
        }
        let written = self.0.get(start..).unwrap_or_default();
        if let (Ok(len), Some(slot)) = (
            u8::try_from(written.len()),
            times.slots.get_mut(times.next % TIME_SLOTS),
        ) {
            if let Some(text) = slot.2.get_mut(..written.len()) {
                text.copy_from_slice(written);
                *slot = (bits, len, slot.2);
                times.next = times.next.wrapping_add(1);
            }
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.lit("null"),
            Value::Bool(true) => self.lit("true"),
            Value::Bool(false) => self.lit("false"),
            Value::Number(n) if is_json_number(n.as_bytes()) => self.raw(n),
            Value::Number(n) | Value::String(n) => self.str(n),
            Value::Array(items) => {
                self.0.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.0.push(b',');
                    }
                    self.value(item);
                }
                self.0.push(b']');
            }
            Value::Object(o) => self.object(o),
        }
    }

    fn object(&mut self, o: &Object) {
        self.members(o, None);
    }

    /// An object; with `data`, each member named `data` is written as that text,
    /// which is what writing its parse gives (ecr_proto::compact).
    fn members(&mut self, o: &Object, data: Option<&CompactJson>) {
        self.0.push(b'{');
        for (i, (k, v)) in o.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.key(k);
            match data {
                Some(d) if k == "data" => self.raw(d.as_str()),
                _ => self.value(v),
            }
        }
        self.0.push(b'}');
    }

    fn opt_object(&mut self, o: Option<&RawObject>) {
        match o {
            Some(o) => self.members(&o.object, o.data.as_ref()),
            None => self.lit("null"),
        }
    }

    fn message(&mut self, m: &MessageRecord, times: &mut TimeCache) {
        self.lit("{\"kind\":\"message\",\"index\":");
        self.uint(m.index);
        self.0.push(b',');
        self.ts_and_time(m.ts, times);
        self.transport(m.transport);
        self.lit(",\"src\":");
        self.str(&m.src);
        self.lit(",\"dst\":");
        self.str(&m.dst);
        // One literal per variant: copies of a known length, made inline.
        match m.direction {
            Direction::EcrToPos => self.lit(",\"direction\":\"ecr-to-pos\""),
            Direction::PosToEcr => self.lit(",\"direction\":\"pos-to-ecr\""),
        }
        match m.role {
            Role::Request => self.lit(",\"role\":\"request\""),
            Role::Response => self.lit(",\"role\":\"response\""),
            Role::Ack => self.lit(",\"role\":\"ack\""),
            Role::ErrorFrame => self.lit(",\"role\":\"error-frame\""),
            Role::Preflight => self.lit(",\"role\":\"preflight\""),
        }
        self.lit(",\"dialect\":");
        self.opt_str(m.dialect);
        self.lit(",\"func_type\":");
        self.opt_uint(m.func_type);
        self.lit(",\"ref\":");
        self.opt_uint(m.ref_num);
        self.lit(",\"content\":");
        self.opt_object(m.content.as_ref());
        self.lit(",\"response\":");
        self.opt_object(m.response.as_ref());
        self.lit(",\"digest\":");
        self.str(m.digest);
        if let Some(p) = m.packet {
            self.lit(",\"packet\":");
            self.uint(p);
        }
        if let Some(n) = m.func_name {
            self.lit(",\"func_name\":");
            self.str(n);
        }
        if let Some(r) = &m.respcd {
            self.lit(",\"respcd\":");
            self.str(r);
        }
        if let Some(f) = &m.frame {
            self.lit(",\"frame\":");
            self.frame(f);
        }
        if let Some(h) = &m.http {
            self.lit(",\"http\":");
            self.http(h);
        }
        if let Some(a) = m.answer_ms {
            self.lit(",\"answer_ms\":");
            self.float(a);
        }
        if let Some(f) = m.framing {
            self.lit(",\"framing\":");
            self.str(f);
        }
        if let Some(k) = &m.key {
            self.lit(",\"key\":{\"index\":");
            self.uint(k.index);
            self.lit(",\"interpretation\":");
            self.str(k.interpretation);
            self.0.push(b'}');
        }
        if let Some(d) = &m.digest_value {
            self.lit(",\"digest_value\":");
            self.str(d);
        }
        if let Some(d) = &m.digest_detail {
            self.lit(",\"digest_detail\":");
            self.str(d);
        }
        self.lit(",\"bytes\":");
        self.uint(m.bytes);
        if let Some(r) = &m.raw {
            self.lit(",\"raw\":");
            self.str(r);
        }
        if let Some(g) = m.gap {
            self.lit(",\"gap\":");
            self.str(g);
        }
        self.0.push(b'}');
    }

    /// `,"transport":"…"`.
    fn transport(&mut self, t: Transport) {
        match t {
            Transport::Http => self.lit(",\"transport\":\"http\""),
            Transport::Tcp => self.lit(",\"transport\":\"tcp\""),
            Transport::Serial => self.lit(",\"transport\":\"serial\""),
            Transport::Https => self.lit(",\"transport\":\"https\""),
        }
    }

    fn frame(&mut self, f: &FrameInfo) {
        self.lit("{\"type\":");
        self.uint(f.frame_type);
        self.lit(",\"version\":");
        self.uint(f.version);
        self.lit(",\"total_len\":");
        self.uint(f.total_len);
        self.lit(",\"data_len\":");
        self.uint(f.data_len);
        self.lit(",\"fragments\":");
        self.uint(f.fragments);
        self.lit(",\"offset\":");
        self.uint(f.offset);
        if !f.parts.is_empty() {
            self.lit(",\"parts\":[");
            for (i, p) in f.parts.iter().enumerate() {
                if i > 0 {
                    self.0.push(b',');
                }
                self.lit("{\"total_len\":");
                self.uint(p.total_len);
                self.lit(",\"data_len\":");
                self.uint(p.data_len);
                self.lit(",\"carried\":");
                self.uint(p.carried);
                self.lit(",\"offset\":");
                self.uint(p.offset);
                self.lit(",\"ts\":");
                self.float(p.ts);
                if let Some(g) = p.gap_ms {
                    self.lit(",\"gap_ms\":");
                    self.float(g);
                }
                self.0.push(b'}');
            }
            self.0.push(b']');
        }
        self.0.push(b'}');
    }

    fn http(&mut self, h: &HttpInfo) {
        self.0.push(b'{');
        let mut first = true;
        let mut sep = |j: &mut Self, name: &str| {
            if !first {
                j.0.push(b',');
            }
            first = false;
            j.0.push(b'"');
            j.lit(name);
            j.lit("\":");
        };
        if let Some(m) = &h.method {
            sep(self, "method");
            self.str(m);
        }
        if let Some(p) = &h.path {
            sep(self, "path");
            self.str(p);
        }
        if let Some(s) = h.status {
            sep(self, "status");
            self.uint(s);
        }
        if let Some(r) = &h.reason {
            sep(self, "reason");
            self.str(r);
        }
        self.0.push(b'}');
    }

    fn transaction(&mut self, t: &TransactionRecord, times: &mut TimeCache) {
        self.lit("{\"kind\":\"transaction\",");
        self.ts_and_time(t.ts, times);
        self.transport(t.transport);
        self.lit(",\"func_type\":");
        self.opt_uint(t.func_type);
        self.lit(",\"latency_ms\":");
        self.float(t.latency_ms);
        self.lit(",\"respcd\":");
        self.opt_str(t.respcd.as_deref());
        self.lit(",\"out_trade_no\":");
        self.opt_str(t.out_trade_no.as_deref());
        self.lit(",\"src\":");
        self.str(&t.src);
        self.lit(",\"dst\":");
        self.str(&t.dst);
        for (name, v) in [
            (",\"func_name\":", t.func_name),
            (",\"channel\":", t.channel.as_deref()),
            (",\"amt\":", t.amt.as_deref()),
            (",\"syssn\":", t.syssn.as_deref()),
        ] {
            if let Some(v) = v {
                self.lit(name);
                self.str(v);
            }
        }
        if let Some(r) = t.request {
            self.lit(",\"request\":");
            self.uint(r);
        }
        if let Some(r) = t.response {
            self.lit(",\"response\":");
            self.uint(r);
        }
        self.0.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(r: &Record) -> (String, String) {
        let mut fast = Vec::new();
        let mut times = TimeCache::default();
        assert!(write_json_fast(r, &mut fast, &mut times));
        // Again, with its time now in the cache: the same text.
        let mut again = Vec::new();
        assert!(write_json_fast(r, &mut again, &mut times));
        assert_eq!(again, fast);
        let fast = String::from_utf8(fast).unwrap();
        // The reference: serde's derive, the writer's only path before.
        let slow = serde_json::to_string(r).unwrap();
        (fast, slow)
    }

    fn message() -> MessageRecord {
        MessageRecord {
            index: 7,
            ..MessageRecord::blank(
                1_700_000_000.000_079_9,
                Transport::Tcp,
                ("10.0.0.1:4000".into(), "10.0.0.2:9002".into()),
                Direction::EcrToPos,
                None,
                0,
            )
        }
    }

    #[test]
    fn fast_json_is_serde_json_byte_for_byte() {
        let mut awkward = Object::new();
        awkward.push("amt", Value::Number("10.10".into()));
        awkward.push("bad", Value::Number("+3".into()));
        awkward.push("big", Value::Number("-1.5e400".into()));
        awkward.push(
            "q\"uo\\te\u{1}\n",
            Value::String("tab\there \u{7f} \u{1f} é 你好 \"".into()),
        );
        awkward.push("long", Value::from("x".repeat(100) + "\u{0}"));
        awkward.push("clean", Value::from("y".repeat(33)));
        awkward.push(
            "list",
            Value::Array(vec![
                Value::Null,
                Value::Bool(true),
                Value::Bool(false),
                Value::Array(vec![]),
            ]),
        );
        awkward.push("obj", Value::Object(Object::new()));
        awkward.push("amt", Value::Number("1".into()));
        let mut full = message();
        full.ts = 0.0;
        full.role = Role::ErrorFrame;
        full.direction = Direction::PosToEcr;
        full.transport = Transport::Serial;
        full.dialect = Some("plain");
        full.func_type = Some(1001);
        full.ref_num = Some(255);
        full.content = Some(RawObject::new(awkward.clone()));
        full.response = Some(RawObject::new(awkward));
        full.packet = Some(u64::MAX);
        full.func_name = Some("Payment");
        full.respcd = Some("6000".into());
        full.frame = Some(FrameInfo {
            frame_type: 16,
            version: 1,
            total_len: 300,
            data_len: 289,
            fragments: 2,
            offset: 12,
            parts: vec![
                FragmentInfo {
                    total_len: 200,
                    data_len: 289,
                    carried: 189,
                    offset: 12,
                    ts: 1.5,
                    gap_ms: None,
                },
                FragmentInfo {
                    total_len: 111,
                    data_len: 289,
                    carried: 100,
                    offset: 212,
                    ts: 1.75,
                    gap_ms: Some(f64::NAN),
                },
            ],
        });
        full.http = Some(HttpInfo {
            method: None,
            path: Some("/a\"b".into()),
            status: Some(200),
            reason: None,
        });
        full.answer_ms = Some(0.1 + 0.2);
        full.framing = Some("frames");
        full.key = Some(KeyUse {
            index: 3,
            interpretation: "text-128",
        });
        full.digest_value = Some("AB".into());
        full.digest_detail = Some("why\r\n".into());
        full.bytes = 289;
        full.raw = Some("\u{8}\u{c}…".into());
        full.gap = Some("tail");
        let mut other_http = message();
        other_http.http = Some(HttpInfo {
            method: Some("POST".into()),
            path: None,
            status: None,
            reason: Some("OK".into()),
        });
        other_http.role = Role::Preflight;
        other_http.ts = -1.25;
        let mut empty_http = message();
        empty_http.http = Some(HttpInfo {
            method: None,
            path: None,
            status: None,
            reason: None,
        });
        empty_http.role = Role::Ack;
        empty_http.ts = f64::INFINITY;
        empty_http.transport = Transport::Https;
        let mut far = message();
        far.ts = 1e13;
        far.role = Role::Response;
        for m in [message(), full, other_http, empty_http, far] {
            let (fast, slow) = both(&Record::Message(Box::new(m)));
            assert_eq!(fast, slow);
        }
        // A response whose `data` came as compact JSON text is written as if the
        // text had been parsed into each `data` member.
        let text = r#"{"syssn":"1","q":"a\"b\\c","n":[1.50,{"x":null}],"t":true}"#;
        let mut fields = Object::new();
        fields.push("respcd", Value::from("0000"));
        fields.push("data", Value::from(text));
        fields.push("x", Value::Number("1.0".into()));
        fields.push("data", Value::from("ignored: the last data member counts"));
        let kept = RawObject {
            object: fields,
            data: CompactJson::new(text),
        };
        assert!(kept.data.is_some());
        let parsed = RawObject::new(kept.with_data().into_owned());
        assert!(parsed
            .object
            .iter()
            .all(|(k, v)| k != "data" || v.as_object().is_some()));
        let mut as_text = message();
        as_text.response = Some(kept);
        let mut as_tree = message();
        as_tree.response = Some(parsed);
        let (fast, slow) = both(&Record::Message(Box::new(as_text)));
        assert_eq!(fast, slow);
        assert_eq!(fast, both(&Record::Message(Box::new(as_tree))).0);
        assert!(fast.contains(&format!(r#""data":{text},"x":1.0,"data":{text}}}"#)));
        let t = TransactionRecord {
            ts: 1_764_194_400.25,
            transport: Transport::Http,
            func_type: Some(3001),
            latency_ms: 12.5,
            respcd: None,
            out_trade_no: Some("O\"1".into()),
            src: "a".into(),
            dst: "b".into(),
            func_name: None,
            channel: Some("alipay".into()),
            amt: None,
            syssn: Some("1".into()),
            request: Some(1),
            response: None,
        };
        let mut t2 = t.clone();
        t2.func_type = None;
        t2.respcd = Some("6000".into());
        t2.out_trade_no = None;
        t2.func_name = Some("Refund");
        t2.amt = Some("1.00".into());
        t2.request = None;
        t2.response = Some(9);
        t2.latency_ms = f64::NAN;
        for t in [t, t2] {
            let (fast, slow) = both(&Record::Transaction(t));
            assert_eq!(fast, slow);
        }
        let mut buf = Vec::new();
        assert!(!write_json_fast(
            &Record::Summary(SummaryRecord::default()),
            &mut buf,
            &mut TimeCache::default()
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn cached_times_are_the_times_written_fresh() {
        // More distinct times than slots, revisited in a different order, with
        // the unknown time (0) and a time beyond year 9999 among them.
        let times = [1.5, 1_700_000_000.000_079_9, 0.0, 2.0, 1e13, 3.25, 1.5, 4.0];
        let mut cache = TimeCache::default();
        for &ts in times.iter().chain(times.iter().rev()) {
            let mut m = message();
            m.ts = ts;
            let r = Record::Message(Box::new(m));
            let mut cached = Vec::new();
            assert!(write_json_fast(&r, &mut cached, &mut cache));
            assert_eq!(
                String::from_utf8(cached).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
        }
    }

    /// The oracle: serde_json's own string escaping.
    fn serde_str(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).unwrap()
    }

    fn ours(s: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        // Each after some bytes already in the buffer, which must stay.
        let mut out = [b"[".to_vec(), b"{".to_vec(), b"[".to_vec()];
        let [plain, key, raw] = &mut out;
        Json(plain).str(s);
        Json(key).key(s);
        Json(raw).raw(s);
        let [plain, key, raw] = out.map(|mut o| o.split_off(1));
        (plain, key, raw)
    }

    fn check(s: &str) {
        let want = serde_str(s);
        let (plain, key, raw) = ours(s);
        assert_eq!(plain, want, "{s:?}");
        let mut want_key = want.clone();
        want_key.push(b':');
        assert_eq!(key, want_key, "{s:?}");
        // `raw` copies as it is (it is given number tokens only).
        assert_eq!(raw, s.as_bytes(), "{s:?}");
    }

    #[test]
    fn escaper_is_serde_json_for_every_byte_at_every_position() {
        // Every code point below 256 (U+0080..U+00FF are two UTF-8 bytes, 0xC2/0xC3
        // and a continuation byte), at every position of strings of 0-40 bytes, on
        // fillers that sit next to the escaped bytes' values.
        for fill in ['a', ' ', '!', '#', '[', ']', '\u{7f}', 'é', '\u{ff}'] {
            for len in 0..40 {
                let base: Vec<char> = std::iter::repeat_n(fill, len).collect();
                check(&base.iter().collect::<String>());
                for at in 0..len {
                    for c in 0u32..=255 {
                        let mut t = base.clone();
                        t[at] = char::from_u32(c).unwrap();
                        check(&t.iter().collect::<String>());
                    }
                }
            }
        }
    }

    #[test]
    fn escaper_is_serde_json_on_multibyte_and_mixed_text() {
        let pieces = [
            "é",
            "你好",
            "😀",
            "\u{7f}",
            "\u{80}",
            "\u{2028}",
            "\u{feff}",
            "\"",
            "\\",
            "/",
            "\n",
            "\r\n",
            "\t",
            "\u{0}",
            "\u{1b}[31m",
            "\u{8}\u{c}",
            "x",
            "0123456789",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for pad in 0..18 {
                        let s = format!("{}{a}{b}{}{c}", "p".repeat(pad), "q".repeat(pad / 3));
                        check(&s);
                    }
                }
            }
        }
        // Long runs with escapes far apart, and an escape in the last byte.
        check(&("z".repeat(100) + "\"" + &"y".repeat(47) + "\u{1}"));
        check(&"\\".repeat(70));
    }

    #[test]
    fn word_check_is_exact() {
        let naive = |w: [u8; 8]| w.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for fill in [0x20u8, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff] {
            for other in [fill, 0x00, 0x1f, b'"', b'\\', 0xff] {
                for at in 0..8 {
                    for c in 0..=255u8 {
                        // One byte under test and one other at every second place.
                        let mut w = [fill; 8];
                        w[(at + 3) % 8] = other;
                        w[at] = c;
                        assert_eq!(word_needs_escape(u64::from_le_bytes(w)), naive(w), "{w:?}");
                    }
                }
            }
        }
        for len in 16..80 {
            for at in 0..len {
                for bad in [b'"', b'\\', 0u8, 0x1f] {
                    let mut s = vec![b'a'; len];
                    s[at] = bad;
                    assert!(long_needs_escape(&s), "{len} {at} {bad}");
                }
            }
            assert!(!long_needs_escape(&vec![b'a'; len]));
            assert!(!long_needs_escape("é\u{7f} ~".repeat(len).as_bytes()));
        }
    }

    proptest::proptest! {
        #[test]
        fn escaper_is_serde_json_on_any_string(s in ".{0,80}", t in "[\\x00-\\x7f]{0,40}") {
            check(&s);
            check(&t);
            check(&(s + &t));
        }
    }
}
