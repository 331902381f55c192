//! Hostile input (issue 11): each crafted shape that once broke a memory or time
//! bound, in a small version, analysed with the real limits. Bounds are asserted
//! through the analyzer's own counters (`Analyzer::usage`) and its findings, never
//! through wall time or the process's memory.

use std::process::Command;

use ecr_capture::analyzer::Config;
use ecr_capture::craft::{self, Flow, Outcome, PcapBuilder, TextShape};
use ecr_capture::findings::Code;
use ecr_capture::keys::KeySet;
use ecr_capture::limits::{Limits, CONN_COST, MAX_PENDING_PER_CONN};
use ecr_proto::cipher::PosKey;

const KEY: &str = "my_qfpay_pos_key";
/// Bytes one packet may add before the limits are enforced (checked per packet).
const ONE_PACKET: usize = 256 << 10;

fn cfg(budget: usize) -> Config {
    Config {
        limits: Limits::from_budget(budget),
        ..Config::default()
    }
}

fn keyed() -> KeySet {
    let mut k = KeySet::new();
    k.add(PosKey::new(KEY).unwrap());
    k
}

fn run(bytes: Vec<u8>, budget: usize, keys: KeySet) -> Outcome {
    craft::analyze(bytes, "crafted.pcap", cfg(budget), keys).unwrap()
}

fn limit_findings(o: &Outcome, what: &str) -> usize {
    o.with_code(Code::LimitEvicted)
        .iter()
        .filter(|f| f.detail.contains(what))
        .count()
}

#[test]
fn announced_lengths_reserve_nothing() {
    // 200 connections x 127 refs, each fragment announcing 65535 bytes: this once
    // reserved 1.6 GB. Now each open ref holds the byte that arrived.
    let o = run(craft::open_refs(200, 127), 32 << 20, KeySet::new());
    let u = o.usage;
    assert_eq!(u.open_refs, 200 * 127, "{u:?}");
    assert!(u.stream_bytes < 200 * 127 * 256, "{u:?}");
    assert!(
        u.reserved < 16 << 20,
        "reserved {} bytes: {u:?}",
        u.reserved
    );
    assert!(u.held <= Limits::default().budget, "{u:?}");
    assert_eq!(o.with_code(Code::LimitEvicted).len(), 0);
}

#[test]
fn open_refs_over_a_small_budget_are_dropped_with_one_finding_per_connection() {
    let budget = 4 << 20;
    let limit = Limits::from_budget(budget).stream_bytes;
    let o = run(craft::open_refs(300, 127), budget, KeySet::new());
    let u = o.usage;
    assert!(u.stream_bytes <= limit, "{u:?}");
    assert!(u.peak_stream_bytes <= limit + ONE_PACKET, "{u:?}");
    let n = limit_findings(&o, "unfinished message(s)");
    assert!(n > 0, "no limit-evicted finding");
    // One per connection at most, not one per dropped message.
    assert!(n <= 300, "{n} findings");
    let f = o.with_code(Code::LimitEvicted)[0];
    assert!(f.detail.contains("limit: stream bytes"), "{}", f.detail);
    assert!(f.detail.contains("--memory-limit 4 MiB"), "{}", f.detail);
    assert!(f.src.is_some(), "names the connection");
}

