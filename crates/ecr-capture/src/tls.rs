//! TLS on a reassembled TCP connection: records, handshake, and decryption with the
//! secrets of a key log ([`crate::keylog`]).
//!
//! Records and handshake messages are parsed with rusticata's `tls-parser`. The AEAD
//! ciphers (AES-128/256-GCM, ChaCha20-Poly1305) are ring's `aead`, whose stitched
//! AES-GCM assembly runs at OpenSSL's speed; the rest of the cryptography is
//! RustCrypto's (`aes` + `cbc`, `hmac`, `sha1`, `sha2`, `hkdf`). What is derived here is only what the RFCs define
//! on top of those primitives: the TLS 1.2 PRF (P_hash over HMAC, RFC 5246 5) and key
//! block (6.3), and TLS 1.3's HKDF-Expand-Label (RFC 8446 7.1).
//!
//! Supported: TLS 1.2 with AES-128/256-GCM, ChaCha20-Poly1305 and AES-CBC with
//! HMAC-SHA-1/256/384 (MAC-then-encrypt, or encrypt-then-MAC when negotiated), whatever
//! the key exchange (the key log gives the master secret); TLS 1.3 with
//! AES-128/256-GCM and ChaCha20-Poly1305, including KeyUpdate. A TLS 1.2 session
//! resumed by session id or ticket is found by its own client random in the key log,
//! or else by the session id or ticket of an earlier connection of the capture
//! whose master secret was known.
//!
//! Nothing that fails authentication (AEAD tag, MAC or CBC padding) is handed out:
//! the direction stops there with a `tls-decrypt-failed` finding.
//!
//! Bounded: a record longer than [`MAX_RECORD`] bytes is refused before anything is
//! buffered for it; handshake messages are reassembled up to [`MAX_HANDSHAKE`] bytes
//! (longer ones are skipped); the session cache holds [`MAX_SESSIONS`] entries.

use std::collections::HashMap;
use std::fmt::Write as _;

use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, InnerIvInit, KeyInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha384};
use tls_parser::{
    parse_tls_extensions, parse_tls_message_handshake, TlsCipherEnc, TlsCipherEncMode,
    TlsCipherMac, TlsCipherSuite, TlsExtension, TlsMessage, TlsMessageHandshake, TlsPRF,
};

use ecr_proto::Timestamp;

use crate::findings::Code;
use crate::keylog::{KeyLog, Secret, Secrets};
use crate::tcp::{PerDir, StreamDir};

/// Largest record accepted: 2^14 bytes of plaintext plus 2048 of expansion (RFC 5246
/// 6.2.3, the limit for TLSCiphertext).
pub const MAX_RECORD: usize = (1 << 14) + 2048;
/// Largest handshake message reassembled (certificate chains fit easily).
pub const MAX_HANDSHAKE: usize = 1 << 17;
/// Most TLS 1.2 sessions remembered for resumption (by session id and by ticket).
pub const MAX_SESSIONS: usize = 10_000;
const HEADER: usize = 5;

/// What a TLS connection hands back.
#[derive(Debug)]
pub enum TlsOut {
    /// Decrypted, authenticated application data.
    Plain {
        /// Which way it went.
        dir: StreamDir,
        /// The bytes.
        data: Vec<u8>,
        /// When the record that completed them was captured.
        ts: Timestamp,
    },
    /// Something to report (`tls-encrypted`, `tls-no-secret`, `tls-decrypt-failed`).
    Finding {
        /// The code.
        code: Code,
        /// The direction the problem is in.
        dir: StreamDir,
        /// One line of detail (no secrets).
        detail: String,
    },
}

/// TLS 1.2 master secrets of the capture's earlier connections, for resumption.
#[derive(Default)]
pub struct SessionCache {
    by_id: HashMap<Vec<u8>, Secret>,
    by_ticket: HashMap<Vec<u8>, Secret>,
    /// Capture time of the last record held while waiting for secrets (live).
    waited: Option<Timestamp>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("ids", &self.by_id.len())
            .field("tickets", &self.by_ticket.len())
            .finish()
    }
}

impl SessionCache {
    /// Live: when a connection last had to wait for its secrets (capture time of
    /// its last held record, or of entering the wait). While this is recent, the
    /// key log is worth reading before every packet: a short connection's FIN
    /// would otherwise end it before the secrets are read.
    pub fn last_wait(&self) -> Option<Timestamp> {
        self.waited
    }

    fn remember(map: &mut HashMap<Vec<u8>, Secret>, k: &[u8], s: &Secret) {
        if k.is_empty() || k.len() > 4096 {
            return;
        }
        if map.len() < MAX_SESSIONS || map.contains_key(k) {
            map.insert(k.to_vec(), s.clone());
        }
    }
}

/// Where the secrets come from.
pub struct TlsKeys<'a> {
    /// Key logs (files and pcapng blocks).
    pub keylog: &'a KeyLog,
    /// Sessions seen earlier in the capture.
    pub sessions: &'a mut SessionCache,
    /// Live capture: when a connection's secrets are missing, hold its encrypted
    /// records (up to [`MAX_HELD`] bytes) until the key log has them, instead of
    /// reporting it at once (a browser writes its key log during the handshake).
    pub wait: bool,
}

/// Most bytes of encrypted records held per connection while waiting for secrets.
pub const MAX_HELD: usize = 256 << 10;

/// The server certificate as shown in findings.
#[derive(Clone, Debug, Default)]
struct CertInfo {
    subject: String,
    not_before: String,
    not_after: String,
    self_signed: bool,
}

/// An AEAD key of one direction: ring's `aead` (BoringSSL's stitched AES-NI/VAES +
/// CLMUL assembly for AES-GCM, its ChaCha20-Poly1305), see docs/architecture.md.
struct Aead(ring::aead::LessSafeKey);

impl Aead {
    fn new(enc: TlsCipherEnc, key: &[u8]) -> Option<Aead> {
        use ring::aead::{AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305};
        let alg = match (enc, key.len()) {
            (TlsCipherEnc::Aes, 16) => &AES_128_GCM,
            (TlsCipherEnc::Aes, 32) => &AES_256_GCM,
            (TlsCipherEnc::Chacha20_Poly1305, 32) => &CHACHA20_POLY1305,
            _ => return None,
        };
        let key = ring::aead::UnboundKey::new(alg, key).ok()?;
        Some(Aead(ring::aead::LessSafeKey::new(key)))
    }
    /// Decrypts `buf` in place when `tag` authenticates it with `nonce` and `aad`.
    fn open(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        use ring::aead::{Aad, Nonce, Tag};
        let Ok(tag) = Tag::try_from(tag) else {
            return false;
        };
        // Each record has its own nonce (sequence number or explicit nonce); this
        // only reads what a peer sealed, so nonce reuse is not ours to prevent.
        let nonce = Nonce::assume_unique_for_key(*nonce);
        self.0
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf, 0..)
            .is_ok()
    }
}

#[derive(Clone)]
enum MacKey {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
}

