//! `ecr-sniff analyze`: capture files through the analyzer, records to stdout.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::KeySet;
use ecr_capture::pipeline::Helper;
use ecr_capture::record::Record;

use crate::options::{
    capture_config, default_jobs, load_keys, FailOn, KeyArgs, OutputArgs, PortArgs, TlsArgs,
};
use crate::{analyze_files, analyze_files_with, is_stdin, WriterSink};

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Capture files: pcap or pcapng, optionally gzip-compressed; `-` reads one from
    /// standard input (`tcpdump -w - ... | ecr-sniff analyze -`). Several are read in
    /// order as one capture (`tcpdump -C` pieces); one that cannot be read is named
    /// on stderr and left out, and the exit status is then 2.
    #[arg(required = true, value_name = "CAPTURE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub ports: PortArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Exit with status 1 when a finding of this severity or worse is found.
    #[arg(long = "fail-on", value_enum, default_value = "never")]
    pub fail_on: FailOn,
    /// USB captures (usbmon, USBPcap): analyse only this device, given as BUS:DEV
    /// (tshark's usb.bus_id:usb.device_address, e.g. 1:5), even if it carries no
    /// frames. Without it, every device whose bulk data holds 0x2f6e frames is shown.
    #[arg(long = "usb-device", value_name = "BUS:DEV")]
    pub usb_device: Option<ecr_capture::usb::DeviceId>,
    /// Threads to use (default: the cores this process may use). With 2 or more, a
    /// helper thread decodes the message bodies and writes the records while the
    /// first reads, reassembles and frames the packets after them and keeps the
    /// analysis in order (docs/architecture.md); more than two are not used. The
    /// output is the same with any number. Two threads were about 1.7x as fast as one
    /// on an idle 2-core machine (the dense benchmark), for about 1.15 times the CPU
    /// time, and no faster on a busy one: -j 1 leaves the other cores alone.
    /// Reading standard input always uses one thread, so that each record shows as
    /// soon as it is complete.
    #[arg(short = 'j', long = "jobs", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
}

/// Runs `ecr-sniff analyze`.
pub fn run(a: AnalyzeArgs) -> Result<ExitCode> {
    let keys = load_keys(&a.keys)?;
    let cfg = capture_config(&a.ports, &a.tls, a.usb_device)?;
    let from_stdin = a.files.iter().any(|f| is_stdin(f));
    // The cores by default (issue 15): the output does not depend on it, and the
    // process stays under the default memory promise either way (README, Memory
    // limits). Standard input stays on one thread, each record shown as it comes.
    let jobs = a.jobs.map_or_else(default_jobs, usize::from);
    if jobs > 1 && !from_stdin {
        if let Some(done) = with_helper(&a, cfg.clone(), keys.clone()) {
            return done;
        }
        // No thread to be had: this one does it all.
    }
    let out: Box<dyn Write> = if from_stdin {
        // A pipe from a live capture (`tcpdump -w - | ecr-sniff analyze -`): each
        // record shows as it completes, and Ctrl-C, which also stops tcpdump, lets
        // this end at the pipe's end with the summary (a second Ctrl-C exits at once).
        ecr_tap::stop::on_signals().context("installing the Ctrl-C handler")?;
        Box::new(io::stdout())
    } else {
        Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()))
    };
    let writer = if from_stdin {
        a.output.writer(out)
    } else {
        a.output.file_writer(out)
    };
    let mut sink = WriterSink::new(writer);
    let analysis = analyze_files(&a.files, cfg, keys, &mut sink, true)?;
    sink.finish().context("writing output")?;
    io::stdout().flush().ok();
    Ok(analysis.exit_code(a.fail_on))
}

/// `analyze -j N` (N >= 2) on files: a helper thread decodes the message bodies
/// and writes the records while this one reads, reassembles, frames and keeps
/// the analysis in order (see `ecr_capture::pipeline`: the output is that of one
/// thread by construction). `None` when no thread could be started.
fn with_helper(a: &AnalyzeArgs, cfg: Config, keys: KeySet) -> Option<Result<ExitCode>> {
    let output = &a.output;
    let (analysed, written) = analyze_files_with_helper(&a.files, cfg, keys, true, |helper| {
        let out: Box<dyn Write> =
            Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()));
        let mut sink = WriterSink::new(output.file_writer(out));
        helper.run(&mut sink);
        sink.finish()
    })?;
    let done = || {
        let analysis = analysed?;
        written
            .unwrap_or_else(|_| Err(io::Error::other("the output thread failed")))
            .context("writing output")?;
        io::stdout().flush().ok();
        Ok(analysis.exit_code(a.fail_on))
    };
    Some(done())
}

/// [`analyze_files`] for its summary only (`check` with threads to spare): a
/// helper thread decodes the message bodies while this one reads on, and drops
/// the records (where most of them were made).
pub(crate) fn analyze_files_helped(
    files: &[PathBuf],
    cfg: Config,
    keys: KeySet,
    progress: bool,
) -> Result<crate::Analysis> {
    let drop_all = |helper: Helper| helper.run(&mut |_: Record| {});
    match analyze_files_with_helper(files, cfg.clone(), keys.clone(), progress, drop_all) {
        Some((analysed, _)) => analysed,
        None => analyze_files(files, cfg, keys, &mut |_: Record| {}, progress),
    }
}

/// [`analyze_files`] with a helper thread (see `ecr_capture::pipeline`) that
/// decodes the bodies and gets every record: `helper_side` runs the helper's end
/// on that thread and returns what it made of them. With `ECR_SNIFF_AHEAD_STATS`
/// set, both threads say how the work was shared. `None` when no thread could be
/// started (nothing was read then).
fn analyze_files_with_helper<T: Send>(
    files: &[PathBuf],
    cfg: Config,
    keys: KeySet,
    progress: bool,
    helper_side: impl FnOnce(Helper) -> T + Send,
) -> Option<(Result<crate::Analysis>, std::thread::Result<T>)> {
    let (feeder, helper) = ecr_capture::pipeline::channel(keys.clone(), true);
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("decode".into())
            .spawn_scoped(scope, move || {
                let made = helper_side(helper);
                if std::env::var_os("ECR_SNIFF_AHEAD_STATS").is_some() {
                    eprintln!(
                        "two threads: the helper's CPU time {:.3} s",
                        thread_cpu_seconds()
                    );
                }
                made
            })
            .ok()?;
        // Every record goes to the helper.
        let mut none = |_: Record| {};
        let setup = |an: &mut Analyzer<'_>| an.decode_with(feeder);
        let analysed =
            analyze_files_with(files, cfg, keys, &mut none, progress, setup, helper_stats);
        Some((analysed, thread.join()))
    })
}

/// With `ECR_SNIFF_AHEAD_STATS` set (README, Performance): how the work was
/// shared, on standard error.
fn helper_stats(an: &Analyzer<'_>) {
    if let (Some(s), Some(_)) = (
        an.pipeline_stats(),
        std::env::var_os("ECR_SNIFF_AHEAD_STATS"),
    ) {
        eprintln!(
            "two threads: {} bodies decoded by the helper, {} here ({} of them while the helper was busy with the one this thread needed), {} waits; this thread's CPU time {:.3} s",
            s.by_helper,
            s.taken_back + s.stolen,
            s.stolen,
            s.waits,
            thread_cpu_seconds()
        );
    }
}

/// The calling thread's CPU time so far (Linux: /proc/thread-self/schedstat), for
/// the `ECR_SNIFF_AHEAD_STATS` line; 0 where it cannot be read.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}
