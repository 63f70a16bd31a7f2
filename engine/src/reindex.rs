//! `imgvec reindex`: rebuild a database with another pipeline from the files its rows came from.
//!
//! The old database's folder lock ([`FolderLock`]) is held from start to finish. The new database is built
//! beside it (`<DB>.reindex-new`) from the live rows: a row whose key names a readable file is
//! re-extracted from that file; a row inserted from bytes (its key is not an absolute path) from
//! its stored thumbnail, the only copy of its pixels the database keeps. Each row keeps its key
//! and attributes; rows get new ids. A row that cannot be carried over (its file has gone, or
//! no longer decodes) stops the reindex before anything is swapped, unless the caller allows
//! dropping such rows (`drop_missing`); `dry_run` only reports.
//!
//! The swap exchanges the two folders atomically (`Vfs::exchange`, Linux
//! `renameat2(RENAME_EXCHANGE)`), through the database's file layer, so `<DB>`
//! always names a complete database and no writer can slip into a gap; the old database then
//! moves to `<DB>.reindex-old` and is removed. Where the file system cannot exchange, two renames
//! are used, and a crash between them leaves `<DB>.reindex-old` without `<DB>`:
//! [`recover_interrupted_swap`], run by every open, renames it back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgvec_storage::lock::FolderLock;
use imgvec_storage::{ImageRecord, StdFs, StorageError, Vfs};
use serde::Serialize;

use crate::database::Database;
use crate::error::{Error, Result};
use crate::ingest::{IngestEvent, IngestOptions, Source};
use crate::options::OpenOptions;
use crate::pipeline::PipelineChoice;

/// What a reindex may do beyond re-extracting every row.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReindexOptions {
    /// Leave out rows that cannot be carried over (file gone or undecodable) instead of
    /// stopping before the swap.
    pub drop_missing: bool,
    /// Report what would be carried over, and change nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReindexReport {
    /// Live rows of the old database.
    pub rows_before: usize,
    /// Rows re-extracted and stored in the new database (0 on a dry run).
    pub stored: u64,
    /// Rows inserted from bytes, carried over from their stored thumbnails.
    pub from_thumbnails: usize,
    /// Stored paths that no longer name a readable file.
    pub gone: Vec<String>,
    /// Files that could not be read or decoded (path, reason).
    pub errors: Vec<(String, String)>,
    /// Whether the new database replaced the old one. `false` on a dry run, and when rows
    /// could not be carried over without `drop_missing` (then nothing changed).
    pub swapped: bool,
    pub pipeline: String,
    pub seconds: f64,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "db".into());
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

/// Finishes a swap a crash interrupted between its two renames: when `dir` holds no database
/// and `<dir>.reindex-old` does, that is the intact old database, and it gets its name back.
pub fn recover_interrupted_swap(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let old_dir = sibling(dir, "reindex-old");
    if !dir.exists() && Database::exists(&old_dir) {
        tracing::warn!(
            "{}: an interrupted reindex left the database at {}; moving it back",
            dir.display(),
            old_dir.display()
        );
        vfs.rename(&old_dir, dir)?;
        sync_parent(vfs, dir)?;
    }
    Ok(())
}

/// How one live row reaches the new database.
enum Carry {
    File(PathBuf),
    Thumbnail(Arc<[u8]>),
    Gone,
}

fn carry(record: &ImageRecord, thumbnail: Option<Vec<u8>>) -> Carry {
    let path = record.os_path();
    if path.is_absolute() {
        if path.is_file() {
            Carry::File(path)
        } else {
            Carry::Gone
        }
    } else {
        thumbnail.map_or(Carry::Gone, |t| Carry::Thumbnail(Arc::from(t)))
    }
}

