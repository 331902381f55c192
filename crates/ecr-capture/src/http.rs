//! Incremental HTTP/1.1 parser for one direction of a reassembled TCP stream.
//!
//! Feed it the bytes of a direction in order, in chunks of any size
//! ([`HttpParser::feed`]); tell it about holes ([`HttpParser::gap`]) and about the
//! end of the stream ([`HttpParser::finish`]). It emits complete messages
//! (request/status line, headers, body decoded from Content-Length or chunked
//! encoding, or read until the connection closes) and errors. Heads and chunk-size
//! lines are parsed by `httparse`; finding them in a stream that arrives in pieces,
//! resynchronising after damage, bodies, keep-alive and pipelining are done here.
//!
//! Untrusted input: header blocks are bounded (64 KiB by default), bodies too
//! (16 MiB). After an error or a gap the parser resynchronises on the next line that
//! looks like a request or status line (also when it follows garbage on the same
//! line), reporting how many bytes it skipped.

use std::collections::VecDeque;

use ecr_proto::value::CompactString;
use ecr_proto::Timestamp;

/// Longest chunk-size line accepted (with extensions).
const MAX_CHUNK_LINE: usize = 1024;
/// Methods recognised when resynchronising in the middle of a line.
const KNOWN_METHODS: [&[u8]; 9] = [
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];
/// Longest method token accepted in a request line.
const MAX_METHOD_LEN: usize = 20;

/// Bounds for [`HttpParser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest header block (start line + headers), and largest trailer block.
    pub max_header_bytes: usize,
    /// Largest body.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_header_bytes: 64 << 10,
            max_body_bytes: 16 << 20,
        }
    }
}

/// Request or response, with its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpKind {
    /// A request.
    Request {
        /// Method, as sent (e.g. "POST").
        method: CompactString,
        /// Request target (e.g. "/api/payment").
        path: CompactString,
    },
    /// A response.
    Response {
        /// Status code.
        status: u16,
        /// Reason phrase (may be empty).
        reason: CompactString,
    },
}

/// One complete HTTP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMessage {
    /// Request or response line.
    pub kind: HttpKind,
    /// Protocol version as sent ("HTTP/1.1").
    pub version: CompactString,
    /// Header fields in order, names as sent (compare case-insensitively, or use
    /// [`HttpMessage::header`]).
    pub headers: Vec<(CompactString, CompactString)>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(CompactString, CompactString)>,
    /// The body, with chunked encoding removed.
    pub body: Vec<u8>,
    /// Capture time of the chunk holding the first byte of the message.
    pub ts_first_byte: Timestamp,
    /// Capture time of the chunk holding the last byte of the message.
    pub ts_last_byte: Timestamp,
    /// Stream offset of the first byte (counting gaps, like the TCP layer).
    pub offset: u64,
    /// The body was chunked.
    pub chunked: bool,
    /// The body had no length and ended with the connection.
    pub ended_by_close: bool,
}

impl HttpMessage {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.kind, HttpKind::Request { .. })
    }
}