#[test]
fn requests_waiting_for_their_ack_count_in_the_stream_budget() {
    // Both sides send a request with each of the 256 refs and nobody answers: the
    // link tracker holds 512 requests per connection. Before, they were outside
    // every budget (4,400 such connections took 82 MB).
    let conns = 50;
    let o = run(craft::waiting_refs(conns), 32 << 20, KeySet::new());
    let u = o.usage;
    assert!(u.stream_bytes >= conns * 512 * 16, "counted: {u:?}");
    assert_eq!(o.with_code(Code::LimitEvicted).len(), 0);
    // Each one is still reported when the capture ends.
    assert_eq!(o.with_code(Code::UnansweredAtEnd).len(), conns * 512);

    // Over a small budget: dropped, once per connection, with what was forgotten.
    let (conns, budget) = (300, 4 << 20);
    let limit = Limits::from_budget(budget).stream_bytes;
    let o = run(craft::waiting_refs(conns), budget, KeySet::new());
    let u = o.usage;
    assert!(u.stream_bytes <= limit, "{u:?}");
    assert!(u.peak_stream_bytes <= limit + ONE_PACKET, "{u:?}");
    let n = limit_findings(&o, "waiting for their ack or answer");
    assert!(n > 0 && n <= conns, "{n} findings: {u:?}");
    let forgotten = o.with_code(Code::UnansweredAtEnd).len();
    assert!(forgotten < conns * 512, "{forgotten} still reported");
    assert!(o.with_code(Code::UnexpectedAck).is_empty());
}

#[test]
fn a_body_of_too_many_values_is_refused_not_parsed() {
    // 64 KiB and 1 MiB of `[{},{},...]`: the first parses (21,000 values), the second
    // holds some 350,000 and is refused at the parser's bound, as a bad envelope.
    let o = run(craft::tiny_values(1, 64 << 10), 32 << 20, KeySet::new());
    assert_eq!(o.messages, 1);
    assert!(o.with_code(Code::BadEnvelope).is_empty());
    let o = run(craft::tiny_values(2, 1 << 20), 32 << 20, KeySet::new());
    assert_eq!(o.messages, 2);
    let bad = o.with_code(Code::BadEnvelope);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad[0].detail.contains(&format!(
            "more than {} values",
            ecr_proto::value::MAX_VALUES
        )),
        "{}",
        bad[0].detail
    );
}

#[test]
fn serial_links_are_bounded_with_one_finding() {
    // One serial link per pcapng interface: 300 links, 256 followed.
    let o = run(craft::serial_links(300), 32 << 20, KeySet::new());
    assert_eq!(
        o.usage.connections, 0,
        "serial links are not TCP connections: {:?}",
        o.usage
    );
    let f = o.with_code(Code::LimitEvicted);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(
        f[0].detail
            .contains("more than 256 serial links in the capture: the bytes of serial256"),
        "{}",
        f[0].detail
    );
    assert_eq!(
        f[1].detail,
        "43 more drop(s) by the serial links limit after the one reported"
    );
}

#[test]
fn unfinished_tls_records_count_in_the_stream_budget() {
    // 100 connections each holding ~115 KB of a TLS handshake message in
    // reassembly: 11.5 MB against a 1.3 MiB stream share. Before, TLS buffers
    // were outside the budget (600 such connections took 91 MB).
    let budget = 4 << 20;
    let limit = Limits::from_budget(budget).stream_bytes;
    let o = run(craft::tls_unfinished_handshakes(100), budget, KeySet::new());
    let u = o.usage;
    assert!(u.stream_bytes <= limit, "{u:?}");
    // One partial record and handshake message may be in flight past the check.
    assert!(
        u.peak_stream_bytes <= limit + 4 * 32768 + ONE_PACKET,
        "{u:?}"
    );
    let n = limit_findings(&o, "TLS decryption stops");
    assert!(n > 0, "no limit-evicted finding for TLS");
    assert!(n <= 100, "{n} findings: at most one per connection");
    // Without a key log every connection is still reported as encrypted.
    assert_eq!(o.with_code(Code::TlsEncrypted).len(), 100);
}

#[test]
fn text_framing_is_linear_with_and_without_a_key() {
    for (shape, seg, keys) in [
        (TextShape::Base64, 100, keyed()),
        (TextShape::Base64, 7, keyed()),
        (TextShape::OpenJson, 10, KeySet::new()),
        (TextShape::OpenJson, 10, keyed()),
    ] {
        let total = 300_000;
        let o = run(craft::text_stream(shape, total, seg), 32 << 20, keys);
        let work = o.usage.text_work;
        assert!(
            work <= 6 * total as u64,
            "{shape:?} in {seg}-byte segments: {work} bytes of work for {total}"
        );
        assert!(
            work >= total as u64 - 1,
            "{shape:?}: the framer saw the bytes"
        );
    }
}

