//! From a fresh machine to an answer (issue 17): the build without live capture,
//! standard input, completions and the man page, colour conventions, the `check`
//! example of `--help`, the protocol document's anchors and the Wireshark install.

mod common;

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

/// A test part that cannot run here says SKIP; under `ECR_SNIFF_NO_SKIP=1` (CI, which
/// installs every tool) a skip is a failure, so that it is never counted as a pass.
fn skip(what: &str) {
    if std::env::var_os("ECR_SNIFF_NO_SKIP").is_some() {
        panic!("SKIP not allowed (ECR_SNIFF_NO_SKIP is set): {what}");
    }
    println!("SKIP {what}");
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
        None => skip("gzip on stdin: no gzip program"),
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
        skip("bash completion load: no bash");
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
        _ => skip("rendering with man -l: man is not installed"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Every `rule:` names an anchor of docs/protocol.md, and the document's own links
/// resolve.
#[test]
fn every_rule_anchor_exists_in_the_protocol_doc() {
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    let ids: Vec<&str> = doc
        .split("<a id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    for want in [
        "d1",
        "d2",
        "d3",
        "d4",
        "d5",
        "d6",
        "d7",
        "d8",
        "d9",
        "spec-10-7",
    ] {
        assert!(ids.contains(&want), "#{want} missing");
    }
    let out = run(&["codes"]);
    assert_eq!(out.status.code(), Some(0));
    let table = text(&out.stdout);
    let mut rows = 0;
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        rows += 1;
        let link = line
            .split("(docs/protocol.md#")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_else(|| panic!("no link in {line}"));
        assert!(
            ids.contains(&link),
            "#{link} of {line} is not in docs/protocol.md"
        );
    }
    assert!(rows >= 30, "{table}");
    for link in doc.split("](#").skip(1) {
        let id = link.split(')').next().unwrap();
        assert!(
            ids.contains(&id),
            "docs/protocol.md links to #{id}, which is missing"
        );
    }
    // The text output's rule lines carry the link too.
    let out = run(&[
        "analyze",
        "captures/http-digest-mismatch-double-quotes.pcap",
        "--key",
        "a1b2c3d4e5f6a7b8",
        "--utc",
    ]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("numbers as sent (docs/protocol.md#spec-4)"),
        "{shown}"
    );
}

/// Text times are local with the offset in force at that moment (TZ set explicitly),
/// `--utc` switches to UTC, and jsonl has `ts` plus `time` in ISO 8601 UTC.
#[test]
fn text_times_are_local_with_offset_and_utc_on_request() {
    let first_message = |tz: &str, extra: &[&str]| -> String {
        let mut args = vec!["analyze", SLOW];
        args.extend_from_slice(extra);
        let out = bin().args(&args).env("TZ", tz).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .find(|l| l.starts_with("Message 1 "))
            .unwrap_or_default()
            .to_string()
    };
    // The capture is from 2026-11-26 12:41:33.501881 UTC (winter time in Berlin).
    assert!(
        first_message("Europe/Berlin", &[]).contains("2026-11-26 13:41:33.501881 +01:00"),
        "{}",
        first_message("Europe/Berlin", &[])
    );
    assert!(first_message("America/New_York", &[]).contains("2026-11-26 07:41:33.501881 -05:00"));
    // A POSIX TZ string needs no zone database.
    assert!(first_message("XST-05:30", &[]).contains("2026-11-26 18:11:33.501881 +05:30"));
    assert!(first_message("Europe/Berlin", &["--utc"]).contains("2026-11-26 12:41:33.501881 UTC"));
    // jsonl does not depend on the zone.
    let jsonl = |tz: &str| {
        let out = bin()
            .args(["analyze", SLOW, "--format", "jsonl"])
            .env("TZ", tz)
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let berlin = jsonl("Europe/Berlin");
    assert_eq!(berlin, jsonl("UTC"));
    let first: serde_json::Value = serde_json::from_str(berlin.lines().next().unwrap()).unwrap();
    assert_eq!(first["ts"].as_f64(), Some(1_795_696_893.501_881_1));
    assert_eq!(first["time"], "2026-11-26T12:41:33.501881Z");
}

/// Daylight saving: the offset is the one in force at each timestamp, not today's.
#[test]
fn summer_time_offset_comes_from_the_timestamp() {
    // The sample capture moved back 140 days, to July (classic little-endian pcap:
    // a 24-byte file header, then 16-byte record headers starting with ts_sec).
    let mut pcap = std::fs::read(root().join(SLOW)).unwrap();
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let sec = u32::from_le_bytes(pcap[at..at + 4].try_into().unwrap()) - 140 * 86_400;
        pcap[at..at + 4].copy_from_slice(&sec.to_le_bytes());
        let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
    }
    assert_eq!(at, pcap.len());
    for (tz, want) in [
        ("Europe/Berlin", "2026-07-09 14:41:33.501881 +02:00"),
        (
            "CET-1CEST,M3.5.0,M10.5.0/3",
            "2026-07-09 14:41:33.501881 +02:00",
        ),
        ("UTC", "2026-07-09 12:41:33.501881 +00:00"),
    ] {
        let mut child = bin()
            .args(["analyze", "-"])
            .env("TZ", tz)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&pcap).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            text(&out.stdout).contains(want),
            "{tz}: {}",
            text(&out.stdout)
        );
    }
}

