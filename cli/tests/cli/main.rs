//! The `imgvec` binary end to end, on the real stack, through its documented CLI contract.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use imgvec_testkit::datasets;
use serde_json::Value;

mod admin;
mod bench_train;
mod concurrency;
mod conventions;
mod ingest;
mod inspect;
mod reliability;
mod search;
mod serve;

pub(crate) fn imgvec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgvec"))
}

pub(crate) fn run(args: &[&str]) -> Output {
    imgvec().args(args).output().unwrap()
}

/// `imgvec` with global flags `globals` before the command `args`.
pub(crate) fn run_with(globals: &[&str], args: &[&str]) -> Output {
    imgvec().args(globals).args(args).output().unwrap()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Flips one bit in the middle of `db`'s first segment, written as a new file (so a hard-linked
/// copy of it elsewhere keeps its bytes); returns the segment's path.
pub(crate) fn damage_first_segment(db: &Path) -> PathBuf {
    let seg = std::fs::read_dir(db.join("segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let damaged = seg.with_extension("tmp");
    std::fs::write(&damaged, bytes).unwrap();
    std::fs::rename(&damaged, &seg).unwrap();
    seg
}

pub(crate) fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The first `n` db images of instances-dev copied into `dir` (so tests own their paths).
pub(crate) fn copy_db_images(dir: &Path, n: usize) -> Vec<PathBuf> {
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

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
