//! D6 text framing of TCP 9002 streams, fed in input-chosen chunks.
#![no_main]
use ecr_capture::tcptext::TextFramer;
use ecr_proto::cipher::{KeyRing, PosKey};
use ecr_proto::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let keys = match PosKey::new("my_qfpay_pos_key") {
        Ok(k) => KeyRing::single(k),
        Err(_) => KeyRing::new(),
    };
    let mut f = TextFramer::new();
    let mut total = 0usize;
    for c in rest.chunks(usize::from(step % 32) + 1) {
        f.feed(c, Timestamp(0), &keys, |m| total += m.body.len());
    }
    // Linear time: the framer examines (and decrypts) a small multiple of its input.
    assert!(
        f.work() <= 8 * rest.len() as u64 + 64,
        "work {} for {}",
        f.work(),
        rest.len()
    );
    f.close(|m| total += m.body.len());
    assert!(total <= rest.len());
});
