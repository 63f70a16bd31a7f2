//! The `imgvec` binary end to end, on the real stack, through its documented CLI contract.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn imgvec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgvec"))
}

fn run(args: &[&str]) -> Output {
    imgvec().args(args).output().unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

#[path = "../../engine/tests/common/datasets.rs"]
mod datasets;
use datasets::datasets;

/// The first `n` db images of instances-dev copied into `dir` (so tests own their paths).
fn copy_db_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    let src = datasets().join("instances-dev/db");
    let mut names: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    std::fs::create_dir_all(dir).unwrap();
    names
        .iter()
        .take(n)
        .map(|name| {
            let to = dir.join(name);
            std::fs::copy(src.join(name), &to).unwrap();
            to
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ingest_search_reopen_gives_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let images = copy_db_images(&tmp.path().join("imgs"), 48);
    let db = tmp.path().join("db");
    let out = run(&["ingest", s(&db), s(&tmp.path().join("imgs")), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 49);
    let mut ids = std::collections::HashSet::new();
    for l in &lines[..48] {
        assert_eq!(l["status"], "stored", "{l}");
        assert!(l["error"].is_null());
        assert!(ids.insert(l["id"].as_u64().unwrap()));
    }
    assert_eq!(lines[48]["summary"]["stored"], 48);

    // Running the same ingest again stores nothing twice.
    let again = run(&["ingest", s(&db), s(&tmp.path().join("imgs")), "--json"]);
    let lines = json_lines(&again);
    assert!(lines[..48].iter().all(|l| l["status"] == "unchanged"));
    assert_eq!(lines[48]["summary"]["unchanged"], 48);
    assert_eq!(lines[48]["summary"]["stored"], 0);

    // Every stored image finds itself first; each query answers in its own process.
    let queries: Vec<&str> = images.iter().step_by(5).map(|p| s(p)).collect();
    let mut args = vec!["search", s(&db)];
    args.extend(&queries);
    args.extend(["-k", "5", "--json"]);
    let first = run(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let results = json_lines(&first);
    assert_eq!(results.len(), queries.len());
    for (q, r) in queries.iter().zip(&results) {
        assert_eq!(r["query"], *q);
        let hits = r["results"].as_array().unwrap();
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0]["path"], *q);
        assert!(hits[0]["score"].as_f64().unwrap() > 0.999);
        let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }
    let second = run(&args);
    assert_eq!(first.stdout, second.stdout);

    // info sees what ingest reported.
    let info = json_lines(&run(&["info", s(&db), "--json"]));
    assert_eq!(info[0]["live_rows"], 48);
    assert_eq!(info[0]["pipeline"]["name"], "fast");
}

#[test]
fn bad_files_are_reported_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let good = copy_db_images(&dir, 2);
    let jpeg = std::fs::read(&good[0]).unwrap();
    std::fs::write(dir.join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(dir.join("text.jpg"), b"this is not an image\n").unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    // A real PNG whose header is patched to claim 50000 x 50000 pixels.
    let mut bomb = std::io::Cursor::new(Vec::new());
    imgvec::image::RgbImage::new(16, 16)
        .write_to(&mut bomb, imgvec::image::ImageFormat::Png)
        .unwrap();
    let mut bomb = bomb.into_inner();
    bomb[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(dir.join("bomb.png"), &bomb).unwrap();
    std::fs::write(dir.join("notes.txt"), b"skipped by extension").unwrap();

    let db = tmp.path().join("db");
    let out = run(&[
        "ingest",
        s(&db),
        s(&dir),
        s(&tmp.path().join("missing.jpg")),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad items make the exit status non-zero"
    );
    let lines = json_lines(&out);
    let by_name = |name: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .unwrap_or_else(|| panic!("no line for {name}: {lines:?}"))
            .clone()
    };
    for (name, reason) in [
        ("truncated.jpg", "cannot decode"),
        ("text.jpg", "not a supported image"),
        ("empty.png", "empty file"),
        ("bomb.png", "50000x50000"),
        ("missing.jpg", "No such file"),
    ] {
        let l = by_name(name);
        assert_eq!(l["status"], "error", "{l}");
        assert!(l["error"].as_str().unwrap().contains(reason), "{l}");
    }
    for g in &good {
        assert_eq!(
            by_name(g.file_name().unwrap().to_str().unwrap())["status"],
            "stored"
        );
    }
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        (&summary["stored"], &summary["errors"], &summary["skipped"]),
        (&Value::from(2), &Value::from(5), &Value::from(1))
    );

    // A query that cannot be read gets an error line; the others are still answered.
    let out = run(&[
        "search",
        s(&db),
        s(&dir.join("text.jpg")),
        s(&good[1]),
        "--json",
    ]);
    assert!(!out.status.success());
    let lines = json_lines(&out);
    assert!(lines[0]["error"].as_str().unwrap().contains("text.jpg"));
    assert_eq!(lines[1]["results"][0]["path"], s(&good[1]));
}

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
    assert!(
        err.contains("database is locked by another process"),
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

/// `imgvec ingest DB DIR --json` in the background, committing (and acknowledging) every few
/// images so that an interruption lands mid-ingest.
fn spawn_ingest_json(db: &Path, dir: &Path) -> std::process::Child {
    imgvec()
        .args(["ingest", s(db), s(dir), "--json", "--batch-size", "4"])
        .args(["--commit-rows", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Ctrl-C stops an ingest cleanly: exit 130, and every image it acknowledged is stored.
#[test]
fn interrupted_ingest_keeps_what_it_acknowledged_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imgs");
    copy_db_images(&dir, 300);
    let db = tmp.path().join("db");
    let mut child = spawn_ingest_json(&db, &dir);
    let stdout = child.stdout.take().unwrap();
    let mut reader = std::io::BufReader::new(stdout);
    let mut acked = Vec::new();
    let mut line = String::new();
    use std::io::BufRead;
    while reader.read_line(&mut line).unwrap() > 0 {
        let v: Value = serde_json::from_str(&line).unwrap();
        line.clear();
        if v["status"] == "stored" {
            acked.push(v["id"].as_u64().unwrap());
            if acked.len() == 1 {
                let pid = child.id().to_string();
                assert!(Command::new("kill")
                    .args(["-INT", &pid])
                    .status()
                    .unwrap()
                    .success());
            }
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        acked.len() < 300,
        "the interrupt came too late to test anything"
    );
    let info = json_lines(&run(&["info", s(&db), "--json"]));
    assert_eq!(info[0]["live_rows"].as_u64().unwrap(), acked.len() as u64);
    let handle = imgvec::Database::open(
        &db,
        imgvec::OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    for id in &acked {
        assert!(
            handle.get(*id).unwrap().is_some(),
            "acknowledged id {id} lost"
        );
    }
    drop(handle);
    // Running it again finishes the job without storing anything twice.
    let out = run(&["ingest", s(&db), s(&dir), "--json"]);
    let lines = json_lines(&out);
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["unchanged"].as_u64().unwrap(), acked.len() as u64);
    assert_eq!(
        summary["stored"].as_u64().unwrap(),
        300 - acked.len() as u64
    );
}

#[test]
fn bench_ingest_reports_ingest_against_bare_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imgs");
    copy_db_images(&dir, 20);
    let out = run(&["bench", "ingest", s(&dir), "--batch-size", "4", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &json_lines(&out)[0];
    assert_eq!(r["images"], 20);
    assert_eq!(r["batch_size"], 4);
    let (forward, ingest) = (
        r["forward_images_per_sec"].as_f64().unwrap(),
        r["ingest_images_per_sec"].as_f64().unwrap(),
    );
    assert!(forward > 0.0 && ingest > 0.0);
    assert!((r["ratio"].as_f64().unwrap() - ingest / forward).abs() < 1e-9);
}

/// SIGKILL during `imgvec ingest`: each cycle ingests a new folder and is killed shortly after
/// its first acknowledged image (mid-batch, mid-commit). Every image whose JSON line was printed
/// is stored after the kill, and re-running finishes the job without storing anything twice.
#[test]
fn sigkill_during_ingest_keeps_every_acknowledged_image() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let all = copy_db_images(&tmp.path().join("all"), 480);
    let root = tmp.path().join("imgs");
    let db = tmp.path().join("db");
    let mut acked: std::collections::HashMap<String, u64> = Default::default();
    for (cycle, pause_ms) in [0u64, 50, 150, 300].into_iter().enumerate() {
        let dir = root.join(format!("c{cycle}"));
        std::fs::create_dir_all(&dir).unwrap();
        for p in &all[cycle * 120..(cycle + 1) * 120] {
            std::fs::rename(p, dir.join(p.file_name().unwrap())).unwrap();
        }
        let mut child = spawn_ingest_json(&db, &dir);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Value>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let first = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for v in std::iter::once(first).chain(rx.try_iter()) {
            if v["status"] == "stored" {
                acked.insert(
                    v["path"].as_str().unwrap().into(),
                    v["id"].as_u64().unwrap(),
                );
            }
        }
        let handle = imgvec::Database::open(
            &db,
            imgvec::OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        for (path, id) in &acked {
            let rec = handle.get(*id).unwrap();
            assert_eq!(
                rec.map(|r| r.path),
                Some(path.clone()),
                "cycle {cycle}: lost {path}"
            );
        }
    }
    assert!(
        !acked.is_empty() && acked.len() < 480,
        "kills missed the ingest: {}",
        acked.len()
    );
    let out = run(&["ingest", s(&db), s(&root), "--json"]);
    assert!(out.status.success());
    let lines = json_lines(&out);
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["errors"], 0);
    assert_eq!(
        summary["stored"].as_u64().unwrap() + summary["unchanged"].as_u64().unwrap(),
        480
    );
    assert!(summary["unchanged"].as_u64().unwrap() >= acked.len() as u64);
    let info = json_lines(&run(&["info", s(&db), "--json"]));
    assert_eq!(info[0]["live_rows"], 480);
    // An acknowledged image is still found by its own pixels.
    let probe = acked.keys().next().unwrap();
    let hits = json_lines(&run(&["search", s(&db), probe, "-k", "1", "--json"]));
    assert_eq!(hits[0]["results"][0]["path"], probe.as_str());
}

/// A database in `dir/db` holding the first `n` instances-dev images (copied to `dir/imgs`),
/// compacted into one segment.
fn compacted_db(dir: &Path, n: usize) -> (Vec<PathBuf>, PathBuf) {
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

/// A damaged segment makes every command fail with a data-corruption error naming the file;
/// nothing panics and no partial answer is printed.
#[test]
fn corrupted_segment_is_reported_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (imgs, db) = compacted_db(tmp.path(), 4);
    let seg = std::fs::read_dir(db.join("segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&seg, bytes).unwrap();
    for args in [
        vec!["search", s(&db), s(&imgs[0]), "--json"],
        vec!["info", s(&db)],
        vec!["ingest", s(&db), s(&imgs[1])],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("data corruption in") && err.contains(s(&seg)),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn missing_default_model_names_the_setup_command() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 1);
    let out = imgvec()
        .args(["ingest", s(&tmp.path().join("db")), s(&imgs[0])])
        .env("IMGVEC_MODEL_DIR", tmp.path().join("no-models"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("default model not found") && err.contains("./scripts/setup.sh"),
        "{err}"
    );
}

/// `bench retrieval` on a tiny benchmark folder whose queries are copies of db images: every
/// query finds its image first, and the per-case table and latencies are reported.
#[test]
fn bench_retrieval_scores_a_benchmark_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = tmp.path().join("bench");
    let images = copy_db_images(&bench.join("db"), 8);
    std::fs::create_dir_all(bench.join("queries")).unwrap();
    let mut db_lines = String::new();
    let mut query_lines = String::new();
    for (i, p) in images.iter().enumerate() {
        let name = p.file_name().unwrap().to_str().unwrap();
        db_lines += &format!("{{\"path\": \"db/{name}\", \"label\": \"l{i}\"}}\n");
        if i % 3 == 0 {
            std::fs::copy(p, bench.join("queries").join(format!("q{i}.jpg"))).unwrap();
            query_lines += &format!(
                "{{\"path\": \"queries/q{i}.jpg\", \"label\": \"l{i}\", \"case\": \"same\"}}\n"
            );
        }
    }
    std::fs::write(bench.join("db.jsonl"), db_lines).unwrap();
    std::fs::write(bench.join("queries.jsonl"), query_lines).unwrap();
    let out = run(&["bench", "retrieval", s(&bench), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &json_lines(&out)[0];
    assert_eq!(r["db_images"], 8);
    let modes = r["modes"].as_array().unwrap();
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["exact", "ivfpq", "hamming", "hamming-ivf"]);
    for m in modes {
        assert_eq!(m["overall"]["queries"], 3, "{m}");
        assert_eq!(m["overall"]["recall_at_1"], 1.0, "{m}");
        assert_eq!(m["overall"]["map_at_10"], 1.0, "{m}");
        assert_eq!(m["agreement_at_1"], 1.0, "{m}");
        assert_eq!(m["cases"][0]["case"], "same");
        assert!(m["latency_p50_ms"].as_f64().unwrap() > 0.0);
        assert!(m["latency_p99_ms"].as_f64().unwrap() >= m["latency_p50_ms"].as_f64().unwrap());
        assert!(m["bytes_per_vector"].as_f64().unwrap() > 0.0);
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
    let out = run(&["search", s(&db), queries[0], "--mode", "bogus"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown search mode"));
}

/// `imgvec train autoencoder` on a few real digits, then the encoder used as an extractor; and
/// `imgvec train sgan` refusing a bad label file with its name and line.
#[test]
fn train_autoencoder_then_ingest_with_it_and_bad_labels_for_sgan() {
    let tmp = tempfile::tempdir().unwrap();
    let src = datasets().join("digits-dev/db");
    let imgs = tmp.path().join("digits");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names.iter().step_by(40).take(80) {
        std::fs::copy(src.join(name), imgs.join(name)).unwrap();
    }
    let enc = tmp.path().join("enc.pt");
    let out = run(&[
        "train",
        "autoencoder",
        s(&imgs),
        "--out",
        s(&enc),
        "--epochs",
        "3",
        "--code-dim",
        "16",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let epochs: Vec<&Value> = lines.iter().filter(|l| l.get("epoch").is_some()).collect();
    assert_eq!(epochs.len(), 3);
    assert!(epochs[2]["loss"].as_f64().unwrap() < epochs[0]["loss"].as_f64().unwrap());
    assert_eq!(lines.last().unwrap()["images"], 80);
    let db = tmp.path().join("db");
    let out = run(&[
        "ingest",
        s(&db),
        s(&imgs),
        "--model",
        s(&enc),
        "--model-size",
        "28",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["info", s(&db), "--json"]);
    assert_eq!(json_lines(&out)[0]["dims"], 16);
    // A database as the training input: its stored files.
    let enc2 = tmp.path().join("enc2.pt");
    let out = run(&[
        "train",
        "autoencoder",
        s(&db),
        "--out",
        s(&enc2),
        "--epochs",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&out).last().unwrap()["images"], 80);

    let labels = tmp.path().join("labels.jsonl");
    std::fs::write(
        &labels,
        "{\"path\": \"digits/missing.png\", \"label\": \"1\"}\n",
    )
    .unwrap();
    let out = run(&[
        "train",
        "sgan",
        s(&imgs),
        "--labels",
        s(&labels),
        "--out",
        s(&tmp.path().join("d.pt")),
        "--epochs",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("labels.jsonl:1") && err.contains("missing.png"),
        "{err}"
    );
}

#[test]
fn presets_and_reindex_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    let files = copy_db_images(&imgs, 8);
    let db = tmp.path().join("db");
    let out = run(&["ingest", s(&db), s(&imgs), "--pipeline", "nonsense"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown pipeline `nonsense`"));
    assert!(run(&["ingest", s(&db), s(&imgs)]).status.success());
    // Changing the pipeline needs reindex, which says which files have gone.
    let out = run(&["ingest", s(&db), s(&imgs), "--pipeline", "robust"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("imgvec reindex"));
    std::fs::remove_file(&files[2]).unwrap();
    let out = run(&["reindex", s(&db), "--pipeline", "robust", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let report = lines.last().unwrap();
    assert_eq!(report["stored"], 7);
    assert_eq!(report["gone"][0], s(&files[2]));
    let info = run(&["info", s(&db), "--json"]);
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["pipeline"]["name"], "robust");
    assert_eq!(info["pipeline"]["query"]["verify"]["shortlist"], 30);
    assert_eq!(info["pipeline"]["local"]["sift"]["max_keypoints"], 1000);
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
            assert!(hits[0].get("inliers").is_none(), "{hits}");
        } else {
            assert!(hits[0]["inliers"].as_u64().unwrap() >= 20, "{hits}");
        }
    }
    let out = run(&["search", s(&db), s(&files[0]), "--inlier-px", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--inlier-px"));
    let out = run(&["search", s(&db), s(&files[0]), "--augment", "sideways"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown query augmentation"));
}
