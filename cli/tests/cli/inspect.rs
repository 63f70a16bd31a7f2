//! Looking inside a database: list, show, tag and export.

use super::*;

#[test]
fn list_show_tag_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 4);
    let db = tmp.path().join("db");
    let out = run(&[
        "ingest",
        s(&db),
        s(&tmp.path().join("imgs")),
        "--attr",
        "set=a",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // list: every image by id, filtered by attribute and prefix, as text and JSON.
    let out = run(&["list", s(&db), "--json"]);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 4);
    assert!(rows
        .iter()
        .all(|r| r["schema_version"] == 1 && r["attrs"]["set"] == "a"));
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let text = String::from_utf8_lossy(&run(&["list", s(&db)]).stdout).into_owned();
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.contains(s(&imgs[2])) && text.contains("set=a"),
        "{text}"
    );

    // tag: set and remove attributes after ingest; searches filter on them at once.
    let out = run(&[
        "tag",
        s(&db),
        "--path",
        s(&imgs[1]),
        "trip=2024",
        "--remove",
        "set",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tag: 1 image"));
    let out = run(&["list", s(&db), "--attr", "trip=2024", "--json"]);
    let tagged = json_lines(&out);
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["path"], s(&imgs[1]));
    assert!(tagged[0]["attrs"].get("set").is_none());
    let out = run(&[
        "search",
        s(&db),
        s(&imgs[0]),
        "--attr",
        "trip=2024",
        "--json",
    ]);
    assert_eq!(json_lines(&out)[0]["results"][0]["path"], s(&imgs[1]));
    let out = run(&["tag", s(&db), "--id", "999", "x=y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found: id 999"));
    assert_eq!(run(&["tag", s(&db), "--id", "1"]).status.code(), Some(2));

    // show: the record, the features stored, the thumbnail to a file.
    let thumb = tmp.path().join("t.jpg");
    let out = run(&[
        "show",
        s(&db),
        "--id",
        &ids[0].to_string(),
        "--thumbnail",
        s(&thumb),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = &json_lines(&out)[0];
    assert_eq!(shown["features"]["vector_dims"], 1280);
    assert!(shown["features"]["keypoints"].is_null());
    let jpeg = std::fs::read(&thumb).unwrap();
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    assert_eq!(
        jpeg.len() as u64,
        shown["features"]["thumbnail_bytes"].as_u64().unwrap()
    );

    // export: JSON lines with vectors; Parquet (its magic bytes; pandas reads it in the
    // Python tests).
    let out = run(&["export", s(&db)]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["vector"].as_array().unwrap().len(), 1280);
    let parquet = tmp.path().join("x.parquet");
    let out = run(&[
        "export",
        s(&db),
        "--format",
        "parquet",
        "--out",
        s(&parquet),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&parquet).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    assert_eq!(
        run(&["export", s(&db), "--format", "parquet"])
            .status
            .code(),
        Some(2)
    );
}

/// `dedupe`: a byte-identical copy and a re-encoded copy are grouped with their source (the
/// largest kept), `--delete-others --dry-run` deletes nothing, `--delete-others` keeps only the
/// keepers, and hostile file names are escaped in the HTML page.
#[test]
fn dedupe_groups_keeps_and_deletes_others() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 6);
    let hostile = tmp.path().join("imgs/<img src=x onerror=alert(1)>.jpg");
    std::fs::copy(&imgs[0], &hostile).unwrap();
    let small = tmp.path().join("imgs/zz-small.png");
    let source = imgvec::image::open(&imgs[0]).unwrap();
    source.thumbnail(480, 480).save(&small).unwrap();
    let db = tmp.path().join("db");
    assert!(run(&["ingest", s(&db), s(&tmp.path().join("imgs"))])
        .status
        .success());
    let html = tmp.path().join("groups.html");
    let out = run(&[
        "dedupe",
        s(&db),
        "--json",
        "--html",
        s(&html),
        "--delete-others",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = &json_lines(&out)[0];
    // The source's group (instances-dev holds other near-duplicates of its own, grouped too).
    let groups = report["groups"].as_array().unwrap();
    let group = groups
        .iter()
        .find(|g| {
            g["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["path"] == s(&imgs[0]))
        })
        .unwrap_or_else(|| panic!("{report}"));
    let members: Vec<&str> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.contains(&s(&hostile)) && members.contains(&s(&small)),
        "{members:?}"
    );
    let keeper = group["keep"].as_u64().unwrap();
    let kept_path = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == keeper)
        .unwrap()["path"]
        .clone();
    assert_ne!(kept_path, s(&small), "the largest is kept");
    let others = report["delete"]["others"].as_array().unwrap().len();
    assert!(others >= 2, "{report}");
    assert!(report["delete"]["deleted"].as_array().unwrap().is_empty());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;") && !page.contains("<img src=x"));
    let out = run(&["dedupe", s(&db), "--delete-others"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&format!("deleted {others} images")), "{text}");
    let out = run(&["list", s(&db), "--json"]);
    assert_eq!(json_lines(&out).len(), 8 - others);
    let out = run(&["dedupe", s(&db), "--json"]);
    assert!(json_lines(&out)[0]["groups"].as_array().unwrap().is_empty());
}
