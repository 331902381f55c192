//! AES-CBC with the fixed IV `qfpay202306_hjsh`, PKCS#7 padding and Base64 (spec
//! section 2), keyed by the POS-KEY as decided in D3.
//!
//! A [`PosKey`] builds its AES key schedules once; every message borrows a
//! schedule (it used to copy it, a few hundred bytes) instead of expanding the key
//! again. Decryption runs in place with `cbc`'s parallel-block path, which uses
//! AES-NI when the CPU has it (detected at run time by the `aes` crate).
//!
//! Several keys and key readings can be tried for one message ([`KeyRing`]). Before
//! running a full decryption, each candidate decrypts only the last block and
//! checks its PKCS#7 padding, so wrong keys cost one block each. A wrong key still
//! passes the padding check about once in 256 tries, which is why the decrypt
//! functions take an `accept` predicate: the envelope layer requires valid UTF-8
//! that parses, and a candidate whose plaintext it rejects counts as a failure.

use core::fmt;

use aes::{Aes128, Aes192, Aes256};
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::consts::U16;
use cbc::cipher::{
    Block, BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut,
    BlockSizeUser, InnerIvInit, KeyInit,
};
use md5::{Digest as _, Md5};

/// The fixed CBC initialisation vector of the ECR protocol (spec section 2).
pub const IV: [u8; 16] = *b"qfpay202306_hjsh";

/// AES block size in bytes.
pub const BLOCK: usize = 16;

/// How the POS-KEY text was turned into an AES key (D3). Reported with every
/// decryption so that real captures can settle which reading terminals use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyInterpretation {
    /// The text's 16 bytes as an AES-128 key.
    Text128,
    /// The text's 24 bytes as an AES-192 key.
    Text192,
    /// The text's 32 bytes as an AES-256 key (the default key, read as Odoo does).
    Text256,
    /// A 32-hex-digit text decoded to 16 bytes, as an AES-128 key.
    Hex128,
}

impl KeyInterpretation {
    /// A short stable name for output: `text-128`, `text-192`, `text-256`, `hex-128`.
    pub fn name(self) -> &'static str {
        match self {
            KeyInterpretation::Text128 => "text-128",
            KeyInterpretation::Text192 => "text-192",
            KeyInterpretation::Text256 => "text-256",
            KeyInterpretation::Hex128 => "hex-128",
        }
    }
}

impl fmt::Display for KeyInterpretation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key text cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key text is empty (after trimming whitespace).
    #[error("the POS-KEY is empty")]
    Empty,
    /// No AES key can be made from it: it is not 16, 24 or 32 bytes long.
    #[error("a POS-KEY must be 16, 24 or 32 bytes long (or 32 hex digits), not {len}")]
    BadLength {
        /// Its length in bytes.
        len: usize,
    },
    /// [`PosKey::encrypt_as`] was asked for a reading this key does not have.
    #[error("this POS-KEY cannot be read as {0}")]
    NoSuchInterpretation(KeyInterpretation),
}

/// Why Base64 text could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// Nothing but whitespace.
    #[error("empty Base64 text")]
    Empty,
    /// A byte outside the standard alphabet (offset in the text as given).
    #[error("byte 0x{byte:02x} at offset {offset} is not Base64")]
    InvalidByte {
        /// Where.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// The number of symbols cannot be Base64 (one symbol too many in the last quad).
    #[error("Base64 text of {symbols} symbols has an impossible length")]
    InvalidLength {
        /// Symbols counted, whitespace removed.
        symbols: usize,
    },
    /// The last symbol carries bits that would be discarded: truncated or corrupt.
    #[error("Base64 text ends in a non-canonical symbol")]
    InvalidLastSymbol,
    /// `=` in the middle of the text, or too much of it.
    #[error("misplaced '=' padding in Base64 text")]
    InvalidPadding,
}

/// Why decryption failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// There was no ciphertext.
    #[error("empty ciphertext")]
    Empty,
    /// The ciphertext is not a whole number of 16-byte blocks, so it is not
    /// AES-CBC output at all (or it was truncated).
    #[error("ciphertext of {len} bytes is not a multiple of 16")]
    NotBlockAligned {
        /// Its length.
        len: usize,
    },
    /// The key ring is empty.
    #[error("no POS-KEY given")]
    NoKey,
    /// No key and reading gave valid padding and acceptable plaintext.
    #[error("no key decrypts it ({attempts} key readings tried)")]
    WrongKey {
        /// Key readings tried.
        attempts: usize,
    },
    /// The text was not Base64.
    #[error("bad Base64: {0}")]
    Base64(#[from] Base64Error),
}

