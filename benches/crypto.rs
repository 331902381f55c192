//! Cipher, digest and envelope benchmarks.
//!
//! Run: `cargo bench --bench crypto -- --warm-up-time 1 --measurement-time 2`.
//! The decrypt figures compare with `openssl speed -evp aes-128-cbc -decrypt`
//! (see crates/ecr-proto/BENCH-crypto.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ecr_proto::cipher::{KeyInterpretation, KeyRing, PosKey};
use ecr_proto::digest::{self, Basis};
use ecr_proto::envelope::{build_request, parse, RequestDialect};
use ecr_proto::value::{Object, Value};

const KEY_128: &str = "my_qfpay_pos_key";
const KEY_256: &str = "f46b1f08bec1f39104792cc79ec9aacd";

/// Ciphertext of exactly `size` bytes (plaintext `size - 1`, one padding byte).
fn ciphertext(key: &PosKey, size: usize) -> Vec<u8> {
    let plain: Vec<u8> = (0..size - 1).map(|i| (i * 7) as u8).collect();
    let ct = key.encrypt(&plain);
    assert_eq!(ct.len(), size);
    ct
}

fn decrypt(c: &mut Criterion) {
    let k128 = PosKey::new(KEY_128).unwrap();
    let k256 = PosKey::new(KEY_256).unwrap();
    let mut g = c.benchmark_group("aes_cbc_decrypt");
    for size in [1024usize, 16 * 1024, 64 * 1024] {
        g.throughput(Throughput::Bytes(size as u64));
        for (name, key, interp) in [
            ("aes128", &k128, KeyInterpretation::Text128),
            ("aes256", &k256, KeyInterpretation::Text256),
        ] {
            let ct = ciphertext(key, size);
            // As `openssl speed` does: decrypt one hot buffer over and over. After
            // the first pass it holds garbage, so the padding check fails, but
            // every block is still decrypted: this is the raw CBC throughput.
            let mut hot = ct.clone();
            g.bench_function(BenchmarkId::new(format!("{name}_raw_hot"), size), |b| {
                b.iter(|| black_box(key.decrypt_in_place(interp, black_box(&mut hot)).is_ok()))
            });
            // A real message: copy the ciphertext into a reused buffer, decrypt
            // and unpad in place. The buffer is offset by 64 bytes: two equal
            // heap blocks allocated in a row sit 16 bytes apart modulo 4096, and
            // glibc's memcpy (`rep movsb`) then runs at ~2.6 GB/s instead of
            // ~90 GB/s on this AMD Zen CPU, which would measure memcpy, not AES.
            let mut backing = vec![0u8; size + 64];
            g.bench_function(
                BenchmarkId::new(format!("{name}_copy_in_place"), size),
                |b| {
                    b.iter(|| {
                        let buf = &mut backing[64..];
                        buf.copy_from_slice(black_box(&ct));
                        black_box(key.decrypt_in_place(interp, buf).unwrap().len())
                    })
                },
            );
        }
        // The convenience path: copies the ciphertext and returns an owned Vec.
        let ct = ciphertext(&k128, size);
        g.bench_with_input(BenchmarkId::new("aes128_copying", size), &ct, |b, ct| {
            b.iter(|| black_box(k128.decrypt(black_box(ct)).unwrap().plaintext.len()))
        });
    }
    g.finish();
}

fn vector_content() -> Object {
    let v = Value::parse_json(
        br#"{"func_type":1001,"amt":10.1,"channel":"card_payment","out_trade_no":"456799999999"}"#,
    )
    .unwrap();
    v.as_object().unwrap().clone()
}

fn digests(c: &mut Criterion) {
    let content = vector_content();
    let keys = KeyRing::single(PosKey::new(KEY_128).unwrap());
    let fc = digest::format_content(&content);
    let good = digest::digest(&fc, KEY_128);
    let mut g = c.benchmark_group("digest");
    g.bench_function("format_content", |b| {
        b.iter(|| black_box(digest::format_content(black_box(&content))))
    });
    g.bench_function("md5_of_format_content", |b| {
        b.iter(|| black_box(digest::digest(black_box(&fc), KEY_128)))
    });
    g.bench_function("verify_ok", |b| {
        b.iter(|| {
            digest::verify(
                Some(black_box(&good)),
                &content,
                Basis::Plaintext { ciphertext: None },
                &keys,
                None,
            )
        })
    });
    // Worst case: no variant matches, every mistake is tried.
    g.bench_function("verify_mismatch_all_variants", |b| {
        b.iter(|| {
            digest::verify(
                Some(black_box("00000000000000000000000000000000")),
                &content,
                Basis::Plaintext { ciphertext: None },
                &keys,
                None,
            )
        })
    });
    g.finish();
}

fn envelopes(c: &mut Criterion) {
    let content = vector_content();
    let key = PosKey::new(KEY_256).unwrap();
    let keys = KeyRing::single(key.clone());
    let mut g = c.benchmark_group("envelope_parse");
    for dialect in [
        RequestDialect::Plain,
        RequestDialect::ContentEncrypted,
        RequestDialect::EnvelopeEncrypted,
    ] {
        let body = build_request(dialect, &content, &key);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(dialect.name()),
            &body,
            |b, body| b.iter(|| black_box(parse(black_box(body), &keys).unwrap())),
        );
    }
    let response = br#"{"respcd":"6000","respmsg":"AUTHORISED","resperr":"trade success","data":"{\"batchNo\":\"250703\",\"busicd\":\"802808\",\"cardNo\":\"541375******6830\",\"cardType\":\"MASTERCARD\",\"cardscheme\":\"MASTERCARD\",\"chnlsn\":\"2025070375830316\",\"clisn\":\"030800\",\"mchntnm\":\"Odoo HK Limited\",\"out_trade_no\":\"456799999999\",\"paydtm\":\"2025-07-03 14:33:23\",\"paymentType\":\"SALES\",\"respcd\":\"0000\",\"sysdtm\":\"2025-07-03 14:33:22\",\"syssn\":\"20250703155400020061880690\",\"terminalId\":\"253SCASG9109\",\"txamt\":\"100\",\"txcurrcd\":\"344\"}"}"#;
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("plain-response", |b| {
        b.iter(|| black_box(parse(black_box(response), &keys).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, decrypt, digests, envelopes);
criterion_main!(benches);
