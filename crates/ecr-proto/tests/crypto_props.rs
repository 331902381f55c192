//! Property tests for the cipher, the value parsers, the digest and envelopes:
//! round trips hold, and arbitrary bytes never make any parser panic.

use ecr_proto::cipher::{decode_base64, encode_base64, KeyInterpretation, KeyRing, PosKey};
use ecr_proto::compact::{is_compact_object, CompactJson};
use ecr_proto::digest::{self, DigestStatus};
use ecr_proto::envelope::{build_request, parse, probe, Message, RequestDialect};
use ecr_proto::lenient::parse_lenient;
use ecr_proto::value::{Object, Value};
use proptest::prelude::*;

/// Key texts of every length and reading.
fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{16}",
        "[ -~]{24}",
        "[ -~]{32}",
        "[0-9a-f]{32}",
        "[!-~]{16}",
    ]
    .prop_filter("non-blank after trimming", |k| {
        let t = k.trim();
        t.len() == k.len()
    })
}

/// Bytes drawn mostly from JSON and org.json syntax, to reach deep parser paths.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(b"{}[]:,=>;'\"\\/ \n\t-+.eE0123456789abcdefnrtux#*".to_vec()),
            any::<u8>(),
        ],
        0..300,
    )
}

/// A plausible content value: raw-token numbers, strings, booleans, null.
fn content_value(quote_safe: bool) -> impl Strategy<Value = Value> {
    let string = if quote_safe {
        "[a-zA-Z0-9 _.:/-]{0,20}".boxed()
    } else {
        ".{0,20}".boxed()
    };
    prop_oneof![
        any::<i64>().prop_map(|n| Value::Number(n.to_string().into())),
        (0u32..1_000_000, 0u32..100).prop_map(|(a, b)| Value::Number(format!("{a}.{b}").into())),
        string.prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn content(quote_safe: bool) -> impl Strategy<Value = Object> {
    prop::collection::vec(
        ("[a-zA-Z_][a-zA-Z0-9_]{0,12}", content_value(quote_safe)),
        0..8,
    )
    .prop_map(|members| {
        let mut o = Object::new();
        for (k, v) in members {
            o.insert(k, v);
        }
        o
    })
}

/// Arbitrary JSON from serde_json's model, for differential tests.
fn serde_json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        ".{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encrypt_decrypt_round_trip(key in key_text(), data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let key = PosKey::new(&key).unwrap();
        let ct = key.encrypt(&data);
        prop_assert_eq!(ct.len(), (data.len() / 16 + 1) * 16);
        let d = key.decrypt(&ct).unwrap();
        prop_assert_eq!(&d.plaintext, &data);
        prop_assert_eq!(Some(d.interpretation), key.interpretations().next());
        // Through Base64 as well.
        let d = key.decrypt_base64(key.encrypt_base64(&data).as_bytes()).unwrap();
        prop_assert_eq!(&d.plaintext, &data);
        // And with every reading the key offers.
        for interp in key.interpretations().collect::<Vec<_>>() {
            let ct = key.encrypt_as(interp, &data).unwrap();
            let mut buf = ct.clone();
            prop_assert_eq!(key.decrypt_in_place(interp, &mut buf).unwrap(), &data[..]);
        }
    }

    #[test]
    fn hex_keys_offer_both_readings(key in "[0-9a-fA-F]{32}") {
        let key = PosKey::new(&key).unwrap();
        prop_assert_eq!(
            key.interpretations().collect::<Vec<_>>(),
            vec![KeyInterpretation::Text256, KeyInterpretation::Hex128]
        );
    }

    #[test]
    fn base64_round_trip(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let text = encode_base64(&data);
        if data.is_empty() {
            prop_assert!(decode_base64(text.as_bytes()).is_err());
        } else {
            prop_assert_eq!(decode_base64(text.as_bytes()).unwrap(), data.clone());
            let unpadded = text.trim_end_matches('=');
            prop_assert_eq!(decode_base64(unpadded.as_bytes()).unwrap(), data);
        }
    }

    #[test]
    fn build_parse_round_trip(key in key_text(), c in content(false), safe in content(true)) {
        let pos_key = PosKey::new(&key).unwrap();
        let keys = KeyRing::single(pos_key.clone());
        for (dialect, content) in [
            (RequestDialect::Plain, &c),
            (RequestDialect::ContentEncrypted, &c),
            // Odoo's envelope quotes strings without escaping: only quote-free
            // strings survive it, as with the real sender.
            (RequestDialect::EnvelopeEncrypted, &safe),
        ] {
            let body = build_request(dialect, content, &pos_key);
            prop_assert!(probe(&body).is_some());
            let Ok(Message::Request(r)) = parse(&body, &keys) else {
                return Err(TestCaseError::fail(format!("{dialect} did not parse")));
            };
            prop_assert_eq!(r.dialect, dialect);
            prop_assert_eq!(&r.digest_status, &DigestStatus::Ok);
            prop_assert_eq!(r.format_content(), digest::format_content(content));
        }
    }

    #[test]
    fn strict_parser_agrees_with_serde_json(v in serde_json_value()) {
        let text = serde_json::to_string(&v).unwrap();
        let ours = Value::parse_json(text.as_bytes()).unwrap();
        // Compact in, compact out: byte for byte (number tokens untouched).
        prop_assert_eq!(ours.to_json_string(), text.clone());
        // The lenient parser reads any strict JSON the same way.
        prop_assert_eq!(parse_lenient(text.as_bytes()).unwrap(), ours.clone());
        // Compact JSON of an object without escapes the writer would change is
        // taken as it is, and reads back to the same value.
        if text.starts_with('{') {
            // serde_json escapes quote, backslash and control characters.
            let plain = !has_control(&v);
            prop_assert_eq!(is_compact_object(&text), plain, "{}", text);
            if let Some(c) = CompactJson::new(&text) {
                prop_assert_eq!(c.to_value(), ours);
            }
        }
    }

    #[test]
    fn a_responses_data_string_is_kept_as_compact_text_exactly_when_it_is_compact(
        v in serde_json_value(),
        extra_data in any::<bool>(),
    ) {
        // The envelope parser checks a top-level `data` string while it parses it;
        // the result must be what checking the unescaped string gives (the last
        // `data` counts when there are two).
        let text = serde_json::to_string(&v).unwrap();
        let literal = serde_json::to_string(&serde_json::Value::String(text.clone())).unwrap();
        let body = if extra_data {
            format!(r#"{{"data":"{{}}","respcd":"6000","data":{literal}}}"#)
        } else {
            format!(r#"{{"respcd":"6000","resperr":"ok","data":{literal}}}"#)
        };
        let Ok(Message::Response(r)) = parse(body.as_bytes(), &KeyRing::new()) else {
            return Err(TestCaseError::fail(format!("not a response: {body}")));
        };
        let want = if text.trim().is_empty() { None } else { CompactJson::new(text.trim()) };
        prop_assert_eq!(&r.data_compact, &want, "{}", body);
        let raw = r.data_raw();
        prop_assert_eq!(raw.as_deref(), Some(text.as_str()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise_all(&bytes);
    }

    #[test]
    fn json_ish_bytes_never_panic(bytes in json_ish()) {
        exercise_all(&bytes);
        // Whatever the lenient parser reads, the writer turns into valid JSON
        // that reads back to the same value.
        if let Ok(v) = parse_lenient(&bytes) {
            let text = v.to_json_string();
            let again = Value::parse_json(text.as_bytes());
            prop_assert!(again.is_ok(), "{}", text);
            prop_assert_eq!(again.unwrap().to_json_string(), text);
        }
        // Results of the two parsers are consistent with serde_json on acceptance.
        let serde_ok = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
        let ours_ok = Value::parse_json(&bytes).is_ok();
        prop_assert_eq!(serde_ok, ours_ok, "{:?}", String::from_utf8_lossy(&bytes));
        // Whatever the strict parser reads, the lenient one reads the same way
        // (so that decrypted text may be tried strictly first).
        if let Ok(v) = Value::parse_json(&bytes) {
            prop_assert_eq!(parse_lenient(&bytes), Ok(v), "{:?}", String::from_utf8_lossy(&bytes));
        }
        // What the compact check takes parses, and writes back byte for byte.
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if is_compact_object(text) {
                let v = Value::parse_json_str(text);
                prop_assert!(v.is_ok(), "{}", text);
                prop_assert_eq!(v.unwrap().to_json_string(), text);
            }
        }
    }
}

/// Whether a member name or string anywhere in `v` holds a control character.
fn has_control(v: &serde_json::Value) -> bool {
    let ctl = |s: &str| s.chars().any(|c| c < ' ');
    match v {
        serde_json::Value::String(s) => ctl(s),
        serde_json::Value::Array(a) => a.iter().any(has_control),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| ctl(k) || has_control(v)),
        _ => false,
    }
}

fn exercise_all(bytes: &[u8]) {
    let _ = Value::parse_json(bytes);
    let _ = parse_lenient(bytes);
    let _ = decode_base64(bytes);
    let _ = probe(bytes);
    let key = PosKey::new("f46b1f08bec1f39104792cc79ec9aacd").unwrap();
    let _ = key.decrypt(bytes);
    let _ = key.decrypt_base64(bytes);
    let ring = KeyRing::single(key.clone());
    let _ = parse(bytes, &ring);
    let _ = parse(bytes, &KeyRing::new());
    // Wrapped the ways real bodies are, to get past the first checks.
    let text = String::from_utf8_lossy(bytes);
    let _ = parse(
        format!("{{\"content\":{text},\"digest\":\"x\"}}").as_bytes(),
        &ring,
    );
    let _ = parse(
        format!("{{\"respcd\":\"6000\",\"data\":{text}}}").as_bytes(),
        &ring,
    );
    // Encrypted garbage: decrypts (valid padding) but must be rejected gracefully.
    let b64 = key.encrypt_base64(bytes);
    let _ = parse(b64.as_bytes(), &ring);
    let _ = parse(
        format!("{{\"content\":\"{b64}\",\"digest\":\"x\"}}").as_bytes(),
        &ring,
    );
    if let Ok(v) = parse_lenient(bytes) {
        if let Some(o) = v.as_object() {
            let _ = digest::format_content(o);
            let _ = v.to_json_string();
        }
    }
}
