//! Linear-time message boundaries for the emulator's TCP 9002 text connections.
//!
//! The D6 framer shared with the analyzer ([`TextFramer`]) looks at everything it
//! holds each time it is fed. Fed every segment, a message that arrives in many
//! small pieces is scanned again and again (and, with a key, decoded and decrypted
//! again and again): quadratic time that a slow or hostile client could use to keep
//! the emulator busy. The [`TextGate`] looks at each byte once, follows the same
//! rules incrementally, and hands the bytes to the framer only where one of them
//! can end a message:
//!
//! - the closing bracket of a JSON value or the closing quote of a JSON string;
//! - a newline after Base64 text;
//! - the end of a segment after Base64 text whose length and last two blocks could
//!   decrypt under the terminal's key with valid padding to UTF-8 text (one block
//!   decrypted per segment, whatever the message's length; random text passes
//!   about once in millions of segments, costing one full attempt, after which
//!   that message is tried only when it has doubled);
//! - a message longer than the framer's limit (given up by the framer).
//!
//! Text with white space or backslashes inside (which the framer still tolerates)
//! is tried at a segment end only when it has doubled in length since the last try,
//! which keeps the total work linear.

use ecr_capture::tcptext::{TextFramer, TextMessage, MAX_MESSAGE};
use ecr_proto::cipher::{decode_base64, KeyRing, PosKey};
use ecr_proto::Timestamp;

/// Where the gate is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages (white space is skipped).
    Between,
    /// In a JSON object or array.
    Json {
        depth: usize,
        in_str: bool,
        esc: bool,
    },
    /// In a JSON string literal.
    JsonString { esc: bool },
    /// In Base64 (or other) text.
    Text,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// The TCP text framing of one connection: a [`TextFramer`] fed through the gate.
pub struct TextGate {
    framer: TextFramer,
    keys: KeyRing,
    key: PosKey,
    state: State,
    /// Bytes received but not yet given to the framer.
    pending: Vec<u8>,
    /// Length of the current message so far (from its first non-space byte).
    len: usize,
    /// Text: every byte so far is strict Base64 with no white space inside.
    clean: bool,
    /// Text: every byte so far is one the framer's Base64 rule accepts.
    base64ish: bool,
    /// Text: white space seen after the last Base64 byte (trailing, so far).
    trailing_space: usize,
    /// Text: the last Base64 bytes of the message (at most 96).
    tail: Vec<u8>,
    /// Text: the message length at the last decryption attempt by doubling.
    last_try: usize,
    /// A boundary may be in `pending`: feed the framer.
    due: bool,
    /// How often the framer was fed (for tests of the work done).
    feeds: u64,
}

impl TextGate {
    /// A gate for a connection served with `key`.
    pub fn new(key: PosKey) -> Self {
        TextGate {
            framer: TextFramer::new(),
            keys: KeyRing::single(key.clone()),
            key,
            state: State::Between,
            pending: vec![],
            len: 0,
            clean: true,
            base64ish: true,
            trailing_space: 0,
            tail: vec![],
            last_try: 0,
            due: false,
            feeds: 0,
        }
    }

    /// Bytes held for the current message (not yet complete).
    pub fn buffered(&self) -> usize {
        self.pending.len() + self.framer.buffered()
    }

    /// Whether a message has begun and not ended.
    pub fn in_message(&self) -> bool {
        self.state != State::Between
    }

    fn start_message(&mut self, b: u8) {
        self.len = 0;
        self.clean = true;
        self.base64ish = true;
        self.trailing_space = 0;
        self.tail.clear();
        self.last_try = 0;
        self.state = match b {
            b'{' | b'[' => State::Json {
                depth: 0,
                in_str: false,
                esc: false,
            },
            b'"' => State::JsonString { esc: true },
            _ => State::Text,
        };
    }

    fn end_message(&mut self) {
        self.state = State::Between;
        self.due = true;
    }

