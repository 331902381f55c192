//! A parser for Android `org.json`-style text, the syntax inside Odoo-style
//! envelope-encrypted requests (D4 dialect 3):
//!
//! ```text
//! {content:{amt=10.1,channel='wx',func_type=1001}, digest:'99CE8BF9...'}
//! ```
//!
//! The terminal reads these with Android's `JSONTokener`, so this parser accepts
//! what that tokenizer accepts, and yields the same [`Value`] as the strict parser:
//! - names quoted (`'` or `"`) or bare; bare values too (`wx`, `10.1`, `true`);
//! - `:`, `=` or `=>` between name and value; `,` or `;` between members;
//! - strings in single or double quotes, with `\uXXXX`, `\n`-style escapes and
//!   `\x` meaning `x` for any other character;
//! - `/* */`, `//` and `#` comments; in arrays, an empty element is `null`.
//!
//! Differences from `org.json`, chosen for an analyzer: bare literals that look like
//! decimal numbers stay [`Value::Number`] with their raw token (D4: the digest is over
//! the wire text), other bare literals (hex `0x1F` included) become strings;
//! `null`/`true`/`false` are case-insensitive as in Android; anything but whitespace
//! or comments after the top-level value is an error (after decryption, trailing junk
//! means a wrong key rather than a sloppy sender).
//!
//! Bounded by [`MAX_DEPTH`], [`MAX_VALUES`](crate::value::MAX_VALUES) and
//! [`MAX_INPUT_LEN`](crate::value::MAX_INPUT_LEN); never panics; linear time.

use crate::value::{
    char_at, check_input, check_len, digits_end, exponent_end, hex4, CompactString, Object, Value,
    ValueCount, ValueError, MAX_DEPTH,
};

/// Parses lenient `org.json`-style text from untrusted bytes.
pub fn parse_lenient(input: &[u8]) -> Result<Value, ValueError> {
    parse_lenient_str(check_input(input)?)
}

/// [`parse_lenient`] of text that is UTF-8 already: the same checks without
/// validating the UTF-8 again.
pub fn parse_lenient_str(text: &str) -> Result<Value, ValueError> {
    check_len(text.len())?;
    let mut p = Lenient {
        t: text,
        s: text.as_bytes(),
        pos: 0,
        values: ValueCount::default(),
    };
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos < p.s.len() {
        return Err(ValueError::TrailingCharacters { offset: p.pos });
    }
    Ok(v)
}

/// Characters that end a bare literal (Android's `nextToInternal` set, plus the
/// line breaks it also stops at).
fn ends_literal(c: u8) -> bool {
    matches!(
        c,
        b'{' | b'}'
            | b'['
            | b']'
            | b'/'
            | b'\\'
            | b':'
            | b','
            | b'='
            | b';'
            | b'#'
            | b' '
            | b'\t'
            | b'\x0c'
            | b'\r'
            | b'\n'
            | b'"'
            | b'\''
    )
}

/// Whether a bare literal is a decimal number: an optional sign, digits with an
/// optional fraction (or a fraction alone), an optional exponent. Leading zeros
/// and `5.` are accepted, as Java's `Double.valueOf` accepts them.
fn is_lenient_number(tok: &[u8]) -> bool {
    let sign = usize::from(matches!(tok.first(), Some(b'+' | b'-')));
    let mut i = digits_end(tok, sign);
    let mut digits = i - sign;
    if tok.get(i) == Some(&b'.') {
        let frac = digits_end(tok, i + 1);
        digits += frac - (i + 1);
        i = frac;
    }
    digits > 0 && exponent_end(tok, i) == Some(tok.len())
}

struct Lenient<'a> {
    /// The input as text (validated once), for slicing out runs.
    t: &'a str,
    /// The same input as bytes, for scanning.
    s: &'a [u8],
    pos: usize,
    /// Values parsed so far, against [`MAX_VALUES`](crate::value::MAX_VALUES).
    values: ValueCount,
}

