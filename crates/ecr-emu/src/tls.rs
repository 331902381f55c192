//! HTTPS on port 9001, as Haojin 4.34.12 and later serve it: the emulator's
//! certificate (made at start with rcgen, or loaded from PEM files), its rustls
//! server configuration, the client configuration of `send --to https://` with the
//! choice of trusting a pinned certificate, any certificate, or none, and a TLS
//! connection as a [`Line`] with read timeouts.
//!
//! rustls runs on the `ring` provider: TLS 1.3 (AES-128/256-GCM, ChaCha20-Poly1305)
//! and TLS 1.2 (ECDHE with AES-GCM or ChaCha20-Poly1305). rustls has no CBC suites
//! and no RSA key exchange. When `SSLKEYLOGFILE` names a file, the TLS secrets of
//! every connection are appended to it in the NSS key log format, so that captures
//! can be decrypted by `analyze --tls-keylog` or Wireshark.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, DigitallySignedStruct, KeyLogFile,
    ServerConfig, ServerConnection, SideData, SignatureScheme, StreamOwned,
};

use crate::line::{Line, ReadOutcome};

/// The environment variable that names the key log file (NSS format), as for
/// browsers, curl and Python.
pub const KEYLOG_ENV: &str = "SSLKEYLOGFILE";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file cannot be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rcgen could not make the certificate.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate, key or settings.
    #[error("TLS setup: {0}")]
    Config(String),
    /// The key log file cannot be opened.
    #[error("{KEYLOG_ENV}={path}: cannot open for appending: {source}")]
    KeyLog {
        /// The file.
        path: String,
        /// Cause.
        source: io::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// The SHA-256 fingerprint of a DER certificate, as `openssl x509 -fingerprint
/// -sha256` and browsers show it (`AB:CD:...`).
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The key log file named by `SSLKEYLOGFILE`, opened once here (created with mode
/// 0600: it holds secrets) so that a path that cannot be written is reported
/// instead of silently ignored; `None` when the variable is unset or empty.
pub fn keylog_file() -> Result<Option<PathBuf>, TlsError> {
    let Some(path) = std::env::var_os(KEYLOG_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| TlsError::KeyLog {
            path: path.display().to_string(),
            source,
        })?;
    Ok(Some(path))
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads certificates from a PEM file (every `CERTIFICATE` block, in order) or a
/// DER file (one certificate).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(
            path,
            "no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\" or DER)",
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        file_err(
            path,
            format!("no PEM private key in it (PKCS#8, PKCS#1 RSA or SEC1 EC): {e}"),
        )
    })
}

/// The emulator's TLS identity.
pub struct ServerIdentity {
    /// The rustls configuration to serve with.
    pub config: Arc<ServerConfig>,
    /// The SHA-256 fingerprint of the leaf certificate.
    pub fingerprint: String,
    /// The leaf certificate in PEM, to give `send --cert` or a browser.
    pub cert_pem: String,
    /// Where the certificate came from, for the start-up line.
    pub origin: String,
    /// The key log file, when `SSLKEYLOGFILE` is set.
    pub keylog: Option<PathBuf>,
}

/// Where the emulator's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Made at start: self-signed ECDSA P-256 for these names (DNS names or IP
    /// addresses).
    Generate(Vec<String>),
    /// A PEM certificate chain and its private key.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Good to the day around new year, which is all a validity period needs.
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Builds the emulator's TLS configuration: TLS 1.2 and 1.3, ALPN `http/1.1`, and
/// the key log when `SSLKEYLOGFILE` is set.
pub fn server_identity(source: &CertSource) -> Result<ServerIdentity, TlsError> {
    let (chain, key, origin) = match source {
        CertSource::Generate(names) => {
            let mut params = rcgen::CertificateParams::new(names.clone())
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, "ecr-sniff emulated terminal");
            dn.push(rcgen::DnType::OrganizationName, "ecr-sniff");
            params.distinguished_name = dn;
            let year = this_year();
            params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
            let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
            let cert = params
                .self_signed(&key)
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            let der = cert.der().clone();
            let key = PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            (
                vec![der],
                key,
                format!(
                    "self-signed ECDSA P-256 certificate made at start for {}",
                    names.join(", ")
                ),
            )
        }
        CertSource::Files { cert, key } => {
            let chain = load_certs(cert)?;
            let k = load_key(key)?;
            (chain, k, format!("certificate from {}", cert.display()))
        }
    };
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::Config("empty certificate chain".into()))?;
    let fp = fingerprint(leaf);
    let cert_pem = pem(leaf);
    let keylog = keylog_file()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("the certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if keylog.is_some() {
        config.key_log = Arc::new(KeyLogFile::new());
    }
    Ok(ServerIdentity {
        config: Arc::new(config),
        fingerprint: fp,
        cert_pem,
        origin,
        keylog,
    })
}

