//! TLS secrets: the NSS key log format that `SSLKEYLOGFILE` makes browsers (Chrome,
//! Edge, Firefox), curl, Python's `ssl` and node write, and that pcapng Decryption
//! Secrets Blocks carry (`editcap --inject-secrets tls,FILE`).
//!
//! Each line is `LABEL <client random, 64 hex> <secret, hex>`; `#` starts a comment.
//! The labels used here are `CLIENT_RANDOM` (the TLS 1.2 master secret) and the TLS 1.3
//! `CLIENT_HANDSHAKE_TRAFFIC_SECRET`, `SERVER_HANDSHAKE_TRAFFIC_SECRET`,
//! `CLIENT_TRAFFIC_SECRET_0` and `SERVER_TRAFFIC_SECRET_0`; other labels
//! (`EXPORTER_SECRET`, `CLIENT_EARLY_TRAFFIC_SECRET`, ...) are skipped.
//!
//! Secrets are as sensitive as the POS-KEY: nothing here prints them, and the
//! [`fmt::Debug`] forms show counts only.
//!
//! Bounded: a key log file is read a line at a time up to [`MAX_FILE_BYTES`] (never
//! whole into memory), lines longer than [`MAX_LINE`] are skipped, and the table
//! holds the [`MAX_ENTRIES`] client randoms seen last: a key log only grows (a
//! browser's `SSLKEYLOGFILE` may hold weeks of sessions), so the oldest are
//! forgotten first, counted, and reported by the caller. The table then takes 4.6 MB
//! (twice that for a moment while it is rebuilt).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Largest key log file read (bytes).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Longest line considered (a TLS 1.3 line with a SHA-384 secret is 160 bytes).
pub const MAX_LINE: usize = 1024;
/// Most client randoms remembered (a few days of a browser's `SSLKEYLOGFILE`): a
/// hash table of 16,384 slots of 283 bytes, 4.6 MB (a table is full at 7/8).
pub const MAX_ENTRIES: usize = 14_336;
/// Longest secret: TLS 1.3 secrets are at most 48 bytes (SHA-384), the TLS 1.2
/// master secret is 48 bytes.
pub const MAX_SECRET: usize = 48;

/// The secrets of one TLS session, by kind. TLS 1.3 secrets are at most 48 bytes
/// (SHA-384); the TLS 1.2 master secret is 48 bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// TLS 1.2 (and earlier) master secret.
    pub master: Option<Secret>,
    /// TLS 1.3 client handshake traffic secret.
    pub client_hs: Option<Secret>,
    /// TLS 1.3 server handshake traffic secret.
    pub server_hs: Option<Secret>,
    /// TLS 1.3 client application traffic secret 0.
    pub client_app: Option<Secret>,
    /// TLS 1.3 server application traffic secret 0.
    pub server_app: Option<Secret>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("master", &self.master.is_some())
            .field("client_hs", &self.client_hs.is_some())
            .field("server_hs", &self.server_hs.is_some())
            .field("client_app", &self.client_app.is_some())
            .field("server_app", &self.server_app.is_some())
            .finish()
    }
}

/// One secret (up to [`MAX_SECRET`] bytes), never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    bytes: [u8; MAX_SECRET],
    len: u8,
}

impl Secret {
    /// A secret from its bytes; `None` when empty or longer than [`MAX_SECRET`].
    pub fn new(b: &[u8]) -> Option<Self> {
        if b.is_empty() || b.len() > MAX_SECRET {
            return None;
        }
        let mut bytes = [0u8; MAX_SECRET];
        bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(Secret {
            bytes,
            len: b.len() as u8,
        })
    }
    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.len)
    }
}

/// A problem with one line or file of a key log (never quoting a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLogWarning {
    /// 1-based line number, when about a line.
    pub line: Option<usize>,
    /// What was wrong.
    pub detail: String,
}

/// Secrets by client random, from any number of key logs.
#[derive(Clone, Default)]
pub struct KeyLog {
    by_random: HashMap<[u8; 32], Secrets>,
    /// The client randoms of `by_random` in the order they were first seen.
    order: VecDeque<[u8; 32]>,
    dropped: u64,
    sources: usize,
}

/// Where the lines of one key log are: their numbers and what was wrong.
#[derive(Default)]
struct Lines {
    line: usize,
    warnings: Vec<KeyLogWarning>,
    dropped_before: u64,
}

