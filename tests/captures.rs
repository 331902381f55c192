//! End-to-end tests of `ecr-sniff analyze` over the sample captures in `captures/`.
//!
//! Two independent expectations are checked for every capture:
//! - `captures/manifest.json`, written by the author of the capture generator from
//!   what each scenario does (finding codes with counts, func_types, transactions,
//!   and the `no-key` count without a key);
//! - the golden output `captures/expected/NAME.jsonl`, the full `--format jsonl`
//!   output, so that any change of a decoded field shows up in review. Regenerate on
//!   purpose with `ECR_SNIFF_BLESS=1 cargo test --test captures`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("captures/manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["captures"].as_array().unwrap().clone()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
        .args(args)
        .current_dir(root())
        .env_remove("ECR_POS_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn analyze(entry: &Value, with_keys: bool) -> (String, Value) {
    let file = format!("captures/{}", entry["file"].as_str().unwrap());
    let mut args = vec![
        "analyze".to_string(),
        file,
        "--format".into(),
        "jsonl".into(),
    ];
    if with_keys {
        for k in entry["keys"].as_array().unwrap() {
            args.push("--key".into());
            args.push(k.as_str().unwrap().into());
        }
    }
    if let Some(p) = entry.get("port") {
        args.push("--tcp-port".into());
        args.push(p.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(&refs);
    assert_eq!(code, 0, "{refs:?}: {err}");
    let last = out.lines().last().unwrap();
    let summary: Value = serde_json::from_str(last).unwrap();
    assert_eq!(summary["kind"], "summary");
    (out, summary)
}

#[test]
fn every_capture_matches_its_manifest_expectations() {
    let mut failures = vec![];
    for entry in manifest() {
        let name = entry["file"].as_str().unwrap();
        let (_, summary) = analyze(&entry, true);
        let expect = &entry["expect"];
        for field in ["findings", "func_types", "transactions"] {
            if let Some(e) = expect.get(field) {
                if *e != summary[field] {
                    failures.push(format!(
                        "{name}: {field}: expected {e}, got {}",
                        summary[field]
                    ));
                }
            }
        }
        if let Some(n) = entry["expect_without_key"].get("no-key") {
            let (_, s) = analyze(&entry, false);
            let got = s["findings"]
                .get("no-key")
                .cloned()
                .unwrap_or(Value::from(0));
            if *n != got {
                failures.push(format!(
                    "{name}: no-key without key: expected {n}, got {got}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_capture_matches_its_golden_output() {
    let bless = std::env::var_os("ECR_SNIFF_BLESS").is_some();
    let dir = root().join("captures/expected");
    let mut failures = vec![];
    for entry in manifest() {
        let name = entry["file"].as_str().unwrap();
        let (out, _) = analyze(&entry, true);
        let golden = dir.join(format!("{name}.jsonl"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&golden, &out).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(g) if g == out => {}
            Ok(g) => {
                let first = g
                    .lines()
                    .zip(out.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(g.lines().count().min(out.lines().count()));
                failures.push(format!(
                    "{name}: output differs from {} at line {}:\n  expected: {}\n  got:      {}",
                    golden.display(),
                    first + 1,
                    g.lines().nth(first).unwrap_or("<end>"),
                    out.lines().nth(first).unwrap_or("<end>")
                ));
            }
            Err(e) => failures.push(format!("{}: {e}", golden.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(regenerate on purpose with ECR_SNIFF_BLESS=1 cargo test --test captures)",
        failures.join("\n")
    );
}

#[test]
fn jsonl_records_have_the_documented_shapes() {
    let entry = manifest()
        .into_iter()
        .find(|e| e["file"] == "http-digest-mismatch.pcap")
        .unwrap();
    let (out, _) = analyze(&entry, true);
    let mut kinds = std::collections::BTreeSet::new();
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let kind = v["kind"].as_str().unwrap().to_string();
        let required: &[&str] = match kind.as_str() {
            "message" => &[
                "ts",
                "transport",
                "src",
                "dst",
                "direction",
                "role",
                "dialect",
                "func_type",
                "ref",
                "content",
                "response",
                "digest",
            ],
            "transaction" => &[
                "ts",
                "transport",
                "func_type",
                "latency_ms",
                "respcd",
                "out_trade_no",
            ],
            "finding" => &[
                "ts",
                "code",
                "severity",
                "transport",
                "src",
                "dst",
                "detail",
            ],
            "summary" => &["packets", "bytes", "messages", "transactions", "findings"],
            other => panic!("unknown kind {other}"),
        };
        for f in required {
            assert!(v.get(f).is_some(), "{kind} record lacks {f}: {line}");
        }
        if kind == "message" {
            let d = v["digest"].as_str().unwrap();
            assert!(["ok", "mismatch", "absent", "unverified"].contains(&d));
            assert!(["ecr-to-pos", "pos-to-ecr"].contains(&v["direction"].as_str().unwrap()));
        }
        kinds.insert(kind);
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    // The key never appears in any output.
    for k in entry["keys"].as_array().unwrap() {
        assert!(!out.contains(k.as_str().unwrap()));
    }
}

#[test]
fn check_passes_against_the_recorded_expectations() {
    let files: Vec<String> = manifest()
        .iter()
        .filter(|e| e["keys"][0] == "f46b1f08bec1f39104792cc79ec9aacd" && e.get("port").is_none())
        .map(|e| format!("captures/{}", e["file"].as_str().unwrap()))
        .collect();
    let mut args = vec![
        "check",
        "--expect",
        "captures/expected.json",
        "--key",
        "f46b1f08bec1f39104792cc79ec9aacd",
    ];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "checked {} capture(s): {} ok, 0 failed",
            files.len(),
            files.len()
        )),
        "{out}"
    );
    assert!(Path::new(&root().join("captures/expected.json")).exists());
    // With one thread, several captures at once (-j 3), and the default (the
    // machine's cores): the same lines in the same order.
    for jobs in [Some("1"), Some("3")] {
        let mut a = args.clone();
        if let Some(j) = jobs {
            a.extend(["-j", j]);
        }
        let (code_j, out_j, err_j) = run(&a);
        assert_eq!(code_j, 0, "-j {jobs:?}: {out_j}\n{err_j}");
        assert_eq!(out_j, out, "-j {jobs:?}");
    }
}
