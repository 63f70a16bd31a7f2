//! Dense alignment: verification for what local features cannot verify.
//!
//! SIFT needs texture. Smooth, dark or blurred photos (skies, gradients, night scenes) give a
//! handful of keypoints, and a small, re-exposed, heavily compressed copy of one gives none that
//! match. Such a copy still has the stored image's low-frequency layout, so it is checked
//! directly: the query's grey image is aligned to the candidate's by normalised
//! cross-correlation (NCC, which ignores brightness and contrast) over a grid of similarity
//! transforms that covers the usual edits: a crop of 30–100% of the side, turned by up to
//! ±12°, anywhere in the stored image.
//!
//! - **Query side** ([`DenseQuery`]): for each hypothesised rotation the query is turned back
//!   and the largest centred rectangle that holds only image (no fill from the turn) is cut
//!   out, then resampled into templates of 7 widths up to [`FINE_SIDE`] px (the stored planes'
//!   long side). The same rectangles' centred squares, resampled to 8×8, are the *probes*.
//! - **Candidates** ([`DenseIndex`]): every stored image contributes square windows (7 sizes,
//!   a quarter-side stride) of its [`WINDOW_SIDE`] px grey image, each resampled to 8×8 and
//!   normalised (zero mean, unit norm: a dot product is their NCC). Each of a query's probes
//!   looks up its nearest windows (FAISS; exact below 100,000 windows, IVF-PQ with 8-byte codes
//!   beyond). The codes rate a window only roughly, so the images whose windows they rate best
//!   are then measured: their windows cut again from their fine planes, the same way, and
//!   correlated with the probes exactly. An image scores its best window measured. The index
//!   and the images' fine planes (as bytes) are a persisted derived structure under
//!   `indexes/dense/`, loaded by every handle and kept current by the writer's worker.
//! - **Alignment** ([`align`]): every template at every position of the candidate's
//!   [`FINE_SIDE`] px plane; the best NCC. Positions where the stored image is flat (variance
//!   under 4 grey levels²) do not count: NCC is undefined there.

use std::collections::HashMap;

use image::RgbImage;
use imgvec_storage::{Snapshot, Store};

use crate::derived::artifact::{Body, Kind};
use crate::error::{Error, IndexError, Result};
use crate::index::knn::{Knn, KnnShape, EXACT_FACTORY};
use crate::index::rows::KnnRows;

mod correlate;
mod masked;
mod plane;
use correlate::{correlate_row, PaddedRows};
pub use masked::align_masked;
pub use plane::Plane;
use plane::{normalised, windows_of, Cut};

/// Long side of the stored planes that templates are aligned on.
pub const FINE_SIDE: usize = 48;
/// Long side of the planes windows are cut from.
pub const WINDOW_SIDE: usize = 96;
/// Side of a window or probe after resampling.
const CELL: usize = 8;
const CELL_DIMS: usize = CELL * CELL;
/// Window and template sizes, as fractions of the side.
const FRACTIONS: [f32; 7] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0];
/// Rotations (degrees) probes are made for, and templates.
const PROBE_ANGLES: [f32; 9] = [-12.0, -9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0, 12.0];
const TEMPLATE_ANGLES: [f32; 5] = [-12.0, -6.0, 0.0, 6.0, 12.0];
/// The rectangle cut from a turned query is shrunk by this, to keep clear of the fill's edge.
const INNER_MARGIN: f32 = 0.94;
/// Variance (grey levels², 0–255 scale) below which a window or position is flat.
const MIN_VARIANCE: f32 = 4.0;

/// The largest rectangle of a `w`×`h` canvas that a picture turned by `angle` (and the canvas
/// grown to hold it) covers: the picture's own size, solved from the canvas's.
fn unturned_size(w: f32, h: f32, angle: f32) -> Option<(f32, f32)> {
    let (sin, cos) = (angle.abs().sin(), angle.abs().cos());
    let det = cos * cos - sin * sin;
    let iw = (w * cos - h * sin) / det;
    let ih = (h * cos - w * sin) / det;
    (iw >= 8.0 && ih >= 8.0).then_some((iw * INNER_MARGIN, ih * INNER_MARGIN))
}

/// A zero-mean template and its norm.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Template {
    /// The rotation it undoes, degrees.
    angle: f32,
    w: usize,
    h: usize,
    data: Vec<f32>,
    norm: f32,
}

/// A query made ready for dense alignment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DenseQuery {
    /// The query's grey plane ([`WINDOW_SIDE`] px on its long side), which masked templates
    /// are cut from ([`DenseQuery::masked`]).
    source: StoredPlane,
    /// Probes, `CELL_DIMS` each, normalised, and the rotation (degrees) each undoes.
    probes: Vec<f32>,
    probe_angles: Vec<f32>,
    templates: Vec<Template>,
    /// Mean grey level of the picture (pixels of the turn's black fill left out).
    pub mean: f32,
}

