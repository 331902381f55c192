//! `export --tls-keylog`: HTTPS messages decrypted with a key log become packets of the
//! serial capture format like any other message, and nothing without the key log.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";
const NAME: &str = "captures/tls/tls13-aes128-gcm";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

fn summary(args: &[&str]) -> Value {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
fn export_decrypts_https_with_a_key_log() {
    let dir = std::env::temp_dir().join(format!("ecr-export-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("https.pcapng");
    let out = out.to_str().unwrap();
    let pcap = format!("{NAME}.pcap");
    let keylog = format!("{NAME}.keylog");
    let https = summary(&[
        "analyze",
        &pcap,
        "--http-port",
        "29001",
        "--key",
        KEY,
        "--tls-keylog",
        &keylog,
        "--format",
        "jsonl",
    ]);
    let msgs = https["messages"].as_u64().unwrap();
    assert!(msgs >= 4, "{https}");

    let (code, _, err) = run(&[
        "export",
        &pcap,
        out,
        "--http-port",
        "29001",
        "--key",
        KEY,
        "--tls-keylog",
        &keylog,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("exported {msgs} message(s)")),
        "{err}"
    );
    let back = summary(&["analyze", out, "--key", KEY, "--format", "jsonl"]);
    for field in ["messages", "transactions", "func_types", "respcd"] {
        assert_eq!(back[field], https[field], "{field}");
    }

    // Without the key log nothing is decrypted, so nothing is exported.
    let (code, _, err) = run(&["export", &pcap, out, "--http-port", "29001", "--key", KEY]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 0 message(s)"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