/// What went wrong in a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Bytes at a message boundary are not a request or status line.
    #[error("not an HTTP request or status line")]
    BadStartLine,
    /// The header block exceeds the bound.
    #[error("HTTP header block larger than {limit} bytes")]
    HeaderTooLarge {
        /// The bound.
        limit: usize,
    },
    /// The body exceeds the bound.
    #[error("HTTP body of {len} bytes exceeds the limit of {limit}")]
    BodyTooLarge {
        /// Length declared or reached.
        len: u64,
        /// The bound.
        limit: usize,
    },
    /// Content-Length is not a number, or several disagree.
    #[error("invalid Content-Length {0:?}")]
    BadContentLength(String),
    /// A chunk-size line or chunk terminator is malformed.
    #[error("malformed chunked encoding: {0}")]
    BadChunk(&'static str),
    /// A hole in the stream cut a message.
    #[error("a gap of {missing} bytes in the stream cut an HTTP message")]
    Interrupted {
        /// Bytes missing.
        missing: u64,
    },
    /// The stream ended inside a message.
    #[error("the stream ended inside an HTTP message ({0})")]
    Incomplete(&'static str),
}

/// Output of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEvent {
    /// A complete message.
    Message(HttpMessage),
    /// A problem; the parser has resynchronised or will.
    Error {
        /// Stream offset of the message (or bytes) concerned.
        offset: u64,
        /// Capture time.
        ts: Timestamp,
        /// What.
        error: HttpError,
    },
    /// Bytes skipped while looking for the next message.
    Skipped {
        /// Stream offset of the first skipped byte.
        offset: u64,
        /// How many.
        bytes: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCrlf,
    Trailers,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a message boundary.
    Start,
    /// Looking for something that looks like a start line.
    Resync,
    /// A start line begins at `buf[0]`; waiting for the end of the header block.
    Headers,
    /// Reading a body.
    Body(BodyMode),
}

#[derive(Debug)]
struct Partial {
    msg: HttpMessage,
    trailer_bytes: usize,
    /// Bytes its header fields take, counted once (see [`HttpParser::held`]).
    header_bytes: usize,
}

fn header_cost(msg: &HttpMessage) -> usize {
    msg.headers
        .iter()
        .map(|(n, v)| n.capacity() + v.capacity() + 48)
        .sum()
}

/// Incremental HTTP/1.1 parser for one direction of a connection.
#[derive(Debug)]
pub struct HttpParser {
    cfg: HttpConfig,
    state: State,
    /// Unconsumed bytes.
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    buf_offset: u64,
    /// (stream offset just past a fed chunk, its capture time), for bytes in `buf`.
    chunk_times: VecDeque<(u64, Timestamp)>,
    /// Where to resume looking for the end of the header block.
    scan_from: usize,
    cur: Option<Partial>,
    /// Bytes skipped and not reported yet, and where they started.
    skipped: u64,
    skipped_at: u64,
    last_ts: Timestamp,
}

impl Default for HttpParser {
    fn default() -> Self {
        Self::new(HttpConfig::default())
    }
}

impl HttpParser {
    /// A parser with the given bounds.
    pub fn new(cfg: HttpConfig) -> Self {
        HttpParser {
            cfg,
            state: State::Start,
            buf: Vec::new(),
            buf_offset: 0,
            chunk_times: VecDeque::new(),
            scan_from: 0,
            cur: None,
            skipped: 0,
            skipped_at: 0,
            last_ts: Timestamp(0),
        }
    }

    /// True when the parser is between messages with nothing buffered.
    pub fn is_idle(&self) -> bool {
        self.state == State::Start && self.buf.is_empty()
    }

    /// True while a message's body is being read (its header block is complete).
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// Feeds the next bytes of the stream, captured at `ts`.
    pub fn feed(&mut self, ts: Timestamp, data: &[u8], out: &mut Vec<HttpEvent>) {
        if data.is_empty() {
            return;
        }
        self.last_ts = ts;
        self.buf.extend_from_slice(data);
        let end = self.buf_offset + self.buf.len() as u64;
        match self.chunk_times.back_mut() {
            Some(last) if last.1 == ts => last.0 = end,
            _ => self.chunk_times.push_back((end, ts)),
        }
        self.run(out);
    }

    /// Bytes held: unconsumed input, the message in progress (headers and body)
    /// and the chunk-time log. For a memory budget over many parsers.
    pub fn held(&self) -> usize {
        let cur = self
            .cur
            .as_ref()
            .map_or(0, |p| p.msg.body.len() + p.header_bytes + p.trailer_bytes);
        self.buf.len() + cur + self.chunk_times.len() * 16
    }

    /// Bytes reserved from the allocator (capacities behind [`HttpParser::held`]).
    pub fn reserved(&self) -> usize {
        let cur = self.cur.as_ref().map_or(0, |p| {
            p.msg.body.capacity() + p.header_bytes + p.trailer_bytes
        });
        self.buf.capacity() + cur + self.chunk_times.capacity() * 16
    }

    /// Gives up the message in progress and everything buffered, silently (the
    /// caller reports why, e.g. a memory budget), and looks for the next start
    /// line in the bytes that follow. Returns the bytes released.
    pub fn abandon(&mut self) -> usize {
        let held = self.held();
        self.buf_offset += self.buf.len() as u64;
        self.buf = Vec::new();
        self.chunk_times = VecDeque::new();
        self.cur = None;
        self.scan_from = 0;
        self.skipped = 0;
        self.state = State::Resync;
        held
    }

    /// Reports a hole of `missing` bytes: a message in progress is lost (an
    /// `Interrupted` error) and the parser resynchronises.
    pub fn gap(&mut self, ts: Timestamp, missing: u64, out: &mut Vec<HttpEvent>) {
        self.last_ts = ts;
        let mid_message = self.cur.is_some() || !matches!(self.state, State::Start | State::Resync);
        if mid_message || !self.buf.is_empty() {
            let offset = self.cur.as_ref().map_or(self.buf_offset, |p| p.msg.offset);
            if mid_message {
                out.push(HttpEvent::Error {
                    offset,
                    ts,
                    error: HttpError::Interrupted { missing },
                });
            } else {
                self.note_skipped(self.buf_offset, self.buf.len() as u64);
            }
        }
        self.flush_skipped(out);
        self.buf_offset += self.buf.len() as u64 + missing;
        self.buf.clear();
        self.chunk_times.clear();
        self.cur = None;
        self.scan_from = 0;
        self.state = State::Resync;
    }

    /// The stream ended (FIN, RST or end of capture): completes a response whose body
    /// runs until the close, reports a message cut short, and resets.
    pub fn finish(&mut self, ts: Timestamp, out: &mut Vec<HttpEvent>) {
        self.last_ts = ts;
        match self.state {
            State::Body(BodyMode::UntilClose) => {
                if let Some(mut p) = self.cur.take() {
                    p.msg.ended_by_close = true;
                    p.msg.ts_last_byte = self.last_ts_of_body(p.msg.ts_last_byte);
                    out.push(HttpEvent::Message(p.msg));
                }
            }
            State::Start | State::Resync => {
                let rest = self
                    .buf
                    .iter()
                    .filter(|b| !matches!(b, b'\r' | b'\n'))
                    .count();
                if rest > 0 {
                    if self.state == State::Start {
                        out.push(HttpEvent::Error {
                            offset: self.buf_offset,
                            ts,
                            error: HttpError::Incomplete("start line"),
                        });
                    }
                    self.note_skipped(self.buf_offset, self.buf.len() as u64);
                }
            }
            State::Headers => out.push(HttpEvent::Error {
                offset: self.buf_offset,
                ts,
                error: HttpError::Incomplete("header block"),
            }),
            State::Body(_) => {
                let offset = self.cur.as_ref().map_or(self.buf_offset, |p| p.msg.offset);
                out.push(HttpEvent::Error {
                    offset,
                    ts,
                    error: HttpError::Incomplete("body"),
                });
            }
        }
        self.flush_skipped(out);
        self.buf_offset += self.buf.len() as u64;
        self.buf.clear();
        self.chunk_times.clear();
        self.cur = None;
        self.scan_from = 0;
        self.state = State::Start;
    }

    fn last_ts_of_body(&self, fallback: Timestamp) -> Timestamp {
        self.chunk_times
            .back()
            .map_or(fallback, |c| c.1)
            .max(fallback)
    }

    /// Capture time of the byte at stream offset `abs`.
    fn ts_at(&self, abs: u64) -> Timestamp {
        self.chunk_times
            .iter()
            .find(|(end, _)| *end > abs)
            .map_or(self.last_ts, |c| c.1)
    }

    fn note_skipped(&mut self, at: u64, n: u64) {
        if n == 0 {
            return;
        }
        if self.skipped == 0 {
            self.skipped_at = at;
        }
        self.skipped += n;
    }

    fn flush_skipped(&mut self, out: &mut Vec<HttpEvent>) {
        if self.skipped > 0 {
            out.push(HttpEvent::Skipped {
                offset: self.skipped_at,
                bytes: self.skipped,
            });
            self.skipped = 0;
        }
    }

    fn error(&mut self, at: usize, error: HttpError, out: &mut Vec<HttpEvent>) {
        let offset = self
            .cur
            .as_ref()
            .map_or(self.buf_offset + at as u64, |p| p.msg.offset);
        let ts = self.last_ts;
        out.push(HttpEvent::Error { offset, ts, error });
        self.cur = None;
        self.state = State::Resync;
    }

    /// Parses as much of `buf` as possible, then drops what was consumed.
    fn run(&mut self, out: &mut Vec<HttpEvent>) {
        let mut i = 0usize;
        loop {
            let before = (i, self.state);
            i = match self.state {
                State::Start => self.step_start(i, out),
                State::Resync => self.step_resync(i, out),
                State::Headers => self.step_headers(i, out),
                State::Body(mode) => self.step_body(i, mode, out),
            };
            if (i, self.state) == before {
                break;
            }
        }
        let i = i.min(self.buf.len());
        self.buf.drain(..i);
        self.buf_offset += i as u64;
        self.scan_from = self.scan_from.saturating_sub(i);
        while self.chunk_times.len() > 1
            && self
                .chunk_times
                .front()
                .is_some_and(|c| c.0 <= self.buf_offset)
        {
            self.chunk_times.pop_front();
        }
    }

    fn step_start(&mut self, mut i: usize, out: &mut Vec<HttpEvent>) -> usize {
        // Empty lines between messages are allowed.
        while matches!(self.buf.get(i), Some(b'\r' | b'\n')) {
            i += 1;
        }
        let rest = self.buf.get(i..).unwrap_or_default();
        if rest.is_empty() {
            return i;
        }
        match memchr::memchr(b'\n', rest) {
            Some(n) => {
                if is_start_line(trim_cr(rest.get(..n).unwrap_or_default())) {
                    self.begin_headers(i)
                } else {
                    self.error(i, HttpError::BadStartLine, out);
                    i
                }
            }
            None => {
                if !plausible_prefix(rest) || rest.len() > self.cfg.max_header_bytes {
                    self.error(i, HttpError::BadStartLine, out);
                }
                i
            }
        }
    }

    fn begin_headers(&mut self, i: usize) -> usize {
        self.state = State::Headers;
        // Header parsing works from buf[0]: drop what precedes the start line now.
        self.buf.drain(..i);
        self.buf_offset += i as u64;
        self.scan_from = 0;
        0
    }

    fn step_resync(&mut self, mut i: usize, out: &mut Vec<HttpEvent>) -> usize {
        loop {
            let rest = self.buf.get(i..).unwrap_or_default();
            if rest.is_empty() {
                return i;
            }
            let Some(n) = memchr::memchr(b'\n', rest) else {
                if !plausible_prefix(rest) && find_start_in_line(rest).is_none()
                    || rest.len() > self.cfg.max_header_bytes
                {
                    // Keep a tail that might be the beginning of a start line.
                    let mut keep_from = resync_keep_from(rest);
                    if rest.len() - keep_from > self.cfg.max_header_bytes {
                        keep_from = rest.len().saturating_sub(8);
                    }
                    let drop = keep_from;
                    self.note_skipped(self.buf_offset + i as u64, drop as u64);
                    return i + drop;
                }
                return i;
            };
            let line = trim_cr(rest.get(..n).unwrap_or_default());
            if let Some(s) = find_start_in_line(line) {
                self.note_skipped(self.buf_offset + i as u64, s as u64);
                self.flush_skipped(out);
                return self.begin_headers(i + s);
            }
            self.note_skipped(self.buf_offset + i as u64, (n + 1) as u64);
            i += n + 1;
        }
    }

    fn step_headers(&mut self, i: usize, out: &mut Vec<HttpEvent>) -> usize {
        debug_assert_eq!(i, 0);
        let Some(end) = find_header_end(&self.buf, &mut self.scan_from) else {
            if self.buf.len() > self.cfg.max_header_bytes {
                let limit = self.cfg.max_header_bytes;
                self.error(0, HttpError::HeaderTooLarge { limit }, out);
                // Skip the start line so resync looks further on.
                return memchr::memchr(b'\n', &self.buf).map_or(self.buf.len(), |n| n + 1);
            }
            return 0;
        };
        if end > self.cfg.max_header_bytes {
            let limit = self.cfg.max_header_bytes;
            self.error(0, HttpError::HeaderTooLarge { limit }, out);
            return memchr::memchr(b'\n', &self.buf).map_or(self.buf.len(), |n| n + 1);
        }
        let block = self.buf.get(..end).unwrap_or_default();
        let Some((kind, version, headers)) = parse_head(block) else {
            // httparse refused a head whose start line the resync heuristics accepted
            // (e.g. "HTTP/0.1"): skip that line, or resync would find it again forever.
            self.error(0, HttpError::BadStartLine, out);
            return memchr::memchr(b'\n', &self.buf).map_or(self.buf.len(), |n| n + 1);
        };
        let ts_first = self.ts_at(self.buf_offset);
        let msg = HttpMessage {
            kind,
            version,
            headers,
            trailers: Vec::new(),
            body: Vec::new(),
            ts_first_byte: ts_first,
            ts_last_byte: self.ts_at(self.buf_offset + end as u64 - 1),
            offset: self.buf_offset,
            chunked: false,
            ended_by_close: false,
        };
        let mode = match body_mode(&msg, self.cfg.max_body_bytes) {
            Ok(m) => m,
            Err(e) => {
                self.cur = Some(Partial {
                    header_bytes: header_cost(&msg),
                    msg,
                    trailer_bytes: 0,
                });
                self.error(end, e, out);
                return end;
            }
        };
        let mut p = Partial {
            header_bytes: header_cost(&msg),
            msg,
            trailer_bytes: 0,
        };
        p.msg.chunked = matches!(mode, Some(BodyMode::ChunkSize));
        self.cur = Some(p);
        match mode {
            None => self.complete(out),
            Some(m) => self.state = State::Body(m),
        }
        end
    }

    fn complete(&mut self, out: &mut Vec<HttpEvent>) {
        if let Some(p) = self.cur.take() {
            out.push(HttpEvent::Message(p.msg));
        }
        self.state = State::Start;
    }

    fn take_body(&mut self, i: usize, want: u64) -> usize {
        let avail = self.buf.len().saturating_sub(i);
        let n = usize::try_from(want).unwrap_or(usize::MAX).min(avail);
        if n == 0 {
            return 0;
        }
        let last_ts = self.ts_at(self.buf_offset + (i + n) as u64 - 1);
        if let (Some(p), Some(bytes)) = (self.cur.as_mut(), self.buf.get(i..i + n)) {
            p.msg.body.extend_from_slice(bytes);
            p.msg.ts_last_byte = last_ts;
        }
        n
    }

    fn step_body(&mut self, i: usize, mode: BodyMode, out: &mut Vec<HttpEvent>) -> usize {
        let body_len = self.cur.as_ref().map_or(0, |p| p.msg.body.len());
        match mode {
            BodyMode::Length(rem) => {
                let n = self.take_body(i, rem);
                let rem = rem - n as u64;
                if rem == 0 {
                    self.complete(out);
                } else {
                    self.state = State::Body(BodyMode::Length(rem));
                }
                i + n
            }
            BodyMode::UntilClose => {
                let n = self.take_body(i, u64::MAX);
                if body_len + n > self.cfg.max_body_bytes {
                    let limit = self.cfg.max_body_bytes;
                    self.error(
                        i,
                        HttpError::BodyTooLarge {
                            len: (body_len + n) as u64,
                            limit,
                        },
                        out,
                    );
                }
                i + n
            }
            BodyMode::ChunkData(rem) => {
                let n = self.take_body(i, rem);
                let rem = rem - n as u64;
                self.state = State::Body(if rem == 0 {
                    BodyMode::ChunkCrlf
                } else {
                    BodyMode::ChunkData(rem)
                });
                i + n
            }
            BodyMode::ChunkCrlf => match (self.buf.get(i), self.buf.get(i + 1)) {
                (Some(b'\n'), _) => {
                    self.state = State::Body(BodyMode::ChunkSize);
                    i + 1
                }
                (Some(b'\r'), Some(b'\n')) => {
                    self.state = State::Body(BodyMode::ChunkSize);
                    i + 2
                }
                (None, _) | (Some(b'\r'), None) => i,
                _ => {
                    self.error(
                        i,
                        HttpError::BadChunk("chunk data not followed by CRLF"),
                        out,
                    );
                    i
                }
            },
            BodyMode::ChunkSize => {
                let rest = self.buf.get(i..).unwrap_or_default();
                let Some(n) = memchr::memchr(
                    b'\n',
                    rest.get(..rest.len().min(MAX_CHUNK_LINE))
                        .unwrap_or_default(),
                ) else {
                    if rest.len() >= MAX_CHUNK_LINE {
                        self.error(i, HttpError::BadChunk("chunk-size line too long"), out);
                    }
                    return i;
                };
                let line = rest.get(..=n).unwrap_or_default();
                let Some(size) = parse_chunk_size(line) else {
                    self.error(i, HttpError::BadChunk("invalid chunk size"), out);
                    return i;
                };
                let total = (body_len as u64).saturating_add(size);
                if total > self.cfg.max_body_bytes as u64 {
                    let limit = self.cfg.max_body_bytes;
                    self.error(i, HttpError::BodyTooLarge { len: total, limit }, out);
                    return i;
                }
                self.state = State::Body(if size == 0 {
                    BodyMode::Trailers
                } else {
                    BodyMode::ChunkData(size)
                });
                i + n + 1
            }
            BodyMode::Trailers => {
                let rest = self.buf.get(i..).unwrap_or_default();
                let Some(n) = memchr::memchr(b'\n', rest) else {
                    let used = self.cur.as_ref().map_or(0, |p| p.trailer_bytes);
                    if used + rest.len() > self.cfg.max_header_bytes {
                        let limit = self.cfg.max_header_bytes;
                        self.error(i, HttpError::HeaderTooLarge { limit }, out);
                    }
                    return i;
                };
                let line = trim_cr(rest.get(..n).unwrap_or_default());
                let last_ts = self.ts_at(self.buf_offset + (i + n) as u64);
                if line.is_empty() {
                    if let Some(p) = self.cur.as_mut() {
                        p.msg.ts_last_byte = last_ts;
                    }
                    self.complete(out);
                    return i + n + 1;
                }
                let limit = self.cfg.max_header_bytes;
                let mut too_large = false;
                if let Some(p) = self.cur.as_mut() {
                    p.trailer_bytes += n + 1;
                    too_large = p.trailer_bytes > limit;
                    if !too_large {
                        p.msg.trailers.extend(parse_fields(std::iter::once(line)));
                    }
                }
                if too_large {
                    self.error(i, HttpError::HeaderTooLarge { limit }, out);
                    return i;
                }
                i + n + 1
            }
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Could `rest` (no newline yet) still become a request or status line?
fn plausible_prefix(rest: &[u8]) -> bool {
    let head = rest.split(|&b| b == b' ').next().unwrap_or_default();
    if rest.len() > head.len() {
        // The first token is complete.
        return head.starts_with(b"HTTP/")
            || (!head.is_empty()
                && head.len() <= MAX_METHOD_LEN
                && head
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_'));
    }
    head.first().is_some_and(|b| b.is_ascii_uppercase())
        && head.len() <= MAX_METHOD_LEN.max(8)
        && head.iter().all(|&b| is_token_byte(b) || b == b'/')
}

/// Whether `v` is an HTTP version token, `HTTP/d.d`.
fn is_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', maj, b'.', min]
        if maj.is_ascii_digit() && min.is_ascii_digit())
}

/// Whether `line` is a request or status line (checked in place: the message's
/// head is parsed by httparse once it is whole).
fn is_start_line(line: &[u8]) -> bool {
    if line.starts_with(b"HTTP/") {
        let mut parts = line.splitn(3, |&b| b == b' ');
        let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
            return false;
        };
        return is_version(version) && code.len() == 3 && code.iter().all(u8::is_ascii_digit);
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_version(version)
        && parts.next().is_none()
        && !method.is_empty()
        && method.len() <= MAX_METHOD_LEN
        && method
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        && !target.is_empty()
        && target.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80)
}

/// Where the last possible beginning of a start line in an unfinished line is: the
/// last known method or "HTTP/", and at least the last 8 bytes (a partial token).
fn resync_keep_from(rest: &[u8]) -> usize {
    let found = KNOWN_METHODS
        .iter()
        .chain(std::iter::once(&&b"HTTP/"[..]))
        .filter_map(|m| memchr::memmem::rfind(rest, m))
        .max();
    let tail = rest.len().saturating_sub(8);
    found.map_or(tail, |p| p.min(tail))
}

/// Finds where a start line begins inside `line` (which may start with garbage):
/// a status line at an "HTTP/1." occurrence, or a request line ending with one,
/// whose method is a known one or a whole uppercase token.
fn find_start_in_line(line: &[u8]) -> Option<usize> {
    if is_start_line(line) {
        return Some(0);
    }
    for q in memchr::memmem::find_iter(line, b"HTTP/") {
        let tail = line.get(q..).unwrap_or_default();
        if q > 0 && is_start_line(tail) && tail.len() >= 12 {
            return Some(q);
        }
        // Request line: "... METHOD SP target SP HTTP/x.y" ending the line.
        if tail.len() != 8 || q < 2 || line.get(q - 1) != Some(&b' ') {
            continue;
        }
        let before = line.get(..q - 1).unwrap_or_default();
        let Some(sp) = memchr::memrchr(b' ', before) else {
            continue;
        };
        let head = before.get(..sp).unwrap_or_default();
        let run = head
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_uppercase())
            .count();
        let run_start = head.len() - run;
        let token = head.get(run_start..).unwrap_or_default();
        let start = KNOWN_METHODS
            .iter()
            .filter(|m| token.ends_with(m))
            .map(|m| head.len() - m.len())
            .min()
            .unwrap_or(run_start);
        if is_start_line(line.get(start..).unwrap_or_default()) {
            return Some(start);
        }
    }
    None
}

/// Looks for the empty line ending a header block; returns the offset just past it.
/// `scan_from` remembers progress between calls so that byte-by-byte input stays
/// linear.
fn find_header_end(buf: &[u8], scan_from: &mut usize) -> Option<usize> {
    let mut from = *scan_from;
    while let Some(n) = memchr::memchr(b'\n', buf.get(from..).unwrap_or_default()) {
        let nl = from + n;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            (None, _) | (Some(b'\r'), None) => {
                *scan_from = nl;
                return None;
            }
            _ => from = nl + 1,
        }
    }
    *scan_from = buf.len().saturating_sub(1);
    None
}

