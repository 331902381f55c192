//! The serial frame (spec section 10.3, docs/protocol.md D1).
//!
//! ```text
//! offset  size  field
//!      0     2  start marker 0x2f 0x6e ("/n")
//!      2     1  version, 0x01
//!      3     1  type: 0x10 request, 0x20 ack, 0x30..0x35 error
//!      4     1  ref number, 0x01..0x7f
//!      5     2  total length: this frame, start marker to end marker inclusive (BE)
//!      7     2  data length: the whole message's data segment (BE)
//!      9     n  data carried in this frame (n = total length - 11)
//!    9+n     2  end marker 0x2f 0x6e
//! ```
//!
//! A frame whose data length is larger than the data it carries is a *fragment* of a
//! split message (D1). Frames are parsed by their length fields, never by searching for
//! the end marker: `/n` occurs in Base64 and JSON.
//!
//! [`Frame`] is a checked view over a byte buffer in the style of smoltcp's `wire`
//! module; [`FrameRepr`] is the owned form used to build frames, and [`split_message`]
//! cuts a message into fragments.

use core::fmt;

use nom::number::streaming::{be_u16, be_u8};
use nom::Needed;

/// The start and end marker, `/n` in ASCII.
pub const MARKER: [u8; 2] = [0x2f, 0x6e];
/// The only version the spec knows.
pub const VERSION: u8 = 0x01;
/// Bytes before the data: marker, version, type, ref, total length, data length.
pub const HEADER_LEN: usize = 9;
/// Bytes after the data: the end marker.
pub const TRAILER_LEN: usize = 2;
/// Bytes of a frame that are not data (11).
pub const OVERHEAD: usize = HEADER_LEN + TRAILER_LEN;
/// The spec's recommended maximum of data bytes in one frame; larger messages are split.
pub const MAX_FRAGMENT_DATA: usize = 1024;
/// The largest frame the 16-bit total length can describe.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;
/// The largest message the 16-bit data length can describe.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// Field offsets, as in smoltcp's `wire` modules.
mod field {
    use core::ops::Range;
    pub const VERSION: usize = 2;
    pub const TYPE: usize = 3;
    pub const REF: usize = 4;
    pub const TOTAL_LEN: Range<usize> = 5..7;
    pub const DATA_LEN: Range<usize> = 7..9;
    pub const DATA: usize = 9;
}

/// A frame type byte. Unknown values stay representable so that a capture with a
/// new or broken type can still be shown as it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameType(pub u8);

impl FrameType {
    /// 0x10: a request; carries a message and must be answered within 1000 ms.
    pub const REQUEST: FrameType = FrameType(0x10);
    /// 0x20: the spec's "response", in practice a link-level acknowledgement (D2).
    pub const ACK: FrameType = FrameType(0x20);

    /// Whether the spec defines this type (0x10, 0x20, 0x30..=0x35).
    pub const fn is_known(self) -> bool {
        matches!(self.0, 0x10 | 0x20 | 0x30..=0x35)
    }

    /// Whether this is one of the error types 0x30..=0x35.
    pub const fn is_error(self) -> bool {
        matches!(self.0, 0x30..=0x35)
    }

    /// Whether this frame answers a request (ack or error).
    pub const fn is_answer(self) -> bool {
        self.0 == 0x20 || self.is_error()
    }

    /// The error code, for error frames.
    pub const fn error_code(self) -> Option<ErrorCode> {
        if self.is_error() {
            Some(ErrorCode(self.0))
        } else {
            None
        }
    }

