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
//! from. The projected rows are not stored; a handle projects them when it first needs them
//! (one matrix product over the stored vectors).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use faiss::vector_transform::{PCAMatrixImpl, VectorTransform};
use imgvec_ingest::sift::PackedFeatures;
use imgvec_storage::{OpenMode, PendingChunk, Snapshot, Store};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::database::{VladInfo, WhiteningInfo};
use crate::exact::matmul_nt;
use crate::index::hamming::affine_of;
use crate::index::{
    live_rows, live_rows_above, max_id, read_checked, rows_above, strided_sample, write_checked,
    IndexError, IndexOptions, Indexes,
};
use crate::vlad::{Vlad, VladSpec};

const META_KEY: &str = "reduction";
pub const REDUCTION_DIR: &str = "reduction";
const MAGIC: &[u8; 8] = b"IVWHITE1";
/// Rows of the training sample (PCA on more adds little).
const SAMPLE_ROWS: usize = 65_536;
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
}

/// A learned whitening: `y = normalise(A x + b)`.
#[derive(Debug, Clone)]
pub struct Whitening {
    pub dims_in: usize,
    pub dims_out: usize,
    /// `dims_out × dims_in`, row-major.
    matrix: Vec<f32>,
    bias: Vec<f32>,
    pub learned_on: u64,
}

impl Whitening {
    /// Learns from `sample` (rows of `dims_in`). Needs more rows than `dims_out`.
    pub fn learn(
        sample: &[f32],
        dims_in: usize,
        dims_out: usize,
        learned_on: u64,
    ) -> Result<Whitening, IndexError> {
        let n = sample.len() / dims_in;
        if dims_out > dims_in || n <= dims_out {
            return Err(IndexError::Invalid(format!(
                "whitening to {dims_out} dimensions needs at most {dims_in} and more than \
                 {dims_out} rows (got {n})"
            )));
        }
        let mut pca = PCAMatrixImpl::new(dims_in as u32, dims_out as u32, -0.5, false)?;
        pca.train(n, sample)?;
        let (matrix, bias) = affine_of(&pca, dims_in, dims_out)?;
        Ok(Whitening {
            dims_in,
            dims_out,
            matrix,
            bias,
            learned_on,
        })
    }

    /// Projects `n` rows and L2-normalises each result.
    pub fn apply(&self, rows: &[f32]) -> Vec<f32> {
        let n = rows.len() / self.dims_in;
        let mut out = matmul_nt(rows, n, &self.matrix, self.dims_out, self.dims_in);
        for row in out.chunks_exact_mut(self.dims_out) {
            row.iter_mut().zip(&self.bias).for_each(|(y, b)| *y += b);
        }
        imgvec_ingest::l2_normalize_rows(&mut out, self.dims_out);
        out
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + 4 * (self.matrix.len() + self.bias.len()));
        body.extend_from_slice(MAGIC);
        for v in [self.dims_in as u64, self.dims_out as u64, self.learned_on] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.matrix.iter().chain(&self.bias) {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body
    }

