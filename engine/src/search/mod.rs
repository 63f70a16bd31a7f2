//! Search: a batch of queries runs as named stages over one [`SearchContext`] (one snapshot,
//! one space, the filter evaluated once):
//!
//! ```text
//! featurize ─▶ project ─▶ retrieve ─▶ merge variants ─▶ expand (αQE) ─▶ re-rank / verify /
//! (query.rs)   (space)    (exact or     (best score      (top results     align (rerank.rs,
//!                          an index)     per row)         added, again)    ranking.rs) ─▶ materialize
//! ```
//! docs/SEARCH.md describes each stage and every knob.

pub(crate) mod calibration;
mod candidates;
pub(crate) mod context;
mod filter;
mod first_pass;
mod first_ranking;
mod observed;
mod query;
pub(crate) mod ranking;
mod recent;
mod rerank;
mod residual;
pub use residual::{beneath as beneath_pick, looks_beneath};
mod space;
mod upright;
pub use upright::Found;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use imgvec_ingest::l2_normalize_rows;
use imgvec_storage::Store;

pub use calibration::{Calibration, Match};
pub use candidates::Candidates;
pub use ranking::Verdict;
pub(crate) use rerank::RerankIndexes;
pub use rerank::RerankStatus;
pub(crate) use space::Spaces;

use crate::error::{Error, Result};
use crate::exact;
use crate::index::{AnnMode, AnnParams, Save};
use crate::info::Hit;
use crate::local::VerifyParams;
use crate::options::{Augment, Query, SearchOptions};
use crate::options::{SearchModeExt, VerifyOverridesExt};
use crate::pipeline::{Featurizer, PipelineConfig};
use context::SearchContext;
use first_ranking::FirstRanking;
use observed::Observations;
use query::PreparedQuery;
pub use query::QueryFeatures;
use rerank::Checked;

/// (id, score) pairs, best first, or why there are none.
type Ranked = Result<Vec<(u64, f32)>>;

/// The services a search reads, borrowed from the database handle.
pub(crate) struct Searcher<'a> {
    pub store: &'a Store,
    pub featurizer: &'a Featurizer,
    pub spaces: &'a Spaces,
    /// The handle's threads: verification spreads one query's candidates over them.
    pub threads: usize,
}

/// What every answer of a batch is materialized with.
struct Answer<'a> {
    /// The database's vector length.
    dims: usize,
    /// The pipeline's calibration, when it has one.
    calibration: Option<&'a Calibration>,
    /// Whether the scores are in a learned (whitened) space, which has its own calibration.
    whitened: bool,
    /// The verification that ranked the candidates, when one ran.
    verify: Option<VerifyParams>,
}

/// What verified query expansion changes: each query's ranking and what was checked of it.
struct Expansion<'a> {
    merged: &'a mut [Option<Ranked>],
    checked: &'a mut [HashMap<u64, Checked>],
    /// The stored row each query is, for queries by id: never part of its own expansion.
    own_rows: Vec<Option<u64>>,
}

/// Every variant of every query, in the search space: one row each.
struct Rows {
    flat: Vec<f32>,
    dims: usize,
    /// The query each row belongs to.
    owners: Vec<usize>,
}

impl Rows {
    fn row(&self, i: usize) -> &[f32] {
        &self.flat[i * self.dims..(i + 1) * self.dims]
    }

    /// The rows of query `qi`, its first variant first.
    fn of(&self, qi: usize) -> Vec<&[f32]> {
        (0..self.owners.len())
            .filter(|&i| self.owners[i] == qi)
            .map(|i| self.row(i))
            .collect()
    }
}

/// A query's first variant in the search space expanded with `with` (a sum of stored vectors
/// there), normalised.
fn expanded_by(first: &[f32], with: &[f32]) -> Result<Vec<f32>> {
    if with.len() != first.len() {
        return Err(Error::Invalid(format!(
            "expand_with has {} values, the search space {}",
            with.len(),
            first.len()
        )));
    }
    let mut v: Vec<f32> = first.iter().zip(with).map(|(a, b)| a + b).collect();
    l2_normalize_rows(&mut v, first.len());
    Ok(v)
}

