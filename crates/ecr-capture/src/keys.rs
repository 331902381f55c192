//! The POS-KEYs the analyzer tries, and which terminal each one belongs to.
//!
//! A key file holds one key per line; `ADDRESS=KEY` binds a key to a terminal
//! (`192.168.1.20=...` or `192.168.1.20:9001=...`), so a shop capture with several
//! terminals decrypts each one with its own key. Blank lines and `#` comments are
//! skipped, and so is a UTF-8 byte order mark (Notepad writes one). Unbound keys are
//! tried for every terminal, after its bound keys.
//!
//! After an analysis, [`KeySet::unused_bound`] names the bound keys whose address
//! matched no traffic (a mistyped address is the usual cause of `no-key`).
//!
//! Keys are secrets: nothing here prints them, and errors name the line, not the key.

use std::net::{IpAddr, SocketAddr};

use ecr_proto::cipher::{KeyError, KeyRing, PosKey};

/// Which terminal a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// Every port of this address.
    Ip(IpAddr),
    /// This address and port.
    Socket(SocketAddr),
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Binding::Ip(ip) => write!(f, "{ip}"),
            Binding::Socket(s) => write!(f, "{s}"),
        }
    }
}

impl Binding {
    fn matches(&self, addr: Option<SocketAddr>) -> bool {
        match (self, addr) {
            (Binding::Ip(ip), Some(a)) => a.ip() == *ip,
            (Binding::Socket(s), Some(a)) => a == *s,
            _ => false,
        }
    }
}

/// A problem in a key given by the user.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A line of a key file.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the key itself).
        reason: String,
    },
    /// A key given directly.
    #[error("{0}")]
    Key(#[from] KeyError),
}

/// The largest key file read: about 15,000 lines of `ADDRESS=KEY`, far more
/// than a shop has terminals. A larger file is refused before it is read whole
/// (usually a capture given as `--key-file` by mistake).
pub const MAX_KEY_FILE: u64 = 1 << 20;

/// Reads a key file's text, within [`MAX_KEY_FILE`]; the errors say what was
/// found instead of a key file (too large, or not text). Add it with
/// [`KeySet::add_file_text`].
pub fn read_key_file(path: &std::path::Path) -> Result<String, crate::textfile::TextFileError> {
    crate::textfile::read_text_file(path, MAX_KEY_FILE)
}

/// Terminal addresses whose key rings [`KeySet::for_terminal`] keeps at once.
const MAX_CACHED_TERMINALS: usize = 4096;

/// All keys given, each with its 1-based number (as reported in output).
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<(Option<Binding>, PosKey)>,
    /// Per terminal address: the ring to try, and each ring position's key number.
    cache: foldhash::HashMap<Option<SocketAddr>, (KeyRing, Vec<usize>)>,
    /// Per key: whether its binding matched a terminal seen (unbound keys: unused).
    matched: Vec<bool>,
}

impl KeySet {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an unbound key.
    pub fn add(&mut self, key: PosKey) {
        self.keys.push((None, key));
        self.cache.clear();
    }

    /// Adds a key for one terminal.
    pub fn add_bound(&mut self, binding: Binding, key: PosKey) {
        self.keys.push((Some(binding), key));
        self.cache.clear();
    }

    /// Adds the keys of a key file's text.
    pub fn add_file_text(&mut self, text: &str) -> Result<usize, KeysError> {
        let mut n = 0;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| KeysError::Line {
                line: i + 1,
                reason,
            };
            let (binding, key_text) = match line.split_once('=') {
                Some((addr, key)) if parse_binding(addr.trim()).is_some() => {
                    (parse_binding(addr.trim()), key.trim())
                }
                _ => (None, line),
            };
            let key = PosKey::new(key_text).map_err(|e| err(e.to_string()))?;
            self.keys.push((binding, key));
            n += 1;
        }
        self.cache.clear();
        Ok(n)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key was given.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys to try for the terminal at `pos` (its bound keys first), and for each
    /// ring position the key's 1-based number.
    pub fn for_terminal(&mut self, pos: Option<SocketAddr>) -> (&KeyRing, &[usize]) {
        // Bounded: a capture with very many terminal addresses starts the cache
        // afresh (the rings are only recomputed, nothing is lost).
        if self.cache.len() >= MAX_CACHED_TERMINALS && !self.cache.contains_key(&pos) {
            self.cache.clear();
        }
        let keys = &self.keys;
        let matched = &mut self.matched;
        let (ring, numbers) = self.cache.entry(pos).or_insert_with(|| {
            let mut ring = KeyRing::new();
            let mut numbers = vec![];
            matched.resize(keys.len(), false);
            for (i, (b, k)) in keys.iter().enumerate() {
                if b.is_some_and(|b| b.matches(pos)) {
                    ring.push(k.clone());
                    numbers.push(i + 1);
                    if let Some(m) = matched.get_mut(i) {
                        *m = true;
                    }
                }
            }
            for (i, (b, k)) in keys.iter().enumerate() {
                if b.is_none() {
                    ring.push(k.clone());
                    numbers.push(i + 1);
                }
            }
            (ring, numbers)
        });
        (ring, numbers)
    }
}

