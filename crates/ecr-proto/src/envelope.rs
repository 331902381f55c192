//! Message bodies: the three request dialects (D4) and responses (D5), parsed from
//! an HTTP body, a TCP message or a reassembled serial data segment, and built for
//! sending.
//!
//! Requests:
//! - `plain`: `{"content": {...}, "digest": "<md5>"}`; `content` may also be a
//!   string holding the JSON (the spec's serial sample) or org.json text (spec
//!   section 4's `"{func_type: 3002}"`).
//! - `content-encrypted`: `{"content": "<Base64 of AES(JSON)>", "digest": md5(Base64 + key)}`.
//! - `envelope-encrypted` (Odoo): the whole body is Base64 of
//!   AES(`{content:{...}, digest:'<MD5>'}`), bare or as a JSON string literal;
//!   the digest is over the plaintext `format_content`.
//!
//! Responses: plain JSON `{"respcd", "respmsg", "resperr", "data"}` whose `data`
//! is a string holding JSON (parsed a second time); otherwise the body as Base64
//! of an encrypted response; otherwise `data` as Base64 of encrypted JSON.
//!
//! Every message reports its dialect, the key and key reading that decrypted it,
//! and the digest's status, so real captures can settle the open questions.

use core::fmt;
use std::borrow::Cow;

use crate::catalogue::{FuncType, RespCode};
use crate::cipher::{
    base64_decoded_len, decode_base64, decode_base64_clean, CipherError, KeyInterpretation,
    KeyRing, PosKey, BLOCK,
};
use crate::compact::CompactJson;
use crate::digest::{self, Basis, DigestStatus};
use crate::lenient::{parse_lenient, parse_lenient_str};
use crate::value::{write_json_string, CompactString, Object, Value, ValueError, MAX_INPUT_LEN};

/// The request dialects of D4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestDialect {
    /// Encryption off: content in clear.
    Plain,
    /// `content` is Base64 ciphertext; the digest is over that text.
    ContentEncrypted,
    /// The whole body is Base64 ciphertext of org.json text (Odoo).
    EnvelopeEncrypted,
}

impl RequestDialect {
    /// `plain`, `content-encrypted` or `envelope-encrypted`.
    pub fn name(self) -> &'static str {
        match self {
            RequestDialect::Plain => "plain",
            RequestDialect::ContentEncrypted => "content-encrypted",
            RequestDialect::EnvelopeEncrypted => "envelope-encrypted",
        }
    }
}

impl fmt::Display for RequestDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a response was protected (D5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseDialect {
    /// Plain JSON, `data` in clear (what Odoo reads and real terminals send).
    Plain,
    /// The whole body is Base64 ciphertext.
    Encrypted,
    /// Plain JSON whose `data` is Base64 ciphertext.
    DataEncrypted,
}

impl ResponseDialect {
    /// `plain`, `encrypted` or `data-encrypted`.
    pub fn name(self) -> &'static str {
        match self {
            ResponseDialect::Plain => "plain",
            ResponseDialect::Encrypted => "encrypted",
            ResponseDialect::DataEncrypted => "data-encrypted",
        }
    }
}

impl fmt::Display for ResponseDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the body itself was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyForm {
    /// A JSON object.
    Json,
    /// An object in org.json syntax (unquoted names, `=`, single quotes) sent in clear.
    Lenient,
    /// Bare Base64 text.
    Base64,
    /// Base64 text inside a JSON string literal (Odoo's `JSON.stringify`).
    QuotedBase64,
    /// A JSON string literal holding a JSON object (double-encoded).
    QuotedJson,
}

impl BodyForm {
    /// `json`, `lenient`, `base64`, `quoted-base64` or `quoted-json`.
    pub fn name(self) -> &'static str {
        match self {
            BodyForm::Json => "json",
            BodyForm::Lenient => "lenient",
            BodyForm::Base64 => "base64",
            BodyForm::QuotedBase64 => "quoted-base64",
            BodyForm::QuotedJson => "quoted-json",
        }
    }
}

/// How a request's `content` was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentForm {
    /// A JSON (or org.json) object.
    Object,
    /// A string holding strict JSON (the spec's serial sample).
    JsonString,
    /// A string holding org.json text (spec section 4's `"{func_type: 3002}"`).
    LenientString,
    /// A string holding Base64 ciphertext (content-encrypted dialect).
    Encrypted,
}

impl ContentForm {
    /// `object`, `json-string`, `lenient-string` or `encrypted`.
    pub fn name(self) -> &'static str {
        match self {
            ContentForm::Object => "object",
            ContentForm::JsonString => "json-string",
            ContentForm::LenientString => "lenient-string",
            ContentForm::Encrypted => "encrypted",
        }
    }
}

/// Which part of a message was encrypted, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptedPart {
    /// The whole body.
    Body,
    /// A request's `content`.
    Content,
    /// A response's `data`.
    Data,
}

impl fmt::Display for EncryptedPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncryptedPart::Body => "body",
            EncryptedPart::Content => "content",
            EncryptedPart::Data => "response data",
        })
    }
}

