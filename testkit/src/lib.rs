//! Helpers shared by the integration tests of every imgvec crate (a dev-dependency only).

use std::path::{Path, PathBuf};

/// The repository's root, found when the test runs: the tested crate's folder (cargo sets
/// `CARGO_MANIFEST_DIR` for a test it runs) is one below it. Not `env!` at build time: CI and
/// sessions share a cargo target folder, and a test binary reused from another checkout's build
/// would look in that checkout (which may be gone, or hold another `.venv`).
pub fn repo_root() -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    crate_dir.join("..")
}

/// ../shared/datasets (or $IMGVEC_DATASETS): the benchmark folders the project is measured on.
pub fn datasets() -> PathBuf {
    let candidates = [
        std::env::var_os("IMGVEC_DATASETS").map(PathBuf::from),
        Some(repo_root().join("../shared/datasets")),
        Some(PathBuf::from("/work/shared/datasets")),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("instances-dev/db").is_dir())
        .expect("instances-dev not found: set IMGVEC_DATASETS to the folder holding it");
    // Canonical, as stored paths are: tests compare them with the files they ingested.
    std::fs::canonicalize(&found).unwrap_or(found)
}

/// The first `n` images of instances-dev's `db/` folder, in name order.
pub fn db_images(n: usize) -> Vec<PathBuf> {
    let dir = datasets().join("instances-dev/db");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a folder entry").path())
        .collect();
    files.sort();
    files.truncate(n);
    files
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
