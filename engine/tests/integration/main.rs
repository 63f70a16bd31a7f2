//! The engine's integration tests on the real stack (RocksDB, libtorch, FAISS, the default
//! model) and real photos: one test binary, one module per area.

use std::path::{Path, PathBuf};

use imgvec::{Database, IngestOptions, OpenOptions, PipelineChoice, Source};

mod api;
mod borders;
mod calibration;
mod indexes;
mod local;
mod parsers;
mod power_cut;
mod presets;
mod shards;
mod upright;

/// A new database at `dir` (no background compaction) with `pipeline`, holding `files`.
pub fn database_of(dir: &Path, pipeline: PipelineChoice, files: &[PathBuf]) -> Database {
    let opts = OpenOptions {
        pipeline,
        background_compaction: false,
        ..OpenOptions::default()
    };
    let db = Database::open(dir, opts).unwrap();
    let sources = files.iter().cloned().map(Source::File).collect();
    let summary = db
        .ingest(sources, &IngestOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(summary.errors, 0);
    db
}
