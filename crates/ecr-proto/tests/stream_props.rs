//! Property tests for the frame layer: build -> split -> feed in random chunks ->
//! reassemble gives back the data, and arbitrary bytes are all accounted for.

use ecr_proto::frame::{split_message, BuildError, FrameType, MAX_MESSAGE_LEN};
use ecr_proto::reassembly::{Reassembler, ReassemblyEvent};
use ecr_proto::stream::{StreamDecoder, StreamEvent};
use ecr_proto::Timestamp;
use proptest::prelude::*;

/// Cuts `bytes` into chunks whose sizes cycle through `sizes`.
fn chunks<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = vec![];
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

fn reassemble(stream: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut dec = StreamDecoder::new();
    let mut re = Reassembler::new();
    let mut messages = vec![];
    for (i, c) in chunks(stream, sizes).into_iter().enumerate() {
        // 1 ms per chunk: never near the 500 ms fragment timeout.
        dec.feed(c, Timestamp::from_millis(i as i64), |ev| match ev {
            StreamEvent::Frame(f) => re.push(&f, |r| match r {
                ReassemblyEvent::Message(m) => {
                    assert!(!m.late);
                    messages.push(m.data.into_owned())
                }
                other => panic!("unexpected {other:?}"),
            }),
            other => panic!("unexpected {other:?}"),
        });
    }
    dec.finish(|ev| panic!("left over {ev:?}"));
    messages
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn split_then_reassemble_gives_back_the_data(
        len in 0usize..70_000,
        seed in any::<u8>(),
        max_fragment in prop_oneof![Just(1024usize), 1usize..4096],
        sizes in proptest::collection::vec(1usize..3000, 1..8),
        ref_num in 1u8..=0x7f,
    ) {
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        match split_message(FrameType::REQUEST, ref_num, &data, max_fragment) {
            Ok(stream) => {
                prop_assert!(len <= MAX_MESSAGE_LEN);
                let got = reassemble(&stream, &sizes);
                prop_assert_eq!(got.len(), 1);
                prop_assert_eq!(&got[0], &data);
            }
            Err(BuildError::TooLong { .. }) => prop_assert!(len > MAX_MESSAGE_LEN),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn several_messages_in_one_stream(
        lens in proptest::collection::vec(0usize..3000, 1..6),
        sizes in proptest::collection::vec(1usize..500, 1..5),
    ) {
        let mut stream = vec![];
        let mut datas = vec![];
        for (i, len) in lens.iter().enumerate() {
            let data: Vec<u8> = (0..*len).map(|j| (i * 7 + j) as u8).collect();
            stream.extend(split_message(FrameType::REQUEST, (i + 1) as u8, &data, 1024).unwrap());
            datas.push(data);
        }
        prop_assert_eq!(reassemble(&stream, &sizes), datas);
    }

    #[test]
    fn arbitrary_bytes_are_all_accounted_for(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        sizes in proptest::collection::vec(1usize..64, 1..6),
        sprinkle in any::<bool>(),
    ) {
        // Optionally plant valid frame starts so the decoder has something to find.
        let mut bytes = bytes;
        if sprinkle {
            for i in (0..bytes.len()).step_by(97) {
                if let Some(s) = bytes.get_mut(i..i + 4) {
                    s.copy_from_slice(&[0x2f, 0x6e, 0x01, 0x10]);
                }
            }
        }
        let mut dec = StreamDecoder::new();
        let mut next = 0u64;
        let mut check = |ev: StreamEvent<'_>| {
            let (off, len) = match ev {
                StreamEvent::Frame(f) => (f.offset, f.frame.as_bytes().len() as u64),
                StreamEvent::Rejected(r) => (r.offset, r.bytes.len() as u64),
                StreamEvent::Skipped(s) => (s.offset, s.len),
            };
            assert_eq!(off, next, "events are contiguous");
            assert!(len > 0);
            next = off + len;
        };
        for c in chunks(&bytes, &sizes) {
            dec.feed(c, Timestamp(0), &mut check);
        }
        dec.finish(&mut check);
        prop_assert_eq!(next, bytes.len() as u64);
        let st = dec.stats();
        prop_assert_eq!(st.bytes, bytes.len() as u64);
    }
}
