//! The re-rank stage of verified searches: adds the images descriptor voting and dense-window
//! search find to a query's global shortlist, verifies them spatially (SIFT), aligns what SIFT
//! cannot verify (dense), and orders them with [`ranking::rank`].

use std::collections::HashMap;

use imgvec_ingest::sift::PackedFeatures;
use imgvec_storage::{Snapshot, Store};
use serde::Serialize;

use super::candidates::Candidates;
use super::context::SearchContext;
use super::observed::{Observations, Observed};
use super::ranking::{self, Evidence, Verdict};
use super::residual;
use crate::dense::{self, DenseIndex, Plane};
use crate::derived::slot::{DerivedStatus, Slot};
use crate::error::{Error, Result};
use crate::exact;
use crate::index::Save;
use crate::local::{self, LocalIndex, VerifyParams};
use crate::parallel;
use crate::pipeline::QueryLocal;

/// (id, score) pairs.
type Scored = Vec<(u64, f32)>;

/// Dense planes of candidates, each with the turn of its best window when one was found.
type Planes = HashMap<u64, (Plane, Option<f32>)>;

/// A query as verification sees it: its local features, and what its batch observed of them.
#[derive(Clone, Copy)]
pub(crate) struct Probe<'a> {
    pub local: &'a QueryLocal,
    pub seen: &'a Observations,
}

/// What a handle holds of the re-rank indexes (`imgvec info`, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RerankStatus {
    pub voting: DerivedStatus,
    pub dense: DerivedStatus,
    /// Searches of query features that started from a first pass kept from the call before
    /// (the second round of a sharded search; search/first_pass.rs).
    pub first_passes_reused: u64,
    /// Searches of query features that started from what an earlier call on this handle
    /// examined for the same local features (the later rounds of a sharded search, its upright
    /// retry; search/observed.rs).
    pub observations_reused: u64,
}

/// What a verified search checked of one result.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checked {
    /// `None`: not matched with SIFT (found by dense-window search only).
    pub inliers: Option<usize>,
    pub alignment: Option<f32>,
    pub verdict: Option<ranking::Verdict>,
    /// What the ranking weighed (verified query expansion ranks the same candidates again).
    pub evidence: Option<Evidence>,
    /// Some of a verified candidate's inlier pairs, for drawing (empty when not verified).
    pub pairs: Vec<[f32; 4]>,
    /// Where dense alignment placed the query in the candidate (fractions of its sides).
    pub region: Option<[f32; 4]>,
    /// What of the query a candidate with `min_inliers` inliers covers
    /// (local::Verification::footprint).
    pub footprint: Option<[f32; 4]>,
    /// Its alignment with the query with the matched candidates' footprints left out, when
    /// the search looked beneath them.
    pub masked: Option<f32>,
}

/// The candidate sources of verified searches: persisted derived structures, loaded on a
/// handle's first verified search and kept current by the writer's worker.
pub(crate) struct RerankIndexes {
    /// The stored local descriptors, for voting.
    local: Slot<LocalIndex>,
    /// Every stored image's dense windows and plane.
    dense: Slot<DenseIndex>,
}

impl RerankIndexes {
    pub fn new(store: &Store) -> RerankIndexes {
        RerankIndexes {
            local: Slot::new(store),
            dense: Slot::new(store),
        }
    }

    /// Brings both up to `snap` (see [`Slot::refresh`]).
    pub fn refresh(
        &self,
        store: &Store,
        snap: &Snapshot,
        save: Save,
        purge_all: bool,
    ) -> Result<()> {
        self.local.refresh(store, snap, save, purge_all)?;
        self.dense.refresh(store, snap, save, purge_all)
    }

    /// Loads the voting index's and then the dense-window index's published files, if this
    /// handle has not yet (see [`Slot::preload`]).
    pub fn preload(&self, store: &Store) {
        self.local.preload(store);
        self.dense.preload(store);
    }

    /// What this handle holds of the voting and the dense-window index.
    pub fn status(&self) -> RerankStatus {
        RerankStatus {
            voting: self.local.status(),
            dense: self.dense.status(),
            first_passes_reused: 0,
            observations_reused: 0,
        }
    }