    /// Looks at one byte of the stream, following the framer's rules.
    fn step(&mut self, b: u8) {
        if self.state == State::Between {
            if is_space(b) {
                return;
            }
            self.start_message(b);
        }
        self.len += 1;
        match &mut self.state {
            State::Between => {}
            State::JsonString { esc } => match (*esc, b) {
                // The opening quote starts with `esc` set so that it is skipped.
                (true, _) => *esc = false,
                (false, b'\\') => *esc = true,
                (false, b'"') => self.end_message(),
                _ => {}
            },
            State::Json { depth, in_str, esc } => {
                if *in_str {
                    match (*esc, b) {
                        (true, _) => *esc = false,
                        (false, b'\\') => *esc = true,
                        (false, b'"') => *in_str = false,
                        _ => {}
                    }
                } else {
                    match b {
                        b'"' => *in_str = true,
                        b'{' | b'[' => *depth += 1,
                        b'}' | b']' => {
                            *depth = depth.saturating_sub(1);
                            if *depth == 0 {
                                self.end_message();
                            }
                        }
                        _ => {}
                    }
                }
            }
            State::Text => {
                if b == b'\n' {
                    self.end_message();
                } else if is_space(b) {
                    self.trailing_space += 1;
                } else {
                    // White space inside, a stray character, or anything after
                    // the `=` padding: not the strict shape the cheap test needs.
                    if self.trailing_space > 0
                        || !is_b64(b)
                        || (b != b'=' && self.tail.last() == Some(&b'='))
                    {
                        self.clean = false;
                    }
                    if !ecr_proto::cipher::is_base64_text_byte(b) {
                        self.base64ish = false;
                    }
                    self.trailing_space = 0;
                    self.tail.push(b);
                    if self.tail.len() > 96 {
                        self.tail.drain(..48);
                    }
                }
            }
        }
        if self.state != State::Between && self.len > MAX_MESSAGE {
            // The framer gives up on it; so does the gate.
            self.state = State::Between;
            self.due = true;
        }
    }

    /// Whether Base64 text ending here could be a message the framer's `decrypts`
    /// rule accepts.
    fn may_decrypt(&mut self) -> bool {
        if self.state != State::Text || !self.base64ish {
            return false;
        }
        let trimmed = self.len - self.trailing_space;
        if trimmed < 24 {
            return false;
        }
        if !self.clean {
            if trimmed >= self.last_try.saturating_mul(2) {
                self.last_try = trimmed;
                return true;
            }
            return false;
        }
        if trimmed % 4 != 0 {
            return false;
        }
        let pads = self.tail.iter().rev().take_while(|&&c| c == b'=').count();
        let Some(ct_len) = (trimmed / 4 * 3).checked_sub(pads) else {
            return false;
        };
        if ct_len % 16 != 0 || pads > 2 {
            return false;
        }
        // The last 48 characters (whole quanta) decode to the last 34..36 bytes.
        let from = self.tail.len().saturating_sub(48);
        let Ok(bytes) = decode_base64(self.tail.get(from..).unwrap_or(&[])) else {
            return false;
        };
        let want = ct_len.min(32);
        let tail = bytes.get(bytes.len().saturating_sub(want)..).unwrap_or(&[]);
        // The framer wants UTF-8 text: the end of the last block must be UTF-8
        // too (it may start inside a character). Random bytes pass this and the
        // padding about once in millions.
        self.key.tail_plausible(tail, |end| {
            let skip = end
                .iter()
                .take(3)
                .take_while(|&&b| b & 0xc0 == 0x80)
                .count();
            std::str::from_utf8(end.get(skip..).unwrap_or(&[])).is_ok()
        })
    }

    /// Takes one segment of the stream at `ts`; `out` gets each message completed.
    pub fn feed<F: FnMut(TextMessage<'_>)>(&mut self, chunk: &[u8], ts: Timestamp, out: F) {
        for &b in chunk {
            self.step(b);
        }
        self.pending.extend_from_slice(chunk);
        let guess = self.may_decrypt();
        if guess || self.due {
            self.due = false;
            self.feeds += 1;
            let pending = std::mem::take(&mut self.pending);
            self.framer.feed(&pending, ts, &self.keys, out);
            if self.framer.buffered() == 0 {
                // The framer ended the message here (e.g. by decrypting it).
                self.state = State::Between;
            } else if guess && self.state == State::Text && self.clean {
                // The tail looked right by chance: from now on this message is
                // tried only when it has doubled, so such chances cannot add up.
                self.clean = false;
                self.last_try = self.len - self.trailing_space;
            }
        }
    }

