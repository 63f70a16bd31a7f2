//! `imgvec bench retrieval`: quality per case and latency per mode on a benchmark folder.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use imgvec::{Database, IngestOptions, OpenOptions, Result, Source};

/// One benchmark query, as listed in a benchmark folder's `queries.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
struct BenchEntry {
    path: String,
    label: String,
    #[serde(default)]
    case: Option<String>,
}

fn read_jsonl(path: &Path) -> Result<Vec<BenchEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| imgvec::Error::Image {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| imgvec::Error::Invalid(format!("{}:{}: {e}", path.display(), i + 1)))
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
    /// Live rows of the database searched.
    pub db_images: usize,
    pub ingest_images_per_sec: f64,
    /// `Database::refresh_indexes` after the ingest: training and filling every index.
    pub index_build_seconds: f64,
    pub modes: Vec<ModeRetrieval>,
}

/// Where `retrieval` searches.
pub enum BenchDb<'a> {
    /// A fresh database at `scratch` with `open`'s pipeline and index options, filled with the
    /// benchmark's `db/` images.
    Fresh {
        scratch: &'a Path,
        open: OpenOptions,
    },
    /// An existing database that holds the benchmark's `db/` images among others (distractors),
    /// opened read-only: nothing is ingested (ingest figures are 0), results are matched to the
    /// benchmark by file name.
    Existing { path: &'a Path, open: OpenOptions },
}

/// Ingests a benchmark folder's `db/` into a fresh database (or opens an existing one, see
/// [`BenchDb`]), builds the indexes, then for each mode runs every query alone, timing each,
/// and scores the results per case and against exact search. `base` carries the search
/// options other than the mode (`rerank: false` measures the approximate indexes' own order;
/// query augmentation and expansion).
pub fn retrieval(
    bench: &Path,
    target: BenchDb<'_>,
    modes: &[imgvec::SearchMode],
    base: &imgvec::SearchOptions,
) -> Result<RetrievalBench> {
    let db_list = read_jsonl(&bench.join("db.jsonl"))?;
    let queries = read_jsonl(&bench.join("queries.jsonl"))?;
    let ingested = match target {
        BenchDb::Fresh { scratch, open } => ingest_db(bench, scratch, open, &db_list)?,
        BenchDb::Existing { path, open } => {
            let db = Database::open(
                path,
                OpenOptions {
                    read_only: true,
                    ..open
                },
            )?;
            let info = db.info()?;
            Ingested {
                db,
                images_per_sec: 0.0,
                index_build_seconds: 0.0,
                info,
            }
        }
    };
    let dims = ingested.info.stats.dims.unwrap_or(0) as f64;
    let scoring = Scoring::new(bench, &ingested.db, &queries, &db_list);
    // Warm-up: the first query pays for loading the model.
    if let Some(q) = queries.first() {
        let _ = ingested.db.search(
            imgvec::Query::Path(bench.join(&q.path)),
            &imgvec::SearchOptions::default(),
        );
    }
    let mut exact_results: Vec<Vec<u64>> = Vec::new();
    let mut run_modes = vec![imgvec::SearchMode::Exact];
    run_modes.extend(
        modes
            .iter()
            .copied()
            .filter(|m| *m != imgvec::SearchMode::Exact),
    );
    let mut out = Vec::new();
    for mode in run_modes {
        let pass = scoring.run(mode, base, &mut exact_results)?;
        if mode == imgvec::SearchMode::Exact && !modes.contains(&mode) {
            continue;
        }
        let bytes = bytes_per_vector(&ingested.info, dims, mode);
        out.push(pass.finish(mode, queries.len(), bytes));
    }
    Ok(RetrievalBench {
        db_images: ingested.info.stats.live_rows as usize,
        ingest_images_per_sec: ingested.images_per_sec,
        index_build_seconds: ingested.index_build_seconds,
        modes: out,
    })
}

/// The benchmark database, filled and indexed.
struct Ingested {
    db: Database,
    /// The ingest's images per second.
    images_per_sec: f64,
    /// `Database::refresh_indexes` after the ingest.
    index_build_seconds: f64,
    /// The database's figures once indexed.
    info: imgvec::DatabaseInfo,
}

/// Opens a fresh database at `scratch`, ingests `db_list`'s images (paths relative to `bench`)
/// and builds every index.
fn ingest_db(
    bench: &Path,
    scratch: &Path,
    open: OpenOptions,
    db_list: &[BenchEntry],
) -> Result<Ingested> {
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
    Ok(Ingested {
        db,
        images_per_sec: summary.images_per_sec,
        index_build_seconds,
        info,
    })
}

/// Index bytes per stored vector in memory for `mode` (exact, and any mode without its index:
/// the raw vector of `dims` floats and its id).
fn bytes_per_vector(info: &imgvec::DatabaseInfo, dims: f64, mode: imgvec::SearchMode) -> f64 {
    let raw = dims * 4.0 + 8.0;
    match mode {
        imgvec::SearchMode::Exact => raw,
        imgvec::SearchMode::IvfPq => info
            .indexes
            .ivfpq
            .as_ref()
            .map_or(raw, |i| i.bytes_per_vector),
        imgvec::SearchMode::Hamming => info
            .indexes
            .hamming
            .as_ref()
            .map_or(raw, |h| h.bytes_per_vector as f64),
        imgvec::SearchMode::HammingIvf => info.indexes.hamming.as_ref().map_or(raw, |h| {
            h.bytes_per_vector as f64 + 8.0 * h.ivf_nlist.is_some() as u8 as f64
        }),
    }
}

