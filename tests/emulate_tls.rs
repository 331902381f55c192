//! `emulate --tls` and `send --to https://` against TLS stacks this project did not
//! write: curl (OpenSSL) and Python's `ssl` (OpenSSL too, through another API),
//! on 127.0.0.1.
//!
//! - curl with TLS 1.3 and each of its three suites, and TLS 1.2 with each ECDHE
//!   suite rustls has, for an RSA certificate (`--cert`, the test certificate in
//!   tests/data/tls) and for the ECDSA certificate the emulator makes at start;
//!   curl verifies the certificate (`--cacert`, no `-k`), posts the body Odoo's
//!   `pos_qfpay` posts (`Content-Type: application/json`, a JSON-quoted Base64
//!   envelope) and gets 6000 with `Access-Control-Allow-Origin`; the emulator's log
//!   names the suite curl was told to use; every key log line curl writes
//!   (SSLKEYLOGFILE) is in the emulator's key log too. A CBC suite is refused
//!   (rustls has none).
//! - CORS preflights with curl over HTTPS and plain HTTP.
//! - Python `ssl` with TLS 1.2 and 1.3: preflight, then the payment.
//! - headless Chromium posting from a POS page through CORS (HTTPS and HTTP), and
//!   refused by a server without CORS.
//! - `send --to https://` with --insecure, with --cert (the certificate saved by
//!   --save-cert), with the wrong --cert, and without either (the refusal that
//!   says what to do), and its key log.
//!
//! A test whose tool is missing prints SKIP and passes without checking anything.

mod common;
use common::run_bounded as run;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-sniff");
/// The key of the spec's envelope-encrypted vector below.
const KEY: &str = "a1b2c3d4e5f6a7b8";
/// A payment of 10.1 in the envelope-encrypted dialect, as Odoo posts it: the JSON
/// string literal of the Base64 text (the spec's test vector for KEY).
const ODOO_BODY: &str = "\"FsdWxnlrMG/4VA5z7ZNJefAFcvhTHHv1Bt3cusAxehI+WhfUjhX31+7NpUERXaidkEgy8/6sPOS0URYSe3n2jeNhfvo6L3dDi+J3Vr2tbIgaICj/Gh0Jqk/qtU132oMds55E6Gu+nskHGc9neDeaAUU3z/2ihOnboG5IFiEPoBLVbVgiI4jW+War2hGs7TjL\"";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name)
}

