//! Compaction streams the merged rows from the victims' memory maps into the new segment: its
//! heap use does not grow with the bytes being merged (a counting allocator measures the heap
//! the compacting thread holds at its peak).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use imgvec_storage::{CompactionPolicy, NewRow, OpenMode, Store, StoreOptions};

/// The system allocator, counting the bytes each thread holds and its peak (thread-locals with
/// const initialisers: touching them never allocates).
pub struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting only reads the
// sizes the caller passes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f` and returns the most heap bytes this thread held above what it held before.
fn peak_growth(f: impl FnOnce()) -> usize {
    let start = HELD.with(Cell::get);
    PEAK.with(|p| p.set(start));
    f();
    (PEAK.with(Cell::get) - start).max(0) as usize
}

#[test]
fn compaction_heap_does_not_grow_with_the_rows_merged() {
    const DIMS: usize = 256;
    const LOCAL: usize = 8 << 10;
    let measure = |rows_per_segment: usize| -> (usize, u64) {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            flush_rows: usize::MAX,
            ..StoreOptions::new(OpenMode::ReadWrite)
        };
        let store = Store::open_with(&dir.path().join("db"), opts).unwrap();
        for seg in 0..4 {
            let rows: Vec<NewRow> = (0..rows_per_segment)
                .map(|i| {
                    let n = seg * rows_per_segment + i;
                    NewRow {
                        vector: vec![(n % 97) as f32 / 97.0; DIMS],
                        local: vec![(n % 251) as u8; LOCAL],
                        thumbnail: Vec::new(),
                        ..crate::common::row(&format!("/m{n}"))
                    }
                })
                .collect();
            store.commit(rows).unwrap();
            store.flush().unwrap();
        }
        let mut report = None;
        let peak = peak_growth(|| {
            report = Some(store.compact(CompactionPolicy::Full).unwrap());
        });
        let report = report.unwrap();
        assert_eq!(report.segments_merged, 4);
        assert_eq!(report.rows_kept, 4 * rows_per_segment as u64);
        // The merged segment reads back row for row.
        let snap = store.snapshot();
        let n = 4 * rows_per_segment - 1;
        assert_eq!(
            snap.vector(n as u64 + 1).unwrap().unwrap()[0],
            (n % 97) as f32 / 97.0
        );
        assert_eq!(
            snap.local(n as u64 + 1).unwrap().unwrap(),
            &vec![(n % 251) as u8; LOCAL][..]
        );
        (peak, report.bytes_after)
    };
    let (small_peak, small_bytes) = measure(100);
    let (large_peak, large_bytes) = measure(800);
    eprintln!(
        "compaction heap peak: {small_peak} B merging {small_bytes} B, {large_peak} B merging \
         {large_bytes} B"
    );
    assert!(large_bytes > 7 * small_bytes);
    // Eight times the bytes merged: the heap grows only by the per-row bookkeeping (ids and
    // row positions, 24 bytes a row), far from the 9 KB a row being merged.
    let per_row = (large_peak.saturating_sub(small_peak)) / (4 * 700);
    assert!(
        per_row < 256 && large_peak < 4 << 20,
        "heap peak {small_peak} → {large_peak} B ({per_row} B a row)"
    );
}
