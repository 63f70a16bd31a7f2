//! What the `imgvec.ray` driver asks the engine while it merges a collection's shards: the
//! decisions one database would make over all the rows, given every shard's part of them.

use pyo3::prelude::*;

/// Whether one database holding a collection's rows would look beneath the pictures its
/// matched hits cover, given every shard's hits' (coverage, footprint) (`imgvec.ray`).
#[pyfunction]
pub(crate) fn looks_beneath(verified: Vec<(f32, [f32; 4])>) -> bool {
    imgvec::looks_beneath(&verified)
}

/// The key of the candidate one database would rank first as what the query shows beneath the
/// pictures pasted over it, given every shard's candidates' alignments there, keyed by distinct
/// numbers (`imgvec.ray`).
#[pyfunction]
pub(crate) fn beneath_pick(aligned: Vec<(u64, f32)>) -> Option<u64> {
    imgvec::beneath_pick(&aligned)
}
