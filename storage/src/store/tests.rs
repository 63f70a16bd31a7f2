use super::*;

fn row(path: &str, hash: u8, v: f32) -> NewRow {
    NewRow {
        path: path.into(),
        path_bytes: None,
        content_hash: ContentHash([hash; 32]),
        width: 10,
        height: 20,
        format: "png".into(),
        attributes: BTreeMap::new(),
        thumbnail: vec![1, 2, 3],
        vector: vec![v, 1.0 - v],
        local: path.bytes().take((v * 10.0) as usize).collect(),
    }
}

fn small(mode: OpenMode) -> StoreOptions {
    StoreOptions {
        flush_rows: 2,
        ..StoreOptions::new(mode)
    }
}

#[test]
fn commit_reopen_replace_duplicate_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        let out = store
            .commit(vec![row("/a", 1, 0.1), row("/b", 1, 0.2)])
            .unwrap();
        assert_eq!(out[0].id, 1);
        assert_eq!(out[1].duplicate_of, Some(1));
        // A second writer in the same process is refused by RocksDB's lock.
        assert!(matches!(
            Store::open(&db, OpenMode::ReadWrite),
            Err(StorageError::Locked { .. })
        ));
        let ro = Store::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(ro.get_by_path("/b").unwrap().unwrap().id, 2);
        assert_eq!(ro.vector(2).unwrap().unwrap(), vec![0.2, 0.8]);
    }
    // A segment file nobody listed (an interrupted flush) is removed on open.
    let orphan = db.join(SEGMENTS_DIR).join("seg-00000000000000ff.ivs");
    std::fs::write(&orphan, b"junk").unwrap();
    let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    assert!(!orphan.exists());
    // Pending rows survived the reopen.
    assert_eq!(store.vector(2).unwrap().unwrap(), vec![0.2, 0.8]);
    let out = store.commit(vec![row("/a", 3, 0.5)]).unwrap();
    assert_eq!(out[0].replaced, Some(1));
    assert_eq!(store.get(1).unwrap(), None);
    assert_eq!(store.vector(1).unwrap(), None);
    assert!(store.snapshot().tombstones.contains(&1));
    assert_eq!(store.delete(&[2, 2, 99]).unwrap(), vec![2]);
    drop(store);
    let store = Store::open(&db, OpenMode::ReadOnly).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.live_rows, stats.deleted_rows, stats.pending_rows),
        (1, 2, 3)
    );
    assert_eq!(store.get_by_path("/a").unwrap().unwrap().id, 3);
    assert!(matches!(
        store.commit(vec![row("/c", 4, 0.0)]),
        Err(StorageError::ReadOnly { .. })
    ));
}

#[test]
fn flush_and_compaction_drop_deleted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let store = Store::open_with(&db, small(OpenMode::ReadWrite)).unwrap();
    for i in 0..10u8 {
        let p = format!("/{i}");
        store.commit(vec![row(&p, i, i as f32 / 10.0)]).unwrap();
    }
    // Every second commit sealed a segment of two rows.
    assert_eq!(store.snapshot().segments.len(), 5);
    assert_eq!(store.snapshot().pending_rows(), 0);
    store.delete(&[1, 2, 3, 4, 5]).unwrap();
    let report = store.compact(CompactionPolicy::Full).unwrap();
    assert_eq!(
        (
            report.segments_merged,
            report.rows_kept,
            report.rows_dropped
        ),
        (5, 5, 5)
    );
    let snap = store.snapshot();
    assert_eq!(snap.segments.len(), 1);
    assert_eq!(snap.segments[0].1.ids(), &[6, 7, 8, 9, 10]);
    assert!(snap.tombstones.is_empty());
    assert_eq!(std::fs::read_dir(db.join(SEGMENTS_DIR)).unwrap().count(), 1);
    drop(snap);
    drop(store);
    let store = Store::open(&db, OpenMode::ReadOnly).unwrap();
    assert_eq!(store.vector(8).unwrap().unwrap(), vec![0.7, 0.3]);
    assert_eq!(store.vector(3).unwrap(), None);
    assert_eq!(store.stats().unwrap().live_rows, 5);
    // Local features travelled through pending rows, flushes and the merge.
    let snap = store.snapshot();
    assert!(snap.segments[0].1.has_local());
    for id in 6..=10u64 {
        let i = id - 1;
        let want: Vec<u8> = format!("/{i}").bytes().take(i as usize).collect();
        assert_eq!(snap.local(id).unwrap(), Some(&want[..]), "row {id}");
    }
    assert_eq!(snap.local(3).unwrap(), None);
}

