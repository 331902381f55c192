//! Writing records: the `text` tree (in the style of `tshark -V`), `jsonl` (one
//! record per line) and `json` (one document). The live taps use the same writers,
//! so a script reads a live tap exactly as it reads `analyze`.
//!
//! The text writer passes every string that came from a capture (addresses and
//! device names, HTTP lines, content and response values, finding details) through
//! [`ecr_proto::text::escape_terminal`], so that a value cannot move the cursor,
//! retitle the window or forge a line; JSON escaping already covers jsonl and json.

use std::io::{self, Write};

use std::borrow::Cow;

use ecr_proto::catalogue::{self, Channel, FuncType, RespCode};
use ecr_proto::text::escape_terminal;
use ecr_proto::value::{Object, Value};

use crate::findings::Severity;
use crate::record::{
    FindingRecord, HttpInfo, MessageRecord, Record, Role, SummaryRecord, TransactionRecord,
};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A readable tree.
    Text,
    /// One JSON object per line.
    Jsonl,
    /// One JSON document.
    Json,
    /// A ladder diagram in text, one line per arrow ([`crate::ladder`]).
    Ladder,
}

/// Something that writes records.
pub trait RecordWriter {
    /// Writes one record.
    fn write(&mut self, record: &Record) -> io::Result<()>;
    /// Ends the output.
    fn finish(&mut self) -> io::Result<()>;
}

/// How the text output shows capture times.
#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    /// UTC, labelled `UTC`.
    #[default]
    Utc,
    /// Local time with its UTC offset (`+01:00`): the function gives the offset in
    /// seconds east of UTC at a time (epoch seconds), from the caller's time zone
    /// database, so that daylight saving is right for every timestamp.
    Local(fn(i64) -> i32),
}

/// Options of the writers (most are the text output's).
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    /// ANSI colours.
    pub color: bool,
    /// How times are shown.
    pub clock: Clock,
    /// `jsonl` gathers its lines into blocks of [`JSONL_BLOCK`] bytes before they
    /// reach the output (and the rest at [`RecordWriter::finish`]): one copy of
    /// every output byte fewer, for output to a file or a pipe read at the end.
    /// Off for an output read as it comes (a live tap, `analyze -` from a pipe),
    /// where each record must show when it is complete.
    pub blocks: bool,
}

/// The block of [`TextOptions::blocks`].
pub const JSONL_BLOCK: usize = 1 << 16;

/// Makes the writer for `format` (text times in UTC).
pub fn writer<'a, W: Write + 'a>(
    format: Format,
    out: W,
    color: bool,
) -> Box<dyn RecordWriter + 'a> {
    writer_with(
        format,
        out,
        TextOptions {
            color,
            clock: Clock::Utc,
            blocks: false,
        },
    )
}

/// Makes the writer for `format` with text options.
pub fn writer_with<'a, W: Write + 'a>(
    format: Format,
    out: W,
    opts: TextOptions,
) -> Box<dyn RecordWriter + 'a> {
    match format {
        Format::Text => Box::new(TextWriter::new(out, opts.color).with_clock(opts.clock)),
        Format::Jsonl => Box::new(JsonlWriter {
            out,
            buf: Vec::new(),
            times: Default::default(),
            blocks: opts.blocks,
        }),
        Format::Json => Box::new(JsonWriter {
            out,
            first: true,
            buf: Vec::new(),
            times: Default::default(),
        }),
        Format::Ladder => {
            Box::new(crate::ladder::LadderWriter::new(out, opts.color).with_clock(opts.clock))
        }
    }
}

/// `--format jsonl`.
pub struct JsonlWriter<W: Write> {
    out: W,
    /// One line, serialised here first: serde writes many small pieces, which a
    /// `Vec` takes inline while `out` (often a `Box<dyn Write>`) would take each
    /// through a call.
    buf: Vec<u8>,
    /// Recent capture times as text.
    times: crate::record::TimeCache,
    /// See [`TextOptions::blocks`]: `buf` then holds whole lines up to a block.
    blocks: bool,
}

