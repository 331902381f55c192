//! Stopping cleanly on SIGINT and SIGTERM: the handler only sets a flag, which the
//! emulator's loops check between short blocking waits. signal-hook installs the
//! handler, so this crate needs no unsafe code.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the handler for SIGINT and SIGTERM and returns the flag it sets.
pub fn stop_on_signals() -> std::io::Result<&'static AtomicBool> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    Ok(flag)
}
