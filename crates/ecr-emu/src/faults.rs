//! Fault injection for the emulator: the field problems support engineers meet,
//! reproduced on demand so the analyzer's findings (and a cash register's error
//! handling) can be seen.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serial: never acknowledge a request frame (the sender hits its 1000 ms limit).
    DropAck,
    /// Serial: acknowledge only after this long (over 1000 ms breaks spec 10.6).
    DelayAck(Duration),
    /// Split every answer into small frames (serial) or segments (TCP, HTTP) with
    /// this pause between them (over 500 ms breaks spec 10.7 on serial).
    Split(Duration),
    /// Serial: damage the end marker of the answer's last frame; TCP/HTTP: damage a
    /// byte in the middle of the answer's body.
    Corrupt,
    /// Reject every digest as wrong (answer 4003), as a terminal would when the
    /// cash register signs with a mistake.
    WrongDigest,
    /// Use another POS-KEY than the cash register (the MMS key was regenerated
    /// but the terminal was not refreshed): encrypted requests fail with 5001,
    /// plain ones with 4003.
    WrongKey,
    /// Close the connection after reading the request, without answering
    /// (serial: ack the request, never send the result).
    CloseEarly,
    /// Encrypt the answers with the POS-KEY (D5 fallbacks): the whole body as
    /// Base64 of AES, or only the `data` field.
    EncryptResponse(ResponseForm),
    /// Frames: after each result, send an ack (0x20) with ref 0x55, which no
    /// request used.
    StrayAck,
}

/// Which part of an answer `encrypt-response` encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseForm {
    /// The whole body, as bare Base64.
    Body,
    /// The `data` field's JSON text, replaced by its Base64.
    Data,
}

/// Why a fault text is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// No such fault.
    #[error("unknown fault {0:?}: use drop-ack, delay-ack=MS, split=MS, corrupt, wrong-digest, wrong-key, close-early, encrypt-response=body|data or stray-ack")]
    Unknown(String),
    /// A fault that takes no value was given one.
    #[error("fault {0:?} takes no value (drop the \"=...\")")]
    NoValue(String),
    /// The milliseconds of delay-ack or split are not a number in range.
    #[error("{name}: the delay must be a whole number of milliseconds from 0 to {MAX_FAULT_MS} (e.g. {name}=1500)")]
    BadMs {
        /// The fault text.
        text: String,
        /// The fault's name.
        name: String,
    },
}

/// The longest delay a fault takes, in milliseconds (10 minutes).
pub const MAX_FAULT_MS: u64 = 600_000;

fn ms(text: &str, name: &str, arg: Option<&str>, default: u64) -> Result<Duration, FaultError> {
    match arg {
        None => Ok(Duration::from_millis(default)),
        Some(a) => a
            .trim()
            .trim_end_matches("ms")
            .parse::<u64>()
            .ok()
            .filter(|&v| v <= MAX_FAULT_MS)
            .map(Duration::from_millis)
            .ok_or_else(|| FaultError::BadMs {
                text: text.to_string(),
                name: name.to_string(),
            }),
    }
}

