//! End-to-end tests of `ecr-sniff serial`: pseudo-terminals stand in for the two
//! cables. The test plays the cash register on one and the terminal on the other,
//! through the tap, and checks that each end receives exactly the bytes the other
//! sent, that the live output decodes the conversation, and that the capture file
//! written with -w analyses to the same records.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use ecr_proto::cipher::PosKey;
use ecr_proto::envelope::{build_request, RequestDialect};
use ecr_proto::frame::{split_message, FrameRepr, FrameType};
use ecr_proto::value::Value;
use ecr_tap::tty::Pty;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

/// One cable end held by the test: the master side of a pseudo-terminal whose
/// slave (linked at `link`) the tap opens as a serial port.
struct Cable {
    _pty: Pty,
    io: File,
}

impl Cable {
    fn new(link: &Path) -> Cable {
        let pty = Pty::open(Some(link)).expect("openpty");
        let io = File::from(pty.master().try_clone_to_owned().unwrap());
        Cable { _pty: pty, io }
    }

    fn send(&mut self, mut bytes: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !bytes.is_empty() {
            match self.io.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("write: {e}"),
            }
        }
    }

    /// Reads exactly `n` bytes within 5 s; returns them and when the last arrived.
    fn recv(&mut self, n: usize) -> (Vec<u8>, Instant) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::with_capacity(n);
        let mut buf = [0u8; 4096];
        while out.len() < n {
            match self.io.read(&mut buf[..(n - out.len()).min(4096)]) {
                Ok(0) => panic!("cable closed after {} of {n} bytes", out.len()),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "got {} of {n} bytes within 5 s: {out:02x?}",
                        out.len()
                    );
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        (out, Instant::now())
    }

    /// Asserts nothing more arrives within `wait`.
    fn assert_quiet(&mut self, wait: Duration) {
        std::thread::sleep(wait);
        let mut buf = [0u8; 64];
        match self.io.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("unexpected bytes: {other:?} {:02x?}", &buf[..8]),
        }
    }
}

/// The tap process, killed if a test fails before stopping it.
struct Tap {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

impl Tap {
    fn start(args: &[&str]) -> Tap {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
            .arg("serial")
            .args(args)
            .env_remove("ECR_POS_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        let mut tap = Tap {
            child,
            out,
            err,
            stderr_seen: vec![],
        };
        tap.wait_stderr("Ctrl-C to stop");
        tap
    }

    fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Some(l) = self.stderr_seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.err.recv_timeout(left) {
                Ok(l) => {
                    self.stderr_seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "the tap never said {needle:?}; stderr so far: {:?}",
            self.stderr_seen
        );
    }

