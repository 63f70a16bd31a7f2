//! `imgvec backup`, storage half: a consistent copy of the store while it is in use, by a
//! writer in this process or by others. The copy is taken from one point in time: the
//! segment set of one snapshot and a RocksDB snapshot taken together under the write lock (a
//! read-only handle's view is fixed at its open anyway). Segments are immutable, so each is
//! hard-linked, or written from this handle's mapping when its file is gone or on another file
//! system; the metadata is copied key by key into a new RocksDB at the destination.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, ReadOptions, WriteBatch, DB};
use serde::Serialize;

use super::meta::*;
use super::{creatable, create_private_dir, Store};
use crate::error::{IoContext, Result, StorageError};

/// What a backup copied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupStats {
    pub segments: usize,
    /// Segments hard-linked (the rest were written from the mapping).
    pub segments_linked: usize,
    pub metadata_entries: u64,
    pub bytes: u64,
}

/// Metadata written per batch while copying.
const BATCH_BYTES: usize = 4 << 20;

impl Store {
    /// Copies the store into `dest` (absent or empty). The copy opens as a database of its
    /// own; the caller copies what lives beside the store (models, derived files) and verifies.
    pub fn backup_to(&self, dest: &Path) -> Result<BackupStats> {
        creatable(dest).map_err(|reason| StorageError::Invalid {
            path: dest.to_path_buf(),
            message: format!("cannot back up here: {reason}"),
        })?;
        let (dest_meta, dest_segments) = (dest.join(META_DIR), dest.join(SEGMENTS_DIR));
        if !dest.exists() {
            create_private_dir(dest)?;
        }
        std::fs::create_dir_all(&dest_segments).at(&dest_segments)?;
        std::fs::create_dir_all(&dest_meta).at(&dest_meta)?;
        // One point in time: no commit, flush or compaction swap runs while both are taken.
        let (snap, meta_snapshot) = {
            let _writes = self.write_lock.lock();
            (self.snapshot(), self.db.snapshot())
        };
        let mut stats = BackupStats {
            segments: snap.segments().len(),
            ..BackupStats::default()
        };
        for (_, segment) in snap.segments() {
            let name = segment
                .path()
                .file_name()
                .ok_or_else(|| StorageError::corruption(segment.path(), "segment has no name"))?;
            let to = dest_segments.join(name);
            if std::fs::hard_link(segment.path(), &to).is_ok() {
                stats.segments_linked += 1;
            } else {
                let mut file = self.opts.vfs.create(&to)?;
                file.write_all(segment.file_bytes()?)?;
                file.sync()?;
            }
            stats.bytes += segment.byte_len() as u64;
        }
        self.opts.vfs.sync_dir(&dest_segments)?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let meta_error = |e: rocksdb::Error| StorageError::Metadata {
            path: dest_meta.clone(),
            message: e.into_string(),
        };
        let out = DB::open_cf_descriptors(&db_opts, &dest_meta, cfs).map_err(meta_error)?;
        let mut families: Vec<Option<&str>> = vec![None];
        families.extend(COLUMN_FAMILIES.iter().map(|&n| Some(n)));
        for family in families {
            let mut read = ReadOptions::default();
            read.set_snapshot(&meta_snapshot);
            let items = match family {
                None => self.db.iterator_opt(IteratorMode::Start, read),
                Some(name) => self
                    .db
                    .iterator_cf_opt(self.cf(name)?, read, IteratorMode::Start),
            };
            let target = family.map(|name| out.cf_handle(name));
            let mut batch = WriteBatch::default();
            for item in items {
                let (key, value) = item.map_err(|e| self.meta_err(e))?;
                match target {
                    None => batch.put(&key, &value),
                    Some(Some(cf)) => batch.put_cf(cf, &key, &value),
                    Some(None) => {
                        return Err(StorageError::Metadata {
                            path: dest_meta.clone(),
                            message: format!("column family {family:?} missing"),
                        })
                    }
                }
                stats.metadata_entries += 1;
                stats.bytes += (key.len() + value.len()) as u64;
                if batch.size_in_bytes() >= BATCH_BYTES {
                    out.write(std::mem::take(&mut batch)).map_err(meta_error)?;
                }
            }
            out.write(batch).map_err(meta_error)?;
        }
        out.flush().map_err(meta_error)?;
        out.flush_wal(true).map_err(meta_error)?;
        drop(out);
        sync_dir(&dest_meta)?;
        sync_dir(dest)?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(stats)
    }
}
