//! SIFT keypoints (Lowe 2004) with RootSIFT descriptors (Arandjelović & Zisserman 2012).
//!
//! The detector follows the reference design as OpenCV implements it: a Gaussian scale space with
//! `octave_layers` intervals per octave (the first octave on the image doubled when it is small),
//! difference-of-Gaussian extrema over 26 neighbours, sub-pixel/sub-scale refinement by a
//! quadratic fit, low-contrast and edge rejection, a 36-bin gradient orientation histogram
//! (every peak within 80% of the highest gives a keypoint) and 4×4×8 descriptors with trilinear
//! interpolation, clipped at 0.2. Two deliberate departures, both for photographs that are dark,
//! washed out or blurred: the grey image is contrast-stretched (1st–99th percentile of the pixels
//! that are not black padding) before detection, and the contrast threshold is low, with only the
//! `max_keypoints` strongest kept. Descriptors are RootSIFT: L1-normalised, square-rooted, so
//! that dot products between them are Hellinger kernels and they are unit L2 vectors.
//!
//! `ingest/tests/integration/sift_oracle.rs` checks it against OpenCV's SIFT on real photos
//! warped by known homographies.

use image::RgbImage;
use serde::{Deserialize, Serialize};

mod extrema;
mod packed;
mod planes;
pub use packed::{keypoints_in, pack, PackedFeatures, LOCAL_MAGIC, LOCAL_VERSION, QUANT, QUANT4};
use planes::{blur, gaussian_weights, stretched_grey, Gradients, Plane};

use crate::with_avx2;

/// Values in one descriptor.
pub const DESCRIPTOR_LEN: usize = 128;
const HIST_BINS: usize = 36;
const ORI_PEAK_RATIO: f32 = 0.8;
const ORI_SIG_FCTR: f32 = 1.5;
const ORI_RADIUS: f32 = 3.0 * ORI_SIG_FCTR;
const DESCR_WIDTH: usize = 4;
const DESCR_BINS: usize = 8;
const DESCR_SCL_FCTR: f32 = 3.0;
const DESCR_MAG_THR: f32 = 0.2;
/// Blur assumed in the input image.
const INIT_SIGMA: f32 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SiftParams {
    /// Images are downscaled (with antialiasing) so that the long side is at most this.
    pub max_side: u32,
    /// The strongest keypoints (by DoG contrast) kept per image.
    pub max_keypoints: usize,
    /// Minimum DoG contrast, on the stretched image in [0, 1] (OpenCV's default is 0.04).
    pub contrast_threshold: f32,
    /// Maximum ratio of principal curvatures (Lowe's r).
    pub edge_threshold: f32,
    pub octave_layers: usize,
    /// Blur of the first scale of each octave.
    pub sigma: f32,
    /// Images whose long side (after `max_side`) is below this are doubled for the first
    /// octave, which finds the small-scale keypoints of small images.
    pub upscale_below: u32,
}

impl Default for SiftParams {
    fn default() -> Self {
        SiftParams {
            max_side: 640,
            max_keypoints: 1000,
            contrast_threshold: 0.01,
            edge_threshold: 10.0,
            octave_layers: 3,
            sigma: 1.6,
            upscale_below: 480,
        }
    }
}

/// A keypoint in the coordinates of the frame SIFT ran on (`LocalFeatures::width/height`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    /// Scale (the Gaussian sigma of its level) in frame pixels.
    pub scale: f32,
    /// Dominant gradient orientation in radians, in [0, 2π), measured with y pointing up.
    pub angle: f32,
    /// |DoG| at the refined extremum.
    pub response: f32,
}

/// Keypoints and their RootSIFT descriptors (`DESCRIPTOR_LEN` values each, unit L2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalFeatures {
    /// Size of the frame the coordinates are in (the image after `max_side`).
    pub width: u32,
    pub height: u32,
    pub keypoints: Vec<Keypoint>,
    pub descriptors: Vec<f32>,
}

impl LocalFeatures {
    pub fn len(&self) -> usize {
        self.keypoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keypoints.is_empty()
    }

