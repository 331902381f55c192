//! The cash register client (`ecr-sniff send`) and the terminal emulator
//! (`ecr-sniff emulate`) of issue 7.
//!
//! Both sides use the protocol crate for everything on the wire (envelopes,
//! digests, AES, frames, reassembly), so the traffic they produce is exactly what
//! the analyzer reads; only sockets, serial lines, timing and the emulated
//! terminal's business logic live here. Blocking I/O on std threads: no async
//! runtime, to keep the build light.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Bytes from the network or a serial line never panic this crate: no `unwrap`,
// `expect`, `panic!` or `unreachable!` outside tests (held by the compiler).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod client;
pub mod cors;
pub mod dense;
pub mod faults;
pub mod line;
pub mod request;
pub mod seriallink;
pub mod server;
pub mod signals;
pub mod target;
pub mod terminal;
pub mod textgate;
pub mod tls;
pub mod wait;

pub use client::{Exchange, FrameFault, SendOptions, TcpFraming, WireChunk};
pub use faults::{Fault, Faults};
pub use request::Instruction;
pub use target::Target;
pub use terminal::{Terminal, TerminalConfig};

use std::time::{SystemTime, UNIX_EPOCH};

use ecr_proto::Timestamp;

/// The wall clock as a capture timestamp: live code timestamps what it sees.
pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_parts(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}
