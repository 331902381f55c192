//! Decoding ahead (`analyze -j 2`, the default on two cores) on arbitrary capture
//! files: a producer analyzer with a quarter of the budget (as `analyze` gives its
//! helper) runs over the input first, then a consumer takes its decodings; the
//! consumer must write exactly the records of an analyzer on its own, whatever
//! the input and wherever the two analyzers' limits make their paths part.
//! Its corpus holds sample captures with many decodings to hand over; the
//! analyzer's crafted ones serve too:
//! `cargo +nightly fuzz run ahead fuzz/corpus/ahead fuzz/corpus/analyzer`.
#![no_main]
use ecr_capture::ahead;
use ecr_capture::analyzer::Analyzer;
use ecr_capture::limits::Limits;
use ecr_capture::record::Record;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{keys, read};

fuzz_target!(|data: &[u8]| {
    // At the smallest budget a 1 MB input can fill the tables and the two
    // analyzers part ways.
    let cfg = common::config(data);
    let budget = cfg.limits.budget;
    // As `analyze -j 2` configures its helper; at the smallest budget, where a
    // quarter is the smallest budget again, with every shared table a sixteenth,
    // so that a 1 MB input fills the helper's tables and not the consumer's.
    let mut helper_cfg = cfg.clone();
    helper_cfg.limits = Limits::from_budget(budget / 4);
    if budget == ecr_capture::limits::MIN_BUDGET {
        let l = &mut helper_cfg.limits;
        l.stream_bytes /= 16;
        l.ooo_bytes /= 16;
        l.ooo_bytes_per_dir /= 16;
        l.fragments = (l.fragments / 16).max(1);
        l.fragment_bytes /= 16;
        l.payments = (l.payments / 16).max(1);
        l.payment_bytes /= 16;
        l.latency_samples = (l.latency_samples / 16).max(1);
    }
    helper_cfg.limits.connections = cfg.limits.connections;

    let mut alone = vec![];
    {
        let mut sink = |r: Record| alone.push(r);
        let mut a = Analyzer::new(cfg.clone(), keys(), &mut sink);
        read(&mut a, data);
        let (summary, _) = a.finish(0, vec![]);
        alone.push(Record::Summary(summary));
    }

    // The producer to its end first: every body it can decode is waiting.
    let (producer, consumer) = ahead::channel_with(1 << 20, 0, usize::MAX);
    {
        let mut discard = |_: Record| {};
        let mut p = Analyzer::new(helper_cfg, keys(), &mut discard);
        p.decode_ahead_for(producer);
        read(&mut p, data);
        p.flush_ahead();
    }
    let mut with = vec![];
    {
        let mut sink = |r: Record| with.push(r);
        let mut c = Analyzer::new(cfg, keys(), &mut sink);
        c.decode_ahead(consumer);
        read(&mut c, data);
        if std::env::var_os("ECR_FUZZ_STATS").is_some() {
            // Decodings made again or wasted: where the two parted ways.
            eprintln!("{:?}", c.ahead_stats());
        }
        let (summary, _) = c.finish(0, vec![]);
        with.push(Record::Summary(summary));
    }
    assert_eq!(with.len(), alone.len());
    for (w, a) in with.iter().zip(&alone) {
        assert_eq!(w, a);
    }
});
