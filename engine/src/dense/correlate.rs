//! Template products for dense alignment: a template's dot product with the window at every
//! position of a candidate's plane, eight neighbouring positions summed in one register.

use super::{Plane, Template};

/// Positions whose template products are summed together (one AVX2 register of floats).
const LANES: usize = 8;

/// A plane's rows, each followed by [`LANES`] zeros, so a run of `LANES` left edges can start
/// at any position of a row.
pub(super) struct PaddedRows {
    stride: usize,
    data: Vec<f32>,
}

impl PaddedRows {
    pub fn of(plane: &Plane) -> PaddedRows {
        let stride = plane.w + LANES;
        let mut data = vec![0f32; stride * plane.h];
        for (dst, src) in data
            .chunks_exact_mut(stride)
            .zip(plane.data.chunks_exact(plane.w))
        {
            dst[..plane.w].copy_from_slice(src);
        }
        PaddedRows { stride, data }
    }
}

imgvec_ingest::with_avx2! {
    /// The dot products of template `t` with the windows whose top row is `y`, for every left
    /// edge `0..out.len()` (at most the row's width − `t.w` + 1): [`LANES`] neighbouring edges at
    /// a time, each template value times a run of its row, summed in registers (in the AVX2
    /// build, the `LANES` sums are one register).
    pub(super) fn correlate_row(t: &Template, rows: &PaddedRows, y: usize, out: &mut [f32]) {
        for (x0, chunk) in (0..).step_by(LANES).zip(out.chunks_mut(LANES)) {
            let mut acc = [0f32; LANES];
            for (r, trow) in t.data.chunks_exact(t.w).enumerate() {
                // x0 + c + LANES <= (w − t.w) + (t.w − 1) + LANES < stride: inside the padded row.
                let row = &rows.data[(y + r) * rows.stride + x0..(y + r + 1) * rows.stride];
                for (c, &tv) in trow.iter().enumerate() {
                    let run: &[f32; LANES] = row[c..c + LANES].try_into().expect("LANES floats");
                    for i in 0..LANES {
                        acc[i] += tv * run[i];
                    }
                }
            }
            chunk.copy_from_slice(&acc[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlating_a_row_gives_each_positions_dot_product() {
        let value = |i: usize| ((i * 37 + 11) % 97) as f32 - 40.0;
        let plane = Plane {
            w: 13,
            h: 9,
            data: (0..13 * 9).map(value).collect(),
        };
        for (tw, th) in [(1, 1), (5, 3), (13, 9), (8, 4)] {
            let t = Template {
                angle: 0.0,
                w: tw,
                h: th,
                data: (0..tw * th).map(|i| value(i + 5) / 10.0).collect(),
                norm: 1.0,
            };
            let mut out = vec![f32::NAN; plane.w - tw + 1];
            let rows = PaddedRows::of(&plane);
            for y in 0..=plane.h - th {
                correlate_row(&t, &rows, y, &mut out);
                for (x, &got) in out.iter().enumerate() {
                    let want: f32 = (0..th)
                        .flat_map(|r| (0..tw).map(move |c| (r, c)))
                        .map(|(r, c)| t.data[r * tw + c] * plane.data[(y + r) * plane.w + x + c])
                        .sum();
                    assert!(
                        (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                        "{tw}x{th} {x},{y}"
                    );
                }
            }
        }
    }
}
