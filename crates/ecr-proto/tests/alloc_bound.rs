//! Allocation stays proportional to the input: the bytes allocated while a body is
//! parsed are counted by a global allocator of this test binary alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ecr_proto::cipher::KeyRing;
use ecr_proto::envelope::parse;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting the bytes asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a block this allocator gave, with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated_by(f: impl FnOnce()) -> usize {
    let before = ALLOCATED.load(Ordering::Relaxed);
    f();
    ALLOCATED.load(Ordering::Relaxed) - before
}

#[test]
fn many_data_members_cost_allocation_in_proportion_to_the_body() {
    // Each top-level `data` string is read by the one-pass compact check while the
    // body is parsed; room taken by the input left after each would make this body
    // cost the square of its size.
    for data in [r#""{\"a\":1}""#, r#""{\"a\":""#, r#""{""#] {
        let mut body = String::from(r#"{"respcd":"6000""#);
        while body.len() < 512 << 10 {
            body.push_str(",\"data\":");
            body.push_str(data);
        }
        body.push('}');
        let bytes = allocated_by(|| {
            let _ = parse(body.as_bytes(), &KeyRing::new());
        });
        // About 80 times the body here: each of its 26,000 tiny strings takes the
        // parser's first room for an escaped string (1 KiB). The square would be
        // some 13,000 times.
        assert!(
            bytes < 256 * body.len(),
            "{data}: {bytes} bytes allocated for a body of {}",
            body.len()
        );
    }
}
