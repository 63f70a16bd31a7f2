//! The parts a sharded collection is made of: databases made like another (its pipeline, model
//! and learned whitening, frozen), rows prepared by one database and committed to another, and
//! verified expansion with vectors from elsewhere.

use imgvec_testkit::*;

use imgvec::{
    Augment, Database, IngestOptions, IngestStatus, OpenOptions, PipelineChoice, PreparedRow,
    Preset, Query, SearchOptions, Source, VerifyOverrides,
};

/// Each hit's id, verdict and ranking key (to 4 places): what a search's order rests on.
fn ranked(hits: &[imgvec::Hit]) -> Vec<(u64, Option<imgvec::Verdict>, String)> {
    hits.iter()
        .map(|h| {
            let key = format!("{:.4}", h.rank_key.unwrap_or(h.score));
            (h.id, h.verdict, key)
        })
        .collect()
}

/// A robust database of 16 db images (keep the folder while the database is used).
fn robust_of_16() -> (tempfile::TempDir, Vec<std::path::PathBuf>, Database) {
    let files = db_images(16);
    let tmp = tempfile::tempdir().unwrap();
    let robust = PipelineChoice::Preset(Preset::Robust);
    let db = super::database_of(&tmp.path().join("db"), robust, &files);
    (tmp, files, db)
}

/// The sum of `ids`' vectors in `db`'s search space (an expansion's `expand_with`).
fn sum_of(db: &Database, ids: &[u64]) -> Vec<f32> {
    let mut sum = vec![0.0f32; db.space_vectors(&[1]).unwrap()[0].as_ref().unwrap().len()];
    for v in db.space_vectors(ids).unwrap().into_iter().flatten() {
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
    }
    sum
}

fn sources(files: &[std::path::PathBuf]) -> Vec<Source> {
    files.iter().cloned().map(Source::File).collect()
}

#[test]
fn rows_prepared_by_a_template_and_committed_to_a_database_made_like_it_search_alike() {
    let files = db_images(24);
    let tmp = tempfile::tempdir().unwrap();
    let robust = PipelineChoice::Preset(Preset::Robust);
    let template = super::database_of(&tmp.path().join("template"), robust, &files[..6]);
    let shard = template
        .create_like(tmp.path().join("shard"), OpenOptions::default())
        .unwrap();
    assert_eq!(
        shard.pipeline().unwrap().model_fingerprint,
        template.pipeline().unwrap().model_fingerprint
    );
    assert!(shard.pipeline().unwrap().whitening.unwrap().frozen);

    // Prepared by the template (which stores nothing more), committed to the shard.
    let (rows, failed) = template
        .prepare(sources(&files), &IngestOptions::default())
        .unwrap();
    assert!(failed.is_empty());
    assert_eq!(
        template
            .search(Query::Path(files[0].clone()), &SearchOptions::default())
            .unwrap()
            .len(),
        6
    );
    let rows: Vec<PreparedRow> = rows
        .iter()
        .map(|r| PreparedRow::from_bytes(&r.to_bytes()).unwrap())
        .collect();
    let events = std::sync::Mutex::new(Vec::new());
    let summary = shard
        .commit_prepared(rows.clone(), &IngestOptions::default(), &|e| {
            events.lock().unwrap().push(e.clone())
        })
        .unwrap();
    assert_eq!((summary.stored, summary.errors), (24, 0));
    // Committed again: unchanged, nothing stored twice.
    let again = shard
        .commit_prepared(rows, &IngestOptions::default(), &|_| {})
        .unwrap();
    assert_eq!((again.stored, again.unchanged), (0, 24));

    // The same as ingesting the files into a database made like the template.
    let one = template
        .create_like(tmp.path().join("one"), OpenOptions::default())
        .unwrap();
    one.ingest(sources(&files), &IngestOptions::default(), &|_| {})
        .unwrap();
    for q in files.iter().step_by(6) {
        let a = shard
            .search(Query::Path(q.clone()), &SearchOptions::default())
            .unwrap();
        let b = one
            .search(Query::Path(q.clone()), &SearchOptions::default())
            .unwrap();
        let key = |h: &imgvec::Hit| {
            (
                h.path.clone(),
                format!("{:.4}", h.score),
                h.verdict,
                h.rank_key.map(|k| format!("{k:.4}")),
            )
        };
        assert_eq!(
            a.iter().map(key).collect::<Vec<_>>(),
            b.iter().map(key).collect::<Vec<_>>()
        );
        assert!(
            a.iter().any(|h| h.rank_key.is_some()),
            "verification ranked the candidates"
        );
    }
    drop(shard);
    let err = template
        .create_like(tmp.path().join("shard"), OpenOptions::default())
        .err()
        .expect("a folder that holds a database is refused");
    assert!(
        err.to_string().contains("already holds a database"),
        "{err}"
    );
}