impl FromStr for Fault {
    type Err = FaultError;
    fn from_str(text: &str) -> Result<Fault, FaultError> {
        let (name, arg) = match text.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (text, None),
        };
        let no_arg = |f: Fault| match arg {
            None => Ok(f),
            Some(_) => Err(FaultError::NoValue(name.to_string())),
        };
        match name {
            "drop-ack" => no_arg(Fault::DropAck),
            "delay-ack" => Ok(Fault::DelayAck(ms(text, name, arg, 1500)?)),
            "split" => Ok(Fault::Split(ms(text, name, arg, 600)?)),
            "corrupt" => no_arg(Fault::Corrupt),
            "wrong-digest" => no_arg(Fault::WrongDigest),
            "wrong-key" => no_arg(Fault::WrongKey),
            "close-early" => no_arg(Fault::CloseEarly),
            "stray-ack" => no_arg(Fault::StrayAck),
            "encrypt-response" => match arg {
                None | Some("body") => Ok(Fault::EncryptResponse(ResponseForm::Body)),
                Some("data") => Ok(Fault::EncryptResponse(ResponseForm::Data)),
                Some(_) => Err(FaultError::Unknown(text.to_string())),
            },
            _ => Err(FaultError::Unknown(text.to_string())),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::DropAck => f.write_str("drop-ack"),
            Fault::DelayAck(d) => write!(f, "delay-ack={}", d.as_millis()),
            Fault::Split(d) => write!(f, "split={}", d.as_millis()),
            Fault::Corrupt => f.write_str("corrupt"),
            Fault::WrongDigest => f.write_str("wrong-digest"),
            Fault::WrongKey => f.write_str("wrong-key"),
            Fault::CloseEarly => f.write_str("close-early"),
            Fault::EncryptResponse(ResponseForm::Body) => f.write_str("encrypt-response=body"),
            Fault::EncryptResponse(ResponseForm::Data) => f.write_str("encrypt-response=data"),
            Fault::StrayAck => f.write_str("stray-ack"),
        }
    }
}

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults(pub Vec<Fault>);

impl Faults {
    fn has(&self, f: Fault) -> bool {
        self.0.contains(&f)
    }
    /// See [`Fault::DropAck`].
    pub fn drop_ack(&self) -> bool {
        self.has(Fault::DropAck)
    }
    /// See [`Fault::DelayAck`].
    pub fn delay_ack(&self) -> Option<Duration> {
        self.0.iter().find_map(|f| match f {
            Fault::DelayAck(d) => Some(*d),
            _ => None,
        })
    }
    /// See [`Fault::Split`].
    pub fn split(&self) -> Option<Duration> {
        self.0.iter().find_map(|f| match f {
            Fault::Split(d) => Some(*d),
            _ => None,
        })
    }
    /// See [`Fault::Corrupt`].
    pub fn corrupt(&self) -> bool {
        self.has(Fault::Corrupt)
    }
    /// See [`Fault::WrongDigest`].
    pub fn wrong_digest(&self) -> bool {
        self.has(Fault::WrongDigest)
    }
    /// See [`Fault::WrongKey`].
    pub fn wrong_key(&self) -> bool {
        self.has(Fault::WrongKey)
    }
    /// See [`Fault::CloseEarly`].
    pub fn close_early(&self) -> bool {
        self.has(Fault::CloseEarly)
    }
    /// See [`Fault::EncryptResponse`].
    pub fn encrypt_response(&self) -> Option<ResponseForm> {
        self.0.iter().find_map(|f| match f {
            Fault::EncryptResponse(r) => Some(*r),
            _ => None,
        })
    }
    /// See [`Fault::StrayAck`].
    pub fn stray_ack(&self) -> bool {
        self.has(Fault::StrayAck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for t in [
            "drop-ack",
            "delay-ack=1500",
            "split=600",
            "corrupt",
            "wrong-digest",
            "wrong-key",
            "close-early",
            "encrypt-response=body",
            "encrypt-response=data",
            "stray-ack",
        ] {
            assert_eq!(t.parse::<Fault>().unwrap().to_string(), t);
        }
        assert_eq!(
            "delay-ack".parse::<Fault>(),
            Ok(Fault::DelayAck(Duration::from_millis(1500)))
        );
        for bad in ["drop", "split=x", "corrupt=1", "delay-ack=9999999"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        // A number out of range is not an "unknown fault": the error states the range.
        let e = "delay-ack=99999999999999999999"
            .parse::<Fault>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 0 to 600000"), "{e}");
        assert!(!e.contains("unknown fault"), "{e}");
        let e = "corrupt=1".parse::<Fault>().unwrap_err().to_string();
        assert!(e.contains("takes no value"), "{e}");
        assert!("nonsense"
            .parse::<Fault>()
            .unwrap_err()
            .to_string()
            .contains("unknown fault"));
        let f = Faults(vec![Fault::Split(Duration::from_millis(10))]);
        assert_eq!(f.split(), Some(Duration::from_millis(10)));
        assert!(!f.corrupt());
    }
}
