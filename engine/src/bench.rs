//! Measurements behind `imgvec bench`: each figure comes with a baseline measured in the same
//! process, so ratios stay meaningful while absolute times drift between runs.

pub use crate::ann_bench::{
    ann, normalized, AnnBench, AnnBenchOptions, Baseline, GaussianMixture, ModeFigures,
};

use std::path::Path;
use std::time::Instant;

use imgvec_ingest::{set_torch_threads, Extractor, Pooling, TorchScriptExtractor};
use serde::Serialize;

use crate::error::Result;
use crate::ingest::{IngestOptions, Source};
use crate::{collect_files, Database, OpenOptions, PipelineChoice};

#[derive(Debug, Clone, Serialize)]
pub struct IngestBench {
    pub images: u64,
    pub batch_size: usize,
    pub threads: usize,
    /// The bare TorchScript forward on ready-made input tensors, in this process.
    pub forward_images_per_sec: f64,
    /// `Database::ingest` end to end: read, hash, decode, resize, thumbnail, forward, commit.
    pub ingest_images_per_sec: f64,
    pub ingest_seconds: f64,
    /// ingest / forward.
    pub ratio: f64,
}

/// Times the bare forward of `model` over `images` inputs, then a full ingest of `paths` into a
/// fresh database at `scratch` with the same model, batch size and threads.
pub fn ingest(
    model: &Path,
    size: u32,
    paths: &[std::path::PathBuf],
    scratch: &Path,
    batch_size: usize,
    threads: usize,
) -> Result<IngestBench> {
    let files = collect_files(paths);
    let images = files.images.len();
    set_torch_threads(threads);
    let mut extractor = TorchScriptExtractor::load(model, size, Pooling::Gap)?;
    let per_image = (3 * size * size) as usize;
    let input: Vec<f32> = (0..per_image * batch_size)
        .map(|i| (i % 251) as f32 / 251.0)
        .collect();
    extractor.extract(&input, batch_size)?; // warm-up
    let batches = images.div_ceil(batch_size).max(1);
    let start = Instant::now();
    for _ in 0..batches {
        extractor.extract(&input, batch_size)?;
    }
    let forward = (batches * batch_size) as f64 / start.elapsed().as_secs_f64();
    drop(extractor);

    let db = Database::open(
        scratch,
        OpenOptions {
            pipeline: PipelineChoice::Model {
                path: model.to_path_buf(),
                size,
                pooling: Pooling::Gap,
            },
            threads,
            ..OpenOptions::default()
        },
    )?;
    let opts = IngestOptions {
        batch_size,
        ..IngestOptions::default()
    };
    let sources = files.images.into_iter().map(Source::File).collect();
    let summary = db.ingest(sources, &opts, &|_| {})?;
    Ok(IngestBench {
        images: summary.stored + summary.replaced,
        batch_size,
        threads,
        forward_images_per_sec: forward,
        ingest_images_per_sec: summary.images_per_sec,
        ingest_seconds: summary.seconds,
        ratio: summary.images_per_sec / forward,
    })
}

/// One benchmark query, as listed in a benchmark folder's `queries.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
struct BenchEntry {
    path: String,
    label: String,
    #[serde(default)]
    case: Option<String>,
}

