//! What the spec says the fields and codes mean: func_type, HTTP paths, mandatory
//! fields, channels and PayType codes, respcd meanings, and the response data
//! fields. Unknown values stay representable, so the analyzer can say "unknown
//! func_type 1003" instead of failing.

use core::fmt;

use crate::value::{Object, Value};

/// An instruction code (`func_type`, spec 5.1). Any value is representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncType(pub u16);

/// A rule for mandatory request fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRule {
    /// This field must be present.
    Required(&'static str),
    /// At least one of these must be present.
    OneOf(&'static [&'static str]),
}

impl FieldRule {
    /// Whether `content` satisfies the rule (a `null` value counts as absent).
    pub fn is_met_by(&self, content: &Object) -> bool {
        let present = |k: &str| content.get(k).is_some_and(|v| !v.is_null());
        match self {
            FieldRule::Required(k) => present(k),
            FieldRule::OneOf(ks) => ks.iter().any(|k| present(k)),
        }
    }
}

impl fmt::Display for FieldRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldRule::Required(k) => f.write_str(k),
            FieldRule::OneOf(ks) => write!(f, "one of {}", ks.join(", ")),
        }
    }
}

impl FuncType {
    /// Payment.
    pub const PAYMENT: FuncType = FuncType(1001);
    /// Refund / void.
    pub const REFUND: FuncType = FuncType(1002);
    /// Print receipt.
    pub const PRINT_RECEIPT: FuncType = FuncType(3001);
    /// Print transaction summary.
    pub const PRINT_SUMMARY: FuncType = FuncType(3002);
    /// Transaction inquiry.
    pub const INQUIRY: FuncType = FuncType(4001);
    /// Cancel the trade or refund request in progress.
    pub const CANCEL_REQUEST: FuncType = FuncType(5001);

    /// The documented codes, in spec order.
    pub const KNOWN: [FuncType; 6] = [
        FuncType::PAYMENT,
        FuncType::REFUND,
        FuncType::PRINT_RECEIPT,
        FuncType::PRINT_SUMMARY,
        FuncType::INQUIRY,
        FuncType::CANCEL_REQUEST,
    ];

    /// Reads `func_type` from a content object. The spec types it as a String
    /// but every example sends a number, so both are accepted. (The spec's serial
    /// sample uses `funcType: 1`, apparently an older naming, not read here.)
    pub fn from_content(content: &Object) -> Option<FuncType> {
        FuncType::from_value(content.get("func_type")?)
    }

    /// Reads a func_type from a number or a string holding one.
    pub fn from_value(v: &Value) -> Option<FuncType> {
        let text = match v {
            Value::Number(n) => n.as_str(),
            Value::String(s) => s.trim(),
            _ => return None,
        };
        text.parse::<u16>().ok().map(FuncType)
    }

    /// The spec's name, or `None` for an undocumented code.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1001 => "Payment",
            1002 => "Refund",
            3001 => "Print receipt",
            3002 => "Print transaction summary",
            4001 => "Transaction inquiry",
            5001 => "Cancel trade/refund request",
            _ => return None,
        })
    }

    /// The HTTP path this instruction is posted to (spec section 8).
    pub fn http_path(self) -> Option<&'static str> {
        Some(match self.0 {
            1001 => "/api/pos/trade",
            1002 => "/api/pos/cancel",
            3001 => "/api/pos/print_receipt",
            3002 => "/api/pos/transaction_info",
            4001 => "/api/pos/query_transaction",
            5001 => "/api/pos/cancel_request",
            _ => return None,
        })
    }

    /// Mandatory fields (spec section 3). `func_type` itself is mandatory for
    /// every instruction and listed first. Unknown codes need only `func_type`.
    pub fn mandatory_fields(self) -> &'static [FieldRule] {
        const FT: FieldRule = FieldRule::Required("func_type");
        match self.0 {
            1001 => &[
                FT,
                FieldRule::Required("amt"),
                FieldRule::Required("channel"),
            ],
            1002 | 3001 => &[FT, FieldRule::Required("orderId")],
            4001 => &[FT, FieldRule::OneOf(&["orderId", "out_trade_no"])],
            _ => &[FT],
        }
    }

    /// The mandatory-field rules that `content` breaks.
    pub fn missing_fields(self, content: &Object) -> Vec<FieldRule> {
        self.mandatory_fields()
            .iter()
            .filter(|r| !r.is_met_by(content))
            .copied()
            .collect()
    }

    /// The data fields a successful response to this instruction carries, if the
    /// spec documents them.
    pub fn response_data_fields(self) -> Option<&'static [FieldInfo]> {
        match self.0 {
            1001 => Some(TRADE_DATA_FIELDS),
            1002 => Some(REFUND_DATA_FIELDS),
            4001 => Some(INQUIRY_DATA_FIELDS),
            _ => None,
        }
    }
}

