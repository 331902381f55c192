//! Two cores with the capture read once: decoding (and writing) on a second
//! thread.
//!
//! Decoding a message body (JSON parsing, AES, MD5, the content checks) depends
//! only on the body's bytes, the keys of its terminal and where it was seen
//! ([`Context`]), never on earlier messages. So the analyzer's thread hands each
//! body to a second thread and goes on reading, reassembling and framing the
//! packets after it; what it does with a decoding (numbering the message, pairing
//! transactions, findings, the record) waits in a queue of deferred steps, in the
//! order one thread would have taken them, until the decoding is back. The
//! analyzer (`analyzer.rs`, `Deferred`) decides what may be deferred and runs
//! every step that reads what a deferred one writes only after the queue is empty,
//! so the records are those of one thread by construction.
//!
//! The second thread may also write the records ([`channel`] with `writes`): a
//! record is mostly what its decoding made (the content and response trees), so
//! rendering it where it was made, and freeing it there, spares the analyzer's
//! thread the cache misses of reading the other core's memory; and it is the
//! rendering that balances the work (decoding alone is less than what the
//! analyzer's thread keeps).
//!
//! This module is the hand-over: jobs in order, their decodings in the same order,
//! and batches of records. The second thread takes the oldest jobs; when the
//! analyzer needs a decoding that thread has not started, it takes the job back
//! and decodes it itself, so neither core waits for work the other has not begun.
//! Records are written in the order they were emitted, and the analyzer waits
//! when [`MAX_RECORD_BATCHES`] are waiting to be written (bounded memory).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::analyzer::Body;
use crate::keys::KeySet;
use crate::message::{decode_body, Context, Decoded};
use crate::record::{Record, Sink};

struct Job {
    seq: u64,
    body: Box<Body>,
    ctx: Context,
    server: Option<SocketAddr>,
}

impl Job {
    /// Decodes the job's body with its terminal's keys (on either thread).
    fn decode(&self, keys: &mut KeySet) -> Decoded {
        let (ring, numbers) = keys.for_terminal(self.server);
        decode_body(self.body.bytes(), ring, numbers, &self.ctx)
    }
}

type Done = (u64, Box<Body>, Decoded);

struct Inner {
    /// Jobs not yet taken by the second thread, oldest first.
    jobs: VecDeque<Job>,
    /// Decodings made by the second thread, in the order of their jobs.
    done: VecDeque<Done>,
    /// Records to write, in batches, oldest first.
    records: VecDeque<Vec<Record>>,
    /// The second thread sleeps (waits for work).
    asleep: bool,
    /// The analyzer waits for a decoding, or for room for records.
    waiting: bool,
    /// No more jobs or records: the second thread ends once it has written all.
    closed: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Work came (for the second thread).
    work: Condvar,
    /// A decoding came or records were written (for the analyzer).
    progress: Condvar,
    /// Jobs and record batches handed over so far: the second thread looks at it
    /// before it sleeps.
    handed: AtomicU64,
    /// One more than the sequence number of the last decoding made by the second
    /// thread (jobs are taken oldest first, so every job before it is done).
    done_upto: AtomicU64,
    /// Decodings made by the second thread.
    made: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic on the other thread poisons the lock; the data is still whole
        // (each step leaves it consistent), so go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After the analyzer put work in `g`: counts the hand-over (the helper looks
    /// at the count while it spins) and wakes the helper if it sleeps.
    fn handed_over(&self, g: MutexGuard<'_, Inner>) {
        let wake = g.asleep;
        drop(g);
        self.handed.fetch_add(1, Ordering::Release);
        if wake {
            self.work.notify_one();
        }
    }

    /// After the helper made progress in `g`: wakes the analyzer if it waits.
    fn progressed(&self, g: MutexGuard<'_, Inner>) {
        let wake = g.waiting;
        drop(g);
        if wake {
            self.progress.notify_one();
        }
    }
}

/// How often the second thread looks for work before it sleeps, and the analyzer
/// for a decoding under way before it sleeps: sleeping and being woken cost a
/// system call on each side, more than a decoding.
const SPINS: u32 = 4000;
/// Jobs handed over, and taken by the second thread, at a time: each hand-over
/// moves the lock and the queues between the cores, which costs about what a
/// decoding does when done for each.
const BATCH: usize = 8;
/// Records handed over at a time.
const RECORD_BATCH: usize = 64;
/// Batches of records waiting to be written, at most (about 1,000 records).
pub const MAX_RECORD_BATCHES: usize = 16;
/// From this many batches waiting on, the second thread writes before it decodes.
const WRITE_FIRST: usize = MAX_RECORD_BATCHES / 2;

/// How the work was divided between the threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Decodings made by the second thread.
    pub by_helper: u64,
    /// Jobs the analyzer took back and decoded itself when their turn came.
    pub taken_back: u64,
    /// Jobs the analyzer decoded while the helper was busy with the one it needed.
    pub stolen: u64,
    /// Times the analyzer waited for a decoding under way or for room for records.
    pub waits: u64,
    /// The most deferred steps that waited at once (at most one over
    /// [`crate::analyzer::MAX_DEFERRED_STEPS`]).
    pub peak_steps: usize,
}

