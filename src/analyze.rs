//! `ecr-sniff analyze`: capture files through the analyzer, records to stdout.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use ecr_capture::analyzer::Config;

use crate::options::{
    config, exit_for, load_keys, load_tls_keylog, FailOn, KeyArgs, OutputArgs, PortArgs, TlsArgs,
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
}

/// Runs `ecr-sniff analyze`.
pub fn run(a: AnalyzeArgs) -> Result<ExitCode> {
    let keys = load_keys(&a.keys)?;
    let tls_keylog = load_tls_keylog(&a.tls)?;
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
    let mut sink = WriterSink::new(a.output.writer(out));
    let cfg = Config {
        usb_device: a.usb_device,
        tls_keylog,
        ..config(&a.ports)
    };
    let (_, max) = analyze_files(&a.files, cfg, keys, &mut sink, true)?;
    sink.finish().context("writing output")?;
    io::stdout().flush().ok();
    Ok(exit_for(max, a.fail_on))
}
