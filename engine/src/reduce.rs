//! PCA-whitening learned on the collection, for pipelines that ask for it (`balanced`, `robust`).
//!
//! The segments keep each row's raw fused vector (every block, see `imgvec_ingest::blocks`), so
//! the whitening is derived data, like an index: it is learned with FAISS (`PCAMatrix` with
//! eigenvalue power −½) on a sample of the live rows once the collection has `min_rows` of
//! them, relearned when the collection has grown 4× since, and saved (CRC-checked file
//! `reduction/whitening-<gen>.bin`, published by the meta key `reduction`). Searches then run
//! in the whitened space: a [`View`] holds every live row projected and L2-normalised, as a
//! `Snapshot` of in-memory chunks, so exact search, the ANN indexes (built over the view, in
//! `indexes/whitened/`) and re-ranking all work on it unchanged.
//!
//! Fallback while the collection is too small to learn a whitening (fewer than `min_rows` live
//! rows): search compares the raw fused vectors by cosine, which is what whitening would start
//! from. The projected rows are derived data too: the writer saves them (`derived::view_file`,
//! tied to the projection's fingerprint) and other handles load them, projecting only the rows
//! stored since.

use std::collections::HashSet;
use std::sync::Arc;

use imgvec_ingest::sift::PackedFeatures;
use imgvec_storage::{OpenMode, PendingChunk, Snapshot, Store};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::derived::artifact::{self, Kind};
use crate::derived::lifecycle::{grown, SAMPLE_ROWS};
use crate::derived::publish::{Manifest, Publisher};
use crate::derived::view_file::ViewFile;
use crate::index::{stored_dims, strided_sample, IndexError, IndexOptions, Indexes, Save};
use crate::vlad::{Vlad, VladSpec};
use crate::whitening::Whitening;

pub(crate) const META_KEY: &str = "reduction";
pub const REDUCTION_DIR: &str = "reduction";
/// Images whose descriptors the VLAD codebook and whitening are learned on (their VLADs, 32 KB
/// each for 64 words, are held at once).
const VLAD_SAMPLE_IMAGES: usize = 2048;

/// What a pipeline asks for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WhiteningSpec {
    /// Output dimensions (of the whitened global descriptor).
    pub dims: usize,
    /// Live rows needed before it is learned.
    pub min_rows: usize,
    /// A VLAD of each row's local features, learned with the whitening and appended to the
    /// whitened vector (`vlad`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlad: Option<VladSpec>,
    /// Never learned or relearned here: the database was made with another's learned state
    /// ([`Database::create_like`](crate::Database::create_like), the shards of one collection),
    /// so scores stay comparable with theirs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WhiteningInfo {
    pub generation: u64,
    pub learned_on: u64,
    pub dims_in: usize,
    /// Dimensions of the view (whitened global descriptor, plus the VLAD block if any).
    pub dims_out: usize,
    pub min_rows: usize,
    /// The projection's fingerprint (hex): databases that share it score alike.
    pub fingerprint: String,
    /// Adopted from another database and never relearned here (`WhiteningSpec::frozen`).
    pub frozen: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlad: Option<VladInfo>,
    /// Rows of the view this handle projected itself (the rest it loaded as the writer saved
    /// them: 0 for a handle opened after a writer closed).
    pub rows_projected_here: u64,
}

/// The VLAD block of the view.
#[derive(Debug, Clone, Serialize)]
pub struct VladInfo {
    pub words: usize,
    pub dims: usize,
    pub weight: f32,
}

/// How searches map stored and query vectors into the view: the whitening, then, when the
/// pipeline fuses one, the row's whitened VLAD appended with weight `√w`, and the whole
/// L2-normalised (so the view's cosine is `(cos(global) + w · cos(VLAD)) / (1 + w)`).
#[derive(Debug)]
pub struct Projection {
    pub whitening: Whitening,
    pub vlad: Option<Vlad>,
    /// [`fingerprint`](Self::fingerprint), worked out once (every feature query's first pass
    /// is keyed by it: hashing the matrices per call cost a shard ~2 ms a round).
    fingerprint: u64,
}

