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

fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = bin()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

const SLOW: &str = "captures/http-slow-terminal.pcap";
const SLOW_KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

#[test]
fn dash_reads_the_capture_from_stdin_plain_and_gzip() {
    let file = run(&["analyze", SLOW, "--key", SLOW_KEY, "--format", "jsonl"]);
    assert_eq!(file.status.code(), Some(0), "{}", text(&file.stderr));
    let bytes = std::fs::read(root().join(SLOW)).unwrap();
    // gzip as made by the system's gzip, when present.
    let gz = Command::new("gzip")
        .arg("-c")
        .arg(root().join(SLOW))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout);
    let mut inputs = vec![("plain", bytes)];
    match gz {
        Some(g) => inputs.push(("gzip", g)),
        None => println!("SKIP gzip on stdin: no gzip program"),
    }
    for (what, input) in inputs {
        let piped = run_stdin(
            &["analyze", "-", "--key", SLOW_KEY, "--format", "jsonl"],
            &input,
        );
        assert_eq!(
            piped.status.code(),
            Some(0),
            "{what}: {}",
            text(&piped.stderr)
        );
        // The same records; only the summary's file list names `-`.
        let strip = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.contains("\"kind\":\"summary\""))
                .map(str::to_string)
                .collect()
        };
        let (a, b) = (text(&file.stdout), text(&piped.stdout));
        assert!(strip(&a).len() >= 4, "{a}");
        assert_eq!(strip(&a), strip(&b), "{what}");
        assert!(b.contains(r#""files":["-"]"#), "{b}");
    }
    // check and export read `-` too.
    let input = std::fs::read(root().join(SLOW)).unwrap();
    let checked = run_stdin(&["check", "-", "--key", SLOW_KEY], &input);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stderr));
    let out = std::env::temp_dir().join(format!("fresh-export-{}.pcapng", std::process::id()));
    let exported = run_stdin(&["export", "-", out.to_str().unwrap()], &input);
    assert_eq!(
        exported.status.code(),
        Some(0),
        "{}",
        text(&exported.stderr)
    );
    let back = run(&["analyze", out.to_str().unwrap(), "--format", "jsonl"]);
    assert!(text(&back.stdout).contains("\"kind\":\"message\""));
    let _ = std::fs::remove_file(out);
}

#[test]
fn dash_with_garbage_or_twice_is_a_one_line_error() {
    let out = run_stdin(&["analyze", "-"], b"hello\n");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(
        err.trim(),
        "ecr-sniff: error: standard input (-): not a pcap or pcapng file (first bytes: 68 65 6c 6c 6f 0a)"
    );
    let out = run_stdin(&["analyze", "-", "-"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("only once"));
}

#[test]
fn completions_for_every_shell() {
    for (shell, needle) in [
        ("bash", "complete -F _ecr__sniff"),
        ("zsh", "#compdef ecr-sniff"),
        ("fish", "complete -c ecr-sniff"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[ecr-sniff]"),
    ] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(needle), "{shell}: {needle}");
        assert!(
            script.contains("analyze") && script.contains("--key"),
            "{shell}"
        );
    }
    // The bash script loads in bash and completes subcommands.
    let Ok(probe) = Command::new("bash").arg("--version").output() else {
        println!("SKIP bash completion load: no bash");
        return;
    };
    assert!(probe.status.success());
    let script = std::env::temp_dir().join(format!("fresh-compl-{}.bash", std::process::id()));
    std::fs::write(&script, run(&["completions", "bash"]).stdout).unwrap();
    let check = format!(
        "source {}; COMP_WORDS=(ecr-sniff an); COMP_CWORD=1; _ecr__sniff ecr-sniff an ecr-sniff; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").arg("-c").arg(check).output().unwrap();
    let _ = std::fs::remove_file(&script);
    assert_eq!(text(&out.stdout).trim(), "analyze", "{}", text(&out.stderr));
}

#[test]
fn man_page_renders_and_writes_one_page_per_command() {
    let out = run(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(page.contains(".TH ecr-sniff 1"), "{page}");
    assert!(page.contains("analyze") && page.contains("completions"));
    let dir = std::env::temp_dir().join(format!("fresh-man-{}", std::process::id()));
    let out = run(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for name in ["ecr-sniff.1", "ecr-sniff-analyze.1", "ecr-sniff-check.1"] {
        assert!(dir.join(name).is_file(), "{name}");
    }
    // Rendered by man(1) where installed.
    match Command::new("man")
        .args(["-l"])
        .arg(dir.join("ecr-sniff-analyze.1"))
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .output()
    {
        Ok(o) if o.status.success() => {
            let shown = text(&o.stdout);
            assert!(shown.contains("ecr-sniff-analyze"), "{shown}");
            assert!(shown.contains("--key"), "{shown}");
        }
        _ => println!("SKIP rendering with man -l: man is not installed"),
    }
    let _ = std::fs::remove_dir_all(dir);
}
