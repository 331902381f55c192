//! HTTPS decryption (`--tls-keylog`, pcapng Decryption Secrets Blocks) over the real
//! captures in `captures/tls/`, made by `captures/tls/make.py` with curl and Python's
//! `ssl` (OpenSSL) against `ecr-sniff emulate` behind a Python TLS terminator.
//!
//! Each capture holds one HTTP session twice: TLS on port 29001 and, relayed
//! unchanged, plain HTTP on port 29101. The checks:
//! - the decrypted analysis equals the plain one (transport, ports, times aside);
//! - the full `--format jsonl` output equals `captures/tls/expected/NAME.jsonl`
//!   (regenerate on purpose with `ECR_SNIFF_BLESS=1 cargo test --test tls`);
//! - the decrypted bodies equal what tshark decrypts with the same key log (SKIP
//!   when tshark is missing, a failure when ECR_SNIFF_REQUIRE_TSHARK is set);
//! - without secrets, with someone else's and with damaged ones, the findings say so
//!   and nothing is shown as plaintext; secrets never reach the output.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";
const TLS_PORT: &str = "29001";
const PLAIN_PORT: &str = "29101";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scenarios() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("captures/tls"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            // emu-* are the emulator's captures (tests/emulate_tls.rs), with their
            // own key logs (NAME.keys) and no plain leg in the same file.
            if n.starts_with("emu-") {
                return None;
            }
            n.strip_suffix(".pcap").map(str::to_string)
        })
        .collect();
    v.sort();
    assert!(v.len() >= 17, "captures/tls/ holds {} captures", v.len());
    v
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
        .args(args)
        .current_dir(root())
        .env_remove("ECR_POS_KEY")
        .env_remove("SSLKEYLOGFILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn pcap(name: &str) -> String {
    format!("captures/tls/{name}.pcap")
}

fn keylog(name: &str) -> String {
    format!("captures/tls/{name}.keylog")
}

/// `analyze FILE --http-port PORT --key KEY --format jsonl EXTRA...`, parsed.
fn analyze(file: &str, port: &str, extra: &[&str]) -> (String, Vec<Value>) {
    let mut args = vec![
        "analyze",
        file,
        "--http-port",
        port,
        "--key",
        KEY,
        "--format",
        "jsonl",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert!(code == 0 || code == 1, "{args:?}: exit {code}: {err}");
    let recs = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, recs)
}

/// Records with what differs between the two legs of a relayed session removed.
fn normalized(recs: &[Value]) -> Vec<Value> {
    recs.iter()
        .map(|r| {
            let mut r = r.clone();
            let o = r.as_object_mut().unwrap();
            for k in [
                "ts",
                "time",
                "src",
                "dst",
                "packet",
                "transport",
                "latency_ms",
                "answer_ms",
                "packets",
                "bytes",
                "files",
            ] {
                o.remove(k);
            }
            r
        })
        .collect()
}

fn summary(recs: &[Value]) -> &Value {
    let s = recs.last().unwrap();
    assert_eq!(s["kind"], "summary");
    s
}

fn count(recs: &[Value], kind: &str) -> usize {
    recs.iter().filter(|r| r["kind"] == kind).count()
}

fn findings<'a>(recs: &'a [Value], code: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["kind"] == "finding" && r["code"] == code)
        .collect()
}

