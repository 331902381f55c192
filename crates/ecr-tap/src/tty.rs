//! Serial ports and pseudo-terminals, set up for a transparent tap.
//!
//! A tap must pass every byte unchanged, so both ends are put in raw mode: no echo,
//! no line editing, no CR/LF translation, no software or hardware flow control.
//! Ports are opened non-blocking with `VMIN = 1`, so that `read` after `poll` returns
//! data, `EAGAIN` (nothing yet) or an end (0 bytes or `EIO`: the device is gone), and
//! never the ambiguous "0 bytes, try again" of `VMIN = 0`.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::sys::termios::{
    self, BaudRate, ControlFlags, InputFlags, SetArg, SpecialCharacterIndices, Termios,
};

/// Parity of a serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit (the ECR default).
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// Line settings of a serial port. The default is the spec's (10.9): 9600 baud,
/// 8 data bits, no parity, 1 stop bit, no flow control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineSettings {
    /// Bits per second.
    pub baud: u32,
    /// 5 to 8.
    pub data_bits: u8,
    /// Parity bit.
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
}

impl Default for LineSettings {
    fn default() -> Self {
        LineSettings {
            baud: 9600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
        }
    }
}

impl fmt::Display for LineSettings {
    /// `9600 8N1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        write!(f, "{} {}{}{}", self.baud, self.data_bits, p, self.stop_bits)
    }
}

/// Errors opening or setting up a port.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// The port could not be opened.
    #[error("cannot open {}: {}{}", path.display(), errno.desc(), open_hint(*errno))]
    Open {
        /// The device path.
        path: PathBuf,
        /// The reason.
        errno: Errno,
    },
    /// The path is not a terminal device.
    #[error("{} is not a serial port (not a terminal device)", path.display())]
    NotATty {
        /// The path.
        path: PathBuf,
    },
    /// The line settings could not be applied.
    #[error("cannot set {settings} on {}: {}", path.display(), errno.desc())]
    Settings {
        /// The device path.
        path: PathBuf,
        /// What was asked.
        settings: LineSettings,
        /// The reason.
        errno: Errno,
    },
    /// The baud rate is not one the system supports.
    #[error("unsupported baud rate {0} (supported: {list})", list = supported_bauds())]
    Baud(u32),
    /// Data or stop bits out of range.
    #[error("unsupported line setting: {0}")]
    Setting(String),
    /// A pseudo-terminal could not be created or linked.
    #[error("pseudo-terminal: {0}")]
    Pty(String),
}

fn open_hint(e: Errno) -> &'static str {
    match e {
        Errno::EACCES | Errno::EPERM => {
            " (add the user to the group owning the device, usually `dialout`, or run as root)"
        }
        Errno::EBUSY => " (another program holds the port)",
        Errno::ENOENT | Errno::ENODEV | Errno::ENXIO => " (is the adapter plugged in?)",
        _ => "",
    }
}

const BAUDS: &[(u32, BaudRate)] = &[
    (1200, BaudRate::B1200),
    (2400, BaudRate::B2400),
    (4800, BaudRate::B4800),
    (9600, BaudRate::B9600),
    (19200, BaudRate::B19200),
    (38400, BaudRate::B38400),
    (57600, BaudRate::B57600),
    (115200, BaudRate::B115200),
    (230400, BaudRate::B230400),
    (460800, BaudRate::B460800),
    (921600, BaudRate::B921600),
];

