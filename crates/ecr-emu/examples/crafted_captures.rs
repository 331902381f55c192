//! Crafts the sample captures of `captures/` whose byte-exact shape no live run of
//! `ecr-sniff send` and `emulate` gives (see `captures/regenerate.sh`, which makes
//! the others from live traffic): several requests in one TCP segment
//! (pipelining), a keep-alive connection, a result over 1024 bytes in one frame,
//! and malformed 0x2f6e frames answered on the same connection.
//!
//! ```sh
//! cargo run -p ecr-emu --example crafted_captures -- captures            # all
//! cargo run -p ecr-emu --example crafted_captures -- captures NAME.pcap  # one
//! cargo run -p ecr-emu --example crafted_captures -- --list              # the names
//! ```
//!
//! Nothing here is a second implementation of the protocol: requests are built
//! with ecr-proto's builders (`envelope::build_request`, `frame::FrameRepr`,
//! `frame::split_message`), every answer comes from the emulator's own terminal
//! (`ecr_emu::Terminal`, the one `ecr-sniff emulate` runs), and the packets are
//! written with ecr-capture's `craft` builders (Ethernet, IPv4 on 127.0.0.1, classic
//! pcap). Timestamps start at 2025-01-01 and advance by the simulated
//! latencies, so the files are the same on every run except for the terminal's
//! clock in its answers (sysdtm).

use std::process::ExitCode;
use std::time::Duration;

use ecr_capture::craft::{Flow, PcapBuilder};
use ecr_emu::{Faults, Instruction, Terminal, TerminalConfig};
use ecr_proto::catalogue::FuncType;
use ecr_proto::cipher::PosKey;
use ecr_proto::envelope::{build_request, RequestDialect};
use ecr_proto::frame::{split_message, ErrorCode, FrameRepr, FrameType, MAX_FRAGMENT_DATA};
use ecr_proto::value::{Object, Value};

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";
const MS: i64 = 1_000_000;
/// Both ends on 127.0.0.1, as in the live captures.
const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

type Res<T> = Result<T, String>;

/// The cash register and the terminal of one capture.
struct Sim {
    b: PcapBuilder,
    term: Terminal,
    key: PosKey,
    port: u16,
}

impl Sim {
    fn new(key: &str) -> Res<Sim> {
        let key = PosKey::new(key).map_err(|e| e.to_string())?;
        Ok(Sim {
            b: PcapBuilder::new(),
            term: Terminal::new(TerminalConfig {
                key: key.clone(),
                delay: Duration::ZERO,
                faults: Faults::default(),
                merchant: "ECR Sniff Test Shop".into(),
            }),
            key,
            port: 40000,
        })
    }

    /// A new connection to `port` (SYN, SYN-ACK).
    fn open(&mut self, port: u16) -> Flow {
        self.port += 1;
        Flow::open_between(&mut self.b, LOOPBACK, LOOPBACK, self.port, port)
    }

    fn wait(&mut self, ms: i64) {
        self.b.advance(ms * MS);
    }

    /// The terminal's answer to a request body (HTTP POST when `http`).
    fn answer(&self, http: bool, body: &[u8]) -> Vec<u8> {
        self.term.handle(http.then_some("POST"), body).body
    }

    fn request(&self, dialect: RequestDialect, i: &Instruction) -> Vec<u8> {
        build_request(dialect, &i.content(), &self.key)
    }
}

fn pay(amt: &str, channel: &str, out_trade_no: &str) -> Instruction {
    Instruction::Pay {
        amt: amt.into(),
        channel: channel.into(),
        out_trade_no: Some(out_trade_no.into()),
        payment_timeout: None,
    }
}

fn by_syssn(f: fn(String) -> Instruction, syssn: &str) -> Instruction {
    f(syssn.to_string())
}

fn inquiry(syssn: String) -> Instruction {
    Instruction::Inquiry {
        order_id: Some(syssn),
        out_trade_no: None,
    }
}