/// Serialises `record` at the end of `buf`.
fn render(
    buf: &mut Vec<u8>,
    times: &mut crate::record::TimeCache,
    record: &Record,
) -> io::Result<()> {
    if !crate::record::write_json_fast(record, buf, times) {
        serde_json::to_writer(&mut *buf, record).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Writes `buf` to `out` and empties it, written or not, keeping a block's worth
/// of capacity, not the largest record ever seen.
fn write_out(out: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<()> {
    let result = out.write_all(buf);
    buf.clear();
    if buf.capacity() > 1 << 20 {
        buf.shrink_to(JSONL_BLOCK * 2);
    }
    result
}

impl<W: Write> RecordWriter for JsonlWriter<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let start = self.buf.len();
        if let Err(e) = render(&mut self.buf, &mut self.times, record) {
            // The lines before this one are whole.
            self.buf.truncate(start);
            return Err(e);
        }
        self.buf.push(b'\n');
        if self.blocks && self.buf.len() < JSONL_BLOCK {
            return Ok(());
        }
        write_out(&mut self.out, &mut self.buf)
    }
    fn finish(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_out(&mut self.out, &mut self.buf)?;
        }
        self.out.flush()
    }
}

impl<W: Write> Drop for JsonlWriter<W> {
    /// Lines gathered in a block still reach the output when the writer is
    /// dropped without [`RecordWriter::finish`] (an analysis that stopped at an
    /// error): nothing already decoded is lost.
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.out.write_all(&self.buf);
            let _ = self.out.flush();
        }
    }
}

/// `--format json`: `{"records":[...]}`, written as records come.
pub struct JsonWriter<W: Write> {
    out: W,
    first: bool,
    /// See [`JsonlWriter`].
    buf: Vec<u8>,
    /// See [`JsonlWriter`].
    times: crate::record::TimeCache,
}

impl<W: Write> RecordWriter for JsonWriter<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.out.write_all(if self.first {
            b"{\"records\":[\n"
        } else {
            b",\n"
        })?;
        self.first = false;
        self.buf.clear();
        render(&mut self.buf, &mut self.times, record)?;
        write_out(&mut self.out, &mut self.buf)
    }
    fn finish(&mut self) -> io::Result<()> {
        if self.first {
            self.out.write_all(b"{\"records\":[\n")?;
        }
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()
    }
}

/// ANSI styles, or none.
#[derive(Clone, Copy)]
pub(crate) struct Style {
    pub(crate) on: bool,
}

impl Style {
    pub(crate) fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub(crate) fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub(crate) fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn severity(&self, s: Severity) -> String {
        let code = match s {
            Severity::Error => "1;31",
            Severity::Warning => "33",
            Severity::Info => "36",
        };
        self.paint(code, s.as_str())
    }
}

/// `--format text`.
pub struct TextWriter<W: Write> {
    out: W,
    style: Style,
    /// The message whose block was printed last, while nothing else followed it:
    /// only its findings are indented under it.
    open_message: Option<u64>,
    clock: Clock,
}

/// A string from a capture, made safe for a terminal.
fn esc(s: &str) -> Cow<'_, str> {
    escape_terminal(s)
}

/// Splits capture time into whole seconds and microseconds.
fn split_ts(ts: f64) -> (i64, i64) {
    let secs = ts.floor() as i64;
    let micros = ((ts - secs as f64) * 1e6).round().min(999_999.0) as i64;
    (secs, micros)
}

