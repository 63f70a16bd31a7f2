//! The database folder: RocksDB metadata plus the sealed segments it lists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, DB};
use serde::Serialize;

use crate::error::{IoContext, Result, StorageError};
use crate::segment::{
    write_segment, ColumnData, Segment, IDS_COLUMN, LOCAL_COLUMN, LOCAL_OFFSETS_COLUMN,
    VECTORS_COLUMN,
};
use crate::snapshot::{PendingChunk, Snapshot};

mod backup;
mod compaction;
mod flush;
mod meta;
mod open;
mod verify;
mod write;

use meta::*;
pub use meta::{sync_dir, CommittedRow, ContentHash, ImageRecord, NewRow, DATABASE_FORMAT_VERSION};
pub use open::READ_ONLY_RETRIES;
use open::{creatable, create_private_dir, is_lock_conflict, may_be_a_race, metadata_error};

use crate::lock::FolderLock;
use crate::vfs::{StdFs, Vfs};
pub use backup::BackupStats;
pub use compaction::{CompactionPolicy, CompactionReport};
pub use verify::StoreCheck;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the folder if absent; takes the single-writer lock.
    ReadWrite,
    /// Existing database only; no lock, sees the state at open time.
    ReadOnly,
}

/// Tuning and test hooks for a store.
#[derive(Clone)]
pub struct StoreOptions {
    pub mode: OpenMode,
    /// Seal pending rows into a segment once this many have accumulated.
    pub flush_rows: usize,
    /// Background compaction merges segments smaller than this (in rows) ...
    pub small_segment_rows: usize,
    /// ... once at least this many of them fall in the same size tier (row counts within a
    /// factor of 4).
    pub merge_at: usize,
    /// A segment is rewritten once this share of its rows is deleted.
    pub max_deleted_share: f64,
    /// File layer for segment files (tests substitute one that simulates power cuts).
    pub vfs: Arc<dyn Vfs>,
    /// A writer creates the database when the folder is absent or empty; otherwise a folder
    /// that is not a database is refused. A folder that is not empty and not a database is
    /// always refused (see [`creatable`]).
    pub create: bool,
    /// A writer's folder lock the caller already holds (a reindex keeps it past the store's
    /// life); `None` = the store takes its own.
    pub folder_lock: Option<Arc<FolderLock>>,
}

