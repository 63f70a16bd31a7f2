//! The `imgvec` API on the real stack: RocksDB, libtorch with the default MobileNetV2 (built by
//! scripts/setup.sh), and FAISS as the oracle for exact search.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use faiss::{Index, MetricType};
use imgvec::image::{ImageFormat, Rgb, RgbImage};
use imgvec::{Database, IngestStatus, OpenOptions, Query, SearchOptions};

fn sample_photos() -> Vec<PathBuf> {
    let dir = imgvec_testkit::repo_root().join("sample/photos");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run ./scripts/setup.sh", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "sample photos missing in {}",
        dir.display()
    );
    files
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn stripes(period: u32, colour: [u8; 3]) -> Vec<u8> {
    png(&RgbImage::from_fn(200, 150, |x, _| {
        if (x / period).is_multiple_of(2) {
            Rgb(colour)
        } else {
            Rgb([255, 255, 255])
        }
    }))
}

#[test]
fn insert_search_get_replace_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db"), OpenOptions::default()).unwrap();
    let mut attrs = BTreeMap::new();
    attrs.insert("kind".to_string(), "stripes".to_string());
    let a = db
        .insert_bytes("a", &stripes(10, [200, 0, 0]), attrs)
        .unwrap();
    let b = db
        .insert_bytes("b", &stripes(37, [0, 0, 200]), BTreeMap::new())
        .unwrap();
    assert_eq!(
        (a.status, b.status),
        (IngestStatus::Stored, IngestStatus::Stored)
    );
    let (a_id, b_id) = (a.id.unwrap(), b.id.unwrap());

    // Same key, same bytes: unchanged. Same bytes, other key: a duplicate.
    let again = db
        .insert_bytes("a", &stripes(10, [200, 0, 0]), BTreeMap::new())
        .unwrap();
    assert_eq!(
        (again.status, again.id),
        (IngestStatus::Unchanged, Some(a_id))
    );
    let dup = db
        .insert_bytes("a-copy", &stripes(10, [200, 0, 0]), BTreeMap::new())
        .unwrap();
    assert_eq!(dup.duplicate_of, Some(a_id));

    let rec = db.get(a_id).unwrap().unwrap();
    assert_eq!(
        (rec.width, rec.height, rec.format.as_str()),
        (200, 150, "png")
    );
    assert_eq!(
        rec.attributes.get("kind").map(String::as_str),
        Some("stripes")
    );
    assert_eq!(db.get_by_path("b").unwrap().unwrap().id, b_id);
    let thumb = db.thumbnail(a_id).unwrap().unwrap();
    assert!(imgvec::image::load_from_memory(&thumb).unwrap().width() <= 256);

    let hits = db
        .search(
            Query::Bytes(stripes(37, [0, 0, 200])),
            &SearchOptions::default(),
        )
        .unwrap();
    assert_eq!(hits[0].id, b_id);
    assert!(hits[0].score > 0.999, "{hits:?}");
    // More like this: the query row itself is left out.
    let hits = db
        .search(Query::Id(a_id), &SearchOptions::default())
        .unwrap();
    assert!(hits.iter().all(|h| h.id != a_id));
    assert_eq!(hits[0].id, dup.id.unwrap());
    // Filters.
    let mut only = SearchOptions::default();
    only.filter
        .attributes
        .insert("kind".into(), "stripes".into());
    let hits = db.search(Query::Id(b_id), &only).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![a_id]);
    let mut prefix = SearchOptions::default();
    prefix.filter.path_prefix = Some("a-".into());
    let hits = db.search(Query::Id(b_id), &prefix).unwrap();
    assert_eq!(
        hits.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        vec!["a-copy"]
    );
    let strict = SearchOptions {
        threshold: Some(0.9999),
        ..SearchOptions::default()
    };
    assert!(db.search(Query::Id(b_id), &strict).unwrap().is_empty());

    // New content under an existing key replaces the row; the old id never comes back.
    let replaced = db
        .insert_bytes("b", &stripes(5, [0, 150, 0]), BTreeMap::new())
        .unwrap();
    assert_eq!(replaced.status, IngestStatus::Replaced);
    assert_eq!(replaced.replaced_id, Some(b_id));
    assert!(db.get(b_id).unwrap().is_none());
    let hits = db
        .search(
            Query::Bytes(stripes(37, [0, 0, 200])),
            &SearchOptions::default(),
        )
        .unwrap();
    assert!(hits.iter().all(|h| h.id != b_id));

    assert_eq!(db.delete(&[a_id]).unwrap(), vec![a_id]);
    let all = SearchOptions {
        k: 100,
        ..SearchOptions::default()
    };
    let hits = db.search(Query::Id(replaced.id.unwrap()), &all).unwrap();
    assert!(hits.iter().all(|h| h.id != a_id));
    assert!(matches!(
        db.search(Query::Id(a_id), &all),
        Err(imgvec::Error::NoSuchId(_))
    ));
    assert!(matches!(
        db.insert_bytes("bad", b"not an image", BTreeMap::new()),
        Err(imgvec::Error::Image { .. })
    ));
    let info = db.info().unwrap();
    assert_eq!((info.stats.live_rows, info.stats.deleted_rows), (2, 2));
    assert_eq!(info.pipeline.unwrap().dims, 1280);
}

