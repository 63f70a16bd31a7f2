//! The background worker of a writable handle: after commits and deletes it merges small
//! segments (purging deleted rows), then keeps every search space current — the stored
//! vectors' indexes, and the whitened view with its indexes once a whitening exists — and
//! saves them when due.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imgvec_storage::{CompactionPolicy, Store};

use crate::search::Spaces;

/// Longest the worker sleeps without a commit or delete before it checks for a stop.
const IDLE_WAKE: Duration = Duration::from_secs(5);

/// The running worker; stopped and joined on drop.
pub(crate) struct Maintenance {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    store: Arc<Store>,
}

impl Maintenance {
    pub fn start(store: Arc<Store>, spaces: Arc<Spaces>) -> Maintenance {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (store.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("imgvec-maintenance".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    if !s.wait_for_work(IDLE_WAKE) || st.load(Ordering::Relaxed) {
                        continue;
                    }
                    pass(&s, &spaces);
                }
            })
            .ok();
        Maintenance {
            stop,
            thread,
            store,
        }
    }
}

/// One round of upkeep. Failures are logged: the database stays consistent (a failed
/// compaction or index save publishes nothing) and the next round tries again.
fn pass(store: &Store, spaces: &Spaces) {
    match store.compact(CompactionPolicy::Background) {
        Ok(r) if r.segments_merged > 0 => tracing::info!(
            merged = r.segments_merged,
            kept = r.rows_kept,
            dropped = r.rows_dropped,
            "background compaction"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("background compaction failed: {e}"),
    }
    if let Err(e) = spaces.maintain(&store.snapshot()) {
        tracing::warn!("background index maintenance failed: {e}");
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.store.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