/// Where one template is cut from a query's plane and at what size (see [`template_cuts`]).
struct TemplateCut {
    /// The rotation it undoes, degrees.
    deg: f32,
    /// The largest unturned rectangle at that rotation, px of the query's plane.
    iw: f32,
    ih: f32,
    /// The template's size, px of a stored fine plane.
    tw: usize,
    th: usize,
}

impl TemplateCut {
    /// The cut rectangle of `plane`, centred, resampled to the template's size.
    fn resample(&self, plane: &Plane) -> Vec<f32> {
        let (cx, cy) = (plane.w as f32 / 2.0, plane.h as f32 / 2.0);
        let angle = self.deg.to_radians();
        plane.resample(cx, cy, self.iw, self.ih, angle, self.tw, self.th)
    }
}

/// The templates a `w`×`h` query plane gives: for each of [`TEMPLATE_ANGLES`], the largest
/// centred rectangle that holds only image once turned back, at the size it would have in a
/// stored plane of which it spans each of [`FRACTIONS`] of the long side.
fn template_cuts(w: f32, h: f32) -> Vec<TemplateCut> {
    let mut out = Vec::new();
    for deg in TEMPLATE_ANGLES {
        let Some((iw, ih)) = unturned_size(w, h, deg.to_radians()) else {
            continue;
        };
        for f in FRACTIONS {
            let long = f * FINE_SIDE as f32;
            let (tw, th) = if iw >= ih {
                (long, long * ih / iw)
            } else {
                (long * iw / ih, long)
            };
            let (tw, th) = (tw.round() as usize, th.round() as usize);
            if tw >= 4 && th >= 4 {
                out.push(TemplateCut {
                    deg,
                    iw,
                    ih,
                    tw,
                    th,
                });
            }
        }
    }
    out
}

impl DenseQuery {
    pub fn new(rgb: &RgbImage) -> DenseQuery {
        DenseQuery::of_plane(Plane::from_rgb(rgb, WINDOW_SIDE))
    }

    fn of_plane(plane: Plane) -> DenseQuery {
        let (w, h) = (plane.w as f32, plane.h as f32);
        let (cx, cy) = (w / 2.0, h / 2.0);
        let mut probes = Vec::new();
        let mut probe_angles = Vec::new();
        for deg in PROBE_ANGLES {
            let angle = deg.to_radians();
            let Some((iw, ih)) = unturned_size(w, h, angle) else {
                continue;
            };
            let side = iw.min(ih);
            if let Some(p) = normalised(plane.resample(cx, cy, side, side, angle, CELL, CELL)) {
                probes.extend(p);
                probe_angles.push(deg);
            }
        }
        let mut templates = Vec::new();
        for cut in template_cuts(w, h) {
            let mut data = cut.resample(&plane);
            let n = data.len() as f32;
            let mean = data.iter().sum::<f32>() / n;
            data.iter_mut().for_each(|x| *x -= mean);
            let ss: f32 = data.iter().map(|x| x * x).sum();
            if ss / n < MIN_VARIANCE {
                continue;
            }
            templates.push(Template {
                angle: cut.deg,
                w: cut.tw,
                h: cut.th,
                data,
                norm: ss.sqrt(),
            });
        }
        DenseQuery {
            probes,
            probe_angles,
            templates,
            mean: plane.mean(),
            source: StoredPlane::of(&plane),
        }
    }

    /// Whether the query is shaped as [`DenseQuery::new`] makes one (for one received as
    /// bytes): a probe per angle, each template as many values as its size, none empty.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.probes.len() != self.probe_angles.len() * CELL_DIMS {
            return Err(format!(
                "{} dense probe values for {} angles",
                self.probes.len(),
                self.probe_angles.len()
            ));
        }
        match self
            .templates
            .iter()
            .find(|t| t.w == 0 || t.h == 0 || t.data.len() != t.w * t.h || !t.norm.is_finite())
        {
            Some(t) => Err(format!(
                "a {}×{} dense template holds {} values",
                t.w,
                t.h,
                t.data.len()
            )),
            None if self.source.data.len() != self.source.w as usize * self.source.h as usize => {
                Err(format!(
                    "a {}×{} dense plane holds {} values",
                    self.source.w,
                    self.source.h,
                    self.source.data.len()
                ))
            }
            None => Ok(()),
        }
    }
}