fn supported_bauds() -> String {
    BAUDS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn baud_rate(baud: u32) -> Result<BaudRate, TtyError> {
    BAUDS
        .iter()
        .find(|(n, _)| *n == baud)
        .map(|(_, b)| *b)
        .ok_or(TtyError::Baud(baud))
}

impl LineSettings {
    /// Checks that the settings can be applied (before any port is opened, so that
    /// a typo is reported as such).
    pub fn validate(&self) -> Result<(), TtyError> {
        baud_rate(self.baud)?;
        if !(5..=8).contains(&self.data_bits) {
            return Err(TtyError::Setting(format!(
                "{} data bits (5 to 8)",
                self.data_bits
            )));
        }
        if !(1..=2).contains(&self.stop_bits) {
            return Err(TtyError::Setting(format!(
                "{} stop bits (1 or 2)",
                self.stop_bits
            )));
        }
        Ok(())
    }

    fn apply(&self, t: &mut Termios) -> Result<(), TtyError> {
        termios::cfmakeraw(t);
        termios::cfsetspeed(t, baud_rate(self.baud)?)
            .map_err(|e| TtyError::Setting(format!("baud {}: {}", self.baud, e.desc())))?;
        let c = &mut t.control_flags;
        c.remove(ControlFlags::CSIZE | ControlFlags::PARENB | ControlFlags::PARODD);
        c.remove(ControlFlags::CSTOPB | ControlFlags::CRTSCTS);
        c.insert(match self.data_bits {
            5 => ControlFlags::CS5,
            6 => ControlFlags::CS6,
            7 => ControlFlags::CS7,
            _ => ControlFlags::CS8,
        });
        match self.parity {
            Parity::None => {}
            Parity::Even => c.insert(ControlFlags::PARENB),
            Parity::Odd => c.insert(ControlFlags::PARENB | ControlFlags::PARODD),
        }
        if self.stop_bits == 2 {
            c.insert(ControlFlags::CSTOPB);
        }
        // Ignore modem lines (a tap must not hang up when DCD drops) and receive.
        c.insert(ControlFlags::CLOCAL | ControlFlags::CREAD);
        t.input_flags
            .remove(InputFlags::IXON | InputFlags::IXOFF | InputFlags::IXANY);
        set_vmin(t);
        Ok(())
    }
}

fn set_vmin(t: &mut Termios) {
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
}

/// Opens `path` as a serial port in raw mode with `settings`, non-blocking.
pub fn open_port(path: &Path, settings: &LineSettings) -> Result<OwnedFd, TtyError> {
    settings.validate()?;
    let fd = fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| TtyError::Open {
        path: path.to_path_buf(),
        errno,
    })?;
    if !nix::unistd::isatty(&fd).unwrap_or(false) {
        return Err(TtyError::NotATty {
            path: path.to_path_buf(),
        });
    }
    let settings_err = |errno| TtyError::Settings {
        path: path.to_path_buf(),
        settings: *settings,
        errno,
    };
    let mut t = termios::tcgetattr(&fd).map_err(settings_err)?;
    settings.apply(&mut t)?;
    termios::tcsetattr(&fd, SetArg::TCSANOW, &t).map_err(settings_err)?;
    Ok(fd)
}

/// Puts `fd` in raw mode without touching its speed (for pseudo-terminals).
pub fn make_raw(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let mut t = termios::tcgetattr(fd)?;
    termios::cfmakeraw(&mut t);
    set_vmin(&mut t);
    termios::tcsetattr(fd, SetArg::TCSANOW, &t)
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl::fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl::fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// A pseudo-terminal standing in for a serial port: the program under test (the
/// cash register software) opens the slave side, by its `/dev/pts/N` name or by a
/// symbolic link; the tap reads and writes the master side.
///
/// The tap keeps a slave descriptor open itself, so that the master never reads
/// `EIO` while the application has the port closed (between runs, or before it
/// starts): bytes from the terminal then wait in the slave's input queue.
#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
    _slave: OwnedFd,
    slave_path: PathBuf,
    link: Option<PathBuf>,
}

