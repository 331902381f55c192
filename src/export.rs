//! `ecr-sniff export`: any capture (USB, serial D9, TCP, HTTP) rewritten as one
//! packet per reassembled message in the project's serial capture format
//! (docs/protocol.md D9), so it can be browsed message by message in Wireshark with the
//! project's dissector.
//!
//! What each message becomes:
//! - A message that came in frames (serial, USB, TCP 9002 frames) keeps its frame type
//!   and ref; a split message becomes one frame holding the whole data (one packet),
//!   acks and error frames stay as they were.
//! - A message without frames (an HTTP body, a TCP 9002 text message) is wrapped in a
//!   single 0x10 frame, the way the serial link carries business requests and results
//!   (D2); requests take refs 1, 2, .. per conversation and a response the ref of the
//!   request before it. No acks are invented.
//! - Each conversation (serial link, USB device, TCP connection pair) gets its own
//!   pcapng interface named after it, so the links stay apart.
//! - A message longer than one frame can carry (65524 data bytes, only possible over
//!   HTTP/TCP) is split into 1024-byte fragments, one packet per frame.
//!
//! `--decrypt` replaces encrypted data with its decrypted text: an envelope-encrypted
//! body or an encrypted response by the decrypted text as it was, a content-encrypted
//! request by `{"content":<decrypted JSON>,"digest":"<digest as sent>"}`. The digest
//! then no longer verifies (it was over the ciphertext or with the key), but a
//! Wireshark without the key can read every field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use ecr_capture::analyzer::Analyzer;
use ecr_capture::keys::KeySet;
use ecr_capture::record::{Direction as MsgDirection, MessageRecord, Record, Role};
use ecr_capture::serialcap::{DIR_ECR_TO_POS, DIR_POS_TO_ECR, LINKTYPE_SERIAL};
use ecr_capture::source::{Direction, PcapngWriter};
use ecr_proto::cipher::KeyRing;
use ecr_proto::envelope::{self, Message, RequestDialect};
use ecr_proto::frame::{FrameRepr, FrameType, MAX_FRAGMENT_DATA, OVERHEAD};
use ecr_proto::value::CompactString;
use ecr_proto::Timestamp;

use crate::options::{KeyArgs, PortArgs, TlsArgs};

const AFTER: &str = "\
Every reassembled message becomes one packet in the serial capture format (pcapng,
link type 147, docs/protocol.md D9), one interface per link or connection. Messages that
came over HTTP or TCP text are wrapped in a 0x10 frame. Open the result in Wireshark
with the project's dissector (dissector/ecr.lua).

Examples:
  ecr-sniff export usb.pcap messages.pcapng
  ecr-sniff export shop.pcapng clear.pcapng --decrypt --key-file keys.txt
  ecr-sniff export https.pcapng clear.pcapng --tls-keylog sslkeys.log --key-file keys.txt
  wireshark -X lua_script:dissector/ecr.lua clear.pcapng";

/// Arguments of `ecr-sniff export`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER)]
pub struct ExportArgs {
    /// The capture to read: pcap or pcapng (USB, serial D9, Ethernet/SLL with TCP and
    /// HTTP), optionally gzip-compressed; `-` reads it from standard input.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The pcapng file to write (overwritten).
    #[arg(value_name = "OUT.pcapng")]
    pub output: PathBuf,
    /// Replace encrypted data with its decrypted text, so that a Wireshark without
    /// the key can read it (needs --key, --key-file or ECR_POS_KEY).
    #[arg(long)]
    pub decrypt: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub ports: PortArgs,
    /// USB captures: export only this device (BUS:DEV, e.g. 1:5).
    #[arg(long = "usb-device", value_name = "BUS:DEV")]
    pub usb_device: Option<ecr_capture::usb::DeviceId>,
}

/// Counts for the closing line.
#[derive(Default)]
struct Tally {
    messages: u64,
    packets: u64,
    decrypted: u64,
    wrapped: u64,
}

/// The writer and the per-conversation state the message hook needs.
struct Exporter<W: Write> {
    out: PcapngWriter<W>,
    /// (ECR label, POS label) to interface number.
    links: HashMap<(CompactString, CompactString), u32>,
    /// Last ref used per interface, for wrapped (frameless) messages.
    refs: HashMap<u32, u8>,
    decrypt: bool,
    ring: KeyRing,
    tally: Tally,
    error: Option<io::Error>,
    scratch: Vec<u8>,
}

impl<W: Write> Exporter<W> {
    fn message(&mut self, m: &MessageRecord, body: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.write_message(m, body) {
            self.error = Some(e);
        }
    }