    /// A short name: "request", "ack", "error 0x33 (decryption error)" is spelled by
    /// [`fmt::Display`]; this gives the one-word role.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x10 => "request",
            0x20 => "ack",
            0x30..=0x35 => "error",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameType(0x{:02x} {})", self.0, self)
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_code() {
            Some(code) => write!(f, "error 0x{:02x} ({})", self.0, code.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// An error frame's code (spec section 10.4). Kept as the raw byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    /// 0x30 unknown error.
    pub const UNKNOWN: ErrorCode = ErrorCode(0x30);
    /// 0x31 format error.
    pub const FORMAT: ErrorCode = ErrorCode(0x31);
    /// 0x32 validation error: the spec's answer to a request that fails validation.
    pub const VALIDATION: ErrorCode = ErrorCode(0x32);
    /// 0x33 decryption error.
    pub const DECRYPTION: ErrorCode = ErrorCode(0x33);
    /// 0x34 data segment format error.
    pub const DATA_FORMAT: ErrorCode = ErrorCode(0x34);
    /// 0x35 packet concatenation error: a split message was not completed in 500 ms.
    pub const CONCATENATION: ErrorCode = ErrorCode(0x35);

    /// The spec's description of the code.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x30 => "unknown error",
            0x31 => "format error",
            0x32 => "validation error",
            0x33 => "decryption error",
            0x34 => "data segment format error",
            0x35 => "packet concatenation error",
            _ => "not an error code",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02x} {}", self.0, self.name())
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first two bytes are not `2f 6e`.
    #[error("bad start marker {:02x}{:02x} (expected 2f6e)", found[0], found[1])]
    BadStartMarker {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// A version byte other than 0x01.
    #[error("unsupported version 0x{0:02x} (only 0x01 is defined)")]
    UnsupportedVersion(u8),
    /// A type outside 0x10, 0x20, 0x30..0x35.
    #[error("unknown frame type 0x{0:02x} (defined: 0x10, 0x20, 0x30..0x35)")]
    UnknownType(u8),
    /// The total length is smaller than the 11 bytes of header and trailer.
    #[error("total length {total_len} is shorter than the 11-byte frame overhead")]
    TotalTooShort {
        /// The declared total length.
        total_len: u16,
    },
    /// The message's data length is smaller than the data this frame carries (D1).
    #[error("data length {data_len} is less than the {carried} data bytes the frame carries (total length {total_len} - 11)")]
    DataLenTooShort {
        /// The declared total length.
        total_len: u16,
        /// The declared data length.
        data_len: u16,
        /// Data bytes this frame carries.
        carried: u16,
    },
    /// A buffer given as one frame holds bytes after the declared total length.
    #[error("{extra} bytes after the frame's declared total length")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The bytes where the declared total length ends are not `2f 6e`.
    #[error("bad end marker {:02x}{:02x} at the declared end of the frame (total length {total_len})", found[0], found[1])]
    BadEndMarker {
        /// The two bytes found there.
        found: [u8; 2],
        /// The declared total length.
        total_len: u16,
    },
}

impl FrameError {
    /// Whether the error is about the length fields (the analyzer's `bad-length`).
    pub const fn is_length_error(&self) -> bool {
        matches!(
            self,
            FrameError::TotalTooShort { .. }
                | FrameError::DataLenTooShort { .. }
                | FrameError::TrailingBytes { .. }
        )
    }
}

/// The result of trying to parse a frame at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The buffer holds the start of a frame (so far) but not all of it: at least this
    /// many more bytes are needed.
    Incomplete(usize),
    /// The bytes are not a valid frame.
    Invalid(FrameError),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Incomplete(n) => write!(f, "incomplete frame, {n} more bytes needed"),
            ParseError::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ParseError {}

/// The header fields of a frame, read before its length is known to be available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Version byte.
    pub version: u8,
    /// Type byte.
    pub frame_type: FrameType,
    /// Ref number.
    pub ref_num: u8,
    /// Total length of this frame.
    pub total_len: u16,
    /// Data length of the whole message.
    pub data_len: u16,
}

impl Header {
    /// Data bytes this frame carries, if the total length is at least the overhead.
    pub const fn carried(&self) -> Option<u16> {
        self.total_len.checked_sub(OVERHEAD as u16)
    }
}

type NomResult<'a, T> = nom::IResult<&'a [u8], T, nom::error::Error<&'a [u8]>>;

/// nom parser for the 9-byte header, streaming: a short input answers `Incomplete`.
fn header_fields(input: &[u8]) -> NomResult<'_, ([u8; 2], Header)> {
    let (input, m0) = be_u8(input)?;
    let (input, m1) = be_u8(input)?;
    let (input, version) = be_u8(input)?;
    let (input, frame_type) = be_u8(input)?;
    let (input, ref_num) = be_u8(input)?;
    let (input, total_len) = be_u16(input)?;
    let (input, data_len) = be_u16(input)?;
    Ok((
        input,
        (
            [m0, m1],
            Header {
                version,
                frame_type: FrameType(frame_type),
                ref_num,
                total_len,
                data_len,
            },
        ),
    ))
}

fn needed(n: Needed) -> usize {
    match n {
        Needed::Size(n) => n.get(),
        Needed::Unknown => 1,
    }
}

