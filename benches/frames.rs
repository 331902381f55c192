//! Frame-layer throughput: parsing single frames, decoding a 1 MB stream of mixed
//! frames (in large and in small chunks), and reassembling split messages.
//!
//! Run: `cargo bench --bench frames`. Throughput is reported in bytes/s (and in
//! messages/s for the per-message groups).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ecr_proto::frame::{self, split_message, FrameRepr, FrameType};
use ecr_proto::reassembly::{Reassembler, ReassemblyEvent};
use ecr_proto::stream::{StreamDecoder, StreamEvent};
use ecr_proto::Timestamp;
use std::hint::black_box;

/// About 1 MB of traffic as a terminal link carries it: requests of 100..3000 bytes
/// (the larger ones split at 1024), each followed by its ack, and a little garbage.
fn mixed_stream() -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(1 << 20);
    let mut messages = 0;
    let mut i = 0usize;
    while out.len() < 1 << 20 {
        let len = 100 + (i * 7919) % 2900;
        let data: Vec<u8> = (0..len).map(|j| b'A' + ((i + j) % 26) as u8).collect();
        let r = (i % 127 + 1) as u8;
        out.extend(split_message(FrameType::REQUEST, r, &data, 1024).unwrap());
        out.extend(FrameRepr::ack(r).to_bytes().unwrap());
        if i % 50 == 0 {
            out.extend_from_slice(b"\r\nnoise/n");
        }
        messages += 2;
        i += 1;
    }
    (out, messages)
}

fn bench_parse(c: &mut Criterion) {
    let data = vec![b'x'; 512];
    let f = FrameRepr::new(FrameType::REQUEST, 1, &data)
        .to_bytes()
        .unwrap();
    let mut g = c.benchmark_group("frame_parse");
    g.throughput(Throughput::Bytes(f.len() as u64));
    g.bench_function("512B", |b| {
        b.iter(|| {
            let (fr, _) = frame::parse(black_box(&f)).unwrap();
            black_box(fr.data().len())
        })
    });
    g.finish();
}

fn bench_stream(c: &mut Criterion) {
    let (stream, _) = mixed_stream();
    let mut g = c.benchmark_group("stream_decode_1MB");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk in [65536usize, 1460, 64] {
        g.bench_with_input(BenchmarkId::new("chunk", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut d = StreamDecoder::new();
                let mut frames = 0u64;
                for c in stream.chunks(chunk) {
                    d.feed(c, Timestamp(0), |e| {
                        if let StreamEvent::Frame(f) = e {
                            frames += f.frame.data().len() as u64;
                        }
                    });
                }
                d.finish(|_| {});
                black_box(frames)
            })
        });
    }
    g.finish();
}

fn bench_reassembly(c: &mut Criterion) {
    let (stream, messages) = mixed_stream();
    let mut g = c.benchmark_group("decode_and_reassemble_1MB");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("bytes", |b| {
        b.iter(|| {
            let mut d = StreamDecoder::new();
            let mut r = Reassembler::new();
            let mut n = 0usize;
            d.feed(&stream, Timestamp(0), |e| {
                if let StreamEvent::Frame(f) = e {
                    r.push(&f, |m| {
                        if let ReassemblyEvent::Message(m) = m {
                            n += m.data.len();
                        }
                    });
                }
            });
            black_box(n)
        })
    });
    g.throughput(Throughput::Elements(messages as u64));
    g.bench_function("messages", |b| {
        b.iter(|| {
            let mut d = StreamDecoder::new();
            let mut r = Reassembler::new();
            let mut n = 0usize;
            d.feed(&stream, Timestamp(0), |e| {
                if let StreamEvent::Frame(f) = e {
                    r.push(&f, |m| {
                        if matches!(m, ReassemblyEvent::Message(_)) {
                            n += 1;
                        }
                    });
                }
            });
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_stream, bench_reassembly);
criterion_main!(benches);