/// A successful decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The plaintext, padding removed.
    pub plaintext: Vec<u8>,
    /// Which key of the [`KeyRing`] worked (0 for a lone [`PosKey`]).
    pub key_index: usize,
    /// How that key's text was read.
    pub interpretation: KeyInterpretation,
}

/// An initialised AES key schedule of one of the three sizes.
#[derive(Clone)]
enum Schedule {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

/// Decrypts `buf` in place with CBC and the protocol IV; the plaintext length.
/// The decryptor borrows the key schedule (`cipher` implements the block traits
/// for `&C`), so a message does not copy it.
fn cbc_decrypt<C>(cipher: &C, buf: &mut [u8]) -> Option<usize>
where
    C: BlockCipher + BlockDecrypt + BlockSizeUser<BlockSize = U16>,
{
    cbc::Decryptor::<&C>::inner_iv_init(cipher, (&IV).into())
        .decrypt_padded_mut::<Pkcs7>(buf)
        .ok()
        .map(<[u8]>::len)
}

/// Encrypts `msg` with CBC, the protocol IV and PKCS#7.
fn cbc_encrypt<C>(cipher: &C, msg: &[u8]) -> Vec<u8>
where
    C: BlockCipher + BlockEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let padded_len = (msg.len() / BLOCK + 1) * BLOCK;
    let mut buf = vec![0u8; padded_len];
    if let Some(head) = buf.get_mut(..msg.len()) {
        head.copy_from_slice(msg);
    }
    let n = cbc::Encryptor::<&C>::inner_iv_init(cipher, (&IV).into())
        .encrypt_padded_mut::<Pkcs7>(&mut buf, msg.len())
        .map(<[u8]>::len)
        // Cannot fail: the buffer has room for a full padding block.
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

/// Decrypts only the last block of `ct` and checks its PKCS#7 padding: a cheap
/// filter that rejects about 255 of 256 wrong keys.
fn last_block_padding_ok<C>(cipher: &C, ct: &[u8]) -> bool
where
    C: BlockCipher + BlockDecrypt + BlockSizeUser<BlockSize = U16>,
{
    last_block(cipher, ct).is_some()
}

/// The plaintext bytes of the last block of `ct` (padding removed) when its PKCS#7
/// padding is valid.
fn last_block_plain<C>(cipher: &C, ct: &[u8]) -> Option<Vec<u8>>
where
    C: BlockCipher + BlockDecrypt + BlockSizeUser<BlockSize = U16>,
{
    let (block, len) = last_block(cipher, ct)?;
    Some(block.get(..len).unwrap_or_default().to_vec())
}

/// The last block of `ct` decrypted, and how many of its bytes are plaintext,
/// when its PKCS#7 padding is valid (no allocation: this runs for every key).
fn last_block<C>(cipher: &C, ct: &[u8]) -> Option<([u8; BLOCK], usize)>
where
    C: BlockCipher + BlockDecrypt + BlockSizeUser<BlockSize = U16>,
{
    let n = ct.len();
    let last = n.checked_sub(BLOCK).and_then(|s| ct.get(s..))?;
    let prev = match n.checked_sub(2 * BLOCK) {
        Some(s) => ct.get(s..s + BLOCK)?,
        None => &IV[..],
    };
    let mut block = Block::<C>::default();
    block.copy_from_slice(last);
    cipher.decrypt_block(&mut block);
    for (b, p) in block.iter_mut().zip(prev) {
        *b ^= p;
    }
    let pad = block.last().copied().unwrap_or(0);
    let ok = (1..=BLOCK as u8).contains(&pad)
        && block.iter().rev().take(pad as usize).all(|&b| b == pad);
    let out: [u8; BLOCK] = block.into();
    ok.then(|| (out, BLOCK.saturating_sub(usize::from(pad))))
}

impl Schedule {
    fn decrypt_in_place(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            Schedule::A128(c) => cbc_decrypt(c, buf),
            Schedule::A192(c) => cbc_decrypt(c, buf),
            Schedule::A256(c) => cbc_decrypt(c, buf),
        }
    }

