//! `ecr-sniff analyze`: capture files through the analyzer, records to stdout.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use ecr_capture::analyzer::Config;
use ecr_capture::keys::KeySet;
use ecr_capture::record::Record;

use crate::options::{
    capture_config, exit_for, load_keys, FailOn, KeyArgs, OutputArgs, PortArgs, TlsArgs,
};
use crate::{analyze_files, is_stdin, WriterSink};

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Capture files: pcap or pcapng, optionally gzip-compressed; `-` reads one from
    /// standard input (`tcpdump -w - ... | ecr-sniff analyze -`).
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
    /// Threads to use (default 1). With 2 or more, records are rendered and written
    /// by a thread of their own while the capture is analysed, in the same order;
    /// the output is the same either way. Not yet faster: the records crossing
    /// between the cores cost about what the second core saves (README,
    /// Performance). Reading standard input always uses one thread, so that each
    /// record shows as soon as it is complete.
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
    // One thread unless asked: the writer thread did not pay on the 2-core machine
    // it was measured on (issue 15; README, Performance).
    let jobs = a.jobs.map_or(1, usize::from);
    if jobs >= 2 && !from_stdin {
        drop(out);
        return analyze_with_writer_thread(&a, cfg, keys);
    }
    let mut sink = WriterSink::new(a.output.writer(out));
    let (_, max) = analyze_files(&a.files, cfg, keys, &mut sink, true)?;
    sink.finish().context("writing output")?;
    io::stdout().flush().ok();
    Ok(exit_for(max, a.fail_on))
}

/// Records go to the writer thread in batches of this many (fewer hand-overs).
const RECORD_BATCH: usize = 256;
/// Batches in flight between the analysis and the writer thread: with the batch
/// being filled and the one being written, at most about 2,600 records are held.
const BATCHES_IN_FLIGHT: usize = 8;

/// `analyze -j N` (N >= 2): this thread reads and analyses, a second one renders
/// and writes the records. One bounded FIFO channel between them keeps the order
/// of a single thread and bounds the memory; a write error (a closed pipe) ends
/// the writer, after which records are dropped and the error is returned at the
/// end, as on one thread.
fn analyze_with_writer_thread(a: &AnalyzeArgs, cfg: Config, keys: KeySet) -> Result<ExitCode> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(BATCHES_IN_FLIGHT);
    // Written batches go back to be dropped where their records were allocated:
    // freeing on the other thread cost more than the writing saved.
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(BATCHES_IN_FLIGHT);
    let output = &a.output;
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let out: Box<dyn Write> =
                Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()));
            let mut writer = output.writer(out);
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
        let analysed = analyze_files(&a.files, cfg, keys, &mut sink, true);
        sink.flush();
        // Closing the channel ends the writer's loop.
        drop(sink);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the output thread failed")));
        let (_, max) = analysed?;
        written.context("writing output")?;
        io::stdout().flush().ok();
        Ok(exit_for(max, a.fail_on))
    })
}

/// The analysis side of [`analyze_with_writer_thread`].
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
