//! An owned JSON value that keeps number tokens exactly as they appeared on the wire.
//!
//! The digest (D4) is computed over numbers *as sent*: `10.1` and `10.10` sign
//! differently, so a value type that converts numbers to `f64` would lose the one
//! thing the analyzer must check. [`Value::Number`] therefore holds the raw token.
//!
//! [`Value::parse_json`] is a strict RFC 8259 parser for untrusted bytes: nesting is
//! bounded by [`MAX_DEPTH`], the values of a document by [`MAX_VALUES`], input size by
//! [`MAX_INPUT_LEN`], it never panics and it
//! runs in time linear in the input. [`Value::to_json_string`] writes compact JSON.

use core::fmt;
use core::fmt::Write as _;
use std::cell::Cell;

use crate::swar::{json_special_mask, word_at};

/// The string type of member names, strings and number tokens: up to 24 bytes are
/// stored inline (no allocation), which covers nearly every ECR name and value.
/// Re-exported so that users need not name the crate.
pub use compact_str::CompactString;

/// Deepest nesting of arrays and objects any parser in this crate accepts.
///
/// Real ECR messages nest two or three levels; the bound keeps recursion (and
/// `Drop`) shallow for any input.
pub const MAX_DEPTH: usize = 64;

/// Largest input, in bytes, any parser in this crate accepts.
///
/// A serial message is at most 65535 bytes and HTTP bodies are a few hundred;
/// 1 MiB leaves ample room while bounding allocation (a parsed value costs a small
/// constant factor of its text).
pub const MAX_INPUT_LEN: usize = 1 << 20;

/// Most values (strings, numbers, literals, arrays and objects, at any depth) one
/// document may hold in any parser of this crate.
///
/// Real ECR messages hold a few dozen. Without this bound, 1 MiB of `[{},{},...]`
/// made 349,000 values, some 60 MB of tree and records while one message was
/// decoded (the memory budget does not count the message being decoded); at this
/// bound a tree stays within a few megabytes.
pub const MAX_VALUES: usize = 1 << 16;

/// The values of one document counted against [`MAX_VALUES`], by both parsers of
/// this crate (this one and `lenient`).
#[derive(Debug, Default)]
pub(crate) struct ValueCount(usize);

impl ValueCount {
    /// Counts one more value, which starts at byte `offset`: an error once there
    /// are more than [`MAX_VALUES`].
    pub(crate) fn one_more(&mut self, offset: usize) -> Result<(), ValueError> {
        self.0 += 1;
        if self.0 > MAX_VALUES {
            return Err(ValueError::TooManyValues {
                max: MAX_VALUES,
                offset,
            });
        }
        Ok(())
    }
}

/// Why a text could not be parsed into a [`Value`].
///
/// Offsets are byte offsets into the parsed input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The input is larger than [`MAX_INPUT_LEN`].
    #[error("input of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {max} levels at byte {offset}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where the limit was crossed.
        offset: usize,
    },
    /// The document holds more than [`MAX_VALUES`] values.
    #[error("more than {max} values (at byte {offset})")]
    TooManyValues {
        /// The limit.
        max: usize,
        /// Where the limit was crossed.
        offset: usize,
    },
    /// The input is not valid UTF-8.
    #[error("invalid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// First invalid byte.
        offset: usize,
    },
    /// The input ended inside a value.
    #[error("unexpected end of input, expected {expected}")]
    UnexpectedEnd {
        /// What the parser was looking for.
        expected: &'static str,
    },
    /// A character that cannot start or continue a value here.
    #[error("unexpected {found:?} at byte {offset}, expected {expected}")]
    Unexpected {
        /// The character found.
        found: char,
        /// Where.
        offset: usize,
        /// What the parser was looking for.
        expected: &'static str,
    },
    /// A malformed number token.
    #[error("malformed number at byte {offset}")]
    InvalidNumber {
        /// Start of the token.
        offset: usize,
    },
    /// A backslash escape that is not allowed.
    #[error("invalid escape sequence at byte {offset}")]
    InvalidEscape {
        /// The backslash.
        offset: usize,
    },
    /// A `\u` escape giving a lone UTF-16 surrogate.
    #[error("lone surrogate in \\u escape at byte {offset}")]
    LoneSurrogate {
        /// The backslash.
        offset: usize,
    },
    /// A raw control character (below U+0020) inside a string.
    #[error("raw control character in string at byte {offset}")]
    ControlCharacter {
        /// Where.
        offset: usize,
    },
    /// An empty unquoted literal (lenient syntax), e.g. `{a:}`.
    #[error("empty literal at byte {offset}")]
    EmptyLiteral {
        /// Where a value was expected.
        offset: usize,
    },
    /// Something other than whitespace after the value.
    #[error("trailing characters at byte {offset}")]
    TrailingCharacters {
        /// First trailing byte.
        offset: usize,
    },
}

