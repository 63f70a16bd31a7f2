//! The writer's lock on a database folder: an exclusive `flock` on the folder itself, held for
//! as long as a writable store (or a reindex) has it open. RocksDB's own lock file guards the
//! metadata store by path; this one guards the folder *inode*, so it stays with the folder when
//! a reindex renames it away, and a writer can never open a folder a reindex is about to swap.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, StorageError};

/// Held while alive; shared (`Arc`) between a reindex and the old store it opens.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    path: PathBuf,
}

impl FolderLock {
    /// Takes the lock on the existing folder `dir`, or reports `Locked` at once.
    pub fn acquire(dir: &Path) -> Result<Arc<FolderLock>> {
        let file = File::open(dir).map_err(|e| StorageError::io(dir, e))?;
        // SAFETY: `flock` on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                StorageError::Locked {
                    path: dir.to_path_buf(),
                }
            } else {
                StorageError::io(dir, e)
            });
        }
        Ok(Arc::new(FolderLock {
            _file: file,
            path: dir.to_path_buf(),
        }))
    }

    /// The folder's path when the lock was taken.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_lock_follows_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        std::fs::create_dir(&dir).unwrap();
        let held = FolderLock::acquire(&dir).unwrap();
        assert!(matches!(
            FolderLock::acquire(&dir),
            Err(StorageError::Locked { .. })
        ));
        // Renamed away, the locked folder keeps its lock; a new folder at the old name is free.
        let moved = tmp.path().join("moved");
        std::fs::rename(&dir, &moved).unwrap();
        std::fs::create_dir(&dir).unwrap();
        assert!(FolderLock::acquire(&dir).is_ok());
        assert!(FolderLock::acquire(&moved).is_err());
        drop(held);
        assert!(FolderLock::acquire(&moved).is_ok());
    }
}
