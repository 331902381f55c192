//! `analyze -j N`: the output with a helper thread that decodes the bodies and
//! writes the records (`-j 2`, `-j 3`, `-j 8`) is the output of one thread (`-j 1`),
//! byte for byte, in every format, on the sample captures one by one, on all of them
//! in one run, on a generated dense capture (many records, so that the batches and
//! the bounded queues are exercised) and on crafted captures that fill the tables,
//! with the default memory budget and with budgets small enough that the stream
//! budget evicts while steps are deferred. The default (no `-j`) agrees too.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `ecr-sniff ARGS` in the repository, without a key from the environment or
/// colours.
fn command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"));
    cmd.args(args)
        .current_dir(root())
        .env_remove("ECR_POS_KEY")
        .env("NO_COLOR", "1");
    cmd
}

/// Exit code, stdout and stderr of `ecr-sniff ARGS`.
fn run(args: &[String]) -> (i32, Vec<u8>, String) {
    let out = command(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `analyze ARGS --format FORMAT` with `-j 1`, `-j 2`, `-j 3`, `-j 8` and
/// without `-j`, and checks that all agree; returns the `-j 1` output.
fn same_with_any_jobs(args: &[String], format: &str) -> Vec<u8> {
    let with = |jobs: Option<&str>| {
        let mut a: Vec<String> = vec!["analyze".into()];
        a.extend(args.iter().cloned());
        a.extend(["--format".into(), format.into()]);
        if let Some(j) = jobs {
            a.extend(["-j".into(), j.into()]);
        }
        run(&a)
    };
    let (code1, out1, err1) = with(Some("1"));
    assert!(!out1.is_empty(), "{args:?} {format}: no output; {err1}");
    for jobs in [Some("2"), Some("3"), Some("8"), None] {
        let (code, out, err) = with(jobs);
        assert_eq!(code, code1, "{args:?} {format} -j {jobs:?}: {err}");
        assert!(
            out == out1,
            "{args:?} --format {format}: -j {jobs:?} wrote {} bytes, -j 1 wrote {}",
            out.len(),
            out1.len()
        );
        assert_eq!(err, err1, "{args:?} {format} -j {jobs:?}");
    }
    out1
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("captures/manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["captures"].as_array().unwrap().clone()
}

#[test]
fn every_sample_capture_gives_the_same_output_with_more_threads() {
    let mut all_files = vec![];
    let mut all_keys = vec![];
    for entry in manifest() {
        let file = format!("captures/{}", entry["file"].as_str().unwrap());
        let mut args = vec![file.clone()];
        for k in entry["keys"].as_array().unwrap() {
            args.extend(["--key".into(), k.as_str().unwrap().to_string()]);
            all_keys.extend(["--key".to_string(), k.as_str().unwrap().to_string()]);
        }
        if let Some(p) = entry.get("port") {
            args.extend(["--tcp-port".into(), p.to_string()]);
        }
        for format in ["jsonl", "text", "json"] {
            same_with_any_jobs(&args, format);
        }
        all_files.push(file);
    }
    assert!(all_files.len() >= 40, "{} captures", all_files.len());
    // All of them in one run: several files, one analysis.
    all_keys.dedup();
    let mut args = all_files;
    args.extend(all_keys);
    let out = same_with_any_jobs(&args, "jsonl");
    let last = out.split(|&b| b == b'\n').rfind(|l| !l.is_empty()).unwrap();
    let summary: Value = serde_json::from_slice(last).unwrap();
    assert_eq!(summary["kind"], "summary");
    assert!(summary["messages"].as_u64().unwrap() > 100, "{summary}");
}

#[test]
fn a_dense_capture_gives_the_same_output_with_more_threads() {
    let dir = std::env::temp_dir().join(format!("ecr-sniff-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("dense.pcap");
    let keys = dir.join("dense.keys");
    let opts = ecr_emu::dense::DenseOptions {
        size_bytes: 2 << 20,
        terminals: 32,
        ..Default::default()
    };
    let file = std::fs::File::create(&pcap).unwrap();
    let made = ecr_emu::dense::write_dense(std::io::BufWriter::new(file), &opts).unwrap();
    std::fs::write(&keys, ecr_emu::dense::key_file(&opts)).unwrap();
    let path = |p: &Path| p.display().to_string();
    let args = vec![path(&pcap), "--key-file".into(), path(&keys)];
    let out = same_with_any_jobs(&args, "jsonl");
    let records = out.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let messages = records
        .filter(|l| l.starts_with(br#"{"kind":"message""#))
        .count() as u64;
    // Far more records than the batches in flight between the threads.
    assert!(messages >= made.messages, "{messages} < {}", made.messages);
    assert!(messages > 3_000, "{messages}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn crafted_captures_that_fill_the_tables_give_the_same_output() {
    // Evictions are findings, which run every deferred step first; the stream
    // budget's evictions are decided by the first thread from what the deferred
    // steps may still add (see `Deferred` in analyzer.rs).
    let dir = std::env::temp_dir().join(format!("ecr-sniff-jobs-crafted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let captures = [
        (
            "connections",
            // More than the default budget's 4,369 connections.
            ecr_capture::craft::unfinished_connections(5_000),
        ),
        ("payments", ecr_capture::craft::payments(300, 2_000)),
        ("values", ecr_capture::craft::distinct_values(400, 20)),
    ];
    for (name, bytes) in captures {
        let pcap = dir.join(format!("{name}.pcap"));
        std::fs::write(&pcap, bytes).unwrap();
        let args = vec![pcap.display().to_string()];
        let out = same_with_any_jobs(&args, "jsonl");
        assert!(
            out.windows(b"limit-evicted".len())
                .any(|w| w == b"limit-evicted"),
            "{name}: no table was filled"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_stream_budget_evicts_alike_with_a_helper_thread() {
    // Unanswered requests and unfinished messages count in the stream budget;
    // with a small budget it evicts while bodies wait for their decoding.
    let dir = std::env::temp_dir().join(format!("ecr-sniff-jobs-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dense = {
        let opts = ecr_emu::dense::DenseOptions {
            size_bytes: 1 << 20,
            terminals: 8,
            ..Default::default()
        };
        let mut bytes = vec![];
        ecr_emu::dense::write_dense(&mut bytes, &opts).unwrap();
        std::fs::write(dir.join("dense.keys"), ecr_emu::dense::key_file(&opts)).unwrap();
        bytes
    };
    let captures = [
        (
            "pipelined",
            ecr_capture::craft::pipelined_unanswered(1_500, 2_000),
        ),
        (
            "unfinished",
            ecr_capture::craft::unfinished_connections(3_000),
        ),
        ("dense", dense),
    ];
    for (name, bytes) in captures {
        let pcap = dir.join(format!("{name}.pcap"));
        std::fs::write(&pcap, bytes).unwrap();
        // The smallest budget there is (4 MiB).
        let mut args = vec![
            pcap.display().to_string(),
            "--memory-limit".into(),
            "4M".into(),
        ];
        if name == "dense" {
            args.extend([
                "--key-file".into(),
                dir.join("dense.keys").display().to_string(),
            ]);
        }
        let out = same_with_any_jobs(&args, "jsonl");
        let text = String::from_utf8_lossy(&out);
        // The unfinished connections fill the connection table instead; the dense
        // capture is there for its mix of everything at a small budget.
        let evicted = match name {
            "unfinished" => text.contains("limit: connections"),
            "pipelined" => text.contains("limit: stream bytes"),
            _ => true,
        };
        assert!(evicted, "{name}: not evicted as expected");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Without `-j`, `analyze` of a file uses the cores this process may use: with two
/// or more, a helper thread decodes and writes (`ECR_SNIFF_AHEAD_STATS` makes each
/// thread say what it did); reading standard input always uses one thread.
#[test]
fn the_default_is_the_cores() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capture = "captures/http-digest-mismatch-double-quotes.pcap";
    let analyze = |stdin: bool| {
        let mut cmd = command(&["analyze", "--key", "a1b2c3d4e5f6a7b8", "--format", "jsonl"]);
        cmd.env("ECR_SNIFF_AHEAD_STATS", "1");
        if stdin {
            cmd.arg("-")
                .stdin(std::fs::File::open(root().join(capture)).unwrap());
        } else {
            cmd.arg(capture);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (from_file, err) = analyze(false);
    assert_eq!(
        err.contains("two threads:"),
        cores >= 2,
        "{cores} core(s); stderr: {err}"
    );
    let (from_stdin, err) = analyze(true);
    assert!(!err.contains("two threads:"), "{err}");
    // The summary names the file it read ("-" for standard input): the messages,
    // findings and transactions before it are the same.
    let lines = |out: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .filter(|l| !l.contains("\"kind\":\"summary\""))
            .map(str::to_owned)
            .collect()
    };
    assert!(lines(&from_file).len() > 2);
    assert_eq!(lines(&from_file), lines(&from_stdin));
}

/// `check` analyses up to N captures at once; with threads to spare for every
/// capture analysed at once (one capture and `-j 2`, or two and `-j 4`), each
/// capture also gets a helper thread that decodes its bodies. The report is the
/// same.
#[test]
fn check_gets_a_helper_with_threads_to_spare() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one = "captures/http-digest-mismatch-double-quotes.pcap";
    let two = "captures/http-envelope-encrypted-keepalive.pcap";
    let check = |files: &[&str], jobs: Option<&str>| {
        let mut cmd = command(&["check", "--key", "a1b2c3d4e5f6a7b8", "--key"]);
        cmd.env("ECR_SNIFF_AHEAD_STATS", "1")
            .arg("f46b1f08bec1f39104792cc79ec9aacd")
            .args(files);
        if let Some(j) = jobs {
            cmd.args(["-j", j]);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), out.stdout, err.contains("two threads:"))
    };
    for files in [&[one][..], &[one, two][..]] {
        let (code, report, ahead) = check(files, Some("1"));
        assert!(!ahead);
        assert!(!report.is_empty());
        let spare = (2 * files.len()).to_string();
        let cases = [
            (Some("2"), files.len() == 1),
            (Some(spare.as_str()), true),
            (None, cores >= 2 * files.len()),
        ];
        for (jobs, want_ahead) in cases {
            let (c, r, a) = check(files, jobs);
            assert_eq!(a, want_ahead, "{files:?} -j {jobs:?} ({cores} cores)");
            assert_eq!(c, code, "{files:?} -j {jobs:?}");
            assert_eq!(r, report, "{files:?} -j {jobs:?}");
        }
    }
}
