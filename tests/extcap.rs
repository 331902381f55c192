//! End-to-end tests of `ecr-sniff extcap`: the answers Wireshark expects, the
//! installed wrapper, a capture into a fifo stopped by SIGTERM, and (where tshark is
//! installed) a real `tshark -i ecr-serial` capture through the installed extcap.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{signal, wait_exit};

use ecr_proto::frame::{FrameRepr, FrameType};
use ecr_tap::tty::Pty;

/// `{"func_type":5001}` signed with f46b1f08bec1f39104792cc79ec9aacd.
const CANCEL: &[u8] =
    br#"{"content":{"func_type":5001},"digest":"77760cafee81dc33c720c90b75787b5f"}"#;
const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"));
    c.env_remove("ECR_POS_KEY");
    c
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ecr-extcap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    // Open to the unprivileged user tshark runs as in the tshark test.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cable end played by the test (see tests/serialtap.rs).
struct Cable {
    pty: Pty,
    io: File,
}

impl Cable {
    fn new(link: &Path) -> Cable {
        let pty = Pty::open(Some(link)).unwrap();
        let io = File::from(pty.master().try_clone_to_owned().unwrap());
        Cable { pty, io }
    }
    fn recv(&mut self, n: usize, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut out = vec![];
        let mut buf = [0u8; 1024];
        while out.len() < n && Instant::now() < deadline {
            match self.io.read(&mut buf) {
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("{e}"),
            }
        }
        out
    }
}