#[test]
fn unanswered_requests_are_capped_per_connection() {
    let o = run(
        craft::pipelined_unanswered(1500, 40),
        32 << 20,
        KeySet::new(),
    );
    assert_eq!(o.messages, 1500);
    assert_eq!(o.usage.pending, MAX_PENDING_PER_CONN, "{:?}", o.usage);
    assert_eq!(limit_findings(&o, "requests were waiting"), 1);
    // The ones still tracked are reported at the end, the dropped ones are not.
    assert_eq!(
        o.with_code(Code::UnansweredAtEnd).len(),
        MAX_PENDING_PER_CONN
    );
}

#[test]
fn remembered_payments_are_bounded_in_bytes() {
    let budget = 4 << 20;
    let l = Limits::from_budget(budget);
    // 200 payments with 20 KB ids: 8 MB of ids against a 256 KiB table.
    let o = run(craft::payments(200, 20_000), budget, KeySet::new());
    assert_eq!(o.transactions, 200);
    assert!(o.usage.payment_bytes <= l.payment_bytes, "{:?}", o.usage);
    assert!(o.usage.payments > 0 && o.usage.payments < 200);
    // One finding when the limit first bit, one at the end counting the rest.
    assert_eq!(limit_findings(&o, "limit: remembered payments"), 1);
    assert_eq!(
        limit_findings(&o, "more drop(s) by the remembered payments limit"),
        1
    );
}

#[test]
fn only_card_payments_are_remembered_for_the_refund_check() {
    // A card payment, then 3,000 wallet payments (more than the 256 KiB table of a 4
    // MiB budget would hold: about 1,000 payments of these ids), then a same-day
    // partial refund of the card payment. Only a card payment can fail the check,
    // so the wallet payments are not kept, and the card payment is still there.
    let post = |body: String| craft::http_post(&body);
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9001);
    f.client(&mut b, &craft::payment_request(0, 10), 1460);
    f.server(&mut b, &craft::payment_response(0, 10), 1460);
    for n in 1..=3000 {
        let wallet = String::from_utf8(craft::payment_request(n, 10))
            .unwrap()
            .split("\r\n\r\n")
            .nth(1)
            .unwrap()
            .replace("card_payment", "wx");
        f.client(&mut b, &post(wallet), 1460);
        f.server(&mut b, &craft::payment_response(n, 10), 1460);
    }
    let refund = "{\"content\":{\"func_type\":1002,\"orderId\":\"00000000ss\",\"refund_amount\":\"1.00\"},\"digest\":\"00\"}";
    f.client(&mut b, &post(refund.to_string()), 1460);
    f.server(&mut b, &craft::payment_response(3001, 10), 1460);
    let o = run(b.finish(), 4 << 20, KeySet::new());
    assert_eq!(o.transactions, 3002);
    assert_eq!(
        o.usage.payments, 2,
        "the card payment's syssn and out_trade_no"
    );
    assert_eq!(limit_findings(&o, "remembered payments"), 0);
    let r = o.with_code(Code::PartialCardRefund);
    assert_eq!(r.len(), 1, "{:?}", o.findings);
    assert!(
        r[0].detail
            .starts_with("refund of 1.00 of a card_payment payment of 10.10 made the same day"),
        "{}",
        r[0].detail
    );
}

