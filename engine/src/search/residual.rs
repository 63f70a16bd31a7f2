//! What of a query the images SIFT matched explain, and so what is left to look beneath.
//!
//! A query can show several stored images: a photo with pictures pasted over part of it
//! (occlusion by other photos), a collage, a screenshot of a page. A pasted picture that is
//! itself stored verifies richly — SIFT finds its texture — while the photo beneath it, if it is
//! smooth (a wallpaper, a sky), gives SIFT nothing and aligns densely only where the pasted
//! pictures are not: correlated over the whole query, they drag its alignment below the floor.
//! So the footprints of the candidates with `min_inliers` inliers (verified, or pasted over too
//! little of the query to verify) that cover only part of the query
//! ([`explained`]) are left out of a second alignment of the other candidates (search::rerank,
//! `dense::align_masked`), and one that aligns with the rest of the query clearly better than
//! with the whole is what the query shows beneath them (search::ranking).

/// A matched candidate that covers at least this share of the query is not pasted over it.
pub const EXPLAINS: f32 = 0.5;
/// What the footprints leave of the query must be at least this share of it.
pub const MIN_KEPT: f32 = 0.5;
/// Each footprint is grown by this share of the query's sides, to keep clear of a pasted
/// picture's edge (a footprint is the box of a fitted map, not a mask).
const MARGIN: f32 = 0.02;
/// Footprints left out at most (the widest ones).
const MAX_FOOTPRINTS: usize = 8;
/// What the rest of the query must align with at least: stricter than the whole query's
/// floor, since fewer cells are correlated.
pub const MIN_BENEATH: f32 = 0.96;
/// By how much the candidate that aligns best with the rest of the query must lead the next
/// one: smooth photos align with a smooth remainder about equally well, the image beneath the
/// pasted pictures clearly better than any other.
pub const LEAD: f32 = 0.03;

/// Cells a side of the grid the footprints' union is measured on.
const GRID: usize = 64;

/// (left, top, right, bottom), fractions of the query's width and height.
pub type Part = [f32; 4];

fn area(p: &Part) -> f32 {
    (p[2] - p[0]).max(0.0) * (p[3] - p[1]).max(0.0)
}

/// Share of the unit square that `parts` cover together (on a [`GRID`]² grid of cell centres).
fn covered(parts: &[Part]) -> f32 {
    let inside = |x: f32, y: f32| {
        parts
            .iter()
            .any(|p| x >= p[0] && x < p[2] && y >= p[1] && y < p[3])
    };
    let at = |i: usize| (i as f32 + 0.5) / GRID as f32;
    let n = (0..GRID * GRID)
        .filter(|i| inside(at(i % GRID), at(i / GRID)))
        .count();
    n as f32 / (GRID * GRID) as f32
}

/// The parts of the query to leave out when looking beneath, given each matched candidate's
/// coverage and footprint: the footprints, grown by [`MARGIN`], of those covering less than
/// [`EXPLAINS`] of it; `None` when there are none or they leave less than [`MIN_KEPT`].
pub fn explained(matched: &[(f32, Part)]) -> Option<Vec<Part>> {
    let mut parts: Vec<Part> = matched
        .iter()
        .filter(|v| v.0 < EXPLAINS)
        .map(|(_, b)| {
            [
                (b[0] - MARGIN).max(0.0),
                (b[1] - MARGIN).max(0.0),
                (b[2] + MARGIN).min(1.0),
                (b[3] + MARGIN).min(1.0),
            ]
        })
        .collect();
    // Widest first, then by position: the same parts whatever order they were listed in (the
    // shards of a collection list them in their own order).
    parts.sort_by(|a, b| {
        area(b).total_cmp(&area(a)).then_with(|| {
            a.iter()
                .zip(b)
                .fold(std::cmp::Ordering::Equal, |o, (x, y)| {
                    o.then(x.total_cmp(y))
                })
        })
    });
    parts.truncate(MAX_FOOTPRINTS);
    (!parts.is_empty() && 1.0 - covered(&parts) >= MIN_KEPT).then_some(parts)
}