    pub fn descriptor(&self, i: usize) -> &[f32] {
        &self.descriptors[i * DESCRIPTOR_LEN..(i + 1) * DESCRIPTOR_LEN]
    }
}

/// Detects SIFT keypoints in `rgb` and describes them with RootSIFT.
pub fn extract(rgb: &RgbImage, params: &SiftParams) -> LocalFeatures {
    let (w, h) = crate::preprocess::within_long_side(rgb.dimensions(), params.max_side);
    let grey = crate::preprocess::luma(rgb);
    let grey = match grey.dimensions() == (w, h) {
        true => grey,
        false => crate::preprocess::resize_grey(&grey, w, h),
    };
    let (width, height) = grey.dimensions();
    let mut out = LocalFeatures {
        width,
        height,
        ..Default::default()
    };
    if width.min(height) < 16 {
        return out;
    }
    let upscale = width.max(height) < params.upscale_below;
    let mut base = stretched_grey(&grey);
    let (first_scale, init) = if upscale {
        base = base.double();
        (0.5f32, INIT_SIGMA * 2.0)
    } else {
        (1.0, INIT_SIGMA)
    };
    let diff = (params.sigma * params.sigma - init * init).max(0.01).sqrt();
    let base = blur(&base, diff);
    let octaves = ((base.w.min(base.h) as f32).log2().floor() as i32 - 3).max(1) as usize;

    // Gaussian pyramid: octave_layers + 3 images per octave.
    let layers = params.octave_layers;
    let k = 2f32.powf(1.0 / layers as f32);
    let mut sig = vec![params.sigma; layers + 3];
    for (i, s) in sig.iter_mut().enumerate().skip(1) {
        let prev = params.sigma * k.powi(i as i32 - 1);
        let total = prev * k;
        *s = (total * total - prev * prev).sqrt();
    }
    let mut gauss: Vec<Vec<Plane>> = Vec::with_capacity(octaves);
    for o in 0..octaves {
        let mut level = Vec::with_capacity(layers + 3);
        level.push(if o == 0 {
            base.clone()
        } else {
            gauss[o - 1][layers].half()
        });
        for s in sig.iter().skip(1) {
            let next = blur(level.last().expect("first level pushed"), *s);
            level.push(next);
        }
        gauss.push(level);
    }
    let dog: Vec<Vec<Plane>> = gauss
        .iter()
        .map(|level| level.windows(2).map(|p| p[1].sub(&p[0])).collect())
        .collect();

    let mut candidates = extrema::candidates(&dog, params);
    // Strongest first; orientations can add keypoints, so trim after them too.
    candidates.sort_by(|a, b| b.response.total_cmp(&a.response));
    candidates.truncate(params.max_keypoints);

    let mut hist = [0f32; HIST_BINS];
    // One descriptor row's scratch, reused by every keypoint.
    let mut bins = RowBins::default();
    let mut gradients: std::collections::HashMap<(usize, usize), Gradients> =
        std::collections::HashMap::new();
    for c in &candidates {
        let img = gradients
            .entry((c.octave, c.layer))
            .or_insert_with(|| Gradients::of(&gauss[c.octave][c.layer]));
        let scl_octv = params.sigma * 2f32.powf(c.layer_f / layers as f32);
        let (px, py) = (c.x.round() as isize, c.y.round() as isize);
        let peaks = orientation_peaks(img, px, py, scl_octv, &mut hist);
        let unit = 2f32.powi(c.octave as i32) * first_scale;
        for angle in peaks {
            if out.keypoints.len() >= params.max_keypoints {
                break;
            }
            let desc = describe(img, c.x, c.y, angle, scl_octv, &mut bins);
            out.keypoints.push(Keypoint {
                x: c.x * unit,
                y: c.y * unit,
                scale: scl_octv * unit,
                angle,
                response: c.response,
            });
            out.descriptors.extend_from_slice(&desc);
        }
    }
    out
}

