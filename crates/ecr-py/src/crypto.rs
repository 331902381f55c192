//! AES, the MD5 digest and envelope verification for Python: `decrypt`,
//! `encrypt`, `digest`, `format_content`, `verify` and its `Verdict`.
//!
//! Keys follow D3: the key text's bytes are the AES key (16, 24 or 32 bytes), and a
//! 32-hex-digit key is also tried as the 16 bytes it encodes. Keys are never put in
//! an error message or a repr.

use ecr_proto::cipher::{KeyRing, PosKey};
use ecr_proto::digest::{self as proto_digest, DigestStatus};
use ecr_proto::envelope::{self, Message, Request, Response};
use ecr_proto::value::Value;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::convert::{content_from_py, json_to_py, value_to_py, BytesIn};
use crate::errors::{key_error, DecryptError, EnvelopeError, PosKeyError};

/// One key from its text; the error never contains the text.
fn one_key(text: &str) -> PyResult<PosKey> {
    PosKey::new(text).map_err(|e| PosKeyError::new_err(format!("POS-KEY: {e}")))
}

/// A key ring from `None`, one key text, or a sequence of key texts.
pub fn key_ring(keys: Option<&Bound<'_, PyAny>>) -> PyResult<KeyRing> {
    let mut ring = KeyRing::new();
    let Some(keys) = keys.filter(|k| !k.is_none()) else {
        return Ok(ring);
    };
    if let Ok(s) = keys.downcast::<PyString>() {
        ring.push(one_key(s.to_str()?)?);
        return Ok(ring);
    }
    for (i, item) in keys.try_iter()?.enumerate() {
        let item = item?;
        let text = item
            .downcast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("key number {} must be a str", i + 1)))?;
        ring.push(PosKey::new(text.to_str()?).map_err(|e| key_error(i + 1, e))?);
    }
    Ok(ring)
}

/// Decrypts Base64 `text` (str or bytes) with `key`; returns the plaintext bytes.
#[pyfunction]
pub fn decrypt<'py>(
    py: Python<'py>,
    text: &Bound<'py, PyAny>,
    key: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let key = one_key(key)?;
    let input = BytesIn::extract(text, true, "text")?;
    let slice = input.as_slice();
    let out = py
        .allow_threads(|| key.decrypt_base64(slice))
        .map_err(|e| DecryptError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &out.plaintext))
}

/// Encrypts `plain` (str as UTF-8, or bytes) with `key` read as its text bytes
/// (as Odoo does); returns the Base64 text.
#[pyfunction]
pub fn encrypt(py: Python<'_>, plain: &Bound<'_, PyAny>, key: &str) -> PyResult<String> {
    let key = one_key(key)?;
    let input = BytesIn::extract(plain, true, "plain")?;
    let slice = input.as_slice();
    Ok(py.allow_threads(|| key.encrypt_base64(slice)))
}

/// The canonical `format_content` of a content dict (or JSON text).
#[pyfunction]
#[pyo3(name = "format_content")]
pub fn py_format_content(content: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(proto_digest::format_content(&content_from_py(content)?))
}

/// The digest of a content dict (or JSON text): lowercase hex
/// md5(format_content + key text).
#[pyfunction]
#[pyo3(name = "digest")]
pub fn py_digest(content: &Bound<'_, PyAny>, key: &str) -> PyResult<String> {
    let key = one_key(key)?;
    let fc = proto_digest::format_content(&content_from_py(content)?);
    Ok(proto_digest::digest(&fc, key.expose_secret()))
}

