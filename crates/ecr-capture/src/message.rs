//! From a message body (an HTTP body, a TCP 9002 message, a reassembled serial data
//! segment) to a message record and the envelope- and content-level findings: the
//! part of the analysis that is the same for every transport.

use ecr_proto::catalogue::{Channel, FuncType, RespCode};
use ecr_proto::cipher::KeyRing;
use ecr_proto::compact::member_text;
use ecr_proto::digest::DigestStatus;
use ecr_proto::envelope::{self, EnvelopeError, Message, Request, Response};
use ecr_proto::value::{CompactString, Value};
use ecr_proto::Timestamp;

use crate::findings::Code;
use crate::record::{Direction, KeyUse, MessageRecord, RawObject, Role, Transport};

/// Where a message was seen.
#[derive(Clone, Debug)]
pub struct Context {
    /// Transport.
    pub transport: Transport,
    /// Sender address.
    pub src: CompactString,
    /// Receiver address.
    pub dst: CompactString,
    /// Which way.
    pub direction: Direction,
    /// Capture time of the first byte.
    pub ts: Timestamp,
    /// Packet number of the first byte.
    pub packet: Option<u64>,
}

/// Business facts of a message, for pairing and cross-message checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Whether it is a response (has respcd).
    pub is_response: bool,
    /// Request func_type.
    pub func_type: Option<FuncType>,
    /// Request channel.
    pub channel: Option<CompactString>,
    /// Request amount token.
    pub amt: Option<CompactString>,
    /// Merchant reference (request, or response data).
    pub out_trade_no: Option<CompactString>,
    /// orderId of a refund / receipt / inquiry.
    pub order_id: Option<CompactString>,
    /// refund_amount of a refund.
    pub refund_amount: Option<CompactString>,
    /// Response code.
    pub respcd: Option<CompactString>,
    /// syssn of the response data.
    pub syssn: Option<CompactString>,
    /// txamt (cents) of the response data.
    pub txamt: Option<CompactString>,
    /// sysdtm or paydtm of the response data ("2025-07-03 14:33:22").
    pub sysdtm: Option<CompactString>,
}

/// The result of decoding one body.
#[derive(Debug)]
pub struct Decoded {
    /// The record to print, boxed from the start as [`Record::Message`] holds it
    /// (a decoding is moved several times on its way, by value, and across
    /// threads with `-j 2`: it stays a few hundred bytes). The parsed message's
    /// request content and digest, or its response fields (with `data`), are moved
    /// into it rather than copied; the rest of the parsed message is dropped.
    ///
    /// [`Record::Message`]: crate::record::Record::Message
    pub record: Box<MessageRecord>,
    /// Findings about this message: code and detail.
    pub findings: Vec<(Code, String)>,
    /// Facts for pairing.
    pub facts: Facts,
}

/// A member as text: a string or number token (a cheap copy: short ones are
/// inline), compact JSON otherwise.
fn text_of(v: Option<&Value>) -> Option<CompactString> {
    v.and_then(|v| match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.clone()),
        other => Some(other.to_json_string().into()),
    })
}

/// Decodes one message body. `key_numbers[i]` is the 1-based number (as the user
/// gave the keys) of the key at position `i` of `keys`.
pub fn decode_body(body: &[u8], keys: &KeyRing, key_numbers: &[usize], ctx: &Context) -> Decoded {
    let mut record = blank_record(ctx, body.len());
    let mut findings = vec![];
    let mut facts = Facts::default();
    let key_use =
        |index: Option<usize>, interp: Option<ecr_proto::cipher::KeyInterpretation>| match (
            index, interp,
        ) {
            (Some(i), Some(interp)) => Some(KeyUse {
                index: key_numbers.get(i).copied().unwrap_or(i + 1),
                interpretation: interp.name(),
            }),
            _ => None,
        };
    let mut message = match envelope::parse(body, keys) {
        Ok(m) => m,
        Err(e) => {
            record.raw = Some(preview(body));
            record.digest = "unverified";
            let code = match &e {
                EnvelopeError::NoKey { .. } => Code::NoKey,
                EnvelopeError::DecryptFailed { .. } => Code::DecryptFailed,
                _ => Code::BadEnvelope,
            };
            // An encrypted body we cannot read is most likely a request from the
            // cash register or a response from the terminal.
            if ctx.direction == Direction::PosToEcr
                && matches!(code, Code::NoKey | Code::DecryptFailed)
            {
                record.role = Role::Response;
                facts.is_response = true;
            }
            let mut detail = e.to_string();
            if matches!(code, Code::NoKey | Code::DecryptFailed) && decrypts_with_default_key(body)
            {
                detail.push_str(
                    "; it decrypts with the default POS-KEY published in the spec (docs/protocol.md#d3): the sender still uses the factory key",
                );
            }
            findings.push((code, detail));
            return Decoded {
                record,
                findings,
                facts,
            };
        }
    };
    match &mut message {
        Message::Request(req) => {
            record.role = Role::Request;
            record.dialect = Some(req.dialect.name());
            record.digest = req.digest_status.name();
            record.key = key_use(req.key_index, req.interpretation);
            check_request(req, key_numbers, &mut findings, &mut facts);
            record.digest_value = req.digest.take();
            record.content = Some(RawObject::new(std::mem::take(&mut req.content)));
            record.func_type = facts.func_type.map(|f| f.0);
            record.func_name = facts.func_type.and_then(FuncType::name);
            if let DigestStatus::Mismatch { mistake, .. } = &req.digest_status {
                record.digest_detail = Some(match mistake {
                    Some(m) => m.description(),
                    None => "no known signing mistake explains it (wrong key?)".into(),
                });
            }
        }
        Message::Response(resp) => {
            record.role = Role::Response;
            record.dialect = Some(resp.dialect.name());
            record.digest = "absent";
            record.key = key_use(resp.key_index, resp.interpretation);
            record.respcd = resp.respcd.clone();
            check_response(resp, &mut findings, &mut facts);
            let (object, data) = resp.take_fields_and_compact_data();
            record.response = Some(RawObject { object, data });
        }
    }
    Decoded {
        record,
        findings,
        facts,
    }
}

