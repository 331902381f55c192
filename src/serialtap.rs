//! `ecr-sniff serial --ecr PORT --pos PORT`: the serial man-in-the-middle tap. Every
//! byte from one port is written to the other at once and unchanged; the bytes are
//! decoded live by the analyzer and can be saved in the project's serial capture
//! format (docs/protocol.md D9).

use std::fs::File;
use std::io::BufWriter;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ecr_capture::analyzer::Analyzer;
use ecr_capture::serialcap::{FrameSplitter, SerialCaptureWriter};
use ecr_proto::link::Side;
use ecr_tap::relay::{EndSpec, Relay, RelayEvent};
use ecr_tap::session::{self, TapEvent};
use ecr_tap::stop;
use ecr_tap::tty::{LineSettings, Parity, Pty};

use crate::options::{exit_for, load_keys};
use crate::options::{FailOn, KeyArgs, OutputArgs};
use crate::tapout::TapOutput;

const AFTER: &str = "\
Plug the cash register's cable into one serial port and the terminal's into another;
the tap passes every byte through at once and unchanged (the 1000 ms ack rule still
holds), prints each message as it completes and, with -w, saves the traffic for
`ecr-sniff analyze` and Wireshark. When a cable is pulled the tap says so, keeps the
file valid and reopens the port when it comes back. Ctrl-C (or SIGTERM) writes the
rest of the file, prints the summary and exits 0.

When the cash register software runs on this machine and only the terminal is a
real port, --pty PATH creates a pseudo-terminal linked at PATH for it to open instead
of --ecr.

Examples:
  ecr-sniff serial --ecr /dev/ttyUSB0 --pos /dev/ttyUSB1 --key f46b1f08bec1f39104792cc79ec9aacd
  ecr-sniff serial --ecr /dev/ttyS0 --pos /dev/ttyUSB0 -w till.pcapng --format jsonl
  ecr-sniff serial --pty /tmp/ttyECR --pos /dev/ttyUSB0 --baud 115200
  ecr-sniff analyze till.pcapng --key-file keys.txt";

/// Line settings shared by `serial` and `extcap`.
#[derive(Debug, Clone, clap::Args)]
pub struct LineArgs {
    /// Line speed of both ports.
    #[arg(long, value_name = "BPS", default_value_t = 9600)]
    pub baud: u32,
    /// Data bits (5 to 8).
    #[arg(long = "data-bits", value_name = "N", default_value_t = 8)]
    pub data_bits: u8,
    /// Parity.
    #[arg(long, value_enum, default_value = "none")]
    pub parity: ParityArg,
    /// Stop bits (1 or 2).
    #[arg(long = "stop-bits", value_name = "N", default_value_t = 1)]
    pub stop_bits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ParityArg {
    /// No parity bit (the spec's setting).
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

impl LineArgs {
    /// The settings, checked.
    pub fn settings(&self) -> Result<LineSettings> {
        let s = LineSettings {
            baud: self.baud,
            data_bits: self.data_bits,
            parity: match self.parity {
                ParityArg::None => Parity::None,
                ParityArg::Even => Parity::Even,
                ParityArg::Odd => Parity::Odd,
            },
            stop_bits: self.stop_bits,
        };
        s.validate()?;
        Ok(s)
    }
}

/// Arguments of `ecr-sniff serial`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER)]
pub struct SerialArgs {
    /// The serial port the cash register is connected to.
    #[arg(long, value_name = "PORT", required_unless_present = "pty")]
    pub ecr: Option<PathBuf>,
    /// The serial port the payment terminal is connected to.
    #[arg(long, value_name = "PORT")]
    pub pos: PathBuf,
    /// Instead of --ecr: create a pseudo-terminal for the cash register software and
    /// link it at PATH (e.g. /tmp/ttyECR); point the software at PATH.
    #[arg(long, value_name = "PATH", conflicts_with = "ecr")]
    pub pty: Option<PathBuf>,
    #[command(flatten)]
    pub line: LineArgs,
    /// Also save the traffic to this pcapng file (serial capture format, link type
    /// USER0 147: one packet per frame with its direction).
    #[arg(short = 'w', long = "write", value_name = "FILE.pcapng")]
    pub write: Option<PathBuf>,
    /// Stop by itself after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Exit with status 1 when a finding of this severity or worse was seen.
    #[arg(long = "fail-on", value_enum, default_value = "never")]
    pub fail_on: FailOn,
}

/// "cash register" / "terminal", for messages.
pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Ecr => "cash register",
        Side::Pos => "terminal",
    }
}

/// Says what the relay saw, on stderr (the records go to stdout). Device names and
/// system messages are escaped for the terminal.
pub fn notice(ev: &RelayEvent) {
    let line = match ev {
        RelayEvent::Gone { side, name, reason } => format!(
            "{} port {name} is gone ({reason}); the tap goes on and reopens it when it comes back",
            side_name(*side)
        ),
        RelayEvent::Back { side, name } => {
            format!("{} port {name} is back", side_name(*side))
        }
        RelayEvent::Undelivered {
            from,
            bytes,
            reason,
        } => format!(
            "{bytes} bytes from the {} could not be passed on: {reason} (they are still decoded and saved)",
            side_name(*from)
        ),
        RelayEvent::Data { .. } => return,
    };
    eprintln!("ecr-sniff: {}", ecr_proto::text::escape_terminal(&line));
}

