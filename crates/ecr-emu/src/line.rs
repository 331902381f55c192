//! Byte lines with read timeouts: TCP connections, serial devices and
//! pseudo-terminals, behind one small trait so that the frame link and the
//! emulator do not care which they run on.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, BaudRate, ControlFlags, SetArg};

/// What a read with a timeout found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes.
    Data(usize),
    /// Nothing within the timeout.
    Timeout,
    /// The other end closed (EOF, hang-up).
    Closed,
}

/// A duplex byte line.
pub trait Line: Send {
    /// Reads what is there, waiting at most `timeout`.
    fn read_within(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<ReadOutcome>;
    /// Writes all of `bytes`.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The descriptor to wait on for input.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Whether the line is a TLS connection (what it reads is decrypted).
    const ENCRYPTED: bool = false;
}

impl Line for TcpStream {
    fn read_within(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<ReadOutcome> {
        self.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.read(buf) {
            Ok(0) => Ok(ReadOutcome::Closed),
            Ok(n) => Ok(ReadOutcome::Data(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(ReadOutcome::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(ReadOutcome::Timeout),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(ReadOutcome::Closed),
            Err(e) => Err(e),
        }
    }
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)?;
        self.flush()
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

/// Waits until `fd` is readable; false on timeout.
fn wait_readable(fd: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn read_fd(file: &mut File, buf: &mut [u8], timeout: Duration) -> io::Result<ReadOutcome> {
    if !wait_readable(file, timeout)? {
        return Ok(ReadOutcome::Timeout);
    }
    match file.read(buf) {
        Ok(0) => Ok(ReadOutcome::Closed),
        Ok(n) => Ok(ReadOutcome::Data(n)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(ReadOutcome::Timeout),
        // A pty master whose other side is closed reads EIO.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EIO as i32) => {
            Ok(ReadOutcome::Closed)
        }
        Err(e) => Err(e),
    }
}

/// Puts a terminal device in raw mode at the spec's line settings (10.9: 9600 baud,
/// 8 data bits, no parity, 1 stop bit, no flow control). On a pseudo-terminal the
/// speed is ignored; raw mode is what matters (no echo, no line editing, no
/// newline translation).
pub fn set_raw_9600(fd: &impl AsFd) -> io::Result<()> {
    let mut t = termios::tcgetattr(fd.as_fd())?;
    termios::cfmakeraw(&mut t);
    termios::cfsetspeed(&mut t, BaudRate::B9600)?;
    t.control_flags &= !(ControlFlags::PARENB | ControlFlags::CSTOPB | ControlFlags::CRTSCTS);
    t.control_flags |= ControlFlags::CS8 | ControlFlags::CLOCAL | ControlFlags::CREAD;
    termios::tcsetattr(fd.as_fd(), SetArg::TCSANOW, &t)?;
    Ok(())
}

/// A serial device opened for the ECR link.
#[derive(Debug)]
pub struct SerialLine {
    file: File,
}

impl SerialLine {
    /// Opens `path` read-write (without making it the controlling terminal), sets
    /// the spec's line settings and discards stale input. Fails on something that
    /// is not a terminal device.
    pub fn open(path: &Path) -> io::Result<SerialLine> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OFlag::O_NOCTTY.bits())
            .open(path)?;
        set_raw_9600(&file).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("not a serial device (cannot set line settings: {e})"),
            )
        })?;
        // Bytes left over from an earlier exchange (a late ack, a result nobody
        // read) would be taken for this exchange's answers.
        termios::tcflush(&file, termios::FlushArg::TCIFLUSH)?;
        Ok(SerialLine { file })
    }
}

impl Line for SerialLine {
    fn read_within(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<ReadOutcome> {
        read_fd(&mut self.file, buf, timeout)
    }
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.flush()
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A pseudo-terminal whose other end (`path`) a cash register program, or `send`,
/// opens as if it were the serial port. The emulator keeps the other end open
/// itself too, so the line survives clients that open and close it.
#[derive(Debug)]
pub struct PtyLine {
    master: File,
    _slave: OwnedFd,
    path: PathBuf,
}

impl PtyLine {
    /// Creates a pseudo-terminal in raw mode.
    pub fn create() -> io::Result<PtyLine> {
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY)?;
        nix::pty::grantpt(&master)?;
        nix::pty::unlockpt(&master)?;
        let path = PathBuf::from(nix::pty::ptsname_r(&master)?);
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OFlag::O_NOCTTY.bits())
            .open(&path)?;
        set_raw_9600(&slave)?;
        let master = File::from(OwnedFd::from(master));
        Ok(PtyLine {
            master,
            _slave: slave.into(),
            path,
        })
    }

    /// The device path to give the cash register (`/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Line for PtyLine {
    fn read_within(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<ReadOutcome> {
        read_fd(&mut self.master, buf, timeout)
    }
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.master.write_all(bytes)?;
        self.master.flush()
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_round_trip() {
        let mut pty = PtyLine::create().unwrap();
        let mut other = SerialLine::open(pty.path()).unwrap();
        pty.send(b"\x2f\x6e\r\n").unwrap();
        let mut buf = [0u8; 16];
        let got = other.read_within(&mut buf, Duration::from_secs(2)).unwrap();
        assert_eq!(got, ReadOutcome::Data(4));
        assert_eq!(
            &buf[..4],
            b"\x2f\x6e\r\n",
            "raw mode keeps bytes as they are"
        );
        assert_eq!(
            other
                .read_within(&mut buf, Duration::from_millis(20))
                .unwrap(),
            ReadOutcome::Timeout
        );
    }

    #[test]
    fn not_a_tty() {
        let e = SerialLine::open(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("not a serial device"), "{e}");
    }
}
