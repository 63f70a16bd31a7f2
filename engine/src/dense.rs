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

use image::RgbImage;

mod correlate;
mod masked;
mod plane;
mod windows;
use correlate::{correlate_row, PaddedRows};
pub use masked::align_masked;
use plane::normalised;
pub use plane::{Plane, StoredPlane};
pub use windows::DenseIndex;

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
    pub(super) fn edited(img: &RgbImage, crop: (u32, u32, u32, u32), degrees: f32) -> RgbImage {
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
