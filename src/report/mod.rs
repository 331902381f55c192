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
use ecr_capture::ladder::escape_controls_keep_lines;
use ecr_capture::output::{Clock, RecordWriter, TextWriter};
use ecr_capture::record::Record;

use crate::options::{capture_config, local_offset, FailOn, KeyArgs, PortArgs, TlsArgs};
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
    pub tls: TlsArgs,
    #[command(flatten)]
    pub ports: PortArgs,
    /// Show times in UTC instead of local time (each time carries its zone either way).
    #[arg(long)]
    pub utc: bool,
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
  ecr-sniff report https.pcapng --tls-keylog sslkeys.log --key-file keys.txt -o https.html
  ecr-sniff report a.pcap b.pcap -o - > both.html";

/// Runs `report`.
pub fn run(a: ReportArgs) -> Result<ExitCode> {
    let keys = crate::options::load_keys(&a.keys)?;
    let keys_given = keys.len();
    let cfg = capture_config(&a.ports, &a.tls, a.usb_device)?;
    let mut collector = Collector::default();
    let analysis = crate::analyze_files(&a.files, cfg, keys, &mut collector, true)?;
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
    let clock = if a.utc {
        Clock::Utc
    } else {
        Clock::Local(local_offset)
    };
    let page = render(&data, &title, clock);
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
    Ok(analysis.exit_code(a.fail_on))
}

/// The whole page.
pub fn render(data: &ReportData, title: &str, clock: Clock) -> String {
    html::page(data, &message_texts(data, clock), title, clock)
}