    pub(crate) fn from_bytes(body: &[u8]) -> Option<Whitening> {
        if body.len() < 32 || &body[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(body[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let (dims_in, dims_out, learned_on) = (word(0) as usize, word(1) as usize, word(2));
        let floats = dims_out
            .checked_mul(dims_in)
            .and_then(|m| m.checked_add(dims_out))?;
        if body.len() != floats.checked_mul(4)?.checked_add(32)? {
            return None;
        }
        let values: Vec<f32> = body[32..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (matrix, bias) = values.split_at(dims_out * dims_in);
        Some(Whitening {
            dims_in,
            dims_out,
            matrix: matrix.to_vec(),
            bias: bias.to_vec(),
            learned_on,
        })
    }

    fn save(&self, path: &Path) -> Result<(), IndexError> {
        write_checked(path, &self.to_bytes())
    }

    fn load(path: &Path) -> Result<Whitening, IndexError> {
        Whitening::from_bytes(&read_checked(path)?)
            .ok_or_else(|| IndexError::Invalid(format!("{}: not a whitening file", path.display())))
    }
}

/// How searches map stored and query vectors into the view: the whitening, then, when the
/// pipeline fuses one, the row's whitened VLAD appended with weight `√w`, and the whole
/// L2-normalised (so the view's cosine is `(cos(global) + w · cos(VLAD)) / (1 + w)`).
#[derive(Debug)]
pub struct Projection {
    pub whitening: Whitening,
    pub vlad: Option<Vlad>,
}

impl Projection {
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
}

/// One database handle's whitening.
pub(crate) struct Reducer {
    spec: WhiteningSpec,
    dir: PathBuf,
    index_opts: IndexOptions,
    state: Mutex<Option<State>>,
    loaded: std::sync::atomic::AtomicBool,
}

impl Reducer {
    pub fn new(store: &Store, spec: WhiteningSpec, index_opts: IndexOptions) -> Reducer {
        Reducer {
            spec,
            dir: store.dir().join(REDUCTION_DIR),
            index_opts,
            state: Mutex::new(None),
            loaded: false.into(),
        }
    }

    pub fn spec(&self) -> WhiteningSpec {
        self.spec
    }

    fn make_state(&self, store: &Store, generation: u64, w: Projection, saved: bool) -> State {
        let indexes = Arc::new(Indexes::derived(
            store,
            self.index_opts.clone(),
            "whitened",
            w.dims_out(),
            generation,
        ));
        State {
            generation,
            projection: Arc::new(w),
            saved,
            chunks: Vec::new(),
            watermark: 0,
            checked: None,
            indexes,
        }
    }

    /// Loads the published whitening once.
    fn load_once(&self, store: &Store, st: &mut Option<State>, dims_in: usize) {
        if self.loaded.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let published: Option<Published> = store
            .get_meta(META_KEY)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok());
        if let Some(p) = published {
            let path = self.dir.join(&p.file);
            // A VLAD the pipeline asks for but the generation lacks (too few local features
            // when it was learned) comes with the next relearning.
            let vlad = match (&self.spec.vlad, &p.vlad) {
                (Some(_), Some(file)) => {
                    let path = self.dir.join(file);
                    match read_checked(&path).map(|b| Vlad::from_bytes(&b)) {
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
                    let projection = Projection { whitening: w, vlad };
                    *st = Some(self.make_state(store, p.generation, projection, true));
                }
                Ok(_) => tracing::warn!("{}: dimensions changed; relearned", path.display()),
                Err(e) => {
                    tracing::warn!("{}: {e}; the whitening will be relearned", path.display())
                }
            }
        }
    }

    /// The whitened view of `snap`, learning or relearning the whitening when due; `None` while
    /// the collection is too small (callers then search the raw vectors).
    pub fn view(&self, store: &Store, snap: &Snapshot) -> Result<Option<View>, IndexError> {
        let dims_in = match store
            .dims()
            .map_err(|e| IndexError::Invalid(e.to_string()))?
        {
            Some(d) => d as usize,
            None => return Ok(None),
        };
        let mut guard = self.state.lock();
        self.load_once(store, &mut guard, dims_in);
        let live = live_rows(snap);
        let due = match &*guard {
            None => live >= self.spec.min_rows.max(self.spec.dims + 1),
            Some(s) => live as u64 >= 4 * s.projection.whitening.learned_on.max(1),
        };
        if due {
            let (_, vectors) = rows_above(snap, 0, dims_in);
            let sample = strided_sample(&vectors, dims_in, SAMPLE_ROWS);
            let w = Whitening::learn(&sample, dims_in, self.spec.dims, live as u64)?;
            let vlad = self.spec.vlad.and_then(|spec| {
                let rows = rows_with_features(snap, 0);
                let step = rows.len().div_ceil(VLAD_SAMPLE_IMAGES).max(1);
                let images: Vec<&[u8]> = rows.iter().step_by(step).map(|r| r.1).collect();
                Vlad::learn(
                    &spec,
                    images.len(),
                    |i| descriptors_of(images[i]),
                    live as u64,
                )
                .map_err(|e| tracing::warn!("{}: no VLAD yet: {e}", store.dir().display()))
                .ok()
            });
            let generation = guard.as_ref().map_or(1, |s| s.generation + 1);
            tracing::info!(
                "{}: whitening learned on {live} rows ({dims_in} → {} dims{})",
                store.dir().display(),
                self.spec.dims,
                vlad.as_ref()
                    .map_or(String::new(), |v| format!(" + VLAD {}", v.dims()))
            );
            let projection = Projection { whitening: w, vlad };
            *guard = Some(self.make_state(store, generation, projection, false));
        }
        let Some(st) = guard.as_mut() else {
            return Ok(None);
        };
        // Rows purged by compaction or deleted: drop them from the projected chunks whenever
        // the base snapshot's make-up changed.
        let key = (
            snap.segments.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            snap.tombstones.len(),
            snap.pending_rows(),
        );
        if st.checked.as_ref() != Some(&key) {
            let dead: HashSet<u64> = st
                .chunks
                .iter()
                .flat_map(|c| c.ids.iter().copied())
                .filter(|&id| snap.tombstones.contains(&id) || snap.vector(id).is_none())
                .collect();
            if !dead.is_empty() {
                st.chunks = st
                    .chunks
                    .iter()
                    .map(|c| Arc::new(retain_chunk(c, &dead)))
                    .filter(|c| !c.ids.is_empty())
                    .collect();
            }
            st.checked = Some(key);
        }
        if max_id(snap) > st.watermark {
            let (ids, vectors) = rows_above(snap, st.watermark, dims_in);
            if let Some(&last) = ids.last() {
                let projected = project_rows(&st.projection, snap, &ids, &vectors);
                st.watermark = last;
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
            snapshot: Arc::new(Snapshot {
                segments: Vec::new(),
                pending: st.chunks.clone(),
                tombstones: snap.tombstones.clone(),
            }),
            indexes: st.indexes.clone(),
        };
        Ok(Some(view))
    }

    /// Writes an unsaved whitening (writers only).
    pub fn save(&self, store: &Store) -> Result<(), IndexError> {
        if store.mode() != OpenMode::ReadWrite {
            return Ok(());
        }
        let mut guard = self.state.lock();
        let Some(st) = guard.as_mut() else {
            return Ok(());
        };
        if st.saved {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let file = format!("whitening-{:08}.bin", st.generation);
        st.projection.whitening.save(&self.dir.join(&file))?;
        let vlad_file = match &st.projection.vlad {
            Some(v) => {
                let name = format!("vlad-{:08}.bin", st.generation);
                write_checked(&self.dir.join(&name), &v.to_bytes())?;
                Some(name)
            }
            None => None,
        };
        let published = Published {
            generation: st.generation,
            file: file.clone(),
            vlad: vlad_file.clone(),
        };
        let json =
            serde_json::to_string(&published).map_err(|e| IndexError::Invalid(e.to_string()))?;
        store
            .put_meta(META_KEY, &json)
            .map_err(|e| IndexError::Invalid(e.to_string()))?;
        st.saved = true;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name != file && Some(&name) != vlad_file.as_ref() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// The index set of the published whitening (loading it once), without learning one or
    /// projecting any row: what `imgvec info` reports.
    pub fn loaded_indexes(&self, store: &Store) -> Option<Arc<Indexes>> {
        let dims_in = store.dims().ok().flatten()? as usize;
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
                vlad: s.projection.vlad.as_ref().map(|v| VladInfo {
                    words: v.words(),
                    dims: v.dims(),
                    weight: v.weight,
                }),
            }
        })
    }
}

/// Live rows above `after` that have local features, with their packed features.
pub(crate) fn rows_with_features(snap: &Snapshot, after: u64) -> Vec<(u64, &[u8])> {
    live_rows_above(
        snap,
        after,
        |seg, row| seg.has_local().then(|| seg.local(row)),
        |chunk, row| Some(chunk.local(row)),
    )
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
fn project_rows(p: &Projection, snap: &Snapshot, ids: &[u64], vectors: &[f32]) -> Vec<f32> {
    if p.vlad.is_none() {
        return p.apply(vectors, &[]);
    }
    const BLOCK: usize = 256;
    let dims_in = p.whitening.dims_in;
    let mut out = Vec::with_capacity(ids.len() * p.dims_out());
    for (block, rows) in ids.chunks(BLOCK).zip(vectors.chunks(BLOCK * dims_in)) {
        let descriptors: Vec<Vec<f32>> = block
            .iter()
            .map(|&id| snap.local(id).map_or_else(Vec::new, descriptors_of))
            .collect();
        let refs: Vec<&[f32]> = descriptors.iter().map(Vec::as_slice).collect();
        out.extend(p.apply(rows, &refs));
    }
    out
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
    use super::*;

    #[test]
    fn whitening_decorrelates_and_round_trips() {
        // Correlated 8-d data with very unequal variances.
        let mut rng = 12345u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let n = 400;
        let mut rows = Vec::new();
        for _ in 0..n {
            let a = next() * 10.0;
            let b = next();
            let row = [
                a,
                a + b,
                b,
                next() * 0.1,
                a - b,
                next(),
                next() * 3.0,
                b * 2.0,
            ];
            rows.extend_from_slice(&row);
        }
        let w = Whitening::learn(&rows, 8, 4, n as u64).unwrap();
        // Before normalisation the outputs have equal variances and no correlation (FAISS
        // scales by the scatter matrix's eigenvalues, so the common variance is 1/n; one scale
        // for every dimension is all cosine search needs).
        let raw = matmul_nt(&rows, n, &w.matrix, 4, 8);
        let cov = |i: usize, j: usize| -> f32 {
            (0..n)
                .map(|r| (raw[r * 4 + i] + w.bias[i]) * (raw[r * 4 + j] + w.bias[j]))
                .sum::<f32>()
                / n as f32
        };
        let unit = cov(0, 0);
        assert!(unit > 0.0);
        for i in 0..4 {
            for j in 0..4 {
                let c = cov(i, j) / unit;
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 0.05, "cov[{i}][{j}] = {c} × cov[0][0]");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        w.save(&path).unwrap();
        let back = Whitening::load(&path).unwrap();
        assert_eq!(back.apply(&rows[..16]), w.apply(&rows[..16]));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(Whitening::load(&path).is_err());
    }
}
