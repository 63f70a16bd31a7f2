//! The `Database` handle: open, insert, search, get, delete.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgvec_ingest::sift::{self, LocalFeatures, PackedFeatures};
use imgvec_ingest::{decode, l2_normalize_rows, model_input, set_torch_threads, Extractor};
use imgvec_storage::{
    CompactionPolicy, CompactionReport, ImageRecord, OpenMode, Snapshot, Store, StoreOptions,
    StoreStats,
};
use parking_lot::Mutex;
use serde::Serialize;

use crate::dense::{self, DenseIndex, DenseQuery, Plane};
use crate::error::{Error, Result};
use crate::exact;
use crate::index::{AnnMode, AnnParams, IndexInfo, IndexOptions, Indexes, Save};
use crate::ingest::{IngestEvent, IngestOptions, Source};
use crate::local::{self, LocalIndex, VerifyParams};
use crate::pipeline::{self, PipelineChoice, PipelineConfig};
use crate::reduce::{Projection, Reducer};

/// How to open a database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Read-only handles take no lock and see the database as it was when opened; any number of
    /// them may run beside the one writer.
    pub read_only: bool,
    /// Pipeline for a new database (an existing one keeps its own).
    pub pipeline: PipelineChoice,
    /// Threads for decoding and for libtorch; defaults to the number of cores.
    pub threads: usize,
    /// Run a background thread that merges small segments, purges deleted rows and keeps the
    /// approximate indexes trained, current and saved.
    pub background_compaction: bool,
    /// How the approximate indexes are built.
    pub index: IndexOptions,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: false,
            pipeline: PipelineChoice::Default,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            background_compaction: true,
            index: IndexOptions::default(),
        }
    }
}

/// Search strategies, chosen per query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SearchMode {
    /// Exact cosine over every stored vector.
    #[default]
    Exact,
    /// FAISS IVF-PQ; exact search answers while the collection is below
    /// `IndexOptions::min_train_rows`.
    IvfPq,
    /// Hamming distance over binary codes, every code scanned.
    Hamming,
    /// Hamming distance over binary codes through a binary IVF (sub-linear); the full code scan
    /// answers while the collection is too small to train it.
    HammingIvf,
}

impl SearchMode {
    pub fn name(self) -> &'static str {
        match self {
            SearchMode::Exact => "exact",
            SearchMode::IvfPq => "ivfpq",
            SearchMode::Hamming => "hamming",
            SearchMode::HammingIvf => "hamming-ivf",
        }
    }

    pub const ALL: [SearchMode; 4] = [
        SearchMode::Exact,
        SearchMode::IvfPq,
        SearchMode::Hamming,
        SearchMode::HammingIvf,
    ];

    fn ann(self) -> Option<AnnMode> {
        match self {
            SearchMode::Exact => None,
            SearchMode::IvfPq => Some(AnnMode::IvfPq),
            SearchMode::Hamming => Some(AnnMode::Hamming),
            SearchMode::HammingIvf => Some(AnnMode::HammingIvf),
        }
    }
}

impl std::str::FromStr for SearchMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(SearchMode::Exact),
            "ivfpq" => Ok(SearchMode::IvfPq),
            "hamming" => Ok(SearchMode::Hamming),
            "hamming-ivf" => Ok(SearchMode::HammingIvf),
            other => Err(Error::Invalid(format!(
                "unknown search mode `{other}` (exact, ivfpq, hamming, hamming-ivf)"
            ))),
        }
    }
}

/// Query augmentation: extra copies of an image query searched alongside it; each row keeps its
/// best score over the copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    /// The query as given.
    #[default]
    None,
    /// The query and its quarter, half and three-quarter turns.
    Rot4,
}

impl Augment {
    pub fn name(self) -> &'static str {
        match self {
            Augment::None => "none",
            Augment::Rot4 => "rot4",
        }
    }

    /// The copies of `img` to search (the image itself first).
    fn variants(self, img: &image::RgbImage) -> Vec<image::RgbImage> {
        match self {
            Augment::None => vec![img.clone()],
            Augment::Rot4 => vec![
                img.clone(),
                image::imageops::rotate90(img),
                image::imageops::rotate180(img),
                image::imageops::rotate270(img),
            ],
        }
    }
}

