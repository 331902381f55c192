//! `ecr-sniff send`: act as the cash register. Builds a request from options, signs
//! and encrypts it, sends it over HTTP, TCP or a serial line and prints the request
//! and the answer as the same records `analyze` prints.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::findings::Code;
use ecr_capture::message::{decode_body, Context};
use ecr_capture::output::{self, RecordWriter};
use ecr_capture::record::{
    Direction, FindingRecord, HttpInfo, Record, Sink, TransactionRecord, Transport,
};
use ecr_emu::client::{self, Exchange, Failure, FrameFault, SendOptions, TcpFraming};
use ecr_emu::{Instruction, Target};
use ecr_proto::cipher::{KeyInterpretation, KeyRing};
use ecr_proto::envelope::{self, Message, RequestDialect};

use crate::options::{ColorChoice, FormatArg, KeyArgs};

const AFTER: &str = "\
The request is signed (md5 digest, D4) and encrypted with the POS-KEY, sent, and the
request and the answer are printed decoded, as `ecr-sniff analyze` prints them.

Targets:
  http://HOST[:9001]     HTTP POST to the func_type's path (spec section 8)
  https://HOST[:9001]    the same over TLS (Haojin 4.34.12 and later). Terminals serve
                         self-signed certificates, so an unknown one is refused: pin
                         the terminal's certificate with --cert FILE, or accept any
                         with --insecure. SSLKEYLOGFILE=FILE appends the TLS secrets
                         to FILE, for decrypting a capture of the exchange
  tcp://HOST[:9002]      raw TCP; --tcp-framing newline (default), half-close, json
                         (one JSON value, no delimiter) or frames
  serial:/dev/ttyUSB0    0x2f6e frames: waits 1000 ms for the 0x20 ack, then for the
                         terminal's result, which it acknowledges

Examples:
  ecr-sniff send --to http://192.168.1.20:9001 --key-file pos.key pay --amt 10.10 --channel wx --out-trade-no INV-1001
  ecr-sniff send --to https://192.168.1.20:9001 --cert terminal.pem --key-file pos.key summary
  ecr-sniff send --to tcp://127.0.0.1:9002 --key f46b1f08bec1f39104792cc79ec9aacd inquiry --out-trade-no INV-1001
  ecr-sniff send --to serial:/dev/ttyUSB0 --key ... refund --order-id 20250703155400020061880690
  ecr-sniff send --to http://127.0.0.1:9001 --key ... --dialect plain --json '{\"func_type\":3002}'
  ecr-sniff send --to http://127.0.0.1:9001 --key ... --method GET summary     # the terminal should answer 4004
  ecr-sniff send --to tcp://127.0.0.1:9002 --key ... --tcp-framing frames --frame-fault version summary   # error frame 0x31

Exit status: 0 = the terminal answered 6000 (6001 for cancel), 1 = it answered with
another code or rejected the frame, 2 = bad usage, no connection or no answer in time.";

