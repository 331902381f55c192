//! Crossing the language boundary.
//!
//! - [`BytesIn`]: bytes-like arguments. A `bytes` object is borrowed in place (no
//!   copy: the analyzer and decoders read Python's own buffer); `str` is borrowed
//!   as its UTF-8; `bytearray` and `memoryview` are copied once, since their
//!   contents may change while we read them.
//! - [`content_from_py`]: a Python dict (or JSON text) to the protocol's
//!   [`Object`], numbers as the token Python's `json.dumps` would send, so that a
//!   digest computed here matches what a Python cash register signs.
//! - [`json_to_py`]: JSON text to Python objects through the standard `json`
//!   module, so a record is exactly `json.loads` of the command line's jsonl line
//!   (big integers stay exact, floats round-trip as the text says).

use ecr_proto::value::{Object, Value, MAX_DEPTH};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use crate::errors::ContentError;

/// A bytes-like argument; see the module documentation.
pub enum BytesIn<'py> {
    /// A `bytes` object, read in place.
    Bytes(Bound<'py, PyBytes>),
    /// A `str`, read as its UTF-8 in place.
    Str(Bound<'py, PyString>),
    /// A copy of a mutable buffer.
    Owned(Vec<u8>),
}

impl<'py> BytesIn<'py> {
    /// Extracts `obj`, accepting `str` only when `allow_str` (text such as Base64).
    pub fn extract(obj: &Bound<'py, PyAny>, allow_str: bool, what: &str) -> PyResult<Self> {
        if let Ok(b) = obj.downcast::<PyBytes>() {
            return Ok(BytesIn::Bytes(b.clone()));
        }
        if allow_str {
            if let Ok(s) = obj.downcast::<PyString>() {
                // Fail early on lone surrogates, which have no UTF-8.
                s.to_str()?;
                return Ok(BytesIn::Str(s.clone()));
            }
        }
        if let Ok(b) = obj.downcast::<PyByteArray>() {
            return Ok(BytesIn::Owned(b.to_vec()));
        }
        if obj.is_instance_of::<pyo3::types::PyMemoryView>() {
            let copied = obj.call_method0("tobytes")?;
            let b = copied.downcast::<PyBytes>()?;
            return Ok(BytesIn::Owned(b.as_bytes().to_vec()));
        }
        let accepted = if allow_str {
            "str, bytes, bytearray or memoryview"
        } else {
            "bytes, bytearray or memoryview"
        };
        Err(PyTypeError::new_err(format!(
            "{what} must be {accepted}, not {}",
            obj.get_type().name()?
        )))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            BytesIn::Bytes(b) => b.as_bytes(),
            // Checked in `extract`; an impossible failure reads as empty input.
            BytesIn::Str(s) => s.to_str().map(str::as_bytes).unwrap_or_default(),
            BytesIn::Owned(v) => v,
        }
    }
}

/// Converts a content argument: a dict, or JSON text holding an object (its number
/// tokens kept exactly, e.g. `10.10`).
pub fn content_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Object> {
    if let Ok(s) = obj.downcast::<PyString>() {
        let text = s.to_str()?;
        return match Value::parse_json(text.as_bytes()) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(other) => Err(ContentError::new_err(format!(
                "content must be a JSON object, not a JSON {}",
                other.kind_name()
            ))),
            Err(e) => Err(ContentError::new_err(format!("content is not JSON: {e}"))),
        };
    }
    let dict = obj.downcast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "content must be a dict or JSON text, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    object_from_dict(dict, "content", 0)
}

fn object_from_dict(dict: &Bound<'_, PyDict>, path: &str, depth: usize) -> PyResult<Object> {
    let mut out = Object::new();
    for (k, v) in dict.iter() {
        let key = k.downcast::<PyString>().map_err(|_| {
            ContentError::new_err(format!("{path}: keys must be str, found {}", type_name(&k)))
        })?;
        let key = key.to_str()?.to_owned();
        let value = value_from_py(&v, &format!("{path}.{key}"), depth + 1)?;
        out.push(key, value);
    }
    Ok(out)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// One Python value as a protocol value. `path` names it in errors
/// (`content.amt`), `depth` bounds recursion on self-referencing containers.
fn value_from_py(obj: &Bound<'_, PyAny>, path: &str, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(ContentError::new_err(format!(
            "{path}: nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: in Python bool is a subclass of int.
    if let Ok(b) = obj.downcast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(Value::Number(obj.str()?.to_str()?.into()));
    }
    if let Ok(f) = obj.downcast::<PyFloat>() {
        let x = f.value();
        if !x.is_finite() {
            return Err(ContentError::new_err(format!(
                "{path}: {x} cannot be sent in JSON"
            )));
        }
        // repr() is the shortest round-trip form, exactly what json.dumps writes.
        return Ok(Value::Number(obj.repr()?.to_str()?.into()));
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(Value::String(s.to_str()?.into()));
    }
    if let Ok(d) = obj.downcast::<PyDict>() {
        return Ok(Value::Object(object_from_dict(d, path, depth)?));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = vec![];
        for (i, item) in obj.try_iter()?.enumerate() {
            items.push(value_from_py(&item?, &format!("{path}[{i}]"), depth + 1)?);
        }
        return Ok(Value::Array(items));
    }
    Err(ContentError::new_err(format!(
        "{path}: cannot sign a value of type {}",
        type_name(obj)
    )))
}

static JSON_LOADS: GILOnceCell<Py<PyAny>> = GILOnceCell::new();

/// `json.loads(text)`.
pub fn json_to_py(py: Python<'_>, text: &str) -> PyResult<PyObject> {
    let loads = JSON_LOADS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("json")?.getattr("loads")?.unbind())
    })?;
    Ok(loads.bind(py).call1((text,))?.unbind())
}

/// A protocol value as Python objects (via its JSON text, numbers as sent).
pub fn value_to_py(py: Python<'_>, value: &Value) -> PyResult<PyObject> {
    json_to_py(py, &value.to_json_string())
}