#[test]
fn local_features_survive_reopen_from_pending_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    let mut rows = vec![row("/a", 1, 0.5), row("/b", 2, 0.0), row("/c", 3, 0.9)];
    rows[1].local.clear();
    store.commit(rows).unwrap();
    drop(store);
    let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.pending_rows(), 3);
    assert_eq!(snap.local(1).unwrap(), Some(&b"/a"[..]));
    assert_eq!(snap.local(2).unwrap(), Some(&b""[..]));
    assert_eq!(snap.local(3).unwrap(), Some(&b"/c"[..]));
    assert_eq!(store.vector(3).unwrap().unwrap(), vec![0.9, 1.0 - 0.9]);
    drop(snap);
    store.flush().unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.segments[0].1.local(0).unwrap(), b"/a");
    assert_eq!(snap.segments[0].1.local(1).unwrap(), b"");
    assert_eq!(snap.local(3).unwrap(), Some(&b"/c"[..]));
}

#[test]
fn background_policy_merges_small_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(&dir.path().join("db"), small(OpenMode::ReadWrite)).unwrap();
    for i in 0..6u8 {
        store.commit(vec![row(&format!("/{i}"), i, 0.5)]).unwrap();
    }
    assert_eq!(
        store
            .compact(CompactionPolicy::Background)
            .unwrap()
            .segments_merged,
        0
    );
    for i in 6..8u8 {
        store.commit(vec![row(&format!("/{i}"), i, 0.5)]).unwrap();
    }
    assert_eq!(
        store
            .compact(CompactionPolicy::Background)
            .unwrap()
            .segments_merged,
        4
    );
    assert_eq!(store.snapshot().segments.len(), 1);
}

/// Size tiers: four 2-row segments merge into one of 8 rows (the next tier), which is left
/// alone when new small segments arrive, until its own tier fills up.
#[test]
fn background_merges_stay_within_size_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(&dir.path().join("db"), small(OpenMode::ReadWrite)).unwrap();
    let mut n = 0u8;
    let mut add_segments = |count: usize| {
        for _ in 0..count * 2 {
            store.commit(vec![row(&format!("/{n}"), n, 0.5)]).unwrap();
            n += 1;
        }
    };
    add_segments(4);
    assert_eq!(
        store
            .compact(CompactionPolicy::Background)
            .unwrap()
            .rows_kept,
        8
    );
    add_segments(4);
    let report = store.compact(CompactionPolicy::Background).unwrap();
    assert_eq!((report.segments_merged, report.rows_kept), (4, 8));
    let mut sizes: Vec<usize> = store
        .snapshot()
        .segments
        .iter()
        .map(|(_, s)| s.rows())
        .collect();
    sizes.sort();
    assert_eq!(sizes, vec![8, 8]);
}

#[test]
fn damaged_segment_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    store.commit(vec![row("/a", 1, 0.1)]).unwrap();
    store.flush().unwrap();
    drop(store);
    let seg = db.join(SEGMENTS_DIR).join("seg-0000000000000001.ivs");
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 1;
    std::fs::write(&seg, bytes).unwrap();
    match Store::open(&db, OpenMode::ReadOnly) {
        Err(StorageError::DataCorruption { path, .. }) => assert_eq!(path, seg),
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&seg).unwrap();
    match Store::open(&db, OpenMode::ReadWrite) {
        Err(StorageError::DataCorruption { path, reason }) => {
            assert_eq!(path, seg);
            assert!(reason.contains("missing"));
        }
        other => panic!("{other:?}"),
    }
}

