//! `imgvec verify`, storage half: does everything the store holds agree with everything else?
//! Opening checked each segment's frame, directory, ids and shape against the manifest; this
//! reads every remaining segment byte against its block checksums, every metadata value
//! (RocksDB verifies each block's checksum as it reads) and cross-checks records, the path and
//! content-hash indexes, thumbnails, tombstones and the rows the segments and the write-ahead
//! column hold.

use std::collections::HashSet;

use rocksdb::IteratorMode;
use serde::Serialize;

use super::meta::*;
use super::Store;
use crate::error::Result;
use crate::snapshot::Snapshot;

/// What `verify` read, and every disagreement it found (each names the file or row).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreCheck {
    pub records: u64,
    pub segments: usize,
    pub segment_bytes: u64,
    pub segment_rows: u64,
    pub pending_rows: u64,
    pub tombstones: u64,
    /// Damage or disagreements: a non-empty list means the database is damaged.
    pub problems: Vec<String>,
    /// Harmless findings (files a writer will sweep at its next open).
    pub notes: Vec<String>,
}

impl Store {
    /// Cross-checks the whole store. `Err` only when the metadata cannot be read at all;
    /// damage found while reading is listed in `problems`.
    pub fn verify(&self) -> Result<StoreCheck> {
        let snap = self.snapshot();
        let mut check = StoreCheck {
            segments: snap.segments().len(),
            segment_bytes: snap
                .segments()
                .iter()
                .map(|(_, s)| s.byte_len() as u64)
                .sum(),
            segment_rows: snap.segments().iter().map(|(_, s)| s.rows() as u64).sum(),
            pending_rows: snap.pending_rows() as u64,
            tombstones: snap.tombstones().len() as u64,
            ..StoreCheck::default()
        };
        for (_, segment) in snap.segments() {
            if let Err(e) = segment.verify_all() {
                check.problems.push(e.to_string());
            }
        }
        let (record_ids, hashes) = self.check_records(&snap, &mut check.problems)?;
        check.records = record_ids.len() as u64;
        check_rows_held(&snap, &record_ids, &mut check.problems);
        self.check_indexes(&record_ids, &hashes, &mut check.problems)?;
        check.notes = self.unlisted_segment_files(&snap);
        Ok(check)
    }

    /// Records, each against the path index, its vector and its thumbnail. Returns the ids of
    /// the records and their content-hash index keys.
    fn check_records(
        &self,
        snap: &Snapshot,
        problems: &mut Vec<String>,
    ) -> Result<(HashSet<u64>, HashSet<Vec<u8>>)> {
        let meta_dir = self.dir.join(META_DIR);
        let mut record_ids = HashSet::new();
        let mut hashes = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_IMAGES)?, IteratorMode::Start)
        {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    problems.push(format!("{}: reading records: {e}", meta_dir.display()));
                    break;
                }
            };
            let Some(id) = u64_from(&key) else {
                problems.push(format!("record key {key:?} is not a row id"));
                continue;
            };
            let rec: ImageRecord = match serde_json::from_slice(&value) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("record {id} does not parse: {e}"));
                    continue;
                }
            };
            record_ids.insert(id);
            let mut hash_key = rec.content_hash.as_bytes().to_vec();
            hash_key.extend_from_slice(&be(id));
            hashes.insert(hash_key);
            if rec.id != id {
                problems.push(format!("record {id} says it is row {}", rec.id));
            }
            if self.id_for_key(rec.key())? != Some(id) {
                problems.push(format!(
                    "row {id} ({}): the path index does not name it",
                    rec.path
                ));
            }
            if !snap.is_live(id) {
                problems.push(format!("row {id} ({}): no live vector", rec.path));
            }
            if self.thumbnail(id)?.is_none() {
                problems.push(format!("row {id} ({}): no thumbnail", rec.path));
            }
        }
        Ok((record_ids, hashes))
    }

    /// The path, content-hash and thumbnail column families name only existing records.
    fn check_indexes(
        &self,
        record_ids: &HashSet<u64>,
        hashes: &HashSet<Vec<u8>>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        for item in self.db.iterator_cf(self.cf(CF_PATHS)?, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.meta_err(e))?;
            match u64_from(&value) {
                Some(id) if record_ids.contains(&id) => {}
                other => problems.push(format!(
                    "path index entry {} names row {other:?}, which has no record",
                    crate::key::escape(&key)
                )),
            }
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_HASHES)?, IteratorMode::Start)
        {
            let (key, _) = item.map_err(|e| self.meta_err(e))?;
            if !hashes.contains(key.as_ref()) {
                problems.push(format!(
                    "content-hash index entry {} names no record with that content",
                    crate::key::escape(&key)
                ));
            }
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_THUMBS)?, IteratorMode::Start)
        {
            let (key, _) = item.map_err(|e| self.meta_err(e))?;
            if !u64_from(&key).is_some_and(|id| record_ids.contains(&id)) {
                problems.push(format!("thumbnail {key:?} belongs to no record"));
            }
        }
        Ok(())
    }

    /// Files in segments/ that the manifest does not list (left by a crash before a
    /// publication; a writer removes them when it opens).
    fn unlisted_segment_files(&self, snap: &Snapshot) -> Vec<String> {
        let mut notes = Vec::new();
        let listed: HashSet<_> = snap
            .segments()
            .iter()
            .map(|(_, s)| s.path().to_path_buf())
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.segments_dir()) {
            for e in entries.flatten() {
                if !listed.contains(&e.path()) {
                    notes.push(format!(
                        "{}: not listed in the manifest",
                        e.path().display()
                    ));
                }
            }
        }
        notes
    }
}

/// Every live row held by a segment or the write-ahead column has a record.
fn check_rows_held(snap: &Snapshot, record_ids: &HashSet<u64>, problems: &mut Vec<String>) {
    let records = record_ids.len() as u64;
    let mut rows_held = 0u64;
    let segment_rows = snap
        .segments()
        .iter()
        .flat_map(|(_, segment)| segment.ids().iter().map(|&id| (id, Some(segment.path()))));
    let pending_rows = snap
        .pending()
        .iter()
        .flat_map(|chunk| chunk.ids.iter().map(|&id| (id, None)));
    for (id, segment) in segment_rows.chain(pending_rows) {
        if !snap.is_deleted(id) {
            rows_held += 1;
            if !record_ids.contains(&id) {
                let held_in =
                    segment.map_or("the write-ahead column".into(), |p| p.display().to_string());
                problems.push(format!("{held_in}: live row {id} has no record"));
            }
        }
    }
    if rows_held != records {
        problems.push(format!(
            "{} live rows hold vectors but {} records exist",
            rows_held, records
        ));
    }
}