impl<'a> Lenient<'a> {
    /// The text between two byte offsets (both on ASCII bytes or the end).
    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.t.get(from..to).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.s.get(self.pos.checked_add(ahead)?).copied()
    }

    /// Skips whitespace and comments. An unterminated `/*` comment runs to the end.
    fn skip_ws(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') => self.pos += 1,
                Some(b'#') => self.skip_line(),
                Some(b'/') if self.peek_at(1) == Some(b'/') => self.skip_line(),
                Some(b'/') if self.peek_at(1) == Some(b'*') => {
                    let rest = self.s.get(self.pos + 2..).unwrap_or_default();
                    self.pos = match memchr::memmem::find(rest, b"*/") {
                        Some(i) => self.pos + 2 + i + 2,
                        None => self.s.len(),
                    };
                }
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        let rest = self.s.get(self.pos..).unwrap_or_default();
        self.pos = match memchr::memchr2(b'\n', b'\r', rest) {
            Some(i) => self.pos + i + 1,
            None => self.s.len(),
        };
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
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::String),
            None => Err(ValueError::UnexpectedEnd {
                expected: "a value",
            }),
            Some(_) => self.literal(),
        }
    }

    fn literal(&mut self) -> Result<Value, ValueError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if !ends_literal(c)) {
            self.pos += 1;
        }
        // Ends on an ASCII delimiter or the end: a char boundary.
        let text = self.slice(start, self.pos);
        if text.is_empty() {
            return Err(ValueError::EmptyLiteral { offset: start });
        }
        Ok(if text.eq_ignore_ascii_case("null") {
            Value::Null
        } else if text.eq_ignore_ascii_case("true") {
            Value::Bool(true)
        } else if text.eq_ignore_ascii_case("false") {
            Value::Bool(false)
        } else if is_lenient_number(text.as_bytes()) {
            Value::Number(CompactString::new(text))
        } else {
            Value::String(CompactString::new(text))
        })
    }

    /// A string in `quote`s; Android's escapes (`\x` for any other `x` is `x`).
    fn string(&mut self, quote: u8) -> Result<CompactString, ValueError> {
        self.pos += 1;
        // The common case, no escape: one copy (inline up to 24 bytes).
        let rest = self.s.get(self.pos..).unwrap_or_default();
        if let Some(n) = memchr::memchr2(quote, b'\\', rest) {
            if rest.get(n) == Some(&quote) {
                let out = CompactString::new(self.slice(self.pos, self.pos + n));
                self.pos += n + 1;
                return Ok(out);
            }
        }
        let mut out = CompactString::default();
        loop {
            let run_start = self.pos;
            let rest = self.s.get(run_start..).unwrap_or_default();
            let run_len = memchr::memchr2(quote, b'\\', rest).unwrap_or(rest.len());
            self.pos = run_start + run_len;
            out.push_str(self.slice(run_start, self.pos));
            match self.peek() {
                None => {
                    return Err(ValueError::UnexpectedEnd {
                        expected: "a closing quote",
                    })
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => {
                    self.pos += 1;
                    return Ok(out);
                }
            }
        }
    }

    fn escape(&mut self, out: &mut CompactString) -> Result<(), ValueError> {
        let at = self.pos;
        self.pos += 1;
        let c = self.peek().ok_or(ValueError::UnexpectedEnd {
            expected: "an escape",
        })?;
        match c {
            b'u' => {
                let unit =
                    hex4(self.s, self.pos + 1).ok_or(ValueError::InvalidEscape { offset: at })?;
                self.pos += 5;
                // Java strings are UTF-16: pair surrogates, replace lone ones.
                if (0xD800..0xDC00).contains(&unit)
                    && self.s.get(self.pos..self.pos + 2) == Some(b"\\u")
                {
                    if let Some(lo @ 0xDC00..=0xDFFF) = hex4(self.s, self.pos + 2) {
                        self.pos += 6;
                        let code =
                            0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                        out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        return Ok(());
                    }
                }
                out.push(char::from_u32(u32::from(unit)).unwrap_or('\u{FFFD}'));
            }
            b't' => {
                out.push('\t');
                self.pos += 1;
            }
            b'b' => {
                out.push('\u{8}');
                self.pos += 1;
            }
            b'n' => {
                out.push('\n');
                self.pos += 1;
            }
            b'r' => {
                out.push('\r');
                self.pos += 1;
            }
            b'f' => {
                out.push('\u{c}');
                self.pos += 1;
            }
            _ => {
                // Any other character stands for itself (it may be multi-byte).
                let ch = char_at(self.s, self.pos);
                out.push(ch);
                self.pos += ch.len_utf8();
            }
        }
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
        let mut items = Vec::new();
        // Android: after '[' or a separator, ']' closes and a separator means null.
        let mut after_separator = false;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b']') => {
                    if after_separator {
                        items.push(Value::Null);
                    }
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                Some(b',' | b';') => {
                    items.push(Value::Null);
                    self.pos += 1;
                    after_separator = true;
                    continue;
                }
                None => return Err(ValueError::UnexpectedEnd { expected: "']'" }),
                Some(_) => {}
            }
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                Some(b',' | b';') => {
                    self.pos += 1;
                    after_separator = true;
                }
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ValueError> {
        if depth > MAX_DEPTH {
            return Err(ValueError::TooDeep {
                max: MAX_DEPTH,
                offset: self.pos,
            });
        }
        self.pos += 1;
        let mut members = Object::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            let name = match self.peek() {
                Some(q @ (b'"' | b'\'')) => self.string(q)?,
                Some(b'{' | b'[') => return Err(self.unexpected("a member name")),
                // Android rejects bare numeric or null names; the analyzer keeps the text.
                _ => match self.literal()? {
                    Value::String(s) | Value::Number(s) => s,
                    other => other.to_display_string().into(),
                },
            };
            self.skip_ws();
            match self.peek() {
                Some(b':' | b'=') => {
                    self.pos += 1;
                    if self.peek() == Some(b'>') {
                        self.pos += 1;
                    }
                }
                _ => return Err(self.unexpected("':' or '='")),
            }
            let v = self.value(depth)?;
            members.push(name, v);
            self.skip_ws();
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                Some(b',' | b';') => {
                    self.pos += 1;
                    // Android tolerates a separator before the closing brace.
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Value::Object(members));
                    }
                }
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Value, ValueError> {
        parse_lenient(s.as_bytes())
    }

    #[test]
    fn lenient_number_literals_are_what_java_reads_as_decimals() {
        // Double.valueOf's decimal forms: a sign, leading zeros, `5.` and `.5`.
        for tok in [
            "0", "007", "+1", "-1.5", "5.", ".5", "1e5", "1E+05", "-.5e-3", "10.10",
        ] {
            assert!(is_lenient_number(tok.as_bytes()), "{tok}");
        }
        for tok in [
            "", "+", "-", ".", "e5", "1e", "1e+", ".e1", "1.2.3", "1e5.0", "0x10", "1f",
        ] {
            assert!(!is_lenient_number(tok.as_bytes()), "{tok}");
        }
    }

    fn obj(v: &Value) -> &Object {
        v.as_object().expect("object")
    }

    #[test]
    fn odoo_envelope() {
        let v = p("{content:{amt=10.1,channel='card_payment',func_type=1001,out_trade_no='456799999999'}, digest:'38C9C5FB49F7B813086BABEC07914497'}").unwrap();
        let o = obj(&v);
        assert_eq!(
            o.get("digest").and_then(Value::as_str),
            Some("38C9C5FB49F7B813086BABEC07914497")
        );
        let c = obj(o.get("content").unwrap());
        assert_eq!(
            c.keys().collect::<Vec<_>>(),
            ["amt", "channel", "func_type", "out_trade_no"]
        );
        assert_eq!(c.get("amt"), Some(&Value::Number("10.1".into())));
        assert_eq!(
            c.get("channel").and_then(Value::as_str),
            Some("card_payment")
        );
        assert_eq!(c.get("func_type"), Some(&Value::Number("1001".into())));
        assert_eq!(
            c.get("out_trade_no").and_then(Value::as_str),
            Some("456799999999")
        );
    }

    #[test]
    fn separators_and_quotes() {
        let v = p(r#"{a=>1; "b":"x" , 'c' = 'it''s' ; d : wx, e:10.10 , f:-.5, g:+3,}"#);
        // 'it''s' is two adjacent strings: not valid even for org.json.
        assert!(v.is_err());
        let v = p(r#"{a=>1; "b":"x" , 'c' = 'it\'s' ; d : wx, e:10.10 , f:-.5, g:+3,}"#).unwrap();
        let o = obj(&v);
        assert_eq!(o.get("a"), Some(&Value::Number("1".into())));
        assert_eq!(o.get("b").and_then(Value::as_str), Some("x"));
        assert_eq!(o.get("c").and_then(Value::as_str), Some("it's"));
        assert_eq!(o.get("d").and_then(Value::as_str), Some("wx"));
        assert_eq!(o.get("e"), Some(&Value::Number("10.10".into())));
        assert_eq!(o.get("f"), Some(&Value::Number("-.5".into())));
        assert_eq!(o.get("g"), Some(&Value::Number("+3".into())));
    }

    #[test]
    fn literals() {
        let v = p("[NULL, True, false, 0x1F, 007, 1e5, 1e, abc-def, 'q\"x', \"s'y\"]").unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a[0], Value::Null);
        assert_eq!(a[1], Value::Bool(true));
        assert_eq!(a[2], Value::Bool(false));
        assert_eq!(a[3], Value::String("0x1F".into()));
        assert_eq!(a[4], Value::Number("007".into()));
        assert_eq!(a[5], Value::Number("1e5".into()));
        assert_eq!(a[6], Value::String("1e".into()));
        assert_eq!(a[7], Value::String("abc-def".into()));
        assert_eq!(a[8], Value::String("q\"x".into()));
        assert_eq!(a[9], Value::String("s'y".into()));
    }

    #[test]
    fn escapes() {
        let v = p(r"'a\/b\u00e9\ud83d\ude00\q\t\ud800'").unwrap();
        assert_eq!(v.as_str(), Some("a/bé😀q\t\u{FFFD}"));
    }

    #[test]
    fn arrays_with_empty_elements() {
        let v = p("[1,,2,]").unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Number("1".into()),
                Value::Null,
                Value::Number("2".into()),
                Value::Null
            ])
        );
        assert_eq!(p("[]").unwrap(), Value::Array(vec![]));
        assert_eq!(
            p("[,]").unwrap(),
            Value::Array(vec![Value::Null, Value::Null])
        );
    }

    #[test]
    fn comments_and_whitespace() {
        let v = p("# head\n{ /* c */ a : 1 // tail\n , b:2 }\n").unwrap();
        assert_eq!(obj(&v).len(), 2);
        assert!(p("{a:1} /* unterminated").is_ok());
    }

    #[test]
    fn accepts_strict_json_too() {
        let text = r#"{"respcd":"6000","data":{"x":[1,2.50,true,null]},"e":""}"#;
        assert_eq!(
            p(text).unwrap(),
            Value::parse_json(text.as_bytes()).unwrap()
        );
    }

    #[test]
    fn spec_section_4_string_content() {
        let v = p("{func_type: 3002}").unwrap();
        assert_eq!(
            obj(&v).get("func_type"),
            Some(&Value::Number("3002".into()))
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "{",
            "{a}",
            "{a:}",
            "{a:1 b:2}",
            "{a:1",
            "'abc",
            "[1 2]",
            "{a:1}x",
            "{,}",
            "{{}:1}",
            "\\",
            "{a:'x'",
            "[",
            "{a:=1}",
        ] {
            assert!(p(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(p("{a:}"), Err(ValueError::EmptyLiteral { offset: 3 }));
        assert_eq!(
            p("{a:1}x"),
            Err(ValueError::TrailingCharacters { offset: 5 })
        );
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "{a:".repeat(200_000);
        assert!(matches!(p(&deep), Err(ValueError::TooDeep { .. })));
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(matches!(p(&deep), Err(ValueError::TooDeep { .. })));
    }

    #[test]
    fn bare_names_of_other_kinds() {
        let v = p("{1:a, null:b, true:c}").unwrap();
        assert_eq!(obj(&v).keys().collect::<Vec<_>>(), ["1", "null", "true"]);
    }
}
