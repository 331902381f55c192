//! Live capture of ECR traffic (issue 5): libpcap on an interface, the serial
//! man-in-the-middle tap and the Wireshark extcap interface. Decoding is the same
//! analyzer as offline (`ecr-capture`); this crate only gets the bytes, with their
//! times, as they happen.
//!
//! - [`netcap`]: a libpcap capture that returns at least every 100 ms (feature
//!   `live`, on by default: it needs libpcap);
//! - [`tty`]: serial ports in raw mode with the spec's line settings, and
//!   pseudo-terminals for a cash register program when only the terminal is real;
//! - [`relay`]: the byte relay between the two ports (poll, read, write at once);
//! - [`session`]: runs the relay on its own thread, with the idle and tick timers a
//!   live decoder and a capture file writer need;
//! - [`extcap`]: the answers of Wireshark's extcap protocol;
//! - [`stop`]: SIGINT/SIGTERM as a flag.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Bytes from the network or a serial line never panic this crate: no `unwrap`,
// `expect`, `panic!` or `unreachable!` outside tests (held by the compiler).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod extcap;
#[cfg(feature = "live")]
pub mod netcap;
pub mod relay;
pub mod session;
pub mod stop;
pub mod tty;

/// The build script's libpcap check, tested here without uninstalling anything.
#[cfg(test)]
#[path = "../build/libpcap.rs"]
#[allow(dead_code)]
mod build_libpcap;

#[cfg(test)]
mod build_tests {
    use super::build_libpcap::{detect, find_in, library_names, missing_message, Found};
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ecr-tap-build-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn libdir_without_the_library_is_missing_even_if_the_system_has_it() {
        let empty = temp_dir("empty");
        let system = temp_dir("system");
        std::fs::write(system.join("libpcap.so"), b"").unwrap();
        let found = detect(Some(&empty), || true, &[system], "linux");
        assert_eq!(found, None);
        let msg = missing_message(Some(&empty));
        for needle in [
            "libpcap-dev",
            "libpcap-devel",
            "pacman -S libpcap",
            "brew install libpcap",
            "--no-default-features",
            "LIBPCAP_LIBDIR",
        ] {
            assert!(msg.contains(needle), "{needle} missing from:\n{msg}");
        }
        assert!(msg.contains(&empty.display().to_string()));
    }

    #[test]
    fn libdir_with_the_library_is_found() {
        let dir = temp_dir("libdir");
        std::fs::write(dir.join("libpcap.a"), b"").unwrap();
        assert_eq!(
            detect(Some(&dir), || false, &[], "linux"),
            Some(Found::LibDir(dir))
        );
    }

    #[test]
    fn pkg_config_then_usual_folders() {
        let empty = temp_dir("none");
        let dirs = vec![empty.clone()];
        assert_eq!(
            detect(None, || true, &dirs, "linux"),
            Some(Found::PkgConfig)
        );
        assert_eq!(detect(None, || false, &dirs, "linux"), None);
        // The runtime library alone (libpcap.so.0.8, without the -dev symlink) does not link.
        std::fs::write(empty.join("libpcap.so.0.8"), b"").unwrap();
        assert_eq!(detect(None, || false, &dirs, "linux"), None);
        std::fs::write(empty.join("libpcap.so"), b"").unwrap();
        assert_eq!(
            detect(None, || false, &dirs, "linux"),
            Some(Found::System(empty.clone()))
        );
        assert_eq!(
            find_in(&dirs, library_names("macos")),
            None,
            "macOS names differ"
        );
    }
}
