//! The cash register side: sends one request to a terminal over HTTP, HTTPS, raw
//! TCP or a serial line and collects the answer, with the timing of both and (for frame
//! links) every chunk seen on the line, for the analyzer to decode.

use std::io;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ecr_capture::http::{HttpEvent, HttpKind, HttpParser};
use ecr_capture::tcptext::TextFramer;
use ecr_proto::catalogue::FuncType;
use ecr_proto::cipher::{KeyRing, PosKey};
use ecr_proto::envelope::{self, build_request_with_digest, Message, RequestDialect};
use ecr_proto::frame::{ErrorCode, MAX_FRAGMENT_DATA};
use ecr_proto::link::Side;
use ecr_proto::value::{CompactString, Object};
use ecr_proto::Timestamp;

use crate::line::{Line, ReadOutcome, SerialLine};
use crate::now;
pub use crate::seriallink::WireChunk;
use crate::seriallink::{FrameEndpoint, LinkEvent};
use crate::target::Target;
use crate::tls::{self, Trust};

/// How a request travels on TCP 9002 (D6 leaves it open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpFraming {
    /// The body followed by a newline; an envelope-encrypted body as bare Base64.
    Newline,
    /// The body, then the write half of the connection is closed.
    HalfClose,
    /// `0x2f6e` frames with acks, as on the serial line.
    Frames,
    /// The body as one JSON value (an object, or a JSON string literal), with no
    /// delimiter: the value's end is the message's end (D6).
    Json,
}

/// Options of one exchange.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Envelope dialect (D4).
    pub dialect: RequestDialect,
    /// The POS-KEY.
    pub key: PosKey,
    /// TCP framing.
    pub tcp_framing: TcpFraming,
    /// Connecting.
    pub connect_timeout: Duration,
    /// Waiting for the answer (a payment waits for the customer).
    pub timeout: Duration,
    /// Waiting for the link ack of a frame (spec 10.6: 1000 ms).
    pub ack_timeout: Duration,
    /// Data bytes per frame (spec 10.7: 1024).
    pub max_fragment: usize,
    /// HTTP method (POST; another to try the terminal's 4004).
    pub method: String,
    /// HTTP path; by default the func_type's (spec section 8).
    pub path: Option<String>,
    /// Which certificates an `https://` terminal may present.
    pub tls: Trust,
    /// A digest to send instead of the right one (a cash register that signs
    /// wrongly); `None` signs correctly.
    pub digest: Option<String>,
    /// A body to send as it is instead of the signed request (a cash register
    /// that sends no ECR envelope at all); the content still chooses the path.
    pub raw_body: Option<Vec<u8>>,
    /// Over 0x2f6e frames: damage the request frame this way (a cash register
    /// or a line that breaks the framing), to see the terminal's error frame.
    pub frame_fault: Option<FrameFault>,
    /// Envelope-encrypted: send the Base64 without its JSON string quotes (as
    /// on TCP newline framing, D4), whatever the transport.
    pub bare: bool,
    /// Envelope-encrypted: encrypt with this reading of the key text (D3), e.g.
    /// the hex-decoded AES-128 key, instead of the primary one; the digest still
    /// appends the key text.
    pub key_reading: Option<ecr_proto::cipher::KeyInterpretation>,
    /// Plain dialect: send `content` as a JSON string holding the object, as the
    /// spec's serial sample does, instead of the object itself.
    pub content_string: bool,
}

/// A damage to the request frame the cash register sends (`send --frame-fault`),
/// each one a framing finding of the analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFault {
    /// Junk bytes (`\r\nAT+OK\r\n`, a modem's answer) just before the frame:
    /// `garbage-bytes`; the terminal skips them.
    Garbage,
    /// Version byte 0x02 instead of 0x01: `unsupported-version`.
    Version,
    /// Frame type 0x40, which the spec does not define: `unknown-frame-type`.
    Type,
    /// The end marker 0x0d0a instead of 0x2f6e: `bad-end-marker`.
    EndMarker,
    /// data_len 10 less than total_len - 11 (D1): `bad-length`.
    Length,
    /// This ref number instead of the next one; 0 and 0x80..=0xff are outside
    /// the spec's 0x01..=0x7f: `bad-ref`.
    Ref(u8),
}

impl FrameFault {
    /// The names `--frame-fault` takes.
    pub const NAMES: &'static str = "garbage, version, type, end-marker, length or ref=N";
}