impl fmt::Debug for KeyLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLog")
            .field("sessions", &self.by_random.len())
            .field("dropped", &self.dropped)
            .field("sources", &self.sources)
            .finish()
    }
}

impl KeyLog {
    /// An empty key log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of TLS sessions (client randoms) known.
    pub fn len(&self) -> usize {
        self.by_random.len()
    }

    /// True when no secret is known.
    pub fn is_empty(&self) -> bool {
        self.by_random.is_empty()
    }

    /// True when at least one key log (file or capture block) was given, even an
    /// empty one: then a connection without secrets is `tls-no-secret`, not just
    /// `tls-encrypted`.
    pub fn was_given(&self) -> bool {
        self.sources > 0
    }

    /// Client randoms forgotten because the table was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The secrets known for a client random.
    pub fn get(&self, client_random: &[u8]) -> Option<&Secrets> {
        let k: [u8; 32] = client_random.try_into().ok()?;
        self.by_random.get(&k)
    }

    /// Reads a key log file, a line at a time (at most [`MAX_FILE_BYTES`]).
    /// Returns the problems found in it, each naming a line; an I/O error is an
    /// `Err` naming the file.
    pub fn load_file(&mut self, path: &Path) -> Result<Vec<KeyLogWarning>, String> {
        let err = |e: std::io::Error| format!("{}: cannot read TLS key log: {e}", path.display());
        let f = std::fs::File::open(path).map_err(err)?;
        self.load_reader(f).map_err(err)
    }

    /// [`KeyLog::load_file`] of any reader: a line at a time, never holding more
    /// than one line of at most [`MAX_LINE`] + 1 bytes; the same as
    /// [`KeyLog::add_text`] of the first [`MAX_FILE_BYTES`].
    pub fn load_reader(&mut self, r: impl Read) -> std::io::Result<Vec<KeyLogWarning>> {
        let mut r = BufReader::with_capacity(64 << 10, r.take(MAX_FILE_BYTES + 1));
        let mut lines = self.start();
        let mut line = Vec::with_capacity(MAX_LINE + 1);
        let mut read = 0u64;
        loop {
            line.clear();
            let (n, newline) = next_line(&mut r, &mut line)?;
            read += n as u64 + u64::from(newline);
            if read > MAX_FILE_BYTES {
                lines.warnings.push(KeyLogWarning {
                    line: None,
                    detail: format!(
                        "larger than {} MiB: the rest is not read",
                        MAX_FILE_BYTES >> 20
                    ),
                });
                break;
            }
            if !newline && n == 0 {
                break;
            }
            self.add_line(&line, n, &mut lines);
            if !newline {
                break;
            }
        }
        Ok(self.finish(lines))
    }

    /// Adds the lines of a key log (a file's content, or a pcapng Decryption Secrets
    /// Block's). Returns the lines that could not be used and why.
    pub fn add_text(&mut self, text: &[u8]) -> Vec<KeyLogWarning> {
        let mut lines = self.start();
        for raw in text.split(|&b| b == b'\n') {
            self.add_line(raw, raw.len(), &mut lines);
        }
        self.finish(lines)
    }

    fn start(&mut self) -> Lines {
        self.sources += 1;
        Lines {
            dropped_before: self.dropped,
            ..Lines::default()
        }
    }

    fn finish(&self, mut lines: Lines) -> Vec<KeyLogWarning> {
        let forgotten = self.dropped.saturating_sub(lines.dropped_before);
        if forgotten > 0 {
            lines.warnings.push(KeyLogWarning {
                line: None,
                detail: format!(
                    "more than {MAX_ENTRIES} TLS sessions: the {forgotten} seen first are forgotten (the latest are kept)"
                ),
            });
        }
        lines.warnings
    }

