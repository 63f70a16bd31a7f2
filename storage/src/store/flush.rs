//! Sealing: pending rows (durable in RocksDB's write-ahead column family) become an immutable
//! segment file, written and synced before one synced manifest batch publishes it.

use std::sync::Arc;

use rocksdb::WriteBatch;

use super::*;

/// Rows on their way into a new segment.
pub(super) struct SealedRows {
    pub(super) dims: usize,
    pub(super) ids: Vec<u64>,
    pub(super) vectors: Vec<f32>,
    pub(super) local_offsets: Vec<u64>,
    pub(super) local: Vec<u8>,
}

impl SealedRows {
    pub(super) fn new(dims: usize) -> Self {
        SealedRows {
            dims,
            ids: Vec::new(),
            vectors: Vec::new(),
            local_offsets: vec![0],
            local: Vec::new(),
        }
    }

    /// The segment columns of these rows (local features only when some row has them).
    pub(super) fn columns(&self) -> Vec<ColumnData<'_>> {
        let mut columns = vec![
            ColumnData::u64(IDS_COLUMN, &self.ids),
            ColumnData::f32(VECTORS_COLUMN, self.dims, &self.vectors),
        ];
        if !self.local.is_empty() {
            columns.push(ColumnData::free_u64(
                LOCAL_OFFSETS_COLUMN,
                &self.local_offsets,
            ));
            columns.push(ColumnData::u8(LOCAL_COLUMN, 0, &self.local));
        }
        columns
    }

    pub(super) fn push(&mut self, id: u64, vector: &[f32], local: &[u8]) {
        self.ids.push(id);
        self.vectors.extend_from_slice(vector);
        self.local.extend_from_slice(local);
        self.local_offsets.push(self.local.len() as u64);
    }
}

impl Store {
    /// Seals all pending rows into a segment now.
    pub fn flush(&self) -> Result<()> {
        self.require_writable()?;
        let mut guard = self.write_lock.lock();
        let sealed = self.flush_locked(&mut guard)?;
        drop(guard);
        self.reclaim_pending(sealed);
        Ok(())
    }

    /// Compacts the write-ahead range of rows just sealed (`flush_locked`'s result), so RocksDB
    /// drops their deleted values now instead of keeping them until it compacts on its own.
    /// Runs without the write lock; a failure only leaves the space unreclaimed.
    pub(super) fn reclaim_pending(&self, sealed: Option<(u64, u64)>) {
        if let Some((first, last)) = sealed {
            let to = last.saturating_add(1);
            self.reclaim(CF_PENDING, Some(&be(first)), Some(&be(to)));
        }
    }

    /// Removes the file of a segment that failed before the manifest listed it (best effort: a
    /// writer's next open sweeps it otherwise), so a failed flush leaves no orphan behind.
    pub(super) fn discard_segment_file(&self, path: &std::path::Path) {
        if path.exists() {
            if let Err(e) = self.opts.vfs.remove(path) {
                tracing::warn!("removing unpublished segment {}: {e}", path.display());
            }
        }
    }

    /// Writes a new segment file of `rows` rows of `dims`-long vectors, named after the next
    /// segment id; returns its id and the file.
    pub(super) fn write_new_segment(
        &self,
        next_segment: &mut u64,
        rows: usize,
        dims: usize,
        columns: &[ColumnData],
    ) -> Result<(u64, Arc<Segment>, ManifestEntry)> {
        let seg_id = *next_segment;
        *next_segment += 1;
        let file = format!("seg-{seg_id:016x}.ivs");
        let path = self.segments_dir().join(&file);
        let written = write_segment(self.opts.vfs.as_ref(), &path, rows, columns)
            .and_then(|()| self.opts.vfs.sync_dir(&self.segments_dir()))
            .and_then(|()| Segment::open(&path))
            .and_then(|segment| segment.verify_all().map(|()| segment));
        let segment = Arc::new(written.inspect_err(|_| self.discard_segment_file(&path))?);
        let entry = ManifestEntry {
            file,
            rows: rows as u64,
            dims: dims as u32,
        };
        Ok((seg_id, segment, entry))
    }

    /// Seals the pending rows (minus deleted ones) into a segment: the segment file is synced
    /// first, then one synced batch lists it in the manifest, clears the pending rows and drops
    /// the tombstones of deleted pending rows, which no longer exist anywhere.
    /// Returns the first and last id of the rows it took out of the write-ahead column family.
    pub(super) fn flush_locked(&self, next_segment: &mut u64) -> Result<Option<(u64, u64)>> {
        let snap = self.snapshot();
        if snap.pending.is_empty() {
            return Ok(None);
        }
        let first = snap
            .pending
            .iter()
            .filter_map(|c| c.ids.first())
            .min()
            .copied();
        let last = snap
            .pending
            .iter()
            .filter_map(|c| c.ids.last())
            .max()
            .copied();
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
            let (seg_id, segment, entry) =
                self.write_new_segment(next_segment, rows.ids.len(), rows.dims, &rows.columns())?;
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
        if let Err(e) = self.write(batch) {
            if let Some((_, segment)) = &new_segment {
                self.discard_segment_file(segment.path());
            }
            return Err(e);
        }
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
        Ok(first.zip(last))
    }
}