impl fmt::Display for FuncType {
    /// `1001 (Payment)`, or the bare number when unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{} ({n})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// The func_types posted to an HTTP path (spec section 8). A query string and a
/// trailing slash are ignored. Empty for an unknown path.
pub fn func_types_for_path(path: &str) -> &'static [FuncType] {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    match path {
        "/api/pos/trade" => &[FuncType::PAYMENT],
        "/api/pos/cancel" => &[FuncType::REFUND],
        "/api/pos/print_receipt" => &[FuncType::PRINT_RECEIPT],
        "/api/pos/transaction_info" => &[FuncType::PRINT_SUMMARY],
        "/api/pos/query_transaction" => &[FuncType::INQUIRY],
        "/api/pos/cancel_request" => &[FuncType::CANCEL_REQUEST],
        _ => &[],
    }
}

/// QR mode of a PayType code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QrMode {
    /// Consumer-presented QR code (the terminal scans the customer's code).
    Cpm,
    /// Merchant-presented QR code (the customer scans the terminal's code).
    Mpm,
    /// The channel has a single PayType (cards, Octopus).
    Single,
}

/// A payment channel (spec 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// The `channel` value sent in requests.
    pub code: &'static str,
    /// The spec's description.
    pub description: &'static str,
    /// PayType (`busicd`) codes with their mode.
    pub pay_types: &'static [(QrMode, &'static str)],
}

/// Every documented channel, in spec order.
pub const CHANNELS: &[Channel] = &[
    Channel {
        code: "card_payment",
        description: "Visa / Mastercard",
        pay_types: &[(QrMode::Single, "802808")],
    },
    Channel {
        code: "wx",
        description: "WeChat Pay",
        pay_types: &[(QrMode::Cpm, "800208"), (QrMode::Mpm, "800201")],
    },
    Channel {
        code: "alipay",
        description: "Alipay",
        pay_types: &[(QrMode::Cpm, "800108"), (QrMode::Mpm, "800101")],
    },
    Channel {
        code: "payme",
        description: "PayMe",
        pay_types: &[(QrMode::Cpm, "805808"), (QrMode::Mpm, "805801")],
    },
    Channel {
        code: "union",
        description: "UnionPay QuickPass",
        pay_types: &[(QrMode::Cpm, "800708"), (QrMode::Mpm, "800701")],
    },
    Channel {
        code: "fps",
        description: "FPS",
        pay_types: &[(QrMode::Mpm, "802001")],
    },
    Channel {
        code: "octopus",
        description: "Octopus",
        pay_types: &[(QrMode::Single, "803708")],
    },
    Channel {
        code: "unionpay_card",
        description: "UnionPay Card",
        pay_types: &[(QrMode::Single, "806708")],
    },
    Channel {
        code: "amex_card",
        description: "American Express Card",
        pay_types: &[(QrMode::Single, "806808")],
    },
];

impl Channel {
    /// The channel with this `channel` code.
    pub fn lookup(code: &str) -> Option<&'static Channel> {
        CHANNELS.iter().find(|c| c.code == code)
    }

    /// The channel and mode of a PayType code, e.g. a response's `busicd`.
    pub fn for_pay_type(pay_type: &str) -> Option<(&'static Channel, QrMode)> {
        CHANNELS.iter().find_map(|c| {
            c.pay_types
                .iter()
                .find(|(_, code)| *code == pay_type)
                .map(|(mode, _)| (c, *mode))
        })
    }

    /// Whether this is a card channel: a same-day refund must be the full amount
    /// (spec 3.2), and `payment_timeout` is the wait for the card.
    pub fn is_card(&self) -> bool {
        is_card_channel(self.code)
    }
}