/// Creates the two ends: give the [`Feeder`] to the analyzer
/// ([`crate::analyzer::Analyzer::decode_with`]) and run the [`Helper`] on another
/// thread. With `writes`, the helper writes the analyzer's records to the sink it
/// is given; otherwise the analyzer writes them to its own.
pub fn channel(keys: KeySet, writes: bool) -> (Feeder, Helper) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            jobs: VecDeque::new(),
            done: VecDeque::new(),
            records: VecDeque::new(),
            asleep: false,
            waiting: false,
            closed: false,
        }),
        work: Condvar::new(),
        progress: Condvar::new(),
        handed: AtomicU64::new(0),
        done_upto: AtomicU64::new(0),
        made: AtomicU64::new(0),
    });
    (
        Feeder {
            shared: Arc::clone(&shared),
            keys: keys.clone(),
            stolen: BTreeMap::new(),
            writes,
            next_seq: 0,
            batch: Vec::with_capacity(BATCH),
            ready: VecDeque::new(),
            records: Vec::with_capacity(RECORD_BATCH),
            stats: PipelineStats::default(),
        },
        Helper { shared, keys },
    )
}

/// The analyzer's end: see the module documentation.
pub struct Feeder {
    shared: Arc<Shared>,
    /// For the jobs this thread decodes while the helper is busy with the one it
    /// waits for.
    keys: KeySet,
    /// Decodings made here of the newest jobs, by sequence number (a few).
    stolen: BTreeMap<u64, (Box<Body>, Decoded)>,
    writes: bool,
    next_seq: u64,
    /// Jobs not handed over yet (fewer than [`BATCH`]), oldest first.
    batch: Vec<Job>,
    /// Decodings moved out from under the lock, oldest first.
    ready: VecDeque<Done>,
    /// Records not handed over yet.
    records: Vec<Record>,
    stats: PipelineStats,
}

impl Feeder {
    /// Whether the helper writes the records.
    pub(crate) fn writes(&self) -> bool {
        self.writes
    }

    /// Hands a body over for decoding; returns its sequence number (the analyzer
    /// takes decodings in the order it submits them).
    pub(crate) fn submit(
        &mut self,
        body: Box<Body>,
        ctx: Context,
        server: Option<SocketAddr>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.batch.push(Job {
            seq,
            body,
            ctx,
            server,
        });
        if self.batch.len() >= BATCH {
            self.hand_over();
        }
        seq
    }

    /// Hands the jobs of the batch over.
    fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut g = self.shared.lock();
        g.jobs.extend(self.batch.drain(..));
        self.shared.handed_over(g);
    }

    /// A record for the helper to write (see [`Feeder::writes`]).
    pub(crate) fn emit(&mut self, record: Record) {
        self.records.push(record);
        if self.records.len() >= RECORD_BATCH {
            self.hand_over_records();
        }
    }

    fn hand_over_records(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.records, Vec::with_capacity(RECORD_BATCH));
        let mut g = self.shared.lock();
        if g.records.len() >= MAX_RECORD_BATCHES && !g.closed {
            self.stats.waits += 1;
            // The helper writes first from WRITE_FIRST batches on (it is awake:
            // there are records to write), and says when it has made room.
            g = self.wait(g, |i| i.records.len() >= MAX_RECORD_BATCHES);
        }
        g.records.push_back(batch);
        self.shared.handed_over(g);
    }

    /// Whether the decoding of job `seq` is back (it never waits; a job still in
    /// the batch is handed over, so that it will be).
    pub(crate) fn is_ready(&mut self, seq: u64) -> bool {
        if self.ready.front().is_some_and(|r| r.0 == seq)
            || self.shared.done_upto.load(Ordering::Acquire) > seq
            || self.stolen.contains_key(&seq)
        {
            return true;
        }
        if self.batch.first().is_some_and(|j| j.seq <= seq) {
            self.hand_over();
        }
        false
    }

    /// Job `seq`, the oldest not yet taken: its body and, when the helper made it,
    /// its decoding (`None`: the job was taken back, decode it here). Waits only
    /// for a decoding under way.
    pub(crate) fn take(&mut self, seq: u64) -> Option<(Box<Body>, Option<Decoded>)> {
        let mut spins = 0u32;
        loop {
            if let Some((body, d)) = self.stolen.remove(&seq) {
                return Some((body, Some(d)));
            }
            if let Some(r) = self.ready.front() {
                if r.0 == seq {
                    let (_, body, d) = self.ready.pop_front()?;
                    return Some((body, Some(d)));
                }
                // Decodings come back in order: an older one is a bug of the
                // caller's; drop it rather than hand out the wrong one.
                if r.0 < seq {
                    self.ready.pop_front();
                    continue;
                }
                return None;
            }
            if self.batch.first().is_some_and(|j| j.seq == seq) {
                let job = self.batch.remove(0);
                self.stats.taken_back += 1;
                return Some((job.body, None));
            }
            let mut g = self.shared.lock();
            if !g.done.is_empty() {
                self.ready.extend(g.done.drain(..));
                continue;
            }
            if g.jobs.front().is_some_and(|j| j.seq == seq) {
                let job = g.jobs.pop_front()?;
                drop(g);
                self.stats.taken_back += 1;
                return Some((job.body, None));
            }
            if g.jobs.front().is_some_and(|j| j.seq < seq) || g.closed {
                return None;
            }
            // The helper has it. Rather than wait, decode the newest job here.
            if let Some(job) = g.jobs.pop_back() {
                drop(g);
                let d = job.decode(&mut self.keys);
                self.stats.stolen += 1;
                self.stolen.insert(job.seq, (job.body, d));
                continue;
            }
            // Nothing left to do but wait: a few microseconds. Look without the lock.
            if spins < SPINS {
                drop(g);
                while spins < SPINS && self.shared.done_upto.load(Ordering::Acquire) <= seq {
                    spins += 1;
                    std::hint::spin_loop();
                }
                continue;
            }
            self.stats.waits += 1;
            drop(self.wait(g, |i| i.done.is_empty()));
        }
    }

    /// Sleeps while `until_not` holds and the helper is there, woken by the helper's
    /// progress.
    fn wait<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        until_not: impl Fn(&Inner) -> bool,
    ) -> MutexGuard<'a, Inner> {
        g.waiting = true;
        g = self
            .shared
            .progress
            .wait_while(g, |i| until_not(i) && !i.closed)
            .unwrap_or_else(|e| e.into_inner());
        g.waiting = false;
        g
    }

    /// How the work was divided so far.
    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            by_helper: self.shared.made.load(Ordering::Relaxed),
            ..self.stats
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.hand_over_records();
        let mut g = self.shared.lock();
        g.closed = true;
        g.jobs.clear();
        drop(g);
        self.shared.work.notify_one();
    }
}