impl std::str::FromStr for FrameFault {
    type Err = String;
    fn from_str(text: &str) -> Result<FrameFault, String> {
        Ok(match text {
            "garbage" => FrameFault::Garbage,
            "version" => FrameFault::Version,
            "type" => FrameFault::Type,
            "end-marker" => FrameFault::EndMarker,
            "length" => FrameFault::Length,
            _ => match text.strip_prefix("ref=") {
                Some(n) => FrameFault::Ref(
                    match n.strip_prefix("0x") {
                        Some(hex) => u8::from_str_radix(hex, 16).ok(),
                        None => n.parse::<u8>().ok(),
                    }
                    .ok_or_else(|| {
                        format!("ref={n}: give a ref from 0 to 255 (decimal or 0x..)")
                    })?,
                ),
                None => {
                    return Err(format!(
                        "unknown frame fault {text:?}: use {}",
                        FrameFault::NAMES
                    ))
                }
            },
        })
    }
}

impl std::fmt::Display for FrameFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFault::Garbage => f.write_str("garbage"),
            FrameFault::Version => f.write_str("version"),
            FrameFault::Type => f.write_str("type"),
            FrameFault::EndMarker => f.write_str("end-marker"),
            FrameFault::Length => f.write_str("length"),
            FrameFault::Ref(r) => write!(f, "ref=0x{r:02x}"),
        }
    }
}

/// A plain-dialect body with its content object replaced by that object's JSON
/// text as a string (the digest is over the same content, so it stays).
fn content_as_string(body: &[u8]) -> Vec<u8> {
    use ecr_proto::value::Value;
    let Ok(Value::Object(mut o)) = Value::parse_json(body) else {
        return body.to_vec();
    };
    let Some(c @ Value::Object(_)) = o.get("content").cloned() else {
        return body.to_vec();
    };
    o.insert("content", Value::from(c.to_json_string()));
    Value::Object(o).to_json_string().into_bytes()
}

/// An envelope-encrypted body (a JSON string of Base64) encrypted again with
/// another reading of the key (D3): the same envelope, the same digest.
fn reencrypt(
    body: &[u8],
    key: &PosKey,
    reading: ecr_proto::cipher::KeyInterpretation,
) -> Result<Vec<u8>, ClientError> {
    let bad = |why: String| ClientError::KeyReading(why);
    let b64: Vec<u8> = body.iter().copied().filter(|&b| b != b'"').collect();
    let plain = key
        .decrypt_base64(&b64)
        .map_err(|e| bad(e.to_string()))?
        .plaintext;
    let ct = key
        .encrypt_as(reading, &plain)
        .map_err(|e| bad(e.to_string()))?;
    Ok(format!("\"{}\"", ecr_proto::cipher::encode_base64(&ct)).into_bytes())
}

/// The request message's frames with `fault` applied (the header faults to its
/// first frame, the end marker to its last).
fn damaged_frames(
    fault: FrameFault,
    ref_num: u8,
    data: &[u8],
    max_fragment: usize,
) -> io::Result<Vec<u8>> {
    use ecr_proto::frame::{split_message, FrameType};
    // Offsets in a frame (D1): 2f 6e, version, type, ref, total_len, data_len.
    const VERSION: usize = 2;
    const TYPE: usize = 3;
    const DATA_LEN: std::ops::Range<usize> = 7..9;
    let mut bytes = split_message(FrameType::REQUEST, ref_num, data, max_fragment)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    match fault {
        FrameFault::Garbage => {
            let mut out = b"\r\nAT+OK\r\n".to_vec();
            out.append(&mut bytes);
            return Ok(out);
        }
        FrameFault::Version => {
            if let Some(v) = bytes.get_mut(VERSION) {
                *v = 0x02;
            }
        }
        FrameFault::Type => {
            if let Some(t) = bytes.get_mut(TYPE) {
                *t = 0x40;
            }
        }
        FrameFault::EndMarker => {
            let n = bytes.len();
            if let Some(end) = bytes.get_mut(n.saturating_sub(2)..) {
                end.copy_from_slice(b"\r\n");
            }
        }
        FrameFault::Length => {
            if let Some([hi, lo]) = bytes.get_mut(DATA_LEN) {
                let n = u16::from_be_bytes([*hi, *lo]).saturating_sub(10);
                [*hi, *lo] = n.to_be_bytes();
            }
        }
        FrameFault::Ref(_) => {}
    }
    Ok(bytes)
}

