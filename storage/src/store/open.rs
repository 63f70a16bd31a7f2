//! How a database folder is opened: which folders may become a database, which open failures
//! are a lock conflict, damage, or a race with a writer worth retrying.

use std::path::Path;

use super::meta::{META_DIR, SEGMENTS_DIR};
use crate::error::{IoContext, Result, StorageError};

/// Whether RocksDB's open failed because another process holds the database's lock file
/// (`IO error: While lock file: …/LOCK: Resource temporarily unavailable`), as opposed to any
/// other failure, such as a damaged file ("Corruption: block checksum mismatch").
pub(super) fn is_lock_conflict(message: &str) -> bool {
    message.contains("While lock file") || message.contains("lock hold by current process")
}

/// How often a read-only open is retried when a concurrent writer may have caused its failure.
pub const READ_ONLY_RETRIES: u32 = 8;

/// Whether a read-only open's failure may come from a writer changing files under it (and is
/// worth a retry on a fresh manifest): damage or missing files, not a refusal or a permission.
pub(super) fn may_be_a_race(e: &StorageError) -> bool {
    match e {
        StorageError::DataCorruption { .. } | StorageError::Metadata { .. } => true,
        StorageError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// A RocksDB failure as the storage error of its cause: damaged files are `DataCorruption`.
pub(super) fn metadata_error(meta_dir: &Path, message: String) -> StorageError {
    if message.starts_with("Corruption:") {
        StorageError::corruption(meta_dir, message)
    } else {
        StorageError::Metadata {
            path: meta_dir.to_path_buf(),
            message,
        }
    }
}

/// Creates the folder `dir` (and missing folders above it) private to its owner (0700) whatever
/// the umask: thumbnails of private photos are not for other users.
pub(super) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir).at(dir)
}

/// Whether a writer may create a database in `dir`: it is absent, empty, or holds only what an
/// interrupted creation leaves (empty `segments/`, a `meta/` without `CURRENT`). Anything else
/// (a photo folder given by mistake, say) is refused with the reason, so nothing in it is
/// written to or swept.
pub(super) fn creatable(dir: &Path) -> std::result::Result<(), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err("it is a file, not a folder".into())
        }
        Err(e) => return Err(e.to_string()),
    };
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let leftover = is_dir
            && (name == META_DIR
                || (name == SEGMENTS_DIR
                    && std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none())));
        if !leftover {
            return Err(format!(
                "the folder is not empty (it holds {}) and is not a database; give an empty or \
                 new folder",
                Path::new(&name).display()
            ));
        }
    }
    Ok(())
}
