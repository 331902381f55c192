//! Helpers shared by the integration tests that start ecr-sniff (or other) processes.
//! Each test binary uses a part of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The lines of a child's output as they come, read on a thread of their own (so a
/// test can wait for a line with a timeout).
pub fn line_reader(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs a command with a hard time limit (without `ECR_POS_KEY`); (exit code,
/// stdout, stderr).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (i32, String, String) {
    let mut child = cmd
        .env_remove("ECR_POS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends signal `sig` (a name such as `INT` or `TERM`) to `child`. Panics if it
/// cannot be sent.
pub fn signal(child: &std::process::Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits at most `limit` for `child` to exit; its status. Panics past `limit`.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "no exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGINT to `child` and waits at most `limit` for it to exit; its status.
/// Panics if the signal cannot be sent or the child does not stop in time.
pub fn interrupt(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    signal(child, "INT");
    wait_exit(child, limit)
}

/// Lines from `out` until `n` of them are message records; panics with what came
/// and `context()` when they do not within `limit`.
pub fn until_messages(
    out: &mpsc::Receiver<String>,
    n: usize,
    limit: Duration,
    context: impl Fn() -> String,
) -> Vec<String> {
    let mut lines: Vec<String> = vec![];
    let deadline = Instant::now() + limit;
    while lines
        .iter()
        .filter(|l| l.contains(r#""kind":"message""#))
        .count()
        < n
    {
        let left = deadline.checked_duration_since(Instant::now());
        match left.map(|l| out.recv_timeout(l)) {
            Some(Ok(l)) => lines.push(l),
            _ => panic!(
                "not {n} messages within {limit:?}: {lines:#?}; {}",
                context()
            ),
        }
    }
    lines
}

/// A running `ecr-sniff emulate` on free ports (port 0) with the samples' test key
/// (more options in `extra`), killed when it drops. It has announced its
/// addresses when [`Emu::start`] returns.
pub struct Emu {
    pub child: std::process::Child,
    /// `HOST:PORT` of the HTTP port.
    pub http: String,
    /// `HOST:PORT` of the TCP 9002-style port.
    pub tcp: String,
    /// The pseudo-terminal's path, with `--serial pty`.
    pub serial: Option<String>,
    /// Its standard output, a line at a time (the log after the addresses).
    pub lines: mpsc::Receiver<String>,
}

impl Emu {
    pub fn start(key: &str, extra: &[&str]) -> Emu {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
            .args([
                "emulate",
                "--key",
                key,
                "--http-port",
                "0",
                "--tcp-port",
                "0",
            ])
            .args(extra)
            .env_remove("ECR_POS_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut emu = Emu {
            child,
            http: String::new(),
            tcp: String::new(),
            serial: None,
            lines: line_reader(out),
        };
        let want_serial = extra.contains(&"--serial");
        let deadline = Instant::now() + Duration::from_secs(10);
        while emu.http.is_empty() || emu.tcp.is_empty() || (want_serial && emu.serial.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = emu
                .lines
                .recv_timeout(left)
                .expect("emulator announced its addresses");
            if let Some(a) = line.strip_prefix("http: ") {
                emu.http = a.to_string();
            } else if let Some(a) = line.strip_prefix("tcp: ") {
                emu.tcp = a.to_string();
            } else if let Some(p) = line.strip_prefix("serial: ") {
                emu.serial = Some(p.to_string());
            }
        }
        emu
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The `send --to` target of its port for `transport`: `http`, `tcp` or
    /// `tcp-frames`, `serial`.
    pub fn target(&self, transport: &str) -> String {
        match transport {
            "http" => format!("http://{}", self.http),
            "tcp" | "tcp-frames" => format!("tcp://{}", self.tcp),
            _ => format!("serial:{}", self.serial.as_deref().unwrap()),
        }
    }

    /// Its CPU time so far, in clock ticks (utime + stime from /proc).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which is in parentheses).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 of `rest`.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
