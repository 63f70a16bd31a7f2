//! Power cuts through the engine's own files: the model copy made when a database is created,
//! and every derived file (IVF-PQ, Hamming, binary IVF) with its publication. The database runs
//! on a file layer that cuts power at a chosen operation (`imgvec_storage::crash_sim`); after
//! the cut whatever was not synced is torn, lost or undone, and the database must reopen with
//! every acknowledged row, verify clean (a published derived file is whole, an unpublished one
//! at most a leftover) and answer searches in every mode. The suite cuts at a spread of
//! operations; `IMGVEC_POWER_CUTS=all` cuts at every one.

use imgvec_testkit::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgvec::{
    Database, FileLayer, IndexOptions, IngestOptions, IngestStatus, OpenOptions, PipelineChoice,
    Preset, Query, ReindexOptions, SearchMode, SearchOptions, Source,
};
use imgvec_storage::crash_sim::CrashFs;

fn options(layer: Option<&CrashFs>) -> OpenOptions {
    OpenOptions {
        background_compaction: false,
        index: IndexOptions {
            min_train_rows: 4,
            ..IndexOptions::default()
        },
        file_layer: layer.map(|fs| FileLayer(Arc::new(fs.clone()))),
        ..OpenOptions::default()
    }
}

/// Ingests, trains and saves the indexes, deletes and compacts until something fails (the
/// cut); returns the paths acknowledged and not deleted since.
fn workload(db: &Path, files: &[PathBuf], layer: Option<&CrashFs>) -> BTreeSet<String> {
    let mut live = BTreeSet::new();
    let Ok(db) = Database::open(db, options(layer)) else {
        return live;
    };
    let ingest = |live: &mut BTreeSet<String>, part: &[PathBuf]| -> bool {
        let acked = parking_lot::Mutex::new(Vec::new());
        let sources = part.iter().cloned().map(Source::File).collect();
        let result = db.ingest(sources, &IngestOptions::default(), &|e| {
            if e.status == IngestStatus::Stored {
                acked.lock().push(e.path.clone());
            }
        });
        live.extend(acked.into_inner());
        result.is_ok()
    };
    let _ = ingest(&mut live, &files[..4])
        && db.refresh_indexes().is_ok()
        && ingest(&mut live, &files[4..8])
        && {
            let gone = files[1].display().to_string();
            let id = db.get_by_path(&gone).ok().flatten().map(|r| r.id);
            match id.map(|id| db.delete(&[id])) {
                Some(Ok(_)) => {
                    live.remove(&gone);
                    true
                }
                _ => false,
            }
        }
        && db.compact().is_ok()
        && ingest(&mut live, &files[8..10])
        && db.refresh_indexes().is_ok();
    live
}

#[test]
fn survives_a_power_cut_in_the_engines_files() {
    let files = db_images(10);
    let tmp = tempfile::tempdir().unwrap();
    let fs = CrashFs::new(None);
    let live = workload(&tmp.path().join("whole"), &files, Some(&fs));
    assert_eq!(live.len(), 9, "the workload without a cut");
    let total = fs.ops();
    assert!(total > 30, "{total} file operations");
    let every = std::env::var("IMGVEC_POWER_CUTS").is_ok_and(|v| v == "all");
    let cuts: Vec<usize> = if every {
        (1..=total).collect()
    } else {
        let step = total.div_ceil(12);
        let mut cuts: Vec<usize> = (1..=total).step_by(step).chain([total]).collect();
        cuts.dedup();
        cuts
    };
    for &crash_at in &cuts {
        let db_dir = tmp.path().join(format!("cut{crash_at}"));
        let fs = CrashFs::new(Some(crash_at));
        let live = workload(&db_dir, &files, Some(&fs));
        assert!(fs.crashed(), "no cut at operation {crash_at}");
        fs.power_loss(crash_at as u64);
        let what = format!("cut at operation {crash_at} of {total}");
        let db = Database::open(&db_dir, options(None))
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let stored: BTreeSet<String> = db.records().unwrap().into_iter().map(|r| r.path).collect();
        assert!(
            stored.is_superset(&live),
            "{what}: lost {:?}",
            live.difference(&stored)
        );
        let report = db.verify().unwrap();
        assert!(report.ok, "{what}: {:?}", report.store.problems);
        if let Some(first) = stored.iter().next() {
            for mode in [SearchMode::Exact, SearchMode::IvfPq, SearchMode::Hamming] {
                let opts = SearchOptions {
                    mode,
                    ..SearchOptions::default()
                };
                let hits = db
                    .search(Query::Path(first.into()), &opts)
                    .unwrap_or_else(|e| panic!("{what}: {mode} search: {e}"));
                assert!(!hits.is_empty(), "{what}: {mode}");
            }
        }
        // The survivor takes writes again and brings its derived files current.
        db.refresh_indexes().unwrap();
        assert!(db.verify().unwrap().ok, "{what}: after a refresh");
    }
    eprintln!(
        "{} power cuts of {total} file operations: all recovered",
        cuts.len()
    );
}

/// A power cut at any file operation of a reindex (the new database's files, the exchange of
/// the two folders, the old one's move and removal) leaves `DB` a whole database, the old one
/// or the new one, holding every row.
#[test]
fn survives_a_power_cut_during_a_reindex() {
    let files = db_images(6);
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let dir = tmp.path().join(name).join("db");
        let db = Database::open(&dir, options(None)).unwrap();
        let sources = files.iter().cloned().map(Source::File).collect();
        db.ingest(sources, &IngestOptions::default(), &|_| {})
            .unwrap();
        dir
    };
    let reindex = |dir: &Path, fs: &CrashFs| {
        imgvec::reindex(
            dir,
            PipelineChoice::Preset(Preset::Balanced),
            ReindexOptions::default(),
            options(Some(fs)),
            &|_| {},
        )
    };
    let whole = make("whole");
    let fs = CrashFs::new(None);
    assert!(reindex(&whole, &fs).unwrap().swapped);
    let total = fs.ops();
    let every = std::env::var("IMGVEC_POWER_CUTS").is_ok_and(|v| v == "all");
    let step = if every { 1 } else { total.div_ceil(8) };
    let mut cuts: Vec<usize> = (1..=total).step_by(step).chain([total]).collect();
    cuts.dedup();
    let mut outcomes = BTreeSet::new();
    for &crash_at in &cuts {
        let dir = make(&format!("cut{crash_at}"));
        let fs = CrashFs::new(Some(crash_at));
        assert!(
            reindex(&dir, &fs).is_err(),
            "no cut at operation {crash_at}"
        );
        fs.power_loss(crash_at as u64);
        let what = format!("cut at operation {crash_at} of {total}");
        let db = Database::open(&dir, options(None)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(db.records().unwrap().len(), files.len(), "{what}");
        assert!(db.verify().unwrap().ok, "{what}");
        outcomes.insert(db.pipeline().unwrap().name);
    }
    eprintln!(
        "{} power cuts of {total} reindex file operations: all recovered, as {outcomes:?}",
        cuts.len()
    );
}