#[test]
fn rows_that_do_not_fit_the_pipeline_are_errors_naming_the_image() {
    let files = db_images(3);
    let tmp = tempfile::tempdir().unwrap();
    let balanced = super::database_of(
        &tmp.path().join("b"),
        PipelineChoice::Preset(Preset::Balanced),
        &files[..1],
    );
    let fast = super::database_of(&tmp.path().join("f"), PipelineChoice::Default, &files[..1]);
    let (rows, _) = balanced
        .prepare(sources(&files), &IngestOptions::default())
        .unwrap();
    let events = std::sync::Mutex::new(Vec::new());
    let summary = fast
        .commit_prepared(rows, &IngestOptions::default(), &|e| {
            events.lock().unwrap().push(e.clone())
        })
        .unwrap();
    assert_eq!((summary.stored, summary.errors), (0, 3));
    for e in events.into_inner().unwrap() {
        assert_eq!(e.status, IngestStatus::Error);
        assert!(e
            .error
            .unwrap()
            .contains("3285 dimensions, the database's pipeline makes 1280"));
        assert!(files
            .iter()
            .any(|f| std::fs::canonicalize(f).unwrap().display().to_string() == e.path));
    }
    let empty = Database::open(tmp.path().join("empty"), OpenOptions::default()).unwrap();
    assert!(empty
        .prepare(sources(&files), &IngestOptions::default())
        .is_err());
}

