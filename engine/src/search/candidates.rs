//! What a verified search examines of one query, named before it is examined.
//!
//! Verification checks three lists of candidates (docs/SEARCH.md, stage 6): the top `shortlist`
//! of the global ranking, the `voted` images descriptor voting finds and the `dense` images
//! dense-window search finds. Gathered and examined in one call, they are one database's. The
//! shards of one collection (docs/RAY.md) gather theirs first ([`Database::candidates`]); the
//! caller keeps the collection's best of each list, and each shard then examines only its rows
//! of those ([`SearchOptions::candidates`]; the merge is `imgvec.ray`'s), so the shards together examine what one database
//! holding every row would, not each its own full lists.
//!
//! [`Database::candidates`]: crate::Database::candidates
//! [`SearchOptions::candidates`]: crate::SearchOptions::candidates

use serde::{Deserialize, Serialize};

use super::{expanded_by, fail_all, Searcher};
use crate::error::Result;
use crate::options::{Query, SearchOptions};

/// One query's verification candidates, each list best first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidates {
    /// The global ranking's best rows: (id, score).
    pub shortlist: Vec<(u64, f32)>,
    /// The images descriptor voting found: (id, votes).
    pub voted: Vec<(u64, f32)>,
    /// The images dense-window search found: (id, best window's score).
    pub dense: Vec<(u64, f32)>,
    /// The turn of the best window of each listed row that dense-window search matched
    /// (alignment starts from it): (id, degrees).
    pub turns: Vec<(u64, f32)>,
    /// How many of each list the search asks for: shortlist, voted, dense.
    pub asked: [usize; 3],
    /// Named with `SearchOptions::expand_with` (and then alone): the top `shortlist` of the
    /// expanded query's ranking, of which verified expansion examines what is new.
    #[serde(default)]
    pub expanded: Vec<(u64, f32)>,
    /// The collection's candidates of this query with `min_inliers` inliers as (coverage,
    /// footprint), from every shard's hits (`Hit::coverage`, `Hit::footprint`). Given, the shard looks beneath
    /// the pictures they cover (docs/SEARCH.md) and reports each candidate's alignment there
    /// (`Hit::beneath`); not given, it does not look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Vec<(f32, [f32; 4])>>,
    /// This shard's row that the collection's look beneath picked (`residual::beneath` over
    /// every shard's `Hit::beneath`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneath: Option<u64>,
}

impl Candidates {
    /// The turn dense search found for `id`'s best window, if any.
    pub fn turn(&self, id: u64) -> Option<f32> {
        self.turns.iter().find(|t| t.0 == id).map(|t| t.1)
    }
}

impl Searcher<'_> {
    /// What verifying each query would examine (candidates.rs): the stages before verification,
    /// then the candidates gathered, not examined. A search that does not verify has none. With
    /// `expand_with`, only what verified expansion would add: the expanded query's top rows.
    pub fn candidates(&self, queries: &[Query], opts: &SearchOptions) -> Vec<Result<Candidates>> {
        let seen = self.observations(queries, opts);
        let first = match self.first_ranking(queries, opts, &seen) {
            Ok(Some(first)) => first,
            Ok(None) => return queries.iter().map(|_| Ok(Candidates::default())).collect(),
            Err(e) => return fail_all(queries.len(), &e),
        };
        first
            .merged
            .into_iter()
            .zip(first.prepared)
            .enumerate()
            .map(|(qi, (found, prepared))| {
                if prepared.vectors.is_err() {
                    return prepared.vectors.map(|_| Candidates::default());
                }
                let hits = found.unwrap_or_else(|| Ok(Vec::new()))?;
                let (Some(params), Some(probe)) = (&first.verify, prepared.probe()) else {
                    return Ok(Candidates::default());
                };
                if let Some(with) = &opts.expand_with {
                    let v = expanded_by(first.rows.of(qi)[0], with)?;
                    let found = self.retrieve(&first.ctx, &v, v.len(), params.shortlist, opts);
                    return Ok(Candidates {
                        expanded: found.into_iter().next().transpose()?.unwrap_or_default(),
                        asked: [params.shortlist, params.voted, params.dense],
                        ..Candidates::default()
                    });
                }
                self.spaces
                    .rerank()
                    .gather(self.store, &first.ctx, &hits, probe, params)
            })
            .collect()
    }
}
