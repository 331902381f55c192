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
//! events queue up between the threads.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecr_proto::link::Side;
use ecr_proto::Timestamp;

use crate::relay::{now, Relay, RelayEvent};

/// Quiet time after which a side's held-back bytes are written out.
pub const IDLE_AFTER: Duration = Duration::from_millis(200);
/// Period of [`TapEvent::Tick`].
pub const TICK_EVERY: Duration = Duration::from_millis(100);

/// What the caller of [`run`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapEvent {
    /// Something the relay saw.
    Relay(RelayEvent),
    /// `side` has sent nothing for [`IDLE_AFTER`] since its last bytes.
    Idle(Side),
    /// The wall clock, for timers.
    Tick(Timestamp),
}

/// Runs `relay` until `stop` is set (by a signal, or by `on` returning
/// `ControlFlow::Break`), calling `on` for every event; events already seen by the
/// relay are all delivered before this returns.
pub fn run(
    mut relay: Relay,
    stop: Arc<AtomicBool>,
    mut on: impl FnMut(TapEvent) -> ControlFlow<()>,
) {
    let (tx, rx) = mpsc::channel();
    let relay_stop = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        relay.run(&relay_stop, |ev| {
            // The receiver only goes away once the relay has stopped.
            let _ = tx.send(ev);
        });
        // The relay (and a pty's link) is dropped here, when it stops.
    });
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
        if last_tick.elapsed() >= TICK_EVERY {
            last_tick = Instant::now();
            deliver(TapEvent::Tick(now()), &stop);
        }
    }
    // The relay thread has ended (its sender is gone); it never panics, and if it
    // did there would be nothing more to deliver.
    let _ = handle.join();
}

fn side_idx(side: Side) -> usize {
    match side {
        Side::Ecr => 0,
        Side::Pos => 1,
    }
}
