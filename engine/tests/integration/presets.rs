//! The named pipelines on real photos (instances-dev): `balanced` fuses CNN and handcrafted
//! blocks, learns its PCA-whitening on the collection once it is large enough (raw fused vectors
//! before that), persists it, searches every mode in the whitened space; `reindex` switches a
//! database's pipeline and reports files that have gone.

use imgvec_testkit::*;

use std::collections::HashMap;
use std::path::PathBuf;

use imgvec::{
    Augment, Database, IndexOptions, IngestOptions, OpenOptions, PipelineChoice, Preset, Query,
    ReindexOptions, SearchMode, SearchOptions, Source, VerifyOverrides,
};

fn balanced(min_train_rows: usize) -> OpenOptions {
    OpenOptions {
        pipeline: PipelineChoice::Preset(Preset::Balanced),
        background_compaction: false,
        index: IndexOptions {
            min_train_rows,
            ..IndexOptions::default()
        },
        ..OpenOptions::default()
    }
}

/// A read-only handle on an existing database (its pipeline as stored).
fn read_only(path: &std::path::Path) -> Database {
    let opts = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    Database::open(path, opts).unwrap()
}

#[test]
fn balanced_learns_its_whitening_and_finds_the_hard_cases() {
    let data = datasets().join("instances-dev");
    let db_list = jsonl(&data.join("db.jsonl"));
    let queries = jsonl(&data.join("queries.jsonl"));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let db = Database::open(&path, balanced(300)).unwrap();
    let files: Vec<PathBuf> = db_list
        .iter()
        .map(|e| data.join(e["path"].as_str().unwrap()))
        .collect();
    let ingest = |db: &Database, files: &[PathBuf]| {
        let sources = files.iter().cloned().map(Source::File).collect();
        let s = db
            .ingest(sources, &IngestOptions::default(), &|_| {})
            .unwrap();
        assert_eq!(s.errors, 0);
    };

    // Too few rows to learn a 256-d whitening: the raw fused vectors answer.
    ingest(&db, &files[..200]);
    db.refresh_indexes().unwrap();
    let info = db.info().unwrap();
    let pipeline = info.pipeline.clone().unwrap();
    assert_eq!(pipeline.name, "balanced");
    assert_eq!(pipeline.dims, 1440 + 81 + 1764);
    assert!(info.whitening.is_none(), "{:?}", info.whitening);
    let hits = db
        .search(Query::Path(files[7].clone()), &SearchOptions::default())
        .unwrap();
    assert_eq!(stem(&hits[0].path), stem(files[7].to_str().unwrap()));
    assert!(hits[0].score > 0.99);

    // The whole collection: the whitening is learned on it.
    ingest(&db, &files[200..]);
    db.refresh_indexes().unwrap();
    let w = db.info().unwrap().whitening.expect("whitening learned");
    assert_eq!((w.dims_in, w.dims_out, w.learned_on), (3285, 256, 684));

    // Every 4th query (all cases): the right image first in most of them, in every mode.
    let sample: Vec<&serde_json::Value> = queries.iter().step_by(4).collect();
    let mut firsts: HashMap<SearchMode, Vec<u64>> = HashMap::new();
    for &mode in SearchMode::ALL {
        let mut right = 0;
        for q in &sample {
            let opts = SearchOptions {
                mode,
                ..SearchOptions::default()
            };
            let hits = db
                .search(Query::Path(data.join(q["path"].as_str().unwrap())), &opts)
                .unwrap();
            right += (stem(&hits[0].path) == q["label"].as_str().unwrap()) as usize;
            firsts.entry(mode).or_default().push(hits[0].id);
        }
        let recall = right as f64 / sample.len() as f64;
        // Measured 0.90–0.93 on this sample; the plain MobileNetV2 pipeline gets ~0.79.
        assert!(recall >= 0.85, "{}: recall@1 {recall}", mode.name());
    }
    for &mode in SearchMode::ALL {
        let same = firsts[&mode]
            .iter()
            .zip(&firsts[&SearchMode::Exact])
            .filter(|(a, b)| a == b)
            .count();
        assert!(same as f64 >= 0.95 * sample.len() as f64, "{}", mode.name());
    }

    // Augmented and expanded queries, and a query by id, run in the same space.
    let q = data.join(sample[3]["path"].as_str().unwrap());
    let plain = db
        .search(Query::Path(q.clone()), &SearchOptions::default())
        .unwrap();
    let aug = db
        .search(
            Query::Path(q),
            &SearchOptions {
                augment: Some(Augment::Rot4),
                qe: Some(2),
                ..SearchOptions::default()
            },
        )
        .unwrap();
    assert_eq!(aug.len(), 10);
    assert!(aug[0].score >= plain[0].score - 1e-4 || aug[0].id == plain[0].id);
    let by_id = db
        .search(Query::Id(plain[0].id), &SearchOptions::default())
        .unwrap();
    assert!(by_id.iter().all(|h| h.id != plain[0].id));

    // A deleted row leaves every mode.
    let gone = firsts[&SearchMode::Exact][0];
    db.delete(&[gone]).unwrap();
    let q0 = data.join(sample[0]["path"].as_str().unwrap());
    for &mode in SearchMode::ALL {
        let opts = SearchOptions {
            mode,
            ..SearchOptions::default()
        };
        let hits = db.search(Query::Path(q0.clone()), &opts).unwrap();
        assert!(hits.iter().all(|h| h.id != gone), "{}", mode.name());
    }
    let before = db
        .search(Query::Path(files[3].clone()), &SearchOptions::default())
        .unwrap();
    drop(db);

    // A read-only handle loads the saved whitening and answers the same.
    let ro = read_only(&path);
    let after = ro
        .search(Query::Path(files[3].clone()), &SearchOptions::default())
        .unwrap();
    assert_eq!(
        before.iter().map(|h| h.id).collect::<Vec<_>>(),
        after.iter().map(|h| h.id).collect::<Vec<_>>()
    );
    let w2 = ro.info().unwrap().whitening.unwrap();
    assert_eq!(w2.generation, w.generation);
    // It loaded the whitened rows the writer saved: it projected none itself.
    assert_eq!(w2.rows_projected_here, 0, "{w2:?}");
    assert!(path.join("indexes/view").read_dir().unwrap().count() == 1);
}

