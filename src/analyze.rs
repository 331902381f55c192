//! `ecr-sniff analyze`: capture files through the analyzer, records to stdout.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use ecr_capture::ahead::Consumer;
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::KeySet;
use ecr_capture::limits::Limits;
use ecr_capture::record::Record;

use crate::options::{
    capture_config, default_jobs, load_keys, FailOn, KeyArgs, OutputArgs, PortArgs, TlsArgs,
};
use crate::{analyze_files, analyze_files_with, is_stdin, open_capture, WriterSink};

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
    /// Threads to use (default: the cores this process may use). With 2, a second
    /// thread reads the files too and decodes the message bodies ahead of the
    /// first, which takes those decodings instead of making them
    /// (docs/architecture.md); with 3 or more, records are also rendered and
    /// written on a thread of their own. The output is the same with any number.
    /// Two threads were 1.3-1.4x as fast as one on an idle 2-core machine (the
    /// dense benchmark) for about 1.45 times the CPU time, and no faster on a busy
    /// one: -j 1 leaves the other cores alone. The second thread's tables (a
    /// quarter of --memory-limit, and a connection table as large as the first's)
    /// add memory; with the default budget the process still stays under 64 MB
    /// (README, Memory limits). Reading standard input always uses one thread, so
    /// that each record shows as soon as it is complete.
    #[arg(short = 'j', long = "jobs", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
}

/// Runs `ecr-sniff analyze`.
pub fn run(a: AnalyzeArgs) -> Result<ExitCode> {
    let keys = load_keys(&a.keys)?;
    let cfg = capture_config(&a.ports, &a.tls, a.usb_device)?;
    let from_stdin = a.files.iter().any(|f| is_stdin(f));
    let out: Box<dyn Write> = if from_stdin {
        // A pipe from a live capture (`tcpdump -w - | ecr-sniff analyze -`): each
        // record shows as it completes, and Ctrl-C, which also stops tcpdump, lets
        // this end at the pipe's end with the summary (a second Ctrl-C exits at once).
        ecr_tap::stop::on_signals().context("installing the Ctrl-C handler")?;
        Box::new(io::stdout())
    } else {
        Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()))
    };
    // The cores by default (issue 15): the output does not depend on it, and the
    // process stays under the default memory promise either way (README, Memory
    // limits).
    let jobs = a.jobs.map_or_else(default_jobs, usize::from);
    if jobs == 1 || from_stdin {
        let writer = if from_stdin {
            a.output.writer(out)
        } else {
            a.output.file_writer(out)
        };
        let mut sink = WriterSink::new(writer);
        let analysis = analyze_files(&a.files, cfg, keys, &mut sink, true)?;
        sink.finish().context("writing output")?;
        io::stdout().flush().ok();
        return Ok(analysis.exit_code(a.fail_on));
    }
    with_decode_ahead(&a, cfg, keys, out, jobs >= 3)
}

/// `analyze -j N` (N >= 2) on files: a second analyzer reads the same files on
/// another thread and decodes the message bodies ahead of this one, which takes
/// each decoding when it is there and decodes the body itself when it is not (see
/// `ecr_capture::ahead`: the output is the same as on one thread by construction).
/// With `writer_thread` (N >= 3), records are also rendered and written on a
/// third thread.
fn with_decode_ahead(
    a: &AnalyzeArgs,
    cfg: Config,
    keys: KeySet,
    out: Box<dyn Write>,
    writer_thread: bool,
) -> Result<ExitCode> {
    let files = &a.files;
    if writer_thread {
        drop(out);
        return decoding_ahead(files, cfg.clone(), keys.clone(), |consumer| {
            let setup = |an: &mut Analyzer<'_>| an.decode_ahead(consumer);
            with_writer_thread(a, cfg, keys, setup, ahead_stats)
        });
    }
    let mut sink = WriterSink::new(a.output.file_writer(out));
    let analysis = analyze_files_ahead(files, cfg, keys, &mut sink, true)?;
    sink.finish().context("writing output")?;
    io::stdout().flush().ok();
    Ok(analysis.exit_code(a.fail_on))
}

/// [`analyze_files`] with a helper thread decoding the bodies of `files` ahead
/// (`analyze -j 2`, and `check` with threads to spare): the same analysis and
/// records, and with `ECR_SNIFF_AHEAD_STATS` set, how the work was shared.
pub(crate) fn analyze_files_ahead(
    files: &[PathBuf],
    cfg: Config,
    keys: KeySet,
    sink: &mut dyn ecr_capture::record::Sink,
    progress: bool,
) -> Result<crate::Analysis> {
    decoding_ahead(files, cfg.clone(), keys.clone(), |consumer| {
        let setup = |an: &mut Analyzer<'_>| an.decode_ahead(consumer);
        analyze_files_with(files, cfg, keys, sink, progress, setup, ahead_stats)
    })
}

