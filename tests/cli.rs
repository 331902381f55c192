//! End-to-end tests of the command line: decode, exit statuses, errors, check.

use std::path::PathBuf;
use std::process::Command;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"));
    cmd.args(args).current_dir(root()).env_remove("ECR_POS_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> (i32, String, String) {
    run_env(args, &[])
}

const SPEC_SAMPLE: &str = "2f6e011001007f00747b22636f6e74656e74223a227b5c22616d745c223a3130302c5c226368616e6e656c5c223a5c2277785c222c5c2266756e63547970655c223a312c5c226d6f64655c223a317d222c22646967657374223a223266306334363833653235613762393430373236353033333037306539303334227d2f6e";

#[test]
fn decode_spec_sample() {
    let (code, out, err) = run(&["decode", SPEC_SAMPLE, "--color", "never"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Frame: marker 2f6e, version 1, type 0x10 request, ref 1, total length 127, data length 116"), "{out}");
    assert!(out.contains("channel: wx"));
    assert!(out.contains("funcType: 1"));
    assert!(out.contains("missing-field"));
}

#[test]
fn decode_jsonl_of_split_message_and_ack() {
    // The 2500-byte vector message from vectors.json, then an ack from the POS side.
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("crates/ecr-proto/tests/data/vectors.json")).unwrap(),
    )
    .unwrap();
    let frags: Vec<&str> = v["split"][0]["fragments_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let hex = frags.concat();
    let (code, out, err) = run(&["decode", &hex, "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "message");
    assert_eq!(first["transport"], "serial");
    assert_eq!(first["ref"], 0x11);
    assert_eq!(first["frame"]["fragments"], 3);
    assert_eq!(first["bytes"], 2500);
    // The data is not an envelope: said so, not hidden.
    assert!(out.contains("\"code\":\"bad-envelope\""));
}

#[test]
fn decode_rejects_bad_hex_clearly() {
    let (code, _, err) = run(&["decode", "2f6eZZ"]);
    assert_eq!(code, 2);
    assert!(err.contains("not hex"), "{err}");
}

#[test]
fn decode_reads_a_bounded_input() {
    // 17 MB of zeros: refused with the limit named, not read whole.
    let dir = std::env::temp_dir().join(format!("ecr-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![0u8; 17 << 20]).unwrap();
    let (code, _, err) = run(&["decode", "--file", big.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 2);
    assert!(err.contains("big.bin: more than 16 MiB"), "{err}");
    assert!(err.contains("ecr-sniff analyze"), "{err}");
}

#[test]
fn a_capture_given_as_key_file_or_expectation_file_is_named_for_what_it_is() {
    // The usual slip: a capture after --key-file or --expect. Refused in one line
    // that says what was found and what was expected, before it is read whole.
    let cap = "captures/http-digest-mismatch.pcap";
    let (code, _, err) = run(&["analyze", cap, "--key-file", cap]);
    assert_eq!(code, 2);
    assert!(
        err.contains("key file captures/http-digest-mismatch.pcap: not text (byte ")
            && err.contains("is not UTF-8); a key file holds one POS-KEY per line"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = run(&["check", cap, "--expect", cap]);
    assert_eq!(code, 2);
    assert!(
        err.contains("expectation file captures/http-digest-mismatch.pcap: not text")
            && err.contains("check --update"),
        "{err}"
    );
    // Too large: refused by its size.
    let dir = std::env::temp_dir().join(format!("ecr-keyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("keys.txt");
    std::fs::write(&big, "# comment\n".repeat(110_000)).unwrap();
    let (code, _, err) = run(&["analyze", cap, "--key-file", big.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 2);
    assert!(err.contains("keys.txt: larger than 1 MiB"), "{err}");
}

#[test]
fn unreadable_file_is_exit_2_with_the_file_named() {
    let (code, _, err) = run(&["analyze", "Cargo.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("Cargo.toml"), "{err}");
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
    let (code, _, err) = run(&["analyze", "no/such/file.pcap"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.pcap"), "{err}");
}

#[test]
fn of_several_captures_one_that_cannot_be_read_is_said_and_the_rest_analysed() {
    // As grep and cat do: each unreadable file on stderr, the others analysed (the
    // summary counts their messages), exit status 2 at the end.
    let good = "captures/http-slow-terminal.pcap";
    let (code, out, err) = run(&[
        "analyze",
        "no/such/file.pcap",
        good,
        "Cargo.toml",
        "--key",
        KEY,
        "--format",
        "jsonl",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no/such/file.pcap"), "{err}");
    assert!(
        err.contains("Cargo.toml: not a pcap or pcapng file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
    let summary = out.lines().last().unwrap_or_default();
    assert!(summary.contains("\"kind\":\"summary\""), "{out}");
    assert!(summary.contains("\"messages\":4"), "{summary}");
    assert!(
        summary.contains(&format!("\"files\":[\"{good}\"]")),
        "{summary}"
    );
    // Alone, the same readable capture exits 0 and writes the same records.
    let (code, alone, _) = run(&["analyze", good, "--key", KEY, "--format", "jsonl"]);
    assert_eq!(code, 0);
    assert_eq!(alone, out);
}

#[test]
fn fail_on_sets_the_exit_status() {
    let cap = "captures/http-digest-mismatch.pcap";
    assert_eq!(run(&["analyze", cap, "--key", KEY]).0, 0);
    assert_eq!(
        run(&["analyze", cap, "--key", KEY, "--fail-on", "error"]).0,
        1
    );
    let clean = "captures/tcp-json-values.pcap";
    assert_eq!(
        run(&["analyze", clean, "--key", KEY, "--fail-on", "info"]).0,
        0
    );
}

#[test]
fn key_from_environment_and_key_file_with_binding() {
    let cap = "captures/http-envelope-encrypted-keepalive.pcap";
    let (_, out, _) = run_env(
        &["analyze", cap, "--format", "jsonl"],
        &[("ECR_POS_KEY", KEY)],
    );
    assert!(out.contains("\"digest\":\"ok\""));
    assert!(!out.contains("no-key"));
    assert!(!out.contains(KEY));

    let dir = std::env::temp_dir().join(format!("ecr-sniff-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kf = dir.join("keys.txt");
    std::fs::write(
        &kf,
        format!("# shop\nmy_qfpay_pos_key\n127.0.0.1:9001={KEY}\n"),
    )
    .unwrap();
    let (code, out, err) = run(&[
        "analyze",
        cap,
        "--key-file",
        kf.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    assert_eq!(code, 0, "{err}");
    // The bound key (number 2 in the file) decrypts.
    assert!(
        out.contains("\"key\":{\"index\":2,\"interpretation\":\"text-256\"}"),
        "{out}"
    );

    std::fs::write(&kf, "short\n").unwrap();
    let (code, _, err) = run(&["analyze", cap, "--key-file", kf.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("line 1"), "{err}");
    assert!(!err.contains("short\n"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_reports_differences_and_writes_junit() {
    let dir = std::env::temp_dir().join(format!("ecr-sniff-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exp = dir.join("expect.json");
    let junit = dir.join("junit.xml");
    let cap = "captures/http-digest-mismatch.pcap";
    let e = exp.to_str().unwrap();
    let (code, out, _) = run(&["check", cap, "--key", KEY, "--expect", e, "--update"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run(&[
        "check",
        cap,
        "--key",
        KEY,
        "--expect",
        e,
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("failures=\"0\""));
    // Without the key the digest cannot be verified: the summary differs.
    let (code, out, _) = run(&[
        "check",
        cap,
        "--expect",
        e,
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("findings.digest-mismatch: expected 1, got 0"),
        "{out}"
    );
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("<failure"));
    // Without --expect, --fail-on error decides.
    let (code, out, _) = run(&["check", cap, "--key", KEY]);
    assert_eq!(code, 1);
    assert!(out.contains("FAILED"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn codes_lists_every_finding_code() {
    let (code, out, _) = run(&["codes"]);
    assert_eq!(code, 0);
    for c in [
        "garbage-bytes",
        "digest-mismatch",
        "partial-card-refund",
        "tls-encrypted",
    ] {
        assert!(out.contains(&format!("`{c}`")), "{c}");
    }
}

#[test]
fn readme_documents_every_finding_code() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (_, table, _) = run(&["codes"]);
    assert!(
        readme.contains(&table),
        "README's finding table differs from `ecr-sniff codes`"
    );
}

#[test]
fn check_takes_a_usb_device_and_fails_on_line_settings() {
    let cap = "captures/usb/usbmon-two-devices.pcap";
    let (code, out, _) = run(&["check", cap, "--usb-device", "1:5", "--key", KEY]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("(8 messages, 2 transactions, 0 findings)"),
        "{out}"
    );
    // Device 1:7 runs at 115200 baud: a warning.
    let (code, out, _) = run(&["check", cap, "--key", KEY, "--fail-on", "warning"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("warning line-settings x1"), "{out}");
}

/// A fresh temporary directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ecr-sniff-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_update_keeps_captures_with_the_same_file_name_apart() {
    let dir = temp_dir("same-name");
    for (sub, src) in [
        ("a", "captures/http-digest-mismatch.pcap"),
        ("b", "captures/http-plain-all-functypes.pcap"),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::copy(root().join(src), dir.join(sub).join("x.pcap")).unwrap();
    }
    let e = dir.join("expect.json");
    let (a, b) = (dir.join("a/x.pcap"), dir.join("b/x.pcap"));
    let (a, b, e) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        e.to_str().unwrap(),
    );
    let (code, out, err) = run(&["check", a, b, "--key", KEY, "--expect", e, "--update"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expect.json")).unwrap()).unwrap();
    // Keyed by the path relative to the expectation file's directory.
    assert_eq!(v["captures"]["a/x.pcap"]["messages"], 2, "{v}");
    assert_eq!(v["captures"]["b/x.pcap"]["messages"], 12, "{v}");
    assert!(v["captures"].get("x.pcap").is_none(), "{v}");
    let (code, out, _) = run(&["check", a, b, "--key", KEY, "--expect", e]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 ok, 0 failed"), "{out}");

    // An expectation file of older versions (keyed by file name) is still read,
    // and --update replaces the old key.
    let old = serde_json::json!({"captures": {"x.pcap": v["captures"]["a/x.pcap"].clone()}});
    std::fs::write(dir.join("expect.json"), old.to_string()).unwrap();
    let (code, out, _) = run(&["check", a, "--key", KEY, "--expect", e]);
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = run(&["check", a, "--key", KEY, "--expect", e, "--update"]);
    assert_eq!(code, 0);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expect.json")).unwrap()).unwrap();
    assert!(v["captures"].get("x.pcap").is_none(), "{v}");
    assert_eq!(v["captures"]["a/x.pcap"]["messages"], 2, "{v}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn send_takes_shared_options_before_or_after_every_subcommand() {
    // Port 1 on loopback refuses: reaching "cannot connect" proves the options
    // were accepted and the key loaded (without one, send stops earlier).
    let dir = temp_dir("send-opts");
    let kf = dir.join("pos.key");
    std::fs::write(&kf, format!("{KEY}\n")).unwrap();
    let kf = kf.to_str().unwrap();
    let subs: [&[&str]; 6] = [
        &["pay", "--amt", "1", "--channel", "wx"],
        &["refund", "--order-id", "20250703155400020061880690"],
        &["receipt", "--order-id", "20250703155400020061880690"],
        &["summary"],
        &["inquiry", "--out-trade-no", "INV-1"],
        &["cancel"],
    ];
    let shared: [&[&str]; 2] = [
        &[
            "--to",
            "http://127.0.0.1:1",
            "--key",
            KEY,
            "--format",
            "jsonl",
        ],
        &[
            "--key-file",
            kf,
            "--to",
            "tcp://127.0.0.1:1",
            "--dialect",
            "plain",
            "--timeout",
            "5",
        ],
    ];
    for sub in subs {
        for opts in shared {
            for after in [false, true] {
                let mut args = vec!["send"];
                if after {
                    args.extend_from_slice(sub);
                    args.extend_from_slice(opts);
                } else {
                    args.extend_from_slice(opts);
                    args.extend_from_slice(sub);
                }
                let (code, _, err) = run(&args);
                assert_eq!(code, 2, "{args:?}: {err}");
                assert!(
                    err.contains("cannot connect to 127.0.0.1:1"),
                    "{args:?}: {err}"
                );
                // The OS error once, not twice.
                assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn key_file_with_bom_and_a_binding_that_matches_no_traffic() {
    let dir = temp_dir("bom");
    let kf = dir.join("keys.txt");
    let cap = "captures/http-envelope-encrypted-keepalive.pcap";
    // Notepad's UTF-8 with a byte order mark and CRLF line ends.
    std::fs::write(&kf, format!("\u{feff}127.0.0.1={KEY}\r\n")).unwrap();
    let kfs = kf.to_str().unwrap();
    let (code, out, err) = run(&["analyze", cap, "--key-file", kfs, "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"digest\":\"ok\""), "{out}");
    assert!(!out.contains("no-key"), "{out}");
    assert!(!out.contains("unused_keys"), "{out}");

    // Bound to another terminal: the finding and the summary say so.
    std::fs::write(&kf, format!("10.0.0.9={KEY}\n")).unwrap();
    let (code, out, err) = run(&["analyze", cap, "--key-file", kfs, "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("no POS-KEY was given"), "{out}");
    assert!(
        out.contains("no POS-KEY given is for terminal 127.0.0.1:9001 (the key file binds keys to 10.0.0.9 only)"),
        "{out}"
    );
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        summary["unused_keys"],
        serde_json::json!([{"key": 1, "bound_to": "10.0.0.9"}])
    );
    assert_eq!(
        summary["terminals_without_key"],
        serde_json::json!(["127.0.0.1:9001"])
    );
    let (_, out, _) = run(&["analyze", cap, "--key-file", kfs, "--color", "never"]);
    assert!(
        out.contains("key 1 (bound to 10.0.0.9) matched no traffic"),
        "{out}"
    );
    assert!(
        out.contains("terminals with no key: 127.0.0.1:9001"),
        "{out}"
    );
    assert!(!out.contains(KEY));
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs ecr-sniff with stdout on a pipe, reads one line and closes the pipe.
fn run_and_close_early(args: &[String]) -> (i32, String) {
    use std::io::{BufRead, Read};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
        .args(args)
        .current_dir(root())
        .env_remove("ECR_POS_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "no output from {args:?}");
    // The reader is dropped here: the pipe is closed.
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn commands_end_quietly_when_the_reader_closes_the_pipe() {
    // Far more output than a pipe buffer holds (64 KiB), so the writer must meet EPIPE.
    let cap = "captures/http-plain-all-functypes.pcap".to_string();
    let mut check = vec!["check".to_string()];
    check.extend(std::iter::repeat_n(cap.clone(), 3000));
    let mut analyze = vec!["analyze".to_string(), "--color".into(), "never".into()];
    analyze.extend(std::iter::repeat_n(cap, 300));
    let dir = temp_dir("epipe");
    let line = dir.join("line.hex");
    std::fs::write(&line, SPEC_SAMPLE.repeat(600)).unwrap();
    let decode = vec![
        "decode".to_string(),
        "--color".into(),
        "never".into(),
        "--file".into(),
        line.to_str().unwrap().into(),
    ];
    for args in [check, analyze, decode] {
        let (code, err) = run_and_close_early(&args);
        assert!(!err.contains("panicked"), "{}: {err}", args[0]);
        assert!(!err.contains("Broken pipe"), "{}: {err}", args[0]);
        assert_eq!(err, "", "{}", args[0]);
        assert_eq!(code, 0, "{}", args[0]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn error_texts_name_the_problem_once() {
    let dir = temp_dir("errors");
    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let (code, _, err) = run(&["analyze", empty.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("empty.pcap: empty file"), "{err}");
    assert!(!err.contains("first bytes"), "{err}");

    let (code, _, err) = run(&["decode", "--file", empty.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("empty file"), "{err}");

    let (code, _, err) = run(&["analyze", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("is a directory"), "{err}");
    assert!(!err.contains("os error"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // An unwritable --junit is reported before any capture is read.
    let cap = "captures/http-digest-mismatch.pcap";
    for bad in [dir.clone(), dir.join("no/such/dir/report.xml")] {
        let (code, out, err) = run(&["check", cap, "--junit", bad.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(out, "", "nothing analysed first");
        assert!(err.contains("cannot write the JUnit file"), "{err}");
    }
    // An unwritable --expect with --update too.
    let (code, out, err) = run(&["check", cap, "--expect", dir.to_str().unwrap(), "--update"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("is a directory"), "{err}");

    // Numeric options: the range is stated; no "unknown fault", no 309 digits.
    let (code, _, err) = run(&["emulate", "--fault", "delay-ack=99999999999999999999"]);
    assert_eq!(code, 2);
    assert!(err.contains("from 0 to 600000"), "{err}");
    assert!(!err.contains("unknown fault"), "{err}");
    let (code, _, err) = run(&["send", "--timeout", "1e308", "summary"]);
    assert_eq!(code, 2);
    assert!(err.contains("at most 86400"), "{err}");
    assert!(err.len() < 300, "{err}");
    let (code, _, err) = run(&["send", "--ack-timeout", "99999999999999999999", "summary"]);
    assert_eq!(code, 2);
    assert!(err.contains("from 1 to 600000"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn junit_time_is_measured_and_decode_counts_its_input() {
    let dir = temp_dir("junit-time");
    let junit = dir.join("j.xml");
    let cap = "captures/mixed-http-tcp.pcapng";
    let (code, _, err) = run(&["check", cap, cap, "--junit", junit.to_str().unwrap()]);
    assert!(code <= 1, "{err}");
    let x = std::fs::read_to_string(&junit).unwrap();
    let times: Vec<f64> = x
        .match_indices("time=\"")
        .map(|(i, m)| {
            let rest = &x[i + m.len()..];
            rest[..rest.find('"').unwrap()].parse::<f64>().unwrap()
        })
        .collect();
    assert_eq!(times.len(), 3, "{x}"); // the suite and two cases
    assert!(times.iter().all(|t| *t > 0.0 && *t < 60.0), "{x}");
    assert!((times[0] - (times[1] + times[2])).abs() < 1e-5, "{x}");

    let (code, out, _) = run(&["decode", SPEC_SAMPLE, "--format", "jsonl"]);
    assert_eq!(code, 0);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["packets"], 1, "{summary}");
    assert_eq!(summary["bytes"], 127, "{summary}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ecr_traffic_on_a_port_not_analysed_is_pointed_out() {
    let findings = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut a = vec!["analyze", "--format", "jsonl"];
        a.extend_from_slice(args);
        let (code, out, err) = run(&a);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["code"] == "ecr-on-other-port")
            .collect()
    };
    // Frames on 19002: the finding names the port and the option.
    let cap = "captures/tcp-frames-other-port-19002.pcap";
    let f = findings(&[cap]);
    assert_eq!(f.len(), 1, "{f:?}");
    let d = f[0]["detail"].as_str().unwrap();
    assert!(d.contains("TCP port 19002"), "{d}");
    assert!(d.ends_with("run again with --tcp-port 19002"), "{d}");
    assert_eq!(f[0]["severity"], "info");
    assert_eq!(f[0]["dst"], "127.0.0.1:19002");
    // ... and the option it names decodes the traffic.
    let (_, out, _) = run(&["analyze", cap, "--tcp-port", "19002", "--format", "jsonl"]);
    assert!(out.contains("\"kind\":\"message\""), "{out}");
    assert!(findings(&[cap, "--tcp-port", "19002"]).is_empty());

    // HTTP on 9001 while only 8080 is analysed.
    let f = findings(&[
        "captures/http-plain-all-functypes.pcap",
        "--http-port",
        "8080",
    ]);
    assert_eq!(f.len(), 1, "{f:?}");
    let d = f[0]["detail"].as_str().unwrap();
    assert!(d.ends_with("run again with --http-port 9001"), "{d}");
    // Raw JSON requests on 9002 while only 7000 is analysed.
    let f = findings(&["captures/tcp-json-values.pcap", "--tcp-port", "7000"]);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0]["detail"]
        .as_str()
        .unwrap()
        .ends_with("run again with --tcp-port 9002"));
    // Traffic on the configured ports: no hint about others.
    assert!(findings(&["captures/mixed-http-tcp.pcapng"]).is_empty());
}
