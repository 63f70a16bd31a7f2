//! `imgvec bench` and `imgvec train`.

use super::*;

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
    // Every stage's share of the work, measured in the same run.
    let share = |r: &serde_json::Value, stage: &str| {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap()["share"]
            .as_f64()
            .unwrap()
    };
    let total: f64 = r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["share"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-9, "{r}");
    assert!(share(r, "model") > 0.0 && share(r, "decode") > 0.0, "{r}");
    assert_eq!(share(r, "local features"), 0.0, "{r}");

    // A named pipeline: its stages, no bare-forward baseline.
    let out = run(&["bench", "ingest", s(&dir), "--pipeline", "robust", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &json_lines(&out)[0];
    assert_eq!(
        (r["pipeline"].as_str(), r["images"].as_u64()),
        (Some("robust"), Some(20))
    );
    assert!(
        r.get("forward_images_per_sec").is_none() && r.get("ratio").is_none(),
        "{r}"
    );
    assert!(
        share(r, "local features") > 0.0 && share(r, "model") > 0.0,
        "{r}"
    );
}

/// A folder of symbolic links (as scripts make for samples of a dataset) is measured with
/// `--follow-links`; without it nothing is measured and the error says why, not "0 images".
#[test]
fn bench_ingest_follows_links_when_asked_and_says_why_it_found_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let images = copy_db_images(&tmp.path().join("imgs"), 3);
    let links = tmp.path().join("links");
    std::fs::create_dir_all(&links).unwrap();
    for (i, img) in images.iter().enumerate() {
        std::os::unix::fs::symlink(img, links.join(format!("{i}.jpg"))).unwrap();
    }
    let out = run(&["bench", "ingest", s(&links), "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no image to measure") && err.contains("--follow-links"),
        "{err}"
    );
    let out = run(&["bench", "ingest", s(&links), "--follow-links", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(json_lines(&out)[0]["images"], 3);
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
    // The model records its input size: no --model-size needed, and a wrong one is one line
    // naming the size it expects (nothing created).
    let wrong = tmp.path().join("wrong");
    let out = run(&[
        "ingest",
        s(&wrong),
        s(&imgs),
        "--model",
        s(&enc),
        "--model-size",
        "224",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("expects 28×28 input") && err.contains("--model-size 28"),
        "{err}"
    );
    assert!(!wrong.exists());
    let db = tmp.path().join("db");
    let out = run(&["ingest", s(&db), s(&imgs), "--model", s(&enc)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["info", s(&db), "--json"]);
    assert_eq!(json_lines(&out)[0]["dims"], 16);
    assert_eq!(json_lines(&out)[0]["pipeline"]["input_size"], 28);
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

/// `imgvec train contrastive` on a few real photos, then `--pipeline balanced --model OUT`: the
/// database is `balanced` with the fine-tuned CNN (its fingerprint recorded, another model
/// refused), and the flags that cannot go together are refused with one line.
#[test]
fn train_contrastive_then_ingest_balanced_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    copy_db_images(&imgs, 24);
    let train = |out: &Path, more: &[&str]| {
        let mut args = vec!["train", "contrastive", s(&imgs), "--out", s(out)];
        args.extend_from_slice(more);
        run(&args)
    };
    let ingest = |db: &Path, preset: &str, model: &Path| {
        run(&[
            "ingest",
            s(db),
            s(&imgs),
            "--pipeline",
            preset,
            "--model",
            s(model),
        ])
    };
    let tuned = tmp.path().join("tuned.pt");
    let quick = ["--views", "3", "--epochs", "4", "--batch-size", "12"];
    let out = train(
        &tuned,
        &[&quick[..], &["--learning-rate", "1e-3", "--json"]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    let epochs: Vec<&Value> = lines.iter().filter(|l| l.get("epoch").is_some()).collect();
    assert_eq!(epochs.len(), 4);
    assert!(epochs[3]["loss"].as_f64().unwrap() < epochs[0]["loss"].as_f64().unwrap());
    assert_eq!(lines.last().unwrap()["images"], 24);
    // --sample trains on that many of the images.
    let sampled = tmp.path().join("sampled.pt");
    let out = train(
        &sampled,
        &["--views", "1", "--epochs", "1", "--sample", "10", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out).last().unwrap()["images"], 10);

    let db = tmp.path().join("db");
    let out = ingest(&db, "balanced", &tuned);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = &json_lines(&run(&["info", s(&db), "--json"]))[0];
    assert_eq!(info["pipeline"]["name"], "balanced");
    assert_eq!(info["pipeline"]["model_source"], "tuned.pt");
    assert_eq!(info["pipeline"]["input_size"], 320);
    assert_eq!(info["live_rows"], 24);
    // The stored image comes back first, searched with the tuned model.
    let first = imgs.join(
        std::fs::read_dir(&imgs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .min()
            .unwrap(),
    );
    let out = run(&["search", s(&db), s(&first), "-k", "3", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hit = &json_lines(&out)[0]["results"][0];
    assert_eq!(
        hit["path"].as_str().unwrap(),
        std::fs::canonicalize(&first).unwrap().to_str().unwrap()
    );
    // The same preset with another model is another pipeline.
    let base = tmp.path().join("base.pt");
    std::fs::copy(imgvec_train::default_base(), &base).unwrap();
    let out = ingest(&db, "balanced", &base);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot be changed by ingest"),
        "{}",
        stderr(&out)
    );
    // `fast` takes no replacement CNN; a base that is missing, or not a trainable split, is
    // named (and nothing is saved).
    let out = ingest(&tmp.path().join("f"), "fast", &tuned);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`fast` takes a model as --model alone"));
    let x = tmp.path().join("x.pt");
    let out = train(&x, &["--base", s(&tuned.with_extension("missing"))]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no trainable base model"));
    let frozen = imgvec_train::default_base().with_file_name("mobilenet_v2_maps.pt");
    let out = train(&x, &["--base", s(&frozen)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("mobilenet_v2_maps.pt") && err.contains("not a trainable split model"),
        "{err}"
    );
    assert!(!x.exists());
}