/// Checks the start marker, and as much of the header as `buf` holds, without requiring
/// the whole frame. Errors are reported in the order a receiver meets them.
fn check_prefix(buf: &[u8]) -> Result<(), ParseError> {
    let m0 = buf.first().copied();
    let m1 = buf.get(1).copied();
    match (m0, m1) {
        (Some(a), _) if a != MARKER[0] => {
            return Err(ParseError::Invalid(FrameError::BadStartMarker {
                found: [a, m1.unwrap_or(0)],
            }))
        }
        (Some(a), Some(b)) if b != MARKER[1] => {
            return Err(ParseError::Invalid(FrameError::BadStartMarker {
                found: [a, b],
            }))
        }
        _ => {}
    }
    if let Some(&v) = buf.get(field::VERSION) {
        if v != VERSION {
            return Err(ParseError::Invalid(FrameError::UnsupportedVersion(v)));
        }
    }
    if let Some(&t) = buf.get(field::TYPE) {
        if !FrameType(t).is_known() {
            return Err(ParseError::Invalid(FrameError::UnknownType(t)));
        }
    }
    Ok(())
}

/// Reads the header and checks the length fields (D1).
fn parse_header(buf: &[u8]) -> Result<Header, ParseError> {
    check_prefix(buf)?;
    if buf.len() < HEADER_LEN {
        return Err(ParseError::Incomplete(HEADER_LEN - buf.len()));
    }
    let header = match header_fields(buf) {
        Ok((_, (_, h))) => h,
        Err(nom::Err::Incomplete(n)) => return Err(ParseError::Incomplete(needed(n))),
        // be_u8/be_u16 only fail with Incomplete on streaming input.
        Err(_) => return Err(ParseError::Incomplete(1)),
    };
    let Some(carried) = header.carried() else {
        return Err(ParseError::Invalid(FrameError::TotalTooShort {
            total_len: header.total_len,
        }));
    };
    if header.data_len < carried {
        return Err(ParseError::Invalid(FrameError::DataLenTooShort {
            total_len: header.total_len,
            data_len: header.data_len,
            carried,
        }));
    }
    Ok(header)
}

/// Parses the frame at the start of `buf`: on success the frame (borrowing `buf`) and
/// the bytes after it. Never panics; `Incomplete(n)` says how many more bytes are
/// needed at least.
pub fn parse(buf: &[u8]) -> Result<(Frame<&[u8]>, &[u8]), ParseError> {
    let header = parse_header(buf)?;
    let total = usize::from(header.total_len);
    if buf.len() < total {
        return Err(ParseError::Incomplete(total - buf.len()));
    }
    let (frame, rest) = buf.split_at(total);
    let end = [
        frame.get(total - 2).copied().unwrap_or(0),
        frame.get(total - 1).copied().unwrap_or(0),
    ];
    if end != MARKER {
        return Err(ParseError::Invalid(FrameError::BadEndMarker {
            found: end,
            total_len: header.total_len,
        }));
    }
    Ok((Frame { buffer: frame }, rest))
}

/// nom-style entry point: `Incomplete` carries how many more bytes are needed, errors
/// carry the [`FrameError`].
pub fn frame(input: &[u8]) -> nom::IResult<&[u8], Frame<&[u8]>, FrameError> {
    match parse(input) {
        Ok((f, rest)) => Ok((rest, f)),
        Err(ParseError::Incomplete(n)) => Err(nom::Err::Incomplete(Needed::new(n))),
        Err(ParseError::Invalid(e)) => Err(nom::Err::Error(e)),
    }
}

