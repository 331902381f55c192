//! USB captures (usbmon 189/220, USBPcap 249) through `ecr-sniff analyze`, and
//! `ecr-sniff export`. The captures in captures/usb/ are written by
//! `cargo run -p ecr-capture --example usb_captures -- captures/usb`; their golden
//! `--format jsonl` outputs are in captures/usb/expected/ (regenerate on purpose with
//! `ECR_SNIFF_BLESS=1 cargo test --test usb`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cap(name: &str) -> PathBuf {
    root().join("captures/usb").join(name)
}

fn run(args: &[&str]) -> Output {
    bin()
        .current_dir(root())
        .env_remove("ECR_POS_KEY")
        .args(args)
        .output()
        .expect("run ecr-sniff")
}

/// `analyze FILE --key KEY --format jsonl [extra]` as parsed records.
fn records(file: &Path, extra: &[&str]) -> Vec<Value> {
    let f = file.to_str().unwrap();
    let mut args = vec!["analyze", f, "--key", KEY, "--format", "jsonl"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{f}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn kind<'a>(r: &'a [Value], k: &str) -> Vec<&'a Value> {
    r.iter().filter(|v| v["kind"] == k).collect()
}

fn summary(r: &[Value]) -> &Value {
    r.last().expect("summary")
}

fn finding_count(r: &[Value], code: &str) -> u64 {
    summary(r)["findings"][code].as_u64().unwrap_or(0)
}

fn usb_captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("captures/usb"))
        .expect("captures/usb")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    v.sort();
    v
}

#[test]
fn usb_captures_match_golden_outputs() {
    let caps = usb_captures();
    assert!(
        caps.len() >= 18,
        "captures/usb holds {} captures",
        caps.len()
    );
    let bless = std::env::var_os("ECR_SNIFF_BLESS").is_some();
    let mut failed = vec![];
    for c in caps {
        let name = c.file_name().unwrap().to_str().unwrap().to_string();
        // Relative path, so that the golden files hold no machine paths.
        let rel = format!("captures/usb/{name}");
        let out = run(&["analyze", &rel, "--key", KEY, "--format", "jsonl"]);
        assert!(out.status.success(), "{name}");
        let golden = root()
            .join("captures/usb/expected")
            .join(format!("{name}.jsonl"));
        if bless {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &out.stdout).unwrap();
            continue;
        }
        let want = std::fs::read(&golden)
            .unwrap_or_else(|_| panic!("{} missing (bless it)", golden.display()));
        if want != out.stdout {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "differ from golden output: {failed:?}");
}

