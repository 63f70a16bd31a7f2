//! Where the keypoints are: extrema of the difference-of-Gaussian scale space over their 26
//! neighbours, refined to sub-pixel and sub-scale position by a quadratic fit, without the
//! low-contrast and edge responses.
//!
//! The 26-neighbour test is done on whole planes: each DoG plane's 3×3 maximum and minimum are
//! computed once (separably, in loops the compiler vectorises) and shared by the up to three layers
//! that look at it; a pixel is an extremum when it equals the largest (or smallest) of its plane's
//! and both neighbour planes' maps. That is exactly the per-pixel scan of 26 comparisons (the
//! pixel is among the 27 values), without its unpredictable early exits.

use super::{Plane, SiftParams};

const IMG_BORDER: usize = 5;
const MAX_INTERP_STEPS: usize = 5;

/// A refined DoG extremum.
pub(super) struct Candidate {
    pub octave: usize,
    pub layer: usize,
    /// Refined position in octave pixels and refined layer.
    pub x: f32,
    pub y: f32,
    pub layer_f: f32,
    pub response: f32,
}

/// Every refined extremum of every octave's DoG planes (`octave_layers + 2` an octave).
pub(super) fn candidates(dog: &[Vec<Plane>], params: &SiftParams) -> Vec<Candidate> {
    let layers = params.octave_layers;
    let threshold = 0.5 * params.contrast_threshold / layers as f32;
    let mut out = Vec::new();
    for (octave, planes) in dog.iter().enumerate() {
        let (w, h) = (planes[0].w, planes[0].h);
        if w <= 2 * IMG_BORDER || h <= 2 * IMG_BORDER {
            continue;
        }
        let maps: Vec<Neighbourhood> = planes.iter().map(Neighbourhood::of).collect();
        for layer in 1..=layers {
            let near = [&maps[layer - 1], &maps[layer], &maps[layer + 1]];
            extrema_in_layer(planes, layer, &near, threshold, |x, y| {
                out.extend(refine(planes, octave, layer, x, y, params));
            });
        }
    }
    out
}

/// The largest and smallest value of each interior pixel's 3×3 neighbourhood (itself included).
struct Neighbourhood {
    max: Vec<f32>,
    min: Vec<f32>,
}

/// `a.max(b)` without the NaN handling (DoG values are finite): one instruction a lane.
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn smaller(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

impl Neighbourhood {
    fn of(p: &Plane) -> Neighbourhood {
        let (w, h) = (p.w, p.h);
        // Across each row (columns 1..w-1), then down the columns of that (rows 1..h-1).
        let mut row_max = vec![0f32; w * h];
        let mut row_min = vec![0f32; w * h];
        for y in 0..h {
            let src = &p.data[y * w..(y + 1) * w];
            let (left, centre, right) = (&src[..w - 2], &src[1..w - 1], &src[2..]);
            let inner = y * w + 1..(y + 1) * w - 1;
            pick3(&mut row_max[inner.clone()], left, centre, right, larger);
            pick3(&mut row_min[inner], left, centre, right, smaller);
        }
        let mut max = vec![0f32; w * h];
        let mut min = vec![0f32; w * h];
        for y in 1..h - 1 {
            let (up, mid, down) = (
                (y - 1) * w..y * w,
                y * w..(y + 1) * w,
                (y + 1) * w..(y + 2) * w,
            );
            let (mx, mn) = (&row_max, &row_min);
            pick3(
                &mut max[mid.clone()],
                &mx[up.clone()],
                &mx[mid.clone()],
                &mx[down.clone()],
                larger,
            );
            pick3(&mut min[mid.clone()], &mn[up], &mn[mid], &mn[down], smaller);
        }
        Neighbourhood { max, min }
    }
}

/// `out[i] = pick(pick(a[i], b[i]), c[i])`: one step of a 3×3 maximum or minimum, over rows that
/// the compiler vectorises.
#[inline(always)]
fn pick3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], pick: impl Fn(f32, f32) -> f32) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = pick(pick(a, b), c);
    }
}

