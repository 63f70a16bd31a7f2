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
    /// Renames a file (atomically replacing `to`); durable once `sync_dir` of the folder ran.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
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
}