    fn encrypt(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Schedule::A128(c) => cbc_encrypt(c, msg),
            Schedule::A192(c) => cbc_encrypt(c, msg),
            Schedule::A256(c) => cbc_encrypt(c, msg),
        }
    }

    fn plausible(&self, ct: &[u8]) -> bool {
        match self {
            Schedule::A128(c) => last_block_padding_ok(c, ct),
            Schedule::A192(c) => last_block_padding_ok(c, ct),
            Schedule::A256(c) => last_block_padding_ok(c, ct),
        }
    }

    fn last_plain(&self, ct: &[u8]) -> Option<Vec<u8>> {
        match self {
            Schedule::A128(c) => last_block_plain(c, ct),
            Schedule::A192(c) => last_block_plain(c, ct),
            Schedule::A256(c) => last_block_plain(c, ct),
        }
    }
}

/// Decodes 32 hex digits into 16 bytes.
fn hex16(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = (*pair.first()? as char).to_digit(16)?;
        let lo = (*pair.get(1)? as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// A POS-KEY with its AES key schedules, built once.
///
/// The key text is a secret (D3): `Debug` and `Display` print
/// `PosKey(..redacted..)` only. Use [`PosKey::fingerprint`] to tell keys apart in
/// logs. The text is not wiped from memory on drop.
#[derive(Clone)]
pub struct PosKey {
    text: String,
    /// Readings in the order they are tried: the text bytes first (D3), then hex.
    schedules: Vec<(KeyInterpretation, Schedule)>,
}

impl fmt::Debug for PosKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PosKey(..redacted..)")
    }
}

impl fmt::Display for PosKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PosKey(..redacted..)")
    }
}

impl PosKey {
    /// Builds a key from its text. Surrounding whitespace (a key file's trailing
    /// newline) is trimmed. 16, 24 or 32 bytes give AES-128/192/256 over the text
    /// bytes; 32 hex digits also give AES-128 over the decoded bytes (D3).
    pub fn new(text: &str) -> Result<PosKey, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        let bytes = text.as_bytes();
        let mut schedules = Vec::with_capacity(2);
        let text_schedule = match bytes.len() {
            16 => Aes128::new_from_slice(bytes)
                .ok()
                .map(|c| (KeyInterpretation::Text128, Schedule::A128(c))),
            24 => Aes192::new_from_slice(bytes)
                .ok()
                .map(|c| (KeyInterpretation::Text192, Schedule::A192(c))),
            32 => Aes256::new_from_slice(bytes)
                .ok()
                .map(|c| (KeyInterpretation::Text256, Schedule::A256(c))),
            _ => None,
        };
        schedules.extend(text_schedule);
        if let Some(raw) = hex16(text) {
            if let Ok(c) = Aes128::new_from_slice(&raw) {
                schedules.push((KeyInterpretation::Hex128, Schedule::A128(c)));
            }
        }
        if schedules.is_empty() {
            return Err(KeyError::BadLength { len: bytes.len() });
        }
        Ok(PosKey {
            text: text.to_owned(),
            schedules,
        })
    }

    /// The readings this key offers, in the order decryption tries them.
    pub fn interpretations(&self) -> impl Iterator<Item = KeyInterpretation> + '_ {
        self.schedules.iter().map(|(i, _)| *i)
    }

    /// The key text, for the digest (which appends it to the signed text). Named
    /// so that every place a secret leaves this type is easy to find.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// The first 8 hex digits of md5(key text): tells keys apart in logs and
    /// output without revealing them.
    pub fn fingerprint(&self) -> String {
        let d = Md5::digest(self.text.as_bytes());
        d.iter().take(4).map(|b| format!("{b:02x}")).collect()
    }

    /// Encrypts with the primary reading (the text bytes, as Odoo does; the hex
    /// reading only when the text is not a valid AES key length).
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        match self.schedules.first() {
            Some((_, s)) => s.encrypt(plaintext),
            None => Vec::new(),
        }
    }

    /// Encrypts with a chosen reading (tests and the `send` command use this to
    /// imitate a sender that reads the key differently).
    pub fn encrypt_as(
        &self,
        interpretation: KeyInterpretation,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        self.schedules
            .iter()
            .find(|(i, _)| *i == interpretation)
            .map(|(_, s)| s.encrypt(plaintext))
            .ok_or(KeyError::NoSuchInterpretation(interpretation))
    }

    /// [`PosKey::encrypt`] followed by standard Base64 with padding.
    pub fn encrypt_base64(&self, plaintext: &[u8]) -> String {
        encode_base64(&self.encrypt(plaintext))
    }

    /// Decrypts `buf` in place with one reading, without copying: the fast path.
    /// Returns the plaintext (a prefix of `buf`). On bad padding `buf` holds garbage.
    pub fn decrypt_in_place<'b>(
        &self,
        interpretation: KeyInterpretation,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], CipherError> {
        check_shape(buf)?;
        let (_, schedule) = self
            .schedules
            .iter()
            .find(|(i, _)| *i == interpretation)
            .ok_or(CipherError::WrongKey { attempts: 0 })?;
        let n = schedule
            .decrypt_in_place(buf)
            .ok_or(CipherError::WrongKey { attempts: 1 })?;
        Ok(buf.get(..n).unwrap_or_default())
    }

    /// Decrypts with each reading in turn; the first with valid padding wins.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Decrypted, CipherError> {
        decrypt_candidates(
            core::iter::once((0, self)),
            ciphertext.to_vec(),
            &mut |_: &[u8]| true,
        )
    }

    /// Whether a ciphertext ending in `tail` could decrypt with valid PKCS#7
    /// padding under one of this key's readings to a plaintext whose end `accept`
    /// approves (it gets the last block's bytes without the padding), decrypting
    /// one block whatever the ciphertext's length: `tail` is its last two blocks,
    /// or the whole ciphertext when it is a single block. For framers that must
    /// not decrypt a growing text again and again.
    pub fn tail_plausible(&self, tail: &[u8], mut accept: impl FnMut(&[u8]) -> bool) -> bool {
        (tail.len() == BLOCK || tail.len() == 2 * BLOCK)
            && self
                .schedules
                .iter()
                .any(|(_, s)| s.last_plain(tail).is_some_and(|p| accept(&p)))
    }

    /// Decrypts Base64 text (see [`decode_base64`] for what is tolerated).
    pub fn decrypt_base64(&self, text: &[u8]) -> Result<Decrypted, CipherError> {
        let ct = decode_base64(text)?;
        decrypt_candidates(core::iter::once((0, self)), ct, &mut |_: &[u8]| true)
    }
}

