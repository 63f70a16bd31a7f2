//! `imgvec ingest`: add images to a database, one progress step and (with --json) one line
//! per image, then a summary.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use imgvec::{
    collect_files, printable, Database, IngestEvent, IngestOptions, IngestSummary, OpenOptions,
};
use imgvec_cli::args::IngestArgs;

use crate::output::{
    error, note, paint, print_versioned, progress_bar, say, to_json, warn, CliError, CliResult, Ui,
    BOLD,
};

pub(crate) fn run(args: IngestArgs, mut open: OpenOptions, ui: Ui) -> CliResult {
    Database::check_writable_target(&args.db)?;
    let files = collect_files(&args.paths, args.follow_links);
    if files.images.is_empty() {
        // Nothing to store: say why, and leave DB as it was (a new one is not created).
        for (path, reason) in &files.errors {
            error(&format!("{}: {reason}", path.display()));
        }
        return Err(CliError::Engine(imgvec::Error::Invalid(format!(
            "nothing to ingest: no image files in {} ({} other files skipped); {} was not \
             changed",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            files.skipped.len() + files.not_regular.len(),
            args.db.display()
        ))));
    }
    open.pipeline = super::pipeline_choice(args.pipeline)?;
    let db = Database::open(&args.db, open)?;
    let stop = stop_on_ctrl_c();
    let with_attrs = !args.attrs.is_empty();
    let opts = IngestOptions {
        attributes: args.attrs.into_iter().collect(),
        batch_size: args.batch_size,
        commit_rows: args.commit_rows,
        stop: stop.clone(),
        ..IngestOptions::default()
    };
    let bar = progress_bar(
        ui.progress(),
        files.images.len() as u64,
        "{bar:40} {pos}/{len} images {rate} {eta} {msg}",
    );
    let json = args.json;
    let unchanged = AtomicU64::new(0);
    let report = |ev: &IngestEvent| {
        bar.inc(1);
        if ev.status == imgvec::IngestStatus::Unchanged {
            unchanged.fetch_add(1, Ordering::Relaxed);
        }
        if json {
            print_versioned(to_json(ev));
        } else if let Some(err) = &ev.error {
            say(&bar, format!("error: {}: {err}", printable(&ev.path)));
        } else if let (
            Some(original),
            imgvec::IngestStatus::Stored | imgvec::IngestStatus::Replaced,
            false,
        ) = (ev.duplicate_of, ev.status, ui.quiet)
        {
            say(&bar, duplicate_line(&db, &ev.path, original));
        }
    };
    for (path, reason) in &files.not_regular {
        let path = printable(&path.display().to_string()).into_owned();
        if json {
            print_versioned(serde_json::json!({
                "path": path, "status": "skipped", "reason": reason
            }));
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
        print_versioned(serde_json::json!({ "summary": summary }));
    } else {
        print_summary(&summary);
    }
    let unchanged = unchanged.into_inner();
    if with_attrs && unchanged > 0 {
        warn(&format!(
            "--attr was not applied to {unchanged} unchanged file(s): they keep the attributes \
             they were stored with (--attr applies to new and replaced rows)"
        ));
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else if summary.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `duplicate: PATH is a byte-identical copy of id N (ITS PATH)`.
fn duplicate_line(db: &Database, path: &str, original: u64) -> String {
    let of = match db.get(original) {
        Ok(Some(rec)) => format!("id {original} ({})", printable(&rec.path)),
        _ => format!("id {original}"),
    };
    format!(
        "duplicate: {} is a byte-identical copy of {of}; stored as its own row",
        printable(path)
    )
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
            eprintln!(
                "stopping: finishing the images in flight (Ctrl-C again to quit now; run the \
                 same command again to resume)"
            );
        });
    }
    stop
}

/// Train / extend / save the approximate indexes now (closing would do it silently).
fn refresh_indexes(db: &Database, path: &Path, json: bool) {
    let started = std::time::Instant::now();
    if let Err(e) = db.refresh_indexes() {
        warn(&format!("{}: indexes not updated: {e}", path.display()));
    } else if !json && started.elapsed().as_secs_f64() > 1.0 {
        note(&format!(
            "indexes updated in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
}

fn print_summary(summary: &IngestSummary) {
    anstream::println!(
        "{} stored {}, unchanged {}, replaced {}, skipped {}, errors {}, duplicates {} \
         ({:.1} images/s, {:.1} s)",
        paint(BOLD, "ingest:"),
        summary.stored,
        summary.unchanged,
        summary.replaced,
        summary.skipped,
        summary.errors,
        summary.duplicates,
        summary.images_per_sec,
        summary.seconds,
    );
    if summary.interrupted {
        println!("interrupted: everything above is stored; run the same command again to resume");
    }
}
