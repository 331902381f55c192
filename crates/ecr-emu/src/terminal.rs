//! The emulated terminal's business logic: checks a request like a Smart POS does
//! (decryption, digest, method, mandatory fields) and answers with the response
//! codes and data of spec section 6, remembering its payments so that refunds,
//! inquiries and receipts refer to them.
//!
//! Transport-free: the HTTP, TCP and serial front ends in [`crate::server`] hand
//! it a body and send back what it returns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ecr_proto::catalogue::{Channel, FuncType, QrMode};
use ecr_proto::cipher::{KeyRing, PosKey};
use ecr_proto::digest::DigestStatus;
use ecr_proto::envelope::{self, EnvelopeError, Message, Request};
use ecr_proto::frame::ErrorCode;
use ecr_proto::value::{Object, Value};

use crate::faults::{Faults, ResponseForm};
use crate::request::{cents_to_dollars, dollars_to_cents};

/// Most transactions remembered (oldest forgotten first).
const MAX_STORE: usize = 10_000;
/// The key the terminal uses under the `wrong-key` fault.
const WRONG_KEY: &str = "0wrong0key0used0";

/// How the emulated terminal behaves.
#[derive(Debug, Clone)]
pub struct TerminalConfig {
    /// The terminal's POS-KEY.
    pub key: PosKey,
    /// Simulated customer time before a payment or refund completes.
    pub delay: Duration,
    /// Faults to inject.
    pub faults: Faults,
    /// Merchant name in response data (`mchntnm`).
    pub merchant: String,
}

/// What the terminal answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response body (plain JSON, D5).
    pub body: Vec<u8>,
    /// Its respcd.
    pub respcd: &'static str,
    /// On serial, reject at the link level with this error frame instead of
    /// acknowledging (the body is then not sent).
    pub link_error: Option<ErrorCode>,
    /// One line for the emulator's log.
    pub log: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Payment,
    Refund { orig_syssn: String },
}

#[derive(Debug, Clone)]
struct Txn {
    kind: Kind,
    syssn: String,
    out_trade_no: Option<String>,
    channel: Option<&'static Channel>,
    busicd: String,
    txamt: u64,
    refunded: u64,
    sysdtm: String,
    chnlsn: String,
    clisn: String,
    card: Option<Card>,
}

#[derive(Debug, Clone, Copy)]
struct Card {
    scheme: &'static str,
    number: &'static str,
    kind: &'static str,
}

fn card_for(channel: &str) -> Option<Card> {
    match channel {
        "card_payment" => Some(Card {
            scheme: "MASTERCARD",
            number: "541375******6830",
            kind: "CREDIT",
        }),
        "unionpay_card" => Some(Card {
            scheme: "UNIONPAY",
            number: "625094******1234",
            kind: "DEBIT",
        }),
        "amex_card" => Some(Card {
            scheme: "AMEX",
            number: "376012*****1009",
            kind: "CREDIT",
        }),
        _ => None,
    }
}

/// The emulated terminal, shared by all connections.
pub struct Terminal {
    cfg: TerminalConfig,
    keys: KeyRing,
    store: Mutex<VecDeque<Txn>>,
    serial: AtomicU64,
    cancels: AtomicU64,
}

/// Hong Kong local time (UTC+8) of the wall clock: `("2025-07-03 14:33:22", "20250703")`.
fn local_time() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 8 * 3600;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        ),
        format!("{y:04}{m:02}{d:02}"),
    )
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn body(respcd: &str, respmsg: &str, resperr: &str, data: Option<Object>) -> Vec<u8> {
    let mut o = Object::new();
    o.push("respcd", s(respcd));
    o.push("respmsg", s(respmsg));
    o.push("resperr", s(resperr));
    let data_text = data.map_or(String::new(), |d| Value::Object(d).to_json_string());
    o.push("data", Value::from(data_text));
    Value::Object(o).to_json_string().into_bytes()
}

