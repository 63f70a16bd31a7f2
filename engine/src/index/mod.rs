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

pub mod hamming;
pub mod ivfpq;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use imgvec_storage::{OpenMode, PendingChunk, Segment, Snapshot, Store};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use hamming::{BinaryIvf, Encoder, EncoderKind, HammingIndex};
use ivfpq::IvfPq;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("faiss: {0}")]
    Faiss(#[from] faiss::error::Error),
    #[error("faiss {what} failed (code {code})")]
    FaissCode { what: &'static str, code: i32 },
    #[error("{0}")]
    Invalid(String),
    #[error("index file: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) fn faiss_call(what: &'static str, code: i32) -> Result<(), IndexError> {
    if code == 0 {
        Ok(())
    } else {
        Err(IndexError::FaissCode { what, code })
    }
}

/// Serialises a FAISS object into memory through `open_memstream` (no temporary file: a
/// read-only handle must not write into the database folder).
pub(crate) fn faiss_write_mem(
    what: &'static str,
    write: impl FnOnce(*mut faiss_sys::FILE) -> i32,
) -> Result<Vec<u8>, IndexError> {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: open_memstream owns `buf` until fclose, after which `buf[..len]` is valid until
    // freed here; `write` only writes to the stream it is given.
    unsafe {
        let f = libc::open_memstream(&mut buf, &mut len);
        if f.is_null() {
            return Err(std::io::Error::last_os_error().into());
        }
        let code = write(f.cast());
        let closed = libc::fclose(f);
        let out = if buf.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(buf as *const u8, len).to_vec()
        };
        libc::free(buf.cast());
        faiss_call(what, code)?;
        if closed != 0 {
            return Err(IndexError::Invalid(format!("{what}: stream close failed")));
        }
        Ok(out)
    }
}

/// Reads a FAISS object from memory through `fmemopen`.
pub(crate) fn faiss_read_mem(
    what: &'static str,
    bytes: &[u8],
    read: impl FnOnce(*mut faiss_sys::FILE) -> i32,
) -> Result<(), IndexError> {
    if bytes.is_empty() {
        return Err(IndexError::Invalid(format!("{what}: no data")));
    }
    // SAFETY: the stream reads `bytes` (mode "rb" never writes to the buffer) and is closed
    // before this borrow ends.
    unsafe {
        let f = libc::fmemopen(
            bytes.as_ptr() as *mut libc::c_void,
            bytes.len(),
            c"rb".as_ptr(),
        );
        if f.is_null() {
            return Err(std::io::Error::last_os_error().into());
        }
        let code = read(f.cast());
        libc::fclose(f);
        faiss_call(what, code)
    }
}

/// Writes `body` + CRC32 to `path` through a temporary file: synced, renamed, directory synced.
pub(crate) fn write_checked(path: &Path, body: &[u8]) -> Result<(), IndexError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.write_all(&crc32fast::hash(body).to_le_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a file written by [`write_checked`], verifying its CRC.
pub(crate) fn read_checked(path: &Path) -> Result<Vec<u8>, IndexError> {
    let mut bytes = std::fs::read(path)?;
    if bytes.len() < 4 {
        return Err(IndexError::Invalid(format!(
            "{}: too short",
            path.display()
        )));
    }
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    bytes.truncate(bytes.len() - 4);
    if crc32fast::hash(&bytes) != crc {
        return Err(IndexError::Invalid(format!(
            "{}: checksum mismatch",
            path.display()
        )));
    }
    Ok(bytes)
}

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
    pub kernel: &'static str,
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
    /// The vector space the indexes were built in: 0 for the stored vectors, else the generation
    /// of the PCA-whitening they were built over (see `reduce`).
    #[serde(default)]
    space: u64,
}

const META_KEY: &str = "indexes";
pub const INDEX_DIR: &str = "indexes";

struct Binary {
    flat: HammingIndex,
    ivf: Option<BinaryIvf>,
}

