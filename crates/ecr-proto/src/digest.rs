//! The MD5 signature of a request (spec section 4, D4), and a search for the
//! signing mistakes senders are known or likely to make.
//!
//! `format_content` renders the content object as
//! `{amt=10.1,channel='card_payment',func_type=1001}`: keys sorted by code point,
//! `key=value` joined by `,` inside braces, strings in single quotes as they are
//! (no escaping), numbers as their raw wire token, `null` and `""` as `''`,
//! booleans as `true`/`false`. The digest is md5(format_content + key text),
//! written in lowercase hex and compared case-insensitively.
//!
//! Nested objects and arrays do not occur in any documented request. They are
//! rendered as compact JSON in wire order, which is what the terminal's Java side
//! most plausibly produces (`JSONObject.toString()` of a nested value); Odoo's
//! Python would print a `repr` instead. A digest over nested content is therefore
//! a guess either way, and the analyzer reports a mismatch rather than an error.
//!
//! When a digest does not match, [`verify`] tries the variants listed in
//! [`SigningMistake`] and names the first one that does: a sender whose digest
//! only matches a variant has a signing bug worth naming (D4).
//!
//! Fuzzing: built with `--cfg fuzzing` (as cargo-fuzz does), [`verify`] reports
//! every present digest as [`DigestStatus::Ok`] when a key is given, so that
//! fuzzers reach the code behind the checksum, as smoltcp does for its checksums.

use core::fmt;
use std::borrow::Cow;

use md5::{Digest as _, Md5};

use crate::cipher::KeyRing;
use crate::value::{Object, Value};

/// Fields holding an amount, whose formatting senders get wrong most often.
const AMOUNT_FIELDS: [&str; 3] = ["amt", "refund_amount", "txamt"];

/// True when built with `--cfg fuzzing` (cargo-fuzz): [`verify`] then accepts
/// every digest so that fuzzers get past it. Never set in normal builds.
#[allow(unexpected_cfgs)]
const FUZZING: bool = cfg!(fuzzing);

/// Lowercase hex of md5(`data`).
pub fn md5_hex(data: &[u8]) -> String {
    hex_lower(&Md5::digest(data))
}

/// Lowercase hex of `bytes`, without going through `fmt`.
fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            let digit = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
            s.push(char::from(digit));
        }
    }
    s
}

/// The digest of a `format_content` text: lowercase hex md5(text + key text).
pub fn digest(format_content: &str, key_text: &str) -> String {
    let mut h = Md5::new();
    h.update(format_content.as_bytes());
    h.update(key_text.as_bytes());
    hex_lower(&h.finalize())
}

/// Whether `given` is md5(`text` + `key_text`) in hex, as [`digests_match`] with
/// [`digest`] decides, without writing the expected digest out.
fn digest_is(given: &str, text: &str, key_text: &str) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let g = given.trim().as_bytes();
    if g.len() != 32 {
        return false;
    }
    let mut h = Md5::new();
    h.update(text.as_bytes());
    h.update(key_text.as_bytes());
    let d = h.finalize();
    d.iter().zip(g.chunks_exact(2)).all(|(&b, pair)| {
        let hi = DIGITS.get(usize::from(b >> 4)).copied();
        let lo = DIGITS.get(usize::from(b & 0x0f)).copied();
        pair.first().map(u8::to_ascii_lowercase) == hi
            && pair.get(1).map(u8::to_ascii_lowercase) == lo
    })
}

/// Whether two hex digests are equal, ignoring case and surrounding whitespace
/// (the docs show lowercase, Odoo sends uppercase).
pub fn digests_match(given: &str, expected: &str) -> bool {
    given.trim().eq_ignore_ascii_case(expected.trim())
}

/// The canonical `format_content` of a content object (see the module docs).
pub fn format_content(content: &Object) -> String {
    render(content, &Style::CANONICAL)
}

