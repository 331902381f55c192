//! The emulator's front ends: HTTP on 9001, raw TCP on 9002 (text or frames, D6)
//! and a serial line, each answering through the shared [`Terminal`]. One thread
//! per listener and per connection, blocking sockets with short timeouts so every
//! loop notices the stop flag within a fraction of a second.

use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ecr_capture::http::{HttpEvent, HttpKind, HttpParser};
use ecr_capture::serialcap::{FrameSplitter, SerialCaptureWriter};
use ecr_capture::tcptext::TextFramer;
use ecr_proto::cipher::KeyRing;
use ecr_proto::envelope::{self, EnvelopeError};
use ecr_proto::frame::{ErrorCode, MARKER, MAX_FRAGMENT_DATA, VERSION};
use ecr_proto::link::Side;

use crate::cors;
use crate::line::{Line, PtyLine, ReadOutcome, SerialLine};
use crate::seriallink::{FrameEndpoint, LinkEvent, Tap};
use crate::terminal::{Reply, Terminal};
use crate::tls::Close;

/// How often loops look at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Most connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Where the emulator's serial side is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialSpec {
    /// A device such as /dev/ttyUSB0 (or one end of a socat pty pair).
    Device(PathBuf),
    /// A new pseudo-terminal whose path is announced.
    Pty,
}

/// What to serve.
#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    /// HTTP address.
    pub http: Option<SocketAddr>,
    /// Raw TCP address.
    pub tcp: Option<SocketAddr>,
    /// Serial line.
    pub serial: Option<SerialSpec>,
    /// Write the serial traffic to this file (D9 serial capture format).
    pub serial_capture: Option<PathBuf>,
    /// Serve HTTPS instead of HTTP on the `http` address (see [`crate::tls`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Where the emulator's log lines go.
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// http or tcp.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: io::Error,
    },
    /// The serial device cannot be opened.
    #[error("cannot open serial device {path}: {source}")]
    Serial {
        /// The device.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// The capture file cannot be written.
    #[error("cannot write serial capture {path}: {source}")]
    Capture {
        /// The file.
        path: String,
        /// Cause.
        source: io::Error,
    },
}

type Capture = Arc<Mutex<Option<FrameSplitter<BufWriter<File>>>>>;

/// A running emulator.
pub struct Emulator {
    /// The HTTP address actually bound (port 0 gives a free port).
    pub http_addr: Option<SocketAddr>,
    /// The TCP address actually bound.
    pub tcp_addr: Option<SocketAddr>,
    /// The serial line: the device, or the pseudo-terminal to give the cash register.
    pub serial_path: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    capture: Capture,
}

struct Shared {
    terminal: Arc<Terminal>,
    stop: Arc<AtomicBool>,
    log: Log,
    connections: Arc<Mutex<usize>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Shared {
            terminal: self.terminal.clone(),
            stop: self.stop.clone(),
            log: self.log.clone(),
            connections: self.connections.clone(),
            tls: self.tls.clone(),
        }
    }
}

