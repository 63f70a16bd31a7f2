//! The stages of a search before verification, for every query of a batch: featurize,
//! project, retrieve, merge the variants and expand (αQE). Searching goes on to verify and
//! materialize (mod.rs); naming the candidates gathers what verification would examine
//! (candidates.rs).

use std::sync::Arc;

use super::context::SearchContext;
use super::observed::Observations;
use super::query::{self, PreparedQuery};
use super::{merge_variants, project, Ranked, Rows, Searcher};
use crate::error::Result;
use crate::local::VerifyParams;
use crate::options::{Augment, Query, SearchOptions};
use crate::pipeline::PipelineConfig;

/// A batch after the stages before verification (`Searcher::first_ranking`).
pub(super) struct FirstRanking {
    /// The database's vector length.
    pub dims: usize,
    pub ctx: SearchContext,
    pub rows: Rows,
    pub prepared: Vec<PreparedQuery>,
    pub merged: Vec<Option<Ranked>>,
    /// Candidates fetched per query.
    pub k: usize,
    /// αQE's depth as resolved.
    pub qe: usize,
    pub pipeline: Option<PipelineConfig>,
    pub augment: Augment,
    pub verify: Option<VerifyParams>,
}

impl Searcher<'_> {
    /// The stages before verification for every query of a batch: featurize, project,
    /// retrieve, merge the variants and expand (αQE). `Ok(None)`: the database is empty; an
    /// error is the whole batch's.
    pub(super) fn first_ranking(
        &self,
        queries: &[Query],
        opts: &SearchOptions,
        seen: &[Arc<Observations>],
    ) -> Result<Option<FirstRanking>> {
        let (pipeline, augment, verify) = self.settings(opts);
        let qe = opts
            .qe
            .unwrap_or(pipeline.as_ref().map(|p| p.query).unwrap_or_default().qe);
        opts.check()?;
        let Some(dims) = self.store.dims()? else {
            return Ok(None);
        };
        let dims = dims as usize;
        let mut ctx = SearchContext::new(self.store, self.spaces, &opts.filter, self.threads)?;
        ctx.examine = opts.candidates.clone();
        ctx.share = super::context::share(ctx.snapshot.live_count(), opts.collection_rows);
        // The query's local features: for verification, and for a VLAD block in the view.
        let sift = pipeline.as_ref().and_then(|p| p.local).map(|l| l.sift);
        let local = sift.filter(|_| verify.is_some() || self.spaces.has_vlad());
        let prepared = query::featurize(
            self.featurizer,
            self.store,
            &ctx.snapshot,
            queries,
            augment,
            local.as_ref(),
            seen,
        );
        let rows = project(&ctx, &prepared, dims);
        // Query-by-id leaves the query row out, so ask for one more; verification needs its
        // shortlist.
        let k = (opts.k + queries.iter().any(|q| matches!(q, Query::Id(_))) as usize)
            .max(verify.map_or(0, |v| v.shortlist));
        let found = self.retrieve(&ctx, &rows.flat, rows.dims, k, opts);
        let mut merged = merge_variants(&rows, found, queries.len(), k);
        if qe > 0 {
            self.expand(&ctx, &rows, &mut merged, qe, k, opts);
        }
        Ok(Some(FirstRanking {
            dims,
            ctx,
            rows,
            prepared,
            merged,
            k,
            qe,
            pipeline,
            augment,
            verify,
        }))
    }
}
