//! The calibrated answer to "is this the same image?": each hit's `match` verdict and its
//! confidence, an estimate of the probability that the hit shows the same source as the query.
//! Scores are cosines in each preset's own space (unrelated photos score 0.45–0.62 with `fast`,
//! 0.75–0.84 with `robust`), so the confidence is what compares across presets.
//!
//! A preset's calibration is measured on the dev benchmarks by scripts/calibrate.py (the share of
//! same-source hits per verdict, and an isotonic fit of that share against the score for hits
//! nothing verified), embedded from calibration.json and recorded in each new database's
//! pipeline. docs/CALIBRATION.md shows the tables and what they were measured on.

use serde::{Deserialize, Serialize};

use super::Verdict;

/// Hits at or above this confidence are `likely` matches: more probably the same source than
/// not.
pub const LIKELY: f32 = 0.5;

/// How a preset's scores and verdicts translate into confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// What it was measured on.
    pub measured_on: String,
    /// For searches in the stored vectors' own space (pipelines without a learned whitening,
    /// and collections too small to have learned it yet).
    #[serde(flatten)]
    pub raw: Curves,
    /// For searches in the learned (PCA-whitened) space, whose scores sit on another scale:
    /// unrelated photos score about 0.2 there, about 0.77 in the raw space.
    #[serde(default)]
    pub whitened: Option<Curves>,
}

/// One score space's confidence curves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// Share of same-source hits among SIFT-verified hits.
    #[serde(default)]
    pub verified: Option<f32>,
    /// Share of same-source hits among hits found beneath pictures pasted over the query
    /// (ranking tier 2, docs/SEARCH.md "Looking beneath"). Without it they are read like other
    /// aligned hits, by the `aligned` curve.
    #[serde(default)]
    pub beneath: Option<f32>,
    /// (alignment, confidence) knots for densely aligned hits, both increasing.
    #[serde(default)]
    pub aligned: Option<Vec<[f32; 2]>>,
    /// (score, confidence) knots for hits no verification checked, both increasing.
    #[serde(default)]
    pub unchecked: Option<Vec<[f32; 2]>>,
    /// (score, confidence) knots for hits verification checked and did not confirm.
    #[serde(default)]
    pub unverified: Option<Vec<[f32; 2]>>,
}

/// The answer to "is this the same image?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// Local evidence (SIFT geometry or dense alignment) confirmed it.
    Verified,
    /// Not confirmed, but its calibrated confidence is at least [`LIKELY`].
    Likely,
    /// Neither.
    None,
}

impl Match {
    pub fn name(self) -> &'static str {
        match self {
            Match::Verified => "verified",
            Match::Likely => "likely",
            Match::None => "none",
        }
    }
}

/// The calibrations of the named presets, by preset name.
const PRESETS: &str = include_str!("../pipeline/calibration.json");

/// A named preset's calibration (`None` for a custom model, which has none).
pub fn for_preset(name: &str) -> Option<Calibration> {
    let mut all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(PRESETS).expect("calibration.json is valid (tested)");
    serde_json::from_value(all.remove(name)?).ok()
}

/// The confidence of a hit with this verdict, score (in the whitened space when `whitened`) and
/// dense alignment, when the calibration covers it. A hit `found_beneath` pasted pictures has its
/// own share when the calibration measured one.
pub fn confidence(
    cal: &Calibration,
    whitened: bool,
    verdict: Option<Verdict>,
    score: f32,
    alignment: Option<f32>,
    found_beneath: bool,
) -> Option<f32> {
    let cal = if whitened {
        cal.whitened.as_ref()?
    } else {
        &cal.raw
    };
    if let Some(share) = cal.beneath.filter(|_| found_beneath) {
        return Some(share);
    }
    match verdict {
        Some(Verdict::Verified) => cal.verified,
        Some(Verdict::Aligned) => cal
            .aligned
            .as_deref()
            .zip(alignment)
            .map(|(k, a)| interpolate(k, a)),
        Some(Verdict::Unverified) => cal.unverified.as_deref().map(|k| interpolate(k, score)),
        None => cal.unchecked.as_deref().map(|k| interpolate(k, score)),
    }
}

/// The verdict: `verified` when local evidence confirmed the hit (unless its calibration says
/// such hits are mostly wrong), `likely` from the confidence alone, else `none`.
pub fn match_of(verdict: Option<Verdict>, confidence: Option<f32>) -> Match {
    let evidence = matches!(verdict, Some(Verdict::Verified | Verdict::Aligned));
    let likely = confidence.is_some_and(|c| c >= LIKELY);
    match (evidence, confidence) {
        (true, None) => Match::Verified,
        (true, Some(_)) if likely => Match::Verified,
        _ if likely => Match::Likely,
        _ => Match::None,
    }
}

