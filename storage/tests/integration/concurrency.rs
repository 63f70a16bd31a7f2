//! Readers search snapshots while one writer commits and deletes and compactions run: every
//! snapshot is consistent (no id twice, every row acknowledged before the snapshot was taken
//! present unless deleted), and readers are never blocked by compaction I/O.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::common::{row, vector_for};
use imgvec_storage::{CompactionPolicy, OpenMode, Store, StoreOptions};

#[test]
fn readers_writer_and_compactor_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open_with(
            &dir.path().join("db"),
            StoreOptions {
                flush_rows: 7,
                merge_at: 3,
                ..StoreOptions::new(OpenMode::ReadWrite)
            },
        )
        .unwrap(),
    );
    // Ids 1..=acked are acknowledged; ids in `deleted` were deleted; ids in `deleting` were
    // about to be (a superset of `deleted`).
    let acked = Arc::new(AtomicU64::new(0));
    let deleted = Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let deleting = Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let (st, ack, del, dn) = (store.clone(), acked.clone(), deleted.clone(), done.clone());
        let going = deleting.clone();
        s.spawn(move || {
            for i in 0..400u64 {
                let out = st.commit(vec![row(&format!("/r{i}"))]).unwrap();
                assert_eq!(out[0].id, i + 1);
                ack.store(i + 1, Ordering::SeqCst);
                if i % 3 == 0 && i > 10 {
                    let victim = i - 10;
                    going.lock().insert(victim);
                    st.delete(&[victim]).unwrap();
                    del.lock().insert(victim);
                }
            }
            dn.store(true, Ordering::SeqCst);
        });
        let (st, dn) = (store.clone(), done.clone());
        s.spawn(move || {
            let mut n = 0;
            while !dn.load(Ordering::SeqCst) {
                let policy = if n % 4 == 0 {
                    CompactionPolicy::Full
                } else {
                    CompactionPolicy::Background
                };
                st.compact(policy).unwrap();
                n += 1;
            }
        });
        for _ in 0..3 {
            let (st, ack, del, dn) = (store.clone(), acked.clone(), deleted.clone(), done.clone());
            let going = deleting.clone();
            s.spawn(move || {
                let mut checks = 0;
                while !dn.load(Ordering::SeqCst) || checks < 5 {
                    let deleted_before: HashSet<u64> = del.lock().clone();
                    let acked_before = ack.load(Ordering::SeqCst);
                    let snap = st.snapshot();
                    let deleting_after: HashSet<u64> = going.lock().clone();
                    let mut seen = HashSet::new();
                    let all = snap
                        .segments()
                        .iter()
                        .flat_map(|(_, seg)| seg.ids().iter().copied())
                        .chain(snap.pending().iter().flat_map(|c| c.ids.iter().copied()));
                    for id in all {
                        if !snap.is_deleted(id) {
                            assert!(seen.insert(id), "id {id} twice in one snapshot");
                        }
                    }
                    for id in 1..=acked_before {
                        if !deleting_after.contains(&id) {
                            assert!(seen.contains(&id), "acknowledged id {id} missing");
                            let v = snap.vector(id).unwrap().unwrap();
                            assert_eq!(v, &vector_for(&format!("/r{}", id - 1))[..]);
                        }
                    }
                    for id in &deleted_before {
                        assert!(!seen.contains(id), "deleted id {id} visible");
                    }
                    checks += 1;
                }
            });
        }
    });
    store.compact(CompactionPolicy::Full).unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.segments().len(), 1);
    assert_eq!(
        snap.segments()[0].1.rows() as u64,
        400 - deleted.lock().len() as u64
    );
}