/// Arguments of `ecr-sniff send`.
#[derive(Debug, Args)]
#[command(after_help = AFTER)]
pub struct SendArgs {
    /// The terminal: http://HOST:9001, https://HOST:9001, tcp://HOST:9002 or
    /// serial:/dev/ttyUSB0.
    #[arg(long, value_name = "TARGET", global = true)]
    to: Option<String>,
    /// Envelope dialect (D4). envelope-encrypted is what real terminals accept.
    #[arg(long, value_enum, default_value = "envelope-encrypted", global = true)]
    dialect: DialectArg,
    #[command(flatten)]
    keys: KeyArgs,
    /// How the request is delimited on tcp:// (D6).
    #[arg(
        long = "tcp-framing",
        value_enum,
        default_value = "newline",
        global = true
    )]
    tcp_framing: FramingArg,
    /// Seconds to wait for the answer (a payment waits for the customer); more
    /// than 0, at most 86400.
    #[arg(
        long,
        default_value = "180",
        value_name = "SECS",
        global = true,
        value_parser = parse_timeout
    )]
    timeout: f64,
    /// Milliseconds to wait for the link ack of a frame (spec 10.6); 1 to 600000.
    #[arg(
        long = "ack-timeout",
        default_value = "1000",
        value_name = "MS",
        global = true,
        value_parser = parse_ack_timeout
    )]
    ack_timeout: u64,
    /// HTTP method (to see a terminal's 4004 answer to anything but POST).
    #[arg(long, default_value = "POST", global = true)]
    method: String,
    /// HTTP path instead of the func_type's.
    #[arg(long, value_name = "PATH", global = true)]
    path: Option<String>,
    /// https://: trust exactly the certificate(s) in FILE (PEM or DER), whatever
    /// names they carry: pin the terminal's self-signed certificate.
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "insecure")]
    cert: Option<std::path::PathBuf>,
    /// https://: accept any certificate (still encrypted, but anyone in between
    /// can pose as the terminal), as curl's -k.
    #[arg(long, global = true)]
    insecure: bool,
    /// Send this content object (JSON) instead of one built by a subcommand.
    #[arg(long, value_name = "JSON")]
    json: Option<String>,
    /// Send this digest instead of the right one, as a cash register that signs
    /// wrongly does (the terminal should answer 4003; `analyze` names the mistake
    /// when it recognises one). The sample captures' signing mistakes are made so.
    #[arg(long, value_name = "HEX", global = true)]
    digest: Option<String>,
    /// Send TEXT as the body, as it is, instead of the signed request (a cash
    /// register that sends no ECR envelope: the terminal should answer 4006); the
    /// subcommand or --json still chooses the HTTP path.
    #[arg(
        long = "raw-body",
        value_name = "TEXT",
        global = true,
        conflicts_with = "digest"
    )]
    raw_body: Option<String>,
    /// Over 0x2f6e frames (--tcp-framing frames, serial:): damage the request
    /// frame, as a faulty cash register or line does, to see the terminal's error
    /// frame 0x31 and the analyzer's framing findings: garbage (junk bytes before
    /// the frame; the terminal skips them), version (0x02), type (0x40),
    /// end-marker (0x0d0a), length (data_len off by 10) or ref=N (a ref outside
    /// 1..127, e.g. ref=0 or ref=0x80; the terminal echoes it).
    #[arg(
        long = "frame-fault",
        value_name = "FAULT",
        global = true,
        value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<FrameFault>())
    )]
    frame_fault: Option<FrameFault>,
    /// Envelope-encrypted over http(s):// only: send the Base64 bare, without the
    /// JSON string quotes Odoo puts around it (D4; terminals accept both; TCP
    /// newline framing always sends it bare).
    #[arg(long, global = true)]
    bare: bool,
    /// Envelope-encrypted only: encrypt with this reading of the key text (D3)
    /// instead of the primary one: text-128, text-192, text-256 (the key's bytes)
    /// or hex-128 (a 32-hex-digit key decoded to 16 bytes, which some cash
    /// registers use). The digest still appends the key text; `analyze` reports
    /// which reading decrypted.
    #[arg(
        long = "key-reading",
        value_enum,
        value_name = "READING",
        global = true
    )]
    key_reading: Option<KeyReadingArg>,
    /// Plain dialect only: send `content` as a JSON string holding the object
    /// (`"content":"{\"amt\":10.1,...}"`), as the spec's serial sample does,
    /// instead of the object itself; the digest is the same.
    #[arg(long = "content-string", global = true)]
    content_string: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    format: FormatArg,
    /// When to colour the text output.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    color: ColorChoice,
    #[command(subcommand)]
    what: Option<What>,
}

/// The longest `--timeout`, in seconds (a day).
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// `--timeout`: seconds, more than 0 and at most a day. The error repeats the text
/// as typed (never a 309-digit rendering of 1e308) and states the range.
fn parse_timeout(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= MAX_TIMEOUT_SECS)
        .ok_or_else(|| {
            format!("give seconds, more than 0 and at most {MAX_TIMEOUT_SECS} (e.g. 180 or 2.5)")
        })
}

