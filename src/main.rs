//! `ecr-sniff`: the command line. Everything here is argument handling, file access
//! and presentation; the protocol and the analysis live in the `ecr-proto` and
//! `ecr-capture` crates.

mod check;
mod cli;
mod decode;
mod emulate;
mod export;
mod extcap;
mod live;
mod send;
mod serialtap;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::findings::Severity;
use ecr_capture::keys::KeySet;
use ecr_capture::output::RecordWriter;
use ecr_capture::record::{Record, SummaryRecord};
use ecr_capture::source::{CaptureReader, SourceError};
use ecr_proto::cipher::PosKey;

use cli::{AnalyzeArgs, Cli, ColorChoice, Command, FailOn, KeyArgs, PortArgs};

fn main() -> ExitCode {
    // `ecr-sniff -i IFACE` means `ecr-sniff live -i IFACE`; under an extcap name the
    // program is `ecr-sniff extcap` (Wireshark runs it directly).
    let cli = Cli::parse_from(live::implicit_live(extcap::argv0_alias(
        std::env::args_os().collect(),
    )));
    let result = match cli.command {
        Command::Analyze(a) => analyze(a),
        Command::Check(c) => check::run(c),
        Command::Decode(d) => decode::run(d),
        Command::Export(a) => export::run(a),
        Command::Live(a) => live::run(a),
        Command::Serial(a) => serialtap::run(a),
        Command::Extcap(a) => extcap::run(a),
        Command::Send(a) => send::run(a),
        Command::Emulate(a) => emulate::run(a),
        Command::Codes => {
            print!("{}", ecr_capture::findings::markdown_table());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`ecr-sniff analyze ... | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("ecr-sniff: error: {e:#}");
            ExitCode::from(2)
        }
    }
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
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
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

/// Reads the `--tls-keylog` files. Problems with single lines are warnings on
/// stderr naming the file and line (never quoting a secret).
pub fn load_tls_keylog(t: &cli::TlsArgs) -> Result<ecr_capture::keylog::KeyLog> {
    let mut log = ecr_capture::keylog::KeyLog::new();
    for path in &t.tls_keylog {
        let before = log.len();
        for w in log.load_file(path).map_err(anyhow::Error::msg)? {
            match w.line {
                Some(l) => eprintln!(
                    "ecr-sniff: warning: {} line {l}: {}",
                    path.display(),
                    w.detail
                ),
                None => eprintln!("ecr-sniff: warning: {}: {}", path.display(), w.detail),
            }
        }
        if log.len() == before {
            eprintln!(
                "ecr-sniff: warning: {} adds no TLS secrets (expected lines like CLIENT_RANDOM <64 hex> <96 hex>)",
                path.display()
            );
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
        ..Config::default()
    }
}

/// Whether to colour stdout.
pub fn use_color(c: ColorChoice) -> bool {
    match c {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// Analyses `files` in order (as one capture) into `sink`; returns the summary and
/// the most severe finding.
pub fn analyze_files(
    files: &[PathBuf],
    cfg: Config,
    keys: KeySet,
    sink: &mut dyn ecr_capture::record::Sink,
    progress: bool,
) -> Result<(SummaryRecord, Option<Severity>)> {
    let mut analyzer = Analyzer::new(cfg, keys, sink);
    let mut bytes = 0u64;
    let mut names = vec![];
    for path in files {
        names.push(path.display().to_string());
        bytes += analyze_one(path, &mut analyzer, progress)?;
    }
    Ok(analyzer.finish(bytes, names))
}

fn analyze_one(path: &Path, analyzer: &mut Analyzer<'_>, progress: bool) -> Result<u64> {
    // One line naming the file and the reason (the error's own chain would repeat it).
    let mut reader = CaptureReader::open(path).map_err(|e| match e {
        SourceError::Open { .. } => anyhow::anyhow!("{e}"),
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })?;
    let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut bar = Progress::new(progress && total > 32 << 20, total);
    let bytes = analyzer.read_capture(&mut reader, &path.display().to_string(), |r| {
        bar.update(r.file_bytes_read());
        true
    });
    bar.done();
    Ok(bytes)
}

/// A one-line progress indicator on stderr for long files.
struct Progress {
    on: bool,
    total: u64,
    last: Instant,
}

impl Progress {
    fn new(on: bool, total: u64) -> Self {
        Progress {
            on: on && io::stderr().is_terminal(),
            total,
            last: Instant::now(),
        }
    }
    fn update(&mut self, done: u64) {
        if !self.on || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let pct = done as f64 * 100.0 / self.total.max(1) as f64;
        let width = 30usize;
        let filled = ((pct / 100.0) * width as f64) as usize;
        eprint!(
            "\r[{}{}] {pct:5.1}% of {} MiB",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            self.total >> 20
        );
    }
    fn done(&self) {
        if self.on {
            eprint!("\r{}\r", " ".repeat(60));
        }
    }
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

/// A sink that writes records and remembers the first write error.
pub struct WriterSink<'a> {
    writer: Box<dyn RecordWriter + 'a>,
    error: Option<io::Error>,
}

impl<'a> WriterSink<'a> {
    /// Wraps a writer.
    pub fn new(writer: Box<dyn RecordWriter + 'a>) -> Self {
        WriterSink {
            writer,
            error: None,
        }
    }
    /// Ends the output, returning the first error.
    pub fn finish(mut self) -> io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.writer.finish()
    }
}

impl ecr_capture::record::Sink for WriterSink<'_> {
    fn record(&mut self, record: Record) {
        if self.error.is_none() {
            if let Err(e) = self.writer.write(&record) {
                self.error = Some(e);
            }
        }
    }
}

fn analyze(a: AnalyzeArgs) -> Result<ExitCode> {
    let keys = load_keys(&a.keys)?;
    let tls_keylog = load_tls_keylog(&a.tls)?;
    let stdout = io::stdout();
    let out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut sink = WriterSink::new(a.output.writer(out));
    let cfg = Config {
        usb_device: a.usb_device,
        tls_keylog,
        ..config(&a.ports)
    };
    let (_, max) = analyze_files(&a.files, cfg, keys, &mut sink, true)?;
    sink.finish().context("writing output")?;
    io::stdout().flush().ok();
    Ok(exit_for(max, a.fail_on))
}
