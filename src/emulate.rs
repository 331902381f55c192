//! `ecr-sniff emulate`: act as the terminal. Answers requests over HTTP, raw TCP
//! and/or a serial line like a Smart POS, with optional customer delay and fault
//! injection, and logs one line per request.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use ecr_emu::server::{Emulator, Limits, SerialSpec, ServeConfig};
use ecr_emu::{Fault, Faults, Terminal, TerminalConfig};

use crate::options::KeyArgs;

const AFTER: &str = "\
Answers like a terminal: 6000 with realistic data (syssn, txamt in cents, txcurrcd 344,
busicd from the channel, a masked card number for card channels), 4003 on a bad
digest, 5001 when the request does not decrypt, 4004 on a method other than POST,
4006 on bad parameters, 4005 for an unknown order, 6001 on cancel (a payment waiting
in --delay is cancelled too). Payments are remembered, so refunds, inquiries and
receipts refer to them. On serial, each request frame is acknowledged (0x20) or
rejected (0x33 decryption, 0x34 data format, 0x35 fragments late, 0x31 malformed),
and the result follows as a 0x10 message of its own (D2).

Faults (--fault, repeatable):
  drop-ack          serial: never ack a request frame
  delay-ack=MS      serial: ack after MS milliseconds (default 1500)
  split=MS          split every answer in two, MS ms apart (default 600)
  corrupt           damage the answer (serial: its end marker; TCP/HTTP: a body byte)
  wrong-digest      answer 4003 to every request
  wrong-key         use another POS-KEY than the cash register
  close-early       close without answering (serial: ack, then no result)
  encrypt-response=body|data
                    encrypt the answers with the POS-KEY (D5): the whole body as
                    Base64 of AES, or only the data field
  stray-ack         frames: after each result, an ack with ref 0x55 that no
                    request used (an unexpected-ack)