/// Which terminal certificates `send --to https://` accepts. Handshake signatures
/// are verified in every case; only the certificate's trust differs.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// None: terminals have self-signed certificates, so the user must choose.
    #[default]
    Refuse,
    /// Any certificate (`--insecure`, as curl's `-k`).
    Insecure,
    /// Exactly these certificates (`--cert FILE`), whatever names they carry.
    Pinned {
        /// The file they came from, for messages.
        file: String,
        /// The certificates.
        certs: Vec<CertificateDer<'static>>,
    },
}

impl Trust {
    /// Pins the certificates in `path` (PEM or DER).
    pub fn pinned(path: &Path) -> Result<Trust, TlsError> {
        Ok(Trust::Pinned {
            file: path.display().to_string(),
            certs: load_certs(path)?,
        })
    }
}

/// The certificate a server presented, kept for the error message.
pub type Seen = Arc<Mutex<Option<CertificateDer<'static>>>>;

#[derive(Debug)]
struct Verifier {
    trust: Trust,
    seen: Seen,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(end_entity.clone().into_owned());
        let ok = match &self.trust {
            Trust::Refuse => false,
            Trust::Insecure => true,
            Trust::Pinned { certs, .. } => certs.iter().any(|c| c.as_ref() == end_entity.as_ref()),
        };
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client configuration of `send --to https://`: TLS 1.2 and 1.3, ALPN
/// `http/1.1`, the key log when `SSLKEYLOGFILE` is set, and `trust`. The
/// certificate the terminal presents is stored in `seen`.
pub fn client_config(trust: &Trust, seen: Seen) -> Result<Arc<ClientConfig>, TlsError> {
    let p = provider();
    let keylog = keylog_file()?;
    let mut config = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            trust: trust.clone(),
            seen,
            provider: p,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if keylog.is_some() {
        config.key_log = Arc::new(KeyLogFile::new());
    }
    Ok(Arc::new(config))
}

/// The name to verify and send as SNI: an IP address as such (no SNI), a host
/// name as a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_string())
        .map_err(|_| TlsError::Config(format!("{host:?} is not a valid host name")))
}

/// A TLS connection over TCP.
pub type TlsStream<C> = StreamOwned<C, TcpStream>;
/// The emulator's side of a TLS connection.
pub type ServerStream = TlsStream<ServerConnection>;
/// `send`'s side of a TLS connection.
pub type ClientStream = TlsStream<ClientConnection>;

/// Completes the handshake by `deadline` (or until `stop` is set). A rustls error (a refused certificate,
/// no common cipher suite) comes back as `InvalidData` carrying the
/// [`rustls::Error`] (see [`rustls_error`]).
pub fn handshake<C, S>(
    stream: &mut TlsStream<C>,
    deadline: Instant,
    stop: Option<&dyn Fn() -> bool>,
) -> io::Result<()>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    while stream.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake did not finish in time",
            ));
        }
        if stop.is_some_and(|s| s()) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopping"));
        }
        stream
            .sock
            .set_read_timeout(Some(left.min(Duration::from_millis(100))))?;
        match stream.conn.complete_io(&mut stream.sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut stream.sock)?;
    }
    Ok(())
}