impl KeySet {
    /// Keys bound to an address that no terminal seen so far had: each key's
    /// 1-based number and its address (never the key).
    pub fn unused_bound(&self) -> Vec<(usize, String)> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.matched.get(*i).copied().unwrap_or(false))
            .filter_map(|(i, (b, _))| b.map(|b| (i + 1, b.to_string())))
            .collect()
    }

    /// Whether some key is bound to an address (then a terminal may have none).
    pub fn has_bound(&self) -> bool {
        self.keys.iter().any(|(b, _)| b.is_some())
    }

    /// The addresses keys are bound to, for messages ("10.0.0.9, 10.0.0.5:9001").
    pub fn bound_addresses(&self) -> String {
        let v: Vec<String> = self
            .keys
            .iter()
            .filter_map(|(b, _)| b.map(|b| b.to_string()))
            .collect();
        v.join(", ")
    }
}

fn parse_binding(s: &str) -> Option<Binding> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(Binding::Socket(sa));
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .map(Binding::Ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_cache_is_bounded() {
        let mut ks = KeySet::new();
        ks.add_file_text("10.0.0.5=my_qfpay_pos_key\nf46b1f08bec1f39104792cc79ec9aacd\n")
            .unwrap();
        for port in 0..(MAX_CACHED_TERMINALS as u16 + 10) {
            let (ring, nums) = ks.for_terminal(Some(SocketAddr::from(([10, 0, 0, 6], port))));
            assert_eq!((ring.len(), nums), (1, &[2][..]));
            assert!(ks.cache.len() <= MAX_CACHED_TERMINALS);
        }
        // Bound keys still come first after the cache started afresh.
        let (_, nums) = ks.for_terminal(Some("10.0.0.5:9001".parse().unwrap()));
        assert_eq!(nums, &[1, 2]);
    }

    #[test]
    fn key_file_with_bindings_and_comments() {
        let mut ks = KeySet::new();
        let n = ks
            .add_file_text(
                "# shop keys\n\nf46b1f08bec1f39104792cc79ec9aacd\n10.0.0.5=my_qfpay_pos_key\n[::1]:9001 = a1b2c3d4e5f6a7b8\n",
            )
            .unwrap();
        assert_eq!(n, 3);
        let (_, nums) = ks.for_terminal(Some("10.0.0.5:9002".parse().unwrap()));
        assert_eq!(nums, &[2, 1]);
        let (_, nums) = ks.for_terminal(Some("[::1]:9001".parse().unwrap()));
        assert_eq!(nums, &[3, 1]);
        let (ring, nums) = ks.for_terminal(None);
        assert_eq!(nums, &[1]);
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn byte_order_mark_is_skipped_and_unused_bindings_are_named() {
        let mut ks = KeySet::new();
        let n = ks
            .add_file_text("\u{feff}10.0.0.9=f46b1f08bec1f39104792cc79ec9aacd\r\n10.0.0.5:9001=my_qfpay_pos_key\r\n")
            .unwrap();
        assert_eq!(n, 2);
        assert!(ks.has_bound());
        assert_eq!(ks.bound_addresses(), "10.0.0.9, 10.0.0.5:9001");
        let (ring, _) = ks.for_terminal(Some("10.0.0.7:9001".parse().unwrap()));
        assert!(ring.is_empty());
        let (_, nums) = ks.for_terminal(Some("10.0.0.5:9001".parse().unwrap()));
        assert_eq!(nums, &[2]);
        assert_eq!(ks.unused_bound(), vec![(1, "10.0.0.9".to_string())]);
    }

    #[test]
    fn bad_key_names_the_line_not_the_key() {
        let mut ks = KeySet::new();
        let e = ks
            .add_file_text("f46b1f08bec1f39104792cc79ec9aacd\ntoo-short\n")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("line 2:"), "{msg}");
        assert!(!msg.contains("too-short"));
    }
}