/// `--ack-timeout`: whole milliseconds from 1 to 600000.
fn parse_ack_timeout(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| (1..=600_000).contains(ms))
        .ok_or_else(|| "give whole milliseconds from 1 to 600000 (spec 10.6: 1000)".to_string())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DialectArg {
    /// {"content":{...},"digest":"..."} in clear.
    Plain,
    /// content is Base64 of AES(JSON); the digest is over that text.
    ContentEncrypted,
    /// The whole body is Base64 of AES({content:..., digest:'...'}) (Odoo).
    EnvelopeEncrypted,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyReadingArg {
    /// The text's 16 bytes (AES-128).
    #[value(name = "text-128")]
    Text128,
    /// The text's 24 bytes (AES-192).
    #[value(name = "text-192")]
    Text192,
    /// The text's 32 bytes (AES-256; the default key, as Odoo reads it).
    #[value(name = "text-256")]
    Text256,
    /// 32 hex digits decoded to 16 bytes (AES-128).
    #[value(name = "hex-128")]
    Hex128,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FramingArg {
    /// The body and a newline (envelope-encrypted bodies as bare Base64).
    Newline,
    /// The body, then the connection's write half is closed.
    HalfClose,
    /// 0x2f6e frames with acks, as on the serial line.
    Frames,
    /// The body as one JSON value with no delimiter (an envelope-encrypted body
    /// as a JSON string literal): the value's end is the message's end.
    Json,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Payment (1001).
    Pay {
        /// Amount in dollars, sent as typed (10.10 = HKD 10.10, D8).
        #[arg(long)]
        amt: String,
        /// Channel: card_payment, wx, alipay, payme, union, fps, octopus, unionpay_card, amex_card.
        #[arg(long)]
        channel: String,
        /// Merchant reference.
        #[arg(long = "out-trade-no")]
        out_trade_no: Option<String>,
        /// payment_timeout in seconds (PayMe: at most 120).
        #[arg(long = "payment-timeout")]
        payment_timeout: Option<u32>,
    },
    /// Refund (1002) of a payment.
    Refund {
        /// The payment's syssn.
        #[arg(long = "order-id")]
        order_id: String,
        /// A partial amount in dollars (card payments: same-day refunds must be full).
        #[arg(long = "refund-amount")]
        refund_amount: Option<String>,
    },
    /// Print a payment's receipt again (3001).
    Receipt {
        /// The payment's syssn.
        #[arg(long = "order-id")]
        order_id: String,
    },
    /// Print the transaction summary (3002).
    Summary,
    /// Transaction inquiry (4001) by syssn or merchant reference.
    Inquiry {
        /// The payment's syssn.
        #[arg(long = "order-id", required_unless_present = "out_trade_no")]
        order_id: Option<String>,
        /// The payment's merchant reference.
        #[arg(long = "out-trade-no")]
        out_trade_no: Option<String>,
    },
    /// Cancel the trade or refund in progress (5001).
    Cancel,
}

fn instruction(a: &SendArgs) -> Result<Instruction> {
    let i = match (&a.what, &a.json) {
        (Some(_), Some(_)) => bail!("give either --json or a subcommand (pay, refund, ...), not both"),
        (None, Some(j)) => Instruction::from_json(j)?,
        (None, None) => bail!("say what to send: pay, refund, receipt, summary, inquiry, cancel or --json (see --help)"),
        (Some(w), None) => match w {
            What::Pay {
                amt,
                channel,
                out_trade_no,
                payment_timeout,
            } => Instruction::Pay {
                amt: amt.clone(),
                channel: channel.clone(),
                out_trade_no: out_trade_no.clone(),
                payment_timeout: *payment_timeout,
            },
            What::Refund {
                order_id,
                refund_amount,
            } => Instruction::Refund {
                order_id: order_id.clone(),
                refund_amount: refund_amount.clone(),
            },
            What::Receipt { order_id } => Instruction::Receipt {
                order_id: order_id.clone(),
            },
            What::Summary => Instruction::Summary,
            What::Inquiry {
                order_id,
                out_trade_no,
            } => Instruction::Inquiry {
                order_id: order_id.clone(),
                out_trade_no: out_trade_no.clone(),
            },
            What::Cancel => Instruction::Cancel,
        },
    };
    i.validate()?;
    Ok(i)
}

/// Collects records and numbers messages as the analyzer does.
struct Collect<'a> {
    writer: Box<dyn RecordWriter + 'a>,
    error: Option<io::Error>,
}

impl Sink for Collect<'_> {
    fn record(&mut self, r: Record) {
        // A single exchange needs no summary.
        if matches!(r, Record::Summary(_)) || self.error.is_some() {
            return;
        }
        if let Err(e) = self.writer.write(&r) {
            self.error = Some(e);
        }
    }
}

