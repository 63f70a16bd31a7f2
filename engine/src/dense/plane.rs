//! Grey planes and what is cut from them: cells (each the mean of 3×3 bilinear samples),
//! turned or unturned rectangles resampled into cells (the query's probes and templates), and
//! the windows every stored image is indexed by and a search measures.

use image::RgbImage;

use super::{CELL, CELL_DIMS, FRACTIONS, MIN_VARIANCE};

/// A grey image, row-major, values 0–255.
#[derive(Debug, Clone)]
pub struct Plane {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Plane {
    /// `rgb` resampled (antialiased) to `long` px on its long side, as luma.
    pub fn from_rgb(rgb: &RgbImage, long: usize) -> Plane {
        let (w, h) = imgvec_ingest::scaled_to_long_side(rgb.dimensions(), long as u32);
        let small = imgvec_ingest::resize(rgb, w, h);
        Plane {
            w: w as usize,
            h: h as usize,
            data: small
                .pixels()
                .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
                .collect(),
        }
    }

    /// Mean grey level, pixels darker than the black fill of a turn (< 8) left out.
    pub fn mean(&self) -> f32 {
        let (sum, n) = self
            .data
            .iter()
            .filter(|&&v| v >= 8.0)
            .fold((0f64, 0usize), |(s, n), &v| (s + v as f64, n + 1));
        if n == 0 {
            0.0
        } else {
            (sum / n as f64) as f32
        }
    }

    /// Bilinear sample at (x, y) in pixel units (pixel centres at +0.5), clamped to the edge.
    fn sample(&self, x: f32, y: f32) -> f32 {
        self.sample_at(Tap::at(x, self.w), Tap::at(y, self.h))
    }

    /// The bilinear sample where the taps along x and y say.
    fn sample_at(&self, x: Tap, y: Tap) -> f32 {
        let at = |xx: usize, yy: usize| self.data[yy * self.w + xx];
        let top = at(x.near, y.near) * (1.0 - x.far_weight) + at(x.far, y.near) * x.far_weight;
        let bottom = at(x.near, y.far) * (1.0 - x.far_weight) + at(x.far, y.far) * x.far_weight;
        top * (1.0 - y.far_weight) + bottom * y.far_weight
    }

    /// The rectangle of `out_w`×`out_h` cells centred at (cx, cy), `rw`×`rh` px, turned by
    /// `angle` radians; each cell the mean of 3×3 bilinear samples over its footprint.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resample(
        &self,
        cx: f32,
        cy: f32,
        rw: f32,
        rh: f32,
        angle: f32,
        out_w: usize,
        out_h: usize,
    ) -> Vec<f32> {
        // A sample's offset from the centre along one axis, before turning.
        let offset = |cell: usize, sub: usize, step: f32, len: f32| {
            (cell as f32 + (sub as f32 + 0.5) / SUB as f32) * step - len / 2.0
        };
        let (sx, sy) = (rw / out_w as f32, rh / out_h as f32);
        let mut out = Vec::with_capacity(out_w * out_h);
        if angle == 0.0 {
            // Unturned: the taps of each sample column and row are worked out once; the same
            // samples as the turned formula at angle 0 gives.
            let xs: Vec<Tap> = (0..out_w * SUB)
                .map(|k| Tap::at(cx + offset(k / SUB, k % SUB, sx, rw), self.w))
                .collect();
            let ys: Vec<Tap> = (0..out_h * SUB)
                .map(|k| Tap::at(cy + offset(k / SUB, k % SUB, sy, rh), self.h))
                .collect();
            return self.cells(&xs, &ys);
        }
        let (sin, cos) = angle.sin_cos();
        for v in 0..out_h {
            for u in 0..out_w {
                let mut acc = 0.0;
                for j in 0..SUB {
                    for i in 0..SUB {
                        let x = offset(u, i, sx, rw);
                        let y = offset(v, j, sy, rh);
                        acc += self.sample(cx + x * cos - y * sin, cy + x * sin + y * cos);
                    }
                }
                out.push(acc / (SUB * SUB) as f32);
            }
        }
        out
    }

