//! HTTPS analysis and TLS record decryption:
//! - `analyze_https` / `analyze_http`: the captures of `captures/tls/` (curl and
//!   Python `ssl` sessions with `ecr-sniff emulate`), each analysed once from its TLS
//!   leg with the key log and once from its plain-HTTP leg (the same session relayed
//!   in the clear), in captured bytes/s of that leg and messages/s;
//! - `tls12_aes128gcm_record_16KB`: opening one 16 KB TLS 1.2 AES-128-GCM record as
//!   the analyzer does, to compare with `openssl speed -evp aes-128-gcm -decrypt`.
//!
//! Run: `cargo bench --bench tls -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keylog::KeyLog;
use ecr_capture::keys::KeySet;
use ecr_capture::record::Record;
use ecr_capture::source::{CaptureReader, Packet};
use ecr_capture::tcp::{peek_tcp_ports, PortPeek};
use ecr_proto::cipher::PosKey;
use ecr_proto::Timestamp;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

struct Leg {
    packets: Vec<(i64, Vec<u8>)>,
    keylog: Vec<u8>,
    port: u16,
}

/// Per capture, the packets of one port (29001: TLS, 29101: plain HTTP).
fn legs(port: u16) -> Vec<Leg> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/captures/tls");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        // emu-* are the emulator's captures on port 9001, without a plain leg.
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("emu-"))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let mut r = CaptureReader::open(&p).unwrap();
            let mut packets = vec![];
            while let Some(Ok(pkt)) = r.next_packet() {
                if let PortPeek::Tcp { src, dst } = peek_tcp_ports(pkt.linktype, pkt.data) {
                    if src == port || dst == port {
                        packets.push((pkt.ts.as_nanos(), pkt.data.to_vec()));
                    }
                }
            }
            Leg {
                packets,
                keylog: std::fs::read(p.with_extension("keylog")).unwrap(),
                port,
            }
        })
        .collect()
}

/// Analyses every leg; returns the messages decoded.
fn analyze(legs: &[Leg], tls: bool) -> u64 {
    let mut messages = 0;
    for leg in legs {
        let mut keys = KeySet::new();
        keys.add(PosKey::new(KEY).unwrap());
        let mut log = KeyLog::new();
        if tls {
            log.add_text(&leg.keylog);
        }
        let cfg = Config {
            http_ports: vec![leg.port],
            tls_keylog: log,
            ..Config::default()
        };
        let mut sink = |r: Record| {
            if matches!(r, Record::Message(_)) {
                messages += 1;
            }
        };
        let mut a = Analyzer::new(cfg, keys, &mut sink);
        for (i, (ts, data)) in leg.packets.iter().enumerate() {
            a.packet(&Packet {
                index: i as u64 + 1,
                ts: Timestamp(*ts),
                linktype: 1,
                data,
                orig_len: data.len() as u32,
                interface: 0,
                direction: None,
            });
        }
        a.finish(0, vec![]);
    }
    messages
}

fn bench_analyze(c: &mut Criterion) {
    for (name, port, tls) in [
        ("analyze_https", 29001, true),
        ("analyze_http", 29101, false),
    ] {
        let legs = legs(port);
        let bytes: usize = legs
            .iter()
            .flat_map(|l| &l.packets)
            .map(|p| p.1.len())
            .sum();
        let messages = analyze(&legs, tls);
        assert!(messages >= 60, "{name}: {messages} messages");
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function("bytes", |b| b.iter(|| analyze(&legs, tls)));
        g.throughput(Throughput::Elements(messages));
        g.bench_function("messages", |b| b.iter(|| analyze(&legs, tls)));
        g.finish();
    }
}

fn bench_record(c: &mut Criterion) {
    let key = [7u8; 16];
    let salt = [1, 2, 3, 4];
    let explicit = [9u8; 8];
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&salt);
    nonce[4..].copy_from_slice(&explicit);
    let mut plain = vec![0x5au8; 16384];
    // AAD of TLS 1.2: seq 0, type 23, version 3.3, plaintext length.
    let mut aad = [0u8; 13];
    aad[8..11].copy_from_slice(&[23, 3, 3]);
    aad[11..].copy_from_slice(&(plain.len() as u16).to_be_bytes());
    let tag = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).unwrap())
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut plain,
        )
        .unwrap();
    let frag: Vec<u8> = explicit
        .iter()
        .chain(&plain)
        .chain(tag.as_ref())
        .copied()
        .collect();
    let mut open = ecr_capture::tls::bench::aes128gcm_tls12(&key, salt);
    assert_eq!(open(&frag), Some(16384));
    let mut g = c.benchmark_group("tls12_aes128gcm_record_16KB");
    g.throughput(Throughput::Bytes(16384));
    g.bench_function("open", |b| b.iter(|| open(std::hint::black_box(&frag))));
    g.finish();
}

criterion_group!(benches, bench_analyze, bench_record);
criterion_main!(benches);