impl<I> nom::error::ParseError<I> for FrameError {
    fn from_error_kind(_input: I, _kind: nom::error::ErrorKind) -> Self {
        FrameError::BadStartMarker { found: [0, 0] }
    }
    fn append(_input: I, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

/// Whether a stream that begins with `bytes` carries frames rather than text (a
/// TCP 9002 connection's first bytes, D6): the start marker followed by version
/// 0x01, or by another control byte (a frame with a bad version, to be reported as
/// one). Text never starts so: `/n` may begin Base64, but JSON text and Base64
/// hold no raw control bytes. Whitespace is not taken as a version. With fewer
/// than 3 bytes, whether they can still begin a frame.
pub fn begins_frames(bytes: &[u8]) -> bool {
    match bytes {
        [a, b, v, ..] => {
            [*a, *b] == MARKER
                && (*v == VERSION || (*v < 0x20 && !matches!(v, b'\t' | b'\n' | b'\r')))
        }
        short => MARKER.starts_with(short) && !short.is_empty(),
    }
}

/// Reads the header without checking version, type or end marker: the fields of a
/// frame that was rejected, for display. `None` if fewer than 9 bytes.
pub fn peek_header(buf: &[u8]) -> Option<Header> {
    header_fields(buf).ok().map(|(_, (_, h))| h)
}

/// A checked view over one frame's bytes.
///
/// Built by [`Frame::new_checked`] or [`parse`]; every accessor is then panic-free.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer that must hold exactly one valid frame (bytes after the declared
    /// total length are [`FrameError::TrailingBytes`]: use [`parse`] for a buffer that
    /// holds more).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let bytes = buffer.as_ref();
        let (_, rest) = parse(bytes)?;
        if !rest.is_empty() {
            return Err(ParseError::Invalid(FrameError::TrailingBytes {
                extra: rest.len(),
            }));
        }
        Ok(Frame { buffer })
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn byte(&self, at: usize) -> u8 {
        self.bytes().get(at).copied().unwrap_or(0)
    }

    fn u16_at(&self, range: core::ops::Range<usize>) -> u16 {
        match self.bytes().get(range) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }

    /// The version byte (always 0x01 for a checked frame).
    pub fn version(&self) -> u8 {
        self.byte(field::VERSION)
    }

    /// The frame type.
    pub fn frame_type(&self) -> FrameType {
        FrameType(self.byte(field::TYPE))
    }

    /// The ref number pairing a request with its answer.
    pub fn ref_num(&self) -> u8 {
        self.byte(field::REF)
    }

    /// Whether the ref is in the spec's range 0x01..=0x7f.
    pub fn ref_in_range(&self) -> bool {
        (0x01..=0x7f).contains(&self.ref_num())
    }

    /// The declared total length of this frame.
    pub fn total_len(&self) -> u16 {
        self.u16_at(field::TOTAL_LEN)
    }

    /// The declared data length of the whole message.
    pub fn data_len(&self) -> u16 {
        self.u16_at(field::DATA_LEN)
    }

    /// The data carried in this frame.
    pub fn data(&self) -> &[u8] {
        let b = self.bytes();
        b.get(field::DATA..b.len().saturating_sub(TRAILER_LEN))
            .unwrap_or(&[])
    }

    /// Whether this frame is a fragment of a split message (D1): the message's data
    /// length is larger than what this frame carries.
    pub fn is_fragment(&self) -> bool {
        usize::from(self.data_len()) > self.data().len()
    }

    /// Whether the frame carries more than the recommended 1024 data bytes.
    pub fn is_oversize(&self) -> bool {
        self.data().len() > MAX_FRAGMENT_DATA
    }

    /// The whole frame's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }

    /// The header fields.
    pub fn header(&self) -> Header {
        Header {
            version: self.version(),
            frame_type: self.frame_type(),
            ref_num: self.ref_num(),
            total_len: self.total_len(),
            data_len: self.data_len(),
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Frame<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("type", &self.frame_type())
            .field("ref", &self.ref_num())
            .field("total_len", &self.total_len())
            .field("data_len", &self.data_len())
            .finish()
    }
}

/// The owned description of a frame, for building one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRepr<'a> {
    /// Type byte.
    pub frame_type: FrameType,
    /// Ref number.
    pub ref_num: u8,
    /// The whole message's data length (equal to `data.len()` for an unsplit message).
    pub data_len: u16,
    /// The data carried in this frame.
    pub data: &'a [u8],
}

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The data does not fit the 16-bit length fields.
    #[error("{len} data bytes do not fit one frame (at most {max})")]
    TooLong {
        /// Data length asked for.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The declared message length is smaller than the data in the frame.
    #[error("data length {data_len} is less than the {carried} bytes carried")]
    DataLenTooShort {
        /// Declared length.
        data_len: u16,
        /// Bytes carried.
        carried: usize,
    },
}

impl<'a> FrameRepr<'a> {
    /// A single-frame message.
    pub fn new(frame_type: FrameType, ref_num: u8, data: &'a [u8]) -> Self {
        FrameRepr {
            frame_type,
            ref_num,
            data_len: u16::try_from(data.len()).unwrap_or(u16::MAX),
            data,
        }
    }

    /// An ack (0x20) with no data for `ref_num`.
    pub fn ack(ref_num: u8) -> FrameRepr<'static> {
        FrameRepr {
            frame_type: FrameType::ACK,
            ref_num,
            data_len: 0,
            data: &[],
        }
    }

