//! The whole analyzer on arbitrary capture files and on arbitrary serial bytes,
//! with every output writer.
#![no_main]
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::KeySet;
use ecr_capture::output::{writer, Format};
use ecr_capture::record::Record;
use ecr_capture::source::CaptureReader;
use ecr_proto::cipher::PosKey;
use ecr_proto::link::Side;
use ecr_proto::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut keys = KeySet::new();
    if let Ok(k) = PosKey::new("f46b1f08bec1f39104792cc79ec9aacd") {
        keys.add(k);
    }
    let mut text = writer(Format::Text, std::io::sink(), true);
    let mut jsonl = writer(Format::Jsonl, std::io::sink(), false);
    let mut sink = |r: Record| {
        let _ = text.write(&r);
        let _ = jsonl.write(&r);
    };
    // The real limits (the default memory budget), as `analyze` runs.
    let cfg = Config {
        probe: data.first().is_some_and(|b| b & 1 == 1),
        ..Config::default()
    };
    let mut a = Analyzer::new(cfg, keys, &mut sink);
    if let Ok(mut r) = CaptureReader::from_reader(std::io::Cursor::new(data.to_vec())) {
        let mut n = 0;
        a.read_capture(&mut r, "fuzz", |_| {
            n += 1;
            n <= 100_000
        });
    }
    // Memory is bounded by the budget, whatever the input: a packet may add at
    // most a frame in progress per direction before the limit is enforced.
    let u = a.usage();
    let l = *a.limits();
    assert!(u.stream_bytes <= l.stream_bytes + (256 << 10), "{u:?}");
    assert!(
        u.connections <= l.connections && u.fragments <= l.fragments,
        "{u:?}"
    );
    assert!(
        u.ooo_bytes <= l.ooo_bytes && u.payment_bytes <= l.payment_bytes,
        "{u:?}"
    );
    assert!(u.text_work <= 8 * data.len() as u64 + 64, "{u:?}");
    for (i, c) in data.chunks(17).enumerate() {
        let side = if i % 2 == 0 { Side::Ecr } else { Side::Pos };
        a.serial_chunk(
            0,
            ("ECR", "POS"),
            side,
            c,
            Timestamp::from_millis(i as i64 * 300),
            Some(i as u64),
        );
    }
    let _ = a.finish(data.len() as u64, vec![]);
});
