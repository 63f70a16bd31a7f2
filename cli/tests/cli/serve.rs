//! `imgvec serve` as a process: it names its address, answers, refuses to bind beyond loopback
//! without a token, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};

use super::*;

#[test]
fn serve_names_its_address_answers_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    copy_db_images(&tmp.path().join("imgs"), 2);
    let db = tmp.path().join("db");
    assert!(run(&["ingest", s(&db), s(&tmp.path().join("imgs"))])
        .status
        .success());
    let out = run(&["serve", s(&db), "--bind", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("give a token"), "{}", stderr(&out));
    let mut child = imgvec()
        .args(["serve", s(&db), "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    assert!(first.contains("read-only"), "{first}");
    let info: Value = ureq::get(&format!("{url}api/info"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(info["live_rows"], 2);
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}