/// Rejects ciphertexts that cannot be AES-CBC output.
fn check_shape(ct: &[u8]) -> Result<(), CipherError> {
    if ct.is_empty() {
        return Err(CipherError::Empty);
    }
    if ct.len() % BLOCK != 0 {
        return Err(CipherError::NotBlockAligned { len: ct.len() });
    }
    Ok(())
}

/// Tries every (key, reading) pair whose last block pads correctly; the first
/// whose plaintext `accept` approves wins. The last candidate decrypts `ct` in
/// place; earlier ones work on a copy, so the common single-candidate case never
/// copies the ciphertext.
fn decrypt_candidates<'k>(
    keys: impl Iterator<Item = (usize, &'k PosKey)>,
    mut ct: Vec<u8>,
    accept: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Decrypted, CipherError> {
    check_shape(&ct)?;
    let mut attempts = 0usize;
    // Rarely more than one or two: the first few are kept inline (no allocation
    // per message), any more in `spilled`.
    type Candidate<'s> = (usize, KeyInterpretation, &'s Schedule);
    let mut inline: [Option<Candidate<'k>>; 4] = [None; 4];
    let mut spilled: Vec<Candidate<'k>> = Vec::new();
    let mut count = 0usize;
    for (index, key) in keys {
        for (interp, schedule) in &key.schedules {
            attempts += 1;
            if schedule.plausible(&ct) {
                let c = (index, *interp, schedule);
                match inline.get_mut(count) {
                    Some(slot) => *slot = Some(c),
                    None => spilled.push(c),
                }
                count += 1;
            }
        }
    }
    if attempts == 0 {
        return Err(CipherError::NoKey);
    }
    let candidates = inline.into_iter().flatten().chain(spilled);
    let mut work = Vec::new();
    for (n, (key_index, interpretation, schedule)) in candidates.enumerate() {
        let buf = if n + 1 == count {
            &mut ct
        } else {
            work.clear();
            work.extend_from_slice(&ct);
            &mut work
        };
        if let Some(len) = schedule.decrypt_in_place(buf) {
            let plain = buf.get(..len).unwrap_or_default();
            if accept(plain) {
                buf.truncate(len);
                return Ok(Decrypted {
                    plaintext: core::mem::take(buf),
                    key_index,
                    interpretation,
                });
            }
        }
    }
    Err(CipherError::WrongKey { attempts })
}

/// Several POS-KEYs, tried in order (an analyzer may not know which of a
/// merchant's keys, old or new, a device uses).
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<PosKey>,
}