/// The record of a bare acknowledgement or error frame (a frame without data):
/// nothing to parse, no finding.
pub fn bare_frame(ctx: &Context, error: bool) -> Decoded {
    let mut record = blank_record(ctx, 0);
    record.role = if error { Role::ErrorFrame } else { Role::Ack };
    Decoded {
        record,
        findings: vec![],
        facts: Facts::default(),
    }
}

/// A message record with what `ctx` says and nothing decoded yet.
fn blank_record(ctx: &Context, bytes: usize) -> Box<MessageRecord> {
    Box::new(MessageRecord::blank(
        ctx.ts.as_secs_f64(),
        ctx.transport,
        (ctx.src.clone(), ctx.dst.clone()),
        ctx.direction,
        ctx.packet,
        bytes,
    ))
}

fn check_request(
    req: &Request,
    key_numbers: &[usize],
    findings: &mut Vec<(Code, String)>,
    facts: &mut Facts,
) {
    let c = &req.content;
    facts.func_type = req.func_type();
    facts.channel = text_of(c.get("channel"));
    facts.amt = text_of(c.get("amt"));
    facts.out_trade_no = text_of(c.get("out_trade_no"));
    facts.order_id = text_of(c.get("orderId"));
    facts.refund_amount = text_of(c.get("refund_amount"));

    match &req.digest_status {
        DigestStatus::Mismatch { mistake, expected } => {
            let why = match mistake {
                Some(ecr_proto::digest::SigningMistake::OtherKey { index }) => format!(
                    "signed with key #{} instead of the key that decrypts it",
                    key_numbers.get(*index).copied().unwrap_or(index + 1)
                ),
                Some(m) => format!("signing mistake: {}", m.description()),
                None => "no known signing mistake explains it; is the POS-KEY right?".to_string(),
            };
            findings.push((
                Code::DigestMismatch,
                format!(
                    "digest {} is not md5(format_content + POS-KEY) = {expected}: {why}",
                    req.digest.as_deref().unwrap_or("")
                ),
            ));
        }
        DigestStatus::Absent => findings.push((
            Code::DigestMismatch,
            "the request carries no digest (spec 4: every request is signed)".to_string(),
        )),
        DigestStatus::Ok | DigestStatus::Unverified => {}
    }

    match facts.func_type {
        None => {
            let hint = match c.get("funcType") {
                Some(v) => format!(" (found funcType={}, the naming of the spec's serial sample; current terminals read func_type)", v.to_display_string()),
                None => String::new(),
            };
            findings.push((Code::MissingField, format!("func_type is missing{hint}")));
        }
        Some(ft) if ft.name().is_none() => findings.push((
            Code::UnknownFuncType,
            format!(
                "func_type {} is not in the spec (1001, 1002, 3001, 3002, 4001, 5001)",
                ft.0
            ),
        )),
        Some(ft) => {
            let missing = ft.missing_fields(c);
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(|r| r.to_string()).collect();
                findings.push((
                    Code::MissingField,
                    format!(
                        "{} ({}) without mandatory field(s): {}",
                        ft.name().unwrap_or("?"),
                        ft.0,
                        list.join("; ")
                    ),
                ));
            }
        }
    }
    if let Some(ch) = &facts.channel {
        if Channel::lookup(ch).is_none() {
            findings.push((
                Code::UnknownChannel,
                format!("channel '{ch}' is not in the spec"),
            ));
        }
        if ch == "payme" {
            if let Some(t) = c.get("payment_timeout").and_then(Value::as_f64) {
                if t > 120.0 {
                    findings.push((
                        Code::PaymeTimeout,
                        format!("payment_timeout {t} s for PayMe (at most 120 s)"),
                    ));
                }
            }
        }
    }
}

