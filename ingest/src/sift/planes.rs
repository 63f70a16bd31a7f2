//! The images SIFT works on: grey planes in [0, 1] (contrast-stretched, halved, doubled,
//! subtracted), their separable Gaussian blur with OpenCV's reflect-101 borders, and per-level
//! gradient magnitudes and orientations (OpenCV's polynomial `fastAtan2`).

use image::GrayImage;

use crate::with_avx2;

/// A single-channel f32 image, row-major.
#[derive(Clone)]
pub(super) struct Plane {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Plane {
    #[inline]
    pub(super) fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.w + x]
    }

    /// Every second pixel in both directions.
    pub(super) fn half(&self) -> Plane {
        let (w, h) = (self.w / 2, self.h / 2);
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            let row = &self.data[2 * y * self.w..];
            data.extend((0..w).map(|x| row[2 * x]));
        }
        Plane { w, h, data }
    }

    /// Bilinear doubling (pixel centres aligned as OpenCV's `resize` does).
    pub(super) fn double(&self) -> Plane {
        let (w, h) = (self.w * 2, self.h * 2);
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            let sy = ((y as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (self.h - 1) as f32);
            let y0 = sy.floor() as usize;
            let y1 = (y0 + 1).min(self.h - 1);
            let fy = sy - y0 as f32;
            for x in 0..w {
                let sx = ((x as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (self.w - 1) as f32);
                let x0 = sx.floor() as usize;
                let x1 = (x0 + 1).min(self.w - 1);
                let fx = sx - x0 as f32;
                let top = self.at(x0, y0) * (1.0 - fx) + self.at(x1, y0) * fx;
                let bottom = self.at(x0, y1) * (1.0 - fx) + self.at(x1, y1) * fx;
                data.push(top * (1.0 - fy) + bottom * fy);
            }
        }
        Plane { w, h, data }
    }

    pub(super) fn sub(&self, other: &Plane) -> Plane {
        Plane {
            w: self.w,
            h: self.h,
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }
}

/// Gradient magnitude and direction (radians, y up, in [0, 2π)) of every interior pixel of a
/// level; computed once per level that has keypoints, shared by their orientation histograms and
/// descriptors.
pub(super) struct Gradients {
    pub w: usize,
    pub h: usize,
    pub mag: Vec<f32>,
    pub ori: Vec<f32>,
}

impl Gradients {
    with_avx2! {
        pub(super) fn of(img: &Plane) -> Gradients {
            let (w, h) = (img.w, img.h);
            let mut mag = vec![0f32; w * h];
            let mut ori = vec![0f32; w * h];
            for y in 1..h.saturating_sub(1) {
                let (up, row, down) = (
                    &img.data[(y - 1) * w..y * w],
                    &img.data[y * w..(y + 1) * w],
                    &img.data[(y + 1) * w..(y + 2) * w],
                );
                let (mag, ori) = (&mut mag[y * w..(y + 1) * w], &mut ori[y * w..(y + 1) * w]);
                for x in 1..w - 1 {
                    let gx = row[x + 1] - row[x - 1];
                    let gy = up[x] - down[x];
                    mag[x] = (gx * gx + gy * gy).sqrt();
                    ori[x] = fast_atan2(gy, gx);
                }
            }
            Gradients { w, h, mag, ori }
        }
    }
}

/// atan2(y, x) in [0, 2π) by OpenCV's 7th-order polynomial (the `fastAtan2` its SIFT uses; error
/// below 1e-4 rad), written without branches so that a row of gradients vectorises.
#[inline(always)]
pub(super) fn fast_atan2(y: f32, x: f32) -> f32 {
    use std::f32::consts::{FRAC_PI_2, PI, TAU};
    const P1: f32 = 0.999_787_84;
    const P3: f32 = -0.325_808_4;
    const P5: f32 = 0.155_578_65;
    const P7: f32 = -0.044_326_556;
    let (ax, ay) = (x.abs(), y.abs());
    let steep = ay > ax;
    let c = if steep {
        ax / (ay + f32::MIN_POSITIVE)
    } else {
        ay / (ax + f32::MIN_POSITIVE)
    };
    let c2 = c * c;
    let a = (((P7 * c2 + P5) * c2 + P3) * c2 + P1) * c;
    let a = if steep { FRAC_PI_2 - a } else { a };
    let a = if x < 0.0 { PI - a } else { a };
    if y < 0.0 {
        TAU - a
    } else {
        a
    }
}

/// Reflect-101 border (`gfedcb|abcdefgh|gfedcba`), as OpenCV's default.
#[inline]
pub(super) fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let mut i = i;
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * n - 2 - i;
        } else {
            return i as usize;
        }
    }
}

