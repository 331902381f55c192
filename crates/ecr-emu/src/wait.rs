//! Waiting without polling: every blocked thread of the emulator sleeps in one
//! `poll(2)` on the descriptors it serves plus a [`Bell`] that is rung to stop (or
//! to hand it work), with no timeout unless a deadline (a header, body or idle
//! timeout) is due. An idle emulator therefore uses no CPU at all.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// A wake-up that threads can wait on together with their sockets: a socket pair
/// whose reading end becomes readable when the bell is rung. A stop bell is never
/// drained, so it stays readable for every waiter; a work bell is drained by its one
/// waiter with [`Bell::drain`].
#[derive(Debug)]
pub struct Bell {
    rx: UnixStream,
    tx: UnixStream,
    rung: AtomicBool,
}

impl Bell {
    /// A new, silent bell.
    pub fn new() -> io::Result<Bell> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Bell {
            rx,
            tx,
            rung: AtomicBool::new(false),
        })
    }

    /// Rings it (never blocks: a full pair is already readable).
    pub fn ring(&self) {
        self.rung.store(true, Ordering::SeqCst);
        let _ = (&self.tx).write(&[1]);
    }

    /// Whether it was rung (and, for a work bell, not drained since).
    pub fn is_rung(&self) -> bool {
        self.rung.load(Ordering::SeqCst)
    }

    /// Silences it again (for a work bell, before looking for the work).
    pub fn drain(&self) {
        self.rung.store(false, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        while matches!((&self.rx).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// A writing end for a signal handler (signal-hook's `pipe::register`).
    pub fn sender(&self) -> io::Result<UnixStream> {
        self.tx.try_clone()
    }

    /// The descriptor that becomes readable when the bell rings.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

/// What ended a [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The descriptor at this index is readable (or closed, or in error: a read
    /// says which).
    Ready(usize),
    /// The stop bell rang.
    Stop,
    /// The deadline passed.
    Timeout,
}

/// Blocks until one of `fds` is readable, `stop` rings or `deadline` passes
/// (`None`: no deadline). Interrupted waits resume.
pub fn wait(fds: &[BorrowedFd<'_>], stop: &Bell, deadline: Option<Instant>) -> io::Result<Woke> {
    loop {
        if stop.is_rung() {
            return Ok(Woke::Stop);
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Woke::Timeout);
                }
                // Round up, so that a wake-up never comes before the deadline;
                // beyond i32::MAX ms the wait simply resumes.
                let ms = left.as_millis().saturating_add(1);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        pfds.push(PollFd::new(stop.fd(), PollFlags::POLLIN));
        match nix::poll::poll(&mut pfds, timeout) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
        if pfds.last().is_some_and(ready) {
            return Ok(Woke::Stop);
        }
        if let Some(i) = pfds.iter().position(ready) {
            return Ok(Woke::Ready(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bells_wake_waiters_and_deadlines_expire() {
        let stop = Bell::new().unwrap();
        let work = Bell::new().unwrap();
        let t0 = Instant::now();
        let soon = Some(t0 + Duration::from_millis(30));
        assert_eq!(wait(&[work.fd()], &stop, soon).unwrap(), Woke::Timeout);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        work.ring();
        assert_eq!(wait(&[work.fd()], &stop, None).unwrap(), Woke::Ready(0));
        work.drain();
        assert!(!work.is_rung());
        assert_eq!(wait(&[work.fd()], &stop, soon).unwrap(), Woke::Timeout);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                stop.ring();
            });
            assert_eq!(wait(&[work.fd()], &stop, None).unwrap(), Woke::Stop);
        });
        // A stop bell stays rung for every later waiter.
        assert_eq!(wait(&[], &stop, None).unwrap(), Woke::Stop);
    }
}