impl SendOptions {
    /// Defaults: envelope-encrypted, newline framing, 5 s to connect, 180 s for the
    /// answer, 1000 ms for acks, 1024-byte frames, POST.
    pub fn new(key: PosKey) -> SendOptions {
        SendOptions {
            dialect: RequestDialect::EnvelopeEncrypted,
            key,
            tcp_framing: TcpFraming::Newline,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(180),
            ack_timeout: Duration::from_millis(1000),
            max_fragment: MAX_FRAGMENT_DATA,
            method: "POST".into(),
            path: None,
            tls: Trust::Refuse,
            digest: None,
            raw_body: None,
            frame_fault: None,
            bare: false,
            key_reading: None,
            content_string: false,
        }
    }
}

/// Why an exchange ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No 0x20 ack (nor error frame) within the ack timeout.
    NoAck(Duration),
    /// The terminal rejected the request frame.
    Rejected(ErrorCode),
    /// No answer within the timeout.
    NoResponse(Duration),
    /// The terminal closed the connection without answering.
    Closed,
    /// The result's fragments came more than 500 ms apart: discarded with 0x35
    /// (spec 10.7).
    LateFragments,
    /// The terminal answered an `http://` request with TLS: it serves HTTPS.
    TlsAnswer,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoAck(d) => write!(
                f,
                "no ack (0x20) from the terminal within {} ms (spec 10.6)",
                d.as_millis()
            ),
            Failure::Rejected(c) => write!(
                f,
                "the terminal rejected the request frame with 0x{:02x} ({})",
                c.0,
                c.name()
            ),
            Failure::NoResponse(d) => {
                write!(
                    f,
                    "no answer from the terminal within {:.1} s",
                    d.as_secs_f64()
                )
            }
            Failure::Closed => f.write_str("the terminal closed the connection without answering"),
            Failure::TlsAnswer => f.write_str(
                "the terminal answered with TLS: it serves HTTPS (as Haojin 4.34.12 and later can); send to https://HOST:PORT",
            ),
            Failure::LateFragments => f.write_str(
                "the fragments of the terminal's result came more than 500 ms apart; discarded with 0x35 (spec 10.7)",
            ),
        }
    }
}

/// What happened in one exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Our address (or the device).
    pub local: String,
    /// The terminal's address (or the device).
    pub peer: String,
    /// The request body as sent (before framing).
    pub request: Vec<u8>,
    /// When its first byte went out.
    pub request_first: Timestamp,
    /// When its last byte went out.
    pub request_last: Timestamp,
    /// HTTP method and path used.
    pub http_request: Option<(String, String)>,
    /// The answer's body.
    pub response: Option<Vec<u8>>,
    /// When its first byte came.
    pub response_first: Option<Timestamp>,
    /// HTTP status and reason of the answer (the reason as the HTTP parser keeps it).
    pub http_status: Option<(u16, CompactString)>,
    /// The D6 rule that delimited the answer on TCP.
    pub framing: Option<&'static str>,
    /// Every chunk on a frame link (serial, or TCP with frames).
    pub wire: Vec<WireChunk>,
    /// Whether the exchange ran over frames.
    pub frames: bool,
    /// Why there is no answer.
    pub failure: Option<Failure>,
}

/// Why an exchange could not take place at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address does not resolve.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// Host and port.
        addr: String,
        /// Cause.
        source: io::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Host and port.
        addr: String,
        /// Cause.
        source: io::Error,
    },
    /// The serial device cannot be opened.
    #[error("cannot open serial device {path}: {source}")]
    Open {
        /// Device path.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// TLS could not be set up with the terminal (the message names the terminal's
    /// certificate and what to do).
    #[error("{detail}")]
    Tls {
        /// The terminal.
        peer: String,
        /// What went wrong and what to do.
        detail: String,
    },
    /// The key has no such reading (`--key-reading`).
    #[error("--key-reading: {0}")]
    KeyReading(String),
    /// Reading or writing failed.
    #[error("{peer}: {source}")]
    Io {
        /// The terminal.
        peer: String,
        /// Cause.
        source: io::Error,
    },
}

fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            addr: addr.into(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_nodelay(true).ok();
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(ClientError::Connect {
        addr: addr.into(),
        source: last,
    })
}