/// Peaks of the smoothed 36-bin gradient orientation histogram around (x, y), in radians.
fn orientation_peaks(
    img: &Gradients,
    x: isize,
    y: isize,
    scl: f32,
    hist: &mut [f32; HIST_BINS],
) -> Vec<f32> {
    let sigma = ORI_SIG_FCTR * scl;
    let radius = (ORI_RADIUS * scl).round() as isize;
    // The Gaussian weight is separable: exp(a(dx² + dy²)) = exp(a dx²) exp(a dy²).
    let weights = gaussian_weights(radius, -1.0 / (2.0 * sigma * sigma));
    let to_bin = HIST_BINS as f32 / std::f32::consts::TAU;
    let mut raw = [0f32; HIST_BINS];
    let rows = (y - radius).max(1)..=(y + radius).min(img.h as isize - 2);
    let cols = (x - radius).max(1)..=(x + radius).min(img.w as isize - 2);
    for yy in rows {
        let wy = weights[(yy - y).unsigned_abs()];
        let row = yy as usize * img.w;
        for xx in cols.clone() {
            let at = row + xx as usize;
            let weight = wy * weights[(xx - x).unsigned_abs()];
            // Orientations are in [0, 2π): rounding is adding a half and truncating.
            let bin = ((img.ori[at] * to_bin + 0.5) as usize) % HIST_BINS;
            raw[bin] += weight * img.mag[at];
        }
    }
    let n = HIST_BINS;
    for i in 0..n {
        let at = |d: isize| raw[(i as isize + d).rem_euclid(n as isize) as usize];
        hist[i] = (at(-2) + at(2)) * (1.0 / 16.0)
            + (at(-1) + at(1)) * (4.0 / 16.0)
            + at(0) * (6.0 / 16.0);
    }
    let max = hist.iter().cloned().fold(0f32, f32::max);
    let mut peaks = Vec::new();
    if max <= 0.0 {
        return peaks;
    }
    for i in 0..n {
        let l = hist[(i + n - 1) % n];
        let r = hist[(i + 1) % n];
        let v = hist[i];
        if v > l && v > r && v >= ORI_PEAK_RATIO * max {
            let bin = i as f32 + 0.5 * (l - r) / (l - 2.0 * v + r);
            let bin = bin.rem_euclid(n as f32);
            peaks.push(bin / n as f32 * std::f32::consts::TAU);
        }
    }
    peaks
}

