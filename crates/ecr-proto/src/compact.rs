//! JSON object text that can be copied to an output as it is.
//!
//! A response's `data` is JSON inside a JSON string: read in full, it is parsed a
//! second time into a tree, and a JSON Lines record writes that tree back as
//! compact JSON, the very bytes the terminal sent whenever it sent compact JSON.
//! [`CompactJson::new`] checks that case in one pass without building anything:
//! the text is valid (exactly what [`Value::parse_json_str`] accepts), has no
//! whitespace between tokens and no escapes but `\"` and `\\`, so that writing its
//! parse gives back the same bytes. Such text is kept as it is; the tree is built
//! only for a reader that asks for it ([`CompactJson::to_value`]), and the few
//! members an analyzer needs are read with [`CompactJson::members`].
//!
//! Bounded as the parser: at most [`MAX_INPUT_LEN`] bytes and [`MAX_DEPTH`] levels,
//! linear time, no panic, no allocation but the one copy of the text.

use crate::value::{
    copy_run_in, is_json_number, string_run_len, CompactString, Object, Value, MAX_DEPTH,
    MAX_INPUT_LEN,
};

/// An object's JSON text in compact canonical form (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactJson {
    text: CompactString,
    /// For each top-level member: the offsets of its name's opening quote and of
    /// its value (found by the check, so that reading a member scans nothing).
    top: Vec<(u32, u32)>,
}

impl CompactJson {
    /// `text` when it is a JSON object in compact canonical form, else `None` (the
    /// caller then parses it as usual, which also says what is wrong with it).
    pub fn new(text: &str) -> Option<CompactJson> {
        let mut c = Checker::new(text);
        c.object_text().then(|| CompactJson {
            text: CompactString::new(text),
            top: c.top,
        })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed object. The text was checked, so this cannot fail; should it
    /// ever, the result is an empty object rather than a panic.
    pub fn to_object(&self) -> Object {
        match Value::parse_json_str(&self.text) {
            Ok(Value::Object(o)) => o,
            _ => Object::new(),
        }
    }

    /// [`CompactJson::to_object`] as a [`Value`].
    pub fn to_value(&self) -> Value {
        Value::Object(self.to_object())
    }

    /// For each of `keys`, the JSON text of the top-level member of that name, as
    /// sent (`None` when absent). With several members of one name the last counts,
    /// as in [`Object::get`]. Reads the member offsets noted by the check: no scan.
    /// [`member_text`] reads a returned value as an analyzer reads a fact.
    pub fn members<const N: usize>(&self, keys: [&str; N]) -> [Option<&str>; N] {
        let mut out: [Option<&str>; N] = [None; N];
        let ends = self
            .top
            .iter()
            .skip(1)
            .map(|&(next, _)| (next as usize).saturating_sub(1)) // the comma
            .chain([self.text.len().saturating_sub(1)]); // the closing brace
        let bytes = self.text.as_bytes();
        for (&(name, value), end) in self.top.iter().zip(ends) {
            let (name, value) = (name as usize, value as usize);
            // A name with escapes holds a quote or backslash: no wanted key does,
            // so comparing the text as sent is exact. As bytes: only a value
            // returned is sliced as text.
            let Some(key) = bytes.get(name + 1..value.saturating_sub(2)) else {
                continue;
            };
            // Length and first byte before the whole name: of a data's dozen or
            // two names, only the wanted ones then get as far as a comparison.
            let k0 = key.first();
            let wanted = |k: &&str| {
                k.len() == key.len() && k.as_bytes().first() == k0 && k.as_bytes() == key
            };
            if let Some(i) = keys.iter().position(wanted) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = self.text.get(value..end);
                }
            }
        }
        out
    }
}

/// A member value from [`CompactJson::members`] as text: a string's text, a
/// number's token, `true`/`false`, compact JSON of an array or object; `None` for
/// null (the form in which the analyzer keeps facts).
pub fn member_text(raw: &str) -> Option<CompactString> {
    if raw == "null" {
        return None;
    }
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if inner.contains('\\') => {
            // Only `\"` and `\\` occur in canonical text.
            let mut t = CompactString::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    t.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            Some(t)
        }
        Some(inner) => Some(CompactString::new(inner)),
        None => Some(CompactString::new(raw)),
    }
}

