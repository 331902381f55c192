//! `ecr-sniff live -i IFACE` (also `ecr-sniff -i IFACE`): capture on a network
//! interface with libpcap and print each message as soon as it is complete, with
//! the same analyzer and the same output as `analyze`.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::options::{FailOn, KeyArgs, OutputArgs, PortArgs};

const AFTER: &str = "\
Packets are filtered in the kernel to the ECR ports (--http-port, --tcp-port; every TCP
port with --probe) unless --filter gives another BPF filter. Each message prints as soon
as it is complete, findings included (stdout is written in blocks, flushed at least every
100 ms, after every message on a terminal); Ctrl-C (or SIGTERM) flushes the -w file,
reports requests still waiting (unanswered-at-end), prints the summary and exits 0.

A capture thread only moves packets from the kernel into a bounded queue; packets lost
in the kernel (--buffer-size too small), by the interface or at the queue are reported on
stderr as the count grows and in the summary (`drops` in jsonl).

HTTPS: --tls-keylog FILE is followed while capturing (it may be empty or not exist yet; of a
file over 64 MiB only the last 64 MiB are read at the start); a TLS connection whose secrets
the browser has not written yet is held (up to 256 KiB) and decrypted when they appear.

Capturing needs root or the capabilities CAP_NET_RAW and CAP_NET_ADMIN:
  sudo setcap cap_net_raw,cap_net_admin=eip \"$(command -v ecr-sniff)\"