/// The second thread's end: see the module documentation.
pub struct Helper {
    shared: Arc<Shared>,
    keys: KeySet,
}

/// What the helper does next.
enum Work {
    Decode(Vec<Job>),
    Write(Vec<Record>),
    End,
}

impl Helper {
    /// Decodes the jobs and writes the records of the feeder's analyzer to `sink`
    /// (when the channel was made with `writes`) until the feeder is dropped and
    /// every record is written.
    pub fn run(mut self, sink: &mut dyn Sink) {
        let shared = Arc::clone(&self.shared);
        // However this ends (a panic in a decoding or in the sink included), the
        // analyzer must not wait for this thread any more.
        struct Gone<'a>(&'a Shared);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                let mut g = self.0.lock();
                g.closed = true;
                drop(g);
                self.0.progress.notify_all();
            }
        }
        let _gone = Gone(&shared);
        let mut seen = 0u64;
        let mut jobs: Vec<Job> = Vec::with_capacity(BATCH);
        let mut done: Vec<Done> = Vec::with_capacity(BATCH);
        loop {
            match self.next(&shared, &mut seen, &mut jobs) {
                Work::End => return,
                Work::Write(batch) => {
                    for r in batch {
                        sink.record(r);
                    }
                    shared.progressed(shared.lock());
                }
                Work::Decode(mut batch) => {
                    let mut last = 0;
                    for job in batch.drain(..) {
                        let d = job.decode(&mut self.keys);
                        last = job.seq;
                        done.push((job.seq, job.body, d));
                    }
                    jobs = batch;
                    let made = done.len() as u64;
                    let mut g = shared.lock();
                    g.done.extend(done.drain(..));
                    shared.done_upto.store(last + 1, Ordering::Release);
                    shared.made.fetch_add(made, Ordering::Relaxed);
                    shared.progressed(g);
                }
            }
        }
    }

    /// Waits for work: records first when many wait, then jobs, then records.
    fn next(&self, shared: &Shared, seen: &mut u64, jobs: &mut Vec<Job>) -> Work {
        let mut spins = 0u32;
        loop {
            let mut g = shared.lock();
            if g.records.len() >= WRITE_FIRST {
                if let Some(b) = g.records.pop_front() {
                    return Work::Write(b);
                }
            }
            if !g.jobs.is_empty() {
                let n = g.jobs.len().min(BATCH);
                jobs.extend(g.jobs.drain(..n));
                return Work::Decode(std::mem::take(jobs));
            }
            if let Some(b) = g.records.pop_front() {
                return Work::Write(b);
            }
            if g.closed {
                return Work::End;
            }
            if spins < SPINS {
                drop(g);
                // Look without the lock until something was handed over.
                while spins < SPINS && shared.handed.load(Ordering::Acquire) == *seen {
                    spins += 1;
                    std::hint::spin_loop();
                }
                *seen = shared.handed.load(Ordering::Acquire);
                continue;
            }
            g.asleep = true;
            while g.jobs.is_empty() && g.records.is_empty() && !g.closed {
                g = shared.work.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            g.asleep = false;
            spins = 0;
        }
    }
}
