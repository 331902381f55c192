//! Decoding ahead on a second core.
//!
//! Decoding a message body (JSON parsing, AES, MD5, the content checks: about 40%
//! of the work on ECR-dense traffic) depends only on the body's bytes, the keys
//! for its terminal and where it was seen ([`Context`]): not on anything the
//! analyzer learnt from earlier messages. So a second [`Analyzer`] can run over
//! the same capture on another thread, as a *producer*: it reads and reassembles
//! like the first one but only decodes bodies, and hands each [`Decoded`] over. The
//! first analyzer, the *consumer*, does everything else exactly as on one thread
//! and takes a body's decoding from the producer when it is there, or decodes the
//! body itself when it is not (the producer is behind, or went another way).
//!
//! Output is the same as on one thread by construction:
//! - each decoding handed over is tagged with where the body came up (the
//!   consumer's packet count and the body's ordinal within that packet) and with a
//!   [`Check`] of its inputs (a hash and the length of the body, the context, the
//!   terminal's key numbers); the consumer uses it only when both are equal to its
//!   own, and decodes the body itself otherwise;
//! - the producer decodes only bodies well ahead of the consumer (which publishes
//!   its packet count) and skips the others, which lets it get ahead again (it
//!   reassembles faster than the consumer does its part); the consumer decodes
//!   what was skipped. So each body is decoded once, and the work divides itself
//!   between the cores whichever is faster.
//!
//! Each analyzer keeps its own tables within its own limits (`analyze -j 2` gives
//! the producer a quarter of the memory budget); where a limit makes their paths
//! part (an eviction in one only), the checks stop matching and the consumer
//! decodes alone from there: slower, never different.
//!
//! [`Analyzer`]: crate::analyzer::Analyzer

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

use ecr_proto::Timestamp;

use crate::message::{Context, Decoded};
use crate::record::{Direction, Transport};

/// Decodings handed over in one batch (fewer hand-overs between the cores).
const BATCH: usize = 8;
/// Batches in flight: bounds the producer's lead and the memory it holds.
const BATCHES_IN_FLIGHT: usize = 64;

/// Packets the producer keeps between itself and the consumer before it decodes:
/// closer than that, a decoding would often come too late (the consumer decodes
/// the body itself meanwhile), so the producer only reassembles, which is faster
/// than what the consumer does per packet, until it is that far ahead again. The
/// consumer decodes the bodies the producer skipped: each body is decoded once,
/// by whichever core has the time.
const LEAD: u64 = 128;

/// Bodies longer than this are not decoded ahead (the consumer decodes them): ECR
/// messages are a few hundred bytes, and the tree of a long crafted body can be
/// tens of times its size.
const MAX_AHEAD_BODY: usize = 64 << 10;
/// Body bytes of the decodings handed over and not yet taken (or passed) by the
/// consumer: the producer decodes nothing more ahead while they are over this. On
/// ECR traffic the batches in flight hold about 350 KB of bodies; this bounds what
/// their trees can take when the bodies are crafted (a 1 MiB body of `[{},{},...]`
/// once made 512 decodings in flight take 340 MB).
const MAX_IN_FLIGHT_BYTES: usize = 512 << 10;

/// Where a body came up: the analyzer's packet count and the body's ordinal among
/// the bodies of that packet. Both analyzers see the same packets in the same
/// order, so equal positions name the same body unless their paths parted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub packet: u64,
    pub ordinal: u32,
}

/// The inputs of a decoding: equal checks mean equal decodings. The body, the
/// addresses and the key numbers are compared by a 64-bit hash with a seed drawn
/// per process (no copies cross between the cores); the rest as they are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Check {
    hash: u64,
    len: usize,
    transport: Transport,
    direction: Direction,
    ts: Timestamp,
    packet: Option<u64>,
}

/// The hasher of every check: both threads must hash alike, and its seed is drawn
/// once per process, so that a crafted capture cannot aim at a collision between a
/// body the producer saw and a different one the consumer sees at the same position
/// (where a limit made their paths part).
static HASHER: std::sync::OnceLock<foldhash::quality::RandomState> = std::sync::OnceLock::new();

impl Check {
    pub(crate) fn new(body: &[u8], ctx: &Context, key_numbers: &[usize]) -> Check {
        let mut h = HASHER.get_or_init(Default::default).build_hasher();
        h.write(body);
        h.write(ctx.src.as_bytes());
        h.write_u8(0xff);
        h.write(ctx.dst.as_bytes());
        h.write_u8(0xff);
        for n in key_numbers {
            h.write_usize(*n);
        }
        Check {
            hash: h.finish(),
            len: body.len(),
            transport: ctx.transport,
            direction: ctx.direction,
            ts: ctx.ts,
            packet: ctx.packet,
        }
    }

    /// Whether this check describes these inputs: the cheap fields first.
    fn matches(&self, body: &[u8], ctx: &Context, key_numbers: &[usize]) -> bool {
        self.len == body.len()
            && self.ts == ctx.ts
            && self.packet == ctx.packet
            && self.direction == ctx.direction
            && self.transport == ctx.transport
            && *self == Check::new(body, ctx, key_numbers)
    }
}

