//! Streaming capture reader (pcap, pcapng, gzip) and writers (pcapng, pcap).
//!
//! The reader keeps one reusable buffer (1 MiB at first, grown only when a single
//! record needs more, up to [`ReaderOptions::max_block_len`]) and hands out packets
//! as slices borrowed from it, so reading a capture costs a few large `read` calls
//! and no allocation per packet. Every length taken from the file is bounded before
//! it is trusted: no input makes the reader allocate without bound, panic or loop.
//!
//! Damaged input: a pcapng block carries its own length, so after a damaged block
//! the reader reports an error and continues with the next block. A classic pcap
//! record header has nothing to resynchronise on, so a damaged or truncated record
//! ends the file (with an error naming the offset); packets read so far stay valid.
//!
//! Offsets in errors are byte offsets in the (decompressed) capture stream.

use std::fmt;
use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ecr_proto::Timestamp;

/// Largest record or block the reader accepts by default (16 MiB). Real packets are
/// at most a few hundred KiB (USB captures); a larger length is almost always damage,
/// and the bound keeps peak memory predictable.
pub const DEFAULT_MAX_BLOCK_LEN: usize = 16 << 20;

/// Hard ceiling for [`ReaderOptions::max_block_len`] (256 MiB).
pub const MAX_BLOCK_LEN_CEILING: usize = 256 << 20;

/// Initial size of the read buffer; reads are done in chunks of about this size.
const INITIAL_BUF_LEN: usize = 1 << 20;

/// Compact the buffer before reading when less than this is free at its end, so
/// reads stay large.
const MIN_READ_LEN: usize = 64 << 10;

/// Interfaces accepted per pcapng section (bounds the interface table).
const MAX_INTERFACES: usize = 1 << 16;

/// Longest interface name kept from an IDB (longer names are cut).
const MAX_IF_NAME: usize = 256;

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAP_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;

const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OPB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
/// Decryption Secrets Block (pcapng 4.7).
const PCAPNG_DSB: u32 = 0x0a;
/// DSB secrets type of a TLS key log ("TLSK").
pub const DSB_TLS_KEYLOG: u32 = 0x544c_534b;
/// Most bytes of TLS secrets kept from Decryption Secrets Blocks until taken.
pub const MAX_DSB_BYTES: usize = 16 << 20;
const PCAPNG_MIN_BLOCK: usize = 12;

const OPT_END: u16 = 0;
const OPT_IF_NAME: u16 = 2;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;
const OPT_EPB_FLAGS: u16 = 2;

/// Direction of a packet relative to the capturing interface (pcapng `epb_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by the interface.
    Inbound,
    /// Sent by the interface.
    Outbound,
}

impl Direction {
    /// Decodes the two direction bits of `epb_flags` (0 = unknown).
    fn from_flags(flags: u32) -> Option<Self> {
        match flags & 0b11 {
            1 => Some(Direction::Inbound),
            2 => Some(Direction::Outbound),
            _ => None,
        }
    }

    fn to_flags(dir: Option<Self>) -> u32 {
        match dir {
            None => 0,
            Some(Direction::Inbound) => 1,
            Some(Direction::Outbound) => 2,
        }
    }
}

/// One captured packet, borrowed from the reader's buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Packet number, 1-based, as Wireshark numbers frames (damaged packet records
    /// still take a number, so later numbers match other tools).
    pub index: u64,
    /// Capture time.
    pub ts: Timestamp,
    /// LINKTYPE_* value of the interface the packet was captured on.
    pub linktype: u32,
    /// The captured bytes (possibly cut by the snap length: compare with `orig_len`).
    pub data: &'a [u8],
    /// Length of the packet on the wire.
    pub orig_len: u32,
    /// Interface number within the section (always 0 for pcap).
    pub interface: u32,
    /// Direction from pcapng flags, when the capture records it.
    pub direction: Option<Direction>,
}

impl Packet<'_> {
    /// True when the capture kept fewer bytes than were on the wire (snap length).
    pub fn is_truncated(&self) -> bool {
        (self.data.len() as u64) < u64::from(self.orig_len)
    }
}

/// The container format, as detected from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap format.
    Pcap {
        /// Nanosecond timestamps (magic `a1b23c4d`).
        nanos: bool,
        /// File written big-endian.
        big_endian: bool,
    },
    /// pcapng (byte order may change per section).
    Pcapng,
}

/// What is known about one capture interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// LINKTYPE_* value.
    pub linktype: u32,
    /// Snap length (0 = unlimited in pcapng).
    pub snaplen: u32,
    /// Interface name (`if_name`), if given.
    pub name: Option<String>,
    /// Raw `if_tsresol` value (6 = microseconds unless set).
    pub tsresol: u8,
    /// `if_tsoffset` in seconds.
    pub tsoffset: i64,
}

impl InterfaceInfo {
    fn new(linktype: u32, snaplen: u32) -> Self {
        InterfaceInfo {
            linktype,
            snaplen,
            name: None,
            tsresol: 6,
            tsoffset: 0,
        }
    }

    /// Converts a raw pcapng timestamp (in units of this interface's resolution)
    /// to nanoseconds since the epoch, saturating on absurd values.
    fn to_timestamp(&self, units: u64) -> Timestamp {
        let units = i128::from(units);
        let exp = u32::from(self.tsresol & 0x7f);
        let ns: i128 = if self.tsresol & 0x80 == 0 {
            if exp <= 9 {
                units.saturating_mul(10i128.pow(9 - exp))
            } else {
                // 10^38 fits in i128; beyond that every u64 value rounds to 0.
                10i128.checked_pow(exp - 9).map_or(0, |d| units / d)
            }
        } else if exp <= 126 {
            units.saturating_mul(1_000_000_000) >> exp
        } else {
            0
        };
        let ns = ns.saturating_add(i128::from(self.tsoffset).saturating_mul(1_000_000_000));
        Timestamp(ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }
}

/// Where in the capture something was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Byte offset in the (decompressed) capture stream.
    pub offset: u64,
    /// Packet number, when the problem concerns a packet record.
    pub packet: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offset {}", self.offset)?;
        if let Some(p) = self.packet {
            write!(f, " (packet {p})")?;
        }
        Ok(())
    }
}

fn not_capture_text(first_bytes: &str) -> String {
    if first_bytes.is_empty() {
        "empty file: not a pcap or pcapng file".into()
    } else {
        format!("not a pcap or pcapng file (first bytes: {first_bytes})")
    }
}

/// Everything that can be wrong with a capture file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The first bytes are not a pcap or pcapng magic number.
    #[error("{}", not_capture_text(first_bytes))]
    NotCapture {
        /// Hex of the first bytes seen (empty for an empty file).
        first_bytes: String,
    },
    /// Reading (or decompressing) failed.
    #[error("read error at offset {offset}: {source}")]
    Io {
        /// Offset in the decompressed stream where the read was attempted.
        offset: u64,
        /// The underlying error (a gzip error shows up here too).
        source: io::Error,
    },
    /// The file ends in the middle of a structure.
    #[error("truncated {what} at {at}: needs {needed} bytes, only {available} left in the file")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        at: Location,
        /// Bytes it needs.
        needed: u64,
        /// Bytes the file still had.
        available: u64,
    },
    /// A length field exceeds the configured bound.
    #[error("{what} length {len} at {at} is too large (limit {limit})")]
    TooLarge {
        /// What carried the length.
        what: &'static str,
        /// Where it starts.
        at: Location,
        /// The length found.
        len: u64,
        /// The bound.
        limit: u64,
    },
    /// A pcapng block length is below 12 or not a multiple of 4.
    #[error("bad pcapng block length {len} at {at}")]
    BadBlockLength {
        /// Where the block starts.
        at: Location,
        /// The length found.
        len: u64,
    },
    /// A pcapng block's trailing length differs from its leading length.
    #[error("pcapng block at {at}: trailing length {trailer} differs from leading length {len}")]
    LengthMismatch {
        /// Where the block starts.
        at: Location,
        /// The leading length.
        len: u64,
        /// The trailing length.
        trailer: u64,
    },
    /// A packet names an interface not described in the current section.
    #[error("packet at {at} names interface {interface}, which the section does not define")]
    UnknownInterface {
        /// Where the block starts.
        at: Location,
        /// The interface number.
        interface: u32,
    },
    /// A structure's fields are inconsistent.
    #[error("malformed {what} at {at}: {detail}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        at: Location,
        /// What was wrong.
        detail: &'static str,
    },
    /// A damaged pcap record header: the bytes up to the next plausible record
    /// were skipped and reading goes on from there.
    #[error("damaged pcap record header at {at} ({reason}); skipped {skipped} bytes to {resumed}")]
    Resynchronised {
        /// Where the damaged header starts.
        at: Location,
        /// What was implausible about it.
        reason: String,
        /// Bytes skipped.
        skipped: u64,
        /// Where reading resumed ("the next plausible record at offset N" or "the
        /// end of the file").
        resumed: String,
    },
    /// A version this reader does not understand.
    #[error("unsupported {what} version {major}.{minor} at offset {offset}")]
    UnsupportedVersion {
        /// "pcap" or "pcapng".
        what: &'static str,
        /// Byte offset.
        offset: u64,
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
}