    /// Cells, row-major, each the mean of the `SUB`×`SUB` bilinear samples its taps say: `xs`
    /// holds `SUB` taps per column of cells, `ys` `SUB` per row. Bilinear sampling is
    /// separable: each row of cells first sums its `SUB` rows of samples down the plane, at
    /// every x (whole plane rows at a time, which vectorises), then across, column by column.
    fn cells(&self, xs: &[Tap], ys: &[Tap]) -> Vec<f32> {
        let w = self.w;
        let mut down = vec![0f32; w];
        let mut out = Vec::with_capacity(xs.len() / SUB * (ys.len() / SUB));
        for row in ys.chunks_exact(SUB) {
            down.fill(0.0);
            for y in row {
                let near = &self.data[y.near * w..(y.near + 1) * w];
                let far = &self.data[y.far * w..(y.far + 1) * w];
                let (wn, wf) = (1.0 - y.far_weight, y.far_weight);
                for ((d, &n), &f) in down.iter_mut().zip(near).zip(far) {
                    *d += n * wn + f * wf;
                }
            }
            for column in xs.chunks_exact(SUB) {
                let mut sum = 0.0;
                for x in column {
                    sum += down[x.near] * (1.0 - x.far_weight) + down[x.far] * x.far_weight;
                }
                out.push(sum / (SUB * SUB) as f32);
            }
        }
        out
    }

    /// A grid of `nx`×`ny` square cells `cell` px wide from the top left corner, as
    /// [`Plane::resample`] makes them (row-major).
    fn grid(&self, cell: f32, nx: usize, ny: usize) -> Vec<f32> {
        let taps = |n: usize, len: usize| -> Vec<Tap> {
            (0..n * SUB)
                .map(|k| {
                    let at = ((k / SUB) as f32 + ((k % SUB) as f32 + 0.5) / SUB as f32) * cell;
                    Tap::at(at, len)
                })
                .collect()
        };
        self.cells(&taps(nx, self.w), &taps(ny, self.h))
    }
}

/// Bilinear samples per cell along each axis (a cell is their mean).
const SUB: usize = 3;

/// Where a bilinear sample reads along one axis: the pixel at or before the coordinate, the
/// next one (clamped to the edge) and the next one's weight.
#[derive(Debug, Clone, Copy)]
struct Tap {
    near: usize,
    far: usize,
    far_weight: f32,
}

impl Tap {
    /// The taps of coordinate `p` (pixel centres at +0.5) on an axis of `len` pixels.
    fn at(p: f32, len: usize) -> Tap {
        let p = (p - 0.5).clamp(0.0, (len - 1) as f32);
        let near = p as usize;
        Tap {
            near,
            far: (near + 1).min(len - 1),
            far_weight: p - near as f32,
        }
    }
}

/// Zero mean, unit norm; `None` for a flat patch.
pub(super) fn normalised(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let (mean, norm) = centred(&v);
    if norm == 0.0 {
        return None;
    }
    v.iter_mut().for_each(|x| *x = (*x - mean) / norm);
    Some(v)
}

/// The mean of `v` and its norm about the mean; the norm is 0 for a flat patch (variance
/// under `MIN_VARIANCE`).
fn centred(v: &[f32]) -> (f32, f32) {
    let n = v.len() as f32;
    let mean = lanes(v, |x| x) / n;
    let ss = lanes(v, |x| (x - mean) * (x - mean));
    (
        mean,
        if ss / n < MIN_VARIANCE {
            0.0
        } else {
            ss.sqrt()
        },
    )
}

