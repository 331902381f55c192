//! From a fresh machine to an answer (issue 17): the build without live capture,
//! standard input, completions and the man page, colour conventions, the `check`
//! example of `--help`, the protocol document's anchors and the Wireshark install.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"));
    c.current_dir(root()).env_remove("ECR_POS_KEY");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Without the feature `live`, every way into live capture says how to get it.
#[cfg(not(feature = "live"))]
#[test]
fn without_live_feature_live_capture_explains_how_to_get_it() {
    for args in [
        &["-i", "lo"][..],
        &["live", "-i", "eth0"],
        &["--list-interfaces"],
        &["--key", "f46b1f08bec1f39104792cc79ec9aacd", "-i", "any"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("without live network capture"), "{err}");
        assert!(err.contains("libpcap-dev"), "{err}");
        assert!(err.contains("cargo install --path . --locked"), "{err}");
    }
    // Everything else works in this build.
    let out = run(&[
        "analyze",
        "captures/http-slow-terminal.pcap",
        "--format",
        "jsonl",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// With the feature, `--list-interfaces` is live capture (not the missing-feature error).
#[cfg(feature = "live")]
#[test]
fn with_live_feature_list_interfaces_is_not_refused() {
    let out = run(&["--list-interfaces"]);
    assert!(
        !text(&out.stderr).contains("without live network capture"),
        "{}",
        text(&out.stderr)
    );
}
