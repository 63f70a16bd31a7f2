//! Maintenance commands: `imgvec delete`, `imgvec compact` and `imgvec reindex`.

use std::process::ExitCode;

use imgvec::{Database, IngestEvent, OpenOptions};
use indicatif::ProgressBar;

use crate::args::{CompactArgs, DeleteArgs, ReindexArgs};
use crate::output::{print_json, say, CliResult};

pub(crate) fn reindex(args: ReindexArgs, open: OpenOptions) -> CliResult {
    let ReindexArgs { db, pipeline, json } = args;
    let choice = pipeline.choice();
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    let on_event = |e: &IngestEvent| {
        if json {
            print_json(e);
        } else {
            bar.tick();
            if let Some(reason) = &e.error {
                say(&bar, format!("error: {}: {reason}", e.path));
            }
        }
    };
    let report = imgvec::reindex(&db, choice, open, &on_event)?;
    bar.finish_and_clear();
    if json {
        print_json(&report);
    } else {
        for path in &report.gone {
            eprintln!("gone: {path}");
        }
        println!(
            "reindexed {} with pipeline {}: {} of {} rows stored, {} gone, {} errors, {:.1} s",
            db.display(),
            report.pipeline,
            report.stored,
            report.rows_before,
            report.gone.len(),
            report.errors.len(),
            report.seconds
        );
    }
    Ok(if report.gone.is_empty() && report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn compact(args: CompactArgs, mut open: OpenOptions) -> CliResult {
    open.background_compaction = false;
    let db = Database::open(&args.db, open)?;
    let r = db.compact()?;
    if args.json {
        print_json(&r);
    } else {
        println!(
            "merged {} segment(s): kept {} rows, dropped {} deleted rows, {} -> {} bytes",
            r.segments_merged, r.rows_kept, r.rows_dropped, r.bytes_before, r.bytes_after
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn delete(args: DeleteArgs, open: OpenOptions) -> CliResult {
    let DeleteArgs { db, ids, paths } = args;
    if ids.is_empty() && paths.is_empty() {
        return Err(imgvec::Error::Invalid("give --id N or --path P".into()).into());
    }
    let db = Database::open(&db, open)?;
    let mut wanted = ids;
    let mut missing = Vec::new();
    for p in &paths {
        let key = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        match db.get_by_path(&key.display().to_string())? {
            Some(rec) => wanted.push(rec.id),
            None => missing.push(p.display().to_string()),
        }
    }
    let deleted = db.delete(&wanted)?;
    missing.extend(
        wanted
            .iter()
            .filter(|id| !deleted.contains(id))
            .map(|id| format!("id {id}")),
    );
    println!("deleted {} row(s)", deleted.len());
    for m in &missing {
        eprintln!("error: not found: {m}");
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
