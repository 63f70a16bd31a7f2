//! `imgvec bench ann`: every search mode on DESIGN.md's synthetic Gaussian mixture, against
//! exact search for recall and against bare FAISS on the same vectors for speed, in one run.
//!
//! The vectors are written as one real segment file and memory-mapped, the indexes are built
//! with the same code a database uses, and queries go through the same search path (candidate
//! fetch, deleted-row and filter checks, exact re-rank on the mapped vectors).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use faiss::{Index, MetricType};
use imgvec_storage::{write_segment, ColumnData, Segment, Snapshot, StdFs};
use serde::Serialize;

use imgvec::exact;
use imgvec::index::hamming::{self, BinaryIvf, Encoder, HammingIndex};
use imgvec::index::ivfpq::IvfPq;
use imgvec::index::{
    default_depth, default_nlist, strided_sample, AnnMode, AnnParams, IndexOptions, Indexes,
};
use imgvec::Result;

use crate::mixture::{normalized, GaussianMixture};

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
    pub hamming_kernel: hamming::Kernel,
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

/// The run's settings and data: the queries in memory, the base vectors as one segment file in
/// `scratch`, memory-mapped like a database's.
struct Bench<'a> {
    opts: &'a AnnBenchOptions,
    scratch: &'a Path,
    n: usize,
    dim: usize,
    nq: usize,
    k: usize,
    threads: usize,
    ids: Vec<u64>,
    queries: Vec<f32>,
    segment: Arc<Segment>,
    snap: Snapshot,
    seg_path: PathBuf,
    /// Seconds to write the segment file (exact search's build time).
    seg_build: f64,
    /// Segment file bytes per vector.
    seg_bytes: f64,
}

impl Bench<'_> {
    /// Query `q`'s vector.
    fn query(&self, q: usize) -> &[f32] {
        &self.queries[q * self.dim..(q + 1) * self.dim]
    }

    /// Every stored vector, row-major.
    fn vectors(&self) -> Result<&[f32]> {
        Ok(self.segment.vectors()?)
    }
}

/// Draws the base vectors and the queries from the mixture and writes the base vectors as one
/// segment file in `scratch`, memory-mapped like a database's.
fn setup<'a>(opts: &'a AnnBenchOptions, scratch: &'a Path) -> Result<Bench<'a>> {
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
    let seg_build = t.elapsed().as_secs_f64();
    let segment = Arc::new(Segment::open(&seg_path)?);
    segment.verify_all()?;
    let snap = Snapshot::new(vec![(1, segment.clone())], Vec::new(), Default::default());
    let seg_bytes = file_len(&seg_path) / n.max(1) as f64;
    drop(base);
    Ok(Bench {
        opts,
        scratch,
        n,
        dim,
        nq,
        k,
        threads,
        ids,
        queries,
        segment,
        snap,
        seg_path,
        seg_build,
        seg_bytes,
    })
}

/// Exact search: the ground truth, and the baseline for speed-ups.
struct Exact {
    truth: Vec<Vec<(u64, f32)>>,
    /// Single queries per second, one thread.
    qps: f64,
    /// Milliseconds per query of one batch of all queries.
    batch_ms: f64,
}

/// Times exact search on the mapped vectors, one BLAS/OpenMP thread per search (single queries
/// on this thread and on all threads, then one batch of all queries), and pushes its row of the
/// mode table.
fn exact_search(b: &Bench<'_>, modes: &mut Vec<ModeFigures>) -> Exact {
    set_omp_threads(1);
    let exact_run = timed(b.nq, b.threads, |q| {
        // The segment was checked whole when written: its reads cannot fail.
        exact::search(&b.snap, b.query(q), b.dim, b.k, None)
            .map(|mut all| all.pop().unwrap_or_default())
            .unwrap_or_default()
    });
    let qps = exact_run.qps_one;
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
        build_seconds: b.seg_build,
        bytes_per_vector_memory: (b.dim * 4 + 8) as f64,
        bytes_per_vector_disk: b.seg_bytes,
    });
    // Batch of all queries at once.
    let t = Instant::now();
    let batch = exact::search(&b.snap, &b.queries, b.dim, b.k, None);
    let batch_ms = t.elapsed().as_secs_f64() * 1000.0 / b.nq as f64;
    let _ = std::hint::black_box(batch);
    Exact {
        truth,
        qps,
        batch_ms,
    }
}

