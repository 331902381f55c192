//! One frame parse, then the stream decoder, reassembler and link tracker over the
//! same bytes in chunks chosen by the input: nothing may panic, and every byte must
//! be accounted for.
#![no_main]
use ecr_proto::frame;
use ecr_proto::link::{LinkTracker, Side};
use ecr_proto::reassembly::Reassembler;
use ecr_proto::stream::{StreamDecoder, StreamEvent};
use ecr_proto::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::parse(data);
    let _ = frame::Frame::new_checked(data);
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(step % 64) + 1;
    let mut dec = StreamDecoder::new();
    let mut re = Reassembler::new();
    let mut link = LinkTracker::new();
    let mut seen = 0u64;
    for (i, c) in rest.chunks(chunk).enumerate() {
        let ts = Timestamp::from_millis(i as i64 * i64::from(step));
        let side = if i % 3 == 0 { Side::Pos } else { Side::Ecr };
        dec.feed(c, ts, |ev| match ev {
            StreamEvent::Frame(f) => {
                seen += f.frame.as_bytes().len() as u64;
                link.on_frame(
                    side,
                    f.frame.frame_type(),
                    f.frame.ref_num(),
                    f.first_ts,
                    f.last_ts,
                    |_| {},
                );
                re.push(&f, |_| {});
            }
            StreamEvent::Rejected(r) => seen += r.bytes.len() as u64,
            StreamEvent::Skipped(s) => seen += s.len,
        });
    }
    dec.finish(|ev| match ev {
        StreamEvent::Frame(f) => seen += f.frame.as_bytes().len() as u64,
        StreamEvent::Rejected(r) => seen += r.bytes.len() as u64,
        StreamEvent::Skipped(s) => seen += s.len,
    });
    re.finish(|_| {});
    link.finish(Timestamp::from_millis(1 << 40), |_| {});
    assert_eq!(seen, rest.len() as u64);
});
