//! Stopping a tap cleanly on Ctrl-C (SIGINT) or SIGTERM (what Wireshark sends an
//! extcap program): the signal only sets a flag, and the capture loops, which never
//! block for more than about 100 ms, see it, flush the capture file, print the
//! summary and exit 0. A second Ctrl-C while the tap is finishing ends the process
//! at once (status 130), for the impatient.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

/// Installs the handlers and returns the flag they set.
pub fn on_signals() -> io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// True once a stop was asked for.
pub fn requested(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}
