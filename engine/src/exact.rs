//! Exact search: a scan of the memory-mapped, L2-normalised vectors of every segment in a
//! snapshot. On unit vectors the inner product is the cosine similarity, and ranking by it is
//! ranking by L2 distance.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use imgvec_storage::Snapshot;

/// Inner product with sixteen independent accumulators, so the compiler vectorises the loop
/// (two 8-wide registers with AVX2, four 4-wide with SSE2).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes::<16>(a, b)
}

/// Inner product with `L` independent accumulators (a float sum in one accumulator is a chain
/// the compiler may not reorder, so it is neither vectorised nor pipelined). Short rows want
/// few lanes (less left over), long vectors many.
#[inline(always)]
pub fn dot_lanes<const L: usize>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
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
    /// The worst score kept once full (`-inf` before): anything below it cannot enter.
    floor: f32,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
            floor: f32::NEG_INFINITY,
        }
    }

    /// Whether a row with this score could enter the top k (cheap pre-check before `push`).
    #[inline]
    pub fn admits(&self, score: f32) -> bool {
        score >= self.floor
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
        if self.heap.len() == self.k {
            self.floor = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.score);
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

/// Rows per block when several queries are scored at once: the block's vectors stay in cache
/// while a matrix product scores them against every query.
const BLOCK_ROWS: usize = 1024;

// OpenBLAS, which FAISS links already (its generic build does all its matrix products there).
#[link(name = "openblas")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: i32,
        trans_a: i32,
        trans_b: i32,
        m: i32,
        n: i32,
        k: i32,
        alpha: f32,
        a: *const f32,
        lda: i32,
        b: *const f32,
        ldb: i32,
        beta: f32,
        c: *mut f32,
        ldc: i32,
    );
    fn openblas_set_num_threads(n: i32);
    fn blas_thread_shutdown_() -> i32;
}

const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;
const CBLAS_TRANS: i32 = 112;

/// `a · bᵀ` for row-major `a` (m × k) and `b` (n × k): m × n, row-major (OpenBLAS `sgemm`).
pub(crate) fn matmul_nt(a: &[f32], m: usize, b: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!(
        a.len() == m * k && b.len() == n * k,
        "matmul_nt: shapes disagree"
    );
    let mut c = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // SAFETY: the buffers hold m×k, n×k and m×n floats, as the leading dimensions say.
    unsafe {
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            CBLAS_NO_TRANS,
            CBLAS_TRANS,
            m as i32,
            n as i32,
            k as i32,
            1.0,
            a.as_ptr(),
            k as i32,
            b.as_ptr(),
            k as i32,
            0.0,
            c.as_mut_ptr(),
            n as i32,
        )
    };
    c
}

