//! `imgvec backup`: a consistent copy of a database while it is in use. The store copies
//! itself from one point in time (`Store::backup_to`); the model and derived files beside it
//! are immutable once written (each generation has its own name), so they are hard-linked, or
//! copied across file systems. A publication whose files a writer superseded and removed
//! between the two steps is dropped from the copy (its derived data is rebuilt on first use,
//! never trusted half-present). The copy is then verified.

use std::path::Path;

use imgvec_storage::{BackupStats, OpenMode, StorageError, Store, StoreOptions};
use serde::Serialize;

use crate::error::Result;
use crate::index::INDEX_DIR;
use crate::pipeline::MODELS_DIR;
use crate::reduce::REDUCTION_DIR;
use crate::verify::{files_under, publications, verify, VerifyReport};

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub dest: String,
    #[serde(flatten)]
    pub store: BackupStats,
    /// Model and derived files linked or copied.
    pub files: usize,
    /// Publications left out because their files were superseded during the copy.
    pub dropped: Vec<String>,
    /// The copy, verified.
    pub verify: VerifyReport,
}

pub(crate) fn backup(store: &Store, dest: &Path) -> Result<BackupReport> {
    let stats = store.backup_to(dest)?;
    let mut files = 0;
    for root in [MODELS_DIR, INDEX_DIR, REDUCTION_DIR] {
        for from in files_under(&store.dir().join(root)) {
            let Ok(rel) = from.strip_prefix(store.dir()) else {
                continue;
            };
            if rel.extension().is_some_and(|e| e == "tmp") {
                continue; // a file still being written; not named by any publication
            }
            let to = dest.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
            }
            let copied = std::fs::hard_link(&from, &to)
                .or_else(|_| std::fs::copy(&from, &to).and_then(|_| sync_file(&to)));
            match copied {
                Ok(()) => files += 1,
                // Superseded and removed since the listing: the check below drops what named it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&from, e).into()),
            }
        }
    }
    // Each folder once (not once per file in it).
    let folders: std::collections::BTreeSet<_> = files_under(dest)
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    for dir in folders {
        imgvec_storage::store::sync_dir(&dir)?;
    }
    let mut dropped = Vec::new();
    {
        let copy = Store::open_with(
            dest,
            StoreOptions {
                create: false,
                ..StoreOptions::new(OpenMode::ReadWrite)
            },
        )?;
        for (key, folder, names) in publications(&copy)? {
            if names.iter().any(|n| !dest.join(&folder).join(n).is_file()) {
                copy.delete_meta(&key)?;
                dropped.push(key);
            }
        }
    }
    let copy = Store::open(dest, OpenMode::ReadOnly)?;
    Ok(BackupReport {
        dest: dest.display().to_string(),
        store: stats,
        files,
        dropped,
        verify: verify(&copy)?,
    })
}

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}