    fn write_message(&mut self, m: &MessageRecord, body: &[u8]) -> io::Result<()> {
        let from_ecr = m.direction == MsgDirection::EcrToPos;
        let key = if from_ecr {
            (m.src.clone(), m.dst.clone())
        } else {
            (m.dst.clone(), m.src.clone())
        };
        let iface = match self.links.get(&key) {
            Some(&i) => i,
            None => {
                let name = format!("{} <-> {}", key.0, key.1);
                let i = self.out.add_interface(LINKTYPE_SERIAL, 0, Some(&name))?;
                self.links.insert(key, i);
                i
            }
        };
        let (frame_type, ref_num) = match (&m.frame, m.ref_num) {
            (Some(f), Some(r)) => (FrameType(f.frame_type), r),
            _ => {
                self.tally.wrapped += 1;
                let last = self.refs.get(&iface).copied().unwrap_or(0);
                let r = if m.role == Role::Response && last != 0 {
                    last
                } else {
                    last % 0x7f + 1
                };
                self.refs.insert(iface, r);
                (FrameType::REQUEST, r)
            }
        };
        let data = match self.decrypt.then(|| decrypted(body, &self.ring)).flatten() {
            Some(d) => {
                self.tally.decrypted += 1;
                d
            }
            None => body.to_vec(),
        };
        let ts = seconds_to_ts(m.ts);
        let dir = if from_ecr {
            DIR_ECR_TO_POS
        } else {
            DIR_POS_TO_ECR
        };
        let flags = if from_ecr {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        let max_one = usize::from(u16::MAX) - OVERHEAD;
        let total = u16::try_from(data.len()).ok();
        let pieces: Vec<&[u8]> = match total {
            Some(_) if data.len() <= max_one => vec![&data[..]],
            Some(_) => data.chunks(MAX_FRAGMENT_DATA).collect(),
            None => {
                eprintln!(
                    "ecr-sniff: warning: message {} ({} bytes) is longer than a frame's 16-bit data length can say; left out",
                    m.index,
                    data.len()
                );
                return Ok(());
            }
        };
        for piece in pieces {
            let frame = FrameRepr {
                frame_type,
                ref_num,
                data_len: total.unwrap_or(0),
                data: piece,
            }
            .to_bytes()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.scratch.clear();
            self.scratch.push(dir);
            self.scratch.extend_from_slice(&frame);
            let len = u32::try_from(self.scratch.len()).unwrap_or(u32::MAX);
            self.out
                .write_packet(iface, ts, &self.scratch, len, Some(flags))?;
            self.tally.packets += 1;
        }
        self.tally.messages += 1;
        Ok(())
    }
}

/// The decrypted text to put in place of an encrypted body, if it decrypts.
fn decrypted(body: &[u8], ring: &KeyRing) -> Option<Vec<u8>> {
    match envelope::parse(body, ring).ok()? {
        Message::Request(r) => {
            let plain = r.plaintext?;
            match r.dialect {
                RequestDialect::ContentEncrypted => {
                    let mut s = String::from("{\"content\":");
                    s.push_str(&plain);
                    s.push_str(",\"digest\":");
                    ecr_proto::value::write_json_string(r.digest.as_deref().unwrap_or(""), &mut s);
                    s.push('}');
                    Some(s.into_bytes())
                }
                _ => Some(plain.into_bytes()),
            }
        }
        Message::Response(r) => r.plaintext.map(String::into_bytes),
    }
}

fn seconds_to_ts(s: f64) -> Timestamp {
    if !s.is_finite() || s <= 0.0 {
        return Timestamp::default();
    }
    let secs = s.floor();
    let nanos = ((s - secs) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    Timestamp::from_parts(secs as i64, nanos)
}

pub fn run(a: ExportArgs) -> Result<ExitCode> {
    let mut keys: KeySet = crate::options::load_keys(&a.keys)?;
    if a.decrypt && keys.is_empty() {
        bail!("--decrypt needs a POS-KEY (--key, --key-file or ECR_POS_KEY)");
    }
    let ring = keys.for_terminal(None).0.clone();
    let mut reader = crate::open_capture(&a.input)?;
    let file =
        File::create(&a.output).with_context(|| format!("cannot create {}", a.output.display()))?;
    let exporter = RefCell::new(Exporter {
        out: PcapngWriter::new(BufWriter::new(file))
            .with_context(|| format!("writing {}", a.output.display()))?,
        links: HashMap::new(),
        refs: HashMap::new(),
        decrypt: a.decrypt,
        ring,
        tally: Tally::default(),
        error: None,
        scratch: Vec::new(),
    });
    let cfg = crate::options::capture_config(&a.ports, &a.tls, a.usb_device)?;
    let mut findings = 0u64;
    let mut sink = |r: Record| {
        if matches!(r, Record::Finding(_)) {
            findings += 1;
        }
    };
    {
        let mut analyzer = Analyzer::new(cfg, keys, &mut sink);
        analyzer.on_message(|m, body| exporter.borrow_mut().message(m, body));
        while let Some(next) = reader.next_packet() {
            match next {
                Ok(pkt) => analyzer.packet(&pkt),
                Err(e) => analyzer.damaged(None, e.packet(), format!("{}: {e}", a.input.display())),
            }
        }
        analyzer.finish(reader.bytes_read(), vec![a.input.display().to_string()]);
    }
    let mut ex = exporter.into_inner();
    if let Some(e) = ex.error.take() {
        return Err(anyhow!(e).context(format!("writing {}", a.output.display())));
    }
    ex.out
        .flush()
        .with_context(|| format!("writing {}", a.output.display()))?;
    let t = &ex.tally;
    eprintln!(
        "exported {} message(s) as {} packet(s) on {} link(s) to {}{}{}; {} finding(s) (run `ecr-sniff analyze` to see them)",
        t.messages,
        t.packets,
        ex.links.len(),
        a.output.display(),
        if t.wrapped > 0 {
            format!(", {} wrapped in 0x10 frames", t.wrapped)
        } else {
            String::new()
        },
        if a.decrypt {
            format!(", {} decrypted", t.decrypted)
        } else {
            String::new()
        },
        findings
    );
    Ok(ExitCode::SUCCESS)
}
