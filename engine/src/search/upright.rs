//! Which queries are searched again turned (the upright fallback).
//!
//! Real collections hold photos stored sideways, without an EXIF orientation to undo it
//! (holidays-dev has several). Searching every query's four turns (`--augment rot4`) finds
//! them but costs about 3× the model time on every query. With verification there is a
//! cheaper signal: a query whose shortlist holds a verified result found its match upright, so
//! only an image query with no verified result is searched again with its turns (query-by-id
//! rows have no turns; a search that already asked for them is not repeated).

use crate::info::Hit;
use crate::options::{Augment, Query};
use crate::search::Verdict;

/// Whether any of `hits` verified.
pub(crate) fn any_verified(hits: &[Hit]) -> bool {
    hits.iter().any(|h| h.verdict == Some(Verdict::Verified))
}

/// Whether `query`, searched with augmentation `augment`, is searched again with its turns
/// when the fallback is on (`upright`); `verified`: whether its answer holds a verified result
/// (`None`: the query failed).
pub(crate) fn needs_turns(
    upright: bool,
    augment: Augment,
    query: &Query,
    verified: Option<bool>,
) -> bool {
    let image = matches!(query, Query::Path(_) | Query::Bytes(_));
    upright && augment == Augment::None && image && verified == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unverified_image_queries_are_turned() {
        let path = Query::Path("q.jpg".into());
        for (name, upright, augment, query, verified, want) in [
            (
                "nothing verified",
                true,
                Augment::None,
                &path,
                Some(false),
                true,
            ),
            (
                "bytes",
                true,
                Augment::None,
                &Query::Bytes(vec![1]),
                Some(false),
                true,
            ),
            (
                "one verified",
                true,
                Augment::None,
                &path,
                Some(true),
                false,
            ),
            (
                "fallback off",
                false,
                Augment::None,
                &path,
                Some(false),
                false,
            ),
            (
                "turns already searched",
                true,
                Augment::Rot4,
                &path,
                Some(false),
                false,
            ),
            (
                "a stored row",
                true,
                Augment::None,
                &Query::Id(3),
                Some(false),
                false,
            ),
            ("a failed query", true, Augment::None, &path, None, false),
        ] {
            assert_eq!(
                needs_turns(upright, augment, query, verified),
                want,
                "{name}"
            );
        }
    }
}
