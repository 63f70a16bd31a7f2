//! What a user meets around the results: exit codes, warnings for options that would do nothing,
//! query sources (folders, stdin, lists), IMGVEC_DB, the JSON schema, colour, completions and
//! the man page, and the launcher answering without the engine.

use std::io::Write;

use super::*;

/// A fast database of the first `n` instances-dev images (in `tmp/imgs`), ingested with `attrs`.
fn small_db(tmp: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
    let imgs = copy_db_images(&tmp.join("imgs"), n);
    let db = tmp.join("db");
    let out = run(&["ingest", s(&db), s(&tmp.join("imgs")), "--attr", "set=a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    (db, imgs)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn exit_codes_tell_usage_errors_from_runtime_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, imgs) = small_db(tmp.path(), 3);
    let (db, q) = (s(&db), s(&imgs[0]));
    // 2: usage errors, clap's own and the values found after parsing.
    for args in [
        vec!["search", db, q, "--mode", "bogus"],
        vec!["search", db, q, "--augment", "sideways"],
        vec!["ingest", db, q, "--pipeline", "bogus"],
        vec!["search", db],
        vec!["search", db, q, "-k", "0"],
        vec!["search", db, q, "--threshold", "2"],
        vec!["search", db, q, "--alignment-floor", "3"],
        vec!["delete", db],
        vec!["frobnicate"],
    ] {
        let out = run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("error"), "{args:?}");
    }
    // 1: runtime failures, and partial ones (a query that cannot be read).
    let missing = tmp.path().join("missing");
    for args in [
        vec!["search", s(&missing), q],
        vec!["search", db, q, "/no/such/query.jpg"],
        vec!["delete", db, "--id", "999999"],
    ] {
        assert_eq!(code(&run(&args)), 1, "{args:?}");
    }
    // 0: help and version, and the exit statuses are documented in --help.
    let help = run(&["--help"]);
    assert_eq!(code(&help), 0);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("Exit status") && text.contains("130"),
        "{text}"
    );
    assert_eq!(code(&run(&["--version"])), 0);
}

