//! The reference vectors (vectors.json: envelopes and signing mistakes) and the
//! test vectors of docs/protocol.md#vectors, run through the public API.
//!
//! The vectors are read from `tests/data/vectors.json`, the repository's copy of the
//! vectors that came with the vendor spec; `copy_matches_upstream` (ignored unless
//! asked for) compares it with an upstream file named by `ECR_UPSTREAM_VECTORS`.

use std::path::PathBuf;

use ecr_proto::cipher::{KeyInterpretation, KeyRing, PosKey};
use ecr_proto::digest::{self, Basis, DigestStatus, NumberForm, SigningMistake};
use ecr_proto::envelope::{
    build_request, parse, probe, BodyForm, ContentForm, EncryptedPart, EnvelopeError, Kind,
    Message, Request, RequestDialect,
};
use ecr_proto::value::{Object, Value};

const DEFAULT_KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vectors() -> Value {
    let bytes = std::fs::read(manifest_dir().join("tests/data/vectors.json")).unwrap();
    // Our own parser: it keeps member order and number tokens, which the
    // vectors depend on (serde_json would sort keys and reformat 10.1).
    Value::parse_json(&bytes).unwrap()
}

#[test]
#[ignore = "compares with an upstream copy: ECR_UPSTREAM_VECTORS=/path/to/vectors.json cargo test -- --ignored"]
fn copy_matches_upstream() {
    let upstream = std::env::var_os("ECR_UPSTREAM_VECTORS")
        .map(PathBuf::from)
        .expect("set ECR_UPSTREAM_VECTORS to the upstream vectors.json (nothing to compare with)");
    let original = std::fs::read(&upstream)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", upstream.display()));
    let copy = std::fs::read(manifest_dir().join("tests/data/vectors.json")).unwrap();
    assert!(
        original == copy,
        "tests/data/vectors.json differs from {}: copy it again",
        upstream.display()
    );
}

fn s<'a>(o: &'a Object, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap()
}

fn dialect_of(name: &str) -> RequestDialect {
    match name {
        "plain" => RequestDialect::Plain,
        "content-encrypted" => RequestDialect::ContentEncrypted,
        "envelope-encrypted" => RequestDialect::EnvelopeEncrypted,
        other => panic!("unknown dialect {other}"),
    }
}

