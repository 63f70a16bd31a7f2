//! Compaction: which segments to rewrite (a pure policy, [`choose_victims`]) and the rewrite
//! itself — live rows into one new segment, swapped in by one synced manifest batch.

use std::sync::Arc;

use rocksdb::WriteBatch;

use crate::segment::ColumnKind;

use super::*;

/// What one compaction did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionReport {
    /// Pending rows a full compaction sealed into a segment first.
    pub rows_sealed: u64,
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

impl Store {
    /// Rewrites the segments `policy` selects into one, without deleted rows, and swaps it in
    /// atomically (one synced manifest batch). The file I/O runs without the write lock, so
    /// commits and searches continue meanwhile; readers holding an older snapshot keep their
    /// (unlinked but still mapped) segments until they drop it.
    pub fn compact(&self, policy: CompactionPolicy) -> Result<CompactionReport> {
        let report = self.compact_segments(policy)?;
        if policy == CompactionPolicy::Full {
            // The metadata's deleted values (sealed write-ahead rows, deleted records, their
            // thumbnails and index keys) go too.
            self.reclaim_all();
        }
        Ok(report)
    }

    /// The segments `policy` merges now, each checked whole: damaged bytes must fail the merge,
    /// not be copied into a file with fresh checksums.
    fn victims(
        &self,
        snap: &Snapshot,
        policy: CompactionPolicy,
    ) -> Result<Vec<(u64, Arc<Segment>)>> {
        let stats: Vec<SegmentStat> = snap
            .segments
            .iter()
            .map(|(id, seg)| SegmentStat {
                id: *id,
                rows: seg.rows(),
                dead: seg.ids().iter().filter(|&&id| snap.is_deleted(id)).count(),
                checked_whole_at_open: !seg.has_block_checks(),
            })
            .collect();
        let chosen = choose_victims(&stats, policy, &MergeTuning::of(&self.opts));
        let victims: Vec<(u64, Arc<Segment>)> = chosen
            .iter()
            .filter_map(|v| snap.segments.iter().find(|(id, _)| id == v).cloned())
            .collect();
        for (_, seg) in &victims {
            seg.verify_all()?;
        }
        Ok(victims)
    }

    fn compact_segments(&self, policy: CompactionPolicy) -> Result<CompactionReport> {
        self.require_writable()?;
        let _compacting = self.compaction_lock.lock();
        let mut rows_sealed = 0;
        if policy == CompactionPolicy::Full {
            rows_sealed = self
                .snapshot()
                .pending
                .iter()
                .map(|c| c.ids.len() as u64)
                .sum();
            self.flush()?;
        }
        let snap = self.snapshot();
        let victims = self.victims(&snap, policy)?;
        if victims.is_empty() {
            return Ok(CompactionReport {
                rows_sealed,
                ..CompactionReport::default()
            });
        }
        // The merged rows are streamed from the mapped victims into the new file: memory holds
        // their ids and where each is (16 bytes a row), never their vectors or features.
        let mut kept: Vec<(u64, u32, u32)> = Vec::new(); // (id, victim, row)
        let mut dropped = Vec::new();
        for (v, (_, seg)) in victims.iter().enumerate() {
            for (row, &id) in seg.ids().iter().enumerate() {
                if snap.is_deleted(id) {
                    dropped.push(id);
                } else {
                    kept.push((id, v as u32, row as u32));
                }
            }
        }
        kept.sort_unstable_by_key(|k| k.0);
        let ids: Vec<u64> = kept.iter().map(|k| k.0).collect();
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
            let merged = MergedRows {
                victims: &victims,
                kept: &kept,
            };
            Some(merged.write(self, &mut reserved, &ids)?)
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
        if let Err(e) = self.write(batch) {
            if let Some((_, segment, _)) = &new_segment {
                self.discard_segment_file(segment.path());
            }
            return Err(e);
        }
        let bytes_after = new_segment
            .as_ref()
            .map(|(_, s, _)| s.byte_len() as u64)
            .unwrap_or(0);
        self.swap_in(
            &victims,
            new_segment.map(|(id, seg, _)| (id, seg)),
            &dropped,
        );
        drop(next);
        for (_, seg) in &victims {
            self.opts.vfs.remove(seg.path())?;
        }
        self.opts.vfs.sync_dir(&self.segments_dir())?;
        Ok(CompactionReport {
            rows_sealed,
            segments_merged: victims.len(),
            rows_kept: ids.len() as u64,
            rows_dropped: dropped.len() as u64,
            bytes_before,
            bytes_after,
        })
    }
}

