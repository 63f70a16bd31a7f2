//! The database folder: RocksDB metadata plus the sealed segments it lists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StorageError};
use crate::segment::{write_segment, Segment};

const CF_IMAGES: &str = "images";
const CF_PATHS: &str = "paths";
const CF_HASHES: &str = "hashes";
const CF_THUMBS: &str = "thumbs";
const CF_MANIFEST: &str = "manifest";
const CF_TOMBSTONES: &str = "tombstones";
const COLUMN_FAMILIES: [&str; 6] = [
    CF_IMAGES,
    CF_PATHS,
    CF_HASHES,
    CF_THUMBS,
    CF_MANIFEST,
    CF_TOMBSTONES,
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
    pub segment: u64,
    pub row: u32,
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

/// An immutable view searches run against: the segments and the deleted ids at one instant.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub segments: Vec<(u64, Arc<Segment>)>,
    pub tombstones: Arc<HashSet<u64>>,
}

impl Snapshot {
    pub fn segment(&self, id: u64) -> Option<&Arc<Segment>> {
        self.segments
            .iter()
            .find(|(sid, _)| *sid == id)
            .map(|(_, s)| s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the folder if absent; takes the single-writer lock.
    ReadWrite,
    /// Existing database only; no lock, sees the state at open time.
    ReadOnly,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreStats {
    pub live_rows: u64,
    pub deleted_rows: u64,
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
    mode: OpenMode,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serialises commits inside this process (other processes are kept out by the RocksDB lock).
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("mode", &self.mode)
            .finish()
    }
}

fn be(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn u64_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// fsync a directory so that the entries just created in it survive power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

impl Store {
    pub fn open(dir: &Path, mode: OpenMode) -> Result<Store> {
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
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let opened = match mode {
            OpenMode::ReadWrite => DB::open_cf_descriptors(&opts, &meta_dir, cfs),
            OpenMode::ReadOnly => DB::open_cf_descriptors_read_only(&opts, &meta_dir, cfs, false),
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
            mode,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            write_lock: Mutex::new(()),
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
                store.put_meta("format_version", &DATABASE_FORMAT_VERSION.to_string())?;
            }
            None => {}
        }
        store.load_snapshot()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mode(&self) -> OpenMode {
        self.mode
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

    /// Reads the manifest and tombstones, opens every listed segment, and (read-write only)
    /// removes segment files that no committed manifest lists: leftovers of an interrupted commit.
    fn load_snapshot(&self) -> Result<()> {
        let mut segments = Vec::new();
        let mut listed = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_MANIFEST)?, IteratorMode::Start)
        {
            let (key, value) = item.map_err(|e| self.meta_err(e))?;
            let seg_id = u64_from(&key).ok_or_else(|| {
                StorageError::corruption(self.dir.join(META_DIR), "bad manifest key")
            })?;
            let entry: ManifestEntry = serde_json::from_slice(&value).map_err(|e| {
                StorageError::corruption(self.dir.join(META_DIR), format!("manifest entry: {e}"))
            })?;
            let path = self.dir.join(SEGMENTS_DIR).join(&entry.file);
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
            if let Some(id) = u64_from(&key) {
                tombstones.insert(id);
            }
        }
        if self.mode == OpenMode::ReadWrite {
            let seg_dir = self.dir.join(SEGMENTS_DIR);
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
            tombstones: Arc::new(tombstones),
        });
        Ok(())
    }

    /// The current consistent view; cheap (one Arc clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    fn require_writable(&self) -> Result<()> {
        match self.mode {
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
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .put_opt(format!("meta:{key}").as_bytes(), value.as_bytes(), &opts)
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
        let Some(rec) = self.get(id)? else {
            return Ok(None);
        };
        let snap = self.snapshot();
        let seg = snap.segment(rec.segment).ok_or_else(|| {
            StorageError::corruption(
                self.dir.join(META_DIR),
                format!(
                    "row {id} points at segment {} not in the manifest",
                    rec.segment
                ),
            )
        })?;
        let row = rec.row as usize;
        if row >= seg.rows() || seg.ids()[row] != id {
            return Err(StorageError::corruption(
                seg.path(),
                format!("row {row} does not hold id {id}"),
            ));
        }
        Ok(Some(seg.vector(row).to_vec()))
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

    /// Makes `rows` durable as one new sealed segment and one synced metadata batch, then
    /// publishes them to new snapshots. Nothing is visible, to this process or after a crash,
    /// until the RocksDB batch that lists the segment is synced.
    pub fn commit(&self, rows: Vec<NewRow>) -> Result<Vec<CommittedRow>> {
        self.require_writable()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.write_lock.lock();
        let dims = rows[0].vector.len();
        let stored_dims = self.dims()?;
        for row in &rows {
            let expected = stored_dims.map(|d| d as usize).unwrap_or(dims);
            if row.vector.len() != expected || expected == 0 {
                return Err(StorageError::Invalid {
                    path: PathBuf::from(&row.path),
                    message: format!(
                        "vector has {} dimensions, the database stores {expected}",
                        row.vector.len()
                    ),
                });
            }
        }
        let mut seen_paths = HashSet::new();
        for row in &rows {
            if !seen_paths.insert(row.path.as_str()) {
                return Err(StorageError::Invalid {
                    path: PathBuf::from(&row.path),
                    message: "the same path twice in one commit".into(),
                });
            }
        }

        let first_id = self.get_u64(KEY_NEXT_ID)?.max(1);
        let seg_id = self.get_u64(KEY_NEXT_SEGMENT)?.max(1);
        let ids: Vec<u64> = (0..rows.len() as u64).map(|i| first_id + i).collect();
        let file = format!("seg-{seg_id:016x}.ivs");
        let seg_dir = self.dir.join(SEGMENTS_DIR);
        let seg_path = seg_dir.join(&file);
        let mut flat = Vec::with_capacity(rows.len() * dims);
        for row in &rows {
            flat.extend_from_slice(&row.vector);
        }
        write_segment(&seg_path, dims, &ids, &flat)?;
        sync_dir(&seg_dir)?;
        let segment = Arc::new(Segment::open(&seg_path)?);

        let (images, paths, hashes, thumbs, manifest, tombs) = (
            self.cf(CF_IMAGES)?,
            self.cf(CF_PATHS)?,
            self.cf(CF_HASHES)?,
            self.cf(CF_THUMBS)?,
            self.cf(CF_MANIFEST)?,
            self.cf(CF_TOMBSTONES)?,
        );
        let mut batch = WriteBatch::default();
        let mut out = Vec::with_capacity(rows.len());
        let mut new_tombstones = Vec::new();
        let mut batch_hashes: HashMap<[u8; 32], u64> = HashMap::new();
        let ingested_at_ms = now_ms();
        for (i, row) in rows.into_iter().enumerate() {
            let id = ids[i];
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
                content_hash: hex(&row.content_hash),
                width: row.width,
                height: row.height,
                format: row.format,
                ingested_at_ms,
                attributes: row.attributes,
                duplicate_of,
                segment: seg_id,
                row: i as u32,
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
            out.push(CommittedRow {
                id,
                replaced: replaced.map(|r| r.id),
                duplicate_of,
            });
        }
        for id in &new_tombstones {
            batch.put_cf(tombs, be(*id), []);
        }
        let entry = ManifestEntry {
            file,
            rows: ids.len() as u64,
            dims: dims as u32,
        };
        batch.put_cf(
            manifest,
            be(seg_id),
            serde_json::to_vec(&entry).unwrap_or_default(),
        );
        batch.put(KEY_NEXT_ID, be(first_id + ids.len() as u64));
        batch.put(KEY_NEXT_SEGMENT, be(seg_id + 1));
        batch.put(KEY_DIMS, be(dims as u64));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.meta_err(e))?;

        let mut snap = self.snapshot.write();
        let mut segments = snap.segments.clone();
        segments.push((seg_id, segment));
        let tombstones = if new_tombstones.is_empty() {
            snap.tombstones.clone()
        } else {
            let mut t = (*snap.tombstones).clone();
            t.extend(new_tombstones);
            Arc::new(t)
        };
        *snap = Arc::new(Snapshot {
            segments,
            tombstones,
        });
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
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.meta_err(e))?;
        let mut snap = self.snapshot.write();
        let mut t = (*snap.tombstones).clone();
        t.extend(deleted.iter().copied());
        *snap = Arc::new(Snapshot {
            segments: snap.segments.clone(),
            tombstones: Arc::new(t),
        });
        Ok(deleted)
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
            segments: snap.segments.len(),
            segment_rows: snap.segments.iter().map(|(_, s)| s.rows() as u64).sum(),
            segment_bytes: snap.segments.iter().map(|(_, s)| s.byte_len() as u64).sum(),
            bytes_on_disk: dir_size(&self.dir),
            dims: self.dims()?,
        })
    }
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
        }
        // A segment file nobody listed (an interrupted commit) is removed on open.
        let orphan = db.join(SEGMENTS_DIR).join("seg-00000000000000ff.ivs");
        std::fs::write(&orphan, b"junk").unwrap();
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        assert!(!orphan.exists());
        assert_eq!(store.vector(2).unwrap().unwrap(), vec![0.2, 0.8]);
        let out = store.commit(vec![row("/a", 3, 0.5)]).unwrap();
        assert_eq!(out[0].replaced, Some(1));
        assert_eq!(store.get(1).unwrap(), None);
        assert!(store.snapshot().tombstones.contains(&1));
        assert_eq!(store.delete(&[2, 2, 99]).unwrap(), vec![2]);
        drop(store);
        let store = Store::open(&db, OpenMode::ReadOnly).unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(
            (stats.live_rows, stats.deleted_rows, stats.segments),
            (1, 2, 2)
        );
        assert_eq!(store.get_by_path("/a").unwrap().unwrap().id, 3);
        assert!(matches!(
            store.commit(vec![row("/c", 4, 0.0)]),
            Err(StorageError::ReadOnly { .. })
        ));
    }

    #[test]
    fn damaged_segment_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        Store::open(&db, OpenMode::ReadWrite)
            .unwrap()
            .commit(vec![row("/a", 1, 0.1)])
            .unwrap();
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
        assert!(matches!(
            Store::open(&db, OpenMode::ReadOnly),
            Err(StorageError::DataCorruption { .. })
        ));
    }
}