/// Calls `found(x, y)` for every pixel of DoG plane `layer` (inside the border) whose magnitude
/// is above `threshold` and which is the largest (positive) or smallest (negative) of the 27
/// values around it in its own and both neighbouring planes; `near` holds those three planes'
/// neighbourhood maps.
fn extrema_in_layer(
    dog: &[Plane],
    layer: usize,
    near: &[&Neighbourhood; 3],
    threshold: f32,
    mut found: impl FnMut(usize, usize),
) {
    let cur = &dog[layer];
    let w = cur.w;
    for y in IMG_BORDER..cur.h - IMG_BORDER {
        let row = y * w + IMG_BORDER..(y + 1) * w - IMG_BORDER;
        let values = &cur.data[row.clone()];
        let [a, b, c] = near.map(|n| (&n.max[row.clone()], &n.min[row.clone()]));
        for (i, &v) in values.iter().enumerate() {
            if v.abs() <= threshold {
                continue;
            }
            let is_max = v > 0.0 && v >= larger(larger(a.0[i], b.0[i]), c.0[i]);
            let is_min = v < 0.0 && v <= smaller(smaller(a.1[i], b.1[i]), c.1[i]);
            if is_max || is_min {
                found(IMG_BORDER + i, y);
            }
        }
    }
}

/// Quadratic refinement of an extremum in (x, y, layer); rejects low contrast and edges.
fn refine(
    dog: &[Plane],
    octave: usize,
    layer: usize,
    x: usize,
    y: usize,
    params: &SiftParams,
) -> Option<Candidate> {
    let layers = params.octave_layers;
    let (mut x, mut y, mut l) = (x as isize, y as isize, layer as isize);
    let (w, h) = (dog[0].w as isize, dog[0].h as isize);
    let border = IMG_BORDER as isize;
    let mut offset = [0f32; 3];
    let mut grad = [0f32; 3];
    let mut converged = false;
    for _ in 0..MAX_INTERP_STEPS {
        let (c, p, n) = (&dog[l as usize], &dog[l as usize - 1], &dog[l as usize + 1]);
        let at = |img: &Plane, dx: isize, dy: isize| img.at((x + dx) as usize, (y + dy) as usize);
        let v2 = at(c, 0, 0) * 2.0;
        grad = [
            (at(c, 1, 0) - at(c, -1, 0)) * 0.5,
            (at(c, 0, 1) - at(c, 0, -1)) * 0.5,
            (at(n, 0, 0) - at(p, 0, 0)) * 0.5,
        ];
        let dxx = at(c, 1, 0) + at(c, -1, 0) - v2;
        let dyy = at(c, 0, 1) + at(c, 0, -1) - v2;
        let dss = at(n, 0, 0) + at(p, 0, 0) - v2;
        let dxy = (at(c, 1, 1) - at(c, -1, 1) - at(c, 1, -1) + at(c, -1, -1)) * 0.25;
        let dxs = (at(n, 1, 0) - at(n, -1, 0) - at(p, 1, 0) + at(p, -1, 0)) * 0.25;
        let dys = (at(n, 0, 1) - at(n, 0, -1) - at(p, 0, 1) + at(p, 0, -1)) * 0.25;
        let hess = [[dxx, dxy, dxs], [dxy, dyy, dys], [dxs, dys, dss]];
        let sol = solve3(hess, grad)?;
        offset = [-sol[0], -sol[1], -sol[2]];
        if offset.iter().all(|v| v.abs() < 0.5) {
            converged = true;
            break;
        }
        if offset.iter().any(|v| v.abs() > 1e6) {
            return None;
        }
        x += offset[0].round() as isize;
        y += offset[1].round() as isize;
        l += offset[2].round() as isize;
        if l < 1
            || l > layers as isize
            || x < border
            || x >= w - border
            || y < border
            || y >= h - border
        {
            return None;
        }
    }
    if !converged {
        return None;
    }
    let c = &dog[l as usize];
    let (xu, yu) = (x as usize, y as usize);
    let t = grad[0] * offset[0] + grad[1] * offset[1] + grad[2] * offset[2];
    let contrast = c.at(xu, yu) + 0.5 * t;
    if contrast.abs() * (layers as f32) < params.contrast_threshold {
        return None;
    }
    let v2 = c.at(xu, yu) * 2.0;
    let dxx = c.at(xu + 1, yu) + c.at(xu - 1, yu) - v2;
    let dyy = c.at(xu, yu + 1) + c.at(xu, yu - 1) - v2;
    let dxy = (c.at(xu + 1, yu + 1) - c.at(xu - 1, yu + 1) - c.at(xu + 1, yu - 1)
        + c.at(xu - 1, yu - 1))
        * 0.25;
    let tr = dxx + dyy;
    let det = dxx * dyy - dxy * dxy;
    let e = params.edge_threshold;
    if det <= 0.0 || tr * tr * e >= (e + 1.0) * (e + 1.0) * det {
        return None;
    }
    Some(Candidate {
        octave,
        layer: l as usize,
        x: x as f32 + offset[0],
        y: y as f32 + offset[1],
        layer_f: l as f32 + offset[2],
        response: contrast.abs(),
    })
}

