//! Terminal escape injection (issue 11 item 5): a capture whose values carry
//! terminal control sequences must not reach the terminal raw through the text
//! output. The capture is built here: a serial capture (D9) with a payment whose
//! `channel`, `out_trade_no` and response data hold a screen clear, an OSC window
//! title, carriage returns, newlines that would forge a "Message 99" line, and bidi
//! overrides.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::Command;

use ecr_capture::serialcap::SerialCaptureWriter;
use ecr_proto::cipher::PosKey;
use ecr_proto::envelope::{build_request, RequestDialect};
use ecr_proto::frame::{FrameRepr, FrameType};
use ecr_proto::link::Side;
use ecr_proto::text::is_terminal_control;
use ecr_proto::value::{Object, Value};
use ecr_proto::Timestamp;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";
const BIN: &str = env!("CARGO_BIN_EXE_ecr-sniff");

const HOSTILE_CHANNEL: &str = "wx\x1b[2J\x1b]0;pwned\x07\r\nMessage 99 Payment (1001)";
const HOSTILE_TRADE_NO: &str = "A1\r\u{202e}gnp.exe\u{202c}\u{9b}31m\nMessage 98 forged";

fn capture() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ecr-escaping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hostile.pcapng");
    let key = PosKey::new(KEY).unwrap();
    let mut content = Object::new();
    content.push("func_type", Value::parse_json(b"1001").unwrap());
    content.push("amt", Value::parse_json(b"10.1").unwrap());
    content.push("channel", Value::String(HOSTILE_CHANNEL.into()));
    content.push("out_trade_no", Value::String(HOSTILE_TRADE_NO.into()));
    content.push("x\x1b[1Akey", Value::String("v".into()));
    let req = build_request(RequestDialect::Plain, &content, &key);
    let mut data = Object::new();
    data.push("syssn", Value::String("2025\x1b[H\x1b[2Jsys".into()));
    data.push("out_trade_no", Value::String(HOSTILE_TRADE_NO.into()));
    let mut resp = Object::new();
    resp.push("respcd", Value::String("0000\rMessage 97".into()));
    resp.push("respmsg", Value::String("ok\u{2066}".into()));
    resp.push("data", Value::Object(data));
    let resp = Value::Object(resp).to_json_string();

    let mut w =
        SerialCaptureWriter::new(BufWriter::new(File::create(&path).unwrap()), None).unwrap();
    let t = |ms: i64| Timestamp::from_parts(1_751_553_202, 0).add_millis(ms);
    let frame = |r: u8, body: &[u8]| FrameRepr::new(FrameType::REQUEST, r, body).to_bytes();
    w.write(t(0), Side::Ecr, &frame(1, &req).unwrap()).unwrap();
    w.write(t(50), Side::Pos, &FrameRepr::ack(1).to_bytes().unwrap())
        .unwrap();
    w.write(t(900), Side::Pos, &frame(1, resp.as_bytes()).unwrap())
        .unwrap();
    w.write(t(950), Side::Ecr, &FrameRepr::ack(1).to_bytes().unwrap())
        .unwrap();
    w.flush().unwrap();
    path
}

#[test]
fn text_output_escapes_control_characters_from_the_capture() {
    let path = capture();
    let out = Command::new(BIN)
        .args([
            "analyze", "--key", KEY, "--format", "text", "--color", "never",
        ])
        .arg(&path)
        .env_remove("ECR_POS_KEY")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.code().is_some_and(|c| c < 2), "{text}");
    // The capture was decoded: the values are there, escaped.
    assert!(
        text.contains("channel: wx\\x1b[2J\\x1b]0;pwned\\x07\\r\\nMessage 99"),
        "{text}"
    );
    assert!(
        text.contains("A1\\r\\u{202e}gnp.exe\\u{202c}\\u{009b}31m\\nMessage 98"),
        "{text}"
    );
    assert!(text.contains("x\\x1b[1Akey: v"), "{text}");
    assert!(text.contains("syssn: 2025\\x1b[H\\x1b[2Jsys"), "{text}");
    // Nothing a terminal obeys, apart from the line ends.
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| c != '\n' && is_terminal_control(c))
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in:\n{text}");
    // No forged lines: the only "Message" lines are the capture's four messages.
    let heads: Vec<&str> = text.lines().filter(|l| l.starts_with("Message ")).collect();
    assert_eq!(heads.len(), 4, "{text}");
    for (i, h) in heads.iter().enumerate() {
        assert!(
            h.starts_with(&format!("Message {} ", i + 1)),
            "forged line {h:?}"
        );
    }
    assert!(!text.lines().any(|l| l.starts_with("Message 9")), "{text}");

    // jsonl keeps the values exactly (JSON escaping is the right tool there).
    let out = Command::new(BIN)
        .args(["analyze", "--key", KEY, "--format", "jsonl"])
        .arg(&path)
        .env_remove("ECR_POS_KEY")
        .output()
        .unwrap();
    let jsonl = String::from_utf8(out.stdout).unwrap();
    let values: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        values
            .iter()
            .any(|v| v["content"]["channel"] == HOSTILE_CHANNEL),
        "{jsonl}"
    );
    assert!(!jsonl.contains('\x1b') && !jsonl.contains('\r'));
}

#[test]
fn error_messages_escape_what_they_quote() {
    let dir = std::env::temp_dir().join(format!("ecr-escaping-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name = dir.join("x\x1b]0;pwned\x07\r\nMessage 9.pcap");
    std::fs::write(&name, b"not a capture").unwrap();
    let out = Command::new(BIN)
        .arg("analyze")
        .arg(&name)
        .env_remove("ECR_POS_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("x\\x1b]0;pwned\\x07\\r\\nMessage 9.pcap"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.trim_end().chars().any(is_terminal_control), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
