//! TLS key logs (files and pcapng Decryption Secrets Blocks): read whole or a
//! line at a time, the same table and warnings, within their bounds.
#![no_main]
use ecr_capture::keylog::{KeyLog, MAX_ENTRIES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut whole = KeyLog::new();
    let w = whole.add_text(data);
    let mut lines = KeyLog::new();
    let Ok(w2) = lines.load_reader(data) else {
        panic!("reading a slice cannot fail")
    };
    assert_eq!(w, w2);
    assert_eq!(whole.len(), lines.len());
    assert!(whole.len() <= MAX_ENTRIES);
    // At most five line warnings and one about forgotten sessions.
    assert!(w.len() <= 6, "{w:?}");
});
