//! `ecr-sniff live -i IFACE` (also `ecr-sniff -i IFACE`): capture on a network
//! interface with libpcap and print each message as soon as it is complete, with
//! the same analyzer and the same output as `analyze`.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::options::{FailOn, KeyArgs, OutputArgs, PortArgs};

const AFTER: &str = "\
Packets are filtered in the kernel to the ECR ports (--http-port, --tcp-port; every TCP
port with --probe) unless --filter gives another BPF filter. Each message prints as soon
as it is complete, findings included; Ctrl-C (or SIGTERM) flushes the -w file, reports
requests still waiting (unanswered-at-end), prints the summary and exits 0.

Capturing needs root or the capabilities CAP_NET_RAW and CAP_NET_ADMIN:
  sudo setcap cap_net_raw,cap_net_admin=eip \"$(command -v ecr-sniff)\"

Examples:
  ecr-sniff --key f46b1f08bec1f39104792cc79ec9aacd -i eth0
  ecr-sniff live -i any --key-file keys.txt -w shop.pcapng
  ecr-sniff live -i eth0 --format jsonl | jq 'select(.kind==\"finding\")'
  ecr-sniff live -i eth0 --filter 'host 192.168.1.20 and tcp port 9001'
  ecr-sniff live --list-interfaces";

/// Arguments of `ecr-sniff live`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER)]
pub struct LiveArgs {
    /// Network interface to capture on (`any` for all; see --list-interfaces).
    #[arg(
        short = 'i',
        long = "interface",
        value_name = "IFACE",
        required_unless_present = "list_interfaces"
    )]
    pub interface: Option<String>,
    /// List the interfaces that can be captured on, and exit.
    #[arg(long = "list-interfaces")]
    pub list_interfaces: bool,
    /// Also save the captured packets to this pcapng file (readable by `analyze`
    /// and Wireshark); it is complete after Ctrl-C.
    #[arg(short = 'w', long = "write", value_name = "FILE.pcapng")]
    pub write: Option<PathBuf>,
    /// BPF capture filter to use instead of the ECR ports (tcpdump syntax).
    #[arg(long, value_name = "BPF")]
    pub filter: Option<String>,
    /// Put the interface in promiscuous mode (to see traffic between other hosts
    /// on a hub or mirror port).
    #[arg(long)]
    pub promisc: bool,
    /// Stop by itself after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub ports: PortArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Exit with status 1 when a finding of this severity or worse was seen.
    #[arg(long = "fail-on", value_enum, default_value = "never")]
    pub fail_on: FailOn,
}

/// `ecr-sniff [OPTIONS] -i IFACE` means `ecr-sniff live [OPTIONS] -i IFACE`: when the
/// first argument is an option (not a subcommand) and an interface option appears,
/// `live` is inserted. Anything else is left for clap to parse (and explain).
pub fn implicit_live(args: Vec<OsString>) -> Vec<OsString> {
    let first_is_option = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with('-'));
    let asks_for_interface = args.iter().skip(1).any(|a| {
        a.to_str().is_some_and(|a| {
            a == "--list-interfaces"
                || a == "--interface"
                || a.starts_with("--interface=")
                || (a.starts_with("-i") && !a.starts_with("--"))
        })
    });
    let help_or_version = args.iter().skip(1).any(|a| {
        matches!(
            a.to_str(),
            Some("-h" | "--help" | "-V" | "--version" | "help")
        )
    });
    if first_is_option && asks_for_interface && !help_or_version {
        let mut out = args;
        out.insert(1.min(out.len()), OsString::from("live"));
        out
    } else {
        args
    }
}

/// What a build without the feature `live` answers to `-i`, `live` and
/// `--list-interfaces`.
#[cfg_attr(feature = "live", allow(dead_code))]
pub const NO_LIVE: &str = "this ecr-sniff was built without live network capture \
(cargo feature `live`, which needs libpcap). Install libpcap's development files \
(Debian/Ubuntu: sudo apt-get install libpcap-dev; Fedora: libpcap-devel; Arch: libpcap; \
macOS: xcode-select --install) and rebuild with the default features, e.g. \
`cargo install --path . --locked`. Captures made with tcpdump or Wireshark can be read \
with `ecr-sniff analyze FILE` (or `tcpdump -w - | ecr-sniff analyze -`) in this build.";

#[cfg(not(feature = "live"))]
pub fn run(_a: LiveArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!(NO_LIVE)
}

#[cfg(feature = "live")]
pub use imp::run;

