//! The first ranking of a verified search of query features, kept for the call that follows.
//!
//! The shards of one collection search each query twice (docs/RAY.md): their first ranking,
//! then — once the whole collection's verified results are known — again with its expansion
//! vectors (`SearchOptions::expand_with`). The second call's first ranking is the first call's
//! (same features, rows, space and settings), so it starts from the merged list and checked
//! candidates kept here instead of verifying them again. Only `Query::Features` queries are
//! kept: their inputs are exactly known.

use std::collections::HashMap;

use super::context::SearchContext;
use super::query::QueryFeatures;
use super::recent::Recent;
use super::rerank::Checked;
use crate::local::VerifyParams;
use crate::options::{Augment, SearchOptions};

/// A database handle's recent first passes: each query's first ranking after verification, and
/// what it checked.
pub(crate) type FirstPasses = Recent<(Vec<(u64, f32)>, HashMap<u64, Checked>)>;

/// The settings a first pass of a search with `opts` depends on (augmentation, αQE depth and
/// the candidates fetched `k` as the search resolved them, and the candidates it was given to
/// examine, with the collection's verified footprints and look-beneath pick, which change its
/// ranking): everything before verified expansion, so not `expand`, `upright`, the expansion's
/// given candidates or what only materializing reads.
pub(crate) fn settings(
    opts: &SearchOptions,
    augment: Augment,
    qe: usize,
    k: usize,
    params: &VerifyParams,
) -> String {
    let params = VerifyParams {
        expand: 0,
        upright: false,
        ..*params
    };
    format!(
        "{:?} {:?} {:?}",
        (
            opts.mode,
            &opts.filter,
            opts.nprobe,
            opts.rerank,
            opts.collection_rows
        ),
        (opts.rerank_depth, augment, qe, k, params),
        opts.candidates.as_ref().map(|c| (
            (&c.shortlist, &c.voted, &c.dense, &c.turns, c.asked),
            (&c.verified, c.beneath)
        ))
    )
}

/// What a first pass depends on: the query's features, the rows and space searched, the
/// records a filter read (the handle's attribute writes before it was evaluated), and
/// `settings` (every option the stages before expansion read; not the expansion, the upright
/// fallback, or what only materializing reads).
pub(crate) fn key(features: &QueryFeatures, ctx: &SearchContext, settings: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&features.to_bytes());
    let space = ctx.space.projection.as_ref().map(|p| p.fingerprint());
    let records = ctx.filtered().then_some(ctx.attribute_writes);
    let rows = (
        ctx.snapshot.make_up(),
        ctx.snapshot.max_id(),
        space,
        records,
    );
    h.update(format!("{rows:?}").as_bytes());
    h.update(settings.as_bytes());
    h.finalize()
}
