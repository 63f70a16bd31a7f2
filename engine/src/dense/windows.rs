//! Finding candidates by their windows: every stored image contributes square windows (7
//! sizes, a quarter-side stride) of its [`WINDOW_SIDE`] px grey image, each resampled to 8×8 and
//! normalised, and each of a query's probes looks up its nearest windows ([`DenseIndex`]). The
//! index and the images' fine planes are a persisted derived structure under `indexes/dense/`
//! (docs/SEARCH.md, stage 6).

use std::collections::HashMap;

use imgvec_storage::{Snapshot, Store};

use super::plane::{windows_of, Cut, StoredPlane};
use super::{DenseQuery, Plane, CELL_DIMS, FINE_SIDE, WINDOW_SIDE};
use crate::derived::artifact::{Body, Kind};
use crate::error::{Error, IndexError, Result};
use crate::index::knn::{Knn, KnnShape, EXACT_FACTORY};
use crate::index::rows::KnnRows;
use crate::search::context::shard_budget;

/// Windows nearest to each probe that are looked at.
const WINDOW_NEIGHBOURS: usize = 1024;
/// Rows the looked-at windows rate best that are measured exactly.
const MEASURED_ROWS: usize = 512;
/// The window index: exact below 100,000 windows (about 270 images), then IVF-PQ with 8-byte
/// codes (16 bytes a window with its id, against 256 + 4 as floats).
const WINDOW_SHAPE: KnnShape = KnnShape {
    dims: CELL_DIMS,
    exact_below: 100_000,
    code_bytes: 8,
    max_lists: 4096,
};
const WINDOW_NPROBE: usize = 16;
/// Windows an image gives, roughly (to size the index before cutting them).
const WINDOWS_PER_IMAGE: usize = 370;
/// Images whose windows train the quantisers.
const TRAIN_IMAGES: usize = 256;
/// Images decoded per batch while building.
const BUILD_BATCH: usize = 1024;

/// A row made from its thumbnail: its fine plane and windows.
struct Made {
    fine: Plane,
    windows: Vec<f32>,
}

/// Every stored image's windows, for finding candidates (record per row: its fine plane, empty
/// without a thumbnail): a persisted derived structure (`derived::slot`), loaded by every handle
/// and kept current by the writer.
pub type DenseIndex = KnnRows<StoredPlane>;

/// One query's best window match per stored row measured: (NCC, rotation in degrees).
pub struct WindowScores {
    best: HashMap<u64, (f32, f32)>,
}

impl WindowScores {
    /// Up to `n` accepted images whose best window matches best, best first, with that
    /// window's score.
    pub fn top(&self, n: usize, accept: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        let mut ranked: Vec<(f32, u64)> = self
            .best
            .iter()
            .filter(|(&id, _)| accept(id))
            .map(|(&id, s)| (s.0, id))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.into_iter().take(n).map(|(s, id)| (id, s)).collect()
    }

    /// A row's best window match, when it was scored (see [`DenseIndex::scores`]).
    pub fn get(&self, id: u64) -> Option<(f32, f32)> {
        self.best.get(&id).copied()
    }
}

/// Rows made from their thumbnails, by id (`None`: no thumbnail).
type MadeRows = Vec<(u64, Option<Made>)>;

/// The rows `ids` made from their thumbnails on every core, in order.
fn make_rows(store: &Store, ids: &[u64]) -> Result<MadeRows> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::parallel::map(ids, threads, |&id| Ok((id, row_of(store, id)?)))
        .into_iter()
        .collect()
}

impl KnnRows<StoredPlane> {
    /// Indexes every live row of `snap` (from the stored thumbnails), a batch at a time.
    pub fn build(store: &Store, snap: &Snapshot) -> Result<DenseIndex> {
        let ids = snap.live_ids_above(0);
        let factory = WINDOW_SHAPE.factory(ids.len() * WINDOWS_PER_IMAGE);
        let mut sample = Vec::new();
        if factory != EXACT_FACTORY {
            let step = (ids.len() / TRAIN_IMAGES).max(1);
            let picked: Vec<u64> = ids.iter().step_by(step).copied().collect();
            for (_, made) in make_rows(store, &picked)? {
                sample.extend(made.map(|m| m.windows).unwrap_or_default());
            }
        }
        let knn = Knn::train(CELL_DIMS, &factory, &sample)?;
        let mut index = DenseIndex::new(knn, &WINDOW_SHAPE, ids.len());
        drop(sample);
        for batch in ids.chunks(BUILD_BATCH) {
            index.add_rows(make_rows(store, batch)?)?;
        }
        index.watermark = snap.max_id();
        Ok(index)
    }