fn request(body: &[u8], keys: &KeyRing) -> Request {
    match parse(body, keys) {
        Ok(Message::Request(r)) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

fn sorted(o: &Object) -> Vec<(ecr_proto::value::CompactString, Value)> {
    let mut v = o.clone().into_vec();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn envelope_vectors() -> Vec<Object> {
    let v = vectors();
    let list = v.as_object().unwrap().get("envelopes").unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_object().unwrap().clone())
        .collect()
}

#[test]
fn there_are_six_envelope_vectors() {
    let all = envelope_vectors();
    assert_eq!(all.len(), 6);
    let names: Vec<&str> = all.iter().map(|e| s(e, "dialect")).collect();
    assert_eq!(
        names,
        [
            "plain",
            "content-encrypted",
            "envelope-encrypted",
            "plain",
            "content-encrypted",
            "envelope-encrypted"
        ]
    );
}

#[test]
fn build_request_reproduces_every_body() {
    for e in envelope_vectors() {
        let key = PosKey::new(s(&e, "key")).unwrap();
        let content = e.get("content").and_then(Value::as_object).unwrap();
        let body = build_request(dialect_of(s(&e, "dialect")), content, &key);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            s(&e, "body"),
            "{} with key {}",
            s(&e, "dialect"),
            key.fingerprint()
        );
    }
}

#[test]
fn parse_every_body() {
    for e in envelope_vectors() {
        let dialect = dialect_of(s(&e, "dialect"));
        let key_text = s(&e, "key");
        let keys = KeyRing::single(PosKey::new(key_text).unwrap());
        let content = e.get("content").and_then(Value::as_object).unwrap();
        let r = request(s(&e, "body").as_bytes(), &keys);
        let ctx = format!("{dialect} / {key_text}");
        assert_eq!(r.dialect, dialect, "{ctx}");
        if dialect == RequestDialect::EnvelopeEncrypted {
            // The envelope carries format_content: sorted keys, same members.
            assert_eq!(sorted(&r.content), sorted(content), "{ctx}");
            let keys: Vec<&str> = r.content.keys().collect();
            assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
        } else {
            assert_eq!(&r.content, content, "{ctx}");
        }
        assert_eq!(r.digest.as_deref(), Some(s(&e, "digest")), "{ctx}");
        assert_eq!(r.digest_status, DigestStatus::Ok, "{ctx}");
        assert_eq!(r.key_index, Some(0), "{ctx}");
        assert_eq!(r.func_type().map(|f| f.0), Some(1001));
        assert_eq!(
            r.format_content(),
            "{amt=10.1,channel='card_payment',func_type=1001,out_trade_no='456799999999'}"
        );
        if let Some(fc) = e.get("format_content").and_then(Value::as_str) {
            assert_eq!(r.format_content(), fc);
            assert_eq!(digest::digest(fc, key_text), s(&e, "digest"));
        }
        if let Some(pt) = e.get("plaintext").and_then(Value::as_str) {
            assert_eq!(r.plaintext.as_deref(), Some(pt), "{ctx}");
        }
        let want_interp = if key_text.len() == 32 {
            KeyInterpretation::Text256
        } else {
            KeyInterpretation::Text128
        };
        match dialect {
            RequestDialect::Plain => {
                assert_eq!(r.body_form, BodyForm::Json);
                assert_eq!(r.content_form, ContentForm::Object);
                assert_eq!(r.interpretation, None);
            }
            RequestDialect::ContentEncrypted => {
                assert_eq!(r.body_form, BodyForm::Json);
                assert_eq!(r.content_form, ContentForm::Encrypted);
                assert_eq!(r.interpretation, Some(want_interp));
                assert!(r.ciphertext.is_some());
            }
            RequestDialect::EnvelopeEncrypted => {
                assert_eq!(r.body_form, BodyForm::QuotedBase64);
                assert_eq!(r.interpretation, Some(want_interp));
            }
        }
    }
}

#[test]
fn every_body_without_key_and_with_wrong_key() {
    let wrong = KeyRing::single(PosKey::new("0123456789abcdef").unwrap());
    for e in envelope_vectors() {
        let body = s(&e, "body").as_bytes();
        match dialect_of(s(&e, "dialect")) {
            RequestDialect::Plain => {
                assert_eq!(
                    request(body, &KeyRing::new()).digest_status,
                    DigestStatus::Unverified
                );
                match request(body, &wrong).digest_status {
                    DigestStatus::Mismatch {
                        mistake: None,
                        expected,
                    } => assert_ne!(expected, s(&e, "digest")),
                    other => panic!("{other:?}"),
                }
            }
            RequestDialect::ContentEncrypted => {
                assert_eq!(
                    parse(body, &KeyRing::new()),
                    Err(EnvelopeError::NoKey {
                        part: EncryptedPart::Content
                    })
                );
                assert_eq!(
                    parse(body, &wrong),
                    Err(EnvelopeError::DecryptFailed {
                        part: EncryptedPart::Content,
                        attempts: 1
                    })
                );
            }
            RequestDialect::EnvelopeEncrypted => {
                assert_eq!(
                    parse(body, &KeyRing::new()),
                    Err(EnvelopeError::NoKey {
                        part: EncryptedPart::Body
                    })
                );
                assert_eq!(
                    parse(body, &wrong),
                    Err(EnvelopeError::DecryptFailed {
                        part: EncryptedPart::Body,
                        attempts: 1
                    })
                );
            }
        }
    }
}

#[test]
fn key_ring_finds_the_right_key() {
    let ring: KeyRing = ["0123456789abcdef", "a1b2c3d4e5f6a7b8", DEFAULT_KEY]
        .into_iter()
        .map(|k| PosKey::new(k).unwrap())
        .collect();
    for e in envelope_vectors() {
        let want = if s(&e, "key") == DEFAULT_KEY { 2 } else { 1 };
        let r = request(s(&e, "body").as_bytes(), &ring);
        assert_eq!(r.key_index, Some(want), "{}", s(&e, "dialect"));
        assert_eq!(r.digest_status, DigestStatus::Ok);
    }
}

#[test]
fn probe_every_body() {
    for e in envelope_vectors() {
        let want = match dialect_of(s(&e, "dialect")) {
            RequestDialect::EnvelopeEncrypted => Kind::Encrypted,
            _ => Kind::Request,
        };
        assert_eq!(probe(s(&e, "body").as_bytes()), Some(want));
    }
}

#[test]
fn every_signing_mistake() {
    let v = vectors();
    let list = v
        .as_object()
        .unwrap()
        .get("signing_mistakes")
        .and_then(Value::as_array)
        .unwrap();
    assert_eq!(list.len(), 4);
    // The content all mistakes were made on: the envelope vectors' content.
    let content = envelope_vectors()[0]
        .get("content")
        .and_then(Value::as_object)
        .unwrap()
        .clone();
    for m in list {
        let m = m.as_object().unwrap();
        let (name, fc, given, key) = (
            s(m, "mistake"),
            s(m, "format_content"),
            s(m, "digest"),
            s(m, "key"),
        );
        let want = match name {
            "double quotes instead of single" => SigningMistake::DoubleQuotes,
            "keys not sorted" => SigningMistake::UnsortedKeys,
            "amount reformatted (10.10 for 10.1)" => {
                SigningMistake::NumberReformatted(NumberForm::TwoDecimals)
            }
            "key not appended" => SigningMistake::KeyNotAppended,
            other => panic!("unknown mistake {other}"),
        };
        // The vector is self-consistent.
        let recomputed = if want == SigningMistake::KeyNotAppended {
            digest::md5_hex(fc.as_bytes())
        } else {
            digest::digest(fc, key)
        };
        assert_eq!(recomputed, given, "{name}");
        let keys = KeyRing::single(PosKey::new(key).unwrap());
        for given in [given.to_owned(), given.to_uppercase()] {
            let v = digest::verify(
                Some(&given),
                &content,
                Basis::Plaintext { ciphertext: None },
                &keys,
                None,
            );
            assert_eq!(
                v.status,
                DigestStatus::Mismatch {
                    mistake: Some(want),
                    expected: "38c9c5fb49f7b813086babec07914497".into()
                },
                "{name}"
            );
        }
        // The same mistake inside a plain body is reported by the envelope parser.
        let mut body = String::from("{\"content\":");
        body.push_str(&Value::Object(content.clone()).to_json_string());
        body.push_str(&format!(",\"digest\":\"{given}\"}}"));
        let r = request(body.as_bytes(), &keys);
        assert!(matches!(
            r.digest_status,
            DigestStatus::Mismatch { mistake: Some(m), .. } if m == want
        ));
    }
}

#[test]
fn spec_sample_frame_data_is_a_plain_request() {
    let v = vectors();
    let frame = v
        .as_object()
        .unwrap()
        .get("frames")
        .unwrap()
        .as_array()
        .unwrap()[0]
        .as_object()
        .unwrap()
        .clone();
    let hex = s(&frame, "data_hex");
    let data: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let r = request(&data, &KeyRing::single(PosKey::new(DEFAULT_KEY).unwrap()));
    assert_eq!(r.dialect, RequestDialect::Plain);
    assert_eq!(r.content_form, ContentForm::JsonString);
    assert_eq!(
        r.content.keys().collect::<Vec<_>>(),
        ["amt", "channel", "funcType", "mode"]
    );
    assert_eq!(
        r.format_content(),
        "{amt=100,channel='wx',funcType=1,mode=1}"
    );
    // The spec's digests are placeholders (D4): it does not verify with the default key.
    assert!(matches!(r.digest_status, DigestStatus::Mismatch { .. }));
}

#[test]
fn decisions_vectors() {
    assert_eq!(
        digest::digest("{func_type=4001,orderId='12345678'}", DEFAULT_KEY),
        "99ce8bf9c7304ac964522d10f51660b4"
    );
    assert_eq!(
        digest::digest("{func_type=5001}", DEFAULT_KEY),
        "77760cafee81dc33c720c90b75787b5f"
    );
    let k256 = PosKey::new(DEFAULT_KEY).unwrap();
    let pt =
        "{content:{func_type=4001,orderId='12345678'}, digest:'99CE8BF9C7304AC964522D10F51660B4'}";
    let ct = "XczeNuwMCct+IaXZ00lv7Pern+ttWiSyG+Y62QH+wXr471L2opZR5JPeQPXADN/Xc1s+VL82RqBp0KFPo5Mm6KUFau0S1WRPC2YN4s6WpiFjwrbGPq3JPZ2OYXTGZHAb";
    assert_eq!(k256.encrypt_base64(pt.as_bytes()), ct);
    let d = k256.decrypt_base64(ct.as_bytes()).unwrap();
    assert_eq!(
        (d.plaintext.as_slice(), d.interpretation),
        (pt.as_bytes(), KeyInterpretation::Text256)
    );

    let k128 = PosKey::new("my_qfpay_pos_key").unwrap();
    let pt = "{content:{func_type=5001}, digest:'5511FE1F062D5DE5AADF6D076F34B8D2'}";
    let ct = "lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=";
    assert_eq!(k128.encrypt_base64(pt.as_bytes()), ct);
    let d = k128.decrypt_base64(ct.as_bytes()).unwrap();
    assert_eq!(
        (d.plaintext.as_slice(), d.interpretation),
        (pt.as_bytes(), KeyInterpretation::Text128)
    );
    // The digest inside that envelope is md5("{func_type=5001}" + "my_qfpay_pos_key").
    assert_eq!(
        digest::digest("{func_type=5001}", "my_qfpay_pos_key"),
        "5511fe1f062d5de5aadf6d076f34b8d2"
    );
}

#[test]
fn hex_key_reading_is_found_and_reported() {
    // A sender that uses the 16 decoded bytes of the hex key (D3 fallback).
    let key = PosKey::new(DEFAULT_KEY).unwrap();
    let fc = "{func_type=5001}";
    let pt = format!(
        "{{content:{fc}, digest:'{}'}}",
        digest::digest(fc, DEFAULT_KEY).to_uppercase()
    );
    let ct = key
        .encrypt_as(KeyInterpretation::Hex128, pt.as_bytes())
        .unwrap();
    let body = format!("\"{}\"", ecr_proto::cipher::encode_base64(&ct));
    let r = request(body.as_bytes(), &KeyRing::single(key));
    assert_eq!(r.interpretation, Some(KeyInterpretation::Hex128));
    assert_eq!(r.digest_status, DigestStatus::Ok);
    assert_eq!(
        r.digest.as_deref(),
        Some("77760CAFEE81DC33C720C90B75787B5F")
    );
}

#[test]
fn base64_with_line_breaks_and_escaped_slashes() {
    let e = &envelope_vectors()[2];
    let keys = KeyRing::single(PosKey::new(s(e, "key")).unwrap());
    let b64 = s(e, "body").trim_matches('"');
    // MIME-style line breaks, missing padding, and `\/` escapes in the literal.
    let mut wrapped = String::new();
    for (i, c) in b64.chars().enumerate() {
        if i > 0 && i % 76 == 0 {
            wrapped.push_str("\r\n");
        }
        wrapped.push(c);
    }
    let r = request(wrapped.trim_end_matches('=').as_bytes(), &keys);
    assert_eq!(r.body_form, BodyForm::Base64);
    assert_eq!(r.digest_status, DigestStatus::Ok);
    let quoted = format!("\"{}\"", b64.replace('/', "\\/"));
    assert_eq!(
        request(quoted.as_bytes(), &keys).digest_status,
        DigestStatus::Ok
    );
}
