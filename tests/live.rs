//! End-to-end tests of the network tap (`ecr-sniff -i IFACE`, `ecr-sniff live`): a
//! live capture on the loopback interface of real HTTP and TCP exchanges, checked
//! against the offline analysis of the file it saved. Capturing needs root (or
//! CAP_NET_RAW); without it the capture test says SKIP (and fails under
//! ECR_SNIFF_NO_SKIP=1, which CI sets).

#![cfg(feature = "live")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";
/// `{"func_type":5001}` signed with KEY (docs/protocol.md test vectors).
const CANCEL: &str =
    r#"{"content":{"func_type":5001},"digest":"77760cafee81dc33c720c90b75787b5f"}"#;
/// `{func_type=4001,orderId='12345678'}` signed with KEY.
const INQUIRY: &str = r#"{"content":{"func_type":4001,"orderId":"12345678"},"digest":"99ce8bf9c7304ac964522d10f51660b4"}"#;
const OK: &str = r#"{"respcd":"6000","respmsg":"ok","resperr":"","data":"{}"}"#;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"));
    c.env_remove("ECR_POS_KEY");
    c
}

fn lines<R: Read + Send + 'static>(r: R) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads one HTTP message (headers and Content-Length body) from `s`.
fn read_http(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![];
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed mid-message");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn jsonl(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn live_loopback_capture_matches_offline_analysis_of_its_file() {
    let dir = std::env::temp_dir().join(format!("ecr-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("live.pcapng");
    // Our own ports, so that other tests' traffic on 9001/9002 does not mix in.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (hp, tp) = (
        http.local_addr().unwrap().port().to_string(),
        tcp.local_addr().unwrap().port().to_string(),
    );
    // The top-level form: `ecr-sniff --key K -i lo` is `ecr-sniff live ...`.
    let mut child = bin()
        .args([
            "--key",
            KEY,
            "-i",
            "lo",
            "--http-port",
            &hp,
            "--tcp-port",
            &tp,
        ])
        .args(["--format", "jsonl", "-w", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let mut tap = Killer(child);
    match err.recv_timeout(Duration::from_secs(10)) {
        Ok(l) if l.contains("Ctrl-C to stop") => {}
        Ok(l) if l.contains("not permitted") => {
            // CI (ECR_SNIFF_NO_SKIP) has every tool: a skip there is a failure.
            assert!(
                std::env::var_os("ECR_SNIFF_NO_SKIP").is_none(),
                "SKIP not allowed"
            );
            eprintln!("SKIP live capture test: {l}");
            return;
        }
        other => panic!("the tap did not start: {other:?}"),
    }

    // HTTP: one answered request, one left waiting (the terminal never answers).
    let server = std::thread::spawn(move || {
        let (mut a, _) = http.accept().unwrap();
        read_http(&mut a);
        a.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{OK}",
                OK.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let (mut b, _) = http.accept().unwrap();
        read_http(&mut b);
        // Raw TCP: one JSON value each way, then the terminal closes.
        let (mut c, _) = tcp.accept().unwrap();
        let mut got = vec![0u8; INQUIRY.len()];
        c.read_exact(&mut got).unwrap();
        c.write_all(OK.as_bytes()).unwrap();
        (a, b, c)
    });
    let mut c1 = TcpStream::connect(format!("127.0.0.1:{hp}")).unwrap();
    c1.write_all(post("/api/pos/cancel_request", CANCEL).as_bytes())
        .unwrap();
    read_http(&mut c1);
    let mut c2 = TcpStream::connect(format!("127.0.0.1:{hp}")).unwrap();
    c2.write_all(post("/api/pos/query", INQUIRY).as_bytes())
        .unwrap();
    let mut c3 = TcpStream::connect(format!("127.0.0.1:{tp}")).unwrap();
    c3.write_all(INQUIRY.as_bytes()).unwrap();
    let mut answer = vec![0u8; OK.len()];
    c3.read_exact(&mut answer).unwrap();
    let (s1, s2, s3) = server.join().unwrap();
    drop((c3, s3));

    // Each message prints as soon as it is complete, before the capture ends.
    let mut live_lines = common::until_messages(&out, 5, Duration::from_secs(10), || {
        format!("stderr: {:?}", err.try_iter().collect::<Vec<_>>())
    });

    // Ctrl-C: summary, pending request reported, exit 0.
    let status = common::interrupt(&mut tap.0, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    while let Ok(l) = out.recv_timeout(Duration::from_secs(5)) {
        live_lines.push(l);
    }
    drop((c1, c2, s1, s2));

    let live = jsonl(&live_lines);
    let summary = live.last().unwrap();
    assert_eq!(summary["kind"], "summary", "{live:#?}");
    assert_eq!(summary["messages"], 5);
    assert_eq!(summary["transactions"], 2);
    assert_eq!(summary["findings"]["unanswered-at-end"], 1, "{summary}");
    // What the tap lost, by where: nothing, at this rate.
    assert_eq!(
        summary["drops"],
        serde_json::json!({"kernel": 0, "interface": 0, "queue": 0, "output": 0}),
        "{summary}"
    );
    let msgs: Vec<_> = live.iter().filter(|r| r["kind"] == "message").collect();
    let transports: Vec<&str> = msgs
        .iter()
        .map(|m| m["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports.iter().filter(|t| **t == "http").count(), 3);
    assert_eq!(transports.iter().filter(|t| **t == "tcp").count(), 2);
    assert!(msgs
        .iter()
        .filter(|m| m["role"] == "request")
        .all(|m| m["digest"] == "ok"));

    // The saved file analyses to exactly the same records.
    let offline = bin()
        .args(["analyze", file.to_str().unwrap(), "--key", KEY])
        .args(["--http-port", &hp, "--tcp-port", &tp, "--format", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(offline.status.code(), Some(0));
    let offline: Vec<serde_json::Value> = jsonl(
        &String::from_utf8(offline.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    );
    let strip = |mut v: serde_json::Value| {
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
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_interface_is_a_usage_error() {
    let out = bin().args(["-i", "ecr-no-such-if0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no network interface named \"ecr-no-such-if0\""),
        "{err}"
    );
    assert!(err.contains("--list-interfaces"), "{err}");
}

#[test]
fn list_interfaces_includes_loopback() {
    let out = bin().arg("--list-interfaces").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("lo ") && l.contains("loopback")),
        "{text}"
    );
}

/// Capturing without the right is refused with the capabilities named. Needs root
/// (to drop to an unprivileged user with setpriv); skipped otherwise.
#[test]
fn unprivileged_capture_names_the_capabilities() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let have_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !is_root || !have_setpriv {
        // CI (ECR_SNIFF_NO_SKIP) has every tool: a skip there is a failure.
        assert!(
            std::env::var_os("ECR_SNIFF_NO_SKIP").is_none(),
            "SKIP not allowed"
        );
        eprintln!("SKIP unprivileged capture test: needs root and setpriv");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_ecr-sniff"))
        .args(["live", "-i", "lo", "--duration", "1"])
        .env_remove("ECR_POS_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && !err.contains("capturing") {
        eprintln!("SKIP unprivileged capture test: nobody cannot run the test binary: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("CAP_NET_RAW") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(err.contains(" lo "), "{err}");
}
