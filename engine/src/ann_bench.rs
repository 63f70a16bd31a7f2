//! `imgvec bench ann`: every search mode on DESIGN.md's synthetic Gaussian mixture, against
//! exact search for recall and against bare FAISS on the same vectors for speed, in one run.
//!
//! The vectors are written as one real segment file and memory-mapped, the indexes are built
//! with the same code a database uses, and queries go through the same search path (candidate
//! fetch, deleted-row and filter checks, exact re-rank on the mapped vectors).

use std::sync::Arc;
use std::time::Instant;

use faiss::{Index, MetricType};
use imgvec_storage::{write_segment, ColumnData, Segment, Snapshot, StdFs};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::error::Result;
use crate::exact;
use crate::index::hamming::{self, BinaryIvf, Encoder, HammingIndex};
use crate::index::ivfpq::IvfPq;
use crate::index::{
    default_depth, default_nlist, strided_sample, AnnMode, AnnParams, IndexOptions, Indexes,
};

/// Seeded Gaussian mixture: 1000 centres drawn from N(0, 4²) per dimension; each point is a
/// random centre plus N(0, 1) noise per dimension. Returns `n * dim` floats, row-major.
/// Points from the same seed share centres, so draw base and queries from one generator.
pub struct GaussianMixture {
    dim: usize,
    centres: Vec<f32>,
    rng: rand::rngs::StdRng,
}

impl GaussianMixture {
    pub const CENTRES: usize = 1000;

    pub fn new(dim: usize, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let wide = Normal::new(0.0f32, 4.0).expect("valid normal");
        let centres = (0..Self::CENTRES * dim)
            .map(|_| wide.sample(&mut rng))
            .collect();
        GaussianMixture { dim, centres, rng }
    }

    pub fn sample(&mut self, n: usize) -> Vec<f32> {
        let unit = Normal::new(0.0f32, 1.0).expect("valid normal");
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let c = self.rng.gen_range(0..Self::CENTRES) * self.dim;
            for d in 0..self.dim {
                out.push(self.centres[c + d] + unit.sample(&mut self.rng));
            }
        }
        out
    }
}

/// Scales each row to unit L2 norm, as imgvec stores vectors.
pub fn normalized(mut v: Vec<f32>, dim: usize) -> Vec<f32> {
    imgvec_ingest::l2_normalize_rows(&mut v, dim);
    v
}

