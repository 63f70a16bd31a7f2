//! The CLI under mistakes and hostile input (issue: reliability): swapped arguments, mistyped
//! database paths, broken pipes, absurd `-k`, bad model files, file names that are not UTF-8,
//! FIFOs and links in walked folders.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use super::*;

/// `imgvec ingest PHOTOS DB` with the arguments swapped: the photo folder is not a database and
/// not empty, so it is refused and left exactly as it was; other commands refuse a path that is
/// not a database and create nothing.
#[test]
fn only_ingest_creates_a_database_and_never_in_a_foreign_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    copy_db_images(&photos, 2);
    let before: Vec<_> = std::fs::read_dir(&photos).unwrap().collect();
    let db = tmp.path().join("db");
    let out = run(&["ingest", s(&photos), s(&db)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(s(&photos)) && err.contains("not an imgvec database"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), before.len());
    assert!(!db.exists());
    let typo = tmp.path().join("dbb");
    for args in [
        vec!["delete", s(&typo), "--id", "1"],
        vec!["compact", s(&typo)],
        vec!["search", s(&typo), s(&photos)],
        vec!["info", s(&typo)],
        vec!["reindex", s(&typo), "--pipeline", "fast"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("not an imgvec database") && err.contains(s(&typo)),
            "{args:?}: {err}"
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

#[test]
fn broken_pipes_huge_k_and_bad_models_end_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 3);
    let db = tmp.path().join("db");
    assert!(run(&["ingest", s(&db), s(&tmp.path().join("imgs"))])
        .status
        .success());
    // `| head -1`: the reader goes away; the process ends by SIGPIPE, no panic message.
    for args in [
        vec!["search", s(&db), s(&imgs[0]), s(&imgs[1]), s(&imgs[2])],
        vec!["info", s(&db)],
    ] {
        let mut child = imgvec()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the pipe's reader is gone before anything is written
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
    let out = run(&["search", s(&db), s(&imgs[0]), "-k", "100000000000"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("k 100000000000 is out of range"), "{err}");
    let bad = tmp.path().join("bad.pt");
    std::fs::write(&bad, b"not torchscript").unwrap();
    let out = run(&[
        "ingest",
        s(&tmp.path().join("db2")),
        s(&imgs[0]),
        "--model",
        s(&bad),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(s(&bad)) && !err.contains("frame #"), "{err}");
}

/// Two names that differ only in bytes that are not UTF-8 are two rows, each keeping its exact
/// name (a re-run finds both unchanged); names are printed escaped. A FIFO named like an image
/// and a link to /dev/zero are skipped and reported; the rest is stored.
#[test]
fn odd_file_names_and_special_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_db_images(&tmp.path().join("src"), 2);
    let dir = tmp.path().join("photos");
    std::fs::create_dir(&dir).unwrap();
    let names: [&[u8]; 2] = [b"a\xff.jpg", b"a\xfe.jpg"];
    for (name, from) in names.iter().zip(&src) {
        std::fs::copy(from, dir.join(OsStr::from_bytes(name))).unwrap();
    }
    std::fs::write(dir.join("ok.jpg"), std::fs::read(&src[0]).unwrap()).unwrap();
    let fifo = std::ffi::CString::new(dir.join("fifo.jpg").as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.jpg")).unwrap();
    let db = tmp.path().join("db");
    let out = run(&["ingest", s(&db), s(&dir), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["stored"], 3, "{lines:?}");
    assert_eq!(summary["skipped"], 2, "{lines:?}");
    let paths: Vec<&str> = lines
        .iter()
        .filter(|l| l["status"] == "stored")
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("a\\xff.jpg")), "{paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("a\\xfe.jpg")), "{paths:?}");
    let out = run(&["ingest", s(&db), s(&dir), "--json"]);
    let lines = json_lines(&out);
    assert_eq!(
        lines.last().unwrap()["summary"]["unchanged"],
        3,
        "{lines:?}"
    );
    // Deleting by the exact name finds the row.
    let target = dir.join(OsStr::from_bytes(names[0]));
    let out = imgvec()
        .arg("delete")
        .arg(&db)
        .arg("--path")
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("delete: 1 row"));
}

/// `delete --path` with a relative path of a file that has since been removed still finds it.
#[test]
fn delete_by_the_relative_path_of_a_removed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 2);
    let db = tmp.path().join("db");
    assert!(run(&["ingest", s(&db), s(&tmp.path().join("imgs"))])
        .status
        .success());
    std::fs::remove_file(&imgs[1]).unwrap();
    let name = imgs[1].file_name().unwrap();
    let out = imgvec()
        .current_dir(tmp.path().join("imgs"))
        .arg("delete")
        .arg(&db)
        .arg("--path")
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("delete: 1 row"));
}

/// `verify` passes on a whole database and names what is damaged; `backup` writes a copy that
/// verifies clean and answers like the original, and refuses a non-empty destination.
#[test]
fn verify_and_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 6);
    let db = tmp.path().join("db");
    let with_indexes = |args: &[&str]| run_with(&["--index-min-rows", "4"], args);
    assert!(
        with_indexes(&["ingest", s(&db), s(&tmp.path().join("imgs"))])
            .status
            .success()
    );
    // The rows sealed in a segment, so the backup links one.
    assert!(run(&["compact", s(&db)]).status.success());
    let out = run(&["verify", s(&db), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_lines(&out).pop().unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 6);
    assert!(report["derived_files"].as_u64().unwrap() >= 2, "{report}");
    let copy = tmp.path().join("copy");
    let out = run(&["backup", s(&db), s(&copy), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_lines(&out).pop().unwrap();
    assert_eq!(report["verify"]["ok"], true, "{report}");
    assert_eq!(report["verify"]["records"], 6);
    let search = |d: &Path| {
        let out = run(&["search", s(d), s(&imgs[2]), "--json", "-k", "3"]);
        json_lines(&out).pop().unwrap()["results"].clone()
    };
    assert_eq!(search(&db), search(&copy));
    let out = run(&["backup", s(&db), s(&copy)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot back up here"),
        "{}",
        stderr(&out)
    );
    // A damaged derived file is named; so is a damaged model file.
    let derived = std::fs::read_dir(db.join("indexes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .unwrap();
    let mut bytes = std::fs::read(&derived).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&derived, bytes).unwrap();
    let model = std::fs::read_dir(db.join("models"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&model).unwrap();
    bytes.push(0);
    std::fs::write(&model, bytes).unwrap();
    let out = run(&["verify", s(&db)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("damaged: {}", derived.display())) && text.contains("checksum"),
        "{text}"
    );
    assert!(
        text.contains(s(&model)) && text.contains("DAMAGED"),
        "{text}"
    );
    // A damaged segment: opening reads no vector, verify reads them all and names the file.
    // (The copy's segment is a hard link of the original's: the damage is a new file.)
    let seg = damage_first_segment(&copy);
    let out = run(&["verify", s(&copy)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("damaged: data corruption in {}", seg.display())),
        "{text}"
    );
}