#[test]
fn summary_tables_are_bounded() {
    // 600 payments, each with a channel and a response code of its own, of
    // 1,000 bytes: the summary counts 256 values of each table, the rest (and
    // anything longer than 64 bytes) as "(other)", and says so once.
    for (n, len) in [(600, 20), (50, 1000)] {
        let o = run(craft::distinct_values(n, len), 32 << 20, KeySet::new());
        assert_eq!(o.transactions, n, "{n} x {len}");
        let s = &o.summary;
        for (name, table) in [("channels", &s.channels), ("respcd", &s.respcd)] {
            assert!(table.len() <= 257, "{name}: {}", table.len());
            assert_eq!(table.values().sum::<u64>(), n as u64, "{name}");
            assert!(table.keys().all(|k| k.len() <= 64), "{name}");
            assert!(table.contains_key("(other)"), "{name}: {table:?}");
        }
        assert_eq!(limit_findings(&o, "distinct values"), 1, "{n} x {len}");
    }
    // Within the bounds, every value is counted as itself.
    let o = run(craft::distinct_values(100, 20), 32 << 20, KeySet::new());
    assert_eq!(o.summary.respcd.len(), 100);
    assert!(!o.summary.respcd.contains_key("(other)"));
    assert_eq!(limit_findings(&o, "distinct values"), 0);
}

#[test]
fn connections_are_bounded_and_evictions_say_what_was_lost() {
    let budget = 4 << 20;
    let l = Limits::from_budget(budget);
    assert_eq!(l.connections, budget / 3 / CONN_COST);
    let conns = l.connections + 200;
    let o = run(craft::unfinished_connections(conns), budget, KeySet::new());
    assert!(o.usage.peak_connections <= l.connections, "{:?}", o.usage);
    let n = limit_findings(&o, "connections were tracked");
    assert_eq!(n, 200, "one finding per evicted connection that held data");
    let f = o
        .with_code(Code::LimitEvicted)
        .into_iter()
        .find(|f| f.detail.contains("connections were tracked"))
        .unwrap();
    assert!(f.detail.contains("limit: connections"), "{}", f.detail);
    assert!(
        f.detail.contains("bytes of unfinished messages"),
        "{}",
        f.detail
    );
}

#[test]
fn ip_fragments_are_bounded_with_one_finding_per_limit() {
    let l = Limits::default();
    let o = run(craft::fragment_flood(1000), 32 << 20, KeySet::new());
    assert!(o.usage.fragments <= l.fragments, "{:?}", o.usage);
    assert_eq!(limit_findings(&o, "IP datagrams were waiting"), 1);
    assert_eq!(
        limit_findings(&o, "more drop(s) by the IP datagrams in reassembly limit"),
        1
    );
}

#[test]
fn out_of_order_flood_is_bounded() {
    let budget = 4 << 20;
    let l = Limits::from_budget(budget);
    let o = run(craft::out_of_order_flood(20_000), budget, KeySet::new());
    assert!(o.usage.ooo_bytes <= l.ooo_bytes, "{:?}", o.usage);
    assert_eq!(limit_findings(&o, "out-of-order data reached its bound"), 1);
    assert!(!o.with_code(Code::TcpGap).is_empty());
}

#[test]
fn damaged_record_header_is_skipped_and_the_rest_analysed() {
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9001);
    f.client(&mut b, &craft::payment_request(1, 10), 1460);
    let cut = b.offset();
    f.server(&mut b, &craft::payment_response(1, 10), 1460);
    f.client(&mut b, &craft::payment_request(2, 10), 1460);
    f.server(&mut b, &craft::payment_response(2, 10), 1460);
    let clean = b.finish();
    let mut bytes = clean[..cut].to_vec();
    bytes.extend(std::iter::repeat_n(0xee, 77));
    bytes.extend_from_slice(&clean[cut..]);
    let o = run(bytes, 32 << 20, KeySet::new());
    assert_eq!(o.transactions, 2, "{:?}", o.findings);
    let d = o.with_code(Code::DamagedPacket);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0]
        .detail
        .starts_with("crafted.pcap: damaged pcap record header at offset"));
    assert!(d[0]
        .detail
        .contains("skipped 77 bytes to the next plausible record"));
}

