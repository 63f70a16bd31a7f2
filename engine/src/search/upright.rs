//! Which queries are searched again turned (the upright fallback).
//!
//! Real collections hold photos stored sideways, without an EXIF orientation to undo it
//! (holidays-dev has several). Searching every query's four turns (`--augment rot4`) finds
//! them but costs about 3× the model time on every query. The answer itself gives a cheaper
//! signal: a query whose answer holds a match found its match upright, so only an image query
//! whose answer holds none is searched again with its turns (query-by-id rows have no turns; a
//! search that already asked for them is not repeated). What counts as a match depends on the
//! search: a verifying one trusts only verification (SIFT matches are the same in every turn,
//! so only a result verification proved tells that the upright query found its match); one that
//! verifies nothing trusts the pipeline's calibration (a `likely` hit, docs/CALIBRATION.md),
//! and keeps the turned answer only when it holds a match the upright one did not (measured on
//! instances-dev, where replacing it anyway pushed true matches of `combined` queries out of
//! the top 10).

use crate::info::Hit;
use crate::local::VerifyParams;
use crate::options::{Augment, Query};
use crate::search::{Match, Verdict};

/// What tells that a query found its match, when the fallback is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A verified result (searches that verify).
    Verified,
    /// A verified or calibrated `likely` result (searches that verify nothing).
    Likely,
}

impl Found {
    /// Its name in the Python binding (`"verified"`, `"likely"`).
    pub fn name(self) -> &'static str {
        match self {
            Found::Verified => "verified",
            Found::Likely => "likely",
        }
    }
}

/// The fallback of one search, `None` when it is off. `verify`: the search's verification
/// (with the options applied: it carries their `upright`); `asked`: the options' `upright`;
/// `preset`: the pipeline's own setting for searches that verify nothing; `calibrated`: whether
/// the pipeline's scores have a calibration (without one a search cannot tell a match).
pub(crate) fn fallback(
    verify: Option<&VerifyParams>,
    asked: Option<bool>,
    preset: Option<bool>,
    calibrated: bool,
) -> Option<Found> {
    match verify {
        Some(v) => v.upright.then_some(Found::Verified),
        None => (asked.or(preset).unwrap_or(false) && calibrated).then_some(Found::Likely),
    }
}

/// Whether `hits` hold what `found` counts as the query's match.
pub(crate) fn found(hits: &[Hit], found: Found) -> bool {
    hits.iter().any(|h| match found {
        Found::Verified => h.verdict == Some(Verdict::Verified),
        Found::Likely => h.matched != Match::None,
    })
}

/// Whether the turned answer replaces the upright one: always when verification decides (it
/// cannot prove a turn: a query that verified nothing upright verifies nothing turned, and the
/// turns' better global ranking is what the retry is for), only when it holds a match otherwise.
pub(crate) fn keeps_turns(by: Found, turned: &[Hit]) -> bool {
    match by {
        Found::Verified => true,
        Found::Likely => found(turned, by),
    }
}

/// Whether `query`, searched with augmentation `augment`, is searched again with its turns
/// when the fallback is on; `found`: whether its answer holds a match (`None`: the query
/// failed).
pub(crate) fn needs_turns(augment: Augment, query: &Query, found: Option<bool>) -> bool {
    let image = matches!(query, Query::Path(_) | Query::Bytes(_));
    augment == Augment::None && image && found == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(verdict: Option<Verdict>, matched: Match) -> Hit {
        Hit {
            id: 1,
            path: "a.jpg".into(),
            score: 0.9,
            inliers: None,
            alignment: None,
            verdict,
            rank_key: None,
            matched,
            confidence: None,
            pairs: None,
            region: None,
            coverage: None,
            footprint: None,
            beneath: None,
            tier: None,
            attributes: Default::default(),
        }
    }

    #[test]
    fn the_fallback_is_verifications_or_else_the_calibrations() {
        let on = VerifyParams::default();
        let off = VerifyParams {
            upright: false,
            ..VerifyParams::default()
        };
        for (name, verify, asked, preset, calibrated, want) in [
            (
                "verifying, on",
                Some(&on),
                None,
                None,
                true,
                Some(Found::Verified),
            ),
            (
                "verifying, off",
                Some(&off),
                Some(true),
                Some(true),
                true,
                None,
            ),
            (
                "unverified, preset on",
                None,
                None,
                Some(true),
                true,
                Some(Found::Likely),
            ),
            (
                "unverified, preset off",
                None,
                None,
                Some(false),
                true,
                None,
            ),
            ("unverified, no setting", None, None, None, true, None),
            (
                "unverified, asked",
                None,
                Some(true),
                None,
                true,
                Some(Found::Likely),
            ),
            (
                "unverified, asked off",
                None,
                Some(false),
                Some(true),
                true,
                None,
            ),
            ("no calibration", None, Some(true), Some(true), false, None),
        ] {
            assert_eq!(fallback(verify, asked, preset, calibrated), want, "{name}");
        }
    }

    #[test]
    fn what_counts_as_found_and_which_turned_answer_is_kept() {
        let verified = hit(Some(Verdict::Verified), Match::Verified);
        let aligned = hit(Some(Verdict::Aligned), Match::Verified);
        let likely = hit(None, Match::Likely);
        let none = hit(Some(Verdict::Unverified), Match::None);
        for (name, hits, by, want) in [
            (
                "verified, by verification",
                vec![none.clone(), verified.clone()],
                Found::Verified,
                true,
            ),
            (
                "aligned is not verified",
                vec![aligned.clone()],
                Found::Verified,
                false,
            ),
            (
                "likely is not verified",
                vec![likely.clone()],
                Found::Verified,
                false,
            ),
            (
                "likely",
                vec![none.clone(), likely.clone()],
                Found::Likely,
                true,
            ),
            ("aligned match", vec![aligned], Found::Likely, true),
            (
                "no match",
                vec![none.clone(), none.clone()],
                Found::Likely,
                false,
            ),
            ("empty", vec![], Found::Likely, false),
        ] {
            assert_eq!(found(&hits, by), want, "found: {name}");
        }
        for (name, turned, by, want) in [
            (
                "verification keeps any",
                vec![none.clone()],
                Found::Verified,
                true,
            ),
            (
                "calibration keeps a match",
                vec![likely],
                Found::Likely,
                true,
            ),
            (
                "calibration keeps no miss",
                vec![none],
                Found::Likely,
                false,
            ),
            (
                "calibration keeps no empty answer",
                vec![],
                Found::Likely,
                false,
            ),
        ] {
            assert_eq!(keeps_turns(by, &turned), want, "keeps: {name}");
        }
    }

    #[test]
    fn only_unfound_image_queries_are_turned() {
        let path = Query::Path("q.jpg".into());
        let bytes = Query::Bytes(vec![1]);
        for (name, augment, query, found, want) in [
            ("nothing found", Augment::None, &path, Some(false), true),
            ("bytes", Augment::None, &bytes, Some(false), true),
            ("one found", Augment::None, &path, Some(true), false),
            (
                "turns already searched",
                Augment::Rot4,
                &path,
                Some(false),
                false,
            ),
            (
                "a stored row",
                Augment::None,
                &Query::Id(3),
                Some(false),
                false,
            ),
            ("a failed query", Augment::None, &path, None, false),
        ] {
            assert_eq!(needs_turns(augment, query, found), want, "{name}");
        }
    }
}
