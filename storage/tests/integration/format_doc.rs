//! docs/FORMAT.md promises that its numpy snippet reads a segment. This runs the snippet, as
//! written in the doc, with the project venv's numpy (made by scripts/setup.sh) against a real
//! segment and compares every id and float.

use std::process::Command;

use imgvec_storage::segment::{IDS_COLUMN, VECTORS_COLUMN};
use imgvec_storage::{write_segment, ColumnData, StdFs};

fn doc_snippet() -> String {
    let doc_path = imgvec_testkit::repo_root().join("docs/FORMAT.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let start = doc
        .find("```python\n")
        .expect("FORMAT.md has a python block")
        + "```python\n".len();
    let len = doc[start..].find("```").unwrap();
    doc[start..start + len].to_string()
}

#[test]
fn numpy_snippet_in_format_doc_reads_a_real_segment() {
    let python = imgvec_testkit::repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run ./scripts/setup.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.ivs");
    let ids: Vec<u64> = vec![3, 5, 8, 13, 21];
    let dims = 7;
    let vectors: Vec<f32> = (0..ids.len() * dims)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let codes: Vec<u8> = (0..ids.len() * 4).map(|i| i as u8).collect();
    let columns = [
        ColumnData::u64(IDS_COLUMN, &ids),
        ColumnData::f32(VECTORS_COLUMN, dims, &vectors),
        ColumnData::u8("codes", 4, &codes),
    ];
    write_segment(&StdFs, &path, ids.len(), &columns).unwrap();

    let program = format!(
        "{}\nimport sys, json\nids, v = read_segment(sys.argv[1])\n\
         print(json.dumps({{'ids': ids.tolist(), 'shape': list(v.shape), 'v': v.ravel().tolist()}}))\n",
        doc_snippet()
    );
    let out = Command::new(&python)
        .arg("-c")
        .arg(&program)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got_ids: Vec<u64> = serde_json::from_value(got["ids"].clone()).unwrap();
    let shape: Vec<usize> = serde_json::from_value(got["shape"].clone()).unwrap();
    let got_v: Vec<f32> = serde_json::from_value(got["v"].clone()).unwrap();
    assert_eq!(got_ids, ids);
    assert_eq!(shape, vec![ids.len(), dims]);
    assert_eq!(got_v, vectors);
}
