//! `imgvec serve` end to end: a real HTTP server on a loopback port over a real database, driven
//! by an HTTP client (api.rs) and by headless Chromium through WebDriver (browser.rs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use imgvec::{Database, OpenOptions, PipelineChoice, Preset, Source};
use imgvec_serve::ServeOptions;
use imgvec_testkit::datasets;

mod api;
mod browser;

/// A query of instances-dev (a heavy JPEG re-encode) and the stored photo it is a copy of.
pub(crate) fn query_and_source() -> (PathBuf, PathBuf) {
    let root = datasets().join("instances-dev");
    (
        root.join("queries/g0017_jpeg.jpg"),
        root.join("db/g0017.jpg"),
    )
}

/// A database in `dir` holding the query's source and `others` more instances-dev photos.
pub(crate) fn make_db(dir: &Path, preset: Preset, others: usize) -> PathBuf {
    let db_dir = dir.join("db");
    let open = OpenOptions {
        pipeline: PipelineChoice::Preset(preset),
        ..OpenOptions::default()
    };
    let db = Database::open(&db_dir, open).unwrap();
    let mut files = vec![query_and_source().1];
    files.extend(imgvec_testkit::db_images(others));
    let sources = files.into_iter().map(Source::File).collect();
    let summary = db
        .ingest(sources, &imgvec::IngestOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(summary.errors, 0);
    db.refresh_indexes().unwrap();
    db_dir
}

/// Serves `db_dir` on a free loopback port from a thread of this process; the base URL.
pub(crate) fn serve(db_dir: &Path, opts: ServeOptions) -> String {
    let open = OpenOptions {
        read_only: !opts.allow_writes,
        ..OpenOptions::default()
    };
    let db = Database::open(db_dir, open).unwrap();
    let opts = ServeOptions {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..opts
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        imgvec_serve::run(db, opts, |addr| tx.send(addr).unwrap()).unwrap();
    });
    format!("http://{}", rx.recv().unwrap())
}