    /// Images descriptor voting finds for `query` (once per batch; live ones only).
    fn voted(
        &self,
        store: &Store,
        ctx: &SearchContext,
        query: Probe,
        n: usize,
    ) -> Result<Vec<(u64, f32)>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut found = query.seen.voted(n, || {
            self.local.with(store, &ctx.snapshot, |index| {
                index.vote(&query.local.features.descriptors, n, &|id| ctx.is_live(id))
            })?
        })?;
        found.retain(|v| ctx.is_live(v.0));
        Ok(found)
    }

    /// Images dense-window search finds for `query` (id, best window's score), and the turn of
    /// the best window of those and of the `others` where one was found.
    fn dense_found(
        &self,
        store: &Store,
        ctx: &SearchContext,
        query: &QueryLocal,
        n: usize,
        others: &[u64],
    ) -> Result<(Scored, Scored)> {
        let Some(dq) = query.dense.as_ref().filter(|_| n > 0) else {
            return Ok((Vec::new(), Vec::new()));
        };
        self.dense.with(store, &ctx.snapshot, |index| {
            let live = |id| ctx.is_live(id);
            let scores = index.scores(dq, n, others, &live, ctx.threads, ctx.share)?;
            let found = scores.top(n, &live);
            let mut turns = Vec::new();
            for &id in others.iter().chain(found.iter().map(|f| &f.0)) {
                match scores.get(id) {
                    Some(s) if !turns.iter().any(|t: &(u64, f32)| t.0 == id) => {
                        turns.push((id, s.1))
                    }
                    _ => {}
                }
            }
            Ok((found, turns))
        })?
    }

    /// What verifying one query's global `hits` (best first) would examine: the top of the
    /// hits, and what voting and dense-window search find.
    pub fn gather(
        &self,
        store: &Store,
        ctx: &SearchContext,
        hits: &[(u64, f32)],
        query: Probe,
        params: &VerifyParams,
    ) -> Result<Candidates> {
        let voted = self.voted(store, ctx, query, params.voted)?;
        let shortlist: Vec<(u64, f32)> = hits.iter().take(params.shortlist).copied().collect();
        let others: Vec<u64> = shortlist.iter().chain(&voted).map(|c| c.0).collect();
        let (dense, turns) = self.dense_found(store, ctx, query.local, params.dense, &others)?;
        Ok(Candidates {
            shortlist,
            voted,
            dense,
            turns,
            asked: [params.shortlist, params.voted, params.dense],
            ..Candidates::default()
        })
    }

    /// The dense planes of `ids`, each with its best window's turn where `candidates` has one
    /// (none when the query has no dense probes or dense alignment is off): for `rerank`, and
    /// for `rerank_expanded` without turns.
    fn planes(
        &self,
        store: &Store,
        ctx: &SearchContext,
        query: &QueryLocal,
        ids: &[u64],
        candidates: &Candidates,
        params: &VerifyParams,
    ) -> Result<Planes> {
        if query.dense.is_none() || params.dense == 0 || ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.dense.with(store, &ctx.snapshot, |index| {
            ids.iter()
                .filter_map(|&id| index.plane(id).map(|p| (id, (p, candidates.turn(id)))))
                .collect()
        })
    }

    /// Re-ranks one query's global `hits` (best first) with local features. Scores stay cosines
    /// in the search space (`variants`: the query's vectors there). Examines what
    /// [`Self::gather`] finds, or only the context's `examine` (a shard's rows of its
    /// collection's candidates). Returns what was checked per row.
    pub fn rerank(
        &self,
        store: &Store,
        ctx: &SearchContext,
        hits: &mut Vec<(u64, f32)>,
        query: Probe,
        variants: &[&[f32]],
        params: &VerifyParams,
    ) -> Result<HashMap<u64, Checked>> {
        let gathered;
        let lists = match &ctx.examine {
            Some(given) => given,
            None => {
                gathered = self.gather(store, ctx, hits, query, params)?;
                &gathered
            }
        };
        let mut candidates: Vec<(u64, f32)> = hits
            .iter()
            .take(params.shortlist)
            .filter(|h| lists.shortlist.iter().any(|s| s.0 == h.0))
            .copied()
            .collect();
        // Images only dense-window search found are aligned, not matched with SIFT: a textured
        // image would have been found by voting.
        let add =
            |candidates: &mut Vec<(u64, f32)>, ids: &mut dyn Iterator<Item = u64>| -> Result<()> {
                for id in ids {
                    if candidates.iter().any(|(c, _)| *c == id) || !ctx.is_live(id) {
                        continue;
                    }
                    let Some(v) = ctx.space.snapshot.vector(id)? else {
                        continue;
                    };
                    candidates.push((id, best_cosine(variants, v)));
                }
                Ok(())
            };
        add(&mut candidates, &mut lists.voted.iter().map(|v| v.0))?;
        let sift_checked = candidates.len();
        add(&mut candidates, &mut lists.dense.iter().map(|d| d.0))?;
        let ids: Vec<u64> = candidates.iter().map(|c| c.0).collect();
        let planes = self.planes(store, ctx, query.local, &ids, lists, params)?;
        let numbered: Vec<(usize, (u64, f32))> = candidates.into_iter().enumerate().collect();
        let examined = parallel::map(&numbered, ctx.threads, |&(i, (id, cosine))| {
            examine(
                ctx,
                query,
                id,
                cosine,
                i < sift_checked,
                planes.get(&id),
                params,
            )
        });
        let mut checked = HashMap::new();
        for ((_, (id, _)), c) in numbered.iter().zip(examined) {
            checked.insert(*id, c?);
        }
        look_beneath(ctx, query, &planes, &mut checked, params);
        let evidence: Vec<Evidence> = checked.values().filter_map(|c| c.evidence).collect();
        let rest: Vec<(u64, f32)> = hits
            .iter()
            .skip(params.shortlist)
            .filter(|(id, _)| !checked.contains_key(id))
            .copied()
            .collect();
        *hits = ranking::rank(&evidence, params);
        hits.extend(rest);
        Ok(checked)
    }

    /// Verified query expansion's second ranking of one query, after [`Self::rerank`]:
    /// `expanded` is the query plus its best verified results, `found` its global results
    /// (best first). The candidates are everything `checked` holds plus `found`'s top
    /// `shortlist` (of those, only the context's `examine.expanded` when it is given: a shard's
    /// rows of its collection's); new ones are matched with SIFT and aligned (without a window's
    /// turn) as in `rerank`, and the ranking orders the unverified by their cosine with
    /// `expanded`.
    #[allow(clippy::too_many_arguments)]
    pub fn rerank_expanded(
        &self,
        store: &Store,
        ctx: &SearchContext,
        hits: &mut Vec<(u64, f32)>,
        checked: &mut HashMap<u64, Checked>,
        query: Probe,
        variants: &[&[f32]],
        expanded: &[f32],
        found: &[(u64, f32)],
        params: &VerifyParams,
    ) -> Result<()> {
        let fresh: Vec<u64> = found
            .iter()
            .take(params.shortlist)
            .map(|f| f.0)
            .filter(|id| !checked.contains_key(id))
            .filter(|id| {
                let given = ctx.examine.as_ref();
                given.is_none_or(|c| c.expanded.iter().any(|e| e.0 == *id))
            })
            .collect();
        // Aligned without a window's turn; `dense` 0 turns alignment and the brightness term
        // off, as in `rerank`.
        let unturned = Candidates::default();
        let planes = self.planes(store, ctx, query.local, &fresh, &unturned, params)?;
        let mut cosines = Vec::with_capacity(fresh.len());
        for id in fresh {
            if let Some(v) = ctx.space.snapshot.vector(id)? {
                cosines.push((id, best_cosine(variants, v)));
            }
        }
        let examined = parallel::map(&cosines, ctx.threads, |&(id, cosine)| {
            examine(ctx, query, id, cosine, true, planes.get(&id), params)
        });
        for (&(id, _), c) in cosines.iter().zip(examined) {
            checked.insert(id, c?);
        }
        let mut evidence = Vec::with_capacity(checked.len());
        for c in checked.values_mut() {
            let Some(e) = c.evidence.as_mut() else {
                continue;
            };
            if let Some(v) = ctx.space.snapshot.vector(e.id)? {
                e.expanded = Some(exact::dot(expanded, v));
            }
            evidence.push(*e);
        }
        let rest: Vec<(u64, f32)> = hits
            .iter()
            .filter(|(id, _)| !checked.contains_key(id))
            .copied()
            .collect();
        *hits = ranking::rank(&evidence, params);
        hits.extend(rest);
        Ok(())
    }
}

