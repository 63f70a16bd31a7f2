//! How verified searches order their candidates: a pure function of each candidate's evidence
//! (global cosine, SIFT inliers and coverage, dense alignment, brightness gap) and the
//! verification settings. docs/SEARCH.md explains each term with the case it exists for.
//!
//! - **Beneath**: when the verified candidates cover only parts of the query (pictures pasted
//!   over a photo), the one candidate the rest of the query aligns with clearly best
//!   (search::residual) comes first, if it aligns with the rest at or above the floor and
//!   `BENEATH_GAIN` better than with the whole query: by cosine + `alignment_weight`·(that
//!   alignment − floor).
//! - **Verified** candidates (≥ `min_inliers` inliers, covering ≥ `min_coverage` of the query)
//!   come next, by cosine + `INLIER_WEIGHT`·min(inliers, `INLIER_CAP`)/`INLIER_CAP` +
//!   `EXTRA_INLIER_WEIGHT`·ln(max(inliers, `INLIER_CAP`)/`INLIER_CAP`) +
//!   `COVERAGE_WEIGHT`·min(coverage, 1) − `BRIGHTNESS_WEIGHT`·brightness gap: near-identical
//!   siblings all verify, and are told apart by how much of the query they explain, by their
//!   brightness, by the global similarity and, when one explains many times more keypoints,
//!   by that.
//! - **The rest** follow, by cosine + the same inlier bonus for the inliers beyond
//!   `chance_inliers` (weak but consistent geometry counts, never as precedence; only with the
//!   coverage) + `alignment_weight`·(alignment − `alignment_floor`) when the dense alignment is
//!   above the floor.
//! - With verified query expansion, the rest are ordered by their cosine with the expanded
//!   query (the query plus its best verified results) instead: a photo of the same scene that
//!   does not verify against the query is often close to one that does. Verified candidates keep
//!   their own key, and every score stays the cosine with the query itself.
//! - Ties go to the smaller id.

use crate::local::VerifyParams;

/// Weight of the (capped) inlier count added to a candidate's cosine.
pub const INLIER_WEIGHT: f32 = 1.0;
/// Inliers beyond this add only `EXTRA_INLIER_WEIGHT`·ln(inliers / cap): two verified siblings
/// are ordered by their cosine unless one explains many times more keypoints.
pub const INLIER_CAP: usize = 20;
/// Verified candidates gain this × ln(inliers / `INLIER_CAP`) for inliers beyond the cap: a
/// light and a dark rendering of one wallpaper share its geometry and both verify against a
/// query whose exposure was changed, which the brightness term then favours the wrong one for,
/// but the source matches many times more keypoints (286 against 16); ten times the inliers
/// outweighs a brightness gap of 0.23, twice as many one of 0.07.
pub const EXTRA_INLIER_WEIGHT: f32 = 0.1;
/// Verified candidates that explain more of the query rank higher by this × their coverage: a
/// zoomed or shifted near-identical sibling covers less of the query than the original does.
pub const COVERAGE_WEIGHT: f32 = 0.5;
/// Verified candidates lose this × the gap between their mean grey level and the query's (0–1):
/// a colour-graded near-identical sibling is brighter or darker than the original, which the
/// normalised global descriptor and the geometry cannot see.
pub const BRIGHTNESS_WEIGHT: f32 = 1.0;

/// What a verified search learned about one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Evidence {
    pub id: u64,
    /// Best cosine over the query's variants, in the search space.
    pub cosine: f32,
    /// Inliers of the fitted transform (0 when not matched).
    pub inliers: usize,
    /// Share of the query the candidate covers under that transform.
    pub coverage: f32,
    /// Dense alignment (normalised cross-correlation), when it was aligned.
    pub alignment: Option<f32>,
    /// |mean grey of query − mean grey of candidate| / 255 (0 when unknown).
    pub brightness_gap: f32,
    /// Cosine with the expanded query, when verified query expansion ran.
    pub expanded: Option<f32>,
    /// Dense alignment with the part of the query the verified candidates leave unexplained,
    /// when that was looked beneath (search::residual).
    pub beneath: Option<f32>,
}

/// Whether a candidate is verified: enough inliers, covering enough of the query.
pub(crate) fn is_verified(inliers: usize, coverage: f32, p: &VerifyParams) -> bool {
    inliers >= p.min_inliers && coverage >= p.min_coverage
}

