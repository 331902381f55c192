//! Live capture of ECR traffic (issue 5): libpcap on an interface, the serial
//! man-in-the-middle tap and the Wireshark extcap interface. Decoding is the same
//! analyzer as offline (`ecr-capture`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