fn check_response(resp: &Response, findings: &mut Vec<(Code, String)>, facts: &mut Facts) {
    facts.is_response = true;
    facts.respcd = resp.respcd.clone();
    if let Some(c) = &resp.data_compact {
        let text = |raw: Option<&str>| raw.and_then(member_text);
        let [syssn, txamt, out_trade_no, sysdtm, paydtm] =
            c.members(["syssn", "txamt", "out_trade_no", "sysdtm", "paydtm"]);
        facts.syssn = text(syssn);
        facts.txamt = text(txamt);
        facts.out_trade_no = text(out_trade_no);
        facts.sysdtm = text(sysdtm.or(paydtm));
    } else if let Some(data) = resp.data_object() {
        facts.syssn = text_of(data.get("syssn"));
        facts.txamt = text_of(data.get("txamt"));
        facts.out_trade_no = text_of(data.get("out_trade_no"));
        facts.sysdtm = text_of(data.get("sysdtm").or_else(|| data.get("paydtm")));
    }
    match resp.resp_code() {
        Some(rc) if rc.is_success() => {}
        Some(rc) => {
            let code = if rc.0 == 6001 {
                Code::Cancelled
            } else {
                Code::ErrorResponse
            };
            let meaning = rc.meaning().unwrap_or("not in the spec");
            let msg = [resp.respmsg.as_deref(), resp.resperr.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" / ");
            let note = rc.note().map(|n| format!(" ({n})")).unwrap_or_default();
            findings.push((
                code,
                format!(
                    "respcd {} {meaning}{note}{}",
                    rc.0,
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(": {msg}")
                    }
                ),
            ));
        }
        None => findings.push((
            Code::BadEnvelope,
            format!(
                "response without a numeric respcd ({})",
                resp.respcd.as_deref().unwrap_or("absent")
            ),
        )),
    }
    if let Some(p) = &resp.data_problem {
        let code = match p {
            EnvelopeError::NoKey { .. } => Code::NoKey,
            EnvelopeError::DecryptFailed { .. } => Code::DecryptFailed,
            _ => Code::BadEnvelope,
        };
        findings.push((code, format!("response data: {p}")));
    }
}

/// The POS-KEY printed in the spec and in docs/protocol.md#spec-1 (not a secret): shops that never
/// generated their own key still use it, which explains many "wrong key" cases.
/// Output names it only as "the default key published in the spec".
pub const PUBLISHED_DEFAULT_KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

/// Whether an undecryptable body decrypts with the published default key.
fn decrypts_with_default_key(body: &[u8]) -> bool {
    static RING: std::sync::OnceLock<KeyRing> = std::sync::OnceLock::new();
    let ring = RING.get_or_init(|| {
        ecr_proto::cipher::PosKey::new(PUBLISHED_DEFAULT_KEY)
            .map(KeyRing::single)
            .unwrap_or_default()
    });
    envelope::parse(body, ring).is_ok()
}

/// At most 200 bytes of a body as text, for showing what could not be decoded.
pub fn preview(body: &[u8]) -> String {
    let cut = body.get(..200).unwrap_or(body);
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if body.len() > 200 {
        s.push('…');
    }
    s
}

