//! The first ranking of a verified search of query features, kept for the call that follows.
//!
//! The shards of one collection search each query twice (docs/RAY.md): their first ranking,
//! then — once the whole collection's verified results are known — again with its expansion
//! vectors (`SearchOptions::expand_with`). The second call's first ranking is the first call's
//! (same features, rows, space and settings), so it starts from the merged list and checked
//! candidates kept here instead of verifying them again. Only `Query::Features` queries are
//! kept: their inputs are exactly known.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::context::SearchContext;
use super::query::QueryFeatures;
use super::rerank::Checked;
use crate::local::VerifyParams;
use crate::options::{Augment, SearchOptions};

/// First passes one database handle keeps (the most recent).
const KEEP: usize = 64;

/// One query's first ranking after verification, and what it checked.
pub(crate) type FirstPass = Arc<(Vec<(u64, f32)>, HashMap<u64, Checked>)>;

/// A database handle's recent first passes.
#[derive(Default)]
pub(crate) struct FirstPasses {
    kept: Mutex<VecDeque<(blake3::Hash, FirstPass)>>,
    reused: AtomicU64,
}

impl FirstPasses {
    pub fn get(&self, key: &blake3::Hash) -> Option<FirstPass> {
        let kept = self.kept.lock();
        let found = kept.iter().find(|(k, _)| k == key).map(|(_, p)| p.clone());
        self.reused
            .fetch_add(found.is_some() as u64, Ordering::Relaxed);
        found
    }

    /// How many first passes were found again.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    pub fn put(&self, key: blake3::Hash, pass: FirstPass) {
        let mut kept = self.kept.lock();
        if kept.iter().any(|(k, _)| *k == key) {
            return;
        }
        if kept.len() == KEEP {
            kept.pop_front();
        }
        kept.push_back((key, pass));
    }
}

/// The settings a first pass of a search with `opts` depends on (augmentation, αQE depth and
/// the candidates fetched `k` as the search resolved them, and the candidates it was given to
/// examine): everything before verified expansion, so not `expand`, `upright`, the expansion's
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
        (opts.mode, &opts.filter, opts.nprobe, opts.rerank),
        (opts.rerank_depth, augment, qe, k, params),
        opts.candidates
            .as_ref()
            .map(|c| (&c.shortlist, &c.voted, &c.dense, &c.turns, c.asked))
    )
}

/// What a first pass depends on: the query's features, the rows and space searched, and
/// `settings` (every option the stages before expansion read; not the expansion, the upright
/// fallback, or what only materializing reads).
pub(crate) fn key(features: &QueryFeatures, ctx: &SearchContext, settings: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&features.to_bytes());
    let space = ctx.space.projection.as_ref().map(|p| p.fingerprint());
    let rows = (ctx.snapshot.make_up(), ctx.snapshot.max_id(), space);
    h.update(format!("{rows:?}").as_bytes());
    h.update(settings.as_bytes());
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recent_passes_are_kept_once_each() {
        let passes = FirstPasses::default();
        let key = |i: u32| blake3::hash(&i.to_le_bytes());
        let pass = |id: u64| Arc::new((vec![(id, 0.5)], HashMap::new()));
        for i in 0..KEEP as u32 + 2 {
            passes.put(key(i), pass(i as u64));
        }
        passes.put(key(5), pass(99)); // kept already: not replaced
        assert!(passes.get(&key(0)).is_none() && passes.get(&key(1)).is_none());
        assert_eq!(passes.get(&key(5)).unwrap().0, vec![(5, 0.5)]);
        assert_eq!(
            passes.get(&key(KEEP as u32 + 1)).unwrap().0[0].0,
            KEEP as u64 + 1
        );
        assert_eq!(passes.kept.lock().len(), KEEP);
        assert_eq!(passes.reused(), 2);
    }
}