/// How a number was reformatted by a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberForm {
    /// Every number in its shortest round-trip form (`10.10` signed as `10.1`,
    /// `100.0` as `100`), as a sender holding doubles prints them.
    Shortest,
    /// Amounts with two decimals (`10.1` signed as `10.10`).
    TwoDecimals,
    /// Amounts in integer cents (`10.1` signed as `1010`), as the first firmware took them (D8).
    IntegerCents,
    /// Whole amounts written as floats (`100` signed as `100.0`), as Python's
    /// `str()` or Java's `Double.toString` print them.
    FloatNotation,
}

/// A known or likely signing bug, recognised because the digest matches the
/// variant it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningMistake {
    /// Numbers signed in another form than sent.
    NumberReformatted(NumberForm),
    /// Strings in double quotes instead of single.
    DoubleQuotes,
    /// Keys in wire order instead of sorted.
    UnsortedKeys,
    /// `", "` between members instead of `","`.
    SpaceAfterComma,
    /// The JSON text of the content signed instead of `format_content`.
    SignedJson,
    /// md5 of the text alone, the key not appended.
    KeyNotAppended,
    /// The key put before the text instead of after it.
    KeyPrepended,
    /// Content-encrypted request signed over the plaintext `format_content`
    /// instead of the Base64 ciphertext.
    DigestOverPlaintext,
    /// Signed over the Base64 ciphertext where the plaintext was expected.
    DigestOverCiphertext,
    /// Signed with another key of the key ring than the one that decrypts it.
    OtherKey {
        /// The index of the key that signed.
        index: usize,
    },
}

impl SigningMistake {
    /// A stable kebab-case name for machine-readable output.
    pub fn name(&self) -> &'static str {
        match self {
            SigningMistake::NumberReformatted(NumberForm::Shortest) => "number-shortest-form",
            SigningMistake::NumberReformatted(NumberForm::TwoDecimals) => "amount-two-decimals",
            SigningMistake::NumberReformatted(NumberForm::IntegerCents) => "amount-in-cents",
            SigningMistake::NumberReformatted(NumberForm::FloatNotation) => "amount-float-notation",
            SigningMistake::DoubleQuotes => "double-quotes",
            SigningMistake::UnsortedKeys => "unsorted-keys",
            SigningMistake::SpaceAfterComma => "space-after-comma",
            SigningMistake::SignedJson => "signed-json",
            SigningMistake::KeyNotAppended => "key-not-appended",
            SigningMistake::KeyPrepended => "key-prepended",
            SigningMistake::DigestOverPlaintext => "digest-over-plaintext",
            SigningMistake::DigestOverCiphertext => "digest-over-ciphertext",
            SigningMistake::OtherKey { .. } => "other-key",
        }
    }

    /// What the sender did, in a sentence for humans.
    pub fn description(&self) -> String {
        match self {
            SigningMistake::NumberReformatted(NumberForm::Shortest) => {
                "numbers were signed in their shortest form, not as sent (e.g. 10.1 for 10.10)"
                    .into()
            }
            SigningMistake::NumberReformatted(NumberForm::TwoDecimals) => {
                "the amount was signed with two decimals, not as sent (e.g. 10.10 for 10.1)".into()
            }
            SigningMistake::NumberReformatted(NumberForm::IntegerCents) => {
                "the amount was signed in integer cents (e.g. 1010 for 10.1)".into()
            }
            SigningMistake::NumberReformatted(NumberForm::FloatNotation) => {
                "the amount was signed as a float (e.g. 100.0 for 100)".into()
            }
            SigningMistake::DoubleQuotes => {
                "strings were signed in double quotes instead of single quotes".into()
            }
            SigningMistake::UnsortedKeys => {
                "keys were signed in wire order instead of sorted order".into()
            }
            SigningMistake::SpaceAfterComma => {
                "members were joined with \", \" instead of \",\"".into()
            }
            SigningMistake::SignedJson => {
                "the JSON text of the content was signed instead of format_content".into()
            }
            SigningMistake::KeyNotAppended => "the POS-KEY was not appended before hashing".into(),
            SigningMistake::KeyPrepended => {
                "the POS-KEY was put before the text instead of after it".into()
            }
            SigningMistake::DigestOverPlaintext => {
                "the digest is over the plaintext format_content, not the Base64 ciphertext".into()
            }
            SigningMistake::DigestOverCiphertext => {
                "the digest is over the Base64 ciphertext, not the plaintext format_content".into()
            }
            SigningMistake::OtherKey { index } => {
                format!("signed with key #{index} of the key set, not the key that decrypts it")
            }
        }
    }
}

