//! A file layer that loses power on demand, for the power-cut tests of every crate (storage's
//! segments, the engine's model copy and derived files). In the spirit of redb's
//! crash_consistency test: each operation through it counts; at the chosen one, "power is
//! cut" (that operation and every later one fail), and [`CrashFs::power_loss`] then applies to
//! the real files what a power cut may do to what was not synced: file contents cut at any
//! length past the synced prefix, unsynced directory entries dropped, unsynced renames of files
//! and folders and exchanges of folders undone, unsynced removals undone, folders whose entry
//! was never synced lost with their contents. Not for production use.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Result, StorageError};
use crate::vfs::{Vfs, VfsFile};

#[derive(Default)]
struct FileState {
    written: u64,
    synced: u64,
    /// The directory entry survives a power cut (its folder was fsynced since it appeared).
    entry_durable: bool,
    /// The name it had before an unsynced rename (a cut may put it back there).
    renamed_from: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    ops: usize,
    crash_at: Option<usize>,
    crashed: bool,
    files: HashMap<PathBuf, FileState>,
    /// Removed files whose removal is not yet durable, with their bytes.
    removed: Vec<(PathBuf, Vec<u8>)>,
    /// Folder renames and exchanges not yet durable, oldest first.
    moves: Vec<Move>,
    /// Folders created whose entry is not yet durable.
    new_dirs: Vec<PathBuf>,
}

struct Move {
    from: PathBuf,
    to: PathBuf,
    exchange: bool,
}

impl State {
    /// Files tracked at or below `from` are now at `to`.
    fn rekey(&mut self, from: &Path, to: &Path) {
        let moved: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for old in moved {
            if let (Some(state), Ok(rest)) = (self.files.remove(&old), old.strip_prefix(from)) {
                self.files.insert(to.join(rest), state);
            }
        }
    }
}

/// Shared by every handle on it (clone freely).
#[derive(Clone, Default)]
pub struct CrashFs(Arc<Mutex<State>>);

fn cut() -> StorageError {
    StorageError::io("simulated", std::io::Error::other("simulated power cut"))
}

impl CrashFs {
    /// A layer that cuts power at its `crash_at`-th operation (`None`: never).
    pub fn new(crash_at: Option<usize>) -> CrashFs {
        let fs = CrashFs::default();
        fs.0.lock().crash_at = crash_at;
        fs
    }

    /// Operations seen so far.
    pub fn ops(&self) -> usize {
        self.0.lock().ops
    }

    /// Whether power was cut.
    pub fn crashed(&self) -> bool {
        self.0.lock().crashed
    }

    fn tick(&self) -> Result<()> {
        let mut s = self.0.lock();
        if s.crashed {
            return Err(cut());
        }
        s.ops += 1;
        if s.crash_at == Some(s.ops) {
            s.crashed = true;
            return Err(cut());
        }
        Ok(())
    }

    /// Applies the power cut to the real files; `seed` picks among the outcomes a real cut
    /// allows. Call it once every handle using the files is dropped.
    pub fn power_loss(&self, seed: u64) {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut s = self.0.lock();
        let mut files: Vec<_> = s.files.drain().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, f) in files {
            if !path.exists() {
                continue;
            }
            if f.synced < f.written {
                let len = f.synced + next() % (f.written - f.synced + 1);
                let _ = File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|file| file.set_len(len));
            }
            if !f.entry_durable && next() % 2 == 0 {
                match &f.renamed_from {
                    Some(from) => {
                        let _ = std::fs::rename(&path, from);
                    }
                    None => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        for (path, bytes) in s.removed.drain(..) {
            if next() % 2 == 0 {
                let _ = std::fs::write(&path, bytes);
            }
        }
        // A folder whose entry was never made durable is lost with everything in it.
        for dir in s.new_dirs.drain(..).rev() {
            if next() % 2 == 0 {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        for m in s.moves.drain(..).rev() {
            if next() % 2 == 0 {
                let _ = if m.exchange {
                    crate::vfs::StdFs.exchange(&m.to, &m.from).map_err(|_| ())
                } else {
                    std::fs::rename(&m.to, &m.from).map_err(|_| ())
                };
            }
        }
    }
}

struct CrashFile {
    fs: CrashFs,
    path: PathBuf,
    file: File,
}

impl VfsFile for CrashFile {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.fs.tick()?;
        self.file
            .write_all(bytes)
            .map_err(|e| StorageError::io(&self.path, e))?;
        if let Some(f) = self.fs.0.lock().files.get_mut(&self.path) {
            f.written += bytes.len() as u64;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.fs.tick()?;
        if let Some(f) = self.fs.0.lock().files.get_mut(&self.path) {
            f.synced = f.written;
        }
        Ok(())
    }
}

impl Vfs for CrashFs {
    fn create(&self, path: &Path) -> Result<Box<dyn VfsFile>> {
        self.tick()?;
        let file = File::create(path).map_err(|e| StorageError::io(path, e))?;
        self.0
            .lock()
            .files
            .insert(path.to_path_buf(), FileState::default());
        Ok(Box::new(CrashFile {
            fs: self.clone(),
            path: path.to_path_buf(),
            file,
        }))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.tick()?;
        let mut s = self.0.lock();
        for (path, f) in s.files.iter_mut() {
            if path.parent() == Some(dir) {
                f.entry_durable = true;
                f.renamed_from = None;
            }
        }
        s.removed.retain(|(p, _)| p.parent() != Some(dir));
        s.moves.retain(|m| m.to.parent() != Some(dir));
        s.new_dirs.retain(|d| d.parent() != Some(dir));
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<()> {
        self.tick()?;
        let bytes = std::fs::read(path).map_err(|e| StorageError::io(path, e))?;
        std::fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
        let mut s = self.0.lock();
        s.files.remove(path);
        s.removed.push((path.to_path_buf(), bytes));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.tick()?;
        let folder = from.is_dir();
        std::fs::rename(from, to).map_err(|e| StorageError::io(from, e))?;
        let mut s = self.0.lock();
        if folder {
            s.rekey(from, to);
            s.moves.push(Move {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                exchange: false,
            });
            return Ok(());
        }
        let mut state = s.files.remove(from).unwrap_or(FileState {
            entry_durable: true,
            ..FileState::default()
        });
        // A file not yet written by this layer counts as synced.
        if state.written == 0 {
            let len = std::fs::metadata(to).map_or(0, |m| m.len());
            state.written = len;
            state.synced = len;
        }
        state.renamed_from = Some(from.to_path_buf());
        state.entry_durable = false;
        s.files.insert(to.to_path_buf(), state);
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> Result<()> {
        self.tick()?;
        if !dir.is_dir() {
            std::fs::create_dir(dir).map_err(|e| StorageError::io(dir, e))?;
            self.0.lock().new_dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    fn exchange(&self, a: &Path, b: &Path) -> Result<()> {
        self.tick()?;
        crate::vfs::StdFs.exchange(a, b)?;
        let mut s = self.0.lock();
        let parked = a.with_extension("crash-sim-exchange");
        s.rekey(a, &parked);
        s.rekey(b, a);
        s.rekey(&parked, b);
        s.moves.push(Move {
            from: a.to_path_buf(),
            to: b.to_path_buf(),
            exchange: true,
        });
        Ok(())
    }
}