impl Store {
    /// Publishes a compaction to new snapshots: `victims` out, `merged` in, the tombstones of
    /// the `dropped` rows (now gone from every segment) forgotten.
    fn swap_in(
        &self,
        victims: &[(u64, Arc<Segment>)],
        merged: Option<(u64, Arc<Segment>)>,
        dropped: &[u64],
    ) {
        let mut cur = self.snapshot.write();
        let mut segments: Vec<(u64, Arc<Segment>)> = cur
            .segments
            .iter()
            .filter(|(id, _)| !victims.iter().any(|(v, _)| v == id))
            .cloned()
            .collect();
        segments.extend(merged);
        let mut tombstones = (*cur.tombstones).clone();
        for id in dropped {
            tombstones.remove(id);
        }
        *cur = Arc::new(Snapshot::new(
            segments,
            cur.pending.clone(),
            Arc::new(tombstones),
        ));
    }
}

/// The live rows of the victims, in id order, read straight from their memory maps.
struct MergedRows<'a> {
    victims: &'a [(u64, Arc<Segment>)],
    /// (id, victim, row), ascending ids.
    kept: &'a [(u64, u32, u32)],
}

impl MergedRows<'_> {
    fn rows(&self) -> impl Iterator<Item = (&Segment, usize)> + '_ {
        self.kept
            .iter()
            .map(|&(_, v, row)| (self.victims[v as usize].1.as_ref(), row as usize))
    }

    fn vectors(&self, sink: &mut dyn FnMut(&[u8])) {
        // The victims were checked whole before the merge (`verify_all`): a read cannot fail
        // here, and a row left out would fail the written length check.
        for (seg, row) in self.rows() {
            if let Ok(v) = seg.vector(row) {
                sink(bytemuck::cast_slice(v));
            }
        }
    }

    /// Row `r`'s features are bytes `offsets[r]..offsets[r + 1]` of the local column.
    fn local_offsets(&self, sink: &mut dyn FnMut(&[u8])) {
        let mut end = 0u64;
        sink(&end.to_le_bytes());
        for (seg, row) in self.rows() {
            end += seg.local_len(row) as u64;
            sink(&end.to_le_bytes());
        }
    }

    fn local(&self, sink: &mut dyn FnMut(&[u8])) {
        for (seg, row) in self.rows() {
            if let Ok(bytes) = seg.local(row) {
                sink(bytes);
            }
        }
    }

    /// Writes them as one new segment (streamed; local columns only when some row has
    /// features, as sealing does).
    fn write(
        &self,
        store: &Store,
        next_segment: &mut u64,
        ids: &[u64],
    ) -> Result<(u64, Arc<Segment>, ManifestEntry)> {
        let dims = self.victims[0].1.dims();
        let local_len: usize = self.rows().map(|(seg, row)| seg.local_len(row)).sum();
        let (vectors, offsets, local) = (
            |sink: &mut dyn FnMut(&[u8])| self.vectors(sink),
            |sink: &mut dyn FnMut(&[u8])| self.local_offsets(sink),
            |sink: &mut dyn FnMut(&[u8])| self.local(sink),
        );
        let mut columns = vec![
            ColumnData::u64(IDS_COLUMN, ids),
            ColumnData::stream(
                VECTORS_COLUMN,
                ColumnKind::F32,
                dims as u32,
                ids.len() * dims * 4,
                &vectors,
            ),
        ];
        if local_len > 0 {
            columns.push(ColumnData::stream(
                LOCAL_OFFSETS_COLUMN,
                ColumnKind::U64,
                0,
                (ids.len() + 1) * 8,
                &offsets,
            ));
            columns.push(ColumnData::stream(
                LOCAL_COLUMN,
                ColumnKind::U8,
                0,
                local_len,
                &local,
            ));
        }
        store.write_new_segment(next_segment, ids.len(), dims, &columns)
    }
}

/// What the merge policy knows of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentStat {
    pub id: u64,
    pub rows: usize,
    /// Deleted rows still in it.
    pub dead: usize,
    /// Written before block checksums: every open reads it whole until it is rewritten.
    pub checked_whole_at_open: bool,
}

/// The knobs of background merging (from [`StoreOptions`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MergeTuning {
    pub flush_rows: usize,
    pub small_segment_rows: usize,
    pub merge_at: usize,
    pub max_deleted_share: f64,
}

impl MergeTuning {
    fn of(o: &StoreOptions) -> MergeTuning {
        MergeTuning {
            flush_rows: o.flush_rows,
            small_segment_rows: o.small_segment_rows,
            merge_at: o.merge_at,
            max_deleted_share: o.max_deleted_share,
        }
    }
}