/// The `check` example of `--help` and README, run exactly as written by a shell in
/// the repository root: every sample capture has an expectation, and all pass.
#[test]
fn check_example_from_help_passes_as_written() {
    const EXAMPLE: &str = "ECR_POS_KEY=f46b1f08bec1f39104792cc79ec9aacd ecr-sniff check captures/*.pcap --expect captures/expected.json";
    // Help text is wrapped to the terminal: compare with whitespace collapsed.
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let help = flat(&text(&run(&["--help"]).stdout));
    assert!(help.contains(EXAMPLE), "--help lost the example:\n{help}");
    let check_help = flat(&text(&run(&["check", "--help"]).stdout));
    assert!(check_help.contains(EXAMPLE), "{check_help}");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains(EXAMPLE), "README lost the example");
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_ecr-sniff"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(EXAMPLE)
        .current_dir(root())
        .env("PATH", path)
        .env_remove("ECR_POS_KEY")
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    let pcaps = std::fs::read_dir(root().join("captures"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".pcap"))
        })
        .count();
    assert!(pcaps >= 45, "{pcaps}");
    assert!(
        shown.contains(&format!("checked {pcaps} capture(s): {pcaps} ok, 0 failed")),
        "{shown}"
    );
}

/// `ecr-sniff wireshark install` puts the dissector where tshark finds it without
/// `-X lua_script:`; `uninstall` takes it away again.
#[test]
fn wireshark_install_is_found_by_tshark() {
    let home = std::env::temp_dir().join(format!("fresh-wshome-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let with_home = |c: &mut Command| {
        c.env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("WIRESHARK_CONFIG_DIR")
            .env_remove("WIRESHARK_PLUGIN_DIR");
    };
    let tshark_ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tshark_ok {
        skip("wireshark install with tshark: tshark is not installed");
        // Still: the fallback folder under HOME.
        let mut c = bin();
        with_home(&mut c);
        let out = c.args(["wireshark", "install"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(home.join(".local/lib/wireshark/plugins/ecr.lua").is_file());
        let _ = std::fs::remove_dir_all(&home);
        return;
    }
    let protocols = || {
        let mut c = Command::new("tshark");
        with_home(&mut c);
        let out = c.args(["-G", "protocols"]).output().unwrap();
        text(&out.stdout)
            .lines()
            .any(|l| l.split('\t').nth(2) == Some("ecr"))
    };
    assert!(
        !protocols(),
        "ecr is loaded before installing: the test HOME leaks"
    );
    let mut c = bin();
    with_home(&mut c);
    let out = c.args(["wireshark", "install"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let installed = home.join(".local/lib/wireshark/plugins/ecr.lua");
    assert!(said.contains(&installed.display().to_string()), "{said}");
    assert_eq!(
        std::fs::read_to_string(&installed).unwrap(),
        std::fs::read_to_string(root().join("dissector/ecr.lua")).unwrap()
    );
    assert!(
        protocols(),
        "tshark -G protocols does not list ecr after install"
    );
    // It decodes a sample capture without -X lua_script:.
    let mut c = Command::new("tshark");
    with_home(&mut c);
    let out = c
        .args(["-r", "captures/tcp-json-values.pcap", "-Y", "ecr"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).lines().count() >= 4,
        "{}",
        text(&out.stdout)
    );
    let mut c = bin();
    with_home(&mut c);
    let path = text(&c.args(["wireshark", "path"]).output().unwrap().stdout);
    assert_eq!(path.trim(), installed.display().to_string());
    let mut c = bin();
    with_home(&mut c);
    assert!(c
        .args(["wireshark", "uninstall"])
        .status()
        .unwrap()
        .success());
    assert!(!installed.exists());
    let _ = std::fs::remove_dir_all(&home);
}

/// README's Quick start: the first command installs and runs (its output is printed
/// below it, exactly), the second is CI's test command.
#[test]
fn readme_quick_start_matches_ci_and_real_output() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let blocks: Vec<&str> = quick
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| b.split_once('\n').map_or("", |(_, body)| body))
        .collect();
    let first = blocks[0].trim();
    assert!(first.contains("apt-get install -y libpcap-dev"), "{first}");
    assert!(first.contains("cargo install --path . --locked"), "{first}");
    let test_cmd = blocks[1].trim();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    // As it is, or in a subshell, which makes a failure of any part stop CI (`set -e`
    // does not stop at a failure inside an `&&` list).
    let in_subshell = format!("({test_cmd})");
    assert!(
        ci.lines()
            .any(|l| l.trim() == test_cmd || l.trim() == in_subshell),
        ".ci/run does not run README's test command `{test_cmd}`"
    );
    // The printed output is the real output of the command (run with TZ=Europe/Berlin).
    let analyze = first.rsplit(" && ").next().unwrap();
    let args: Vec<&str> = analyze.split_whitespace().skip(1).collect();
    let out = bin()
        .args(&args)
        .env("TZ", "Europe/Berlin")
        .output()
        .unwrap();
    let shown = blocks
        .iter()
        .find(|b| b.trim_start().starts_with("Message 1 "))
        .expect("README shows the first command's output");
    assert_eq!(text(&out.stdout).trim(), shown.trim());
}

/// `tcpdump -w - | ecr-sniff analyze -`: records show while the pipe is still open,
/// and Ctrl-C (which the shell sends to the whole pipeline) does not end the analysis
/// early: it ends with the summary when the pipe closes.
#[test]
fn stdin_streams_records_and_survives_ctrl_c_until_the_pipe_closes() {
    use std::io::{BufRead, Write};
    let mut child = bin()
        .args(["analyze", "-", "--format", "jsonl"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&std::fs::read(root().join(SLOW)).unwrap())
        .unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first message arrives while stdin is still open.
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("no record while the pipe is open");
    assert!(first.contains("\"kind\":\"message\""), "{first}");
    // Ctrl-C: still running.
    common::signal(&child, "INT");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "ended by the first Ctrl-C"
    );
    // The pipe closes (tcpdump ended): the rest and the summary, exit 0.
    drop(stdin);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        rest.last()
            .is_some_and(|l| l.contains("\"kind\":\"summary\"")),
        "{rest:?}"
    );
}