#[test]
fn expansion_with_given_vectors_replaces_the_querys_own_verified_results() {
    let (_tmp, files, db) = robust_of_16();
    let q = Query::Path(files[0].clone());
    let plain = db.search(q.clone(), &SearchOptions::default()).unwrap();
    let verified: Vec<u64> = plain
        .iter()
        .filter(|h| h.verdict == Some(imgvec::Verdict::Verified))
        .take(3)
        .map(|h| h.id)
        .collect();
    assert!(!verified.is_empty(), "the query verifies its source");
    let vectors = db.space_vectors(&verified).unwrap();
    let mut sum = vec![0.0f32; vectors[0].as_ref().unwrap().len()];
    for v in vectors.iter().flatten() {
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
    }
    let with = |expand_with: Option<Vec<f32>>| SearchOptions {
        expand_with,
        verify: VerifyOverrides {
            upright: Some(false),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    // Its own verified results, given: the same answer.
    let given = db.search(q.clone(), &with(Some(sum.clone()))).unwrap();
    let ids = |hits: &[imgvec::Hit]| {
        hits.iter()
            .map(|h| (h.id, format!("{:.4}", h.rank_key.unwrap_or(h.score))))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&given),
        ids(&db.search(q.clone(), &with(None)).unwrap())
    );
    // Another row's vector instead: another expansion, so other keys.
    let other = db.space_vectors(&[16]).unwrap().remove(0).unwrap();
    assert_ne!(
        ids(&db.search(q.clone(), &with(Some(other))).unwrap()),
        ids(&given)
    );
    let err = db
        .search(q, &with(Some(vec![1.0; 3])))
        .expect_err("a wrong length is refused");
    assert!(
        err.to_string().contains("expand_with has 3 values"),
        "{err}"
    );
    assert_eq!(db.space_vectors(&[999]).unwrap(), vec![None]);
}

#[test]
fn a_feature_query_searched_again_with_expansion_vectors_starts_from_its_first_pass() {
    let (_tmp, files, db) = robust_of_16();
    let opts = |expand: usize, expand_with: Option<Vec<f32>>| SearchOptions {
        expand_with,
        verify: VerifyOverrides {
            expand: Some(expand),
            upright: Some(false),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    let image = Query::Path(files[3].clone());
    let features = db
        .featurize_query(std::slice::from_ref(&image), &opts(0, None), &[])
        .remove(0)
        .unwrap();
    let back = imgvec::QueryFeatures::from_bytes(&features.to_bytes()).unwrap();
    let query = Query::Features(std::sync::Arc::new(back));
    // The first round: as the image itself, and kept.
    let first = db.search(query.clone(), &opts(0, None)).unwrap();
    assert_eq!(
        ranked(&first),
        ranked(&db.search(image.clone(), &opts(0, None)).unwrap())
    );
    assert_eq!(db.rerank_status().first_passes_reused, 0);
    // The second round, with expansion vectors: starts from the kept first pass, and answers
    // what a search that verified everything again answers.
    let verified: Vec<u64> = first
        .iter()
        .filter(|h| h.verdict == Some(imgvec::Verdict::Verified))
        .map(|h| h.id)
        .take(3)
        .collect();
    let sum = sum_of(&db, &verified);
    let again = db.search(query, &opts(3, Some(sum.clone()))).unwrap();
    assert_eq!(db.rerank_status().first_passes_reused, 1);
    let fresh = db.search(image, &opts(3, Some(sum))).unwrap();
    assert_eq!(ranked(&again), ranked(&fresh));
}

#[test]
fn a_filtered_first_pass_is_not_reused_after_an_attribute_write_changes_what_the_filter_allows() {
    let (_tmp, files, db) = robust_of_16();
    let shown: std::collections::BTreeMap<String, String> =
        [("shown".to_string(), "yes".to_string())].into();
    for id in 1..=16 {
        assert!(db.set_attributes(id, &shown, &[]).unwrap().is_some());
    }
    let opts = |expand_with: Option<Vec<f32>>| SearchOptions {
        expand_with,
        filter: imgvec::Filter {
            attributes: shown.clone(),
            ..imgvec::Filter::default()
        },
        verify: VerifyOverrides {
            expand: Some(3),
            upright: Some(false),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    let image = Query::Path(files[3].clone());
    let features = db
        .featurize_query(std::slice::from_ref(&image), &opts(None), &[])
        .remove(0)
        .unwrap();
    let query = Query::Features(std::sync::Arc::new(features));
    let first = db.search(query.clone(), &opts(None)).unwrap();
    let top = first[0].id;
    assert_eq!(first[0].verdict, Some(imgvec::Verdict::Verified));
    // The row found first leaves the filter: a search repeated with expansion vectors must not
    // start from the kept first pass, which holds it.
    db.set_attributes(top, &Default::default(), &["shown".to_string()])
        .unwrap()
        .unwrap();
    let others: Vec<u64> = first.iter().skip(1).map(|h| h.id).take(3).collect();
    let sum = sum_of(&db, &others);
    let again = db.search(query, &opts(Some(sum.clone()))).unwrap();
    assert_eq!(db.rerank_status().first_passes_reused, 0);
    assert!(again.iter().all(|h| h.id != top), "{:?}", ranked(&again));
    assert_eq!(
        ranked(&again),
        ranked(&db.search(image, &opts(Some(sum))).unwrap())
    );
}

#[test]
fn a_search_given_the_candidates_it_gathers_examines_those_and_only_those() {
    let (_tmp, files, db) = robust_of_16();
    let with = |candidates: Option<imgvec::Candidates>, expand: Option<usize>| SearchOptions {
        candidates,
        verify: VerifyOverrides {
            upright: Some(false),
            expand,
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    let opts = |candidates| with(candidates, None);
    let q = Query::Path(files[5].clone());
    let gathered = db
        .candidates(std::slice::from_ref(&q), &opts(None))
        .remove(0)
        .unwrap();
    assert_eq!(gathered.asked, [30, 30, 30]);
    assert!(!gathered.shortlist.is_empty() && !gathered.voted.is_empty());
    // Given back, they answer as the search that gathered them.
    let plain = db.search(q.clone(), &opts(None)).unwrap();
    assert_eq!(
        ranked(&db.search(q.clone(), &opts(Some(gathered.clone()))).unwrap()),
        ranked(&plain)
    );
    // With expansion vectors, the expanded query's top rows alone; given back with the first
    // round's lists, the expanded search answers as the one that gathered them itself.
    let verified: Vec<u64> = plain
        .iter()
        .filter(|h| h.verdict == Some(imgvec::Verdict::Verified))
        .map(|h| h.id)
        .collect();
    let sum = sum_of(&db, &verified);
    let expanding = |candidates| SearchOptions {
        expand_with: Some(sum.clone()),
        ..opts(candidates)
    };
    let expanded = db
        .candidates(std::slice::from_ref(&q), &expanding(None))
        .remove(0)
        .unwrap();
    assert!(expanded.shortlist.is_empty() && expanded.voted.is_empty());
    assert_eq!(
        expanded.expanded.len(),
        16,
        "every row, up to the shortlist"
    );
    let both = imgvec::Candidates {
        expanded: expanded.expanded,
        ..gathered.clone()
    };
    assert_eq!(
        ranked(&db.search(q.clone(), &expanding(Some(both))).unwrap()),
        ranked(&db.search(q.clone(), &expanding(None)).unwrap())
    );
    // Given one row, only it is examined; the others keep their global order, unchecked.
    // (Verified expansion examines what the expanded query finds here: off.)
    let source = plain[0].id;
    let one = imgvec::Candidates {
        voted: vec![(source, 1.0)],
        ..imgvec::Candidates::default()
    };
    let hits = db.search(q.clone(), &with(Some(one), Some(0))).unwrap();
    let checked: Vec<u64> = hits
        .iter()
        .filter(|h| h.verdict.is_some())
        .map(|h| h.id)
        .collect();
    assert_eq!(checked, vec![source]);
    assert_eq!(hits[0].verdict, Some(imgvec::Verdict::Verified));
    // None given: nothing is examined.
    let none = db
        .search(q, &with(Some(imgvec::Candidates::default()), Some(0)))
        .unwrap();
    assert!(
        none.iter().all(|h| h.verdict.is_none()),
        "{:?}",
        ranked(&none)
    );
}

#[test]
fn a_feature_query_searched_in_several_calls_starts_each_from_what_the_ones_before_examined() {
    let (_tmp, files, db) = robust_of_16();
    let opts = |augment, candidates: Option<imgvec::Candidates>| SearchOptions {
        augment: Some(augment),
        candidates,
        verify: VerifyOverrides {
            upright: Some(false),
            expand: Some(0),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };
    let image = Query::Path(files[5].clone());
    let features = |augment| {
        let f = db.featurize_query(std::slice::from_ref(&image), &opts(augment, None), &[]);
        Query::Features(std::sync::Arc::new(f.into_iter().next().unwrap().unwrap()))
    };
    let reused = || db.rerank_status().observations_reused;
    // A sharded search's calls (docs/RAY.md): the candidates, then their verification.
    let upright = features(Augment::None);
    let gathered = db
        .candidates(std::slice::from_ref(&upright), &opts(Augment::None, None))
        .remove(0)
        .unwrap();
    assert_eq!(reused(), 0);
    db.search(upright.clone(), &opts(Augment::None, Some(gathered)))
        .unwrap();
    assert_eq!(reused(), 1);
    // The upright retry: the query's turns, the same local features — both calls start from
    // what the first two examined, and answer as the image searched afresh (an image query
    // keeps nothing).
    let turned = features(Augment::Rot4);
    // The turns featurized like the upright query take its local features and make the same
    // features; another image featurized like it gets its vectors and this one's local features.
    let made = |image: &Query, augment, like: Option<&Query>| {
        let like = like.map(|q| match q {
            Query::Features(f) => f.as_ref(),
            _ => unreachable!("features"),
        });
        let f = db.featurize_query(std::slice::from_ref(image), &opts(augment, None), &[like]);
        f.into_iter().next().unwrap().unwrap().to_bytes()
    };
    let Query::Features(turned_features) = &turned else {
        unreachable!("features")
    };
    assert_eq!(
        made(&image, Augment::Rot4, Some(&upright)),
        turned_features.to_bytes()
    );
    let other = Query::Path(files[9].clone());
    let (mixed, own) = (
        made(&other, Augment::Rot4, Some(&upright)),
        made(&other, Augment::Rot4, None),
    );
    let common = |a: &[u8], b: &[u8], back: bool| match back {
        true => a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .take_while(|(x, y)| x == y)
            .count(),
        false => a.iter().zip(b).take_while(|(x, y)| x == y).count(),
    };
    let theirs = turned_features.to_bytes();
    assert!(common(&mixed, &theirs, true) > 10_000 && common(&own, &theirs, true) < 100);
    assert!(common(&mixed, &own, false) > common(&own, &theirs, false) + 1_000);
    let gathered = db
        .candidates(std::slice::from_ref(&turned), &opts(Augment::Rot4, None))
        .remove(0)
        .unwrap();
    let answer = db
        .search(turned.clone(), &opts(Augment::Rot4, Some(gathered.clone())))
        .unwrap();
    assert_eq!(reused(), 3);
    let fresh = db
        .search(image, &opts(Augment::Rot4, Some(gathered)))
        .unwrap();
    assert_eq!(ranked(&answer), ranked(&fresh));
    assert!(answer.iter().any(|h| h.verdict.is_some()));
    assert_eq!(reused(), 3);
    // Another filter examines alike (only votes depend on it); other verification settings
    // examine afresh.
    let filtered = SearchOptions {
        filter: imgvec::Filter {
            path_prefix: Some(files[0].parent().unwrap().display().to_string()),
            ..imgvec::Filter::default()
        },
        ..opts(Augment::Rot4, None)
    };
    db.search(turned.clone(), &filtered).unwrap();
    assert_eq!(reused(), 4);
    let mut stricter = opts(Augment::Rot4, None);
    stricter.verify.min_inliers = Some(40);
    db.search(turned, &stricter).unwrap();
    assert_eq!(reused(), 4);
}