fn analyze(file: &Path) -> Vec<serde_json::Value> {
    let out = bin()
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
    text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn answers_the_extcap_questions() {
    let o = bin()
        .args(["extcap", "--extcap-interfaces", "--extcap-version=4.0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let t = text(&o);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("extcap {version="), "{t}");
    assert_eq!(
        lines[1],
        "interface {value=ecr-serial}{display=ECR serial tap (cash register <-> POS terminal)}"
    );

    let o = bin()
        .args(["extcap", "--extcap-interface=ecr-serial", "--extcap-dlts"])
        .output()
        .unwrap();
    assert!(
        text(&o).starts_with("dlt {number=147}{name=USER0}"),
        "{}",
        text(&o)
    );

    let o = bin()
        .args(["extcap", "--extcap-interface=ecr-serial", "--extcap-config"])
        .output()
        .unwrap();
    let t = text(&o);
    for call in ["--ecr", "--pos", "--baud", "--parity", "--stop-bits"] {
        assert!(
            t.contains(&format!("{{call={call}}}")),
            "{call} missing: {t}"
        );
    }

    let o = bin()
        .args(["extcap", "--extcap-interface=eth0", "--extcap-dlts"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown extcap interface \"eth0\""));
}

#[test]
fn installed_wrapper_runs_the_extcap() {
    let dir = tempdir("install");
    let o = bin()
        .args(["extcap", "--install", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let wrapper = dir.join("ecr-sniff-extcap");
    let o = Command::new(&wrapper)
        .arg("--extcap-interfaces")
        .output()
        .unwrap();
    assert!(
        text(&o).contains("interface {value=ecr-serial}"),
        "{}",
        text(&o)
    );
    // A link to the binary under an extcap name works without the wrapper too.
    let link = dir.join("ecr-sniff-extcap-link");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ecr-sniff"), &link).unwrap();
    let o = Command::new(&link)
        .args(["--extcap-interface=ecr-serial", "--extcap-dlts"])
        .output()
        .unwrap();
    assert!(text(&o).starts_with("dlt {number=147}"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn capture_writes_a_pcapng_stream_to_the_fifo_until_sigterm() {
    let dir = tempdir("fifo");
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut ecr = Cable::new(&dir.join("ecr"));
    let mut pos = Cable::new(&dir.join("pos"));
    let child = bin()
        .args(["extcap", "--capture", "--extcap-interface=ecr-serial"])
        .arg(format!("--fifo={}", fifo.display()))
        .args(["--ecr", dir.join("ecr").to_str().unwrap()])
        .args(["--pos", dir.join("pos").to_str().unwrap(), "--baud", "9600"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killer(child);
    // Wireshark's side: read the fifo until the writer closes it.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = File::open(fifo).unwrap();
            let mut all = vec![];
            f.read_to_end(&mut all).unwrap();
            all
        })
    };
    // The ports are open before the fifo is: give the tap a moment, then talk.
    std::thread::sleep(Duration::from_millis(300));
    let req = FrameRepr::new(FrameType::REQUEST, 4, CANCEL)
        .to_bytes()
        .unwrap();
    ecr.io.write_all(&req).unwrap();
    assert_eq!(pos.recv(req.len(), Duration::from_secs(5)), req);
    let ack = FrameRepr::ack(4).to_bytes().unwrap();
    pos.io.write_all(&ack).unwrap();
    assert_eq!(ecr.recv(ack.len(), Duration::from_secs(5)), ack);
    std::thread::sleep(Duration::from_millis(100));

    signal(&child.0, "TERM");
    let status = wait_exit(&mut child.0, Duration::from_secs(10));
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    let stream = reader.join().unwrap();
    let file = dir.join("stream.pcapng");
    std::fs::write(&file, &stream).unwrap();
    let recs = analyze(&file);
    let roles: Vec<&str> = recs
        .iter()
        .filter(|r| r["kind"] == "message")
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["request", "ack"], "{recs:?}");
    assert_eq!(recs[0]["func_type"], 5001);
    assert_eq!(recs[0]["digest"], "ok");
    drop((ecr, pos));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// tshark runs the installed extcap like Wireshark does. As root, tshark ignores
/// WIRESHARK_EXTCAP_DIR, so the test runs it as `nobody` through setpriv.
#[test]
fn tshark_captures_through_the_installed_extcap() {
    if Command::new("tshark").arg("--version").output().is_err() {
        // CI (ECR_SNIFF_NO_SKIP) has every tool: a skip there is a failure.
        assert!(
            std::env::var_os("ECR_SNIFF_NO_SKIP").is_none(),
            "SKIP not allowed"
        );
        eprintln!("SKIP tshark extcap test: tshark is not installed");
        return;
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o).trim() == "0");
    if is_root && Command::new("setpriv").arg("--version").output().is_err() {
        // CI (ECR_SNIFF_NO_SKIP) has every tool: a skip there is a failure.
        assert!(
            std::env::var_os("ECR_SNIFF_NO_SKIP").is_none(),
            "SKIP not allowed"
        );
        eprintln!("SKIP tshark extcap test: running as root without setpriv");
        return;
    }
    let dir = tempdir("tshark");
    let extcap_dir = dir.join("extcap");
    std::fs::create_dir(&extcap_dir).unwrap();
    std::fs::set_permissions(&extcap_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = bin()
        .args(["extcap", "--install", extcap_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let mut ecr = Cable::new(&dir.join("ecr"));
    let mut pos = Cable::new(&dir.join("pos"));
    for c in [&ecr, &pos] {
        std::fs::set_permissions(c.pty.slave_path(), std::fs::Permissions::from_mode(0o666))
            .unwrap();
    }
    let out = dir.join("out.pcapng");
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "tshark"]);
        c
    } else {
        Command::new("tshark")
    };
    cmd.env("WIRESHARK_EXTCAP_DIR", &extcap_dir)
        .env("HOME", &dir)
        .env_remove("ECR_POS_KEY")
        .args(["-i", "ecr-serial", "-a", "duration:4", "-q"])
        .args([
            "-o",
            &format!("extcap.ecr_serial.ecr:{}", dir.join("ecr").display()),
        ])
        .args([
            "-o",
            &format!("extcap.ecr_serial.pos:{}", dir.join("pos").display()),
        ])
        .args(["-w", out.to_str().unwrap()])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut tshark = Killer(cmd.spawn().unwrap());
    // Talk once the extcap has the ports open: the terminal end sees the request.
    let req = FrameRepr::new(FrameType::REQUEST, 7, CANCEL)
        .to_bytes()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    std::thread::sleep(Duration::from_millis(800));
    let mut got = vec![];
    while got.is_empty() && Instant::now() < deadline {
        // Copies written before the extcap opened its port wait in the pty and are
        // relayed late, hence `starts_with` below.
        ecr.io.write_all(&req).unwrap();
        got = pos.recv(req.len(), Duration::from_millis(500));
    }
    let ack = FrameRepr::ack(7).to_bytes().unwrap();
    pos.io.write_all(&ack).unwrap();
    let status = wait_exit(&mut tshark.0, Duration::from_secs(20));
    let mut err = String::new();
    tshark
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "tshark failed: {err}");
    assert!(
        got.starts_with(&req),
        "the terminal did not get the request: {got:02x?}; {err}"
    );
    let recs = analyze(&out);
    let msgs: Vec<_> = recs.iter().filter(|r| r["kind"] == "message").collect();
    assert!(
        msgs.iter()
            .any(|m| m["role"] == "request" && m["func_type"] == 5001),
        "{recs:?}; tshark: {err}"
    );
    assert!(msgs.iter().any(|m| m["role"] == "ack"), "{recs:?}");
    drop((ecr, pos));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A port that does not exist: the extcap opens Wireshark's fifo first (so Wireshark
/// is not left waiting), then fails within a second with a non-zero exit and the
/// same error text as `ecr-sniff serial` on stderr, which Wireshark shows.
#[test]
fn missing_port_fails_at_once_through_the_fifo() {
    let dir = tempdir("missing");
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let missing = dir.join("no-such-port");
    let start = Instant::now();
    let child = bin()
        .args(["extcap", "--capture", "--extcap-interface=ecr-serial"])
        .arg(format!("--fifo={}", fifo.display()))
        .args(["--ecr", missing.to_str().unwrap()])
        .args(["--pos", missing.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killer(child);
    // Wireshark's side: open the fifo (blocks until the extcap opens it) and read.
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut stream = vec![];
            if let Ok(mut f) = File::open(fifo) {
                let _ = f.read_to_end(&mut stream);
            }
            let _ = tx.send(stream);
        });
    }
    let stream = match rx.recv_timeout(Duration::from_secs(3)) {
        Ok(s) => s,
        Err(_) => {
            // Unblock the reader before failing: the extcap never opened the fifo.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
            panic!("the extcap did not open the fifo within 3 s");
        }
    };
    let status = wait_exit(&mut child.0, Duration::from_secs(5));
    let elapsed = start.elapsed();
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        elapsed < Duration::from_secs(1),
        "took {elapsed:?} to report: {err}"
    );
    assert_ne!(status.code(), Some(0), "{err}");
    // A pcapng section header went out first, so Wireshark's reader is not stuck.
    assert_eq!(stream.get(..4), Some(&[0x0a, 0x0d, 0x0d, 0x0a][..]));
    // The CLI's words for the same mistake.
    let cli = bin()
        .args(["serial", "--ecr", missing.to_str().unwrap()])
        .args(["--pos", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let cli_err = String::from_utf8_lossy(&cli.stderr).into_owned();
    assert_ne!(cli.status.code(), Some(0));
    assert!(
        cli_err.contains(missing.to_str().unwrap()),
        "CLI error does not name the port: {cli_err}"
    );
    assert_eq!(err.trim(), cli_err.trim());
    std::fs::remove_dir_all(&dir).unwrap();
}
