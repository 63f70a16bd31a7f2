//! The writer's lock on a database folder: an exclusive `flock` on the folder itself, held for
//! as long as a writable store (or a reindex) has it open. RocksDB's own lock file guards the
//! metadata store by path; this one guards the folder *inode*, so it stays with the folder when
//! a reindex renames it away, and a writer can never open a folder a reindex is about to swap.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, StorageError};

/// How long a taken lock is waited for before it counts as held by another process.
const TRANSIENT_HOLD: std::time::Duration = std::time::Duration::from_millis(250);

/// Held while alive; shared (`Arc`) between a reindex and the old store it opens.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    path: PathBuf,
}

impl FolderLock {
    /// Takes the lock on the existing folder `dir`, or reports `Locked` once it has stayed
    /// taken for [`TRANSIENT_HOLD`]: a process that forks while holding the lock (to run a
    /// child program) shares the descriptor with the child until the child's `exec` closes it,
    /// so a handle that closes and reopens can meet its own lock for that moment.
    pub fn acquire(dir: &Path) -> Result<Arc<FolderLock>> {
        let file = File::open(dir).map_err(|e| StorageError::io(dir, e))?;
        let deadline = std::time::Instant::now() + TRANSIENT_HOLD;
        // SAFETY: `flock` on a descriptor this function owns.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(StorageError::io(dir, e));
            }
            if std::time::Instant::now() >= deadline {
                return Err(StorageError::Locked {
                    path: dir.to_path_buf(),
                    holder: holder_of(&file),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
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

/// Who holds the lock on the open folder `dir`: `pid N: COMMAND LINE`, from the kernel's lock
/// table (`/proc/locks`) and the holder's `/proc/PID/cmdline`; `None` when that cannot be told.
fn holder_of(dir: &File) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = dir.metadata().ok()?;
    let dev = meta.dev();
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = flock_holder(&table, libc::major(dev), libc::minor(dev), meta.ino())?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut command = words.join(" ");
    if command.chars().count() > 100 {
        command = command.chars().take(99).collect::<String>() + "…";
    }
    Some(if command.is_empty() {
        format!("pid {pid}")
    } else {
        format!("pid {pid}: {command}")
    })
}

/// The pid holding a write `flock` on inode `ino` of device `major:minor`, from the text of
/// `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; blocked waiters, marked
/// `->`, are not holders).
fn flock_holder(table: &str, major: u32, minor: u32, ino: u64) -> Option<u32> {
    let wanted = format!("{major:02x}:{minor:02x}:{ino}");
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, "WRITE", pid, file, ..] if *file == wanted => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_the_lock_table() {
        let table = "1: POSIX  ADVISORY  WRITE 77 08:01:42 0 EOF\n\
                     2: FLOCK  ADVISORY  READ 88 08:01:42 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 1234 08:01:42 0 EOF\n\
                     3: -> FLOCK  ADVISORY  WRITE 999 08:01:42 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 55 00:2b:42 0 EOF\n";
        let cases = [
            ((8, 1, 42), Some(1234)),
            ((0, 0x2b, 42), Some(55)),
            ((8, 1, 43), None),
            ((8, 2, 42), None),
        ];
        for ((major, minor, ino), pid) in cases {
            assert_eq!(
                flock_holder(table, major, minor, ino),
                pid,
                "{major}:{minor}:{ino}"
            );
        }
    }

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