/// The segments (ids) a compaction with `policy` rewrites, in the order given:
/// - `Full`: every segment, when there is more than one or any holds deleted rows;
/// - `Background`: size-tiered — segments smaller than `small_segment_rows` whose row counts
///   are within a factor of 4 of each other share a tier, and the first tier (smallest) with
///   `merge_at` members is merged, so each row is rewritten once per tier it climbs (write
///   amplification grows with log(rows), not rows); plus every segment whose deleted share
///   reached `max_deleted_share`.
pub(crate) fn choose_victims(
    segments: &[SegmentStat],
    policy: CompactionPolicy,
    t: &MergeTuning,
) -> Vec<u64> {
    let deleted_share = |s: &SegmentStat| s.dead as f64 / s.rows.max(1) as f64;
    match policy {
        CompactionPolicy::Full => {
            let dirty = segments
                .iter()
                .any(|s| deleted_share(s) > 0.0 || s.checked_whole_at_open);
            if segments.len() > 1 || dirty {
                segments.iter().map(|s| s.id).collect()
            } else {
                Vec::new()
            }
        }
        CompactionPolicy::Background => {
            let tier = |rows: usize| (rows / t.flush_rows.max(1)).max(1).ilog(4);
            let mut tiers: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for s in segments.iter().filter(|s| s.rows < t.small_segment_rows) {
                tiers.entry(tier(s.rows)).or_default().push(s.id);
            }
            let mut victims = tiers
                .into_values()
                .find(|members| members.len() >= t.merge_at)
                .unwrap_or_default();
            for s in segments {
                if deleted_share(s) >= t.max_deleted_share && !victims.contains(&s.id) {
                    victims.push(s.id);
                }
            }
            victims
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn victim_choice_table() {
        let t = MergeTuning {
            flush_rows: 100,
            small_segment_rows: 10_000,
            merge_at: 3,
            max_deleted_share: 0.25,
        };
        let seg = |id: u64, rows: usize, dead: usize| SegmentStat {
            id,
            rows,
            dead,
            checked_whole_at_open: false,
        };
        let old = |id: u64, rows: usize| SegmentStat {
            checked_whole_at_open: true,
            ..seg(id, rows, 0)
        };
        use CompactionPolicy::{Background, Full};
        let cases: Vec<(&str, Vec<SegmentStat>, CompactionPolicy, Vec<u64>)> = vec![
            (
                "full: nothing to do for one clean segment",
                vec![seg(1, 500, 0)],
                Full,
                vec![],
            ),
            (
                "full: one segment with deletes is rewritten",
                vec![seg(1, 500, 1)],
                Full,
                vec![1],
            ),
            (
                "full: one segment without block checksums is rewritten",
                vec![old(1, 500)],
                Full,
                vec![1],
            ),
            (
                "background: a segment without block checksums is left alone",
                vec![old(1, 500)],
                Background,
                vec![],
            ),
            (
                "full: several segments merge",
                vec![seg(1, 500, 0), seg(2, 100, 0)],
                Full,
                vec![1, 2],
            ),
            ("full: empty", vec![], Full, vec![]),
            (
                "background: too few in a tier",
                vec![seg(1, 100, 0), seg(2, 100, 0)],
                Background,
                vec![],
            ),
            (
                "background: a full tier merges",
                vec![seg(1, 100, 0), seg(2, 120, 0), seg(3, 150, 0)],
                Background,
                vec![1, 2, 3],
            ),
            (
                "background: tiers do not mix (×4 apart)",
                vec![seg(1, 100, 0), seg(2, 100, 0), seg(3, 1600, 0)],
                Background,
                vec![],
            ),
            (
                "background: the smallest full tier goes first",
                vec![
                    seg(1, 1600, 0),
                    seg(2, 100, 0),
                    seg(3, 1700, 0),
                    seg(4, 100, 0),
                    seg(5, 1800, 0),
                    seg(6, 100, 0),
                ],
                Background,
                vec![2, 4, 6],
            ),
            (
                "background: large segments never merge by size",
                vec![seg(1, 20_000, 0), seg(2, 20_000, 0), seg(3, 20_000, 0)],
                Background,
                vec![],
            ),
            (
                "background: a segment past the deleted share is rewritten alone",
                vec![seg(1, 20_000, 5_000), seg(2, 20_000, 4_999)],
                Background,
                vec![1],
            ),
            (
                "background: deleted share joins a tier merge once",
                vec![
                    seg(1, 100, 30),
                    seg(2, 100, 0),
                    seg(3, 100, 0),
                    seg(4, 9_000, 3_000),
                ],
                Background,
                vec![1, 2, 3, 4],
            ),
        ];
        for (name, segments, policy, want) in cases {
            assert_eq!(choose_victims(&segments, policy, &t), want, "{name}");
        }
    }
}
