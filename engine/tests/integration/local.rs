//! The `robust` preset's local features on real photos (instances-dev): SIFT stored per image
//! in the segments, descriptor voting and spatial verification at search time; deletes, rows
//! added after the voting index was built, compaction, and read-only reopens that load the
//! persisted voting and dense-window indexes (and rebuild a damaged or missing one).

use imgvec_testkit::*;

use std::path::PathBuf;

use imgvec::{
    Database, Hit, IngestOptions, OpenOptions, PipelineChoice, Preset, Query, SearchMode,
    SearchOptions, Source, VerifyOverrides,
};

fn robust() -> OpenOptions {
    OpenOptions {
        pipeline: PipelineChoice::Preset(Preset::Robust),
        background_compaction: false,
        ..OpenOptions::default()
    }
}

fn ingest(db: &Database, files: &[PathBuf]) {
    let sources = files.iter().cloned().map(Source::File).collect();
    let s = db
        .ingest(sources, &IngestOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(s.errors, 0);
}

fn summary(hits: &[Hit]) -> Vec<(u64, Option<usize>)> {
    hits.iter().map(|h| (h.id, h.inliers)).collect()
}

/// Each query's [`summary`] from one batch search of `db`.
fn summaries(
    db: &Database,
    queries: &[Query],
    opts: &SearchOptions,
) -> Vec<Vec<(u64, Option<usize>)>> {
    db.search_batch(queries.to_vec(), opts)
        .into_iter()
        .map(|r| summary(&r.unwrap()))
        .collect()
}

#[test]
fn robust_verifies_and_finds_crops_occlusions_and_turns() {
    let data = datasets().join("instances-dev");
    let queries = jsonl(&data.join("queries.jsonl"));
    // 36 source photos (their crop, occlusion, rotate90 and viewpoint queries) and 24
    // distractors; one more source photo is added after the first searches.
    let mut labels: Vec<String> = (0..37).map(|i| format!("g{:04}", 9 + i)).collect();
    // The late one is a textured photo (g0042), so that its crop verifies.
    labels.swap(33, 36);
    let mut files: Vec<PathBuf> = labels[..36]
        .iter()
        .map(|l| data.join(format!("db/{l}.jpg")))
        .collect();
    files.extend((0..24).map(|i| data.join(format!("db/d{:05}.jpg", i * 7))));
    let late = data.join(format!("db/{}.jpg", labels[36]));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = Database::open(&dir, robust()).unwrap();
    ingest(&db, &files);
    let info = db.info().unwrap();
    let local = info.local.expect("robust stores local features");
    assert_eq!(local.images, 60);
    assert!(local.keypoints > 60 * 100, "{local:?}");
    assert_eq!(local.bytes, 16 * 60 + 72 * local.keypoints);

    let cases = ["crop", "occlusion", "rotate90", "viewpoint"];
    let sample: Vec<(PathBuf, String)> = queries
        .iter()
        .filter(|q| {
            labels[..36]
                .iter()
                .any(|l| l == q["label"].as_str().unwrap())
                && cases.contains(&q["case"].as_str().unwrap())
        })
        .map(|q| {
            (
                data.join(q["path"].as_str().unwrap()),
                q["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(sample.len() >= 20, "{} queries", sample.len());
    let queries: Vec<Query> = sample.iter().map(|(p, _)| Query::Path(p.clone())).collect();
    let opts = SearchOptions::default();
    let results: Vec<Vec<Hit>> = db
        .search_batch(queries.clone(), &opts)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let mut right = 0;
    let mut verified = 0;
    for ((_, label), hits) in sample.iter().zip(&results) {
        if stem(&hits[0].path) == *label {
            right += 1;
            verified += hits[0].inliers.is_some_and(|n| n >= 8) as usize;
        }
        // Every result of a verified search says what verification found for it (inliers, or
        // for images only dense-window search found, their alignment), and the ranking keeps
        // cosine scores.
        assert!(
            hits.iter()
                .take(5)
                .all(|h| h.inliers.is_some() || h.alignment.is_some()),
            "{hits:?}"
        );
        assert!(hits.iter().all(|h| h.score <= 1.0 + 1e-4));
    }
    // Measured: every one right, almost all of them verified.
    assert!(
        right as f64 >= 0.95 * sample.len() as f64,
        "{right}/{}",
        sample.len()
    );
    assert!(
        verified as f64 >= 0.8 * right as f64,
        "{verified}/{right} verified"
    );

    // `combined` copies (cropped, turned, re-exposed, halved, JPEG q 8–20) of smooth photos
    // defeat SIFT; dense alignment finds and ranks most of them.
    let combined: Vec<(Query, String)> = labels[..36]
        .iter()
        .map(|l| (data.join(format!("queries/{l}_combined.jpg")), l.clone()))
        .filter(|(p, _)| p.is_file())
        .map(|(p, l)| (Query::Path(p), l))
        .collect();
    assert!(combined.len() >= 20, "{} combined queries", combined.len());
    let right_with = |o: &SearchOptions| -> (usize, usize) {
        let batch = combined.iter().map(|(q, _)| q.clone()).collect();
        let mut right = 0;
        let mut aligned = 0;
        for ((_, label), hits) in combined.iter().zip(db.search_batch(batch, o)) {
            let hits = hits.unwrap();
            if stem(&hits[0].path) == *label {
                right += 1;
                aligned += (hits[0].inliers.unwrap_or(0) < 8
                    && hits[0].alignment.is_some_and(|a| a >= 0.9))
                    as usize;
            }
        }
        (right, aligned)
    };
    let (dense_right, rescued) = right_with(&opts);
    let no_dense = SearchOptions {
        verify: VerifyOverrides {
            dense: Some(0),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    let (sift_right, none) = right_with(&no_dense);
    eprintln!(
        "combined: {dense_right}/{} right with dense alignment ({rescued} by alignment alone), \
         {sift_right} without",
        combined.len()
    );
    // Measured: 26 of 28 with dense alignment (10 of them by alignment alone), 19 without.
    assert!(
        dense_right as f64 >= 0.85 * combined.len() as f64 && dense_right > sift_right,
        "{dense_right} with dense alignment, {sift_right} without, of {}",
        combined.len()
    );
    assert!(
        rescued >= 3 && none == 0,
        "{rescued} rescued by alignment, {none}"
    );

    // Verification off: plain global ranking, no inlier counts.
    let off = SearchOptions {
        verify: VerifyOverrides {
            shortlist: Some(0),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    let plain = db.search(queries[0].clone(), &off).unwrap();
    assert!(plain
        .iter()
        .all(|h| h.inliers.is_none() && h.alignment.is_none()));

    // Every mode verifies its own shortlist.
    for mode in [SearchMode::IvfPq, SearchMode::Hamming] {
        let o = SearchOptions {
            mode,
            ..SearchOptions::default()
        };
        let hits = db.search(queries[0].clone(), &o).unwrap();
        assert_eq!(stem(&hits[0].path), sample[0].1, "{}", mode.name());
    }

    // A deleted image is neither voted for nor verified.
    let gone = results[0][0].id;
    db.delete(&[gone]).unwrap();
    let hits = db.search(queries[0].clone(), &opts).unwrap();
    assert!(hits.iter().all(|h| h.id != gone));

    // A row stored after the voting index was built is found by its crop.
    ingest(&db, std::slice::from_ref(&late));
    let late_query = data.join(format!("queries/{}_crop.jpg", labels[36]));
    let hits = db.search(Query::Path(late_query), &opts).unwrap();
    assert_eq!(stem(&hits[0].path), labels[36]);
    assert!(hits[0].inliers.unwrap() >= 8, "{:?}", hits[0]);
    let hits = db.search(Query::Path(late.clone()), &opts).unwrap();
    assert_eq!(stem(&hits[0].path), labels[36]);

    // Query by id uses the stored local features.
    let by_id = db.search(Query::Id(hits[0].id), &opts).unwrap();
    assert!(by_id.iter().all(|h| h.id != hits[0].id));

    // Compaction moves the local features into the merged segment; results stay the same.
    let probe: Vec<Query> = queries.iter().take(8).cloned().collect();
    let before = summaries(&db, &probe, &opts);
    db.compact().unwrap();
    let after = summaries(&db, &probe, &opts);
    assert_eq!(before, after);
    drop(db);

    // A read-only handle loads the voting and dense-window indexes the writer left current
    // (after the late row, the delete and the compaction): it builds nothing.
    let read_only = || {
        let opts = OpenOptions {
            read_only: true,
            ..robust()
        };
        Database::open(&dir, opts).unwrap()
    };
    let ro = read_only();
    let again = summaries(&ro, &probe, &opts);
    assert_eq!(before, again);
    let status = ro.rerank_status();
    let live = ro.info().unwrap().stats.live_rows as usize;
    let max_id = ro.records().unwrap().iter().map(|r| r.id).max();
    for s in [&status.voting, &status.dense] {
        assert_eq!((s.builds, s.watermark), (0, max_id), "{status:?}");
        assert!(s.bytes_on_disk > 0, "{status:?}");
    }
    // The dense windows (exact at this size) were purged of the deleted row by the compaction;
    // the voting index (fast-scan IVF-PQ, which cannot remove in place) keeps it, filtered at
    // search, until deleted rows pass a quarter of it.
    assert_eq!(status.dense.rows, Some(live), "{status:?}");
    assert_eq!(status.voting.rows, Some(live + 1), "{status:?}");
    // The voting lists are searched where they lie in the mapped file, not copied; the exact
    // dense windows are read into memory.
    assert!(
        status.voting.in_place && !status.dense.in_place,
        "{status:?}"
    );
    drop(ro);

    // Preloading loads the same files before any search (in the background), builds nothing
    // and changes no result.
    let ro = read_only();
    ro.preload();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while ro.rerank_status().dense.rows.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the preload never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = ro.rerank_status();
    assert_eq!(
        (status.voting.builds, status.dense.builds),
        (0, 0),
        "{status:?}"
    );
    assert_eq!(status.voting.rows, Some(live + 1), "{status:?}");
    assert_eq!(status.dense.rows, Some(live), "{status:?}");
    let preloaded = summaries(&ro, &probe, &opts);
    assert_eq!(before, preloaded);
    drop(ro);

    // A damaged voting file and a missing dense file are rebuilt, not trusted. The voting
    // lists are checked as searches first probe them: the damage (every 32nd byte of the last
    // third, the lists' row ids) is found by the first search, which rebuilds and answers.
    let published = |kind: &str| -> PathBuf {
        let folder = dir.join("indexes").join(kind);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.pop().unwrap()
    };
    let voting = published("voting");
    let mut bytes = std::fs::read(&voting).unwrap();
    let len = bytes.len();
    for at in (len * 2 / 3..len - 4).step_by(32) {
        bytes[at] ^= 0x10;
    }
    std::fs::write(&voting, bytes).unwrap();
    std::fs::remove_file(published("dense")).unwrap();
    let ro = read_only();
    let rebuilt = summaries(&ro, &probe, &opts);
    assert_eq!(before, rebuilt);
    let status = ro.rerank_status();
    assert_eq!(
        (status.voting.builds, status.dense.builds),
        (1, 1),
        "{status:?}"
    );
}

/// Verified query expansion on real photos of the same scenes (holidays-dev): it is on in
/// `robust`; it keeps every score the cosine with the query itself (the same id scores the same
/// with and without it), keeps verified results ahead of the rest, and finds at least as many
/// photos of the query's scene in the top 3 as the search without it.
#[test]
fn verified_expansion_keeps_scores_and_finds_the_scene() {
    let data = datasets().join("holidays-dev");
    let db_rows = jsonl(&data.join("db.jsonl"));
    let label_of = |path: &str| -> String {
        let name = std::path::Path::new(path).file_name().unwrap();
        let row = db_rows
            .iter()
            .find(|r| std::path::Path::new(r["path"].as_str().unwrap()).file_name() == Some(name));
        row.map_or(String::new(), |r| r["label"].as_str().unwrap().to_string())
    };
    // The first 40 db photos (scenes in name order, most with two or more photos).
    let files: Vec<PathBuf> = db_rows
        .iter()
        .take(40)
        .map(|r| data.join(r["path"].as_str().unwrap()))
        .collect();
    let labels: std::collections::HashSet<String> = db_rows
        .iter()
        .take(40)
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect();
    let queries: Vec<(PathBuf, String)> = jsonl(&data.join("queries.jsonl"))
        .iter()
        .filter(|q| labels.contains(q["label"].as_str().unwrap()))
        .map(|q| {
            let path = data.join(q["path"].as_str().unwrap());
            (path, q["label"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(queries.len() >= 15, "{}", queries.len());
    let tmp = tempfile::tempdir().unwrap();
    let db = Database::open(tmp.path().join("db"), robust()).unwrap();
    ingest(&db, &files);
    let with_expand = |n: usize| SearchOptions {
        verify: VerifyOverrides {
            expand: Some(n),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    let (mut found_plain, mut found_expanded) = (0, 0);
    for (query, label) in &queries {
        let plain = db
            .search(Query::Path(query.clone()), &with_expand(0))
            .unwrap();
        let expanded = db
            .search(Query::Path(query.clone()), &SearchOptions::default())
            .unwrap();
        let default = db.pipeline().unwrap().query.verify.unwrap().expand;
        assert_eq!(
            default, 3,
            "robust expands with its 3 best verified results"
        );
        for hit in &expanded {
            if let Some(same) = plain.iter().find(|h| h.id == hit.id) {
                assert!((same.score - hit.score).abs() < 1e-5, "{}", query.display());
            }
        }
        let verified = |hits: &[Hit]| -> Vec<bool> {
            hits.iter()
                .map(|h| h.verdict == Some(imgvec::Verdict::Verified))
                .collect()
        };
        let v = verified(&expanded);
        assert!(
            v.windows(2).all(|w| w[0] || !w[1]),
            "verified first: {}",
            query.display()
        );
        let in_top3 = |hits: &[Hit]| {
            hits.iter()
                .take(3)
                .filter(|h| label_of(&h.path) == *label)
                .count()
        };
        found_plain += in_top3(&plain);
        found_expanded += in_top3(&expanded);
    }
    assert!(
        found_expanded >= found_plain && found_plain > queries.len() / 2,
        "scene photos in the top 3: {found_expanded} expanded, {found_plain} plain"
    );
}
