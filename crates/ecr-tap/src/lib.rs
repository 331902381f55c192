//! Live capture of ECR traffic (issue 5): libpcap on an interface, the serial
//! man-in-the-middle tap and the Wireshark extcap interface. Decoding is the same
//! analyzer as offline (`ecr-capture`); this crate only gets the bytes, with their
//! times, as they happen.
//!
//! - [`netcap`]: a libpcap capture that returns at least every 100 ms;
//! - [`tty`]: serial ports in raw mode with the spec's line settings, and
//!   pseudo-terminals for a cash register program when only the terminal is real;
//! - [`relay`]: the byte relay between the two ports (poll, read, write at once);
//! - [`session`]: runs the relay on its own thread, with the idle and tick timers a
//!   live decoder and a capture file writer need;
//! - [`extcap`]: the answers of Wireshark's extcap protocol;
//! - [`stop`]: SIGINT/SIGTERM as a flag.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod extcap;
pub mod netcap;
pub mod relay;
pub mod session;
pub mod stop;
pub mod tty;
