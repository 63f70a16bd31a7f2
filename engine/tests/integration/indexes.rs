//! Approximate search modes (IVF-PQ, Hamming, binary IVF) against exact search on real photos
//! (instances-dev through the default MobileNetV2): recall thresholds, deletes, filters,
//! persistence, visibility of new rows, and searches from many threads while a writer inserts.

use imgvec_testkit::*;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgvec::{
    Database, Filter, IndexOptions, IngestOptions, OpenOptions, Query, SearchMode, SearchOptions,
    Source,
};

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn ids(hits: &[imgvec::Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

/// Mean share of exact's top 10 found in `got`'s top 10.
fn agreement(got: &[Vec<u64>], truth: &[Vec<u64>]) -> f64 {
    let mut sum = 0.0;
    for (g, t) in got.iter().zip(truth) {
        let t: HashSet<&u64> = t.iter().take(10).collect();
        sum += g.iter().take(10).filter(|id| t.contains(id)).count() as f64 / t.len().max(1) as f64;
    }
    sum / got.len().max(1) as f64
}

fn opts(mode: SearchMode) -> SearchOptions {
    SearchOptions {
        mode,
        ..SearchOptions::default()
    }
}

/// Rows stored: instances-dev has 684; IVF-PQ trains 4-bit PQ on this few.
const ROWS: usize = 600;

#[test]
fn approximate_modes_agree_with_exact_on_real_photos() {
    let data = datasets().join("instances-dev");
    let db_files = sorted_files(&data.join("db"));
    let query_files: Vec<PathBuf> = sorted_files(&data.join("queries"))
        .into_iter()
        .step_by(5)
        .take(50)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    // No background thread: the indexes are trained once, on all rows, by refresh_indexes (a
    // background thread would train as soon as 100 rows exist and retrain only at 4×).
    let open = OpenOptions {
        index: IndexOptions {
            min_train_rows: 100,
            ..IndexOptions::default()
        },
        background_compaction: false,
        ..OpenOptions::default()
    };
    let db = Database::open(&path, open.clone()).unwrap();
    // Half the rows carry half=a, half half=b (for the filter checks).
    for (i, chunk) in db_files[..ROWS].chunks(ROWS / 2).enumerate() {
        let ingest = IngestOptions {
            attributes: BTreeMap::from([("half".to_string(), ["a", "b"][i].to_string())]),
            ..IngestOptions::default()
        };
        let sources = chunk.iter().cloned().map(Source::File).collect();
        let summary = db.ingest(sources, &ingest, &|_| {}).unwrap();
        assert_eq!(summary.stored, ROWS as u64 / 2);
    }
    db.refresh_indexes().unwrap();
    let info = db.info().unwrap().indexes;
    let ivf = info.ivfpq.expect("IVF-PQ trained above min_train_rows");
    assert_eq!(ivf.rows, ROWS);
    let ham = info.hamming.expect("binary codes built");
    assert_eq!((ham.rows, ham.bits), (ROWS, 256));
    assert_eq!(format!("{:?}", ham.encoder), "Itq");
    assert!(ham.ivf_nlist.is_some());

    let queries: Vec<Query> = query_files.iter().cloned().map(Query::Path).collect();
    let run = |db: &Database, o: &SearchOptions| -> Vec<Vec<u64>> {
        db.search_batch(queries.clone(), o)
            .into_iter()
            .map(|r| ids(&r.unwrap()))
            .collect()
    };
    let exact = run(&db, &opts(SearchMode::Exact));
    let mut by_mode = BTreeMap::new();
    for (mode, min) in [
        (SearchMode::IvfPq, 0.95),
        (SearchMode::Hamming, 0.97),
        (SearchMode::HammingIvf, 0.85),
    ] {
        let got = run(&db, &opts(mode));
        let a = agreement(&got, &exact);
        eprintln!("{mode:?}: agreement@10 with exact {a:.3}");
        assert!(a >= min, "{mode:?}: agreement@10 with exact {a:.3} < {min}");
        by_mode.insert(mode.name(), got);
    }
    // Without re-rank the index's own order: looser, but far better than chance.
    for mode in [SearchMode::IvfPq, SearchMode::Hamming] {
        let got = run(
            &db,
            &SearchOptions {
                rerank: false,
                ..opts(mode)
            },
        );
        let a = agreement(&got, &exact);
        assert!(a >= 0.3, "{mode:?} without re-rank: agreement {a:.3}");
    }

    // Filters: every hit passes, and the filtered top 10 matches exact's filtered top 10.
    let filtered = |mode| SearchOptions {
        filter: Filter {
            attributes: BTreeMap::from([("half".to_string(), "b".to_string())]),
            path_prefix: None,
        },
        ..opts(mode)
    };
    let exact_b = run(&db, &filtered(SearchMode::Exact));
    let b_ids: HashSet<u64> = exact_b.iter().flatten().copied().collect();
    for mode in [
        SearchMode::IvfPq,
        SearchMode::Hamming,
        SearchMode::HammingIvf,
    ] {
        let got = run(&db, &filtered(mode));
        for hits in &got {
            assert_eq!(hits.len(), 10);
            for id in hits {
                let rec = db.get(*id).unwrap().unwrap();
                assert_eq!(
                    rec.attributes["half"], "b",
                    "{mode:?} returned a row outside the filter"
                );
            }
        }
        let a = agreement(&got, &exact_b);
        assert!(a >= 0.85, "{mode:?} filtered agreement {a:.3}");
    }
    assert!(!b_ids.is_empty());

    // Deleted rows never come back; a new row is found at once in every mode.
    let deleted: Vec<u64> = exact.iter().take(10).map(|h| h[0]).collect();
    db.delete(&deleted).unwrap();
    let probe = std::fs::read(&query_files[7]).unwrap();
    let new = db
        .insert_bytes("new-row", &probe, BTreeMap::new())
        .unwrap()
        .id
        .unwrap();
    for &mode in SearchMode::ALL {
        for hits in run(&db, &opts(mode)) {
            assert!(
                hits.iter().all(|id| !deleted.contains(id)),
                "{mode:?} returned a deleted row"
            );
        }
        let hits = db.search(Query::Bytes(probe.clone()), &opts(mode)).unwrap();
        assert_eq!(
            hits[0].id, new,
            "{mode:?} missed the row inserted just before"
        );
    }

    // Many threads search every mode while a writer inserts.
    let db = Arc::new(db);
    std::thread::scope(|s| {
        let writer = db.clone();
        let extra = db_files[ROWS..ROWS + 12].to_vec();
        s.spawn(move || {
            for f in extra {
                writer.insert_path(&f).unwrap();
            }
        });
        for t in 0..4 {
            let reader = db.clone();
            let queries = &queries;
            s.spawn(move || {
                let mode = [
                    SearchMode::IvfPq,
                    SearchMode::Hamming,
                    SearchMode::HammingIvf,
                    SearchMode::IvfPq,
                ][t];
                for q in queries.iter().skip(t).step_by(4) {
                    let hits = reader.search(q.clone(), &opts(mode)).unwrap();
                    assert_eq!(hits.len(), 10);
                }
            });
        }
    });
    let db = Arc::into_inner(db).unwrap();
    db.compact().unwrap();
    assert_eq!(db.info().unwrap().stats.deleted_rows, 0);
    let after_compact = run(&db, &opts(SearchMode::IvfPq));
    drop(db);

    // A read-only handle loads the saved indexes and answers the same.
    let read_only = OpenOptions {
        read_only: true,
        ..open.clone()
    };
    let ro = Database::open(&path, read_only.clone()).unwrap();
    let info = ro.info().unwrap().indexes;
    assert!(info.bytes_on_disk > 0);
    assert_eq!(info.ivfpq.unwrap().rows, ROWS - 10 + 1 + 12);
    assert_eq!(run(&ro, &opts(SearchMode::IvfPq)), after_compact);
    let exact_now = run(&ro, &opts(SearchMode::Exact));
    drop(ro);

    // Damaged or missing index files are derived data: logged, rebuilt, never trusted.
    let index_dir = path.join("indexes");
    for entry in std::fs::read_dir(&index_dir).unwrap() {
        let file = entry.unwrap().path();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ivfpq-") {
            std::fs::remove_file(&file).unwrap();
        } else {
            let mut bytes = std::fs::read(&file).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x10;
            std::fs::write(&file, &bytes).unwrap();
        }
    }
    let ro = Database::open(&path, read_only).unwrap();
    for mode in [
        SearchMode::IvfPq,
        SearchMode::Hamming,
        SearchMode::HammingIvf,
    ] {
        let got = run(&ro, &opts(mode));
        let a = agreement(&got, &exact_now);
        assert!(a >= 0.85, "{mode:?} after damage: agreement {a:.3}");
    }
    drop(ro);
    // The writer replaces them on open and saves fresh ones when it closes.
    drop(Database::open(&path, open).unwrap());
    let names: Vec<String> = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}