/// The [`CompactJson`] of a JSON string's text read *as it is sent*, escaped: `s`
/// from `start` (just after the string's opening quote). A response's `data` is
/// such a string (`"{\"syssn\":\"2026\",...}"`); unescaping it and then checking
/// the result are two passes over it, this is one. `Some` with the unescaped text's
/// check (what [`CompactJson::new`] of the unescaped text gives, property-tested)
/// and where the string ends (after its closing quote) when the string holds
/// exactly one object in compact canonical form and uses no escapes but `\"`,
/// `\\` and `\/`; `None` for anything else, which the caller then reads the usual
/// way (unescape, then check), so that every error and every rarer escape is
/// handled there. Linear, bounded as the check.
///
/// `room` is where the text is written: the text is never longer than the input it
/// is read from (each escape is longer than what it stands for), so room for all of
/// the input left, and 16 bytes more for the whole-word stores, is made once and
/// nothing is checked or grown while reading. The caller keeps `room` for the
/// next `data` member of the same body, whose input left is shorter: a body with
/// many of them makes it once, not once for each.
pub(crate) fn escaped_compact_object(
    s: &[u8],
    start: usize,
    room: &mut Vec<u8>,
) -> Option<(CompactJson, usize)> {
    if s.get(start) != Some(&b'{') {
        return None;
    }
    let need = s.len().saturating_sub(start) + 16;
    if room.len() < need {
        room.resize(need, 0);
    }
    let mut f = Escaped {
        s,
        pos: start,
        out: room,
        o: 0,
        short: false,
        top: Vec::with_capacity(32),
    };
    if !f.value(0) || f.peek() != Some(b'"') || f.o > MAX_INPUT_LEN || f.short {
        return None;
    }
    // Runs are copied whole between ASCII bytes of text that is UTF-8, so this holds;
    // checked all the same rather than assumed.
    let text = std::str::from_utf8(f.out.get(..f.o)?).ok()?;
    Some((
        CompactJson {
            text: CompactString::new(text),
            top: f.top,
        },
        f.pos + 1,
    ))
}

/// The state of [`escaped_compact_object`]: the grammar of [`Checker`], read
/// through one level of JSON string escaping (a quote of the text is `\"`, a
/// backslash `\\`), writing the unescaped text as it goes.
struct Escaped<'a, 'r> {
    s: &'a [u8],
    pos: usize,
    /// The text so far: its first `o` bytes (the rest is room, at least as much as
    /// the input left and 16 bytes more).
    out: &'r mut [u8],
    o: usize,
    /// Set should a write ever find no room (it cannot, see above): the result is
    /// then refused rather than wrong.
    short: bool,
    top: Vec<(u32, u32)>,
}

impl Escaped<'_, '_> {
    /// At an escaped quote, the text's quote.
    fn at_quote(&self) -> bool {
        self.peek() == Some(b'\\') && self.s.get(self.pos + 1) == Some(&b'"')
    }

    /// Writes a byte of the text.
    #[inline(always)]
    fn put(&mut self, b: u8) {
        write_at(self.out, &mut self.short, self.o, b);
        self.o += 1;
    }
}

/// Writes `b` at `at` in `out`, or sets `short` when there is no room there.
#[inline(always)]
fn write_at(out: &mut [u8], short: &mut bool, at: usize, b: u8) {
    match out.get_mut(at) {
        Some(d) => *d = b,
        None => *short = true,
    }
}

impl Grammar for Escaped<'_, '_> {
    fn input(&self) -> (&[u8], usize) {
        (self.s, self.pos)
    }

    /// Copies the byte at the read position to the text.
    fn take(&mut self) {
        if let Some(&b) = self.s.get(self.pos) {
            self.put(b);
        }
        self.pos += 1;
    }

    fn at_string(&self) -> bool {
        self.at_quote()
    }

    fn here(&self) -> usize {
        self.o
    }

    fn top_member(&mut self, name: usize, value: usize) {
        // Past MAX_INPUT_LEN the result is refused, so these are never cut short.
        self.top.push((name as u32, value as u32));
    }