/// Says (at most once a second) that the decoder fell so far behind that relayed
/// bytes were neither decoded nor saved.
pub fn lost_notice(events: u64, bytes: u64, said: &mut Option<Instant>) {
    if said.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
        return;
    }
    *said = Some(Instant::now());
    eprintln!(
        "ecr-sniff: warning: the decoder fell behind: {bytes} relayed bytes ({events} reads) so far were passed on but not decoded or saved"
    );
}

type Splitter = FrameSplitter<BufWriter<File>>;

/// Opens the D9 file.
pub fn create_capture(path: &std::path::Path, names: &(String, String)) -> Result<Splitter> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = SerialCaptureWriter::new(
        BufWriter::new(f),
        Some(&format!("{}<->{}", names.0, names.1)),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(FrameSplitter::new(w))
}

pub fn run(a: SerialArgs) -> Result<ExitCode> {
    let settings = a.line.settings()?;
    if a.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        anyhow::bail!("--duration must be a positive number of seconds");
    }
    let keys = load_keys(&a.keys)?;
    let ecr = match (&a.ecr, &a.pty) {
        (Some(path), _) => EndSpec::Port {
            path: path.clone(),
            settings,
        },
        (None, Some(link)) => EndSpec::Pty(Pty::open(Some(link))?),
        (None, None) => anyhow::bail!("give the cash register's port with --ecr, or --pty PATH"),
    };
    let pty_note = match &ecr {
        EndSpec::Pty(p) => Some(format!(
            "point the cash register software at {} ({})",
            a.pty.as_deref().unwrap_or(p.slave_path()).display(),
            p.slave_path().display()
        )),
        EndSpec::Port { .. } => None,
    };
    let pos = EndSpec::Port {
        path: a.pos.clone(),
        settings,
    };
    let relay = Relay::new(ecr, pos)?;
    let names = relay.names();
    let mut capture = match &a.write {
        Some(p) => Some((p.clone(), create_capture(p, &names)?)),
        None => None,
    };
    let stop = stop::on_signals().context("installing the Ctrl-C handler")?;
    eprintln!(
        "ecr-sniff: tapping cash register {} <-> terminal {} at {settings}{}; Ctrl-C to stop",
        names.0,
        names.1,
        a.write
            .as_ref()
            .map(|p| format!(", saving to {}", p.display()))
            .unwrap_or_default()
    );
    if let Some(n) = pty_note {
        eprintln!("ecr-sniff: {n}");
    }

    // Records reach stdout through a bounded queue: a slow reader loses records
    // (counted and reported), never relaying or the -w file.
    let mut sink = TapOutput::new(|piece| a.output.writer(piece));
    let mut analyzer = Analyzer::new(ecr_capture::analyzer::Config::default(), keys, &mut sink);
    let labels = (names.0.as_str(), names.1.as_str());
    let started = Instant::now();
    let limit = a.duration.map(Duration::from_secs_f64);
    let mut bytes = 0u64;
    let mut seen = false;
    let mut failure: Option<anyhow::Error> = None;
    let mut lost_said: Option<Instant> = None;
    let mut lost = 0u64;
    session::run(relay, stop, |ev| {
        let written = match ev {
            TapEvent::Relay(RelayEvent::Data { from, ts, bytes: b }) => {
                seen = true;
                bytes += b.len() as u64;
                analyzer.serial_chunk(0, labels, from, &b, ts, None);
                capture.as_mut().map(|(_, c)| c.push(ts, from, &b))
            }
            TapEvent::Relay(ev) => {
                notice(&ev);
                // Keep the file complete while a port is away.
                capture.as_mut().map(|(_, c)| {
                    c.flush_side(Side::Ecr)
                        .and_then(|()| c.flush_side(Side::Pos))
                })
            }
            TapEvent::Idle(side) => capture.as_mut().map(|(_, c)| c.flush_side(side)),
            TapEvent::Lost { events, bytes } => {
                lost_notice(events, bytes, &mut lost_said);
                lost = bytes;
                None
            }
            TapEvent::Tick(ts) => {
                // Let time-based rules (ack within 1000 ms, fragments within 500 ms)
                // fire while the line is quiet.
                if seen {
                    analyzer.serial_chunk(0, labels, Side::Ecr, &[], ts, None);
                }
                None
            }
        };
        if let Some(Err(e)) = written {
            let path = capture.as_ref().map(|(p, _)| p.display().to_string());
            failure = Some(
                anyhow::Error::new(e).context(format!("writing {}", path.unwrap_or_default())),
            );
            return ControlFlow::Break(());
        }
        if limit.is_some_and(|l| started.elapsed() >= l) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let (Some((path, c)), None) = (capture, &failure) {
        let mut w = c
            .finish()
            .with_context(|| format!("writing {}", path.display()))?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if lost > 0 {
        eprintln!(
            "ecr-sniff: warning: in all, {lost} relayed bytes were passed on but not decoded or saved (the decoder fell behind)"
        );
    }
    let (_, max) = analyzer.finish(bytes, vec![]);
    sink.finish().context("writing output")?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(exit_for(max, a.fail_on))
}
