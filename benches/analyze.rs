//! End-to-end analyzer throughput on in-memory captures:
//! - `ecr_only`: the sample captures of `captures/` back to back (every packet is ECR
//!   traffic, so this measures decoding, decryption and verification);
//! - `mixed`: 64 MB of non-ECR noise with the sample conversations sprinkled in, as
//!   in a shop capture (this measures how fast the analyzer skips what is not ours).
//! - `ecr_dense`: `analyze --format jsonl` (output thrown away) on 12 MB of the dense capture of `ecr_emu::dense` (every packet ECR
//!   traffic over every transport, 32 terminals with their own keys), the capture
//!   `benches/dense.sh` times at 256 MB.
//!
//! Run: `cargo bench --bench analyze` (`-- ecr_dense` for the dense one only). Reported in bytes/s and messages/s.

use std::io::Cursor;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::KeySet;
use ecr_capture::output::{self, Format};
use ecr_capture::record::Record;
use ecr_capture::source::{CaptureReader, PcapWriter};
use ecr_emu::dense::{self, DenseOptions};
use ecr_proto::cipher::PosKey;
use ecr_proto::Timestamp;

const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

/// Ethernet packets (ts, data) of every Ethernet sample capture in `captures/`.
fn sample_packets() -> Vec<Vec<(i64, Vec<u8>)>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/captures");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    names.sort();
    let mut out = vec![];
    for p in names {
        let Ok(mut r) = CaptureReader::open(&p) else {
            continue;
        };
        let mut conv = vec![];
        while let Some(Ok(pkt)) = r.next_packet() {
            if pkt.linktype != 1 {
                break;
            }
            conv.push((pkt.ts.as_nanos(), pkt.data.to_vec()));
        }
        if !conv.is_empty() {
            out.push(conv);
        }
    }
    out
}

fn build(noise_bytes: usize) -> Vec<u8> {
    let convs = sample_packets();
    let mut w = PcapWriter::new(Vec::new(), 1, 65535, false, false).unwrap();
    let mut t = 1_700_000_000_000_000_000i64;
    let mut written = 0usize;
    let mut n = 0u32;
    let mut noise = vec![0u8; 14 + 20 + 20 + 1200];
    noise[12] = 0x08; // IPv4
    noise[14] = 0x45;
    noise[16..18].copy_from_slice(&((20 + 20 + 1200) as u16).to_be_bytes());
    noise[23] = 6; // TCP
    noise[34..36].copy_from_slice(&51000u16.to_be_bytes());
    noise[36..38].copy_from_slice(&443u16.to_be_bytes());
    noise[46] = 0x50;
    let mut ci = 0;
    loop {
        if noise_bytes > 0 {
            for _ in 0..500 {
                t += 100_000;
                noise[26..30].copy_from_slice(&n.to_be_bytes());
                n += 1;
                w.write_packet(Timestamp(t), &noise, noise.len() as u32)
                    .unwrap();
                written += noise.len() + 16;
            }
        }
        let conv = &convs[ci % convs.len()];
        ci += 1;
        let base = conv[0].0;
        for (ts, d) in conv {
            w.write_packet(Timestamp(t + (ts - base)), d, d.len() as u32)
                .unwrap();
            written += d.len() + 16;
        }
        t += conv.last().map_or(0, |l| l.0 - base) + 1_000_000;
        if (noise_bytes == 0 && ci >= convs.len()) || (noise_bytes > 0 && written >= noise_bytes) {
            break;
        }
    }
    w.into_inner()
}

/// Shares the capture between iterations without copying it.
#[derive(Clone)]
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn run(capture: &Shared) -> u64 {
    let mut keys = KeySet::new();
    keys.add(PosKey::new(KEY).unwrap());
    let mut messages = 0u64;
    let mut sink = |r: Record| {
        if matches!(r, Record::Message(_)) {
            messages += 1;
        }
    };
    let mut a = Analyzer::new(Config::default(), keys, &mut sink);
    let mut r = CaptureReader::from_reader(Cursor::new(capture.clone())).unwrap();
    while let Some(p) = r.next_packet() {
        a.packet(&p.unwrap());
    }
    a.finish(capture.0.len() as u64, vec![]);
    messages
}

/// Like `analyze --key-file KEYS --format jsonl` with stdout thrown away.
fn run_dense(capture: &Shared, opts: &DenseOptions) -> u64 {
    let mut keys = KeySet::new();
    keys.add_file_text(&dense::key_file(opts)).unwrap();
    let mut out = output::writer(Format::Jsonl, std::io::sink(), false);
    let mut messages = 0u64;
    let mut sink = |r: Record| {
        if matches!(r, Record::Message(_)) {
            messages += 1;
        }
        out.write(&r).unwrap();
    };
    let mut a = Analyzer::new(Config::default(), keys, &mut sink);
    let mut r = CaptureReader::from_reader(Cursor::new(capture.clone())).unwrap();
    while let Some(p) = r.next_packet() {
        a.packet(&p.unwrap());
    }
    a.finish(capture.0.len() as u64, vec![]);
    messages
}

fn bench(c: &mut Criterion) {
    let opts = DenseOptions {
        size_bytes: 12 << 20,
        terminals: 32,
        ..Default::default()
    };
    let mut dense_capture = Vec::new();
    let made = dense::write_dense(&mut dense_capture, &opts).unwrap();
    let dense_capture = Shared(Arc::new(dense_capture));
    let dense_messages = run_dense(&dense_capture, &opts);
    // Every request and response decoded (acks of 9002 frames come on top).
    assert!(
        dense_messages >= made.messages,
        "{dense_messages} < {made:?}"
    );
    let ecr = Shared(Arc::new(build(0)));
    let messages = run(&ecr);
    let mut g = c.benchmark_group("analyze");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(dense_capture.0.len() as u64));
    g.bench_function("ecr_dense", |b| b.iter(|| run_dense(&dense_capture, &opts)));
    g.throughput(Throughput::Elements(dense_messages));
    g.bench_function("ecr_dense_messages", |b| {
        b.iter(|| run_dense(&dense_capture, &opts))
    });
    g.throughput(Throughput::Bytes(ecr.0.len() as u64));
    g.bench_function("ecr_only_bytes", |b| b.iter(|| run(&ecr)));
    g.throughput(Throughput::Elements(messages));
    g.bench_function("ecr_only_messages", |b| b.iter(|| run(&ecr)));
    let mixed = Shared(Arc::new(build(64 << 20)));
    g.throughput(Throughput::Bytes(mixed.0.len() as u64));
    g.bench_function("mixed_64MB", |b| b.iter(|| run(&mixed)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