/// An insertion-ordered JSON object.
///
/// Order matters: the wire order is needed to recognise the "keys not sorted"
/// signing mistake and to re-emit bodies byte for byte. Lookups are linear, which
/// is faster than hashing for the handful of members ECR objects have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object(Vec<(CompactString, Value)>);

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Object(Vec::new())
    }

    /// The value of `key`. With duplicate keys the *last* one wins, as in most JSON
    /// parsers (Python's and JavaScript's among them), so the analyzer sees what the
    /// receiving side most likely saw.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Takes the value of `key` (the last member of that name, as [`Object::get`]
    /// finds it) out of the object, leaving `null` in its place: for moving a
    /// member out of an object that is about to be dropped, without a copy.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.0
            .iter_mut()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| core::mem::replace(v, Value::Null))
    }

    /// Appends a member (keeps duplicates; see [`Object::get`]).
    pub fn push(&mut self, key: impl Into<CompactString>, value: Value) {
        self.0.push((key.into(), value));
    }

    /// Sets `key`: replaces the last member of that name or appends a new one.
    pub fn insert(&mut self, key: impl Into<CompactString>, value: Value) {
        let key = key.into();
        match self.0.iter_mut().rev().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Sets every member named `key` (duplicates included) to `value`; the last one
    /// gets `value` itself, earlier ones a copy. Nothing when there is none.
    pub fn replace_all(&mut self, key: &str, value: Value) {
        let Some(last) = self.0.iter().rposition(|(k, _)| k == key) else {
            return;
        };
        for (k, v) in self.0.iter_mut().take(last) {
            if k == key {
                *v = value.clone();
            }
        }
        if let Some((_, v)) = self.0.get_mut(last) {
            *v = value;
        }
    }

    /// Members in wire order, duplicates included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Member names in wire order, duplicates included.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// Number of members, duplicates included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some name occurs more than once (worth a warning: sender and
    /// receiver may disagree about which one counts).
    pub fn has_duplicate_keys(&self) -> bool {
        let mut keys: Vec<&str> = self.keys().collect();
        keys.sort_unstable();
        keys.windows(2).any(|w| w.first() == w.get(1))
    }

    /// The members, in wire order.
    pub fn as_slice(&self) -> &[(CompactString, Value)] {
        &self.0
    }

    /// Consumes the object, giving its members in wire order.
    pub fn into_vec(self) -> Vec<(CompactString, Value)> {
        self.0
    }
}

impl From<Vec<(CompactString, Value)>> for Object {
    fn from(members: Vec<(CompactString, Value)>) -> Self {
        Object(members)
    }
}

impl<K: Into<CompactString>> FromIterator<(K, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Object(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// A JSON value whose numbers are kept as their raw token text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as its token text on the wire (e.g. `"10.10"`), never reformatted.
    Number(CompactString),
    /// A string, unescaped.
    String(CompactString),
    /// An array.
    Array(Vec<Value>),
    /// An object, in wire order.
    Object(Object),
}

impl Value {
    /// Parses strict JSON (RFC 8259) from untrusted bytes.
    ///
    /// Whitespace around the value is allowed, anything else after it is an error.
    /// Bounded by [`MAX_INPUT_LEN`] and [`MAX_DEPTH`].
    pub fn parse_json(input: &[u8]) -> Result<Value, ValueError> {
        Self::parse_json_str(check_input(input)?)
    }

    /// [`Value::parse_json`] of text that is UTF-8 already (a string parsed from
    /// a body, such as a response's `data`): the same checks without validating
    /// the UTF-8 again.
    pub fn parse_json_str(text: &str) -> Result<Value, ValueError> {
        Self::parse_json_str_with(text, false).map(|(v, _)| v)
    }

    /// [`Value::parse_json`] of an envelope: also the [`CompactJson`] of its
    /// top-level `data` (the last one) when that is a string of compact object
    /// text, read in the same pass as the string (see
    /// [`crate::compact::escaped_compact_object`]). `None` does not mean that it is
    /// not: the caller then checks the string as usual.
    ///
    /// [`CompactJson`]: crate::compact::CompactJson
    pub(crate) fn parse_json_envelope(
        input: &[u8],
    ) -> Result<(Value, Option<crate::compact::CompactJson>), ValueError> {
        Self::parse_json_str_with(check_input(input)?, true)
    }

    fn parse_json_str_with(
        text: &str,
        want_data: bool,
    ) -> Result<(Value, Option<crate::compact::CompactJson>), ValueError> {
        check_len(text.len())?;
        let (members, items) = STACKS.with(Cell::take);
        let mut p = JsonParser {
            t: text,
            s: text.as_bytes(),
            pos: 0,
            members,
            items,
            values: ValueCount::default(),
            want_data,
            data: None,
            data_room: Vec::new(),
        };
        let result = p.document();
        let JsonParser {
            mut members,
            mut items,
            data,
            ..
        } = p;
        // Empty after a parse that succeeds; what an error left is dropped here.
        members.clear();
        items.clear();
        if members.capacity() <= STACK_KEEP && items.capacity() <= STACK_KEEP {
            STACKS.with(|c| c.set((members, items)));
        }
        result.map(|v| (v, data))
    }

    /// Compact JSON text (no spaces), members in wire order, numbers as their raw
    /// tokens. This is the form senders put inside `content` strings. A number
    /// token that is not valid JSON (possible from the lenient parser: `+3`, `.5`,
    /// `007`) is written as a JSON string, so the output always parses.
    pub fn to_json_string(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out);
        out
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object, if this is an object.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The raw number token, if this is a number.
    pub fn as_number_token(&self) -> Option<&str> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    /// The number as `f64`, if this is a number (or a string holding one, as the
    /// spec types several numeric fields as strings) and finite.
    pub fn as_f64(&self) -> Option<f64> {
        let t = match self {
            Value::Number(n) => n.as_str(),
            Value::String(s) => s.trim(),
            _ => return None,
        };
        t.parse::<f64>().ok().filter(|f| f.is_finite())
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the kind of value, for messages ("object", "string", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Text for humans: strings without quotes, numbers as their token,
    /// `true`/`false`, `null`, and compact JSON for arrays and objects.
    pub fn to_display_string(&self) -> String {
        match self {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            // Copies, not `to_string` (which goes through the formatter).
            Value::Number(s) | Value::String(s) => s.as_str().to_owned(),
            Value::Array(_) | Value::Object(_) => self.to_json_string(),
        }
    }
}

impl fmt::Display for Value {
    /// Compact JSON, as [`Value::to_json_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json_string())
    }
}

impl From<Object> for Value {
    fn from(o: Object) -> Self {
        Value::Object(o)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s.into())
    }
}

impl From<CompactString> for Value {
    fn from(s: CompactString) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Number(compact_str::ToCompactString::to_compact_string(&n))
    }
}