impl MacKey {
    fn new(mac: TlsCipherMac, key: &[u8]) -> Option<MacKey> {
        Some(match mac {
            TlsCipherMac::HmacSha1 => {
                MacKey::Sha1(<Hmac<Sha1> as KeyInit>::new_from_slice(key).ok()?)
            }
            TlsCipherMac::HmacSha256 => {
                MacKey::Sha256(<Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?)
            }
            TlsCipherMac::HmacSha384 => {
                MacKey::Sha384(<Hmac<Sha384> as KeyInit>::new_from_slice(key).ok()?)
            }
            _ => return None,
        })
    }
    fn len(mac: TlsCipherMac) -> Option<usize> {
        match mac {
            TlsCipherMac::HmacSha1 => Some(20),
            TlsCipherMac::HmacSha256 => Some(32),
            TlsCipherMac::HmacSha384 => Some(48),
            _ => None,
        }
    }
    /// Checks `tag` = HMAC(header ‖ data) in constant time.
    fn verify(&self, header: &[u8], data: &[u8], tag: &[u8]) -> bool {
        fn go<M: Mac + Clone>(m: &M, h: &[u8], d: &[u8], t: &[u8]) -> bool {
            let mut m = m.clone();
            m.update(h);
            m.update(d);
            m.verify_slice(t).is_ok()
        }
        match self {
            MacKey::Sha1(m) => go(m, header, data, tag),
            MacKey::Sha256(m) => go(m, header, data, tag),
            MacKey::Sha384(m) => go(m, header, data, tag),
        }
    }
}

#[derive(Clone)]
enum BlockKey {
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
}

impl BlockKey {
    fn new(key: &[u8]) -> Option<BlockKey> {
        Some(match key.len() {
            16 => BlockKey::Aes128(Box::new(aes::Aes128::new_from_slice(key).ok()?)),
            32 => BlockKey::Aes256(Box::new(aes::Aes256::new_from_slice(key).ok()?)),
            _ => return None,
        })
    }
    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> bool {
        match self {
            BlockKey::Aes128(k) => {
                cbc::Decryptor::<aes::Aes128>::inner_iv_slice_init((**k).clone(), iv)
                    .ok()
                    .and_then(|d| d.decrypt_padded_mut::<NoPadding>(buf).ok())
                    .is_some()
            }
            BlockKey::Aes256(k) => {
                cbc::Decryptor::<aes::Aes256>::inner_iv_slice_init((**k).clone(), iv)
                    .ok()
                    .and_then(|d| d.decrypt_padded_mut::<NoPadding>(buf).ok())
                    .is_some()
            }
        }
    }
}

#[allow(clippy::large_enum_variant)] // one per direction of a TLS connection
enum Protect {
    /// TLS 1.2 AES-GCM: 4-byte salt, 8-byte explicit nonce in each record.
    Gcm12 { aead: Aead, salt: [u8; 4] },
    /// TLS 1.2 ChaCha20-Poly1305 (RFC 7905) and every TLS 1.3 AEAD: nonce = iv ⊕ seq.
    XorNonce {
        aead: Aead,
        iv: [u8; 12],
        tls13: bool,
    },
    /// TLS 1.2 AES-CBC with HMAC, explicit IV per record.
    Cbc {
        key: BlockKey,
        mac: MacKey,
        mac_len: usize,
        etm: bool,
    },
}

/// The decryption state of one direction.
struct Keys {
    protect: Protect,
    seq: u64,
}

/// A TLS record's plaintext and its real content type.
struct Opened {
    content_type: u8,
    data: Vec<u8>,
}

impl Keys {
    /// Decrypts and authenticates one record; `None` when the tag, MAC or padding
    /// fails.
    fn open(&mut self, ctype: u8, version: [u8; 2], frag: &[u8]) -> Option<Opened> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut aad = [0u8; 13];
        let seq_b = seq.to_be_bytes();
        match &self.protect {
            Protect::Gcm12 { aead, salt } => {
                let explicit = frag.get(..8)?;
                let body = frag.get(8..)?;
                let split = body.len().checked_sub(16)?;
                let (ct, tag) = body.split_at(split);
                let mut nonce = [0u8; 12];
                nonce.get_mut(..4)?.copy_from_slice(salt);
                nonce.get_mut(4..)?.copy_from_slice(explicit);
                fill_aad12(&mut aad, &seq_b, ctype, version, ct.len());
                let mut data = ct.to_vec();
                aead.open(&nonce, &aad, &mut data, tag).then_some(Opened {
                    content_type: ctype,
                    data,
                })
            }
            Protect::XorNonce { aead, iv, tls13 } => {
                let split = frag.len().checked_sub(16)?;
                let (ct, tag) = frag.split_at(split);
                let mut nonce = *iv;
                for (n, s) in nonce.iter_mut().skip(4).zip(seq_b) {
                    *n ^= s;
                }
                let mut data = ct.to_vec();
                if *tls13 {
                    let len = u16::try_from(frag.len()).ok()?.to_be_bytes();
                    let hdr = [ctype, version[0], version[1], len[0], len[1]];
                    if !aead.open(&nonce, &hdr, &mut data, tag) {
                        return None;
                    }
                    // TLSInnerPlaintext: content ‖ type ‖ zeros.
                    let end = data.iter().rposition(|&b| b != 0)?;
                    let content_type = *data.get(end)?;
                    data.truncate(end);
                    Some(Opened { content_type, data })
                } else {
                    fill_aad12(&mut aad, &seq_b, ctype, version, ct.len());
                    aead.open(&nonce, &aad, &mut data, tag).then_some(Opened {
                        content_type: ctype,
                        data,
                    })
                }
            }
            Protect::Cbc {
                key,
                mac,
                mac_len,
                etm,
            } => {
                let mac_len = *mac_len;
                if *etm {
                    // RFC 7366: MAC over IV ‖ ciphertext, then decrypt.
                    let split = frag.len().checked_sub(mac_len)?;
                    let (ivct, tag) = frag.split_at(split);
                    fill_aad12(&mut aad, &seq_b, ctype, version, ivct.len());
                    if !mac.verify(&aad, ivct, tag) {
                        return None;
                    }
                    let iv = ivct.get(..16)?;
                    let mut data = ivct.get(16..)?.to_vec();
                    if data.is_empty() || data.len() % 16 != 0 || !key.decrypt(iv, &mut data) {
                        return None;
                    }
                    let plain_len = unpad(&data)?;
                    data.truncate(plain_len);
                    Some(Opened {
                        content_type: ctype,
                        data,
                    })
                } else {
                    // MAC-then-encrypt: decrypt, check padding, then the MAC.
                    let iv = frag.get(..16)?;
                    let mut data = frag.get(16..)?.to_vec();
                    if data.is_empty() || data.len() % 16 != 0 || !key.decrypt(iv, &mut data) {
                        return None;
                    }
                    let unpadded = unpad(&data);
                    let with_mac = unpadded.unwrap_or(data.len());
                    let plain_len = with_mac.checked_sub(mac_len);
                    // The MAC is checked even when the padding is bad, so that both
                    // failures take similar work (this is a passive reader, but the
                    // habit costs nothing).
                    let pl = plain_len.unwrap_or(0);
                    fill_aad12(&mut aad, &seq_b, ctype, version, pl);
                    let tag = data.get(pl..pl + mac_len).unwrap_or_default();
                    let ok = mac.verify(&aad, data.get(..pl).unwrap_or_default(), tag);
                    if !ok || unpadded.is_none() || plain_len.is_none() {
                        return None;
                    }
                    data.truncate(pl);
                    Some(Opened {
                        content_type: ctype,
                        data,
                    })
                }
            }
        }
    }
}