/// Sends `content` to `target` and waits for the answer.
pub fn send(
    target: &Target,
    content: &Object,
    opts: &SendOptions,
) -> Result<Exchange, ClientError> {
    let mut body = match &opts.raw_body {
        Some(raw) => raw.clone(),
        None => build_request_with_digest(opts.dialect, content, &opts.key, opts.digest.as_deref()),
    };
    if opts.raw_body.is_none() && opts.dialect == RequestDialect::EnvelopeEncrypted {
        if let Some(reading) = opts.key_reading {
            body = reencrypt(&body, &opts.key, reading)?;
        }
        if opts.bare {
            body.retain(|&b| b != b'"');
        }
    }
    if opts.raw_body.is_none() && opts.dialect == RequestDialect::Plain && opts.content_string {
        body = content_as_string(&body);
    }
    match target {
        Target::Http(addr) => {
            let stream = connect(addr, opts.connect_timeout)?;
            let (local, peer) = ends(&stream, addr);
            http(stream, local, peer, addr, content, body, opts)
        }
        Target::Https(addr) => {
            let stream = connect(addr, opts.connect_timeout)?;
            let (local, peer) = ends(&stream, addr);
            let stream = tls_connect(stream, addr, &peer, opts)?;
            http(stream, local, peer, addr, content, body, opts)
        }
        Target::Tcp(addr) => {
            let stream = connect(addr, opts.connect_timeout)?;
            let local = stream
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            let peer = stream
                .peer_addr()
                .map_or_else(|_| addr.clone(), |a| a.to_string());
            if opts.tcp_framing == TcpFraming::Frames {
                frames(stream, local, peer, body, opts)
            } else {
                tcp_text(stream, local, peer, body, opts)
            }
        }
        Target::Serial(path) => {
            let line = SerialLine::open(path).map_err(|source| ClientError::Open {
                path: path.display().to_string(),
                source,
            })?;
            let name = path.display().to_string();
            frames(line, "ECR".into(), name, body, opts)
        }
    }
}

fn exchange(local: String, peer: String, request: Vec<u8>) -> Exchange {
    Exchange {
        local,
        peer,
        request,
        request_first: now(),
        request_last: now(),
        http_request: None,
        response: None,
        response_first: None,
        http_status: None,
        framing: None,
        wire: vec![],
        frames: false,
        failure: None,
    }
}

fn ends(stream: &TcpStream, addr: &str) -> (String, String) {
    let local = stream
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let peer = stream
        .peer_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    (local, peer)
}

/// The TLS handshake with an `https://` terminal, within the connect timeout.
fn tls_connect(
    stream: TcpStream,
    addr: &str,
    peer: &str,
    opts: &SendOptions,
) -> Result<tls::ClientStream, ClientError> {
    let fail = |detail: String| ClientError::Tls {
        peer: peer.to_string(),
        detail,
    };
    let seen = tls::Seen::default();
    let cfg = tls::client_config(&opts.tls, seen.clone()).map_err(|e| fail(e.to_string()))?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = tls::server_name(host).map_err(|e| fail(e.to_string()))?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| fail(e.to_string()))?;
    let mut s = tls::ClientStream::new(conn, stream);
    match tls::handshake(&mut s, Instant::now() + opts.connect_timeout, None) {
        Ok(()) => Ok(s),
        Err(e) => {
            let cert = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
            Err(fail(refusal(&e, cert.as_deref(), &opts.tls, addr)))
        }
    }
}

