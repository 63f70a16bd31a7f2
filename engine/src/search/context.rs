//! What one search batch runs against: one snapshot, the space it searches, the filter
//! already evaluated into the set of allowed ids, and for a shard of a collection the
//! candidates verification examines (candidates.rs).

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
