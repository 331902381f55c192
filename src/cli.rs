//! Command-line arguments. The help text is the first documentation a support
//! engineer reads, so it says what each option is for, with examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Decode, verify and explain QFPay ECR traffic between a cash register (ECR) \
and its Smart POS terminal: HTTP on port 9001, raw TCP on port 9002 and the USB-serial 0x2f6e \
frame protocol, with AES-encrypted, MD5-signed JSON inside.";

const AFTER: &str = "\
Examples:
  ecr-sniff analyze shop.pcapng --key f46b1f08bec1f39104792cc79ec9aacd
  ecr-sniff analyze shop.pcap.gz --key-file keys.txt --format jsonl | jq 'select(.kind==\"finding\")'
  ECR_POS_KEY=f46b1f08bec1f39104792cc79ec9aacd ecr-sniff check captures/*.pcap --expect captures/expected.json
  sudo tcpdump -i eth0 -U -w - port 9001 or port 9002 | ecr-sniff analyze -
  ecr-sniff report shop.pcapng --key-file keys.txt -o shop.html   (HTML with ladder diagrams)
  ecr-sniff decode 2f6e012005000b00002f6e
  ecr-sniff --key f46b1f08bec1f39104792cc79ec9aacd -i eth0     (live; same as `live -i eth0`)
  ecr-sniff codes                  (finding codes; each rule links docs/protocol.md)
  ecr-sniff wireshark install      (the Wireshark dissector)

Exit status: 0 = nothing at or above --fail-on, 1 = findings at that level (or a check
difference), 2 = bad usage or an unreadable file.";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "ecr-sniff", version, about = ABOUT, after_help = AFTER, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode every ECR message in capture files (pcap, pcapng, gzip), verify
    /// digests, pair requests with responses and flag every problem.
    #[command(after_help = "\
Files given together are read in order as one capture (e.g. a ring buffer's files).
Findings are listed under the message they concern, each with the spec rule it breaks;
`ecr-sniff codes` lists all codes. The key may also come from the environment variable
ECR_POS_KEY, which other users of the machine cannot see in the process list; keys are
never printed.

USB captures (tcpdump -i usbmon1, Wireshark on usbmonN, USBPcap on Windows) are read
as the serial link of each USB-serial adapter; the summary says which end is the cash
register and why, and the line settings (baud rate) the host set.

HTTPS on 9001 (Haojin 4.34.12+, browser POSes) is decrypted with the TLS secrets the
POS PC's browser writes when SSLKEYLOGFILE is set there (--tls-keylog), or with secrets
embedded in the pcapng (editcap --inject-secrets tls,FILE); without them each TLS
connection is described (version, SNI, cipher suite, certificate).

Examples:
  ecr-sniff analyze shop.pcapng --key f46b1f08bec1f39104792cc79ec9aacd
  ecr-sniff analyze https.pcapng --tls-keylog sslkeys.log --key-file keys.txt
  ecr-sniff analyze a.pcap b.pcap --key-file keys.txt --fail-on error
  ecr-sniff analyze dump.pcap --tcp-port 19002 --format jsonl
  ecr-sniff analyze usb.pcapng --usb-device 1:5 --key-file keys.txt")]
    Analyze(AnalyzeArgs),
    /// Regression-check captures: compare each capture's summary (messages by
    /// func_type, transactions, findings by code) with an expectation file.
    #[command(after_help = "\
Without --expect, a capture fails when it has findings at or above --fail-on (default: error).
With --expect, any difference from the file fails; --update rewrites the file instead.

Keys come from --key, --key-file or the environment variable ECR_POS_KEY (in CI, from the
secret store: the process list then shows no key).

Examples:
  ECR_POS_KEY=f46b1f08bec1f39104792cc79ec9aacd ecr-sniff check captures/*.pcap --expect captures/expected.json
  ecr-sniff check captures/*.pcap --expect captures/expected.json --update
  ecr-sniff check nightly/*.pcapng --key-file keys.txt --junit report.xml")]
    Check(CheckArgs),
    /// Decode serial bytes (as hex, or a binary or hex file) into frames and messages.
    #[command(after_help = "\
Examples:
  ecr-sniff decode 2f6e012005000b00002f6e
  ecr-sniff decode '2f 6e 01 10 01 00 7f 00 74 ...' --key my_qfpay_pos_key
  ecr-sniff decode --file line.bin --from pos")]
    Decode(DecodeArgs),
    /// Write any capture (USB, TCP, serial) as one packet per reassembled message in
    /// the project's serial capture format, for browsing in Wireshark.
    Export(crate::export::ExportArgs),
    /// Capture live on a network interface and print messages as they complete.
    Live(crate::live::LiveArgs),
    /// Sit between the cash register's and the terminal's serial ports and show the
    /// traffic live.
    Serial(crate::serialtap::SerialArgs),
    /// Wireshark extcap interface for the serial tap (run by Wireshark).
    Extcap(crate::extcap::ExtcapArgs),
    /// Act as the cash register: send a request to a terminal and print the answer.
    Send(crate::send::SendArgs),
    /// Act as the terminal: answer requests over HTTP, TCP or a serial port.
    Emulate(crate::emulate::EmulateArgs),
    /// Write one self-contained HTML report: a ladder diagram per link, the
    /// transactions, latency charts and the findings.
    #[command(after_help = crate::report::AFTER_HELP)]
    Report(crate::report::ReportArgs),
    /// List the finding codes with their severity and the rule each stands for.
    Codes(CodesArgs),
    /// Install the Wireshark dissector (ecr.lua) into your personal Lua plugins folder.
    Wireshark(crate::wireshark::WiresharkArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(after_help = "\
Install (per user):
  bash:  ecr-sniff completions bash > ~/.local/share/bash-completion/completions/ecr-sniff
  zsh:   ecr-sniff completions zsh > ~/.zfunc/_ecr-sniff   (with fpath+=(~/.zfunc) before compinit)
  fish:  ecr-sniff completions fish > ~/.config/fish/completions/ecr-sniff.fish
  powershell:  ecr-sniff completions powershell >> $PROFILE")]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a folder.
    #[command(after_help = "\
Examples:
  ecr-sniff man | man -l -
  sudo ecr-sniff man --dir /usr/local/share/man/man1     (then: man ecr-sniff-analyze)")]
    Man {
        /// Write ecr-sniff.1 and one ecr-sniff-COMMAND.1 per command into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ecr-sniff codes
  ecr-sniff codes --format json | jq -r '.[] | select(.severity == \"error\") | .code'")]
pub struct CodesArgs {
    /// `text`: the Markdown table README shows; `json`: an array of
    /// {code, severity, rule} objects (what the Wireshark dissector is tested against).
    #[arg(long, value_enum, default_value = "text")]
    pub format: CodesFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CodesFormat {
    /// The Markdown table.
    Text,
    /// A JSON array.
    Json,
}

/// The key options. `global` so that under a command with subcommands (`send pay`)
/// they are accepted before or after the subcommand, like `--to`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// A POS-KEY to decrypt and verify with (repeat for several; every key is tried).
    /// 16, 24 or 32 characters; 32 hex digits are also tried as 16 bytes.
    #[arg(long = "key", value_name = "KEY", global = true)]
    pub key: Vec<String>,
    /// A file of POS-KEYs, one per line; `ADDRESS=KEY` binds a key to a terminal
    /// (`192.168.1.20=KEY` or `192.168.1.20:9001=KEY`); `#` starts a comment.
    #[arg(long = "key-file", value_name = "FILE", global = true)]
    pub key_file: Vec<PathBuf>,
    /// A POS-KEY from the environment (safer than the command line, which others
    /// on the machine can see).
    #[arg(
        long = "env-key",
        env = "ECR_POS_KEY",
        hide_env_values = true,
        hide = true,
        global = true
    )]
    pub env_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// A TLS key log (the NSS format that SSLKEYLOGFILE makes browsers, curl and
    /// Python write) to decrypt HTTPS on the ECR port with; repeat for several.
    /// Secrets in the capture's own pcapng Decryption Secrets Blocks are used too.
    /// Secrets are never printed or written out.
    #[arg(long = "tls-keylog", value_name = "FILE")]
    pub tls_keylog: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// TCP ports carrying HTTP (repeat for several).
    #[arg(long = "http-port", value_name = "PORT", default_value = "9001")]
    pub http_port: Vec<u16>,
    /// TCP ports carrying raw ECR messages or frames (repeat for several).
    #[arg(long = "tcp-port", value_name = "PORT", default_value = "9002")]
    pub tcp_port: Vec<u16>,
    /// Also look for ECR traffic on every other TCP port (slower).
    #[arg(long)]
    pub probe: bool,
    /// Memory budget of the analysis (connections, unfinished messages, fragments,
    /// remembered payments), e.g. 256M or 1G. The default, 32M, keeps the process
    /// under 64 MB on any input; when a bound drops something a `limit-evicted`
    /// finding says what and which limit, and a larger budget avoids it.
    #[arg(long = "memory-limit", value_name = "SIZE", default_value = "32M",
          value_parser = ecr_capture::limits::parse_size)]
    pub memory_limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// A readable tree, one block per message, and a summary.
    Text,
    /// One JSON object per line: message, transaction, finding, summary records.
    Jsonl,
    /// The same records as one JSON document.
    Json,
    /// A ladder diagram: one line per message between an ECR and a POS lane, with
    /// times, latencies and findings at the side.
    Ladder,
}

impl From<FormatArg> for ecr_capture::output::Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => ecr_capture::output::Format::Text,
            FormatArg::Jsonl => ecr_capture::output::Format::Jsonl,
            FormatArg::Json => ecr_capture::output::Format::Json,
            FormatArg::Ladder => ecr_capture::output::Format::Ladder,
        }
    }
}

/// How records are printed: shared by every command that prints them, so that a
/// script reads a live tap exactly as it reads `analyze`.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
    /// When to colour the text output.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorChoice,
    /// Show times in UTC instead of local time (the TZ variable sets the local zone;
    /// jsonl always has `ts`, epoch seconds, and `time`, ISO 8601 in UTC).
    #[arg(long)]
    pub utc: bool,
}

impl OutputArgs {
    /// The record writer these options ask for, over `out`.
    pub fn writer<'a, W: std::io::Write + 'a>(
        &self,
        out: W,
    ) -> Box<dyn ecr_capture::output::RecordWriter + 'a> {
        use ecr_capture::output::{Clock, TextOptions};
        let clock = if self.utc {
            Clock::Utc
        } else {
            Clock::Local(local_offset)
        };
        let color = crate::use_color(self.color);
        ecr_capture::output::writer_with(self.format.into(), out, TextOptions { color, clock })
    }
}

/// The local zone's offset from UTC, in seconds, at `secs` since the epoch (TZ, else
/// /etc/localtime; UTC when neither says).
pub fn local_offset(secs: i64) -> i32 {
    use chrono::{Offset, TimeZone};
    chrono::Local
        .timestamp_opt(secs, 0)
        .earliest()
        .map_or(0, |t| t.offset().fix().local_minus_utc())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal, NO_COLOR is not set and TERM is not `dumb`.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 1 when there is an error finding.
    Error,
    /// Exit 1 when there is a warning or error finding.
    Warning,
    /// Exit 1 when there is any finding.
    Info,
    /// Always exit 0 (unless the file cannot be read).
    Never,
}

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

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Capture files to check, each on its own; `-` reads one from standard input.
    #[arg(required = true, value_name = "CAPTURE")]
    pub files: Vec<PathBuf>,
    /// Expectation file (JSON) with one entry per capture file name.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Record the current results as the expectation instead of comparing.
    #[arg(long, requires = "expect")]
    pub update: bool,
    /// Also write the results as JUnit XML, for CI systems.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Without --expect: fail a capture with findings of this severity or worse.
    #[arg(long = "fail-on", value_enum, default_value = "error")]
    pub fail_on: FailOn,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub ports: PortArgs,
    /// USB captures: check only this device (BUS:DEV), as `analyze --usb-device`.
    #[arg(long = "usb-device", value_name = "BUS:DEV")]
    pub usb_device: Option<ecr_capture::usb::DeviceId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SideArg {
    /// The bytes were sent by the cash register.
    Ecr,
    /// The bytes were sent by the terminal.
    Pos,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Serial bytes as hex (spaces, colons and a 0x prefix are allowed); `-` reads
    /// hex from standard input.
    #[arg(value_name = "HEX", required_unless_present = "file")]
    pub hex: Option<String>,
    /// Read the bytes from a file instead: raw binary, or hex text.
    #[arg(long, value_name = "FILE", conflicts_with = "hex")]
    pub file: Option<PathBuf>,
    /// Who sent the bytes.
    #[arg(long, value_enum, default_value = "ecr")]
    pub from: SideArg,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}