/// Why a body could not be read as an ECR message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not an ECR message at all; `seen` says what it looked like.
    #[error("not an ECR message: {seen}")]
    NotEnvelope {
        /// A short description of what was found.
        seen: String,
    },
    /// The body exceeds [`MAX_INPUT_LEN`].
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body starts like JSON but is not valid JSON (nor org.json text).
    #[error("malformed JSON body: {0}")]
    BadJson(ValueError),
    /// `content` is a string that could not be read.
    #[error("unreadable content: {reason}")]
    BadContent {
        /// What went wrong.
        reason: String,
    },
    /// Encrypted, and no key was given. Distinct from a failed decryption so the
    /// analyzer can report it as information rather than a fault.
    #[error("the {part} is encrypted and no POS-KEY was given")]
    NoKey {
        /// What was encrypted.
        part: EncryptedPart,
    },
    /// No key (and no reading of one) decrypts it.
    #[error("no POS-KEY decrypts the {part} ({attempts} key readings tried)")]
    DecryptFailed {
        /// What was encrypted.
        part: EncryptedPart,
        /// Key readings tried.
        attempts: usize,
    },
    /// The text decrypts with valid padding to UTF-8 that starts like JSON, but
    /// nests deeper than the parser's limit: the key is right, the content is not
    /// readable (reported as such, not as a wrong key).
    #[error("the {part} decrypts, but its JSON is past a parser limit: {source}")]
    DecryptedTooDeep {
        /// What was encrypted.
        part: EncryptedPart,
        /// The depth or size error.
        source: ValueError,
    },
    /// The ciphertext text is not Base64.
    #[error("the {part} is not valid Base64: {source}")]
    BadBase64 {
        /// What was encrypted.
        part: EncryptedPart,
        /// The decoding error.
        source: crate::cipher::Base64Error,
    },
    /// The ciphertext is empty or not whole AES blocks.
    #[error("the {part} is {len} bytes of ciphertext, not a whole number of AES blocks")]
    BadCiphertext {
        /// What was encrypted.
        part: EncryptedPart,
        /// Ciphertext length in bytes.
        len: usize,
    },
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The dialect (D4).
    pub dialect: RequestDialect,
    /// How the body was written.
    pub body_form: BodyForm,
    /// How `content` was written.
    pub content_form: ContentForm,
    /// The content object, decrypted, in wire order with raw number tokens.
    pub content: Object,
    /// The decrypted text (the envelope for envelope-encrypted, the content JSON
    /// for content-encrypted).
    pub plaintext: Option<String>,
    /// The Base64 ciphertext text that was decrypted.
    pub ciphertext: Option<String>,
    /// The digest as sent.
    pub digest: Option<CompactString>,
    /// The digest's status.
    pub digest_status: DigestStatus,
    /// The key that decrypted the message or, for plain requests, signed it.
    pub key_index: Option<usize>,
    /// How the decrypting key was read (D3); `None` for plain requests.
    pub interpretation: Option<KeyInterpretation>,
}

impl Request {
    /// The instruction code, if present and numeric.
    pub fn func_type(&self) -> Option<FuncType> {
        FuncType::from_content(&self.content)
    }

    /// The canonical `format_content` of the content.
    pub fn format_content(&self) -> String {
        digest::format_content(&self.content)
    }
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The dialect (D5).
    pub dialect: ResponseDialect,
    /// How the body was written.
    pub body_form: BodyForm,
    /// All top-level fields, decrypted, in wire order, as sent. A `data` sent as a
    /// JSON value (an object, the usual plain response) is parsed once and stays
    /// here; [`Response::data`] reads it from here without a copy.
    pub fields: Object,
    /// `respcd` as text.
    pub respcd: Option<CompactString>,
    /// `respmsg` as text.
    pub respmsg: Option<CompactString>,
    /// `resperr` as text.
    pub resperr: Option<CompactString>,
    /// `data` when it was sent as a string: the JSON it holds (parsed a second
    /// time), its decryption, or the string itself when it is neither. `None` when
    /// `data` was sent as a JSON value (it is in `fields`), is absent, null or an
    /// empty string, kept as compact text (`data_compact`), or could not be read
    /// (see `data_problem`). Read `data` with [`Response::data`], which covers
    /// every form.
    pub data_from_string: Option<Value>,
    /// `data` sent as a string that holds compact JSON (the usual plain response,
    /// see [`crate::compact`]): kept as that text, not parsed, and
    /// `data_from_string` is `None`. [`Response::data`] parses it on first use;
    /// an analyzer copies it to its records as it is.
    pub data_compact: Option<CompactJson>,
    /// The parse of `data_compact`, made by the first [`Response::data`].
    data_parsed: ParsedOnce,
    /// Why `data` could not be parsed or decrypted, if it could not.
    pub data_problem: Option<EnvelopeError>,
    /// The decrypted body text, for an encrypted response.
    pub plaintext: Option<String>,
    /// The key that decrypted the body or data.
    pub key_index: Option<usize>,
    /// How that key was read (D3).
    pub interpretation: Option<KeyInterpretation>,
}

impl Response {
    /// The response code, if numeric.
    pub fn resp_code(&self) -> Option<RespCode> {
        RespCode::from_value(self.fields.get("respcd")?)
    }

    /// `data`, parsed: the value sent, or what a string `data` holds (JSON parsed a
    /// second time, or decrypted). `None` when absent, null, an empty string, or
    /// unreadable (see `data_problem`). With several `data` members the last counts,
    /// as in [`Object::get`].
    pub fn data(&self) -> Option<&Value> {
        match self.fields.get("data")? {
            Value::Null => None,
            Value::String(_) => match &self.data_compact {
                Some(c) => Some(self.data_parsed.0.get_or_init(|| c.to_value())),
                None => self.data_from_string.as_ref(),
            },
            v => Some(v),
        }
    }

    /// `data` as an object, if it is one.
    pub fn data_object(&self) -> Option<&Object> {
        self.data().and_then(Value::as_object)
    }

    /// `data` as sent: the string, or compact JSON of a non-string value (written
    /// on each call). `None` when absent or null.
    pub fn data_raw(&self) -> Option<Cow<'_, str>> {
        match self.fields.get("data")? {
            Value::Null => None,
            Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            v => Some(Cow::Owned(v.to_json_string())),
        }
    }

    /// Moves the fields out, and `data` when it is compact JSON text
    /// ([`Response::data_compact`]): the response as an analyzer shows it, each
    /// `data` member standing for that text, without parsing it. Otherwise
    /// [`Response::take_fields_with_data`] and `None`.
    pub fn take_fields_and_compact_data(&mut self) -> (Object, Option<CompactJson>) {
        match (self.fields.get("data"), self.data_compact.take()) {
            (Some(Value::String(_)), Some(c)) => {
                self.data_parsed = ParsedOnce::default();
                (core::mem::take(&mut self.fields), Some(c))
            }
            (_, c) => {
                self.data_compact = c;
                (self.take_fields_with_data(), None)
            }
        }
    }

    /// Moves the fields out (leaving `fields` empty and `data_from_string` taken),
    /// with every `data` member replaced by the parsed [`Response::data`] when there
    /// is one: the response as an analyzer shows it. No copy unless `data` occurs
    /// more than once.
    pub fn take_fields_with_data(&mut self) -> Object {
        let from_string = match self.data_compact.take() {
            Some(c) => self.data_parsed.0.take().or_else(|| Some(c.to_value())),
            None => self.data_from_string.take(),
        };
        let mut fields = core::mem::take(&mut self.fields);
        let parsed = match fields.get("data") {
            None | Some(Value::Null) => return fields,
            Some(Value::String(_)) => match from_string {
                Some(v) => v,
                None => return fields,
            },
            // Sent as a value: it is its own parsed form. Only duplicates need work.
            Some(_) if fields.keys().filter(|k| *k == "data").count() < 2 => return fields,
            Some(v) => v.clone(),
        };
        fields.replace_all("data", parsed);
        fields
    }
}

