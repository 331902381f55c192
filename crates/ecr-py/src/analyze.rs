//! `ecr_sniff.analyze`: the capture analyzer as an iterator of records.
//!
//! Each record is `json.loads` of the line `ecr-sniff analyze --format jsonl` prints
//! for it (the same serde serialisation of the same `Record`), so a record from
//! Python and a line from the command line are equal by construction, and
//! `pandas.DataFrame(analyze(...))` works directly.
//!
//! The files are opened before `analyze` returns, so a missing or unreadable file
//! raises `CaptureError` at the call, naming the file and the reason. The analysis
//! then runs on a worker thread that never holds the GIL; records reach Python
//! through a bounded channel, so memory stays flat however long the capture is,
//! and other Python threads keep running. Dropping or closing the iterator stops
//! the worker at its next packet. Damaged records inside a file are findings
//! (`damaged-packet`), as on the command line, not exceptions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::keys::{KeySet, KeysError};
use ecr_capture::record::Record;
use ecr_capture::source::{CaptureReader, SourceError};
use ecr_capture::textfile::TextFileError;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::convert::json_to_py;
use crate::errors::{capture_error, key_error, EcrError, PosKeyError};

/// Records in flight between the worker and Python: enough to keep both busy,
/// few enough that memory does not grow with the capture.
const CHANNEL_DEPTH: usize = 1024;
/// How often a waiting `__next__` looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// What the worker sends: a jsonl line, or why a record could not be serialised.
type Line = Result<String, String>;

/// One path (str, bytes or os.PathLike) as text, through `os.fsdecode`.
fn one_path(p: &Bound<'_, PyAny>) -> PyResult<String> {
    let fsdecode = p.py().import("os")?.getattr("fsdecode")?;
    fsdecode.call1((p,))?.extract::<String>()
}

/// The paths of the `path` argument: one path (str, bytes or os.PathLike) or a
/// sequence of them, analysed in order as one capture.
fn paths_of(path: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if path.is_instance_of::<PyString>()
        || path.is_instance_of::<PyBytes>()
        || path.hasattr("__fspath__")?
    {
        return Ok(vec![one_path(path)?]);
    }
    let mut out = vec![];
    for p in path
        .try_iter()
        .map_err(|_| PyTypeError::new_err("path must be a path or a sequence of paths"))?
    {
        out.push(one_path(&p?)?);
    }
    if out.is_empty() {
        return Err(PyTypeError::new_err("no capture file given"));
    }
    Ok(out)
}