    fn add_rows(&mut self, rows: MadeRows) -> Result<()> {
        let mut ids = Vec::new();
        let mut windows = Vec::new();
        for (id, made) in rows {
            let plane = match made {
                Some(m) => {
                    ids.extend(std::iter::repeat_n(id, m.windows.len() / CELL_DIMS));
                    windows.extend(m.windows);
                    StoredPlane::of(&m.fine)
                }
                None => StoredPlane::default(),
            };
            self.rows.insert(id, plane);
        }
        Ok(self.knn.add(&ids, &windows)?)
    }

    /// Adds the live rows above the watermark; returns the rows added.
    pub fn catch_up(&mut self, store: &Store, snap: &Snapshot) -> Result<usize> {
        let top = snap.max_id();
        if top <= self.watermark {
            return Ok(0);
        }
        let ids = snap.live_ids_above(self.watermark);
        for batch in ids.chunks(BUILD_BATCH) {
            self.add_rows(make_rows(store, batch)?)?;
        }
        self.watermark = top;
        Ok(ids.len())
    }

    /// The rows whose windows best match the query's probes. Each probe's nearest windows in
    /// the index name rows. An exact index's similarities are the rows' scores. An IVF-PQ
    /// index's 8-byte codes rate a window only roughly (among millions of windows the right
    /// one is often rated below hundreds of others), so the `accept`ed rows they rate best, at
    /// least `wanted` of them and `MEASURED_ROWS` (a shard holding `share` of its collection's
    /// rows: its part of them, `shard_budget`), and the rows of `also` they name are measured
    /// exactly ([`Self::measure`], on `threads` threads); only those are scored.
    pub fn scores(
        &self,
        query: &DenseQuery,
        wanted: usize,
        also: &[u64],
        accept: &dyn Fn(u64) -> bool,
        threads: usize,
        share: f64,
    ) -> Result<WindowScores> {
        let rows = shard_budget(MEASURED_ROWS, share).max(wanted);
        self.measured_scores(query, rows, also, accept, threads)
    }

    /// [`Self::scores`], measuring the best `rows` the codes rate.
    fn measured_scores(
        &self,
        query: &DenseQuery,
        rows: usize,
        also: &[u64],
        accept: &dyn Fn(u64) -> bool,
        threads: usize,
    ) -> Result<WindowScores> {
        let mut rated: HashMap<u64, (f32, f32)> = HashMap::new();
        let k = WINDOW_NEIGHBOURS.min(self.knn.len());
        if !query.probe_angles.is_empty() && k > 0 {
            let found = self.knn.search(&query.probes, k, WINDOW_NPROBE)?;
            for (row, &angle) in found.chunks_exact(k).zip(&query.probe_angles) {
                for &(id, s) in row.iter().flatten() {
                    let b = rated.entry(id).or_insert((f32::MIN, 0.0));
                    if s > b.0 {
                        *b = (s, angle);
                    }
                }
            }
        }
        if self.knn.is_exact() {
            return Ok(WindowScores { best: rated });
        }
        let mut ranked: Vec<(f32, u64)> = rated
            .iter()
            .filter(|(&id, _)| accept(id))
            .map(|(&id, s)| (s.0, id))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut picked: Vec<u64> = ranked.iter().take(rows).map(|r| r.1).collect();
        let mut seen: std::collections::HashSet<u64> = picked.iter().copied().collect();
        picked.extend(
            also.iter()
                .filter(|id| rated.contains_key(id) && seen.insert(**id)),
        );
        let measured = crate::parallel::map(&picked, threads, |&id| self.measure(query, id));
        let best = picked
            .into_iter()
            .zip(measured)
            .filter_map(|(id, m)| Some((id, m?)))
            .collect();
        Ok(WindowScores { best })
    }

