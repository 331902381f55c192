//! The exceptions the bindings raise.
//!
//! One base class, `ecr_sniff.EcrError`, so a script can catch everything the
//! library refuses with one `except`, and one subclass per kind of refusal so it
//! can tell them apart. Messages never contain a POS-KEY (D3): key errors name the
//! key by its position in the list given.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    ecr_sniff,
    EcrError,
    PyException,
    "Base class of every error raised by ecr_sniff."
);
create_exception!(
    ecr_sniff,
    PosKeyError,
    EcrError,
    "A POS-KEY that cannot be used (empty, or not 16, 24 or 32 bytes / 32 hex digits)."
);
create_exception!(
    ecr_sniff,
    DecryptError,
    EcrError,
    "Ciphertext that is not Base64 of whole AES blocks, or that no key reading decrypts."
);
create_exception!(
    ecr_sniff,
    FrameBuildError,
    EcrError,
    "Frame data that does not fit the 16-bit length fields of a 0x2f6e frame."
);
create_exception!(
    ecr_sniff,
    EnvelopeError,
    EcrError,
    "A body that is not an ECR request or response (or cannot be decrypted)."
);
create_exception!(
    ecr_sniff,
    ContentError,
    EcrError,
    "Content given to digest() or format_content() that cannot be signed."
);
create_exception!(
    ecr_sniff,
    CaptureError,
    EcrError,
    "A capture file that cannot be opened or read; `path` and `reason` say which and why."
);

/// Adds the exception classes to the module.
pub fn register(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("EcrError", py.get_type::<EcrError>())?;
    m.add("PosKeyError", py.get_type::<PosKeyError>())?;
    m.add("DecryptError", py.get_type::<DecryptError>())?;
    m.add("FrameBuildError", py.get_type::<FrameBuildError>())?;
    m.add("EnvelopeError", py.get_type::<EnvelopeError>())?;
    m.add("ContentError", py.get_type::<ContentError>())?;
    m.add("CaptureError", py.get_type::<CaptureError>())?;
    Ok(())
}

/// A `CaptureError` whose message is `"<path>: <reason>"`, with `path` and `reason`
/// attributes for scripts that sort failures by file.
pub fn capture_error(py: Python<'_>, path: &str, reason: &str) -> PyErr {
    let err = CaptureError::new_err(format!("{path}: {reason}"));
    let value = err.value(py);
    // Attribute assignment on a fresh exception instance cannot fail in practice;
    // if it ever does, the message still names the file and the reason.
    let _ = value.setattr("path", path);
    let _ = value.setattr("reason", reason);
    err
}

/// A `PosKeyError` naming the key by its 1-based position, never by its text.
pub fn key_error(number: usize, reason: impl std::fmt::Display) -> PyErr {
    PosKeyError::new_err(format!("key number {number}: {reason}"))
}
