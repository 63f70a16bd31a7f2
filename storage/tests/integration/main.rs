//! The storage crate's integration tests: real RocksDB and segment files, concurrent readers
//! and writers, SIGKILL and simulated power cuts, and the format document checked against the
//! bytes on disk. One test binary, one module per area.

mod common;
mod compaction_memory;
mod concurrency;
mod format_doc;
mod kill;
mod power_cut;

/// Counts heap bytes per thread (for `compaction_memory`); otherwise the system allocator.
#[global_allocator]
static ALLOCATOR: compaction_memory::Counting = compaction_memory::Counting;