/// Whether a respcd is the success code.
pub fn is_success(respcd: Option<&str>) -> bool {
    respcd.and_then(|r| r.parse::<u16>().ok()).map(RespCode) == Some(RespCode(6000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_proto::cipher::PosKey;
    use ecr_proto::value::Object;

    fn ctx(dir: Direction) -> Context {
        Context {
            transport: Transport::Http,
            src: "a".into(),
            dst: "b".into(),
            direction: dir,
            ts: Timestamp(0),
            packet: Some(4),
        }
    }

    fn ring(k: &str) -> KeyRing {
        KeyRing::single(PosKey::new(k).unwrap())
    }

    #[test]
    fn envelope_encrypted_vector_decodes_clean() {
        let body = br#""FsdWxnlrMG/4VA5z7ZNJefAFcvhTHHv1Bt3cusAxehI+WhfUjhX31+7NpUERXaidkEgy8/6sPOS0URYSe3n2jeNhfvo6L3dDi+J3Vr2tbIgaICj/Gh0Jqk/qtU132oMds55E6Gu+nskHGc9neDeaAUU3z/2ihOnboG5IFiEPoBLVbVgiI4jW+War2hGs7TjL""#;
        let d = decode_body(
            body,
            &ring("a1b2c3d4e5f6a7b8"),
            &[1],
            &ctx(Direction::EcrToPos),
        );
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        assert_eq!(d.record.dialect, Some("envelope-encrypted"));
        assert_eq!(d.record.digest, "ok");
        assert_eq!(d.record.func_type, Some(1001));
        assert_eq!(d.facts.amt.as_deref(), Some("10.1"));
        assert_eq!(
            d.record.key,
            Some(KeyUse {
                index: 1,
                interpretation: "text-128"
            })
        );
        let json = serde_json::to_string(&d.record).unwrap();
        assert!(json.contains(r#""content":{"amt":10.1,"channel":"card_payment","func_type":1001,"out_trade_no":"456799999999"}"#), "{json}");
        // Without the key: an info finding, not an error.
        let d = decode_body(body, &KeyRing::new(), &[], &ctx(Direction::EcrToPos));
        assert_eq!(d.findings[0].0, Code::NoKey);
        // With the wrong key.
        let d = decode_body(
            body,
            &ring("f46b1f08bec1f39104792cc79ec9aacd"),
            &[1],
            &ctx(Direction::EcrToPos),
        );
        assert_eq!(d.findings[0].0, Code::DecryptFailed);
        assert!(!d.findings[0].1.contains("default POS-KEY"));
    }

    #[test]
    fn the_published_default_key_is_named_as_the_likely_cause() {
        // A body made with the spec's default key, read with another key (or none).
        let default = PosKey::new(PUBLISHED_DEFAULT_KEY).unwrap();
        let content: Object = vec![("func_type".into(), Value::Number("5001".into()))].into();
        let body = envelope::build_request(
            envelope::RequestDialect::EnvelopeEncrypted,
            &content,
            &default,
        );
        let d = decode_body(
            &body,
            &ring("a1b2c3d4e5f6a7b8"),
            &[1],
            &ctx(Direction::EcrToPos),
        );
        assert_eq!(d.findings[0].0, Code::DecryptFailed);
        assert!(
            d.findings[0]
                .1
                .contains("default POS-KEY published in the spec"),
            "{}",
            d.findings[0].1
        );
        // The key text itself is never printed.
        assert!(!d.findings[0].1.contains(PUBLISHED_DEFAULT_KEY));
        let d = decode_body(&body, &KeyRing::new(), &[], &ctx(Direction::EcrToPos));
        assert_eq!(d.findings[0].0, Code::NoKey);
        assert!(d.findings[0].1.contains("factory key"));
    }

    #[test]
    fn content_checks() {
        let body = br#"{"content":{"func_type":1001,"channel":"payme","payment_timeout":180},"digest":"00"}"#;
        let d = decode_body(body, &KeyRing::new(), &[], &ctx(Direction::EcrToPos));
        let codes: Vec<Code> = d.findings.iter().map(|f| f.0).collect();
        assert_eq!(codes, vec![Code::MissingField, Code::PaymeTimeout]);
        assert_eq!(d.record.digest, "unverified");

        let body = br#"{"content":{"func_type":9999,"channel":"bitcoin"},"digest":"00"}"#;
        let d = decode_body(body, &KeyRing::new(), &[], &ctx(Direction::EcrToPos));
        let codes: Vec<Code> = d.findings.iter().map(|f| f.0).collect();
        assert_eq!(codes, vec![Code::UnknownFuncType, Code::UnknownChannel]);
    }

    #[test]
    fn responses_and_errors() {
        let body = br#"{"respcd":"4003","respmsg":"denied","resperr":"","data":"{}"}"#;
        let d = decode_body(body, &KeyRing::new(), &[], &ctx(Direction::PosToEcr));
        assert_eq!(d.record.role, Role::Response);
        assert_eq!(d.findings[0].0, Code::ErrorResponse);
        assert!(
            d.findings[0].1.starts_with("respcd 4003 Request denied"),
            "{}",
            d.findings[0].1
        );
        // A cancel by the cashier or the customer is a normal outcome: info.
        let body = br#"{"respcd":"6001","respmsg":"Request Cancelled","resperr":"","data":"{}"}"#;
        let d = decode_body(body, &KeyRing::new(), &[], &ctx(Direction::PosToEcr));
        assert_eq!(d.findings.len(), 1);
        assert_eq!(d.findings[0].0, Code::Cancelled);
        assert_eq!(Code::Cancelled.severity(), crate::findings::Severity::Info);
        assert!(
            d.findings[0].1.starts_with("respcd 6001 "),
            "{}",
            d.findings[0].1
        );

        let d = decode_body(b"hello", &KeyRing::new(), &[], &ctx(Direction::EcrToPos));
        assert_eq!(d.findings[0].0, Code::BadEnvelope);
        assert_eq!(d.record.raw.as_deref(), Some("hello"));
    }
}