/// The key set: each entry is a key or `ADDRESS=KEY` (a key for one terminal, as
/// in a key file); then the lines of `key_file`.
fn key_set(keys: Option<&Bound<'_, PyAny>>, key_file: Option<String>) -> PyResult<KeySet> {
    let mut set = KeySet::new();
    if let Some(keys) = keys.filter(|k| !k.is_none()) {
        let entries: Vec<String> = if let Ok(s) = keys.downcast::<PyString>() {
            vec![s.to_str()?.to_owned()]
        } else {
            let mut v = vec![];
            for (i, k) in keys.try_iter()?.enumerate() {
                let k = k?;
                let s = k.downcast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!("key number {} must be a str", i + 1))
                })?;
                v.push(s.to_str()?.to_owned());
            }
            v
        };
        for (i, text) in entries.iter().enumerate() {
            if text.contains('\n') {
                return Err(key_error(
                    i + 1,
                    "holds a line break; give one key per entry",
                ));
            }
            match set.add_file_text(text) {
                Ok(1) => {}
                Ok(_) => return Err(key_error(i + 1, "the POS-KEY is empty")),
                Err(KeysError::Line { reason, .. }) => return Err(key_error(i + 1, reason)),
                Err(e) => return Err(key_error(i + 1, e)),
            }
        }
    }
    if let Some(file) = key_file {
        let text =
            ecr_capture::keys::read_key_file(std::path::Path::new(&file)).map_err(|e| match e {
                TextFileError::Io(e) => {
                    PosKeyError::new_err(format!("key file {file}: cannot read: {e}"))
                }
                other => PosKeyError::new_err(format!(
                    "key file {file}: {other}; a key file holds one POS-KEY per line"
                )),
            })?;
        match set.add_file_text(&text) {
            Ok(0) => {
                return Err(PosKeyError::new_err(format!(
                    "key file {file}: holds no key"
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(PosKeyError::new_err(format!("key file {file}: {e}"))),
        }
    }
    Ok(set)
}

/// Opens every file, or says which one cannot be read and why.
fn open_all(py: Python<'_>, names: &[String]) -> PyResult<Vec<CaptureReader>> {
    let mut readers = Vec::with_capacity(names.len());
    for name in names {
        let path = PathBuf::from(name);
        match py.allow_threads(|| CaptureReader::open(&path)) {
            Ok(r) => readers.push(r),
            Err(SourceError::Open { source, .. }) => {
                return Err(capture_error(py, name, &format!("cannot open: {source}")))
            }
            Err(e) => return Err(capture_error(py, name, &e.to_string())),
        }
    }
    Ok(readers)
}

/// The worker: the command line's analysis loop, records sent as jsonl lines.
fn run(
    readers: Vec<CaptureReader>,
    names: Vec<String>,
    cfg: Config,
    keys: KeySet,
    tx: SyncSender<Line>,
    stop: Arc<AtomicBool>,
) {
    let mut sink = |record: Record| {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let line = serde_json::to_string(&record).map_err(|e| e.to_string());
        if tx.send(line).is_err() {
            // The iterator is gone: nobody wants the rest.
            stop.store(true, Ordering::Relaxed);
        }
    };
    let mut analyzer = Analyzer::new(cfg, keys, &mut sink);
    let mut bytes = 0u64;
    for (mut reader, name) in readers.into_iter().zip(&names) {
        let read = analyzer.read_capture(&mut reader, name, |_| !stop.load(Ordering::Relaxed));
        if stop.load(Ordering::Relaxed) {
            return;
        }
        bytes += read;
    }
    analyzer.finish(bytes, names);
}

/// The records of an analysis, in the order the command line prints them; the
/// last one is the summary. Iterate it once; `close()` (or leaving a `with` block)
/// stops the analysis early.
#[pyclass(module = "ecr_sniff")]
pub struct Records {
    /// None once the analysis has ended or been closed. In a mutex only because a
    /// pyclass must be `Sync`; `&mut self` access never contends for it.
    rx: Mutex<Option<Receiver<Line>>>,
    worker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    files: Vec<String>,
}

impl Records {
    /// The receiver slot (a poisoned lock still holds a usable value).
    fn rx_mut(&mut self) -> &mut Option<Receiver<Line>> {
        match self.rx.get_mut() {
            Ok(rx) => rx,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Stops the worker and waits for it (without the GIL).
    fn shut(&mut self, py: Python<'_>) -> PyResult<()> {
        self.stop.store(true, Ordering::Relaxed);
        *self.rx_mut() = None;
        if let Some(worker) = self.worker.take() {
            if py.allow_threads(|| worker.join()).is_err() {
                return Err(EcrError::new_err(format!(
                    "{}: internal error: the analysis stopped unexpectedly",
                    self.files.join(", ")
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        // The worker sees the flag (or the closed channel) and ends on its own.
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[pymethods]
impl Records {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        loop {
            let Some(rx) = self.rx_mut().take() else {
                return Ok(None);
            };
            let (rx, got) = py.allow_threads(move || {
                let got = rx.recv_timeout(SIGNAL_POLL);
                (rx, got)
            });
            match got {
                Ok(Ok(line)) => {
                    *self.rx_mut() = Some(rx);
                    return json_to_py(py, &line).map(Some);
                }
                Ok(Err(reason)) => {
                    *self.rx_mut() = Some(rx);
                    return Err(EcrError::new_err(format!(
                        "{}: cannot serialise a record: {reason}",
                        self.files.join(", ")
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {
                    *self.rx_mut() = Some(rx);
                    // Ctrl-C while waiting: stop the worker and raise.
                    if let Err(e) = py.check_signals() {
                        self.shut(py)?;
                        return Err(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.shut(py)?;
                    return Ok(None);
                }
            }
        }
    }

    /// Stops the analysis; further iteration ends at once.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.shut(py)
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(
        &mut self,
        py: Python<'_>,
        _args: &Bound<'_, pyo3::types::PyTuple>,
    ) -> PyResult<bool> {
        self.shut(py)?;
        Ok(false)
    }

    /// The files being analysed, as given.
    #[getter]
    fn files(&self) -> Vec<String> {
        self.files.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Records(files={:?}, running={})",
            self.files,
            self.worker.is_some()
        )
    }
}

/// Analyses capture files (pcap, pcapng, gzip-compressed or not; several files
/// are read in order as one capture) and returns an iterator of records shaped
/// like the lines of `ecr-sniff analyze --format jsonl`.
#[pyfunction]
#[pyo3(signature = (path, keys = None, *, key_file = None, http_ports = None, tcp_ports = None, probe = false, tls_keylog = None))]
#[allow(clippy::too_many_arguments)]
pub fn analyze(
    py: Python<'_>,
    path: &Bound<'_, PyAny>,
    keys: Option<&Bound<'_, PyAny>>,
    key_file: Option<&Bound<'_, PyAny>>,
    http_ports: Option<Vec<u16>>,
    tcp_ports: Option<Vec<u16>>,
    probe: bool,
    tls_keylog: Option<&Bound<'_, PyAny>>,
) -> PyResult<Records> {
    let names = paths_of(path)?;
    let key_file = match key_file.filter(|k| !k.is_none()) {
        Some(k) => Some(one_path(k)?),
        None => None,
    };
    let keys = key_set(keys, key_file)?;
    // TLS key logs (SSLKEYLOGFILE format) for HTTPS; never echoed in errors.
    let mut log = ecr_capture::keylog::KeyLog::new();
    if let Some(t) = tls_keylog.filter(|t| !t.is_none()) {
        for file in paths_of(t)? {
            log.load_file(std::path::Path::new(&file))
                .map_err(EcrError::new_err)?;
        }
    }
    let defaults = Config::default();
    let cfg = Config {
        http_ports: http_ports.unwrap_or(defaults.http_ports),
        tcp_ports: tcp_ports.unwrap_or(defaults.tcp_ports),
        probe,
        tls_keylog: log,
        ..Config::default()
    };
    let readers = open_all(py, &names)?;
    let (tx, rx) = sync_channel(CHANNEL_DEPTH);
    let stop = Arc::new(AtomicBool::new(false));
    let worker_stop = Arc::clone(&stop);
    let worker_names = names.clone();
    let worker = std::thread::Builder::new()
        .name("ecr-sniff-analyze".into())
        .spawn(move || run(readers, worker_names, cfg, keys, tx, worker_stop))
        .map_err(|e| EcrError::new_err(format!("cannot start the analysis thread: {e}")))?;
    Ok(Records {
        rx: Mutex::new(Some(rx)),
        worker: Some(worker),
        stop,
        files: names,
    })
}

/// Adds `analyze` and `Records` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Records>()?;
    m.add_function(wrap_pyfunction!(analyze, m)?)?;
    Ok(())
}