/// A value parsed on first use from text kept beside it. Equal whatever was
/// parsed, since the text decides the value.
#[derive(Debug, Clone, Default)]
struct ParsedOnce(std::sync::OnceLock<Value>);

impl PartialEq for ParsedOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ParsedOnce {}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A body with `content`: an instruction from the cash register.
    Request(Request),
    /// A body with `respcd`: an answer. On the serial link the business result
    /// travels in a 0x10 frame of its own (D2); it is still a response here,
    /// since the frame type says nothing about the body.
    Response(Response),
}

/// What [`probe`] thinks a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// JSON or org.json text with a `content` member.
    Request,
    /// JSON with a `respcd` member.
    Response,
    /// Base64 (bare or quoted) of a whole number of AES blocks: an encrypted
    /// body, request or response (only a key tells).
    Encrypted,
}

/// Trims ASCII whitespace and a UTF-8 byte order mark.
fn trim_body(body: &[u8]) -> &[u8] {
    let body = body.trim_ascii();
    body.strip_prefix(b"\xEF\xBB\xBF")
        .map(<[u8]>::trim_ascii)
        .unwrap_or(body)
}

/// Whether `text` is plausibly Base64 of whole AES blocks.
fn looks_like_ciphertext(text: &[u8]) -> bool {
    base64_decoded_len(text).is_some_and(|n| n >= BLOCK && n % BLOCK == 0)
}

/// A cheap check whether a body is an ECR message, without parsing or
/// decrypting it: for choosing which connections to decode.
pub fn probe(body: &[u8]) -> Option<Kind> {
    let text = trim_body(body);
    match text.first()? {
        b'{' => {
            let head = text.get(..text.len().min(4096)).unwrap_or(text);
            let has = |needle: &[u8]| memchr::memmem::find(head, needle).is_some();
            if has(b"\"content\"") || has(b"'content'") || has(b"content:") || has(b"content=") {
                Some(Kind::Request)
            } else if has(b"\"respcd\"") {
                Some(Kind::Response)
            } else {
                None
            }
        }
        b'"' => {
            let inner = text.strip_suffix(b"\"")?.get(1..)?;
            looks_like_ciphertext(inner).then_some(Kind::Encrypted)
        }
        _ => looks_like_ciphertext(text).then_some(Kind::Encrypted),
    }
}

/// Parses a message body. `keys` may be empty: plain messages still parse (with
/// [`DigestStatus::Unverified`]), encrypted ones fail with
/// [`EnvelopeError::NoKey`].
pub fn parse(body: &[u8], keys: &KeyRing) -> Result<Message, EnvelopeError> {
    if body.len() > MAX_INPUT_LEN {
        return Err(EnvelopeError::TooLarge {
            len: body.len(),
            max: MAX_INPUT_LEN,
        });
    }
    let text = trim_body(body);
    match text.first() {
        None => Err(not_envelope("an empty body".into())),
        Some(b'{') => parse_object_body(text, BodyForm::Json, keys),
        Some(b'[') => match Value::parse_json(text) {
            Ok(v) => Err(not_envelope(format!("a JSON {}", v.kind_name()))),
            Err(e) => Err(EnvelopeError::BadJson(e)),
        },
        Some(b'"') => {
            let inner = match Value::parse_json(text) {
                Ok(Value::String(s)) => s,
                Ok(other) => return Err(not_envelope(format!("a JSON {}", other.kind_name()))),
                Err(e) => return Err(EnvelopeError::BadJson(e)),
            };
            let inner_bytes = trim_body(inner.as_bytes());
            if inner_bytes.first() == Some(&b'{') {
                parse_object_body(inner_bytes, BodyForm::QuotedJson, keys)
            } else {
                parse_encrypted_body(inner_bytes, BodyForm::QuotedBase64, keys).unwrap_or_else(
                    || {
                        Err(not_envelope(format!(
                            "a JSON string that is not Base64 of AES blocks ({})",
                            describe(inner_bytes)
                        )))
                    },
                )
            }
        }
        Some(_) => parse_encrypted_body(text, BodyForm::Base64, keys)
            .unwrap_or_else(|| Err(not_envelope(describe(text)))),
    }
}

fn not_envelope(seen: String) -> EnvelopeError {
    EnvelopeError::NotEnvelope { seen }
}

/// A short, printable description of unrecognised bytes.
fn describe(text: &[u8]) -> String {
    let head: String = String::from_utf8_lossy(text.get(..32).unwrap_or(text))
        .chars()
        .take(24)
        .collect();
    if text.contains(&0) || core::str::from_utf8(text).is_err() {
        format!("{} bytes of binary data starting {head:?}", text.len())
    } else {
        format!("{} bytes of text starting {head:?}", text.len())
    }
}

/// Parses a JSON (or org.json) object body in clear.
fn parse_object_body(
    text: &[u8],
    form: BodyForm,
    keys: &KeyRing,
) -> Result<Message, EnvelopeError> {
    let (value, form, data) = match Value::parse_json_envelope(text) {
        Ok((v, data)) => (v, form, data),
        Err(e) => match parse_lenient(text) {
            Ok(v) => (v, BodyForm::Lenient, None),
            Err(_) => return Err(EnvelopeError::BadJson(e)),
        },
    };
    let Value::Object(obj) = value else {
        return Err(not_envelope(format!("a JSON {}", value.kind_name())));
    };
    classify(obj, form, keys, None, data)
}

/// The decryption that produced an object, if any.
struct Decryption {
    plaintext: String,
    key_index: usize,
    interpretation: KeyInterpretation,
}

