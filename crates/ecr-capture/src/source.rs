//! Streaming capture reader (pcap, pcapng, gzip) and writers (pcapng, pcap), on
//! rusticata's `pcap-parser`.
//!
//! Reading: pcap-parser's streaming readers (`LegacyPcapReader`, `PcapNGReader`) parse
//! the file header, records and blocks out of one reusable buffer (16 KiB at first,
//! doubled at each read up to 1 MiB, grown further only when a single record needs
//! more, up to [`ReaderOptions::max_block_len`]); packets are handed out as slices
//! borrowed from it, so reading a capture costs a few large `read` calls and no
//! allocation per packet. A thin layer here bounds every length taken from the file
//! before the buffer grows for it: no input makes the reader allocate without bound,
//! panic or loop.
//!
//! Damaged input: a pcapng block carries its own length, so after a damaged block
//! the reader reports an error and continues with the next block. A damaged classic
//! pcap record header is resynchronised on the way pcapfix does (pcap-parser stops
//! there, so that search is done here); a truncated record ends the file (with an
//! error naming the offset); packets read so far stay valid.
//!
//! Offsets in errors are byte offsets in the (decompressed) capture stream.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ecr_proto::Timestamp;
use pcap_parser::nom;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{
    parse_option_be, parse_option_le, Block, DecryptionSecretsBlock, EnhancedPacketBlock,
    InterfaceDescriptionBlock, LegacyPcapBlock, LegacyPcapReader, Linktype, OptionCode,
    PcapBlockOwned, PcapHeader, PcapNGOption, PcapNGReader, SecretsType, SectionHeaderBlock,
    SimplePacketBlock, ToVec, BOM_MAGIC, DSB_MAGIC, EPB_MAGIC, IDB_MAGIC, SHB_MAGIC, SPB_MAGIC,
};

/// Largest record or block the reader accepts by default (16 MiB). Real packets are
/// at most a few hundred KiB (USB captures); a larger length is almost always damage,
/// and the bound keeps peak memory predictable.
pub const DEFAULT_MAX_BLOCK_LEN: usize = 16 << 20;

/// Hard ceiling for [`ReaderOptions::max_block_len`] (256 MiB).
pub const MAX_BLOCK_LEN_CEILING: usize = 256 << 20;

/// Size the read buffer grows to (doubling at each read from [`START_BUF_LEN`]);
/// reads are then done in chunks of about this size.
const INITIAL_BUF_LEN: usize = 1 << 20;

/// Size of the read buffer at first, so that small captures cost little.
const START_BUF_LEN: usize = 16 << 10;

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
/// Longest options area of a pcapng block handed to pcap-parser (which keeps each
/// option as a 32-byte entry: at most 8 MiB for this).
const MAX_OPTIONS_BYTES: usize = 1 << 20;
const PCAPNG_MIN_BLOCK: usize = 12;

#[cfg(test)]
const OPT_IF_TSRESOL: u16 = 9;
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
        /// Bytes of the record or block, consumed on the next call.
        len: usize,
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

/// The input as pcap-parser's readers see it. pcap-parser's `refill` only says that
/// a read failed; the error itself is kept here for the message. Interrupted reads
/// are retried.
struct Input {
    inner: Box<dyn Read + Send>,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    if let Ok(mut slot) = self.error.lock() {
                        *slot = Some(e);
                    }
                    return Err(copy);
                }
                ok => return ok,
            }
        }
    }
}

/// Reads into `buf` until it holds `n` bytes or the input ends; grows `buf` only by
/// what actually arrives.
fn read_up_to(r: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    while buf.len() < n {
        let want = (n - buf.len()).min(chunk.len());
        let dst = chunk.get_mut(..want).unwrap_or_default();
        let got = r.read(dst)?;
        if got == 0 {
            break;
        }
        buf.extend_from_slice(dst.get(..got).unwrap_or_default());
    }
    Ok(())
}

/// Where `part` (a slice pcap-parser handed out) lies in the buffer that started at
/// address `base` with `len` bytes: `(start, end)` offsets, `None` if outside.
fn span(base: usize, len: usize, part: &[u8]) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(base)?;
    let end = start.checked_add(part.len())?;
    (end <= len).then_some((start, end))
}

