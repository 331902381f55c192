//! `ecr-sniff extcap`: Wireshark's extcap protocol for the serial tap, so that
//! Wireshark lists "ECR serial tap" as a capture interface and shows the traffic
//! live with the project's dissector.
//!
//! Wireshark runs the programs in its extcap folder directly, with `--extcap-*`
//! arguments. `ecr-sniff extcap --install DIR` writes a small wrapper there that runs
//! `ecr-sniff extcap "$@"`; a copy or link of the binary whose name contains
//! "extcap" behaves the same (see [`argv0_alias`]).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use ecr_capture::serialcap::{FrameSplitter, SerialCaptureWriter};
use ecr_proto::link::Side;
use ecr_tap::extcap;
use ecr_tap::relay::{EndSpec, Relay, RelayEvent};
use ecr_tap::session::{self, TapEvent};
use ecr_tap::stop;

use crate::serialtap::{notice, LineArgs};

const AFTER: &str = "\
Install (once): ask tshark where its extcap folder is, then write the wrapper there:
  tshark -G folders | grep -i extcap
  sudo ecr-sniff extcap --install /usr/lib/x86_64-linux-gnu/wireshark/extcap
Wireshark then lists \"ECR serial tap\"; its options dialog asks for the two ports and
the line settings. From the command line:
  tshark -i ecr-serial -o extcap.ecr_serial.ecr:/dev/ttyUSB0 -o extcap.ecr_serial.pos:/dev/ttyUSB1 \\
         -X lua_script:dissector/ecr.lua

What Wireshark runs (for testing by hand):
  ecr-sniff extcap --extcap-interfaces
  ecr-sniff extcap --extcap-interface=ecr-serial --extcap-dlts
  ecr-sniff extcap --extcap-interface=ecr-serial --extcap-config
  ecr-sniff extcap --capture --extcap-interface=ecr-serial --fifo=/tmp/f --ecr /dev/ttyUSB0 --pos /dev/ttyUSB1";

/// Arguments of `ecr-sniff extcap` (Wireshark's names).
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER)]
pub struct ExtcapArgs {
    /// List the interfaces (Wireshark's first question).
    #[arg(long = "extcap-interfaces")]
    pub interfaces: bool,
    /// Wireshark's version, passed with --extcap-interfaces.
    #[arg(long = "extcap-version", value_name = "VERSION")]
    pub wireshark_version: Option<String>,
    /// The interface a question is about.
    #[arg(long = "extcap-interface", value_name = "NAME")]
    pub interface: Option<String>,
    /// List the link types of --extcap-interface.
    #[arg(long = "extcap-dlts")]
    pub dlts: bool,
    /// List the options of --extcap-interface.
    #[arg(long = "extcap-config")]
    pub config: bool,
    /// Capture into --fifo until SIGTERM.
    #[arg(long)]
    pub capture: bool,
    /// Where to write the pcapng stream.
    #[arg(long, value_name = "PATH")]
    pub fifo: Option<PathBuf>,
    /// A capture filter (not supported for serial lines).
    #[arg(long = "extcap-capture-filter", value_name = "FILTER")]
    pub capture_filter: Option<String>,
    /// Wireshark's control pipes (unused: this interface has no controls).
    #[arg(long = "extcap-control-in", value_name = "PATH", hide = true)]
    pub control_in: Option<PathBuf>,
    /// See --extcap-control-in.
    #[arg(long = "extcap-control-out", value_name = "PATH", hide = true)]
    pub control_out: Option<PathBuf>,
    /// Wireshark's debug switches (accepted; the tap reports on stderr anyway).
    #[arg(long, hide = true)]
    pub debug: bool,
    /// See --debug.
    #[arg(long = "debug-file", value_name = "PATH", hide = true)]
    pub debug_file: Option<PathBuf>,
    /// The serial port the cash register is connected to.
    #[arg(long, value_name = "PORT")]
    pub ecr: Option<PathBuf>,
    /// The serial port the payment terminal is connected to.
    #[arg(long, value_name = "PORT")]
    pub pos: Option<PathBuf>,
    #[command(flatten)]
    pub line: LineArgs,
    /// Write the wrapper script Wireshark runs into this extcap folder, and exit.
    #[arg(long, value_name = "DIR")]
    pub install: Option<PathBuf>,
}

/// The name of the wrapper written by `--install`.
pub const WRAPPER: &str = "ecr-sniff-extcap";

/// When the program is run under a name containing "extcap" (a link or copy in
/// Wireshark's extcap folder), `extcap` is inserted as the subcommand.
pub fn argv0_alias(args: Vec<OsString>) -> Vec<OsString> {
    let named_extcap = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("extcap"));
    let already = args.get(1).is_some_and(|a| a == "extcap");
    if named_extcap && !already {
        let mut out = args;
        out.insert(1.min(out.len()), OsString::from("extcap"));
        out
    } else {
        args
    }
}

