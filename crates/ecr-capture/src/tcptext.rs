//! Message boundaries on raw TCP port 9002 when the stream does not carry frames
//! (docs/protocol.md D6, which the vendor spec leaves undocumented).
//!
//! Per direction, a message is:
//! - a complete JSON value (`{...}` or `[...]`), found by counting brackets outside
//!   strings: rule `json-value`;
//! - a JSON string literal (`"..."`, the Odoo client's quoted Base64): `json-string`;
//! - Base64 text up to a newline: `newline`;
//! - Base64 text that ends where the segment ends and decrypts with valid padding
//!   under one of the keys: `decrypts`;
//! - whatever is left when the direction is half-closed (FIN): `half-close`.
//!
//! The rule that matched is reported with each message so that real captures can
//! settle which framing terminals use.

use ecr_proto::cipher::{decode_base64, is_base64_text_byte, KeyRing, BLOCK};
use ecr_proto::Timestamp;

/// Most bytes buffered for one message before it is given up as not a message.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The D6 rule that delimited a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The stream starts with `2f 6e 01`: serial frames (D1).
    Frames,
    /// A complete JSON object or array.
    JsonValue,
    /// A JSON string literal.
    JsonString,
    /// Text up to a newline.
    Newline,
    /// Base64 text that decrypts with valid padding.
    Decrypts,
    /// The rest of the stream at the sender's half-close.
    HalfClose,
    /// Too long without a boundary: given up.
    Overlong,
}

impl Rule {
    /// The name shown in output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::Frames => "frames",
            Rule::JsonValue => "json-value",
            Rule::JsonString => "json-string",
            Rule::Newline => "newline",
            Rule::Decrypts => "decrypts",
            Rule::HalfClose => "half-close",
            Rule::Overlong => "overlong",
        }
    }
}

/// One delimited message.
#[derive(Debug)]
pub struct TextMessage<'a> {
    /// Its bytes (surrounding white space removed).
    pub body: &'a [u8],
    /// The rule that delimited it.
    pub rule: Rule,
    /// Capture time of its first byte.
    pub first_ts: Timestamp,
    /// Capture time of its last byte.
    pub last_ts: Timestamp,
}

/// How far the message at the start of the buffer has been examined, so that each
/// chunk is scanned once: the framer resumes here instead of rescanning the buffer
/// (a message arriving in 10-byte segments would otherwise cost quadratic time).
#[derive(Debug, Default, Clone)]
struct Scan {
    /// Bytes of the buffer already examined.
    done: usize,
    /// JSON: open brackets outside strings.
    depth: usize,
    /// JSON: inside a string literal.
    in_str: bool,
    /// JSON: the previous byte was a backslash inside a string.
    esc: bool,
    /// Every byte so far may appear in Base64 text.
    b64: bool,
    /// Every byte so far is a Base64 symbol (no white space or escapes), so the
    /// text's tail decodes on its own.
    pure: bool,
    /// White space at the end of the bytes examined (not part of the Base64 text).
    trailing_space: usize,
    /// Bytes of Base64 text decoded and decrypted in full for this message: capped
    /// at [`DECRYPT_WORK_FACTOR`] times its length, which keeps the `decrypts` rule
    /// linear even when a crafted text passes the cheap padding test every time.
    decrypt_work: usize,
}

/// Full decryption attempts per message may cost at most this many times its length.
const DECRYPT_WORK_FACTOR: usize = 4;