    /// The best NCC of the query's probes with `id`'s windows cut from its fine plane, and the
    /// turn of that probe (`None` without a plane or a window).
    fn measure(&self, query: &DenseQuery, id: u64) -> Option<(f32, f32)> {
        let cut = Cut::of(&self.plane(id)?);
        let (n, p) = (cut.centres.len(), query.probe_angles.len());
        if p == 0 || query.probes.len() != p * CELL_DIMS {
            return None;
        }
        let mut dots = vec![0f32; n * p];
        // The probes have zero mean, so a window's mean drops out of the product.
        crate::exact::matmul_nt_here(&cut.cells, n, &query.probes, p, CELL_DIMS, &mut dots);
        let mut best: Option<(f32, f32)> = None;
        for (row, &(_, norm)) in dots.chunks_exact(p).zip(&cut.centres) {
            if norm == 0.0 {
                continue;
            }
            for (&dot, &angle) in row.iter().zip(&query.probe_angles) {
                let ncc = dot / norm;
                if best.is_none_or(|b| ncc > b.0) {
                    best = Some((ncc, angle));
                }
            }
        }
        best
    }

    /// The fine plane of a stored row.
    pub fn plane(&self, id: u64) -> Option<Plane> {
        self.rows
            .get(&id)
            .filter(|p| !p.data.is_empty())
            .map(StoredPlane::plane)
    }
}

impl crate::derived::slot::Persisted for DenseIndex {
    const KIND: Kind = Kind::Dense;
    const NAME: &'static str = "dense";

    fn build(store: &Store, snap: &Snapshot) -> Result<Self> {
        DenseIndex::build(store, snap)
    }

    fn catch_up(&mut self, store: &Store, snap: &Snapshot) -> Result<usize> {
        DenseIndex::catch_up(self, store, snap)
    }

    /// The common layout (`index::rows`) with each row's plane: width and height (u16 each),
    /// then width × height grey bytes.
    fn to_bytes(&self) -> std::result::Result<Vec<u8>, IndexError> {
        KnnRows::encode(self, |p, out| {
            out.extend_from_slice(&p.w.to_le_bytes());
            out.extend_from_slice(&p.h.to_le_bytes());
            out.extend_from_slice(&p.data);
        })
    }

    fn from_body(body: Body) -> std::result::Result<Self, IndexError> {
        KnnRows::decode(&body, CELL_DIMS, |r| {
            let dims = r.u32()?;
            let (w, h) = ((dims & 0xffff) as u16, (dims >> 16) as u16);
            let data = r.take(w as usize * h as usize)?.to_vec();
            Ok(StoredPlane { w, h, data })
        })
    }
}

