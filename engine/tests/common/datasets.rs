//! Where the benchmark folders are. Shared by the integration tests of every crate (the CLI's and
//! the ingest crate's include this file by path; every crate sits one level below the root, so
//! the relative path below holds for each).

use std::path::{Path, PathBuf};

/// ../shared/datasets (or $IMGVEC_DATASETS): the benchmark folders the project is measured on.
pub fn datasets() -> PathBuf {
    let candidates = [
        std::env::var_os("IMGVEC_DATASETS").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets")),
        Some(PathBuf::from("/work/shared/datasets")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("instances-dev/db").is_dir())
        .expect("instances-dev not found: set IMGVEC_DATASETS to the folder holding it")
}