fn text_of(content: &Object, key: &str) -> Option<String> {
    match content.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Terminal {
    /// A terminal with an empty transaction store.
    pub fn new(cfg: TerminalConfig) -> Terminal {
        let key = if cfg.faults.wrong_key() {
            PosKey::new(WRONG_KEY).unwrap_or_else(|_| cfg.key.clone())
        } else {
            cfg.key.clone()
        };
        Terminal {
            keys: KeyRing::single(key),
            cfg,
            store: Mutex::new(VecDeque::new()),
            serial: AtomicU64::new(1),
            cancels: AtomicU64::new(0),
        }
    }

    /// The POS-KEY the terminal uses (another one under the `wrong-key` fault).
    pub fn key(&self) -> &PosKey {
        self.keys.get(0).unwrap_or(&self.cfg.key)
    }

    /// The faults in force.
    pub fn faults(&self) -> &Faults {
        &self.cfg.faults
    }

    fn error(&self, respcd: &'static str, respmsg: &str, resperr: &str, what: &str) -> Reply {
        Reply {
            body: body(respcd, respmsg, resperr, None),
            respcd,
            link_error: None,
            log: format!("{what} -> {respcd} {respmsg}: {resperr}"),
        }
    }

    /// Answers one request body. `method` is the HTTP method (None off HTTP).
    pub fn handle(&self, method: Option<&str>, raw: &[u8]) -> Reply {
        let mut reply = self.answer(method, raw);
        if let Some(form) = self.cfg.faults.encrypt_response() {
            reply.body = self.encrypt_answer(&reply.body, form);
        }
        reply
    }

    /// The `encrypt-response` fault: the answer (or its data field) encrypted
    /// with the terminal's key, Base64 (D5).
    fn encrypt_answer(&self, body: &[u8], form: ResponseForm) -> Vec<u8> {
        match form {
            ResponseForm::Body => self.key().encrypt_base64(body).into_bytes(),
            ResponseForm::Data => {
                let Ok(Value::Object(mut o)) = Value::parse_json(body) else {
                    return body.to_vec();
                };
                let data = match o.get("data") {
                    Some(Value::String(d)) if !d.is_empty() => d.clone(),
                    _ => return body.to_vec(),
                };
                o.insert("data", s(&self.key().encrypt_base64(data.as_bytes())));
                Value::Object(o).to_json_string().into_bytes()
            }
        }
    }

    fn answer(&self, method: Option<&str>, raw: &[u8]) -> Reply {
        if let Some(m) = method {
            if !m.eq_ignore_ascii_case("POST") {
                return self.error(
                    "4004",
                    "Incorrect Method",
                    "use POST",
                    &format!("{m} request"),
                );
            }
        }
        let req = match envelope::parse(raw, &self.keys) {
            Ok(Message::Request(r)) => r,
            Ok(Message::Response(_)) => {
                return self.error(
                    "4006",
                    "Incorrect Parameters",
                    "a response was sent as a request",
                    "response body",
                )
            }
            Err(e) => {
                let decrypt = matches!(
                    e,
                    EnvelopeError::DecryptFailed { .. }
                        | EnvelopeError::BadBase64 { .. }
                        | EnvelopeError::BadCiphertext { .. }
                        | EnvelopeError::NoKey { .. }
                );
                let mut r = if decrypt {
                    self.error("5001", "Decryption Failed", "decrypt error", &e.to_string())
                } else {
                    self.error(
                        "4006",
                        "Incorrect Parameters",
                        "invalid data",
                        &e.to_string(),
                    )
                };
                r.link_error = Some(if decrypt {
                    ErrorCode::DECRYPTION
                } else {
                    ErrorCode::DATA_FORMAT
                });
                return r;
            }
        };
        let what = describe(&req);
        let digest_ok = matches!(req.digest_status, DigestStatus::Ok);
        if !digest_ok || self.cfg.faults.wrong_digest() {
            let detail = match &req.digest_status {
                DigestStatus::Absent => "digest missing",
                _ => "signature error",
            };
            return self.error(
                "4003",
                "Request Denied",
                detail,
                &format!("{what}, digest {}", req.digest_status.name()),
            );
        }
        let Some(ft) = req.func_type() else {
            return self.error(
                "4006",
                "Incorrect Parameters",
                "func_type missing or not a number",
                &what,
            );
        };
        if ft.name().is_none() {
            return self.error(
                "4006",
                "Incorrect Parameters",
                &format!("unknown func_type {}", ft.0),
                &what,
            );
        }
        if let Some(rule) = ft.missing_fields(&req.content).first() {
            return self.error(
                "4006",
                "Incorrect Parameters",
                &format!("missing {rule}"),
                &what,
            );
        }
        let c = &req.content;
        match ft {
            FuncType::PAYMENT => self.pay(c, &what),
            FuncType::REFUND => self.refund(c, &what),
            FuncType::PRINT_RECEIPT => self.receipt(c, &what),
            FuncType::PRINT_SUMMARY => self.summary(&what),
            FuncType::INQUIRY => self.inquiry(c, &what),
            _ => {
                self.cancels.fetch_add(1, Ordering::SeqCst);
                self.error(
                    "6001",
                    "Request Cancelled",
                    "cancelled by the cash register",
                    &what,
                )
            }
        }
    }

    /// Waits the simulated customer time; false when a cancel request came meanwhile.
    fn customer_time(&self) -> bool {
        let start = self.cancels.load(Ordering::SeqCst);
        let end = Instant::now() + self.cfg.delay;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10).min(self.cfg.delay));
            if self.cancels.load(Ordering::SeqCst) != start {
                return false;
            }
        }
        true
    }

    fn next_ids(&self) -> (String, String, String, String) {
        let n = self.serial.fetch_add(1, Ordering::SeqCst);
        let (dtm, day) = local_time();
        (
            format!("{day}1554000200{n:08}"),
            format!("{day}{:08}", 75_830_000 + n),
            format!("{:06}", 30_800 + n % 900_000),
            dtm,
        )
    }

    fn remember(&self, t: Txn) {
        let mut st = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if st.len() >= MAX_STORE {
            st.pop_front();
        }
        st.push_back(t);
    }

    fn find(&self, c: &Object) -> Option<Txn> {
        let id = text_of(c, "orderId");
        let otn = text_of(c, "out_trade_no");
        let st = self.store.lock().unwrap_or_else(|e| e.into_inner());
        st.iter()
            .rev()
            .find(|t| {
                id.as_ref()
                    .is_some_and(|i| *i == t.syssn || Some(i) == t.out_trade_no.as_ref())
                    || (id.is_none() && otn.is_some() && otn == t.out_trade_no)
            })
            .cloned()
    }

    fn pay(&self, c: &Object, what: &str) -> Reply {
        let amt = text_of(c, "amt").unwrap_or_default();
        let Some(cents) = dollars_to_cents(&amt).filter(|&v| v > 0) else {
            return self.error(
                "4006",
                "Incorrect Parameters",
                &format!("amt {amt:?} is not a positive amount"),
                what,
            );
        };
        let code = text_of(c, "channel").unwrap_or_default();
        let Some(channel) = Channel::lookup(&code) else {
            return self.error(
                "4006",
                "Incorrect Parameters",
                &format!("unknown channel {code:?}"),
                what,
            );
        };
        if !self.customer_time() {
            return self.error("6001", "Request Cancelled", "transaction cancelled", what);
        }
        let busicd = channel
            .pay_types
            .iter()
            .find(|(m, _)| matches!(m, QrMode::Cpm | QrMode::Single))
            .or(channel.pay_types.first())
            .map_or("", |(_, b)| b)
            .to_string();
        let (syssn, chnlsn, clisn, sysdtm) = self.next_ids();
        let t = Txn {
            kind: Kind::Payment,
            syssn,
            out_trade_no: text_of(c, "out_trade_no"),
            channel: Some(channel),
            busicd,
            txamt: cents,
            refunded: 0,
            sysdtm,
            chnlsn,
            clisn,
            card: card_for(channel.code),
        };
        let mut d = Object::new();
        d.push(
            "batchNo",
            s(t.sysdtm.get(2..10).unwrap_or("").replace('-', "").as_str()),
        );
        d.push("busicd", s(&t.busicd));
        if let Some(card) = t.card {
            d.push("cardNo", s(card.number));
            d.push("cardType", s(card.scheme));
            d.push("cardscheme", s(card.scheme));
        }
        d.push("chnlsn", s(&t.chnlsn));
        d.push("clisn", s(&t.clisn));
        d.push("mchntnm", s(&self.cfg.merchant));
        d.push("out_trade_no", s(t.out_trade_no.as_deref().unwrap_or("")));
        d.push("paydtm", s(&t.sysdtm));
        d.push("paymentType", s("SALES"));
        d.push("respcd", s("0000"));
        d.push("sysdtm", s(&t.sysdtm));
        d.push("syssn", s(&t.syssn));
        d.push("terminalId", s("EMU00000001"));
        d.push("txamt", s(&t.txamt.to_string()));
        d.push("txcurrcd", s("344"));
        let log = format!("{what} -> 6000 syssn {} txamt {}", t.syssn, t.txamt);
        self.remember(t);
        Reply {
            body: body("6000", "AUTHORISED", "trade success", Some(d)),
            respcd: "6000",
            link_error: None,
            log,
        }
    }

    fn not_found(&self, c: &Object, what: &str) -> Reply {
        let id = text_of(c, "orderId")
            .or_else(|| text_of(c, "out_trade_no"))
            .unwrap_or_default();
        self.error(
            "4005",
            "Other Errors",
            &format!("order {id} not found"),
            what,
        )
    }

    fn refund(&self, c: &Object, what: &str) -> Reply {
        let Some(orig) = self.find(c).filter(|t| t.kind == Kind::Payment) else {
            return self.not_found(c, what);
        };
        let left = orig.txamt.saturating_sub(orig.refunded);
        let amount = match text_of(c, "refund_amount") {
            None => left,
            Some(a) => match dollars_to_cents(&a) {
                Some(v) if v > 0 => v,
                _ => {
                    return self.error(
                        "4006",
                        "Incorrect Parameters",
                        &format!("refund_amount {a:?} is not a positive amount"),
                        what,
                    )
                }
            },
        };
        if amount == 0 || amount > left {
            return self.error(
                "4006",
                "Incorrect Parameters",
                &format!(
                    "refund of {} exceeds the refundable {}",
                    cents_to_dollars(amount),
                    cents_to_dollars(left)
                ),
                what,
            );
        }
        if orig.card.is_some() && amount != orig.txamt {
            return self.error(
                "4005",
                "Other Errors",
                "same-day card refunds must be for the full amount",
                what,
            );
        }
        if !self.customer_time() {
            return self.error("6001", "Request Cancelled", "refund cancelled", what);
        }
        {
            let mut st = self.store.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = st.iter_mut().find(|t| t.syssn == orig.syssn) {
                t.refunded = t.refunded.saturating_add(amount);
            }
        }
        let (syssn, chnlsn, clisn, sysdtm) = self.next_ids();
        let mut d = Object::new();
        d.push("orig_syssn", s(&orig.syssn));
        d.push("syssn", s(&syssn));
        d.push("txamt", s(&amount.to_string()));
        d.push("originTxamt", s(&orig.txamt.to_string()));
        d.push("sysdtm", s(&sysdtm));
        d.push("paydtm", s(&sysdtm));
        d.push("txcurrcd", s("344"));
        let log = format!("{what} -> 6000 refund syssn {syssn} of {}", orig.syssn);
        self.remember(Txn {
            kind: Kind::Refund {
                orig_syssn: orig.syssn.clone(),
            },
            syssn,
            out_trade_no: None,
            channel: orig.channel,
            busicd: orig.busicd.clone(),
            txamt: amount,
            refunded: 0,
            sysdtm,
            chnlsn,
            clisn,
            card: orig.card,
        });
        Reply {
            body: body("6000", "SUCCESS", "refund success", Some(d)),
            respcd: "6000",
            link_error: None,
            log,
        }
    }

    fn receipt(&self, c: &Object, what: &str) -> Reply {
        let Some(t) = self.find(c) else {
            return self.not_found(c, what);
        };
        let mut d = Object::new();
        d.push("syssn", s(&t.syssn));
        d.push("txamt", s(&t.txamt.to_string()));
        d.push("txcurrcd", s("344"));
        Reply {
            body: body("6000", "SUCCESS", "receipt printed", Some(d)),
            respcd: "6000",
            link_error: None,
            log: format!("{what} -> 6000 receipt of {}", t.syssn),
        }
    }

    fn summary(&self, what: &str) -> Reply {
        let st = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let (mut n, mut total, mut rn, mut rtotal) = (0u64, 0u64, 0u64, 0u64);
        for t in st.iter() {
            match t.kind {
                Kind::Payment => {
                    n += 1;
                    total = total.saturating_add(t.txamt);
                }
                Kind::Refund { .. } => {
                    rn += 1;
                    rtotal = rtotal.saturating_add(t.txamt);
                }
            }
        }
        drop(st);
        let (dtm, _) = local_time();
        let mut d = Object::new();
        d.push("payment_count", s(&n.to_string()));
        d.push("payment_txamt", s(&total.to_string()));
        d.push("refund_count", s(&rn.to_string()));
        d.push("refund_txamt", s(&rtotal.to_string()));
        d.push("sysdtm", s(&dtm));
        d.push("txcurrcd", s("344"));
        Reply {
            body: body("6000", "SUCCESS", "summary printed", Some(d)),
            respcd: "6000",
            link_error: None,
            log: format!("{what} -> 6000 summary: {n} payments, {rn} refunds"),
        }
    }

    fn inquiry(&self, c: &Object, what: &str) -> Reply {
        let Some(t) = self.find(c) else {
            return self.not_found(c, what);
        };
        let (server_time, _) = local_time();
        let (tradetp, origssn) = match &t.kind {
            Kind::Payment => ("payment", String::new()),
            Kind::Refund { orig_syssn } => ("refund", orig_syssn.clone()),
        };
        let mut d = Object::new();
        d.push("server_time", s(&server_time));
        d.push("cancel", s("0"));
        d.push("clisn", s(&t.clisn));
        d.push("opuid", s("0000"));
        d.push("syssn", s(&t.syssn));
        d.push("tradetp", s(tradetp));
        d.push("sysdtm", s(&t.sysdtm));
        d.push("txcurrcd", s("344"));
        d.push("origssn", s(&origssn));
        d.push("opuser", s("cashier"));
        d.push("nickname", s(&self.cfg.merchant));
        d.push(
            "allow_refund_amt",
            s(&t.txamt.saturating_sub(t.refunded).to_string()),
        );
        d.push("desc", s(t.channel.map_or("", |ch| ch.description)));
        d.push("txamt", s(&t.txamt.to_string()));
        d.push("busicd", s(&t.busicd));
        d.push("origbusicd", s(&t.busicd));
        d.push("chnlsn", s(&t.chnlsn));
        d.push("cardscheme", s(t.card.map_or("", |c| c.scheme)));
        d.push("cardno", s(t.card.map_or("", |c| c.number)));
        d.push("cardtype", s(t.card.map_or("", |c| c.kind)));
        d.push(
            "batchno",
            s(t.sysdtm.get(2..10).unwrap_or("").replace('-', "").as_str()),
        );
        d.push("refno", s(&t.clisn));
        if let Some(o) = &t.out_trade_no {
            d.push("out_trade_no", s(o));
        }
        Reply {
            body: body("6000", "SUCCESS", "query success", Some(d)),
            respcd: "6000",
            link_error: None,
            log: format!("{what} -> 6000 {tradetp} {}", t.syssn),
        }
    }
}