struct Entry {
    at: Position,
    check: Check,
    decoded: Decoded,
}

/// What both ends share besides the channel.
#[derive(Default)]
struct Shared {
    /// The consumer's packet count: bodies at or before it are not decoded ahead.
    consumer_at: AtomicU64,
    /// Set when the consumer has gone: the producer stops.
    done: AtomicBool,
    /// Body bytes of the decodings given and not yet popped by the consumer (see
    /// [`MAX_IN_FLIGHT_BYTES`]).
    in_flight: AtomicUsize,
}

/// Creates the two ends.
pub fn channel() -> (Producer, Consumer) {
    channel_with(BATCHES_IN_FLIGHT, LEAD, MAX_IN_FLIGHT_BYTES)
}

/// [`channel`] with room for `batches` batches of decodings in flight (the
/// producer waits when they are all taken), a `lead` of so many packets (see
/// [`LEAD`]) and at most `in_flight_bytes` of bodies in flight (see
/// [`MAX_IN_FLIGHT_BYTES`]): for tests that run the producer to its end before the
/// consumer starts (a lead of 0 and no byte bound decode every body up to
/// [`MAX_AHEAD_BODY`]).
pub fn channel_with(batches: usize, lead: u64, in_flight_bytes: usize) -> (Producer, Consumer) {
    let (tx, rx) = std::sync::mpsc::sync_channel(batches);
    let shared = Arc::new(Shared::default());
    (
        Producer {
            tx: Some(tx),
            batch: Vec::with_capacity(BATCH),
            shared: Arc::clone(&shared),
            decoded: 0,
            skipped: 0,
            lead,
            in_flight_bytes,
        },
        Consumer {
            rx,
            queue: VecDeque::new(),
            shared,
            stats: AheadStats::default(),
        },
    )
}

/// The producer's end: see the module documentation. Give it to
/// [`crate::analyzer::Analyzer::decode_ahead_for`].
pub struct Producer {
    tx: Option<SyncSender<Vec<Entry>>>,
    batch: Vec<Entry>,
    shared: Arc<Shared>,
    decoded: u64,
    skipped: u64,
    /// See [`LEAD`].
    lead: u64,
    /// See [`MAX_IN_FLIGHT_BYTES`].
    in_flight_bytes: usize,
}

impl Producer {
    /// Whether a body of `len` bytes at `at` is still worth decoding (and within
    /// the bounds of what may be in flight).
    pub(crate) fn wants(&mut self, at: Position, len: usize) -> bool {
        let consumer_at = self.shared.consumer_at.load(Ordering::Relaxed);
        let in_flight = self.shared.in_flight.load(Ordering::Relaxed);
        let wanted = self.tx.is_some()
            && at.packet > consumer_at.saturating_add(self.lead)
            && len <= MAX_AHEAD_BODY
            && in_flight.saturating_add(len) <= self.in_flight_bytes;
        if !wanted {
            self.skipped += 1;
        }
        wanted
    }

    /// Hands a decoding over (in batches).
    pub(crate) fn give(&mut self, at: Position, check: Check, decoded: Decoded) {
        self.decoded += 1;
        self.shared
            .in_flight
            .fetch_add(check.len, Ordering::Relaxed);
        self.batch.push(Entry { at, check, decoded });
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    /// Sends what is batched.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if let Some(tx) = &self.tx {
            if tx.send(batch).is_err() {
                self.tx = None;
            }
        }
    }

    /// Whether the consumer has gone (the producer can stop reading).
    pub fn consumer_gone(&self) -> bool {
        self.tx.is_none() || self.shared.done.load(Ordering::Relaxed)
    }

    /// A handle that tells whether the consumer has gone, for use while the
    /// producer's analyzer is borrowed (e.g. in the `keep_going` of
    /// [`crate::analyzer::Analyzer::read_capture`]).
    pub fn gone_flag(&self) -> GoneFlag {
        GoneFlag(Arc::clone(&self.shared))
    }

    /// Bodies decoded and handed over, and bodies skipped because the consumer
    /// had passed them.
    pub fn counts(&self) -> (u64, u64) {
        (self.decoded, self.skipped)
    }
}

/// See [`Producer::gone_flag`].
pub struct GoneFlag(Arc<Shared>);

impl GoneFlag {
    /// Whether the consumer has gone.
    pub fn is_set(&self) -> bool {
        self.0.done.load(Ordering::Relaxed)
    }
}

/// How the consumer's bodies were decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AheadStats {
    /// Decodings taken from the producer.
    pub taken: u64,
    /// Bodies the consumer decoded itself.
    pub own: u64,
    /// Decodings handed over but not used (passed, or their checks differed).
    pub wasted: u64,
}