#[test]
fn depth_limit_inside_an_encrypted_body_is_reported_as_such() {
    let key = PosKey::new(KEY).unwrap();
    let plain = format!(
        "{{\"content\":{}1{},\"digest\":\"00\"}}",
        "[".repeat(500),
        "]".repeat(500)
    );
    let body = key.encrypt_base64(plain.as_bytes());
    let req = format!(
        "POST /api/pos/trade HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40000, 9001);
    f.client(&mut b, req.as_bytes(), 1460);
    let o = run(b.finish(), 32 << 20, keyed());
    assert!(
        o.with_code(Code::DecryptFailed).is_empty(),
        "{:?}",
        o.findings
    );
    let bad = o.with_code(Code::BadEnvelope);
    assert_eq!(bad.len(), 1, "{:?}", o.findings);
    assert!(
        bad[0]
            .detail
            .contains("decrypts, but its JSON is past a parser limit: nesting deeper than"),
        "{}",
        bad[0].detail
    );
}

#[test]
fn memory_limit_option_reaches_the_analyzer() {
    let dir = std::env::temp_dir().join(format!("ecr-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("refs.pcap");
    std::fs::write(&file, craft::open_refs(300, 127)).unwrap();
    let bin = env!("CARGO_BIN_EXE_ecr-sniff");
    let count = |limit: &str| {
        let out = Command::new(bin)
            .args(["analyze", "--format", "jsonl", "--memory-limit", limit])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .filter(|l| l.contains("\"limit-evicted\""))
            .count()
    };
    assert!(count("4M") > 0);
    assert_eq!(count("1G"), 0);
    let out = Command::new(bin)
        .args(["analyze", "--memory-limit", "lots"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'lots' is not a size"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn more_open_refs_than_the_spec_allows_is_one_limit_finding_per_connection() {
    // 250 split messages opened on each of 3 connections: 123 are dropped per
    // connection by the spec's 127-ref bound, reported once per connection.
    let o = run(craft::open_refs(3, 250), 32 << 20, KeySet::new());
    assert_eq!(o.usage.open_refs, 3 * 127, "{:?}", o.usage);
    let f = o.with_code(Code::LimitEvicted);
    assert_eq!(f.len(), 3, "{f:?}");
    assert!(
        f[0].detail
            .contains("more than 127 split messages were open"),
        "{}",
        f[0].detail
    );
    assert!(o.with_code(Code::ReassemblyTimeout).is_empty());
    let srcs: std::collections::HashSet<_> = f.iter().map(|f| f.src.clone()).collect();
    assert_eq!(srcs.len(), 3);
}

#[test]
fn tls_handshake_facts_count_in_the_stream_budget() {
    // 300 connections, each with a ClientHello holding a 4 KiB session ticket and
    // a 200-character server name of control characters (escaped, 1,000 bytes): facts
    // kept for the whole connection. Before, these were outside every budget
    // (4,369 connections could hold some 50 MB of them).
    let conns = 300;
    let o = run(
        craft::tls_hellos_with_large_facts(conns),
        32 << 20,
        KeySet::new(),
    );
    let u = o.usage;
    assert!(
        u.stream_bytes >= conns * (4096 + 800),
        "tickets and names counted: {u:?}"
    );
    assert_eq!(o.with_code(Code::LimitEvicted).len(), 0);
    // Over a small budget: counted, and the tickets dropped with a finding.
    let budget = 4 << 20;
    let limit = Limits::from_budget(budget).stream_bytes;
    let o = run(
        craft::tls_hellos_with_large_facts(conns),
        budget,
        KeySet::new(),
    );
    let u = o.usage;
    assert!(u.stream_bytes <= limit, "{u:?}");
    assert!(u.peak_stream_bytes <= limit + ONE_PACKET, "{u:?}");
    assert!(limit_findings(&o, "limit: stream bytes") > 0, "{u:?}");
}
