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
mod report;
mod send;
mod serialtap;
mod tapout;
mod wireshark;

/// mimalloc: many small, short-lived allocations per message (strings of parsed
/// JSON, records) cost about a third of glibc malloc's instructions.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    quiet_on_broken_pipe();
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
        Command::Report(a) => report::run(a),
        Command::Codes(a) => codes(&a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: clap_complete panics when its writer fails (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "ecr-sniff", &mut script);
            io::stdout()
                .write_all(&script)
                .and_then(|()| io::stdout().flush())
                .map(|()| ExitCode::SUCCESS)
                .map_err(anyhow::Error::from)
        }
        Command::Man { dir } => man(dir.as_deref()),
        Command::Wireshark(a) => wireshark::run(a),
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
            // Errors may quote capture data (a file name, a header): escaped.
            eprintln!(
                "ecr-sniff: error: {}",
                ecr_proto::text::escape_terminal(&error_text(&e))
            );
            ExitCode::from(2)
        }
    }
}

/// `ecr-sniff check ... | head`: when the reader goes away, a `print!` anywhere
/// (including ones added later) would panic with "failed printing to stdout: Broken
/// pipe". Like other Unix tools, end quietly instead; every other panic is
/// reported as usual.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.starts_with("failed printing to std") && payload.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

/// An error and its causes on one line, `: `-separated, skipping a cause whose
/// text is already part of the line (thiserror messages that embed their source
/// would otherwise print it twice: "refused (os error 111): refused (os error 111)").
pub fn error_text(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<io::Error>() {
            Some(io) => os_error_text(io),
            None => cause.to_string(),
        };
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// An I/O error as a person reads it: "Permission denied", without the
/// "(os error 13)" that adds nothing for a user.
pub fn os_error_text(e: &io::Error) -> String {
    let text = e.to_string();
    match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(i)) => text[..i].to_string(),
        _ => text,
    }
}