impl SourceError {
    /// The byte offset the error concerns, if any.
    pub fn offset(&self) -> Option<u64> {
        match self {
            SourceError::Open { .. } | SourceError::NotCapture { .. } => None,
            SourceError::Io { offset, .. } | SourceError::UnsupportedVersion { offset, .. } => {
                Some(*offset)
            }
            SourceError::Truncated { at, .. }
            | SourceError::TooLarge { at, .. }
            | SourceError::BadBlockLength { at, .. }
            | SourceError::LengthMismatch { at, .. }
            | SourceError::UnknownInterface { at, .. }
            | SourceError::Resynchronised { at, .. }
            | SourceError::Malformed { at, .. } => Some(at.offset),
        }
    }

    /// The packet number the error concerns, if any.
    pub fn packet(&self) -> Option<u64> {
        match self {
            SourceError::Truncated { at, .. }
            | SourceError::TooLarge { at, .. }
            | SourceError::BadBlockLength { at, .. }
            | SourceError::LengthMismatch { at, .. }
            | SourceError::UnknownInterface { at, .. }
            | SourceError::Resynchronised { at, .. }
            | SourceError::Malformed { at, .. } => at.packet,
            _ => None,
        }
    }
}

/// Reader settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Largest record/block accepted; clamped to [`MAX_BLOCK_LEN_CEILING`].
    pub max_block_len: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            max_block_len: DEFAULT_MAX_BLOCK_LEN,
        }
    }
}

/// Counts bytes read from the underlying file (before decompression), for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let a: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(match self {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        })
    }
    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let a: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        })
    }
    fn u64(self, b: &[u8], at: usize) -> Option<u64> {
        let a: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(match self {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        })
    }
}

#[derive(Debug)]
enum State {
    Pcap {
        endian: Endian,
        nanos: bool,
        iface: InterfaceInfo,
    },
    Pcapng {
        endian: Endian,
        ifaces: Vec<InterfaceInfo>,
    },
}

/// What one step of parsing produced.
enum Step {
    Packet {
        data_start: usize,
        data_end: usize,
        meta: PacketMeta,
    },
    Continue,
    Error(SourceError),
    End,
}

#[derive(Clone, Copy)]
struct PacketMeta {
    index: u64,
    ts: Timestamp,
    linktype: u32,
    orig_len: u32,
    interface: u32,
    direction: Option<Direction>,
}

/// Largest record considered when looking for the next plausible record after a
/// damaged header.
const RESYNC_MAX_RECORD: usize = 256 << 10;
/// Bytes examined at once while resynchronising.
const RESYNC_WINDOW: usize = 1 << 20;
/// A record's timestamp may differ from the last good one by at most this much
/// for it to count as plausible while resynchronising (one day).
const RESYNC_MAX_JUMP_SECS: i64 = 86_400;

/// What a plausible pcap record header looks like in one file.
#[derive(Clone, Copy, Debug)]
struct PcapRules {
    endian: Endian,
    /// Fraction of a second must be below this (10^6 or 10^9).
    frac_limit: u32,
    /// Largest captured length (the file's snap length).
    snap: usize,
    /// Seconds of the last good record, if any.
    last_secs: Option<i64>,
}

impl PcapRules {
    /// Why the header fields are implausible, if they are. `near` also requires
    /// the time to be within a day of that many seconds.
    fn damage(
        &self,
        secs: u32,
        frac: u32,
        incl: u32,
        orig: u32,
        near: Option<i64>,
    ) -> Option<String> {
        if incl as usize > self.snap {
            return Some(format!(
                "captured length {incl} exceeds the snap length {}",
                self.snap
            ));
        }
        if frac >= self.frac_limit {
            return Some(format!(
                "fraction of a second {frac} is not below {}",
                self.frac_limit
            ));
        }
        if orig < incl {
            return Some(format!(
                "original length {orig} is less than the captured length {incl}"
            ));
        }
        if let Some(n) = near {
            if (i64::from(secs) - n).abs() > RESYNC_MAX_JUMP_SECS {
                return Some("timestamp more than a day from the last record".into());
            }
        }
        None
    }

    fn header_ok(&self, b: &[u8], at: usize, near: Option<i64>) -> Option<u32> {
        let e = self.endian;
        let secs = e.u32(b, at)?;
        let frac = e.u32(b, at + 4)?;
        let incl = e.u32(b, at + 8)?;
        let orig = e.u32(b, at + 12)?;
        self.damage(secs, frac, incl, orig, near)
            .is_none()
            .then_some(incl)
    }

    /// Whether a record starts at `b[i]`: its header is plausible and so is the
    /// header after it (or it ends the input exactly). `None` when that cannot be
    /// decided without more bytes.
    fn candidate(&self, b: &[u8], i: usize, eof: bool) -> Option<bool> {
        let Some(incl) = self.header_ok(b, i, self.last_secs) else {
            return Some(false);
        };
        let secs = self.endian.u32(b, i).map(i64::from);
        let next = i + PCAP_RECORD_HEADER_LEN + incl as usize;
        if next + PCAP_RECORD_HEADER_LEN <= b.len() {
            return Some(self.header_ok(b, next, secs).is_some());
        }
        if eof {
            return Some(next == b.len());
        }
        None
    }
}

/// Streaming reader for pcap, pcapng and gzip-compressed captures.
///
/// Drive it with [`CaptureReader::next_packet`] until it returns `None`; an `Err`
/// item is a damaged record, and reading goes on when the format allows.
pub struct CaptureReader {
    input: Box<dyn Read + Send>,
    file_bytes: Arc<AtomicU64>,
    gzip: bool,
    format: Format,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Stream offset of `buf[start]`.
    offset: u64,
    max_block: usize,
    state: State,
    /// Set at the end of input or after an error the format cannot recover from.
    done: bool,
    packets: u64,
    last_ts: Timestamp,
    /// TLS key logs from Decryption Secrets Blocks, not yet taken (secrets: never
    /// shown by `Debug`).
    tls_secrets: Vec<Vec<u8>>,
    tls_secret_bytes: usize,
}