/// When `refresh` writes the indexes to disk (writers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Save {
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
pub(crate) struct Indexes {
    dir: PathBuf,
    opts: IndexOptions,
    /// RocksDB meta key publishing the files.
    meta_key: String,
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

/// Ids of rows in a snapshot that are live (not tombstoned).
pub(crate) fn is_live(snap: &Snapshot, id: u64) -> bool {
    !snap.tombstones.contains(&id) && snap.vector(id).is_some()
}

pub(crate) fn max_id(snap: &Snapshot) -> u64 {
    let seg = snap
        .segments
        .iter()
        .filter_map(|(_, s)| s.ids().last().copied());
    let pend = snap.pending.iter().filter_map(|c| c.ids.last().copied());
    seg.chain(pend).max().unwrap_or(0)
}

pub(crate) fn live_rows(snap: &Snapshot) -> usize {
    let total: usize = snap
        .segments
        .iter()
        .map(|(_, s)| s.ids().len())
        .sum::<usize>()
        + snap.pending_rows();
    total.saturating_sub(snap.tombstones.len())
}

/// Live rows with ids above `above`, ascending, each with what `seg_row` / `chunk_row` take from
/// it; rows for which they give `None` (another shape, no such column) are left out. Every walk
/// over "the live rows since a watermark" goes through here.
pub(crate) fn live_rows_above<'a, T>(
    snap: &'a Snapshot,
    above: u64,
    seg_row: impl Fn(&'a Segment, usize) -> Option<T>,
    chunk_row: impl Fn(&'a PendingChunk, usize) -> Option<T>,
) -> Vec<(u64, T)> {
    let mut rows: Vec<(u64, T)> = Vec::new();
    for (_, seg) in &snap.segments {
        let ids = seg.ids();
        let start = ids.partition_point(|&id| id <= above);
        for (row, &id) in ids.iter().enumerate().skip(start) {
            if !snap.tombstones.contains(&id) {
                rows.extend(seg_row(seg, row).map(|t| (id, t)));
            }
        }
    }
    for chunk in &snap.pending {
        let start = chunk.ids.partition_point(|&id| id <= above);
        for (row, &id) in chunk.ids.iter().enumerate().skip(start) {
            if !snap.tombstones.contains(&id) {
                rows.extend(chunk_row(chunk, row).map(|t| (id, t)));
            }
        }
    }
    rows.sort_unstable_by_key(|r| r.0);
    rows
}

/// Live rows with ids above `above`, ascending, with their vectors.
pub(crate) fn rows_above(snap: &Snapshot, above: u64, dims: usize) -> (Vec<u64>, Vec<f32>) {
    let rows: Vec<(u64, &[f32])> = live_rows_above(
        snap,
        above,
        |seg, row| (seg.dims() == dims).then(|| seg.vector(row)),
        |chunk, row| (chunk.dims == dims).then(|| chunk.vector(row)),
    );
    let mut vectors = Vec::with_capacity(rows.len() * dims);
    for (_, v) in &rows {
        vectors.extend_from_slice(v);
    }
    (rows.into_iter().map(|r| r.0).collect(), vectors)
}

fn count_above(snap: &Snapshot, above: u64) -> usize {
    let seg: usize = snap
        .segments
        .iter()
        .map(|(_, s)| s.ids().len() - s.ids().partition_point(|&id| id <= above))
        .sum();
    let pend: usize = snap
        .pending
        .iter()
        .map(|c| c.ids.len() - c.ids.partition_point(|&id| id <= above))
        .sum();
    let dead = snap.tombstones.iter().filter(|&&id| id > above).count();
    (seg + pend).saturating_sub(dead)
}

/// Every `n / max`-th row of `vectors` (`n × dims`), at most `max` rows.
pub(crate) fn strided_sample(vectors: &[f32], dims: usize, max: usize) -> Vec<f32> {
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

enum Plan {
    Nothing,
    CatchUp(u64),
    Purge,
    Rebuild,
}

/// Whether an index covering `len` rows up to `watermark`, trained on `trained_on` rows, is due
/// for a rebuild or purge now that the snapshot holds `live` live rows.
fn plan(
    snap: &Snapshot,
    live: usize,
    len: usize,
    watermark: u64,
    trained_on: u64,
    force_purge: bool,
) -> Plan {
    if trained_on > 0 && live >= 4 * trained_on as usize {
        return Plan::Rebuild;
    }
    let live_covered = live.saturating_sub(count_above(snap, watermark));
    let dead = len.saturating_sub(live_covered);
    if dead > 0 && (force_purge || dead * 4 > len) {
        return Plan::Purge;
    }
    if max_id(snap) > watermark {
        Plan::CatchUp(watermark)
    } else {
        Plan::Nothing
    }
}

impl Indexes {
    pub fn new(store: &Store, opts: IndexOptions) -> Indexes {
        Indexes {
            dir: store.dir().join(INDEX_DIR),
            opts,
            meta_key: META_KEY.into(),
            dims: None,
            space: 0,
            ivf: RwLock::new(None),
            binary: RwLock::new(None),
            build: Mutex::new(BuildState::default()),
            loaded: AtomicBool::new(false),
            dormant: AtomicBool::new(false),
        }
    }

    /// Indexes over derived vectors of `dims` dimensions (whitening generation `space`), kept in
    /// their own folder `indexes/<name>` and published under their own meta key.
    pub fn derived(
        store: &Store,
        opts: IndexOptions,
        name: &str,
        dims: usize,
        space: u64,
    ) -> Indexes {
        Indexes {
            dir: store.dir().join(INDEX_DIR).join(name),
            opts,
            meta_key: format!("{META_KEY}:{name}"),
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
            dir: PathBuf::new(),
            opts,
            meta_key: String::new(),
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
        if self.dims.is_some() {
            return Ok(self.dims);
        }
        let d = store
            .dims()
            .map_err(|e| IndexError::Invalid(e.to_string()))?;
        Ok(d.map(|d| d as usize))
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
        let published: Option<Published> = store
            .get_meta(&self.meta_key)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok());
        if let Some(p) = published.filter(|p| p.dims as usize == dims && p.space == self.space) {
            if let Some(f) = &p.ivfpq {
                match IvfPq::load(&self.dir.join(f), dims) {
                    Ok(ivf) => *self.ivf.write() = Some(ivf),
                    Err(e) => tracing::warn!(
                        "{}: {e}; IVF-PQ will be rebuilt",
                        self.dir.join(f).display()
                    ),
                }
            }
            if let Some(f) = &p.hamming {
                match HammingIndex::load(&self.dir.join(f)) {
                    Ok(flat) if flat.encoder.dims == dims => {
                        let ivf = p.hamming_ivf.as_ref().and_then(|f| {
                            match BinaryIvf::load(&self.dir.join(f)) {
                                Ok(i) if i.len() == flat.len() => Some(i),
                                Ok(_) => None,
                                Err(e) => {
                                    tracing::warn!(
                                        "{}: {e}; binary IVF will be rebuilt",
                                        self.dir.join(f).display()
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
                        self.dir.join(f).display()
                    ),
                }
            }
            st.published = p;
        }
        if store.mode() == OpenMode::ReadWrite {
            self.remove_unpublished(&st.published);
        }
    }

    fn remove_unpublished(&self, p: &Published) {
        let keep: HashSet<&str> = [&p.ivfpq, &p.hamming, &p.hamming_ivf]
            .into_iter()
            .flatten()
            .map(|s| s.as_str())
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(name.as_str()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Whether every row of `snap` is in the indexes a search of `mode` uses (cheap: read locks).
    pub fn is_current(&self, snap: &Snapshot, mode: AnnMode) -> bool {
        if !self.loaded.load(Ordering::Acquire) {
            return false;
        }
        let top = max_id(snap);
        let live = live_rows(snap);
        let trainable = live >= self.opts.min_train_rows.max(1);
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
        live >= self.opts.min_train_rows.max(1)
            && Encoder::itq_possible(live, self.bits(dims), dims)
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
        let live = live_rows(snap);
        let trainable = live >= self.opts.min_train_rows.max(1);
        let mut added = 0usize;

        // Binary codes: always available (random projection until trainable).
        let binary_plan = match &*self.binary.read() {
            None => Plan::Rebuild,
            Some(b) if trainable && b.ivf.is_none() => Plan::Rebuild,
            Some(b) if self.wants_itq(live, dims) && b.flat.encoder.kind == EncoderKind::Lsh => {
                Plan::Rebuild
            }
            Some(b) => plan(
                snap,
                live,
                b.flat.len(),
                b.flat.watermark,
                b.flat.trained_on,
                purge_all,
            ),
        };
        match binary_plan {
            Plan::Nothing => {}
            Plan::Rebuild => {
                let (ids, vectors) = rows_above(snap, 0, dims);
                let bits = self.bits(dims);
                let sample = strided_sample(&vectors, dims, 65_536);
                let encoder = if self.wants_itq(ids.len(), dims) {
                    Encoder::itq(dims, bits, &sample)?
                } else {
                    Encoder::lsh(dims, bits, &sample, 0x1_6d5e_c0de)
                };
                let mut flat = HammingIndex::new(encoder, ids.len().max(1) as u64);
                flat.add(&ids, &vectors);
                flat.watermark = flat.watermark.max(max_id(snap));
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
                        .filter(|&id| !is_live(snap, id))
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
                let (ids, vectors) = rows_above(snap, wm, dims);
                let encoder = self.binary.read().as_ref().map(|b| b.flat.encoder.clone());
                if let Some(encoder) = encoder {
                    let mut codes = Vec::new();
                    encoder.encode(&vectors, &mut codes);
                    let mut guard = self.binary.write();
                    if let Some(b) = guard.as_mut() {
                        b.flat.add_codes(&ids, &codes);
                        b.flat.watermark = b.flat.watermark.max(max_id(snap));
                        if let Some(ivf) = b.ivf.as_mut() {
                            ivf.add(&ids, &codes)?;
                        }
                    }
                    added += ids.len();
                }
            }
        }

        // IVF-PQ: only once trainable.
        if trainable {
            let ivf_plan = match &*self.ivf.read() {
                None => Plan::Rebuild,
                Some(i) => match plan(snap, live, i.len(), i.watermark, i.trained_on, purge_all) {
                    // FAISS cannot list an IVF's ids cheaply: purging means rebuilding.
                    Plan::Purge => Plan::Rebuild,
                    p => p,
                },
            };
            match ivf_plan {
                Plan::Nothing | Plan::Purge => {}
                Plan::Rebuild => {
                    let (ids, vectors) = rows_above(snap, 0, dims);
                    let factory = self
                        .opts
                        .ivf_factory
                        .clone()
                        .unwrap_or_else(|| IvfPq::default_factory(ids.len(), dims));
                    let sample_rows = IvfPq::training_rows(&factory, ids.len(), dims);
                    let sample = strided_sample(&vectors, dims, sample_rows);
                    let mut ivf = IvfPq::train(dims, &factory, &sample, ids.len().max(1) as u64)?;
                    for (chunk_ids, chunk) in ids.chunks(65_536).zip(vectors.chunks(65_536 * dims))
                    {
                        ivf.add(chunk_ids, chunk)?;
                    }
                    ivf.watermark = ivf.watermark.max(max_id(snap));
                    *self.ivf.write() = Some(ivf);
                    st.rebuilt = true;
                }
                Plan::CatchUp(wm) => {
                    let (ids, vectors) = rows_above(snap, wm, dims);
                    let mut guard = self.ivf.write();
                    if let Some(ivf) = guard.as_mut() {
                        ivf.add(&ids, &vectors)?;
                        ivf.watermark = ivf.watermark.max(max_id(snap));
                    }
                    added += ids.len();
                }
            }
        } else if self.ivf.read().is_some() && live * 4 < self.opts.min_train_rows {
            // Shrunk far below the threshold: exact search answers again.
            *self.ivf.write() = None;
            st.rebuilt = true;
        }

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

    fn save(&self, st: &mut BuildState, store: &Store, dims: usize) -> Result<(), IndexError> {
        std::fs::create_dir_all(&self.dir)?;
        let generation = st.published.generation + 1;
        let mut next = Published {
            generation,
            dims: dims as u32,
            space: self.space,
            ..Published::default()
        };
        if let Some(ivf) = &*self.ivf.read() {
            let name = format!("ivfpq-{generation:08}.idx");
            ivf.save(&self.dir.join(&name))?;
            next.ivfpq = Some(name);
        }
        if let Some(b) = &*self.binary.read() {
            let name = format!("hamming-{generation:08}.idx");
            b.flat.save(&self.dir.join(&name))?;
            next.hamming = Some(name);
            if let Some(ivf) = &b.ivf {
                let name = format!("hamming-ivf-{generation:08}.idx");
                ivf.save(&self.dir.join(&name))?;
                next.hamming_ivf = Some(name);
            }
        }
        let json = serde_json::to_string(&next).map_err(|e| IndexError::Invalid(e.to_string()))?;
        store
            .put_meta(&self.meta_key, &json)
            .map_err(|e| IndexError::Invalid(e.to_string()))?;
        self.remove_unpublished(&next);
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
                if snap.tombstones.contains(&id) || !accept(id) {
                    continue;
                }
                let Some(v) = snap.vector(id) else { continue };
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
            kernel: hamming::kernel_name(),
            trained_on: b.flat.trained_on,
            watermark: b.flat.watermark,
            bytes_per_vector: b.flat.bytes_per_row(),
            ivf_nlist: b.ivf.as_ref().map(|i| i.nlist),
        });
        let bytes_on_disk = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        IndexInfo {
            min_train_rows: self.opts.min_train_rows,
            ivfpq,
            hamming,
            bytes_on_disk,
        }
    }
}