pub(super) fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = ((sigma * 4.0).round() as usize).max(1);
    let mut k: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// `exp(scale · k²)` for k in 0..=radius: one axis of a separable Gaussian window.
pub(super) fn gaussian_weights(radius: isize, scale: f32) -> Vec<f32> {
    (0..=radius.max(0))
        .map(|k| ((k * k) as f32 * scale).exp())
        .collect()
}

with_avx2! {
    /// Separable Gaussian blur with reflect-101 borders. The kernel is symmetric, so each pass
    /// adds the two samples a tap apart first and multiplies once: `r + 1` products a pixel, not
    /// `2r + 1`.
    pub(super) fn blur(src: &Plane, sigma: f32) -> Plane {
        let k = gaussian_kernel(sigma);
        let r = k.len() / 2;
        let (w, h) = (src.w, src.h);
        // Horizontal pass over a padded copy of each row.
        // Outputs grow row by row (no zero-filling of what every row overwrites).
        let mut tmp = Vec::with_capacity(w * h);
        let mut padded = vec![0f32; w + 2 * r];
        for y in 0..h {
            let row = &src.data[y * w..(y + 1) * w];
            padded[r..r + w].copy_from_slice(row);
            for i in (0..r).chain(r + w..w + 2 * r) {
                padded[i] = row[reflect(i as isize - r as isize, w)];
            }
            symmetric_taps(&mut tmp, w, &k, |t| &padded[t..t + w]);
        }
        // Vertical pass, row by row so the inner loop runs along contiguous memory.
        let mut data = Vec::with_capacity(w * h);
        let mut rows = vec![0usize; k.len()];
        for y in 0..h {
            for (t, row) in rows.iter_mut().enumerate() {
                *row = reflect(y as isize + t as isize - r as isize, h) * w;
            }
            symmetric_taps(&mut data, w, &k, |t| &tmp[rows[t]..rows[t] + w]);
        }
        Plane { w, h, data }
    }
}

/// Outputs `symmetric_taps` sums in registers before storing them: each tap then costs two
/// loads a lane, not also a load and a store of the running sum.
const BLOCK: usize = 32;

/// Appends the `n` values `Σ_t k[t] · tap(t)` to `out`, for a symmetric kernel `k` (odd length,
/// `k[t] = k[2r - t]`), where `tap(t)` is the input row shifted by `t - r` (at least `n` long).
/// Each value is `k[r]·tap(r)` plus `k[t]·(tap(t) + tap(2r − t))` for t = 0, 1, …, added in that
/// order.
#[inline(always)]
fn symmetric_taps<'a>(out: &mut Vec<f32>, n: usize, k: &[f32], tap: impl Fn(usize) -> &'a [f32]) {
    let r = k.len() / 2;
    let mut i = 0;
    while i + BLOCK <= n {
        out.extend_from_slice(&taps_block::<BLOCK>(i, k, r, &tap));
        i += BLOCK;
    }
    for j in i..n {
        out.push(taps_block::<1>(j, k, r, &tap)[0]);
    }
}