#[test]
fn clean_traffic_reads_the_same_from_all_three_link_types() {
    let mut shapes = vec![];
    for name in [
        "usbmon-clean.pcap",
        "usbmon-mmapped-clean.pcap",
        "usbpcap-clean.pcap",
    ] {
        let r = records(&cap(name), &[]);
        let s = summary(&r);
        assert_eq!(s["messages"], 8, "{name}");
        assert_eq!(s["transactions"], 2, "{name}");
        assert_eq!(s["findings"], serde_json::json!({}), "{name}");
        let dev = &s["usb_devices"][0];
        assert_eq!(dev["device"], "1:5");
        assert_eq!(dev["ecr"], "host");
        assert!(dev["oriented_by"]
            .as_str()
            .unwrap()
            .contains("business request"));
        assert_eq!(dev["line"]["settings"], "9600 8N1");
        assert_eq!(dev["line"]["spec"], true);
        let msgs = kind(&r, "message");
        let roles: Vec<(String, String, i64)> = msgs
            .iter()
            .map(|m| {
                assert_eq!(m["transport"], "serial");
                (
                    m["role"].as_str().unwrap().to_string(),
                    m["direction"].as_str().unwrap().to_string(),
                    m["ref"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            roles[..4],
            [
                ("request".into(), "ecr-to-pos".into(), 1),
                ("ack".into(), "pos-to-ecr".into(), 1),
                ("response".into(), "pos-to-ecr".into(), 1),
                ("ack".into(), "ecr-to-pos".into(), 1),
            ]
        );
        // The encrypted payment was decrypted with the key.
        assert_eq!(msgs[4]["dialect"], "envelope-encrypted");
        assert_eq!(msgs[4]["digest"], "ok");
        // Every line byte counted once: the OUT data is in the submissions only
        // (the completions repeat its length without data), and all frames decode.
        let from_host: u64 = msgs
            .iter()
            .filter(|m| m["direction"] == "ecr-to-pos")
            .map(|m| m["frame"]["total_len"].as_u64().unwrap())
            .sum();
        assert_eq!(dev["bytes_from_host"].as_u64(), Some(from_host), "{name}");
        let from_dev: u64 = msgs
            .iter()
            .filter(|m| m["direction"] == "pos-to-ecr")
            .map(|m| m["frame"]["total_len"].as_u64().unwrap())
            .sum();
        assert_eq!(dev["bytes_from_device"].as_u64(), Some(from_dev), "{name}");
        shapes.push(
            msgs.iter()
                .map(|m| (m["content"].clone(), m["response"].clone(), m["ts"].clone()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(shapes[0], shapes[1]);
    assert_eq!(shapes[0], shapes[2]);
}

#[test]
fn split_messages_across_tiny_transfers_at_9600_baud() {
    for name in [
        "usbmon-mmapped-split-tiny-transfers.pcap",
        "usbpcap-split-tiny-transfers.pcap",
    ] {
        let r = records(&cap(name), &[]);
        let s = summary(&r);
        // Hundreds of 16-byte IN transfers, no spurious ack timeout although each
        // 1 KB fragment takes over a second on the line.
        assert!(s["packets"].as_u64().unwrap() > 300, "{name}");
        assert_eq!(s["findings"], serde_json::json!({}), "{name}");
        assert_eq!(s["transactions"], 1);
        let msgs = kind(&r, "message");
        let req = msgs[0];
        assert_eq!(req["frame"]["fragments"], 2);
        assert_eq!(req["digest"], "ok");
        let res = msgs.iter().find(|m| m["role"] == "response").unwrap();
        assert_eq!(res["frame"]["fragments"], 3);
        let parts = res["frame"]["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0]["total_len"], 1035);
        assert_eq!(parts[0]["carried"], 1024);
        assert_eq!(parts[2]["carried"], 381);
        // Fragment k starts about a second after fragment k-1 began.
        let t0 = parts[0]["ts"].as_f64().unwrap();
        let t1 = parts[1]["ts"].as_f64().unwrap();
        assert!((1.0..1.2).contains(&(t1 - t0)), "{}", t1 - t0);
    }
    let out = run(&[
        "analyze",
        "captures/usb/usbpcap-split-tiny-transfers.pcap",
        "--key",
        KEY,
        "--color",
        "never",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("reassembled from 3 fragments"), "{text}");
    assert!(
        text.contains("fragment 2 of 3: total length 1035, data length 2429, carries 1024 bytes"),
        "{text}"
    );
    assert!(text.contains("line settings: 9600 8N1"), "{text}");
}

#[test]
fn two_devices_and_a_disk() {
    let r = records(&cap("usbmon-two-devices.pcap"), &[]);
    let devs = summary(&r)["usb_devices"].as_array().unwrap();
    let ids: Vec<&str> = devs.iter().map(|d| d["device"].as_str().unwrap()).collect();
    assert_eq!(ids, ["1:5", "1:7"], "the disk 1:3 is not an ECR device");
    // 1:7's capture starts with the terminal's result coming in: the content, not
    // who spoke first, says the host is the cash register.
    assert_eq!(devs[1]["ecr"], "host");
    assert!(devs[1]["oriented_by"]
        .as_str()
        .unwrap()
        .contains("business result"));
    assert_eq!(devs[1]["line"]["baud"], 115200);
    assert_eq!(devs[1]["line"]["spec"], false);
    // ... which is a finding for 1:7 only (1:5 runs at the spec's 9600 8N1).
    let line: Vec<_> = kind(&r, "finding")
        .into_iter()
        .filter(|f| f["code"] == "line-settings")
        .collect();
    assert_eq!(line.len(), 1);
    assert_eq!(line[0]["src"], "usb1:7");
    assert!(line[0]["detail"].as_str().unwrap().contains("115200 8N1"));
    let links: std::collections::BTreeSet<&str> = kind(&r, "message")
        .iter()
        .map(|m| m["src"].as_str().unwrap())
        .collect();
    assert_eq!(
        links.into_iter().collect::<Vec<_>>(),
        ["usb1:5:ECR", "usb1:5:POS", "usb1:7:ECR", "usb1:7:POS"]
    );
    // --usb-device keeps one device.
    let r7 = records(&cap("usbmon-two-devices.pcap"), &["--usb-device", "1:7"]);
    assert!(kind(&r7, "message")
        .iter()
        .all(|m| m["src"].as_str().unwrap().starts_with("usb1:7:")));
    assert_eq!(summary(&r7)["messages"], 4);
    // A chosen device is analysed even without frames: the disk's sectors are garbage.
    let r3 = records(&cap("usbmon-two-devices.pcap"), &["--usb-device", "1:3"]);
    assert_eq!(summary(&r3)["messages"], 0);
    assert!(finding_count(&r3, "garbage-bytes") > 0);
    // A bad device id is a usage error.
    let bad = run(&[
        "analyze",
        "captures/usb/usbmon-two-devices.pcap",
        "--usb-device",
        "7",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BUS:DEV"));
    let text = run(&[
        "analyze",
        "captures/usb/usbmon-two-devices.pcap",
        "--color",
        "never",
    ]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("line settings: 115200 8N1 (SET_LINE_CODING at packet"),
        "{text}"
    );
    assert!(text.contains("differs from spec 10.9: 9600 8N1"), "{text}");
}

#[test]
fn garbage_between_frames() {
    let r = records(&cap("usbmon-garbage-bytes.pcap"), &[]);
    assert_eq!(finding_count(&r, "garbage-bytes"), 3);
    let msgs = kind(&r, "message");
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["func_type"], 5001);
    assert_eq!(msgs[0]["digest"], "ok");
    assert_eq!(msgs[1]["role"], "ack");
}

#[test]
fn fragment_at_499_ms_is_kept_and_at_501_ms_is_late() {
    let r = records(&cap("usbmon-fragment-gap-499ms.pcap"), &[]);
    assert_eq!(finding_count(&r, "reassembly-timeout"), 0);
    let msgs = kind(&r, "message");
    assert_eq!(msgs[0]["frame"]["fragments"], 2);
    let gap = msgs[0]["frame"]["parts"][1]["gap_ms"].as_f64().unwrap();
    assert!((498.9..=499.1).contains(&gap), "{gap}");
    assert_eq!(msgs[1]["role"], "ack");

    let r = records(&cap("usbmon-fragment-gap-501ms.pcap"), &[]);
    assert_eq!(finding_count(&r, "reassembly-timeout"), 1);
    let f = kind(&r, "finding")
        .into_iter()
        .find(|f| f["code"] == "reassembly-timeout")
        .unwrap();
    assert!(
        f["detail"].as_str().unwrap().contains("501.0 ms"),
        "{}",
        f["detail"]
    );
    // The terminal's 0x35 answer.
    assert_eq!(finding_count(&r, "error-frame"), 1);
}

#[test]
fn each_serial_fault_is_reported() {
    for code in [
        "bad-end-marker",
        "unsupported-version",
        "unknown-frame-type",
        "bad-ref",
        "bad-length",
        "oversize-frame",
        "ack-timeout",
        "unexpected-ack",
        "error-frame",
    ] {
        let r = records(&cap(&format!("usbmon-{code}.pcap")), &[]);
        assert!(finding_count(&r, code) >= 1, "{code}: {}", summary(&r));
        let f = kind(&r, "finding")
            .into_iter()
            .find(|f| f["code"] == code)
            .unwrap();
        assert_eq!(f["transport"], "serial", "{code}");
        assert!(
            f["packet"].as_u64().is_some(),
            "{code}: finding names its packet"
        );
        // The link recovers: the later good request is decoded.
        assert!(
            kind(&r, "message")
                .iter()
                .any(|m| m["ref"] == 5 && m["func_type"] == 5001),
            "{code}"
        );
    }
    // A long write takes over a second at 9600 baud: the ack is timed from the OUT
    // completion (the last byte on the line), not from the submission.
    let r = records(&cap("usbmon-oversize-frame.pcap"), &[]);
    assert_eq!(finding_count(&r, "ack-timeout"), 0);
    // reassembly-timeout is covered by the 501 ms capture above.
}

#[test]
fn export_usb_to_serial_format_and_back() {
    let dir = std::env::temp_dir().join(format!("ecr-usb-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("clean.pcapng");
    let o = run(&[
        "export",
        "captures/usb/usbmon-clean.pcap",
        out.to_str().unwrap(),
        "--key",
        KEY,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exported 8 message(s) as 8 packet(s)"));
    let orig = records(&cap("usbmon-clean.pcap"), &[]);
    let back = records(&out, &[]);
    let s = summary(&back);
    assert_eq!(s["packets"], 8, "one packet per message");
    for field in [
        "messages",
        "transactions",
        "func_types",
        "respcd",
        "findings",
    ] {
        assert_eq!(s[field], summary(&orig)[field], "{field}");
    }
    // Same contents, refs and roles.
    let pick = |r: &[Value]| -> Vec<(Value, Value, Value)> {
        kind(r, "message")
            .iter()
            .map(|m| (m["role"].clone(), m["ref"].clone(), m["content"].clone()))
            .collect()
    };
    assert_eq!(pick(&orig), pick(&back));

    // --decrypt: readable without the key.
    let clear = dir.join("clear.pcapng");
    let o = run(&[
        "export",
        "captures/usb/usbmon-clean.pcap",
        clear.to_str().unwrap(),
        "--decrypt",
        "--key",
        KEY,
    ]);
    assert!(o.status.success());
    let no_key = run(&["analyze", clear.to_str().unwrap(), "--format", "jsonl"]);
    let r: Vec<Value> = String::from_utf8(no_key.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(finding_count(&r, "no-key"), 0);
    let payments: Vec<&Value> = kind(&r, "message")
        .into_iter()
        .filter(|m| m["func_type"] == 1001)
        .collect();
    assert_eq!(payments.len(), 2);
    assert_eq!(payments[1]["content"]["out_trade_no"], "456700000101");

    // TCP/HTTP input: bodies wrapped in 0x10 frames.
    let http = dir.join("http.pcapng");
    let o = run(&[
        "export",
        "captures/http-slow-terminal.pcap",
        http.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("4 wrapped in 0x10 frames"));
    let r = records(&http, &[]);
    let msgs = kind(&r, "message");
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[0]["transport"], "serial");
    assert_eq!(msgs[0]["func_type"], 1001);
    assert_eq!(msgs[1]["respcd"], "6000");
    assert_eq!(msgs[0]["ref"], msgs[1]["ref"]);
    assert_eq!(summary(&r)["transactions"], 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn export_usage_errors_exit_2() {
    let o = run(&[
        "export",
        "captures/usb/usbmon-clean.pcap",
        "/tmp/x.pcapng",
        "--decrypt",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--decrypt needs a POS-KEY"));
    let o = run(&["export", "Cargo.toml", "/tmp/x.pcapng"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Cargo.toml"));
    let o = run(&[
        "export",
        "captures/usb/usbmon-clean.pcap",
        "/nonexistent-dir/x.pcapng",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent-dir/x.pcapng"));
}

/// Capture time of packet `n` (1-based) of a little-endian microsecond pcap file.
fn pcap_packet_time(file: &Path, n: usize) -> f64 {
    let b = std::fs::read(file).unwrap();
    assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian µs pcap");
    let mut at = 24;
    for i in 1.. {
        let word = |o: usize| u32::from_le_bytes(b[at + o..at + o + 4].try_into().unwrap());
        let (secs, micros, incl) = (word(0), word(4), word(8) as usize);
        if i == n {
            return f64::from(secs) + f64::from(micros) / 1e6;
        }
        at += 16 + incl;
    }
    unreachable!()
}

#[test]
fn line_settings_carry_their_packet_time_and_stand_apart_in_text() {
    let file = cap("usbmon-two-devices.pcap");
    let r = records(&file, &[]);
    let ls: Vec<&Value> = kind(&r, "finding")
        .into_iter()
        .filter(|f| f["code"] == "line-settings")
        .collect();
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0]["packet"], 29);
    let expected = pcap_packet_time(&file, 29);
    let last = kind(&r, "message").last().unwrap()["ts"].as_f64().unwrap();
    assert!(expected < last, "packet 29 is not the end of the capture");
    assert!(
        (ls[0]["ts"].as_f64().unwrap() - expected).abs() < 1e-6,
        "{} vs {expected}",
        ls[0]["ts"]
    );

    // Text: neither finding is indented under another block; the unanswered
    // request's finding names its message.
    let out = run(&[
        "analyze",
        file.to_str().unwrap(),
        "--key",
        KEY,
        "--color",
        "never",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let ls_line = text.lines().find(|l| l.contains("line-settings")).unwrap();
    assert!(
        ls_line.starts_with("! warning line-settings  2026-11-25 10:00:01.500000"),
        "{text}"
    );
    let ua = text
        .lines()
        .find(|l| l.contains("unanswered-at-end"))
        .unwrap();
    assert!(ua.starts_with("! info unanswered-at-end  "), "{text}");
    assert!(ua.contains("(packet 107)"), "{ua}");
    // A finding right after its message's block stays indented under it.
    let out = run(&[
        "analyze",
        "captures/http-digest-mismatch.pcap",
        "--key",
        KEY,
        "--color",
        "never",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\n    ! error digest-mismatch: "), "{text}");
}

#[test]
fn out_transfers_without_completion_stay_in_time_order() {
    // Every host write lacks its completion: the bytes come from the submissions
    // alone. They must be read in time order, not held to the end of the capture.
    let r = records(&cap("usbmon-missing-out-completions.pcap"), &[]);
    let s = summary(&r);
    assert_eq!(s["messages"], 8, "{s}");
    assert_eq!(s["transactions"], 2, "{s}");
    assert_eq!(s["findings"], serde_json::json!({}), "{s}");
    let msgs = kind(&r, "message");
    let ts: Vec<f64> = msgs.iter().map(|m| m["ts"].as_f64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["request", "ack", "response", "ack", "request", "ack", "response", "ack"]
    );
    // Each ack answers in time (the request is on the line before its ack).
    for m in msgs.iter().filter(|m| m["role"] == "ack") {
        let ms = m["answer_ms"].as_f64().unwrap();
        assert!((0.0..1000.0).contains(&ms), "{m}");
    }
}