/// Exact search must return what FAISS's exact inner-product index returns on the same vectors.
#[test]
fn exact_search_agrees_with_faiss_flat_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db"), OpenOptions::default()).unwrap();
    let photos = sample_photos();
    let mut ids = Vec::new();
    for p in &photos {
        let ev = db.insert_path(p).unwrap();
        assert_eq!(ev.status, IngestStatus::Stored, "{}", p.display());
        ids.push(ev.id.unwrap());
    }
    let vectors: Vec<Vec<f32>> = ids
        .iter()
        .map(|&id| db.vector(id).unwrap().unwrap())
        .collect();
    for v in &vectors {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    let mut index = faiss::index_factory(1280, "Flat", MetricType::InnerProduct).unwrap();
    index.add(&vectors.concat()).unwrap();
    let k = 6;
    let oracle = index.search(&vectors.concat(), k).unwrap();
    let opts = SearchOptions {
        k: k - 1,
        ..SearchOptions::default()
    };
    let queries = ids.iter().map(|&id| Query::Id(id)).collect();
    for (qi, result) in db.search_batch(queries, &opts).into_iter().enumerate() {
        let hits = result.unwrap();
        let expected: Vec<u64> = oracle.labels[qi * k..(qi + 1) * k]
            .iter()
            .map(|l| ids[l.get().unwrap() as usize])
            .filter(|&id| id != ids[qi])
            .take(k - 1)
            .collect();
        let got: Vec<u64> = hits.iter().map(|h| h.id).collect();
        assert_eq!(got, expected, "query {}", photos[qi].display());
        for (h, d) in hits.iter().zip(&oracle.distances[qi * k + 1..]) {
            assert!((h.score - d).abs() < 1e-4);
        }
    }
    // Reopened read-only in the same process state: identical answers.
    drop(db);
    let ro = Database::open(
        dir.path().join("db"),
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let hits = ro
        .search(Query::Path(photos[3].clone()), &SearchOptions::default())
        .unwrap();
    assert_eq!(hits[0].id, ids[3]);
    assert!(hits[0].score > 0.999);
}

/// One handle shared by threads: searches run while another thread inserts.
#[test]
fn database_handle_is_shared_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path().join("db"), OpenOptions::default()).unwrap());
    let first = db
        .insert_bytes("seed", &stripes(8, [10, 10, 10]), BTreeMap::new())
        .unwrap();
    let seed = first.id.unwrap();
    std::thread::scope(|s| {
        let writer = db.clone();
        s.spawn(move || {
            for i in 0..6u32 {
                let bytes = stripes(12 + i * 7, [i as u8 * 40, 90, 200]);
                writer
                    .insert_bytes(&format!("w{i}"), &bytes, BTreeMap::new())
                    .unwrap();
            }
        });
        for _ in 0..3 {
            let reader = db.clone();
            s.spawn(move || {
                for _ in 0..5 {
                    let hits = reader
                        .search(
                            Query::Bytes(stripes(8, [10, 10, 10])),
                            &SearchOptions::default(),
                        )
                        .unwrap();
                    assert_eq!(hits[0].id, seed);
                    let mut ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
                    ids.dedup();
                    assert_eq!(ids.len(), hits.len(), "duplicate ids in {hits:?}");
                }
            });
        }
    });
    assert_eq!(db.info().unwrap().stats.live_rows, 7);
}
