//! What one search batch runs against: one snapshot, the space it searches, the filter
//! already evaluated into the set of allowed ids, and for a shard of a collection the
//! candidates verification examines (candidates.rs) and its share of the collection's rows,
//! which splits the budgets one database spends per query (`shard_budget`).

use std::collections::HashSet;
use std::sync::Arc;

use imgvec_storage::{Snapshot, Store};

use super::candidates::Candidates;
use super::space::{Space, Spaces};
use crate::error::Result;
use crate::options::Filter;

pub(crate) struct SearchContext {
    /// The stored rows every stage of the batch reads (vectors, local features, tombstones).
    pub snapshot: Arc<Snapshot>,
    /// The space of that snapshot the batch searches (stored vectors or whitened view).
    pub space: Space,
    /// Ids the filter allows; `None` when there is no filter.
    allowed: Option<HashSet<u64>>,
    /// The handle's attribute writes before the filter was evaluated (`Spaces::attribute_writes`).
    pub attribute_writes: u64,
    /// Threads a stage may spread one query's independent work over (the handle's).
    pub threads: usize,
    /// What verification examines instead of the candidates it gathers itself
    /// (`SearchOptions::candidates`).
    pub examine: Option<Candidates>,
    /// This database's share of its collection's live rows (`SearchOptions::collection_rows`;
    /// 1 for a database on its own).
    pub share: f64,
}

impl SearchContext {
    pub fn new(
        store: &Store,
        spaces: &Spaces,
        filter: &Filter,
        threads: usize,
    ) -> Result<SearchContext> {
        let snapshot = store.snapshot();
        let space = spaces.space(snapshot.clone())?;
        let attribute_writes = spaces.attribute_writes();
        let allowed = filter.allowed(store)?;
        Ok(SearchContext {
            snapshot,
            space,
            allowed,
            attribute_writes,
            threads: threads.max(1),
            examine: None,
            share: 1.0,
        })
    }

    /// Whether a filter restricts the results.
    pub fn filtered(&self) -> bool {
        self.allowed.is_some()
    }

    /// Whether the filter allows `id` (deleted rows are filtered separately).
    pub fn accept(&self, id: u64) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(&id))
    }

    /// Whether `id` is live in the snapshot and allowed.
    pub fn is_live(&self, id: u64) -> bool {
        !self.snapshot.is_deleted(id) && self.accept(id)
    }
}

/// The share of its collection's live rows (`collection`) a database holding `own` of them
/// holds: 1 on its own, and where the collection is said to hold fewer than it does (a count
/// taken before rows were added).
pub(crate) fn share(own: usize, collection: Option<u64>) -> f64 {
    match collection {
        Some(n) if n > 0 => (own as f64 / n as f64).min(1.0),
        _ => 1.0,
    }
}

/// How many of the `budget` rows one database holding a whole collection would rate best a
/// shard holding `share` of the collection's rows takes, so that, short of a very rare draw,
/// every row of its own among the collection's best is among them: its expected part
/// `budget · share`, plus four standard deviations of that part (rows go to shards by a hash
/// of their key, so the part is binomial) and 8. The whole budget for a whole collection.
pub(crate) fn shard_budget(budget: usize, share: f64) -> usize {
    let share = share.clamp(0.0, 1.0);
    let part = budget as f64 * share;
    let spread = 4.0 * (part * (1.0 - share)).sqrt();
    ((part + spread).ceil() as usize + 8).min(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_table() {
        for (own, collection, want) in [
            (500, None, 1.0),
            (500, Some(1_000), 0.5),
            (100, Some(1_000), 0.1),
            (1_000, Some(1_000), 1.0),
            // A count taken before this shard grew.
            (1_200, Some(1_000), 1.0),
            (0, Some(1_000), 0.0),
            (500, Some(0), 1.0),
        ] {
            assert_eq!(share(own, collection), want, "{own} of {collection:?}");
        }
    }

    #[test]
    fn shard_budget_table() {
        for (budget, share, want) in [
            // One database, or a collection of one shard: the whole budget.
            (512, 1.0, 512),
            // Two shards: 256 expected, sd 11.3.
            (512, 0.5, 256 + 46 + 8),
            // Ten shards: 51.2 expected, sd 6.8.
            (512, 0.1, 79 + 8),
            // A hundred: 5.1 expected, sd 2.3.
            (512, 0.01, 15 + 8),
            (512, 0.0, 8),
            (512, 0.9, 488 + 8),
            // Never more than the budget.
            (512, 0.97, 512),
            (4, 0.5, 4),
            (0, 0.5, 0),
        ] {
            assert_eq!(shard_budget(budget, share), want, "{budget} at {share}");
        }
    }
}