impl fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureReader")
            .field("format", &self.format)
            .field("gzip", &self.gzip)
            .field("offset", &self.offset)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter()
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl CaptureReader {
    /// Opens a capture file (pcap, pcapng, or either gzip-compressed).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_reader(file)
    }

    /// Reads a capture from any byte source, with default options.
    pub fn from_reader<R: Read + Send + 'static>(reader: R) -> Result<Self, SourceError> {
        Self::with_options(reader, ReaderOptions::default())
    }

    /// Reads a capture from any byte source. Detects gzip by its magic `1f 8b`, then
    /// pcap/pcapng by theirs, and reads the file header (so "not a capture" errors
    /// come from here).
    pub fn with_options<R: Read + Send + 'static>(
        reader: R,
        options: ReaderOptions,
    ) -> Result<Self, SourceError> {
        let file_bytes = Arc::new(AtomicU64::new(0));
        let mut raw = Counting {
            inner: reader,
            count: Arc::clone(&file_bytes),
        };
        let mut prefix = [0u8; 2];
        let mut got = 0;
        while got < prefix.len() {
            let dst = prefix.get_mut(got..).unwrap_or_default();
            match raw.read(dst) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(SourceError::Io {
                        offset: got as u64,
                        source,
                    })
                }
            }
        }
        let head = Cursor::new(prefix.get(..got).unwrap_or_default().to_vec());
        let gzip = got == 2 && prefix == [0x1f, 0x8b];
        let chained = head.chain(raw);
        let input: Box<dyn Read + Send> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(chained))
        } else {
            Box::new(chained)
        };
        let max_block = options
            .max_block_len
            .clamp(PCAPNG_MIN_BLOCK, MAX_BLOCK_LEN_CEILING);
        let mut reader = CaptureReader {
            input,
            file_bytes,
            gzip,
            format: Format::Pcapng,
            buf: vec![0; INITIAL_BUF_LEN],
            start: 0,
            end: 0,
            eof: false,
            offset: 0,
            max_block,
            state: State::Pcapng {
                endian: Endian::Little,
                ifaces: Vec::new(),
            },
            done: false,
            packets: 0,
            last_ts: Timestamp(0),
            tls_secrets: Vec::new(),
            tls_secret_bytes: 0,
        };
        reader.read_file_header()?;
        Ok(reader)
    }

    /// The detected container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// True when the file was gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// Capture bytes consumed so far (decompressed when the file is gzip).
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// Bytes read from the underlying file so far (compressed size for gzip):
    /// compare with the file size for a progress bar.
    pub fn file_bytes_read(&self) -> u64 {
        self.file_bytes.load(Ordering::Relaxed)
    }

    /// Packet records seen so far (including damaged ones).
    pub fn packets_read(&self) -> u64 {
        self.packets
    }

    /// Interfaces of the current section (one for pcap).
    pub fn interfaces(&self) -> &[InterfaceInfo] {
        match &self.state {
            State::Pcap { iface, .. } => std::slice::from_ref(iface),
            State::Pcapng { ifaces, .. } => ifaces,
        }
    }

    /// The next packet, an error about a damaged record, or `None` at the end.
    ///
    /// The packet borrows the reader's buffer and is valid until the next call.
    pub fn next_packet(&mut self) -> Option<Result<Packet<'_>, SourceError>> {
        loop {
            if self.done {
                return None;
            }
            let step = match &self.state {
                State::Pcap { .. } => self.step_pcap(),
                State::Pcapng { .. } => self.step_pcapng(),
            };
            match step {
                Step::Continue => continue,
                Step::End => {
                    self.done = true;
                    return None;
                }
                Step::Error(e) => return Some(Err(e)),
                Step::Packet {
                    data_start,
                    data_end,
                    meta,
                } => {
                    let data = self.buf.get(data_start..data_end).unwrap_or_default();
                    return Some(Ok(Packet {
                        index: meta.index,
                        ts: meta.ts,
                        linktype: meta.linktype,
                        data,
                        orig_len: meta.orig_len,
                        interface: meta.interface,
                        direction: meta.direction,
                    }));
                }
            }
        }
    }

    fn avail(&self) -> usize {
        self.end - self.start
    }

    fn window(&self, len: usize) -> &[u8] {
        let end = self.start.saturating_add(len).min(self.end);
        self.buf.get(self.start..end).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.avail());
        self.start += n;
        self.offset += n as u64;
    }

    /// Makes at least `need` bytes available at `start` unless the input ends first.
    /// Returns the bytes available (less than `need` only at end of input).
    fn fill(&mut self, need: usize) -> Result<usize, SourceError> {
        if self.avail() >= need || self.eof {
            return Ok(self.avail());
        }
        if self.buf.len() - self.start < need || self.buf.len() - self.end < MIN_READ_LEN {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need {
                let cap = self.max_block.saturating_add(PCAP_RECORD_HEADER_LEN);
                let new_len = need
                    .max(self.buf.len().saturating_mul(2))
                    .min(cap.max(need));
                self.buf.resize(new_len, 0);
            }
        }
        while self.avail() < need {
            let dst = self.buf.get_mut(self.end..).unwrap_or_default();
            if dst.is_empty() {
                break;
            }
            match self.input.read(dst) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n.min(self.buf.len() - self.end),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.done = true;
                    return Err(SourceError::Io {
                        offset: self.offset + self.avail() as u64,
                        source,
                    });
                }
            }
        }
        Ok(self.avail())
    }

    /// Skips `n` bytes without buffering them. Returns false if the input ended first.
    fn skip(&mut self, n: u64) -> Result<bool, SourceError> {
        let have = self.avail() as u64;
        if n <= have {
            self.consume(n as usize);
            return Ok(true);
        }
        let mut left = n - have;
        self.consume(have as usize);
        self.start = 0;
        self.end = 0;
        while left > 0 {
            let chunk = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let dst = self.buf.get_mut(..chunk).unwrap_or_default();
            match self.input.read(dst) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(r) => {
                    left = left.saturating_sub(r as u64);
                    self.offset += r as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.done = true;
                    return Err(SourceError::Io {
                        offset: self.offset,
                        source,
                    });
                }
            }
        }
        Ok(true)
    }

    fn read_file_header(&mut self) -> Result<(), SourceError> {
        let got = self.fill(PCAP_HEADER_LEN)?;
        let head = self.window(got);
        let magic_le = Endian::Little.u32(head, 0);
        let magic_be = Endian::Big.u32(head, 0);
        let (endian, nanos) = match (magic_le, magic_be) {
            (Some(PCAP_MAGIC_US), _) => (Endian::Little, false),
            (Some(PCAP_MAGIC_NS), _) => (Endian::Little, true),
            (_, Some(PCAP_MAGIC_US)) => (Endian::Big, false),
            (_, Some(PCAP_MAGIC_NS)) => (Endian::Big, true),
            (Some(PCAPNG_SHB), _) => {
                self.format = Format::Pcapng;
                self.state = State::Pcapng {
                    endian: Endian::Little,
                    ifaces: Vec::new(),
                };
                // The first block must be a section header; step_pcapng reads it.
                return Ok(());
            }
            _ => {
                return Err(SourceError::NotCapture {
                    first_bytes: hex_prefix(head),
                })
            }
        };
        if got < PCAP_HEADER_LEN {
            return Err(SourceError::Truncated {
                what: "pcap file header",
                at: Location {
                    offset: 0,
                    packet: None,
                },
                needed: PCAP_HEADER_LEN as u64,
                available: got as u64,
            });
        }
        let major = endian.u16(head, 4).unwrap_or(0);
        let minor = endian.u16(head, 6).unwrap_or(0);
        if major != 2 {
            return Err(SourceError::UnsupportedVersion {
                what: "pcap",
                offset: 4,
                major,
                minor,
            });
        }
        let snaplen = endian.u32(head, 16).unwrap_or(0);
        // Upper bits of the link-type field carry FCS information (LT_LINKTYPE).
        let linktype = endian.u32(head, 20).unwrap_or(0) & 0x03ff_ffff;
        let mut iface = InterfaceInfo::new(linktype, snaplen);
        iface.tsresol = if nanos { 9 } else { 6 };
        self.format = Format::Pcap {
            nanos,
            big_endian: endian == Endian::Big,
        };
        self.state = State::Pcap {
            endian,
            nanos,
            iface,
        };
        self.consume(PCAP_HEADER_LEN);
        Ok(())
    }

    fn step_pcap(&mut self) -> Step {
        let (endian, nanos, linktype) = match &self.state {
            State::Pcap {
                endian,
                nanos,
                iface,
            } => (*endian, *nanos, iface.linktype),
            _ => return Step::End,
        };
        let rec_off = self.offset;
        let got = match self.fill(PCAP_RECORD_HEADER_LEN) {
            Ok(g) => g,
            Err(e) => return Step::Error(e),
        };
        if got == 0 {
            return Step::End;
        }
        let index = self.packets + 1;
        let at = Location {
            offset: rec_off,
            packet: Some(index),
        };
        if got < PCAP_RECORD_HEADER_LEN {
            self.packets = index;
            self.done = true;
            return Step::Error(SourceError::Truncated {
                what: "pcap record header",
                at,
                needed: PCAP_RECORD_HEADER_LEN as u64,
                available: got as u64,
            });
        }
        let h = self.window(PCAP_RECORD_HEADER_LEN);
        let secs = endian.u32(h, 0).unwrap_or(0);
        let frac = endian.u32(h, 4).unwrap_or(0);
        let incl = endian.u32(h, 8).unwrap_or(0);
        let orig = endian.u32(h, 12).unwrap_or(0);
        self.packets = index;
        let rules = self.pcap_rules();
        if let Some(reason) = rules.damage(secs, frac, incl, orig, None) {
            return self.resync_pcap(at, reason, rules);
        }
        let need = PCAP_RECORD_HEADER_LEN + incl as usize;
        let got = match self.fill(need) {
            Ok(g) => g,
            Err(e) => return Step::Error(e),
        };
        if got < need {
            self.done = true;
            return Step::Error(SourceError::Truncated {
                what: "pcap record",
                at,
                needed: need as u64,
                available: got as u64,
            });
        }
        let frac_ns = if nanos {
            i64::from(frac)
        } else {
            i64::from(frac) * 1000
        };
        let ts = Timestamp(i64::from(secs) * 1_000_000_000 + frac_ns);
        self.last_ts = ts;
        let data_start = self.start + PCAP_RECORD_HEADER_LEN;
        let data_end = self.start + need;
        self.consume(need);
        Step::Packet {
            data_start,
            data_end,
            meta: PacketMeta {
                index,
                ts,
                linktype,
                orig_len: orig,
                interface: 0,
                direction: None,
            },
        }
    }

    /// What a plausible record header of this pcap file looks like.
    fn pcap_rules(&self) -> PcapRules {
        let (endian, nanos, snaplen) = match &self.state {
            State::Pcap {
                endian,
                nanos,
                iface,
            } => (*endian, *nanos, iface.snaplen),
            _ => (Endian::Little, false, 0),
        };
        let snap = if snaplen == 0 {
            self.max_block
        } else {
            (snaplen as usize).min(self.max_block)
        };
        PcapRules {
            endian,
            frac_limit: if nanos { 1_000_000_000 } else { 1_000_000 },
            snap,
            last_secs: (self.last_ts != Timestamp::default())
                .then(|| self.last_ts.0.div_euclid(1_000_000_000)),
        }
    }

    /// After a damaged record header at the current position: skips to the next
    /// offset where a plausible header starts whose record is followed by another
    /// plausible header (or ends the file exactly), like pcapfix. Reports the
    /// skipped bytes as an error item; reading resumes there. Linear: each byte is
    /// examined once, with two header checks.
    fn resync_pcap(&mut self, at: Location, reason: String, rules: PcapRules) -> Step {
        let cand = PcapRules {
            // A resynchronisation candidate must be an ordinary-sized record.
            snap: rules.snap.min(RESYNC_MAX_RECORD),
            ..rules
        };
        let window =
            (2 * (PCAP_RECORD_HEADER_LEN + cand.snap) + PCAP_RECORD_HEADER_LEN).max(RESYNC_WINDOW);
        let mut skipped = 1u64;
        self.consume(1);
        loop {
            let got = match self.fill(window) {
                Ok(g) => g,
                Err(e) => return Step::Error(e),
            };
            let eof = got < window;
            let buf = self.window(got);
            let mut i = 0usize;
            let mut found = false;
            while i + PCAP_RECORD_HEADER_LEN <= got {
                match cand.candidate(buf, i, eof) {
                    Some(true) => {
                        found = true;
                        break;
                    }
                    Some(false) => i += 1,
                    // Needs bytes beyond the window: look again after refilling.
                    None if i > 0 => break,
                    None => i += 1,
                }
            }
            if found {
                self.consume(i);
                skipped += i as u64;
                let resumed = format!("the next plausible record at offset {}", self.offset);
                return Step::Error(SourceError::Resynchronised {
                    at,
                    reason,
                    skipped,
                    resumed,
                });
            }
            if eof {
                skipped += got as u64;
                self.consume(got);
                self.done = true;
                return Step::Error(SourceError::Resynchronised {
                    at,
                    reason,
                    skipped,
                    resumed: "the end of the file (no plausible record follows)".into(),
                });
            }
            self.consume(i);
            skipped += i as u64;
        }
    }

    fn step_pcapng(&mut self) -> Step {
        let endian = match &self.state {
            State::Pcapng { endian, .. } => *endian,
            _ => return Step::End,
        };
        let blk_off = self.offset;
        let at = Location {
            offset: blk_off,
            packet: None,
        };
        let got = match self.fill(PCAPNG_MIN_BLOCK) {
            Ok(g) => g,
            Err(e) => return Step::Error(e),
        };
        if got == 0 {
            return Step::End;
        }
        if got < 8 {
            self.done = true;
            return Step::Error(SourceError::Truncated {
                what: "pcapng block header",
                at,
                needed: 8,
                available: got as u64,
            });
        }
        let h = self.window(PCAPNG_MIN_BLOCK);
        // The SHB type is a palindrome, so it reads the same in either byte order.
        let raw_type = Endian::Little.u32(h, 0).unwrap_or(0);
        let (endian, is_shb) = if raw_type == PCAPNG_SHB {
            match (Endian::Little.u32(h, 8), Endian::Big.u32(h, 8)) {
                (Some(PCAPNG_BOM), _) => (Endian::Little, true),
                (_, Some(PCAPNG_BOM)) => (Endian::Big, true),
                (None, _) => {
                    self.done = true;
                    return Step::Error(SourceError::Truncated {
                        what: "pcapng section header",
                        at,
                        needed: PCAPNG_MIN_BLOCK as u64,
                        available: got as u64,
                    });
                }
                _ => {
                    // Without a byte order nothing after this can be trusted.
                    self.done = true;
                    return Step::Error(SourceError::Malformed {
                        what: "pcapng section header",
                        at,
                        detail: "unknown byte-order magic",
                    });
                }
            }
        } else {
            (endian, false)
        };
        let btype = endian.u32(h, 0).unwrap_or(0);
        let len32 = endian.u32(h, 4).unwrap_or(0);
        let len = len32 as usize;
        if len < PCAPNG_MIN_BLOCK || len % 4 != 0 {
            self.done = true;
            return Step::Error(SourceError::BadBlockLength {
                at,
                len: u64::from(len32),
            });
        }
        let is_packet = matches!(btype, PCAPNG_EPB | PCAPNG_SPB | PCAPNG_OPB);
        let index = if is_packet {
            self.packets += 1;
            Some(self.packets)
        } else {
            None
        };
        let at = Location {
            offset: blk_off,
            packet: index,
        };
        if len > self.max_block {
            let err = SourceError::TooLarge {
                what: "pcapng block",
                at,
                len: u64::from(len32),
                limit: self.max_block as u64,
            };
            match self.skip(u64::from(len32)) {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => return Step::Error(e),
            }
            return Step::Error(err);
        }
        let got = match self.fill(len) {
            Ok(g) => g,
            Err(e) => return Step::Error(e),
        };
        if got < len {
            self.done = true;
            return Step::Error(SourceError::Truncated {
                what: "pcapng block",
                at,
                needed: len as u64,
                available: got as u64,
            });
        }
        let block_start = self.start;
        let trailer = endian.u32(self.window(len), len - 4).unwrap_or(0);
        // From here on the block is consumed whatever its content.
        self.consume(len);
        if trailer != len32 {
            return Step::Error(SourceError::LengthMismatch {
                at,
                len: u64::from(len32),
                trailer: u64::from(trailer),
            });
        }
        let body_start = block_start + 8;
        let body_end = block_start + len - 4;
        if is_shb {
            return self.section_header(endian, body_start, body_end, at);
        }
        match btype {
            PCAPNG_IDB => self.interface_block(endian, body_start, body_end, at),
            PCAPNG_EPB | PCAPNG_OPB | PCAPNG_SPB => {
                self.packet_block(btype, endian, body_start, body_end, at)
            }
            PCAPNG_DSB => self.secrets_block(endian, body_start, body_end, at),
            _ => Step::Continue,
        }
    }

    /// A Decryption Secrets Block: TLS key logs are kept for
    /// [`CaptureReader::take_tls_secrets`]; other kinds (WireGuard, ZigBee) are skipped.
    fn secrets_block(&mut self, endian: Endian, bs: usize, be: usize, at: Location) -> Step {
        let body = self.buf.get(bs..be).unwrap_or_default();
        let (Some(kind), Some(len)) = (endian.u32(body, 0), endian.u32(body, 4)) else {
            return Step::Error(SourceError::Malformed {
                what: "decryption secrets block",
                at,
                detail: "too short",
            });
        };
        if kind != DSB_TLS_KEYLOG {
            return Step::Continue;
        }
        let Some(data) = body.get(8..8usize.saturating_add(len as usize)) else {
            return Step::Error(SourceError::Malformed {
                what: "decryption secrets block",
                at,
                detail: "secrets length beyond the block",
            });
        };
        if self.tls_secret_bytes.saturating_add(data.len()) > MAX_DSB_BYTES {
            return Step::Error(SourceError::Malformed {
                what: "decryption secrets block",
                at,
                detail: "more than 16 MiB of TLS secrets in the file: the rest is ignored",
            });
        }
        self.tls_secret_bytes += data.len();
        self.tls_secrets.push(data.to_vec());
        Step::Continue
    }

    /// TLS key logs (NSS key log text) read from Decryption Secrets Blocks since
    /// the last call. A block applies to the packets after it.
    pub fn take_tls_secrets(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.tls_secrets)
    }

    fn section_header(&mut self, endian: Endian, bs: usize, be: usize, at: Location) -> Step {
        let body = self.buf.get(bs..be).unwrap_or_default();
        let (Some(major), Some(minor)) = (endian.u16(body, 4), endian.u16(body, 6)) else {
            self.done = true;
            return Step::Error(SourceError::Malformed {
                what: "pcapng section header",
                at,
                detail: "too short",
            });
        };
        if major != 1 {
            self.done = true;
            return Step::Error(SourceError::UnsupportedVersion {
                what: "pcapng",
                offset: at.offset,
                major,
                minor,
            });
        }
        self.state = State::Pcapng {
            endian,
            ifaces: Vec::new(),
        };
        Step::Continue
    }

    fn interface_block(&mut self, endian: Endian, bs: usize, be: usize, at: Location) -> Step {
        let body = self.buf.get(bs..be).unwrap_or_default();
        let (Some(linktype), Some(snaplen)) = (endian.u16(body, 0), endian.u32(body, 4)) else {
            return Step::Error(SourceError::Malformed {
                what: "interface description block",
                at,
                detail: "too short",
            });
        };
        let mut iface = InterfaceInfo::new(u32::from(linktype), snaplen);
        for (code, value) in Options::new(endian, body.get(8..).unwrap_or_default()) {
            match code {
                OPT_IF_TSRESOL => {
                    if let Some(&r) = value.first() {
                        iface.tsresol = r;
                    }
                }
                OPT_IF_TSOFFSET => {
                    if let Some(v) = endian.u64(value, 0) {
                        iface.tsoffset = v as i64;
                    }
                }
                OPT_IF_NAME => {
                    let v = value
                        .get(..value.len().min(MAX_IF_NAME))
                        .unwrap_or_default();
                    let v = v.split(|&b| b == 0).next().unwrap_or_default();
                    iface.name = Some(String::from_utf8_lossy(v).into_owned());
                }
                _ => {}
            }
        }
        if let State::Pcapng { ifaces, .. } = &mut self.state {
            if ifaces.len() >= MAX_INTERFACES {
                return Step::Error(SourceError::Malformed {
                    what: "interface description block",
                    at,
                    detail: "too many interfaces in one section",
                });
            }
            ifaces.push(iface);
        }
        Step::Continue
    }

    fn packet_block(
        &mut self,
        btype: u32,
        endian: Endian,
        bs: usize,
        be: usize,
        at: Location,
    ) -> Step {
        let body = self.buf.get(bs..be).unwrap_or_default();
        let index = at.packet.unwrap_or(self.packets);
        let malformed = |detail| {
            Step::Error(SourceError::Malformed {
                what: "packet block",
                at,
                detail,
            })
        };
        // (interface, ts units or None for SPB, captured len, orig len, header len)
        let fields = match btype {
            PCAPNG_EPB => (|| {
                Some((
                    endian.u32(body, 0)?,
                    Some(u64::from(endian.u32(body, 4)?) << 32 | u64::from(endian.u32(body, 8)?)),
                    endian.u32(body, 12)?,
                    endian.u32(body, 16)?,
                    20usize,
                ))
            })(),
            PCAPNG_OPB => (|| {
                Some((
                    u32::from(endian.u16(body, 0)?),
                    Some(u64::from(endian.u32(body, 4)?) << 32 | u64::from(endian.u32(body, 8)?)),
                    endian.u32(body, 12)?,
                    endian.u32(body, 16)?,
                    20usize,
                ))
            })(),
            _ => (|| {
                let orig = endian.u32(body, 0)?;
                let room = u32::try_from(body.len().saturating_sub(4)).unwrap_or(u32::MAX);
                Some((0, None, orig.min(room), orig, 4usize))
            })(),
        };
        let Some((interface, units, mut caplen, orig_len, hdr)) = fields else {
            return malformed("too short");
        };
        let iface = match &self.state {
            State::Pcapng { ifaces, .. } => ifaces.get(interface as usize),
            _ => None,
        };
        let Some(iface) = iface else {
            return Step::Error(SourceError::UnknownInterface { at, interface });
        };
        if btype == PCAPNG_SPB && iface.snaplen != 0 {
            // SPB data is min(original length, snap length); the rest is padding.
            caplen = caplen.min(iface.snaplen);
        }
        let data_len = caplen as usize;
        let Some(data_end_rel) = hdr.checked_add(data_len).filter(|&e| e <= body.len()) else {
            return malformed("captured length exceeds the block");
        };
        let ts = match units {
            Some(u) => iface.to_timestamp(u),
            // SPB has no timestamp: reuse the previous packet's time so time-based
            // rules downstream see no jump.
            None => self.last_ts,
        };
        let linktype = iface.linktype;
        let mut direction = None;
        if btype != PCAPNG_SPB {
            let opts_start = data_end_rel.saturating_add(3) & !3;
            for (code, value) in Options::new(endian, body.get(opts_start..).unwrap_or_default()) {
                if code == OPT_EPB_FLAGS {
                    if let Some(flags) = endian.u32(value, 0) {
                        direction = Direction::from_flags(flags);
                    }
                }
            }
        }
        self.last_ts = ts;
        Step::Packet {
            data_start: bs + hdr,
            data_end: bs + data_end_rel,
            meta: PacketMeta {
                index,
                ts,
                linktype,
                orig_len,
                interface,
                direction,
            },
        }
    }
}