/// Whether `code` is a card channel (`card_payment`, `unionpay_card`, `amex_card`).
pub fn is_card_channel(code: &str) -> bool {
    matches!(code, "card_payment" | "unionpay_card" | "amex_card")
}

/// PayMe accepts a `payment_timeout` of at most this many seconds (spec 3.1).
pub const PAYME_MAX_PAYMENT_TIMEOUT_SECS: u32 = 120;

/// Default `wait_card_timeout` in seconds (spec section 3; "not recommended to modify").
pub const DEFAULT_WAIT_CARD_TIMEOUT_SECS: u32 = 120;

/// A response code (`respcd`, spec section 6, D5). Any value is representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RespCode(pub u16);

impl RespCode {
    /// Request successful.
    pub const SUCCESS: RespCode = RespCode(6000);
    /// Request cancelled (Odoo shows no error for it).
    pub const CANCELLED: RespCode = RespCode(6001);

    /// Reads a respcd from a string such as `"6000"` (or a number).
    pub fn from_value(v: &Value) -> Option<RespCode> {
        let text = match v {
            Value::Number(n) => n.as_str(),
            Value::String(s) => s.trim(),
            _ => return None,
        };
        text.parse::<u16>().ok().map(RespCode)
    }

    /// The documented meaning, or `None` for an unknown code.
    pub fn meaning(self) -> Option<&'static str> {
        Some(match self.0 {
            4003 => "Request denied",
            4004 => "Incorrect method (use POST)",
            4005 => "Other errors",
            4006 => "Incorrect parameters",
            4007 => "User not logged in",
            5001 => "Decryption failed",
            6000 => "Request successful",
            6001 => "Request cancelled",
            6002 => "Request error",
            _ => return None,
        })
    }

    /// Background worth showing next to the meaning, where the sources add any.
    pub fn note(self) -> Option<&'static str> {
        match self.0 {
            4003 => Some("older documentation used 4003 for a POS-KEY mismatch"),
            4007 => Some("documented in the Chinese docs only"),
            5001 => Some("check the POS-KEY and the key reading (D3)"),
            _ => None,
        }
    }

    /// Whether the request succeeded.
    pub fn is_success(self) -> bool {
        self == RespCode::SUCCESS
    }
}

