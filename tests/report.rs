//! `ecr-sniff report` and `analyze --format ladder` over the sample captures.
//!
//! The report's data block (the JSON the page embeds) is compared with golden files
//! in `tests/golden/report/`, and its records with what `analyze --format jsonl`
//! prints for the same capture (one source of truth). The page itself is checked in
//! a real browser by `.ci/steps/60-report.sh`. Regenerate the goldens on purpose with
//! `ECR_SNIFF_BLESS=1 cargo test --test report`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

/// Captures with what they show: HTTP, TCP frames with acks and split messages,
/// timeouts, USB with fragments, gaps and error frames.
const CAPTURES: &[&str] = &[
    "captures/http-plain-all-functypes.pcap",
    "captures/http-digest-mismatch.pcap",
    "captures/http-slow-terminal.pcap",
    "captures/mixed-http-tcp.pcapng",
    "captures/tcp-frames-split-summary.pcap",
    "captures/tcp-frames-ack-timeout.pcap",
    "captures/tcp-frames-reassembly-timeout.pcap",
    "captures/usb/usbmon-ack-timeout.pcap",
    "captures/usb/usbmon-fragment-gap-501ms.pcap",
    "captures/usb/usbmon-error-frame.pcap",
    "captures/usb/usbmon-two-devices.pcap",
    "captures/usb/usbpcap-split-tiny-transfers.pcap",
    "captures/usb/usbmon-garbage-bytes.pcap",
    "captures/emu/fault-drop-ack-serial.pcapng",
    "captures/http-tcp-gap.pcap",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    run_with(args, |c| c)
}

