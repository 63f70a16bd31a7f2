//! How rows change: commit (durable in one synced batch, then visible), attributes set after
//! ingest, deletes; and how the background worker hears that something changed.

use super::*;

/// A record's bytes in the `images` column family.
fn record_bytes(record: &ImageRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| StorageError::Invalid {
        path: PathBuf::from(&record.path),
        message: e.to_string(),
    })
}

impl Store {
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
        check_batch(&rows, expected)?;

        let first_id = self.get_u64(KEY_NEXT_ID)?.max(1);
        let tombs = self.cf(CF_TOMBSTONES)?;
        let mut batch = WriteBatch::default();
        let mut out = Vec::with_capacity(rows.len());
        let mut new_tombstones = Vec::new();
        let mut batch_hashes: HashMap<ContentHash, u64> = HashMap::new();
        let mut chunk = PendingChunk {
            dims,
            ids: Vec::with_capacity(rows.len()),
            vectors: Vec::with_capacity(rows.len() * dims),
            ..PendingChunk::default()
        };
        let ingested_at_ms = now_ms();
        for (i, row) in rows.into_iter().enumerate() {
            let id = first_id + i as u64;
            let replaced = self.get_by_key(row.key())?;
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
                path_bytes: row.path_bytes,
                content_hash: row.content_hash,
                width: row.width,
                height: row.height,
                format: row.format,
                ingested_at_ms,
                attributes: row.attributes,
                duplicate_of,
            };
            self.stage_row(&mut batch, &record, row.thumbnail, &row.vector, &row.local)?;
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

        let pending_rows = self.publish_pending(chunk, new_tombstones);
        // The rows are durable already (acknowledged by the batch above); a failed flush leaves
        // them pending, to be sealed by a later flush.
        let sealed = match pending_rows >= self.opts.flush_rows {
            true => self.flush_locked(&mut guard).unwrap_or_else(|e| {
                tracing::warn!("sealing pending rows into a segment failed: {e}");
                None
            }),
            false => None,
        };
        drop(guard);
        self.reclaim_pending(sealed);
        self.nudge();
        Ok(out)
    }

    /// Puts one new row into `batch`: its record, path and content-hash index entries, thumbnail,
    /// and vector + local features in the `pending` write-ahead column family.
    fn stage_row(
        &self,
        batch: &mut WriteBatch,
        record: &ImageRecord,
        thumbnail: Vec<u8>,
        vector: &[f32],
        local: &[u8],
    ) -> Result<()> {
        let id = record.id;
        batch.put_cf(self.cf(CF_IMAGES)?, be(id), record_bytes(record)?);
        batch.put_cf(self.cf(CF_PATHS)?, record.key(), be(id));
        let mut hash_key = record.content_hash.as_bytes().to_vec();
        hash_key.extend_from_slice(&be(id));
        batch.put_cf(self.cf(CF_HASHES)?, hash_key, []);
        batch.put_cf(self.cf(CF_THUMBS)?, be(id), thumbnail);
        let mut value = Vec::with_capacity(vector.len() * 4 + local.len());
        value.extend_from_slice(bytemuck::cast_slice::<f32, u8>(vector));
        value.extend_from_slice(local);
        batch.put_cf(self.cf(CF_PENDING)?, be(id), value);
        Ok(())
    }

    /// Makes committed rows (and the rows they replaced, deleted) visible to new snapshots;
    /// returns the pending rows now held.
    fn publish_pending(&self, chunk: PendingChunk, new_tombstones: Vec<u64>) -> usize {
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
        *snap = Arc::new(Snapshot::new(snap.segments.clone(), pending, tombstones));
        snap.pending_rows()
    }

    fn delete_into(&self, batch: &mut WriteBatch, rec: &ImageRecord) -> Result<()> {
        batch.delete_cf(self.cf(CF_IMAGES)?, be(rec.id));
        batch.delete_cf(self.cf(CF_THUMBS)?, be(rec.id));
        let mut hk = rec.content_hash.as_bytes().to_vec();
        hk.extend_from_slice(&be(rec.id));
        batch.delete_cf(self.cf(CF_HASHES)?, hk);
        if self.id_for_key(rec.key())? == Some(rec.id) {
            batch.delete_cf(self.cf(CF_PATHS)?, rec.key());
        }
        Ok(())
    }

    /// Sets (`set`) and removes (`remove`) user attributes of a live row, durably; the record as
    /// it is now, or `None` for an unknown id.
    pub fn set_attributes(
        &self,
        id: u64,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Option<ImageRecord>> {
        self.require_writable()?;
        let _guard = self.write_lock.lock();
        let Some(mut rec) = self.get(id)? else {
            return Ok(None);
        };
        for key in remove {
            rec.attributes.remove(key);
        }
        rec.attributes
            .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_IMAGES)?, be(id), record_bytes(&rec)?);
        self.write(batch)?;
        Ok(Some(rec))
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
}

/// Refuses a commit batch whose vectors do not have the database's dimension, or that names a
/// path twice.
fn check_batch(rows: &[NewRow], expected: usize) -> Result<()> {
    let mut seen_paths = HashSet::new();
    for row in rows {
        if row.vector.len() != expected || expected == 0 {
            return Err(StorageError::Invalid {
                path: PathBuf::from(&row.path),
                message: format!(
                    "vector has {} dimensions, the database stores {expected}",
                    row.vector.len()
                ),
            });
        }
        if !seen_paths.insert(row.key()) {
            return Err(StorageError::Invalid {
                path: PathBuf::from(&row.path),
                message: "the same path twice in one commit".into(),
            });
        }
    }
    Ok(())
}