/// The best NCC of the query's templates over `plane` (−1 when none fits or all is flat).
/// With a `hint` (the rotation, degrees, of the query's best window match in this image) only
/// the templates of the nearest rotations are tried.
#[cfg(test)]
pub fn align(query: &DenseQuery, plane: &Plane, hint: Option<f32>) -> f32 {
    align_at(query, plane, hint).0
}

/// [`align`], and where in `plane` the best template lay: (left, top, right, bottom), each
/// divided by the plane's width or height (`None` when no template fitted).
pub fn align_at(query: &DenseQuery, plane: &Plane, hint: Option<f32>) -> (f32, Option<[f32; 4]>) {
    let (w, h) = (plane.w, plane.h);
    // Integral images of values and squares, (w+1)×(h+1), in f64: sums of squares of 0–255
    // values over thousands of pixels lose precision in f32.
    let stride = w + 1;
    let mut sum = vec![0f64; stride * (h + 1)];
    let mut sq = vec![0f64; stride * (h + 1)];
    for y in 0..h {
        let (mut rs, mut rq) = (0f64, 0f64);
        for x in 0..w {
            let v = plane.data[y * w + x] as f64;
            rs += v;
            rq += v * v;
            sum[(y + 1) * stride + x + 1] = sum[y * stride + x + 1] + rs;
            sq[(y + 1) * stride + x + 1] = sq[y * stride + x + 1] + rq;
        }
    }
    let rect = |t: &[f64], x: usize, y: usize, tw: usize, th: usize| {
        t[(y + th) * stride + x + tw] - t[y * stride + x + tw] - t[(y + th) * stride + x]
            + t[y * stride + x]
    };
    let mut best = -1f32;
    let mut at = None;
    let step = TEMPLATE_ANGLES[1] - TEMPLATE_ANGLES[0];
    let mut dots = vec![0f32; w];
    let rows = PaddedRows::of(plane);
    for t in &query.templates {
        if t.w > w || t.h > h || hint.is_some_and(|a| (t.angle - a).abs() > step) {
            continue;
        }
        let n = (t.w * t.h) as f64;
        let dots = &mut dots[..w - t.w + 1];
        for y in 0..=h - t.h {
            // The template has zero mean, so the window's mean drops out of the product.
            correlate_row(t, &rows, y, dots);
            for (x, &dot) in dots.iter().enumerate() {
                let s = rect(&sum, x, y, t.w, t.h);
                let var = rect(&sq, x, y, t.w, t.h) - s * s / n;
                if var / n < MIN_VARIANCE as f64 {
                    continue;
                }
                let ncc = dot / (t.norm * var.sqrt() as f32);
                if ncc > best {
                    best = ncc;
                    at = Some((x, y, t.w, t.h));
                }
            }
        }
    }
    (best, at.map(|a| region_of(a, w, h)))
}

/// Where a template at (x, y) of size (tw, th) lies in a `w`×`h` plane: (left, top, right,
/// bottom), fractions of its sides.
fn region_of((x, y, tw, th): (usize, usize, usize, usize), w: usize, h: usize) -> [f32; 4] {
    let (w, h) = (w as f32, h as f32);
    [
        x as f32 / w,
        y as f32 / h,
        (x + tw) as f32 / w,
        (y + th) as f32 / h,
    ]
}

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

/// A fine plane as stored: grey levels rounded to bytes.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StoredPlane {
    w: u16,
    h: u16,
    data: Vec<u8>,
}

impl StoredPlane {
    fn of(p: &Plane) -> StoredPlane {
        StoredPlane {
            w: p.w as u16,
            h: p.h as u16,
            data: p
                .data
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        }
    }