/// What a failed handshake means and, for a refused certificate, what to do.
fn refusal(e: &io::Error, cert: Option<&[u8]>, trust: &Trust, addr: &str) -> String {
    let refused = matches!(
        tls::rustls_error(e),
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure
        ))
    );
    let Some(cert) = cert.filter(|_| refused) else {
        let hint = match tls::rustls_error(e) {
            Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
                " (the terminal answered in plain HTTP: send to http://HOST:PORT)"
            }
            _ => "",
        };
        return format!("TLS handshake failed: {e}{hint}");
    };
    let fp = tls::fingerprint(cert);
    match trust {
        Trust::Pinned { file, certs } => format!(
            "the terminal's certificate (SHA-256 {fp}) is not the one pinned with --cert {file} ({}): \
             the terminal has a new certificate, or this is not the terminal",
            certs
                .iter()
                .map(|c| format!("SHA-256 {}", tls::fingerprint(c)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!(
            "refused the terminal's certificate (SHA-256 {fp}): it is not one you trust. \
             Terminals serve self-signed certificates; compare this fingerprint with the terminal's \
             (or the one `emulate --tls` printed), then pin it with --cert FILE \
             (save it with: openssl s_client -connect {addr} </dev/null | openssl x509 -out terminal.pem), \
             or accept any certificate with --insecure"
        ),
    }
}

fn http<S: Line>(
    mut stream: S,
    local: String,
    peer: String,
    addr: &str,
    content: &Object,
    body: Vec<u8>,
    opts: &SendOptions,
) -> Result<Exchange, ClientError> {
    let path = opts.path.clone().unwrap_or_else(|| {
        FuncType::from_content(content)
            .and_then(FuncType::http_path)
            .unwrap_or("/api/pos/trade")
            .to_string()
    });
    let mut x = exchange(local, peer.clone(), body);
    let mut wire = format!(
        "{} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        opts.method,
        x.request.len()
    )
    .into_bytes();
    wire.extend_from_slice(&x.request);
    x.http_request = Some((opts.method.clone(), path));
    let io_err = |source| ClientError::Io {
        peer: peer.clone(),
        source,
    };
    x.request_first = now();
    stream.send(&wire).map_err(io_err)?;
    x.request_last = now();
    let mut parser = HttpParser::default();
    let mut events = vec![];
    let deadline = Instant::now() + opts.timeout;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            x.failure = Some(Failure::NoResponse(opts.timeout));
            break;
        }
        let got = stream.read_within(&mut buf, left).map_err(io_err)?;
        let ts = now();
        match got {
            ReadOutcome::Data(n) => {
                // A TLS record (alert or handshake) where an HTTP answer belongs:
                // the terminal serves HTTPS.
                if x.response_first.is_none()
                    && matches!(buf.get(..2), Some([0x15 | 0x16, 0x03]))
                    && !S::ENCRYPTED
                {
                    x.failure = Some(Failure::TlsAnswer);
                    break;
                }
                x.response_first.get_or_insert(ts);
                parser.feed(ts, buf.get(..n).unwrap_or(&[]), &mut events);
            }
            ReadOutcome::Timeout => continue,
            ReadOutcome::Closed => parser.finish(ts, &mut events),
        }
        let msg = events.drain(..).find_map(|e| match e {
            HttpEvent::Message(m) => Some(m),
            _ => None,
        });
        if let Some(m) = msg {
            if let HttpKind::Response { status, reason } = m.kind {
                x.http_status = Some((status, reason));
            }
            x.response_first = Some(m.ts_first_byte);
            x.response = Some(m.body);
            break;
        }
        if got == ReadOutcome::Closed {
            x.failure = Some(Failure::Closed);
            break;
        }
    }
    Ok(x)
}

fn tcp_text(
    mut stream: TcpStream,
    local: String,
    peer: String,
    body: Vec<u8>,
    opts: &SendOptions,
) -> Result<Exchange, ClientError> {
    let io_err = |source| ClientError::Io {
        peer: peer.clone(),
        source,
    };
    let mut wire = body.clone();
    if opts.tcp_framing == TcpFraming::Newline {
        // D6 `newline`: an envelope-encrypted body goes as bare Base64.
        if opts.dialect == RequestDialect::EnvelopeEncrypted {
            wire.retain(|&b| b != b'"');
        }
        wire.push(b'\n');
    }
    let mut x = exchange(local, peer.clone(), wire.clone());
    if let Some(b) = x.request.last() {
        if *b == b'\n' {
            x.request.pop();
        }
    }
    x.request_first = now();
    stream.send(&wire).map_err(io_err)?;
    if opts.tcp_framing == TcpFraming::HalfClose {
        stream.shutdown(Shutdown::Write).map_err(io_err)?;
    }
    x.request_last = now();
    let keys = KeyRing::single(opts.key.clone());
    let mut framer = TextFramer::new();
    let deadline = Instant::now() + opts.timeout;
    let mut buf = [0u8; 8192];
    let mut found: Option<(Vec<u8>, &'static str, Timestamp)> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            x.failure = Some(Failure::NoResponse(opts.timeout));
            break;
        }
        let got = stream.read_within(&mut buf, left).map_err(io_err)?;
        let ts = now();
        let mut take = |m: ecr_capture::tcptext::TextMessage<'_>| {
            if found.is_none() {
                found = Some((m.body.to_vec(), m.rule.as_str(), m.first_ts));
            }
        };
        match got {
            ReadOutcome::Data(n) => framer.feed(buf.get(..n).unwrap_or(&[]), ts, &keys, &mut take),
            ReadOutcome::Timeout => continue,
            ReadOutcome::Closed => framer.close(&mut take),
        }
        if let Some((b, rule, first)) = found.take() {
            x.response = Some(b);
            x.framing = Some(rule);
            x.response_first = Some(first);
            break;
        }
        if got == ReadOutcome::Closed {
            x.failure = Some(Failure::Closed);
            break;
        }
    }
    Ok(x)
}