#[derive(Debug, Clone)]
pub struct AnnBenchOptions {
    pub n: usize,
    pub dim: usize,
    pub queries: usize,
    pub k: usize,
    /// Threads for the "all cores" throughput figure and for index training.
    pub threads: usize,
    pub seed: u64,
    pub index: IndexOptions,
    pub nprobe: Option<usize>,
    pub depth: Option<usize>,
    /// Extra IVF-PQ rows: (nprobe, re-rank depth) pairs.
    pub sweep: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeFigures {
    pub mode: String,
    /// Settings the figures were taken with.
    pub params: String,
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub qps_one_thread: f64,
    pub qps_all_threads: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub build_seconds: f64,
    pub bytes_per_vector_memory: f64,
    pub bytes_per_vector_disk: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: String,
    pub ms_per_query: f64,
    /// Our figure for the same work divided by FAISS's time (> 1: imgvec is faster).
    pub speedup: f64,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnnBench {
    pub n: usize,
    pub dim: usize,
    pub queries: usize,
    pub k: usize,
    pub threads: usize,
    pub hamming_kernel: &'static str,
    pub modes: Vec<ModeFigures>,
    pub faiss: Vec<Baseline>,
}

extern "C" {
    // libgomp, linked with FAISS. Per calling thread: FAISS's OpenMP regions started from this
    // thread use this many threads.
    fn omp_set_num_threads(n: std::os::raw::c_int);
}

/// Threads for FAISS (OpenMP, this thread's regions) and OpenBLAS (process-wide).
fn set_omp_threads(n: usize) {
    // SAFETY: plain OpenMP runtime call, affects the calling thread's parallel regions only.
    unsafe { omp_set_num_threads(n.max(1) as i32) }
    exact::set_blas_threads(n);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// Runs `f` for every query one at a time on this thread (latencies in ms, sorted) and then on
/// `threads` threads sharing the queries (queries per second).
struct Timed {
    results: Vec<Vec<(u64, f32)>>,
    /// Milliseconds, sorted.
    latencies: Vec<f64>,
    qps_one: f64,
    qps_all: f64,
}

fn timed<F>(nq: usize, threads: usize, f: F) -> Timed
where
    F: Fn(usize) -> Vec<(u64, f32)> + Sync,
{
    let mut results = Vec::with_capacity(nq);
    let mut lat = Vec::with_capacity(nq);
    let start = Instant::now();
    for q in 0..nq {
        let t = Instant::now();
        results.push(f(q));
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let qps_one = nq as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = &f;
            s.spawn(move || {
                set_omp_threads(1);
                for q in (t..nq).step_by(threads) {
                    std::hint::black_box(f(q));
                }
            });
        }
    });
    let qps_all = nq as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Timed {
        results,
        latencies: lat,
        qps_one,
        qps_all,
    }
}

/// One row of the mode table.
struct Run {
    mode: AnnMode,
    name: String,
    rerank: bool,
    build: f64,
    mem: f64,
    disk: f64,
    /// (nprobe, depth) overriding the defaults.
    sweep: Option<(usize, usize)>,
}

fn recall(found: &[Vec<(u64, f32)>], truth: &[Vec<(u64, f32)>], k: usize) -> (f64, f64) {
    let (mut r1, mut r10) = (0.0, 0.0);
    for (f, t) in found.iter().zip(truth) {
        r1 += (f.first().map(|x| x.0) == t.first().map(|x| x.0)) as u8 as f64;
        let tk: std::collections::HashSet<u64> = t.iter().take(k).map(|x| x.0).collect();
        r10 += f.iter().take(k).filter(|x| tk.contains(&x.0)).count() as f64 / k.max(1) as f64;
    }
    let n = found.len().max(1) as f64;
    (r1 / n, r10 / n)
}

fn file_len(path: &std::path::Path) -> f64 {
    std::fs::metadata(path)
        .map(|m| m.len() as f64)
        .unwrap_or(0.0)
}

/// Runs the benchmark in `scratch` (a folder for the segment and index files).
pub fn ann(opts: &AnnBenchOptions, scratch: &std::path::Path) -> Result<AnnBench> {
    let (n, dim, nq, k) = (opts.n, opts.dim, opts.queries, opts.k);
    let threads = opts.threads.max(1);
    set_omp_threads(threads);
    let mut gen = GaussianMixture::new(dim, opts.seed);
    let base = normalized(gen.sample(n), dim);
    let queries = normalized(gen.sample(nq), dim);
    let ids: Vec<u64> = (1..=n as u64).collect();

    // Raw vectors: one segment file, memory-mapped like a database's.
    std::fs::create_dir_all(scratch)?;
    let seg_path = scratch.join("bench.ivs");
    let t = Instant::now();
    write_segment(
        &StdFs,
        &seg_path,
        n,
        &[
            ColumnData::u64("ids", &ids),
            ColumnData::f32("vectors", dim, &base),
        ],
    )?;
    let exact_build = t.elapsed().as_secs_f64();
    let segment = Arc::new(Segment::open(&seg_path)?);
    let snap = Snapshot {
        segments: vec![(1, segment.clone())],
        ..Snapshot::default()
    };
    let seg_bytes = file_len(&seg_path) / n.max(1) as f64;
    drop(base);

    let mut modes = Vec::new();
    let mut faiss_rows = Vec::new();
    let query = |q: usize| &queries[q * dim..(q + 1) * dim];

    // Exact: the ground truth, and the baseline for speed-ups.
    set_omp_threads(1);
    let exact_run = timed(nq, threads, |q| {
        exact::search(&snap, query(q), dim, k, None)
            .pop()
            .unwrap_or_default()
    });
    let exact_qps = exact_run.qps_one;
    let truth = exact_run.results;
    modes.push(ModeFigures {
        mode: "exact".into(),
        params: "scan of the mapped vectors".into(),
        recall_at_1: 1.0,
        recall_at_10: 1.0,
        qps_one_thread: exact_run.qps_one,
        qps_all_threads: exact_run.qps_all,
        p50_ms: percentile(&exact_run.latencies, 0.5),
        p99_ms: percentile(&exact_run.latencies, 0.99),
        build_seconds: exact_build,
        bytes_per_vector_memory: (dim * 4 + 8) as f64,
        bytes_per_vector_disk: seg_bytes,
    });
    // Batch of all queries at once.
    let t = Instant::now();
    let batch = exact::search(&snap, &queries, dim, k, None);
    let exact_batch_ms = t.elapsed().as_secs_f64() * 1000.0 / nq as f64;
    std::hint::black_box(batch);

    // FAISS IndexFlatL2 on the same vectors, one thread.
    {
        let mut flat = faiss::index_factory(dim as u32, "Flat", MetricType::L2)?;
        flat.add(segment.vectors())?;
        let single = nq.min(50);
        let t = Instant::now();
        for q in 0..single {
            std::hint::black_box(flat.search(query(q), k)?);
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / single as f64;
        faiss_rows.push(Baseline {
            name: "faiss IndexFlatL2, single queries".into(),
            ms_per_query: ms,
            speedup: ms / (1000.0 / exact_qps),
            note: "vs imgvec exact, single queries, one thread".into(),
        });
        let t = Instant::now();
        std::hint::black_box(flat.search(&queries, k)?);
        let ms = t.elapsed().as_secs_f64() * 1000.0 / nq as f64;
        faiss_rows.push(Baseline {
            name: format!("faiss IndexFlatL2, batch of {nq}"),
            ms_per_query: ms,
            speedup: ms / exact_batch_ms,
            note: format!("vs imgvec exact, batch of {nq} ({exact_batch_ms:.3} ms/query)"),
        });
    }

    // IVF-PQ.
    set_omp_threads(threads);
    let factory = opts
        .index
        .ivf_factory
        .clone()
        .unwrap_or_else(|| IvfPq::default_factory(n, dim));
    let t = Instant::now();
    let sample = strided_sample(
        segment.vectors(),
        dim,
        IvfPq::training_rows(&factory, n, dim),
    );
    let mut ivf = IvfPq::train(dim, &factory, &sample, n as u64)?;
    drop(sample);
    for (c_ids, c_vec) in ids
        .chunks(65_536)
        .zip(segment.vectors().chunks(65_536 * dim))
    {
        ivf.add(c_ids, c_vec)?;
    }
    let ivf_build = t.elapsed().as_secs_f64();
    let ivf_path = scratch.join("ivfpq.idx");
    ivf.save(&ivf_path)?;
    let ivf_mem = ivf.bytes_per_vector();
    let ivf_disk = file_len(&ivf_path) / n as f64;
    let nprobe = opts.nprobe.unwrap_or(ivf.default_nprobe());

    // Binary codes: ITQ, flat scan and binary IVF.
    let bits = Encoder::code_bits(opts.index.bits, dim);
    let t = Instant::now();
    let sample = strided_sample(segment.vectors(), dim, 65_536);
    let encoder = if Encoder::itq_possible(sample.len() / dim, bits, dim) {
        Encoder::itq(dim, bits, &sample)?
    } else {
        Encoder::lsh(dim, bits, &sample, 1)
    };
    drop(sample);
    let mut flat = HammingIndex::new(encoder, n as u64);
    for (c_ids, c_vec) in ids
        .chunks(65_536)
        .zip(segment.vectors().chunks(65_536 * dim))
    {
        flat.add(c_ids, c_vec);
    }
    let ham_build = t.elapsed().as_secs_f64();
    let ham_path = scratch.join("hamming.idx");
    flat.save(&ham_path)?;
    let ham_disk = file_len(&ham_path) / n as f64;
    let ham_mem = flat.bytes_per_row() as f64;
    let t = Instant::now();
    let nlist = default_nlist(n);
    let bivf = BinaryIvf::build(flat.encoder.words(), flat.ids(), flat.codes(), nlist)?;
    let bivf_build = ham_build + t.elapsed().as_secs_f64();
    let bivf_path = scratch.join("hamming-ivf.idx");
    bivf.save(&bivf_path)?;
    let bivf_disk = file_len(&bivf_path) / n as f64;
    let words = flat.encoder.words();
    let code = match flat.encoder.kind {
        hamming::EncoderKind::Itq => "ITQ",
        hamming::EncoderKind::Lsh => "LSH",
    };
    let query_codes: Vec<Vec<u64>> = (0..nq).map(|q| flat.encode_one(query(q))).collect();

    // FAISS IndexBinaryFlat over the same codes, one thread, as the Hamming kernel's baseline.
    set_omp_threads(1);
    let faiss_binary_ms = {
        let mut bf = faiss::index_binary_factory((words * 64) as u32, "BFlat")?;
        let bytes: Vec<u8> = flat.codes().iter().flat_map(|w| w.to_le_bytes()).collect();
        bf.add(&bytes)?;
        let single = nq.min(50);
        let depth = default_depth(AnnMode::Hamming, k);
        let t = Instant::now();
        for code in query_codes.iter().take(single) {
            let q: Vec<u8> = code.iter().flat_map(|w| w.to_le_bytes()).collect();
            std::hint::black_box(bf.search(&q, depth)?);
        }
        t.elapsed().as_secs_f64() * 1000.0 / single as f64
    };
    let own_binary_ms = {
        let single = nq.min(50);
        let depth = default_depth(AnnMode::Hamming, k);
        let t = Instant::now();
        for code in query_codes.iter().take(single) {
            std::hint::black_box(flat.search(code, depth));
        }
        t.elapsed().as_secs_f64() * 1000.0 / single as f64
    };
    faiss_rows.push(Baseline {
        name: format!(
            "faiss IndexBinaryFlat, {}-bit codes, top {}",
            bits,
            default_depth(AnnMode::Hamming, k)
        ),
        ms_per_query: faiss_binary_ms,
        speedup: faiss_binary_ms / own_binary_ms,
        note: format!(
            "vs imgvec Hamming scan of the same codes ({own_binary_ms:.3} ms/query, {} kernel)",
            hamming::kernel_name()
        ),
    });

    let indexes = Indexes::from_parts(opts.index.clone(), Some(ivf), Some((flat, Some(bivf))));
    let ivf_bare_ms;
    let run = |mode, name: &str, rerank, build, mem, disk| Run {
        mode,
        name: name.to_string(),
        rerank,
        build,
        mem,
        disk,
        sweep: None,
    };
    let mut runs = vec![
        run(AnnMode::IvfPq, "ivfpq", true, ivf_build, ivf_mem, ivf_disk),
        run(
            AnnMode::IvfPq,
            "ivfpq (no re-rank)",
            false,
            ivf_build,
            ivf_mem,
            ivf_disk,
        ),
        run(
            AnnMode::Hamming,
            "hamming",
            true,
            ham_build,
            ham_mem,
            ham_disk,
        ),
        run(
            AnnMode::Hamming,
            "hamming (no re-rank)",
            false,
            ham_build,
            ham_mem,
            ham_disk,
        ),
        run(
            AnnMode::HammingIvf,
            "hamming-ivf",
            true,
            bivf_build,
            ham_mem + 8.0,
            bivf_disk,
        ),
    ];
    for &(np, d) in &opts.sweep {
        runs.push(Run {
            sweep: Some((np, d)),
            ..run(
                AnnMode::IvfPq,
                &format!("ivfpq {np}/{d}"),
                true,
                ivf_build,
                ivf_mem,
                ivf_disk,
            )
        });
    }
    for Run {
        mode,
        name,
        rerank,
        build,
        mem,
        disk,
        sweep,
    } in runs
    {
        let depth = sweep.map_or(opts.depth.unwrap_or(default_depth(mode, k)), |s| s.1);
        let nprobe = sweep.map_or(opts.nprobe.unwrap_or(nprobe), |s| s.0);
        let params = AnnParams {
            k,
            nprobe: Some(nprobe),
            rerank,
            depth: Some(if rerank { depth } else { k }),
        };
        let t = timed(nq, threads, |q| {
            indexes
                .search(mode, &snap, query(q), &params, &|_| true)
                .ok()
                .flatten()
                .unwrap_or_default()
        });
        let desc = match (mode, rerank) {
            (AnnMode::IvfPq, true) => format!("{factory}, nprobe {nprobe}, re-rank {depth}"),
            (AnnMode::IvfPq, false) => format!("{factory}, nprobe {nprobe}"),
            (AnnMode::HammingIvf, _) => {
                format!("{bits}-bit {code}, BIVF{nlist}, nprobe {nprobe}, re-rank {depth}")
            }
            (_, true) => format!("{bits}-bit {code}, re-rank {depth}"),
            (_, false) => format!("{bits}-bit {code}"),
        };
        let (r1, r10) = recall(&t.results, &truth, k);
        modes.push(ModeFigures {
            mode: name,
            params: desc,
            recall_at_1: r1,
            recall_at_10: r10,
            qps_one_thread: t.qps_one,
            qps_all_threads: t.qps_all,
            p50_ms: percentile(&t.latencies, 0.5),
            p99_ms: percentile(&t.latencies, 0.99),
            build_seconds: build,
            bytes_per_vector_memory: mem,
            bytes_per_vector_disk: disk,
        });
    }
    // Bare FAISS IVF-PQ (same index, no re-rank) vs ours with re-rank, for the ratio.
    {
        let ivf_row = modes.iter().find(|m| m.mode == "ivfpq (no re-rank)");
        ivf_bare_ms = ivf_row.map_or(0.0, |m| 1000.0 / m.qps_one_thread);
    }
    let ours = modes
        .iter()
        .find(|m| m.mode == "ivfpq")
        .map_or(0.0, |m| 1000.0 / m.qps_one_thread);
    faiss_rows.push(Baseline {
        name: format!("faiss {factory} search alone (nprobe {nprobe}, top {k})"),
        ms_per_query: ivf_bare_ms,
        speedup: ivf_bare_ms / ours.max(1e-9),
        note: "vs imgvec ivfpq with exact re-rank (< 1: the re-rank's cost)".into(),
    });
    let _ = std::fs::remove_file(&seg_path);
    Ok(AnnBench {
        n,
        dim,
        queries: nq,
        k,
        threads,
        hamming_kernel: hamming::kernel_name(),
        modes,
        faiss: faiss_rows,
    })
}
