//! Spreading independent pieces of work over threads, with the results kept in order.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` of each of `items`, in their order, computed on up to `threads` threads (the caller's
/// among them) that each take the next item when done with the last, so items of very
/// different costs still spread evenly. A panic in `f` reaches the caller, as in a loop.
pub(crate) fn map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len()).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let take = || {
        let mut done: Vec<(usize, R)> = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|s| {
        let others: Vec<_> = (1..threads).map(|_| s.spawn(take)).collect();
        let mut all = take();
        for h in others {
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_whatever_the_threads() {
        let items: Vec<u64> = (0..97).collect();
        for (name, threads, items) in [
            ("one thread", 1, &items[..]),
            ("two", 2, &items[..]),
            ("more threads than items", 8, &items[..3]),
            ("no items", 4, &items[..0]),
        ] {
            let got = map(items, threads, |&x| {
                // Uneven costs, so threads finish out of order.
                std::thread::sleep(std::time::Duration::from_micros((x % 5) * 50));
                x * x
            });
            let want: Vec<u64> = items.iter().map(|x| x * x).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn every_thread_takes_work() {
        let seen = parking_lot::Mutex::new(std::collections::HashSet::new());
        map(&[(); 64], 2, |_| {
            seen.lock().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(2));
        });
        assert_eq!(seen.lock().len(), 2);
    }
}