Examples:
  ecr-sniff --key f46b1f08bec1f39104792cc79ec9aacd -i eth0
  ecr-sniff live -i any --key-file keys.txt -w shop.pcapng
  ecr-sniff live -i eth0 --key-file keys.txt --tls-keylog /shared/sslkeys.log
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
    pub tls: crate::options::TlsArgs,
    #[command(flatten)]
    pub ports: PortArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Exit with status 1 when a finding of this severity or worse was seen.
    #[arg(long = "fail-on", value_enum, default_value = "never")]
    pub fail_on: FailOn,
    /// Kernel buffer for packets not yet read, for bursts: MiB, or a size with K,
    /// M or G (libpcap's buffer_size; tcpdump's -B counts KiB). Losses are reported on
    /// stderr as they happen and in the summary. The capture thread empties it into
    /// a queue of its own at once, so a few MiB hold any burst; a larger buffer is
    /// memory held from the start (the kernel maps it in whole).
    #[arg(long = "buffer-size", value_name = "SIZE", default_value = "8", value_parser = parse_size)]
    pub buffer_size: usize,
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
    use std::cell::Cell;
    use std::fs::File;
    use std::io::BufWriter;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use anyhow::{Context as _, Result};
    use ecr_capture::analyzer::Analyzer;
    use ecr_capture::keylog::{KeyLogTail, MAX_FILE_BYTES};
    use ecr_capture::record::{Drops, Record, Sink};
    use ecr_capture::source::PcapngWriter;
    use ecr_tap::netcap::{self, NetDrops, NetTap, OwnedPacket, QueueLimits, TapOptions};
    use ecr_tap::stop;

    use super::LiveArgs;
    use crate::options::{config, exit_for, keylog_adds_nothing, keylog_warning, load_keys};
    use crate::tapout::FLUSH_EVERY;

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
        // A key log the browser has not created yet is read once it appears; one
        // that is still empty (SSLKEYLOGFILE set, no TLS connection yet) as it is
        // written. Neither is worth a warning.
        let (existing, later): (Vec<PathBuf>, Vec<PathBuf>) = a
            .tls
            .tls_keylog
            .iter()
            .cloned()
            .partition(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
        for p in &later {
            if p.exists() {
                eprintln!(
                    "ecr-sniff: {} is empty; its secrets are read as they are written",
                    p.display()
                );
            } else {
                eprintln!(
                    "ecr-sniff: {} does not exist yet; it is read when it appears",
                    p.display()
                );
            }
        }
        // The key logs are read by the follower, from their first line (below).
        let cfg = ecr_capture::analyzer::Config {
            tls_wait_for_secrets: true,
            ..config(&a.ports)
        };
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
        let opts = TapOptions {
            promisc: a.promisc,
            buffer_size: a.buffer_size,
            immediate: false,
        };
        let tap = NetTap::open_with(iface, &filter, &opts)?;
        let linktype = tap.linktype();
        let mut file: OutFile = match &a.write {
            Some(path) => {
                let f = File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                let mut w = PcapngWriter::new(BufWriter::with_capacity(1 << 20, f))
                    .with_context(|| format!("writing {}", path.display()))?;
                w.add_interface(linktype, netcap::SNAPLEN as u32, Some(iface))
                    .with_context(|| format!("writing {}", path.display()))?;
                w.flush()
                    .with_context(|| format!("writing {}", path.display()))?;
                Some((path.clone(), w))
            }
            None => None,
        };

        // Records go to stdout as soon as the analyzer completes them, through a
        // bounded queue: a reader that does not keep up loses records (counted and
        // reported), never packets or the -w file.
        let mut out = crate::tapout::TapOutput::new(|piece| a.output.writer(piece));
        let drops: Rc<Cell<Drops>> = Rc::default();
        let mut sink = WithDrops {
            out: &mut out,
            drops: Rc::clone(&drops),
        };
        let mut analyzer = Analyzer::new(cfg, keys, &mut sink);
        // Browsers append to their key log while they connect: new lines are read as
        // they come, and connections waiting for them are decrypted then. What the
        // files hold now is read once, before the first packet, by the same reader.
        let mut follow = KeylogFollower::new(&a.tls.tls_keylog);
        follow.start(&existing, &mut analyzer)?;
        let deadline = a
            .duration
            .map(|l| Instant::now() + Duration::from_secs_f64(l));
        // A thread of its own drains libpcap into a bounded queue; this one decodes.
        let mut drain = tap
            .spawn(QueueLimits::default())
            .context("starting the capture thread")?;
        // Said once the capture thread runs: a script that starts its traffic on this
        // line (benches/live.sh) finds the tap reading.
        eprintln!(
            "ecr-sniff: capturing on {iface} (filter: {filter}){}; Ctrl-C to stop",
            a.write
                .as_ref()
                .map(|p| format!(", saving to {}", p.display()))
                .unwrap_or_default()
        );
        let mut index = 0u64;
        let mut bytes = 0u64;
        let mut failure: Option<anyhow::Error> = None;
        let mut handle = |p: OwnedPacket,
                          file: &mut OutFile,
                          failure: &mut Option<anyhow::Error>| {
            index += 1;
            bytes += p.data.len() as u64;
            let pkt = p.as_packet(index, linktype);
            // While a TLS connection waits for its secrets, the key log is read
            // before every packet (the next may be its FIN); otherwise every 100 ms.
            let waiting = analyzer
                .tls_last_wait()
                .is_some_and(|t| pkt.ts.millis_since(t) < WAIT_POLL_MS);
            follow.poll(&mut analyzer, waiting);
            analyzer.packet(&pkt);
            if let (Some((path, w)), None) = (file, &failure) {
                if let Err(e) = w.write_packet(0, pkt.ts, pkt.data, pkt.orig_len, None) {
                    *failure =
                        Some(anyhow::Error::new(e).context(format!("writing {}", path.display())));
                }
            }
        };
        let mut flushed_at = Instant::now();
        let mut reported = NetDrops::default();
        while !stop::requested(&stop) && deadline.is_none_or(|d| Instant::now() < d) {
            if let Some(p) = drain.recv_timeout(Duration::from_millis(50)) {
                handle(p, &mut file, &mut failure);
            }
            if failure.is_some() {
                break;
            }
            if flushed_at.elapsed() >= FLUSH_EVERY {
                flushed_at = Instant::now();
                // The -w file is complete up to 100 ms ago whenever the tap is killed.
                if let Some((path, w)) = &mut file {
                    if let Err(e) = w.flush() {
                        failure = Some(
                            anyhow::Error::new(e).context(format!("writing {}", path.display())),
                        );
                        break;
                    }
                }
                let now = drain.drops();
                if now.total() > reported.total() {
                    report_drops(&now);
                    reported = now;
                }
            }
            if drain.ended() && !drain.has_queued() {
                break;
            }
        }
        // What was captured before the stop is analysed too: first what the capture
        // thread still brings (while it brings something), then what is left queued.
        let draining = Instant::now();
        while failure.is_none() && draining.elapsed() < Duration::from_secs(5) {
            match drain.recv_timeout(Duration::from_millis(60)) {
                Some(p) => handle(p, &mut file, &mut failure),
                None => break,
            }
        }
        let stopped = drain.stop();
        while let Some(p) = drain.try_recv() {
            handle(p, &mut file, &mut failure);
        }
        if let Some((path, mut w)) = file {
            w.flush()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let lost = drain.drops();
        if lost.total() > 0 {
            report_drops(&lost);
        }
        drops.set(Drops {
            kernel: lost.kernel,
            interface: lost.interface,
            queue: lost.queue,
            output: 0,
        });
        // Secrets written since the last packet still decrypt what is held.
        follow.poll(&mut analyzer, true);
        let (_, max) = analyzer.finish(bytes, vec![]);
        out.finish().context("writing output")?;
        if let Some(e) = failure {
            return Err(e);
        }
        stopped?;
        Ok(exit_for(max, a.fail_on))
    }

    /// The `-w` file.
    type OutFile = Option<(PathBuf, PcapngWriter<BufWriter<File>>)>;

    /// Says on stderr how many packets were lost so far, and where.
    fn report_drops(d: &NetDrops) {
        eprintln!(
            "ecr-sniff: warning: {} packet(s) lost so far: {} by the kernel (buffer full; try a larger --buffer-size), {} by the interface, {} by the analyzer's queue",
            d.total(),
            d.kernel,
            d.interface,
            d.queue
        );
    }

    /// The live sink: records go to the output queue, the summary with the tap's
    /// losses (`drops` in jsonl and json, a line in text).
    struct WithDrops<'s, 'a> {
        out: &'s mut crate::tapout::TapOutput<'a>,
        drops: Rc<Cell<Drops>>,
    }

    impl Sink for WithDrops<'_, '_> {
        fn record(&mut self, mut record: Record) {
            if let Record::Summary(s) = &mut record {
                let mut d = self.drops.get();
                d.output = self.out.dropped;
                s.drops = Some(d);
            }
            self.out.record(record);
        }
    }

    /// How long (capture time) after a TLS connection last waited for its secrets
    /// the key log is read before every packet.
    const WAIT_POLL_MS: f64 = 5_000.0;

    /// Bytes of a followed key log read at a time.
    const KEYLOG_PIECE: u64 = 1 << 20;

    /// Reads lines appended to the `--tls-keylog` files during a live capture.
    struct KeylogFollower {
        /// Each file, the bytes of it read so far and where its lines are.
        files: Vec<(PathBuf, u64, KeyLogTail)>,
        last: Instant,
    }

    impl KeylogFollower {
        /// Follows `paths` from their start; nothing is read yet.
        fn new(paths: &[PathBuf]) -> Self {
            let files = paths
                .iter()
                .map(|p| (p.clone(), 0, KeyLogTail::new()))
                .collect();
            KeylogFollower {
                files,
                last: Instant::now(),
            }
        }

        /// Reads what the files hold before the capture starts, as `analyze`
        /// reads them: one of `existing` (those not empty) that cannot be read is
        /// an error, one that adds no secret a warning, and a last line without
        /// its newline is used when it is a whole key log line (a line still being
        /// written is read again when its newline comes, and only then warned
        /// about). Each line is read once: following goes on from there. Of a
        /// file larger than `analyze` reads (64 MiB), only the end is read, with a
        /// warning: the newest sessions are the ones being captured, and reading
        /// gigabytes first would keep the capture thread from starting.
        fn start(&mut self, existing: &[PathBuf], analyzer: &mut Analyzer<'_>) -> Result<()> {
            for (path, offset, tail) in &mut self.files {
                if !existing.contains(path) {
                    continue;
                }
                let f = File::open(&*path)
                    .with_context(|| format!("{}: cannot read TLS key log", path.display()))?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if let Some(skip) = len.checked_sub(MAX_FILE_BYTES).filter(|&s| s > 0) {
                    *offset = skip;
                    *tail = KeyLogTail::mid_file();
                    eprintln!(
                        "ecr-sniff: warning: {} holds {} MiB: only its last {} MiB are read (the newest sessions); connections whose secrets come before that are not decrypted",
                        path.display(),
                        len >> 20,
                        MAX_FILE_BYTES >> 20
                    );
                }
                let before = analyzer.tls_sessions_known();
                read_new(f, path, offset, tail, analyzer);
                if let Some(last) = tail.unfinished() {
                    let mut log = ecr_capture::keylog::KeyLog::new();
                    if log.add_text(last).is_empty() && !log.is_empty() {
                        analyzer.add_tls_keylog(last);
                    }
                }
                if analyzer.tls_sessions_known() == before {
                    keylog_adds_nothing(path);
                }
            }
            Ok(())
        }

        /// At most every 100 ms, or now when `now`: hands complete new lines to
        /// the analyzer.
        fn poll(&mut self, analyzer: &mut Analyzer<'_>, now: bool) {
            if self.files.is_empty() || (!now && self.last.elapsed() < Duration::from_millis(100)) {
                return;
            }
            self.last = Instant::now();
            for (path, offset, tail) in &mut self.files {
                if let Ok(f) = File::open(&*path) {
                    read_new(f, path, offset, tail, analyzer);
                }
            }
        }
    }

    /// Hands the complete lines of `f` (the key log at `path`) after `offset` to
    /// the analyzer, and moves `offset` past what was read.
    fn read_new(
        mut f: File,
        path: &Path,
        offset: &mut u64,
        tail: &mut KeyLogTail,
        analyzer: &mut Analyzer<'_>,
    ) {
        use std::io::{Read, Seek, SeekFrom};
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < *offset {
            // Truncated or replaced: read it again from the start.
            *offset = 0;
            tail.restart();
        }
        if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
            return;
        }
        // A MiB at a time: a key log that is already large when the tap starts is
        // not read into memory whole.
        let mut new = Vec::with_capacity(KEYLOG_PIECE as usize);
        loop {
            new.clear();
            if (&mut f).take(KEYLOG_PIECE).read_to_end(&mut new).is_err() || new.is_empty() {
                break;
            }
            *offset += new.len() as u64;
            // In the order of the lines: the complete ones, then one too long.
            let appended = tail.push(&new);
            if !appended.text.is_empty() {
                for w in analyzer.add_tls_keylog(&appended.text) {
                    keylog_warning(path, &appended.in_file(w));
                }
            }
            for w in &appended.warnings {
                keylog_warning(path, w);
            }
            if (new.len() as u64) < KEYLOG_PIECE {
                break;
            }
        }
    }
}

/// Parses `--buffer-size`: bytes with an optional K, M or G suffix (powers of
/// 1024); a plain number is MiB.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: usize = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => {
                    return Err(format!(
                        "{s:?}: the unit must be K, M or G (MiB without one)"
                    ))
                }
            };
            (t.get(..i).unwrap_or(""), m)
        }
        _ => (t, 1 << 20),
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 64 (MiB), 512K or 1G"))?;
    let bytes = n.saturating_mul(mult);
    if !(64 << 10..=2047 << 20).contains(&bytes) {
        return Err(format!("{s:?}: the buffer must be between 64K and 2047M"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn buffer_sizes() {
        assert_eq!(parse_size("64"), Ok(64 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        for bad in ["", "x", "10X", "1K", "4096M", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
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