impl KeyRing {
    /// An empty ring: encrypted messages then fail with [`CipherError::NoKey`].
    pub fn new() -> Self {
        KeyRing { keys: Vec::new() }
    }

    /// A ring of one key.
    pub fn single(key: PosKey) -> Self {
        KeyRing { keys: vec![key] }
    }

    /// Adds a key; returns its index (reported by decryptions).
    pub fn push(&mut self, key: PosKey) -> usize {
        self.keys.push(key);
        self.keys.len() - 1
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key at `index`.
    pub fn get(&self, index: usize) -> Option<&PosKey> {
        self.keys.get(index)
    }

    /// Keys in order.
    pub fn iter(&self) -> impl Iterator<Item = &PosKey> {
        self.keys.iter()
    }

    /// Whether some key reading gives valid PKCS#7 padding to a ciphertext that
    /// ends with `tail`: its last two blocks, or its only block (whose predecessor is
    /// the IV). One block decryption per reading: a cheap test before decoding and
    /// decrypting a long text, rejecting about 255 of 256 texts that are not
    /// ciphertext under these keys.
    pub fn tail_plausible(&self, tail: &[u8]) -> bool {
        tail.len() % BLOCK == 0
            && self
                .keys
                .iter()
                .flat_map(|k| k.schedules.iter())
                .any(|(_, s)| s.plausible(tail))
    }

    /// Decrypts with the first key and reading that gives valid padding.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Decrypted, CipherError> {
        self.decrypt_owned_with(ciphertext.to_vec(), |_| true)
    }

    /// Decrypts with the first key and reading that gives valid padding *and*
    /// a plaintext `accept` approves (e.g. "is UTF-8 and parses"). Takes the
    /// ciphertext by value to decrypt it in place.
    pub fn decrypt_owned_with(
        &self,
        ciphertext: Vec<u8>,
        mut accept: impl FnMut(&[u8]) -> bool,
    ) -> Result<Decrypted, CipherError> {
        decrypt_candidates(self.keys.iter().enumerate(), ciphertext, &mut accept)
    }

    /// Decodes Base64 text, then as [`KeyRing::decrypt_owned_with`].
    pub fn decrypt_base64_with(
        &self,
        text: &[u8],
        accept: impl FnMut(&[u8]) -> bool,
    ) -> Result<Decrypted, CipherError> {
        let ct = decode_base64(text)?;
        self.decrypt_owned_with(ct, accept)
    }
}

impl FromIterator<PosKey> for KeyRing {
    fn from_iter<I: IntoIterator<Item = PosKey>>(iter: I) -> Self {
        KeyRing {
            keys: iter.into_iter().collect(),
        }
    }
}

/// Standard alphabet, padding optional when decoding.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard Base64 with padding, as senders produce it.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Whether `b` may appear in Base64 text as this module tolerates it.
pub const fn is_base64_text_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\\') || b.is_ascii_whitespace()
}

/// Decodes standard Base64 as found on the wire: padding may be missing, ASCII
/// whitespace and line breaks (Java's MIME encoder) are skipped, and the JSON
/// escapes `\/` (read as `/`) and `\n`, `\r`, `\t` (skipped) are undone, for text
/// lifted from a JSON string without unescaping it.
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>, Base64Error> {
    // The usual case, nothing to drop: the text decodes as it is, without the
    // cleaning copy and without a scan for bytes to drop first (the decoder
    // refuses any byte outside the alphabet and `=`). When it refuses, the text
    // is cleaned and decoded again unless there was nothing to clean (then that
    // was the answer: the cleaned text is the text).
    let first = decode_clean(text);
    if first.is_ok()
        || text
            .iter()
            .all(|&b| matches!(b64_class(b), SYMBOL_NOT_PAD | PAD))
    {
        return first;
    }
    let mut clean = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => clean.push(b),
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {}
            b'\\' => match text.get(i + 1) {
                Some(b'/') => {
                    clean.push(b'/');
                    i += 1;
                }
                Some(b'n' | b'r' | b't') => i += 1,
                _ => return Err(Base64Error::InvalidByte { offset: i, byte: b }),
            },
            _ => return Err(Base64Error::InvalidByte { offset: i, byte: b }),
        }
        i += 1;
    }
    decode_clean(&clean)
}

