//! `ecr-sniff check`: regression checks of captures for CI.
//!
//! The expectation file is JSON, one entry per capture, keyed by the capture's path
//! relative to the expectation file's directory (`/`-separated):
//! ```json
//! { "captures": { "shop.pcap": { "messages": 4, "transactions": 2,
//!     "func_types": { "1001": 1 }, "findings": { "digest-mismatch": 1 } } } }
//! ```
//! Files written before this rule are keyed by the capture's file name alone; such a
//! key is still read when the relative path has no entry, and `--update` replaces it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::options::{capture_config, load_keys, FailOn, KeyArgs, PortArgs, TlsArgs};
use crate::{analyze_files, is_stdin};
use ecr_capture::analyzer::Config;
use ecr_capture::findings::Severity;
use ecr_capture::record::{Record, SummaryRecord};
use ecr_proto::text::escape_terminal;

/// What is compared for one capture.
fn expectation(s: &SummaryRecord) -> Value {
    let findings: Map<String, Value> = s
        .findings
        .iter()
        .map(|(c, n)| (c.as_str().to_string(), json!(n)))
        .collect();
    json!({
        "messages": s.messages,
        "transactions": s.transactions,
        "func_types": s.func_types,
        "findings": findings,
    })
}

/// The capture's file name: the key of expectation files written by older versions.
fn old_key_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The key of `capture` in the expectation file `expect`: the capture's path relative
/// to the expectation file's directory, with `/` separators (`../` where it lies
/// outside), so that `a/x.pcap` and `b/x.pcap` get an entry each.
fn key_of(capture: &Path, expect: &Path) -> String {
    let base = match expect.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (Ok(file), Ok(base)) = (capture.canonicalize(), base.canonicalize()) else {
        return capture.to_string_lossy().replace('\\', "/");
    };
    relative(&file, &base)
}

/// `path` relative to the directory `base` (both absolute and canonical).
fn relative(path: &Path, base: &Path) -> String {
    let p: Vec<_> = path.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(
        p.iter()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// Fails early, before any capture is read, when `path` cannot be written: a
/// directory, a missing directory, no permission. Leaves an existing file as it is.
fn check_writable(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!("cannot write {what} {}: is a directory", path.display());
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot write {what} {}: {}",
                path.display(),
                crate::os_error_text(&e)
            )
        })?;
    if !existed {
        std::fs::remove_file(path).ok();
    }
    Ok(())
}

/// Differences between expected and actual, one line each.
fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = vec![];
    let fields = ["messages", "transactions", "func_types", "findings"];
    for f in fields {
        let (e, a) = (&expected[f], &actual[f]);
        match (e, a) {
            (Value::Object(em), Value::Object(am)) => {
                let keys: std::collections::BTreeSet<&String> =
                    em.keys().chain(am.keys()).collect();
                for k in keys {
                    let ev = em.get(k).and_then(Value::as_u64).unwrap_or(0);
                    let av = am.get(k).and_then(Value::as_u64).unwrap_or(0);
                    if ev != av {
                        out.push(format!("{f}.{k}: expected {ev}, got {av}"));
                    }
                }
            }
            _ => {
                if e != a {
                    out.push(format!("{f}: expected {e}, got {a}"));
                }
            }
        }
    }
    out
}

struct CaseResult {
    name: String,
    failures: Vec<String>,
    seconds: f64,
}

fn junit(results: &[CaseResult]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failures = results.iter().filter(|r| !r.failures.is_empty()).count();
    let total: f64 = results.iter().map(|r| r.seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuite name=\"ecr-sniff check\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.6}\">",
        results.len()
    );
    for r in results {
        let _ = write!(
            x,
            "  <testcase classname=\"ecr-sniff.check\" name=\"{}\" time=\"{:.6}\"",
            esc(&r.name),
            r.seconds
        );
        if r.failures.is_empty() {
            x.push_str("/>\n");
        } else {
            let _ = writeln!(
                x,
                ">\n    <failure message=\"{} difference(s)\">{}</failure>\n  </testcase>",
                r.failures.len(),
                esc(&r.failures.join("\n"))
            );
        }
    }
    x.push_str("</testsuite>\n");
    x
}

/// The largest expectation file read (`--expect`): a few hundred bytes per
/// capture, so room for tens of thousands of captures.
const MAX_EXPECT_FILE: u64 = 16 << 20;

