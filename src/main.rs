//! `ecr-sniff`: the command line. Everything here is argument handling, file access
//! and presentation; the protocol and the analysis live in the `ecr-proto` and
//! `ecr-capture` crates.

mod analyze;
mod check;
mod cli;
mod codes;
mod decode;
mod emulate;
mod export;
mod extcap;
mod live;
mod options;
mod report;
mod send;
mod serialtap;
mod tapout;
mod wireshark;

/// mimalloc: many small, short-lived allocations per message (strings of parsed
/// JSON, records) cost about a third of glibc malloc's instructions.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (its `include/mimalloc.h`;
/// libmimalloc-sys names no constant for it; `tests::purge_delay_option_is_the_one`
/// checks the number against the option's documented default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long mimalloc keeps memory freed in its arenas before giving it back to the
/// system, in milliseconds (its default: 1000). Within a second of analysis the
/// parse trees of large bodies, connections closed and decodings freed by the other
/// thread of `-j 2` come and go many times over, and at 1000 ms the pages they
/// leave stay resident: `-j 2` on the crafted `tiny_values` capture peaked at 31-53
/// MB from run to run, 23-27 MB at 10 ms, for a little more system time and no
/// change on the dense benchmark (README, Memory limits).
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets the allocator's purge delay unless `MIMALLOC_PURGE_DELAY` is set in the
/// environment, which mimalloc reads itself (and so keeps its meaning).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer in mimalloc's table of options,
        // which it reads atomically; it takes any option number and any value.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

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

use cli::{Cli, Command};
use options::{exit_for, FailOn};

fn main() -> ExitCode {
    tune_allocator();
    quiet_on_broken_pipe();
    // `ecr-sniff -i IFACE` means `ecr-sniff live -i IFACE`; under an extcap name the
    // program is `ecr-sniff extcap` (Wireshark runs it directly).
    let cli = Cli::parse_from(live::implicit_live(extcap::argv0_alias(
        std::env::args_os().collect(),
    )));
    let result = match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Check(c) => check::run(c),
        Command::Decode(d) => decode::run(d),
        Command::Export(a) => export::run(a),
        Command::Live(a) => live::run(a),
        Command::Serial(a) => serialtap::run(a),
        Command::Extcap(a) => extcap::run(a),
        Command::Send(a) => send::run(a),
        Command::Emulate(a) => emulate::run(a),
        Command::Report(a) => report::run(a),
        Command::Codes(a) => codes::run(&a),
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
            print_error(&e);
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

/// Prints `e` as the one-line `ecr-sniff: error: ...` on stderr. Errors may quote
/// capture data (a file name, a header): escaped.
pub fn print_error(e: &anyhow::Error) {
    eprintln!(
        "ecr-sniff: error: {}",
        ecr_proto::text::escape_terminal(&error_text(e))
    );
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

/// What [`analyze_files`] found.
pub struct Analysis {
    pub summary: SummaryRecord,
    /// The most severe finding.
    pub max: Option<Severity>,
    /// Captures that could not be read (each said on stderr), when several were
    /// given: the others are analysed all the same, and the command then exits
    /// with status 2, as `grep` or `cat` do with a file they cannot read.
    pub unreadable: usize,
}

impl Analysis {
    /// The exit status: 2 when a capture could not be read, else by `--fail-on`.
    pub fn exit_code(&self, fail_on: FailOn) -> ExitCode {
        if self.unreadable > 0 {
            ExitCode::from(2)
        } else {
            exit_for(self.max, fail_on)
        }
    }
}

/// Analyses `files` in order (as one capture) into `sink`. One capture that cannot
/// be read is the error; of several, each that cannot be read is said on stderr and
/// left out ([`Analysis::unreadable`]), and the rest is analysed.
pub fn analyze_files(
    files: &[PathBuf],
    cfg: Config,
    keys: KeySet,
    sink: &mut dyn ecr_capture::record::Sink,
    progress: bool,
) -> Result<Analysis> {
    analyze_files_with(files, cfg, keys, sink, progress, |_| {}, |_| {})
}

/// [`analyze_files`], with `setup` given the analyzer before the first file and
/// `at_end` after the last.
pub fn analyze_files_with<'s>(
    files: &[PathBuf],
    cfg: Config,
    keys: KeySet,
    sink: &'s mut dyn ecr_capture::record::Sink,
    progress: bool,
    setup: impl FnOnce(&mut Analyzer<'s>),
    at_end: impl FnOnce(&Analyzer<'s>),
) -> Result<Analysis> {
    if files.iter().filter(|f| is_stdin(f)).count() > 1 {
        bail!("standard input (-) can be given only once");
    }
    let mut analyzer = Analyzer::new(cfg, keys, sink);
    setup(&mut analyzer);
    let mut bytes = 0u64;
    let mut names = vec![];
    let mut unreadable = 0;
    for path in files {
        match analyze_one(path, &mut analyzer, progress) {
            Ok(n) => {
                bytes += n;
                names.push(path.display().to_string());
            }
            Err(e) if files.len() > 1 => {
                print_error(&e);
                unreadable += 1;
            }
            Err(e) => return Err(e),
        }
    }
    at_end(&analyzer);
    let (summary, max) = analyzer.finish(bytes, names);
    Ok(Analysis {
        summary,
        max,
        unreadable,
    })
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

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_option_is_the_one() {
        // The test process does not run `tune_allocator`: the option holds
        // mimalloc's documented default for purge_delay (1000 ms), or what the
        // environment set.
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        // SAFETY: reads an integer from mimalloc's table of options.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, expected);
    }
}