/// Size and UTF-8 checks shared by both parsers.
pub(crate) fn check_input(input: &[u8]) -> Result<&str, ValueError> {
    check_len(input.len())?;
    core::str::from_utf8(input).map_err(|e| ValueError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })
}

/// The size check shared by both parsers.
pub(crate) fn check_len(len: usize) -> Result<(), ValueError> {
    if len > MAX_INPUT_LEN {
        return Err(ValueError::TooLarge {
            len,
            max: MAX_INPUT_LEN,
        });
    }
    Ok(())
}

/// The character at `pos` of a UTF-8 text (for error messages); `\0` past the end.
pub(crate) fn char_at(s: &[u8], pos: usize) -> char {
    s.get(pos..)
        .and_then(|rest| {
            // At most 4 bytes make a char; the prefix may end mid-char, so trim.
            let n = rest.len().min(4);
            (1..=n)
                .rev()
                .find_map(|k| rest.get(..k).and_then(|b| core::str::from_utf8(b).ok()))
        })
        .and_then(|t| t.chars().next())
        .unwrap_or('\0')
}

/// Whether `tok` is a JSON number token: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
pub fn is_json_number(tok: &[u8]) -> bool {
    let mut i = usize::from(tok.first() == Some(&b'-'));
    match tok.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_end(tok, i),
        _ => return false,
    }
    if tok.get(i) == Some(&b'.') {
        let frac = digits_end(tok, i + 1);
        if frac == i + 1 {
            return false;
        }
        i = frac;
    }
    exponent_end(tok, i) == Some(tok.len())
}

/// Where the run of ASCII digits of `tok` from `i` ends.
pub(crate) fn digits_end(tok: &[u8], mut i: usize) -> usize {
    while matches!(tok.get(i), Some(b'0'..=b'9')) {
        i += 1;
    }
    i
}

/// Where a number's optional exponent (`[eE][+-]?[0-9]+`) that may start at `i`
/// ends (`i` itself when there is none); `None` for an `e` without digits.
pub(crate) fn exponent_end(tok: &[u8], i: usize) -> Option<usize> {
    if !matches!(tok.get(i), Some(b'e' | b'E')) {
        return Some(i);
    }
    let start = i + 1 + usize::from(matches!(tok.get(i + 1), Some(b'+' | b'-')));
    let end = digits_end(tok, start);
    (end > start).then_some(end)
}

