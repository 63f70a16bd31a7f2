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
use imgvec_storage::{OpenMode, PendingChunk, Snapshot, Store};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::exact::matmul_nt;
use crate::index::hamming::affine_of;
use crate::index::{
    live_rows, max_id, read_checked, rows_above, strided_sample, write_checked, IndexError,
    IndexOptions, Indexes,
};

const META_KEY: &str = "reduction";
pub const REDUCTION_DIR: &str = "reduction";
const MAGIC: &[u8; 8] = b"IVWHITE1";
/// Rows of the training sample (PCA on more adds little).
const SAMPLE_ROWS: usize = 65_536;

/// What a pipeline asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhiteningSpec {
    /// Output dimensions.
    pub dims: usize,
    /// Live rows needed before it is learned.
    pub min_rows: usize,
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

    fn save(&self, path: &Path) -> Result<(), IndexError> {
        let mut body = Vec::with_capacity(32 + 4 * (self.matrix.len() + self.bias.len()));
        body.extend_from_slice(MAGIC);
        for v in [self.dims_in as u64, self.dims_out as u64, self.learned_on] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.matrix.iter().chain(&self.bias) {
            body.extend_from_slice(&v.to_le_bytes());
        }
        write_checked(path, &body)
    }

    fn load(path: &Path) -> Result<Whitening, IndexError> {
        let body = read_checked(path)?;
        let bad = || IndexError::Invalid(format!("{}: not a whitening file", path.display()));
        if body.len() < 32 || &body[..8] != MAGIC {
            return Err(bad());
        }
        let word = |i: usize| u64::from_le_bytes(body[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let (dims_in, dims_out, learned_on) = (word(0) as usize, word(1) as usize, word(2));
        let floats = dims_out
            .checked_mul(dims_in)
            .and_then(|m| m.checked_add(dims_out))
            .ok_or_else(bad)?;
        if body.len() != 32 + 4 * floats {
            return Err(bad());
        }
        let values: Vec<f32> = body[32..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (matrix, bias) = values.split_at(dims_out * dims_in);
        Ok(Whitening {
            dims_in,
            dims_out,
            matrix: matrix.to_vec(),
            bias: bias.to_vec(),
            learned_on,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Published {
    generation: u64,
    file: String,
}

/// The whitened collection at one snapshot, and the indexes over it.
pub struct View {
    pub whitening: Arc<Whitening>,
    pub snapshot: Arc<Snapshot>,
    pub(crate) indexes: Arc<Indexes>,
}

struct State {
    generation: u64,
    whitening: Arc<Whitening>,
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

    fn make_state(&self, store: &Store, generation: u64, w: Whitening, saved: bool) -> State {
        let indexes = Arc::new(Indexes::derived(
            store,
            self.index_opts.clone(),
            "whitened",
            w.dims_out,
            generation,
        ));
        State {
            generation,
            whitening: Arc::new(w),
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
            match Whitening::load(&path) {
                Ok(w) if w.dims_in == dims_in && w.dims_out == self.spec.dims => {
                    *st = Some(self.make_state(store, p.generation, w, true));
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
            Some(s) => live as u64 >= 4 * s.whitening.learned_on.max(1),
        };
        if due {
            let (_, vectors) = rows_above(snap, 0, dims_in);
            let sample = strided_sample(&vectors, dims_in, SAMPLE_ROWS);
            let w = Whitening::learn(&sample, dims_in, self.spec.dims, live as u64)?;
            let generation = guard.as_ref().map_or(1, |s| s.generation + 1);
            tracing::info!(
                "{}: whitening learned on {live} rows ({dims_in} → {} dims)",
                store.dir().display(),
                self.spec.dims
            );
            *guard = Some(self.make_state(store, generation, w, false));
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
                let projected = st.whitening.apply(&vectors);
                st.watermark = last;
                st.chunks.push(Arc::new(PendingChunk {
                    ids,
                    vectors: projected,
                    dims: st.whitening.dims_out,
                    ..PendingChunk::default()
                }));
                // Few, large chunks keep lookups cheap.
                if st.chunks.len() > 8 {
                    st.chunks = vec![Arc::new(merge_chunks(&st.chunks))];
                }
            }
        }
        let view = View {
            whitening: st.whitening.clone(),
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
        st.whitening.save(&self.dir.join(&file))?;
        let published = Published {
            generation: st.generation,
            file: file.clone(),
        };
        let json =
            serde_json::to_string(&published).map_err(|e| IndexError::Invalid(e.to_string()))?;
        store
            .put_meta(META_KEY, &json)
            .map_err(|e| IndexError::Invalid(e.to_string()))?;
        st.saved = true;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy() != file {
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
    pub fn info(&self) -> Option<(u64, u64, usize, usize)> {
        self.state.lock().as_ref().map(|s| {
            (
                s.generation,
                s.whitening.learned_on,
                s.whitening.dims_in,
                s.whitening.dims_out,
            )
        })
    }
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