HTTPS (--tls), as Haojin 4.34.12 and later serve port 9001: with a self-signed
ECDSA certificate made at start (its SHA-256 fingerprint is printed; --save-cert
writes it for `send --cert` or a browser), or --cert/--cert-key PEM files (use an RSA
certificate for the TLS 1.2 ECDHE-RSA suites). TLS 1.2 and 1.3 with AES-GCM and
ChaCha20-Poly1305 (rustls: no CBC suites). When SSLKEYLOGFILE is set, the TLS
secrets of every connection are appended to that file, so that a capture of the
emulator can be decrypted (`analyze --tls-keylog`, Wireshark's tls.keylog_file).

Browser POSes (CORS): a preflight (OPTIONS with Access-Control-Request-Method) is
answered 204 with Access-Control-Allow-Origin, -Methods, -Headers and -Max-Age;
every answer carries Access-Control-Allow-Origin, over HTTP and HTTPS.

Examples:
  ecr-sniff emulate --key f46b1f08bec1f39104792cc79ec9aacd
  SSLKEYLOGFILE=keys.log ecr-sniff emulate --key ... --tls --save-cert emu.pem
  ecr-sniff emulate --key ... --tls --cert terminal.pem --cert-key terminal.key
  ecr-sniff emulate --key-file pos.key --serial /dev/ttyUSB0 --no-http --no-tcp
  ecr-sniff emulate --key ... --serial pty --serial-capture serial.pcapng
  ecr-sniff emulate --key ... --http-port 0 --tcp-port 0 --delay 3 --fault split=700

Slow or silent clients cannot hold it: a request's headers must arrive within
--header-timeout and its body (on TCP: the whole message) within --body-timeout, a
connection without a request in progress is closed after --idle-timeout, and
writing an answer to a client that does not read gives up after --body-timeout.
Each listener serves up to --max-connections at once; when full, the connection
idle longest is closed to make room. Idle, the emulator sleeps (no CPU).

It prints the addresses it serves (`http: 127.0.0.1:9001`, or `https: ...` with --tls),
then one line per request (and per TLS handshake).
Stop it with Ctrl-C (SIGINT) or SIGTERM.";

/// Arguments of `ecr-sniff emulate`.
#[derive(Debug, Args)]
#[command(after_help = AFTER)]
pub struct EmulateArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// Address to listen on (loopback unless given; 0.0.0.0 for every interface).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    listen: IpAddr,
    /// HTTP port (0 picks a free one).
    #[arg(long = "http-port", value_name = "PORT", default_value = "9001")]
    http_port: u16,
    /// Raw TCP port (0 picks a free one).
    #[arg(long = "tcp-port", value_name = "PORT", default_value = "9002")]
    tcp_port: u16,
    /// Do not serve HTTP.
    #[arg(long = "no-http")]
    no_http: bool,
    /// Do not serve raw TCP.
    #[arg(long = "no-tcp")]
    no_tcp: bool,
    /// Serve a serial line: a device (/dev/ttyUSB0), or `pty` for a new
    /// pseudo-terminal whose path is printed.
    #[arg(long, value_name = "DEVICE|pty")]
    serial: Option<String>,
    /// Write the serial traffic to FILE (the project's serial capture format, D9).
    #[arg(long = "serial-capture", value_name = "FILE", requires = "serial")]
    serial_capture: Option<PathBuf>,
    /// Simulated customer time before a payment or refund completes: seconds
    /// (`2.5`) or milliseconds (`800ms`).
    #[arg(long, value_name = "TIME", default_value = "0")]
    delay: String,
    /// Inject a fault (repeat for several); see below.
    #[arg(long = "fault", value_name = "FAULT")]
    fault: Vec<Fault>,
    /// Serve HTTPS instead of HTTP on the HTTP port.
    #[arg(long)]
    tls: bool,
    /// With --tls: the certificate (PEM, leaf first) instead of a self-signed one
    /// made at start.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert_key"])]
    cert: Option<PathBuf>,
    /// With --cert: its private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long = "cert-key", value_name = "FILE", requires = "cert")]
    cert_key: Option<PathBuf>,
    /// With --tls: write the certificate made at start to FILE (PEM), for
    /// `send --cert FILE` or a browser's trust store.
    #[arg(
        long = "save-cert",
        value_name = "FILE",
        requires = "tls",
        conflicts_with = "cert"
    )]
    save_cert: Option<PathBuf>,
    /// Merchant name in the answers.
    #[arg(long, default_value = "ECR Sniff Test Shop")]
    merchant: String,
    /// HTTP: time allowed from a request's first byte to the end of its headers
    /// (seconds, or milliseconds with `ms`); a late request is answered 408.
    #[arg(long = "header-timeout", value_name = "TIME", default_value = "10")]
    header_timeout: String,
    /// Time allowed for an HTTP body, or a whole TCP message, and for writing an
    /// answer to the client.
    #[arg(long = "body-timeout", value_name = "TIME", default_value = "30")]
    body_timeout: String,
    /// A connection without a request in progress is closed after this.
    #[arg(long = "idle-timeout", value_name = "TIME", default_value = "120")]
    idle_timeout: String,
    /// Most connections per listener (HTTP, TCP); when full, the one idle longest
    /// is closed to make room for a new one.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_connections: u32,
}

fn parse_delay(text: &str) -> Result<Duration> {
    parse_time(text, 0.0).with_context(|| {
        format!("--delay {text:?}: give seconds (2.5) or milliseconds (800ms), at most an hour")
    })
}

/// A timeout option: more than zero, at most an hour.
fn parse_timeout(option: &str, text: &str) -> Result<Duration> {
    parse_time(text, 0.001)
        .filter(|d| !d.is_zero())
        .with_context(|| {
            format!(
                "{option} {text:?}: give seconds (2.5) or milliseconds (800ms), from 1 ms to an hour"
            )
        })
}

/// Seconds (`2.5`) or milliseconds (`800ms`), from `min` seconds to an hour.
fn parse_time(text: &str, min: f64) -> Option<Duration> {
    let t = text.trim();
    let secs = if let Some(ms) = t.strip_suffix("ms") {
        ms.trim().parse::<u64>().ok().map(|ms| ms as f64 / 1000.0)
    } else {
        t.strip_suffix('s').unwrap_or(t).trim().parse::<f64>().ok()
    };
    secs.filter(|s| s.is_finite() && (min..=3600.0).contains(s))
        .map(Duration::from_secs_f64)
}

