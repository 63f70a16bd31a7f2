//! Search: modes, queries by id, the contact sheet, locking, damaged segments.

use super::*;
use crate::admin::compacted_db;

#[test]
fn second_writer_is_locked_out_and_readers_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 3);
    let db = tmp.path().join("db");
    assert!(run(&["ingest", s(&db), s(&imgs[0])]).status.success());
    let writer = imgvec::Database::open(&db, imgvec::OpenOptions::default()).unwrap();
    let out = run(&["ingest", s(&db), s(&imgs[1])]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The error names who holds the lock: this test process.
    let holder = format!("(held by pid {}: ", std::process::id());
    assert!(
        err.contains("database is locked by another process") && err.contains(&holder),
        "{err}"
    );
    // Searching is read-only and works beside the writer.
    let out = run(&["search", s(&db), s(&imgs[0]), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(writer);
    assert!(run(&["ingest", s(&db), s(&imgs[1])]).status.success());
}

#[test]
fn search_by_id_and_html_contact_sheet() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 6);
    let db = tmp.path().join("db");
    let out = run(&["ingest", s(&db), s(&tmp.path().join("imgs")), "--json"]);
    let first_id = json_lines(&out)[0]["id"].as_u64().unwrap();
    let html = tmp.path().join("sheet.html");
    let id = first_id.to_string();
    let out = run(&[
        "search",
        s(&db),
        s(&imgs[2]),
        "--id",
        &id,
        "-k",
        "3",
        "--json",
        "--html",
        s(&html),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines[1]["query"], format!("id:{id}"));
    let hits = lines[1]["results"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h["id"].as_u64() != Some(first_id)));
    // The image itself is a confident match; --matches-only keeps it and drops the rest
    // (unrelated photos).
    let me = &lines[0]["results"][0];
    assert_eq!(me["path"], s(&imgs[2]));
    assert_eq!(me["match"], "likely");
    assert!(me["confidence"].as_f64().unwrap() > 0.9, "{me}");
    let only = run(&["search", s(&db), s(&imgs[2]), "--matches-only", "--json"]);
    let kept = json_lines(&only)[0]["results"].as_array().unwrap().clone();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["path"], s(&imgs[2]));
    let page = std::fs::read_to_string(&html).unwrap();
    // The query and 3 results, for each of the 2 queries, all embedded.
    assert_eq!(page.matches("data:image/jpeg;base64,").count(), 8);
    assert!(page.contains(s(&imgs[2])));
    // Below the training threshold every approximate mode still answers (exact IVF-PQ
    // fallback, random-projection codes), the image itself first.
    for mode in ["ivfpq", "hamming", "hamming-ivf"] {
        let out = run(&["search", s(&db), s(&imgs[2]), "--mode", mode, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = &json_lines(&out)[0];
        assert_eq!(
            line["results"][0]["path"], lines[0]["results"][0]["path"],
            "{mode}"
        );
    }
}

/// Every search mode from the CLI on a database past its training threshold: the indexes are
/// built and saved by the ingest, reported by `info`, and each mode's results agree with exact
/// search; `--no-rerank` reports the index's own scores.
#[test]
fn search_modes_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    let images = copy_db_images(&imgs, 120);
    let db = tmp.path().join("db");
    // 64-bit codes: ITQ needs more rows than bits.
    let out = run(&[
        "--index-min-rows",
        "50",
        "--bits",
        "64",
        "ingest",
        s(&db),
        s(&imgs),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["info", s(&db), "--json"]);
    let info = &json_lines(&out)[0];
    assert_eq!(info["indexes"]["ivfpq"]["rows"], 120, "{info}");
    assert_eq!(info["indexes"]["hamming"]["encoder"], "itq", "{info}");
    assert!(info["indexes"]["bytes_on_disk"].as_u64().unwrap() > 0);
    let queries: Vec<&str> = images.iter().step_by(6).map(|p| s(p)).collect();
    let search = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["search", s(&db)];
        args.extend(&queries);
        args.extend(["--json", "-k", "5"]);
        args.extend(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out)
    };
    let top = |lines: &[Value]| -> Vec<Vec<u64>> {
        lines
            .iter()
            .map(|l| {
                l["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h["id"].as_u64().unwrap())
                    .collect()
            })
            .collect()
    };
    let exact = top(&search(&[]));
    for mode in ["ivfpq", "hamming", "hamming-ivf"] {
        let got = top(&search(&["--mode", mode]));
        let same: usize = got
            .iter()
            .zip(&exact)
            .map(|(g, e)| g.iter().filter(|id| e.contains(id)).count())
            .sum();
        let total: usize = exact.iter().map(|e| e.len()).sum();
        assert!(
            same * 10 >= total * 8,
            "{mode}: {same}/{total} of exact's results"
        );
        // The stored image itself comes first.
        for (g, e) in got.iter().zip(&exact) {
            assert_eq!(g[0], e[0], "{mode}");
        }
    }
    let raw = search(&["--mode", "hamming", "--no-rerank"]);
    for l in &raw {
        for h in l["results"].as_array().unwrap() {
            let score = h["score"].as_f64().unwrap();
            // 1 - hamming/64: a multiple of 1/64.
            assert!(
                ((score * 64.0) - (score * 64.0).round()).abs() < 1e-3,
                "{score}"
            );
        }
    }
    // A bad value is a usage error (exit 2) that lists the values.
    let out = run(&["search", s(&db), queries[0], "--mode", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'bogus'") && err.contains("exact, ivfpq, hamming, hamming-ivf"),
        "{err}"
    );
}

/// A damaged segment: every command that reads the damaged bytes fails with a data-corruption
/// error naming the file (nothing panics, no partial answer is printed); opening reads no
/// vector, so `info` still answers; `verify` reads everything and names it.
#[test]
fn corrupted_segment_is_reported_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (imgs, db) = compacted_db(tmp.path(), 4);
    let seg = damage_first_segment(&db);
    let deleted = run(&["delete", s(&db), "--id", "2"]);
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    // With --json, the query's error is its JSON line.
    let out = run(&["search", s(&db), s(&imgs[0]), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    let error = lines[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("data corruption in {}", seg.display())),
        "{error}"
    );
    // Compaction rewrites the segment without the deleted row: it reads every byte first.
    for args in [vec!["search", s(&db), s(&imgs[1])], vec!["compact", s(&db)]] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("data corruption in") && err.contains(s(&seg)),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = run(&["info", s(&db)]);
    assert_eq!(out.status.code(), Some(0));
    let out = run(&["verify", s(&db)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("damaged: data corruption in {}", seg.display())));
    assert_eq!(
        std::fs::read_dir(db.join("segments")).unwrap().count(),
        1,
        "the damaged segment was not rewritten"
    );
}
