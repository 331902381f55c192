//! The byte relay between the cash register's and the terminal's ports.
//!
//! One thread polls both ends; a chunk read from one end is written to the other
//! before anything else happens to it (decoding, printing and file writing run on
//! another thread), so the tap adds only a read and a write to the line's latency
//! and the protocol's 1000 ms ack rule still holds through it.
//!
//! Bytes are never reordered: each end has one outgoing queue, written in order, and
//! a write that would block leaves the rest queued until `poll` says the port takes
//! more. When a port disappears (cable pulled: `read` returns 0 or `EIO`/`ENXIO`),
//! the relay says so, keeps relaying what it can, and tries to reopen the device
//! every 500 ms. Bytes that cannot be passed on because the other end is gone are
//! still reported (and so recorded and decoded) and counted as undelivered.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ecr_proto::link::Side;
use ecr_proto::Timestamp;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::tty::{self, LineSettings, Pty, TtyError};

/// How often a missing port is looked for.
pub const REOPEN_EVERY: Duration = Duration::from_millis(500);
/// Most bytes queued for a port that does not take them; beyond that bytes are
/// dropped and reported as undelivered.
pub const MAX_QUEUE: usize = 1 << 20;
/// Largest single read.
const READ_CHUNK: usize = 4096;
/// Longest wait in `poll`, so that a stop request is noticed quickly.
const POLL_MS: u16 = 100;

/// One end of the tap.
#[derive(Debug)]
pub enum EndSpec {
    /// A serial device (or anything that opens as a terminal), reopened when it
    /// comes back after disappearing.
    Port {
        /// Device path, e.g. `/dev/ttyUSB0`.
        path: PathBuf,
        /// Line settings applied at every open.
        settings: LineSettings,
    },
    /// A pseudo-terminal the tap created for the software on this side.
    Pty(Pty),
}

impl EndSpec {
    /// The name used in messages and output: the device path, or the pty's link.
    pub fn name(&self) -> String {
        match self {
            EndSpec::Port { path, .. } => path.display().to_string(),
            EndSpec::Pty(p) => p.link().unwrap_or(p.slave_path()).display().to_string(),
        }
    }
}

/// What the relay saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// `bytes` arrived from `from` at `ts` (already passed on, unless an
    /// [`RelayEvent::Undelivered`] says otherwise).
    Data {
        /// Who sent them.
        from: Side,
        /// When the read returned (wall clock).
        ts: Timestamp,
        /// The bytes, unchanged.
        bytes: Vec<u8>,
    },
    /// A port disappeared.
    Gone {
        /// Which end.
        side: Side,
        /// Its name.
        name: String,
        /// Why (the error from the system).
        reason: String,
    },
    /// A port that had disappeared was opened again.
    Back {
        /// Which end.
        side: Side,
        /// Its name.
        name: String,
    },
    /// Bytes sent by `from` could not be passed on.
    Undelivered {
        /// Who sent them.
        from: Side,
        /// How many.
        bytes: usize,
        /// Why.
        reason: String,
    },
}

#[derive(Debug)]
struct End {
    side: Side,
    spec: EndSpec,
    /// The open device (ports only; a pty's master lives in the spec).
    fd: Option<OwnedFd>,
    alive: bool,
    out: VecDeque<u8>,
    last_try: Instant,
}

impl End {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        if !self.alive {
            return None;
        }
        match &self.spec {
            EndSpec::Port { .. } => self.fd.as_ref().map(|f| f.as_fd()),
            EndSpec::Pty(p) => Some(p.master()),
        }
    }
}

/// The relay. Build it with [`Relay::new`] (which opens both ends, so that a wrong
/// path is reported before anything runs), then [`Relay::run`] it on its own thread.
#[derive(Debug)]
pub struct Relay {
    ends: [End; 2],
}

fn idx(side: Side) -> usize {
    match side {
        Side::Ecr => 0,
        Side::Pos => 1,
    }
}

fn open_end(side: Side, spec: EndSpec) -> Result<End, TtyError> {
    let fd = match &spec {
        EndSpec::Port { path, settings } => Some(tty::open_port(path, settings)?),
        EndSpec::Pty(_) => None,
    };
    Ok(End {
        side,
        spec,
        fd,
        alive: true,
        out: VecDeque::new(),
        last_try: Instant::now(),
    })
}

/// The wall clock as a capture timestamp.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_parts(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

impl Relay {
    /// Opens both ends.
    pub fn new(ecr: EndSpec, pos: EndSpec) -> Result<Relay, TtyError> {
        Ok(Relay {
            ends: [open_end(Side::Ecr, ecr)?, open_end(Side::Pos, pos)?],
        })
    }

    /// The names of the two ends (cash register, terminal).
    pub fn names(&self) -> (String, String) {
        (self.ends[0].spec.name(), self.ends[1].spec.name())
    }