impl Projection {
    pub fn new(whitening: Whitening, vlad: Option<Vlad>) -> Projection {
        let mut h = blake3::Hasher::new();
        h.update(&whitening.to_bytes());
        if let Some(v) = &vlad {
            h.update(&v.to_bytes());
        }
        let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
        Projection {
            whitening,
            vlad,
            fingerprint: u64::from_le_bytes(bytes).max(1),
        }
    }

    /// A fingerprint of the projection (whitening and VLAD bytes): index sets built in its
    /// space carry it, so they are never loaded against another projection. Never 0 (the
    /// stored vectors' own space).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn dims_out(&self) -> usize {
        self.whitening.dims_out + self.vlad.as_ref().map_or(0, Vlad::dims)
    }

    /// Projects rows of `whitening.dims_in` values; `descriptors[i]` are row i's local
    /// descriptors (used only with a VLAD; empty: none).
    pub fn apply(&self, rows: &[f32], descriptors: &[&[f32]]) -> Vec<f32> {
        let global = self.whitening.apply(rows);
        let Some(vlad) = &self.vlad else {
            return global;
        };
        let (dg, dv) = (self.whitening.dims_out, vlad.dims());
        let n = global.len() / dg;
        debug_assert_eq!(descriptors.len(), n);
        let local = vlad.project(&descriptors[..n]);
        let weight = vlad.weight.max(0.0).sqrt();
        let mut out = Vec::with_capacity(n * (dg + dv));
        for (g, v) in global.chunks_exact(dg).zip(local.chunks_exact(dv)) {
            out.extend_from_slice(g);
            out.extend(v.iter().map(|x| x * weight));
        }
        imgvec_ingest::l2_normalize_rows(&mut out, dg + dv);
        out
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Published {
    generation: u64,
    file: String,
    /// The VLAD codebook and whitening learned with it, if the pipeline fuses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vlad: Option<String>,
}

impl Manifest for Published {
    fn files(&self) -> Vec<&str> {
        std::iter::once(self.file.as_str())
            .chain(self.vlad.as_deref())
            .collect()
    }
}

/// Whether [`Reducer::view`] may learn (or relearn) the whitening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learn {
    /// When the collection is large enough, or has grown 4× since it was learned.
    WhenDue,
    /// Only use the one loaded or learned already.
    Never,
}

/// The whitened collection at one snapshot, and the indexes over it.
pub struct View {
    pub projection: Arc<Projection>,
    pub snapshot: Arc<Snapshot>,
    pub(crate) indexes: Arc<Indexes>,
}

struct State {
    generation: u64,
    projection: Arc<Projection>,
    saved: bool,
    /// Projected rows, ids ascending within and across chunks; covers ids ≤ `watermark`.
    chunks: Vec<Arc<PendingChunk>>,
    watermark: u64,
    /// Identity of the base snapshot the chunks were last checked against (segments,
    /// tombstones, pending rows), so the liveness pass runs only when that changes.
    checked: Option<(Vec<u64>, usize, usize)>,
    indexes: Arc<Indexes>,
    /// Rows projected or dropped since the view was last saved.
    view_unsaved: usize,
    /// Rows this handle projected.
    projected_here: u64,
}

/// One database handle's whitening.
pub(crate) struct Reducer {
    spec: WhiteningSpec,
    publisher: Publisher,
    index_opts: IndexOptions,
    /// Where the projected rows are saved.
    view_file: ViewFile,
    state: Mutex<Option<State>>,
    loaded: std::sync::atomic::AtomicBool,
    /// Generation of the last publication seen (0: none), so a whitening relearned after a
    /// damaged file gets a new generation and the old one's index set is never mistaken for it.
    published_generation: std::sync::atomic::AtomicU64,
}

impl Reducer {
    pub fn new(store: &Store, spec: WhiteningSpec, index_opts: IndexOptions) -> Reducer {
        Reducer {
            spec,
            publisher: Publisher::new(
                store.vfs().clone(),
                store.dir().join(REDUCTION_DIR),
                META_KEY,
            ),
            index_opts,
            view_file: ViewFile::new(store),
            state: Mutex::new(None),
            loaded: false.into(),
            published_generation: 0.into(),
        }
    }