/// The rustls error inside an I/O error, if that is what it is.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// What a failed server handshake most likely means, for the log line.
pub fn handshake_hint(e: &io::Error) -> &'static str {
    match rustls_error(e) {
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            " (the client spoke plain HTTP? it must use https://, or run the emulator without --tls)"
        }
        Some(rustls::Error::PeerIncompatible(_)) => {
            " (the client offers only what rustls lacks: TLS 1.0/1.1, CBC suites or RSA key exchange)"
        }
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::AccessDenied,
        )) => {
            " (the client does not trust the certificate: write it with --save-cert FILE and give \
             the client that file: send --cert FILE, curl --cacert FILE, or --insecure)"
        }
        _ => "",
    }
}

/// `TLS 1.3 TLS13_AES_128_GCM_SHA256` for a finished handshake, `(resumed)` after
/// it when the session was resumed.
pub fn describe<S: SideData>(conn: &ConnectionCommon<S>) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    let mut text = match conn.negotiated_cipher_suite() {
        Some(s) => format!("{version} {:?}", s.suite()),
        None => version,
    };
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        text.push_str(" (resumed)");
    }
    text
}

impl<C, S> Line for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>> + Send,
    S: SideData,
{
    fn read_within(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<ReadOutcome> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.read(buf) {
            Ok(0) => Ok(ReadOutcome::Closed),
            Ok(n) => Ok(ReadOutcome::Data(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(ReadOutcome::Timeout)
            }
            // A peer that closes without close_notify (many HTTP clients do once
            // they have the answer) has still closed.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(ReadOutcome::Closed)
            }
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)?;
        self.flush()
    }

    const ENCRYPTED: bool = true;

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.sock.as_fd()
    }
}

/// Plaintext bytes that rustls already holds decrypted, which a `poll` on the
/// socket will not announce (two HTTP requests in one TLS record, or a record
/// read together with the previous one). A poll-driven loop must look here before
/// it waits on the socket. An error is a TLS failure (bad record, alert).
pub fn plaintext_ready<C, S>(stream: &mut TlsStream<C>) -> io::Result<usize>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    let state = stream
        .conn
        .process_new_packets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(state.plaintext_bytes_to_read())
}

/// One read for a poll-driven loop, after [`plaintext_ready`] or a poll found
/// something: buffered plaintext first, else one `read` of what the socket has.
/// `Some(0)` when that was only part of a record (wait again), `None` at the end
/// (close_notify, EOF, error).
pub fn read_some<C, S>(stream: &mut TlsStream<C>, buf: &mut [u8]) -> Option<usize>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    let plain = |stream: &mut TlsStream<C>, buf: &mut [u8]| match stream.conn.reader().read(buf) {
        Ok(0) => Some(None),
        Ok(n) => Some(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(_) => Some(None),
    };
    if let Some(r) = plain(stream, buf) {
        return r;
    }
    match stream.conn.read_tls(&mut stream.sock) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::TimedOut
            ) =>
        {
            return Some(0)
        }
        Err(_) => return None,
    }
    let processed = stream.conn.process_new_packets();
    // Alerts, key updates, tickets: whatever rustls has to say goes out now.
    while stream.conn.wants_write() {
        if stream.conn.write_tls(&mut stream.sock).is_err() {
            return None;
        }
    }
    if processed.is_err() {
        return None;
    }
    plain(stream, buf).unwrap_or(Some(0))
}

/// Closing a connection, for plain TCP and TLS alike.
pub trait Close {
    /// `http` or `https`, for log lines.
    const SCHEME: &'static str;
    /// Closes the write half (TLS: sends close_notify first) or both halves.
    fn close(&mut self, how: Shutdown) -> io::Result<()>;
}

impl Close for TcpStream {
    const SCHEME: &'static str = "http";
    fn close(&mut self, how: Shutdown) -> io::Result<()> {
        self.shutdown(how)
    }
}