fn frames<L: Line>(
    line: L,
    local: String,
    peer: String,
    body: Vec<u8>,
    opts: &SendOptions,
) -> Result<Exchange, ClientError> {
    let io_err = |source| ClientError::Io {
        peer: peer.clone(),
        source,
    };
    let mut ep = FrameEndpoint::new(line, Side::Ecr, true, None);
    let mut x = exchange(local, peer.clone(), body);
    x.frames = true;
    let r = match opts.frame_fault {
        Some(FrameFault::Ref(r)) => r,
        _ => ep.next_ref(),
    };
    x.request_first = now();
    match opts.frame_fault {
        None | Some(FrameFault::Ref(_)) => ep
            .send_message(r, &x.request, opts.max_fragment, None, false)
            .map_err(io_err)?,
        Some(f) => {
            let bytes = damaged_frames(f, r, &x.request, opts.max_fragment).map_err(io_err)?;
            ep.send_raw(&bytes).map_err(io_err)?;
        }
    }
    x.request_last = now();
    let closed = |e: &io::Error| e.kind() == io::ErrorKind::UnexpectedEof;
    // 1. The link ack, within 1000 ms. Results that overtake it are kept.
    let ack_deadline = Instant::now() + opts.ack_timeout;
    let mut early = vec![];
    let acked = loop {
        let left = ack_deadline.saturating_duration_since(Instant::now());
        match ep.poll(left) {
            Ok(Some(LinkEvent::Ack { ref_num })) if ref_num == r => break true,
            Ok(Some(LinkEvent::ErrorFrame { ref_num, code })) if ref_num == r => {
                x.failure = Some(Failure::Rejected(code));
                break false;
            }
            Ok(Some(m @ LinkEvent::Message { .. })) => early.push(m),
            Ok(Some(_)) => {}
            Ok(None) => {
                x.failure = Some(Failure::NoAck(opts.ack_timeout));
                break false;
            }
            Err(e) if closed(&e) => {
                x.failure = Some(Failure::Closed);
                break false;
            }
            Err(e) => return Err(io_err(e)),
        }
    };
    // 2. The business result: a 0x10 message from the terminal, acked in turn (D2).
    for ev in early.into_iter().rev() {
        ep.unread(ev);
    }
    // Without the ack the request has failed (spec 10.6): stop there.
    if acked {
        let deadline = Instant::now() + opts.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                x.failure = Some(Failure::NoResponse(opts.timeout));
                break;
            }
            match ep.poll(left) {
                Ok(Some(LinkEvent::Message {
                    ref_num,
                    late: true,
                    ..
                })) => {
                    ep.send_error(ErrorCode::CONCATENATION, ref_num)
                        .map_err(io_err)?;
                    x.failure = Some(Failure::LateFragments);
                    break;
                }
                Ok(Some(LinkEvent::Message { ref_num, data, .. })) => {
                    ep.send_ack(ref_num).map_err(io_err)?;
                    let is_response = matches!(
                        envelope::parse(&data, &KeyRing::single(opts.key.clone())),
                        Ok(Message::Response(_))
                    );
                    if is_response {
                        x.response = Some(data);
                        break;
                    }
                }
                Ok(Some(LinkEvent::BadFrame { ref_num })) => {
                    ep.send_error(ErrorCode::FORMAT, ref_num).map_err(io_err)?;
                }
                Ok(Some(LinkEvent::Concatenation { ref_num })) => {
                    ep.send_error(ErrorCode::CONCATENATION, ref_num)
                        .map_err(io_err)?;
                }
                Ok(Some(_)) => {}
                Ok(None) => {}
                Err(e) if closed(&e) => {
                    x.failure = Some(Failure::Closed);
                    break;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
    }
    // Let the last ack reach the line before the device is closed.
    let _ = ep.poll(Duration::from_millis(50));
    // Timing of each frame is in `wire`, for the analyzer.
    x.wire = ep.take_log();
    Ok(x)
}
