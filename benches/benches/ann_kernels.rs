//! Kernels behind the approximate modes, each beside bare FAISS doing the same work on the same
//! data (DESIGN.md's synthetic mixture, unit-normalised), one thread: the Hamming scan + top-k
//! selection (vs FAISS IndexBinaryFlat), IVF-PQ search (FAISS through imgvec's `&self` path with
//! per-call `nprobe`), and the exact re-rank of a candidate list.
//! `IMGVEC_BENCH_N` sets the number of vectors (default 100000).

use criterion::{criterion_group, criterion_main, Criterion};
use faiss::Index;
use imgvec::exact::dot;
use imgvec::index::hamming::{Encoder, HammingIndex};
use imgvec::index::ivfpq::IvfPq;
use imgvec_benches::{normalized, GaussianMixture};

fn ann_kernels(c: &mut Criterion) {
    std::env::set_var("OMP_NUM_THREADS", "1");
    let n: usize = std::env::var("IMGVEC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dim = 256;
    let mut gen = GaussianMixture::new(dim, 7);
    let base = normalized(gen.sample(n), dim);
    let queries = normalized(gen.sample(50), dim);
    let ids: Vec<u64> = (0..n as u64).collect();
    let mut group = c.benchmark_group(format!("ann_{n}x{dim}"));
    group.sample_size(10);

    // Hamming: 256-bit ITQ codes, top 1000.
    let encoder = Encoder::itq(dim, 256, &base[..dim * n.min(65_536)]).unwrap();
    let mut flat = HammingIndex::new(encoder, n as u64);
    flat.add(&ids, &base);
    let codes: Vec<Vec<u64>> = queries.chunks(dim).map(|q| flat.encode_one(q)).collect();
    let mut q = 0;
    group.bench_function("imgvec_hamming_scan_top1000", |b| {
        b.iter(|| {
            q = (q + 1) % codes.len();
            flat.search(&codes[q], 1000)
        })
    });
    let mut bf = faiss::index_binary_factory(256, "BFlat").unwrap();
    let bytes: Vec<u8> = flat.codes().iter().flat_map(|w| w.to_le_bytes()).collect();
    bf.add(&bytes).unwrap();
    let qbytes: Vec<Vec<u8>> = codes
        .iter()
        .map(|c| c.iter().flat_map(|w| w.to_le_bytes()).collect())
        .collect();
    group.bench_function("faiss_binary_flat_top1000", |b| {
        b.iter(|| {
            q = (q + 1) % qbytes.len();
            bf.search(&qbytes[q], 1000).unwrap()
        })
    });

    // IVF-PQ search, 200 candidates.
    let factory = IvfPq::default_factory(n, dim);
    let rows = IvfPq::training_rows(&factory, n, dim);
    let mut ivf = IvfPq::train(dim, &factory, &base[..rows * dim], n as u64).unwrap();
    ivf.add(&ids, &base).unwrap();
    let nprobe = ivf.default_nprobe();
    group.bench_function(
        format!("imgvec_ivfpq_{factory}_nprobe{nprobe}_top200"),
        |b| {
            b.iter(|| {
                q = (q + 1) % 50;
                ivf.search(&queries[q * dim..(q + 1) * dim], 200, nprobe)
                    .unwrap()
            })
        },
    );

    // Exact re-rank of 200 candidates scattered over the vectors.
    let cands: Vec<usize> = (0..200).map(|i| (i * 7919 * 13) % n).collect();
    group.bench_function("rerank_200_candidates", |b| {
        b.iter(|| {
            q = (q + 1) % 50;
            let qv = &queries[q * dim..(q + 1) * dim];
            let mut scored: Vec<(usize, f32)> = cands
                .iter()
                .map(|&r| (r, dot(qv, &base[r * dim..(r + 1) * dim])))
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
            scored.truncate(10);
            scored
        })
    });
    group.finish();
}

criterion_group!(benches, ann_kernels);
criterion_main!(benches);