impl fmt::Display for SigningMistake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description())
    }
}

/// The outcome of checking a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestStatus {
    /// The digest matches the canonical computation.
    Ok,
    /// It does not; `mistake` names the variant that matches, if one does.
    Mismatch {
        /// The signing bug that explains the digest, if found.
        mistake: Option<SigningMistake>,
        /// The canonical digest (lowercase hex), with the key that decrypted the
        /// message or else the first key.
        expected: String,
    },
    /// The message carries no digest.
    Absent,
    /// No key was given, so the digest cannot be checked.
    Unverified,
}

impl DigestStatus {
    /// A short stable name: `ok`, `mismatch`, `absent`, `unverified`.
    pub fn name(&self) -> &'static str {
        match self {
            DigestStatus::Ok => "ok",
            DigestStatus::Mismatch { .. } => "mismatch",
            DigestStatus::Absent => "absent",
            DigestStatus::Unverified => "unverified",
        }
    }
}

/// What the digest is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis<'a> {
    /// `format_content` of the plaintext content (plain and envelope-encrypted
    /// dialects). `ciphertext` is the Base64 text if one exists that does not
    /// contain the digest itself, to recognise [`SigningMistake::DigestOverCiphertext`].
    Plaintext {
        /// Base64 ciphertext to try as a mistake, if any.
        ciphertext: Option<&'a str>,
    },
    /// The Base64 ciphertext text exactly as sent (content-encrypted dialect).
    Ciphertext(&'a str),
}

/// A digest check's outcome and the key it involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The outcome.
    pub status: DigestStatus,
    /// For [`DigestStatus::Ok`], the key that signed (useful with a plain message
    /// and several keys); otherwise the `signer` passed in.
    pub key_index: Option<usize>,
}

/// Checks `given` against the content.
///
/// `signer` is the index of the key that decrypted the message, if it was
/// encrypted: that key is expected to have signed it. Without one (plain
/// dialect), every key is tried and the one that matches is reported.
pub fn verify(
    given: Option<&str>,
    content: &Object,
    basis: Basis<'_>,
    keys: &KeyRing,
    signer: Option<usize>,
) -> Verification {
    let Some(given) = given else {
        return Verification {
            status: DigestStatus::Absent,
            key_index: signer,
        };
    };
    if keys.is_empty() {
        return Verification {
            status: DigestStatus::Unverified,
            key_index: signer,
        };
    }
    if FUZZING {
        return Verification {
            status: DigestStatus::Ok,
            key_index: signer.or(Some(0)),
        };
    }
    let canonical_text: Cow<'_, str> = match basis {
        Basis::Plaintext { .. } => Cow::Owned(format_content(content)),
        Basis::Ciphertext(b64) => Cow::Borrowed(b64),
    };
    // Keys to try: the signer, or all of them.
    let order = match signer {
        Some(i) if i < keys.len() => i..i + 1,
        _ => 0..keys.len(),
    };
    for i in order.clone() {
        if let Some(key) = keys.get(i) {
            if digest_is(given, &canonical_text, key.expose_secret()) {
                return Verification {
                    status: DigestStatus::Ok,
                    key_index: Some(i),
                };
            }
        }
    }
    let first = order.start;
    let expected = keys
        .get(first)
        .map(|k| digest(&canonical_text, k.expose_secret()))
        .unwrap_or_default();
    let variants = variants(content, basis, &canonical_text);
    for i in order {
        let Some(key) = keys.get(i) else { continue };
        if let Some(mistake) = find_mistake(given, &variants, key.expose_secret()) {
            return Verification {
                status: DigestStatus::Mismatch {
                    mistake: Some(mistake),
                    expected,
                },
                key_index: signer,
            };
        }
    }
    if signer.is_some() {
        for (i, key) in keys.iter().enumerate() {
            if Some(i) != signer
                && digests_match(given, &digest(&canonical_text, key.expose_secret()))
            {
                return Verification {
                    status: DigestStatus::Mismatch {
                        mistake: Some(SigningMistake::OtherKey { index: i }),
                        expected,
                    },
                    key_index: signer,
                };
            }
        }
    }
    Verification {
        status: DigestStatus::Mismatch {
            mistake: None,
            expected,
        },
        key_index: signer,
    }
}