/// `a · bᵀ` as [`matmul_nt`] computes it, into `c` (m × n, row-major), on the calling thread
/// (`matrixmultiply`'s kernels, AVX2/FMA chosen at run time). For the products each thread of
/// a parallel stage makes on its own (verification's descriptor matching, the Hamming encoder):
/// an OpenBLAS call there hands the work to OpenBLAS's threads, which serialise concurrent
/// callers and spin between calls.
pub(crate) fn matmul_nt_here(a: &[f32], m: usize, b: &[f32], n: usize, k: usize, c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= n * k && c.len() >= m * n,
        "matmul_nt_here: shapes disagree"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: `a` holds m × k and `b` n × k floats, row-major (`b` read transposed), `c` m × n;
    // the strides say so.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Threads OpenBLAS uses for batched exact search (and FAISS's own matrix products).
pub fn set_blas_threads(n: usize) {
    // SAFETY: plain OpenBLAS runtime setting.
    unsafe { openblas_set_num_threads(n.max(1) as i32) }
}

/// Stops OpenBLAS's worker threads now, instead of letting them spin (`sched_yield`, up to
/// ~0.1 s) waiting for another product; the next product starts them again. For a process that
/// runs the model and then waits while other processes on its cores work (the `imgvec.ray`
/// driver between featurizing a query and its shards' answers).
///
/// # Safety
/// No other thread of the process may be inside an OpenBLAS call (or start one) meanwhile.
pub unsafe fn rest_blas_threads() {
    // SAFETY: the caller guarantees no product is in flight; OpenBLAS joins its idle workers
    // and starts them again on the next product (blas_server.c, `exec_blas`).
    unsafe {
        blas_thread_shutdown_();
    }
}

/// Scores one block of rows against every query, pushing accepted rows into `tops` (one per
/// query). `vectors` holds `ids.len() * dims` floats, row-major.
///
/// One query: a streaming scan with a vectorised dot product (AVX2 when the CPU has it).
/// Several: blocks of rows times all queries as one matrix product (OpenBLAS `sgemm`, the same
/// kernel FAISS's exact search uses), so each vector is read from memory once per batch.
pub fn scan(
    vectors: &[f32],
    ids: &[u64],
    dims: usize,
    queries: &[f32],
    tops: &mut [TopK],
    accept: Option<&dyn Fn(u64) -> bool>,
) {
    if dims == 0 || queries.is_empty() {
        return;
    }
    if queries.len() == dims {
        scan_one(vectors, ids, dims, queries, &mut tops[0], accept);
        return;
    }
    let n = queries.len() / dims;
    let mut scores = vec![0f32; n * BLOCK_ROWS];
    for (block, block_ids) in vectors
        .chunks(BLOCK_ROWS * dims)
        .zip(ids.chunks(BLOCK_ROWS))
    {
        let rows = block_ids.len();
        // SAFETY: row-major `queries` (n × dims), the block (rows × dims, used transposed) and
        // `scores` (n × rows with row stride BLOCK_ROWS ≥ rows) are at least that long.
        unsafe {
            cblas_sgemm(
                CBLAS_ROW_MAJOR,
                CBLAS_NO_TRANS,
                CBLAS_TRANS,
                n as i32,
                rows as i32,
                dims as i32,
                1.0,
                queries.as_ptr(),
                dims as i32,
                block.as_ptr(),
                dims as i32,
                0.0,
                scores.as_mut_ptr(),
                BLOCK_ROWS as i32,
            );
        }
        let accepted: Option<Vec<bool>> =
            accept.map(|f| block_ids.iter().map(|&id| f(id)).collect());
        for (q, top) in tops.iter_mut().enumerate() {
            let row_scores = &scores[q * BLOCK_ROWS..q * BLOCK_ROWS + rows];
            // Most blocks hold nothing for a full top-k: one vectorised max decides.
            if !top.admits(block_max(row_scores)) {
                continue;
            }
            match &accepted {
                None => {
                    for (&score, &id) in row_scores.iter().zip(block_ids) {
                        if top.admits(score) {
                            top.push(id, score);
                        }
                    }
                }
                Some(ok) => {
                    for ((&score, &id), &ok) in row_scores.iter().zip(block_ids).zip(ok) {
                        if ok && top.admits(score) {
                            top.push(id, score);
                        }
                    }
                }
            }
        }
    }
}

/// Largest value (eight independent lanes, so it vectorises).
#[inline]
fn block_max(v: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            m[i] = m[i].max(c[i]);
        }
    }
    rest.iter()
        .chain(&m)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