    pub fn spec(&self) -> WhiteningSpec {
        self.spec
    }

    fn make_state(&self, store: &Store, generation: u64, w: Arc<Projection>, saved: bool) -> State {
        // The index set is tied to this exact projection (not to its generation number, which
        // a reader relearning in memory or a crash mid-relearn could repeat).
        let indexes = Arc::new(Indexes::derived(
            store,
            self.index_opts.clone(),
            "whitened",
            w.dims_out(),
            w.fingerprint(),
        ));
        State {
            generation,
            projection: w,
            saved,
            chunks: Vec::new(),
            watermark: 0,
            checked: None,
            indexes,
            view_unsaved: 0,
            projected_here: 0,
        }
    }

    /// Loads the published whitening once.
    fn load_once(&self, store: &Store, st: &mut Option<State>, dims_in: usize) {
        if self.loaded.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let published: Option<Published> = self.publisher.load(store);
        self.publisher.sweep_unpublished(store, published.as_ref());
        if let Some(p) = published {
            self.published_generation
                .store(p.generation, std::sync::atomic::Ordering::Release);
            let path = self.publisher.path(&p.file);
            // A VLAD the pipeline asks for but the generation lacks (too few local features
            // when it was learned) comes with the next relearning.
            let vlad = match (&self.spec.vlad, &p.vlad) {
                (Some(_), Some(file)) => {
                    let path = self.publisher.path(file);
                    match artifact::read(&path, Kind::Vlad).map(|b| Vlad::from_bytes(&b)) {
                        Ok(Some(v)) => Some(v),
                        Ok(None) => {
                            tracing::warn!("{}: not a VLAD file; relearned", path.display());
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("{}: {e}; relearned", path.display());
                            return;
                        }
                    }
                }
                _ => None,
            };
            match Whitening::load(&path) {
                Ok(w) if w.dims_in == dims_in && w.dims_out == self.spec.dims => {
                    let projection = Projection::new(w, vlad);
                    let mut state =
                        self.make_state(store, p.generation, Arc::new(projection), true);
                    // The rows projected with it, as saved; the rest are projected on demand.
                    let (space, dims) =
                        (state.projection.fingerprint(), state.projection.dims_out());
                    if let Some(saved) = self.view_file.load(store, space, dims) {
                        state.watermark = saved.watermark;
                        state.chunks = vec![Arc::new(saved.chunk)];
                    }
                    *st = Some(state);
                }
                Ok(_) => tracing::warn!("{}: dimensions changed; relearned", path.display()),
                Err(e) => {
                    tracing::warn!("{}: {e}; the whitening will be relearned", path.display())
                }
            }
        }
    }

    /// Learns the projection on `live` rows of `snap`: the whitening on a sample of the raw
    /// vectors, and the VLAD codebook on a sample of the local features when the spec has one.
    fn learn(
        &self,
        store: &Store,
        snap: &Snapshot,
        dims_in: usize,
        live: usize,
    ) -> Result<Projection, IndexError> {
        let (_, vectors) = snap.vectors_above(0, dims_in)?;
        let sample = strided_sample(&vectors, dims_in, SAMPLE_ROWS);
        let w = Whitening::learn(&sample, dims_in, self.spec.dims, live as u64)?;
        let vlad = match self.spec.vlad {
            Some(spec) => {
                let images = vlad_sample(snap)?;
                Vlad::learn(
                    &spec,
                    images.len(),
                    |i| descriptors_of(images[i]),
                    live as u64,
                )
                .map_err(|e| tracing::warn!("{}: no VLAD yet: {e}", store.dir().display()))
                .ok()
            }
            None => None,
        };
        tracing::info!(
            "{}: whitening learned on {live} rows ({dims_in} → {} dims{})",
            store.dir().display(),
            self.spec.dims,
            vlad.as_ref()
                .map_or(String::new(), |v| format!(" + VLAD {}", v.dims()))
        );
        Ok(Projection::new(w, vlad))
    }

