//! The request content a cash register sends for each instruction (spec section 3),
//! built from command-line options.

use ecr_proto::catalogue::{Channel, FuncType};
use ecr_proto::value::{Object, Value};

/// Why an instruction cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An amount is not a plain decimal number of dollars.
    #[error(
        "{field} {value:?} is not an amount in dollars such as 10.10 (digits, at most one '.')"
    )]
    BadAmount {
        /// Option or field name.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// `--json` text is not a JSON object.
    #[error("--json: {0}")]
    BadJson(String),
    /// Inquiry needs an order id or a merchant reference.
    #[error("inquiry needs --order-id or --out-trade-no")]
    InquiryNeedsId,
}

/// One instruction of the cash register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// 1001: payment of `amt` dollars on `channel`.
    Pay {
        /// Amount in dollars as typed (`10.10` is sent as the number token `10.10`).
        amt: String,
        /// Channel code (`wx`, `card_payment`, ...). Unknown codes are sent as
        /// given, so a terminal's reaction to them can be tried.
        channel: String,
        /// Merchant reference.
        out_trade_no: Option<String>,
        /// `payment_timeout` in seconds.
        payment_timeout: Option<u32>,
    },
    /// 1002: refund of a payment.
    Refund {
        /// The payment's syssn.
        order_id: String,
        /// A partial amount in dollars (sent as a string, as spec 3.2 says).
        refund_amount: Option<String>,
    },
    /// 3001: print a payment's receipt again.
    Receipt {
        /// The payment's syssn.
        order_id: String,
    },
    /// 3002: print the transaction summary.
    Summary,
    /// 4001: ask for a transaction's state.
    Inquiry {
        /// The payment's syssn.
        order_id: Option<String>,
        /// Or its merchant reference.
        out_trade_no: Option<String>,
    },
    /// 5001: cancel the trade or refund in progress.
    Cancel,
    /// Any content object, sent as given (for trying what a terminal does with it).
    Json(Object),
}

/// Checks that `s` is a decimal amount: digits with at most one '.'.
pub fn check_amount(field: &'static str, s: &str) -> Result<(), RequestError> {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let ok = digits(whole) && frac.is_none_or(digits) && s.len() <= 16;
    if ok {
        Ok(())
    } else {
        Err(RequestError::BadAmount {
            field,
            value: s.to_string(),
        })
    }
}

fn num(n: impl ToString) -> Value {
    Value::Number(n.to_string().into())
}

fn text(s: &str) -> Value {
    Value::from(s)
}

impl Instruction {
    /// Parses `--json` text: a JSON (or org.json) object.
    pub fn from_json(text: &str) -> Result<Instruction, RequestError> {
        let v = Value::parse_json(text.as_bytes())
            .or_else(|_| ecr_proto::lenient::parse_lenient(text.as_bytes()))
            .map_err(|e| RequestError::BadJson(e.to_string()))?;
        match v {
            Value::Object(o) => Ok(Instruction::Json(o)),
            other => Err(RequestError::BadJson(format!(
                "expected an object, got a JSON {}",
                other.kind_name()
            ))),
        }
    }

    /// Checks amounts and required ids.
    pub fn validate(&self) -> Result<(), RequestError> {
        match self {
            Instruction::Pay { amt, .. } => check_amount("--amt", amt),
            Instruction::Refund {
                refund_amount: Some(a),
                ..
            } => check_amount("--refund-amount", a),
            Instruction::Inquiry {
                order_id: None,
                out_trade_no: None,
            } => Err(RequestError::InquiryNeedsId),
            _ => Ok(()),
        }
    }

