//! Helpers shared by the integration tests of every imgvec crate (a dev-dependency only).

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

/// One JSON value per line.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// File name without its extension.
pub fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}
