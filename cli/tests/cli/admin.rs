//! Delete, compact, presets and reindex.

use super::*;

/// A database in `dir/db` holding the first `n` instances-dev images (copied to `dir/imgs`),
/// compacted into one segment.
pub(crate) fn compacted_db(dir: &Path, n: usize) -> (Vec<PathBuf>, PathBuf) {
    let images = copy_db_images(&dir.join("imgs"), n);
    let db = dir.join("db");
    let out = run(&["ingest", s(&db), s(&dir.join("imgs"))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run(&["compact", s(&db)]).status.success());
    (images, db)
}

/// Deleting half of the images and compacting shrinks the segment bytes by about half, and
/// deleted images never come back in results, before or after compaction.
#[test]
fn delete_and_compact() {
    let tmp = tempfile::tempdir().unwrap();
    let (images, db) = compacted_db(tmp.path(), 40);
    let before = json_lines(&run(&["info", s(&db), "--json"]))[0].clone();
    assert_eq!(before["segments"], 1);
    assert_eq!(before["pending_rows"], 0);
    let mut args = vec!["delete", s(&db)];
    for p in images.iter().step_by(2) {
        args.extend(["--path", s(p)]);
    }
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted: Vec<&str> = images.iter().step_by(2).map(|p| s(p)).collect();
    let search_all = |db: &Path| {
        let mut a = vec!["search", s(db)];
        a.extend(images.iter().map(|p| s(p)));
        a.extend(["-k", "40", "--json"]);
        json_lines(&run(&a))
    };
    for phase in ["before compaction", "after compaction"] {
        for line in search_all(&db) {
            for hit in line["results"].as_array().unwrap() {
                assert!(
                    !deleted.contains(&hit["path"].as_str().unwrap()),
                    "{phase}: deleted {} returned",
                    hit["path"]
                );
            }
        }
        if phase == "before compaction" {
            // (The delete's own background compactor may already have purged the segment.)
            assert!(run(&["compact", s(&db), "--json"]).status.success());
        }
    }
    let after = json_lines(&run(&["info", s(&db), "--json"]))[0].clone();
    assert_eq!(
        (after["live_rows"].as_u64(), after["deleted_rows"].as_u64()),
        (Some(20), Some(0))
    );
    let (b, a) = (
        before["segment_bytes"].as_f64().unwrap(),
        after["segment_bytes"].as_f64().unwrap(),
    );
    assert!(a <= b * 0.55, "segment bytes {b} -> {a}");
}

#[test]
fn presets_and_reindex_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    let files = copy_db_images(&imgs, 8);
    let db = tmp.path().join("db");
    let out = run(&["ingest", s(&db), s(&imgs), "--pipeline", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'nonsense'") && err.contains("fast, balanced, robust, robust-vlad"),
        "{err}"
    );
    assert!(run(&["ingest", s(&db), s(&imgs)]).status.success());
    // Changing the pipeline needs reindex, which says which files have gone.
    let out = run(&["ingest", s(&db), s(&imgs), "--pipeline", "robust"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("imgvec reindex"));
    std::fs::remove_file(&files[2]).unwrap();
    // Without --drop-missing (and on a dry run) nothing changes; exit status 1 says a row
    // could not be carried over.
    for extra in [&[][..], &["--dry-run", "--drop-missing"][..]] {
        let mut args = vec!["reindex", s(&db), "--pipeline", "robust", "--json"];
        args.extend(extra);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let report = json_lines(&out).pop().unwrap();
        assert_eq!(report["swapped"], false);
        assert_eq!(report["gone"][0], s(&files[2]));
        let info = run(&["info", s(&db), "--json"]);
        let info: Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["pipeline"]["name"], "fast");
    }
    let out = run(&[
        "reindex",
        s(&db),
        "--pipeline",
        "robust",
        "--drop-missing",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let report = lines.last().unwrap();
    assert_eq!(report["stored"], 7);
    assert_eq!(report["swapped"], true);
    assert_eq!(report["gone"][0], s(&files[2]));
    let info = run(&["info", s(&db), "--json"]);
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["pipeline"]["name"], "robust");
    assert_eq!(info["pipeline"]["query"]["verify"]["shortlist"], 30);
    assert_eq!(info["pipeline"]["local"]["sift"]["max_keypoints"], 600);
    assert_eq!(info["local"]["images"], 7);
    assert!(info["local"]["keypoints"].as_u64().unwrap() > 7 * 50);
    assert!(
        info["whitening"].is_null(),
        "8 rows are too few to learn a whitening"
    );
    let text = String::from_utf8_lossy(&run(&["info", s(&db)]).stdout).into_owned();
    assert!(text.contains("colour [1440..1521)"), "{text}");
    assert!(text.contains("not learned yet"), "{text}");
    assert!(
        text.contains("local         SIFT/RootSIFT on 7 images"),
        "{text}"
    );
    for extra in [
        &[][..],
        &[
            "--augment",
            "rot4",
            "--qe",
            "2",
            "--min-inliers",
            "20",
            "--inlier-px",
            "5",
            "--min-coverage",
            "0.3",
        ][..],
        &["--verify", "0"][..],
    ] {
        let mut args = vec!["search", s(&db), s(&files[0]), "--json", "-k", "3"];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hits = &json_lines(&out)[0]["results"];
        assert_eq!(hits[0]["path"], s(&files[0]));
        // The image itself verifies with many inliers unless verification is off.
        if extra.contains(&"0") {
            assert!(hits[0]["inliers"].is_null(), "{hits}");
        } else {
            assert!(hits[0]["inliers"].as_u64().unwrap() >= 20, "{hits}");
            assert_eq!(hits[0]["match"], "verified", "{hits}");
        }
        assert!(hits[0]["confidence"].as_f64().unwrap() > 0.5, "{hits}");
    }
    // The reindexed database recorded robust's calibration; the contact sheet draws the
    // verified hit's matched points, and --pairs gives them in the JSON.
    assert!(info["pipeline"]["calibration"]["measured_on"].is_string());
    let sheet = tmp.path().join("sheet.html");
    let out = run(&[
        "search",
        s(&db),
        s(&files[0]),
        "-k",
        "2",
        "--pairs",
        "--json",
        "--html",
        s(&sheet),
    ]);
    assert!(out.status.success());
    let hits = json_lines(&out)[0]["results"].clone();
    let hit = &hits[0];
    let pairs = hit["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 20 && pairs.len() <= 64, "{hit}");
    let in_frame = |p: &Value| {
        p.as_array()
            .unwrap()
            .iter()
            .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap()))
    };
    assert!(pairs.iter().all(in_frame));
    let page = std::fs::read_to_string(&sheet).unwrap();
    assert!(page.contains("<svg class=\"pairs\""), "no matches drawn");
    // A line per pair of every verified hit.
    let drawn: usize = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pairs"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(page.matches("<line ").count(), drawn);
    let out = run(&["search", s(&db), s(&files[0]), "--inlier-px", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--inlier-px"));
    let out = run(&["search", s(&db), s(&files[0]), "--min-coverage", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-coverage 2"));
    let out = run(&["search", s(&db), s(&files[0]), "--augment", "sideways"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'sideways'") && err.contains("none, rot4"),
        "{err}"
    );
}
