//! Power-cut simulation in the spirit of redb's crash_consistency test: every segment-file
//! operation goes through a file layer that can "lose power" at any of them. After the cut,
//! whatever was not fsynced is torn or lost (file contents cut at a random length, unsynced
//! directory entries dropped, unsynced removals undone), and the database must reopen with every
//! acknowledged row and delete intact and nothing half-written visible. RocksDB's own writes are
//! all synced (`sync = true`) and are trusted.

use std::sync::Arc;

use crate::common::{check, row, Model};
use imgvec_storage::crash_sim::CrashFs;
use imgvec_storage::{CompactionPolicy, OpenMode, Store, StoreOptions};

/// Runs a fixed workload of commits (with flushes), deletes and compactions until the file
/// layer cuts power; returns what was acknowledged.
fn workload(store: &Store) -> Model {
    let mut model = Model::default();
    let mut n = 0;
    let mut commit = |model: &mut Model, count: usize| -> bool {
        let rows: Vec<_> = (0..count).map(|i| row(&format!("/p{}", n + i))).collect();
        n += count;
        let paths: Vec<String> = rows.iter().map(|r| r.path.clone()).collect();
        match store.commit(rows) {
            Ok(out) => {
                for (p, c) in paths.into_iter().zip(out) {
                    model.live.insert(p, c.id);
                }
                true
            }
            Err(_) => false,
        }
    };
    let delete = |model: &mut Model, paths: &[&str]| -> bool {
        let ids: Vec<u64> = paths
            .iter()
            .filter_map(|p| model.live.get(*p).copied())
            .collect();
        model.maybe_deleted.extend(ids.iter().copied());
        match store.delete(&ids) {
            Ok(_) => {
                for p in paths {
                    model.live.remove(*p);
                }
                model.deleted.extend(ids);
                true
            }
            Err(_) => false,
        }
    };
    let _ = commit(&mut model, 2)
        && commit(&mut model, 2)
        && commit(&mut model, 3)
        && delete(&mut model, &["/p1", "/p4"])
        && commit(&mut model, 1)
        && store.compact(CompactionPolicy::Full).is_ok()
        && commit(&mut model, 4)
        && delete(&mut model, &["/p0", "/p9"])
        && commit(&mut model, 3)
        && store.compact(CompactionPolicy::Background).is_ok()
        && store.compact(CompactionPolicy::Full).is_ok()
        && commit(&mut model, 2);
    model
}

fn options(fs: &CrashFs) -> StoreOptions {
    StoreOptions {
        flush_rows: 3,
        merge_at: 2,
        vfs: Arc::new(fs.clone()),
        ..StoreOptions::new(OpenMode::ReadWrite)
    }
}

#[test]
fn survives_a_power_cut_at_every_file_operation() {
    // A run without a cut counts the operations and must itself be consistent.
    let dir = tempfile::tempdir().unwrap();
    let fs = CrashFs::new(None);
    let store = Store::open_with(&dir.path().join("db"), options(&fs)).unwrap();
    let model = workload(&store);
    check(&store, &model).unwrap();
    let total_ops = fs.ops();
    assert!(total_ops > 40, "workload too small: {total_ops} operations");
    drop(store);

    let mut cuts = 0;
    for crash_at in 1..=total_ops {
        for seed in 0..3u64 {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("db");
            let fs = CrashFs::new(Some(crash_at));
            let store = Store::open_with(&db, options(&fs)).unwrap();
            let model = workload(&store);
            assert!(fs.crashed(), "no cut at operation {crash_at}");
            drop(store);
            fs.power_loss(crash_at as u64 * 7 + seed);

            let store = Store::open(&db, OpenMode::ReadWrite)
                .unwrap_or_else(|e| panic!("cut at op {crash_at} (seed {seed}): reopen: {e}"));
            if let Err(e) = check(&store, &model) {
                panic!("cut at op {crash_at} (seed {seed}): {e}");
            }
            // The survivor is fully usable: it takes writes, flushes and compacts.
            store.commit(vec![row("/after")]).unwrap();
            store.compact(CompactionPolicy::Full).unwrap();
            let mut after = model.clone();
            after.live.insert(
                "/after".into(),
                store.id_for_path("/after").unwrap().unwrap(),
            );
            check(&store, &after).unwrap();
            cuts += 1;
        }
    }
    assert_eq!(cuts, total_ops * 3);
    println!("{cuts} power cuts ({total_ops} file operations x 3 seeds): all recovered");
}