fn fill_aad12(aad: &mut [u8; 13], seq: &[u8; 8], ctype: u8, version: [u8; 2], len: usize) {
    let l = (len as u16).to_be_bytes();
    let tail = [ctype, version[0], version[1], l[0], l[1]];
    let parts = seq.iter().chain(&tail);
    for (a, b) in aad.iter_mut().zip(parts) {
        *a = *b;
    }
}

/// Length of the data before TLS CBC padding (n+1 bytes of value n), or `None`.
fn unpad(data: &[u8]) -> Option<usize> {
    let &n = data.last()?;
    let pad = usize::from(n) + 1;
    let start = data.len().checked_sub(pad)?;
    data.get(start..)?.iter().all(|&b| b == n).then_some(start)
}

/// TLS 1.2 PRF (RFC 5246 5): P_hash(secret, label ‖ seed).
fn prf12(sha384: bool, secret: &[u8], label: &[u8], seed: &[&[u8]], out: &mut [u8]) -> bool {
    fn p_hash<M: Mac + KeyInit + Clone>(secret: &[u8], ls: &[&[u8]], out: &mut [u8]) -> bool {
        let Ok(base) = <M as KeyInit>::new_from_slice(secret) else {
            return false;
        };
        // A(1) = HMAC(secret, seed)
        let mut m = base.clone();
        for s in ls {
            m.update(s);
        }
        let mut a = m.finalize().into_bytes();
        let mut pos = 0;
        while pos < out.len() {
            let mut m = base.clone();
            m.update(&a);
            for s in ls {
                m.update(s);
            }
            let block = m.finalize().into_bytes();
            for (o, b) in out.iter_mut().skip(pos).zip(block.iter()) {
                *o = *b;
            }
            pos += block.len();
            let mut m = base.clone();
            m.update(&a);
            a = m.finalize().into_bytes();
        }
        true
    }
    let mut ls: Vec<&[u8]> = vec![label];
    ls.extend_from_slice(seed);
    if sha384 {
        p_hash::<Hmac<Sha384>>(secret, &ls, out)
    } else {
        p_hash::<Hmac<Sha256>>(secret, &ls, out)
    }
}

/// TLS 1.3 HKDF-Expand-Label(secret, label, "", len) (RFC 8446 7.1).
fn expand_label(sha384: bool, secret: &[u8], label: &str, out: &mut [u8]) -> bool {
    let Ok(len) = u16::try_from(out.len()) else {
        return false;
    };
    let full = [b"tls13 ", label.as_bytes()].concat();
    let Ok(llen) = u8::try_from(full.len()) else {
        return false;
    };
    let l = len.to_be_bytes();
    let info: [&[u8]; 5] = [&l, &[llen], &full, &[0u8], &[]];
    if sha384 {
        hkdf::Hkdf::<Sha384>::from_prk(secret)
            .ok()
            .and_then(|h| h.expand_multi_info(&info, out).ok())
            .is_some()
    } else {
        hkdf::Hkdf::<Sha256>::from_prk(secret)
            .ok()
            .and_then(|h| h.expand_multi_info(&info, out).ok())
            .is_some()
    }
}

fn suite_sha384(s: &TlsCipherSuite) -> bool {
    s.prf == TlsPRF::Sha384
}

fn aead_key_len(s: &TlsCipherSuite) -> Option<usize> {
    match s.enc {
        TlsCipherEnc::Aes => match s.enc_size {
            128 => Some(16),
            256 => Some(32),
            _ => None,
        },
        TlsCipherEnc::Chacha20_Poly1305 => Some(32),
        _ => None,
    }
}

/// Keys for a TLS 1.3 direction from its traffic secret.
fn keys13(s: &TlsCipherSuite, secret: &[u8]) -> Option<Keys> {
    let klen = aead_key_len(s)?;
    let sha384 = suite_sha384(s);
    let mut key = [0u8; 32];
    let mut iv = [0u8; 12];
    let k = key.get_mut(..klen)?;
    if !expand_label(sha384, secret, "key", k) || !expand_label(sha384, secret, "iv", &mut iv) {
        return None;
    }
    Some(Keys {
        protect: Protect::XorNonce {
            aead: Aead::new(s.enc, key.get(..klen)?)?,
            iv,
            tls13: true,
        },
        seq: 0,
    })
}

/// Both directions' keys for TLS 1.2 from the master secret: (client, server).
fn keys12(
    s: &TlsCipherSuite,
    master: &[u8],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
    etm: bool,
) -> Option<(Keys, Keys)> {
    let sha384 = suite_sha384(s);
    let (mac_len, key_len, iv_len) = match (s.enc, s.enc_mode, s.mac) {
        (TlsCipherEnc::Aes, TlsCipherEncMode::Gcm, TlsCipherMac::Aead) => (0, aead_key_len(s)?, 4),
        (TlsCipherEnc::Chacha20_Poly1305, _, TlsCipherMac::Aead) => (0, 32, 12),
        (TlsCipherEnc::Aes, TlsCipherEncMode::Cbc, m) => (MacKey::len(m)?, aead_key_len(s)?, 0),
        _ => return None,
    };
    let mut block = [0u8; 2 * (48 + 32 + 12)];
    let need = 2 * (mac_len + key_len + iv_len);
    let kb = block.get_mut(..need)?;
    if !prf12(
        sha384,
        master,
        b"key expansion",
        &[server_random, client_random],
        kb,
    ) {
        return None;
    }
    let kb = block.get(..need)?;
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let r = kb.get(at..at + n);
        at += n;
        r
    };
    let (cmac, smac) = (take(mac_len)?, take(mac_len)?);
    let (ckey, skey) = (take(key_len)?, take(key_len)?);
    let (civ, siv) = (take(iv_len)?, take(iv_len)?);
    let make = |mac: &[u8], key: &[u8], iv: &[u8]| -> Option<Keys> {
        let protect = match (s.enc, s.enc_mode) {
            (TlsCipherEnc::Aes, TlsCipherEncMode::Gcm) => Protect::Gcm12 {
                aead: Aead::new(s.enc, key)?,
                salt: iv.try_into().ok()?,
            },
            (TlsCipherEnc::Chacha20_Poly1305, _) => Protect::XorNonce {
                aead: Aead::new(s.enc, key)?,
                iv: iv.try_into().ok()?,
                tls13: false,
            },
            _ => Protect::Cbc {
                key: BlockKey::new(key)?,
                mac: MacKey::new(s.mac, mac)?,
                mac_len,
                etm,
            },
        };
        Some(Keys { protect, seq: 0 })
    };
    Some((make(cmac, ckey, civ)?, make(smac, skey, siv)?))
}