impl Emulator {
    /// Binds and opens everything in `cfg`, then serves in background threads.
    pub fn start(
        cfg: &ServeConfig,
        terminal: Arc<Terminal>,
        log: Log,
    ) -> Result<Emulator, ServeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            terminal,
            stop: stop.clone(),
            log,
            connections: Arc::new(Mutex::new(0)),
            tls: cfg.tls.clone(),
        };
        let mut em = Emulator {
            http_addr: None,
            tcp_addr: None,
            serial_path: None,
            stop,
            threads: vec![],
            capture: Arc::new(Mutex::new(None)),
        };
        let bind = |what, addr| {
            let l = TcpListener::bind(addr).map_err(|source| ServeError::Bind {
                what,
                addr,
                source,
            })?;
            l.set_nonblocking(true)
                .map_err(|source| ServeError::Bind { what, addr, source })?;
            Ok::<_, ServeError>(l)
        };
        let http = cfg.http.map(|a| bind("http", a)).transpose()?;
        let tcp = cfg.tcp.map(|a| bind("tcp", a)).transpose()?;
        if let Some(l) = http {
            em.http_addr = l.local_addr().ok();
            let sh = shared.clone();
            let serve = if sh.tls.is_some() {
                https_conn
            } else {
                http_conn::<TcpStream>
            };
            em.threads
                .push(std::thread::spawn(move || accept_loop(l, sh, serve)));
        }
        if let Some(l) = tcp {
            em.tcp_addr = l.local_addr().ok();
            let sh = shared.clone();
            em.threads
                .push(std::thread::spawn(move || accept_loop(l, sh, tcp_conn)));
        }
        if let Some(spec) = &cfg.serial {
            if let Some(path) = &cfg.serial_capture {
                let f = File::create(path).map_err(|source| ServeError::Capture {
                    path: path.display().to_string(),
                    source,
                })?;
                let w = SerialCaptureWriter::new(BufWriter::new(f), Some("ecr-sniff emulate"))
                    .map_err(|source| ServeError::Capture {
                        path: path.display().to_string(),
                        source,
                    })?;
                *em.capture.lock().unwrap_or_else(|e| e.into_inner()) = Some(FrameSplitter::new(w));
            }
            let cap = em.capture.clone();
            let tap: Option<Tap> = cfg.serial_capture.as_ref().map(|_| {
                Box::new(move |ts, side, bytes: &[u8]| {
                    if let Some(s) = cap.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                        let _ = s.push(ts, side, bytes);
                    }
                }) as Tap
            });
            let open_err = |path: &Path, source| ServeError::Serial {
                path: path.display().to_string(),
                source,
            };
            let sh = shared.clone();
            match spec {
                SerialSpec::Device(path) => {
                    let line = SerialLine::open(path).map_err(|e| open_err(path, e))?;
                    em.serial_path = Some(path.clone());
                    let label = path.display().to_string();
                    em.threads.push(std::thread::spawn(move || {
                        frame_loop(FrameEndpoint::new(line, Side::Pos, false, tap), &sh, &label)
                    }));
                }
                SerialSpec::Pty => {
                    let line = PtyLine::create().map_err(|e| open_err(Path::new("pty"), e))?;
                    em.serial_path = Some(line.path().to_path_buf());
                    let label = line.path().display().to_string();
                    em.threads.push(std::thread::spawn(move || {
                        frame_loop(FrameEndpoint::new(line, Side::Pos, false, tap), &sh, &label)
                    }));
                }
            }
        }
        Ok(em)
    }

    /// Serves until `until` is set (e.g. by SIGINT), then stops every thread and
    /// finishes the serial capture.
    pub fn run_until(self, until: &AtomicBool) -> io::Result<()> {
        while !until.load(Ordering::SeqCst) && !self.threads.iter().all(|t| t.is_finished()) {
            std::thread::sleep(TICK);
        }
        self.stop()
    }

    /// Stops every thread and finishes the serial capture.
    pub fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let splitter = self
            .capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(s) = splitter {
            let mut w = s.finish()?;
            w.flush()?;
        }
        Ok(())
    }
}

