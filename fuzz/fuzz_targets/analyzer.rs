//! The whole analyzer on arbitrary capture files and on arbitrary serial bytes,
//! with every output writer.
#![no_main]
use ecr_capture::analyzer::Analyzer;
use ecr_capture::output::{writer, Format};
use ecr_capture::record::Record;
use ecr_capture::source::CaptureReader;
use ecr_proto::link::Side;
use ecr_proto::Timestamp;
use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

mod common;

/// The bytes the process has allocated and not freed (this target's own count),
/// so that the memory budget is checked against the allocator's truth, not only
/// against the analyzer's own counters: a table that counts nothing (as the 9002
/// link tracker's waiting frames once did) shows here.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            LIVE.fetch_add(new, Relaxed);
            LIVE.fetch_sub(l.size(), Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the process may hold between packets beyond the budget, and beyond what
/// the analyzer counts (`Usage::reserved`): its fixed parts, the reader's buffer,
/// the writers' and decoder's buffers, which keep the room of the largest message
/// seen (parsed bodies are at most 1 MiB), and the hash tables' slack. The message
/// being decoded is gone between packets. Measured on the crafted captures of
/// `hostile_captures` cut to under 1 MB (`ECR_FUZZ_HEAP=1` prints the figures): at
/// most 2.2 MB live, 1.0 MB beyond the count.
const SLACK: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let mut text = writer(Format::Text, std::io::sink(), true);
    let mut jsonl = writer(Format::Jsonl, std::io::sink(), false);
    let mut sink = |r: Record| {
        let _ = text.write(&r);
        let _ = jsonl.write(&r);
    };
    let cfg = common::config(data);
    let budget = cfg.limits.budget;
    let base = LIVE.load(Relaxed);
    let mut a = Analyzer::new(cfg, keys, &mut sink);
    let mut peak = 0;
    let (mut over, mut over_conns) = (0, 0);
    if data.len() % 4 < 2 {
        common::read(&mut a, data);
    } else if let Ok(mut r) = CaptureReader::from_reader(std::io::Cursor::new(data.to_vec())) {
        // read_capture's loop, with the heap looked at between packets (when
        // nothing of a message in decoding is left): it stays within the
        // budget, and within what the analyzer counts (`usage().reserved`)
        // plus a fixed slack, so that a table that counts nothing shows.
        let mut n = 0u64;
        while let Some(next) = r.next_packet() {
            match next {
                Ok(pkt) => a.packet(&pkt),
                Err(e) => a.damaged(None, e.packet(), format!("fuzz: {e}")),
            }
            for secrets in r.take_tls_secrets() {
                let _ = a.add_tls_keylog(&secrets);
            }
            let live = LIVE.load(Relaxed).saturating_sub(base);
            peak = peak.max(live);
            assert!(
                live <= budget + SLACK,
                "{live} bytes live after packet {n}, budget {budget}"
            );
            if n % 64 == 0 {
                let u = a.usage();
                let beyond = live.saturating_sub(u.reserved);
                over = over.max(beyond);
                over_conns = over_conns.max(u.connections);
                assert!(
                    beyond <= SLACK,
                    "{live} bytes live after packet {n}, {beyond} more than counted: {u:?}"
                );
            }
            n += 1;
            if n > common::MAX_PACKETS {
                break;
            }
        }
    }
    if std::env::var_os("ECR_FUZZ_HEAP").is_some() {
        eprintln!("heap peak between packets: {peak} bytes (budget {budget}); most live beyond the analyzer's count {over} ({over_conns} connections)");
    }
    // Memory is bounded by the budget, whatever the input: a packet may add at
    // most a frame in progress per direction before the limit is enforced.
    let u = a.usage();
    let l = *a.limits();
    assert!(u.stream_bytes <= l.stream_bytes + (256 << 10), "{u:?}");
    assert!(
        u.connections <= l.connections && u.fragments <= l.fragments,
        "{u:?}"
    );
    assert!(
        u.ooo_bytes <= l.ooo_bytes && u.payment_bytes <= l.payment_bytes,
        "{u:?}"
    );
    assert!(u.text_work <= 8 * data.len() as u64 + 64, "{u:?}");
    for (i, c) in data.chunks(17).enumerate() {
        let side = if i % 2 == 0 { Side::Ecr } else { Side::Pos };
        a.serial_chunk(
            0,
            ("ECR", "POS"),
            side,
            c,
            Timestamp::from_millis(i as i64 * 300),
            Some(i as u64),
        );
    }
    let _ = a.finish(data.len() as u64, vec![]);
});
