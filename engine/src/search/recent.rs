//! What a database handle keeps of its recent searches, by a key of everything it depends on,
//! for the calls that follow: the rounds of a sharded search (docs/RAY.md) search the same
//! query features several times — its candidates, their verification, the expansion and the
//! upright retry — and each starts from what the ones before found (first_pass.rs,
//! observed.rs).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Entries one handle keeps of each kind (the most recent).
const KEEP: usize = 64;

/// A handle's most recent entries of one kind, by key.
pub(crate) struct Recent<T> {
    kept: Mutex<VecDeque<(blake3::Hash, Arc<T>)>>,
    found: AtomicU64,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent {
            kept: Mutex::new(VecDeque::new()),
            found: AtomicU64::new(0),
        }
    }
}

impl<T> Recent<T> {
    /// The entry kept under `key`, if any.
    pub fn get(&self, key: &blake3::Hash) -> Option<Arc<T>> {
        let kept = self.kept.lock();
        let found = kept.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        self.found
            .fetch_add(found.is_some() as u64, Ordering::Relaxed);
        found
    }

    /// Keeps `value` under `key`, unless an entry is kept there already; the oldest entry
    /// makes room.
    pub fn put(&self, key: blake3::Hash, value: Arc<T>) {
        let mut kept = self.kept.lock();
        if kept.iter().any(|(k, _)| *k == key) {
            return;
        }
        keep(&mut kept, key, value);
    }

    /// The entry kept under `key`, else a new one made by `make` and kept (under one lock, so
    /// concurrent callers share one entry).
    pub fn get_or_insert(&self, key: blake3::Hash, make: impl FnOnce() -> T) -> Arc<T> {
        let mut kept = self.kept.lock();
        if let Some((_, found)) = kept.iter().find(|(k, _)| *k == key) {
            self.found.fetch_add(1, Ordering::Relaxed);
            return found.clone();
        }
        let value = Arc::new(make());
        keep(&mut kept, key, value.clone());
        value
    }

    /// How many lookups found an entry.
    pub fn found(&self) -> u64 {
        self.found.load(Ordering::Relaxed)
    }
}

/// Appends an entry; the oldest makes room.
fn keep<T>(kept: &mut VecDeque<(blake3::Hash, Arc<T>)>, key: blake3::Hash, value: Arc<T>) {
    if kept.len() == KEEP {
        kept.pop_front();
    }
    kept.push_back((key, value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recent_entries_are_kept_once_each() {
        let recent = Recent::<u64>::default();
        let key = |i: u32| blake3::hash(&i.to_le_bytes());
        for i in 0..KEEP as u32 + 2 {
            recent.put(key(i), Arc::new(i as u64));
        }
        recent.put(key(5), Arc::new(99)); // kept already: not replaced
        assert!(recent.get(&key(0)).is_none() && recent.get(&key(1)).is_none());
        assert_eq!(*recent.get(&key(5)).unwrap(), 5);
        assert_eq!(*recent.get(&key(KEEP as u32 + 1)).unwrap(), KEEP as u64 + 1);
        assert_eq!(recent.kept.lock().len(), KEEP);
        assert_eq!(recent.found(), 2);
    }

    #[test]
    fn get_or_insert_makes_an_entry_once() {
        let recent = Recent::<u64>::default();
        let key = blake3::hash(b"q");
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            7
        };
        let first = recent.get_or_insert(key, make);
        let again = recent.get_or_insert(key, make);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!((made.get(), recent.found()), (1, 1));
    }
}
