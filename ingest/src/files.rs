//! Finding the files to ingest, and the default model's location.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::decode::has_image_extension;
use crate::extractor::ExtractError;

/// The outcome of expanding the paths given to an ingest.
#[derive(Debug, Default)]
pub struct FileList {
    /// Canonical absolute paths of image files, in walk order, each once.
    pub images: Vec<PathBuf>,
    /// Files skipped because their extension is not an image format.
    pub skipped: Vec<PathBuf>,
    /// Paths that could not be read at all (missing, permission denied), with the reason.
    pub errors: Vec<(PathBuf, String)>,
}

/// Expands files and folders (recursively, sorted by name) into the images to ingest.
pub fn collect_files(paths: &[PathBuf]) -> FileList {
    let mut list = FileList::default();
    let mut seen = HashSet::new();
    for root in paths {
        for entry in walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let reason = e
                        .io_error()
                        .map(|io| io.to_string())
                        .unwrap_or_else(|| e.to_string());
                    list.errors.push((path, reason));
                    continue;
                }
            };
            if entry.file_type().is_dir() {
                continue;
            }
            if !has_image_extension(entry.path()) {
                list.skipped.push(entry.path().to_path_buf());
                continue;
            }
            match std::fs::canonicalize(entry.path()) {
                Ok(canonical) => {
                    if seen.insert(canonical.clone()) {
                        list.images.push(canonical);
                    }
                }
                Err(e) => list
                    .errors
                    .push((entry.path().to_path_buf(), e.to_string())),
            }
        }
    }
    list
}

/// File name of the default MobileNetV2 extractor that `scripts/setup.sh` builds.
pub const DEFAULT_MODEL_FILE: &str = "mobilenet_v2.pt";

/// Folder holding default models: `$IMGVEC_MODEL_DIR`, else `$HOME/.local/share/imgvec/models`.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGVEC_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    Path::new(&home).join(".local/share/imgvec/models")
}

/// The default model file, or an error that names the setup command.
pub fn default_model_path() -> Result<PathBuf, ExtractError> {
    let path = model_dir().join(DEFAULT_MODEL_FILE);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ExtractError::MissingDefaultModel { path })
    }
}

/// BLAKE3 of a file's bytes: the content identity used to recognise unchanged files.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}