fn accept_loop(l: TcpListener, sh: Shared, serve: fn(TcpStream, &Shared, &str)) {
    let mut conns: Vec<JoinHandle<()>> = vec![];
    while !sh.stop.load(Ordering::SeqCst) {
        conns.retain(|c| !c.is_finished());
        match l.accept() {
            Ok((stream, peer)) => {
                if conns.len() >= MAX_CONNECTIONS {
                    (sh.log)(format!("{peer}: too many connections, closed"));
                    continue;
                }
                let _ = stream.set_nonblocking(false);
                stream.set_nodelay(true).ok();
                let sh2 = sh.clone();
                let label = peer.to_string();
                conns.push(std::thread::spawn(move || serve(stream, &sh2, &label)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                (sh.log)(format!("accept failed: {e}"));
                std::thread::sleep(TICK);
            }
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Writes an answer, applying the split and corrupt faults.
fn write_answer(
    stream: &mut impl Line,
    head: &[u8],
    body: &[u8],
    tail: &[u8],
    t: &Terminal,
) -> io::Result<()> {
    let mut body = body.to_vec();
    if t.faults().corrupt() {
        let mid = body.len() / 2;
        if let Some(b) = body.get_mut(mid) {
            *b = b'#';
        }
    }
    let mut all = head.to_vec();
    let cut = all.len() + body.len() / 2;
    all.extend_from_slice(&body);
    all.extend_from_slice(tail);
    match t.faults().split() {
        Some(pause) => {
            let (a, b) = all.split_at(cut.min(all.len()));
            stream.send(a)?;
            std::thread::sleep(pause);
            stream.send(b)
        }
        None => stream.send(&all),
    }
}

/// One HTTPS connection: the TLS handshake (10 s at most), then HTTP as on 9001.
fn https_conn(stream: TcpStream, sh: &Shared, peer: &str) {
    let Some(cfg) = sh.tls.clone() else { return };
    let conn = match rustls::ServerConnection::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            (sh.log)(format!("[https {peer}] TLS: {e}"));
            return;
        }
    };
    let mut tls = crate::tls::ServerStream::new(conn, stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    match crate::tls::handshake(&mut tls, deadline, Some(&sh.stop)) {
        Ok(()) => (sh.log)(format!(
            "[https {peer}] {}",
            crate::tls::describe(&tls.conn)
        )),
        Err(e) => {
            (sh.log)(format!(
                "[https {peer}] TLS handshake failed: {e}{}",
                crate::tls::handshake_hint(&e)
            ));
            return;
        }
    }
    http_conn(tls, sh, peer);
}

fn http_conn<S: Line + Close>(mut stream: S, sh: &Shared, peer: &str) {
    let scheme = S::SCHEME;
    let mut parser = HttpParser::default();
    let mut events = vec![];
    let mut buf = [0u8; 8192];
    while !sh.stop.load(Ordering::SeqCst) {
        let got = match stream.read_within(&mut buf, TICK) {
            Ok(g) => g,
            Err(_) => return,
        };
        let ts = crate::now();
        match got {
            ReadOutcome::Data(n) => parser.feed(ts, buf.get(..n).unwrap_or(&[]), &mut events),
            ReadOutcome::Timeout => continue,
            ReadOutcome::Closed => return,
        }
        for ev in events.drain(..) {
            let m = match ev {
                HttpEvent::Message(m) => m,
                HttpEvent::Error { error, .. } => {
                    (sh.log)(format!(
                        "[{scheme} {peer}] bad request: {error}; connection closed"
                    ));
                    let _ = stream.send(b"HTTP/1.1 400 Bad Request\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    return;
                }
                HttpEvent::Skipped { .. } => continue,
            };
            let HttpKind::Request { method, path } = &m.kind else {
                continue;
            };
            let close = m
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            if cors::is_preflight(&m) {
                (sh.log)(format!(
                    "[{scheme} {peer}] {method} {path}: CORS preflight, 204"
                ));
                if stream.send(&cors::preflight_answer(&m, close)).is_err() || close {
                    let _ = stream.close(Shutdown::Write);
                    return;
                }
                continue;
            }
            if sh.terminal.faults().close_early() {
                (sh.log)(format!(
                    "[{scheme} {peer}] {method} {path}: closing without an answer (fault close-early)"
                ));
                let _ = stream.close(Shutdown::Both);
                return;
            }
            let reply = sh.terminal.handle(Some(method), &m.body);
            (sh.log)(format!("[{scheme} {peer}] {method} {path} {}", reply.log));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n{}\r\n",
                cors::allow_origin(&m),
                reply.body.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            if write_answer(&mut stream, head.as_bytes(), &reply.body, b"", &sh.terminal).is_err()
                || close
            {
                let _ = stream.close(Shutdown::Write);
                // Let the client read the answer and close first.
                let _ = stream.read_within(&mut buf, Duration::from_secs(2));
                return;
            }
        }
    }
}

fn tcp_conn(mut stream: TcpStream, sh: &Shared, peer: &str) {
    let mut first = vec![];
    let mut buf = [0u8; 8192];
    // Decide text or frames (D6) on the first three bytes: `2f 6e 01` never starts
    // Base64 or JSON text.
    while first.len() < 3 && !sh.stop.load(Ordering::SeqCst) {
        match stream.read_within(&mut buf, TICK) {
            Ok(ReadOutcome::Data(n)) => first.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            Ok(ReadOutcome::Timeout) => continue,
            Ok(ReadOutcome::Closed) | Err(_) => break,
        }
    }
    if first.starts_with(&[MARKER[0], MARKER[1], VERSION]) {
        let mut ep = FrameEndpoint::new(stream, Side::Pos, false, None);
        ep.feed(&first);
        frame_loop(ep, sh, &format!("tcp {peer} frames"));
        return;
    }
    let keys = KeyRing::single(sh.terminal_key());
    let mut framer = TextFramer::new();
    let mut pending = first;
    let mut closed = false;
    loop {
        let mut bodies = vec![];
        let ts = crate::now();
        if !pending.is_empty() {
            framer.feed(&pending, ts, &keys, |m| bodies.push(m.body.to_vec()));
            pending.clear();
        }
        if closed {
            framer.close(|m| bodies.push(m.body.to_vec()));
        }
        for b in bodies {
            if sh.terminal.faults().close_early() {
                (sh.log)(format!(
                    "[tcp {peer}] closing without an answer (fault close-early)"
                ));
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            let reply = sh.terminal.handle(None, &b);
            (sh.log)(format!("[tcp {peer}] {}", reply.log));
            if write_answer(&mut stream, b"", &reply.body, b"\n", &sh.terminal).is_err() {
                return;
            }
        }
        if closed || sh.stop.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
        match stream.read_within(&mut buf, TICK) {
            Ok(ReadOutcome::Data(n)) => pending.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            Ok(ReadOutcome::Timeout) => {}
            Ok(ReadOutcome::Closed) => closed = true,
            Err(_) => return,
        }
    }
}

impl Shared {
    fn terminal_key(&self) -> ecr_proto::cipher::PosKey {
        self.terminal.key().clone()
    }
}

/// Whether a request body is rejected at the link level (spec 10.4): 0x33 when it
/// does not decrypt, 0x34 when it is not a message at all.
fn link_check(t: &Terminal, data: &[u8]) -> Option<ErrorCode> {
    match envelope::parse(data, &KeyRing::single(t.key().clone())) {
        Ok(_) => None,
        Err(
            EnvelopeError::DecryptFailed { .. }
            | EnvelopeError::BadBase64 { .. }
            | EnvelopeError::BadCiphertext { .. }
            | EnvelopeError::NoKey { .. },
        ) => Some(ErrorCode::DECRYPTION),
        Err(_) => Some(ErrorCode::DATA_FORMAT),
    }
}

/// The terminal's side of a frame link: ack (or reject) each request frame, then
/// send the business result as a 0x10 message of its own (D2).
fn frame_loop<L: Line>(mut ep: FrameEndpoint<L>, sh: &Shared, label: &str) {
    let t = &sh.terminal;
    let (tx, rx) = mpsc::channel::<Reply>();
    let mut workers: Vec<JoinHandle<()>> = vec![];
    let log = |s: String| (sh.log)(format!("[{label}] {s}"));
    while !sh.stop.load(Ordering::SeqCst) {
        while let Ok(reply) = rx.try_recv() {
            let r = ep.next_ref();
            let (frag, pause) = match t.faults().split() {
                Some(p) => ((reply.body.len() / 2 + 1).min(MAX_FRAGMENT_DATA), Some(p)),
                None => (MAX_FRAGMENT_DATA, None),
            };
            log(format!("result ref {r}: {}", reply.log));
            if ep
                .send_message(r, &reply.body, frag, pause, t.faults().corrupt())
                .is_err()
            {
                return;
            }
        }
        workers.retain(|w| !w.is_finished());
        // While a result is being prepared, look for it often.
        let wait = if workers.is_empty() {
            TICK
        } else {
            Duration::from_millis(5)
        };
        let ev = match ep.poll(wait) {
            Ok(Some(ev)) => ev,
            Ok(None) => continue,
            Err(e) => {
                log(format!("line closed: {e}"));
                return;
            }
        };
        let sent = match ev {
            LinkEvent::Message {
                ref_num,
                late: true,
                ..
            }
            | LinkEvent::Concatenation { ref_num } => {
                log(format!(
                    "ref {ref_num}: fragments more than 500 ms apart, answered 0x35"
                ));
                ep.send_error(ErrorCode::CONCATENATION, ref_num)
            }
            LinkEvent::BadFrame { ref_num } => {
                log(format!("ref {ref_num}: malformed frame, answered 0x31"));
                ep.send_error(ErrorCode::FORMAT, ref_num)
            }
            LinkEvent::Ack { ref_num } => {
                log(format!("ref {ref_num}: result acknowledged"));
                Ok(())
            }
            LinkEvent::ErrorFrame { ref_num, code } => {
                log(format!(
                    "ref {ref_num}: the cash register answered 0x{:02x} {}",
                    code.0,
                    code.name()
                ));
                Ok(())
            }
            LinkEvent::Message { ref_num, data, .. } => {
                if let Some(code) = link_check(t, &data) {
                    log(format!(
                        "ref {ref_num}: rejected with 0x{:02x} ({})",
                        code.0,
                        code.name()
                    ));
                    ep.send_error(code, ref_num)
                } else if t.faults().drop_ack() {
                    log(format!("ref {ref_num}: ack dropped (fault drop-ack)"));
                    Ok(())
                } else {
                    if let Some(d) = t.faults().delay_ack() {
                        std::thread::sleep(d);
                    }
                    let r = ep.send_ack(ref_num);
                    if t.faults().close_early() {
                        log(format!(
                            "ref {ref_num}: acked, no result will follow (fault close-early)"
                        ));
                    } else if workers.len() < MAX_CONNECTIONS {
                        let (t2, tx2) = (t.clone(), tx.clone());
                        workers.push(std::thread::spawn(move || {
                            let _ = tx2.send(t2.handle(None, &data));
                        }));
                    }
                    r
                }
            }
        };
        if let Err(e) = sent {
            log(format!("write failed: {e}"));
            return;
        }
    }
}
