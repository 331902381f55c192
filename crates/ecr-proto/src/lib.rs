//! The QFPay ECR protocol, without I/O, clocks or printing.
//!
//! Layers, bottom up:
//! - [`frame`]: the `0x2f6e` serial frame (a checked view over bytes, and a builder).
//! - [`stream`]: a per-direction decoder that turns arbitrary chunks into frames,
//!   skipping (and accounting for) bytes that are not a frame.
//! - [`reassembly`]: joins the fragments of a split message (D1).
//! - [`link`]: pairs requests with acks and error frames (D2).
//! - [`cipher`]: AES-CBC with the fixed IV and the POS-KEY (D3).
//! - [`value`] and [`lenient`]: JSON and org.json-style text, numbers kept as on the wire.
//! - [`digest`]: `format_content` and the MD5 signature, with known signing mistakes.
//! - [`envelope`]: the three request dialects and responses (D4, D5).
//! - [`catalogue`]: func_type, channel, respcd and field tables from the spec.
//! - [`text`]: strings from captures made safe to print on a terminal.
//! - [`swar`]: the eight-bytes-at-a-time tests the JSON string scanners share.
//!
//! Every parser here takes untrusted bytes: none of them panics, allocates without
//! bound or loops forever on any input.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// What the paragraph above promises, held by the compiler outside tests: no
// `unwrap`, `expect`, `panic!`, `unreachable!` or unchecked `[]` (every access to
// input goes through `get` and friends).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing
    )
)]

pub mod catalogue;
pub mod cipher;
pub mod compact;
pub mod digest;
pub mod envelope;
pub mod frame;
pub mod lenient;
pub mod link;
pub mod reassembly;
pub mod stream;
pub mod swar;
pub mod text;
pub mod time;
pub mod value;

pub use time::Timestamp;
