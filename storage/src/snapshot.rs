//! Snapshots: what readers see of the database at one instant — sealed segments, pending rows
//! and deleted ids — and the walks over them (liveness, watermarks, rows since a watermark).
//! Readers never touch a snapshot's parts directly.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::Result;
use crate::segment::Segment;

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

    pub(crate) fn push(&mut self, id: u64, vector: &[f32], local: &[u8]) {
        if self.local_offsets.is_empty() {
            self.local_offsets.push(0);
        }
        self.ids.push(id);
        self.vectors.extend_from_slice(vector);
        self.local.extend_from_slice(local);
        self.local_offsets.push(self.local.len() as u64);
    }
}

/// Rows of one segment from which a walk reads it with sequential read-ahead.
const SEQUENTIAL_WALK_ROWS: usize = 256;

enum RowAt<'a> {
    Pending(&'a PendingChunk, usize),
    Sealed(&'a Segment, usize),
}

/// An immutable view searches run against: sealed segments, pending rows and deleted ids at one
/// instant. Vectors of deleted rows are still present; every reader filters `tombstones`.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub(crate) segments: Vec<(u64, Arc<Segment>)>,
    pub(crate) pending: Vec<Arc<PendingChunk>>,
    pub(crate) tombstones: Arc<HashSet<u64>>,
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

    /// The stored vector of `id`, wherever it lives (deleted rows included); an error when its
    /// bytes are damaged.
    pub fn vector(&self, id: u64) -> Result<Option<&[f32]>> {
        self.locate(id)
            .map(|at| match at {
                RowAt::Pending(chunk, row) => Ok(chunk.vector(row)),
                RowAt::Sealed(seg, row) => seg.vector(row),
            })
            .transpose()
    }

    /// The stored local features of `id` (empty when it has none; `None` when the id is not
    /// in this snapshot); an error when their bytes are damaged.
    pub fn local(&self, id: u64) -> Result<Option<&[u8]>> {
        self.locate(id)
            .map(|at| match at {
                RowAt::Pending(chunk, row) => Ok(chunk.local(row)),
                RowAt::Sealed(seg, row) => seg.local(row),
            })
            .transpose()
    }

    /// Whether `id` is in this snapshot (deleted rows included).
    pub fn contains(&self, id: u64) -> bool {
        self.locate(id).is_some()
    }

    pub fn new(
        segments: Vec<(u64, Arc<Segment>)>,
        pending: Vec<Arc<PendingChunk>>,
        tombstones: Arc<HashSet<u64>>,
    ) -> Snapshot {
        Snapshot {
            segments,
            pending,
            tombstones,
        }
    }

    /// A snapshot of rows held in memory only (derived views, e.g. projected vectors, and
    /// tests), with these deleted ids.
    pub fn from_chunks(pending: Vec<Arc<PendingChunk>>, tombstones: Arc<HashSet<u64>>) -> Snapshot {
        Snapshot {
            segments: Vec::new(),
            pending,
            tombstones,
        }
    }

    /// The sealed segments, each with its number.
    pub fn segments(&self) -> &[(u64, Arc<Segment>)] {
        &self.segments
    }

    /// Chunks of rows acknowledged but not yet sealed (ids ascending within and across them).
    pub fn pending(&self) -> &[Arc<PendingChunk>] {
        &self.pending
    }

    /// Deleted ids whose rows may still be in segments.
    pub fn tombstones(&self) -> &Arc<HashSet<u64>> {
        &self.tombstones
    }

    pub fn is_deleted(&self, id: u64) -> bool {
        self.tombstones.contains(&id)
    }

    /// Whether `id` is in this snapshot and not deleted.
    pub fn is_live(&self, id: u64) -> bool {
        !self.is_deleted(id) && self.contains(id)
    }

    /// The largest id in this snapshot (0 when empty), deleted rows included.
    pub fn max_id(&self) -> u64 {
        let seg = self
            .segments
            .iter()
            .filter_map(|(_, s)| s.ids().last().copied());
        let pend = self.pending.iter().filter_map(|c| c.ids.last().copied());
        seg.chain(pend).max().unwrap_or(0)
    }

    /// Live rows.
    pub fn live_count(&self) -> usize {
        let total: usize = self
            .segments
            .iter()
            .map(|(_, s)| s.ids().len())
            .sum::<usize>()
            + self.pending_rows();
        total.saturating_sub(self.tombstones.len())
    }

    /// Live rows with ids above `above`.
    pub fn live_count_above(&self, above: u64) -> usize {
        let seg: usize = self
            .segments
            .iter()
            .map(|(_, s)| s.ids().len() - s.ids().partition_point(|&id| id <= above))
            .sum();
        let pend: usize = self
            .pending
            .iter()
            .map(|c| c.ids.len() - c.ids.partition_point(|&id| id <= above))
            .sum();
        let dead = self.tombstones.iter().filter(|&&id| id > above).count();
        (seg + pend).saturating_sub(dead)
    }

    /// Live rows with ids above `above`, ascending, each with what `seg_row` / `chunk_row` take
    /// from it; rows for which they give `None` (another shape, no such column) are left out.
    /// Every walk over "the live rows since a watermark" goes through here; it stops at the
    /// first damaged row `seg_row` reads.
    pub fn live_rows_above<'a, T>(
        &'a self,
        above: u64,
        seg_row: impl Fn(&'a Segment, usize) -> Result<Option<T>>,
        chunk_row: impl Fn(&'a PendingChunk, usize) -> Option<T>,
    ) -> Result<Vec<(u64, T)>> {
        let mut rows: Vec<(u64, T)> = Vec::new();
        for (_, seg) in &self.segments {
            let ids = seg.ids();
            let start = ids.partition_point(|&id| id <= above);
            let long_walk = ids.len() - start >= SEQUENTIAL_WALK_ROWS;
            if long_walk {
                seg.expect_sequential_local(true);
            }
            let walked = ids
                .iter()
                .enumerate()
                .skip(start)
                .filter(|(_, id)| !self.tombstones.contains(id))
                .try_for_each(|(row, &id)| {
                    rows.extend(seg_row(seg, row)?.map(|t| (id, t)));
                    Ok(())
                });
            if long_walk {
                seg.expect_sequential_local(false);
            }
            walked?;
        }
        for chunk in &self.pending {
            let start = chunk.ids.partition_point(|&id| id <= above);
            for (row, &id) in chunk.ids.iter().enumerate().skip(start) {
                if !self.tombstones.contains(&id) {
                    rows.extend(chunk_row(chunk, row).map(|t| (id, t)));
                }
            }
        }
        rows.sort_unstable_by_key(|r| r.0);
        Ok(rows)
    }

    /// Live rows with ids above `above`, ascending, with their `dims`-long vectors.
    pub fn vectors_above(&self, above: u64, dims: usize) -> Result<(Vec<u64>, Vec<f32>)> {
        let rows: Vec<(u64, &[f32])> = self.live_rows_above(
            above,
            |seg, row| match seg.dims() == dims {
                true => seg.vector(row).map(Some),
                false => Ok(None),
            },
            |chunk, row| (chunk.dims == dims).then(|| chunk.vector(row)),
        )?;
        let mut vectors = Vec::with_capacity(rows.len() * dims);
        for (_, v) in &rows {
            vectors.extend_from_slice(v);
        }
        Ok((rows.into_iter().map(|r| r.0).collect(), vectors))
    }

    /// Live rows above `above` that have local features, with their packed features.
    pub fn local_rows_above(&self, above: u64) -> Result<Vec<(u64, &[u8])>> {
        self.live_rows_above(
            above,
            |seg, row| match seg.has_local() {
                true => seg.local(row).map(Some),
                false => Ok(None),
            },
            |chunk, row| Some(chunk.local(row)),
        )
    }

    /// Ids of the live rows above `above`, ascending (no row's bytes are read, so the walk
    /// cannot fail).
    pub fn live_ids_above(&self, above: u64) -> Vec<u64> {
        self.live_rows_above(above, |_, _| Ok(Some(())), |_, _| Some(()))
            .map(|rows| rows.into_iter().map(|(id, ())| id).collect())
            .unwrap_or_default()
    }

    /// Every block of rows with `dims`-long vectors (deleted rows included): (ids, vectors);
    /// an error for a block whose bytes are damaged.
    pub fn blocks(&self, dims: usize) -> impl Iterator<Item = Result<(&[u64], &[f32])>> {
        let sealed = self
            .segments
            .iter()
            .filter(move |(_, s)| s.dims() == dims)
            .map(|(_, s)| Ok((s.ids(), s.vectors()?)));
        let pending = self
            .pending
            .iter()
            .filter(move |c| c.dims == dims)
            .map(|c| Ok((c.ids.as_slice(), c.vectors.as_slice())));
        sealed.chain(pending)
    }

    /// Changes whenever rows leave or join the snapshot (sealed segments, deletes, pending
    /// rows): a derived view re-checks its rows only when this differs.
    pub fn make_up(&self) -> (Vec<u64>, usize, usize) {
        (
            self.segments.iter().map(|(id, _)| *id).collect(),
            self.tombstones.len(),
            self.pending_rows(),
        )
    }

    pub fn pending_rows(&self) -> usize {
        self.pending.iter().map(|c| c.ids.len()).sum()
    }
}