/// `n` answers that each fail with `e` (an error of the whole batch).
fn fail_all<T>(n: usize, e: &Error) -> Vec<Result<T>> {
    (0..n).map(|_| Err(Error::Invalid(e.to_string()))).collect()
}

/// The upright fallback of a search with `opts` in `pipeline`, verifying with `verify` (the
/// search's settings, [`Searcher::settings`]).
fn upright_fallback_of(
    pipeline: Option<&PipelineConfig>,
    verify: Option<&VerifyParams>,
    opts: &SearchOptions,
) -> Option<upright::Found> {
    let pipeline = pipeline?;
    upright::fallback(
        verify,
        opts.verify.upright,
        pipeline.query.upright,
        pipeline.calibration.is_some(),
    )
}

/// The best `k` rows of a list that may name a row more than once, each with its best score.
fn best_per_row(mut hits: Vec<(u64, f32)>, k: usize) -> Vec<(u64, f32)> {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut seen = HashSet::new();
    hits.retain(|(id, _)| seen.insert(*id));
    hits.truncate(k);
    hits
}

impl Searcher<'_> {
    /// The pipeline's global vector of each query, as ingest computes it (no augmentation, no
    /// projection); an id gives its stored vector.
    pub fn extract(&self, queries: Vec<Query>) -> Vec<Result<Vec<f32>>> {
        let snap = self.store.snapshot();
        query::featurize(
            self.featurizer,
            self.store,
            &snap,
            &queries,
            Augment::None,
            None,
            &[],
        )
        .into_iter()
        .map(|p| {
            p.vectors.and_then(|mut v| {
                v.drain(..)
                    .next()
                    .ok_or_else(|| Error::Invalid("the model gave no vector".into()))
            })
        })
        .collect()
    }

    /// Answers several queries, running the model once per batch of image queries. Each query
    /// gets its own result, so one unreadable image does not fail the others. Image queries
    /// that verify nothing are answered again with their turns (`upright`).
    pub fn search_batch(&self, queries: Vec<Query>, opts: &SearchOptions) -> Vec<Result<Vec<Hit>>> {
        let seen = self.observations(&queries, opts);
        let mut answers = self.search_once(&queries, opts, &seen);
        let (pipeline, augment, verify) = self.settings(opts);
        let Some(by) = upright_fallback_of(pipeline.as_ref(), verify.as_ref(), opts) else {
            return answers;
        };
        let again: Vec<usize> = (0..queries.len())
            .filter(|&i| {
                let found = answers[i].as_ref().ok().map(|h| upright::found(h, by));
                upright::needs_turns(augment, &queries[i], found)
            })
            .collect();
        if again.is_empty() {
            return answers;
        }
        let turned = SearchOptions {
            augment: Some(Augment::Rot4),
            ..opts.clone()
        };
        // The turns change the global vectors only: the retry starts from what verifying the
        // upright query observed (observed.rs).
        let retry: Vec<Query> = again.iter().map(|&i| queries[i].clone()).collect();
        let retry_seen: Vec<_> = again.iter().map(|&i| seen[i].clone()).collect();
        for (i, answer) in again
            .into_iter()
            .zip(self.search_once(&retry, &turned, &retry_seen))
        {
            // A turned answer that failed keeps the upright one.
            if answer.as_ref().is_ok_and(|h| upright::keeps_turns(by, h)) {
                answers[i] = answer;
            }
        }
        answers
    }

    /// The upright fallback a search with `opts` runs (`None`: off), and what tells it that a
    /// query found its match (search/upright.rs).
    pub fn upright_fallback(&self, opts: &SearchOptions) -> Option<upright::Found> {
        let (pipeline, _, verify) = self.settings(opts);
        upright_fallback_of(pipeline.as_ref(), verify.as_ref(), opts)
    }

    /// What a search with `opts` would make of each image query (its variants' vectors and, when
    /// the search needs them, local features), to be searched as [`Query::Features`] here or in
    /// a database made like this one. Id queries are refused: they name a row of this database.
    /// `like[i]`, when given: features made of query `i`'s image before (with any augmentation),
    /// whose local features are taken instead of extracted again — the upright fallback's turns
    /// of a query a sharded search featurized upright (turning changes only the vectors).
    pub fn featurize(
        &self,
        queries: &[Query],
        opts: &SearchOptions,
        like: &[Option<&QueryFeatures>],
    ) -> Vec<Result<QueryFeatures>> {
        let seen: Vec<Arc<Observations>> = like
            .iter()
            .map(|l| match l.and_then(|f| f.local()) {
                Some(local) => Arc::new(Observations::knowing(local.clone())),
                None => Arc::default(),
            })
            .collect();
        let (pipeline, augment, verify) = self.settings(opts);
        let sift = pipeline.as_ref().and_then(|p| p.local).map(|l| l.sift);
        let local = sift.filter(|_| verify.is_some() || self.spaces.has_vlad());
        let snap = self.store.snapshot();
        query::featurize(
            self.featurizer,
            self.store,
            &snap,
            queries,
            augment,
            local.as_ref(),
            &seen,
        )
        .into_iter()
        .zip(queries)
        .map(|(prepared, q)| match q {
            Query::Id(_) => Err(Error::Invalid("an id query has no features to send".into())),
            _ => QueryFeatures::of(prepared),
        })
        .collect()
    }

    /// The pipeline, and the augmentation and verification a search with `opts` gets: the
    /// options, else the pipeline's defaults; verification only where local features are stored.
    fn settings(
        &self,
        opts: &SearchOptions,
    ) -> (Option<PipelineConfig>, Augment, Option<VerifyParams>) {
        let pipeline = self.featurizer.pipeline();
        let defaults = pipeline.as_ref().map(|p| p.query).unwrap_or_default();
        let augment = opts.augment.unwrap_or(defaults.augment);
        let verify = pipeline
            .as_ref()
            .and_then(|p| p.local)
            .and_then(|_| opts.verify.apply(defaults.verify.unwrap_or_default()));
        (pipeline, augment, verify)
    }

    /// One pass of `search_batch`, with the augmentation `opts` (or the pipeline) asks for;
    /// `seen`: each query's observations, shared by the passes of the batch.
    fn search_once(
        &self,
        queries: &[Query],
        opts: &SearchOptions,
        seen: &[Arc<Observations>],
    ) -> Vec<Result<Vec<Hit>>> {
        let first = match self.first_ranking(queries, opts, seen) {
            Ok(Some(first)) => first,
            Ok(None) => return queries.iter().map(|_| Ok(Vec::new())).collect(),
            Err(e) => return fail_all(queries.len(), &e),
        };
        let FirstRanking {
            dims,
            ctx,
            rows,
            prepared,
            mut merged,
            k,
            qe,
            pipeline,
            augment,
            verify,
        } = first;
        let checked = match verify {
            Some(params) => {
                let settings = || first_pass::settings(opts, augment, qe, k, &params);
                let mut checked = self.verify_keeping(
                    &ctx,
                    &rows,
                    &prepared,
                    queries,
                    &mut merged,
                    &params,
                    &settings,
                );
                if params.expand > 0 {
                    let mut stage = Expansion {
                        merged: &mut merged,
                        checked: &mut checked,
                        own_rows: queries.iter().map(Query::own_row).collect(),
                    };
                    self.expand_verified(&ctx, &rows, &prepared, &mut stage, &params, opts);
                }
                checked
            }
            None => vec![HashMap::new(); queries.len()],
        };
        let answer = Answer {
            dims,
            calibration: pipeline.as_ref().and_then(|p| p.calibration.as_ref()),
            whitened: ctx.space.projection.is_some(),
            verify,
        };
        queries
            .iter()
            .zip(prepared)
            .zip(merged)
            .zip(checked)
            .map(|(((query, prepared), found), checked)| {
                self.materialize(query, prepared, found, &checked, &answer, opts)
            })
            .collect()
    }

    /// Retrieve: the top `k` of each `dims`-long row of `flat` in the context's space, in the
    /// mode `opts` asks for.
    fn retrieve(
        &self,
        ctx: &SearchContext,
        flat: &[f32],
        dims: usize,
        k: usize,
        opts: &SearchOptions,
    ) -> Vec<Ranked> {
        let accept = |id: u64| ctx.accept(id);
        match opts.mode.ann() {
            None => {
                let found = exact::search(
                    &ctx.space.snapshot,
                    flat,
                    dims,
                    k,
                    ctx.filtered().then_some(&accept as &dyn Fn(u64) -> bool),
                );
                match found {
                    Ok(all) => all.into_iter().map(Ok).collect(),
                    // Every query of the batch read the damaged rows: each gets the error.
                    Err(e) => (0..flat.len() / dims.max(1))
                        .map(|_| Err(e.clone().into()))
                        .collect(),
                }
            }
            Some(mode) => flat
                .chunks_exact(dims)
                .map(|q| self.ann_search(ctx, mode, q, k, opts))
                .collect(),
        }
    }

    /// One query in an approximate mode; falls back to exact search where that index does not
    /// exist yet or filters left too few candidates.
    fn ann_search(
        &self,
        ctx: &SearchContext,
        mode: AnnMode,
        query: &[f32],
        k: usize,
        opts: &SearchOptions,
    ) -> Ranked {
        let space = &ctx.space;
        let snapshot = &space.snapshot;
        if !space.indexes.is_current(snapshot, mode) {
            space
                .indexes
                .refresh(self.store, snapshot, Save::Never, false)?;
        }
        let params = AnnParams {
            k,
            nprobe: opts.nprobe,
            rerank: opts.rerank,
            depth: opts.rerank_depth,
        };
        let accept = |id: u64| ctx.accept(id);
        match space
            .indexes
            .search(mode, snapshot, query, &params, &accept)?
        {
            Some(hits) => Ok(hits),
            None => {
                let mut out = exact::search(snapshot, query, query.len(), k, Some(&accept))?;
                Ok(out.pop().unwrap_or_default())
            }
        }
    }

    /// Expand (average query expansion): each query's first variant plus its top `qe` results
    /// weighted by similarity³, searched again; the new results replace the old.
    fn expand(
        &self,
        ctx: &SearchContext,
        rows: &Rows,
        merged: &mut [Option<Ranked>],
        qe: usize,
        k: usize,
        opts: &SearchOptions,
    ) {
        let dims = rows.dims;
        let mut firsts = Vec::new();
        let mut failed = Vec::new();
        for (qi, slot) in merged.iter().enumerate() {
            let Some(Ok(hits)) = slot else { continue };
            let Some(&q) = rows.of(qi).first() else {
                continue;
            };
            let mut expanded = q.to_vec();
            let read = hits.iter().take(qe).try_for_each(|&(id, score)| {
                if let Some(v) = ctx.space.snapshot.vector(id)? {
                    let w = score.max(0.0).powi(3);
                    expanded.iter_mut().zip(v).for_each(|(e, x)| *e += w * x);
                }
                Ok::<_, imgvec_storage::StorageError>(())
            });
            if let Err(e) = read {
                failed.push((qi, e));
                continue;
            }
            l2_normalize_rows(&mut expanded, dims);
            firsts.push((qi, expanded));
        }
        for (qi, e) in failed {
            merged[qi] = Some(Err(e.into()));
        }
        let batch: Vec<f32> = firsts.iter().flat_map(|(_, v)| v.clone()).collect();
        let again = self.retrieve(ctx, &batch, dims, k, opts);
        for ((qi, _), hits) in firsts.iter().zip(again) {
            merged[*qi] = Some(hits);
        }
    }

    /// Re-rank / verify / align each query that has local features.
    fn verify(
        &self,
        ctx: &SearchContext,
        rows: &Rows,
        prepared: &[PreparedQuery],
        merged: &mut [Option<Ranked>],
        params: &VerifyParams,
    ) -> Vec<HashMap<u64, Checked>> {
        let mut checked = vec![HashMap::new(); merged.len()];
        for (qi, slot) in merged.iter_mut().enumerate() {
            let (Some(Ok(hits)), Some(probe)) = (slot.as_mut(), prepared[qi].probe()) else {
                continue;
            };
            let variants = rows.of(qi);
            match self
                .spaces
                .rerank()
                .rerank(self.store, ctx, hits, probe, &variants, params)
            {
                Ok(found) => checked[qi] = found,
                Err(e) => *slot = Some(Err(e)),
            }
        }
        checked
    }

    /// [`verify`](Self::verify), except that a feature query whose first pass is kept
    /// (first_pass.rs) starts from it instead of being verified again, and the first passes of
    /// the others are kept. `settings`: what a first pass depends on besides the features and
    /// the rows (made only when the batch holds a feature query).
    #[allow(clippy::too_many_arguments)]
    fn verify_keeping(
        &self,
        ctx: &SearchContext,
        rows: &Rows,
        prepared: &[PreparedQuery],
        queries: &[Query],
        merged: &mut [Option<Ranked>],
        params: &VerifyParams,
        settings: &dyn Fn() -> String,
    ) -> Vec<HashMap<u64, Checked>> {
        if !queries.iter().any(|q| matches!(q, Query::Features(_))) {
            return self.verify(ctx, rows, prepared, merged, params);
        }
        let settings = settings();
        let passes = self.spaces.first_passes();
        let keys: Vec<_> = queries
            .iter()
            .map(|q| match q {
                Query::Features(f) => Some(first_pass::key(f, ctx, &settings)),
                _ => None,
            })
            .collect();
        let kept: Vec<_> = keys
            .iter()
            .map(|k| k.and_then(|k| passes.get(&k)))
            .collect();
        for (slot, kept) in merged.iter_mut().zip(&kept) {
            if kept.is_some() {
                *slot = None; // not verified again
            }
        }
        let mut checked = self.verify(ctx, rows, prepared, merged, params);
        for (qi, (key, kept)) in keys.iter().zip(kept).enumerate() {
            match (key, kept, &merged[qi]) {
                (_, Some(pass), _) => {
                    merged[qi] = Some(Ok(pass.0.clone()));
                    checked[qi] = pass.1.clone();
                }
                (Some(key), None, Some(Ok(list))) => {
                    passes.put(*key, Arc::new((list.clone(), checked[qi].clone())));
                }
                _ => {}
            }
        }
        checked
    }

    /// Verified query expansion: each query that verified results is searched again with its
    /// first variant plus its best `expand` verified results (not the query's own row), and
    /// ranked again with what that search adds (see [`RerankIndexes::rerank_expanded`]).
    fn expand_verified(
        &self,
        ctx: &SearchContext,
        rows: &Rows,
        prepared: &[PreparedQuery],
        stage: &mut Expansion,
        params: &VerifyParams,
        opts: &SearchOptions,
    ) {
        let dims = rows.dims;
        if let Some(with) = opts.expand_with.as_ref().filter(|w| w.len() != dims) {
            let why = format!(
                "expand_with has {} values, the search space {dims}",
                with.len()
            );
            for slot in stage.merged.iter_mut().filter(|s| matches!(s, Some(Ok(_)))) {
                *slot = Some(Err(Error::Invalid(why.clone())));
            }
            return;
        }
        let (mut expanded, mut failed) = (Vec::new(), Vec::new());
        for (qi, slot) in stage.merged.iter().enumerate() {
            let (Some(Ok(hits)), Some(&first)) = (slot, rows.of(qi).first()) else {
                continue;
            };
            if let Some(with) = &opts.expand_with {
                expanded.push((qi, expanded_by(first, with).unwrap_or_default()));
                continue;
            }
            let mut verified = hits
                .iter()
                .map(|h| h.0)
                .filter(|&id| Some(id) != stage.own_rows[qi])
                .filter(|id| {
                    let verdict = stage.checked[qi].get(id).and_then(|c| c.verdict);
                    verdict == Some(Verdict::Verified)
                })
                .take(params.expand);
            let mut v = first.to_vec();
            let mut added = 0;
            let read = verified.try_for_each(|id| {
                if let Some(x) = ctx.space.snapshot.vector(id)? {
                    v.iter_mut().zip(x).for_each(|(e, x)| *e += x);
                    added += 1;
                }
                Ok::<_, imgvec_storage::StorageError>(())
            });
            match read {
                Err(e) => failed.push((qi, e)),
                Ok(()) if added > 0 => {
                    l2_normalize_rows(&mut v, dims);
                    expanded.push((qi, v));
                }
                Ok(()) => {}
            }
        }
        for (qi, e) in failed {
            stage.merged[qi] = Some(Err(e.into()));
        }
        if expanded.is_empty() {
            return;
        }
        let batch: Vec<f32> = expanded.iter().flat_map(|(_, v)| v.clone()).collect();
        let found = self.retrieve(ctx, &batch, dims, params.shortlist, opts);
        for ((qi, v), found) in expanded.iter().zip(found) {
            let (Some(Ok(hits)), Some(probe)) = (&mut stage.merged[*qi], prepared[*qi].probe())
            else {
                continue;
            };
            let again = found.and_then(|found| {
                self.spaces.rerank().rerank_expanded(
                    self.store,
                    ctx,
                    hits,
                    &mut stage.checked[*qi],
                    probe,
                    &rows.of(*qi),
                    v,
                    &found,
                    params,
                )
            });
            if let Err(e) = again {
                stage.merged[*qi] = Some(Err(e));
            }
        }
    }

    /// Materialize: the hits of one query, with their paths and calibrated verdicts, after the
    /// id query's own row, the score threshold, `matches_only` and `k` are applied.
    fn materialize(
        &self,
        query: &Query,
        prepared: PreparedQuery,
        found: Option<Ranked>,
        checked: &HashMap<u64, Checked>,
        answer: &Answer,
        opts: &SearchOptions,
    ) -> Result<Vec<Hit>> {
        let dims = answer.dims;
        let vectors = prepared.vectors?;
        if let Some(bad) = vectors.iter().find(|var| var.len() != dims) {
            return Err(Error::Invalid(format!(
                "query vector has {} dimensions, database stores {dims}",
                bad.len()
            )));
        }
        let hits = found.unwrap_or_else(|| Ok(Vec::new()))?;
        let skip = query.own_row();
        let unchecked = Checked::default();
        let mut out = Vec::new();
        for (id, score) in hits {
            if Some(id) == skip || opts.threshold.is_some_and(|t| score < t) {
                continue;
            }
            if out.len() == opts.k {
                break;
            }
            let c = checked.get(&id).unwrap_or(&unchecked);
            let ranked = c
                .evidence
                .zip(answer.verify.as_ref())
                .map(|(e, p)| ranking::rank_key(&e, p));
            let beneath = ranked.is_some_and(|r| r.0 == ranking::BENEATH);
            let confidence = answer.calibration.and_then(|cal| {
                calibration::confidence(
                    cal,
                    answer.whitened,
                    c.verdict,
                    score,
                    c.alignment,
                    beneath,
                )
            });
            let matched = calibration::match_of(c.verdict, confidence);
            if opts.matches_only && matched == Match::None {
                continue;
            }
            if let Some(rec) = self.store.get(id)? {
                out.push(Hit {
                    id,
                    path: rec.path,
                    score,
                    inliers: c.inliers,
                    alignment: c.alignment,
                    verdict: c.verdict,
                    rank_key: ranked.map(|r| r.1),
                    matched,
                    confidence,
                    pairs: (opts.pairs && !c.pairs.is_empty()).then(|| c.pairs.clone()),
                    region: c.region,
                    coverage: c.footprint.and(c.evidence.map(|e| e.coverage)),
                    footprint: c.footprint,
                    beneath: c.masked,
                    tier: ranked.map(|r| r.0),
                    attributes: rec.attributes,
                });
            }
        }
        Ok(out)
    }
}

