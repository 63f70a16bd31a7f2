//! Compaction: which segments to rewrite (a pure policy, [`choose_victims`]) and the rewrite
//! itself — live rows into one new segment, swapped in by one synced manifest batch.

use std::sync::Arc;

use rocksdb::WriteBatch;

use super::*;

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

impl Store {
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
        let stats: Vec<SegmentStat> = snap
            .segments
            .iter()
            .map(|(id, seg)| SegmentStat {
                id: *id,
                rows: seg.rows(),
                dead: seg.ids().iter().filter(|&&id| snap.is_deleted(id)).count(),
            })
            .collect();
        let tuning = MergeTuning::of(&self.opts);
        let chosen = choose_victims(&stats, policy, &tuning);
        let victims: Vec<(u64, Arc<Segment>)> = chosen
            .iter()
            .filter_map(|v| snap.segments.iter().find(|(id, _)| id == v).cloned())
            .collect();
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

/// What the merge policy knows of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentStat {
    pub id: u64,
    pub rows: usize,
    /// Deleted rows still in it.
    pub dead: usize,
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
            let dirty = segments.iter().any(|s| deleted_share(s) > 0.0);
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
        let seg = |id: u64, rows: usize, dead: usize| SegmentStat { id, rows, dead };
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