    /// The content object, members in alphabetical order as Odoo sends them.
    pub fn content(&self) -> Object {
        let mut o = Object::new();
        match self {
            Instruction::Pay {
                amt,
                channel,
                out_trade_no,
                payment_timeout,
            } => {
                o.push("amt", num(amt));
                o.push("channel", text(channel));
                o.push("func_type", num(FuncType::PAYMENT.0));
                if let Some(x) = out_trade_no {
                    o.push("out_trade_no", text(x));
                }
                if let Some(t) = payment_timeout {
                    o.push("payment_timeout", num(t));
                }
            }
            Instruction::Refund {
                order_id,
                refund_amount,
            } => {
                o.push("func_type", num(FuncType::REFUND.0));
                o.push("orderId", text(order_id));
                if let Some(a) = refund_amount {
                    o.push("refund_amount", text(a));
                }
            }
            Instruction::Receipt { order_id } => {
                o.push("func_type", num(FuncType::PRINT_RECEIPT.0));
                o.push("orderId", text(order_id));
            }
            Instruction::Summary => o.push("func_type", num(FuncType::PRINT_SUMMARY.0)),
            Instruction::Inquiry {
                order_id,
                out_trade_no,
            } => {
                o.push("func_type", num(FuncType::INQUIRY.0));
                if let Some(x) = order_id {
                    o.push("orderId", text(x));
                }
                if let Some(x) = out_trade_no {
                    o.push("out_trade_no", text(x));
                }
            }
            Instruction::Cancel => o.push("func_type", num(FuncType::CANCEL_REQUEST.0)),
            Instruction::Json(obj) => return obj.clone(),
        }
        o
    }

    /// The func_type the content carries, if any.
    pub fn func_type(&self) -> Option<FuncType> {
        FuncType::from_content(&self.content())
    }

    /// Whether the channel of a payment is one the spec lists.
    pub fn known_channel(&self) -> bool {
        match self {
            Instruction::Pay { channel, .. } => Channel::lookup(channel).is_some(),
            _ => true,
        }
    }
}

/// Converts a dollar amount token (`10.1`, `10.10`, `100`) to cents, rounding
/// half up past two decimals; `None` when it is not a plain non-negative decimal or
/// too large.
pub fn dollars_to_cents(s: &str) -> Option<u64> {
    let s = s.trim();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
        || whole.len() > 12
    {
        return None;
    }
    let w: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut f = frac.bytes().map(|b| u64::from(b - b'0'));
    let tenths = f.next().unwrap_or(0);
    let hundredths = f.next().unwrap_or(0);
    let round = u64::from(f.next().unwrap_or(0) >= 5);
    w.checked_mul(100)?
        .checked_add(tenths * 10 + hundredths + round)
}

/// Cents as dollars with two decimals (`1010` -> `10.10`).
pub fn cents_to_dollars(c: u64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_proto::digest::format_content;

    #[test]
    fn payment_content_keeps_amount_token() {
        let i = Instruction::Pay {
            amt: "10.10".into(),
            channel: "wx".into(),
            out_trade_no: Some("X1".into()),
            payment_timeout: None,
        };
        i.validate().unwrap();
        assert_eq!(
            format_content(&i.content()),
            "{amt=10.10,channel='wx',func_type=1001,out_trade_no='X1'}"
        );
    }

    #[test]
    fn spec_inquiry_vector() {
        let i = Instruction::Inquiry {
            order_id: Some("12345678".into()),
            out_trade_no: None,
        };
        let d = ecr_proto::digest::digest(
            &format_content(&i.content()),
            "f46b1f08bec1f39104792cc79ec9aacd",
        );
        assert_eq!(d, "99ce8bf9c7304ac964522d10f51660b4");
    }

    #[test]
    fn amounts() {
        assert!(check_amount("--amt", "10.10").is_ok());
        assert!(check_amount("--amt", "10").is_ok());
        for bad in ["", "1.2.3", "-1", "1e3", ".5", "5.", "abc"] {
            assert!(check_amount("--amt", bad).is_err(), "{bad}");
        }
        assert_eq!(dollars_to_cents("10.1"), Some(1010));
        assert_eq!(dollars_to_cents("10.10"), Some(1010));
        assert_eq!(dollars_to_cents("100"), Some(10000));
        assert_eq!(dollars_to_cents("0.005"), Some(1));
        assert_eq!(dollars_to_cents("x"), None);
        assert_eq!(dollars_to_cents("99999999999999"), None);
        assert_eq!(cents_to_dollars(1010), "10.10");
    }

    #[test]
    fn json_instruction() {
        let i = Instruction::from_json(r#"{"func_type":3002}"#).unwrap();
        assert_eq!(i.func_type(), Some(FuncType::PRINT_SUMMARY));
        assert!(Instruction::from_json("[1]").is_err());
        assert!(Instruction::from_json("{func_type:4001,orderId:'1'}").is_ok());
        assert_eq!(
            Instruction::Inquiry {
                order_id: None,
                out_trade_no: None
            }
            .validate(),
            Err(RequestError::InquiryNeedsId)
        );
    }
}