/// Solves the symmetric 3×3 system `a · x = b` by Cramer's rule; `None` when singular.
fn solve3(a: [[f32; 3]; 3], b: [f32; 3]) -> Option<[f32; 3]> {
    let det3 = |m: [[f32; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det3(a);
    if d.abs() < 1e-12 {
        return None;
    }
    let mut x = [0f32; 3];
    for (col, xi) in x.iter_mut().enumerate() {
        let mut m = a;
        for row in 0..3 {
            m[row][col] = b[row];
        }
        *xi = det3(m) / d;
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference test: 26 comparisons, the pixel at least as large (small) as each.
    fn brute_force(dog: &[Plane], layer: usize, threshold: f32) -> Vec<(usize, usize)> {
        let (w, h) = (dog[0].w, dog[0].h);
        let mut out = Vec::new();
        for y in IMG_BORDER..h - IMG_BORDER {
            for x in IMG_BORDER..w - IMG_BORDER {
                let v = dog[layer].at(x, y);
                let around = (layer - 1..=layer + 1).flat_map(|l| {
                    (y - 1..=y + 1).flat_map(move |yy| (x - 1..=x + 1).map(move |xx| (l, xx, yy)))
                });
                let (mut is_max, mut is_min) = (v > 0.0, v < 0.0);
                for (l, xx, yy) in around {
                    is_max &= v >= dog[l].at(xx, yy);
                    is_min &= v <= dog[l].at(xx, yy);
                }
                if v.abs() > threshold && (is_max || is_min) {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn neighbourhood_maps_find_exactly_the_26_neighbour_extrema() {
        // Coarse random levels make ties (plateaus, equal neighbours across planes) common;
        // sizes include the smallest plane with an interior and odd widths.
        let mut seed = 12345u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % 9) as f32 / 8.0 - 0.5
        };
        for (w, h) in [(11, 11), (17, 12), (40, 33), (64, 64)] {
            let dog: Vec<Plane> = (0..5)
                .map(|_| Plane {
                    w,
                    h,
                    data: (0..w * h).map(|_| next()).collect(),
                })
                .collect();
            let maps: Vec<Neighbourhood> = dog.iter().map(Neighbourhood::of).collect();
            for layer in 1..=3 {
                for threshold in [0.0, 0.2] {
                    let near = [&maps[layer - 1], &maps[layer], &maps[layer + 1]];
                    let mut found = Vec::new();
                    extrema_in_layer(&dog, layer, &near, threshold, |x, y| found.push((x, y)));
                    let want = brute_force(&dog, layer, threshold);
                    assert_eq!(found, want, "{w}x{h} layer {layer} threshold {threshold}");
                    if (w, h) == (64, 64) {
                        assert!(!want.is_empty(), "the table must exercise extrema");
                    }
                }
            }
        }
    }
}