/// Each drawn message as the text output prints it (with the findings marked on
/// it), control characters escaped, at most [`MAX_TEXT_BYTES`] each.
pub fn message_texts(data: &ReportData, clock: Clock) -> BTreeMap<u64, String> {
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
            let mut w = TextWriter::new(&mut buf, false).with_clock(clock);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_capture::findings::{Code, Severity};
    use ecr_capture::record::{
        Direction, FindingRecord, MessageRecord, RawObject, Role, Sink, SummaryRecord,
        TransactionRecord, Transport,
    };
    use ecr_proto::value::{Object, Value};

    fn message(index: u64, ts: f64, role: Role, note: &str) -> MessageRecord {
        let (src, dst, direction) = match role {
            Role::Request => ("10.0.0.5:40000", "10.0.0.20:9001", Direction::EcrToPos),
            _ => ("10.0.0.20:9001", "10.0.0.5:40000", Direction::PosToEcr),
        };
        let mut content = Object::new();
        content.push("func_type", Value::Number("1001".into()));
        content.push("amt", Value::String("10.00".into()));
        content.push("note", Value::String(note.into()));
        MessageRecord {
            index,
            ts,
            transport: Transport::Http,
            src: src.into(),
            dst: dst.into(),
            direction,
            role,
            dialect: Some("plain"),
            func_type: (role == Role::Request).then_some(1001),
            ref_num: None,
            content: (role == Role::Request).then_some(RawObject::new(content)),
            response: None,
            digest: "ok",
            packet: Some(index * 3),
            func_name: (role == Role::Request).then_some("Payment"),
            respcd: (role == Role::Response).then(|| "6000".into()),
            frame: None,
            http: None,
            answer_ms: None,
            gap: None,
            framing: None,
            key: None,
            digest_value: None,
            digest_detail: None,
            bytes: 100,
            raw: None,
        }
    }

    fn finding(ts: f64, message: Option<u64>, detail: &str) -> FindingRecord {
        FindingRecord {
            ts,
            code: Code::DigestMismatch,
            severity: Severity::Error,
            transport: Some(Transport::Http),
            src: Some("10.0.0.5:40000".into()),
            dst: Some("10.0.0.20:9001".into()),
            detail: detail.into(),
            rule: Code::DigestMismatch.rule(),
            packet: None,
            message,
        }
    }

    /// The JSON of the page's data block.
    fn data_block(page: &str) -> serde_json::Value {
        let start = page
            .find(r#"<script id="report-data" type="application/json">"#)
            .expect("data block");
        let rest = &page[start..];
        let open = rest.find('>').unwrap() + 1;
        let end = rest.find("</script>").unwrap();
        serde_json::from_str(&rest[open..end]).expect("data block is JSON")
    }

    fn collect(records: Vec<Record>) -> ReportData {
        let mut c = Collector::default();
        for r in records {
            c.record(r);
        }
        c.finish(0)
    }

    #[test]
    fn hostile_strings_are_escaped_and_survive_in_the_data() {
        let note = "</script><script>alert(1)</script>\u{1b}[2J<img src=x onerror=alert(2)>";
        let mut req = message(1, 1_800_000_000.0, Role::Request, note);
        req.src = "10.0.0.5:40000".into();
        let resp = message(2, 1_800_000_000.3, Role::Response, "");
        let records = vec![
            Record::Message(Box::new(req)),
            Record::Finding(finding(1_800_000_000.0, Some(1), note)),
            Record::Message(Box::new(resp)),
            Record::Summary(SummaryRecord {
                messages: 2,
                ..SummaryRecord::default()
            }),
        ];
        let data = collect(records);
        let page = render(&data, "t <b>x</b>", Clock::Utc);
        assert!(!page.contains("<script>alert"), "raw script in page");
        assert!(!page.contains("<img src=x"), "raw img in page");
        assert!(!page.contains("<b>x</b>"), "title not escaped");
        assert!(!page.contains('\u{1b}'), "escape character in page");
        // Exactly our own three script elements.
        assert_eq!(page.matches("<script").count(), 3);
        let v = data_block(&page);
        assert_eq!(v["messages"][0]["content"]["note"], note);
        assert_eq!(v["findings"][0]["detail"], note);
        assert_eq!(v["findings"][0]["arrow"], 1);
    }

    #[test]
    fn ten_thousand_messages_are_summarised_within_bounds() {
        let mut records = vec![];
        let t0 = 1_800_000_000.0;
        for i in 0..5000u64 {
            let ts = t0 + i as f64 * 0.5;
            records.push(Record::Message(Box::new(message(
                2 * i + 1,
                ts,
                Role::Request,
                "n",
            ))));
            if i % 10 == 0 {
                records.push(Record::Finding(finding(ts, Some(2 * i + 1), "bad digest")));
            }
            records.push(Record::Message(Box::new(message(
                2 * i + 2,
                ts + 0.2,
                Role::Response,
                "",
            ))));
            records.push(Record::Transaction(TransactionRecord {
                ts,
                transport: Transport::Http,
                func_type: Some(1001),
                latency_ms: 150.0 + (i % 100) as f64,
                respcd: Some("6000".into()),
                out_trade_no: None,
                src: "10.0.0.5".into(),
                dst: "10.0.0.20:9001".into(),
                func_name: Some("Payment"),
                channel: None,
                amt: Some("10.00".into()),
                syssn: None,
                request: Some(2 * i + 1),
                response: Some(2 * i + 2),
            }));
        }
        records.push(Record::Summary(SummaryRecord {
            messages: 10_000,
            transactions: 5000,
            ..SummaryRecord::default()
        }));
        let data = collect(records);
        assert_eq!(data.messages.len(), data::MAX_ARROWS);
        assert_eq!(data.links.len(), 1);
        assert_eq!(data.links[0].messages, 10_000);
        assert_eq!(data.transactions.len(), 5000);
        assert_eq!(data.latency.len(), data::MAX_CHART_POINTS);
        assert_eq!(data.histogram.iter().map(|b| b.count).sum::<u64>(), 5000);
        assert!(
            data.truncated
                .iter()
                .any(|t| t.contains("first 2000 of 10000 messages")),
            "{:?}",
            data.truncated
        );
        let page = render(&data, "big", Clock::Utc);
        assert_eq!(page.matches("<g class=\"arrow").count(), data::MAX_ARROWS);
        assert!(page.contains("Summarised: The ladders show the first 2000 of 10000"));
        assert!(
            page.len() < 8 << 20,
            "page is {} bytes for 10,000 messages",
            page.len()
        );
        // The ladder: idle gaps of 0.5 s are not compressed, arrows stay apart.
        let v = data_block(&page);
        assert_eq!(
            v["links"][0]["drawn"].as_array().unwrap().len(),
            data::MAX_ARROWS
        );
    }
}
