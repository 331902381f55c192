//! The emulator's front ends: HTTP on 9001, raw TCP on 9002 (text or frames, D6)
//! and a serial line, each answering through the shared [`Terminal`].
//!
//! One thread per listener and per connection. Every thread sleeps in one
//! `poll(2)` on its socket (or line) and the stop [`Bell`], with no timeout unless
//! a deadline is due, so an idle emulator uses no CPU. Slow or silent peers cannot
//! hold it ([`Limits`]): a request's headers and body must arrive within their
//! timeouts, an idle connection is closed after the idle timeout, writes to a
//! client that does not read time out, and when a listener has its maximum of
//! connections the one idle longest is closed to make room.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ecr_capture::http::{HttpConfig, HttpEvent, HttpKind, HttpParser};
use ecr_capture::serialcap::{FrameSplitter, SerialCaptureWriter};
use ecr_proto::cipher::KeyRing;
use ecr_proto::envelope::{self, EnvelopeError};
use ecr_proto::frame::{ErrorCode, MARKER, MAX_FRAGMENT_DATA, VERSION};
use ecr_proto::link::Side;

use crate::cors;
use crate::line::{Line, PtyLine, SerialLine};
use crate::seriallink::{FrameEndpoint, LinkEvent, Tap};
use crate::terminal::{Reply, Terminal};
use crate::textgate::TextGate;
use crate::tls::{Close, ServerStream};
use crate::wait::{wait, Bell, Woke};

/// Most results being prepared at once on one frame link.
const MAX_PENDING_RESULTS: usize = 64;
/// Stack of a connection thread (JSON nesting is bounded at 64 levels).
const CONN_STACK: usize = 512 * 1024;

/// What slow or silent peers are allowed (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// HTTP: from a request's first byte to the end of its header block.
    pub header_timeout: Duration,
    /// HTTP: from the end of the headers to the end of the body; TCP: from a
    /// message's first byte to its end. Also bounds each write to the client.
    pub body_timeout: Duration,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// Most connections per listener; when full, the one idle longest is closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
        }
    }
}

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
    /// Timeouts and the connection limit.
    pub limits: Limits,
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
    stop: Arc<Bell>,
    /// Rung when a serving thread ends (a serial line closed for good).
    ended: Arc<Bell>,
    threads: Vec<JoinHandle<()>>,
    capture: Capture,
}