/// Looking beneath pasted pictures (search::residual): when matched candidates cover only
/// part of the query, every other candidate with a dense plane is aligned again with those
/// parts left out (recorded as its `masked`), and the one [`residual::beneath`] picks gets
/// that alignment as its `beneath` (`planes`: the candidates' dense planes). A shard of a
/// sharded search looks beneath the collection's verified candidates, when given them, and
/// takes the collection's pick (`Candidates::verified`, `Candidates::beneath`; docs/RAY.md).
fn look_beneath(
    ctx: &SearchContext,
    query: Probe,
    planes: &Planes,
    checked: &mut HashMap<u64, Checked>,
    params: &VerifyParams,
) {
    let Some(dq) = query.local.dense.as_ref().filter(|_| params.dense > 0) else {
        return;
    };
    let verified: Vec<(f32, residual::Part)> = match &ctx.examine {
        Some(given) => match &given.verified {
            Some(v) => v.clone(),
            None => return,
        },
        None => checked
            .values()
            .filter_map(|c| Some((c.evidence?.coverage, c.footprint?)))
            .collect(),
    };
    let Some(parts) = residual::explained(&verified) else {
        return;
    };
    let Some(masked) = dq.masked(&parts) else {
        return;
    };
    let mut ids: Vec<u64> = checked
        .iter()
        .filter(|(_, c)| c.verdict != Some(Verdict::Verified))
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    // The planes `rerank` fetched for examining the candidates.
    let planes: Vec<(u64, &Plane)> = ids
        .iter()
        .filter_map(|id| planes.get(id).map(|p| (*id, &p.0)))
        .collect();
    // Kept with the query's observations: a shard aligns them so again in the call after the
    // one that looked (docs/RAY.md).
    let aligned = parallel::map(&planes, ctx.threads, |(id, plane)| {
        query
            .seen
            .masked(*id, &parts, || dense::align_masked(&masked, plane))
    });
    let scores: Vec<(u64, f32)> = planes
        .iter()
        .zip(&aligned)
        .map(|(p, a)| (p.0, a.0))
        .collect();
    let picked = match &ctx.examine {
        Some(given) => given.beneath,
        None => residual::beneath(&scores),
    };
    for ((id, _), (score, region)) in planes.iter().zip(aligned) {
        let Some(c) = checked.get_mut(id) else {
            continue;
        };
        c.masked = Some(score);
        let Some(e) = c.evidence.as_mut().filter(|_| Some(*id) == picked) else {
            continue;
        };
        e.beneath = Some(score);
        if ranking::rank_key(e, params).0 == ranking::BENEATH {
            c.verdict = Some(ranking::verdict(e, params));
            c.alignment = Some(score);
            c.region = region;
        }
    }
}