with_avx2! {
    /// The 4×4×8 SIFT descriptor at (x, y) with orientation `angle`, as RootSIFT.
    ///
    /// Row by row of the window: first every pixel's place in the histogram and the eight
    /// amounts it adds (trilinear in row, column and orientation), in a loop the compiler
    /// vectorises; then the additions, pixel by pixel in the order the reference adds them.
    fn describe(
        img: &Gradients,
        x: f32,
        y: f32,
        angle: f32,
        scl: f32,
        bins: &mut RowBins,
    ) -> [f32; DESCRIPTOR_LEN] {
        let d = DESCR_WIDTH;
        let n = DESCR_BINS;
        let (px, py) = (x.round() as isize, y.round() as isize);
        let hist_width = DESCR_SCL_FCTR * scl;
        let radius =
            (hist_width * std::f32::consts::SQRT_2 * (d as f32 + 1.0) * 0.5).round() as isize;
        let radius = radius.min(((img.w * img.w + img.h * img.h) as f32).sqrt() as isize);
        let (cos_t, sin_t) = (angle.cos() / hist_width, angle.sin() / hist_width);
        let exp_scale = -1.0 / (d as f32 * d as f32 * 0.5);
        let mut hist = [0f32; HIST_LEN];
        // The rotation keeps lengths, so the Gaussian weight of (j, i) is separable in j and i.
        let weights = gaussian_weights(radius, exp_scale / (hist_width * hist_width));
        // The column weights as one run from j = -radius to j = radius.
        let across: Vec<f32> = (-radius..=radius).map(|j| weights[j.unsigned_abs()]).collect();
        let rows = (py - radius).max(1)..=(py + radius).min(img.h as isize - 2);
        let cols = (px - radius).max(1)..=(px + radius).min(img.w as isize - 2);
        // Half of the square around the keypoint lies outside the rotated window: each row only
        // visits the columns that can fall inside it (one spare column a side; `RowBins::fill`
        // still decides).
        let reach = d as f32 / 2.0 + 0.5;
        for r in rows {
            let i = r - py;
            let (lo, hi) = window_columns(i as f32, cos_t, sin_t, reach);
            let from = (*cols.start()).max(px + lo);
            let to = (*cols.end()).min(px + hi);
            if from > to {
                continue;
            }
            let len = (to - from + 1) as usize;
            let at = r as usize * img.w + from as usize;
            let window = Window {
                first_j: (from - px) as f32,
                i: i as f32,
                cos_t,
                sin_t,
                angle,
                row_weight: weights[i.unsigned_abs()],
            };
            let start = (from - px + radius) as usize;
            bins.fill(
                &window,
                &img.mag[at..at + len],
                &img.ori[at..at + len],
                &across[start..start + len],
            );
            bins.add_to(&mut hist);
        }
        let mut desc = [0f32; DESCRIPTOR_LEN];
        for i in 0..d {
            for j in 0..d {
                let cell = (i + 1) * ROW_STRIDE + (j + 1) * CELL_STRIDE;
                hist[cell] += hist[cell + n];
                hist[cell + 1] += hist[cell + n + 1];
                desc[(i * d + j) * n..(i * d + j + 1) * n].copy_from_slice(&hist[cell..cell + n]);
            }
        }
        // Lowe's normalisation: unit length, clip large gradients, renormalise; then RootSIFT.
        let norm = desc.iter().map(|v| v * v).sum::<f32>().sqrt();
        let clip = DESCR_MAG_THR * norm;
        desc.iter_mut().for_each(|v| *v = v.min(clip));
        let l1: f32 = desc.iter().sum();
        if l1 > 0.0 {
            desc.iter_mut().for_each(|v| *v = (*v / l1).sqrt());
        }
        desc
    }
}

/// The descriptor's histogram: (4 + 2) × (4 + 2) cells of 8 + 2 orientation bins, one spare a
/// side in each direction so that trilinear spreading never needs a bounds test.
const HIST_LEN: usize = (DESCR_WIDTH + 2) * ROW_STRIDE;
/// The histogram's step from one cell to the next in a row, and from one row to the next.
const CELL_STRIDE: usize = DESCR_BINS + 2;
const ROW_STRIDE: usize = (DESCR_WIDTH + 2) * CELL_STRIDE;

/// One row of a descriptor window: `i` rows from the keypoint, its first column `first_j`
/// columns from it.
struct Window {
    first_j: f32,
    i: f32,
    /// The keypoint's orientation, and its cosine and sine over the histogram cell width.
    cos_t: f32,
    sin_t: f32,
    angle: f32,
    /// The Gaussian weight of the row.
    row_weight: f32,
}

/// A window row's pixels made ready for the histogram: for each, whether it lies inside the
/// window, the histogram index of its first bin and the eight amounts it adds there (pairs of
/// orientation bins at cell offsets (0, 0), (0, 1), (1, 0), (1, 1) in rows and columns).
#[derive(Default)]
struct RowBins {
    inside: Vec<bool>,
    /// Whole numbers, as floats.
    first: Vec<f32>,
    amounts: [Vec<f32>; 8],
}