pub fn run(a: CheckArgs) -> Result<ExitCode> {
    // Outputs that cannot be written fail now, not after every capture was read.
    if let Some(j) = &a.junit {
        check_writable(j, "the JUnit file")?;
    }
    if let Some(p) = a.expect.as_ref().filter(|p| p.is_dir()) {
        anyhow::bail!("expectation file {}: is a directory", p.display());
    }
    let mut expected: Map<String, Value> = match &a.expect {
        Some(p) if p.exists() => {
            let text = ecr_capture::textfile::read_text_file(p, MAX_EXPECT_FILE).map_err(|e| {
                crate::options::text_file_error(
                    "expectation file",
                    p,
                    e,
                    "expected the JSON that `check --update` writes",
                )
            })?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", p.display()))?;
            v.get("captures")
                .and_then(Value::as_object)
                .cloned()
                .with_context(|| format!("{}: no \"captures\" object", p.display()))?
        }
        Some(p) if !a.update => {
            anyhow::bail!(
                "expectation file {} does not exist (create it with --update)",
                p.display()
            )
        }
        _ => Map::new(),
    };
    if let (Some(p), true) = (&a.expect, a.update) {
        check_writable(p, "the expectation file")?;
    }
    let mut results = vec![];
    let mut any_failed = false;
    // Written with `?`, so that `check ... | head` ends quietly (see main).
    let mut out = std::io::stdout().lock();
    let cfg = capture_config(&a.ports, &a.tls, a.usb_device)?;
    let jobs = a
        .jobs
        .map_or_else(crate::options::default_jobs, usize::from);
    analyse_each(&a, &cfg, jobs, |file, analysed| {
        let Analysed {
            summary,
            max,
            seconds,
        } = analysed?;
        let name = match &a.expect {
            Some(p) => key_of(file, p),
            None => file.display().to_string(),
        };
        let old_name = old_key_of(file);
        let actual = expectation(&summary);
        let mut failures = vec![];
        if a.update {
            if old_name != name {
                expected.remove(&old_name);
            }
            expected.insert(name.clone(), actual.clone());
        } else if a.expect.is_some() {
            match expected.get(&name).or_else(|| expected.get(&old_name)) {
                Some(e) => failures = diff(e, &actual),
                None => failures.push(format!(
                    "no expectation for {name} in the expectation file (add it with --update)"
                )),
            }
        } else if max.is_some_and(|m| fails(m, a.fail_on)) {
            let worst: Vec<String> = summary
                .findings
                .iter()
                .filter(|(c, _)| fails(c.severity(), a.fail_on))
                .map(|(c, n)| format!("{} {c} x{n}", c.severity()))
                .collect();
            failures.push(format!(
                "findings at or above --fail-on: {}",
                worst.join(", ")
            ));
        }
        let status = if a.update {
            "updated"
        } else if failures.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        writeln!(
            out,
            "{status:<7} {}  ({} messages, {} transactions, {} findings)",
            escape_terminal(&file.display().to_string()),
            summary.messages,
            summary.transactions,
            summary.findings.values().sum::<u64>()
        )?;
        for f in &failures {
            writeln!(out, "        {}", escape_terminal(f))?;
        }
        any_failed |= !failures.is_empty();
        results.push(CaseResult {
            name,
            failures,
            seconds,
        });
        Ok(())
    })?;
    if a.update {
        if let Some(p) = &a.expect {
            let sorted: BTreeMap<String, Value> = expected.into_iter().collect();
            let text = serde_json::to_string_pretty(&json!({ "captures": sorted }))?;
            std::fs::write(p, text + "\n").map_err(|e| {
                anyhow::anyhow!("cannot write {}: {}", p.display(), crate::os_error_text(&e))
            })?;
            writeln!(out, "wrote {}", p.display())?;
        }
    }
    if let Some(j) = &a.junit {
        std::fs::write(j, junit(&results)).map_err(|e| {
            anyhow::anyhow!("cannot write {}: {}", j.display(), crate::os_error_text(&e))
        })?;
    }
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    writeln!(
        out,
        "checked {} capture(s): {} ok, {failed} failed",
        results.len(),
        results.len() - failed
    )?;
    Ok(if any_failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One capture's analysis.
struct Analysed {
    summary: SummaryRecord,
    max: Option<Severity>,
    /// Wall time of its analysis.
    seconds: f64,
}

/// Analyses each capture on its own and gives `each` the results in the order of
/// the files. With `jobs` >= 2, several captures are analysed at once (at most
/// `jobs`, each on a thread of its own); when there are threads to spare for
/// every capture analysed at once (one capture on two cores), each capture also
/// gets a helper thread that decodes its bodies, as `analyze -j 2` does. Standard
/// input is always read on one thread.
fn analyse_each(
    a: &CheckArgs,
    cfg: &Config,
    jobs: usize,
    mut each: impl FnMut(&Path, Result<Analysed>) -> Result<()>,
) -> Result<()> {
    let stdin = a.files.iter().any(|f| is_stdin(f));
    let at_once = if stdin {
        1
    } else {
        jobs.min(a.files.len()).max(1)
    };
    let helped = !stdin && jobs >= 2 * at_once;
    let one = |file: &PathBuf| -> Result<Analysed> {
        let keys = load_keys(&a.keys)?;
        let started = std::time::Instant::now();
        let mut sink = |_: Record| {};
        let files = std::slice::from_ref(file);
        // One capture: one that cannot be read is the error.
        let crate::Analysis { summary, max, .. } = if helped {
            crate::analyze::analyze_files_helped(files, cfg.clone(), keys, false)?
        } else {
            analyze_files(files, cfg.clone(), keys, &mut sink, false)?
        };
        Ok(Analysed {
            summary,
            max,
            seconds: started.elapsed().as_secs_f64(),
        })
    };
    if at_once < 2 {
        for f in &a.files {
            each(f, one(f))?;
        }
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..at_once {
            let (tx, next, one) = (tx.clone(), &next, &one);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(f) = a.files.get(i) else {
                    break;
                };
                // The receiver has gone after an error: stop.
                if tx.send((i, one(f))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // Results come in any order; they are given in the order of the files.
        let mut waiting = BTreeMap::new();
        let mut want = 0;
        for (i, r) in rx {
            waiting.insert(i, r);
            while let Some(r) = waiting.remove(&want) {
                let file = a.files.get(want).map_or(Path::new("-"), PathBuf::as_path);
                each(file, r)?;
                want += 1;
            }
        }
        Ok(())
    })
}

fn fails(s: Severity, fail_on: FailOn) -> bool {
    use FailOn::*;
    match fail_on {
        Never => false,
        Info => true,
        Warning => s >= Severity::Warning,
        Error => s >= Severity::Error,
    }
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
    /// Threads to use (default: the number of cores): up to N captures are analysed
    /// at once, each on a thread of its own, and when N is at least twice the
    /// captures analysed at once (one capture on two cores), each also gets a
    /// helper thread that decodes its bodies, as `analyze -j 2` does. Results are
    /// reported in the order given and are the same with any number.
    #[arg(short = 'j', long = "jobs", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
}