/// Opens a capture file, with one-line errors naming the file and the reason:
/// "is a directory", "empty file", "cannot open ...: No such file or directory".
/// `-` is standard input (so that `tcpdump -w - | ecr-sniff analyze -` works; gzip is
/// detected there too).
pub fn open_capture(path: &Path) -> Result<CaptureReader> {
    if is_stdin(path) {
        return CaptureReader::from_reader(io::stdin())
            .map_err(|e| anyhow::anyhow!("standard input (-): {e}"));
    }
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_dir() {
            bail!("{}: is a directory, not a capture file", path.display());
        }
        if m.is_file() && m.len() == 0 {
            bail!(
                "{}: empty file (0 bytes), not a pcap or pcapng capture",
                path.display()
            );
        }
    }
    CaptureReader::open(path).map_err(|e| match e {
        SourceError::Open { path, source } => {
            anyhow::anyhow!("cannot open {}: {}", path.display(), os_error_text(&source))
        }
        SourceError::Io { offset, source } => anyhow::anyhow!(
            "{}: read error at offset {offset}: {}",
            path.display(),
            os_error_text(&source)
        ),
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

/// `ecr-sniff man`: the man page on stdout, or every command's page in `dir`.
fn man(dir: Option<&Path>) -> Result<ExitCode> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            eprintln!("ecr-sniff: man pages written to {}", dir.display());
        }
        None => {
            let mut out = io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ecr-sniff codes`: the finding codes as README's table or as JSON.
fn codes(a: &cli::CodesArgs) -> Result<ExitCode> {
    use ecr_capture::findings::Code;
    let mut out = io::stdout().lock();
    match a.format {
        cli::CodesFormat::Text => write!(out, "{}", ecr_capture::findings::markdown_table())?,
        cli::CodesFormat::Json => {
            let list: Vec<serde_json::Value> = Code::ALL
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "code": c.as_str(),
                        "severity": c.severity().as_str(),
                        "rule": c.rule(),
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &list)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read key file {}: {}",
                path.display(),
                os_error_text(&e)
            )
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
        limits: ecr_capture::limits::Limits::from_budget(p.memory_limit),
        ..Config::default()
    }
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

/// Analyses `files` in order (as one capture) into `sink`; returns the summary and
/// the most severe finding.
pub fn analyze_files(
    files: &[PathBuf],
    cfg: Config,
    keys: KeySet,
    sink: &mut dyn ecr_capture::record::Sink,
    progress: bool,
) -> Result<(SummaryRecord, Option<Severity>)> {
    if files.iter().filter(|f| is_stdin(f)).count() > 1 {
        bail!("standard input (-) can be given only once");
    }
    let mut analyzer = Analyzer::new(cfg, keys, sink);
    let mut bytes = 0u64;
    let mut names = vec![];
    for path in files {
        names.push(path.display().to_string());
        bytes += analyze_one(path, &mut analyzer, progress)?;
    }
    Ok(analyzer.finish(bytes, names))
}

/// Whether `path` is `-`, standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn analyze_one(path: &Path, analyzer: &mut Analyzer<'_>, progress: bool) -> Result<u64> {
    // One line naming the file and the reason (the error's own chain would repeat it).
    let mut reader = open_capture(path)?;
    let total = if is_stdin(path) {
        0
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    };
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
    let from_stdin = a.files.iter().any(|f| is_stdin(f));
    let out: Box<dyn Write> = if from_stdin {
        // A pipe from a live capture (`tcpdump -w - | ecr-sniff analyze -`): each
        // record shows as it completes, and Ctrl-C, which also stops tcpdump, lets
        // this end at the pipe's end with the summary (a second Ctrl-C exits at once).
        ecr_tap::stop::on_signals().context("installing the Ctrl-C handler")?;
        Box::new(io::stdout())
    } else {
        Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()))
    };
    let cfg = Config {
        usb_device: a.usb_device,
        tls_keylog,
        ..config(&a.ports)
    };
    // One thread unless asked: the writer thread did not pay on the 2-core machine
    // it was measured on (issue 15; README, Performance).
    let jobs = a.jobs.map_or(1, usize::from);
    if jobs >= 2 && !from_stdin {
        drop(out);
        return analyze_with_writer_thread(&a, cfg, keys);
    }
    let mut sink = WriterSink::new(a.output.writer(out));
    let (_, max) = analyze_files(&a.files, cfg, keys, &mut sink, true)?;
    sink.finish().context("writing output")?;
    io::stdout().flush().ok();
    Ok(exit_for(max, a.fail_on))
}

/// Records go to the writer thread in batches of this many (fewer hand-overs).
const RECORD_BATCH: usize = 256;
/// Batches in flight between the analysis and the writer thread: with the batch
/// being filled and the one being written, at most about 2,600 records are held.
const BATCHES_IN_FLIGHT: usize = 8;

/// `analyze -j N` (N >= 2): this thread reads and analyses, a second one renders
/// and writes the records. One bounded FIFO channel between them keeps the order
/// of a single thread and bounds the memory; a write error (a closed pipe) ends
/// the writer, after which records are dropped and the error is returned at the
/// end, as on one thread.
fn analyze_with_writer_thread(a: &AnalyzeArgs, cfg: Config, keys: KeySet) -> Result<ExitCode> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(BATCHES_IN_FLIGHT);
    // Written batches go back to be dropped where their records were allocated:
    // freeing on the other thread cost more than the writing saved.
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(BATCHES_IN_FLIGHT);
    let output = &a.output;
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let out: Box<dyn Write> =
                Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()));
            let mut writer = output.writer(out);
            let mut result = Ok(());
            for batch in rx {
                for record in &batch {
                    result = writer.write(record);
                    if result.is_err() {
                        break;
                    }
                }
                if result.is_err() {
                    break;
                }
                // When the analysis thread is behind in taking them back, drop here.
                let _ = back_tx.try_send(batch);
            }
            result.and_then(|()| writer.finish())
        });
        let mut sink = ChannelSink {
            tx: Some(tx),
            back: back_rx,
            batch: Vec::with_capacity(RECORD_BATCH),
        };
        let analysed = analyze_files(&a.files, cfg, keys, &mut sink, true);
        sink.flush();
        // Closing the channel ends the writer's loop.
        drop(sink);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the output thread failed")));
        let (_, max) = analysed?;
        written.context("writing output")?;
        io::stdout().flush().ok();
        Ok(exit_for(max, a.fail_on))
    })
}

/// The analysis side of [`analyze_with_writer_thread`].
struct ChannelSink {
    /// `None` once the writer has gone (after a write error).
    tx: Option<std::sync::mpsc::SyncSender<Vec<Record>>>,
    /// Batches written, to be dropped here; their vectors are reused.
    back: std::sync::mpsc::Receiver<Vec<Record>>,
    batch: Vec<Record>,
}

impl ChannelSink {
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut next = None;
        while let Ok(mut done) = self.back.try_recv() {
            done.clear();
            next = Some(done);
        }
        let next = next.unwrap_or_else(|| Vec::with_capacity(RECORD_BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        if let Some(tx) = &self.tx {
            if tx.send(batch).is_err() {
                self.tx = None;
            }
        }
    }
}

impl ecr_capture::record::Sink for ChannelSink {
    fn record(&mut self, record: Record) {
        if self.tx.is_none() {
            return;
        }
        self.batch.push(record);
        if self.batch.len() >= RECORD_BATCH {
            self.flush();
        }
    }
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