    /// An error frame with no data for `ref_num`.
    pub fn error(code: ErrorCode, ref_num: u8) -> FrameRepr<'static> {
        FrameRepr {
            frame_type: FrameType(code.0),
            ref_num,
            data_len: 0,
            data: &[],
        }
    }

    /// The size of the built frame.
    pub fn buffer_len(&self) -> usize {
        OVERHEAD + self.data.len()
    }

    /// Appends the frame's bytes to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), BuildError> {
        let total = self.buffer_len();
        let total16 = u16::try_from(total).map_err(|_| BuildError::TooLong {
            len: self.data.len(),
            max: MAX_FRAME_LEN - OVERHEAD,
        })?;
        if usize::from(self.data_len) < self.data.len() {
            return Err(BuildError::DataLenTooShort {
                data_len: self.data_len,
                carried: self.data.len(),
            });
        }
        out.reserve(total);
        out.extend_from_slice(&MARKER);
        out.push(VERSION);
        out.push(self.frame_type.0);
        out.push(self.ref_num);
        out.extend_from_slice(&total16.to_be_bytes());
        out.extend_from_slice(&self.data_len.to_be_bytes());
        out.extend_from_slice(self.data);
        out.extend_from_slice(&MARKER);
        Ok(())
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BuildError> {
        let mut v = Vec::with_capacity(self.buffer_len());
        self.emit(&mut v)?;
        Ok(v)
    }
}

