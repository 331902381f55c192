//! Command-line arguments. The help text is the first documentation a support
//! engineer reads, so it says what each option is for, with examples.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    Analyze(crate::analyze::AnalyzeArgs),
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
    Check(crate::check::CheckArgs),
    /// Decode serial bytes (as hex, or a binary or hex file) into frames and messages.
    #[command(after_help = "\
Examples:
  ecr-sniff decode 2f6e012005000b00002f6e
  ecr-sniff decode '2f 6e 01 10 01 00 7f 00 74 ...' --key my_qfpay_pos_key
  ecr-sniff decode --file line.bin --from pos")]
    Decode(crate::decode::DecodeArgs),
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
    Codes(crate::codes::CodesArgs),
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