/// Parses header lines ("name: value", with obsolete line folding).
fn parse_fields<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<(CompactString, CompactString)> {
    let mut fields: Vec<(CompactString, CompactString)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1
                    .push_str(String::from_utf8_lossy(line.trim_ascii()).as_ref());
            }
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default().trim_ascii();
        let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
        if name.is_empty() {
            continue;
        }
        fields.push((
            CompactString::from_utf8_lossy(name),
            CompactString::from_utf8_lossy(value),
        ));
    }
    fields
}

/// Parses a chunk-size line (with its line end) through `httparse`. Leading blanks
/// and a bare LF line end are tolerated, as they were before `httparse` read them.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.trim_ascii_start();
    let parsed = if line.ends_with(b"\r\n") {
        httparse::parse_chunk_size(line)
    } else {
        // A bare LF: hand httparse the same line ending in CRLF (the line is at most
        // MAX_CHUNK_LINE bytes, so this copy is bounded).
        let mut crlf = Vec::with_capacity(line.len() + 1);
        crlf.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        crlf.extend_from_slice(b"\r\n");
        httparse::parse_chunk_size(&crlf)
    };
    match parsed {
        Ok(httparse::Status::Complete((_, size))) => Some(size),
        _ => None,
    }
}

/// Header fields held on the stack while `httparse` reads a head; longer heads (at
/// most `max_header_bytes`, checked before) get a vector sized by their line count.
const STACK_HEADERS: usize = 32;

