//! The two halves of `analyze -j 2` (decoding ahead, `ecr_capture::ahead`) run one
//! after the other on one thread, so that a deterministic profiler can count what
//! each costs: the producer over the whole capture first (it decodes every body),
//! then the consumer taking every decoding, writing JSON Lines to nowhere as
//! `analyze --format jsonl` would. With `alone`, one analyzer as `-j 1` runs it.
//!
//! ```text
//! cargo build --profile profiling -p ecr-capture --example ahead_split
//! B=target/profiling/examples/ahead_split
//! valgrind --tool=callgrind $B dense.pcap dense.pcap.keys alone
//! valgrind --tool=callgrind --toggle-collect='ahead_split::producer' $B dense.pcap dense.pcap.keys
//! valgrind --tool=callgrind --toggle-collect='ahead_split::consumer' $B dense.pcap dense.pcap.keys
//! ```
//!
//! (`dense.pcap` and its key file from `cargo run --release -p ecr-emu --example
//! dense_capture -- --size-mb 4 dense.pcap`.) The consumer's count is the least
//! the first thread of `-j 2` can do; the producer's, what the second does if it
//! decodes everything. docs/architecture.md ("Two cores") has the figures.

use std::path::Path;
use std::process::ExitCode;

use ecr_capture::ahead;
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::KeySet;
use ecr_capture::output::{writer, Format};
use ecr_capture::record::Record;
use ecr_capture::source::CaptureReader;

fn read(a: &mut Analyzer<'_>, capture: &Path) -> Result<(), String> {
    let mut reader =
        CaptureReader::open(capture).map_err(|e| format!("{}: {e}", capture.display()))?;
    a.read_capture(&mut reader, "capture", |_| true);
    Ok(())
}

#[inline(never)]
fn producer(capture: &Path, keys: KeySet, to: ahead::Producer) -> Result<(), String> {
    let mut discard = |_: Record| {};
    let mut p = Analyzer::new(Config::default(), keys, &mut discard);
    p.decode_ahead_for(to);
    read(&mut p, capture)?;
    p.flush_ahead();
    Ok(())
}

#[inline(never)]
fn consumer(capture: &Path, keys: KeySet, from: Option<ahead::Consumer>) -> Result<(), String> {
    let mut out = writer(Format::Jsonl, std::io::sink(), false);
    let mut sink = |r: Record| {
        let _ = out.write(&r);
    };
    let mut c = Analyzer::new(Config::default(), keys, &mut sink);
    let ahead = from.is_some();
    if let Some(from) = from {
        c.decode_ahead(from);
    }
    read(&mut c, capture)?;
    if ahead {
        if let Some(s) = c.ahead_stats() {
            eprintln!("decodings taken {}, made again {}", s.taken, s.own);
        }
    }
    let _ = c.finish(0, vec![]);
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    let [capture, key_file, rest @ ..] = args else {
        return Err("usage: ahead_split CAPTURE KEY_FILE [alone]".into());
    };
    let text = std::fs::read_to_string(key_file).map_err(|e| format!("{key_file}: {e}"))?;
    let mut keys = KeySet::new();
    keys.add_file_text(&text)
        .map_err(|e| format!("{key_file}: {e}"))?;
    let capture = Path::new(capture);
    if rest.first().map(String::as_str) == Some("alone") {
        return consumer(capture, keys, None);
    }
    // Room for every decoding of a few megabytes of capture: the producer runs
    // to its end before the consumer starts.
    let (to, from) = ahead::channel_with(1 << 16, 0, usize::MAX);
    producer(capture, keys.clone(), to)?;
    consumer(capture, keys, Some(from))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ahead_split: {e}");
            ExitCode::FAILURE
        }
    }
}