/// [`decode_base64`] of the usual text, made only of alphabet symbols and `=`
/// (nothing to drop): `None` for other text, or text that does not decode. When
/// it decodes, the text had nothing [`base64_decoded_len`] skips, so the length
/// decoded is the length it measures (property-tested): a caller that would
/// measure the text before decoding it can decode it once instead.
pub fn decode_base64_clean(text: &[u8]) -> Option<Vec<u8>> {
    decode_clean(text).ok()
}

/// Decodes Base64 made only of alphabet symbols and `=`.
fn decode_clean(clean: &[u8]) -> Result<Vec<u8>, Base64Error> {
    if clean.is_empty() {
        return Err(Base64Error::Empty);
    }
    LENIENT_B64.decode(clean).map_err(|e| match e {
        base64::DecodeError::InvalidByte(_, _) | base64::DecodeError::InvalidPadding => {
            Base64Error::InvalidPadding
        }
        base64::DecodeError::InvalidLength(_) => Base64Error::InvalidLength {
            symbols: clean.len(),
        },
        base64::DecodeError::InvalidLastSymbol(_, _) => Base64Error::InvalidLastSymbol,
    })
}

/// Length in bytes that Base64 text decodes to, counting symbols only; `None` if
/// a byte is not tolerated by [`decode_base64`]. Cheap, for probing.
pub fn base64_decoded_len(text: &[u8]) -> Option<usize> {
    let mut symbols = 0usize;
    for chunk in text.chunks(64) {
        // By table, a block at a time (no branch per byte).
        let mut bad = false;
        for &b in chunk {
            let class = b64_class(b);
            symbols += usize::from(class == SYMBOL_NOT_PAD);
            bad |= class == INVALID;
        }
        if bad {
            return None;
        }
    }
    symbols.checked_mul(3).map(|n| n / 4)
}

/// A byte's class in [`B64_CLASS`] (every byte has one: the table has 256 entries).
#[inline]
fn b64_class(b: u8) -> u8 {
    B64_CLASS.get(usize::from(b)).copied().unwrap_or(INVALID)
}

/// Classes of bytes in Base64 text ([`B64_CLASS`]).
const INVALID: u8 = 0;
/// An alphabet symbol (`A-Za-z0-9+/`).
const SYMBOL_NOT_PAD: u8 = 1;
/// `=`: a symbol for decoding, padding for counting.
const PAD: u8 = 2;
/// Other bytes [`is_base64_text_byte`] allows (whitespace, escapes).
const OTHER: u8 = 3;

