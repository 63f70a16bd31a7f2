//! Approximate indexes over the stored vectors, kept beside the segments and searched per query
//! mode: FAISS IVF-PQ ([`ivfpq`]), binary codes scanned by Hamming distance and FAISS's binary
//! IVF over the same codes ([`hamming`]). Candidates are re-ranked by exact cosine on the
//! memory-mapped raw vectors unless the caller asks for the raw index order.
//!
//! Lifecycle (docs/ARCHITECTURE.md, "Indexes"): indexes are derived data. Each covers the rows
//! with ids up to its watermark; ids only grow, so a search first appends the rows above the
//! watermark (every acknowledged row is visible in every mode). IVF-PQ and ITQ are trained once
//! `min_train_rows` live rows exist (below that, IVF-PQ answers exactly and Hamming codes come
//! from a random projection), retrained when the collection has grown fourfold, purged of
//! deleted rows past a quarter of the index. The writer's background thread does that work and
//! persists the indexes (files written and synced, then published by one synced RocksDB key);
//! a missing or damaged index file is rebuilt from the segments, never trusted.

pub(crate) mod faiss_io;
pub mod hamming;
pub mod ivfpq;
pub(crate) mod knn;
pub(crate) mod mapped_lists;
pub(crate) mod rows;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use imgvec_storage::{OpenMode, Snapshot, Store};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::derived::artifact::Kind;
use crate::derived::lifecycle::{
    plan, Collection, Derived, Plan, ADD_CHUNK, PURGE_DIVISOR, SAMPLE_ROWS,
};
use crate::derived::publish::{Manifest, Publisher};
pub use crate::error::IndexError;
pub(crate) use faiss_io::{
    check_cpu, faiss_call, faiss_index_from_bytes, faiss_index_to_bytes, faiss_read_mem,
    faiss_search, faiss_write_mem,
};
use hamming::{BinaryIvf, Encoder, EncoderKind, HammingIndex};
use ivfpq::IvfPq;

/// How indexes are built.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Live rows needed before IVF-PQ, ITQ codes and the binary IVF are trained.
    pub min_train_rows: usize,
    /// FAISS factory string for IVF-PQ; default from the row count and dimension
    /// ([`IvfPq::default_factory`]).
    pub ivf_factory: Option<String>,
    /// Bits per binary code; default `min(256, dims)`.
    pub bits: Option<usize>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            min_train_rows: 10_000,
            ivf_factory: None,
            bits: None,
        }
    }
}

/// Approximate search modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnMode {
    IvfPq,
    Hamming,
    HammingIvf,
}

/// Per-query knobs of approximate search.
#[derive(Debug, Clone, Copy)]
pub struct AnnParams {
    pub k: usize,
    /// Inverted lists probed (IVF-PQ and binary IVF); `None` = the index's default.
    pub nprobe: Option<usize>,
    /// Re-rank candidates by exact cosine on the raw vectors.
    pub rerank: bool,
    /// Candidates fetched from the index before re-ranking; `None` = [`default_depth`].
    pub depth: Option<usize>,
}

/// Candidates fetched per query by default: enough for recall@10 ≥ 0.95 against exact on the
/// DESIGN.md benchmark at 1M × 256 (IVF-PQ: 0.931 at 200, 0.975 at 300, 0.989 at 400 with
/// nprobe 40; Hamming: 0.998 at 1000).
pub fn default_depth(mode: AnnMode, k: usize) -> usize {
    match mode {
        AnnMode::IvfPq => (k * 40).max(400),
        AnnMode::Hamming | AnnMode::HammingIvf => (k * 50).max(1000),
    }
}

/// Inverted lists for `n` rows (IVF-PQ and binary IVF): about 4√n, with at least 39 training
/// rows per list.
pub fn default_nlist(n: usize) -> usize {
    ((4.0 * (n as f64).sqrt()) as usize).clamp(1, (n / 39).max(1))
}