    /// Sends SIGINT, waits (at most 10 s) for a clean exit and returns stdout lines.
    fn interrupt(mut self) -> Vec<String> {
        let status = common::interrupt(&mut self.child, Duration::from_secs(10));
        let rest: Vec<String> = self.err.try_iter().collect();
        self.stderr_seen.extend(rest);
        assert_eq!(status.code(), Some(0), "stderr: {:?}", self.stderr_seen);
        let mut out = vec![];
        while let Ok(l) = self.out.recv_timeout(Duration::from_secs(5)) {
            out.push(l);
        }
        out
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ecr-serialtap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn request(json: &str) -> Vec<u8> {
    let v = Value::parse_json(json.as_bytes()).unwrap();
    build_request(
        RequestDialect::Plain,
        v.as_object().unwrap(),
        &PosKey::new(KEY).unwrap(),
    )
}

fn jsonl(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A record without what legitimately differs between the live tap and its file:
/// the ends' names (device paths live, "serial0:ECR" in the file), packet numbers
/// (none live, one per frame in the file), byte counts, and times measured to a
/// frame's last byte or to the end: the file stamps each frame with its first
/// byte's arrival (D9), and the capture "ends" at its last packet rather than at
/// Ctrl-C. Everything decoded (messages, content, digests, pairing, finding codes)
/// must be equal.
fn comparable(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        for k in [
            "src",
            "dst",
            "packet",
            "files",
            "bytes",
            "packets",
            "latency_ms",
            // Ack latency: live, chunk read times; in the file, frame packet times.
            "answer_ms",
        ] {
            o.remove(k);
        }
        if o.get("code").is_some_and(|c| c == "unanswered-at-end") {
            o.remove("detail");
        }
        // Per-fragment times: live they are the times chunks were read, in the file
        // the time of each frame packet's first byte (D9), so they differ slightly.
        if let Some(parts) = o
            .get_mut("frame")
            .and_then(|f| f.get_mut("parts"))
            .and_then(|p| p.as_array_mut())
        {
            for part in parts {
                if let Some(p) = part.as_object_mut() {
                    p.remove("ts");
                    p.remove("gap_ms");
                }
            }
        }
    }
    v
}

fn analyze(file: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
        .args([
            "analyze",
            file.to_str().unwrap(),
            "--key",
            KEY,
            "--format",
            "jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    jsonl(
        &String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    )
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn relays_every_byte_and_decodes_live_and_from_the_file() {
    let dir = tempdir("relay");
    let mut ecr = Cable::new(&dir.join("ecr"));
    let mut pos = Cable::new(&dir.join("pos"));
    let cap = dir.join("tap.pcapng");
    let tap = Tap::start(&[
        "--ecr",
        dir.join("ecr").to_str().unwrap(),
        "--pos",
        dir.join("pos").to_str().unwrap(),
        "--key",
        KEY,
        "--format",
        "jsonl",
        "-w",
        cap.to_str().unwrap(),
    ]);
    let mut latencies = vec![];
    let mut through = |from: &mut Cable, to: &mut Cable, bytes: &[u8]| {
        let t0 = Instant::now();
        from.send(bytes);
        let (got, t1) = to.recv(bytes.len());
        assert_eq!(got, bytes, "bytes changed in the tap");
        latencies.push(t1 - t0);
    };

    // 1. A payment from the cash register, dribbled in three pieces; the terminal acks.
    let pay = FrameRepr::new(
        FrameType::REQUEST,
        1,
        &request(r#"{"func_type":1001,"amt":10.1,"channel":"wx","out_trade_no":"A1"}"#),
    )
    .to_bytes()
    .unwrap();
    let (a, rest) = pay.split_at(5);
    let (b, c) = rest.split_at(40);
    for piece in [a, b, c] {
        through(&mut ecr, &mut pos, piece);
        std::thread::sleep(Duration::from_millis(20));
    }
    through(&mut pos, &mut ecr, &FrameRepr::ack(1).to_bytes().unwrap());

    // 2. A 2500-byte inquiry split into three fragments (D1), sent back to back.
    let long = format!(
        r#"{{"func_type":4001,"out_trade_no":"A1","remark":"{}"}}"#,
        "x".repeat(2400)
    );
    let split = split_message(FrameType::REQUEST, 2, &request(&long), 1024).unwrap();
    through(&mut ecr, &mut pos, &split);
    through(&mut pos, &mut ecr, &FrameRepr::ack(2).to_bytes().unwrap());

    // 3. The terminal's business result (a new 0x10 from the POS, D2); the till acks.
    let result = br#"{"respcd":"6000","respmsg":"AUTHORISED","resperr":"trade success","data":"{\"out_trade_no\":\"A1\",\"txamt\":\"1010\",\"syssn\":\"S1\"}"}"#;
    let res = FrameRepr::new(FrameType::REQUEST, 3, result)
        .to_bytes()
        .unwrap();
    through(&mut pos, &mut ecr, &res);
    through(&mut ecr, &mut pos, &FrameRepr::ack(3).to_bytes().unwrap());

    // Nothing was duplicated or invented.
    ecr.assert_quiet(Duration::from_millis(100));
    pos.assert_quiet(Duration::from_millis(0));
    let m = median(&mut latencies);
    eprintln!(
        "relay latency through the tap: median {:?}, max {:?} over {} chunks",
        m,
        latencies.last().unwrap(),
        latencies.len()
    );
    // The target is under 2 ms; the bound is loose for a loaded CI machine.
    assert!(m < Duration::from_millis(50), "median latency {m:?}");

    let live = jsonl(&tap.interrupt());
    let msgs: Vec<&serde_json::Value> = live.iter().filter(|r| r["kind"] == "message").collect();
    let roles: Vec<(&str, &str)> = msgs
        .iter()
        .map(|m| {
            (
                m["direction"].as_str().unwrap(),
                m["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            ("ecr-to-pos", "request"),
            ("pos-to-ecr", "ack"),
            ("ecr-to-pos", "request"),
            ("pos-to-ecr", "ack"),
            ("pos-to-ecr", "response"),
            ("ecr-to-pos", "ack"),
        ],
        "{live:#?}"
    );
    assert_eq!(msgs[0]["func_type"], 1001);
    assert_eq!(msgs[0]["digest"], "ok");
    assert_eq!(msgs[0]["transport"], "serial");
    assert!(
        msgs[0]["src"].as_str().unwrap().ends_with("/ecr"),
        "{}",
        msgs[0]
    );
    assert_eq!(msgs[2]["func_type"], 4001);
    assert_eq!(msgs[2]["digest"], "ok");
    assert_eq!(msgs[4]["respcd"], "6000");
    let summary = live.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["messages"], 6);
    // Every chunk the tap read counts as a packet (at least one per message here,
    // at most one per byte), not "0 packets".
    let packets = summary["packets"].as_u64().unwrap();
    assert!(
        (6..=summary["bytes"].as_u64().unwrap()).contains(&packets),
        "{summary}"
    );
    assert_eq!(
        summary["bytes"],
        (pay.len() + split.len() + res.len() + 3 * 11) as u64
    );
    // No link-level complaint: every request was acked in time through the tap.
    for code in [
        "ack-timeout",
        "reassembly-timeout",
        "garbage-bytes",
        "bad-length",
    ] {
        assert!(summary["findings"].get(code).is_none(), "{summary}");
    }

    // The file analyses to the same records.
    let offline = analyze(&cap);
    let a: Vec<_> = live.into_iter().map(comparable).collect();
    let b: Vec<_> = offline.into_iter().map(comparable).collect();
    assert_eq!(a, b);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pulled_cable_is_reported_and_the_port_reopened() {
    let dir = tempdir("replug");
    let mut ecr = Cable::new(&dir.join("ecr"));
    let pos = Cable::new(&dir.join("pos"));
    let cap = dir.join("tap.pcapng");
    let mut tap = Tap::start(&[
        "--ecr",
        dir.join("ecr").to_str().unwrap(),
        "--pos",
        dir.join("pos").to_str().unwrap(),
        "--key",
        KEY,
        "--format",
        "jsonl",
        "-w",
        cap.to_str().unwrap(),
    ]);
    // The terminal's cable is pulled: its pseudo-terminal goes away.
    drop(pos);
    let gone = tap.wait_stderr("is gone");
    assert!(
        gone.contains("terminal port") && gone.contains("/pos"),
        "{gone}"
    );
    // A request sent meanwhile is still seen (and reported as not passed on).
    let lost = FrameRepr::new(FrameType::REQUEST, 1, &request(r#"{"func_type":5001}"#))
        .to_bytes()
        .unwrap();
    ecr.send(&lost);
    tap.wait_stderr("could not be passed on");
    // The file is valid while the cable is out.
    std::thread::sleep(Duration::from_millis(300));
    let during = analyze(&cap);
    assert!(
        during
            .iter()
            .any(|r| r["kind"] == "message" && r["func_type"] == 5001),
        "{during:?}"
    );

    // Plugged back in (a new device at the same path): the tap reopens it.
    let mut pos = Cable::new(&dir.join("pos"));
    tap.wait_stderr("is back");
    let req = FrameRepr::new(FrameType::REQUEST, 2, &request(r#"{"func_type":5001}"#))
        .to_bytes()
        .unwrap();
    ecr.send(&req);
    assert_eq!(pos.recv(req.len()).0, req);
    let ack = FrameRepr::ack(2).to_bytes().unwrap();
    pos.send(&ack);
    assert_eq!(ecr.recv(ack.len()).0, ack);

    let live = jsonl(&tap.interrupt());
    let reqs = live
        .iter()
        .filter(|r| r["kind"] == "message" && r["role"] == "request")
        .count();
    assert_eq!(reqs, 2);
    let offline = analyze(&cap);
    assert_eq!(
        live.into_iter().map(comparable).collect::<Vec<_>>(),
        offline.into_iter().map(comparable).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pty_mode_gives_the_cash_register_software_a_port() {
    let dir = tempdir("pty");
    let mut pos = Cable::new(&dir.join("pos"));
    let app_link = dir.join("ttyECR");
    let tap = Tap::start(&[
        "--pty",
        app_link.to_str().unwrap(),
        "--pos",
        dir.join("pos").to_str().unwrap(),
        "--format",
        "jsonl",
        "--baud",
        "115200",
    ]);
    // The cash register software opens the link like any serial port.
    let fd = ecr_tap::tty::open_port(&app_link, &Default::default()).unwrap();
    let mut app = File::from(fd);
    let req = FrameRepr::new(FrameType::REQUEST, 9, &request(r#"{"func_type":5001}"#))
        .to_bytes()
        .unwrap();
    app.write_all(&req).unwrap();
    assert_eq!(pos.recv(req.len()).0, req);
    let ack = FrameRepr::ack(9).to_bytes().unwrap();
    pos.send(&ack);
    let mut got = vec![0u8; ack.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    while n < got.len() {
        match app.read(&mut got[n..]) {
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, ack);
    let live = jsonl(&tap.interrupt());
    let msgs: Vec<_> = live.iter().filter(|r| r["kind"] == "message").collect();
    assert_eq!(msgs.len(), 2, "{live:?}");
    assert_eq!(msgs[0]["src"], app_link.to_str().unwrap());
    // The link is removed when the tap stops.
    assert!(std::fs::symlink_metadata(&app_link).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Peak and current resident memory of a process, in KiB (VmHWM, VmRSS).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn a_stdout_nobody_reads_holds_up_neither_relaying_nor_the_file() {
    let dir = tempdir("blocked");
    let ecr = Cable::new(&dir.join("ecr"));
    let mut pos = Cable::new(&dir.join("pos"));
    let cap = dir.join("tap.pcapng");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
        .arg("serial")
        .args(["--ecr", dir.join("ecr").to_str().unwrap()])
        .args(["--pos", dir.join("pos").to_str().unwrap()])
        .args([
            "--key",
            KEY,
            "--format",
            "text",
            "-w",
            cap.to_str().unwrap(),
        ])
        .env_remove("ECR_POS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stdout is a pipe that nobody reads: it fills after 64 KiB.
    let _stdout = child.stdout.take().unwrap();
    let err = lines(child.stderr.take().unwrap());
    let mut stderr_seen: Vec<String> = vec![];
    let wait_stderr = |needle: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match err.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("never said {needle:?}: {seen:?}"),
            }
        }
    };
    wait_stderr("Ctrl-C to stop", &mut stderr_seen);

    // About 6 MB of requests (6000 frames of ~1 KB) from the cash register: their
    // records are more than the output queue holds (8,192 records, 4 MiB).
    const N: usize = 6000;
    let remark = "r".repeat(800);
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let body = request(&format!(
                r#"{{"func_type":4001,"out_trade_no":"T{i}","remark":"{remark}"}}"#
            ));
            FrameRepr::new(FrameType::REQUEST, (i % 127) as u8 + 1, &body)
                .to_bytes()
                .unwrap()
        })
        .collect();
    let all: Vec<u8> = frames.concat();
    let total = all.len();
    assert!(total > 5_000_000, "{total}");
    let sender = std::thread::spawn(move || {
        let mut ecr = ecr;
        for f in &frames {
            ecr.send(f);
        }
        ecr
    });
    // Relaying is byte-exact and keeps going although stdout is stuck.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::with_capacity(total);
    let mut buf = [0u8; 65536];
    while got.len() < total {
        match pos.io.read(&mut buf) {
            Ok(0) => panic!("cable closed after {} of {total} bytes", got.len()),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "relayed {} of {total} bytes within 60 s",
                    got.len()
                );
                std::thread::sleep(Duration::from_micros(500));
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(got == all, "bytes changed in the tap");
    let _ecr = sender.join().unwrap();
    // Output records are dropped, and it says so as it happens.
    wait_stderr("output record(s) dropped so far", &mut stderr_seen);
    // The -w file keeps growing: it gets every frame (written out once the line
    // has been quiet for 200 ms) while stdout is still stuck.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&cap).map_or(0, |m| m.len()) < total as u64 {
        assert!(Instant::now() < deadline, "the -w file stopped growing");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Memory stays bounded (the output queue holds at most 4 MiB; the relay
    // queue 8 MiB): the whole 6 MB conversation was formatted into far more text
    // than that.
    std::thread::sleep(Duration::from_millis(500));
    let (peak, now) = memory_kib(child.id());
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB (now {now} KiB)");

    // Ctrl-C ends it within a second, with the drop count, although stdout is
    // still blocked.
    let t0 = Instant::now();
    let status = common::interrupt(&mut child, Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "{stderr_seen:?}");
    assert!(took < Duration::from_secs(1), "SIGINT took {took:?}");
    wait_stderr(
        "were dropped because stdout was not read fast enough",
        &mut stderr_seen,
    );
    let last = stderr_seen
        .iter()
        .find(|l| l.contains("were dropped because"))
        .unwrap();
    let dropped: u64 = last
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{last}"));
    assert!(dropped > 0, "{last}");
    assert!(
        !stderr_seen
            .iter()
            .any(|l| l.contains("decoder fell behind")),
        "{stderr_seen:?}"
    );

    // The -w file is complete: every request is in it.
    let offline = analyze(&cap);
    let reqs = offline
        .iter()
        .filter(|r| r["kind"] == "message" && r["role"] == "request")
        .count();
    assert_eq!(reqs, N);
    std::fs::remove_dir_all(&dir).unwrap();
}
