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

use ecr_proto::cipher::{is_base64_text_byte, KeyRing};
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

/// The end (exclusive) of the JSON value or string literal at the start of `b`, if
/// it is complete.
fn json_end(b: &[u8]) -> Option<usize> {
    let open = *b.first()?;
    if open == b'"' {
        let mut esc = false;
        for (i, &c) in b.iter().enumerate().skip(1) {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => return Some(i + 1),
                _ => {}
            }
        }
        return None;
    }
    let mut depth = 0usize;
    let mut in_str = false;
    let mut esc = false;
    for (i, &c) in b.iter().enumerate() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
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
            pos += skip;
            let rest = self.buf.get(pos..).unwrap_or(&[]);
            let Some(&first) = rest.first() else { break };
            let first_ts = self.first_ts.unwrap_or(ts);
            let found = match first {
                b'{' | b'[' => json_end(rest).map(|e| (e, e, Rule::JsonValue)),
                b'"' => json_end(rest).map(|e| (e, e, Rule::JsonString)),
                _ => match memchr::memchr(b'\n', rest) {
                    Some(nl) => Some((nl, nl + 1, Rule::Newline)),
                    None if !keys.is_empty() && decrypts(rest, keys) => {
                        Some((rest.len(), rest.len(), Rule::Decrypts))
                    }
                    None => None,
                },
            };
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
                }
                None => break,
            }
        }
        self.buf.drain(..pos.min(self.buf.len()));
        if self.buf.is_empty() {
            self.first_ts = None;
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
        self.buf.clear();
        self.first_ts = None;
    }

    /// Bytes were lost: whatever was buffered cannot be completed.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.first_ts = None;
    }
}

/// Whether `text` is Base64 whose decoded bytes decrypt with valid padding under
/// one of the keys.
fn decrypts(text: &[u8], keys: &KeyRing) -> bool {
    let t = trim(text);
    if t.len() < 24 || t.len() % 4 != 0 || !t.iter().all(|&c| is_base64_text_byte(c)) {
        return false;
    }
    keys.decrypt_base64_with(t, |plain| std::str::from_utf8(plain).is_ok())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