/// The sum of `f` over `v`, in eight running sums, so the loop vectorises.
fn lanes(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for chunk in chunks {
        for i in 0..8 {
            acc[i] += f(chunk[i]);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// The normalised windows of a `WINDOW_SIDE` plane, as stored (flat ones left out).
pub(super) fn windows_of(plane: &Plane) -> Vec<f32> {
    let cut = Cut::of(plane);
    let mut out = Vec::with_capacity(cut.cells.len());
    for (cells, &(mean, norm)) in cut.cells.chunks_exact(CELL_DIMS).zip(&cut.centres) {
        if norm > 0.0 {
            out.extend(cells.iter().map(|v| (v - mean) / norm));
        }
    }
    out
}

/// Every window of a plane, as cut: `CELL_DIMS` cells each (not normalised), and each one's
/// mean and norm about it (`centred`: norm 0 for a flat window). A window's stride is a
/// quarter of its side, two of its cells, so the windows of one size are blocks of one grid of
/// cells, made once.
pub(super) struct Cut {
    pub cells: Vec<f32>,
    pub centres: Vec<(f32, f32)>,
}

impl Cut {
    pub fn of(plane: &Plane) -> Cut {
        let (w, h) = (plane.w as f32, plane.h as f32);
        let short = w.min(h);
        let mut cut = Cut {
            cells: Vec::new(),
            centres: Vec::new(),
        };
        for f in FRACTIONS {
            let side = f * short;
            let step = side / 4.0;
            let nx = ((w - side) / step + 1e-4).floor() as usize + 1;
            let ny = ((h - side) / step + 1e-4).floor() as usize + 1;
            let (gx, gy) = (2 * (nx - 1) + CELL, 2 * (ny - 1) + CELL);
            let grid = plane.grid(side / CELL as f32, gx, gy);
            for yi in 0..ny {
                for xi in 0..nx {
                    let at = cut.cells.len();
                    for r in 0..CELL {
                        let start = (2 * yi + r) * gx + 2 * xi;
                        cut.cells.extend_from_slice(&grid[start..start + CELL]);
                    }
                    cut.centres.push(centred(&cut.cells[at..]));
                }
            }
        }
        cut
    }
}

/// A fine plane as stored: grey levels rounded to bytes.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StoredPlane {
    pub(super) w: u16,
    pub(super) h: u16,
    pub(super) data: Vec<u8>,
}

impl StoredPlane {
    pub(super) fn of(p: &Plane) -> StoredPlane {
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

    pub(super) fn plane(&self) -> Plane {
        Plane {
            w: self.w as usize,
            h: self.h as usize,
            data: self.data.iter().map(|&v| v as f32).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense::tests::smooth;
    use crate::dense::FINE_SIDE;
    use crate::dense::WINDOW_SIDE;

    #[test]
    fn unturned_cells_are_the_samples_the_turning_formula_takes_at_angle_zero() {
        let img = smooth(130, 90, &[(0.3, 0.4, 0.12), (0.7, 0.2, 0.25)]);
        let plane = Plane::from_rgb(&img, WINDOW_SIDE);
        // Inside, and reaching past the edges (clamped samples).
        for (cx, cy, rw, rh) in [(40.3, 30.7, 33.1, 27.9), (5.0, 70.0, 60.0, 45.5)] {
            let (sin, cos) = 0f32.sin_cos();
            let (sx, sy) = (rw / CELL as f32, rh / CELL as f32);
            let mut want = Vec::new();
            for v in 0..CELL {
                for u in 0..CELL {
                    let mut acc = 0.0;
                    for j in 0..3 {
                        for i in 0..3 {
                            let x = (u as f32 + (i as f32 + 0.5) / 3.0) * sx - rw / 2.0;
                            let y = (v as f32 + (j as f32 + 0.5) / 3.0) * sy - rh / 2.0;
                            acc += plane.sample(cx + x * cos - y * sin, cy + x * sin + y * cos);
                        }
                    }
                    want.push(acc / 9.0);
                }
            }
            // The same samples, summed in another order (separably).
            let got = plane.resample(cx, cy, rw, rh, 0.0, CELL, CELL);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-3, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn windows_are_the_cells_each_window_would_resample_on_its_own() {
        let img = smooth(
            130,
            90,
            &[(0.3, 0.4, 0.12), (0.7, 0.2, 0.25), (0.5, 0.8, 0.1)],
        );
        for side in [WINDOW_SIDE, FINE_SIDE] {
            let plane = Plane::from_rgb(&img, side);
            let (w, h) = (plane.w as f32, plane.h as f32);
            let mut want = Vec::new();
            for f in FRACTIONS {
                let side = f * w.min(h);
                let step = side / 4.0;
                let nx = ((w - side) / step + 1e-4).floor() as usize + 1;
                let ny = ((h - side) / step + 1e-4).floor() as usize + 1;
                for yi in 0..ny {
                    for xi in 0..nx {
                        let (cx, cy) =
                            (xi as f32 * step + side / 2.0, yi as f32 * step + side / 2.0);
                        let cells = plane.resample(cx, cy, side, side, 0.0, CELL, CELL);
                        want.extend(normalised(cells).unwrap_or_default());
                    }
                }
            }
            let got = windows_of(&plane);
            assert_eq!(got.len(), want.len(), "{side} px");
            assert!(
                got.len() / CELL_DIMS > 100,
                "{} windows",
                got.len() / CELL_DIMS
            );
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{side} px: {g} vs {w}");
            }
        }
    }

    #[test]
    fn mean_leaves_out_the_black_fill() {
        let mut data = vec![100.0; 12];
        data[..4].fill(0.0);
        data[4] = 160.0;
        let plane = Plane { w: 4, h: 3, data };
        assert!((plane.mean() - 107.5).abs() < 1e-4, "{}", plane.mean());
        let black = Plane {
            w: 2,
            h: 1,
            data: vec![0.0, 3.0],
        };
        assert_eq!(black.mean(), 0.0);
    }
}