pub fn run(a: SendArgs) -> Result<ExitCode> {
    let Some(to) = a.to.as_deref() else {
        bail!("--to is required: http://HOST:9001, https://HOST:9001, tcp://HOST:9002 or serial:/dev/ttyUSB0");
    };
    let target: Target = to.parse()?;
    if (a.cert.is_some() || a.insecure) && !matches!(target, Target::Https(_)) {
        bail!("--cert and --insecure are for https:// targets only");
    }
    let framed = matches!(target, Target::Serial(_))
        || (matches!(target, Target::Tcp(_)) && matches!(a.tcp_framing, FramingArg::Frames));
    if a.frame_fault.is_some() && !framed {
        bail!("--frame-fault damages 0x2f6e frames: use it with --tcp-framing frames on tcp:// or with serial:");
    }
    let instr = instruction(&a)?;
    let mut keys = crate::options::load_keys(&a.keys)?;
    let key = keys.for_terminal(None).0.get(0).cloned().context(
        "send needs the terminal's POS-KEY to sign and encrypt: --key, --key-file or ECR_POS_KEY",
    )?;
    let mut opts = SendOptions::new(key.clone());
    opts.dialect = match a.dialect {
        DialectArg::Plain => RequestDialect::Plain,
        DialectArg::ContentEncrypted => RequestDialect::ContentEncrypted,
        DialectArg::EnvelopeEncrypted => RequestDialect::EnvelopeEncrypted,
    };
    opts.tcp_framing = match a.tcp_framing {
        FramingArg::Newline => TcpFraming::Newline,
        FramingArg::HalfClose => TcpFraming::HalfClose,
        FramingArg::Frames => TcpFraming::Frames,
        FramingArg::Json => TcpFraming::Json,
    };
    opts.timeout = Duration::from_secs_f64(a.timeout);
    opts.ack_timeout = Duration::from_millis(a.ack_timeout);
    opts.method = a.method.clone();
    opts.path = a.path.clone();
    opts.digest = a.digest.clone();
    opts.raw_body = a.raw_body.as_ref().map(|b| b.as_bytes().to_vec());
    opts.frame_fault = a.frame_fault;
    if (a.bare || a.key_reading.is_some())
        && !matches!(opts.dialect, RequestDialect::EnvelopeEncrypted)
    {
        bail!("--bare and --key-reading are for the envelope-encrypted dialect (the default)");
    }
    opts.bare = a.bare;
    if a.content_string && !matches!(opts.dialect, RequestDialect::Plain) {
        bail!("--content-string is for the plain dialect (--dialect plain)");
    }
    opts.content_string = a.content_string;
    opts.key_reading = a.key_reading.map(|k| match k {
        KeyReadingArg::Text128 => KeyInterpretation::Text128,
        KeyReadingArg::Text192 => KeyInterpretation::Text192,
        KeyReadingArg::Text256 => KeyInterpretation::Text256,
        KeyReadingArg::Hex128 => KeyInterpretation::Hex128,
    });
    opts.tls = match (&a.cert, a.insecure) {
        (Some(file), _) => ecr_emu::tls::Trust::pinned(file).context("--cert")?,
        (None, true) => ecr_emu::tls::Trust::Insecure,
        (None, false) => ecr_emu::tls::Trust::Refuse,
    };

    let content = instr.content();
    let x =
        client::send(&target, &content, &opts).with_context(|| format!("sending to {target}"))?;

    let stdout = io::stdout();
    let out = io::BufWriter::new(stdout.lock());
    let mut sink = Collect {
        // Times in local time with the offset, as `analyze` shows them.
        writer: output::writer_with(
            a.format.into(),
            out,
            output::TextOptions {
                color: crate::options::use_color(a.color),
                clock: output::Clock::Local(crate::options::local_offset),
                blocks: false,
            },
        ),
        error: None,
    };
    if x.frames {
        let cfg = Config {
            report_unanswered_at_end: false,
            ..Config::default()
        };
        let mut analyzer = Analyzer::new(cfg, keys, &mut sink);
        for c in &x.wire {
            analyzer.frames_chunk(
                0,
                (&x.local, &x.peer),
                transport(&target),
                c.from,
                &c.bytes,
                c.ts,
                None,
            );
        }
        analyzer.finish(x.wire.iter().map(|c| c.bytes.len() as u64).sum(), vec![]);
    } else {
        records(&x, &target, &key, &mut sink);
    }
    if let Some(f) = &x.failure {
        let code = if matches!(f, Failure::NoAck(_)) {
            Code::AckTimeout
        } else {
            Code::NoResponse
        };
        sink.record(Record::Finding(FindingRecord {
            ts: ecr_emu::now().as_secs_f64(),
            code,
            severity: code.severity(),
            transport: Some(transport(&target)),
            src: Some(x.local.clone().into()),
            dst: Some(x.peer.clone().into()),
            detail: f.to_string(),
            rule: code.rule(),
            packet: None,
            message: Some(1),
        }));
    }
    let Collect { mut writer, error } = sink;
    if let Some(e) = error {
        return Err(e).context("writing output");
    }
    writer.finish().context("writing output")?;
    io::stdout().flush().ok();
    if let Some(f) = &x.failure {
        if let Failure::Rejected(_) = f {
            eprintln!(
                "ecr-sniff: {target}: {}",
                ecr_proto::text::escape_terminal(&f.to_string())
            );
            return Ok(ExitCode::from(1));
        }
        bail!("{target}: {f}");
    }
    let respcd = x.response.as_deref().and_then(|b| {
        match envelope::parse(b, &KeyRing::single(key.clone())) {
            Ok(Message::Response(r)) => r.respcd,
            _ => None,
        }
    });
    let ok = match respcd.as_deref() {
        Some("6000") => true,
        Some("6001") => matches!(instr, Instruction::Cancel),
        _ => false,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn transport(target: &Target) -> Transport {
    match target {
        Target::Http(_) => Transport::Http,
        // The HTTP inside TLS, labelled as `analyze --tls-keylog` labels it.
        Target::Https(_) => Transport::Https,
        Target::Tcp(_) => Transport::Tcp,
        _ => Transport::Serial,
    }
}

/// Message, finding and transaction records of an HTTP or TCP text exchange.
fn records(x: &Exchange, target: &Target, key: &ecr_proto::cipher::PosKey, sink: &mut dyn Sink) {
    let t = transport(target);
    let ring = KeyRing::single(key.clone());
    let ctx = |ts, direction, src: &str, dst: &str| Context {
        transport: t,
        src: src.into(),
        dst: dst.into(),
        direction,
        ts,
        packet: None,
    };
    let mut emit = |index: u64, d: ecr_capture::message::Decoded, src: &str, dst: &str, ts: f64| {
        let mut rec = d.record;
        rec.index = index;
        if t == Transport::Tcp {
            rec.framing = Some(if index == 1 {
                match x.request.first() {
                    Some(b'{') => "json-value",
                    _ => "newline",
                }
            } else {
                x.framing.unwrap_or("newline")
            });
        }
        if let (Some((m, p)), 1) = (&x.http_request, index) {
            rec.http = Some(HttpInfo {
                method: Some(m.as_str().into()),
                path: Some(p.as_str().into()),
                status: None,
                reason: None,
            });
        }
        if let (Some((s, r)), 2) = (&x.http_status, index) {
            rec.http = Some(HttpInfo {
                method: None,
                path: None,
                status: Some(*s),
                reason: Some(r.clone()),
            });
        }
        sink.record(Record::Message(rec));
        for (code, detail) in d.findings {
            sink.record(Record::Finding(FindingRecord {
                ts,
                code,
                severity: code.severity(),
                transport: Some(t),
                src: Some(src.into()),
                dst: Some(dst.into()),
                detail,
                rule: code.rule(),
                packet: None,
                message: Some(index),
            }));
        }
        d.facts
    };
    let req = decode_body(
        &x.request,
        &ring,
        &[1],
        &ctx(x.request_first, Direction::EcrToPos, &x.local, &x.peer),
    );
    let req_facts = emit(1, req, &x.local, &x.peer, x.request_first.as_secs_f64());
    let (Some(body), Some(first)) = (&x.response, x.response_first) else {
        return;
    };
    let resp = decode_body(
        body,
        &ring,
        &[1],
        &ctx(first, Direction::PosToEcr, &x.peer, &x.local),
    );
    let resp_facts = emit(2, resp, &x.peer, &x.local, first.as_secs_f64());
    sink.record(Record::Transaction(TransactionRecord {
        ts: x.request_first.as_secs_f64(),
        transport: t,
        func_type: req_facts.func_type.map(|f| f.0),
        latency_ms: first.millis_since(x.request_last),
        respcd: resp_facts.respcd,
        out_trade_no: req_facts.out_trade_no.or(resp_facts.out_trade_no),
        src: x.local.clone().into(),
        dst: x.peer.clone().into(),
        func_name: req_facts.func_type.and_then(|f| f.name()),
        channel: req_facts.channel,
        amt: req_facts.amt,
        syssn: resp_facts.syssn,
        request: Some(1),
        response: Some(2),
    }));
}
