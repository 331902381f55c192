//! Python bindings for ecr-sniff: `import ecr_sniff`.
//!
//! The native module is `ecr_sniff._native`; the pure-Python package
//! `python/ecr_sniff` re-exports it and carries the type stubs. Everything here is a
//! thin layer over `ecr-proto` and `ecr-capture`: the bindings add no protocol
//! logic of their own, so Python sees exactly what the command line sees.
//!
//! Modules:
//! - [`errors`]: the exception hierarchy (`ecr_sniff.EcrError` and subclasses).
//! - [`convert`]: bytes in without copying, Python values to and from protocol values.
//! - [`frames`]: `decode_frames`, the streaming `Decoder`, `build_frames`.
//! - [`crypto`]: `decrypt`, `encrypt`, `digest`, `format_content`, `verify`.
//! - [`analyze`]: `analyze`, an iterator of jsonl-shaped records produced on a
//!   worker thread while the GIL is released.
//!
//! Untrusted bytes: every function here hands its input to parsers that never
//! panic, and turns every error into a Python exception.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod analyze;
pub mod convert;
pub mod crypto;
pub mod errors;
pub mod frames;

use pyo3::prelude::*;

/// The native half of the `ecr_sniff` package (`ecr_sniff._native`).
#[pymodule]
#[pyo3(name = "_native")]
fn ecr_sniff_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    errors::register(py, m)?;
    frames::register(m)?;
    crypto::register(m)?;
    analyze::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
