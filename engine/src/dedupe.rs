//! Near-duplicate groups over a whole database without an N×N matrix: every live row searches
//! for its `k` nearest neighbours through the indexes (a batch at a time), pairs scoring at least
//! `min_score` are joined, and the connected groups get a suggested keeper.

use std::collections::HashMap;

use serde::Serialize;

use crate::database::Database;
use crate::error::Result;
use crate::options::{Query, SearchMode, SearchOptions, VerifyOverrides};
use imgvec_storage::ImageRecord;

/// Which member of a group to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The most pixels; ties go to the earliest.
    #[default]
    Largest,
    /// The lowest id (stored first).
    Earliest,
}

/// How `Database::dedupe` looks for duplicates.
#[derive(Debug, Clone)]
pub struct DedupeOptions {
    /// Neighbours each row looks at.
    pub k: usize,
    /// Score (cosine of the global vectors) from which two rows are duplicates; `None`: the
    /// pipeline's default (`default_min_score`).
    pub min_score: Option<f32>,
    /// Calibrated confidence (docs/CALIBRATION.md) from which two rows are duplicates, instead
    /// of a score: the same meaning in every preset and score space. With it, `min_score` only
    /// applies when also given.
    pub min_confidence: Option<f32>,
    /// Index the neighbours come from; `None`: exact below 20,000 rows, IVF-PQ above.
    pub mode: Option<SearchMode>,
    pub keep: Keep,
    /// Rows searched per batch.
    pub batch: usize,
}

impl Default for DedupeOptions {
    fn default() -> Self {
        DedupeOptions {
            k: 10,
            min_score: None,
            min_confidence: None,
            mode: None,
            keep: Keep::default(),
            batch: 256,
        }
    }
}

/// One group of near-duplicates.
#[derive(Debug, Clone, Serialize)]
pub struct DedupeGroup {
    /// The suggested keeper.
    pub keep: u64,
    /// Every member (the keeper included), by id.
    pub members: Vec<DedupeMember>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DedupeMember {
    pub id: u64,
    pub path: String,
    pub width: u32,
    pub height: u32,
    /// The best score linking it to another member.
    pub score: f32,
}

/// What a dedupe found.
#[derive(Debug, Clone, Serialize)]
pub struct DedupeReport {
    pub rows: usize,
    pub min_score: f32,
    /// The confidence pairs needed, when asked for one.
    pub min_confidence: Option<f32>,
    pub mode: SearchMode,
    pub k: usize,
    /// Pairs at or above `min_score`.
    pub pairs: usize,
    /// Groups of two or more, largest first.
    pub groups: Vec<DedupeGroup>,
    pub seconds: f64,
}

/// The score from which a pipeline's rows count as duplicates, by default: the lowest at which
/// the pairs of re-encoded, rescaled and re-exposed copies and near-identical siblings found in
/// instances-dev (+ those copies, 782 images) are ≥ 95 % right (`scripts/dedupe_eval.py`;
/// docs/RESULTS.md, "Dedupe"): `fast` 0.85 (precision 0.95, recall 0.64), the whitened
/// `balanced`/`robust` space 0.45 (precision 1.00, recall 0.62).
pub fn default_min_score(pipeline: &str) -> f32 {
    match pipeline {
        "balanced" | "robust" | "robust-vlad" => 0.45,
        _ => 0.85,
    }
}

/// Groups (two or more ids, each sorted; largest first) in which every two members are a pair:
/// pairs are taken best first, and two groups merge only when all their cross pairs are pairs
/// (complete linkage). Unlike connected components, a chain of look-alikes (a ~ b ~ c, but not
/// a ~ c) does not become one group.
pub fn groups_from_pairs(pairs: &[((u64, u64), f32)]) -> Vec<Vec<u64>> {
    let linked: std::collections::HashSet<(u64, u64)> = pairs.iter().map(|p| p.0).collect();
    let is_pair = |a: u64, b: u64| linked.contains(&(a.min(b), a.max(b)));
    let mut order: Vec<&((u64, u64), f32)> = pairs.iter().collect();
    order.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    let mut group_of: HashMap<u64, usize> = HashMap::new();
    let mut groups: Vec<Vec<u64>> = Vec::new();
    for &&((a, b), _) in &order {
        let (ga, gb) = (group_of.get(&a).copied(), group_of.get(&b).copied());
        let (ma, mb) = (
            ga.map_or(vec![a], |g| groups[g].clone()),
            gb.map_or(vec![b], |g| groups[g].clone()),
        );
        if ga.is_some() && ga == gb {
            continue;
        }
        if !ma.iter().all(|&x| mb.iter().all(|&y| is_pair(x, y))) {
            continue;
        }
        let target = match (ga, gb) {
            (Some(g), _) | (None, Some(g)) => g,
            (None, None) => {
                groups.push(Vec::new());
                groups.len() - 1
            }
        };
        for &id in ma.iter().chain(&mb) {
            if let Some(old) = group_of.insert(id, target) {
                if old != target {
                    groups[old].retain(|&x| x != id);
                }
            }
            if !groups[target].contains(&id) {
                groups[target].push(id);
            }
        }
    }
    let mut out: Vec<Vec<u64>> = groups
        .into_iter()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort_unstable();
            g
        })
        .collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    out
}