    /// One line, `raw`, without its newline: `len` bytes long in the input, of
    /// which `raw` may hold only the first [`MAX_LINE`] + 1.
    fn add_line(&mut self, raw: &[u8], len: usize, lines: &mut Lines) {
        lines.line += 1;
        let line_no = lines.line;
        let warnings = &mut lines.warnings;
        if len > MAX_LINE {
            push_warning(warnings, Some(line_no), "line too long for a key log line");
            return;
        }
        let line = trim(raw);
        if line.is_empty() || line.first() == Some(&b'#') {
            return;
        }
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let (Some(label), Some(random), Some(secret), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            push_warning(
                warnings,
                Some(line_no),
                "not a key log line (LABEL CLIENT_RANDOM SECRET)",
            );
            return;
        };
        // Labels of other protocols (QUIC, exporters) are normal: skipped.
        let slot: fn(&mut Secrets) -> &mut Option<Secret> = match label {
            b"CLIENT_RANDOM" => |s| &mut s.master,
            b"CLIENT_HANDSHAKE_TRAFFIC_SECRET" => |s| &mut s.client_hs,
            b"SERVER_HANDSHAKE_TRAFFIC_SECRET" => |s| &mut s.server_hs,
            b"CLIENT_TRAFFIC_SECRET_0" => |s| &mut s.client_app,
            b"SERVER_TRAFFIC_SECRET_0" => |s| &mut s.server_app,
            _ => return,
        };
        let mut rnd = [0u8; 32];
        if random.len() != 64 || !hex_into(random, &mut rnd) {
            push_warning(
                warnings,
                Some(line_no),
                "the client random is not 64 hex digits",
            );
            return;
        }
        let mut buf = [0u8; MAX_SECRET];
        let len = secret.len() / 2;
        let ok = secret.len() % 2 == 0
            && (1..=MAX_SECRET).contains(&len)
            && buf.get_mut(..len).is_some_and(|b| hex_into(secret, b));
        let Some(sec) = ok.then(|| buf.get(..len).and_then(Secret::new)).flatten() else {
            push_warning(
                warnings,
                Some(line_no),
                "the secret is not 2 to 96 hex digits",
            );
            return;
        };
        if label == b"CLIENT_RANDOM" && len != 48 {
            push_warning(
                warnings,
                Some(line_no),
                "a CLIENT_RANDOM master secret is 48 bytes",
            );
            return;
        }
        if !self.by_random.contains_key(&rnd) {
            if self.by_random.capacity() == 0 {
                // Room for all at once: no copies while it grows (pages are used
                // only as entries land in them).
                self.by_random.reserve(MAX_ENTRIES);
            }
            while self.by_random.len() >= MAX_ENTRIES {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.by_random.remove(&oldest);
                self.dropped += 1;
            }
            self.order.push_back(rnd);
        }
        *slot(self.by_random.entry(rnd).or_default()) = Some(sec);
    }
}

/// Reads one line into `line` (at most [`MAX_LINE`] + 1 of its bytes; the rest of
/// a longer line is read and dropped). Returns the line's length without its
/// newline, and whether a newline ended it (false at the end of the input).
fn next_line<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    let mut len = 0usize;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((len, false));
        }
        let (piece, used, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (buf.get(..i).unwrap_or_default(), i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = (MAX_LINE + 1).saturating_sub(line.len()).min(piece.len());
        line.extend_from_slice(piece.get(..room).unwrap_or_default());
        len += piece.len();
        r.consume(used);
        if done {
            return Ok((len, true));
        }
    }
}

/// At most this many warnings per key log, so that a wrong file is one short message.
const MAX_WARNINGS: usize = 5;

/// Follows a key log that grows while it is read (a browser or curl appends its
/// lines as it connects, `ecr-sniff -i` reads what was added every 100 ms): takes
/// the bytes appended since the last read and hands on the complete lines among
/// them with the number of the lines before them, so that a warning names the line
/// of the file. A line longer than [`MAX_LINE`] is dropped as it comes (warned
/// once, with its number) and skipped to its end, so the tail holds at most
/// [`MAX_LINE`] bytes between reads.
#[derive(Debug, Default)]
pub struct KeyLogTail {
    /// The start of a line whose end has not been read yet.
    partial: Vec<u8>,
    /// Lines handed on or skipped so far.
    lines: usize,
    /// In a line too long to keep: what comes before its newline is dropped.
    skipping: bool,
    /// Started in the middle of the file ([`KeyLogTail::mid_file`]): the lines
    /// before are not known, so warnings carry no line number.
    unnumbered: bool,
}

/// What [`KeyLogTail::push`] found in the bytes appended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Complete lines, each ending with a newline (empty when none was completed).
    pub text: Vec<u8>,
    /// How many lines of the file come before `text`.
    pub lines_before: usize,
    /// Lines dropped for being too long, numbered as in the file.
    pub warnings: Vec<KeyLogWarning>,
    /// The lines of the file are not numbered (the tail started in its middle):
    /// [`Appended::in_file`] then removes a warning's line number.
    pub unnumbered: bool,
}