#[cfg(feature = "live")]
mod imp {
    use std::fs::File;
    use std::io::BufWriter;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context as _, Result};
    use ecr_capture::analyzer::Analyzer;
    use ecr_capture::source::PcapngWriter;
    use ecr_tap::netcap::{self, NetTap};
    use ecr_tap::stop;

    use super::LiveArgs;
    use crate::options::{config, exit_for, load_keys};

    fn list() -> Result<ExitCode> {
        let list = netcap::list_interfaces()?;
        if list.is_empty() {
            println!("no interfaces found (capturing may need root or CAP_NET_RAW)");
        }
        for i in list {
            let mut flags = vec![];
            if i.up {
                flags.push("up");
            }
            if i.loopback {
                flags.push("loopback");
            }
            let mut line = format!("{:<16} {:<12}", i.name, flags.join(","));
            if !i.addresses.is_empty() {
                line.push_str(&format!(" {}", i.addresses.join(" ")));
            }
            if let Some(d) = i.description {
                line.push_str(&format!("  ({d})"));
            }
            // Names and descriptions come from the system's drivers: escaped.
            println!("{}", ecr_proto::text::escape_terminal(line.trim_end()));
        }
        Ok(ExitCode::SUCCESS)
    }

    pub fn run(a: LiveArgs) -> Result<ExitCode> {
        if a.list_interfaces {
            return list();
        }
        let Some(iface) = a.interface.as_deref() else {
            anyhow::bail!("give an interface with -i (see --list-interfaces)");
        };
        if a.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
            anyhow::bail!("--duration must be a positive number of seconds");
        }
        let keys = load_keys(&a.keys)?;
        let cfg = config(&a.ports);
        let filter = a.filter.clone().unwrap_or_else(|| {
            let ports: Vec<u16> = cfg
                .http_ports
                .iter()
                .chain(&cfg.tcp_ports)
                .copied()
                .collect();
            netcap::default_filter(&ports, cfg.probe)
        });
        let stop = stop::on_signals().context("installing the Ctrl-C handler")?;
        let mut tap = NetTap::open(iface, &filter, a.promisc)?;
        let mut file = match &a.write {
            Some(path) => {
                let f = File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                let mut w = PcapngWriter::new(BufWriter::new(f))
                    .with_context(|| format!("writing {}", path.display()))?;
                w.add_interface(tap.linktype(), netcap::SNAPLEN as u32, Some(iface))
                    .with_context(|| format!("writing {}", path.display()))?;
                w.flush()
                    .with_context(|| format!("writing {}", path.display()))?;
                Some((path.clone(), w))
            }
            None => None,
        };
        eprintln!(
            "ecr-sniff: capturing on {iface} (filter: {filter}){}; Ctrl-C to stop",
            a.write
                .as_ref()
                .map(|p| format!(", saving to {}", p.display()))
                .unwrap_or_default()
        );

        // Records go to stdout as soon as the analyzer completes them, through a
        // bounded queue: a reader that does not keep up loses records (counted and
        // reported), never packets or the -w file.
        let mut sink = crate::tapout::TapOutput::new(|piece| a.output.writer(piece));
        let mut analyzer = Analyzer::new(cfg, keys, &mut sink);
        let limit = a.duration.map(Duration::from_secs_f64);
        // libpcap blocks in its read: a watcher thread ends the read on Ctrl-C or when
        // --duration is up.
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (waker, done, stop) = (tap.waker(), Arc::clone(&done), Arc::clone(&stop));
            let deadline = limit.map(|l| Instant::now() + l);
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if stop::requested(&stop) || deadline.is_some_and(|d| Instant::now() >= d) {
                        stop.store(true, Ordering::Relaxed);
                        waker.wake();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let mut bytes = 0u64;
        let mut failure = None;
        while !stop::requested(&stop) {
            match tap.next_packet() {
                Ok(Some(pkt)) => {
                    bytes += pkt.data.len() as u64;
                    analyzer.packet(&pkt);
                    // Each packet reaches the file at once, so that it is complete up
                    // to the last packet whenever the tap is stopped (ECR traffic is
                    // a few packets a second).
                    if let Some((path, w)) = &mut file {
                        let written = w
                            .write_packet(0, pkt.ts, pkt.data, pkt.orig_len, None)
                            .and_then(|()| w.flush());
                        if let Err(e) = written {
                            failure = Some(
                                anyhow::Error::new(e)
                                    .context(format!("writing {}", path.display())),
                            );
                            break;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
        }
        done.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        if let Some((path, mut w)) = file {
            w.flush()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(s) = tap.stats() {
            if s.dropped > 0 {
                eprintln!(
                "ecr-sniff: warning: the kernel dropped {} of {} packets (not read fast enough)",
                s.dropped, s.received
            );
            }
        }
        let (_, max) = analyzer.finish(bytes, vec![]);
        sink.finish().context("writing output")?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(exit_for(max, a.fail_on))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn interface_option_implies_live() {
        assert_eq!(
            implicit_live(args(&["ecr-sniff", "--key", "K", "-i", "lo"])),
            args(&["ecr-sniff", "live", "--key", "K", "-i", "lo"])
        );
        assert_eq!(
            implicit_live(args(&["ecr-sniff", "-ilo"])),
            args(&["ecr-sniff", "live", "-ilo"])
        );
        assert_eq!(
            implicit_live(args(&["ecr-sniff", "--list-interfaces"])),
            args(&["ecr-sniff", "live", "--list-interfaces"])
        );
        // Subcommands, help and version are left alone.
        for a in [
            &["ecr-sniff", "analyze", "x.pcap", "-i"][..],
            &["ecr-sniff", "--help"],
            &["ecr-sniff", "-i", "lo", "--help"],
            &["ecr-sniff", "--key", "K"],
        ] {
            assert_eq!(implicit_live(args(a)), args(a));
        }
    }
}