pub fn run(a: ExtcapArgs) -> Result<ExitCode> {
    if let Some(dir) = &a.install {
        return install(dir);
    }
    if a.interfaces {
        print!("{}", extcap::interfaces(env!("CARGO_PKG_VERSION")));
        return Ok(ExitCode::SUCCESS);
    }
    let iface = a.interface.as_deref().unwrap_or_default();
    if a.dlts {
        print!("{}", extcap::dlts(iface)?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.config {
        print!("{}", extcap::config(iface)?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.capture {
        return capture(&a, iface);
    }
    bail!(
        "nothing to do: Wireshark runs this with --extcap-interfaces, --extcap-dlts, \
         --extcap-config or --capture (see --help; install with --install DIR)"
    )
}

fn install(dir: &Path) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let exe_text = exe
        .to_str()
        .context("this program's path is not valid UTF-8")?;
    if exe_text.contains('\'') {
        bail!("this program's path contains a quote; install it elsewhere first");
    }
    if !dir.is_dir() {
        bail!(
            "{} is not a folder (tshark -G folders names the extcap folder)",
            dir.display()
        );
    }
    let path = dir.join(WRAPPER);
    let script = format!(
        "#!/bin/sh\n# Wireshark extcap wrapper for ecr-sniff (written by `ecr-sniff extcap --install`).\n\
         exec '{exe_text}' extcap \"$@\"\n"
    );
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))?;
    println!(
        "installed {}; restart Wireshark and pick \"ECR serial tap\" (tshark -i {})",
        path.display(),
        extcap::INTERFACE
    );
    Ok(ExitCode::SUCCESS)
}

fn capture(a: &ExtcapArgs, iface: &str) -> Result<ExitCode> {
    let Some(fifo) = &a.fifo else {
        bail!("--capture needs --fifo=PATH");
    };
    // Wireshark waits on the fifo until the capture file header arrives. Open it and
    // write the header first, so that any error below (a port missing, no
    // permission, busy) ends the capture at once: Wireshark then shows what this
    // program printed on stderr, as it does for its own extcaps (sshdump).
    let f = OpenOptions::new()
        .write(true)
        .open(fifo)
        .with_context(|| format!("cannot open the fifo {}", fifo.display()))?;
    let show = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "?".into())
    };
    // Unbuffered: each packet reaches Wireshark as soon as its frame is complete.
    let w: SerialCaptureWriter<File> =
        SerialCaptureWriter::new(f, Some(&format!("{}<->{}", show(&a.ecr), show(&a.pos))))
            .with_context(|| format!("writing {}", fifo.display()))?;
    extcap::dlts(iface)?;
    if a.capture_filter
        .as_deref()
        .is_some_and(|f| !f.trim().is_empty())
    {
        bail!("capture filters do not apply to the ECR serial tap; use a display filter");
    }
    let (Some(ecr), Some(pos)) = (&a.ecr, &a.pos) else {
        bail!("set the cash register port (--ecr) and the terminal port (--pos) in the interface options");
    };
    let settings = a.line.settings()?;
    let stop = stop::on_signals().context("installing the SIGTERM handler")?;
    // The same errors, in the same words, as `ecr-sniff serial`.
    let relay = Relay::new(
        EndSpec::Port {
            path: ecr.clone(),
            settings,
        },
        EndSpec::Port {
            path: pos.clone(),
            settings,
        },
    )?;
    let mut splitter = FrameSplitter::new(w);
    let mut failure: Option<io::Error> = None;
    session::run(relay, stop, |ev| {
        let r = match ev {
            // Complete frames are written as they end.
            TapEvent::Relay(RelayEvent::Data { from, ts, bytes }) => {
                splitter.push(ts, from, &bytes)
            }
            TapEvent::Relay(ev) => {
                notice(&ev);
                splitter
                    .flush_side(Side::Ecr)
                    .and_then(|()| splitter.flush_side(Side::Pos))
            }
            TapEvent::Idle(side) => splitter.flush_side(side),
            TapEvent::Tick(_) | TapEvent::Lost { .. } => Ok(()),
        };
        match r {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                // Wireshark closed the fifo (EPIPE): the capture is over.
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    if let Some(e) = failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(anyhow::Error::new(e).context(format!("writing {}", fifo.display())));
    }
    match splitter.finish().and_then(|mut w| w.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context(format!("writing {}", fifo.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extcap_name_implies_subcommand() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            argv0_alias(a(&[
                "/usr/lib/wireshark/extcap/ecr-sniff-extcap",
                "--extcap-interfaces"
            ])),
            a(&[
                "/usr/lib/wireshark/extcap/ecr-sniff-extcap",
                "extcap",
                "--extcap-interfaces"
            ])
        );
        assert_eq!(
            argv0_alias(a(&["ecr-sniff", "analyze"])),
            a(&["ecr-sniff", "analyze"])
        );
        assert_eq!(
            argv0_alias(a(&["ecr-sniff-extcap", "extcap", "-h"])),
            a(&["ecr-sniff-extcap", "extcap", "-h"])
        );
    }
}