/// The member to keep: `(id, width, height)` of each.
pub fn keeper(members: &[(u64, u32, u32)], keep: Keep) -> Option<u64> {
    match keep {
        Keep::Earliest => members.iter().map(|m| m.0).min(),
        Keep::Largest => members
            .iter()
            .max_by(|a, b| {
                let pixels = |m: &(u64, u32, u32)| m.1 as u64 * m.2 as u64;
                pixels(a).cmp(&pixels(b)).then(b.0.cmp(&a.0))
            })
            .map(|m| m.0),
    }
}

impl Database {
    /// Near-duplicate groups over every live row (see the module documentation).
    pub fn dedupe(&self, opts: &DedupeOptions) -> Result<DedupeReport> {
        let started = std::time::Instant::now();
        let records: HashMap<u64, ImageRecord> =
            self.records()?.into_iter().map(|r| (r.id, r)).collect();
        let mut ids: Vec<u64> = records.keys().copied().collect();
        ids.sort_unstable();
        let pipeline = self.pipeline().map(|p| p.name).unwrap_or_default();
        // A confidence replaces the default score threshold (a pipeline without calibration
        // has no confidence, so it finds nothing then).
        let min_score = match (opts.min_score, opts.min_confidence) {
            (Some(s), _) => s,
            (None, Some(_)) => -1.0,
            (None, None) => default_min_score(&pipeline),
        };
        let mode = opts.mode.unwrap_or(if ids.len() < 20_000 {
            SearchMode::Exact
        } else {
            SearchMode::IvfPq
        });
        let search = SearchOptions {
            k: opts.k.max(1),
            mode,
            threshold: Some(min_score),
            verify: VerifyOverrides {
                shortlist: Some(0),
                ..VerifyOverrides::default()
            },
            qe: Some(0),
            ..SearchOptions::default()
        };
        let mut best: HashMap<(u64, u64), f32> = HashMap::new();
        for chunk in ids.chunks(opts.batch.max(1)) {
            let queries = chunk.iter().map(|&id| Query::Id(id)).collect();
            for (&id, hits) in chunk.iter().zip(self.search_batch(queries, &search)) {
                for hit in hits? {
                    let confident = opts
                        .min_confidence
                        .is_none_or(|c| hit.confidence.is_some_and(|h| h >= c));
                    if !confident {
                        continue;
                    }
                    let pair = (id.min(hit.id), id.max(hit.id));
                    let score = best.entry(pair).or_insert(hit.score);
                    *score = score.max(hit.score);
                }
            }
        }
        let pairs: Vec<((u64, u64), f32)> = best.iter().map(|(&p, &s)| (p, s)).collect();
        let mut link: HashMap<u64, f32> = HashMap::new();
        for (&(a, b), &s) in &best {
            for id in [a, b] {
                let e = link.entry(id).or_insert(s);
                *e = e.max(s);
            }
        }
        let groups = groups_from_pairs(&pairs)
            .into_iter()
            .filter_map(|g| {
                let members: Vec<DedupeMember> = g
                    .iter()
                    .filter_map(|id| records.get(id))
                    .map(|r| DedupeMember {
                        id: r.id,
                        path: r.path.clone(),
                        width: r.width,
                        height: r.height,
                        score: link.get(&r.id).copied().unwrap_or(0.0),
                    })
                    .collect();
                let sizes: Vec<(u64, u32, u32)> =
                    members.iter().map(|m| (m.id, m.width, m.height)).collect();
                keeper(&sizes, opts.keep).map(|keep| DedupeGroup { keep, members })
            })
            .collect();
        Ok(DedupeReport {
            rows: ids.len(),
            min_score,
            min_confidence: opts.min_confidence,
            mode,
            k: search.k,
            pairs: pairs.len(),
            groups,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hold_only_mutual_pairs_largest_first() {
        type Case = (&'static [((u64, u64), f32)], Vec<Vec<u64>>);
        let cases: [Case; 5] = [
            (&[], vec![]),
            (&[((1, 2), 0.9)], vec![vec![1, 2]]),
            // A triangle is one group; a separate pair is another.
            (
                &[
                    ((5, 6), 0.9),
                    ((1, 2), 0.95),
                    ((2, 3), 0.93),
                    ((1, 3), 0.91),
                ],
                vec![vec![1, 2, 3], vec![5, 6]],
            ),
            // A chain 1~2~3 without 1~3: the best pair wins, 3 stays out.
            (&[((1, 2), 0.95), ((2, 3), 0.92)], vec![vec![1, 2]]),
            // Two groups merge only when every cross pair is a pair.
            (
                &[
                    ((1, 2), 0.99),
                    ((3, 4), 0.98),
                    ((1, 3), 0.9),
                    ((1, 4), 0.9),
                    ((2, 3), 0.9),
                    ((2, 4), 0.9),
                ],
                vec![vec![1, 2, 3, 4]],
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(groups_from_pairs(pairs), expected, "{pairs:?}");
        }
    }

    #[test]
    fn the_keeper_is_the_largest_or_the_earliest() {
        let members = [(7, 100, 100), (3, 50, 50), (9, 100, 100), (5, 200, 10)];
        assert_eq!(keeper(&members, Keep::Largest), Some(7));
        assert_eq!(keeper(&members, Keep::Earliest), Some(3));
        assert_eq!(keeper(&[], Keep::Largest), None);
    }
}
