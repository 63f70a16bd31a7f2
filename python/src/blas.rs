//! When this process's OpenBLAS threads may be stopped.
//!
//! OpenBLAS keeps one pool of worker threads per process, and after each product they spin
//! (`sched_yield`, up to ~0.1 s) waiting for the next one. The `imgvec.ray` driver runs the
//! model to featurize a query and then waits while its shards search on the same cores; the
//! spinning threads took those cores (robust, 2 shards on 2 cores: +29 ms p50 over one database
//! with them, +7 ms with them stopped after featurizing). Stopping the pool while another thread
//! is inside a product would lose that product's work, so:
//! - every native call that releases the GIL (and may run the model, FAISS or the exact scan)
//!   holds [`GATE`] shared while it runs ([`released`]);
//! - [`rest`] stops the pool only when it gets the gate alone (it never waits for it) and no
//!   writable handle is open (a writer's background worker runs products on its own threads).

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};

use imgvec::Database;
use parking_lot::RwLock;
use pyo3::Python;

static GATE: RwLock<()> = parking_lot::const_rwlock(());
/// Open databases that may run products on threads of their own.
static WRITABLE: AtomicUsize = AtomicUsize::new(0);

/// `py.allow_threads(f)`, holding the gate shared while `f` runs.
pub(crate) fn released<T: Send>(py: Python<'_>, f: impl Send + FnOnce() -> T) -> T {
    py.allow_threads(|| {
        let _shared = GATE.read_recursive();
        f()
    })
}

/// Stops OpenBLAS's worker threads until the next product, when nothing else in the process
/// can be running one; returns whether it did.
pub(crate) fn rest() -> bool {
    let Some(_alone) = GATE.try_write() else {
        return false;
    };
    if WRITABLE.load(Ordering::SeqCst) > 0 {
        return false;
    }
    // SAFETY: with the gate held alone no native call is running, none can start until it is
    // released, and no writable database (whose worker threads run on their own) is open.
    unsafe { imgvec::exact::rest_blas_threads() };
    true
}

/// An open database, counted while it lives when it is writable (its background worker).
pub(crate) struct Handle {
    db: Database,
    _writable: Option<Writable>,
}

impl Handle {
    pub(crate) fn new(db: Database, read_only: bool) -> Handle {
        Handle {
            db,
            _writable: (!read_only).then(Writable::new),
        }
    }
}

impl Deref for Handle {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

/// One count of [`WRITABLE`], given back when dropped (after the database it counts: fields
/// drop in order).
struct Writable(());

impl Writable {
    fn new() -> Writable {
        WRITABLE.fetch_add(1, Ordering::SeqCst);
        Writable(())
    }
}

impl Drop for Writable {
    fn drop(&mut self) {
        WRITABLE.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_rests_only_when_no_call_runs_and_no_writer_is_open() {
        let shared = GATE.read_recursive();
        assert!(!rest(), "a call in flight");
        drop(shared);
        let writer = Writable::new();
        assert!(!rest(), "a writable database open");
        drop(writer);
        assert!(rest());
    }
}