/// Project: every variant of every query with the database's dimension, mapped into the
/// context's space (whitening, VLAD block) when it has a projection.
fn project(ctx: &SearchContext, prepared: &[PreparedQuery], dims: usize) -> Rows {
    let mut raw = Vec::new();
    let mut owners = Vec::new();
    for (qi, p) in prepared.iter().enumerate() {
        if let Ok(variants) = &p.vectors {
            for var in variants.iter().filter(|var| var.len() == dims) {
                raw.extend_from_slice(var);
                owners.push(qi);
            }
        }
    }
    match &ctx.space.projection {
        Some(w) => {
            let descriptors: Vec<&[f32]> = owners
                .iter()
                .map(|&qi| {
                    prepared[qi]
                        .local
                        .as_ref()
                        .map_or(&[][..], |l| &l.features.descriptors)
                })
                .collect();
            Rows {
                flat: w.apply(&raw, &descriptors),
                dims: w.dims_out(),
                owners,
            }
        }
        None => Rows {
            flat: raw,
            dims,
            owners,
        },
    }
}

/// Merge variants: each query's rows' results into one list, best score per row.
fn merge_variants(
    rows: &Rows,
    found: Vec<Ranked>,
    queries: usize,
    k: usize,
) -> Vec<Option<Ranked>> {
    let mut merged: Vec<Option<Ranked>> = (0..queries).map(|_| None).collect();
    for (qi, hits) in rows.owners.iter().zip(found) {
        let slot = &mut merged[*qi];
        match (slot.take(), hits) {
            (Some(Err(e)), _) | (_, Err(e)) => *slot = Some(Err(e)),
            (None, Ok(h)) => *slot = Some(Ok(h)),
            (Some(Ok(mut acc)), Ok(h)) => {
                acc.extend(h);
                *slot = Some(Ok(best_per_row(acc, k)));
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_per_row_keeps_each_rows_best_score() {
        let hits = vec![(1, 0.5), (2, 0.9), (1, 0.7), (3, 0.7), (2, 0.1)];
        assert_eq!(best_per_row(hits, 2), vec![(2, 0.9), (1, 0.7)]);
    }

    #[test]
    fn variants_merge_per_query_and_errors_win() {
        let rows = Rows {
            flat: vec![0.0; 4],
            dims: 1,
            owners: vec![0, 0, 1, 1],
        };
        let found = vec![
            Ok(vec![(1, 0.4), (2, 0.3)]),
            Ok(vec![(2, 0.8)]),
            Ok(vec![(5, 0.9)]),
            Err(Error::Invalid("index failed".into())),
        ];
        let merged = merge_variants(&rows, found, 3, 10);
        assert_eq!(
            merged[0].as_ref().unwrap().as_ref().unwrap(),
            &vec![(2, 0.8), (1, 0.4)]
        );
        assert!(merged[1].as_ref().unwrap().is_err());
        assert!(merged[2].is_none());
    }
}