/// One direction of a TLS connection.
#[derive(Default)]
struct Dir {
    /// Bytes of a record not yet complete.
    buf: Vec<u8>,
    /// Handshake bytes not yet a complete message.
    hs: Vec<u8>,
    /// Bytes of an overlong handshake message still to skip.
    hs_skip: usize,
    /// Boxed: most connections of a hostile capture never get keys, and the
    /// state of one that does is 576 bytes per direction.
    keys: Option<Box<Keys>>,
    /// TLS 1.3: the current traffic secret (for KeyUpdate).
    secret: Option<Secret>,
    /// Stopped: after a gap, an unreadable record or a failed decryption.
    dead: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Handshake in the clear so far.
    Handshake,
    /// Records are being decrypted.
    Decrypting,
    /// Encrypted and unreadable: reported, nothing more to do.
    Opaque,
    /// Live: the secrets are not in the key log yet; records are held.
    Waiting,
}

/// The TLS state of one TCP connection.
pub struct TlsConn {
    dirs: PerDir<Dir>,
    client_random: Option<[u8; 32]>,
    server_random: Option<[u8; 32]>,
    client_session_id: Vec<u8>,
    client_ticket: Vec<u8>,
    server_session_id: Vec<u8>,
    /// A TLS 1.2 NewSessionTicket seen before the master secret was looked up.
    new_ticket: Vec<u8>,
    sni: Option<String>,
    version: Option<u16>,
    suite: Option<&'static TlsCipherSuite>,
    suite_id: Option<u16>,
    etm: bool,
    cert: Option<CertInfo>,
    master: Option<Secret>,
    secrets13: Option<Box<Secrets>>,
    phase: Phase,
    reported: bool,
    /// Records held while waiting for secrets (live), in arrival order.
    held: Vec<(StreamDir, Vec<u8>, Timestamp)>,
    /// Capture time of the bytes being processed.
    now: Timestamp,
    held_bytes: usize,
    /// Waiting at a TLS 1.3 ServerHello (else at a TLS 1.2 ChangeCipherSpec).
    wait13: bool,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("version", &self.version)
            .field("suite", &self.suite_id)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Default for TlsConn {
    fn default() -> Self {
        Self::new()
    }
}

const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

impl TlsConn {
    /// A connection whose first bytes looked like TLS.
    pub fn new() -> Self {
        TlsConn {
            dirs: PerDir::default(),
            client_random: None,
            server_random: None,
            client_session_id: vec![],
            client_ticket: vec![],
            server_session_id: vec![],
            new_ticket: vec![],
            sni: None,
            version: None,
            suite: None,
            suite_id: None,
            etm: false,
            cert: None,
            master: None,
            secrets13: None,
            phase: Phase::Handshake,
            reported: false,
            held: vec![],
            now: Timestamp::default(),
            held_bytes: 0,
            wait13: false,
        }
    }

    /// True once application data is being decrypted.
    pub fn is_decrypting(&self) -> bool {
        self.phase == Phase::Decrypting
    }

    /// Takes bytes of the TCP stream in direction `dir`, captured at `ts`.
    pub fn feed(
        &mut self,
        dir: StreamDir,
        bytes: &[u8],
        ts: Timestamp,
        keys: &mut TlsKeys<'_>,
        out: &mut Vec<TlsOut>,
    ) {
        self.now = ts;
        self.poll(keys, out);
        if self.phase == Phase::Opaque || self.dirs[dir].dead {
            return;
        }
        let mut buf = std::mem::take(&mut self.dirs[dir].buf);
        let mut input = bytes;
        // Complete a record already started.
        if !buf.is_empty() {
            let need = match record_len(&buf) {
                Some(l) => l,
                None => HEADER,
            };
            let take = need.saturating_sub(buf.len()).min(input.len());
            buf.extend_from_slice(input.get(..take).unwrap_or_default());
            input = input.get(take..).unwrap_or_default();
            if buf.len() >= HEADER {
                match self.check_header(&buf, dir, out) {
                    Some(len) if buf.len() == HEADER + len => {
                        self.record(dir, &buf, keys, out);
                        buf.clear();
                    }
                    Some(len) if buf.len() < HEADER + len => {}
                    _ => return,
                }
            }
            // A header just completed may need more body from `input`.
            if !buf.is_empty() && !input.is_empty() {
                if let Some(need) = record_len(&buf) {
                    let take = need.saturating_sub(buf.len()).min(input.len());
                    buf.extend_from_slice(input.get(..take).unwrap_or_default());
                    input = input.get(take..).unwrap_or_default();
                    if buf.len() == need {
                        self.record(dir, &buf, keys, out);
                        buf.clear();
                    }
                }
            }
        }
        // Whole records straight from the segment.
        while buf.is_empty() && !input.is_empty() {
            if self.phase == Phase::Opaque || self.dirs[dir].dead {
                return;
            }
            if input.len() < HEADER {
                buf.extend_from_slice(input);
                break;
            }
            let Some(len) = self.check_header(input, dir, out) else {
                return;
            };
            match input.get(..HEADER + len) {
                Some(rec) => {
                    self.record(dir, rec, keys, out);
                    input = input.get(HEADER + len..).unwrap_or_default();
                }
                None => {
                    buf.extend_from_slice(input);
                    break;
                }
            }
        }
        let d = &mut self.dirs[dir];
        if !d.dead {
            // An empty buffer is freed: what a connection holds is only ever
            // a record in progress (thousands of idle connections hold nothing).
            if buf.is_empty() {
                buf = Vec::new();
            }
            d.buf = buf;
        }
    }

    /// Bytes this connection holds for records and handshake messages not yet
    /// complete, for records held while waiting for secrets and for the
    /// handshake's facts of variable size: what the analyzer counts in its
    /// stream-byte budget. The fixed part of the state (keys, secrets: about 2 KB)
    /// is not counted here; it is bounded by the number of connections.
    pub fn held(&self) -> usize {
        let dirs: usize = self
            .dirs
            .iter()
            .map(|d| d.buf.capacity() + d.hs.capacity())
            .sum();
        dirs + self.held_bytes + self.facts_held()
    }

    /// Bytes of the connection's fixed state, which the stream budget does not
    /// count (README, Memory limits): the struct itself and, once the secrets are
    /// known, the keys of each direction and the TLS 1.3 secrets.
    pub fn fixed(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.dirs.iter().filter(|d| d.keys.is_some()).count() * std::mem::size_of::<Keys>()
            + self
                .secrets13
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Secrets>())
    }

    /// Bytes of what the handshake told that is kept for the rest of the
    /// connection and whose size the peer chose: session ids, tickets, the server
    /// name and the certificate's facts (each bounded: ids 255 bytes, tickets 4 KiB,
    /// names 200 characters before escaping).
    fn facts_held(&self) -> usize {
        self.client_session_id.capacity()
            + self.server_session_id.capacity()
            + self.client_ticket.capacity()
            + self.new_ticket.capacity()
            + self.sni.as_ref().map_or(0, String::capacity)
            + self.cert.as_ref().map_or(0, |c| {
                c.subject.capacity() + c.not_before.capacity() + c.not_after.capacity()
            })
    }