/// Splits a message into frames of at most `max_fragment` data bytes (the spec
/// recommends 1024), all with the same type and ref and the whole message's data
/// length (D1), and returns the concatenated bytes. An empty message is one frame.
pub fn split_message(
    frame_type: FrameType,
    ref_num: u8,
    data: &[u8],
    max_fragment: usize,
) -> Result<Vec<u8>, BuildError> {
    let data_len = u16::try_from(data.len()).map_err(|_| BuildError::TooLong {
        len: data.len(),
        max: MAX_MESSAGE_LEN,
    })?;
    let step = max_fragment.clamp(1, MAX_FRAME_LEN - OVERHEAD);
    let frames = data.len().div_ceil(step).max(1);
    let mut out = Vec::with_capacity(data.len() + frames * OVERHEAD);
    if data.is_empty() {
        FrameRepr::new(frame_type, ref_num, data).emit(&mut out)?;
    }
    for chunk in data.chunks(step) {
        FrameRepr {
            frame_type,
            ref_num,
            data_len,
            data: chunk,
        }
        .emit(&mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const SPEC_SAMPLE: &str = "2f6e011001007f00747b22636f6e74656e74223a227b5c22616d745c223a3130302c5c226368616e6e656c5c223a5c2277785c222c5c2266756e63547970655c223a312c5c226d6f64655c223a317d222c22646967657374223a223266306334363833653235613762393430373236353033333037306539303334227d2f6e";

    #[test]
    fn frames_begin_with_the_marker_and_a_control_byte() {
        assert!(begins_frames(&[0x2f, 0x6e, 0x01, 0x10]));
        assert!(
            begins_frames(&[0x2f, 0x6e, 0x02, 0x10]),
            "bad version: still frames"
        );
        assert!(begins_frames(&[0x2f, 0x6e, 0x00]));
        assert!(begins_frames(&[0x2f, 0x6e]) && begins_frames(&[0x2f]));
        for text in [
            &b"/n+Zk9"[..],
            b"/n\n",
            b"/n\r\n",
            b"/n\t",
            b"{\"a\"",
            b"",
            b"/x",
        ] {
            assert!(!begins_frames(text), "{text:?}");
        }
    }

    #[test]
    fn spec_sample_decodes_exactly() {
        let bytes = hex(SPEC_SAMPLE);
        let (f, rest) = parse(&bytes).unwrap();
        assert!(rest.is_empty());
        assert_eq!(f.version(), 1);
        assert_eq!(f.frame_type(), FrameType::REQUEST);
        assert_eq!(f.ref_num(), 1);
        assert_eq!(f.total_len(), 127);
        assert_eq!(f.data_len(), 116);
        assert_eq!(f.data().len(), 116);
        assert!(!f.is_fragment());
        assert_eq!(
            f.data(),
            br#"{"content":"{\"amt\":100,\"channel\":\"wx\",\"funcType\":1,\"mode\":1}","digest":"2f0c4683e25a7b9407265033070e9034"}"#
        );
    }

    #[test]
    fn incomplete_says_how_much_more() {
        let bytes = hex(SPEC_SAMPLE);
        assert_eq!(parse(&[]), Err(ParseError::Incomplete(9)));
        assert_eq!(parse(&bytes[..3]), Err(ParseError::Incomplete(6)));
        assert_eq!(parse(&bytes[..9]), Err(ParseError::Incomplete(118)));
        assert_eq!(parse(&bytes[..126]), Err(ParseError::Incomplete(1)));
        match frame(&bytes[..100]) {
            Err(nom::Err::Incomplete(Needed::Size(n))) => assert_eq!(n.get(), 27),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn distinct_errors() {
        assert_eq!(
            parse(&hex("2f6f01")),
            Err(ParseError::Invalid(FrameError::BadStartMarker {
                found: [0x2f, 0x6f]
            }))
        );
        assert_eq!(
            parse(&hex("2f6e022005000b00002f6e")),
            Err(ParseError::Invalid(FrameError::UnsupportedVersion(2)))
        );
        assert_eq!(
            parse(&hex("2f6e014005000b00002f6e")),
            Err(ParseError::Invalid(FrameError::UnknownType(0x40)))
        );
        assert_eq!(
            parse(&hex("2f6e012005000a0000")),
            Err(ParseError::Invalid(FrameError::TotalTooShort {
                total_len: 10
            }))
        );
        assert_eq!(
            parse(&hex("2f6e012005000d0001aabb2f6e")),
            Err(ParseError::Invalid(FrameError::DataLenTooShort {
                total_len: 13,
                data_len: 1,
                carried: 2
            }))
        );
        assert_eq!(
            parse(&hex("2f6e012005000b00002f6f")),
            Err(ParseError::Invalid(FrameError::BadEndMarker {
                found: [0x2f, 0x6f],
                total_len: 11
            }))
        );
    }

    #[test]
    fn vector_frames() {
        let ack = hex("2f6e012005000b00002f6e");
        let f = Frame::new_checked(&ack[..]).unwrap();
        assert_eq!(f.frame_type(), FrameType::ACK);
        assert_eq!((f.ref_num(), f.total_len(), f.data_len()), (5, 11, 0));
        assert!(f.data().is_empty());
        assert_eq!(FrameRepr::ack(5).to_bytes().unwrap(), ack);

        let err = hex("2f6e013309000b00002f6e");
        let f = Frame::new_checked(&err[..]).unwrap();
        assert_eq!(f.frame_type().error_code(), Some(ErrorCode::DECRYPTION));
        assert_eq!(f.frame_type().to_string(), "error 0x33 (decryption error)");
        assert_eq!(
            FrameRepr::error(ErrorCode::DECRYPTION, 9)
                .to_bytes()
                .unwrap(),
            err
        );
    }

    #[test]
    fn builder_round_trips_spec_sample() {
        let bytes = hex(SPEC_SAMPLE);
        let (f, _) = parse(&bytes).unwrap();
        let built = FrameRepr::new(FrameType::REQUEST, 1, f.data())
            .to_bytes()
            .unwrap();
        assert_eq!(built, bytes);
    }

    #[test]
    fn new_checked_rejects_trailing_bytes() {
        let mut ack = hex("2f6e012005000b00002f6e");
        ack.push(0);
        assert!(Frame::new_checked(&ack[..]).is_err());
    }

    #[test]
    fn split_sets_d1_lengths() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 7) as u8).collect();
        let bytes = split_message(FrameType::REQUEST, 0x11, &data, MAX_FRAGMENT_DATA).unwrap();
        let mut rest = &bytes[..];
        let mut sizes = vec![];
        let mut joined = vec![];
        while !rest.is_empty() {
            let (f, r) = parse(rest).unwrap();
            assert_eq!(f.data_len(), 2500);
            assert_eq!(f.ref_num(), 0x11);
            assert!(f.is_fragment());
            sizes.push(f.total_len());
            joined.extend_from_slice(f.data());
            rest = r;
        }
        assert_eq!(sizes, vec![1035, 1035, 463]);
        assert_eq!(joined, data);
    }

    #[test]
    fn split_empty_is_one_frame() {
        let bytes = split_message(FrameType::ACK, 3, &[], 1024).unwrap();
        assert_eq!(bytes, hex("2f6e012003000b00002f6e"));
    }

    #[test]
    fn too_long_message_is_an_error() {
        let data = vec![0u8; 70000];
        assert!(matches!(
            split_message(FrameType::REQUEST, 1, &data, 1024),
            Err(BuildError::TooLong { .. })
        ));
        assert!(FrameRepr::new(FrameType::REQUEST, 1, &data[..65530])
            .to_bytes()
            .is_err());
    }
}
