//! The helper thread (`analyze -j 2`, the default on two cores) on arbitrary
//! capture files: an analyzer that hands its bodies to a helper thread, which
//! decodes them and writes the records, must give exactly the records of an
//! analyzer on its own, whatever the input and whatever its limits evict while
//! steps are deferred (the smallest budget for inputs of odd length), and keep the
//! deferred steps within their bound.
//! Its corpus holds sample captures with many bodies; the analyzer's crafted ones
//! serve too: `cargo +nightly fuzz run pipeline fuzz/corpus/pipeline fuzz/corpus/analyzer`.
#![no_main]
use ecr_capture::analyzer::Analyzer;
use ecr_capture::pipeline;
use ecr_capture::record::Record;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{keys, read};

fuzz_target!(|data: &[u8]| {
    let cfg = common::config(data);

    let mut alone = vec![];
    {
        let mut sink = |r: Record| alone.push(r);
        let mut a = Analyzer::new(cfg.clone(), keys(), &mut sink);
        read(&mut a, data);
        a.finish(0, vec![]);
    }

    let (feeder, helper) = pipeline::channel(keys(), true);
    let with = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut out = vec![];
            helper.run(&mut |r: Record| out.push(r));
            out
        });
        let mut none = |_: Record| panic!("a record written by the analyzer's thread");
        let mut a = Analyzer::new(cfg, keys(), &mut none);
        a.decode_with(feeder);
        read(&mut a, data);
        let stats = a.pipeline_stats();
        if std::env::var_os("ECR_FUZZ_STATS").is_some() {
            eprintln!("{stats:?}");
        }
        // The deferred steps stay within their bound whatever the input.
        if let Some(s) = stats {
            assert!(s.peak_steps <= ecr_capture::analyzer::MAX_DEFERRED_STEPS + 1);
        }
        a.finish(0, vec![]);
        writer.join().unwrap()
    });
    assert_eq!(with.len(), alone.len());
    for (w, a) in with.iter().zip(&alone) {
        assert_eq!(w, a);
    }
});