/// Which candidate the query shows beneath the pictures pasted over it, given each candidate's
/// alignment with the rest of the query: the best, when it reaches [`MIN_BENEATH`] and leads the
/// next by [`LEAD`] (ties go to the smaller id). The shards of a collection key their
/// candidates by any distinct numbers (`imgvec::beneath_pick`, docs/RAY.md).
pub fn beneath(aligned: &[(u64, f32)]) -> Option<u64> {
    let mut ranked: Vec<(u64, f32)> = aligned.to_vec();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let (id, best) = *ranked.first()?;
    let next = ranked.get(1).map_or(-1.0, |r| r.1);
    (best >= MIN_BENEATH && best - next >= LEAD).then_some(id)
}

/// Whether one database would look beneath the pictures its matched results cover
/// (docs/SEARCH.md, "Looking beneath"), given every such result's (coverage, footprint): for the
/// shards of a collection, which decide it over every shard's hits with a footprint (docs/RAY.md).
pub fn looks_beneath(matched: &[(f32, [f32; 4])]) -> bool {
    explained(matched).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explained_table() {
        type Case = (&'static str, Vec<(f32, Part)>, Option<Vec<Part>>);
        let cases: Vec<Case> = vec![
            ("nothing verified: nothing to look beneath", vec![], None),
            (
                "a verified image covering most of the query is not pasted over it",
                vec![(0.8, [0.0, 0.0, 0.9, 0.9])],
                None,
            ),
            (
                "one picture pasted mid-frame: its footprint, grown",
                vec![(0.3, [0.2, 0.3, 0.7, 0.9])],
                Some(vec![[0.18, 0.28, 0.72, 0.92]]),
            ),
            (
                "only the pasted one of a pasted and a whole-frame match",
                vec![(0.3, [0.5, 0.0, 1.0, 0.6]), (0.95, [0.0, 0.0, 1.0, 1.0])],
                Some(vec![[0.48, 0.0, 1.0, 0.62]]),
            ),
            (
                "two pictures, the larger first",
                vec![(0.1, [0.0, 0.0, 0.2, 0.2]), (0.2, [0.5, 0.5, 0.9, 0.9])],
                Some(vec![[0.48, 0.48, 0.92, 0.92], [0.0, 0.0, 0.22, 0.22]]),
            ),
            (
                "pictures over most of the query leave too little",
                vec![(0.4, [0.0, 0.0, 0.5, 0.9]), (0.4, [0.5, 0.0, 1.0, 0.9])],
                None,
            ),
        ];
        for (what, verified, want) in cases {
            let got = explained(&verified);
            match (&got, &want) {
                (Some(g), Some(w)) => {
                    assert_eq!(g.len(), w.len(), "{what}: {got:?}");
                    for (a, b) in g.iter().zip(w) {
                        assert!(
                            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5),
                            "{what}: {got:?}"
                        );
                    }
                }
                _ => assert_eq!(got, want, "{what}"),
            }
        }
    }

    #[test]
    fn beneath_table() {
        type Case = (&'static str, Vec<(u64, f32)>, Option<u64>);
        let cases: Vec<Case> = vec![
            ("no candidates", vec![], None),
            ("one, well aligned", vec![(4, 0.97)], Some(4)),
            ("one, below the bar", vec![(4, 0.955)], None),
            (
                "the best leads clearly",
                vec![(1, 0.87), (2, 0.988), (3, 0.86)],
                Some(2),
            ),
            (
                "several align about as well",
                vec![(1, 0.975), (2, 0.969), (3, 0.966)],
                None,
            ),
            (
                "a lead just under the margin",
                vec![(1, 0.99), (2, 0.961)],
                None,
            ),
        ];
        for (what, aligned, want) in cases {
            assert_eq!(beneath(&aligned), want, "{what}");
        }
    }

    #[test]
    fn covered_share_of_the_square() {
        assert_eq!(covered(&[]), 0.0);
        assert!((covered(&[[0.0, 0.0, 0.5, 1.0]]) - 0.5).abs() < 1e-6);
        // Overlaps count once.
        let two = [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]];
        assert!((covered(&two) - (0.25 + 0.25 - 0.0625)).abs() < 1e-3);
    }
}