impl fmt::Display for RespCode {
    /// `6000 (Request successful)`, or the bare number when unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.meaning() {
            Some(m) => write!(f, "{} ({m})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A documented field and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// Field name as on the wire.
    pub name: &'static str,
    /// The spec's description.
    pub description: &'static str,
}

const fn f(name: &'static str, description: &'static str) -> FieldInfo {
    FieldInfo { name, description }
}

/// Request content fields (spec section 3).
pub const REQUEST_FIELDS: &[FieldInfo] = &[
    f("amt", "Transaction amount in dollars (10.1 = HKD 10.10)"),
    f("func_type", "Instruction code"),
    f("channel", "Wallet/payment method"),
    f("out_trade_no", "Merchant reference ID"),
    f("camera_id", "0 = back camera (default), 1 = front camera"),
    f(
        "payment_timeout",
        "Payment timeout in seconds (PayMe: at most 120)",
    ),
    f(
        "wait_card_timeout",
        "Wait time for card input (default 120 s)",
    ),
    f("scan_type", "QRCODE_PAY or SCAN_PAY"),
    f(
        "moveToBack",
        "1 = return to home screen after the transaction",
    ),
    f("orderId", "QFPay transaction ID (syssn)"),
    f(
        "refund_amount",
        "Partial refund amount; default the maximum refundable",
    ),
    f(
        "allow_modify_flag",
        "0 = fixed refund amount (default), 1 = allow modification",
    ),
];

/// Fields common to every response (spec section 6).
pub const RESPONSE_FIELDS: &[FieldInfo] = &[
    f("respcd", "Return code"),
    f("respmsg", "Response message"),
    f("resperr", "Error message"),
    f("data", "Business data block (a JSON text inside a string)"),
];

/// Data of a trade (payment) response (spec section 6).
pub const TRADE_DATA_FIELDS: &[FieldInfo] = &[
    f("mchntnm", "Merchant name"),
    f("sysdtm", "QF system time"),
    f("userid", "Store ID"),
    f("busicd", "Business code (PayType)"),
    f("txamt", "Amount, in cents"),
    f("txcurrcd", "Currency (ISO 4217 numeric, 344 = HKD)"),
    f("chnlsn", "Channel order number"),
    f("paydtm", "Payment time"),
    f("udid", "Device/user ID"),
    f("syssn", "QF order ID"),
    f("clisn", "Client serial number"),
    f("out_trade_no", "Merchant order ID"),
    f("cardscheme", "Card scheme used"),
    f("respcd", "The transaction's own status (0000 = approved)"),
];

/// Data of a refund response (spec section 6).
pub const REFUND_DATA_FIELDS: &[FieldInfo] = &[
    f("orig_syssn", "Original order ID"),
    f("syssn", "Refund order ID"),
    f("txamt", "Refund amount, in cents"),
    f("originTxamt", "Original amount"),
    f("sysdtm", "System time"),
    f("paydtm", "Refund processed time"),
];

/// Data of a transaction inquiry response (spec section 6).
pub const INQUIRY_DATA_FIELDS: &[FieldInfo] = &[
    f("server_time", "Server time"),
    f("cancel", "Cancel status"),
    f("clisn", "Client SN"),
    f("opuid", "Operator ID"),
    f("syssn", "QF order ID"),
    f("tradetp", "Type: payment/refund"),
    f("sysdtm", "System time"),
    f("txcurrcd", "Currency (ISO 4217 numeric)"),
    f("origssn", "Original order ID"),
    f("opuser", "Operator name"),
    f("nickname", "Store name"),
    f("allow_refund_amt", "Refundable amount"),
    f("desc", "Description"),
    f("txamt", "Transaction amount, in cents"),
    f("busicd", "Current PayType"),
    f("origbusicd", "Original PayType"),
    f("chnlsn", "Wallet order ID"),
    f("cardscheme", "VISA / MASTERCARD / etc."),
    f("cardno", "Masked card number"),
    f("cardtype", "CREDIT / DEBIT"),
    f("batchno", "Batch number"),
    f("refno", "Reference number"),
];

/// What a response data field means: looked up in the table for `func_type`
/// first, then in the other tables (the response alone does not say which
/// instruction it answers).
pub fn describe_data_field(func_type: Option<FuncType>, name: &str) -> Option<&'static str> {
    let find = |t: &'static [FieldInfo]| t.iter().find(|fi| fi.name == name);
    func_type
        .and_then(FuncType::response_data_fields)
        .and_then(find)
        .or_else(|| find(TRADE_DATA_FIELDS))
        .or_else(|| find(REFUND_DATA_FIELDS))
        .or_else(|| find(INQUIRY_DATA_FIELDS))
        .map(|fi| fi.description)
}

/// What a request content field means.
pub fn describe_request_field(name: &str) -> Option<&'static str> {
    REQUEST_FIELDS
        .iter()
        .find(|fi| fi.name == name)
        .map(|fi| fi.description)
}

