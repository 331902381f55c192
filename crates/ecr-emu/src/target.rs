//! Where `send` sends: `http://HOST[:PORT]`, `https://HOST[:PORT]`, `tcp://HOST[:PORT]`
//! or `serial:DEVICE`.

use std::fmt;
use std::path::PathBuf;

/// Default HTTP port of the terminal (spec section 8).
pub const HTTP_PORT: u16 = 9001;
/// Default raw TCP port of the terminal (spec section 9).
pub const TCP_PORT: u16 = 9002;

/// A terminal address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// HTTP POST to `host:port`.
    Http(String),
    /// HTTP POST over TLS to `host:port` (Haojin 4.34.12 and later).
    Https(String),
    /// Raw TCP to `host:port`.
    Tcp(String),
    /// A serial device (or pseudo-terminal).
    Serial(PathBuf),
}

/// Why a target text is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {reason} (expected http://HOST:9001, https://HOST:9001, tcp://HOST:9002 or serial:/dev/ttyUSB0)")]
pub struct TargetError {
    text: String,
    reason: &'static str,
}

fn host_port(text: &str, rest: &str, default: u16) -> Result<String, TargetError> {
    let rest = rest.trim_end_matches('/');
    let err = |reason| TargetError {
        text: text.to_string(),
        reason,
    };
    if rest.is_empty() {
        return Err(err("no host"));
    }
    if rest.contains('/') {
        return Err(err(
            "a path is not allowed: the path follows from the func_type",
        ));
    }
    // [v6]:port, [v6], host:port, host
    if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or_else(|| err("unclosed '['"))?;
        return match after {
            "" => Ok(format!("[{addr}]:{default}")),
            p => {
                let port = p.strip_prefix(':').ok_or_else(|| err("junk after ']'"))?;
                port.parse::<u16>().map_err(|_| err("bad port"))?;
                Ok(format!("[{addr}]:{port}"))
            }
        };
    }
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            p.parse::<u16>().map_err(|_| err("bad port"))?;
            Ok(rest.to_string())
        }
        Some(_) => Err(err("put an IPv6 address in brackets: [::1]:9001")),
        None => Ok(format!("{rest}:{default}")),
    }
}

impl std::str::FromStr for Target {
    type Err = TargetError;
    fn from_str(text: &str) -> Result<Target, TargetError> {
        if let Some(rest) = text.strip_prefix("http://") {
            Ok(Target::Http(host_port(text, rest, HTTP_PORT)?))
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            Ok(Target::Tcp(host_port(text, rest, TCP_PORT)?))
        } else if let Some(rest) = text.strip_prefix("serial:") {
            if rest.is_empty() {
                return Err(TargetError {
                    text: text.into(),
                    reason: "no device",
                });
            }
            Ok(Target::Serial(PathBuf::from(rest)))
        } else if let Some(rest) = text.strip_prefix("https://") {
            Ok(Target::Https(host_port(text, rest, HTTP_PORT)?))
        } else {
            Err(TargetError {
                text: text.into(),
                reason: "unknown scheme",
            })
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Http(a) => write!(f, "http://{a}"),
            Target::Https(a) => write!(f, "https://{a}"),
            Target::Tcp(a) => write!(f, "tcp://{a}"),
            Target::Serial(p) => write!(f, "serial:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let t = |s: &str| s.parse::<Target>();
        assert_eq!(
            t("http://10.0.0.5"),
            Ok(Target::Http("10.0.0.5:9001".into()))
        );
        assert_eq!(t("http://h:80/"), Ok(Target::Http("h:80".into())));
        assert_eq!(
            t("https://10.0.0.5"),
            Ok(Target::Https("10.0.0.5:9001".into()))
        );
        assert_eq!(
            t("https://[::1]:8443"),
            Ok(Target::Https("[::1]:8443".into()))
        );
        assert_eq!(t("tcp://[::1]"), Ok(Target::Tcp("[::1]:9002".into())));
        assert_eq!(t("tcp://[::1]:7"), Ok(Target::Tcp("[::1]:7".into())));
        assert_eq!(
            t("serial:/dev/ttyUSB0"),
            Ok(Target::Serial("/dev/ttyUSB0".into()))
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://h:x",
            "tcp://::1",
            "http://h/api",
            "https://h/api/pos/trade",
            "serial:",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }
}