impl Close for ServerStream {
    const SCHEME: &'static str = "https";
    fn close(&mut self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.conn.send_close_notify();
            while self.conn.wants_write() {
                if self.conn.write_tls(&mut self.sock).is_err() {
                    break;
                }
            }
        }
        self.sock.shutdown(how)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_rustls() {
        for len in [0usize, 1, 2, 3, 100, 301] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let text = pem(&der);
            let back: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
            if len == 0 {
                assert!(back.is_empty() || back[0].as_ref().is_empty());
            } else {
                assert_eq!(back.len(), 1);
                assert_eq!(back[0].as_ref(), &der[..]);
            }
        }
    }

    #[test]
    fn generated_identity_has_its_fingerprint() {
        let id = server_identity(&CertSource::Generate(vec![
            "localhost".into(),
            "127.0.0.1".into(),
        ]))
        .unwrap();
        let der = CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap();
        assert_eq!(fingerprint(&der), id.fingerprint);
        assert_eq!(id.fingerprint.len(), 32 * 3 - 1);
        assert!(id.origin.contains("localhost, 127.0.0.1"));
    }

    /// A server and a client connected over loopback TCP, handshake done.
    fn pair() -> (ServerStream, ClientStream) {
        let id = server_identity(&CertSource::Generate(vec!["localhost".into()])).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client_sock = TcpStream::connect(addr).unwrap();
        let (server_sock, _) = l.accept().unwrap();
        let cfg = client_config(&Trust::Insecure, Seen::default()).unwrap();
        let mut c = ClientStream::new(
            ClientConnection::new(cfg, server_name("localhost").unwrap()).unwrap(),
            client_sock,
        );
        let mut s = ServerStream::new(ServerConnection::new(id.config).unwrap(), server_sock);
        let deadline = Instant::now() + Duration::from_secs(10);
        let t = std::thread::spawn(move || {
            handshake(&mut c, deadline, None).unwrap();
            c
        });
        handshake(&mut s, deadline, None).unwrap();
        (s, t.join().unwrap())
    }

    /// Waits (bounded) until the socket has bytes.
    fn settle(s: &ServerStream) {
        let mut b = [0u8; 1];
        s.sock.set_nonblocking(true).unwrap();
        for _ in 0..200 {
            if s.sock.peek(&mut b).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        s.sock.set_nonblocking(false).unwrap();
    }

    #[test]
    fn poll_style_reads_see_buffered_records_and_partial_ones() {
        let (mut s, mut c) = pair();
        // Drain what the server sent after its handshake (TLS 1.3 tickets).
        let _ = plaintext_ready(&mut s).unwrap();
        // Two records in one TCP write.
        c.conn.writer().write_all(b"first").unwrap();
        c.conn.writer().write_all(b"second").unwrap();
        let mut wire = vec![];
        while c.conn.wants_write() {
            c.conn.write_tls(&mut wire).unwrap();
        }
        c.sock.write_all(&wire).unwrap();
        settle(&s);
        let mut buf = [0u8; 5];
        assert_eq!(read_some(&mut s, &mut buf), Some(5));
        assert_eq!(&buf, b"first");
        // "second" is decrypted and waiting: a poll on the socket would not say so.
        assert_eq!(plaintext_ready(&mut s).unwrap(), 6);
        let mut buf = [0u8; 16];
        assert_eq!(read_some(&mut s, &mut buf), Some(6));
        assert_eq!(&buf[..6], b"second");
        assert_eq!(plaintext_ready(&mut s).unwrap(), 0);

        // Half a record: nothing yet, then the rest.
        c.conn.writer().write_all(b"split record").unwrap();
        let mut wire = vec![];
        while c.conn.wants_write() {
            c.conn.write_tls(&mut wire).unwrap();
        }
        let (a, b) = wire.split_at(wire.len() / 2);
        c.sock.write_all(a).unwrap();
        settle(&s);
        s.sock.set_nonblocking(true).unwrap();
        assert_eq!(read_some(&mut s, &mut buf), Some(0));
        s.sock.set_nonblocking(false).unwrap();
        c.sock.write_all(b).unwrap();
        settle(&s);
        assert_eq!(read_some(&mut s, &mut buf), Some(12));
        assert_eq!(&buf[..12], b"split record");

        // close_notify ends it.
        c.conn.send_close_notify();
        while c.conn.wants_write() {
            c.conn.write_tls(&mut c.sock).unwrap();
        }
        settle(&s);
        assert_eq!(read_some(&mut s, &mut buf), None);
    }

    #[test]
    fn fingerprint_is_openssl_style() {
        // SHA-256 of the empty string.
        assert!(fingerprint(b"").starts_with("E3:B0:C4:42:98:FC:1C:14"));
    }

    #[test]
    fn names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("terminal.local"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name").is_err());
    }
}