/// Decides request or response by the members present.
/// `data`, when given, is the check of `obj`'s (last) `data` string, made while it
/// was parsed.
fn classify(
    obj: Object,
    form: BodyForm,
    keys: &KeyRing,
    decrypted: Option<Decryption>,
    data: Option<CompactJson>,
) -> Result<Message, EnvelopeError> {
    if obj.contains_key("content") {
        request_from_object(obj, form, keys, decrypted).map(Message::Request)
    } else if obj.contains_key("respcd")
        || (obj.contains_key("data")
            && (obj.contains_key("respmsg") || obj.contains_key("resperr")))
    {
        Ok(Message::Response(response_from_object(
            obj, form, keys, decrypted, data,
        )))
    } else {
        let names: Vec<&str> = obj.keys().take(8).collect();
        let inside = if decrypted.is_some() {
            "decrypted "
        } else {
            ""
        };
        Err(not_envelope(if names.is_empty() {
            format!("an empty {inside}JSON object")
        } else {
            format!(
                "a {inside}JSON object without content or respcd (members: {})",
                names.join(", ")
            )
        }))
    }
}

/// A member as text, for digests and codes: strings as they are, numbers as
/// their token; `null`, absent and empty strings are `None`.
fn text_member(obj: &Object, name: &str) -> Option<CompactString> {
    match obj.get(name)? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        // Short codes ("6000") stay inline: no allocation.
        Value::String(s) | Value::Number(s) => Some(s.clone()),
        v => Some(v.to_display_string().into()),
    }
}

/// [`text_member`], moving the text out of `obj` (which is about to be dropped)
/// instead of copying it: a digest is 32 characters, too long to be kept inline.
fn take_text_member(obj: &mut Object, name: &str) -> Option<CompactString> {
    match obj.take(name)? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) | Value::Number(s) => Some(s),
        v => Some(v.to_display_string().into()),
    }
}

fn map_cipher_error(part: EncryptedPart, e: CipherError) -> EnvelopeError {
    match e {
        CipherError::NoKey => EnvelopeError::NoKey { part },
        CipherError::WrongKey { attempts } => EnvelopeError::DecryptFailed { part, attempts },
        CipherError::Base64(source) => EnvelopeError::BadBase64 { part, source },
        CipherError::Empty => EnvelopeError::BadCiphertext { part, len: 0 },
        CipherError::NotBlockAligned { len } => EnvelopeError::BadCiphertext { part, len },
    }
}

/// Decodes and decrypts Base64 `text`, accepting only plaintext that is UTF-8
/// and parses (JSON or org.json) to a value `want` approves.
fn decrypt_value(
    text: &[u8],
    part: EncryptedPart,
    keys: &KeyRing,
    want: fn(&Value) -> bool,
) -> Result<(Value, Decryption), EnvelopeError> {
    if keys.is_empty() {
        return Err(EnvelopeError::NoKey { part });
    }
    let ct = decode_base64(text).map_err(|source| EnvelopeError::BadBase64 { part, source })?;
    decrypt_decoded(ct, part, keys, want)
}

/// When `text` is Base64 of whole AES blocks (as [`looks_like_ciphertext`]
/// decides), [`decrypt_value`] of it; `None` when it is not. The usual text, only
/// the alphabet and padding, is decoded once and its decoded length decides (the
/// length the measure gives, see [`decode_base64_clean`]); other text is measured
/// first and then decoded, as before.
fn decrypt_if_ciphertext(
    text: &[u8],
    part: EncryptedPart,
    keys: &KeyRing,
    want: fn(&Value) -> bool,
) -> Option<Result<(Value, Decryption), EnvelopeError>> {
    // The decoder makes its output buffer first: not for text that cannot be
    // Base64 at either end (binary, a stray body).
    let b64 = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !keys.is_empty() && b64(text.first()) && b64(text.last()) {
        if let Some(ct) = decode_base64_clean(text) {
            return (ct.len() >= BLOCK && ct.len() % BLOCK == 0)
                .then(|| decrypt_decoded(ct, part, keys, want));
        }
    }
    looks_like_ciphertext(text).then(|| decrypt_value(text, part, keys, want))
}

/// [`decrypt_value`] of ciphertext already decoded.
fn decrypt_decoded(
    ct: Vec<u8>,
    part: EncryptedPart,
    keys: &KeyRing,
    want: fn(&Value) -> bool,
) -> Result<(Value, Decryption), EnvelopeError> {
    let mut parsed = None;
    let mut too_deep = None;
    let d = keys
        // Strict JSON first: faster, and it reads any text it accepts as the
        // lenient parser does (a property test holds it to that).
        .decrypt_owned_with(ct, |plain| {
            match Value::parse_json(plain).or_else(|_| parse_lenient(plain)) {
                Ok(v) if want(&v) => {
                    parsed = Some(v);
                    true
                }
                Err(e @ (ValueError::TooDeep { .. } | ValueError::TooManyValues { .. })) => {
                    too_deep = Some(e);
                    false
                }
                _ => false,
            }
        })
        .map_err(|e| match (e, too_deep.take()) {
            (CipherError::WrongKey { .. }, Some(source)) => {
                EnvelopeError::DecryptedTooDeep { part, source }
            }
            (e, _) => map_cipher_error(part, e),
        })?;
    let value = parsed.ok_or(EnvelopeError::DecryptFailed { part, attempts: 0 })?;
    let plaintext = String::from_utf8(d.plaintext).unwrap_or_default();
    Ok((
        value,
        Decryption {
            plaintext,
            key_index: d.key_index,
            interpretation: d.interpretation,
        },
    ))
}

fn is_object(v: &Value) -> bool {
    matches!(v, Value::Object(_))
}

fn is_any(_: &Value) -> bool {
    true
}

/// Parses an encrypted body (Base64 text, bare or unquoted already) when it is
/// Base64 of whole AES blocks; `None` when it is not.
fn parse_encrypted_body(
    text: &[u8],
    form: BodyForm,
    keys: &KeyRing,
) -> Option<Result<Message, EnvelopeError>> {
    let decrypted = decrypt_if_ciphertext(text, EncryptedPart::Body, keys, is_object)?;
    Some(decrypted.and_then(|(value, dec)| encrypted_message(value, dec, form, keys)))
}