/// Resumes the scan of the JSON value or string literal at the start of `b`;
/// returns its end (exclusive) once it is complete.
fn json_end(b: &[u8], s: &mut Scan) -> Option<usize> {
    let string_only = b.first() == Some(&b'"');
    if s.done == 0 && string_only {
        s.in_str = true;
        s.done = 1;
    }
    let mut i = s.done;
    while let Some(&c) = b.get(i) {
        if s.in_str {
            if s.esc {
                s.esc = false;
                i += 1;
                continue;
            }
            // Inside a string only a quote or a backslash matters: jump to the next.
            let Some(k) = b.get(i..).and_then(quote_or_backslash) else {
                break;
            };
            i += k;
            if b.get(i) == Some(&b'\\') {
                s.esc = true;
            } else {
                s.in_str = false;
                if string_only {
                    return Some(i + 1);
                }
            }
            i += 1;
            continue;
        }
        i += 1;
        match c {
            b'"' => s.in_str = true,
            b'{' | b'[' => s.depth += 1,
            b'}' | b']' => {
                s.depth = s.depth.saturating_sub(1);
                if s.depth == 0 {
                    // `i` is already past the closing bracket.
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    s.done = b.len();
    None
}

/// Offset of the first quote or backslash in `b`. The first 32 bytes are looked at
/// eight at a time in registers: the runs between the escapes of a response's `data`
/// string are short, and a search call costs more than they do; a longer run (Base64
/// in a string) is left to `memchr2`.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    use ecr_proto::swar::{eq_mask, word_at};
    let mut i = 0;
    while i < 32 {
        let Some(w) = word_at(b, i) else {
            break;
        };
        let m = eq_mask(w, b'"') | eq_mask(w, b'\\');
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let rest = b.get(i..)?;
    memchr::memchr2(b'"', b'\\', rest).map(|p| i + p)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| !is_space(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| !is_space(c))
        .map_or(start, |e| e + 1);
    b.get(start..end.max(start)).unwrap_or(&[])
}

/// Per-direction text framer. See the module documentation.
#[derive(Debug, Default)]
pub struct TextFramer {
    buf: Vec<u8>,
    scan: Scan,
    /// Bytes examined and decrypted so far, over the whole stream (see
    /// [`TextFramer::work`]).
    work: u64,
    first_ts: Option<Timestamp>,
    last_ts: Timestamp,
}

impl TextFramer {
    /// A framer at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held back waiting for a boundary.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next chunk of the stream. `keys` is used only for the `decrypts`
    /// rule.
    pub fn feed<F: FnMut(TextMessage<'_>)>(
        &mut self,
        chunk: &[u8],
        ts: Timestamp,
        keys: &KeyRing,
        mut out: F,
    ) {
        if self.buf.is_empty() {
            // Skip white space between messages without buffering it.
            let start = chunk
                .iter()
                .position(|&c| !is_space(c))
                .unwrap_or(chunk.len());
            let rest = chunk.get(start..).unwrap_or(&[]);
            if rest.is_empty() {
                return;
            }
            self.first_ts = Some(ts);
            self.buf.extend_from_slice(rest);
        } else {
            self.buf.extend_from_slice(chunk);
        }
        self.last_ts = ts;
        self.drain(ts, keys, &mut out);
    }

    fn drain<F: FnMut(TextMessage<'_>)>(&mut self, ts: Timestamp, keys: &KeyRing, out: &mut F) {
        let mut pos = 0usize;
        loop {
            let rest = self.buf.get(pos..).unwrap_or(&[]);
            let skip = rest
                .iter()
                .position(|&c| !is_space(c))
                .unwrap_or(rest.len());
            if skip > 0 {
                pos += skip;
                self.scan = Scan::default();
            }
            let rest = self.buf.get(pos..).unwrap_or(&[]);
            let Some(&first) = rest.first() else { break };
            let first_ts = self.first_ts.unwrap_or(ts);
            let scan = &mut self.scan;
            let (done_before, decrypt_before) = (scan.done, scan.decrypt_work);
            if scan.done == 0 {
                *scan = Scan {
                    b64: true,
                    pure: true,
                    ..Scan::default()
                };
            }
            let found = match first {
                b'{' | b'[' => json_end(rest, scan).map(|e| (e, e, Rule::JsonValue)),
                b'"' => json_end(rest, scan).map(|e| (e, e, Rule::JsonString)),
                _ => {
                    let from = scan.done.min(rest.len());
                    let new = rest.get(from..).unwrap_or(&[]);
                    match memchr::memchr(b'\n', new) {
                        Some(nl) => Some((from + nl, from + nl + 1, Rule::Newline)),
                        None => {
                            scan.done = rest.len();
                            scan.b64 = scan.b64 && new.iter().all(|&c| is_base64_text_byte(c));
                            scan.pure = scan.pure && new.iter().all(|&c| is_b64_symbol(c));
                            let tail = new.iter().rev().take_while(|&&c| is_space(c)).count();
                            scan.trailing_space = if tail == new.len() {
                                scan.trailing_space + tail
                            } else {
                                tail
                            };
                            if !keys.is_empty() && decrypts(rest, keys, scan) {
                                Some((rest.len(), rest.len(), Rule::Decrypts))
                            } else {
                                None
                            }
                        }
                    }
                }
            };
            let examined = match found {
                Some((_, consumed, _)) => consumed.saturating_sub(done_before),
                None => scan.done.saturating_sub(done_before),
            };
            let decrypted = scan.decrypt_work.saturating_sub(decrypt_before);
            self.work = self
                .work
                .saturating_add(examined as u64)
                .saturating_add(decrypted as u64)
                .saturating_add(skip as u64);
            match found {
                Some((end, consumed, rule)) => {
                    let body = trim(rest.get(..end).unwrap_or(&[]));
                    if !body.is_empty() {
                        out(TextMessage {
                            body,
                            rule,
                            first_ts,
                            last_ts: ts,
                        });
                    }
                    pos += consumed;
                    self.scan = Scan::default();
                    // Later messages in the buffer arrived with this chunk.
                    self.first_ts = Some(ts);
                }
                None if rest.len() > MAX_MESSAGE => {
                    out(TextMessage {
                        body: rest.get(..MAX_MESSAGE).unwrap_or(rest),
                        rule: Rule::Overlong,
                        first_ts,
                        last_ts: ts,
                    });
                    pos = self.buf.len();
                    self.scan = Scan::default();
                }
                None => break,
            }
        }
        // What is left (one unfinished message) moves to the front: at most the
        // bytes of this chunk, since a message completed in it whenever pos > 0.
        self.buf.drain(..pos.min(self.buf.len()));
        if self.buf.is_empty() {
            self.first_ts = None;
            self.scan = Scan::default();
        }
    }

    /// The sender half-closed (FIN) or the stream ended: whatever is left is a message.
    pub fn close<F: FnMut(TextMessage<'_>)>(&mut self, mut out: F) {
        let body = trim(&self.buf);
        if !body.is_empty() {
            out(TextMessage {
                body,
                rule: Rule::HalfClose,
                first_ts: self.first_ts.unwrap_or(self.last_ts),
                last_ts: self.last_ts,
            });
        }
        self.buf = Vec::new();
        self.first_ts = None;
        self.scan = Scan::default();
    }

    /// Bytes were lost: whatever was buffered cannot be completed.
    pub fn reset(&mut self) {
        self.buf = Vec::new();
        self.first_ts = None;
        self.scan = Scan::default();
    }

    /// Bytes examined by the boundary scans plus bytes decoded for decryption
    /// attempts, over the whole stream: at most a small multiple of the bytes fed,
    /// whatever their shape (tests assert linear time through this).
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Bytes reserved from the allocator (the buffer's capacity).
    pub fn reserved(&self) -> usize {
        self.buf.capacity()
    }
}

fn is_b64_symbol(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')
}

/// Whether `text` is Base64 whose decoded bytes decrypt with valid padding under
/// one of the keys. The byte checks come from `scan` (kept up to date by the
/// caller); a text of pure Base64 symbols first has only its last two blocks
/// decoded and tested for padding, so that a long text that is not a message yet
/// costs O(1) per chunk; a full decryption is tried only within the work budget.
fn decrypts(text: &[u8], keys: &KeyRing, scan: &mut Scan) -> bool {
    // `text` starts with a non-space byte; its end is trimmed by the count kept
    // in `scan` (trimming it here would rescan a growing run of spaces).
    let t = text
        .get(..text.len().saturating_sub(scan.trailing_space))
        .unwrap_or(&[]);
    if t.len() < 24 || t.len() % 4 != 0 || !scan.b64 {
        return false;
    }
    if scan.pure {
        let pad = t.iter().rev().take_while(|&&c| c == b'=').count();
        let ct_len = (t.len() / 4 * 3).saturating_sub(pad);
        if pad > 2 || ct_len % BLOCK != 0 {
            return false;
        }
        let tail_text = t.get(t.len().saturating_sub(48)..).unwrap_or(t);
        let Ok(tail) = decode_base64(tail_text) else {
            return false;
        };
        let tail = tail
            .get(tail.len().saturating_sub(2 * BLOCK)..)
            .unwrap_or(&[]);
        let tail = if ct_len == BLOCK {
            tail.get(tail.len().saturating_sub(BLOCK)..).unwrap_or(&[])
        } else {
            tail
        };
        if !keys.tail_plausible(tail) {
            return false;
        }
    }
    if scan.decrypt_work > DECRYPT_WORK_FACTOR.saturating_mul(t.len()) {
        return false;
    }
    scan.decrypt_work = scan.decrypt_work.saturating_add(t.len());
    keys.decrypt_base64_with(t, |plain| std::str::from_utf8(plain).is_ok())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-at-a-time scan `json_end` replaced, as the reference.
    fn json_end_reference(b: &[u8], s: &mut Scan) -> Option<usize> {
        let string_only = b.first() == Some(&b'"');
        if s.done == 0 && string_only {
            s.in_str = true;
            s.done = 1;
        }
        for (i, &c) in b.iter().enumerate().skip(s.done) {
            if s.in_str {
                match (s.esc, c) {
                    (true, _) => s.esc = false,
                    (false, b'\\') => s.esc = true,
                    (false, b'"') => {
                        s.in_str = false;
                        if string_only {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => s.in_str = true,
                b'{' | b'[' => s.depth += 1,
                b'}' | b']' => {
                    s.depth = s.depth.saturating_sub(1);
                    if s.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        s.done = b.len();
        None
    }

    proptest! {
        #[test]
        fn quote_or_backslash_finds_the_first(
            b in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b'a'), Just(0x22 ^ 0x80), Just(0x5b),
                            Just(0x21), Just(0x23), any::<u8>()],
                0..100),
        ) {
            prop_assert_eq!(
                quote_or_backslash(&b),
                b.iter().position(|&c| c == b'"' || c == b'\\')
            );
        }

        /// Same end, resumed over the same growing prefixes, as the reference.
        #[test]
        fn json_end_matches_the_byte_scan(
            body in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'}'), Just(b'['),
                            Just(b']'), Just(b'a'), Just(b' '), any::<u8>()],
                0..200),
            cuts in proptest::collection::vec(0usize..200, 0..4),
        ) {
            let mut ends: Vec<usize> = cuts.into_iter().filter(|&c| c < body.len()).collect();
            ends.sort_unstable();
            ends.push(body.len());
            let (mut a, mut b) = (Scan::default(), Scan::default());
            for end in ends {
                let prefix = &body[..end];
                let ours = json_end(prefix, &mut a);
                let theirs = json_end_reference(prefix, &mut b);
                prop_assert_eq!(ours, theirs);
                if ours.is_some() {
                    break;
                }
                prop_assert_eq!((a.done, a.depth, a.in_str, a.esc), (b.done, b.depth, b.in_str, b.esc));
            }
        }
    }

    fn run(chunks: &[&[u8]], keys: &KeyRing, close: bool) -> Vec<(Vec<u8>, Rule)> {
        let mut f = TextFramer::new();
        let mut v = vec![];
        for (i, c) in chunks.iter().enumerate() {
            f.feed(c, Timestamp(i as i64), keys, |m| {
                v.push((m.body.to_vec(), m.rule))
            });
        }
        if close {
            f.close(|m| v.push((m.body.to_vec(), m.rule)));
        }
        v
    }

    #[test]
    fn json_values_split_and_joined() {
        let k = KeyRing::new();
        let v = run(
            &[b"{\"a\":\"}{\\\"\"", b",\"b\":[1,{}]}{\"c\":1}  \n{"],
            &k,
            false,
        );
        assert_eq!(
            v,
            vec![
                (b"{\"a\":\"}{\\\"\",\"b\":[1,{}]}".to_vec(), Rule::JsonValue),
                (b"{\"c\":1}".to_vec(), Rule::JsonValue)
            ]
        );
    }

    #[test]
    fn quoted_and_newline_and_half_close() {
        let k = KeyRing::new();
        let v = run(&[b"\"QUJD\\/\"\nQUJD", b"RA==\r\nEFGH"], &k, true);
        assert_eq!(
            v,
            vec![
                (b"\"QUJD\\/\"".to_vec(), Rule::JsonString),
                (b"QUJDRA==".to_vec(), Rule::Newline),
                (b"EFGH".to_vec(), Rule::HalfClose)
            ]
        );
    }

    #[test]
    fn base64_that_decrypts_ends_a_message() {
        let key = ecr_proto::cipher::PosKey::new("my_qfpay_pos_key").unwrap();
        let text = key.encrypt_base64(b"{content:{func_type=5001}, digest:'x'}");
        let keys = KeyRing::single(key);
        let v = run(
            &[&text.as_bytes()[..10], &text.as_bytes()[10..]],
            &keys,
            false,
        );
        assert_eq!(v, vec![(text.as_bytes().to_vec(), Rule::Decrypts)]);
        // Without the key the framer waits for a newline or the half-close.
        let v = run(&[text.as_bytes()], &KeyRing::new(), false);
        assert!(v.is_empty());
    }

    fn bytewise(text: &[u8], keys: &KeyRing) -> (Vec<(Vec<u8>, Rule)>, u64) {
        let mut f = TextFramer::new();
        let mut v = vec![];
        for (i, c) in text.chunks(1).enumerate() {
            f.feed(c, Timestamp(i as i64), keys, |m| {
                v.push((m.body.to_vec(), m.rule))
            });
        }
        (v, f.work())
    }

    #[test]
    fn one_byte_segments_find_the_same_messages_in_linear_work() {
        let key = ecr_proto::cipher::PosKey::new("my_qfpay_pos_key").unwrap();
        let keys = KeyRing::single(key.clone());
        // The shortest ciphertext (one block) and a long one.
        for plain in [&b"{a:1}"[..], &[b'x'; 5000][..]] {
            let text = key.encrypt_base64(plain);
            let (v, work) = bytewise(text.as_bytes(), &keys);
            assert_eq!(v, vec![(text.as_bytes().to_vec(), Rule::Decrypts)]);
            assert!(
                work <= 6 * text.len() as u64,
                "work {work} for {}",
                text.len()
            );
        }
        let mut json = b"{\"a\":\"}{\\\"\",\"b\":[1,{}]}".to_vec();
        json.extend_from_slice(b" \"QUJD\" QUJD\n");
        let (v, work) = bytewise(&json, &keys);
        assert_eq!(
            v.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            [Rule::JsonValue, Rule::JsonString, Rule::Newline]
        );
        assert!(work <= json.len() as u64, "work {work} for {}", json.len());
        // Unterminated JSON and Base64 that never decrypts: still one pass.
        let mut open = vec![b'['; 1];
        open.extend(std::iter::repeat_n(b'1', 50_000));
        let (v, work) = bytewise(&open, &keys);
        assert!(v.is_empty());
        assert!(work <= open.len() as u64, "work {work}");
        let b64 = vec![b'Q'; 50_000];
        let (v, work) = bytewise(&b64, &keys);
        assert!(v.is_empty());
        assert!(work <= 6 * b64.len() as u64, "work {work}");
        // A message followed by a long run of spaces (no newline) still ends
        // with its last symbol, and the spaces are examined once.
        let text = key.encrypt_base64(b"{a:1}");
        let mut spaced = text.as_bytes().to_vec();
        spaced.extend(std::iter::repeat_n(b' ', 20_000));
        let mut f = TextFramer::new();
        let mut found = vec![];
        f.feed(&spaced[..10], Timestamp(0), &KeyRing::new(), |m| {
            found.push(m.rule)
        });
        for c in spaced[10..].chunks(1) {
            f.feed(c, Timestamp(1), &keys, |m| found.push(m.rule));
        }
        assert_eq!(found, [Rule::Decrypts]);
        assert!(f.work() <= 3 * spaced.len() as u64, "work {}", f.work());
        let mut tail = vec![b'Q'; 8];
        tail.extend(std::iter::repeat_n(b' ', 20_000));
        let (_, work) = bytewise(&tail, &keys);
        assert!(work <= 6 * tail.len() as u64, "work {work}");
    }
}
