//! `imgvec reindex`: rebuild a database with another pipeline from the files its rows came from.
//!
//! The new database is built beside the old one (`<DB>.reindex-new`), from the stored paths of
//! the live rows (each row's attributes kept), then swapped in by two renames: the old folder
//! becomes `<DB>.reindex-old`, the new one takes its name, and the old one is removed. A crash
//! between the renames leaves `<DB>.reindex-old` and no `<DB>`; the next reindex (or a person)
//! renames it back. Rows get new ids. Rows whose file is gone, or that were inserted from bytes
//! (no file to read), are reported and left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::database::Database;
use crate::error::{Error, Result};
use crate::ingest::{IngestEvent, IngestOptions, IngestSummary, Source};
use crate::options::OpenOptions;
use crate::pipeline::PipelineChoice;

#[derive(Debug, Clone, Serialize)]
pub struct ReindexReport {
    /// Live rows of the old database.
    pub rows_before: usize,
    /// Files re-extracted and stored.
    pub stored: u64,
    /// Stored paths that no longer name a readable file.
    pub gone: Vec<String>,
    /// Files that could not be read or decoded (path, reason).
    pub errors: Vec<(String, String)>,
    pub pipeline: String,
    pub seconds: f64,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    dir.with_file_name(format!("{name}.{suffix}"))
}

/// Rebuilds the database in `dir` with `choice` (a named preset or a model). `open` supplies
/// threads and index options; `on_event` sees every ingest event of the rebuild.
pub fn reindex(
    dir: &Path,
    choice: PipelineChoice,
    open: OpenOptions,
    on_event: &(dyn Fn(&IngestEvent) + Sync),
) -> Result<ReindexReport> {
    let started = std::time::Instant::now();
    let old_dir = sibling(dir, "reindex-old");
    let new_dir = sibling(dir, "reindex-new");
    if !dir.exists() && old_dir.is_dir() {
        // An earlier reindex stopped between its two renames: the old database is intact.
        std::fs::rename(&old_dir, dir).map_err(|e| io(dir, e))?;
    }
    if !Database::exists(dir) {
        return Err(Error::Invalid(format!(
            "{}: not an imgvec database",
            dir.display()
        )));
    }
    if choice == PipelineChoice::Default {
        return Err(Error::Invalid(
            "reindex needs --pipeline NAME or --model FILE".into(),
        ));
    }
    // The writer lock keeps other writers out while the rebuild reads the rows.
    let old = Database::open(
        dir,
        OpenOptions {
            background_compaction: false,
            ..open.clone()
        },
    )?;
    let records = old.records()?;
    let mut groups: BTreeMap<BTreeMap<String, String>, Vec<Source>> = BTreeMap::new();
    let mut gone = Vec::new();
    for r in &records {
        let path = Path::new(&r.path);
        if path.is_absolute() && path.is_file() {
            groups
                .entry(r.attributes.clone())
                .or_default()
                .push(Source::File(path.to_path_buf()));
        } else {
            gone.push(r.path.clone());
        }
    }
    if new_dir.exists() {
        std::fs::remove_dir_all(&new_dir).map_err(|e| io(&new_dir, e))?;
    }
    let pipeline_name = match &choice {
        PipelineChoice::Preset(p) => p.name().to_string(),
        _ => "custom".into(),
    };
    let mut stored = 0;
    let errors = {
        let new = Database::open(
            &new_dir,
            OpenOptions {
                pipeline: choice,
                background_compaction: false,
                ..open
            },
        )?;
        let errors_seen = parking_lot::Mutex::new(Vec::new());
        let record = |e: &IngestEvent| {
            if let Some(reason) = &e.error {
                errors_seen.lock().push((e.path.clone(), reason.clone()));
            }
            on_event(e);
        };
        for (attributes, sources) in groups {
            let opts = IngestOptions {
                attributes,
                ..IngestOptions::default()
            };
            let summary: IngestSummary = new.ingest(sources, &opts, &record)?;
            stored += summary.stored + summary.replaced;
        }
        new.refresh_indexes()?;
        errors_seen.into_inner()
    };
    drop(old);
    std::fs::rename(dir, &old_dir).map_err(|e| io(dir, e))?;
    std::fs::rename(&new_dir, dir).map_err(|e| io(&new_dir, e))?;
    std::fs::remove_dir_all(&old_dir).map_err(|e| io(&old_dir, e))?;
    Ok(ReindexReport {
        rows_before: records.len(),
        stored,
        gone,
        errors,
        pipeline: pipeline_name,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn io(path: &Path, e: std::io::Error) -> Error {
    imgvec_storage::StorageError::io(path, e).into()
}
