//! One module per command group. Each entry point takes its parsed arguments (and the
//! `OpenOptions` built from the global flags) and returns the exit status.

pub(crate) mod admin;
pub(crate) mod bench;
pub(crate) mod info;
pub(crate) mod ingest;
pub(crate) mod search;
pub(crate) mod train;