pub fn run(a: EmulateArgs) -> Result<ExitCode> {
    let mut keys = crate::options::load_keys(&a.keys)?;
    let key = keys
        .for_terminal(None)
        .0
        .get(0)
        .cloned()
        .context("the emulated terminal needs a POS-KEY: --key, --key-file or ECR_POS_KEY")?;
    let delay = parse_delay(&a.delay)?;
    let serial = a.serial.as_deref().map(|s| match s {
        "pty" => SerialSpec::Pty,
        dev => SerialSpec::Device(PathBuf::from(dev)),
    });
    if a.no_http && a.no_tcp && serial.is_none() {
        bail!("nothing to serve: --no-http and --no-tcp without --serial");
    }
    if a.tls && a.no_http {
        bail!("--tls serves HTTPS on the HTTP port: it cannot go with --no-http");
    }
    let tls = if a.tls { Some(tls_identity(&a)?) } else { None };
    let cfg = ServeConfig {
        http: (!a.no_http).then_some(SocketAddr::new(a.listen, a.http_port)),
        tcp: (!a.no_tcp).then_some(SocketAddr::new(a.listen, a.tcp_port)),
        serial,
        serial_capture: a.serial_capture.clone(),
        tls: tls.as_ref().map(|t| t.config.clone()),
        limits: Limits {
            header_timeout: parse_timeout("--header-timeout", &a.header_timeout)?,
            body_timeout: parse_timeout("--body-timeout", &a.body_timeout)?,
            idle_timeout: parse_timeout("--idle-timeout", &a.idle_timeout)?,
            max_connections: a.max_connections as usize,
        },
    };
    let faults = Faults(a.fault.clone());
    let terminal = Arc::new(Terminal::new(TerminalConfig {
        key,
        delay,
        faults: faults.clone(),
        merchant: a.merchant.clone(),
    }));
    let stop = ecr_emu::signals::stop_on_signals().context("installing the signal handlers")?;
    // Lines from several threads; each written whole and flushed, so a script
    // reading the pipe sees it at once.
    let lock = Arc::new(Mutex::new(()));
    let log: ecr_emu::server::Log = Arc::new(move |line: String| {
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    });
    let em = Emulator::start(&cfg, terminal, log.clone())?;
    let fault_text = if faults.0.is_empty() {
        "none".to_string()
    } else {
        faults
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    log(format!(
        "emulating a terminal: delay {} ms, faults {fault_text}",
        delay.as_millis()
    ));
    if let Some(h) = em.http_addr {
        if tls.is_some() {
            log(format!("https: {h}"));
        } else {
            log(format!("http: {h}"));
        }
    }
    if let Some(t) = &tls {
        log(format!(
            "tls: {}; SHA-256 fingerprint {}",
            t.origin, t.fingerprint
        ));
        if let Some(p) = &a.save_cert {
            log(format!("tls: certificate written to {}", p.display()));
        }
        if let Some(k) = &t.keylog {
            log(format!(
                "tls: TLS secrets are appended to {} (SSLKEYLOGFILE); keep that file as secret as the POS-KEY",
                k.display()
            ));
        }
    }
    if let Some(t) = em.tcp_addr {
        log(format!("tcp: {t}"));
    }
    if let Some(p) = &em.serial_path {
        log(format!("serial: {}", p.display()));
    }
    if !a.listen.is_loopback() {
        log(format!(
            "note: listening on {} (not loopback): anyone on the network can reach the emulator",
            a.listen
        ));
    }
    em.run_until(stop).context("stopping (serial capture)")?;
    log("stopped".to_string());
    Ok(ExitCode::SUCCESS)
}

/// The certificate, its rustls configuration and the key log of `--tls`.
fn tls_identity(a: &EmulateArgs) -> Result<ecr_emu::tls::ServerIdentity> {
    use ecr_emu::tls::CertSource;
    let source = match (&a.cert, &a.cert_key) {
        (Some(cert), Some(key)) => CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            let mut names = vec!["localhost".to_string()];
            if a.listen.is_unspecified() {
                names.push("127.0.0.1".into());
            } else {
                names.push(a.listen.to_string());
            }
            CertSource::Generate(names)
        }
    };
    let id = ecr_emu::tls::server_identity(&source).context("--tls")?;
    if let Some(p) = &a.save_cert {
        std::fs::write(p, &id.cert_pem).with_context(|| format!("--save-cert {}", p.display()))?;
    }
    Ok(id)
}