impl std::str::FromStr for Augment {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Augment::None),
            "rot4" => Ok(Augment::Rot4),
            other => Err(Error::Invalid(format!(
                "unknown query augmentation `{other}` (none, rot4)"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub k: usize,
    pub mode: SearchMode,
    /// Only results with at least this cosine score.
    pub threshold: Option<f32>,
    /// Only rows whose path starts with this prefix.
    pub path_prefix: Option<String>,
    /// Only rows carrying all these attributes.
    pub attributes: BTreeMap<String, String>,
    /// Inverted lists probed by `IvfPq` and `HammingIvf`; `None` = the index's default.
    pub nprobe: Option<usize>,
    /// Re-rank approximate candidates by exact cosine on the raw vectors (default on). Off,
    /// scores are the index's own: `1 - d²/2` for IVF-PQ, `1 - hamming/bits` for codes.
    pub rerank: bool,
    /// Candidates fetched from an approximate index per query; `None` = `index::default_depth`.
    pub rerank_depth: Option<usize>,
    /// Query augmentation; `None` = the pipeline's default (`robust`: `Rot4`).
    pub augment: Option<Augment>,
    /// Average query expansion (αQE with α = 3): the query vector plus its top `qe` results
    /// weighted by similarity³ is searched again. `None` = the pipeline's default; 0 = off.
    pub qe: Option<usize>,
    /// Spatial verification (pipelines with local features): the top `verify` results of the
    /// global ranking and the `verify` images found by descriptor voting are verified.
    /// `None` = the pipeline's default; 0 = off.
    pub verify: Option<usize>,
    /// Inliers that make a candidate verified; `None` = the pipeline's default.
    pub min_inliers: Option<usize>,
    /// Inlier tolerance in pixels; `None` = the pipeline's default.
    pub inlier_px: Option<f32>,
    /// Images found by dense-window search that are aligned too (see `dense`); `None` = the
    /// pipeline's default (or `verify` when that is given); 0 = off.
    pub dense: Option<usize>,
    /// Dense alignment (normalised cross-correlation) above which a candidate gains rank;
    /// `None` = the pipeline's default.
    pub alignment_floor: Option<f32>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            k: 10,
            mode: SearchMode::Exact,
            threshold: None,
            path_prefix: None,
            attributes: BTreeMap::new(),
            nprobe: None,
            rerank: true,
            rerank_depth: None,
            augment: None,
            qe: None,
            verify: None,
            min_inliers: None,
            dense: None,
            alignment_floor: None,
            inlier_px: None,
        }
    }
}