    /// A string of the text, at its escaped opening quote.
    #[inline(always)]
    fn string(&mut self) -> bool {
        self.put(b'"');
        // In locals: the loop is the inner loop of a response's `data`.
        let s = self.s;
        let (mut pos, mut o) = (self.pos + 2, self.o);
        let mut short = self.short;
        let out = &mut *self.out;
        let closed = loop {
            // `out` has room for the input left and 16 bytes more: the run fits.
            (pos, o) = copy_run_in(s, pos, out, o).unwrap_or_else(|at| {
                short = true;
                at
            });
            // A backslash: the sent string's escape. Anything else ends the sent
            // string (a quote) or is not JSON (a control character, the end).
            if s.get(pos) != Some(&b'\\') {
                break false;
            }
            match s.get(pos + 1) {
                // The text's closing quote.
                Some(b'"') => {
                    write_at(out, &mut short, o, b'"');
                    o += 1;
                    pos += 2;
                    break true;
                }
                // The text's own escape, `\"` or `\\`, sent as `\\\"` or `\\\\`.
                Some(b'\\') => {
                    let escaped = match (s.get(pos + 2), s.get(pos + 3)) {
                        (Some(b'\\'), Some(&c @ (b'"' | b'\\'))) => c,
                        _ => break false,
                    };
                    write_at(out, &mut short, o, b'\\');
                    write_at(out, &mut short, o + 1, escaped);
                    o += 2;
                    pos += 4;
                }
                Some(b'/') => {
                    write_at(out, &mut short, o, b'/');
                    o += 1;
                    pos += 2;
                }
                _ => break false,
            }
        };
        (self.pos, self.o, self.short) = (pos, o, short);
        closed
    }
}

/// Whether `text` is one JSON object in compact canonical form.
pub fn is_compact_object(text: &str) -> bool {
    Checker::new(text).object_text()
}

/// The checker: the grammar of `value::JsonParser` (same depth bound, same number
/// rule), with no whitespace and only the escapes a writer produces for `"`, `\`.
struct Checker<'a> {
    s: &'a [u8],
    pos: usize,
    /// Where the top-level members start, see [`CompactJson`].
    top: Vec<(u32, u32)>,
}

impl<'a> Checker<'a> {
    fn new(text: &'a str) -> Self {
        Checker {
            s: text.as_bytes(),
            pos: 0,
            // A response's `data` has a dozen or two members (17 from the
            // terminals of the dense benchmark): room for 32, so that it does not grow.
            top: Vec::with_capacity(32),
        }
    }

    /// Whether the whole text is one object (and within the size bound, so that
    /// offsets fit in `u32`).
    fn object_text(&mut self) -> bool {
        self.s.len() <= MAX_INPUT_LEN
            && self.peek() == Some(b'{')
            && self.value(0)
            && self.pos == self.s.len()
    }
}

impl Grammar for Checker<'_> {
    fn input(&self) -> (&[u8], usize) {
        (self.s, self.pos)
    }

    fn take(&mut self) {
        self.pos += 1;
    }

    fn at_string(&self) -> bool {
        self.peek() == Some(b'"')
    }

    fn here(&self) -> usize {
        self.pos
    }

    fn top_member(&mut self, name: usize, value: usize) {
        // Offsets below MAX_INPUT_LEN (checked first) fit in u32.
        self.top.push((name as u32, value as u32));
    }

    fn string(&mut self) -> bool {
        self.pos += 1;
        loop {
            self.pos += string_run_len(self.s.get(self.pos..).unwrap_or_default());
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return true;
                }
                Some(b'\\') if matches!(self.s.get(self.pos + 1), Some(b'"' | b'\\')) => {
                    self.pos += 2
                }
                // Another escape, a control character or the end.
                _ => return false,
            }
        }
    }
}

/// The grammar the two readers share: compact canonical JSON, that is the strict
/// parser's grammar (`value::JsonParser`: same depth bound, same number rule) with
/// no white space and no escapes but `\"` and `\\`. [`Checker`] reads the text
/// itself, [`Escaped`] the text as sent inside a JSON string (writing it out
/// unescaped); they differ in how a string is read and a byte stepped over, never in
/// what is accepted, so that the one pass cannot drift from the check it stands for.
trait Grammar {
    /// The input and the read position in it.
    fn input(&self) -> (&[u8], usize);

    /// The byte at the read position.
    fn peek(&self) -> Option<u8> {
        let (s, pos) = self.input();
        s.get(pos).copied()
    }

    /// Steps over the byte at the read position.
    fn take(&mut self);
    /// Whether a string starts at the read position.
    fn at_string(&self) -> bool;
    /// A string, at its start.
    fn string(&mut self) -> bool;
    /// The read position as an offset in the text.
    fn here(&self) -> usize;
    /// Notes a top-level member: where its name's quote and its value are in the
    /// text (see [`CompactJson`]).
    fn top_member(&mut self, name: usize, value: usize);