/// FAISS IndexFlatL2 on the same vectors, one thread: single queries, then one batch of all
/// queries, each against the same work by imgvec's exact search.
fn faiss_flat(b: &Bench<'_>, exact: &Exact) -> Result<Vec<Baseline>> {
    let (nq, k) = (b.nq, b.k);
    let mut rows = Vec::new();
    let mut flat = faiss::index_factory(b.dim as u32, "Flat", MetricType::L2)?;
    flat.add(b.vectors()?)?;
    let single = nq.min(50);
    let t = Instant::now();
    for q in 0..single {
        std::hint::black_box(flat.search(b.query(q), k)?);
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0 / single as f64;
    rows.push(Baseline {
        name: "faiss IndexFlatL2, single queries".into(),
        ms_per_query: ms,
        speedup: ms / (1000.0 / exact.qps),
        note: "vs imgvec exact, single queries, one thread".into(),
    });
    let t = Instant::now();
    std::hint::black_box(flat.search(&b.queries, k)?);
    let ms = t.elapsed().as_secs_f64() * 1000.0 / nq as f64;
    let exact_batch_ms = exact.batch_ms;
    rows.push(Baseline {
        name: format!("faiss IndexFlatL2, batch of {nq}"),
        ms_per_query: ms,
        speedup: ms / exact_batch_ms,
        note: format!("vs imgvec exact, batch of {nq} ({exact_batch_ms:.3} ms/query)"),
    });
    Ok(rows)
}

/// Build seconds and bytes per vector (in memory, on disk) of one index.
struct Cost {
    build: f64,
    mem: f64,
    disk: f64,
}

/// What the report says about the IVF-PQ index.
struct IvfFigures {
    factory: String,
    /// Lists probed unless a sweep row says otherwise.
    nprobe: usize,
    cost: Cost,
}

/// The IVF-PQ index, built and saved.
struct IvfBuilt {
    index: IvfPq,
    figures: IvfFigures,
}

/// Trains IVF-PQ on a sample of the mapped vectors with all threads, fills it with every row
/// and saves it in `scratch`.
fn build_ivf(b: &Bench<'_>) -> Result<IvfBuilt> {
    let (opts, n, dim) = (b.opts, b.n, b.dim);
    set_omp_threads(b.threads);
    let factory = opts
        .index
        .ivf_factory
        .clone()
        .unwrap_or_else(|| IvfPq::default_factory(n, dim));
    let t = Instant::now();
    let sample = strided_sample(b.vectors()?, dim, IvfPq::training_rows(&factory, n, dim));
    let mut ivf = IvfPq::train(dim, &factory, &sample, n as u64)?;
    drop(sample);
    for (c_ids, c_vec) in b.ids.chunks(65_536).zip(b.vectors()?.chunks(65_536 * dim)) {
        ivf.add(c_ids, c_vec)?;
    }
    let build = t.elapsed().as_secs_f64();
    let ivf_path = b.scratch.join("ivfpq.idx");
    ivf.save(&ivf_path)?;
    let mem = ivf.bytes_per_vector();
    let disk = file_len(&ivf_path) / n as f64;
    let nprobe = opts.nprobe.unwrap_or(ivf.default_nprobe());
    Ok(IvfBuilt {
        index: ivf,
        figures: IvfFigures {
            factory,
            nprobe,
            cost: Cost { build, mem, disk },
        },
    })
}

/// What the report says about the binary codes and their indexes.
struct CodeFigures {
    bits: usize,
    /// "ITQ" or "LSH".
    code: &'static str,
    /// Lists of the binary IVF.
    nlist: usize,
    /// The flat Hamming index.
    hamming: Cost,
    /// The binary IVF: build seconds (codes included) and file bytes per vector.
    ivf_build: f64,
    ivf_disk: f64,
}

/// The binary codes, the flat Hamming index and the binary IVF over them, built and saved.
struct CodesBuilt {
    flat: HammingIndex,
    bivf: BinaryIvf,
    /// Every query's code.
    query_codes: Vec<Vec<u64>>,
    figures: CodeFigures,
}

/// Binary codes (ITQ when the sample allows it, else LSH) of every mapped vector: the flat
/// Hamming index and a binary IVF over its codes, both saved in `scratch`, and the queries'
/// codes.
fn build_codes(b: &Bench<'_>) -> Result<CodesBuilt> {
    let (n, dim) = (b.n, b.dim);
    let bits = Encoder::code_bits(b.opts.index.bits, dim);
    let t = Instant::now();
    let sample = strided_sample(b.vectors()?, dim, 65_536);
    let encoder = if Encoder::itq_possible(sample.len() / dim, bits, dim) {
        Encoder::itq(dim, bits, &sample)?
    } else {
        Encoder::lsh(dim, bits, &sample, 1)
    };
    drop(sample);
    let mut flat = HammingIndex::new(encoder, n as u64);
    for (c_ids, c_vec) in b.ids.chunks(65_536).zip(b.vectors()?.chunks(65_536 * dim)) {
        flat.add(c_ids, c_vec);
    }
    let ham_build = t.elapsed().as_secs_f64();
    let ham_path = b.scratch.join("hamming.idx");
    flat.save(&ham_path)?;
    let ham_disk = file_len(&ham_path) / n as f64;
    let ham_mem = flat.bytes_per_row() as f64;
    let t = Instant::now();
    let nlist = default_nlist(n);
    let bivf = BinaryIvf::build(flat.encoder.words(), flat.ids(), flat.codes(), nlist)?;
    let bivf_build = ham_build + t.elapsed().as_secs_f64();
    let bivf_path = b.scratch.join("hamming-ivf.idx");
    bivf.save(&bivf_path)?;
    let bivf_disk = file_len(&bivf_path) / n as f64;
    let code = match flat.encoder.kind {
        hamming::EncoderKind::Itq => "ITQ",
        hamming::EncoderKind::Lsh => "LSH",
    };
    let query_codes: Vec<Vec<u64>> = (0..b.nq).map(|q| flat.encode_one(b.query(q))).collect();
    let figures = CodeFigures {
        bits,
        code,
        nlist,
        hamming: Cost {
            build: ham_build,
            mem: ham_mem,
            disk: ham_disk,
        },
        ivf_build: bivf_build,
        ivf_disk: bivf_disk,
    };
    Ok(CodesBuilt {
        flat,
        bivf,
        query_codes,
        figures,
    })
}

/// FAISS IndexBinaryFlat over the same codes, one thread, as the Hamming kernel's baseline:
/// both fetch the default Hamming depth for single queries.
fn faiss_binary(b: &Bench<'_>, codes: &CodesBuilt) -> Result<Baseline> {
    let (nq, k) = (b.nq, b.k);
    let (flat, query_codes, bits) = (&codes.flat, &codes.query_codes, codes.figures.bits);
    let words = flat.encoder.words();
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
    Ok(Baseline {
        name: format!(
            "faiss IndexBinaryFlat, {}-bit codes, top {}",
            bits,
            default_depth(AnnMode::Hamming, k)
        ),
        ms_per_query: faiss_binary_ms,
        speedup: faiss_binary_ms / own_binary_ms,
        note: format!(
            "vs imgvec Hamming scan of the same codes ({own_binary_ms:.3} ms/query, {} kernel)",
            hamming::Kernel::detect()
        ),
    })
}

/// What the approximate modes' rows are measured with: the indexes behind the search path,
/// exact search's results as the ground truth, and the indexes' figures.
struct ApproxModes<'a> {
    b: &'a Bench<'a>,
    indexes: &'a Indexes,
    ivf: &'a IvfFigures,
    codes: &'a CodeFigures,
    truth: &'a [Vec<(u64, f32)>],
}

