//! The lifecycle every derived structure follows, as pure policy: it covers the live rows with
//! ids up to its watermark (ids only grow, so new rows are appended by catching up), is
//! retrained once the collection has grown [`GROWTH_FACTOR`]× since it was trained, and is
//! purged of deleted rows once they are more than 1/[`PURGE_DIVISOR`] of it (or at a
//! foreground compaction). The tuning constants every structure shares live here too.

/// Retrain once the live rows reach this many times the rows a structure was trained on.
pub(crate) const GROWTH_FACTOR: u64 = 4;
/// Purge deleted rows once they exceed 1/this of the rows a structure holds.
pub(crate) const PURGE_DIVISOR: usize = 4;
/// Rows sampled to train (PCA, ITQ, the binary IVF's and VLAD's k-means: more adds little).
pub(crate) const SAMPLE_ROWS: usize = 65_536;
/// Rows added to a FAISS index per call.
pub(crate) const ADD_CHUNK: usize = 65_536;

/// What a structure needs to be current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    Nothing,
    /// Append the live rows above this watermark.
    CatchUp(u64),
    /// Drop the deleted rows it holds.
    Purge,
    /// Train and fill it anew.
    Rebuild,
}

/// The state of a derived structure, as the lifecycle sees it.
pub(crate) trait Derived {
    /// Highest id it covers (every live row up to it is in).
    fn watermark(&self) -> u64;
    /// Rows it holds, deleted ones included.
    fn rows(&self) -> usize;
    /// Live rows it was trained on (0: untrained, e.g. flat or random-projection).
    fn trained_on(&self) -> u64;
}

/// What the snapshot holds, as the lifecycle sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Collection {
    /// Live rows.
    pub live: usize,
    /// Live rows above the structure's watermark.
    pub live_above: usize,
    /// Highest id in the snapshot.
    pub max_id: u64,
}

impl Collection {
    /// `snap` as seen by a structure with watermark `watermark`.
    pub fn of(snap: &imgvec_storage::Snapshot, watermark: u64) -> Collection {
        Collection {
            live: snap.live_count(),
            live_above: snap.live_count_above(watermark),
            max_id: snap.max_id(),
        }
    }
}

/// Whether `live` rows are enough to retrain something trained on `trained_on`.
pub(crate) fn grown(live: u64, trained_on: u64) -> bool {
    trained_on > 0 && live >= GROWTH_FACTOR * trained_on
}

/// What `d` needs now (`force_purge`: drop every deleted row now, as a foreground compaction
/// does). Retraining comes first, then purging, then catching up.
pub(crate) fn plan(d: &dyn Derived, c: Collection, force_purge: bool) -> Plan {
    if grown(c.live as u64, d.trained_on()) {
        return Plan::Rebuild;
    }
    let live_covered = c.live.saturating_sub(c.live_above);
    let dead = d.rows().saturating_sub(live_covered);
    if dead > 0 && (force_purge || dead * PURGE_DIVISOR > d.rows()) {
        return Plan::Purge;
    }
    if c.max_id > d.watermark() {
        Plan::CatchUp(d.watermark())
    } else {
        Plan::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S {
        watermark: u64,
        rows: usize,
        trained_on: u64,
    }

    impl Derived for S {
        fn watermark(&self) -> u64 {
            self.watermark
        }
        fn rows(&self) -> usize {
            self.rows
        }
        fn trained_on(&self) -> u64 {
            self.trained_on
        }
    }

    #[test]
    fn plan_table() {
        let s = |watermark, rows, trained_on| S {
            watermark,
            rows,
            trained_on,
        };
        let c = |live, live_above, max_id| Collection {
            live,
            live_above,
            max_id,
        };
        // (name, structure, collection, force purge, plan)
        let cases = [
            (
                "current",
                s(100, 100, 100),
                c(100, 0, 100),
                false,
                Plan::Nothing,
            ),
            (
                "new rows",
                s(100, 100, 100),
                c(150, 50, 150),
                false,
                Plan::CatchUp(100),
            ),
            (
                "grown 4x: retrain",
                s(100, 100, 100),
                c(400, 300, 400),
                false,
                Plan::Rebuild,
            ),
            (
                "grown 3.99x: catch up",
                s(100, 100, 100),
                c(399, 299, 399),
                false,
                Plan::CatchUp(100),
            ),
            (
                "untrained never retrains",
                s(100, 100, 0),
                c(10_000, 9_900, 10_000),
                false,
                Plan::CatchUp(100),
            ),
            (
                "a quarter deleted: keep",
                s(100, 100, 100),
                c(75, 0, 100),
                false,
                Plan::Nothing,
            ),
            (
                "over a quarter deleted: purge",
                s(100, 100, 100),
                c(74, 0, 100),
                false,
                Plan::Purge,
            ),
            (
                "any deleted, forced: purge",
                s(100, 100, 100),
                c(99, 0, 100),
                true,
                Plan::Purge,
            ),
            (
                "forced, none deleted: catch up",
                s(100, 100, 100),
                c(110, 10, 110),
                true,
                Plan::CatchUp(100),
            ),
            (
                "purge before catch-up",
                s(100, 100, 100),
                c(60, 10, 110),
                false,
                Plan::Purge,
            ),
            (
                "rows deleted above the watermark do not count",
                s(100, 100, 100),
                c(100, 0, 120),
                false,
                Plan::CatchUp(100),
            ),
        ];
        for (name, st, coll, force, want) in cases {
            assert_eq!(plan(&st, coll, force), want, "{name}");
        }
        assert!(grown(8, 2) && !grown(7, 2) && !grown(1_000, 0));
    }
}