/// The consumer's end: see the module documentation. Give it to
/// [`crate::analyzer::Analyzer::decode_ahead`].
pub struct Consumer {
    rx: Receiver<Vec<Entry>>,
    queue: VecDeque<Entry>,
    shared: Arc<Shared>,
    stats: AheadStats,
}

impl Consumer {
    /// Tells the producer where the consumer is (each packet).
    pub(crate) fn at_packet(&self, packet: u64) {
        self.shared.consumer_at.store(packet, Ordering::Relaxed);
    }

    /// The producer's decoding of the body at `at`, if it made one for the same
    /// inputs. Never waits for the producer.
    pub(crate) fn take(
        &mut self,
        at: Position,
        body: &[u8],
        ctx: &Context,
        key_numbers: &[usize],
    ) -> Option<Decoded> {
        loop {
            if self.queue.is_empty() {
                match self.rx.try_recv() {
                    Ok(batch) => self.queue.extend(batch),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
                continue;
            }
            let front_at = self.queue.front().map(|e| e.at)?;
            if front_at < at {
                self.pop();
                self.stats.wasted += 1;
                continue;
            }
            if front_at > at {
                break;
            }
            let e = self.pop()?;
            if e.check.matches(body, ctx, key_numbers) {
                self.stats.taken += 1;
                return Some(e.decoded);
            }
            self.stats.wasted += 1;
            break;
        }
        self.stats.own += 1;
        None
    }

    /// The queue's first entry, its body bytes no longer in flight.
    fn pop(&mut self) -> Option<Entry> {
        let e = self.queue.pop_front()?;
        // Given (and counted) before it was sent: never more than is counted.
        self.shared
            .in_flight
            .fetch_sub(e.check.len, Ordering::Relaxed);
        Some(e)
    }

    /// How the bodies were decoded so far.
    pub fn stats(&self) -> AheadStats {
        self.stats
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::decode_body;
    use ecr_proto::cipher::KeyRing;

    fn ctx(ts: i64) -> Context {
        Context {
            transport: Transport::Tcp,
            src: "10.0.0.1:4000".into(),
            dst: "10.0.0.2:9002".into(),
            direction: Direction::EcrToPos,
            ts: Timestamp(ts),
            packet: Some(1),
        }
    }

    const BODY: &[u8] = br#"{"content":{"func_type":1001,"amt":"1.00"},"digest":"x"}"#;

    #[test]
    fn taken_only_when_position_and_inputs_match() {
        let (mut p, mut c) = channel();
        let ring = KeyRing::new();
        let at = |packet, ordinal| Position { packet, ordinal };
        for (pos, ts) in [
            (at(2, 0), 5),
            (at(3, 0), 6),
            (at(4, 0), 7),
            (at(4, 1), 8),
            (at(5, 0), 9),
        ] {
            let cx = ctx(ts);
            p.give(
                pos,
                Check::new(BODY, &cx, &[1]),
                decode_body(BODY, &ring, &[1], &cx),
            );
        }
        p.flush();
        // Position 1: nothing there (the producer starts later); decoded here.
        assert!(c.take(at(1, 0), BODY, &ctx(4), &[1]).is_none());
        // Position 2 matches.
        let d = c.take(at(2, 0), BODY, &ctx(5), &[1]).expect("taken");
        assert_eq!(d.record.bytes, BODY.len());
        // Position 3 with another body: not taken.
        assert!(c.take(at(3, 0), b"{}", &ctx(6), &[1]).is_none());
        // Position 4.0 with other key numbers: not taken; 4.1 taken.
        assert!(c.take(at(4, 0), BODY, &ctx(7), &[2]).is_none());
        assert!(c.take(at(4, 1), BODY, &ctx(8), &[1]).is_some());
        // Position 5 seen from another address: not taken.
        let mut other = ctx(9);
        other.src = "10.0.0.3:4000".into();
        assert!(c.take(at(5, 0), BODY, &other, &[1]).is_none());
        assert_eq!(
            c.stats(),
            AheadStats {
                taken: 2,
                own: 4,
                wasted: 3
            }
        );
    }

    #[test]
    fn producer_skips_what_the_consumer_passed_and_stops_when_it_goes() {
        let (mut p, c) = channel();
        c.at_packet(10);
        let ahead = Position {
            packet: 11 + LEAD,
            ordinal: 0,
        };
        assert!(!p.wants(
            Position {
                packet: 10 + LEAD,
                ordinal: 0
            },
            100
        ));
        assert!(p.wants(ahead, 100));
        // Long bodies are left to the consumer, and so is everything while the
        // bodies in flight are at the bound.
        assert!(!p.wants(ahead, MAX_AHEAD_BODY + 1));
        p.shared
            .in_flight
            .store(MAX_IN_FLIGHT_BYTES - 100, Ordering::Relaxed);
        assert!(p.wants(ahead, 100));
        assert!(!p.wants(ahead, 101));
        p.shared.in_flight.store(0, Ordering::Relaxed);
        assert!(!p.consumer_gone());
        drop(c);
        assert!(p.consumer_gone());
        assert_eq!(p.counts(), (0, 3));
    }
}