/// A parsed head: start line, protocol version ("HTTP/1.1"), header fields.
type Head = (HttpKind, CompactString, Vec<(CompactString, CompactString)>);

/// Parses a complete head (start line, fields, empty line) with `httparse`: the start
/// line strictly (HTTP/1.0 or 1.1), header lines leniently (invalid ones are skipped,
/// obsolete line folding is joined), as a sniffer must read what peers actually send.
fn parse_head(block: &[u8]) -> Option<Head> {
    let lines = memchr::memchr_iter(b'\n', block).count();
    if lines <= STACK_HEADERS {
        let mut fields = [httparse::EMPTY_HEADER; STACK_HEADERS];
        parse_head_into(block, &mut fields)
    } else {
        let mut fields = vec![httparse::EMPTY_HEADER; lines];
        parse_head_into(block, &mut fields)
    }
}

fn parse_head_into<'b>(block: &'b [u8], fields: &mut [httparse::Header<'b>]) -> Option<Head> {
    let mut cfg = httparse::ParserConfig::default();
    cfg.ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true);
    let version = |minor: Option<u8>| match minor {
        Some(0) => CompactString::const_new("HTTP/1.0"),
        None | Some(1) => CompactString::const_new("HTTP/1.1"),
        Some(m) => CompactString::from(format!("HTTP/1.{m}")),
    };
    if block.starts_with(b"HTTP/") {
        let mut resp = httparse::Response::new(fields);
        if !matches!(
            cfg.parse_response(&mut resp, block),
            Ok(httparse::Status::Complete(_))
        ) {
            return None;
        }
        let kind = HttpKind::Response {
            status: resp.code?,
            reason: CompactString::new(resp.reason.unwrap_or_default()),
        };
        Some((kind, version(resp.version), collect_fields(resp.headers)))
    } else {
        let mut req = httparse::Request::new(fields);
        if !matches!(
            cfg.parse_request(&mut req, block),
            Ok(httparse::Status::Complete(_))
        ) {
            return None;
        }
        let kind = HttpKind::Request {
            method: CompactString::new(req.method?),
            path: CompactString::new(req.path?),
        };
        Some((kind, version(req.version), collect_fields(req.headers)))
    }
}

