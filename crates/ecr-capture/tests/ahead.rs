//! Decoding ahead (`ecr_capture::ahead`), deterministically: the producer runs over
//! a whole sample capture first, then the consumer over the same capture takes the
//! decodings. The consumer's records must equal those of an analyzer on its own,
//! and the decodings must really be taken (not all decoded again). The threaded
//! use (`analyze -j 2`) is checked for equal output in the binary's tests/jobs.rs.

use std::path::{Path, PathBuf};

use ecr_capture::ahead;
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::KeySet;
use ecr_capture::record::Record;
use ecr_capture::source::CaptureReader;
use ecr_proto::cipher::PosKey;

/// The sample captures' key (docs/protocol.md: the test key of the samples).
const KEY: &str = "f46b1f08bec1f39104792cc79ec9aacd";

fn captures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../captures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    files
}

fn keys() -> KeySet {
    let mut k = KeySet::new();
    k.add(PosKey::new(KEY).unwrap());
    k
}

fn read(analyzer: &mut Analyzer<'_>, path: &Path) {
    let mut reader = CaptureReader::open(path).unwrap();
    analyzer.read_capture(&mut reader, "capture", |_| true);
}

fn alone(path: &Path) -> Vec<Record> {
    let mut records = vec![];
    let mut sink = |r: Record| records.push(r);
    let mut a = Analyzer::new(Config::default(), keys(), &mut sink);
    read(&mut a, path);
    let (summary, _) = a.finish(0, vec![]);
    records.push(Record::Summary(summary));
    records
}

/// Records of a consumer whose producer ran first, and the consumer's counts.
fn with_producer_first(path: &Path) -> (Vec<Record>, ahead::AheadStats) {
    let (producer, consumer) = ahead::channel_with(1 << 20, 0, usize::MAX);
    let mut discard = |_: Record| {};
    let mut p = Analyzer::new(Config::default(), keys(), &mut discard);
    p.decode_ahead_for(producer);
    read(&mut p, path);
    assert!(p.flush_ahead(), "the consumer is still there");
    let mut records = vec![];
    let mut sink = |r: Record| records.push(r);
    let mut c = Analyzer::new(Config::default(), keys(), &mut sink);
    c.decode_ahead(consumer);
    read(&mut c, path);
    let stats = c.ahead_stats().unwrap();
    let (summary, _) = c.finish(0, vec![]);
    records.push(Record::Summary(summary));
    (records, stats)
}

#[test]
fn a_consumer_writes_what_an_analyzer_alone_writes_and_takes_the_decodings() {
    let mut taken = 0;
    let mut files = 0;
    for path in captures() {
        let expected = alone(&path);
        let (got, stats) = with_producer_first(&path);
        assert_eq!(got.len(), expected.len(), "{}", path.display());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "{}", path.display());
        }
        let messages = expected
            .iter()
            .filter(|r| matches!(r, Record::Message(_)))
            .count() as u64;
        // Every body the consumer decoded itself is one the producer never saw
        // as a body: none in these captures (bare ack frames are not bodies here).
        assert!(
            stats.taken + stats.own <= messages,
            "{}: {stats:?}, {messages} messages",
            path.display()
        );
        assert_eq!(stats.wasted, 0, "{}: {stats:?}", path.display());
        if messages > 0 {
            assert!(stats.taken > 0, "{}: {stats:?}", path.display());
        }
        taken += stats.taken;
        files += 1;
    }
    assert!(files >= 40, "{files} captures");
    assert!(taken > 150, "{taken} decodings taken");
}
