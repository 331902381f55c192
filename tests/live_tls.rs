//! End to end, live HTTPS: `ecr-sniff -i lo --tls-keylog FILE` watches `emulate --tls`
//! answer `send --to https://` (rustls, TLS 1.3), curl (OpenSSL, TLS 1.2) and
//! `openssl s_client` (TLS 1.3 with a KeyUpdate that rustls answers), while
//! the emulator writes the session secrets to FILE (SSLKEYLOGFILE) only as each
//! handshake happens: the tap must follow the growing key log, hold the records
//! that arrive before their secrets and decrypt them when the secrets appear. The
//! records printed live are then compared with the offline analysis of the file the
//! tap saved.
//!
//! Capturing needs root (or CAP_NET_RAW); without it the test says SKIP (and fails
//! under ECR_SNIFF_NO_SKIP=1, which CI sets). A missing curl, openssl or tshark is a
//! SKIP too; `.ci/steps/52-live-tls.sh` installs them and fails on any SKIP.

#![cfg(feature = "live")]

mod common;
use common::line_reader as lines;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-sniff");
/// The key of the spec's envelope-encrypted vector below.
const KEY: &str = "a1b2c3d4e5f6a7b8";
/// A payment of 10.1 in the envelope-encrypted dialect, as a browser POS (Odoo)
/// posts it: the JSON string literal of the Base64 text (the spec's vector for KEY).
const ODOO_BODY: &str = "\"FsdWxnlrMG/4VA5z7ZNJefAFcvhTHHv1Bt3cusAxehI+WhfUjhX31+7NpUERXaidkEgy8/6sPOS0URYSe3n2jeNhfvo6L3dDi+J3Vr2tbIgaICj/Gh0Jqk/qtU132oMds55E6Gu+nskHGc9neDeaAUU3z/2ihOnboG5IFiEPoBLVbVgiI4jW+War2hGs7TjL\"";

fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("ECR_POS_KEY").env_remove("SSLKEYLOGFILE");
    c
}

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// No right to capture: CI (ECR_SNIFF_NO_SKIP) runs as root, so a skip there fails.
fn skip(why: &str) {
    assert!(
        std::env::var_os("ECR_SNIFF_NO_SKIP").is_none(),
        "SKIP not allowed: {why}"
    );
    println!("SKIP live TLS test: {why}");
}

/// A client tool is missing: `.ci/steps/52-live-tls.sh` installs them first and
/// fails on any SKIP (the main CI test run may come before they are installed).
fn skip_tool(why: &str) {
    println!("SKIP live TLS test: {why}");
}

/// Waits for the tap's "capturing ..." line on its stderr `err`; returns the lines
/// before it, or `None` (a SKIP) when capturing is not permitted.
fn started(err: &Receiver<String>) -> Option<Vec<String>> {
    let mut before = vec![];
    loop {
        match err.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l.contains("Ctrl-C to stop") => return Some(before),
            Ok(l) if l.contains("not permitted") => {
                skip(&l);
                return None;
            }
            Ok(l) => before.push(l),
            other => panic!("the tap did not start: {other:?} after {before:?}"),
        }
    }
}

fn jsonl(text: &[String]) -> Vec<Value> {
    text.iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Runs a client to completion within 30 s; (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (i32, String, String) {
    common::run_bounded(cmd, Duration::from_secs(30))
}

/// Starts `emulate --tls` on a free port with its secrets going to `keylog`;
/// returns it, the lines of its log, and its `127.0.0.1:PORT`.
fn emulator(keylog: &Path) -> (Killer, Receiver<String>, String) {
    let mut child = bin()
        .args([
            "emulate",
            "--key",
            KEY,
            "--http-port",
            "0",
            "--no-tcp",
            "--tls",
        ])
        .env("SSLKEYLOGFILE", keylog)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let log = lines(child.stdout.take().unwrap());
    let emu = Killer(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .expect("the emulator announced its address");
        if let Some(addr) = line.strip_prefix("https: ") {
            return (emu, log, addr.to_string());
        }
    }
}

/// `openssl s_client -tls1_3` to `addr`: the browser POS's payment, then `K` (a
/// KeyUpdate with update_requested: s_client reads command letters at the start
/// of a read from stdin), then the payment again on the same connection.
fn s_client_key_update(addr: &str) {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-tls1_3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let answers = |want: usize, seen: &mut Vec<u8>| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while String::from_utf8_lossy(seen)
            .matches("HTTP/1.1 200 OK\r\n")
            .count()
            < want
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => seen.extend_from_slice(&b),
                Err(_) => panic!(
                    "s_client: no answer {want}: {}",
                    String::from_utf8_lossy(seen)
                ),
            }
        }
    };
    let request = format!(
        "POST /api/pos/trade HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ODOO_BODY}",
        ODOO_BODY.len()
    );
    stdin.write_all(request.as_bytes()).unwrap();
    stdin.flush().unwrap();
    answers(1, &mut seen);
    // Each its own read for s_client: the command letter must start one.
    std::thread::sleep(Duration::from_millis(200));
    stdin.write_all(b"K\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stdin.write_all(request.as_bytes()).unwrap();
    stdin.flush().unwrap();
    answers(2, &mut seen);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KEYUPDATE"),
        "s_client sent no KeyUpdate: {err}"
    );
}

