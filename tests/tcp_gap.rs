//! A TCP gap inside a request (issue 12, item 7): the bytes after the hole are the
//! tail of a lost message, not a request of their own; the terminal's answer is the
//! answer to the request lost in the gap; messages print in time order.
//!
//! The captures are written here, packet by packet (Ethernet, IPv4, TCP with valid
//! checksums), with the segment in the middle of the request left out, and checked
//! with tshark (when installed) before ecr-sniff reads them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const ECR: [u8; 4] = [10, 0, 0, 2];
const POS: [u8; 4] = [10, 0, 0, 9];
const ECR_PORT: u16 = 40000;

/// An Ethernet frame holding IPv4 and TCP from `src` to `dst`.
#[allow(clippy::too_many_arguments)]
fn packet(
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut tcp = vec![];
    tcp.extend_from_slice(&sp.to_be_bytes());
    tcp.extend_from_slice(&dp.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(data);
    let mut pseudo = src.to_vec();
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut eth = vec![
        0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 8, 0,
    ];
    eth.extend_from_slice(&ip);
    eth.extend_from_slice(&tcp);
    eth
}

/// One connection: the request in three segments (the middle one left out when
/// `drop_middle`), the answer 300 ms later, then both sides close.
fn write_capture(
    path: &Path,
    port: u16,
    request: &[u8],
    answer: &[u8],
    cuts: (usize, usize),
    drop_middle: bool,
) {
    let t0 = 1_795_600_800.0f64;
    let (c0, s0) = (1000u32, 5000u32);
    let mut recs: Vec<(f64, Vec<u8>)> = vec![
        (t0, packet(ECR, POS, ECR_PORT, port, c0, 0, 0x02, b"")),
        (
            t0 + 0.0001,
            packet(POS, ECR, port, ECR_PORT, s0, c0 + 1, 0x12, b""),
        ),
        (
            t0 + 0.0002,
            packet(ECR, POS, ECR_PORT, port, c0 + 1, s0 + 1, 0x10, b""),
        ),
    ];
    let segments = [
        &request[..cuts.0],
        &request[cuts.0..cuts.1],
        &request[cuts.1..],
    ];
    let mut seq = c0 + 1;
    for (i, s) in segments.iter().enumerate() {
        if !(drop_middle && i == 1) {
            let t = t0 + 0.010 + i as f64 * 0.001;
            recs.push((t, packet(ECR, POS, ECR_PORT, port, seq, s0 + 1, 0x18, s)));
        }
        seq += s.len() as u32;
    }
    let a_end = s0 + 1 + answer.len() as u32;
    recs.push((
        t0 + 0.3,
        packet(POS, ECR, port, ECR_PORT, s0 + 1, seq, 0x18, answer),
    ));
    recs.push((
        t0 + 0.3001,
        packet(ECR, POS, ECR_PORT, port, seq, a_end, 0x10, b""),
    ));
    recs.push((
        t0 + 0.5,
        packet(ECR, POS, ECR_PORT, port, seq, a_end, 0x11, b""),
    ));
    recs.push((
        t0 + 0.5001,
        packet(POS, ECR, port, ECR_PORT, a_end, seq + 1, 0x11, b""),
    ));
    recs.push((
        t0 + 0.5002,
        packet(ECR, POS, ECR_PORT, port, seq + 1, a_end + 1, 0x10, b""),
    ));
    let mut f = vec![];
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for (t, p) in recs {
        let secs = t.floor();
        let micros = ((t - secs) * 1e6).round() as u32;
        f.extend_from_slice(&(secs as u32).to_le_bytes());
        f.extend_from_slice(&micros.to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&p);
    }
    std::fs::write(path, f).unwrap();
}

const REQUEST: &[u8] = br#"{"content":{"amt":10.1,"channel":"wx","func_type":1001,"out_trade_no":"INV-1"},"digest":"0123456789abcdef0123456789abcdef"}"#;
const ANSWER: &[u8] = br#"{"respcd":"6000","respmsg":"SUCCESS","resperr":"trade success","data":{"out_trade_no":"INV-1","syssn":"20250703155400020061889001","txamt":"1010"}}"#;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ecr-sniff-tcp-gap-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn analyze(path: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
        .args(["analyze", path.to_str().unwrap(), "--format", "jsonl"])
        .env_remove("ECR_POS_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// tshark's own view: the capture has exactly the hole we made.
fn tshark_sees_the_hole(path: &Path) {
    let Ok(out) = Command::new("tshark")
        .args([
            "-n",
            "-r",
            path.to_str().unwrap(),
            "-Y",
            "tcp.analysis.lost_segment",
        ])
        .output()
    else {
        println!(
            "SKIP tshark check of {} (tshark not installed)",
            path.display()
        );
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "tshark: {text}");
}

fn check(name: &str, port: u16, request: &[u8], answer: &[u8], cuts: (usize, usize)) {
    let d = dir(name);
    let whole = d.join(format!("{name}-whole.pcap"));
    write_capture(&whole, port, request, answer, cuts, false);
    let r = analyze(&whole);
    let s = r.last().unwrap();
    assert_eq!(
        s["transactions"], 1,
        "{name}: the capture without a hole is clean: {s}"
    );
    assert_eq!(s["findings"], serde_json::json!({}), "{name}: {s}");

    let cut = d.join(format!("{name}-gap.pcap"));
    write_capture(&cut, port, request, answer, cuts, true);
    tshark_sees_the_hole(&cut);
    let r = analyze(&cut);
    let s = r.last().unwrap();
    // The hole itself is the only finding: no bad-envelope for the tail, no
    // no-response or unanswered-at-end for it, no transaction made of it.
    assert_eq!(
        s["findings"],
        serde_json::json!({"tcp-gap": 1}),
        "{name}: {s}"
    );
    assert_eq!(s["transactions"], 0, "{name}: {s}");
    let msgs: Vec<&Value> = r.iter().filter(|v| v["kind"] == "message").collect();
    let ts: Vec<f64> = msgs.iter().map(|m| m["ts"].as_f64().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "{name}: time order {ts:?}"
    );
    let answer = msgs.iter().find(|m| m["role"] == "response").unwrap();
    assert_eq!(answer["gap"], "answers-lost-request", "{name}: {answer}");
    assert_eq!(answer["respcd"], "6000");
    for m in msgs.iter().filter(|m| m["direction"] == "ecr-to-pos") {
        assert_eq!(m["gap"], "tail", "{name}: {m}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn tcp_newline_request_cut_by_a_gap() {
    let mut req = REQUEST.to_vec();
    req.push(b'\n');
    let mut ans = ANSWER.to_vec();
    ans.push(b'\n');
    check("newline", 9002, &req, &ans, (40, 80));
}

#[test]
fn tcp_json_values_request_cut_by_a_gap() {
    // No delimiter: the tail would wait for the close, after the answer.
    check("json", 9002, REQUEST, ANSWER, (40, 80));
    check("json-late", 9002, REQUEST, ANSWER, (40, REQUEST.len() - 30));
}

#[test]
fn http_request_cut_by_a_gap() {
    let mut req = format!(
        "POST /api/pos/trade HTTP/1.1\r\nHost: 10.0.0.9:9001\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        REQUEST.len()
    )
    .into_bytes();
    req.extend_from_slice(REQUEST);
    let mut ans = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        ANSWER.len()
    )
    .into_bytes();
    ans.extend_from_slice(ANSWER);
    // The hole in the body, then in the head.
    check("http-body", 9001, &req, &ans, (130, 170));
    check("http-head", 9001, &req, &ans, (20, 60));
}