/// Iterator over pcapng options (`code u16, len u16, value, pad to 4`), stopping at
/// `opt_endofopt` or at the first option that does not fit.
struct Options<'a> {
    endian: Endian,
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    fn new(endian: Endian, rest: &'a [u8]) -> Self {
        Options { endian, rest }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let code = self.endian.u16(self.rest, 0)?;
        let len = usize::from(self.endian.u16(self.rest, 2)?);
        if code == OPT_END {
            self.rest = &[];
            return None;
        }
        let value = self.rest.get(4..4 + len)?;
        let padded = (4 + len + 3) & !3;
        self.rest = self.rest.get(padded..).unwrap_or_default();
        Some((code, value))
    }
}

// ---------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------

fn pad4(len: usize) -> usize {
    (len + 3) & !3
}

/// Writes a pcapng file: one section, one IDB per interface, EPBs with nanosecond
/// timestamps and optional direction flags. Used for serial captures and exports,
/// and by tests. Always little-endian.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    w: W,
    linktypes: Vec<u32>,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header block.
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut b = Vec::with_capacity(28);
        b.extend_from_slice(&PCAPNG_SHB.to_le_bytes());
        b.extend_from_slice(&28u32.to_le_bytes());
        b.extend_from_slice(&PCAPNG_BOM.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes());
        b.extend_from_slice(&28u32.to_le_bytes());
        w.write_all(&b)?;
        Ok(PcapngWriter {
            w,
            linktypes: Vec::new(),
        })
    }

    /// Adds an interface (IDB with nanosecond resolution) and returns its number.
    pub fn add_interface(
        &mut self,
        linktype: u32,
        snaplen: u32,
        name: Option<&str>,
    ) -> io::Result<u32> {
        let id = u32::try_from(self.linktypes.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many interfaces"))?;
        let linktype16 = u16::try_from(linktype)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "link type above 65535"))?;
        let mut opts = Vec::new();
        if let Some(name) = name {
            let n = name.as_bytes();
            let n = n
                .get(..n.len().min(u16::MAX as usize - 3))
                .unwrap_or_default();
            push_option(&mut opts, OPT_IF_NAME, n);
        }
        push_option(&mut opts, OPT_IF_TSRESOL, &[9]);
        opts.extend_from_slice(&[0, 0, 0, 0]);
        let total = 8 + 8 + opts.len() + 4;
        let mut b = Vec::with_capacity(total);
        b.extend_from_slice(&PCAPNG_IDB.to_le_bytes());
        b.extend_from_slice(&(total as u32).to_le_bytes());
        b.extend_from_slice(&linktype16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&snaplen.to_le_bytes());
        b.extend_from_slice(&opts);
        b.extend_from_slice(&(total as u32).to_le_bytes());
        self.w.write_all(&b)?;
        self.linktypes.push(linktype);
        Ok(id)
    }

    /// The interface for `linktype`, adding an IDB the first time a link type is used.
    pub fn interface_for(&mut self, linktype: u32) -> io::Result<u32> {
        match self.linktypes.iter().position(|&l| l == linktype) {
            Some(i) => Ok(i as u32),
            None => self.add_interface(linktype, 0, None),
        }
    }

    /// Writes one enhanced packet block.
    pub fn write_packet(
        &mut self,
        interface: u32,
        ts: Timestamp,
        data: &[u8],
        orig_len: u32,
        direction: Option<Direction>,
    ) -> io::Result<()> {
        if interface as usize >= self.linktypes.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unknown interface",
            ));
        }
        let caplen = u32::try_from(data.len())
            .ok()
            .filter(|&l| (l as usize) <= MAX_BLOCK_LEN_CEILING - 64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet too large"))?;
        let units = u64::try_from(ts.0).unwrap_or(0);
        let opts_len = if direction.is_some() { 8 + 4 } else { 0 };
        let total = 8 + 20 + pad4(data.len()) + opts_len + 4;
        let mut h = Vec::with_capacity(28);
        h.extend_from_slice(&PCAPNG_EPB.to_le_bytes());
        h.extend_from_slice(&(total as u32).to_le_bytes());
        h.extend_from_slice(&interface.to_le_bytes());
        h.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
        h.extend_from_slice(&(units as u32).to_le_bytes());
        h.extend_from_slice(&caplen.to_le_bytes());
        h.extend_from_slice(&orig_len.max(caplen).to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)?;
        let mut t = Vec::with_capacity(20);
        t.resize(pad4(data.len()) - data.len(), 0);
        if direction.is_some() {
            push_option(
                &mut t,
                OPT_EPB_FLAGS,
                &Direction::to_flags(direction).to_le_bytes(),
            );
            t.extend_from_slice(&[0, 0, 0, 0]);
        }
        t.extend_from_slice(&(total as u32).to_le_bytes());
        self.w.write_all(&t)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}

