//! Publication of derived files: a generation's files are written and synced first, then one
//! synced RocksDB meta key names them (the commit point), then the writer sweeps files no
//! publication names (a crash between leaves unnamed files, swept at the next writer open).
//! Readers load what the key names; anything else in the folder is ignored.

use std::collections::HashSet;
use std::path::PathBuf;

use std::sync::Arc;

use imgvec_storage::{OpenMode, Store, Vfs};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::artifact::{self, Kind};
use crate::error::IndexError;

/// A publication record: serialised as JSON under the publisher's meta key.
pub(crate) trait Manifest: Serialize + DeserializeOwned {
    /// The files (in the publisher's folder) this publication names.
    fn files(&self) -> Vec<&str>;
}

/// Where one derived structure publishes: a folder and a meta key.
#[derive(Clone)]
pub(crate) struct Publisher {
    dir: PathBuf,
    key: String,
    /// The database's file layer: every file is written and removed through it.
    vfs: Arc<dyn Vfs>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("dir", &self.dir)
            .field("key", &self.key)
            .finish()
    }
}

impl Publisher {
    pub fn new(vfs: Arc<dyn Vfs>, dir: PathBuf, key: impl Into<String>) -> Publisher {
        Publisher {
            dir,
            key: key.into(),
            vfs,
        }
    }

    /// Writes file `name` of a generation (framed as `kind`, synced, renamed into place).
    pub fn write(&self, name: &str, kind: Kind, body: &[u8]) -> Result<(), IndexError> {
        artifact::write(self.vfs.as_ref(), &self.path(name), kind, body)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The file name of generation `generation` of `stem`: `<stem>-<generation:08>.<ext>`.
    pub fn file_name(stem: &str, generation: u64, ext: &str) -> String {
        format!("{stem}-{generation:08}.{ext}")
    }

    /// Whether `name` is a generation's file name as [`Publisher::file_name`] makes them.
    pub fn is_file_name(name: &str) -> bool {
        let Some((stem, ext)) = name.rsplit_once('.') else {
            return false;
        };
        let Some((_, generation)) = stem.rsplit_once('-') else {
            return false;
        };
        !ext.is_empty()
            && !ext.contains('/')
            && generation.len() == 8
            && generation.bytes().all(|b| b.is_ascii_digit())
    }

    /// The folder (relative to the database) whose files the publication under meta key `key`
    /// names, or `None` when `key` is not a publication.
    pub fn folder_of(key: &str) -> Option<PathBuf> {
        use crate::index::INDEX_DIR;
        match key.split_once(':') {
            None if key == "indexes" => Some(INDEX_DIR.into()),
            None if key == crate::reduce::META_KEY => Some(crate::reduce::REDUCTION_DIR.into()),
            Some(("indexes" | "derived", name)) if !name.is_empty() && !name.contains('/') => {
                Some(PathBuf::from(INDEX_DIR).join(name))
            }
            _ => None,
        }
    }

    /// The current publication; `None` when there is none or it does not parse (rebuilt).
    pub fn load<M: Manifest>(&self, store: &Store) -> Option<M> {
        store
            .get_meta(&self.key)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    /// Makes the folder for a generation's files (its entry made durable).
    pub fn prepare(&self) -> Result<(), IndexError> {
        imgvec_storage::create_dirs(self.vfs.as_ref(), &self.dir)
            .map_err(|e| IndexError::Invalid(e.to_string()))
    }

    /// Publishes `m` (whose files are written and synced) with one synced meta write, then
    /// sweeps the files it does not name.
    pub fn publish<M: Manifest>(&self, store: &Store, m: &M) -> Result<(), IndexError> {
        let json = serde_json::to_string(m).map_err(|e| IndexError::Invalid(e.to_string()))?;
        store
            .put_meta(&self.key, &json)
            .map_err(|e| IndexError::Invalid(e.to_string()))?;
        self.sweep(m.files());
        Ok(())
    }

    /// Removes the files of the folder that `keep` does not name (writers only; sub-folders
    /// are left alone).
    pub fn sweep(&self, keep: Vec<&str>) {
        let keep: HashSet<&str> = keep.into_iter().collect();
        let mut removed = false;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(name.as_str()) && e.file_type().is_ok_and(|t| t.is_file()) {
                    removed |= self.vfs.remove(&e.path()).is_ok();
                }
            }
        }
        if removed {
            let _ = self.vfs.sync_dir(&self.dir);
        }
    }

    /// At a writer's first load: sweeps what the current publication does not name.
    pub fn sweep_unpublished<M: Manifest>(&self, store: &Store, current: Option<&M>) {
        if store.mode() == OpenMode::ReadWrite {
            self.sweep(current.map_or_else(Vec::new, Manifest::files));
        }
    }

    /// Bytes of the files in the folder (sub-folders not included).
    pub fn bytes_on_disk(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_names_table() {
        for (name, ok) in [
            ("ivfpq-00000003.idx", true),
            ("hamming-ivf-00000012.idx", true),
            ("view-00000001.bin", true),
            ("ivfpq-3.idx", false),
            ("ivfpq-00000003", false),
            ("balanced", false),
            ("ivfpq-0000000x.idx", false),
        ] {
            assert_eq!(Publisher::is_file_name(name), ok, "{name}");
        }
        for (key, folder) in [
            ("indexes", Some("indexes")),
            ("indexes:whitened", Some("indexes/whitened")),
            ("derived:voting", Some("indexes/voting")),
            ("reduction", Some("reduction")),
            ("pipeline", None),
            ("derived:", None),
        ] {
            assert_eq!(
                Publisher::folder_of(key),
                folder.map(PathBuf::from),
                "{key}"
            );
        }
    }
}