/// How the key is combined with a variant's text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyPlacement {
    Append,
    Prepend,
    Omit,
}

/// Candidate texts, each with the mistake it stands for.
fn variants(
    content: &Object,
    basis: Basis<'_>,
    canonical: &str,
) -> Vec<(SigningMistake, String, KeyPlacement)> {
    let mut out = Vec::new();
    let mut push = |m: SigningMistake, text: String, k: KeyPlacement| {
        if k != KeyPlacement::Append || text != canonical {
            out.push((m, text, k));
        }
    };
    push(
        SigningMistake::KeyNotAppended,
        canonical.to_owned(),
        KeyPlacement::Omit,
    );
    push(
        SigningMistake::KeyPrepended,
        canonical.to_owned(),
        KeyPlacement::Prepend,
    );
    match basis {
        Basis::Ciphertext(_) => {
            push(
                SigningMistake::DigestOverPlaintext,
                format_content(content),
                KeyPlacement::Append,
            );
        }
        Basis::Plaintext { ciphertext } => {
            for form in [
                NumberForm::Shortest,
                NumberForm::TwoDecimals,
                NumberForm::IntegerCents,
                NumberForm::FloatNotation,
            ] {
                let style = Style {
                    numbers: Some(form),
                    ..Style::CANONICAL
                };
                push(
                    SigningMistake::NumberReformatted(form),
                    render(content, &style),
                    KeyPlacement::Append,
                );
            }
            let dq = Style {
                quote: '"',
                ..Style::CANONICAL
            };
            push(
                SigningMistake::DoubleQuotes,
                render(content, &dq),
                KeyPlacement::Append,
            );
            let unsorted = Style {
                sorted: false,
                ..Style::CANONICAL
            };
            push(
                SigningMistake::UnsortedKeys,
                render(content, &unsorted),
                KeyPlacement::Append,
            );
            let spaced = Style {
                separator: ", ",
                ..Style::CANONICAL
            };
            push(
                SigningMistake::SpaceAfterComma,
                render(content, &spaced),
                KeyPlacement::Append,
            );
            push(
                SigningMistake::SignedJson,
                Value::Object(content.clone()).to_json_string(),
                KeyPlacement::Append,
            );
            if let Some(b64) = ciphertext {
                push(
                    SigningMistake::DigestOverCiphertext,
                    b64.to_owned(),
                    KeyPlacement::Append,
                );
            }
        }
    }
    out
}

fn find_mistake(
    given: &str,
    variants: &[(SigningMistake, String, KeyPlacement)],
    key: &str,
) -> Option<SigningMistake> {
    variants.iter().find_map(|(m, text, placement)| {
        let d = match placement {
            KeyPlacement::Append => digest(text, key),
            KeyPlacement::Prepend => digest(key, text),
            KeyPlacement::Omit => md5_hex(text.as_bytes()),
        };
        digests_match(given, &d).then_some(*m)
    })
}

/// Rendering options; the canonical form and each variant differ in one of them.
struct Style {
    sorted: bool,
    quote: char,
    separator: &'static str,
    numbers: Option<NumberForm>,
}

impl Style {
    const CANONICAL: Style = Style {
        sorted: true,
        quote: '\'',
        separator: ",",
        numbers: None,
    };
}