impl ApproxModes<'_> {
    /// The rows after exact: IVF-PQ and the flat Hamming scan with and without re-rank, the
    /// binary IVF, then one IVF-PQ row per sweep pair.
    fn runs(&self) -> Vec<Run> {
        let (ivf, ham) = (&self.ivf.cost, &self.codes.hamming);
        let bivf = Cost {
            build: self.codes.ivf_build,
            mem: ham.mem + 8.0,
            disk: self.codes.ivf_disk,
        };
        let run = |mode, name: &str, rerank, cost: &Cost| Run {
            mode,
            name: name.to_string(),
            rerank,
            build: cost.build,
            mem: cost.mem,
            disk: cost.disk,
            sweep: None,
        };
        let mut runs = vec![
            run(AnnMode::IvfPq, "ivfpq", true, ivf),
            run(AnnMode::IvfPq, "ivfpq (no re-rank)", false, ivf),
            run(AnnMode::Hamming, "hamming", true, ham),
            run(AnnMode::Hamming, "hamming (no re-rank)", false, ham),
            run(AnnMode::HammingIvf, "hamming-ivf", true, &bivf),
        ];
        for &(np, d) in &self.b.opts.sweep {
            runs.push(Run {
                sweep: Some((np, d)),
                ..run(AnnMode::IvfPq, &format!("ivfpq {np}/{d}"), true, ivf)
            });
        }
        runs
    }

    /// Times one row's mode through the database search path and scores it against exact.
    fn figures(&self, run: Run) -> ModeFigures {
        let Run {
            mode,
            name,
            rerank,
            build,
            mem,
            disk,
            sweep,
        } = run;
        let (b, k) = (self.b, self.b.k);
        let depth = sweep.map_or(b.opts.depth.unwrap_or(default_depth(mode, k)), |s| s.1);
        let nprobe = sweep.map_or(b.opts.nprobe.unwrap_or(self.ivf.nprobe), |s| s.0);
        let params = AnnParams {
            k,
            nprobe: Some(nprobe),
            rerank,
            depth: Some(if rerank { depth } else { k }),
        };
        let t = timed(b.nq, b.threads, |q| {
            self.indexes
                .search(mode, &b.snap, b.query(q), &params, &|_| true)
                .ok()
                .flatten()
                .unwrap_or_default()
        });
        let desc = self.describe(mode, rerank, nprobe, depth);
        let (r1, r10) = recall(&t.results, self.truth, k);
        ModeFigures {
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
        }
    }

    /// A row's settings column.
    fn describe(&self, mode: AnnMode, rerank: bool, nprobe: usize, depth: usize) -> String {
        let factory = &self.ivf.factory;
        let (bits, code, nlist) = (self.codes.bits, self.codes.code, self.codes.nlist);
        match (mode, rerank) {
            (AnnMode::IvfPq, true) => format!("{factory}, nprobe {nprobe}, re-rank {depth}"),
            (AnnMode::IvfPq, false) => format!("{factory}, nprobe {nprobe}"),
            (AnnMode::HammingIvf, _) => {
                format!("{bits}-bit {code}, BIVF{nlist}, nprobe {nprobe}, re-rank {depth}")
            }
            (_, true) => format!("{bits}-bit {code}, re-rank {depth}"),
            (_, false) => format!("{bits}-bit {code}"),
        }
    }
}