/// The message a decrypted body holds.
fn encrypted_message(
    value: Value,
    dec: Decryption,
    form: BodyForm,
    keys: &KeyRing,
) -> Result<Message, EnvelopeError> {
    let Value::Object(obj) = value else {
        return Err(not_envelope("decrypted body is not an object".into()));
    };
    classify(obj, form, keys, Some(dec), None)
}

fn request_from_object(
    mut obj: Object,
    form: BodyForm,
    keys: &KeyRing,
    decrypted: Option<Decryption>,
) -> Result<Request, EnvelopeError> {
    let digest_text = take_text_member(&mut obj, "digest");
    let outer_encrypted = decrypted.is_some();
    let mut req = Request {
        dialect: if outer_encrypted {
            RequestDialect::EnvelopeEncrypted
        } else {
            RequestDialect::Plain
        },
        body_form: form,
        content_form: ContentForm::Object,
        content: Object::new(),
        plaintext: None,
        ciphertext: None,
        digest: digest_text,
        digest_status: DigestStatus::Unverified,
        key_index: None,
        interpretation: None,
    };
    if let Some(d) = decrypted {
        req.plaintext = Some(d.plaintext);
        req.key_index = Some(d.key_index);
        req.interpretation = Some(d.interpretation);
    }
    // Moved out: `obj` is not used after this.
    match obj.take("content") {
        Some(Value::Object(o)) => req.content = o,
        Some(Value::String(s)) => {
            let t = s.trim();
            if t.starts_with('{') {
                let (v, cf) = match Value::parse_json_str(t) {
                    Ok(v) => (v, ContentForm::JsonString),
                    Err(e) => match parse_lenient_str(t) {
                        Ok(v) => (v, ContentForm::LenientString),
                        Err(_) => {
                            return Err(EnvelopeError::BadContent {
                                reason: format!("content string is not JSON: {e}"),
                            })
                        }
                    },
                };
                let Value::Object(o) = v else {
                    return Err(EnvelopeError::BadContent {
                        reason: "content string does not hold an object".into(),
                    });
                };
                req.content = o;
                req.content_form = cf;
            } else if outer_encrypted {
                return Err(EnvelopeError::BadContent {
                    reason: "content inside an encrypted envelope is a string, not an object"
                        .into(),
                });
            } else {
                let (v, d) = decrypt_value(t.as_bytes(), EncryptedPart::Content, keys, is_object)?;
                if let Value::Object(o) = v {
                    req.content = o;
                }
                req.dialect = RequestDialect::ContentEncrypted;
                req.content_form = ContentForm::Encrypted;
                req.plaintext = Some(d.plaintext);
                req.key_index = Some(d.key_index);
                req.interpretation = Some(d.interpretation);
                req.ciphertext = Some(s.into_string());
            }
        }
        Some(other) => {
            return Err(not_envelope(format!(
                "a JSON object whose content is a {}",
                other.kind_name()
            )))
        }
        None => return Err(not_envelope("a JSON object without content".into())),
    }
    let basis = match &req.ciphertext {
        Some(b64) => Basis::Ciphertext(b64),
        None => Basis::Plaintext { ciphertext: None },
    };
    let v = digest::verify(
        req.digest.as_deref(),
        &req.content,
        basis,
        keys,
        req.key_index,
    );
    req.digest_status = v.status;
    if req.key_index.is_none() && req.digest_status == DigestStatus::Ok {
        req.key_index = v.key_index;
    }
    Ok(req)
}

fn response_from_object(
    obj: Object,
    form: BodyForm,
    keys: &KeyRing,
    decrypted: Option<Decryption>,
    checked: Option<CompactJson>,
) -> Response {
    let mut resp = Response {
        dialect: if decrypted.is_some() {
            ResponseDialect::Encrypted
        } else {
            ResponseDialect::Plain
        },
        body_form: form,
        respcd: text_member(&obj, "respcd"),
        respmsg: text_member(&obj, "respmsg"),
        resperr: text_member(&obj, "resperr"),
        data_from_string: None,
        data_compact: None,
        data_parsed: ParsedOnce::default(),
        data_problem: None,
        plaintext: None,
        key_index: None,
        interpretation: None,
        fields: Object::new(),
    };
    if let Some(d) = decrypted {
        resp.plaintext = Some(d.plaintext);
        resp.key_index = Some(d.key_index);
        resp.interpretation = Some(d.interpretation);
    }
    match obj.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            let t = s.trim();
            if t.is_empty() {
            } else if let Some(c) = checked.or_else(|| CompactJson::new(t)) {
                resp.data_compact = Some(c);
            } else if t.starts_with(['{', '[']) {
                match Value::parse_json_str(t)
                    .or_else(|e| parse_lenient_str(t).map_err(|_| EnvelopeError::BadJson(e)))
                {
                    Ok(v) => resp.data_from_string = Some(v),
                    Err(e) => resp.data_problem = Some(e),
                }
            } else if let Some(decrypted) = resp
                .key_index
                .is_none()
                .then(|| decrypt_if_ciphertext(t.as_bytes(), EncryptedPart::Data, keys, is_any))
                .flatten()
            {
                match decrypted {
                    Ok((v, d)) => {
                        resp.data_from_string = Some(v);
                        resp.dialect = ResponseDialect::DataEncrypted;
                        resp.key_index = Some(d.key_index);
                        resp.interpretation = Some(d.interpretation);
                        resp.plaintext = Some(d.plaintext);
                    }
                    Err(e) => resp.data_problem = Some(e),
                }
            } else {
                resp.data_from_string = Some(Value::String(s.clone()));
            }
        }
        // A JSON value: parsed already, it stays in `fields` (see `Response::data`).
        Some(_) => {}
    }
    resp.fields = obj;
    resp
}