impl RowBins {
    /// Computes every pixel of the row: gradient magnitudes `mag`, orientations `ori` and column
    /// weights `across`, all of the row's length.
    #[inline(always)]
    fn fill(&mut self, win: &Window, mag: &[f32], ori: &[f32], across: &[f32]) {
        let (d, n) = (DESCR_WIDTH as f32, DESCR_BINS);
        let (stride_c, stride_r) = (CELL_STRIDE as f32, ROW_STRIDE as f32);
        let bins_per_rad = n as f32 / std::f32::consts::TAU;
        let len = mag.len();
        self.inside.resize(len, false);
        self.first.resize(len, 0.0);
        for a in &mut self.amounts {
            a.resize(len, 0.0);
        }
        let (inside, first) = (&mut self.inside[..len], &mut self.first[..len]);
        let [a0, a1, a2, a3, a4, a5, a6, a7] = &mut self.amounts;
        let (a0, a1, a2, a3) = (
            &mut a0[..len],
            &mut a1[..len],
            &mut a2[..len],
            &mut a3[..len],
        );
        let (a4, a5, a6, a7) = (
            &mut a4[..len],
            &mut a5[..len],
            &mut a6[..len],
            &mut a7[..len],
        );
        let (ori, across) = (&ori[..len], &across[..len]);
        for k in 0..len {
            let j = win.first_j + k as f32;
            let c_rot = j * win.cos_t - win.i * win.sin_t;
            let r_rot = j * win.sin_t + win.i * win.cos_t;
            let rbin = r_rot + d / 2.0 - 0.5;
            let cbin = c_rot + d / 2.0 - 0.5;
            inside[k] = rbin > -1.0 && rbin < d && cbin > -1.0 && cbin < d;
            let m = mag[k] * win.row_weight * across[k];
            let o = ori[k] - win.angle;
            let o = if o < 0.0 {
                o + std::f32::consts::TAU
            } else {
                o
            };
            let obin = (o * bins_per_rad).max(0.0);
            // Inside the window rbin, cbin > -1 and obin >= 0: flooring is truncating (after a
            // shift of one). Outside, the values are never used. Whole numbers stay floats here
            // (exact, and truncation is one instruction a lane where float-to-integer
            // conversions with Rust's saturation are many); `add_to` converts the index.
            let (r1, c1, o0) = ((rbin + 1.0).trunc(), (cbin + 1.0).trunc(), obin.trunc());
            let (fr, fc, fo) = (rbin - (r1 - 1.0), cbin - (c1 - 1.0), obin - o0);
            // obin reaches n only by rounding: that is bin 0 again.
            let o0 = if o0 >= n as f32 { o0 - n as f32 } else { o0 };
            first[k] = r1 * stride_r + c1 * stride_c + o0;
            let (top, bottom) = (m * (1.0 - fr), m * fr);
            let corners = [top * (1.0 - fc), top * fc, bottom * (1.0 - fc), bottom * fc];
            a0[k] = corners[0] * (1.0 - fo);
            a1[k] = corners[0] * fo;
            a2[k] = corners[1] * (1.0 - fo);
            a3[k] = corners[1] * fo;
            a4[k] = corners[2] * (1.0 - fo);
            a5[k] = corners[2] * fo;
            a6[k] = corners[3] * (1.0 - fo);
            a7[k] = corners[3] * fo;
        }
    }

    /// Adds the row's pixels that lie inside the window to `hist`, in column order.
    #[inline(always)]
    fn add_to(&self, hist: &mut [f32; HIST_LEN]) {
        let (stride_c, stride_r) = (CELL_STRIDE, ROW_STRIDE);
        let a = &self.amounts;
        for (k, (&inside, &first)) in self.inside.iter().zip(&self.first).enumerate() {
            if !inside {
                continue;
            }
            let b = first as usize;
            for (corner, offset) in [0, stride_c, stride_r, stride_r + stride_c]
                .into_iter()
                .enumerate()
            {
                hist[b + offset] += a[2 * corner][k];
                hist[b + offset + 1] += a[2 * corner + 1][k];
            }
        }
    }
}