    /// Drops what [`TlsConn::held`] counts, when the analyzer's budget is spent:
    /// each direction that held an unfinished record or handshake message stops
    /// (its record boundaries are lost with the bytes), and records held while
    /// waiting for secrets are given up. Returns the directions stopped and the
    /// bytes freed.
    pub fn abandon(&mut self) -> (usize, usize) {
        let before = self.held();
        let mut stopped = 0;
        for d in self.dirs.iter_mut() {
            // A direction skipping an overlong message holds nothing: it goes on.
            if !d.buf.is_empty() || !d.hs.is_empty() {
                d.dead = true;
                stopped += 1;
            }
            d.buf = Vec::new();
            d.hs = Vec::new();
        }
        if self.held_bytes > 0 {
            for d in self.dirs.iter_mut() {
                if !d.dead {
                    d.dead = true;
                    stopped += 1;
                }
            }
            self.held = Vec::new();
            self.held_bytes = 0;
        }
        // Tickets kept to resume a session: without them a resumed connection is
        // shown as encrypted (no secrets) rather than decrypted.
        self.client_ticket = Vec::new();
        self.new_ticket = Vec::new();
        (stopped, before.saturating_sub(self.held()))
    }

    /// Validates a record header; reports and stops the direction when it is not one.
    fn check_header(&mut self, h: &[u8], dir: StreamDir, out: &mut Vec<TlsOut>) -> Option<usize> {
        let (Some(&t), Some(&major), Some(len)) = (h.first(), h.get(1), record_len(h)) else {
            return None;
        };
        let len = len - HEADER;
        let problem = if !(20..=24).contains(&t) || major != 3 {
            Some(format!(
                "bytes {:02x} {:02x} are not a TLS record header: decryption of this direction stops",
                t, major
            ))
        } else if len > MAX_RECORD {
            Some(format!(
                "a TLS record of {len} bytes is announced (at most {MAX_RECORD} are allowed): decryption of this direction stops"
            ))
        } else {
            None
        };
        if let Some(detail) = problem {
            self.stop(dir);
            if self.phase == Phase::Decrypting {
                out.push(TlsOut::Finding {
                    code: Code::TlsDecryptFailed,
                    dir,
                    detail,
                });
            }
            return None;
        }
        Some(len)
    }

    fn stop(&mut self, dir: StreamDir) {
        let d = &mut self.dirs[dir];
        d.dead = true;
        d.buf = Vec::new();
        d.hs = Vec::new();
    }

    /// Bytes of this direction are missing: record boundaries are lost.
    pub fn gap(&mut self, dir: StreamDir) {
        self.stop(dir);
    }

    /// The connection ended: a TLS connection that never got far enough to be
    /// described or decrypted is still reported once.
    pub fn finish(&mut self, keys: &mut TlsKeys<'_>, out: &mut Vec<TlsOut>) {
        self.poll(keys, out);
        if self.phase == Phase::Waiting {
            self.held.clear();
            self.reported = false;
            self.report_opaque(StreamDir::ClientToServer, keys.keylog, out);
        }
        if !self.reported && self.phase == Phase::Handshake {
            self.report_opaque(StreamDir::ClientToServer, keys.keylog, out);
        }
    }

    /// Live: when this connection waits for its secrets and the key log now has
    /// them, decrypts the records held so far.
    pub fn poll(&mut self, keys: &mut TlsKeys<'_>, out: &mut Vec<TlsOut>) {
        if self.phase != Phase::Waiting {
            return;
        }
        let ready = if self.wait13 {
            self.client_random
                .and_then(|r| keys.keylog.get(&r))
                .is_some_and(|s| s.client_hs.is_some() && s.server_hs.is_some())
        } else {
            self.find_master(keys).is_some()
        };
        if !ready {
            return;
        }
        self.phase = Phase::Handshake;
        if self.wait13 {
            self.start13(keys, out);
        }
        self.held_bytes = 0;
        for (dir, rec, ts) in std::mem::take(&mut self.held) {
            self.now = ts;
            if self.dirs[dir].dead {
                continue;
            }
            self.record(dir, &rec, keys, out);
        }
    }

    /// Keeps a record while waiting for secrets; gives up past [`MAX_HELD`] bytes.
    fn hold(&mut self, dir: StreamDir, rec: &[u8], keylog: &KeyLog, out: &mut Vec<TlsOut>) {
        if self.held_bytes + rec.len() > MAX_HELD {
            self.held = Vec::new();
            self.reported = false;
            self.report_opaque(dir, keylog, out);
            return;
        }
        self.held_bytes += rec.len();
        self.held.push((dir, rec.to_vec(), self.now));
    }

    fn record(
        &mut self,
        dir: StreamDir,
        rec: &[u8],
        keys: &mut TlsKeys<'_>,
        out: &mut Vec<TlsOut>,
    ) {
        let (Some(&ctype), Some(&v0), Some(&v1), Some(frag)) =
            (rec.first(), rec.get(1), rec.get(2), rec.get(HEADER..))
        else {
            return;
        };
        if self.phase == Phase::Waiting {
            keys.sessions.waited = Some(self.now);
            self.hold(dir, rec, keys.keylog, out);
            return;
        }
        let tls13 = self.version == Some(0x0304);
        let encrypted = match &self.dirs[dir].keys {
            Some(_) => !tls13 || ctype == 23,
            None => false,
        };
        if encrypted {
            let opened = self.dirs[dir]
                .keys
                .as_mut()
                .and_then(|k| k.open(ctype, [v0, v1], frag));
            let Some(o) = opened else {
                let seq = self.dirs[dir]
                    .keys
                    .as_ref()
                    .map_or(0, |k| k.seq.saturating_sub(1));
                self.stop(dir);
                out.push(TlsOut::Finding {
                    code: Code::TlsDecryptFailed,
                    dir,
                    detail: format!(
                        "{} record {seq} of the {} does not authenticate ({}): the key log's secret does not belong to this connection, or the stream is damaged; nothing from here on is shown",
                        self.suite.map_or("TLS", |s| s.name),
                        side_name(dir),
                        self.failure_kind()
                    ),
                });
                return;
            };
            match o.content_type {
                23 if !o.data.is_empty() => out.push(TlsOut::Plain {
                    dir,
                    data: o.data,
                    ts: self.now,
                }),
                22 => self.handshake_bytes(dir, &o.data, keys, out),
                _ => {}
            }
            return;
        }
        match ctype {
            22 => self.handshake_bytes(dir, frag, keys, out),
            20 if !tls13 => self.change_cipher_spec(dir, keys, out),
            // Application data without keys: the handshake was not seen or the
            // secrets are missing.
            23 if !self.reported => self.report_opaque(dir, keys.keylog, out),
            _ => {}
        }
    }

