//! The file operations imgvec performs on the files it writes (segments, and through the
//! engine the model copy and every derived file), behind a trait so tests can simulate a power
//! cut at any of them (`storage/tests/power_cut.rs`, `engine/tests/integration/power_cut.rs`).
//!
//! The engine's durability argument only uses these primitives: a file is durable once
//! `sync_file` returned, its name once `sync_dir` of its folder returned, a removal once
//! `sync_dir` returned. Everything else may be lost, torn or undone by a power cut.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// An open file being written.
pub trait VfsFile: Send {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()>;
    /// fsync: the bytes written so far survive a power cut.
    fn sync(&mut self) -> Result<()>;
}

pub trait Vfs: Send + Sync {
    /// Creates (truncating) a file for writing.
    fn create(&self, path: &Path) -> Result<Box<dyn VfsFile>>;
    /// fsync of a directory: creations, renames and removals in it survive a power cut.
    fn sync_dir(&self, dir: &Path) -> Result<()>;
    fn remove(&self, path: &Path) -> Result<()>;
    /// Renames a file or folder (atomically replacing a file `to`); durable once `sync_dir` of
    /// the folder ran.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Creates the folder `dir` (its parent exists); its entry is durable once `sync_dir` of the
    /// parent ran. An existing folder is fine.
    fn create_dir(&self, dir: &Path) -> Result<()>;
    /// Atomically exchanges two entries of a folder (a reindex swapping databases); durable once
    /// `sync_dir` of the folder ran. Fails where the file system cannot do it.
    fn exchange(&self, a: &Path, b: &Path) -> Result<()>;
}

/// Writes `bytes` to `path` the durable way: a temporary file beside it, written and synced,
/// renamed over `path`, and the folder synced. A reader (or a power cut) sees the old file or
/// the whole new one.
pub fn write_atomic(vfs: &dyn Vfs, path: &Path, parts: &[&[u8]]) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut file = vfs.create(&tmp)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync()?;
    drop(file);
    vfs.rename(&tmp, path)?;
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => vfs.sync_dir(dir),
        None => Ok(()),
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

struct StdFile {
    file: std::io::BufWriter<File>,
    path: std::path::PathBuf,
}

impl VfsFile for StdFile {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).at(&self.path)
    }

    fn sync(&mut self) -> Result<()> {
        self.file.flush().at(&self.path)?;
        self.file.get_ref().sync_all().at(&self.path)
    }
}

impl Vfs for StdFs {
    fn create(&self, path: &Path) -> Result<Box<dyn VfsFile>> {
        let file = File::create(path).at(path)?;
        Ok(Box::new(StdFile {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
        }))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        File::open(dir).and_then(|f| f.sync_all()).at(dir)
    }

    fn remove(&self, path: &Path) -> Result<()> {
        std::fs::remove_file(path).at(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        std::fs::rename(from, to).at(from)
    }

    fn exchange(&self, a: &Path, b: &Path) -> Result<()> {
        exchange(a, b).at(a)
    }

    fn create_dir(&self, dir: &Path) -> Result<()> {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e).at(dir),
            _ => Ok(()),
        }
    }
}

/// Creates `dir` and any missing folders above it, each made durable (its parent synced).
pub fn create_dirs(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.is_dir()).collect();
    for d in missing.into_iter().rev() {
        vfs.create_dir(d)?;
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            vfs.sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Linux `renameat2(RENAME_EXCHANGE)`: `a` and `b` trade places in one step.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both arguments are NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
