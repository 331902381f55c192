//! Finding codes: the stable names of every problem the analyzer reports, their
//! severities, and the spec rule each one stands for.
//!
//! Codes are part of the tool's interface (scripts filter on them, `check` files count
//! them), so they never change meaning; new ones may be added.

use core::fmt;
use std::str::FromStr;

use serde::Serialize;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, not a fault.
    Info,
    /// Probably a fault, or a fault that a terminal may tolerate.
    Warning,
    /// A fault: a terminal or cash register following the spec would fail here.
    Error,
}

impl Severity {
    /// The lowercase name used in output and in `--fail-on`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            _ => Err(format!("unknown severity '{s}' (info, warning, error)")),
        }
    }
}

macro_rules! codes {
    ($( $variant:ident = $name:literal, $sev:ident, $rule:literal; )*) => {
        /// A finding code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $(
                #[doc = $rule]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable kebab-case name.
            pub const fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The severity findings of this code have.
            pub const fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev,)* }
            }

            /// The rule of the spec (or of a decision in docs/protocol.md) that the
            /// finding stands for, without its link; [`Code::rule`] adds the link.
            pub const fn spec_rule(self) -> &'static str {
                match self { $(Code::$variant => $rule,)* }
            }
        }

        impl FromStr for Code {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(Code::$variant),)*
                    _ => Err(format!("unknown finding code '{s}'")),
                }
            }
        }
    };
}

codes! {
    GarbageBytes = "garbage-bytes", Warning,
        "spec 10.3: every byte on the link belongs to a frame that starts with 2f6e";
    BadEndMarker = "bad-end-marker", Error,
        "spec 10.3, D1: a frame ends with 2f6e exactly where its total length says";
    UnsupportedVersion = "unsupported-version", Error,
        "spec 10.3: the version byte is 0x01";
    UnknownFrameType = "unknown-frame-type", Error,
        "spec 10.3, 10.4: the type is 0x10 (request), 0x20 (response) or 0x30..0x35 (error)";
    BadRef = "bad-ref", Warning,
        "spec 10.3, D2: ref numbers run 0x01..0x7f";
    BadLength = "bad-length", Error,
        "spec 10.7, D1: total length = this frame's size (>= 11), data length = the whole message's data (>= what the frame carries), and fragments never carry more than the data length";
    OversizeFrame = "oversize-frame", Warning,
        "spec 10.7: at most 1024 data bytes per frame are recommended; larger messages are split";
    ReassemblyTimeout = "reassembly-timeout", Error,
        "spec 10.7, D1: the fragments of a split message follow each other within 500 ms, else the receiver discards the set and answers 0x35";
    AckTimeout = "ack-timeout", Error,
        "spec 10.5, 10.6, D2: a request frame (0x10) is answered by 0x20 or an error frame of the same ref within 1000 ms";
    UnexpectedAck = "unexpected-ack", Warning,
        "spec 10.5: an answer carries the ref of a request from the other side";
    ErrorFrame = "error-frame", Error,
        "spec 10.4: the receiver rejected a frame with an error type";
    BadEnvelope = "bad-envelope", Error,
        "spec 3, 6, D4, D5: a request is {content, digest} in one of three dialects; a response is {respcd, respmsg, resperr, data}";
    DecryptFailed = "decrypt-failed", Error,
        "spec 2, D3: AES-CBC with the POS-KEY and IV qfpay202306_hjsh, PKCS#7, Base64";
    NoKey = "no-key", Info,
        "spec 2: the message is encrypted; give the POS-KEY (--key, --key-file, ECR_POS_KEY) to read it";
    DigestMismatch = "digest-mismatch", Error,
        "spec 4, D4: digest = md5(format_content + POS-KEY), keys sorted, strings in single quotes, numbers as sent";
    UnknownFuncType = "unknown-func-type", Warning,
        "spec 5.1: func_type is 1001, 1002, 3001, 3002, 4001 or 5001";
    UnknownChannel = "unknown-channel", Warning,
        "spec 5.2: channel is one of card_payment, wx, alipay, payme, union, fps, octopus, unionpay_card, amex_card";
    MissingField = "missing-field", Error,
        "spec 3: mandatory fields per func_type (payment: amt, channel; refund, receipt: orderId; inquiry: orderId or out_trade_no)";
    HttpMethod = "http-method", Error,
        "spec 8, D7: requests are sent with HTTP POST (other methods are answered 4004)";
    HttpPathMismatch = "http-path-mismatch", Warning,
        "spec 8: each func_type has its own path (/api/pos/trade, /api/pos/cancel, ...)";
    ErrorResponse = "error-response", Warning,
        "spec 6: respcd 6000 is success; anything else is a failed or refused request";
    CorsBlocked = "cors-blocked", Error,
        "CORS (Fetch standard): a browser POS sees an answer only if it carries Access-Control-Allow-Origin for the page's origin, and sends its POST only after a 2xx answer to its preflight";
    Cancelled = "cancelled", Info,
        "spec 6: respcd 6001, the trade was cancelled by the cashier or the customer: a normal outcome, not a fault";
    NoResponse = "no-response", Error,
        "spec 8, 9: every request gets a response on its connection";
    UnansweredAtEnd = "unanswered-at-end", Info,
        "the capture ended while a request was still waiting for its answer";
    TcpGap = "tcp-gap", Warning,
        "capture: bytes of the TCP stream are missing, so messages around the hole may be lost";
    TruncatedPacket = "truncated-packet", Warning,
        "capture: the packet was cut by the capture's snap length (capture with -s 0)";
    TlsEncrypted = "tls-encrypted", Info,
        "D7: the terminal runs HTTPS on the ECR port; a capture is read only with the TLS secrets (--tls-keylog, SSLKEYLOGFILE)";
    TlsNoSecret = "tls-no-secret", Warning,
        "D7: key logs were given, but none has the secrets of this TLS connection (matched by its client random)";
    TlsDecryptFailed = "tls-decrypt-failed", Error,
        "D7: a TLS record failed authentication (tag, MAC or padding) with the key log's secrets; nothing after it is shown";
    EcrOnOtherPort = "ecr-on-other-port", Info,
        "capture: ECR traffic was seen on a TCP port that is not analysed; name it with --tcp-port or --http-port";
    PartialCardRefund = "partial-card-refund", Warning,
        "spec 3.2: same-day refunds of Visa/Mastercard, UnionPay Card and Amex must be for the full amount";
    PaymeTimeout = "payme-timeout", Warning,
        "spec 3.1: PayMe allows payment_timeout of at most 120 seconds";
    LineSettings = "line-settings", Warning,
        "spec 10.9: the serial line runs at 9600 baud, 8 data bits, no parity, 1 stop bit, no flow control";
    DamagedPacket = "damaged-packet", Warning,
        "capture: a packet or record of the capture file could not be decoded (bad header, bad length)";
    LimitEvicted = "limit-evicted", Warning,
        "analyzer: a memory limit (--memory-limit) dropped state held for this traffic; findings and messages that depended on it may be missing";
}