    fn failure_kind(&self) -> &'static str {
        match self.suite.map(|s| s.enc_mode) {
            Some(TlsCipherEncMode::Cbc) => "MAC or padding check failed",
            _ => "authentication tag mismatch",
        }
    }

    fn handshake_bytes(
        &mut self,
        dir: StreamDir,
        mut data: &[u8],
        keys: &mut TlsKeys<'_>,
        out: &mut Vec<TlsOut>,
    ) {
        while !data.is_empty() {
            let d = &mut self.dirs[dir];
            if d.dead {
                return;
            }
            if d.hs_skip > 0 {
                let n = d.hs_skip.min(data.len());
                d.hs_skip -= n;
                data = data.get(n..).unwrap_or_default();
                continue;
            }
            // Fill the 4-byte header, then the body.
            let need = if d.hs.len() < 4 {
                4
            } else {
                4 + u24(d.hs.get(1..4).unwrap_or_default())
            };
            if need > MAX_HANDSHAKE {
                d.hs_skip = need - d.hs.len();
                d.hs.clear();
                continue;
            }
            let take = need.saturating_sub(d.hs.len()).min(data.len());
            d.hs.extend_from_slice(data.get(..take).unwrap_or_default());
            data = data.get(take..).unwrap_or_default();
            if d.hs.len() >= 4 && d.hs.len() == 4 + u24(d.hs.get(1..4).unwrap_or_default()) {
                let msg = std::mem::take(&mut d.hs);
                self.handshake_message(dir, &msg, keys, out);
            }
        }
    }

    fn handshake_message(
        &mut self,
        dir: StreamDir,
        msg: &[u8],
        keys: &mut TlsKeys<'_>,
        out: &mut Vec<TlsOut>,
    ) {
        let Some(&htype) = msg.first() else {
            return;
        };
        let tls13 = self.version == Some(0x0304);
        // TLS 1.3 messages tls-parser does not know in their 1.3 form.
        if tls13 && self.dirs[dir].keys.is_some() {
            match htype {
                20 => self.finished13(dir, keys.keylog, out),
                24 => self.key_update13(dir),
                11 => self.cert13(msg),
                _ => {}
            }
            return;
        }
        let Ok((_, TlsMessage::Handshake(hs))) = parse_tls_message_handshake(msg) else {
            return;
        };
        match hs {
            TlsMessageHandshake::ClientHello(ch) => {
                let Ok(r) = <[u8; 32]>::try_from(ch.random) else {
                    return;
                };
                self.client_random = Some(r);
                self.client_session_id = ch.session_id.unwrap_or_default().to_vec();
                for e in ch
                    .ext
                    .and_then(|e| parse_tls_extensions(e).ok())
                    .map(|x| x.1)
                    .unwrap_or_default()
                {
                    match e {
                        TlsExtension::SNI(names) => {
                            if let Some((_, n)) = names.first() {
                                self.sni = Some(escape(&String::from_utf8_lossy(n)));
                            }
                        }
                        TlsExtension::SessionTicket(t) if t.len() <= 4096 => {
                            self.client_ticket = t.to_vec()
                        }
                        _ => {}
                    }
                }
            }
            TlsMessageHandshake::ServerHello(sh) => {
                let Ok(r) = <[u8; 32]>::try_from(sh.random) else {
                    return;
                };
                if r == HRR_RANDOM {
                    return; // HelloRetryRequest: a second ClientHello follows.
                }
                self.server_random = Some(r);
                self.server_session_id = sh.session_id.unwrap_or_default().to_vec();
                self.suite_id = Some(sh.cipher.0);
                self.suite = TlsCipherSuite::from_id(sh.cipher.0);
                self.version = Some(sh.version.0);
                for e in sh
                    .ext
                    .and_then(|e| parse_tls_extensions(e).ok())
                    .map(|x| x.1)
                    .unwrap_or_default()
                {
                    match e {
                        TlsExtension::SupportedVersions(v) => {
                            if let Some(v) = v.first() {
                                self.version = Some(v.0);
                            }
                        }
                        TlsExtension::EncryptThenMac => self.etm = true,
                        _ => {}
                    }
                }
                if self.version == Some(0x0304) {
                    self.start13(keys, out);
                }
            }
            TlsMessageHandshake::Certificate(c) => {
                if let Some(first) = c.cert_chain.first() {
                    self.cert = cert_info(first.data);
                }
            }
            TlsMessageHandshake::NewSessionTicket(t) => {
                // tls-parser leaves the ticket's 2-byte length in front (RFC 5077 3.3).
                let ticket = match t.ticket {
                    [a, b, rest @ ..]
                        if usize::from(u16::from_be_bytes([*a, *b])) == rest.len() =>
                    {
                        rest
                    }
                    other => other,
                };
                if let Some(m) = &self.master {
                    SessionCache::remember(&mut keys.sessions.by_ticket, ticket, m);
                } else if !ticket.is_empty() && ticket.len() <= 4096 {
                    // Sent before the client's ChangeCipherSpec was seen (its master
                    // secret is looked up there): kept until then.
                    self.new_ticket = ticket.to_vec();
                }
            }
            _ => {}
        }
    }

    /// TLS 1.3 after the ServerHello: both directions switch to handshake keys.
    fn start13(&mut self, keys: &mut TlsKeys<'_>, out: &mut Vec<TlsOut>) {
        let keylog = keys.keylog;
        let found = self.client_random.and_then(|r| keylog.get(&r)).cloned();
        let complete = found
            .as_ref()
            .is_some_and(|s| s.client_hs.is_some() && s.server_hs.is_some());
        if !complete && keys.wait && self.client_random.is_some() {
            self.phase = Phase::Waiting;
            self.wait13 = true;
            keys.sessions.waited = Some(self.now);
            return;
        }
        let (Some(suite), Some(sec)) = (self.suite, found) else {
            self.report_opaque(StreamDir::ServerToClient, keylog, out);
            return;
        };
        let (Some(chs), Some(shs)) = (sec.client_hs.clone(), sec.server_hs.clone()) else {
            self.report_opaque(StreamDir::ServerToClient, keylog, out);
            return;
        };
        let (Some(ck), Some(sk)) = (keys13(suite, chs.as_bytes()), keys13(suite, shs.as_bytes()))
        else {
            self.report_unsupported(out);
            return;
        };
        self.dirs.client.keys = Some(Box::new(ck));
        self.dirs.client.secret = Some(chs);
        self.dirs.server.keys = Some(Box::new(sk));
        self.dirs.server.secret = Some(shs);
        self.secrets13 = Some(Box::new(sec));
        self.phase = Phase::Decrypting;
        self.reported = true;
    }

    /// TLS 1.3 Finished: this direction switches to its application traffic secret.
    fn finished13(&mut self, dir: StreamDir, keylog: &KeyLog, out: &mut Vec<TlsOut>) {
        let app = self.secrets13.as_ref().and_then(|s| match dir {
            StreamDir::ClientToServer => s.client_app.clone(),
            StreamDir::ServerToClient => s.server_app.clone(),
        });
        let keys = match (self.suite, &app) {
            (Some(suite), Some(a)) => keys13(suite, a.as_bytes()),
            _ => None,
        };
        match keys {
            Some(k) => {
                self.dirs[dir].keys = Some(Box::new(k));
                self.dirs[dir].secret = app;
            }
            None => {
                self.stop(dir);
                out.push(TlsOut::Finding {
                    code: Code::TlsNoSecret,
                    dir,
                    detail: format!(
                        "the key log has the handshake secrets of this TLS 1.3 connection but not {} (client random {}): its application data cannot be read",
                        match dir {
                            StreamDir::ClientToServer => "CLIENT_TRAFFIC_SECRET_0",
                            StreamDir::ServerToClient => "SERVER_TRAFFIC_SECRET_0",
                        },
                        self.client_random.map(|r| hex(&r)).unwrap_or_default()
                    ),
                });
                let _ = keylog;
            }
        }
    }

    /// TLS 1.3 KeyUpdate: the next traffic secret (RFC 8446 7.2).
    fn key_update13(&mut self, dir: StreamDir) {
        let Some(suite) = self.suite else { return };
        let sha384 = suite_sha384(suite);
        let Some(cur) = self.dirs[dir].secret.clone() else {
            return;
        };
        let mut next = [0u8; 48];
        let n = if sha384 { 48 } else { 32 };
        let ok = next
            .get_mut(..n)
            .is_some_and(|b| expand_label(sha384, cur.as_bytes(), "traffic upd", b));
        let new = next.get(..n).and_then(Secret::new);
        match (ok, new) {
            (true, Some(s)) => {
                self.dirs[dir].keys = keys13(suite, s.as_bytes()).map(Box::new);
                self.dirs[dir].secret = Some(s);
            }
            _ => self.stop(dir),
        }
    }

    /// TLS 1.3 Certificate, read once decrypted: context, list, first entry.
    fn cert13(&mut self, msg: &[u8]) {
        let body = msg.get(4..).unwrap_or_default();
        let ctx = usize::from(body.first().copied().unwrap_or(0));
        let list = body.get(1 + ctx + 3..).unwrap_or_default();
        let len = u24(list.get(..3).unwrap_or_default());
        if let Some(der) = list.get(3..3 + len) {
            self.cert = cert_info(der);
        }
    }

    /// TLS 1.2 ChangeCipherSpec: what this direction sends next is encrypted.
    fn change_cipher_spec(
        &mut self,
        dir: StreamDir,
        keys: &mut TlsKeys<'_>,
        out: &mut Vec<TlsOut>,
    ) {
        if self.phase == Phase::Opaque {
            return;
        }
        if self.master.is_none() {
            self.master = self.find_master(keys);
        }
        if self.master.is_none()
            && keys.wait
            && self.client_random.is_some()
            && self.server_random.is_some()
        {
            // Replayed from the ChangeCipherSpec once the secret is there.
            self.phase = Phase::Waiting;
            self.wait13 = false;
            keys.sessions.waited = Some(self.now);
            self.held.push((dir, vec![20, 3, 3, 0, 1, 1], self.now));
            return;
        }
        let (Some(master), Some(suite), Some(cr), Some(sr)) = (
            self.master.clone(),
            self.suite,
            self.client_random,
            self.server_random,
        ) else {
            self.report_opaque(dir, keys.keylog, out);
            return;
        };
        // Remember the session for later resumptions.
        SessionCache::remember(&mut keys.sessions.by_id, &self.server_session_id, &master);
        let t = std::mem::take(&mut self.new_ticket);
        SessionCache::remember(&mut keys.sessions.by_ticket, &t, &master);
        let Some((ck, sk)) = keys12(suite, master.as_bytes(), &cr, &sr, self.etm) else {
            self.report_unsupported(out);
            return;
        };
        self.dirs[dir].keys = Some(Box::new(match dir {
            StreamDir::ClientToServer => ck,
            StreamDir::ServerToClient => sk,
        }));
        self.phase = Phase::Decrypting;
        self.reported = true;
    }

    fn find_master(&self, keys: &TlsKeys<'_>) -> Option<Secret> {
        if let Some(m) = self
            .client_random
            .and_then(|r| keys.keylog.get(&r))
            .and_then(|s| s.master.clone())
        {
            return Some(m);
        }
        // Resumption: the server echoed the client's session id, or took its ticket.
        if !self.server_session_id.is_empty() && self.server_session_id == self.client_session_id {
            if let Some(m) = keys.sessions.by_id.get(&self.server_session_id) {
                return Some(m.clone());
            }
        }
        if !self.client_ticket.is_empty() {
            if let Some(m) = keys.sessions.by_ticket.get(&self.client_ticket) {
                return Some(m.clone());
            }
        }
        None
    }

    fn report_unsupported(&mut self, out: &mut Vec<TlsOut>) {
        self.phase = Phase::Opaque;
        self.reported = true;
        out.push(TlsOut::Finding {
            code: Code::TlsEncrypted,
            dir: StreamDir::ClientToServer,
            detail: format!(
                "{}; this cipher suite is not one that can be decrypted here (AES-GCM, ChaCha20-Poly1305, AES-CBC with HMAC-SHA1/256/384)",
                self.describe()
            ),
        });
    }

    /// The connection is encrypted and cannot be read: `tls-encrypted` when no key
    /// log was given, `tls-no-secret` when key logs were given but lack this one.
    fn report_opaque(&mut self, dir: StreamDir, keylog: &KeyLog, out: &mut Vec<TlsOut>) {
        self.phase = Phase::Opaque;
        if self.reported {
            return;
        }
        self.reported = true;
        let what = self.describe();
        let (code, detail) = match self.client_random {
            Some(r) if keylog.was_given() => (
                Code::TlsNoSecret,
                format!(
                    "{what}; client random {} is in no key log given ({} TLS session(s) known): was the key log written on the POS PC while this connection was made?",
                    hex(&r),
                    keylog.len()
                ),
            ),
            None if keylog.was_given() => (
                Code::TlsNoSecret,
                format!("{what}; the handshake is not in the capture, so no key log secret can be matched to this connection (start the capture before the cash register connects)"),
            ),
            _ => (
                Code::TlsEncrypted,
                format!(
                    "{what}; to read it, record the TLS secrets on the POS PC (set SSLKEYLOGFILE=FILE before starting its browser or POS program) and analyze with --tls-keylog FILE"
                ),
            ),
        };
        // About the whole connection: named from the cash register to the terminal.
        let _ = dir;
        out.push(TlsOut::Finding {
            code,
            dir: StreamDir::ClientToServer,
            detail,
        });
    }

    /// "TLS 1.2, SNI x, TLS_ECDHE_..., server certificate CN=..., valid ..., self-signed".
    pub fn describe(&self) -> String {
        let mut s = String::from("HTTPS: ");
        s.push_str(match self.version {
            Some(0x0304) => "TLS 1.3",
            Some(0x0303) => "TLS 1.2",
            Some(0x0302) => "TLS 1.1",
            Some(0x0301) => "TLS 1.0",
            Some(0x0300) => "SSL 3.0",
            Some(_) => "TLS (unknown version)",
            None if self.client_random.is_some() => {
                "TLS (the server's answer to the ClientHello is not in the capture)"
            }
            None => "TLS (the handshake is not in the capture)",
        });
        match &self.sni {
            Some(n) => {
                let _ = write!(s, ", SNI {n}");
            }
            None if self.client_random.is_some() => s.push_str(", no SNI"),
            None => {}
        }
        match (self.suite, self.suite_id) {
            (Some(c), _) => {
                let _ = write!(s, ", cipher suite {}", c.name);
            }
            (None, Some(id)) => {
                let _ = write!(s, ", cipher suite 0x{id:04x}");
            }
            _ => {}
        }
        match (&self.cert, self.version) {
            (Some(c), _) => {
                let _ = write!(
                    s,
                    ", server certificate \"{}\" valid {} to {}, {}",
                    c.subject,
                    c.not_before,
                    c.not_after,
                    if c.self_signed {
                        "self-signed"
                    } else {
                        "issued by a CA"
                    }
                );
            }
            (None, Some(0x0304)) => s.push_str(", server certificate encrypted (TLS 1.3)"),
            (None, Some(_)) => s.push_str(", no server certificate (resumed session)"),
            _ => {}
        }
        s
    }
}