/// Lists probed per query by default (IVF-PQ and binary IVF): every list of a small index
/// (≤ 64 lists), else about 1% of them, between 16 and 64.
pub fn default_nprobe(nlist: usize) -> usize {
    if nlist <= 64 {
        nlist
    } else {
        (nlist / 100).clamp(16, 64)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IvfInfo {
    pub rows: usize,
    pub factory: String,
    pub nlist: usize,
    pub default_nprobe: usize,
    pub trained_on: u64,
    pub watermark: u64,
    pub bytes_per_vector: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HammingInfo {
    pub rows: usize,
    pub encoder: EncoderKind,
    pub bits: usize,
    pub kernel: hamming::Kernel,
    pub trained_on: u64,
    pub watermark: u64,
    pub bytes_per_vector: usize,
    /// Lists of the binary IVF (sub-linear mode `hamming-ivf`), when built.
    pub ivf_nlist: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexInfo {
    pub min_train_rows: usize,
    pub ivfpq: Option<IvfInfo>,
    pub hamming: Option<HammingInfo>,
    pub bytes_on_disk: u64,
}

/// The persisted set, published under one RocksDB key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Published {
    generation: u64,
    dims: u32,
    ivfpq: Option<String>,
    hamming: Option<String>,
    hamming_ivf: Option<String>,
    /// The vector space the indexes were built in: 0 for the stored vectors, else the fingerprint
    /// of the PCA-whitening they were built over (see `reduce`).
    #[serde(default)]
    space: u64,
}

impl Manifest for Published {
    fn files(&self) -> Vec<&str> {
        [&self.ivfpq, &self.hamming, &self.hamming_ivf]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

const META_KEY: &str = "indexes";
pub const INDEX_DIR: &str = "indexes";

struct Binary {
    flat: HammingIndex,
    ivf: Option<BinaryIvf>,
}

/// When `refresh` writes the indexes to disk (writers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Save {
    Never,
    /// After a rebuild, or once enough rows were appended since the last write.
    WhenDue,
    /// Whenever anything is unsaved.
    Unsaved,
}

#[derive(Default)]
struct BuildState {
    published: Published,
    /// Rows added since the files were last written.
    unsaved_rows: usize,
    rebuilt: bool,
}

/// The indexes of one database handle.
pub struct Indexes {
    /// Folder and meta key of the published files.
    publisher: Publisher,
    opts: IndexOptions,
    /// Vector length when it is not the store's (indexes over whitened vectors).
    dims: Option<usize>,
    space: u64,
    ivf: RwLock<Option<IvfPq>>,
    binary: RwLock<Option<Binary>>,
    build: Mutex<BuildState>,
    loaded: AtomicBool,
    /// Set once searches moved to another space (a learned whitening): no more maintenance.
    dormant: AtomicBool,
}

/// The stored vectors' dimension, once anything is stored.
pub(crate) fn stored_dims(store: &Store) -> Result<Option<usize>, IndexError> {
    let dims = store
        .dims()
        .map_err(|e| IndexError::Invalid(e.to_string()))?;
    Ok(dims.map(|d| d as usize))
}

/// Every `n / max`-th row of `vectors` (`n × dims`), at most `max` rows.
pub fn strided_sample(vectors: &[f32], dims: usize, max: usize) -> Vec<f32> {
    let n = vectors.len() / dims;
    if n <= max {
        return vectors.to_vec();
    }
    let mut out = Vec::with_capacity(max * dims);
    for i in 0..max {
        let row = i * n / max;
        out.extend_from_slice(&vectors[row * dims..(row + 1) * dims]);
    }
    out
}

impl Indexes {
    pub fn new(store: &Store, opts: IndexOptions) -> Indexes {
        Indexes {
            publisher: Publisher::new(store.vfs().clone(), store.dir().join(INDEX_DIR), META_KEY),
            opts,
            dims: None,
            space: 0,
            ivf: RwLock::new(None),
            binary: RwLock::new(None),
            build: Mutex::new(BuildState::default()),
            loaded: AtomicBool::new(false),
            dormant: AtomicBool::new(false),
        }
    }

    /// Indexes over derived vectors of `dims` dimensions (projection fingerprint `space`), kept in
    /// their own folder `indexes/<name>` and published under their own meta key.
    pub fn derived(
        store: &Store,
        opts: IndexOptions,
        name: &str,
        dims: usize,
        space: u64,
    ) -> Indexes {
        Indexes {
            publisher: Publisher::new(
                store.vfs().clone(),
                store.dir().join(INDEX_DIR).join(name),
                format!("{META_KEY}:{name}"),
            ),
            opts,
            dims: Some(dims),
            space,
            ivf: RwLock::new(None),
            binary: RwLock::new(None),
            build: Mutex::new(BuildState::default()),
            loaded: AtomicBool::new(false),
            dormant: AtomicBool::new(false),
        }
    }

    /// Indexes built elsewhere (the ANN benchmark), searchable through [`Indexes::search`].
    pub fn from_parts(
        opts: IndexOptions,
        ivf: Option<IvfPq>,
        binary: Option<(HammingIndex, Option<BinaryIvf>)>,
    ) -> Indexes {
        Indexes {
            publisher: Publisher::new(
                std::sync::Arc::new(imgvec_storage::StdFs),
                PathBuf::new(),
                String::new(),
            ),
            opts,
            dims: None,
            space: 0,
            ivf: RwLock::new(ivf),
            binary: RwLock::new(binary.map(|(flat, ivf)| Binary { flat, ivf })),
            build: Mutex::new(BuildState::default()),
            loaded: AtomicBool::new(true),
            dormant: AtomicBool::new(false),
        }
    }

    fn dims(&self, store: &Store) -> Result<Option<usize>, IndexError> {
        match self.dims {
            Some(d) => Ok(Some(d)),
            None => stored_dims(store),
        }
    }

    /// Whether `live` rows are enough to train IVF-PQ, ITQ codes and the binary IVF.
    fn trainable(&self, live: usize) -> bool {
        live >= self.opts.min_train_rows.max(1)
    }

    /// Stops all maintenance of these indexes (searches run in a whitened space now); what was
    /// saved stays on disk.
    pub fn set_dormant(&self) {
        self.dormant.store(true, Ordering::Release);
    }

    /// Code length: `--bits`, else min(256, dims). More bits than dimensions is allowed and
    /// gives a wider random-projection code (ITQ cannot exceed the dimension).
    fn bits(&self, dims: usize) -> usize {
        Encoder::code_bits(self.opts.bits, dims)
    }

    /// Loads the published index files once (a damaged or missing one is skipped and rebuilt
    /// later); a writer also removes files no publication refers to.
    fn load_once(&self, st: &mut BuildState, store: &Store, dims: usize) {
        if self.loaded.swap(true, Ordering::AcqRel) {
            return;
        }
        let published: Option<Published> = self.publisher.load(store);
        // A set built for another space is not loaded, but its generation is kept, so this
        // set's files never take the names of files a publication still lists.
        let seen_generation = published.as_ref().map_or(0, |p| p.generation);
        st.published.generation = seen_generation;
        if let Some(p) = published.filter(|p| p.dims as usize == dims && p.space == self.space) {
            if let Some(f) = &p.ivfpq {
                match IvfPq::load(&self.publisher.path(f), dims) {
                    Ok(ivf) => *self.ivf.write() = Some(ivf),
                    Err(e) => tracing::warn!(
                        "{}: {e}; IVF-PQ will be rebuilt",
                        self.publisher.path(f).display()
                    ),
                }
            }
            if let Some(f) = &p.hamming {
                match HammingIndex::load(&self.publisher.path(f)) {
                    Ok(flat) if flat.encoder.dims == dims => {
                        let ivf = p.hamming_ivf.as_ref().and_then(|f| {
                            match BinaryIvf::load(&self.publisher.path(f)) {
                                Ok(i) if i.len() == flat.len() => Some(i),
                                Ok(_) => None,
                                Err(e) => {
                                    tracing::warn!(
                                        "{}: {e}; binary IVF will be rebuilt",
                                        self.publisher.path(f).display()
                                    );
                                    None
                                }
                            }
                        });
                        let rebuild_ivf = ivf.is_none() && p.hamming_ivf.is_some();
                        *self.binary.write() = Some(Binary { flat, ivf });
                        st.rebuilt |= rebuild_ivf;
                    }
                    Ok(_) => tracing::warn!("{}: dimension mismatch; rebuilt", f),
                    Err(e) => tracing::warn!(
                        "{}: {e}; Hamming index will be rebuilt",
                        self.publisher.path(f).display()
                    ),
                }
            }
            st.published = p;
        }
        self.publisher.sweep_unpublished(store, Some(&st.published));
    }

    /// Whether every row of `snap` is in the indexes a search of `mode` uses (cheap: read locks).
    pub fn is_current(&self, snap: &Snapshot, mode: AnnMode) -> bool {
        if !self.loaded.load(Ordering::Acquire) {
            return false;
        }
        let top = snap.max_id();
        let live = snap.live_count();
        let trainable = self.trainable(live);
        match mode {
            AnnMode::IvfPq => {
                !trainable || self.ivf.read().as_ref().is_some_and(|i| i.watermark >= top)
            }
            AnnMode::Hamming | AnnMode::HammingIvf => {
                self.binary.read().as_ref().is_some_and(|b| {
                    b.flat.watermark >= top
                        && !(self.wants_itq(live, b.flat.encoder.dims)
                            && b.flat.encoder.kind == EncoderKind::Lsh)
                        && (mode == AnnMode::Hamming || !trainable || b.ivf.is_some())
                })
            }
        }
    }

    /// Whether codes should be ITQ: enough rows to train it, more rows than bits, and no more
    /// bits than dimensions.
    fn wants_itq(&self, live: usize, dims: usize) -> bool {
        self.trainable(live) && Encoder::itq_possible(live, self.bits(dims), dims)
    }

    /// Brings the indexes up to `snap`: loads them, appends new rows, trains, retrains or purges
    /// as due (`purge_all`: drop every deleted row now, as a foreground compaction does), and
    /// writes them as `save` says.
    pub fn refresh(
        &self,
        store: &Store,
        snap: &Snapshot,
        save: Save,
        purge_all: bool,
    ) -> Result<(), IndexError> {
        if self.dormant.load(Ordering::Acquire) {
            return Ok(());
        }
        let dims = match self.dims(store)? {
            Some(d) => d,
            None => return Ok(()),
        };
        let mut st = self.build.lock();
        self.load_once(&mut st, store, dims);
        let live = snap.live_count();
        let mut added = self.refresh_binary(&mut st, snap, live, dims, purge_all)?;
        added += self.refresh_ivf(&mut st, snap, live, dims, purge_all)?;
        st.unsaved_rows += added;
        if save != Save::Never && store.mode() == OpenMode::ReadWrite {
            let rows = self.binary.read().as_ref().map_or(0, |b| b.flat.len());
            let due = st.rebuilt
                || st.unsaved_rows >= 4096.max(rows / 20)
                || (save == Save::Unsaved && st.unsaved_rows > 0);
            if due {
                self.save(&mut st, store, dims)?;
            }
        }
        Ok(())
    }

    /// The binary codes (always available: random projection until trainable), and the binary
    /// IVF once trainable. Returns the rows appended.
    fn refresh_binary(
        &self,
        st: &mut BuildState,
        snap: &Snapshot,
        live: usize,
        dims: usize,
        purge_all: bool,
    ) -> Result<usize, IndexError> {
        let trainable = self.trainable(live);
        let mut added = 0usize;
        let binary_plan = match &*self.binary.read() {
            None => Plan::Rebuild,
            Some(b) if trainable && b.ivf.is_none() => Plan::Rebuild,
            Some(b) if self.wants_itq(live, dims) && b.flat.encoder.kind == EncoderKind::Lsh => {
                Plan::Rebuild
            }
            Some(b) => plan(&b.flat, Collection::of(snap, b.flat.watermark), purge_all),
        };
        match binary_plan {
            Plan::Nothing => {}
            Plan::Rebuild => {
                let (ids, vectors) = snap.vectors_above(0, dims)?;
                let bits = self.bits(dims);
                let sample = strided_sample(&vectors, dims, SAMPLE_ROWS);
                let encoder = if self.wants_itq(ids.len(), dims) {
                    Encoder::itq(dims, bits, &sample)?
                } else {
                    Encoder::lsh(dims, bits, &sample, 0x1_6d5e_c0de)
                };
                let mut flat = HammingIndex::new(encoder, ids.len().max(1) as u64);
                flat.add(&ids, &vectors);
                flat.watermark = flat.watermark.max(snap.max_id());
                let ivf = if trainable {
                    Some(BinaryIvf::build(
                        flat.encoder.words(),
                        flat.ids(),
                        flat.codes(),
                        default_nlist(ids.len()),
                    )?)
                } else {
                    None
                };
                *self.binary.write() = Some(Binary { flat, ivf });
                st.rebuilt = true;
            }
            Plan::Purge => {
                let mut guard = self.binary.write();
                if let Some(b) = guard.as_mut() {
                    let dead: Vec<u64> = b
                        .flat
                        .ids()
                        .iter()
                        .copied()
                        .filter(|&id| !snap.is_live(id))
                        .collect();
                    let dead_set: HashSet<u64> = dead.iter().copied().collect();
                    b.flat.retain(|id| !dead_set.contains(&id));
                    if let Some(ivf) = b.ivf.as_mut() {
                        ivf.remove(&dead)?;
                    }
                }
                drop(guard);
                st.rebuilt = true;
                // Rows above the watermark are appended on the next refresh.
            }
            Plan::CatchUp(wm) => {
                let (ids, vectors) = snap.vectors_above(wm, dims)?;
                let encoder = self.binary.read().as_ref().map(|b| b.flat.encoder.clone());
                if let Some(encoder) = encoder {
                    let mut codes = Vec::new();
                    encoder.encode(&vectors, &mut codes);
                    let mut guard = self.binary.write();
                    if let Some(b) = guard.as_mut() {
                        b.flat.add_codes(&ids, &codes);
                        b.flat.watermark = b.flat.watermark.max(snap.max_id());
                        if let Some(ivf) = b.ivf.as_mut() {
                            ivf.add(&ids, &codes)?;
                        }
                    }
                    added += ids.len();
                }
            }
        }

        Ok(added)
    }

    /// IVF-PQ: only once trainable; dropped when the collection shrank far below that.
    /// Returns the rows appended.
    fn refresh_ivf(
        &self,
        st: &mut BuildState,
        snap: &Snapshot,
        live: usize,
        dims: usize,
        purge_all: bool,
    ) -> Result<usize, IndexError> {
        let trainable = self.trainable(live);
        let mut added = 0usize;
        if trainable {
            let ivf_plan = match &*self.ivf.read() {
                None => Plan::Rebuild,
                Some(i) => match plan(i, Collection::of(snap, i.watermark()), purge_all) {
                    // FAISS cannot list an IVF's ids cheaply: purging means rebuilding.
                    Plan::Purge => Plan::Rebuild,
                    p => p,
                },
            };
            match ivf_plan {
                Plan::Nothing | Plan::Purge => {}
                Plan::Rebuild => {
                    let (ids, vectors) = snap.vectors_above(0, dims)?;
                    let factory = self
                        .opts
                        .ivf_factory
                        .clone()
                        .unwrap_or_else(|| IvfPq::default_factory(ids.len(), dims));
                    let sample_rows = IvfPq::training_rows(&factory, ids.len(), dims);
                    let sample = strided_sample(&vectors, dims, sample_rows);
                    let mut ivf = IvfPq::train(dims, &factory, &sample, ids.len().max(1) as u64)?;
                    for (chunk_ids, chunk) in
                        ids.chunks(ADD_CHUNK).zip(vectors.chunks(ADD_CHUNK * dims))
                    {
                        ivf.add(chunk_ids, chunk)?;
                    }
                    ivf.watermark = ivf.watermark.max(snap.max_id());
                    *self.ivf.write() = Some(ivf);
                    st.rebuilt = true;
                }
                Plan::CatchUp(wm) => {
                    let (ids, vectors) = snap.vectors_above(wm, dims)?;
                    let mut guard = self.ivf.write();
                    if let Some(ivf) = guard.as_mut() {
                        ivf.add(&ids, &vectors)?;
                        ivf.watermark = ivf.watermark.max(snap.max_id());
                    }
                    added += ids.len();
                }
            }
        } else if self.ivf.read().is_some() && live * PURGE_DIVISOR < self.opts.min_train_rows {
            // Shrunk far below the threshold: exact search answers again.
            *self.ivf.write() = None;
            st.rebuilt = true;
        }

        Ok(added)
    }

    fn save(&self, st: &mut BuildState, store: &Store, dims: usize) -> Result<(), IndexError> {
        self.publisher.prepare()?;
        let generation = st.published.generation + 1;
        let mut next = Published {
            generation,
            dims: dims as u32,
            space: self.space,
            ..Published::default()
        };
        if let Some(ivf) = &*self.ivf.read() {
            let name = Publisher::file_name("ivfpq", generation, "idx");
            self.publisher.write(&name, Kind::IvfPq, &ivf.to_body()?)?;
            next.ivfpq = Some(name);
        }
        if let Some(b) = &*self.binary.read() {
            let name = Publisher::file_name("hamming", generation, "idx");
            self.publisher
                .write(&name, Kind::Hamming, &b.flat.to_body())?;
            next.hamming = Some(name);
            if let Some(ivf) = &b.ivf {
                let name = Publisher::file_name("hamming-ivf", generation, "idx");
                self.publisher
                    .write(&name, Kind::BinaryIvf, &ivf.to_body()?)?;
                next.hamming_ivf = Some(name);
            }
        }
        self.publisher.publish(store, &next)?;
        st.published = next;
        st.unsaved_rows = 0;
        st.rebuilt = false;
        Ok(())
    }

    /// Searches one unit-norm `query` in an approximate mode. `None`: that index does not exist
    /// (too few rows to train it), and the caller answers exactly. Candidates that are deleted or
    /// that `accept` rejects are dropped; while fewer than `k` remain and some were dropped, the
    /// search is repeated four times deeper, then handed to exact search (`None`) once it would
    /// cover half the index, so filters never cost recall.
    pub fn search(
        &self,
        mode: AnnMode,
        snap: &Snapshot,
        query: &[f32],
        p: &AnnParams,
        accept: &dyn Fn(u64) -> bool,
    ) -> Result<Option<Vec<(u64, f32)>>, IndexError> {
        let mut depth = p.depth.unwrap_or(default_depth(mode, p.k)).max(p.k);
        loop {
            let (cands, len): (Vec<(u64, f32)>, usize) = match mode {
                AnnMode::IvfPq => {
                    let guard = self.ivf.read();
                    let Some(ivf) = guard.as_ref() else {
                        return Ok(None);
                    };
                    let nprobe = p.nprobe.unwrap_or(ivf.default_nprobe());
                    let found = ivf.search(query, depth, nprobe)?;
                    // Unit vectors: squared L2 = 2 - 2 cos.
                    (
                        found
                            .into_iter()
                            .map(|(id, d)| (id, 1.0 - d / 2.0))
                            .collect(),
                        ivf.len(),
                    )
                }
                AnnMode::Hamming | AnnMode::HammingIvf => {
                    let guard = self.binary.read();
                    let Some(b) = guard.as_ref() else {
                        return Ok(None);
                    };
                    let code = b.flat.encode_one(query);
                    let bits = b.flat.encoder.bits as f32;
                    let found = match (&b.ivf, mode) {
                        (Some(ivf), AnnMode::HammingIvf) => {
                            let nprobe = p.nprobe.unwrap_or(default_nprobe(ivf.nlist));
                            ivf.search(&code, depth, nprobe)?
                        }
                        _ => b.flat.search(&code, depth),
                    };
                    (
                        found
                            .into_iter()
                            .map(|(id, d)| (id, 1.0 - d as f32 / bits))
                            .collect(),
                        b.flat.len(),
                    )
                }
            };
            let returned = cands.len();
            let mut kept: Vec<(u64, f32)> = Vec::with_capacity(returned);
            for (id, index_score) in cands {
                if snap.is_deleted(id) || !accept(id) {
                    continue;
                }
                let Some(v) = snap.vector(id)? else { continue };
                let score = if p.rerank {
                    crate::exact::dot(query, v)
                } else {
                    index_score
                };
                kept.push((id, score));
            }
            if kept.len() >= p.k || kept.len() == returned || depth >= len {
                if p.rerank {
                    kept.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                }
                kept.truncate(p.k);
                return Ok(Some(kept));
            }
            depth *= 4;
            if depth * 2 >= len {
                return Ok(None);
            }
        }
    }

    /// What is built, for `imgvec info`.
    pub fn info(&self, store: &Store) -> IndexInfo {
        if let Ok(Some(d)) = self.dims(store) {
            let mut st = self.build.lock();
            self.load_once(&mut st, store, d);
        }
        let ivfpq = self.ivf.read().as_ref().map(|i| IvfInfo {
            rows: i.len(),
            factory: i.factory.clone(),
            nlist: i.nlist,
            default_nprobe: i.default_nprobe(),
            trained_on: i.trained_on,
            watermark: i.watermark,
            bytes_per_vector: i.bytes_per_vector(),
        });
        let hamming = self.binary.read().as_ref().map(|b| HammingInfo {
            rows: b.flat.len(),
            encoder: b.flat.encoder.kind,
            bits: b.flat.encoder.bits,
            kernel: hamming::Kernel::detect(),
            trained_on: b.flat.trained_on,
            watermark: b.flat.watermark,
            bytes_per_vector: b.flat.bytes_per_row(),
            ivf_nlist: b.ivf.as_ref().map(|i| i.nlist),
        });
        let bytes_on_disk = self.publisher.bytes_on_disk();
        IndexInfo {
            min_train_rows: self.opts.min_train_rows,
            ivfpq,
            hamming,
            bytes_on_disk,
        }
    }
}
