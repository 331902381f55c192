//! Envelope, JSON and org.json parsing, with and without keys. Under cfg(fuzzing)
//! digest verification passes, so the code behind it is reached.
#![no_main]
use ecr_proto::cipher::{KeyRing, PosKey};
use ecr_proto::{compact, envelope, lenient, value::Value};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keys() -> &'static KeyRing {
    static K: OnceLock<KeyRing> = OnceLock::new();
    K.get_or_init(|| {
        let mut r = KeyRing::new();
        for k in ["f46b1f08bec1f39104792cc79ec9aacd", "my_qfpay_pos_key"] {
            if let Ok(k) = PosKey::new(k) {
                r.push(k);
            }
        }
        r
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = envelope::probe(data);
    // A response's `data` kept as compact text (checked while the body was parsed,
    // in one pass with its unescaping) is exactly what checking the unescaped
    // string gives.
    if let Ok(envelope::Message::Response(r)) = envelope::parse(data, &KeyRing::new()) {
        if let Some(c) = &r.data_compact {
            assert_eq!(compact::CompactJson::new(c.as_str()).as_ref(), Some(c));
            assert_eq!(r.data_raw().as_deref().map(str::trim), Some(c.as_str()));
        }
    }
    let _ = envelope::parse(data, keys());
    let _ = Value::parse_json(data);
    let _ = lenient::parse_lenient(data);
    // What the compact check takes, the parser reads and writes back unchanged.
    if let Ok(text) = std::str::from_utf8(data) {
        if compact::is_compact_object(text) {
            match Value::parse_json_str(text) {
                Ok(v) => assert_eq!(v.to_json_string(), text),
                Err(e) => panic!("compact but unparsable: {e}"),
            }
            if let Some(c) = compact::CompactJson::new(text) {
                let _ = c.members(["syssn", "txamt", "out_trade_no"]);
            }
        }
    }
    // Ciphertext that decrypts: exercise the encrypted dialects' inner parsers too.
    if let Some(k) = keys().get(0) {
        let b64 = k.encrypt_base64(data);
        let _ = envelope::parse(b64.as_bytes(), keys());
    }
});
