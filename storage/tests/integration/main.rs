//! The storage crate's integration tests: real RocksDB and segment files, concurrent readers
//! and writers, SIGKILL and simulated power cuts, and the format document checked against the
//! bytes on disk. One test binary, one module per area.

mod common;
mod concurrency;
mod format_doc;
mod kill;
mod power_cut;
