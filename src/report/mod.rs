//! `ecr-sniff report`: one self-contained HTML file with a ladder diagram per link,
//! the transactions, latency charts and the findings. The data are the analyzer's
//! records ([`data`]); the page is built with maud ([`html`]), which escapes every
//! string it is given.

pub mod data;
mod html;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use ecr_capture::analyzer::Config;
use ecr_capture::ladder::escape_controls_keep_lines;
use ecr_capture::output::{RecordWriter, TextWriter};
use ecr_capture::record::Record;

use crate::cli::{FailOn, KeyArgs, PortArgs};
use data::{Collector, ReportData, MAX_TEXT_BYTES};

/// `report` arguments: the inputs and keys of `analyze`, and where to write.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Capture files: pcap or pcapng (network or USB), optionally gzip-compressed;
    /// several are read in order as one capture.
    #[arg(required = true, value_name = "CAPTURE")]
    pub files: Vec<PathBuf>,
    /// Where to write the report (`-` for standard output).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "report.html"
    )]
    pub output: PathBuf,
    /// The page title (default: the capture file names).
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub ports: PortArgs,
    /// USB captures: report only this device (BUS:DEV), as `analyze --usb-device`.
    #[arg(long = "usb-device", value_name = "BUS:DEV")]
    pub usb_device: Option<ecr_capture::usb::DeviceId>,
    /// Exit with status 1 when a finding of this severity or worse is found.
    #[arg(long = "fail-on", value_enum, default_value = "never")]
    pub fail_on: FailOn,
}

/// The help text after the options.
pub const AFTER_HELP: &str = "\
The report is one HTML file with everything inline (no network access, no CDN); it
opens offline in any browser. It shows per link (an ECR/terminal address pair, a USB
device, a serial tap) a ladder diagram: one arrow per request, response, ack, error
frame and fragment at its capture time, long idle stretches compressed, the 1000 ms ack
rule and the 500 ms fragment rule drawn where they are broken, findings in their
severity's colour. Click an arrow to read the message as `analyze` prints it. Below
are the transactions (sortable, filterable), latency charts and the findings.

Big captures are summarised: the ladders draw the first 2000 messages, the tables
list the first 5000 transactions and 2000 findings; the header says what was left
out. Keys are never written into the report, only their numbers.

Examples:
  ecr-sniff report shop.pcapng --key-file keys.txt -o shop.html
  ecr-sniff report usb.pcap --usb-device 1:5 -o usb.html
  ecr-sniff report a.pcap b.pcap -o - > both.html";

/// Runs `report`.
pub fn run(a: ReportArgs) -> Result<ExitCode> {
    let keys = crate::load_keys(&a.keys)?;
    let keys_given = keys.len();
    let cfg = Config {
        usb_device: a.usb_device,
        ..crate::config(&a.ports)
    };
    let mut collector = Collector::default();
    let (_, max) = crate::analyze_files(&a.files, cfg, keys, &mut collector, true)?;
    let data = collector.finish(keys_given);
    let title = a.title.clone().unwrap_or_else(|| {
        let names: Vec<String> = a
            .files
            .iter()
            .map(|p| {
                p.file_name().map_or_else(
                    || p.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            })
            .collect();
        format!("ECR report: {}", names.join(", "))
    });
    let page = render(&data, &title);
    if a.output.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(page.as_bytes())
            .context("writing the report")?;
        out.flush().context("writing the report")?;
    } else {
        std::fs::write(&a.output, page.as_bytes())
            .with_context(|| format!("cannot write {}", a.output.display()))?;
        eprintln!(
            "ecr-sniff: wrote {} ({} messages, {} transactions, {} findings)",
            a.output.display(),
            data.header.messages,
            data.header.transactions,
            data.header.findings.values().sum::<u64>()
        );
    }
    Ok(crate::exit_for(max, a.fail_on))
}

/// The whole page.
pub fn render(data: &ReportData, title: &str) -> String {
    html::page(data, &message_texts(data), title)
}

/// Each drawn message as the text output prints it (with the findings marked on
/// it), control characters escaped, at most [`MAX_TEXT_BYTES`] each.
pub fn message_texts(data: &ReportData) -> BTreeMap<u64, String> {
    let mut on: BTreeMap<u64, Vec<&ecr_capture::record::FindingRecord>> = BTreeMap::new();
    for f in &data.findings {
        if let Some(a) = f.arrow {
            on.entry(a).or_default().push(&f.record);
        }
    }
    let mut out = BTreeMap::new();
    for m in &data.messages {
        let mut buf = vec![];
        {
            let mut w = TextWriter::new(&mut buf, false);
            let _ = w.write(&Record::Message(Box::new(m.clone())));
            for f in on.get(&m.index).into_iter().flatten() {
                let mut f = (*f).clone();
                // Shown under the message, indented, as the text output does for
                // findings about a message.
                f.message = Some(m.index);
                let _ = w.write(&Record::Finding(f));
            }
        }
        let mut text = String::from_utf8_lossy(&buf).trim().to_string();
        if text.len() > MAX_TEXT_BYTES {
            let mut cut = MAX_TEXT_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n... (cut: see `ecr-sniff analyze` for the whole message)");
        }
        out.insert(m.index, escape_controls_keep_lines(&text));
    }
    out
}