    /// The whitened view of `snap`, learning or relearning the whitening when due (and `learn`
    /// allows); `None` while there is none (callers then search the raw vectors).
    pub fn view(
        &self,
        store: &Store,
        snap: &Snapshot,
        learn: Learn,
    ) -> Result<Option<View>, IndexError> {
        let Some(dims_in) = stored_dims(store)? else {
            return Ok(None);
        };
        let mut guard = self.state.lock();
        self.load_once(store, &mut guard, dims_in);
        let live = snap.live_count();
        let due = learn == Learn::WhenDue
            && !self.spec.frozen
            && match &*guard {
                None => live >= self.spec.min_rows.max(self.spec.dims + 1),
                Some(s) => grown(live as u64, s.projection.whitening.learned_on.max(1)),
            };
        if due {
            let projection = self.learn(store, snap, dims_in, live)?;
            let published = self
                .published_generation
                .load(std::sync::atomic::Ordering::Acquire);
            let generation = guard.as_ref().map_or(published, |s| s.generation) + 1;
            *guard = Some(self.make_state(store, generation, Arc::new(projection), false));
        }
        let Some(st) = guard.as_mut() else {
            return Ok(None);
        };
        // Rows purged by compaction or deleted: drop them from the projected chunks whenever
        // the base snapshot's make-up changed.
        let key = snap.make_up();
        if st.checked.as_ref() != Some(&key) {
            let dead: HashSet<u64> = st
                .chunks
                .iter()
                .flat_map(|c| c.ids.iter().copied())
                .filter(|&id| !snap.is_live(id))
                .collect();
            if !dead.is_empty() {
                st.view_unsaved += dead.len();
                st.chunks = st
                    .chunks
                    .iter()
                    .map(|c| Arc::new(retain_chunk(c, &dead)))
                    .filter(|c| !c.ids.is_empty())
                    .collect();
            }
            st.checked = Some(key);
        }
        if snap.max_id() > st.watermark {
            let (ids, vectors) = snap.vectors_above(st.watermark, dims_in)?;
            if let Some(&last) = ids.last() {
                let projected = project_rows(&st.projection, snap, &ids, &vectors)?;
                st.watermark = last;
                st.view_unsaved += ids.len();
                st.projected_here += ids.len() as u64;
                st.chunks.push(Arc::new(PendingChunk {
                    ids,
                    vectors: projected,
                    dims: st.projection.dims_out(),
                    ..PendingChunk::default()
                }));
                // Few, large chunks keep lookups cheap.
                if st.chunks.len() > 8 {
                    st.chunks = vec![Arc::new(merge_chunks(&st.chunks))];
                }
            }
        }
        let view = View {
            projection: st.projection.clone(),
            // The chunks hold live rows only (pruned above whenever the base changed), so the
            // view has no tombstones: its live counts must not subtract deleted base rows again.
            snapshot: Arc::new(Snapshot::from_chunks(st.chunks.clone(), Default::default())),
            indexes: st.indexes.clone(),
        };
        Ok(Some(view))
    }

    /// The learned projection as published (loaded once; nothing is learned).
    pub fn projection(&self, store: &Store) -> Result<Option<Arc<Projection>>, IndexError> {
        let Some(dims_in) = stored_dims(store)? else {
            return Ok(None);
        };
        let mut guard = self.state.lock();
        self.load_once(store, &mut guard, dims_in);
        Ok(guard.as_ref().map(|s| s.projection.clone()))
    }

    /// Makes `projection`, learned by another database, this one's and publishes it (a new,
    /// empty database whose spec is `frozen`, so it is never relearned here).
    pub fn adopt(&self, store: &Store, projection: Arc<Projection>) -> Result<(), IndexError> {
        let mut guard = self.state.lock();
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        let generation = self
            .published_generation
            .load(std::sync::atomic::Ordering::Acquire)
            + 1;
        let mut state = self.make_state(store, generation, projection, false);
        self.save_projection(store, &mut state)?;
        *guard = Some(state);
        Ok(())
    }