impl StoreOptions {
    pub fn new(mode: OpenMode) -> Self {
        StoreOptions {
            mode,
            flush_rows: 256,
            small_segment_rows: 65_536,
            merge_at: 4,
            max_deleted_share: 0.25,
            vfs: Arc::new(StdFs),
            create: true,
            folder_lock: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreStats {
    pub live_rows: u64,
    pub deleted_rows: u64,
    pub pending_rows: u64,
    pub segments: usize,
    pub segment_rows: u64,
    pub segment_bytes: u64,
    pub bytes_on_disk: u64,
    pub dims: Option<u32>,
}

/// The storage engine of one database folder.
pub struct Store {
    dir: PathBuf,
    db: DB,
    opts: StoreOptions,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serialises commits, deletes, flushes and compaction swaps inside this process (other
    /// processes are kept out by the RocksDB lock). Never held while a reader waits.
    write_lock: Mutex<u64>,
    /// Serialises compactions (their I/O runs outside `write_lock`).
    compaction_lock: Mutex<()>,
    /// Wakes the background compactor.
    work: (Mutex<bool>, Condvar),
    /// A writer's lock on the folder (released after RocksDB is closed: fields drop in order).
    _folder_lock: Option<Arc<FolderLock>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("mode", &self.opts.mode)
            .finish()
    }
}

/// A writer flushes the metadata memtables as it closes: what they held is then in table files,
/// so the next open, every search process's, has no RocksDB log to read and replay (60 MB at
/// 100,000 `robust` rows, and as much memory).
impl Drop for Store {
    fn drop(&mut self) {
        if self.opts.mode == OpenMode::ReadWrite {
            self.flush_memtables();
        }
    }
}

impl Store {
    pub fn open(dir: &Path, mode: OpenMode) -> Result<Store> {
        Store::open_with(dir, StoreOptions::new(mode))
    }

    /// Whether `dir` holds a database: the one answer to "is this folder a database?" (its
    /// metadata store has been created).
    pub fn exists(dir: &Path) -> bool {
        dir.join(META_DIR).join("CURRENT").is_file()
    }

    /// Whether a writable open could use `dir`: a database, or a folder one may be created in
    /// (absent or empty); otherwise the `NotADatabase` error that open would give. Touches
    /// nothing.
    pub fn check_writable_target(dir: &Path) -> Result<()> {
        if Store::exists(dir) {
            return Ok(());
        }
        creatable(dir).map_err(|reason| StorageError::NotADatabase {
            path: dir.to_path_buf(),
            reason,
        })
    }

    /// Opens the store. A read-only open that fails the way a concurrent writer can make it
    /// fail (RocksDB's read-only open racing the writer's file deletions; a compaction
    /// unlinking a segment between the manifest read and the segment's open) is retried on a
    /// fresh manifest ([`READ_ONLY_RETRIES`] times, backing off); real damage is still
    /// reported, after the retries.
    pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<Store> {
        let mut attempt = 0;
        loop {
            match Store::open_once(dir, opts.clone()) {
                Err(e)
                    if opts.mode == OpenMode::ReadOnly
                        && attempt < READ_ONLY_RETRIES
                        && may_be_a_race(&e) =>
                {
                    tracing::debug!("{}: read-only open failed ({e}); retrying", dir.display());
                    std::thread::sleep(std::time::Duration::from_millis(20 << attempt.min(4)));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn open_once(dir: &Path, opts: StoreOptions) -> Result<Store> {
        let mode = opts.mode;
        let meta_dir = dir.join(META_DIR);
        let segments_dir = dir.join(SEGMENTS_DIR);
        if !Store::exists(dir) {
            let refusal = match (mode, opts.create) {
                (OpenMode::ReadWrite, true) => creatable(dir).err(),
                _ if dir.exists() => Some("it has no meta/CURRENT".to_string()),
                _ => Some("no such folder".to_string()),
            };
            if let Some(reason) = refusal {
                return Err(StorageError::NotADatabase {
                    path: dir.to_path_buf(),
                    reason,
                });
            }
        }
        if mode == OpenMode::ReadWrite {
            let existed = dir.exists();
            if !existed {
                create_private_dir(dir)?;
            }
            std::fs::create_dir_all(&segments_dir).at(&segments_dir)?;
            std::fs::create_dir_all(&meta_dir).at(&meta_dir)?;
            sync_dir(dir)?;
            if !existed {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
        }
        let folder_lock = match (mode, &opts.folder_lock) {
            (OpenMode::ReadOnly, _) => None,
            (OpenMode::ReadWrite, Some(held)) => Some(held.clone()),
            (OpenMode::ReadWrite, None) => Some(FolderLock::acquire(dir)?),
        };
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_keep_log_file_num(4);
        // Pending rows are written to the log and deleted once sealed; bound the log, so RocksDB
        // flushes the column families holding the oldest of it instead of keeping every row ever
        // written until a memtable fills.
        db_opts.set_max_total_wal_size(64 << 20);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let opened = match mode {
            OpenMode::ReadWrite => DB::open_cf_descriptors(&db_opts, &meta_dir, cfs),
            OpenMode::ReadOnly => {
                DB::open_cf_descriptors_read_only(&db_opts, &meta_dir, cfs, false)
            }
        };
        let db = opened.map_err(|e| {
            let message = e.into_string();
            if is_lock_conflict(&message) {
                StorageError::Locked {
                    path: dir.to_path_buf(),
                    holder: None,
                }
            } else {
                metadata_error(&meta_dir, message)
            }
        })?;
        let store = Store {
            dir: dir.to_path_buf(),
            db,
            opts,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            write_lock: Mutex::new(0),
            compaction_lock: Mutex::new(()),
            work: (Mutex::new(false), Condvar::new()),
            _folder_lock: folder_lock,
        };
        match store.get_raw(None, KEY_FORMAT)? {
            Some(v) if v != DATABASE_FORMAT_VERSION.to_string().as_bytes() => {
                return Err(StorageError::corruption(
                    &meta_dir,
                    format!(
                        "database format version {} is not supported (expected {DATABASE_FORMAT_VERSION})",
                        String::from_utf8_lossy(&v)
                    ),
                ))
            }
            Some(_) => {}
            None if mode == OpenMode::ReadWrite => {
                store
                    .db
                    .put_opt(KEY_FORMAT, DATABASE_FORMAT_VERSION.to_string(), &synced())
                    .map_err(|e| store.meta_err(e))?;
            }
            None => {}
        }
        *store.write_lock.lock() = store.get_u64(KEY_NEXT_SEGMENT)?.max(1);
        store.load_snapshot()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mode(&self) -> OpenMode {
        self.opts.mode
    }

    /// The file layer every file of this database is written through (the engine's derived
    /// files and model copy too).
    pub fn vfs(&self) -> &Arc<dyn Vfs> {
        &self.opts.vfs
    }

    fn meta_err(&self, e: rocksdb::Error) -> StorageError {
        metadata_error(&self.dir.join(META_DIR), e.into_string())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Metadata {
                path: self.dir.join(META_DIR),
                message: format!("column family {name} missing"),
            })
    }

    fn get_raw(&self, cf: Option<&str>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match cf {
            Some(name) => self.db.get_cf(self.cf(name)?, key),
            None => self.db.get(key),
        }
        .map_err(|e| self.meta_err(e))
    }

    fn get_u64(&self, key: &[u8]) -> Result<u64> {
        Ok(self
            .get_raw(None, key)?
            .and_then(|v| u64_from(&v))
            .unwrap_or(0))
    }

    /// Has RocksDB compact `cf` between `from` and `to` (everything when `None`), dropping the
    /// values of deleted keys. Failures are logged: the data is consistent either way.
    fn reclaim(&self, cf: &str, from: Option<&[u8]>, to: Option<&[u8]>) {
        match self.cf(cf) {
            Ok(handle) => self.db.compact_range_cf(handle, from, to),
            Err(e) => tracing::warn!("reclaiming space in {cf}: {e}"),
        }
    }

    /// Reclaims the space of everything deleted so far, in every column family (a foreground
    /// `compact`): sealed write-ahead rows, deleted records, their thumbnails and index keys.
    /// Memtables are flushed first, so RocksDB's log files, which hold every write until
    /// then, are released too.
    fn reclaim_all(&self) {
        self.flush_memtables();
        self.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        for cf in COLUMN_FAMILIES {
            self.reclaim(cf, None, None);
        }
    }

    /// Writes every column family's memtable to table files (and waits), so RocksDB's log
    /// files, which hold every write until then, are released. Failures are logged: the rows
    /// are durable in the logs either way.
    fn flush_memtables(&self) {
        let flushed = COLUMN_FAMILIES.iter().try_for_each(|name| {
            let cf = self.cf(name)?;
            self.db.flush_cf(cf).map_err(|e| self.meta_err(e))
        });
        if let Err(e) = flushed.and_then(|()| self.db.flush().map_err(|e| self.meta_err(e))) {
            tracing::warn!("flushing the metadata memtables: {e}");
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| self.meta_err(e))
    }

    fn segments_dir(&self) -> PathBuf {
        self.dir.join(SEGMENTS_DIR)
    }

    /// Reads the manifest, tombstones and pending rows, opens every listed segment, and
    /// (read-write only) removes segment files no committed manifest lists: leftovers of an
    /// interrupted flush or compaction.
    fn load_snapshot(&self) -> Result<()> {
        let meta_dir = self.dir.join(META_DIR);
        let mut segments = Vec::new();
        let mut listed = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_MANIFEST)?, IteratorMode::Start)
        {
            let (key, value) = item.map_err(|e| self.meta_err(e))?;
            let seg_id = u64_from(&key)
                .ok_or_else(|| StorageError::corruption(&meta_dir, "bad manifest key"))?;
            let entry: ManifestEntry = serde_json::from_slice(&value)
                .map_err(|e| StorageError::corruption(&meta_dir, format!("manifest entry: {e}")))?;
            let path = self.segments_dir().join(&entry.file);
            let segment = Segment::open(&path).map_err(|e| match e {
                StorageError::Io { path, source }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    StorageError::corruption(path, "segment listed in the manifest is missing")
                }
                other => other,
            })?;
            if segment.rows() as u64 != entry.rows || segment.dims() as u32 != entry.dims {
                return Err(StorageError::corruption(
                    &path,
                    "segment shape differs from its manifest entry",
                ));
            }
            listed.insert(entry.file);
            segments.push((seg_id, Arc::new(segment)));
        }
        let mut tombstones = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_TOMBSTONES)?, IteratorMode::Start)
        {
            let (key, _) = item.map_err(|e| self.meta_err(e))?;
            tombstones.extend(u64_from(&key));
        }
        let dims = self.dims()?.unwrap_or(0) as usize;
        let mut pending = PendingChunk {
            dims,
            ..PendingChunk::default()
        };
        for item in self
            .db
            .iterator_cf(self.cf(CF_PENDING)?, IteratorMode::Start)
        {
            let (key, value) = item.map_err(|e| self.meta_err(e))?;
            let id = u64_from(&key)
                .ok_or_else(|| StorageError::corruption(&meta_dir, "bad pending row key"))?;
            // The vector, then the row's local features (if any).
            if value.len() < dims * 4 {
                return Err(StorageError::corruption(
                    &meta_dir,
                    format!(
                        "pending row {id} has {} bytes, expected at least {}",
                        value.len(),
                        dims * 4
                    ),
                ));
            }
            let (vector, local) = value.split_at(dims * 4);
            let vector: Vec<f32> = vector
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            pending.push(id, &vector, local);
        }
        if self.opts.mode == OpenMode::ReadWrite {
            let seg_dir = self.segments_dir();
            let mut removed = false;
            for entry in std::fs::read_dir(&seg_dir).at(&seg_dir)? {
                let entry = entry.at(&seg_dir)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !listed.contains(&name) {
                    tracing::info!(file = %name, "removing segment file not in the manifest");
                    std::fs::remove_file(entry.path()).at(&entry.path())?;
                    removed = true;
                }
            }
            if removed {
                sync_dir(&seg_dir)?;
            }
        }
        *self.snapshot.write() = Arc::new(Snapshot {
            segments,
            pending: if pending.ids.is_empty() {
                Vec::new()
            } else {
                vec![Arc::new(pending)]
            },
            tombstones: Arc::new(tombstones),
        });
        Ok(())
    }

    /// The current consistent view; cheap (one Arc clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    fn require_writable(&self) -> Result<()> {
        match self.opts.mode {
            OpenMode::ReadWrite => Ok(()),
            OpenMode::ReadOnly => Err(StorageError::ReadOnly {
                path: self.dir.clone(),
            }),
        }
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .get_raw(None, format!("meta:{key}").as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every database-level setting, as (key, value), in key order.
    pub fn meta_entries(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let prefix = b"meta:";
        let items = self
            .db
            .iterator(IteratorMode::From(prefix, rocksdb::Direction::Forward));
        for item in items {
            let (key, value) = item.map_err(|e| self.meta_err(e))?;
            let Some(name) = key.strip_prefix(prefix) else {
                break;
            };
            out.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        Ok(out)
    }

    /// Durable (synced) removal of a database-level setting.
    pub fn delete_meta(&self, key: &str) -> Result<()> {
        self.require_writable()?;
        self.db
            .delete_opt(format!("meta:{key}").as_bytes(), &synced())
            .map_err(|e| self.meta_err(e))
    }

    /// Durable (synced) write of a database-level setting.
    pub fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.require_writable()?;
        self.db
            .put_opt(
                format!("meta:{key}").as_bytes(),
                value.as_bytes(),
                &synced(),
            )
            .map_err(|e| self.meta_err(e))
    }

    /// Vector dimension of stored rows, once anything is stored.
    pub fn dims(&self) -> Result<Option<u32>> {
        Ok(self
            .get_raw(None, KEY_DIMS)?
            .and_then(|v| u64_from(&v))
            .map(|d| d as u32))
    }

    pub fn id_for_path(&self, path: &str) -> Result<Option<u64>> {
        self.id_for_key(path.as_bytes())
    }

    /// The live row stored under these exact key bytes ([`ImageRecord::key`]).
    pub fn id_for_key(&self, key: &[u8]) -> Result<Option<u64>> {
        Ok(self
            .get_raw(Some(CF_PATHS), key)?
            .and_then(|v| u64_from(&v)))
    }

    pub fn get(&self, id: u64) -> Result<Option<ImageRecord>> {
        match self.get_raw(Some(CF_IMAGES), &be(id))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                StorageError::corruption(self.dir.join(META_DIR), format!("image record {id}: {e}"))
            }),
        }
    }

    pub fn get_by_path(&self, path: &str) -> Result<Option<ImageRecord>> {
        self.get_by_key(path.as_bytes())
    }

    pub fn get_by_key(&self, key: &[u8]) -> Result<Option<ImageRecord>> {
        match self.id_for_key(key)? {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    pub fn thumbnail(&self, id: u64) -> Result<Option<Vec<u8>>> {
        self.get_raw(Some(CF_THUMBS), &be(id))
    }

    /// The stored vector of a live row.
    pub fn vector(&self, id: u64) -> Result<Option<Vec<f32>>> {
        let snap = self.snapshot();
        if snap.tombstones.contains(&id) || self.get_raw(Some(CF_IMAGES), &be(id))?.is_none() {
            return Ok(None);
        }
        match snap.vector(id)? {
            Some(v) => Ok(Some(v.to_vec())),
            None => Err(StorageError::corruption(
                self.dir.join(META_DIR),
                format!("live row {id} has no vector in any segment or pending row"),
            )),
        }
    }

    /// Ids of live rows whose path starts with `prefix`, in path order (one range scan of the
    /// path index; no record is read).
    pub fn ids_with_path_prefix(&self, prefix: &str) -> Result<Vec<u64>> {
        let cf = self.cf(CF_PATHS)?;
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            cf,
            IteratorMode::From(prefix.as_bytes(), rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|e| self.meta_err(e))?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            out.extend(u64_from(&value));
        }
        Ok(out)
    }

    /// Live row ids with this content hash.
    fn ids_with_hash(&self, hash: &ContentHash) -> Result<Vec<u64>> {
        let hash = hash.as_bytes();
        let cf = self.cf(CF_HASHES)?;
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator_cf(cf, IteratorMode::From(hash, rocksdb::Direction::Forward));
        for item in iter {
            let (key, _) = item.map_err(|e| self.meta_err(e))?;
            if key.len() != 40 || key[..32] != hash[..] {
                break;
            }
            out.extend(u64_from(&key[32..]));
        }
        Ok(out)
    }

    /// All live records, in id order.
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        self.scan_records(None, &mut |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    /// Hands `visit` the live records with ids above `after` (all, without), in id order, one
    /// at a time, until it returns false: a page of a large collection costs its own rows, not
    /// the whole table.
    pub fn scan_records(
        &self,
        after: Option<u64>,
        visit: &mut dyn FnMut(ImageRecord) -> bool,
    ) -> Result<()> {
        let start = match after {
            Some(u64::MAX) => return Ok(()),
            Some(a) => Some(be(a + 1)),
            None => None,
        };
        let mode = match &start {
            Some(key) => IteratorMode::From(key, rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        for item in self.db.iterator_cf(self.cf(CF_IMAGES)?, mode) {
            let (_, value) = item.map_err(|e| self.meta_err(e))?;
            let record = serde_json::from_slice(&value).map_err(|e| {
                StorageError::corruption(self.dir.join(META_DIR), format!("image record: {e}"))
            })?;
            if !visit(record) {
                break;
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<StoreStats> {
        let snap = self.snapshot();
        let live_rows = self
            .db
            .iterator_cf(self.cf(CF_IMAGES)?, IteratorMode::Start)
            .count() as u64;
        Ok(StoreStats {
            live_rows,
            deleted_rows: snap.tombstones.len() as u64,
            pending_rows: snap.pending_rows() as u64,
            segments: snap.segments.len(),
            segment_rows: snap.segments.iter().map(|(_, s)| s.rows() as u64).sum(),
            segment_bytes: snap.segments.iter().map(|(_, s)| s.byte_len() as u64).sum(),
            bytes_on_disk: dir_size(&self.dir),
            dims: self.dims()?,
        })
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[cfg(test)]
mod tests;
