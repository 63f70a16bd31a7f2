//! Exact search: a scan of the memory-mapped, L2-normalised vectors of every segment in a
//! snapshot. On unit vectors the inner product is the cosine similarity, and ranking by it is
//! ranking by L2 distance.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use imgvec_storage::Snapshot;

/// Inner product with eight independent accumulators, so the compiler vectorises the loop.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// A (score, id) pair ordered so that a `BinaryHeap` of them is a min-heap on score.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    score: f32,
    id: u64,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reverse score so the heap's top is the worst; ties broken by the smaller id winning.
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Keeps the `k` best (highest-score) ids seen.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    pub fn push(&mut self, id: u64, score: f32) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Candidate { score, id });
        } else if let Some(worst) = self.heap.peek() {
            let c = Candidate { score, id };
            if c < *worst {
                self.heap.pop();
                self.heap.push(c);
            }
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<(u64, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|c| (c.id, c.score))
            .collect()
    }
}

/// Scores one block of rows against every query, pushing accepted rows into `tops` (one per
/// query). `vectors` holds `ids.len() * dims` floats, row-major.
pub fn scan(
    vectors: &[f32],
    ids: &[u64],
    dims: usize,
    queries: &[f32],
    tops: &mut [TopK],
    accept: &dyn Fn(u64) -> bool,
) {
    for (v, &id) in vectors.chunks_exact(dims).zip(ids) {
        if !accept(id) {
            continue;
        }
        for (q, top) in queries.chunks_exact(dims).zip(tops.iter_mut()) {
            top.push(id, dot(q, v));
        }
    }
}

/// The `k` live rows nearest to each query (`queries` holds `n * dims` unit-norm floats), best
/// first, as (id, cosine). `accept` filters ids (tombstones are always filtered).
pub fn search(
    snapshot: &Snapshot,
    queries: &[f32],
    dims: usize,
    k: usize,
    accept: &dyn Fn(u64) -> bool,
) -> Vec<Vec<(u64, f32)>> {
    let n = queries.len().checked_div(dims).unwrap_or(0);
    let mut tops: Vec<TopK> = (0..n).map(|_| TopK::new(k)).collect();
    let live = |id: u64| !snapshot.tombstones.contains(&id) && accept(id);
    for (_, segment) in &snapshot.segments {
        if segment.dims() == dims {
            scan(
                segment.vectors(),
                segment.ids(),
                dims,
                queries,
                &mut tops,
                &live,
            );
        }
    }
    for chunk in &snapshot.pending {
        if chunk.dims == dims {
            scan(&chunk.vectors, &chunk.ids, dims, queries, &mut tops, &live);
        }
    }
    tops.into_iter().map(TopK::into_sorted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_best_in_order() {
        let mut t = TopK::new(3);
        for (id, s) in [(1, 0.1), (2, 0.9), (3, 0.5), (4, 0.7), (5, -1.0)] {
            t.push(id, s);
        }
        assert_eq!(t.into_sorted(), vec![(2, 0.9), (4, 0.7), (3, 0.5)]);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.25).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