/// What running and scoring the queries needs: the database, the queries, and the ground
/// truth from the database listing.
struct Scoring<'a> {
    bench: &'a Path,
    db: &'a Database,
    queries: &'a [BenchEntry],
    /// Each database image's label, by file name.
    name_label: HashMap<String, &'a str>,
    /// Database images per label.
    positives: HashMap<&'a str, usize>,
}

impl<'a> Scoring<'a> {
    fn new(
        bench: &'a Path,
        db: &'a Database,
        queries: &'a [BenchEntry],
        db_list: &'a [BenchEntry],
    ) -> Scoring<'a> {
        let name_label: HashMap<String, &str> = db_list
            .iter()
            .map(|e| (file_name(&e.path), e.label.as_str()))
            .collect();
        let mut positives: HashMap<&str, usize> = Default::default();
        for e in db_list {
            *positives.entry(e.label.as_str()).or_default() += 1;
        }
        Scoring {
            bench,
            db,
            queries,
            name_label,
            positives,
        }
    }

    /// Runs every query alone in `mode` (`base`'s other options), timing each, and scores the
    /// results. Exact search runs first and records its results in `exact_results`; every
    /// mode's agreement is measured against them.
    fn run(
        &self,
        mode: imgvec::SearchMode,
        base: &imgvec::SearchOptions,
        exact_results: &mut Vec<Vec<u64>>,
    ) -> Result<Pass> {
        let opts = imgvec::SearchOptions {
            mode,
            ..base.clone()
        };
        let mut pass = Pass {
            latencies: Vec::with_capacity(self.queries.len()),
            per_case: Default::default(),
            overall: CaseScore {
                case: "ALL".into(),
                ..CaseScore::default()
            },
            agree1: 0.0,
            agree10: 0.0,
        };
        for (qi, q) in self.queries.iter().enumerate() {
            let started = Instant::now();
            let hits = self
                .db
                .search(imgvec::Query::Path(self.bench.join(&q.path)), &opts)?;
            pass.latencies
                .push(started.elapsed().as_secs_f64() * 1000.0);
            let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
            if mode == imgvec::SearchMode::Exact {
                exact_results.push(ids.clone());
            }
            if let Some(truth) = exact_results.get(qi) {
                pass.agree(&ids, truth);
            }
            let (relevant, ap) = self.relevance(q, &hits);
            pass.score(q, &relevant, ap);
        }
        Ok(pass)
    }

    /// Whether each of the top 10 `hits` has query `q`'s label, and their average precision
    /// (over at most 10 positives).
    fn relevance(&self, q: &BenchEntry, hits: &[imgvec::Hit]) -> (Vec<bool>, f64) {
        let relevant: Vec<bool> = hits
            .iter()
            .take(10)
            .map(|h| self.name_label.get(&file_name(&h.path)).copied() == Some(q.label.as_str()))
            .collect();
        let n_pos = self
            .positives
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
        (relevant, ap)
    }
}

/// One mode's pass over the queries: latencies in ms and the scores' sums.
struct Pass {
    latencies: Vec<f64>,
    per_case: BTreeMap<String, CaseScore>,
    overall: CaseScore,
    agree1: f64,
    agree10: f64,
}

impl Pass {
    /// Adds one query's agreement of `ids` with exact search's results `truth`.
    fn agree(&mut self, ids: &[u64], truth: &[u64]) {
        self.agree1 += (ids.first() == truth.first()) as u8 as f64;
        let overlap = ids
            .iter()
            .take(10)
            .filter(|id| truth.iter().take(10).any(|t| t == *id))
            .count();
        self.agree10 += overlap as f64 / truth.len().clamp(1, 10) as f64;
    }

    /// Adds query `q`'s scores to its case and to the overall score.
    fn score(&mut self, q: &BenchEntry, relevant: &[bool], ap: f64) {
        let case = q.case.clone().unwrap_or_else(|| "all".into());
        for score in [
            self.per_case
                .entry(case.clone())
                .or_insert_with(|| CaseScore {
                    case,
                    ..CaseScore::default()
                }),
            &mut self.overall,
        ] {
            score.queries += 1;
            score.recall_at_1 += relevant.first().copied().unwrap_or(false) as u8 as f64;
            score.recall_at_10 += relevant.iter().any(|&r| r) as u8 as f64;
            score.map_at_10 += ap;
        }
    }

    /// The mode's row: scores averaged over their queries, latency percentiles, agreement
    /// averaged over all `nq` queries.
    fn finish(self, mode: imgvec::SearchMode, nq: usize, bytes_per_vector: f64) -> ModeRetrieval {
        let Pass {
            mut latencies,
            per_case,
            mut overall,
            agree1,
            agree10,
        } = self;
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
        let nq = nq.max(1) as f64;
        ModeRetrieval {
            mode: mode.name().into(),
            latency_p50_ms: pct(0.5),
            latency_p99_ms: pct(0.99),
            queries_per_sec: 1000.0 * nq / total_ms.max(1e-9),
            agreement_at_1: agree1 / nq,
            agreement_at_10: agree10 / nq,
            bytes_per_vector,
            cases,
            overall,
        }
    }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
