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
//!   open database may run products on threads of its own: a writable one (its background
//!   worker) or one asked to preload (its loading thread builds an index it finds no file for).

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use imgvec::Database;
use parking_lot::RwLock;
use pyo3::Python;

static GATE: RwLock<()> = parking_lot::const_rwlock(());
/// Open databases that may run products on threads of their own.
static BACKGROUND: AtomicUsize = AtomicUsize::new(0);

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
    if BACKGROUND.load(Ordering::SeqCst) > 0 {
        return false;
    }
    // SAFETY: with the gate held alone no native call is running, none can start until it is
    // released, and no open database runs threads of its own.
    unsafe { imgvec::exact::rest_blas_threads() };
    true
}

/// An open database, counted while it lives once it may run threads of its own: from the start
/// when it is writable, from its first preload otherwise.
pub(crate) struct Handle {
    db: Database,
    background: OnceLock<Background>,
}

impl Handle {
    /// Opens a database with `open`, counted from before it starts when `read_only` is false
    /// (a writer starts its worker while opening).
    pub(crate) fn open<E>(
        read_only: bool,
        open: impl FnOnce() -> Result<Database, E>,
    ) -> Result<Handle, E> {
        let background = OnceLock::new();
        if !read_only {
            background.get_or_init(Background::new);
        }
        Ok(Handle {
            db: open()?,
            background,
        })
    }

    /// Starts loading the indexes verified searches read first, on a thread of its own.
    pub(crate) fn preload(&self) {
        self.background.get_or_init(Background::new);
        self.db.preload();
    }
}

impl Deref for Handle {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

/// One count of [`BACKGROUND`], given back when dropped (after the database it counts: fields
/// drop in order, and a database joins its threads when dropped).
struct Background(());

impl Background {
    fn new() -> Background {
        BACKGROUND.fetch_add(1, Ordering::SeqCst);
        Background(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        BACKGROUND.fetch_sub(1, Ordering::SeqCst);
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
        let writer = Background::new();
        assert!(!rest(), "a database with threads of its own open");
        drop(writer);
        assert!(rest());
    }
}