/// A key log line that is not one (two fields, so no secret to look for).
const CUT_SHORT: &str = "CLIENT_RANDOM cut-short";

#[test]
fn live_decrypts_https_as_the_key_log_grows() {
    let dir = std::env::temp_dir().join(format!("ecr-live-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keylog = dir.join("sslkeys.log");
    let file = dir.join("live.pcapng");
    for (tool, arg) in [("curl", "--version"), ("openssl", "version")] {
        let have = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            skip_tool(&format!("{tool} not found"));
            return;
        }
    }

    let (_emu, _emu_log, addr) = emulator(&keylog);
    let port = addr.rsplit_once(':').unwrap().1.to_string();
    // No secret is in the key log before the first handshake: the tap starts
    // following a file that is empty (or not there yet).
    let before = std::fs::read_to_string(&keylog).unwrap_or_default();
    assert!(
        before
            .lines()
            .all(|l| l.starts_with('#') || l.trim().is_empty()),
        "the emulator wrote secrets before any handshake"
    );

    let mut child = bin()
        .args(["--key", KEY, "-i", "lo", "--http-port", &port])
        .args(["--tls-keylog", keylog.to_str().unwrap()])
        .args(["--format", "jsonl", "-w", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let mut tap = Killer(child);
    let Some(notes) = started(&err) else {
        return;
    };
    // An empty key log is no reason for a warning: it is followed.
    assert!(notes.iter().all(|l| !l.contains("warning")), "{notes:?}");

    // A bad line appended while following is named by its line in the file.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&keylog)
            .unwrap();
        f.write_all(format!("{CUT_SHORT}\n").as_bytes()).unwrap();
    }

    // rustls, TLS 1.3: a payment signed in the plain dialect.
    let target = format!("https://{addr}");
    let (code, sent, e) = run(bin().args([
        "send",
        "--to",
        &target,
        "--key",
        KEY,
        "--insecure",
        "--format",
        "jsonl",
        "--timeout",
        "10",
        "pay",
        "--amt",
        "10.10",
        "--channel",
        "card_payment",
    ]));
    assert_eq!(code, 0, "send: {sent}{e}");
    // OpenSSL, TLS 1.2 (ECDHE-RSA or -ECDSA AES-GCM, whatever the certificate):
    // the browser POS's JSON-quoted envelope.
    let (code, body, e) = run(Command::new("curl").args([
        "-sS",
        "-k",
        "--tls-max",
        "1.2",
        "--tlsv1.2",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        ODOO_BODY,
        &format!("{target}/api/pos/trade"),
    ]));
    assert_eq!(code, 0, "curl: {body}{e}");
    assert!(body.contains("6000"), "curl got {body}");
    // OpenSSL, TLS 1.3, one connection: a payment, a KeyUpdate asking the
    // emulator (rustls) to update its keys too, a second payment.
    s_client_key_update(&addr);

    // Eight messages print while capturing, decrypted once the secrets appear.
    let mut live_lines = common::until_messages(&out, 8, Duration::from_secs(15), || {
        format!("stderr: {:?}", err.try_iter().collect::<Vec<_>>())
    });

    // Ctrl-C: summary, exit 0.
    let status = common::interrupt(&mut tap.0, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    while let Ok(l) = out.recv_timeout(Duration::from_secs(5)) {
        live_lines.push(l);
    }
    let stderr: Vec<String> = err.try_iter().collect();

    let live = jsonl(&live_lines);
    let summary = live.last().unwrap();
    assert_eq!(summary["kind"], "summary", "{live:#?}");
    assert_eq!(summary["messages"], 8, "{summary}");
    assert_eq!(summary["transactions"], 4, "{summary}");
    let findings: Vec<&Value> = live.iter().filter(|r| r["kind"] == "finding").collect();
    for f in &findings {
        let code = f["code"].as_str().unwrap_or_default();
        assert!(
            !code.starts_with("tls-"),
            "the key log was followed, yet: {f}"
        );
    }
    let msgs: Vec<&Value> = live.iter().filter(|r| r["kind"] == "message").collect();
    for r in live.iter().filter(|r| r.get("transport").is_some()) {
        assert_eq!(r["transport"], "https", "{r}");
    }
    // What was decrypted: the payment of send ...
    let paths: Vec<&str> = msgs
        .iter()
        .filter(|m| m["role"] == "request")
        .map(|m| m["http"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/api/pos/trade"; 4], "{msgs:#?}");
    let first = msgs[0];
    assert_eq!(first["func_type"], 1001, "{first}");
    assert_eq!(first["digest"], "ok", "{first}");
    assert_eq!(first["content"]["amt"], 10.1, "{first}");
    assert_eq!(first["content"]["channel"], "card_payment", "{first}");
    // ... and the browser POS's envelope, decrypted with the POS-KEY.
    // (the s_client payments after it are the same body, before and after the
    // KeyUpdates)
    for odoo in [msgs[2], msgs[4], msgs[6]] {
        assert_eq!(odoo["dialect"], "envelope-encrypted", "{odoo}");
        assert_eq!(odoo["func_type"], 1001, "{odoo}");
        assert_eq!(odoo["content"]["out_trade_no"], "456799999999", "{odoo}");
    }
    for resp in msgs.iter().filter(|m| m["role"] == "response") {
        assert_eq!(resp["respcd"], "6000", "{resp}");
        assert_eq!(resp["http"]["status"], 200, "{resp}");
    }
    let tx: Vec<&Value> = live.iter().filter(|r| r["kind"] == "transaction").collect();
    assert_eq!(tx.len(), 4);
    assert!(tx
        .iter()
        .all(|t| t["respcd"] == "6000" && t["func_type"] == 1001));
    // Secrets stay secret: nothing of the key log on stdout or stderr.
    let secrets = std::fs::read_to_string(&keylog).unwrap();
    let printed = live_lines.join("\n") + &stderr.join("\n");
    for line in secrets.lines().filter(|l| !l.starts_with('#')) {
        if let Some(secret) = line.split_whitespace().nth(2) {
            assert!(!printed.contains(secret), "a secret was printed");
        }
    }

    // The bad line's warning names its line, as reading the file whole does.
    let bad_line = secrets
        .lines()
        .position(|l| l == CUT_SHORT)
        .expect("the bad line is in the key log")
        + 1;
    let warning = format!("{} line {bad_line}: not a key log line", keylog.display());
    assert!(
        stderr.iter().any(|l| l.contains(&warning)),
        "no '{warning}' in {stderr:?}"
    );

    // The saved file, analysed with the same key log, gives the same records.
    let offline = bin()
        .args(["analyze", file.to_str().unwrap(), "--key", KEY])
        .args([
            "--http-port",
            &port,
            "--tls-keylog",
            keylog.to_str().unwrap(),
        ])
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    let offline_err = String::from_utf8_lossy(&offline.stderr);
    assert_eq!(offline.status.code(), Some(0), "{offline_err}");
    assert!(offline_err.contains(&warning), "{offline_err}");
    let offline = jsonl(
        &String::from_utf8(offline.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    );
    let strip = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            // Live counts packet bytes, analyze the file's; only analyze has
            // files, only live has drops.
            o.remove("bytes");
            o.remove("files");
            o.remove("drops");
        }
        v
    };
    assert_eq!(
        live.into_iter().map(strip).collect::<Vec<_>>(),
        offline.into_iter().map(strip).collect::<Vec<_>>()
    );

    // tshark sees the KeyUpdates in the saved file: s_client's, and the one
    // rustls sent in answer (so the last answer was under the server's new keys).
    let tshark = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(&file)
        .args(["-d", &format!("tcp.port=={port},tls"), "-o"])
        .arg(format!("tls.keylog_file:{}", keylog.display()))
        .args(["-Y", "tls.handshake.type == 24", "-T", "fields"])
        .args(["-e", "tcp.srcport"])
        .output();
    match tshark {
        Ok(o) if o.status.success() => {
            let senders: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| if l == port { "server" } else { "client" }.to_string())
                .collect();
            assert_eq!(senders, ["client", "server"], "KeyUpdates");
        }
        _ => skip_tool("tshark did not run: the KeyUpdates were not located"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the tap on lo for `seconds` with the key logs `logs`, calling `during` once
/// it captures; the warnings it printed on stderr, or `None` (a SKIP) when it may
/// not capture.
fn tap_warnings(logs: &[&Path], seconds: u32, during: impl FnOnce()) -> Option<Vec<String>> {
    let mut cmd = bin();
    cmd.args([
        "-i",
        "lo",
        "--duration",
        &seconds.to_string(),
        "--format",
        "jsonl",
    ]);
    for log in logs {
        cmd.arg("--tls-keylog").arg(log);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines(child.stderr.take().unwrap());
    let mut tap = Killer(child);
    let mut seen = started(&err)?;
    during();
    let status = tap.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    seen.extend(err.iter());
    Some(seen.into_iter().filter(|l| l.contains("warning")).collect())
}

/// What a key log holds when the tap starts is read once, as `analyze` reads it:
/// its bad lines are named by their line, a last line without its newline is used
/// when it is whole (so a file of one such line adds secrets), and the lines
/// appended later are numbered after it.
#[test]
fn live_reads_a_key_log_that_holds_lines_already_once() {
    let dir = std::env::temp_dir().join(format!("ecr-live-keylog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let valid = |i: u8| {
        format!(
            "CLIENT_RANDOM {} {}",
            format!("{i:02x}").repeat(32),
            "ab".repeat(48)
        )
    };
    let a = dir.join("a.log");
    let b = dir.join("b.log");
    std::fs::write(&a, format!("{}\n{CUT_SHORT}\n{}", valid(1), valid(3))).unwrap();
    std::fs::write(&b, valid(4)).unwrap();
    let Some(warnings) = tap_warnings(&[&a, &b], 3, || {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        f.write_all(format!("\n{CUT_SHORT}\n").as_bytes()).unwrap();
    }) else {
        return;
    };
    let line = |n: usize| {
        format!(
            "ecr-sniff: warning: {} line {n}: not a key log line (LABEL CLIENT_RANDOM SECRET)",
            a.display()
        )
    };
    assert_eq!(warnings, [line(2), line(4)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A key log larger than `analyze` reads (64 MiB) when the tap starts: only its last
/// 64 MiB are read, so that the capture starts at once and holds the newest
/// sessions; a warning says so, and warnings about lines read after the cut name no
/// line number (the lines before are not counted).
#[test]
fn live_reads_only_the_end_of_a_key_log_larger_than_64_mib() {
    let dir = std::env::temp_dir().join(format!("ecr-live-bigkeylog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("big.log");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        // A bad first line, which is not read, then 65 MiB of comments.
        writeln!(f, "{CUT_SHORT}").unwrap();
        let comment = format!("# {}\n", "c".repeat(1021));
        for _ in 0..65 * 1024 {
            f.write_all(comment.as_bytes()).unwrap();
        }
        writeln!(f, "{CUT_SHORT}").unwrap();
        writeln!(f, "CLIENT_RANDOM {} {}", "01".repeat(32), "ab".repeat(48)).unwrap();
    }
    let warnings = tap_warnings(&[&log], 1, || {});
    std::fs::remove_dir_all(&dir).unwrap();
    let Some(warnings) = warnings else {
        return;
    };
    let path = log.display();
    assert_eq!(
        warnings,
        [
            format!("ecr-sniff: warning: {path} holds 65 MiB: only its last 64 MiB are read (the newest sessions); connections whose secrets come before that are not decrypted"),
            format!("ecr-sniff: warning: {path}: not a key log line (LABEL CLIENT_RANDOM SECRET)"),
        ]
    );
}
