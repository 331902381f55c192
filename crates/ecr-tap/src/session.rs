//! Runs a [`Relay`] on its own thread and hands what it sees to the caller on the
//! calling thread, together with the two timers a live decoder needs:
//!
//! - [`TapEvent::Idle`]: a side has been quiet for [`IDLE_AFTER`] after sending, so
//!   bytes held back waiting for the rest of a frame can be written to the capture
//!   file (it stays valid and complete while the line is quiet);
//! - [`TapEvent::Tick`]: the time now, every [`TICK_EVERY`], so that rules such as
//!   the 1000 ms ack timeout fire while the line is silent instead of at the next
//!   byte.
//!
//! The caller (decoder, printer, file writer) can be slow without slowing the relay:
//! events queue up between the threads, in a bounded queue ([`QUEUE_EVENTS`] events,
//! [`QUEUE_BYTES`] bytes). The relay never waits for the caller: when the queue is
//! full, what the relay saw is still passed on between the ports but not handed to
//! the caller, and [`TapEvent::Lost`] says how much.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecr_proto::link::Side;
use ecr_proto::Timestamp;

use crate::relay::{now, Relay, RelayEvent};

/// Quiet time after which a side's held-back bytes are written out.
pub const IDLE_AFTER: Duration = Duration::from_millis(200);
/// Period of [`TapEvent::Tick`].
pub const TICK_EVERY: Duration = Duration::from_millis(100);
/// Most events queued for the caller.
pub const QUEUE_EVENTS: usize = 4096;
/// Most data bytes queued for the caller.
pub const QUEUE_BYTES: usize = 8 << 20;

/// What the caller of [`run`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapEvent {
    /// Something the relay saw.
    Relay(RelayEvent),
    /// `side` has sent nothing for [`IDLE_AFTER`] since its last bytes.
    Idle(Side),
    /// The wall clock, for timers.
    Tick(Timestamp),
    /// The caller fell so far behind that the queue was full: in all, `bytes`
    /// relayed bytes (in `events` events) were not handed to it (they were still
    /// passed on between the ports). Sent when the count grows.
    Lost {
        /// Events not delivered, in all.
        events: u64,
        /// Data bytes among them, in all.
        bytes: u64,
    },
}

/// Runs `relay` until `stop` is set (by a signal, or by `on` returning
/// `ControlFlow::Break`), calling `on` for every event; events already seen by the
/// relay are all delivered before this returns.
pub fn run(
    mut relay: Relay,
    stop: Arc<AtomicBool>,
    mut on: impl FnMut(TapEvent) -> ControlFlow<()>,
) {
    let (tx, rx) = mpsc::sync_channel::<RelayEvent>(QUEUE_EVENTS);
    let relay_stop = Arc::clone(&stop);
    let queued = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let (queued2, lost2) = (Arc::clone(&queued), Arc::clone(&lost));
    let handle = std::thread::spawn(move || {
        relay.run(&relay_stop, |ev| {
            let n = data_len(&ev);
            let full = queued2.load(Ordering::Relaxed).saturating_add(n) > QUEUE_BYTES;
            let sent = if full {
                Err(TrySendError::Full(ev))
            } else {
                tx.try_send(ev)
            };
            match sent {
                Ok(()) => {
                    queued2.fetch_add(n, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_)) => {
                    lost2.0.fetch_add(1, Ordering::Relaxed);
                    lost2.1.fetch_add(n as u64, Ordering::Relaxed);
                }
                // The receiver only goes away once the relay has stopped.
                Err(TrySendError::Disconnected(_)) => {}
            }
        });
        // The relay (and a pty's link) is dropped here, when it stops.
    });
    let mut lost_seen = 0u64;
    let mut quiet_since: [Option<Instant>; 2] = [None, None];
    let mut last_tick = Instant::now();
    let mut deliver = |ev: TapEvent, stop: &AtomicBool| {
        if on(ev).is_break() {
            stop.store(true, Ordering::Relaxed);
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(ev) => {
                queued.fetch_sub(data_len(&ev), Ordering::Relaxed);
                if let RelayEvent::Data { from, .. } = &ev {
                    if let Some(q) = quiet_since.get_mut(side_idx(*from)) {
                        *q = Some(Instant::now());
                    }
                }
                deliver(TapEvent::Relay(ev), &stop);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        for (i, side) in [Side::Ecr, Side::Pos].into_iter().enumerate() {
            if let Some(q) = quiet_since.get_mut(i) {
                if q.is_some_and(|t| t.elapsed() >= IDLE_AFTER) {
                    *q = None;
                    deliver(TapEvent::Idle(side), &stop);
                }
            }
        }
        let lost_now = lost.0.load(Ordering::Relaxed);
        if lost_now > lost_seen {
            lost_seen = lost_now;
            let bytes = lost.1.load(Ordering::Relaxed);
            deliver(
                TapEvent::Lost {
                    events: lost_now,
                    bytes,
                },
                &stop,
            );
        }
        if last_tick.elapsed() >= TICK_EVERY {
            last_tick = Instant::now();
            deliver(TapEvent::Tick(now()), &stop);
        }
    }
    // The relay thread has ended (its sender is gone); it never panics, and if it
    // did there would be nothing more to deliver.
    let _ = handle.join();
}

fn data_len(ev: &RelayEvent) -> usize {
    match ev {
        RelayEvent::Data { bytes, .. } => bytes.len(),
        _ => 0,
    }
}

fn side_idx(side: Side) -> usize {
    match side {
        Side::Ecr => 0,
        Side::Pos => 1,
    }
}
