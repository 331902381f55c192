//! The analyzer's memory budget: one number, split over every table that input can
//! grow, so that memory is bounded by configuration and never by what a capture
//! holds or announces.
//!
//! | table | share of the budget | default (32 MiB) |
//! |---|---|---|
//! | TCP connections (entries) | 1/3, at [`CONN_COST`] bytes each | 4,369 |
//! | stream buffers: unfinished HTTP/D6/frame messages, TLS records and handshake messages in reassembly and the handshake facts kept (tickets, names), open refs, frames waiting for their ack or answer, unanswered requests, over all connections | 1/3 | 10.7 MiB |
//! | TCP out-of-order segments | 1/8 | 4 MiB |
//! | IP fragments | 1/24 | 1.3 MiB, 85 datagrams |
//! | remembered card payments (partial-refund check) | 1/16 | 2 MiB, 32,768 payments |
//! | latency samples (percentiles) | 1/32 | 131,072 samples |
//!
//! Outside the budget: the process itself (about 5 MB) and the message being
//! decoded (its body is at most 1 MiB when parsed, [`ecr_proto::value::MAX_INPUT_LEN`],
//! and at most [`ecr_proto::value::MAX_VALUES`] values: a few megabytes of tree while
//! it is decoded).
//!
//! Per connection, at most [`MAX_PENDING_PER_CONN`] requests wait for their
//! response. When a bound drops something, the analyzer reports a `limit-evicted`
//! finding naming what was dropped and which limit did it, once per limit and
//! connection (or once per limit for the tables shared by all connections).

/// The default budget: with the process and one message being decoded, `analyze`
/// stays under 64 MB of resident memory on any input.
pub const DEFAULT_BUDGET: usize = 32 << 20;
/// The smallest budget accepted (smaller values are raised to it).
pub const MIN_BUDGET: usize = 4 << 20;
/// Bytes counted per tracked TCP connection: TCP and analyzer state, parsers,
/// labels, and the slots of the tables that remember connections (their unfinished
/// messages and unanswered requests count in the stream share). Measured with
/// massif on 4096 concurrent connections of the dense capture (`dense_capture
/// --concurrent 4096`): about 2.1 KB each, 2.8 KB with their unfinished messages
/// and unanswered requests. With the default budget 4,369 connections fit, so 4096
/// cash registers talking at the same time are followed without evictions.
pub const CONN_COST: usize = 5 << 9;
/// Requests waiting for their response on one connection (HTTP pipelining, D2's
/// results); the oldest is dropped beyond this.
pub const MAX_PENDING_PER_CONN: usize = 1024;
/// Serial links (the project's serial capture format names one per pcapng
/// interface, USB captures one per device) followed at once; the bytes of further
/// links are not decoded, with one `limit-evicted` finding. Each takes about 2 KB.
pub const MAX_SERIAL_LINKS: usize = 256;
/// Bytes counted per unanswered request on top of its remembered fields.
pub const PENDING_COST: usize = 160;
/// Bytes counted per remembered payment on top of its ids and channel.
pub const PAYMENT_COST: usize = 96;

/// Bounds of every table, from [`Limits::from_budget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The overall budget these come from, in bytes.
    pub budget: usize,
    /// TCP connections tracked at once.
    pub connections: usize,
    /// Bytes held by unfinished messages, open refs, frames waiting for their ack
    /// or answer and unanswered requests over all connections.
    pub stream_bytes: usize,
    /// Out-of-order TCP bytes over all connections.
    pub ooo_bytes: usize,
    /// Out-of-order TCP bytes per direction.
    pub ooo_bytes_per_dir: usize,
    /// IP datagrams being reassembled.
    pub fragments: usize,
    /// Bytes of IP fragments.
    pub fragment_bytes: usize,
    /// Payments remembered.
    pub payments: usize,
    /// Bytes of remembered payments.
    pub payment_bytes: usize,
    /// Latency samples kept for the percentiles.
    pub latency_samples: usize,
    /// Largest HTTP body read.
    pub http_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_budget(DEFAULT_BUDGET)
    }
}