#[derive(Clone)]
struct Shared {
    terminal: Arc<Terminal>,
    stop: Arc<Bell>,
    log: Log,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The open connections of one listener.
#[derive(Default)]
struct Conns {
    slots: Mutex<HashMap<u64, Slot>>,
    next: AtomicU64,
}

struct Slot {
    /// A handle to shut the connection down when it is evicted.
    stream: TcpStream,
    peer: String,
    /// Since when it has had no request in progress.
    idle_since: Option<Instant>,
    evicted: bool,
}

/// A connection's entry in [`Conns`], removed when the connection ends.
struct ConnGuard {
    conns: Arc<Conns>,
    id: u64,
}

impl ConnGuard {
    /// Marks the connection idle (no request in progress) or busy.
    fn set_idle(&self, idle: bool) {
        let mut slots = self.conns.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get_mut(&self.id) {
            match (idle, s.idle_since) {
                (true, None) => s.idle_since = Some(Instant::now()),
                (false, Some(_)) => s.idle_since = None,
                _ => {}
            }
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut slots = self.conns.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.remove(&self.id);
    }
}

impl Conns {
    /// Registers a new connection, first closing the one idle longest when the
    /// listener is full. `Err` with the reason when there is no room.
    fn admit(
        self: &Arc<Self>,
        stream: &TcpStream,
        peer: &str,
        max: usize,
    ) -> Result<(ConnGuard, Option<String>), String> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let live = slots.values().filter(|s| !s.evicted).count();
        let mut evicted = None;
        if live >= max {
            let oldest = slots
                .iter_mut()
                .filter(|(_, s)| !s.evicted)
                .filter_map(|(_, s)| s.idle_since.map(|t| (t, s)))
                .min_by_key(|(t, _)| *t);
            match oldest {
                Some((_, s)) => {
                    let _ = s.stream.shutdown(Shutdown::Both);
                    s.evicted = true;
                    evicted = Some(s.peer.clone());
                }
                None => {
                    return Err(format!(
                        "{max} connections open, none idle: connection refused"
                    ))
                }
            }
        }
        let handle = stream.try_clone().map_err(|e| e.to_string())?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        slots.insert(
            id,
            Slot {
                stream: handle,
                peer: peer.to_string(),
                idle_since: Some(Instant::now()),
                evicted: false,
            },
        );
        Ok((
            ConnGuard {
                conns: Arc::clone(self),
                id,
            },
            evicted,
        ))
    }
}

impl Emulator {
    /// Binds and opens everything in `cfg`, then serves in background threads.
    pub fn start(
        cfg: &ServeConfig,
        terminal: Arc<Terminal>,
        log: Log,
    ) -> Result<Emulator, ServeError> {
        let stop = Arc::new(Bell::new().map_err(|source| ServeError::Bind {
            what: "stop bell",
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?);
        let ended = Arc::new(Bell::new().map_err(|source| ServeError::Bind {
            what: "stop bell",
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?);
        // Log lines quote requests (paths, out_trade_no, ...): every line is escaped
        // for the terminal here, once, whatever the caller does with it.
        let log: Log =
            Arc::new(move |line: String| log(ecr_proto::text::escape_terminal(&line).into_owned()));
        let shared = Shared {
            terminal,
            stop: stop.clone(),
            log,
            limits: cfg.limits,
            tls: cfg.tls.clone(),
        };
        let mut em = Emulator {
            http_addr: None,
            tcp_addr: None,
            serial_path: None,
            stop,
            ended: ended.clone(),
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
            let (sh, end) = (shared.clone(), ended.clone());
            let (what, serve) = if sh.tls.is_some() {
                (
                    "https",
                    https_conn as fn(TcpStream, &Shared, &str, &ConnGuard),
                )
            } else {
                (
                    "http",
                    http_conn::<TcpStream> as fn(TcpStream, &Shared, &str, &ConnGuard),
                )
            };
            em.threads.push(std::thread::spawn(move || {
                accept_loop(l, sh, what, serve);
                end.ring();
            }));
        }
        if let Some(l) = tcp {
            em.tcp_addr = l.local_addr().ok();
            let (sh, end) = (shared.clone(), ended.clone());
            em.threads.push(std::thread::spawn(move || {
                accept_loop(l, sh, "tcp", tcp_conn);
                end.ring();
            }));
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
                    let end = ended.clone();
                    em.threads.push(std::thread::spawn(move || {
                        let ep = FrameEndpoint::new(line, Side::Pos, false, tap);
                        frame_loop(ep, &sh, &label, None);
                        end.ring();
                    }));
                }
                SerialSpec::Pty => {
                    let line = PtyLine::create().map_err(|e| open_err(Path::new("pty"), e))?;
                    em.serial_path = Some(line.path().to_path_buf());
                    let label = line.path().display().to_string();
                    let end = ended.clone();
                    em.threads.push(std::thread::spawn(move || {
                        let ep = FrameEndpoint::new(line, Side::Pos, false, tap);
                        frame_loop(ep, &sh, &label, None);
                        end.ring();
                    }));
                }
            }
        }
        Ok(em)
    }

    /// Serves until `until` rings (e.g. on SIGINT: see
    /// [`crate::signals::stop_on_signals`]) or every serving thread has ended, then
    /// stops every thread and finishes the serial capture. Sleeps meanwhile.
    pub fn run_until(self, until: &Bell) -> io::Result<()> {
        let never = Bell::new()?;
        loop {
            if until.is_rung() || self.threads.iter().all(|t| t.is_finished()) {
                break;
            }
            match wait(&[until.fd(), self.ended.fd()], &never, None)? {
                Woke::Ready(0) => break,
                _ => self.ended.drain(),
            }
        }
        self.stop()
    }

    /// Stops every thread and finishes the serial capture.
    pub fn stop(self) -> io::Result<()> {
        self.stop.ring();
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

fn accept_loop(
    l: TcpListener,
    sh: Shared,
    what: &'static str,
    serve: fn(TcpStream, &Shared, &str, &ConnGuard),
) {
    let conns = Arc::new(Conns::default());
    let mut threads: Vec<JoinHandle<()>> = vec![];
    loop {
        match wait(&[l.as_fd()], &sh.stop, None) {
            Ok(Woke::Ready(_)) => {}
            Ok(Woke::Stop) => break,
            Ok(Woke::Timeout) => continue,
            Err(e) => {
                (sh.log)(format!("[{what}] waiting for connections failed: {e}"));
                break;
            }
        }
        let (stream, peer) = match l.accept() {
            Ok(a) => a,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // Out of descriptors and the like: say so, and give the system a
                // moment instead of spinning on a listener that stays readable.
                (sh.log)(format!("[{what}] accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        threads.retain(|t| !t.is_finished());
        let label = peer.to_string();
        let guard = match conns.admit(&stream, &label, sh.limits.max_connections) {
            Ok((g, evicted)) => {
                if let Some(old) = evicted {
                    (sh.log)(format!(
                        "[{what} {old}] closed: the connection idle longest, to make room ({} connections open)",
                        sh.limits.max_connections
                    ));
                }
                g
            }
            Err(why) => {
                (sh.log)(format!("[{what} {label}] {why}"));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        stream.set_nodelay(true).ok();
        // A client that does not read its answer cannot hold the thread forever.
        let _ =
            stream.set_write_timeout(Some(sh.limits.body_timeout.max(Duration::from_millis(1))));
        let sh2 = sh.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ecr-emu {what}"))
            .stack_size(CONN_STACK)
            .spawn(move || serve(stream, &sh2, &label, &guard));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => (sh.log)(format!(
                "[{what} {peer}] cannot start a thread: {e}; closed"
            )),
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Waits for `stream` to be readable until `deadline`; `None` when the
/// connection is to end (stop, deadline, error).
fn readable<S: HttpIo>(stream: &mut S, sh: &Shared, deadline: Instant) -> Option<Woke> {
    // TLS may hold decrypted bytes that a poll on the socket would not announce.
    if stream.pending() {
        return Some(Woke::Ready(0));
    }
    match wait(&[stream.fd()], &sh.stop, Some(deadline)) {
        Ok(w @ (Woke::Ready(_) | Woke::Timeout)) => Some(w),
        Ok(Woke::Stop) | Err(_) => None,
    }
}

/// One read from a socket that `poll` found readable: `None` on EOF or error.
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Option<usize> {
    loop {
        match stream.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(0),
            Err(_) => return None,
        }
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// An HTTP connection, plain or TLS, for the poll-driven [`http_conn`].
trait HttpIo: Line + Close {
    /// Bytes already read and waiting (decrypted TLS records).
    fn pending(&mut self) -> bool {
        false
    }
    /// One read after a poll found the connection readable (see [`read_some`]).
    fn read_some(&mut self, buf: &mut [u8]) -> Option<usize>;
}

impl HttpIo for TcpStream {
    fn read_some(&mut self, buf: &mut [u8]) -> Option<usize> {
        read_some(self, buf)
    }
}

impl HttpIo for ServerStream {
    fn pending(&mut self) -> bool {
        // An error is reported by the read that follows.
        crate::tls::plaintext_ready(self).map_or(true, |n| n > 0)
    }
    fn read_some(&mut self, buf: &mut [u8]) -> Option<usize> {
        crate::tls::read_some(self, buf)
    }
}

/// One HTTPS connection: the TLS handshake (within the header timeout), then
/// HTTP as on 9001.
fn https_conn(stream: TcpStream, sh: &Shared, peer: &str, guard: &ConnGuard) {
    let Some(cfg) = sh.tls.clone() else { return };
    let conn = match rustls::ServerConnection::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            (sh.log)(format!("[https {peer}] TLS: {e}"));
            return;
        }
    };
    let mut tls = ServerStream::new(conn, stream);
    let deadline = Instant::now() + sh.limits.header_timeout;
    let stop = sh.stop.clone();
    let stopped = move || stop.is_rung();
    match crate::tls::handshake(&mut tls, deadline, Some(&stopped)) {
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
    // Reads wait on poll from here on.
    let _ = tls.sock.set_read_timeout(None);
    http_conn(tls, sh, peer, guard);
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

fn http_conn<S: HttpIo>(mut stream: S, sh: &Shared, peer: &str, guard: &ConnGuard) {
    let scheme = S::SCHEME;
    let lim = sh.limits;
    // A request is a few hundred bytes; 1 MiB (as on TCP) bounds what one
    // connection can make the emulator hold.
    let mut parser = HttpParser::new(HttpConfig {
        max_header_bytes: 64 << 10,
        max_body_bytes: ecr_capture::tcptext::MAX_MESSAGE,
    });
    let mut events = vec![];
    let mut buf = [0u8; 8192];
    let mut last_active = Instant::now();
    // When the request in progress began, and when its body began.
    let mut request_at: Option<Instant> = None;
    let mut body_at: Option<Instant> = None;
    loop {
        let idle = parser.is_idle();
        guard.set_idle(idle);
        let (deadline, late) = match (idle, body_at) {
            (true, _) => (last_active + lim.idle_timeout, None),
            (false, Some(b)) => (b + lim.body_timeout, Some(("body", lim.body_timeout))),
            (false, None) => (
                request_at.unwrap_or(last_active) + lim.header_timeout,
                Some(("headers", lim.header_timeout)),
            ),
        };
        match readable(&mut stream, sh, deadline) {
            Some(Woke::Ready(_)) => {}
            Some(_) => {
                match late {
                    Some((part, limit)) => {
                        (sh.log)(format!(
                            "[{scheme} {peer}] request {part} not complete within {}: answered 408, connection closed",
                            secs(limit)
                        ));
                        let _ = stream.send(b"HTTP/1.1 408 Request Timeout\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                    None => (sh.log)(format!(
                        "[{scheme} {peer}] idle for {}: connection closed",
                        secs(lim.idle_timeout)
                    )),
                }
                let _ = stream.close(Shutdown::Both);
                return;
            }
            None => return,
        }
        let Some(n) = stream.read_some(&mut buf) else {
            return;
        };
        let now = Instant::now();
        if parser.is_idle() && n > 0 {
            request_at = Some(now);
            body_at = None;
        }
        parser.feed(crate::now(), buf.get(..n).unwrap_or(&[]), &mut events);
        if parser.in_body() && body_at.is_none() {
            body_at = Some(now);
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
            guard.set_idle(false);
            let close = m
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let answered = if cors::is_preflight(&m) {
                (sh.log)(format!(
                    "[{scheme} {peer}] {method} {path}: CORS preflight, 204"
                ));
                stream.send(&cors::preflight_answer(&m, close))
            } else if sh.terminal.faults().close_early() {
                (sh.log)(format!(
                    "[{scheme} {peer}] {method} {path}: closing without an answer (fault close-early)"
                ));
                let _ = stream.close(Shutdown::Both);
                return;
            } else {
                let reply = sh.terminal.handle(Some(method), &m.body);
                (sh.log)(format!("[{scheme} {peer}] {method} {path} {}", reply.log));
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n{}\r\n",
                    cors::allow_origin(&m),
                    reply.body.len(),
                    if close { "Connection: close\r\n" } else { "" }
                );
                write_answer(&mut stream, head.as_bytes(), &reply.body, b"", &sh.terminal)
            };
            if answered.is_err() || close {
                let _ = stream.close(Shutdown::Write);
                // Let the client read the answer and close first.
                let _ = stream.read_within(&mut buf, Duration::from_secs(2));
                return;
            }
            // The next request (pipelined, or to come) starts its clocks now.
            let now = Instant::now();
            last_active = now;
            request_at = (!parser.is_idle()).then_some(now);
            body_at = parser.in_body().then_some(now);
        }
    }
}

fn tcp_conn(mut stream: TcpStream, sh: &Shared, peer: &str, guard: &ConnGuard) {
    let lim = sh.limits;
    let mut first = vec![];
    let mut buf = [0u8; 8192];
    let opened = Instant::now();
    let mut first_at: Option<Instant> = None;
    // Decide text or frames (D6) on the first bytes read: `2f 6e 01` never occurs
    // in Base64 or JSON text.
    while first.len() < 3 {
        let deadline = match first_at {
            None => opened + lim.idle_timeout,
            Some(t) => t + lim.body_timeout,
        };
        match readable(&mut stream, sh, deadline) {
            Some(Woke::Ready(_)) => {}
            Some(_) => {
                (sh.log)(format!(
                    "[tcp {peer}] {}: connection closed",
                    if first.is_empty() {
                        format!("idle for {}", secs(lim.idle_timeout))
                    } else {
                        format!("message not complete within {}", secs(lim.body_timeout))
                    }
                ));
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            None => return,
        }
        match read_some(&mut stream, &mut buf) {
            Some(n) => first.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            None => break,
        }
        if !first.is_empty() && first_at.is_none() {
            first_at = Some(Instant::now());
        }
    }
    // A frame start after a few junk bytes (a modem's `\r\nAT+OK\r\n`) still means
    // frames: 0x01 never occurs in Base64 or JSON text. At the very start, the
    // marker and any other control byte too (a frame with a bad version, answered
    // with an error frame like any malformed one).
    if (first.len() >= 3 && ecr_proto::frame::begins_frames(&first))
        || first
            .windows(3)
            .take(64)
            .any(|w| w == [MARKER[0], MARKER[1], VERSION])
    {
        let mut ep = FrameEndpoint::new(stream, Side::Pos, false, None);
        ep.feed(&first);
        frame_loop(ep, sh, &format!("tcp {peer} frames"), Some(guard));
        return;
    }
    let mut gate = TextGate::new(sh.terminal_key());
    let mut pending = first;
    let mut closed = pending.len() < 3;
    let mut last_active = Instant::now();
    let mut message_at: Option<Instant> = first_at;
    loop {
        let mut bodies = vec![];
        let ts = crate::now();
        if !pending.is_empty() {
            gate.feed(&pending, ts, |m| bodies.push(m.body.to_vec()));
            pending.clear();
        }
        if closed {
            gate.close(ts, |m| bodies.push(m.body.to_vec()));
        }
        if !bodies.is_empty() {
            guard.set_idle(false);
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
            last_active = Instant::now();
        }
        if closed {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
        let busy = gate.in_message();
        guard.set_idle(!busy);
        match (busy, message_at) {
            (true, None) => message_at = Some(Instant::now()),
            (false, _) => message_at = None,
            _ => {}
        }
        let deadline = match message_at {
            Some(t) => t + lim.body_timeout,
            None => last_active + lim.idle_timeout,
        };
        match readable(&mut stream, sh, deadline) {
            Some(Woke::Ready(_)) => {}
            Some(_) => {
                (sh.log)(format!(
                    "[tcp {peer}] {}: connection closed",
                    if busy {
                        format!(
                            "message not complete within {} ({} bytes held)",
                            secs(lim.body_timeout),
                            gate.buffered()
                        )
                    } else {
                        format!("idle for {}", secs(lim.idle_timeout))
                    }
                ));
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            None => return,
        }
        match read_some(&mut stream, &mut buf) {
            Some(n) => pending.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            None => closed = true,
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
/// send the business result as a 0x10 message of its own (D2). Results are
/// prepared on worker threads, which ring a bell when one is ready; the loop sleeps
/// on the line and that bell. On TCP (`conn` given) the idle and body timeouts
/// apply; a serial line waits for as long as it takes.
fn frame_loop<L: Line>(
    mut ep: FrameEndpoint<L>,
    sh: &Shared,
    label: &str,
    conn: Option<&ConnGuard>,
) {
    let t = &sh.terminal;
    let lim = sh.limits;
    let Ok(ready) = Bell::new().map(Arc::new) else {
        (sh.log)(format!("[{label}] cannot create a wake-up; line closed"));
        return;
    };
    let (tx, rx) = mpsc::channel::<Reply>();
    let mut pending = 0usize;
    let mut last_active = Instant::now();
    let mut partial_at: Option<Instant> = None;
    let log = |s: String| (sh.log)(format!("[{label}] {s}"));
    loop {
        ready.drain();
        while let Ok(reply) = rx.try_recv() {
            pending = pending.saturating_sub(1);
            last_active = Instant::now();
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
            if t.faults().stray_ack() {
                log("ack with ref 0x55, which no request used (fault stray-ack)".to_string());
                if ep.send_ack(0x55).is_err() {
                    return;
                }
            }
        }
        while let Some(ev) = ep.next_event() {
            last_active = Instant::now();
            partial_at = None;
            if let Err(e) = link_event(&mut ep, ev, sh, &log, &tx, &ready, &mut pending) {
                log(format!("write failed: {e}"));
                return;
            }
        }
        let deadline = match conn {
            None => None,
            Some(_) if pending > 0 => None,
            Some(_) => Some(match partial_at {
                Some(p) => p + lim.body_timeout,
                None => last_active + lim.idle_timeout,
            }),
        };
        if let Some(g) = conn {
            g.set_idle(pending == 0 && partial_at.is_none());
        }
        match wait(&[ep.line().fd(), ready.fd()], &sh.stop, deadline) {
            Ok(Woke::Ready(0)) => match ep.pump() {
                Ok(true) => {
                    if partial_at.is_none() {
                        partial_at = Some(Instant::now());
                    }
                }
                Ok(false) => {
                    log("line closed: the other end closed the line".to_string());
                    return;
                }
                Err(e) => {
                    log(format!("line closed: {e}"));
                    return;
                }
            },
            Ok(Woke::Ready(_)) => {}
            Ok(Woke::Timeout) => {
                log(if partial_at.is_some() {
                    format!(
                        "message not complete within {}: connection closed",
                        secs(lim.body_timeout)
                    )
                } else {
                    format!("idle for {}: connection closed", secs(lim.idle_timeout))
                });
                return;
            }
            Ok(Woke::Stop) => return,
            Err(e) => {
                log(format!("waiting failed: {e}"));
                return;
            }
        }
    }
}

/// Answers one link event on a frame link.
fn link_event<L: Line>(
    ep: &mut FrameEndpoint<L>,
    ev: LinkEvent,
    sh: &Shared,
    log: &dyn Fn(String),
    tx: &mpsc::Sender<Reply>,
    ready: &Arc<Bell>,
    pending: &mut usize,
) -> io::Result<()> {
    let t = &sh.terminal;
    match ev {
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
                return ep.send_error(code, ref_num);
            }
            if t.faults().drop_ack() {
                log(format!("ref {ref_num}: ack dropped (fault drop-ack)"));
                return Ok(());
            }
            if let Some(d) = t.faults().delay_ack() {
                std::thread::sleep(d);
            }
            let r = ep.send_ack(ref_num);
            if t.faults().close_early() {
                log(format!(
                    "ref {ref_num}: acked, no result will follow (fault close-early)"
                ));
            } else if *pending < MAX_PENDING_RESULTS {
                let (t2, tx2, bell) = (t.clone(), tx.clone(), Arc::clone(ready));
                let spawned = std::thread::Builder::new()
                    .stack_size(CONN_STACK)
                    .spawn(move || {
                        let _ = tx2.send(t2.handle(None, &data));
                        bell.ring();
                    });
                match spawned {
                    Ok(_) => *pending += 1,
                    Err(e) => log(format!("ref {ref_num}: cannot start a thread: {e}")),
                }
            } else {
                log(format!(
                    "ref {ref_num}: {MAX_PENDING_RESULTS} results already being prepared; no result for this one"
                ));
            }
            r
        }
    }
}
