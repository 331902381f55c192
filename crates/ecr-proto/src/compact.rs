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
    is_json_number, string_run_len, CompactString, Object, Value, MAX_DEPTH, MAX_INPUT_LEN,
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
        for (&(name, value), end) in self.top.iter().zip(ends) {
            let (name, value) = (name as usize, value as usize);
            // A name with escapes holds a quote or backslash: no wanted key does,
            // so comparing the text as sent is exact.
            let Some(key) = self.text.get(name + 1..value.saturating_sub(2)) else {
                continue;
            };
            // Length and first byte before the whole name: of a data's dozen or
            // two names, only the wanted ones then get as far as a comparison.
            let k0 = key.as_bytes().first();
            let wanted = |k: &&str| k.len() == key.len() && k.as_bytes().first() == k0 && *k == key;
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

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => self.members(depth + 1, b'}', true),
            Some(b'[') => self.members(depth + 1, b']', false),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => false,
        }
    }

    /// An object (`named`) or array, at its opening bracket.
    fn members(&mut self, depth: usize, close: u8, named: bool) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        self.pos += 1;
        if self.peek() == Some(close) {
            self.pos += 1;
            return true;
        }
        loop {
            if named {
                let name = self.pos;
                if self.peek() != Some(b'"') || !self.string() || self.peek() != Some(b':') {
                    return false;
                }
                self.pos += 1;
                if depth == 1 {
                    // Offsets below MAX_INPUT_LEN (checked first) fit in u32.
                    self.top.push((name as u32, self.pos as u32));
                }
            }
            if !self.value(depth) {
                return false;
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {
                    self.pos += 1;
                    return true;
                }
                _ => return false,
            }
        }
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

    fn number(&mut self) -> bool {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.pos += 1;
        }
        is_json_number(self.s.get(start..self.pos).unwrap_or_default())
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let ok = self.s.get(self.pos..).is_some_and(|r| r.starts_with(word));
        self.pos += word.len();
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
