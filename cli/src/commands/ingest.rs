//! `imgvec ingest`: add images to a database, one progress step and (with --json) one line
//! per image, then a summary.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use imgvec::{
    collect_files, printable, Database, IngestEvent, IngestOptions, IngestSummary, OpenOptions,
};

use crate::args::IngestArgs;
use crate::output::{print_json, progress_bar, say, CliResult};

pub(crate) fn run(args: IngestArgs, mut open: OpenOptions) -> CliResult {
    open.pipeline = args.pipeline.choice();
    let db = Database::open(&args.db, open)?;
    let files = collect_files(&args.paths, args.follow_links);
    let stop = stop_on_ctrl_c();
    let opts = IngestOptions {
        attributes: args.attrs.into_iter().collect(),
        batch_size: args.batch_size,
        commit_rows: args.commit_rows,
        stop: stop.clone(),
        ..IngestOptions::default()
    };
    let bar = progress_bar(
        std::io::stderr().is_terminal(),
        files.images.len() as u64,
        "{bar:40} {pos}/{len} images {per_sec} eta {eta} {msg}",
    );
    let json = args.json;
    let report = |ev: &IngestEvent| {
        bar.inc(1);
        if json {
            print_json(ev);
        } else if let Some(err) = &ev.error {
            say(&bar, format!("error: {}: {err}", printable(&ev.path)));
        }
    };
    for (path, reason) in &files.not_regular {
        let path = printable(&path.display().to_string()).into_owned();
        if json {
            print_json(&serde_json::json!({ "path": path, "status": "skipped", "reason": reason }));
        } else {
            say(&bar, format!("skipped: {path}: {reason}"));
        }
    }
    let summary = db.ingest_files(files, &opts, &report)?;
    bar.finish_and_clear();
    if !summary.interrupted {
        refresh_indexes(&db, &args.db, json);
    }
    if json {
        print_json(&serde_json::json!({ "summary": summary }));
    } else {
        print_summary(&summary);
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else if summary.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The flag the first Ctrl-C raises so that ingest stops after the images in flight; a second
/// Ctrl-C exits at once.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // Second Ctrl-C: leave now. Everything already reported is durable. `_exit`
                // runs no exit handlers, which would tear down libraries (libtorch, RocksDB)
                // under the threads still using them.
                // SAFETY: `_exit` has no preconditions; it does not return.
                unsafe { libc::_exit(130) };
            }
            eprintln!("stopping: finishing the images in flight (Ctrl-C again to quit now)");
        });
    }
    stop
}

/// Train / extend / save the approximate indexes now (closing would do it silently).
fn refresh_indexes(db: &Database, path: &Path, json: bool) {
    let started = std::time::Instant::now();
    if let Err(e) = db.refresh_indexes() {
        eprintln!("warning: {}: indexes not updated: {e}", path.display());
    } else if !json && started.elapsed().as_secs_f64() > 1.0 {
        eprintln!(
            "indexes updated in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

fn print_summary(summary: &IngestSummary) {
    println!(
        "stored {}  unchanged {}  replaced {}  skipped {}  errors {}  duplicates {}  \
         ({:.1} images/s, {:.1} s){}",
        summary.stored,
        summary.unchanged,
        summary.replaced,
        summary.skipped,
        summary.errors,
        summary.duplicates,
        summary.images_per_sec,
        summary.seconds,
        if summary.interrupted {
            "  [interrupted]"
        } else {
            ""
        }
    );
}