/// Piecewise-linear through the knots, held at the end values beyond them (0 without knots).
fn interpolate(knots: &[[f32; 2]], score: f32) -> f32 {
    let (Some(first), Some(last)) = (knots.first(), knots.last()) else {
        return 0.0;
    };
    if score <= first[0] {
        return first[1];
    }
    if score >= last[0] {
        return last[1];
    }
    let i = knots.partition_point(|k| k[0] <= score);
    let ([s0, c0], [s1, c1]) = (knots[i - 1], knots[i]);
    c0 + (c1 - c0) * (score - s0) / (s1 - s0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> Calibration {
        Calibration {
            measured_on: "test".into(),
            raw: Curves {
                verified: Some(0.99),
                beneath: Some(0.9),
                aligned: Some(vec![[0.94, 0.2], [0.98, 0.8]]),
                unchecked: Some(vec![[0.5, 0.0], [0.8, 0.6], [0.9, 0.9]]),
                unverified: None,
            },
            whitened: Some(Curves {
                unchecked: Some(vec![[0.1, 0.0], [0.5, 0.8]]),
                ..Curves::default()
            }),
        }
    }

    #[test]
    fn confidence_table() {
        let c = cal();
        // (verdict, score, alignment, found beneath pasted pictures, confidence)
        type Row = (Option<Verdict>, f32, Option<f32>, bool, Option<f32>);
        let table: [Row; 11] = [
            (Some(Verdict::Verified), 0.1, None, false, Some(0.99)),
            (Some(Verdict::Aligned), 0.9, Some(0.95), false, Some(0.35)), // by alignment, not score
            (Some(Verdict::Aligned), 0.9, Some(0.99), false, Some(0.8)),
            (Some(Verdict::Aligned), 0.9, None, false, None), // no alignment to look up
            (Some(Verdict::Aligned), 0.2, Some(0.95), true, Some(0.9)), // beneath: its own share
            (Some(Verdict::Unverified), 0.9, None, false, None), // no table for it
            (None, 0.2, None, false, Some(0.0)),              // held below the first knot
            (None, 0.5, None, false, Some(0.0)),
            (None, 0.65, None, false, Some(0.3)), // halfway between two knots
            (None, 0.8, Some(0.9), false, Some(0.6)),
            (None, 1.0, None, false, Some(0.9)), // held above the last knot
        ];
        for (verdict, score, alignment, beneath, want) in table {
            let got = confidence(&c, false, verdict, score, alignment, beneath);
            let close = match (got, want) {
                (Some(g), Some(w)) => (g - w).abs() < 1e-5,
                (g, w) => g == w,
            };
            assert!(close, "{verdict:?} {score}: {got:?}, want {want:?}");
        }
        // The whitened space has its own curves (and only those).
        let whitened = |v, s| confidence(&c, true, v, s, None, false);
        assert!((whitened(None, 0.3).unwrap() - 0.4).abs() < 1e-5);
        assert_eq!(whitened(Some(Verdict::Verified), 0.3), None);
        // A calibration that measured no share for finds beneath pasted pictures (one recorded
        // before it existed) reads them by their verdict: aligned, by the alignment curve.
        let mut no_share = cal();
        no_share.raw.beneath = None;
        let found = confidence(
            &no_share,
            false,
            Some(Verdict::Aligned),
            0.2,
            Some(0.99),
            true,
        );
        assert_eq!(found, Some(0.8));
        let no_whitening = Calibration {
            whitened: None,
            ..cal()
        };
        assert_eq!(
            confidence(&no_whitening, true, None, 0.3, None, false),
            None
        );
    }

    #[test]
    fn match_table() {
        let table = [
            (Some(Verdict::Verified), Some(0.99), Match::Verified),
            (Some(Verdict::Verified), None, Match::Verified), // no calibration: the evidence
            (Some(Verdict::Aligned), Some(0.3), Match::None), // aligned hits mostly wrong
            (Some(Verdict::Aligned), Some(0.7), Match::Verified),
            (Some(Verdict::Unverified), Some(0.7), Match::Likely),
            (Some(Verdict::Unverified), Some(0.2), Match::None),
            (None, Some(0.5), Match::Likely),
            (None, Some(0.49), Match::None),
            (None, None, Match::None),
        ];
        for (verdict, confidence, want) in table {
            assert_eq!(
                match_of(verdict, confidence),
                want,
                "{verdict:?} {confidence:?}"
            );
        }
    }

    #[test]
    fn every_named_preset_is_calibrated_with_increasing_knots() {
        for preset in ["fast", "balanced", "robust", "robust-vlad"] {
            let c = for_preset(preset).unwrap_or_else(|| panic!("{preset} has no calibration"));
            // Every preset but fast learns a whitening, and is calibrated in both spaces.
            assert_eq!(c.whitened.is_some(), preset != "fast", "{preset}");
            for curves in std::iter::once(&c.raw).chain(&c.whitened) {
                assert!(curves.unchecked.is_some(), "{preset}");
                let local = preset.starts_with("robust");
                assert_eq!(curves.verified.is_some(), local, "{preset}");
                assert_eq!(curves.beneath.is_some(), local, "{preset}");
                assert_eq!(curves.aligned.is_some(), local, "{preset}");
                let all = [&curves.unchecked, &curves.unverified, &curves.aligned];
                for knots in all.into_iter().flatten() {
                    assert!(knots
                        .windows(2)
                        .all(|w| w[0][0] < w[1][0] && w[0][1] < w[1][1]));
                    assert!(knots.iter().all(|k| (0.0..=1.0).contains(&k[1])));
                }
            }
        }
        assert_eq!(for_preset("custom"), None);
    }
}