/// The alphabetic code of an ISO 4217 numeric currency code, for the few
/// currencies QFPay terminals are sold for.
pub fn currency_alpha(numeric: &str) -> Option<&'static str> {
    Some(match numeric.trim() {
        "344" => "HKD",
        "446" => "MOP",
        "156" => "CNY",
        "702" => "SGD",
        "458" => "MYR",
        "840" => "USD",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object {
        Value::parse_json(text.as_bytes())
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn func_types() {
        assert_eq!(FuncType(1001).name(), Some("Payment"));
        assert_eq!(FuncType(5001).name(), Some("Cancel trade/refund request"));
        assert_eq!(FuncType(1003).name(), None);
        assert_eq!(
            FuncType(3002).http_path(),
            Some("/api/pos/transaction_info")
        );
        assert_eq!(FuncType(1002).http_path(), Some("/api/pos/cancel"));
        assert_eq!(FuncType(1001).to_string(), "1001 (Payment)");
        assert_eq!(FuncType(9).to_string(), "9");
        for ft in FuncType::KNOWN {
            let path = ft.http_path().unwrap();
            assert_eq!(func_types_for_path(path), &[ft]);
        }
        assert_eq!(
            func_types_for_path("/api/pos/trade/?x=1"),
            &[FuncType::PAYMENT]
        );
        assert!(func_types_for_path("/api/pos/other").is_empty());
    }

    #[test]
    fn func_type_from_content() {
        assert_eq!(
            FuncType::from_content(&obj(r#"{"func_type":1001}"#)),
            Some(FuncType(1001))
        );
        assert_eq!(
            FuncType::from_content(&obj(r#"{"func_type":"4001"}"#)),
            Some(FuncType(4001))
        );
        assert_eq!(FuncType::from_content(&obj(r#"{"func_type":1.5}"#)), None);
        assert_eq!(FuncType::from_content(&obj(r#"{"funcType":1}"#)), None);
    }

    #[test]
    fn mandatory_fields() {
        let pay = obj(r#"{"func_type":1001,"amt":10.1}"#);
        assert_eq!(
            FuncType::PAYMENT.missing_fields(&pay),
            [FieldRule::Required("channel")]
        );
        let refund = obj(r#"{"func_type":1002,"orderId":null}"#);
        assert_eq!(
            FuncType::REFUND.missing_fields(&refund),
            [FieldRule::Required("orderId")]
        );
        let inquiry = obj(r#"{"func_type":4001,"out_trade_no":"x"}"#);
        assert!(FuncType::INQUIRY.missing_fields(&inquiry).is_empty());
        let inquiry = obj(r#"{"func_type":4001}"#);
        assert_eq!(
            FuncType::INQUIRY.missing_fields(&inquiry)[0].to_string(),
            "one of orderId, out_trade_no"
        );
        assert_eq!(
            FuncType::PRINT_SUMMARY.missing_fields(&obj("{}")),
            [FieldRule::Required("func_type")]
        );
        assert_eq!(FuncType::PRINT_RECEIPT.mandatory_fields().len(), 2);
        assert_eq!(FuncType::CANCEL_REQUEST.mandatory_fields().len(), 1);
    }

    #[test]
    fn channels() {
        assert_eq!(CHANNELS.len(), 9);
        let wx = Channel::lookup("wx").unwrap();
        assert_eq!(wx.description, "WeChat Pay");
        assert_eq!(
            Channel::for_pay_type("800201").map(|(c, m)| (c.code, m)),
            Some(("wx", QrMode::Mpm))
        );
        assert_eq!(
            Channel::for_pay_type("802808").map(|(c, m)| (c.code, m)),
            Some(("card_payment", QrMode::Single))
        );
        assert_eq!(
            Channel::for_pay_type("802001").map(|(c, m)| (c.code, m)),
            Some(("fps", QrMode::Mpm))
        );
        assert!(Channel::for_pay_type("000000").is_none());
        let cards: Vec<_> = CHANNELS
            .iter()
            .filter(|c| c.is_card())
            .map(|c| c.code)
            .collect();
        assert_eq!(cards, ["card_payment", "unionpay_card", "amex_card"]);
        assert_eq!(PAYME_MAX_PAYMENT_TIMEOUT_SECS, 120);
    }

    #[test]
    fn resp_codes() {
        assert_eq!(RespCode(4007).meaning(), Some("User not logged in"));
        assert_eq!(RespCode(5001).meaning(), Some("Decryption failed"));
        assert!(RespCode(4003).note().unwrap().contains("POS-KEY"));
        assert_eq!(
            RespCode::from_value(&Value::from("6000")),
            Some(RespCode::SUCCESS)
        );
        assert!(RespCode(6000).is_success());
        assert_eq!(RespCode(6001).to_string(), "6001 (Request cancelled)");
        assert_eq!(RespCode(1234).meaning(), None);
    }

    #[test]
    fn data_fields() {
        assert_eq!(
            describe_data_field(Some(FuncType::REFUND), "txamt"),
            Some("Refund amount, in cents")
        );
        assert_eq!(
            describe_data_field(None, "orig_syssn"),
            Some("Original order ID")
        );
        assert_eq!(
            describe_data_field(Some(FuncType::INQUIRY), "cardtype"),
            Some("CREDIT / DEBIT")
        );
        assert_eq!(describe_data_field(None, "nope"), None);
        assert_eq!(
            describe_request_field("camera_id").map(|d| d.starts_with("0 = back")),
            Some(true)
        );
        assert_eq!(currency_alpha("344"), Some("HKD"));
        assert_eq!(FuncType::PRINT_SUMMARY.response_data_fields(), None);
    }
}