/// The bytes that end a run of string text: quote, backslash, control characters.
// Indexing in a constant's initialiser: out of bounds fails the build, never a run.
#[allow(clippy::indexing_slicing)]
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Bytes of `rest` before the first quote, backslash or control character (all of
/// it when there is none). Eight bytes at a time ([`json_special_mask`]), the last few
/// by table.
pub(crate) fn string_run_len(rest: &[u8]) -> usize {
    let mut i = 0;
    while let Some(w) = word_at(rest, i) {
        let m = json_special_mask(w);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let tail = rest.get(i..).unwrap_or_default();
    i + tail
        .iter()
        .position(|&c| SPECIAL.get(usize::from(c)).copied().unwrap_or(true))
        .unwrap_or(tail.len())
}

/// Copies the bytes of `s` from `pos` up to the first quote, backslash or control
/// character (or the end) into `buf` at `o`, eight at a time: each word is stored
/// whole and the write position then moves past its plain bytes only. `buf` is
/// doubled when short and keeps at least 8 bytes of room past the returned `o`, for
/// what the caller writes next (an escape's bytes). Returns the new read and write
/// positions. The string parser's inner loop; [`copy_run_in`] is the same into room
/// that is not grown (`compact`'s one-pass data check).
#[inline(always)]
pub(crate) fn copy_run(
    s: &[u8],
    mut pos: usize,
    buf: &mut Vec<u8>,
    mut o: usize,
) -> (usize, usize) {
    loop {
        if o + 16 > buf.len() {
            buf.resize((buf.len() * 2).max(o + 16), 0);
        }
        // The room less the 8 bytes kept for the caller.
        let room = buf.len().saturating_sub(8);
        match copy_run_in(s, pos, buf.get_mut(..room).unwrap_or_default(), o) {
            Ok(end) => return end,
            Err(at) => (pos, o) = at,
        }
    }
}

/// [`copy_run`] into the room `out` has, which is not grown: `Ok` with the new read
/// and write positions, or `Err` with how far it got when `out` had no room for the
/// rest of the run (a word, or the last few bytes of the input).
#[inline(always)]
pub(crate) fn copy_run_in(
    s: &[u8],
    mut pos: usize,
    out: &mut [u8],
    mut o: usize,
) -> Result<(usize, usize), (usize, usize)> {
    let src = s.get(pos..).unwrap_or_default();
    match copy_words(src, out.get_mut(o..).unwrap_or_default()) {
        Ok(n) => return Ok((pos + n, o + n)),
        Err(done) => {
            pos += done;
            o += done;
        }
    }
    // Fewer than eight bytes of input left, unless the room ran out first.
    let tail = s.get(pos..).unwrap_or_default();
    if tail.len() >= 8 {
        return Err((pos, o));
    }
    let n = string_run_len(tail);
    match (out.get_mut(o..o + n), tail.get(..n)) {
        (Some(d), Some(src)) => {
            d.copy_from_slice(src);
            Ok((pos + n, o + n))
        }
        _ => Err((pos, o)),
    }
}

/// Copies `src` to `dst` a word at a time, as many whole words as both hold, until
/// a word holds a quote, backslash or control character: `Ok(n)` with `n` the plain
/// bytes before that byte (its word is stored whole all the same), `Err(done)` with
/// the bytes copied when either ran out of whole words first. One loop whose bounds
/// checks the compiler hoists out: the inner loop of [`copy_run_in`].
#[inline(always)]
fn copy_words(src: &[u8], dst: &mut [u8]) -> Result<usize, usize> {
    let mut done = 0;
    for (w, d) in src.chunks_exact(8).zip(dst.chunks_exact_mut(8)) {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        d.copy_from_slice(&w.to_le_bytes());
        let m = json_special_mask(w);
        if m != 0 {
            return Ok(done + (m.trailing_zeros() / 8) as usize);
        }
        done += 8;
    }
    Err(done)
}

/// Reads four hex digits at `pos`.
pub(crate) fn hex4(s: &[u8], pos: usize) -> Option<u16> {
    let digits = s.get(pos..pos.checked_add(4)?)?;
    let mut v: u16 = 0;
    for &d in digits {
        let n = (d as char).to_digit(16)?;
        v = (v << 4) | n as u16;
    }
    Some(v)
}

/// Entries of room kept in [`STACKS`] between parses (a body of thousands of
/// members does not leave its stacks behind).
const STACK_KEEP: usize = 256;

/// The parser's member stack and item stack.
type Stacks = (Vec<(CompactString, Value)>, Vec<Value>);

thread_local! {
    /// The parser's member and item stacks, kept (empty) from one parse to the
    /// next on each thread, so that a parse does not allocate and grow its own.
    static STACKS: Cell<Stacks> = const { Cell::new((Vec::new(), Vec::new())) };
}

struct JsonParser<'a> {
    /// The input as text (validated once), for slicing out runs.
    t: &'a str,
    /// The same input as bytes, for scanning.
    s: &'a [u8],
    pos: usize,
    /// Members of the objects being parsed, innermost last: each object takes
    /// its own when it closes, in a vector of exactly their number (no room to
    /// spare: a 1 MiB body of tiny objects makes no more tree than it must).
    members: Vec<(CompactString, Value)>,
    /// The same for the items of arrays.
    items: Vec<Value>,
    /// Values parsed so far, against [`MAX_VALUES`].
    values: ValueCount,
    /// Whether a top-level member named `data` whose value is a string is read
    /// with [`crate::compact::escaped_compact_object`] first (an envelope).
    want_data: bool,
    /// Its result for the last top-level `data` member read (`None` when that
    /// member was not compact object text, or there was none).
    data: Option<crate::compact::CompactJson>,
    /// Where that check writes the text (made at the first `data` member, kept for
    /// the next in the same body).
    data_room: Vec<u8>,
}

impl<'a> JsonParser<'a> {
    /// One value with optional whitespace around it, and nothing else.
    fn document(&mut self) -> Result<Value, ValueError> {
        self.skip_ws();
        let v = self.value(0)?;
        self.skip_ws();
        if self.pos < self.s.len() {
            return Err(ValueError::TrailingCharacters { offset: self.pos });
        }
        Ok(v)
    }

    /// The text between two byte offsets (both on ASCII bytes or the end).
    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.t.get(from..to).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, expected: &'static str) -> ValueError {
        if self.pos >= self.s.len() {
            ValueError::UnexpectedEnd { expected }
        } else {
            ValueError::Unexpected {
                found: char_at(self.s, self.pos),
                offset: self.pos,
                expected,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ValueError> {
        self.values.one_more(self.pos)?;
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            _ => Err(self.unexpected("a value")),
        }
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Result<Value, ValueError> {
        if self.s.get(self.pos..).is_some_and(|r| r.starts_with(word)) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.unexpected("a value"))
        }
    }

    fn number(&mut self) -> Result<Value, ValueError> {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.pos += 1;
        }
        let tok = self.slice(start, self.pos);
        if !is_json_number(tok.as_bytes()) {
            return Err(ValueError::InvalidNumber { offset: start });
        }
        Ok(Value::Number(CompactString::new(tok)))
    }

    fn string(&mut self) -> Result<CompactString, ValueError> {
        // At the opening quote.
        self.pos += 1;
        let start = self.pos;
        let rest = self.s.get(start..).unwrap_or_default();
        let run_len = string_run_len(rest);
        self.pos = start + run_len;
        match rest.get(run_len) {
            Some(b'"') => {
                // The common case, a string without escapes: inline up to 24
                // bytes, else one exact allocation.
                let text = CompactString::new(self.slice(start, self.pos));
                self.pos += 1;
                return Ok(text);
            }
            Some(b'\\') => {}
            None => return Err(ValueError::UnexpectedEnd { expected: "'\"'" }),
            Some(_) => return Err(ValueError::ControlCharacter { offset: self.pos }),
        }
        // Escapes (a response's `data` is JSON in a string, with `\"` every few
        // bytes): the text is copied eight bytes at a time into a buffer of known
        // room (one store; the write position then moves to the first special
        // byte), `\"`, `\\` and `\/` put one byte. Only whole UTF-8 sequences of
        // the (validated) input and encoded chars are kept, so the bytes stay UTF-8.
        // Room for the rest of the input (which bounds the string) up to 1 KiB, so
        // that a response's `data` fits without regrowing; doubled when short.
        let mut buf = vec![0u8; rest.len().min(1024).max(run_len + 64) + 16];
        let mut o = run_len;
        if let (Some(dst), Some(src)) = (buf.get_mut(..run_len), rest.get(..run_len)) {
            dst.copy_from_slice(src);
        }
        let s = self.s;
        let mut pos = self.pos;
        loop {
            (pos, o) = copy_run(s, pos, &mut buf, o);
            match s.get(pos) {
                None => {
                    self.pos = pos;
                    return Err(ValueError::UnexpectedEnd { expected: "'\"'" });
                }
                Some(b'"') => {
                    self.pos = pos + 1;
                    buf.truncate(o);
                    if buf.capacity() > 2 * o + 64 {
                        buf.shrink_to_fit();
                    }
                    return String::from_utf8(buf)
                        .map(CompactString::from)
                        .map_err(|_| ValueError::InvalidUtf8 { offset: start });
                }
                Some(b'\\') => match s.get(pos + 1) {
                    Some(&c @ (b'"' | b'\\' | b'/')) => {
                        if let Some(d) = buf.get_mut(o) {
                            *d = c;
                        }
                        o += 1;
                        pos += 2;
                    }
                    _ => {
                        // Rarer escapes: `\n` and the like, `\uXXXX` (up to 4 bytes).
                        let mut enc = Vec::with_capacity(4);
                        self.pos = pos;
                        self.escape(&mut enc)?;
                        pos = self.pos;
                        if let Some(dst) = buf.get_mut(o..o + enc.len()) {
                            dst.copy_from_slice(&enc);
                        }
                        o += enc.len();
                    }
                },
                Some(_) => {
                    self.pos = pos;
                    return Err(ValueError::ControlCharacter { offset: pos });
                }
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        let at = self.pos;
        let c = self
            .s
            .get(at + 1)
            .copied()
            .ok_or(ValueError::UnexpectedEnd {
                expected: "an escape",
            })?;
        self.pos += 2;
        let b = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(at, out),
            _ => return Err(ValueError::InvalidEscape { offset: at }),
        };
        out.push(b);
        Ok(())
    }

    fn unicode_escape(&mut self, at: usize, out: &mut Vec<u8>) -> Result<(), ValueError> {
        let hi = hex4(self.s, self.pos).ok_or(ValueError::InvalidEscape { offset: at })?;
        self.pos += 4;
        let code = match hi {
            0xD800..=0xDBFF => {
                if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(ValueError::LoneSurrogate { offset: at });
                }
                let lo = hex4(self.s, self.pos + 2)
                    .ok_or(ValueError::InvalidEscape { offset: self.pos })?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(ValueError::LoneSurrogate { offset: at });
                }
                self.pos += 6;
                0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(ValueError::LoneSurrogate { offset: at }),
            _ => u32::from(hi),
        };
        let ch = char::from_u32(code).ok_or(ValueError::LoneSurrogate { offset: at })?;
        out.extend_from_slice(ch.encode_utf8(&mut [0u8; 4]).as_bytes());
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Value, ValueError> {
        if depth > MAX_DEPTH {
            return Err(ValueError::TooDeep {
                max: MAX_DEPTH,
                offset: self.pos,
            });
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(Vec::new()));
        }
        let start = self.items.len();
        loop {
            self.skip_ws();
            let v = self.value(depth)?;
            self.items.push(v);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(self.items.drain(start..).collect()));
                }
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
    }

    /// The value of a top-level `data` member: a string holding compact object
    /// text is unescaped and checked in one pass, anything else read as usual.
    fn data_member(&mut self, depth: usize) -> Result<Value, ValueError> {
        self.data = None;
        if self.peek() == Some(b'"') {
            if let Some((c, end)) =
                crate::compact::escaped_compact_object(self.s, self.pos + 1, &mut self.data_room)
            {
                self.pos = end;
                let text = CompactString::new(c.as_str());
                self.data = Some(c);
                return Ok(Value::String(text));
            }
        }
        self.value(depth)
    }

    fn object(&mut self, depth: usize) -> Result<Value, ValueError> {
        if depth > MAX_DEPTH {
            return Err(ValueError::TooDeep {
                max: MAX_DEPTH,
                offset: self.pos,
            });
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(Object::new()));
        }
        let start = self.members.len();
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("a member name"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.unexpected("':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let v = if self.want_data && depth == 1 && key == "data" {
                self.data_member(depth)?
            } else {
                self.value(depth)?
            };
            self.members.push((key, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(Object(self.members.drain(start..).collect())));
                }
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
    }
}

