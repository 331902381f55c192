//! What the whole-analyzer targets (`analyzer`, `pipeline`) share: the key, the limits
//! an input is analysed with, and the reading of it as a capture.
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::KeySet;
use ecr_capture::limits::{Limits, DEFAULT_BUDGET, MIN_BUDGET};
use ecr_capture::source::CaptureReader;
use ecr_proto::cipher::PosKey;

/// Packets read of one input at most.
pub const MAX_PACKETS: u64 = 100_000;

/// The sample captures' key, so that their messages decrypt.
pub fn keys() -> KeySet {
    let mut keys = KeySet::new();
    if let Ok(k) = PosKey::new("f46b1f08bec1f39104792cc79ec9aacd") {
        keys.add(k);
    }
    keys
}

/// The real limits: the default memory budget as `analyze` runs, or the smallest
/// one (where a 1 MB input can fill the tables), by the input's length; probing
/// other ports by its first byte.
pub fn config(data: &[u8]) -> Config {
    let budget = if data.len() % 2 == 1 {
        MIN_BUDGET
    } else {
        DEFAULT_BUDGET
    };
    Config {
        probe: data.first().is_some_and(|b| b & 1 == 1),
        limits: Limits::from_budget(budget),
        ..Config::default()
    }
}

/// Reads `data` as a capture into `a`, at most [`MAX_PACKETS`] packets.
pub fn read(a: &mut Analyzer<'_>, data: &[u8]) {
    if let Ok(mut r) = CaptureReader::from_reader(std::io::Cursor::new(data.to_vec())) {
        let mut n = 0;
        a.read_capture(&mut r, "fuzz", |_| {
            n += 1;
            n <= MAX_PACKETS
        });
    }
}