    fn plane(&self) -> Plane {
        Plane {
            w: self.w as usize,
            h: self.h as usize,
            data: self.data.iter().map(|&v| v as f32).collect(),
        }
    }
}

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
    /// least `wanted` of them and `MEASURED_ROWS`, and the rows of `also` they name are
    /// measured exactly ([`Self::measure`], on `threads` threads); only those are scored.
    pub fn scores(
        &self,
        query: &DenseQuery,
        wanted: usize,
        also: &[u64],
        accept: &dyn Fn(u64) -> bool,
        threads: usize,
    ) -> Result<WindowScores> {
        let rows = MEASURED_ROWS.max(wanted);
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
    use super::*;
    use image::Rgb;

    /// A smooth picture: soft blobs on a gradient, no texture for SIFT.
    pub(super) fn smooth(w: u32, h: u32, blobs: &[(f32, f32, f32)]) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let mut g = 60.0 + 80.0 * u;
            for &(bx, by, r) in blobs {
                let d2 = ((u - bx).powi(2) + (v - by).powi(2)) / (r * r);
                g += 110.0 * (-d2).exp();
            }
            let g = g.clamp(0.0, 255.0) as u8;
            Rgb([g, g, g.saturating_sub(20)])
        })
    }

    /// What an editor does to a copy: crop, turn with black fill, darken, halve.
    fn edited(img: &RgbImage, crop: (u32, u32, u32, u32), degrees: f32) -> RgbImage {
        let part = image::imageops::crop_imm(img, crop.0, crop.1, crop.2, crop.3).to_image();
        let (w, h) = (part.width() as f32, part.height() as f32);
        let a = degrees.to_radians();
        let (s, c) = (a.sin().abs(), a.cos());
        let (cw, ch) = ((w * c + h * s).ceil() as u32, (w * s + h * c).ceil() as u32);
        let turned = RgbImage::from_fn(cw, ch, |x, y| {
            let (dx, dy) = (
                x as f32 + 0.5 - cw as f32 / 2.0,
                y as f32 + 0.5 - ch as f32 / 2.0,
            );
            let (sx, sy) = (dx * a.cos() + dy * a.sin(), -dx * a.sin() + dy * a.cos());
            let (px, py) = (sx + w / 2.0, sy + h / 2.0);
            if px < 0.0 || py < 0.0 || px >= w || py >= h {
                return Rgb([0, 0, 0]);
            }
            let p = part.get_pixel(px as u32, py as u32);
            // Darkened and flattened: gamma 1.8 and 70% contrast.
            let f = |v: u8| ((v as f32 / 255.0).powf(1.8) * 0.7 * 255.0 + 20.0) as u8;
            Rgb([f(p[0]), f(p[1]), f(p[2])])
        });
        imgvec_ingest::resize(&turned, cw / 2, ch / 2)
    }

    #[test]
    fn unturned_size_inverts_the_canvas_growth() {
        let (w, h, a) = (300f32, 200f32, 10f32.to_radians());
        let (cw, ch) = (w * a.cos() + h * a.sin(), w * a.sin() + h * a.cos());
        let (iw, ih) = unturned_size(cw, ch, a).unwrap();
        assert!((iw / INNER_MARGIN - w).abs() < 0.01 && (ih / INNER_MARGIN - h).abs() < 0.01);
        assert_eq!(
            unturned_size(300.0, 200.0, 0.0).map(|(w, _)| w),
            Some(300.0 * INNER_MARGIN)
        );
        // A canvas too thin for the turn holds no picture.
        assert!(unturned_size(100.0, 10.0, 12f32.to_radians()).is_none());
    }

    #[test]
    fn an_edited_copy_of_a_smooth_picture_aligns_with_its_source() {
        let source = smooth(400, 300, &[(0.3, 0.4, 0.15), (0.7, 0.7, 0.1)]);
        let other = smooth(400, 300, &[(0.6, 0.3, 0.15), (0.2, 0.8, 0.12)]);
        let query = DenseQuery::new(&edited(&source, (60, 40, 280, 210), 9.0));
        let own = align(&query, &Plane::from_rgb(&source, FINE_SIDE), None);
        let stranger = align(&query, &Plane::from_rgb(&other, FINE_SIDE), None);
        // The rotation hint narrows the search without losing the match.
        let hinted = align(&query, &Plane::from_rgb(&source, FINE_SIDE), Some(9.0));
        assert!((hinted - own).abs() < 1e-6, "{hinted} vs {own}");
        assert!(own > 0.95, "own {own}");
        assert!(own > stranger + 0.03, "own {own}, stranger {stranger}");
        // A flat stored image has nothing to correlate with.
        let flat = RgbImage::from_pixel(400, 300, Rgb([90, 90, 90]));
        assert_eq!(
            align(&query, &Plane::from_rgb(&flat, FINE_SIDE), None),
            -1.0
        );
    }

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
        let scores = index.scores(&query, 3, &[], &|_| true, 2).unwrap();
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
            back.scores(&query, 3, &[], &|_| true, 1)
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
        let scores = index.scores(&query, 3, &[], &|_| true, 2).unwrap();
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

    #[test]
    fn a_query_received_misshapen_is_refused() {
        let img = smooth(200, 150, &[(0.3, 0.4, 0.15), (0.7, 0.7, 0.1)]);
        let query = DenseQuery::new(&img);
        assert_eq!(query.check(), Ok(()));
        let mut short = query.clone();
        short.probes.pop();
        assert!(short.check().unwrap_err().contains("probe values"));
        let mut template = query.clone();
        template.templates[0].data.truncate(3);
        assert!(template.check().unwrap_err().contains("template"));
        let mut empty = query.clone();
        empty.templates[0].w = 0;
        assert!(empty.check().is_err());
        let mut plane = query;
        plane.source.data.pop();
        assert!(plane.check().unwrap_err().contains("dense plane"));
    }
}