    /// Writes an unsaved whitening, and the projected rows when `save` says so (writers only).
    pub fn save(&self, store: &Store, save: Save) -> Result<(), IndexError> {
        if store.mode() != OpenMode::ReadWrite || save == Save::Never {
            return Ok(());
        }
        let mut guard = self.state.lock();
        let Some(st) = guard.as_mut() else {
            return Ok(());
        };
        if !st.saved {
            self.save_projection(store, st)?;
        }
        let rows: usize = st.chunks.iter().map(|c| c.ids.len()).sum();
        let due = st.view_unsaved > 0
            && (save == Save::Unsaved || st.view_unsaved >= 1024.max(rows / 10));
        if due {
            let space = st.projection.fingerprint();
            self.view_file
                .save(store, space, st.watermark, &st.chunks)?;
            st.view_unsaved = 0;
        }
        Ok(())
    }

    fn save_projection(&self, store: &Store, st: &mut State) -> Result<(), IndexError> {
        self.publisher.prepare()?;
        let file = Publisher::file_name("whitening", st.generation, "bin");
        self.publisher
            .write(&file, Kind::Whitening, &st.projection.whitening.to_bytes())?;
        let vlad = match &st.projection.vlad {
            Some(v) => {
                let name = Publisher::file_name("vlad", st.generation, "bin");
                self.publisher.write(&name, Kind::Vlad, &v.to_bytes())?;
                Some(name)
            }
            None => None,
        };
        let published = Published {
            generation: st.generation,
            file,
            vlad,
        };
        self.publisher.publish(store, &published)?;
        st.saved = true;
        Ok(())
    }

    /// The index set of the published whitening (loading it once), without learning one or
    /// projecting any row: what `imgvec info` reports.
    pub fn loaded_indexes(&self, store: &Store) -> Option<Arc<Indexes>> {
        let dims_in = stored_dims(store).ok().flatten()?;
        let mut guard = self.state.lock();
        self.load_once(store, &mut guard, dims_in);
        guard.as_ref().map(|s| s.indexes.clone())
    }

    /// (generation, rows learned on, input dims, output dims) for `imgvec info`.
    pub fn info(&self) -> Option<WhiteningInfo> {
        self.state.lock().as_ref().map(|s| {
            let w = &s.projection.whitening;
            WhiteningInfo {
                generation: s.generation,
                learned_on: w.learned_on,
                dims_in: w.dims_in,
                dims_out: s.projection.dims_out(),
                min_rows: self.spec.min_rows,
                fingerprint: format!("{:016x}", s.projection.fingerprint()),
                frozen: self.spec.frozen,
                vlad: s.projection.vlad.as_ref().map(|v| VladInfo {
                    words: v.words(),
                    dims: v.dims(),
                    weight: v.weight,
                }),
                rows_projected_here: s.projected_here,
            }
        })
    }
}

/// The packed local features of an even sample of the live rows (at most
/// `VLAD_SAMPLE_IMAGES`; only the sampled rows are read).
fn vlad_sample(snap: &Snapshot) -> Result<Vec<&[u8]>, IndexError> {
    let ids = snap.live_ids_above(0);
    let step = ids.len().div_ceil(VLAD_SAMPLE_IMAGES).max(1);
    let mut images = Vec::with_capacity(ids.len() / step + 1);
    for &id in ids.iter().step_by(step) {
        images.extend(snap.local(id)?.filter(|b| !b.is_empty()));
    }
    Ok(images)
}

/// The descriptors of packed local features (none for unreadable or absent ones).
fn descriptors_of(bytes: &[u8]) -> Vec<f32> {
    PackedFeatures::parse(bytes)
        .ok()
        .flatten()
        .map_or_else(Vec::new, |p| p.descriptors_f32())
}

/// Projects stored rows `ids` (their `vectors`), a block at a time so a VLAD's descriptors are
/// unpacked for a few rows at once.
fn project_rows(
    p: &Projection,
    snap: &Snapshot,
    ids: &[u64],
    vectors: &[f32],
) -> Result<Vec<f32>, IndexError> {
    if p.vlad.is_none() {
        return Ok(p.apply(vectors, &[]));
    }
    const BLOCK: usize = 256;
    let dims_in = p.whitening.dims_in;
    let mut out = Vec::with_capacity(ids.len() * p.dims_out());
    for (block, rows) in ids.chunks(BLOCK).zip(vectors.chunks(BLOCK * dims_in)) {
        let mut descriptors: Vec<Vec<f32>> = Vec::with_capacity(block.len());
        for &id in block {
            descriptors.push(snap.local(id)?.map_or_else(Vec::new, descriptors_of));
        }
        let refs: Vec<&[f32]> = descriptors.iter().map(Vec::as_slice).collect();
        out.extend(p.apply(rows, &refs));
    }
    Ok(out)
}