#[test]
fn upright_is_warned_about_only_where_no_calibration_can_tell_a_match() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, imgs) = small_db(tmp.path(), 3);
    // `fast` has a calibration: the fallback runs when asked.
    let out = run(&["search", s(&db), s(&imgs[0]), "--upright", "true"]);
    assert_eq!(code(&out), 0);
    assert!(!stderr(&out).contains("--upright"), "{}", stderr(&out));
    // The same network given as a model file is a custom pipeline, without one.
    let model = std::fs::read_dir(db.join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pt"))
        .unwrap();
    let custom = tmp.path().join("custom");
    let out = run(&["ingest", s(&custom), s(&imgs[0]), "--model", s(&model)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["search", s(&custom), s(&imgs[1]), "--upright", "true"]);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("warning: --upright does nothing here"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn options_that_would_do_nothing_are_warned_about_and_relative_prefixes_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, imgs) = small_db(tmp.path(), 3);
    // --verify on a database without local features.
    let out = run(&["search", s(&db), s(&imgs[0]), "--verify", "5"]);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("warning: --verify"),
        "{}",
        stderr(&out)
    );
    let quiet = run_with(&["-q"], &["search", s(&db), s(&imgs[0]), "--verify", "5"]);
    assert!(stderr(&quiet).is_empty(), "{}", stderr(&quiet));
    // --attr on files that are already stored unchanged.
    let out = run(&["ingest", s(&db), s(&imgs[0]), "--attr", "set=b"]);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("--attr was not applied to 1 unchanged"),
        "{}",
        stderr(&out)
    );
    // A relative --path-prefix is taken from the current folder, as delete --path is.
    let out = imgvec()
        .current_dir(tmp.path())
        .args([
            "search",
            s(&db),
            s(&imgs[0]),
            "--path-prefix",
            "imgs/",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(json_lines(&out)[0]["results"].as_array().unwrap().len(), 3);
    let out = imgvec()
        .current_dir(tmp.path())
        .args([
            "search",
            s(&db),
            s(&imgs[0]),
            "--path-prefix",
            "other/",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(json_lines(&out)[0]["results"].as_array().unwrap().len(), 0);
}

#[test]
fn queries_come_from_folders_stdin_and_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, imgs) = small_db(tmp.path(), 4);
    // A folder is walked: one line per image, in name order.
    let out = run(&[
        "search",
        s(&db),
        s(&tmp.path().join("imgs")),
        "-k",
        "1",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4);
    for (line, img) in lines.iter().zip(&imgs) {
        assert_eq!(line["results"][0]["path"], s(img));
    }
    // `-`: one image's bytes on stdin.
    let mut child = imgvec()
        .args(["search", s(&db), "-", "-k", "1", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&imgs[2]).unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let line = &json_lines(&out)[0];
    assert_eq!(line["query"], "-");
    assert_eq!(line["results"][0]["path"], s(&imgs[2]));
    // --from-file: one path per line (here from stdin).
    let mut child = imgvec()
        .args(["search", s(&db), "--from-file", "-", "-k", "1", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let list = format!("{}\n\n{}\n", s(&imgs[3]), s(&imgs[1]));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let lines = json_lines(&child.wait_with_output().unwrap());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["results"][0]["path"], s(&imgs[3]));
    assert_eq!(lines[1]["results"][0]["path"], s(&imgs[1]));
}

#[test]
fn imgvec_db_names_the_database_when_the_first_operand_is_not_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, imgs) = small_db(tmp.path(), 2);
    let with_env = |args: &[&str]| imgvec().env("IMGVEC_DB", &db).args(args).output().unwrap();
    let out = with_env(&["info", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["live_rows"], 2);
    let out = with_env(&["search", s(&imgs[1]), "-k", "1", "--json"]);
    assert_eq!(json_lines(&out)[0]["results"][0]["path"], s(&imgs[1]));
    // An explicit database still wins.
    let other = tmp.path().join("other");
    assert_eq!(code(&run(&["ingest", s(&other), s(&imgs[0])])), 0);
    let out = with_env(&["info", s(&other), "--json"]);
    assert_eq!(json_lines(&out)[0]["live_rows"], 1);
}

#[test]
fn every_json_line_has_the_documented_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 3);
    let db = tmp.path().join("db");
    let out = run(&[
        "ingest",
        s(&db),
        s(&tmp.path().join("imgs")),
        "--json",
        "--attr",
        "k=v",
    ]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l["schema_version"] == 1), "{lines:?}");
    assert_eq!(lines[3]["summary"]["stored"], 3);
    // Lines come as images become durable, not in name order.
    let id = lines
        .iter()
        .find(|l| l["path"] == s(&imgs[0]))
        .and_then(|l| l["id"].as_u64())
        .unwrap();
    let out = run(&[
        "search",
        s(&db),
        s(&imgs[1]),
        "--id",
        &id.to_string(),
        "-k",
        "2",
        "--json",
    ]);
    let lines = json_lines(&out);
    let hit = &lines[0]["results"][0];
    assert_eq!(lines[0]["schema_version"], 1);
    assert_eq!(hit["rank"], 1);
    assert_eq!(hit["path"], s(&imgs[1]));
    assert_eq!(hit["attrs"]["k"], "v");
    // Fields that do not apply are present as null, not left out.
    for field in ["inliers", "alignment", "verdict"] {
        assert!(
            hit[field].is_null() && hit.get(field).is_some(),
            "{field}: {hit}"
        );
    }
    assert_eq!(lines[0]["results"][1]["rank"], 2);
    // An --id query names the stored image it searched with.
    assert_eq!(lines[1]["query"], format!("id:{id}"));
    assert_eq!(lines[1]["query_id"], id);
    assert_eq!(lines[1]["query_path"], s(&imgs[0]));
    for args in [
        vec!["info", s(&db), "--json"],
        vec!["compact", s(&db), "--json"],
        vec!["verify", s(&db), "--json"],
        vec!["delete", s(&db), "--id", &id.to_string(), "--json"],
    ] {
        let out = run(&args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert_eq!(json_lines(&out)[0]["schema_version"], 1, "{args:?}");
    }
}

#[test]
fn reports_say_what_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 2);
    std::fs::copy(&imgs[0], tmp.path().join("imgs/zz-copy.jpg")).unwrap();
    let db = tmp.path().join("db");
    // A byte-identical copy is named with what it copies. Workers finish in any order, so
    // either file may be the one stored first; the line names both.
    let out = run(&["ingest", s(&db), s(&tmp.path().join("imgs"))]);
    let err = stderr(&out);
    let copy = tmp.path().join("imgs/zz-copy.jpg");
    let named = |a: &Path, b: &Path| {
        err.contains(&format!("{} is a byte-identical copy of id", s(a))) && err.contains(s(b))
    };
    assert!(named(&copy, &imgs[0]) || named(&imgs[0], &copy), "{err}");
    // compact says it sealed the pending rows even when there is nothing to merge.
    let out = run(&["compact", s(&db)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sealed 3 pending rows"), "{text}");
    // An empty folder stores nothing and creates no database; a named file that is not an
    // image is an error, not a silent skip.
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let new = tmp.path().join("new");
    let out = run(&["ingest", s(&new), s(&tmp.path().join("empty"))]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("nothing to ingest"),
        "{}",
        stderr(&out)
    );
    assert!(!new.exists());
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "not an image").unwrap();
    let out = run(&["ingest", s(&db), s(&notes)]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("notes.txt: not a supported image"),
        "{}",
        stderr(&out)
    );
    // The text table: a header per query, queries apart, --id queries with their path.
    let out = run(&["search", s(&db), s(&imgs[1]), "--id", "1", "-k", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rank  score"), "{text}");
    assert!(text.contains("\n\nquery id 1  "), "{text}");
}

#[test]
fn colour_follows_the_flag_and_no_color() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, imgs) = small_db(tmp.path(), 2);
    let search = |color: &str, no_color: bool| {
        let mut cmd = imgvec();
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd
            .args(["search", s(&db), s(&imgs[0]), "--color", color])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains('\x1b')
    };
    assert!(search("always", false));
    assert!(search("always", true));
    assert!(!search("never", false));
    // Not a terminal: auto means no colour.
    assert!(!search("auto", false));
}

#[test]
fn completions_and_man_page_come_from_the_launcher_alone() {
    // The launcher without the engine beside it still answers help, version, completions and
    // the man page (it links no libtorch), and says what is missing for the rest.
    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join("imgvec");
    std::fs::copy(env!("CARGO_BIN_EXE_imgvec"), &alone).unwrap();
    let run_alone = |args: &[&str]| Command::new(&alone).args(args).output().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef imgvec"),
        ("fish", "complete -c imgvec"),
    ] {
        let out = run_alone(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker) && text.contains("search"), "{shell}");
    }
    let man = run_alone(&["man"]);
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        text.contains(".TH imgvec 1") && text.contains("Exit status"),
        "{text}"
    );
    assert_eq!(code(&run_alone(&["--version"])), 0);
    assert_eq!(code(&run_alone(&["search", "--help"])), 0);
    assert_eq!(code(&run_alone(&["search", "db", "--mode", "x"])), 2);
    let out = run_alone(&["info", "db"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("imgvec-engine"), "{}", stderr(&out));
}