/// The project's protocol document, which every rule links into.
pub const PROTOCOL_DOC: &str = "docs/protocol.md";

impl Code {
    /// The anchor in docs/protocol.md that explains the rule (`d1`..`d9` for the
    /// decisions, `spec-N-M` for spec section N.M, `capture` for capture problems).
    /// A new code must add its line here (the match has no catch-all on purpose).
    pub const fn anchor(self) -> &'static str {
        match self {
            Code::GarbageBytes => "spec-10-3",
            Code::BadEndMarker => "d1",
            Code::UnsupportedVersion => "spec-10-3",
            Code::UnknownFrameType => "spec-10-4",
            Code::BadRef => "d2",
            Code::BadLength => "d1",
            Code::OversizeFrame => "spec-10-7",
            Code::ReassemblyTimeout => "d1",
            Code::AckTimeout => "d2",
            Code::UnexpectedAck => "spec-10-5",
            Code::ErrorFrame => "spec-10-4",
            Code::BadEnvelope => "d4",
            Code::DecryptFailed => "d3",
            Code::NoKey => "d3",
            Code::DigestMismatch => "spec-4",
            Code::UnknownFuncType => "spec-5-1",
            Code::UnknownChannel => "spec-5-2",
            Code::MissingField => "spec-3",
            Code::HttpMethod => "d7",
            Code::HttpPathMismatch => "spec-8",
            Code::ErrorResponse => "spec-6",
            Code::NoResponse => "spec-8",
            Code::UnansweredAtEnd => "capture",
            Code::TcpGap => "capture",
            Code::TruncatedPacket => "capture",
            Code::TlsEncrypted => "tls",
            Code::TlsNoSecret => "tls",
            Code::TlsDecryptFailed => "tls",
            Code::PartialCardRefund => "spec-3-2",
            Code::PaymeTimeout => "spec-3-1",
            Code::LineSettings => "spec-10-9",
            Code::DamagedPacket => "capture",
            Code::EcrOnOtherPort => "capture",
            Code::LimitEvicted => "limits",
            Code::CorsBlocked => "cors",
            Code::Cancelled => "spec-6",
        }
    }

    /// Where the rule is explained: `docs/protocol.md#<anchor>`.
    pub fn doc_link(self) -> String {
        format!("{PROTOCOL_DOC}#{}", self.anchor())
    }

    /// The rule as output shows it: the spec rule followed by its link into
    /// docs/protocol.md, e.g. `spec 4, D4: ... (docs/protocol.md#spec-4)`.
    pub fn rule(self) -> &'static str {
        static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let texts = TEXTS.get_or_init(|| {
            Code::ALL
                .iter()
                .map(|c| format!("{} ({})", c.spec_rule(), c.doc_link()))
                .collect()
        });
        Code::ALL
            .iter()
            .position(|c| *c == self)
            .and_then(|i| texts.get(i))
            .map_or(self.spec_rule(), String::as_str)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The table of codes in Markdown, as README documents it (a test keeps the two equal).
pub fn markdown_table() -> String {
    let mut s = String::from("| code | severity | rule |\n|---|---|---|\n");
    for c in Code::ALL {
        s.push_str(&format!(
            "| `{}` | {} | {} |\n",
            c.as_str(),
            c.severity(),
            c.rule()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()));
            assert_eq!(c.as_str().parse::<Code>().unwrap(), *c);
        }
        assert!("nope".parse::<Code>().is_err());
    }

    #[test]
    fn every_rule_links_its_anchor() {
        for c in Code::ALL {
            let r = c.rule();
            assert!(r.starts_with(c.spec_rule()), "{c}");
            assert!(
                r.ends_with(&format!(" (docs/protocol.md#{})", c.anchor())),
                "{c}: {r}"
            );
        }
        assert_eq!(
            Code::DigestMismatch.rule(),
            "spec 4, D4: digest = md5(format_content + POS-KEY), keys sorted, strings in single quotes, numbers as sent (docs/protocol.md#spec-4)"
        );
    }

    #[test]
    fn severities_match_the_issue_table() {
        assert_eq!(Code::DigestMismatch.severity(), Severity::Error);
        assert_eq!(Code::NoKey.severity(), Severity::Info);
        assert_eq!(Code::GarbageBytes.severity(), Severity::Warning);
        assert_eq!(Code::Cancelled.severity(), Severity::Info);
        assert!(Severity::Error > Severity::Warning && Severity::Warning > Severity::Info);
    }
}