fn retain_chunk(c: &PendingChunk, dead: &HashSet<u64>) -> PendingChunk {
    let mut out = PendingChunk {
        ids: Vec::with_capacity(c.ids.len()),
        vectors: Vec::with_capacity(c.vectors.len()),
        dims: c.dims,
        ..PendingChunk::default()
    };
    for (row, &id) in c.ids.iter().enumerate() {
        if !dead.contains(&id) {
            out.ids.push(id);
            out.vectors.extend_from_slice(c.vector(row));
        }
    }
    out
}

fn merge_chunks(chunks: &[Arc<PendingChunk>]) -> PendingChunk {
    let dims = chunks.first().map_or(0, |c| c.dims);
    let mut out = PendingChunk {
        ids: Vec::new(),
        vectors: Vec::new(),
        dims,
        ..PendingChunk::default()
    };
    for c in chunks {
        out.ids.extend_from_slice(&c.ids);
        out.vectors.extend_from_slice(&c.vectors);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use imgvec_storage::{ContentHash, NewRow, StoreOptions};

    use super::*;
    use crate::derived::lifecycle::{plan, Collection, Plan};

    /// The view holds live rows only, and counts them once: deleted base rows must not be
    /// subtracted again (they would make its index set purge forever and never catch up).
    #[test]
    fn the_view_counts_its_live_rows_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            &dir.path().join("db"),
            StoreOptions::new(OpenMode::ReadWrite),
        )
        .unwrap();
        let rows: Vec<NewRow> = (0..60u32)
            .map(|i| {
                let mut vector: Vec<f32> = (0..8)
                    .map(|d| (((i * 7 + d * 13) % 17) as f32 - 8.0) / 8.0)
                    .collect();
                imgvec_ingest::l2_normalize_rows(&mut vector, 8);
                let mut hash = [0u8; 32];
                hash[..4].copy_from_slice(&i.to_le_bytes());
                NewRow {
                    path: format!("/v{i}"),
                    path_bytes: None,
                    content_hash: ContentHash(hash),
                    width: 1,
                    height: 1,
                    format: "png".into(),
                    attributes: BTreeMap::new(),
                    thumbnail: Vec::new(),
                    vector,
                    local: Vec::new(),
                }
            })
            .collect();
        store.commit(rows).unwrap();
        let spec = WhiteningSpec {
            dims: 4,
            min_rows: 20,
            vlad: None,
            frozen: false,
        };
        let reducer = Reducer::new(&store, spec, IndexOptions::default());
        let view = reducer
            .view(&store, &store.snapshot(), Learn::WhenDue)
            .unwrap()
            .unwrap();
        assert_eq!(view.snapshot.live_count(), 60);
        // A third deleted: the view drops them and still counts 40 live rows, so an index that
        // covered all 60 is due for a purge once, and current afterwards.
        store.delete(&(1..=20).collect::<Vec<u64>>()).unwrap();
        let view = reducer
            .view(&store, &store.snapshot(), Learn::Never)
            .unwrap()
            .unwrap();
        assert_eq!(view.snapshot.live_count(), 40);
        assert_eq!(view.snapshot.live_count_above(60), 0);
        let vector = |id| view.snapshot.vector(id).unwrap();
        assert!(vector(5).is_none() && vector(45).is_some());
        struct Covered(usize);
        impl crate::derived::lifecycle::Derived for Covered {
            fn watermark(&self) -> u64 {
                60
            }
            fn rows(&self) -> usize {
                self.0
            }
            fn trained_on(&self) -> u64 {
                0
            }
        }
        let c = Collection::of(&view.snapshot, 60);
        assert_eq!(plan(&Covered(60), c, false), Plan::Purge);
        assert_eq!(plan(&Covered(40), c, false), Plan::Nothing);
    }
}