#[test]
fn https_analysis_equals_the_plain_http_leg() {
    let mut failures = vec![];
    for name in scenarios() {
        let (_, tls) = analyze(&pcap(&name), TLS_PORT, &["--tls-keylog", &keylog(&name)]);
        let (_, plain) = analyze(&pcap(&name), PLAIN_PORT, &[]);
        assert!(count(&plain, "message") >= 4, "{name}: plain leg too short");
        assert!(count(&plain, "transaction") >= 2, "{name}");
        for r in &tls {
            if r["kind"] != "summary" {
                assert_eq!(r["transport"], "https", "{name}: {r}");
            }
        }
        if normalized(&tls) != normalized(&plain) {
            failures.push(format!(
                "{name}: decrypted {} messages {} transactions {:?}, plain {} {} {:?}",
                count(&tls, "message"),
                count(&tls, "transaction"),
                summary(&tls)["findings"],
                count(&plain, "message"),
                count(&plain, "transaction"),
                summary(&plain)["findings"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn https_analysis_matches_golden_output() {
    let bless = std::env::var_os("ECR_SNIFF_BLESS").is_some();
    let dir = root().join("captures/tls/expected");
    let mut failures = vec![];
    for name in scenarios() {
        let (out, _) = analyze(&pcap(&name), TLS_PORT, &["--tls-keylog", &keylog(&name)]);
        let golden = dir.join(format!("{name}.jsonl"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&golden, &out).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(g) if g == out => {}
            Ok(_) => failures.push(format!("{name}: output differs from {}", golden.display())),
            Err(e) => failures.push(format!("{}: {e}", golden.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(regenerate on purpose with ECR_SNIFF_BLESS=1 cargo test --test tls)",
        failures.join("\n")
    );
}

/// The HTTP bodies the analyzer decrypted, in order, through the library's message
/// hook (which sees each body as received).
fn decrypted_bodies(name: &str) -> Vec<String> {
    use ecr_capture::analyzer::{Analyzer, Config};
    let mut log = ecr_capture::keylog::KeyLog::new();
    log.load_file(&root().join(keylog(name))).unwrap();
    let cfg = Config {
        http_ports: vec![29001],
        tls_keylog: log,
        ..Config::default()
    };
    let bodies = std::cell::RefCell::new(vec![]);
    let mut sink = |_: ecr_capture::record::Record| {};
    let mut a = Analyzer::new(cfg, ecr_capture::keys::KeySet::new(), &mut sink);
    a.on_message(|_, body| {
        bodies
            .borrow_mut()
            .push(String::from_utf8_lossy(body).into_owned())
    });
    let mut reader = ecr_capture::source::CaptureReader::open(root().join(pcap(name))).unwrap();
    a.read_capture(&mut reader, name, |_| true);
    a.finish(0, vec![]);
    bodies.into_inner()
}

fn have_tshark() -> bool {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("ECR_SNIFF_REQUIRE_TSHARK").is_none(),
            "tshark is required (ECR_SNIFF_REQUIRE_TSHARK is set) but not installed"
        );
        println!("SKIP: tshark not installed; decrypted bodies not compared with tshark's");
    }
    ok
}

#[test]
fn decrypted_bodies_equal_tsharks() {
    if !have_tshark() {
        return;
    }
    for name in scenarios() {
        let out = Command::new("tshark")
            .current_dir(root())
            .args([
                "-n",
                "-r",
                &pcap(&name),
                "-o",
                &format!("tls.keylog_file:{}", keylog(&name)),
                "-d",
                &format!("tcp.port=={TLS_PORT},tls"),
                "-d",
                &format!("tls.port=={TLS_PORT},http"),
                "-Y",
                &format!("http && tcp.port=={TLS_PORT}"),
                "-T",
                "fields",
                "-e",
                "http.file_data",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "tshark failed on {name}");
        let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let ours = decrypted_bodies(&name);
        assert!(ours.len() >= 4, "{name}");
        assert_eq!(
            ours, theirs,
            "{name}: decrypted bodies differ from tshark's"
        );
    }
}

#[test]
fn without_secrets_the_finding_describes_each_connection() {
    // TLS 1.2: the certificate is readable.
    let (_, recs) = analyze(&pcap("tls12-ecdhe-rsa-aes128-gcm"), TLS_PORT, &[]);
    assert_eq!(count(&recs, "message"), 0);
    let f = findings(&recs, "tls-encrypted");
    assert_eq!(f.len(), 1, "one connection");
    let d = f[0]["detail"].as_str().unwrap();
    for want in [
        "TLS 1.2",
        "SNI terminal.local",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "CN=ECR Terminal 127.0.0.1",
        "self-signed",
        "SSLKEYLOGFILE",
        "--tls-keylog",
    ] {
        assert!(d.contains(want), "{want:?} not in {d}");
    }
    assert_eq!(f[0]["transport"], "https");
    // TLS 1.3: it is encrypted, and the finding says so.
    let (_, recs) = analyze(&pcap("tls13-chacha20-poly1305"), TLS_PORT, &[]);
    let f = findings(&recs, "tls-encrypted");
    assert_eq!(f.len(), 1);
    let d = f[0]["detail"].as_str().unwrap();
    assert!(d.contains("TLS 1.3"), "{d}");
    assert!(d.contains("TLS_CHACHA20_POLY1305_SHA256"), "{d}");
    assert!(d.contains("certificate encrypted"), "{d}");
    // Two connections, two findings; the resumed one has no certificate.
    let (_, recs) = analyze(&pcap("tls12-resume-session-id"), TLS_PORT, &[]);
    let f = findings(&recs, "tls-encrypted");
    assert_eq!(f.len(), 2);
    assert!(f[1]["detail"].as_str().unwrap().contains("resumed"));
}

#[test]
fn someone_elses_keylog_is_tls_no_secret() {
    let (_, recs) = analyze(
        &pcap("tls13-aes128-gcm"),
        TLS_PORT,
        &["--tls-keylog", &keylog("tls12-rsa-aes128-gcm")],
    );
    assert_eq!(count(&recs, "message"), 0);
    let f = findings(&recs, "tls-no-secret");
    assert_eq!(f.len(), 1, "{recs:?}");
    assert_eq!(f[0]["severity"], "warning");
    assert!(f[0]["detail"].as_str().unwrap().contains("client random"));
    assert!(findings(&recs, "tls-encrypted").is_empty());
}

/// The key log with the last hex digit of every secret changed.
fn damaged_keylog(name: &str, dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(root().join(keylog(name))).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let mut l = line.to_string();
        if let Some(c) = l.pop() {
            l.push(if c == '0' { '1' } else { '0' });
        }
        out.push_str(&l);
        out.push('\n');
    }
    let p = dir.join(format!("{name}-damaged.keylog"));
    std::fs::write(&p, out).unwrap();
    p.to_str().unwrap().to_string()
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ecr-sniff-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn wrong_secrets_are_tls_decrypt_failed_and_show_nothing() {
    let dir = tempdir("damaged");
    for name in [
        "tls12-ecdhe-rsa-aes128-gcm",
        "tls12-ecdhe-rsa-chacha20-poly1305",
        "tls12-rsa-aes128-cbc-sha-etm",
        "tls12-rsa-aes256-cbc-sha256-noetm",
        "tls13-aes256-gcm",
    ] {
        let k = damaged_keylog(name, &dir);
        let (_, recs) = analyze(&pcap(name), TLS_PORT, &["--tls-keylog", &k]);
        assert_eq!(count(&recs, "message"), 0, "{name}: plaintext shown");
        let f = findings(&recs, "tls-decrypt-failed");
        assert!(!f.is_empty(), "{name}: {recs:?}");
        assert_eq!(f[0]["severity"], "error");
        let d = f[0]["detail"].as_str().unwrap();
        assert!(d.contains("does not authenticate"), "{d}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn secrets_in_a_pcapng_decryption_secrets_block_are_used() {
    let (_, with_dsb) = analyze("captures/tls/tls13-aes128-gcm-dsb.pcapng", TLS_PORT, &[]);
    let (_, with_file) = analyze(
        &pcap("tls13-aes128-gcm"),
        TLS_PORT,
        &["--tls-keylog", &keylog("tls13-aes128-gcm")],
    );
    assert!(count(&with_dsb, "message") >= 4);
    assert_eq!(normalized(&with_dsb), normalized(&with_file));
}

#[test]
fn resumed_tls12_sessions_decrypt_from_the_first_connections_secret() {
    // Only the first connection's line: the second (resumed by session id or by
    // ticket) is found through the session it resumes.
    let dir = tempdir("resume");
    for name in ["tls12-resume-session-id", "tls12-resume-ticket"] {
        let text = std::fs::read_to_string(root().join(keylog(name))).unwrap();
        let first: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("CLIENT_RANDOM"))
            .collect();
        assert_eq!(first.len(), 2, "{name}: two handshakes logged");
        let k = dir.join(format!("{name}.keylog"));
        std::fs::write(&k, format!("{}\n", first[0])).unwrap();
        let (_, partial) = analyze(
            &pcap(name),
            TLS_PORT,
            &["--tls-keylog", k.to_str().unwrap()],
        );
        let (_, full) = analyze(&pcap(name), TLS_PORT, &["--tls-keylog", &keylog(name)]);
        assert_eq!(count(&partial, "message"), 4, "{name}: {partial:?}");
        assert_eq!(normalized(&partial), normalized(&full), "{name}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn secrets_never_reach_the_output() {
    let dir = tempdir("secrets");
    let secrets: Vec<String> = scenarios()
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(root().join(keylog(n)))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    assert!(secrets.len() > 20);
    assert!(
        secrets.iter().all(|s| s.len() >= 64),
        "secrets are 32 bytes or more"
    );
    let damaged = damaged_keylog("tls13-aes128-gcm", &dir);
    for (name, k) in [
        ("tls13-aes128-gcm", keylog("tls13-aes128-gcm")),
        ("tls13-aes128-gcm", damaged),
        (
            "tls12-rsa-aes128-cbc-sha-etm",
            keylog("tls12-rsa-aes128-cbc-sha-etm"),
        ),
    ] {
        for format in ["text", "jsonl", "json"] {
            let (_, out, err) = run(&[
                "analyze",
                &pcap(name),
                "--http-port",
                TLS_PORT,
                "--tls-keylog",
                &k,
                "--format",
                format,
            ]);
            for s in &secrets {
                let half = &s[..s.len() / 2];
                assert!(
                    !out.contains(half) && !err.contains(half),
                    "a secret was printed ({name}, {format}): {half}"
                );
            }
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn keylog_problems_name_the_file_and_line() {
    let (code, _, err) = run(&[
        "analyze",
        &pcap("tls13-aes128-gcm"),
        "--tls-keylog",
        "captures/tls/missing.keylog",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("captures/tls/missing.keylog") && err.contains("cannot read TLS key log"),
        "{err}"
    );
    let dir = tempdir("bad");
    let bad = dir.join("bad.keylog");
    std::fs::write(&bad, "CLIENT_RANDOM nothex 00\n").unwrap();
    let (code, _, err) = run(&[
        "analyze",
        &pcap("tls13-aes128-gcm"),
        "--http-port",
        TLS_PORT,
        "--tls-keylog",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("bad.keylog line 1: the client random is not 64 hex digits"),
        "{err}"
    );
    assert!(err.contains("adds no TLS secrets"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_and_summary_count_https() {
    let name = "python-send-tls13";
    let (code, out, err) = run(&[
        "analyze",
        &pcap(name),
        "--http-port",
        TLS_PORT,
        "--key",
        KEY,
        "--tls-keylog",
        &keylog(name),
        "--format",
        "text",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("HTTPS"), "{out}");
    assert!(out.contains("6 messages, 3 transactions"), "{out}");
    let (code, _, err) = run(&[
        "check",
        &pcap(name),
        "--http-port",
        TLS_PORT,
        "--key",
        KEY,
        "--tls-keylog",
        &keylog(name),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// Live: secrets that reach the key log after the handshake was captured (a browser
/// writes them while it connects) still decrypt the held records.
#[test]
fn live_analysis_waits_for_secrets_written_later() {
    use ecr_capture::analyzer::{Analyzer, Config};
    use ecr_capture::record::Record;
    for (name, add_after) in [
        ("tls13-aes128-gcm", Some(8usize)),
        ("tls12-rsa-aes128-cbc-sha-etm", Some(12)),
        ("tls13-chacha20-poly1305", Some(24)), // after both exchanges
        ("tls13-aes256-gcm", None),            // never
    ] {
        let text = std::fs::read(root().join(keylog(name))).unwrap();
        let cfg = Config {
            http_ports: vec![29001],
            tls_wait_for_secrets: true,
            ..Config::default()
        };
        let mut recs = vec![];
        let mut sink = |r: Record| recs.push(serde_json::to_value(&r).unwrap());
        let mut a = Analyzer::new(cfg, ecr_capture::keys::KeySet::new(), &mut sink);
        let mut reader = ecr_capture::source::CaptureReader::open(root().join(pcap(name))).unwrap();
        let mut n = 0;
        while let Some(p) = reader.next_packet() {
            a.packet(&p.unwrap());
            n += 1;
            if add_after == Some(n) {
                assert!(a.add_tls_keylog(&text).is_empty());
            }
        }
        a.finish(0, vec![]);
        let messages = count(&recs, "message");
        if add_after.is_some() {
            assert_eq!(messages, 4, "{name}: {recs:?}");
            assert!(
                !recs
                    .iter()
                    .any(|r| r["code"].as_str().is_some_and(|c| c.starts_with("tls-"))),
                "{name}: {recs:?}"
            );
            // The held records keep their capture times: latency is not zero.
            let t: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "transaction").collect();
            assert!(
                t.iter().all(|t| t["latency_ms"].as_f64().unwrap() > 0.0),
                "{t:?}"
            );
        } else {
            assert_eq!(messages, 0);
            assert_eq!(findings(&recs, "tls-encrypted").len(), 1, "{recs:?}");
        }
    }
}

/// A capture that starts after the handshake: described as TLS, not taken for HTTP.
#[test]
fn a_connection_captured_after_its_handshake_is_reported_as_tls() {
    use ecr_capture::analyzer::{Analyzer, Config};
    use ecr_capture::record::Record;
    let name = "tls12-ecdhe-rsa-aes128-gcm";
    let mut recs = vec![];
    let mut sink = |r: Record| recs.push(serde_json::to_value(&r).unwrap());
    let cfg = Config {
        http_ports: vec![29001],
        ..Config::default()
    };
    let mut a = Analyzer::new(cfg, ecr_capture::keys::KeySet::new(), &mut sink);
    let mut reader = ecr_capture::source::CaptureReader::open(root().join(pcap(name))).unwrap();
    let mut n = 0;
    while let Some(p) = reader.next_packet() {
        n += 1;
        if n > 12 {
            a.packet(&p.unwrap());
        }
    }
    a.finish(0, vec![]);
    let f = findings(&recs, "tls-encrypted");
    assert_eq!(f.len(), 1, "{recs:?}");
    assert!(f[0]["detail"]
        .as_str()
        .unwrap()
        .contains("handshake is not in the capture"));
    // The capture's plain-HTTP leg on port 29101 is not analysed here, which
    // ecr-on-other-port points out; nothing else may be reported.
    assert_eq!(
        recs.iter()
            .filter(|r| r["kind"] == "finding" && r["code"] != "ecr-on-other-port")
            .count(),
        1,
        "{recs:?}"
    );
}

/// `tls13-keyupdate`: `openssl s_client` sent a KeyUpdate with update_requested
/// (`K`), the server (OpenSSL) answered with its own, then the client sent one
/// without (`k`); a request and its answer follow each. tshark locates the
/// KeyUpdates independently; every message after them must decrypt, with no finding.
#[test]
fn tls13_key_updates_in_both_directions_are_followed() {
    let name = "tls13-keyupdate";
    let (_, recs) = analyze(&pcap(name), TLS_PORT, &["--tls-keylog", &keylog(name)]);
    let s = summary(&recs);
    assert_eq!(s["messages"], 6, "{s}");
    assert_eq!(s["transactions"], 3, "{s}");
    assert_eq!(count(&recs, "finding"), 0, "{recs:#?}");
    if !have_tshark() {
        return;
    }
    let out = Command::new("tshark")
        .current_dir(root())
        .args([
            "-n",
            "-r",
            &pcap(name),
            "-o",
            &format!("tls.keylog_file:{}", keylog(name)),
            "-d",
            &format!("tcp.port=={TLS_PORT},tls"),
            "-Y",
            "tls.handshake.type == 24",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "tcp.srcport",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark failed on {name}");
    // (frame, sent by the server?)
    let updates: Vec<(u64, bool)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (frame, port) = l.split_once('\t').unwrap();
            (frame.parse().unwrap(), port == TLS_PORT)
        })
        .collect();
    assert_eq!(
        updates.iter().map(|u| u.1).collect::<Vec<_>>(),
        [false, true, false],
        "client K, server's answer, client k: {updates:?}"
    );
    let messages: Vec<(u64, bool)> = recs
        .iter()
        .filter(|r| r["kind"] == "message")
        .map(|m| (m["packet"].as_u64().unwrap(), m["role"] == "response"))
        .collect();
    for (frame, server) in &updates {
        // The same side speaks again after its KeyUpdate, under the new keys.
        assert!(
            messages.iter().any(|(p, resp)| p > frame && resp == server),
            "nothing decrypted after the KeyUpdate in frame {frame}: {messages:?}"
        );
    }
}
