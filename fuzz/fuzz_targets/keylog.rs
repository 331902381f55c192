//! TLS key logs (files and pcapng Decryption Secrets Blocks): read whole, a line
//! at a time, or followed as it grows (in pieces cut anywhere, from its start or
//! from inside it), the same table and warnings, within their bounds.
#![no_main]
use ecr_capture::keylog::{KeyLog, KeyLogTail, MAX_ENTRIES, MAX_LINE};
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

    // Followed in pieces (their lengths taken from the data): the complete lines
    // give the same table, and the first warning names the same line.
    let complete = data
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&data[..0], |end| &data[..=end]);
    let complete_lines = complete.iter().filter(|&&b| b == b'\n').count();
    let mut upto = KeyLog::new();
    let first_whole = upto.add_text(complete).into_iter().find_map(|w| w.line);
    // A tail started inside the file (live, on a key log over 64 MiB): the lines
    // after the first newline, and no line numbers.
    let after_cut = data
        .iter()
        .position(|&b| b == b'\n')
        .map_or(&data[..0], |i| &data[i + 1..complete.len().max(i + 1)]);
    let mut from_cut = KeyLog::new();
    from_cut.add_text(after_cut);
    let mut mid = KeyLogTail::mid_file();
    let mut mid_followed = KeyLog::new();
    let mut tail = KeyLogTail::new();
    let mut followed = KeyLog::new();
    let mut first_followed = None;
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(data[i % data.len()]) * 37 % 2048 + 1).min(rest.len());
        let (piece, r) = rest.split_at(n);
        rest = r;
        i += 1;
        let m = mid.push(piece);
        for w in mid_followed.add_text(&m.text) {
            assert_eq!(m.in_file(w).line, None);
        }
        assert!(m.warnings.iter().all(|w| w.line.is_none()));
        let a = tail.push(piece);
        let mut lines: Vec<usize> = followed
            .add_text(&a.text)
            .into_iter()
            .filter_map(|w| a.in_file(w).line)
            .collect();
        lines.extend(a.warnings.iter().filter_map(|w| w.line));
        // (an unfinished last line too long is warned here, not in `upto`)
        if first_followed.is_none() {
            first_followed = lines.into_iter().find(|&l| l <= complete_lines);
        }
    }
    assert_eq!(followed.len(), upto.len());
    assert_eq!(mid_followed.len(), from_cut.len());
    assert_eq!(first_followed, first_whole);
    assert_eq!(tail.lines(), complete_lines);
    // What follows the last newline is held (and shown) unless too long to keep.
    let last = &data[complete.len()..];
    let held = (!last.is_empty() && last.len() <= MAX_LINE).then_some(last);
    assert_eq!(tail.unfinished(), held);
});