/// `ecr-sniff ARGS` in the repository root, without `ECR_POS_KEY` and `NO_COLOR`, the
/// command first shaped by `env` (e.g. a `TZ`).
fn run_with(
    args: &[&str],
    env: impl FnOnce(&mut Command) -> &mut Command,
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"));
    cmd.args(args)
        .current_dir(root())
        .env_remove("ECR_POS_KEY")
        .env_remove("NO_COLOR");
    let out = env(&mut cmd).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn report(capture: &str) -> String {
    let (code, page, err) = run(&["report", capture, "--key", KEY, "-o", "-"]);
    assert_eq!(code, 0, "{capture}: {err}");
    page
}

/// The JSON of the page's data block.
fn data_block(page: &str) -> Value {
    let tag = r#"<script id="report-data" type="application/json">"#;
    let start = page.find(tag).expect("data block") + tag.len();
    let end = start + page[start..].find("</script>").expect("end of data block");
    serde_json::from_str(&page[start..end]).expect("data block is JSON")
}

fn jsonl(capture: &str) -> Vec<Value> {
    let (code, out, err) = run(&["analyze", capture, "--key", KEY, "--format", "jsonl"]);
    assert_eq!(code, 0, "{capture}: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn report_records_are_the_jsonl_records() {
    for capture in CAPTURES {
        let data = data_block(&report(capture));
        let records = jsonl(capture);
        let of = |kind: &str| -> Vec<Value> {
            records
                .iter()
                .filter(|r| r["kind"] == kind)
                .map(|r| {
                    let mut r = r.clone();
                    r.as_object_mut().unwrap().remove("kind");
                    r
                })
                .collect()
        };
        assert_eq!(
            data["messages"].as_array().unwrap(),
            &of("message"),
            "{capture}: messages"
        );
        assert_eq!(
            data["transactions"].as_array().unwrap(),
            &of("transaction"),
            "{capture}: transactions"
        );
        let findings: Vec<Value> = data["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let mut f = f.clone();
                let o = f.as_object_mut().unwrap();
                o.remove("link");
                o.remove("arrow");
                f
            })
            .collect();
        assert_eq!(findings, of("finding"), "{capture}: findings");
        assert_eq!(data["summary"], of("summary")[0], "{capture}: summary");
        // Every message is drawn on exactly one ladder.
        let mut drawn: Vec<u64> = data["links"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| {
                l["drawn"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap())
            })
            .collect();
        drawn.sort_unstable();
        let want: Vec<u64> = (1..=of("message").len() as u64).collect();
        assert_eq!(drawn, want, "{capture}: drawn messages");
        assert_eq!(
            data["header"]["messages"].as_u64().unwrap(),
            want.len() as u64
        );
    }
}

#[test]
fn report_data_match_golden_files() {
    let bless = std::env::var_os("ECR_SNIFF_BLESS").is_some();
    let dir = root().join("tests/golden/report");
    let mut failures = vec![];
    for capture in CAPTURES {
        let data = data_block(&report(capture));
        let text = serde_json::to_string_pretty(&data).unwrap() + "\n";
        let name = capture.rsplit('/').next().unwrap();
        let golden = dir.join(format!("{name}.json"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&golden, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(g) if g == text => {}
            Ok(g) => {
                let line = g
                    .lines()
                    .zip(text.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                failures.push(format!(
                    "{capture}: differs from {} at line {}:\n  expected: {}\n  got:      {}",
                    golden.display(),
                    line + 1,
                    g.lines().nth(line).unwrap_or("<end>"),
                    text.lines().nth(line).unwrap_or("<end>")
                ));
            }
            Err(e) => failures.push(format!("{}: {e} (bless it)", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn report_shows_timing_rules_and_findings_where_they_happen() {
    // The late ack (1211 ms) is a bracket on the USB link, its finding on the ack.
    let d = data_block(&report("captures/usb/usbmon-ack-timeout.pcap"));
    let rules = d["links"][0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["kind"], "ack-late");
    assert_eq!(rules[0]["message"], 2);
    assert!(rules[0]["ms"].as_f64().unwrap() > 1000.0);
    let f = d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "ack-timeout")
        .unwrap();
    assert_eq!(f["arrow"], 2);
    // A 501 ms gap between fragments is drawn; a 499 ms one is not.
    let d = data_block(&report("captures/usb/usbmon-fragment-gap-501ms.pcap"));
    let rules = d["links"][0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["kind"], "fragment-gap");
    assert!((rules[0]["ms"].as_f64().unwrap() - 501.0).abs() < 0.5);
    let d = data_block(&report("captures/usb/usbmon-fragment-gap-499ms.pcap"));
    assert!(d["links"][0]["rules"].as_array().unwrap().is_empty());
    // Two USB devices are two ladders.
    let d = data_block(&report("captures/usb/usbmon-two-devices.pcap"));
    assert_eq!(d["links"].as_array().unwrap().len(), 2);
}

#[test]
fn report_names_keys_by_number_only() {
    let other = "a1b2c3d4e5f6a7b8";
    let (code, page, err) = run(&[
        "report",
        "captures/http-envelope-encrypted-keepalive.pcap",
        "--key",
        other,
        "--key",
        KEY,
        "-o",
        "-",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !page.contains(KEY) && !page.contains(other),
        "a key is in the report"
    );
    let d = data_block(&page);
    assert_eq!(d["header"]["keys_given"], 2);
    let used = d["header"]["keys_used"].as_array().unwrap();
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0]["index"], 2);
    assert!(page.contains("key #2 ("), "header names the key by number");
}

#[test]
fn report_writes_a_file_and_explains_bad_input() {
    let dir = std::env::temp_dir().join(format!("ecr-report-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("r.html");
    let (code, _, err) = run(&[
        "report",
        "captures/tcp-frames-ack-timeout.pcap",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wrote") && err.contains("messages"), "{err}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    // Self-contained: no external resources.
    for bad in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!page.contains(bad), "external resource {bad}");
    }
    let (code, _, err) = run(&[
        "report",
        "captures/no-such.pcap",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such.pcap"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The message number in the `msg` column of a ladder line, if it has one.
fn arrow_number(line: &str) -> Option<u64> {
    let col: String = line.chars().skip(23).take(5).collect();
    col.trim().strip_prefix('#')?.parse().ok()
}

#[test]
fn ladder_has_one_line_per_message_within_100_columns() {
    for capture in CAPTURES {
        let (code, out, err) = run(&[
            "analyze", capture, "--key", KEY, "--format", "ladder", "--color", "never",
        ]);
        assert_eq!(code, 0, "{capture}: {err}");
        assert!(
            !out.contains('\u{1b}'),
            "{capture}: colour with --color never"
        );
        for line in out.lines() {
            assert!(line.chars().count() <= 100, "{capture}: too wide: {line}");
        }
        let records = jsonl(capture);
        let messages: Vec<u64> = records
            .iter()
            .filter(|r| r["kind"] == "message")
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        let mut numbered: Vec<u64> = out.lines().filter_map(arrow_number).collect();
        numbered.sort_unstable();
        assert_eq!(
            numbered, messages,
            "{capture}: one arrow line per message\n{out}"
        );
        // Every arrow line has its lanes and an arrowhead pointing the right way.
        for r in records.iter().filter(|r| r["kind"] == "message") {
            let n = r["index"].as_u64().unwrap();
            let line = out.lines().find(|l| arrow_number(l) == Some(n)).unwrap();
            let head = if r["direction"] == "ecr-to-pos" {
                "▶│"
            } else {
                "│◀"
            };
            assert!(line.contains(head), "{capture}: message {n}: {line}");
        }
        // Every finding is shown, with its code.
        for f in records.iter().filter(|r| r["kind"] == "finding") {
            let code = f["code"].as_str().unwrap();
            assert!(
                out.contains(&format!("! {} {code}", f["severity"].as_str().unwrap())),
                "{capture}: {code}"
            );
        }
    }
}

#[test]
fn ladder_draws_rules_fragments_and_idle_time() {
    let (_, out, _) = run(&[
        "analyze",
        "captures/usb/usbmon-ack-timeout.pcap",
        "--format",
        "ladder",
        "--color",
        "never",
    ]);
    let late = out.lines().find(|l| arrow_number(l) == Some(2)).unwrap();
    assert!(late.contains("late 1211 ms > 1000"), "{late}");
    assert!(late.contains("│◀") && late.contains("ack ref 4"), "{late}");
    let (_, out, _) = run(&[
        "analyze",
        "captures/usb/usbmon-fragment-gap-501ms.pcap",
        "--format",
        "ladder",
        "--color",
        "never",
    ]);
    assert!(out.contains("frag 1/2"), "{out}");
    assert!(
        out.contains("frag 2/2") && out.contains("gap 501 ms > 500"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "analyze",
        "captures/http-slow-terminal.pcap",
        "--key",
        KEY,
        "--format",
        "ladder",
        "--color",
        "never",
    ]);
    assert!(
        out.contains(" idle"),
        "long waits are compressed and marked:\n{out}"
    );
    assert!(
        out.contains("== HTTP  ECR 127.0.0.1  <->  POS 127.0.0.1:9001"),
        "{out}"
    );
}

#[test]
fn ladder_colours_only_when_asked() {
    let (_, out, _) = run(&[
        "analyze",
        "captures/http-digest-mismatch.pcap",
        "--key",
        KEY,
        "--format",
        "ladder",
        "--color",
        "always",
    ]);
    assert!(
        out.contains("\u{1b}[1;31m! error digest-mismatch\u{1b}[0m")
            || out.contains("\u{1b}[33m! warning"),
        "{out:?}"
    );
    // Piped (not a terminal), auto means no colour.
    let (_, out, _) = run(&[
        "analyze",
        "captures/http-digest-mismatch.pcap",
        "--format",
        "ladder",
    ]);
    assert!(!out.contains('\u{1b}'));
}

#[test]
fn findings_are_marked_on_messages_of_their_own_file() {
    // Packet numbers restart in each file: a finding of packet 2 of the second file
    // must not land on packet 2 of the first.
    let (code, page, err) = run(&[
        "report",
        "captures/emu/clean-serial-plain.pcapng",
        "captures/emu/fault-delay-ack-serial.pcapng",
        "captures/emu/fault-split-serial.pcapng",
        "--key",
        KEY,
        "-o",
        "-",
    ]);
    assert_eq!(code, 0, "{err}");
    let d = data_block(&page);
    let messages = d["messages"].as_array().unwrap();
    let by_index = |n: u64| messages.iter().find(|m| m["index"] == n).unwrap();
    let mut placed = 0;
    for f in d["findings"].as_array().unwrap() {
        if let Some(n) = f["arrow"].as_u64() {
            let m = by_index(n);
            let dt = (m["ts"].as_f64().unwrap() - f["ts"].as_f64().unwrap()).abs();
            assert!(dt < 2.0, "finding {f} marked on message {n} {dt} s away");
            placed += 1;
        }
    }
    assert!(placed >= 3, "{placed}");
    let ack = d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "ack-timeout")
        .unwrap();
    let m = by_index(ack["arrow"].as_u64().unwrap());
    assert!(m["answer_ms"].as_f64().unwrap() > 1000.0, "{m}");
    // One link, with the idle stretches between the files.
    assert_eq!(d["links"].as_array().unwrap().len(), 1);
}

#[test]
fn ladder_keeps_a_finding_before_its_message_on_the_same_link() {
    // decode: no packets, no times; the unexpected-ack finding comes first and
    // must be drawn on the ladder of the ack from the terminal.
    let (code, out, err) = run(&[
        "decode",
        "2f6e012005000b00002f6e",
        "--from",
        "pos",
        "--format",
        "ladder",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("== SERIAL").count(), 1, "{out}");
    assert!(out.contains("✕ unexpected-ack"), "{out}");
    let ack = out.lines().find(|l| arrow_number(l) == Some(1)).unwrap();
    assert!(ack.contains("│◀") && ack.contains("ack ref 5"), "{ack}");
}

#[test]
fn readme_ladder_example_is_real_output() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("$ ecr-sniff analyze captures/emu/fault-delay-ack-serial.pcapng")
        .expect("README shows a ladder");
    let block = &readme[start..];
    let block = &block[..block.find("\n```").unwrap()];
    let (command, shown) = block.split_once('\n').unwrap();
    let args: Vec<&str> = command.split_whitespace().skip(2).collect();
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        shown.trim_end(),
        out.trim_end(),
        "README's ladder differs from `{command}`"
    );
}

fn run_tz(tz: &str, args: &[&str]) -> (i32, String, String) {
    run_with(args, |c| c.env("TZ", tz))
}

/// The ladder shows local time with the offset in its column head, or UTC with
/// `--utc`, as the text output does (http-slow-terminal: the payment at 12:41:33 UTC).
#[test]
fn ladder_times_are_local_unless_utc() {
    let cap = "captures/http-slow-terminal.pcap";
    let args = ["analyze", cap, "--key", KEY, "--format", "ladder"];
    let (code, local, err) = run_tz("Asia/Hong_Kong", &args);
    assert_eq!(code, 0, "{err}");
    assert!(local.contains("local +08:00"), "{local}");
    assert!(local.contains("20:41:33.501"), "{local}");
    let mut utc_args = args.to_vec();
    utc_args.push("--utc");
    let (code, utc, err) = run_tz("Asia/Hong_Kong", &utc_args);
    assert_eq!(code, 0, "{err}");
    assert!(utc.contains("time (UTC)"), "{utc}");
    assert!(utc.contains("12:41:33.501"), "{utc}");
    assert!(!utc.contains("20:41:33"), "{utc}");
}

/// The report's times follow the same clock: each full time carries its zone.
#[test]
fn report_times_are_local_unless_utc() {
    let cap = "captures/http-slow-terminal.pcap";
    let (code, page, err) = run_tz("Asia/Hong_Kong", &["report", cap, "--key", KEY, "-o", "-"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains("2026-11-26 20:41:33.501881 +08:00"),
        "no local time in the page"
    );
    let (code, page, err) = run_tz(
        "Asia/Hong_Kong",
        &["report", cap, "--key", KEY, "--utc", "-o", "-"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains("2026-11-26 12:41:33.501881 UTC"),
        "no UTC time in the page"
    );
    assert!(!page.contains("+08:00"), "local time in a --utc page");
}

/// `report --tls-keylog` decrypts HTTPS like `analyze` does (a curl TLS 1.3 session of
/// captures/tls/, the terminal on port 29001): the same message and transaction counts,
/// and none without the key log.
#[test]
fn report_decrypts_https_with_a_key_log() {
    let name = "captures/tls/tls13-aes128-gcm";
    let pcap = format!("{name}.pcap");
    let keylog = format!("{name}.keylog");
    let common = [
        "--http-port",
        "29001",
        "--key",
        KEY,
        "--tls-keylog",
        &keylog,
    ];
    let mut args = vec!["analyze", pcap.as_str(), "--format", "jsonl"];
    args.extend(common);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let (msgs, txs) = (
        summary["messages"].as_u64().unwrap(),
        summary["transactions"].as_u64().unwrap(),
    );
    assert!(msgs >= 4 && txs >= 2, "{summary}");
    let mut args = vec!["report", pcap.as_str(), "-o", "-"];
    args.extend(common);
    let (code, page, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains(&format!(r#"<span id="n-messages">{msgs}</span>"#)),
        "messages not decrypted"
    );
    assert!(
        page.contains(&format!(r#"<span id="n-transactions">{txs}</span>"#)),
        "no transactions"
    );
    let (code, page, err) = run(&[
        "report",
        &pcap,
        "--http-port",
        "29001",
        "--key",
        KEY,
        "-o",
        "-",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains(r#"<span id="n-messages">0</span>"#),
        "decrypted without a key log"
    );
}