/// The inlier bonus.
fn inlier_bonus(inliers: usize) -> f32 {
    INLIER_WEIGHT * inliers.min(INLIER_CAP) as f32 / INLIER_CAP as f32
}

/// What verification concluded about a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Enough SIFT inliers, covering enough of the query, agree on one geometry.
    Verified,
    /// Not verified, but dense alignment found the same picture (at or above the floor).
    Aligned,
    /// Checked, and no evidence either way beyond the global similarity.
    Unverified,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Aligned => "aligned",
            Verdict::Unverified => "unverified",
        }
    }
}

/// How much better than with the whole query a candidate must align with what the verified
/// candidates leave of it: the pictures pasted over it were what kept it from aligning.
pub const BENEATH_GAIN: f32 = 0.05;

/// Whether a candidate that did not verify aligns, at or above the floor and clearly better
/// than with the whole query, with what the verified candidates leave of the query.
fn is_beneath(e: &Evidence, p: &VerifyParams) -> bool {
    e.beneath
        .is_some_and(|a| a >= p.alignment_floor && a >= e.alignment.unwrap_or(-1.0) + BENEATH_GAIN)
        && !is_verified(e.inliers, e.coverage, p)
}

/// The verdict on a candidate's evidence: the same test the ranking gives precedence to, then
/// the alignment floor (over the whole query or the part of it left unexplained).
pub(crate) fn verdict(e: &Evidence, p: &VerifyParams) -> Verdict {
    if is_verified(e.inliers, e.coverage, p) {
        Verdict::Verified
    } else if is_beneath(e, p) || e.alignment.is_some_and(|a| a >= p.alignment_floor) {
        Verdict::Aligned
    } else {
        Verdict::Unverified
    }
}

/// Ranking tiers, compared first: what the query shows beneath the pictures that verify, then
/// the verified, then the rest.
pub(crate) const BENEATH: u8 = 2;
pub(crate) const VERIFIED: u8 = 1;
pub(crate) const REST: u8 = 0;

/// A candidate's rank: (tier, key), compared tier first, then key.
pub(crate) fn rank_key(e: &Evidence, p: &VerifyParams) -> (u8, f32) {
    if let Some(a) = e.beneath.filter(|_| is_beneath(e, p)) {
        return (
            BENEATH,
            e.cosine + p.alignment_weight * (a - p.alignment_floor),
        );
    }
    if is_verified(e.inliers, e.coverage, p) {
        let beyond_cap = e.inliers.max(INLIER_CAP) as f32 / INLIER_CAP as f32;
        let key = e.cosine
            + inlier_bonus(e.inliers)
            + EXTRA_INLIER_WEIGHT * beyond_cap.ln()
            + COVERAGE_WEIGHT * e.coverage.min(1.0)
            - BRIGHTNESS_WEIGHT * e.brightness_gap;
        return (VERIFIED, key);
    }
    let beyond_chance = if e.coverage >= p.min_coverage {
        e.inliers.saturating_sub(p.chance_inliers)
    } else {
        0
    };
    let aligned = e.alignment.map_or(0.0, |a| {
        p.alignment_weight * (a - p.alignment_floor).max(0.0)
    });
    let cosine = e.expanded.unwrap_or(e.cosine);
    (REST, cosine + inlier_bonus(beyond_chance) + aligned)
}