/// A fresh directory for one test's files.
fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "ecr-sniff-tls-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running `emulate --tls` (or plain), killed on drop.
struct Emu {
    child: Child,
    addr: String,
    fingerprint: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Emu {
    fn start(extra: &[&str], keylog: Option<&Path>) -> Emu {
        let mut cmd = Command::new(BIN);
        cmd.args(["emulate", "--key", KEY, "--http-port", "0", "--no-tcp"])
            .args(extra)
            .env_remove("ECR_POS_KEY")
            .env_remove("SSLKEYLOGFILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(k) = keylog {
            cmd.env("SSLKEYLOGFILE", k);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let rx = common::line_reader(out);
        let mut emu = Emu {
            child,
            addr: String::new(),
            fingerprint: String::new(),
            lines: rx,
            seen: vec![],
        };
        let tls = extra.contains(&"--tls");
        let deadline = Instant::now() + Duration::from_secs(20);
        while emu.addr.is_empty() || (tls && emu.fingerprint.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = emu
                .lines
                .recv_timeout(left)
                .expect("the emulator announced its address");
            if let Some(a) = line
                .strip_prefix("https: ")
                .or_else(|| line.strip_prefix("http: "))
            {
                emu.addr = a.to_string();
            } else if let Some((_, fp)) = line.split_once("SHA-256 fingerprint ") {
                emu.fingerprint = fp.to_string();
            }
            emu.seen.push(line);
        }
        emu
    }

    /// Waits until a log line contains `needle`, and returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no log line with {needle:?}; log so far:\n{:#?}", self.seen),
            }
        }
    }

    /// Forgets the log so far (so that `wait_for` sees only what follows).
    fn mark(&mut self) {
        self.seen.clear();
        while self.lines.try_recv().is_ok() {}
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The header block and body of a curl `-i` output (the last response).
fn split_response(out: &str) -> (String, String) {
    let (head, body) = out.rsplit_once("\r\n\r\n").unwrap_or((out, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

fn keylog_lines(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn curl_every_tls_version_and_cipher_family() {
    if !have("curl") {
        println!("SKIP: curl not found");
        return;
    }
    let dir = scratch("curl");
    let emu_keys = dir.join("emu-keys.log");
    let ecdsa_pem = dir.join("ecdsa.pem");
    let rsa_pem = data("rsa-cert.pem");
    let mut rsa = Emu::start(
        &[
            "--tls",
            "--cert",
            rsa_pem.to_str().unwrap(),
            "--cert-key",
            data("rsa-key.pem").to_str().unwrap(),
        ],
        Some(&emu_keys),
    );
    let mut ecdsa = Emu::start(
        &["--tls", "--save-cert", ecdsa_pem.to_str().unwrap()],
        Some(&emu_keys),
    );
    let tls13 = [
        ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
        ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS13_CHACHA20_POLY1305_SHA256",
        ),
    ];
    let tls12_rsa = [
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
    ];
    let tls12_ecdsa = [
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
    ];
    let mut runs = 0;
    let mut check = |emu: &mut Emu, cert: &Path, opts: Vec<&str>, suite: &str, version: &str| {
        emu.mark();
        let curl_keys = dir.join(format!("curl-keys-{runs}.log"));
        runs += 1;
        let url = format!("https://{}/api/pos/trade", emu.addr);
        let (code, out, err) = run(
            Command::new("curl")
                .args(["-sS", "-i", "--max-time", "10", "--cacert"])
                .arg(cert)
                .args(&opts)
                .args([
                    "-H",
                    "Content-Type: application/json",
                    "-H",
                    "Origin: https://shop.example",
                    "--data-binary",
                    ODOO_BODY,
                    &url,
                ])
                .env("SSLKEYLOGFILE", &curl_keys),
            Duration::from_secs(20),
        );
        assert_eq!(code, 0, "curl {opts:?}: {err}");
        let (head, body) = split_response(&out);
        assert!(head.starts_with("http/1.1 200"), "{opts:?}: {out}");
        assert!(
            head.contains("access-control-allow-origin: https://shop.example"),
            "{opts:?}: {out}"
        );
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["respcd"], "6000", "{opts:?}: {body}");
        // `data` is a JSON text inside the JSON answer, as terminals send it.
        let d: Value = serde_json::from_str(v["data"].as_str().unwrap_or("")).unwrap();
        assert_eq!(d["txamt"], "1010", "{opts:?}: {body}");
        let line = emu.wait_for("] TLS ");
        assert!(
            line.ends_with(&format!("{version} {suite}")),
            "curl {opts:?}: the emulator negotiated {line:?}, not {version} {suite}"
        );
        emu.wait_for("1001 (Payment) [envelope-encrypted]");
        // curl's own key log must agree with the emulator's, line for line.
        let theirs = keylog_lines(&curl_keys);
        if theirs.is_empty() {
            println!("note: this curl wrote no SSLKEYLOGFILE; key logs not compared for {opts:?}");
        } else {
            let ours = keylog_lines(&emu_keys);
            for l in &theirs {
                assert!(
                    ours.contains(l),
                    "{opts:?}: curl logged a secret the emulator did not: {}",
                    l.split(' ').next().unwrap_or("")
                );
            }
        }
    };
    for (c, s) in tls13 {
        check(
            &mut rsa,
            &rsa_pem,
            vec!["--tlsv1.3", "--tls13-ciphers", c],
            s,
            "TLS 1.3",
        );
        check(
            &mut ecdsa,
            &ecdsa_pem,
            vec!["--tlsv1.3", "--tls13-ciphers", c],
            s,
            "TLS 1.3",
        );
    }
    for (c, s) in tls12_rsa {
        check(
            &mut rsa,
            &rsa_pem,
            vec!["--tlsv1.2", "--tls-max", "1.2", "--ciphers", c],
            s,
            "TLS 1.2",
        );
    }
    for (c, s) in tls12_ecdsa {
        check(
            &mut ecdsa,
            &ecdsa_pem,
            vec!["--tlsv1.2", "--tls-max", "1.2", "--ciphers", c],
            s,
            "TLS 1.2",
        );
    }
    // rustls has no CBC suites: a client that offers only CBC is refused.
    rsa.mark();
    let (code, _, err) = run(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&rsa_pem)
            .args(["--tls-max", "1.2", "--ciphers", "ECDHE-RSA-AES128-SHA256"])
            .arg(format!("https://{}/api/pos/trade", rsa.addr)),
        Duration::from_secs(20),
    );
    assert_ne!(code, 0, "a CBC-only client was served: {err}");
    let line = rsa.wait_for("TLS handshake failed");
    assert!(line.contains("CBC suites"), "{line}");
    // The key log holds the secrets of TLS 1.2 (CLIENT_RANDOM) and 1.3 connections.
    let ours = keylog_lines(&emu_keys);
    assert!(ours.iter().any(|l| l.starts_with("CLIENT_RANDOM ")));
    assert!(ours
        .iter()
        .any(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0 ")));
    assert!(ours
        .iter()
        .any(|l| l.starts_with("SERVER_HANDSHAKE_TRAFFIC_SECRET ")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn curl_preflight_gets_cors_headers_over_https_and_http() {
    if !have("curl") {
        println!("SKIP: curl not found");
        return;
    }
    let dir = scratch("cors");
    let pem = dir.join("emu.pem");
    let mut https = Emu::start(&["--tls", "--save-cert", pem.to_str().unwrap()], None);
    let mut http = Emu::start(&[], None);
    for (emu, scheme) in [(&mut https, "https"), (&mut http, "http")] {
        let url = format!("{scheme}://{}/api/pos/trade", emu.addr);
        let (code, out, err) = run(
            Command::new("curl")
                .args(["-sS", "-i", "--max-time", "10", "--cacert"])
                .arg(&pem)
                .args([
                    "-X",
                    "OPTIONS",
                    "-H",
                    "Origin: https://odoo.example",
                    "-H",
                    "Access-Control-Request-Method: POST",
                    "-H",
                    "Access-Control-Request-Headers: content-type",
                    "-H",
                    "Access-Control-Request-Private-Network: true",
                    &url,
                ]),
            Duration::from_secs(20),
        );
        assert_eq!(code, 0, "{err}");
        let (head, body) = split_response(&out);
        assert!(head.starts_with("http/1.1 204"), "{scheme}: {out}");
        for h in [
            "access-control-allow-origin: https://odoo.example",
            "access-control-allow-methods: post, options",
            "access-control-allow-headers: content-type",
            "access-control-max-age: 7200",
            "access-control-allow-private-network: true",
        ] {
            assert!(head.contains(h), "{scheme}: {h:?} missing in {out}");
        }
        assert!(body.is_empty());
        emu.wait_for("OPTIONS /api/pos/trade: CORS preflight, 204");
        // An OPTIONS that is no preflight is still refused like any other method.
        let (_, out, _) = run(
            Command::new("curl")
                .args(["-sS", "-i", "--max-time", "10", "--cacert"])
                .arg(&pem)
                .args(["-X", "OPTIONS", &url]),
            Duration::from_secs(20),
        );
        let (head, body) = split_response(&out);
        assert!(head.contains("access-control-allow-origin: *"), "{out}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["respcd"], "4004", "{body}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const PYTHON: &str = r#"
import http.client, json, ssl, sys
host, port, cafile, version, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)  # honours SSLKEYLOGFILE
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = v
ctx.maximum_version = v
c = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
c.request("OPTIONS", "/api/pos/trade", headers={"Origin": "https://odoo.example",
          "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
r = c.getresponse(); r.read()
pre = {"status": r.status, "acao": r.getheader("Access-Control-Allow-Origin"),
       "methods": r.getheader("Access-Control-Allow-Methods")}
c.request("POST", "/api/pos/trade", body=body.encode(),
          headers={"Content-Type": "application/json", "Origin": "https://odoo.example"})
r = c.getresponse()
out = {"preflight": pre, "status": r.status, "acao": r.getheader("Access-Control-Allow-Origin"),
       "answer": json.loads(r.read()), "version": c.sock.version(), "cipher": c.sock.cipher()[0]}
print(json.dumps(out))
"#;

#[test]
fn python_ssl_tls12_and_tls13() {
    if !have("python3") {
        println!("SKIP: python3 not found");
        return;
    }
    let dir = scratch("python");
    let pem = dir.join("emu.pem");
    let emu_keys = dir.join("emu-keys.log");
    let mut emu = Emu::start(
        &["--tls", "--save-cert", pem.to_str().unwrap()],
        Some(&emu_keys),
    );
    let (host, port) = emu.addr.rsplit_once(':').unwrap();
    let (host, port) = (host.to_string(), port.to_string());
    for (version, name) in [("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")] {
        emu.mark();
        let py_keys = dir.join(format!("py-keys-{version}.log"));
        let (code, out, err) = run(
            Command::new("python3")
                .args(["-c", PYTHON, &host, &port])
                .arg(&pem)
                .args([version, ODOO_BODY])
                .env("SSLKEYLOGFILE", &py_keys),
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "python {version}: {err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["preflight"]["status"], 204, "{v}");
        assert_eq!(v["preflight"]["acao"], "https://odoo.example", "{v}");
        assert_eq!(v["preflight"]["methods"], "POST, OPTIONS", "{v}");
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["acao"], "https://odoo.example", "{v}");
        assert_eq!(v["answer"]["respcd"], "6000", "{v}");
        assert_eq!(v["version"], name, "{v}");
        let line = emu.wait_for("] TLS ");
        assert!(
            line.contains(&format!("TLS {version} ")),
            "python asked for TLS {version}, the emulator says {line:?}"
        );
        // Both keep-alive requests went over the one connection.
        emu.wait_for("CORS preflight, 204");
        emu.wait_for("1001 (Payment)");
        let theirs = keylog_lines(&py_keys);
        if theirs.is_empty() {
            println!("note: this Python wrote no SSLKEYLOGFILE; key logs not compared");
        } else {
            let ours = keylog_lines(&emu_keys);
            assert!(theirs.iter().all(|l| ours.contains(l)), "key logs differ");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn send_over_https_insecure_pinned_and_refused() {
    let dir = scratch("send");
    let pem = dir.join("emu.pem");
    let send_keys = dir.join("send-keys.log");
    let emu_keys = dir.join("emu-keys.log");
    let mut emu = Emu::start(
        &["--tls", "--save-cert", pem.to_str().unwrap()],
        Some(&emu_keys),
    );
    let target = format!("https://{}", emu.addr);
    let send = |extra: &[&str], keylog: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "send",
            "--to",
            &target,
            "--key",
            KEY,
            "--format",
            "jsonl",
            "--timeout",
            "10",
        ])
        .args(extra)
        .env_remove("SSLKEYLOGFILE");
        if let Some(k) = keylog {
            cmd.env("SSLKEYLOGFILE", k);
        }
        run(&mut cmd, Duration::from_secs(30))
    };
    let respcd = |out: &str| -> Option<String> {
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["kind"] == "message" && r["role"] == "response")
            .and_then(|r| r["respcd"].as_str().map(str::to_string))
    };

    // Without --cert or --insecure: refused, with the fingerprint and what to do.
    let (code, out, err) = send(&["summary"], None);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "nothing was sent, nothing to print: {out}");
    assert!(err.contains(&emu.fingerprint), "{err}");
    assert!(
        err.contains("--insecure") && err.contains("--cert FILE"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let line = emu.wait_for("TLS handshake failed");
    assert!(line.contains("--save-cert"), "{line}");

    // --insecure.
    let (code, out, err) = send(&["--insecure", "summary"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(respcd(&out).as_deref(), Some("6000"), "{out}");

    // --cert pins the certificate the emulator saved; the key log follows.
    let (code, out, err) = send(
        &[
            "--cert",
            pem.to_str().unwrap(),
            "pay",
            "--amt",
            "10.10",
            "--channel",
            "card_payment",
        ],
        Some(&send_keys),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(respcd(&out).as_deref(), Some("6000"), "{out}");
    let request = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["kind"] == "message" && r["role"] == "request")
        .unwrap();
    assert_eq!(request["http"]["path"], "/api/pos/trade", "{request}");
    // Every record of an https:// exchange says https, as analyze --tls-keylog does.
    let records: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r.get("transport").is_some())
        .collect();
    assert!(
        records.iter().any(|r| r["kind"] == "transaction"),
        "no transaction record: {out}"
    );
    for r in &records {
        assert_eq!(r["transport"], "https", "{r}");
    }
    let theirs = keylog_lines(&send_keys);
    assert!(!theirs.is_empty(), "send wrote no key log");
    let ours = keylog_lines(&emu_keys);
    assert!(theirs.iter().all(|l| ours.contains(l)), "key logs differ");

    // Another certificate pinned: refused, naming both fingerprints.
    let (code, _, err) = send(
        &["--cert", data("rsa-cert.pem").to_str().unwrap(), "summary"],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not the one pinned"), "{err}");
    assert!(err.contains(&emu.fingerprint), "{err}");

    // Misuse.
    let (code, _, err) = send(&["--cert", "/nonexistent/terminal.pem", "summary"], None);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/terminal.pem"), "{err}");
    let (code, _, err) = run(
        Command::new(BIN).args([
            "send",
            "--to",
            &format!("http://{}", emu.addr),
            "--key",
            KEY,
            "--insecure",
            "summary",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 2);
    assert!(err.contains("https:// targets only"), "{err}");

    // The wrong scheme either way is named.
    let (code, _, err) = run(
        Command::new(BIN).args([
            "send",
            "--to",
            &format!("http://{}", emu.addr),
            "--key",
            KEY,
            "--timeout",
            "10",
            "summary",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("the terminal answered with TLS: it serves HTTPS"),
        "{err}"
    );
    let plain = Emu::start(&[], None);
    let (code, _, err) = run(
        Command::new(BIN).args([
            "send",
            "--to",
            &format!("https://{}", plain.addr),
            "--key",
            KEY,
            "--insecure",
            "summary",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 2);
    assert!(err.contains("answered in plain HTTP"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn emulate_tls_usage_errors() {
    let (code, _, err) = run(
        Command::new(BIN).args([
            "emulate",
            "--key",
            KEY,
            "--tls",
            "--http-port",
            "0",
            "--no-tcp",
            "--cert",
            data("rsa-cert.pem").to_str().unwrap(),
            "--cert-key",
            data("README.md").to_str().unwrap(),
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("README.md") && err.contains("private key"),
        "{err}"
    );
    let (code, _, err) = run(
        Command::new(BIN).args([
            "emulate",
            "--key",
            KEY,
            "--tls",
            "--http-port",
            "0",
            "--no-tcp",
            "--cert",
            data("rsa-cert.pem").to_str().unwrap(),
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cert-key"), "{err}");
}

/// The captures made by captures/tls/make.sh: every TLS capture has its key log,
/// and tshark, decrypting with it, sees the same HTTP requests as in the
/// capture's plain-HTTP twin; without the key log, `analyze` sees TLS only.
#[test]
fn emu_tls_captures_decrypt_with_their_key_logs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/tls");
    let mut tls: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("emu-") && !n.starts_with("emu-http-") && n.ends_with(".pcap")
        })
        .collect();
    tls.sort();
    assert!(tls.len() >= 15, "captures/tls/emu-*.pcap missing: {tls:?}");
    for f in &tls {
        let keys = f.with_extension("keys");
        let text =
            std::fs::read_to_string(&keys).unwrap_or_else(|e| panic!("{}: {e}", keys.display()));
        assert!(
            text.lines()
                .all(|l| l.split(' ').count() == 3 && !l.starts_with('#')),
            "{}: not an NSS key log",
            keys.display()
        );
        // Without the key log: TLS, reported, and nothing else.
        let (code, out, err) = run(
            Command::new(BIN)
                .args(["analyze", "--format", "jsonl", "--key", KEY])
                .arg(f),
            Duration::from_secs(30),
        );
        assert!(code <= 1, "{}: {err}", f.display());
        let recs: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            recs.iter()
                .any(|r| r["kind"] == "finding" && r["code"] == "tls-encrypted"),
            "{}: {out}",
            f.display()
        );
        assert!(
            !recs.iter().any(|r| r["kind"] == "message"),
            "{}",
            f.display()
        );
    }
    if !have_tshark() {
        println!("SKIP: tshark not found; the decryption of the captures was not checked");
        return;
    }
    let requests = |f: &Path, keys: Option<&Path>| -> String {
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(f);
        match keys {
            Some(k) => {
                cmd.args(["-d", "tcp.port==9001,tls", "-o"])
                    .arg(format!("tls.keylog_file:{}", k.display()));
            }
            None => {
                cmd.args(["-d", "tcp.port==9001,http"]);
            }
        }
        cmd.args([
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
        ]);
        run(&mut cmd, Duration::from_secs(60)).1
    };
    let mut twins = std::collections::HashMap::new();
    for f in &tls {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let twin = dir.join(match name {
            n if n.starts_with("emu-curl-") => "emu-http-curl.pcap",
            n if n.starts_with("emu-python-") => "emu-http-python.pcap",
            n if n.starts_with("emu-chromium-") => "emu-http-chromium.pcap",
            _ => "emu-http-send.pcap",
        });
        let got = requests(f, Some(&f.with_extension("keys")));
        let want = twins
            .entry(twin.clone())
            .or_insert_with(|| requests(&twin, None));
        assert!(want.lines().count() >= 2, "{}: {want}", twin.display());
        assert_eq!(
            &got, want,
            "{name}: tshark decrypts other requests than in its twin"
        );
    }
}

fn have_tshark() -> bool {
    Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A browser POS over plain HTTP (Chromium, and curl and Python posting as Odoo
/// does, a CORS preflight first): the preflight and its answer are paired and shown as such,
/// with no finding, and the payment is a transaction of its own.
#[test]
fn preflights_are_paired_and_raise_no_finding() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/tls");
    for name in [
        "emu-http-curl.pcap",
        "emu-http-python.pcap",
        "emu-http-chromium.pcap",
    ] {
        let f = dir.join(name);
        let (code, out, err) = run(
            Command::new(BIN)
                .args(["analyze", "--format", "jsonl", "--key", KEY])
                .arg(&f),
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "{name}: {err}");
        let recs: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kind = |k: &'static str| recs.iter().filter(move |r| r["kind"] == k);
        assert_eq!(kind("finding").count(), 0, "{name}: {out}");
        let pre: Vec<&Value> = kind("message")
            .filter(|m| m["role"] == "preflight")
            .collect();
        assert_eq!(pre.len(), 2, "{name}: {out}");
        assert_eq!(pre[0]["http"]["method"], "OPTIONS");
        assert_eq!(pre[0]["direction"], "ecr-to-pos");
        assert_eq!(pre[1]["http"]["status"], 204);
        assert_eq!(pre[1]["direction"], "pos-to-ecr");
        assert!(pre[1]["answer_ms"].as_f64().is_some(), "{}", pre[1]);
        let tx: Vec<&Value> = kind("transaction").collect();
        assert_eq!(tx.len(), 1, "{name}: {out}");
        assert_eq!(tx[0]["func_type"], 1001);
        assert_eq!(tx[0]["respcd"], "6000");
        assert_eq!(
            (tx[0]["request"].clone(), tx[0]["response"].clone()),
            (3.into(), 4.into())
        );
        // Text: one line each.
        let (_, text, _) = run(
            Command::new(BIN)
                .args(["analyze", "--color", "never", "--key", KEY])
                .arg(&f),
            Duration::from_secs(30),
        );
        let lines: Vec<&str> = text.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.starts_with("Message 1 CORS preflight "))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(lines[i].ends_with("OPTIONS /api/pos/trade"), "{}", lines[i]);
        assert_eq!(lines.get(i + 1), Some(&""), "{text}");
        let answer = lines
            .iter()
            .find(|l| l.starts_with("Message 2 CORS preflight answer "))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(answer.contains("204 No Content after "), "{answer}");
        assert!(text.contains("findings: none"), "{text}");
    }
}

/// A terminal without CORS (Python's http.server: the preflight answered 501, the
/// payment's answer without Access-Control-Allow-Origin), as a browser POS would
/// meet it: both answers are cors-blocked.
#[test]
fn a_terminal_without_cors_is_reported() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/tls/emu-http-no-cors.pcap");
    let (code, out, err) = run(
        Command::new(BIN)
            .args(["analyze", "--format", "jsonl", "--key", KEY])
            .arg(&f),
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{err}");
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let findings: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "finding").collect();
    assert_eq!(findings.len(), 2, "{out}");
    assert!(findings
        .iter()
        .all(|f| f["code"] == "cors-blocked" && f["severity"] == "error"));
    assert_eq!(findings[0]["message"], 2);
    assert!(
        findings[0]["detail"]
            .as_str()
            .unwrap()
            .contains("was answered 501"),
        "{}",
        findings[0]
    );
    assert_eq!(findings[1]["message"], 4);
    assert!(
        findings[1]["detail"]
            .as_str()
            .unwrap()
            .contains("has no Access-Control-Allow-Origin"),
        "{}",
        findings[1]
    );
    let tx: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "transaction").collect();
    assert_eq!(tx.len(), 1, "{out}");
    assert_eq!(tx[0]["request"], 3);
}

/// The SHA-256 of the SubjectPublicKeyInfo of tests/data/tls/rsa-cert.pem, Base64,
/// for Chromium's --ignore-certificate-errors-spki-list (pinning, as a shop would
/// install the terminal's certificate):
/// `openssl x509 -in rsa-cert.pem -pubkey -noout | openssl pkey -pubin -outform der |
/// openssl dgst -sha256 -binary | base64`.
const RSA_SPKI_SHA256: &str = "YhSdvIsxrNTLDLqKXoHk1jLkIm5KVSEWAHNuOYzrRW4=";

/// A server made by a Python one-liner, killed on drop.
struct PyServer {
    child: Child,
    port: u16,
}

impl PyServer {
    /// Runs `python3 -u ARGS` and waits for its first line with "port N".
    fn start(args: &[&str]) -> PyServer {
        let mut child = Command::new("python3")
            .arg("-u")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let rx = common::line_reader(out);
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the Python server announced its port");
        let port = line
            .split_once("port ")
            .and_then(|(_, p)| p.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        PyServer { child, port }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A terminal without CORS: Python's http.server answers OPTIONS 501 and the POST
/// with a 6000 that lacks Access-Control-Allow-Origin.
const NO_CORS_SERVER: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"respcd":"6000","respmsg":"SUCCESS","resperr":"","data":""}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print("listening on port", s.server_address[1])
s.serve_forever()
"#;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| have(c))
}

/// Chromium (headless) loads a POS page from one origin that posts to the
/// terminal on another, as Odoo's pos_qfpay does: over HTTPS to `emulate --tls`
/// (the certificate pinned by its key hash) and over plain HTTP to `emulate`, the
/// browser's preflight passes and the page reads the 6000; against a server without
/// CORS the browser refuses the answer. Chromium's key log matches the emulator's.
#[test]
fn chromium_posts_through_cors_to_emulate_tls() {
    let Some(browser) = chromium() else {
        println!("SKIP: chromium not found");
        return;
    };
    if !have("python3") {
        println!("SKIP: python3 not found (it serves the POS page)");
        return;
    }
    let dir = scratch("chromium");
    let page_dir = data("");
    let page = PyServer::start(&[
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
        "--directory",
        page_dir.to_str().unwrap(),
    ]);
    let emu_keys = dir.join("emu-keys.log");
    let mut https = Emu::start(
        &[
            "--tls",
            "--cert",
            data("rsa-cert.pem").to_str().unwrap(),
            "--cert-key",
            data("rsa-key.pem").to_str().unwrap(),
        ],
        Some(&emu_keys),
    );
    let mut http = Emu::start(&[], None);
    let no_cors = PyServer::start(&["-c", NO_CORS_SERVER]);
    let mut runs = 0;
    let mut browse = |to: &str| -> (String, BTreeSet<String>) {
        runs += 1;
        let keys = dir.join(format!("chromium-keys-{runs}.log"));
        let (_, out, err) = run(
            Command::new(browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--virtual-time-budget=10000",
                    &format!("--ignore-certificate-errors-spki-list={RSA_SPKI_SHA256}"),
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    dir.join(format!("profile-{runs}")).display()
                ))
                .arg("--dump-dom")
                .arg(format!(
                    "http://127.0.0.1:{}/pos-page.html?to={to}",
                    page.port
                ))
                .env("SSLKEYLOGFILE", &keys),
            Duration::from_secs(60),
        );
        let outcome = out
            .split_once("<pre id=\"out\">")
            .and_then(|(_, rest)| rest.split_once("</pre>"))
            .map(|(o, _)| o.replace("&quot;", "\"").replace("&amp;", "&"))
            .unwrap_or_else(|| panic!("no outcome in the page: {out}\n{err}"));
        (outcome, keylog_lines(&keys))
    };

    // HTTPS: preflight, then the POST; the page reads the 6000.
    let (outcome, theirs) = browse(&format!("https://{}", https.addr));
    assert!(outcome.starts_with("RESULT "), "{outcome}");
    let v: Value = serde_json::from_str(&outcome["RESULT ".len()..]).unwrap();
    assert_eq!(v["respcd"], "6000", "{outcome}");
    https.wait_for("] TLS 1.3 ");
    https.wait_for("OPTIONS /api/pos/trade: CORS preflight, 204");
    https.wait_for("POST /api/pos/trade 1001 (Payment) [envelope-encrypted]");
    assert!(!theirs.is_empty(), "Chromium wrote no key log");
    let ours = keylog_lines(&emu_keys);
    assert!(theirs.iter().all(|l| ours.contains(l)), "key logs differ");

    // Plain HTTP, another origin: the same.
    let (outcome, _) = browse(&format!("http://{}", http.addr));
    assert!(outcome.starts_with("RESULT "), "{outcome}");
    http.wait_for("CORS preflight, 204");
    http.wait_for("1001 (Payment)");

    // A server without CORS: the browser refuses.
    let (outcome, _) = browse(&format!("http://127.0.0.1:{}", no_cors.port));
    assert!(outcome.starts_with("ERROR TypeError"), "{outcome}");
    let _ = std::fs::remove_dir_all(&dir);
}
