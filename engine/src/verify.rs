//! `imgvec verify`: is the database whole? The store checks its own parts (every segment
//! checksum at open, then records ↔ indexes ↔ thumbnails ↔ rows: `Store::verify`); this adds
//! what lives beside it: the pipeline's model file against its fingerprint, and every derived
//! publication (approximate indexes, whitening, VLAD, voting, dense windows, whitened view)
//! against the files it names, each file's header and CRC checked.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use imgvec_storage::{Store, StoreCheck};
use serde::Serialize;

use crate::derived::artifact;
use crate::derived::publish::Publisher;
use crate::error::Result;
use crate::index::INDEX_DIR;
use crate::pipeline;
use crate::reduce::REDUCTION_DIR;

/// The outcome of `verify`: what was read and every problem found (empty = whole).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: String,
    pub ok: bool,
    #[serde(flatten)]
    pub store: StoreCheck,
    /// Derived files named by a publication, read and checked.
    pub derived_files: usize,
    pub derived_bytes: u64,
    /// The pipeline's model file, when the database has a pipeline.
    pub model: Option<String>,
}

/// Publications (meta key, folder relative to the database) and the files each names.
pub(crate) fn publications(store: &Store) -> Result<Vec<(String, PathBuf, Vec<String>)>> {
    let mut out = Vec::new();
    for (key, value) in store.meta_entries()? {
        let Some(folder) = Publisher::folder_of(&key) else {
            continue;
        };
        let mut files = Vec::new();
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&value) {
            file_names(&json, &mut files);
        }
        out.push((key, folder, files));
    }
    Ok(out)
}

/// Every string in `v` that is a generation's file name.
fn file_names(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if Publisher::is_file_name(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| file_names(i, out)),
        serde_json::Value::Object(map) => map.values().for_each(|i| file_names(i, out)),
        _ => {}
    }
}

pub(crate) fn verify(store: &Store) -> Result<VerifyReport> {
    let dir = store.dir();
    let mut check = store.verify()?;
    let mut report_model = None;
    if let Some(p) = pipeline::stored(store)? {
        let path = dir.join(&p.model);
        report_model = Some(path.display().to_string());
        // Checked before anything is read: the record may name any file.
        let fingerprint = if pipeline::is_model_file(&p.model) {
            pipeline::model_fingerprint(&path)
        } else {
            Err(crate::error::Error::Invalid(format!(
                "the pipeline names model `{}`, not a file in models/",
                p.model
            )))
        };
        match fingerprint {
            Ok(f) if f == p.model_fingerprint => {}
            Ok(_) => check.problems.push(format!(
                "{}: the model file differs from the one the pipeline was built with",
                path.display()
            )),
            Err(e) => check.problems.push(e.to_string()),
        }
    }
    let mut named = HashSet::new();
    let (mut derived_files, mut derived_bytes) = (0, 0);
    for (key, folder, files) in publications(store)? {
        for name in files {
            let path = dir.join(&folder).join(&name);
            match artifact::check_file(&path) {
                Ok(bytes) => {
                    derived_files += 1;
                    derived_bytes += bytes;
                }
                Err(reason) => check
                    .problems
                    .push(format!("{} (named by {key}): {reason}", path.display())),
            }
            named.insert(path);
        }
    }
    for root in [INDEX_DIR, REDUCTION_DIR] {
        for path in files_under(&dir.join(root)) {
            if !named.contains(&path) {
                check.notes.push(format!(
                    "{}: named by no publication (a writer removes it)",
                    path.display()
                ));
            }
        }
    }
    Ok(VerifyReport {
        path: dir.display().to_string(),
        ok: check.problems.is_empty(),
        store: check,
        derived_files,
        derived_bytes,
        model: report_model,
    })
}

/// The files under `dir`, recursively (none when it is absent).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_file() {
            out.push(entry.into_path());
        }
    }
    out
}