/// Rebuilds the database in `dir` with `choice` (a named preset or a model). `open` supplies
/// threads and index options; `on_event` sees every ingest event of the rebuild.
pub fn reindex(
    dir: &Path,
    choice: PipelineChoice,
    options: ReindexOptions,
    open: OpenOptions,
    on_event: &(dyn Fn(&IngestEvent) + Sync),
) -> Result<ReindexReport> {
    let started = std::time::Instant::now();
    if choice == PipelineChoice::Default {
        return Err(Error::Invalid(
            "reindex needs --pipeline NAME or --model FILE".into(),
        ));
    }
    let pipeline_name = match &choice {
        PipelineChoice::Preset(p) | PipelineChoice::PresetModel { preset: p, .. } => {
            p.name().to_string()
        }
        PipelineChoice::Default | PipelineChoice::Model { .. } => "custom".into(),
    };
    // The folder lock keeps other writers out from here until the swap is done. It is this
    // function's, not the old handle's: RocksDB works by path, so the old handle is closed
    // before the swap, while the lock, which follows the folder, stays held.
    let vfs = open
        .file_layer
        .as_ref()
        .map_or_else(|| Arc::new(StdFs) as Arc<dyn Vfs>, |layer| layer.0.clone());
    recover_interrupted_swap(vfs.as_ref(), dir)?;
    if !Database::exists(dir) {
        return Err(StorageError::NotADatabase {
            path: dir.to_path_buf(),
            reason: "it has no meta/CURRENT".into(),
        }
        .into());
    }
    let folder_lock = FolderLock::acquire(dir)?;
    let old = Database::open_with_lock(
        dir,
        OpenOptions {
            background_compaction: false,
            create: false,
            ..open.clone()
        },
        Some(folder_lock.clone()),
    )?;
    let old_dir = sibling(dir, "reindex-old");
    let new_dir = sibling(dir, "reindex-new");
    let records = old.records()?;
    let Plan {
        groups,
        gone,
        from_thumbnails,
    } = plan(&old, &records)?;
    let mut report = ReindexReport {
        rows_before: records.len(),
        stored: 0,
        from_thumbnails,
        gone,
        errors: Vec::new(),
        swapped: false,
        pipeline: pipeline_name,
        seconds: 0.0,
    };
    let finish = |mut report: ReindexReport| {
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    };
    if options.dry_run || (!report.gone.is_empty() && !options.drop_missing) {
        return finish(report);
    }
    for leftover in [&new_dir, &old_dir] {
        remove_if_present(leftover)?;
    }
    let new_open = OpenOptions {
        pipeline: choice,
        background_compaction: false,
        create: true,
        ..open
    };
    (report.stored, report.errors) = build(&new_dir, new_open, groups, on_event)?;
    if !report.errors.is_empty() && !options.drop_missing {
        remove_if_present(&new_dir)?;
        report.stored = 0;
        return finish(report);
    }
    drop(old);
    swap(vfs.as_ref(), dir, &new_dir, &old_dir)?;
    report.swapped = true;
    remove_if_present(&old_dir)?;
    drop(folder_lock);
    finish(report)
}

/// The live rows grouped by their attributes (one ingest call each), as the sources they are
/// re-extracted from, and the rows that cannot be carried over.
struct Plan {
    groups: BTreeMap<BTreeMap<String, String>, Vec<Source>>,
    gone: Vec<String>,
    from_thumbnails: usize,
}

fn plan(old: &Database, records: &[ImageRecord]) -> Result<Plan> {
    let mut plan = Plan {
        groups: BTreeMap::new(),
        gone: Vec::new(),
        from_thumbnails: 0,
    };
    for r in records {
        let source = match carry(r, old.thumbnail(r.id)?) {
            Carry::File(path) => Source::File(path),
            Carry::Thumbnail(bytes) => {
                plan.from_thumbnails += 1;
                Source::Bytes {
                    key: r.path.clone(),
                    bytes,
                }
            }
            Carry::Gone => {
                plan.gone.push(r.path.clone());
                continue;
            }
        };
        plan.groups
            .entry(r.attributes.clone())
            .or_default()
            .push(source);
    }
    Ok(plan)
}

/// Builds the new database at `new_dir` from `groups`; returns the rows stored and the sources
/// that failed (path, reason).
fn build(
    new_dir: &Path,
    open: OpenOptions,
    groups: BTreeMap<BTreeMap<String, String>, Vec<Source>>,
    on_event: &(dyn Fn(&IngestEvent) + Sync),
) -> Result<(u64, Vec<(String, String)>)> {
    let new = Database::open(new_dir, open)?;
    let errors = parking_lot::Mutex::new(Vec::new());
    let record = |e: &IngestEvent| {
        if let Some(reason) = &e.error {
            errors.lock().push((e.path.clone(), reason.clone()));
        }
        on_event(e);
    };
    let mut stored = 0;
    for (attributes, sources) in groups {
        let opts = IngestOptions {
            attributes,
            ..IngestOptions::default()
        };
        let summary = new.ingest(sources, &opts, &record)?;
        stored += summary.stored + summary.replaced;
    }
    new.refresh_indexes()?;
    Ok((stored, errors.into_inner()))
}

/// Puts the complete database at `new_dir` in `dir`'s place, and the old one at `old_dir`.
fn swap(vfs: &dyn Vfs, dir: &Path, new_dir: &Path, old_dir: &Path) -> Result<()> {
    match vfs.exchange(new_dir, dir) {
        Ok(()) => {
            sync_parent(vfs, dir)?;
            vfs.rename(new_dir, old_dir)?;
        }
        Err(e) => {
            tracing::warn!(
                "{}: the file system cannot exchange folders atomically ({e}); renaming twice",
                dir.display()
            );
            vfs.rename(dir, old_dir)?;
            vfs.rename(new_dir, dir)?;
        }
    }
    sync_parent(vfs, dir)
}

fn remove_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir, e)),
        _ => Ok(()),
    }
}

fn sync_parent(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(vfs.sync_dir(parent)?)
}

fn io(path: &Path, e: std::io::Error) -> Error {
    StorageError::io(path, e).into()
}