impl Appended {
    /// Numbers a warning about `text` (from [`KeyLog::add_text`], which counts
    /// from 1) as a line of the file.
    pub fn in_file(&self, mut w: KeyLogWarning) -> KeyLogWarning {
        w.line = w
            .line
            .filter(|_| !self.unnumbered)
            .map(|l| l.saturating_add(self.lines_before));
        w
    }
}

impl KeyLogTail {
    /// A tail at the start of a file.
    pub fn new() -> Self {
        KeyLogTail::default()
    }

    /// A tail that starts at an offset inside a file (the start of a large key
    /// log left unread): what comes before the first newline, the end of a line
    /// whose start was not read, is skipped, and since the lines before are not
    /// counted, warnings carry no line number.
    pub fn mid_file() -> Self {
        KeyLogTail {
            skipping: true,
            unnumbered: true,
            ..KeyLogTail::default()
        }
    }

    /// Starts again at the start of the file (it was truncated or replaced).
    pub fn restart(&mut self) {
        *self = KeyLogTail::default();
    }

    /// Lines of the file read to their end so far.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// The start of a line whose end has not been read yet (none while a line
    /// too long is being skipped): what a file that does not end with a newline
    /// holds after its last complete line.
    pub fn unfinished(&self) -> Option<&[u8]> {
        (!self.skipping && !self.partial.is_empty()).then_some(self.partial.as_slice())
    }

    /// Takes the bytes appended to the file since the last call.
    pub fn push(&mut self, mut new: &[u8]) -> Appended {
        let mut out = Appended {
            unnumbered: self.unnumbered,
            ..Appended::default()
        };
        if self.skipping {
            let Some(end) = memchr::memchr(b'\n', new) else {
                return out;
            };
            new = new.get(end.saturating_add(1)..).unwrap_or_default();
            self.skipping = false;
            self.lines = self.lines.saturating_add(1);
        }
        self.partial.extend_from_slice(new);
        out.lines_before = self.lines;
        if let Some(end) = memchr::memrchr(b'\n', &self.partial) {
            out.text = self.partial.drain(..=end).collect();
            let n = memchr::memchr_iter(b'\n', &out.text).count();
            self.lines = self.lines.saturating_add(n);
        }
        if self.partial.len() > MAX_LINE {
            let line = (!self.unnumbered).then(|| self.lines.saturating_add(1));
            push_warning(&mut out.warnings, line, "line too long for a key log line");
            self.partial = Vec::new();
            self.skipping = true;
        }
        out
    }
}

