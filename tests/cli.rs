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
fn fail_on_sets_the_exit_status() {
    let cap = "captures/http-digest-mismatch.pcap";
    assert_eq!(run(&["analyze", cap, "--key", KEY]).0, 0);
    assert_eq!(
        run(&["analyze", cap, "--key", KEY, "--fail-on", "error"]).0,
        1
    );
    let clean = "captures/http-plain-all-functypes.pcap";
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