/// Builds a request body in `dialect`, signed and (if the dialect says so)
/// encrypted with `key`'s primary reading, exactly as the reference vectors:
/// - plain: `{"content":<compact JSON>,"digest":"<lowercase md5>"}`;
/// - content-encrypted: `{"content":"<Base64>","digest":"<md5(Base64 + key)>"}`;
/// - envelope-encrypted: the JSON string literal of the Base64 of
///   `{content:<format_content>, digest:'<UPPERCASE md5>'}` (Odoo's form).
pub fn build_request(dialect: RequestDialect, content: &Object, key: &PosKey) -> Vec<u8> {
    build_request_with_digest(dialect, content, key, None)
}

/// [`build_request`], but with `digest` (when given) sent in place of the right
/// one: what a cash register that signs wrongly sends, to test a terminal's 4003
/// and an analyzer's digest checks.
pub fn build_request_with_digest(
    dialect: RequestDialect,
    content: &Object,
    key: &PosKey,
    digest: Option<&str>,
) -> Vec<u8> {
    let secret = key.expose_secret();
    let sign = |text: &str| match digest {
        Some(d) => d.to_string(),
        None => digest::digest(text, secret),
    };
    let mut out = String::new();
    match dialect {
        RequestDialect::Plain => {
            let d = sign(&digest::format_content(content));
            out.push_str("{\"content\":");
            out.push_str(&Value::Object(content.clone()).to_json_string());
            out.push_str(",\"digest\":");
            write_json_string(&d, &mut out);
            out.push('}');
        }
        RequestDialect::ContentEncrypted => {
            let json = Value::Object(content.clone()).to_json_string();
            let b64 = key.encrypt_base64(json.as_bytes());
            let d = sign(&b64);
            out.push_str("{\"content\":");
            write_json_string(&b64, &mut out);
            out.push_str(",\"digest\":");
            write_json_string(&d, &mut out);
            out.push('}');
        }
        RequestDialect::EnvelopeEncrypted => {
            let fc = digest::format_content(content);
            let d = match digest {
                Some(d) => d.to_string(),
                None => digest::digest(&fc, secret).to_ascii_uppercase(),
            };
            let plaintext = format!("{{content:{fc}, digest:'{d}'}}");
            write_json_string(&key.encrypt_base64(plaintext.as_bytes()), &mut out);
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a1b2c3d4e5f6a7b8";

    fn ring(keys: &[&str]) -> KeyRing {
        keys.iter().map(|k| PosKey::new(k).unwrap()).collect()
    }

    fn request(body: &[u8], keys: &KeyRing) -> Request {
        match parse(body, keys) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn response(body: &[u8], keys: &KeyRing) -> Response {
        match parse(body, keys) {
            Ok(Message::Response(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn serial_sample_content_string() {
        let body = br#"{"content":"{\"amt\":100,\"channel\":\"wx\",\"funcType\":1,\"mode\":1}","digest":"2f0c4683e25a7b9407265033070e9034"}"#;
        let r = request(body, &KeyRing::new());
        assert_eq!(r.dialect, RequestDialect::Plain);
        assert_eq!(r.content_form, ContentForm::JsonString);
        assert_eq!(
            r.content.get("amt").and_then(Value::as_number_token),
            Some("100")
        );
        assert_eq!(r.content.get("channel").and_then(Value::as_str), Some("wx"));
        assert_eq!(
            r.digest.as_deref(),
            Some("2f0c4683e25a7b9407265033070e9034")
        );
        assert_eq!(r.digest_status, DigestStatus::Unverified);
        assert_eq!(r.func_type(), None);
    }

    #[test]
    fn lenient_content_string() {
        let r = request(
            br#"{"content": "{func_type: 3002}", "digest":"79fd145311d54d03e4e685d50f15dd7f"}"#,
            &KeyRing::new(),
        );
        assert_eq!(r.content_form, ContentForm::LenientString);
        assert_eq!(r.func_type(), Some(FuncType::PRINT_SUMMARY));
    }

    #[test]
    fn no_key_is_distinct() {
        let keys = KeyRing::new();
        let body = br#"{"content":"daMP0iKbfAuqTuRKSmG4DP3Dr/mCJEOHMd1Io7Rp+B0esBnXXzZgJJHxXgO1+ZVLRWGi+mh/GlxgG6GVfUW1YOHIyeaRCwtRmSGTC9ToMiftwNYPEA9DnIbTjr31Yojw","digest":"bd5bc692a018fb9ad574c6996391d32f"}"#;
        assert_eq!(
            parse(body, &keys),
            Err(EnvelopeError::NoKey {
                part: EncryptedPart::Content
            })
        );
        let wrong = ring(&["0000000000000000"]);
        assert!(matches!(
            parse(body, &wrong),
            Err(EnvelopeError::DecryptFailed {
                part: EncryptedPart::Content,
                attempts: 1
            })
        ));
        assert_eq!(
            parse(b"\"lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=\"", &keys),
            Err(EnvelopeError::NoKey { part: EncryptedPart::Body })
        );
    }

    #[test]
    fn decisions_encryption_vectors_as_bodies() {
        let keys = ring(&["my_qfpay_pos_key", "f46b1f08bec1f39104792cc79ec9aacd"]);
        let r = request(b"lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=", &keys);
        assert_eq!(r.dialect, RequestDialect::EnvelopeEncrypted);
        assert_eq!(r.body_form, BodyForm::Base64);
        assert_eq!(
            (r.key_index, r.interpretation),
            (Some(0), Some(KeyInterpretation::Text128))
        );
        assert_eq!(r.func_type(), Some(FuncType::CANCEL_REQUEST));
        assert_eq!(
            r.digest.as_deref(),
            Some("5511FE1F062D5DE5AADF6D076F34B8D2")
        );
        assert_eq!(r.digest_status, DigestStatus::Ok);
        let r = request(b"\"XczeNuwMCct+IaXZ00lv7Pern+ttWiSyG+Y62QH+wXr471L2opZR5JPeQPXADN\\/Xc1s+VL82RqBp0KFPo5Mm6KUFau0S1WRPC2YN4s6WpiFjwrbGPq3JPZ2OYXTGZHAb\"", &keys);
        assert_eq!(r.body_form, BodyForm::QuotedBase64);
        assert_eq!(
            (r.key_index, r.interpretation),
            (Some(1), Some(KeyInterpretation::Text256))
        );
        assert_eq!(r.format_content(), "{func_type=4001,orderId='12345678'}");
        assert_eq!(r.digest_status, DigestStatus::Ok);
    }

    #[test]
    fn data_sent_as_a_value_is_read_in_place() {
        let body = br#"{"respcd":"6000","data":{"syssn":"1","txamt":100},"respmsg":"ok"}"#;
        let mut r = response(body, &KeyRing::new());
        assert_eq!(r.data_from_string, None);
        assert_eq!(
            r.data_object().and_then(|d| d.get("txamt")),
            Some(&Value::Number("100".into()))
        );
        assert_eq!(
            r.data_raw().as_deref(),
            Some(r#"{"syssn":"1","txamt":100}"#)
        );
        let fields = r.take_fields_with_data();
        assert_eq!(
            Value::Object(fields).to_json_string(),
            core::str::from_utf8(body).unwrap()
        );
        assert!(r.fields.is_empty());
        // A string holding JSON: every `data` member shows the parsed last one.
        let body = br#"{"respcd":"6000","data":1,"data":"{\"a\":[true]}"}"#;
        let mut r = response(body, &KeyRing::new());
        assert_eq!(r.data_raw().as_deref(), Some(r#"{"a":[true]}"#));
        assert_eq!(
            r.data().map(Value::to_json_string).as_deref(),
            Some(r#"{"a":[true]}"#)
        );
        assert_eq!(
            Value::Object(r.take_fields_with_data()).to_json_string(),
            r#"{"respcd":"6000","data":{"a":[true]},"data":{"a":[true]}}"#
        );
        // Compact JSON in the string is kept as text, not parsed, until asked.
        let body = br#"{"respcd":"6000","data":"{\"syssn\":\"1\",\"q\":\"a\\\"b\"}"}"#;
        let mut r = response(body, &KeyRing::new());
        let text = r#"{"syssn":"1","q":"a\"b"}"#;
        assert_eq!(r.data_compact.as_ref().map(CompactJson::as_str), Some(text));
        assert_eq!(r.data_from_string, None);
        assert_eq!(r.data().map(Value::to_json_string).as_deref(), Some(text));
        let (fields, data) = r.clone().take_fields_and_compact_data();
        assert_eq!(data.as_ref().map(CompactJson::as_str), Some(text));
        assert_eq!(fields.get("data"), Some(&Value::from(text)));
        assert_eq!(
            Value::Object(r.take_fields_with_data()).to_json_string(),
            format!(r#"{{"respcd":"6000","data":{text}}}"#)
        );
        // Not compact (a space): parsed as before.
        let body = br#"{"respcd":"6000","data":"{\"a\": 1}"}"#;
        let mut r = response(body, &KeyRing::new());
        assert_eq!(r.data_compact, None);
        assert_eq!(
            r.data().map(Value::to_json_string).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(r.take_fields_and_compact_data().1, None);
        // Duplicates with a value last: the earlier one shows it too.
        let body = br#"{"data":"{\"a\":1}","respcd":"6000","data":[2]}"#;
        let mut r = response(body, &KeyRing::new());
        assert_eq!(
            r.data().and_then(Value::as_array).map(<[Value]>::len),
            Some(1)
        );
        assert_eq!(
            Value::Object(r.take_fields_with_data()).to_json_string(),
            r#"{"data":[2],"respcd":"6000","data":[2]}"#
        );
        // Null or unreadable data stays as sent.
        let body = br#"{"respcd":"6000","data":"{bad"}"#;
        let mut r = response(body, &KeyRing::new());
        assert_eq!(r.data(), None);
        assert!(r.data_problem.is_some());
        assert_eq!(
            Value::Object(r.take_fields_with_data()).to_json_string(),
            core::str::from_utf8(body).unwrap()
        );
    }

    #[test]
    fn odoo_success_response() {
        let body = br#"{"respcd":"6000","respmsg":"AUTHORISED","resperr":"trade success","data":"{\"batchNo\":\"250703\",\"busicd\":\"802808\",\"cardNo\":\"541375******6830\",\"cardType\":\"MASTERCARD\",\"cardscheme\":\"MASTERCARD\",\"chnlsn\":\"2025070375830316\",\"clisn\":\"030800\",\"mchntnm\":\"Odoo HK Limited\",\"out_trade_no\":\"456799999999\",\"paydtm\":\"2025-07-03 14:33:23\",\"paymentType\":\"SALES\",\"respcd\":\"0000\",\"sysdtm\":\"2025-07-03 14:33:22\",\"syssn\":\"20250703155400020061880690\",\"terminalId\":\"253SCASG9109\",\"txamt\":\"100\",\"txcurrcd\":\"344\"}"}"#;
        let r = response(body, &KeyRing::new());
        assert_eq!(r.dialect, ResponseDialect::Plain);
        assert_eq!(r.respcd.as_deref(), Some("6000"));
        assert_eq!(r.resp_code(), Some(RespCode::SUCCESS));
        assert_eq!(r.respmsg.as_deref(), Some("AUTHORISED"));
        assert_eq!(r.resperr.as_deref(), Some("trade success"));
        let data = r.data_object().unwrap();
        assert_eq!(data.get("txamt").and_then(Value::as_str), Some("100"));
        assert_eq!(data.get("respcd").and_then(Value::as_str), Some("0000"));
        assert_eq!(data.len(), 17);
        assert!(r.data_raw().unwrap().starts_with("{\"batchNo\""));
        assert_eq!(r.data_problem, None);
    }

    #[test]
    fn depth_limit_inside_an_encrypted_body_is_not_a_wrong_key() {
        let key = PosKey::new(KEY).unwrap();
        let keys = KeyRing::single(key.clone());
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let plain = format!("{{\"content\":{deep},\"digest\":\"x\"}}");
        let body = key.encrypt_base64(plain.as_bytes());
        let e = parse(body.as_bytes(), &keys).unwrap_err();
        assert!(
            matches!(
                e,
                EnvelopeError::DecryptedTooDeep {
                    source: ValueError::TooDeep { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("decrypts, but its JSON is past a parser limit: nesting deeper than"),
            "{e}"
        );
        // A wrong key is still a wrong key.
        let e = parse(body.as_bytes(), &ring(&["0000000000000000"])).unwrap_err();
        assert!(matches!(e, EnvelopeError::DecryptFailed { .. }), "{e:?}");
    }

    #[test]
    fn encrypted_responses() {
        let key = PosKey::new(KEY).unwrap();
        let keys = KeyRing::single(key.clone());
        // Whole body encrypted.
        let inner = r#"{"respcd":"6001","respmsg":"cancelled","resperr":"","data":""}"#;
        let body = key.encrypt_base64(inner.as_bytes());
        let r = response(body.as_bytes(), &keys);
        assert_eq!(r.dialect, ResponseDialect::Encrypted);
        assert_eq!(r.respcd.as_deref(), Some("6001"));
        assert_eq!(r.resperr, None);
        assert_eq!(r.plaintext.as_deref(), Some(inner));
        // Only data encrypted.
        let data = key.encrypt_base64(br#"{"syssn":"123","txamt":"1010"}"#);
        let body = format!(r#"{{"respcd":"6000","respmsg":"ok","resperr":"","data":"{data}"}}"#);
        let r = response(body.as_bytes(), &keys);
        assert_eq!(r.dialect, ResponseDialect::DataEncrypted);
        assert_eq!(
            r.data_object()
                .and_then(|d| d.get("txamt"))
                .and_then(Value::as_str),
            Some("1010")
        );
        assert_eq!(r.key_index, Some(0));
        // Without a key the envelope still parses and says why data is missing.
        let r = response(body.as_bytes(), &KeyRing::new());
        assert_eq!(r.data(), None);
        assert_eq!(
            r.data_problem,
            Some(EnvelopeError::NoKey {
                part: EncryptedPart::Data
            })
        );
        assert_eq!(r.respcd.as_deref(), Some("6000"));
    }

    #[test]
    fn not_envelopes() {
        let keys = KeyRing::new();
        for (body, want) in [
            (&b""[..], "an empty body"),
            (b"[1,2]", "not an ECR message: a JSON array"),
            (b"{\"a\":1}", "members: a"),
            (b"GET / HTTP/1.1\r\n", "text starting \"GET / HTTP/1.1"),
            (b"{\"content\":5}", "content is a number"),
            (b"\"hello\"", "base64"),
        ] {
            let err = parse(body, &keys).unwrap_err().to_string();
            assert!(
                err.to_lowercase().contains(&want.to_lowercase()),
                "{err} / {want}"
            );
        }
        assert!(matches!(
            parse(b"{\"a\":", &keys),
            Err(EnvelopeError::BadJson(_))
        ));
    }

    #[test]
    fn probes() {
        assert_eq!(probe(b" {\"content\":{}}"), Some(Kind::Request));
        assert_eq!(probe(b"{content:{func_type=5001}}"), Some(Kind::Request));
        assert_eq!(probe(b"{\"respcd\":\"6000\"}"), Some(Kind::Response));
        assert_eq!(probe(b"{\"x\":1}"), None);
        assert_eq!(probe(b"\"XczeNuwMCct+IaXZ00lv7Pern+ttWiSyG+Y62QH+wXr471L2opZR5JPeQPXADN/Xc1s+VL82RqBp0KFPo5Mm6KUFau0S1WRPC2YN4s6WpiFjwrbGPq3JPZ2OYXTGZHAb\""), Some(Kind::Encrypted));
        assert_eq!(probe(b"lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=\n"), Some(Kind::Encrypted));
        assert_eq!(probe(b"hello"), None);
        assert_eq!(probe(b"GET / HTTP/1.1"), None);
        assert_eq!(probe(b""), None);
    }

    #[test]
    fn build_then_parse_every_dialect() {
        let key = PosKey::new("f46b1f08bec1f39104792cc79ec9aacd").unwrap();
        let keys = KeyRing::single(key.clone());
        let mut content = Object::new();
        content.push("func_type", Value::Number("1002".into()));
        content.push("orderId", Value::from("2025"));
        content.push("refund_amount", Value::from("0.05"));
        for dialect in [
            RequestDialect::Plain,
            RequestDialect::ContentEncrypted,
            RequestDialect::EnvelopeEncrypted,
        ] {
            let body = build_request(dialect, &content, &key);
            let kind = if dialect == RequestDialect::EnvelopeEncrypted {
                Kind::Encrypted
            } else {
                Kind::Request
            };
            assert_eq!(probe(&body), Some(kind));
            let r = request(&body, &keys);
            assert_eq!(r.dialect, dialect);
            assert_eq!(r.digest_status, DigestStatus::Ok, "{dialect}");
            assert_eq!(r.key_index, Some(0));
            assert_eq!(
                r.content.get("orderId").and_then(Value::as_str),
                Some("2025")
            );
        }
    }

    #[test]
    fn lenient_plain_body() {
        let fc = "{func_type=5001}";
        let d = digest::digest(fc, KEY).to_uppercase();
        let body = format!("{{content:{fc}, digest:'{d}'}}");
        let r = request(body.as_bytes(), &ring(&[KEY]));
        assert_eq!(r.body_form, BodyForm::Lenient);
        assert_eq!(r.dialect, RequestDialect::Plain);
        assert_eq!(r.digest_status, DigestStatus::Ok);
    }
    #[test]
    fn a_given_digest_is_sent_in_every_dialect_and_fails_verification() {
        let key = PosKey::new(KEY).unwrap();
        let keys = KeyRing::single(key.clone());
        let mut content = Object::new();
        content.push("func_type", Value::Number("3002".into()));
        for dialect in [
            RequestDialect::Plain,
            RequestDialect::ContentEncrypted,
            RequestDialect::EnvelopeEncrypted,
        ] {
            let wrong = "5d41402abc4b2a76b9719d911017c592";
            let body = build_request_with_digest(dialect, &content, &key, Some(wrong));
            let r = request(&body, &keys);
            assert_eq!(r.dialect, dialect);
            assert_eq!(r.digest.as_deref(), Some(wrong), "{dialect}");
            assert_eq!(r.digest_status.name(), "mismatch", "{dialect}");
            // Without one, the same content is signed correctly.
            let right = request(
                &build_request_with_digest(dialect, &content, &key, None),
                &keys,
            );
            assert_eq!(right.digest_status, DigestStatus::Ok, "{dialect}");
        }
    }
}