impl Limits {
    /// Splits `budget` bytes over the tables (see the module documentation).
    pub fn from_budget(budget: usize) -> Self {
        let b = budget.max(MIN_BUDGET);
        let stream_bytes = b / 3;
        let payment_bytes = b / 16;
        let fragment_bytes = b / 24;
        Limits {
            budget: b,
            connections: (b / 3 / CONN_COST).max(16),
            stream_bytes,
            ooo_bytes: b / 8,
            ooo_bytes_per_dir: (b / 8).min(1 << 20),
            fragments: (fragment_bytes / (16 << 10)).clamp(8, 256),
            fragment_bytes,
            payments: (payment_bytes / 64).min(100_000),
            payment_bytes,
            latency_samples: b / 32 / 8,
            http_body: (stream_bytes / 2).min(16 << 20),
        }
    }
}

/// Parses a size such as `48M`, `1G`, `512k` or `100000000` (bytes). Suffixes are
/// binary (K = 1024) and case-insensitive; a trailing `B` or `iB` is allowed.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, mult) = [('k', 1usize << 10), ('m', 1 << 20), ('g', 1 << 30)]
        .into_iter()
        .find_map(|(c, m)| body.strip_suffix(c).map(|n| (n, m)))
        .unwrap_or((body, 1));
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("'{t}' is not a size (examples: 64M, 1G, 512K, 100000000)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{t}' is too large"))
}

/// What the analyzer holds now and held at most, for tests and `--stats`-like
/// displays: every number comes from the tables themselves, not the clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes held by the bounded tables now (data plus per-entry bookkeeping).
    pub held: usize,
    /// Bytes reserved from the allocator for them now (capacities).
    pub reserved: usize,
    /// Stream-buffer bytes held now over all connections (see
    /// [`Limits::stream_bytes`]).
    pub stream_bytes: usize,
    /// The most stream-buffer bytes held at any point.
    pub peak_stream_bytes: usize,
    /// TCP connections tracked now.
    pub connections: usize,
    /// The most connections tracked at any point.
    pub peak_connections: usize,
    /// Split messages open (refs) over all links.
    pub open_refs: usize,
    /// Out-of-order TCP bytes held (with per-segment bookkeeping).
    pub ooo_bytes: usize,
    /// IP datagrams waiting for fragments.
    pub fragments: usize,
    /// Requests waiting for their response over all connections.
    pub pending: usize,
    /// Payments remembered.
    pub payments: usize,
    /// Bytes of remembered payments.
    pub payment_bytes: usize,
    /// Latency samples kept.
    pub latency_samples: usize,
    /// Things dropped by a limit so far (connections, datagrams, messages,
    /// requests, payments).
    pub evictions: u64,
    /// Bytes examined and decrypted by the TCP 9002 text framers so far (see
    /// [`crate::tcptext::TextFramer::work`]): linear time means a small multiple
    /// of the bytes they were fed.
    pub text_work: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn default_split() {
        let l = Limits::default();
        assert_eq!(l.connections, 4_369);
        // 4096 cash registers at the same time (`dense_capture --concurrent 4096`).
        assert!(l.connections >= 4096);
        assert_eq!(l.stream_bytes, (32 << 20) / 3);
        assert_eq!(l.payments, 32_768);
        assert_eq!(l.latency_samples, 131_072);
        assert_eq!(l.fragments, 85);
        let sum = l.connections * CONN_COST
            + l.stream_bytes
            + l.ooo_bytes
            + l.fragment_bytes
            + l.payment_bytes
            + l.latency_samples * 8;
        assert!(sum <= l.budget, "{sum} > {}", l.budget);
        assert_eq!(Limits::from_budget(0).budget, MIN_BUDGET);
    }
}