/// `YYYY-MM-DD`, `HH:MM:SS` of seconds since the epoch.
fn civil(secs: i64) -> ((i64, u32, u32), (i64, i64, i64)) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    (
        civil_from_days(days),
        (rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Formats capture time with its zone: `2026-11-25 23:06:58.516736 +01:00` in local
/// time, `2026-11-25 22:06:58.516736 UTC` in UTC.
pub fn format_time(ts: f64, clock: Clock) -> String {
    if ts == 0.0 || !ts.is_finite() {
        return "-".to_string();
    }
    let (secs, micros) = split_ts(ts);
    let (offset, label) = match clock {
        Clock::Utc => (0, "UTC".to_string()),
        Clock::Local(f) => {
            // Offsets beyond a day are nonsense from a broken zone file: use UTC.
            let off = f(secs);
            let off = if off.abs() < 86_400 { off } else { 0 };
            let sign = if off < 0 { '-' } else { '+' };
            let a = off.unsigned_abs();
            (off, format!("{sign}{:02}:{:02}", a / 3600, a % 3600 / 60))
        }
    };
    let ((y, m, d), (hh, mm, ss)) = civil(secs.saturating_add(i64::from(offset)));
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{micros:06} {label}")
}

/// Capture time as ISO 8601 in UTC with microseconds (`2026-11-25T22:06:58.516736Z`),
/// the `time` field of jsonl records; none for an unknown (zero) time.
pub fn iso_utc(ts: f64) -> Option<String> {
    let mut out = Vec::with_capacity(27);
    write_iso_utc(&mut out, ts, false).then(|| String::from_utf8(out).unwrap_or_default())
}

/// Appends [`iso_utc`]'s text to `out` (in quotes when `quoted`, as a JSON string);
/// `false`, and nothing appended, for an unknown (zero) time. Digits are written
/// by hand: this runs for every jsonl record.
pub(crate) fn write_iso_utc(out: &mut Vec<u8>, ts: f64, quoted: bool) -> bool {
    if ts == 0.0 || !ts.is_finite() {
        return false;
    }
    let (secs, micros) = split_ts(ts);
    if (0..=999_999).contains(&micros) {
        if let Some(head) = second_text(secs) {
            // `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` built on the stack, appended with one
            // copy of a known length (with or without its quotes).
            let mut text = *b"\"0000-00-00T00:00:00.000000Z\"";
            if let Some(d) = text.get_mut(1..20) {
                d.copy_from_slice(&head);
            }
            // Two digits at a time (micros < 1,000,000).
            let m = micros as usize;
            for (at, pair) in [(21, m / 10_000), (23, m / 100 % 100), (25, m % 100)] {
                if let (Some(d), Some(p)) =
                    (text.get_mut(at..at + 2), PAIRS.get(2 * pair..2 * pair + 2))
                {
                    d.copy_from_slice(p);
                }
            }
            if quoted {
                out.extend_from_slice(&text);
            } else if let Some(t) = text.get(1..28) {
                out.extend_from_slice(t);
            }
            return true;
        }
    }
    if quoted {
        out.push(b'"');
    }
    let ((y, m, d), (hh, mm, ss)) = civil(secs);
    let text = format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{micros:06}Z");
    out.extend_from_slice(text.as_bytes());
    if quoted {
        out.push(b'"');
    }
    true
}

/// `00` to `99`, two bytes each.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `YYYY-MM-DDTHH:MM:SS` of seconds since the epoch for years 0-9999 (`None`
/// outside them). Records of one capture come many to a second: the last second
/// formatted is kept (per thread) and reused.
fn second_text(secs: i64) -> Option<[u8; 19]> {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<Option<(i64, [u8; 19])>> = const { Cell::new(None) };
    }
    if let Some((s, text)) = LAST.with(Cell::get) {
        if s == secs {
            return Some(text);
        }
    }
    let ((y, m, d), (hh, mm, ss)) = civil(secs);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let mut t = *b"0000-00-00T00:00:00";
    fn put(t: &mut [u8; 19], at: usize, width: usize, n: i64) {
        let mut n = n;
        if let Some(field) = t.get_mut(at..at + width) {
            for slot in field.iter_mut().rev() {
                *slot = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
    }
    put(&mut t, 0, 4, y);
    put(&mut t, 5, 2, i64::from(m));
    put(&mut t, 8, 2, i64::from(d));
    put(&mut t, 11, 2, hh);
    put(&mut t, 14, 2, mm);
    put(&mut t, 17, 2, ss);
    LAST.with(|c| c.set(Some((secs, t))));
    Some(t)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS.get(u).unwrap_or(&"GiB"))
    }
}

/// Text from a capture with its control characters escaped (`\u{1b}`), for a
/// terminal.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl<W: Write> TextWriter<W> {
    /// A text writer; `color` turns on ANSI colours.
    pub fn new(out: W, color: bool) -> Self {
        TextWriter {
            out,
            style: Style { on: color },
            open_message: None,
            clock: Clock::Utc,
        }
    }

    /// Shows times by `clock` (UTC unless set).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn message(&mut self, m: &MessageRecord) -> io::Result<()> {
        let s = self.style;
        let what = match m.role {
            Role::Request => match (m.func_type, m.func_name) {
                (Some(ft), Some(name)) => format!("{name} ({ft})"),
                (Some(ft), None) => format!("func_type {ft}"),
                _ => "request".to_string(),
            },
            Role::Response => match &m.respcd {
                Some(rc) => format!("response {}", esc(rc)),
                None => "response".to_string(),
            },
            Role::Ack => "ack".to_string(),
            Role::ErrorFrame => "error frame".to_string(),
            Role::Preflight if m.http.as_ref().is_some_and(|h| h.status.is_some()) => {
                "CORS preflight answer".to_string()
            }
            Role::Preflight => "CORS preflight".to_string(),
        };
        let route = if m.transport == crate::record::Transport::Serial {
            format!("{} -> {}", esc(&m.src), esc(&m.dst))
        } else {
            format!(
                "{} -> {}  {}",
                esc(&m.src),
                esc(&m.dst),
                m.direction.arrow()
            )
        };
        if m.role == Role::Preflight {
            // One line: what the browser asked, or the answer and its time.
            let detail = match &m.http {
                Some(HttpInfo {
                    method: Some(meth),
                    path: Some(path),
                    ..
                }) => format!("{meth} {path}"),
                Some(HttpInfo {
                    status: Some(st),
                    reason,
                    ..
                }) => format!(
                    "{st} {}{}",
                    reason.as_deref().unwrap_or(""),
                    m.answer_ms
                        .map(|ms| format!(" after {ms:.1} ms"))
                        .unwrap_or_default()
                ),
                _ => String::new(),
            };
            return writeln!(
                self.out,
                "{} {}  {}  {} {}{}  {}",
                s.bold(&format!("Message {}", m.index)),
                what,
                format_time(m.ts, self.clock),
                m.transport.as_str().to_uppercase(),
                route,
                m.packet
                    .map(|p| format!("  (packet {p})"))
                    .unwrap_or_default(),
                escape_controls(&detail)
            );
        }
        writeln!(
            self.out,
            "{} {}  {}  {} {}{}",
            s.bold(&format!("Message {}", m.index)),
            s.bold(&what),
            format_time(m.ts, self.clock),
            m.transport.as_str().to_uppercase(),
            route,
            m.packet
                .map(|p| format!("  (packet {p})"))
                .unwrap_or_default()
        )?;
        if let Some(h) = &m.http {
            match (&h.method, &h.path, h.status) {
                (Some(meth), Some(path), _) => {
                    writeln!(self.out, "    HTTP: {} {}", esc(meth), esc(path))?
                }
                (_, _, Some(st)) => writeln!(
                    self.out,
                    "    HTTP: {st} {}",
                    esc(h.reason.as_deref().unwrap_or(""))
                )?,
                _ => {}
            }
        }
        if let Some(rule) = m.framing {
            writeln!(self.out, "    TCP framing: {rule} (D6)")?;
        }
        if let Some(f) = &m.frame {
            let kind = ecr_proto::frame::FrameType(f.frame_type);
            writeln!(
                self.out,
                "    Frame: marker 2f6e, version {}, type 0x{:02x} {}, ref {}, total length {}, data length {}{}",
                f.version,
                f.frame_type,
                kind,
                m.ref_num.unwrap_or(0),
                f.total_len,
                f.data_len,
                if f.fragments > 1 {
                    format!(", reassembled from {} fragments", f.fragments)
                } else {
                    String::new()
                }
            )?;
            self.fragments(&f.parts)?;
        }
        if let Some(ms) = m.answer_ms {
            let verdict = if ms > 1000.0 {
                s.paint("1;31", "late: the limit is 1000 ms")
            } else {
                "in time".to_string()
            };
            writeln!(
                self.out,
                "    Answers request ref {} after {ms:.1} ms ({verdict})",
                m.ref_num.unwrap_or(0)
            )?;
        }
        match m.gap {
            Some("tail") => writeln!(
                self.out,
                "    TCP gap: the tail of a message whose start the capture lost; not a request of its own"
            )?,
            Some(_) => writeln!(
                self.out,
                "    TCP gap: answers a request the capture lost in a TCP gap"
            )?,
            None => {}
        }
        if matches!(m.role, Role::Ack | Role::ErrorFrame) {
            return Ok(());
        }
        let mut env = vec![];
        if let Some(d) = &m.dialect {
            env.push(esc(d).into_owned());
        }
        if let Some(k) = &m.key {
            env.push(format!(
                "decrypted with key #{} ({})",
                k.index, k.interpretation
            ));
        }
        if m.role == Role::Request {
            let digest = match (&m.digest_value, m.digest) {
                (Some(v), st) => format!("digest {} {st}", esc(v)),
                (None, st) => format!("digest {st}"),
            };
            env.push(digest);
        }
        env.push(format!("{} bytes", m.bytes));
        writeln!(self.out, "    Envelope: {}", env.join(", "))?;
        if let Some(c) = &m.content {
            writeln!(self.out, "    Content:")?;
            self.content(&c.with_data())?;
        }
        if let Some(r) = &m.response {
            writeln!(self.out, "    Response:")?;
            self.response(&r.with_data())?;
        }
        if let Some(raw) = &m.raw {
            writeln!(self.out, "    Body: {}", s.dim(&esc(&format!("{raw:?}"))))?;
        }
        Ok(())
    }

    /// The frame layer of a split message: one line per fragment with its header
    /// fields and the time since the previous fragment (the 500 ms rule). Very long
    /// sets show their first and last fragments.
    fn fragments(&mut self, parts: &[crate::record::FragmentInfo]) -> io::Result<()> {
        const HEAD: usize = 16;
        const TAIL: usize = 4;
        let n = parts.len();
        for (k, p) in parts.iter().enumerate() {
            if n > HEAD + TAIL + 1 && k == HEAD {
                writeln!(self.out, "        ... {} more fragments", n - HEAD - TAIL)?;
            }
            if n > HEAD + TAIL + 1 && (HEAD..n - TAIL).contains(&k) {
                continue;
            }
            writeln!(
                self.out,
                "        fragment {} of {n}: total length {}, data length {}, carries {} bytes, offset {}, {}{}",
                k + 1,
                p.total_len,
                p.data_len,
                p.carried,
                p.offset,
                format_time(p.ts, self.clock),
                p.gap_ms
                    .map(|g| format!(" (+{g:.1} ms after the previous fragment)"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }

    fn content(&mut self, c: &Object) -> io::Result<()> {
        for (k, v) in c.iter() {
            let text = v.to_display_string();
            let text = esc(&text);
            let note = match k {
                "func_type" => FuncType::from_value(v)
                    .and_then(FuncType::name)
                    .map(str::to_string),
                "channel" => v.as_str().map(|ch| match Channel::lookup(ch) {
                    Some(c) => {
                        let types: Vec<String> = c
                            .pay_types
                            .iter()
                            .map(|(mode, t)| match mode {
                                catalogue::QrMode::Cpm => format!("{t} CPM"),
                                catalogue::QrMode::Mpm => format!("{t} MPM"),
                                catalogue::QrMode::Single => t.to_string(),
                            })
                            .collect();
                        format!("{} -> PayType {}", c.description, types.join(" / "))
                    }
                    None => "not in the spec".to_string(),
                }),
                "amt" => Some("amount in dollars".to_string()),
                other => catalogue::describe_request_field(other).map(str::to_string),
            };
            match note {
                Some(n) => writeln!(
                    self.out,
                    "        {}: {text}  {}",
                    esc(k),
                    self.style.dim(&format!("({n})"))
                )?,
                None => writeln!(self.out, "        {}: {text}", esc(k))?,
            }
        }
        Ok(())
    }

    fn response(&mut self, r: &Object) -> io::Result<()> {
        for (k, v) in r.iter() {
            match (k, v) {
                ("data", Value::Object(data)) => {
                    writeln!(self.out, "        data:")?;
                    for (dk, dv) in data.iter() {
                        let mut note = catalogue::describe_data_field(None, dk).map(str::to_string);
                        if dk == "txcurrcd" {
                            if let Some(a) = dv.as_str().and_then(catalogue::currency_alpha) {
                                note = Some(format!("Currency: {a}"));
                            }
                        }
                        if dk == "busicd" {
                            if let Some((ch, _)) = dv.as_str().and_then(Channel::for_pay_type) {
                                note = Some(format!("PayType of {} ({})", ch.code, ch.description));
                            }
                        }
                        let text = dv.to_display_string();
                        let (dk, text) = (esc(dk), esc(&text));
                        match note {
                            Some(n) => writeln!(
                                self.out,
                                "            {dk}: {text}  {}",
                                self.style.dim(&format!("({n})"))
                            )?,
                            None => writeln!(self.out, "            {dk}: {text}")?,
                        }
                    }
                }
                ("respcd", v) => {
                    let text = v.to_display_string();
                    let text = esc(&text);
                    let meaning = RespCode::from_value(v).and_then(RespCode::meaning);
                    match meaning {
                        Some(mn) => writeln!(
                            self.out,
                            "        respcd: {text}  {}",
                            self.style.dim(&format!("({mn})"))
                        )?,
                        None => writeln!(self.out, "        respcd: {text}")?,
                    }
                }
                (k, v) => writeln!(
                    self.out,
                    "        {}: {}",
                    esc(k),
                    esc(&v.to_display_string())
                )?,
            }
        }
        Ok(())
    }

    fn finding(&mut self, f: &FindingRecord) -> io::Result<()> {
        let s = self.style;
        // Under its message's block only when that block was just printed; a finding
        // about an earlier message (e.g. unanswered-at-end) stands on its own.
        let under = f.message.is_some() && f.message == self.open_message;
        let indent = if under { "    " } else { "" };
        let place = if under {
            String::new()
        } else {
            let addr = match (&f.src, &f.dst) {
                (Some(a), Some(b)) => format!("  {} -> {}", esc(a), esc(b)),
                _ => String::new(),
            };
            format!(
                "  {}{}{}{}",
                format_time(f.ts, self.clock),
                addr,
                f.packet
                    .map(|p| format!("  (packet {p})"))
                    .unwrap_or_default(),
                f.message
                    .map(|m| format!("(message {m})"))
                    .filter(|m| !f.detail.contains(m.as_str()))
                    .map(|m| format!("  {m}"))
                    .unwrap_or_default()
            )
        };
        writeln!(
            self.out,
            "{indent}{} {} {}{place}: {}",
            s.paint(
                match f.severity {
                    Severity::Error => "1;31",
                    Severity::Warning => "33",
                    Severity::Info => "36",
                },
                "!"
            ),
            s.severity(f.severity),
            s.bold(f.code.as_str()),
            esc(&f.detail)
        )?;
        writeln!(
            self.out,
            "{indent}    {}",
            s.dim(&format!("rule: {}", f.rule))
        )
    }

    fn transaction(&mut self, t: &TransactionRecord) -> io::Result<()> {
        let what = match (t.func_type, t.func_name) {
            (Some(ft), Some(n)) => format!("{n} ({ft})"),
            (Some(ft), None) => format!("func_type {ft}"),
            _ => "request".into(),
        };
        let mut extra = vec![];
        if let Some(a) = &t.amt {
            extra.push(esc(a).into_owned());
        }
        if let Some(c) = &t.channel {
            extra.push(esc(c).into_owned());
        }
        if let Some(o) = &t.out_trade_no {
            extra.push(format!("out_trade_no {}", esc(o)));
        }
        if let Some(s) = &t.syssn {
            extra.push(format!("syssn {}", esc(s)));
        }
        let rc = match t.respcd.as_deref() {
            Some(rc) => {
                let meaning = rc
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| RespCode(c).meaning())
                    .unwrap_or("");
                format!("{} {meaning}", esc(rc))
            }
            None => "no respcd".into(),
        };
        writeln!(
            self.out,
            "{} {what} {}-> {} after {:.1} ms  {}",
            self.style.bold("Transaction:"),
            if extra.is_empty() {
                String::new()
            } else {
                format!("{} ", extra.join(" "))
            },
            rc.trim_end(),
            t.latency_ms,
            self.style.dim(&format!(
                "(messages {} -> {})",
                t.request.map_or("?".into(), |n| n.to_string()),
                t.response.map_or("?".into(), |n| n.to_string())
            ))
        )
    }

    fn summary(&mut self, s: &SummaryRecord) -> io::Result<()> {
        let st = self.style;
        writeln!(self.out, "{}", st.bold("Summary"))?;
        if !s.files.is_empty() {
            writeln!(self.out, "    files: {}", esc(&s.files.join(", ")))?;
        }
        writeln!(
            self.out,
            "    {} packets, {}, {} messages, {} transactions",
            s.packets,
            human_bytes(s.bytes),
            s.messages,
            s.transactions
        )?;
        if !s.func_types.is_empty() {
            let parts: Vec<String> = s
                .func_types
                .iter()
                .map(|(k, v)| {
                    let name = k
                        .parse::<u16>()
                        .ok()
                        .and_then(|c| FuncType(c).name())
                        .map(|n| format!("{n} ({k})"))
                        .unwrap_or_else(|| esc(k).into_owned());
                    format!("{name} x{v}")
                })
                .collect();
            writeln!(self.out, "    requests by func_type: {}", parts.join(", "))?;
        }
        if !s.channels.is_empty() {
            let parts: Vec<String> = s
                .channels
                .iter()
                .map(|(k, v)| format!("{} x{v}", esc(k)))
                .collect();
            writeln!(self.out, "    payments by channel: {}", parts.join(", "))?;
        }
        if !s.respcd.is_empty() {
            let parts: Vec<String> = s
                .respcd
                .iter()
                .map(|(k, v)| format!("{} x{v}", esc(k)))
                .collect();
            writeln!(self.out, "    responses by respcd: {}", parts.join(", "))?;
        }
        if let Some(d) = &s.drops {
            writeln!(
                self.out,
                "    lost by the tap: {} packet(s) by the kernel, {} by the interface, {} by the analyzer's queue; {} output record(s)",
                d.kernel, d.interface, d.queue, d.output
            )?;
        }
        if let Some(l) = &s.latency_ms {
            writeln!(
                self.out,
                "    latency (ms): min {:.1}, median {:.1}, p95 {:.1}, max {:.1}",
                l.min, l.median, l.p95, l.max
            )?;
        }
        for d in &s.usb_devices {
            let who = match d.ecr {
                Some("host") => "cash register = USB host, terminal = the adapter's far side",
                Some(_) => "cash register = USB device side, terminal = USB host",
                None => "no ECR frames",
            };
            writeln!(
                self.out,
                "    USB device {} ({}): {who}",
                esc(&d.device),
                esc(&d.link)
            )?;
            if let Some(why) = &d.oriented_by {
                writeln!(self.out, "        because {}", esc(why))?;
            }
            if let Some(l) = &d.line {
                writeln!(
                    self.out,
                    "        line settings: {} (SET_LINE_CODING at packet {}, {} request(s)){}",
                    esc(&l.settings),
                    l.packet,
                    l.requests,
                    if l.spec {
                        String::new()
                    } else {
                        format!("  {}", st.paint("33", "differs from spec 10.9: 9600 8N1"))
                    }
                )?;
            }
            writeln!(
                self.out,
                "        line bytes: {} host -> device, {} device -> host",
                d.bytes_from_host, d.bytes_from_device
            )?;
        }
        for k in &s.unused_keys {
            writeln!(
                self.out,
                "    key {} (bound to {}) matched no traffic: check the address in the key file",
                k.key, k.bound_to
            )?;
        }
        if !s.terminals_without_key.is_empty() {
            let list: Vec<String> = s.terminals_without_key.to_vec();
            writeln!(
                self.out,
                "    terminals with no key: {} (bind one with ADDRESS=KEY in the key file, or give an unbound key)",
                list.join(", ")
            )?;
        }
        if s.findings.is_empty() {
            writeln!(self.out, "    findings: none")?;
        } else {
            writeln!(self.out, "    findings:")?;
            let mut rows: Vec<_> = s.findings.iter().collect();
            rows.sort_by_key(|(c, n)| (std::cmp::Reverse(c.severity()), std::cmp::Reverse(**n)));
            for (code, n) in rows {
                writeln!(
                    self.out,
                    "        {:<8} {:<22} x{n}",
                    st.severity(code.severity()),
                    code.as_str()
                )?;
            }
        }
        Ok(())
    }
}

impl<W: Write> RecordWriter for TextWriter<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        match record {
            Record::Message(m) => {
                writeln!(self.out)?;
                self.open_message = Some(m.index);
                self.message(m)
            }
            Record::Finding(f) => {
                if f.message.is_none() || f.message != self.open_message {
                    writeln!(self.out)?;
                    self.open_message = None;
                }
                self.finding(f)
            }
            Record::Transaction(t) => self.transaction(t),
            Record::Summary(s) => {
                writeln!(self.out)?;
                self.summary(s)
            }
        }
    }
    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// An output whose bytes the test can see while the writer holds it.
    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn finding(n: u64) -> Record {
        Record::Finding(FindingRecord {
            ts: 1_764_108_418.25 + n as f64,
            code: crate::findings::Code::BadEnvelope,
            severity: Severity::Error,
            transport: None,
            src: None,
            dst: None,
            detail: format!("finding number {n}"),
            rule: "d4",
            packet: Some(n),
            message: None,
        })
    }

    fn jsonl(blocks: bool) -> (Box<dyn RecordWriter>, Shared) {
        let out = Shared::default();
        let opts = TextOptions {
            blocks,
            ..TextOptions::default()
        };
        (writer_with(Format::Jsonl, out.clone(), opts), out)
    }

    #[test]
    fn jsonl_in_blocks_writes_the_same_lines_a_block_at_a_time() {
        let (mut each, each_out) = jsonl(false);
        let (mut blocked, blocked_out) = jsonl(true);
        each.write(&finding(1)).unwrap();
        blocked.write(&finding(1)).unwrap();
        // Without blocks a line is out as soon as it is written; with them it waits.
        assert!(each_out.0.borrow().ends_with(b"}\n"));
        assert!(blocked_out.0.borrow().is_empty());
        let mut n = 1;
        while blocked_out.0.borrow().is_empty() {
            n += 1;
            each.write(&finding(n)).unwrap();
            blocked.write(&finding(n)).unwrap();
        }
        // A block is whole lines, at least JSONL_BLOCK bytes of them.
        let first = blocked_out.0.borrow().len();
        assert!(
            (JSONL_BLOCK..JSONL_BLOCK + 1024).contains(&first),
            "{first}"
        );
        assert!(blocked_out.0.borrow().ends_with(b"}\n"));
        each.write(&finding(n + 1)).unwrap();
        blocked.write(&finding(n + 1)).unwrap();
        each.finish().unwrap();
        blocked.finish().unwrap();
        assert_eq!(*blocked_out.0.borrow(), *each_out.0.borrow());
    }

    #[test]
    fn jsonl_lines_held_in_a_block_are_written_when_the_writer_is_dropped() {
        let (mut blocked, out) = jsonl(true);
        blocked.write(&finding(1)).unwrap();
        blocked.write(&finding(2)).unwrap();
        assert!(out.0.borrow().is_empty());
        drop(blocked);
        let text = String::from_utf8(out.0.borrow().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("finding number 2"));
    }

    #[test]
    fn timestamps_format_as_utc() {
        assert_eq!(
            format_time(1_751_553_202.5, Clock::Utc),
            "2025-07-03 14:33:22.500000 UTC"
        );
        assert_eq!(
            format_time(951_782_400.0, Clock::Utc),
            "2000-02-29 00:00:00.000000 UTC"
        );
    }

    fn plus_one_hour(_: i64) -> i32 {
        3600
    }
    fn minus_three_thirty(_: i64) -> i32 {
        -(3 * 3600 + 30 * 60)
    }

    #[test]
    fn times_with_their_zone() {
        let ts = 1_795_644_418.516_736;
        assert_eq!(
            format_time(ts, Clock::Utc),
            "2026-11-25 22:06:58.516736 UTC"
        );
        assert_eq!(
            format_time(ts, Clock::Local(plus_one_hour)),
            "2026-11-25 23:06:58.516736 +01:00"
        );
        assert_eq!(
            format_time(ts, Clock::Local(minus_three_thirty)),
            "2026-11-25 18:36:58.516736 -03:30"
        );
        assert_eq!(format_time(0.0, Clock::Utc), "-");
        assert_eq!(iso_utc(ts).unwrap(), "2026-11-25T22:06:58.516736Z");
        assert_eq!(iso_utc(0.0), None);
    }

    #[test]
    fn iso_utc_agrees_with_format_time_across_seconds() {
        // The last second's text is reused: runs within a second, across second,
        // day and year boundaries, back in time, before 1970 and past year 9999.
        let mut stamps = vec![];
        for base in [
            1_764_108_418.0,
            1_767_225_599.0,
            951_782_399.0,
            -1.0,
            -86_401.5,
        ] {
            for step in 0..40 {
                stamps.push(base + f64::from(step) * 0.137);
            }
        }
        stamps.extend([
            1_764_108_418.25,
            300_000_000_000.5,
            1_764_108_418.999_999_7,
            1.0,
        ]);
        for ts in stamps {
            let want = format_time(ts, Clock::Utc)
                .replacen(' ', "T", 1)
                .replace(" UTC", "Z");
            assert_eq!(iso_utc(ts).unwrap(), want, "{ts}");
        }
    }

    #[test]
    fn json_document_is_valid_even_when_empty() {
        let mut out = vec![];
        let mut w = JsonWriter {
            out: &mut out,
            first: true,
            buf: Vec::new(),
            times: Default::default(),
        };
        w.finish().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["records"].as_array().unwrap().len(), 0);
    }
}