fn read_jsonl(path: &Path) -> Result<Vec<BenchEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::Image {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| crate::Error::Invalid(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Quality per query case, as `shared/bench/score.py` computes it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaseScore {
    pub case: String,
    pub queries: usize,
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub map_at_10: f64,
}

/// One search mode on a benchmark folder.
#[derive(Debug, Clone, Serialize)]
pub struct ModeRetrieval {
    pub mode: String,
    /// Per query, one at a time: decode + model + search, the model already loaded.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// One thread, one query at a time (1 / mean latency).
    pub queries_per_sec: f64,
    /// Share of queries whose first result is exact search's first result.
    pub agreement_at_1: f64,
    /// Mean overlap of the top 10 with exact search's top 10.
    pub agreement_at_10: f64,
    /// Index bytes per stored vector in memory (exact: the raw vector and its id).
    pub bytes_per_vector: f64,
    pub cases: Vec<CaseScore>,
    pub overall: CaseScore,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetrievalBench {
    pub db_images: usize,
    pub ingest_images_per_sec: f64,
    /// `Database::refresh_indexes` after the ingest: training and filling every index.
    pub index_build_seconds: f64,
    pub modes: Vec<ModeRetrieval>,
}

/// Ingests a benchmark folder's `db/` into a fresh database at `scratch` with `open`'s pipeline
/// and index options, builds the indexes, then for each mode runs every query alone, timing
/// each, and scores the results per case and against exact search. `base` carries the search
/// options other than the mode (`rerank: false` measures the approximate indexes' own order;
/// query augmentation and expansion).
pub fn retrieval(
    bench: &Path,
    scratch: &Path,
    open: OpenOptions,
    modes: &[crate::SearchMode],
    base: &crate::SearchOptions,
) -> Result<RetrievalBench> {
    let db_list = read_jsonl(&bench.join("db.jsonl"))?;
    let queries = read_jsonl(&bench.join("queries.jsonl"))?;
    let db = Database::open(scratch, open)?;
    let sources = db_list
        .iter()
        .map(|e| Source::File(bench.join(&e.path)))
        .collect();
    let summary = db.ingest(sources, &IngestOptions::default(), &|_| {})?;
    let started = Instant::now();
    db.refresh_indexes()?;
    let index_build_seconds = started.elapsed().as_secs_f64();
    let info = db.info()?;
    let dims = info.stats.dims.unwrap_or(0) as f64;
    let name_label: std::collections::HashMap<String, &str> = db_list
        .iter()
        .map(|e| (file_name(&e.path), e.label.as_str()))
        .collect();
    let mut positives: std::collections::HashMap<&str, usize> = Default::default();
    for e in &db_list {
        *positives.entry(e.label.as_str()).or_default() += 1;
    }
    // Warm-up: the first query pays for loading the model.
    if let Some(q) = queries.first() {
        let _ = db.search(
            crate::Query::Path(bench.join(&q.path)),
            &crate::SearchOptions::default(),
        );
    }
    let mut exact_results: Vec<Vec<u64>> = Vec::new();
    let mut run_modes = vec![crate::SearchMode::Exact];
    run_modes.extend(
        modes
            .iter()
            .copied()
            .filter(|m| *m != crate::SearchMode::Exact),
    );
    let mut out = Vec::new();
    for mode in run_modes {
        let opts = crate::SearchOptions {
            mode,
            ..base.clone()
        };
        let mut latencies = Vec::with_capacity(queries.len());
        let mut per_case: std::collections::BTreeMap<String, CaseScore> = Default::default();
        let mut overall = CaseScore {
            case: "ALL".into(),
            ..CaseScore::default()
        };
        let (mut agree1, mut agree10) = (0f64, 0f64);
        for (qi, q) in queries.iter().enumerate() {
            let started = Instant::now();
            let hits = db.search(crate::Query::Path(bench.join(&q.path)), &opts)?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
            if mode == crate::SearchMode::Exact {
                exact_results.push(ids.clone());
            }
            if let Some(truth) = exact_results.get(qi) {
                agree1 += (ids.first() == truth.first()) as u8 as f64;
                let overlap = ids
                    .iter()
                    .take(10)
                    .filter(|id| truth.iter().take(10).any(|t| t == *id))
                    .count();
                agree10 += overlap as f64 / truth.len().clamp(1, 10) as f64;
            }
            let relevant: Vec<bool> = hits
                .iter()
                .take(10)
                .map(|h| name_label.get(&file_name(&h.path)).copied() == Some(q.label.as_str()))
                .collect();
            let n_pos = positives
                .get(q.label.as_str())
                .copied()
                .unwrap_or(0)
                .min(10);
            let (mut found, mut ap) = (0usize, 0f64);
            for (i, &r) in relevant.iter().enumerate() {
                if r {
                    found += 1;
                    ap += found as f64 / (i + 1) as f64;
                }
            }
            let ap = if n_pos > 0 { ap / n_pos as f64 } else { 0.0 };
            let case = q.case.clone().unwrap_or_else(|| "all".into());
            for score in [
                per_case.entry(case.clone()).or_insert_with(|| CaseScore {
                    case,
                    ..CaseScore::default()
                }),
                &mut overall,
            ] {
                score.queries += 1;
                score.recall_at_1 += relevant.first().copied().unwrap_or(false) as u8 as f64;
                score.recall_at_10 += relevant.iter().any(|&r| r) as u8 as f64;
                score.map_at_10 += ap;
            }
        }
        if mode == crate::SearchMode::Exact && !modes.contains(&mode) {
            continue;
        }
        let mut cases: Vec<CaseScore> = per_case.into_values().collect();
        for score in cases.iter_mut().chain(std::iter::once(&mut overall)) {
            let n = score.queries.max(1) as f64;
            score.recall_at_1 /= n;
            score.recall_at_10 /= n;
            score.map_at_10 /= n;
        }
        let total_ms: f64 = latencies.iter().sum();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let nq = queries.len().max(1) as f64;
        let raw = dims * 4.0 + 8.0;
        let bytes_per_vector = match mode {
            crate::SearchMode::Exact => raw,
            crate::SearchMode::IvfPq => info
                .indexes
                .ivfpq
                .as_ref()
                .map_or(raw, |i| i.bytes_per_vector),
            crate::SearchMode::Hamming => info
                .indexes
                .hamming
                .as_ref()
                .map_or(raw, |h| h.bytes_per_vector as f64),
            crate::SearchMode::HammingIvf => info.indexes.hamming.as_ref().map_or(raw, |h| {
                h.bytes_per_vector as f64 + 8.0 * h.ivf_nlist.is_some() as u8 as f64
            }),
        };
        out.push(ModeRetrieval {
            mode: mode.name().into(),
            latency_p50_ms: pct(0.5),
            latency_p99_ms: pct(0.99),
            queries_per_sec: 1000.0 * nq / total_ms.max(1e-9),
            agreement_at_1: agree1 / nq,
            agreement_at_10: agree10 / nq,
            bytes_per_vector,
            cases,
            overall,
        });
    }
    Ok(RetrievalBench {
        db_images: db_list.len(),
        ingest_images_per_sec: summary.images_per_sec,
        index_build_seconds,
        modes: out,
    })
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