/// True when `bytes` start like a TLS record of any content type (change cipher
/// spec, alert, handshake, application data) with version 3.1-3.4: a connection
/// captured after its handshake starts with application data records. HTTP never
/// starts with these bytes.
pub fn looks_like_record(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, 1..=4, ..])
}

fn side_name(d: StreamDir) -> &'static str {
    match d {
        StreamDir::ClientToServer => "cash register (client)",
        StreamDir::ServerToClient => "terminal (server)",
    }
}

/// Total length (header included) of the record starting at `h`, once 5 bytes are
/// there.
fn record_len(h: &[u8]) -> Option<usize> {
    match h {
        [_, _, _, a, b, ..] => Some(HEADER + usize::from(u16::from_be_bytes([*a, *b]))),
        _ => None,
    }
}

fn u24(b: &[u8]) -> usize {
    match b {
        [a, b, c, ..] => (usize::from(*a) << 16) | (usize::from(*b) << 8) | usize::from(*c),
        _ => 0,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Control characters escaped, and at most 200 characters: for text from a capture.
fn escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars().take(200) {
        if c.is_control() {
            o.extend(c.escape_default());
        } else {
            o.push(c);
        }
    }
    o
}

fn cert_info(der: &[u8]) -> Option<CertInfo> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = &c.tbs_certificate;
    Some(CertInfo {
        subject: escape(&tbs.subject.to_string()),
        not_before: tbs.validity.not_before.to_string(),
        not_after: tbs.validity.not_after.to_string(),
        self_signed: tbs.subject == tbs.issuer,
    })
}

