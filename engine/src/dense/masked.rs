//! Dense alignment with parts of the query left out: the pictures pasted over it that other
//! images explain (search::residual). Each template's cells that such a part touches weigh
//! nothing, and a window's mean and variance are taken over the kept cells only.

use super::correlate::{correlate_row, PaddedRows};
use super::{region_of, template_cuts, DenseQuery, Plane, Template, MIN_VARIANCE};

/// A query's templates with parts of it left out (see [`DenseQuery::masked`]).
pub struct MaskedQuery {
    /// (template, zero-mean over its kept cells and 0 elsewhere; its mask, 1 on kept cells, with
    /// their count as its `norm`).
    templates: Vec<(Template, Template)>,
}

/// Share of a masked template's cells that must be kept.
const MIN_KEPT_CELLS: f32 = 0.4;

impl DenseQuery {
    /// The query's templates with the parts in `left_out` (left, top, right, bottom, fractions
    /// of its sides) weighing nothing: a template cell counts only when no part covers any of
    /// it. `None` when the query kept no plane or no template keeps enough texture.
    pub fn masked(&self, left_out: &[[f32; 4]]) -> Option<MaskedQuery> {
        let plane = self.source.plane();
        if plane.w == 0 || plane.h == 0 {
            return None;
        }
        let (w, h) = (plane.w as f32, plane.h as f32);
        let mask = Plane {
            w: plane.w,
            h: plane.h,
            data: (0..plane.w * plane.h)
                .map(|i| {
                    let (x, y) = (
                        ((i % plane.w) as f32 + 0.5) / w,
                        ((i / plane.w) as f32 + 0.5) / h,
                    );
                    let out = left_out
                        .iter()
                        .any(|p| x >= p[0] && x < p[2] && y >= p[1] && y < p[3]);
                    if out {
                        0.0
                    } else {
                        1.0
                    }
                })
                .collect(),
        };
        let mut templates = Vec::new();
        for cut in template_cuts(w, h) {
            let mut data = cut.resample(&plane);
            // A cell of the resampled mask below 1 overlaps a part left out.
            let keep: Vec<f32> = cut
                .resample(&mask)
                .iter()
                .map(|&m| if m > 0.999 { 1.0 } else { 0.0 })
                .collect();
            let kept: f32 = keep.iter().sum();
            if kept < MIN_KEPT_CELLS * keep.len() as f32 {
                continue;
            }
            let mean = data.iter().zip(&keep).map(|(v, k)| v * k).sum::<f32>() / kept;
            data.iter_mut()
                .zip(&keep)
                .for_each(|(v, k)| *v = (*v - mean) * k);
            let ss: f32 = data.iter().map(|x| x * x).sum();
            if ss / kept < MIN_VARIANCE {
                continue;
            }
            let template = Template {
                angle: cut.deg,
                w: cut.tw,
                h: cut.th,
                data,
                norm: ss.sqrt(),
            };
            let mask = Template {
                data: keep,
                norm: kept,
                ..template.clone()
            };
            templates.push((template, mask));
        }
        (!templates.is_empty()).then_some(MaskedQuery { templates })
    }
}

/// [`align_at`] with a masked query: at each position the NCC over the template's kept cells
/// only (the window's mean and variance taken over them too), every rotation tried.
pub fn align_masked(query: &MaskedQuery, plane: &Plane) -> (f32, Option<[f32; 4]>) {
    let (w, h) = (plane.w, plane.h);
    // Centred on the plane's mean, so the sums of squares below stay small in f32.
    let mean = plane.data.iter().sum::<f32>() / plane.data.len().max(1) as f32;
    let centred = Plane {
        w,
        h,
        data: plane.data.iter().map(|v| v - mean).collect(),
    };
    let squared = Plane {
        w,
        h,
        data: centred.data.iter().map(|v| v * v).collect(),
    };
    let (rows, rows_sq) = (PaddedRows::of(&centred), PaddedRows::of(&squared));
    let mut best = -1f32;
    let mut at = None;
    let (mut dots, mut sums, mut sqs) = (vec![0f32; w], vec![0f32; w], vec![0f32; w]);
    for (t, mask) in &query.templates {
        if t.w > w || t.h > h {
            continue;
        }
        let n = mask.norm;
        let cols = w - t.w + 1;
        for y in 0..=h - t.h {
            correlate_row(t, &rows, y, &mut dots[..cols]);
            correlate_row(mask, &rows, y, &mut sums[..cols]);
            correlate_row(mask, &rows_sq, y, &mut sqs[..cols]);
            for x in 0..cols {
                let var = sqs[x] - sums[x] * sums[x] / n;
                if var / n < MIN_VARIANCE {
                    continue;
                }
                let ncc = dots[x] / (t.norm * var.sqrt());
                if ncc > best {
                    best = ncc;
                    at = Some((x, y, t.w, t.h));
                }
            }
        }
    }
    (best, at.map(|a| region_of(a, w, h)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::smooth;
    use super::super::{align, StoredPlane, FINE_SIDE};
    use super::*;
    use image::Rgb;

    #[test]
    fn leaving_out_a_pasted_picture_aligns_the_smooth_source_beneath_it() {
        let source = smooth(400, 300, &[(0.3, 0.4, 0.15), (0.7, 0.7, 0.1)]);
        let other = smooth(400, 300, &[(0.6, 0.3, 0.15), (0.2, 0.8, 0.12)]);
        // A textured picture pasted over the middle of the source, a quarter of its area.
        let (px, py, pw, ph) = (120u32, 90u32, 200u32, 150u32);
        let mut query = source.clone();
        for y in py..py + ph {
            for x in px..px + pw {
                let v = if (x / 7 + y / 5) % 2 == 0 { 240 } else { 15 };
                query.put_pixel(x, y, Rgb([v, 255 - v, v / 2]));
            }
        }
        let query = DenseQuery::new(&query);
        let pasted = [
            px as f32 / 400.0,
            py as f32 / 300.0,
            (px + pw) as f32 / 400.0,
            (py + ph) as f32 / 300.0,
        ];
        let masked = query
            .masked(&[pasted])
            .expect("enough of the query is left");
        let own = Plane::from_rgb(&source, FINE_SIDE);
        let whole = align(&query, &own, None);
        let (beneath, region) = align_masked(&masked, &own);
        let stranger = align_masked(&masked, &Plane::from_rgb(&other, FINE_SIDE)).0;
        assert!(
            beneath > 0.98,
            "source beneath {beneath} (whole query {whole})"
        );
        assert!(beneath > whole + 0.1, "beneath {beneath}, whole {whole}");
        assert!(
            beneath > stranger + 0.03,
            "source {beneath}, stranger {stranger}"
        );
        // The query spans the whole source.
        let r = region.unwrap();
        assert!(
            r[0] < 0.1 && r[1] < 0.1 && r[2] > 0.9 && r[3] > 0.9,
            "{r:?}"
        );
        // Leaving nothing of a template out gives the plain alignment.
        let none = query.masked(&[]).unwrap();
        assert!((align_masked(&none, &own).0 - whole).abs() < 1e-3);
        // A query that covers all of itself leaves no template, as does one without its plane.
        assert!(query.masked(&[[0.0, 0.0, 1.0, 1.0]]).is_none());
        let received = DenseQuery {
            source: StoredPlane::default(),
            ..query.clone()
        };
        assert!(received.masked(&[pasted]).is_none());
    }
}