impl Pty {
    /// Creates a raw pseudo-terminal; with `link`, also a symbolic link at that path
    /// to the slave (an existing symbolic link there is replaced, anything else is
    /// an error).
    pub fn open(link: Option<&Path>) -> Result<Pty, TtyError> {
        let pty = nix::pty::openpty(None, None)
            .map_err(|e| TtyError::Pty(format!("openpty: {}", e.desc())))?;
        // openpty(3) does not set close-on-exec: without it every program started
        // later would hold the pty open, and closing the master would not hang up.
        for fd in [pty.master.as_fd(), pty.slave.as_fd()] {
            fcntl::fcntl(fd, FcntlArg::F_SETFD(fcntl::FdFlag::FD_CLOEXEC))
                .map_err(|e| TtyError::Pty(format!("close-on-exec: {}", e.desc())))?;
        }
        make_raw(pty.slave.as_fd())
            .map_err(|e| TtyError::Pty(format!("raw mode: {}", e.desc())))?;
        set_nonblocking(pty.master.as_fd())
            .map_err(|e| TtyError::Pty(format!("non-blocking: {}", e.desc())))?;
        let slave_path = nix::unistd::ttyname(pty.slave.as_fd())
            .map_err(|e| TtyError::Pty(format!("ttyname: {}", e.desc())))?;
        if let Some(link) = link {
            if let Ok(meta) = std::fs::symlink_metadata(link) {
                if !meta.file_type().is_symlink() {
                    return Err(TtyError::Pty(format!(
                        "{} exists and is not a symbolic link; choose another --pty path",
                        link.display()
                    )));
                }
                std::fs::remove_file(link).map_err(|e| {
                    TtyError::Pty(format!("cannot replace {}: {e}", link.display()))
                })?;
            }
            std::os::unix::fs::symlink(&slave_path, link).map_err(|e| {
                TtyError::Pty(format!("cannot create link {}: {e}", link.display()))
            })?;
        }
        Ok(Pty {
            master: pty.master,
            _slave: pty.slave,
            slave_path,
            link: link.map(Path::to_path_buf),
        })
    }

    /// The slave device (`/dev/pts/N`).
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// The symbolic link, if one was asked for.
    pub fn link(&self) -> Option<&Path> {
        self.link.as_deref()
    }

    /// The master side, read and written by the tap.
    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

impl Drop for Pty {
    /// Removes the link if it still points to this pseudo-terminal.
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            if std::fs::read_link(link).is_ok_and(|t| t == self.slave_path) {
                let _ = std::fs::remove_file(link);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_display_and_validation() {
        assert_eq!(LineSettings::default().to_string(), "9600 8N1");
        let s = LineSettings {
            baud: 115200,
            data_bits: 7,
            parity: Parity::Even,
            stop_bits: 2,
        };
        assert_eq!(s.to_string(), "115200 7E2");
        assert!(s.validate().is_ok());
        let bad = LineSettings {
            baud: 12345,
            ..Default::default()
        };
        let msg = bad.validate().unwrap_err().to_string();
        assert!(msg.contains("12345") && msg.contains("9600"), "{msg}");
        let bad = LineSettings {
            data_bits: 9,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("9 data bits"));
    }

    #[test]
    fn missing_port_names_path_and_reason() {
        let e = open_port(Path::new("/dev/ecr-no-such-port"), &LineSettings::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/ecr-no-such-port"), "{e}");
        assert!(e.contains("plugged in"), "{e}");
    }

    #[test]
    fn regular_file_is_not_a_port() {
        let e = open_port(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")),
            &LineSettings::default(),
        )
        .unwrap_err();
        assert!(matches!(e, TtyError::NotATty { .. }), "{e}");
    }

    #[test]
    fn pty_link_is_created_and_removed() {
        let dir = std::env::temp_dir().join(format!("ecr-tap-pty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("ecr");
        let pty = Pty::open(Some(&link)).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), pty.slave_path());
        // The link opens as a serial port with any settings.
        let fd = open_port(&link, &LineSettings::default()).unwrap();
        nix::unistd::write(&fd, b"/n").unwrap();
        let mut buf = [0u8; 8];
        let mut got = 0;
        for _ in 0..100 {
            match nix::unistd::read(pty.master(), &mut buf) {
                Ok(n) => {
                    got = n;
                    break;
                }
                Err(Errno::EAGAIN) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(&buf[..got], b"/n");
        drop(pty);
        assert!(std::fs::symlink_metadata(&link).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