fn push_warning(w: &mut Vec<KeyLogWarning>, line: Option<usize>, detail: &str) {
    if w.len() < MAX_WARNINGS {
        w.push(KeyLogWarning {
            line,
            detail: detail.into(),
        });
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or_default()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `hex` into `out` (exactly twice as many digits as bytes).
fn hex_into(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (
            pair.first().copied().and_then(hex_val),
            pair.get(1).copied().and_then(hex_val),
        ) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "aa01020304050607080910111213141516171819202122232425262728293031";

    #[test]
    fn parses_nss_lines_and_skips_others() {
        let text = format!(
            "# SSL/TLS secrets log file, generated by NSS\n\
             CLIENT_RANDOM {R} {}\n\
             SERVER_HANDSHAKE_TRAFFIC_SECRET {R} {}\r\n\
             EXPORTER_SECRET {R} {}\n\
             \n",
            "11".repeat(48),
            "22".repeat(32),
            "33".repeat(32)
        );
        let mut k = KeyLog::new();
        let w = k.add_text(text.as_bytes());
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(k.len(), 1);
        let mut r = [0u8; 32];
        assert!(hex_into(R.as_bytes(), &mut r));
        let s = k.get(&r).unwrap();
        assert_eq!(s.master.as_ref().unwrap().as_bytes(), &[0x11; 48][..]);
        assert_eq!(s.server_hs.as_ref().unwrap().as_bytes(), &[0x22; 32][..]);
        assert!(s.client_app.is_none());
        // Debug never shows secret bytes.
        let dbg = format!("{k:?} {s:?}");
        assert!(!dbg.contains("11") && !dbg.contains("34"), "{dbg}");
    }

    #[test]
    fn bad_lines_are_named_and_bounded() {
        let long = "A".repeat(MAX_LINE + 1);
        let text = format!(
            "CLIENT_RANDOM zz {}\nCLIENT_RANDOM {R} 1234\nCLIENT_RANDOM {R}\n{long}\nCLIENT_RANDOM {R} {}\nX\nY\nZ\n",
            "11".repeat(48),
            "1".repeat(97)
        );
        let mut k = KeyLog::new();
        let w = k.add_text(text.as_bytes());
        assert_eq!(w.len(), MAX_WARNINGS);
        assert_eq!(w[0].line, Some(1));
        assert!(w[0].detail.contains("64 hex"));
        assert!(w[1].detail.contains("48 bytes"));
        assert!(w[3].detail.contains("too long"));
        assert!(k.is_empty());
        assert!(k.was_given());
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    fn line(i: usize) -> String {
        format!("CLIENT_RANDOM {:064x} {}\n", i, "ab".repeat(48))
    }

    fn random(i: usize) -> [u8; 32] {
        let mut r = [0u8; 32];
        assert!(hex_into(format!("{i:064x}").as_bytes(), &mut r));
        r
    }

    #[test]
    fn a_full_table_forgets_the_sessions_seen_first() {
        let extra = 10;
        let text: String = (0..MAX_ENTRIES + extra).map(line).collect();
        let mut k = KeyLog::new();
        let w = k.add_text(text.as_bytes());
        assert_eq!(k.len(), MAX_ENTRIES);
        assert_eq!(k.dropped(), extra as u64);
        assert!(k.get(&random(0)).is_none(), "the first is forgotten");
        assert!(k.get(&random(extra)).is_some());
        assert!(
            k.get(&random(MAX_ENTRIES + extra - 1)).is_some(),
            "the last is kept"
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].detail.contains("the 10 seen first are forgotten"),
            "{w:?}"
        );
        // A session seen again keeps its place.
        let again = k.add_text(line(extra).as_bytes());
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(k.dropped(), extra as u64);
    }

    #[test]
    fn files_are_read_a_line_at_a_time() {
        // A 4 MB line is skipped (not held), the lines around it are read, and a
        // last line without a newline counts.
        let dir = std::env::temp_dir().join(format!("ecr-keylog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.log");
        let mut text = line(1);
        text.push_str(&"A".repeat(4 << 20));
        text.push('\n');
        text.push_str(line(2).trim_end());
        std::fs::write(&path, &text).unwrap();
        let mut k = KeyLog::new();
        let w = k.load_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].line, Some(2));
        assert!(w[0].detail.contains("too long"));
        assert_eq!(k.len(), 2);
        assert!(k.get(&random(1)).is_some() && k.get(&random(2)).is_some());
        // Read in one piece or line by line: the same.
        let mut whole = KeyLog::new();
        assert_eq!(whole.add_text(text.as_bytes()), w);
        assert_eq!(whole.len(), 2);
    }
}

#[cfg(test)]
mod tail {
    use super::*;

    fn line(i: usize) -> String {
        format!("CLIENT_RANDOM {:064x} {}\n", i, "ab".repeat(48))
    }

    #[test]
    fn lines_split_across_reads_are_handed_on_whole_and_numbered_as_in_the_file() {
        let mut t = KeyLogTail::new();
        let mut log = KeyLog::new();
        let good = line(1);
        let (head, rest) = good.split_at(20);
        let first = t.push(head.as_bytes());
        assert!(first.text.is_empty() && first.warnings.is_empty());
        let second = t.push(format!("{rest}not a key log line\n# comment\npart").as_bytes());
        assert_eq!(second.lines_before, 0);
        assert_eq!(
            second.text,
            format!("{good}not a key log line\n# comment\n").as_bytes()
        );
        let ws: Vec<_> = log
            .add_text(&second.text)
            .into_iter()
            .map(|w| second.in_file(w))
            .collect();
        assert_eq!(ws.iter().map(|w| w.line).collect::<Vec<_>>(), [Some(2)]);
        assert_eq!(log.len(), 1);
        // The fourth line ends in the next read, which brings a fifth, bad, one.
        let third = t.push(b"ial\nbad\n");
        assert_eq!(third.lines_before, 3);
        let ws: Vec<_> = log
            .add_text(&third.text)
            .into_iter()
            .map(|w| third.in_file(w))
            .collect();
        assert_eq!(
            ws.iter().map(|w| w.line).collect::<Vec<_>>(),
            [Some(4), Some(5)]
        );
        assert_eq!(t.lines(), 5);
    }

    #[test]
    fn a_tail_started_inside_a_file_skips_the_cut_line_and_numbers_nothing() {
        let mut t = KeyLogTail::mid_file();
        let first = line(1);
        let cut = first.get(30..).unwrap();
        let long = "x".repeat(MAX_LINE + 10);
        let a = t.push(format!("{cut}{}bad\n{long}", line(2)).as_bytes());
        // The end of the line cut by the start offset is not read as a line.
        assert_eq!(a.text, format!("{}bad\n", line(2)).as_bytes());
        assert_eq!(
            a.warnings,
            [KeyLogWarning {
                line: None,
                detail: "line too long for a key log line".into()
            }]
        );
        let mut log = KeyLog::new();
        let ws: Vec<_> = log
            .add_text(&a.text)
            .into_iter()
            .map(|w| a.in_file(w))
            .collect();
        assert_eq!(ws.iter().map(|w| w.line).collect::<Vec<_>>(), [None]);
        assert_eq!(log.len(), 1);
        // The cut line is not shown as an unfinished last line either.
        let mut u = KeyLogTail::mid_file();
        assert!(u.push(b"0123456789abcdef 00ff").text.is_empty());
        assert_eq!(u.unfinished(), None);
        let b = u.push(format!("\n{}", line(3)).as_bytes());
        assert_eq!(b.text, line(3).as_bytes());
        assert!(b.unnumbered);
    }

    #[test]
    fn a_line_too_long_is_dropped_as_it_comes_and_the_next_ones_keep_their_numbers() {
        let mut t = KeyLogTail::new();
        let a = t.push(format!("{}{}", line(1), "x".repeat(MAX_LINE + 10)).as_bytes());
        assert_eq!(a.text, line(1).as_bytes());
        assert_eq!(
            a.warnings,
            [KeyLogWarning {
                line: Some(2),
                detail: "line too long for a key log line".into()
            }]
        );
        // The rest of the long line is skipped, without holding it.
        let b = t.push("y".repeat(10 * MAX_LINE).as_bytes());
        assert_eq!(
            b,
            Appended {
                lines_before: 0,
                ..Appended::default()
            }
        );
        assert!(t.partial.is_empty());
        let c = t.push(format!("yyy\n{}", line(3)).as_bytes());
        assert_eq!(c.lines_before, 2);
        assert_eq!(c.text, line(3).as_bytes());
        assert!(c.warnings.is_empty());
        let mut log = KeyLog::new();
        assert!(log.add_text(&c.text).is_empty());
        assert_eq!(log.len(), 1);
        // What a file holds when following starts: its complete lines, and an
        // unfinished last line kept (and shown) until its newline comes.
        let mut u = KeyLogTail::new();
        let held = format!("{}{}# a comment\nCLIENT_RAN", line(1), line(2));
        let e = u.push(held.as_bytes());
        assert_eq!((e.lines_before, u.lines()), (0, 3));
        assert_eq!(u.unfinished(), Some(&b"CLIENT_RAN"[..]));
        let e = u.push(b"DOM x y\n");
        assert_eq!(
            (e.lines_before, e.text.as_slice()),
            (3, &b"CLIENT_RANDOM x y\n"[..])
        );
        assert_eq!(u.unfinished(), None);
        let mut v = KeyLogTail::new();
        let long = format!("{}{}", line(1), "z".repeat(MAX_LINE * 100));
        assert_eq!(v.push(long.as_bytes()).warnings.len(), 1);
        assert_eq!(v.unfinished(), None, "a line being skipped is not shown");
        let e = v.push(b"zz\nbad\n");
        assert_eq!((e.lines_before, e.text.as_slice()), (2, &b"bad\n"[..]));
        // A file truncated and written again is read from its first line.
        t.restart();
        let d = t.push(b"bad\n");
        assert_eq!(d.lines_before, 0);
        assert_eq!(
            log.add_text(&d.text)
                .into_iter()
                .map(|w| d.in_file(w).line)
                .collect::<Vec<_>>(),
            [Some(1)]
        );
    }
}