/// What to search with.
#[derive(Debug, Clone)]
pub enum Query {
    /// An image file.
    Path(PathBuf),
    /// Encoded image bytes (any supported format).
    Bytes(Vec<u8>),
    /// A stored image ("more like this"); the image itself is left out of its results.
    Id(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub id: u64,
    pub path: String,
    /// Cosine similarity, higher is better.
    pub score: f32,
    /// Spatially verified inliers, when the search verified this result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inliers: Option<usize>,
    /// Dense alignment (normalised cross-correlation, −1…1), when the search aligned this
    /// result (candidates SIFT did not verify).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseInfo {
    pub path: String,
    pub read_only: bool,
    pub pipeline: Option<PipelineConfig>,
    #[serde(flatten)]
    pub stats: StoreStats,
    pub indexes: IndexInfo,
    /// The learned whitening, for pipelines that have one and once it is learned.
    pub whitening: Option<WhiteningInfo>,
    /// Stored local features, for pipelines that have them.
    pub local: Option<LocalInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalInfo {
    /// Live rows that have local features.
    pub images: u64,
    pub keypoints: u64,
    /// Bytes of packed local features of those rows (in segments and pending rows).
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WhiteningInfo {
    pub generation: u64,
    pub learned_on: u64,
    pub dims_in: usize,
    /// Dimensions of the view (whitened global descriptor, plus the VLAD block if any).
    pub dims_out: usize,
    pub min_rows: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlad: Option<VladInfo>,
}

/// The VLAD block of the view.
#[derive(Debug, Clone, Serialize)]
pub struct VladInfo {
    pub words: usize,
    pub dims: usize,
    pub weight: f32,
}

/// (id, score) pairs, best first, or why there are none.
type Ranked = Result<Vec<(u64, f32)>>;

/// The best `k` rows of a list that may name a row more than once, each with its best score.
fn best_per_row(mut hits: Vec<(u64, f32)>, k: usize) -> Vec<(u64, f32)> {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut seen = std::collections::HashSet::new();
    hits.retain(|(id, _)| seen.insert(*id));
    hits.truncate(k);
    hits
}

/// One image database (a folder). `Send + Sync`: share one handle across threads.
pub struct Database {
    pub(crate) store: Arc<Store>,
    /// Background compaction worker of a writable handle; stopped and joined on drop.
    _compactor: Option<Compactor>,
    pipeline: Mutex<Option<PipelineConfig>>,
    pub(crate) requested: PipelineChoice,
    extractor: Mutex<Option<Box<dyn Extractor>>>,
    pub(crate) threads: usize,
    indexes: Arc<Indexes>,
    index_opts: IndexOptions,
    /// The whitening of a pipeline that has one, made once the pipeline is known.
    reducer: Mutex<Option<Arc<Reducer>>>,
    /// Every stored local descriptor, for voting; built on the first verified search.
    local_index: Mutex<Option<LocalIndex>>,
    /// Every stored image's dense windows and plane; built on the first verified search.
    dense_index: Mutex<Option<DenseIndex>>,
}

/// What a verified search checked of one result.
#[derive(Debug, Clone, Copy)]
struct Checked {
    /// `None`: not matched with SIFT (found by dense-window search only).
    inliers: Option<usize>,
    alignment: Option<f32>,
}

/// A query's local features, and the query made ready for dense alignment.
#[derive(Debug, Clone)]
struct QueryLocal {
    features: LocalFeatures,
    dense: Option<DenseQuery>,
}

/// The vector space a search runs in: the stored vectors, or their whitened view.
struct Space {
    snapshot: Arc<Snapshot>,
    indexes: Arc<Indexes>,
    projection: Option<Arc<Projection>>,
}

impl Database {
    /// Opens (creating if absent, unless read-only) the database in folder `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: OpenOptions) -> Result<Database> {
        let dir = dir.as_ref();
        let mode = if opts.read_only {
            OpenMode::ReadOnly
        } else {
            OpenMode::ReadWrite
        };
        let store = Arc::new(Store::open_with(dir, StoreOptions::new(mode))?);
        let pipeline = pipeline::stored(&store)?;
        let threads = opts.threads.max(1);
        set_torch_threads(threads);
        let indexes = Arc::new(Indexes::new(&store, opts.index.clone()));
        let compactor = (mode == OpenMode::ReadWrite && opts.background_compaction)
            .then(|| Compactor::start(store.clone(), indexes.clone()));
        Ok(Database {
            store,
            _compactor: compactor,
            pipeline: Mutex::new(pipeline),
            requested: opts.pipeline,
            extractor: Mutex::new(None),
            threads,
            indexes,
            index_opts: opts.index,
            reducer: Mutex::new(None),
            local_index: Mutex::new(None),
            dense_index: Mutex::new(None),
        })
    }

    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    pub fn pipeline(&self) -> Option<PipelineConfig> {
        self.pipeline.lock().clone()
    }

    /// The model input size ingest will use: the stored pipeline's, or the one a new database
    /// is about to get. Known without loading the model.
    pub(crate) fn planned_input_size(&self) -> u32 {
        match (self.pipeline.lock().as_ref(), &self.requested) {
            (Some(config), _) => config.input_size,
            (None, PipelineChoice::Model { size, .. }) => *size,
            (None, PipelineChoice::Named(n)) => pipeline::preset_input_size(n),
            (None, PipelineChoice::Default) => pipeline::PRESET_INPUT_SIZE,
        }
    }

    /// The local features ingest will extract, known without loading the model.
    pub(crate) fn planned_local(&self) -> Option<imgvec_ingest::sift::SiftParams> {
        match (self.pipeline.lock().as_ref(), &self.requested) {
            (Some(config), _) => config.local.map(|l| l.sift),
            (None, PipelineChoice::Named(n)) => pipeline::preset_local(n).map(|l| l.sift),
            (None, _) => None,
        }
    }

    /// Runs `f` with the extractor, loading it first (and, for a new database, fixing its
    /// pipeline). The extractor is behind a mutex; libtorch parallelises inside each call.
    pub(crate) fn with_extractor<T>(
        &self,
        f: impl FnOnce(&mut dyn Extractor) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.extractor.lock();
        if guard.is_none() {
            let mut pipeline = self.pipeline.lock();
            let read_only = self.store.mode() == OpenMode::ReadOnly;
            let loaded = match pipeline.as_ref() {
                Some(config) if read_only || self.requested == PipelineChoice::Default => {
                    config.load_extractor(self.dir())?
                }
                None if read_only => {
                    return Err(Error::Invalid(format!(
                        "{}: database has no pipeline yet (nothing ingested)",
                        self.dir().display()
                    )))
                }
                _ => {
                    let (config, extractor) = pipeline::resolve(&self.store, &self.requested)?;
                    let extractor = match extractor {
                        Some(e) => e,
                        None => config.load_extractor(self.dir())?,
                    };
                    *pipeline = Some(config);
                    extractor
                }
            };
            *guard = Some(loaded);
        }
        match guard.as_mut() {
            Some(extractor) => f(extractor.as_mut()),
            None => Err(Error::Invalid("no extractor loaded".into())),
        }
    }

    /// Inserts one file (its canonical path is its key). Returns once it is durable.
    pub fn insert_path(&self, path: impl AsRef<Path>) -> Result<IngestEvent> {
        let path = path.as_ref();
        let canonical = std::fs::canonicalize(path).map_err(|e| Error::Image {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.insert_one(Source::File(canonical), BTreeMap::new())
    }

    /// Inserts encoded image bytes under `key`, with user attributes. Returns once durable.
    pub fn insert_bytes(
        &self,
        key: &str,
        bytes: &[u8],
        attributes: BTreeMap<String, String>,
    ) -> Result<IngestEvent> {
        let source = Source::Bytes {
            key: key.to_string(),
            bytes: Arc::from(bytes),
        };
        self.insert_one(source, attributes)
    }

    fn insert_one(
        &self,
        source: Source,
        attributes: BTreeMap<String, String>,
    ) -> Result<IngestEvent> {
        let opts = IngestOptions {
            attributes,
            ..IngestOptions::default()
        };
        let events = Mutex::new(Vec::new());
        self.ingest(vec![source], &opts, &|e| events.lock().push(e.clone()))?;
        let event = events.into_inner().pop();
        match event {
            Some(ev) if ev.error.is_some() => Err(Error::Image {
                path: ev.path,
                reason: ev.error.unwrap_or_default(),
            }),
            Some(ev) => Ok(ev),
            None => Err(Error::Invalid("insert was interrupted".into())),
        }
    }

    /// Every live row's record (one pass over the records column family).
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.store.records()?)
    }

    pub fn get(&self, id: u64) -> Result<Option<ImageRecord>> {
        Ok(self.store.get(id)?)
    }

    pub fn get_by_path(&self, path: &str) -> Result<Option<ImageRecord>> {
        Ok(self.store.get_by_path(path)?)
    }

    /// The stored (unit-norm) vector of a live row.
    pub fn vector(&self, id: u64) -> Result<Option<Vec<f32>>> {
        Ok(self.store.vector(id)?)
    }

    /// The stored JPEG thumbnail (≤ 256 px) of a live row.
    pub fn thumbnail(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.store.thumbnail(id)?)
    }

    /// Deletes rows by id; returns those that existed.
    pub fn delete(&self, ids: &[u64]) -> Result<Vec<u64>> {
        Ok(self.store.delete(ids)?)
    }

    /// Seals pending rows and rewrites every segment into one without deleted rows, in the
    /// foreground. Searches keep running on their snapshots meanwhile.
    /// The approximate indexes are purged of deleted rows (IVF-PQ rebuilt) and saved.
    pub fn compact(&self) -> Result<CompactionReport> {
        let report = self.store.compact(CompactionPolicy::Full)?;
        let snap = self.store.snapshot();
        // The whitened space first: once it exists, the stored vectors' indexes are dormant.
        self.refresh_space(&snap, Save::Unsaved, true)?;
        self.indexes
            .refresh(&self.store, &snap, Save::Unsaved, true)?;
        Ok(report)
    }

    /// Brings the approximate indexes (and a pipeline's whitening) up to date now: appends new
    /// rows, trains them once the collection is large enough, and (writers) saves them. The
    /// background thread does this for the stored vectors on its own; call it to have everything
    /// ready before the first search.
    pub fn refresh_indexes(&self) -> Result<()> {
        let snap = self.store.snapshot();
        let save = match self.store.mode() {
            OpenMode::ReadWrite => Save::Unsaved,
            OpenMode::ReadOnly => Save::Never,
        };
        self.refresh_space(&snap, save, false)?;
        Ok(self.indexes.refresh(&self.store, &snap, save, false)?)
    }

    /// Learns/extends the whitening and the indexes over the whitened view, and saves them.
    fn refresh_space(&self, snap: &Arc<Snapshot>, save: Save, purge_all: bool) -> Result<()> {
        let Some(reducer) = self.reducer() else {
            return Ok(());
        };
        if let Some(view) = reducer.view(&self.store, snap)? {
            self.indexes.set_dormant();
            view.indexes
                .refresh(&self.store, &view.snapshot, save, purge_all)?;
            if save != Save::Never {
                reducer.save(&self.store)?;
            }
        }
        Ok(())
    }

    /// The pipeline's whitening, once the pipeline is known and asks for one.
    fn reducer(&self) -> Option<Arc<Reducer>> {
        let mut guard = self.reducer.lock();
        if guard.is_none() {
            let spec = self.pipeline.lock().as_ref().and_then(|p| p.whitening)?;
            *guard = Some(Arc::new(Reducer::new(
                &self.store,
                spec,
                self.index_opts.clone(),
            )));
        }
        guard.clone()
    }

    /// The space searches of `snap` run in.
    fn space(&self, snap: Arc<Snapshot>) -> Result<Space> {
        if let Some(reducer) = self.reducer() {
            if let Some(view) = reducer.view(&self.store, &snap)? {
                // The stored vectors' own indexes are no longer searched: stop maintaining them.
                self.indexes.set_dormant();
                return Ok(Space {
                    snapshot: view.snapshot,
                    indexes: view.indexes,
                    projection: Some(view.projection),
                });
            }
        }
        Ok(Space {
            snapshot: snap,
            indexes: self.indexes.clone(),
            projection: None,
        })
    }

    /// What the database holds. Cheap: it loads a published whitening but neither learns one
    /// nor projects rows (searches and the writer's index refresh do that).
    pub fn info(&self) -> Result<DatabaseInfo> {
        let indexes = match self.reducer().and_then(|r| r.loaded_indexes(&self.store)) {
            Some(whitened) => whitened.info(&self.store),
            None => self.indexes.info(&self.store),
        };
        let whitening = self.reducer().and_then(|r| r.info());
        let local = self
            .pipeline()
            .and_then(|p| p.local)
            .map(|_| local::stats(&self.store.snapshot()));
        Ok(DatabaseInfo {
            path: self.dir().display().to_string(),
            read_only: self.store.mode() == OpenMode::ReadOnly,
            pipeline: self.pipeline(),
            stats: self.store.stats()?,
            indexes,
            whitening,
            local,
        })
    }

    pub fn search(&self, query: Query, opts: &SearchOptions) -> Result<Vec<Hit>> {
        self.search_batch(vec![query], opts)
            .pop()
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Answers several queries, running the model once per batch of image queries. Each query
    /// gets its own result, so one unreadable image does not fail the others.
    ///
    /// A query becomes one vector per augmentation variant (whitened when the pipeline has a
    /// learned whitening); each variant is searched, every row keeps its best score over the
    /// variants, and query expansion, when on, searches once more with the expanded vector.
    pub fn search_batch(&self, queries: Vec<Query>, opts: &SearchOptions) -> Vec<Result<Vec<Hit>>> {
        let pipeline = self.pipeline();
        let defaults = pipeline.as_ref().map(|p| p.query).unwrap_or_default();
        let augment = opts.augment.unwrap_or(defaults.augment);
        let qe = opts.qe.unwrap_or(defaults.qe);
        let verify = self.verify_params(pipeline.as_ref(), &defaults, opts);
        let fail_all = |msg: String| -> Vec<Result<Vec<Hit>>> {
            queries
                .iter()
                .map(|_| Err(Error::Invalid(msg.clone())))
                .collect()
        };
        let dims = match self.store.dims() {
            Ok(Some(d)) => d as usize,
            Ok(None) => return queries.iter().map(|_| Ok(Vec::new())).collect(),
            Err(e) => return fail_all(e.to_string()),
        };
        // The query's local features: for verification, and for a VLAD block in the view.
        let vlad = self.reducer().is_some_and(|r| r.spec().vlad.is_some());
        let (vectors, locals) = self.query_vectors(&queries, augment, verify.is_some() || vlad);
        let space = match self.space(self.store.snapshot()) {
            Ok(s) => s,
            Err(e) => return fail_all(e.to_string()),
        };
        // Every variant of every query, in the search space, one row each.
        let mut flat = Vec::new();
        let mut owners = Vec::new(); // query index of each row of `flat`
        let mut raw = Vec::new();
        for (qi, v) in vectors.iter().enumerate() {
            if let Ok(variants) = v {
                for var in variants.iter().filter(|var| var.len() == dims) {
                    raw.extend_from_slice(var);
                    owners.push(qi);
                }
            }
        }
        let space_dims = match &space.projection {
            Some(w) => {
                let descriptors: Vec<&[f32]> = owners
                    .iter()
                    .map(|&qi| {
                        locals[qi]
                            .as_ref()
                            .map_or(&[][..], |l| &l.features.descriptors)
                    })
                    .collect();
                flat = w.apply(&raw, &descriptors);
                w.dims_out()
            }
            None => {
                flat.append(&mut raw);
                dims
            }
        };
        let filtered = opts.path_prefix.is_some() || !opts.attributes.is_empty();
        let accept = |id: u64| !filtered || self.matches_filters(id, opts);
        // Query-by-id leaves the query row out, so ask for one more; verification needs its
        // shortlist.
        let k = (opts.k + queries.iter().any(|q| matches!(q, Query::Id(_))) as usize)
            .max(verify.map_or(0, |v| v.shortlist));
        let found = self.search_vectors(&space, &flat, space_dims, k, opts, &accept);
        // Merge the variants of each query: best score per row.
        let mut merged: Vec<Option<Ranked>> = (0..queries.len()).map(|_| None).collect();
        for (qi, hits) in owners.iter().zip(found) {
            let slot = &mut merged[*qi];
            match (slot.take(), hits) {
                (Some(Err(e)), _) | (_, Err(e)) => *slot = Some(Err(e)),
                (None, Ok(h)) => *slot = Some(Ok(h)),
                (Some(Ok(mut acc)), Ok(h)) => {
                    acc.extend(h);
                    *slot = Some(Ok(best_per_row(acc, k)));
                }
            }
        }
        // Query expansion: the first variant plus the top results, searched again.
        if qe > 0 {
            let mut firsts = Vec::new();
            for (qi, slot) in merged.iter().enumerate() {
                let Some(Ok(hits)) = slot else { continue };
                let Some(first) = owners.iter().position(|&o| o == qi) else {
                    continue;
                };
                let q = &flat[first * space_dims..(first + 1) * space_dims];
                let mut expanded = q.to_vec();
                for &(id, score) in hits.iter().take(qe) {
                    if let Some(v) = space.snapshot.vector(id) {
                        let w = score.max(0.0).powi(3);
                        expanded.iter_mut().zip(v).for_each(|(e, x)| *e += w * x);
                    }
                }
                l2_normalize_rows(&mut expanded, space_dims);
                firsts.push((qi, expanded));
            }
            let batch: Vec<f32> = firsts.iter().flat_map(|(_, v)| v.clone()).collect();
            let again = self.search_vectors(&space, &batch, space_dims, k, opts, &accept);
            for ((qi, _), hits) in firsts.iter().zip(again) {
                merged[*qi] = Some(hits);
            }
        }
        let mut inliers: Vec<HashMap<u64, Checked>> = vec![HashMap::new(); queries.len()];
        if let Some(params) = verify {
            let snap = self.store.snapshot();
            for (qi, slot) in merged.iter_mut().enumerate() {
                let (Some(Ok(hits)), Some(features)) = (slot.as_mut(), locals[qi].as_ref()) else {
                    continue;
                };
                // The query's variants in the search space, to score images found by voting.
                let variants: Vec<&[f32]> = owners
                    .iter()
                    .enumerate()
                    .filter(|(_, &o)| o == qi)
                    .map(|(row, _)| &flat[row * space_dims..(row + 1) * space_dims])
                    .collect();
                match self.verify_hits(hits, features, &variants, &space, &snap, &params, &accept) {
                    Ok(found) => inliers[qi] = found,
                    Err(e) => *slot = Some(Err(e)),
                }
            }
        }
        let mut out = Vec::with_capacity(queries.len());
        for (((query, vector), found), inliers) in
            queries.iter().zip(vectors).zip(merged).zip(inliers)
        {
            let result = vector.and_then(|v| {
                if let Some(bad) = v.iter().find(|var| var.len() != dims) {
                    return Err(Error::Invalid(format!(
                        "query vector has {} dimensions, database stores {dims}",
                        bad.len()
                    )));
                }
                let hits = found.unwrap_or_else(|| Ok(Vec::new()))?;
                let skip = match query {
                    Query::Id(id) => Some(*id),
                    _ => None,
                };
                let mut out = Vec::new();
                for (id, score) in hits {
                    if Some(id) == skip || opts.threshold.is_some_and(|t| score < t) {
                        continue;
                    }
                    if out.len() == opts.k {
                        break;
                    }
                    if let Some(rec) = self.store.get(id)? {
                        out.push(Hit {
                            id,
                            path: rec.path,
                            score,
                            inliers: inliers.get(&id).and_then(|c| c.inliers),
                            alignment: inliers.get(&id).and_then(|c| c.alignment),
                        });
                    }
                }
                Ok(out)
            });
            out.push(result);
        }
        out
    }

    /// The verification a search runs: the pipeline's, adjusted by `opts`; `None` when the
    /// pipeline stores no local features or verification is off.
    fn verify_params(
        &self,
        pipeline: Option<&PipelineConfig>,
        defaults: &pipeline::QueryDefaults,
        opts: &SearchOptions,
    ) -> Option<VerifyParams> {
        pipeline?.local?;
        let mut p = defaults.verify.unwrap_or_default();
        if let Some(n) = opts.verify {
            p.shortlist = n;
            p.voted = n;
            p.dense = n;
        }
        if let Some(n) = opts.dense {
            p.dense = n;
        }
        if let Some(a) = opts.alignment_floor {
            p.alignment_floor = a;
        }
        if let Some(n) = opts.min_inliers {
            p.min_inliers = n;
        }
        if let Some(px) = opts.inlier_px {
            p.inlier_px = px;
        }
        (p.shortlist > 0 || p.voted > 0 || p.dense > 0).then_some(p)
    }

    /// Re-ranks one query's global `hits` with local features: adds the images descriptor
    /// voting and dense-window search find, verifies the shortlist and those, and orders
    /// verified candidates first (see `local` and `dense`). Scores stay cosines in the search
    /// space. Returns what was checked per row.
    #[allow(clippy::too_many_arguments)]
    fn verify_hits(
        &self,
        hits: &mut Vec<(u64, f32)>,
        query: &QueryLocal,
        variants: &[&[f32]],
        space: &Space,
        snap: &Snapshot,
        params: &VerifyParams,
        accept: &dyn Fn(u64) -> bool,
    ) -> Result<HashMap<u64, Checked>> {
        let live = |id: u64| !snap.tombstones.contains(&id) && accept(id);
        let features = &query.features;
        let voted = if params.voted > 0 {
            let mut guard = self.local_index.lock();
            match guard.as_mut() {
                Some(index) => index.catch_up(snap)?,
                None => *guard = Some(LocalIndex::build(snap)?),
            }
            let index = guard.as_ref().expect("built above");
            index.vote(&features.descriptors, params.voted, &live)?
        } else {
            Vec::new()
        };
        let mut candidates: Vec<(u64, f32)> = hits.iter().take(params.shortlist).copied().collect();
        // Dense planes of the candidates, taken out of the index so it is not held while
        // aligning.
        let mut planes: HashMap<u64, (Plane, f32)> = HashMap::new();
        let dense_found = match &query.dense {
            Some(dq) if params.dense > 0 => {
                let mut guard = self.dense_index.lock();
                match guard.as_mut() {
                    Some(index) => index.catch_up(&self.store, snap)?,
                    None => *guard = Some(DenseIndex::build(&self.store, snap)?),
                }
                let index = guard.as_ref().expect("built above");
                let scores = index.scores(dq);
                let found = scores.top(params.dense, &live);
                for id in candidates
                    .iter()
                    .map(|c| c.0)
                    .chain(voted.iter().map(|v| v.0))
                    .chain(found.iter().copied())
                {
                    if let (Some(p), Some((_, angle))) = (index.plane(id), scores.get(id)) {
                        planes.entry(id).or_insert_with(|| (p.clone(), angle));
                    }
                }
                found
            }
            _ => Vec::new(),
        };
        // Images only dense-window search found are aligned, not matched with SIFT: a textured
        // image would have been found by voting.
        let add = |candidates: &mut Vec<(u64, f32)>, ids: &mut dyn Iterator<Item = u64>| {
            for id in ids {
                if candidates.iter().any(|(c, _)| *c == id) {
                    continue;
                }
                let Some(v) = space.snapshot.vector(id) else {
                    continue;
                };
                let cosine = variants
                    .iter()
                    .map(|q| exact::dot(q, v))
                    .fold(f32::MIN, f32::max);
                candidates.push((id, cosine));
            }
        };
        add(&mut candidates, &mut voted.iter().map(|v| v.0));
        let sift_checked = candidates.len();
        add(&mut candidates, &mut dense_found.into_iter());
        let mut found = HashMap::new();
        // (verified, key, id, cosine)
        let mut ranked: Vec<(bool, f32, u64, f32)> = Vec::with_capacity(candidates.len());
        for (i, &(id, cosine)) in candidates.iter().enumerate() {
            let packed = snap.local(id).unwrap_or(&[]);
            let v = match PackedFeatures::parse(packed) {
                Ok(Some(_)) if i >= sift_checked => local::Verification::default(),
                Ok(Some(p)) => local::verify(features, &p, params),
                Ok(None) => local::Verification::default(),
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "row {id}: stored local features: {e}"
                    )))
                }
            };
            let n = v.inliers;
            let verified = n >= params.min_inliers && v.coverage >= params.min_coverage;
            let alignment = match (&query.dense, planes.get(&id)) {
                (Some(dq), Some((plane, angle))) if !verified => {
                    Some(dense::align(dq, plane, Some(*angle)))
                }
                _ => None,
            };
            found.insert(
                id,
                Checked {
                    inliers: (i < sift_checked).then_some(n),
                    alignment,
                },
            );
            // Below `min_inliers`, geometric evidence beyond the chance level still counts in
            // proportion (not as precedence): weak but consistent matches of a tiny, heavily
            // compressed query lift the right image over globally similar strangers. So does a
            // dense alignment above the floor (near-identical images align about equally well,
            // and the global similarity then decides).
            let key = if verified {
                // Among verified candidates (the same picture), a re-graded copy differs from
                // the original in its absolute brightness, which normalised descriptors ignore.
                let brightness_gap = match (&query.dense, planes.get(&id)) {
                    (Some(dq), Some((plane, _))) => (dq.mean - plane.mean()).abs() / 255.0,
                    _ => 0.0,
                };
                local::verified_score(cosine, n) + local::COVERAGE_WEIGHT * v.coverage.min(1.0)
                    - local::BRIGHTNESS_WEIGHT * brightness_gap
            } else {
                let inliers = if v.coverage >= params.min_coverage {
                    n.saturating_sub(params.chance_inliers)
                } else {
                    0
                };
                local::verified_score(cosine, inliers)
                    + alignment.map_or(0.0, |a| {
                        params.alignment_weight * (a - params.alignment_floor).max(0.0)
                    })
            };
            ranked.push((verified, key, id, cosine));
        }
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
        let rest: Vec<(u64, f32)> = hits
            .iter()
            .skip(params.shortlist)
            .filter(|(id, _)| !found.contains_key(id))
            .copied()
            .collect();
        *hits = ranked
            .into_iter()
            .map(|(_, _, id, cosine)| (id, cosine))
            .collect();
        hits.extend(rest);
        Ok(found)
    }

    /// Top `k` of each `dims`-long row of `flat` in `space`, in the mode `opts` asks for.
    fn search_vectors(
        &self,
        space: &Space,
        flat: &[f32],
        dims: usize,
        k: usize,
        opts: &SearchOptions,
        accept: &dyn Fn(u64) -> bool,
    ) -> Vec<Ranked> {
        let filtered = opts.path_prefix.is_some() || !opts.attributes.is_empty();
        match opts.mode.ann() {
            None => exact::search(&space.snapshot, flat, dims, k, filtered.then_some(accept))
                .into_iter()
                .map(Ok)
                .collect(),
            Some(mode) => flat
                .chunks_exact(dims)
                .map(|q| self.ann_search(mode, space, q, k, opts, accept))
                .collect(),
        }
    }

    /// One query in an approximate mode; falls back to exact search where that index does not
    /// exist yet or filters left too few candidates.
    fn ann_search(
        &self,
        mode: AnnMode,
        space: &Space,
        query: &[f32],
        k: usize,
        opts: &SearchOptions,
        accept: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>> {
        let snapshot = &space.snapshot;
        if !space.indexes.is_current(snapshot, mode) {
            space
                .indexes
                .refresh(&self.store, snapshot, Save::Never, false)?;
        }
        let params = AnnParams {
            k,
            nprobe: opts.nprobe,
            rerank: opts.rerank,
            depth: opts.rerank_depth,
        };
        match space
            .indexes
            .search(mode, snapshot, query, &params, accept)?
        {
            Some(hits) => Ok(hits),
            None => {
                let mut out = exact::search(snapshot, query, query.len(), k, Some(accept));
                Ok(out.pop().unwrap_or_default())
            }
        }
    }

    fn matches_filters(&self, id: u64, opts: &SearchOptions) -> bool {
        match self.store.get(id) {
            Ok(Some(rec)) => {
                opts.path_prefix
                    .as_ref()
                    .is_none_or(|p| rec.path.starts_with(p.as_str()))
                    && opts
                        .attributes
                        .iter()
                        .all(|(k, v)| rec.attributes.get(k) == Some(v))
            }
            _ => false,
        }
    }

    /// The unit-norm vectors of each query — one per augmentation variant of an image query,
    /// the stored vector of an id query — or the reason it has none; and, when `local`, its
    /// local features (extracted, or the stored ones of an id query).
    #[allow(clippy::type_complexity)]
    fn query_vectors(
        &self,
        queries: &[Query],
        augment: Augment,
        local: bool,
    ) -> (Vec<Result<Vec<Vec<f32>>>>, Vec<Option<QueryLocal>>) {
        let sift_params = self.pipeline().and_then(|p| p.local).map(|l| l.sift);
        let mut locals: Vec<Option<QueryLocal>> = vec![None; queries.len()];
        let mut out: Vec<Option<Result<Vec<Vec<f32>>>>> = vec![];
        let mut images = Vec::new(); // (slot, rgb)
        for (i, q) in queries.iter().enumerate() {
            let decoded = match q {
                Query::Id(id) => {
                    if local {
                        let snap = self.store.snapshot();
                        let dense = self
                            .store
                            .thumbnail(*id)
                            .ok()
                            .flatten()
                            .and_then(|b| decode(&b).ok())
                            .map(|img| DenseQuery::new(&img.rgb));
                        locals[i] = snap
                            .local(*id)
                            .and_then(|b| PackedFeatures::parse(b).ok().flatten())
                            .map(|p| QueryLocal {
                                features: p.unpack(),
                                dense,
                            });
                    }
                    out.push(Some(match self.store.vector(*id) {
                        Ok(Some(v)) => Ok(vec![v]),
                        Ok(None) => Err(Error::NoSuchId(*id)),
                        Err(e) => Err(e.into()),
                    }));
                    continue;
                }
                Query::Path(p) => std::fs::read(p)
                    .map_err(|e| e.to_string())
                    .and_then(|b| decode(&b).map_err(|e| e.to_string()))
                    .map_err(|reason| Error::Image {
                        path: p.display().to_string(),
                        reason,
                    }),
                Query::Bytes(b) => decode(b).map_err(|e| Error::Image {
                    path: "<bytes>".into(),
                    reason: e.to_string(),
                }),
            };
            match decoded {
                Ok(img) => {
                    if let (true, Some(p)) = (local, sift_params.as_ref()) {
                        locals[i] = Some(QueryLocal {
                            features: sift::extract(&img.rgb, p),
                            dense: Some(DenseQuery::new(&img.rgb)),
                        });
                    }
                    for variant in augment.variants(&img.rgb) {
                        images.push((i, variant));
                    }
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        if !images.is_empty() {
            match self.extract_images(images.iter().map(|(_, img)| img)) {
                Ok(vectors) => {
                    for ((slot, _), v) in images.iter().zip(vectors) {
                        match &mut out[*slot] {
                            Some(Ok(list)) => list.push(v),
                            other => *other = Some(Ok(vec![v])),
                        }
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for (slot, _) in &images {
                        out[*slot] = Some(Err(Error::Invalid(msg.clone())));
                    }
                }
            }
        }
        let vectors = out
            .into_iter()
            .map(|v| v.unwrap_or_else(|| Err(Error::Invalid("query not processed".into()))))
            .collect();
        (vectors, locals)
    }

    fn extract_images<'a>(
        &self,
        images: impl Iterator<Item = &'a image::RgbImage>,
    ) -> Result<Vec<Vec<f32>>> {
        let images: Vec<_> = images.collect();
        self.with_extractor(|extractor| {
            let size = extractor.input_size();
            let dims = extractor.dims();
            let mut out = Vec::with_capacity(images.len());
            for chunk in images.chunks(16) {
                let mut pixels = Vec::new();
                for img in chunk {
                    model_input(img, size, &mut pixels);
                }
                let mut v = extractor.extract(&pixels, chunk.len())?;
                l2_normalize_rows(&mut v, dims);
                out.extend(v.chunks_exact(dims).map(|c| c.to_vec()));
            }
            Ok(out)
        })
    }
}

impl Drop for Database {
    /// A writer stops its background thread, then leaves the indexes current and saved, so the
    /// next handle (a read-only search, typically) loads them instead of rebuilding.
    fn drop(&mut self) {
        drop(self._compactor.take());
        if self.store.mode() == OpenMode::ReadWrite {
            let snap = self.store.snapshot();
            if let Err(e) = self.refresh_space(&snap, Save::Unsaved, false) {
                tracing::warn!("{}: saving the whitening failed: {e}", self.dir().display());
            }
            if let Err(e) = self
                .indexes
                .refresh(&self.store, &snap, Save::Unsaved, false)
            {
                tracing::warn!("{}: saving indexes failed: {e}", self.dir().display());
            }
        }
    }
}

/// A JPEG thumbnail (≤ 256 px) of encoded image bytes, as stored for each row.
pub fn make_thumbnail(bytes: &[u8]) -> Result<Vec<u8>> {
    let img = decode(bytes).map_err(|e| Error::Image {
        path: "<bytes>".into(),
        reason: e.to_string(),
    })?;
    Ok(imgvec_ingest::thumbnail_jpeg(&img.rgb))
}

/// The background compaction thread of a writable `Database`.
struct Compactor {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    store: Arc<Store>,
}

impl Compactor {
    fn start(store: Arc<Store>, indexes: Arc<Indexes>) -> Compactor {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (store.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("imgvec-compactor".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    if !s.wait_for_work(std::time::Duration::from_secs(5)) {
                        continue;
                    }
                    if st.load(Ordering::Relaxed) {
                        break;
                    }
                    match s.compact(CompactionPolicy::Background) {
                        Ok(r) if r.segments_merged > 0 => tracing::info!(
                            merged = r.segments_merged,
                            kept = r.rows_kept,
                            dropped = r.rows_dropped,
                            "background compaction"
                        ),
                        Ok(_) => {}
                        // The database stays consistent: a failed compaction publishes nothing.
                        Err(e) => tracing::warn!("background compaction failed: {e}"),
                    }
                    let snap = s.snapshot();
                    if let Err(e) = indexes.refresh(&s, &snap, Save::WhenDue, false) {
                        tracing::warn!("background index maintenance failed: {e}");
                    }
                }
            })
            .ok();
        Compactor {
            stop,
            thread,
            store,
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.store.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