/// Bare FAISS IVF-PQ (same index, no re-rank) vs ours with re-rank, for the ratio, from the
/// mode table's rows.
fn faiss_ivf(modes: &[ModeFigures], ivf: &IvfFigures, k: usize) -> Baseline {
    let ivf_bare_ms = modes
        .iter()
        .find(|m| m.mode == "ivfpq (no re-rank)")
        .map_or(0.0, |m| 1000.0 / m.qps_one_thread);
    let ours = modes
        .iter()
        .find(|m| m.mode == "ivfpq")
        .map_or(0.0, |m| 1000.0 / m.qps_one_thread);
    let (factory, nprobe) = (&ivf.factory, ivf.nprobe);
    Baseline {
        name: format!("faiss {factory} search alone (nprobe {nprobe}, top {k})"),
        ms_per_query: ivf_bare_ms,
        speedup: ivf_bare_ms / ours.max(1e-9),
        note: "vs imgvec ivfpq with exact re-rank (< 1: the re-rank's cost)".into(),
    }
}

/// Runs the benchmark in `scratch` (a folder for the segment and index files).
pub fn ann(opts: &AnnBenchOptions, scratch: &std::path::Path) -> Result<AnnBench> {
    let b = setup(opts, scratch)?;
    let mut modes = Vec::new();
    // Exact: the ground truth, and the baseline for speed-ups; FAISS IndexFlatL2 against it.
    let exact = exact_search(&b, &mut modes);
    let mut faiss_rows = faiss_flat(&b, &exact)?;
    // IVF-PQ, then binary codes: ITQ, flat scan and binary IVF.
    let ivf = build_ivf(&b)?;
    let codes = build_codes(&b)?;
    faiss_rows.push(faiss_binary(&b, &codes)?);

    let indexes = Indexes::from_parts(
        opts.index.clone(),
        Some(ivf.index),
        Some((codes.flat, Some(codes.bivf))),
    );
    let approx = ApproxModes {
        b: &b,
        indexes: &indexes,
        ivf: &ivf.figures,
        codes: &codes.figures,
        truth: &exact.truth,
    };
    for run in approx.runs() {
        modes.push(approx.figures(run));
    }
    faiss_rows.push(faiss_ivf(&modes, &ivf.figures, b.k));
    let _ = std::fs::remove_file(&b.seg_path);
    Ok(AnnBench {
        n: b.n,
        dim: b.dim,
        queries: b.nq,
        k: b.k,
        threads: b.threads,
        hamming_kernel: hamming::Kernel::detect(),
        modes,
        faiss: faiss_rows,
    })
}
