//! The helper thread (`ecr_capture::pipeline`, `analyze -j 2`): on every sample
//! capture, an analyzer that hands its bodies to a helper writes exactly the
//! records of an analyzer on its own, whether the helper writes the records or the
//! analyzer does, and whether the helper runs alongside or not at all until the
//! end (then the analyzer takes every job back). The binary's tests/jobs.rs checks
//! the same on whole runs, crafted captures and small memory budgets.

use std::path::{Path, PathBuf};

use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::KeySet;
use ecr_capture::pipeline::{self, PipelineStats};
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
    a.finish(0, vec![]);
    records
}

/// The records of an analyzer with a helper, and how the work was shared. With
/// `writes`, the helper writes them; with `late`, the helper runs only once the
/// analyzer is done (which then decodes everything itself).
fn helped(path: &Path, writes: bool, late: bool) -> (Vec<Record>, PipelineStats) {
    let (feeder, helper) = pipeline::channel(keys(), writes);
    let mut records = vec![];
    let mut written = vec![];
    let stats = std::thread::scope(|scope| {
        let run_helper = |helper: pipeline::Helper| {
            let mut out = vec![];
            helper.run(&mut |r: Record| out.push(r));
            out
        };
        let early = (!late).then(|| scope.spawn(move || run_helper(helper)));
        let mut sink = |r: Record| records.push(r);
        let mut a = Analyzer::new(Config::default(), keys(), &mut sink);
        a.decode_with(feeder);
        read(&mut a, path);
        let stats = a.pipeline_stats().unwrap();
        a.finish(0, vec![]);
        written = match early {
            Some(t) => t.join().unwrap(),
            None => Vec::new(),
        };
        stats
    });
    if writes {
        assert!(
            records.is_empty(),
            "{}: records written here",
            path.display()
        );
        (written, stats)
    } else {
        assert!(
            written.is_empty(),
            "{}: records written by the helper",
            path.display()
        );
        (records, stats)
    }
}

#[test]
fn records_with_a_helper_are_those_of_one_thread() {
    let mut by_helper = 0;
    let mut files = 0;
    for path in captures() {
        let expected = alone(&path);
        for writes in [false, true] {
            let (got, stats) = helped(&path, writes, false);
            assert_eq!(
                got.len(),
                expected.len(),
                "{} writes {writes}",
                path.display()
            );
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g, e, "{} writes {writes}", path.display());
            }
            by_helper += stats.by_helper;
        }
        // No helper running: everything is taken back, nothing waits for ever.
        let (got, stats) = helped(&path, false, true);
        assert_eq!(got, expected, "{} with a late helper", path.display());
        assert_eq!(stats.by_helper, 0, "{}", path.display());
        files += 1;
    }
    assert!(files >= 40, "{files} captures");
    // Timing decides who decodes what; over all the captures the helper did some.
    assert!(by_helper > 0, "the helper decoded nothing");
}

#[test]
fn steps_stay_within_their_bound_when_packets_bring_no_body() {
    // A request (its step waits for the helper), then 100,000 segments of a JSON
    // text that never ends: each is a packet whose recount is deferred behind it.
    let dir = std::env::temp_dir().join(format!("ecr-pipeline-steps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let request = dir.join("request.pcap");
    let stream = dir.join("stream.pcap");
    std::fs::write(&request, ecr_capture::craft::pipelined_unanswered(1, 40)).unwrap();
    let text =
        ecr_capture::craft::text_stream(ecr_capture::craft::TextShape::OpenJson, 1_000_000, 10);
    std::fs::write(&stream, text).unwrap();
    let expected = {
        let mut records = vec![];
        let mut sink = |r: Record| records.push(r);
        let mut a = Analyzer::new(Config::default(), keys(), &mut sink);
        read(&mut a, &request);
        read(&mut a, &stream);
        a.finish(0, vec![]);
        records
    };
    let (feeder, helper) = pipeline::channel(keys(), false);
    let mut records = vec![];
    let stats = std::thread::scope(|scope| {
        let t = scope.spawn(move || helper.run(&mut |_: Record| {}));
        let mut sink = |r: Record| records.push(r);
        let mut a = Analyzer::new(Config::default(), keys(), &mut sink);
        a.decode_with(feeder);
        read(&mut a, &request);
        read(&mut a, &stream);
        let stats = a.pipeline_stats().unwrap();
        a.finish(0, vec![]);
        t.join().unwrap();
        stats
    });
    assert_eq!(records, expected);
    assert!(
        stats.peak_steps <= ecr_capture::analyzer::MAX_DEFERRED_STEPS + 1,
        "{stats:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
