//! End-to-end tests of `ecr-sniff send` against `ecr-sniff emulate`: every
//! func_type in every dialect over HTTP, TCP (text and frames) and a
//! pseudo-terminal, each fault, the error exits, a clean stop on SIGTERM, a live
//! tcpdump capture analysed by `analyze` (root with tcpdump only), and the golden
//! outputs of the captures in `captures/emu/` (made by `captures/emu/regenerate.sh`).
//!
//! Every emulator listens on free ports (port 0) so tests run in parallel; every
//! child is killed when its guard drops, and every wait is bounded.

mod common;
use common::{run_bounded, signal, wait_exit, Emu};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";
const BIN: &str = env!("CARGO_BIN_EXE_ecr-sniff");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An emulator with the samples' key (see `common::Emu`).
fn emulator(extra: &[&str]) -> Emu {
    Emu::start(KEY, extra)
}

struct Out {
    code: i32,
    stdout: String,
    records: Vec<Value>,
    stderr: String,
}

impl Out {
    fn kind<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.records.iter().filter(move |r| r["kind"] == k)
    }
    fn response(&self) -> Option<&Value> {
        self.kind("message").find(|m| m["role"] == "response")
    }
    fn respcd(&self) -> Option<String> {
        self.response()
            .and_then(|r| r["respcd"].as_str())
            .map(str::to_string)
    }
    fn data(&self, field: &str) -> String {
        self.response()
            .and_then(|r| r["response"]["data"][field].as_str())
            .unwrap_or("")
            .to_string()
    }
    fn has_finding(&self, code: &str) -> bool {
        self.kind("finding").any(|f| f["code"] == code)
    }
}

fn send<S: AsRef<std::ffi::OsStr>>(target: &str, args: &[S]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(["send", "--to", target, "--key", KEY, "--format", "jsonl"])
        .args(args);
    if !args.iter().any(|a| a.as_ref() == "--timeout") {
        cmd.args(["--timeout", "10"]);
    }
    let (code, stdout, stderr) = run_bounded(&mut cmd, Duration::from_secs(30));
    let records = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    Out {
        code,
        stdout,
        records,
        stderr,
    }
}

fn transport_args(transport: &str) -> Vec<&'static str> {
    if transport == "tcp-frames" {
        vec!["--tcp-framing", "frames"]
    } else {
        vec![]
    }
}