/// The best cosine of a stored vector with any of the query's variants.
fn best_cosine(variants: &[&[f32]], v: &[f32]) -> f32 {
    variants
        .iter()
        .map(|q| exact::dot(q, v))
        .fold(f32::MIN, f32::max)
}

/// Verifies one candidate with SIFT (when `sift`), aligns it densely when that did not verify
/// it (both observed once per batch, or per handle for a feature query: observed.rs), and
/// records the evidence and verdict.
fn examine(
    ctx: &SearchContext,
    query: Probe,
    id: u64,
    cosine: f32,
    sift: bool,
    plane: Option<&(Plane, Option<f32>)>,
    params: &VerifyParams,
) -> Result<Checked> {
    let how = (id, sift, plane.map(|p| p.1.map(f32::to_bits)));
    let seen = query
        .seen
        .examined(how, || observe(ctx, query.local, id, sift, plane, params))?;
    let Observed {
        verification: v,
        alignment,
        brightness_gap,
    } = seen;
    let e = Evidence {
        id,
        cosine,
        inliers: v.inliers,
        coverage: v.coverage,
        alignment: alignment.map(|a| a.0),
        brightness_gap,
        expanded: None,
        beneath: None,
    };
    let verdict = ranking::verdict(&e, params);
    Ok(Checked {
        inliers: sift.then_some(v.inliers),
        alignment: e.alignment,
        verdict: Some(verdict),
        evidence: Some(e),
        pairs: if verdict == Verdict::Verified {
            v.pairs
        } else {
            Vec::new()
        },
        region: alignment
            .and_then(|a| a.1)
            .filter(|_| verdict == Verdict::Aligned),
        // Enough inliers explain a part of the query, however small (a pasted picture under
        // `min_coverage` does not verify, but it is there).
        footprint: v.footprint.filter(|_| v.inliers >= params.min_inliers),
        masked: None,
    })
}

/// What examining one candidate finds whatever the query's global vectors: its SIFT match
/// (when `sift`), and its dense alignment when that did not verify it.
fn observe(
    ctx: &SearchContext,
    query: &QueryLocal,
    id: u64,
    sift: bool,
    plane: Option<&(Plane, Option<f32>)>,
    params: &VerifyParams,
) -> Result<Observed> {
    let packed = ctx.snapshot.local(id)?.unwrap_or(&[]);
    let v = match PackedFeatures::parse(packed) {
        Ok(Some(p)) if sift => local::verify(&query.features, &p, params),
        Ok(_) => local::Verification::default(),
        Err(e) => {
            return Err(Error::Invalid(format!(
                "row {id}: stored local features: {e}"
            )))
        }
    };
    let verified = ranking::is_verified(v.inliers, v.coverage, params);
    let alignment = match (&query.dense, plane) {
        (Some(dq), Some((plane, angle))) if !verified => Some(dense::align_at(dq, plane, *angle)),
        _ => None,
    };
    let brightness_gap = match (&query.dense, plane) {
        (Some(dq), Some((plane, _))) if verified => (dq.mean - plane.mean()).abs() / 255.0,
        _ => 0.0,
    };
    Ok(Observed {
        verification: v,
        alignment,
        brightness_gap,
    })
}
