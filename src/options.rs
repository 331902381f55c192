//! Options shared by several commands (keys, ports, output, `--fail-on`) and the
//! helpers that turn them into what the libraries take. The commands' own argument
//! structs live in their modules and flatten these; `cli.rs` only composes the commands.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use ecr_capture::analyzer::Config;
use ecr_capture::findings::Severity;
use ecr_capture::keys::KeySet;
use ecr_proto::cipher::PosKey;

use crate::os_error_text;

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
    /// The record writer these options ask for, over `out`, which shows each
    /// record as soon as it is complete (a live tap, a pipe read as it comes).
    pub fn writer<'a, W: std::io::Write + 'a>(
        &self,
        out: W,
    ) -> Box<dyn ecr_capture::output::RecordWriter + 'a> {
        self.writer_blocks(out, false)
    }

    /// [`OutputArgs::writer`] for output read at the end (`analyze` on files):
    /// jsonl lines are gathered into blocks first (`TextOptions::blocks`).
    pub fn file_writer<'a, W: std::io::Write + 'a>(
        &self,
        out: W,
    ) -> Box<dyn ecr_capture::output::RecordWriter + 'a> {
        self.writer_blocks(out, true)
    }

    fn writer_blocks<'a, W: std::io::Write + 'a>(
        &self,
        out: W,
        blocks: bool,
    ) -> Box<dyn ecr_capture::output::RecordWriter + 'a> {
        use ecr_capture::output::{Clock, TextOptions};
        let clock = if self.utc {
            Clock::Utc
        } else {
            Clock::Local(local_offset)
        };
        let color = use_color(self.color);
        let opts = TextOptions {
            color,
            clock,
            blocks,
        };
        ecr_capture::output::writer_with(self.format.into(), out, opts)
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

/// Builds the key set from `--key`, `--key-file` and `ECR_POS_KEY`. Errors never
/// contain the key.
pub fn load_keys(k: &KeyArgs) -> Result<KeySet> {
    let mut keys = KeySet::new();
    for (i, text) in k.key.iter().enumerate() {
        let key = PosKey::new(text).with_context(|| format!("--key number {}", i + 1))?;
        keys.add(key);
    }
    for path in &k.key_file {
        if path.is_dir() {
            bail!("key file {}: is a directory", path.display());
        }
        let text = ecr_capture::keys::read_key_file(path).map_err(|e| {
            text_file_error("key file", path, e, "a key file holds one POS-KEY per line")
        })?;
        let n = keys
            .add_file_text(&text)
            .with_context(|| format!("key file {}", path.display()))?;
        if n == 0 {
            bail!("key file {} holds no key", path.display());
        }
    }
    if let Some(text) = &k.env_key {
        if !text.trim().is_empty() {
            keys.add(PosKey::new(text).context("ECR_POS_KEY")?);
        }
    }
    Ok(keys)
}

/// The one-line error for a text file the user named that could not be read:
/// `cannot read key file k.txt: No such file or directory`, or for a file that is
/// not what it should be, `key file capture.pcap: not text (byte 0 is not
/// UTF-8); a key file holds one POS-KEY per line`.
pub fn text_file_error(
    what: &str,
    path: &std::path::Path,
    e: ecr_capture::textfile::TextFileError,
    expected: &str,
) -> anyhow::Error {
    use ecr_capture::textfile::TextFileError;
    match e {
        TextFileError::Io(e) => {
            anyhow::anyhow!(
                "cannot read {what} {}: {}",
                path.display(),
                os_error_text(&e)
            )
        }
        other => anyhow::anyhow!("{what} {}: {other}; {expected}", path.display()),
    }
}

/// A problem with a key log on stderr: the file, the line when it is about one,
/// what was wrong (never the secret).
pub fn keylog_warning(path: &Path, w: &ecr_capture::keylog::KeyLogWarning) {
    match w.line {
        Some(l) => eprintln!(
            "ecr-sniff: warning: {} line {l}: {}",
            path.display(),
            w.detail
        ),
        None => eprintln!("ecr-sniff: warning: {}: {}", path.display(), w.detail),
    }
}

/// A key log that gave no secret (a wrong file, or one of another format), on stderr.
pub fn keylog_adds_nothing(path: &Path) {
    eprintln!(
        "ecr-sniff: warning: {} adds no TLS secrets (expected lines like CLIENT_RANDOM <64 hex> <96 hex>)",
        path.display()
    );
}

/// Reads the `--tls-keylog` files. Problems with single lines are warnings on
/// stderr naming the file and line (never quoting a secret).
pub fn load_tls_keylog(t: &TlsArgs) -> Result<ecr_capture::keylog::KeyLog> {
    let mut log = ecr_capture::keylog::KeyLog::new();
    for path in &t.tls_keylog {
        let before = log.len();
        for w in log.load_file(path).map_err(anyhow::Error::msg)? {
            keylog_warning(path, &w);
        }
        if log.len() == before {
            keylog_adds_nothing(path);
        }
    }
    Ok(log)
}

/// The analyzer configuration from the port options.
pub fn config(p: &PortArgs) -> Config {
    Config {
        http_ports: p.http_port.clone(),
        tcp_ports: p.tcp_port.clone(),
        probe: p.probe,
        limits: ecr_capture::limits::Limits::from_budget(p.memory_limit),
        ..Config::default()
    }
}

/// The analyzer configuration for reading capture files: the port options, the
/// secrets of `--tls-keylog` and the USB device to keep to (`--usb-device`).
pub fn capture_config(
    p: &PortArgs,
    t: &TlsArgs,
    usb_device: Option<ecr_capture::usb::DeviceId>,
) -> Result<Config> {
    Ok(Config {
        usb_device,
        tls_keylog: load_tls_keylog(t)?,
        ..config(p)
    })
}

/// Whether to colour stdout.
pub fn use_color(c: ColorChoice) -> bool {
    match c {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            io::stdout().is_terminal() && color_allowed_by_env(|k| std::env::var_os(k))
        }
    }
}

/// The environment's say on automatic colour: none when `NO_COLOR` is set to
/// anything non-empty (no-color.org) or when `TERM` is `dumb`.
pub fn color_allowed_by_env(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let no_color = var("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = var("TERM").is_some_and(|t| t == "dumb");
    !no_color && !dumb
}

/// Exit status for the most severe finding against `--fail-on`.
pub fn exit_for(max: Option<Severity>, fail_on: FailOn) -> ExitCode {
    let threshold = match fail_on {
        FailOn::Never => return ExitCode::SUCCESS,
        FailOn::Info => Severity::Info,
        FailOn::Warning => Severity::Warning,
        FailOn::Error => Severity::Error,
    };
    if max.is_some_and(|m| m >= threshold) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The default of `-j`: the cores this process may use (1 if unknown).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::color_allowed_by_env;
    use std::ffi::OsString;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn colour_follows_term_and_no_color() {
        assert!(color_allowed_by_env(env(&[("TERM", "xterm-256color")])));
        assert!(color_allowed_by_env(env(&[])));
        assert!(!color_allowed_by_env(env(&[("TERM", "dumb")])));
        assert!(!color_allowed_by_env(env(&[
            ("NO_COLOR", "1"),
            ("TERM", "xterm")
        ])));
        // no-color.org: an empty NO_COLOR does not switch colour off.
        assert!(color_allowed_by_env(env(&[("NO_COLOR", "")])));
    }
}