/// For benchmarks only: TLS 1.2 AES-128-GCM record decryption as the analyzer does
/// it (copy out of the stream, open in place, tag check).
#[doc(hidden)]
pub mod bench {
    use super::{Aead, Keys, Protect};
    use tls_parser::TlsCipherEnc;

    /// A decrypter for records protected with `key` and `salt`; each call opens one
    /// record fragment (explicit nonce ‖ ciphertext ‖ tag) as sequence number 0 and
    /// returns the plaintext length, or `None` when it does not authenticate.
    pub fn aes128gcm_tls12(key: &[u8; 16], salt: [u8; 4]) -> impl FnMut(&[u8]) -> Option<usize> {
        let mut k = Aead::new(TlsCipherEnc::Aes, key).map(|aead| Keys {
            protect: Protect::Gcm12 { aead, salt },
            seq: 0,
        });
        move |frag| {
            let k = k.as_mut()?;
            k.seq = 0;
            k.open(23, [3, 3], frag).map(|o| o.data.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(conn: &mut TlsConn, dir: StreamDir, bytes: &[u8], log: &KeyLog) -> Vec<TlsOut> {
        let mut sessions = SessionCache::default();
        let mut keys = TlsKeys {
            keylog: log,
            sessions: &mut sessions,
            wait: false,
        };
        let mut out = vec![];
        conn.feed(dir, bytes, Timestamp(0), &mut keys, &mut out);
        out
    }

    #[test]
    fn an_announced_record_above_the_limit_stops_the_direction_unbuffered() {
        let log = KeyLog::new();
        let mut c = TlsConn::new();
        // A handshake record announcing 65535 bytes: refused at the header.
        let out = feed_all(
            &mut c,
            StreamDir::ClientToServer,
            &[22, 3, 3, 0xff, 0xff, 1, 2],
            &log,
        );
        assert!(out.is_empty());
        assert!(c.dirs.client.dead);
        assert!(c.dirs.client.buf.capacity() < 64, "nothing buffered for it");
        // The other direction still works (and reports when it ends).
        let mut sessions = SessionCache::default();
        let mut keys = TlsKeys {
            keylog: &log,
            sessions: &mut sessions,
            wait: false,
        };
        let mut out = vec![];
        c.finish(&mut keys, &mut out);
        assert!(matches!(
            out.as_slice(),
            [TlsOut::Finding {
                code: Code::TlsEncrypted,
                ..
            }]
        ));
    }

    #[test]
    fn fixed_state_is_small_until_keys_are_known() {
        // What every HTTPS connection holds beside its buffers, counted by
        // `Usage::reserved` and not by the stream budget (README, Memory limits).
        let mut c = TlsConn::new();
        assert!(
            std::mem::size_of::<TlsConn>() <= 640,
            "{}",
            std::mem::size_of::<TlsConn>()
        );
        assert_eq!(c.fixed(), std::mem::size_of::<TlsConn>());
        let suite = TlsCipherSuite::from_id(0x1301).expect("TLS_AES_128_GCM_SHA256");
        let k = keys13(suite, &[7; 32]).expect("keys from a 32-byte secret");
        c.dirs.client.keys = Some(Box::new(k));
        assert_eq!(
            c.fixed(),
            std::mem::size_of::<TlsConn>() + std::mem::size_of::<Keys>()
        );
    }

    #[test]
    fn records_in_pieces_equal_records_whole() {
        // Three empty-bodied alert-like records and a partial one, fed whole and
        // byte by byte: the same record boundaries (nothing decrypts, nothing fails).
        let mut stream = vec![];
        for n in [3usize, 0, 700] {
            stream.extend_from_slice(&[21, 3, 3]);
            stream.extend_from_slice(&(n as u16).to_be_bytes());
            stream.extend(std::iter::repeat_n(0xaa, n));
        }
        stream.extend_from_slice(&[21, 3, 3, 0]);
        let log = KeyLog::new();
        let mut whole = TlsConn::new();
        feed_all(&mut whole, StreamDir::ServerToClient, &stream, &log);
        let mut pieces = TlsConn::new();
        for b in stream.chunks(1) {
            feed_all(&mut pieces, StreamDir::ServerToClient, b, &log);
        }
        assert_eq!(whole.dirs.server.buf, pieces.dirs.server.buf);
        assert_eq!(whole.dirs.server.buf, [21, 3, 3, 0]);
        assert!(!whole.dirs.server.dead && !pieces.dirs.server.dead);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678u32;
        let log = KeyLog::new();
        for round in 0..200 {
            let mut c = TlsConn::new();
            let mut data = vec![22, 3, 3];
            for _ in 0..(round * 7 % 3000) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                data.push(x as u8);
            }
            for (i, chunk) in data.chunks(round % 50 + 1).enumerate() {
                let d = if i % 3 == 0 {
                    StreamDir::ServerToClient
                } else {
                    StreamDir::ClientToServer
                };
                feed_all(&mut c, d, chunk, &log);
            }
        }
    }

    #[test]
    fn unpad_checks_every_padding_byte() {
        assert_eq!(unpad(&[9, 9, 1, 1]), Some(2));
        assert_eq!(unpad(&[9, 0]), Some(1));
        assert_eq!(unpad(&[9, 2, 1, 2]), None);
        assert_eq!(unpad(&[5]), None);
        assert_eq!(unpad(&[]), None);
    }
}
