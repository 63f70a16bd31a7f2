//! Exact scan kernel against FAISS's exact index on the same vectors (DESIGN.md's synthetic
//! mixture, unit-normalised as imgvec stores them): single queries and a batch of 200, one
//! thread on both sides. `IMGVEC_BENCH_N` sets the number of vectors (default 100000).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use faiss::{Index, MetricType};
use imgvec::exact::{scan, TopK};
use imgvec_benches::{normalized, GaussianMixture};

fn exact_scan(c: &mut Criterion) {
    // One thread on both sides: FAISS parallelises with OpenMP and, for batches, OpenBLAS.
    std::env::set_var("OMP_NUM_THREADS", "1");
    // OpenBLAS read its environment when it was loaded: set the thread count directly.
    imgvec::exact::set_blas_threads(1);
    let n: usize = std::env::var("IMGVEC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (dim, k) = (256, 10);
    let mut gen = GaussianMixture::new(dim, 7);
    let base = normalized(gen.sample(n), dim);
    let queries = normalized(gen.sample(200), dim);
    let ids: Vec<u64> = (0..n as u64).collect();
    let mut flat = faiss::index_factory(dim as u32, "Flat", MetricType::L2).unwrap();
    flat.add(&base).unwrap();

    let mut group = c.benchmark_group(format!("exact_{n}x{dim}"));
    group.sample_size(10);
    for batch in [1usize, 200] {
        let q = &queries[..batch * dim];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("imgvec_scan", batch), &batch, |b, _| {
            b.iter(|| {
                let mut tops: Vec<TopK> = (0..batch).map(|_| TopK::new(k)).collect();
                scan(&base, &ids, dim, q, &mut tops, None);
                tops
            })
        });
        group.bench_with_input(BenchmarkId::new("faiss_flat_l2", batch), &batch, |b, _| {
            b.iter(|| flat.search(q, k).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, exact_scan);
criterion_main!(benches);