/// The fields `httparse` found, values trimmed; folded continuation lines (which
/// httparse keeps inside the value) are joined with single spaces.
fn collect_fields(fields: &[httparse::Header<'_>]) -> Vec<(CompactString, CompactString)> {
    fields
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| {
            if memchr::memchr(b'\n', h.value).is_none() {
                let value = CompactString::from_utf8_lossy(h.value.trim_ascii());
                return (CompactString::new(h.name), value);
            }
            let value = h
                .value
                .split(|&b| b == b'\n')
                .map(|l| trim_cr(l).trim_ascii())
                .filter(|l| !l.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ");
            (CompactString::new(h.name), CompactString::from(value))
        })
        .collect()
}

/// Decides how the body is delimited. `Ok(None)` means no body.
fn body_mode(msg: &HttpMessage, max_body: usize) -> Result<Option<BodyMode>, HttpError> {
    if let HttpKind::Response { status, .. } = msg.kind {
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(None);
        }
    }
    let chunked = msg
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .last()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
    if chunked {
        return Ok(Some(BodyMode::ChunkSize));
    }
    let mut length: Option<u64> = None;
    for (_, v) in msg
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in v.split(',') {
            let part = part.trim();
            let n: u64 =
                if !part.is_empty() && part.len() <= 19 && part.bytes().all(|b| b.is_ascii_digit())
                {
                    part.parse()
                        .map_err(|_| HttpError::BadContentLength(v.to_string()))?
                } else {
                    return Err(HttpError::BadContentLength(v.to_string()));
                };
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadContentLength(v.to_string()));
            }
            length = Some(n);
        }
    }
    match length {
        Some(n) if n > max_body as u64 => Err(HttpError::BodyTooLarge {
            len: n,
            limit: max_body,
        }),
        Some(0) => Ok(None),
        Some(n) => Ok(Some(BodyMode::Length(n))),
        None if msg.is_request() => Ok(None),
        None => Ok(Some(BodyMode::UntilClose)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<HttpEvent> {
        let mut p = HttpParser::default();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            p.feed(Timestamp(i as i64), c, &mut out);
        }
        p.finish(Timestamp(99), &mut out);
        out
    }

    fn messages(ev: &[HttpEvent]) -> Vec<&HttpMessage> {
        ev.iter()
            .filter_map(|e| {
                if let HttpEvent::Message(m) = e {
                    Some(m)
                } else {
                    None
                }
            })
            .collect()
    }

    const REQ: &[u8] = b"POST /api/pay HTTP/1.1\r\nHost: pos\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"b12\"}";
    const RESP_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n";

    #[test]
    fn content_length_request() {
        let ev = parse_all(&[REQ]);
        assert_eq!(ev.len(), 1, "{ev:?}");
        let m = messages(&ev)[0];
        assert_eq!(
            m.kind,
            HttpKind::Request {
                method: "POST".into(),
                path: "/api/pay".into()
            }
        );
        assert_eq!(m.version, "HTTP/1.1");
        assert_eq!(m.header("content-type"), Some("application/json"));
        assert_eq!(m.header("CONTENT-LENGTH"), Some("11"));
        assert_eq!(m.body, b"{\"a\":\"b12\"}");
        assert_eq!(m.offset, 0);
    }

    #[test]
    fn chunked_response_with_trailers() {
        let ev = parse_all(&[RESP_CHUNKED]);
        assert_eq!(ev.len(), 1, "{ev:?}");
        let m = messages(&ev)[0];
        assert_eq!(
            m.kind,
            HttpKind::Response {
                status: 200,
                reason: "OK".into()
            }
        );
        assert_eq!(m.body, b"hello world");
        assert!(m.chunked);
        assert_eq!(m.trailers, vec![("X-Trailer".into(), "yes".into())]);
    }

    #[test]
    fn pipelined_and_keepalive() {
        let mut all = Vec::new();
        all.extend_from_slice(REQ);
        all.extend_from_slice(b"\r\n"); // stray empty line between messages
        all.extend_from_slice(REQ);
        all.extend_from_slice(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
        let ev = parse_all(&[&all]);
        let ms = messages(&ev);
        assert_eq!(ms.len(), 3, "{ev:?}");
        assert_eq!(ev.len(), 3);
        assert_eq!(
            ms[2].kind,
            HttpKind::Request {
                method: "GET".into(),
                path: "/status".into()
            }
        );
        assert_eq!(ms[1].offset, (REQ.len() + 2) as u64);
    }

    #[test]
    fn split_at_every_byte_position() {
        let mut stream = Vec::new();
        stream.extend_from_slice(REQ);
        stream.extend_from_slice(RESP_CHUNKED);
        stream.extend_from_slice(b"HTTP/1.0 204 No Content\r\n\r\n");
        let whole = parse_all(&[&stream]);
        assert_eq!(messages(&whole).len(), 3);
        for cut in 0..=stream.len() {
            let ev = parse_all(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(ev.len(), 3, "cut {cut}: {ev:?}");
            for (a, b) in messages(&ev).iter().zip(messages(&whole)) {
                assert_eq!(
                    (&a.kind, &a.headers, &a.body, &a.trailers),
                    (&b.kind, &b.headers, &b.body, &b.trailers)
                );
            }
        }
        // byte by byte
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let ev = parse_all(&chunks);
        assert_eq!(messages(&ev).len(), 3);
        let m = messages(&ev)[0];
        assert_eq!(m.ts_first_byte, Timestamp(0));
        assert_eq!(m.ts_last_byte, Timestamp(REQ.len() as i64 - 1));
    }

    #[test]
    fn response_until_close() {
        let ev = parse_all(&[b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nsome", b" body"]);
        let m = messages(&ev)[0];
        assert_eq!(m.body, b"some body");
        assert!(m.ended_by_close);
        assert_eq!(m.ts_last_byte, Timestamp(1));
    }

    #[test]
    fn garbage_then_resync() {
        let mut s = b"\x00\x01garbage line\r\nmore junk ".to_vec();
        s.extend_from_slice(REQ);
        let ev = parse_all(&[&s]);
        assert!(
            matches!(
                ev[0],
                HttpEvent::Error {
                    error: HttpError::BadStartLine,
                    offset: 0,
                    ..
                }
            ),
            "{ev:?}"
        );
        assert_eq!(
            ev[1],
            HttpEvent::Skipped {
                offset: 0,
                bytes: 26
            }
        );
        assert_eq!(messages(&ev).len(), 1);
        assert_eq!(messages(&ev)[0].offset, 26);
    }

    #[test]
    fn gap_resyncs_mid_line() {
        let mut p = HttpParser::default();
        let mut out = Vec::new();
        p.feed(Timestamp(1), &REQ[..40], &mut out);
        p.gap(Timestamp(2), 100, &mut out);
        assert!(matches!(
            out[0],
            HttpEvent::Error {
                error: HttpError::Interrupted { missing: 100 },
                offset: 0,
                ..
            }
        ));
        // the rest of a lost body, then a new request on the same line
        let mut s = b"\"tail\"}".to_vec();
        s.extend_from_slice(REQ);
        p.feed(Timestamp(3), &s, &mut out);
        p.finish(Timestamp(4), &mut out);
        let ms = messages(&out);
        assert_eq!(ms.len(), 1, "{out:?}");
        assert_eq!(ms[0].offset, 140 + 7);
        assert!(out.contains(&HttpEvent::Skipped {
            offset: 140,
            bytes: 7
        }));
    }

    #[test]
    fn limits() {
        let cfg = HttpConfig {
            max_header_bytes: 64,
            max_body_bytes: 16,
        };
        let mut p = HttpParser::new(cfg);
        let mut out = Vec::new();
        let mut big = b"POST / HTTP/1.1\r\n".to_vec();
        for _ in 0..10 {
            big.extend_from_slice(b"X-Long: aaaaaaaaaa\r\n");
        }
        p.feed(Timestamp(0), &big, &mut out);
        assert!(
            matches!(
                out[0],
                HttpEvent::Error {
                    error: HttpError::HeaderTooLarge { limit: 64 },
                    ..
                }
            ),
            "{out:?}"
        );
        out.clear();
        let mut p = HttpParser::new(cfg);
        p.feed(
            Timestamp(0),
            b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n",
            &mut out,
        );
        assert!(matches!(
            out[0],
            HttpEvent::Error {
                error: HttpError::BodyTooLarge { len: 17, .. },
                ..
            }
        ));
        out.clear();
        let mut p = HttpParser::new(cfg);
        p.feed(
            Timestamp(0),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            &mut out,
        );
        assert!(
            matches!(
                out[0],
                HttpEvent::Error {
                    error: HttpError::BadChunk(_),
                    ..
                }
            ),
            "{out:?}"
        );
        out.clear();
        let mut p = HttpParser::new(cfg);
        p.feed(
            Timestamp(0),
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            &mut out,
        );
        assert!(matches!(
            out[0],
            HttpEvent::Error {
                error: HttpError::BadContentLength(_),
                ..
            }
        ));
        // an endless line without newline stays bounded
        let mut p = HttpParser::new(cfg);
        let mut out = Vec::new();
        for _ in 0..1000 {
            p.feed(Timestamp(0), b"POSTPOSTPOST", &mut out);
        }
        assert!(p.buf.len() <= 64 + 12);
    }

    #[test]
    fn head_refused_by_httparse_does_not_loop() {
        // Found by the http fuzz target: a start line the resync accepts but httparse
        // refuses (version 0.1) once made the parser emit errors forever.
        let ev = parse_all(&[b"POST /api HTTP/0.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        let errors = ev
            .iter()
            .filter(|e| matches!(e, HttpEvent::Error { .. }))
            .count();
        assert_eq!(errors, 1, "{ev:?}");
        let msgs = messages(&ev);
        assert_eq!(msgs.len(), 1, "{ev:?}");
        assert!(matches!(&msgs[0].kind, HttpKind::Request { method, .. } if method == "GET"));
    }

    #[test]
    fn incomplete_at_end() {
        let ev = parse_all(&[&REQ[..REQ.len() - 3]]);
        assert!(matches!(
            ev[0],
            HttpEvent::Error {
                error: HttpError::Incomplete("body"),
                ..
            }
        ));
        let ev = parse_all(&[b"POST / HTTP/1.1\r\nHost"]);
        assert!(matches!(
            ev[0],
            HttpEvent::Error {
                error: HttpError::Incomplete("header block"),
                ..
            }
        ));
    }

    #[test]
    fn status_without_body_and_continue() {
        let ev = parse_all(&[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]);
        let ms = messages(&ev);
        assert_eq!(ms.len(), 3, "{ev:?}");
        assert_eq!(ms[2].body, b"ok");
    }
}