    /// The client half-closed: whatever is held is a message.
    pub fn close<F: FnMut(TextMessage<'_>)>(&mut self, ts: Timestamp, mut out: F) {
        let pending = std::mem::take(&mut self.pending);
        self.framer.feed(&pending, ts, &self.keys, &mut out);
        self.framer.close(out);
        self.state = State::Between;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_capture::tcptext::Rule;

    const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

    fn run(gate: &mut TextGate, chunks: &[&[u8]]) -> Vec<(Vec<u8>, Rule)> {
        let mut v = vec![];
        for (i, c) in chunks.iter().enumerate() {
            gate.feed(c, Timestamp(i as i64), |m| {
                v.push((m.body.to_vec(), m.rule))
            });
        }
        v
    }

    fn gate() -> TextGate {
        TextGate::new(PosKey::new(KEY).unwrap())
    }

    #[test]
    fn same_messages_as_the_framer_byte_by_byte() {
        let key = PosKey::new(KEY).unwrap();
        let enc = key.encrypt_base64(b"{content:{func_type=5001}, digest:'x'}");
        let stream = format!(
            "{{\"a\":\"}}{{\\\"\",\"b\":[1,{{}}]}}  \n\"QUJD\\/\"\nQUJDRA==\r\n{enc}{{\"c\":[]}}"
        );
        let bytes: Vec<&[u8]> = stream.as_bytes().chunks(1).collect();
        let got = run(&mut gate(), &bytes);
        // The reference: the framer itself, fed the same segments.
        let mut framer = TextFramer::new();
        let mut want = vec![];
        let keys = KeyRing::single(key);
        for (i, b) in bytes.iter().enumerate() {
            framer.feed(b, Timestamp(i as i64), &keys, |m| {
                want.push((m.body.to_vec(), m.rule))
            });
        }
        assert_eq!(
            got.iter().map(|m| m.1).collect::<Vec<_>>(),
            [
                Rule::JsonValue,
                Rule::JsonString,
                Rule::Newline,
                Rule::Decrypts,
                Rule::JsonValue
            ]
        );
        assert_eq!(got, want);
    }

    #[test]
    fn split_encrypted_text_ends_where_it_decrypts() {
        let key = PosKey::new(KEY).unwrap();
        let enc = key.encrypt_base64(&vec![b'x'; 3000]);
        let mut g = gate();
        let chunks: Vec<&[u8]> = enc.as_bytes().chunks(7).collect();
        let got = run(&mut g, &chunks);
        assert_eq!(got, vec![(enc.as_bytes().to_vec(), Rule::Decrypts)]);
        assert_eq!(g.buffered(), 0);
        assert!(!g.in_message());
    }

    #[test]
    fn the_framer_is_fed_rarely() {
        // 200 KB of unterminated JSON in 10-byte segments: the framer is never
        // fed (nothing could end it), so nothing is rescanned.
        let mut g = gate();
        g.feed(b"{\"remark\":\"", Timestamp(0), |_| panic!("no message"));
        for _ in 0..20_000 {
            g.feed(b"aaaaaaaaaa", Timestamp(0), |_| panic!("no message"));
        }
        assert_eq!(g.framer.buffered(), 0);
        assert_eq!(g.pending.len(), 200_011);
        let mut n = 0;
        g.feed(b"\"}", Timestamp(1), |m| {
            n += 1;
            assert_eq!(m.rule, Rule::JsonValue);
        });
        assert_eq!((n, g.buffered()), (1, 0));
    }

    #[test]
    fn linear_on_base64_in_small_segments() {
        // 1 MB of Base64 that never decrypts, in 8- or 9-byte segments, with the key:
        // each segment costs one block at most, and the framer (which would decode
        // and decrypt everything held) is fed a handful of times at most.
        for seg in [&b"QUJDRA=="[..], b"QUJDRUZH", b"QU JD\\/RA"] {
            let mut g = gate();
            for _ in 0..MAX_MESSAGE / seg.len() {
                g.feed(seg, Timestamp(0), |m| panic!("{:?} {:?}", m.rule, seg));
            }
            assert!(g.feeds <= 20, "{} feeds for {:?}", g.feeds, seg);
            assert!(g.in_message());
        }
    }
}