/// The candidates in rank order, as (id, cosine): scores stay cosines, so they need not
/// decrease down the list.
pub(crate) fn rank(evidence: &[Evidence], p: &VerifyParams) -> Vec<(u64, f32)> {
    let mut ranked: Vec<((u8, f32), &Evidence)> =
        evidence.iter().map(|e| (rank_key(e, p), e)).collect();
    ranked.sort_by(|(a, ea), (b, eb)| {
        b.0.cmp(&a.0)
            .then(b.1.total_cmp(&a.1))
            .then(ea.id.cmp(&eb.id))
    });
    ranked.into_iter().map(|(_, e)| (e.id, e.cosine)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64, cosine: f32, inliers: usize, coverage: f32) -> Evidence {
        Evidence {
            id,
            cosine,
            inliers,
            coverage,
            alignment: None,
            brightness_gap: 0.0,
            expanded: None,
            beneath: None,
        }
    }

    #[test]
    fn verdict_table() {
        let p = VerifyParams::default(); // min_inliers 8, coverage 0.25, floor 0.94
        let floor = p.alignment_floor;
        let with = |inliers, coverage, alignment| Evidence {
            alignment,
            ..ev(1, 0.5, inliers, coverage)
        };
        let cases = [
            (
                "enough inliers over enough of the query",
                with(8, 0.5, None),
                Verdict::Verified,
            ),
            (
                "verified wins over a weak alignment",
                with(30, 0.9, Some(0.1)),
                Verdict::Verified,
            ),
            ("too few inliers", with(7, 0.9, None), Verdict::Unverified),
            (
                "enough inliers over a quarter of the query",
                with(8, 0.25, None),
                Verdict::Verified,
            ),
            (
                "the stored image is a third of the query (a reverse crop, another viewpoint)",
                with(20, 0.3, None),
                Verdict::Verified,
            ),
            (
                "inliers in a corner of the query",
                with(40, 0.2, None),
                Verdict::Unverified,
            ),
            (
                "aligned at the floor",
                with(0, 0.0, Some(floor)),
                Verdict::Aligned,
            ),
            (
                "aligned below the floor",
                with(3, 0.9, Some(floor - 0.01)),
                Verdict::Unverified,
            ),
            (
                "aligned with what the verified leave of the query",
                Evidence {
                    beneath: Some(floor),
                    ..with(0, 0.0, Some(0.7))
                },
                Verdict::Aligned,
            ),
            (
                "verified, whatever it aligns with",
                Evidence {
                    beneath: Some(0.99),
                    ..with(30, 0.3, None)
                },
                Verdict::Verified,
            ),
        ];
        for (what, e, want) in cases {
            assert_eq!(verdict(&e, &p), want, "{what}");
        }
    }

    /// Each case: candidates, and the order the ranking must give them (ids).
    #[test]
    fn ranking_table() {
        let p = VerifyParams::default(); // min_inliers 8, coverage 0.25, chance 4, floor 0.94, ×14
        let aligned = |mut e: Evidence, a: f32| {
            e.alignment = Some(a);
            e
        };
        let darker = |mut e: Evidence, gap: f32| {
            e.brightness_gap = gap;
            e
        };
        let expanded = |mut e: Evidence, cosine: f32| {
            e.expanded = Some(cosine);
            e
        };
        let beneath = |mut e: Evidence, a: f32| {
            e.beneath = Some(a);
            e
        };
        let cases: Vec<(&str, Vec<Evidence>, Vec<u64>)> = vec![
            (
                "verified first, whatever the cosine",
                vec![ev(1, 0.95, 0, 0.0), ev(2, 0.30, 12, 0.8)],
                vec![2, 1],
            ),
            (
                "unverified: plain cosine order",
                vec![
                    ev(1, 0.40, 0, 0.0),
                    ev(2, 0.60, 0, 0.0),
                    ev(3, 0.50, 0, 0.0),
                ],
                vec![2, 3, 1],
            ),
            (
                "too little coverage is no precedence (a pasted occluder verifies)",
                vec![ev(1, 0.70, 40, 0.2), ev(2, 0.60, 10, 0.9)],
                vec![2, 1],
            ),
            (
                "verified siblings: more coverage wins",
                vec![ev(1, 0.90, 30, 0.55), ev(2, 0.88, 30, 0.95)],
                vec![2, 1],
            ),
            (
                "verified siblings: the brightness gap decides",
                vec![darker(ev(1, 0.90, 30, 0.9), 0.2), ev(2, 0.89, 30, 0.9)],
                vec![2, 1],
            ),
            (
                "many times the inliers outweigh a brightness gap (an exposure-changed query)",
                vec![
                    darker(ev(1, 0.93, 290, 0.9), 0.44),
                    darker(ev(2, 0.76, 16, 0.9), 0.03),
                ],
                vec![1, 2],
            ),
            (
                "a few more inliers beyond the cap do not",
                vec![darker(ev(1, 0.90, 36, 0.9), 0.2), ev(2, 0.89, 30, 0.9)],
                vec![2, 1],
            ),
            (
                "inliers beyond chance lift an unverified candidate",
                vec![ev(1, 0.60, 0, 0.0), ev(2, 0.55, 7, 0.9)],
                vec![2, 1],
            ),
            (
                "inliers at chance level count for nothing",
                vec![ev(1, 0.60, 0, 0.0), ev(2, 0.59, 4, 0.9)],
                vec![1, 2],
            ),
            (
                "inliers without coverage count for nothing",
                vec![ev(1, 0.60, 0, 0.0), ev(2, 0.55, 7, 0.2)],
                vec![1, 2],
            ),
            (
                "dense alignment above the floor lifts; below it does nothing",
                vec![
                    ev(1, 0.70, 0, 0.0),
                    aligned(ev(2, 0.50, 0, 0.0), 0.97),
                    aligned(ev(3, 0.65, 0, 0.0), 0.85),
                ],
                vec![2, 1, 3],
            ),
            (
                "an aligned candidate still ranks below a verified one",
                vec![aligned(ev(1, 0.90, 0, 0.0), 0.99), ev(2, 0.20, 8, 0.5)],
                vec![2, 1],
            ),
            (
                "inliers past the cap count little: cosine decides",
                vec![ev(1, 0.80, 30, 1.0), ev(2, 0.85, 20, 1.0)],
                vec![2, 1],
            ),
            (
                "ten times the inliers past the cap outweigh a small cosine gap",
                vec![ev(1, 0.80, 200, 1.0), ev(2, 0.85, 20, 1.0)],
                vec![1, 2],
            ),
            (
                "expansion: the unverified follow the expanded query's cosine",
                vec![
                    expanded(ev(1, 0.70, 0, 0.0), 0.60),
                    expanded(ev(2, 0.50, 0, 0.0), 0.80),
                ],
                vec![2, 1],
            ),
            (
                "expansion: verified candidates keep their own key and precedence",
                vec![
                    expanded(ev(1, 0.30, 12, 0.8), 0.10),
                    expanded(ev(2, 0.90, 12, 0.8), 0.99),
                    expanded(ev(3, 0.95, 0, 0.0), 0.99),
                ],
                vec![2, 1, 3],
            ),
            (
                "what the query shows beneath the pasted pictures ranks before them",
                vec![
                    ev(1, 0.05, 40, 0.3),
                    ev(2, 0.02, 12, 0.25),
                    beneath(aligned(ev(3, 0.35, 0, 0.0), 0.80), 0.97),
                ],
                vec![3, 1, 2],
            ),
            (
                "beneath: by cosine and alignment with the unexplained part",
                vec![
                    beneath(ev(1, 0.40, 0, 0.0), 0.95),
                    beneath(ev(2, 0.30, 0, 0.0), 0.99),
                ],
                vec![2, 1],
            ),
            (
                "aligning with the rest no better than with the whole is no precedence",
                vec![
                    ev(1, 0.05, 40, 0.3),
                    beneath(aligned(ev(2, 0.35, 0, 0.0), 0.95), 0.97),
                ],
                vec![1, 2],
            ),
            (
                "beneath below the floor is no precedence",
                vec![ev(1, 0.05, 40, 0.3), beneath(ev(2, 0.35, 0, 0.0), 0.90)],
                vec![1, 2],
            ),
            (
                "ties go to the smaller id",
                vec![ev(9, 0.5, 0, 0.0), ev(3, 0.5, 0, 0.0)],
                vec![3, 9],
            ),
        ];
        for (name, evidence, want) in cases {
            let got: Vec<u64> = rank(&evidence, &p).into_iter().map(|(id, _)| id).collect();
            assert_eq!(got, want, "{name}");
            // Scores stay cosines.
            for (id, score) in rank(&evidence, &p) {
                let e = evidence.iter().find(|e| e.id == id).unwrap();
                assert_eq!(score, e.cosine, "{name}");
            }
        }
    }

    #[test]
    fn verified_key_terms() {
        let p = VerifyParams::default();
        let (tier, key) = rank_key(&ev(1, 0.5, 10, 2.0), &p);
        assert_eq!(tier, VERIFIED);
        // cosine + 10/20 inliers + 0.5 × coverage capped at 1
        assert!((key - (0.5 + 0.5 + 0.5)).abs() < 1e-6, "{key}");
        let (tier, key) = rank_key(&ev(1, 0.5, 6, 0.9), &p);
        assert_eq!(tier, REST);
        assert!((key - (0.5 + 2.0 / 20.0)).abs() < 1e-6, "{key}");
    }
}
