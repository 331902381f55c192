//! A TCP 9002 connection whose first bytes are line noise before a 0x2f6e frame (a
//! converter that sends a stray byte when it opens, a cash register that writes a
//! byte of garbage first): the direction is read as frames, the noise is reported as
//! `garbage-bytes`, and the request and its ack are decoded. Before, the whole
//! direction was read as text and the frames were lost.

use std::process::Command;

use ecr_capture::craft::{Flow, PcapBuilder};
use ecr_proto::cipher::PosKey;
use ecr_proto::envelope::{build_request, RequestDialect};
use ecr_proto::frame::{FrameRepr, FrameType};
use ecr_proto::value::Value;
use serde_json::Value as Json;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

fn capture(noise: &[u8]) -> Vec<u8> {
    let content = match Value::parse_json(
        br#"{"func_type":1001,"amt":"10.10","channel":"wx","out_trade_no":"JUNK-1"}"#,
    )
    .unwrap()
    {
        Value::Object(o) => o,
        _ => unreachable!(),
    };
    let body = build_request(RequestDialect::Plain, &content, &PosKey::new(KEY).unwrap());
    let request = FrameRepr::new(FrameType::REQUEST, 1, &body)
        .to_bytes()
        .unwrap();
    let ack = FrameRepr::ack(1).to_bytes().unwrap();
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40100, 9002);
    let mut first = noise.to_vec();
    first.extend_from_slice(&request);
    f.client(&mut b, &first, 1400);
    b.advance(50_000_000);
    f.server(&mut b, &ack, 1400);
    b.finish()
}

fn analyze(pcap: &[u8]) -> Vec<Json> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ecr-tcp-junk-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("junk.pcap");
    std::fs::write(&path, pcap).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
        .args([
            "analyze",
            path.to_str().unwrap(),
            "--key",
            KEY,
            "--format",
            "jsonl",
        ])
        .env_remove("ECR_POS_KEY")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
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

fn codes(r: &[Json]) -> Vec<String> {
    r.iter()
        .filter(|x| x["kind"] == "finding")
        .map(|x| x["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn noise_before_the_first_frame_is_garbage_not_text() {
    for noise in [
        &[0x00u8][..],
        &[0xff, 0xfe, 0x13],
        &[0x0d, 0x0a, 0x00, 0x80],
    ] {
        let r = analyze(&capture(noise));
        let msgs: Vec<&Json> = r.iter().filter(|x| x["kind"] == "message").collect();
        assert!(
            msgs.iter()
                .any(|m| m["func_type"] == 1001 && m["content"]["out_trade_no"] == "JUNK-1"),
            "{noise:02x?}: the request was not decoded: {r:?}"
        );
        assert!(
            msgs.iter().any(|m| m["role"] == "ack"),
            "{noise:02x?}: no ack: {r:?}"
        );
        let c = codes(&r);
        assert!(
            c.contains(&"garbage-bytes".to_string()),
            "{noise:02x?}: {c:?}"
        );
        assert!(
            !c.contains(&"bad-envelope".to_string()),
            "{noise:02x?}: {c:?}"
        );
    }
}

/// Text framings are not affected: a newline-framed JSON request still reads as text.
#[test]
fn text_streams_are_still_text() {
    let mut b = PcapBuilder::new();
    let mut f = Flow::open(&mut b, 40101, 9002);
    f.client(
        &mut b,
        b"{\"content\":{\"func_type\":4001,\"out_trade_no\":\"T-1\"},\"digest\":\"00\"}\n",
        1400,
    );
    let r = analyze(&b.finish());
    assert!(
        r.iter()
            .any(|m| m["kind"] == "message" && m["func_type"] == 4001),
        "{r:?}"
    );
    assert!(!codes(&r).contains(&"garbage-bytes".to_string()));
}