/// The column offsets `j` (from the keypoint) of row offset `i` whose rotated position
/// `(j·cos − i·sin, j·sin + i·cos)` can lie strictly inside `(-reach, reach)²`, widened by one
/// column a side so rounding never drops one; an empty range when none can.
fn window_columns(i: f32, cos_t: f32, sin_t: f32, reach: f32) -> (isize, isize) {
    let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
    // c_rot = j·cos − i·sin and r_rot = j·sin + i·cos, each within (−reach, reach).
    for (a, b) in [(cos_t, -i * sin_t), (sin_t, i * cos_t)] {
        if a.abs() < 1e-9 {
            if b.abs() >= reach {
                return (1, 0);
            }
            continue;
        }
        let (p, q) = ((-reach - b) / a, (reach - b) / a);
        lo = lo.max(p.min(q));
        hi = hi.min(p.max(q));
    }
    if lo > hi {
        return (1, 0);
    }
    (lo.floor() as isize - 1, hi.ceil() as isize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops;

    fn textured(w: u32, h: u32) -> RgbImage {
        // Deterministic blobs and edges of several sizes.
        RgbImage::from_fn(w, h, |x, y| {
            let (xf, yf) = (x as f32, y as f32);
            let a = ((xf * 0.11).sin() * (yf * 0.07).cos() * 80.0) as i32;
            let b = (((xf - 60.0).powi(2) + (yf - 50.0).powi(2)).sqrt() * 0.3).sin() * 60.0;
            let c = if (x / 23 + y / 17) % 3 == 0 { 50 } else { 0 };
            let v = (110 + a + b as i32 + c).clamp(0, 255) as u8;
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn window_columns_hold_every_column_inside_the_rotated_window() {
        // Angles on and off the axes, window widths of small and large keypoints.
        for hist_width in [1.3f32, 4.8, 12.0] {
            for step in 0..40 {
                let angle = step as f32 * std::f32::consts::TAU / 40.0 + 0.013 * (step % 3) as f32;
                let (cos_t, sin_t) = (angle.cos() / hist_width, angle.sin() / hist_width);
                let radius = (hist_width * std::f32::consts::SQRT_2 * 2.5).round() as isize + 2;
                let (mut visited, mut inside) = (0, 0);
                for i in -radius..=radius {
                    let (lo, hi) = window_columns(i as f32, cos_t, sin_t, 2.5);
                    visited += (hi - lo + 1).max(0);
                    for j in -radius..=radius {
                        let c_rot = j as f32 * cos_t - i as f32 * sin_t;
                        let r_rot = j as f32 * sin_t + i as f32 * cos_t;
                        if c_rot.abs() < 2.5 && r_rot.abs() < 2.5 {
                            assert!(lo <= j && j <= hi, "{hist_width} {angle} {i} {j}");
                            inside += 1;
                        }
                    }
                }
                // And not many more: about two spare columns a row.
                let rows = 2 * radius + 1;
                assert!(
                    visited <= inside + 5 * rows,
                    "{hist_width} {angle}: {visited} {inside}"
                );
            }
        }
    }

    #[test]
    fn finds_unit_rootsift_descriptors_inside_the_frame() {
        let img = textured(300, 200);
        let f = extract(&img, &SiftParams::default());
        assert!(f.len() > 50, "{} keypoints", f.len());
        assert!(f.len() <= 1000);
        assert_eq!(f.descriptors.len(), f.len() * DESCRIPTOR_LEN);
        for (i, k) in f.keypoints.iter().enumerate() {
            assert!(
                k.x >= 0.0 && k.x < 300.0 && k.y >= 0.0 && k.y < 200.0,
                "{k:?}"
            );
            assert!(k.scale > 0.5 && k.angle >= 0.0 && k.angle < std::f32::consts::TAU);
            let d = f.descriptor(i);
            let norm: f32 = d.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-3, "norm² {norm}");
            assert!(d.iter().all(|v| *v >= 0.0));
        }
    }

    #[test]
    fn packing_round_trips_within_quantisation() {
        let f = extract(&textured(300, 200), &SiftParams::default());
        let bytes = pack(&f);
        assert_eq!(bytes.len(), 16 + f.len() * 72);
        assert_eq!(keypoints_in(bytes.len()), Some(f.len()));
        let p = PackedFeatures::parse(&bytes).unwrap().unwrap();
        assert_eq!((p.width, p.height, p.len()), (300, 200, f.len()));
        let back = p.unpack();
        for (a, b) in f.keypoints.iter().zip(&back.keypoints) {
            assert!((a.x - b.x).abs() <= 0.125 && (a.y - b.y).abs() <= 0.125);
            assert!((a.scale - b.scale).abs() <= 1.0 / 64.0);
            let da = (a.angle - b.angle).rem_euclid(std::f32::consts::TAU);
            assert!(da.min(std::f32::consts::TAU - da) <= std::f32::consts::TAU / 512.0 + 1e-4);
        }
        for (a, b) in f.descriptors.iter().zip(&back.descriptors) {
            assert!((a.min(15.0 / QUANT4) - b).abs() <= 0.5 / QUANT4 + 1e-6);
        }
        assert!(PackedFeatures::parse(&[]).unwrap().is_none());
        assert!(PackedFeatures::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(PackedFeatures::parse(b"XX\x01\0\0\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn version_1_rows_still_read() {
        // Databases written before 4-bit descriptors hold version 1: 12 header bytes and a byte
        // a value. Made here from a version-2 row: same geometry, values widened to 8 bits.
        let f = extract(&textured(300, 200), &SiftParams::default());
        let v2 = pack(&f);
        let n = f.len();
        let mut v1 = v2[..12].to_vec();
        v1[2] = 1;
        v1.extend_from_slice(&v2[16..16 + 8 * n]);
        v1.extend(
            f.descriptors
                .iter()
                .map(|v| (v * QUANT).round().min(255.0) as u8),
        );
        assert_eq!(keypoints_in(v1.len()), Some(n));
        let p = PackedFeatures::parse(&v1).unwrap().unwrap();
        assert_eq!((p.width, p.height, p.len()), (300, 200, n));
        let p2 = PackedFeatures::parse(&v2).unwrap().unwrap();
        assert_eq!(p.unpack().keypoints, p2.unpack().keypoints);
        for (a, b) in f.descriptors.iter().zip(p.descriptors_f32()) {
            assert!((a.min(255.0 / QUANT) - b).abs() <= 0.5 / QUANT + 1e-6);
        }
        assert_eq!(
            p.first_descriptors_f32(3),
            p.descriptors_f32()[..3 * DESCRIPTOR_LEN]
        );
        // A version-1 length is never read as a version-2 one, nor the other way round.
        for k in 0..2000 {
            assert_eq!(keypoints_in(12 + 136 * k), Some(k));
            assert_eq!(keypoints_in(16 + 72 * k), Some(k));
        }
        let mut bad = v1.clone();
        bad[2] = 3;
        assert!(PackedFeatures::parse(&bad).is_err());
    }

    #[test]
    fn keypoints_follow_a_quarter_turn() {
        // A 90° turn is exact on the pixel grid: most keypoints must reappear at the turned
        // position with the same descriptor (nearest neighbour) and the angle shifted by π/2.
        let img = textured(240, 180);
        let turned = imageops::rotate90(&img);
        let p = SiftParams::default();
        let (a, b) = (extract(&img, &p), extract(&turned, &p));
        let mut found = 0;
        for (i, k) in a.keypoints.iter().enumerate() {
            // rotate90 (clockwise): (x, y) -> (h - 1 - y, x)
            let (tx, ty) = (179.0 - k.y, k.x);
            let best = (0..b.len())
                .max_by(|&u, &v| {
                    let du: f32 = a
                        .descriptor(i)
                        .iter()
                        .zip(b.descriptor(u))
                        .map(|(p, q)| p * q)
                        .sum();
                    let dv: f32 = a
                        .descriptor(i)
                        .iter()
                        .zip(b.descriptor(v))
                        .map(|(p, q)| p * q)
                        .sum();
                    du.total_cmp(&dv)
                })
                .expect("keypoints");
            let m = b.keypoints[best];
            if (m.x - tx).hypot(m.y - ty) < 2.0 {
                found += 1;
                let turn = (k.angle - m.angle).rem_euclid(std::f32::consts::TAU);
                assert!(
                    (turn - std::f32::consts::FRAC_PI_2).abs() < 0.2,
                    "clockwise quarter turn changed the angle by {turn}"
                );
            }
        }
        assert!(found * 2 > a.len(), "{found} of {} matched", a.len());
    }
}