fn receipt(syssn: String) -> Instruction {
    Instruction::Receipt { order_id: syssn }
}

/// The syssn in a terminal's answer.
fn syssn(answer: &[u8]) -> Res<String> {
    let text = String::from_utf8_lossy(answer);
    let key = "\"syssn\\\":\\\"";
    let at = text
        .find(key)
        .ok_or_else(|| format!("no syssn in the answer {text}"))?;
    let rest = text.get(at + key.len()..).unwrap_or("");
    Ok(rest.chars().take_while(char::is_ascii_digit).collect())
}

fn path_of(i: &Instruction) -> &'static str {
    i.func_type()
        .and_then(FuncType::http_path)
        .unwrap_or("/api/pos/trade")
}

fn http_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn http_response(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// An envelope-encrypted body without its JSON string quotes (bare Base64).
fn bare(body: &[u8]) -> Vec<u8> {
    body.strip_prefix(b"\"")
        .and_then(|b| b.strip_suffix(b"\""))
        .unwrap_or(body)
        .to_vec()
}

/// One request: the instruction, its body and the terminal's answer.
type Step = (Instruction, Vec<u8>, Vec<u8>);

/// Six requests of every func_type, built one after another as the terminal
/// answers (the later ones name the payment's syssn); returns (request, answer).
fn six(
    s: &Sim,
    dialect: RequestDialect,
    payment: &Instruction,
    refund_amount: &str,
) -> Res<Vec<Step>> {
    let mut out = vec![];
    let body = s.request(dialect, payment);
    let ans = s.answer(true, &body);
    let id = syssn(&ans)?;
    out.push((payment.clone(), body, ans));
    for i in [
        by_syssn(inquiry, &id),
        by_syssn(receipt, &id),
        Instruction::Refund {
            order_id: id.clone(),
            refund_amount: Some(refund_amount.into()),
        },
        Instruction::Summary,
        Instruction::Cancel,
    ] {
        let body = s.request(dialect, &i);
        let ans = s.answer(true, &body);
        out.push((i, body, ans));
    }
    Ok(out)
}

fn http_content_encrypted_pipelined() -> Res<Vec<u8>> {
    let mut s = Sim::new(KEY)?;
    let x = six(
        &s,
        RequestDialect::ContentEncrypted,
        &pay("88.8", "wx", "ECR-PIPE"),
        "88.80",
    )?;
    let mut f = s.open(9001);
    let all: Vec<u8> = x
        .iter()
        .flat_map(|(i, body, _)| http_request(path_of(i), body))
        .collect();
    f.client(&mut s.b, &all, 65000);
    for (_, _, ans) in &x {
        s.wait(50);
        f.server(&mut s.b, &http_response(ans), 65000);
    }
    Ok(s.b.finish())
}

fn http_envelope_encrypted_keepalive() -> Res<Vec<u8>> {
    let mut s = Sim::new(KEY)?;
    let x = six(
        &s,
        RequestDialect::EnvelopeEncrypted,
        &pay("39.9", "alipay", "ECR-KEEP"),
        "39.90",
    )?;
    let mut f = s.open(9001);
    for (k, (i, body, ans)) in x.iter().enumerate() {
        let req = http_request(path_of(i), body);
        if k == 0 {
            // The payment's head and body in two segments.
            let head = req.len() - body.len();
            f.client(&mut s.b, req.get(..head).unwrap_or(&req), 65000);
            s.wait(2);
            f.client(&mut s.b, req.get(head..).unwrap_or(&[]), 65000);
        } else {
            f.client(&mut s.b, &req, 65000);
        }
        s.wait(if k == 0 { 300 } else { 50 });
        f.server(&mut s.b, &http_response(ans), 65000);
        s.wait(20);
    }
    Ok(s.b.finish())
}

/// A frame of the cash register or the terminal (never fails for these sizes).
fn frame(t: FrameType, r: u8, data: &[u8]) -> Vec<u8> {
    FrameRepr::new(t, r, data).to_bytes().unwrap_or_default()
}

/// The terminal's result as its own request message, split per spec 10.7.
fn result(r: u8, data: &[u8]) -> Vec<u8> {
    split_message(FrameType::REQUEST, r, data, MAX_FRAGMENT_DATA).unwrap_or_default()
}

/// A frame link over TCP 9002: refs of both sides and the terminal.
struct Link {
    f: Flow,
    ecr_ref: u8,
    pos_ref: u8,
}

impl Link {
    fn open(s: &mut Sim) -> Link {
        Link {
            f: s.open(9002),
            ecr_ref: 0,
            pos_ref: 0,
        }
    }

    fn next_ecr(&mut self) -> u8 {
        self.ecr_ref = self.ecr_ref % 0x7f + 1;
        self.ecr_ref
    }

    fn next_pos(&mut self) -> u8 {
        self.pos_ref = self.pos_ref % 0x7f + 1;
        self.pos_ref
    }

    /// One clean exchange: request `prefix + frame(ref)`, ack, result, the ECR's ack.
    /// Returns the terminal's answer.
    fn exchange(&mut self, s: &mut Sim, prefix: &[u8], r: u8, body: &[u8]) -> Vec<u8> {
        let mut seg = prefix.to_vec();
        seg.extend(frame(FrameType::REQUEST, r, body));
        self.f.client(&mut s.b, &seg, 65000);
        s.wait(5);
        self.f
            .server(&mut s.b, &frame(FrameType::ACK, r, b""), 65000);
        let ans = s.answer(false, body);
        s.wait(300);
        let p = self.next_pos();
        self.f.server(&mut s.b, &result(p, &ans), 65000);
        s.wait(5);
        self.f
            .client(&mut s.b, &frame(FrameType::ACK, p, b""), 65000);
        s.wait(50);
        ans
    }
}

/// A clean payment, then `bad` (a damaged frame with ref 2) answered with error
/// frame 0x31, then a clean payment with ref 3, on one connection. (`send
/// --frame-fault version|end-marker` makes the frame live, but `emulate` answers
/// such a frame only once the next frame arrives, so the exchange is crafted.)
fn malformed(damage: fn(Vec<u8>) -> Vec<u8>) -> Res<Vec<u8>> {
    let mut s = Sim::new(KEY)?;
    let mut l = Link::open(&mut s);
    let p = s.request(
        RequestDialect::EnvelopeEncrypted,
        &pay("10.1", "wx", "ECR-F1"),
    );
    let r = l.next_ecr();
    l.exchange(&mut s, b"", r, &bare(&p));
    let p = s.request(
        RequestDialect::EnvelopeEncrypted,
        &pay("10.2", "wx", "ECR-F2"),
    );
    let r = l.next_ecr();
    l.f.client(
        &mut s.b,
        &damage(frame(FrameType::REQUEST, r, &bare(&p))),
        65000,
    );
    s.wait(5);
    let format_error = FrameRepr::error(ErrorCode::FORMAT, r).to_bytes();
    l.f.server(&mut s.b, &format_error.unwrap_or_default(), 65000);
    s.wait(50);
    let p = s.request(
        RequestDialect::EnvelopeEncrypted,
        &pay("10.3", "wx", "ECR-F3"),
    );
    let r = l.next_ecr();
    l.exchange(&mut s, b"", r, &bare(&p));
    Ok(s.b.finish())
}

fn tcp_frames_bad_end_marker() -> Res<Vec<u8>> {
    malformed(|mut f| {
        let n = f.len();
        if let Some(end) = f.get_mut(n - 2..) {
            end.copy_from_slice(b"\r\n");
        }
        f
    })
}

fn tcp_frames_unsupported_version() -> Res<Vec<u8>> {
    malformed(|mut f| {
        if let Some(v) = f.get_mut(2) {
            *v = 0x02;
        }
        f
    })
}

/// Junk bytes before the second request frame of a connection. (`send
/// --frame-fault garbage` sends them live, but only at the start of a
/// connection, which the analyzer then reads as text.)
fn tcp_frames_garbage_bytes() -> Res<Vec<u8>> {
    let mut s = Sim::new(KEY)?;
    let mut l = Link::open(&mut s);
    for (k, amt) in ["10.1", "10.2"].into_iter().enumerate() {
        let p = s.request(
            RequestDialect::EnvelopeEncrypted,
            &pay(amt, "wx", &format!("ECR-G{}", k + 1)),
        );
        let r = l.next_ecr();
        let prefix: &[u8] = if k == 1 { b"\r\nAT+OK\r\n" } else { b"" };
        l.exchange(&mut s, prefix, r, &bare(&p));
    }
    Ok(s.b.finish())
}

fn tcp_frames_oversize_frame() -> Res<Vec<u8>> {
    let mut s = Sim::new(KEY)?;
    let mut l = Link::open(&mut s);
    let q = s.request(RequestDialect::EnvelopeEncrypted, &Instruction::Summary);
    let q = bare(&q);
    let r = l.next_ecr();
    l.f.client(&mut s.b, &frame(FrameType::REQUEST, r, &q), 65000);
    s.wait(5);
    l.f.server(&mut s.b, &frame(FrameType::ACK, r, b""), 65000);
    // The terminal's summary with its printed lines: about 1800 bytes in ONE frame.
    let ans = s.answer(false, &q);
    let v = Value::parse_json(&ans).map_err(|e| e.to_string())?;
    let mut o: Object = v.as_object().cloned().ok_or("answer is no object")?;
    let lines = (1..=40)
        .map(|n| Value::from(format!("line {n:02}: ECR Sniff Test Shop summary")))
        .collect();
    o.push("print_lines", Value::Array(lines));
    let ans = Value::Object(o).to_json_string().into_bytes();
    s.wait(50);
    let p = l.next_pos();
    l.f.server(&mut s.b, &frame(FrameType::REQUEST, p, &ans), 65000);
    s.wait(5);
    l.f.client(&mut s.b, &frame(FrameType::ACK, p, b""), 65000);
    Ok(s.b.finish())
}

type Maker = fn() -> Res<Vec<u8>>;

const ALL: &[(&str, Maker)] = &[
    (
        "http-content-encrypted-pipelined.pcap",
        http_content_encrypted_pipelined,
    ),
    (
        "http-envelope-encrypted-keepalive.pcap",
        http_envelope_encrypted_keepalive,
    ),
    ("tcp-frames-garbage-bytes.pcap", tcp_frames_garbage_bytes),
    ("tcp-frames-bad-end-marker.pcap", tcp_frames_bad_end_marker),
    (
        "tcp-frames-unsupported-version.pcap",
        tcp_frames_unsupported_version,
    ),
    ("tcp-frames-oversize-frame.pcap", tcp_frames_oversize_frame),
];

fn run(args: &[String]) -> Res<()> {
    if args == ["--list"] {
        for (name, _) in ALL {
            println!("{name}");
        }
        return Ok(());
    }
    let [dir, only @ ..] = args else {
        return Err("usage: crafted_captures DIR [FILE...] | --list".into());
    };
    for name in only {
        if !ALL.iter().any(|(n, _)| n == name) {
            return Err(format!("{name} is not made here"));
        }
    }
    for (name, make) in ALL {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let bytes = make().map_err(|e| format!("{name}: {e}"))?;
        let path = format!("{dir}/{name}");
        std::fs::write(&path, bytes).map_err(|e| format!("{path}: {e}"))?;
        println!("== {path}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crafted_captures: {e}");
            ExitCode::from(2)
        }
    }
}
