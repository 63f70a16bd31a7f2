//! The database folder: RocksDB metadata plus the sealed segments it lists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StorageError};
use crate::segment::{
    write_segment, ColumnData, Segment, IDS_COLUMN, LOCAL_COLUMN, LOCAL_OFFSETS_COLUMN,
    VECTORS_COLUMN,
};
use crate::vfs::{StdFs, Vfs};

const CF_IMAGES: &str = "images";
const CF_PATHS: &str = "paths";
const CF_HASHES: &str = "hashes";
const CF_THUMBS: &str = "thumbs";
const CF_MANIFEST: &str = "manifest";
const CF_TOMBSTONES: &str = "tombstones";
const CF_PENDING: &str = "pending";
const COLUMN_FAMILIES: [&str; 7] = [
    CF_IMAGES,
    CF_PATHS,
    CF_HASHES,
    CF_THUMBS,
    CF_MANIFEST,
    CF_TOMBSTONES,
    CF_PENDING,
];
const KEY_NEXT_ID: &[u8] = b"next_id";
const KEY_NEXT_SEGMENT: &[u8] = b"next_segment";
const KEY_DIMS: &[u8] = b"dims";
const KEY_FORMAT: &[u8] = b"format_version";
/// Version of the folder layout and metadata encoding (docs/FORMAT.md).
pub const DATABASE_FORMAT_VERSION: u32 = 1;
const META_DIR: &str = "meta";
const SEGMENTS_DIR: &str = "segments";

/// What is stored about one image. Serialised as JSON in the `images` column family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: u64,
    /// Canonical absolute path, or the caller's key for images inserted from bytes.
    pub path: String,
    /// BLAKE3 of the file's bytes, lower-case hex.
    pub content_hash: String,
    pub width: u32,
    pub height: u32,
    /// Container format as decoded (`jpeg`, `png`, ...).
    pub format: String,
    /// Milliseconds since the Unix epoch.
    pub ingested_at_ms: u64,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Another live row with identical content at the time this one was stored.
    #[serde(default)]
    pub duplicate_of: Option<u64>,
}

/// A row to store. Ids are assigned by the store.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub path: String,
    pub content_hash: [u8; 32],
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub attributes: BTreeMap<String, String>,
    /// JPEG bytes, at most 256 px on the long side.
    pub thumbnail: Vec<u8>,
    pub vector: Vec<f32>,
    /// Local features (keypoints + descriptors) in the extractor's own encoding; empty when the
    /// pipeline has none. Stored beside the vector, never interpreted here.
    pub local: Vec<u8>,
}

/// The outcome for one committed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedRow {
    pub id: u64,
    /// The live row this one replaced (same path, different content).
    pub replaced: Option<u64>,
    pub duplicate_of: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestEntry {
    file: String,
    rows: u64,
    dims: u32,
}

/// Rows on their way into a new segment.
struct SealedRows {
    dims: usize,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    local_offsets: Vec<u64>,
    local: Vec<u8>,
}

impl SealedRows {
    fn new(dims: usize) -> Self {
        SealedRows {
            dims,
            ids: Vec::new(),
            vectors: Vec::new(),
            local_offsets: vec![0],
            local: Vec::new(),
        }
    }

    fn push(&mut self, id: u64, vector: &[f32], local: &[u8]) {
        self.ids.push(id);
        self.vectors.extend_from_slice(vector);
        self.local.extend_from_slice(local);
        self.local_offsets.push(self.local.len() as u64);
    }
}

/// Rows acknowledged since the last flush: durable in RocksDB's `pending` column family (the
/// write-ahead path) and held in memory until they are sealed into a segment.
#[derive(Debug, Default)]
pub struct PendingChunk {
    /// Strictly ascending.
    pub ids: Vec<u64>,
    /// `ids.len() * dims` floats.
    pub vectors: Vec<f32>,
    pub dims: usize,
    /// Row `r`'s local features are `local[local_offsets[r]..local_offsets[r + 1]]`; both are
    /// empty in chunks without local features (derived chunks, e.g. projected vectors).
    pub local_offsets: Vec<u64>,
    pub local: Vec<u8>,
}