imgvec_ingest::with_avx2! {
    /// Scores every row of `vectors` against `query` into `top`; in the AVX2 build LLVM
    /// vectorises `dot` 8 lanes wide.
    fn scan_one(
        vectors: &[f32],
        ids: &[u64],
        dims: usize,
        query: &[f32],
        top: &mut TopK,
        accept: Option<&dyn Fn(u64) -> bool>,
    ) {
        for (v, &id) in vectors.chunks_exact(dims).zip(ids) {
            let score = dot(query, v);
            if top.admits(score) && accept.is_none_or(|f| f(id)) {
                top.push(id, score);
            }
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
    accept: Option<&dyn Fn(u64) -> bool>,
) -> Result<Vec<Vec<(u64, f32)>>, imgvec_storage::StorageError> {
    let n = queries.len().checked_div(dims).unwrap_or(0);
    let mut tops: Vec<TopK> = (0..n).map(|_| TopK::new(k)).collect();
    let combined = |id: u64| !snapshot.is_deleted(id) && accept.is_none_or(|f| f(id));
    let live: Option<&dyn Fn(u64) -> bool> = if snapshot.tombstones().is_empty() {
        accept
    } else {
        Some(&combined)
    };
    for block in snapshot.blocks(dims) {
        let (ids, vectors) = block?;
        scan(vectors, ids, dims, queries, &mut tops, live);
    }
    Ok(tops.into_iter().map(TopK::into_sorted).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_matrix_products_agree() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (m, n, k) in [
            (0, 5, 128),
            (1, 1, 128),
            (3, 70, 128),
            (257, 129, 128),
            (9, 4, 0),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let blas = matmul_nt(&a, m, &b, n, k);
            let mut here = vec![f32::NAN; m * n];
            matmul_nt_here(&a, m, &b, n, k, &mut here);
            for (i, (x, y)) in blas.iter().zip(&here).enumerate() {
                assert!((x - y).abs() < 1e-3, "{m}x{n}x{k} at {i}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn top_k_keeps_best_in_order() {
        let mut t = TopK::new(3);
        for (id, s) in [(1, 0.1), (2, 0.9), (3, 0.5), (4, 0.7), (5, -1.0)] {
            t.push(id, s);
        }
        assert_eq!(t.into_sorted(), vec![(2, 0.9), (4, 0.7), (3, 0.5)]);
    }

    /// The batched (matrix product) and single-query paths give the same results, filters
    /// included, and both match a naive scan.
    #[test]
    fn batched_and_single_scans_agree_with_naive() {
        let (rows, dims, n, k) = (1300, 37, 5, 7);
        let vectors: Vec<f32> = (0..rows * dims)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let queries: Vec<f32> = (0..n * dims)
            .map(|i| ((i * 104729) % 997) as f32 / 498.0 - 1.0)
            .collect();
        let ids: Vec<u64> = (0..rows as u64).map(|i| i * 3 + 1).collect();
        let accept = |id: u64| !id.is_multiple_of(5);
        let mut batched: Vec<TopK> = (0..n).map(|_| TopK::new(k)).collect();
        scan(&vectors, &ids, dims, &queries, &mut batched, Some(&accept));
        for (q, top) in batched.into_iter().enumerate() {
            let query = &queries[q * dims..(q + 1) * dims];
            let mut single = vec![TopK::new(k)];
            scan(&vectors, &ids, dims, query, &mut single, Some(&accept));
            let mut naive: Vec<(u64, f32)> = ids
                .iter()
                .zip(vectors.chunks_exact(dims))
                .filter(|(id, _)| accept(**id))
                .map(|(&id, v)| (id, v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>()))
                .collect();
            naive.sort_by(|a, b| b.1.total_cmp(&a.1));
            let got = top.into_sorted();
            let one = single.pop().unwrap().into_sorted();
            for ((g, o), e) in got.iter().zip(&one).zip(&naive) {
                assert_eq!(g.0, e.0);
                assert_eq!(o.0, e.0);
                assert!((g.1 - e.1).abs() < 1e-3 && (o.1 - e.1).abs() < 1e-3);
            }
            assert_eq!(got.len(), k);
        }
    }

    #[test]
    fn dot_matches_naive() {
        // Lengths below, at and between whole chunks of 8 and 16 lanes.
        for n in [0, 1, 7, 8, 14, 16, 37, 48] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.1).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-3, "{n}");
            assert!((dot_lanes::<8>(&a, &b) - naive).abs() < 1e-3, "{n}");
        }
    }
}