    /// Relays until `stop` is set, reporting what it sees to `emit`. Returns after at
    /// most about 100 ms once `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool, mut emit: impl FnMut(RelayEvent)) {
        let mut buf = vec![0u8; READ_CHUNK];
        while !stop.load(Ordering::Relaxed) {
            self.reopen(&mut emit);
            let mut revents = [None, None];
            {
                let mut fds = Vec::with_capacity(2);
                let mut which = Vec::with_capacity(2);
                for (i, end) in self.ends.iter().enumerate() {
                    if let Some(fd) = end.fd() {
                        let mut ev = PollFlags::POLLIN;
                        if !end.out.is_empty() {
                            ev |= PollFlags::POLLOUT;
                        }
                        fds.push(PollFd::new(fd, ev));
                        which.push(i);
                    }
                }
                match nix::poll::poll(&mut fds, PollTimeout::from(POLL_MS)) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(_) => {
                        // Cannot happen with valid descriptors; do not spin.
                        std::thread::sleep(Duration::from_millis(u64::from(POLL_MS)));
                        continue;
                    }
                }
                for (fd, i) in fds.iter().zip(which) {
                    if let Some(slot) = revents.get_mut(i) {
                        *slot = fd.revents();
                    }
                }
            }
            for (i, rev) in revents.into_iter().enumerate() {
                let Some(rev) = rev else { continue };
                if rev.contains(PollFlags::POLLOUT) {
                    self.flush(i, &mut emit);
                }
                let readable = PollFlags::POLLIN
                    | PollFlags::POLLHUP
                    | PollFlags::POLLERR
                    | PollFlags::POLLNVAL;
                if rev.intersects(readable) {
                    let hangup = !rev.contains(PollFlags::POLLIN);
                    self.read(i, hangup, &mut buf, &mut emit);
                }
            }
        }
        // Whatever is still queued gets one last chance.
        for i in 0..2 {
            self.flush(i, &mut emit);
        }
    }

    fn read(&mut self, i: usize, hangup: bool, buf: &mut [u8], emit: &mut impl FnMut(RelayEvent)) {
        let Some(end) = self.ends.get(i) else { return };
        let Some(fd) = end.fd() else { return };
        let from = end.side;
        match nix::unistd::read(fd, buf) {
            Ok(0) => self.gone(i, "the device hung up".into(), emit),
            Ok(n) => {
                let ts = now();
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                self.pass_on(from, &bytes, emit);
                emit(RelayEvent::Data { from, ts, bytes });
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) if !hangup => {}
            Err(Errno::EAGAIN) => self.gone(i, "the device hung up".into(), emit),
            Err(e) => self.gone(i, e.desc().to_string(), emit),
        }
    }

    /// Queues `bytes` for the end opposite `from` and writes what the port takes now.
    fn pass_on(&mut self, from: Side, bytes: &[u8], emit: &mut impl FnMut(RelayEvent)) {
        let to = idx(from.peer());
        let Some(end) = self.ends.get_mut(to) else {
            return;
        };
        if !end.alive {
            emit(RelayEvent::Undelivered {
                from,
                bytes: bytes.len(),
                reason: format!("{} is gone", end.spec.name()),
            });
            return;
        }
        let room = MAX_QUEUE.saturating_sub(end.out.len());
        let take = bytes.len().min(room);
        end.out.extend(bytes.get(..take).unwrap_or_default());
        if take < bytes.len() {
            emit(RelayEvent::Undelivered {
                from,
                bytes: bytes.len() - take,
                reason: format!(
                    "{} has not taken the last {} bytes written to it",
                    end.spec.name(),
                    end.out.len()
                ),
            });
        }
        self.flush(to, emit);
    }

    fn flush(&mut self, i: usize, emit: &mut impl FnMut(RelayEvent)) {
        loop {
            let Some(end) = self.ends.get_mut(i) else {
                return;
            };
            let Some(fd) = end.fd() else { return };
            let (front, _) = end.out.as_slices();
            if front.is_empty() {
                return;
            }
            match nix::unistd::write(fd, front) {
                Ok(n) => {
                    end.out.drain(..n.min(end.out.len()));
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    self.gone(i, e.desc().to_string(), emit);
                    return;
                }
            }
        }
    }

    fn gone(&mut self, i: usize, reason: String, emit: &mut impl FnMut(RelayEvent)) {
        let Some(end) = self.ends.get_mut(i) else {
            return;
        };
        end.alive = false;
        end.fd = None;
        end.last_try = Instant::now();
        let queued = std::mem::take(&mut end.out);
        let name = end.spec.name();
        let side = end.side;
        emit(RelayEvent::Gone {
            side,
            name: name.clone(),
            reason,
        });
        if !queued.is_empty() {
            emit(RelayEvent::Undelivered {
                from: side.peer(),
                bytes: queued.len(),
                reason: format!("{name} is gone"),
            });
        }
    }

    fn reopen(&mut self, emit: &mut impl FnMut(RelayEvent)) {
        for end in &mut self.ends {
            if end.alive || end.last_try.elapsed() < REOPEN_EVERY {
                continue;
            }
            end.last_try = Instant::now();
            // A pseudo-terminal cannot come back; a port can.
            if let EndSpec::Port { path, settings } = &end.spec {
                if let Ok(fd) = tty::open_port(path, settings) {
                    end.fd = Some(fd);
                    end.alive = true;
                    emit(RelayEvent::Back {
                        side: end.side,
                        name: end.spec.name(),
                    });
                }
            }
        }
    }
}