#[test]
fn reindex_switches_the_pipeline_and_reports_gone_files() {
    let data = datasets().join("instances-dev/db");
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names.iter().take(12) {
        std::fs::copy(data.join(n), imgs.join(n)).unwrap();
    }
    let path = tmp.path().join("db");
    let open = OpenOptions {
        background_compaction: false,
        ..OpenOptions::default()
    };
    {
        let db = Database::open(&path, open.clone()).unwrap();
        let mut opts = IngestOptions::default();
        opts.attributes.insert("album".into(), "a".into());
        let sources = names.iter().take(12).map(|n| Source::File(imgs.join(n)));
        let s = db.ingest(sources.collect(), &opts, &|_| {}).unwrap();
        assert_eq!(s.stored, 12);
        assert_eq!(db.pipeline().unwrap().name, "fast");
    }
    // Ingest cannot change the pipeline, not even when every file is unchanged; reindex can.
    let err = Database::open(&path, balanced(10_000))
        .unwrap()
        .ingest(
            vec![Source::File(imgs.join(&names[0]))],
            &IngestOptions::default(),
            &|_| {},
        )
        .unwrap_err();
    assert!(err.to_string().contains("imgvec reindex"), "{err}");
    // A row inserted from bytes travels through its thumbnail.
    {
        let db = Database::open(&path, open.clone()).unwrap();
        let bytes = std::fs::read(imgs.join(&names[11])).unwrap();
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("album".to_string(), "a".to_string());
        db.insert_bytes("from-bytes", &bytes, attrs).unwrap();
    }
    let removed = imgs.join(&names[4]);
    std::fs::remove_file(&removed).unwrap();
    let balanced_choice = PipelineChoice::Preset(Preset::Balanced);
    let run = |options: ReindexOptions| {
        imgvec::reindex(
            &path,
            balanced_choice.clone(),
            options,
            open.clone(),
            &|_| {},
        )
        .unwrap()
    };
    // A row whose file has gone stops the reindex before anything changes; a dry run reports
    // the same; --drop-missing leaves the row out.
    for options in [
        ReindexOptions::default(),
        ReindexOptions {
            dry_run: true,
            drop_missing: true,
        },
    ] {
        let report = run(options);
        assert!(!report.swapped, "{options:?}");
        assert_eq!((report.rows_before, report.stored), (13, 0));
        assert_eq!(report.gone.len(), 1);
        let db = Database::open(&path, open.clone()).unwrap();
        assert_eq!(db.pipeline().unwrap().name, "fast");
        assert_eq!(db.records().unwrap().len(), 13);
    }
    // While the rebuild runs, no other writer gets in (its rows would be lost in the swap).
    let writer_seen = std::sync::Mutex::new(None);
    let report = imgvec::reindex(
        &path,
        balanced_choice.clone(),
        ReindexOptions {
            drop_missing: true,
            ..Default::default()
        },
        open.clone(),
        &|_| {
            let mut seen = writer_seen.lock().unwrap();
            if seen.is_none() {
                *seen = Some(Database::open(&path, open.clone()).map(|_| ()));
            }
        },
    )
    .unwrap();
    match writer_seen.into_inner().unwrap() {
        Some(Err(imgvec::Error::Storage(imgvec::StorageError::Locked { .. }))) => {}
        other => panic!("a writer opened during the reindex: {other:?}"),
    }
    assert!(report.swapped);
    assert_eq!(report.rows_before, 13);
    assert_eq!((report.stored, report.from_thumbnails), (12, 1));
    assert_eq!(report.gone.len(), 1);
    assert!(report.gone[0].ends_with(names[4].to_str().unwrap()));
    assert!(!tmp.path().join("db.reindex-old").exists());
    assert!(!tmp.path().join("db.reindex-new").exists());
    assert!(Database::open(&path, open.clone())
        .unwrap()
        .get_by_path("from-bytes")
        .unwrap()
        .is_some());
    // A crash between the two renames of a swap (on a file system that cannot exchange
    // folders) leaves only `db.reindex-old`: any open moves it back.
    std::fs::rename(&path, tmp.path().join("db.reindex-old")).unwrap();
    let reader = Database::open(
        &path,
        OpenOptions {
            read_only: true,
            ..open.clone()
        },
    )
    .unwrap();
    assert_eq!(reader.records().unwrap().len(), 12);
    drop(reader);
    assert!(!tmp.path().join("db.reindex-old").exists());
    let db = Database::open(&path, open).unwrap();
    let p = db.pipeline().unwrap();
    assert_eq!((p.name.as_str(), p.dims), ("balanced", 3285));
    let records = db.records().unwrap();
    assert_eq!(records.len(), 12);
    assert!(records.iter().all(|r| r.attributes["album"] == "a"));
    let q = imgs.join(&names[0]);
    let hits = db
        .search(Query::Path(q), &SearchOptions::default())
        .unwrap();
    assert_eq!(stem(&hits[0].path), stem(names[0].to_str().unwrap()));
}