/// Deleting rows and compacting gives their metadata's space back (records, thumbnails, index
/// keys), and sealing gives back the write-ahead copies of the sealed rows: RocksDB keeps
/// deleted values until it compacts their range, which the store now asks for.
#[test]
fn flush_and_compact_reclaim_deleted_metadata() {
    const ROWS: usize = 200;
    const THUMB: usize = 16 << 10;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let opts = StoreOptions {
        flush_rows: ROWS,
        ..StoreOptions::new(OpenMode::ReadWrite)
    };
    let store = Store::open_with(&db, opts).unwrap();
    // Incompressible thumbnails and write-ahead values (RocksDB compresses blocks).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let rows: Vec<NewRow> = (0..ROWS)
        .map(|i| NewRow {
            thumbnail: noise(THUMB),
            local: noise(THUMB),
            ..row(&format!("/r{i}"), i as u8, 0.5)
        })
        .collect();
    let ids: Vec<u64> = store.commit(rows).unwrap().iter().map(|c| c.id).collect();
    // The commit reached `flush_rows`: the rows were sealed (their write-ahead copies are
    // deleted; RocksDB's log still holds them until its memtables are flushed).
    let meta = db.join(META_DIR);
    let sealed = dir_size(&meta);
    store.delete(&ids[..ROWS / 2]).unwrap();
    store.compact(CompactionPolicy::Full).unwrap();
    let compacted = dir_size(&meta);
    // What is left: the live half's thumbnails, records and RocksDB's small files.
    let live = (ROWS / 2 * THUMB) as u64;
    assert!(
        compacted < live + live / 4,
        "metadata {sealed} → {compacted} bytes after deleting half ({live} live thumbnail bytes)"
    );
    assert_eq!(store.records().unwrap().len(), ROWS / 2);
    assert_eq!(
        store.thumbnail(ids[ROWS - 1]).unwrap().unwrap().len(),
        THUMB
    );
}

/// A writer's close flushes the metadata memtables: RocksDB's logs are left empty, so a later
/// open (a search process's) has nothing to replay, and every row is still there.
#[test]
fn a_writers_close_leaves_no_log_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let logs = || -> u64 {
        std::fs::read_dir(db.join(META_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    let store = Store::open_with(&db, small(OpenMode::ReadWrite)).unwrap();
    let rows: Vec<NewRow> = (0..5).map(|i| row(&format!("/l{i}"), i, 0.5)).collect();
    store.commit(rows).unwrap();
    assert!(
        logs() > 0,
        "the commit is in RocksDB's log while the writer is open"
    );
    drop(store);
    assert_eq!(logs(), 0, "log bytes left after the writer closed");
    let ro = Store::open(&db, OpenMode::ReadOnly).unwrap();
    assert_eq!(ro.records().unwrap().len(), 5);
}

#[test]
fn lock_conflicts_are_told_from_other_failures() {
    // (RocksDB's message, a lock conflict)
    let cases = [
        (
            "IO error: While lock file: /db/meta/LOCK: Resource temporarily unavailable",
            true,
        ),
        (
            "IO error: lock hold by current process, acquire time 1 acquiring thread 2: \
             /db/meta/LOCK: No locks available",
            true,
        ),
        (
            "Corruption: block checksum mismatch: stored = 1, computed = 2 in /db/meta/000009.sst",
            false,
        ),
        ("Corruption: Bad table magic number", false),
        (
            "IO error: No such file or directory: /db/meta/MANIFEST-000005",
            false,
        ),
    ];
    for (message, locked) in cases {
        assert_eq!(is_lock_conflict(message), locked, "{message}");
    }
}

#[test]
fn a_second_writer_is_told_the_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let _first = Store::open(&db, OpenMode::ReadWrite).unwrap();
    match Store::open(&db, OpenMode::ReadWrite) {
        Err(StorageError::Locked { path, .. }) => assert_eq!(path, db),
        other => panic!("{other:?}"),
    }
}

/// A damaged metadata table is corruption, not "locked by another process" (the check once
/// matched "lock" inside "block checksum mismatch").
#[test]
fn a_damaged_metadata_table_is_not_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        store
            .commit(
                (0..50)
                    .map(|i| row(&format!("/a{i}"), i as u8, 0.1))
                    .collect(),
            )
            .unwrap();
        store.compact(CompactionPolicy::Full).unwrap();
    }
    let mut damaged = 0;
    for entry in std::fs::read_dir(db.join(META_DIR)).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sst") {
            let mut bytes = std::fs::read(&path).unwrap();
            let n = bytes.len();
            for b in &mut bytes[n.saturating_sub(400)..n - 60] {
                *b ^= 0x5a;
            }
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no table file to damage");
    let failure = match Store::open(&db, OpenMode::ReadWrite) {
        Err(e) => e,
        Ok(store) => store.records().expect_err("damaged tables read back"),
    };
    assert!(
        matches!(failure, StorageError::DataCorruption { .. }),
        "{failure}"
    );
    assert!(!failure.to_string().contains("locked"), "{failure}");
}