impl PendingChunk {
    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dims..(row + 1) * self.dims]
    }

    /// Row `row`'s local features (empty when it has none).
    pub fn local(&self, row: usize) -> &[u8] {
        match (self.local_offsets.get(row), self.local_offsets.get(row + 1)) {
            (Some(&a), Some(&b)) => &self.local[a as usize..b as usize],
            _ => &[],
        }
    }

    fn push(&mut self, id: u64, vector: &[f32], local: &[u8]) {
        if self.local_offsets.is_empty() {
            self.local_offsets.push(0);
        }
        self.ids.push(id);
        self.vectors.extend_from_slice(vector);
        self.local.extend_from_slice(local);
        self.local_offsets.push(self.local.len() as u64);
    }
}

enum RowAt<'a> {
    Pending(&'a PendingChunk, usize),
    Sealed(&'a Segment, usize),
}

/// An immutable view searches run against: sealed segments, pending rows and deleted ids at one
/// instant. Vectors of deleted rows are still present; every reader filters `tombstones`.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub segments: Vec<(u64, Arc<Segment>)>,
    pub pending: Vec<Arc<PendingChunk>>,
    pub tombstones: Arc<HashSet<u64>>,
}

impl Snapshot {
    /// Where `id` lives: a pending chunk or a segment, and its row there.
    fn locate(&self, id: u64) -> Option<RowAt<'_>> {
        for chunk in &self.pending {
            if let Ok(row) = chunk.ids.binary_search(&id) {
                return Some(RowAt::Pending(chunk, row));
            }
        }
        self.segments.iter().find_map(|(_, seg)| {
            let ids = seg.ids();
            if ids.first().is_some_and(|&f| f <= id) && ids.last().is_some_and(|&l| l >= id) {
                seg.row_of(id).map(|row| RowAt::Sealed(seg, row))
            } else {
                None
            }
        })
    }

    /// The stored vector of `id`, wherever it lives (deleted rows included).
    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        self.locate(id).map(|at| match at {
            RowAt::Pending(chunk, row) => chunk.vector(row),
            RowAt::Sealed(seg, row) => seg.vector(row),
        })
    }

    /// The stored local features of `id` (empty when it has none; `None` when the id is not
    /// in this snapshot).
    pub fn local(&self, id: u64) -> Option<&[u8]> {
        self.locate(id).map(|at| match at {
            RowAt::Pending(chunk, row) => chunk.local(row),
            RowAt::Sealed(seg, row) => seg.local(row),
        })
    }

    pub fn pending_rows(&self) -> usize {
        self.pending.iter().map(|c| c.ids.len()).sum()
    }
}

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

/// What one compaction did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionReport {
    pub segments_merged: usize,
    pub rows_kept: u64,
    pub rows_dropped: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Which segments a compaction rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionPolicy {
    /// Small segments once there are enough of them, and segments with many deleted rows.
    Background,
    /// Everything, pending rows included, into one segment without deleted rows.
    Full,
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("mode", &self.opts.mode)
            .finish()
    }
}

