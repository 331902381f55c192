//! Stopping cleanly on SIGINT and SIGTERM: the handler only writes a byte to a
//! [`Bell`] (signal-hook's self-pipe), which the emulator's main thread sleeps on,
//! so nothing polls a flag while the emulator is idle. signal-hook installs the
//! handler, so this crate needs no unsafe code.

use std::sync::OnceLock;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::wait::Bell;

static STOP: OnceLock<Bell> = OnceLock::new();

/// Installs the handler for SIGINT and SIGTERM and returns the bell it rings.
pub fn stop_on_signals() -> std::io::Result<&'static Bell> {
    if let Some(b) = STOP.get() {
        return Ok(b);
    }
    let bell = Bell::new()?;
    for sig in [SIGINT, SIGTERM] {
        signal_hook::low_level::pipe::register(sig, bell.sender()?)?;
    }
    Ok(STOP.get_or_init(|| bell))
}