/// Appends `s` as a JSON string literal (quotes included).
///
/// Escapes only what JSON requires (quote, backslash, control characters); `/`
/// and non-ASCII are written as they are, as JavaScript's `JSON.stringify` does.
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // Lenient tokens such as `+3`, `.5` or `007` are not JSON numbers: they
        // are written as strings so that the output is always valid JSON.
        Value::Number(n) if is_json_number(n.as_bytes()) => out.push_str(n),
        Value::Number(n) => write_json_string(n, out),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, item)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// serde_json's answer to whether `tok` (made of number characters only) is
    /// one JSON number. Read as a raw value, which checks the grammar and not the
    /// magnitude: `1e999` is a number by the grammar. (Reading it as a `Value` and
    /// taking "out of range" for a number also took `1e310E`, where serde_json
    /// stops at the magnitude before it sees the stray `E`.)
    fn serde_says_number(tok: &str) -> bool {
        serde_json::from_str::<Box<serde_json::value::RawValue>>(tok).is_ok()
    }

    #[test]
    fn json_number_tokens() {
        for tok in [
            "0", "-0", "7", "10", "10.10", "0.5", "-1.5e+3", "1E5", "1e-07", "0e0", "1e310",
        ] {
            assert!(is_json_number(tok.as_bytes()), "{tok}");
        }
        for tok in [
            "", "-", "+1", "01", "-01", "1.", ".5", "1e", "1e+", "1.e5", "--1", "1-", "0x1", "1 ",
            "Infinity", "NaN", "1e310E",
        ] {
            assert!(!is_json_number(tok.as_bytes()), "{tok}");
        }
    }

    proptest! {
        #[test]
        fn json_number_tokens_are_what_serde_json_reads(tok in "[-+0-9.eE]{1,7}") {
            prop_assert_eq!(is_json_number(tok.as_bytes()), serde_says_number(&tok), "{}", tok);
        }

        /// Exponents out of a double's range, with and without a stray character
        /// after them (the case the oracle once got wrong).
        #[test]
        fn json_number_tokens_with_huge_exponents(
            mantissa in "-?(0|[1-9][0-9]{0,2})(\\.[0-9]{1,3})?",
            exponent in "[eE][-+]?[0-9]{3,5}",
            tail in "([-+0-9.eE]?)",
        ) {
            let tok = format!("{mantissa}{exponent}{tail}");
            prop_assert_eq!(is_json_number(tok.as_bytes()), serde_says_number(&tok), "{}", tok);
            prop_assert_eq!(is_json_number(tok.as_bytes()), tail.is_empty() || tail.bytes().all(|b| b.is_ascii_digit()), "{}", tok);
        }
    }

    #[test]
    fn objects_and_arrays_take_no_spare_room() {
        // A body of many tiny objects (the hostile `open_json_10` capture) makes
        // a tree of exactly its members: room for 8 each once took 66 MB there.
        let text = format!("[{}{{\"a\":[1,2,3]}}]", r#"{"a":"x"},"#.repeat(1000));
        let Value::Array(items) = Value::parse_json(text.as_bytes()).unwrap() else {
            panic!("an array");
        };
        assert_eq!((items.len(), items.capacity()), (1001, 1001));
        for v in &items {
            let Value::Object(o) = v else {
                panic!("objects")
            };
            assert_eq!((o.0.len(), o.0.capacity()), (1, 1));
        }
        let Some(Value::Object(last)) = items.last() else {
            panic!("an object")
        };
        let Some((_, Value::Array(inner))) = last.0.first() else {
            panic!("an inner array")
        };
        assert_eq!((inner.len(), inner.capacity()), (3, 3));
    }

    /// The parser's stacks are kept between parses: what a failed parse left on
    /// them never shows up in the next one.
    #[test]
    fn a_failed_parse_leaves_nothing_for_the_next() {
        for bad in [
            &br#"{"a":[1,2,{"b":"#[..],
            br#"[1,[2,[3,{"k":"v","#,
            br#"{"a":1,"b":[true,null],}"#,
        ] {
            assert!(Value::parse_json(bad).is_err());
            let v = Value::parse_json(br#"{"x":[1,{"y":2}],"z":"t"}"#).unwrap();
            assert_eq!(v.to_json_string(), r#"{"x":[1,{"y":2}],"z":"t"}"#);
        }
        // A large body's stacks are dropped, not kept: the next parse still works.
        let big = format!("[{}1]", "1,".repeat(10_000));
        assert!(Value::parse_json(big.as_bytes()).is_ok());
        assert_eq!(Value::parse_json(b"[]").unwrap().to_json_string(), "[]");
    }

    #[test]
    fn string_runs_stop_at_the_first_special_byte() {
        for len in 0..40usize {
            let plain = vec![b'a'; len];
            assert_eq!(string_run_len(&plain), len);
            for at in 0..len {
                for special in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                    let mut s = plain.clone();
                    s[at] = special;
                    // A later special byte of the other kind does not matter.
                    if at + 3 < len {
                        s[at + 3] = if special == b'"' { 1 } else { b'"' };
                    }
                    assert_eq!(string_run_len(&s), at, "{len} {at} {special}");
                }
            }
        }
        assert_eq!(string_run_len("é\u{7f}x\"".as_bytes()), 4);
    }

    #[test]
    fn take_moves_the_last_member_out() {
        let mut o = Object::new();
        o.push("a", Value::from("1"));
        o.push("a", Value::from("2"));
        assert_eq!(o.take("a"), Some(Value::from("2")));
        assert_eq!(o.get("a"), Some(&Value::Null));
        assert_eq!(o.take("b"), None);
    }

    fn p(s: &str) -> Result<Value, ValueError> {
        Value::parse_json(s.as_bytes())
    }

    #[test]
    fn numbers_keep_their_token() {
        let v = p(r#"{"amt":10.10,"n":-0.5e+3,"i":100}"#).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.get("amt"), Some(&Value::Number("10.10".into())));
        assert_eq!(o.get("n").and_then(Value::as_number_token), Some("-0.5e+3"));
        assert_eq!(o.get("i").and_then(Value::as_f64), Some(100.0));
        assert_eq!(v.to_json_string(), r#"{"amt":10.10,"n":-0.5e+3,"i":100}"#);
    }

    #[test]
    fn round_trip_keeps_order_and_escapes() {
        let text = r#"{"z":"a\"b\\c\n\u0001é/","a":[true,false,null,[],{}],"m":""}"#;
        let v = p(text).unwrap();
        assert_eq!(v.to_json_string(), text);
        let keys: Vec<_> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }

    #[test]
    fn lenient_tokens_stay_valid_json() {
        let v = Value::Array(vec![
            Value::Number("+3".into()),
            Value::Number(".5".into()),
            Value::Number("007".into()),
            Value::Number("-1.5e3".into()),
        ]);
        let text = v.to_json_string();
        assert_eq!(text, r#"["+3",".5","007",-1.5e3]"#);
        assert!(Value::parse_json(text.as_bytes()).is_ok());
    }

    #[test]
    fn unescapes_strings() {
        let v = p(r#""a\/b\u00e9\ud83d\ude00\t""#).unwrap();
        assert_eq!(v.as_str(), Some("a/bé😀\t"));
    }

    #[test]
    fn rejects_bad_json() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "\"a\u{1}\"",
            "{a:1}",
            "'a'",
            "1 2",
            "[1 2]",
            "\"abc",
            "NaN",
        ] {
            assert!(p(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn reports_positions() {
        assert_eq!(
            p("[1 2]"),
            Err(ValueError::Unexpected {
                found: '2',
                offset: 3,
                expected: "',' or ']'"
            })
        );
        assert_eq!(p("1 x"), Err(ValueError::TrailingCharacters { offset: 2 }));
        assert_eq!(
            Value::parse_json(b"\"\xff\""),
            Err(ValueError::InvalidUtf8 { offset: 1 })
        );
    }

    #[test]
    fn depth_is_bounded() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(p(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(matches!(p(&deep), Err(ValueError::TooDeep { .. })));
        let very_deep = "{\"a\":".repeat(100_000);
        assert!(matches!(p(&very_deep), Err(ValueError::TooDeep { .. })));
    }

    #[test]
    fn values_are_bounded() {
        // An array and its items: MAX_VALUES values in all parse, one more does not,
        // in the strict parser and in the lenient one alike.
        let doc = |items: usize| format!("[{}]", vec!["{}"; items].join(","));
        let ok = doc(MAX_VALUES - 1);
        assert!(p(&ok).is_ok());
        assert!(crate::lenient::parse_lenient_str(&ok).is_ok());
        let over = doc(MAX_VALUES);
        assert!(matches!(
            p(&over),
            Err(ValueError::TooManyValues {
                max: MAX_VALUES,
                ..
            })
        ));
        assert!(matches!(
            crate::lenient::parse_lenient_str(&over),
            Err(ValueError::TooManyValues { .. })
        ));
        // Members count too, at any depth.
        let members = format!(
            "{{\"a\":[{}]}}",
            vec!["{\"k\":1}"; MAX_VALUES / 2].join(",")
        );
        assert!(matches!(p(&members), Err(ValueError::TooManyValues { .. })));
    }

    #[test]
    fn parse_json_str_agrees_with_parse_json() {
        for text in [r#"{"a":"\u00e9x","b":[1,2.5]}"#, "{", "1 2", "\"é\""] {
            assert_eq!(Value::parse_json_str(text), p(text), "{text}");
            assert_eq!(
                crate::lenient::parse_lenient_str(text),
                crate::lenient::parse_lenient(text.as_bytes()),
                "{text}"
            );
        }
        let big = " ".repeat(MAX_INPUT_LEN + 1);
        assert!(matches!(
            Value::parse_json_str(&big),
            Err(ValueError::TooLarge { .. })
        ));
        assert!(matches!(
            crate::lenient::parse_lenient_str(&big),
            Err(ValueError::TooLarge { .. })
        ));
    }

    #[test]
    fn size_is_bounded() {
        let big = vec![b' '; MAX_INPUT_LEN + 1];
        assert!(matches!(
            Value::parse_json(&big),
            Err(ValueError::TooLarge { .. })
        ));
    }

    #[test]
    fn object_helpers() {
        let v = p(r#"{"a":1,"b":"x","a":2}"#).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.get("a").and_then(Value::as_number_token), Some("2"));
        assert!(o.has_duplicate_keys());
        assert_eq!(o.len(), 3);
        let mut o2 = Object::new();
        o2.insert("k", Value::from("v"));
        o2.insert("k", Value::from(5));
        assert_eq!(Value::Object(o2).to_json_string(), r#"{"k":5}"#);
        assert_eq!(Value::from("x").to_display_string(), "x");
        assert_eq!(Value::Null.to_display_string(), "null");
        assert_eq!(Value::Bool(true).kind_name(), "boolean");
    }

    #[test]
    fn matches_serde_json_on_valid_input() {
        let text = r#"{"respcd":"6000","data":"{\"a\":1}","x":[1.5,-2,3e10],"y":{"z":null}}"#;
        let ours = p(text).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
        let again: serde_json::Value = serde_json::from_str(&ours.to_json_string()).unwrap();
        assert_eq!(theirs, again);
    }

    #[test]
    fn escaped_strings_unescape_like_serde_json() {
        // The response `data` form: JSON inside a string, every quote escaped.
        for text in [
            r#""{\"a\":\"1\",\"b\":\"x\\y\"}""#,
            r#""\u00e9t\u00e9 \ud83d\ude00 tab\there""#,
            r#""\n""#,
            r#""plain, no escape""#,
            r#""\\\"\/\\""#,
            r#""\"\"\"x\\\\""#,
            r#""a\/b\\n\"é\"\u0022\/""#,
            r#""{\"k\":\"a long value past sixteen bytes\"}\"""#,
        ] {
            let ours = Value::parse_json(text.as_bytes()).unwrap();
            let theirs: String = serde_json::from_str(text).unwrap();
            assert_eq!(ours, Value::from(theirs));
        }
        // Unterminated after an escape that is copied with its run.
        for text in [r#""\""#, r#""\"abc"#, r#""ab\/"#, r#""\\"#] {
            assert!(Value::parse_json(text.as_bytes()).is_err(), "{text}");
            assert!(serde_json::from_str::<String>(text).is_err(), "{text}");
        }
    }
}
