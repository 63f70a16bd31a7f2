//! Shared by the engine's integration tests on real photos.
#![allow(dead_code)]

use std::path::Path;

mod datasets;
pub use datasets::datasets;

/// One JSON value per line.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
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