/// The writer's background worker keeps the searched space current: once a whitening exists,
/// rows ingested later reach the whitened view's indexes without a search or a refresh.
#[test]
fn background_worker_keeps_the_whitened_indexes_current() {
    let data = datasets().join("instances-dev");
    let files: Vec<PathBuf> = jsonl(&data.join("db.jsonl"))
        .iter()
        .map(|e| data.join(e["path"].as_str().unwrap()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let open = OpenOptions {
        background_compaction: true,
        ..balanced(300)
    };
    let db = Database::open(tmp.path().join("db"), open).unwrap();
    let ingest = |files: &[PathBuf]| {
        let sources = files.iter().cloned().map(Source::File).collect();
        let s = db
            .ingest(sources, &IngestOptions::default(), &|_| {})
            .unwrap();
        assert_eq!(s.errors, 0);
    };
    ingest(&files[..520]);
    db.refresh_indexes().unwrap();
    let info = db.info().unwrap();
    assert_eq!(info.whitening.as_ref().unwrap().learned_on, 520);
    let watermark = |info: &imgvec::DatabaseInfo| {
        let h = info.indexes.hamming.as_ref().expect("whitened codes");
        (
            h.watermark,
            h.rows,
            info.indexes.ivfpq.as_ref().map(|i| i.watermark),
        )
    };
    assert_eq!(watermark(&info), (520, 520, Some(520)));

    ingest(&files[520..560]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = watermark(&db.info().unwrap());
    while seen != (560, 560, Some(560)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        seen = watermark(&db.info().unwrap());
    }
    assert_eq!(
        seen,
        (560, 560, Some(560)),
        "whitened indexes not maintained"
    );
    // The worker extends the view; learning a new whitening is left to the foreground.
    let w = db.info().unwrap().whitening.unwrap();
    assert_eq!((w.generation, w.learned_on), (1, 520));
    drop(db);

    // A damaged whitening is never trusted: it is relearned under a new generation, and the
    // index set built in the old space is not reused for the new one.
    let reduction = tmp.path().join("db/reduction");
    let file = std::fs::read_dir(&reduction)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("whitening-")
        })
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let db = Database::open(tmp.path().join("db"), balanced(300)).unwrap();
    db.refresh_indexes().unwrap();
    let info = db.info().unwrap();
    let w = info.whitening.as_ref().unwrap();
    assert_eq!((w.generation, w.learned_on), (2, 560));
    assert_eq!(watermark(&info), (560, 560, Some(560)));
    let hits = db
        .search(Query::Path(files[530].clone()), &SearchOptions::default())
        .unwrap();
    assert_eq!(stem(&hits[0].path), stem(files[530].to_str().unwrap()));
}

#[test]
fn robust_vlad_fuses_a_vlad_of_the_local_features_into_the_view() {
    let data = datasets().join("instances-dev");
    let db_list = jsonl(&data.join("db.jsonl"));
    let queries = jsonl(&data.join("queries.jsonl"));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let open = OpenOptions {
        pipeline: PipelineChoice::Preset(Preset::RobustVlad),
        background_compaction: false,
        ..OpenOptions::default()
    };
    let db = Database::open(&path, open).unwrap();
    let files: Vec<PathBuf> = db_list
        .iter()
        .map(|e| data.join(e["path"].as_str().unwrap()))
        .collect();
    let sources = files.iter().cloned().map(Source::File).collect();
    let s = db
        .ingest(sources, &IngestOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(s.errors, 0);
    db.refresh_indexes().unwrap();
    let w = db.info().unwrap().whitening.expect("whitening learned");
    let vlad = w.vlad.clone().expect("VLAD learned with the whitening");
    assert_eq!((vlad.words, vlad.dims), (64, 128));
    assert_eq!((w.dims_in, w.dims_out), (3285, 256 + 128));
    let saved: Vec<String> = std::fs::read_dir(path.join("reduction"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(saved.iter().any(|f| f.starts_with("vlad-")), "{saved:?}");

    // The fused view alone (no verification) ranks the right image first for most queries.
    let plain = SearchOptions {
        verify: VerifyOverrides {
            shortlist: Some(0),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    let sample: Vec<&serde_json::Value> = queries.iter().step_by(4).collect();
    let batch: Vec<Query> = sample
        .iter()
        .map(|q| Query::Path(data.join(q["path"].as_str().unwrap())))
        .collect();
    let hits: Vec<Vec<imgvec::Hit>> = db
        .search_batch(batch.clone(), &plain)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let right = sample
        .iter()
        .zip(&hits)
        .filter(|(q, h)| stem(&h[0].path) == q["label"].as_str().unwrap())
        .count();
    let results: Vec<Vec<u64>> = hits
        .iter()
        .map(|h| h.iter().map(|h| h.id).collect())
        .collect();
    eprintln!(
        "robust-vlad without verification: {right}/{} right",
        sample.len()
    );
    // Measured 64 of 70 (0.91) on this sample (balanced alone: 0.90–0.93).
    assert!(
        right as f64 >= 0.85 * sample.len() as f64,
        "{right}/{}",
        sample.len()
    );
    drop(db);

    // A read-only handle loads the saved codebook and whitening and answers the same.
    let ro = read_only(&path);
    let again: Vec<Vec<u64>> = ro
        .search_batch(batch, &plain)
        .into_iter()
        .map(|r| r.unwrap().iter().map(|h| h.id).collect())
        .collect();
    assert_eq!(results, again);
    let w2 = ro.info().unwrap().whitening.unwrap();
    assert_eq!((w2.generation, w2.dims_out), (w.generation, w.dims_out));
}