fn render(content: &Object, style: &Style) -> String {
    // Senders usually write the members sorted already, each once: then they are
    // rendered as they are, without a sorted copy.
    if !style.sorted || content.keys().is_sorted_by(|a, b| a < b) {
        return render_members(content.iter(), content.len(), style);
    }
    // Stable sort keeps duplicates in wire order; the last of each run wins, as in
    // the parsers that receive the content. O(n log n) for any input.
    let mut members: Vec<(&str, &Value)> = content.iter().collect();
    members.sort_by(|a, b| a.0.cmp(b.0));
    let mut deduped: Vec<(&str, &Value)> = Vec::with_capacity(members.len());
    for m in members {
        match deduped.last_mut() {
            Some(last) if last.0 == m.0 => *last = m,
            _ => deduped.push(m),
        }
    }
    render_members(deduped.into_iter(), content.len(), style)
}

/// `{k=v,...}` of `members` in the order given.
fn render_members<'a>(
    members: impl Iterator<Item = (&'a str, &'a Value)>,
    count: usize,
    style: &Style,
) -> String {
    // Room for members of about 30 bytes (`out_trade_no='...'` is 50 and more), so
    // that a usual content is rendered without growing the string.
    let mut out = String::with_capacity(count * 32 + 16);
    out.push('{');
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push_str(style.separator);
        }
        out.push_str(k);
        out.push('=');
        match v {
            Value::Null => {
                out.push(style.quote);
                out.push(style.quote);
            }
            Value::String(s) => {
                out.push(style.quote);
                out.push_str(s);
                out.push(style.quote);
            }
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(tok) => match style.numbers {
                Some(form) => out.push_str(&reformat(tok, form, AMOUNT_FIELDS.contains(&k))),
                None => out.push_str(tok),
            },
            Value::Array(_) | Value::Object(_) => out.push_str(&v.to_json_string()),
        }
    }
    out.push('}');
    out
}