#[test]
fn only_empty_or_absent_folders_become_databases() {
    let dir = tempfile::tempdir().unwrap();
    // A photo folder given as the database by mistake: refused, nothing written or removed.
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("segments")).unwrap();
    std::fs::write(photos.join("a.jpg"), b"jpeg").unwrap();
    std::fs::write(photos.join("segments").join("keep.txt"), b"mine").unwrap();
    match Store::open(&photos, OpenMode::ReadWrite) {
        Err(StorageError::NotADatabase { path, reason }) => {
            assert_eq!(path, photos);
            assert!(reason.contains("not empty"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!photos.join("meta").exists());
    assert!(photos.join("segments").join("keep.txt").exists());
    // A file is not a folder.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        Store::open(&file, OpenMode::ReadWrite),
        Err(StorageError::NotADatabase { .. })
    ));
    // Without `create`, a missing or empty folder is refused too; read-only handles never
    // create.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let no_create = StoreOptions {
        create: false,
        ..StoreOptions::new(OpenMode::ReadWrite)
    };
    for path in [&empty, &dir.path().join("absent")] {
        for opts in [no_create.clone(), StoreOptions::new(OpenMode::ReadOnly)] {
            match Store::open_with(path, opts) {
                Err(StorageError::NotADatabase { path: p, .. }) => assert_eq!(&p, path),
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(!dir.path().join("absent").exists());
    // A new database folder is private to its owner.
    {
        use std::os::unix::fs::PermissionsExt;
        let private = dir.path().join("private");
        drop(Store::open(&private, OpenMode::ReadWrite).unwrap());
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
    // Absent, empty, or left by an interrupted creation: created.
    std::fs::create_dir_all(dir.path().join("interrupted").join("segments")).unwrap();
    std::fs::create_dir_all(dir.path().join("interrupted").join("meta")).unwrap();
    for name in ["new", "empty", "interrupted"] {
        let path = dir.path().join(name);
        drop(Store::open(&path, OpenMode::ReadWrite).unwrap());
        assert!(Store::exists(&path), "{name}");
        drop(Store::open_with(&path, no_create.clone()).unwrap());
    }
}

#[test]
fn verify_finds_disagreements_and_backup_copies_a_whole_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let store = Store::open_with(&db, small(OpenMode::ReadWrite)).unwrap();
    // Three rows sealed in a segment (flush_rows 2), one pending, one deleted.
    store
        .commit(vec![row("/a", 1, 0.1), row("/b", 2, 0.2)])
        .unwrap();
    store.commit(vec![row("/c", 3, 0.3)]).unwrap();
    store.delete(&[2]).unwrap();
    let check = store.verify().unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!((check.records, check.pending_rows), (2, 1));
    // A consistent copy while the store is open, with its pending row.
    let copy_dir = dir.path().join("copy");
    let stats = store.backup_to(&copy_dir).unwrap();
    assert_eq!(stats.segments, snap_segments(&store));
    {
        let copy = Store::open(&copy_dir, OpenMode::ReadOnly).unwrap();
        assert!(copy.verify().unwrap().problems.is_empty());
        let paths: Vec<String> = copy
            .records()
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, vec!["/a", "/c"]);
        assert_eq!(copy.vector(3).unwrap(), store.vector(3).unwrap());
    }
    // A destination that is not empty is refused.
    assert!(store.backup_to(&copy_dir).is_err());
    // A record the path index no longer names, and a thumbnail without a record.
    let paths = store.cf(CF_PATHS).unwrap();
    store.db.delete_cf(paths, b"/a").unwrap();
    store
        .db
        .put_cf(store.cf(CF_THUMBS).unwrap(), be(99), b"x")
        .unwrap();
    let problems = store.verify().unwrap().problems;
    assert!(
        problems
            .iter()
            .any(|p| p.contains("row 1 (/a): the path index")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("thumbnail")),
        "{problems:?}"
    );
}

fn snap_segments(store: &Store) -> usize {
    store.snapshot().segments().len()
}

/// A flush whose segment cannot be made durable fails without leaving its file behind, and the
/// rows stay pending (acknowledged, in the write-ahead column) for the next flush.
#[test]
fn a_failed_flush_leaves_no_orphan_segment() {
    struct FailingDirSync;
    impl Vfs for FailingDirSync {
        fn create(&self, path: &Path) -> Result<Box<dyn crate::vfs::VfsFile>> {
            StdFs.create(path)
        }
        fn sync_dir(&self, dir: &Path) -> Result<()> {
            Err(StorageError::io(dir, std::io::Error::other("disk full")))
        }
        fn remove(&self, path: &Path) -> Result<()> {
            StdFs.remove(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> Result<()> {
            StdFs.rename(from, to)
        }
        fn exchange(&self, a: &Path, b: &Path) -> Result<()> {
            StdFs.exchange(a, b)
        }
        fn create_dir(&self, dir: &Path) -> Result<()> {
            StdFs.create_dir(dir)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let store = Store::open_with(
        &db,
        StoreOptions {
            vfs: Arc::new(FailingDirSync),
            ..StoreOptions::new(OpenMode::ReadWrite)
        },
    )
    .unwrap();
    store.commit(vec![row("/a", 1, 0.1)]).unwrap();
    assert!(store.flush().is_err());
    assert_eq!(std::fs::read_dir(db.join(SEGMENTS_DIR)).unwrap().count(), 0);
    drop(store);
    let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    assert_eq!(store.snapshot().pending_rows(), 1);
    store.flush().unwrap();
    assert_eq!(store.get_by_path("/a").unwrap().unwrap().id, 1);
}

#[test]
fn attributes_set_after_ingest_are_durable_and_read_only_handles_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        let mut first = row("/a", 1, 0.1);
        first.attributes.insert("old".into(), "x".into());
        let id = store.commit(vec![first]).unwrap()[0].id;
        let set = BTreeMap::from([("trip".to_string(), "2024".to_string())]);
        let rec = store
            .set_attributes(id, &set, &["old".to_string()])
            .unwrap()
            .unwrap();
        assert_eq!(rec.attributes, set);
        assert!(store.set_attributes(99, &set, &[]).unwrap().is_none());
    }
    let store = Store::open(&db, OpenMode::ReadOnly).unwrap();
    let rec = store.get(1).unwrap().unwrap();
    assert_eq!(rec.attributes.get("trip").map(String::as_str), Some("2024"));
    assert!(!rec.attributes.contains_key("old"));
    assert!(store.set_attributes(1, &BTreeMap::new(), &[]).is_err());
}

#[test]
fn records_are_scanned_in_id_order_from_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), OpenMode::ReadWrite).unwrap();
    let rows = (1..=6u8).map(|i| row(&format!("/{i}"), i, 0.1 * i as f32));
    let ids: Vec<u64> = store
        .commit(rows.collect())
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    store.delete(&[ids[3]]).unwrap();
    let scan = |after: Option<u64>, limit: usize| {
        let mut seen = Vec::new();
        store
            .scan_records(after, &mut |r| {
                seen.push(r.id);
                seen.len() < limit
            })
            .unwrap();
        seen
    };
    let live: Vec<u64> = ids.iter().copied().filter(|&id| id != ids[3]).collect();
    // (after, limit, want)
    let table: [(Option<u64>, usize, &[u64]); 5] = [
        (None, 100, &live),
        (None, 2, &live[..2]),
        (Some(ids[1]), 2, &live[2..4]), // a deleted row is skipped, not counted
        (Some(ids[5]), 100, &[]),
        (Some(u64::MAX), 100, &[]),
    ];
    for (after, limit, want) in table {
        assert_eq!(scan(after, limit), want, "after {after:?}, limit {limit}");
    }
    assert_eq!(store.records().unwrap().len(), live.len());
}
