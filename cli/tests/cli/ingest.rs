//! Ingest: statuses, bad files, interruption and SIGKILL keep what was acknowledged.

use super::*;

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