/// What `verify` found in a message body.
#[pyclass(frozen, module = "ecr_sniff", get_all)]
pub struct Verdict {
    /// "request" or "response".
    kind: &'static str,
    /// Request: "plain", "content-encrypted" or "envelope-encrypted" (D4);
    /// response: "plain", "encrypted" or "data-encrypted" (D5).
    dialect: &'static str,
    /// How the body was written: "json", "lenient", "base64", "quoted-base64", "quoted-json".
    body_form: &'static str,
    /// Requests: "ok", "mismatch", "absent" or "unverified" (no key). None for responses.
    digest: Option<&'static str>,
    /// The digest as sent.
    digest_value: Option<String>,
    /// For a mismatch: the digest the content should carry (lowercase hex).
    expected_digest: Option<String>,
    /// For a mismatch explained by a known signing bug: its stable name
    /// ("double-quotes", "unsorted-keys", "key-not-appended", ...).
    mistake: Option<&'static str>,
    /// That signing bug in a sentence.
    mistake_detail: Option<String>,
    /// 0-based index of the key that decrypted (or, plain, signed) the message.
    key_index: Option<usize>,
    /// How that key was read (D3): "text-128", "text-192", "text-256", "hex-128".
    key_interpretation: Option<&'static str>,
    /// Requests: the content as Python objects.
    content: Option<PyObject>,
    /// Requests: the content as JSON text, numbers exactly as sent.
    content_json: Option<String>,
    /// Requests: the canonical format_content the digest is computed over.
    format_content: Option<String>,
    /// Responses: the fields, `data` parsed a second time (D5).
    response: Option<PyObject>,
    /// Responses: respcd as text.
    respcd: Option<String>,
    /// The decrypted text, for an encrypted message.
    plaintext: Option<String>,
}

#[pymethods]
impl Verdict {
    /// True for a request whose digest checks out.
    #[getter]
    fn ok(&self) -> bool {
        self.digest == Some("ok")
    }

    fn __repr__(&self) -> String {
        match self.kind {
            "request" => format!(
                "Verdict(request, dialect={:?}, digest={:?}{})",
                self.dialect,
                self.digest.unwrap_or("absent"),
                self.mistake
                    .map(|m| format!(", mistake={m:?}"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "Verdict(response, dialect={:?}, respcd={:?})",
                self.dialect, self.respcd
            ),
        }
    }
}

fn request_verdict(py: Python<'_>, r: Request) -> PyResult<Verdict> {
    let (expected, mistake) = match &r.digest_status {
        DigestStatus::Mismatch { mistake, expected } => (Some(expected.clone()), *mistake),
        _ => (None, None),
    };
    let content_value = Value::Object(r.content.clone());
    Ok(Verdict {
        kind: "request",
        dialect: r.dialect.name(),
        body_form: r.body_form.name(),
        digest: Some(r.digest_status.name()),
        digest_value: r.digest.as_deref().map(String::from),
        expected_digest: expected,
        mistake: mistake.map(|m| m.name()),
        mistake_detail: mistake.map(|m| m.description()),
        key_index: r.key_index,
        key_interpretation: r.interpretation.map(|i| i.name()),
        content: Some(value_to_py(py, &content_value)?),
        content_json: Some(content_value.to_json_string()),
        format_content: Some(r.format_content()),
        response: None,
        respcd: None,
        plaintext: r.plaintext,
    })
}

fn response_verdict(py: Python<'_>, mut r: Response) -> PyResult<Verdict> {
    // The fields with `data` replaced by its parsed value, as the analyzer shows them.
    let fields = r.take_fields_with_data();
    Ok(Verdict {
        kind: "response",
        dialect: r.dialect.name(),
        body_form: r.body_form.name(),
        digest: None,
        digest_value: None,
        expected_digest: None,
        mistake: None,
        mistake_detail: None,
        key_index: r.key_index,
        key_interpretation: r.interpretation.map(|i| i.name()),
        content: None,
        content_json: None,
        format_content: None,
        response: Some(json_to_py(py, &Value::Object(fields).to_json_string())?),
        respcd: r.respcd.map(String::from),
        plaintext: r.plaintext,
    })
}

/// Parses a message body (an HTTP body, a TCP message or a reassembled serial data
/// segment), decrypts it with `key` (one key text or a list) and checks its digest.
#[pyfunction]
#[pyo3(signature = (body, key = None))]
pub fn verify(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    key: Option<&Bound<'_, PyAny>>,
) -> PyResult<Verdict> {
    let ring = key_ring(key)?;
    let input = BytesIn::extract(body, true, "body")?;
    let slice = input.as_slice();
    let parsed = py
        .allow_threads(|| envelope::parse(slice, &ring))
        .map_err(|e| EnvelopeError::new_err(e.to_string()))?;
    match parsed {
        Message::Request(r) => request_verdict(py, r),
        Message::Response(r) => response_verdict(py, r),
    }
}

/// Adds the cipher and digest functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Verdict>()?;
    m.add_function(wrap_pyfunction!(decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(py_format_content, m)?)?;
    m.add_function(wrap_pyfunction!(py_digest, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    Ok(())
}