fn be(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn u64_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// How `ImageRecord::content_hash` encodes a content hash: lower-case hex.
pub fn content_hash_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

/// fsync a directory so that the entries just created in it survive power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

impl Store {
    pub fn open(dir: &Path, mode: OpenMode) -> Result<Store> {
        Store::open_with(dir, StoreOptions::new(mode))
    }

    pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<Store> {
        let mode = opts.mode;
        let meta_dir = dir.join(META_DIR);
        let segments_dir = dir.join(SEGMENTS_DIR);
        if mode == OpenMode::ReadOnly && !meta_dir.join("CURRENT").exists() {
            return Err(StorageError::Invalid {
                path: dir.to_path_buf(),
                message: "not an imgvec database (no meta/CURRENT)".into(),
            });
        }
        if mode == OpenMode::ReadWrite {
            let existed = dir.exists();
            std::fs::create_dir_all(&segments_dir).at(&segments_dir)?;
            std::fs::create_dir_all(&meta_dir).at(&meta_dir)?;
            sync_dir(dir)?;
            if !existed {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
        }
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_keep_log_file_num(4);
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
            if message.contains("lock") || message.contains("Resource temporarily unavailable") {
                StorageError::Locked {
                    path: dir.to_path_buf(),
                }
            } else {
                StorageError::Metadata {
                    path: meta_dir.clone(),
                    message,
                }
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

    fn meta_err(&self, e: rocksdb::Error) -> StorageError {
        StorageError::Metadata {
            path: self.dir.join(META_DIR),
            message: e.into_string(),
        }
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
        Ok(self
            .get_raw(Some(CF_PATHS), path.as_bytes())?
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
        match self.id_for_path(path)? {
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
        match snap.vector(id) {
            Some(v) => Ok(Some(v.to_vec())),
            None => Err(StorageError::corruption(
                self.dir.join(META_DIR),
                format!("live row {id} has no vector in any segment or pending row"),
            )),
        }
    }

    /// Live row ids with this content hash.
    fn ids_with_hash(&self, hash: &[u8; 32]) -> Result<Vec<u64>> {
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

    /// Makes `rows` durable in one synced RocksDB batch (records, indexes, thumbnails and the
    /// vectors in the `pending` write-ahead column family), publishes them to new snapshots, and
    /// seals pending rows into a segment once enough have accumulated. Nothing is visible, to
    /// this process or after a crash, until the batch is synced.
    pub fn commit(&self, rows: Vec<NewRow>) -> Result<Vec<CommittedRow>> {
        self.require_writable()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut guard = self.write_lock.lock();
        let dims = rows[0].vector.len();
        let stored_dims = self.dims()?;
        let expected = stored_dims.map(|d| d as usize).unwrap_or(dims);
        let mut seen_paths = HashSet::new();
        for row in &rows {
            if row.vector.len() != expected || expected == 0 {
                return Err(StorageError::Invalid {
                    path: PathBuf::from(&row.path),
                    message: format!(
                        "vector has {} dimensions, the database stores {expected}",
                        row.vector.len()
                    ),
                });
            }
            if !seen_paths.insert(row.path.as_str()) {
                return Err(StorageError::Invalid {
                    path: PathBuf::from(&row.path),
                    message: "the same path twice in one commit".into(),
                });
            }
        }

        let first_id = self.get_u64(KEY_NEXT_ID)?.max(1);
        let (images, paths, hashes, thumbs, tombs, pending_cf) = (
            self.cf(CF_IMAGES)?,
            self.cf(CF_PATHS)?,
            self.cf(CF_HASHES)?,
            self.cf(CF_THUMBS)?,
            self.cf(CF_TOMBSTONES)?,
            self.cf(CF_PENDING)?,
        );
        let mut batch = WriteBatch::default();
        let mut out = Vec::with_capacity(rows.len());
        let mut new_tombstones = Vec::new();
        let mut batch_hashes: HashMap<[u8; 32], u64> = HashMap::new();
        let mut chunk = PendingChunk {
            dims,
            ids: Vec::with_capacity(rows.len()),
            vectors: Vec::with_capacity(rows.len() * dims),
            ..PendingChunk::default()
        };
        let ingested_at_ms = now_ms();
        for (i, row) in rows.into_iter().enumerate() {
            let id = first_id + i as u64;
            let replaced = self.get_by_path(&row.path)?;
            if let Some(old) = &replaced {
                new_tombstones.push(old.id);
                self.delete_into(&mut batch, old)?;
            }
            let duplicate_of = match batch_hashes.get(&row.content_hash) {
                Some(&id) => Some(id),
                None => self
                    .ids_with_hash(&row.content_hash)?
                    .into_iter()
                    .find(|&other| Some(other) != replaced.as_ref().map(|r| r.id)),
            };
            batch_hashes.entry(row.content_hash).or_insert(id);
            let record = ImageRecord {
                id,
                path: row.path,
                content_hash: content_hash_hex(&row.content_hash),
                width: row.width,
                height: row.height,
                format: row.format,
                ingested_at_ms,
                attributes: row.attributes,
                duplicate_of,
            };
            let json = serde_json::to_vec(&record).map_err(|e| StorageError::Invalid {
                path: PathBuf::from(&record.path),
                message: e.to_string(),
            })?;
            batch.put_cf(images, be(id), json);
            batch.put_cf(paths, record.path.as_bytes(), be(id));
            let mut hk = row.content_hash.to_vec();
            hk.extend_from_slice(&be(id));
            batch.put_cf(hashes, hk, []);
            batch.put_cf(thumbs, be(id), row.thumbnail);
            let mut value = Vec::with_capacity(row.vector.len() * 4 + row.local.len());
            value.extend_from_slice(bytemuck::cast_slice::<f32, u8>(&row.vector));
            value.extend_from_slice(&row.local);
            batch.put_cf(pending_cf, be(id), value);
            chunk.push(id, &row.vector, &row.local);
            out.push(CommittedRow {
                id,
                replaced: replaced.map(|r| r.id),
                duplicate_of,
            });
        }
        for id in &new_tombstones {
            batch.put_cf(tombs, be(*id), []);
        }
        batch.put(KEY_NEXT_ID, be(first_id + out.len() as u64));
        batch.put(KEY_DIMS, be(dims as u64));
        self.write(batch)?;

        let pending_rows = {
            let mut snap = self.snapshot.write();
            let mut pending = snap.pending.clone();
            pending.push(Arc::new(chunk));
            let tombstones = if new_tombstones.is_empty() {
                snap.tombstones.clone()
            } else {
                let mut t = (*snap.tombstones).clone();
                t.extend(new_tombstones);
                Arc::new(t)
            };
            *snap = Arc::new(Snapshot {
                segments: snap.segments.clone(),
                pending,
                tombstones,
            });
            snap.pending_rows()
        };
        if pending_rows >= self.opts.flush_rows {
            // The rows are durable already (acknowledged by the batch above); a failed flush
            // leaves them pending, to be sealed by a later flush.
            if let Err(e) = self.flush_locked(&mut guard) {
                tracing::warn!("sealing pending rows into a segment failed: {e}");
            }
        }
        drop(guard);
        self.nudge();
        Ok(out)
    }

    fn delete_into(&self, batch: &mut WriteBatch, rec: &ImageRecord) -> Result<()> {
        batch.delete_cf(self.cf(CF_IMAGES)?, be(rec.id));
        batch.delete_cf(self.cf(CF_THUMBS)?, be(rec.id));
        let mut hk = parse_hex32(&rec.content_hash).unwrap_or([0; 32]).to_vec();
        hk.extend_from_slice(&be(rec.id));
        batch.delete_cf(self.cf(CF_HASHES)?, hk);
        if self.id_for_path(&rec.path)? == Some(rec.id) {
            batch.delete_cf(self.cf(CF_PATHS)?, rec.path.as_bytes());
        }
        Ok(())
    }

    /// Deletes live rows durably. Returns the ids that were live (unknown ids are ignored).
    pub fn delete(&self, ids: &[u64]) -> Result<Vec<u64>> {
        self.require_writable()?;
        let _guard = self.write_lock.lock();
        let mut batch = WriteBatch::default();
        let mut deleted = Vec::new();
        for &id in ids {
            if deleted.contains(&id) {
                continue;
            }
            if let Some(rec) = self.get(id)? {
                self.delete_into(&mut batch, &rec)?;
                batch.put_cf(self.cf(CF_TOMBSTONES)?, be(id), []);
                deleted.push(id);
            }
        }
        if deleted.is_empty() {
            return Ok(deleted);
        }
        self.write(batch)?;
        {
            let mut snap = self.snapshot.write();
            let mut t = (*snap.tombstones).clone();
            t.extend(deleted.iter().copied());
            *snap = Arc::new(Snapshot {
                segments: snap.segments.clone(),
                pending: snap.pending.clone(),
                tombstones: Arc::new(t),
            });
        }
        self.nudge();
        Ok(deleted)
    }

    /// Seals all pending rows into a segment now.
    pub fn flush(&self) -> Result<()> {
        self.require_writable()?;
        let mut guard = self.write_lock.lock();
        self.flush_locked(&mut guard)
    }

    /// Writes a new segment file named after the next segment id; returns its id and the file.
    fn write_new_segment(
        &self,
        next_segment: &mut u64,
        rows: &SealedRows,
    ) -> Result<(u64, Arc<Segment>, ManifestEntry)> {
        let (ids, dims) = (&rows.ids, rows.dims);
        let seg_id = *next_segment;
        *next_segment += 1;
        let file = format!("seg-{seg_id:016x}.ivs");
        let path = self.segments_dir().join(&file);
        let mut columns = vec![
            ColumnData::u64(IDS_COLUMN, ids),
            ColumnData::f32(VECTORS_COLUMN, dims, &rows.vectors),
        ];
        if !rows.local.is_empty() {
            columns.push(ColumnData::free_u64(
                LOCAL_OFFSETS_COLUMN,
                &rows.local_offsets,
            ));
            columns.push(ColumnData::u8(LOCAL_COLUMN, 0, &rows.local));
        }
        write_segment(self.opts.vfs.as_ref(), &path, ids.len(), &columns)?;
        self.opts.vfs.sync_dir(&self.segments_dir())?;
        let segment = Arc::new(Segment::open(&path)?);
        let entry = ManifestEntry {
            file,
            rows: ids.len() as u64,
            dims: dims as u32,
        };
        Ok((seg_id, segment, entry))
    }

    /// Seals the pending rows (minus deleted ones) into a segment: the segment file is synced
    /// first, then one synced batch lists it in the manifest, clears the pending rows and drops
    /// the tombstones of deleted pending rows, which no longer exist anywhere.
    fn flush_locked(&self, next_segment: &mut u64) -> Result<()> {
        let snap = self.snapshot();
        if snap.pending.is_empty() {
            return Ok(());
        }
        let mut rows = SealedRows::new(snap.pending[0].dims);
        let mut dropped = Vec::new();
        for chunk in &snap.pending {
            for (row, &id) in chunk.ids.iter().enumerate() {
                if snap.tombstones.contains(&id) {
                    dropped.push(id);
                } else {
                    rows.push(id, chunk.vector(row), chunk.local(row));
                }
            }
        }
        let mut batch = WriteBatch::default();
        let new_segment = if rows.ids.is_empty() {
            None
        } else {
            let (seg_id, segment, entry) = self.write_new_segment(next_segment, &rows)?;
            batch.put_cf(self.cf(CF_MANIFEST)?, be(seg_id), manifest_json(&entry));
            Some((seg_id, segment))
        };
        let pending_cf = self.cf(CF_PENDING)?;
        for chunk in &snap.pending {
            for id in &chunk.ids {
                batch.delete_cf(pending_cf, be(*id));
            }
        }
        for id in &dropped {
            batch.delete_cf(self.cf(CF_TOMBSTONES)?, be(*id));
        }
        batch.put(KEY_NEXT_SEGMENT, be(*next_segment));
        self.write(batch)?;
        let mut cur = self.snapshot.write();
        let mut segments = cur.segments.clone();
        segments.extend(new_segment);
        let mut tombstones = (*cur.tombstones).clone();
        for id in &dropped {
            tombstones.remove(id);
        }
        *cur = Arc::new(Snapshot {
            segments,
            // Commits take the write lock too, so nothing was added since `snap`.
            pending: cur.pending[snap.pending.len()..].to_vec(),
            tombstones: Arc::new(tombstones),
        });
        Ok(())
    }

    /// Rewrites the segments `policy` selects into one, without deleted rows, and swaps it in
    /// atomically (one synced manifest batch). The file I/O runs without the write lock, so
    /// commits and searches continue meanwhile; readers holding an older snapshot keep their
    /// (unlinked but still mapped) segments until they drop it.
    pub fn compact(&self, policy: CompactionPolicy) -> Result<CompactionReport> {
        self.require_writable()?;
        let _compacting = self.compaction_lock.lock();
        if policy == CompactionPolicy::Full {
            self.flush()?;
        }
        let snap = self.snapshot();
        let victims: Vec<(u64, Arc<Segment>)> = self.choose_victims(&snap, policy);
        if victims.is_empty() {
            return Ok(CompactionReport::default());
        }
        let mut kept: Vec<(u64, &[f32], &[u8])> = Vec::new();
        let mut dropped = Vec::new();
        for (_, seg) in &victims {
            for (row, &id) in seg.ids().iter().enumerate() {
                if snap.tombstones.contains(&id) {
                    dropped.push(id);
                } else {
                    kept.push((id, seg.vector(row), seg.local(row)));
                }
            }
        }
        kept.sort_unstable_by_key(|(id, _, _)| *id);
        let mut rows = SealedRows::new(victims[0].1.dims());
        for (id, vector, local) in kept {
            rows.push(id, vector, local);
        }
        let ids = &rows.ids;
        let bytes_before: u64 = victims.iter().map(|(_, s)| s.byte_len() as u64).sum();

        // Reserve a segment id, then write the new file without holding the write lock.
        let mut reserved = {
            let mut next = self.write_lock.lock();
            let id = *next;
            *next += 1;
            id
        };
        let new_segment = if ids.is_empty() {
            None
        } else {
            Some(self.write_new_segment(&mut reserved, &rows)?)
        };

        let next = self.write_lock.lock();
        let mut batch = WriteBatch::default();
        let manifest = self.cf(CF_MANIFEST)?;
        for (seg_id, _) in &victims {
            batch.delete_cf(manifest, be(*seg_id));
        }
        if let Some((seg_id, _, entry)) = &new_segment {
            batch.put_cf(manifest, be(*seg_id), manifest_json(entry));
        }
        for id in &dropped {
            batch.delete_cf(self.cf(CF_TOMBSTONES)?, be(*id));
        }
        batch.put(KEY_NEXT_SEGMENT, be(*next));
        self.write(batch)?;
        let bytes_after = new_segment
            .as_ref()
            .map(|(_, s, _)| s.byte_len() as u64)
            .unwrap_or(0);
        {
            let mut cur = self.snapshot.write();
            let mut segments: Vec<(u64, Arc<Segment>)> = cur
                .segments
                .iter()
                .filter(|(id, _)| !victims.iter().any(|(v, _)| v == id))
                .cloned()
                .collect();
            segments.extend(new_segment.map(|(id, seg, _)| (id, seg)));
            let mut tombstones = (*cur.tombstones).clone();
            for id in &dropped {
                tombstones.remove(id);
            }
            *cur = Arc::new(Snapshot {
                segments,
                pending: cur.pending.clone(),
                tombstones: Arc::new(tombstones),
            });
        }
        drop(next);
        for (_, seg) in &victims {
            self.opts.vfs.remove(seg.path())?;
        }
        self.opts.vfs.sync_dir(&self.segments_dir())?;
        Ok(CompactionReport {
            segments_merged: victims.len(),
            rows_kept: ids.len() as u64,
            rows_dropped: dropped.len() as u64,
            bytes_before,
            bytes_after,
        })
    }

    fn choose_victims(
        &self,
        snap: &Snapshot,
        policy: CompactionPolicy,
    ) -> Vec<(u64, Arc<Segment>)> {
        let deleted_share = |seg: &Segment| {
            let dead = seg
                .ids()
                .iter()
                .filter(|id| snap.tombstones.contains(id))
                .count();
            dead as f64 / seg.rows().max(1) as f64
        };
        match policy {
            CompactionPolicy::Full => {
                let dirty = snap.segments.iter().any(|(_, s)| deleted_share(s) > 0.0);
                if snap.segments.len() > 1 || dirty {
                    snap.segments.clone()
                } else {
                    Vec::new()
                }
            }
            CompactionPolicy::Background => {
                // Size-tiered: segments whose row counts are within a factor of 4 of each other
                // share a tier; a tier with `merge_at` segments is merged. Each row is rewritten
                // once per tier it climbs, so write amplification grows with log(rows), not rows.
                let tier = |rows: usize| (rows / self.opts.flush_rows.max(1)).max(1).ilog(4);
                let mut tiers: BTreeMap<u32, Vec<(u64, Arc<Segment>)>> = BTreeMap::new();
                for entry in &snap.segments {
                    if entry.1.rows() < self.opts.small_segment_rows {
                        tiers
                            .entry(tier(entry.1.rows()))
                            .or_default()
                            .push(entry.clone());
                    }
                }
                let mut victims = tiers
                    .into_values()
                    .find(|members| members.len() >= self.opts.merge_at)
                    .unwrap_or_default();
                for entry in &snap.segments {
                    if deleted_share(&entry.1) >= self.opts.max_deleted_share
                        && !victims.iter().any(|(id, _)| *id == entry.0)
                    {
                        victims.push(entry.clone());
                    }
                }
                victims
            }
        }
    }

    /// Wakes the background compactor (if one waits on this store).
    fn nudge(&self) {
        *self.work.0.lock() = true;
        self.work.1.notify_all();
    }

    /// Blocks until a commit or delete happened since the last call, or `timeout` passed.
    pub fn wait_for_work(&self, timeout: std::time::Duration) -> bool {
        let mut flag = self.work.0.lock();
        if !*flag {
            self.work.1.wait_for(&mut flag, timeout);
        }
        std::mem::take(&mut *flag)
    }

    /// Wakes a thread blocked in `wait_for_work` (used to stop the compactor).
    pub fn wake(&self) {
        self.nudge();
    }

    /// All live records, in id order.
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_IMAGES)?, IteratorMode::Start)
        {
            let (_, value) = item.map_err(|e| self.meta_err(e))?;
            out.push(serde_json::from_slice(&value).map_err(|e| {
                StorageError::corruption(self.dir.join(META_DIR), format!("image record: {e}"))
            })?);
        }
        Ok(out)
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

fn manifest_json(entry: &ManifestEntry) -> Vec<u8> {
    serde_json::to_vec(entry).unwrap_or_default()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
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
mod tests {
    use super::*;

    fn row(path: &str, hash: u8, v: f32) -> NewRow {
        NewRow {
            path: path.into(),
            content_hash: [hash; 32],
            width: 10,
            height: 20,
            format: "png".into(),
            attributes: BTreeMap::new(),
            thumbnail: vec![1, 2, 3],
            vector: vec![v, 1.0 - v],
            local: path.bytes().take((v * 10.0) as usize).collect(),
        }
    }

    fn small(mode: OpenMode) -> StoreOptions {
        StoreOptions {
            flush_rows: 2,
            ..StoreOptions::new(mode)
        }
    }

    #[test]
    fn commit_reopen_replace_duplicate_delete() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        {
            let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
            let out = store
                .commit(vec![row("/a", 1, 0.1), row("/b", 1, 0.2)])
                .unwrap();
            assert_eq!(out[0].id, 1);
            assert_eq!(out[1].duplicate_of, Some(1));
            // A second writer in the same process is refused by RocksDB's lock.
            assert!(matches!(
                Store::open(&db, OpenMode::ReadWrite),
                Err(StorageError::Locked { .. })
            ));
            let ro = Store::open(&db, OpenMode::ReadOnly).unwrap();
            assert_eq!(ro.get_by_path("/b").unwrap().unwrap().id, 2);
            assert_eq!(ro.vector(2).unwrap().unwrap(), vec![0.2, 0.8]);
        }
        // A segment file nobody listed (an interrupted flush) is removed on open.
        let orphan = db.join(SEGMENTS_DIR).join("seg-00000000000000ff.ivs");
        std::fs::write(&orphan, b"junk").unwrap();
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        assert!(!orphan.exists());
        // Pending rows survived the reopen.
        assert_eq!(store.vector(2).unwrap().unwrap(), vec![0.2, 0.8]);
        let out = store.commit(vec![row("/a", 3, 0.5)]).unwrap();
        assert_eq!(out[0].replaced, Some(1));
        assert_eq!(store.get(1).unwrap(), None);
        assert_eq!(store.vector(1).unwrap(), None);
        assert!(store.snapshot().tombstones.contains(&1));
        assert_eq!(store.delete(&[2, 2, 99]).unwrap(), vec![2]);
        drop(store);
        let store = Store::open(&db, OpenMode::ReadOnly).unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(
            (stats.live_rows, stats.deleted_rows, stats.pending_rows),
            (1, 2, 3)
        );
        assert_eq!(store.get_by_path("/a").unwrap().unwrap().id, 3);
        assert!(matches!(
            store.commit(vec![row("/c", 4, 0.0)]),
            Err(StorageError::ReadOnly { .. })
        ));
    }

    #[test]
    fn flush_and_compaction_drop_deleted_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = Store::open_with(&db, small(OpenMode::ReadWrite)).unwrap();
        for i in 0..10u8 {
            let p = format!("/{i}");
            store.commit(vec![row(&p, i, i as f32 / 10.0)]).unwrap();
        }
        // Every second commit sealed a segment of two rows.
        assert_eq!(store.snapshot().segments.len(), 5);
        assert_eq!(store.snapshot().pending_rows(), 0);
        store.delete(&[1, 2, 3, 4, 5]).unwrap();
        let report = store.compact(CompactionPolicy::Full).unwrap();
        assert_eq!(
            (
                report.segments_merged,
                report.rows_kept,
                report.rows_dropped
            ),
            (5, 5, 5)
        );
        let snap = store.snapshot();
        assert_eq!(snap.segments.len(), 1);
        assert_eq!(snap.segments[0].1.ids(), &[6, 7, 8, 9, 10]);
        assert!(snap.tombstones.is_empty());
        assert_eq!(std::fs::read_dir(db.join(SEGMENTS_DIR)).unwrap().count(), 1);
        drop(snap);
        drop(store);
        let store = Store::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(store.vector(8).unwrap().unwrap(), vec![0.7, 0.3]);
        assert_eq!(store.vector(3).unwrap(), None);
        assert_eq!(store.stats().unwrap().live_rows, 5);
        // Local features travelled through pending rows, flushes and the merge.
        let snap = store.snapshot();
        assert!(snap.segments[0].1.has_local());
        for id in 6..=10u64 {
            let i = id - 1;
            let want: Vec<u8> = format!("/{i}").bytes().take(i as usize).collect();
            assert_eq!(snap.local(id), Some(&want[..]), "row {id}");
        }
        assert_eq!(snap.local(3), None);
    }

    #[test]
    fn local_features_survive_reopen_from_pending_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        let mut rows = vec![row("/a", 1, 0.5), row("/b", 2, 0.0), row("/c", 3, 0.9)];
        rows[1].local.clear();
        store.commit(rows).unwrap();
        drop(store);
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.pending_rows(), 3);
        assert_eq!(snap.local(1), Some(&b"/a"[..]));
        assert_eq!(snap.local(2), Some(&b""[..]));
        assert_eq!(snap.local(3), Some(&b"/c"[..]));
        assert_eq!(store.vector(3).unwrap().unwrap(), vec![0.9, 1.0 - 0.9]);
        drop(snap);
        store.flush().unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.segments[0].1.local(0), b"/a");
        assert_eq!(snap.segments[0].1.local(1), b"");
        assert_eq!(snap.local(3), Some(&b"/c"[..]));
    }

    #[test]
    fn background_policy_merges_small_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(&dir.path().join("db"), small(OpenMode::ReadWrite)).unwrap();
        for i in 0..6u8 {
            store.commit(vec![row(&format!("/{i}"), i, 0.5)]).unwrap();
        }
        assert_eq!(
            store
                .compact(CompactionPolicy::Background)
                .unwrap()
                .segments_merged,
            0
        );
        for i in 6..8u8 {
            store.commit(vec![row(&format!("/{i}"), i, 0.5)]).unwrap();
        }
        assert_eq!(
            store
                .compact(CompactionPolicy::Background)
                .unwrap()
                .segments_merged,
            4
        );
        assert_eq!(store.snapshot().segments.len(), 1);
    }

    /// Size tiers: four 2-row segments merge into one of 8 rows (the next tier), which is left
    /// alone when new small segments arrive, until its own tier fills up.
    #[test]
    fn background_merges_stay_within_size_tiers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(&dir.path().join("db"), small(OpenMode::ReadWrite)).unwrap();
        let mut n = 0u8;
        let mut add_segments = |count: usize| {
            for _ in 0..count * 2 {
                store.commit(vec![row(&format!("/{n}"), n, 0.5)]).unwrap();
                n += 1;
            }
        };
        add_segments(4);
        assert_eq!(
            store
                .compact(CompactionPolicy::Background)
                .unwrap()
                .rows_kept,
            8
        );
        add_segments(4);
        let report = store.compact(CompactionPolicy::Background).unwrap();
        assert_eq!((report.segments_merged, report.rows_kept), (4, 8));
        let mut sizes: Vec<usize> = store
            .snapshot()
            .segments
            .iter()
            .map(|(_, s)| s.rows())
            .collect();
        sizes.sort();
        assert_eq!(sizes, vec![8, 8]);
    }

    #[test]
    fn damaged_segment_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        store.commit(vec![row("/a", 1, 0.1)]).unwrap();
        store.flush().unwrap();
        drop(store);
        let seg = db.join(SEGMENTS_DIR).join("seg-0000000000000001.ivs");
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 20] ^= 1;
        std::fs::write(&seg, bytes).unwrap();
        match Store::open(&db, OpenMode::ReadOnly) {
            Err(StorageError::DataCorruption { path, .. }) => assert_eq!(path, seg),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&seg).unwrap();
        match Store::open(&db, OpenMode::ReadWrite) {
            Err(StorageError::DataCorruption { path, reason }) => {
                assert_eq!(path, seg);
                assert!(reason.contains("missing"));
            }
            other => panic!("{other:?}"),
        }
    }
}