/// A row's fine plane and windows, from its thumbnail (`None` without one).
fn row_of(store: &Store, id: u64) -> Result<Option<Made>> {
    let Some(bytes) = store.thumbnail(id)? else {
        return Ok(None);
    };
    let img = imgvec_ingest::decode(&bytes)
        .map_err(|e| Error::Invalid(format!("row {id}: stored thumbnail: {e}")))?;
    Ok(Some(Made {
        fine: Plane::from_rgb(&img.rgb, FINE_SIDE),
        windows: windows_of(&Plane::from_rgb(&img.rgb, WINDOW_SIDE)),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{edited, smooth};
    use super::*;
    use image::RgbImage;

    /// Smooth pictures with blobs at scattered places (a fixed pseudo-random sequence).
    fn blob_pictures(n: usize) -> Vec<RgbImage> {
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as f32 / 65_536.0
        };
        (0..n)
            .map(|_| {
                let blobs: Vec<(f32, f32, f32)> = (0..6)
                    .map(|_| (next(), next(), 0.06 + 0.1 * next()))
                    .collect();
                smooth(320, 240, &blobs)
            })
            .collect()
    }

    /// `pictures` indexed in `knn` as rows 100, 101, ...
    fn indexed(pictures: &[RgbImage], knn: Knn) -> DenseIndex {
        let mut index = DenseIndex::new(knn, &WINDOW_SHAPE, pictures.len());
        let rows = pictures
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let made = Made {
                    fine: Plane::from_rgb(p, FINE_SIDE),
                    windows: windows_of(&Plane::from_rgb(p, WINDOW_SIDE)),
                };
                (100 + i as u64, Some(made))
            })
            .collect();
        index.add_rows(rows).unwrap();
        index
    }

    #[test]
    fn windows_find_the_source_among_others() {
        let pictures = blob_pictures(12);
        let index = indexed(
            &pictures,
            Knn::train(CELL_DIMS, EXACT_FACTORY, &[]).unwrap(),
        );
        let query = DenseQuery::new(&edited(&pictures[7], (50, 30, 220, 170), -6.0));
        let scores = index.scores(&query, 3, &[], &|_| true, 2, 1.0).unwrap();
        let found = scores.top(3, &|_| true);
        assert_eq!(found[0].0, 107, "{found:?}");
        // The turn is recovered to within a probe step.
        let (best, angle) = scores.get(107).unwrap();
        assert!(
            best > 0.9 && (angle - -6.0).abs() <= 3.0,
            "{best} at {angle}°"
        );
        // Filters apply; planes are found by id.
        assert!(!scores.top(3, &|id| id != 107).iter().any(|f| f.0 == 107));
        assert_eq!(index.plane(107).map(|p| (p.w, p.h)), Some((48, 36)));
        assert!(index.plane(99).is_none());
        assert!(index.knn.len() > 12 * 100, "{} windows", index.knn.len());
        // The persisted form reads back to the same answers.
        use crate::derived::slot::Persisted;
        let back = DenseIndex::from_body(Body::copied(&index.to_bytes().unwrap())).unwrap();
        assert_eq!(
            back.scores(&query, 3, &[], &|_| true, 1, 1.0)
                .unwrap()
                .top(3, &|_| true),
            found
        );
        assert_eq!(
            back.plane(107).map(|p| p.data),
            index.plane(107).map(|p| p.data)
        );
    }

    #[test]
    fn rows_are_ranked_by_their_windows_measured_not_by_the_codes_that_found_them() {
        // Codes of 2 bytes rate a window roughly; the rows they find are measured exactly.
        let pictures = blob_pictures(12);
        let sample: Vec<f32> = pictures
            .iter()
            .flat_map(|p| windows_of(&Plane::from_rgb(p, WINDOW_SIDE)))
            .collect();
        let knn = Knn::train(CELL_DIMS, "IVF4,PQ4x4fs", &sample).unwrap();
        let index = indexed(&pictures, knn);
        let query = DenseQuery::new(&edited(&pictures[3], (40, 50, 230, 160), 9.0));
        let scores = index.scores(&query, 3, &[], &|_| true, 2, 1.0).unwrap();
        let found = scores.top(12, &|_| true);
        assert_eq!(found[0].0, 103, "{found:?}");
        let mut rated_differently = 0;
        for &(id, score) in &found {
            let measured = index.measure(&query, id).unwrap();
            assert_eq!(scores.get(id), Some(measured), "row {id}");
            assert_eq!(score, measured.0);
            // What the codes alone say of the row's best window.
            let k = index.knn.len();
            let rated = index
                .knn
                .search(&query.probes, k, WINDOW_NPROBE)
                .unwrap()
                .into_iter()
                .flatten()
                .filter(|f| f.0 == id)
                .map(|f| f.1)
                .fold(f32::MIN, f32::max);
            rated_differently += usize::from((rated - measured.0).abs() > 1e-3);
        }
        assert!(rated_differently > 0, "the codes rated every row exactly");
        // A shard holding a sliver of its collection measures its part of the budget: the rows
        // it rates best, fewer than every row found; at share 1, as one database, all of them.
        assert_eq!(found.len(), 12);
        let part = shard_budget(MEASURED_ROWS, 1e-4);
        assert!(part < 12, "{part}");
        let sliver = index.scores(&query, 3, &[], &|_| true, 2, 1e-4).unwrap();
        assert_eq!(sliver.top(12, &|_| true).len(), part);
        let same = index
            .measured_scores(&query, part, &[], &|_| true, 1)
            .unwrap();
        assert_eq!(sliver.top(12, &|_| true), same.top(12, &|_| true));
        // Filters apply before the best rated are cut; `also` rows the codes found are measured
        // wherever they are rated.
        let last = found.last().unwrap().0;
        let cut = index
            .measured_scores(&query, 2, &[], &|id| id != 103, 1)
            .unwrap();
        assert!(cut.get(103).is_none());
        assert_eq!(cut.top(12, &|_| true).len(), 2);
        let with = index
            .measured_scores(&query, 2, &[103, last, 9999], &|id| id != 103, 1)
            .unwrap();
        assert_eq!(with.get(103), index.measure(&query, 103));
        assert_eq!(with.get(last), index.measure(&query, last));
        assert!(with.get(9999).is_none());
        assert_eq!(
            with.top(12, &|_| true).len(),
            2 + 1 + usize::from(cut.get(last).is_none())
        );
        let (best, angle) = scores.get(103).unwrap();
        assert!(
            best > 0.9 && (angle - 9.0).abs() <= 3.0,
            "{best} at {angle}°"
        );
    }
}