/// `symmetric_taps`'s values `at..at + B`.
#[inline(always)]
fn taps_block<'a, const B: usize>(
    at: usize,
    k: &[f32],
    r: usize,
    tap: &impl Fn(usize) -> &'a [f32],
) -> [f32; B] {
    let centre = &tap(r)[at..at + B];
    let mut acc = [0f32; B];
    for (a, &c) in acc.iter_mut().zip(centre) {
        *a = k[r] * c;
    }
    for (t, &kt) in k.iter().enumerate().take(r) {
        let (a, b) = (&tap(t)[at..at + B], &tap(2 * r - t)[at..at + B]);
        for ((s, &x), &y) in acc.iter_mut().zip(a).zip(b) {
            *s += kt * (x + y);
        }
    }
    acc
}

/// Grey levels in [0, 1], stretched so that the 1st and 99th percentiles of the pixels brighter
/// than black padding map to 0 and 1.
pub(super) fn stretched_grey(grey: &GrayImage) -> Plane {
    let mut hist = [0u64; 256];
    for p in grey.pixels() {
        hist[p.0[0] as usize] += 1;
    }
    let content: u64 = hist[9..].iter().sum();
    let (from, total) = if content > 100 {
        (9, content)
    } else {
        (0, grey.len() as u64)
    };
    let percentile = |q: f64| {
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (v, &c) in hist.iter().enumerate().skip(from) {
            seen += c;
            if seen >= target.max(1) {
                return v as f32;
            }
        }
        255.0
    };
    let lo = percentile(0.01);
    let hi = percentile(0.99);
    let range = (hi - lo).max(16.0);
    Plane {
        w: grey.width() as usize,
        h: grey.height() as usize,
        data: grey
            .pixels()
            .map(|p| ((p.0[0] as f32 - lo) / range).clamp(0.0, 1.0))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_atan2_is_atan2_in_zero_to_two_pi() {
        // Every octant, the axes and the origin (where OpenCV's version returns 0 too).
        for (y, x) in [
            (0.0f32, 1.0f32),
            (1.0, 0.0),
            (0.0, -1.0),
            (-1.0, 0.0),
            (0.3, 0.9),
            (0.9, 0.3),
            (0.9, -0.3),
            (0.3, -0.9),
            (-0.3, -0.9),
            (-0.9, -0.3),
            (-0.9, 0.3),
            (-0.3, 0.9),
            (1e-6, 2e-6),
        ] {
            let want = y.atan2(x).rem_euclid(std::f32::consts::TAU);
            let got = fast_atan2(y, x);
            assert!(
                (0.0..std::f32::consts::TAU).contains(&got),
                "{y} {x}: {got}"
            );
            assert!((got - want).abs() < 1e-4, "{y} {x}: {got} vs {want}");
        }
        assert_eq!(fast_atan2(0.0, 0.0), 0.0);
    }

    #[test]
    fn blur_is_the_direct_convolution_with_reflected_borders() {
        // Planes narrower than the kernel reflect more than once; 1×1 has no neighbours at all.
        for (w, h) in [(1, 1), (3, 5), (20, 7), (41, 30)] {
            let src = Plane {
                w,
                h,
                data: (0..w * h).map(|i| ((i * 37) % 11) as f32 / 10.0).collect(),
            };
            for sigma in [0.8f32, 1.6, 3.1] {
                let k = gaussian_kernel(sigma);
                let r = (k.len() / 2) as isize;
                let got = blur(&src, sigma);
                for y in 0..h {
                    for x in 0..w {
                        let mut want = 0f32;
                        for (i, ki) in k.iter().enumerate() {
                            for (j, kj) in k.iter().enumerate() {
                                let sx = reflect(x as isize + j as isize - r, w);
                                let sy = reflect(y as isize + i as isize - r, h);
                                want += ki * kj * src.at(sx, sy);
                            }
                        }
                        let d = (got.at(x, y) - want).abs();
                        assert!(d < 1e-5, "{w}x{h} sigma {sigma} at ({x}, {y}): {d}");
                    }
                }
            }
        }
    }
}