#[test]
fn every_func_type_in_every_dialect_over_every_transport() {
    let emu = emulator(&["--serial", "pty"]);
    let mut n = 0;
    for transport in ["http", "tcp", "tcp-frames", "serial"] {
        for dialect in ["plain", "content-encrypted", "envelope-encrypted"] {
            n += 1;
            let t = emu.target(transport);
            let mut base = vec!["--dialect", dialect];
            base.extend(transport_args(transport));
            let with = |more: &[&str]| -> Vec<String> {
                base.iter().chain(more).map(|s| s.to_string()).collect()
            };
            let ctx = format!("{transport} {dialect}");
            let otn = format!("T{n}");
            let pay = send(
                &t,
                &with(&[
                    "pay",
                    "--amt",
                    "10.10",
                    "--channel",
                    "wx",
                    "--out-trade-no",
                    &otn,
                ]),
            );
            assert_eq!(pay.code, 0, "{ctx}: {}", pay.stderr);
            assert_eq!(pay.respcd().as_deref(), Some("6000"), "{ctx}");
            let req = pay
                .kind("message")
                .find(|m| m["role"] == "request")
                .unwrap();
            assert_eq!(req["dialect"], dialect, "{ctx}");
            assert_eq!(req["digest"], "ok", "{ctx}");
            assert!(
                pay.stdout.contains(r#""amt":10.10,"#),
                "{ctx}: amount token kept: {}",
                pay.stdout
            );
            assert_eq!(pay.data("txamt"), "1010", "{ctx}");
            assert_eq!(pay.data("busicd"), "800208", "{ctx}");
            assert_eq!(pay.data("txcurrcd"), "344", "{ctx}");
            let tx = pay.kind("transaction").next().expect("a transaction");
            assert_eq!(tx["func_type"], 1001);
            assert_eq!(pay.kind("finding").count(), 0, "{ctx}: {:?}", pay.records);
            let syssn = pay.data("syssn");
            assert_eq!(syssn.len(), 26, "{ctx}");
            if transport == "serial" || transport == "tcp-frames" {
                let acks = pay.kind("message").filter(|m| m["role"] == "ack").count();
                assert_eq!(acks, 2, "{ctx}: request and result both acknowledged");
            }

            let inq = send(&t, &with(&["inquiry", "--out-trade-no", &otn]));
            assert_eq!(inq.respcd().as_deref(), Some("6000"), "{ctx}");
            assert_eq!(inq.data("syssn"), syssn, "{ctx}: inquiry finds the payment");
            let rc = send(&t, &with(&["receipt", "--order-id", &syssn]));
            assert_eq!(rc.respcd().as_deref(), Some("6000"), "{ctx}");
            let rf = send(
                &t,
                &with(&["refund", "--order-id", &syssn, "--refund-amount", "4.10"]),
            );
            assert_eq!(rf.code, 0, "{ctx}");
            assert_eq!(rf.data("orig_syssn"), syssn, "{ctx}");
            assert_eq!(rf.data("txamt"), "410", "{ctx}");
            let inq2 = send(&t, &with(&["inquiry", "--order-id", &syssn]));
            assert_eq!(
                inq2.data("allow_refund_amt"),
                "600",
                "{ctx}: refund remembered"
            );
            let sm = send(&t, &with(&["summary"]));
            assert_eq!(sm.respcd().as_deref(), Some("6000"), "{ctx}");
            assert_eq!(sm.data("payment_count"), n.to_string(), "{ctx}");
            let cancel = send(&t, &with(&["cancel"]));
            assert_eq!(
                cancel.code, 0,
                "{ctx}: 6001 is the expected answer to cancel"
            );
            assert_eq!(cancel.respcd().as_deref(), Some("6001"), "{ctx}");
            let js = send(
                &t,
                &with(&["--json", r#"{"func_type":4001,"orderId":"nope"}"#]),
            );
            assert_eq!(js.code, 1, "{ctx}");
            assert_eq!(js.respcd().as_deref(), Some("4005"), "{ctx}: unknown order");
        }
    }
}

#[test]
fn card_payments_are_masked_and_refunded_in_full_only() {
    let emu = emulator(&[]);
    let t = emu.target("http");
    let pay = send(&t, &["pay", "--amt", "99.5", "--channel", "amex_card"]);
    assert_eq!(pay.data("busicd"), "806808");
    assert_eq!(pay.data("cardscheme"), "AMEX");
    assert!(pay.data("cardNo").contains("*****"));
    assert_eq!(pay.data("txamt"), "9950");
    let syssn = pay.data("syssn");
    let partial = send(
        &t,
        &["refund", "--order-id", &syssn, "--refund-amount", "1"],
    );
    assert_eq!(partial.code, 1);
    assert_eq!(partial.respcd().as_deref(), Some("4005"));
    let full = send(&t, &["refund", "--order-id", &syssn]);
    assert_eq!(full.respcd().as_deref(), Some("6000"));
}

#[test]
fn refusals_4004_4006_4003() {
    let emu = emulator(&[]);
    let t = emu.target("http");
    let get = send(&t, &["--method", "GET", "summary"]);
    assert_eq!(get.code, 1);
    assert_eq!(get.respcd().as_deref(), Some("4004"));
    let bad = send(&t, &["pay", "--amt", "1", "--channel", "bitcoin"]);
    assert_eq!(bad.respcd().as_deref(), Some("4006"));
    assert!(bad.has_finding("unknown-channel"));
    let missing = send(&t, &["--json", r#"{"func_type":1002}"#]);
    assert_eq!(missing.respcd().as_deref(), Some("4006"));
    assert!(missing.has_finding("missing-field"));
    // Signed with another key: the emulator's digest check fails.
    let mut cmd = Command::new(BIN);
    cmd.args([
        "send",
        "--to",
        &t,
        "--key",
        "a1b2c3d4e5f6a7b8",
        "--dialect",
        "plain",
        "--format",
        "jsonl",
        "summary",
    ]);
    let (code, out, _) = run_bounded(&mut cmd, Duration::from_secs(30));
    assert_eq!(code, 1);
    assert!(out.contains(r#""respcd":"4003""#), "{out}");
    // `--digest`: the right key, a wrong digest on purpose (every dialect): 4003,
    // and send's own analysis of the exchange reports the mismatch.
    for dialect in ["plain", "content-encrypted", "envelope-encrypted"] {
        let r = send(
            &t,
            &[
                "--dialect",
                dialect,
                "--digest",
                "5d41402abc4b2a76b9719d911017c592",
                "summary",
            ],
        );
        assert_eq!(
            r.respcd().as_deref(),
            Some("4003"),
            "{dialect}: {:?}",
            r.records
        );
        assert!(
            r.has_finding("digest-mismatch"),
            "{dialect}: {:?}",
            r.records
        );
    }
    // `--raw-body`: JSON that is no ECR envelope: 4006, and a bad-envelope finding.
    let raw = send(
        &t,
        &[
            "--raw-body",
            r#"{"amount":"1.00","type":"sale"}"#,
            "summary",
        ],
    );
    assert_eq!(raw.respcd().as_deref(), Some("4006"), "{:?}", raw.records);
    assert!(raw.has_finding("bad-envelope"), "{:?}", raw.records);
}

#[test]
fn fault_wrong_digest_and_wrong_key() {
    let emu = emulator(&["--fault", "wrong-digest"]);
    let r = send(&emu.target("tcp"), &["summary"]);
    assert_eq!((r.code, r.respcd().as_deref()), (1, Some("4003")));
    assert!(r.has_finding("error-response"));

    let emu = emulator(&["--fault", "wrong-key", "--serial", "pty"]);
    let r = send(&emu.target("http"), &["summary"]);
    assert_eq!((r.code, r.respcd().as_deref()), (1, Some("5001")));
    let r = send(&emu.target("http"), &["--dialect", "plain", "summary"]);
    assert_eq!(r.respcd().as_deref(), Some("4003"));
    // On serial the frame is rejected at the link level: 0x33.
    let r = send(&emu.target("serial"), &["summary"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("0x33"), "{}", r.stderr);
    assert!(r.has_finding("error-frame"), "{:?}", r.records);
}

#[test]
fn fault_drop_and_delay_ack() {
    let emu = emulator(&["--fault", "drop-ack", "--serial", "pty"]);
    let started = Instant::now();
    let r = send(&emu.target("serial"), &["summary"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no ack (0x20)"), "{}", r.stderr);
    assert!(r.has_finding("ack-timeout"), "{:?}", r.records);
    assert!(started.elapsed() < Duration::from_secs(5));

    let emu = emulator(&["--fault", "delay-ack=1300", "--serial", "pty"]);
    let r = send(&emu.target("serial"), &["summary"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("within 1000 ms"), "{}", r.stderr);
    // The late ack and the result of that request reach the line after the sender
    // gave up; the next sender discards them when it opens the line.
    std::thread::sleep(Duration::from_millis(800));
    // A sender that waits longer gets the late ack, and the analyzer names it.
    let r = send(&emu.target("serial"), &["--ack-timeout", "3000", "summary"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.has_finding("ack-timeout"), "{:?}", r.records);
}

#[test]
fn fault_split_with_pause() {
    let emu = emulator(&["--fault", "split=650", "--serial", "pty"]);
    // HTTP: the answer arrives in two segments and is put together.
    let r = send(&emu.target("http"), &["summary"]);
    assert_eq!((r.code, r.respcd().as_deref()), (0, Some("6000")));
    let r = send(&emu.target("tcp"), &["summary"]);
    assert_eq!((r.code, r.respcd().as_deref()), (0, Some("6000")));
    // Serial: fragments 650 ms apart break the 500 ms rule; the sender answers 0x35.
    let r = send(&emu.target("serial"), &["summary"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("500 ms"), "{}", r.stderr);
    assert!(r.has_finding("reassembly-timeout"), "{:?}", r.records);
}

#[test]
fn encrypted_responses_stray_ack_bare_body_and_hex_key() {
    // D5: the whole answer, or its data field, encrypted; send decodes both.
    for (fault, envelope) in [
        ("encrypt-response=body", "encrypted"),
        ("encrypt-response=data", "data-encrypted"),
    ] {
        let emu = emulator(&["--fault", fault]);
        let r = send(
            &emu.target("http"),
            &["pay", "--amt", "3", "--channel", "wx"],
        );
        assert_eq!(
            (r.code, r.respcd().as_deref()),
            (0, Some("6000")),
            "{}",
            r.stderr
        );
        assert!(!r.data("syssn").is_empty(), "{fault}: {:?}", r.records);
        let resp = r.response().unwrap();
        assert_eq!(resp["dialect"], envelope, "{fault}: {resp}");
    }
    // An ack nobody asked for after each result.
    let emu = emulator(&["--fault", "stray-ack"]);
    let r = send(
        &emu.target("tcp-frames"),
        &["--tcp-framing", "frames", "summary"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.has_finding("unexpected-ack"), "{:?}", r.records);
    // --bare: the Base64 without quotes; --key-reading hex-128: the hex-decoded key.
    let emu = emulator(&[]);
    let bytes = |r: &Out| r.kind("message").next().unwrap()["bytes"].as_u64().unwrap();
    let quoted = send(&emu.target("http"), &["summary"]);
    let r = send(&emu.target("http"), &["--bare", "summary"]);
    assert_eq!(
        (r.code, r.respcd().as_deref()),
        (0, Some("6000")),
        "{}",
        r.stderr
    );
    assert_eq!(bytes(&r) + 2, bytes(&quoted), "{:?}", r.records);
    let r = send(
        &emu.target("http"),
        &["--key-reading", "hex-128", "summary"],
    );
    assert_eq!(
        (r.code, r.respcd().as_deref()),
        (0, Some("6000")),
        "{}",
        r.stderr
    );
    let req = r.kind("message").next().unwrap();
    assert_eq!(req["key"]["interpretation"], "hex-128", "{req}");
    let r = send(
        &emu.target("http"),
        &["--dialect", "plain", "--bare", "summary"],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("envelope-encrypted"), "{}", r.stderr);
}

#[test]
fn json_value_framing_and_content_as_string() {
    let emu = emulator(&[]);
    let tcp = emu.target("tcp");
    for dialect in ["content-encrypted", "envelope-encrypted", "plain"] {
        let r = send(
            &tcp,
            &["--tcp-framing", "json", "--dialect", dialect, "summary"],
        );
        assert_eq!(
            (r.code, r.respcd().as_deref()),
            (0, Some("6000")),
            "{dialect}: {}",
            r.stderr
        );
    }
    let r = send(
        &tcp,
        &[
            "--tcp-framing",
            "frames",
            "--dialect",
            "plain",
            "--content-string",
            "summary",
        ],
    );
    assert_eq!(
        (r.code, r.respcd().as_deref()),
        (0, Some("6000")),
        "{}",
        r.stderr
    );
    let req = r.kind("message").next().unwrap();
    assert_eq!(req["content"]["func_type"], 3002, "{req}");
    // The content went as a string: 2 quotes and 2 escaped quotes more than the object.
    let obj = send(
        &tcp,
        &["--tcp-framing", "frames", "--dialect", "plain", "summary"],
    );
    let bytes = |r: &Out| r.kind("message").next().unwrap()["bytes"].as_u64().unwrap();
    assert_eq!(bytes(&r), bytes(&obj) + 4, "{:?}", r.records);
    let r = send(&tcp, &["--content-string", "summary"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--dialect plain"), "{}", r.stderr);
}

#[test]
fn send_frame_faults() {
    let emu = emulator(&[]);
    let tcp = emu.target("tcp-frames");
    let frames = |fault: &str, what: &[&str]| {
        let mut args = vec!["--tcp-framing", "frames", "--frame-fault", fault];
        args.extend_from_slice(what);
        send(&tcp, &args)
    };
    // A malformed request frame: the terminal answers error frame 0x31 at once
    // (exit 1), and the analyzer names the damage. A bad version as the first
    // bytes of the connection still means frames; a bad end marker is answered
    // before the next frame shows where the damage ends.
    for (fault, code) in [
        ("type", "unknown-frame-type"),
        ("length", "bad-length"),
        ("version", "unsupported-version"),
        ("end-marker", "bad-end-marker"),
    ] {
        let r = frames(fault, &["summary"]);
        assert_eq!(r.code, 1, "{fault}: {}", r.stderr);
        assert!(r.stderr.contains("0x31 (format error)"), "{}", r.stderr);
        assert!(r.has_finding(code), "{fault}: {:?}", r.records);
        assert!(r.has_finding("error-frame"), "{fault}: {:?}", r.records);
    }
    // A ref outside 1..127 is accepted and echoed: a warning on both frames.
    let r = frames("ref=0x80", &["summary"]);
    assert_eq!(
        (r.code, r.respcd().as_deref()),
        (0, Some("6000")),
        "{}",
        r.stderr
    );
    let bad_refs = r.kind("finding").filter(|f| f["code"] == "bad-ref").count();
    assert_eq!(bad_refs, 2, "{:?}", r.records);
    // Junk before the first frame of a connection: the terminal still sees frames.
    let r = frames("garbage", &["summary"]);
    assert_eq!(
        (r.code, r.respcd().as_deref()),
        (0, Some("6000")),
        "{}",
        r.stderr
    );
    assert!(r.has_finding("garbage-bytes"), "{:?}", r.records);
    // Not over frames, or not a fault: a clear usage error.
    let r = send(&emu.target("http"), &["--frame-fault", "type", "summary"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--tcp-framing frames"), "{}", r.stderr);
    let r = send(
        &tcp,
        &[
            "--tcp-framing",
            "frames",
            "--frame-fault",
            "nonsense",
            "summary",
        ],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("garbage, version, type"), "{}", r.stderr);
}

#[test]
fn fault_corrupt() {
    let emu = emulator(&["--fault", "corrupt", "--serial", "pty"]);
    let r = send(&emu.target("http"), &["summary"]);
    assert_eq!(r.code, 1);
    assert!(r.has_finding("bad-envelope"), "{:?}", r.records);
    let r = send(&emu.target("serial"), &["--timeout", "1", "summary"]);
    assert_eq!(r.code, 2);
    assert!(r.has_finding("bad-end-marker"), "{:?}", r.records);
}

#[test]
fn fault_close_early() {
    let emu = emulator(&["--fault", "close-early", "--serial", "pty"]);
    for transport in ["http", "tcp"] {
        let r = send(&emu.target(transport), &["summary"]);
        assert_eq!(r.code, 2, "{transport}");
        assert!(
            r.stderr.contains("closed the connection"),
            "{transport}: {}",
            r.stderr
        );
        assert!(r.has_finding("no-response"), "{transport}");
    }
    let r = send(&emu.target("serial"), &["--timeout", "1", "summary"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no answer"), "{}", r.stderr);
}

#[test]
fn delay_then_cancel() {
    let emu = emulator(&["--delay", "4"]);
    let t = emu.target("http");
    let t2 = t.clone();
    let payment =
        std::thread::spawn(move || send(&t2, &["pay", "--amt", "5", "--channel", "alipay"]));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let c = send(&t, &["cancel"]);
    assert_eq!(c.respcd().as_deref(), Some("6001"));
    let p = payment.join().unwrap();
    assert_eq!(
        p.respcd().as_deref(),
        Some("6001"),
        "the waiting payment was cancelled"
    );
    assert_eq!(p.code, 1);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn connection_errors_and_usage() {
    // A port nobody listens on: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = send(&format!("http://127.0.0.1:{port}"), &["summary"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{}",
        r.stderr
    );
    let r = send("serial:/dev/null", &["summary"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("/dev/null") && r.stderr.contains("not a serial device"),
        "{}",
        r.stderr
    );
    let r = send("ftp://x", &["summary"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown scheme"), "{}", r.stderr);
    let r = send(
        "http://127.0.0.1:1",
        &["pay", "--amt", "1.2.3", "--channel", "wx"],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--amt"), "{}", r.stderr);
    let (code, _, err) = run_bounded(
        Command::new(BIN).args(["send", "--to", "http://127.0.0.1:1", "summary"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, 2);
    assert!(err.contains("POS-KEY"), "{err}");
    // A silent peer: timeout.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let r = send(&format!("tcp://{addr}"), &["--timeout", "0.5", "summary"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("no answer from the terminal within 0.5 s"),
        "{}",
        r.stderr
    );
    drop(l);
    let (code, _, err) = run_bounded(
        Command::new(BIN).args(["emulate", "--key", KEY, "--no-http", "--no-tcp"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, 2);
    assert!(err.contains("nothing to serve"), "{err}");
}

#[test]
fn stops_cleanly_on_sigterm_and_writes_the_serial_capture() {
    let dir = std::env::temp_dir().join(format!("ecr-emu-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = dir.join("serial.pcapng");
    let mut emu = emulator(&["--serial", "pty", "--serial-capture", cap.to_str().unwrap()]);
    let r = send(
        &emu.target("serial"),
        &["pay", "--amt", "1", "--channel", "octopus"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    signal(&emu.child, "TERM");
    let status = wait_exit(&mut emu.child, Duration::from_secs(5));
    assert!(status.success());
    assert!(emu.log().iter().any(|l| l == "stopped"));
    // The capture holds the exchange: request, ack, result, ack.
    let (code, out, err) = run_bounded(
        Command::new(BIN).args([
            "analyze",
            cap.to_str().unwrap(),
            "--key",
            KEY,
            "--format",
            "jsonl",
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["messages"], 4, "{out}");
    assert_eq!(summary["transactions"], 1);
    assert_eq!(summary["func_types"]["1001"], 1);
    assert_eq!(summary["findings"], serde_json::json!({}));
    let _ = std::fs::remove_dir_all(&dir);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn live_tcpdump_capture_is_analysed() {
    if !is_root() || Command::new("tcpdump").arg("--version").output().is_err() {
        // CI (ECR_SNIFF_NO_SKIP) has every tool: a skip there is a failure.
        assert!(
            std::env::var_os("ECR_SNIFF_NO_SKIP").is_none(),
            "SKIP not allowed"
        );
        eprintln!("SKIP live_tcpdump_capture_is_analysed: needs root and tcpdump");
        return;
    }
    let emu = emulator(&[]);
    let hport = emu.http.rsplit(':').next().unwrap().to_string();
    let tport = emu.tcp.rsplit(':').next().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("ecr-emu-dump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lo.pcap");
    let mut dump = Command::new("tcpdump")
        // --immediate-mode: without it packets may sit in the kernel's buffer
        // until tcpdump stops, and be lost.
        .args([
            "-i",
            "lo",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-n",
            "-s",
            "0",
        ])
        .args(["-w", file.to_str().unwrap()])
        .args([&format!("tcp port {hport} or tcp port {tport}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for "listening on lo".
    let err = dump.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(10));
    assert!(
        ready.is_ok_and(|l| l.contains("listening")),
        "tcpdump did not start"
    );
    let p = send(
        &emu.target("http"),
        &[
            "pay",
            "--amt",
            "10.1",
            "--channel",
            "payme",
            "--out-trade-no",
            "D1",
        ],
    );
    assert_eq!(p.code, 0);
    let q = send(&emu.target("tcp"), &["inquiry", "--out-trade-no", "D1"]);
    assert_eq!(q.code, 0);
    let g = send(&emu.target("http"), &["--method", "GET", "summary"]);
    assert_eq!(g.code, 1);
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while dump.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = dump.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, out, err) = run_bounded(
        Command::new(BIN).args([
            "analyze",
            file.to_str().unwrap(),
            "--key",
            KEY,
            "--http-port",
            &hport,
            "--tcp-port",
            &tport,
            "--format",
            "jsonl",
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["transactions"], 3, "{out}");
    assert_eq!(
        summary["func_types"],
        serde_json::json!({"1001": 1, "3002": 1, "4001": 1})
    );
    assert_eq!(summary["respcd"], serde_json::json!({"4004": 1, "6000": 2}));
    assert_eq!(
        summary["findings"],
        serde_json::json!({"error-response": 1, "http-method": 1}),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The captures made by `captures/emu/regenerate.sh` analyse to their golden
/// outputs. Regenerate those on purpose with `ECR_SNIFF_BLESS=1`.
#[test]
fn emu_captures_match_golden_outputs() {
    let dir = root().join("captures/emu");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("captures/emu is missing");
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "captures/emu holds {} captures",
        files.len()
    );
    let bless = std::env::var_os("ECR_SNIFF_BLESS").is_some();
    let mut failures = vec![];
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let rel = Path::new("captures/emu").join(&name);
        let (code, out, err) = run_bounded(
            Command::new(BIN)
                .current_dir(root())
                .args(["analyze", rel.to_str().unwrap(), "--key", KEY])
                .args([
                    "--http-port",
                    "19001",
                    "--tcp-port",
                    "19002",
                    "--format",
                    "jsonl",
                ]),
            Duration::from_secs(20),
        );
        assert_eq!(code, 0, "{name}: {err}");
        let golden = dir.join("expected").join(format!("{name}.jsonl"));
        if bless {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &out).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == out => {}
            Ok(_) => failures.push(format!("{name}: output differs from {}", golden.display())),
            Err(e) => failures.push(format!("{name}: {}: {e}", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
