//! The HTTP/1.x stream parser (heads and chunk sizes through httparse), fed in
//! input-chosen chunks, with a gap and the end of the stream.
#![no_main]
use ecr_capture::http::{HttpConfig, HttpEvent, HttpParser};
use ecr_proto::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let cfg = HttpConfig {
        max_header_bytes: 4096,
        max_body_bytes: 65536,
    };
    let mut p = HttpParser::new(cfg);
    let mut out = Vec::new();
    let chunk = usize::from(step % 64) + 1;
    for (i, c) in rest.chunks(chunk).enumerate() {
        if step & 0x80 != 0 && i == 3 {
            p.gap(Timestamp(0), 100, &mut out);
        }
        p.feed(Timestamp(i as i64), c, &mut out);
        // Held bytes stay bounded by the configuration, never by the input: a head
        // block (its fields cost up to ~50 bytes of bookkeeping per byte in the worst
        // case, and so do one-byte chunk times), a body and a chunk.
        assert!(
            p.held() <= 64 * (cfg.max_header_bytes + chunk) + cfg.max_body_bytes,
            "held {}",
            p.held()
        );
    }
    p.finish(Timestamp(0), &mut out);
    let body: usize = out
        .iter()
        .map(|e| match e {
            HttpEvent::Message(m) => m.body.len(),
            _ => 0,
        })
        .sum();
    assert!(body <= rest.len());
});