/// Each byte's class, from [`is_base64_text_byte`] and the alphabet, so that the
/// table and the byte test cannot disagree.
// Indexing in a static's initialiser: out of bounds fails the build, never a run.
#[allow(clippy::indexing_slicing)]
static B64_CLASS: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' {
            SYMBOL_NOT_PAD
        } else if b == b'=' {
            PAD
        } else if is_base64_text_byte(b) {
            OTHER
        } else {
            INVALID
        };
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

    #[test]
    fn decisions_vector_aes256_text() {
        let key = PosKey::new(DEFAULT_KEY).unwrap();
        let pt = "{content:{func_type=4001,orderId='12345678'}, digest:'99CE8BF9C7304AC964522D10F51660B4'}";
        let ct = "XczeNuwMCct+IaXZ00lv7Pern+ttWiSyG+Y62QH+wXr471L2opZR5JPeQPXADN/Xc1s+VL82RqBp0KFPo5Mm6KUFau0S1WRPC2YN4s6WpiFjwrbGPq3JPZ2OYXTGZHAb";
        assert_eq!(key.encrypt_base64(pt.as_bytes()), ct);
        let d = key.decrypt_base64(ct.as_bytes()).unwrap();
        assert_eq!(d.plaintext, pt.as_bytes());
        assert_eq!(d.interpretation, KeyInterpretation::Text256);
        assert_eq!(d.key_index, 0);
    }

    #[test]
    fn decisions_vector_aes128() {
        let key = PosKey::new("my_qfpay_pos_key").unwrap();
        let pt = "{content:{func_type=5001}, digest:'5511FE1F062D5DE5AADF6D076F34B8D2'}";
        let ct = "lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=";
        assert_eq!(key.encrypt_base64(pt.as_bytes()), ct);
        let d = key.decrypt_base64(ct.as_bytes()).unwrap();
        assert_eq!(d.plaintext, pt.as_bytes());
        assert_eq!(d.interpretation, KeyInterpretation::Text128);
        assert_eq!(
            key.interpretations().collect::<Vec<_>>(),
            [KeyInterpretation::Text128]
        );
    }

    #[test]
    fn hex_fallback() {
        let key = PosKey::new(DEFAULT_KEY).unwrap();
        assert_eq!(
            key.interpretations().collect::<Vec<_>>(),
            [KeyInterpretation::Text256, KeyInterpretation::Hex128]
        );
        let pt = b"{content:{func_type=5001}, digest:'x'}";
        let ct = key.encrypt_as(KeyInterpretation::Hex128, pt).unwrap();
        let d = key.decrypt(&ct).unwrap();
        assert_eq!(d.plaintext, pt);
        assert_eq!(d.interpretation, KeyInterpretation::Hex128);
        // Same as AES-128 with the decoded bytes, done independently.
        let raw: [u8; 16] = [
            0xf4, 0x6b, 0x1f, 0x08, 0xbe, 0xc1, 0xf3, 0x91, 0x04, 0x79, 0x2c, 0xc7, 0x9e, 0xc9,
            0xaa, 0xcd,
        ];
        let c = Aes128::new_from_slice(&raw).unwrap();
        assert_eq!(cbc_encrypt(&c, pt), ct);
    }

    #[test]
    fn key_lengths() {
        assert_eq!(PosKey::new("  ").unwrap_err(), KeyError::Empty);
        assert_eq!(
            PosKey::new("short").unwrap_err(),
            KeyError::BadLength { len: 5 }
        );
        let k = PosKey::new("0123456789abcdef01234567\n").unwrap();
        assert_eq!(
            k.interpretations().collect::<Vec<_>>(),
            [KeyInterpretation::Text192]
        );
        assert_eq!(k.expose_secret(), "0123456789abcdef01234567");
        let ct = k.encrypt(b"hello");
        assert_eq!(ct.len(), 16);
        assert_eq!(k.decrypt(&ct).unwrap().plaintext, b"hello");
        assert_eq!(
            k.encrypt_as(KeyInterpretation::Hex128, b"x"),
            Err(KeyError::NoSuchInterpretation(KeyInterpretation::Hex128))
        );
    }

    #[test]
    fn never_prints_the_key() {
        let k = PosKey::new(DEFAULT_KEY).unwrap();
        let shown = format!("{k} {k:?} {:?}", KeyRing::single(k.clone()));
        assert!(!shown.contains("f46b"), "{shown}");
        assert!(shown.contains("redacted"));
        assert_eq!(k.fingerprint().len(), 8);
        assert_ne!(k.fingerprint(), "f46b1f08");
    }

    #[test]
    fn wrong_key_fails() {
        let right = PosKey::new("my_qfpay_pos_key").unwrap();
        let ct =
            right.encrypt(b"{content:{func_type=5001}, digest:'5511FE1F062D5DE5AADF6D076F34B8D2'}");
        let mut failures = 0;
        for i in 0..200u32 {
            let wrong = PosKey::new(&format!("wrong_key_{i:06}")).unwrap();
            if wrong
                .decrypt(&ct)
                .ok()
                .filter(|d| core::str::from_utf8(&d.plaintext).is_ok())
                .is_none()
            {
                failures += 1;
            }
        }
        assert_eq!(failures, 200);
    }

    #[test]
    fn key_ring_reports_index() {
        let ring: KeyRing = ["aaaaaaaaaaaaaaaa", "my_qfpay_pos_key", DEFAULT_KEY]
            .into_iter()
            .map(|t| PosKey::new(t).unwrap())
            .collect();
        let ct = PosKey::new(DEFAULT_KEY).unwrap().encrypt(b"{\"a\":1}");
        let d = ring.decrypt(&ct).unwrap();
        assert_eq!(
            (d.key_index, d.interpretation),
            (2, KeyInterpretation::Text256)
        );
        assert_eq!(d.plaintext, b"{\"a\":1}");
        // A predicate that rejects everything turns success into WrongKey.
        assert_eq!(
            ring.decrypt_owned_with(ct.clone(), |_| false),
            Err(CipherError::WrongKey { attempts: 4 })
        );
        assert_eq!(KeyRing::new().decrypt(&ct), Err(CipherError::NoKey));
    }

    #[test]
    fn shape_errors() {
        let k = PosKey::new("my_qfpay_pos_key").unwrap();
        assert_eq!(k.decrypt(&[]), Err(CipherError::Empty));
        assert_eq!(
            k.decrypt(&[0; 17]),
            Err(CipherError::NotBlockAligned { len: 17 })
        );
        let mut buf = [0u8; 15];
        assert!(k
            .decrypt_in_place(KeyInterpretation::Text128, &mut buf)
            .is_err());
    }

    #[test]
    fn in_place() {
        let k = PosKey::new("my_qfpay_pos_key").unwrap();
        let mut buf = k.encrypt(&[7u8; 1000]);
        assert_eq!(buf.len(), 1008);
        let pt = k
            .decrypt_in_place(KeyInterpretation::Text128, &mut buf)
            .unwrap();
        assert_eq!(pt, &[7u8; 1000][..]);
    }

    #[test]
    fn base64_tolerance() {
        assert_eq!(decode_base64(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64(b" aGVs\r\nbG8=\n").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVs\\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"P\\/8=").unwrap(), [0x3f, 0xff]);
        assert_eq!(decode_base64(b"P/8=").unwrap(), [0x3f, 0xff]);
        assert_eq!(decode_base64(b"  "), Err(Base64Error::Empty));
        assert_eq!(
            decode_base64(b"aGV-bG8="),
            Err(Base64Error::InvalidByte {
                offset: 3,
                byte: b'-'
            })
        );
        assert_eq!(decode_base64(b"aG=Vs"), Err(Base64Error::InvalidPadding));
        assert_eq!(
            decode_base64(b"aGVsb"),
            Err(Base64Error::InvalidLength { symbols: 5 })
        );
        assert_eq!(
            decode_base64(b"aGVsbG9="),
            Err(Base64Error::InvalidLastSymbol)
        );
        assert_eq!(base64_decoded_len(b"aGVsbG8="), Some(5));
        assert_eq!(base64_decoded_len(b"{x"), None);
        // Errors found after bytes to drop are those of the cleaned text.
        assert_eq!(
            decode_base64(b"aGVs\nbG9="),
            Err(Base64Error::InvalidLastSymbol)
        );
        assert_eq!(
            decode_base64(b" aGVsb\\n"),
            Err(Base64Error::InvalidLength { symbols: 5 })
        );
    }

    proptest::proptest! {
        #[test]
        fn base64_as_senders_write_it(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..80),
            breaks in proptest::collection::vec((0usize..200, 0usize..5), 0..6),
            unpadded in proptest::prelude::any::<bool>(),
        ) {
            // Padding or not, and line breaks, spaces and JSON escapes anywhere:
            // the same bytes come back.
            let mut text = encode_base64(&bytes).into_bytes();
            if unpadded {
                while text.last() == Some(&b'=') {
                    text.pop();
                }
            }
            // At places in the encoded text (from the end, so that no insert
            // lands inside another).
            let len = text.len();
            let mut breaks: Vec<(usize, usize)> =
                breaks.into_iter().map(|(at, what)| (at % (len + 1), what)).collect();
            breaks.sort_unstable_by(|a, b| b.cmp(a));
            for (at, what) in breaks {
                let insert: &[u8] = [&b"\r\n"[..], b" ", b"\\n", b"\\r\\n", b"\\t"][what];
                text.splice(at..at, insert.iter().copied());
            }
            let slashes_escaped: Vec<u8> = text
                .iter()
                .flat_map(|&b| if b == b'/' { vec![b'\\', b'/'] } else { vec![b] })
                .collect();
            proptest::prop_assert_eq!(decode_base64(&text), Ok(bytes.clone()));
            proptest::prop_assert_eq!(decode_base64(&slashes_escaped), Ok(bytes));
        }

        #[test]
        fn clean_base64_decodes_to_the_length_measured(
            text in proptest::collection::vec(
                proptest::sample::select(b"AQgw+/=9z \\n\r\t\"x".to_vec()), 0..40),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            // Arbitrary text over the alphabet, padding and what gets dropped, and
            // real Base64: what decodes at once decodes as decode_base64 does, to
            // the length base64_decoded_len measures (envelope.rs relies on it).
            for t in [text, encode_base64(&bytes).into_bytes()] {
                if let Some(v) = decode_base64_clean(&t) {
                    proptest::prop_assert_eq!(base64_decoded_len(&t), Some(v.len()));
                    proptest::prop_assert_eq!(decode_base64(&t), Ok(v));
                }
            }
        }
    }
}