/// Streaming reader for pcap, pcapng and gzip-compressed captures.
///
/// Drive it with [`CaptureReader::next_packet`] until it returns `None`; an `Err`
/// item is a damaged record, and reading goes on when the format allows.
///
/// The records and blocks are parsed by rusticata's `pcap-parser` (its streaming
/// `LegacyPcapReader` and `PcapNGReader`, whose buffer this reader fills and
/// drains). What stays here is the part a capture analyzer needs and a parser does
/// not do: every length is bounded before the buffer is grown for it; a pcapng
/// block's framing (length, trailer) is checked first so that a damaged block is
/// one error and reading resumes at the next block; a damaged pcap record header
/// is resynchronised on (pcap-parser stops there); obsolete Packet Blocks (type 2),
/// which pcap-parser does not know, are read here.
pub struct CaptureReader {
    /// pcap-parser's reader; `None` when the first block already made the file
    /// unreadable (`pending_error` says why).
    rd: Option<Box<dyn PcapReaderIterator + Send>>,
    io_error: Arc<Mutex<Option<io::Error>>>,
    file_bytes: Arc<AtomicU64>,
    gzip: bool,
    format: Format,
    /// Capacity of pcap-parser's buffer.
    cap: usize,
    eof: bool,
    /// Stream offset of the first byte of the reader's buffer data.
    offset: u64,
    /// Bytes of the packet handed out last, consumed on the next call.
    pending: usize,
    /// An error found while opening, reported as the first item.
    pending_error: Option<SourceError>,
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

/// The I/O error kept by [`Input`] (the real one), else `fallback`.
fn take_io_error(slot: &Mutex<Option<io::Error>>, fallback: io::Error) -> io::Error {
    slot.lock()
        .ok()
        .and_then(|mut s| s.take())
        .unwrap_or(fallback)
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
        let inner: Box<dyn Read + Send> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(chained))
        } else {
            Box::new(chained)
        };
        let io_error = Arc::new(Mutex::new(None));
        let input = Input {
            inner,
            error: Arc::clone(&io_error),
        };
        let max_block = options
            .max_block_len
            .clamp(PCAPNG_MIN_BLOCK, MAX_BLOCK_LEN_CEILING);
        let mut reader = CaptureReader {
            rd: None,
            io_error,
            file_bytes,
            gzip,
            format: Format::Pcapng,
            cap: START_BUF_LEN,
            eof: false,
            offset: 0,
            pending: 0,
            pending_error: None,
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
        reader.read_file_header(input)?;
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
        self.offset + self.pending as u64
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
            if self.pending > 0 {
                let n = std::mem::take(&mut self.pending);
                self.consume(n);
            }
            if let Some(e) = self.pending_error.take() {
                self.done = true;
                return Some(Err(e));
            }
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
                    len,
                    meta,
                } => {
                    self.pending = len;
                    let data = self
                        .rd
                        .as_deref()
                        .and_then(|r| r.data().get(data_start..data_end))
                        .unwrap_or_default();
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

    /// The unconsumed bytes in the reader's buffer.
    fn data(&self) -> &[u8] {
        self.rd.as_deref().map(|r| r.data()).unwrap_or_default()
    }

    fn window(&self, len: usize) -> &[u8] {
        let d = self.data();
        d.get(..len.min(d.len())).unwrap_or_default()
    }

    /// Consumes `n` bytes; callers never pass more than are available (the
    /// buffer would take fewer, and offsets in errors would be off).
    fn consume(&mut self, n: usize) {
        if let Some(rd) = self.rd.as_deref_mut() {
            rd.consume_noshift(n);
            self.offset += n as u64;
        }
    }

    /// Makes at least `need` bytes available unless the input ends first, growing
    /// pcap-parser's buffer (up to the block limit) when a record needs more.
    /// Returns the bytes available (less than `need` only at end of input).
    fn fill(&mut self, need: usize) -> Result<usize, SourceError> {
        let Some(rd) = self.rd.as_deref_mut() else {
            return Ok(0);
        };
        loop {
            let avail = rd.data().len();
            if avail >= need || self.eof {
                return Ok(avail);
            }
            if self.cap < INITIAL_BUF_LEN {
                // Reads grow to INITIAL_BUF_LEN as the input turns out to be large.
                let new_cap = self.cap.saturating_mul(2).min(INITIAL_BUF_LEN);
                rd.grow(new_cap);
                self.cap = new_cap;
            }
            // A record or block longer than the buffer: room grows as its bytes
            // arrive (doubling while the buffer is full of them), never by the
            // length it announces, which a truncated or crafted file may not hold.
            if need > self.cap && avail >= self.cap {
                let new_cap = need.min(self.cap.saturating_mul(2));
                rd.grow(new_cap);
                self.cap = new_cap;
            }
            if rd.refill().is_err() {
                self.done = true;
                let source = take_io_error(&self.io_error, io::Error::other("read failed"));
                return Err(SourceError::Io {
                    offset: self.offset + avail as u64,
                    source,
                });
            }
            if rd.reader_exhausted() {
                self.eof = true;
            }
        }
    }

    /// Skips `n` bytes without keeping them. Returns false if the input ended first.
    fn skip(&mut self, n: u64) -> Result<bool, SourceError> {
        let mut left = n;
        loop {
            let have = self.data().len() as u64;
            let take = left.min(have);
            self.consume(take as usize);
            left -= take;
            if left == 0 {
                return Ok(true);
            }
            if self.fill(1)? == 0 {
                return Ok(false);
            }
        }
    }

    fn read_file_header(&mut self, mut input: Input) -> Result<(), SourceError> {
        let mut head = Vec::with_capacity(PCAP_HEADER_LEN);
        if let Err(e) = read_up_to(&mut input, &mut head, PCAP_HEADER_LEN) {
            return Err(SourceError::Io {
                offset: head.len() as u64,
                source: take_io_error(&self.io_error, e),
            });
        }
        let magic_le = Endian::Little.u32(&head, 0);
        let magic_be = Endian::Big.u32(&head, 0);
        match (magic_le, magic_be) {
            (Some(PCAP_MAGIC_US | PCAP_MAGIC_NS), _) | (_, Some(PCAP_MAGIC_US | PCAP_MAGIC_NS)) => {
                self.open_pcap(head, input)
            }
            (Some(PCAPNG_SHB), _) => self.open_pcapng(head, input),
            _ => Err(SourceError::NotCapture {
                first_bytes: hex_prefix(&head),
            }),
        }
    }

    /// Classic pcap: pcap-parser's `LegacyPcapReader` reads the file header.
    fn open_pcap(&mut self, head: Vec<u8>, input: Input) -> Result<(), SourceError> {
        let at = Location {
            offset: 0,
            packet: None,
        };
        if head.len() < PCAP_HEADER_LEN {
            return Err(SourceError::Truncated {
                what: "pcap file header",
                at,
                needed: PCAP_HEADER_LEN as u64,
                available: head.len() as u64,
            });
        }
        self.cap = START_BUF_LEN;
        let mut rd =
            LegacyPcapReader::new(self.cap, Cursor::new(head).chain(input)).map_err(|_| {
                SourceError::Malformed {
                    what: "pcap file header",
                    at,
                    detail: "rejected by the pcap parser",
                }
            })?;
        let header = match rd.next() {
            Ok((_, PcapBlockOwned::LegacyHeader(h))) => Some(h),
            _ => None,
        };
        let Some(h) = header else {
            return Err(SourceError::Malformed {
                what: "pcap file header",
                at,
                detail: "rejected by the pcap parser",
            });
        };
        if h.version_major != 2 {
            return Err(SourceError::UnsupportedVersion {
                what: "pcap",
                offset: 4,
                major: h.version_major,
                minor: h.version_minor,
            });
        }
        let endian = if h.is_bigendian() {
            Endian::Big
        } else {
            Endian::Little
        };
        let nanos = h.is_nanosecond_precision();
        // Upper bits of the link-type field carry FCS information (LT_LINKTYPE).
        let linktype = (h.network.0 as u32) & 0x03ff_ffff;
        let mut iface = InterfaceInfo::new(linktype, h.snaplen);
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
        self.rd = Some(Box::new(rd));
        self.consume(PCAP_HEADER_LEN);
        Ok(())
    }

    /// pcapng: the first block must be a complete section header before
    /// pcap-parser's `PcapNGReader` accepts the input; when it is not, the file is
    /// opened anyway and the first item read is the error (as for any later block).
    fn open_pcapng(&mut self, mut head: Vec<u8>, mut input: Input) -> Result<(), SourceError> {
        self.format = Format::Pcapng;
        match self.first_section(&mut head, &mut input) {
            Ok(len) => {
                self.cap = START_BUF_LEN.max(len);
                match PcapNGReader::new(self.cap, Cursor::new(head).chain(input)) {
                    Ok(rd) => self.rd = Some(Box::new(rd)),
                    Err(_) => {
                        self.pending_error = Some(SourceError::Malformed {
                            what: "pcapng section header",
                            at: Location {
                                offset: 0,
                                packet: None,
                            },
                            detail: "too short",
                        })
                    }
                }
                Ok(())
            }
            Err(e @ SourceError::Io { .. }) => Err(e),
            Err(e) => {
                self.pending_error = Some(e);
                Ok(())
            }
        }
    }

    /// Checks the framing of the first section header block and reads all of it
    /// into `head`; returns its length.
    fn first_section(&self, head: &mut Vec<u8>, input: &mut Input) -> Result<usize, SourceError> {
        let at = Location {
            offset: 0,
            packet: None,
        };
        if head.len() < 8 {
            return Err(SourceError::Truncated {
                what: "pcapng block header",
                at,
                needed: 8,
                available: head.len() as u64,
            });
        }
        let endian = match (Endian::Little.u32(head, 8), Endian::Big.u32(head, 8)) {
            (Some(PCAPNG_BOM), _) => Endian::Little,
            (_, Some(PCAPNG_BOM)) => Endian::Big,
            (None, _) => {
                return Err(SourceError::Truncated {
                    what: "pcapng section header",
                    at,
                    needed: PCAPNG_MIN_BLOCK as u64,
                    available: head.len() as u64,
                })
            }
            _ => {
                return Err(SourceError::Malformed {
                    what: "pcapng section header",
                    at,
                    detail: "unknown byte-order magic",
                })
            }
        };
        let len32 = endian.u32(head, 4).unwrap_or(0);
        let len = len32 as usize;
        if len < PCAPNG_MIN_BLOCK || len % 4 != 0 {
            return Err(SourceError::BadBlockLength {
                at,
                len: u64::from(len32),
            });
        }
        if len > self.max_block {
            return Err(SourceError::TooLarge {
                what: "pcapng block",
                at,
                len: u64::from(len32),
                limit: self.max_block as u64,
            });
        }
        if let Err(e) = read_up_to(input, head, len) {
            return Err(SourceError::Io {
                offset: head.len() as u64,
                source: take_io_error(&self.io_error, e),
            });
        }
        if head.len() < len {
            return Err(SourceError::Truncated {
                what: "pcapng block",
                at,
                needed: len as u64,
                available: head.len() as u64,
            });
        }
        let trailer = endian.u32(head, len - 4).unwrap_or(0);
        if trailer != len32 {
            return Err(SourceError::LengthMismatch {
                at,
                len: u64::from(len32),
                trailer: u64::from(trailer),
            });
        }
        Ok(len)
    }

    fn step_pcap(&mut self) -> Step {
        let (nanos, linktype) = match &self.state {
            State::Pcap { nanos, iface, .. } => (*nanos, iface.linktype),
            _ => return Step::End,
        };
        let rec_off = self.offset;
        // Fast path: the record is already in the buffer (one look at it).
        let mut got = self.data().len();
        if got < PCAP_RECORD_HEADER_LEN {
            got = match self.fill(PCAP_RECORD_HEADER_LEN) {
                Ok(g) => g,
                Err(e) => return Step::Error(e),
            };
        }
        if got == 0 {
            return Step::End;
        }
        let index = self.packets + 1;
        let at = Location {
            offset: rec_off,
            packet: Some(index),
        };
        self.packets = index;
        if got < PCAP_RECORD_HEADER_LEN {
            self.done = true;
            return Step::Error(SourceError::Truncated {
                what: "pcap record header",
                at,
                needed: PCAP_RECORD_HEADER_LEN as u64,
                available: got as u64,
            });
        }
        // The record header is checked here before pcap-parser trusts its length.
        let rules = self.pcap_rules();
        let e = rules.endian;
        let (fields, mut base) = {
            let h = self.data();
            let f = (|| Some((e.u32(h, 0)?, e.u32(h, 4)?, e.u32(h, 8)?, e.u32(h, 12)?)))();
            (f, h.as_ptr() as usize)
        };
        let (secs, frac, incl, orig) = fields.unwrap_or_default();
        if let Some(reason) = rules.damage(secs, frac, incl, orig, None) {
            return self.resync_pcap(at, reason, rules);
        }
        let need = PCAP_RECORD_HEADER_LEN + incl as usize;
        if got < need {
            got = match self.fill(need) {
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
            base = self.data().as_ptr() as usize;
        }
        let Some(rd) = self.rd.as_deref_mut() else {
            return Step::End;
        };
        let blen = need;
        let record = match rd.next() {
            Ok((_, PcapBlockOwned::Legacy(b))) => {
                span(base, blen, b.data).map(|(s, e)| (b.ts_sec, b.ts_usec, b.origlen, s, e))
            }
            _ => None,
        };
        let Some((secs, frac, orig, data_start, data_end)) = record else {
            self.consume(need);
            return Step::Error(SourceError::Malformed {
                what: "pcap record",
                at,
                detail: "rejected by the pcap parser",
            });
        };
        let frac_ns = if nanos {
            i64::from(frac)
        } else {
            i64::from(frac) * 1000
        };
        let ts = Timestamp(i64::from(secs) * 1_000_000_000 + frac_ns);
        self.last_ts = ts;
        Step::Packet {
            data_start,
            data_end,
            len: need,
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

    /// One pcapng block. Its framing (type, length within the limit, trailer) is
    /// checked here, then pcap-parser parses it.
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
        let mut got = self.data().len();
        if got < PCAPNG_MIN_BLOCK {
            got = match self.fill(PCAPNG_MIN_BLOCK) {
                Ok(g) => g,
                Err(e) => return Step::Error(e),
            };
        }
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
        if got < len {
            got = match self.fill(len) {
                Ok(g) => g,
                Err(e) => return Step::Error(e),
            };
        }
        if got < len {
            self.done = true;
            return Step::Error(SourceError::Truncated {
                what: "pcapng block",
                at,
                needed: len as u64,
                available: got as u64,
            });
        }
        let trailer = endian.u32(self.window(len), len - 4).unwrap_or(0);
        if trailer != len32 {
            self.consume(len);
            return Step::Error(SourceError::LengthMismatch {
                at,
                len: u64::from(len32),
                trailer: u64::from(trailer),
            });
        }
        // pcap-parser keeps each option as a 32-byte entry in a Vec: bound the
        // options area first, so that no block costs more than a few MiB.
        let too_many_options = match btype {
            _ if is_shb => self.options_len(endian, len, 28, None) > MAX_OPTIONS_BYTES,
            PCAPNG_IDB => self.options_len(endian, len, 20, None) > MAX_OPTIONS_BYTES,
            PCAPNG_EPB => self.options_len(endian, len, 32, Some(20)) > MAX_OPTIONS_BYTES,
            PCAPNG_DSB => self.options_len(endian, len, 20, Some(12)) > MAX_OPTIONS_BYTES,
            _ => false,
        };
        let step = if too_many_options {
            self.done |= is_shb;
            Step::Error(SourceError::Malformed {
                what: "pcapng block",
                at,
                detail: "options longer than 1 MiB",
            })
        } else if is_shb {
            self.section_header(endian, at)
        } else {
            match btype {
                PCAPNG_IDB => self.interface_block(endian, len, at),
                PCAPNG_EPB | PCAPNG_SPB => self.packet_block(btype, endian, len, at),
                PCAPNG_OPB => self.obsolete_packet_block(endian, len, at),
                PCAPNG_DSB => self.secrets_block(endian, len, at),
                _ => Step::Continue,
            }
        };
        // Packets are consumed on the next call (their data is handed out).
        if !matches!(step, Step::Packet { .. }) {
            self.consume(len);
        }
        step
    }

    /// Bytes of options in the block of `len` bytes at the start of the buffer: what
    /// follows `fixed` bytes and, when `data_len_at` says where its length is, the
    /// (padded) data.
    fn options_len(
        &self,
        endian: Endian,
        len: usize,
        fixed: usize,
        data_len_at: Option<usize>,
    ) -> usize {
        let data = data_len_at
            .and_then(|at| endian.u32(self.data(), at))
            .map_or(0, |l| pad4(l as usize));
        len.saturating_sub(fixed.saturating_add(data))
    }

    /// pcap-parser's parse of the block at the start of the buffer.
    fn parse_block<T>(&mut self, f: impl FnOnce(usize, Block<'_>) -> Option<T>) -> Option<T> {
        let rd = self.rd.as_deref_mut()?;
        let base = rd.data().as_ptr() as usize;
        match rd.next() {
            Ok((_, PcapBlockOwned::NG(b))) => f(base, b),
            _ => None,
        }
    }

    /// A Decryption Secrets Block: TLS key logs are kept for
    /// [`CaptureReader::take_tls_secrets`]; other kinds (WireGuard, ZigBee) are skipped.
    fn secrets_block(&mut self, endian: Endian, len: usize, at: Location) -> Step {
        let malformed = |detail| {
            Step::Error(SourceError::Malformed {
                what: "decryption secrets block",
                at,
                detail,
            })
        };
        if len < 20 {
            return malformed("too short");
        }
        if endian.u32(self.window(len), 8) != Some(DSB_TLS_KEYLOG) {
            return Step::Continue;
        }
        let data = self.parse_block(|_, b| match b {
            Block::DecryptionSecrets(dsb) => {
                dsb.data.get(..dsb.secrets_len as usize).map(<[u8]>::to_vec)
            }
            _ => None,
        });
        let Some(data) = data else {
            return malformed("secrets length beyond the block");
        };
        if self.tls_secret_bytes.saturating_add(data.len()) > MAX_DSB_BYTES {
            return malformed("more than 16 MiB of TLS secrets in the file: the rest is ignored");
        }
        self.tls_secret_bytes += data.len();
        self.tls_secrets.push(data);
        Step::Continue
    }

    /// TLS key logs (NSS key log text) read from Decryption Secrets Blocks since
    /// the last call. A block applies to the packets after it.
    pub fn take_tls_secrets(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.tls_secrets)
    }

    fn section_header(&mut self, endian: Endian, at: Location) -> Step {
        let version = self.parse_block(|_, b| match b {
            Block::SectionHeader(shb) => Some((shb.major_version, shb.minor_version)),
            _ => None,
        });
        let Some((major, minor)) = version else {
            // pcap-parser wants the 16 fixed bytes and the section length.
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

    fn interface_block(&mut self, endian: Endian, len: usize, at: Location) -> Step {
        let iface = if len < 20 {
            None
        } else {
            self.parse_block(|_, b| match b {
                Block::InterfaceDescription(idb) => {
                    let linktype = u32::try_from(idb.linktype.0).unwrap_or(0);
                    let mut iface = InterfaceInfo::new(linktype, idb.snaplen);
                    iface.tsresol = idb.if_tsresol;
                    for opt in &idb.options {
                        let value = opt.as_bytes().unwrap_or_default();
                        match opt.code {
                            // pcap-parser 0.17 decodes if_tsoffset little-endian
                            // in big-endian sections too: read it here.
                            OptionCode::IfTsoffset => {
                                if let Some(v) = endian.u64(value, 0) {
                                    iface.tsoffset = v as i64;
                                }
                            }
                            OptionCode::IfName => {
                                let v = value
                                    .get(..value.len().min(MAX_IF_NAME))
                                    .unwrap_or_default();
                                let v = v.split(|&b| b == 0).next().unwrap_or_default();
                                iface.name = Some(String::from_utf8_lossy(v).into_owned());
                            }
                            _ => {}
                        }
                    }
                    Some(iface)
                }
                _ => None,
            })
        };
        let Some(iface) = iface else {
            return Step::Error(SourceError::Malformed {
                what: "interface description block",
                at,
                detail: "too short",
            });
        };
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

    /// Enhanced and Simple Packet Blocks, parsed by pcap-parser.
    fn packet_block(&mut self, btype: u32, endian: Endian, len: usize, at: Location) -> Step {
        let min_len = if btype == PCAPNG_EPB { 32 } else { 16 };
        if len < min_len {
            return self.malformed_packet(at, "too short");
        }
        // (interface, timestamp units or None for SPB, data span, original length, flags)
        let fields = self.parse_block(|base, b| match b {
            Block::EnhancedPacket(epb) => {
                let flags = epb
                    .options
                    .iter()
                    .find(|o| o.code == OptionCode(OPT_EPB_FLAGS))
                    .and_then(|o| endian.u32(o.value(), 0));
                Some((
                    epb.if_id,
                    Some(u64::from(epb.ts_high) << 32 | u64::from(epb.ts_low)),
                    span(base, len, epb.packet_data())?,
                    epb.origlen,
                    flags,
                ))
            }
            Block::SimplePacket(spb) => Some((
                0,
                None,
                span(base, len, spb.packet_data())?,
                spb.origlen,
                None,
            )),
            _ => None,
        });
        // Only the captured length can be wrong once the framing was checked.
        let Some((interface, units, (start, end), orig_len, flags)) = fields else {
            return self.malformed_packet(at, "captured length exceeds the block");
        };
        self.packet_out(at, interface, units, (start, end), orig_len, flags, len)
    }

    /// The obsolete Packet Block (type 2), which pcap-parser does not parse: the same
    /// fields as an EPB with a 16-bit interface number.
    fn obsolete_packet_block(&mut self, endian: Endian, len: usize, at: Location) -> Step {
        let block = self.window(len);
        let fields = (|| {
            Some((
                u32::from(endian.u16(block, 8)?),
                u64::from(endian.u32(block, 12)?) << 32 | u64::from(endian.u32(block, 16)?),
                endian.u32(block, 20)?,
                endian.u32(block, 24)?,
            ))
        })();
        let Some((interface, units, caplen, orig_len)) = fields.filter(|_| len >= 32) else {
            return self.malformed_packet(at, "too short");
        };
        let start = 28usize;
        let Some(end) = start.checked_add(caplen as usize).filter(|&e| e <= len - 4) else {
            return self.malformed_packet(at, "captured length exceeds the block");
        };
        let mut flags = None;
        let mut opts = block.get(pad4(end)..len - 4).unwrap_or_default();
        loop {
            let parsed = match endian {
                Endian::Little => parse_option_le::<nom::error::Error<&[u8]>>(opts),
                Endian::Big => parse_option_be::<nom::error::Error<&[u8]>>(opts),
            };
            let Ok((rest, opt)) = parsed else { break };
            if opt.code == OptionCode::EndOfOpt {
                break;
            }
            if opt.code == OptionCode(OPT_EPB_FLAGS) {
                flags = endian.u32(opt.value(), 0);
            }
            opts = rest;
        }
        self.packet_out(
            at,
            interface,
            Some(units),
            (start, end),
            orig_len,
            flags,
            len,
        )
    }

    fn malformed_packet(&self, at: Location, detail: &'static str) -> Step {
        Step::Error(SourceError::Malformed {
            what: "packet block",
            at,
            detail,
        })
    }

    /// The packet of a parsed EPB/SPB/OPB, once its interface is known.
    #[allow(clippy::too_many_arguments)]
    fn packet_out(
        &mut self,
        at: Location,
        interface: u32,
        units: Option<u64>,
        (start, mut end): (usize, usize),
        orig_len: u32,
        flags: Option<u32>,
        len: usize,
    ) -> Step {
        let iface = match &self.state {
            State::Pcapng { ifaces, .. } => ifaces.get(interface as usize),
            _ => None,
        };
        let Some(iface) = iface else {
            return Step::Error(SourceError::UnknownInterface { at, interface });
        };
        if units.is_none() && iface.snaplen != 0 {
            // SPB data is min(original length, snap length); the rest is padding.
            end = end.min(start.saturating_add(iface.snaplen as usize));
        }
        let ts = match units {
            Some(u) => iface.to_timestamp(u),
            // SPB has no timestamp: reuse the previous packet's time so time-based
            // rules downstream see no jump.
            None => self.last_ts,
        };
        let linktype = iface.linktype;
        self.last_ts = ts;
        Step::Packet {
            data_start: start,
            data_end: end,
            len,
            meta: PacketMeta {
                index: at.packet.unwrap_or(self.packets),
                ts,
                linktype,
                orig_len,
                interface,
                direction: flags.and_then(Direction::from_flags),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Writers (blocks and records serialised by pcap-parser's `ToVec`)
// ---------------------------------------------------------------------------

fn pad4(len: usize) -> usize {
    (len + 3) & !3
}

fn serialise<E: fmt::Debug>(r: Result<Vec<u8>, E>) -> io::Result<Vec<u8>> {
    r.map_err(|e| io::Error::other(format!("pcap serialisation: {e:?}")))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// One capture interface of a [`PcapngWriter`] (an Interface Description Block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceSpec<'a> {
    /// LINKTYPE_* value (at most 65535 in pcapng).
    pub linktype: u32,
    /// Snap length (0 = unlimited).
    pub snaplen: u32,
    /// `if_name`.
    pub name: Option<&'a str>,
    /// `if_tsresol`: 10^-n seconds, or 2^-n with the high bit set (9 = nanoseconds).
    pub tsresol: u8,
    /// `if_tsoffset`: seconds added to every timestamp of the interface.
    pub tsoffset: i64,
}

impl InterfaceSpec<'_> {
    /// An interface with nanosecond timestamps and no offset.
    pub fn new(linktype: u32) -> Self {
        InterfaceSpec {
            linktype,
            snaplen: 0,
            name: None,
            tsresol: 9,
            tsoffset: 0,
        }
    }
}

/// Converts a capture time to units of `tsresol` after `tsoffset` (inverse of
/// [`InterfaceInfo::to_timestamp`], truncating); `None` when it does not fit in 64 bits
/// (a time before the offset, or too far ahead for the resolution).
fn to_units(ts: Timestamp, tsresol: u8, tsoffset: i64) -> Option<u64> {
    let ns = i128::from(ts.0) - i128::from(tsoffset).checked_mul(1_000_000_000)?;
    let exp = u32::from(tsresol & 0x7f);
    let units = if tsresol & 0x80 == 0 {
        if exp <= 9 {
            ns / 10i128.checked_pow(9 - exp)?
        } else {
            ns.checked_mul(10i128.checked_pow(exp - 9)?)?
        }
    } else {
        ns.checked_mul(1i128.checked_shl(exp).filter(|&p| p > 0)?)? / 1_000_000_000
    };
    u64::try_from(units).ok()
}

/// Writes a pcapng file, little-endian: sections ([`PcapngWriter::new_section`]),
/// interfaces with their link type, `if_tsresol` and `if_tsoffset`, Enhanced and
/// Simple Packet Blocks, and Decryption Secrets Blocks. Used for serial captures,
/// exports and `live -w`, and by tests. The blocks are serialised by pcap-parser.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    w: W,
    /// Interfaces of the current section.
    ifaces: Vec<WriterIface>,
}

#[derive(Debug, Clone, Copy)]
struct WriterIface {
    linktype: u32,
    snaplen: u32,
    tsresol: u8,
    tsoffset: i64,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the first section header block.
    pub fn new(w: W) -> io::Result<Self> {
        let mut out = PcapngWriter {
            w,
            ifaces: Vec::new(),
        };
        out.new_section()?;
        Ok(out)
    }

    /// Starts a new section: a section header block; the interfaces of the previous
    /// section no longer apply (their numbers start at 0 again).
    pub fn new_section(&mut self) -> io::Result<()> {
        let mut shb = SectionHeaderBlock {
            block_type: SHB_MAGIC,
            block_len1: 0,
            bom: BOM_MAGIC,
            major_version: 1,
            minor_version: 0,
            section_len: -1,
            options: Vec::new(),
            block_len2: 0,
        };
        self.w.write_all(&serialise(shb.to_vec())?)?;
        self.ifaces.clear();
        Ok(())
    }

    /// Adds an interface (IDB with nanosecond resolution) and returns its number.
    pub fn add_interface(
        &mut self,
        linktype: u32,
        snaplen: u32,
        name: Option<&str>,
    ) -> io::Result<u32> {
        self.add_interface_with(InterfaceSpec {
            snaplen,
            name,
            ..InterfaceSpec::new(linktype)
        })
    }

    /// Adds an interface described by `spec` and returns its number.
    pub fn add_interface_with(&mut self, spec: InterfaceSpec<'_>) -> io::Result<u32> {
        let id = u32::try_from(self.ifaces.len()).map_err(|_| invalid("too many interfaces"))?;
        let linktype16 =
            u16::try_from(spec.linktype).map_err(|_| invalid("link type above 65535"))?;
        let mut options = Vec::new();
        if let Some(name) = spec.name {
            let n = name.as_bytes();
            let n = n
                .get(..n.len().min(usize::from(u16::MAX) - 3))
                .unwrap_or_default();
            options.push(PcapNGOption {
                code: OptionCode::IfName,
                len: n.len() as u16,
                value: Cow::Borrowed(n),
            });
        }
        // pcap-parser's `fix` adds if_tsresol and if_tsoffset (little-endian) from these.
        let mut idb = InterfaceDescriptionBlock {
            block_type: IDB_MAGIC,
            block_len1: 0,
            linktype: Linktype(i32::from(linktype16)),
            reserved: 0,
            snaplen: spec.snaplen,
            options,
            block_len2: 0,
            if_tsresol: spec.tsresol,
            if_tsoffset: spec.tsoffset,
        };
        self.w.write_all(&serialise(idb.to_vec())?)?;
        self.ifaces.push(WriterIface {
            linktype: spec.linktype,
            snaplen: spec.snaplen,
            tsresol: spec.tsresol,
            tsoffset: spec.tsoffset,
        });
        Ok(id)
    }

    /// The interface for `linktype`, adding an IDB the first time a link type is used.
    pub fn interface_for(&mut self, linktype: u32) -> io::Result<u32> {
        match self.ifaces.iter().position(|i| i.linktype == linktype) {
            Some(i) => Ok(i as u32),
            None => self.add_interface(linktype, 0, None),
        }
    }

    fn iface(&self, interface: u32) -> io::Result<WriterIface> {
        self.ifaces
            .get(interface as usize)
            .copied()
            .ok_or_else(|| invalid("unknown interface"))
    }

    /// Writes one enhanced packet block; the time is written in the interface's
    /// resolution after its offset.
    pub fn write_packet(
        &mut self,
        interface: u32,
        ts: Timestamp,
        data: &[u8],
        orig_len: u32,
        direction: Option<Direction>,
    ) -> io::Result<()> {
        let iface = self.iface(interface)?;
        let caplen = u32::try_from(data.len())
            .ok()
            .filter(|&l| (l as usize) <= MAX_BLOCK_LEN_CEILING - 64)
            .ok_or_else(|| invalid("packet too large"))?;
        let units = to_units(ts, iface.tsresol, iface.tsoffset).unwrap_or(0);
        let flags = Direction::to_flags(direction).to_le_bytes();
        let mut options = Vec::new();
        if direction.is_some() {
            options.push(PcapNGOption {
                code: OptionCode(OPT_EPB_FLAGS),
                len: 4,
                value: Cow::Borrowed(&flags[..]),
            });
        }
        let mut epb = EnhancedPacketBlock {
            block_type: EPB_MAGIC,
            block_len1: 0,
            if_id: interface,
            ts_high: (units >> 32) as u32,
            ts_low: units as u32,
            caplen,
            origlen: orig_len.max(caplen),
            data,
            options,
            block_len2: 0,
        };
        self.w.write_all(&serialise(epb.to_vec())?)
    }

    /// Writes one simple packet block (interface 0, no timestamp). `data` is what was
    /// captured: at most the interface's snap length.
    pub fn write_simple_packet(&mut self, data: &[u8], orig_len: u32) -> io::Result<()> {
        let iface = self.iface(0)?;
        let len = u32::try_from(data.len())
            .ok()
            .filter(|&l| (l as usize) <= MAX_BLOCK_LEN_CEILING - 64)
            .ok_or_else(|| invalid("packet too large"))?;
        if iface.snaplen != 0 && len > iface.snaplen {
            return Err(invalid("simple packet longer than the snap length"));
        }
        let mut spb = SimplePacketBlock {
            block_type: SPB_MAGIC,
            block_len1: 0,
            origlen: orig_len.max(len),
            data,
            block_len2: 0,
        };
        self.w.write_all(&serialise(spb.to_vec())?)
    }

    /// Writes a decryption secrets block (`kind` [`DSB_TLS_KEYLOG`] for an NSS key
    /// log); it applies to the packets written after it.
    pub fn write_secrets(&mut self, kind: u32, secrets: &[u8]) -> io::Result<()> {
        let len = u32::try_from(secrets.len())
            .ok()
            .filter(|&l| (l as usize) <= MAX_DSB_BYTES)
            .ok_or_else(|| invalid("secrets too large"))?;
        let mut dsb = DecryptionSecretsBlock {
            block_type: DSB_MAGIC,
            block_len1: 0,
            secrets_type: SecretsType(kind),
            secrets_len: len,
            data: secrets,
            options: Vec::new(),
            block_len2: 0,
        };
        self.w.write_all(&serialise(dsb.to_vec())?)
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

/// Swaps the 32-bit fields at `at` of a little-endian serialisation to big-endian.
fn swap32(b: &mut [u8], at: &[usize]) {
    for &i in at {
        if let Some(f) = b.get_mut(i..i + 4) {
            f.reverse();
        }
    }
}

/// Writes a classic pcap file in either byte order and either timestamp resolution.
/// The file header and record headers are serialised by pcap-parser (which writes
/// little-endian; a big-endian file has each field swapped).
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
        let header = PcapHeader {
            magic_number: if nanos { PCAP_MAGIC_NS } else { PCAP_MAGIC_US },
            version_major: 2,
            version_minor: 4,
            thiszone: 0,
            sigfigs: 0,
            snaplen,
            network: Linktype(linktype as i32),
        };
        let mut b = serialise(header.to_vec_raw())?;
        if big_endian {
            swap32(&mut b, &[0, 8, 12, 16, 20]);
            for i in [4, 6] {
                if let Some(f) = b.get_mut(i..i + 2) {
                    f.reverse();
                }
            }
        }
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
        let caplen = u32::try_from(data.len()).map_err(|_| invalid("packet too large"))?;
        // The header alone (the data follows it unchanged, without a copy).
        let record = LegacyPcapBlock {
            ts_sec: secs,
            ts_usec: if self.nanos { ns } else { ns / 1000 },
            caplen,
            origlen: orig_len.max(caplen),
            data: &[],
        };
        let mut h = serialise(record.to_vec_raw())?;
        if self.big_endian {
            swap32(&mut h, &[0, 4, 8, 12]);
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
    fn room_grows_with_the_bytes_that_arrive_not_with_the_announced_length() {
        // A record announcing 12 MB (within a 16 MiB snap length) in a file that
        // ends 100 bytes later: the buffer is not grown for bytes that never come
        // (it once was, to 12 MB, before the truncation was found).
        let mut w = PcapWriter::new(Vec::new(), 1, 16 << 20, false, false).unwrap();
        w.write_packet(Timestamp(1_700_000_000_000_000_000), &[1u8; 100], 100)
            .unwrap();
        let mut bytes = w.into_inner();
        let at = PCAP_HEADER_LEN + 8;
        bytes[at..at + 4].copy_from_slice(&(12u32 << 20).to_le_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&(12u32 << 20).to_le_bytes());
        let mut r = CaptureReader::from_reader(Cursor::new(bytes)).unwrap();
        let (p, e) = collect(&mut r);
        assert!(p.is_empty());
        assert!(e.iter().any(|e| e.contains("truncated")), "{e:?}");
        assert!(r.cap <= INITIAL_BUF_LEN, "buffer of {} bytes", r.cap);
        // A record of 5 MiB that is all there: read whole, in room of at most twice it.
        let mut w = PcapWriter::new(Vec::new(), 1, 16 << 20, false, false).unwrap();
        let big = vec![7u8; 5 << 20];
        w.write_packet(Timestamp(1_700_000_000_000_000_000), &big, big.len() as u32)
            .unwrap();
        w.write_packet(Timestamp(1_700_000_001_000_000_000), b"after", 5)
            .unwrap();
        let mut r = CaptureReader::from_reader(Cursor::new(w.into_inner())).unwrap();
        let (p, e) = collect(&mut r);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].3.len(), 5 << 20);
        assert_eq!(p[1].3, b"after");
        assert!(
            r.cap >= 5 << 20 && r.cap <= 10 << 20,
            "buffer of {} bytes",
            r.cap
        );
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
    fn pcapng_options_are_bounded() {
        // An EPB whose 1.5 MiB of options are empty 4-byte options (each would be
        // a 32-byte entry in pcap-parser's Vec) is one error; reading goes on.
        let mut bytes = shb(false);
        bytes.extend(idb(false, 1, None));
        let mut body = Vec::new();
        for v in [0u32, 0, 1, 4, 4] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(b"data");
        for _ in 0..(3 << 18) {
            body.extend_from_slice(&[1, 0, 0, 0]); // opt_comment, length 0
        }
        bytes.extend(block(false, PCAPNG_EPB, &body));
        bytes.extend(epb(false, 0, 2, b"good", None));
        let mut r = CaptureReader::from_reader(Cursor::new(bytes)).unwrap();
        let (p, e) = collect(&mut r);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("options longer than 1 MiB") && e[0].contains("packet 1"),
            "{}",
            e[0]
        );
        assert_eq!((p.len(), p[0].0, &p[0].3[..]), (1, 2, &b"good"[..]));
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

    /// A file written by [`PcapngWriter`] with two sections, interfaces of three
    /// resolutions and offsets, EPB, SPB and a DSB.
    fn written_pcapng() -> Vec<u8> {
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        let us = w
            .add_interface_with(InterfaceSpec {
                tsresol: 6,
                name: Some("eth0"),
                ..InterfaceSpec::new(1)
            })
            .unwrap();
        let bin = w
            .add_interface_with(InterfaceSpec {
                tsresol: 0x80 | 10,
                tsoffset: 1_700_000_000,
                ..InterfaceSpec::new(113)
            })
            .unwrap();
        w.write_secrets(DSB_TLS_KEYLOG, b"CLIENT_RANDOM aa bb\n")
            .unwrap();
        w.write_packet(
            us,
            Timestamp(1_700_000_000_123_456_789),
            b"eth",
            60,
            Some(Direction::Inbound),
        )
        .unwrap();
        w.write_packet(
            bin,
            Timestamp(1_700_000_005_500_000_000),
            b"sll-frame",
            9,
            Some(Direction::Outbound),
        )
        .unwrap();
        w.new_section().unwrap();
        // Interface numbers start again in a new section.
        assert!(w.write_packet(bin, Timestamp(0), b"x", 1, None).is_err());
        let raw = w
            .add_interface_with(InterfaceSpec {
                snaplen: 4,
                ..InterfaceSpec::new(101)
            })
            .unwrap();
        assert_eq!(raw, 0);
        w.write_simple_packet(b"raw!", 10).unwrap();
        assert!(w.write_simple_packet(b"too long", 8).is_err());
        w.write_packet(raw, Timestamp(1_700_000_009_000_000_001), b"ns", 2, None)
            .unwrap();
        w.into_inner()
    }

    #[test]
    fn pcapng_writer_sections_interfaces_blocks_secrets() {
        let bytes = written_pcapng();
        let mut r = CaptureReader::from_reader(Cursor::new(bytes.clone())).unwrap();
        let first = r.next_packet().unwrap().unwrap();
        assert_eq!(first.data, b"eth");
        assert_eq!(
            r.take_tls_secrets(),
            vec![b"CLIENT_RANDOM aa bb\n".to_vec()]
        );
        assert_eq!(r.interfaces()[0].name.as_deref(), Some("eth0"));
        assert_eq!(
            (r.interfaces()[1].tsresol, r.interfaces()[1].tsoffset),
            (0x8a, 1_700_000_000)
        );
        let mut r = CaptureReader::from_reader(Cursor::new(bytes.clone())).unwrap();
        let (p, e) = collect(&mut r);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            p,
            vec![
                // microseconds: the nanoseconds are cut
                (
                    1,
                    1_700_000_000_123_456_000,
                    1,
                    b"eth".to_vec(),
                    0,
                    Some(Direction::Inbound)
                ),
                // 2^-10 s after a 1_700_000_000 s offset: exact
                (
                    2,
                    1_700_000_005_500_000_000,
                    113,
                    b"sll-frame".to_vec(),
                    1,
                    Some(Direction::Outbound)
                ),
                // SPB: no timestamp (the previous packet's)
                (3, 1_700_000_005_500_000_000, 101, b"raw!".to_vec(), 0, None),
                (4, 1_700_000_009_000_000_001, 101, b"ns".to_vec(), 0, None),
            ]
        );
        assert_eq!(r.interfaces().len(), 1);
        assert_eq!(r.bytes_read(), bytes.len() as u64);
    }

    /// Software nobody here wrote reads what the writers write: tshark's frame
    /// times, interfaces and lengths, and capinfos' count of decryption secrets.
    #[test]
    fn tshark_reads_the_written_files() {
        let have = |tool: &str| {
            std::process::Command::new(tool)
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have("tshark") || !have("capinfos") {
            assert!(
                std::env::var_os("ECR_SNIFF_NO_SKIP").is_none(),
                "SKIP not allowed (ECR_SNIFF_NO_SKIP is set): tshark/capinfos missing"
            );
            eprintln!("SKIP tshark_reads_the_written_files: tshark or capinfos not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ecr-source-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fields = |path: &Path| {
            let o = std::process::Command::new("tshark")
                .args(["-n", "-r"])
                .arg(path)
                .args([
                    "-T",
                    "fields",
                    "-e",
                    "frame.time_epoch",
                    "-e",
                    "frame.interface_id",
                ])
                .args(["-e", "frame.cap_len", "-e", "frame.len"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8(o.stdout).unwrap()
        };
        let ng = dir.join("w.pcapng");
        std::fs::write(&ng, written_pcapng()).unwrap();
        assert_eq!(
            fields(&ng),
            "1700000000.123456000\t0\t3\t60\n\
             1700000005.500000000\t1\t9\t9\n\
             \t0\t4\t10\n\
             1700000009.000000001\t0\t2\t2\n"
        );
        let o = std::process::Command::new("capinfos")
            .arg("-D")
            .arg(&ng)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.lines()
                .any(|l| l.contains("secrets") && l.trim_end().ends_with(": 1")),
            "{text}"
        );
        for (nanos, be) in [(false, false), (false, true), (true, false), (true, true)] {
            let path = dir.join(format!("w-{nanos}-{be}.pcap"));
            std::fs::write(&path, pcap_bytes(nanos, be)).unwrap();
            let frac = if nanos { "123456789" } else { "123456000" };
            assert_eq!(
                fields(&path),
                format!(
                    // (no interface id in classic pcap)
                    "1700000000.{frac}\t\t5\t60\n\
                     1700000001.000001000\t\t0\t0\n\
                     1700000002.000000000\t\t3000\t3000\n"
                ),
                "nanos {nanos} big-endian {be}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
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