fn push_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    let len = value.len().min(u16::MAX as usize);
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(value.get(..len).unwrap_or_default());
    out.resize(out.len() + pad4(len) - len, 0);
}

/// Writes a classic pcap file; minimal, mainly for tests and tools that need pcap.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
    nanos: bool,
    big_endian: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header. `nanos` selects the nanosecond magic; `big_endian`
    /// writes every field big-endian (as captures made on such machines are).
    pub fn new(
        mut w: W,
        linktype: u32,
        snaplen: u32,
        nanos: bool,
        big_endian: bool,
    ) -> io::Result<Self> {
        let magic = if nanos { PCAP_MAGIC_NS } else { PCAP_MAGIC_US };
        let mut b = Vec::with_capacity(PCAP_HEADER_LEN);
        let put32 = |b: &mut Vec<u8>, v: u32| {
            b.extend_from_slice(&if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        put32(&mut b, magic);
        let (maj, min) = if big_endian {
            (2u16.to_be_bytes(), 4u16.to_be_bytes())
        } else {
            (2u16.to_le_bytes(), 4u16.to_le_bytes())
        };
        b.extend_from_slice(&maj);
        b.extend_from_slice(&min);
        put32(&mut b, 0);
        put32(&mut b, 0);
        put32(&mut b, snaplen);
        put32(&mut b, linktype);
        w.write_all(&b)?;
        Ok(PcapWriter {
            w,
            nanos,
            big_endian,
        })
    }

    /// Writes one record (data as captured, `orig_len` as on the wire).
    pub fn write_packet(&mut self, ts: Timestamp, data: &[u8], orig_len: u32) -> io::Result<()> {
        let secs = u32::try_from(ts.0.div_euclid(1_000_000_000)).unwrap_or(0);
        let ns = ts.0.rem_euclid(1_000_000_000) as u32;
        let frac = if self.nanos { ns } else { ns / 1000 };
        let caplen = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet too large"))?;
        let mut h = Vec::with_capacity(PCAP_RECORD_HEADER_LEN);
        for v in [secs, frac, caplen, orig_len.max(caplen)] {
            h.extend_from_slice(&if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            });
        }
        self.w.write_all(&h)?;
        self.w.write_all(data)
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (u64, i64, u32, Vec<u8>, u32, Option<Direction>);

    fn collect(r: &mut CaptureReader) -> (Vec<Row>, Vec<String>) {
        let mut pkts = Vec::new();
        let mut errs = Vec::new();
        let mut guard = 0;
        while let Some(item) = r.next_packet() {
            guard += 1;
            assert!(guard < 100_000, "reader loops");
            match item {
                Ok(p) => pkts.push((
                    p.index,
                    p.ts.0,
                    p.linktype,
                    p.data.to_vec(),
                    p.interface,
                    p.direction,
                )),
                Err(e) => errs.push(e.to_string()),
            }
        }
        (pkts, errs)
    }

    fn pcap_bytes(nanos: bool, be: bool) -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new(), 1, 65535, nanos, be).unwrap();
        w.write_packet(Timestamp(1_700_000_000_123_456_789), b"hello", 60)
            .unwrap();
        w.write_packet(Timestamp(1_700_000_001_000_001_000), b"", 0)
            .unwrap();
        w.write_packet(Timestamp(1_700_000_002_000_000_000), &[7u8; 3000], 3000)
            .unwrap();
        w.into_inner()
    }

    #[test]
    fn pcap_all_variants() {
        for (nanos, be) in [(false, false), (false, true), (true, false), (true, true)] {
            let bytes = pcap_bytes(nanos, be);
            let mut r = CaptureReader::from_reader(Cursor::new(bytes.clone())).unwrap();
            assert_eq!(
                r.format(),
                Format::Pcap {
                    nanos,
                    big_endian: be
                }
            );
            let (p, e) = collect(&mut r);
            assert!(e.is_empty(), "{e:?}");
            assert_eq!(p.len(), 3);
            assert_eq!(p[0].0, 1);
            let want_ts = if nanos {
                1_700_000_000_123_456_789
            } else {
                1_700_000_000_123_456_000
            };
            assert_eq!(p[0].1, want_ts);
            assert_eq!(p[0].2, 1);
            assert_eq!(p[0].3, b"hello");
            assert_eq!(p[1].3, b"");
            assert_eq!(p[2].3.len(), 3000);
            assert_eq!(p[2].0, 3);
            assert_eq!(r.bytes_read(), bytes.len() as u64);
            assert_eq!(r.file_bytes_read(), bytes.len() as u64);
        }
    }

    #[test]
    fn orig_len_and_truncation_flag() {
        let bytes = pcap_bytes(false, false);
        let mut r = CaptureReader::from_reader(Cursor::new(bytes)).unwrap();
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!(p.orig_len, 60);
        assert!(p.is_truncated());
    }

    #[test]
    fn not_a_capture() {
        let e =
            CaptureReader::from_reader(Cursor::new(b"GET / HTTP/1.1\r\n".to_vec())).unwrap_err();
        assert!(
            e.to_string().starts_with("not a pcap or pcapng file"),
            "{e}"
        );
        let e = CaptureReader::from_reader(Cursor::new(Vec::new())).unwrap_err();
        assert!(matches!(e, SourceError::NotCapture { .. }));
    }

    #[test]
    fn pcap_truncated_everywhere_terminates() {
        let bytes = pcap_bytes(false, false);
        for cut in 0..bytes.len() {
            let r = CaptureReader::from_reader(Cursor::new(bytes[..cut].to_vec()));
            let Ok(mut r) = r else {
                assert!(cut < PCAP_HEADER_LEN);
                continue;
            };
            let (p, e) = collect(&mut r);
            // record boundaries: 24, 24+21=45, 45+16=61, 61+3016=3077
            let complete = [45, 61, 3077].iter().filter(|&&b| b <= cut).count();
            assert_eq!(p.len(), complete, "cut {cut}");
            if [24, 45, 61].contains(&cut) {
                assert!(e.is_empty());
            } else {
                assert_eq!(e.len(), 1, "cut {cut}: {e:?}");
                assert!(e[0].contains("truncated pcap record"), "{}", e[0]);
                assert!(e[0].contains("offset "), "{}", e[0]);
            }
        }
    }

    #[test]
    fn pcap_damaged_header_resynchronises() {
        let mut bytes = pcap_bytes(false, false);
        // incl_len of the first record
        bytes[24 + 8..24 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let mut r = CaptureReader::from_reader(Cursor::new(bytes.clone())).unwrap();
        let (p, e) = collect(&mut r);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("damaged pcap record header at offset 24 (packet 1)")
                && e[0].contains("exceeds the snap length 65535")
                && e[0].contains("skipped 21 bytes to the next plausible record at offset 45"),
            "{}",
            e[0]
        );
        // The two records after the damaged one are read.
        assert_eq!(p.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(p[1].3.len(), 3000);

        // Garbage inserted between records (a damaged header and 100 bytes).
        let mut b2 = bytes[..45].to_vec();
        b2[24 + 8..24 + 12].copy_from_slice(&5u32.to_le_bytes()); // repair record 1
        b2.extend(std::iter::repeat_n(0xffu8, 100));
        b2.extend_from_slice(&bytes[45..]);
        let mut r = CaptureReader::from_reader(Cursor::new(b2)).unwrap();
        let (p, e) = collect(&mut r);
        assert_eq!(p.len(), 3, "{e:?}");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("skipped 100 bytes"), "{}", e[0]);

        // Nothing plausible after the damage: the rest is skipped, reading ends.
        let mut b3 = bytes[..45].to_vec();
        b3[24 + 8..24 + 12].copy_from_slice(&5u32.to_le_bytes());
        b3.extend(std::iter::repeat_n(0xffu8, 5000));
        let mut r = CaptureReader::from_reader(Cursor::new(b3)).unwrap();
        let (p, e) = collect(&mut r);
        assert_eq!(p.len(), 1);
        assert!(
            e[0].contains("skipped 5000 bytes to the end of the file"),
            "{}",
            e[0]
        );
    }

    /// Builds a pcapng block in the given byte order.
    pub(crate) fn block(be: bool, btype: u32, body: &[u8]) -> Vec<u8> {
        let p32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let total = (12 + pad4(body.len())) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&p32(btype));
        b.extend_from_slice(&p32(total));
        b.extend_from_slice(body);
        b.resize(8 + pad4(body.len()), 0);
        b.extend_from_slice(&p32(total));
        b
    }

    fn shb(be: bool) -> Vec<u8> {
        let mut body = Vec::new();
        if be {
            body.extend_from_slice(&PCAPNG_BOM.to_be_bytes());
            body.extend_from_slice(&1u16.to_be_bytes());
            body.extend_from_slice(&0u16.to_be_bytes());
        } else {
            body.extend_from_slice(&PCAPNG_BOM.to_le_bytes());
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(&0u16.to_le_bytes());
        }
        body.extend_from_slice(&[0xff; 8]);
        block(be, PCAPNG_SHB, &body)
    }

    fn idb(be: bool, linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
        let p16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut body = Vec::new();
        body.extend_from_slice(&p16(linktype));
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&if be {
            0u32.to_be_bytes()
        } else {
            0u32.to_le_bytes()
        });
        if let Some(r) = tsresol {
            body.extend_from_slice(&p16(OPT_IF_TSRESOL));
            body.extend_from_slice(&p16(1));
            body.extend_from_slice(&[r, 0, 0, 0]);
            body.extend_from_slice(&[0, 0, 0, 0]);
        }
        block(be, PCAPNG_IDB, &body)
    }

    fn epb(be: bool, iface: u32, units: u64, data: &[u8], flags: Option<u32>) -> Vec<u8> {
        let p32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let p16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut body = Vec::new();
        body.extend_from_slice(&p32(iface));
        body.extend_from_slice(&p32((units >> 32) as u32));
        body.extend_from_slice(&p32(units as u32));
        body.extend_from_slice(&p32(data.len() as u32));
        body.extend_from_slice(&p32(data.len() as u32 + 10));
        body.extend_from_slice(data);
        body.resize(20 + pad4(data.len()), 0);
        if let Some(f) = flags {
            body.extend_from_slice(&p16(OPT_EPB_FLAGS));
            body.extend_from_slice(&p16(4));
            body.extend_from_slice(&p32(f));
            body.extend_from_slice(&[0; 4]);
        }
        block(be, PCAPNG_EPB, &body)
    }

    fn pcapng_sample() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(shb(false));
        f.extend(idb(false, 1, None)); // microseconds
        f.extend(idb(false, 113, Some(9))); // nanoseconds
        f.extend(epb(false, 0, 1_700_000_000_000_001, b"eth", Some(1)));
        f.extend(block(false, 0x0000_0bad, &[1, 2, 3, 4, 5])); // custom/unknown block
        f.extend(epb(
            false,
            1,
            1_700_000_000_000_000_002,
            b"sll-frame",
            Some(2),
        ));
        // SPB on interface 0
        let mut spb = Vec::new();
        spb.extend_from_slice(&6u32.to_le_bytes());
        spb.extend_from_slice(b"simple");
        f.extend(block(false, PCAPNG_SPB, &spb));
        // OPB on interface 1
        let mut opb = Vec::new();
        opb.extend_from_slice(&1u16.to_le_bytes());
        opb.extend_from_slice(&0u16.to_le_bytes());
        opb.extend_from_slice(&0u32.to_le_bytes());
        opb.extend_from_slice(&5u32.to_le_bytes());
        opb.extend_from_slice(&3u32.to_le_bytes());
        opb.extend_from_slice(&3u32.to_le_bytes());
        opb.extend_from_slice(b"old\0");
        f.extend(block(false, PCAPNG_OPB, &opb));
        // second section, big-endian, power-of-two resolution (2^-10 s)
        f.extend(shb(true));
        f.extend(idb(true, 101, Some(0x80 | 10)));
        f.extend(epb(true, 0, 1024 * 5 + 512, b"raw", None));
        f
    }

    #[test]
    fn pcapng_decryption_secrets_blocks() {
        for be in [false, true] {
            let p32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
            let dsb = |kind: u32, text: &[u8], claimed: u32| {
                let mut body = p32(kind).to_vec();
                body.extend_from_slice(&p32(claimed));
                body.extend_from_slice(text);
                block(be, PCAPNG_DSB, &body)
            };
            let text = b"CLIENT_RANDOM aa bb\n";
            let mut f = shb(be);
            f.extend(dsb(DSB_TLS_KEYLOG, text, text.len() as u32));
            f.extend(dsb(0x5747_4b4c, b"wireguard", 9)); // WireGuard: skipped
            f.extend(dsb(DSB_TLS_KEYLOG, b"short", 999)); // length beyond the block
            let mut r = CaptureReader::from_reader(Cursor::new(f)).unwrap();
            let (pkts, errs) = collect(&mut r);
            assert!(pkts.is_empty());
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].contains("secrets length beyond the block"),
                "{errs:?}"
            );
            assert_eq!(r.take_tls_secrets(), vec![text.to_vec()]);
            assert!(r.take_tls_secrets().is_empty());
            assert!(!format!("{r:?}").contains("CLIENT_RANDOM"));
        }
    }

    #[test]
    fn pcapng_sections_interfaces_blocks() {
        let bytes = pcapng_sample();
        let mut r = CaptureReader::from_reader(Cursor::new(bytes.clone())).unwrap();
        let (p, e) = collect(&mut r);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(p.len(), 5);
        assert_eq!(
            p[0],
            (
                1,
                1_700_000_000_000_001_000,
                1,
                b"eth".to_vec(),
                0,
                Some(Direction::Inbound)
            )
        );
        assert_eq!(
            p[1],
            (
                2,
                1_700_000_000_000_000_002,
                113,
                b"sll-frame".to_vec(),
                1,
                Some(Direction::Outbound)
            )
        );
        assert_eq!(
            (p[2].0, p[2].1, p[2].2, &p[2].3[..]),
            (3, 1_700_000_000_000_000_002, 1, &b"simple"[..])
        );
        assert_eq!((p[3].2, &p[3].3[..], p[3].4), (113, &b"old"[..], 1));
        assert_eq!(p[3].1, 5);
        assert_eq!(
            (p[4].1, p[4].2, &p[4].3[..]),
            (5_500_000_000, 101, &b"raw"[..])
        );
        assert_eq!(r.interfaces().len(), 1);
        assert_eq!(r.bytes_read(), bytes.len() as u64);
    }

    #[test]
    fn pcapng_truncated_everywhere_terminates() {
        let bytes = pcapng_sample();
        for cut in 0..bytes.len() {
            let Ok(mut r) = CaptureReader::from_reader(Cursor::new(bytes[..cut].to_vec())) else {
                assert!(cut < 4);
                continue;
            };
            let (p, e) = collect(&mut r);
            assert!(p.len() <= 5);
            assert!(e.len() <= 1, "cut {cut}: {e:?}");
            if let Some(e) = e.first() {
                assert!(e.contains("truncated") && e.contains("offset"), "{e}");
            }
        }
    }

    #[test]
    fn pcapng_damaged_block_is_skipped() {
        let mut bytes = Vec::new();
        bytes.extend(shb(false));
        bytes.extend(idb(false, 1, None));
        let mut bad = epb(false, 0, 1, b"abcd", None);
        // captured length larger than the block
        bad[20..24].copy_from_slice(&1000u32.to_le_bytes());
        bytes.extend(bad);
        let mut mismatch = epb(false, 0, 2, b"efgh", None);
        let n = mismatch.len();
        mismatch[n - 4..].copy_from_slice(&999u32.to_le_bytes());
        bytes.extend(mismatch);
        bytes.extend(epb(false, 7, 3, b"noif", None));
        bytes.extend(epb(false, 0, 4, b"good", None));
        let mut r = CaptureReader::from_reader(Cursor::new(bytes)).unwrap();
        let (p, e) = collect(&mut r);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].contains("captured length exceeds") && e[0].contains("packet 1"),
            "{}",
            e[0]
        );
        assert!(e[1].contains("trailing length"), "{}", e[1]);
        assert!(e[2].contains("interface 7"), "{}", e[2]);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].0, &p[0].3[..]), (4, &b"good"[..]));
    }

    #[test]
    fn pcapng_huge_block_is_skipped_or_bounded() {
        let mut bytes = Vec::new();
        bytes.extend(shb(false));
        bytes.extend(idb(false, 1, None));
        let mut big = epb(false, 0, 1, &[0u8; 100], None);
        bytes.extend(big.clone());
        big[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        bytes.extend(big);
        let mut r = CaptureReader::with_options(
            Cursor::new(bytes),
            ReaderOptions {
                max_block_len: 4096,
            },
        )
        .unwrap();
        let (p, e) = collect(&mut r);
        assert_eq!(p.len(), 1);
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("too large"), "{}", e[0]);
    }

    #[test]
    fn pcapng_bad_block_length_stops() {
        let mut bytes = Vec::new();
        bytes.extend(shb(false));
        bytes.extend(idb(false, 1, None));
        let mut b = epb(false, 0, 1, b"abcd", None);
        b[4..8].copy_from_slice(&13u32.to_le_bytes());
        bytes.extend(b);
        let mut r = CaptureReader::from_reader(Cursor::new(bytes)).unwrap();
        let (p, e) = collect(&mut r);
        assert!(p.is_empty());
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("bad pcapng block length 13"), "{}", e[0]);
    }

    #[test]
    fn gzip_detected() {
        use flate2::write::GzEncoder;
        let bytes = pcapng_sample();
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        let gz = enc.finish().unwrap();
        let mut r = CaptureReader::from_reader(Cursor::new(gz.clone())).unwrap();
        assert!(r.is_gzip());
        let (p, e) = collect(&mut r);
        assert!(e.is_empty());
        assert_eq!(p.len(), 5);
        assert_eq!(r.bytes_read(), bytes.len() as u64);
        assert_eq!(r.file_bytes_read(), gz.len() as u64);
        // a corrupted gzip stream is an I/O error, not a panic or a loop
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[12..mid] {
            *b ^= 0x5a;
        }
        if let Ok(mut r) = CaptureReader::from_reader(Cursor::new(bad)) {
            let _ = collect(&mut r);
        }
    }

    #[test]
    fn writer_roundtrip_and_large_stream() {
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        let eth = w.interface_for(1).unwrap();
        let usb = w.interface_for(147).unwrap();
        assert_eq!(w.interface_for(1).unwrap(), eth);
        let mut expect = Vec::new();
        for i in 0..5000u32 {
            let len = (i * 37 % 1600) as usize;
            let data: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            let iface = if i % 3 == 0 { usb } else { eth };
            let dir = match i % 3 {
                0 => None,
                1 => Some(Direction::Inbound),
                _ => Some(Direction::Outbound),
            };
            let ts = Timestamp(1_600_000_000_000_000_000 + i64::from(i) * 1_001);
            w.write_packet(iface, ts, &data, len as u32, dir).unwrap();
            expect.push((
                u64::from(i) + 1,
                ts.0,
                if iface == usb { 147 } else { 1 },
                data,
                iface,
                dir,
            ));
        }
        let bytes = w.into_inner();
        let mut r = CaptureReader::from_reader(Cursor::new(bytes)).unwrap();
        let (p, e) = collect(&mut r);
        assert!(e.is_empty());
        assert_eq!(p, expect);
    }

    #[test]
    fn timestamp_resolutions() {
        let mut i = InterfaceInfo::new(1, 0);
        i.tsresol = 3;
        assert_eq!(i.to_timestamp(1500).0, 1_500_000_000);
        i.tsresol = 12;
        assert_eq!(i.to_timestamp(1_500_000).0, 1_500);
        i.tsresol = 0x80 | 1;
        assert_eq!(i.to_timestamp(3).0, 1_500_000_000);
        i.tsresol = 0xff;
        assert_eq!(i.to_timestamp(u64::MAX).0, 0);
        i.tsresol = 0x7f;
        assert_eq!(i.to_timestamp(u64::MAX).0, 0);
        i.tsresol = 0;
        i.tsoffset = 10;
        assert_eq!(i.to_timestamp(u64::MAX).0, i64::MAX);
    }
}
