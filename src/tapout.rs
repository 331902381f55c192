//! The live taps' record output, decoupled from stdout: records are formatted on
//! the tap's thread and handed through a bounded queue to a thread that writes
//! them to stdout. A reader that does not keep up (a paused pager, a pipe nobody
//! reads) therefore never holds up relaying, decoding or the `-w` file: when the
//! queue is full the record is dropped and counted, the count is reported on
//! stderr as it grows (at most once a second) and at exit, and memory stays
//! bounded ([`QUEUE_RECORDS`] records, [`QUEUE_BYTES`] bytes).

use std::cell::RefCell;
use std::io::{self, IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecr_capture::output::RecordWriter;
use ecr_capture::record::{Record, Sink};

/// Most records queued for stdout. Room for a burst: `benches/live.sh` at 160-320 K
/// packets/s queued up to about 3,200 records (2 MB of jsonl) while the writing
/// thread waited for a core, and a queue of 1,024 dropped 1,198-2,200 of them.
/// [`QUEUE_BYTES`] usually binds first (about 7,000 jsonl records).
pub const QUEUE_RECORDS: usize = 8192;
/// Most bytes queued for stdout.
pub const QUEUE_BYTES: usize = 4 << 20;
/// How long the summary may wait for room in the queue, and the end for the
/// queue to be written out, as long as the reader is taking something.
pub const PATIENCE: Duration = Duration::from_millis(400);
/// A reader that takes nothing for this long is not waited for.
pub const STUCK_AFTER: Duration = Duration::from_millis(100);
/// Output is written in blocks of about this size...
const BLOCK: usize = 64 << 10;
/// ...and flushed at least this often while records come.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The head of a `--format json` document, carried over when the first record
/// (which begins with it) is dropped.
const JSON_HEAD: &[u8] = b"{\"records\":[\n";

/// A `Write` into a buffer shared with the sink, so that each record's bytes can be
/// taken as one piece.
#[derive(Clone, Default)]
pub struct Piece(Rc<RefCell<Vec<u8>>>);

impl Write for Piece {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Piece {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

/// The record sink of a live tap: see the module documentation.
pub struct TapOutput<'a> {
    writer: Box<dyn RecordWriter + 'a>,
    piece: Piece,
    tx: Option<SyncSender<Vec<u8>>>,
    done: mpsc::Receiver<()>,
    queued: Arc<AtomicUsize>,
    carry: Option<Vec<u8>>,
    error: Option<io::Error>,
    /// Records dropped, and their bytes.
    pub dropped: u64,
    dropped_bytes: u64,
    reported_at: Option<Instant>,
}

impl<'a> TapOutput<'a> {
    /// Starts the stdout thread; `make` builds the record writer over the piece
    /// buffer (e.g. `|p| output_args.writer(p)`).
    pub fn new(make: impl FnOnce(Piece) -> Box<dyn RecordWriter + 'a>) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE_RECORDS);
        let queued = Arc::new(AtomicUsize::new(0));
        let q = Arc::clone(&queued);
        let (done_tx, done) = mpsc::channel();
        // Not joined: at exit it may be blocked in a write nobody reads.
        std::thread::spawn(move || {
            let _ = write_out(&rx, &q, &mut io::stdout(), io::stdout().is_terminal());
            let _ = done_tx.send(());
        });
        let piece = Piece::default();
        TapOutput {
            writer: make(piece.clone()),
            piece,
            tx: Some(tx),
            done,
            queued,
            carry: None,
            error: None,
            dropped: 0,
            dropped_bytes: 0,
            reported_at: None,
        }
    }

    /// Queues `chunk`; when the queue is full, waits as `patience` allows (None:
    /// not at all).
    fn push(&mut self, mut chunk: Vec<u8>, mut patience: Option<Patience>) {
        if chunk.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else { return };
        if let Some(head) = self.carry.take() {
            chunk = with_head(&head, &chunk);
        }
        loop {
            let len = chunk.len();
            let room = self.queued.load(Ordering::Relaxed).saturating_add(len) <= QUEUE_BYTES;
            let r = if room {
                tx.try_send(chunk)
            } else {
                Err(TrySendError::Full(chunk))
            };
            match r {
                Ok(()) => {
                    self.queued.fetch_add(len, Ordering::Relaxed);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    // stdout is closed: nothing more to write, nothing to report.
                    self.tx = None;
                    return;
                }
                Err(TrySendError::Full(c)) => {
                    if let Some(p) = patience.as_mut() {
                        if p.wait() {
                            chunk = c;
                            continue;
                        }
                    }
                    if c.starts_with(JSON_HEAD) {
                        self.carry = Some(JSON_HEAD.to_vec());
                    }
                    self.dropped += 1;
                    self.dropped_bytes += c.len() as u64;
                    self.report_drops();
                    return;
                }
            }
        }
    }

    /// Says on stderr that records are being dropped, at most once a second.
    fn report_drops(&mut self) {
        if self
            .reported_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.reported_at = Some(Instant::now());
        eprintln!(
            "ecr-sniff: stdout is not read fast enough: {} output record(s) dropped so far (relaying and the -w file go on)",
            self.dropped
        );
    }

    /// Ends the output: what is queued is written out if the reader takes it
    /// within [`DRAIN_PATIENCE`]. Returns the first formatting error.
    pub fn finish(mut self) -> io::Result<()> {
        let r = self.writer.finish();
        let chunk = self.piece.take();
        self.push(chunk, Some(Patience::new(&self.queued)));
        // Without a sender the stdout thread ends once the queue is written.
        self.tx = None;
        let mut p = Patience::new(&self.queued);
        while self.done.try_recv().is_err() && p.wait() {}
        if self.dropped > 0 {
            eprintln!(
                "ecr-sniff: {} output record(s) ({} bytes) were dropped because stdout was not read fast enough (relaying and the -w file were not affected)",
                self.dropped, self.dropped_bytes
            );
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        r
    }
}

/// The stdout thread: writes the queued records to `out` in blocks, flushed
/// whenever the queue is empty and at least every [`FLUSH_EVERY`] (after each
/// record when `each` is set: stdout is a terminal). Returns on the first write
/// error (the reader went away: the taps go on without output) or when the queue
/// is closed and empty.
fn write_out(
    rx: &mpsc::Receiver<Vec<u8>>,
    queued: &AtomicUsize,
    out: &mut dyn Write,
    each: bool,
) -> io::Result<()> {
    let mut block: Vec<u8> = Vec::with_capacity(BLOCK);
    while let Ok(chunk) = rx.recv() {
        let started = Instant::now();
        let mut next = Some(chunk);
        while let Some(chunk) = next.take() {
            queued.fetch_sub(chunk.len(), Ordering::Relaxed);
            block.extend_from_slice(&chunk);
            if each || block.len() >= BLOCK || started.elapsed() >= FLUSH_EVERY {
                out.write_all(&block)?;
                out.flush()?;
                block.clear();
            }
            next = rx.try_recv().ok();
        }
        if !block.is_empty() {
            out.write_all(&block)?;
            out.flush()?;
            block.clear();
        }
    }
    Ok(())
}

/// `chunk` (a record after a dropped first one) with the dropped JSON document head
/// in place of its separator.
fn with_head(head: &[u8], chunk: &[u8]) -> Vec<u8> {
    let rest = chunk.strip_prefix(b",\n").unwrap_or(chunk);
    [head, rest].concat()
}

/// Waiting for a reader that is making progress: up to [`PATIENCE`] in all, but
/// not [`STUCK_AFTER`] without any byte taken from the queue.
struct Patience {
    queued: Arc<AtomicUsize>,
    start: Instant,
    last: usize,
    last_change: Instant,
}

impl Patience {
    fn new(queued: &Arc<AtomicUsize>) -> Self {
        let now = Instant::now();
        Patience {
            queued: Arc::clone(queued),
            start: now,
            last: queued.load(Ordering::Relaxed),
            last_change: now,
        }
    }

    /// Sleeps a little; false when it is time to give up.
    fn wait(&mut self) -> bool {
        std::thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        let q = self.queued.load(Ordering::Relaxed);
        if q != self.last {
            self.last = q;
            self.last_change = now;
        }
        now - self.start < PATIENCE && now - self.last_change < STUCK_AFTER
    }
}

impl Sink for TapOutput<'_> {
    fn record(&mut self, record: Record) {
        if let Err(e) = self.writer.write(&record) {
            self.error.get_or_insert(e);
        }
        let chunk = self.piece.take();
        // The summary comes last: give it a moment, if the reader is reading.
        let patience = matches!(record, Record::Summary(_)).then(|| Patience::new(&self.queued));
        self.push(chunk, patience);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_capture::output::{writer, Format};
    use ecr_capture::record::SummaryRecord;

    /// Records are written in blocks, all of them, in order, and the writer ends
    /// when the queue is closed.
    #[test]
    fn stdout_thread_writes_blocks_in_order() {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4096);
        let queued = AtomicUsize::new(0);
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let rec = format!("{{\"n\":{i}}}\n").into_bytes();
            queued.fetch_add(rec.len(), Ordering::Relaxed);
            want.extend_from_slice(&rec);
            tx.send(rec).unwrap();
        }
        drop(tx);
        #[derive(Default)]
        struct Counting {
            bytes: Vec<u8>,
            writes: usize,
        }
        impl Write for Counting {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.writes += 1;
                self.bytes.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Counting::default();
        write_out(&rx, &queued, &mut out, false).unwrap();
        assert_eq!(out.bytes, want);
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        // 3000 records of ~10 bytes: one block, not one write per record.
        assert!(out.writes < 10, "{} writes", out.writes);
    }

    /// A JSON document stays valid when its first record (with the head) is
    /// dropped: the head moves to the next record that gets through.
    #[test]
    fn json_document_survives_a_dropped_first_record() {
        let piece = Piece::default();
        let mut w = writer(Format::Json, piece.clone(), false);
        let rec = Record::Summary(SummaryRecord::default());
        w.write(&rec).unwrap();
        let first = piece.take();
        assert!(first.starts_with(JSON_HEAD));
        w.write(&rec).unwrap();
        let second = piece.take();
        w.finish().unwrap();
        let end = piece.take();
        // Drop `first`; the rest, mended, is a valid document of one record.
        let doc = [with_head(JSON_HEAD, &second), end].concat();
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(v["records"].as_array().map(Vec::len), Some(1));
    }
}