/// A short description of a request for the log.
fn describe(r: &Request) -> String {
    let ft = r.func_type().map_or_else(
        || "request without func_type".to_string(),
        |f| f.to_string(),
    );
    let mut out = format!("{ft} [{}]", r.dialect);
    for k in ["amt", "channel", "out_trade_no", "orderId", "refund_amount"] {
        if let Some(v) = text_of(&r.content, k) {
            out.push_str(&format!(" {k}={v}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_proto::envelope::{build_request, RequestDialect, ResponseDialect};

    const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

    fn term(faults: Faults) -> Terminal {
        Terminal::new(TerminalConfig {
            key: PosKey::new(KEY).unwrap(),
            delay: Duration::ZERO,
            faults,
            merchant: "Test Shop".into(),
        })
    }

    fn ask(t: &Terminal, content: &str, dialect: RequestDialect) -> envelope::Response {
        let c = match Value::parse_json(content.as_bytes()).unwrap() {
            Value::Object(o) => o,
            _ => panic!(),
        };
        let body = build_request(dialect, &c, &PosKey::new(KEY).unwrap());
        let r = t.handle(Some("POST"), &body);
        match envelope::parse(&r.body, &KeyRing::new()).unwrap() {
            Message::Response(resp) => {
                assert_eq!(resp.dialect, ResponseDialect::Plain);
                assert_eq!(resp.respcd.as_deref(), Some(r.respcd));
                resp
            }
            other => panic!("{other:?}"),
        }
    }

    fn data(r: &envelope::Response, k: &str) -> String {
        r.data_object()
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn pay_refund_inquiry_receipt_summary() {
        let t = term(Faults::default());
        for d in [
            RequestDialect::Plain,
            RequestDialect::ContentEncrypted,
            RequestDialect::EnvelopeEncrypted,
        ] {
            let p = ask(
                &t,
                r#"{"amt":10.10,"channel":"card_payment","func_type":1001,"out_trade_no":"A1"}"#,
                d,
            );
            assert_eq!(p.respcd.as_deref(), Some("6000"));
            assert_eq!(data(&p, "txamt"), "1010");
            assert_eq!(data(&p, "busicd"), "802808");
            assert_eq!(data(&p, "txcurrcd"), "344");
            assert_eq!(data(&p, "cardNo"), "541375******6830");
            let syssn = data(&p, "syssn");
            assert_eq!(syssn.len(), 26);
            let partial = ask(
                &t,
                &format!(r#"{{"func_type":1002,"orderId":"{syssn}","refund_amount":"1.00"}}"#),
                d,
            );
            assert_eq!(partial.respcd.as_deref(), Some("4005"), "spec 3.2");
            let q = ask(&t, r#"{"func_type":4001,"out_trade_no":"A1"}"#, d);
            assert_eq!(data(&q, "syssn"), syssn);
            assert_eq!(data(&q, "allow_refund_amt"), "1010");
            let r = ask(
                &t,
                &format!(r#"{{"func_type":1002,"orderId":"{syssn}"}}"#),
                d,
            );
            assert_eq!(data(&r, "orig_syssn"), syssn);
            assert_eq!(data(&r, "txamt"), "1010");
            let again = ask(
                &t,
                &format!(r#"{{"func_type":1002,"orderId":"{syssn}"}}"#),
                d,
            );
            assert_eq!(again.respcd.as_deref(), Some("4006"), "nothing left");
            let rc = ask(
                &t,
                &format!(r#"{{"func_type":3001,"orderId":"{syssn}"}}"#),
                d,
            );
            assert_eq!(rc.respcd.as_deref(), Some("6000"));
        }
        let s = ask(&t, r#"{"func_type":3002}"#, RequestDialect::Plain);
        assert_eq!(data(&s, "payment_count"), "3");
        assert_eq!(data(&s, "refund_count"), "3");
        let c = ask(&t, r#"{"func_type":5001}"#, RequestDialect::Plain);
        assert_eq!(c.respcd.as_deref(), Some("6001"));
        let w = ask(
            &t,
            r#"{"amt":1,"channel":"wx","func_type":1001}"#,
            RequestDialect::Plain,
        );
        assert_eq!(data(&w, "busicd"), "800208");
        assert_eq!(data(&w, "cardNo"), "");
        let nf = ask(
            &t,
            r#"{"func_type":4001,"orderId":"nope"}"#,
            RequestDialect::Plain,
        );
        assert_eq!(nf.respcd.as_deref(), Some("4005"));
    }

    #[test]
    fn refusals() {
        let t = term(Faults::default());
        let m = t.handle(Some("GET"), b"");
        assert_eq!(m.respcd, "4004");
        let bad = ask(&t, r#"{"func_type":1001,"amt":1}"#, RequestDialect::Plain);
        assert_eq!(bad.respcd.as_deref(), Some("4006"));
        let unk = ask(
            &t,
            r#"{"func_type":1001,"amt":1,"channel":"bitcoin"}"#,
            RequestDialect::Plain,
        );
        assert_eq!(unk.respcd.as_deref(), Some("4006"));
        let digest = t.handle(None, br#"{"content":{"func_type":3002},"digest":"00"}"#);
        assert_eq!(digest.respcd, "4003");
        let garbage = t.handle(None, b"not a body");
        assert_eq!(garbage.respcd, "4006");
        assert_eq!(garbage.link_error, Some(ErrorCode::DATA_FORMAT));
        let other = PosKey::new("a1b2c3d4e5f6a7b8").unwrap();
        let mut c = Object::new();
        c.push("func_type", Value::Number("3002".into()));
        let enc = build_request(RequestDialect::EnvelopeEncrypted, &c, &other);
        let r = t.handle(None, &enc);
        assert_eq!(r.respcd, "5001");
        assert_eq!(r.link_error, Some(ErrorCode::DECRYPTION));
    }

    #[test]
    fn faults_wrong_key_and_digest() {
        use crate::faults::Fault;
        let t = term(Faults(vec![Fault::WrongKey]));
        let r = ask(
            &t,
            r#"{"func_type":3002}"#,
            RequestDialect::EnvelopeEncrypted,
        );
        assert_eq!(r.respcd.as_deref(), Some("5001"));
        let r = ask(&t, r#"{"func_type":3002}"#, RequestDialect::Plain);
        assert_eq!(r.respcd.as_deref(), Some("4003"));
        let t = term(Faults(vec![Fault::WrongDigest]));
        let r = ask(&t, r#"{"func_type":3002}"#, RequestDialect::Plain);
        assert_eq!(r.respcd.as_deref(), Some("4003"));
    }

    #[test]
    fn cancel_interrupts_a_waiting_payment() {
        let t = std::sync::Arc::new(Terminal::new(TerminalConfig {
            key: PosKey::new(KEY).unwrap(),
            delay: Duration::from_secs(5),
            faults: Faults::default(),
            merchant: "Test Shop".into(),
        }));
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            ask(
                &t2,
                r#"{"amt":1,"channel":"wx","func_type":1001}"#,
                RequestDialect::Plain,
            )
        });
        std::thread::sleep(Duration::from_millis(100));
        let c = ask(&t, r#"{"func_type":5001}"#, RequestDialect::Plain);
        assert_eq!(c.respcd.as_deref(), Some("6001"));
        let p = h.join().unwrap();
        assert_eq!(p.respcd.as_deref(), Some("6001"));
    }

    #[test]
    fn clock_format() {
        let (dtm, day) = local_time();
        assert_eq!(dtm.len(), 19);
        assert_eq!(day.len(), 8);
        assert!(dtm.replace('-', "").starts_with(&day));
    }
}