/// A number token as a sender using `form` would print it; the token itself when
/// the form does not apply to it.
fn reformat(tok: &str, form: NumberForm, is_amount: bool) -> String {
    let Some(x) = tok.parse::<f64>().ok().filter(|x| x.is_finite()) else {
        return tok.to_owned();
    };
    match form {
        NumberForm::Shortest => format!("{x}"),
        NumberForm::TwoDecimals if is_amount => format!("{x:.2}"),
        NumberForm::IntegerCents if is_amount => {
            let cents = (x * 100.0).round();
            if cents.abs() < 1e15 {
                format!("{}", cents as i64)
            } else {
                tok.to_owned()
            }
        }
        NumberForm::FloatNotation if is_amount => {
            let s = format!("{x}");
            if s.contains(['.', 'e', 'E']) {
                s
            } else {
                s + ".0"
            }
        }
        _ => tok.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::PosKey;
    use crate::lenient::parse_lenient;

    const DEFAULT_KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

    /// The canonical text sorts the members and keeps the last of a repeated
    /// name, whether the members came sorted (rendered as they are) or not
    /// (rendered from a sorted copy).
    #[test]
    fn canonical_text_is_the_same_sorted_or_not() {
        let obj = |members: &[(&str, &str)]| {
            let mut o = Object::new();
            for (k, v) in members {
                o.push(*k, Value::String((*v).into()));
            }
            o
        };
        let sorted = obj(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let shuffled = obj(&[("c", "3"), ("a", "1"), ("b", "2")]);
        assert_eq!(format_content(&sorted), "{a='1',b='2',c='3'}");
        assert_eq!(format_content(&shuffled), "{a='1',b='2',c='3'}");
        // A repeated name is not "sorted": the copy keeps the last of the run.
        let repeated = obj(&[("a", "1"), ("b", "2"), ("b", "9")]);
        assert_eq!(format_content(&repeated), "{a='1',b='9'}");
        assert_eq!(format_content(&Object::new()), "{}");
        assert_eq!(format_content(&obj(&[("z", "")])), "{z=''}");
    }

    #[test]
    fn digest_is_agrees_with_digests_match() {
        let text = "{amt=10.1,func_type=1001}";
        let right = digest(text, DEFAULT_KEY);
        let mut wrong_last = right.clone();
        wrong_last.pop();
        wrong_last.push(if right.ends_with('0') { '1' } else { '0' });
        for given in [
            right.clone(),
            right.to_uppercase(),
            format!(" {right}\n"),
            right.get(..31).unwrap_or_default().to_string(),
            format!("{right}0"),
            wrong_last,
            String::new(),
            "é".repeat(16),
            "g".repeat(32),
        ] {
            assert_eq!(
                digest_is(&given, text, DEFAULT_KEY),
                digests_match(&given, &right),
                "{given:?}"
            );
        }
        assert!(digest_is(&right.to_uppercase(), text, DEFAULT_KEY));
    }

    fn obj(text: &str) -> Object {
        Value::parse_json(text.as_bytes())
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    }

    fn ring(keys: &[&str]) -> KeyRing {
        keys.iter().map(|k| PosKey::new(k).unwrap()).collect()
    }

    #[test]
    fn decisions_md5_vectors() {
        assert_eq!(
            digest("{func_type=4001,orderId='12345678'}", DEFAULT_KEY),
            "99ce8bf9c7304ac964522d10f51660b4"
        );
        assert_eq!(
            digest("{func_type=5001}", DEFAULT_KEY),
            "77760cafee81dc33c720c90b75787b5f"
        );
        let c = obj(r#"{"orderId":"12345678","func_type":4001}"#);
        assert_eq!(format_content(&c), "{func_type=4001,orderId='12345678'}");
        let v = verify(
            Some("99CE8BF9C7304AC964522D10F51660B4"),
            &c,
            Basis::Plaintext { ciphertext: None },
            &ring(&[DEFAULT_KEY]),
            None,
        );
        assert_eq!(v.status, DigestStatus::Ok);
        assert_eq!(v.key_index, Some(0));
    }

    #[test]
    fn spec_section_4_example() {
        let c = obj(
            r#"{"amt":100,"channel": "card_payment","func_type":1001,"out_trade_no":"456799999999"}"#,
        );
        assert_eq!(
            format_content(&c),
            "{amt=100,channel='card_payment',func_type=1001,out_trade_no='456799999999'}"
        );
    }

    #[test]
    fn rendering_rules() {
        let c = obj(
            r#"{"b":null,"a":"","c":true,"d":false,"Z":10.10,"e":{"y":1,"x":"q"},"f":[1,"a"],"g":"it's"}"#,
        );
        assert_eq!(
            format_content(&c),
            r#"{Z=10.10,a='',b='',c=true,d=false,e={"y":1,"x":"q"},f=[1,"a"],g='it's'}"#
        );
        // Code point order: uppercase before lowercase, '_' between them.
        let c = obj(r#"{"a_b":1,"aB":2,"ab":3,"a":4}"#);
        assert_eq!(format_content(&c), "{a=4,aB=2,a_b=1,ab=3}");
        // Duplicates: the last one counts.
        let c = obj(r#"{"a":1,"a":2}"#);
        assert_eq!(format_content(&c), "{a=2}");
        assert_eq!(format_content(&Object::new()), "{}");
    }

    #[test]
    fn many_members_stay_fast() {
        // 1 MiB of members, half of them duplicates: must not be quadratic.
        let mut text = String::from("{");
        for i in 0..60_000u32 {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("\"k{}\":{i}", i % 30_000));
        }
        text.push('}');
        let c = obj(&text);
        let start = std::time::Instant::now();
        let fc = format_content(&c);
        assert!(fc.starts_with("{k0=30000,k1=30001,k10=30010,"));
        let v = verify(
            Some("00"),
            &c,
            Basis::Plaintext { ciphertext: None },
            &ring(&[DEFAULT_KEY]),
            None,
        );
        assert!(matches!(
            v.status,
            DigestStatus::Mismatch { mistake: None, .. }
        ));
        assert!(c.has_duplicate_keys());
        assert!(start.elapsed().as_secs() < 10);
    }

    #[test]
    fn case_insensitive() {
        assert!(digests_match("ABCdef", "abcDEF"));
        assert!(digests_match(" abc\n", "ABC"));
        assert!(!digests_match("abc", "abd"));
    }

    fn vector_content() -> Object {
        obj(
            r#"{"func_type":1001,"amt":10.1,"channel":"card_payment","out_trade_no":"456799999999"}"#,
        )
    }

    fn mistake_of(
        given: &str,
        content: &Object,
        basis: Basis<'_>,
        keys: &KeyRing,
        signer: Option<usize>,
    ) -> Option<SigningMistake> {
        match verify(Some(given), content, basis, keys, signer).status {
            DigestStatus::Mismatch { mistake, .. } => mistake,
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn vector_signing_mistakes() {
        let keys = ring(&["a1b2c3d4e5f6a7b8"]);
        let c = vector_content();
        let plain = Basis::Plaintext { ciphertext: None };
        assert_eq!(
            verify(
                Some("38c9c5fb49f7b813086babec07914497"),
                &c,
                plain,
                &keys,
                None
            )
            .status,
            DigestStatus::Ok
        );
        assert_eq!(
            mistake_of("4472fcdc61975ab051cabe0cf152ab00", &c, plain, &keys, None),
            Some(SigningMistake::DoubleQuotes)
        );
        assert_eq!(
            mistake_of("94653711566c4cd076ecd958f4dce23a", &c, plain, &keys, None),
            Some(SigningMistake::UnsortedKeys)
        );
        assert_eq!(
            mistake_of("f9c08aa7a68521b7c7a8f55587cea692", &c, plain, &keys, None),
            Some(SigningMistake::NumberReformatted(NumberForm::TwoDecimals))
        );
        assert_eq!(
            mistake_of("4c56244027ce9b14d1bcbeeccbd95192", &c, plain, &keys, None),
            Some(SigningMistake::KeyNotAppended)
        );
        match verify(
            Some("00000000000000000000000000000000"),
            &c,
            plain,
            &keys,
            None,
        )
        .status
        {
            DigestStatus::Mismatch {
                mistake: None,
                expected,
            } => {
                assert_eq!(expected, "38c9c5fb49f7b813086babec07914497")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_number_forms() {
        let key = "a1b2c3d4e5f6a7b8";
        let keys = ring(&[key]);
        let plain = Basis::Plaintext { ciphertext: None };
        // Sent 10.10, signed 10.1.
        let c = obj(r#"{"amt":10.10,"func_type":1001}"#);
        let d = digest("{amt=10.1,func_type=1001}", key);
        assert_eq!(
            mistake_of(&d, &c, plain, &keys, None),
            Some(SigningMistake::NumberReformatted(NumberForm::Shortest))
        );
        // Sent 10.1, signed in cents.
        let c = obj(r#"{"amt":10.1,"func_type":1001}"#);
        let d = digest("{amt=1010,func_type=1001}", key);
        assert_eq!(
            mistake_of(&d, &c, plain, &keys, None),
            Some(SigningMistake::NumberReformatted(NumberForm::IntegerCents))
        );
        // Sent 100, signed 100.0.
        let c = obj(r#"{"amt":100,"func_type":1001}"#);
        let d = digest("{amt=100.0,func_type=1001}", key);
        assert_eq!(
            mistake_of(&d, &c, plain, &keys, None),
            Some(SigningMistake::NumberReformatted(NumberForm::FloatNotation))
        );
        // Other mistakes.
        let d = digest("{amt=100, func_type=1001}", key);
        assert_eq!(
            mistake_of(&d, &c, plain, &keys, None),
            Some(SigningMistake::SpaceAfterComma)
        );
        let d = digest(r#"{"amt":100,"func_type":1001}"#, key);
        assert_eq!(
            mistake_of(&d, &c, plain, &keys, None),
            Some(SigningMistake::SignedJson)
        );
        let d = digest(key, "{amt=100,func_type=1001}");
        assert_eq!(
            mistake_of(&d, &c, plain, &keys, None),
            Some(SigningMistake::KeyPrepended)
        );
    }

    #[test]
    fn ciphertext_basis_both_directions() {
        let key = "a1b2c3d4e5f6a7b8";
        let keys = ring(&[key]);
        let c = vector_content();
        let b64 = "daMP0iKbfAuqTuRKSmG4DP3Dr/mCJEOHMd1Io7Rp+B0esBnXXzZgJJHxXgO1+ZVLRWGi+mh/GlxgG6GVfUW1YOHIyeaRCwtRmSGTC9ToMiftwNYPEA9DnIbTjr31Yojw";
        let basis = Basis::Ciphertext(b64);
        let v = verify(
            Some("bd5bc692a018fb9ad574c6996391d32f"),
            &c,
            basis,
            &keys,
            Some(0),
        );
        assert_eq!(
            v,
            Verification {
                status: DigestStatus::Ok,
                key_index: Some(0)
            }
        );
        // Signed over the plaintext instead.
        assert_eq!(
            mistake_of(
                "38c9c5fb49f7b813086babec07914497",
                &c,
                basis,
                &keys,
                Some(0)
            ),
            Some(SigningMistake::DigestOverPlaintext)
        );
        // Plaintext expected, signed over the ciphertext.
        let basis = Basis::Plaintext {
            ciphertext: Some(b64),
        };
        assert_eq!(
            mistake_of(
                "bd5bc692a018fb9ad574c6996391d32f",
                &c,
                basis,
                &keys,
                Some(0)
            ),
            Some(SigningMistake::DigestOverCiphertext)
        );
        assert_eq!(
            mistake_of(
                &md5_hex(b64.as_bytes()),
                &c,
                Basis::Ciphertext(b64),
                &keys,
                Some(0)
            ),
            Some(SigningMistake::KeyNotAppended)
        );
    }

    #[test]
    fn other_key_and_plain_key_search() {
        let keys = ring(&["a1b2c3d4e5f6a7b8", DEFAULT_KEY]);
        let c = vector_content();
        let plain = Basis::Plaintext { ciphertext: None };
        // Decrypted with key 0, signed with key 1.
        assert_eq!(
            mistake_of(
                "1e17d4ee31a804472ca4e78dfde823ee",
                &c,
                plain,
                &keys,
                Some(0)
            ),
            Some(SigningMistake::OtherKey { index: 1 })
        );
        // Plain: every key is tried and the signer reported.
        let v = verify(
            Some("1E17D4EE31A804472CA4E78DFDE823EE"),
            &c,
            plain,
            &keys,
            None,
        );
        assert_eq!(
            v,
            Verification {
                status: DigestStatus::Ok,
                key_index: Some(1)
            }
        );
    }

    #[test]
    fn absent_and_unverified() {
        let c = vector_content();
        let plain = Basis::Plaintext { ciphertext: None };
        assert_eq!(
            verify(None, &c, plain, &ring(&[DEFAULT_KEY]), None).status,
            DigestStatus::Absent
        );
        assert_eq!(
            verify(Some("x"), &c, plain, &KeyRing::new(), None).status,
            DigestStatus::Unverified
        );
    }

    #[test]
    fn lenient_content_round_trips() {
        let v = parse_lenient(
            b"{amt=10.1,channel='card_payment',func_type=1001,out_trade_no='456799999999'}",
        )
        .unwrap();
        assert_eq!(
            format_content(v.as_object().unwrap()),
            "{amt=10.1,channel='card_payment',func_type=1001,out_trade_no='456799999999'}"
        );
    }

    #[test]
    fn descriptions_are_distinct() {
        let all = [
            SigningMistake::NumberReformatted(NumberForm::Shortest),
            SigningMistake::NumberReformatted(NumberForm::TwoDecimals),
            SigningMistake::NumberReformatted(NumberForm::IntegerCents),
            SigningMistake::NumberReformatted(NumberForm::FloatNotation),
            SigningMistake::DoubleQuotes,
            SigningMistake::UnsortedKeys,
            SigningMistake::SpaceAfterComma,
            SigningMistake::SignedJson,
            SigningMistake::KeyNotAppended,
            SigningMistake::KeyPrepended,
            SigningMistake::DigestOverPlaintext,
            SigningMistake::DigestOverCiphertext,
            SigningMistake::OtherKey { index: 3 },
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|m| m.name()).collect();
        let descs: std::collections::HashSet<_> = all.iter().map(|m| m.description()).collect();
        assert_eq!(names.len(), all.len());
        assert_eq!(descs.len(), all.len());
        assert!(SigningMistake::OtherKey { index: 3 }
            .to_string()
            .contains("#3"));
    }
}