/// Runs `run` while a helper thread decodes the message bodies of `files` ahead
/// (see `ecr_capture::ahead`) with the same configuration and keys as `run`'s
/// analyzer (given here as copies for the helper's own). `run` gives the consumer
/// end to the analyzer it runs over the same files (`Analyzer::decode_ahead`,
/// before the first packet); the helper stops when that analyzer is done with the
/// consumer (it is dropped).
fn decoding_ahead<R>(
    files: &[PathBuf],
    helper_cfg: Config,
    helper_keys: KeySet,
    run: impl FnOnce(Consumer) -> R,
) -> R {
    // The helper's tables get a quarter of the budget: where they evict what the
    // consumer's keep, the two part ways and the consumer decodes alone (slower,
    // never different), so the output does not depend on it. Except the table of
    // connections, which keeps the consumer's size: with more connections open
    // than a quarter holds (4096 concurrent ones) the helper would evict each one
    // before its answer and decode nothing the consumer can take.
    let mut helper_cfg = helper_cfg;
    let connections = helper_cfg.limits.connections;
    helper_cfg.limits = Limits::from_budget(helper_cfg.limits.budget / 4);
    helper_cfg.limits.connections = connections;
    let (producer, consumer) = ecr_capture::ahead::channel();
    let gone = producer.gone_flag();
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("decode-ahead".into())
            .spawn_scoped(scope, move || {
                let mut discard = |_: Record| {};
                let mut analyzer = Analyzer::new(helper_cfg, helper_keys, &mut discard);
                analyzer.decode_ahead_for(producer);
                for path in files {
                    // A file that does not open is reported by the other analyzer.
                    let Ok(mut reader) = open_capture(path) else {
                        continue;
                    };
                    analyzer.read_capture(&mut reader, "", |_| !gone.is_set());
                    if !analyzer.flush_ahead() {
                        break;
                    }
                }
                if std::env::var_os("ECR_SNIFF_AHEAD_STATS").is_some() {
                    eprintln!(
                        "decode-ahead: the helper thread's CPU time {:.3} s",
                        thread_cpu_seconds()
                    );
                }
            });
        // Without the helper (no thread could be made), `run` decodes alone.
        let result = run(consumer);
        if let Ok(h) = helper {
            let _ = h.join();
        }
        result
    })
}

/// With `ECR_SNIFF_AHEAD_STATS` set (README, Performance): how the work was shared,
/// on standard error.
fn ahead_stats(an: &Analyzer<'_>) {
    if let (Some(s), Some(_)) = (an.ahead_stats(), std::env::var_os("ECR_SNIFF_AHEAD_STATS")) {
        eprintln!(
            "decode-ahead: {} bodies decoded ahead and taken, {} decoded here, {} decoded ahead in vain; this thread's CPU time {:.3} s",
            s.taken, s.own, s.wasted, thread_cpu_seconds()
        );
    }
}

/// Records go to the writer thread in batches of this many (fewer hand-overs).
const RECORD_BATCH: usize = 256;
/// Batches in flight between the analysis and the writer thread: with the batch
/// being filled and the one being written, at most about 2,600 records are held.
const BATCHES_IN_FLIGHT: usize = 8;

/// `analyze -j N` (N >= 3): this thread reads and analyses, another one renders
/// and writes the records. One bounded FIFO channel between them keeps the order
/// of a single thread and bounds the memory; a write error (a closed pipe) ends
/// the writer, after which records are dropped and the error is returned at the
/// end, as on one thread.
fn with_writer_thread(
    a: &AnalyzeArgs,
    cfg: Config,
    keys: KeySet,
    setup: impl FnOnce(&mut Analyzer<'_>),
    at_end: impl FnOnce(&Analyzer<'_>),
) -> Result<ExitCode> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(BATCHES_IN_FLIGHT);
    // Written batches go back to be dropped where their records were allocated:
    // freeing on the other thread cost more than the writing saved.
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(BATCHES_IN_FLIGHT);
    let output = &a.output;
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let out: Box<dyn Write> =
                Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()));
            let mut writer = output.file_writer(out);
            let mut result = Ok(());
            for batch in rx {
                for record in &batch {
                    result = writer.write(record);
                    if result.is_err() {
                        break;
                    }
                }
                if result.is_err() {
                    break;
                }
                // When the analysis thread is behind in taking them back, drop here.
                let _ = back_tx.try_send(batch);
            }
            result.and_then(|()| writer.finish())
        });
        let mut sink = ChannelSink {
            tx: Some(tx),
            back: back_rx,
            batch: Vec::with_capacity(RECORD_BATCH),
        };
        let analysed = analyze_files_with(&a.files, cfg, keys, &mut sink, true, setup, at_end);
        sink.flush();
        // Closing the channel ends the writer's loop.
        drop(sink);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the output thread failed")));
        let analysis = analysed?;
        written.context("writing output")?;
        io::stdout().flush().ok();
        Ok(analysis.exit_code(a.fail_on))
    })
}

/// The analysis side of [`with_writer_thread`].
struct ChannelSink {
    /// `None` once the writer has gone (after a write error).
    tx: Option<std::sync::mpsc::SyncSender<Vec<Record>>>,
    /// Batches written, to be dropped here; their vectors are reused.
    back: std::sync::mpsc::Receiver<Vec<Record>>,
    batch: Vec<Record>,
}

impl ChannelSink {
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut next = None;
        while let Ok(mut done) = self.back.try_recv() {
            done.clear();
            next = Some(done);
        }
        let next = next.unwrap_or_else(|| Vec::with_capacity(RECORD_BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        if let Some(tx) = &self.tx {
            if tx.send(batch).is_err() {
                self.tx = None;
            }
        }
    }
}

impl ecr_capture::record::Sink for ChannelSink {
    fn record(&mut self, record: Record) {
        if self.tx.is_none() {
            return;
        }
        self.batch.push(record);
        if self.batch.len() >= RECORD_BATCH {
            self.flush();
        }
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
