//! The metadata schema: RocksDB column families and keys, the records stored in them, and
//! their encodings.

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::WriteOptions;
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

pub(super) const CF_IMAGES: &str = "images";
pub(super) const CF_PATHS: &str = "paths";
pub(super) const CF_HASHES: &str = "hashes";
pub(super) const CF_THUMBS: &str = "thumbs";
pub(super) const CF_MANIFEST: &str = "manifest";
pub(super) const CF_TOMBSTONES: &str = "tombstones";
pub(super) const CF_PENDING: &str = "pending";
pub(super) const COLUMN_FAMILIES: [&str; 7] = [
    CF_IMAGES,
    CF_PATHS,
    CF_HASHES,
    CF_THUMBS,
    CF_MANIFEST,
    CF_TOMBSTONES,
    CF_PENDING,
];
pub(super) const KEY_NEXT_ID: &[u8] = b"next_id";
pub(super) const KEY_NEXT_SEGMENT: &[u8] = b"next_segment";
pub(super) const KEY_DIMS: &[u8] = b"dims";
pub(super) const KEY_FORMAT: &[u8] = b"format_version";
/// Version of the folder layout and metadata encoding (docs/FORMAT.md).
pub const DATABASE_FORMAT_VERSION: u32 = 1;
pub(super) const META_DIR: &str = "meta";
pub(super) const SEGMENTS_DIR: &str = "segments";

/// What is stored about one image. Serialised as JSON in the `images` column family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: u64,
    /// Canonical absolute path, or the caller's key for images inserted from bytes. A file
    /// name that is not UTF-8 is shown with `\xNN` escapes, and its bytes are in `path_bytes`.
    pub path: String,
    /// The exact bytes of a file name that is not UTF-8 (the row's key); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    /// BLAKE3 of the file's bytes, lower-case hex.
    pub content_hash: ContentHash,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRow {
    /// The key as text (see [`crate::key`]).
    pub path: String,
    /// The key's exact bytes when they are not UTF-8.
    pub path_bytes: Option<Vec<u8>>,
    pub content_hash: ContentHash,
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
pub(super) struct ManifestEntry {
    pub file: String,
    pub rows: u64,
    pub dims: u32,
}

pub(super) fn be(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub(super) fn u64_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The BLAKE3 hash of an image's bytes. Records store it as 64 lower-case hex digits; the
/// `hashes` column family keys rows by its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The hash from 64 hex digits; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<ContentHash> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return None;
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ContentHash(out))
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContentHash::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a content hash")))
    }
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

/// fsync a directory so that the entries just created in it survive power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

pub(super) fn manifest_json(entry: &ManifestEntry) -> Vec<u8> {
    serde_json::to_vec(entry).unwrap_or_default()
}

impl ImageRecord {
    /// The row's key: the exact bytes it was stored under.
    pub fn key(&self) -> &[u8] {
        crate::key::key_bytes(&self.path, &self.path_bytes)
    }

    /// The file the row came from (for rows inserted from bytes, the key read as a path).
    pub fn os_path(&self) -> std::path::PathBuf {
        crate::key::key_path(&self.path, &self.path_bytes)
    }
}

impl NewRow {
    /// The key this row is stored under.
    pub fn key(&self) -> &[u8] {
        crate::key::key_bytes(&self.path, &self.path_bytes)
    }
}
