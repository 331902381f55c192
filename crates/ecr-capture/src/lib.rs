//! Reading captures, from the file up to reassembled byte streams and HTTP messages.
//!
//! Layers, bottom up (nothing here is ECR-specific):
//! - [`source`]: streaming pcap/pcapng/gzip reader handing out borrowed packets, and
//!   pcap/pcapng writers.
//! - [`linklayer`]: from a packet's link type to the network-layer payload.
//! - [`ip`]: IPv4/IPv6 parsing and fragment reassembly.
//! - [`tcp`]: TCP segments, per-connection stream reassembly, a fast port pre-filter
//!   and TLS detection.
//! - [`http`]: an incremental HTTP/1.1 parser over a reassembled stream.
//!
//! Every parser takes untrusted bytes: none panics, allocates without bound or loops
//! forever on any input.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// What the paragraph above promises, held by the compiler outside tests: no
// `unwrap`, `expect`, `panic!`, `unreachable!` or unchecked `[]` (input is read with
// `get` and friends; per-direction state is indexed by direction, `tcp::PerDir`).
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

pub mod analyzer;
pub mod craft;
pub mod findings;
pub mod framelink;
pub mod http;
pub mod ip;
pub mod keylog;
pub mod keys;
pub mod ladder;
pub mod limits;
pub mod linklayer;
pub mod message;
pub mod output;
mod payments;
pub mod pipeline;
pub mod record;
pub mod serialcap;
pub mod source;
pub mod tcp;
pub mod tcptext;
pub mod textfile;
pub mod tls;
pub mod usb;

#[cfg(test)]
mod testutil;