    fn number(&mut self) -> bool {
        let start = self.input().1;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.take();
        }
        let (s, end) = self.input();
        is_json_number(s.get(start..end).unwrap_or_default())
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let (s, pos) = self.input();
        let ok = s.get(pos..).is_some_and(|r| r.starts_with(word));
        if ok {
            for _ in word {
                self.take();
            }
        }
        ok
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => self.members(depth + 1, b'}', true),
            Some(b'[') => self.members(depth + 1, b']', false),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => self.at_string() && self.string(),
        }
    }

    /// An object (`named`) or array, at its opening bracket.
    fn members(&mut self, depth: usize, close: u8, named: bool) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        self.take();
        if self.peek() == Some(close) {
            self.take();
            return true;
        }
        loop {
            if named {
                let name = self.here();
                if !self.at_string() || !self.string() || self.peek() != Some(b':') {
                    return false;
                }
                self.take();
                if depth == 1 {
                    let value = self.here();
                    self.top_member(name, value);
                }
            }
            // A string or number (the usual member) read here, without the call
            // (and the reloads of the state around it) that `value` costs.
            let read = match self.peek() {
                Some(b'-' | b'0'..=b'9') => self.number(),
                _ if self.at_string() => self.string(),
                _ => self.value(depth),
            };
            if !read {
                return false;
            }
            match self.peek() {
                Some(b',') => self.take(),
                Some(c) if c == close => {
                    self.take();
                    return true;
                }
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What [`escaped_compact_object`] stands for: unescape the string, then check.
    fn two_passes(literal: &str) -> Option<CompactJson> {
        match Value::parse_json_str(literal) {
            Ok(Value::String(text)) => CompactJson::new(&text),
            _ => None,
        }
    }

    #[test]
    fn a_data_string_is_unescaped_and_checked_in_one_pass() {
        let literal = r#""{\"syssn\":\"2026\",\"q\":\"a\\\"b\\\\c\",\"u\":\"x\/y\",\"n\":[1,-2.5e3,true,null,{}]}""#;
        let (c, end) = escaped_compact_object(literal.as_bytes(), 1, &mut Vec::new()).unwrap();
        assert_eq!(end, literal.len());
        assert_eq!(
            c.as_str(),
            r#"{"syssn":"2026","q":"a\"b\\c","u":"x/y","n":[1,-2.5e3,true,null,{}]}"#
        );
        assert_eq!(Some(c), two_passes(literal));
        // Left to the two passes: other escapes, white space, a value that is not
        // an object, a string that ends inside the object.
        for other in [
            r#""{\"a\":\"\u0041\"}""#,
            r#""{\"a\":\"x\ny\"}""#,
            r#""{\"a\": 1}""#,
            r#"" {\"a\":1}""#,
            r#""[1,2]""#,
            r#""{\"a\":1""#,
            r#""{\"a\":\"x\\/\"}""#,
            r#""{\"a\":1}x""#,
        ] {
            assert!(
                escaped_compact_object(other.as_bytes(), 1, &mut Vec::new()).is_none(),
                "{other}"
            );
        }
    }

    #[test]
    fn the_one_pass_reads_a_short_text_before_much_input_and_a_long_text_whole() {
        let mut body = r#""{\"a\":1}","#.to_string();
        body.push_str(&" ".repeat(1 << 20));
        let (c, end) = escaped_compact_object(body.as_bytes(), 1, &mut Vec::new()).unwrap();
        assert_eq!((c.as_str(), end), (r#"{"a":1}"#, 11));
        // A text longer than any first guess of room (the room is the input left).
        let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(5000));
        let mut literal = String::new();
        crate::value::write_json_string(&long, &mut literal);
        literal.push_str(&" ".repeat(1 << 20));
        let (c, _) = escaped_compact_object(literal.as_bytes(), 1, &mut Vec::new()).unwrap();
        assert_eq!(c.as_str(), long);
    }

    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{", "}", "[", "]", ":", ",", "\\\"", "\\\\\\\"", "\\\\\\\\", "\\/", "\\n", "\\u0041",
            "\\\\", "a", "1", "-", ".", "e", "0", "true", "null", "é", " ", "\"",
        ])
    }

    proptest! {
        /// Whenever the one pass gives an answer it is the two passes' answer, and
        /// for every string using only `\"` and `\\` escapes it does answer.
        #[test]
        fn one_pass_agrees_with_unescaping_then_checking(
            pieces in prop::collection::vec(piece(), 0..40),
        ) {
            let literal = format!("\"{}\"", pieces.concat());
            if let Some((c, end)) = escaped_compact_object(literal.as_bytes(), 1, &mut Vec::new()) {
                let prefix = literal.get(..end).unwrap();
                prop_assert_eq!(Some(c), two_passes(prefix));
            }
        }

        #[test]
        fn compact_objects_sent_in_a_string_take_the_one_pass(
            members in prop::collection::vec(("[a-z\"\\\\/é]{0,6}", "[a-z0-9\"\\\\/ é]{0,8}"), 0..8),
        ) {
            let mut o = Object::new();
            for (k, v) in members {
                o.push(k, Value::String(v.into()));
            }
            let text = Value::Object(o).to_json_string();
            let mut literal = String::new();
            crate::value::write_json_string(&text, &mut literal);
            let one = escaped_compact_object(literal.as_bytes(), 1, &mut Vec::new());
            prop_assert!(one.is_some(), "{}", literal);
            let (c, end) = one.unwrap();
            prop_assert_eq!(end, literal.len());
            prop_assert_eq!(c.as_str(), text.as_str());
            prop_assert_eq!(Some(c), two_passes(&literal));
        }
    }

    fn compact(t: &str) -> bool {
        is_compact_object(t)
    }

    #[test]
    fn accepts_compact_objects_that_write_back_to_themselves() {
        for t in [
            r#"{}"#,
            r#"{"a":1}"#,
            r#"{"a":"x\"y\\z","b":[1,2.50,-3e5,true,false,null,{"c":[]}],"d":{}}"#,
            r#"{"mchntnm":"Dense Bakery & Tea House (Queen's Road)","é":"ü/"}"#,
            r#"{"a":1,"a":2}"#,
        ] {
            assert!(compact(t), "{t}");
            let v = Value::parse_json_str(t).unwrap();
            assert_eq!(v.to_json_string(), t);
            assert_eq!(CompactJson::new(t).unwrap().to_value(), v);
        }
    }

    #[test]
    fn refuses_what_does_not_write_back_or_does_not_parse() {
        for t in [
            r#"{ "a":1}"#,
            r#"{"a" :1}"#,
            "{\"a\":1}\n",
            r#"{"a":"\/"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\n"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":tru}"#,
            r#"{"a":1,}"#,
            r#"{"a":1"#,
            r#"{"a":"x"#,
            r#"{"a":1}{"#,
            r#"[1]"#,
            r#""x""#,
            "",
        ] {
            assert!(!compact(t), "{t:?}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(63), "]".repeat(63));
        assert!(compact(&deep));
        assert!(Value::parse_json_str(&deep).is_ok());
        let deeper = format!("{{\"a\":{}1{}}}", "[".repeat(64), "]".repeat(64));
        assert!(!compact(&deeper));
        assert!(Value::parse_json_str(&deeper).is_err());
    }

    #[test]
    fn members_read_the_top_level_as_an_analyzer_does() {
        let t = r#"{"syssn":"2026","n":{"syssn":"inner"},"txamt":201,"q":"a\"b\\c","z":null,"arr":[1,{"x":"]}"}],"b":true,"txamt":"202"}"#;
        let c = CompactJson::new(t).unwrap();
        let [syssn, txamt, q, z, arr, b, missing] =
            c.members(["syssn", "txamt", "q", "z", "arr", "b", "none"]);
        assert_eq!(syssn, Some(r#""2026""#));
        assert_eq!(txamt, Some(r#""202""#), "the last of two counts");
        assert_eq!(z, Some("null"));
        assert_eq!(missing, None);
        let text = |raw: Option<&str>| raw.and_then(member_text);
        assert_eq!(text(syssn).as_deref(), Some("2026"));
        assert_eq!(text(q).as_deref(), Some("a\"b\\c"));
        assert_eq!(text(z), None);
        assert_eq!(text(arr).as_deref(), Some(r#"[1,{"x":"]}"}]"#));
        assert_eq!(text(b).as_deref(), Some("true"));
        // The same as reading the parsed object.
        let o = c.to_object();
        let tree = |k: &str| match o.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.to_string()),
            Some(v) => Some(v.to_json_string()),
        };
        for (k, got) in [("syssn", "2026"), ("txamt", "202"), ("q", "a\"b\\c")] {
            assert_eq!(tree(k).as_deref(), Some(got));
            assert_eq!(text(c.members([k])[0]).as_deref(), Some(got));
        }
    }
}
